//! Containers: create, start, stop, kill, wait, remove, state on disk, reattach to shims.
//!
//! The API handlers stay thin and call [`Engine`]. Each container has a record
//! (`<data-root>/containers/<id>/config.v2.json`, written atomically), a writable snapshot, and
//! while it runs a `berth-shim` whose state directory is `<exec-root>/containers/<id>/shim`.
//! A monitor task per running container waits on the shim and records the exit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::image_store::ImageStore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use crate::{names, shimio, spec, util};

/// Errors with Docker's status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// A 404 whose message is complete (`network x not found`).
    #[error("{0}")]
    Missing(String),
    #[error("not modified")]
    NotModified,
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The HTTP status code Docker uses.
    pub fn status(&self) -> u16 {
        match self {
            EngineError::NotFound(_) | EngineError::ImageNotFound(_) => 404,
            EngineError::Conflict(_) => 409,
            EngineError::BadRequest(_) => 400,
            EngineError::Forbidden(_) => 403,
            EngineError::Missing(_) => 404,
            EngineError::NotModified => 304,
            EngineError::Internal(_) => 500,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

pub type Result<T> = std::result::Result<T, EngineError>;

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

/// Docker's `State` of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CState {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    /// Docker's `State.Health` (containers with a health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Value>,
}

impl Default for CState {
    fn default() -> Self {
        CState {
            status: "created".into(),
            running: false,
            paused: false,
            restarting: false,
            oom_killed: false,
            dead: false,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            started_at: util::ZERO_TIME.into(),
            finished_at: util::ZERO_TIME.into(),
            health: None,
        }
    }
}

/// The on-disk record of a container (`config.v2.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    /// The image ID (`sha256:…`).
    pub image: String,
    /// Docker's `Config`.
    pub config: Value,
    /// Docker's `HostConfig` as received (defaults filled).
    pub host_config: Value,
    pub state: CState,
    pub driver: String,
    pub log_path: String,
    pub restart_count: i64,
    #[serde(default)]
    pub shim_pid: i64,
    /// Stopped by `stop`/`kill` (restart policies do not apply, `unless-stopped` stays down).
    #[serde(default)]
    pub manually_stopped: bool,
    /// Warnings given at create time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Container {
    pub fn tty(&self) -> bool {
        self.config["Tty"].as_bool().unwrap_or(false)
    }
    /// Whether the end of an attach client's input closes the container's stdin: Docker's
    /// rule, `StdinOnce` without a tty (a tty's input is never closed by a client going away,
    /// so `run -it` survives a detach or a lost terminal).
    pub fn closes_stdin(&self) -> bool {
        self.config["StdinOnce"].as_bool().unwrap_or(false) && !self.tty()
    }
    pub fn auto_remove(&self) -> bool {
        self.host_config["AutoRemove"].as_bool().unwrap_or(false)
    }
    pub fn network_mode(&self) -> String {
        match self.host_config["NetworkMode"].as_str().unwrap_or("") {
            "" => "default".into(),
            m => m.into(),
        }
    }
}

/// Exit/removal notifications of one container.
#[derive(Debug, Clone, Default)]
pub struct Events {
    pub exits: u64,
    pub last_exit: i64,
    pub removed: bool,
}

type PendingAttach = (
    bool,
    bool,
    bool,
    oneshot::Sender<std::io::Result<UnixStream>>,
);

pub(crate) struct Entry {
    pub(crate) rec: Mutex<Container>,
    pub(crate) events: watch::Sender<Events>,
    pending: Mutex<Vec<PendingAttach>>,
    pub(crate) op: tokio::sync::Mutex<()>,
    /// The restart policy's current back-off.
    backoff_ms: std::sync::atomic::AtomicU64,
}

