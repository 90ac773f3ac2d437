//! The registry's storage on the local file system.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>               every blob (layers, configs, manifests), shared by all
//!                                       repositories, content-addressed, immutable
//! ROOT/uploads/<id>/data                an upload in progress (never read as a blob)
//! ROOT/uploads/<id>/info.json           its repository and start time
//! ROOT/repositories/<name>/_meta.json   a repository: tags, manifests, linked blobs
//! ```
//!
//! Crash safety: a blob appears under `blobs/` only by `rename` from its upload's `data` after
//! the digest was verified and the data fsynced; the directory is fsynced after the rename. An
//! interrupted upload therefore leaves at most a partial `uploads/<id>/data` (whose size the
//! upload status reports, so a client can resume). Repository metadata is one JSON document
//! per repository, replaced atomically (temp file, fsync, rename, fsync of the directory)
//! under a per-repository lock; `_meta.json` cannot collide with a name component, which never
//! starts with `_`.
//!
//! Blob links: a repository may only serve, mount from, or reference in a manifest the blobs
//! linked to it (`blobs` in its metadata): uploaded to it, mounted into it, or pushed to it as a
//! manifest. Knowing a digest is not enough to read a blob of a repository one may not pull.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use berth_image::Digest;
use berth_util::fs::{atomic_write, fsync_dir};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::StoreError;
use berth_image::fsutil::PathIoError;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        StoreError::Io(PathIoError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A manifest stored in a repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestEntry {
    pub media_type: String,
    pub size: u64,
    /// Blobs the manifest references (config, layers, subject-less).
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Child manifests (an index's `manifests`).
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Seconds since the epoch when it was (last) pushed.
    #[serde(default)]
    pub pushed: u64,
}

/// A repository's metadata document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RepoMeta {
    /// Tag -> manifest digest.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Manifest digest -> what it is.
    #[serde(default)]
    pub manifests: BTreeMap<String, ManifestEntry>,
    /// Blob digests linked to the repository.
    #[serde(default)]
    pub blobs: BTreeSet<String>,
}

/// An upload's persistent description.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadInfo {
    pub repository: String,
    pub started: u64,
    /// Who opened it (`user:<name>` or `addr:<client>`), for per-identity quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The store.
pub struct Store {
    root: PathBuf,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A file time in seconds since the epoch.
fn secs(t: io::Result<SystemTime>) -> Option<u64> {
    t.ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Upload ids: random, 16 bytes as 32 hex characters.
pub const UPLOAD_ID_BYTES: usize = 16;

impl Store {
    /// Opens (creating) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for d in ["blobs/sha256", "uploads", "repositories"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(Self {
            root,
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// The blob's size, `None` when it is not stored.
    pub fn blob_size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    /// Marks a blob as recently used (its mtime), so that a concurrent gc spares it.
    pub fn touch(&self, d: &Digest) {
        if let Ok(f) = File::options().write(true).open(self.blob_path(d)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// The lock between the server and gc (`ROOT/gc.lock`, flock): held shared while the
    /// server makes an existing blob referenced or promises it to a client (manifest PUT, blob
    /// HEAD, mount), exclusive while gc deletes. Released when the returned file is dropped.
    pub fn gc_lock(&self, exclusive: bool) -> Result<File, StoreError> {
        use rustix::fs::{flock, FlockOperation};
        let p = self.root.join("gc.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(io_err("open", &p))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(&f, op).map_err(|e| io_err("lock", &p)(e.into()))?;
        Ok(f)
    }

    /// Stores `data` as a blob (manifests), crash-safely; returns its digest.
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of_bytes(data);
        let p = self.blob_path(&d);
        if p.exists() {
            self.touch(&d);
            return Ok(d);
        }
        atomic_write(&p, data).map_err(io_err("write", &p))?;
        Ok(d)
    }

    /// Every stored blob.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.root.join("blobs/sha256");
        berth_image::store::digests_in(&dir).map_err(io_err("read", &dir))
    }

    // ---- repositories -------------------------------------------------------------------

    fn meta_path(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name).join("_meta.json")
    }

    fn lock_for(&self, name: &str) -> Arc<Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    /// A repository's metadata, `None` when it does not exist. `name` must be valid.
    pub fn read_meta(&self, name: &str) -> Result<Option<RepoMeta>, StoreError> {
        let p = self.meta_path(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { path: p, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Changes a repository's metadata under its lock (and the gc lock, shared); `f` returns `Ok((value, changed))`;
    /// the document is written (crash-safely) only when changed. The repository is created
    /// when `create` and it does not exist; otherwise `f` sees `None`.
    pub fn update_meta<T, E: From<StoreError>>(
        &self,
        name: &str,
        create: bool,
        f: impl FnOnce(Option<&mut RepoMeta>) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let _gc = self.gc_lock(false)?;
        self.update_meta_locked(name, create, f)
    }

    /// [`update_meta`](Self::update_meta) for a caller that holds the gc lock already.
    pub fn update_meta_locked<T, E: From<StoreError>>(
        &self,
        name: &str,
        create: bool,
        f: impl FnOnce(Option<&mut RepoMeta>) -> Result<(T, bool), E>,
    ) -> Result<T, E> {
        let lock = self.lock_for(name);
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let existing = self.read_meta(name)?;
        let mut meta = match (existing, create) {
            (Some(m), _) => Some(m),
            (None, true) => Some(RepoMeta::default()),
            (None, false) => None,
        };
        let (v, changed) = f(meta.as_mut())?;
        if changed {
            if let Some(m) = meta {
                let p = self.meta_path(name);
                let dir = p.parent().expect("meta path has a parent");
                fs::create_dir_all(dir).map_err(io_err("create", dir))?;
                let bytes = serde_json::to_vec(&m).map_err(|source| StoreError::Corrupt {
                    path: p.clone(),
                    source,
                })?;
                atomic_write(&p, &bytes).map_err(io_err("write", &p))?;
            }
        }
        Ok(v)
    }

    /// All repository names, sorted.
    pub fn list_repos(&self) -> Result<Vec<String>, StoreError> {
        let base = self.root.join("repositories");
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &dir)(e)),
            };
            for e in rd {
                let e = e.map_err(io_err("read", &dir))?;
                let p = e.path();
                if e.file_name() == "_meta.json" {
                    if let Ok(rel) = dir.strip_prefix(&base) {
                        if let Some(s) = rel.to_str() {
                            out.push(s.to_string());
                        }
                    }
                } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    // ---- uploads --------------------------------------------------------------------------

    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub fn upload_data(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("data")
    }

    /// Creates upload `id` (fresh, [`UPLOAD_ID_BYTES`] random bytes in hex) for `repository`,
    /// opened by `owner`.
    pub fn create_upload(&self, id: &str, repository: &str, owner: &str) -> Result<(), StoreError> {
        let dir = self.upload_dir(id);
        fs::create_dir(&dir).map_err(io_err("create", &dir))?;
        let data = dir.join("data");
        File::create(&data).map_err(io_err("create", &data))?;
        let info = UploadInfo {
            repository: repository.to_string(),
            started: now_secs(),
            owner: Some(owner.to_string()),
        };
        let ip = dir.join("info.json");
        let bytes = serde_json::to_vec(&info).map_err(|source| StoreError::Corrupt {
            path: ip.clone(),
            source,
        })?;
        atomic_write(&ip, &bytes).map_err(io_err("write", &ip))?;
        Ok(())
    }

    /// The ids of the uploads on disk.
    pub fn upload_ids(&self) -> Vec<String> {
        fs::read_dir(self.root.join("uploads"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An upload's info and current size; `None` when unknown. `id` must be a hex id.
    pub fn upload(&self, id: &str) -> Option<(UploadInfo, u64)> {
        if id.len() != 2 * UPLOAD_ID_BYTES || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let dir = self.upload_dir(id);
        let info: UploadInfo =
            serde_json::from_slice(&fs::read(dir.join("info.json")).ok()?).ok()?;
        let size = fs::metadata(dir.join("data")).ok()?.len();
        Some((info, size))
    }

    /// Removes an upload.
    pub fn remove_upload(&self, id: &str) {
        let _ = fs::remove_dir_all(self.upload_dir(id));
    }

    /// Hashes an upload's data as it is on disk.
    pub fn hash_upload(&self, id: &str) -> Result<(Digest, u64), StoreError> {
        let p = self.upload_data(id);
        let mut f = File::open(&p).map_err(io_err("open", &p))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_err("read", &p))?;
            if n == 0 {
                break;
            }
            n_total += n as u64;
            h.update(&buf[..n]);
        }
        Ok((Digest::from_sha256_bytes(h.finalize().into()), n_total))
    }

    /// Makes a verified upload a blob: fsync, rename into `blobs/`, fsync the directory,
    /// remove the upload.
    pub fn commit_upload(&self, id: &str, digest: &Digest) -> Result<u64, StoreError> {
        let data = self.upload_data(id);
        let f = File::open(&data).map_err(io_err("open", &data))?;
        f.sync_all().map_err(io_err("fsync", &data))?;
        let size = f.metadata().map_err(io_err("stat", &data))?.len();
        drop(f);
        let target = self.blob_path(digest);
        fs::rename(&data, &target).map_err(io_err("rename", &data))?;
        let dir = self.root.join("blobs/sha256");
        fsync_dir(&dir).map_err(io_err("fsync", &dir))?;
        self.remove_upload(id);
        Ok(size)
    }

    /// When an upload was last active (seconds since the epoch): the latest of its start, its
    /// data's last write and its directory's last change (a session being created has no
    /// files yet). `None` when it does not exist.
    pub fn upload_last_activity(&self, id: &str) -> Option<u64> {
        let dir = self.upload_dir(id);
        let created = secs(fs::symlink_metadata(&dir).ok()?.modified());
        let started = fs::read(dir.join("info.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<UploadInfo>(&b).ok())
            .map(|i| i.started);
        let written = secs(fs::metadata(dir.join("data")).and_then(|m| m.modified()));
        Some(started.max(written).max(created).unwrap_or(0))
    }

    /// Ids of uploads last active before `older_than` (seconds since the epoch).
    pub fn stale_uploads(&self, older_than: u64) -> Vec<String> {
        self.upload_ids()
            .into_iter()
            .filter(|id| {
                self.upload_last_activity(id)
                    .is_some_and(|last| last < older_than)
            })
            .collect()
    }
}

/// Appends to an upload's data, hashing as it goes: used from a blocking thread.
pub struct UploadWriter {
    file: io::BufWriter<File>,
    pub written: u64,
}

impl UploadWriter {
    pub fn open(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            file: io::BufWriter::with_capacity(1 << 20, f),
            written: 0,
        })
    }
    pub fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.file.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }
    pub fn finish(mut self) -> io::Result<()> {
        self.file.flush()
    }
}
