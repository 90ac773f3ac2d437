//! The Dockerfile evaluator: stages, instructions, the step cache, and the containers that
//! run `RUN` steps.
//!
//! Every step starts from a *state* (an image config plus its layers) whose identity is the
//! digest of its config. A step's cache key is `sha256(parent state id, the step's cache
//! text)`, where the cache text is the instruction after expansion, plus, for `RUN`, the
//! build args in scope and the mounts, and for `COPY`/`ADD` a hash of the copied files'
//! paths, types, modes, sizes and contents (not owners and not times: `COPY` sets owners
//! itself, and Docker ignores times too). A hit reuses the recorded state (its layer blobs
//! must still exist). Records live under `<data-root>/buildcache/` and survive restarts.
//!
//! Steps that change files (RUN, COPY, ADD) run on an overlay mount of the parent's layers
//! with a fresh upper directory; afterwards the upper directory is archived into a gzip
//! layer and then *renamed* into the layer snapshot (no unpacking). WORKDIR makes its
//! directories in a fresh upper directory without a mount when the layers decide it exactly
//! (`lowers`).
//!
//! Modules: `instructions` (the typed instructions, flags parsed once), `schedule`
//! (stages, their dependencies and threads, output in file order), `steps` (one function
//! per metadata instruction), `run` (RUN: its OCI spec and the runtime), `copy` (COPY/ADD),
//! `commit` (a step's cache lookup, container and layer; the final image), `container`
//! (overlay mounts of a state), `lowers` (a state's layers read without a mount), `cache`
//! (records, keys, publication, prune), `state`.

mod archive;
mod cache;
mod commit;
mod container;
mod copy;
mod error;
mod instructions;
mod lowers;
mod run;
mod schedule;
mod state;
mod steps;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use berth_image::image_store::ImageStore;
use berth_image::manifest::Platform;
use berth_image::{Digest, Reference};
use serde_json::Value;

pub use cache::{
    cache_dir, cleanup_stale, prune, prune_matching, references, steps, FilterOp, InvalidFilter,
    PruneFilter, PruneOptions, PruneReport, StepInfo,
};
pub use error::{BuildError, StepError};
pub use instructions::writes_context;
pub use lowers::dir_in_layers;
pub use state::PlatformError;

use cache::{CacheSource, Pending};
use error::Result;
use state::State;

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The extracted context directory.
    pub context: PathBuf,
    pub tags: Vec<Reference>,
    /// `--build-arg` (a `None` value: take it from the environment, which the client did).
    pub build_args: BTreeMap<String, Option<String>>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub labels: BTreeMap<String, String>,
    pub cache_from: Vec<String>,
    /// Docker's classic builder: with `cache_from` given, the local cache counts only
    /// through those images (a step is a hit only as the next entry of one of them).
    pub cache_from_only: bool,
    /// RUN's network: `default`/`bridge` (the default bridge, as Docker's classic builder),
    /// `host`, `none`, or a network's name or id (see [`RunNetworks`]).
    pub network: Option<String>,
    /// `--add-host` entries (`name:ip` or `name=ip`) for RUN steps' `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    pub platform: Option<String>,
    /// Build secrets by id (`RUN --mount=type=secret`): mounted for the RUN steps that ask
    /// for them, never written to a layer, a cache record or a cache key.
    pub secrets: BTreeMap<String, Secret>,
    /// Stages (lower-case names) whose steps ignore the cache (`--no-cache-filter`).
    pub no_cache_stages: std::collections::BTreeSet<String>,
    /// Named contexts that are images (`--build-context NAME=docker-image://REF`): `FROM
    /// NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` use REF instead.
    pub image_contexts: BTreeMap<String, String>,
    /// SSH agent sockets by id (`RUN --mount=type=ssh,id=ID`), bind-mounted into the step
    /// with `SSH_AUTH_SOCK` pointing at them.
    pub ssh: BTreeMap<String, std::path::PathBuf>,
    /// `Output` events instead of `Stream` for containers' output (see [`Event::Output`]).
    pub output_events: bool,
    /// Record the image the final stage started from as the built image's parent (the classic
    /// builder's `Parent`, which `rmi` protects; BuildKit's images have none). Such builds
    /// also refuse what the classic builder's step containers refuse (VOLUME over a file).
    pub record_parent: bool,
    /// The classic builder's stages: every stage up to the target is built (not only those
    /// the target uses), and each but the target registered as an untagged image whose ID is
    /// sent as an `aux` message, as dockerd's classic builder does.
    pub classic_stages: bool,
    /// The classic builder's RUN steps see their image's `VOLUME`s as throw-away anonymous
    /// volumes (dockerd's: writes below a volume are not in the step's layer; BuildKit keeps
    /// them), see `container::volume_view`.
    pub volume_views: bool,
    /// The context is still arriving (see [`ContextGate`]); `None`: it is all there.
    pub context_gate: Option<ContextGate>,
    /// Which RUN step containers are kept as the daemon's (see [`KeepContainers`]).
    pub keep_containers: KeepContainers,
}

