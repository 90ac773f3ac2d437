//! The real docker CLI against berthd: exec, events, top, stats, pause, rename, update,
//! restart policies, resource limits, security options, health checks.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn exec_top_rename_pause_events() {
    let d = root_daemon!();
    let since = d.docker(&["version", "-f", "{{.Server.Version}}"]).ok();
    drop(since);
    let t0 = berth_util::time::now().0;
    d.docker_line("run -d --name ex1 busybox sleep 1000", &[])
        .ok();
    // exec: output, exit code, env, workdir, user.
    let r = d.docker_line("exec ex1 sh -c", &["echo out; echo err >&2; exit 3"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(
        d.docker_out(
            "exec -e FOO=bar -w /tmp -u 65534 ex1 sh -c",
            &["echo $FOO $(pwd) $(id -u)"]
        ),
        "bar /tmp 65534\n"
    );
    let r = d.docker(&["exec", "ex1", "/no/such/binary"]);
    assert!(r.code == 126 || r.code == 127, "{} {}", r.code, r.stderr);
    // An unknown user or group: dockerd (28.2 on) refuses the exec create with a 400, its
    // lookup's text (before, the start wrote it into the stream and the exec exited 126).
    let r = d.docker(&["exec", "-u", "nosuchuser", "ex1", "true"]);
    assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "Error response from daemon: unable to find user nosuchuser: no matching entries in passwd file"
        ),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = d.post(
        "/v1.44/containers/ex1/exec",
        r#"{"Cmd": ["true"], "User": "root:nosuchgroup"}"#,
    );
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    assert!(
        r.contains("unable to find group nosuchgroup: no matching entries in group file"),
        "{r}"
    );
    // A numeric user needs no passwd entry.
    assert_eq!(d.docker_out("exec -u 1234:5678 ex1 id -u", &[]), "1234\n");
    // stdin through exec -i.
    let r = d
        .docker_cmd(&["exec", "-i", "ex1", "cat"])
        .run_with_input(b"hello through stdin\n");
    assert_eq!(r.stdout, "hello through stdin\n");
    // detached exec.
    d.docker_line("exec -d ex1 sh -c", &["echo detached > /tmp/d"])
        .ok();
    wait("detached exec", || {
        d.docker_line("exec ex1 cat /tmp/d", &[]).stdout == "detached\n"
    });
    // top.
    let top = d.docker(&["top", "ex1"]).ok().stdout;
    assert!(top.contains("PID") && top.contains("sleep 1000"), "{top}");
    // rename.
    d.docker(&["rename", "ex1", "ex2"]).ok();
    assert_eq!(d.inspect("{{.Name}}", "ex2"), "/ex2\n");
    d.docker_line("run -d --name other busybox sleep 1000", &[])
        .ok();
    let r = d.docker(&["rename", "ex2", "other"]);
    r.fails_with("already in use");
    // pause / unpause.
    d.docker(&["pause", "ex2"]).ok();
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.Paused}}", "ex2"),
        "paused true\n"
    );
    let frozen = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/freezer{}/{}/freezer.state",
        d.cgroup_parent,
        d.inspect("{{.Id}}", "ex2").trim()
    ))
    .unwrap_or_default();
    assert_eq!(frozen.trim(), "FROZEN");
    let r = d.docker(&["exec", "ex2", "true"]);
    r.fails_with("paused");
    d.docker(&["unpause", "ex2"]).ok();
    d.docker(&["exec", "ex2", "true"]).ok();
    // stats.
    let st = d.docker_out(
        "stats --no-stream --format",
        &["{{.Name}} {{.PIDs}}", "ex2"],
    );
    assert_eq!(st, "ex2 1\n");
    let cid = d.inspect("{{.Id}}", "ex2");
    // events since t0 include what happened, with filters.
    let ev = d
        .docker(&[
            "events",
            "--since",
            &t0.to_string(),
            "--until",
            "0s",
            "--filter",
            &format!("container={}", cid.trim()),
            "--format",
            "{{.Action}}",
        ])
        .ok()
        .stdout;
    for want in [
        "create",
        "start",
        "exec_create",
        "exec_start",
        "exec_die",
        "rename",
        "pause",
        "unpause",
    ] {
        assert!(
            ev.lines().any(|l| l.starts_with(want)),
            "{want} missing in {ev}"
        );
    }
    assert!(!ev.contains("other"), "{ev}");
    // diff.
    d.docker_line("exec ex2 sh -c", &["echo x > /tmp/newfile; rm /etc/group"])
        .ok();
    let diff = d.docker(&["diff", "ex2"]).ok().stdout;
    assert!(diff.contains("A /tmp/newfile"), "{diff}");
    assert!(diff.contains("D /etc/group"), "{diff}");
    assert!(diff.contains("C /tmp"), "{diff}");
    // prune removes only stopped containers.
    d.docker_line("run --name done busybox true", &[]).ok();
    let p = d.docker(&["container", "prune", "-f"]).ok().stdout;
    assert!(p.contains("Deleted Containers"), "{p}");
    let names = d.docker_out("ps -a --format", &["{{.Names}}"]);
    assert!(!names.contains("done") && names.contains("ex2"), "{names}");
    finish(d);
}

