//! Real containers from a busybox rootfs, as root, on the real kernel.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use common::*;
use serde_json::json;

#[test]
fn init_is_pid_one_with_own_hostname_and_mounts() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("pid1", &sh("echo pid=$$; hostname; readlink /proc/self/ns/mnt; mount -t tmpfs none /tmp && echo mounted"));
    let caps = json!(["CAP_SYS_ADMIN"]);
    b.config["process"]["capabilities"] = caps_json(&caps);
    b.config["hostname"] = json!("box1");
    b.config["root"]["readonly"] = json!(false);
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "box1");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        lines[2],
        host_mnt.to_str().unwrap(),
        "container shares the host's mount namespace"
    );
    assert_eq!(lines[3], "mounted");
    // The container's tmpfs is not visible on the host.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!host_mounts.contains(b.path.join("rootfs/tmp").to_str().unwrap()));
    // Foreground run deleted the container: nothing is left.
    assert_eq!(env.status(&id), "absent");
    env.assert_no_cgroups(&id);
}

#[test]
fn exit_code_is_the_containers() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("exit", &sh("exit 42"));
    let (code, _, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 42, "{err}");
}

#[test]
fn memory_limit_kills_large_allocation_but_not_small() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("mem", &sh("dd if=/dev/zero of=/dev/null bs=8M count=1 && echo small-ok; dd if=/dev/zero of=/dev/null bs=64M count=1 && echo big-ok"));
    b.config["linux"]["resources"]["memory"] = json!({"limit": 32 << 20, "swap": 32 << 20});
    let (_code, out, err) = run_fg(&env, &b, &id);
    assert!(
        out.contains("small-ok"),
        "small allocation failed: {out} {err}"
    );
    assert!(
        !out.contains("big-ok"),
        "64M allocation survived a 32M limit: {out}"
    );
}

#[test]
fn one_mib_memory_limit_runs_true() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("mem1m", &["true"]);
    b.config["linux"]["resources"]["memory"] = json!({"limit": 1 << 20});
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "true failed under 1 MiB: {out} {err}");
}

#[test]
fn pids_limit_stops_fork_bomb() {
    require_root!(BUSYBOX);
    let (env, id) = with_id("pids");
    // The inner shell forks until the limit stops it (busybox sh then exits with 2); the outer
    // one reads the cgroup's counters with builtins only (no fork is possible any more).
    let script = "sh -c 'for i in $(seq 1 40); do sleep 5 & done' 2>/dev/null; echo inner=$?; \
        read n < /sys/fs/cgroup/pids/pids.current || read n < /sys/fs/cgroup/pids.current; echo current=$n";
    let mut b = env.bundle(&id, &sh(script));
    b.config["linux"]["resources"]["pids"] = json!({"limit": 10});
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("inner=2"), "forks did not fail: {out}");
    let current: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("current="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    assert!(
        (1..=10).contains(&current),
        "pids.current {current} with a limit of 10: {out}"
    );
}

#[test]
fn dropped_capabilities_are_gone() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("caps", &sh("grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status"));
    let caps = json!(["CAP_KILL", "CAP_CHOWN"]);
    b.config["process"]["capabilities"] = caps_json(&caps);
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    // CAP_CHOWN = 0, CAP_KILL = 5.
    for l in out.lines() {
        assert!(
            l.ends_with("0000000000000021"),
            "unexpected capability line {l:?}"
        );
    }
    assert_eq!(out.lines().count(), 3);
}

#[test]
fn seccomp_rule_returns_configured_errno() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("seccomp", &sh("mkdir /tmp/x; echo rc=$?"));
    b.config["root"]["readonly"] = json!(false);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    });
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(
        err.contains("Permission denied"),
        "mkdir did not fail with EACCES: {err}"
    );
}

#[test]
fn seccomp_argument_conditions() {
    require_root!(BUSYBOX);
    let (env, id) = with_id("seccomp-arg");
    // personality(0xffffffff) queries; block only personality(PER_LINUX32=8).
    let mut b = env.bundle(&id, &sh("linux32 true; echo a=$?; linux64 true; echo b=$?"));
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]
    });
    let (_, out, _) = run_fg(&env, &b, &id);
    assert!(
        out.lines().any(|l| l == "a=1"),
        "personality(8) was not blocked: {out}"
    );
    assert!(out.lines().any(|l| l == "b=0"), "{out}");
}

#[test]
fn user_namespace_mappings() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup(
        "userns",
        &sh("cat /proc/self/uid_map /proc/self/gid_map; id -u"),
    );
    let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    ns.push(json!({"type": "user"}));
    ns.retain(|n| n["type"] != "cgroup");
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["type"] != "cgroup");
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], vec!["0", "100000", "65536"]);
    assert_eq!(lines[1], vec!["0", "100000", "65536"]);
    assert_eq!(lines[2], vec!["0"]);
}

