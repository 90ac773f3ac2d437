//! What both drivers share: the on-disk layout (`snapshots/`, `containers/`, metadata),
//! commits through temporary directories, reference checks on removal, and the deferred
//! `syncfs` of new snapshots (boot-ID marks, the `snapshot-sync` thread).

use super::*;

/// The kernel's boot ID, `None` when it cannot be read (then commits sync at once).
pub(super) fn boot_id() -> Option<&'static str> {
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
pub(super) fn mark_boot(mark: &str) -> Option<&str> {
    mark.split(' ').next()
}

/// Snapshots committed without a sync, waiting for the background `syncfs`.
#[derive(Default)]
pub(super) struct SyncQueue {
    /// Chain IDs with the mark their commit wrote.
    pub(super) pending: Vec<(Digest, String)>,
    /// A sync thread is at work (it takes everything pending each round).
    pub(super) running: bool,
}

/// The deferred syncs of one snapshotter (see the module documentation).
pub(super) struct Syncer {
    pub(super) snapshots: PathBuf,
    /// The snapshotter's metadata lock (clearing a mark rewrites `meta.json`).
    pub(super) lock: Arc<Mutex<()>>,
    pub(super) queue: Mutex<SyncQueue>,
    pub(super) idle: Condvar,
}

impl Syncer {
    pub(super) fn push(self: &Arc<Self>, chain_id: Digest, mark: String) {
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

    pub(super) fn run(&self) {
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
    pub(super) fn sync(&self, batch: &[(Digest, String)]) -> io::Result<()> {
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

    pub(super) fn wait(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while q.running {
            q = self.idle.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Directories and metadata shared by both drivers.
/// What tells the drivers' snapshots apart.
pub(super) struct Layout {
    /// The driver's name (recorded in container metadata).
    pub(super) driver: &'static str,
    /// The subdirectory of a snapshot that holds its files.
    pub(super) layer_dir: &'static str,
    /// How layers are unpacked into it.
    pub(super) mode: ApplyMode,
}

pub(super) struct Base {
    pub(super) root: PathBuf,
    pub(super) layout: Layout,
    pub(super) lock: Arc<Mutex<()>>,
    pub(super) syncer: Arc<Syncer>,
    /// Snapshots dropped by `open` (see [`Snapshotter::dropped_on_open`]).
    pub(super) dropped: usize,
}

impl Base {
    pub(super) fn open(root: &Path, layout: Layout) -> Result<Self, SnapshotError> {
        let lock = Arc::new(Mutex::new(()));
        let mut b = Self {
            root: root.to_path_buf(),
            layout,
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
        // Container directories without metadata: a creation or removal that a crash
        // interrupted (the metadata is written last and removed first); or with an empty
        // one: a volatile creation's whose metadata a power loss took.
        let cd = b.containers_dir();
        for ent in fs::read_dir(&cd).map_err(io_at("read directory", &cd))? {
            let ent = ent.map_err(io_at("read directory", &cd))?;
            if fs::metadata(ent.path().join("meta.json")).map_or(true, |m| m.len() == 0) {
                tracing::info!(dir = %ent.path().display(), "removing an unfinished container snapshot");
                remove_tree(&ent.path())?;
            }
        }
        Ok(b)
    }

    pub(super) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub(super) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub(super) fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(chain_id.hex())
    }
    /// The directory holding a snapshot's files.
    pub(super) fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.snapshot_dir(chain_id).join(self.layout.layer_dir)
    }
    pub(super) fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    pub(super) fn temp_dir(&self) -> PathBuf {
        self.snapshots_dir()
            .join(format!("tmp-{}-{}", std::process::id(), fsutil::unique()))
    }

    pub(super) fn exists(&self, chain_id: &Digest) -> bool {
        self.snapshot_dir(chain_id).join("meta.json").is_file()
    }

    pub(super) fn info(&self, chain_id: &Digest) -> Result<SnapshotInfo, SnapshotError> {
        read_meta(&self.snapshot_dir(chain_id), || {
            SnapshotError::NotFound(chain_id.clone())
        })
    }

    pub(super) fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
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
    pub(super) fn chain(&self, top: &Digest) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let mut out = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let info = self.info(&c)?;
            cur = info.parent.clone();
            out.push(info);
            if out.len() > 10_000 {
                return Err(SnapshotError::Io(PathIoError {
                    op: "walk chain",
                    path: self.snapshot_dir(top),
                    source: io::Error::other("snapshot parent cycle"),
                }));
            }
        }
        Ok(out)
    }

    /// Commits an unpacked temp directory as `info.chain_id`: metadata written (marked
    /// `unsynced`), renamed into place; the sync follows in the background.
    pub(super) fn commit(
        &self,
        tmp: &Path,
        info: &SnapshotInfo,
    ) -> Result<SnapshotInfo, SnapshotError> {
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

    pub(super) fn update_users(
        &self,
        chain_id: &Digest,
        f: impl FnOnce(&mut BTreeSet<String>),
    ) -> Result<(), SnapshotError> {
        let mut info = self.info(chain_id)?;
        f(&mut info.users);
        let p = self.snapshot_dir(chain_id).join("meta.json");
        fsutil::write_json_atomic(&p, &info).map_err(io_at("write metadata", &p))
    }

    pub(super) fn remove(&self, chain_id: &Digest) -> Result<(), SnapshotError> {
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

    pub(super) fn check_id(id: &str) -> Result<(), SnapshotError> {
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
    /// given subdirectories, each filled by `fill`; `durable`: its metadata is synced.
    pub(super) fn prepare_container(
        &self,
        id: &str,
        parent: Option<&Digest>,
        durable: bool,
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
            driver: self.layout.driver.to_string(),
        };
        let res = (|| {
            fs::create_dir(&dir).map_err(io_at("create directory", &dir))?;
            fill(&dir)?;
            let meta = dir.join("meta.json");
            if !durable {
                let bytes = serde_json::to_vec_pretty(&snap).map_err(io::Error::other);
                return bytes
                    .and_then(|b| berth_util::fs::replace_file_nosync(&meta, &b))
                    .map_err(io_at("write metadata", &dir));
            }
            fsutil::write_json_atomic(&meta, &snap).map_err(io_at("write metadata", &dir))?;
            let cd = self.containers_dir();
            fsutil::fsync_dir(&cd).map_err(io_at("fsync", &cd))
        })();
        if let Err(e) = res {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        Ok(snap)
    }

    pub(super) fn container(&self, id: &str) -> Result<ContainerSnapshot, SnapshotError> {
        Self::check_id(id)?;
        read_meta(&self.container_dir(id), || {
            SnapshotError::ContainerNotFound(id.to_string())
        })
    }

    pub(super) fn remove_container(&self, id: &str) -> Result<(), SnapshotError> {
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

    pub(super) fn list_containers(&self) -> Result<Vec<ContainerSnapshot>, SnapshotError> {
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

    /// Unpacks into a temp dir (the layer directory inside it, prepared by `prepare`) and
    /// commits.
    pub(super) fn apply_layer(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        reader: &mut dyn Read,
        prepare: impl FnOnce(&Path) -> Result<(), SnapshotError>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        self.commit_new(parent, diff_id, |tmp| {
            let target = tmp.join(self.layout.layer_dir);
            prepare(&target)?;
            let options = ApplyOptions::new(self.layout.mode);
            let applied = layer::apply_layer(&target, reader, &options)?;
            if &applied.diff_id != diff_id {
                return Err(SnapshotError::DiffIdMismatch {
                    expected: diff_id.clone(),
                    actual: applied.diff_id,
                });
            }
            Ok((applied.size, Some(applied.content_size)))
        })
    }

    /// Commits the snapshot `diff_id` on top of `parent` (its existing metadata when it is
    /// committed already): `fill` puts its files into a new temp dir and returns its size and
    /// content size; on any error the temp dir goes.
    pub(super) fn commit_new(
        &self,
        parent: Option<&Digest>,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<(u64, Option<u64>), SnapshotError>,
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
            let (size, content_size) = fill(&tmp)?;
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Ok(SnapshotInfo {
                chain_id: chain_id.clone(),
                parent: parent.cloned(),
                diff_id: diff_id.clone(),
                size,
                content_size,
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

/// The `meta.json` of a snapshot's or container's directory; `missing()` when there is none.
fn read_meta<T: serde::de::DeserializeOwned>(
    dir: &Path,
    missing: impl FnOnce() -> SnapshotError,
) -> Result<T, SnapshotError> {
    let p = dir.join("meta.json");
    match fsutil::read_json(&p) {
        Ok(m) => Ok(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
        Err(e) => Err(io_at("read", &p)(e)),
    }
}
