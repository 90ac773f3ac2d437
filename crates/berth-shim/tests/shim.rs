//! Real containers (busybox rootfs, berth-runtime) under a real shim, as root.

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_shim::client::{Client, Frame};
use berth_shim::protocol::Request;
use berth_shim::ExitRecord;
use common::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn read_exit(dir: &std::path::Path) -> ExitRecord {
    serde_json::from_slice(&std::fs::read(dir.join("exit.json")).unwrap()).unwrap()
}

#[test]
fn log_attach_kill_and_exit_record() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("logs", &sh("echo out; echo err >&2; sleep 100"), false);
    let shim = env.start_shim(&id, &b, &[]);
    assert!(alive(shim.pid));
    assert_eq!(shim.client().state().unwrap().status, "created");

    // Attach before start, as `docker run` does.
    let mut stream = shim.client().attach(false, true, true).unwrap();
    stream.set_timeout(Some(T)).unwrap();
    shim.client().start().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while out != b"out\n" || err != b"err\n" {
        match stream.read_frame().unwrap() {
            Some(Frame::Stdout(d)) => out.extend(d),
            Some(Frame::Stderr(d)) => err.extend(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    let st = shim.client().state().unwrap();
    assert_eq!(st.status, "running");
    assert_eq!(st.pid, shim.init_pid);
    assert!(st.started_at.as_deref().unwrap().ends_with('Z'));

    // The json-file log: one entry per line, the right stream, RFC 3339 nanosecond times.
    wait_for("log entries", T, || shim.log_entries().len() >= 2);
    let entries = shim.log_entries();
    let find = |s: &str| entries.iter().find(|e| e["stream"] == s).unwrap().clone();
    assert_eq!(find("stdout")["log"], "out\n");
    assert_eq!(find("stderr")["log"], "err\n");
    let time = find("stdout")["time"].as_str().unwrap().to_string();
    assert_eq!(time.len(), 30, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.');

    // A second waiter on its own connection, then SIGKILL.
    let mut waiter = shim.client();
    shim.client().kill(libc::SIGKILL, false).unwrap();
    assert_eq!(waiter.wait(None).unwrap(), 137);
    // The attach stream ends once the container is gone.
    assert!(stream.read_frame().unwrap().is_none());
    let st = shim.client().state().unwrap();
    assert_eq!((st.status.as_str(), st.exit_code), ("stopped", Some(137)));
    let rec = read_exit(&shim.dir);
    assert_eq!((rec.exit_code, rec.pid), (137, shim.init_pid));
    assert_eq!(Some(rec.finished_at.clone()), st.finished_at);
    // Killing a stopped container is an error, and the shim keeps serving.
    assert!(shim.client().kill(libc::SIGKILL, false).is_err());

    // Shutdown deletes the container; the shim exits and leaves exit.json and the log.
    shim.client().shutdown(false).unwrap();
    wait_for("shim exit", T, || !alive(shim.pid));
    assert!(!shim.sock.exists());
    assert_eq!(env.status(&id), "absent");
    assert_eq!(read_exit(&shim.dir).exit_code, 137);
    assert!(shim.log_path().exists());
}

#[test]
fn sigterm_gives_143() {
    require_root!(BUSYBOX);
    let (env, id) = TestEnv::with_id("term");
    // Without a PID namespace `sleep` is not a namespace init, so SIGTERM's default action
    // applies (a PID-namespace init ignores signals it has no handler for).
    let mut b = env.bundle(&id, &["sleep", "100"], false);
    let ns = b.config["linux"]["namespaces"].as_array().unwrap().clone();
    b.config["linux"]["namespaces"] = json!(ns
        .into_iter()
        .filter(|n| n["type"] != "pid")
        .collect::<Vec<_>>());
    b.write();
    let shim = env.start_shim(&id, &b, &[]);
    shim.client().start().unwrap();
    shim.client().kill(libc::SIGTERM, false).unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 143);
    assert_eq!(read_exit(&shim.dir).exit_code, 143);
    shim.client().shutdown(false).unwrap();
}

#[test]
fn survives_its_starter() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("orphan", &sh("echo hi; sleep 100"), false);
    // The starter: a process group of its own that starts the shim and stays alive, like a
    // daemon. Its death (SIGKILL to the whole group, then SIGHUP) must not touch the shim.
    let mut starter = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#""$0" "$@" > "$SHIM_REPORT" && exec sleep 1000"#)
        .arg(shim_bin())
        .args(env.shim_args(&id, &b, &[]))
        .env("SHIM_REPORT", env.dir.path().join("report"))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let sock = env.shim_dir(&id).join("shim.sock");
    let report = env.dir.path().join("report");
    wait_for("shim report", T, || {
        std::fs::read_to_string(&report).is_ok_and(|s| s.ends_with('\n'))
    });
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let shim_pid = v["pid"].as_i64().unwrap() as i32;
    env.pids.borrow_mut().push(shim_pid);
    // Not in the starter's process group or session, no controlling terminal.
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let (pgrp, session, tty_nr): (i32, i32, i32) = (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    );
    assert_ne!(pgrp, starter.id() as i32);
    assert_ne!(session, starter.id() as i32);
    assert_eq!(tty_nr, 0);
    let mut c = Client::connect(&sock).unwrap();
    c.start().unwrap();
    let stream = Client::connect(&sock)
        .unwrap()
        .attach(false, true, true)
        .unwrap();
    stream.set_timeout(Some(T)).unwrap();

    // The "daemon" crashes.
    let pg = starter.id() as i32;
    // SAFETY: signals to the process group this test created.
    unsafe {
        libc::kill(-pg, libc::SIGKILL);
        libc::kill(-pg, libc::SIGHUP);
    }
    starter.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(shim_pid), "the shim died with its starter");
    drop(c);
    drop(stream);

    // A fresh client (the restarted daemon) can do everything.
    let mut c = Client::connect(&sock).unwrap();
    let st = c.state().unwrap();
    assert_eq!(st.status, "running");
    let mut waiter = Client::connect(&sock).unwrap();
    let stream = Client::connect(&sock)
        .unwrap()
        .attach(false, true, true)
        .unwrap();
    let (x, xpid, xs) = Client::connect(&sock)
        .unwrap()
        .exec(&Request::Exec {
            exec_id: Some("after-crash".into()),
            process: None,
            args: Some(vec!["echo".into(), "still here".into()]),
            env: vec![],
            cwd: None,
            tty: false,
            stdin: false,
        })
        .unwrap();
    assert_eq!(x, "after-crash");
    assert!(xpid > 0);
    let got = xs.collect().unwrap();
    assert_eq!(
        (got.stdout.as_slice(), got.exit_code),
        (&b"still here\n"[..], Some(0))
    );
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(waiter.wait(None).unwrap(), 137);
    assert!(stream.collect().unwrap().stdout.is_empty());
    assert_eq!(read_exit(&env.shim_dir(&id)).exit_code, 137);
    c.shutdown(false).unwrap();
    wait_for("shim exit", T, || !alive(shim_pid));
}

