//! One container's cgroup across all hierarchies.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::error::{CgroupError, Result};
use crate::fsutil::{dirs_below, Files};
use crate::hierarchy::{parse_proc_cgroup, CgroupVersion, Hierarchy};
use crate::stats::Stats;
use crate::{v1, v2};

/// The cgroup directory of one v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    /// Controllers of the hierarchy (`["cpu","cpuacct"]`, `["name=systemd"]`).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The container's cgroup directory in it.
    pub dir: PathBuf,
}

impl V1Dir {
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnifiedDir {
    /// Where the cgroup2 file system is mounted.
    pub mount_point: PathBuf,
    /// The container's cgroup directory in it.
    pub dir: PathBuf,
}

/// What a runtime needs to mount the container's cgroups inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSources {
    /// The host's layout.
    pub version: CgroupVersion,
    /// cgroup v1 hierarchies to bind (empty on pure v2).
    pub v1: Vec<V1MountSource>,
    /// The cgroup v2 directory (pure v2, or the `unified` mount on hybrid hosts).
    pub unified: Option<PathBuf>,
}

/// One cgroup v1 hierarchy to mount in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1MountSource {
    /// Mount option string naming the hierarchy: `cpu,cpuacct`, `memory`, `name=systemd`.
    pub options: String,
    /// Controllers of the hierarchy (for symlinks such as `cpu -> cpu,cpuacct`).
    pub controllers: Vec<String>,
    /// The host mount point's last component, e.g. `cpu,cpuacct` or `systemd`: the name to use
    /// under `/sys/fs/cgroup` in the container.
    pub mount_name: String,
    /// The container's cgroup directory on the host (the bind source).
    pub host_dir: PathBuf,
}

/// One container's cgroup: its directory in every v1 hierarchy and/or in the v2 hierarchy.
///
/// Serialisable, so a runtime can store it in its state and operate on it later from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    version: CgroupVersion,
    /// The normalised cgroups path (absolute paths as given; relative ones resolved per hierarchy).
    path: String,
    v1: Vec<V1Dir>,
    unified: Option<UnifiedDir>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    fake: bool,
}

/// Normalise a cgroups path lexically: drop empty and `.` components, apply `..` without ever
/// leaving the root (as runc's `CleanPath` does). Returns whether it was absolute and the components.
pub(crate) fn clean_path(p: &str) -> Result<(bool, Vec<String>)> {
    if p.contains('\0') {
        return Err(CgroupError::InvalidPath {
            path: p.to_string(),
            reason: "contains a NUL byte".into(),
        });
    }
    let mut comps: Vec<String> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c.to_string()),
        }
    }
    Ok((p.starts_with('/'), comps))
}

fn is_systemd_path(p: &str) -> bool {
    !p.starts_with('/') && p.split(':').count() == 3
}

fn validate_id(id: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(CgroupError::InvalidPath {
            path: id.to_string(),
            reason: format!("container id {reason}"),
        })
    };
    if id.is_empty() {
        return bad("is empty");
    }
    if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return bad("must be a single path component");
    }
    Ok(())
}

fn same_controllers(a: &[String], b: &[String]) -> bool {
    let a: BTreeSet<&str> = a.iter().map(String::as_str).collect();
    let b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
    a == b
}

/// The directory for `comps` in a hierarchy mounted at `mount_point` (showing cgroup `mount_root`).
/// Relative paths are placed below `own` (the caller's cgroup in that hierarchy).
pub(crate) fn resolve_dir(
    mount_point: &Path,
    mount_root: &str,
    own: Option<&str>,
    comps: &[String],
) -> PathBuf {
    let mut dir = mount_point.to_path_buf();
    if let Some(own) = own {
        let (_, own_comps) = clean_path(own).unwrap_or((true, Vec::new()));
        let (_, root_comps) = clean_path(mount_root).unwrap_or((true, Vec::new()));
        let rel: &[String] = if own_comps.starts_with(&root_comps) {
            &own_comps[root_comps.len()..]
        } else {
            &own_comps
        };
        dir.extend(rel);
    }
    dir.extend(comps);
    dir
}

