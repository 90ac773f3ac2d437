//! BuildKit's API for buildx's `docker` driver (`berth-buildkit`): the `POST /grpc` and
//! `POST /session` hijacks, and the engine as the builder's backend (image store, runtime,
//! registry access with the session's credentials).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use berth_buildkit::{Backend, BuildKit, RegistryAuth, TransferError};
use berth_image::Reference;
use berth_registry::images::{ImageBackend, LocalBackend};
use berth_registry::Credentials;

use crate::engine::recovery::Op;
use crate::engine::Engine;
use crate::http::{ApiError, AppState};

/// The routes of the BuildKit API.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/grpc", post(grpc))
        .route("/session", post(session))
}

static BUILDKIT: OnceLock<Arc<BuildKit>> = OnceLock::new();

/// The daemon's one BuildKit service.
fn buildkit(engine: &Arc<Engine>) -> Arc<BuildKit> {
    BUILDKIT
        .get_or_init(|| {
            berth_buildkit::frontend::cleanup_stale();
            BuildKit::new(Arc::new(EngineBackend(engine.clone())))
        })
        .clone()
}

/// Removes the build contexts kept between builds (at the daemon's exit).
pub fn shutdown() {
    if let Some(bk) = BUILDKIT.get() {
        bk.contexts().clear();
    }
}

fn upgrade_response(proto: &str) -> Response {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, proto)
        .body(Body::empty())
        .unwrap_or_default()
}

fn wants_h2c(req: &Request) -> Result<(), ApiError> {
    let up = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // dockerd's words (its session manager's and gRPC router's), a 400 each.
    if up.is_empty() {
        Err(ApiError::bad("no upgrade proto in request"))
    } else if up.eq_ignore_ascii_case("h2c") {
        Ok(())
    } else {
        Err(ApiError::bad(format!("protocol {up} not supported")))
    }
}

async fn grpc(State(s): State<Arc<AppState>>, mut req: Request) -> Response {
    if let Err(e) = wants_h2c(&req) {
        return e.into_response();
    }
    // The builds of this connection: what a crash leaves of them goes at the next start
    // (`engine::recovery`).
    let intent = match s.engine.intent(Op::Build, &crate::util::new_id()) {
        Ok(i) => i,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let bk = buildkit(&s.engine);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _intent = intent;
        let Ok(up) = on_upgrade.await else { return };
        bk.serve_grpc(hyper_util::rt::TokioIo::new(up)).await;
    });
    upgrade_response("h2c")
}

async fn session(State(s): State<Arc<AppState>>, mut req: Request) -> Response {
    if let Err(e) = wants_h2c(&req) {
        return e.into_response();
    }
    let info = match berth_buildkit::session::SessionInfo::from_headers(req.headers()) {
        Ok(i) => i,
        Err(e) => return ApiError::bad(e.to_string()).into_response(),
    };
    let bk = buildkit(&s.engine);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        bk.serve_session(info, hyper_util::rt::TokioIo::new(up))
            .await;
    });
    upgrade_response("h2c")
}

/// The engine as the builder's backend.
struct EngineBackend(Arc<Engine>);

impl EngineBackend {
    /// The daemon's registry settings, with the session's credentials for `r`'s registry in
    /// a private temporary credential file (kept as long as the returned directory; see
    /// `images::private_credentials`).
    fn registry(
        &self,
        r: &Reference,
        auth: Option<&RegistryAuth>,
    ) -> Result<(LocalBackend, Option<tempfile::TempDir>), TransferError> {
        let (cfg, dir) = self.registry_config(r, auth)?;
        Ok((
            LocalBackend::with_store(self.0.images.clone()).with_registry_config(cfg),
            dir,
        ))
    }

    /// [`registry`](Self::registry)'s settings alone.
    fn registry_config(
        &self,
        r: &Reference,
        auth: Option<&RegistryAuth>,
    ) -> Result<(berth_registry::RegistryConfig, Option<tempfile::TempDir>), TransferError> {
        let mut cfg = self.0.registry_config();
        let mut dir = None;
        if let Some(a) = auth {
            let (store, d) = crate::images::private_credentials(
                &self.0,
                r.domain(),
                &Credentials::new(&a.username, &a.secret),
            )
            .map_err(|e| TransferError::Credentials {
                registry: r.domain().to_string(),
                source: Box::new(e),
            })?;
            cfg.credentials = store;
            dir = Some(d);
        }
        Ok((cfg, dir))
    }
}

