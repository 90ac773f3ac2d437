//! berthd as a service: the configuration file (`--config-file`, `--validate`, conflicts,
//! unknown keys, bad JSON, SIGHUP reload), systemd socket activation and readiness
//! notification (through Debian's `systemd-socket-activate`, without systemd as PID 1), and
//! Docker's socket (`--docker-compat`) in a private mount namespace.
mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn berthd() -> PathBuf {
    bin_dir().join("berthd")
}

fn validate(file: &Path, extra: &[&str]) -> Run {
    let o = Command::new(berthd())
        .arg("--validate")
        .arg("--config-file")
        .arg(file)
        .args(extra)
        .env_remove("BERTHD_BRIDGE")
        .env_remove("BERTHD_BIP")
        .output()
        .unwrap();
    run_output(o)
}

#[test]
fn config_file_validation() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("daemon.json");
    // Every key of the file at once.
    std::fs::write(
        &f,
        r#"{
  "hosts": ["unix:///tmp/berth-validate.sock"], "group": "berth", "tls": false,
  "tlsverify": false, "tlscacert": "/ca.pem", "tlscert": "/cert.pem", "tlskey": "/key.pem",
  "data-root": "/var/lib/berth-x", "exec-root": "/run/berth-x", "pidfile": "/run/x.pid",
  "cgroup-parent": "/berth-x", "insecure-registries": ["reg.local:5000"],
  "registry-mirrors": ["https://mirror.example"], "max-concurrent-downloads": 4,
  "max-concurrent-uploads": 2, "shim": "/usr/libexec/berth/berth-shim",
  "init-path": "/usr/libexec/berth/berth-init", "init": true,
  "runtime": "/usr/bin/berth-runtime", "log-level": "warn", "debug": false,
  "labels": ["site=lab"], "bridge": "berthx0", "bip": "10.199.0.1/24",
  "fixed-cidr": "10.199.0.0/25",
  "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}],
  "firewall-backend": "nftables", "log-driver": "json-file",
  "log-opts": {"max-size": "20m", "max-file": "5"},
  "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 4096, "Soft": 1024}},
  "live-restore": true, "docker-compat": true
}"#,
    )
    .unwrap();
    let r = validate(&f, &[]).ok();
    assert_eq!(r.stderr.trim(), "configuration OK");

    // Unknown keys: every one named, as dockerd.
    std::fs::write(
        &f,
        r#"{"debug": true, "tls-verify": true, "colour": "blue"}"#,
    )
    .unwrap();
    let r = validate(&f, &[]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "berthd: unable to configure the Berth daemon with file {}: the following directives don't match any configuration option: colour, tls-verify",
            f.display()
        )
    );
    // dockerd options Berth does not have.
    std::fs::write(
        &f,
        r#"{"storage-driver": "overlay2", "userns-remap": "default"}"#,
    )
    .unwrap();
    let r = validate(&f, &[]);
    r.stderr_contains("dockerd options that berthd does not support: storage-driver, userns-remap");

    // A flag given twice: named with both values.
    std::fs::write(&f, "{\n  \"data-root\": \"/srv/berth\"\n}\n").unwrap();
    let r = validate(&f, &["--data-root", "/other"]);
    r.failed_with(1, "the following directives are specified both as a flag and in the configuration file: data-root: (from flag: /other, from file: \"/srv/berth\")");
    // ... also through the flag's environment variable.
    std::fs::write(&f, r#"{"bridge": "br-file"}"#).unwrap();
    let o = Command::new(berthd())
        .args(["--validate", "--config-file"])
        .arg(&f)
        .env("BERTHD_BRIDGE", "br-env")
        .output()
        .unwrap();
    let r = run_output(o);
    r.stderr_contains("bridge: (from flag: br-env, from file: \"br-file\")");

    // Bad JSON: the line and column.
    std::fs::write(&f, "{\n  \"debug\": true\n  \"bip\": \"10.1.0.1/16\"\n}\n").unwrap();
    let r = validate(&f, &[]);
    r.stderr_contains("invalid JSON at line 3, column 3: expected `,` or `}`");
    // A value of the wrong type or out of range: its key and line.
    std::fs::write(
        &f,
        "{\n  \"debug\": true,\n  \"max-concurrent-downloads\": \"three\"\n}\n",
    )
    .unwrap();
    let r = validate(&f, &[]);
    r.stderr_contains(
        "invalid value for \"max-concurrent-downloads\" (line 3): invalid type: string \"three\"",
    );
    std::fs::write(&f, r#"{"log-opts": {"max-file": "0"}}"#).unwrap();
    assert!(validate(&f, &[])
        .stderr
        .contains("max-file cannot be less than 1"));
    std::fs::write(&f, r#"{"hosts": ["tcp://127.0.0.1:2375"]}"#).unwrap();
    assert!(validate(&f, &[])
        .stderr
        .contains("refusing to listen on TCP without TLS"));

    // A file named with --config-file must exist; the default one may be absent.
    let r = validate(&dir.path().join("missing.json"), &[]);
    r.stderr_contains("unable to read the configuration file")
        .stderr_contains("missing.json");
    // An empty file is no options.
    std::fs::write(&f, "").unwrap();
    validate(&f, &[]).ok();
}

/// A daemon started by `systemd-socket-activate` on a socket of the test's, with a notify
/// socket the test reads.
struct Activated {
    dir: tempfile::TempDir,
    child: Child,
    notify: UnixDatagram,
    bridge: String,
    cgroup_parent: String,
}

impl Activated {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn message(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .notify
            .recv(&mut buf)
            .expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    fn http(&self, req: &str) -> String {
        let mut s = UnixStream::connect(self.sock()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &format!("berth_{}", self.bridge)])
            .stderr(Stdio::null())
            .status();
        let name = self.cgroup_parent.trim_start_matches('/');
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let _ = std::fs::remove_dir(h.path().join(name));
            }
        }
    }
}

