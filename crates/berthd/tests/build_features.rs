//! Builder features end to end against berthd: `--pull` against a local registry,
//! `--cache-from` a loaded image, independent stages built at once, build secrets, and git
//! contexts.
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `berth build` with extra environment variables.
fn berth_env(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin_dir().join("berth"));
    c.arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    run_output(c.output().unwrap())
}

fn run_in(d: &Daemon, image: &str, cmd: &str) -> String {
    d.docker_out("run --rm --entrypoint sh", &[image, "-c", cmd])
}

/// Step number → whether it came from the cache.
fn cached_steps(out: &str) -> Vec<(usize, bool)> {
    out.split("Step ")
        .skip(1)
        .map(|b| {
            let n: usize = b.split('/').next().unwrap().parse().unwrap();
            (n, b.contains("Using cache"))
        })
        .collect()
}

fn image_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no image ID in {out}"))
        .to_string()
}

#[test]
fn build_pull_re_resolves_base_images() {
    require_root!(DOCKER_REGISTRY);
    let (reg, d) = registry_and_daemon();
    let base = format!("localhost:{}/base:latest", reg.port);
    d.docker(&["tag", "busybox", &base]).ok();
    d.docker(&["push", &base]).ok();
    let dir = d.context(
        "c",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN (cat /marker 2>/dev/null || echo none) > /seen\n"),
        )],
    );
    let dirs = dir.display().to_string();
    let out = d.berth_line("build -t p:1", &[&dirs]).ok().stdout;
    assert_eq!(cached_steps(&out), vec![(1, false), (2, false)], "{out}");
    assert_eq!(run_in(&d, "p:1", "cat /seen"), "none\n");
    // A changed base under the same name in the registry; locally the name keeps the old one.
    let changed = d.context(
        "changed",
        &[("Dockerfile", "FROM busybox\nRUN echo v2 > /marker\n")],
    );
    d.berth(&["build", "-t", &base, &changed.display().to_string()])
        .ok();
    d.docker(&["push", &base]).ok();
    d.docker(&["tag", "busybox", &base]).ok();
    // Without --pull: the local base, every step from the cache.
    let out = d.berth_line("build -t p:2", &[&dirs]).ok().stdout;
    assert_eq!(cached_steps(&out), vec![(1, false), (2, true)], "{out}");
    assert!(!out.contains("Pulling"), "{out}");
    assert_eq!(run_in(&d, "p:2", "cat /seen"), "none\n");
    // With --pull: the registry's base, and the step on it rebuilt.
    let out = d.berth_line("build --pull -t p:3", &[&dirs]).ok().stdout;
    assert!(
        out.contains(&format!("Pulling {base}"))
            && out.contains("Status: Downloaded newer image for"),
        "{out}"
    );
    assert_eq!(cached_steps(&out), vec![(1, false), (2, false)], "{out}");
    assert_eq!(run_in(&d, "p:3", "cat /seen"), "v2\n");
    // Pulling again finds it up to date, and the step is cached.
    let out = d.berth_line("build --pull -t p:4", &[&dirs]).ok().stdout;
    assert!(out.contains("Image is up to date"), "{out}");
    assert_eq!(cached_steps(&out), vec![(1, false), (2, true)], "{out}");
    // The docker CLI's --pull goes through the same path.
    let r = d
        .classic_build(Path::new(&dirs), &["--pull", "-q", "-t", "p:5"])
        .ok();
    assert!(r.stdout.trim().starts_with("sha256:"), "{}", r.stdout);
    // A base that no registry serves: a clear error naming the line.
    let nowhere = d.context(
        "nowhere",
        &[("Dockerfile", "FROM 127.0.0.1:1/none/here\nRUN true\n")],
    );
    let r = d.berth_line("build -t p:6", &[&nowhere.display().to_string()]);
    r.fails_with("line 1: pulling 127.0.0.1:1/none/here");
    finish(d);
}

