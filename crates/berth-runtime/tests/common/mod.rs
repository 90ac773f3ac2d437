//! Test harness: busybox bundles in temporary directories, a runtime with its own `--root`, and
//! guards that remove every container, cgroup and state directory a test made, even on failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub cgroup_parent: String,
    pub ids: std::cell::RefCell<Vec<String>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("berth-rt-test")
            .tempdir()
            .unwrap();
        let root = dir.path().join("state");
        TestEnv {
            root,
            dir,
            cgroup_parent: unique("/berth-test"),
            ids: Default::default(),
        }
    }

    pub fn rt(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(&self.root);
        c
    }

    /// A bundle whose config is runc's default with `args`, no terminal, and a unique cgroup.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Bundle {
        let path = self.dir.path().join(format!("bundle-{id}"));
        std::fs::create_dir_all(&path).unwrap();
        make_rootfs(&path.join("rootfs"));
        let out = Command::new(BIN)
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
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        config["linux"]["cgroupsPath"] = json!(format!("{}/{}", self.cgroup_parent, id));
        self.ids.borrow_mut().push(id.to_string());
        Bundle { path, config }
    }

    /// Runs the runtime with stdout/stderr in files: a created container's init inherits them,
    /// so waiting for pipes to close would wait for the container.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.rt();
        cmd.args(args);
        self.output_of(cmd)
    }

    /// Runs `cmd` (a runtime command) as [`TestEnv::run`] does.
    pub fn output_of(&self, mut cmd: Command) -> Output {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (o, e) = (
            self.dir.path().join(format!("out{n}")),
            self.dir.path().join(format!("err{n}")),
        );
        let status = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&o).unwrap())
            .stderr(std::fs::File::create(&e).unwrap())
            .status()
            .unwrap();
        let out = Output {
            status,
            stdout: std::fs::read(&o).unwrap(),
            stderr: std::fs::read(&e).unwrap(),
        };
        let _ = std::fs::remove_file(o);
        let _ = std::fs::remove_file(e);
        out
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth-runtime {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self, id: &str) -> String {
        let out = self.run(&["state", id]);
        if !out.status.success() {
            return "absent".into();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().unwrap().to_string()
    }

    pub fn pid(&self, id: &str) -> i32 {
        let v: Value = serde_json::from_str(&self.ok(&["state", id])).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    /// The container's cgroup directories on the host (every hierarchy).
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(self.cgroup_parent.trim_start_matches('/')).join(id))
            .collect()
    }
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

impl Drop for TestEnv {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.rt().args(["delete", "--force", id]).output();
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

pub struct Bundle {
    pub path: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn write(&self) -> &Path {
        std::fs::write(
            self.path.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        &self.path
    }

    pub fn p(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// `run` a bundle in the foreground; returns (exit code, stdout, stderr).
pub fn run_fg(env: &TestEnv, b: &Bundle, id: &str) -> (i32, String, String) {
    b.write();
    let out = env.run(&["run", "--bundle", b.p(), id]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
