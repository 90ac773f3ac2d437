//! Exporters: what a solve does with its result.
//!
//! - `moby` / `image` (buildx's default with the docker driver, and `--load`): the image is
//!   in Berth's store under the `name`s (the build registered it); `push=true` pushes them.
//! - `local` (`--output type=local,dest=DIR`): the root file system, sent to the client's
//!   directory; `tar`: the same as one tar stream to the client's file.
//! - `docker` / `oci` (`--output type=docker|oci,dest=FILE`): an image archive (`docker
//!   save`'s format: Docker's manifest.json and an OCI layout) to the client's file.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use berth_image::Reference;
use tokio::sync::mpsc;

use crate::errors::SolveError;
use crate::frontend::{session_auth, BuildResult};
use crate::progress::{vertex_digest, Progress, VertexRun};
use crate::proto::moby::buildkit::v1::Exporter;
use crate::session::Session;
use crate::BuildKit;

fn unknown(e: impl std::fmt::Display) -> SolveError {
    SolveError::unknown(e.to_string())
}

/// The image names an exporter's `name` attribute lists (comma-separated), normalised.
pub fn names(attrs: &HashMap<String, String>) -> Result<Vec<Reference>, SolveError> {
    let mut out = Vec::new();
    for n in crate::frontend::attr_list(attrs, "name") {
        let r = Reference::parse_normalized(n).map_err(|e| {
            SolveError::new(
                tonic::Code::InvalidArgument,
                format!("invalid reference format: {n}: {e}"),
            )
        })?;
        let r = if r.tag().is_none() && r.digest().is_none() {
            r.with_tag("latest").map_err(unknown)?
        } else {
            r
        };
        out.push(r);
    }
    Ok(out)
}

fn truthy(attrs: &HashMap<String, String>, k: &str) -> bool {
    matches!(
        attrs.get(k).map(String::as_str),
        Some("true" | "1" | "True" | "")
    ) && attrs.contains_key(k)
}

/// Whether the exporter stores the image in Berth's store.
pub fn is_image_exporter(t: &str) -> bool {
    matches!(t, "moby" | "image")
}