/// Reads raw tty output until `needle` appears.
fn read_until(stream: &mut berth_shim::client::Stream, acc: &mut Vec<u8>, needle: &str) {
    let t = Instant::now();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(acc).contains(needle) {
        assert!(
            t.elapsed() < T,
            "no {needle:?} in {:?}",
            String::from_utf8_lossy(acc)
        );
        let n = stream.read(&mut b).unwrap();
        assert!(
            n > 0,
            "stream ended before {needle:?}: {:?}",
            String::from_utf8_lossy(acc)
        );
        acc.extend_from_slice(&b[..n]);
    }
}

#[test]
fn tty_output_resize_and_input() {
    require_root!(BUSYBOX);
    let (env, id) = TestEnv::with_id("tty");
    let script = "stty size; while read l; do stty size; echo \"line=$l\"; done; echo bye";
    let b = env.bundle(&id, &sh(script), true);
    // --tty must match process.terminal: a clear error, nothing left behind.
    let out = Command::new(shim_bin())
        .args(env.shim_args(&id, &b, &[]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("process.terminal"), "{msg}");
    assert_eq!(env.status(&id), "absent");
    let shim = env.start_shim(&id, &b, &["--tty", "--stdin"]);
    assert!(shim.sock.as_os_str().len() > 108);
    let mut c = shim.client();
    assert!(c.state().unwrap().tty);
    c.resize(30, 100, None).unwrap();
    let mut stream = shim.client().attach(true, true, true).unwrap();
    assert!(!stream.framed);
    stream.set_timeout(Some(T)).unwrap();
    c.start().unwrap();
    let mut acc = Vec::new();
    read_until(&mut stream, &mut acc, "30 100");
    c.resize(40, 120, None).unwrap();
    stream.write_stdin(b"hi\n").unwrap();
    read_until(&mut stream, &mut acc, "line=hi");
    assert!(String::from_utf8_lossy(&acc).contains("40 120"), "{acc:?}");
    // Half-close: ^D ends `read`, the shell says bye and exits.
    stream.close_stdin().unwrap();
    read_until(&mut stream, &mut acc, "bye");
    assert_eq!(c.wait(None).unwrap(), 0);
    // The log has the tty's output as stdout.
    let log = shim.log();
    assert!(log.contains("30 100") && log.contains("line=hi"), "{log}");
    assert!(!log.contains("\"stderr\""));
    // Resize of a non-tty exec or a missing exec is an error; the shim keeps serving.
    assert!(c.resize(1, 1, Some("nope")).is_err());
    c.shutdown(false).unwrap();
}

#[test]
fn stdin_cat_and_half_close() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("cat", &["cat"], false);
    let shim = env.start_shim(&id, &b, &["--stdin"]);
    let mut stream = shim.client().attach(true, true, true).unwrap();
    stream.set_timeout(Some(T)).unwrap();
    shim.client().start().unwrap();
    stream.write_stdin(b"hello\n").unwrap();
    assert_eq!(
        stream.read_frame().unwrap(),
        Some(Frame::Stdout(b"hello\n".to_vec()))
    );
    stream.write_stdin(b"partial").unwrap();
    stream.close_stdin().unwrap();
    // cat sees EOF, writes what is left and exits; the stream ends.
    let rest = stream.collect().unwrap();
    assert_eq!(rest.stdout, b"partial");
    assert_eq!(shim.client().wait(None).unwrap(), 0);
    let entries = shim.log_entries();
    let logs: Vec<&str> = entries.iter().map(|e| e["log"].as_str().unwrap()).collect();
    assert_eq!(logs, vec!["hello\n", "partial"]);
    shim.client().shutdown(false).unwrap();
}

