//! Images: pulls and pushes with Docker's JSON progress stream, load, import, save, tag,
//! removal, prune, inspect and history, registry login; all over the engine's one
//! [`ImageStore`] through `berth_registry::images::LocalBackend`.
//!
//! Streamed operations run on a blocking thread and send [`JsonMessage`] lines through an
//! unbounded std channel (the registry client calls back from its own runtime's threads,
//! where blocking on the response is not allowed) to a forwarder.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use base64::Engine as _;
use berth_api::image::{AuthConfig, AuthResponse, DeleteItem, InspectImage, PushResult};
use berth_api::message::{JsonMessage, ProgressDetail};
use berth_api::ApiVersion;
use berth_image::image_store::{ImageId, ImageStore, ImageUser};
use berth_image::manifest::Platform;
use berth_image::{Digest, Reference};
use berth_registry::images::{BackendError, ImageBackend, LocalBackend};
use berth_registry::{CredentialStore, Credentials, ImageEvent, LayerEvent, RegistryConfig};
use tokio::sync::mpsc;

use crate::engine::{Engine, EngineError, Result};

/// Why a streamed job failed (its message ends the stream as `errorDetail`).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A registry operation (Docker's message and its category).
    #[error("{0}")]
    Registry(BackendError),
    #[error(transparent)]
    Archive(#[from] berth_image::archive::ArchiveError),
    #[error(transparent)]
    Reference(#[from] berth_image::reference::ReferenceError),
}

impl From<BackendError> for JobError {
    fn from(e: BackendError) -> Self {
        JobError::Registry(e)
    }
}

impl From<JobError> for EngineError {
    fn from(e: JobError) -> Self {
        use berth_registry::images::ErrorKind;
        match e {
            JobError::Registry(b) => match b.kind {
                ErrorKind::NotFound => EngineError::Missing(b.message),
                ErrorKind::Conflict => EngineError::Conflict(b.message),
                ErrorKind::InvalidArgument => EngineError::BadRequest(b.message),
                ErrorKind::Internal => EngineError::Internal(b.message),
            },
            JobError::Reference(e) => EngineError::BadRequest(e.to_string()),
            JobError::Archive(e) => EngineError::Internal(e.to_string()),
        }
    }
}

/// Registry settings for one operation: the daemon's, with the credentials of an
/// `X-Registry-Auth` header written to a private temporary `config.json` (in the exec root,
/// where the next daemon start removes what a crash left: see `leftovers`) that lives as
/// long as the returned guard.
pub fn registry_config(
    engine: &Engine,
    auth: Option<&str>,
    registry: &str,
) -> Result<(RegistryConfig, Option<tempfile::TempDir>)> {
    let Some(h) = auth.filter(|v| !v.is_empty()) else {
        return Ok((engine.registry_config(), None));
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim_end_matches('='))
        })
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h))
        .map_err(|_| EngineError::bad("invalid X-Registry-Auth header: not base64"))?;
    let a: AuthConfig = berth_api::from_slice(&raw)
        .map_err(|e| EngineError::bad(format!("invalid X-Registry-Auth header: {e}")))?;
    with_credentials(engine, &a, registry)
}

/// The daemon's registry settings with `a`'s user name and password for `registry` in a
/// private temporary `config.json` that lives as long as the returned guard (see
/// [`private_credentials`]; the daemon's settings as they are without credentials).
pub fn with_credentials(
    engine: &Engine,
    a: &AuthConfig,
    registry: &str,
) -> Result<(RegistryConfig, Option<tempfile::TempDir>)> {
    let mut cfg = engine.registry_config();
    if a.username.is_empty() && a.password.is_empty() {
        return Ok((cfg, None));
    }
    let (store, dir) = private_credentials(
        engine,
        registry,
        &Credentials::new(&a.username, &a.password),
    )?;
    cfg.credentials = store;
    Ok((cfg, Some(dir)))
}

