//! What the image commands ask of the engine. Today [`LocalBackend`] works on the data root
//! directly (daemonless); when `berthd` lands, an API client implements [`ImageBackend`] and
//! the commands stay as they are.

use std::io::{Read, Write};
use std::path::PathBuf;

use berth_image::archive::{self, ArchiveError, ImportOptions, ImportSource, LoadReport};
use berth_image::image_store::{
    DeleteItem, DiskUsage, HistoryItem, ImageId, ImageStore, ImageStoreError, ImageSummary,
    ListOptions, PruneReport,
};
use berth_image::Reference;

/// How an engine error should be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404: no such object.
    NotFound,
    /// 409: a conflict.
    Conflict,
    /// 400: bad parameters.
    InvalidArgument,
    /// 500: anything else.
    Internal,
}

/// An error from the engine (daemon-side in Docker's terms).
#[derive(Debug, Clone)]
pub struct BackendError {
    /// The category.
    pub kind: ErrorKind,
    /// Docker's message (without the `Error response from daemon:` prefix).
    pub message: String,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ImageStoreError> for BackendError {
    fn from(e: ImageStoreError) -> Self {
        let kind = match &e {
            ImageStoreError::NotFound(_) => ErrorKind::NotFound,
            ImageStoreError::Conflict(_) => ErrorKind::Conflict,
            ImageStoreError::Ambiguous(_)
            | ImageStoreError::Reference(_)
            | ImageStoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        };
        Self {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<ArchiveError> for BackendError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Image(e) => e.into(),
            ArchiveError::Change(m) => Self {
                kind: ErrorKind::InvalidArgument,
                message: m,
            },
            e => Self {
                kind: ErrorKind::Internal,
                message: e.to_string(),
            },
        }
    }
}

/// The image operations the CLI needs.
pub trait ImageBackend {
    /// `GET /images/json`.
    fn list(&self, opts: &ListOptions) -> Result<Vec<ImageSummary>, BackendError>;
    /// `GET /images/{name}/json`: the raw JSON document.
    fn inspect_raw(&self, name: &str) -> Result<String, BackendError>;
    /// `GET /images/{name}/history`.
    fn history(&self, name: &str) -> Result<Vec<HistoryItem>, BackendError>;
    /// `POST /images/{name}/tag`.
    fn tag(&self, source: &str, target: &Reference) -> Result<(), BackendError>;
    /// `DELETE /images/{name}`.
    fn remove(&self, name: &str, force: bool) -> Result<Vec<DeleteItem>, BackendError>;
    /// `GET /images/get`.
    fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), BackendError>;
    /// `POST /images/load`.
    fn load(&self, input: &mut dyn Read) -> Result<LoadReport, BackendError>;
    /// `POST /images/create?fromSrc=…`.
    fn import(
        &self,
        source: ImportSource<'_>,
        opts: &ImportOptions,
    ) -> Result<ImageId, BackendError>;
    /// `POST /images/prune`.
    fn prune(&self, all: bool) -> Result<PruneReport, BackendError>;
    /// `GET /system/df` (images part).
    fn disk_usage(&self) -> Result<DiskUsage, BackendError>;
}

/// The daemonless backend: the image store on a data root.
pub struct LocalBackend {
    store: ImageStore,
}

impl LocalBackend {
    /// Opens the data root.
    pub fn open(data_root: PathBuf) -> Result<Self, BackendError> {
        Ok(Self {
            store: ImageStore::open(data_root)?,
        })
    }

    /// Whether a container uses the image (containers do not exist yet).
    fn in_use(_id: &ImageId) -> bool {
        false
    }
}

impl ImageBackend for LocalBackend {
    fn list(&self, opts: &ListOptions) -> Result<Vec<ImageSummary>, BackendError> {
        Ok(self.store.list_summaries(opts)?)
    }

    fn inspect_raw(&self, name: &str) -> Result<String, BackendError> {
        let r = self.store.resolve(name).map_err(|e| match e {
            // The daemon reports the name as given for inspect.
            ImageStoreError::NotFound(_) => ImageStoreError::NotFound(name.to_string()),
            e => e,
        })?;
        let doc = self.store.inspect(&r.image.id)?;
        serde_json::to_string(&doc).map_err(|e| BackendError {
            kind: ErrorKind::Internal,
            message: e.to_string(),
        })
    }

    fn history(&self, name: &str) -> Result<Vec<HistoryItem>, BackendError> {
        let r = self.store.resolve(name)?;
        Ok(self.store.history(&r.image.id)?)
    }

    fn tag(&self, source: &str, target: &Reference) -> Result<(), BackendError> {
        self.store.tag(source, target)?;
        Ok(())
    }

    fn remove(&self, name: &str, force: bool) -> Result<Vec<DeleteItem>, BackendError> {
        Ok(self.store.remove(name, force, &Self::in_use)?)
    }

    fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), BackendError> {
        Ok(archive::save(&self.store, names, out)?)
    }

    fn load(&self, input: &mut dyn Read) -> Result<LoadReport, BackendError> {
        Ok(archive::load(&self.store, input)?)
    }

    fn import(
        &self,
        source: ImportSource<'_>,
        opts: &ImportOptions,
    ) -> Result<ImageId, BackendError> {
        Ok(archive::import(&self.store, source, opts)?)
    }

    fn prune(&self, all: bool) -> Result<PruneReport, BackendError> {
        Ok(self.store.prune(all, &Self::in_use)?)
    }

    fn disk_usage(&self) -> Result<DiskUsage, BackendError> {
        Ok(self.store.disk_usage(&Self::in_use)?)
    }
}
