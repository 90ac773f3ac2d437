//! Containers: records on disk, the map of live entries, and their life.
//!
//! Each container has a record (`<data-root>/containers/<id>/config.v2.json`, written
//! atomically; [`record`]), a writable snapshot, and while it runs a `berth-shim` whose state
//! directory is `<exec-root>/containers/<id>/shim`. A monitor task per running container
//! waits on the shim and records the exit.
//!
//! - [`create`]: the create request merged with the image's config (dockerd's rules).
//! - [`run`]: start (the bundle, the shim), exit and restart policies, stop/kill/wait,
//!   remove, attach.
//! - [`ops`]: rename, restart, pause, resize, update, top, stats, prune, changes.
//! - [`commit`]: an image from a container's changes (`POST /commit`).
//! - [`lifecycle`]: the interface through which networking and mounts take part.
//! - [`recovery`]: intents of multi-step operations, finished or undone at daemon start.

pub mod commit;
pub mod create;
pub mod lifecycle;
pub mod links;
pub mod ops;
pub mod record;
pub(crate) mod recovery;
pub mod render;
pub mod run;
mod standby;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_image::image_store::ImageStore;
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

pub use crate::error::{EngineError, Result};
pub use lifecycle::{Bundle, CreateInput, Participant, Peers};
pub use record::Container;

/// Daemon-wide settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub shim: PathBuf,
    pub runtime: PathBuf,
    pub cgroup_parent: String,
    /// Networking options (see [`crate::network`]).
    pub network: crate::network::NetOptions,
    /// Registries reachable over plain http besides loopback (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// The static init binary mounted as `/sbin/docker-init` for `--init`.
    pub init: PathBuf,
}

/// Exit/removal notifications of one container.
#[derive(Debug, Clone, Default)]
pub struct Events {
    pub exits: u64,
    pub last_exit: i64,
    pub removed: bool,
}

/// An attach client waiting for the container to start.
pub(crate) struct PendingAttach {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tx: oneshot::Sender<std::io::Result<UnixStream>>,
}

pub(crate) struct Entry {
    pub(crate) rec: Mutex<Container>,
    pub(crate) events: watch::Sender<Events>,
    pub(crate) pending: Mutex<Vec<PendingAttach>>,
    pub(crate) op: tokio::sync::Mutex<()>,
    /// The restart policy's current back-off.
    pub(crate) backoff_ms: std::sync::atomic::AtomicU64,
    /// A `restart` is stopping the container: its exit does not auto-remove it.
    pub(crate) manual_restart: std::sync::atomic::AtomicBool,
    /// Held while an exit is torn down (shim, rootfs, participants), which may go on after
    /// the record says exited: a start waits for it, so the teardown never hits the next
    /// run's shim.
    pub(crate) teardown: tokio::sync::Mutex<()>,
}

/// The container engine.
pub struct Engine {
    pub cfg: EngineConfig,
    pub images: Arc<ImageStore>,
    /// Named volumes.
    pub volumes: Arc<crate::volumes::VolumeStore>,
    /// Mounts of containers (a participant).
    pub mounts: Arc<crate::mounts::Mounts>,
    map: Mutex<HashMap<String, Arc<Entry>>>,
    /// Networks, endpoints, published ports, embedded DNS (a participant).
    pub net: Arc<crate::network::Manager>,
    /// The event bus (`GET /events`).
    pub bus: crate::events::Bus,
    pub(crate) execs: crate::exec::Execs,
    /// Settings of registry operations (pull, push, login) before [`Engine::live`]'s.
    registry_base: berth_registry::RegistryConfig,
    /// What a configuration reload changes (see [`Engine::reconfigure`]).
    live: std::sync::RwLock<crate::config::Live>,
    /// Storage cleanups of removed containers still running in the background.
    cleanups: watch::Sender<usize>,
    /// A sealed memfd copy of the runtime, handed to every shim (`--runtime-fd`): a runtime
    /// executed from it is protected against being overwritten from a container without
    /// re-executing itself (see `berth_runtime::protect`).
    runtime_copy: Option<std::os::fd::OwnedFd>,
    /// A shim started ahead of the next container start (see `standby`).
    standby: Arc<standby::Pool>,
}

