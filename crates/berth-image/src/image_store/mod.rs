//! The image index: which images exist, their tags and digests, and what they are made of.
//!
//! This module holds the index and registration; [`names`] resolves and tags, [`remove`]
//! deletes and collects garbage, [`views`] makes Docker's list, history, inspect and disk-usage
//! shapes, [`content`] counts and decompresses layer content.
//!
//! Layout under the data root:
//!
//! - `blobs/sha256/…`: manifests, configs and layer blobs ([`BlobStore`]).
//! - `images/index.json`: every image, keyed by image ID (the sha256 of its config, as Docker),
//!   with its manifest digest(s), layers, repo tags and repo digests. Written with
//!   [`fsutil::write_json_atomic`] so that a crash at any moment leaves either the old or the
//!   new index; mutations hold `images/lock` (an exclusive `flock`) across read-modify-write so
//!   that concurrent processes do not lose each other's updates.
//! - `snapshotter/`: unpacked layers, one per chain ID ([`Snapshotter`]); the driver chosen
//!   the first time is recorded in the index and used from then on.
//!
//! Ordering for crash safety: blobs and snapshots are written before the index entry that
//! references them; on removal the index is updated first and content deleted afterwards, so a
//! crash can leak unreferenced content (reclaimed by [`ImageStore::gc`]) but never leaves an
//! image pointing at missing content.
//!
//! Docker's rules are followed for names and deletion: `resolve` accepts a full or familiar
//! reference, `name@digest`, a `sha256:` image ID or a unique ID prefix; `remove` untags when a
//! name is given and other references remain, refuses an image referenced in several
//! repositories or used by a container unless forced, and deletes blobs and snapshots that no
//! other image uses.

mod content;
mod names;
mod remove;
mod views;

pub use content::{decompress, layer_content_size, synthesize_manifest, tar_content_size};
pub use remove::{is_single_reference, ImageUser};
pub use views::path_match;

use names::{resolve_in, set_tags, untag_in};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use berth_api::image::{
    DeleteItem, GraphDriver, HistoryItem, ImageSummary, InspectConfig, InspectImage,
    InspectMetadata, InspectRootFs,
};

use crate::digest::Digest;
use crate::fsutil;
use crate::fsutil::PathIoError;
use crate::layer::Compression;
use crate::manifest::{
    self, media_types as mt, parse_manifest, Descriptor, ImageConfig, ImageManifest, Manifest,
    ManifestError,
};
use crate::reference::{Reference, ReferenceError};
use crate::snapshot::{self, CopySnapshotter, OverlaySnapshotter, SnapshotError, Snapshotter};
use crate::store::{BlobStore, StoreError};
use crate::timeutil;

/// An image ID: the digest of the image's config.
pub type ImageId = Digest;

/// Errors from the image store. Messages follow Docker's daemon messages.
#[derive(Debug, thiserror::Error)]
pub enum ImageStoreError {
    /// No image matches.
    #[error("No such image: {0}")]
    NotFound(String),
    /// A short ID prefix matches several images.
    #[error("multiple IDs found with provided prefix: {0}")]
    Ambiguous(String),
    /// A deletion conflict (the full Docker message).
    #[error("{0}")]
    Conflict(String),
    /// An invalid reference.
    #[error("{0}")]
    Reference(#[from] ReferenceError),
    /// An invalid request (bad filter, digest tag, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// The blob store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A snapshotter failed.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// A manifest or config is invalid.
    #[error("{0}")]
    Manifest(#[from] ManifestError),
    /// I/O on a path.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// Content referenced by an image is missing or inconsistent.
    #[error("invalid image: {0}")]
    Invalid(String),
}

impl ImageStoreError {
    /// Whether this is a "not found" error (Docker's 404; the CLI exits 1).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

io_error_fn!(io_at, ImageStoreError);

type Result<T, E = ImageStoreError> = std::result::Result<T, E>;

/// One layer of an image as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer blob (as found in the manifest: compressed or not).
    pub digest: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The DiffID (sha256 of the uncompressed tar).
    pub diff_id: Digest,
    /// Size of the layer's content (regular files and symlinks, as Docker counts it).
    pub unpacked_size: u64,
}

/// An image as recorded in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID (config digest).
    pub id: ImageId,
    /// The image manifest(s) (and any index) stored for it; the first is the primary one.
    pub manifests: Vec<Digest>,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
    /// Tags, fully qualified (`docker.io/library/busybox:latest`).
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// Digest references, fully qualified (`docker.io/library/busybox@sha256:…`).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The parent image (images made by a build step), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ImageId>,
    /// The config's creation time, seconds since the epoch (0 when absent).
    #[serde(default)]
    pub created: i64,
    /// When the image was registered here (RFC 3339).
    #[serde(default)]
    pub registered: String,
    /// When a tag last changed (RFC 3339), as Docker's `Metadata.LastTagTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tag_time: Option<String>,
}

impl ImageRecord {
    /// The sum of the layers' content sizes (Docker's `Size`).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.unpacked_size).sum()
    }

