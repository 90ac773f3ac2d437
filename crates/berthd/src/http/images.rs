//! Image routes: pull/import (`/images/create`), push, tag, remove, inspect, history,
//! save/load, prune, search (refused), `/auth`, `/commit` (an image from a container).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_api::image::AuthConfig;
use berth_api::ApiVersion;
use berth_image::manifest::Platform;
use berth_image::Reference;

use super::{
    blocking, decode, filters, json, json_status, qbool, qstr, query_pairs, stream,
    stream_after_first, ApiError, AppState, JsonBody, St, Q, R,
};
use crate::engine::EngineError;
use crate::images;

pub use crate::images::in_use_fn;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/images/json", get(list))
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
        .route("/commit", post(commit))
}

/// Repeated `changes=` (the docker CLI, docker-py): every one, as Go reads them; a JSON
/// array (the berth CLI's form) gives its elements.
fn changes_param(raw: Option<&str>) -> Vec<String> {
    query_pairs(raw)
        .into_iter()
        .filter(|(k, v)| k == "changes" && !v.is_empty())
        .flat_map(|(_, v)| serde_json::from_str::<Vec<String>>(&v).unwrap_or_else(|_| vec![v]))
        .filter(|c| !c.is_empty())
        .collect()
}

/// dockerd's `RepoTagReference` of the `repo` and `tag` parameters: the repository (maybe with
/// its tag), the `tag` parameter replacing that tag, `latest` without either; `None` without a
/// repository. Untagged, `host:port/repo` would read as repository `host`, tag `port/repo`.
fn repo_tag(
    q: &HashMap<String, String>,
    digest_refused: &str,
) -> Result<Option<Reference>, ApiError> {
    let Some(repo) = qstr(q, "repo") else {
        return Ok(None);
    };
    let r = reference(repo)?;
    if r.digest().is_some() {
        return Err(ApiError::bad(digest_refused));
    }
    Ok(Some(match qstr(q, "tag") {
        Some(t) => r.with_tag(t).map_err(|e| ApiError::bad(e.to_string()))?,
        None => tagged(r)?,
    }))
}

/// `POST /commit`: an image from a container's changes.
async fn commit(s: St, Query(q): Q, RawQuery(raw): RawQuery, JsonBody(body): JsonBody) -> R {
    // The body is checked first, as dockerd does (a bad one is a 400 whatever the container).
    // An absent config (no body, `null`) takes the container's.
    let config = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        decode::<Option<berth_api::container::Config>>(&body)?
    };
    let Some(container) = qstr(&q, "container") else {
        return Err(EngineError::NotFound(String::new()).into());
    };
    let tag = repo_tag(&q, "cannot commit to digest reference")?;
    // Docker's `BoolValueOrDefault(pause, true)`.
    let pause = qstr(&q, "pause").is_none_or(super::form_bool);
    let req = crate::engine::commit::CommitRequest {
        container: container.to_string(),
        tag,
        author: qstr(&q, "author").unwrap_or_default().to_string(),
        comment: qstr(&q, "comment").unwrap_or_default().to_string(),
        pause,
        changes: changes_param(raw.as_deref()),
        config,
    };
    let id = s.engine.commit(req).await?;
    Ok(json_status(
        StatusCode::CREATED,
        &berth_api::common::IdResponse { id },
    ))
}

fn reference(s: &str) -> Result<Reference, ApiError> {
    Reference::parse_normalized(s).map_err(|e| ApiError::bad(e.to_string()))
}

/// A reference with `latest` when it has neither tag nor digest.
fn tagged(r: Reference) -> Result<Reference, ApiError> {
    if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| ApiError::bad(e.to_string()))
    } else {
        Ok(r)
    }
}

/// The `platform` of a pull or an import: containerd's `platforms.Parse` (its words), then
/// dockerd's `CheckOS` (this daemon runs Linux images only).
fn platform(q: &HashMap<String, String>) -> Result<Option<Platform>, ApiError> {
    let Some(raw) = qstr(q, "platform") else {
        return Ok(None);
    };
    if let Some(e) = Platform::specifier_error(raw) {
        return Err(ApiError::bad(e));
    }
    let p = Platform::parse(raw).map_err(|e| ApiError::bad(e.to_string()))?;
    if !p.os.eq_ignore_ascii_case("linux") {
        return Err(ApiError::bad("operating system is not supported"));
    }
    Ok(Some(p))
}

fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok())
}

