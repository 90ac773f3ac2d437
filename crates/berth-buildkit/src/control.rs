//! The control API (`moby.buildkit.v1.Control`) and the gateway (`LLBBridge`) on one gRPC
//! connection.
//!
//! A buildx build is one control `Solve` with no frontend: the client then drives the build
//! through the gateway on the same connection (its calls carry the solve's ref in the
//! `buildkit-controlapi-buildid` metadata): `Ping`, a gateway `Solve` with the
//! `dockerfile.v0` frontend (which builds), and `Return` with the result. The control `Solve`
//! waits for that `Return`, runs the exporters and answers. A control `Solve` naming the
//! `dockerfile.v0` frontend itself builds directly.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::image_store::{ImageStore, ImageStoreError};
use tokio::sync::{oneshot, watch, Notify};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::errors::SolveError;
use crate::frontend::{self, BuildResult, FrontendRun};
use crate::progress::Progress;
use crate::proto::moby::buildkit::v1 as ctl;
use crate::proto::moby::buildkit::v1::apicaps::ApiCap;
use crate::proto::moby::buildkit::v1::frontend as gw;
use crate::proto::moby::buildkit::v1::types::{BuildkitVersion, GcPolicy, WorkerRecord};
use crate::proto::pb;
use crate::BuildKit;

/// How long a solve waits for its session to connect, and gateway calls for their solve.
const ATTACH_WAIT: Duration = Duration::from_secs(15);

/// What the client's `Return` gave: a result ref (or none), or its build function's error.
type Returned = Result<Option<String>, SolveError>;

/// A control solve in progress.
pub struct Job {
    pub id: String,
    pub session_id: String,
    pub attrs: HashMap<String, String>,
    pub exporters: Vec<ctl::Exporter>,
    pub progress: Arc<Progress>,
    /// Results of gateway solves, by the ref ID handed to the client.
    results: Mutex<HashMap<String, BuildResult>>,
    /// The client's `Return`.
    returned: Mutex<Option<oneshot::Sender<Returned>>>,
    cancel: watch::Receiver<bool>,
}

/// Solves and their progress, by ref.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    changed: Notify,
}

impl Jobs {
    fn progress(&self, id: &str) -> Arc<Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn insert(&self, job: Arc<Job>) -> Result<(), SolveError> {
        let mut g = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if g.contains_key(&job.id) {
            return Err(SolveError::new(
                tonic::Code::AlreadyExists,
                format!("a solve with ref {} is already running", job.id),
            ));
        }
        g.insert(job.id.clone(), job);
        drop(g);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Ends a solve: its job goes; its progress stays a while for late `Status` calls.
    /// Ends the progress of a solve that failed before it had a job (a refused exporter or
    /// option): its `Status` subscribers, early or late, see the end. Another job of the
    /// same ref keeps its progress.
    fn end_refused(self: &Arc<Self>, id: &str) {
        if self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            return;
        }
        self.progress(id);
        self.remove(id);
    }

