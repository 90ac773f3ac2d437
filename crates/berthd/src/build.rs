//! Dockerfile builds through `berth-build` (`POST /build`, `POST /build/prune`).
//!
//! The context tar (plain, gzip or zstd) is spooled to a file by the route, then extracted
//! into a temporary directory (under the data root, or in `/dev/shm` when small) by
//! berth-image's confined layer applier (no entry can land outside it). The build runs on a
//! blocking thread and streams Docker's JSON messages (`stream`, `aux`, `errorDetail` +
//! `error`) as it goes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use berth_api::image::BuildResult;
use berth_api::message::JsonMessage;
use berth_build::{BuildOptions, Builder, Event};
use berth_image::Reference;
use tokio::sync::mpsc;

use crate::engine::{Engine, EngineError, Result};
use crate::images::JobError;

/// A build's context spooled to a private directory (removed with it).
pub struct Context {
    pub work: tempfile::TempDir,
    pub spool: PathBuf,
}

/// A directory for a build's context under the image store's temporary directory.
pub fn context_dir(engine: &Engine) -> Result<Context> {
    let tmp = engine.images.tmp_dir()?;
    let work = tempfile::Builder::new()
        .prefix("build-ctx-")
        .tempdir_in(&tmp)
        .map_err(EngineError::io("creating a directory in", &tmp))?;
    Ok(Context {
        spool: work.path().join("context.tar"),
        work,
    })
}

fn line(m: &JsonMessage) -> Bytes {
    Bytes::from(m.to_line())
}

/// Runs a build of the spooled context on a blocking thread; its messages stream through
/// the returned channel (`quiet`: only the image ID).
pub fn start(
    engine: Arc<Engine>,
    mut opts: BuildOptions,
    dockerfile: String,
    quiet: bool,
    ctx: Context,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let Context { work, spool } = ctx;
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
            std::fs::create_dir(&ctx).map_err(|e| {
                berth_build::BuildError::io("creating the context directory", &ctx, e)
            })?;
            let f = std::fs::File::open(&spool)
                .map_err(|e| berth_build::BuildError::io("opening the context", &spool, e))?;
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
            let df_path = berth_build::fsops::resolve_in_root(&ctx, &dockerfile, true)?;
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
            let puller = |name: &str| pull_base(&engine, name).map_err(Into::into);
            let b = Builder {
                store: &engine.images,
                runtime: engine.runtime_exe(),
                runtime_root: engine.cfg.exec_root.join("build-runtime"),
                cgroup_parent: engine.cfg.cgroup_parent.clone(),
                puller: Some(&puller),
            };
            let tx2 = tx.clone();
            let mut sink = move |ev: Event| -> bool {
                let m = match ev {
                    Event::Stream(_) if quiet => return !tx2.is_closed(),
                    Event::Stream(s) | Event::Output(s) => JsonMessage::stream(s),
                    Event::Step(_) | Event::Idle => return !tx2.is_closed(),
                    Event::Aux(a) => {
                        let built = berth_api::from_value::<BuildResult>(a.clone())
                            .ok()
                            .filter(|b| !b.id.is_empty());
                        match built {
                            Some(b) if quiet => {
                                let _ = tx2.blocking_send(line(&JsonMessage::aux(&a)));
                                return tx2
                                    .blocking_send(line(&JsonMessage::stream(format!(
                                        "{}\n",
                                        b.id
                                    ))))
                                    .is_ok();
                            }
                            _ => JsonMessage::aux(&a),
                        }
                    }
                };
                tx2.blocking_send(line(&m)).is_ok()
            };
            b.build(&opts, &mut sink)
        })();
        if let Err(e) = res {
            let msg = e.to_string();
            tracing::info!("build failed: {msg}");
            let _ = tx.blocking_send(line(&JsonMessage::error(msg, Some(i64::from(e.code())))));
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
    rx
}

/// Pulls a base image (`--pull`, or missing locally) with the daemon's registry settings;
/// the builder shows the returned status line.
fn pull_base(engine: &Engine, name: &str) -> std::result::Result<String, JobError> {
    let r = Reference::parse_normalized(name)?;
    let r = if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(berth_image::reference::DEFAULT_TAG)?
    } else {
        r
    };
    Ok(crate::images::pull_one(
        engine,
        &r,
        &berth_image::manifest::Platform::host(),
        engine.registry_config(),
        &berth_registry::NoProgress,
    )?)
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

/// `POST /build/prune`: the build cache (after removed containers' layers are gone).
pub async fn prune(engine: Arc<Engine>) -> Result<berth_build::builder::PruneReport> {
    engine.settle().await;
    let e = engine.clone();
    tokio::task::spawn_blocking(move || berth_build::builder::prune(&e.images))
        .await?
        .map_err(EngineError::from)
}
