//! Test harness: busybox bundles, shims started as a daemon would start them, and guards that
//! kill every shim and delete every container and cgroup a test made, even on failure.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_shim::client::Client;
pub use berth_testkit::busybox::BUSYBOX;
pub use berth_testkit::{
    alive, require_root, unique_name as unique, wait_for, Bundle, CommandRun, OciEnv,
};
use serde_json::{json, Value};

/// The shim under test: `$BERTH_SHIM` (e.g. a release or static build), or this package's binary.
pub fn shim_bin() -> PathBuf {
    std::env::var_os("BERTH_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth-shim")))
}

/// The workspace's `berth-runtime`: `$BERTH_RUNTIME`, or built next to this test.
pub fn runtime_bin() -> PathBuf {
    berth_testkit::bins::workspace_bin("BERTH_RUNTIME", "berth-runtime", "berth-runtime")
}

/// The shipping build of the shim (static-pie release, see `build-static.sh`): `$BERTH_SHIM`, or
/// built now into its own target directory under this test's (the running `cargo test` holds the
/// lock of its own).
pub fn static_shim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_SHIM") {
        return PathBuf::from(p);
    }
    let dir = berth_testkit::bins::target_dir().join("berth-shim-static");
    berth_testkit::bins::build_static("berth-shim", &dir)
}

/// A [`TestEnv`] and a written bundle running `args` (with a terminal when `tty`) for the
/// container `unique(prefix)`.
pub fn setup(prefix: &str, args: &[&str], tty: bool) -> (TestEnv, String, Bundle) {
    let (env, id) = TestEnv::with_id(prefix);
    let b = env.bundle(&id, args, tty);
    (env, id, b)
}

/// [`setup`] without a terminal, then the shim started as a daemon would.
pub fn started(prefix: &str, args: &[&str]) -> (TestEnv, String, ShimProc) {
    let (env, id, b) = setup(prefix, args, false);
    let shim = env.start_shim(&id, &b, &[]);
    (env, id, shim)
}

/// `sh -c <script>`.
pub fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
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
    /// The log's current file, which must exist.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
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

/// An [`OciEnv`] for the workspace's runtime, plus shims (killed on drop).
pub struct TestEnv(OciEnv);

impl std::ops::Deref for TestEnv {
    type Target = OciEnv;
    fn deref(&self) -> &OciEnv {
        &self.0
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv(OciEnv::new(&runtime_bin(), "berth-shim-test", "runtime"))
    }

    /// A new environment and the container name `unique(prefix)`.
    pub fn with_id(prefix: &str) -> (TestEnv, String) {
        (TestEnv::new(), unique(prefix))
    }

    /// A busybox bundle running `args`, with a unique cgroup (written).
    pub fn bundle(&self, id: &str, args: &[&str], tty: bool) -> Bundle {
        let mut b = self.0.bundle(id, args);
        b.config["process"]["terminal"] = json!(tty);
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
        let mut cmd = Command::new(bin);
        cmd.args(self.shim_args(id, b, extra));
        self.start_shim_cmd(cmd, id)
    }

    /// [`Self::start_shim`] with `stdin` as the shim's standard input.
    pub fn start_shim_stdin(
        &self,
        id: &str,
        b: &Bundle,
        extra: &[&str],
        stdin: std::fs::File,
    ) -> ShimProc {
        let mut cmd = Command::new(shim_bin());
        cmd.args(self.shim_args(id, b, extra)).stdin(stdin);
        self.start_shim_cmd(cmd, id)
    }

    fn start_shim_cmd(&self, mut cmd: Command, id: &str) -> ShimProc {
        let out = cmd.output_ok();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let pid = v["pid"].as_i64().unwrap() as i32;
        self.pids.borrow_mut().push(pid);
        ShimProc {
            id: id.into(),
            pid,
            init_pid: v["init_pid"].as_i64().unwrap() as i32,
            dir: self.shim_dir(id),
            sock: PathBuf::from(v["socket"].as_str().unwrap()),
        }
    }
}

/// True (after printing the skip line) when not root or busybox is missing: the caller
/// returns. (`require_root!(BUSYBOX)` says the same in one line.)
pub fn skip() -> bool {
    berth_testkit::skip_unless_root() || berth_testkit::skip_unless_programs(&[BUSYBOX])
}
