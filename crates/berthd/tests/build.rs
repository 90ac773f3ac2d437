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

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../berth-build/tests/corpus")
}

fn store(d: &Daemon) -> berth_image::image_store::ImageStore {
    berth_image::image_store::ImageStore::open(d.path("data")).unwrap()
}

/// Runs one corpus case; returns a description of every mismatch.
fn corpus_case(d: &Daemon, name: &str) -> Vec<String> {
    let dir = corpus_dir().join(name);
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expect.json")).unwrap()).unwrap();
    let tag = format!("corpus-{}", name.replace('_', "-"));
    let mut args: Vec<String> = vec!["build".into(), "-t".into(), tag.clone()];
    for a in exp["args"].as_array().into_iter().flatten() {
        args.push(a.as_str().unwrap().to_string());
    }
    args.push(dir.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = d.berth(&argv);
    let mut bad = Vec::new();
    let out = format!("{}{}", r.stdout, r.stderr);
    for s in exp["stdout_has"].as_array().into_iter().flatten() {
        if !r.stdout.contains(s.as_str().unwrap()) {
            bad.push(format!("{name}: build output lacks {s}: {out}"));
        }
    }
    for s in exp["stdout_lacks"].as_array().into_iter().flatten() {
        if r.stdout.contains(s.as_str().unwrap()) {
            bad.push(format!("{name}: build output has {s}: {out}"));
        }
    }
    if let Some(e) = exp["error"].as_str() {
        if r.code == 0 {
            bad.push(format!("{name}: build succeeded, expected error {e:?}"));
        } else if !r.stderr.contains(e) {
            bad.push(format!("{name}: error {:?} lacks {e:?}", r.stderr));
        }
        if let Some(c) = exp["exit"].as_i64() {
            if r.code as i64 != c {
                bad.push(format!("{name}: exit {} != {c}", r.code));
            }
        }
        if store(d).resolve(&tag).is_ok() {
            bad.push(format!("{name}: failed build tagged {tag}"));
        }
        return bad;
    }
    if r.code != 0 {
        bad.push(format!("{name}: build failed: {out}"));
        return bad;
    }
    let v = inspect(d, &tag);
    let cfg = &v["config"];
    for (k, want) in exp["config"].as_object().into_iter().flatten() {
        if &cfg[k] != want {
            bad.push(format!("{name}: config {k} = {} want {want}", cfg[k]));
        }
    }
    let env: Vec<String> = cfg["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for e in exp["env_has"].as_array().into_iter().flatten() {
        if !env.iter().any(|x| x == e.as_str().unwrap()) {
            bad.push(format!("{name}: Env {env:?} lacks {e}"));
        }
    }
    for e in exp["env_lacks"].as_array().into_iter().flatten() {
        if env.iter().any(|x| x == e.as_str().unwrap()) {
            bad.push(format!("{name}: Env {env:?} has {e}"));
        }
    }
    if let Some(a) = exp["author"].as_str() {
        if v["author"] != a {
            bad.push(format!("{name}: author {}", v["author"]));
        }
    }
    if let Some(want) = exp["run_default"].as_str() {
        let got = d.docker(&["run", "--rm", &tag]);
        if got.stdout != want {
            bad.push(format!(
                "{name}: default run gave {:?} {:?}, want {want:?}",
                got.stdout, got.stderr
            ));
        }
    }
    for pair in exp["run"].as_array().into_iter().flatten() {
        let cmd = pair[0].as_str().unwrap();
        let want = pair[1].as_str().unwrap();
        let got = d.docker(&["run", "--rm", "--entrypoint", "sh", &tag, "-c", cmd]);
        if got.stdout != want {
            bad.push(format!(
                "{name}: `{cmd}` gave {:?} (stderr {:?}), want {want:?}",
                got.stdout, got.stderr
            ));
        }
    }
    bad
}

fn run_corpus(filter: impl Fn(&str) -> bool) {
    let d = Daemon::new();
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| filter(n))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let mut bad = Vec::new();
    for n in &names {
        bad.extend(corpus_case(&d, n));
    }
    assert!(bad.is_empty(), "corpus mismatches:\n{}", bad.join("\n"));
    finish(d);
}

#[test]
fn corpus_valid_dockerfiles() {
    run_corpus(|n| !n.starts_with("bad_"));
}

#[test]
fn corpus_bad_input() {
    run_corpus(|n| n.starts_with("bad_"));
}
