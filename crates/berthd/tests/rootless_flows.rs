//! The flows of a root daemon, run by a rootless one (a `TestUser`'s berthd, berth-testkit's
//! `UserDaemon`): builds (classic and BuildKit through buildx) with RUN steps in the user
//! namespace, `COPY --chown` and layers of many owners; volumes, `cp` both ways, `logs -f`,
//! `exec -it`, restart policies (also across a daemon restart), pause without a cgroup,
//! `commit`, `save`/`load`, `push`/`pull`; limit flags without a delegated cgroup (warned and
//! ignored, as Podman does on cgroup v1). Networking is `none` or the host's here.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::busybox::BUSYBOX;
use berth_testkit::user::{privileged_in_initial_ns, TestUser};
use berth_testkit::user_daemon::{find_file, UserDaemon};
use common::*;

/// A build context in the user's home, owned by the user.
fn context(user: &TestUser, name: &str, files: &[(&str, &str)]) -> String {
    let dir = user.mkdir(name);
    write_files(&dir, files);
    user.chown_tree(&dir);
    dir.to_str().unwrap().to_string()
}

/// A Dockerfile with RUN and COPY steps making files of several owners; `by` in its first
/// step (the classic builder and BuildKit share the build cache).
fn dockerfile(by: &str) -> String {
    format!(
        "FROM busybox
RUN mkdir /data && echo {by} > /by && echo made > /data/run && chown 1234:1235 /data/run && id -u > /data/uid
COPY --chown=1234:55 f.txt /data/f.txt
COPY g.txt /g.txt
RUN stat -c %u:%g /owners/by-33-44 > /data/seen
"
    )
}

/// What a container of an image built from [`dockerfile`] sees.
const EXPECTED: &str =
    "1234:1235 /data/run\n1234:55 /data/f.txt\n0:0 /g.txt\n33:44 /owners/by-33-44\n0\n33:44\n";

fn check_built(d: &UserDaemon, image: &str) {
    let out = d.berth_stdout(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "stat -c '%u:%g %n' /data/run /data/f.txt /g.txt /owners/by-33-44; cat /data/uid /data/seen",
        ]);
    assert_eq!(out, EXPECTED, "{image}");
}

/// The host's owner of the layer file `name` in the data root: the user's subordinate ids.
fn host_owner(d: &UserDaemon, name: &str) -> (u32, u32) {
    let data = d.user.home.join(".local/share/berth");
    let f = find_file(&data, name).unwrap_or_else(|| panic!("no {name} under {}", data.display()));
    let m = std::fs::metadata(&f).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn rootless_builds_classic_and_buildkit() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker");
    let user = TestUser::create("bfb").expect("create the test user");
    let d = UserDaemon::with_busybox(&user);
    let classic = dockerfile("classic");
    let files = [
        ("Dockerfile", classic.as_str()),
        ("f.txt", "f\n"),
        ("g.txt", "g\n"),
    ];
    // The classic builder through the berth CLI; again from its cache.
    let ctx = context(&user, "ctx", &files);
    let first = d
        .berth(&["build", "--progress", "plain", "-t", "built:classic", &ctx])
        .ok();
    assert!(!first.stdout.contains("Using cache"), "{}", first.stdout);
    check_built(&d, "built:classic");
    let again = d
        .berth(&["build", "--progress", "plain", "-t", "built:classic", &ctx])
        .ok();
    assert!(
        again.stdout.matches("Using cache").count() >= 4,
        "{}",
        again.stdout
    );
    // Files of the RUN and COPY layers, owned on the host by the mapped ids.
    assert_eq!(
        host_owner(&d, "f.txt"),
        (user.subuid.start + 1233, user.subgid.start + 54)
    );
    assert_eq!(
        host_owner(&d, "run"),
        (user.subuid.start + 1233, user.subgid.start + 1234)
    );
    // The docker CLI's classic builder (the Engine API's POST /build).
    let ctx2 = context(&user, "ctx2", &files);
    let o = d
        .docker_cmd(&["build", "-t", "built:docker", &ctx2])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    run_output(o).ok();
    check_built(&d, "built:docker");
    // BuildKit through buildx (the docker CLI's default builder), and its cache.
    if !d.install_buildx() {
        eprintln!("skipped (buildx part): buildx not installed (~/.docker/cli-plugins)");
        return;
    }
    let buildkit = dockerfile("buildkit");
    let ctx3 = context(
        &user,
        "ctx3",
        &[
            ("Dockerfile", &buildkit),
            ("f.txt", "f\n"),
            ("g.txt", "g\n"),
        ],
    );
    let buildx = || {
        d.docker(&[
            "buildx",
            "build",
            "--progress",
            "plain",
            "-t",
            "built:buildx",
            &ctx3,
        ])
        .ok()
    };
    let r = buildx();
    assert!(!r.stderr.contains("CACHED"), "{}", r.stderr);
    check_built(&d, "built:buildx");
    // Again: from the cache.
    let r = buildx();
    assert!(r.stderr.matches("CACHED").count() >= 4, "{}", r.stderr);
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
}

