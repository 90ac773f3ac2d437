//! Dockerfile builds end to end: the docker CLI (legacy builder), docker-py and `berth build`
//! against berthd, checking the resulting image config and file system, and the step cache.
mod common;

use common::*;
use std::path::{Path, PathBuf};

fn docker_build(d: &Daemon, dir: &Path, extra: &[&str]) -> common::Run {
    d.classic_build(dir, extra)
}

/// `docker run --rm IMAGE sh -c CMD` output.
fn run_in(d: &Daemon, image: &str, cmd: &str) -> String {
    d.docker(&["run", "--rm", image, "sh", "-c", cmd])
        .ok()
        .stdout
}

/// The image's config (`Config`, `history`, `rootfs`, …) read from the daemon's store.
fn inspect(d: &Daemon, image: &str) -> serde_json::Value {
    let store = berth_image::image_store::ImageStore::open(d.path("data")).unwrap();
    let r = store.resolve(image).unwrap();
    let bytes = store.config_bytes(&r.image.id).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["Config"] = v["config"].clone();
    v["Id"] = serde_json::json!(r.image.id.to_string());
    v
}

#[test]
fn docker_cli_builds_simple() {
    let d = root_daemon!();
    let dir = d.context("c1",
        &[
            ("Dockerfile", "FROM busybox\nRUN echo hello > /greeting && echo built\nWORKDIR /app\nCOPY a.txt .\nENV X=1\nCMD [\"cat\", \"/app/a.txt\"]\n"),
            ("a.txt", "content-a\n"),
        ],
    );
    let r = docker_build(&d, &dir, &["-t", "simple:1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.stdout_contains("Step 1/6 : FROM busybox");
    r.stdout_contains("built");
    r.stdout_contains("Successfully tagged simple:1");
    let v = inspect(&d, "simple:1");
    assert_eq!(v["Config"]["WorkingDir"], "/app");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["cat", "/app/a.txt"]));
    assert!(v["Config"]["Env"].to_string().contains("X=1"));
    assert_eq!(
        d.docker(&["run", "--rm", "simple:1"]).ok().stdout,
        "content-a\n"
    );
    assert_eq!(run_in(&d, "simple:1", "cat /greeting"), "hello\n");
    finish(d);
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../berth-build/tests/corpus")
}

fn store(d: &Daemon) -> berth_image::image_store::ImageStore {
    berth_image::image_store::ImageStore::open(d.path("data")).unwrap()
}

/// Build steps' work directories (`data/tmp/build-<pid>-<id>`, `from-…`) and mounts below
/// them still there.
fn step_leftovers(d: &Daemon) -> Vec<String> {
    let tmp = d.path("data/tmp");
    let step_dir = |n: &str| {
        n.strip_prefix("build-")
            .or_else(|| n.strip_prefix("from-"))
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    let mut left: Vec<String> = std::fs::read_dir(&tmp)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| step_dir(n))
        .collect();
    let below = format!("{}/", tmp.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    left.extend(
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.strip_prefix(&below).is_some_and(step_dir))
            .map(|m| format!("the mount {m}")),
    );
    left
}

