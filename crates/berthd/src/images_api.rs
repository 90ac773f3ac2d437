//! Image routes: pull (`/images/create`, with Docker's JSON progress stream), push, tag,
//! remove, inspect, history, save/load, import, prune, search (refused), `/auth`, `/system/df`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use berth_image::image_store::{DeleteItem, ImageId};
use berth_image::manifest::Platform;
use berth_image::{Digest, Reference};
use berth_registry::images::{ImageBackend, LocalBackend};
use berth_registry::{CredentialStore, Credentials, ImageEvent, LayerEvent, RegistryConfig};
use serde_json::{json, Value};

use crate::api::{bad, json_resp, qbool, ApiError, AppState, St, Q, R};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/images/create", post(create))
        .route("/images/load", post(load))
        .route("/images/prune", post(prune))
        .route("/images/search", get(search))
        .route("/images/get", get(save_many))
        .route(
            "/images/{*rest}",
            get(image_get).post(image_post).delete(image_delete),
        )
        .route("/auth", post(auth))
        .route("/system/df", get(system_df))
}

fn join_err(e: tokio::task::JoinError) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The registry settings of the daemon, with credentials from `X-Registry-Auth` when given
/// (written to a private temporary `config.json` that lives as long as the operation).
fn registry_config(
    s: &AppState,
    headers: &HeaderMap,
    registry: &str,
) -> Result<(RegistryConfig, Option<tempfile::TempDir>), ApiError> {
    let mut cfg = s.engine.registry_config.clone();
    let Some(h) = headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return Ok((cfg, None));
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim_end_matches('='))
        })
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h))
        .map_err(|_| bad("invalid X-Registry-Auth header: not base64"))?;
    let v: Value = serde_json::from_slice(&raw)
        .map_err(|e| bad(format!("invalid X-Registry-Auth header: {e}")))?;
    let user = v["username"].as_str().unwrap_or("");
    let pass = v["password"].as_str().unwrap_or("");
    if user.is_empty() && pass.is_empty() {
        return Ok((cfg, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("berthd-auth")
        .tempdir()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let store = CredentialStore::at(dir.path().join("config.json"));
    store
        .set(registry, &Credentials::new(user, pass))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    cfg.credentials = store;
    Ok((cfg, Some(dir)))
}

/// Docker's JSON progress lines, sent to the response as they happen.
/// Events may come from the registry client's own runtime threads, where blocking on the
/// response channel is not allowed: they go through an unbounded std channel to a forwarder.
struct JsonProgress {
    tx: Mutex<std::sync::mpsc::Sender<Bytes>>,
    last: Mutex<HashMap<Digest, String>>,
}

impl JsonProgress {
    fn send(&self, v: Value) {
        let _ = self
            .tx
            .lock()
            .unwrap()
            .send(Bytes::from(v.to_string() + "\r\n"));
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
        let v = match event {
            ImageEvent::PullingFrom { tag, repository } => {
                json!({"status": format!("Pulling from {repository}"), "id": tag})
            }
            ImageEvent::Resolved { digest } => json!({"status": format!("Digest: {digest}")}),
            ImageEvent::PushingTo { repository } => {
                json!({"status": format!("The push refers to repository [{repository}]")})
            }
            ImageEvent::Pushed { tag, digest, size } => {
                // Docker sends the status line, then the `aux` record on its own (clients
                // that see `aux` hand it to a callback and print nothing).
                self.send(json!({"status": format!("{tag}: digest: {digest} size: {size}")}));
                json!({
                    "progressDetail": {},
                    "aux": {"Tag": tag, "Digest": digest.to_string(), "Size": size},
                })
            }
        };
        self.send(v);
    }

    fn layer(&self, digest: &Digest, event: &LayerEvent) {
        let id: String = digest.hex().chars().take(12).collect();
        let status = event.status();
        let (detail, progress) = match event {
            LayerEvent::Downloading { current, total }
            | LayerEvent::Extracting { current, total }
            | LayerEvent::Pushing { current, total } => (
                json!({"current": current, "total": total}),
                Some(bar(*current, *total)),
            ),
            _ => (json!({}), None),
        };
        if progress.is_none() {
            let mut last = self.last.lock().unwrap();
            if last.get(digest) == Some(&status) {
                return;
            }
            last.insert(digest.clone(), status.clone());
        }
        let mut v = json!({"status": status, "progressDetail": detail, "id": id});
        if let Some(p) = progress {
            v["progress"] = json!(p);
        }
        self.send(v);
    }
}

/// Runs `work` on a blocking thread, streaming its JSON lines; its error becomes Docker's
/// `errorDetail` line.
fn stream_job(
    work: impl FnOnce(&JsonProgress) -> Result<Vec<Value>, String> + Send + 'static,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let (stx, srx) = std::sync::mpsc::channel::<Bytes>();
    tokio::task::spawn_blocking(move || {
        while let Ok(b) = srx.recv() {
            if tx.blocking_send(b).is_err() {
                return;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let p = JsonProgress {
            tx: Mutex::new(stx),
            last: Mutex::new(HashMap::new()),
        };
        match work(&p) {
            Ok(lines) => {
                for l in lines {
                    p.send(l);
                }
            }
            Err(e) => p.send(json!({"errorDetail": {"message": e}, "error": e})),
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

fn parse_platform(q: &HashMap<String, String>) -> Result<Platform, ApiError> {
    match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Platform::parse(p).map_err(|e| bad(e.to_string())),
        None => Ok(Platform::host()),
    }
}

async fn create(State(s): St, axum::extract::Query(q): Q, headers: HeaderMap, req: Request) -> R {
    if let Some(src) = q.get("fromSrc").filter(|v| !v.is_empty()) {
        return import(s, q.clone(), src.clone(), req).await;
    }
    let Some(from) = q.get("fromImage").filter(|v| !v.is_empty()) else {
        return Err(bad("fromImage or fromSrc is required"));
    };
    let mut name = from.clone();
    let tag = q.get("tag").filter(|t| !t.is_empty());
    if let Some(t) = tag {
        if t.starts_with("sha256:") {
            name = format!("{name}@{t}");
        } else {
            name = format!("{name}:{t}");
        }
    }
    let reference = Reference::parse_normalized(&name).map_err(|e| bad(e.to_string()))?;
    if tag.is_none() && reference.tag().is_none() && reference.digest().is_none() {
        // A bare repository and no `tag`: every tag (Docker's CLI sends `pull -a` this way;
        // without `-a` it always sends `tag`).
        return pull_all_tags(s, &q, &headers, reference);
    }
    let reference = if reference.tag().is_none() && reference.digest().is_none() {
        reference
            .with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| bad(e.to_string()))?
    } else {
        reference
    };
    let platform = parse_platform(&q)?;
    let (cfg, guard) = registry_config(&s, &headers, reference.domain())?;
    let store = s.engine.images.clone();
    let bus = s.engine.clone();
    Ok(stream_job(move |p| {
        let _guard = guard;
        let b = LocalBackend::with_store(store).with_registry_config(cfg);
        let out = b.pull(&reference, &platform, p).map_err(|e| e.message)?;
        let fam = reference.familiar_string();
        bus.image_event("pull", &fam);
        Ok(vec![json!({"status": if out.updated {
            format!("Status: Downloaded newer image for {fam}")
        } else {
            format!("Status: Image is up to date for {fam}")
        }})])
    }))
}

/// `POST /images/create?fromImage=REPO` without a tag: pulls all tags, each with its own
/// `Pulling from` … `Digest:` block, then one status line for the repository (as Docker).
fn pull_all_tags(
    s: Arc<AppState>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    repo: Reference,
) -> R {
    let platform = parse_platform(q)?;
    let (cfg, guard) = registry_config(&s, headers, repo.domain())?;
    let store = s.engine.images.clone();
    let bus = s.engine.clone();
    Ok(stream_job(move |p| {
        let _guard = guard;
        let b = LocalBackend::with_store(store).with_registry_config(cfg);
        let updated = b
            .pull_all_tags(&repo, &platform, p)
            .map_err(|e| e.message)?;
        let fam = repo.familiar_name();
        bus.image_event("pull", &fam);
        Ok(vec![json!({"status": if updated {
            format!("Status: Downloaded newer image for {fam}")
        } else {
            format!("Status: Image is up to date for {fam}")
        }})])
    }))
}

async fn import(s: Arc<AppState>, q: HashMap<String, String>, src: String, req: Request) -> R {
    if src != "-" {
        return Err(bad(
            "import from a URL is not supported: send the archive in the body",
        ));
    }
    let changes: Vec<String> = q
        .get("changes")
        .map(|c| {
            // docker-py/CLI send `changes` repeated; axum's map keeps the last: accept JSON too.
            serde_json::from_str::<Vec<String>>(c).unwrap_or_else(|_| vec![c.clone()])
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.is_empty())
        .collect();
    let tag = match q.get("repo").filter(|r| !r.is_empty()) {
        Some(r) => {
            let full = match q.get("tag").filter(|t| !t.is_empty()) {
                Some(t) => format!("{r}:{t}"),
                None => r.clone(),
            };
            Some(Reference::parse_normalized(&full).map_err(|e| bad(e.to_string()))?)
        }
        None => None,
    };
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Some(Platform::parse(p).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let opts = berth_image::archive::ImportOptions {
        changes,
        message: q.get("message").cloned().filter(|m| !m.is_empty()),
        source_name: "-".into(),
        tag,
        platform,
    };
    let reader = body_reader(req);
    let engine = s.engine.clone();
    Ok(stream_job(move |_| {
        let id = berth_image::archive::import(
            &engine.images,
            berth_image::archive::ImportSource::Tar(Box::new(reader)),
            &opts,
        )
        .map_err(|e| e.to_string())?;
        engine.image_event("import", &id.to_string());
        Ok(vec![json!({"status": id.to_string()})])
    }))
}

/// A blocking reader over a request body (fed from the async side through a channel).
fn body_reader(req: Request) -> impl Read + Send + 'static {
    use futures_util::StreamExt;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(16);
    let mut stream = req.into_body().into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let item = chunk.map_err(std::io::Error::other);
            let stop = item.is_err();
            let tx2 = tx.clone();
            if tokio::task::spawn_blocking(move || tx2.send(item))
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
                || stop
            {
                return;
            }
        }
    });
    ChannelReader {
        rx,
        buf: Bytes::new(),
    }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.buf = b,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

async fn load(State(s): St, axum::extract::Query(q): Q, req: Request) -> R {
    let quiet = qbool(&q, "quiet");
    let reader = body_reader(req);
    let engine = s.engine.clone();
    let _ = quiet;
    Ok(stream_job(move |_| {
        let report =
            berth_image::archive::load(&engine.images, reader).map_err(|e| e.to_string())?;
        let mut lines = Vec::new();
        for img in report.images {
            for (t, old) in &img.moved {
                lines.push(json!({"stream": format!("The image {t} already exists, renaming the old one with ID {old} to empty string\n")}));
            }
            if img.tags.is_empty() {
                lines.push(json!({"stream": format!("Loaded image ID: {}\n", img.id)}));
            }
            for t in &img.tags {
                lines.push(json!({"stream": format!("Loaded image: {t}\n")}));
            }
            engine.image_event("load", &img.id.to_string());
        }
        Ok(lines)
    }))
}

fn in_use_fn(engine: &crate::engine::Engine) -> impl Fn(&ImageId) -> bool {
    let used: Vec<String> = engine.list().into_iter().map(|c| c.image).collect();
    move |id: &ImageId| used.iter().any(|u| *u == id.to_string())
}

async fn prune(State(s): St, axum::extract::Query(q): Q) -> R {
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let filters = crate::api::parse_filters(&q)?;
    let all = filters
        .iter()
        .any(|(k, v)| k == "dangling" && matches!(v.as_str(), "false" | "0"));
    let engine = s.engine.clone();
    let report = tokio::task::spawn_blocking(move || {
        let in_use = in_use_fn(&engine);
        engine.images.prune(all, &in_use)
    })
    .await
    .map_err(join_err)?
    .map_err(|e| bad(e.to_string()))?;
    Ok(json_resp(json!({
        "ImagesDeleted": if report.deleted.is_empty() { Value::Null } else { delete_items(&report.deleted) },
        "SpaceReclaimed": report.space_reclaimed,
    })))
}

fn delete_items(items: &[DeleteItem]) -> Value {
    json!(items
        .iter()
        .map(|d| match d {
            DeleteItem::Untagged(t) => json!({"Untagged": t}),
            DeleteItem::Deleted(i) => json!({"Deleted": i}),
        })
        .collect::<Vec<_>>())
}

async fn search() -> R {
    Err(ApiError(
        StatusCode::NOT_IMPLEMENTED,
        "search is not supported: Berth has no index service to search (use the registry's catalog)".into(),
    ))
}

async fn save_many(State(s): St, req: Request) -> R {
    let names: Vec<String> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("names="))
        .map(percent_decode)
        .collect();
    save(s, names).await
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn save(s: Arc<AppState>, names: Vec<String>) -> R {
    if names.is_empty() {
        return Err(bad("no images given"));
    }
    // Resolve first so that an unknown name is a 404, not a broken stream.
    for n in &names {
        s.engine
            .images
            .resolve(n)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let engine = s.engine.clone();
    tokio::task::spawn_blocking(move || {
        struct W(tokio::sync::mpsc::Sender<Bytes>);
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
        if let Err(e) = berth_image::archive::save(&engine.images, &names, w) {
            tracing::warn!("image save: {e}");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Splits `/images/{name}/{op}` where the name may contain slashes.
fn split_op<'a>(rest: &'a str, ops: &[&'static str]) -> (&'a str, Option<&'static str>) {
    for op in ops {
        if let Some(name) = rest.strip_suffix(&format!("/{op}")) {
            return (name, Some(*op));
        }
    }
    (rest, None)
}

/// A JSON document about the image `name` (inspect, history), made off the async runtime:
/// 404 "No such image" when it does not resolve.
async fn image_doc<F>(s: &AppState, name: String, doc: F) -> Result<Value, ApiError>
where
    F: FnOnce(
            &berth_image::image_store::ImageStore,
            &berth_image::image_store::ImageId,
        )
            -> Result<serde_json::Result<Value>, berth_image::image_store::ImageStoreError>
        + Send
        + 'static,
{
    let engine = s.engine.clone();
    tokio::task::spawn_blocking(move || {
        let r = engine.images.resolve(&name).map_err(|e| {
            if e.is_not_found() {
                ApiError(StatusCode::NOT_FOUND, format!("No such image: {name}"))
            } else {
                bad(e.to_string())
            }
        })?;
        let internal = |e: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e);
        doc(&engine.images, &r.image.id)
            .map_err(|e| internal(e.to_string()))?
            .map_err(|e| internal(e.to_string()))
    })
    .await
    .map_err(join_err)?
}

async fn image_get(State(s): St, Path(rest): Path<String>) -> R {
    let (name, op) = split_op(&rest, &["json", "history", "get"]);
    let name = name.to_string();
    match op {
        Some("json") => image_doc(&s, name, |images, id| {
            images.inspect(id).map(serde_json::to_value)
        })
        .await
        .map(json_resp),
        Some("history") => image_doc(&s, name, |images, id| {
            images.history(id).map(serde_json::to_value)
        })
        .await
        .map(json_resp),
        Some("get") => save(s, vec![name]).await,
        _ => Err(ApiError(StatusCode::NOT_FOUND, "page not found".into())),
    }
}

async fn image_post(
    State(s): St,
    Path(rest): Path<String>,
    axum::extract::Query(q): Q,
    headers: HeaderMap,
) -> R {
    let (name, op) = split_op(&rest, &["push", "tag"]);
    let name = name.to_string();
    match op {
        Some("tag") => {
            let repo = q.get("repo").cloned().unwrap_or_default();
            if repo.is_empty() {
                return Err(bad("repository name must have at least one component"));
            }
            let full = match q.get("tag").filter(|t| !t.is_empty()) {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            };
            let target = Reference::parse_normalized(&full).map_err(|e| bad(e.to_string()))?;
            let engine = s.engine.clone();
            tokio::task::spawn_blocking(move || engine.images.tag(&name, &target))
                .await
                .map_err(join_err)?
                .map_err(|e| {
                    if e.is_not_found() {
                        ApiError(StatusCode::NOT_FOUND, format!("No such image: {}", e))
                    } else {
                        bad(e.to_string())
                    }
                })?;
            s.engine.image_event("tag", &full);
            Ok((StatusCode::CREATED, "").into_response())
        }
        Some("push") => {
            let mut full = name.clone();
            if let Some(t) = q.get("tag").filter(|t| !t.is_empty()) {
                full = format!("{full}:{t}");
            }
            let reference = Reference::parse_normalized(&full).map_err(|e| bad(e.to_string()))?;
            let reference = if reference.tag().is_none() && reference.digest().is_none() {
                reference
                    .with_tag(berth_image::reference::DEFAULT_TAG)
                    .map_err(|e| bad(e.to_string()))?
            } else {
                reference
            };
            // Unknown image: a 404 before the stream starts, as Docker.
            s.engine
                .images
                .resolve(&reference.to_string())
                .map_err(|_| {
                    ApiError(
                        StatusCode::NOT_FOUND,
                        format!(
                            "An image does not exist locally with the tag: {}",
                            reference.familiar_name()
                        ),
                    )
                })?;
            let (cfg, guard) = registry_config(&s, &headers, reference.domain())?;
            let store = s.engine.images.clone();
            let engine = s.engine.clone();
            Ok(stream_job(move |p| {
                let _guard = guard;
                let b = LocalBackend::with_store(store).with_registry_config(cfg);
                b.push(&reference, p).map_err(|e| e.message)?;
                engine.image_event("push", &reference.familiar_string());
                Ok(vec![])
            }))
        }
        _ => Err(ApiError(StatusCode::NOT_FOUND, "page not found".into())),
    }
}

async fn image_delete(State(s): St, Path(name): Path<String>, axum::extract::Query(q): Q) -> R {
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let force = qbool(&q, "force");
    let engine = s.engine.clone();
    let n2 = name.clone();
    let items = tokio::task::spawn_blocking(move || {
        let in_use = in_use_fn(&engine);
        // Docker: a container using the image blocks its removal unless forced.
        if !force {
            if let Ok(r) = engine.images.resolve(&n2) {
                if let Some(c) = engine
                    .list()
                    .into_iter()
                    .find(|c| c.image == r.image.id.to_string())
                {
                    let short: String = c.id.chars().take(12).collect();
                    let img: String = r.image.id.to_string().trim_start_matches("sha256:").chars().take(12).collect();
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("conflict: unable to remove repository reference \"{n2}\" (must force) - container {short} is using its referenced image {img}"),
                    ));
                }
            }
        }
        engine.images.remove(&n2, force, &in_use).map_err(|e| {
            let code = if e.is_not_found() {
                StatusCode::NOT_FOUND
            } else if matches!(e, berth_image::image_store::ImageStoreError::Conflict(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError(code, e.to_string())
        })
    })
    .await
    .map_err(join_err)??;
    for it in &items {
        match it {
            DeleteItem::Untagged(t) => s.engine.image_event("untag", t),
            DeleteItem::Deleted(i) => s.engine.image_event("delete", i),
        }
    }
    Ok(json_resp(delete_items(&items)))
}

async fn auth(State(s): St, body: Bytes) -> R {
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let server = v["serveraddress"]
        .as_str()
        .unwrap_or("docker.io")
        .to_string();
    let user = v["username"].as_str().unwrap_or("").to_string();
    let pass = v["password"].as_str().unwrap_or("").to_string();
    let dir = tempfile::Builder::new()
        .prefix("berthd-login")
        .tempdir()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut cfg = s.engine.registry_config.clone();
    cfg.credentials = CredentialStore::at(dir.path().join("config.json"));
    let res = tokio::task::spawn_blocking(move || {
        let c = berth_registry::Client::new(cfg)?;
        c.login(&server, &user, &pass)
    })
    .await
    .map_err(join_err)?;
    drop(dir);
    match res {
        Ok(()) => Ok(json_resp(
            json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(e) => Err(ApiError(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

async fn system_df(State(s): St) -> R {
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let engine = s.engine.clone();
    let v = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let in_use = in_use_fn(&engine);
        let du = engine
            .images
            .disk_usage(&in_use)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let summaries = engine
            .images
            .list_summaries(&Default::default())
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let containers = engine.list();
        let images: Vec<Value> = summaries
            .iter()
            .map(|i| {
                let u = du.images.iter().find(|u| u.id.to_string() == i.id);
                let n = containers.iter().filter(|c| c.image == i.id).count();
                json!({
                    "Id": i.id, "ParentId": i.parent_id, "RepoTags": i.repo_tags,
                    "RepoDigests": i.repo_digests, "Created": i.created, "Size": i.size,
                    "SharedSize": u.map(|u| u.shared_size as i64).unwrap_or(0),
                    "Labels": i.labels, "Containers": n,
                })
            })
            .collect();
        let cs: Vec<Value> = containers
            .iter()
            .map(|c| {
                let rw = engine
                    .images
                    .snapshotter()
                    .ok()
                    .and_then(|sn| sn.container_upper(&c.id))
                    .map(|p| dir_size(&p))
                    .unwrap_or(0);
                json!({
                    "Id": c.id, "Names": [c.name], "Image": c.config["Image"], "ImageID": c.image,
                    "Command": std::iter::once(c.path.clone()).chain(c.args.iter().cloned()).collect::<Vec<_>>().join(" "),
                    "Created": crate::util::unix_secs(&c.created), "State": c.state.status,
                    "Status": c.state.status, "SizeRw": rw, "SizeRootFs": 0,
                    "Labels": c.config["Labels"], "Mounts": crate::mounts::inspect_json(&engine, &c.id),
                })
            })
            .collect();
        Ok(json!({
            "LayersSize": du.layers_size,
            "Images": images,
            "Containers": cs,
            // Volumes with their real usage (crate::volumes).
            "Volumes": crate::volumes::df_json(&engine.volumes),
            "BuildCache": [],
        }))
    })
    .await
    .map_err(join_err)??;
    Ok(json_resp(v))
}

/// Bytes used by a directory tree (not following symlinks; hard links counted once per name).
pub fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        if let Ok(md) = e.path().symlink_metadata() {
            if md.is_dir() {
                n += dir_size(&e.path());
            } else {
                n += md.len();
            }
        }
    }
    n
}