/// The container engine.
pub struct Engine {
    pub cfg: EngineConfig,
    pub images: Arc<ImageStore>,
    /// Named volumes (crate::volumes).
    pub volumes: crate::volumes::VolumeStore,
    map: Mutex<HashMap<String, Arc<Entry>>>,
    /// Networks, endpoints, published ports, embedded DNS.
    pub net: Arc<crate::network::Manager>,
    /// The event bus (`GET /events`).
    pub bus: crate::events::Bus,
    pub(crate) execs: crate::exec::Execs,
    /// Settings of registry operations (pull, push, login).
    pub registry_config: berth_registry::RegistryConfig,
    /// Storage cleanups of removed containers still running in the background.
    cleanups: watch::Sender<usize>,
    /// A sealed memfd copy of the runtime, handed to every shim (`--runtime-fd`): a runtime
    /// executed from it is protected against being overwritten from a container without
    /// re-executing itself (see `berth_runtime::protect`).
    runtime_copy: Option<std::os::fd::OwnedFd>,
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
    /// Opens the engine and loads (reattaching to) existing containers.
    pub fn open(cfg: EngineConfig) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(cfg.data_root.join("containers"))?;
        std::fs::create_dir_all(cfg.exec_root.join("containers"))?;
        let images = Arc::new(ImageStore::open(&cfg.data_root)?);
        let volumes = crate::volumes::VolumeStore::open(&cfg.data_root.join("volumes"))?;
        let net = crate::network::Manager::open(&cfg.network, &cfg.data_root)?;
        let cfg_insecure = cfg.insecure_registries.clone();
        let cfg_runtime = cfg.runtime.clone();
        let engine = Arc::new(Engine {
            cfg,
            images,
            volumes,
            map: Mutex::new(HashMap::new()),
            net,
            bus: Default::default(),
            execs: Default::default(),
            registry_config: berth_registry::RegistryConfig {
                insecure_registries: cfg_insecure,
                ..Default::default()
            },
            cleanups: watch::channel(0).0,
            runtime_copy: match berth_runtime::protect::sealed_copy_of(&cfg_runtime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(
                        "cannot copy the runtime {} into a sealed memfd ({e}); it protects itself at each start",
                        cfg_runtime.display()
                    );
                    None
                }
            },
        });
        for ent in std::fs::read_dir(engine.cfg.data_root.join("containers"))? {
            let ent = ent?;
            // A removal that the daemon did not finish (see `remove`).
            if let Some(id) = ent
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(REMOVING))
            {
                engine.clean_storage(id, &ent.path());
                continue;
            }
            let p = ent.path().join("config.v2.json");
            match util::read_json::<Container>(&p) {
                Ok(c) => {
                    engine.insert(c);
                }
                Err(e) => tracing::warn!("skipping {}: {e}", p.display()),
            }
        }
        // Volume references of the loaded containers (crate::mounts).
        crate::mounts::load_refs(&engine);
        Ok(engine)
    }

    /// Reattaches to the shims of running containers (call inside the runtime).
    pub fn reattach(self: &Arc<Self>) {
        // [network] forget endpoints of vanished containers, re-adopt running ones.
        self.net.adopt(&self.list());
        let running: Vec<String> = self
            .map
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.rec.lock().unwrap().state.running)
            .map(|e| e.rec.lock().unwrap().id.clone())
            .collect();
        for id in running {
            tracing::info!("reattaching to container {id}");
            let me = self.clone();
            let id2 = id.clone();
            tokio::spawn(async move { me.monitor(id2).await });
            self.spawn_health_checks(&id);
        }
        // Restart policies on daemon start: `always`, and `unless-stopped` unless stopped by hand.
        let to_start: Vec<String> = self
            .list()
            .into_iter()
            .filter(|c| !c.state.running)
            .filter(|c| {
                match c.host_config["RestartPolicy"]["Name"]
                    .as_str()
                    .unwrap_or("")
                {
                    "always" => true,
                    "unless-stopped" => !c.manually_stopped,
                    "on-failure" => c.state.restarting,
                    _ => false,
                }
            })
            .map(|c| c.id)
            .collect();
        for id in to_start {
            tracing::info!("starting container {id} (restart policy)");
            let me = self.clone();
            tokio::spawn(async move {
                if let Ok(e) = me.lookup(&id) {
                    let mut r = e.rec.lock().unwrap();
                    r.state.restarting = true;
                    r.manually_stopped = false;
                }
                me.policy_restart(&id).await;
            });
        }
    }

    fn insert(&self, c: Container) -> Arc<Entry> {
        let id = c.id.clone();
        let e = Arc::new(Entry {
            rec: Mutex::new(c),
            events: watch::channel(Events::default()).0,
            pending: Mutex::new(Vec::new()),
            op: tokio::sync::Mutex::new(()),
            backoff_ms: std::sync::atomic::AtomicU64::new(0),
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
    pub(crate) fn rootfs(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("rootfs")
    }

    pub(crate) fn persist(&self, c: &Container) -> Result<()> {
        util::write_json_atomic(&self.data_dir(&c.id).join("config.v2.json"), c).map_err(internal)
    }

    /// [`Self::persist`] for changes of the run state only (started, exited): atomic, but not
    /// synced to disk. A daemon killed at any moment finds the last state; after a power loss the
    /// container is not running whatever the file says, which the reattach step detects (no
    /// shim), so durability would only cost every start and exit a journal commit.
    pub(crate) fn persist_state(&self, c: &Container) -> Result<()> {
        util::replace_json(&self.data_dir(&c.id).join("config.v2.json"), c).map_err(internal)
    }

    pub(crate) fn lookup(&self, name_or_id: &str) -> Result<Arc<Entry>> {
        let map = self.map.lock().unwrap();
        if let Some(e) = map.get(name_or_id) {
            return Ok(e.clone());
        }
        let n = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        for e in map.values() {
            if e.rec.lock().unwrap().name == format!("/{n}") {
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

    /// Every container's record.
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

    /// Creates a container from Docker's create body.
    pub fn create(&self, name: Option<&str>, body: &Value) -> Result<(String, Vec<String>)> {
        if !body.is_object() {
            return Err(EngineError::BadRequest(
                "config cannot be empty in order to create a container".into(),
            ));
        }
        let image_name = body["Image"].as_str().unwrap_or("");
        if image_name.is_empty() {
            return Err(EngineError::BadRequest("no image specified".into()));
        }
        let host_config = if body["HostConfig"].is_null() {
            json!({})
        } else {
            body["HostConfig"].clone()
        };
        validate(body, &host_config)?;
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let warnings =
            crate::hostconfig::check(&host_config, ncpus).map_err(EngineError::BadRequest)?;
        let resolved = self.images.resolve(image_name).map_err(|e| {
            if e.is_not_found() {
                EngineError::ImageNotFound(image_name.to_string())
            } else {
                EngineError::BadRequest(e.to_string())
            }
        })?;
        let image_id = resolved.image.id.to_string();
        let icfg = self.images.config(&resolved.image.id).map_err(internal)?;
        let ic = icfg.config.clone().unwrap_or_default();

        let strs = |v: &Value, field: &str| -> Result<Option<Vec<String>>> {
            match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(vec![s.clone()])),
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str().map(str::to_string).ok_or_else(|| {
                            EngineError::BadRequest(format!("{field} must be a list of strings"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                _ => Err(EngineError::BadRequest(format!(
                    "{field} must be a list of strings"
                ))),
            }
        };
        let user_entry = strs(&body["Entrypoint"], "Entrypoint")?;
        let user_cmd = strs(&body["Cmd"], "Cmd")?.filter(|c| !c.is_empty());
        let (entrypoint, cmd) = match user_entry {
            Some(ep) => {
                let ep: Vec<String> = ep.into_iter().filter(|s| !s.is_empty()).collect();
                (ep, user_cmd.unwrap_or_default())
            }
            None => (
                ic.entrypoint.clone().unwrap_or_default(),
                user_cmd.or(ic.cmd.clone()).unwrap_or_default(),
            ),
        };
        let mut argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
        if argv.is_empty() {
            return Err(EngineError::BadRequest("no command specified".into()));
        }
        let path = argv.remove(0);

        let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        for e in strs(&body["Env"], "Env")?.unwrap_or_default() {
            let key = e.split('=').next().unwrap_or("").to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            env.push(e);
        }
        let mut labels = serde_json::Map::new();
        for (k, v) in ic.labels.clone().unwrap_or_default() {
            labels.insert(k, Value::String(v));
        }
        if let Some(l) = body["Labels"].as_object() {
            for (k, v) in l {
                labels.insert(k.clone(), v.clone());
            }
        }
        // Mounts and volumes (crate::mounts): parsed now, committed with the container.
        let planned = crate::mounts::plan(self, body, &host_config, ic.volumes.as_ref())?;
        let id = util::new_id();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !names::valid(n) {
                    return Err(EngineError::BadRequest(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => {
                let mut retry = 0;
                loop {
                    let n = names::generate(retry);
                    if self.lookup(&n).is_err() {
                        break n;
                    }
                    retry += 1;
                }
            }
        };
        let s = |k: &str, d: &str| {
            body[k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .unwrap_or(d.to_string())
        };
        let b = |k: &str| body[k].as_bool().unwrap_or(false);
        let config = json!({
            "Hostname": s("Hostname", &id[..12]).chars().take(64).collect::<String>(),
            "Domainname": s("Domainname", ""),
            "User": body["User"].as_str().map(str::to_string).or(ic.user.clone()).unwrap_or_default(),
            "AttachStdin": b("AttachStdin"),
            "AttachStdout": b("AttachStdout"),
            "AttachStderr": b("AttachStderr"),
            "Tty": b("Tty"),
            "OpenStdin": b("OpenStdin"),
            "StdinOnce": b("StdinOnce"),
            "Env": env,
            "Cmd": if cmd.is_empty() { Value::Null } else { json!(cmd) },
            "Image": image_name,
            "Volumes": crate::mounts::config_volumes(body, ic.volumes.as_ref()),
            "WorkingDir": body["WorkingDir"].as_str().filter(|s| !s.is_empty()).map(str::to_string).or(ic.working_dir.clone()).unwrap_or_default(),
            "Entrypoint": if entrypoint.is_empty() { Value::Null } else { json!(entrypoint) },
            "OnBuild": Value::Null,
            "Labels": labels,
            "StopSignal": body["StopSignal"].as_str().map(str::to_string).or(ic.stop_signal.clone()),
            "StopTimeout": body["StopTimeout"].clone(),
            "ExposedPorts": crate::network::exposed_ports(body, ic.exposed_ports.iter().flat_map(|m| m.keys())),
        });
        let mut config = config;
        let health = if body["Healthcheck"].is_object() {
            body["Healthcheck"].clone()
        } else {
            ic.extra.get("Healthcheck").cloned().unwrap_or(Value::Null)
        };
        if health.is_object() {
            config["Healthcheck"] = health;
        }
        let mut host_config = host_config;
        if host_config["NetworkMode"].as_str().unwrap_or("").is_empty() {
            host_config["NetworkMode"] = json!("default");
        }
        if host_config["LogConfig"]["Type"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            host_config["LogConfig"] = json!({"Type": "json-file", "Config": {}});
        }
        let container = Container {
            id: id.clone(),
            name: format!("/{name}"),
            created: util::now_rfc3339_nano(),
            path,
            args: argv,
            image: image_id,
            config,
            host_config,
            state: CState::default(),
            driver: String::new(),
            log_path: self
                .data_dir(&id)
                .join(format!("{id}-json.log"))
                .display()
                .to_string(),
            restart_count: 0,
            shim_pid: 0,
            manually_stopped: false,
            warnings: warnings.clone(),
        };
        // Reserve the name under the map lock.
        {
            let map = self.map.lock().unwrap();
            for e in map.values() {
                let r = e.rec.lock().unwrap();
                if r.name == container.name {
                    return Err(EngineError::Conflict(format!(
                        "Conflict. The container name \"{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        container.name, r.id
                    )));
                }
            }
        }
        std::fs::create_dir_all(self.data_dir(&id)).map_err(internal)?;
        let snap = (|| -> Result<String> {
            let sn = self.images.snapshotter().map_err(internal)?;
            let top = resolved.image.chain_ids().last().cloned();
            sn.prepare_container(&id, top.as_ref()).map_err(internal)?;
            Ok(sn.driver().to_string())
        })();
        let mut container = container;
        match snap {
            Ok(d) => container.driver = d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.data_dir(&id));
                return Err(e);
            }
        }
        // Volumes and mounts (crate::mounts): create volumes, take references, record.
        // [network] validate the network settings and create the endpoints.
        let created = crate::mounts::commit(self, &id, &planned).and_then(|_| {
            self.net
                .on_create(&container, body)
                .and_then(|_| self.persist(&container))
                .inspect_err(|_| {
                    self.net.on_remove(&id);
                    let anon = crate::mounts::anonymous_volumes(self, &id);
                    crate::mounts::on_removed(self, &id, &anon, true);
                })
        });
        if let Err(e) = created {
            if let Ok(sn) = self.images.snapshotter() {
                let _ = sn.remove_container(&id);
            }
            let _ = std::fs::remove_dir_all(self.data_dir(&id));
            return Err(e);
        }
        self.container_event(&container, "create", &[]);
        self.insert(container);
        Ok((id, warnings))
    }

    /// Starts a created or exited container.
    pub async fn start(self: &Arc<Self>, name_or_id: &str) -> Result<()> {
        self.start_inner(name_or_id, false).await
    }

    /// Boxed: it is reached again from the restart policy (through `on_exit`).
    fn start_inner<'a>(
        self: &'a Arc<Self>,
        name_or_id: &'a str,
        by_policy: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.start_inner_impl(name_or_id, by_policy))
    }

    async fn start_inner_impl(self: &Arc<Self>, name_or_id: &str, by_policy: bool) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let c = e.rec.lock().unwrap().clone();
        if c.state.running {
            return Err(EngineError::NotModified);
        }
        if by_policy && (c.manually_stopped || !c.state.restarting) {
            return Ok(());
        }
        let id = c.id.clone();
        let me = self.clone();
        let c2 = c.clone();
        let launched = tokio::task::spawn_blocking(move || me.launch(&c2))
            .await
            .map_err(internal)
            .and_then(|r| r);
        let out = match launched {
            Ok(out) => out,
            Err(err) => {
                drop(_op);
                self.start_failed(&e, &err).await;
                return Err(err);
            }
        };
        let socket = PathBuf::from(out["socket"].as_str().unwrap_or_default());
        let init_pid = out["init_pid"].as_i64().unwrap_or(0);
        let shim_pid = out["pid"].as_i64().unwrap_or(0);
        // Attach clients that were waiting for the start.
        let pending: Vec<PendingAttach> = std::mem::take(&mut *e.pending.lock().unwrap());
        for (i, o, er, tx) in pending {
            let r = attach_shim(&socket, i, o, er, c.closes_stdin()).await;
            let _ = tx.send(r);
        }
        if let Err(err) = shimio::call(&socket, json!({"op": "start"})).await {
            let _ = shimio::call(&socket, json!({"op": "shutdown", "force": true})).await;
            let _ = berth_image::snapshot::unmount(&self.rootfs(&id));
            let err =
                EngineError::BadRequest(format!("failed to create task for container: {err}"));
            drop(_op);
            self.start_failed(&e, &err).await;
            return Err(err);
        }
        {
            let mut r = e.rec.lock().unwrap();
            let health = r.config["Healthcheck"]["Test"]
                .as_array()
                .filter(|t| t.first().and_then(Value::as_str) != Some("NONE") && !t.is_empty())
                .map(|_| json!({"Status": "starting", "FailingStreak": 0, "Log": []}));
            r.state = CState {
                status: "running".into(),
                running: true,
                pid: init_pid,
                started_at: util::now_rfc3339_nano(),
                finished_at: r.state.finished_at.clone(),
                health,
                ..CState::default()
            };
            r.shim_pid = shim_pid;
            r.manually_stopped = false;
            self.persist_state(&r)?;
            self.container_event(&r, "start", &[]);
        }
        self.spawn_health_checks(&id);
        let me = self.clone();
        tokio::spawn(async move { me.monitor(id).await });
        Ok(())
    }

    /// Records a failed start as Docker does (exit code 127/126/128, `State.Error`), ends
    /// waiting attach clients and waiters, and honours `AutoRemove`.
    async fn start_failed(self: &Arc<Self>, e: &Entry, err: &EngineError) {
        let msg = err.to_string();
        let code = if msg.contains("not found") || msg.contains("No such file") {
            127
        } else if msg.contains("ermission denied") {
            126
        } else {
            128
        };
        e.pending.lock().unwrap().clear();
        crate::mounts::on_stopped(self, &e.rec.lock().unwrap().id.clone());
        let (id, auto_remove) = {
            let mut r = e.rec.lock().unwrap();
            r.state.error = msg;
            r.state.exit_code = code;
            if let Err(err) = self.persist_state(&r) {
                tracing::warn!("persisting {}: {err}", r.id);
            }
            (r.id.clone(), r.auto_remove())
        };
        e.events.send_modify(|ev| {
            ev.exits += 1;
            ev.last_exit = code;
        });
        if auto_remove {
            if let Err(err) = self.remove(&id, true).await {
                tracing::warn!("auto-removing {id}: {err}");
            }
        }
    }

    /// Mounts the rootfs, writes the bundle, starts the shim (blocking). Returns its report.
    fn launch(&self, c: &Container) -> Result<Value> {
        let id = &c.id;
        let exec_dir = self.exec_dir(id);
        let rootfs = self.rootfs(id);
        let shim_dir = self.shim_dir(id);
        let _ = berth_image::snapshot::unmount(&rootfs);
        if shim_dir.exists() {
            std::fs::remove_dir_all(&shim_dir).map_err(internal)?;
        }
        std::fs::create_dir_all(&rootfs).map_err(internal)?;
        std::fs::create_dir_all(&shim_dir).map_err(internal)?;
        let sn = self.images.snapshotter().map_err(internal)?;
        sn.mount_container_transient(id, &rootfs, c.auto_remove())
            .map_err(internal)?;
        let fail = |e: EngineError| {
            let _ = berth_image::snapshot::unmount(&rootfs);
            e
        };
        let user = c.config["User"].as_str().unwrap_or("");
        let (uid, gid) =
            spec::resolve_user(&rootfs, user).map_err(|e| fail(EngineError::BadRequest(e)))?;
        let hostname = c.config["Hostname"]
            .as_str()
            .unwrap_or(&id[..12])
            .to_string();
        let host_net = c.network_mode() == "host";
        let dd = self.data_dir(id);
        let mut etc = Vec::new();
        let hn = dd.join("hostname");
        std::fs::write(&hn, format!("{hostname}\n")).map_err(|e| fail(internal(e)))?;
        etc.push((hn.display().to_string(), "/etc/hostname".to_string()));
        // [network] /etc/hosts, /etc/resolv.conf, and the namespace of container:<x>.
        let plan = self
            .net
            .prepare(c, &hostname, &|x| {
                self.get(x)
                    .ok()
                    .filter(|o| o.state.running)
                    .map(|o| (o.id, o.state.pid))
            })
            .map_err(fail)?;
        let hosts = dd.join("hosts");
        std::fs::write(&hosts, &plan.hosts).map_err(|e| fail(internal(e)))?;
        etc.push((hosts.display().to_string(), "/etc/hosts".to_string()));
        let rc = dd.join("resolv.conf");
        std::fs::write(&rc, &plan.resolv).map_err(|e| fail(internal(e)))?;
        etc.push((rc.display().to_string(), "/etc/resolv.conf".to_string()));
        let mut env: Vec<String> = c.config["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
        }
        if c.tty() && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let init = c.host_config["Init"].as_bool() == Some(true);
        let mut args = if init {
            if !self.cfg.init.is_file() {
                return Err(fail(EngineError::BadRequest(format!(
                    "--init: the init binary {} does not exist (give berthd --init-path)",
                    self.cfg.init.display()
                ))));
            }
            vec![
                "/sbin/docker-init".to_string(),
                "--".to_string(),
                c.path.clone(),
            ]
        } else {
            vec![c.path.clone()]
        };
        args.extend(c.args.iter().cloned());
        let gids = crate::hostconfig::group_add(&rootfs, &c.host_config)
            .map_err(|e| fail(EngineError::BadRequest(e)))?;
        // Volumes, binds, tmpfs (crate::mounts): copy-up and OCI mount entries.
        let user_mounts = crate::mounts::setup(self, id, &rootfs).map_err(fail)?;
        let fail = |e: EngineError| {
            crate::mounts::on_stopped(self, id);
            fail(e)
        };
        let mut mounts = spec::etc_mounts(&etc);
        mounts.extend(user_mounts);
        let mut cfg = spec::build(&spec::DefaultSpec {
            args: &args,
            env: &env,
            cwd: c.config["WorkingDir"].as_str().unwrap_or("/"),
            uid,
            gid,
            additional_gids: &gids,
            tty: c.tty(),
            hostname: &hostname,
            host_network: host_net,
            cgroups_path: self.cgroups_path(c),
            cgroup_mount: true,
            mounts,
        });
        crate::hostconfig::apply(&mut cfg, &c.host_config, self)
            .map_err(|e| fail(EngineError::BadRequest(e)))?;
        if init {
            cfg["mounts"].as_array_mut().expect("mounts").push(json!({
                "destination": "/sbin/docker-init",
                "type": "bind",
                "source": self.cfg.init,
                "options": ["rbind", "ro", "nosuid", "nodev"],
            }));
        }
        crate::network::Manager::patch_spec(&mut cfg, &plan);
        util::replace_json(&exec_dir.join("config.json"), &cfg).map_err(|e| fail(internal(e)))?;
        let mut cmd = std::process::Command::new(&self.cfg.shim);
        cmd.arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&exec_dir)
            .arg("--state-dir")
            .arg(&shim_dir)
            .arg("--runtime")
            .arg(&self.cfg.runtime)
            .arg("--runtime-root")
            .arg(self.cfg.exec_root.join("runtime"))
            .arg("--log-path")
            .arg(&c.log_path);
        if c.tty() {
            cmd.arg("--tty");
        }
        if c.config["OpenStdin"].as_bool().unwrap_or(false) {
            cmd.arg("--stdin");
        }
        // Berth's specs have no poststart hooks, the only thing `runtime start` adds to the
        // write into the exec fifo: the shim saves an exec of the runtime per start.
        if cfg["hooks"]["poststart"]
            .as_array()
            .is_none_or(|h| h.is_empty())
        {
            cmd.arg("--direct-start");
        }
        if let Some(fd) = &self.runtime_copy {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = fd.as_raw_fd();
            cmd.arg("--runtime-fd").arg("3");
            // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rc = if fd == 3 {
                        libc::fcntl(3, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, 3)
                    };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.stdin(std::process::Stdio::null());
        let out = cmd.output().map_err(|e| {
            fail(internal(format!(
                "starting {}: {e}",
                self.cfg.shim.display()
            )))
        })?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout).trim().to_string()
                + String::from_utf8_lossy(&out.stderr).trim();
            return Err(fail(EngineError::BadRequest(format!(
                "failed to create task for container: {msg}"
            ))));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str::<Value>(line.trim())
            .map_err(|e| fail(internal(format!("bad shim report {line:?}: {e}"))))?;
        // [network] The container exists (its init waits for `start`): loopback, veths,
        // published ports, DNS.
        let pid = report["init_pid"].as_i64().unwrap_or(0);
        if let Err(e) = self.net.attach(c, pid) {
            let socket = shim_dir.join("shim.sock");
            if let Ok(mut c) = berth_shim::client::Client::connect(&socket) {
                let _ = c.shutdown(true);
            }
            return Err(fail(e));
        }
        Ok(report)
    }

    /// The container's `cgroupsPath` (`HostConfig.CgroupParent` or the daemon's parent).
    pub fn cgroups_path(&self, c: &Container) -> String {
        let parent = c.host_config["CgroupParent"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or(&self.cfg.cgroup_parent);
        let parent = if parent.starts_with('/') {
            parent.to_string()
        } else {
            format!("/{parent}")
        };
        format!("{}/{}", parent.trim_end_matches('/'), c.id)
    }

    /// Waits on a running container's shim and records its exit.
    async fn monitor(self: Arc<Self>, id: String) {
        let socket = self.shim_dir(&id).join("shim.sock");
        let res = shimio::call(&socket, json!({"op": "wait"})).await;
        let (code, finished, error) = match res {
            Ok(v) => (
                v["exit_code"].as_i64().unwrap_or(255),
                v["finished_at"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(util::now_rfc3339_nano),
                String::new(),
            ),
            Err(e) => match util::read_json::<Value>(&self.shim_dir(&id).join("exit.json")) {
                Ok(x) => (
                    x["exit_code"].as_i64().unwrap_or(255),
                    x["finished_at"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(util::now_rfc3339_nano),
                    String::new(),
                ),
                Err(_) => (
                    255,
                    util::now_rfc3339_nano(),
                    format!("lost the container's shim: {e}"),
                ),
            },
        };
        self.on_exit(&id, code, finished, error).await;
    }

    async fn on_exit(self: &Arc<Self>, id: &str, code: i64, finished: String, error: String) {
        let Ok(e) = self.lookup(id) else { return };
        // Read before the shim deletes the container (and its cgroup).
        let oom = {
            let r = e.rec.lock().unwrap().clone();
            oom_killed(&self.cgroups_path(&r))
        };
        let (auto_remove, restart, snapshot) = {
            let mut r = e.rec.lock().unwrap();
            let ran_secs = util::now_secs() - util::unix_secs(&r.state.started_at);
            r.state.running = false;
            r.state.paused = false;
            r.state.status = "exited".into();
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.finished_at = finished;
            r.state.error = error;
            r.state.oom_killed = oom;
            if let Some(h) = r.state.health.as_mut() {
                h["Status"] = json!("unhealthy");
            }
            r.shim_pid = 0;
            let policy = r.host_config["RestartPolicy"]["Name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let max = r.host_config["RestartPolicy"]["MaximumRetryCount"]
                .as_i64()
                .unwrap_or(0);
            let restart = !r.manually_stopped
                && match policy.as_str() {
                    "always" | "unless-stopped" => true,
                    "on-failure" => code != 0 && (max == 0 || r.restart_count < max),
                    _ => false,
                };
            if restart {
                r.state.restarting = true;
                r.state.status = "restarting".into();
                // Docker's back-off: 100 ms doubling, reset after 10 s of running, at most 1 min.
                let prev = e.backoff_ms.load(std::sync::atomic::Ordering::Relaxed);
                let next = if ran_secs >= 10 || prev == 0 {
                    100
                } else {
                    (prev * 2).min(60_000)
                };
                e.backoff_ms
                    .store(next, std::sync::atomic::Ordering::Relaxed);
            }
            if let Err(err) = self.persist_state(&r) {
                tracing::warn!("persisting {id}: {err}");
            }
            (r.auto_remove(), restart, r.clone())
        };
        // The shim deletes the container from the runtime (its cgroup, state) and exits. For a
        // container removed at exit that happens in the background with the rest of its cleanup
        // (see `clean_storage`), off the path of `run --rm`.
        if !auto_remove || restart {
            let socket = self.shim_dir(id).join("shim.sock");
            let _ = shimio::call(&socket, json!({"op": "shutdown", "force": true})).await;
        }
        let _ = berth_image::snapshot::unmount(&self.rootfs(id));
        crate::mounts::on_stopped(self, id);
        // [network] proxies, DNS, host veths and port rules.
        let net = self.net.clone();
        let id2 = id.to_string();
        let _ = tokio::task::spawn_blocking(move || net.on_exit(&id2)).await;
        if oom {
            self.container_event(&snapshot, "oom", &[]);
        }
        self.container_event(&snapshot, "die", &[("exitCode", &code.to_string())]);
        e.events.send_modify(|ev| {
            ev.exits += 1;
            ev.last_exit = code;
        });
        if restart {
            let delay = e.backoff_ms.load(std::sync::atomic::Ordering::Relaxed);
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                me.policy_restart(&id).await;
            });
        } else if auto_remove {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(err) = me.remove(&id, true).await {
                    tracing::warn!("auto-removing {id}: {err}");
                }
            });
        }
    }

    /// A restart decided by the restart policy (unless stopped or removed meanwhile).
    async fn policy_restart(self: &Arc<Self>, id: &str) {
        let Ok(e) = self.lookup(id) else { return };
        {
            let mut r = e.rec.lock().unwrap();
            if !r.state.restarting || r.manually_stopped || r.state.running {
                return;
            }
            r.restart_count += 1;
        }
        if let Err(err) = self.start_inner(id, true).await {
            tracing::warn!("restarting {id}: {err}");
            let mut r = e.rec.lock().unwrap();
            r.state.restarting = false;
            r.state.status = "exited".into();
            let _ = self.persist_state(&r);
        }
    }

    async fn signal(&self, id: &str, sig: i32) -> Result<()> {
        let socket = self.shim_dir(id).join("shim.sock");
        shimio::call(&socket, json!({"op": "kill", "signal": sig}))
            .await
            .map(drop)
            .map_err(internal)
    }

    /// `kill`: sends a signal to a running container.
    pub async fn kill(&self, name_or_id: &str, signal: Option<&str>) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let c = e.rec.lock().unwrap().clone();
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => berth_shim::protocol::signal_by_name(s)
                .ok_or_else(|| EngineError::BadRequest(format!("Invalid signal: {s}")))?,
            None => libc::SIGKILL,
        };
        if !c.state.running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        self.container_event(&c, "kill", &[("signal", &sig.to_string())]);
        self.signal(&c.id, sig).await
    }

    /// `stop`: the stop signal, `t` seconds, then SIGKILL.
    pub async fn stop(&self, name_or_id: &str, t: Option<i64>, signal: Option<&str>) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let was_restarting = {
            let mut r = e.rec.lock().unwrap();
            r.manually_stopped = true;
            let was = r.state.restarting;
            if was && !r.state.running {
                r.state.restarting = false;
                r.state.status = "exited".into();
            }
            self.persist(&r)?;
            was && !r.state.running
        };
        if was_restarting {
            return Ok(());
        }
        let res = self.stop_entry(&e, t, signal).await;
        if res.is_ok() {
            let c = e.rec.lock().unwrap().clone();
            self.container_event(&c, "stop", &[]);
        }
        res
    }

    async fn stop_entry(&self, e: &Entry, t: Option<i64>, signal: Option<&str>) -> Result<()> {
        let mut rx = e.events.subscribe();
        let c = e.rec.lock().unwrap().clone();
        if !c.state.running {
            return Err(EngineError::NotModified);
        }
        let sig_name = signal
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| c.config["StopSignal"].as_str().map(str::to_string))
            .unwrap_or_else(|| "SIGTERM".into());
        let sig = berth_shim::protocol::signal_by_name(&sig_name)
            .ok_or_else(|| EngineError::BadRequest(format!("Invalid signal: {sig_name}")))?;
        let t = t.or_else(|| c.config["StopTimeout"].as_i64()).unwrap_or(10);
        let seen = rx.borrow_and_update().exits;
        if sig != libc::SIGKILL {
            let _ = self.signal(&c.id, sig).await;
            let wait = wait_exit(&mut rx, seen);
            if t < 0 {
                wait.await;
                return Ok(());
            }
            if tokio::time::timeout(Duration::from_secs(t as u64), wait)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        let _ = self.signal(&c.id, libc::SIGKILL).await;
        tokio::time::timeout(Duration::from_secs(30), wait_exit(&mut rx, seen))
            .await
            .map_err(|_| internal("the container did not exit after SIGKILL"))
    }

    /// `wait`: checks the container now; the returned future gives the exit code.
    pub fn wait(
        &self,
        name_or_id: &str,
        cond: WaitCondition,
    ) -> Result<impl std::future::Future<Output = i64> + Send + 'static> {
        let e = self.lookup(name_or_id)?;
        let mut rx = e.events.subscribe();
        let seen = rx.borrow_and_update().exits;
        let (running, code) = {
            let r = e.rec.lock().unwrap();
            (r.state.running, r.state.exit_code)
        };
        Ok(async move {
            match cond {
                WaitCondition::NotRunning if !running => code,
                WaitCondition::NotRunning | WaitCondition::NextExit => {
                    wait_exit(&mut rx, seen).await;
                    let v = rx.borrow().last_exit;
                    v
                }
                WaitCondition::Removed => {
                    let mut last = code;
                    loop {
                        {
                            let ev = rx.borrow_and_update();
                            if ev.exits > seen {
                                last = ev.last_exit;
                            }
                            if ev.removed {
                                return last;
                            }
                        }
                        if rx.changed().await.is_err() {
                            return last;
                        }
                    }
                }
            }
        })
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove(self: &Arc<Self>, name_or_id: &str, force: bool) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let id = e.rec.lock().unwrap().id.clone();
        if !self.map.lock().unwrap().contains_key(&id) {
            return Err(EngineError::NotFound(name_or_id.to_string()));
        }
        if e.rec.lock().unwrap().state.running {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"{}\": container is running: stop the container before removing or force remove",
                    e.rec.lock().unwrap().name
                )));
            }
            match self.stop_entry(&e, Some(0), Some("SIGKILL")).await {
                Ok(()) | Err(EngineError::NotModified) => {}
                Err(err) => return Err(err),
            }
        }
        // Volumes (crate::mounts): `--rm` removes anonymous volumes too.
        let anon = crate::mounts::anonymous_volumes(self, &id);
        let remove_anon = e.rec.lock().unwrap().auto_remove();
        let me = self.clone();
        let id2 = id.clone();
        // The removal is committed by one rename of the container's directory: from then on a
        // restarted daemon no longer has the container, and finishes the cleanup of what is
        // left. The storage (unmount, writable layer, directories) is cleaned in the background,
        // so that `run --rm` and `rm` return without waiting for the file system; operations
        // that need it gone (image removal, prune, shutdown) wait with `settle`.
        let trash = tokio::task::spawn_blocking(move || {
            me.net.on_remove(&id2); // [network] release the addresses
            let trash = me
                .cfg
                .data_root
                .join("containers")
                .join(format!("{REMOVING}{id2}"));
            std::fs::rename(me.data_dir(&id2), &trash).map(|_| trash)
        })
        .await
        .map_err(internal)?
        .map_err(|e| internal(format!("removing container {id}: {e}")))?;
        self.cleanups.send_modify(|n| *n += 1);
        let me = self.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || {
            me.clean_storage(&id2, &trash);
            me.cleanups.send_modify(|n| *n -= 1);
        });
        self.map.lock().unwrap().remove(&id);
        crate::mounts::on_removed(self, &id, &anon, remove_anon);
        e.pending.lock().unwrap().clear();
        self.execs.forget_container(&id);
        let c = e.rec.lock().unwrap().clone();
        self.container_event(&c, "destroy", &[]);
        e.events.send_modify(|ev| ev.removed = true);
        Ok(())
    }

    /// Unmounts and deletes the storage of a removed container (`trash` is its renamed data
    /// directory).
    fn clean_storage(&self, id: &str, trash: &Path) {
        // A shim still there (a container removed at exit, see `on_exit`) deletes the container
        // from the runtime and exits.
        if let Ok(mut c) = berth_shim::client::Client::connect(&self.shim_dir(id).join("shim.sock"))
        {
            let _ = c.set_timeout(Some(Duration::from_secs(20)));
            let _ = c.shutdown(true);
        }
        let _ = berth_image::snapshot::unmount(&self.rootfs(id));
        if let Ok(sn) = self.images.snapshotter() {
            match sn.remove_container(id) {
                Ok(()) | Err(berth_image::snapshot::SnapshotError::ContainerNotFound(_)) => {}
                Err(err) => tracing::warn!("removing snapshot of {id}: {err}"),
            }
        }
        let _ = std::fs::remove_dir_all(self.exec_dir(id));
        if let Err(e) = std::fs::remove_dir_all(trash) {
            tracing::warn!("removing {}: {e}", trash.display());
        }
    }

    /// The runtime as berthd's own children should execute it: the sealed copy (through
    /// `/proc/self/fd/N`, which a child resolves in itself: it inherits the descriptor until
    /// its exec, and an ELF binary runs even from a close-on-exec one), else the configured path.
    pub fn runtime_exe(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        match &self.runtime_copy {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.cfg.runtime.clone(),
        }
    }

    /// Waits until the storage of every removed container is cleaned up.
    pub async fn settle(&self) {
        let mut rx = self.cleanups.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Attach: a stream from the shim now (running) or once the container starts.
    pub fn attach(
        &self,
        name_or_id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<(bool, oneshot::Receiver<std::io::Result<UnixStream>>)> {
        let e = self.lookup(name_or_id)?;
        let (tx, rx) = oneshot::channel();
        let c = e.rec.lock().unwrap().clone();
        if c.state.running {
            let socket = self.shim_dir(&c.id).join("shim.sock");
            let close = c.closes_stdin();
            tokio::spawn(async move {
                let _ = tx.send(attach_shim(&socket, stdin, stdout, stderr, close).await);
            });
        } else {
            e.pending.lock().unwrap().push((stdin, stdout, stderr, tx));
        }
        Ok((c.tty(), rx))
    }

    /// Events of a container (for log following).
    pub fn subscribe(&self, name_or_id: &str) -> Result<watch::Receiver<Events>> {
        Ok(self.lookup(name_or_id)?.events.subscribe())
    }

    /// Renames a container (the name is checked and changed under the map lock).
    pub(crate) fn rename_record(
        &self,
        name_or_id: &str,
        full: &str,
    ) -> Result<(String, Container)> {
        let e = self.lookup(name_or_id)?;
        let map = self.map.lock().unwrap();
        let my_id = e.rec.lock().unwrap().id.clone();
        for (id, other) in map.iter() {
            if *id == my_id {
                continue;
            }
            let o = other.rec.lock().unwrap();
            if o.name == full {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"{full}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    o.id
                )));
            }
        }
        let mut r = e.rec.lock().unwrap();
        if r.name == full {
            return Err(EngineError::Conflict(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        let old = std::mem::replace(&mut r.name, full.to_string());
        self.persist(&r)?;
        Ok((old, r.clone()))
    }

    /// Publishes an image event (`pull`, `push`, `tag`, `untag`, `delete`, `load`, `import`).
    pub fn image_event(&self, action: &str, name: &str) {
        let mut a = serde_json::Map::new();
        a.insert("name".into(), json!(name));
        self.bus.emit("image", action, name, a);
    }

    /// Publishes a container event with Docker's attributes (name, image, labels, extras).
    pub fn container_event(&self, c: &Container, action: &str, extra: &[(&str, &str)]) {
        let mut a = serde_json::Map::new();
        if let Some(l) = c.config["Labels"].as_object() {
            for (k, v) in l {
                a.insert(k.clone(), v.clone());
            }
        }
        a.insert("image".into(), c.config["Image"].clone());
        a.insert("name".into(), json!(c.name.trim_start_matches('/')));
        for (k, v) in extra {
            a.insert(k.to_string(), json!(v));
        }
        self.bus.emit("container", action, &c.id, a);
    }

    /// (total, running, stopped) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let l = self.list();
        let running = l.iter().filter(|c| c.state.running).count();
        (l.len(), running, l.len() - running)
    }
}

