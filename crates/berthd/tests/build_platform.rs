//! Builds for a platform other than the host's, through a binfmt_misc handler (qemu-user):
//! the base image's platform chosen from its registry index, RUN steps emulated, the image
//! config's architecture; the legacy `/build` (`platform=`) and buildx (`--platform`), one
//! and several platforms; a clear error without a handler.
//!
//! The tests register a uniquely named handler for Debian's `qemu-aarch64-static` (removed on
//! drop, failure included) and use an arm64 busybox from Debian's `busybox-static:arm64`
//! (fetched once with apt into a private directory: the host's apt and dpkg settings are not
//! touched). Without qemu-user-static, the arm64 busybox, or docker-registry they are skipped.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_build::binfmt::{self, ElfMachine};
use berth_image::manifest::Platform;
use berth_image::Digest;

const QEMU_AARCH64: &str = "/usr/bin/qemu-aarch64-static";

/// A binfmt_misc handler registered for this test (removed on drop): `binfmt_misc` is read
/// and written through a private mount when it is not mounted at its usual place.
struct Handler {
    dir: PathBuf,
    name: String,
    /// The private mount (unmounted on drop).
    mount: Option<tempfile::TempDir>,
}

impl Handler {
    /// Registers a handler for `platform`'s executables (`Err`: why this host does not let
    /// the test register one, e.g. in a container without the privilege).
    fn register(platform: &str, interpreter: &str, flags: &str) -> Result<Handler, String> {
        let std_dir = Path::new(binfmt::MOUNT_POINT);
        let (dir, mount) = if std_dir.join("register").exists() {
            (std_dir.to_path_buf(), None)
        } else {
            let t = tempfile::Builder::new()
                .prefix("berth-test-binfmt-")
                .tempdir()
                .unwrap();
            let o = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(t.path())
                .output()
                .unwrap();
            if !o.status.success() {
                return Err(format!(
                    "mounting binfmt_misc: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            (t.path().to_path_buf(), Some(t))
        };
        let name = format!(
            "berth-test-{}-{}",
            std::process::id(),
            berth_testkit::unique_id()
        );
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(60)
            .collect();
        let h = Handler { dir, name, mount };
        let m = ElfMachine::of(&Platform::parse(platform).unwrap()).unwrap();
        let line = binfmt::registration(&h.name, m, Path::new(interpreter), flags);
        std::fs::OpenOptions::new()
            .write(true)
            .open(h.dir.join("register"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("registering {line}: {e}"))?;
        Ok(h)
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let entry = self.dir.join(&self.name);
        if entry.exists() {
            if let Err(e) = std::fs::write(&entry, "-1") {
                eprintln!("removing binfmt entry {}: {e}", entry.display());
            }
        }
        if let Some(t) = self.mount.take() {
            let _ = Command::new("umount").arg(t.path()).status();
        }
    }
}

/// Debian's arm64 busybox (static), fetched once into a cache directory with apt's own
/// client on private lists (`None` when apt cannot reach Debian).
fn arm64_busybox() -> Option<Vec<u8>> {
    let cache = std::env::temp_dir().join("berth-test-cache");
    let bin = cache.join("busybox-arm64");
    if let Ok(b) = std::fs::read(&bin) {
        return Some(b);
    }
    std::fs::create_dir_all(&cache).ok()?;
    let lock = std::fs::File::create(cache.join("busybox-arm64.lock")).ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).ok()?;
    if let Ok(b) = std::fs::read(&bin) {
        return Some(b);
    }
    let work = tempfile::tempdir_in(&cache).ok()?;
    let w = work.path();
    for d in ["lists/partial", "cache/archives/partial", "x"] {
        std::fs::create_dir_all(w.join(d)).ok()?;
    }
    let opts = [
        "-q".to_string(),
        "-o".into(),
        "APT::Architectures::=amd64".into(),
        "-o".into(),
        "APT::Architectures::=arm64".into(),
        "-o".into(),
        format!("Dir::State::Lists={}", w.join("lists").display()),
        "-o".into(),
        format!("Dir::Cache={}", w.join("cache").display()),
        "-o".into(),
        "Debug::NoLocking=1".into(),
    ];
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(&opts)
            .args(args)
            .current_dir(w)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["update"]) || !apt(&["download", "busybox-static:arm64"]) {
        return None;
    }
    let deb = std::fs::read_dir(w)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))?;
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(w.join("x"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    let b = std::fs::read(w.join("x/bin/busybox")).ok()?;
    // An aarch64 ELF, or something else went wrong.
    let m = ElfMachine::of(&Platform::parse("linux/arm64").unwrap()).unwrap();
    if b.get(18..20) != Some(&m.machine.to_le_bytes()) {
        return None;
    }
    berth_util::fs::atomic_write(&bin, &b).ok()?;
    Some(b)
}

/// Why the emulated tests cannot run here (`None`: they can).
fn missing() -> Option<String> {
    if !Path::new(QEMU_AARCH64).exists() {
        return Some(format!("qemu-user-static not installed ({QEMU_AARCH64})"));
    }
    if !DockerRegistry::available() {
        return Some("docker-registry not installed".into());
    }
    None
}

/// A busybox root file system as a tar, with `busybox` as its binary.
fn busybox_tar(busybox: &[u8]) -> Vec<u8> {
    berth_testkit::Rootfs::bare()
        .binary(busybox)
        .dirs(&["bin", "etc", "tmp", "proc", "sys", "dev"])
        .applets(&["sh", "echo", "cat", "uname", "true", "ls", "wc"])
        .tar()
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let d = Digest::of_bytes(data);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), data).unwrap();
    (d.to_string(), data.len())
}

