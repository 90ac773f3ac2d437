//! The image operations of an engine ([`ImageBackend`]): [`LocalBackend`] works on a data root
//! (used by `berthd` behind its image routes, and by the `berth` CLI when given `--data-root`);
//! the CLI's API client implements the same trait over the Engine API.

use std::io::{Read, Write};
use std::path::PathBuf;

use crate::{Client, PushOptions, PushedManifest, RegistryConfig, RegistryError};
use berth_image::archive::{self, ArchiveError, ImportOptions, ImportSource, LoadReport};
use berth_image::image_store::{
    DeleteItem, DiskUsage, HistoryItem, ImageId, ImageStore, ImageStoreError, ImageSummary,
    LayerInput, ListOptions, PruneReport, RegisterRequest,
};
use berth_image::manifest::{parse_manifest, Manifest, Platform};
use berth_image::{Digest, Reference};

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

impl std::error::Error for BackendError {}

impl BackendError {
    /// An error of `kind` with `message`'s text.
    pub fn new(kind: ErrorKind, message: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }

    /// An [`ErrorKind::Internal`] error.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, message)
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
        Self::new(kind, e)
    }
}

impl From<ArchiveError> for BackendError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Image(e) => e.into(),
            ArchiveError::Change(m) => Self::new(ErrorKind::InvalidArgument, m),
            e => Self::internal(e),
        }
    }
}

impl From<RegistryError> for BackendError {
    fn from(e: RegistryError) -> Self {
        let kind = match &e {
            RegistryError::ManifestUnknown { .. }
            | RegistryError::NameUnknown { .. }
            | RegistryError::BlobUnknown { .. } => ErrorKind::NotFound,
            RegistryError::Unauthorized { .. }
            | RegistryError::Denied { .. }
            | RegistryError::InsecureRefused(_)
            | RegistryError::Invalid(_) => ErrorKind::InvalidArgument,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, e)
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The repository digest the reference resolved to.
    pub digest: Digest,
    /// The image ID.
    pub id: ImageId,
    /// Whether anything changed locally (a new image, or the tag now points elsewhere):
    /// `Downloaded newer image` rather than `Image is up to date`.
    pub updated: bool,
    /// The image's platform (from its config, normalised).
    pub platform: Platform,
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
    /// `POST /images/create?fromImage=…`: pulls `reference` (with a tag or digest) for
    /// `platform`, reporting to `progress`, and records it.
    fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        progress: &dyn crate::Progress,
    ) -> Result<PullOutcome, BackendError>;
    /// `POST /images/create?fromImage=NAME` without a tag (`pull --all-tags`): pulls every
    /// tag of `repository` (its tag or digest, if any, is ignored) for `platform`, one after
    /// the other with the usual per-tag progress, and records them. Whether anything changed
    /// locally (`Downloaded newer image` rather than `Image is up to date`).
    fn pull_all_tags(
        &self,
        repository: &Reference,
        platform: &Platform,
        progress: &dyn crate::Progress,
    ) -> Result<bool, BackendError>;
    /// `POST /images/{name}/push`: pushes the image `reference` names to it.
    fn push(
        &self,
        reference: &Reference,
        progress: &dyn crate::Progress,
    ) -> Result<PushedManifest, BackendError>;
    /// `POST /auth`: checks the credentials and stores them.
    fn login(&self, server: &str, username: &str, password: &str) -> Result<(), BackendError>;
    /// Removes stored credentials; whether there were any.
    fn logout(&self, server: &str) -> Result<bool, BackendError>;
    /// Where credentials are stored.
    fn credentials_path(&self) -> PathBuf;
}

/// The daemonless backend: the image store on a data root.
pub struct LocalBackend {
    store: std::sync::Arc<ImageStore>,
    registry: RegistryConfig,
}

impl LocalBackend {
    /// Opens the data root.
    pub fn open(data_root: PathBuf) -> Result<Self, BackendError> {
        Ok(Self::with_store(std::sync::Arc::new(ImageStore::open(
            data_root,
        )?)))
    }

    /// Works on an open store (a daemon's: one snapshotter, one metadata lock and one
    /// background sync per process, and no store opened per request).
    pub fn with_store(store: std::sync::Arc<ImageStore>) -> Self {
        Self {
            store,
            registry: RegistryConfig::default(),
        }
    }

    /// Uses `config` for registry operations.
    pub fn with_registry_config(mut self, config: RegistryConfig) -> Self {
        self.registry = config;
        self
    }

    /// The image store.
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    fn client(&self) -> Result<Client, BackendError> {
        Ok(Client::new(self.registry.clone())?)
    }