/// Which RUN step containers a build keeps as stopped containers of the daemon, as dockerd's
/// classic builder does with its `rm` and `forcerm` options (see [`Intermediates`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeepContainers {
    /// None (`forcerm`; BuildKit's builds).
    #[default]
    Never,
    /// A failed step's (`rm`, the classic builder's default).
    Failed,
    /// Every step's (`rm=false`).
    All,
}

/// Takes over a RUN step's container (see [`KeepContainers`]).
pub trait Intermediates: Send + Sync {
    /// Makes `c` a stopped container of the daemon; the message of what failed.
    fn keep(&self, c: KeptContainer<'_>) -> std::result::Result<(), String>;
}

/// A RUN step's container to keep.
pub struct KeptContainer<'a> {
    /// Its ID (the build printed its first 12 digits, ` ---> Running in …`).
    pub id: &'a str,
    /// The image it ran on: the step's parent (registered untagged when it was none yet).
    pub image: &'a Digest,
    /// Its configuration: the parent's, with the step's command.
    pub config: berth_image::manifest::ContainerConfig,
    /// Its changes (an overlay upper directory; the build keeps it).
    pub upper: &'a std::path::Path,
    /// The step's exit code.
    pub exit_code: i32,
}

/// A build context still arriving: as BuildKit loads a local context while the steps that
/// do not read it run, a step that reads `BuildOptions::context` first waits for
/// [`ContextOpener::open`]. A failed (or abandoned) transfer fails the step that waited.
#[derive(Clone)]
pub struct ContextGate(Arc<GateState>);

type GateState = (
    Mutex<Option<std::result::Result<(), ContextUnavailable>>>,
    Condvar,
);

/// Why a [`ContextGate`] will never let its readers through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextUnavailable {
    /// The transfer failed (the session's own message).
    #[error("{0}")]
    Failed(String),
    /// The transfer ended without saying how (its [`ContextOpener`] was dropped).
    #[error("the build context transfer stopped")]
    Stopped,
}

/// Opens a [`ContextGate`]: with the transfer's outcome, or, dropped unopened, with an error.
pub struct ContextOpener(Arc<GateState>);

impl ContextGate {
    /// A closed gate and what opens it.
    pub fn new() -> (ContextGate, ContextOpener) {
        let s = Arc::new((Mutex::new(None), Condvar::new()));
        (ContextGate(s.clone()), ContextOpener(s))
    }

    /// Waits until the context is there; `Err`: why it never will be.
    pub fn wait(&self) -> std::result::Result<(), ContextUnavailable> {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = &*g {
                return r.clone();
            }
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl std::fmt::Debug for ContextGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.0 .0.lock().map(|g| g.is_some()).unwrap_or(false);
        write!(f, "ContextGate(open: {open})")
    }
}

impl ContextOpener {
    /// The transfer's outcome: steps waiting for the context go on (or fail with `Err`).
    pub fn open(self, r: std::result::Result<(), ContextUnavailable>) {
        self.set(r);
    }

    fn set(&self, r: std::result::Result<(), ContextUnavailable>) {
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(r);
        }
        cv.notify_all();
    }
}

impl Drop for ContextOpener {
    fn drop(&mut self) {
        self.set(Err(ContextUnavailable::Stopped));
    }
}