#[test]
fn build_cache_from_a_loaded_image() {
    let d = root_daemon!();
    let dir = d.context("c",
        &[
            (
                "Dockerfile",
                "FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nENV X=1\nRUN cat /one /a.txt > /both\nCMD [\"cat\", \"/both\"]\n",
            ),
            ("a.txt", "aaa\n"),
        ],
    );
    let dirs = dir.display().to_string();
    let out = d.berth_line("build -t cf:1", &[&dirs]).ok().stdout;
    let id1 = image_id(&out);
    let tar = d.path("cf.tar").display().to_string();
    d.docker(&["save", "-o", &tar, "cf:1"]).ok();
    d.docker(&["rmi", "cf:1"]).ok();
    d.berth_line("builder prune -a -f", &[]).ok();
    d.docker(&["load", "-i", &tar]).ok();
    // The loaded image seeds the cache: every step reused, the very same image.
    let out = d
        .berth_line("build --cache-from cf:1 -t cf:2", &[&dirs])
        .ok()
        .stdout;
    let steps = cached_steps(&out);
    assert_eq!(steps.len(), 6, "{out}");
    assert!(steps[1..].iter().all(|(_, c)| *c), "{out}");
    assert_eq!(image_id(&out), id1, "{out}");
    assert_eq!(run_in(&d, "cf:2", "cat /both"), "one\naaa\n");
    // A changed file: the steps before it still come from the image, the rest are rebuilt.
    std::fs::write(dir.join("a.txt"), "bbb\n").unwrap();
    let out = d
        .berth_line("build --cache-from cf:1 -t cf:3", &[&dirs])
        .ok()
        .stdout;
    assert_eq!(
        cached_steps(&out),
        vec![
            (1, false),
            (2, true),
            (3, false),
            (4, false),
            (5, false),
            (6, false)
        ],
        "{out}"
    );
    assert_eq!(run_in(&d, "cf:3", "cat /both"), "one\nbbb\n");
    std::fs::write(dir.join("a.txt"), "aaa\n").unwrap();
    // Without --cache-from (and without the local cache): everything rebuilt.
    d.berth_line("builder prune -a -f", &[]).ok();
    let out = d.berth_line("build -t cf:4", &[&dirs]).ok().stdout;
    assert!(!out.contains("Using cache"), "{out}");
    assert_ne!(image_id(&out), id1);
    // The docker CLI's --cache-from (the legacy builder's cachefrom parameter).
    d.berth_line("builder prune -a -f", &[]).ok();
    let r = d
        .classic_build(Path::new(&dirs), &["--cache-from", "cf:1", "-t", "cf:5"])
        .ok();
    assert_eq!(image_id(&r.stdout), id1, "{}", r.stdout);
    finish(d);
}

