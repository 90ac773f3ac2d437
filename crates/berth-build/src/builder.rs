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
//! Steps that change files (RUN, COPY, ADD, WORKDIR creating a directory) run on an overlay
//! mount of the parent's layers with a fresh upper directory; afterwards the upper directory
//! is archived into a gzip layer and then *renamed* into the layer snapshot (no unpacking).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};

use berth_image::image_store::{ImageStore, LayerInput, LayerRecord, RegisterRequest};
use berth_image::manifest::{ContainerConfig, Descriptor, History, ImageConfig, Platform, RootFs};
use berth_image::{Digest, Reference};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::diff;
use crate::dockerignore::{self, IgnoreFile};
use crate::fsops::{self, CopyAttrs};
use crate::parser::{self, Dockerfile, Instruction, ParseError};
use crate::shell::{self, Vars};

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A step failed: the line, and a message (Docker's wording where it has one).
    #[error("Dockerfile line {line}: {message}")]
    Step {
        line: usize,
        message: String,
        /// A failing RUN's exit code.
        code: Option<i32>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("build cancelled")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

impl BuildError {
    /// The exit code clients should use (a failing RUN's, else 1).
    pub fn code(&self) -> i32 {
        match self {
            BuildError::Step { code: Some(c), .. } => *c,
            _ => 1,
        }
    }
}

type Result<T, E = BuildError> = std::result::Result<T, E>;

fn internal(e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(e.to_string())
}

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
    /// `host` (default here), `none`, or `default`/`bridge` (treated as host: the builder
    /// has no bridge of its own).
    pub network: Option<String>,
    pub platform: Option<String>,
    /// Build secrets by id (`RUN --mount=type=secret`): mounted for the RUN steps that ask
    /// for them, never written to a layer, a cache record or a cache key.
    pub secrets: BTreeMap<String, Secret>,
    /// Stages (lower-case names) whose steps ignore the cache (`--no-cache-filter`).
    pub no_cache_stages: BTreeSet<String>,
    /// Named contexts that are images (`--build-context NAME=docker-image://REF`): `FROM
    /// NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` use REF instead.
    pub image_contexts: BTreeMap<String, String>,
    /// SSH agent sockets by id (`RUN --mount=type=ssh,id=ID`), bind-mounted into the step
    /// with `SSH_AUTH_SOCK` pointing at them.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `Output` events instead of `Stream` for containers' output (see [`Event::Output`]).
    pub output_events: bool,
}

/// A secret's bytes (never shown by `Debug`).
#[derive(Clone, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Pulls an image reference into the store (`--pull`, or a base image missing locally);
/// returns a status line for the client (`Status: Downloaded newer image for …`).
pub type Puller<'p> = dyn Fn(&str) -> Result<String, String> + Sync + 'p;

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
}

// ---------------------------------------------------------------------------------------------
// cache

#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    config: String,
    layers: Vec<LayerRecord>,
}

/// The build cache directory.
pub fn cache_dir(store: &ImageStore) -> PathBuf {
    store.root().join("buildcache")
}

fn cache_key(parent: &Digest, text: &str) -> Digest {
    Digest::of_bytes(format!("berth-build-cache-v1\n{parent}\n{text}").as_bytes())
}

/// Removes work directories (and their mounts) that builds of a daemon which is no longer
/// running left in the data root's `tmp` (a crash mid-step).
pub fn cleanup_stale(store: &ImageStore) {
    // Layer blobs a crashed build left pending in ingest/ (named `<pid>-…`).
    if let Ok(rd) = fs::read_dir(store.blobs().root().join("ingest")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let Ok(tmp) = store.tmp_dir() else { return };
    let Ok(rd) = fs::read_dir(&tmp) else { return };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("build-")
            .or_else(|| name.strip_prefix("from-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let prefix = dir.to_string_lossy().into_owned();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = berth_image::snapshot::unmount(Path::new(m));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// What `builder prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    #[serde(rename = "CachesDeleted")]
    pub caches_deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

/// Removes the build cache (step records and cache mounts) and the layers only it used.
pub fn prune(store: &ImageStore) -> Result<PruneReport> {
    let dir = cache_dir(store);
    let mut report = PruneReport::default();
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    let steps = dir.join("steps");
    if let Ok(rd) = fs::read_dir(&steps) {
        for e in rd.flatten() {
            let p = e.path();
            if let Ok(rec) = berth_image::fsutil::read_json::<CacheRecord>(&p) {
                for l in rec.layers {
                    sizes.insert(l.digest, l.size);
                }
            }
            if fs::remove_file(&p).is_ok() {
                if let Some(n) = p.file_stem() {
                    report.caches_deleted.push(n.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mounts = dir.join("mounts");
    if mounts.exists() {
        report.space_reclaimed += dir_size(&mounts);
        let _ = berth_image::snapshot::remove_tree(&mounts);
    }
    store.gc().map_err(internal)?;
    for (d, s) in sizes {
        if !store.blobs().exists(&d) {
            report.space_reclaimed += s;
        }
    }
    report.caches_deleted.sort();
    Ok(report)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    n += dir_size(&e.path());
                } else {
                    n += m.len();
                }
            }
        }
    }
    n
}

// ---------------------------------------------------------------------------------------------
// state

#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    id: Digest,
}

impl State {
    fn cc(&self) -> ContainerConfig {
        self.config.config.clone().unwrap_or_default()
    }
    fn env(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }
}

fn scratch_state() -> State {
    let p = Platform::host();
    let config = ImageConfig {
        created: None,
        author: None,
        architecture: p.architecture,
        os: p.os,
        os_version: None,
        variant: p.variant,
        config: Some(ContainerConfig::default()),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![],
        },
        history: vec![],
        extra: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&config).unwrap_or_default();
    State {
        config,
        layers: vec![],
        id: Digest::of_bytes(&bytes),
    }
}

/// Variables for expansion: the image env first, then the args in scope.
struct Scope<'a> {
    env: &'a [String],
    args: &'a BTreeMap<String, Option<String>>,
}

impl Vars for Scope<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = Vars::get(self.env, name) {
            return Some(v);
        }
        self.args.get(name).cloned().flatten()
    }
}