/// A credential store holding only `creds` for `registry`, in a private temporary
/// directory of the exec root that lives as long as the returned guard (the next daemon
/// start removes what a crash left: see `leftovers::auth_dir`).
pub fn private_credentials(
    engine: &Engine,
    registry: &str,
    creds: &Credentials,
) -> Result<(CredentialStore, tempfile::TempDir)> {
    let parent = crate::leftovers::auth_dir(&engine.cfg.exec_root);
    std::fs::create_dir_all(&parent).map_err(EngineError::io("creating", &parent))?;
    let dir = tempfile::Builder::new()
        .prefix("auth-")
        .tempdir_in(&parent)
        .map_err(EngineError::io("creating a directory in", &parent))?;
    let store = CredentialStore::at(dir.path().join("config.json"));
    store
        .set(registry, creds)
        .map_err(|e| EngineError::Internal(format!("storing the credentials: {e}")))?;
    Ok((store, dir))
}

/// Docker's JSON progress lines, sent as they happen.
pub struct JsonProgress {
    tx: Mutex<std::sync::mpsc::Sender<Bytes>>,
    last: Mutex<HashMap<Digest, String>>,
    /// Told when the first line goes out (see [`job_or_error`]).
    started: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// `Pulling from …`, held until the next line: dockerd says it once the manifest is
    /// resolved, so a refused pull sends nothing before its error.
    pending: Mutex<Option<JsonMessage>>,
}

impl JsonProgress {
    fn send(&self, m: &JsonMessage) {
        if let Some(s) = self.started.lock().unwrap().take() {
            let _ = s.send(());
        }
        let tx = self.tx.lock().unwrap();
        if let Some(p) = self.pending.lock().unwrap().take() {
            let _ = tx.send(Bytes::from(p.to_line()));
        }
        let _ = tx.send(Bytes::from(m.to_line()));
    }
}

fn bar(current: u64, total: u64) -> String {
    let width = 50u64;
    let filled = (current.min(total) * width).checked_div(total).unwrap_or(0) as usize;
    let mut b = "=".repeat(filled);
    if filled < width as usize {
        b.push('>');
    }
    let human = |n: u64| -> String {
        if n >= 1 << 20 {
            format!("{:.1}MB", n as f64 / 1e6)
        } else {
            format!("{:.1}kB", n as f64 / 1e3)
        }
    };
    format!(
        "[{:<50}] {}/{}",
        b.chars().take(50).collect::<String>(),
        human(current),
        human(total)
    )
}

impl berth_registry::Progress for JsonProgress {
    fn image(&self, event: &ImageEvent) {
        let m = match event {
            ImageEvent::PullingFrom { tag, repository } => {
                *self.pending.lock().unwrap() = Some(JsonMessage {
                    id: Some(tag.clone()),
                    ..JsonMessage::status(format!("Pulling from {repository}"))
                });
                return;
            }
            ImageEvent::Resolved { digest } => JsonMessage::status(format!("Digest: {digest}")),
            ImageEvent::PushingTo { repository } => {
                JsonMessage::status(format!("The push refers to repository [{repository}]"))
            }
            ImageEvent::Pushed { tag, digest, size } => {
                // Docker sends the status line, then the `aux` record on its own (clients
                // that see `aux` hand it to a callback and print nothing).
                self.send(&JsonMessage::status(format!(
                    "{tag}: digest: {digest} size: {size}"
                )));
                JsonMessage {
                    progress_detail: Some(ProgressDetail::default()),
                    ..JsonMessage::aux(PushResult {
                        tag: tag.clone(),
                        digest: digest.to_string(),
                        size: *size,
                    })
                }
            }
        };
        self.send(&m);
    }

    fn layer(&self, digest: &Digest, event: &LayerEvent) {
        match event {
            LayerEvent::Downloading { current, .. } if *current > 0 => {
                crate::failpoint::hit("pull.layer")
            }
            // The upload session is open, no byte sent yet.
            LayerEvent::Pushing { current: 0, .. } => crate::failpoint::hit("push.blob"),
            _ => {}
        }
        let id: String = digest.hex().chars().take(12).collect();
        let status = event.status();
        let (detail, progress) = match event {
            LayerEvent::Downloading { current, total }
            | LayerEvent::Extracting { current, total }
            | LayerEvent::Pushing { current, total } => (
                ProgressDetail {
                    current: Some(*current),
                    total: Some(*total),
                },
                Some(bar(*current, *total)),
            ),
            _ => (ProgressDetail::default(), None),
        };
        if progress.is_none() {
            let mut last = self.last.lock().unwrap();
            if last.get(digest) == Some(&status) {
                return;
            }
            last.insert(digest.clone(), status.clone());
        }
        self.send(&JsonMessage {
            progress_detail: Some(detail),
            progress,
            id: Some(id),
            ..JsonMessage::status(status)
        });
    }

