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
//! - [`wait_until`], [`wait_for`], [`free_port`], [`Run`], [`KillOnDrop`].

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
pub mod user;
pub mod user_daemon;

use std::path::Path;

pub use busybox::{busybox_bytes, Rootfs};
pub use cgroup::{cgroup_mounts, remove_cgroup_tree};
pub use daemon::{bin_dir, finish, Daemon};
pub use guard::{is_root, skip_unless, skip_unless_programs, skip_unless_root, skipped};
pub use leak::{Leak, LeakGuard, LeakKind, TempRoot};
pub use names::{unique_id, unique_name};
pub use oci::{Bundle, OciEnv};
pub use process::{
    alive, free_port, kill9, run_output, wait_for, wait_until, CommandRun, KillOnDrop, Run,
};
pub use registry::{BerthRegistry, BerthRegistryOptions, DockerRegistry};
pub use user::TestUser;
pub use user_daemon::UserDaemon;

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