#[test]
fn exec_streams_and_exit_code() {
    require_root!(BUSYBOX);
    let (_env, _id, shim) = started("exec", &["sleep", "100"]);
    let exec = |req: Request| {
        let (x, pid, s) = shim.client().exec(&req).unwrap();
        s.set_timeout(Some(T)).unwrap();
        (x, pid, s)
    };
    let args_id = |x: Option<&str>, a: &[&str], tty: bool, stdin: bool| Request::Exec {
        exec_id: x.map(str::to_string),
        process: None,
        args: Some(a.iter().map(|s| s.to_string()).collect()),
        env: vec!["FOO=bar".into()],
        cwd: None,
        tty,
        stdin,
    };
    let args = |a: &[&str], tty: bool, stdin: bool| args_id(None, a, tty, stdin);
    // Not running yet.
    assert!(shim.client().exec(&args(&["true"], false, false)).is_err());
    shim.client().start().unwrap();

    let (x, _, s) = exec(args(&sh("echo eo $FOO; echo ee >&2; exit 3"), false, false));
    let got = s.collect().unwrap();
    assert_eq!(got.stdout, b"eo bar\n");
    assert_eq!(got.stderr, b"ee\n");
    assert_eq!(got.exit_code, Some(3));
    assert_eq!(shim.client().wait(Some(&x)).unwrap(), 3);
    let st = shim.client().exec_state(Some(&x)).unwrap();
    assert_eq!((st.status.as_str(), st.exit_code), ("stopped", Some(3)));

    // A full OCI process object.
    let (_, _, s) = exec(Request::Exec {
        exec_id: Some("full".into()),
        process: Some(json!({
            "args": ["sh", "-c", "echo $X; kill -9 $$"],
            "cwd": "/tmp",
            "env": ["X=from-process", "PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        })),
        args: None,
        env: vec![],
        cwd: None,
        tty: false,
        stdin: false,
    });
    let got = s.collect().unwrap();
    assert_eq!(
        (got.stdout.as_slice(), got.exit_code),
        (&b"from-process\n"[..], Some(137))
    );

    // With a tty: output raw through the pty (framed as stdout), resize by exec id.
    let (x, _, mut s) = exec(args_id(
        Some("tty1"),
        &sh("tty; read l; stty size; exit 5"),
        true,
        true,
    ));
    shim.client().resize(12, 34, Some(&x)).unwrap();
    s.write_stdin(b"go\n").unwrap();
    let got = s.collect().unwrap();
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("12 34"), "{text}");
    assert_eq!(got.exit_code, Some(5));

    // The shim's blocked and ignored signals do not leak into the container's processes.
    let (_, _, s) = exec(args(
        &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
        false,
        false,
    ));
    let got = s.collect().unwrap();
    let text = String::from_utf8_lossy(&got.stdout);
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");

    // Stdin with half-close.
    let (_, _, mut s) = exec(args(&["cat"], false, true));
    s.write_stdin(b"to cat").unwrap();
    s.close_stdin().unwrap();
    let got = s.collect().unwrap();
    assert_eq!(
        (got.stdout.as_slice(), got.exit_code),
        (&b"to cat"[..], Some(0))
    );

    // Errors: a missing binary, a reused id.
    let e = shim.client().exec(&args(&["/nonexistent"], false, false));
    assert!(e.is_err());
    let e = shim
        .client()
        .exec(&args_id(Some("full"), &["true"], false, false));
    assert!(e.is_err());
    // Exec output is not the container's log.
    assert!(shim.log_entries().is_empty());
    shim.client().kill(libc::SIGKILL, false).unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 137);
    shim.client().shutdown(false).unwrap();
}

#[test]
fn log_rotation() {
    require_root!(BUSYBOX);
    let (env, id) = TestEnv::with_id("rot");
    let script =
        "i=0; while [ $i -lt 400 ]; do echo line-$i-abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done";
    let b = env.bundle(&id, &sh(script), false);
    let shim = env.start_shim(&id, &b, &["--log-max-size", "2k", "--log-max-file", "3"]);
    shim.client().start().unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 0);
    // The output may still be draining after the exit.
    wait_for("last line", T, || {
        std::fs::read_to_string(shim.log_path()).is_ok_and(|s| s.contains("line-399-"))
    });
    let mut names: Vec<String> = std::fs::read_dir(&shim.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-json.log"))
        .collect();
    names.sort();
    let base = format!("{id}-json.log");
    assert_eq!(
        names,
        vec![base.clone(), format!("{base}.1"), format!("{base}.2")]
    );
    for n in &names {
        let len = std::fs::metadata(shim.dir.join(n)).unwrap().len();
        assert!(len < 2048 + 200, "{n} is {len} bytes");
    }
    // The rotated files hold the lines just before the current file's, in order.
    let older = std::fs::read_to_string(shim.dir.join(format!("{base}.1"))).unwrap();
    let current = shim.log();
    let num = |l: &str| -> i32 {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["log"]
            .as_str()
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let last_old = num(older.lines().last().unwrap());
    let first_cur = num(current.lines().next().unwrap());
    assert_eq!(last_old + 1, first_cur);
    shim.client().shutdown(false).unwrap();
}

#[test]
fn malformed_requests_get_errors() {
    require_root!(BUSYBOX);
    let (env, id, shim) = started("bad", &["sleep", "100"]);
    let mut c = shim.client();
    for line in [
        &b"not json"[..],
        b"{}",
        b"[1,2]",
        b"{\"op\":\"nope\"}",
        b"{\"op\":\"kill\",\"signal\":\"SIGNOPE\"}",
        b"{\"op\":\"kill\",\"signal\":999}",
        b"{\"op\":\"resize\",\"rows\":\"x\",\"cols\":1}",
        b"{\"op\":\"resize\",\"rows\":10,\"cols\":10}",
        b"{\"op\":\"exec\",\"exec_id\":\"../../etc\",\"args\":[\"true\"]}",
        b"{\"op\":\"wait\",\"exec_id\":\"missing\"}",
        b"{\"op\":\"start\"} trailing",
        b"\xff\xfe",
    ] {
        let v = c.raw(line).unwrap();
        assert_eq!(v["ok"], false, "{:?} -> {v}", String::from_utf8_lossy(line));
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // Same connection still works.
    assert_eq!(c.state().unwrap().status, "created");
    // A line over 1 MiB closes that connection only.
    let mut big = shim.client();
    let huge = vec![b'x'; (1 << 20) + 10];
    let v = big.raw(&huge).unwrap();
    assert_eq!(v["ok"], false);
    assert!(big.state().is_err());
    // A client that disconnects mid-request does no harm.
    {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&shim.sock).unwrap();
        s.write_all(b"{\"op\":\"sta").unwrap();
    }
    let mut c2 = shim.client();
    c2.start().unwrap();
    assert!(c2.start().is_err(), "second start must fail");
    assert_eq!(c2.state().unwrap().status, "running");
    assert!(
        c2.shutdown(false).is_err(),
        "shutdown while running needs force"
    );
    c2.shutdown(true).unwrap();
    wait_for("shim exit", T, || !alive(shim.pid));
    assert_eq!(env.status(&id), "absent");
}

#[test]
fn shim_rss() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup(
        "rss",
        &sh("while true; do echo tick; sleep 0.05; done"),
        false,
    );
    let bin = static_shim_bin();
    let shim = env.start_shim_with(&bin, &id, &b, &[]);
    let mut c = shim.client();
    c.start().unwrap();
    let mut stream = shim.client().attach(false, true, true).unwrap();
    stream.set_timeout(Some(T)).unwrap();
    for _ in 0..5 {
        stream.read_frame().unwrap().unwrap();
    }
    let (x, _, s) = shim
        .client()
        .exec(&Request::Exec {
            exec_id: None,
            process: None,
            args: Some(vec!["true".into()]),
            env: vec![],
            cwd: None,
            tty: false,
            stdin: false,
        })
        .unwrap();
    assert_eq!(s.collect().unwrap().exit_code, Some(0));
    assert_eq!(c.wait(Some(&x)).unwrap(), 0);
    std::thread::sleep(Duration::from_millis(300));
    let rss = berth_shim::sys::vm_rss_kib(shim.pid).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", shim.pid)).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_string()
    };
    eprintln!(
        "shim RSS with a running, attached, logging container: VmRSS {rss} kB \
         (RssAnon {} kB, RssFile {} kB) [{}]",
        field("RssAnon:"),
        field("RssFile:"),
        bin.display()
    );
    assert!(rss <= 2048, "shim VmRSS {rss} kB > 2 MB");
    c.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(c.wait(None).unwrap(), 137);
    drop(stream);
    c.shutdown(false).unwrap();
}

#[test]
fn direct_start_writes_the_exec_fifo() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("direct", &sh("echo started; exit 7"), false);
    b.write();
    let shim = env.start_shim(&id, &b, &["--direct-start"]);
    let fifo = env.root.join(&id).join("exec.fifo");
    assert!(
        fifo.exists(),
        "the created container waits on {}",
        fifo.display()
    );
    shim.client().start().unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 7);
    assert!(
        !fifo.exists(),
        "the fifo goes at start, as with `runtime start`"
    );
    assert_eq!(env.status(&id), "stopped");
    // A second start is refused by the shim (the container is not created any more).
    assert!(shim.client().start().is_err());
    assert!(shim.log().contains("started"));
    shim.client().shutdown(false).unwrap();
}