impl Cgroup {
    /// Resolve the container's cgroup directories (nothing is created).
    ///
    /// `cgroups_path` follows the OCI spec: absolute = from each hierarchy's root; relative = below the
    /// calling process's own cgroup (from `/proc/self/cgroup`); `None` or empty = `/berth/<id>`.
    /// The systemd `slice:prefix:name` syntax is refused.
    pub fn new(h: &Hierarchy, cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        let given = cgroups_path.filter(|p| !p.is_empty());
        let raw = match given {
            Some(p) if is_systemd_path(p) => {
                return Err(CgroupError::SystemdPath {
                    path: p.to_string(),
                })
            }
            Some(p) => p.to_string(),
            None => {
                validate_id(id)?;
                format!("/berth/{id}")
            }
        };
        let (absolute, comps) = clean_path(&raw)?;
        if comps.is_empty() {
            return Err(CgroupError::InvalidPath {
                path: raw,
                reason:
                    "resolves to the cgroup the path is relative to, not to a new cgroup below it"
                        .into(),
            });
        }
        let own_entries = if absolute {
            Vec::new()
        } else {
            parse_proc_cgroup(&h.self_cgroup_text()?)
        };
        let own_for = |controllers: &[String]| -> Result<Option<String>> {
            if absolute {
                return Ok(None);
            }
            own_entries
                .iter()
                .find(|e| same_controllers(&e.controllers, controllers))
                .map(|e| Some(e.path.clone()))
                .ok_or_else(|| CgroupError::OwnCgroupNotFound {
                    hierarchy: controllers.join(","),
                    path: PathBuf::from("/proc/self/cgroup"),
                })
        };

        let mut v1 = Vec::new();
        if h.version != CgroupVersion::V2 {
            for m in &h.v1 {
                let own = own_for(&m.controllers)?;
                v1.push(V1Dir {
                    controllers: m.controllers.clone(),
                    mount_point: m.mount_point.clone(),
                    dir: resolve_dir(&m.mount_point, &m.root, own.as_deref(), &comps),
                });
            }
        }
        let unified = match &h.unified {
            Some((mp, root)) if h.version != CgroupVersion::V1 => {
                let own = own_for(&[])?;
                Some(UnifiedDir {
                    mount_point: mp.clone(),
                    dir: resolve_dir(mp, root, own.as_deref(), &comps),
                })
            }
            _ => None,
        };
        let path = if absolute {
            format!("/{}", comps.join("/"))
        } else {
            comps.join("/")
        };
        Ok(Cgroup {
            version: h.version,
            path,
            v1,
            unified,
            fake: h.fake,
        })
    }

    /// Like [`Cgroup::new`], but the cgroup must already exist (in at least its main hierarchy).
    pub fn open_existing(h: &Hierarchy, cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        let cg = Cgroup::new(h, cgroups_path, id)?;
        let main = cg.main_dir().to_path_buf();
        if !main.is_dir() {
            return Err(CgroupError::Read {
                path: main,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(cg)
    }

    pub(crate) fn files(&self) -> Files {
        Files { fake: self.fake }
    }

    /// The host's layout this cgroup was resolved for.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The normalised cgroups path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The directory in the v1 hierarchy holding `controller` (e.g. `memory`, `name=systemd`).
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.has(controller))
            .map(|d| d.dir.as_path())
    }

    /// The v1 directories.
    pub fn v1_dirs(&self) -> &[V1Dir] {
        &self.v1
    }

    /// The cgroup v2 directory (pure v2, or the `unified` mount of a hybrid host).
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    /// Every directory of this cgroup (v1 ones first, then the v2 one).
    pub fn dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.v1.iter().map(|d| d.dir.as_path()).collect();
        if let Some(u) = &self.unified {
            out.push(&u.dir);
        }
        out
    }