const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn platform_args() -> BTreeMap<String, String> {
    let p = Platform::host();
    let plat = match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    };
    let mut m = BTreeMap::new();
    for pre in ["BUILD", "TARGET"] {
        m.insert(format!("{pre}PLATFORM"), plat.clone());
        m.insert(format!("{pre}OS"), p.os.clone());
        m.insert(format!("{pre}ARCH"), p.architecture.clone());
        m.insert(
            format!("{pre}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

struct Stage {
    name: Option<String>,
    from: Instruction,
    insts: Vec<Instruction>,
}

/// Per-stage evaluation state.
struct StageCtx {
    state: State,
    args: BTreeMap<String, Option<String>>,
    cmd_set: bool,
    /// Content of the stage for COPY --from: its final state.
    index: usize,
    /// The stage's steps ignore the cache.
    no_cache: bool,
}

/// A closure run on a mounted root file system.
type FilesFn<'f> = Box<dyn FnOnce(&Path) -> Result<bool> + 'f>;

/// What a step does to the file system.
enum FsOp<'f> {
    None,
    /// A closure run on the mounted root file system; returns false when nothing changed
    /// and no layer is wanted (WORKDIR of an existing directory).
    Files(FilesFn<'f>),
    Run(RunSpec),
}

struct RunSpec {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    host_network: bool,
    mounts: Vec<RunMount>,
}

enum RunMount {
    Bind {
        src: PathBuf,
        dst: String,
        rw: bool,
    },
    /// A bind from another state's root file system (mounted for the step).
    StateBind {
        state: Box<State>,
        src: String,
        dst: String,
        rw: bool,
    },
    Tmpfs {
        dst: String,
        size: Option<u64>,
    },
    /// An SSH agent socket, with `SSH_AUTH_SOCK` set to `dst`.
    Ssh {
        socket: PathBuf,
        dst: String,
    },
    /// A build secret: a read-only file at `dst` and/or an environment variable.
    Secret {
        data: Secret,
        dst: Option<String>,
        env: Option<String>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Progress sink: returns false when the client went away.
pub type Sink<'s> = dyn FnMut(Event) -> bool + Send + 's;

struct Run<'a, 'b, 's> {
    b: &'b Builder<'a>,
    opts: &'b BuildOptions,
    df: &'b Dockerfile,
    sink: &'b mut Sink<'s>,
    step: usize,
    total: usize,
    used_args: BTreeSet<String>,
    stage_states: Vec<Option<State>>,
    stage_names: HashMap<String, usize>,
    /// `--cache-from` images (config and layers).
    cache_sources: &'b [CacheSource],
    /// Layer blobs written by this build's steps, published (made durable, at once) before
    /// the image is registered or the build ends.
    pending_blobs: Vec<berth_image::store::PendingBlob>,
    /// Cache records of the steps, written once their blobs are published (a record never
    /// names a blob that a power failure could lose).
    pending_records: Vec<(PathBuf, CacheRecord)>,
    /// SSH mounts made so far (their default targets are numbered).
    ssh_mounts: usize,
}

/// What a stage built on a thread of its own hands back.
#[derive(Default)]
struct Pending {
    used_args: BTreeSet<String>,
    blobs: Vec<berth_image::store::PendingBlob>,
    records: Vec<(PathBuf, CacheRecord)>,
}

/// A `--cache-from` image.
struct CacheSource {
    config: ImageConfig,
    layers: Vec<LayerRecord>,
}

/// The output of stages that run at once. The first unfinished stage in file order streams
/// live; the others are buffered and flushed, in order, as the ones before them finish: the
/// client sees the sequence a sequential build would print.
struct Out<'o, 's> {
    inner: Mutex<OutInner<'o, 's>>,
}

struct OutInner<'o, 's> {
    sink: &'o mut Sink<'s>,
    /// The position (in build order) streaming live.
    cur: usize,
    bufs: Vec<Vec<Event>>,
    done: Vec<bool>,
    /// The client went away.
    gone: bool,
    /// A stage failed: the others stop at their next message.
    failed: bool,
}

impl<'o, 's> Out<'o, 's> {
    fn new(sink: &'o mut Sink<'s>, n: usize) -> Self {
        Out {
            inner: Mutex::new(OutInner {
                sink,
                cur: 0,
                bufs: vec![Vec::new(); n],
                done: vec![false; n],
                gone: false,
                failed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutInner<'o, 's>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message of the stage at `pos`; false: stop (client gone or another stage failed).
    fn emit(&self, pos: usize, ev: Event) -> bool {
        let mut g = self.lock();
        if g.gone || g.failed {
            return false;
        }
        if pos == g.cur {
            if !(g.sink)(ev) {
                g.gone = true;
                return false;
            }
        } else {
            g.bufs[pos].push(ev);
        }
        true
    }

    fn finish(&self, pos: usize, ok: bool) {
        let mut g = self.lock();
        g.done[pos] = true;
        if !ok {
            g.failed = true;
        }
        let n = g.done.len();
        while g.cur < n && g.done[g.cur] {
            g.cur += 1;
            if g.cur < n {
                let cur = g.cur;
                let evs = std::mem::take(&mut g.bufs[cur]);
                for ev in evs {
                    if !g.gone && !(g.sink)(ev) {
                        g.gone = true;
                    }
                }
            }
        }
    }

    /// After a failure: everything still buffered, in order (the failing step's output).
    fn flush_all(&self) {
        let mut g = self.lock();
        for i in g.cur..g.bufs.len() {
            let evs = std::mem::take(&mut g.bufs[i]);
            for ev in evs {
                if !g.gone && !(g.sink)(ev) {
                    g.gone = true;
                }
            }
        }
    }
}

fn err_at(line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Step {
        line,
        message: message.into(),
        code: None,
    }
}

fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    let mut ok = false;
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        ok = f.read_exact(&mut b).is_ok();
    }
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return Digest::of_bytes(format!("{t}{}", std::process::id()).as_bytes())
            .hex()
            .to_string();
    }
    hex::encode(b)
}

impl<'a> Builder<'a> {
    /// Runs a build, reporting progress to `sink`.
    pub fn build(&self, opts: &BuildOptions, sink: &mut Sink<'_>) -> Result<Built> {
        if let Some(p) = opts.platform.as_deref().filter(|p| !p.is_empty()) {
            check_platform(p).map_err(BuildError::Invalid)?;
        }
        let df = parser::parse(&opts.dockerfile)?;
        for w in &df.warnings {
            sink(Event::Stream(format!("{w}\n")));
        }
        let cache_sources = self.cache_sources(opts, sink);
        let mut r = Run {
            b: self,
            opts,
            df: &df,
            sink,
            step: 0,
            total: 0,
            used_args: BTreeSet::new(),
            stage_states: Vec::new(),
            stage_names: HashMap::new(),
            cache_sources: &cache_sources,
            pending_blobs: Vec::new(),
            pending_records: Vec::new(),
            ssh_mounts: 0,
        };
        let res = r.run();
        if res.is_err() {
            // Keep the steps that did succeed in the cache.
            if let Err(e) = r.flush() {
                tracing::warn!("build cache: {e}");
            }
        }
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

fn check_platform(p: &str) -> Result<(), String> {
    let h = Platform::host();
    let parts: Vec<&str> = p.split('/').collect();
    let ok = match parts.as_slice() {
        [os] => *os == h.os,
        [os, arch] => *os == h.os && *arch == h.architecture,
        [os, arch, v] => *os == h.os && *arch == h.architecture && Some(*v) == h.variant.as_deref(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "platform {p:?} is not supported: berth builds for the host platform ({}/{}) only",
            h.os, h.architecture
        ))
    }
}

impl Run<'_, '_, '_> {
    fn say(&mut self, s: impl Into<String>) -> Result<()> {
        if (self.sink)(Event::Stream(s.into())) {
            Ok(())
        } else {
            Err(BuildError::Cancelled)
        }
    }

    fn run(&mut self) -> Result<Built> {
        let esc = self.df.escape;
        // Global ARGs, stages.
        let mut meta_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        let plat = platform_args();
        for inst in self.df.instructions.clone() {
            if inst.keyword == "FROM" {
                let words =
                    shell::split_raw(&inst.args, esc).map_err(|e| err_at(inst.line, e.0))?;
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        let n = n.to_ascii_lowercase();
                        if !n
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                            || !n.starts_with(|c: char| c.is_ascii_alphabetic())
                        {
                            return Err(err_at(inst.line, format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols")));
                        }
                        Some(n)
                    }
                    _ => {
                        return Err(err_at(
                            inst.line,
                            "FROM requires either one or three arguments",
                        ))
                    }
                };
                if let Some(n) = &name {
                    if self.stage_names.contains_key(n) {
                        return Err(err_at(inst.line, format!("duplicate stage name {n:?}")));
                    }
                    self.stage_names.insert(n.clone(), stages.len());
                }
                stages.push(Stage {
                    name,
                    from: inst,
                    insts: Vec::new(),
                });
            } else if let Some(s) = stages.last_mut() {
                s.insts.push(inst);
            } else if inst.keyword == "ARG" {
                for (k, v) in self.parse_arg(&inst, &meta_args)? {
                    let v = match self.opts.build_args.get(&k) {
                        Some(Some(b)) => Some(b.clone()),
                        _ => v.or_else(|| plat.get(&k).cloned()),
                    };
                    self.used_args.insert(k.clone());
                    meta_args.insert(k, v);
                }
            } else {
                return Err(err_at(
                    inst.line,
                    "no build stage in current context (the first instruction must be FROM, or ARG before FROM)",
                ));
            }
        }
        if stages.is_empty() {
            return Err(BuildError::Invalid(
                "the Dockerfile has no FROM instruction (file with no instructions)".into(),
            ));
        }
        let target = match self.opts.target.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => *self
                .stage_names
                .get(&t.to_ascii_lowercase())
                .ok_or_else(|| {
                    BuildError::Invalid(format!("failed to reach build target {t} in Dockerfile"))
                })?,
            None => stages.len() - 1,
        };
        // Which stages the target needs.
        let mut needed = vec![false; stages.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed[i] {
                continue;
            }
            needed[i] = true;
            for d in self.deps(&stages, i, &meta_args)? {
                todo.push(d);
            }
        }
        self.total = stages
            .iter()
            .enumerate()
            .filter(|(i, _)| needed[*i])
            .map(|(_, s)| s.insts.len() + 1)
            .sum();
        self.stage_states = vec![None; stages.len()];
        self.build_stages(&stages, &needed, target, &meta_args)?;
        let mut fin = self.stage_states[target]
            .clone()
            .ok_or_else(|| internal("target stage not built"))?;
        // Build args that nothing declared.
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                list.join(" ")
            ))?;
        }
        if !self.opts.labels.is_empty() {
            let mut cc = fin.cc();
            let labels = cc.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
            fin.config.config = Some(cc);
            let bytes = serde_json::to_vec(&fin.config).map_err(internal)?;
            fin.id = Digest::of_bytes(&bytes);
        }
        self.register(&fin)
    }

    /// Builds the needed stages, each as soon as the stages it uses are built: independent
    /// stages run at once, on threads of their own.
    fn build_stages(
        &mut self,
        stages: &[Stage],
        needed: &[bool],
        target: usize,
        meta: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let order: Vec<usize> = (0..stages.len())
            .filter(|&i| needed[i] && i <= target)
            .collect();
        let mut deps: Vec<Vec<usize>> = Vec::new();
        let mut first_step: Vec<usize> = Vec::new();
        let mut step = self.step;
        for &i in &order {
            deps.push(self.deps(stages, i, meta)?);
            first_step.push(step);
            step += stages[i].insts.len() + 1;
        }
        // Per stage: None while pending, then Some(Some(state)) or Some(None) (failed).
        let results: Mutex<Vec<Option<Option<State>>>> = Mutex::new(vec![None; stages.len()]);
        let cv = Condvar::new();
        let out = Out::new(&mut *self.sink, order.len());
        let (b, opts, df, total) = (self.b, self.opts, self.df, self.total);
        let (names, sources) = (&self.stage_names, self.cache_sources);
        let build_one = |pos: usize| -> (Result<State>, Pending) {
            let i = order[pos];
            let lock = || results.lock().unwrap_or_else(|p| p.into_inner());
            let mut g = lock();
            while deps[pos].iter().any(|&j| g[j].is_none()) {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            if deps[pos].iter().any(|&j| matches!(g[j], Some(None))) {
                drop(g);
                out.finish(pos, false);
                lock()[i] = Some(None);
                cv.notify_all();
                return (Err(BuildError::Cancelled), Pending::default());
            }
            let states: Vec<Option<State>> = g.iter().map(|r| r.clone().flatten()).collect();
            drop(g);
            let mut sink = |ev: Event| out.emit(pos, ev);
            let mut w = Run {
                b,
                opts,
                df,
                sink: &mut sink,
                step: first_step[pos],
                total,
                used_args: BTreeSet::new(),
                stage_states: states,
                stage_names: names.clone(),
                cache_sources: sources,
                pending_blobs: Vec::new(),
                pending_records: Vec::new(),
                ssh_mounts: 0,
            };
            let r = w.build_stage(i, &stages[i], meta);
            out.finish(pos, r.is_ok());
            lock()[i] = Some(r.as_ref().ok().cloned());
            cv.notify_all();
            (
                r,
                Pending {
                    used_args: w.used_args,
                    blobs: w.pending_blobs,
                    records: w.pending_records,
                },
            )
        };
        let outcomes: Vec<(Result<State>, Pending)> = if order.len() == 1 {
            vec![build_one(0)]
        } else {
            std::thread::scope(|sc| {
                let hs: Vec<_> = (0..order.len())
                    .map(|pos| {
                        let f = &build_one;
                        sc.spawn(move || f(pos))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (Err(internal("a build stage panicked")), Pending::default())
                        })
                    })
                    .collect()
            })
        };
        let mut first_err: Option<BuildError> = None;
        for (pos, (r, p)) in outcomes.into_iter().enumerate() {
            self.used_args.extend(p.used_args);
            self.pending_blobs.extend(p.blobs);
            self.pending_records.extend(p.records);
            match r {
                Ok(s) => self.stage_states[order[pos]] = Some(s),
                Err(BuildError::Cancelled) => {
                    first_err.get_or_insert(BuildError::Cancelled);
                }
                Err(e) => {
                    if matches!(first_err, None | Some(BuildError::Cancelled)) {
                        first_err = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            out.flush_all();
            return Err(e);
        }
        self.step = step;
        Ok(())
    }

    /// Publishes the layer blobs the steps wrote, then writes their cache records.
    fn flush(&mut self) -> Result<()> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let n = self.pending_blobs.len();
        store
            .blobs()
            .publish(std::mem::take(&mut self.pending_blobs))
            .map_err(|e| internal(format!("writing layers: {e}")))?;
        for (p, rec) in std::mem::take(&mut self.pending_records) {
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).map_err(internal)?;
            }
            write_record(&p, &rec).map_err(internal)?;
        }
        tracing::debug!("{n} layer blobs published in {:?}", t0.elapsed());
        Ok(())
    }

    /// Adds `bytes` to the blobs published with the layers.
    fn pending_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut w = self.b.store.blobs().writer().map_err(internal)?;
        w.write_all(bytes).map_err(internal)?;
        self.pending_blobs
            .push(w.finish_pending().map_err(internal)?);
        Ok(())
    }

    fn register(&mut self, fin: &State) -> Result<Built> {
        let store = self.b.store;
        let t0 = std::time::Instant::now();
        let config = serde_json::to_vec(&fin.config).map_err(internal)?;
        let id = Digest::of_bytes(&config);
        let descs: Vec<Descriptor> = fin
            .layers
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
                urls: None,
                annotations: None,
                platform: None,
                artifact_type: None,
            })
            .collect();
        store.unpack(&fin.layers).map_err(internal)?;
        // A rebuild that changes nothing: the image and its tags are in place already.
        let unchanged = store.get(&id).is_ok()
            && self.opts.tags.iter().all(|t| {
                store
                    .resolve(&t.to_string())
                    .is_ok_and(|r| r.image.id == id && r.reference.is_some())
            });
        if unchanged {
            self.flush()?;
            return self.finish_build(id);
        }
        let manifest = berth_image::image_store::synthesize_manifest(&config, &descs);
        // The config and manifest blobs become durable with the layers, in one round.
        self.pending_bytes(&config)?;
        self.pending_bytes(&manifest)?;
        self.flush()?;
        let reg = store
            .register(RegisterRequest {
                manifest,
                config,
                layers: fin
                    .layers
                    .iter()
                    .zip(&descs)
                    .map(|(l, d)| LayerInput {
                        descriptor: d.clone(),
                        diff_id: l.diff_id.clone(),
                        unpacked_size: Some(l.unpacked_size),
                    })
                    .collect(),
                tags: self.opts.tags.clone(),
                ..Default::default()
            })
            .map_err(internal)?;
        tracing::debug!("image registered in {:?}", t0.elapsed());
        self.finish_build(reg.id)
    }

    fn finish_build(&mut self, id: Digest) -> Result<Built> {
        if !(self.sink)(Event::Aux(json!({"ID": id.to_string()}))) {
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

    /// Stages a stage depends on.
    fn deps(
        &self,
        stages: &[Stage],
        i: usize,
        meta: &BTreeMap<String, Option<String>>,
    ) -> Result<Vec<usize>> {
        let esc = self.df.escape;
        let mut out = Vec::new();
        let scope = Scope {
            env: &[],
            args: meta,
        };
        let base = self.base_image_name(&stages[i].from, &scope)?;
        if let Some(j) = self.stage_ref(&base, i) {
            out.push(j);
        }
        for inst in &stages[i].insts {
            let mut refs: Vec<String> = Vec::new();
            if matches!(inst.keyword.as_str(), "COPY" | "ADD") {
                if let Some(f) = inst.flag("from") {
                    refs.push(shell::expand_word(f, esc, &scope).unwrap_or_else(|_| f.to_string()));
                }
            }
            if inst.keyword == "RUN" {
                for m in inst.flag_all("mount") {
                    for kv in m.split(',') {
                        if let Some(v) = kv.strip_prefix("from=") {
                            refs.push(v.to_string());
                        }
                    }
                }
            }
            for r in refs {
                if let Some(j) = self.stage_ref(&r, i) {
                    out.push(j);
                }
            }
        }
        Ok(out)
    }

    /// A reference to an earlier stage by name or index.
    fn stage_ref(&self, name: &str, current: usize) -> Option<usize> {
        if let Some(&j) = self.stage_names.get(&name.to_ascii_lowercase()) {
            if j < current {
                return Some(j);
            }
        }
        match name.parse::<usize>() {
            Ok(j) if j < current => Some(j),
            _ => None,
        }
    }

    fn base_image_name(&self, from: &Instruction, scope: &Scope<'_>) -> Result<String> {
        let words =
            shell::split_raw(&from.args, self.df.escape).map_err(|e| err_at(from.line, e.0))?;
        let raw = words.first().cloned().unwrap_or_default();
        let name =
            shell::expand_word(&raw, self.df.escape, scope).map_err(|e| err_at(from.line, e.0))?;
        if name.is_empty() {
            return Err(err_at(
                from.line,
                format!("base name ({raw}) should not be blank"),
            ));
        }
        Ok(name)
    }

    fn step_header(
        &mut self,
        inst: &Instruction,
        stage: &str,
        position: usize,
        stage_steps: usize,
    ) -> Result<()> {
        self.step += 1;
        self.step_event(StepEvent::Start {
            number: self.step,
            stage: stage.to_string(),
            position,
            stage_steps,
            text: inst.original.clone(),
            line: inst.line,
        })?;
        let text = format!("Step {}/{} : {}\n", self.step, self.total, inst.original);
        self.say(text)
    }

    fn step_event(&mut self, ev: StepEvent) -> Result<()> {
        if (self.sink)(Event::Step(ev)) {
            Ok(())
        } else {
            Err(BuildError::Cancelled)
        }
    }

    fn build_stage(
        &mut self,
        index: usize,
        st: &Stage,
        meta: &BTreeMap<String, Option<String>>,
    ) -> Result<State> {
        let from = &st.from;
        from.check_flags(&["platform"]).map_err(BuildError::Parse)?;
        let stage_name = st.name.clone().unwrap_or_else(|| format!("stage-{index}"));
        let stage_steps = st.insts.len() + 1;
        self.step_header(from, &stage_name, 1, stage_steps)?;
        let from_step = self.step;
        let scope = Scope {
            env: &[],
            args: meta,
        };
        if let Some(p) = from.flag("platform") {
            let p = shell::expand_word(p, self.df.escape, &scope)
                .map_err(|e| err_at(from.line, e.0))?;
            check_platform(&p).map_err(|e| err_at(from.line, e))?;
        }
        let name = self.base_image_name(from, &scope)?;
        let state = if let Some(j) = self.stage_ref(&name, index) {
            self.stage_states[j]
                .clone()
                .ok_or_else(|| internal(format!("stage {j} not built")))?
        } else if name == "scratch" {
            scratch_state()
        } else {
            self.image_state(&name, from.line, true)?
        };
        self.say(format!(" ---> {}\n", short(&state.id)))?;
        self.step_event(StepEvent::Done { number: from_step })?;
        let no_cache = st
            .name
            .as_ref()
            .is_some_and(|n| self.opts.no_cache_stages.contains(n));
        let mut ctx = StageCtx {
            state,
            args: BTreeMap::new(),
            cmd_set: false,
            index,
            no_cache,
        };
        let _ = &st.name;
        // ONBUILD triggers of the base image.
        let triggers: Vec<String> = ctx
            .state
            .config
            .config
            .as_ref()
            .and_then(|c| c.extra.get("OnBuild"))
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .unwrap_or_default();
        if !triggers.is_empty() {
            self.say(format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ))?;
            // Triggers run once: the image this stage makes does not carry them on.
            let mut cc = ctx.state.cc();
            cc.extra.remove("OnBuild");
            ctx.state.config.config = Some(cc);
            for t in triggers {
                let df = parser::parse(&t).map_err(|e| {
                    err_at(from.line, format!("ONBUILD trigger {t:?}: {}", e.message))
                })?;
                for mut inst in df.instructions {
                    inst.line = from.line;
                    self.say(format!(" ---> Running in trigger: {}\n", inst.original))?;
                    self.dispatch(&mut ctx, &inst, meta)?;
                }
            }
        }
        for (i, inst) in st.insts.iter().enumerate() {
            self.step_header(inst, &stage_name, i + 2, stage_steps)?;
            let number = self.step;
            self.dispatch(&mut ctx, inst, meta)?;
            self.step_event(StepEvent::Done { number })?;
        }
        Ok(ctx.state)
    }

    /// An image as a state: with `--pull` (for `FROM`) re-resolved against its registry
    /// first; pulled when missing locally, as Docker's builder does.
    fn image_state(&mut self, name: &str, line: usize, from: bool) -> Result<State> {
        let store = self.b.store;
        // A named context replaces the image of that name.
        let name = match self.opts.image_contexts.get(name) {
            Some(r) => r.clone(),
            None => name.to_string(),
        };
        let name = name.as_str();
        let pull = |r: &mut Self| -> Result<()> {
            let Some(puller) = r.b.puller else {
                return Err(err_at(
                    line,
                    format!("pull access denied for {name}: image not found locally and this builder cannot pull"),
                ));
            };
            r.say(format!("Pulling {name}\n"))?;
            let status = puller(name).map_err(|e| err_at(line, format!("pulling {name}: {e}")))?;
            r.say(format!("{status}\n"))
        };
        if self.opts.pull && from {
            pull(self)?;
        }
        let res = match store.resolve(name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() && !(self.opts.pull && from) => {
                pull(self)?;
                store.resolve(name).map_err(internal)?
            }
            Err(e) if e.is_not_found() => {
                return Err(err_at(
                    line,
                    format!("pull access denied for {name}: image not found"),
                ))
            }
            Err(e) => return Err(internal(e)),
        };
        let config = store.config(&res.image.id).map_err(internal)?;
        Ok(State {
            config,
            layers: res.image.layers.clone(),
            id: res.image.id.clone(),
        })
    }

    fn parse_arg(
        &self,
        inst: &Instruction,
        visible: &BTreeMap<String, Option<String>>,
    ) -> Result<Vec<(String, Option<String>)>> {
        let esc = self.df.escape;
        let words = shell::split_raw(&inst.args, esc).map_err(|e| err_at(inst.line, e.0))?;
        let scope = Scope {
            env: &[],
            args: visible,
        };
        let mut out = Vec::new();
        for w in words {
            let (k, v) = match w.split_once('=') {
                Some((k, v)) => (
                    k.to_string(),
                    Some(shell::expand_word(v, esc, &scope).map_err(|e| err_at(inst.line, e.0))?),
                ),
                None => (w.clone(), None),
            };
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err_at(inst.line, format!("invalid ARG name {k:?}")));
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// One instruction.
    fn dispatch(
        &mut self,
        ctx: &mut StageCtx,
        inst: &Instruction,
        meta: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let esc = self.df.escape;
        let line = inst.line;
        let env = ctx.state.env();
        let args_snapshot = ctx.args.clone();
        let scope = Scope {
            env: &env,
            args: &args_snapshot,
        };
        let ex = |s: &str| shell::expand_word(s, esc, &scope).map_err(|e| err_at(line, e.0));
        let exws = |s: &str| shell::expand_words(s, esc, &scope).map_err(|e| err_at(line, e.0));
        let kw = inst.keyword.as_str();
        if !matches!(kw, "RUN" | "COPY" | "ADD" | "HEALTHCHECK") {
            inst.check_flags(&[])?;
        }
        let mut cc = ctx.state.cc();
        let nop = |s: String| format!("/bin/sh -c #(nop) {s}");
        match kw {
            "ENV" | "LABEL" => {
                let pairs = kv_pairs(&inst.args, esc, kw == "ENV").map_err(|e| err_at(line, e))?;
                let mut shown = Vec::new();
                let mut env = cc.env.clone().unwrap_or_default();
                let mut labels = cc.labels.clone().unwrap_or_default();
                for (k, v) in pairs {
                    let k = ex(&k)?;
                    let v = ex(&v)?;
                    if k.is_empty() {
                        return Err(err_at(line, format!("{kw} names can not be blank")));
                    }
                    shown.push(format!("{k}={v}"));
                    if kw == "ENV" {
                        let kv = format!("{k}={v}");
                        match env
                            .iter_mut()
                            .find(|e| e.split('=').next() == Some(k.as_str()))
                        {
                            Some(e) => *e = kv,
                            None => env.push(kv),
                        }
                    } else {
                        labels.insert(k, v);
                    }
                }
                if kw == "ENV" {
                    cc.env = Some(env);
                } else {
                    cc.labels = Some(labels);
                }
                let text = nop(format!("{kw} {}", shown.join(" ")));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "MAINTAINER" => {
                let text = nop(format!("MAINTAINER {}", inst.args));
                let mut st = ctx.state.clone();
                st.config.author = Some(inst.args.clone());
                ctx.state = st;
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "ARG" => {
                let mut visible = meta.clone();
                visible.extend(ctx.args.clone());
                let defs = self.parse_arg(inst, &visible)?;
                let plat = platform_args();
                let mut shown = Vec::new();
                for (k, v) in defs {
                    let v = match self.opts.build_args.get(&k) {
                        Some(Some(b)) => Some(b.clone()),
                        _ => match v {
                            Some(v) => Some(v),
                            None => meta
                                .get(&k)
                                .cloned()
                                .flatten()
                                .or_else(|| plat.get(&k).cloned()),
                        },
                    };
                    shown.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    self.used_args.insert(k.clone());
                    ctx.args.insert(k, v);
                }
                let text = nop(format!("ARG {}", shown.join(" ")));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "CMD" | "ENTRYPOINT" => {
                let v = self.command_form(ctx, inst);
                let text = nop(format!(
                    "{kw} {}",
                    serde_json::to_string(&v).unwrap_or_default()
                ));
                if kw == "CMD" {
                    cc.cmd = Some(v);
                    ctx.cmd_set = true;
                } else {
                    cc.entrypoint = Some(v);
                    if !ctx.cmd_set {
                        cc.cmd = None;
                    }
                }
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "SHELL" => {
                let v = parser::json_array(&inst.args)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        err_at(line, "SHELL requires the arguments to be in JSON form")
                    })?;
                cc.extra.insert("Shell".into(), json!(v));
                let text = nop(format!(
                    "SHELL {}",
                    serde_json::to_string(&v).unwrap_or_default()
                ));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "EXPOSE" => {
                let mut ports = cc.exposed_ports.clone().unwrap_or_default();
                let mut shown = Vec::new();
                for w in exws(&inst.args)? {
                    for p in expand_port(&w).map_err(|e| err_at(line, e))? {
                        shown.push(p.clone());
                        ports.insert(p, json!({}));
                    }
                }
                cc.exposed_ports = Some(ports);
                let text = nop(format!("EXPOSE {}", shown.join(" ")));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "VOLUME" => {
                let vols = match parser::json_array(&inst.args) {
                    Some(v) => v.iter().map(|s| ex(s)).collect::<Result<Vec<_>>>()?,
                    None => exws(&inst.args)?,
                };
                let mut m = cc.volumes.clone().unwrap_or_default();
                for v in &vols {
                    if v.trim().is_empty() {
                        return Err(err_at(line, "VOLUME specified can not be an empty string"));
                    }
                    m.insert(v.clone(), json!({}));
                }
                cc.volumes = Some(m);
                let text = nop(format!(
                    "VOLUME {}",
                    serde_json::to_string(&vols).unwrap_or_default()
                ));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "USER" => {
                let u = ex(inst.args.trim())?;
                if u.is_empty() {
                    return Err(err_at(line, "USER requires an argument"));
                }
                cc.user = Some(u.clone());
                let text = nop(format!("USER {u}"));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "STOPSIGNAL" => {
                let s = ex(inst.args.trim())?;
                let ok = s.parse::<u32>().is_ok()
                    || s.to_ascii_uppercase()
                        .trim_start_matches("SIG")
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
                if !ok || s.is_empty() {
                    return Err(err_at(line, format!("Invalid signal: {s}")));
                }
                cc.stop_signal = Some(s.clone());
                let text = nop(format!("STOPSIGNAL {s}"));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "ONBUILD" => {
                let t = inst.args.trim();
                let first = t
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match first.as_str() {
                    "ONBUILD" => {
                        return Err(err_at(
                            line,
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                        ))
                    }
                    "FROM" | "MAINTAINER" => {
                        return Err(err_at(
                            line,
                            format!("{first} isn't allowed as an ONBUILD trigger"),
                        ))
                    }
                    _ => {}
                }
                parser::parse(t).map_err(|e| err_at(line, e.message))?;
                let trig = format!("{first}{}", &t[first.len()..]);
                let mut list: Vec<Value> = cc
                    .extra
                    .get("OnBuild")
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default();
                list.push(json!(trig));
                cc.extra.insert("OnBuild".into(), Value::Array(list));
                let text = nop(format!("ONBUILD {trig}"));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "HEALTHCHECK" => {
                inst.check_flags(&[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ])?;
                let words: Vec<&str> = inst.args.split_whitespace().collect();
                let typ = words
                    .first()
                    .map(|s| s.to_ascii_uppercase())
                    .unwrap_or_default();
                let hc = if typ == "NONE" {
                    if words.len() > 1 || !inst.flags.is_empty() {
                        return Err(err_at(line, "HEALTHCHECK NONE takes no arguments"));
                    }
                    json!({"Test": ["NONE"]})
                } else if typ == "CMD" {
                    let rest = inst.args.trim_start()[3..].trim_start();
                    let test: Vec<String> = match parser::json_array(rest) {
                        Some(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
                        None => vec!["CMD-SHELL".into(), rest.to_string()],
                    };
                    let mut h = json!({"Test": test});
                    for (flag, key) in [
                        ("interval", "Interval"),
                        ("timeout", "Timeout"),
                        ("start-period", "StartPeriod"),
                        ("start-interval", "StartInterval"),
                    ] {
                        if let Some(v) = inst.flag(flag) {
                            let ns = parse_duration(v).ok_or_else(|| {
                                err_at(line, format!("invalid duration for --{flag}: {v:?}"))
                            })?;
                            if ns != 0 && ns < 1_000_000 {
                                return Err(err_at(
                                    line,
                                    format!("--{flag} cannot be less than 1ms"),
                                ));
                            }
                            h[key] = json!(ns);
                        }
                    }
                    if let Some(v) = inst.flag("retries") {
                        let n: i64 = v
                            .parse()
                            .map_err(|_| err_at(line, format!("invalid --retries {v:?}")))?;
                        if n < 0 {
                            return Err(err_at(line, "--retries cannot be negative"));
                        }
                        h["Retries"] = json!(n);
                    }
                    h
                } else {
                    return Err(err_at(
                        line,
                        format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"),
                    ));
                };
                cc.extra.insert("Healthcheck".into(), hc.clone());
                let text = nop(format!("HEALTHCHECK {}", hc));
                self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
            }
            "WORKDIR" => {
                let w = ex(inst.args.trim())?;
                let cur = cc.working_dir.clone().unwrap_or_default();
                let dir = if w.starts_with('/') {
                    w.clone()
                } else {
                    format!(
                        "{}/{w}",
                        if cur.is_empty() {
                            ""
                        } else {
                            cur.trim_end_matches('/')
                        }
                    )
                };
                let dir = format!("/{}", dockerignore::clean(&dir)).replace("/.", "/");
                let dir = if dir == "/" || dir.is_empty() {
                    "/".to_string()
                } else {
                    dir.trim_end_matches('/').to_string()
                };
                cc.working_dir = Some(dir.clone());
                let owner = cc.user.clone().unwrap_or_default();
                let text = nop(format!("WORKDIR {dir}"));
                let d2 = dir.clone();
                let op = FsOp::Files(Box::new(move |root: &Path| {
                    let own = if owner.is_empty() {
                        None
                    } else {
                        Some(fsops::resolve_user(root, &owner).map_err(|e| err_at(line, e))?)
                    };
                    fsops::mkdir_all(root, &d2, own)
                        .map_err(|e| err_at(line, format!("WORKDIR {d2}: {e}")))
                }));
                self.commit(ctx, line, text.clone(), text, cc, op)
            }
            "RUN" => self.run_step(ctx, inst, cc, meta),
            "COPY" | "ADD" => self.copy_step(ctx, inst, cc),
            "FROM" => Err(err_at(line, "unexpected FROM")),
            other => Err(err_at(line, format!("unknown instruction: {other}"))),
        }
    }

    /// CMD/ENTRYPOINT/RUN argv: exec form as is, shell form through the stage's shell.
    fn command_form(&self, ctx: &StageCtx, inst: &Instruction) -> Vec<String> {
        match parser::json_array(&inst.args) {
            Some(v) => v,
            None => {
                let mut v = shell_of(&ctx.state);
                v.push(inst.args.clone());
                v
            }
        }
    }

    fn run_step(
        &mut self,
        ctx: &mut StageCtx,
        inst: &Instruction,
        cc: ContainerConfig,
        _meta: &BTreeMap<String, Option<String>>,
    ) -> Result<()> {
        let line = inst.line;
        inst.check_flags(&["mount", "network", "security"])?;
        if let Some(s) = inst.flag("security") {
            if s != "sandbox" {
                return Err(err_at(line, format!("RUN --security={s} is not supported")));
            }
        }
        let mut argv = match parser::json_array(&inst.args) {
            Some(v) if inst.heredocs.is_empty() => v,
            _ => {
                let mut v = shell_of(&ctx.state);
                let script = if inst.heredocs.len() == 1
                    && inst
                        .args
                        .trim()
                        .trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(|c| c == '"' || c == '\'')
                        == inst.heredocs[0].name
                {
                    inst.heredocs[0].content.clone()
                } else {
                    let mut s = inst.args.clone();
                    for h in &inst.heredocs {
                        s.push('\n');
                        s.push_str(&h.content);
                        s.push_str(&h.name);
                    }
                    s
                };
                v.push(script);
                v
            }
        };
        if argv.is_empty() {
            return Err(err_at(line, "RUN requires at least one argument"));
        }
        // Build args in scope: in the environment, the history and the cache key.
        let mut arg_env: Vec<String> = Vec::new();
        for (k, v) in &ctx.args {
            if let Some(v) = v {
                arg_env.push(format!("{k}={v}"));
            }
        }
        let mut env = ctx.state.env();
        let img_env = env.clone();
        for kv in &arg_env {
            let k = kv.split('=').next().unwrap_or("");
            if Vars::get(img_env.as_slice(), k).is_none() {
                env.push(kv.clone());
            }
        }
        for p in PROXY_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*p) {
                if !ctx.args.contains_key(*p) {
                    env.push(format!("{p}={v}"));
                }
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let mut created_by = if arg_env.is_empty() {
            argv.join(" ")
        } else {
            format!(
                "|{} {} {}",
                arg_env.len(),
                arg_env.join(" "),
                argv.join(" ")
            )
        };
        // Mounts and network.
        let net = inst
            .flag("network")
            .map(str::to_string)
            .or_else(|| self.opts.network.clone())
            .unwrap_or_else(|| "default".into());
        let host_network = match net.as_str() {
            "default" | "host" | "bridge" | "" => true,
            "none" => false,
            other => {
                return Err(err_at(
                    line,
                    format!("RUN --network={other} is not supported (host, none or default)"),
                ))
            }
        };
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        for spec in inst.flag_all("mount") {
            let (m, key) = self.parse_mount(ctx, spec, line)?;
            mount_keys.push(key);
            if let Some(m) = m {
                mounts.push(m);
            }
        }
        if !mount_keys.is_empty() || inst.flag("network").is_some() {
            created_by = format!(
                "RUN {}{}",
                inst.flags
                    .iter()
                    .map(|(k, v)| format!("--{k}={v} "))
                    .collect::<String>(),
                created_by
            );
        }
        let cache_text = format!(
            "RUN\n{}\nnet={}\nmounts={}\nuser={}\ncwd={}",
            serde_json::to_string(&(&argv, &arg_env)).unwrap_or_default(),
            host_network,
            mount_keys.join(";"),
            cc.user.clone().unwrap_or_default(),
            cc.working_dir.clone().unwrap_or_default(),
        );
        let spec = RunSpec {
            args: std::mem::take(&mut argv),
            env,
            cwd: cc
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: cc.user.clone().unwrap_or_default(),
            host_network,
            mounts,
        };
        self.commit(ctx, line, created_by, cache_text, cc, FsOp::Run(spec))
    }

    /// `--mount=type=…,…`: the mount and its cache-key text.
    fn parse_mount(
        &mut self,
        ctx: &StageCtx,
        spec: &str,
        line: usize,
    ) -> Result<(Option<RunMount>, String)> {
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let typ = kv.get("type").cloned().unwrap_or_else(|| "bind".into());
        let target = kv
            .get("target")
            .or_else(|| kv.get("dst"))
            .or_else(|| kv.get("destination"))
            .cloned();
        let rw = kv.get("rw").is_some_and(|v| v != "false")
            || kv.get("readwrite").is_some_and(|v| v != "false");
        let key = format!("{typ}:{}", serde_json::to_string(&kv).unwrap_or_default());
        match typ.as_str() {
            "cache" => {
                let dst =
                    target.ok_or_else(|| err_at(line, "--mount=type=cache needs a target"))?;
                let id = kv.get("id").cloned().unwrap_or_else(|| dst.clone());
                let dir = cache_dir(self.b.store)
                    .join("mounts")
                    .join(Digest::of_bytes(id.as_bytes()).hex());
                fs::create_dir_all(&dir).map_err(internal)?;
                let uid: u32 = kv.get("uid").and_then(|v| v.parse().ok()).unwrap_or(0);
                let gid: u32 = kv.get("gid").and_then(|v| v.parse().ok()).unwrap_or(0);
                let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
                if let Some(m) = kv.get("mode").and_then(|v| u32::from_str_radix(v, 8).ok()) {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(m));
                }
                // The cache's content is not part of the key (as Docker).
                Ok((
                    Some(RunMount::Bind {
                        src: dir,
                        dst,
                        rw: true,
                    }),
                    key,
                ))
            }
            "tmpfs" => {
                let dst =
                    target.ok_or_else(|| err_at(line, "--mount=type=tmpfs needs a target"))?;
                let size = kv.get("size").and_then(|s| parse_size(s));
                Ok((Some(RunMount::Tmpfs { dst, size }), key))
            }
            "bind" => {
                let dst = target.ok_or_else(|| err_at(line, "--mount=type=bind needs a target"))?;
                let src = kv
                    .get("source")
                    .or_else(|| kv.get("src"))
                    .cloned()
                    .unwrap_or_else(|| "/".into());
                if let Some(from) = kv.get("from") {
                    let state = match self.stage_ref(from, ctx.index) {
                        Some(j) => self.stage_states[j]
                            .clone()
                            .ok_or_else(|| internal("stage not built"))?,
                        None => self.image_state(from, line, false)?,
                    };
                    let key = format!("{key}@{}", state.id);
                    Ok((
                        Some(RunMount::StateBind {
                            state: Box::new(state),
                            src,
                            dst,
                            rw,
                        }),
                        key,
                    ))
                } else {
                    let rel = context_rel(&src).map_err(|e| err_at(line, e))?;
                    let host =
                        fsops::resolve_in_root(&self.opts.context, &rel, true).map_err(internal)?;
                    if !host.exists() {
                        return Err(err_at(
                            line,
                            format!(
                                "--mount=type=bind: source {src} not found in the build context"
                            ),
                        ));
                    }
                    // The bound content is part of the key.
                    let h = hash_paths(
                        &self.opts.context,
                        std::slice::from_ref(&host),
                        &IgnoreFile::default(),
                    )
                    .map_err(internal)?;
                    Ok((
                        Some(RunMount::Bind { src: host, dst, rw }),
                        format!("{key}#{h}"),
                    ))
                }
            }
            "secret" => {
                // BuildKit: the id defaults to the target's base name, the target to
                // /run/secrets/<id>.
                let id = kv
                    .get("id")
                    .cloned()
                    .or_else(|| {
                        target
                            .as_deref()
                            .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
                    })
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| err_at(line, "--mount=type=secret needs an id or a target"))?;
                let env = kv.get("env").cloned().filter(|e| !e.is_empty());
                let dst = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                let Some(secret) = self.opts.secrets.get(&id) else {
                    if kv.get("required").is_some_and(|v| v == "true") {
                        return Err(err_at(
                            line,
                            format!("secret {id} is required but was not provided (pass it with --secret id={id},src=FILE or id={id},env=VARIABLE)"),
                        ));
                    }
                    return Ok((None, key));
                };
                let num = |k: &str, d: u32, radix: u32| -> Result<u32> {
                    match kv.get(k) {
                        Some(v) => u32::from_str_radix(v, radix).map_err(|_| {
                            err_at(line, format!("--mount=type=secret: invalid {k} {v:?}"))
                        }),
                        None => Ok(d),
                    }
                };
                // The key names the secret, never its content.
                Ok((
                    Some(RunMount::Secret {
                        data: secret.clone(),
                        dst,
                        env,
                        mode: num("mode", 0o400, 8)?,
                        uid: num("uid", 0, 10)?,
                        gid: num("gid", 0, 10)?,
                    }),
                    key,
                ))
            }
            "ssh" => {
                let id = kv
                    .get("id")
                    .cloned()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "default".into());
                let dst = target.unwrap_or_else(|| {
                    let n = self.ssh_mounts;
                    format!("/run/buildkit/ssh_agent.{n}")
                });
                self.ssh_mounts += 1;
                let Some(socket) = self.opts.ssh.get(&id) else {
                    if kv.get("required").is_some_and(|v| v == "true") {
                        return Err(err_at(
                            line,
                            format!("no SSH key {id:?} forwarded from the client (pass it with --ssh {id}=…)"),
                        ));
                    }
                    return Ok((None, key));
                };
                Ok((
                    Some(RunMount::Ssh {
                        socket: socket.clone(),
                        dst,
                    }),
                    key,
                ))
            }
            other => Err(err_at(
                line,
                format!("--mount type={other} is not supported (bind, cache, tmpfs, secret, ssh)"),
            )),
        }
    }

    fn copy_step(
        &mut self,
        ctx: &mut StageCtx,
        inst: &Instruction,
        cc: ContainerConfig,
    ) -> Result<()> {
        let line = inst.line;
        let esc = self.df.escape;
        let is_add = inst.keyword == "ADD";
        if is_add {
            inst.check_flags(&[
                "chown",
                "chmod",
                "checksum",
                "link",
                "keep-git-dir",
                "exclude",
            ])?;
        } else {
            inst.check_flags(&["from", "chown", "chmod", "link", "parents", "exclude"])?;
        }
        let env = ctx.state.env();
        let args = ctx.args.clone();
        let scope = Scope {
            env: &env,
            args: &args,
        };
        let ex = |s: &str| shell::expand_word(s, esc, &scope).map_err(|e| err_at(line, e.0));
        let mut words: Vec<String> = match parser::json_array(&inst.args) {
            Some(v) => v.iter().map(|s| ex(s)).collect::<Result<_>>()?,
            None => shell::split_raw(&inst.args, esc)
                .map_err(|e| err_at(line, e.0))?
                .iter()
                .map(|s| ex(s))
                .collect::<Result<_>>()?,
        };
        if words.len() < 2 {
            return Err(err_at(line, format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", inst.keyword)));
        }
        let dest_raw = words.pop().unwrap_or_default();
        let workdir = cc.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_dir_syntax =
            dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest_raw)
        };
        let chown = inst.flag("chown").map(&ex).transpose()?;
        let chmod =
            match inst.flag("chmod") {
                Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                    err_at(line, format!("invalid --chmod {m:?}: octal modes only"))
                })?),
                None => None,
            };
        let parents = inst.flag("parents").is_some_and(|v| v != "false");
        let excludes = IgnoreFile::parse(&inst.flag_all("exclude").join("\n"));
        let checksum = inst.flag("checksum").map(str::to_string);
        // Heredoc sources: `COPY <<EOF /file`.
        let mut heredoc_files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut srcs: Vec<String> = Vec::new();
        for w in words {
            if let Some(h) = w.strip_prefix("<<").map(|n| {
                n.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            }) {
                if let Some(hd) = inst.heredocs.iter().find(|x| x.name == h) {
                    let content = if hd.expand {
                        expand_heredoc(&hd.content, esc, &scope)
                    } else {
                        hd.content.clone()
                    };
                    heredoc_files.push((hd.name.clone(), content.into_bytes()));
                    continue;
                }
            }
            srcs.push(w);
        }
        // Sources: the context, another stage, or an image.
        let from = inst.flag("from").map(&ex).transpose()?;
        let mut from_state: Option<State> = None;
        if let Some(f) = &from {
            from_state = Some(match self.stage_ref(f, ctx.index) {
                Some(j) => self.stage_states[j]
                    .clone()
                    .ok_or_else(|| internal("stage not built"))?,
                None => {
                    if self.stage_names.contains_key(&f.to_ascii_lowercase()) {
                        return Err(err_at(
                            line,
                            format!(
                                "COPY --from={f}: a stage cannot copy from itself or a later stage"
                            ),
                        ));
                    }
                    self.image_state(f, line, false)?
                }
            });
        }
        let mut urls: Vec<String> = Vec::new();
        let mut local: Vec<String> = Vec::new();
        for s in &srcs {
            if is_add && (s.starts_with("http://") || s.starts_with("https://")) {
                urls.push(s.clone());
            } else if is_add && (s.starts_with("git@") || s.ends_with(".git")) {
                return Err(err_at(
                    line,
                    format!("ADD {s}: git sources are not supported"),
                ));
            } else {
                local.push(s.clone());
            }
        }
        if checksum.is_some() && urls.is_empty() {
            return Err(err_at(
                line,
                "ADD --checksum is only supported for HTTP(S) sources",
            ));
        }
        let n_sources = srcs.len() + heredoc_files.len();
        let chown_s = chown.clone().unwrap_or_default();
        // Downloads happen before the cache check: their content is part of the key.
        let mut downloads: Vec<(String, Vec<u8>)> = Vec::new();
        for u in &urls {
            let body = crate::http::get(u).map_err(|e| err_at(line, format!("ADD {u}: {e}")))?;
            if let Some(c) = &checksum {
                let got = Digest::of_bytes(&body);
                if got.to_string() != *c {
                    return Err(err_at(
                        line,
                        format!("ADD {u}: checksum mismatch: expected {c}, got {got}"),
                    ));
                }
            }
            let name = u
                .split(['?', '#'])
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("download")
                .to_string();
            downloads.push((name, body));
        }
        let copy_ctx = CopySources {
            local,
            from_state: from_state.clone(),
            heredocs: heredoc_files,
            downloads,
        };
        // Cache text: the sources' content hash, dest and flags.
        let mut src_hash = String::new();
        if let Some(s) = &from_state {
            src_hash.push_str(&format!(
                "from:{}:{}",
                s.id,
                serde_json::to_string(&copy_ctx.local).unwrap_or_default()
            ));
        } else if !copy_ctx.local.is_empty() {
            let paths = self.context_sources(&copy_ctx.local, line, &excludes)?;
            let hosts: Vec<PathBuf> = paths.iter().map(|(h, _)| h.clone()).collect();
            let h = hash_paths(&self.opts.context, &hosts, &excludes).map_err(internal)?;
            let rels: Vec<&String> = paths.iter().map(|(_, r)| r).collect();
            src_hash.push_str(&format!(
                "ctx:{h}:{}",
                serde_json::to_string(&rels).unwrap_or_default()
            ));
        }
        for (n, d) in copy_ctx.heredocs.iter().chain(&copy_ctx.downloads) {
            src_hash.push_str(&format!(";{n}:{}", Digest::of_bytes(d)));
        }
        let kind = if n_sources > 1 { "multi" } else { "file" };
        let short_hash = Digest::of_bytes(src_hash.as_bytes());
        let created_by = format!(
            "/bin/sh -c #(nop) {} {}{kind}:{} in {dest_raw} ",
            inst.keyword,
            inst.flags
                .iter()
                .filter(|(k, _)| k != "from")
                .map(|(k, v)| format!("--{k}={v} "))
                .collect::<String>(),
            short_hash.hex()
        );
        let cache_text = format!(
            "{}\n{src_hash}\ndest={dest}\nchown={chown_s}\nchmod={chmod:?}\nparents={parents}\nexclude={:?}\nworkdir={workdir}",
            inst.keyword, excludes.patterns
        );
        let context = self.opts.context.clone();
        let keyword = inst.keyword.clone();
        let store = self.b.store;
        let op = FsOp::Files(Box::new(move |root: &Path| {
            do_copy(
                root,
                &context,
                &copy_ctx,
                &CopyPlan {
                    store,
                    keyword: &keyword,
                    is_add,
                    dest: &dest,
                    dest_dir_syntax,
                    n_sources,
                    chown: chown.as_deref(),
                    chmod,
                    parents,
                    excludes: &excludes,
                    line,
                },
            )?;
            Ok(true)
        }));
        self.commit(ctx, line, created_by, cache_text, cc, op)
    }

    /// Context sources after globbing: (host path, context-relative path).
    fn context_sources(
        &self,
        srcs: &[String],
        line: usize,
        excl: &IgnoreFile,
    ) -> Result<Vec<(PathBuf, String)>> {
        let mut out = Vec::new();
        for s in srcs {
            for rel in glob_context(&self.opts.context, s, line)? {
                if excluded(excl, &rel) {
                    continue;
                }
                let host =
                    fsops::resolve_in_root(&self.opts.context, &rel, true).map_err(internal)?;
                out.push((host, rel));
            }
        }
        Ok(out)
    }

    /// Runs one step (or reuses it from the cache) and moves the stage to its result.
    fn commit(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        created_by: String,
        cache_text: String,
        cc: ContainerConfig,
        op: FsOp<'_>,
    ) -> Result<()> {
        let store = self.b.store;
        let key = cache_key(&ctx.state.id, &cache_text);
        let rec_path = cache_dir(store)
            .join("steps")
            .join(format!("{}.json", key.hex()));
        if !self.opts.no_cache && !ctx.no_cache {
            let hit = load_cached(store, &rec_path).or_else(|| {
                let st = from_cache_sources(self.cache_sources, &ctx.state, &created_by, &cc)?;
                // Recorded locally too: the next build finds it without --cache-from.
                let rec = CacheRecord {
                    config: String::from_utf8(serde_json::to_vec(&st.config).ok()?).ok()?,
                    layers: st.layers.clone(),
                };
                let _ = fs::create_dir_all(rec_path.parent()?);
                let _ = write_record(&rec_path, &rec);
                Some(st)
            });
            if let Some(st) = hit {
                self.step_event(StepEvent::Cached { number: self.step })?;
                self.say(" ---> Using cache\n")?;
                self.say(format!(" ---> {}\n", short(&st.id)))?;
                ctx.state = st;
                return Ok(());
            }
        }
        let layer = match op {
            FsOp::None => None,
            FsOp::Files(f) => self.in_container(ctx, line, None, f)?,
            FsOp::Run(spec) => self.in_container(ctx, line, Some(spec), Box::new(|_| Ok(true)))?,
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
        let bytes = serde_json::to_vec(&config).map_err(internal)?;
        let id = Digest::of_bytes(&bytes);
        let rec = CacheRecord {
            config: String::from_utf8(bytes).map_err(internal)?,
            layers: layers.clone(),
        };
        self.pending_records.push((rec_path, rec));
        self.say(format!(" ---> {}\n", short(&id)))?;
        ctx.state = State { config, layers, id };
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
        let cid = random_id();
        let work = store.tmp_dir().map_err(internal)?.join(format!(
            "build-{}-{}",
            std::process::id(),
            &cid[..12]
        ));
        let mut guard = ContainerGuard {
            id: cid.clone(),
            work: work.clone(),
            mounts: Vec::new(),
            runtime: None,
            ran: false,
        };
        let rootfs = mount_layers(store, &ctx.state.layers, &work, &mut guard)?;
        let t_mounted = t0.elapsed();
        let want_layer = match spec {
            Some(spec) => {
                self.say(format!(" ---> Running in {}\n", &cid[..12]))?;
                let code = self.run_container(&mut guard, &rootfs, &cid, spec)?;
                if code != 0 {
                    return Err(BuildError::Step {
                        line,
                        message: format!(
                            "The command '{}' returned a non-zero code: {code}",
                            self.cmd_text(ctx, line)
                        ),
                        code: Some(code),
                    });
                }
                true
            }
            None => files(&rootfs)?,
        };
        let t_ran = t0.elapsed();
        guard.unmount_all();
        let upper = work.join("upper");
        if !want_layer && dir_is_empty(&upper) {
            return Ok(None);
        }
        let (written, pending) = diff::write_layer_pending(store.blobs(), &upper)
            .map_err(|e| internal(format!("writing layer: {e}")))?;
        self.pending_blobs.push(pending);
        let t_written = t0.elapsed();
        let snap = store.snapshotter().map_err(internal)?;
        let parent = chain_top(&ctx.state.layers);
        let committed = snap
            .commit_upper_dir(
                parent.as_ref(),
                &written.record.diff_id,
                written.tar_size,
                &upper,
            )
            .map_err(internal)?;
        if committed.is_none() {
            return Err(internal("snapshotter cannot commit build changes"));
        }
        tracing::debug!(
            "step on line {line}: mounted {t_mounted:?}, ran {t_ran:?}, layer written {t_written:?}, committed {:?}",
            t0.elapsed()
        );
        if spec_was_run(&guard) {
            self.say(format!(
                " ---> Removed intermediate container {}\n",
                &cid[..12]
            ))?;
        }
        Ok(Some(written.record))
    }

    fn cmd_text(&self, _ctx: &StageCtx, line: usize) -> String {
        self.df
            .instructions
            .iter()
            .find(|i| i.line == line)
            .map(|i| match parser::json_array(&i.args) {
                Some(v) => v.join(" "),
                None => format!("/bin/sh -c {}", i.args),
            })
            .unwrap_or_default()
    }

    fn run_container(
        &mut self,
        guard: &mut ContainerGuard,
        rootfs: &Path,
        cid: &str,
        spec: RunSpec,
    ) -> Result<i32> {
        let bundle = guard.work.clone();
        let (uid, gid) = fsops::resolve_user(rootfs, &spec.user).map_err(BuildError::Invalid)?;
        // Mount points the runtime would create in the image: remember which, to remove
        // them afterwards (they are not part of the step's changes).
        let mut dests: Vec<String> = vec!["/proc".into(), "/dev".into(), "/sys".into()];
        // After Docker's defaults (`berth_runtime::profiles::default_spec`).
        let mut mounts: Vec<Value> = Vec::new();
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            let inside = fsops::resolve_in_root(rootfs, f, true).map_err(internal)?;
            if inside.is_file() && Path::new(f).is_file() {
                let copy = bundle.join(f.trim_start_matches("/etc/"));
                fs::copy(f, &copy).map_err(internal)?;
                mounts.push(json!({"destination": f, "type": "bind", "source": copy, "options": ["rbind", "ro", "rprivate"]}));
            }
        }
        let mut env_extra: Vec<String> = Vec::new();
        for (n, m) in spec.mounts.iter().enumerate() {
            match m {
                RunMount::Bind { src, dst, rw } => {
                    dests.push(dst.clone());
                    let mut o = vec!["rbind", "rprivate"];
                    if !rw {
                        o.push("ro");
                    }
                    mounts.push(
                        json!({"destination": dst, "type": "bind", "source": src, "options": o}),
                    );
                }
                RunMount::StateBind {
                    state,
                    src,
                    dst,
                    rw,
                } => {
                    let mw = bundle.join(format!("m{n}"));
                    let mp = mount_layers(self.b.store, &state.layers, &mw, guard)?;
                    let host = fsops::resolve_in_root(&mp, src, true).map_err(internal)?;
                    dests.push(dst.clone());
                    let mut o = vec!["rbind", "rprivate"];
                    if !rw {
                        o.push("ro");
                    }
                    mounts.push(
                        json!({"destination": dst, "type": "bind", "source": host, "options": o}),
                    );
                }
                RunMount::Secret {
                    data,
                    dst,
                    env,
                    mode,
                    uid,
                    gid,
                } => {
                    if let Some(e) = env {
                        let v = String::from_utf8_lossy(&data.0).into_owned();
                        env_extra.push(format!("{e}={v}"));
                    }
                    if let Some(dst) = dst {
                        // Beside the bundle, outside the root file system: never in a layer.
                        let f = bundle.join(format!("secret-{n}"));
                        write_secret(&f, &data.0, *mode, *uid, *gid).map_err(internal)?;
                        dests.push(dst.clone());
                        mounts.push(json!({"destination": dst, "type": "bind", "source": f, "options": ["bind", "ro", "rprivate", "nosuid", "nodev", "noexec"]}));
                    }
                }
                RunMount::Ssh { socket, dst } => {
                    dests.push(dst.clone());
                    env_extra.push(format!("SSH_AUTH_SOCK={dst}"));
                    mounts.push(json!({"destination": dst, "type": "bind", "source": socket, "options": ["bind", "rprivate", "nosuid", "nodev", "noexec"]}));
                }
                RunMount::Tmpfs { dst, size } => {
                    dests.push(dst.clone());
                    let mut o = vec!["nosuid".to_string(), "nodev".to_string()];
                    if let Some(s) = size {
                        o.push(format!("size={s}"));
                    }
                    mounts.push(json!({"destination": dst, "type": "tmpfs", "source": "tmpfs", "options": o}));
                }
            }
        }
        let mut created: Vec<PathBuf> = Vec::new();
        for d in &dests {
            if let Some(c) = first_missing(rootfs, d) {
                created.push(c);
            }
        }
        let env: Vec<String> = spec.env.iter().chain(&env_extra).cloned().collect();
        let config = berth_runtime::profiles::default_spec(&berth_runtime::profiles::DefaultSpec {
            args: &spec.args,
            env: &env,
            cwd: &spec.cwd,
            uid,
            gid,
            additional_gids: &[],
            tty: false,
            hostname: &cid[..12],
            host_network: spec.host_network,
            cgroups_path: format!(
                "{}/build-{}",
                self.b.cgroup_parent.trim_end_matches('/'),
                &cid[..12]
            ),
            cgroup_mount: false,
            mounts,
        });
        fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&config).map_err(internal)?,
        )
        .map_err(internal)?;
        let (reader, writer) = std::os::unix::net::UnixStream::pair().map_err(internal)?;
        let w2 = writer.try_clone().map_err(internal)?;
        let writer = std::os::fd::OwnedFd::from(writer);
        let w2 = std::os::fd::OwnedFd::from(w2);
        let mut cmd = Command::new(&self.b.runtime);
        cmd.arg("--root")
            .arg(&self.b.runtime_root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(cid)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(w2);
        let mut child = cmd
            .spawn()
            .map_err(|e| internal(format!("starting {}: {e}", self.b.runtime.display())))?;
        drop(cmd);
        guard.runtime = Some((self.b.runtime.clone(), self.b.runtime_root.clone()));
        let mut r = io::BufReader::new(reader);
        let mut buf = Vec::new();
        let mut cancelled = false;
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let ev = if self.opts.output_events {
                        Event::Output(text)
                    } else {
                        Event::Stream(text)
                    };
                    if !(self.sink)(ev) {
                        cancelled = true;
                        let _ = Command::new(&self.b.runtime)
                            .arg("--root")
                            .arg(&self.b.runtime_root)
                            .args(["kill", cid, "KILL"])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
                Err(_) => break,
            }
        }
        let status = child.wait().map_err(internal)?;
        guard.ran = true;
        // `run` deletes the container when it exits: no `delete` process needed then.
        if !self.b.runtime_root.join(cid).exists() {
            guard.runtime = None;
        }
        if cancelled {
            return Err(BuildError::Cancelled);
        }
        // Remove the mount points the runtime created, deepest first, if still empty.
        for (d, top) in dests.iter().zip(
            dests
                .iter()
                .map(|d| first_missing_recorded(&created, rootfs, d)),
        ) {
            if let Some(top) = top {
                let mut p = rootfs.join(d.trim_start_matches('/'));
                loop {
                    let _ = fs::remove_dir(&p).or_else(|_| remove_empty_file(&p));
                    if p == top || !p.pop() || !p.starts_with(rootfs) {
                        break;
                    }
                }
            }
        }
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

/// Writes a secret file (created with its final mode: never readable by others).
fn write_secret(p: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
}

fn spec_was_run(g: &ContainerGuard) -> bool {
    g.ran
}

fn remove_empty_file(p: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.is_file() && m.len() == 0 {
        fs::remove_file(p)
    } else {
        Err(io::Error::other("not empty"))
    }
}

/// The first component of `dst` (inside `root`) that does not exist.
fn first_missing(root: &Path, dst: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for c in dst.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        if fs::symlink_metadata(&p).is_err() {
            return Some(p);
        }
    }
    None
}

fn first_missing_recorded(created: &[PathBuf], root: &Path, dst: &str) -> Option<PathBuf> {
    let full = root.join(dst.trim_start_matches('/'));
    created.iter().find(|c| full.starts_with(c)).cloned()
}

fn dir_is_empty(p: &Path) -> bool {
    fs::read_dir(p)
        .map(|mut r| r.next().is_none())
        .unwrap_or(true)
}

/// Cleans up a build container whatever happens: the runtime's container, the mounts
/// (deepest first), the work directory.
struct ContainerGuard {
    id: String,
    work: PathBuf,
    mounts: Vec<PathBuf>,
    runtime: Option<(PathBuf, PathBuf)>,
    /// A RUN container ran (and exited).
    ran: bool,
}

impl ContainerGuard {
    fn unmount_all(&mut self) {
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = berth_image::snapshot::unmount(&m) {
                tracing::warn!("unmounting {}: {e}", m.display());
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some((rt, root)) = &self.runtime {
            // `run` deletes on exit; this covers a failure half-way.
            let _ = Command::new(rt)
                .arg("--root")
                .arg(root)
                .args(["delete", "--force", &self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.unmount_all();
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// The chain ID of a layer list's top.
fn chain_top(layers: &[LayerRecord]) -> Option<Digest> {
    let mut parent: Option<Digest> = None;
    for l in layers {
        parent = Some(berth_image::snapshot::child_chain_id(
            parent.as_ref(),
            &l.diff_id,
        ));
    }
    parent
}

/// Mounts `layers` (unpacked into snapshots when needed) with a fresh upper directory at
/// `<work>/rootfs` (`<work>/upper`, `<work>/work` beside it), recording the mount in `guard`.
/// Build mounts are not snapshotter containers: nothing is written to the snapshotter's
/// metadata (no fsyncs) for a step that lives a few milliseconds.
fn mount_layers(
    store: &ImageStore,
    layers: &[LayerRecord],
    work: &Path,
    guard: &mut ContainerGuard,
) -> Result<PathBuf> {
    let snap = store.snapshotter().map_err(internal)?;
    let top = store.unpack(layers).map_err(internal)?;
    let rootfs = work.join("rootfs");
    let upper = work.join("upper");
    let wk = work.join("work");
    for d in [&rootfs, &upper, &wk] {
        fs::create_dir_all(d).map_err(internal)?;
    }
    let lowers = match &top {
        Some(t) => snap
            .overlay_lowers(t)
            .ok_or_else(|| {
                internal("the builder needs the overlay snapshotter (the copy driver cannot record changes)")
            })?
            .map_err(internal)?,
        None => {
            let empty = work.join("lower-empty");
            fs::create_dir_all(&empty).map_err(internal)?;
            vec![empty]
        }
    };
    // Volatile: unmounting does not sync the host file system; the upper directory is
    // archived right after, and a crashed build's work directory is thrown away.
    berth_image::snapshot::mount_overlay_volatile(&lowers, (&upper, &wk), &rootfs)
        .map_err(internal)?;
    guard.mounts.push(rootfs.clone());
    Ok(rootfs)
}

/// Writes a cache record: temp file + rename, without fsync. A record lost or torn by a
/// power failure reads as a miss (it must parse, and its blobs must exist), never as a hit.
fn write_record(p: &Path, rec: &CacheRecord) -> io::Result<()> {
    let tmp = p.with_extension(format!("tmp-{}", &random_id()[..8]));
    fs::write(&tmp, serde_json::to_vec(rec).map_err(io::Error::other)?)?;
    fs::rename(&tmp, p).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// A step taken from a `--cache-from` image, as Docker's classic builder does: an image
/// whose history and layers start with the parent state's, and whose next history entry
/// was made by the same instruction (`created_by`), gives that entry (and its layer) on top
/// of the parent with the config the step computes.
fn from_cache_sources(
    sources: &[CacheSource],
    parent: &State,
    created_by: &str,
    cc: &ContainerConfig,
) -> Option<State> {
    let ph = &parent.config.history;
    let pd = &parent.config.rootfs.diff_ids;
    for src in sources {
        let h = &src.config.history;
        let d = &src.config.rootfs.diff_ids;
        if h.len() <= ph.len() || d.len() < pd.len() || h[..ph.len()] != ph[..] {
            continue;
        }
        if d[..pd.len()] != pd[..] || src.layers.len() != d.len() {
            continue;
        }
        let next = &h[ph.len()];
        if next.created_by.as_deref() != Some(created_by) {
            continue;
        }
        let mut config = parent.config.clone();
        let mut layers = parent.layers.clone();
        if !next.empty_layer {
            let Some(l) = src.layers.get(pd.len()) else {
                continue;
            };
            if l.diff_id != d[pd.len()] {
                continue;
            }
            config.rootfs.diff_ids.push(l.diff_id.clone());
            layers.push(l.clone());
        }
        config.created = next.created.clone();
        config.config = Some(cc.clone());
        config.history.push(next.clone());
        let bytes = serde_json::to_vec(&config).ok()?;
        return Some(State {
            id: Digest::of_bytes(&bytes),
            config,
            layers,
        });
    }
    None
}

fn load_cached(store: &ImageStore, p: &Path) -> Option<State> {
    let rec: CacheRecord = berth_image::fsutil::read_json(p).ok()?;
    let config = ImageConfig::parse(rec.config.as_bytes()).ok()?;
    if config.rootfs.diff_ids.len() != rec.layers.len() {
        return None;
    }
    for (l, d) in rec.layers.iter().zip(&config.rootfs.diff_ids) {
        if &l.diff_id != d || !store.blobs().exists(&l.digest) {
            return None;
        }
    }
    Some(State {
        id: Digest::of_bytes(rec.config.as_bytes()),
        config,
        layers: rec.layers,
    })
}

fn shell_of(s: &State) -> Vec<String> {
    s.config
        .config
        .as_ref()
        .and_then(|c| c.extra.get("Shell"))
        .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// `ENV`/`LABEL` pairs: `k=v …` or the legacy `k v`.
fn kv_pairs(args: &str, esc: char, legacy_ok: bool) -> Result<Vec<(String, String)>, String> {
    let words = shell::split_raw(args, esc).map_err(|e| e.0)?;
    if words.is_empty() {
        return Err("requires at least one argument".into());
    }
    if !words[0].contains('=') {
        if !legacy_ok && words.len() < 2 {
            return Err(format!("LABEL {}: a key=value pair is required", words[0]));
        }
        let (k, rest) = args.trim().split_at(
            args.trim()
                .find(char::is_whitespace)
                .unwrap_or(args.trim().len()),
        );
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(format!("{k} must have two arguments"));
        }
        return Ok(vec![(k.to_string(), rest.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value")
        })?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn expand_port(w: &str) -> Result<Vec<String>, String> {
    let (p, proto) = match w.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let (a, b) = match p.split_once('-') {
        Some((a, b)) => (a, b),
        None => (p, p),
    };
    let a: u16 = a
        .parse()
        .map_err(|_| format!("invalid containerPort: {p}"))?;
    let b: u16 = b
        .parse()
        .map_err(|_| format!("invalid containerPort: {p}"))?;
    if b < a {
        return Err(format!("invalid port range: {p}"));
    }
    Ok((a..=b).map(|x| format!("{x}/{proto}")).collect())
}

/// Go durations (`1m30s`, `500ms`, `1.5h`) in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let n: f64 = s[st..i].parse().ok()?;
        let us = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let mult = match &s[us..i] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
    }
    Some(total as i64)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (n, m) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    n.parse::<u64>().ok().map(|x| x * m)
}

/// Heredoc bodies: `$VAR` expansion only (quotes are content).
fn expand_heredoc(s: &str, esc: char, vars: &dyn Vars) -> String {
    let mut out = String::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == esc {
            if let Some(&(_, n)) = it.peek() {
                if n == '$' || n == esc {
                    out.push(n);
                    it.next();
                    continue;
                }
            }
            out.push(c);
        } else if c == '$' {
            // Find the extent of the reference and expand it alone.
            let rest = &s[i..];
            let len = if rest[1..].starts_with('{') {
                rest.find('}').map(|p| p + 1).unwrap_or(1)
            } else {
                1 + rest[1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - 1)
            };
            let piece = &rest[..len];
            match shell::expand_word(piece, esc, vars) {
                Ok(v) if len > 1 => out.push_str(&v),
                _ => out.push_str(piece),
            }
            for _ in 1..piece.chars().count() {
                it.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A source path relative to the context (refusing `..` escapes).
fn context_rel(s: &str) -> Result<String, String> {
    let c = dockerignore::clean(s);
    if c == ".." || c.starts_with("../") {
        return Err(format!("forbidden path outside the build context: {s} ()"));
    }
    Ok(if c == "." { String::new() } else { c })
}

/// Expands a source (with wildcards) against the context: context-relative paths.
fn glob_context(ctx: &Path, s: &str, line: usize) -> Result<Vec<String>> {
    let rel = context_rel(s).map_err(|e| err_at(line, e))?;
    if !rel.contains(['*', '?', '[']) {
        let host = fsops::resolve_in_root(ctx, &rel, true).map_err(internal)?;
        if fs::symlink_metadata(&host).is_err() {
            return Err(err_at(line, format!("COPY failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist")));
        }
        return Ok(vec![rel]);
    }
    let mut cur: Vec<String> = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for base in &cur {
            let dir = fsops::resolve_in_root(ctx, base, true).map_err(internal)?;
            if !comp.contains(['*', '?', '[']) {
                let p = if base.is_empty() {
                    comp.to_string()
                } else {
                    format!("{base}/{comp}")
                };
                if fs::symlink_metadata(dir.join(comp)).is_ok() {
                    next.push(p);
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                if dockerignore::path_match(comp, &n) {
                    next.push(if base.is_empty() {
                        n
                    } else {
                        format!("{base}/{n}")
                    });
                }
            }
        }
        cur = next;
    }
    if cur.is_empty() {
        return Err(err_at(
            line,
            format!("COPY failed: no source files were specified (nothing matches {s})"),
        ));
    }
    Ok(cur)
}

/// Hash of files' paths, types, modes, sizes and contents (not owners or times).
fn hash_paths(ctx: &Path, paths: &[PathBuf], excl: &IgnoreFile) -> io::Result<Digest> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    fn walk(h: &mut sha2::Sha256, p: &Path, rel: &str, excl: &IgnoreFile) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !rel.is_empty() && excluded(excl, rel) {
            return Ok(());
        }
        let m = fs::symlink_metadata(p)?;
        h.update(format!("{rel}\0{:o}\0{}\0", m.mode(), m.len()).as_bytes());
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(p)?.collect::<io::Result<Vec<_>>>()?;
            names.sort_by_key(|e| e.file_name());
            for e in names {
                let n = e.file_name().to_string_lossy().into_owned();
                let r = if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                };
                walk(h, &e.path(), &r, excl)?;
            }
        } else if m.file_type().is_symlink() {
            h.update(fs::read_link(p)?.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            let mut f = fs::File::open(p)?;
            io::copy(&mut f, h)?;
        } else {
            h.update(format!("dev{}", m.rdev()).as_bytes());
        }
        h.update(b"\n");
        Ok(())
    }
    for p in paths {
        let rel = p
            .strip_prefix(ctx)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        h.update(format!("src:{rel}\n").as_bytes());
        walk(&mut h, p, "", excl)?;
    }
    Ok(Digest::from_sha256_bytes(h.finalize().into()))
}

struct CopySources {
    local: Vec<String>,
    from_state: Option<State>,
    heredocs: Vec<(String, Vec<u8>)>,
    downloads: Vec<(String, Vec<u8>)>,
}

struct CopyPlan<'p> {
    store: &'p ImageStore,
    keyword: &'p str,
    is_add: bool,
    dest: &'p str,
    dest_dir_syntax: bool,
    n_sources: usize,
    chown: Option<&'p str>,
    chmod: Option<u32>,
    parents: bool,
    excludes: &'p IgnoreFile,
    line: usize,
}

fn do_copy(root: &Path, context: &Path, src: &CopySources, p: &CopyPlan<'_>) -> Result<()> {
    let line = p.line;
    let owner = match p.chown {
        Some(c) => Some(fsops::resolve_user(root, c).map_err(|e| err_at(line, e))?),
        None => None,
    };
    let attrs = CopyAttrs {
        owner,
        mode: p.chmod,
        keep_owner: src.from_state.is_some() && owner.is_none(),
    };
    let dir_dest = p.dest_dir_syntax || p.n_sources > 1;
    if p.n_sources > 1 && !p.dest_dir_syntax {
        return Err(err_at(line, format!("When using {} with more than one source file, the destination must be a directory and end with a /", p.keyword)));
    }
    let dest_is_dir = |root: &Path| -> bool {
        fsops::resolve_in_root(root, p.dest, true)
            .map(|d| d.is_dir())
            .unwrap_or(false)
    };
    let target_for = |root: &Path, name: &str, force_dir: bool| -> Result<PathBuf> {
        let to_dir = dir_dest || force_dir || dest_is_dir(root);
        let d = if to_dir {
            fsops::mkdir_all(root, p.dest, owner).map_err(|e| err_at(line, e.to_string()))?;
            format!("{}/{name}", p.dest.trim_end_matches('/'))
        } else {
            let parent = Path::new(p.dest)
                .parent()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            fsops::mkdir_all(root, &parent, owner).map_err(|e| err_at(line, e.to_string()))?;
            p.dest.to_string()
        };
        fsops::resolve_in_root(root, &d, false).map_err(internal)
    };
    for (name, data) in src.heredocs.iter() {
        let t = target_for(root, name, false)?;
        fsops::write_file(&t, data, &attrs, 0o644).map_err(|e| err_at(line, e.to_string()))?;
    }
    for (name, data) in src.downloads.iter() {
        let t = target_for(root, name, false)?;
        fsops::write_file(&t, data, &attrs, 0o600).map_err(|e| err_at(line, e.to_string()))?;
    }
    if src.local.is_empty() {
        return Ok(());
    }
    let copy_from = |sroot: &Path| -> Result<()> {
        for s in &src.local {
            let rels = glob_context(sroot, s, line)?;
            for rel in rels {
                if excluded(p.excludes, &rel) {
                    continue;
                }
                let host = fsops::resolve_in_root(sroot, &rel, true).map_err(internal)?;
                let m = fs::symlink_metadata(&host).map_err(|e| err_at(line, e.to_string()))?;
                let name = Path::new(&rel)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if p.is_add && m.is_file() && src.from_state.is_none() && is_archive(&host) {
                    fsops::mkdir_all(root, p.dest, owner)
                        .map_err(|e| err_at(line, e.to_string()))?;
                    let d = fsops::resolve_in_root(root, p.dest, true).map_err(internal)?;
                    let f = fs::File::open(&host).map_err(internal)?;
                    berth_image::layer::apply_layer(
                        &d,
                        f,
                        &berth_image::layer::ApplyOptions::default(),
                    )
                    .map_err(|e| err_at(line, format!("ADD {rel}: extracting: {e}")))?;
                    continue;
                }
                if m.is_dir() {
                    let dd = if p.parents && !rel.is_empty() {
                        format!("{}/{rel}", p.dest.trim_end_matches('/'))
                    } else {
                        p.dest.to_string()
                    };
                    fsops::mkdir_all(root, &dd, owner).map_err(|e| err_at(line, e.to_string()))?;
                    let d = fsops::resolve_in_root(root, &dd, true).map_err(internal)?;
                    let mut names: Vec<_> =
                        fs::read_dir(&host).map_err(internal)?.flatten().collect();
                    names.sort_by_key(|e| e.file_name());
                    for e in names {
                        let n = e.file_name().to_string_lossy().into_owned();
                        copy_filtered(&e.path(), &d.join(&n), &attrs, p.excludes, &n)
                            .map_err(|e| err_at(line, format!("{} {rel}: {e}", p.keyword)))?;
                    }
                } else {
                    let t = if p.parents {
                        let full = format!("{}/{rel}", p.dest.trim_end_matches('/'));
                        let parent = Path::new(&full)
                            .parent()
                            .map(|x| x.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        fsops::mkdir_all(root, &parent, owner)
                            .map_err(|e| err_at(line, e.to_string()))?;
                        fsops::resolve_in_root(root, &full, false).map_err(internal)?
                    } else {
                        target_for(root, &name, false)?
                    };
                    fsops::copy_entry(&host, &t, &attrs)
                        .map_err(|e| err_at(line, format!("{} {rel}: {e}", p.keyword)))?;
                }
            }
        }
        Ok(())
    };
    match &src.from_state {
        None => copy_from(context),
        Some(st) => with_state_root(p.store, st, |sroot| copy_from(sroot)),
    }
}

/// Whether `--exclude` patterns drop a path (matched against the path below the source and
/// against its base name).
fn excluded(excl: &IgnoreFile, rel: &str) -> bool {
    !excl.patterns.is_empty()
        && (excl.ignored(rel) || excl.ignored(rel.rsplit('/').next().unwrap_or(rel)))
}

fn copy_filtered(
    src: &Path,
    dst: &Path,
    a: &CopyAttrs,
    excl: &IgnoreFile,
    rel: &str,
) -> io::Result<()> {
    if excluded(excl, rel) {
        return Ok(());
    }
    let m = fs::symlink_metadata(src)?;
    if m.is_dir() && !excl.patterns.is_empty() {
        if fs::symlink_metadata(dst).is_err() {
            fs::create_dir(dst)?;
        }
        for e in fs::read_dir(src)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            copy_filtered(&e.path(), &dst.join(&n), a, excl, &format!("{rel}/{n}"))?;
        }
        fsops::copy_entry_attrs_only(src, dst, a)
    } else {
        fsops::copy_entry(src, dst, a)
    }
}

/// Mounts a state's layers for the duration of `f`.
fn with_state_root<T>(
    store: &ImageStore,
    st: &State,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let sid = random_id();
    let work = store.tmp_dir().map_err(internal)?.join(format!(
        "from-{}-{}",
        std::process::id(),
        &sid[..12]
    ));
    let mut g = ContainerGuard {
        id: sid,
        work: work.clone(),
        mounts: Vec::new(),
        runtime: None,
        ran: false,
    };
    let root = mount_layers(store, &st.layers, &work, &mut g)?;
    f(&root)
}

fn is_archive(p: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(p) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    if h.starts_with(&[0x1f, 0x8b]) || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return true;
    }
    n >= 262 && &h[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ports_pairs() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(expand_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_port("7-8").unwrap(), vec!["7/tcp", "8/tcp"]);
        assert!(expand_port("9-8").is_err());
        assert!(expand_port("x").is_err());
        assert!(expand_port("80/foo").is_err());
        assert_eq!(
            kv_pairs("A=1 B=\"x y\"", '\\', true).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "\"x y\"".into())]
        );
        assert_eq!(
            kv_pairs("KEY some value", '\\', true).unwrap(),
            vec![("KEY".into(), "some value".into())]
        );
        assert!(kv_pairs("KEY", '\\', true).is_err());
        assert_eq!(parse_size("64m"), Some(64 << 20));
    }

    #[test]
    fn parallel_output_reads_in_stage_order() {
        let mut got: Vec<String> = Vec::new();
        {
            let mut sink = |e: Event| {
                if let Event::Stream(s) = e {
                    got.push(s);
                }
                true
            };
            let out = Out::new(&mut sink, 3);
            assert!(out.emit(1, Event::Stream("b1".into())));
            assert!(out.emit(0, Event::Stream("a1".into())));
            assert!(out.emit(2, Event::Stream("c1".into())));
            out.finish(1, true);
            assert!(out.emit(0, Event::Stream("a2".into())));
            // Stage 0 done: 1 (done) flushes, 2 becomes live.
            out.finish(0, true);
            assert!(out.emit(2, Event::Stream("c2".into())));
            out.finish(2, true);
        }
        assert_eq!(got, vec!["a1", "a2", "b1", "c1", "c2"]);
        // A failure stops the others and flush_all shows what was buffered.
        let mut got: Vec<String> = Vec::new();
        {
            let mut sink = |e: Event| {
                if let Event::Stream(s) = e {
                    got.push(s);
                }
                true
            };
            let out = Out::new(&mut sink, 2);
            assert!(out.emit(1, Event::Stream("b-fails".into())));
            out.finish(1, false);
            assert!(!out.emit(0, Event::Stream("a-stopped".into())));
            out.finish(0, false);
            out.flush_all();
        }
        assert_eq!(got, vec!["b-fails"]);
    }

    #[test]
    fn cache_from_matches_history_prefix_and_instruction() {
        let base = scratch_state();
        let hist = |by: &str, empty: bool| History {
            created: Some("2020-01-01T00:00:00Z".into()),
            created_by: Some(by.into()),
            author: None,
            comment: None,
            empty_layer: empty,
        };
        let layer = |n: &str| LayerRecord {
            digest: Digest::of_bytes(format!("blob{n}").as_bytes()),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 1,
            diff_id: Digest::of_bytes(format!("diff{n}").as_bytes()),
            unpacked_size: 1,
        };
        let mut cfg = base.config.clone();
        cfg.history = vec![hist("RUN a", false), hist("ENV X=1", true)];
        cfg.rootfs.diff_ids = vec![layer("a").diff_id];
        let src = CacheSource {
            config: cfg,
            layers: vec![layer("a")],
        };
        let cc = ContainerConfig::default();
        let sources = std::slice::from_ref(&src);
        // First step: the layer and the entry are taken.
        let s1 = from_cache_sources(sources, &base, "RUN a", &cc).unwrap();
        assert_eq!(s1.layers, vec![layer("a")]);
        assert_eq!(s1.config.history.len(), 1);
        assert_eq!(s1.config.created.as_deref(), Some("2020-01-01T00:00:00Z"));
        // Second step on top of the first: an empty-layer entry.
        let s2 = from_cache_sources(sources, &s1, "ENV X=1", &cc).unwrap();
        assert_eq!(s2.layers.len(), 1);
        assert_eq!(s2.config.history.len(), 2);
        // Another instruction, another parent, or past the end: no match.
        assert!(from_cache_sources(sources, &base, "RUN b", &cc).is_none());
        assert!(from_cache_sources(sources, &s2, "CMD x", &cc).is_none());
        let mut other = s1.clone();
        other.config.history[0].created_by = Some("RUN other".into());
        assert!(from_cache_sources(sources, &other, "ENV X=1", &cc).is_none());
    }

    #[test]
    fn heredoc_expansion_keeps_quotes() {
        let v: BTreeMap<String, String> = [("N".to_string(), "x".to_string())].into();
        assert_eq!(
            expand_heredoc("a=\"$N\" '${N}' \\$N $\n", '\\', &v),
            "a=\"x\" 'x' $N $\n"
        );
    }

    #[test]
    fn platforms_and_paths() {
        let h = Platform::host();
        assert!(check_platform(&format!("{}/{}", h.os, h.architecture)).is_ok());
        assert!(check_platform("linux/s390x").is_err() || h.architecture == "s390x");
        assert!(context_rel("../x").is_err());
        assert!(context_rel("a/../../x").is_err());
        assert_eq!(context_rel("./a/b/..").unwrap(), "a");
        assert_eq!(context_rel(".").unwrap(), "");
    }

    #[test]
    fn globs_in_context() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/x.txt"), "").unwrap();
        fs::write(d.path().join("a/y.txt"), "").unwrap();
        fs::write(d.path().join("z.md"), "").unwrap();
        assert_eq!(
            glob_context(d.path(), "a/*.txt", 1).unwrap(),
            vec!["a/y.txt"]
        );
        assert_eq!(
            glob_context(d.path(), "a/*/x.txt", 1).unwrap(),
            vec!["a/b/x.txt"]
        );
        assert_eq!(glob_context(d.path(), "*.md", 1).unwrap(), vec!["z.md"]);
        assert!(glob_context(d.path(), "*.none", 1).is_err());
        assert!(glob_context(d.path(), "missing", 1).is_err());
        // Hashes see content and modes, not times.
        let p = vec![d.path().join("a")];
        let h1 = hash_paths(d.path(), &p, &IgnoreFile::default()).unwrap();
        fs::write(d.path().join("a/y.txt"), "changed").unwrap();
        let h2 = hash_paths(d.path(), &p, &IgnoreFile::default()).unwrap();
        assert_ne!(h1, h2);
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a/y.txt"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            h2,
            hash_paths(d.path(), &p, &IgnoreFile::default()).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.path().join("a/y.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(
            h2,
            hash_paths(d.path(), &p, &IgnoreFile::default()).unwrap()
        );
    }
}