#[test]
fn restart_policies_and_daemon_restart() {
    let mut d = root_daemon!();
    d.docker_line(
        "run -d --name onf --restart on-failure:2 busybox sh -c",
        &["exit 3"],
    )
    .ok();
    wait("two restarts", || {
        let s = d
            .docker(&[
                "inspect",
                "-f",
                "{{.RestartCount}} {{.State.Status}}",
                "onf",
            ])
            .stdout;
        s == "2 exited\n"
    });
    d.docker_line("run -d --name alw --restart always busybox sleep 1000", &[])
        .ok();
    let pid1 = d.inspect("{{.State.Pid}}", "alw");
    // The container's process dies: always restarts it.
    let pid: i32 = pid1.trim().parse().unwrap();
    // SAFETY: kill(2) on the container's init pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait("restart after kill", || {
        let s = d
            .docker(&[
                "inspect",
                "-f",
                "{{.State.Running}} {{.RestartCount}}",
                "alw",
            ])
            .stdout;
        s == "true 1\n"
    });
    // Stop by hand: no restart.
    d.docker_line(
        "run -d --name us --restart unless-stopped busybox sleep 1000",
        &[],
    )
    .ok();
    d.docker_line("stop -t 1 us", &[]).ok();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.inspect("{{.State.Running}}", "us"), "false\n");
    // Stop `alw` by hand too, then kill -9 the daemon: on start, `always` comes back,
    // stopped `unless-stopped` does not.
    d.docker_line("stop -t 1 alw", &[]).ok();
    d.kill9();
    d.start();
    wait("always after daemon restart", || {
        d.docker(&["inspect", "-f", "{{.State.Running}}", "alw"])
            .stdout
            == "true\n"
    });
    assert_eq!(d.inspect("{{.State.Running}}", "us"), "false\n");
    // Update the policy.
    d.docker_line("update --restart no alw", &[]).ok();
    assert_eq!(
        d.inspect("{{.HostConfig.RestartPolicy.Name}}", "alw"),
        "no\n"
    );
    let r = d.docker_line("run --rm --restart always busybox true", &[]);
    assert_ne!(r.code, 0);
    finish(d);
}