impl crate::hostconfig::Peers for Engine {
    fn pid_of(&self, name_or_id: &str) -> std::result::Result<i64, String> {
        let c = self.get(name_or_id).map_err(|e| e.to_string())?;
        if !c.state.running || c.state.pid <= 0 {
            return Err(format!(
                "cannot join the namespaces of container {}: it is not running",
                c.id
            ));
        }
        Ok(c.state.pid)
    }
}

/// Whether the kernel's OOM killer fired in a container's cgroup (v1 `memory.oom_control`,
/// v2 `memory.events`).
pub fn oom_killed(cgroups_path: &str) -> bool {
    let rel = cgroups_path.trim_start_matches('/');
    let count = |p: std::path::PathBuf, key: &str| -> u64 {
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

async fn wait_exit(rx: &mut watch::Receiver<Events>, seen: u64) {
    loop {
        if rx.borrow_and_update().exits > seen || rx.borrow().removed {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn attach_shim(
    socket: &Path,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    close_stdin: bool,
) -> std::io::Result<UnixStream> {
    let mut s = shimio::connect(socket).await?;
    shimio::call_on(
        &mut s,
        &json!({"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr, "close_stdin": close_stdin}),
    )
    .await?;
    Ok(s)
}

/// Refuses options Berth cannot honour yet (never dropped silently).
fn validate(body: &Value, hc: &Value) -> Result<()> {
    let bad = |what: &str| {
        Err(EngineError::BadRequest(format!(
            "{what} is not supported by berth yet"
        )))
    };
    // [network] NetworkMode, ports, DNS and extra hosts are checked by network::on_create.
    let nonempty = |v: &Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    };
    for k in ["Links", "VolumeDriver", "DeviceRequests"] {
        if nonempty(&hc[k]) {
            return bad(&format!("HostConfig.{k}"));
        }
    }
    match hc["RestartPolicy"]["Name"].as_str().unwrap_or("") {
        "" | "no" | "always" | "unless-stopped" => {
            if hc["RestartPolicy"]["MaximumRetryCount"].as_i64().unwrap_or(0) != 0 {
                return Err(EngineError::BadRequest(
                    "maximum retry count cannot be used with restart policy 'always' or 'unless-stopped' or 'no'".into(),
                ));
            }
        }
        "on-failure" => {
            if hc["RestartPolicy"]["MaximumRetryCount"].as_i64().unwrap_or(0) < 0 {
                return Err(EngineError::BadRequest(
                    "maximum retry count cannot be negative".into(),
                ));
            }
        }
        other => {
            return Err(EngineError::BadRequest(format!(
                "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
            )))
        }
    }
    if hc["AutoRemove"].as_bool() == Some(true)
        && !matches!(
            hc["RestartPolicy"]["Name"].as_str().unwrap_or(""),
            "" | "no"
        )
    {
        return Err(EngineError::BadRequest(
            "can't create 'AutoRemove' container with restart policy".into(),
        ));
    }
    match hc["LogConfig"]["Type"].as_str().unwrap_or("") {
        "" | "json-file" => {}
        other => return bad(&format!("HostConfig.LogConfig.Type {other:?}")),
    }
    if let Some(t) = body["Healthcheck"]["Test"].as_array() {
        match t.first().and_then(Value::as_str) {
            None | Some("NONE" | "CMD" | "CMD-SHELL") => {}
            Some(other) => {
                return Err(EngineError::BadRequest(format!(
                    "invalid health check test: unknown type {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let e = validate(&json!({}), &json!({"Links": ["a:b"]})).unwrap_err();
        assert!(e.to_string().contains("HostConfig.Links"));
        assert!(validate(
            &json!({}),
            &json!({"NetworkMode": "none", "PidsLimit": 0, "Binds": null})
        )
        .is_ok());
        assert!(validate(&json!({"Volumes": {"/x": {}}}), &json!({})).is_ok());
    }
}
