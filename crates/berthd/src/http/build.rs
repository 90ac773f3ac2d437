//! Build routes: `POST /build` (the context spooled, the build streamed) and
//! `POST /build/prune`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use berth_build::builder::KeepContainers;
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

/// dockerd's `httputils.BoolValue` of a form value (absent is false).
fn truthy(v: Option<&String>) -> bool {
    v.is_some_and(|v| super::form_bool(v))
}

fn parse_options(pairs: &[(String, String)]) -> Result<(BuildOptions, String, bool), ApiError> {
    // As Go's `FormValue`: the first of repeated parameters.
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut o = BuildOptions {
        // The classic builder's images have their base as parent.
        record_parent: true,
        classic_stages: true,
        volume_views: true,
        ..Default::default()
    };
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
    // dockerd: `rm` is true unless given (and false), `forcerm` wins over it.
    let rm = get("rm").is_none_or(|v| v.is_empty() || truthy(Some(v)));
    o.keep_containers = if truthy(get("forcerm")) {
        KeepContainers::Never
    } else if rm {
        KeepContainers::Failed
    } else {
        KeepContainers::All
    };
    o.pull = truthy(get("pull"));
    o.network = get("networkmode").cloned().filter(|s| !s.is_empty());
    // Repeated (docker-py, the docker CLI): every one.
    o.extra_hosts = pairs
        .iter()
        .filter(|(k, v)| k == "extrahosts" && !v.is_empty())
        .flat_map(|(_, v)| v.split(',').map(str::to_string))
        .collect();
    o.platform = get("platform").cloned().filter(|s| !s.is_empty());
    // dockerd's route parses it first: containerd's `platforms.Parse`, in its words (a pull's).
    // A list (`a,b`) is left to the builder, whose error says how to build several platforms
    // (dockerd only says the component is invalid).
    if let Some(e) = o
        .platform
        .as_deref()
        .filter(|p| !p.contains(','))
        .and_then(berth_image::manifest::Platform::specifier_error)
    {
        return Err(ApiError::bad(e));
    }
    // dockerd squashes only in experimental mode, which berthd has not: a squash it would not
    // do is refused rather than ignored.
    if truthy(get("squash")) {
        return Err(ApiError::bad(
            "squash is only supported with experimental mode",
        ));
    }
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

/// Berth's stage semantics for a build (`needed`: only the stages the target uses, as the
/// berth CLI asks; without it, dockerd's classic builder's: every stage up to the target).
pub const STAGES_HEADER: &str = "x-berth-build-stages";

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
    // The berth CLI's builds run only the stages the target needs.
    if headers
        .get(STAGES_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"needed"))
    {
        opts.classic_stages = false;
    }
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

/// `POST /build/prune`'s query: `filters` (`until`, `id`, `type`, …), `reserved-space` (or
/// the older `keep-storage`), `max-used-space`, `min-free-space` in bytes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PruneQuery {
    filters: String,
    #[serde(rename = "keep-storage")]
    keep_storage: String,
    #[serde(rename = "reserved-space")]
    reserved_space: String,
    #[serde(rename = "max-used-space")]
    max_used_space: String,
    #[serde(rename = "min-free-space")]
    min_free_space: String,
}

/// The prune options of a query, as dockerd turns them into BuildKit's: `until` (or
/// `unused-for`) is the keep duration, `id` matches a part of the ID, other keys are equal.
fn prune_options(q: &PruneQuery) -> Result<berth_build::builder::PruneOptions, ApiError> {
    let f = super::parse_filters(&q.filters)?;
    let mut opts = berth_build::builder::PruneOptions::default();
    let mut strings = Vec::new();
    for (k, v) in &f.0 {
        match k.as_str() {
            "until" | "unused-for" => {
                let ns = berth_util::units::parse_duration(v)
                    .ok()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "{k:?} filter expects a duration (e.g., '24h'): {v}"
                        ))
                    })?;
                opts.keep_duration = Some(std::time::Duration::from_nanos(ns));
            }
            "id" => strings.push(format!("id~={v}")),
            _ if k.ends_with('!') || k.ends_with('~') => strings.push(format!("{k}={v}")),
            _ => strings.push(format!("{k}=={v}")),
        }
    }
    opts.filters = berth_build::builder::PruneFilter::parse_all(&strings)
        .map_err(|e| ApiError::bad(format!("invalid filter: {e}")))?;
    let bytes = |name: &str, v: &str| -> Result<u64, ApiError> {
        if v.is_empty() {
            return Ok(0);
        }
        v.parse::<u64>()
            .map_err(|_| ApiError::bad(format!("invalid value for {name}: {v}")))
    };
    opts.reserved_space = match bytes("reserved-space", &q.reserved_space)? {
        0 => bytes("keep-storage", &q.keep_storage)?,
        n => n,
    };
    opts.max_used_space = bytes("max-used-space", &q.max_used_space)?;
    opts.min_free_space = bytes("min-free-space", &q.min_free_space)?;
    Ok(opts)
}

async fn prune(
    s: St,
    axum::Extension(v): axum::Extension<berth_api::ApiVersion>,
    super::Params(mut q): super::Params<PruneQuery>,
) -> R {
    if !v.api_1_48_features() {
        // Only `keep-storage` below 1.48.
        q.reserved_space.clear();
        q.max_used_space.clear();
        q.min_free_space.clear();
    }
    let opts = prune_options(&q)?;
    Ok(json(&build::prune(s.engine.clone(), opts).await?))
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
        let args = [("X".to_string(), Some("1".to_string()))];
        assert_eq!(o.build_args, args.into(), "buildargs is a JSON object");
        assert!(o.no_cache && q);
        assert_eq!(df, "Dockerfile");
        assert_eq!(super::super::percent_decode("a+b%2"), "a b%2");
    }

    #[test]
    fn prune_query() {
        let q = PruneQuery {
            filters: r#"{"until":{"2h":true},"id":{"abc":true},"type":{"regular":true}}"#.into(),
            keep_storage: "1000".into(),
            ..Default::default()
        };
        let o = prune_options(&q).ok().unwrap();
        assert_eq!(o.keep_duration, Some(std::time::Duration::from_secs(7200)));
        assert_eq!(o.reserved_space, 1000);
        assert_eq!(o.filters.len(), 2);
        let bad = PruneQuery {
            filters: r#"{"until":{"soon":true}}"#.into(),
            ..Default::default()
        };
        assert!(prune_options(&bad).is_err());
        let bad = PruneQuery {
            max_used_space: "-1".into(),
            ..Default::default()
        };
        assert!(prune_options(&bad).is_err());
    }
}
