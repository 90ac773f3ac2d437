//! The cgroup v2 subtree delegated to an unprivileged user (rootless operation).
//!
//! systemd delegates a subtree to a unit with `Delegate=yes` — every user's manager,
//! `user.slice/user-UID.slice/user@UID.service`, gets one — by giving the user the directory
//! and its `cgroup.procs`, `cgroup.subtree_control` and `cgroup.threads`; `cgroup.controllers`
//! lists what the subtree may use. The user's processes run below it (in `init.scope`,
//! `app.slice/…`). [`Hierarchy::delegation`] finds it from the caller's own cgroup (in
//! `/proc/self/cgroup`) by walking up while the user owns those files: the topmost such
//! directory is the delegated root, and cgroups created below it (`<root>/berth/<id>`) are the
//! user's to limit, freeze and move processes into. Only a pure v2 host delegates controllers:
//! on cgroup v1 and hybrid hosts the controllers live in v1 hierarchies no user owns.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::cgroup::{clean_path, resolve_dir};
use crate::hierarchy::{parse_proc_cgroup, CgroupVersion, Hierarchy};

/// A delegated cgroup v2 subtree (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// Its path from the hierarchy's root, e.g. `/user.slice/user-1000.slice/user@1000.service`
    /// (an absolute OCI `cgroupsPath` prefix).
    pub path: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The controllers the subtree may use (its `cgroup.controllers`).
    pub controllers: Vec<String>,
}

impl Delegation {
    /// Whether the subtree may use `controller` (`memory`, `cpu`, `pids`, `io`, `cpuset`).
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The cgroup path `<path>/<name>`: a parent for containers inside the subtree.
    pub fn child(&self, name: &str) -> String {
        format!("{}/{name}", self.path.trim_end_matches('/'))
    }
}

/// The files systemd gives the user of a delegated cgroup (besides the directory).
const DELEGATED_FILES: &[&str] = &["cgroup.procs", "cgroup.subtree_control"];

/// Whether `dir`, and the files a delegation hands over in it, belong to `uid`.
fn owned_by(dir: &Path, uid: u32) -> bool {
    let owner = |p: &Path| std::fs::metadata(p).map(|m| m.uid()).ok();
    owner(dir) == Some(uid)
        && DELEGATED_FILES
            .iter()
            .all(|f| owner(&dir.join(f)) == Some(uid))
}

impl Hierarchy {
    /// The subtree delegated to `uid` that holds the caller's own cgroup, if any (see the
    /// module docs); `None` on cgroup v1 and hybrid hosts, and where the caller's cgroup is
    /// not the user's. `uid` as the caller sees it: inside a user namespace, the user's id
    /// there (rootless berthd's namespace maps the user to 0).
    pub fn delegation(&self, uid: u32) -> Option<Delegation> {
        if self.version != CgroupVersion::V2 {
            return None;
        }
        let (mount_point, mount_root) = self.unified.as_ref()?;
        let text = self.self_cgroup_text().ok()?;
        let own = parse_proc_cgroup(&text)
            .into_iter()
            .find(|e| e.controllers.is_empty())?
            .path;
        let own_dir = resolve_dir(mount_point, mount_root, Some(&own), &[]);
        let (_, comps) = clean_path(own_dir.strip_prefix(mount_point).ok()?.to_str()?).ok()?;
        // The topmost of the own cgroup's ancestors (itself included) that the user owns,
        // below the hierarchy's root (never delegated).
        let mut top = None;
        for depth in (1..=comps.len()).rev() {
            let dir = mount_point.join(comps[..depth].join("/"));
            if !owned_by(&dir, uid) {
                break;
            }
            top = Some(depth);
        }
        let depth = top?;
        let dir = mount_point.join(comps[..depth].join("/"));
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
            .ok()?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Some(Delegation {
            path: format!("/{}", comps[..depth].join("/")),
            dir,
            controllers,
        })
    }
}
