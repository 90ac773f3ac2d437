//! The overlayfs driver and overlay mounts (mount(2) options, or the new mount API with
//! `lowerdir+` for stacks too long for one option page).

use super::*;

/// The overlayfs snapshotter.
pub struct OverlaySnapshotter {
    base: Base,
}

impl OverlaySnapshotter {
    /// Opens (creating) a snapshotter rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Ok(Self {
            base: Base::open(
                root,
                Layout {
                    driver: "overlay",
                    layer_dir: "diff",
                    mode: ApplyMode::Overlay,
                },
            )?,
        })
    }

    /// Whether overlayfs works under `dir` (a real test mount, as root).
    pub fn supported(dir: &Path) -> bool {
        let Ok(t) = tempfile::Builder::new()
            .prefix("overlay-check-")
            .tempdir_in(dir)
        else {
            return false;
        };
        let p = t.path();
        let (l, u, w, m) = (p.join("l"), p.join("u"), p.join("w"), p.join("m"));
        for d in [&l, &u, &w, &m] {
            if fs::create_dir(d).is_err() {
                return false;
            }
        }
        if mount_overlay(&[l], Some((&u, &w)), &m).is_err() {
            return false;
        }
        let _ = unmount(&m);
        true
    }

    /// The `diff` directory of a snapshot.
    pub fn diff_dir(&self, chain_id: &Digest) -> PathBuf {
        self.base.layer_dir(chain_id)
    }

    /// The lower directories of a chain, top first.
    pub fn lower_dirs(&self, top: &Digest) -> Result<Vec<PathBuf>, SnapshotError> {
        Ok(self
            .base
            .chain(top)?
            .iter()
            .map(|s| self.diff_dir(&s.chain_id))
            .collect())
    }

    /// Mounts the image's layers read-only at `target` (overlayfs without an upper
    /// directory; some kernels require at least two layers for that).
    pub fn mount_readonly(&self, top: &Digest, target: &Path) -> Result<(), SnapshotError> {
        let lowers = self.lower_dirs(top)?;
        mount_overlay(&lowers, None, target)
    }

    /// A layer holds that layer alone: its directory starts empty.
    fn prepare_layer_dir(&self, _parent: Option<&Digest>, t: &Path) -> Result<(), SnapshotError> {
        fs::create_dir(t).map_err(io_at("create directory", t))
    }

    fn fill_container_dir(
        &self,
        _parent: Option<&Digest>,
        dir: &Path,
    ) -> Result<(), SnapshotError> {
        for sub in ["upper", "work", "lower-empty"] {
            let d = dir.join(sub);
            fs::create_dir(&d).map_err(io_at("create directory", &d))?;
        }
        Ok(())
    }
}

impl Snapshotter for OverlaySnapshotter {
    base_methods!();

    fn mount_container(&self, id: &str, target: &Path) -> Result<(), SnapshotError> {
        self.mount_container_transient(id, target, false)
    }

    fn mount_container_transient(
        &self,
        id: &str,
        target: &Path,
        transient: bool,
    ) -> Result<(), SnapshotError> {
        let c = self.base.container(id)?;
        let dir = self.base.container_dir(id);
        let lowers = match &c.parent {
            Some(p) => self.lower_dirs(p)?,
            None => vec![dir.join("lower-empty")],
        };
        let work = dir.join("work");
        // A `volatile` mount leaves this marker behind, and overlayfs refuses to mount the
        // upper again while it exists. Only a transient (`--rm`) container is mounted volatile,
        // and it is removed when it stops; what is left is a marker of a clean earlier mount
        // (`docker cp` from the stopped container), so it goes.
        let marker = work.join("work/incompat/volatile");
        if marker.exists() {
            let _ = fs::remove_dir_all(&marker);
        }
        mount_overlay_with(
            &lowers,
            Some((&dir.join("upper"), &work)),
            target,
            transient,
        )
    }

    fn container_upper(&self, id: &str) -> Option<PathBuf> {
        self.base.container(id).ok()?;
        Some(self.base.container_dir(id).join("upper"))
    }

    fn container_work(&self, id: &str) -> Option<PathBuf> {
        self.base.container(id).ok()?;
        Some(self.base.container_dir(id).join("work"))
    }

    fn container_lowers(&self, id: &str) -> Result<Vec<PathBuf>, SnapshotError> {
        let c = self.base.container(id)?;
        match &c.parent {
            Some(p) => self.lower_dirs(p),
            None => Ok(Vec::new()),
        }
    }

    fn overlay_lowers(&self, top: &Digest) -> Option<Result<Vec<PathBuf>, SnapshotError>> {
        Some(self.lower_dirs(top))
    }

    fn commit_upper_dir(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        size: u64,
        dir: &Path,
    ) -> Result<Option<SnapshotInfo>, SnapshotError> {
        self.base
            .commit_new(parent, diff_id, |tmp| {
                fs::rename(dir, tmp.join(self.base.layout.layer_dir))
                    .map_err(io_at("rename", dir))?;
                Ok((size, None))
            })
            .map(Some)
    }
}

/// Mounts overlayfs at `target` with `lowers` (top first) and an optional `(upper, work)`.
///
/// Uses the new mount API with one `lowerdir+` per layer (no length limit, no escaping;
/// Linux 6.8+), falling back to a single mount(2) option string when `fsopen` or `lowerdir+`
/// is unavailable.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SnapshotError> {
    mount_overlay_with(lowers, upper_work, target, false)
}