async fn list(s: St, Extension(v): Extension<ApiVersion>, Query(q): Q) -> R {
    let mut filters = filters(&q)?.0;
    // `until` may be relative to now: parsed here; the oldest bound wins (dockerd ANDs them).
    let mut until_nanos: Option<i64> = None;
    for (_, t) in filters.iter().filter(|(k, _)| k == "until") {
        let n = crate::events::parse_time(t)
            .ok_or_else(|| ApiError::bad(format!("invalid filter 'until={t}'")))?;
        until_nanos = Some(until_nanos.map_or(n, |u| u.min(n)));
    }
    filters.retain(|(k, _)| k != "until");
    let opts = berth_image::image_store::ListOptions {
        all: qbool(&q, "all"),
        filters,
        until_nanos,
        none_placeholders: v.image_list_has_none_placeholders(),
    };
    let engine = s.engine.clone();
    let mut list = blocking(move || {
        engine
            .images
            .list_summaries(&opts)
            .map_err(|e| EngineError::bad(e.to_string()))
    })
    .await?;
    let containers = s.engine.list();
    v.adapt_image_list(&mut list, |id| {
        containers.iter().filter(|c| c.image == id).count() as i64
    });
    Ok(json(&list))
}

async fn create(
    s: St,
    Query(q): Q,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    req: Request,
) -> R {
    if let Some(src) = qstr(&q, "fromSrc") {
        let changes = changes_param(raw.as_deref());
        return import(s.0, q.clone(), changes, src.to_string(), req).await;
    }
    let Some(from) = qstr(&q, "fromImage") else {
        return Err(ApiError::bad("fromImage or fromSrc is required"));
    };
    let tag = qstr(&q, "tag");
    let name = match tag {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let r = reference(&name)?;
    let platform = platform(&q)?.unwrap_or_else(Platform::host);
    // A bare repository and no `tag`: every tag (Docker's CLI sends `pull -a` this way;
    // without `-a` it always sends `tag`).
    let all_tags = tag.is_none() && r.tag().is_none() && r.digest().is_none();
    let r = if all_tags { r } else { tagged(r)? };
    let (cfg, guard) = images::registry_config(&s.engine, auth_header(&headers), r.domain())?;
    let rx = images::pull(s.engine.clone(), r, all_tags, platform, cfg, guard).await?;
    Ok(stream("application/json", rx))
}

async fn import(
    s: Arc<AppState>,
    q: HashMap<String, String>,
    changes: Vec<String>,
    src: String,
    req: Request,
) -> R {
    // The CLI sends `docker import - NAME[:TAG]` as `repo`.
    let tag = repo_tag(&q, "cannot import digest reference")?;
    let opts = berth_image::archive::ImportOptions {
        changes,
        message: qstr(&q, "message").map(str::to_string),
        source_name: src.clone(),
        tag,
        platform: platform(&q)?,
    };
    let rx = if src == "-" {
        images::import(s.engine.clone(), opts, body_reader(req), None)
    } else {
        // dockerd's route: a source without a scheme is `http://`, fetched before anything
        // is streamed (its failure is the request's, with Go's words).
        let url = if src.contains("://") {
            src
        } else {
            format!("http://{src}")
        };
        let resp = super::fetch::get(&url).await?;
        let reader = stream_reader(resp.bytes_stream());
        images::import(s.engine.clone(), opts, reader, Some(url))
    };
    Ok(stream_after_first("application/json", rx).await)
}

/// A blocking reader over a request body (fed from the async side through a channel).
fn body_reader(req: Request) -> impl Read + Send + 'static {
    stream_reader(req.into_body().into_data_stream())
}

/// A blocking reader over a stream of chunks (a request's or a download's body).
fn stream_reader<E: std::error::Error + Send + Sync + 'static>(
    stream: impl futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> impl Read + Send + 'static {
    use futures_util::StreamExt;
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Bytes>>(16);
    let mut stream = Box::pin(stream);
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

async fn load(s: St, Extension(v): Extension<ApiVersion>, req: Request) -> R {
    // `platform` from 1.48 (ignored below, as dockerd's route).
    let platform = if v.api_1_48_features() {
        one_platform(req.uri().query(), "platform")?
    } else {
        None
    };
    let rx = images::load(s.engine.clone(), body_reader(req), platform);
    Ok(stream("application/json", rx))
}

async fn prune(s: St, Query(q): Q) -> R {
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let f = filters(&q)?;
    let engine = s.engine.clone();
    Ok(json(&blocking(move || images::prune(&engine, &f)).await?))
}

async fn search() -> R {
    Err(ApiError::not_implemented("search is not supported: Berth has no index service to search (use the registry's catalog)",
    ))
}