/// As runc's `start`, a start answers once the init has exec'd the user's process (the init
/// closes the exec fifo's read end on exec), through the runtime or the fifo directly: a short
/// command's output is then on its way to the log when a client asks right after the start.
#[test]
fn start_returns_after_the_users_process_is_executed() {
    require_root!(BUSYBOX);
    for flags in [&[][..], &["--direct-start"][..]] {
        let (env, id, b) = setup("execd", &["sleep", "30"], false);
        b.write();
        let shim = env.start_shim(&id, &b, flags);
        let exe = || std::fs::read_link(format!("/proc/{}/exe", shim.init_pid)).unwrap();
        shim.client().start().unwrap();
        let after = exe();
        assert!(
            after.to_string_lossy().contains("busybox"),
            "{flags:?}: right after start the init is {} (not exec'd yet)",
            after.display()
        );
        shim.client().kill(libc::SIGKILL, false).unwrap();
        assert_eq!(shim.client().wait(None).unwrap(), 137);
        shim.client().shutdown(false).unwrap();
    }
}

#[test]
fn start_flag_starts_before_the_report() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("eager", &sh("echo started; sleep 30"), false);
    b.write();
    let shim = env.start_shim(&id, &b, &["--direct-start", "--start"]);
    // Reported once started: running at once, no Start request.
    assert_eq!(env.status(&id), "running");
    assert_eq!(shim.client().state().unwrap().status, "running");
    assert!(
        !env.root.join(&id).join("exec.fifo").exists(),
        "the fifo goes at start"
    );
    // The container is started already: a Start request is refused.
    assert!(shim.client().start().is_err());
    shim.client().kill(libc::SIGKILL, false).unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 137);
    assert!(shim.log().contains("started"));
    shim.client().shutdown(false).unwrap();
}

