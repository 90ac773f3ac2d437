//! Build routes: `POST /build` (the context spooled, the build streamed) and
//! `POST /build/prune`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use berth_build::BuildOptions;
use berth_image::Reference;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{json, query_pairs, stream, ApiError, AppState, St, R};
use crate::build;
use crate::engine::EngineError;

/// The build routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/build", post(start))
        .route("/build/prune", post(prune))
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("1" | "true" | "True" | "yes"))
}

fn parse_options(pairs: &[(String, String)]) -> Result<(BuildOptions, String, bool), ApiError> {
    // As Go's `FormValue`: the first of repeated parameters.
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut o = BuildOptions::default();
    for (k, v) in pairs {
        if k == "t" && !v.is_empty() {
            let r = Reference::parse_normalized(v)
                .map_err(|e| ApiError::bad(format!("invalid reference format: {v}: {e}")))?;
            let r = if r.tag().is_none() && r.digest().is_none() {
                r.with_tag("latest")
                    .map_err(|e| ApiError::bad(e.to_string()))?
            } else {
                r
            };
            if r.digest().is_some() {
                return Err(ApiError::bad(format!(
                    "invalid tag {v}: refusing to tag with a digest"
                )));
            }
            o.tags.push(r);
        }
    }
    if let Some(b) = get("buildargs").filter(|s| !s.is_empty()) {
        let m: BTreeMap<String, Option<String>> =
            berth_api::from_str(b).map_err(|e| ApiError::bad(format!("invalid buildargs: {e}")))?;
        o.build_args = m;
    }
    if let Some(b) = get("labels").filter(|s| !s.is_empty()) {
        o.labels =
            berth_api::from_str(b).map_err(|e| ApiError::bad(format!("invalid labels: {e}")))?;
    }
    if let Some(b) = get("cachefrom").filter(|s| !s.is_empty()) {
        o.cache_from =
            berth_api::from_str(b).map_err(|e| ApiError::bad(format!("invalid cachefrom: {e}")))?;
        // dockerd's classic builder: the given images are the only cache.
        o.cache_from_only = o.cache_from.iter().any(|c| !c.is_empty());
    }
    o.target = get("target").cloned().filter(|s| !s.is_empty());
    o.no_cache = truthy(get("nocache"));
    o.pull = truthy(get("pull"));
    o.network = get("networkmode").cloned().filter(|s| !s.is_empty());
    // Repeated (docker-py, the docker CLI): every one.
    o.extra_hosts = pairs
        .iter()
        .filter(|(k, v)| k == "extrahosts" && !v.is_empty())
        .flat_map(|(_, v)| v.split(',').map(str::to_string))
        .collect();
    o.platform = get("platform").cloned().filter(|s| !s.is_empty());
    if let Some(r) = get("remote").filter(|s| !s.is_empty()) {
        return Err(ApiError::bad(format!(
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
        .map_err(|_| ApiError::bad(format!("invalid {SECRETS_HEADER} header: not base64")))?;
    let m: BTreeMap<String, String> = berth_api::from_slice(&raw)
        .map_err(|e| ApiError::bad(format!("invalid {SECRETS_HEADER} header: {e}")))?;
    let mut out = BTreeMap::new();
    for (id, v) in m {
        let data = b64.decode(v.as_bytes()).map_err(|_| {
            ApiError::bad(format!(
                "invalid {SECRETS_HEADER} header: secret {id}: not base64"
            ))
        })?;
        out.insert(id, berth_build::builder::Secret(data));
    }
    Ok(out)
}

async fn start(s: St, RawQuery(q): RawQuery, headers: HeaderMap, body: Body) -> R {
    let secrets = parse_secrets(&headers)?;
    let pairs = query_pairs(q.as_deref());
    let (mut opts, dockerfile, quiet) = parse_options(&pairs)?;
    opts.secrets = secrets;
    let ctx = build::context_dir(&s.engine)?;
    // Spool the context.
    {
        let io = |e| EngineError::io("writing", &ctx.spool)(e);
        let mut f = tokio::fs::File::create(&ctx.spool).await.map_err(io)?;
        let mut st = body.into_data_stream();
        while let Some(chunk) = st.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad(format!("reading the build context: {e}")))?;
            f.write_all(&chunk).await.map_err(io)?;
        }
        f.flush().await.map_err(io)?;
    }
    let rx = build::start(s.engine.clone(), opts, dockerfile, quiet, ctx).await?;
    Ok(stream("application/json", rx))
}

async fn prune(s: St) -> R {
    Ok(json(&build::prune(s.engine.clone()).await?))
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
        assert_eq!(super::super::percent_decode("a+b%2"), "a b%2");
    }
}