    fn remove(self: &Arc<Self>, id: &str) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(p) = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            p.finish();
        }
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            me.progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    async fn wait(&self, id: &str) -> Option<Arc<Job>> {
        let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
                return Some(j.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// The gRPC routes of the `/grpc` connection.
pub fn routes(bk: Arc<BuildKit>) -> tonic::service::Routes {
    let c = ctl::control_server::ControlServer::from_arc(Arc::new(ControlApi(bk.clone())))
        .max_decoding_message_size(crate::conn::MAX_MESSAGE)
        .max_encoding_message_size(crate::conn::MAX_MESSAGE);
    let g = gw::llb_bridge_server::LlbBridgeServer::from_arc(Arc::new(Gateway(bk)))
        .max_decoding_message_size(crate::conn::MAX_MESSAGE)
        .max_encoding_message_size(crate::conn::MAX_MESSAGE);
    tonic::service::Routes::new(c).add_service(g)
}

/// The platforms the worker builds: the host's, then those its binfmt_misc handlers run.
/// Every build asks (`ListWorkers`), and reading the handlers may mount `binfmt_misc`
/// privately (a mount and an unmount: milliseconds); so the list is read once, and when
/// older than 10 s the last one is answered while a thread reads it again (a handler
/// registered since shows from the next build on).
fn platforms() -> Vec<pb::Platform> {
    struct Seen {
        at: std::time::Instant,
        list: Vec<berth_image::manifest::Platform>,
        refreshing: bool,
    }
    static SEEN: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
    fn lock() -> std::sync::MutexGuard<'static, Option<Seen>> {
        SEEN.lock().unwrap_or_else(|p| p.into_inner())
    }
    let mut seen = lock();
    let list = match &mut *seen {
        Some(s) => {
            if s.at.elapsed() >= Duration::from_secs(10) && !s.refreshing {
                s.refreshing = true;
                let spawned = std::thread::Builder::new()
                    .name("berth-platforms".into())
                    .spawn(|| {
                        let list = berth_build::binfmt::runnable_platforms();
                        *lock() = Some(Seen {
                            at: std::time::Instant::now(),
                            list,
                            refreshing: false,
                        });
                    });
                if let Err(e) = spawned {
                    tracing::warn!("reading the binfmt_misc handlers again: {e}");
                    s.refreshing = false;
                }
            }
            s.list.clone()
        }
        None => {
            let list = berth_build::binfmt::runnable_platforms();
            *seen = Some(Seen {
                at: std::time::Instant::now(),
                list: list.clone(),
                refreshing: false,
            });
            list
        }
    };
    drop(seen);
    list.into_iter()
        .map(|p| pb::Platform {
            architecture: p.architecture,
            os: p.os,
            variant: p.variant.unwrap_or_default(),
            ..Default::default()
        })
        .collect()
}

fn worker(bk: &BuildKit) -> WorkerRecord {
    let mut labels = HashMap::new();
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    for (k, v) in [
        ("executor", "oci"),
        // buildx enables its OCI/docker exporters, cache export and direct push for the
        // docker driver when the worker names a snapshotter.
        ("snapshotter", "overlayfs"),
        ("network", "host"),
        ("oci.process-mode", "sandbox"),
    ] {
        labels.insert(
            format!("org.mobyproject.buildkit.worker.{k}"),
            v.to_string(),
        );
    }
    labels.insert("org.mobyproject.buildkit.worker.hostname".into(), host);
    labels.insert(
        "org.mobyproject.buildkit.worker.moby.host-gateway-ip".into(),
        "127.0.0.1".into(),
    );
    WorkerRecord {
        id: "berth".into(),
        labels,
        platforms: platforms(),
        gc_policy: vec![GcPolicy {
            all: false,
            keep_duration: 48 * 3600 * 1_000_000_000,
            ..Default::default()
        }],
        buildkit_version: Some(version(bk)),
    }
}

fn version(bk: &BuildKit) -> BuildkitVersion {
    BuildkitVersion {
        package: "berth".into(),
        version: bk.backend().version(),
        revision: String::new(),
    }
}

fn caps(ids: &[&str]) -> Vec<ApiCap> {
    ids.iter()
        .map(|id| ApiCap {
            id: id.to_string(),
            enabled: true,
            ..Default::default()
        })
        .collect()
}

/// The gateway features Berth serves.
const GATEWAY_CAPS: &[&str] = &[
    "solve.base",
    "solve.inlinereturn",
    "resolveimage",
    "resolveimage.resolvemode",
    "readfile",
    "return",
    "returnmap",
    "readdir",
    "statfile",
    "importcaches",
    "proto.refarray",
    "frontend.inputs",
    "gateway.solve.metadata",
    "frontend.caps",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "gateway.warnings",
];

/// LLB features: those the dockerfile frontend's options need (Berth runs LLB only through
/// its own frontend).
const LLB_CAPS: &[&str] = &[
    "source.image",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "exec.meta.base",
    "exec.meta.proxyenv",
    "exec.mount.bind",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.secret",
    "exec.mount.ssh",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "meta.exportcache",
    "exporter.image.annotations",
    "exporter.multiple",
];

struct ControlApi(Arc<BuildKit>);
struct Gateway(Arc<BuildKit>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Sets the cancel flag when dropped (the client cancelled the call, or it ended).
struct CancelOnDrop(watch::Sender<bool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl ControlApi {
    async fn solve_inner(
        &self,
        req: ctl::SolveRequest,
    ) -> Result<HashMap<String, String>, SolveError> {
        let bk = &self.0;
        let t0 = std::time::Instant::now();
        let phase = |what: &str| {
            tracing::debug!(solve = %req.r#ref, ms = t0.elapsed().as_secs_f64() * 1e3, "solve: {what}");
        };
        let mut exporters = req.exporters.clone();
        if exporters.is_empty() && !req.exporter_deprecated.is_empty() {
            exporters.push(ctl::Exporter {
                r#type: req.exporter_deprecated.clone(),
                attrs: req.exporter_attrs_deprecated.clone(),
            });
        }
        let multi = crate::frontend::platforms(&req.frontend_attrs)?.len() > 1;
        crate::export::check(&exporters, multi)?;
        let cache = req.cache.clone().unwrap_or_default();
        let mut cache_exports = crate::cache_io::from_proto(&cache.exports);
        if !cache.export_ref_deprecated.is_empty() {
            let mut attrs = cache.export_attrs_deprecated.clone();
            attrs.insert("ref".into(), cache.export_ref_deprecated.clone());
            cache_exports.push(crate::cache_io::CacheEntry {
                kind: "registry".into(),
                attrs,
            });
        }
        crate::cache_io::check(&cache_exports, true)?;
        let mut cache_imports = crate::cache_io::from_proto(&cache.imports);
        for r in &cache.import_refs_deprecated {
            cache_imports.push(crate::cache_io::CacheEntry {
                kind: "registry".into(),
                attrs: [("ref".to_string(), r.clone())].into_iter().collect(),
            });
        }
        crate::cache_io::check(&cache_imports, false)?;
        if req.definition.as_ref().is_some_and(|d| !d.def.is_empty()) {
            return Err(SolveError::new(
                tonic::Code::Unimplemented,
                "LLB definitions are not supported: Berth builds Dockerfiles (frontend dockerfile.v0)",
            ));
        }
        // BuildKit's solver waits for the client's gateway calls only when the request has
        // neither a definition nor a frontend; a present but empty definition (a marshalled
        // `llb.Scratch()`) solves to an empty result at once.
        let empty_definition = req.frontend.is_empty() && req.definition.is_some();
        let direct = match req.frontend.as_str() {
            "" => false,
            "dockerfile.v0" => true,
            other => {
                return Err(SolveError::new(
                    tonic::Code::Unimplemented,
                    format!("frontend {other:?} is not supported (dockerfile.v0 is)"),
                ))
            }
        };
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let _cancel = CancelOnDrop(cancel_tx);
        let (ret_tx, ret_rx) = oneshot::channel();
        let progress = bk.jobs.progress(&req.r#ref);
        let job = Arc::new(Job {
            id: req.r#ref.clone(),
            session_id: req.session.clone(),
            attrs: req.frontend_attrs.clone(),
            exporters: exporters.clone(),
            progress: progress.clone(),
            results: Mutex::new(HashMap::new()),
            returned: Mutex::new(Some(ret_tx)),
            cancel: cancel_rx.clone(),
        });
        bk.jobs.insert(job.clone())?;
        struct Remove<'a>(&'a Arc<Jobs>, String);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                self.0.remove(&self.1);
            }
        }
        let _remove = Remove(&bk.jobs, req.r#ref.clone());
        let session = if req.session.is_empty() {
            None
        } else {
            Some(
                bk.sessions()
                    .get(&req.session, ATTACH_WAIT)
                    .await
                    .ok_or_else(|| {
                        SolveError::unknown(format!("session {} not found", req.session))
                    })?,
            )
        };
        phase("session attached");
        let result = if empty_definition {
            None
        } else if direct {
            let session = session.clone().ok_or_else(|| {
                SolveError::new(
                    tonic::Code::InvalidArgument,
                    "the dockerfile frontend needs a session",
                )
            })?;
            let run = FrontendRun {
                solve_id: req.r#ref.clone(),
                attrs: req.frontend_attrs.clone(),
                session: session.clone(),
                progress: progress.clone(),
                tags: crate::export::store_names(&exporters)?,
                cancel: cancel_rx.clone(),
                cache_imports: cache_imports.clone(),
            };
            let fut = frontend::dockerfile(bk, run);
            tokio::select! {
                r = fut => Some(r?),
                _ = session.closed() => return Err(SolveError::new(tonic::Code::Cancelled, "the client's session ended")),
            }
        } else {
            // The client's build function drives the gateway until it returns.
            let ret = async {
                ret_rx.await.unwrap_or_else(|_| {
                    Err(SolveError::unknown(
                        "the build function ended without a result",
                    ))
                })
            };
            let closed = async {
                match &session {
                    Some(s) => s.closed().await,
                    None => std::future::pending().await,
                }
            };
            let r = tokio::select! {
                r = ret => r?,
                _ = closed => return Err(SolveError::new(tonic::Code::Cancelled, "the client's session ended")),
            };
            match r {
                None => None,
                Some(id) => Some(
                    job.results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| SolveError::unknown(format!("unknown result ref {id}")))?,
                ),
            }
        };
        phase("result ready");
        let Some(result) = result else {
            if exporters.iter().any(|e| !e.r#type.is_empty()) && !req.internal {
                return Err(SolveError::unknown(
                    "the build returned no result to export",
                ));
            }
            return Ok(HashMap::new());
        };
        let resp = crate::export::run(
            bk,
            &req.r#ref,
            &exporters,
            &result,
            session.as_ref(),
            &progress,
        )
        .await?;
        let mut resp = resp;
        resp.extend(
            crate::cache_io::export(
                bk,
                session.as_ref(),
                &req.r#ref,
                &cache_exports,
                &result,
                &progress,
            )
            .await?,
        );
        phase("exported");
        Ok(resp)
    }
}

#[tonic::async_trait]
impl ctl::control_server::Control for ControlApi {
    async fn disk_usage(
        &self,
        _req: Request<ctl::DiskUsageRequest>,
    ) -> Result<Response<ctl::DiskUsageResponse>, Status> {
        let store = self.0.backend().store();
        let records = tokio::task::spawn_blocking(move || crate::cache::usage(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ctl::DiskUsageResponse { record: records }))
    }

    type PruneStream = BoxStream<ctl::UsageRecord>;

    async fn prune(
        &self,
        req: Request<ctl::PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
        let req = req.into_inner();
        let store = self.0.backend().store();
        let records = tokio::task::spawn_blocking(move || crate::cache::prune(&store, &req))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| e.to_status())?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            records.into_iter().map(Ok),
        ))))
    }

    async fn solve(
        &self,
        req: Request<ctl::SolveRequest>,
    ) -> Result<Response<ctl::SolveResponse>, Status> {
        let req = req.into_inner();
        tracing::debug!(
            "solve {} frontend {:?} exporters {:?} cache {:?}",
            req.r#ref,
            req.frontend,
            req.exporters,
            req.cache
        );
        let id = req.r#ref.clone();
        match self.solve_inner(req).await {
            Ok(r) => Ok(Response::new(ctl::SolveResponse {
                exporter_response: r,
            })),
            Err(e) => {
                tracing::info!("solve failed: {}", e.message);
                self.0.jobs.end_refused(&id);
                Err(e.to_status())
            }
        }
    }

    type StatusStream = BoxStream<ctl::StatusResponse>;

    async fn status(
        &self,
        req: Request<ctl::StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let id = req.into_inner().r#ref;
        let rx = self.0.jobs.progress(&id).subscribe();
        let s = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(s)))
    }

    async fn list_workers(
        &self,
        _req: Request<ctl::ListWorkersRequest>,
    ) -> Result<Response<ctl::ListWorkersResponse>, Status> {
        Ok(Response::new(ctl::ListWorkersResponse {
            record: vec![worker(&self.0)],
        }))
    }

    async fn info(
        &self,
        _req: Request<ctl::InfoRequest>,
    ) -> Result<Response<ctl::InfoResponse>, Status> {
        Ok(Response::new(ctl::InfoResponse {
            buildkit_version: Some(version(&self.0)),
        }))
    }

    type ListenBuildHistoryStream = BoxStream<ctl::BuildHistoryEvent>;

    /// Berth keeps no build history records: a clear Unimplemented at once (never a stream
    /// that stays open without events).
    async fn listen_build_history(
        &self,
        _req: Request<ctl::BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        Err(Status::unimplemented(NO_HISTORY))
    }

    async fn update_build_history(
        &self,
        _req: Request<ctl::UpdateBuildHistoryRequest>,
    ) -> Result<Response<ctl::UpdateBuildHistoryResponse>, Status> {
        Err(Status::unimplemented(NO_HISTORY))
    }
}