#[test]
fn terminal_through_console_socket() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("tty", &sh("tty; stty size; echo done"));
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    b.write();
    let sock = env.dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let b2 = b.p().to_string();
    let sock2 = sock.to_str().unwrap().to_string();
    let mut create = env
        .rt()
        .args(["create", "--bundle", &b2, "--console-socket", &sock2, &id])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let master = berth_runtime::console::recv_fd(&conn).unwrap();
    assert!(create.wait().unwrap().success());
    env.ok(&["start", &id]);
    let mut f = std::fs::File::from(master);
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    // Read until "done" (the pty returns EIO once the container exits).
    while !out.contains("done") {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(out.contains("/dev/pts/0"), "tty output: {out:?}");
    assert!(out.contains("33 101"), "console size not applied: {out:?}");
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn create_start_state_exec_pause_resume_kill_delete() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("life", &["sleep", "1000"]);
    b.write();
    let pidfile = env.dir.path().join("pid");
    env.ok(&[
        "create",
        "--bundle",
        b.p(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(env.status(&id), "created");
    let pid = env.pid(&id);
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    env.ok(&["start", &id]);
    assert_eq!(env.status(&id), "running");
    // The process in the container is `sleep`, in the container's cgroup. As with runc,
    // `start` returns once the init is released; its exec of `sleep` follows.
    let cmdline = || std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    let exec_done = berth_testkit::wait_until(std::time::Duration::from_secs(5), || {
        cmdline().starts_with("sleep")
    });
    assert!(exec_done, "{}", cmdline());
    // exec joins the init's namespaces and cgroup.
    let out = env.ok(&["exec", &id, "sh", "-c", "for n in /proc/1/ns/pid /proc/self/ns/pid /proc/1/ns/net /proc/self/ns/net; do readlink $n; done; cat /proc/self/cgroup | sort; echo ---; cat /proc/1/cgroup | sort"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], lines[1],
        "exec is not in the init's pid namespace"
    );
    assert_eq!(
        lines[2], lines[3],
        "exec is not in the init's network namespace"
    );
    let (mine, init) = out.split_once("---").unwrap();
    let mine: Vec<&str> = mine.lines().skip(4).collect();
    assert_eq!(
        mine.join("\n").trim(),
        init.trim(),
        "exec is not in the init's cgroup"
    );
    // ps lists the init.
    let ps = env.ok(&["ps", "--format", "json", &id]);
    let pids: Vec<i32> = serde_json::from_str(&ps).unwrap();
    assert_eq!(pids, vec![pid]);
    // pause freezes, resume thaws.
    env.ok(&["pause", &id]);
    assert_eq!(env.status(&id), "paused");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("D") || l.contains("S"))));
    let freezer: Vec<_> = env
        .cgroup_dirs(&id)
        .into_iter()
        .filter(|d| d.to_string_lossy().contains("freezer"))
        .collect();
    if let Some(f) = freezer.first() {
        assert_eq!(
            std::fs::read_to_string(f.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN"
        );
    }
    env.ok(&["resume", &id]);
    assert_eq!(env.status(&id), "running");
    // update changes a running container's limits.
    env.ok(&["update", "--pids-limit", "77", &id]);
    for d in env.cgroup_dirs(&id) {
        if d.to_string_lossy().contains("/pids/") {
            assert_eq!(
                std::fs::read_to_string(d.join("pids.max")).unwrap().trim(),
                "77"
            );
        }
    }
    // events --stats reports usage.
    let ev: serde_json::Value = serde_json::from_str(&env.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(ev["type"], "stats");
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1);
    // delete without --force refuses a running container.
    let out = env.run(&["delete", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not stopped"));
    env.ok(&["kill", &id, "KILL"]);
    for _ in 0..200 {
        if env.status(&id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(env.status(&id), "stopped");
    env.ok(&["delete", &id]);
    assert_eq!(env.status(&id), "absent");
    assert!(!env.root.join(&id).exists());
    env.assert_no_cgroups(&id);
}

#[test]
fn delete_force_leaves_nothing() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("force", &sh("sleep 1000 & sleep 1000 & sleep 1000"));
    env.detach(&b, &id);
    let pid = env.pid(&id);
    let pids: Vec<i32> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.len() >= 3, "{pids:?}");
    env.ok(&["delete", "--force", &id]);
    for p in pids.iter().chain(std::iter::once(&pid)) {
        let alive = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        assert!(!alive, "process {p} survived delete --force");
    }
    assert!(!env.root.join(&id).exists());
    env.assert_no_cgroups(&id);
}

#[test]
fn kill_all_and_signal_names() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup(
        "killall",
        &sh("trap 'exit 3' USR1; while true; do sleep 0.05; done"),
    );
    env.detach(&b, &id);
    // PID 1 ignores signals it has no handler for: repeat until the trap is installed.
    for _ in 0..200 {
        if env.status(&id) == "stopped" {
            break;
        }
        let _ = env.run(&["kill", &id, "10"]); // numeric SIGUSR1
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(env.status(&id), "stopped");
    let out = env.run(&["kill", &id, "SIGKILL"]);
    assert!(
        !out.status.success(),
        "kill of a stopped container succeeded"
    );
    let out = env.run(&["kill", &id, "NOSUCHSIG"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal"));
    env.ok(&["delete", &id]);
}

#[test]
fn hooks_run_in_order_with_state() {
    require_root!(BUSYBOX);
    let (env, id) = with_id("hooks");
    let logdir = env.mkdir("hooklog");
    let log = logdir.join("hooks.log");
    let mut b = env.bundle(&id, &sh("echo container >> /hooklog/hooks.log"));
    let host_hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}.state; echo {name} >> {}", logdir.display(), log.display())]});
    b.config["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.2; echo startContainer >> /hooklog/hooks.log"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")]
    });
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/hooklog", "type": "bind", "source": logdir, "options": ["rbind", "rw"]}));
    let (code, _, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    let got = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = got.lines().collect();
    assert_eq!(
        order[..4],
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ],
        "{got}"
    );
    assert!(order.contains(&"container") && order.contains(&"poststart"));
    assert_eq!(order.last(), Some(&"poststop"));
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(logdir.join("createRuntime.state")).unwrap())
            .unwrap();
    assert_eq!(st["id"], id.as_str());
    assert!(st["pid"].as_i64().unwrap() > 0);

    // The same order through `create` and `start`: when `start` returns, poststart has run
    // after startContainer.
    std::fs::write(&log, "").unwrap();
    let id2 = unique("hooks2");
    let mut b2 = env.bundle(&id2, &["sleep", "1000"]);
    b2.config["hooks"] = b.config["hooks"].clone();
    b2.config["mounts"] = b.config["mounts"].clone();
    env.create(&b2, &id2);
    env.ok(&["start", &id2]);
    let got = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = got.lines().collect();
    assert_eq!(
        order,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart"
        ],
        "{got}"
    );
    env.ok(&["delete", "--force", &id2]);
}

#[test]
fn failing_hook_fails_create_and_cleans_up() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("badhook", &["true"]);
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/false"}]});
    b.write();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("createRuntime hook /bin/false failed"));
    assert!(!env.root.join(&id).exists(), "state left behind");
    env.assert_no_cgroups(&id);
}

