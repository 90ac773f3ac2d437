//! End-to-end tests of `berth push`, `pull`, `login` and `logout` against a real
//! `docker-registry` on 127.0.0.1, checked with skopeo; the pulled image is then run with
//! `berth-runtime`.
//!
//! Needs root (mounting the snapshot, running the container), `/usr/bin/docker-registry`,
//! `skopeo` and `/bin/busybox`; skips with a message otherwise. The runtime binary is looked
//! up as `$BERTH_RUNTIME_BIN`, else next to this test's target directory
//! (`$CARGO_TARGET_DIR/debug/berth-runtime`), else built with `cargo build -p berth-runtime`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_image::image_store::ImageStore;
use berth_testkit::{unique_name, DockerRegistry, OciEnv};

mod common;

use common::*;

/// The image pushed and pulled: busybox with sh, echo, ls and cat, the mount points a
/// container needs, `/etc/passwd` and `/etc/group`.
fn registry_rootfs() -> Rootfs {
    Rootfs::bare()
        .dirs(&["bin/", "etc/", "proc/", "sys/", "dev/", "tmp/", "root/"])
        .applets(&["sh", "echo", "ls", "cat"])
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", b"root:x:0:\n")
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn skopeo_digest(image: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{image}"))
        .output_ok();
    let out2 = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output_ok();
    let v: serde_json::Value = serde_json::from_slice(&out2.stdout).unwrap();
    let digest = v["Digest"].as_str().unwrap().to_string();
    // The raw manifest hashes to the digest skopeo reports.
    use sha2::Digest as _;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout))),
        digest
    );
    digest
}

/// The `berth-runtime` binary (see the module docs).
fn runtime_bin() -> PathBuf {
    berth_testkit::bins::workspace_bin("BERTH_RUNTIME_BIN", "berth-runtime", "berth-runtime")
}

/// The image's snapshot, prepared for a container and mounted on `rootfs`; unmounted and
/// removed on drop.
struct Snapshot {
    store: ImageStore,
    id: String,
    rootfs: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = berth_image::snapshot::unmount(&self.rootfs);
        if let Ok(s) = self.store.snapshotter() {
            let _ = s.remove_container(&self.id);
        }
    }
}