#[test]
fn runtime_given_as_standard_input() {
    require_root!(BUSYBOX);
    let (env, id, b) = setup("stdinrt", &sh("echo started; exit 3"), false);
    b.write();
    // `--runtime-fd 0` overrides a runtime path that does not exist.
    let runtime = std::fs::File::open(runtime_bin()).unwrap();
    let extra = [
        "--runtime",
        "/nonexistent/berth-runtime",
        "--runtime-fd",
        "0",
        "--direct-start",
    ];
    let shim = env.start_shim_stdin(&id, &b, &extra, runtime);
    shim.client().start().unwrap();
    assert_eq!(shim.client().wait(None).unwrap(), 3);
    assert!(shim.log().contains("started"));
    // The runtime runs again at shutdown (its `delete`), from the shim's own descriptor.
    shim.client().shutdown(false).unwrap();
    wait_for("shim exit", T, || !alive(shim.pid));
    assert_eq!(env.status(&id), "absent");
}

/// The shim's session, process group and controlling terminal (`/proc/PID/stat`).
fn session_of(pid: i32) -> (i32, i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

/// Starts a shim for `id` as a daemon does, or as a process group's leader: the starter's
/// pid and the shim's.
fn start_as(env: &TestEnv, id: &str, b: &Bundle, group_leader: bool) -> (i32, i32) {
    // The report through a file, not a pipe (which the container's processes could hold).
    let report = env.dir.path().join(format!("report-{id}"));
    let mut cmd = Command::new(shim_bin());
    cmd.args(env.shim_args(id, b, &[]))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&report).unwrap());
    if group_leader {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().unwrap();
    let starter = child.id() as i32;
    assert!(child.wait().unwrap().success());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let shim = v["pid"].as_i64().unwrap() as i32;
    env.pids.borrow_mut().push(shim);
    (starter, shim)
}