/// A secret's bytes (never shown by `Debug`).
#[derive(Clone, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a pull failed (the puller's own error).
pub type PullError = Box<dyn std::error::Error + Send + Sync>;

/// Pulls an image reference into the store (`--pull`, or a base image missing locally);
/// returns a status line for the client (`Status: Downloaded newer image for …`).
/// The platform is the one asked for (`--platform`, `FROM --platform`), `None`: the host's.
pub type Puller<'p> = dyn Fn(&str, Option<&Platform>) -> Result<String, PullError> + Sync + 'p;

/// Why a RUN step's network could not be set up.
pub type NetworkError = Box<dyn std::error::Error + Send + Sync>;

/// The network namespace of a RUN step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNetns {
    /// The host's (`--network host`, asked for).
    Host,
    /// A fresh one with only loopback (`--network none`).
    New,
    /// One the daemon set up (attached to a network): joined by path.
    Join(PathBuf),
}

/// A RUN step's network: its namespace and the `/etc/hosts` and `/etc/resolv.conf` a
/// container there gets. What the daemon set up is released when `guard` is dropped (after
/// the step's container is gone).
pub struct RunSandbox {
    pub netns: RunNetns,
    pub hosts: String,
    pub resolv: String,
    pub guard: Box<dyn Send>,
}

/// The daemon's networks, for RUN steps: a network namespace attached to `network` as a
/// container's would be (`default`/`bridge`: the default bridge; `host`; `none`; a user
/// network's name or id), with `extra_hosts` (`name:ip`) in its `/etc/hosts` and
/// `hostname` as its own name.
pub trait RunNetworks: Sync {
    fn sandbox(
        &self,
        network: &str,
        hostname: &str,
        extra_hosts: &[String],
    ) -> Result<RunSandbox, NetworkError>;
}

/// Progress for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text for the `stream` field.
    Stream(String),
    /// An `aux` object.
    Aux(Value),
    /// Output of a step's container (a line, or what was read at its end): the classic API
    /// streams it like the rest; BuildKit clients show it as the step's log.
    Output(String),
    /// A step's life cycle, for clients that show steps rather than text (BuildKit's).
    Step(StepEvent),
    /// Nothing new while a step runs quietly: the sink's answer says whether the build
    /// goes on (false when its client went away).
    Idle,
}

/// A step's life cycle (see [`Event::Step`]). Steps are numbered in build order (1-based,
/// as in `Step N/M`); a step ends with `Done` unless the build fails in it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvent {
    Start {
        number: usize,
        /// The stage's name, or `stage-N` (N counted from 0 in the file) when it has none.
        stage: String,
        /// Position of the step in its stage (the FROM is 1) and the stage's step count.
        position: usize,
        stage_steps: usize,
        /// The instruction as written.
        text: String,
        /// Its line in the Dockerfile.
        line: usize,
    },
    /// The step's result came from the cache.
    Cached {
        number: usize,
    },
    Done {
        number: usize,
    },
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: Digest,
    pub tags: Vec<String>,
}

/// Where the builder runs things.
pub struct Builder<'a> {
    pub store: &'a ImageStore,
    /// The runc-compatible runtime binary.
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    /// Cgroup parent for RUN containers.
    pub cgroup_parent: String,
    /// Pulls base images from registries; `None`: nothing is pulled.
    pub puller: Option<&'a Puller<'a>>,
    /// The daemon's networks for RUN steps; `None`: every RUN step not on `host` gets a
    /// namespace with only loopback.
    pub networks: Option<&'a dyn RunNetworks>,
    /// Takes the RUN step containers the build keeps (`None`: none is kept).
    pub intermediates: Option<&'a dyn Intermediates>,
}

/// Progress sink: returns false when the client went away.
pub type Sink<'s> = dyn FnMut(Event) -> bool + Send + 's;

/// Checks a build as dockerd does before its first message: the Dockerfile parses, its
/// instructions and their flags are valid, the stages and the target exist.
pub fn check(opts: &BuildOptions) -> Result<()> {
    let df = crate::parser::parse(&opts.dockerfile)?;
    schedule::Plan::new(&df, opts)?;
    Ok(())
}