#[test]
fn no_host_fd_leaks_and_preserve_fds() {
    require_root!(BUSYBOX);
    use std::os::unix::process::CommandExt;
    let env = test_env();
    for (preserve, expect3) in [(0, false), (1, true)] {
        let id = unique("fds");
        let b = env.bundle(&id, &sh("ls /proc/self/fd | sort -n | tr '\\n' ' '"));
        b.write();
        let f = std::fs::File::open("/etc/hostname").unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut cmd = env.rt();
        cmd.args([
            "run",
            "--preserve-fds",
            &preserve.to_string(),
            "--bundle",
            b.p(),
            &id,
        ])
        .stdin(Stdio::null());
        // SAFETY: dup2 in the child before exec, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly.
                libc::dup2(raw, 3);
                libc::dup2(raw, 9);
                libc::fcntl(3, libc::F_SETFD, 0);
                libc::fcntl(9, libc::F_SETFD, 0);
                Ok(())
            });
        }
        let out = cmd.output_ok();
        let fds: Vec<i32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        // 0-2 are stdio; ls opens one directory fd of its own (3, or 4 when 3 is preserved).
        assert!(!fds.contains(&9), "fd 9 leaked into the container: {fds:?}");
        assert_eq!(
            fds.contains(&3) && fds.contains(&4),
            expect3,
            "preserve-fds={preserve}: {fds:?}"
        );
        assert!(fds.len() <= 5, "{fds:?}");
    }
}

#[test]
fn runtime_binary_is_not_writable_from_container() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("exe", &["true"]);
    // Every capability the test itself holds (some sandboxes lack a few).
    let held = caps::read(None, caps::CapSet::Bounding).unwrap();
    let all: Vec<String> = held.iter().map(|c| c.to_string()).collect();
    b.config["process"]["capabilities"] = caps_json(&all);
    b.write();
    let before = std::fs::read(BIN).unwrap();
    // While created, the init is runtime code waiting for `start`: /proc/1/exe is the runtime.
    env.ok(&["create", "--bundle", b.p(), &id]);
    let out = env.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "readlink /proc/1/exe; echo pwned >> /proc/1/exe; echo rc=$?",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The init's executable is the runtime, seen through a read-only mount that the container
    // cannot reach (readlink shows no host path) or a sealed memfd.
    assert!(
        stdout.starts_with("/\n") || stdout.contains("memfd:berth-runtime"),
        "init exe is reachable: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Read-only file system") || stderr.contains("Text file busy"),
        "unexpected failure: {stderr}"
    );
    assert!(
        stdout.contains("rc=1"),
        "writing the runtime's exe succeeded: {stdout}"
    );
    assert_eq!(
        std::fs::read(BIN).unwrap(),
        before,
        "runtime binary changed"
    );
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn masked_and_readonly_paths() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("mask", &sh("cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/ns_last_pid && echo writable; touch /x || echo rootro"));
    let (_, out, _) = run_fg(&env, &b, &id);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "/proc/kcore not masked: {out}");
    assert_eq!(lines[1].trim(), "0", "/sys/firmware not masked: {out}");
    assert!(!out.contains("writable"), "/proc/sys writable: {out}");
    assert!(out.contains("rootro"), "read-only root is writable: {out}");
}

#[test]
fn rlimit_that_cannot_be_raised_is_a_clear_error() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("rlimit", &sh("ulimit -n"));
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "100");
    let id2 = unique("rlimit2");
    let mut b = env.bundle(&id2, &["true"]);
    let too_high = hard.saturating_add(1);
    if hard == libc::RLIM_INFINITY {
        return;
    }
    b.config["process"]["rlimits"] =
        json!([{"type": "RLIMIT_NOFILE", "soft": too_high, "hard": too_high}]);
    let (code, _, err) = run_fg(&env, &b, &id2);
    assert_ne!(code, 0);
    assert!(err.contains("RLIMIT_NOFILE"), "{err}");
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    require_root!(BUSYBOX);
    let env = test_env();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "linux.namespaces[0].type",
            Box::new(|c| c["linux"]["namespaces"][0]["type"] = json!("bogus")),
        ),
        (
            "mounts[0].destination",
            Box::new(|c| c["mounts"][0]["destination"] = json!("proc")),
        ),
        (
            "root.path",
            Box::new(|c| c["root"]["path"] = json!("/nonexistent/rootfs")),
        ),
        (
            "process.capabilities.bounding[0]",
            Box::new(|c| c["process"]["capabilities"]["bounding"][0] = json!("CAP_NOPE")),
        ),
        (
            "linux.namespaces[1].type",
            Box::new(|c| c["linux"]["namespaces"][1]["type"] = json!("pid")),
        ),
        (
            "linux.sysctl.kernel.panic",
            Box::new(|c| c["linux"]["sysctl"] = json!({"kernel.panic": "1"})),
        ),
        (
            "linux.seccomp.defaultAction",
            Box::new(|c| c["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_MAYBE"})),
        ),
        (
            "linux.intelRdt",
            Box::new(|c| c["linux"]["intelRdt"] = json!({"closID": "x"})),
        ),
        (
            "process.args",
            Box::new(|c| c["process"]["args"] = json!([])),
        ),
        (
            "process.cwd",
            Box::new(|c| c["process"]["cwd"] = json!("relative")),
        ),
        (
            "linux.uidMappings",
            Box::new(|c| {
                c["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "user"}))
            }),
        ),
        (
            "process.rlimits[0].type",
            Box::new(|c| c["process"]["rlimits"][0]["type"] = json!("RLIMIT_BOGUS")),
        ),
        (
            "hooks.prestart[0].path",
            Box::new(|c| c["hooks"] = json!({"prestart": [{"path": "relative/hook"}]})),
        ),
    ];
    for (field, edit) in cases {
        let id = unique("bad");
        let mut b = env.bundle(&id, &["true"]);
        edit(&mut b.config);
        b.write();
        let out = env.run(&["create", "--bundle", b.p(), &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{field}: {err}");
        assert!(
            err.contains(field),
            "error for {field} does not name it: {err}"
        );
        assert!(!env.root.join(&id).exists(), "{field}: state left behind");
        for d in env.cgroup_dirs(&id) {
            assert!(!d.exists(), "{field}: cgroup {} left behind", d.display());
        }
    }
    // Malformed JSON.
    let id = unique("badjson");
    let b = env.bundle(&id, &["true"]);
    std::fs::write(b.path.join("config.json"), b"{\"ociVersion\": ").unwrap();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
}

#[test]
fn duplicate_id_is_refused_without_touching_the_first() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("dup", &["sleep", "100"]);
    env.create(&b, &id);
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(env.status(&id), "created");
    env.ok(&["delete", &id]);
}

