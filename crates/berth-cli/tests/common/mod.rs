//! Shared harness of the `berth` CLI's tests: a temporary data root and Docker config
//! directory, the CLI run against them, and busybox images imported into them.
#![allow(dead_code, unused_imports)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use berth_testkit::busybox::{append as entry, busybox_bytes, BUSYBOX};
pub use berth_testkit::registry::{DOCKER_REGISTRY, PASS, USER};
pub use berth_testkit::{
    list_dir, require, require_programs, require_root, run_output, CommandRun, Rootfs, Run,
};

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");
pub const SKOPEO: &str = "skopeo";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The test image: `/bin/busybox` with sh, echo and ls, `bin/` and `etc/`, plus `extra` files.
pub fn busybox_rootfs(extra: &[(&str, &[u8])]) -> Rootfs {
    Rootfs::bare()
        .dirs(&["bin/", "etc/"])
        .applets(&["sh", "echo", "ls"])
        .files(extra)
}

/// A data root and a Docker config directory in a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("docker-config")
    }

    /// `berth --data-root <root> args…` with this environment's Docker config and none of the
    /// caller's Berth settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BERTH);
        c.env_remove("BERTH_DATA_ROOT")
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_INSECURE_REGISTRIES")
            .env("DOCKER_CONFIG", self.config_dir())
            .arg("--data-root")
            .arg(self.root())
            .args(args);
        c
    }

    pub fn berth(&self, args: &[&str]) -> Run {
        self.cmd(args).stdin(Stdio::null()).run()
    }

    /// With `input` on standard input (written from a thread: the command may exit without
    /// reading it).
    pub fn berth_stdin(&self, args: &[&str], input: &(impl AsRef<[u8]> + ?Sized)) -> Run {
        self.cmd(args).run_with_input(input.as_ref())
    }

    /// Imports `rootfs` (`CMD ["sh"]`) tagged `tag`; returns the image ID.
    pub fn import(&self, rootfs: &Rootfs, tag: Option<&str>) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tar = self.path(&format!("rootfs-{n}.tar"));
        rootfs.write_tar(&tar);
        let mut args = vec!["import", "-c", "CMD [\"sh\"]", tar.to_str().unwrap()];
        args.extend(tag);
        let r = self.berth(&args).ok();
        let id = r.stdout.trim().to_string();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        id
    }

    /// Imports [`busybox_rootfs`] with `extra` files as `tag`; returns the image ID.
    pub fn import_busybox(&self, tag: Option<&str>, extra: &[(&str, &[u8])]) -> String {
        self.import(&busybox_rootfs(extra), tag)
    }

    /// `berth image inspect -f <format> <name>`'s output.
    pub fn inspect(&self, format: &str, name: &str) -> String {
        self.berth(&["image", "inspect", "-f", format, name])
            .ok()
            .stdout
    }

    pub fn blobs(&self) -> Vec<String> {
        list_dir(&self.root().join("blobs/sha256"))
    }

    pub fn snapshots(&self) -> Vec<String> {
        list_dir(&self.root().join("snapshotter/snapshots"))
            .into_iter()
            .filter(|n| !n.starts_with("tmp-"))
            .collect()
    }
}