    /// The image manifest to push for `reference`'s image: the one recorded for that
    /// repository when there is one, else the first image manifest stored with the image.
    fn manifest_to_push(
        &self,
        reference: &Reference,
    ) -> Result<(berth_image::image_store::ImageRecord, Vec<u8>), BackendError> {
        let not_found = || {
            BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "An image does not exist locally with the tag: {}",
                    reference.familiar_name()
                ),
            )
        };
        let r = self
            .store
            .resolve(&reference.to_string())
            .map_err(|e| match e {
                ImageStoreError::NotFound(_) => not_found(),
                e => e.into(),
            })?;
        let rec = r.image;
        let name = reference.name();
        let recorded = rec.repo_digests.iter().filter_map(|d| {
            let r = Reference::parse_normalized(d).ok()?;
            (r.name() == name).then(|| r.digest().cloned()).flatten()
        });
        let mut candidates: Vec<Digest> = recorded.collect();
        candidates.extend(rec.manifests.iter().cloned());
        for d in candidates {
            let Ok(bytes) = self.store.blobs().read_verified(&d) else {
                continue;
            };
            if let Ok(Manifest::Image(..)) = parse_manifest(None, &bytes) {
                return Ok((rec, bytes));
            }
        }
        Err(BackendError::internal(format!(
            "no image manifest stored for {}",
            reference.familiar_string()
        )))
    }

    /// Whether a container uses the image (containers do not exist yet).
    fn in_use(_id: &ImageId) -> bool {
        false
    }

    /// The containers using the image (none: containers do not exist yet).
    fn users(_id: &ImageId) -> Vec<berth_image::image_store::ImageUser> {
        Vec::new()
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
        serde_json::to_string(&doc).map_err(BackendError::internal)
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
        Ok(self.store.remove(name, force, &Self::users)?)
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

    fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        progress: &dyn crate::Progress,
    ) -> Result<PullOutcome, BackendError> {
        let before = self
            .store
            .resolve(&reference.to_string())
            .ok()
            .map(|r| r.image.id);
        let client = self.client()?;
        let snap = self.store.snapshotter()?;
        let p = client.pull(reference, platform, self.store.blobs(), snap, progress)?;
        let layers = p
            .layers
            .iter()
            .map(|(d, diff)| LayerInput {
                descriptor: d.clone(),
                diff_id: diff.clone(),
                // The store takes the content size the unpacker counted.
                unpacked_size: None,
            })
            .collect();
        let tags = match (reference.digest(), reference.tag()) {
            (None, Some(_)) => vec![reference.clone()],
            _ => Vec::new(),
        };
        let reg = self.store.register(RegisterRequest {
            manifest: p.manifest_bytes.clone(),
            config: p.config.clone(),
            layers,
            tags,
            repo_digests: vec![reference.repository().with_digest(p.repo_digest.clone())],
            extra_manifests: p.index.iter().map(|(d, _, _)| d.clone()).collect(),
            parent: None,
            keep_tag_time: false,
        })?;
        let platform = berth_image::manifest::ImageConfig::parse(&p.config)
            .map_err(BackendError::internal)?
            .platform()
            .normalize();
        Ok(PullOutcome {
            platform,
            digest: p.repo_digest,
            updated: reg.new || before.as_ref() != Some(&reg.id),
            id: reg.id,
        })
    }

    fn pull_all_tags(
        &self,
        repository: &Reference,
        platform: &Platform,
        progress: &dyn crate::Progress,
    ) -> Result<bool, BackendError> {
        let repo = repository.repository();
        // A repository without tags pulls nothing and is "up to date", as with Docker.
        let tags = self.client()?.list_tags(&repo)?;
        let mut updated = false;
        for t in tags {
            let r = repo.with_tag(&t).map_err(|e| {
                BackendError::internal(format!("the registry listed an invalid tag {t:?}: {e}"))
            })?;
            updated |= self.pull(&r, platform, progress)?.updated;
        }
        Ok(updated)
    }

    fn push(
        &self,
        reference: &Reference,
        progress: &dyn crate::Progress,
    ) -> Result<PushedManifest, BackendError> {
        let (rec, manifest) = self.manifest_to_push(reference)?;
        // Other repositories of the same registry holding the image: mount from them.
        let mut mount_from: Vec<String> = Vec::new();
        for r in rec.repo_tags.iter().chain(&rec.repo_digests) {
            if let Ok(r) = Reference::parse_normalized(r) {
                if r.domain() == reference.domain()
                    && r.path() != reference.path()
                    && !mount_from.iter().any(|p| p == r.path())
                {
                    mount_from.push(r.path().to_string());
                }
            }
        }
        let client = self.client()?;
        let pushed = client.push_with(
            reference,
            &manifest,
            self.store.blobs(),
            progress,
            &PushOptions { mount_from },
        )?;
        // Record `name@digest` (re-registering the same image is idempotent).
        let m = match parse_manifest(None, &manifest).map_err(BackendError::internal)? {
            Manifest::Image(_, m) => m,
            Manifest::Index(..) => return Ok(pushed),
        };
        let layers = m
            .layers
            .iter()
            .zip(&rec.layers)
            .map(|(d, l)| l.input(d.clone()))
            .collect();
        self.store.register(RegisterRequest {
            manifest,
            config: self.store.config_bytes(&rec.id)?,
            layers,
            tags: Vec::new(),
            repo_digests: vec![reference.repository().with_digest(pushed.digest.clone())],
            extra_manifests: Vec::new(),
            parent: None,
            keep_tag_time: false,
        })?;
        Ok(pushed)
    }

    fn login(&self, server: &str, username: &str, password: &str) -> Result<(), BackendError> {
        Ok(self.client()?.login(server, username, password)?)
    }

    fn logout(&self, server: &str) -> Result<bool, BackendError> {
        Ok(self.client()?.logout(server)?)
    }

    fn credentials_path(&self) -> PathBuf {
        self.registry.credentials.path().to_path_buf()
    }
}
