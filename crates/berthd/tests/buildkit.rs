//! buildx (BuildKit's client, the docker CLI's default builder) against berthd's BuildKit
//! API: `docker build` with no environment variable, `docker buildx` with each exporter,
//! secrets, ssh, named contexts, failures, a dropped session, and `docker compose build`.
//! Skipped with a message when buildx is not installed (~/.docker/cli-plugins).

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon whose docker config has the user's CLI plugins; `None` (after a skip line)
/// without buildx.
fn daemon() -> Option<Daemon> {
    Daemon::with_cli_plugin("docker-buildx")
}

/// The docker CLI (BuildKit as by default) in `dir`.
fn docker_in(d: &Daemon, dir: &Path, args: &[&str]) -> Run {
    d.buildkit_cmd(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .run()
}

/// `docker buildx build ARGS` in `dir`.
fn buildx_build(d: &Daemon, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["buildx", "build"];
    all.extend_from_slice(args);
    docker_in(d, dir, &all)
}

/// `docker buildx build -q ARGS -o type=KIND,dest=DEST .` in `dir` (it must succeed), DEST
/// the daemon's path `file`: DEST.
fn export(d: &Daemon, dir: &Path, args: &[&str], kind: &str, file: &str) -> PathBuf {
    let dest = d.path(file);
    let output = format!("type={kind},dest={}", dest.display());
    let mut all = vec!["-q"];
    all.extend_from_slice(args);
    all.extend(["-o", &output, "."]);
    buildx_build(d, dir, &all).ok();
    dest
}

/// The names in a tar archive (`tar tf`).
fn tar_list(tar: &Path) -> String {
    Command::new("tar").arg("tf").arg(tar).run_ok().stdout
}

#[test]
fn buildx_ls_and_inspect_show_the_default_builder() {
    let Some(d) = daemon() else { return };
    let ping = d.http("GET", "/_ping", None).unwrap();
    assert!(
        ping.to_ascii_lowercase().contains("builder-version: 2"),
        "{ping}"
    );
    let ls = d.docker(&["buildx", "ls"]).ok().stdout;
    assert!(ls.contains("default") && ls.contains("running"), "{ls}");
    assert!(ls.contains("linux/"), "{ls}");
    let i = d.docker(&["buildx", "inspect"]).ok().stdout;
    assert!(
        i.contains("Driver: docker") && i.contains("Status:") && i.contains("running"),
        "{i}"
    );
    assert!(
        i.contains("org.mobyproject.buildkit.worker.executor"),
        "{i}"
    );
    finish(d);
}

#[test]
fn docker_build_goes_through_buildx_and_caches() {
    let Some(d) = daemon() else { return };
    let mut files: Vec<(String, String)> = (0..20)
        .map(|i| (format!("files/f{i}.txt"), format!("file {i}\n")))
        .collect();
    files.push((
        "Dockerfile".into(),
        "FROM busybox\nARG WHO=nobody\nRUN echo hello-$WHO > /hello\nWORKDIR /app\nCOPY files/ ./files/\nRUN ls files | wc -l > /count\nLABEL from=dockerfile\nCMD [\"cat\", \"/hello\", \"/count\"]\n".into(),
    ));
    files.push((".dockerignore".into(), "files/f1*\n".into()));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let ctx = temp_context(&refs);
    let iid = d.path("iid");
    let md = d.path("md.json");
    // `bk:one` with a build argument and a label, its ID written to `iid`.
    let build_one = |more: &[&str]| {
        let base = [
            "build",
            "--progress=plain",
            "-t",
            "bk:one",
            "--build-arg",
            "WHO=berth",
            "--label",
            "cli=label",
            "--iidfile",
            iid.to_str().unwrap(),
        ];
        docker_in(&d, ctx.path(), &[&base[..], more, &["."]].concat()).ok()
    };
    let r = build_one(&["--metadata-file", md.to_str().unwrap()]);
    // buildx's progress: the steps as vertexes, the RUN's output, the export.
    r.stderr_contains("[internal] load build context");
    r.stderr_contains("RUN echo hello-$WHO > /hello");
    r.stderr_contains("naming to docker.io/library/bk:one");
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&md).unwrap()).unwrap();
    assert_eq!(meta["containerimage.config.digest"], id.as_str());
    assert_eq!(meta["image.name"], "docker.io/library/bk:one");
    let out = d.docker(&["run", "--rm", "bk:one"]).ok().stdout;
    // 20 files, 11 of them (f1, f10..f19) excluded by .dockerignore.
    assert_eq!(out, "hello-berth\n9\n");
    let labels = d
        .docker(&[
            "inspect",
            "-f",
            "{{.Config.Labels.from}} {{.Config.Labels.cli}}",
            "bk:one",
        ])
        .ok()
        .stdout;
    assert_eq!(labels.trim(), "dockerfile label");
    // The same build again: every step from the cache, the same image.
    let r = build_one(&[]);
    r.stderr_contains("CACHED");
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    // --no-cache runs the steps again.
    let r = docker_in(
        &d,
        ctx.path(),
        &[
            "build",
            "--progress=plain",
            "--no-cache",
            "-t",
            "bk:two",
            ".",
        ],
    )
    .ok();
    assert!(!r.stderr.contains("CACHED"), "{}", r.stderr);
    // The context is kept between builds (only changed files are sent): a changed file and
    // a removed one run the COPY again, the steps before it stay cached.
    std::fs::write(ctx.path().join("files/f2.txt"), "changed 2\n").unwrap();
    std::fs::remove_file(ctx.path().join("files/f3.txt")).unwrap();
    let build3 = || {
        docker_in(
            &d,
            ctx.path(),
            &[
                "build",
                "--progress=plain",
                "--build-arg",
                "WHO=berth",
                "-t",
                "bk:three",
                "--iidfile",
                iid.to_str().unwrap(),
                ".",
            ],
        )
        .ok()
    };
    let r = build3();
    // buildx's plain progress: `#N [4/6] COPY files/ ./files/`, then `#N CACHED`.
    let copy_cached = |stderr: &str| {
        let n = stderr
            .lines()
            .find(|l| l.contains("COPY files/"))
            .and_then(|l| l.split_whitespace().next())
            .map(|n| format!("{n} CACHED"));
        n.is_some_and(|n| stderr.lines().any(|l| l.trim() == n))
    };
    assert!(!copy_cached(&r.stderr), "{}", r.stderr);
    r.stderr_contains("CACHED");
    let three = std::fs::read_to_string(&iid).unwrap();
    assert_ne!(three, id);
    let out = d
        .docker(&[
            "run",
            "--rm",
            "bk:three",
            "cat",
            "/count",
            "/app/files/f2.txt",
        ])
        .ok()
        .stdout;
    assert_eq!(out, "8\nchanged 2\n");
    // Unchanged since: the COPY is cached again, the same image.
    let r = build3();
    assert!(copy_cached(&r.stderr), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), three);
    finish(d);
}