#[test]
fn setup_failure_midway_leaves_nothing() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("midway", &["true"]);
    // A mount the kernel refuses, after several successful ones.
    b.config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/data", "type": "ext4", "source": "/dev/berth-no-such-device"}),
    );
    b.write();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mounts[") && err.contains("/data"), "{err}");
    assert!(!env.root.join(&id).exists());
    env.assert_no_cgroups(&id);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(b.path.to_str().unwrap()),
        "mount left behind"
    );
}

#[test]
fn exec_missing_binary_fails_at_create() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("nobin", &["no-such-program"]);
    b.write();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("executable file not found"));
    assert!(!env.root.join(&id).exists());
}

#[test]
fn list_and_features() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("list", &["sleep", "100"]);
    env.create(&b, &id);
    let table = env.ok(&["list"]);
    assert!(table.starts_with("ID"));
    assert!(table
        .lines()
        .any(|l| l.starts_with(&id) && l.contains("created")));
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(v[0]["id"], id.as_str());
    let f: serde_json::Value = serde_json::from_str(&env.ok(&["features"])).unwrap();
    assert!(f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("user")));
    env.ok(&["delete", "--force", &id]);
}

#[test]
fn joins_existing_namespace_by_path() {
    require_root!(BUSYBOX);
    let (env, a, b1) = setup("nsa", &["sleep", "100"]);
    let mut b1 = b1;
    b1.config["hostname"] = json!("shared-uts");
    env.detach(&b1, &a);
    let pid = env.pid(&a);
    let bid = unique("nsb");
    let mut b2 = env.bundle(&bid, &["hostname"]);
    for n in b2.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == "uts" || n["type"] == "network" {
            let name = if n["type"] == "uts" { "uts" } else { "net" };
            n["path"] = json!(format!("/proc/{pid}/ns/{name}"));
        }
    }
    b2.config.as_object_mut().unwrap().remove("hostname");
    let (code, out, err) = run_fg(&env, &b2, &bid);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "shared-uts");
}

#[test]
fn time_namespace_with_offsets() {
    require_root!(BUSYBOX);
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        eprintln!("skipped: no time namespaces");
        return;
    }
    let (env, id, mut b) = setup(
        "timens",
        &sh("readlink /proc/self/ns/time; cat /proc/uptime"),
    );
    array(&mut b.config["linux"]["namespaces"]).push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let host = std::fs::read_link("/proc/self/ns/time").unwrap();
    assert_ne!(lines[0], host.to_str().unwrap());
    let uptime: f64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        uptime > 86400.0 * 365.0,
        "boottime offset not applied: {uptime}"
    );
}

#[test]
fn exec_and_run_with_a_terminal_without_console_socket() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("fgtty", &sh("tty; echo ok"));
    b.config["process"]["terminal"] = json!(true);
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/dev/pts/0") && out.contains("ok"), "{out:?}");
    let id2 = unique("fgtty2");
    let b2 = env.bundle(&id2, &["sleep", "100"]);
    env.detach(&b2, &id2);
    let out = env.run(&["exec", "-t", &id2, "sh", "-c", "tty; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{:?}",
        out
    );
    env.ok(&["delete", "--force", &id2]);
}

#[test]
fn large_default_deny_profile_like_dockers() {
    require_root!(BUSYBOX);
    // A Docker-style profile: default SCMP_ACT_ERRNO, an allow-list of every syscall the kernel
    // knows except a few, one rule with argument conditions and one per-rule errnoRet.
    let arch = libseccomp::ScmpArch::native();
    let blocked = ["mkdir", "mkdirat", "reboot", "kexec_load", "chroot"];
    let mut names = Vec::new();
    for n in 0..600 {
        if let Ok(name) = libseccomp::ScmpSyscall::from(n).get_name_by_arch(arch) {
            if !blocked.contains(&name.as_str()) && name != "personality" {
                names.push(name);
            }
        }
    }
    assert!(names.len() > 300, "only {} syscalls", names.len());
    let (env, id, mut b) = setup(
        "bigseccomp",
        &sh("echo ok; ls / >/dev/null && echo ls-ok; mkdir /tmp/x; chroot / true; echo end"),
    );
    b.config["root"]["readonly"] = json!(false);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_EQ"}]},
            {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    });
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok\nls-ok\n") && out.contains("end"), "{out}");
    assert!(
        err.contains("Operation not permitted"),
        "mkdir was not refused: {err}"
    );
    assert!(
        err.contains("not implemented") || err.contains("Function not implemented"),
        "chroot errnoRet not applied: {err}"
    );
}

