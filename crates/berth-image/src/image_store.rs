//! The image index: which images exist, their tags and digests, and what they are made of.
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

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageStoreError + 'a {
    move |source| ImageStoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

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
                if let Some(s) = self.recorded_snapshotter(&idx)? {
                    return Ok(s);
                }
            }
        }
        self.install_snapshotter(s);
        self.recorded_snapshotter(&self.read_index()?)?
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

    /// Resolves a name or ID the way Docker does: a full or familiar reference (`latest`
    /// added), `name@digest`, a `sha256:` ID, or a unique ID prefix (with or without
    /// `sha256:`).
    pub fn resolve(&self, name_or_id: &str) -> Result<Resolved> {
        let idx = self.read_index()?;
        resolve_in(&idx, name_or_id)
    }

    /// Points `target` at the image `source` names (moving it from another image).
    pub fn tag(&self, source: &str, target: &Reference) -> Result<Registered> {
        if target.digest().is_some() {
            return Err(ImageStoreError::InvalidArgument(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        let target = if target.tag().is_none() {
            target.with_tag(crate::reference::DEFAULT_TAG)?
        } else {
            target.clone()
        };
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let id = resolve_in(&idx, source)?.image.id;
        let moved = set_tags(&mut idx, &id, std::slice::from_ref(&target), &[]);
        self.write_index(&idx)?;
        Ok(Registered {
            id,
            new: false,
            moved_tags: moved,
        })
    }

    /// Removes one tag or digest reference; returns the image it pointed at.
    pub fn untag(&self, r: &Reference) -> Result<ImageId> {
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let id = untag_in(&mut idx, r)?;
        self.write_index(&idx)?;
        Ok(id)
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
        let moved = set_tags(&mut idx, &id, &req.tags, &req.repo_digests);
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

    /// Removes an image or a reference to it, following Docker's `rmi` rules:
    ///
    /// - by name: the reference is removed (`Untagged`); if other references remain, that is
    ///   all. Refused without `force` when it is the last reference and a container uses it.
    /// - by ID: refused without `force` when the image is referenced in several repositories
    ///   (or by more than one tag); otherwise its references are removed.
    /// - then the image is deleted unless a container uses it (without `force`), together
    ///   with the blobs and snapshots that no other image uses.
    pub fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        in_use: &dyn Fn(&ImageId) -> bool,
    ) -> Result<Vec<DeleteItem>> {
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let resolved = resolve_in(&idx, name_or_id)?;
        let id = resolved.image.id.clone();
        let mut records = Vec::new();
        let refs = resolved.image.references();
        match &resolved.reference {
            Some(r) => {
                if !force && is_single_reference(&refs) && in_use(&id) {
                    return Err(ImageStoreError::Conflict(format!(
                        "conflict: unable to remove repository reference {:?} (must force) - container is using its referenced image {}",
                        name_or_id,
                        id.short()
                    )));
                }
                untag_in(&mut idx, r)?;
                records.push(DeleteItem::Untagged(r.familiar_string()));
                // The last tag of a repository gone: drop its digest references too.
                if r.digest().is_none() {
                    let rec = &idx.images[id.hex()];
                    let same_repo_tag = rec.repo_tags.iter().any(|t| {
                        Reference::parse_normalized(t).is_ok_and(|t| t.name() == r.name())
                    });
                    if !same_repo_tag {
                        let digests: Vec<String> = rec
                            .repo_digests
                            .iter()
                            .filter(|d| {
                                Reference::parse_normalized(d).is_ok_and(|d| d.name() == r.name())
                            })
                            .cloned()
                            .collect();
                        for d in digests {
                            let dr = Reference::parse_normalized(&d)?;
                            untag_in(&mut idx, &dr)?;
                            records.push(DeleteItem::Untagged(dr.familiar_string()));
                        }
                    }
                }
                let rec = &idx.images[id.hex()];
                if !rec.repo_tags.is_empty() || !rec.repo_digests.is_empty() {
                    self.write_index(&idx)?;
                    return Ok(records);
                }
            }
            None => {
                if is_single_reference(&refs) {
                    if !force && in_use(&id) {
                        return Err(conflict_in_use(&id));
                    }
                    for r in &refs {
                        untag_in(&mut idx, r)?;
                        records.push(DeleteItem::Untagged(r.familiar_string()));
                    }
                }
            }
        }
        // imageDeleteHelper
        let rec = idx.images[id.hex()].clone();
        if !force {
            if in_use(&id) {
                return Err(conflict_in_use(&id));
            }
            if !rec.repo_tags.is_empty() || !rec.repo_digests.is_empty() {
                return Err(ImageStoreError::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    id.short()
                )));
            }
            if idx.images.values().any(|i| i.parent.as_ref() == Some(&id)) {
                return Err(ImageStoreError::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image has dependent child images",
                    id.short()
                )));
            }
        }
        for r in rec.references() {
            untag_in(&mut idx, &r)?;
            records.push(DeleteItem::Untagged(r.familiar_string()));
        }
        idx.images.remove(id.hex());
        for child in idx.images.values_mut() {
            if child.parent.as_ref() == Some(&id) {
                child.parent = None;
            }
        }
        self.write_index(&idx)?;
        records.push(DeleteItem::Deleted(id.to_string()));
        let (deleted_layers, _) = self.delete_content(&idx, &rec)?;
        records.extend(
            deleted_layers
                .into_iter()
                .map(|c| DeleteItem::Deleted(c.to_string())),
        );
        Ok(records)
    }

    /// Deletes the blobs and snapshots of `rec` that no image in `idx` uses. Returns the
    /// deleted chain IDs (top first) and the content size of their layers.
    fn delete_content(&self, idx: &Index, rec: &ImageRecord) -> Result<(Vec<Digest>, u64)> {
        let mut used_blobs = BTreeSet::new();
        let mut used_chains = BTreeSet::new();
        for i in idx.images.values() {
            used_blobs.extend(i.blobs());
            used_chains.extend(i.chain_ids());
        }
        for b in rec.blobs() {
            if !used_blobs.contains(&b) {
                self.blobs.delete(&b)?;
            }
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        let chains = rec.chain_ids();
        let snap = self.recorded_snapshotter(idx)?;
        for (chain, layer) in chains.iter().zip(&rec.layers).rev() {
            if used_chains.contains(chain) {
                // A lower snapshot still in use: everything below is in use too.
                break;
            }
            reclaimed += layer.unpacked_size;
            deleted.push(chain.clone());
            if let Some(s) = snap {
                if s.exists(chain) {
                    match s.remove(chain) {
                        Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                        // Used by a container or another snapshot: keep it.
                        Err(SnapshotError::InUse { .. }) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Removes dangling images (no references at all, no children), or with `all` every image
    /// no container uses. Images used by containers are kept.
    pub fn prune(&self, all: bool, in_use: &dyn Fn(&ImageId) -> bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        loop {
            let _g = self.lock()?;
            let mut idx = self.read_index()?;
            let parents: BTreeSet<Digest> = idx
                .images
                .values()
                .filter_map(|i| i.parent.clone())
                .collect();
            let victim = idx
                .images
                .values()
                .find(|i| {
                    !in_use(&i.id)
                        && !parents.contains(&i.id)
                        && (all || (i.repo_tags.is_empty() && i.repo_digests.is_empty()))
                })
                .cloned();
            let Some(rec) = victim else { break };
            for r in rec.references() {
                untag_in(&mut idx, &r)?;
                report
                    .deleted
                    .push(DeleteItem::Untagged(r.familiar_string()));
            }
            idx.images.remove(rec.id.hex());
            self.write_index(&idx)?;
            report.deleted.push(DeleteItem::Deleted(rec.id.to_string()));
            let (layers, reclaimed) = self.delete_content(&idx, &rec)?;
            report.deleted.extend(
                layers
                    .into_iter()
                    .map(|c| DeleteItem::Deleted(c.to_string())),
            );
            report.space_reclaimed += reclaimed;
        }
        Ok(report)
    }

    /// Deletes blobs and snapshots no image references (leftovers of crashes or failed
    /// loads). Only safe when no other process is adding images.
    pub fn gc(&self) -> Result<usize> {
        let _g = self.lock()?;
        let idx = self.read_index()?;
        let mut used_blobs = BTreeSet::new();
        let mut used_chains = BTreeSet::new();
        for i in idx.images.values() {
            used_blobs.extend(i.blobs());
            used_chains.extend(i.chain_ids());
        }
        let mut n = 0;
        for b in self.blobs.list()? {
            if !used_blobs.contains(&b) && self.blobs.delete(&b)? {
                n += 1;
            }
        }
        if let Some(snap) = self.recorded_snapshotter(&idx)? {
            // Remove unused snapshots children first: repeat until nothing more goes.
            loop {
                let mut removed = false;
                for s in snap.list()? {
                    if !used_chains.contains(&s.chain_id) && snap.remove(&s.chain_id).is_ok() {
                        removed = true;
                        n += 1;
                    }
                }
                if !removed {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Removes blobs from `candidates` that no image references (cleanup after a failed load
    /// that wrote them).
    pub fn discard_unreferenced(&self, candidates: &[Digest]) -> Result<()> {
        let _g = self.lock()?;
        let idx = self.read_index()?;
        let used: BTreeSet<Digest> = idx.images.values().flat_map(|i| i.blobs()).collect();
        for c in candidates {
            if !used.contains(c) {
                self.blobs.delete(c)?;
            }
        }
        Ok(())
    }

    /// Docker's image list with its filters and `-a` rule.
    pub fn list_summaries(&self, opts: &ListOptions) -> Result<Vec<ImageSummary>> {
        let idx = self.read_index()?;
        let mut dangling: Option<bool> = None;
        let mut patterns = Vec::new();
        let mut labels = Vec::new();
        let mut before: Option<i64> = None;
        let mut since: Option<i64> = None;
        for (k, v) in &opts.filters {
            match k.as_str() {
                "dangling" => match v.to_ascii_lowercase().as_str() {
                    "true" | "1" => dangling = Some(true),
                    "false" | "0" => dangling = Some(false),
                    _ => {
                        return Err(ImageStoreError::InvalidArgument(format!(
                            "invalid filter 'dangling={v}'"
                        )))
                    }
                },
                "reference" => patterns.push(v.clone()),
                "label" => labels.push(v.clone()),
                "before" => before = Some(resolve_in(&idx, v)?.image.created),
                "since" => since = Some(resolve_in(&idx, v)?.image.created),
                other => {
                    return Err(ImageStoreError::InvalidArgument(format!(
                        "invalid filter '{other}'"
                    )))
                }
            }
        }
        let parents: BTreeSet<Digest> = idx
            .images
            .values()
            .filter_map(|i| i.parent.clone())
            .collect();
        let mut out = Vec::new();
        for rec in idx.images.values() {
            if before.is_some_and(|b| rec.created >= b) || since.is_some_and(|s| rec.created <= s) {
                continue;
            }
            let cfg_labels = self
                .config(&rec.id)
                .ok()
                .and_then(|c| c.config.and_then(|c| c.labels))
                .unwrap_or_default();
            if !labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => cfg_labels.get(k).is_some_and(|x| x == v),
                None => cfg_labels.contains_key(l),
            }) {
                continue;
            }
            let keep = |r: &Reference| {
                patterns.is_empty()
                    || patterns.iter().any(|p| {
                        path_match(p, &r.familiar_string()) || path_match(p, &r.familiar_name())
                    })
            };
            let mut repo_tags: Vec<String> = Vec::new();
            let mut repo_digests: Vec<String> = Vec::new();
            for t in &rec.repo_tags {
                if let Ok(r) = Reference::parse_normalized(t) {
                    if keep(&r) {
                        repo_tags.push(r.familiar_string());
                    }
                }
            }
            for t in &rec.repo_digests {
                if let Ok(r) = Reference::parse_normalized(t) {
                    if keep(&r) {
                        repo_digests.push(r.familiar_string());
                    }
                }
            }
            repo_tags.sort();
            repo_digests.sort();
            if repo_tags.is_empty() && repo_digests.is_empty() {
                if opts.all || !parents.contains(&rec.id) {
                    if dangling == Some(false) || !patterns.is_empty() {
                        continue;
                    }
                    repo_tags = vec!["<none>:<none>".into()];
                    repo_digests = vec!["<none>@<none>".into()];
                } else {
                    continue;
                }
            } else if dangling == Some(true) && !repo_tags.is_empty() {
                continue;
            }
            out.push(ImageSummary {
                id: rec.id.to_string(),
                parent_id: rec
                    .parent
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                repo_tags,
                repo_digests,
                created: rec.created,
                size: rec.size() as i64,
                shared_size: -1,
                labels: cfg_labels,
                containers: -1,
            });
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Docker's `history` for an image, newest first.
    pub fn history(&self, id: &ImageId) -> Result<Vec<HistoryItem>> {
        let rec = self.get(id)?;
        let cfg = self.config(id)?;
        let mut items = Vec::new();
        let mut layer_iter = rec.layers.iter();
        if cfg.history.is_empty() {
            for l in &rec.layers {
                items.push(HistoryItem {
                    id: "<missing>".into(),
                    created: rec.created,
                    created_by: String::new(),
                    tags: Vec::new(),
                    size: l.unpacked_size as i64,
                    comment: String::new(),
                });
            }
        }
        for h in &cfg.history {
            let size = if h.empty_layer {
                0
            } else {
                layer_iter.next().map(|l| l.unpacked_size).unwrap_or(0)
            };
            items.push(HistoryItem {
                id: "<missing>".into(),
                created: h
                    .created
                    .as_deref()
                    .and_then(timeutil::parse_rfc3339)
                    .map(|(s, _)| s)
                    .unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size: size as i64,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        items.reverse();
        if let Some(top) = items.first_mut() {
            top.id = rec.id.to_string();
            top.tags = rec.familiar_tags();
        }
        Ok(items)
    }

    /// Disk usage of images, counting each layer once.
    pub fn disk_usage(&self, in_use: &dyn Fn(&ImageId) -> bool) -> Result<DiskUsage> {
        let idx = self.read_index()?;
        let mut layer_users: HashMap<Digest, (u64, usize)> = HashMap::new();
        for rec in idx.images.values() {
            for (c, l) in rec.chain_ids().into_iter().zip(&rec.layers) {
                let e = layer_users.entry(c).or_insert((l.unpacked_size, 0));
                e.1 += 1;
            }
        }
        let layers_size = layer_users.values().map(|(s, _)| s).sum();
        let images = idx
            .images
            .values()
            .map(|rec| {
                let shared = rec
                    .chain_ids()
                    .iter()
                    .zip(&rec.layers)
                    .filter(|(c, _)| layer_users.get(*c).is_some_and(|(_, n)| *n > 1))
                    .map(|(_, l)| l.unpacked_size)
                    .sum();
                ImageUsage {
                    id: rec.id.clone(),
                    size: rec.size(),
                    shared_size: shared,
                    in_use: in_use(&rec.id),
                }
            })
            .collect();
        Ok(DiskUsage {
            layers_size,
            images,
        })
    }

    /// Docker's `image inspect` document.
    pub fn inspect(&self, id: &ImageId) -> Result<InspectImage> {
        let rec = self.get(id)?;
        let cfg = self.config(id)?;
        let c = cfg.config.clone().unwrap_or_default();
        let extra = |k: &str| c.extra.get(k).cloned().filter(|v| !v.is_null());
        let config = InspectConfig {
            hostname: String::new(),
            domainname: String::new(),
            user: c.user.clone().unwrap_or_default(),
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            exposed_ports: c.exposed_ports.clone(),
            tty: false,
            open_stdin: false,
            stdin_once: false,
            env: c.env.clone(),
            cmd: c.cmd.clone(),
            healthcheck: extra("Healthcheck"),
            args_escaped: extra("ArgsEscaped")
                .and_then(|v| v.as_bool())
                .filter(|b| *b),
            image: String::new(),
            volumes: c.volumes.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            entrypoint: c.entrypoint.clone(),
            on_build: extra("OnBuild"),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
            shell: extra("Shell"),
        };
        let created = cfg
            .created
            .as_deref()
            .and_then(timeutil::parse_rfc3339)
            .map(|(s, n)| timeutil::format_rfc3339_nano(s, n))
            .unwrap_or_default();
        let str_extra = |k: &str| {
            cfg.extra
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let driver = self
            .read_index()?
            .driver
            .unwrap_or_else(|| "overlay".to_string());
        let mut data = BTreeMap::new();
        let chains = rec.chain_ids();
        let snapdir = self.snapshot_root().join("snapshots");
        let sub = if driver == "copy" { "fs" } else { "diff" };
        if let Some(top) = chains.last() {
            if driver == "copy" {
                data.insert(
                    "RootDir".to_string(),
                    snapdir.join(top.hex()).join(sub).display().to_string(),
                );
            } else {
                data.insert(
                    "UpperDir".to_string(),
                    snapdir.join(top.hex()).join(sub).display().to_string(),
                );
                let lowers: Vec<String> = chains[..chains.len() - 1]
                    .iter()
                    .rev()
                    .map(|c| snapdir.join(c.hex()).join(sub).display().to_string())
                    .collect();
                if !lowers.is_empty() {
                    data.insert("LowerDir".to_string(), lowers.join(":"));
                }
            }
        }
        Ok(InspectImage {
            id: rec.id.to_string(),
            repo_tags: rec.familiar_tags(),
            repo_digests: rec.familiar_digests(),
            parent: rec
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            comment: cfg
                .extra
                .get("comment")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            created,
            container_config: None,
            docker_version: str_extra("docker_version"),
            author: cfg.author.clone().unwrap_or_default(),
            config,
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
            os: cfg.os.clone(),
            os_version: cfg.os_version.clone(),
            size: rec.size() as i64,
            graph_driver: GraphDriver { name: driver, data },
            root_fs: InspectRootFs {
                kind: "layers".into(),
                layers: cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata: InspectMetadata {
                last_tag_time: rec
                    .last_tag_time
                    .clone()
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            },
        })
    }
}

fn conflict_in_use(id: &ImageId) -> ImageStoreError {
    ImageStoreError::Conflict(format!(
        "conflict: unable to delete {} (must be forced) - image is being used by a container",
        id.short()
    ))
}

/// At most one tag, and every reference in one repository (moby's `isSingleReference`).
fn is_single_reference(refs: &[Reference]) -> bool {
    let tags = refs.iter().filter(|r| r.digest().is_none()).count();
    if tags > 1 {
        return false;
    }
    let names: BTreeSet<String> = refs.iter().map(|r| r.name()).collect();
    names.len() <= 1
}

fn resolve_in(idx: &Index, s: &str) -> Result<Resolved> {
    let by_id = |hex: &str| {
        idx.images.get(hex).map(|r| Resolved {
            image: r.clone(),
            reference: None,
        })
    };
    if let Some(hex) = s.strip_prefix("sha256:") {
        if hex.len() == 64 {
            return by_id(hex).ok_or_else(|| ImageStoreError::NotFound(s.to_string()));
        }
    }
    let mut not_found = s.to_string();
    match Reference::parse_normalized(s) {
        Ok(r) => {
            let r = if r.tag().is_none() && r.digest().is_none() {
                r.with_tag(crate::reference::DEFAULT_TAG)?
            } else {
                r
            };
            if let Some(img) = find_by_reference(idx, &r) {
                return Ok(Resolved {
                    image: img.clone(),
                    reference: Some(r),
                });
            }
            not_found = r.familiar_string();
        }
        Err(e) => {
            if !is_id_prefix(s) {
                return Err(e.into());
            }
        }
    }
    if is_id_prefix(s) {
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        let mut hits = idx
            .images
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        if let Some((_, first)) = hits.next() {
            if hits.next().is_some() {
                return Err(ImageStoreError::Ambiguous(prefix.to_string()));
            }
            return Ok(Resolved {
                image: first.clone(),
                reference: None,
            });
        }
    }
    Err(ImageStoreError::NotFound(not_found))
}

fn is_id_prefix(s: &str) -> bool {
    let p = s.strip_prefix("sha256:").unwrap_or(s);
    !p.is_empty() && p.len() <= 64 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn find_by_reference<'a>(idx: &'a Index, r: &Reference) -> Option<&'a ImageRecord> {
    let full = r.to_string();
    if let Some(d) = r.digest() {
        // name@digest (a tag alongside is ignored, as Docker does).
        let canon = r.repository().with_digest(d.clone()).to_string();
        if let Some(i) = idx
            .images
            .values()
            .find(|i| i.repo_digests.contains(&canon))
        {
            return Some(i);
        }
        // A manifest digest we know for an image of that repository.
        return idx.images.values().find(|i| {
            i.manifests.contains(d) && i.references().iter().any(|x| x.name() == r.name())
        });
    }
    idx.images.values().find(|i| i.repo_tags.contains(&full))
}

/// Points tags and digest references at `id`, moving them from other images; returns the
/// moved tags with their previous images.
fn set_tags(
    idx: &mut Index,
    id: &ImageId,
    tags: &[Reference],
    digests: &[Reference],
) -> Vec<(Reference, ImageId)> {
    let mut moved = Vec::new();
    let now = timeutil::now_rfc3339_nano();
    for (r, is_tag) in tags
        .iter()
        .map(|t| (t, true))
        .chain(digests.iter().map(|d| (d, false)))
    {
        let s = r.to_string();
        for other in idx.images.values_mut() {
            if &other.id == id {
                continue;
            }
            let list = if is_tag {
                &mut other.repo_tags
            } else {
                &mut other.repo_digests
            };
            if let Some(pos) = list.iter().position(|x| *x == s) {
                list.remove(pos);
                if is_tag {
                    moved.push((r.clone(), other.id.clone()));
                }
            }
        }
        if let Some(rec) = idx.images.get_mut(id.hex()) {
            let list = if is_tag {
                &mut rec.repo_tags
            } else {
                &mut rec.repo_digests
            };
            if !list.contains(&s) {
                list.push(s);
                list.sort();
            }
            if is_tag {
                rec.last_tag_time = Some(now.clone());
            }
        }
    }
    moved
}

fn untag_in(idx: &mut Index, r: &Reference) -> Result<ImageId> {
    let r = if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(crate::reference::DEFAULT_TAG)?
    } else {
        r.clone()
    };
    let (s, is_digest) = match r.digest() {
        Some(d) => (r.repository().with_digest(d.clone()).to_string(), true),
        None => (r.to_string(), false),
    };
    for rec in idx.images.values_mut() {
        let list = if is_digest {
            &mut rec.repo_digests
        } else {
            &mut rec.repo_tags
        };
        if let Some(pos) = list.iter().position(|x| *x == s) {
            list.remove(pos);
            return Ok(rec.id.clone());
        }
    }
    Err(ImageStoreError::NotFound(r.familiar_string()))
}

/// Go's `path.Match`: `*` (no `/`), `?`, `[…]` classes with ranges and `^`, `\` escapes.
/// A malformed pattern matches nothing.
pub fn path_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> Option<bool> {
        if p.is_empty() {
            return Some(n.is_empty());
        }
        match p[0] {
            '*' => {
                for i in 0..=n.len() {
                    if i > 0 && n[i - 1] == '/' {
                        break;
                    }
                    if m(&p[1..], &n[i..])? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            '?' => {
                if n.is_empty() || n[0] == '/' {
                    return Some(false);
                }
                m(&p[1..], &n[1..])
            }
            '[' => {
                let mut i = 1;
                let negate = p.get(1) == Some(&'^');
                if negate {
                    i += 1;
                }
                let mut matched = false;
                let c = *n.first()?;
                let mut first = true;
                loop {
                    let ch = *p.get(i)?;
                    if ch == ']' && !first {
                        i += 1;
                        break;
                    }
                    first = false;
                    let lo = if ch == '\\' {
                        i += 1;
                        *p.get(i)?
                    } else {
                        ch
                    };
                    i += 1;
                    let hi = if p.get(i) == Some(&'-') && p.get(i + 1) != Some(&']') {
                        i += 1;
                        let h = if p.get(i)? == &'\\' {
                            i += 1;
                            *p.get(i)?
                        } else {
                            *p.get(i)?
                        };
                        i += 1;
                        h
                    } else {
                        lo
                    };
                    if lo <= c && c <= hi {
                        matched = true;
                    }
                }
                if matched == negate || c == '/' {
                    return Some(false);
                }
                m(&p[i..], &n[1..])
            }
            '\\' => {
                let ch = *p.get(1)?;
                if n.first() != Some(&ch) {
                    return Some(false);
                }
                m(&p[2..], &n[1..])
            }
            ch => {
                if n.first() != Some(&ch) {
                    return Some(false);
                }
                m(&p[1..], &n[1..])
            }
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n).unwrap_or(false)
}

/// Content size of a layer stream (plain, gzip or zstd tar) as Docker counts it: regular file
/// sizes plus symlink target lengths (hard links count once, directories not at all).
pub fn layer_content_size(reader: impl Read) -> io::Result<u64> {
    let dec = decompress(reader)?;
    tar_content_size(dec)
}

/// Like [`layer_content_size`] for an uncompressed tar.
pub fn tar_content_size(reader: impl Read) -> io::Result<u64> {
    let mut ar = tar::Archive::new(reader);
    let mut total = 0u64;
    for e in ar.entries()? {
        let e = e?;
        let h = e.header();
        match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let name = e.path_bytes();
                let base = name.rsplit(|b| *b == b'/').next().unwrap_or(&name);
                if !base.starts_with(b".wh.") {
                    total += e.size();
                }
            }
            tar::EntryType::Symlink => {
                total += e.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(total)
}

/// Wraps a stream in the decompressor its magic bytes call for (plain, gzip, zstd).
pub fn decompress<'a>(mut reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 6];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head[..got].to_vec();
    let comp = Compression::detect(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let chained = io::BufReader::with_capacity(256 * 1024, io::Cursor::new(head).chain(reader));
    Ok(match comp {
        Compression::None => Box::new(chained),
        Compression::Gzip => crate::gzip::decoder(chained),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(chained)?),
    })
}

/// An OCI manifest for a config and layers (used when an image arrives without one: load
/// from a docker archive, import, build).
pub fn synthesize_manifest(config: &[u8], layers: &[Descriptor]) -> Vec<u8> {
    let m = ImageManifest {
        schema_version: 2,
        media_type: Some(mt::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor {
            media_type: mt::OCI_CONFIG.to_string(),
            digest: Digest::of_bytes(config),
            size: config.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        },
        layers: layers.to_vec(),
        subject: None,
        annotations: None,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Registers an image made of the given layer tars; returns its ID.
    fn add_image(s: &ImageStore, layers: &[Vec<u8>], tags: &[&str], label: &str) -> ImageId {
        let mut descs = Vec::new();
        let mut inputs = Vec::new();
        let mut diffs = Vec::new();
        for l in layers {
            let d = s.blobs().write_bytes(None, l).unwrap();
            let desc = Descriptor {
                media_type: mt::OCI_LAYER.into(),
                digest: d.clone(),
                size: l.len() as u64,
                urls: None,
                annotations: None,
                platform: None,
                artifact_type: None,
            };
            descs.push(desc.clone());
            inputs.push(LayerInput {
                descriptor: desc,
                diff_id: d.clone(),
                unpacked_size: None,
            });
            diffs.push(format!("\"{d}\""));
        }
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","created":"2024-01-0{}T00:00:00Z","config":{{"Labels":{{"l":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            1 + label.len() % 9,
            diffs.join(",")
        );
        let manifest = synthesize_manifest(config.as_bytes(), &descs);
        s.register(RegisterRequest {
            manifest,
            config: config.into_bytes(),
            layers: inputs,
            tags: tags.iter().map(|t| Reference::parse(t).unwrap()).collect(),
            ..Default::default()
        })
        .unwrap()
        .id
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let d = tempfile::tempdir().unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        (d, s)
    }

    fn never(_: &ImageId) -> bool {
        false
    }

    #[test]
    fn register_resolve_and_tags() {
        let (_d, s) = store();
        let base = tar_with(&[("a", b"hello")]);
        let id = add_image(
            &s,
            std::slice::from_ref(&base),
            &["busybox", "example.com/x/y:1"],
            "a",
        );
        let rec = s.get(&id).unwrap();
        assert_eq!(rec.size(), 5);
        assert_eq!(
            rec.familiar_tags(),
            vec!["busybox:latest", "example.com/x/y:1"]
        );
        for name in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
            "library/busybox",
            &id.to_string(),
            id.hex(),
            &id.hex()[..12],
            &id.hex()[..3],
            &format!("sha256:{}", &id.hex()[..12]),
            "example.com/x/y:1",
        ] {
            assert_eq!(s.resolve(name).unwrap().image.id, id, "{name}");
        }
        assert!(s.resolve("busybox").unwrap().reference.is_some());
        assert!(s.resolve(&id.hex()[..12]).unwrap().by_id());
        let e = s.resolve("nothere").unwrap_err();
        assert_eq!(e.to_string(), "No such image: nothere:latest");
        assert!(e.is_not_found());
        assert!(s.resolve("busybox:2").is_err());
        assert!(matches!(
            s.resolve("UPPER"),
            Err(ImageStoreError::Reference(_))
        ));
        // Tag moves between images.
        let other = add_image(&s, &[tar_with(&[("b", b"x")])], &[], "bb");
        let r = s
            .tag(other.hex(), &Reference::parse("busybox").unwrap())
            .unwrap();
        assert_eq!(r.moved_tags.len(), 1);
        assert_eq!(s.resolve("busybox").unwrap().image.id, other);
        assert!(s.get(&other).unwrap().last_tag_time.is_some());
        assert_eq!(
            s.get(&id).unwrap().familiar_tags(),
            vec!["example.com/x/y:1"]
        );
        assert!(s
            .tag("busybox", &Reference::parse(&format!("a@{id}")).unwrap())
            .is_err());
        // Untag.
        assert_eq!(
            s.untag(&Reference::parse("busybox").unwrap()).unwrap(),
            other
        );
        assert!(s.untag(&Reference::parse("busybox").unwrap()).is_err());
    }

    #[test]
    fn ambiguous_prefix() {
        let (_d, s) = store();
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(add_image(
                &s,
                &[tar_with(&[("f", format!("{i}").as_bytes())])],
                &[],
                &"x".repeat(i % 5),
            ));
        }
        // Some single-hex-digit prefix is shared by two of 40 images.
        let mut counts: HashMap<char, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(id.hex().chars().next().unwrap()).or_default() += 1;
        }
        let (c, _) = counts.iter().find(|(_, n)| **n > 1).unwrap();
        assert!(matches!(
            s.resolve(&c.to_string()),
            Err(ImageStoreError::Ambiguous(_))
        ));
    }

    #[test]
    fn rmi_rules() {
        let (_d, s) = store();
        let shared = tar_with(&[("base", b"base layer")]);
        let top = tar_with(&[("top", b"top")]);
        let a = add_image(&s, std::slice::from_ref(&shared), &["a:1", "a:2"], "a");
        let b = add_image(&s, &[shared.clone(), top.clone()], &["b"], "b");
        // Two tags: removing by name only untags.
        let out = s.remove("a:1", false, &never).unwrap();
        assert_eq!(out, vec![DeleteItem::Untagged("a:1".into())]);
        assert!(s.get(&a).is_ok());
        // Referenced in several repositories: by ID refused without force.
        s.tag("a:2", &Reference::parse("other:x").unwrap()).unwrap();
        let e = s.remove(&a.hex()[..12], false, &never).unwrap_err();
        assert!(
            e.to_string()
                .contains("must be forced) - image is referenced in multiple repositories"),
            "{e}"
        );
        // In use: refused.
        let used = |i: &ImageId| *i == a;
        s.untag(&Reference::parse("other:x").unwrap()).unwrap();
        let e = s.remove("a:2", false, &used).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "conflict: unable to remove repository reference \"a:2\" (must force)"
            ),
            "{e}"
        );
        let e = s.remove(a.hex(), false, &used).unwrap_err();
        assert!(e.to_string().contains("being used"), "{e}");
        // Last reference by name: untag and delete; the shared layer blob stays for b.
        let out = s.remove("a:2", false, &never).unwrap();
        assert_eq!(out[0], DeleteItem::Untagged("a:2".into()));
        assert_eq!(out[1], DeleteItem::Deleted(a.to_string()));
        assert!(s.get(&a).is_err());
        let shared_d = Digest::of_bytes(&shared);
        assert!(s.blobs().exists(&shared_d));
        assert!(!s.blobs().exists(&a));
        // By ID with one tag: untag + delete, now the shared blob goes too.
        let out = s.remove(&b.hex()[..5], false, &never).unwrap();
        assert_eq!(out[0], DeleteItem::Untagged("b:latest".into()));
        assert_eq!(out[1], DeleteItem::Deleted(b.to_string()));
        assert!(!s.blobs().exists(&shared_d));
        assert!(
            s.blobs().list().unwrap().is_empty(),
            "{:?}",
            s.blobs().list()
        );
        assert!(s.list().unwrap().is_empty());
        // Force removes every reference.
        let c = add_image(&s, std::slice::from_ref(&top), &["c", "d"], "c");
        let out = s.remove(c.hex(), true, &never).unwrap();
        assert_eq!(out.len(), 4, "{out:?}"); // 2 untagged, the image, its layer
        assert!(s
            .remove("nothing", true, &never)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn list_filters_and_prune() {
        let (_d, s) = store();
        let a = add_image(&s, &[tar_with(&[("a", b"1")])], &["app:1"], "x");
        let b = add_image(&s, &[tar_with(&[("b", b"22")])], &[], "yy");
        let c = add_image(
            &s,
            &[tar_with(&[("c", b"333")])],
            &["tool:2", "app:3"],
            "zzz",
        );
        let ids = |opts: ListOptions| -> Vec<String> {
            s.list_summaries(&opts)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect()
        };
        let f = |k: &str, v: &str| ListOptions {
            all: false,
            filters: vec![(k.into(), v.into())],
        };
        assert_eq!(ids(ListOptions::default()).len(), 3);
        assert_eq!(ids(f("dangling", "true")), vec![b.to_string()]);
        assert_eq!(ids(f("dangling", "false")).len(), 2);
        assert_eq!(ids(f("reference", "app")).len(), 2);
        let sum = s.list_summaries(&f("reference", "app:*")).unwrap();
        let cs = sum.iter().find(|i| i.id == c.to_string()).unwrap();
        assert_eq!(cs.repo_tags, vec!["app:3"]);
        assert_eq!(ids(f("reference", "to*")), vec![c.to_string()]);
        assert_eq!(ids(f("label", "l=yy")), vec![b.to_string()]);
        assert_eq!(ids(f("label", "l")).len(), 3);
        assert!(s.list_summaries(&f("bogus", "1")).is_err());
        // created: a=2024-01-02, b=2024-01-03, c=2024-01-04
        assert_eq!(
            ids(f("before", "tool:2")),
            vec![b.to_string(), a.to_string()]
        );
        assert_eq!(ids(f("since", "app:1")), vec![c.to_string(), b.to_string()]);
        // Disk usage.
        let du = s.disk_usage(&|i| *i == a).unwrap();
        assert_eq!(du.layers_size, 6);
        assert_eq!(du.reclaimable(), 5);
        // Prune dangling.
        let p = s.prune(false, &never).unwrap();
        assert_eq!(p.deleted[0], DeleteItem::Deleted(b.to_string()));
        assert_eq!(p.space_reclaimed, 2);
        // Prune all but the used one.
        let p = s.prune(true, &|i| *i == a).unwrap();
        assert_eq!(p.space_reclaimed, 3);
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn history_and_inspect() {
        let (_d, s) = store();
        let id = add_image(&s, &[tar_with(&[("a", b"abc")])], &["h"], "l");
        let h = s.history(&id).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].id, id.to_string());
        assert_eq!(h[0].size, 3);
        assert_eq!(h[0].tags, vec!["h:latest"]);
        let i = s.inspect(&id).unwrap();
        let v = serde_json::to_value(&i).unwrap();
        assert_eq!(v["Id"], id.to_string());
        assert_eq!(v["RepoTags"][0], "h:latest");
        assert_eq!(v["Config"]["Labels"]["l"], "l");
        assert!(v["Config"]["Cmd"].is_null());
        assert_eq!(v["RootFS"]["Type"], "layers");
        assert_eq!(v["Size"], 3);
        assert_eq!(v["Created"], "2024-01-02T00:00:00Z");
    }

    #[test]
    fn register_rejects_inconsistent_input() {
        let (_d, s) = store();
        let l = tar_with(&[("a", b"1")]);
        let d = Digest::of_bytes(&l);
        let desc = Descriptor {
            media_type: mt::OCI_LAYER.into(),
            digest: d.clone(),
            size: l.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        };
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let manifest = synthesize_manifest(config.as_bytes(), std::slice::from_ref(&desc));
        let req = RegisterRequest {
            manifest,
            config: config.into_bytes(),
            layers: vec![LayerInput {
                descriptor: desc,
                diff_id: d.clone(),
                unpacked_size: None,
            }],
            ..Default::default()
        };
        // Layer blob missing.
        assert!(s.register(req.clone()).is_err());
        s.blobs().write_bytes(None, &l).unwrap();
        let mut bad = req.clone();
        bad.layers[0].diff_id = Digest::of_bytes(b"x");
        assert!(s.register(bad).is_err());
        let mut bad = req.clone();
        bad.config = b"{}".to_vec();
        assert!(s.register(bad).is_err());
        assert!(s.list().unwrap().is_empty());
        s.register(req).unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_tagging_keeps_every_update() {
        let (d, s) = store();
        let id = add_image(&s, &[tar_with(&[("a", b"1")])], &[], "a");
        let root = d.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let root = root.clone();
                let id = id.clone();
                std::thread::spawn(move || {
                    let s = ImageStore::open(root).unwrap();
                    for j in 0..5 {
                        s.tag(id.hex(), &Reference::parse(&format!("t{i}:{j}")).unwrap())
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.get(&id).unwrap().repo_tags.len(), 40);
    }

    #[test]
    fn gc_removes_only_unreferenced_content() {
        let (_d, s) = store();
        let l = tar_with(&[("a", b"kept")]);
        let id = add_image(&s, std::slice::from_ref(&l), &["kept"], "a");
        let rec = s.get(&id).unwrap();
        s.unpack(&rec.layers).unwrap();
        // Leftovers of an interrupted load: a blob and a snapshot nobody references.
        let orphan = tar_with(&[("b", b"orphan")]);
        let od = s.blobs().write_bytes(None, &orphan).unwrap();
        s.snapshotter()
            .unwrap()
            .apply_layer(None, &od, &mut &orphan[..])
            .unwrap();
        assert_eq!(s.gc().unwrap(), 2);
        assert!(!s.blobs().exists(&od));
        assert!(!s.snapshotter().unwrap().exists(&od));
        assert!(s.blobs().exists(&rec.layers[0].digest));
        assert!(s.snapshotter().unwrap().exists(&rec.layers[0].diff_id));
        assert_eq!(s.gc().unwrap(), 0);
        // A stray temporary index file from a crash does not disturb anything.
        fs::write(s.root().join("images/.index.json.tmp-1-2"), b"{garbage").unwrap();
        assert_eq!(s.resolve("kept").unwrap().image.id, id);
    }

    #[test]
    fn snapshots_dropped_after_a_reboot_are_unpacked_again_from_blobs() {
        let (d, s) = store();
        let l1 = tar_with(&[("a", b"base")]);
        let l2 = tar_with(&[("b", b"top")]);
        let id = add_image(&s, &[l1, l2], &["img"], "a");
        let rec = s.get(&id).unwrap();
        let top = s.unpack(&rec.layers).unwrap().unwrap();
        s.snapshotter().unwrap().wait_synced();
        drop(s);
        // As if the machine lost power before the top layer reached the disk.
        let meta = d
            .path()
            .join("snapshotter/snapshots")
            .join(top.hex())
            .join("meta.json");
        let mut info: crate::snapshot::SnapshotInfo = fsutil::read_json(&meta).unwrap();
        info.unsynced = Some("a-boot-before-this-one".into());
        fsutil::write_json_atomic(&meta, &info).unwrap();
        let s = ImageStore::open(d.path()).unwrap();
        let sn = s.snapshotter().unwrap();
        assert_eq!(sn.dropped_on_open(), 1);
        assert!(sn.exists(&top), "the dropped layer is unpacked again");
        let lowers = sn.overlay_lowers(&top);
        if let Some(lowers) = lowers {
            let lowers = lowers.unwrap();
            assert_eq!(fs::read(lowers[0].join("b")).unwrap(), b"top");
        }
        sn.wait_synced();
        assert_eq!(sn.info(&top).unwrap().unsynced, None);
    }

    #[test]
    fn register_takes_the_content_size_the_unpacker_counted() {
        let (d, s) = store();
        let l = tar_with(&[("a", b"12345"), ("b", b"678")]);
        let diff = s.blobs().write_bytes(None, &l).unwrap();
        let info = s
            .snapshotter()
            .unwrap()
            .apply_layer(None, &diff, &mut &l[..])
            .unwrap();
        assert_eq!(info.content_size, Some(8));
        s.snapshotter().unwrap().wait_synced();
        // A recognisable value: register must take it instead of reading the blob again.
        let meta = d
            .path()
            .join("snapshotter/snapshots")
            .join(diff.hex())
            .join("meta.json");
        let mut m: crate::snapshot::SnapshotInfo = fsutil::read_json(&meta).unwrap();
        m.content_size = Some(4242);
        fsutil::write_json_atomic(&meta, &m).unwrap();
        let id = add_image(&s, std::slice::from_ref(&l), &[], "a");
        assert_eq!(s.get(&id).unwrap().layers[0].unpacked_size, 4242);
        // Without a snapshot, the blob is read.
        let (_d2, s2) = store();
        let id = add_image(&s2, &[l], &[], "a");
        assert_eq!(s2.get(&id).unwrap().layers[0].unpacked_size, 8);
    }

    #[test]
    fn glob() {
        assert!(path_match("busybox", "busybox"));
        assert!(path_match("busy*", "busybox"));
        assert!(!path_match("*", "a/b"));
        assert!(path_match("*/*", "a/b"));
        assert!(path_match("b?sybox:[l]atest", "busybox:latest"));
        assert!(path_match("[^a]x", "bx"));
        assert!(!path_match("[^a]x", "ax"));
        assert!(path_match("[a-c]", "b"));
        assert!(!path_match("[", "a"));
    }

    #[test]
    fn content_size_counts_files_and_symlinks() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path("d/").unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("d/l").unwrap();
        h.set_link_name("target").unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("d/f").unwrap();
        h.set_size(10);
        h.set_cksum();
        b.append(&h, &[0u8; 10][..]).unwrap();
        let t = b.into_inner().unwrap();
        assert_eq!(layer_content_size(&t[..]).unwrap(), 16);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &t).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(layer_content_size(&gz[..]).unwrap(), 16);
    }
}