/// Runs `cmd` as the user on a pseudo-terminal (`script`), typing `input`; its output.
fn on_pty(d: &UserDaemon, cmd: &str, input: &str) -> String {
    let mut script = d.user.command("script");
    script.env("DOCKER_HOST", format!("unix://{}", d.sock().display()));
    berth_testkit::on_pty(script, cmd, input)
}

#[test]
fn rootless_volumes_cp_logs_exec() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker", "script");
    let user = TestUser::create("bfv").expect("create the test user");
    let d = UserDaemon::with_busybox(&user);
    // A named volume keeps data and owners across containers.
    d.berth(&["volume", "create", "vol"]).ok();
    d.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "vol:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f && chown 33:44 /data/f",
    ])
    .ok();
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "vol:/v",
        "busybox",
        "sh",
        "-c",
        "cat /v/f; stat -c %u:%g /v/f",
    ]);
    assert_eq!(out, "kept\n33:44\n");
    // A bind mount of the user's directory: its root is the container's root.
    let bind = user.mkdir("bind");
    std::fs::write(bind.join("in"), "from-host\n").unwrap();
    user.chown_tree(&bind);
    let spec = format!("{}:/b", bind.display());
    let out = d.docker_stdout(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "cat /b/in; stat -c %u /b/in; echo out > /b/out",
    ]);
    assert_eq!(out, "from-host\n0\n");
    let m = std::fs::metadata(bind.join("out")).unwrap();
    assert_eq!((m.uid(), m.gid()), (user.uid, user.gid));
    // cp both ways, through both CLIs.
    run_detached(
        &d,
        "box",
        &[
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; sleep 0.3; done; sleep 1000",
        ],
    );
    let src = bind.join("in");
    d.docker(&["cp", src.to_str().unwrap(), "box:/tmp/copied"])
        .ok();
    d.berth(&["cp", src.to_str().unwrap(), "box:/tmp/copied2"])
        .ok();
    let out = d.berth_stdout(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/copied /tmp/copied2; stat -c %u:%g /tmp/copied /tmp/copied2",
    ]);
    // (The docker CLI's tar carries the host's owner, as with Docker; berth's gives root.)
    assert_eq!(
        out,
        format!("from-host\nfrom-host\n{}:{}\n0:0\n", user.uid, user.gid)
    );
    let back = user.home.join("back");
    d.docker(&["cp", "box:/owners/by-33-44", back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "x\n");
    let back2 = user.home.join("back2");
    d.berth(&["cp", "box:/owners", back2.to_str().unwrap()])
        .ok();
    assert_eq!(
        std::fs::read_to_string(back2.join("by-nobody")).unwrap(),
        "x\n"
    );
    // logs -f follows until the container stops.
    let out = d.berth_stdout(&["logs", "box"]);
    assert!(out.starts_with("line1\n"), "{out}");
    let follow = d
        .docker_cmd(&["logs", "-f", "box"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    d.berth(&["kill", "box"]).ok();
    let o = follow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "line1\nline2\nline3\n");
    // exec -it on a terminal.
    d.berth(&["start", "box"]).ok();
    let out = on_pty(&d, "docker exec -it box sh", "tty; id -u; exit\n");
    assert!(out.contains("/dev/pts/"), "{out}");
    let out = on_pty(
        &d,
        &format!(
            "{} exec -it box sh -c 'read x; echo got-$x'",
            bin_dir().join("berth").display()
        ),
        "abc\n",
    );
    assert!(out.contains("got-abc"), "{out}");
    // top without a cgroup: the processes of the container's pid namespace (an exec's too).
    let mut exec = d
        .berth_cmd(&["exec", "box", "sleep", "77"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the exec's process", Duration::from_secs(10), || {
        d.docker(&["top", "box"]).stdout.contains("sleep 77")
    });
    let _ = exec.kill();
    let _ = exec.wait();
    let top = d.berth_stdout(&["top", "box"]);
    assert!(top.contains("sleep 1000"), "{top}");
    // What needs a cgroup is a clear error (Podman's too).
    if !delegated() {
        for args in [
            &["stats", "--no-stream", "box"][..],
            &["update", "--memory", "64m", "box"],
        ] {
            let r = d.docker(args);
            assert_ne!(r.code, 0, "{args:?}");
            assert!(
                r.stderr.contains("rootless") && r.stderr.contains("no cgroup"),
                "{args:?}: {}",
                r.stderr
            );
        }
    }
    d.berth(&["rm", "-f", "box"]).ok();
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
}

/// `berth run -d --network none --name NAME ARGS` (it must succeed).
fn run_detached(d: &UserDaemon, name: &str, args: &[&str]) {
    let mut all = vec!["run", "-d", "--network", "none", "--name", name];
    all.extend_from_slice(args);
    d.berth(&all).ok();
}

fn inspect(d: &UserDaemon, format: &str, name: &str) -> String {
    d.berth_stdout(&["inspect", "--format", format, name])
        .trim()
        .to_string()
}

#[test]
fn rootless_restart_policies_and_pause() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker");
    let user = TestUser::create("bfr").expect("create the test user");
    let mut d = UserDaemon::with_busybox(&user);
    // on-failure: restarted up to the count, then left exited.
    d.docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "fails",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ])
    .ok();
    wait_for("two restarts, then exited", Duration::from_secs(30), || {
        inspect(&d, "{{.RestartCount}} {{.State.Status}}", "fails") == "2 exited"
    });
    assert_eq!(inspect(&d, "{{.State.ExitCode}}", "fails"), "3");
    // always: restarted after it exits...
    run_detached(
        &d,
        "always",
        &[
            "--restart",
            "always",
            "busybox",
            "sh",
            "-c",
            "sleep 0.5; exit 0",
        ],
    );
    wait_for("a restart", Duration::from_secs(30), || {
        inspect(&d, "{{.RestartCount}}", "always")
            .parse::<u32>()
            .is_ok_and(|n| n >= 1)
    });
    d.berth(&["update", "--restart", "no", "always"]).ok();
    // ... and after a daemon restart, when it died while no daemon ran.
    run_detached(
        &d,
        "back",
        &["--restart", "always", "busybox", "sleep", "1000"],
    );
    let pid: i32 = inspect(&d, "{{.State.Pid}}", "back").parse().unwrap();
    d.stop();
    berth_testkit::kill9(pid);
    let mut d = UserDaemon::start(&user);
    wait_for("back running again", Duration::from_secs(30), || {
        inspect(&d, "{{.State.Status}}", "back") == "running"
    });
    assert_ne!(
        inspect(&d, "{{.State.Pid}}", "back"),
        pid.to_string(),
        "{}",
        d.log()
    );
    let r = d.berth(&["exec", "back", "echo", "alive"]);
    assert_eq!(
        r.stdout,
        "alive\n",
        "{} {}\n{}",
        r.stderr,
        inspect(&d, "{{json .State}}", "back"),
        d.log()
    );
    // No cgroup here: pause is a clear error (as Podman's), the container keeps running.
    if !delegated() {
        let r = d.docker(&["pause", "back"]);
        r.fails_with("rootless").fails_with("cgroup");
        let r = d.berth(&["pause", "back"]);
        r.fails_with("cgroup");
        assert_eq!(inspect(&d, "{{.State.Status}}", "back"), "running");
    }
    // The whole namespace gone with every process of the user (as after a reboot): the next
    // daemon makes a new one and starts the container again there.
    d.stop();
    for p in user.pids() {
        berth_testkit::kill9(p);
    }
    wait_for("no process of the user", Duration::from_secs(10), || {
        user.pids().is_empty()
    });
    let mut d = UserDaemon::start(&user);
    wait_for(
        "back running in a new namespace",
        Duration::from_secs(30),
        || inspect(&d, "{{.State.Status}}", "back") == "running",
    );
    let r = d.berth(&["exec", "back", "echo", "alive"]);
    assert_eq!(r.stdout, "alive\n", "{}\n{}", r.stderr, d.log());
    d.berth(&["rm", "-f", "back", "always", "fails"]).ok();
    d.stop();
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
}

