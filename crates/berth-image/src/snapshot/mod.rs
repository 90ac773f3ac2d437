//! Layer snapshots and container root filesystems.
//!
//! Two drivers behind the [`Snapshotter`] trait:
//!
//! - [`OverlaySnapshotter`]: one directory per chain ID, `<root>/snapshots/<chain-hex>/diff`,
//!   holding that layer alone, unpacked in [`ApplyMode::Overlay`] (whiteouts as 0:0 devices,
//!   opaque directories as xattrs). A container gets `upper/` and `work/` directories and an
//!   overlayfs mount with `lowerdir` = the chain's `diff` directories, top first. Stacks too
//!   long for one mount(2) option page use the new mount API (`fsopen` + `lowerdir+`,
//!   Linux 6.8+).
//! - [`CopySnapshotter`]: for when overlayfs is unavailable. Each chain ID holds the full,
//!   flattened file system (`<root>/snapshots/<chain-hex>/fs`, a copy of the parent plus the
//!   layer applied in [`ApplyMode::Flat`]); a container's rootfs is a full copy of it.
//!
//! Layout and crash safety: a layer is unpacked into `snapshots/tmp-*`, its metadata written,
//! and only then renamed to its chain ID: a snapshot directory that exists is complete as far
//! as any process can see. Leftover `tmp-*` directories are removed when the snapshotter is
//! opened. Making the files durable is deferred (an image is usable as soon as its layers are
//! unpacked, not after a flush of the whole disk): a new snapshot's metadata carries the
//! kernel's boot ID (`unsynced`), a background thread runs `syncfs` and then clears the mark.
//! A process crash loses nothing (the page cache survives it; the next open syncs what is
//! still marked). After a reboot, a snapshot still marked may have been torn by the power
//! loss: opening drops it, and the image store unpacks it again from its blob, which was made
//! durable before the image was recorded (see [`Snapshotter::dropped_on_open`]). A container's metadata (naming its
//! parent) is written durably before the container's directories are used, and removing a
//! snapshot checks, under the same lock, every container's metadata and child snapshot, so a
//! snapshot is never removed while in use, with one metadata write per container (the parent's
//! own metadata is not rewritten; its `users` list only matters for stores of older versions).
//!
//! Modules: `base` (layout, commits, removal checks, deferred sync), `overlay` (the overlay
//! driver and mounts), `copy` (the copying driver and tree copies).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil;
use crate::fsutil::PathIoError;
use crate::layer::{self, ApplyMode, ApplyOptions, LayerError};

/// Errors from snapshotters.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// I/O on a path.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// Applying a layer failed.
    #[error("applying layer: {0}")]
    Layer(#[from] LayerError),
    /// The unpacked layer's DiffID is not the expected one.
    #[error("layer DiffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// From the image config.
        expected: Digest,
        /// Computed while unpacking.
        actual: Digest,
    },
    /// No such snapshot.
    #[error("snapshot {0} not found")]
    NotFound(Digest),
    /// No such container snapshot.
    #[error("container snapshot {0:?} not found")]
    ContainerNotFound(String),
    /// A container snapshot with this ID exists already.
    #[error("container snapshot {0:?} already exists")]
    ContainerExists(String),
    /// An invalid container ID.
    #[error("invalid container snapshot id {0:?}")]
    InvalidId(String),
    /// The snapshot is still used by containers or by other snapshots.
    #[error("snapshot {chain_id} is in use by {users}")]
    InUse {
        /// The snapshot.
        chain_id: Digest,
        /// Who uses it.
        users: String,
    },
    /// Mounting failed.
    #[error("mounting {target}: {source}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The lower directories do not fit a mount(2) option page and the new mount API is
    /// unavailable.
    #[error("{layers} layers do not fit in one mount option string and the new mount API (lowerdir+) is unavailable")]
    TooManyLayers {
        /// How many layers.
        layers: usize,
    },
}

io_error_fn!(io_at, SnapshotError);