/// Runs one corpus case; returns a description of every mismatch.
fn corpus_case(d: &Daemon, name: &str) -> Vec<String> {
    let dir = corpus_dir().join(name);
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
    // Git keeps only 644/755: modes a case depends on are set here (`"chmod": [[path, "640"]]`).
    for m in exp["chmod"].as_array().into_iter().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let mode = u32::from_str_radix(m[1].as_str().unwrap(), 8).unwrap();
        std::fs::set_permissions(
            dir.join(m[0].as_str().unwrap()),
            std::fs::Permissions::from_mode(mode),
        )
        .unwrap();
    }
    let tag = format!("corpus-{}", name.replace('_', "-"));
    let mut args: Vec<String> = vec!["build".into(), "-t".into(), tag.clone()];
    for a in exp["args"].as_array().into_iter().flatten() {
        args.push(a.as_str().unwrap().to_string());
    }
    args.push(dir.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = d.berth(&argv);
    let mut bad = Vec::new();
    // A build is reported done once its steps' containers are cleaned up, failed or not.
    for left in step_leftovers(d) {
        bad.push(format!("{name}: the build left {left}"));
    }
    let out = format!("{}{}", r.stdout, r.stderr);
    for s in exp["stdout_has"].as_array().into_iter().flatten() {
        if !r.stdout.contains(s.as_str().unwrap()) {
            bad.push(format!("{name}: build output lacks {s}: {out}"));
        }
    }
    for s in exp["stdout_lacks"].as_array().into_iter().flatten() {
        if r.stdout.contains(s.as_str().unwrap()) {
            bad.push(format!("{name}: build output has {s}: {out}"));
        }
    }
    if let Some(e) = exp["error"].as_str() {
        if r.code == 0 {
            bad.push(format!("{name}: build succeeded, expected error {e:?}"));
        } else if !r.stderr.contains(e) {
            bad.push(format!("{name}: error {:?} lacks {e:?}", r.stderr));
        }
        if let Some(c) = exp["exit"].as_i64() {
            if r.code as i64 != c {
                bad.push(format!("{name}: exit {} != {c}", r.code));
            }
        }
        if store(d).resolve(&tag).is_ok() {
            bad.push(format!("{name}: failed build tagged {tag}"));
        }
        return bad;
    }
    if r.code != 0 {
        bad.push(format!("{name}: build failed: {out}"));
        return bad;
    }
    let v = inspect(d, &tag);
    let cfg = &v["config"];
    for (k, want) in exp["config"].as_object().into_iter().flatten() {
        if &cfg[k] != want {
            bad.push(format!("{name}: config {k} = {} want {want}", cfg[k]));
        }
    }
    let env: Vec<String> = cfg["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for e in exp["env_has"].as_array().into_iter().flatten() {
        if !env.iter().any(|x| x == e.as_str().unwrap()) {
            bad.push(format!("{name}: Env {env:?} lacks {e}"));
        }
    }
    for e in exp["env_lacks"].as_array().into_iter().flatten() {
        if env.iter().any(|x| x == e.as_str().unwrap()) {
            bad.push(format!("{name}: Env {env:?} has {e}"));
        }
    }
    let hist = v["history"].to_string();
    for h in exp["history_lacks"].as_array().into_iter().flatten() {
        if hist.contains(h.as_str().unwrap()) {
            bad.push(format!("{name}: history has {h}: {hist}"));
        }
    }
    if let Some(a) = exp["author"].as_str() {
        if v["author"] != a {
            bad.push(format!("{name}: author {}", v["author"]));
        }
    }
    if let Some(want) = exp["run_default"].as_str() {
        let got = d.docker(&["run", "--rm", &tag]);
        if got.stdout != want {
            bad.push(format!(
                "{name}: default run gave {:?} {:?}, want {want:?}",
                got.stdout, got.stderr
            ));
        }
    }
    for pair in exp["run"].as_array().into_iter().flatten() {
        let cmd = pair[0].as_str().unwrap();
        let want = pair[1].as_str().unwrap();
        let got = d.docker_line("run --rm --entrypoint sh", &[&tag, "-c", cmd]);
        if got.stdout != want {
            bad.push(format!(
                "{name}: `{cmd}` gave {:?} (stderr {:?}), want {want:?}",
                got.stdout, got.stderr
            ));
        }
    }
    bad
}

fn run_corpus(filter: impl Fn(&str) -> bool) {
    let d = Daemon::new();
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| filter(n))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut bad = Vec::new();
    for n in &names {
        bad.extend(corpus_case(&d, n));
    }
    assert!(bad.is_empty(), "corpus mismatches:\n{}", bad.join("\n"));
    finish(d);
}

#[test]
fn corpus_valid_dockerfiles() {
    require_root!();
    run_corpus(|n| !n.starts_with("bad_"));
}

#[test]
fn corpus_bad_input() {
    require_root!();
    run_corpus(|n| n.starts_with("bad_"));
}

/// Step number → whether it came from the cache.
fn cached_steps(out: &str) -> Vec<(usize, bool)> {
    let mut v = Vec::new();
    for block in out.split("Step ").skip(1) {
        let n: usize = block.split('/').next().unwrap().parse().unwrap();
        v.push((n, block.contains("Using cache")));
    }
    v
}

fn rebuilt(out: &str) -> Vec<usize> {
    cached_steps(out)
        .into_iter()
        .filter(|(n, c)| !c && *n > 1)
        .map(|(n, _)| n)
        .collect()
}

fn image_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap()
        .to_string()
}

