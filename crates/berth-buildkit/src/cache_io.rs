//! Cache import and export (`--cache-from`, `--cache-to`).
//!
//! Berth's builder keeps its step cache locally and, like Docker's classic builder, can seed
//! it from images: an image whose history matches the steps gives their layers
//! (`BuildOptions::cache_from`). So the cache travels *as an image*:
//! - `type=inline` export: the built image is its own cache (nothing more to write);
//! - `type=registry,ref=R` export: the built image is pushed to `R`;
//! - `type=registry,ref=R` import: `R` is pulled and used as a cache source;
//! - `type=local,src=DIR` import / `dest=DIR` export: the image as an OCI layout in `DIR`
//!   are not supported (the client's content store is not served): a clear error.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::errors::SolveError;
use crate::frontend::{session_auth, BuildResult};
use crate::progress::{vertex_digest, Progress, VertexRun};
use crate::proto::moby::buildkit::v1::CacheOptionsEntry;
use crate::session::Session;
use crate::BuildKit;

/// A cache source or target.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub kind: String,
    pub attrs: HashMap<String, String>,
}

#[derive(Deserialize)]
struct JsonEntry {
    #[serde(rename = "Type", alias = "type", default)]
    kind: String,
    #[serde(rename = "Attrs", alias = "attrs", default)]
    attrs: HashMap<String, String>,
}

/// The imports a frontend attribute `cache-imports` lists (buildx sets it for the gateway).
pub fn from_attr(attrs: &HashMap<String, String>) -> Result<Vec<CacheEntry>, SolveError> {
    let Some(v) = attrs.get("cache-imports").filter(|v| !v.is_empty()) else {
        return Ok(vec![]);
    };
    let list: Vec<JsonEntry> = serde_json::from_str(v).map_err(|e| {
        SolveError::new(
            tonic::Code::InvalidArgument,
            format!("invalid cache-imports: {e}"),
        )
    })?;
    Ok(list
        .into_iter()
        .map(|e| CacheEntry {
            kind: e.kind,
            attrs: e.attrs,
        })
        .collect())
}

pub fn from_proto(list: &[CacheOptionsEntry]) -> Vec<CacheEntry> {
    list.iter()
        .map(|e| CacheEntry {
            kind: e.r#type.clone(),
            attrs: e.attrs.clone(),
        })
        .collect()
}

/// Refuses cache types Berth does not have, before anything is built.
pub fn check(entries: &[CacheEntry], export: bool) -> Result<(), SolveError> {
    for e in entries {
        match e.kind.as_str() {
            "registry" => {
                if e.attrs.get("ref").is_none_or(|r| r.is_empty()) {
                    return Err(SolveError::new(
                        tonic::Code::InvalidArgument,
                        format!(
                            "registry cache {} requires ref",
                            if export { "exporter" } else { "importer" }
                        ),
                    ));
                }
            }
            "inline" => {}
            other => {
                return Err(SolveError::new(
                    tonic::Code::Unimplemented,
                    format!(
                        "cache {} type={other} is not supported by Berth (registry and inline are)",
                        if export { "export" } else { "import" }
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Pulls the registry imports; the image names to seed the step cache with. A source that
/// cannot be pulled is a warning on its vertex, not a failure (as BuildKit).
pub async fn import(
    bk: &Arc<BuildKit>,
    session: &Arc<Session>,
    solve_id: &str,
    entries: &[CacheEntry],
    progress: &Progress,
) -> Vec<String> {
    let mut out = Vec::new();
    for (n, e) in entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "registry")
    {
        let Some(r) = e.attrs.get("ref") else {
            continue;
        };
        let v = VertexRun::start(
            progress,
            vertex_digest(solve_id, "cache-import", n),
            format!("importing cache manifest from {r}"),
        );
        let auth = session_auth(session, r).await;
        let backend = bk.backend().clone();
        let r2 = r.clone();
        let pulled = tokio::task::spawn_blocking(move || backend.pull(&r2, auth.as_ref())).await;
        match pulled {
            Ok(Ok(status)) => {
                v.log(2, format!("{status}\n"));
                v.done();
                out.push(r.clone());
            }
            Ok(Err(msg)) => {
                v.log(2, format!("failed to import cache from {r}: {msg}\n"));
                v.done();
            }
            Err(e) => {
                v.fail(e.to_string());
            }
        }
    }
    out
}

/// Exports the cache of `result` (registry: the image pushed to `ref`).
pub async fn export(
    bk: &Arc<BuildKit>,
    session: Option<&Arc<Session>>,
    solve_id: &str,
    entries: &[CacheEntry],
    result: &BuildResult,
    progress: &Progress,
) -> Result<(), SolveError> {
    for (n, e) in entries.iter().enumerate() {
        if e.kind != "registry" {
            continue;
        }
        let Some(r) = e.attrs.get("ref").cloned() else {
            continue;
        };
        let v = VertexRun::start(
            progress,
            vertex_digest(solve_id, "cache-export", n),
            format!("exporting cache to registry {r}"),
        );
        let target = berth_image::Reference::parse_normalized(&r).map_err(|er| {
            SolveError::new(tonic::Code::InvalidArgument, format!("cache ref {r}: {er}"))
        })?;
        let target = if target.tag().is_none() && target.digest().is_none() {
            target
                .with_tag("latest")
                .map_err(|er| SolveError::unknown(er.to_string()))?
        } else {
            target
        };
        let auth = match session {
            Some(s) => session_auth(s, &r).await,
            None => None,
        };
        let backend = bk.backend().clone();
        let id = result.image_id.to_string();
        let name = target.to_string();
        let res = tokio::task::spawn_blocking(move || -> Result<String, crate::TransferError> {
            let store = backend.store();
            // Named for the push only, unless it already had that name.
            let had = store
                .resolve(&name)
                .is_ok_and(|x| x.image.id.to_string() == id && x.reference.is_some());
            store.tag(&id, &target)?;
            let pushed = backend.push(&name, auth.as_ref());
            if !had {
                let _ = store.untag(&target);
            }
            pushed
        })
        .await
        .map_err(|e| SolveError::unknown(e.to_string()))?;
        match res {
            Ok(d) => {
                v.status_done(format!("writing cache manifest {d}"));
                v.done();
            }
            Err(msg) => {
                let err = SolveError::unknown(format!("failed to export cache to {r}: {msg}"));
                v.fail(&err.message);
                return Err(err);
            }
        }
    }
    Ok(())
}
