//! berthd on TCP with TLS and client certificates (dockerd's `--tlsverify`), driven by the real
//! docker CLI; plain TCP is refused unless asked for.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// `openssl <words>` in `dir` (words without spaces).
fn openssl(dir: &Path, words: &str) {
    let st = Command::new("openssl")
        .args(words.split_whitespace())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {words}");
}

/// A key `key` and a certificate `cert` for `subject`, signed by the CA, with the extensions
/// `ext`.
fn issue(dir: &Path, key: &str, cert: &str, subject: &str, ext: &str) {
    std::fs::write(dir.join(format!("{cert}.ext")), ext).unwrap();
    openssl(
        dir,
        &format!("req -newkey rsa:2048 -nodes -keyout {key} -out {cert}.csr -subj {subject}"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {cert}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out {cert} \
             -days 2 -extfile {cert}.ext"
        ),
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 \
         -subj /CN=berth-test-ca",
    );
    let server_ext = "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    issue(
        dir,
        "server-key.pem",
        "server-cert.pem",
        "/CN=127.0.0.1",
        server_ext,
    );
    let client_ext = "extendedKeyUsage=clientAuth\n";
    issue(dir, "key.pem", "cert.pem", "/CN=client", client_ext);
}

#[test]
fn tcp_with_tls_and_client_certificates() {
    require_root!("openssl");
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let port = free_port();
    let c = |f: &str| certs.path().join(f).display().to_string();
    let d = Daemon::with_args(&[
        "-H".into(),
        format!("tcp://127.0.0.1:{port}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        c("ca.pem"),
        "--tlscert".into(),
        c("server-cert.pem"),
        "--tlskey".into(),
        c("server-key.pem"),
    ]);
    // The unix socket still works; so does TCP with the client certificate.
    d.docker(&["version"]).ok();
    let docker_tcp = |cert_path: Option<&Path>, args: &[&str]| {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
            .env("DOCKER_CONFIG", d.path("docker-config"))
            .env_remove("DOCKER_CONTEXT");
        match cert_path {
            Some(p) => {
                cmd.env("DOCKER_TLS_VERIFY", "1").env("DOCKER_CERT_PATH", p);
            }
            None => {
                cmd.env_remove("DOCKER_TLS_VERIFY")
                    .env_remove("DOCKER_CERT_PATH");
            }
        }
        run_output(cmd.output().unwrap())
    };
    let v = docker_tcp(
        Some(certs.path()),
        &["version", "--format", "{{.Server.Os}}"],
    )
    .ok();
    assert_eq!(v.stdout, "linux\n");
    let r = docker_tcp(
        Some(certs.path()),
        &["run", "--rm", "busybox", "echo", "over tls"],
    )
    .ok();
    assert_eq!(r.stdout, "over tls\n");
    // The berth CLI the same way: DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (the
    // certificates' default names), then BERTH_HOST and the flags; attach and stdin over TLS.
    let berth_tcp = |envs: &[(&str, String)], args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(bin_dir().join("berth"));
        cmd.args(args);
        for k in [
            "BERTH_HOST",
            "DOCKER_HOST",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "BERTH_TLS_VERIFY",
            "BERTH_CERT_PATH",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HOME", certs.path().join("home"));
        cmd.run_with_input(stdin.unwrap_or("").as_bytes())
    };
    let docker_env = vec![
        ("DOCKER_HOST", format!("tcp://127.0.0.1:{port}")),
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        ("DOCKER_CERT_PATH", certs.path().display().to_string()),
    ];
    let r = berth_tcp(
        &docker_env,
        &["run", "--rm", "busybox", "echo", "berth over tls"],
        None,
    )
    .ok();
    assert_eq!(r.stdout, "berth over tls\n");
    let r = berth_tcp(
        &docker_env,
        &["run", "--rm", "-i", "busybox", "cat"],
        Some("typed\n"),
    )
    .ok();
    assert_eq!(r.stdout, "typed\n");
    let flags = [
        "-H".to_string(),
        format!("tcp://127.0.0.1:{port}"),
        "--tlsverify".into(),
        "--tlscacert".into(),
        c("ca.pem"),
        "--tlscert".into(),
        c("cert.pem"),
        "--tlskey".into(),
        c("key.pem"),
        "ps".into(),
        "-a".into(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    berth_tcp(&[], &flags, None).ok();
    // Without the client certificate: refused; without TLS: no answer from a TLS port.
    let r = berth_tcp(
        &[("BERTH_HOST", format!("tcp://127.0.0.1:{port}"))],
        &[
            "--tlsverify",
            "--tlscacert",
            &c("ca.pem"),
            "--tlscert",
            "/nonexistent.pem",
            "ps",
        ],
        None,
    );
    r.fails_with("/nonexistent.pem");
    let r = berth_tcp(
        &[("BERTH_HOST", format!("tcp://127.0.0.1:{port}"))],
        &["ps"],
        None,
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    // Without a client certificate (or without TLS) the daemon does not answer.
    let nocert = tempfile::tempdir().unwrap();
    std::fs::copy(certs.path().join("ca.pem"), nocert.path().join("ca.pem")).unwrap();
    let r = docker_tcp(
        None,
        &[
            "--tls",
            "--tlscacert",
            &c("ca.pem"),
            "version",
            "--format",
            "{{.Server.Os}}",
        ],
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    let r = docker_tcp(None, &["version", "--format", "{{.Server.Os}}"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    finish(d);
    // Plain TCP without --tls=false: refused at start-up with a clear message.
    let o = Command::new(bin_dir().join("berthd"))
        .args([
            "--config-file",
            "/dev/null",
            "-H",
            &format!("tcp://127.0.0.1:{}", free_port()),
            "--data-root",
        ])
        .arg(certs.path().join("data"))
        .arg("--exec-root")
        .arg(certs.path().join("exec"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("without TLS"));
}