#[test]
fn limits_security_and_health() {
    let d = root_daemon!();
    // Memory limit: an allocation above it is OOM-killed and inspect says so.
    let r = d.docker_line("run --name oom --memory 16m --memory-swap 16m busybox sh -c", &["dd if=/dev/zero bs=64M count=1 | cat > /dev/null; head -c 64m /dev/zero | tail > /dev/null"]);
    assert_ne!(r.code, 0);
    assert_eq!(d.inspect("{{.State.OOMKilled}}", "oom"), "true\n");
    // pids limit stops a fork bomb-ish loop.
    let r = d.docker_line(
        "run --rm --pids-limit 10 busybox sh -c",
        &["for i in $(seq 1 30); do sleep 5 & done 2>/dev/null; wait; echo done"],
    );
    assert!(
        r.stderr.contains("fork") || r.stdout.contains("done") || r.code != 0,
        "{} {}",
        r.stdout,
        r.stderr
    );
    // Limits reach the cgroup; update raises one on a running container.
    d.docker_line(
        "run -d --name lim --memory 32m --cpus 0.5 --pids-limit 50 busybox sleep 1000",
        &[],
    )
    .ok();
    let id = d.inspect("{{.Id}}", "lim").trim().to_string();
    let cg = |ctl: &str, file: &str| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{ctl}{}/{id}/{file}",
            d.cgroup_parent
        ))
        .unwrap_or_default()
        .trim()
        .to_string()
    };
    assert_eq!(cg("memory", "memory.limit_in_bytes"), "33554432");
    assert_eq!(cg("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cg("pids", "pids.max"), "50");
    d.docker_line(
        "update --memory 64m --memory-swap 128m --pids-limit 80 lim",
        &[],
    )
    .ok();
    assert_eq!(cg("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(cg("pids", "pids.max"), "80");
    assert_eq!(d.inspect("{{.HostConfig.Memory}}", "lim"), "67108864\n");
    // A limit the kernel or Docker's rules refuse: a clear error.
    let r = d.docker_line("run --rm --memory 1m busybox true", &[]);
    r.fails_with("Minimum memory limit");
    // Capabilities.
    let caps = |args: &[&str]| -> String {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["busybox", "sh", "-c", "grep CapEff /proc/self/status"]);
        d.docker(&a).ok().stdout
    };
    assert_eq!(caps(&[]), "CapEff:\t00000000a80425fb\n");
    assert_eq!(caps(&["--cap-drop", "ALL"]), "CapEff:\t0000000000000000\n");
    assert_eq!(
        caps(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]),
        "CapEff:\t0000000000001000\n"
    );
    assert!(
        caps(&["--privileged"]).starts_with("CapEff:\t000001ff"),
        "{}",
        caps(&["--privileged"])
    );
    // no-new-privileges, read-only root, ulimits, seccomp unconfined.
    let out = d
        .docker_line("run --rm --security-opt no-new-privileges --read-only --ulimit nofile=100:200 busybox sh -c", &["grep NoNewPrivs /proc/self/status; touch /x 2>&1; ulimit -n; ulimit -Hn"])
        .stdout;
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("100\n200\n"), "{out}");
    let out = d.docker_out(
        "run --rm busybox sh -c",
        &["grep Seccomp: /proc/self/status"],
    );
    assert_eq!(out, "Seccomp:\t2\n");
    let out = d.docker_out(
        "run --rm --security-opt seccomp=unconfined busybox sh -c",
        &["grep Seccomp: /proc/self/status"],
    );
    assert_eq!(out, "Seccomp:\t0\n");
    // pid host and hostname.
    let out = d.docker_out(
        "run --rm --pid host busybox sh -c",
        &["test -d /proc/1 && ls /proc | grep -c '^[0-9]'"],
    );
    assert!(out.trim().parse::<u32>().unwrap() > 3, "{out}");
    // --init: PID 1 is the init, the command its child; zombies are reaped, signals forwarded.
    let out = d
        .docker_line("run --rm --init busybox sh -c", &["cat /proc/1/cmdline | tr '\\0' ' '; echo; (sleep 0.1 &) ; sleep 0.5; ps -o stat,comm | grep -c Z; exit 7"])
        .stdout;
    assert!(out.starts_with("/sbin/docker-init -- sh -c"), "{out}");
    assert!(out.ends_with("0\n"), "zombies left: {out}");
    let r = d.docker_line("run --rm --init busybox sh -c", &["exit 7"]);
    assert_eq!(r.code, 7);
    d.docker_line("run -d --name ini --init busybox sleep 1000", &[])
        .ok();
    // sleep as the init's child dies of the forwarded SIGTERM (143); as PID 1 it would ignore
    // it and be killed after the timeout (137).
    d.docker_line("stop -t 5 ini", &[]).ok();
    assert_eq!(d.inspect("{{.State.ExitCode}}", "ini"), "143\n");
    // Health checks.
    d.docker_line(
        "run -d --name hc --health-cmd",
        &[
            "test -f /tmp/ok",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "busybox",
            "sleep",
            "1000",
        ],
    )
    .ok();
    wait("unhealthy", || {
        d.docker(&["inspect", "-f", "{{.State.Health.Status}}", "hc"])
            .stdout
            == "unhealthy\n"
    });
    d.docker_line("exec hc touch /tmp/ok", &[]).ok();
    wait("healthy", || {
        d.docker(&["inspect", "-f", "{{.State.Health.Status}}", "hc"])
            .stdout
            == "healthy\n"
    });
    let ps = d.docker_out("ps --filter name=hc --format", &["{{.Status}}"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    finish(d);
}

/// Runs `cmd` with the daemon's docker and berth CLI settings under `script` (a real
/// pseudo-terminal of 100x30), typing `input` into it; its output.
fn on_pty(d: &Daemon, cmd: &str, input: &str) -> String {
    let mut c = std::process::Command::new("script");
    c.env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
        .env("DOCKER_CONFIG", d.path("docker-config"))
        .env("BERTH_HOST", format!("unix://{}", d.sock().display()))
        .env("COLUMNS", "100")
        .env("LINES", "30");
    berth_testkit::on_pty(c, cmd, input)
}

#[test]
fn berth_cli_engine_commands_and_terminals() {
    let d = root_daemon!();
    let t0 = berth_util::time::now().0.to_string();
    d.berth_line("run -d --name aa --memory 32m busybox sleep 1000", &[])
        .ok();
    let r = d.berth_line("exec aa sh -c", &["echo hi; exit 4"]);
    assert_eq!((r.code, r.stdout.as_str()), (4, "hi\n"), "{}", r.stderr);
    assert_eq!(
        d.berth_inspect("{{.State.Running}} {{.HostConfig.Memory}}", "aa"),
        "true 33554432\n"
    );
    assert!(d.berth(&["top", "aa"]).ok().stdout.contains("sleep 1000"));
    d.berth(&["rename", "aa", "bb"]).ok();
    d.berth(&["pause", "bb"]).ok();
    assert_eq!(d.berth_inspect("{{.State.Status}}", "bb"), "paused\n");
    d.berth(&["unpause", "bb"]).ok();
    assert_eq!(
        d.berth_line("stats --no-stream --format", &["{{.Name}} {{.PIDs}}", "bb"])
            .ok()
            .stdout,
        "bb 1\n"
    );
    d.berth_line("update --memory 64m bb", &[]).ok();
    assert_eq!(
        d.berth_inspect("{{.HostConfig.Memory}}", "bb"),
        "67108864\n"
    );
    d.berth_line("exec bb touch /made", &[]).ok();
    assert!(d.berth(&["diff", "bb"]).ok().stdout.contains("A /made"));
    d.berth_line("restart -t 1 bb", &[]).ok();
    assert_eq!(d.berth_inspect("{{.State.Running}}", "bb"), "true\n");
    d.berth(&["kill", "bb"]).ok();
    assert_eq!(d.berth(&["wait", "bb"]).ok().stdout, "137\n");
    d.berth_line("create --name cc busybox echo created", &[])
        .ok();
    assert_eq!(d.berth(&["start", "-a", "cc"]).ok().stdout, "created\n");
    let ev = d
        .berth(&[
            "events",
            "--since",
            &t0,
            "--until",
            "0s",
            "--filter",
            "event=rename",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ])
        .ok()
        .stdout;
    assert_eq!(ev, "rename bb\n");
    let p = d.berth(&["container", "prune", "-f"]).ok().stdout;
    assert!(p.contains("Deleted Containers"), "{p}");
    assert_eq!(d.berth(&["ps", "-aq"]).ok().stdout, "");
    // logs -f streams until the container exits; attach follows a running container.
    d.berth_line(
        "run -d --name lf busybox sh -c",
        &["echo one; sleep 1; echo two >&2"],
    )
    .ok();
    let r = d.berth(&["logs", "-f", "lf"]).ok();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("one\n", "two\n"));
    d.berth_line(
        "run -d --name at busybox sh -c",
        &["sleep 1; echo attached; exit 5"],
    )
    .ok();
    let r = d.berth(&["attach", "at"]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (5, "attached\n"),
        "{}",
        r.stderr
    );
    d.berth(&["rm", "lf", "at"]).ok();
    // A bad flag value: exit 125 with a message.
    let r = d.berth_line("run --memory lots busybox true", &[]);
    assert_eq!(r.code, 125, "{}", r.stderr);
    // A command that cannot be found: 127.
    let r = d.berth_line("run --rm busybox /no/such", &[]);
    assert_eq!(r.code, 127, "{}", r.stderr);
    // Terminals: berth and docker `run -it` and `exec -it` on a pty.
    let berth = bin_dir().join("berth");
    let out = on_pty(
        &d,
        &format!(
            "{} run -it --rm busybox sh -c 'tty; echo $TERM; stty size; exit 3'",
            berth.display()
        ),
        "",
    );
    assert!(out.contains("/dev/pts/0") && out.contains("xterm"), "{out}");
    let out = on_pty(
        &d,
        "docker run -it --rm busybox sh",
        "echo $((6*7))\r\nexit\r\n",
    );
    assert!(out.contains("42"), "{out}");
    d.berth_line("run -d --name tt busybox sleep 1000", &[])
        .ok();
    let out = on_pty(
        &d,
        &format!("{} exec -it tt sh", berth.display()),
        "echo $((6*9))\r\nexit\r\n",
    );
    assert!(out.contains("54"), "{out}");
    let out = on_pty(&d, "docker exec -it tt sh -c 'tty'", "");
    assert!(out.contains("/dev/pts/"), "{out}");
    // Detaching with custom keys leaves the container running.
    let out = on_pty(
        &d,
        &format!(
            "{} run -it --name dk --detach-keys ctrl-x,y busybox sh; echo cli-exit=$?",
            berth.display()
        ),
        "echo $((7*8))\r\n\0\x18y",
    );
    assert!(out.contains("56") && out.contains("cli-exit=0"), "{out}");
    assert_eq!(d.berth_inspect("{{.State.Running}}", "dk"), "true\n");
    let r = d.berth_line("run -it --detach-keys ctrl-1 busybox true", &[]);
    r.fails_with("detach keys");
    d.berth_line("rm -f dk tt", &[]).ok();
    finish(d);
}

#[test]
fn docker_py_exec_stats_top_pause_restart() {
    let d = root_daemon!();
    let Some(py) = d.docker_py(
        r#"
import docker, os
c = docker.DockerClient(base_url=os.environ["BERTH_SOCK"])
ct = c.containers.run("busybox", ["sleep", "1000"], detach=True, name="pyx",
                      mem_limit="64m", restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
code, out = ct.exec_run(["sh", "-c", "echo from-exec; exit 3"])
assert (code, out) == (3, b"from-exec\n"), (code, out)
code, (o, e) = ct.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True)
assert (o, e) == (b"o\n", b"e\n"), (o, e)
top = ct.top()
assert any("sleep 1000" in " ".join(p) for p in top["Processes"]), top
s = ct.stats(stream=False)
assert s["memory_stats"]["limit"] == 64 * 1024 * 1024, s["memory_stats"]
assert s["pids_stats"]["current"] == 1
ct.pause(); ct.reload(); assert ct.status == "paused", ct.status
ct.unpause(); ct.reload(); assert ct.status == "running"
ct.restart(timeout=1); ct.reload(); assert ct.status == "running"
ct.update(mem_limit="128m", memswap_limit="256m")
assert c.api.inspect_container("pyx")["HostConfig"]["Memory"] == 128 * 1024 * 1024
ct.rename("pyy")
ev = c.api.events(since=0, until=int(__import__("time").time()) + 1, decode=True, filters={"container": ct.id})
actions = [e["Action"] for e in ev]
assert "rename" in actions and "pause" in actions and "restart" in actions, actions
ct.remove(force=True)
print("ok")
"#,
    ) else {
        return;
    };
    assert_eq!(py.stdout.trim(), "ok", "{}", py.stderr);
    finish(d);
}

/// A process that catches a runtime entering its container for `docker exec` (its
/// `/proc/<pid>/exe`), keeps that open and, once the runtime exited, reopens it for writing,
/// printing `held` and what it holds when it could. (The descriptor on a compound command: a
/// failed redirection of `exec`, when the runtime is gone before the open, would end the
/// shell. What it opened is checked again: the process may have become the exec'd command,
/// one of the container's own files, between the `readlink` and the open.)
const RUNTIME_GRABBER: &str = r#"while :; do
  for p in /proc/[0-9]*; do
    case "$(readlink $p/exe 2>/dev/null)" in
      *berth-runtime*) {
        case "$(readlink /proc/self/fd/3)" in
          *berth-runtime*)
            while [ -e "$p" ]; do :; done
            sh -c 'echo held "$(readlink /proc/self/fd/4)"; exec sleep 1000' 4>>/proc/self/fd/3 2>/dev/null ;;
        esac
      } 2>/dev/null 3<"$p/exe" ;;
    esac
  done