/// Mounts the snapshot of the image `name` in `root` and runs `args` in it with
/// `berth-runtime`; returns its standard output.
fn run_image(root: &Path, name: &str, args: &[&str]) -> String {
    let store = ImageStore::open(root).unwrap();
    let image = store.resolve(name).unwrap().image;
    let top = image.chain_ids().last().cloned().expect("image has layers");
    let env = OciEnv::new(&runtime_bin(), "berth-cli-run", "state");
    let id = unique_name("pulled");
    let bundle = env.spec_bundle(&id, args);
    let snap = Snapshot {
        store,
        id: id.clone(),
        rootfs: bundle.path.join("rootfs"),
    };
    let s = snap.store.snapshotter().unwrap();
    s.prepare_container(&id, Some(&top)).unwrap();
    s.mount_container(&id, &snap.rootfs).unwrap();
    assert!(snap.rootfs.join("bin/busybox").exists());
    bundle.write();
    let out = env.run(&["run", "--bundle", bundle.p(), &id]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "berth-runtime run: {}: {}{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn push_pull_and_run() {
    require_root!(DOCKER_REGISTRY, SKOPEO, BUSYBOX);
    let reg = DockerRegistry::start();
    let name = format!("{}/test/busybox:1", reg.host());
    let repo = format!("{}/test/busybox", reg.host());

    // Build and push.
    let a = Env::new();
    let id = a.import(&registry_rootfs(), Some("busybox:imported"));
    a.berth(&["tag", "busybox:imported", &name]).ok();
    let r = a.berth(&["push", &name]).ok();
    let out = lines(&r.stdout);
    assert_eq!(
        out[0],
        format!("The push refers to repository [{repo}]"),
        "{}",
        r.stdout
    );
    assert!(out.iter().any(|l| l.ends_with(": Pushed")), "{}", r.stdout);
    let last = out.last().unwrap();
    assert!(last.starts_with("1: digest: sha256:"), "{}", r.stdout);
    let pushed_digest = last.split_whitespace().nth(2).unwrap().to_string();
    let size: u64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(size > 100);

    // skopeo sees the same manifest.
    assert_eq!(skopeo_digest(&name), pushed_digest);

    // The repo digest is recorded.
    let r = a
        .berth(&[
            "images",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        ])
        .ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l == format!("{repo} 1 {pushed_digest}")),
        "{}",
        r.stdout
    );

    // Pushing again: the layer is there already; same digest.
    let r = a.berth(&["push", &name]).ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.ends_with(": Layer already exists")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .trim_end()
            .ends_with(&format!("1: digest: {pushed_digest} size: {size}")),
        "{}",
        r.stdout
    );

    // Quiet push prints the reference only.
    let r = a.berth(&["push", "-q", &name]).ok();
    assert_eq!(r.stdout, format!("{name}\n"));

    // A push to another repository of the same registry mounts the layers.
    let other = format!("{}/other/busybox:2", reg.host());
    a.berth(&["tag", &name, &other]).ok();
    let r = a.berth(&["push", &other]).ok();
    assert!(
        r.stdout
            .lines()
            .any(|l| l.ends_with(": Mounted from test/busybox")
                || l.ends_with(": Layer already exists")),
        "{}",
        r.stdout
    );

    // Pushing an unknown image.
    let r = a.berth(&["push", &format!("{}/test/none:1", reg.host())]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "Error response from daemon: An image does not exist locally with the tag: {}/test/none",
            reg.host()
        )
    );

    // Pull into a fresh data root.
    let b = Env::new();
    let r = b.berth(&["pull", &name]).ok();
    let out = lines(&r.stdout);
    assert_eq!(out[0], "1: Pulling from test/busybox", "{}", r.stdout);
    assert!(
        out.iter().any(|l| l.ends_with(": Pull complete")),
        "{}",
        r.stdout
    );
    assert!(
        out.contains(&format!("Digest: {pushed_digest}").as_str()),
        "{}",
        r.stdout
    );
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Downloaded newer image for {name}")
    );
    assert_eq!(out[out.len() - 1], name);

    let r = b
        .berth(&[
            "images",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), format!("{name} {id}"));
    let a_size = a
        .berth(&["images", "--format", "{{.Size}}", &name])
        .ok()
        .stdout;
    let b_size = b
        .berth(&["images", "--format", "{{.Size}}", &name])
        .ok()
        .stdout;
    assert_eq!(a_size, b_size);
    let r = b
        .berth(&["images", "--digests", "--format", "{{.Digest}}"])
        .ok();
    assert_eq!(r.stdout.trim(), pushed_digest);

    // Again: up to date, as dockerd says it: the digest and the status, no layer lines.
    let r = b.berth(&["pull", &name]).ok();
    let out = lines(&r.stdout);
    assert!(
        !out.iter().any(|l| l.ends_with(": Already exists")),
        "{}",
        r.stdout
    );
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Image is up to date for {name}")
    );

    // A platform the image is not for.
    let other_arch = if std::env::consts::ARCH == "x86_64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let r = b.berth(&["pull", "-q", "--platform", other_arch, &name]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    r.stderr_contains(&format!(
        "was found but does not match the specified platform: wanted {other_arch}"
    ));

    // Quiet, by digest.
    let by_digest = format!("{repo}@{pushed_digest}");
    let r = b.berth(&["pull", "-q", &by_digest]).ok();
    assert_eq!(r.stdout, format!("{by_digest}\n"));

    // No tag: latest, which does not exist.
    let r = b.berth(&["pull", &repo]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.starts_with("Using default tag: latest\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.starts_with(&format!(
            "Error response from daemon: manifest for {repo}:latest not found: manifest unknown: "
        )),
        "{}",
        r.stderr
    );

    // -a: every tag (here the one there is), then the repository's status and its name.
    let r = b.berth(&["pull", "-a", &repo]).ok();
    let out = lines(&r.stdout);
    assert!(
        out.contains(&"1: Pulling from test/busybox"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("Using default tag"), "{}", r.stdout);
    assert_eq!(
        out[out.len() - 2],
        format!("Status: Image is up to date for {repo}")
    );
    assert_eq!(out[out.len() - 1], repo);
    // A tag with -a is refused, as by Docker's CLI.
    b.berth(&["pull", "-a", &name])
        .failed_with(1, "tag can't be used with --all-tags/-a");

    // Run the pulled image.
    let out = run_image(&b.root(), &name, &["echo", "hello from a pulled image"]);
    assert_eq!(out, "hello from a pulled image\n");
}

#[test]
fn login_logout_and_auth() {
    require_root!(DOCKER_REGISTRY, SKOPEO, BUSYBOX);
    let reg = DockerRegistry::with_htpasswd();
    let host = reg.host();
    let e = Env::new();

    // Anonymous push is refused.
    e.import(&registry_rootfs(), Some("busybox:imported"));
    let name = format!("{host}/auth/busybox:1");
    e.berth(&["tag", "busybox:imported", &name]).ok();
    e.berth(&["push", &name]).failed_with(1, "unauthorized");

    // Wrong password.
    let r = e.berth(&["login", "-u", USER, "-p", "wrong", &host]);
    r.failed_with(1, "Error response from daemon: ")
        .fails_with("unauthorized: ");
    assert!(!e.config_dir().join("config.json").exists());

    // --password-stdin needs -u.
    e.berth_stdin(&["login", "--password-stdin", &host], "x\n")
        .failed_with(1, "Must provide --username");

    // Right password.
    let r = e
        .berth_stdin(
            &["login", "-u", USER, "--password-stdin", &host],
            &format!("{PASS}\n"),
        )
        .ok();
    assert_eq!(r.stdout, "Login Succeeded\n");
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(e.config_dir().join("config.json")).unwrap()).unwrap();
    let auth = cfg["auths"][&host]["auth"].as_str().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    assert_eq!(String::from_utf8(auth).unwrap(), format!("{USER}:{PASS}"));

    // Now push and pull work.
    e.berth(&["push", &name]).ok();
    let f = Env::new();
    // Not logged in from another config directory.
    f.berth(&["pull", &name]).failed_with(1, "unauthorized");
    e.berth(&["rmi", &name]).ok();
    let r = e.berth(&["pull", &name]).ok();
    r.stdout_contains("Status: ");

    // Logout.
    let r = e.berth(&["logout", &host]).ok();
    assert_eq!(r.stdout, format!("Removing login credentials for {host}\n"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(e.config_dir().join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"].get(&host).is_none(), "{cfg}");
    let r = e.berth(&["logout", &host]).ok();
    assert_eq!(r.stdout, format!("Not logged in to {host}\n"));
}
