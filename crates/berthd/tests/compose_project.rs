//! A compose project through compose 1.29 (Debian's, Python) and compose v2 (the docker CLI
//! plugin, its default build through buildx): a build, two services reaching each other by
//! name and through a link alias, a named volume, a published port, `depends_on` and
//! environment through `up`; an edit and `up` again (recreate, the volume kept); `run`,
//! `logs`, `exec` and `down -v`.
mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

const COMPOSE_V1: &str = "/usr/bin/docker-compose";

fn project(dir: &Path, greeting: &str) {
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(
        dir.join("web/Dockerfile"),
        "FROM busybox\nRUN mkdir -p /www && echo hello-from-web > /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            r#"version: "3"
services:
  web:
    build: ./web
    ports: ["80"]
    environment:
      GREETING: {greeting}
    volumes: ["data:/data"]
  client:
    image: busybox
    depends_on: [web]
    links: ["web:webalias"]
    environment:
      TARGET: web
    command: ["sh", "-c", "echo client-started; sleep 1000"]
volumes:
  data: {{}}
"#
        ),
    )
    .unwrap();
}

/// Runs one compose implementation (`v2`: the docker CLI plugin) in `dir`.
fn compose(d: &Daemon, v2: bool, dir: &Path, args: &[&str]) -> Run {
    let mut c = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new(COMPOSE_V1)
    };
    let o = c
        .args(["-p", "cproj"])
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_CONFIG", d.path("docker-config"))
        // Compose 1.29 negotiates API 1.51; its recreate reads image inspect's
        // `ContainerConfig`, which Berth keeps there (dockerd 25+ dropped it).
        // (compose v1's `run` through `docker start --attach`, its default: with
        // COMPOSE_INTERACTIVE_NO_CLI it starts first and attaches after, which loses what the
        // container prints at once, against dockerd too.)
        .env_remove("COMPOSE_INTERACTIVE_NO_CLI")
        .env_remove("DOCKER_BUILDKIT")
        .env_remove("COMPOSE_DOCKER_CLI_BUILD")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    run_output(o)
}

fn exec(d: &Daemon, v2: bool, dir: &Path, service: &str, cmd: &str) -> String {
    compose(d, v2, dir, &["exec", "-T", service, "sh", "-c", cmd])
        .ok()
        .stdout
}

fn project_round_trip(v2: bool) {
    let d = Daemon::new();
    if v2 {
        assert!(d.cli_plugin("docker-compose"));
    }
    let dir = d.path("proj");
    project(&dir, "first");
    compose(&d, v2, &dir, &["up", "-d"]).ok();
    // The published port answers on the host.
    let port = compose(&d, v2, &dir, &["port", "web", "80"]).ok().stdout;
    let port = port.trim().rsplit(':').next().unwrap().to_string();
    let via_nc = || {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 127.0.0.1 {port}"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        wait_until(std::time::Duration::from_secs(10), || via_nc()
            .contains("hello-from-web")),
        "port {port} does not answer"
    );
    // Service to service by name, and through the link alias.
    let by_name = || {
        exec(
            &d,
            v2,
            &dir,
            "client",
            "wget -q -O - http://web/ 2>&1 || true",
        )
    };
    assert!(
        wait_until(std::time::Duration::from_secs(10), || by_name()
            .contains("hello-from-web")),
        "client cannot reach web"
    );
    assert!(
        exec(&d, v2, &dir, "client", "wget -q -O - http://webalias/").contains("hello-from-web")
    );
    assert_eq!(exec(&d, v2, &dir, "client", "echo $TARGET").trim(), "web");
    assert_eq!(exec(&d, v2, &dir, "web", "echo $GREETING").trim(), "first");
    exec(&d, v2, &dir, "web", "echo kept > /data/f");
    let web_id = compose(&d, v2, &dir, &["ps", "-q", "web"]).ok().stdout;

    // An edit and `up` again: web is recreated, the named volume kept.
    project(&dir, "second");
    compose(&d, v2, &dir, &["up", "-d"]).ok();
    let web_id2 = compose(&d, v2, &dir, &["ps", "-q", "web"]).ok().stdout;
    assert_ne!(web_id.trim(), web_id2.trim(), "web was not recreated");
    assert_eq!(exec(&d, v2, &dir, "web", "echo $GREETING").trim(), "second");
    assert_eq!(exec(&d, v2, &dir, "web", "cat /data/f").trim(), "kept");

    // `run`, `logs`.
    let r = compose(
        &d,
        v2,
        &dir,
        &[
            "run",
            "--rm",
            "-T",
            "client",
            "sh",
            "-c",
            "echo run-$TARGET; wget -q -O - http://web/",
        ],
    )
    .ok();
    r.stdout_contains("run-web")
        .stdout_contains("hello-from-web");
    let logs = compose(&d, v2, &dir, &["logs", "client"]).ok().stdout;
    assert!(logs.contains("client-started"), "{logs}");

    // `down -v`: containers, network and the named volume go.
    compose(&d, v2, &dir, &["down", "-v"]).ok();
    assert_eq!(d.docker_out("ps -aq", &[]).trim(), "");
    let vols = d.docker_out("volume ls -q", &[]);
    assert!(!vols.contains("cproj_data"), "{vols}");
    let nets = d.docker_out("network ls --format {{.Name}}", &[]);
    assert!(!nets.contains("cproj"), "{nets}");
    d.finish();
}

#[test]
fn compose_v1_project_round_trip() {
    require_root!();
    if !Path::new(COMPOSE_V1).exists() {
        eprintln!("skipped: compose v1 not installed ({COMPOSE_V1})");
        return;
    }
    project_round_trip(false);
}

#[test]
fn compose_v2_project_round_trip() {
    require_root!();
    if cli_plugins("docker-compose").is_none() {
        eprintln!("skipped: compose v2 not installed (~/.docker/cli-plugins/docker-compose)");
        return;
    }
    project_round_trip(true);
}
