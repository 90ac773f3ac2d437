//! The runtime run by an unprivileged user (rootless): a test user with subordinate ids
//! (berth-testkit's `TestUser`, removed afterwards), a busybox bundle in its home.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Output;

use berth_testkit::user::{privileged_in_initial_ns, TestUser};
use berth_testkit::Bundle;
use berth_testkit::Rootfs;
use common::*;
use serde_json::{json, Value};

/// A rootless bundle (`spec --rootless` run as the user) in the user's home.
fn user_bundle(user: &TestUser, name: &str, args: &[&str]) -> Bundle {
    let mut spec = user.command(BIN);
    spec.args(["spec", "--rootless"]);
    let b = Bundle::spec(spec, user.mkdir(name), args);
    Rootfs::busybox().write_dir(&b.path.join("rootfs"));
    user.chown_tree(&b.path);
    b
}

/// Writes the bundle's config and runs it as the user under `id`.
fn run_bundle(user: &TestUser, b: &Bundle, id: &str) -> Output {
    b.write();
    rt(user, &["run", "--bundle", b.p(), id])
}

/// The runtime as the user, with its default state root (`$XDG_RUNTIME_DIR/berth-runtime`);
/// output through files (a created container inherits them).
fn rt(user: &TestUser, args: &[&str]) -> Output {
    let mut cmd = user.command(BIN);
    cmd.args(args);
    berth_testkit::oci::output_through_files(cmd, &user.home)
}

#[track_caller]
fn rt_ok(user: &TestUser, args: &[&str]) -> String {
    let out = rt(user, args);
    assert!(
        out.status.success(),
        "runtime {args:?} as {} failed: {}{}",
        user.name,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn test_user() -> TestUser {
    TestUser::create("brt").expect("create the test user")
}

#[test]
fn spec_rootless_maps_the_caller() {
    require_root!(BUSYBOX);
    let user = test_user();
    let b = user_bundle(&user, "spec", &["true"]);
    let uid_maps = &b.config["linux"]["uidMappings"];
    assert_eq!(
        uid_maps,
        &json!([{"containerID": 0, "hostID": user.uid, "size": 1}])
    );
    assert_eq!(
        b.config["linux"]["gidMappings"],
        json!([{"containerID": 0, "hostID": user.gid, "size": 1}])
    );
    let types: Vec<&str> = b.config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"user") && !types.contains(&"network"),
        "{types:?}"
    );
}

#[test]
fn unprivileged_user_runs_a_container() {
    require_root!(BUSYBOX);
    let user = test_user();
    let b = user_bundle(
        &user,
        "run",
        &sh("id -u; id -g; echo hi > /created; hostname; grep -c . /proc/self/uid_map"),
    );
    let mut b = b;
    b.config["root"]["readonly"] = json!(false);
    let id = unique("rl-run");
    let out = run_bundle(&user, &b, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["0", "0", "berth", "1"], "stderr: {stderr}");
    // Files made as the container's root belong to the user on the host.
    let meta = std::fs::metadata(b.path.join("rootfs/created")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    // The state was under $XDG_RUNTIME_DIR/berth-runtime and is gone (run deletes).
    let state = user.runtime_dir().join("berth-runtime");
    assert!(state.is_dir(), "no state root at {}", state.display());
    assert!(!state.join(&id).exists());
    // No cgroup was writable here: a warning says so (unless one was delegated).
    if !stderr.is_empty() {
        assert!(stderr.contains("rootless"), "unexpected stderr: {stderr}");
    }
}

#[test]
fn rootless_create_start_exec_kill_delete() {
    require_root!(BUSYBOX);
    let user = test_user();
    let b = user_bundle(&user, "life", &["sleep", "1000"]);
    b.write();
    let id = unique("rl-life");
    rt_ok(&user, &["create", "--bundle", b.p(), &id]);
    let state: Value = serde_json::from_str(&rt_ok(&user, &["state", &id])).unwrap();
    assert_eq!(state["status"], "created");
    rt_ok(&user, &["start", &id]);
    let state: Value = serde_json::from_str(&rt_ok(&user, &["state", &id])).unwrap();
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap() as i32;
    // The host's view of the init: the user's uid, a user namespace of its own, and no
    // capability in the initial namespace for any process of the user.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status_field(&status, "Uid:");
    assert!(
        uids.split_whitespace().all(|u| u == user.uid.to_string()),
        "init's uids {uids}"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap()
    );
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
    // exec joins it as the namespace's root.
    let out = rt_ok(
        &user,
        &["exec", &id, "sh", "-c", "id -u; cat /proc/1/cmdline"],
    );
    assert_eq!(out, "0\nsleep\x001000\0", "exec output");
    let list = rt_ok(&user, &["list"]);
    assert!(list.contains(&id) && list.contains(&user.name), "{list}");
    rt_ok(&user, &["kill", &id, "KILL"]);
    assert!(berth_testkit::wait_until(
        std::time::Duration::from_secs(5),
        || rt_ok(&user, &["state", &id]).contains("\"stopped\"")
    ));
    rt_ok(&user, &["delete", &id]);
    assert!(!user.runtime_dir().join("berth-runtime").join(&id).exists());
    let left: Vec<String> = user
        .pids()
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn subordinate_ranges_through_newuidmap() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap");
    let user = test_user();
    let mut b = user_bundle(
        &user,
        "multi",
        &sh("id -u; chown 1000:2000 /owned && stat -c %u:%g /owned; grep -c . /proc/self/uid_map"),
    );
    b.config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": user.subuid.start, "size": user.subuid.count}
    ]);
    b.config["linux"]["gidMappings"] = json!([
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": user.subgid.start, "size": user.subgid.count}
    ]);
    b.config["process"]["capabilities"] = caps_json(&["CAP_CHOWN"]);
    std::fs::write(b.path.join("rootfs/owned"), b"x").unwrap();
    user.chown_tree(&b.path.join("rootfs/owned"));
    b.config["root"]["readonly"] = json!(false);
    let id = unique("rl-multi");
    let out = run_bundle(&user, &b, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n1000:2000\n2\n",
        "{stderr}"
    );
    // On the host: the subordinate ids the container's 1000 and 2000 map to.
    let meta = std::fs::metadata(b.path.join("rootfs/owned")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (user.subuid.start + 999, user.subgid.start + 1999)
    );
}

#[test]
fn limits_without_a_delegated_cgroup_are_an_error() {
    require_root!(BUSYBOX);
    let user = test_user();
    let mut b = user_bundle(&user, "limits", &["true"]);
    b.config["linux"]["resources"] = json!({"memory": {"limit": 64 << 20}});
    let id = unique("rl-lim");
    let out = run_bundle(&user, &b, &id);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // A delegated cgroup v2 subtree applied the limit.
        return;
    }
    assert!(
        stderr.contains("rootless") && stderr.contains("limits"),
        "unclear error: {stderr}"
    );
    assert!(!user.runtime_dir().join("berth-runtime").join(&id).exists());
}

#[test]
fn rootless_without_runtime_dir_needs_root_flag() {
    require_root!(BUSYBOX);
    let user = test_user();
    let out = user
        .command(BIN)
        .env_remove("XDG_RUNTIME_DIR")
        .args(["list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("XDG_RUNTIME_DIR"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
