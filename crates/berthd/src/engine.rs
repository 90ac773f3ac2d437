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
}

impl Container {
    pub fn tty(&self) -> bool {
        self.config["Tty"].as_bool().unwrap_or(false)
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

struct Entry {
    rec: Mutex<Container>,
    events: watch::Sender<Events>,
    pending: Mutex<Vec<PendingAttach>>,
    op: tokio::sync::Mutex<()>,
}

/// The container engine.
pub struct Engine {
    pub cfg: EngineConfig,
    pub images: ImageStore,
    /// Named volumes (crate::volumes).
    pub volumes: crate::volumes::VolumeStore,
    map: Mutex<HashMap<String, Arc<Entry>>>,
}

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
        let images = ImageStore::open(&cfg.data_root)?;
        let volumes = crate::volumes::VolumeStore::open(&cfg.data_root.join("volumes"))?;
        let engine = Arc::new(Engine {
            cfg,
            images,
            volumes,
            map: Mutex::new(HashMap::new()),
        });
        for ent in std::fs::read_dir(engine.cfg.data_root.join("containers"))? {
            let ent = ent?;
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
            tokio::spawn(async move { me.monitor(id).await });
        }
    }

    fn insert(&self, c: Container) -> Arc<Entry> {
        let id = c.id.clone();
        let e = Arc::new(Entry {
            rec: Mutex::new(c),
            events: watch::channel(Events::default()).0,
            pending: Mutex::new(Vec::new()),
            op: tokio::sync::Mutex::new(()),
        });
        self.map.lock().unwrap().insert(id, e.clone());
        e
    }

