//! The Kubernetes CRI (`runtime.v1` `RuntimeService` and `ImageService`, see `berth-cri`) on
//! the engine, served on its own unix socket (`/run/berth/cri.sock`) for the kubelet.
//!
//! A pod sandbox is an engine container of Berth's pause image (`berth-init` run as `pause`,
//! imported into the store at the first `RunPodSandbox`) that holds the pod's network and IPC
//! namespaces; the pod's containers are engine containers joining them (`container:<sandbox>`
//! network, IPC and optionally PID modes). The pod network is CNI's (`berth_cri::cni`), set up
//! on the sandbox's network namespace after it starts and torn down when it stops. What the
//! CRI knows beyond the engine's records (metadata, labels, annotations, pod IPs, CNI result,
//! log paths) is kept in `<data-root>/cri/{sandboxes,containers}/<id>.json`; the engine's
//! records give the processes' states, so a restarted berthd answers for running pods as
//! before.
//!
//! - [`images`]: `ImageService` on the image store (one namespace with the Docker API's).
//! - [`pods`]: sandboxes and CNI; [`containers`]: containers, `ExecSync`.
//! - [`stats`]: container and pod statistics; [`events`]: `GetContainerEvents`.
//! - [`stream`]: the streaming server of `Exec`, `Attach` and `PortForward` (SPDY and
//!   WebSocket sessions on a loopback HTTP port).
//! - [`service`]: the gRPC traits, dispatching to the above.

pub mod containers;
pub mod events;
pub mod images;
pub mod pods;
pub mod service;
pub mod stats;
pub mod store;
pub mod stream;

use std::path::PathBuf;
use std::sync::Arc;

use berth_cri::cni::CniConfig;
use berth_cri::proto::image_service_server::ImageServiceServer;
use berth_cri::proto::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::engine::{Engine, EngineError};

/// The label that marks an engine container as a CRI object (`sandbox` or `container`).
pub const KIND_LABEL: &str = "io.berth.cri.kind";
/// The sandbox of a CRI container.
pub const SANDBOX_LABEL: &str = "io.berth.cri.sandbox";

/// The largest message either side may send (the kubelet's limit).
const MAX_MESSAGE: usize = 16 << 20;

/// The CRI's settings.
#[derive(Debug, Clone)]
pub struct CriConfig {
    pub socket: PathBuf,
    pub cni: CniConfig,
}

/// The CRI service: cheap until used (records are read when asked for, the pause image is
/// made at the first sandbox).
pub struct Cri {
    pub(crate) engine: Arc<Engine>,
    pub(crate) cni: CniConfig,
    pub(crate) store: store::Store,
    /// The streaming server's pending sessions.
    pub(crate) streams: stream::Streams,
    /// Serialises making the pause image.
    pause: tokio::sync::Mutex<()>,
    /// The previous CPU samples (for `usage_nano_cores`).
    pub(crate) cpu_samples: stats::CpuSamples,
    /// The `GetContainerEvents` streams.
    pub(crate) events: events::Events,
}

impl Cri {
    pub fn new(engine: Arc<Engine>, cni: CniConfig) -> Arc<Cri> {
        let store = store::Store::new(engine.cfg.data_root.join("cri"));
        Arc::new(Cri {
            engine,
            cni,
            store,
            streams: stream::Streams::default(),
            pause: tokio::sync::Mutex::new(()),
            cpu_samples: Default::default(),
            events: Default::default(),
        })
    }
}

impl Cri {
    /// Creates the engine container of a sandbox or container (of the given id, else a new
    /// one); a name in use (the same pod or container attempt) is `AlreadyExists`.
    /// `log_path`, when not empty, is the CRI log file (the shim writes it in the CRI
    /// format), set in the record's one write. Volatile (neither the create's intent nor
    /// its record is synced, see `engine::create::CreateOptions`): a node's reboot ends
    /// every pod, the kubelet makes new ones, and the daemon's start removes what a power
    /// loss left of the create.
    pub(crate) async fn create_engine_container(
        &self,
        id: Option<String>,
        name: String,
        config: berth_api::container::Config,
        host_config: berth_api::container::HostConfig,
        log_path: String,
    ) -> Result<String, tonic::Status> {
        let engine = self.engine.clone();
        blocking(move || {
            let req = berth_api::container::CreateRequest {
                config,
                host_config: Some(host_config),
                networking_config: None,
            };
            let finish = |c: &mut crate::engine::Container| {
                if !log_path.is_empty() {
                    c.log_path = log_path;
                    c.host_config.log_config.kind = crate::logs::CRI_DRIVER.into();
                }
            };
            let opts = crate::engine::create::CreateOptions { id, volatile: true };
            match engine.create_with(Some(&name), req, opts, finish) {
                Ok((id, _)) => Ok(id),
                Err(EngineError::Conflict(m)) => Err(tonic::Status::already_exists(m)),
                Err(e) => Err(status(e)),
            }
        })
        .await
    }