/// The names the build must give the image (those of the image exporters).
pub fn store_names(exporters: &[Exporter]) -> Result<Vec<Reference>, SolveError> {
    let mut out = Vec::new();
    for e in exporters.iter().filter(|e| is_image_exporter(&e.r#type)) {
        for r in names(&e.attrs)? {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// Refuses exporters Berth does not have, before anything is built; for a multi-platform
/// build (`multi`), those that cannot hold an image index: Berth's image store, as dockerd's
/// classic store, keeps one image per name (`--load`, the docker driver's default), and a
/// `docker` archive has no index.
pub fn check(exporters: &[Exporter], multi: bool) -> Result<(), SolveError> {
    for e in exporters {
        if multi
            && ((is_image_exporter(&e.r#type) && !truthy(&e.attrs, "push")) || e.r#type == "docker")
        {
            return Err(SolveError::new(
                tonic::Code::InvalidArgument,
                format!(
                    "a multi-platform image (an image index) cannot be exported to {}: Berth's image \
                     store, as dockerd's without the containerd image store, holds one platform per \
                     image; push it (--push), or export it with --output type=oci,dest=FILE or \
                     type=local,dest=DIR, or build one platform at a time",
                    if e.r#type == "docker" { "a docker archive" } else { "the image store" }
                ),
            ));
        }
        match e.r#type.as_str() {
            "moby" | "image" | "local" | "tar" | "docker" | "oci" => {}
            other => {
                return Err(SolveError::new(
                    tonic::Code::InvalidArgument,
                    format!("exporter {other:?} is not supported (image, local, tar, docker, oci)"),
                ))
            }
        }
        if e.attrs.get("push-by-digest").is_some_and(|v| v == "true") {
            return Err(SolveError::new(
                tonic::Code::InvalidArgument,
                "push-by-digest is not supported",
            ));
        }
    }
    Ok(())
}

/// Runs the exporters on `result`; the exporter response for the client.
pub async fn run(
    bk: &Arc<BuildKit>,
    solve_id: &str,
    exporters: &[Exporter],
    result: &BuildResult,
    session: Option<&Arc<Session>>,
    progress: &Progress,
) -> Result<HashMap<String, String>, SolveError> {
    let mut resp = HashMap::new();
    let id = result.image_id.to_string();
    resp.insert("containerimage.config.digest".to_string(), id.clone());
    resp.insert("containerimage.digest".to_string(), id.clone());
    let store = bk.backend().store();
    for (n, e) in exporters.iter().enumerate() {
        match e.r#type.as_str() {
            "moby" | "image" => {
                let v = VertexRun::start(
                    progress,
                    vertex_digest(solve_id, "export-image", n),
                    "exporting to image",
                );
                v.status_done("exporting layers");
                v.status_done(format!("writing image {id}"));
                // dockerd's ImageExportedByBuildkit: an image `create` event per export.
                bk.backend().image_event("create", &id);
                let names = names(&e.attrs)?;
                for r in &names {
                    v.status_done(format!("naming to {r}"));
                }
                if !names.is_empty() {
                    resp.insert(
                        "image.name".to_string(),
                        names
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                if truthy(&e.attrs, "push") {
                    if names.is_empty() {
                        return Err(v.failed(SolveError::new(
                            tonic::Code::InvalidArgument,
                            "tag is needed when pushing to registry",
                        )));
                    }
                    for r in &names {
                        let name = r.to_string();
                        let auth = match session {
                            Some(s) => session_auth(s, &name).await,
                            None => None,
                        };
                        let backend = bk.backend().clone();
                        let name2 = name.clone();
                        let ids: Vec<berth_image::Digest> = result
                            .platforms
                            .iter()
                            .map(|p| p.image_id.clone())
                            .collect();
                        let multi = result.is_multi();
                        let pushed = tokio::task::spawn_blocking(move || {
                            if multi {
                                backend.push_index(&name2, &ids, auth.as_ref())
                            } else {
                                backend.push(&name2, auth.as_ref())
                            }
                        })
                        .await
                        .map_err(unknown)?;
                        match pushed {
                            Ok(d) => {
                                v.status_done(format!("pushing {name} with digest {d}"));
                                bk.backend().image_event("push", &name);
                                resp.insert("containerimage.digest".to_string(), d);
                            }
                            Err(msg) => {
                                return Err(v.failed(SolveError::unknown(format!(
                                    "failed to push {name}: {msg}"
                                ))))
                            }
                        }
                    }
                }
                v.done();
            }
            "local" | "tar" => {
                let session = session.ok_or_else(|| {
                    SolveError::unknown("the local and tar exporters need a session")
                })?;
                let v = VertexRun::start(
                    progress,
                    vertex_digest(solve_id, "export-local", n),
                    "exporting to client directory",
                );
                if let Err(err) = export_rootfs(&store, result, session, n, e.r#type == "tar").await
                {
                    return Err(v.failed(err));
                }
                v.done();
            }
            "docker" | "oci" => {
                let session = session.ok_or_else(|| {
                    SolveError::unknown("the docker and oci exporters need a session")
                })?;
                let v = VertexRun::start(
                    progress,
                    vertex_digest(solve_id, "export-archive", n),
                    format!("exporting to {} image format", e.r#type),
                );
                let names = names(&e.attrs)?;
                if let Err(err) = export_archive(&store, result, &names, session, n).await {
                    return Err(v.failed(err));
                }
                v.status_done("sending tarball");
                v.done();
            }
            _ => {}
        }
    }
    Ok(resp)
}

/// The image's root file system, unpacked into `dir`; for a multi-platform result, each
/// platform's in a directory of its own (`linux_arm64`, `linux_arm_v7`), as BuildKit splits
/// them.
fn unpack_rootfs(
    store: &berth_image::image_store::ImageStore,
    result: &BuildResult,
    dir: &Path,
) -> Result<(), SolveError> {
    let unpack = |id: &berth_image::Digest, dir: &Path| -> Result<(), SolveError> {
        let rec = store.get(id).map_err(unknown)?;
        for l in &rec.layers {
            let f = store.blobs().open_blob(&l.digest).map_err(unknown)?;
            berth_image::layer::apply_layer(dir, std::io::BufReader::new(f), &Default::default())
                .map_err(unknown)?;
        }
        Ok(())
    };
    if !result.is_multi() {
        return unpack(&result.image_id, dir);
    }
    for p in &result.platforms {
        let sub = dir.join(p.platform.to_string().replace('/', "_"));
        std::fs::create_dir(&sub).map_err(unknown)?;
        unpack(&p.image_id, &sub)?;
    }
    Ok(())
}

async fn export_rootfs(
    store: &Arc<berth_image::image_store::ImageStore>,
    result: &BuildResult,
    session: &Arc<Session>,
    exporter_id: usize,
    as_tar: bool,
) -> Result<(), SolveError> {
    let work = tempfile::Builder::new()
        .prefix("berth-bk-export-")
        .tempdir_in(store.tmp_dir().map_err(unknown)?)
        .map_err(unknown)?;
    let root = work.path().join("rootfs");
    std::fs::create_dir(&root).map_err(unknown)?;
    let (store2, result2, root2) = (store.clone(), result.clone(), root.clone());
    tokio::task::spawn_blocking(move || unpack_rootfs(&store2, &result2, &root2))
        .await
        .map_err(unknown)??;
    if !as_tar {
        crate::filesync::send_dir(session.channel(), exporter_id, root)
            .await
            .map_err(|e| SolveError::unknown(format!("sending files to the client: {e}")))?;
        return Ok(());
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<(), SolveError> {
        let mut b = tar::Builder::new(ChannelWriter::new(tx));
        b.follow_symlinks(false);
        b.append_dir_all(".", &root).map_err(unknown)?;
        b.into_inner().map_err(unknown)?.flush().map_err(unknown)?;
        Ok(())
    });
    crate::filesync::send_file(session.channel(), exporter_id, &[], rx)
        .await
        .map_err(|e| SolveError::unknown(format!("sending the tarball to the client: {e}")))?;
    writer.await.map_err(unknown)??;
    drop(work);
    Ok(())
}

async fn export_archive(
    store: &Arc<berth_image::image_store::ImageStore>,
    result: &BuildResult,
    names: &[Reference],
    session: &Arc<Session>,
    exporter_id: usize,
) -> Result<(), SolveError> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let store2 = store.clone();
    let id = result.image_id.clone();
    let index: Vec<berth_image::Digest> = if result.is_multi() {
        result
            .platforms
            .iter()
            .map(|p| p.image_id.clone())
            .collect()
    } else {
        Vec::new()
    };
    let names: Vec<Reference> = names.to_vec();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), SolveError> {
        // The names go into the archive; an image the store does not have under them is
        // saved by ID and named in the archive only. Several platforms: one image index.
        let mut w = ChannelWriter::new(tx);
        if index.is_empty() {
            berth_image::archive::save_as(&store2, &id, &names, &mut w).map_err(unknown)?;
        } else {
            berth_image::archive::save_index(&store2, &index, &names, &mut w).map_err(unknown)?;
        }
        w.flush().map_err(unknown)?;
        Ok(())
    });
    crate::filesync::send_file(session.channel(), exporter_id, &[], rx)
        .await
        .map_err(|e| SolveError::unknown(format!("sending the image to the client: {e}")))?;
    writer.await.map_err(unknown)??;
    Ok(())
}

/// A `Write` that hands 256 KiB chunks to an async receiver.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Vec<u8>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(256 << 10),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(256 << 10));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