    fn data_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_root.join("containers").join(id)
    }
    fn exec_dir(&self, id: &str) -> PathBuf {
        self.cfg.exec_root.join("containers").join(id)
    }
    fn shim_dir(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("shim")
    }
    fn rootfs(&self, id: &str) -> PathBuf {
        self.exec_dir(id).join("rootfs")
    }

    fn persist(&self, c: &Container) -> Result<()> {
        util::write_json_atomic(&self.data_dir(&c.id).join("config.v2.json"), c).map_err(internal)
    }

    fn lookup(&self, name_or_id: &str) -> Result<Arc<Entry>> {
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
        });
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
        if let Err(e) = crate::mounts::commit(self, &id, &planned) {
            if let Ok(sn) = self.images.snapshotter() {
                let _ = sn.remove_container(&id);
            }
            let _ = std::fs::remove_dir_all(self.data_dir(&id));
            return Err(e);
        }
        self.persist(&container)?;
        self.insert(container);
        Ok((id, Vec::new()))
    }

    /// Starts a created or exited container.
    pub async fn start(self: &Arc<Self>, name_or_id: &str) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let c = e.rec.lock().unwrap().clone();
        if c.state.running {
            return Err(EngineError::NotModified);
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
            let r = attach_shim(&socket, i, o, er).await;
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
            r.state = CState {
                status: "running".into(),
                running: true,
                pid: init_pid,
                started_at: util::now_rfc3339_nano(),
                finished_at: r.state.finished_at.clone(),
                ..CState::default()
            };
            r.shim_pid = shim_pid;
            self.persist(&r)?;
        }
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
            if let Err(err) = self.persist(&r) {
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
        sn.mount_container(id, &rootfs).map_err(internal)?;
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
        let hosts = dd.join("hosts");
        let hosts_body = if host_net {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{hostname}\n")
        };
        std::fs::write(&hosts, hosts_body).map_err(|e| fail(internal(e)))?;
        etc.push((hosts.display().to_string(), "/etc/hosts".to_string()));
        if let Ok(r) = std::fs::read("/etc/resolv.conf") {
            let rc = dd.join("resolv.conf");
            std::fs::write(&rc, r).map_err(|e| fail(internal(e)))?;
            etc.push((rc.display().to_string(), "/etc/resolv.conf".to_string()));
        }
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
        let mut args = vec![c.path.clone()];
        args.extend(c.args.iter().cloned());
        // Volumes, binds, tmpfs (crate::mounts): copy-up and OCI mount entries.
        let user_mounts = crate::mounts::setup(self, id, &rootfs).map_err(fail)?;
        let fail = |e: EngineError| {
            crate::mounts::on_stopped(self, id);
            fail(e)
        };
        let cfg = spec::build(&spec::SpecInput {
            args: &args,
            env: &env,
            cwd: c.config["WorkingDir"].as_str().unwrap_or("/"),
            uid,
            gid,
            additional_gids: vec![],
            tty: c.tty(),
            hostname: &hostname,
            host_network: host_net,
            cgroups_path: format!("{}/{}", self.cfg.cgroup_parent.trim_end_matches('/'), id),
            etc_files: etc,
            mounts: user_mounts,
        });
        util::write_json_atomic(&exec_dir.join("config.json"), &cfg)
            .map_err(|e| fail(internal(e)))?;
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
        if !host_net {
            // The container exists (its init waits for `start`): bring its loopback up.
            let pid = report["init_pid"].as_i64().unwrap_or(0);
            if let Err(e) = crate::netns::spawn_loopback_up(pid) {
                let socket = shim_dir.join("shim.sock");
                if let Ok(mut c) = berth_shim::client::Client::connect(&socket) {
                    let _ = c.shutdown(true);
                }
                return Err(fail(internal(format!(
                    "setting up the loopback interface: {e}"
                ))));
            }
        }
        Ok(report)
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
        let auto_remove = {
            let mut r = e.rec.lock().unwrap();
            r.state.running = false;
            r.state.status = "exited".into();
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.finished_at = finished;
            r.state.error = error;
            r.shim_pid = 0;
            if let Err(err) = self.persist(&r) {
                tracing::warn!("persisting {id}: {err}");
            }
            r.auto_remove()
        };
        let socket = self.shim_dir(id).join("shim.sock");
        let _ = shimio::call(&socket, json!({"op": "shutdown", "force": true})).await;
        let _ = berth_image::snapshot::unmount(&self.rootfs(id));
        crate::mounts::on_stopped(self, id);
        e.events.send_modify(|ev| {
            ev.exits += 1;
            ev.last_exit = code;
        });
        if auto_remove {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(err) = me.remove(&id, true).await {
                    tracing::warn!("auto-removing {id}: {err}");
                }
            });
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
        self.signal(&c.id, sig).await
    }

    /// `stop`: the stop signal, `t` seconds, then SIGKILL.
    pub async fn stop(&self, name_or_id: &str, t: Option<i64>, signal: Option<&str>) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        self.stop_entry(&e, t, signal).await
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
        let _ = tokio::task::spawn_blocking(move || {
            let _ = berth_image::snapshot::unmount(&me.rootfs(&id2));
            if let Ok(sn) = me.images.snapshotter() {
                if let Err(err) = sn.remove_container(&id2) {
                    tracing::warn!("removing snapshot of {id2}: {err}");
                }
            }
            let _ = std::fs::remove_dir_all(me.exec_dir(&id2));
            let _ = std::fs::remove_dir_all(me.data_dir(&id2));
        })
        .await;
        self.map.lock().unwrap().remove(&id);
        crate::mounts::on_removed(self, &id, &anon, remove_anon);
        e.pending.lock().unwrap().clear();
        e.events.send_modify(|ev| ev.removed = true);
        Ok(())
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
            tokio::spawn(async move {
                let _ = tx.send(attach_shim(&socket, stdin, stdout, stderr).await);
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

    /// (total, running, stopped) counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let l = self.list();
        let running = l.iter().filter(|c| c.state.running).count();
        (l.len(), running, l.len() - running)
    }
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
) -> std::io::Result<UnixStream> {
    let mut s = shimio::connect(socket).await?;
    shimio::call_on(
        &mut s,
        &json!({"op": "attach", "stdin": stdin, "stdout": stdout, "stderr": stderr, "close_stdin": true}),
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
    match hc["NetworkMode"].as_str().unwrap_or("") {
        "" | "default" | "bridge" | "none" | "host" => {}
        other => return bad(&format!("HostConfig.NetworkMode {other:?}")),
    }
    let nonempty = |v: &Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    };
    for k in [
        "PortBindings",
        "Privileged",
        "CapAdd",
        "CapDrop",
        "Devices",
        "Memory",
        "MemoryReservation",
        "NanoCpus",
        "CpuShares",
        "CpuQuota",
        "CpuPeriod",
        "CpusetCpus",
        "CpusetMems",
        "PidsLimit",
        "ReadonlyRootfs",
        "SecurityOpt",
        "Ulimits",
        "Init",
        "Dns",
        "DnsSearch",
        "DnsOptions",
        "ExtraHosts",
        "Links",
        "PublishAllPorts",
        "PidMode",
        "UTSMode",
        "UsernsMode",
        "GroupAdd",
        "Sysctls",
        "BlkioWeight",
        "OomKillDisable",
        "Runtime",
        "VolumeDriver",
        "DeviceRequests",
        "ShmSize",
    ] {
        if nonempty(&hc[k]) {
            // A PidsLimit of -1 or 0 means unlimited; ShmSize 0 is the default.
            if k == "PidsLimit" && hc[k].as_i64().unwrap_or(0) <= 0 {
                continue;
            }
            return bad(&format!("HostConfig.{k}"));
        }
    }
    match hc["IpcMode"].as_str().unwrap_or("") {
        "" | "private" | "shareable" => {}
        other => return bad(&format!("HostConfig.IpcMode {other:?}")),
    }
    match hc["RestartPolicy"]["Name"].as_str().unwrap_or("") {
        "" | "no" => {}
        other => return bad(&format!("HostConfig.RestartPolicy {other:?}")),
    }
    match hc["LogConfig"]["Type"].as_str().unwrap_or("") {
        "" | "json-file" => {}
        other => return bad(&format!("HostConfig.LogConfig.Type {other:?}")),
    }
    for k in ["ExposedPorts", "Healthcheck"] {
        if nonempty(&body[k]) {
            if k == "Healthcheck" && body[k]["Test"].is_null() {
                continue;
            }
            return bad(k);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let e = validate(&json!({}), &json!({"Privileged": true})).unwrap_err();
        assert!(e.to_string().contains("HostConfig.Privileged"));
        assert!(validate(
            &json!({}),
            &json!({"NetworkMode": "none", "PidsLimit": 0, "Binds": null})
        )
        .is_ok());
        assert!(validate(&json!({}), &json!({"NetworkMode": "mynet"})).is_err());
        assert!(validate(&json!({"ExposedPorts": {"80/tcp": {}}}), &json!({})).is_err());
    }
}