#[test]
fn build_independent_stages_at_once() {
    let d = root_daemon!();
    // Each stage's RUN waits (up to 60 s) for the other's to have started, through a cache
    // mount both share: built one after the other, the first would give up and fail.
    let run = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=rendezvous,target=/rv cat /proc/uptime > /start && touch /rv/{me} && i=0 && while [ ! -e /rv/{other} ]; do i=$((i+1)); if [ $i -gt 600 ]; then echo {me} waited alone; exit 7; fi; sleep 0.1; done && sleep 1 && cat /proc/uptime > /end && echo stage {me} done\n"
        )
    };
    let df = format!(
        "FROM busybox AS a\n{}FROM busybox AS b\n{}FROM busybox\nCOPY --from=a /start /a.start\nCOPY --from=a /end /a.end\nCOPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n",
        run("a", "b"),
        run("b", "a")
    );
    let dir = d.context("c", &[("Dockerfile", &df)]);
    let r = d.berth_line("build -t par:1", &[&dir.display().to_string()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // The output reads as a sequential build's: steps in order, each stage's lines together.
    let steps: Vec<usize> = cached_steps(&r.stdout).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=9).collect::<Vec<_>>(), "{}", r.stdout);
    let a = r.stdout.find("stage a done").unwrap();
    let b_step = r.stdout.find("Step 3/9 : FROM busybox AS b").unwrap();
    assert!(a < b_step, "{}", r.stdout);
    // Both RUNs started before either finished.
    let t = |f: &str| -> f64 {
        let s = run_in(&d, "par:1", &format!("cat {f}"));
        s.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (sa, ea, sb, eb) = (t("/a.start"), t("/a.end"), t("/b.start"), t("/b.end"));
    assert!(sa.max(sb) <= ea.min(eb), "a {sa}..{ea} b {sb}..{eb}");
    // A failing stage fails the build with its own error; the other stage is stopped.
    let bad = d.context("bad",
        &[(
            "Dockerfile",
            "FROM busybox AS a\nRUN sleep 0.2 && exit 3\nFROM busybox AS b\nRUN echo fine\nFROM busybox\nCOPY --from=a / /a\nCOPY --from=b / /b\n",
        )],
    );
    let r = d.berth_line("build -t par:2", &[&bad.display().to_string()]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    r.stderr_contains("returned a non-zero code: 3");
    finish(d);
}

fn sha256_hex(b: &[u8]) -> String {
    Command::new("sha256sum")
        .run_with_input(b)
        .ok()
        .stdout
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Whether `needle` occurs in any file under `dir` (gzip files decompressed).
fn found_under(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    let rd = std::fs::read_dir(dir).ok()?;
    for e in rd.flatten() {
        let p = e.path();
        let m = std::fs::symlink_metadata(&p).ok()?;
        if m.is_dir() {
            if let Some(f) = found_under(&p, needle) {
                return Some(f);
            }
        } else if m.is_file() {
            let mut b = std::fs::read(&p).unwrap_or_default();
            if b.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                use std::io::Read;
                if flate2::read::GzDecoder::new(&b[..])
                    .read_to_end(&mut out)
                    .is_ok()
                {
                    b = out;
                }
            }
            if b.windows(needle.len()).any(|w| w == needle) {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn build_secrets_are_mounted_and_never_kept() {
    let d = root_daemon!();
    let tok = format!("tok-secret-{}-{}", std::process::id(), line!());
    let envv = format!("env-secret-{}-{}", std::process::id(), line!());
    let sfile = d.path("tok.txt");
    std::fs::write(&sfile, &tok).unwrap();
    let dir = d.context("c",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             RUN --mount=type=secret,id=tok,required=true sha256sum /run/secrets/tok | cut -d' ' -f1 > /tok.sum && stat -c '%a %u' /run/secrets/tok > /tok.stat\n\
             RUN --mount=type=secret,id=ev,target=/etc/ev.conf,mode=0440,uid=7 sha256sum < /etc/ev.conf | cut -d' ' -f1 > /ev.sum && stat -c '%a %u' /etc/ev.conf > /ev.stat\n\
             RUN --mount=type=secret,id=tok,env=TOKV echo \"$TOKV\" | cut -c1-10 > /tok.env\n\
             RUN --mount=type=secret,id=absent echo optional secrets may be missing && ls /run > /run.ls 2>&1; true\n",
        )],
    );
    let dirs = dir.display().to_string();
    // A required secret that is not given: a clear error, nothing tagged.
    let r = d.berth_line("build -t sec:0", &[&dirs]);
    r.fails_with("line 2").fails_with("secret tok is required");
    assert_ne!(d.docker(&["image", "inspect", "sec:0"]).code, 0);
    let sf = format!("id=tok,src={}", sfile.display());
    // A build of `tag` with the file secret `tok` and `ev` from the environment (`ev`).
    let build = |tag: &str, ev: &str| {
        let r = berth_env(
            &d,
            &[
                "build",
                "--secret",
                &sf,
                "--secret",
                "id=ev,env=BUILD_EV",
                "-t",
                tag,
                &dirs,
            ],
            &[("BUILD_EV", ev)],
        );
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        r
    };
    build("sec:1", &envv);
    assert_eq!(
        run_in(
            &d,
            "sec:1",
            "cat /tok.sum /tok.stat /ev.sum /ev.stat /tok.env"
        ),
        format!(
            "{}\n400 0\n{}\n440 7\n{}\n",
            sha256_hex(tok.as_bytes()),
            sha256_hex(envv.as_bytes()),
            &tok[..10]
        )
    );
    // No trace in the image: no mount points left, nothing under the data root (layers
    // decompressed, snapshots, cache records, configs).
    assert_eq!(
        run_in(
            &d,
            "sec:1",
            "ls -A /run 2>&1; test -e /etc/ev.conf && echo ev.conf; cat /run.ls"
        ),
        "ls: /run: No such file or directory\nls: /run: No such file or directory\n"
    );
    for s in [&tok, &envv] {
        if let Some(p) = found_under(&d.path("data"), s.as_bytes()) {
            panic!("secret found in {}", p.display());
        }
    }
    // Other secret values: the cache key does not depend on them.
    std::fs::write(&sfile, "another value").unwrap();
    let r = build("sec:2", "x");
    assert!(
        cached_steps(&r.stdout)[1..].iter().all(|(_, c)| *c),
        "{}",
        r.stdout
    );
    // Bad --secret specs are refused by the CLI.
    let r = d.berth_line("build --secret src=/x", &[&dirs]);
    r.fails_with("id is required");
    let r = d.berth_line("build --secret id=tok,src=/nonexistent/file", &[&dirs]);
    r.fails_with("/nonexistent/file");
    finish(d);
}

fn git(dir: &Path, args: &[&str]) {
    Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output_ok();
}

/// `git daemon` serving `base` on 127.0.0.1, killed on drop (with the `git-daemon` it forks:
/// it runs in a process group of its own).
struct GitDaemon {
    _child: berth_testkit::KillOnDrop,
    port: u16,
}

fn git_daemon(base: &Path) -> Option<GitDaemon> {
    use std::os::unix::process::CommandExt as _;
    for _ in 0..5 {
        let port = common::free_port();
        let Ok(child) = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
        else {
            return None;
        };
        let mut child = berth_testkit::KillOnDrop(child);
        let up = wait_until(std::time::Duration::from_secs(15), || {
            matches!(child.0.try_wait(), Ok(Some(_)))
                || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) && matches!(child.0.try_wait(), Ok(None));
        if up {
            return Some(GitDaemon {
                _child: child,
                port,
            });
        }
    }
    None
}

#[test]
fn build_from_git_contexts() {
    let d = root_daemon!("git");
    let work = d.context(
        "gitwork",
        &[
            (
                "app/Dockerfile",
                "FROM busybox\nCOPY msg /msg\nCMD [\"cat\", \"/msg\"]\n",
            ),
            ("app/msg", "from main\n"),
            ("Dockerfile", "FROM busybox\nCOPY app/msg /top\n"),
        ],
    );
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(work.join("app/msg"), "from feature\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&work, &["checkout", "-q", "main"]);
    let served = d.path("served");
    std::fs::create_dir_all(&served).unwrap();
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            &work.display().to_string(),
            "repo.git",
        ],
    );
    let repo = served.join("repo.git");
    // file:// with a branch and a subdirectory.
    let url = format!("file://{}#feature:app", repo.display());
    d.berth_line("build -t g:1", &[&url]).ok();
    assert_eq!(
        d.docker(&["run", "--rm", "g:1"]).ok().stdout,
        "from feature\n"
    );
    // The default branch, the repository's root.
    let url = format!("file://{}", repo.display());
    d.berth_line("build -t g:2", &[&url]).ok();
    assert_eq!(run_in(&d, "g:2", "cat /top"), "from main\n");
    // git:// from a git daemon on 127.0.0.1, with -f inside the repository.
    if let Some(gd) = git_daemon(&served) {
        let url = format!("git://127.0.0.1:{}/repo.git#main:app", gd.port);
        d.berth_line("build -f Dockerfile -t g:3", &[&url]).ok();
        assert_eq!(d.docker(&["run", "--rm", "g:3"]).ok().stdout, "from main\n");
    } else {
        eprintln!("SKIP: git daemon did not start");
    }
    // Errors: an unknown ref, a subdirectory that is not there or leaves the checkout.
    for (frag, want) in [
        ("#nope", "unable to 'git clone'"),
        ("#main:missing", "subdirectory \"missing\" not found"),
        ("#main:../..", "not a directory inside the repository"),
    ] {
        let url = format!("file://{}{frag}", repo.display());
        let r = d.berth_line("build -t g:x", &[&url]);
        assert_ne!(r.code, 0, "{frag}");
        assert!(r.stderr.contains(want), "{frag}: {}", r.stderr);
    }
    finish(d);
}
