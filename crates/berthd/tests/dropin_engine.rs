//! Issue 14, the daemon side of "drop-in Docker": what the docker CLI and docker-py see of
//! containers, exec, attach, logging and errors, compared with what dockerd answers.
//!
//! Needs root and `docker` on PATH; the docker-py parts need the peers' venv (else skipped).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// What every docker-py script starts with: `c`, a low-level client of the daemon.
const PY_PRELUDE: &str = r#"
import docker, os
c = docker.APIClient(base_url=os.environ["BERTH_SOCK"])
"#;

/// A docker-py script ([`Daemon::docker_py`]: skipped, with a line, without the venv) after
/// [`PY_PRELUDE`], with `BERTH_SOCK` set; asserts it printed `ok`.
#[track_caller]
fn py_ok(d: &Daemon, script: &str) {
    let Some(r) = d.docker_py(&format!("{PY_PRELUDE}{script}")) else {
        return;
    };
    assert!(
        r.code == 0 && r.stdout.trim_end().ends_with("ok"),
        "docker-py script failed ({}):\n{}\n{}",
        r.code,
        r.stdout,
        r.stderr
    );
}

/// `docker inspect -f` without the newline.
#[track_caller]
fn ins(d: &Daemon, format: &str, name: &str) -> String {
    d.inspect(format, name).trim_end().to_string()
}