async fn save_many(s: St, Extension(v): Extension<ApiVersion>, RawQuery(q): RawQuery) -> R {
    // `names` is repeated: the raw query keeps every one.
    let names: Vec<String> = query_pairs(q.as_deref())
        .into_iter()
        .filter(|(k, _)| k == "names")
        .map(|(_, v)| v)
        .collect();
    if v.api_1_48_features() {
        let platform = one_platform(q.as_deref(), "platform")?;
        check_save_platform(&s.engine, &names, platform.as_ref())?;
    }
    Ok(stream(
        "application/x-tar",
        images::save(s.engine.clone(), names)?,
    ))
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

/// A JSON-encoded OCI platform of the 1.46+ `platform`/`platforms` parameters, checked as
/// dockerd's `DecodePlatform`.
fn decode_platform(raw: &str) -> Result<Platform, ApiError> {
    #[derive(serde::Deserialize)]
    struct Wire {
        #[serde(default)]
        os: String,
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        variant: String,
        #[serde(default, rename = "os.version")]
        os_version: String,
        #[serde(default, rename = "os.features")]
        os_features: Vec<String>,
    }
    let w: Wire = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad(format!("failed to parse platform: {e}")))?;
    let optional = !w.variant.is_empty() || !w.os_version.is_empty() || !w.os_features.is_empty();
    if w.os.is_empty() && w.architecture.is_empty() && optional {
        return Err(ApiError::bad(
            "optional platform fields provided, but OS and Architecture are missing",
        ));
    }
    if w.os.is_empty() || w.architecture.is_empty() {
        return Err(ApiError::bad("both OS and Architecture must be provided"));
    }
    Ok(Platform {
        os: w.os,
        architecture: w.architecture,
        variant: (!w.variant.is_empty()).then_some(w.variant),
        ..Default::default()
    }
    .normalize())
}

/// Every `platform` value of a raw query (at most one, as dockerd's routes).
fn one_platform(raw: Option<&str>, key: &str) -> Result<Option<Platform>, ApiError> {
    let all: Vec<String> = query_pairs(raw)
        .into_iter()
        .filter(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v)
        .collect();
    match all.as_slice() {
        [] => Ok(None),
        [one] => decode_platform(one).map(Some),
        _ if key == "platforms" => Err(ApiError::bad("multiple platforms are not supported")),
        _ => Err(ApiError::bad("multiple platform parameters not supported")),
    }
}

/// `os/arch[/variant]` as containerd's `platforms.FormatAll`.
fn format_platform(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The platform of a local image (its config's).
fn image_platform(engine: &crate::engine::Engine, name: &str) -> Result<Platform, ApiError> {
    let r = engine
        .images
        .resolve(name)
        .map_err(|_| EngineError::ImageNotFound(name.to_string()))?;
    let cfg = engine
        .images
        .config(&r.image.id)
        .map_err(EngineError::from)?;
    Ok(Platform {
        os: cfg.os.clone(),
        architecture: cfg.architecture.clone(),
        variant: cfg.variant.clone().filter(|v| !v.is_empty()),
        ..Default::default()
    }
    .normalize())
}

/// Whether an image of platform `have` serves `want` (a variant is compared when both
/// name one).
fn platform_matches(want: &Platform, have: &Platform) -> bool {
    want.os == have.os
        && want.architecture == have.architecture
        && (want.variant.is_none() || have.variant.is_none() || want.variant == have.variant)
}

/// dockerd's `GetImage` with a platform: an image of another platform is not found.
fn check_image_platform(
    engine: &crate::engine::Engine,
    name: &str,
    want: Option<&Platform>,
) -> Result<(), ApiError> {
    let Some(want) = want else {
        return Ok(());
    };
    let have = image_platform(engine, name)?;
    if platform_matches(want, &have) {
        return Ok(());
    }
    // As given, but a canonical (domain-qualified) reference in its familiar form, as Go's
    // `reference.ParseNamed` + `FamiliarString`.
    let canonical = name
        .split_once('/')
        .is_some_and(|(d, _)| d.contains(['.', ':']) || d == "localhost");
    let shown = match Reference::parse(name) {
        Ok(r) if canonical => r.familiar_string(),
        _ => name.to_string(),
    };
    Err(ApiError::not_found(format!(
        "image with reference {shown} was found but its platform ({}) does not match the specified platform ({})",
        format_platform(&have),
        format_platform(want)
    )))
}

/// `platform` of save (API 1.48 and up): every image saved must be of it.
fn check_save_platform(
    engine: &crate::engine::Engine,
    names: &[String],
    want: Option<&Platform>,
) -> Result<(), ApiError> {
    let Some(want) = want else {
        return Ok(());
    };
    for n in names {
        if !platform_matches(want, &image_platform(engine, n)?) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "no suitable export target found for platform {}",
                    format_platform(want)
                ),
            ));
        }
    }
    Ok(())
}