impl Builder<'_> {
    /// Runs a build, reporting progress to `sink`.
    pub fn build(&self, opts: &BuildOptions, sink: &mut Sink<'_>) -> Result<Built> {
        let target = state::target_platform(opts.platform.as_deref())?;
        let df = crate::parser::parse(&opts.dockerfile)?;
        for w in &df.warnings {
            sink(Event::Stream(format!("{w}\n")));
        }
        let cache_sources = self.cache_sources(opts, sink);
        let plan = schedule::Plan::new(&df, opts)?;
        let mut reaper = container::Reaper::new();
        let memo = cache::StepMemo::default();
        let mut e = Eval {
            b: self,
            opts,
            escape: df.escape,
            sink,
            step: 0,
            total: plan.total_steps(),
            used_args: plan.used_args.clone(),
            stage_states: vec![None; plan.stages.len()],
            stage_names: &plan.names,
            cache_sources: &cache_sources,
            pending: Pending::default(),
            memo: &memo,
            target,
            runnable: HashMap::new(),
            reaper: &reaper,
        };
        let res = e.build(&plan);
        if res.is_err() {
            // Keep the steps that did succeed in the cache.
            if let Err(err) = e.pending.publish(self.store) {
                tracing::warn!("build cache: {err}");
            }
        }
        // The steps' containers are gone before the build is reported done.
        reaper.finish();
        res
    }

    /// The `--cache-from` images found locally (Docker warns about the others and goes on).
    fn cache_sources(&self, opts: &BuildOptions, sink: &mut Sink<'_>) -> Vec<CacheSource> {
        let mut out = Vec::new();
        for name in opts.cache_from.iter().filter(|n| !n.is_empty()) {
            let found = self.store.resolve(name).and_then(|r| {
                let config = self.store.config(&r.image.id)?;
                Ok(CacheSource {
                    config,
                    layers: r.image.layers.clone(),
                })
            });
            match found {
                Ok(c) => out.push(c),
                Err(e) => {
                    sink(Event::Stream(format!(
                        "[Warning] --cache-from {name}: not used: {e}\n"
                    )));
                }
            }
        }
        out
    }
}

/// A build being evaluated: the whole build, or one stage on its thread.
struct Eval<'a, 'b, 's> {
    b: &'b Builder<'a>,
    opts: &'b BuildOptions,
    escape: char,
    sink: &'b mut Sink<'s>,
    /// The last step number printed.
    step: usize,
    total: usize,
    used_args: BTreeSet<String>,
    /// The stages built so far, by index.
    stage_states: Vec<Option<State>>,
    stage_names: &'b HashMap<String, usize>,
    cache_sources: &'b [CacheSource],
    /// What becomes durable at the end of the build.
    pending: Pending,
    /// The build's steps, shared by its stages.
    memo: &'b cache::StepMemo,
    /// The platform built for (`--platform`, else the host's).
    target: Platform,
    /// How each platform's programs run here (looked up at its first RUN step).
    runnable:
        HashMap<String, std::result::Result<crate::binfmt::Execution, crate::binfmt::NotRunnable>>,
    /// Cleans up finished steps' containers while the build goes on.
    reaper: &'b container::Reaper,
}

impl<'b> Eval<'_, 'b, '_> {
    /// The context directory, once it is all there (see [`ContextGate`]).
    fn context(&self, line: usize) -> Result<&'b std::path::Path> {
        let opts: &'b BuildOptions = self.opts;
        if let Some(g) = &opts.context_gate {
            g.wait()
                .map_err(|e| error::at(line, StepError::Context(e)))?;
        }
        Ok(&opts.context)
    }
}