#[test]
fn cache_invalidation_exact_steps() {
    let mut d = root_daemon!();
    let dir = d.context("cache",
        &[
            (
                "Dockerfile",
                "FROM busybox\nARG V=1\nRUN echo run1 $V > /r1\nCOPY a.txt /a.txt\nRUN cat /a.txt > /r2\nCOPY dir /dir\nENV Z=1\n",
            ),
            ("a.txt", "a1\n"),
            ("dir/b.txt", "b1\n"),
            ("unrelated.txt", "u1\n"),
            ("ignored.txt", "i1\n"),
            (".dockerignore", "ignored.txt\n"),
        ],
    );
    let p = dir.display().to_string();
    let build = |d: &Daemon, extra: &[&str]| {
        let mut a = vec!["build", "-t", "cachetest"];
        a.extend_from_slice(extra);
        a.push(&p);
        let r = d.berth(&a);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        r.stdout
    };
    let first = build(&d, &[]);
    assert_eq!(rebuilt(&first), vec![2, 3, 4, 5, 6, 7], "{first}");
    let id1 = image_id(&first);
    let again = build(&d, &[]);
    assert_eq!(rebuilt(&again), Vec::<usize>::new(), "{again}");
    assert_eq!(image_id(&again), id1);

    // A file only the last COPY uses: that step and the ones after it.
    std::fs::write(dir.join("dir/b.txt"), "b2\n").unwrap();
    let o = build(&d, &[]);
    assert_eq!(rebuilt(&o), vec![6, 7], "{o}");
    assert_eq!(run_in(&d, "cachetest", "cat /dir/b.txt"), "b2\n");
    // A new file in a copied directory counts too.
    std::fs::write(dir.join("dir/new.txt"), "n\n").unwrap();
    assert_eq!(rebuilt(&build(&d, &[])), vec![6, 7]);
    // Files no step uses, ignored files, and times alone change nothing.
    std::fs::write(dir.join("unrelated.txt"), "u2\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), "i2\n").unwrap();
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    std::fs::File::options()
        .write(true)
        .open(dir.join("a.txt"))
        .unwrap()
        .set_modified(now)
        .unwrap();
    assert_eq!(rebuilt(&build(&d, &[])), Vec::<usize>::new());
    // Mode is metadata that counts.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(rebuilt(&build(&d, &[])), vec![4, 5, 6, 7]);
    // Content of the first COPY: it and everything after.
    std::fs::write(dir.join("a.txt"), "a2\n").unwrap();
    let o = build(&d, &[]);
    assert_eq!(rebuilt(&o), vec![4, 5, 6, 7], "{o}");
    assert_eq!(run_in(&d, "cachetest", "cat /r2"), "a2\n");
    // A build arg the RUN uses (the ARG step itself is the same: its history shows the
    // default as written, as dockerd's).
    let o = build(&d, &["--build-arg", "V=2"]);
    assert_eq!(rebuilt(&o), vec![3, 4, 5, 6, 7], "{o}");
    assert_eq!(run_in(&d, "cachetest", "cat /r1"), "run1 2\n");
    // Back to the default: the earlier steps are still cached.
    let id_default = image_id(&build(&d, &[]));
    // The cache survives a daemon restart.
    d.kill9();
    d.start();
    let o = build(&d, &[]);
    assert_eq!(rebuilt(&o), Vec::<usize>::new(), "{o}");
    assert_eq!(image_id(&o), id_default);
    // --no-cache rebuilds everything.
    assert_eq!(rebuilt(&build(&d, &["--no-cache"])), vec![2, 3, 4, 5, 6, 7]);
    // builder prune empties the cache.
    let pr = d.berth(&["builder", "prune", "-f"]).ok();
    pr.stdout_contains("Total");
    let pr = d.docker(&["builder", "prune", "-f"]);
    assert_eq!(pr.code, 0, "{}", pr.stderr);
    let o = build(&d, &[]);
    assert_eq!(rebuilt(&o), vec![2, 3, 4, 5, 6, 7], "{o}");

    finish(d);
}

#[test]
fn docker_cli_flags_and_errors() {
    let d = root_daemon!();
    let dir = d.context("flags",
        &[
            ("Dockerfile", "FROM busybox AS one\nRUN echo one > /one\nFROM one AS two\nRUN echo two > /two\nFROM busybox\nRUN echo three > /three\n"),
            ("other.Dockerfile", "FROM busybox\nLABEL from=other\n"),
            ("fail/Dockerfile", "FROM busybox\nRUN echo about-to-fail && exit 5\n"),
        ],
    );
    // -q prints the ID only; --iidfile writes it.
    let iid = d.path("iid");
    let r = docker_build(
        &d,
        &dir,
        &[
            "-q",
            "--target",
            "two",
            "-t",
            "t2",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = std::fs::read_to_string(&iid).unwrap().trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(r.stdout.trim(), id);
    assert_eq!(
        run_in(&d, "t2", "cat /one /two; test -e /three || echo no-three"),
        "one\ntwo\nno-three\n"
    );
    // -f with another file, labels, build args that nobody uses (a warning).
    let f = dir.join("other.Dockerfile");
    let r = docker_build(
        &d,
        &dir,
        &[
            "-f",
            f.to_str().unwrap(),
            "-t",
            "other",
            "--label",
            "x=y",
            "--build-arg",
            "UNUSED=1",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        format!("{}{}", r.stdout, r.stderr)
            .contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{}",
        r.stdout
    );
    let v = inspect(&d, "other");
    assert_eq!(
        v["config"]["Labels"],
        serde_json::json!({"from": "other", "x": "y"})
    );
    // A failing RUN: its output, its exit code, nothing tagged, nothing left over.
    let r = docker_build(&d, &dir.join("fail"), &["-t", "failing"]);
    assert_eq!(r.code, 5, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("about-to-fail"));
    r.stderr_contains("returned a non-zero code: 5");
    assert!(store(&d).resolve("failing").is_err());
    // A platform that is not the host's needs its base image (the local one is the host's;
    // pulling one for s390x fails here): a clear error naming the platform.
    let r = docker_build(&d, &dir, &["--platform", "linux/s390x"]);
    r.fails_with("(linux/s390x)");
    // Several platforms: the classic builder builds one.
    let r = docker_build(&d, &dir, &["--platform", "linux/amd64,linux/s390x"]);
    r.fails_with("one platform per build");
    // Dockerfile from stdin, and a tar context on stdin (berth build).
    let r = d
        .berth_cmd(&["build", "-t", "fromstdin", "-f", "-"])
        .arg(&dir)
        .run_with_input(b"FROM busybox\nCOPY other.Dockerfile /copied\n");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        run_in(&d, "fromstdin", "cat /copied"),
        "FROM busybox\nLABEL from=other\n"
    );
    let mut tarball = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tarball);
        b.append_dir_all(".", dir.join("fail")).unwrap();
        let df = b"FROM busybox\nCOPY Dockerfile /in-tar\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(df.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "Dockerfile", &df[..]).unwrap();
        b.finish().unwrap();
    }
    let r = d
        .berth_cmd(&["build", "-t", "tarstdin", "-"])
        .run_with_input(&tarball);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        run_in(&d, "tarstdin", "cat /in-tar"),
        "FROM busybox\nCOPY Dockerfile /in-tar\n"
    );
    finish(d);
}