    fn manifest_upload(&self, _digest: &Digest) {
        crate::failpoint::hit("push.manifest");
    }
}

/// Runs `work` on a blocking thread, streaming its JSON lines; its error becomes Docker's
/// `errorDetail` line.
pub fn job(
    work: impl FnOnce(&JsonProgress) -> std::result::Result<Vec<JsonMessage>, JobError> + Send + 'static,
) -> mpsc::Receiver<Bytes> {
    spawn_job(work, None)
}

/// [`job`], but a failure before the first line is the request's error (an HTTP status with
/// the message), as dockerd answers when nothing was streamed yet: the docker CLI then
/// prints `Error response from daemon: …`.
pub async fn job_or_error(
    work: impl FnOnce(&JsonProgress) -> std::result::Result<Vec<JsonMessage>, JobError> + Send + 'static,
) -> Result<mpsc::Receiver<Bytes>> {
    let (started_tx, mut started_rx) = tokio::sync::oneshot::channel();
    let (early_tx, mut early_rx) = tokio::sync::oneshot::channel::<JobError>();
    let rx = spawn_job(work, Some((started_tx, early_tx)));
    tokio::select! {
        biased;
        e = &mut early_rx => match e {
            Ok(e) => Err(e.into()),
            Err(_) => Ok(rx),
        },
        s = &mut started_rx => match s {
            Ok(()) => Ok(rx),
            // Dropped unsent: the job failed first, its error is on the other channel.
            Err(_) => match early_rx.await {
                Ok(e) => Err(e.into()),
                Err(_) => Ok(rx),
            },
        },
    }
}

type EarlyError = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Sender<JobError>,
);

fn spawn_job(
    work: impl FnOnce(&JsonProgress) -> std::result::Result<Vec<JsonMessage>, JobError> + Send + 'static,
    early: Option<EarlyError>,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (stx, srx) = std::sync::mpsc::channel::<Bytes>();
    tokio::task::spawn_blocking(move || {
        while let Ok(b) = srx.recv() {
            if tx.blocking_send(b).is_err() {
                return;
            }
        }
    });
    let (started, early_err) = match early {
        Some((s, e)) => (Some(s), Some(e)),
        None => (None, None),
    };
    tokio::task::spawn_blocking(move || {
        let p = JsonProgress {
            tx: Mutex::new(stx),
            last: Mutex::new(HashMap::new()),
            started: Mutex::new(started),
            pending: Mutex::new(None),
        };
        match work(&p) {
            Ok(lines) => lines.iter().for_each(|l| p.send(l)),
            Err(e) => {
                // (The `started` sender is dropped only after the early error is sent.)
                let started = p.started.lock().unwrap().take();
                match early_err {
                    Some(tx) if started.is_some() => {
                        let _ = tx.send(e);
                    }
                    _ => p.send(&JsonMessage::error(e.to_string(), None)),
                }
                drop(started);
            }
        }
    });
    rx
}

/// The status line that ends a pull.
fn pulled(name: &str, updated: bool) -> String {
    if updated {
        format!("Status: Downloaded newer image for {name}")
    } else {
        format!("Status: Image is up to date for {name}")
    }
}

/// Pulls one image (a tag or digest) into the store; returns the final status line.
pub fn pull_one(
    engine: &Engine,
    reference: &Reference,
    platform: &Platform,
    cfg: RegistryConfig,
    progress: &dyn berth_registry::Progress,
) -> std::result::Result<String, BackendError> {
    let b = LocalBackend::with_store(engine.images.clone()).with_registry_config(cfg);
    let out = b.pull(reference, platform, progress)?;
    let fam = reference.familiar_string();
    engine.image_event("pull", &fam);
    Ok(pulled(&fam, out.updated))
}

