//! Shared harness of berthd's end-to-end tests: berth-testkit's [`Daemon`] (the binaries built
//! once, a busybox image seeded, a daemon on temporary roots with a unique cgroup parent and
//! bridge, everything cleaned up and leak-checked on drop) and the kit's other pieces.
#![allow(dead_code, unused_imports)]

pub use berth_testkit::daemon::{bin_dir, busybox_tar, cli_plugins, finish, seed_busybox, Daemon};
pub use berth_testkit::registry::DOCKER_REGISTRY;
pub use berth_testkit::{
    alive, dockerfile_context, free_port, list_dir, require, require_programs, require_root,
    root_daemon, run_output, temp_context, wait_for, wait_until, write_files, CommandRun,
    DockerRegistry, Run,
};

/// Waits up to 20 s (long enough for a loaded machine) for `f` to hold, failing the test with
/// "timed out waiting for `what`" otherwise.
#[track_caller]
pub fn wait(what: &str, f: impl FnMut() -> bool) {
    wait_for(what, std::time::Duration::from_secs(20), f)
}

/// `docker import -c CHANGE… ROOTFS NAME` of the daemon's busybox root file system tar
/// (`rootfs.tar`), which must succeed.
pub fn import_rootfs(d: &Daemon, changes: &[&str], name: &str) -> Run {
    let rootfs = d.path("rootfs.tar");
    let mut args = vec!["import"];
    for c in changes {
        args.extend(["-c", c]);
    }
    args.extend([rootfs.to_str().unwrap(), name]);
    d.docker(&args).ok()
}

/// A docker-registry and a daemon.
pub fn registry_and_daemon() -> (DockerRegistry, Daemon) {
    (DockerRegistry::start(), Daemon::new())
}

/// Tags busybox as `name`, pushes it, removes it and pulls it back (each must succeed, the
/// pull downloading the image), then runs it; returns the push's result and the pull's output.
#[track_caller]
pub fn push_rmi_pull(d: &Daemon, name: &str) -> (Run, String) {
    d.docker(&["tag", "busybox", name]).ok();
    let push = d.docker(&["push", name]).ok();
    let out = d.docker(&["rmi", name]).ok().stdout;
    assert!(out.contains(&format!("Untagged: {name}")), "{out}");
    let pull = d.docker(&["pull", name]).ok().stdout;
    assert!(
        pull.contains(&format!("Status: Downloaded newer image for {name}")),
        "{pull}"
    );
    let out = d
        .docker(&["run", "--rm", name, "echo", "pulled"])
        .ok()
        .stdout;
    assert_eq!(out, "pulled\n");
    (push, pull)
}
pub mod cri;

/// The `message` of an API error response (a raw HTTP response), its status checked.
#[track_caller]
pub fn api_error(resp: &str, status: u16) -> String {
    assert!(
        resp.starts_with(&format!("HTTP/1.1 {status} ")),
        "wanted {status}: {resp}"
    );
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("{e}: not a JSON error body: {body}"));
    v["message"].as_str().unwrap_or_default().to_string()
}

/// The body of a raw HTTP response (after the blank line).
pub fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// `GET path` as JSON (a 200 required).
#[track_caller]
pub fn get_json(d: &Daemon, path: &str) -> serde_json::Value {
    let r = d.http("GET", path, None).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    serde_json::from_str(body(&r)).unwrap_or_else(|e| panic!("{path}: {e}: {r}"))
}
