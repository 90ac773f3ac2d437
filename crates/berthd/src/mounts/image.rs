//! `image` mounts (`--mount type=image,source=IMG,target=/p[,image-subpath=…]`, API 1.48+): a
//! read-only view of an image's file system, as dockerd 28 makes it with its graph drivers.
//!
//! At create the image is resolved (404 `No such image` as for the container's own image)
//! and a writable snapshot of it is prepared, `<id>-image-<n>` (dockerd's
//! `CreateLayerFromImage`, a layer named after the container): it keeps the image's layers
//! in use, so a forced `rmi` deletes the image but not them and the container still starts.
//! A plain `rmi` of the image's last reference is refused while a container mounts it
//! (`images::remove`). At start the snapshot is mounted under the container's run-time
//! directory (`<exec-root>/containers/<id>/images/<n>`, made read-only) and bound read-only
//! on the target, or only its `ImageOptions.Subpath`, resolved inside it as a volume's. The
//! mounts go when the container stops, the snapshots when it is removed.

use std::path::PathBuf;

use berth_image::snapshot::SnapshotError;

use super::{MountPoint, Mounts};
use crate::error::{EngineError, Result};

impl Mounts {
    /// The snapshot of a container's `n`th image mount.
    fn image_snapshot(id: &str, n: usize) -> String {
        format!("{id}-image-{n}")
    }

    /// Where a container's image mount (its snapshot `snapshot`) is mounted while it runs.
    pub(super) fn image_dir(&self, id: &str, snapshot: &str) -> PathBuf {
        self.exec_root
            .join("containers")
            .join(id)
            .join("images")
            .join(snapshot)
    }

    /// At create: resolves the image of each image mount and prepares its snapshot (numbered
    /// in order from 0, so [`Mounts::remove_image_snapshots`] finds them without a record).
    /// On error the snapshots prepared so far are removed.
    pub(super) fn prepare_images(
        &self,
        id: &str,
        points: &mut [MountPoint],
        volatile: bool,
    ) -> Result<()> {
        if !points.iter().any(|m| m.typ == "image") {
            return Ok(());
        }
        let res = (|| -> Result<()> {
            let sn = self.images.snapshotter()?;
            let images = points.iter_mut().filter(|m| m.typ == "image");
            for (n, m) in images.enumerate() {
                let r = crate::images::resolve(&self.images, &m.name)?;
                let top = r.image.chain_ids().last().cloned();
                let snap = Self::image_snapshot(id, n);
                if volatile {
                    sn.prepare_container_volatile(&snap, top.as_ref())?;
                } else {
                    sn.prepare_container(&snap, top.as_ref())?;
                }
                m.image = r.image.id.to_string();
                m.snapshot = snap;
            }
            Ok(())
        })();
        if res.is_err() {
            self.remove_image_snapshots(id);
        }
        res
    }

    /// At start: mounts an image mount's snapshot (read-only) and returns the source to
    /// bind: the mount, or its subpath staged as a volume's (staging point `stage`).
    pub(super) fn mount_image(&self, id: &str, m: &MountPoint, stage: usize) -> Result<PathBuf> {
        let sn = self.images.snapshotter()?;
        let dir = self.image_dir(id, &m.snapshot);
        std::fs::create_dir_all(&dir).map_err(EngineError::io("creating", &dir))?;
        // Nothing is ever written through it: no sync of the upper directory.
        sn.mount_container_transient(&m.snapshot, &dir, true)?;
        let flags = rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY;
        rustix::mount::mount_remount(&dir, flags, "")
            .map_err(|e| EngineError::io("making read-only", &dir)(e.into()))?;
        if m.subpath.is_empty() {
            return Ok(dir);
        }
        self.stage_subpath(id, m, &dir, stage)
    }

    /// Unmounts a container's image mounts (their subpaths' staging mounts first).
    pub(super) fn unmount_images(&self, id: &str) {
        let dir = self.exec_root.join("containers").join(id).join("images");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            match berth_image::snapshot::unmount(&p) {
                // EINVAL: not mounted (a start that failed before the mount).
                Err(err) if err.raw_os_error() != Some(libc::EINVAL) => {
                    tracing::warn!("unmounting the image mount {}: {err}", p.display());
                    continue;
                }
                _ => {}
            }
            let _ = std::fs::remove_dir(&p);
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// Removes a container's image mount snapshots (`<id>-image-0`, `-1`, … up to the first
    /// missing one).
    pub(super) fn remove_image_snapshots(&self, id: &str) {
        let Ok(sn) = self.images.snapshotter() else {
            return;
        };
        for n in 0.. {
            let snap = Self::image_snapshot(id, n);
            match sn.remove_container(&snap) {
                Ok(()) => {}
                Err(SnapshotError::ContainerNotFound(_)) => break,
                Err(e) => tracing::warn!("removing the image mount snapshot {snap}: {e}"),
            }
        }
    }
}