/// An OCI layout with one index of a busybox image per `(platform, busybox binary)`.
fn write_index_layout(layout: &Path, images: &[(&str, &[u8])]) {
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut manifests = Vec::new();
    for (platform, bin) in images {
        let p = Platform::parse(platform).unwrap();
        let tar = busybox_tar(bin);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let (ld, ls) = put_blob(layout, &gz);
        let mut config = serde_json::json!({
            "architecture": p.architecture,
            "os": p.os,
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [Digest::of_bytes(&tar).to_string()]},
        });
        if let Some(v) = &p.variant {
            config["variant"] = v.clone().into();
        }
        let (cd, cs) = put_blob(layout, config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}],
        });
        let (md, ms) = put_blob(layout, manifest.to_string().as_bytes());
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "platform": {"architecture": p.architecture, "os": p.os},
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (xd, xs) = put_blob(layout, index.to_string().as_bytes());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": xd, "size": xs,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
}

/// Pushes a two-platform busybox (the host's and arm64) to `reg` as `bb:multi`.
fn push_multi(reg: &DockerRegistry, arm64: &[u8]) -> String {
    let layout = tempfile::tempdir().unwrap();
    let host = berth_testkit::busybox::busybox_bytes();
    let h = Platform::host();
    let hp = format!("{}/{}", h.os, h.architecture);
    write_index_layout(layout.path(), &[(&hp, &host), ("linux/arm64", arm64)]);
    let name = format!("{}/bb:multi", reg.host());
    let o = Command::new("skopeo")
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.path().display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    run_output(o).ok();
    name
}

/// `docker buildx build ARGS DIR` (`None` without buildx).
fn buildx_build(d: &Daemon, dir: &Path, args: &[&str]) -> Option<Run> {
    if !d.cli_plugin("docker-buildx") {
        return None;
    }
    let r = d
        .buildkit_cmd(&[&["buildx", "build"], args].concat())
        .arg(dir)
        .stdin(Stdio::null())
        .run();
    Some(r)
}