    /// The directory used for process listing: v2, or a v1 controller directory.
    fn main_dir(&self) -> &Path {
        if self.version == CgroupVersion::V2 {
            if let Some(u) = &self.unified {
                return &u.dir;
            }
        }
        for c in [
            "pids",
            "memory",
            "devices",
            "freezer",
            "cpu",
            "name=systemd",
        ] {
            if let Some(d) = self.v1_dir(c) {
                return d;
            }
        }
        self.v1
            .first()
            .map(|d| d.dir.as_path())
            .or(self.unified.as_ref().map(|u| u.dir.as_path()))
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// Create the directories (`mkdir -p`) in every hierarchy. On v1, cpuset directories get
    /// `cpuset.cpus`/`cpuset.mems` copied from their parents (otherwise joining them fails with
    /// ENOSPC). On pure v2, every ancestor enables its available controllers in `cgroup.subtree_control`.
    pub fn create(&self) -> Result<()> {
        let files = self.files();
        for d in &self.v1 {
            let levels = dirs_below(&d.mount_point, &d.dir);
            if levels.is_empty() {
                fs::create_dir_all(&d.dir).map_err(|source| CgroupError::Create {
                    path: d.dir.clone(),
                    source,
                })?;
                continue;
            }
            let mut parent = d.mount_point.clone();
            for level in levels {
                files.mkdir(&level, false)?;
                if d.has("cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let cur = files.read_opt(&level, f)?.unwrap_or_default();
                        if cur.trim().is_empty() {
                            let from_parent = files.read_opt(&parent, f)?.unwrap_or_default();
                            if !from_parent.trim().is_empty() {
                                files.write(&level, f, from_parent.trim())?;
                            }
                        }
                    }
                }
                parent = level;
            }
        }
        if let Some(u) = &self.unified {
            let enable = self.version == CgroupVersion::V2;
            let mut levels = vec![u.mount_point.clone()];
            levels.extend(dirs_below(&u.mount_point, &u.dir));
            if levels.len() == 1 {
                fs::create_dir_all(&u.dir).map_err(|source| CgroupError::Create {
                    path: u.dir.clone(),
                    source,
                })?;
            }
            let last = levels.len() - 1;
            for (i, level) in levels.iter().enumerate() {
                if i > 0 {
                    files.mkdir(level, true)?;
                }
                if enable && i < last {
                    v2::enable_controllers(&files, level);
                }
            }
        }
        Ok(())
    }

