//! docker-compose (Debian's 1.29, Python) against berthd: a two-service project on its own
//! network, reached by service name, with logs, ps, exec, restart and down.

mod common;
use common::*;
use std::process::Command;

fn compose(d: &Daemon, dir: &std::path::Path, args: &[&str]) -> Run {
    let o = Command::new("docker-compose")
        .args(["-p", "bt"])
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
        .env("DOCKER_CONFIG", d.path("docker-config"))
        .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
        // Compose 1.29 negotiates the newest API (1.51): image inspect keeps `ContainerConfig`
        // there, which it reads on recreate (dockerd 25+ dropped it, breaking compose v1).
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    run_output(o)
}

#[test]
fn compose_up_ps_logs_exec_down() {
    let d = root_daemon!("docker-compose");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        r#"version: "3"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && httpd -f -p 80 -h /www"]
    restart: unless-stopped
    labels:
      tier: front
  client:
    image: busybox
    command: ["sh", "-c", "for i in $$(seq 50); do wget -q -O - http://web/ && break; sleep 0.2; done; sleep 1000"]
    depends_on: [web]
    environment:
      ROLE: client
"#,
    )
    .unwrap();
    let r = compose(&d, dir.path(), &["up", "-d"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ps = compose(&d, dir.path(), &["ps"]).ok().stdout;
    assert!(
        ps.contains("bt_web_1") && ps.contains("bt_client_1") && ps.contains("Up"),
        "{ps}"
    );
    let mut logs = String::new();
    for _ in 0..100 {
        logs = compose(&d, dir.path(), &["logs", "client"]).ok().stdout;
        if logs.contains("hello-from-web") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logs.contains("hello-from-web"), "{logs}");
    let env = compose(
        &d,
        dir.path(),
        &["exec", "-T", "client", "sh", "-c", "echo $ROLE"],
    )
    .ok()
    .stdout;
    assert_eq!(env.trim(), "client");
    compose(&d, dir.path(), &["restart", "web"]).ok();
    let r = compose(&d, dir.path(), &["down"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(d.docker(&["ps", "-aq"]).ok().stdout, "");
    let nets = d.docker_out("network ls --format", &["{{.Name}}"]);
    assert!(!nets.contains("bt_default"), "{nets}");
    finish(d);
}