/// `POST /images/create?fromImage=…`: one tag or digest, or with `all_tags` every tag of
/// the repository (each with its own `Pulling from` … `Digest:` block, then one status line
/// for the repository, as Docker).
pub async fn pull(
    engine: Arc<Engine>,
    reference: Reference,
    all_tags: bool,
    platform: Platform,
    cfg: RegistryConfig,
    guard: Option<tempfile::TempDir>,
) -> Result<mpsc::Receiver<Bytes>> {
    job_or_error(move |p| {
        let _guard = guard;
        let status = if all_tags {
            let b = LocalBackend::with_store(engine.images.clone()).with_registry_config(cfg);
            let updated = b.pull_all_tags(&reference, &platform, p)?;
            let fam = reference.familiar_name();
            engine.image_event("pull", &fam);
            pulled(&fam, updated)
        } else {
            pull_one(&engine, &reference, &platform, cfg, p)?
        };
        Ok(vec![JsonMessage::status(status)])
    })
    .await
}

/// `POST /images/{name}/push`: the references one after the other (all of a repository's
/// tags for `--all-tags`), stopping at the first failure.
pub fn push(
    engine: Arc<Engine>,
    references: Vec<Reference>,
    cfg: RegistryConfig,
    guard: Option<tempfile::TempDir>,
) -> mpsc::Receiver<Bytes> {
    job(move |p| {
        let _guard = guard;
        let b = LocalBackend::with_store(engine.images.clone()).with_registry_config(cfg);
        let p = OneRepositoryLine {
            inner: p,
            said: AtomicBool::new(false),
        };
        for r in &references {
            b.push(r, &p)?;
            engine.image_event("push", &r.familiar_string());
        }
        Ok(vec![])
    })
}

/// Passes a push's events on with its "The push refers to repository" line once: dockerd
/// prints it once however many tags a push sends.
struct OneRepositoryLine<'a> {
    inner: &'a JsonProgress,
    said: AtomicBool,
}

impl berth_registry::Progress for OneRepositoryLine<'_> {
    fn image(&self, event: &ImageEvent) {
        if matches!(event, ImageEvent::PushingTo { .. }) && self.said.swap(true, Ordering::Relaxed)
        {
            return;
        }
        self.inner.image(event)
    }

    fn layer(&self, digest: &Digest, event: &LayerEvent) {
        self.inner.layer(digest, event)
    }

    fn manifest_upload(&self, digest: &Digest) {
        self.inner.manifest_upload(digest)
    }
}

/// `POST /images/create?fromSrc=-`: a root file system tar as a one-layer image.
pub fn import(
    engine: Arc<Engine>,
    opts: berth_image::archive::ImportOptions,
    reader: impl Read + Send + 'static,
    downloading: Option<String>,
) -> mpsc::Receiver<Bytes> {
    job(move |p| {
        // From a URL: dockerd's status line first.
        if let Some(url) = downloading {
            p.send(&JsonMessage::status(format!("Downloading from {url}")));
        }
        let id = berth_image::archive::import(
            &engine.images,
            berth_image::archive::ImportSource::Tar(Box::new(reader)),
            &opts,
        )?;
        engine.image_event_of("import", &id.to_string(), &id.to_string());
        Ok(vec![JsonMessage::status(id.to_string())])
    })
}

/// `POST /images/load`.
pub fn load(
    engine: Arc<Engine>,
    reader: impl Read + Send + 'static,
    platform: Option<berth_image::manifest::Platform>,
) -> mpsc::Receiver<Bytes> {
    job(move |_| {
        let report =
            berth_image::archive::load_platform(&engine.images, reader, platform.as_ref())?;
        let mut lines = Vec::new();
        for img in report.images {
            for (t, old) in &img.moved {
                lines.push(JsonMessage::stream(format!("The image {t} already exists, renaming the old one with ID {old} to empty string\n")));
            }
            if img.tags.is_empty() {
                lines.push(JsonMessage::stream(format!(
                    "Loaded image ID: {}\n",
                    img.id
                )));
            }
            for t in &img.tags {
                lines.push(JsonMessage::stream(format!("Loaded image: {t}\n")));
            }
            engine.image_event_of("load", &img.id.to_string(), &img.id.to_string());
        }
        Ok(lines)
    })
}

