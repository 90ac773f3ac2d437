//! Test harness: busybox bundles, shims started as a daemon would start them, and guards that
//! kill every shim and delete every container and cgroup a test made, even on failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_shim::client::Client;
use serde_json::{json, Value};

/// The shim under test: `$BERTH_SHIM` (e.g. a release or static build), or this package's binary.
pub fn shim_bin() -> PathBuf {
    std::env::var_os("BERTH_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (returns true) when not root or busybox is missing, printing why.
pub fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
        return true;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipped: needs /bin/busybox (Debian busybox-static)");
        return true;
    }
    false
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The workspace's `berth-runtime`: `$BERTH_RUNTIME`, or next to this test's target directory
/// (built with `cargo build -p berth-runtime` when missing).
pub fn runtime_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RUNTIME") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/berth-runtime
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("berth-runtime");
    static BUILD: std::sync::Once = std::sync::Once::new();
    let fallback = dir.parent().unwrap().join("berth-shim-runtime");
    BUILD.call_once(|| {
        if !bin.exists() {
            // `cargo test` holds its target directory's lock: build into another one.
            eprintln!("building berth-runtime (run `cargo build -p berth-runtime` to skip this)");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .args(["build", "-p", "berth-runtime"])
                .env("CARGO_TARGET_DIR", &fallback)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(st.success(), "cargo build -p berth-runtime failed");
        }
    });
    if bin.exists() {
        return bin;
    }
    let bin = fallback.join("debug/berth-runtime");
    assert!(bin.exists(), "no berth-runtime at {}", bin.display());
    bin
}

/// The shipping build of the shim (static-pie release, see `build-static.sh`): `$BERTH_SHIM`, or
/// built now into its own target directory under this test's (the running `cargo test` holds the
/// lock of its own).
pub fn static_shim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_SHIM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    let dir = target.join("berth-shim-static");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "berth-shim",
            "--bin",
            "berth-shim",
            "--target",
        ])
        .arg(&triple)
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(st.success(), "static build of berth-shim failed");
    dir.join(triple).join("release/berth-shim")
}

/// A populated busybox root file system.
pub fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for name in String::from_utf8_lossy(&list.stdout).lines() {
        if name != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(name));
        }
    }
    for d in ["proc", "sys", "dev", "etc", "tmp", "root", "usr"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap()))
        })
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Bundle {
    pub path: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn write(&self) {
        std::fs::write(
            self.path.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }
}

/// A started shim.
pub struct ShimProc {
    pub id: String,
    pub pid: i32,
    pub init_pid: i32,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

impl ShimProc {
    pub fn client(&self) -> Client {
        let c = Client::connect(&self.sock).unwrap();
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }
    /// The log's entries (current file only).
    pub fn log_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub runtime: PathBuf,
    pub root: PathBuf,
    pub cgroup_parent: String,
    pub ids: std::cell::RefCell<Vec<String>>,
    pub shims: std::cell::RefCell<Vec<i32>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("berth-shim-test")
            .tempdir()
            .unwrap();
        TestEnv {
            root: dir.path().join("runtime"),
            runtime: runtime_bin(),
            dir,
            cgroup_parent: unique("/berth-test"),
            ids: Default::default(),
            shims: Default::default(),
        }
    }

    /// A busybox bundle running `args`, with a unique cgroup.
    pub fn bundle(&self, id: &str, args: &[&str], tty: bool) -> Bundle {
        let path = self.dir.path().join(format!("bundle-{id}"));
        std::fs::create_dir_all(&path).unwrap();
        make_rootfs(&path.join("rootfs"));
        let out = Command::new(&self.runtime)
            .arg("spec")
            .arg("--bundle")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(path.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(tty);
        config["process"]["args"] = json!(args);
        config["linux"]["cgroupsPath"] = json!(format!("{}/{}", self.cgroup_parent, id));
        self.ids.borrow_mut().push(id.to_string());
        let b = Bundle { path, config };
        b.write();
        b
    }

    pub fn shim_args(&self, id: &str, b: &Bundle, extra: &[&str]) -> Vec<String> {
        let dir = self.shim_dir(id);
        let mut v: Vec<String> = vec![
            "--id".into(),
            id.into(),
            "--bundle".into(),
            b.path.to_str().unwrap().into(),
            "--state-dir".into(),
            dir.to_str().unwrap().into(),
            "--runtime".into(),
            self.runtime.to_str().unwrap().into(),
            "--runtime-root".into(),
            self.root.to_str().unwrap().into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// The shim's state directory. For tty and exec tests it is longer than a socket address
    /// can hold, so the shim and the client go through `/proc/self/fd/N/shim.sock`.
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        let d = self.dir.path().join(format!("shim-{id}"));
        if id.starts_with("tty") || id.starts_with("exec") {
            d.join("a-long-directory-name-".repeat(5))
        } else {
            d
        }
    }

    /// Starts a shim as a daemon would and waits for its report. `output()` returning at all
    /// shows that the detached shim keeps none of its starter's pipes.
    pub fn start_shim(&self, id: &str, b: &Bundle, extra: &[&str]) -> ShimProc {
        self.start_shim_with(&shim_bin(), id, b, extra)
    }

    pub fn start_shim_with(&self, bin: &Path, id: &str, b: &Bundle, extra: &[&str]) -> ShimProc {
        let out = Command::new(bin)
            .args(self.shim_args(id, b, extra))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth-shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let pid = v["pid"].as_i64().unwrap() as i32;
        self.shims.borrow_mut().push(pid);
        ShimProc {
            id: id.into(),
            pid,
            init_pid: v["init_pid"].as_i64().unwrap() as i32,
            dir: self.shim_dir(id),
            sock: PathBuf::from(v["socket"].as_str().unwrap()),
        }
    }

    pub fn runtime_status(&self, id: &str) -> String {
        let out = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(["state", id])
            .output()
            .unwrap();
        if !out.status.success() {
            return "absent".into();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().unwrap().to_string()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for &pid in self.shims.borrow().iter() {
            if alive(pid) {
                // SAFETY: kill with integer arguments; the pid is a shim this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for id in self.ids.borrow().iter() {
            let _ = Command::new(&self.runtime)
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force", id])
                .output();
        }
        for m in cgroup_mounts() {
            let parent = m.join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(rd) = std::fs::read_dir(&parent) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}