/// Prefix of a removed container's directory whose cleanup is under way.
const REMOVING: &str = ".removing-";

/// What `wait` needs to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

impl Engine {
    /// Replaces the settings a configuration reload changes.
    pub fn reconfigure(&self, live: &crate::config::Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live.clone();
    }

    /// The settings a configuration reload changes, as they are now.
    pub fn live(&self) -> crate::config::Live {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Settings of registry operations (pull, push, login).
    pub fn registry_config(&self) -> berth_registry::RegistryConfig {
        let mut cfg = self.registry_base.clone();
        self.live().apply_registry(&mut cfg);
        cfg
    }

    /// Opens the engine and loads existing containers (see [`Engine::reattach`]).
    pub fn open(cfg: EngineConfig) -> Result<Arc<Self>> {
        for d in [
            cfg.data_root.join("containers"),
            cfg.exec_root.join("containers"),
        ] {
            std::fs::create_dir_all(&d).map_err(EngineError::io("creating", &d))?;
        }
        let images = Arc::new(ImageStore::open(&cfg.data_root)?);
        // What crashed builds and pulls left (see `leftovers`).
        crate::leftovers::remove_build_containers(
            &cfg.runtime,
            &cfg.exec_root.join("build-runtime"),
        );
        crate::leftovers::remove(&images);
        crate::leftovers::remove_shm_contexts();
        berth_buildkit::frontend::cleanup_stale();
        crate::leftovers::remove_auth_dirs(&cfg.exec_root);
        let vdir = cfg.data_root.join("volumes");
        let volumes = Arc::new(
            crate::volumes::VolumeStore::open(&vdir).map_err(EngineError::io("opening", &vdir))?,
        );
        let mounts = Arc::new(crate::mounts::Mounts::new(
            volumes.clone(),
            images.clone(),
            &cfg.data_root,
            &cfg.exec_root,
        ));
        let net = crate::network::Manager::open(&cfg.network, &cfg.data_root)?;
        let runtime_copy = match berth_runtime::protect::sealed_copy_of(&cfg.runtime) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(
                    "cannot copy the runtime {} into a sealed memfd ({e}); it protects itself at each start",
                    cfg.runtime.display()
                );
                None
            }
        };
        let standby = standby::Pool::new(
            cfg.shim.clone(),
            cfg.exec_root.join("runtime"),
            runtime_copy.as_ref(),
        );
        let engine = Arc::new(Engine {
            registry_base: berth_registry::RegistryConfig::default(),
            live: std::sync::RwLock::new(crate::config::Live {
                insecure_registries: cfg.insecure_registries.clone(),
                ..Default::default()
            }),
            cfg,
            images,
            volumes,
            mounts,
            map: Mutex::new(HashMap::new()),
            net,
            bus: Default::default(),
            execs: Default::default(),
            cleanups: watch::channel(0).0,
            runtime_copy,
            standby,
        });
        engine.volumes.set_events(engine.bus.clone());
        engine.net.set_events(engine.bus.clone());
        let dir = engine.cfg.data_root.join("containers");
        for ent in std::fs::read_dir(&dir).map_err(EngineError::io("reading", &dir))? {
            let ent = ent.map_err(EngineError::io("reading", &dir))?;
            // A removal that the daemon did not finish (see `remove`).
            if let Some(id) = ent
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(REMOVING))
            {
                engine.clean_storage(id, &ent.path());
                continue;
            }
            match record::load(&ent.path().join("config.v2.json")) {
                // Undone by `recover` (see `Mounts::damaged`).
                Ok(c) if engine.mounts.damaged(&c.id) => {
                    tracing::warn!("container {}: its mounts record is empty", c.id)
                }
                Ok(c) => {
                    engine.insert(c);
                }
                Err(e) => tracing::warn!("skipping a container: {e}"),
            }
        }
        engine.mounts.load_refs(&engine.list());
        // Operations a crash interrupted (see `recovery`).
        engine.recover();
        // What is left of containers without a record (see `sweep_unrecorded_tasks`).
        engine.sweep_unrecorded_tasks();
        Ok(engine)
    }

    /// The participants in every container's life, in order.
    pub(crate) fn participants(&self) -> [&dyn Participant; 2] {
        [self.mounts.as_ref(), self.net.as_ref()]
    }

    fn insert(&self, c: Container) -> Arc<Entry> {
        let id = c.id.clone();
        let e = Arc::new(Entry {
            rec: Mutex::new(c),
            events: watch::channel(Events::default()).0,
            pending: Mutex::new(Vec::new()),
            op: tokio::sync::Mutex::new(()),
            backoff_ms: std::sync::atomic::AtomicU64::new(0),
            manual_restart: std::sync::atomic::AtomicBool::new(false),
            teardown: tokio::sync::Mutex::new(()),
        });
        self.map.lock().unwrap().insert(id, e.clone());
        e
    }

    pub(crate) fn data_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_root.join("containers").join(id)
    }
    pub(crate) fn exec_dir(&self, id: &str) -> PathBuf {
        self.cfg.exec_root.join("containers").join(id)
    }
    pub(crate) fn shim_dir(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("shim")
    }
    pub(crate) fn shim_socket(&self, id: &str) -> PathBuf {
        self.shim_dir(id).join("shim.sock")
    }
    pub(crate) fn rootfs(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("rootfs")
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.data_dir(id).join("config.v2.json")
    }

    pub(crate) fn persist(&self, c: &Container) -> Result<()> {
        let p = self.record_path(&c.id);
        crate::util::write_json_atomic(&p, c).map_err(EngineError::io("writing", &p))
    }

    /// [`Self::persist`] for changes of the run state only (started, exited): atomic, but not
    /// synced to disk. A daemon killed at any moment finds the last state; after a power loss
    /// the container is not running whatever the file says, which the reattach step detects
    /// (no shim), so durability would only cost every start and exit a journal commit.
    pub(crate) fn persist_state(&self, c: &Container) -> Result<()> {
        let p = self.record_path(&c.id);
        crate::util::replace_json(&p, c).map_err(EngineError::io("writing", &p))
    }

    pub(crate) fn lookup(&self, name_or_id: &str) -> Result<Arc<Entry>> {
        let map = self.map.lock().unwrap();
        if let Some(e) = map.get(name_or_id) {
            return Ok(e.clone());
        }
        let n = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        for e in map.values() {
            if e.rec.lock().unwrap().short_name() == n {
                return Ok(e.clone());
            }
        }
        if !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = map
                .iter()
                .filter(|(k, _)| k.starts_with(name_or_id))
                .collect();
            if hits.len() == 1 {
                return Ok(hits[0].1.clone());
            }
            if hits.len() > 1 {
                return Err(EngineError::BadRequest(format!(
                    "multiple IDs found with provided prefix: {name_or_id}"
                )));
            }
        }
        Err(EngineError::NotFound(name_or_id.to_string()))
    }

    /// A copy of a container's record.
    pub fn get(&self, name_or_id: &str) -> Result<Container> {
        Ok(self.lookup(name_or_id)?.rec.lock().unwrap().clone())
    }

    /// Every container's record, newest first.
    pub fn list(&self) -> Vec<Container> {
        let mut v: Vec<Container> = self
            .map
            .lock()
            .unwrap()
            .values()
            .map(|e| e.rec.lock().unwrap().clone())
            .collect();
        v.sort_by(|a, b| b.created.cmp(&a.created));
        v
    }

    /// The (running, paused, stopped) counts as dockerd's state counter keeps them: a paused
    /// container is only paused, and a restarting one counts as stopped.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (mut running, mut paused, mut stopped) = (0, 0, 0);
        for c in self.list() {
            match (c.state.running, c.state.paused, c.state.restarting) {
                (true, true, _) => paused += 1,
                (true, false, false) => running += 1,
                _ => stopped += 1,
            }
        }
        (running, paused, stopped)
    }

    /// Events of a container (for log following).
    pub fn subscribe(&self, name_or_id: &str) -> Result<watch::Receiver<Events>> {
        Ok(self.lookup(name_or_id)?.events.subscribe())
    }

    /// Publishes an image event whose actor is a reference (`pull`, `push`).
    pub fn image_event(&self, action: &str, name: &str) {
        self.image_event_of(action, name, name);
    }

    /// Publishes an image event as dockerd's `LogImageEvent`: the actor `id` (an image ID for
    /// `tag`, `untag`, `delete`, `load`, `save`, `import`), the `name` attribute, and the
    /// image's labels while it exists.
    pub fn image_event_of(&self, action: &str, id: &str, name: &str) {
        let mut a: BTreeMap<String, String> = self
            .images
            .resolve(id)
            .and_then(|r| self.images.config(&r.image.id))
            .ok()
            .and_then(|c| c.config)
            .and_then(|c| c.labels)
            .unwrap_or_default();
        a.insert("name".to_string(), name.to_string());
        self.bus.emit("image", action, id, a);
    }

    /// Publishes a container event with Docker's attributes (labels, image, name, extras).
    pub fn container_event(&self, c: &Container, action: &str, extra: &[(&str, &str)]) {
        let mut a: BTreeMap<String, String> = c.config.labels.clone().unwrap_or_default();
        a.insert("image".into(), c.config.image.clone());
        a.insert("name".into(), c.short_name().to_string());
        for (k, v) in extra {
            a.insert(k.to_string(), v.to_string());
        }
        self.bus.emit("container", action, &c.id, a);
    }

    /// The runtime as berthd's own children should execute it: the sealed copy (through
    /// `/proc/self/fd/N`, which a child resolves in itself: it inherits the descriptor until
    /// its exec, and an ELF binary runs even from a close-on-exec one), else the configured
    /// path.
    pub fn runtime_exe(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        match &self.runtime_copy {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.cfg.runtime.clone(),
        }
    }

    /// Waits for the exit teardowns under way of containers `ids` (recorded as exited, their
    /// networking still being released): dockerd releases a container's endpoints before it
    /// reports its exit, so a network it was on can be removed at once.
    pub async fn settle_exits(&self, ids: &[String]) {
        for id in ids {
            let Ok(e) = self.lookup(id) else { continue };
            if e.rec.lock().unwrap().state.running {
                continue;
            }
            drop(e.teardown.lock().await);
        }
    }

    /// Waits until the storage of every removed container is cleaned up.
    pub async fn settle(&self) {
        let mut rx = self.cleanups.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The container's `cgroupsPath` (`HostConfig.CgroupParent` or the daemon's parent).
    pub fn cgroups_path(&self, c: &Container) -> String {
        let parent = match c.host_config.cgroup_parent.as_str() {
            "" => self.cfg.cgroup_parent.as_str(),
            p => p,
        };
        // Cleaned as runc's `CleanPath` cleans a path rooted at `/`: `..` never climbs above
        // the root (`--cgroup-parent ../../x` is `/x`).
        let mut parts: Vec<&str> = Vec::new();
        for p in parent.split('/').chain([c.id.as_str()]) {
            match p {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }
}

impl Peers for Engine {
    fn running(&self, name_or_id: &str) -> Option<(String, i64)> {
        self.get(name_or_id)
            .ok()
            .filter(|c| c.state.running)
            .map(|c| (c.id, c.state.pid))
    }

    fn id_of(&self, name_or_id: &str) -> Result<String> {
        Ok(self.get(name_or_id)?.id)
    }
}

/// Logs (at debug level) how long the `op` of container `id` took to reach `step`.
fn trace_step(op: &str, id: &str, step: &str, t0: std::time::Instant) {
    tracing::debug!(
        "engine {op} {}: {step} after {:.1} ms",
        &id[..12],
        t0.elapsed().as_secs_f64() * 1e3
    );
}

/// Whether the kernel's OOM killer fired in a container's cgroup (v1 `memory.oom_control`,
/// v2 `memory.events`).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    let count = |p: PathBuf, key: &str| -> u64 {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let root = Path::new("/sys/fs/cgroup");
    count(
        root.join("memory").join(rel).join("memory.oom_control"),
        "oom_kill ",
    ) > 0
        || count(root.join(rel).join("memory.events"), "oom_kill ") > 0
        || count(
            root.join("unified").join(rel).join("memory.events"),
            "oom_kill ",
        ) > 0
}