#[test]
fn arm64_builds_through_binfmt_legacy_and_buildx() {
    require_root!();
    if let Some(why) = missing() {
        berth_testkit::guard::skipped(&why);
        return;
    }
    let Some(arm64) = arm64_busybox() else {
        berth_testkit::guard::skipped(
            "no arm64 busybox (apt-get download busybox-static:arm64 failed)",
        );
        return;
    };
    let with_f = match Handler::register("linux/arm64", QEMU_AARCH64, "F") {
        Ok(h) => h,
        Err(why) => {
            berth_testkit::guard::skipped(&format!("cannot register a binfmt_misc handler: {why}"));
            return;
        }
    };
    let reg = DockerRegistry::start();
    let base = push_multi(&reg, &arm64);
    let d = Daemon::new();
    let df = format!(
        "FROM {base}\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /targetarch\nCMD [\"cat\", \"/arch\", \"/targetarch\"]\n"
    );
    let ctx = dockerfile_context(&df);
    // The legacy builder: the arm64 manifest of the index, RUN through qemu.
    let r = d
        .classic_build(
            ctx.path(),
            &["--platform", "linux/arm64", "-t", "plat:legacy"],
        )
        .ok();
    r.stdout_contains("Successfully tagged");
    assert_eq!(
        d.inspect("{{.Architecture}} {{.Os}}", "plat:legacy").trim(),
        "arm64 linux"
    );
    let out = d.docker(&["run", "--rm", "plat:legacy"]).ok().stdout;
    assert_eq!(out, "aarch64\narm64\n");
    // The base image's name now holds its arm64 image (as dockerd's classic store); a
    // build for the host's platform pulls the host's again.
    let r = d
        .classic_build(
            ctx.path(),
            &["--platform", "linux/amd64", "-t", "plat:host"],
        )
        .ok();
    r.stdout_contains("Successfully tagged");
    let h = Platform::host();
    assert_eq!(
        d.inspect("{{.Architecture}}", "plat:host").trim(),
        h.architecture
    );
    let out = d.docker(&["run", "--rm", "plat:host"]).ok().stdout;
    assert_eq!(
        out,
        format!("{}\n{}\n", std::env::consts::ARCH, h.architecture)
    );
    // FROM scratch for arm64: the config says so, nothing runs.
    let sctx = temp_context(&[
        (
            "Dockerfile",
            "FROM scratch\nARG TARGETPLATFORM\nLABEL t=$TARGETPLATFORM\nCOPY f /f\n",
        ),
        ("f", "x"),
    ]);
    d.classic_build(
        sctx.path(),
        &["--platform", "linux/arm64/v8", "-t", "plat:scratch"],
    )
    .ok();
    assert_eq!(
        d.inspect("{{.Architecture}} {{.Config.Labels.t}}", "plat:scratch")
            .trim(),
        "arm64 linux/arm64"
    );
    // Several platforms at once: the classic builder says how to build them.
    let r = d.classic_build(
        ctx.path(),
        &["--platform", "linux/amd64,linux/arm64", "-t", "plat:x"],
    );
    r.fails_with("one platform per build");
    // buildx: the same through BuildKit's API (RUN runs again: another command).
    if let Some(r) = buildx_build(
        &d,
        ctx.path(),
        &[
            "--platform",
            "linux/arm64",
            "--build-arg",
            "X=bk",
            "--no-cache",
            "--progress=plain",
            "-t",
            "plat:bk",
        ],
    ) {
        let r = r.ok();
        r.stderr_contains("naming to docker.io/library/plat:bk");
        assert_eq!(d.inspect("{{.Architecture}}", "plat:bk").trim(), "arm64");
        let out = d.docker(&["run", "--rm", "plat:bk"]).ok().stdout;
        assert_eq!(out, "aarch64\narm64\n");
        multi_platform_exports(&d, &reg, ctx.path());
    } else {
        berth_testkit::guard::skipped("buildx not installed: its half of this test");
    }
    // A handler without the F flag: the kernel looks for its interpreter in the container,
    // where the step gets it bound (and the mount point is not in the image).
    drop(with_f);
    let without_f = Handler::register("linux/arm64", QEMU_AARCH64, "").unwrap();
    let nctx = temp_context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN uname -m > /arch-nof\n"),
    )]);
    let r = d.classic_build(
        nctx.path(),
        &["--platform", "linux/arm64", "-t", "plat:nof"],
    );
    drop(without_f);
    assert!(
        r.code == 0 && r.stdout.contains("Successfully tagged"),
        "{}\n{}\n{}",
        r.stdout,
        r.stderr,
        std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default()
    );
    let id = d.docker(&["create", "plat:nof", "sh"]).ok().stdout;
    let exported = d.docker_cmd(&["export", id.trim()]).output().unwrap();
    assert!(exported.status.success());
    let mut names = Vec::new();
    for e in tar::Archive::new(&exported.stdout[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "arch-nof"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("qemu") || n.starts_with("usr")),
        "{names:?}"
    );
    d.docker(&["rm", id.trim()]).ok();
    finish(d);
}