#[test]
fn ignored_signals_do_not_leak_into_the_container() {
    require_root!(BUSYBOX);
    use std::os::unix::process::CommandExt;
    let (env, id, b) = setup("sigign", &sh("grep SigIgn /proc/self/status"));
    b.write();
    let mut cmd = env.rt();
    cmd.args(["run", "--bundle", b.p(), &id])
        .stdin(Stdio::null());
    // SAFETY: signal() is async-signal-safe; this runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output_ok();
    let line = String::from_utf8_lossy(&out.stdout);
    let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(
        mask & ((1 << (libc::SIGUSR1 - 1)) | (1 << (libc::SIGTERM - 1))),
        0,
        "{line}"
    );
}

#[test]
fn process_settings_user_umask_nnp_oom_sysctl_devices_ro_bind() {
    require_root!(BUSYBOX);
    let (env, id) = with_id("proc");
    let shared = env.mkdir("shared");
    std::fs::write(shared.join("data"), "from host\n").unwrap();
    let script = "id -u; id -g; id -G; umask; grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj; \
        cat /proc/sys/net/ipv4/ip_forward; cat /proc/sys/kernel/domainname; cat /data/data; echo x > /data/new || echo ro-ok; \
        ls -l /dev/fuse-like | cut -c1; env | grep ^FOO=";
    let mut b = env.bundle(&id, &sh(script));
    b.config["process"]["user"] =
        json!({"uid": 65534, "gid": 65534, "additionalGids": [10, 20], "umask": 63});
    b.config["process"]["noNewPrivileges"] = json!(true);
    b.config["process"]["oomScoreAdj"] = json!(321);
    array(&mut b.config["process"]["env"]).push(json!("FOO=bar"));
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.config["domainname"] = json!("example.test");
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/fuse-like", "type": "c", "major": 1, "minor": 3, "fileMode": 438}]);
    b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data", "type": "bind", "source": shared, "options": ["rbind", "ro"]}));
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "65534");
    assert_eq!(lines[1], "65534");
    assert!(
        lines[2]
            .split_whitespace()
            .collect::<Vec<_>>()
            .contains(&"10")
            && lines[2].contains("20"),
        "{out}"
    );
    assert_eq!(lines[3], "0077");
    assert!(lines[4].ends_with('1'), "no_new_privs not set: {out}");
    assert_eq!(lines[5], "321");
    assert_eq!(lines[6], "1");
    assert_eq!(lines[7], "example.test");
    assert_eq!(lines[8], "from host");
    assert_eq!(lines[9], "ro-ok");
    assert_eq!(lines[10], "c");
    assert_eq!(lines[11], "FOO=bar");
    assert!(!shared.join("new").exists());
}

#[test]
fn without_mount_namespace_uses_chroot() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup(
        "chroot",
        &sh("ls /bin/busybox && readlink /proc/self/ns/mnt"),
    );
    array(&mut b.config["linux"]["namespaces"]).retain(|n| n["type"] != "mount");
    b.config["mounts"] = json!([]);
    b.config["linux"]["maskedPaths"] = json!([]);
    b.config["linux"]["readonlyPaths"] = json!([]);
    b.config["root"]["readonly"] = json!(false);
    // /proc is the host's here: the rootfs gets a proc mount point bound from outside the test.
    let (code, out, err) = run_fg(&env, &b, &id);
    // Without /proc mounted in the rootfs, readlink fails; the chroot itself must work.
    assert!(
        out.contains("/bin/busybox"),
        "chroot failed: {out} {err} ({code})"
    );
}

#[test]
fn exec_with_env_cwd_user_and_kill_all() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("execopts", &sh("sleep 1000 & sleep 1000"));
    env.detach(&b, &id);
    let out = env.ok(&[
        "exec",
        "-e",
        "ZED=1",
        "--cwd",
        "/tmp",
        "-u",
        "1000:1001",
        &id,
        "sh",
        "-c",
        "echo $ZED; pwd; id -u; id -g",
    ]);
    assert_eq!(out, "1\n/tmp\n1000\n1001\n");
    let pids: Vec<i32> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    env.ok(&["kill", "--all", &id, "KILL"]);
    for _ in 0..200 {
        if env.status(&id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(env.status(&id), "stopped");
    let left: Vec<i32> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(left.is_empty(), "kill --all left {left:?}");
    env.ok(&["delete", &id]);
}

#[test]
fn docker_default_profile_and_capabilities() {
    require_root!(BUSYBOX);
    let (env, id) = with_id("dockerdefault");
    let caps: Vec<String> = berth_runtime::profiles::DEFAULT_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let script = "ls / >/dev/null && echo ls-ok; (sleep 0.01 &) ; wait; echo fork-ok; \
        chroot / true && echo chroot-ok; unshare -n true 2>/dev/null || echo unshare-denied; \
        mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied; \
        date -s 2000-01-01 2>&1 | grep -q 'not permitted' && echo settime-denied; \
        linux32 true && echo linux32-ok";
    let mut b = env.bundle(&id, &sh(script));
    b.config["process"]["capabilities"] = caps_json(&caps);
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["linux"]["seccomp"] =
        serde_json::to_value(berth_runtime::profiles::default_seccomp(&caps)).unwrap();
    b.config["root"]["readonly"] = json!(false);
    let (code, out, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    for want in [
        "ls-ok",
        "fork-ok",
        "chroot-ok",
        "unshare-denied",
        "mount-denied",
        "settime-denied",
        "linux32-ok",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want}: {out} / {err}"
        );
    }
}