/// `GET /images/get` and `/images/{name}/get`: the archive, written by a blocking thread.
/// Unknown names are a 404 before anything is sent.
pub fn save(engine: Arc<Engine>, names: Vec<String>) -> Result<mpsc::Receiver<Bytes>> {
    if names.is_empty() {
        return Err(EngineError::bad("no images given"));
    }
    // Every name resolved before the stream starts (an unknown one is a 404); a bare
    // repository name selects all of its tags.
    let selection = berth_image::archive::select_for_save(&engine.images, &names)
        .map_err(|e| EngineError::Missing(e.to_string()))?;
    for (id, _) in &selection {
        engine.image_event_of("save", &id.to_string(), &id.to_string());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        struct W(mpsc::Sender<Bytes>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .blocking_send(Bytes::copy_from_slice(b))
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone")
                    })?;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = std::io::BufWriter::with_capacity(256 * 1024, W(tx));
        if let Err(e) = berth_image::archive::save_selected(&engine.images, &selection, w) {
            tracing::warn!("image save: {e}");
        }
    });
    Ok(rx)
}

/// Which images containers use (removal and prune keep them).
pub fn in_use_fn(engine: &Engine) -> impl Fn(&ImageId) -> bool {
    let used: Vec<String> = engine.list().into_iter().map(|c| c.image).collect();
    move |id: &ImageId| used.iter().any(|u| *u == id.to_string())
}

/// An image that does not resolve is a 404 `No such image`.
pub(crate) fn resolve(
    images: &ImageStore,
    name: &str,
) -> Result<berth_image::image_store::Resolved> {
    images.resolve(name).map_err(|e| {
        if e.is_not_found() {
            EngineError::ImageNotFound(name.to_string())
        } else {
            EngineError::BadRequest(e.to_string())
        }
    })
}

/// `GET /images/{name}/json`; `ContainerConfig` below API 1.45 (the image config's
/// `container_config`, or an empty config as dockerd shows for images built without one).
pub fn inspect(engine: &Engine, name: &str, version: ApiVersion) -> Result<InspectImage> {
    let r = resolve(&engine.images, name)?;
    let mut i = engine.images.inspect(&r.image.id)?;
    version.adapt_image_inspect(&mut i, || {
        engine
            .images
            .config(&r.image.id)
            .ok()
            .and_then(|cfg| cfg.container_config().ok().flatten())
            .unwrap_or_default()
    });
    Ok(i)
}

/// `GET /images/{name}/history`.
pub fn history(engine: &Engine, name: &str) -> Result<Vec<berth_api::image::HistoryItem>> {
    let r = resolve(&engine.images, name)?;
    Ok(engine.images.history(&r.image.id)?)
}

/// `POST /images/{name}/tag`.
pub fn tag(engine: &Engine, name: &str, target: &Reference) -> Result<()> {
    let reg = engine.images.tag(name, target).map_err(|e| {
        if e.is_not_found() {
            EngineError::Missing(e.to_string())
        } else {
            EngineError::BadRequest(e.to_string())
        }
    })?;
    engine.image_event_of("tag", &reg.id.to_string(), &target.familiar_string());
    Ok(())
}