const NO_HISTORY: &str = "build history is not supported: Berth keeps no build history records";

use tokio_stream::StreamExt as _;

impl Gateway {
    async fn job<T>(&self, req: &Request<T>) -> Result<Arc<Job>, Status> {
        let id = req
            .metadata()
            .get("buildkit-controlapi-buildid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "no build ID (buildkit-controlapi-buildid) in the request",
            ));
        }
        self.0
            .jobs
            .wait(&id)
            .await
            .ok_or_else(|| Status::not_found(format!("no such job {id}")))
    }

    fn result(job: &Job, r#ref: &str) -> Result<BuildResult, Status> {
        job.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(r#ref)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no such ref {ref}")))
    }

    /// Runs `read` (one of the gateway's file reads) on the result `r#ref` of `job`, in a
    /// blocking task.
    async fn read_result<T: Send + 'static>(
        &self,
        job: &Job,
        r#ref: &str,
        read: impl FnOnce(&ImageStore, &BuildResult) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let res = Self::result(job, r#ref)?;
        let store = self.0.backend().store();
        tokio::task::spawn_blocking(move || read(&store, &res))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl gw::llb_bridge_server::LlbBridge for Gateway {
    async fn resolve_image_config(
        &self,
        req: Request<gw::ResolveImageConfigRequest>,
    ) -> Result<Response<gw::ResolveImageConfigResponse>, Status> {
        let r = req.into_inner();
        let store = self.0.backend().store();
        let name = r.r#ref.clone();
        let found = tokio::task::spawn_blocking(move || -> Result<_, ImageStoreError> {
            let res = store.resolve(&name)?;
            let cfg = store.config_bytes(&res.image.id)?;
            let d = res
                .image
                .manifests
                .first()
                .map(|d| d.to_string())
                .unwrap_or_else(|| res.image.id.to_string());
            Ok((d, cfg))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(gw::ResolveImageConfigResponse {
            digest: found.0,
            config: found.1,
            r#ref: r.r#ref,
        }))
    }

    async fn solve(
        &self,
        req: Request<gw::SolveRequest>,
    ) -> Result<Response<gw::SolveResponse>, Status> {
        let job = self.job(&req).await?;
        let r = req.into_inner();
        if r.definition.as_ref().is_some_and(|d| !d.def.is_empty()) || r.frontend.is_empty() {
            return Err(Status::unimplemented(
                "LLB definitions are not supported: Berth builds Dockerfiles (frontend dockerfile.v0)",
            ));
        }
        if r.frontend != "dockerfile.v0" {
            return Err(Status::unimplemented(format!(
                "frontend {:?} is not supported (dockerfile.v0 is)",
                r.frontend
            )));
        }
        if let Some(rid) = r
            .frontend_opt
            .get("requestid")
            .filter(|s| s.starts_with("frontend."))
        {
            return Err(Status::unimplemented(format!(
                "build checks and subrequests ({rid}) are not supported"
            )));
        }
        let session = self
            .0
            .sessions()
            .get(&job.session_id, ATTACH_WAIT)
            .await
            .ok_or_else(|| {
                Status::failed_precondition(format!("session {} not found", job.session_id))
            })?;
        let mut attrs = job.attrs.clone();
        attrs.extend(r.frontend_opt.clone());
        let run = FrontendRun {
            solve_id: job.id.clone(),
            attrs,
            session: session.clone(),
            progress: job.progress.clone(),
            tags: crate::export::store_names(&job.exporters).map_err(|e| e.to_status())?,
            cancel: job.cancel.clone(),
            cache_imports: crate::cache_io::from_proto(&r.cache_imports),
        };
        let built = tokio::select! {
            r = frontend::dockerfile(&self.0, run) => r.map_err(|e| e.to_status())?,
            _ = session.closed() => return Err(Status::cancelled("the client's session ended")),
        };
        let id = format!("berth-{}", built.image_id.hex());
        let mut metadata = HashMap::new();
        if built.is_multi() {
            // One ref per platform (as BuildKit's dockerfile frontend answers), each a
            // result of its own, and `refs.platforms` naming them.
            if !r.allow_result_return || !r.allow_result_array_ref {
                return Err(Status::unimplemented(
                    "a multi-platform result needs a client that takes result maps",
                ));
            }
            let mut refs = HashMap::new();
            let mut listed = Vec::new();
            let mut results = job.results.lock().unwrap_or_else(|p| p.into_inner());
            for p in &built.platforms {
                let key = p.platform.to_string();
                let pid = format!("berth-{}", p.image_id.hex());
                metadata.insert(format!("containerimage.config/{key}"), p.config.clone());
                refs.insert(
                    key.clone(),
                    gw::Ref {
                        id: pid.clone(),
                        def: None,
                    },
                );
                listed.push(serde_json::json!({"id": key, "platform": p.platform}));
                results.insert(
                    pid,
                    BuildResult {
                        image_id: p.image_id.clone(),
                        config: p.config.clone(),
                        tags: Vec::new(),
                        platforms: vec![p.clone()],
                    },
                );
            }
            drop(results);
            metadata.insert(
                "refs.platforms".to_string(),
                serde_json::to_vec(&serde_json::json!({ "platforms": listed }))
                    .map_err(|e| Status::internal(e.to_string()))?,
            );
            return Ok(Response::new(gw::SolveResponse {
                r#ref: String::new(),
                result: Some(gw::Result {
                    result: Some(gw::result::Result::Refs(gw::RefMap { refs })),
                    metadata,
                }),
            }));
        }
        metadata.insert("containerimage.config".to_string(), built.config.clone());
        job.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), built);
        let result = gw::Result {
            result: Some(if r.allow_result_array_ref {
                gw::result::Result::Ref(gw::Ref {
                    id: id.clone(),
                    def: None,
                })
            } else {
                gw::result::Result::RefDeprecated(id.clone())
            }),
            metadata,
        };
        Ok(Response::new(gw::SolveResponse {
            r#ref: if r.allow_result_return {
                String::new()
            } else {
                id
            },
            result: r.allow_result_return.then_some(result),
        }))
    }

    async fn read_file(
        &self,
        req: Request<gw::ReadFileRequest>,
    ) -> Result<Response<gw::ReadFileResponse>, Status> {
        let job = self.job(&req).await?;
        let gw::ReadFileRequest {
            r#ref,
            file_path,
            range,
        } = req.into_inner();
        let range = range.map(|x| (x.offset, x.length));
        let data = self
            .read_result(&job, &r#ref, move |store, res| {
                crate::rootfs::read_file(store, res, &file_path, range)
            })
            .await?;
        Ok(Response::new(gw::ReadFileResponse { data }))
    }

    async fn read_dir(
        &self,
        req: Request<gw::ReadDirRequest>,
    ) -> Result<Response<gw::ReadDirResponse>, Status> {
        let job = self.job(&req).await?;
        let gw::ReadDirRequest { r#ref, dir_path } = req.into_inner();
        let entries = self
            .read_result(&job, &r#ref, move |store, res| {
                crate::rootfs::read_dir(store, res, &dir_path)
            })
            .await?;
        Ok(Response::new(gw::ReadDirResponse { entries }))
    }

    async fn stat_file(
        &self,
        req: Request<gw::StatFileRequest>,
    ) -> Result<Response<gw::StatFileResponse>, Status> {
        let job = self.job(&req).await?;
        let gw::StatFileRequest { r#ref, path } = req.into_inner();
        let stat = self
            .read_result(&job, &r#ref, move |store, res| {
                crate::rootfs::stat(store, res, &path)
            })
            .await?;
        Ok(Response::new(gw::StatFileResponse { stat: Some(stat) }))
    }

    async fn evaluate(
        &self,
        req: Request<gw::EvaluateRequest>,
    ) -> Result<Response<gw::EvaluateResponse>, Status> {
        let job = self.job(&req).await?;
        Self::result(&job, &req.into_inner().r#ref)?;
        Ok(Response::new(gw::EvaluateResponse {}))
    }

    async fn ping(
        &self,
        _req: Request<gw::PingRequest>,
    ) -> Result<Response<gw::PongResponse>, Status> {
        Ok(Response::new(gw::PongResponse {
            frontend_api_caps: caps(GATEWAY_CAPS),
            llb_caps: caps(LLB_CAPS),
            workers: vec![worker(&self.0)],
        }))
    }

    async fn r#return(
        &self,
        req: Request<gw::ReturnRequest>,
    ) -> Result<Response<gw::ReturnResponse>, Status> {
        let job = self.job(&req).await?;
        let r = req.into_inner();
        // Several refs: a multi-platform result, each ref one platform's (keyed by it).
        let multi = |refs: Vec<(String, String)>| -> Result<Option<String>, SolveError> {
            let mut results = job.results.lock().unwrap_or_else(|p| p.into_inner());
            let mut platforms = Vec::new();
            let mut keys: Vec<(String, String)> = refs;
            keys.sort();
            for (key, id) in &keys {
                let one = results
                    .get(id)
                    .ok_or_else(|| SolveError::unknown(format!("unknown result ref {id}")))?;
                let platform = berth_image::manifest::Platform::parse(key)
                    .map_err(|e| SolveError::unknown(format!("result ref {key}: {e}")))?;
                platforms.push(crate::frontend::PlatformImage {
                    platform,
                    image_id: one.image_id.clone(),
                    config: one.config.clone(),
                });
            }
            let first = platforms
                .first()
                .cloned()
                .ok_or_else(|| SolveError::unknown("an empty result map"))?;
            let id = format!("berth-index-{}", job.id);
            results.insert(
                id.clone(),
                BuildResult {
                    image_id: first.image_id,
                    config: first.config,
                    tags: Vec::new(),
                    platforms,
                },
            );
            Ok(Some(id))
        };
        let value = match (r.error, r.result) {
            (Some(e), _) if e.code != 0 => Err(SolveError::from_rpc(&e)),
            (_, Some(res)) => match res.result {
                Some(gw::result::Result::Ref(x)) if !x.id.is_empty() => Ok(Some(x.id)),
                Some(gw::result::Result::RefDeprecated(x)) if !x.is_empty() => Ok(Some(x)),
                Some(gw::result::Result::Refs(m)) if m.refs.len() > 1 => {
                    multi(m.refs.into_iter().map(|(k, r)| (k, r.id)).collect())
                }
                Some(gw::result::Result::Refs(m)) => Ok(m
                    .refs
                    .into_values()
                    .next()
                    .map(|x| x.id)
                    .filter(|x| !x.is_empty())),
                Some(gw::result::Result::RefsDeprecated(m)) if m.refs.len() > 1 => {
                    multi(m.refs.into_iter().collect())
                }
                Some(gw::result::Result::RefsDeprecated(m)) => {
                    Ok(m.refs.into_values().next().filter(|x| !x.is_empty()))
                }
                _ => Ok(None),
            },
            (_, None) => Ok(None),
        };
        if let Some(tx) = job
            .returned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(value);
        }
        Ok(Response::new(gw::ReturnResponse {}))
    }

    async fn inputs(
        &self,
        _req: Request<gw::InputsRequest>,
    ) -> Result<Response<gw::InputsResponse>, Status> {
        Ok(Response::new(gw::InputsResponse::default()))
    }

    async fn warn(
        &self,
        req: Request<ctl::VertexWarning>,
    ) -> Result<Response<gw::WarnResponse>, Status> {
        let job = self.job(&req).await?;
        job.progress.warning(req.into_inner());
        Ok(Response::new(gw::WarnResponse {}))
    }
}
