//! Image archives: `docker save` / `docker load` and `docker import`.
//!
//! - [`save`] writes Docker 25+'s format, which is both a docker-archive (`manifest.json`
//!   with `Config` / `RepoTags` / `Layers`, and `repositories`) and an OCI image layout
//!   (`oci-layout`, `index.json`, `blobs/sha256/…`). Layers are written uncompressed, named
//!   by their DiffID, so that the archive is reproducible for a given image.
//! - [`load`] reads a docker-archive (legacy `<id>/layer.tar` or `blobs/sha256/` layout) or an
//!   OCI image layout, as a tar stream optionally compressed with gzip or zstd. The archive is
//!   first spooled into a scratch directory under flat, generated file names (no path from the
//!   archive is ever used on the host file system), with hostile entries refused: absolute or
//!   `..` paths, links pointing outside the archive, device nodes, oversized extension
//!   headers. Every digest is then verified (config = image ID, layer DiffIDs, OCI blob
//!   digests and sizes, file names that carry digests) before anything is registered; on
//!   failure, blobs written by the load are removed again.
//! - [`import`] turns a root file system tarball (plain/gzip/zstd) or a directory into a
//!   one-layer image, with Dockerfile-syntax `changes` (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`,
//!   `USER`, `LABEL`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`, `ONBUILD`) and a commit message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::fsutil::PathIoError;
use crate::image_store::{
    decompress, layer_content_size, synthesize_manifest, tar_content_size, ImageId, ImageStore,
    ImageStoreError, LayerInput, LayerRecord, RegisterRequest,
};
use crate::manifest::{
    self, media_types as mt, parse_manifest, ContainerConfig, Descriptor, History, ImageConfig,
    ImageIndex, Manifest, ManifestError, Platform, RootFs,
};
use crate::reference::Reference;
use crate::store::StoreError;
use crate::timeutil;

mod import;
mod load;
mod save;
mod spool;

pub use import::{apply_changes, import, ImportOptions, ImportSource};
pub use load::{load, load_platform, LoadReport, LoadedImage};
pub use save::{save, save_as, save_index, save_selected, select_for_save, SaveSelection};
pub use spool::EntryProblem;

/// Errors from archive operations.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is malformed or inconsistent.
    #[error("invalid archive: {0}")]
    Invalid(String),
    /// The archive contains an entry Berth refuses to read.
    #[error("refusing archive entry {entry:?}: {reason}")]
    Hostile {
        /// The entry's name.
        entry: String,
        /// Why.
        #[source]
        reason: EntryProblem,
    },
    /// A document in the archive cannot be read (too large, unreadable).
    #[error("invalid archive: {problem}")]
    Unreadable {
        /// The document's name in the archive.
        name: String,
        /// Why.
        #[source]
        problem: EntryProblem,
    },
    /// Content does not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// Reading the archive failed.
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageStoreError),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest or config is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An import change line is invalid.
    #[error("{0}")]
    Change(String),
    /// A load for one platform found no image of it in the archive.
    #[error("requested platform ({0}) not found")]
    PlatformNotFound(String),
}

impl From<crate::snapshot::SnapshotError> for ArchiveError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        Self::Image(e.into())
    }
}

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

io_error_fn!(io_at, ArchiveError);

/// Longest GNU long name / PAX extension accepted.
const MAX_EXT_HEADER: u64 = 64 * 1024;
/// Largest JSON document read from an archive.
const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Most entries accepted in one archive.
const MAX_ENTRIES: usize = 1_000_000;

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DockerManifestEntry {
    pub(super) config: String,
    #[serde(default)]
    pub(super) repo_tags: Option<Vec<String>>,
    #[serde(default, deserialize_with = "berth_api::go::null_default")]
    pub(super) layers: Vec<String>,
    /// The image's parent when the archive holds that too (dockerd's save and load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) parent: Option<String>,
}

pub(super) fn descriptor(media_type: &str, d: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: d.clone(),
        size,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    }
}

/// Where an OCI layout keeps the blob `d` (`blobs/sha256/<hex>`).
pub(super) fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

#[cfg(test)]
mod tests;