    /// The layers' chain IDs, base first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        let diffs: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        manifest::chain_ids(&diffs)
    }

    /// Every blob this image references.
    pub fn blobs(&self) -> BTreeSet<Digest> {
        let mut s: BTreeSet<Digest> = self.manifests.iter().cloned().collect();
        s.insert(self.id.clone());
        s.extend(self.layers.iter().map(|l| l.digest.clone()));
        s
    }

    /// Tags and digests, parsed.
    pub fn references(&self) -> Vec<Reference> {
        self.repo_tags
            .iter()
            .chain(&self.repo_digests)
            .filter_map(|s| Reference::parse_normalized(s).ok())
            .collect()
    }

    /// The tags (`tags`) or the digests the image is known by.
    pub(crate) fn names_mut(&mut self, tags: bool) -> &mut Vec<String> {
        if tags {
            &mut self.repo_tags
        } else {
            &mut self.repo_digests
        }
    }

    /// Familiar tag strings (`busybox:latest`), sorted as Docker sorts them.
    pub fn familiar_tags(&self) -> Vec<String> {
        familiar_sorted(&self.repo_tags)
    }

    /// Familiar digest strings (`busybox@sha256:…`), sorted.
    pub fn familiar_digests(&self) -> Vec<String> {
        familiar_sorted(&self.repo_digests)
    }
}

fn familiar_sorted(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .filter_map(|s| Reference::parse_normalized(s).ok())
        .map(|r| r.familiar_string())
        .collect();
    out.sort();
    out
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(default)]
    images: BTreeMap<String, ImageRecord>,
}

impl LayerRecord {
    /// The layer's descriptor in an image manifest.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }

    /// The layer as [`ImageStore::register`] takes it, listed in the manifest as `descriptor`.
    pub fn input(&self, descriptor: Descriptor) -> LayerInput {
        LayerInput {
            descriptor,
            diff_id: self.diff_id.clone(),
            unpacked_size: Some(self.unpacked_size),
        }
    }
}

/// A layer to register: its blob descriptor and DiffID.
#[derive(Debug, Clone)]
pub struct LayerInput {
    /// The layer blob as listed in the manifest (must already be in the blob store).
    pub descriptor: Descriptor,
    /// Its DiffID (must match the config).
    pub diff_id: Digest,
    /// Its content size when known (computed from the blob otherwise).
    pub unpacked_size: Option<u64>,
}

/// What to register: used by pull, load, import and build.
#[derive(Debug, Clone, Default)]
pub struct RegisterRequest {
    /// The image manifest's bytes (as fetched; stored verbatim).
    pub manifest: Vec<u8>,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// The layers, base first, matching the manifest.
    pub layers: Vec<LayerInput>,
    /// Tags to point at the image (moved from other images if needed).
    pub tags: Vec<Reference>,
    /// Digest references (`name@manifest-digest`) to record.
    pub repo_digests: Vec<Reference>,
    /// Other blobs to keep with the image (an index it was selected from).
    pub extra_manifests: Vec<Digest>,
    /// The parent image (build).
    pub parent: Option<ImageId>,
    /// The tags move without touching `LastTagTime` (dockerd's load adds references without
    /// `SetLastUpdated`).
    pub keep_tag_time: bool,
}

/// The result of [`ImageStore::register`].
#[derive(Debug, Clone)]
pub struct Registered {
    /// The image ID.
    pub id: ImageId,
    /// Whether the image was new.
    pub new: bool,
    /// Tags that were moved here from another image: (tag, previous image).
    pub moved_tags: Vec<(Reference, ImageId)>,
}

/// The result of [`ImageStore::prune`].
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// What was untagged and deleted, in order.
    pub deleted: Vec<DeleteItem>,
    /// Bytes reclaimed (content size of deleted layers).
    pub space_reclaimed: u64,
}

