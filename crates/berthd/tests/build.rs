//! Dockerfile builds end to end: the docker CLI (legacy builder), docker-py and `berth build`
//! against berthd, checking the resulting image config and file system, and the step cache.
mod common;

use common::{finish, Daemon};
use std::path::{Path, PathBuf};

fn ctx(d: &Daemon, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = d.path(name);
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn docker_build(d: &Daemon, dir: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    let p = dir.display().to_string();
    args.push(&p);
    let o = std::process::Command::new("docker")
        .args(&args)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
        .env("DOCKER_CONFIG", d.path("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::run_output(o)
}

/// `docker run --rm IMAGE sh -c CMD` output.
fn run_in(d: &Daemon, image: &str, cmd: &str) -> String {
    d.docker(&["run", "--rm", image, "sh", "-c", cmd])
        .ok()
        .stdout
}

/// The image's config (`Config`, `history`, `rootfs`, …) read from the daemon's store.
fn inspect(d: &Daemon, image: &str) -> serde_json::Value {
    let store = berth_image::image_store::ImageStore::open(d.path("data")).unwrap();
    let r = store.resolve(image).unwrap();
    let bytes = store.config_bytes(&r.image.id).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["Config"] = v["config"].clone();
    v["Id"] = serde_json::json!(r.image.id.to_string());
    v
}

#[test]
fn docker_cli_builds_simple() {
    let d = Daemon::new();
    let dir = ctx(
        &d,
        "c1",
        &[
            ("Dockerfile", "FROM busybox\nRUN echo hello > /greeting && echo built\nWORKDIR /app\nCOPY a.txt .\nENV X=1\nCMD [\"cat\", \"/app/a.txt\"]\n"),
            ("a.txt", "content-a\n"),
        ],
    );
    let r = docker_build(&d, &dir, &["-t", "simple:1"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Step 1/6 : FROM busybox"), "{}", r.stdout);
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Successfully tagged simple:1"),
        "{}",
        r.stdout
    );
    let v = inspect(&d, "simple:1");
    assert_eq!(v["Config"]["WorkingDir"], "/app");
    assert_eq!(v["Config"]["Cmd"], serde_json::json!(["cat", "/app/a.txt"]));
    assert!(v["Config"]["Env"].to_string().contains("X=1"));
    assert_eq!(
        d.docker(&["run", "--rm", "simple:1"]).ok().stdout,
        "content-a\n"
    );
    assert_eq!(run_in(&d, "simple:1", "cat /greeting"), "hello\n");
    finish(d);
}