#[test]
fn default_profile_blocks_mount_even_with_cap_sys_admin() {
    require_root!(BUSYBOX);
    let env = test_env();
    let default_caps: Vec<String> = berth_runtime::profiles::DEFAULT_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut caps = default_caps.clone();
    caps.push("CAP_SYS_ADMIN".into());
    for (with_profile, want) in [(false, "mounted"), (true, "denied")] {
        let id = unique("mountblock");
        let mut b = env.bundle(
            &id,
            &sh("mount -t tmpfs none /tmp 2>/dev/null && echo mounted || echo denied"),
        );
        b.config["process"]["capabilities"] = caps_json(&caps);
        if with_profile {
            // The profile for the default capabilities: mount stays blocked by seccomp.
            b.config["linux"]["seccomp"] =
                serde_json::to_value(berth_runtime::profiles::default_seccomp(&default_caps))
                    .unwrap();
        }
        let (code, out, err) = run_fg(&env, &b, &id);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), want, "profile={with_profile}: {err}");
    }
}

#[test]
fn errors_go_to_the_log_file_in_runcs_json_format() {
    let env = test_env();
    let log = env.dir.path().join("runtime.log");
    let out = env.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container no-such-container does not exist")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(line["msg"].as_str().unwrap().contains("does not exist"));
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn exec_with_a_process_file_detached() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("execproc", &["sleep", "1000"]);
    let mut config = b.config.clone();
    env.detach(&b, &id);
    // A process file: runs as nobody, writes into the container's /tmp (a tmpfs we add below is
    // not needed: /dev/shm is writable), then stays alive.
    let process = {
        let p = &mut config["process"];
        p["args"] = json!(["sh", "-c", "echo $MARK > /dev/shm/mark; exec sleep 1000"]);
        p["env"] = json!(["PATH=/bin", "MARK=from-process-file"]);
        p["user"] = json!({"uid": 65534, "gid": 65534});
        p["cwd"] = json!("/");
        p.clone()
    };
    let pfile = env.dir.path().join("process.json");
    std::fs::write(&pfile, serde_json::to_vec(&process).unwrap()).unwrap();
    let pidfile = env.dir.path().join("exec.pid");
    env.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "--process",
        pfile.to_str().unwrap(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut mark = String::new();
    for _ in 0..200 {
        mark = env.ok(&["exec", &id, "cat", "/dev/shm/mark"]);
        if !mark.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(mark.trim(), "from-process-file");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("65534"), "{uid_line}");
    let pids: Vec<i32> = serde_json::from_str(&env.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(
        pids.contains(&pid),
        "the detached exec is not in the container's cgroup: {pids:?}"
    );
    env.ok(&["delete", "--force", &id]);
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false);
    assert!(!alive, "exec'd process survived delete --force");
}

/// The host's v1 memory hierarchy, if any (else the host is pure cgroup v2).
fn host_has_v1_memory() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.contains(" - cgroup ") && l.split(' ').any(|o| o.split(',').any(|x| x == "memory"))
        })
}

/// Issue #16 (4): a container sees its own cgroup, not the runtime's (nor the host's tree),
/// with and without a cgroup namespace.
#[test]
fn cgroup_mount_shows_the_containers_own_cgroup() {
    require_root!(BUSYBOX);
    let env = test_env();
    let v1 = host_has_v1_memory();
    let script = if v1 {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids/pids.max; \
         ls /sys/fs/cgroup/pids | grep -c '^pids.max$'; \
         awk '$5 == \"/sys/fs/cgroup/memory\" {print \"root=\" $4}' /proc/self/mountinfo; \
         wc -l < /sys/fs/cgroup/pids/cgroup.procs"
    } else {
        "cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/pids.max; \
         ls /sys/fs/cgroup | grep -c '^pids.max$'; \
         awk '$5 == \"/sys/fs/cgroup\" {print \"root=\" $4}' /proc/self/mountinfo; \
         wc -l < /sys/fs/cgroup/cgroup.procs"
    };
    for cgroupns in [false, true] {
        let id = unique(if cgroupns { "cgns" } else { "nocgns" });
        let mut b = env.bundle(&id, &sh(script));
        b.config["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
        b.config["linux"]["resources"]["pids"] = json!({"limit": 50});
        let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "cgroup");
        if cgroupns {
            ns.push(json!({"type": "cgroup"}));
        }
        let (code, out, err) = run_fg(&env, &b, &id);
        assert_eq!(code, 0, "cgroupns={cgroupns}: {out} {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0], "67108864",
            "cgroupns={cgroupns}: the memory limit: {out}"
        );
        assert_eq!(lines[1], "50", "cgroupns={cgroupns}: the pids limit: {out}");
        // The container's own directory: a leaf with its limit files, holding only its own
        // processes (sh, wc, and the command substitution's children at most).
        assert_eq!(lines[2], "1", "{out}");
        let want_root = if cgroupns {
            "root=/".to_string()
        } else {
            format!("root={}/{id}", env.cgroup_parent)
        };
        assert_eq!(lines[3], want_root, "cgroupns={cgroupns}: {out}");
        let procs: usize = lines[4].trim().parse().unwrap();
        assert!(
            (1..=3).contains(&procs),
            "cgroupns={cgroupns}: {procs} processes: {out}"
        );
    }
}

