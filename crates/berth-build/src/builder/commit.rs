//! A step's outcome: the cache lookup, the container that changes files (copying into it or
//! running RUN), its layer, the new state; and at the end, the image registered with its tags.

use std::path::Path;

use berth_image::image_store::{LayerRecord, RegisterRequest};
use berth_image::manifest::{ContainerConfig, Descriptor, History};
use berth_image::{Digest, Reference};

use super::cache::{self, CacheRecord};
use super::container::{self, ContainerGuard};
use super::error::{self, BuildError, Result};
use super::lowers::{Direct, Lowers};
use super::run::RunSpec;
use super::state::{short, State};
use super::steps::StageCtx;
use super::{Built, Eval, Event};

/// A closure run on a mounted root file system; returns false when nothing changed and no
/// layer is wanted (WORKDIR of an existing directory).
pub(super) type FilesFn<'f> = Box<dyn FnOnce(&Path) -> Result<bool> + 'f>;

/// A closure writing into a root file system (mounted, or an upper directory prepared by
/// `lowers`) with the owner of `--chown` resolved.
pub(super) type CreateFn<'f> = Box<dyn FnOnce(&Path, Option<(u32, u32)>) -> Result<()> + 'f>;

/// What a step does to the file system.
pub(super) enum FsOp<'f> {
    None,
    Files(FilesFn<'f>),
    Run(Box<RunSpec>),
    /// WORKDIR: `mkdir -p dir`, new directories owned by `user`; made directly in a new
    /// layer when the parent's layers decide it exactly (`lowers`), else `files` on the
    /// mounted root.
    Mkdir {
        dir: String,
        user: String,
        files: FilesFn<'f>,
    },
    /// COPY: `files` writes only at or below `path`; when no layer of the parent has it
    /// (`Lowers::prepare_new`), straight into a fresh upper directory, else on the mounted
    /// root. `chown` (Docker's `user[:group]`) is resolved in the root's files.
    Create {
        path: String,
        chown: Option<String>,
        files: CreateFn<'f>,
    },
}

