//! The container's view of its cgroups: what a `cgroup` or `cgroup2` entry of `mounts` becomes.
//!
//! The container must see its own cgroup, never the runtime's or the host's: programs size
//! themselves from these files (the JVM, Go and Node read `memory.limit_in_bytes` or
//! `memory.max`), and a view of the host's tree lists other containers' processes.
//!
//! As runc does it:
//! - cgroup v2 (or a `cgroup2` entry): with a cgroup namespace, a fresh `cgroup2` mount, which
//!   shows the namespace's root, i.e. the container's cgroup; without one, a bind of the
//!   container's cgroup directory (runc binds the whole host tree there).
//! - cgroup v1 and hybrid: a tmpfs holding one directory per hierarchy, named after the host's
//!   mount point (`memory`, `cpu,cpuacct`, `systemd`), each a fresh `cgroup` mount with a cgroup
//!   namespace or a bind of the container's directory in that hierarchy without one; symlinks for
//!   co-mounted controllers (`cpu -> cpu,cpuacct`). On a hybrid host the container's directory in
//!   the controller-less v2 tree appears as `unified` (runc leaves it out; it is the container's
//!   own cgroup, which systemd in a container looks for).
//!
//! A fresh mount that the kernel refuses (a user namespace that does not own the cgroup
//! namespace) falls back to the bind. The directories come from the runtime's
//! [`berth_cgroups::Cgroup`], resolved before the init is forked, not from `/proc/self/cgroup`
//! of the init (which is the runtime's cgroup until the init has been moved).
//!
//! [`plan`] is pure and tested on fake hierarchies; [`apply`] performs a plan in the init.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use berth_cgroups::{CgroupVersion, MountSources};

use crate::mounts::{mount_err, path_err, sys_mount, MountError};
use berth_util::root::{mkdir_all_in_root, open_in_root};

use crate::util::fd_path;

/// One step of showing a container its cgroups. Paths are inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A tmpfs (mode 0755) holding the v1 hierarchies.
    Tmpfs { dest: PathBuf },
    /// A new cgroup file system: in a cgroup namespace it shows the namespace's root. When the
    /// kernel refuses it, `fallback` (the container's directory on the host) is bound instead.
    Fresh {
        dest: PathBuf,
        fstype: &'static str,
        data: Option<String>,
        fallback: Option<PathBuf>,
    },
    /// A bind of the container's cgroup directory on the host.
    Bind { dest: PathBuf, source: PathBuf },
    /// `dest` → `target`, for a controller co-mounted with others (`cpu` → `cpu,cpuacct`).
    Symlink { dest: PathBuf, target: String },
}

/// The steps for a `fstype` (`cgroup` or `cgroup2`) mount at `dest`, for a container whose
/// cgroup is `sources` and that has (`cgroupns`) or has not a cgroup namespace.
pub fn plan(
    sources: &MountSources,
    dest: &Path,
    fstype: &str,
    cgroupns: bool,
) -> Result<Vec<Step>, MountError> {
    if fstype == "cgroup2" || sources.version == CgroupVersion::V2 {
        let unified = sources.unified.clone();
        let step = match (cgroupns, unified) {
            (true, fallback) => Step::Fresh {
                dest: dest.to_path_buf(),
                fstype: "cgroup2",
                data: None,
                fallback,
            },
            (false, Some(source)) => Step::Bind {
                dest: dest.to_path_buf(),
                source,
            },
            (false, None) => {
                return Err(MountError::Cgroup {
                    dest: dest.display().to_string(),
                    message: "the host has no cgroup v2 hierarchy holding the container's \
                              cgroup; add a cgroup namespace or mount \"cgroup\" instead"
                        .into(),
                })
            }
        };
        return Ok(vec![step]);
    }
    let mut steps = vec![Step::Tmpfs {
        dest: dest.to_path_buf(),
    }];
    let mut names: Vec<&str> = Vec::new();
    for h in &sources.v1 {
        if h.mount_name.is_empty() || h.mount_name.contains('/') || h.mount_name == ".." {
            continue;
        }
        let sub = dest.join(&h.mount_name);
        names.push(&h.mount_name);
        steps.push(if cgroupns {
            Step::Fresh {
                dest: sub,
                fstype: "cgroup",
                data: Some(h.options.clone()),
                fallback: Some(h.host_dir.clone()),
            }
        } else {
            Step::Bind {
                dest: sub,
                source: h.host_dir.clone(),
            }
        });
    }
    if let Some(u) = &sources.unified {
        if !names.contains(&"unified") {
            let sub = dest.join("unified");
            names.push("unified");
            steps.push(if cgroupns {
                Step::Fresh {
                    dest: sub,
                    fstype: "cgroup2",
                    data: None,
                    fallback: Some(u.clone()),
                }
            } else {
                Step::Bind {
                    dest: sub,
                    source: u.clone(),
                }
            });
        }
    }
    let mut links = Vec::new();
    for h in &sources.v1 {
        if h.controllers.len() < 2 || !names.contains(&h.mount_name.as_str()) {
            continue;
        }
        for c in &h.controllers {
            if c.starts_with("name=") || names.contains(&c.as_str()) || links.contains(c) {
                continue;
            }
            links.push(c.clone());
            steps.push(Step::Symlink {
                dest: dest.join(c),
                target: h.mount_name.clone(),
            });
        }
    }
    Ok(steps)
}