/// `DELETE /images/{name}`: Docker's rules (a container using the image blocks removing
/// its last reference unless forced; another tag of it is just untagged); with `prune`
/// (no `noprune`) the deleted image's unused untagged parents go too.
pub fn remove(engine: &Engine, name: &str, force: bool, prune: bool) -> Result<Vec<DeleteItem>> {
    if name.trim().is_empty() {
        return Err(EngineError::BadRequest("image name cannot be blank".into()));
    }
    let containers = engine.list();
    let users = |id: &ImageId| {
        let id = id.to_string();
        containers
            .iter()
            .filter_map(|c| {
                let mount_only = c.image != id;
                // Only a container with image mounts has its record read.
                let mounts = || {
                    c.host_config
                        .mounts
                        .iter()
                        .flatten()
                        .any(|m| m.kind == "image")
                };
                if mount_only
                    && !(mounts() && engine.mounts.load(&c.id).iter().any(|m| m.image == id))
                {
                    return None;
                }
                Some(ImageUser {
                    container: c.id.clone(),
                    running: c.state.running || c.state.restarting,
                    mount_only,
                })
            })
            .collect()
    };
    // The not-found answer is the store's (below).
    let id = engine.images.resolve(name).map(|r| r.image.id.to_string());
    let images: std::collections::HashSet<String> = engine
        .images
        .list()
        .map(|l| l.into_iter().map(|i| i.id.to_string()).collect())
        .unwrap_or_default();
    let items = engine
        .images
        .remove_pruning(name, force, prune, &users)
        .map_err(|e| {
            if e.is_not_found() {
                EngineError::Missing(e.to_string())
            } else if matches!(e, berth_image::image_store::ImageStoreError::Conflict(_)) {
                EngineError::Conflict(e.to_string())
            } else {
                EngineError::BadRequest(e.to_string())
            }
        })?;
    // dockerd names the image by its ID in both (`LogImageEvent(id, id, …)`); a deleted
    // layer's chain ID is no image event, a pruned parent's deletion is.
    let id = id.unwrap_or_default();
    for it in &items {
        match it {
            DeleteItem::Untagged(_) => engine.image_event_of("untag", &id, &id),
            DeleteItem::Deleted(i) if images.contains(i) => engine.image_event_of("delete", i, i),
            DeleteItem::Deleted(_) => {}
        }
    }
    Ok(items)
}

/// `POST /images/prune` (`dangling=false`: every unused image) with dockerd's other filters:
/// `until` (images created before), `label` and `label!` (of the image's config); other keys
/// are refused.
pub fn prune(
    engine: &Engine,
    filters: &berth_api::Filters,
) -> Result<berth_api::image::PruneReport> {
    for (k, _) in &filters.0 {
        match k.as_str() {
            "until" | "label" | "label!" | "dangling" => {}
            _ => return Err(EngineError::BadRequest(format!("invalid filter '{k}'"))),
        }
    }
    let all = !filters
        .bool_or("dangling", true)
        .map_err(EngineError::BadRequest)?;
    let mut until = None;
    for v in filters.get("until") {
        until = Some(
            crate::events::parse_time(v)
                .ok_or_else(|| EngineError::BadRequest(format!("invalid filter 'until={v}'")))?
                / 1_000_000_000,
        );
    }
    let used = in_use_fn(engine);
    let images = engine.images.clone();
    let has_labels = filters.has("label") || filters.has("label!");
    // An image a filter leaves out is kept as an image in use is.
    let keep = move |id: &ImageId| -> bool {
        if used(id) {
            return true;
        }
        if let Some(u) = until {
            match images.get(id) {
                Ok(rec) if rec.created > 0 && rec.created < u => {}
                _ => return true,
            }
        }
        if has_labels {
            let labels = images
                .config(id)
                .ok()
                .and_then(|c| c.config)
                .and_then(|c| c.labels)
                .unwrap_or_default();
            let has = |spec: &str| match spec.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(spec),
            };
            if !filters.prune_labels_match(has) {
                return true;
            }
        }
        false
    };
    let report = engine
        .images
        .prune(all, &keep)
        .map_err(|e| EngineError::BadRequest(e.to_string()))?;
    Ok(berth_api::image::PruneReport {
        images_deleted: (!report.deleted.is_empty()).then_some(report.deleted),
        space_reclaimed: report.space_reclaimed,
    })
}

/// `POST /auth`: logs in to a registry with the given credentials (kept nowhere).
pub fn login(engine: &Engine, a: &AuthConfig) -> Result<AuthResponse> {
    let server = if a.serveraddress.is_empty() {
        "docker.io"
    } else {
        &a.serveraddress
    };
    let dir = tempfile::Builder::new()
        .prefix("berthd-login")
        .tempdir()
        .map_err(EngineError::io("creating", std::env::temp_dir()))?;
    let mut cfg = engine.registry_config();
    cfg.credentials = CredentialStore::at(dir.path().join("config.json"));
    berth_registry::Client::new(cfg)
        .and_then(|c| c.login(server, &a.username, &a.password))
        .map_err(|e| EngineError::Unauthorized(e.to_string()))?;
    Ok(AuthResponse {
        status: "Login Succeeded".into(),
        identity_token: String::new(),
    })
}