    /// Apply resource limits (at creation and on `update`).
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        match self.version {
            CgroupVersion::V2 => match &self.unified {
                Some(u) => v2::apply(&self.files(), &u.dir, r),
                None => Ok(()),
            },
            CgroupVersion::V1 | CgroupVersion::Hybrid => v1::apply(self, r),
        }
    }

    /// Move process `pid` into the cgroup in every hierarchy (v1 controllers, `name=systemd`, v2).
    pub fn add_task(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(CgroupError::InvalidValue {
                path: self.main_dir().join("cgroup.procs"),
                value: pid.to_string(),
                reason: "not a process id".into(),
            });
        }
        let files = self.files();
        let value = pid.to_string();
        for d in self.dirs() {
            files.write(d, "cgroup.procs", &value)?;
        }
        Ok(())
    }

    fn freezer_target(&self) -> Result<Freezer<'_>> {
        if self.version != CgroupVersion::V2 {
            if let Some(d) = self.v1_dir("freezer") {
                return Ok(Freezer::V1(d));
            }
        }
        // cgroup.freeze is a core v2 file: it also works on a hybrid host's controller-less mount.
        if let Some(u) = &self.unified {
            return Ok(Freezer::V2(&u.dir));
        }
        Err(CgroupError::ControllerMissing {
            controller: "freezer".into(),
            resource: "freeze".into(),
            value: "FROZEN".into(),
            path: self.main_dir().to_path_buf(),
        })
    }

    /// Freeze every process in the cgroup; returns once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        match self.freezer_target()? {
            Freezer::V1(d) => v1::freeze(&self.files(), d),
            Freezer::V2(d) => v2::freeze(&self.files(), d),
        }
    }

    /// Thaw the cgroup.
    pub fn thaw(&self) -> Result<()> {
        match self.freezer_target()? {
            Freezer::V1(d) => self.files().write(d, "freezer.state", "THAWED"),
            Freezer::V2(d) => self.files().write(d, "cgroup.freeze", "0"),
        }
    }

    /// Whether the cgroup is (completely) frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer_target()? {
            Freezer::V1(d) => Ok(self.files().read(d, "freezer.state")?.trim() == "FROZEN"),
            Freezer::V2(d) => v2::is_frozen(&self.files(), d),
        }
    }

    /// All processes in the cgroup and its descendants, sorted.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        collect_pids(&self.files(), self.main_dir(), &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Resource usage, shaped like runc's `events --stats`.
    pub fn stats(&self) -> Result<Stats> {
        match self.version {
            CgroupVersion::V2 => match &self.unified {
                Some(u) => v2::stats(&self.files(), &u.dir),
                None => Ok(Stats::default()),
            },
            _ => v1::stats(self, true),
        }
    }

    /// The part of [`Cgroup::stats`] Docker's stats API shows (CPU, memory usage and
    /// `memory.stat`, pids, block I/O): fewer files to read on v1, the same on v2.
    pub fn usage_stats(&self) -> Result<Stats> {
        match self.version {
            CgroupVersion::V2 => self.stats(),
            _ => v1::stats(self, false),
        }
    }

    /// How many processes the kernel OOM killer has killed in this cgroup.
    pub fn oom_kill_count(&self) -> Result<u64> {
        let files = self.files();
        let (dir, file) = match (self.version, self.v1_dir("memory"), &self.unified) {
            (CgroupVersion::V2, _, Some(u)) => (u.dir.as_path(), "memory.events"),
            (_, Some(d), _) => (d, "memory.oom_control"),
            _ => {
                return Err(CgroupError::ControllerMissing {
                    controller: "memory".into(),
                    resource: "oom_kill count".into(),
                    value: String::new(),
                    path: self.main_dir().to_path_buf(),
                })
            }
        };
        let text = files.read(dir, file)?;
        Ok(crate::fsutil::flat_keyed_get(&text, "oom_kill").unwrap_or(0))
    }

    /// Remove the cgroup's directories (and any sub-cgroups) in every hierarchy. Missing ones are
    /// fine, so this is idempotent. Keeps going on errors and returns the first one.
    pub fn destroy(&self) -> Result<()> {
        let files = self.files();
        let mut first = None;
        for d in self.dirs() {
            if let Err(e) = files.remove_cgroup_dir(d) {
                tracing::warn!(error = %e, "removing cgroup");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// What to mount inside the container to show it its own cgroups.
    pub fn mount_sources(&self) -> MountSources {
        MountSources {
            version: self.version,
            v1: self
                .v1
                .iter()
                .map(|d| V1MountSource {
                    options: d.controllers.join(","),
                    controllers: d.controllers.clone(),
                    mount_name: d
                        .mount_point
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| d.controllers.join(",")),
                    host_dir: d.dir.clone(),
                })
                .collect(),
            unified: self.unified.as_ref().map(|u| u.dir.clone()),
        }
    }
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

fn collect_pids(files: &Files, dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let Some(text) = files.read_opt(dir, "cgroup.procs")? else {
        return Ok(());
    };
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_pids(files, &e.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(
            clean_path("/a/./b//c").unwrap(),
            (true, vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(clean_path("/../../x").unwrap(), (true, vec!["x".into()]));
        assert_eq!(clean_path("a/../../b").unwrap(), (false, vec!["b".into()]));
        assert!(clean_path("a\0b").is_err());
    }

    #[test]
    fn systemd_syntax() {
        assert!(is_systemd_path("system.slice:docker:abc"));
        assert!(is_systemd_path(":berth:abc"));
        assert!(!is_systemd_path("/a:b:c"));
        assert!(!is_systemd_path("a:b"));
    }

    #[test]
    fn resolve_strips_mount_root() {
        let d = resolve_dir(
            Path::new("/m"),
            "/docker/x",
            Some("/docker/x/sub"),
            &["c".into()],
        );
        assert_eq!(d, Path::new("/m/sub/c"));
        let d = resolve_dir(Path::new("/m"), "/", Some("/user.slice"), &["c".into()]);
        assert_eq!(d, Path::new("/m/user.slice/c"));
        let d = resolve_dir(Path::new("/m"), "/", None, &["a".into(), "b".into()]);
        assert_eq!(d, Path::new("/m/a/b"));
    }
}
