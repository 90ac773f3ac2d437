//! berthd run by an ordinary user (rootless): a test user with subordinate ids (berth-testkit's
//! `TestUser`, removed afterwards, with every process it had), its daemon on the XDG default
//! paths, driven through the `berth` CLI (which finds the socket by itself) and the docker CLI.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use berth_testkit::busybox::BUSYBOX;
use berth_testkit::user::{privileged_in_initial_ns, TestUser};
use berth_testkit::user_daemon::{find_file, userns_of, UserDaemon};
use common::*;

#[test]
fn rootless_daemon_runs_containers_for_an_ordinary_user() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker");
    let user = TestUser::create("bdr").expect("create the test user");
    // On the host's network namespace (no network helper): what needs bridges is a clear
    // error (rootless_net.rs tests the daemon's own namespace).
    let d = UserDaemon::start_with(&user, |c| {
        c.env("BERTHD_ROOTLESS_NET", "host");
    });
    // The XDG defaults.
    let data = user.home.join(".local/share/berth");
    assert!(
        data.join("berthd.lock").exists(),
        "no data root at {}",
        data.display()
    );
    // An image with files of several owners, loaded through save/load.
    d.load_busybox();
    let saved = user.home.join("saved.tar");
    d.berth(&["save", "-o", saved.to_str().unwrap(), "busybox"])
        .ok();
    d.berth(&["rmi", "busybox"]).ok();
    let out = d.berth_stdout(&["load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("busybox:latest"), "{out}");
    let out = d.berth_stdout(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(out, "hi\n", "{}", d.log());
    // Owners inside are the image's; on the host, the user's subordinate ids.
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "id -u; stat -c %u:%g /owners/*",
    ]);
    assert_eq!(out, "0\n1000:1000\n33:44\n65534:65534\n");
    let f = find_file(&data, "by-1000").expect("the layer's file in the data root");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (user.subuid.start + 999, user.subgid.start + 999),
        "{}",
        f.display()
    );
    // Whiteouts and opaque directories through overlayfs in the user namespace (`userxattr`):
    // a commit records them, a container of the new image sees them applied.
    d.berth(&[
        "run",
        "--name",
        "changer",
        "busybox",
        "sh",
        "-c",
        "rm /bin/cat && rm -rf /owners && mkdir /owners && echo new > /owners/only",
    ])
    .ok();
    d.berth(&["commit", "changer", "changed:1"]).ok();
    d.berth(&["rm", "changer"]).ok();
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "changed:1",
        "sh",
        "-c",
        "ls /owners; test -e /bin/cat || echo cat-gone",
    ]);
    assert_eq!(out, "only\ncat-gone\n");
    let info = d.docker_stdout(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(info.contains("name=rootless"), "{info}");
    // The docker CLI on the same socket; a detached container, and no process of the user
    // holds a capability in the initial namespace meanwhile.
    let out = d.docker_stdout(&["run", "--rm", "busybox", "echo", "from-docker"]);
    assert_eq!(out, "from-docker\n");
    d.docker(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"])
        .ok();
    assert_eq!(d.docker_stdout(&["exec", "sleeper", "id", "-u"]), "0\n");
    let pids = user.pids();
    assert!(
        pids.len() >= 4,
        "daemon, supervisor, shim, container: {pids:?}"
    );
    assert_eq!(privileged_in_initial_ns(&pids), Vec::<String>::new());
    // What a rootless daemon cannot do yet is a clear error.
    let r = d.berth(&["run", "--rm", "--network", "bridge", "busybox", "true"]);
    r.fails_with("rootless");
    // Limits without a delegated cgroup: warned about and ignored, as Podman does.
    let r = d
        .docker(&["run", "--rm", "-m", "64m", "busybox", "true"])
        .ok();
    r.stderr_contains("rootless")
        .stderr_contains("limits")
        .stderr_contains("ignored");
    d.docker(&["rm", "-f", "sleeper"]).ok();
}

#[test]
fn rootless_daemon_names_what_is_missing() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap");
    let user = TestUser::create("bdm").expect("create the test user");
    let berthd = |without_xdg: bool| {
        let mut c = user.command(bin_dir().join("berthd"));
        if without_xdg {
            c.env_remove("XDG_RUNTIME_DIR");
        }
        let out = c.stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No XDG_RUNTIME_DIR: named.
    let err = berthd(true);
    assert!(err.contains("XDG_RUNTIME_DIR"), "{err}");
    // No subordinate ids: the error names the file, the user and how to add a range.
    let range = format!(
        "{}-{}",
        user.subuid.start,
        user.subuid.start + user.subuid.count - 1
    );
    std::process::Command::new("usermod")
        .args(["--del-subuids", &range, &user.name])
        .output_ok();
    let err = berthd(false);
    assert!(
        err.contains("/etc/subuid") && err.contains(&user.name) && err.contains("usermod"),
        "{err}"
    );
}

#[test]
fn restarted_rootless_daemon_joins_its_running_containers() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap");
    let user = TestUser::create("bdj").expect("create the test user");
    let mut d = UserDaemon::with_busybox(&user);
    d.berth(&["run", "-d", "--name", "keeps", "busybox", "sleep", "1000"])
        .ok();
    let pid = d.berth_stdout(&["inspect", "--format", "{{.State.Pid}}", "keeps"]);
    let ns = userns_of(pid.trim());
    d.stop();
    // The container outlived its daemon; the next daemon enters the same namespace and still
    // execs into it and stops it.
    assert_eq!(userns_of(pid.trim()), ns);
    let d = UserDaemon::start(&user);
    let daemons: Vec<i32> = user
        .pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "berthd")
        })
        .collect();
    assert!(
        daemons.iter().any(|p| userns_of(&p.to_string()) == ns),
        "no berthd in the containers' namespace"
    );
    let out = d.berth_stdout(&["exec", "keeps", "echo", "still-here"]);
    assert_eq!(out, "still-here\n", "{}", d.log());
    d.berth(&["rm", "-f", "keeps"]).ok();
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
}
