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
use berth_build::{BuildOptions, Builder, Event, StepEvent};
use berth_image::Reference;
use tokio::sync::mpsc;

use crate::engine::recovery::Op;
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
        .prefix(&crate::leftovers::context_prefix())
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

/// Extracts the context and reads the Dockerfile (its text). As dockerd, a `.dockerignore`
/// that lists the Dockerfile or itself removes them from the context once read.
fn prepare(spool: &std::path::Path, ctx: &std::path::Path, dockerfile: &str) -> Result<String> {
    use berth_build::BuildError;
    std::fs::create_dir(ctx)
        .map_err(|e| BuildError::io("creating the context directory", ctx, e))?;
    let f =
        std::fs::File::open(spool).map_err(|e| BuildError::io("opening the context", spool, e))?;
    let empty = f.metadata().map(|m| m.len() == 0).unwrap_or(true);
    if !empty {
        berth_build::context::extract_context(f, ctx).map_err(|e| {
            EngineError::bad(format!(
                "invalid build context (expected a tar archive): {e}"
            ))
        })?;
    }
    let _ = std::fs::remove_file(spool);
    let mut name = dockerfile.to_string();
    let df_path =
        berth_build::fsops::resolve_in_root(ctx, &name, true).map_err(BuildError::from)?;
    let text = match std::fs::read(&df_path) {
        Ok(t) => t,
        Err(_) if dockerfile == "Dockerfile" => {
            name = "dockerfile".into();
            std::fs::read(ctx.join(&name)).map_err(|_| {
                BuildError::Invalid(format!("Cannot locate specified Dockerfile: {dockerfile}"))
            })?
        }
        Err(_) => {
            return Err(BuildError::Invalid(format!(
                "Cannot locate specified Dockerfile: {dockerfile}"
            ))
            .into())
        }
    };
    if text.is_empty() {
        return Err(EngineError::bad(format!(
            "the Dockerfile ({dockerfile}) cannot be empty"
        )));
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let parsed = berth_build::parser::parse(&text).map_err(|e| {
        // dockerd: `instructions.Parse`'s errors as they are, the parser's wrapped.
        EngineError::bad(if e.instruction {
            e.to_string()
        } else {
            format!("failed to parse {dockerfile}: {e}")
        })
    })?;
    if parsed.nodes.is_empty() {
        // BuildKit's parser error, as dockerd's readAndParseDockerfile wraps it.
        return Err(EngineError::bad(format!(
            "failed to parse {dockerfile}: file with no instructions"
        )));
    }
    remove_ignored_build_files(ctx, &name);
    Ok(text)
}

/// dockerd's `removeDockerfile`: `.dockerignore` and the Dockerfile leave the context when
/// `.dockerignore` matches them (or a parent of theirs).
fn remove_ignored_build_files(ctx: &std::path::Path, dockerfile: &str) {
    let ignore = match berth_build::dockerignore::IgnoreFile::load(ctx) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("reading .dockerignore: {e}");
            return;
        }
    };
    for f in [".dockerignore", dockerfile] {
        if !ignore.ignored(f) {
            continue;
        }
        match berth_build::fsops::resolve_in_root(ctx, f, false) {
            Ok(p) if p.starts_with(ctx) && p != ctx => {
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = r {
                    tracing::warn!("removing {f} from the build context: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("removing {f} from the build context: {e}"),
        }
    }
}

/// Runs a build of the spooled context on a blocking thread. The context is extracted and
/// the Dockerfile read and parsed first: a failure there is the request's error (an HTTP
/// status, as dockerd answers before its first message); then the build's messages stream
/// through the returned channel (`quiet`: only the image ID).
pub async fn start(
    engine: Arc<Engine>,
    mut opts: BuildOptions,
    dockerfile: String,
    quiet: bool,
    ctx: Context,
) -> Result<mpsc::Receiver<Bytes>> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    // Until the build ends: what a crash left of it goes at the next start (`recovery`).
    let intent = engine.intent(Op::Build, &crate::util::new_id())?;
    tokio::task::spawn_blocking(move || {
        let _intent = intent;
        let Context { work, spool } = ctx;
        let t0 = std::time::Instant::now();
        // Small contexts go to tmpfs when there is one: creating and removing thousands of
        // small files on a busy journaling file system costs more than the build.
        let spool_len = std::fs::metadata(&spool)
            .map(|m| m.len())
            .unwrap_or(u64::MAX);
        let shm = (spool_len < 64 << 20)
            .then(|| {
                crate::leftovers::remove_shm_contexts();
                let prefix = crate::leftovers::shm_context_prefix()?;
                tempfile::Builder::new()
                    .prefix(&prefix)
                    .tempdir_in(crate::leftovers::SHM)
                    .ok()
            })
            .flatten();
        let ctx = match &shm {
            Some(d) => d.path().join("ctx"),
            None => work.path().join("ctx"),
        };
        match prepare(&spool, &ctx, &dockerfile) {
            Ok(text) => {
                tracing::debug!("build context extracted after {:?}", t0.elapsed());
                opts.dockerfile = text;
                // Instructions, flags, stages and target are checked before the first
                // message, as dockerd does: a bad Dockerfile is the request's error.
                if let Err(e) = berth_build::builder::check(&opts) {
                    let _ = ready_tx.send(Err(EngineError::bad(e.to_string())));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
            }
            Err(e) => {
                tracing::info!("build refused: {e}");
                let _ = ready_tx.send(Err(e));
                return;
            }
        }
        let res = {
            berth_build::builder::cleanup_stale(&engine.images);
            opts.context = ctx.clone();
            let puller = |name: &str, platform: Option<&berth_image::manifest::Platform>| {
                pull_base(&engine, name, platform).map_err(Into::into)
            };
            let b = Builder {
                store: &engine.images,
                runtime: engine.runtime_exe(),
                runtime_root: engine.cfg.exec_root.join("build-runtime"),
                cgroup_parent: engine.cfg.cgroup_parent.clone(),
                puller: Some(&puller),
                networks: Some(&*engine),
                intermediates: Some(&KeepInEngine(&engine)),
            };
            let tx2 = tx.clone();
            // Whether a RUN step's container ran (the crash tests' failpoints).
            let mut ran = false;
            let mut sink = move |ev: Event| -> bool {
                match &ev {
                    // A RUN step's container runs (its mounts, cgroups and network are up).
                    Event::Idle => {
                        ran = true;
                        crate::failpoint::hit("build.run");
                    }
                    // Its changes are a layer (a snapshot; the blob not yet published).
                    Event::Step(StepEvent::Done { .. }) if ran => {
                        crate::failpoint::hit("build.commit")
                    }
                    _ => {}
                }
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
        };
        // The built image's `create` event (dockerd logs one when the builder commits it),
        // then a `tag` event per `-t` (dockerd tags the result through its image service).
        if let Ok(built) = &res {
            let id = built.id.to_string();
            engine.image_event("create", &id);
            for t in &built.tags {
                engine.image_event_of("tag", &id, t);
            }
        }
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
    match ready_rx.await {
        Ok(Ok(())) => Ok(rx),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(EngineError::Internal("the build thread ended early".into())),
    }
}

/// The classic builder's kept RUN step containers (`rm=false`, or a failed step without
/// `forcerm`): the engine's containers under the ID the build printed, on the step's parent
/// image, the step's changes their own, stopped with the step's exit code.
struct KeepInEngine<'a>(&'a Engine);

impl berth_build::builder::Intermediates for KeepInEngine<'_> {
    fn keep(&self, c: berth_build::builder::KeptContainer<'_>) -> std::result::Result<(), String> {
        let engine = self.0;
        let mut config: berth_api::container::Config = serde_json::to_value(&c.config)
            .map_err(|e| e.to_string())
            .and_then(|v| berth_api::from_value(v).map_err(|e| e.to_string()))?;
        config.image = c.image.to_string();
        let req = berth_api::container::CreateRequest {
            config,
            ..Default::default()
        };
        let opts = crate::engine::create::CreateOptions {
            id: Some(c.id.to_string()),
            volatile: false,
        };
        let now = crate::util::now_rfc3339_nano();
        let (id, _) = engine
            .create_with(None, req, opts, |rec| {
                rec.state.status = "exited".into();
                rec.state.exit_code = i64::from(c.exit_code);
                rec.state.started_at = now.clone();
                rec.state.finished_at = now;
            })
            .map_err(|e| e.to_string())?;
        let sn = engine.images.snapshotter().map_err(|e| e.to_string())?;
        if let Some(upper) = sn.container_upper(&id) {
            berth_image::snapshot::copy_tree(c.upper, &upper).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Pulls a base image (`--pull`, or missing locally) with the daemon's registry settings;
/// the builder shows the returned status line.
fn pull_base(
    engine: &Engine,
    name: &str,
    platform: Option<&berth_image::manifest::Platform>,
) -> std::result::Result<String, JobError> {
    let r = Reference::parse_normalized(name)?;
    let r = if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(berth_image::reference::DEFAULT_TAG)?
    } else {
        r
    };
    Ok(crate::images::pull_one(
        engine,
        &r,
        &platform
            .cloned()
            .unwrap_or_else(berth_image::manifest::Platform::host),
        engine.registry_config(),
        &berth_registry::NoProgress,
    )?)
}

/// `POST /build/prune`: the build cache steps `opts` selects (after removed containers'
/// layers are gone).
pub async fn prune(
    engine: Arc<Engine>,
    opts: berth_build::builder::PruneOptions,
) -> Result<berth_build::builder::PruneReport> {
    engine.settle().await;
    let e = engine.clone();
    tokio::task::spawn_blocking(move || {
        let mut report = berth_build::builder::prune_matching(&e.images, &opts)?;
        // What crashed builds and pulls left (see `leftovers`).
        for l in crate::leftovers::remove(&e.images) {
            report.caches_deleted.push(
                l.path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
            report.space_reclaimed += l.size;
        }
        Ok::<_, berth_build::builder::BuildError>(report)
    })
    .await?
    .map_err(EngineError::from)
}