#[test]
fn the_starter_leads_the_shims_session_unless_it_leads_a_group() {
    require_root!(BUSYBOX);
    // Started as a daemon starts it (no process group of its own): the starter makes the
    // session, the shim is its one child in it (one fork) and leads nothing.
    let (env, id, b) = setup("session", &["sleep", "100"], false);
    let (starter, shim) = start_as(&env, &id, &b, false);
    assert_eq!(session_of(shim), (starter, starter, 0));

    // A process group's leader (a shell's job) cannot make a session: the shim is then in
    // one of an intermediate process, which it does not lead either.
    let (env2, id2, b2) = setup("session-pg", &["sleep", "100"], false);
    let (starter, shim) = start_as(&env2, &id2, &b2, true);
    let (pgrp, session, tty) = session_of(shim);
    assert_eq!(pgrp, session);
    assert!(session != starter && session != shim, "{session}");
    assert_ne!(session, session_of(std::process::id() as i32).1);
    assert_eq!(tty, 0);
}

/// `--standby`: a shim started before its command line, which then comes as one JSON line on
/// its standard output (a socket); it launches exactly as a spawned shim, shows the
/// container's id in its command line in place of the placeholder (where berthd's recovery
/// looks for shims), and a standby whose socket closes first exits without doing anything.
#[test]
fn standby_gets_its_command_line_later() {
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    require_root!(BUSYBOX);
    let env = TestEnv::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // A container id as berthd makes them (the placeholder's length).
    let id = format!("{:032x}{nanos:032x}", std::process::id());
    let b = env.bundle(&id, &sh("echo standby; sleep 100"), false);
    let standby = |root: &std::path::Path| {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let child = Command::new(shim_bin())
            .args(["--standby", "--runtime-root"])
            .arg(root)
            .args(["--id", berth_shim::sys::STANDBY_ID])
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (ours, child)
    };

    // Let go before any command line: exits 0, makes nothing.
    let (sock, child) = standby(&env.root);
    drop(sock);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!env.shim_dir(&id).exists());

    let (mut sock, mut child) = standby(&env.root);
    let cmdline = |pid: u32| {
        String::from_utf8(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
            .unwrap()
            .replace('\0', " ")
    };
    // (Empty until the exec has set up the new program's arguments.)
    wait_for("the standby's command line", T, || {
        cmdline(child.id()).contains(berth_shim::sys::STANDBY_ID)
    });
    let mut line = serde_json::to_vec(&env.shim_args(&id, &b, &[])).unwrap();
    line.push(b'\n');
    sock.write_all(&line).unwrap();
    let mut report = String::new();
    sock.read_to_string(&mut report).unwrap();
    assert!(child.wait().unwrap().success());
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let pid = v["pid"].as_i64().unwrap() as i32;
    env.pids.borrow_mut().push(pid);
    let shown = cmdline(pid as u32);
    assert!(
        shown.contains(&format!("--runtime-root {} --id {id}", env.root.display())),
        "{shown}"
    );
    let mut c = Client::connect(std::path::Path::new(v["socket"].as_str().unwrap())).unwrap();
    c.start().unwrap();
    wait_for("the container's output", T, || {
        std::fs::read_to_string(env.shim_dir(&id).join(format!("{id}-json.log")))
            .is_ok_and(|l| l.contains("standby"))
    });
}