/// The init joins its cgroup itself (v1 `tasks`, a clone into the v2 cgroup; from a user
/// namespace, the v2 `cgroup.procs`): its process is in the container's cgroup in every
/// hierarchy of the host, before it runs the user's program, with and without a user
/// namespace.
#[test]
fn the_container_process_is_in_its_cgroup_in_every_hierarchy() {
    require_root!(BUSYBOX);
    let env = test_env();
    let hierarchies = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    for userns in [false, true] {
        let id = unique(if userns { "cguserns" } else { "cgnouserns" });
        let mut b = env.bundle(&id, &sh("cat /proc/self/cgroup"));
        let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "cgroup");
        if userns {
            ns.push(json!({"type": "user"}));
            b.config["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
            b.config["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        }
        let (code, out, err) = run_fg(&env, &b, &id);
        assert_eq!(code, 0, "userns={userns}: {out} {err}");
        let want = format!("{}/{id}", env.cgroup_parent);
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), hierarchies, "userns={userns}: {out}");
        for l in lines {
            let path = l.splitn(3, ':').nth(2).unwrap_or("");
            assert!(
                path.ends_with(&want),
                "userns={userns}: not in {want}: {l} ({out})"
            );
        }
    }
}

/// Issue #16 (10): a failing poststart or poststop hook is a warning; the hooks after it run.
#[test]
fn failing_poststart_and_poststop_hooks_do_not_skip_the_rest() {
    require_root!(BUSYBOX);
    let env = test_env();
    let log = env.dir.path().join("after-failure.log");
    let hooks = |log: &std::path::Path| {
        let append = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", log.display())]});
        json!({
            "poststart": [{"path": "/bin/false"}, append("poststart-2")],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}, append("poststop-2")]
        })
    };
    // Foreground run.
    let id = unique("hookwarn");
    let mut b = env.bundle(&id, &["true"]);
    b.config["hooks"] = hooks(&log);
    let (code, _, err) = run_fg(&env, &b, &id);
    assert_eq!(code, 0, "{err}");
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, "poststart-2\npoststop-2\n", "stderr: {err}");
    assert!(err.contains("poststart hook /bin/false failed"), "{err}");
    assert!(
        err.contains("poststop hook /bin/sh failed: exit status: 3"),
        "{err}"
    );

    // create, start, delete: start and delete succeed and run every hook.
    std::fs::remove_file(&log).unwrap();
    let id = unique("hookwarn2");
    let mut b = env.bundle(&id, &["sleep", "1000"]);
    b.config["hooks"] = hooks(&log);
    env.create(&b, &id);
    let out = env.run(&["start", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("poststart hook /bin/false failed"));
    env.ok(&["delete", "--force", &id]);
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, "poststart-2\npoststop-2\n");
}

/// Issue #16 (11): `rootfsPropagation` unbindable (like shared) is applied once the rootfs is
/// in place; applied first, the rootfs bind failed with EINVAL.
#[test]
fn rootfs_propagation_unbindable_and_shared() {
    require_root!(BUSYBOX);
    let env = test_env();
    for (prop, want) in [
        ("unbindable", "unbindable"),
        ("runbindable", "unbindable"),
        ("shared", "shared:"),
        ("rshared", "shared:"),
    ] {
        let id = unique("prop");
        let mut b = env.bundle(&id, &["awk", "$5 == \"/\"", "/proc/self/mountinfo"]);
        b.config["linux"]["rootfsPropagation"] = json!(prop);
        let (code, out, err) = run_fg(&env, &b, &id);
        assert_eq!(code, 0, "{prop}: {err}");
        assert!(out.contains(want), "{prop}: root mount {out:?}");
    }
}

/// Issue #18: with `rootfsPropagation: rshared`, a bind with `rshared` propagation of a host's
/// shared mount stays its peer: a mount made on the host under the source shows in the
/// container, and one made in the container shows on the host. With `rslave` only the first.
/// The shared mount is the test's own (a temporary directory bound onto itself), never `/`.
#[test]
fn bind_propagation_rshared_and_rslave() {
    require_root!(BUSYBOX);
    use nix::mount::{mount, MsFlags};
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            berth_testkit::unmount_below(&self.0);
        }
    }
    for (prop, both_ways) in [("rshared", true), ("rslave", false)] {
        let dir = tempfile::Builder::new()
            .prefix("berth-prop-")
            .tempdir()
            .unwrap();
        let d = dir.path().to_path_buf();
        let mut leaks = berth_testkit::LeakGuard::new([d.to_string_lossy().into_owned()]);
        let _unmount = Unmount(d.clone());
        mount(Some(&d), &d, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        mount(
            None::<&str>,
            &d,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        std::fs::create_dir(d.join("host")).unwrap();
        std::fs::create_dir(d.join("ctr")).unwrap();
        let (env, id, mut b) = setup(
            "prop",
            &sh(
                "i=0; while [ ! -e /p/host/f ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                 [ -e /p/host/f ] && echo seen > /p/seen; \
                 mount -t tmpfs tmpfs /p/ctr && echo c > /p/ctr/f && echo done > /p/done; \
                 sleep 1000",
            ),
        );
        b.config["process"]["capabilities"] = caps_json(&json!(["CAP_SYS_ADMIN"]));
        b.config["linux"]["rootfsPropagation"] = json!(prop);
        array(&mut b.config["mounts"]).push(json!({
            "destination": "/p", "type": "bind", "source": d, "options": ["rbind", prop]
        }));
        env.detach(&b, &id);
        mount(
            Some("tmpfs"),
            &d.join("host"),
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(d.join("host/f"), "h").unwrap();
        let done = berth_testkit::wait_until(std::time::Duration::from_secs(15), || {
            d.join("done").exists()
        });
        assert!(done, "{prop}: the container's mount did not finish");
        assert!(
            d.join("seen").exists(),
            "{prop}: the host's mount is not in the container"
        );
        assert_eq!(
            d.join("ctr/f").exists(),
            both_ways,
            "{prop}: the container's mount on the host"
        );
        env.ok(&["delete", "--force", &id]);
        drop(env);
        drop(_unmount);
        leaks.check();
    }
}

/// Issue #16 (12): an error of the init before it is in its cgroup reaches the caller (it was
/// lost behind "sync socket: Broken pipe" when the runtime's write to the exited init failed).
#[test]
fn init_errors_before_the_cgroup_step_are_reported() {
    require_root!(BUSYBOX);
    let env = test_env();
    // A failing mount, first of all (the race with the runtime's cgroup step is lost most of
    // the time: several rounds make it certain to show).
    for round in 0..6 {
        let id = unique("earlyerr");
        let mut b = env.bundle(&id, &["true"]);
        b.config["mounts"].as_array_mut().unwrap().insert(
            0,
            json!({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["size=bogus"]}),
        );
        b.write();
        let out = env.run(&["create", "--bundle", b.p(), &id]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "round {round}");
        assert!(
            err.contains("mounts[0]: mount tmpfs (tmpfs) on /mnt: Invalid argument"),
            "round {round}: {err}"
        );
        assert!(!env.root.join(&id).exists(), "state left behind");
    }
    // EACCES in a user namespace: the init (root in the namespace, 100000 outside) cannot
    // reach a rootfs in a directory only the host's root may enter.
    for round in 0..3 {
        let id = unique("usernsacc");
        let mut b = env.bundle(&id, &["true"]);
        let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        ns.retain(|n| n["type"] != "cgroup");
        b.config["linux"]["uidMappings"] =
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        b.config["linux"]["gidMappings"] =
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        array(&mut b.config["mounts"]).retain(|m| m["type"] != "cgroup");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&b.path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (code, _, err) = run_fg(&env, &b, &id);
        assert_ne!(code, 0, "round {round}");
        assert!(
            err.contains("rootfs bind") && err.contains("Permission denied"),
            "round {round}: {err}"
        );
    }
}

/// The bits of `Cap*` lines of a /proc/<pid>/status text, by name (`CapEff` → mask).
fn cap_masks(status: &str) -> std::collections::HashMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.starts_with("Cap")
                .then(|| (k.to_string(), u64::from_str_radix(v.trim(), 16).unwrap()))
        })
        .collect()
}

