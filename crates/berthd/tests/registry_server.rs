//! The real docker CLI pushing to and pulling from Berth's own registry (`berth registry
//! serve`) through berthd, with and without credentials, side by side with Debian's
//! `docker-registry` (same digests).

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

/// `berth registry serve` on 127.0.0.1:0, killed on drop.
struct BerthRegistry {
    dir: tempfile::TempDir,
    child: Child,
    _out: BufReader<ChildStdout>,
    port: u16,
}

impl BerthRegistry {
    fn start(config: Option<&str>) -> BerthRegistry {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(bin_dir().join("berth"));
        cmd.args(["registry", "serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"));
        if let Some(c) = config {
            let p = dir.path().join("config.json");
            std::fs::write(&p, c).unwrap();
            cmd.arg("--config").arg(p);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("berth registry serve: {line:?}")
            });
        BerthRegistry {
            dir,
            child,
            _out: out,
            port,
        }
    }
}

impl Drop for BerthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pushed_digest(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
        .to_string()
}

#[test]
fn docker_cli_push_pull_through_berthd_to_berth_registry() {
    require_root!();
    let reg = BerthRegistry::start(None);
    let d = Daemon::new();
    let name = format!("127.0.0.1:{}/test/bb:v1", reg.port);
    let (r, out) = push_rmi_pull(&d, &name);
    r.stdout_contains("v1: digest: sha256:");
    let digest = pushed_digest(&r.stdout);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    let r = d.docker(&["pull", &format!("127.0.0.1:{}/test/bb:nope", reg.port)]);
    assert_ne!(r.code, 0);

    // The same push to docker-registry gives the same digest.
    if DockerRegistry::available() {
        let dist = DockerRegistry::start();
        let other = format!("127.0.0.1:{}/test/bb:v1", dist.port);
        d.docker(&["tag", "busybox", &other]).ok();
        let r = d.docker(&["push", &other]).ok();
        assert_eq!(pushed_digest(&r.stdout), digest);
    }
    finish(d);
}

#[test]
fn docker_cli_login_push_pull_with_permissions() {
    require_root!();
    // A user for the config, hashed by `berth registry hash-password`.
    let hash = Command::new(bin_dir().join("berth"))
        .args(["registry", "hash-password"])
        .run_with_input(b"correct horse\n")
        .ok()
        .stdout
        .trim()
        .to_string();
    let cfg = serde_json::json!({
        "users": {"alice": {"password_hash": hash}},
        "access": [
            {"repository": "team/*", "users": ["alice"], "actions": ["pull", "push", "delete"]},
            {"repository": "team/*", "users": ["anonymous"], "actions": ["pull"]},
        ],
    });
    let reg = BerthRegistry::start(Some(&cfg.to_string()));
    let d = Daemon::new();
    let host = format!("127.0.0.1:{}", reg.port);
    let name = format!("{host}/team/bb:1");
    d.docker(&["tag", "busybox", &name]).ok();
    // Anonymous push: refused.
    let r = d.docker(&["push", &name]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    // Wrong password: login fails.
    let r = d.docker(&["login", &host, "-u", "alice", "-p", "wrong"]);
    assert_ne!(r.code, 0);
    d.docker(&["login", &host, "-u", "alice", "-p", "correct horse"])
        .ok();
    let r = d.docker(&["push", &name]).ok();
    r.stdout_contains("1: digest: sha256:");
    // Not permitted outside team/*, even signed in.
    let other = format!("{host}/private/bb:1");
    d.docker(&["tag", "busybox", &other]).ok();
    let r = d.docker(&["push", &other]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    // Anonymous pull of team/* is allowed.
    d.docker(&["logout", &host]).ok();
    d.docker(&["rmi", &name]).ok();
    let out = d.docker(&["pull", &name]).ok().stdout;
    assert!(out.contains("Downloaded newer image"), "{out}");
    // The audit log names alice for the push.
    let audit = std::fs::read_to_string(reg.dir.path().join("root/audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"user\":\"alice\"")
            && l.contains("\"action\":\"push\"")
            && l.contains("\"kind\":\"manifest\"")),
        "{audit}"
    );
    finish(d);
}

/// GET on 127.0.0.1:port; (status, body), or None when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The registry packaged as an image (packaging/registry) and run as a Berth container, the
/// way registry:2 is run: published port, a volume for its storage, restart policy. The docker
/// CLI pushes to it through berthd; the data survives a restart of the container.
#[test]
fn registry_image_runs_as_a_berth_container() {
    let d = root_daemon!();
    let ctx = d.path("registry-context");
    Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../packaging/registry/build-context.sh"),
    )
    .arg(&ctx)
    .env("BERTH", bin_dir().join("berth"))
    .output_ok();
    d.berth_line("build -q -t berth-registry", &[ctx.to_str().unwrap()])
        .ok();
    let port = free_port();
    d.docker_line(
        "run -d --name registry --restart always -p",
        &[
            &format!("127.0.0.1:{port}:5000"),
            "-v",
            "regdata:/var/lib/registry",
            "berth-registry",
        ],
    )
    .ok();
    let up = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while http_get(port, "/v2/").map(|r| r.0) != Some(200) {
            assert!(
                std::time::Instant::now() < deadline,
                "registry container not answering {what}: {}",
                d.docker(&["logs", "registry"]).stderr
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    up("after run");
    let name = format!("127.0.0.1:{port}/team/app:v1");
    d.docker(&["tag", "busybox", &name]).ok();
    let r = d.docker(&["push", &name]).ok();
    let digest = pushed_digest(&r.stdout);
    let (status, body) = http_get(port, "/v2/_catalog").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("team/app"), "{body}");
    // Restarted, the container serves the same content from its volume.
    d.docker_line("restart -t 1 registry", &[]).ok();
    up("after restart");
    d.docker(&["rmi", &name]).ok();
    let out = d.docker(&["pull", &name]).ok().stdout;
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert_eq!(
        d.docker(&["run", "--rm", &name, "echo", "from the registry container"])
            .ok()
            .stdout,
        "from the registry container\n"
    );
    let ep = d.inspect(
        "{{json .Config.Entrypoint}} {{json .Config.ExposedPorts}}",
        "berth-registry",
    );
    assert!(
        ep.contains("[\"/usr/bin/berth\",\"registry\",\"serve\"]"),
        "{ep}"
    );
    assert!(ep.contains("5000/tcp"), "{ep}");
    d.docker(&["rm", "-f", "registry"]).ok();
    d.docker(&["volume", "rm", "regdata"]).ok();
    finish(d);
}
