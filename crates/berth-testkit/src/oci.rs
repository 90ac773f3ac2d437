//! [`OciEnv`]: OCI bundles with a busybox root for `berth-runtime` (or any runc-compatible
//! runtime) in a temporary directory, with the runtime's own `--root` and a unique cgroup
//! parent; every container is deleted and the cgroups removed on drop, then a [`LeakGuard`]
//! checks that nothing stays.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::busybox::Rootfs;
use crate::leak::LeakGuard;
use crate::process::CommandRun;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A bundle directory and its config (written by [`Bundle::write`]).
#[derive(Debug)]
pub struct Bundle {
    pub path: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// Runs `spec` (a runtime's `spec` command with any flags of its own) with `--bundle path`
    /// and loads the config it wrote, with `args` as the process and no terminal.
    pub fn spec(mut spec: Command, path: PathBuf, args: &[&str]) -> Bundle {
        spec.arg("--bundle").arg(&path).output_ok();
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(path.join("config.json")).unwrap()).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        Bundle { path, config }
    }

    /// Writes `config.json`; returns the bundle's path.
    pub fn write(&self) -> &Path {
        std::fs::write(
            self.path.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
        &self.path
    }

    /// The bundle's path as text (for command lines).
    pub fn p(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// See the module docs.
pub struct OciEnv {
    pub dir: tempfile::TempDir,
    /// The runtime binary.
    pub runtime: PathBuf,
    /// The runtime's `--root` (its state directory).
    pub root: PathBuf,
    pub cgroup_parent: String,
    /// Containers to delete on drop.
    pub ids: RefCell<Vec<String>>,
    /// More processes to kill on drop (e.g. shims).
    pub pids: RefCell<Vec<i32>>,
    pub leaks: LeakGuard,
}

impl OciEnv {
    /// A temporary directory named `<prefix>…`, the state root `<dir>/<state>`.
    pub fn new(runtime: &Path, prefix: &str, state: &str) -> OciEnv {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let cgroup_parent = format!("/{}", crate::unique_name("berth-test"));
        OciEnv {
            leaks: LeakGuard::new([
                dir.path().display().to_string(),
                cgroup_parent[1..].to_string(),
            ]),
            root: dir.path().join(state),
            runtime: runtime.to_path_buf(),
            dir,
            cgroup_parent,
            ids: Default::default(),
            pids: Default::default(),
        }
    }

    /// A new directory `name` in the temporary directory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// The runtime with `--root`.
    pub fn rt(&self) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(&self.root);
        c
    }

    /// A bundle whose config is the runtime's `spec` with `args`, no terminal, and the cgroup
    /// `<cgroup parent>/<id>`, with a busybox root; the container is deleted on drop.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Bundle {
        let b = self.spec_bundle(id, args);
        Rootfs::busybox().write_dir(&b.path.join("rootfs"));
        b
    }

    /// [`OciEnv::bundle`] with an empty `rootfs` directory (to mount or fill).
    pub fn spec_bundle(&self, id: &str, args: &[&str]) -> Bundle {
        let path = self.dir.path().join(format!("bundle-{id}"));
        std::fs::create_dir_all(path.join("rootfs")).unwrap();
        let mut spec = Command::new(&self.runtime);
        spec.arg("spec");
        let mut b = Bundle::spec(spec, path, args);
        b.config["linux"]["cgroupsPath"] = json!(format!("{}/{}", self.cgroup_parent, id));
        self.ids.borrow_mut().push(id.to_string());
        b
    }

    /// Runs the runtime with stdout/stderr in files: a created container's init inherits them,
    /// so waiting for pipes to close would wait for the container.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.rt();
        cmd.args(args);
        self.output_of(cmd)
    }

    /// Runs `cmd` (a runtime command) as [`OciEnv::run`] does.
    pub fn output_of(&self, cmd: Command) -> Output {
        output_through_files(cmd, self.dir.path())
    }

    /// [`OciEnv::run`], asserting success; its standard output.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "runtime {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes the bundle's config and `create`s the container `id`.
    #[track_caller]
    pub fn create(&self, b: &Bundle, id: &str) {
        b.write();
        self.ok(&["create", "--bundle", b.p(), id]);
    }

    /// Writes the bundle's config and `run --detach`es the container `id`.
    #[track_caller]
    pub fn detach(&self, b: &Bundle, id: &str) {
        b.write();
        self.ok(&["run", "--detach", "--bundle", b.p(), id]);
    }

    /// The container's status from `state`, or `absent`.
    pub fn status(&self, id: &str) -> String {
        let out = self.run(&["state", id]);
        if !out.status.success() {
            return "absent".into();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().unwrap().to_string()
    }

    /// The container's init pid from `state`.
    pub fn pid(&self, id: &str) -> i32 {
        let v: Value = serde_json::from_str(&self.ok(&["state", id])).unwrap();
        v["pid"].as_i64().unwrap() as i32
    }

    /// The container's cgroup directories on the host (every hierarchy).
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        crate::cgroup_mounts()
            .into_iter()
            .map(|m| m.join(self.cgroup_parent.trim_start_matches('/')).join(id))
            .collect()
    }

    /// Asserts that the container left no cgroup directory.
    #[track_caller]
    pub fn assert_no_cgroups(&self, id: &str) {
        for d in self.cgroup_dirs(id) {
            assert!(!d.exists(), "cgroup {} left behind", d.display());
        }
    }
}

impl Drop for OciEnv {
    fn drop(&mut self) {
        for &pid in self.pids.borrow().iter() {
            if crate::alive(pid) {
                crate::kill9(pid);
            }
        }
        for id in self.ids.borrow().iter() {
            let _ = self.rt().args(["delete", "--force", id]).output();
        }
        crate::remove_cgroup_tree(&self.cgroup_parent);
        // The leak guard (a field) checks after this.
    }
}

/// Runs `cmd` with no stdin and its output through files in `dir` (read, then removed), not
/// pipes: a runtime's detached children (a container's init) would hold a pipe open.
pub fn output_through_files(mut cmd: Command, dir: &std::path::Path) -> Output {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let (o, e) = (
        dir.join(format!("out{n}-{}", std::process::id())),
        dir.join(format!("err{n}-{}", std::process::id())),
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