#[test]
fn failing_step_shows_the_step_its_output_and_the_code() {
    let Some(d) = daemon() else { return };
    let ctx =
        dockerfile_context("FROM busybox\nRUN echo before-failing && exit 3\nRUN echo never\n");
    let r = docker_in(
        &d,
        ctx.path(),
        &["build", "--progress=plain", "-t", "bk:bad", "."],
    );
    let r = r
        .fails_with("before-failing")
        .fails_with(
            "process \"/bin/sh -c echo before-failing && exit 3\" did not complete successfully: exit code: 3",
        )
        // The Dockerfile snippet with the failing line.
        .fails_with(">>> RUN echo before-failing && exit 3");
    assert!(!r.stderr.contains("echo never\n#"), "{}", r.stderr);
    assert!(d.docker(&["image", "inspect", "bk:bad"]).code != 0);
    // A Dockerfile error names its line.
    let ctx = dockerfile_context("FROM busybox\nRUN true\nNOPE x\n");
    let r = docker_in(&d, ctx.path(), &["build", "."]);
    r.fails_with("NOPE").fails_with(":3");
    // Only the standard frontend is accepted in a syntax line.
    let ctx = dockerfile_context("# syntax=example/frontend:1\nFROM busybox\n");
    let r = docker_in(&d, ctx.path(), &["build", "."]);
    r.fails_with("unsupported frontend");
    let ctx = dockerfile_context("# syntax=docker/dockerfile:1\nFROM busybox\nRUN true\n");
    docker_in(&d, ctx.path(), &["build", "-q", "."]).ok();
    finish(d);
}