const SUB_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Performs `steps` below `root` (the rootfs directory descriptor); `flags` are the spec
/// mount's flags (`ro` makes every cgroup mount and the tmpfs read-only).
pub fn apply(root: BorrowedFd<'_>, steps: &[Step], flags: libc::c_ulong) -> Result<(), MountError> {
    let ro = flags & libc::MS_RDONLY != 0;
    let mut tmpfs = None;
    for step in steps {
        match step {
            Step::Tmpfs { dest } => {
                let fd = mkdir_all_in_root(root, dest, 0o755)
                    .map_err(path_err("create cgroup mount point", dest))?;
                sys_mount(
                    Some("tmpfs"),
                    &fd_path(&fd),
                    Some("tmpfs"),
                    SUB_FLAGS,
                    Some("mode=755"),
                )
                .map_err(mount_err("cgroup tmpfs", dest.display()))?;
                tmpfs = Some(dest);
            }
            Step::Fresh {
                dest,
                fstype,
                data,
                fallback,
            } => {
                let fd = mkdir_all_in_root(root, dest, 0o755)
                    .map_err(path_err("create cgroup mount point", dest))?;
                let mflags = (flags | SUB_FLAGS) & !(libc::MS_BIND | libc::MS_REC);
                let res = sys_mount(
                    Some(fstype),
                    &fd_path(&fd),
                    Some(fstype),
                    mflags,
                    data.as_deref(),
                );
                match (res, fallback) {
                    (Ok(()), _) => {}
                    (Err(e), Some(source))
                        if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) =>
                    {
                        tracing::debug!(
                            "{fstype} mount on {} refused ({e}); binding {}",
                            dest.display(),
                            source.display()
                        );
                        bind(root, dest, source, ro)?;
                    }
                    (Err(e), _) => return Err(mount_err(*fstype, dest.display())(e)),
                }
            }
            Step::Bind { dest, source } => {
                mkdir_all_in_root(root, dest, 0o755)
                    .map_err(path_err("create cgroup mount point", dest))?;
                bind(root, dest, source, ro)?;
            }
            Step::Symlink { dest, target } => {
                let parent = dest.parent().unwrap_or(Path::new("/"));
                let name = dest.file_name().unwrap_or_default();
                let pfd = open_in_root(root, parent, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(path_err("open cgroup mount point", parent))?;
                match rustix::fs::symlinkat(target.as_str(), &pfd, name) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(path_err("symlink", dest)(e.into())),
                }
            }
        }
    }
    if let (Some(dest), true) = (tmpfs, ro) {
        let fd =
            open_in_root(root, dest, libc::O_PATH).map_err(path_err("open cgroup mount", dest))?;
        sys_mount(
            None,
            &fd_path(&fd),
            None,
            libc::MS_REMOUNT | libc::MS_RDONLY | SUB_FLAGS,
            Some("mode=755"),
        )
        .map_err(mount_err("cgroup tmpfs remount", dest.display()))?;
    }
    Ok(())
}

