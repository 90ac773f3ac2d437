//! The runtime as the shim runs it: from berthd's sealed memfd copy, which needs no
//! protective re-execution, so that `create` clones the container's init itself (no stage 1)
//! when the init needs a PID namespace and nothing else a process before it.

mod common;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use common::*;
use serde_json::json;

/// A sealed memfd copy of the runtime, as berthd makes it.
fn sealed_copy() -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create(
        c"berth-runtime-test",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC | nix::sys::memfd::MFdFlags::MFD_ALLOW_SEALING,
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(&std::fs::read(BIN).unwrap()).unwrap();
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SEAL
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE;
    fcntl(&f, FcntlArg::F_ADD_SEALS(seals)).unwrap();
    f.into()
}

/// A runtime environment whose binary is `copy` (executed through `/proc/self/fd/N`, which
/// the child still has open when it executes it).
fn memfd_env(copy: &OwnedFd) -> OciEnv {
    let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
    OciEnv::new(Path::new(&path), "berth-rt-memfd", "state")
}

/// The readlink of a namespace file.
fn ns(path: &str) -> String {
    std::fs::read_link(path).unwrap().display().to_string()
}

#[test]
fn the_init_is_cloned_by_the_runtime_itself_in_joined_and_new_namespaces() {
    require_root!(BUSYBOX);
    let copy = sealed_copy();
    let env = memfd_env(&copy);
    let a = unique("mfa");
    let ba = env.bundle(&a, &["sleep", "100"]);
    env.detach(&ba, &a);
    let pid = env.pid(&a);

    // Joins A's PID, network, IPC and UTS namespaces; new mount namespace.
    let b = unique("mfb");
    let mut bb = env.bundle(
        &b,
        &sh("for n in pid net ipc; do readlink /proc/self/ns/$n; done; cat /proc/1/cmdline"),
    );
    for n in bb.config["linux"]["namespaces"].as_array_mut().unwrap() {
        let name = match n["type"].as_str().unwrap() {
            "pid" => "pid",
            "network" => "net",
            "ipc" => "ipc",
            "uts" => "uts",
            _ => continue,
        };
        n["path"] = json!(format!("/proc/{pid}/ns/{name}"));
    }
    bb.config.as_object_mut().unwrap().remove("hostname");
    let (code, out, err) = run_fg(&env, &bb, &b);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            ns(&format!("/proc/{pid}/ns/pid")),
            ns(&format!("/proc/{pid}/ns/net")),
            ns(&format!("/proc/{pid}/ns/ipc"))
        ],
        "{out}"
    );
    // PID 1 of the joined namespace is A's init.
    assert!(lines[3].starts_with("sleep"), "{out}");
    // A new PID namespace: the init is its PID 1.
    let c = unique("mfc");
    let bc = env.bundle(&c, &sh("echo $$; readlink /proc/self/ns/pid"));
    let (code, out, err) = run_fg(&env, &bc, &c);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "{out}");
    assert_ne!(lines[1], ns("/proc/self/ns/pid"), "{out}");
    env.ok(&["delete", "--force", &a]);
}

#[test]
fn the_init_is_the_runtimes_own_child() {
    require_root!(BUSYBOX);
    let copy = sealed_copy();
    let env = memfd_env(&copy);
    // A detached create (the runtime is no subreaper then): a createRuntime hook, a child of
    // the runtime, notes the init's parent and its own PID namespace.
    let logdir = env.mkdir("log");
    let id = unique("mfd");
    let mut b = env.bundle(&id, &["sleep", "100"]);
    let hook = format!(
        r#"init=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p'); echo "$(cut -d' ' -f4 /proc/$init/stat) $PPID $(readlink /proc/self/ns/pid)" > {}/hook"#,
        logdir.display()
    );
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    env.create(&b, &id);
    let hook = std::fs::read_to_string(logdir.join("hook")).unwrap();
    let f: Vec<&str> = hook.split_whitespace().collect();
    // The init's parent is the runtime (no stage 1 in between, which would have exited by
    // then), and the runtime's children are in its own PID namespace again (the hook's is
    // the host's).
    assert_eq!(f[0], f[1], "{hook}");
    assert_eq!(f[2], ns("/proc/self/ns/pid"), "{hook}");
    env.ok(&["delete", "--force", &id]);
}