/// Whether this machine delegates a cgroup v2 subtree to users (it does not here: hybrid
/// cgroups, no systemd user manager).
fn delegated() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "))
        && Path::new("/sys/fs/cgroup/user.slice").exists()
}

#[test]
fn rootless_commit_save_load_push_pull_and_limits() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker", DOCKER_REGISTRY);
    let reg = DockerRegistry::start();
    let user = TestUser::create("bfp").expect("create the test user");
    // The registry listens on the host's loopback, which a daemon in a network namespace of
    // its own (slirp4netns) does not see (as with Docker's rootless mode): the host's network.
    let d = UserDaemon::start_with(&user, |c| {
        c.env("BERTHD_ROOTLESS_NET", "host");
    });
    d.load_busybox();
    // commit keeps the owners of a container's changes.
    d.docker(&[
        "run",
        "--network",
        "none",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "echo c > /made && chown 7:8 /made",
    ])
    .ok();
    d.docker(&["commit", "maker", "made:1"]).ok();
    d.berth(&["rm", "maker"]).ok();
    // save, rmi, load through the docker CLI.
    let saved = user.home.join("made.tar");
    d.docker(&["save", "-o", saved.to_str().unwrap(), "made:1"])
        .ok();
    d.docker(&["rmi", "made:1"]).ok();
    let out = d.docker_stdout(&["load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("made:1"), "{out}");
    // push, rmi, pull against a local registry, through both CLIs.
    let name = format!("{}/rootless/made:1", reg.host());
    d.berth(&["tag", "made:1", &name]).ok();
    d.berth(&["push", &name]).ok();
    d.docker(&["rmi", &name, "made:1"]).ok();
    d.docker(&["pull", &name]).ok();
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "sh",
        "-c",
        "cat /made; stat -c %u:%g /made /owners/by-1000",
    ]);
    assert_eq!(out, "c\n7:8\n1000:1000\n");
    let name2 = format!("{}/rootless/again:1", reg.host());
    d.docker(&["tag", &name, &name2]).ok();
    d.docker(&["push", &name2]).ok();
    d.berth(&["rmi", &name2]).ok();
    d.berth(&["pull", &name2]).ok();
    // Limits without a delegated cgroup: warned about and ignored, as Podman does.
    if !delegated() {
        for flags in [
            &["--memory", "64m"][..],
            &["--cpus", "1"],
            &["--pids-limit", "10"],
        ] {
            let args = [
                &["run", "--rm", "--network", "none"][..],
                flags,
                &["busybox", "echo", "ran"],
            ]
            .concat();
            let r = d.docker(&args).ok();
            assert_eq!(r.stdout, "ran\n");
            r.stderr_contains("WARNING")
                .stderr_contains("ignored")
                .stderr_contains("rootless");
            let r = d.berth(&args).ok();
            assert_eq!(r.stdout, "ran\n");
            r.stderr_contains("ignored");
        }
    }
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
}