/// Binds the container's cgroup directory `source` on `dest` (read-only with `ro`).
fn bind(root: BorrowedFd<'_>, dest: &Path, source: &Path, ro: bool) -> Result<(), MountError> {
    let fd = open_in_root(root, dest, libc::O_PATH)
        .map_err(path_err("open cgroup mount point", dest))?;
    let what = format!("cgroup bind {}", source.display());
    sys_mount(
        Some(&source.to_string_lossy()),
        &fd_path(&fd),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(mount_err(&what, dest.display()))?;
    // Re-open: the target now is the root of the new mount.
    let fd = open_in_root(root, dest, libc::O_PATH)
        .map_err(path_err("open cgroup mount point", dest))?;
    let mut remount = libc::MS_BIND | libc::MS_REMOUNT | SUB_FLAGS;
    if ro {
        remount |= libc::MS_RDONLY;
    }
    sys_mount(None, &fd_path(&fd), None, remount, None).map_err(mount_err(&what, dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cgroups::{Cgroup, Hierarchy};
    use std::os::fd::AsFd;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    /// The plan for `cg`'s cgroup mount at `/sys/fs/cgroup`.
    fn plan_for(cg: &Cgroup, fstype: &str, cgroupns: bool) -> Vec<Step> {
        plan(&cg.mount_sources(), &p("/sys/fs/cgroup"), fstype, cgroupns).unwrap()
    }

    /// A plan that binds `source` on all of `/sys/fs/cgroup`.
    fn bind_all(source: PathBuf) -> Vec<Step> {
        vec![Step::Bind {
            dest: p("/sys/fs/cgroup"),
            source,
        }]
    }

    /// Applies the plan for `cg` (no cgroup namespace) with `flags` under the directory
    /// `root`; returns where the container's `/sys/fs/cgroup` is seen from here.
    fn apply_under(root: &Path, cg: &Cgroup, flags: libc::c_ulong) -> PathBuf {
        let dir = std::fs::File::open(root).unwrap();
        apply(dir.as_fd(), &plan_for(cg, "cgroup", false), flags).unwrap();
        root.join("sys/fs/cgroup")
    }

    /// A container cgroup `/pods/c1` in a fake v2 hierarchy under `t`.
    fn v2_pod_cgroup(t: &Path) -> Cgroup {
        Cgroup::new(&Hierarchy::fake_v2(t), Some("/pods/c1"), "c1").unwrap()
    }

    #[test]
    fn v2_without_cgroupns_binds_the_containers_own_directory() {
        let t = tempfile::tempdir().unwrap();
        let cg = v2_pod_cgroup(t.path());
        assert_eq!(
            plan_for(&cg, "cgroup", false),
            bind_all(t.path().join("pods/c1"))
        );
        // A relative cgroupsPath is below the runtime's own cgroup, never the runtime's itself.
        let h = Hierarchy::fake_v2(t.path()).with_self_cgroup("0::/runtime.slice\n");
        let cg = Cgroup::new(&h, Some("c2"), "c2").unwrap();
        assert_eq!(
            plan_for(&cg, "cgroup2", false),
            bind_all(t.path().join("runtime.slice/c2"))
        );
    }

    #[test]
    fn v2_with_cgroupns_mounts_cgroup2_with_the_bind_as_fallback() {
        let t = tempfile::tempdir().unwrap();
        let cg = v2_pod_cgroup(t.path());
        let steps = plan_for(&cg, "cgroup", true);
        assert_eq!(
            steps,
            vec![Step::Fresh {
                dest: p("/sys/fs/cgroup"),
                fstype: "cgroup2",
                data: None,
                fallback: Some(t.path().join("pods/c1")),
            }]
        );
    }

    #[test]
    fn v1_binds_each_hierarchy_with_links_for_co_mounted_controllers() {
        let t = tempfile::tempdir().unwrap();
        let h = Hierarchy::fake_v1(t.path(), &["cpu,cpuacct", "memory", "pids", "name=systemd"]);
        let cg = Cgroup::new(&h, Some("/berth/c1"), "c1").unwrap();
        let d = p("/sys/fs/cgroup");
        let steps = plan_for(&cg, "cgroup", false);
        let bind = |name: &str| Step::Bind {
            dest: d.join(name),
            source: t.path().join(name).join("berth/c1"),
        };
        assert_eq!(
            steps,
            vec![
                Step::Tmpfs { dest: d.clone() },
                bind("cpu,cpuacct"),
                bind("memory"),
                bind("pids"),
                bind("name=systemd"),
                Step::Symlink {
                    dest: d.join("cpu"),
                    target: "cpu,cpuacct".into()
                },
                Step::Symlink {
                    dest: d.join("cpuacct"),
                    target: "cpu,cpuacct".into()
                },
            ]
        );
        // With a cgroup namespace: fresh mounts of each hierarchy, binds as fallbacks.
        let steps = plan_for(&cg, "cgroup", true);
        assert_eq!(
            steps[2],
            Step::Fresh {
                dest: d.join("memory"),
                fstype: "cgroup",
                data: Some("memory".into()),
                fallback: Some(t.path().join("memory/berth/c1")),
            }
        );
        assert_eq!(steps.len(), 7);
    }

    #[test]
    fn hybrid_shows_the_containers_unified_directory() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().display().to_string();
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchy::from_mountinfo(mountinfo, Some(t.path())).unwrap();
        assert_eq!(h.version(), CgroupVersion::Hybrid);
        let cg = Cgroup::new(&h, Some("/b/c"), "c").unwrap();
        let d = p("/sys/fs/cgroup");
        let steps = plan_for(&cg, "cgroup", false);
        assert_eq!(
            steps,
            vec![
                Step::Tmpfs { dest: d.clone() },
                Step::Bind {
                    dest: d.join("memory"),
                    source: p(&format!("{base}/sys/fs/cgroup/memory/b/c")),
                },
                Step::Bind {
                    dest: d.join("systemd"),
                    source: p(&format!("{base}/sys/fs/cgroup/systemd/b/c")),
                },
                Step::Bind {
                    dest: d.join("unified"),
                    source: p(&format!("{base}/sys/fs/cgroup/unified/b/c")),
                },
            ]
        );
        // A cgroup2 entry on a hybrid host shows the unified directory alone.
        assert_eq!(
            plan_for(&cg, "cgroup2", false),
            bind_all(p(&format!("{base}/sys/fs/cgroup/unified/b/c")))
        );
    }

    /// Runs `f` on a thread of its own in a private mount namespace (slave of the host's): its
    /// mounts vanish with the thread, whatever happens.
    fn in_private_mount_ns(f: impl FnOnce() + Send) {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                sys_mount(None, "/", None, libc::MS_SLAVE | libc::MS_REC, None).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn apply_shows_fake_v1_and_v2_trees_read_only() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        write(&base.join("v2/pods/c1/memory.max"), "67108864\n");
        write(&base.join("v1/cpu,cpuacct/b/c/cpu.shares"), "512\n");
        write(
            &base.join("v1/memory/b/c/memory.limit_in_bytes"),
            "67108864\n",
        );
        std::fs::create_dir_all(base.join("root2")).unwrap();
        std::fs::create_dir_all(base.join("root1")).unwrap();
        let ro = libc::MS_RDONLY | libc::MS_NOSUID;
        in_private_mount_ns(|| {
            // v2 without a cgroup namespace: the container's directory, read-only.
            let cg = v2_pod_cgroup(&base.join("v2"));
            let seen = apply_under(&base.join("root2"), &cg, ro);
            assert_eq!(
                std::fs::read_to_string(seen.join("memory.max")).unwrap(),
                "67108864\n"
            );
            let e = std::fs::write(seen.join("memory.max"), "1").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");

            // v1: a tmpfs of hierarchies, links for co-mounted controllers, all read-only.
            let h = Hierarchy::fake_v1(&base.join("v1"), &["cpu,cpuacct", "memory"]);
            let cg = Cgroup::new(&h, Some("/b/c"), "c").unwrap();
            let seen = apply_under(&base.join("root1"), &cg, ro);
            assert_eq!(
                std::fs::read_link(seen.join("cpu")).unwrap(),
                p("cpu,cpuacct")
            );
            assert_eq!(
                std::fs::read_to_string(seen.join("cpuacct/cpu.shares")).unwrap(),
                "512\n"
            );
            assert_eq!(
                std::fs::read_to_string(seen.join("memory/memory.limit_in_bytes")).unwrap(),
                "67108864\n"
            );
            let e = std::fs::write(seen.join("new"), "x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "tmpfs: {e}");
            let e = std::fs::write(seen.join("memory/memory.limit_in_bytes"), "1").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "bind: {e}");
        });
        // Nothing of it is mounted on the host.
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!host.contains(base.to_str().unwrap()));
    }

    #[test]
    fn this_host_has_cgroup_mount_sources() {
        // Every Linux machine running these tests has at least one cgroup hierarchy.
        let h = Hierarchy::detect().unwrap();
        let cg = Cgroup::new(&h, Some("/berth-plan-test/c"), "c").unwrap();
        let steps = plan_for(&cg, "cgroup", false);
        assert!(
            steps.iter().any(|s| matches!(s, Step::Bind { .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn cgroup2_without_a_v2_hierarchy_or_namespace_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let h = Hierarchy::fake_v1(t.path(), &["memory"]);
        let cg = Cgroup::new(&h, Some("/b/c"), "c").unwrap();
        let err = plan(&cg.mount_sources(), &p("/sys/fs/cgroup"), "cgroup2", false).unwrap_err();
        assert!(err.to_string().contains("no cgroup v2 hierarchy"), "{err}");
        // With a namespace, a fresh cgroup2 mount needs no host directory.
        let steps = plan_for(&cg, "cgroup2", true);
        assert!(matches!(&steps[..], [Step::Fresh { fallback: None, .. }]));
    }
}