    /// Removes the engine containers of sandboxes and containers the CRI has no record of:
    /// those whose create a crash cut short before the record was written, or whose record
    /// (written without a sync until the sandbox is complete) a power loss took. Before the
    /// CRI is served, when no create is under way.
    pub(crate) async fn remove_orphans(&self) {
        for c in self.engine.list() {
            let kind = c
                .config
                .labels
                .as_ref()
                .and_then(|l| l.get(KIND_LABEL))
                .map(String::as_str);
            let known = match kind {
                Some("sandbox") => self.store.sandbox(&c.id).map(|r| r.is_some()),
                Some("container") => self.store.container(&c.id).map(|r| r.is_some()),
                _ => continue,
            };
            // An unreadable record is kept (and reported when it is used).
            if known.unwrap_or(true) {
                continue;
            }
            tracing::info!("CRI: removing {} (no CRI record)", c.name);
            if kind == Some("sandbox") {
                self.release_orphan_network(&c).await;
            }
            if let Err(e) = self.engine.remove(&c.id, true, true).await {
                tracing::warn!("CRI: removing {}: {e}", c.name);
            }
        }
    }
}

/// Serves the CRI on `listener` until `stop` changes.
pub async fn serve(listener: UnixListener, cri: Arc<Cri>, mut stop: watch::Receiver<bool>) {
    cri.remove_orphans().await;
    cri.recover_networks().await;
    tokio::spawn(events::watch_exits(cri.clone(), stop.clone()));
    let runtime = RuntimeServiceServer::new(service::Service(cri.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(service::Service(cri))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let routes = tonic::service::Routes::new(runtime).add_service(images);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((conn, _)) => {
                    let routes = routes.clone();
                    tokio::spawn(async move {
                        if let Err(e) = berth_buildkit::conn::serve(conn, routes).await {
                            tracing::debug!("CRI connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("CRI socket: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

/// The time a request spends in its phases, logged at debug level when dropped
/// (`RunPodSandbox: 41.2 ms ((record 1.2, netns 0.7, cni alone 19.1, create 9.8,
/// create+start alone) 30.0, start+cni 30.1, save 0.3)`).
pub(crate) struct Phases {
    what: &'static str,
    t0: std::time::Instant,
    last: std::time::Instant,
    parts: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    pub(crate) fn new(what: &'static str) -> Phases {
        let now = std::time::Instant::now();
        Phases {
            what,
            t0: now,
            last: now,
            parts: Vec::new(),
        }
    }

    /// A part that ran alongside others (its own duration, not counted in the sequence).
    pub(crate) fn record(&mut self, name: &'static str, d: std::time::Duration) {
        self.parts.push((name, d));
    }

    /// The phase `name` ended now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(n, d)| format!("{n} {:.1}", ms(*d)))
            .collect();
        tracing::debug!(
            "CRI {}: {:.1} ms ({})",
            self.what,
            ms(self.t0.elapsed()),
            parts.join(", ")
        );
    }
}

/// An engine error as a gRPC status.
pub(crate) fn status(e: EngineError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        EngineError::NotFound(_)
        | EngineError::ImageNotFound(_)
        | EngineError::ExecNotFound(_)
        | EngineError::Missing(_) => tonic::Status::not_found(msg),
        EngineError::Conflict(_) => tonic::Status::failed_precondition(msg),
        EngineError::BadRequest(_) => tonic::Status::invalid_argument(msg),
        EngineError::Forbidden(_) | EngineError::Unauthorized(_) => {
            tonic::Status::permission_denied(msg)
        }
        _ => tonic::Status::internal(msg),
    }
}

/// A blocking piece of work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tonic::Status> + Send + 'static,
) -> Result<T, tonic::Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?
}

/// Nanoseconds since the epoch of an RFC 3339 time (0 for none).
pub(crate) fn nanos(rfc3339: &str) -> i64 {
    berth_util::time::parse_rfc3339(rfc3339)
        .filter(|(s, _)| *s > 0)
        .map(|(s, n)| s.saturating_mul(1_000_000_000).saturating_add(n as i64))
        .unwrap_or(0)
}

/// Now, in nanoseconds since the epoch.
pub(crate) fn now_nanos() -> i64 {
    let (s, n) = berth_util::time::now();
    s.saturating_mul(1_000_000_000).saturating_add(n as i64)
}

/// A protobuf map as a sorted map, and back.
pub(crate) fn map(
    m: &std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn hmap(
    m: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Whether `labels` has every pair of `selector` (the CRI's label filters).
pub(crate) fn selects(
    labels: &std::collections::BTreeMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