#[test]
fn docker_py_builds() {
    let d = root_daemon!();
    let dir = d.context(
        "py",
        &[
            (
                "Dockerfile",
                "FROM busybox\nARG WHO\nRUN echo hello $WHO > /hello\nCMD [\"cat\", \"/hello\"]\n",
            ),
            ("bad/Dockerfile", "FROM busybox\nRUN exit 9\n"),
        ],
    );
    let script = format!(
        r#"
import docker, os, json
c = docker.APIClient(base_url=os.environ["BERTH_SOCK"])
msgs = list(c.build(path={p:?}, tag="pybuilt:1", buildargs={{"WHO": "py"}}, rm=True, decode=True))
ids = [m["aux"]["ID"] for m in msgs if "aux" in m]
assert ids and ids[0].startswith("sha256:"), msgs
text = "".join(m.get("stream", "") for m in msgs)
assert "Successfully tagged pybuilt:1" in text, text
bad = list(c.build(path={b:?}, tag="pybad", decode=True))
errs = [m for m in bad if "error" in m]
assert errs and "non-zero code: 9" in errs[0]["error"], bad
assert errs[0]["errorDetail"]["code"] == 9, errs
hi = docker.DockerClient(base_url=os.environ["BERTH_SOCK"])
img, logs = hi.images.build(path={p:?}, tag="pyhigh:1", buildargs={{"WHO": "high"}})
assert img.id.startswith("sha256:") and "pyhigh:1" in img.tags, (img.id, img.tags)
print("ok", ids[0])
"#,
        p = dir.display().to_string(),
        b = dir.join("bad").display().to_string()
    );
    let Some(r) = d.docker_py(&script) else {
        return;
    };
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("ok sha256:"));
    assert_eq!(
        d.docker(&["run", "--rm", "pybuilt:1"]).ok().stdout,
        "hello py\n"
    );
    finish(d);
}