/// Per-image disk usage.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    /// The image.
    pub id: ImageId,
    /// Its size.
    pub size: u64,
    /// Size of its layers that other images share.
    pub shared_size: u64,
    /// Whether a container uses it.
    pub in_use: bool,
}

/// Disk usage of all images (`system df`).
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    /// Size of every distinct layer counted once.
    pub layers_size: u64,
    /// Per image.
    pub images: Vec<ImageUsage>,
}

impl DiskUsage {
    /// Bytes that removing every unused image would free (Docker's computation).
    pub fn reclaimable(&self) -> u64 {
        let used: u64 = self
            .images
            .iter()
            .filter(|i| i.in_use)
            .map(|i| i.size.saturating_sub(i.shared_size))
            .sum();
        self.layers_size.saturating_sub(used)
    }
}

/// Options for [`ImageStore::list_summaries`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Show intermediate images too (`-a`).
    pub all: bool,
    /// Docker filters as `(key, value)`: `dangling`, `reference`, `label`, `before`, `since`.
    pub filters: Vec<(String, String)>,
    /// The `until` filter (already parsed by the caller: it may be relative to now): only
    /// images created before this many nanoseconds since the epoch.
    pub until_nanos: Option<i64>,
    /// A dangling image's `RepoTags`/`RepoDigests` as `["<none>:<none>"]`/`["<none>@<none>"]`
    /// (API < 1.43, and the CLI's own listing) rather than empty lists.
    pub none_placeholders: bool,
}

/// How an image was named by [`ImageStore::resolve`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The image.
    pub image: ImageRecord,
    /// The reference used, when found by name (normalised; `latest` added).
    pub reference: Option<Reference>,
}

impl Resolved {
    /// Whether the image was named by ID (or ID prefix).
    pub fn by_id(&self) -> bool {
        self.reference.is_none()
    }
}

/// The image store.
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    snapshotter: OnceLock<Box<dyn Snapshotter>>,
    /// Held while a snapshotter is opened: opening sweeps unfinished container directories
    /// (no metadata yet), so a second opening racing a first one's user would remove the
    /// directory of a container being prepared.
    opening: std::sync::Mutex<()>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish()
    }
}

/// Holds the index lock until dropped.
struct IndexLock {
    _file: File,
}

impl ImageStore {
    /// Opens (creating) the store under a data root.
    pub fn open(data_root: impl Into<PathBuf>) -> Result<Self> {
        let root = data_root.into();
        let blobs = BlobStore::open(&root)?;
        let images = root.join("images");
        fs::create_dir_all(&images).map_err(io_at("create directory", &images))?;
        Ok(Self {
            root,
            blobs,
            snapshotter: OnceLock::new(),
            opening: std::sync::Mutex::new(()),
        })
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images").join("index.json")
    }

    fn snapshot_root(&self) -> PathBuf {
        self.root.join("snapshotter")
    }

    /// A scratch directory on the data root's file system (for load/save temporaries).
    pub fn tmp_dir(&self) -> Result<PathBuf> {
        let p = self.root.join("tmp");
        fs::create_dir_all(&p).map_err(io_at("create directory", &p))?;
        Ok(p)
    }