/// [`mount_overlay`] with the `volatile` option: the overlay never syncs its upper file
/// system (unmounting it does not wait for a `syncfs` of the whole host file system). For
/// short-lived mounts whose upper directory is archived right after (build steps); after a
/// crash such an upper directory must be thrown away.
pub fn mount_overlay_volatile(
    lowers: &[PathBuf],
    upper_work: (&Path, &Path),
    target: &Path,
) -> Result<(), SnapshotError> {
    mount_overlay_with(lowers, Some(upper_work), target, true)
}

/// [`mount_overlay`], with overlayfs' `volatile` option when asked (and the kernel has it).
pub(super) fn mount_overlay_with(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<(), SnapshotError> {
    let volatile = volatile && upper_work.is_some();
    match mount_overlay_fsopen(lowers, upper_work, target, volatile) {
        Ok(()) => Ok(()),
        Err(Fallback::No(e)) => Err(SnapshotError::Mount {
            target: target.to_path_buf(),
            source: e,
        }),
        Err(Fallback::Legacy) => mount_overlay_legacy_opts(lowers, upper_work, target, volatile),
    }
}

/// Mounts overlayfs with a single mount(2) option string (`lowerdir=a:b:c,...`), which must
/// fit in one page: [`SnapshotError::TooManyLayers`] otherwise.
pub fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SnapshotError> {
    mount_overlay_legacy_opts(lowers, upper_work, target, false)
}

pub(super) fn mount_overlay_legacy_opts(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<(), SnapshotError> {
    let merr = |source: io::Error| SnapshotError::Mount {
        target: target.to_path_buf(),
        source,
    };

    let mut data = String::from("lowerdir=");
    let mut first = true;
    for l in lowers {
        let s = l
            .to_str()
            .ok_or_else(|| merr(io::Error::other("non-UTF-8 layer path")))?;
        if s.contains([',', ':', '\\']) {
            return Err(merr(io::Error::other(format!(
                "layer path {s:?} needs escaping"
            ))));
        }
        if !first {
            data.push(':');
        }
        first = false;
        data.push_str(s);
    }
    if let Some((u, w)) = upper_work {
        for p in [u, w] {
            if p.to_str().is_none_or(|s| s.contains([',', ':', '\\'])) {
                return Err(merr(io::Error::other(format!(
                    "path {} needs escaping",
                    p.display()
                ))));
            }
        }
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
        if volatile {
            data.push_str(",volatile");
        }
    }
    if berth_util::userns::running_in_userns() {
        data.push_str(",userxattr");
    }
    if data.len() >= MOUNT_DATA_MAX {
        return Err(SnapshotError::TooManyLayers {
            layers: lowers.len(),
        });
    }
    let c = std::ffi::CString::new(data).map_err(|e| merr(io::Error::other(e)))?;
    match rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        c.as_c_str(),
    ) {
        // Kernels before 5.10 do not know `volatile`: then the mount is simply durable.
        Err(Errno::INVAL) if volatile => {
            mount_overlay_legacy_opts(lowers, upper_work, target, false)
        }
        r => r.map_err(|e| merr(e.into())),
    }
}

/// mount(2) copies at most one page of option data; 4096 is the smallest page size.
pub(super) const MOUNT_DATA_MAX: usize = 4096;

pub(super) enum Fallback {
    Legacy,
    No(io::Error),
}

pub(super) fn mount_overlay_fsopen(
    lowers: &[PathBuf],
    upper_work: Option<(&Path, &Path)>,
    target: &Path,
    volatile: bool,
) -> Result<(), Fallback> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
        FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fsfd = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) => return Err(Fallback::Legacy),
        Err(e) => return Err(Fallback::No(e.into())),
    };
    for (i, l) in lowers.iter().enumerate() {
        match fsconfig_set_string(&fsfd, "lowerdir+", l.as_path()) {
            Ok(()) => {}
            // Kernels before 6.8 do not know lowerdir+.
            Err(Errno::INVAL) if i == 0 => return Err(Fallback::Legacy),
            Err(e) => {
                return Err(Fallback::No(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("lowerdir+ {}: {e}", l.display()),
                )))
            }
        }
    }
    if let Some((u, w)) = upper_work {
        fsconfig_set_string(&fsfd, "upperdir", u).map_err(|e| Fallback::No(e.into()))?;
        fsconfig_set_string(&fsfd, "workdir", w).map_err(|e| Fallback::No(e.into()))?;
        if volatile {
            // Kernels before 5.10 do not know it: then the mount is simply durable.
            let _ = fsconfig_set_flag(&fsfd, "volatile");
        }
    }
    if berth_util::userns::running_in_userns() {
        // In a user namespace (rootless berthd) overlayfs keeps its markers in `user.*`
        // attributes (see `layer::overlay_opaque_xattr`).
        fsconfig_set_flag(&fsfd, "userxattr").map_err(|e| Fallback::No(e.into()))?;
    }
    fsconfig_create(&fsfd).map_err(|e| Fallback::No(e.into()))?;
    let mnt = fsmount(
        &fsfd,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| Fallback::No(e.into()))?;
    move_mount(
        &mnt,
        "",
        rfs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| Fallback::No(e.into()))
}

/// Unmounts `target` (lazily if it is busy).
pub fn unmount(target: &Path) -> io::Result<()> {
    use rustix::mount::UnmountFlags;
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::BUSY) => {
            rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}