impl Eval<'_, '_, '_> {
    /// Sends a line to the client; `Cancelled` when it went away.
    fn say(&mut self, s: impl Into<String>) -> Result<()> {
        if (self.sink)(Event::Stream(s.into())) {
            Ok(())
        } else {
            Err(BuildError::Cancelled)
        }
    }

    fn step_event(&mut self, ev: StepEvent) -> Result<()> {
        if (self.sink)(Event::Step(ev)) {
            Ok(())
        } else {
            Err(BuildError::Cancelled)
        }
    }

    /// An image as a state: with `--pull` (for `FROM`) re-resolved against its registry
    /// first; pulled when missing locally, as Docker's builder does. With a platform `want`
    /// (asked for by `--platform` or `FROM --platform`), a local image of another platform
    /// is pulled again for `want` (as dockerd's classic store, the name then holds that one).
    fn image_state(
        &mut self,
        name: &str,
        line: usize,
        from: bool,
        want: Option<&Platform>,
    ) -> Result<State> {
        let store = self.b.store;
        // A named context replaces the image of that name.
        let name = match self.opts.image_contexts.get(name) {
            Some(r) => r.clone(),
            None => name.to_string(),
        };
        let name = name.as_str();
        let pull = |e: &mut Self| -> Result<()> {
            let Some(puller) = e.b.puller else {
                return Err(error::invalid(
                    line,
                    format!("pull access denied for {name}: image not found locally and this builder cannot pull"),
                ));
            };
            match want {
                Some(p) => e.say(format!("Pulling {name} ({p})\n"))?,
                None => e.say(format!("Pulling {name}\n"))?,
            }
            let status = puller(name, want).map_err(|source| {
                error::at(
                    line,
                    StepError::Pull {
                        image: match want {
                            Some(p) => format!("{name} ({p})"),
                            None => name.to_string(),
                        },
                        source,
                    },
                )
            })?;
            e.say(format!("{status}\n"))
        };
        let mut pulled = false;
        if self.opts.pull && from {
            pull(self)?;
            pulled = true;
        }
        let mut res = match store.resolve(name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() && !pulled => {
                pull(self)?;
                pulled = true;
                store
                    .resolve(name)
                    .map_err(error::store("resolving a pulled image"))?
            }
            Err(e) if e.is_not_found() => {
                return Err(error::invalid(
                    line,
                    format!("pull access denied for {name}: image not found"),
                ))
            }
            Err(e) => return Err(error::store("resolving an image")(e)),
        };
        let mut config = store
            .config(&res.image.id)
            .map_err(error::store("reading an image config"))?;
        if let Some(p) = want.filter(|p| !state::config_is(&config, p)) {
            if !pulled {
                pull(self)?;
                res = store
                    .resolve(name)
                    .map_err(error::store("resolving a pulled image"))?;
                config = store
                    .config(&res.image.id)
                    .map_err(error::store("reading an image config"))?;
            }
            if !state::config_is(&config, p) {
                return Err(error::invalid(
                    line,
                    format!(
                        "image {name} is for {}, not {p} (no manifest for {p} in its index)",
                        config.platform()
                    ),
                ));
            }
        }
        Ok(State {
            config,
            layers: res.image.layers.clone(),
            id: res.image.id.clone(),
            base: None,
        })
    }

    /// The state of `name` for `COPY --from` or `RUN --mount=from=`: an earlier stage (by
    /// name or index), else an image.
    fn source_state(&mut self, name: &str, current: usize, line: usize) -> Result<State> {
        match schedule::stage_ref(self.stage_names, name, current) {
            Some(j) => self.stage_states[j]
                .clone()
                .ok_or(BuildError::Internal("stage not built")),
            None => self.image_state(name, line, false, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ContextGate, ContextUnavailable};
    use std::time::Duration;

    #[test]
    fn the_context_gate_holds_readers_until_the_transfer_ends() {
        let (gate, opener) = ContextGate::new();
        let g = gate.clone();
        let reader = std::thread::spawn(move || g.wait());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "a reader passed a closed gate");
        opener.open(Ok(()));
        assert_eq!(reader.join().unwrap(), Ok(()));
        // Open stays open.
        assert_eq!(gate.wait(), Ok(()));
    }

    #[test]
    fn a_failed_or_abandoned_transfer_fails_the_readers() {
        let (gate, opener) = ContextGate::new();
        opener.open(Err(ContextUnavailable::Failed("session closed".into())));
        assert_eq!(
            gate.wait(),
            Err(ContextUnavailable::Failed("session closed".into()))
        );
        let (gate, opener) = ContextGate::new();
        let g = gate.clone();
        let reader = std::thread::spawn(move || g.wait());
        drop(opener);
        let e = reader.join().unwrap().unwrap_err();
        assert_eq!(e, ContextUnavailable::Stopped);
        assert!(e.to_string().contains("stopped"), "{e}");
    }
}