#[test]
fn exporters_local_tar_docker_oci() {
    let Some(d) = daemon() else { return };
    let ctx = dockerfile_context(
        "FROM busybox\nRUN mkdir -p /out && echo exported > /out/file && ln -s file /out/link\n",
    );
    let out = d.path("local");
    buildx_build(
        &d,
        ctx.path(),
        &[
            "-q",
            "--output",
            &format!("type=local,dest={}", out.display()),
            ".",
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(out.join("out/file")).unwrap(),
        "exported\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("out/link")).unwrap(),
        Path::new("file")
    );
    assert!(out.join("bin/busybox").is_file());
    let tar = export(&d, ctx.path(), &[], "tar", "fs.tar");
    let list = tar_list(&tar);
    assert!(
        list.lines()
            .any(|l| l.trim_start_matches("./") == "out/file"),
        "{list}"
    );
    let img = export(&d, ctx.path(), &["-t", "bk:archived"], "docker", "img.tar");
    let load = d.docker(&["load", "-i", img.to_str().unwrap()]).ok().stdout;
    assert!(load.contains("bk:archived"), "{load}");
    let out = d
        .docker(&["run", "--rm", "bk:archived", "cat", "/out/file"])
        .ok()
        .stdout;
    assert_eq!(out, "exported\n");
    let oci = export(&d, ctx.path(), &[], "oci", "oci.tar");
    let list = tar_list(&oci);
    assert!(
        list.contains("index.json") && list.contains("oci-layout"),
        "{list}"
    );
    finish(d);
}

#[test]
fn push_to_a_registry() {
    let Some(d) = daemon() else { return };
    let reg = DockerRegistry::start();
    let ctx = dockerfile_context("FROM busybox\nRUN echo pushed > /p\n");
    let name = format!("127.0.0.1:{}/bk/pushed:1", reg.port);
    buildx_build(&d, ctx.path(), &["-q", "--push", "-t", &name, "."]).ok();
    let name2 = format!("127.0.0.1:{}/bk/pushed:2", reg.port);
    buildx_build(
        &d,
        ctx.path(),
        &[
            "-q",
            "-o",
            &format!("type=image,name={name2},push=true"),
            ".",
        ],
    )
    .ok();
    d.docker(&["rmi", &name, &name2]).ok();
    d.docker(&["pull", &name2]).ok();
    assert_eq!(
        d.docker(&["run", "--rm", &name2, "cat", "/p"]).ok().stdout,
        "pushed\n"
    );
    finish(d);
}

#[test]
fn secrets_ssh_target_named_contexts_and_no_cache_filter() {
    let Some(d) = daemon() else { return };
    let ctx = dockerfile_context(
        "FROM busybox AS base\nRUN echo base > /base\n\
             FROM base AS build\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo ssh-ok > /ssh\n\
             FROM mybase AS other\nRUN echo other > /other\n",
    );
    let secret = d.path("tok");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    // An ssh agent of our own (killed at the end).
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = buildx_build(
        &d,
        ctx.path(),
        &[
            "--progress=plain",
            "--target",
            "build",
            "-t",
            "bk:secret",
            "--secret",
            &format!("id=tok,src={}", secret.display()),
            "--ssh",
            &format!("default={}", sock.display()),
            ".",
        ],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let r = r.ok();
    assert!(
        !r.stderr.contains("echo other"),
        "the target's unused stage ran: {}",
        r.stderr
    );
    let seen = d
        .docker(&["run", "--rm", "bk:secret", "cat", "/seen", "/ssh", "/base"])
        .ok()
        .stdout;
    assert_eq!(seen, "s3cr3t-valuessh-ok\nbase\n");
    // The secret is in no layer.
    let hist = d
        .docker(&["history", "--no-trunc", "bk:secret"])
        .ok()
        .stdout;
    assert!(!hist.contains("s3cr3t"), "{hist}");
    // A named context replaces an image; --no-cache-filter reruns one stage only.
    d.docker(&["tag", "busybox", "bk:named-base"]).ok();
    let named = |more: &[&str]| {
        let mut args = vec![
            "--progress=plain",
            "--target",
            "other",
            "--build-context",
            "mybase=docker-image://bk:named-base",
        ];
        args.extend_from_slice(more);
        args.extend(["-t", "bk:other", "."]);
        buildx_build(&d, ctx.path(), &args).ok()
    };
    let r = named(&[]);
    r.stderr_contains("echo other");
    assert_eq!(
        d.docker(&["run", "--rm", "bk:other", "cat", "/other"])
            .ok()
            .stdout,
        "other\n"
    );
    let r = named(&["--no-cache-filter", "other"]);
    let run_line = r
        .stderr
        .lines()
        .skip_while(|l| !l.contains("RUN echo other"))
        .nth(1)
        .unwrap_or("");
    assert!(!run_line.contains("CACHED"), "{}", r.stderr);
    finish(d);
}

/// The record IDs of `buildx du` (lines starting with one).
fn record_ids(du: &str) -> Vec<String> {
    du.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.len() >= 25 && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(|w| w.trim_end_matches('*').to_string())
        .collect()
}

/// Rows of `buildx du`.
fn records(du: &str) -> usize {
    record_ids(du).len()
}

#[test]
fn buildx_du_and_prune() {
    let Some(d) = daemon() else { return };
    let ctx = dockerfile_context("FROM busybox\nRUN echo cached > /c\n");
    docker_in(&d, ctx.path(), &["build", "-q", "."]).ok();
    let du = d.docker(&["buildx", "du"]).ok().stdout;
    assert!(du.contains("Total:"), "{du}");
    let steps = std::fs::read_dir(d.path("data/buildcache/steps"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert!(records(&du) >= 1, "{du} ({steps} step records)");
    // `docker system df` counts the same records.
    let df = build_cache_count(&d);
    assert_eq!(df, records(&du), "{du}");
    // Filters and space limits: nothing fresh is older than a day, no record is a cache
    // mount, the small cache fits in 1 GB; an ID filter removes that record only.
    let ctx2 = dockerfile_context("FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n");
    docker_in(&d, ctx2.path(), &["build", "-q", "."]).ok();
    let before = record_ids(&d.docker(&["buildx", "du"]).ok().stdout);
    assert!(before.len() >= 3, "{before:?}");
    for args in [
        &["--filter", "until=24h"][..],
        &["--filter", "type=exec.cachemount"],
        &["--keep-storage", "1gb"],
        &["--reserved-space", "1gb"],
    ] {
        let mut all = vec!["buildx", "prune", "-f", "-a"];
        all.extend_from_slice(args);
        d.docker(&all).ok();
        let now = record_ids(&d.docker(&["buildx", "du"]).ok().stdout);
        assert_eq!(now, before, "{args:?}");
    }
    let victim = &before[0];
    d.docker(&[
        "buildx",
        "prune",
        "-f",
        "-a",
        "--filter",
        &format!("id={}", &victim[..12]),
    ])
    .ok();
    let now = record_ids(&d.docker(&["buildx", "du"]).ok().stdout);
    assert_eq!(now.len(), before.len() - 1, "{now:?}");
    assert!(!now.contains(victim), "{now:?}");
    // One byte kept: every record with a layer goes (oldest first).
    d.docker(&["buildx", "prune", "-f", "-a", "--keep-storage", "1"])
        .ok();
    let after = record_ids(&d.docker(&["buildx", "du"]).ok().stdout);
    assert!(after.len() < now.len(), "{after:?}");
    // The Engine API's /build/prune takes the same: a fresh cache outlives until=24h, a
    // bad duration is a 400.
    docker_in(&d, ctx2.path(), &["build", "-q", "--no-cache", "."]).ok();
    let n = build_cache_count(&d);
    let r = d
        .http(
            "POST",
            "/build/prune?filters=%7B%22until%22%3A%7B%2224h%22%3Atrue%7D%7D",
            None,
        )
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(build_cache_count(&d), n);
    let r = d
        .http(
            "POST",
            "/build/prune?filters=%7B%22until%22%3A%7B%22soon%22%3Atrue%7D%7D",
            None,
        )
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let pr = d.docker(&["buildx", "prune", "-f", "-a"]).ok();
    pr.stdout_contains("Total:");
    let du = d.docker(&["buildx", "du"]).ok().stdout;
    assert_eq!(records(&du), 0, "{du}");
    assert_eq!(build_cache_count(&d), 0);
    // `docker builder prune` (buildx's alias with the plugin installed) empties it too.
    docker_in(&d, ctx.path(), &["build", "-q", "--no-cache", "."]).ok();
    assert!(build_cache_count(&d) >= 1);
    d.docker(&["builder", "prune", "-f", "-a"]).ok();
    assert_eq!(build_cache_count(&d), 0);
    finish(d);
}

/// The TOTAL of `docker system df`'s Build Cache row.
fn build_cache_count(d: &Daemon) -> usize {
    let df = d
        .docker(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}"])
        .ok()
        .stdout;
    df.lines()
        .find_map(|l| l.strip_prefix("Build Cache="))
        .unwrap_or_else(|| panic!("no build cache row: {df}"))
        .trim()
        .parse()
        .unwrap()
}

/// Whether the RUN step that writes `marker` came from the cache.
fn run_cached(stderr: &str, marker: &str) -> bool {
    stderr
        .lines()
        .skip_while(|l| !(l.contains("RUN ") && l.contains(marker)))
        .take(3)
        .any(|l| l.contains("CACHED"))
}

/// Forgets every local trace of a build: its image and the step cache.
fn forget(d: &Daemon, image: &str) {
    d.docker(&["rmi", "-f", image]).ok();
    d.docker(&["buildx", "prune", "-f", "-a"]).ok();
}

#[test]
fn cache_export_and_import_registry_inline_local() {
    let Some(d) = daemon() else { return };
    let reg = DockerRegistry::start();
    let ctx = dockerfile_context(
        "FROM busybox\nRUN echo cache-me > /c && sleep 0.2\nRUN echo second > /s\n",
    );
    let build = |extra: &[&str]| {
        let mut args = vec!["buildx", "build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(".");
        docker_in(&d, ctx.path(), &args).ok()
    };
    // The baseline: with no cache source, a forgotten build runs again.
    build(&["-t", "bk:cache"]);
    forget(&d, "bk:cache");
    let r = build(&["-t", "bk:cache"]);
    assert!(!run_cached(&r.stderr, "cache-me"), "{}", r.stderr);

    // type=registry: exported to a ref, imported from it.
    let cref = format!("127.0.0.1:{}/bk/cache:reg", reg.port);
    let r = build(&[
        "-t",
        "bk:cache",
        "--cache-to",
        &format!("type=registry,ref={cref}"),
    ]);
    r.stderr_contains("exporting cache");
    forget(&d, "bk:cache");
    let r = build(&[
        "-t",
        "bk:cache",
        "--cache-from",
        &format!("type=registry,ref={cref}"),
    ]);
    assert!(run_cached(&r.stderr, "cache-me"), "{}", r.stderr);
    assert!(run_cached(&r.stderr, "second"), "{}", r.stderr);
    assert_eq!(
        d.docker(&["run", "--rm", "bk:cache", "cat", "/c", "/s"])
            .ok()
            .stdout,
        "cache-me\nsecond\n"
    );
    d.docker(&["rmi", &cref]).ok();

    // type=inline: the pushed image carries its cache; imported by its name.
    let iref = format!("127.0.0.1:{}/bk/inline:1", reg.port);
    build(&["-t", &iref, "--cache-to", "type=inline", "--push"]);
    forget(&d, &iref);
    let r = build(&["-t", "bk:cache", "--cache-from", &iref]);
    assert!(run_cached(&r.stderr, "cache-me"), "{}", r.stderr);
    d.docker(&["rmi", &iref]).ok();

    // type=local: an OCI layout in the client's directory, written and read back.
    let dir = d.path("cache-dir");
    let r = build(&[
        "-t",
        "bk:cache",
        "--cache-to",
        &format!("type=local,dest={}", dir.display()),
    ]);
    r.stderr_contains("exporting cache");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = manifest.strip_prefix("sha256:").unwrap();
    assert!(dir.join("blobs/sha256").join(hex).is_file(), "{index}");
    forget(&d, "bk:cache");
    let r = build(&[
        "-t",
        "bk:cache",
        "--cache-from",
        &format!("type=local,src={}", dir.display()),
    ]);
    assert!(run_cached(&r.stderr, "cache-me"), "{}", r.stderr);
    assert_eq!(
        d.docker(&["run", "--rm", "bk:cache", "cat", "/c"])
            .ok()
            .stdout,
        "cache-me\n"
    );
    // A cache source that is not there: a warning, the build goes on.
    let r = build(&[
        "--no-cache",
        "--cache-from",
        &format!("type=registry,ref=127.0.0.1:{}/bk/none:1", reg.port),
    ]);
    assert!(!run_cached(&r.stderr, "cache-me"), "{}", r.stderr);
    finish(d);
}

#[test]
fn pull_load_platforms_and_local_named_contexts() {
    let Some(d) = daemon() else { return };
    let reg = DockerRegistry::start();
    // --pull: the base is re-resolved against its registry.
    let base = format!("127.0.0.1:{}/bk/base:1", reg.port);
    d.docker(&["tag", "busybox", &base]).ok();
    d.docker(&["push", &base]).ok();
    let ctx = temp_context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN cat /version 2>/dev/null || echo none\n"),
    )]);
    // A newer base in the registry (the local one stays old).
    let newer = dockerfile_context("FROM busybox\nRUN echo v2 > /version\n");
    docker_in(&d, newer.path(), &["build", "-q", "-t", "bk:v2", "."]).ok();
    d.docker(&["tag", "bk:v2", &base]).ok();
    d.docker(&["push", &base]).ok();
    d.docker(&["tag", "busybox", &base]).ok();
    let r = docker_in(
        &d,
        ctx.path(),
        &["build", "--progress=plain", "-t", "bk:p", "."],
    )
    .ok();
    r.stderr_contains("none");
    let r = docker_in(
        &d,
        ctx.path(),
        &["build", "--progress=plain", "--pull", "-t", "bk:p", "."],
    )
    .ok();
    r.stderr_contains("v2");
    let id = d.inspect("{{.Id}}", &base);
    assert_eq!(id, d.inspect("{{.Id}}", "bk:v2"));

    // --load (the docker driver's default, also explicit).
    let ctx = dockerfile_context("FROM busybox\nRUN echo loaded > /l\n");
    buildx_build(&d, ctx.path(), &["-q", "--load", "-t", "bk:loaded", "."]).ok();
    assert_eq!(
        d.docker(&["run", "--rm", "bk:loaded", "cat", "/l"])
            .ok()
            .stdout,
        "loaded\n"
    );

    // Platforms: the host's builds; another needs its base image (pulling busybox for it
    // fails here: no registry) and a binfmt_misc handler (tests/build_platform.rs).
    let host = format!("linux/{}", d.inspect("{{.Architecture}}", "busybox").trim());
    buildx_build(
        &d,
        ctx.path(),
        &["-q", "--platform", &host, "-t", "bk:host", "."],
    )
    .ok();
    let other = if host.ends_with("s390x") {
        "linux/ppc64le"
    } else {
        "linux/s390x"
    };
    let r = buildx_build(
        &d,
        ctx.path(),
        &["-q", "--platform", other, "-t", "bk:other", "."],
    );
    r.fails_with(other);
    assert!(d.docker(&["image", "inspect", "bk:other"]).code != 0);
    let r = buildx_build(
        &d,
        ctx.path(),
        &["-q", "--platform", &format!("{host},{other}"), "."],
    );
    r.fails_with("cannot be exported to the image store");

    // A local directory as a named context: FROM it, COPY --from it.
    let dangling = || {
        d.docker(&["images", "-q", "--filter", "dangling=true"])
            .ok()
            .stdout
    };
    let dangling_before = dangling();
    let extra = temp_context(&[("data/x.txt", "from-the-named-dir\n"), ("top", "t\n")]);
    let ctx = dockerfile_context(
        "FROM busybox\nCOPY --from=assets data/x.txt /x.txt\nFROM assets AS raw\n\
         FROM busybox\nCOPY --from=raw / /raw/\nCOPY --from=0 /x.txt /x.txt\n",
    );
    let r = buildx_build(
        &d,
        ctx.path(),
        &[
            "--progress=plain",
            "--build-context",
            &format!("assets={}", extra.path().display()),
            "-t",
            "bk:named-dir",
            ".",
        ],
    )
    .ok();
    r.stderr_contains("[context assets]");
    assert_eq!(
        d.docker(&[
            "run",
            "--rm",
            "bk:named-dir",
            "cat",
            "/x.txt",
            "/raw/top",
            "/raw/data/x.txt"
        ])
        .ok()
        .stdout,
        "from-the-named-dir\nt\nfrom-the-named-dir\n"
    );
    // The directory's image is not left in the store.
    assert_eq!(dangling(), dangling_before);
    finish(d);
}

#[test]
fn a_dropped_session_ends_the_build_cleanly() {
    let Some(d) = daemon() else { return };
    let ctx = dockerfile_context("FROM busybox\nRUN echo started && sleep 60\n");
    let mut child = d
        .buildkit_cmd(&["build", "--progress=plain", "-t", "bk:dropped", "."])
        .current_dir(ctx.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // Wait for the step to run (its build container's cgroup appears), then kill the client.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cg = d.cgroup_parent.trim_start_matches('/').to_string();
    let running = || {
        std::fs::read_dir("/sys/fs/cgroup/pids")
            .ok()
            .and_then(|_| std::fs::read_dir(Path::new("/sys/fs/cgroup/pids").join(&cg)).ok())
            .is_some_and(|mut r| {
                r.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("build-")))
            })
    };
    while !running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The client goes away as a closed terminal takes it: the CLI and its buildx plugin.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
    // The daemon stops the step: no mounts or containers of the build stay.
    let data = d.path("data").to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let left = mounts
            .lines()
            .any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&data)));
        if !left && !running() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the build kept running after its client went away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.docker(&["image", "inspect", "bk:dropped"]).code != 0);
    // No writable layer of the step's container, no half-written blob.
    let entries = |p: &str| -> Vec<String> {
        std::fs::read_dir(d.path(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(entries("data/snapshotter/containers"), Vec::<String>::new());
    assert_eq!(entries("data/ingest"), Vec::<String>::new());
    finish(d);
}

#[test]
fn compose_build_and_up_without_docker_buildkit() {
    let Some(d) = daemon() else { return };
    if cli_plugins("docker-compose").is_none() {
        eprintln!("skipped: compose v2 not installed (~/.docker/cli-plugins/docker-compose)");
        return;
    }
    let dir = temp_context(&[
        ("a/Dockerfile", "FROM busybox\nRUN echo from-a > /a\nCMD [\"cat\", \"/a\"]\n"),
        ("b/Dockerfile", "FROM busybox\nARG X=1\nRUN echo from-b$X > /b\nCMD [\"cat\", \"/b\"]\n"),
        (
            "compose.yaml",
            "services:\n  a:\n    build: ./a\n    image: bkc-a\n  b:\n    build:\n      context: ./b\n      args:\n        X: \"7\"\n    image: bkc-b\n",
        ),
    ]);
    let r = docker_in(&d, dir.path(), &["compose", "-p", "bkc", "build"]).ok();
    assert!(
        r.stderr.contains("Built") || r.stdout.contains("Built"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(d.docker(&["run", "--rm", "bkc-b"]).ok().stdout, "from-b7\n");
    std::fs::write(
        dir.path().join("a/Dockerfile"),
        "FROM busybox\nRUN echo from-a2 > /a\nCMD [\"cat\", \"/a\"]\n",
    )
    .unwrap();
    let r = docker_in(&d, dir.path(), &["compose", "-p", "bkc", "up", "--build"]).ok();
    assert!(
        r.stdout.contains("from-a2") && r.stdout.contains("from-b7"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    docker_in(&d, dir.path(), &["compose", "-p", "bkc", "down"]).ok();
    finish(d);
}