/// Metadata of a committed layer snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The chain ID (the snapshot's name).
    pub chain_id: Digest,
    /// The parent chain ID.
    pub parent: Option<Digest>,
    /// The layer's DiffID.
    pub diff_id: Digest,
    /// Uncompressed size of the layer in bytes.
    pub size: u64,
    /// The layer's content size as Docker counts it, when it was unpacked from a tar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_size: Option<u64>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Containers using this snapshot as their image top.
    #[serde(default)]
    pub users: BTreeSet<String>,
    /// While the snapshot's files may not all be on disk yet: the boot ID of the kernel that
    /// committed it and a per-commit suffix (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<String>,
}

/// Metadata of a container snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    /// The container's ID.
    pub id: String,
    /// The image's top chain ID (`None` for an image without layers).
    pub parent: Option<Digest>,
    /// The driver that made it.
    pub driver: String,
}

/// A snapshotter driver.
pub trait Snapshotter: Send + Sync {
    /// The driver's name (`overlay` or `copy`).
    fn driver(&self) -> &'static str;

    /// Whether the committed snapshot exists.
    fn exists(&self, chain_id: &Digest) -> bool;

    /// Unpacks a layer (plain/gzip/zstd tar) on top of `parent` and commits it under the
    /// chain ID derived from `parent` and `diff_id`. The stream's DiffID must equal `diff_id`;
    /// on mismatch or any error nothing is committed. If the snapshot exists already the
    /// reader is not consumed.
    fn apply_layer(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        reader: &mut dyn Read,
    ) -> Result<SnapshotInfo, SnapshotError>;

    /// A snapshot's metadata.
    fn info(&self, chain_id: &Digest) -> Result<SnapshotInfo, SnapshotError>;

    /// All committed snapshots.
    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError>;

    /// Removes a snapshot; refused while containers or child snapshots use it.
    fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError>;

    /// Creates a container's writable snapshot on top of `parent`.
    fn prepare_container(
        &self,
        id: &str,
        parent: Option<&Digest>,
    ) -> Result<ContainerSnapshot, SnapshotError>;

    /// [`Self::prepare_container`] without syncing its metadata (atomic against a crash of
    /// the process, not a power loss), for containers a reboot ends anyway; opening the
    /// store after a power loss removes the directory when its metadata did not reach the
    /// disk.
    fn prepare_container_volatile(
        &self,
        id: &str,
        parent: Option<&Digest>,
    ) -> Result<ContainerSnapshot, SnapshotError> {
        self.prepare_container(id, parent)
    }

    /// Mounts a container's root file system at `target`.
    fn mount_container(&self, id: &str, target: &Path) -> Result<(), SnapshotError>;

    /// Mounts a container's root file system at `target`; `transient` says the writable layer
    /// will be thrown away when the container stops (`--rm`), so the driver may skip making its
    /// writes durable (overlayfs `volatile`: no sync of the upper file system, in particular
    /// none at unmount, which otherwise syncs the whole file system holding the data root).
    fn mount_container_transient(
        &self,
        id: &str,
        target: &Path,
        transient: bool,
    ) -> Result<(), SnapshotError> {
        let _ = transient;
        self.mount_container(id, target)
    }

    /// Removes a container snapshot (it must not be mounted).
    fn remove_container(&self, id: &str) -> Result<(), SnapshotError>;

    /// The container snapshots.
    fn list_containers(&self) -> Result<Vec<ContainerSnapshot>, SnapshotError>;

    /// The directory holding a container's changes (overlay's `upper`), when the driver has one.
    fn container_upper(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    /// The overlay work directory of a container's changes, when the driver has one.
    fn container_work(&self, _id: &str) -> Option<PathBuf> {
        None
    }

    /// How many snapshots opening dropped because a reboot came before their files were
    /// synced (their content may be torn); the image store unpacks them again from blobs.
    fn dropped_on_open(&self) -> usize {
        0
    }

    /// Waits until every snapshot committed so far is on disk (their deferred syncs done).
    fn wait_synced(&self) {}

    /// The image directories below a container's changes (top first).
    fn container_lowers(&self, _id: &str) -> Result<Vec<PathBuf>, SnapshotError> {
        Ok(Vec::new())
    }

    /// The overlay lower directories (top first) of a chain, when the driver is overlay:
    /// for short-lived mounts that are not containers (build steps).
    fn overlay_lowers(&self, _top: &Digest) -> Option<Result<Vec<PathBuf>, SnapshotError>> {
        None
    }

    /// Commits `dir` (an overlay upper directory on the same file system, not mounted) as
    /// the layer snapshot `diff_id` on top of `parent`, by renaming it (no unpacking; synced
    /// in the background like every commit). `Ok(None)` when the driver cannot.
    fn commit_upper_dir(
        &self,
        _parent: Option<&Digest>,
        _diff_id: &Digest,
        _size: u64,
        _dir: &Path,
    ) -> Result<Option<SnapshotInfo>, SnapshotError> {
        Ok(None)
    }
}

/// The chain ID of `diff_id` on top of `parent`.
pub fn child_chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of_bytes(format!("{p} {diff_id}").as_bytes()),
    }
}