fn normalized(name: &str) -> Result<Reference, TransferError> {
    let r = Reference::parse_normalized(name)?;
    if r.tag().is_none() && r.digest().is_none() {
        Ok(r.with_tag(berth_image::reference::DEFAULT_TAG)?)
    } else {
        Ok(r)
    }
}

impl Backend for EngineBackend {
    fn store(&self) -> Arc<berth_image::image_store::ImageStore> {
        self.0.images.clone()
    }

    fn runtime(&self) -> PathBuf {
        self.0.runtime_exe()
    }

    fn runtime_root(&self) -> PathBuf {
        self.0.cfg.exec_root.join("build-runtime")
    }

    fn cgroup_parent(&self) -> String {
        self.0.cfg.cgroup_parent.clone()
    }

    fn pull(
        &self,
        name: &str,
        platform: Option<&berth_image::manifest::Platform>,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransferError> {
        let r = normalized(name)?;
        let (b, _creds) = self.registry(&r, auth)?;
        let out = b
            .pull(
                &r,
                &platform
                    .cloned()
                    .unwrap_or_else(berth_image::manifest::Platform::host),
                &berth_registry::NoProgress,
            )
            .map_err(|e| TransferError::Registry(e.into()))?;
        let fam = r.familiar_string();
        Ok(if out.updated {
            format!("Status: Downloaded newer image for {fam}")
        } else {
            format!("Status: Image is up to date for {fam}")
        })
    }

    fn push(&self, name: &str, auth: Option<&RegistryAuth>) -> Result<String, TransferError> {
        let r = normalized(name)?;
        let (b, _creds) = self.registry(&r, auth)?;
        let out = b
            .push(&r, &berth_registry::NoProgress)
            .map_err(|e| TransferError::Registry(e.into()))?;
        Ok(out.digest.to_string())
    }

    fn push_index(
        &self,
        name: &str,
        ids: &[berth_image::Digest],
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransferError> {
        use berth_image::manifest::{parse_manifest, Descriptor, ImageIndex, Manifest};
        let r = normalized(name)?;
        let store = &self.0.images;
        let mut manifests = Vec::new();
        for id in ids {
            let rec = store.get(id)?;
            let config = store.config(id)?;
            let found = rec.manifests.iter().find_map(|d| {
                let bytes = store.blobs().read_verified(d).ok()?;
                match parse_manifest(None, &bytes) {
                    Ok(Manifest::Image(kind, _)) => Some((d.clone(), bytes.len(), kind)),
                    _ => None,
                }
            });
            let (digest, size, kind) = found.ok_or_else(|| {
                TransferError::Registry(format!("no image manifest stored for {id}").into())
            })?;
            manifests.push(Descriptor {
                media_type: kind.media_type().to_string(),
                digest,
                size: size as u64,
                urls: None,
                annotations: None,
                platform: Some(config.platform()),
                artifact_type: None,
            });
        }
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(berth_image::manifest::media_types::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: None,
        };
        let bytes = serde_json::to_vec(&index).map_err(|e| TransferError::Registry(e.into()))?;
        let (cfg, _creds) = self.registry_config(&r, auth)?;
        let client =
            berth_registry::Client::new(cfg).map_err(|e| TransferError::Registry(e.into()))?;
        let pushed = client
            .push(&r, &bytes, store.blobs(), &berth_registry::NoProgress)
            .map_err(|e| TransferError::Registry(e.into()))?;
        Ok(pushed.digest.to_string())
    }

    fn image_event(&self, action: &str, name: &str) {
        self.0.image_event(action, name);
    }

    fn run_networks(&self) -> Option<&dyn berth_build::builder::RunNetworks> {
        Some(&*self.0)
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }
}
