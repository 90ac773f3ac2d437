//! Cache import and export (`--cache-from`, `--cache-to`).
//!
//! Berth's builder keeps its step cache locally and, like Docker's classic builder, can seed
//! it from images: an image whose history matches the steps gives their layers
//! (`BuildOptions::cache_from`). So the cache travels *as an image*:
//! - `type=inline` export: the built image is its own cache (nothing more to write);
//! - `type=registry,ref=R` export: the built image is pushed to `R`;
//! - `type=registry,ref=R` import: `R` is pulled and used as a cache source;
//! - `type=local,dest=DIR` export: the image (manifest, config, layers) written into the
//!   client's content store for `DIR` (an OCI layout whose `index.json` the client writes
//!   from the `cache.manifest` descriptor returned);
//! - `type=local,src=DIR` import: the manifest the client found in `DIR` (the `digest`
//!   attribute), its config and layers read back into Berth's store, used as a cache
//!   source and removed again after the build.
//!
//! The layout holds an image manifest, not BuildKit's cache manifest list: a cache written
//! by BuildKit is not understood here (a warning), nor one of Berth's by BuildKit.
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use berth_image::image_store::ImageId;
use berth_image::manifest::Descriptor;
use berth_image::Digest;

use crate::content::{ClientStore, ContentError};
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
            "local" => {
                let key = if export { "dest" } else { "src" };
                if e.attrs.get(key).is_none_or(|r| r.is_empty()) {
                    return Err(SolveError::new(
                        tonic::Code::InvalidArgument,
                        format!(
                            "local cache {} requires {key}",
                            if export { "exporter" } else { "importer" }
                        ),
                    ));
                }
            }
            other => {
                return Err(SolveError::new(
                    tonic::Code::Unimplemented,
                    format!(
                        "cache {} type={other} is not supported by Berth (registry, local and inline are)",
                        if export { "export" } else { "import" }
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// What the cache imports gave the build.
#[derive(Debug, Default)]
pub struct Imported {
    /// The images to seed the step cache with (names or IDs).
    pub sources: Vec<String>,
    /// Images registered only for this build (local imports), to remove after it.
    pub temporary: Vec<ImageId>,
}

/// Pulls the registry imports and reads the local ones. A source that cannot be had is a
/// warning on its vertex, not a failure (as BuildKit).
pub async fn import(
    bk: &Arc<BuildKit>,
    session: &Arc<Session>,
    solve_id: &str,
    entries: &[CacheEntry],
    progress: &Progress,
) -> Imported {
    let mut out = Imported::default();
    for (n, e) in entries.iter().enumerate() {
        match e.kind.as_str() {
            "registry" => {
                if let Some(r) = e.attrs.get("ref") {
                    if import_registry(bk, session, solve_id, n, r, progress).await {
                        out.sources.push(r.clone());
                    }
                }
            }
            "local" => {
                let src = e.attrs.get("src").map(String::as_str).unwrap_or("");
                let v = VertexRun::start(
                    progress,
                    vertex_digest(solve_id, "cache-import", n),
                    format!("importing cache manifest from local:{src}"),
                );
                match import_local(bk, session, e).await {
                    Ok((id, new)) => {
                        v.done();
                        out.sources.push(id.to_string());
                        if new {
                            out.temporary.push(id);
                        }
                    }
                    Err(msg) => {
                        v.log(
                            2,
                            format!("failed to import cache from local:{src}: {msg}\n"),
                        );
                        v.done();
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Pulls the registry import `r`; whether it can be used.
async fn import_registry(
    bk: &Arc<BuildKit>,
    session: &Arc<Session>,
    solve_id: &str,
    n: usize,
    r: &str,
    progress: &Progress,
) -> bool {
    let v = VertexRun::start(
        progress,
        vertex_digest(solve_id, "cache-import", n),
        format!("importing cache manifest from {r}"),
    );
    let auth = session_auth(session, r).await;
    let backend = bk.backend().clone();
    let r2 = r.to_string();
    let pulled = tokio::task::spawn_blocking(move || backend.pull(&r2, None, auth.as_ref())).await;
    match pulled {
        Ok(Ok(status)) => {
            v.log(2, format!("{status}\n"));
            v.done();
            true
        }
        Ok(Err(msg)) => {
            v.log(2, format!("failed to import cache from {r}: {msg}\n"));
            v.done();
            false
        }
        Err(e) => {
            v.fail(e.to_string());
            false
        }
    }
}

/// Why a local cache import could not be used, or a local cache export failed.
#[derive(Debug, thiserror::Error)]
enum LocalCacheError {
    #[error("the build has no client session")]
    NoSession,
    #[error("the image has no manifest")]
    NoManifest,
    #[error("no manifest digest (the client found no index.json entry)")]
    NoDigest,
    #[error("{0}: not an image manifest (a cache written by another builder?)")]
    NotAnImage(String),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{0}")]
    Manifest(#[from] berth_image::manifest::ManifestError),
    #[error("{0}")]
    Store(#[from] berth_image::image_store::ImageStoreError),
    #[error("{0}")]
    Blob(#[from] berth_image::store::StoreError),
    #[error("{0}")]
    Thread(#[from] tokio::task::JoinError),
}

/// Reads the image of a local cache import into the store; its ID and whether it was new.
async fn import_local(
    bk: &Arc<BuildKit>,
    session: &Arc<Session>,
    e: &CacheEntry,
) -> Result<(ImageId, bool), LocalCacheError> {
    use berth_image::image_store::{LayerInput, RegisterRequest};
    use berth_image::manifest::{parse_manifest, ImageConfig, Manifest};
    let src = e.attrs.get("src").cloned().unwrap_or_default();
    let digest = e
        .attrs
        .get("digest")
        .filter(|d| !d.is_empty())
        .ok_or(LocalCacheError::NoDigest)?;
    let cs = ClientStore::new(session, &format!("local:{src}"), false)?;
    let manifest = cs.read(digest).await?;
    let m = match parse_manifest(None, &manifest)? {
        Manifest::Image(_, m) => m,
        Manifest::Index(..) => return Err(LocalCacheError::NotAnImage(digest.clone())),
    };
    let config = cs.read(&m.config.digest.to_string()).await?;
    let diff_ids = ImageConfig::parse(&config)?.rootfs.diff_ids;
    let store = bk.backend().store();
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers.iter().zip(diff_ids) {
        if !store.blobs().exists(&l.digest) {
            let tmp = tempfile::NamedTempFile::new_in(store.tmp_dir()?).map_err(|source| {
                ContentError::Io {
                    op: "creating",
                    digest: l.digest.to_string(),
                    source,
                }
            })?;
            cs.read_to_file(&l.digest.to_string(), tmp.path()).await?;
            let (store2, d, size) = (store.clone(), l.digest.clone(), l.size);
            tokio::task::spawn_blocking(move || {
                let f = tmp.reopen().map_err(|source| ContentError::Io {
                    op: "reopening",
                    digest: d.to_string(),
                    source,
                })?;
                store2
                    .blobs()
                    .write_blob_sized(Some(&d), Some(size), f)
                    .map_err(LocalCacheError::from)
            })
            .await??;
        }
        layers.push(LayerInput {
            descriptor: l.clone(),
            diff_id,
            unpacked_size: None,
        });
    }
    let reg = tokio::task::spawn_blocking(move || {
        store.register(RegisterRequest {
            manifest,
            config,
            layers,
            ..Default::default()
        })
    })
    .await??;
    Ok((reg.id, reg.new))
}

/// Exports the cache of `result` (registry: the image pushed to `ref`; local: the image
/// written to the client's store); what the solve's response gains (`cache.manifest`).
pub async fn export(
    bk: &Arc<BuildKit>,
    session: Option<&Arc<Session>>,
    solve_id: &str,
    entries: &[CacheEntry],
    result: &BuildResult,
    progress: &Progress,
) -> Result<HashMap<String, String>, SolveError> {
    let mut resp = HashMap::new();
    for (n, e) in entries.iter().enumerate() {
        if e.kind == "local" {
            let dest = e.attrs.get("dest").cloned().unwrap_or_default();
            let v = VertexRun::start(
                progress,
                vertex_digest(solve_id, "cache-export", n),
                "exporting cache to client directory",
            );
            let written = match session {
                Some(s) => export_local(bk, s, &dest, result).await,
                None => Err(LocalCacheError::NoSession),
            };
            match written {
                Ok(desc) => {
                    v.status_done(format!("writing cache manifest {}", desc.digest));
                    v.done();
                    let json = serde_json::to_string(&desc)
                        .map_err(|er| SolveError::unknown(er.to_string()))?;
                    resp.insert("cache.manifest".to_string(), json);
                }
                Err(er) => {
                    return Err(v.failed(SolveError::unknown(format!(
                        "failed to export cache to {dest}: {er}"
                    ))))
                }
            }
            continue;
        }
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
                return Err(v.failed(SolveError::unknown(format!(
                    "failed to export cache to {r}: {msg}"
                ))))
            }
        }
    }
    Ok(resp)
}

/// Writes the built image's blobs (layers, config, manifest) into the client's store for
/// `dest`; the manifest's descriptor.
async fn export_local(
    bk: &Arc<BuildKit>,
    session: &Arc<Session>,
    dest: &str,
    result: &BuildResult,
) -> Result<Descriptor, LocalCacheError> {
    use berth_image::manifest::{media_types, parse_manifest, Manifest};
    let cs = ClientStore::new(session, &format!("local:{dest}"), true)?;
    let store = bk.backend().store();
    let rec = store.get(&result.image_id)?;
    let mdigest = rec.manifests.first().ok_or(LocalCacheError::NoManifest)?;
    let manifest = store.blobs().read_verified(mdigest)?;
    let media_type = match parse_manifest(None, &manifest)? {
        Manifest::Image(_, m) => m.media_type,
        Manifest::Index(..) => None,
    }
    .unwrap_or_else(|| media_types::OCI_MANIFEST.to_string());
    let blobs = store.blobs();
    let mut all: Vec<(Digest, u64)> = rec
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    all.push((rec.id.clone(), blobs.size(&rec.id)?));
    all.push((mdigest.clone(), manifest.len() as u64));
    for (d, size) in all {
        cs.write_file(&d.to_string(), size, &blobs.blob_path(&d))
            .await?;
    }
    Ok(Descriptor {
        media_type,
        digest: mdigest.clone(),
        size: manifest.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    })
}