done"#;

/// Runs 40 execs in each of `racer` and `other` (running), which must all succeed; `held`:
/// what the grabber printed; then removes both and checks the runtime binary is unchanged.
#[track_caller]
fn execs_survive_the_grabber(d: &Daemon, held: impl Fn() -> String, before: &[u8]) {
    for i in 0..40 {
        for c in ["racer", "other"] {
            let r = d.docker_line("exec", &[c, "true"]);
            assert_eq!(r.code, 0, "exec {i} in {c}: {r:?}, grabber: {}", held());
        }
    }
    assert_eq!(held(), "");
    d.docker_line("rm -f racer other", &[]).ok();
    assert!(
        std::fs::read(berth_testkit::runtime_bin()).unwrap() == before,
        "the runtime binary changed"
    );
}

/// CVE-2019-5736, and a denial of service through it: a container holding CAP_SYS_PTRACE
/// runs [`RUNTIME_GRABBER`]. It must not get there: the shared sealed copy of the runtime
/// that berthd hands to shims could not be written, but held open for writing it made every
/// later exec of the runtime, in every container, fail with ETXTBSY. Execs in it and in
/// another container keep working, and the runtime binary is unchanged.
#[test]
fn ptrace_container_cannot_hold_the_runtime_open_for_writing() {
    let d = root_daemon!();
    let before = std::fs::read(berth_testkit::runtime_bin()).unwrap();
    d.docker_line(
        "run -d --name racer --cap-add SYS_PTRACE busybox sh -c",
        &[RUNTIME_GRABBER],
    )
    .ok();
    d.docker_line("run -d --name other busybox sleep 1000", &[])
        .ok();
    execs_survive_the_grabber(&d, || d.docker(&["logs", "racer"]).stdout, &before);
    finish(d);
}

/// The same from a privileged exec (all capabilities, CAP_SYS_PTRACE among them) into an
/// ordinary container: its shim stops running the runtime from the shared copy.
#[test]
fn privileged_exec_cannot_hold_the_runtime_open_for_writing() {
    let d = root_daemon!();
    let before = std::fs::read(berth_testkit::runtime_bin()).unwrap();
    d.docker_line("run -d --name racer busybox sleep 1000", &[])
        .ok();
    d.docker_line("run -d --name other busybox sleep 1000", &[])
        .ok();
    let script = format!("({RUNTIME_GRABBER}) >/tmp/held 2>&1");
    d.docker_line("exec -d --privileged racer sh -c", &[&script])
        .ok();
    let held = || d.docker(&["exec", "racer", "cat", "/tmp/held"]).stdout;
    execs_survive_the_grabber(&d, held, &before);
    finish(d);
}