#[test]
fn socket_activation_notify_and_reload() {
    require_root!("systemd-socket-activate");
    let dir = tempfile::Builder::new().prefix("bsa").tempdir().unwrap();
    let p = |s: &str| dir.path().join(s);
    seed_busybox(&p("data"), &p("rootfs.tar"));
    let notify = UnixDatagram::bind(p("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let pid = std::process::id();
    let bridge = format!("bsa{pid}");
    let cgroup_parent = format!("/berth-test-sa-{pid}");
    std::fs::write(p("daemon.json"), r#"{"labels": ["stage=one"]}"#).unwrap();
    let log = std::fs::File::create(p("berthd.log")).unwrap();
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(p("api.sock"))
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", p("notify.sock").display()))
        .arg(berthd())
        .arg("--config-file")
        .arg(p("daemon.json"))
        .args(["-H", "fd://", "--bridge", &bridge, "--bip"])
        .arg(format!(
            "10.{}.{}.1/28",
            160 + (pid >> 8 & 0x1f),
            pid & 0xff
        ))
        .arg("--data-root")
        .arg(p("data"))
        .arg("--exec-root")
        .arg(p("exec"))
        .arg("--cgroup-parent")
        .arg(&cgroup_parent)
        .arg("--init-path")
        .arg(bin_dir().join("berth-init.static"))
        .env_remove("BERTHD_BRIDGE")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut d = Activated {
        dir,
        child,
        notify,
        bridge,
        cgroup_parent,
    };
    // The activator listens first; berthd starts at the first connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.sock().exists() {
        assert!(Instant::now() < deadline, "no socket: {}", d.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    let r = d.http("GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let ready_ms = t0.elapsed().as_millis();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}\n{}", d.log());
    eprintln!("socket activation: first request answered {ready_ms} ms after the connection");
    let m = d.message();
    assert!(m.starts_with("READY=1\n"), "{m}");
    assert!(
        m.contains(&format!("MAINPID={}", d.child.id())) || m.contains("MAINPID="),
        "{m}"
    );
    assert!(
        !d.log().contains("API listening on unix://"),
        "no socket of its own"
    );
    assert!(d.log().contains("(passed by systemd)"), "{}", d.log());

    // The API works on the passed socket: a container.
    let o = Command::new(bin_dir().join("berth"))
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(["run", "--rm", "busybox", "echo", "hi"])
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    let r = run_output(o).ok();
    assert_eq!(r.stdout, "hi\n");
    let info = d.http("GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(info.contains("\"stage=one\""), "{info}");

    // SIGHUP: RELOADING=1, the reloadable options applied and logged, the others kept with a
    // warning, then READY=1.
    std::fs::write(
        d.dir.path().join("daemon.json"),
        r#"{"labels": ["stage=two"], "debug": true, "shim": "/nonexistent/berth-shim"}"#,
    )
    .unwrap();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    let m = d.message();
    assert!(
        m.starts_with("RELOADING=1\n") && m.contains("MONOTONIC_USEC="),
        "{m}"
    );
    let m = d.message();
    assert!(m.starts_with("READY=1\n"), "{m}");
    let log = d.log();
    assert!(
        log.contains("shim: null -> \"/nonexistent/berth-shim\""),
        "{log}"
    );
    assert!(log.contains("needs a restart of berthd"), "{log}");
    assert!(
        log.contains("debug: false -> true")
            && log.contains("labels: [\"stage=one\"] -> [\"stage=two\"]"),
        "{log}"
    );
    let info = d.http("GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(info.contains("\"stage=two\""), "{info}");
    // A file that no longer loads: the error is logged, nothing changes.
    std::fs::write(
        d.dir.path().join("daemon.json"),
        r#"{"labels": ["stage=three"], "nope": 1}"#,
    )
    .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
    assert!(d.message().starts_with("RELOADING=1"));
    assert!(d.message().starts_with("READY=1"));
    assert!(
        d.log()
            .contains("reload failed, the configuration is unchanged"),
        "{}",
        d.log()
    );
    let info = d.http("GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(info.contains("\"stage=two\""), "{info}");

    // SIGTERM: STOPPING=1, then the process ends.
    // SAFETY: as above.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let m = d.message();
    assert!(m.starts_with("STOPPING=1"), "{m}");
    let st = d.child.wait().unwrap();
    assert!(st.success(), "{st:?}\n{}", d.log());
}

/// Runs `script` with bash in a private mount namespace whose /run is a fresh tmpfs (so
/// /var/run/docker.sock is the test's own).
fn in_private_run(script: &str, envs: &[(&str, String)]) -> Run {
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-euc"])
        .arg(format!("mount -t tmpfs tmpfs /run\n{script}"))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("DOCKER_HOST")
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    run_output(o)
}

#[test]
fn docker_compat_socket() {
    let d = root_daemon!("docker");
    let data = d.path("data");
    let pid = std::process::id();
    let envs = vec![
        ("BERTHD", bin_dir().join("berthd").display().to_string()),
        ("DATA", data.display().to_string()),
        ("WORK", d.path("compat").display().to_string()),
        ("BRIDGE", format!("bdc{pid}")),
        (
            "BIP",
            format!("10.{}.{}.1/28", 192 + (pid >> 8 & 0x1f), pid & 0xff),
        ),
        ("CGROUP", format!("/berth-test-compat-{pid}")),
        (
            "DOCKER_CONFIG",
            d.path("docker-config").display().to_string(),
        ),
    ];
    // The first daemon still runs on this data root: a second one with its own.
    let script = r#"
mkdir -p "$WORK"
echo '{"docker-compat": true}' >"$WORK/daemon.json"
cp -a "$DATA" "$WORK/data" 2>/dev/null || true
"$BERTHD" --config-file "$WORK/daemon.json" -H "unix://$WORK/b.sock" --data-root "$WORK/data" \
  --exec-root "$WORK/exec" --bridge "$BRIDGE" --bip "$BIP" --cgroup-parent "$CGROUP" \
  2>"$WORK/berthd.log" &
daemon=$!
stop() {
  kill $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true
  ip link del "$BRIDGE" 2>/dev/null || true
  nft delete table inet "berth_$BRIDGE" 2>/dev/null || true
  for c in /sys/fs/cgroup/*/"${CGROUP#/}"; do rmdir "$c" 2>/dev/null || true; done
}
trap stop EXIT
for _ in $(seq 200); do [ -S /var/run/docker.sock ] && break; sleep 0.05; done
stat -c 'mode=%a group=%G' /var/run/docker.sock
docker version --format 'server={{.Server.Version}}'
docker run --rm busybox echo compat-hi
# A second daemon asking for the same socket is refused, naming the first.
echo '{"docker-compat": true}' >"$WORK/daemon2.json"
if "$BERTHD" --config-file "$WORK/daemon2.json" -H "unix://$WORK/b2.sock" \
    --data-root "$WORK/data2" --exec-root "$WORK/exec2" --bridge "${BRIDGE}b" --firewall-backend none \
    2>"$WORK/second.log"; then
  echo "second daemon started"; exit 1
fi
cat "$WORK/second.log"
stop
trap - EXIT
# A stale socket file (no listener) is replaced.
[ -S /var/run/docker.sock ] && echo "socket left behind" || true
python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("/run/docker.sock")'
"$BERTHD" --config-file "$WORK/daemon.json" -H "unix://$WORK/b.sock" --data-root "$WORK/data" \
  --exec-root "$WORK/exec" --bridge "$BRIDGE" --bip "$BIP" --cgroup-parent "$CGROUP" \
  2>>"$WORK/berthd.log" &
daemon=$!
trap stop EXIT
for _ in $(seq 200); do docker version >/dev/null 2>&1 && break; sleep 0.05; done
docker info --format 'after-stale={{.ServerVersion}}'
"#;
    let r = in_private_run(script, &envs);
    let log = std::fs::read_to_string(d.path("compat/berthd.log")).unwrap_or_default();
    assert_eq!(
        r.code, 0,
        "stdout: {}\nstderr: {}\nlog: {log}",
        r.stdout, r.stderr
    );
    r.stdout_contains("mode=660");
    r.stdout_contains("server=");
    r.stdout_contains("compat-hi\n");
    r.stdout_contains("refusing to listen on /var/run/docker.sock: berthd (pid ");
    r.stdout_contains("turn docker-compat off");
    assert!(!r.stdout.contains("socket left behind"), "{}", r.stdout);
    r.stdout_contains("after-stale=");
    assert!(
        log.contains("API listening on /var/run/docker.sock"),
        "{log}"
    );
    finish(d);
}

#[test]
fn docker_compat_refuses_a_running_dockerd() {
    require_root!("dockerd");
    let dir = tempfile::Builder::new().prefix("bdk").tempdir().unwrap();
    let envs = vec![
        ("BERTHD", bin_dir().join("berthd").display().to_string()),
        ("WORK", dir.path().display().to_string()),
    ];
    // dockerd without networking or iptables changes, on roots of its own.
    let script = r#"
echo '{}' >"$WORK/dockerd.json"
dockerd -H unix:///var/run/docker.sock --data-root "$WORK/docker" --exec-root "$WORK/dexec" \
  --pidfile "$WORK/dockerd.pid" --bridge none --iptables=false --ip6tables=false \
  --containerd-namespace berth-test --config-file "$WORK/dockerd.json" >"$WORK/dockerd.log" 2>&1 &
dockerd=$!
trap 'kill $dockerd; wait $dockerd 2>/dev/null || true' EXIT
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version --format 'dockerd={{.Server.Version}}'
echo '{"docker-compat": true}' >"$WORK/daemon.json"
if "$BERTHD" --config-file "$WORK/daemon.json" -H "unix://$WORK/b.sock" --data-root "$WORK/data" \
    --exec-root "$WORK/exec" --firewall-backend none --bridge bdk0 2>"$WORK/berthd.log"; then
  echo "berthd started"; exit 1
fi
cat "$WORK/berthd.log"
"#;
    let r = in_private_run(script, &envs);
    assert_eq!(r.code, 0, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    r.stdout_contains("dockerd=");
    r.stdout_contains("refusing to listen on /var/run/docker.sock: dockerd (pid ");
    let _ = Command::new("ip")
        .args(["link", "del", "bdk0"])
        .stderr(Stdio::null())
        .status();
}
