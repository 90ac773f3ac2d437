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
use crate::layer::{self, ApplyMode, ApplyOptions, LayerError};

/// Errors from snapshotters.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// I/O on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
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

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

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

/// The kernel's boot ID, `None` when it cannot be read (then commits sync at once).
fn boot_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// The boot ID part of an `unsynced` mark (`"<boot ID> <unique>"`).
fn mark_boot(mark: &str) -> Option<&str> {
    mark.split(' ').next()
}

/// Snapshots committed without a sync, waiting for the background `syncfs`.
#[derive(Default)]
struct SyncQueue {
    /// Chain IDs with the mark their commit wrote.
    pending: Vec<(Digest, String)>,
    /// A sync thread is at work (it takes everything pending each round).
    running: bool,
}

/// The deferred syncs of one snapshotter (see the module documentation).
struct Syncer {
    snapshots: PathBuf,
    /// The snapshotter's metadata lock (clearing a mark rewrites `meta.json`).
    lock: Arc<Mutex<()>>,
    queue: Mutex<SyncQueue>,
    idle: Condvar,
}

impl Syncer {
    fn push(self: &Arc<Self>, chain_id: Digest, mark: String) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.pending.push((chain_id, mark));
        if q.running {
            return;
        }
        q.running = true;
        drop(q);
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || me.run());
        if let Err(e) = spawned {
            // The marks stay: the next open syncs them.
            tracing::warn!(error = %e, "cannot start the snapshot sync thread");
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.running = false;
            self.idle.notify_all();
        }
    }

    fn run(&self) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.pending.is_empty() {
                    q.running = false;
                    self.idle.notify_all();
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            if let Err(e) = self.sync(&batch) {
                // Marks not cleared are synced again by the next open.
                tracing::warn!(error = %e, "deferred snapshot sync failed");
            }
        }
    }

    /// One `syncfs` for the whole batch, then the marks are cleared (plain renames: a mark
    /// that a crash brings back only costs an unneeded unpack after a reboot).
    fn sync(&self, batch: &[(Digest, String)]) -> io::Result<()> {
        let dir = fs::File::open(&self.snapshots)?;
        rfs::syncfs(&dir)?;
        for (chain_id, mark) in batch {
            let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            let p = self.snapshots.join(chain_id.hex()).join("meta.json");
            let mut info: SnapshotInfo = match fsutil::read_json(&p) {
                Ok(i) => i,
                // Removed meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // Only the mark this sync covers: a snapshot removed and committed again since
            // carries a newer one, left for its own sync.
            if info.unsynced.as_ref() == Some(mark) {
                info.unsynced = None;
                fsutil::replace_json(&p, &info)?;
            }
        }
        Ok(())
    }

    fn wait(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while q.running {
            q = self.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Directories and metadata shared by both drivers.
struct Base {
    root: PathBuf,
    lock: Arc<Mutex<()>>,
    syncer: Arc<Syncer>,
    /// Snapshots dropped by `open` (see [`Snapshotter::dropped_on_open`]).
    dropped: usize,
}

impl Base {
    fn open(root: &Path) -> Result<Self, SnapshotError> {
        let lock = Arc::new(Mutex::new(()));
        let mut b = Self {
            root: root.to_path_buf(),
            syncer: Arc::new(Syncer {
                snapshots: root.join("snapshots"),
                lock: Arc::clone(&lock),
                queue: Mutex::default(),
                idle: Condvar::new(),
            }),
            lock,
            dropped: 0,
        };
        for d in [b.snapshots_dir(), b.containers_dir()] {
            fs::create_dir_all(&d).map_err(io_at("create directory", &d))?;
        }
        // Leftovers of interrupted unpacks or removals; snapshots not synced before a reboot.
        let sd = b.snapshots_dir();
        for ent in fs::read_dir(&sd).map_err(io_at("read directory", &sd))? {
            let ent = ent.map_err(io_at("read directory", &sd))?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("tmp-") {
                remove_tree(&ent.path())?;
                continue;
            }
            let Ok(chain_id) = Digest::from_hex(&name) else {
                continue;
            };
            let Ok(info) = b.info(&chain_id) else {
                continue;
            };
            match info.unsynced.as_deref() {
                None => {}
                Some(mark) if mark_boot(mark) == boot_id() => {
                    b.syncer.push(chain_id, mark.to_string())
                }
                Some(boot) => {
                    tracing::warn!(%chain_id, %boot, "snapshot not synced before a reboot: dropped, to be unpacked again");
                    let tmp = b.temp_dir();
                    let dir = ent.path();
                    fs::rename(&dir, &tmp).map_err(io_at("rename", &dir))?;
                    remove_tree(&tmp)?;
                    b.dropped += 1;
                }
            }
        }
        if b.dropped > 0 {
            fsutil::fsync_dir(&sd).map_err(io_at("fsync", &sd))?;
        }
        Ok(b)
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex())
    }
    fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    fn temp_dir(&self) -> PathBuf {
        self.snapshots_dir()
            .join(format!("tmp-{}-{}", std::process::id(), fsutil::unique()))
    }

    fn exists(&self, chain_id: &Digest) -> bool {
        self.snapshot_dir(chain_id).join("meta.json").is_file()
    }

    fn info(&self, chain_id: &Digest) -> Result<SnapshotInfo, SnapshotError> {
        let p = self.snapshot_dir(chain_id).join("meta.json");
        match fsutil::read_json(&p) {
            Ok(i) => Ok(i),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SnapshotError::NotFound(chain_id.clone()))
            }
            Err(e) => Err(io_at("read", &p)(e)),
        }
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let sd = self.snapshots_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&sd).map_err(io_at("read directory", &sd))? {
            let ent = ent.map_err(io_at("read directory", &sd))?;
            let Some(d) = ent
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            out.push(self.info(&d)?);
        }
        out.sort_by(|a, b| a.chain_id.cmp(&b.chain_id));
        Ok(out)
    }

    /// Top-first chain of snapshots from `top` to the base.
    fn chain(&self, top: &Digest) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let mut out = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let info = self.info(&c)?;
            cur = info.parent.clone();
            out.push(info);
            if out.len() > 10_000 {
                return Err(SnapshotError::Io {
                    op: "walk chain",
                    path: self.snapshot_dir(top),
                    source: io::Error::other("snapshot parent cycle"),
                });
            }
        }
        Ok(out)
    }

    /// Commits an unpacked temp directory as `info.chain_id`: metadata written (marked
    /// `unsynced`), renamed into place; the sync follows in the background.
    fn commit(&self, tmp: &Path, info: &SnapshotInfo) -> Result<SnapshotInfo, SnapshotError> {
        let mut info = info.clone();
        info.unsynced = boot_id().map(|b| format!("{b} {}", fsutil::unique()));
        // The directory is new and only becomes visible by the rename below, so a plain write
        // cannot be seen half done by another process.
        let bytes = serde_json::to_vec_pretty(&info)
            .map_err(|e| io_at("write metadata", tmp)(io::Error::other(e)))?;
        fs::write(tmp.join("meta.json"), bytes).map_err(io_at("write metadata", tmp))?;
        if info.unsynced.is_none() {
            // No boot ID to detect a reboot by: durable before visible.
            let dirfd = fs::File::open(tmp).map_err(io_at("open", tmp))?;
            rfs::syncfs(&dirfd).map_err(|e| io_at("syncfs", tmp)(e.into()))?;
        }
        let dest = self.snapshot_dir(&info.chain_id);
        match fs::rename(tmp, &dest) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                // Another unpack of the same layer won.
                remove_tree(tmp)?;
                return self.info(&info.chain_id);
            }
            Err(e) => {
                let _ = remove_tree(tmp);
                return Err(io_at("rename", &dest)(e));
            }
        }
        if info.unsynced.is_some() {
            if let Some(mark) = &info.unsynced {
                self.syncer.push(info.chain_id.clone(), mark.clone());
            }
        } else {
            let sd = self.snapshots_dir();
            fsutil::fsync_dir(&sd).map_err(io_at("fsync", &sd))?;
        }
        Ok(info)
    }

    fn update_users(
        &self,
        chain_id: &Digest,
        f: impl FnOnce(&mut BTreeSet<String>),
    ) -> Result<(), SnapshotError> {
        let mut info = self.info(chain_id)?;
        f(&mut info.users);
        let p = self.snapshot_dir(chain_id).join("meta.json");
        fsutil::write_json_atomic(&p, &info).map_err(io_at("write metadata", &p))
    }

    fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let info = self.info(chain_id)?;
        let mut users: Vec<String> = info
            .users
            .iter()
            .map(|u| format!("container {u}"))
            .collect();
        for s in self.list()? {
            if s.parent.as_ref() == Some(chain_id) {
                users.push(format!("snapshot {}", s.chain_id));
            }
        }
        for c in self.list_containers()? {
            if c.parent.as_ref() == Some(chain_id) && !info.users.contains(&c.id) {
                users.push(format!("container {}", c.id));
            }
        }
        if !users.is_empty() {
            return Err(SnapshotError::InUse {
                chain_id: chain_id.clone(),
                users: users.join(", "),
            });
        }
        // Rename away first so that the snapshot disappears atomically.
        let dir = self.snapshot_dir(chain_id);
        let tmp = self.temp_dir();
        fs::rename(&dir, &tmp).map_err(io_at("rename", &dir))?;
        let sd = self.snapshots_dir();
        fsutil::fsync_dir(&sd).map_err(io_at("fsync", &sd))?;
        remove_tree(&tmp)
    }

    fn check_id(id: &str) -> Result<(), SnapshotError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(SnapshotError::InvalidId(id.to_string()))
        }
    }

    /// Records the container (snapshot users first), then creates its directory with the
    /// given subdirectories, each filled by `fill`.
    fn prepare_container(
        &self,
        driver: &'static str,
        id: &str,
        parent: Option<&Digest>,
        fill: impl FnOnce(&Path) -> Result<(), SnapshotError>,
    ) -> Result<ContainerSnapshot, SnapshotError> {
        Self::check_id(id)?;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.container_dir(id);
        if dir.exists() {
            return Err(SnapshotError::ContainerExists(id.to_string()));
        }
        if let Some(p) = parent {
            // The parent must exist; the container's own metadata (written below, under the
            // same lock that `remove` takes) is what makes it a user of the parent.
            if !self.exists(p) {
                return Err(SnapshotError::NotFound(p.clone()));
            }
        }
        let snap = ContainerSnapshot {
            id: id.to_string(),
            parent: parent.cloned(),
            driver: driver.to_string(),
        };
        let res = (|| {
            fs::create_dir(&dir).map_err(io_at("create directory", &dir))?;
            fill(&dir)?;
            fsutil::write_json_atomic(&dir.join("meta.json"), &snap)
                .map_err(io_at("write metadata", &dir))?;
            let cd = self.containers_dir();
            fsutil::fsync_dir(&cd).map_err(io_at("fsync", &cd))
        })();
        if let Err(e) = res {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        Ok(snap)
    }

    fn container(&self, id: &str) -> Result<ContainerSnapshot, SnapshotError> {
        Self::check_id(id)?;
        let p = self.container_dir(id).join("meta.json");
        match fsutil::read_json(&p) {
            Ok(c) => Ok(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(SnapshotError::ContainerNotFound(id.to_string()))
            }
            Err(e) => Err(io_at("read", &p)(e)),
        }
    }

    fn remove_container(&self, id: &str) -> Result<(), SnapshotError> {
        let c = self.container(id)?;
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.container_dir(id);
        // Drop the metadata first: a half-removed directory without metadata is garbage.
        let meta = dir.join("meta.json");
        fs::remove_file(&meta).map_err(io_at("remove", &meta))?;
        fsutil::fsync_dir(&dir).map_err(io_at("fsync", &dir))?;
        remove_tree(&dir)?;
        // Stores written before containers were tracked by their own metadata only list them
        // in the parent's `users`.
        if let Some(p) = &c.parent {
            if self.info(p).is_ok_and(|i| i.users.contains(id)) {
                match self.update_users(p, |u| {
                    u.remove(id);
                }) {
                    Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn list_containers(&self) -> Result<Vec<ContainerSnapshot>, SnapshotError> {
        let cd = self.containers_dir();
        let mut out = Vec::new();
        for ent in fs::read_dir(&cd).map_err(io_at("read directory", &cd))? {
            let ent = ent.map_err(io_at("read directory", &cd))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.container(&name) {
                Ok(c) => out.push(c),
                Err(SnapshotError::ContainerNotFound(_)) | Err(SnapshotError::InvalidId(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Unpacks into a temp dir (`sub` inside it, prepared by `prepare`) and commits.
    fn apply_layer(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        reader: &mut dyn Read,
        sub: &str,
        mode: ApplyMode,
        prepare: impl FnOnce(&Path) -> Result<(), SnapshotError>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let chain_id = child_chain_id(parent, diff_id);
        if self.exists(&chain_id) {
            return self.info(&chain_id);
        }
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(SnapshotError::NotFound(p.clone()));
            }
        }
        let tmp = self.temp_dir();
        let res = (|| {
            fs::create_dir(&tmp).map_err(io_at("create directory", &tmp))?;
            let target = tmp.join(sub);
            prepare(&target)?;
            let applied = layer::apply_layer(&target, reader, &ApplyOptions::new(mode))?;
            if &applied.diff_id != diff_id {
                return Err(SnapshotError::DiffIdMismatch {
                    expected: diff_id.clone(),
                    actual: applied.diff_id,
                });
            }
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Ok(SnapshotInfo {
                chain_id: chain_id.clone(),
                parent: parent.cloned(),
                diff_id: diff_id.clone(),
                size: applied.size,
                content_size: Some(applied.content_size),
                created,
                users: BTreeSet::new(),
                unsynced: None,
            })
        })();
        match res {
            Ok(info) => self.commit(&tmp, &info),
            Err(e) => {
                let _ = remove_tree(&tmp);
                Err(e)
            }
        }
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

/// The [`Snapshotter`] methods both drivers answer from their [`Base`] alone.
macro_rules! base_methods {
    () => {
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

// ---------------------------------------------------------------------------------------------
// overlay

/// The overlayfs snapshotter.
pub struct OverlaySnapshotter {
    base: Base,
}

impl OverlaySnapshotter {
    /// Opens (creating) a snapshotter rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Ok(Self {
            base: Base::open(root)?,
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
        self.base.snapshot_dir(chain_id).join("diff")
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
}

impl Snapshotter for OverlaySnapshotter {
    fn driver(&self) -> &'static str {
        "overlay"
    }

    base_methods!();

    fn apply_layer(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        reader: &mut dyn Read,
    ) -> Result<SnapshotInfo, SnapshotError> {
        self.base
            .apply_layer(parent, diff_id, reader, "diff", ApplyMode::Overlay, |t| {
                fs::create_dir(t).map_err(io_at("create directory", t))
            })
    }

    fn prepare_container(
        &self,
        id: &str,
        parent: Option<&Digest>,
    ) -> Result<ContainerSnapshot, SnapshotError> {
        self.base.prepare_container("overlay", id, parent, |dir| {
            for sub in ["upper", "work", "lower-empty"] {
                let d = dir.join(sub);
                fs::create_dir(&d).map_err(io_at("create directory", &d))?;
            }
            Ok(())
        })
    }

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
        let chain_id = child_chain_id(parent, diff_id);
        if self.base.exists(&chain_id) {
            return Ok(Some(self.base.info(&chain_id)?));
        }
        if let Some(p) = parent {
            if !self.base.exists(p) {
                return Err(SnapshotError::NotFound(p.clone()));
            }
        }
        let tmp = self.base.temp_dir();
        fs::create_dir(&tmp).map_err(io_at("create directory", &tmp))?;
        let diff = tmp.join("diff");
        if let Err(e) = fs::rename(dir, &diff) {
            let _ = remove_tree(&tmp);
            return Err(io_at("rename", dir)(e));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = SnapshotInfo {
            chain_id,
            parent: parent.cloned(),
            diff_id: diff_id.clone(),
            size,
            content_size: None,
            created,
            users: BTreeSet::new(),
            unsynced: None,
        };
        self.base.commit(&tmp, &info).map(Some)
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
fn mount_overlay_with(
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

fn mount_overlay_legacy_opts(
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
const MOUNT_DATA_MAX: usize = 4096;

enum Fallback {
    Legacy,
    No(io::Error),
}

fn mount_overlay_fsopen(
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

// ---------------------------------------------------------------------------------------------
// copy

/// The copying snapshotter (no overlayfs needed).
pub struct CopySnapshotter {
    base: Base,
}

impl CopySnapshotter {
    /// Opens (creating) a snapshotter rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Ok(Self {
            base: Base::open(root)?,
        })
    }

    /// The flattened file system of a snapshot.
    pub fn fs_dir(&self, chain_id: &Digest) -> PathBuf {
        self.base.snapshot_dir(chain_id).join("fs")
    }

    /// A container's root file system directory.
    pub fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.base.container_dir(id).join("rootfs")
    }

    fn copy_parent(&self, parent: Option<&Digest>, dest: &Path) -> Result<(), SnapshotError> {
        fs::create_dir(dest).map_err(io_at("create directory", dest))?;
        if let Some(p) = parent {
            let src = self.fs_dir(p);
            copy_tree(&src, dest)?;
        }
        Ok(())
    }
}

impl Snapshotter for CopySnapshotter {
    fn driver(&self) -> &'static str {
        "copy"
    }

    base_methods!();

    fn apply_layer(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        reader: &mut dyn Read,
    ) -> Result<SnapshotInfo, SnapshotError> {
        self.base
            .apply_layer(parent, diff_id, reader, "fs", ApplyMode::Flat, |t| {
                self.copy_parent(parent, t)
            })
    }

    fn prepare_container(
        &self,
        id: &str,
        parent: Option<&Digest>,
    ) -> Result<ContainerSnapshot, SnapshotError> {
        self.base.prepare_container("copy", id, parent, |dir| {
            self.copy_parent(parent, &dir.join("rootfs"))
        })
    }

    fn mount_container(&self, id: &str, target: &Path) -> Result<(), SnapshotError> {
        self.base.container(id)?;
        let src = self.rootfs_dir(id);
        rustix::mount::mount_bind(&src, target).map_err(|e| SnapshotError::Mount {
            target: target.to_path_buf(),
            source: e.into(),
        })
    }
}

/// Opens the overlay snapshotter when overlayfs works under `root`, else the copying one.
pub fn open_best(root: &Path) -> Result<Box<dyn Snapshotter>, SnapshotError> {
    fs::create_dir_all(root).map_err(io_at("create directory", root))?;
    if OverlaySnapshotter::supported(root) {
        Ok(Box::new(OverlaySnapshotter::open(root)?))
    } else {
        Ok(Box::new(CopySnapshotter::open(root)?))
    }
}

/// Copies the tree under `src` into the existing empty directory `dst`, preserving types,
/// ownership, modes, times, xattrs and hard links, never following symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let open = |p: &Path| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at("open", p)(e.into()))
    };
    let s = open(src)?;
    let d = open(dst)?;
    let mut links = std::collections::HashMap::new();
    let mut rel = Vec::new();
    copy_dir_contents(s.as_fd(), d.as_fd(), d.as_fd(), &mut rel, &mut links)
        .map_err(io_at("copy", src))?;
    copy_meta_fd(s.as_fd(), d.as_fd()).map_err(io_at("copy metadata", dst))
}

type LinkMap = std::collections::HashMap<(u64, u64), Vec<Vec<u8>>>;

fn copy_dir_contents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    rel: &mut Vec<Vec<u8>>,
    links: &mut LinkMap,
) -> io::Result<()> {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    for name in layer::list_dir(src)? {
        let name = name.as_slice();
        let st = rfs::statat(src, name, nofollow)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime as i64,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime as i64,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rel.push(name.to_vec());
        let key = (st.st_dev as u64, st.st_ino as u64);
        if ft != FileType::Directory && st.st_nlink > 1 {
            if let Some(first) = links.get(&key) {
                let (fbase, fparent) = first
                    .split_last()
                    .ok_or_else(|| io::Error::other("empty link path"))?;
                let pfd = layer::resolve_dir(dst_root, fparent, None).map_err(io::Error::other)?;
                rfs::linkat(&pfd, fbase.as_slice(), dst, name, AtFlags::empty())?;
                rel.pop();
                continue;
            }
            links.insert(key, rel.clone());
        }
        match ft {
            FileType::Directory => {
                rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let s2 = rfs::openat(src, name, flags, Mode::empty())?;
                let d2 = rfs::openat(dst, name, flags, Mode::empty())?;
                copy_dir_contents(s2.as_fd(), d2.as_fd(), dst_root, rel, links)?;
                copy_meta_fd(s2.as_fd(), d2.as_fd())?;
            }
            FileType::RegularFile => {
                let sf = rfs::openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let df = rfs::openat(
                    dst,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut sf = fs::File::from(sf);
                let mut df = fs::File::from(df);
                io::copy(&mut sf, &mut df)?;
                copy_meta_fd(sf.as_fd(), df.as_fd())?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(src, name, Vec::new())?;
                rfs::symlinkat(target.as_c_str(), dst, name)?;
                rfs::chownat(
                    dst,
                    name,
                    Some(rfs::Uid::from_raw(st.st_uid)),
                    Some(rfs::Gid::from_raw(st.st_gid)),
                    nofollow,
                )?;
            }
            ft => {
                rfs::mknodat(dst, name, ft, mode, st.st_rdev as _)?;
                rfs::chownat(
                    dst,
                    name,
                    Some(rfs::Uid::from_raw(st.st_uid)),
                    Some(rfs::Gid::from_raw(st.st_gid)),
                    nofollow,
                )?;
                rfs::chmodat(dst, name, mode, AtFlags::empty())?;
            }
        }
        if ft != FileType::Directory && ft != FileType::RegularFile {
            rfs::utimensat(dst, name, &times, nofollow)?;
        }
        rel.pop();
    }
    Ok(())
}

/// Copies ownership, mode, xattrs and times from one open file or directory to another.
fn copy_meta_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let st = rfs::fstat(src)?;
    rfs::fchown(
        dst,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )?;
    rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    copy_xattrs(src, dst)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as i64,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as i64,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rfs::futimens(dst, &times)?;
    Ok(())
}

fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        let name = std::ffi::CString::new(name.to_vec()).map_err(io::Error::other)?;
        let vn = match rfs::fgetxattr(src, name.as_c_str(), &mut val[..]) {
            Ok(v) => v,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match rfs::fsetxattr(dst, name.as_c_str(), &val[..vn], rfs::XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod commit_upper_tests {
    use super::*;

    #[test]
    fn commit_upper_dir_makes_a_stackable_snapshot() {
        let d = tempfile::tempdir().unwrap();
        let s = OverlaySnapshotter::open(&d.path().join("snap")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "base.txt", &b"b"[..]).unwrap();
        let tarb = b.into_inner().unwrap();
        let base = Digest::of_bytes(&tarb);
        s.apply_layer(None, &base, &mut &tarb[..]).unwrap();
        let up = d.path().join("up");
        fs::create_dir_all(&up).unwrap();
        fs::write(up.join("new.txt"), "n").unwrap();
        let diff = Digest::of_bytes(b"the layer's tar");
        let info = s
            .commit_upper_dir(Some(&base), &diff, 1, &up)
            .unwrap()
            .unwrap();
        assert_eq!(info.chain_id, child_chain_id(Some(&base), &diff));
        assert!(!up.exists());
        let lowers = s.overlay_lowers(&info.chain_id).unwrap().unwrap();
        assert_eq!(lowers.len(), 2);
        assert!(lowers[0].join("new.txt").is_file());
        assert!(lowers[1].join("base.txt").is_file());
        // Committing the same layer again keeps the first; a missing parent is refused.
        let up2 = d.path().join("up2");
        fs::create_dir_all(&up2).unwrap();
        let again = s
            .commit_upper_dir(Some(&base), &diff, 1, &up2)
            .unwrap()
            .unwrap();
        assert_eq!(again.chain_id, info.chain_id);
        let ghost = Digest::of_bytes(b"ghost");
        assert!(s.commit_upper_dir(Some(&ghost), &diff, 1, &up2).is_err());
        assert!(CopySnapshotter::open(&d.path().join("copy"))
            .unwrap()
            .commit_upper_dir(None, &diff, 1, &up2)
            .unwrap()
            .is_none());
    }
}

#[cfg(test)]
mod deferred_sync_tests {
    use super::*;

    fn one_file_layer(name: &str) -> (Vec<u8>, Digest) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &b"hi"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let d = Digest::of_bytes(&t);
        (t, d)
    }

    fn set_mark(root: &Path, chain_id: &Digest, mark: Option<&str>) {
        let p = root
            .join("snapshots")
            .join(chain_id.hex())
            .join("meta.json");
        let mut info: SnapshotInfo = fsutil::read_json(&p).unwrap();
        info.unsynced = mark.map(str::to_string);
        fsutil::write_json_atomic(&p, &info).unwrap();
    }

    #[test]
    fn commits_are_marked_until_synced_and_a_reboot_drops_the_marked() {
        let Some(boot) = boot_id() else {
            return; // no boot ID: commits sync at once, nothing is deferred
        };
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("snap");
        for open in [
            |r: &Path| Box::new(OverlaySnapshotter::open(r).unwrap()) as Box<dyn Snapshotter>,
            |r: &Path| Box::new(CopySnapshotter::open(r).unwrap()) as Box<dyn Snapshotter>,
        ] {
            let _ = fs::remove_dir_all(&root);
            let s = open(&root);
            let (t1, d1) = one_file_layer("a");
            let info = s.apply_layer(None, &d1, &mut &t1[..]).unwrap();
            // Marked with this boot (and a per-commit suffix) until the sync thread is done.
            assert!(
                info.unsynced.is_none()
                    || info.unsynced.as_deref().and_then(mark_boot) == Some(boot)
            );
            s.wait_synced();
            // The background sync cleared the mark.
            assert_eq!(s.info(&d1).unwrap().unsynced, None);
            let (t2, d2) = one_file_layer("b");
            let top = s
                .apply_layer(Some(&d1), &d2, &mut &t2[..])
                .unwrap()
                .chain_id;
            s.wait_synced();
            drop(s);

            // Marked in this boot (a process that died before its sync): kept, synced again.
            set_mark(&root, &d1, Some(boot));
            let s = open(&root);
            assert_eq!(s.dropped_on_open(), 0);
            s.wait_synced();
            assert_eq!(s.info(&d1).unwrap().unsynced, None);
            drop(s);

            // Marked in another boot: maybe torn by a power loss, dropped at open.
            set_mark(&root, &top, Some("another-boot"));
            let s = open(&root);
            assert_eq!(s.dropped_on_open(), 1);
            assert!(!s.exists(&top));
            assert!(s.exists(&d1));
            // And it can be unpacked again.
            s.apply_layer(Some(&d1), &d2, &mut &t2[..]).unwrap();
            assert!(s.exists(&top));
            s.wait_synced();
            assert_eq!(s.info(&top).unwrap().unsynced, None);
        }
    }
}