    fn lock(&self) -> Result<IndexLock> {
        let p = self.root.join("images").join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
            .map_err(io_at("open", &p))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at("lock", &p)(e.into()))?;
        Ok(IndexLock { _file: f })
    }

    fn read_index(&self) -> Result<Index> {
        let p = self.index_path();
        match fsutil::read_json::<Index>(&p) {
            Ok(i) => Ok(i),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(io_at("read", &p)(e)),
        }
    }

    fn write_index(&self, idx: &Index) -> Result<()> {
        let p = self.index_path();
        fsutil::write_json_atomic(&p, idx).map_err(io_at("write", &p))
    }

    /// The snapshotter (opened on first use; the driver is chosen once per data root).
    /// Must not be called while holding the index lock.
    pub fn snapshotter(&self) -> Result<&dyn Snapshotter> {
        if let Some(s) = self.recorded_snapshotter(&self.read_index()?)? {
            return Ok(s);
        }
        let _opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = self.snapshotter.get() {
            return Ok(s.as_ref());
        }
        let s = snapshot::open_best(&self.snapshot_root())?;
        {
            let guard = self.lock()?;
            let mut idx = self.read_index()?;
            if idx.driver.is_none() {
                idx.driver = Some(s.driver().to_string());
                self.write_index(&idx)?;
            } else {
                // Another process chose first: use its choice.
                drop(guard);
                if let Some(s) = self.open_recorded(&idx)? {
                    return Ok(s);
                }
            }
        }
        self.install_snapshotter(s);
        self.snapshotter
            .get()
            .map(|b| b.as_ref())
            .ok_or_else(|| ImageStoreError::Invalid("no snapshotter".into()))
    }

    /// Keeps the first snapshotter opened; if its opening dropped snapshots that a reboot
    /// may have torn, unpacks every image's missing layers again from their blobs.
    fn install_snapshotter(&self, s: Box<dyn Snapshotter>) {
        let dropped = s.dropped_on_open();
        if self.snapshotter.set(s).is_err() || dropped == 0 {
            return;
        }
        let images = match self.list() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list images to unpack dropped snapshots again");
                return;
            }
        };
        for rec in images {
            if let Err(e) = self.unpack(&rec.layers) {
                tracing::warn!(image = %rec.id, error = %e, "cannot unpack the image's layers again");
            }
        }
    }

    /// The content size recorded by the snapshot of `chain_id`, if it was unpacked already.
    fn content_size(&self, chain_id: &Digest) -> Option<u64> {
        let idx = self.read_index().ok()?;
        let snap = self.recorded_snapshotter(&idx).ok()??;
        snap.info(chain_id).ok()?.content_size
    }

    /// The snapshotter if one was chosen already (never takes the lock).
    fn recorded_snapshotter(&self, idx: &Index) -> Result<Option<&dyn Snapshotter>> {
        if let Some(s) = self.snapshotter.get() {
            return Ok(Some(s.as_ref()));
        }
        let _opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        self.open_recorded(idx)
    }

    /// `recorded_snapshotter`'s opening, with `opening` held by the caller.
    fn open_recorded(&self, idx: &Index) -> Result<Option<&dyn Snapshotter>> {
        if let Some(s) = self.snapshotter.get() {
            return Ok(Some(s.as_ref()));
        }
        let root = self.snapshot_root();
        let s: Box<dyn Snapshotter> = match idx.driver.as_deref() {
            Some("overlay") => Box::new(OverlaySnapshotter::open(&root)?),
            Some("copy") => Box::new(CopySnapshotter::open(&root)?),
            Some(other) => {
                return Err(ImageStoreError::Invalid(format!(
                    "unknown snapshotter driver {other:?} recorded in the image index"
                )))
            }
            None => return Ok(None),
        };
        self.install_snapshotter(s);
        Ok(self.snapshotter.get().map(|b| b.as_ref()))
    }

    /// Every image, in ID order.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.read_index()?.images.into_values().collect())
    }

    /// An image by ID.
    pub fn get(&self, id: &ImageId) -> Result<ImageRecord> {
        self.read_index()?
            .images
            .remove(id.hex())
            .ok_or_else(|| ImageStoreError::NotFound(id.to_string()))
    }

    /// The image's config, read and verified from the blob store.
    pub fn config(&self, id: &ImageId) -> Result<ImageConfig> {
        let bytes = self.blobs.read_verified(id)?;
        Ok(ImageConfig::parse(&bytes)?)
    }

    /// The image's raw config bytes.
    pub fn config_bytes(&self, id: &ImageId) -> Result<Vec<u8>> {
        Ok(self.blobs.read_verified(id)?)
    }

    /// Stores the manifest and config and records the image. Layer blobs must be in the
    /// blob store already. Snapshots are not created here (see [`Self::unpack`]).
    pub fn register(&self, req: RegisterRequest) -> Result<Registered> {
        let config = ImageConfig::parse(&req.config)?;
        let id = Digest::of_bytes(&req.config);
        let m = match parse_manifest(None, &req.manifest)? {
            Manifest::Image(_, m) => m,
            Manifest::Index(..) => {
                return Err(ImageStoreError::Invalid(
                    "register needs an image manifest, not an index".into(),
                ))
            }
        };
        manifest::validate_image(&m, &config)?;
        if m.config.digest != id {
            return Err(ImageStoreError::Invalid(format!(
                "manifest config {} does not match the config's digest {id}",
                m.config.digest
            )));
        }
        if m.layers.len() != req.layers.len() {
            return Err(ImageStoreError::Invalid(format!(
                "manifest lists {} layers, {} given",
                m.layers.len(),
                req.layers.len()
            )));
        }
        let mut layers = Vec::with_capacity(req.layers.len());
        let chains = config.chain_ids();
        for (i, (l, want)) in req.layers.iter().zip(&m.layers).enumerate() {
            if l.descriptor.digest != want.digest {
                return Err(ImageStoreError::Invalid(format!(
                    "layer {i}: {} given, manifest says {}",
                    l.descriptor.digest, want.digest
                )));
            }
            if l.diff_id != config.rootfs.diff_ids[i] {
                return Err(ImageStoreError::Invalid(format!(
                    "layer {i}: DiffID {} given, config says {}",
                    l.diff_id, config.rootfs.diff_ids[i]
                )));
            }
            if !self.blobs.exists(&want.digest) {
                return Err(StoreError::NotFound(want.digest.clone()).into());
            }
            // Unknown content size: as the unpacker counted it, else a pass over the blob.
            let unpacked_size = match l.unpacked_size.or_else(|| self.content_size(&chains[i])) {
                Some(s) => s,
                None => layer_content_size(self.blobs.open_blob(&want.digest)?)
                    .map_err(io_at("read layer", &self.blobs.blob_path(&want.digest)))?,
            };
            layers.push(LayerRecord {
                digest: want.digest.clone(),
                media_type: want.media_type.clone(),
                size: want.size,
                diff_id: l.diff_id.clone(),
                unpacked_size,
            });
        }
        // Already stored (e.g. published by the builder with its layers): not written again.
        let manifest_digest = self
            .blobs
            .write_bytes(Some(&Digest::of_bytes(&req.manifest)), &req.manifest)?;
        self.blobs.write_bytes(Some(&id), &req.config)?;
        for d in &req.extra_manifests {
            if !self.blobs.exists(d) {
                return Err(StoreError::NotFound(d.clone()).into());
            }
        }
        let created = config
            .created
            .as_deref()
            .and_then(timeutil::parse_rfc3339)
            .map(|(s, _)| s)
            .unwrap_or(0);

        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        // Content may have been removed by a concurrent deletion since we checked.
        for l in &layers {
            if !self.blobs.exists(&l.digest) {
                return Err(StoreError::NotFound(l.digest.clone()).into());
            }
        }
        let new = !idx.images.contains_key(id.hex());
        let rec = idx
            .images
            .entry(id.hex().to_string())
            .or_insert_with(|| ImageRecord {
                id: id.clone(),
                manifests: Vec::new(),
                layers: layers.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                parent: req.parent.clone(),
                created,
                registered: timeutil::now_rfc3339_nano(),
                last_tag_time: None,
            });
        // The same image with other layer blobs (say gzip instead of plain tars) keeps the
        // blobs it has: the new manifest would point at blobs that are not kept.
        let same_blobs = rec
            .layers
            .iter()
            .map(|l| &l.digest)
            .eq(layers.iter().map(|l| &l.digest));
        let mut unused_manifest = None;
        if same_blobs {
            for d in std::iter::once(&manifest_digest).chain(&req.extra_manifests) {
                if !rec.manifests.contains(d) {
                    rec.manifests.push(d.clone());
                }
            }
        } else {
            unused_manifest = Some(manifest_digest.clone());
        }
        let moved = set_tags(
            &mut idx,
            &id,
            &req.tags,
            &req.repo_digests,
            !req.keep_tag_time,
        );
        self.write_index(&idx)?;
        if let Some(m) = unused_manifest {
            if !idx.images.values().any(|i| i.manifests.contains(&m)) {
                self.blobs.delete(&m)?;
            }
        }
        Ok(Registered {
            id,
            new,
            moved_tags: moved,
        })
    }

    /// Unpacks layers (from their blobs) into snapshots, skipping those that exist; returns
    /// the top chain ID. Each layer's DiffID is verified while unpacking.
    pub fn unpack(&self, layers: &[LayerRecord]) -> Result<Option<Digest>> {
        let snap = self.snapshotter()?;
        let mut parent: Option<Digest> = None;
        for l in layers {
            let chain = snapshot::child_chain_id(parent.as_ref(), &l.diff_id);
            if !snap.exists(&chain) {
                let mut f = self.blobs.open_blob(&l.digest)?;
                snap.apply_layer(parent.as_ref(), &l.diff_id, &mut f)?;
            }
            parent = Some(chain);
        }
        Ok(parent)
    }
}

#[cfg(test)]
mod tests;
