//! `POST /build` and `POST /build/prune`: Dockerfile builds through `berth-build`.
//!
//! The body is the context as a tar (plain, gzip or zstd); it is spooled to a file, then
//! extracted into a temporary directory under the data root by berth-image's confined layer
//! applier (no entry can land outside it). The build runs on a blocking thread and streams
//! Docker's JSON messages (`stream`, `aux`, `errorDetail` + `error`) as it goes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::api::{ApiError, AppState};
use berth_build::{BuildOptions, Builder, Event};
use berth_image::Reference;

/// The build routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs in order (repeated keys kept: `t` may be given several times).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("1" | "true" | "True" | "yes"))
}

fn msg_line(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push_str("\r\n");
    Bytes::from(s)
}

fn parse_options(pairs: &[(String, String)]) -> Result<(BuildOptions, String, bool), ApiError> {
    let get = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut o = BuildOptions::default();
    for (k, v) in pairs {
        if k == "t" && !v.is_empty() {
            let r = Reference::parse_normalized(v)
                .map_err(|e| bad(format!("invalid reference format: {v}: {e}")))?;
            let r = if r.tag().is_none() && r.digest().is_none() {
                r.with_tag("latest").map_err(|e| bad(e.to_string()))?
            } else {
                r
            };
            if r.digest().is_some() {
                return Err(bad(format!(
                    "invalid tag {v}: refusing to tag with a digest"
                )));
            }
            o.tags.push(r);
        }
    }
    if let Some(b) = get("buildargs").filter(|s| !s.is_empty()) {
        let m: BTreeMap<String, Option<String>> =
            serde_json::from_str(b).map_err(|e| bad(format!("invalid buildargs: {e}")))?;
        o.build_args = m;
    }
    if let Some(b) = get("labels").filter(|s| !s.is_empty()) {
        o.labels = serde_json::from_str(b).map_err(|e| bad(format!("invalid labels: {e}")))?;
    }
    if let Some(b) = get("cachefrom").filter(|s| !s.is_empty()) {
        o.cache_from =
            serde_json::from_str(b).map_err(|e| bad(format!("invalid cachefrom: {e}")))?;
    }
    o.target = get("target").cloned().filter(|s| !s.is_empty());
    o.no_cache = truthy(get("nocache"));
    o.pull = truthy(get("pull"));
    o.network = get("networkmode").cloned().filter(|s| !s.is_empty());
    o.platform = get("platform").cloned().filter(|s| !s.is_empty());
    if let Some(r) = get("remote").filter(|s| !s.is_empty()) {
        return Err(bad(format!(
            "remote build contexts are not supported ({r}): send the context as a tar"
        )));
    }
    let dockerfile = get("dockerfile")
        .cloned()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "Dockerfile".into());
    Ok((o, dockerfile, truthy(get("q"))))
}

/// Berth's secret transport for `berth build --secret` (the Engine API has none outside
/// BuildKit sessions): base64 of a JSON object mapping ids to base64 contents. Headers are
/// never logged; the secrets stay in memory until a RUN step mounts them.
pub const SECRETS_HEADER: &str = "x-berth-build-secrets";