async fn image_get(
    s: St,
    Extension(v): Extension<ApiVersion>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
) -> R {
    let (name, op) = split_op(&rest, &["json", "history", "get"]);
    let name = name.to_string();
    let engine = s.engine.clone();
    let q: HashMap<String, String> = query_pairs(raw.as_deref()).into_iter().collect();
    match op {
        Some("json") => {
            let manifests = v.api_1_48_features() && qbool(&q, "manifests");
            let platform = if v.api_1_49_features() {
                qstr(&q, "platform").map(decode_platform).transpose()?
            } else {
                None
            };
            if manifests && platform.is_some() {
                return Err(ApiError::bad(
                    "conflicting options: manifests and platform options cannot both be set",
                ));
            }
            Ok(json(
                &blocking(move || {
                    check_image_platform(&engine, &name, platform.as_ref())?;
                    Ok::<_, ApiError>(images::inspect(&engine, &name, v)?)
                })
                .await?,
            ))
        }
        Some("history") => {
            let platform = if v.api_1_48_features() {
                qstr(&q, "platform").map(decode_platform).transpose()?
            } else {
                None
            };
            Ok(json(
                &blocking(move || {
                    check_image_platform(&engine, &name, platform.as_ref())?;
                    Ok::<_, ApiError>(images::history(&engine, &name)?)
                })
                .await?,
            ))
        }
        Some("get") => {
            let platform = if v.api_1_48_features() {
                one_platform(raw.as_deref(), "platform")?
            } else {
                None
            };
            let names = vec![name];
            check_save_platform(&engine, &names, platform.as_ref())?;
            Ok(stream("application/x-tar", images::save(engine, names)?))
        }
        _ => Err(ApiError::not_found("page not found")),
    }
}

async fn image_post(
    s: St,
    Extension(v): Extension<ApiVersion>,
    Path(rest): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> R {
    let (name, op) = split_op(&rest, &["push", "tag"]);
    let name = name.to_string();
    match op {
        Some("tag") => {
            let repo = q.get("repo").cloned().unwrap_or_default();
            if repo.is_empty() {
                return Err(ApiError::bad(
                    "repository name must have at least one component",
                ));
            }
            let full = match qstr(&q, "tag") {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            };
            let target = reference(&full)?;
            let engine = s.engine.clone();
            blocking(move || images::tag(&engine, &name, &target)).await?;
            Ok((StatusCode::CREATED, "").into_response())
        }
        Some("push") => {
            // Without `tag`, every tag of the repository (`docker push --all-tags`), as dockerd.
            let refs = match qstr(&q, "tag") {
                Some(t) => vec![tagged(reference(&format!("{name}:{t}"))?)?],
                None => {
                    let r = reference(&name)?;
                    if r.tag().is_some() || r.digest().is_some() {
                        vec![r]
                    } else {
                        let engine = s.engine.clone();
                        let tags = blocking(move || {
                            engine.images.repository_tags(&r).map_err(EngineError::from)
                        })
                        .await?;
                        tags.into_iter().map(|(t, _)| t).collect()
                    }
                }
            };
            let missing = || {
                ApiError::not_found(format!(
                    "An image does not exist locally with the tag: {}",
                    reference(&name).map_or(name.clone(), |r| r.familiar_name())
                ))
            };
            // Unknown image: a 404 before the stream starts, as Docker.
            let first = refs.first().ok_or_else(missing)?;
            s.engine
                .images
                .resolve(&first.to_string())
                .map_err(|_| missing())?;
            if v.push_reads_platform() {
                let platform = qstr(&q, "platform").map(decode_platform).transpose()?;
                for r in &refs {
                    check_image_platform(&s.engine, &r.to_string(), platform.as_ref())?;
                }
            }
            let (cfg, guard) =
                images::registry_config(&s.engine, auth_header(&headers), first.domain())?;
            Ok(stream(
                "application/json",
                images::push(s.engine.clone(), refs, cfg, guard),
            ))
        }
        _ => Err(ApiError::not_found("page not found")),
    }
}

async fn image_delete(
    s: St,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> R {
    let q: HashMap<String, String> = query_pairs(raw.as_deref()).into_iter().collect();
    if v.image_delete_reads_platforms() {
        let platform = one_platform(raw.as_deref(), "platforms")?;
        check_image_platform(&s.engine, &name, platform.as_ref())?;
    }
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let force = qbool(&q, "force");
    let prune = !qbool(&q, "noprune");
    let engine = s.engine.clone();
    Ok(json(
        &blocking(move || images::remove(&engine, &name, force, prune)).await?,
    ))
}

async fn auth(s: St, body: Bytes) -> R {
    let a: AuthConfig = decode(&body)?;
    let engine = s.engine.clone();
    Ok(json(&blocking(move || images::login(&engine, &a)).await?))
}