#[test]
fn without_a_handler_the_error_says_what_to_install() {
    require_root!();
    // s390x: no test registers it; skipped if this host can run it anyway.
    let p = Platform::parse("linux/s390x").unwrap();
    if binfmt::execution(&p).is_ok() {
        berth_testkit::guard::skipped("this host runs s390x programs");
        return;
    }
    let d = Daemon::new();
    let tar = d.path("bb.tar");
    common::busybox_tar(&tar);
    d.docker(&[
        "import",
        "--platform",
        "linux/s390x",
        tar.to_str().unwrap(),
        "bb:s390x",
    ])
    .ok();
    let ctx = dockerfile_context("FROM bb:s390x\nRUN true\n");
    let r = d.classic_build(ctx.path(), &["--platform", "linux/s390x", "-t", "plat:no"]);
    assert_ne!(r.code, 0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("no enabled binfmt_misc handler for s390x executables")
            && all.contains("qemu-user-static")
            && all.contains("line 2"),
        "{all}"
    );
    if let Some(r) = buildx_build(
        &d,
        ctx.path(),
        &["--platform", "linux/s390x", "-t", "plat:no"],
    ) {
        r.fails_with("no enabled binfmt_misc handler for s390x executables");
    }
    // No handler was left behind by the check, and nothing stays mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("berth-binfmt-"), "{mounts}");
    finish(d);
}

/// `--platform HOST,linux/arm64` through buildx: an image index pushed to a registry and
/// exported as an OCI archive, one directory per platform for `type=local`, and a clear
/// error for the image store (one platform per name, as dockerd's classic store).
fn multi_platform_exports(d: &Daemon, reg: &DockerRegistry, ctx: &Path) {
    let h = Platform::host();
    let host = format!("{}/{}", h.os, h.architecture);
    let both = format!("{host},linux/arm64");
    // The builder lists the emulated platform too.
    let i = d.docker(&["buildx", "inspect"]).ok().stdout;
    assert!(i.contains("linux/arm64"), "{i}");
    let r = buildx_build(d, ctx, &["--platform", &both, "-t", "plat:multi"]).unwrap();
    r.fails_with("cannot be exported to the image store");
    // type=local: linux_amd64/ and linux_arm64/, each its platform's root.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    buildx_build(d, ctx, &["--platform", &both, "--output", &dest])
        .unwrap()
        .ok();
    let arch = |p: &str| std::fs::read_to_string(out.path().join(p).join("arch")).unwrap();
    assert_eq!(
        arch(&host.replace('/', "_")),
        format!("{}\n", std::env::consts::ARCH)
    );
    assert_eq!(arch("linux_arm64"), "aarch64\n");
    // type=oci: index.json names one image index of both platforms.
    let file = out.path().join("multi.tar");
    let dest = format!("type=oci,dest={}", file.display());
    buildx_build(
        d,
        ctx,
        &["--platform", &both, "-t", "plat:oci", "--output", &dest],
    )
    .unwrap()
    .ok();
    let mut files = std::collections::HashMap::new();
    for e in tar::Archive::new(std::fs::File::open(&file).unwrap())
        .entries()
        .unwrap()
    {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        files.insert(name, b);
    }
    let top: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let entry = &top["manifests"][0];
    assert_eq!(
        entry["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{top}"
    );
    let digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let index: serde_json::Value =
        serde_json::from_slice(&files[&format!("blobs/sha256/{digest}")]).unwrap();
    let mut archs: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect();
    archs.sort();
    let mut want = vec![h.architecture.clone(), "arm64".to_string()];
    want.sort();
    assert_eq!(archs, want, "{index}");
    // --push: the index in the registry; each platform pulls its own image.
    let name = format!("{}/plat:multi", reg.host());
    buildx_build(d, ctx, &["--platform", &both, "-t", &name, "--push"])
        .unwrap()
        .ok();
    d.docker(&["pull", "--platform", "linux/arm64", &name]).ok();
    assert_eq!(d.inspect("{{.Architecture}}", &name).trim(), "arm64");
    let out = d.docker(&["run", "--rm", &name]).ok().stdout;
    assert_eq!(out, "aarch64\narm64\n");
    d.docker(&["pull", "--platform", &host, &name]).ok();
    assert_eq!(d.inspect("{{.Architecture}}", &name).trim(), h.architecture);
}