fn parse_secrets(
    headers: &HeaderMap,
) -> Result<BTreeMap<String, berth_build::builder::Secret>, ApiError> {
    use base64::Engine as _;
    let Some(h) = headers.get(SECRETS_HEADER) else {
        return Ok(BTreeMap::new());
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64
        .decode(h.as_bytes())
        .map_err(|_| bad(format!("invalid {SECRETS_HEADER} header: not base64")))?;
    let m: BTreeMap<String, String> = serde_json::from_slice(&raw)
        .map_err(|e| bad(format!("invalid {SECRETS_HEADER} header: {e}")))?;
    let mut out = BTreeMap::new();
    for (id, v) in m {
        let data = b64.decode(v.as_bytes()).map_err(|_| {
            bad(format!(
                "invalid {SECRETS_HEADER} header: secret {id}: not base64"
            ))
        })?;
        out.insert(id, berth_build::builder::Secret(data));
    }
    Ok(out)
}

async fn build(
    State(s): State<Arc<AppState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let secrets = match parse_secrets(&headers) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    match build_inner(s, q, secrets, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn build_inner(
    s: Arc<AppState>,
    q: Option<String>,
    secrets: BTreeMap<String, berth_build::builder::Secret>,
    body: Body,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(q.as_deref());
    let (mut opts, dockerfile, quiet) = parse_options(&pairs)?;
    opts.secrets = secrets;
    let engine = s.engine.clone();
    let tmp = engine
        .images
        .tmp_dir()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let work = tempfile::Builder::new()
        .prefix("build-ctx-")
        .tempdir_in(&tmp)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Spool the context.
    let spool = work.path().join("context.tar");
    {
        let mut f = tokio::fs::File::create(&spool)
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut st = body.into_data_stream();
        while let Some(chunk) = st.next().await {
            let chunk = chunk.map_err(|e| bad(format!("reading the build context: {e}")))?;
            f.write_all(&chunk)
                .await
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
        f.flush()
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        // Small contexts go to tmpfs when there is one: creating and removing thousands of
        // small files on a busy journaling file system costs more than the build.
        let spool_len = std::fs::metadata(&spool)
            .map(|m| m.len())
            .unwrap_or(u64::MAX);
        let shm = (spool_len < 64 << 20)
            .then(|| {
                cleanup_stale_shm();
                tempfile::Builder::new()
                    .prefix(&format!("berth-build-ctx-{}-", std::process::id()))
                    .tempdir_in("/dev/shm")
                    .ok()
            })
            .flatten();
        let ctx = match &shm {
            Some(d) => d.path().join("ctx"),
            None => work.path().join("ctx"),
        };
        let res = (|| -> Result<berth_build::Built, berth_build::BuildError> {
            std::fs::create_dir(&ctx)
                .map_err(|e| berth_build::BuildError::Internal(e.to_string()))?;
            let f = std::fs::File::open(&spool)
                .map_err(|e| berth_build::BuildError::Internal(e.to_string()))?;
            let empty = f.metadata().map(|m| m.len() == 0).unwrap_or(true);
            if !empty {
                berth_build::context::extract_context(f, &ctx).map_err(|e| {
                    berth_build::BuildError::Invalid(format!(
                        "invalid build context (expected a tar archive): {e}"
                    ))
                })?;
            }
            let _ = std::fs::remove_file(&spool);
            tracing::debug!("build context extracted after {:?}", t0.elapsed());
            let df_path = berth_build::fsops::resolve_in_root(&ctx, &dockerfile, true)
                .map_err(|e| berth_build::BuildError::Internal(e.to_string()))?;
            let text = match std::fs::read(&df_path) {
                Ok(t) => t,
                Err(_) if dockerfile == "Dockerfile" => std::fs::read(ctx.join("dockerfile"))
                    .map_err(|_| {
                        berth_build::BuildError::Invalid(format!(
                            "Cannot locate specified Dockerfile: {dockerfile}"
                        ))
                    })?,
                Err(_) => {
                    return Err(berth_build::BuildError::Invalid(format!(
                        "Cannot locate specified Dockerfile: {dockerfile}"
                    )))
                }
            };
            berth_build::builder::cleanup_stale(&engine.images);
            opts.dockerfile = String::from_utf8_lossy(&text).into_owned();
            opts.context = ctx.clone();
            let puller = |name: &str| pull_base(&engine, name);
            let b = Builder {
                store: &engine.images,
                runtime: engine.runtime_exe(),
                runtime_root: engine.cfg.exec_root.join("build-runtime"),
                cgroup_parent: engine.cfg.cgroup_parent.clone(),
                puller: Some(&puller),
            };
            let tx2 = tx.clone();
            let mut sink = move |ev: Event| -> bool {
                let v = match ev {
                    Event::Stream(s) if quiet => {
                        let _ = s;
                        return !tx2.is_closed();
                    }
                    Event::Stream(s) | Event::Output(s) => json!({ "stream": s }),
                    Event::Step(_) => return !tx2.is_closed(),
                    Event::Aux(a) => {
                        if quiet {
                            if let Some(id) = a.get("ID").and_then(Value::as_str) {
                                let _ = tx2.blocking_send(msg_line(json!({"aux": a})));
                                return tx2
                                    .blocking_send(msg_line(json!({"stream": format!("{id}\n")})))
                                    .is_ok();
                            }
                        }
                        json!({ "aux": a })
                    }
                };
                tx2.blocking_send(msg_line(v)).is_ok()
            };
            b.build(&opts, &mut sink)
        })();
        if let Err(e) = res {
            let msg = e.to_string();
            tracing::info!("build failed: {msg}");
            let _ = tx.blocking_send(msg_line(json!({
                "errorDetail": {"code": e.code(), "message": msg},
                "error": msg,
            })));
        }
        let t1 = t0.elapsed();
        // End the response first: removing the context is not the client's wait.
        drop(tx);
        drop(shm);
        drop(work);
        tracing::info!(
            "build finished in {:?} (+{:?} cleaning up the context)",
            t1,
            t0.elapsed() - t1
        );
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Pulls a base image (`--pull`, or missing locally) through the image service, with the
/// daemon's registry settings.
fn pull_base(engine: &crate::engine::Engine, name: &str) -> Result<String, String> {
    use berth_registry::images::{ImageBackend, LocalBackend};
    let r = Reference::parse_normalized(name).map_err(|e| e.to_string())?;
    let r = if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| e.to_string())?
    } else {
        r
    };
    let b = LocalBackend::with_store(engine.images.clone())
        .with_registry_config(engine.registry_config.clone());
    let out = b
        .pull(
            &r,
            &berth_image::manifest::Platform::host(),
            &berth_registry::NoProgress,
        )
        .map_err(|e| e.message)?;
    let fam = r.familiar_string();
    engine.image_event("pull", &fam);
    Ok(if out.updated {
        format!("Status: Downloaded newer image for {fam}")
    } else {
        format!("Status: Image is up to date for {fam}")
    })
}

/// Removes contexts that a daemon which is no longer running left in /dev/shm.
fn cleanup_stale_shm() {
    let Ok(rd) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("berth-build-ctx-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

async fn prune(State(s): State<Arc<AppState>>) -> Response {
    s.engine.settle().await;
    let engine = s.engine.clone();
    match tokio::task::spawn_blocking(move || berth_build::builder::prune(&engine.images)).await {
        Ok(Ok(r)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&r).unwrap_or_default(),
        )
            .into_response(),
        Ok(Err(e)) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        let p = query_pairs(Some(
            "t=a%3A1&t=b&buildargs=%7B%22X%22%3A%221%22%7D&nocache=1&q=1",
        ));
        let (o, df, q) = parse_options(&p).ok().unwrap();
        assert_eq!(o.tags.len(), 2);
        assert_eq!(o.tags[0].familiar_string(), "a:1");
        assert_eq!(o.build_args.get("X"), Some(&Some("1".into())));
        assert!(o.no_cache && q);
        assert_eq!(df, "Dockerfile");
        assert_eq!(pct_decode("a+b%2"), "a b%2");
    }
}