/// Removes a directory tree without following symlinks (missing is fine).
pub fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io_at("remove", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot remove a root path",
        )));
    };
    let pfd = match rfs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_at("open", parent)(e.into())),
    };
    use std::os::unix::ffi::OsStrExt;
    layer::remove_all_at(pfd.as_fd(), name.as_bytes()).map_err(io_at("remove", path))
}

/// The [`Snapshotter`] methods both drivers answer from their [`Base`], with the driver's
/// own `prepare_layer_dir` (the new, empty layer directory of a snapshot on top of `parent`)
/// and `fill_container_dir` (a new container's directory).
macro_rules! base_methods {
    () => {
        fn driver(&self) -> &'static str {
            self.base.layout.driver
        }

        fn apply_layer(
            &self,
            parent: Option<&Digest>,
            diff_id: &Digest,
            reader: &mut dyn Read,
        ) -> Result<SnapshotInfo, SnapshotError> {
            self.base.apply_layer(parent, diff_id, reader, |target| {
                self.prepare_layer_dir(parent, target)
            })
        }

        fn prepare_container(
            &self,
            id: &str,
            parent: Option<&Digest>,
        ) -> Result<ContainerSnapshot, SnapshotError> {
            self.base
                .prepare_container(id, parent, true, |dir| self.fill_container_dir(parent, dir))
        }

        fn prepare_container_volatile(
            &self,
            id: &str,
            parent: Option<&Digest>,
        ) -> Result<ContainerSnapshot, SnapshotError> {
            self.base.prepare_container(id, parent, false, |dir| {
                self.fill_container_dir(parent, dir)
            })
        }

        fn dropped_on_open(&self) -> usize {
            self.base.dropped
        }

        fn wait_synced(&self) {
            self.base.syncer.wait();
        }

        fn exists(&self, chain_id: &Digest) -> bool {
            self.base.exists(chain_id)
        }

        fn info(&self, chain_id: &Digest) -> Result<SnapshotInfo, SnapshotError> {
            self.base.info(chain_id)
        }

        fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
            self.base.list()
        }

        fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
            self.base.remove(chain_id)
        }

        fn remove_container(&self, id: &str) -> Result<(), SnapshotError> {
            self.base.remove_container(id)
        }

        fn list_containers(&self) -> Result<Vec<ContainerSnapshot>, SnapshotError> {
            self.base.list_containers()
        }
    };
}

// The drivers and what they share (after the macro, which they use).
mod base;
mod copy;
mod overlay;

pub use copy::{copy_tree, CopySnapshotter};
pub use overlay::{
    mount_overlay, mount_overlay_legacy, mount_overlay_volatile, unmount, OverlaySnapshotter,
};

#[cfg(test)]
use base::{boot_id, mark_boot};
use base::{Base, Layout};

/// Opens the overlay snapshotter when overlayfs works under `root`, else the copying one.
pub fn open_best(root: &Path) -> Result<Box<dyn Snapshotter>, SnapshotError> {
    fs::create_dir_all(root).map_err(io_at("create directory", root))?;
    if OverlaySnapshotter::supported(root) {
        Ok(Box::new(OverlaySnapshotter::open(root)?))
    } else {
        Ok(Box::new(CopySnapshotter::open(root)?))
    }
}

#[cfg(test)]
mod commit_upper_tests;
#[cfg(test)]
mod deferred_sync_tests;
