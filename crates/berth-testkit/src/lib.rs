//! Test scaffolding shared by Berth's integration tests (a dev-dependency only):
//!
//! - [`require_root!`], [`require_programs!`], [`require!`]: skip with `skipped: <test>: <why>`;
//! - [`unique_name`], [`unique_id`]: names that parallel tests do not share;
//! - [`Rootfs`]: busybox root file systems as directories or image tars;
//! - [`DockerRegistry`], [`BerthRegistry`]: registries on 127.0.0.1, killed on drop;
//! - [`Daemon`]: a `berthd` on temporary roots with its own bridge, killed and cleaned on drop;
//! - [`OciEnv`]: bundles for `berth-runtime` with a unique cgroup parent, deleted on drop;
//! - [`TestUser`]: an unprivileged user with subordinate id ranges, removed on drop;
//! - [`UserDaemon`]: that user's rootless `berthd`, driven by its `berth` and docker CLIs;
//! - [`LeakGuard`]: fails a test that leaves mounts, cgroups, links, netns or processes;
//! - [`skopeo`]: the independent registry client (`copy`, `inspect --raw`);
//! - [`wait_until`], [`wait_for`], [`free_port`], [`Run`], [`KillOnDrop`], [`HttpServer`].

pub mod bins;
pub mod busybox;
pub mod cgroup;
pub mod daemon;
pub mod guard;
pub mod leak;
pub mod names;
pub mod oci;
pub mod process;
pub mod registry;
pub mod skopeo;
pub mod user;
pub mod user_daemon;

use std::path::{Path, PathBuf};

pub use busybox::{busybox_bytes, Rootfs};
pub use cgroup::{cgroup_mounts, remove_cgroup_tree};
pub use daemon::{bin_dir, cli_plugins, finish, runtime_bin, Daemon};
pub use guard::{is_root, skip_unless, skip_unless_programs, skip_unless_root, skipped};
pub use leak::{Leak, LeakGuard, LeakKind, TempRoot};
pub use names::{unique_id, unique_name};
pub use oci::{Bundle, OciEnv};
pub use process::{
    alive, free_port, kill9, on_pty, run_output, wait_for, wait_until, CommandRun, HttpServer,
    KillOnDrop, Run,
};
pub use registry::{BerthRegistry, BerthRegistryOptions, DockerRegistry};
pub use user::TestUser;
pub use user_daemon::UserDaemon;

/// Writes `files` (path, content) below `dir`, parent directories made (a build context).
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
}

/// A temporary directory holding `files` ([`write_files`]).
pub fn temp_context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), files);
    dir
}

/// A temporary build context holding only `Dockerfile`.
pub fn dockerfile_context(dockerfile: &str) -> tempfile::TempDir {
    temp_context(&[("Dockerfile", dockerfile)])
}

/// The sorted names in a directory (empty when it does not exist).
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(p) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The mount points at or below `root` (deepest first).
pub fn mounts_below(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(cgroup::unescape))
        .filter(|m| m == &root || m.starts_with(&format!("{root}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// Detaches every mount at or below `root`, deepest first.
pub fn unmount_below(root: &Path) {
    for m in mounts_below(root) {
        let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// A temporary directory bound onto itself as a mount of the given propagation (`shared`, or
/// `private` for the failure cases), for mount propagation tests: the host's `/` stays as it
/// is. Every mount at or below it (the test's, and those propagated back from containers) is
/// detached on drop, then the directory removed.
pub struct PropagationDir {
    dir: tempfile::TempDir,
}

impl PropagationDir {
    pub fn new(shared: bool) -> PropagationDir {
        use rustix::mount::{mount_bind, mount_change, MountPropagationFlags};
        let dir = tempfile::Builder::new()
            .prefix("berth-prop-")
            .tempdir()
            .expect("temporary directory");
        let p = dir.path().to_path_buf();
        mount_bind(&p, &p).expect("bind the directory onto itself");
        let me = PropagationDir { dir };
        let flags = if shared {
            MountPropagationFlags::SHARED
        } else {
            MountPropagationFlags::PRIVATE
        };
        mount_change(&p, flags).expect("set the propagation");
        me
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Mounts a tmpfs at `sub` (created) below the directory.
    pub fn mount_tmpfs(&self, sub: &str) -> PathBuf {
        let t = self.path().join(sub);
        std::fs::create_dir_all(&t).expect("mount point");
        rustix::mount::mount(
            "tmpfs",
            &t,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .expect("mount a tmpfs");
        t
    }
}

impl Drop for PropagationDir {
    fn drop(&mut self) {
        unmount_below(self.dir.path());
    }
}