impl Eval<'_, '_, '_> {
    /// Runs one step (or reuses it from the cache) and moves the stage to its result.
    pub(super) fn commit(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        created_by: String,
        cache_text: String,
        cc: ContainerConfig,
        op: FsOp<'_>,
    ) -> Result<()> {
        let store = self.b.store;
        tracing::debug!("step on line {line}: committing");
        let rec_path = cache::record_path(store, &ctx.state.id, &cache_text);
        // This build's claim on the step, when it makes it (see `StepMemo`).
        let mut claim = None;
        if !self.opts.no_cache && !ctx.no_cache {
            let local = if self.opts.cache_from_only {
                None
            } else {
                cache::load(store, &rec_path)
            };
            let hit = local.or_else(|| {
                let st =
                    cache::from_cache_sources(self.cache_sources, &ctx.state, &created_by, &cc)?;
                // Recorded locally too: the next build finds it without --cache-from.
                let bytes = serde_json::to_vec(&st.config).ok()?;
                let _ = cache::write_record(&rec_path, &CacheRecord::new(&bytes, &st));
                Some(st)
            });
            // Made earlier in this build (or being made by another stage): as the local cache,
            // which `--cache-from` leaves out.
            let hit = match hit {
                None if !self.opts.cache_from_only => match self.memo.claim(&rec_path) {
                    Ok(st) => Some(st),
                    Err(c) => {
                        claim = Some(c);
                        None
                    }
                },
                hit => hit,
            };
            if let Some(st) = hit {
                self.step_event(super::StepEvent::Cached { number: self.step })?;
                self.say(" ---> Using cache\n")?;
                self.say(format!(" ---> {}\n", short(&st.id)))?;
                ctx.state = st;
                return Ok(());
            }
        }
        let layer = match op {
            FsOp::None => None,
            FsOp::Files(f) => self.in_container(ctx, line, None, f)?,
            FsOp::Run(spec) => self.in_container(ctx, line, Some(*spec), Box::new(|_| Ok(true)))?,
            FsOp::Mkdir { dir, user, files } => self.mkdir_step(ctx, line, &dir, &user, files)?,
            FsOp::Create { path, chown, files } => {
                self.create_step(ctx, line, &path, chown, files)?
            }
        };
        let mut config = ctx.state.config.clone();
        let now = berth_image::timeutil::now_rfc3339_nano();
        config.created = Some(now.clone());
        config.config = Some(cc);
        let mut layers = ctx.state.layers.clone();
        let empty = layer.is_none();
        if let Some(l) = layer {
            config.rootfs.diff_ids.push(l.diff_id.clone());
            layers.push(l);
        }
        config.history.push(History {
            created: Some(now),
            created_by: Some(created_by),
            author: config.author.clone(),
            comment: None,
            empty_layer: empty,
        });
        let (state, bytes) = State::new(config, layers)?;
        self.pending
            .record(rec_path, CacheRecord::new(&bytes, &state));
        if let Some(c) = claim {
            c.made(&state);
        }
        self.say(format!(" ---> {}\n", short(&state.id)))?;
        ctx.state = state;
        Ok(())
    }

    /// Prepares a container on the stage's layers, mounts it, runs `spec` (or `files`),
    /// and turns its changes into a layer. `None` when nothing changed and `files` asked
    /// for no layer.
    fn in_container(
        &mut self,
        ctx: &StageCtx,
        line: usize,
        spec: Option<RunSpec>,
        files: FilesFn<'_>,
    ) -> Result<Option<LayerRecord>> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let mut guard = ContainerGuard::new(store, "build")?;
        let work = guard.work.clone();
        let rootfs = container::mount_layers(store, &ctx.state.layers, &work, &mut guard)?;
        let t_mounted = t0.elapsed();
        let ran = spec.is_some().then(|| guard.short_id().to_string());
        let mut cmd = None;
        let want_layer = match spec {
            Some(spec) => {
                self.say(format!(" ---> Running in {}\n", guard.short_id()))?;
                cmd = Some(spec.args().to_vec());
                if let Err(e) = self.run_container(&mut guard, &rootfs, spec, line) {
                    if self.opts.keep_containers != super::KeepContainers::Never {
                        guard.unmount_all();
                        let args = cmd.unwrap_or_default();
                        if let Err(k) = self.keep_container(ctx, &guard, args, e.code()) {
                            tracing::warn!("{k}");
                        }
                    }
                    return Err(e);
                }
                true
            }
            None => files(&rootfs)?,
        };
        let t_ran = t0.elapsed();
        guard.unmount_all();
        let upper = guard.upper();
        if !want_layer && dir_is_empty(&upper) {
            self.reaper.reap(guard);
            return Ok(None);
        }
        tracing::debug!(
            "step on line {line}: mounted {t_mounted:?}, ran {t_ran:?}, unmounted {:?}",
            t0.elapsed()
        );
        // `rm=false`: the container stays (its changes copied before they become the layer).
        let kept = match cmd {
            Some(args) if self.opts.keep_containers == super::KeepContainers::All => {
                self.keep_container(ctx, &guard, args, 0)?;
                true
            }
            _ => false,
        };
        let layer = self.layer_of_upper(ctx, line, guard)?;
        if let Some(short_id) = ran.filter(|_| !kept) {
            self.say(format!(" ---> Removed intermediate container {short_id}\n"))?;
        }
        Ok(Some(layer))
    }

    /// Hands a RUN step's container to the daemon ([`super::Intermediates`]): on the step's
    /// parent state, registered untagged unless it is an image already (dockerd's
    /// intermediate images), with the step's command and changes.
    fn keep_container(
        &mut self,
        ctx: &StageCtx,
        guard: &ContainerGuard,
        cmd: Vec<String>,
        exit_code: i32,
    ) -> Result<()> {
        let Some(keeper) = self.b.intermediates else {
            return Ok(());
        };
        let image = if self.b.store.get(&ctx.state.id).is_ok() {
            ctx.state.id.clone()
        } else {
            self.store_image(&ctx.state, &[])?
        };
        let mut config = ctx.state.cc();
        config.cmd = Some(cmd);
        let upper = guard.upper();
        keeper
            .keep(super::KeptContainer {
                id: &guard.id,
                image: &image,
                config,
                upper: &upper,
                exit_code,
            })
            .map_err(|e| {
                BuildError::Invalid(format!(
                    "keeping the intermediate container {}: {e}",
                    guard.short_id()
                ))
            })
    }

    /// WORKDIR's `mkdir -p`: on the parent's layers directly (no mount) when they decide it
    /// exactly, else on the mounted root (`files`).
    fn mkdir_step(
        &mut self,
        ctx: &StageCtx,
        line: usize,
        dir: &str,
        user: &str,
        files: FilesFn<'_>,
    ) -> Result<Option<LayerRecord>> {
        let (guard, direct) = self.direct_upper(
            ctx,
            line,
            format!("WORKDIR {dir}"),
            "creating directory",
            |upper| upper.join(dir.trim_start_matches('/')),
            |l, upper| l.mkdir_all(upper, dir, user),
        )?;
        match direct {
            Direct::Exists => {
                self.reaper.reap(guard);
                Ok(None)
            }
            Direct::Created => self.layer_of_upper(ctx, line, guard).map(Some),
            Direct::Mount => {
                drop(guard);
                self.in_container(ctx, line, None, files)
            }
        }
    }

    /// A step that writes below a new path (COPY): into a fresh upper directory when the
    /// parent's layers decide it exactly (no mount: the layer is the same), else on the
    /// mounted root.
    fn create_step(
        &mut self,
        ctx: &StageCtx,
        line: usize,
        path: &str,
        chown: Option<String>,
        files: CreateFn<'_>,
    ) -> Result<Option<LayerRecord>> {
        let (guard, (direct, owner)) = self.direct_upper(
            ctx,
            line,
            format!("COPY to {path}"),
            "preparing the layer of",
            Path::to_path_buf,
            |l, upper| {
                let owner = match &chown {
                    None => Some(None),
                    Some(u) => l.owner(u)?,
                };
                let Some(owner) = owner else {
                    return Ok((Direct::Mount, None));
                };
                Ok((l.prepare_new(upper, path)?, owner))
            },
        )?;
        if direct != Direct::Created {
            drop(guard);
            let files: FilesFn<'_> = Box::new(move |root: &Path| {
                let owner = chown
                    .as_deref()
                    .map(|u| crate::fsops::resolve_user(root, u))
                    .transpose()
                    .map_err(|e| error::at(line, e))?;
                files(root, owner)?;
                Ok(true)
            });
            return self.in_container(ctx, line, None, files);
        }
        // A failure drops the guard: the upper directory goes with it.
        files(&guard.upper(), owner)?;
        self.layer_of_upper(ctx, line, guard).map(Some)
    }

    /// The start of a step that may write its layer without a mount: a new container work
    /// directory (`guard`), and `decide` run on the parent's layers and the work directory's
    /// `upper`. An error of `decide` is the step's (`op`), an I/O error (`io_op`) on the path
    /// `at(upper)`; it drops the guard, and the upper directory goes with it.
    fn direct_upper<T: std::fmt::Debug>(
        &self,
        ctx: &StageCtx,
        line: usize,
        op: String,
        io_op: &'static str,
        at: impl FnOnce(&Path) -> std::path::PathBuf,
        decide: impl FnOnce(Lowers<'_>, &Path) -> std::io::Result<T>,
    ) -> Result<(ContainerGuard, T)> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let guard = ContainerGuard::new(store, "build")?;
        let lowers = container::lower_dirs(store, &ctx.state.layers)?;
        let upper = guard.upper();
        let decided = decide(Lowers(&lowers), &upper).map_err(|e| {
            error::at(
                line,
                error::StepError::Fs {
                    op,
                    source: crate::fsops::FsError::Io {
                        op: io_op,
                        path: at(&upper),
                        source: e,
                    },
                },
            )
        })?;
        tracing::debug!("step on line {line}: {decided:?} in {:?}", t0.elapsed());
        Ok((guard, decided))
    }

    /// Archives the upper directory of `guard` (nothing mounted on it any more) into the
    /// step's layer and commits it as the layer's snapshot; `guard` goes to the reaper.
    fn layer_of_upper(
        &mut self,
        ctx: &StageCtx,
        line: usize,
        guard: ContainerGuard,
    ) -> Result<LayerRecord> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let upper = guard.upper();
        let (written, pending) = crate::diff::write_layer_pending(store.blobs(), &upper)
            .map_err(crate::fsops::io_at("writing the layer of", &upper))?;
        self.pending.blob(pending);
        let t_written = t0.elapsed();
        let snap = store
            .snapshotter()
            .map_err(error::store("opening the snapshotter"))?;
        let parent = container::chain_top(&ctx.state.layers);
        let committed = snap
            .commit_upper_dir(
                parent.as_ref(),
                &written.record.diff_id,
                written.tar_size,
                &upper,
            )
            .map_err(error::snapshot("committing the step's changes"))?;
        if committed.is_none() {
            return Err(BuildError::Unsupported(
                "snapshotter cannot commit build changes",
            ));
        }
        tracing::debug!(
            "step on line {line}: layer written {t_written:?}, committed {:?}",
            t0.elapsed()
        );
        // Cleaned up while the next steps run.
        self.reaper.reap(guard);
        Ok(written.record)
    }

    /// Registers the final state as an image with the tags (its blobs published first).
    pub(super) fn register(&mut self, fin: &State) -> Result<Built> {
        let tags = self.opts.tags.clone();
        let id = self.store_image(fin, &tags)?;
        self.finish_build(id)
    }

    /// The classic builder's image of a stage other than the target: registered untagged,
    /// its ID sent as an `aux` message (dockerd's `emitImageID` after each stage).
    pub(super) fn register_stage(&mut self, st: &State) -> Result<()> {
        let id = self.store_image(st, &[])?;
        let mut aux = serde_json::Map::new();
        aux.insert("ID".into(), id.to_string().into());
        if !(self.sink)(Event::Aux(aux.into())) {
            return Err(BuildError::Cancelled);
        }
        Ok(())
    }

    /// Registers a state as an image named `tags`; its ID.
    fn store_image(&mut self, fin: &State, tags: &[Reference]) -> Result<Digest> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let config = serde_json::to_vec(&fin.config)?;
        let id = Digest::of_bytes(&config);
        let descs: Vec<Descriptor> = fin.layers.iter().map(LayerRecord::descriptor).collect();
        store
            .unpack(&fin.layers)
            .map_err(error::store("unpacking the image's layers"))?;
        // A rebuild that changes nothing: the image and its tags are in place already.
        let unchanged = store.get(&id).is_ok()
            && tags.iter().all(|t| {
                store
                    .resolve(&t.to_string())
                    .is_ok_and(|r| r.image.id == id && r.reference.is_some())
            });
        if unchanged {
            self.pending.publish(store)?;
            return Ok(id);
        }
        let manifest = berth_image::image_store::synthesize_manifest(&config, &descs);
        // The config and manifest blobs become durable with the layers, in one round.
        self.pending.bytes(store, &config)?;
        self.pending.bytes(store, &manifest)?;
        self.pending.publish(store)?;
        let reg = store
            .register(RegisterRequest {
                manifest,
                config,
                layers: fin
                    .layers
                    .iter()
                    .zip(&descs)
                    .map(|(l, d)| l.input(d.clone()))
                    .collect(),
                tags: tags.to_vec(),
                // The image the build started from (dockerd: the last step's image, whose
                // chain leads there): `rmi` refuses to delete a parent.
                parent: fin
                    .base
                    .clone()
                    .filter(|b| self.opts.record_parent && *b != id),
                ..Default::default()
            })
            .map_err(error::store("registering the image"))?;
        tracing::debug!("image registered in {:?}", t0.elapsed());
        Ok(reg.id)
    }

    fn finish_build(&mut self, id: Digest) -> Result<Built> {
        let mut aux = serde_json::Map::new();
        aux.insert("ID".into(), id.to_string().into());
        if !(self.sink)(Event::Aux(aux.into())) {
            return Err(BuildError::Cancelled);
        }
        self.say(format!("Successfully built {}\n", short(&id)))?;
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            let f = t.familiar_string();
            self.say(format!("Successfully tagged {f}\n"))?;
            tags.push(f);
        }
        Ok(Built { id, tags })
    }
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}
