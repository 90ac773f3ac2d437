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
    let reg = BerthRegistry::start(None);
    let d = Daemon::new();
    let name = format!("127.0.0.1:{}/test/bb:v1", reg.port);
    d.docker(&["tag", "busybox", &name]).ok();
    let r = d.docker(&["push", &name]).ok();
    assert!(r.stdout.contains("v1: digest: sha256:"), "{}", r.stdout);
    let digest = pushed_digest(&r.stdout);
    let out = d.docker(&["rmi", &name]).ok().stdout;
    assert!(out.contains(&format!("Untagged: {name}")), "{out}");
    let out = d.docker(&["pull", &name]).ok().stdout;
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    let out = d
        .docker(&["run", "--rm", &name, "echo", "pulled"])
        .ok()
        .stdout;
    assert_eq!(out, "pulled\n");
    let r = d.docker(&["pull", &format!("127.0.0.1:{}/test/bb:nope", reg.port)]);
    assert_ne!(r.code, 0);

    // The same push to docker-registry gives the same digest.
    if let Some(dist) = DockerRegistry::start() {
        let other = format!("127.0.0.1:{}/test/bb:v1", dist.port);
        d.docker(&["tag", "busybox", &other]).ok();
        let r = d.docker(&["push", &other]).ok();
        assert_eq!(pushed_digest(&r.stdout), digest);
    }
    finish(d);
}

#[test]
fn docker_cli_login_push_pull_with_permissions() {
    // A user for the config, hashed by `berth registry hash-password`.
    let mut hp = Command::new(bin_dir().join("berth"))
        .args(["registry", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    hp.stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let o = hp.wait_with_output().unwrap();
    assert!(o.status.success());
    let hash = String::from_utf8(o.stdout).unwrap().trim().to_string();
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
    assert!(r.stdout.contains("1: digest: sha256:"), "{}", r.stdout);
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