/// The status line and the body of a raw response.
fn status_and_body(resp: &str) -> (String, String) {
    let status = resp.lines().next().unwrap_or("").to_string();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn unknown_swarm_and_plugin_routes_answer_as_dockerd() {
    let d = root_daemon!();
    // Unknown routes, and known paths with another method: dockerd's 404 and body.
    for (method, path) in [
        ("GET", "/v1.44/nope"),
        ("DELETE", "/v1.44/info"),
        ("GET", "/plugins/x"),
    ] {
        let (status, body) = status_and_body(&d.http(method, path, None).unwrap());
        assert!(status.contains("404"), "{method} {path}: {status}");
        assert_eq!(body, r#"{"message":"page not found"}"#, "{method} {path}");
    }
    // A node outside any swarm.
    let no_manager = r#"This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again."#;
    for (method, path) in [
        ("GET", "/swarm"),
        ("GET", "/nodes"),
        ("GET", "/services"),
        ("POST", "/services/create"),
        ("GET", "/tasks"),
        ("GET", "/secrets"),
        ("GET", "/configs/c1"),
    ] {
        let (status, body) = status_and_body(&d.http(method, path, Some("{}")).unwrap());
        assert!(status.contains("503"), "{method} {path}: {status}");
        assert!(body.contains("This node is not a swarm manager."), "{body}");
    }
    let r = d.docker(&["node", "ls"]);
    assert_ne!(r.code, 0);
    assert_eq!(
        r.stderr.trim(),
        format!("Error response from daemon: {no_manager}")
    );
    let r = d.docker(&["swarm", "leave", "--force"]);
    assert_eq!(
        r.stderr.trim(),
        "Error response from daemon: This node is not part of a swarm"
    );
    // No plugins.
    let out = d.docker(&["plugin", "ls", "--format", "{{.Name}}"]).ok();
    assert_eq!(out.stdout, "");
    let r = d.docker(&["plugin", "inspect", "vieux/sshfs"]);
    r.stderr_contains(r#"plugin "vieux/sshfs" not found"#);
    // Clients that tidy up with leave_swarm(force=True) keep working.
    py_ok(
        &d,
        r#"
assert c.leave_swarm(force=True) is True
assert c.plugins() == []
try:
    c.inspect_swarm()
    raise SystemExit("inspect_swarm succeeded")
except docker.errors.APIError as e:
    assert e.response.status_code == 503, e
print("ok")
"#,
    );
    finish(d);
}

#[test]
fn runtime_kill_and_restart_policy_as_dockerd() {
    let d = root_daemon!();
    // The runtime serves as dockerd's default `runc`.
    let info = d.docker_out(
        "info -f",
        &["{{.DefaultRuntime}} {{range $k, $v := .Runtimes}}{{$k}}{{end}}"],
    );
    assert_eq!(info.trim(), "runc runc");
    d.docker_line("create --name rt1 busybox true", &[]).ok();
    assert_eq!(ins(&d, "{{.HostConfig.Runtime}}", "rt1"), "runc");
    d.docker_line("create --name rt2 --runtime runc busybox true", &[])
        .ok();
    let r = d.docker_line("create --runtime nope busybox true", &[]);
    r.stderr_contains("unknown or invalid runtime name: nope");
    // kill (SIGKILL) returns once the exit is recorded: inspect shows it stopped, rm works.
    for i in 0..3 {
        let name = format!("k{i}");
        d.docker_line("run -d --name", &[&name, "busybox", "sleep", "1000"])
            .ok();
        d.docker(&["kill", &name]).ok();
        assert_eq!(
            ins(&d, "{{.State.Status}} {{.State.ExitCode}}", &name),
            "exited 137"
        );
        d.docker(&["rm", &name]).ok();
    }
    // A kill with the stop signal stops a container for good (no restart policy).
    d.docker_line(
        "run -d --name kp --restart always busybox sh -c",
        &["trap 'exit 7' TERM; while true; do sleep 0.1; done"],
    )
    .ok();
    std::thread::sleep(Duration::from_millis(500));
    d.docker_line("kill -s TERM kp", &[]).ok();
    wait_for("kp to exit", Duration::from_secs(10), || {
        ins(&d, "{{.State.Status}}", "kp") == "exited"
    });
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        ins(
            &d,
            "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
            "kp"
        ),
        "exited 7 0"
    );
    // A restart policy: running, then restarting (still "running" for dockerd's checks),
    // never "exited" in between; a plain rm is refused while it restarts.
    d.docker_line(
        "run -d --name rp --restart always busybox sh -c",
        &["sleep 0.3; exit 3"],
    )
    .ok();
    let mut seen = std::collections::BTreeSet::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        let s = ins(
            &d,
            "{{.State.Status}} {{.State.Running}} {{.State.Restarting}}",
            "rp",
        );
        seen.insert(s);
    }
    assert!(
        seen.contains("restarting true true"),
        "states seen: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s == "restarting true true" || s == "running true false"),
        "states seen: {seen:?}"
    );
    // docker-py: remove while restarting is a 409 naming the state; an invalid policy a 400.
    py_ok(
        &d,
        r#"
import time
ct = c.create_container("busybox", ["sh", "-c", "exit 1"],
    host_config=c.create_host_config(restart_policy={"Name": "always"}, network_mode="none"))
c.start(ct)
deadline = time.time() + 10
while c.inspect_container(ct)["State"]["Status"] != "restarting":
    assert time.time() < deadline
    time.sleep(0.02)
try:
    c.remove_container(ct)
    raise SystemExit("removed a restarting container")
except docker.errors.APIError as e:
    assert e.response.status_code == 409, e
    assert "container is restarting: stop the container before" in e.explanation, e.explanation
c.remove_container(ct, force=True)
for policy, msg in [
    ({"Name": "always", "MaximumRetryCount": 3}, "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ({"Name": "on-failure", "MaximumRetryCount": -1}, "invalid restart policy: maximum retry count cannot be negative"),
    ({"Name": "sometimes"}, "invalid restart policy: unknown policy 'sometimes'"),
]:
    try:
        c.create_container("busybox", "true", host_config=c.create_host_config(restart_policy=policy))
        raise SystemExit("created with %r" % policy)
    except docker.errors.APIError as e:
        assert e.response.status_code == 400 and msg in e.explanation, (policy, e.explanation)
# kill (no signal) returns after the exit: the exit code is there at once.
k = c.create_container("busybox", ["sleep", "1000"])
c.start(k)
c.kill(k)
s = c.inspect_container(k)["State"]
assert (s["Status"], s["ExitCode"]) == ("exited", 137), s
c.remove_container(k)
print("ok")
"#,
    );
    d.docker_line("rm -f rp kp rt1 rt2", &[]).ok();
    finish(d);
}

/// docker-py reads a hijacked stream from the raw socket under its buffered HTTP reader: what
/// arrived with the response head is lost. A client slow to read the head (a loaded machine)
/// must still get the output of a process that writes at once (dockerd: the exec's output
/// follows its start by the runtime's start-up; berthd waits until the head has been read).
#[test]
fn exec_output_survives_a_client_slow_to_read_the_head() {
    let d = root_daemon!();
    py_ok(
        &d,
        r#"
import http.client, time
ct = c.create_container("busybox", "cat", stdin_open=True, tty=True)
c.start(ct)
begin = http.client.HTTPResponse.begin
def slow_begin(self):
    time.sleep(0.3)
    return begin(self)
for tty in (True, False):
    for i in range(3):
        x = c.exec_create(ct, ["echo", "x"], tty=tty)
        http.client.HTTPResponse.begin = slow_begin
        try:
            out = c.exec_start(x, demux=not tty)
        finally:
            http.client.HTTPResponse.begin = begin
        assert out == (b"x\r\n" if tty else (b"x\n", None)), (tty, i, out)
# Quick ones, as a test suite does them.
for i in range(50):
    x = c.exec_create(ct, ["echo", "x"], tty=True)
    out = c.exec_start(x)
    assert out == b"x\r\n", (i, out)
c.remove_container(ct, force=True)
print("ok")
"#,
    );
    finish(d);
}

#[test]
fn exec_framing_and_detach_keys_as_dockerd() {
    let d = root_daemon!();
    py_ok(
        &d,
        r#"
import socket, struct, time
ct = c.create_container("busybox", "cat", stdin_open=True, tty=True)
c.start(ct)
cmd = 'sh -c "echo hello out; sleep 0.3; echo hello err >&2"'

# The output's framing follows the start request's Tty, the terminal the create request's.
x = c.exec_create(ct, cmd, tty=True)
out = c.exec_start(x)
assert out == b"hello out\r\nhello err\r\n", ("framed", out)
x = c.exec_create(ct, cmd, tty=True)
out = c.exec_start(x, tty=True)
assert out == b"hello out\r\nhello err\r\n", ("raw", out)
x = c.exec_create(ct, ["printf", "framed"], tty=True)
sock = c.exec_start(x, socket=True)
raw = getattr(sock, "_sock", sock)
hdr = b""
while len(hdr) < 8:
    hdr += raw.recv(8 - len(hdr))
stream, size = struct.unpack(">BxxxL", hdr)
assert (stream, size) == (1, 6), hdr
sock.close()
x = c.exec_create(ct, cmd)
out = c.exec_start(x, demux=True)
assert out == (b"hello out\n", b"hello err\n"), ("demux", out)

def detached(sock, keys):
    raw = getattr(sock, "_sock", sock)
    for k in keys:
        raw.sendall(k)
        time.sleep(0.3)
    raw.settimeout(10)
    data = b""
    while True:
        try:
            chunk = raw.recv(4096)
        except OSError:
            return True
        if not chunk:
            return True
        data += chunk

# Attach: the default keys, the query's, the client's configuration.
for params, keys in [({}, [b"\x10", b"\x11"]), ({"detachKeys": "ctrl-x,y"}, [b"\x18", b"y"])]:
    s = c.attach_socket(ct, params=dict(stdin=1, stdout=1, stream=1, **params))
    assert detached(s, [b"echo\n"] + keys), params
    assert c.inspect_container(ct)["State"]["Running"], params
c._general_configs["detachKeys"] = "ctrl-p"
s = c.attach_socket(ct, params={"stdin": 1, "stdout": 1, "stream": 1})
assert detached(s, [b"\x10"])
del c._general_configs["detachKeys"]
try:
    c.attach_socket(ct, params={"stdin": 1, "stream": 1, "detachKeys": "ctrl-1"})
    raise SystemExit("bad keys accepted")
except docker.errors.APIError as e:
    assert e.response.status_code == 400 and "Invalid detach keys (ctrl-1) provided" in e.explanation, e

# Exec: the session ends, the process keeps running.
x = c.exec_create(ct, "cat", stdin=True, tty=True)
s = c.exec_start(x, tty=True, socket=True)
assert detached(s, [b"\x10", b"\x11"])
time.sleep(0.3)
assert c.exec_inspect(x)["Running"], c.exec_inspect(x)
x = c.exec_create(ct, "cat", stdin=True, tty=True, detach_keys="ctrl-q")
s = c.exec_start(x, tty=True, socket=True)
assert detached(s, [b"\x11"])
assert c.inspect_container(ct)["State"]["Running"]
ev = c.events(since=0, until=int(time.time()) + 1, decode=True, filters={"container": ct["Id"]})
actions = [e["Action"] for e in ev]
assert actions.count("detach") == 3 and actions.count("exec_detach") == 2, actions
c.remove_container(ct, force=True)
print("ok")
"#,
    );
    finish(d);
}

#[test]
fn log_drivers_and_options_as_dockerd() {
    let d = root_daemon!();
    let refused = |args: &str, msg: &str| {
        let r = d.docker_line(&format!("run --rm {args} busybox true"), &[]);
        assert_eq!(r.code, 125, "{args}");
        assert!(r.stderr.contains(msg), "{args}: {}", r.stderr);
    };
    refused(
        "--log-driver asdf",
        "Error response from daemon: logger: no log driver named 'asdf' is registered",
    );
    refused(
        "--log-opt x=1",
        "unknown log opt 'x' for json-file log driver",
    );
    refused(
        "--log-driver local --log-opt tag=a --log-opt x=1",
        "unknown log opt 'x' for log driver local",
    );
    refused(
        "--log-opt max-file=1 --log-opt compress=true",
        "compress cannot be true when max-file is less than 2",
    );
    // json-file with rotation, compression and attributes.
    d.docker_line(
        "run --name lj -e FOO=bar -l app=web --log-opt env=FOO --log-opt labels=app",
        &[
            "--log-opt",
            "tag={{.Name}}",
            "--log-opt",
            "max-size=200",
            "--log-opt",
            "max-file=3",
            "--log-opt",
            "compress=true",
            "busybox",
            "sh",
            "-c",
            "for i in $(seq 40); do echo line $i; done",
        ],
    )
    .ok();
    let log = ins(&d, "{{.LogPath}}", "lj");
    assert!(std::path::Path::new(&format!("{log}.1.gz")).exists());
    assert!(!std::path::Path::new(&format!("{log}.1")).exists());
    let out = d.docker_out("logs", &["lj"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"line 40"));
    assert!(lines.len() > 5, "{out}");
    let nums: Vec<u32> = lines
        .iter()
        .map(|l| l.trim_start_matches("line ").parse().unwrap())
        .collect();
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    let details = d.docker_out("logs --details --tail 1", &["lj"]);
    assert_eq!(details, "FOO=bar,app=web,tag=lj line 40\n");
    assert_eq!(
        ins(
            &d,
            "{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}",
            "lj"
        ),
        r#"json-file {"compress":"true","env":"FOO","labels":"app","max-file":"3","max-size":"200","tag":"{{.Name}}"}"#
    );
    // local: readable, compressed by default.
    d.docker_line(
        "run --name ll --log-driver local busybox echo from-local",
        &[],
    )
    .ok();
    assert_eq!(d.docker_out("logs", &["ll"]), "from-local\n");
    // none: nothing to read, as dockerd.
    d.docker_line("run --name ln --log-driver none busybox echo hidden", &[])
        .ok();
    let r = d.docker(&["logs", "ln"]);
    r.fails_with("configured logging driver does not support reading");
    // docker-py: an empty Type keeps its options; an unknown driver is refused.
    py_ok(
        &d,
        r#"
lc = docker.types.LogConfig(type="", config={"max-file": "100"})
ct = c.create_container("busybox", ["true"], host_config=c.create_host_config(log_config=lc))
got = c.inspect_container(ct)["HostConfig"]["LogConfig"]
assert got == {"Type": "json-file", "Config": {"max-file": "100"}}, got
c.remove_container(ct)
try:
    c.create_container("busybox", ["true"], host_config=c.create_host_config(log_config=docker.types.LogConfig(type="asdf")))
    raise SystemExit("created with asdf")
except docker.errors.APIError as e:
    assert "logger: no log driver named 'asdf' is registered" in e.explanation, e
print("ok")
"#,
    );
    d.docker_line("rm -f lj ll ln", &[]).ok();
    finish(d);
}

#[test]
fn links_diff_and_exit_codes_as_dockerd() {
    let d = root_daemon!();
    // Legacy links: the child's address in /etc/hosts, its ports, name and environment.
    d.docker_line(
        "run -d --name db1 --expose 5432 -e FOO=1 busybox sleep 1000",
        &[],
    )
    .ok();
    let ip = ins(&d, "{{.NetworkSettings.Networks.bridge.IPAddress}}", "db1");
    let id12: String = ins(&d, "{{.Id}}", "db1").chars().take(12).collect();
    let out = d
        .docker_line(
            "run --name web1 --link db1:my-db busybox sh -c",
            &["env | sort; cat /etc/hosts"],
        )
        .ok()
        .stdout;
    for want in [
        format!("MY_DB_PORT=tcp://{ip}:5432"),
        format!("MY_DB_PORT_5432_TCP=tcp://{ip}:5432"),
        format!("MY_DB_PORT_5432_TCP_ADDR={ip}"),
        "MY_DB_PORT_5432_TCP_PORT=5432".into(),
        "MY_DB_PORT_5432_TCP_PROTO=tcp".into(),
        "MY_DB_NAME=/web1/my-db".into(),
        "MY_DB_ENV_FOO=1".into(),
        format!("{ip}\tmy-db {id12} db1"),
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "{want:?} missing in:\n{out}"
        );
    }
    assert!(!out.contains("MY_DB_ENV_PATH"), "{out}");
    assert_eq!(
        ins(&d, "{{json .HostConfig.Links}}", "web1"),
        r#"["/db1:/web1/my-db"]"#
    );
    let names = d.docker_out(
        "ps -a --no-trunc --filter name=db1 --format",
        &["{{.Names}}"],
    );
    assert_eq!(names.trim(), "db1,web1/my-db");
    let r = d.docker_line("run --rm --link nope:x busybox true", &[]);
    r.stderr_contains("could not get container for nope");
    // docker-py: links through the API and `DELETE …?link=1`.
    py_ok(
        &d,
        r#"
p = c.create_container("busybox", "env", host_config=c.create_host_config(links={"db1": "l1"}))
c.start(p); assert c.wait(p)["StatusCode"] == 0
logs = c.logs(p).decode()
assert "L1_NAME=/" in logs and "L1_ENV_FOO=1" in logs, logs
name = c.inspect_container(p)["Name"][1:]
c.remove_container(name + "/l1", link=True)
assert not [x for x in c.containers(all=True) if name + "/l1" in "".join(x["Names"])]
assert c.inspect_container(p)["HostConfig"]["Links"] is None
c.remove_container(p)
print("ok")
"#,
    );
    // diff: the mount points and files the runtime and the daemon provide are not changes.
    d.docker_line(
        "run --name df1 busybox sh -c",
        &["touch /test; echo x > /tmp/y"],
    )
    .ok();
    assert_eq!(
        d.docker_out("diff", &["df1"]),
        "A /test\nC /tmp\nA /tmp/y\n"
    );
    // Exit codes and messages: 127 not found, 126 not executable.
    for (cmd, code, msg) in [
        (
            "/nonexistent",
            127,
            r#"exec: "/nonexistent": stat /nonexistent: no such file or directory"#,
        ),
        (
            "nonexistent",
            127,
            r#"exec: "nonexistent": executable file not found in $PATH"#,
        ),
        (
            "/etc/passwd",
            126,
            r#"exec: "/etc/passwd": permission denied"#,
        ),
        ("/tmp", 126, r#"exec: "/tmp": permission denied"#),
    ] {
        let name = format!("x{code}{}", cmd.replace('/', "_"));
        let r = d.docker(&["run", "--name", &name, "busybox", cmd]);
        assert_eq!(r.code, code, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{cmd}: {}", r.stderr);
        assert_eq!(
            ins(&d, "{{.State.ExitCode}}", &name),
            code.to_string(),
            "{cmd}"
        );
        d.docker(&["rm", &name]).ok();
    }
    d.docker_line("rm -f db1 web1 df1", &[]).ok();
    finish(d);
}