#[test]
fn onbuild_triggers_run_in_children() {
    let d = root_daemon!();
    let parent = d.context(
        "onb-parent",
        &[(
            "Dockerfile",
            "FROM busybox\nONBUILD COPY marker.txt /marker\nONBUILD RUN echo child-ran > /child\n",
        )],
    );
    let child = d.context(
        "onb-child",
        &[
            (
                "Dockerfile",
                "FROM onbparent\nRUN cat /marker /child > /both\n",
            ),
            ("marker.txt", "marker\n"),
        ],
    );
    let r = d.berth_line("build -t onbparent", &[parent.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = d.berth_line("build -t onbchild", &[child.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    r.stdout_contains("# Executing 2 build triggers");
    assert_eq!(run_in(&d, "onbchild", "cat /both"), "marker\nchild-ran\n");
    let v = inspect(&d, "onbchild");
    assert!(v["config"]["OnBuild"].is_null(), "{}", v["config"]);
    finish(d);
}

#[test]
fn add_from_http_url_with_checksum() {
    let d = root_daemon!();
    let www = d.context("www", &[("payload.txt", "downloaded\n")]);
    let srv = berth_testkit::HttpServer::serve(&www);
    let url = format!("http://127.0.0.1:{}/payload.txt", srv.port);
    let sum = "sha256:5f6d2c1b7f8e9ea5f1c4a2b1d0f7e9ca3b3c0a2f1b0e3d4c5a6b7c8d9e0f1a2b";
    let good = berth_image::Digest::of_bytes(b"downloaded\n").to_string();
    let ok = d.context(
        "url-ok",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD {url} /dl/\nADD --checksum={good} {url} /checked.txt\n"),
        )],
    );
    let r = d.berth_line("build -t urlok", &[ok.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        run_in(
            &d,
            "urlok",
            "cat /dl/payload.txt /checked.txt; stat -c %a /checked.txt"
        ),
        "downloaded\ndownloaded\n600\n"
    );
    let bad = d.context(
        "url-bad",
        &[(
            "Dockerfile",
            &format!("FROM busybox\nADD --checksum={sum} {url} /x\n"),
        )],
    );
    let r = d.berth_line("build -t urlbad", &[bad.to_str().unwrap()]);
    r.fails_with("line 2").fails_with("checksum mismatch");
    // The URL's content is part of the cache key.
    let r = d.berth_line("build -t urlok", &[ok.to_str().unwrap()]);
    assert!(r.stdout.matches("Using cache").count() == 2, "{}", r.stdout);
    std::fs::write(www.join("payload.txt"), "changed\n").unwrap();
    let r = d.berth_line("build -t urlok2", &[ok.to_str().unwrap()]);
    assert_ne!(r.code, 0, "the checksum no longer matches: {}", r.stdout);
    drop(srv);
    finish(d);
}

/// docker-py's `test_build_squash`: dockerd squashes only in experimental mode and refuses
/// `squash` otherwise; berthd has no experimental mode, so a squash is refused, never built
/// unsquashed as if it had been honoured. `squash=False` (docker-py's default) still builds.
#[test]
fn build_squash_is_refused_without_experimental_mode() {
    let d = root_daemon!();
    let script = r#"
import docker, io, os
c = docker.APIClient(base_url=os.environ["BERTH_SOCK"])
df = b"FROM busybox\nRUN echo a > /f1\nRUN echo b > /f2\n"
try:
    list(c.build(fileobj=io.BytesIO(df), tag="squashed", squash=True))
    raise SystemExit("squash=True built")
except docker.errors.APIError as e:
    assert e.status_code == 400, e
    assert e.explanation == "squash is only supported with experimental mode", e.explanation
out = list(c.build(fileobj=io.BytesIO(df), tag="unsquashed", squash=False, decode=True))
assert any("Successfully tagged unsquashed" in m.get("stream", "") for m in out), out
print("ok")
"#;
    let Some(r) = d.docker_py(script) else {
        return;
    };
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // dockerd's BoolValue: any value but "", 0, no, false, none is true.
    let resp = d.http("POST", "/build?squash=on", Some("")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("squash is only supported with experimental mode"),
        "{resp}"
    );
    finish(d);
}

/// docker-py's `test_build_invalid_platform`: an unparsable `platform` is the request's 400,
/// in containerd's `platforms.Parse` words as dockerd 28's build and pull routes answer it
/// (the platform named once).
#[test]
fn build_invalid_platform_is_named_once() {
    let d = root_daemon!();
    let script = r#"
import docker, io, os
c = docker.APIClient(base_url=os.environ["BERTH_SOCK"])
want = '"foobar": unknown operating system or architecture: invalid argument'
try:
    list(c.build(fileobj=io.BytesIO(b"FROM busybox\n"), platform="foobar"))
    raise SystemExit("built for foobar")
except docker.errors.APIError as e:
    assert e.status_code == 400, e
    assert e.explanation == want, e.explanation
try:
    c.pull("busybox", platform="foobar")
    raise SystemExit("pulled for foobar")
except docker.errors.APIError as e:
    assert e.status_code == 400, e
    assert e.explanation == want, e.explanation
print("ok")
"#;
    let Some(r) = d.docker_py(script) else {
        return;
    };
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    finish(d);
}