/// Issue #16 (13): capabilities that cannot be granted are dropped with a warning at create,
/// before anything runs: the container runs (it died after `start` returned 0).
#[test]
fn ungrantable_capabilities_are_dropped_with_a_warning() {
    require_root!(BUSYBOX);
    const KILL: u64 = 1 << 5;
    const NET_BIND: u64 = 1 << 10;
    const AUDIT_WRITE: u64 = 1 << 29;
    let env = test_env();
    let out_dir = env.dir.path().join("capout");
    std::fs::create_dir_all(&out_dir).unwrap();

    // `runc spec`'s default: ambient capabilities that are not inheritable, through create and
    // start (the process's view written to a bind-mounted file).
    let id = unique("ambient");
    let mut b = env.bundle(&id, &sh("grep Cap /proc/self/status > /out/status"));
    let three = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": three, "effective": three, "permitted": three, "ambient": three
    });
    b.config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/out", "type": "bind", "source": out_dir, "options": ["rbind", "rw"]}),
    );
    b.write();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("process.capabilities.ambient: CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE not granted: an ambient capability must also be permitted and inheritable"),
        "{err}"
    );
    env.ok(&["start", &id]);
    let st = env.pid(&id);
    assert!(
        // The shell creates the file before grep writes it: wait for the last line.
        wait_for(
            || std::fs::read_to_string(out_dir.join("status")).is_ok_and(|s| s.contains("CapAmb"))
        ),
        "the container did not run"
    );
    let _ = st;
    let masks = cap_masks(&std::fs::read_to_string(out_dir.join("status")).unwrap());
    assert_eq!(masks["CapPrm"], KILL | NET_BIND | AUDIT_WRITE, "{masks:?}");
    assert_eq!(masks["CapAmb"], 0, "{masks:?}");
    env.ok(&["delete", "--force", &id]);

    // A capability the runtime itself does not hold: here its bounding set lacks CAP_SYS_TIME.
    let id = unique("nosystime");
    let mut b = env.bundle(&id, &["grep", "Cap", "/proc/self/status"]);
    let two = json!(["CAP_SYS_TIME", "CAP_KILL"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": two, "effective": two, "permitted": two, "inheritable": two, "ambient": two
    });
    b.write();
    let mut cmd = env.rt();
    cmd.args(["run", "--bundle", b.p(), &id]);
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_CAPBSET_DROP, 25 /* CAP_SYS_TIME */, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = env.output_of(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for set in [
        "bounding",
        "permitted",
        "effective",
        "inheritable",
        "ambient",
    ] {
        assert!(
            err.contains(&format!(
                "process.capabilities.{set}: CAP_SYS_TIME not granted"
            )),
            "{set}: {err}"
        );
    }
    let masks = cap_masks(&String::from_utf8_lossy(&out.stdout));
    for set in ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(masks[set], KILL, "{set}: {masks:?}");
    }
    assert_eq!(masks.len(), 5);
}

/// Polls `f` for up to 5 s.
fn wait_for(f: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Issue #16 (14): mounts without a mount namespace are refused, saying why (runc makes them
/// in the host's namespace, where they outlive the container).
#[test]
fn mounts_without_a_mount_namespace_are_refused_with_the_reason() {
    require_root!(BUSYBOX);
    let (env, id, mut b) = setup("nomntns", &["true"]);
    array(&mut b.config["linux"]["namespaces"]).retain(|n| n["type"] != "mount");
    b.write();
    let out = env.run(&["create", "--bundle", b.p(), &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("config.json: mounts: without a mount namespace")
            && err.contains("the host's mount namespace, outlive the container"),
        "{err}"
    );
    assert!(!env.root.join(&id).exists(), "state left behind");
}
