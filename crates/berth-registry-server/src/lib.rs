//! `berth-registry-server`: Berth's own registry (`berth registry serve`, `berth registry gc`).
//!
//! - [`api`]: the OCI distribution API under `/v2/` (blobs with ranges, monolithic, chunked
//!   and streamed uploads, mounts, manifests by tag and digest, deletion, tag and catalog
//!   listing with pagination, referrers) and Docker's token endpoint at `/token`.
//! - [`storage`]: content-addressed blobs shared by all repositories, uploads that become
//!   blobs only when verified, per-repository metadata written crash-safely.
//! - [`auth`]: users, per-repository glob permissions, HMAC-signed JWT bearer tokens.
//! - [`audit`]: JSON-lines log of pushes, pulls, deletions, denials and tokens issued.
//! - [`sessions`]: open upload sessions, their per-identity quota and idle expiry.
//! - [`ratelimit`]: per-client token buckets for failed sign-ins.
//! - [`ui`]: server-rendered HTML at `/ui/`.
//! - [`gc`]: mark and sweep, safe while serving.
//!
//! Configuration (JSON, optional; without it the registry is open to everyone):
//!
//! ```json
//! {
//!   "users": { "alice": { "password_hash": "$2b$12$…" } },
//!   "access": [
//!     { "repository": "alice/*", "users": ["alice"], "actions": ["pull", "push", "delete"] },
//!     { "repository": "public/*", "users": ["anonymous"], "actions": ["pull"] },
//!     { "repository": "*", "users": ["*"], "actions": ["pull"] }
//!   ],
//!   "service": "berth-registry",
//!   "token_ttl_seconds": 300,
//!   "audit_log": "/var/log/berth-registry-audit.log",
//!   "admins": ["alice"],
//!   "limits": { "max_upload_bytes": 21474836480, "max_manifest_bytes": 4194304,
//!               "max_concurrent_uploads": 64, "max_open_uploads": 1024,
//!               "max_open_uploads_per_user": 64, "upload_idle_timeout_seconds": 3600,
//!               "auth_failures_burst": 10, "auth_failures_per_minute": 6,
//!               "idle_timeout_seconds": 60,
//!               "request_timeout_seconds": 120 }
//! }
//! ```

pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod names;
pub mod ratelimit;
pub mod sessions;
pub mod storage;
pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

pub use error::ServerError;
pub use gc::{gc, GcOptions, GcReport};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port` to listen on (port 0: any free port).
    pub addr: String,
    /// Storage root.
    pub root: PathBuf,
    /// JSON configuration file (accounts, permissions, limits).
    pub config: Option<PathBuf>,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Builds the shared state: opens the store, reads the configuration.
pub fn state(opts: &ServeOptions) -> Result<Arc<api::AppState>, ServerError> {
    let store = Arc::new(storage::Store::open(&opts.root)?);
    let config = match &opts.config {
        Some(p) => Some(auth::Config::load(p)?),
        None => None,
    };
    let limits = config
        .as_ref()
        .map(|c| c.limits.clone())
        .unwrap_or_default();
    let audit_path = config
        .as_ref()
        .and_then(|c| c.audit_log.clone())
        .unwrap_or_else(|| opts.root.join("audit.log"));
    let audit = audit::Audit::open(&audit_path).map_err(|source| ServerError::AuditLog {
        path: audit_path.clone(),
        source,
    })?;
    let auth = auth::Auth::new(config, &opts.root)?;
    Ok(Arc::new(api::AppState::new(
        store,
        auth,
        audit,
        limits,
        opts.tls.is_some(),
    )))
}

/// The HTTP routes.
pub fn router(state: Arc<api::AppState>) -> Router {
    Router::new()
        .route("/token", get(api::token_get).post(api::token_post))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/login", get(ui::login))
        .route("/ui/permissions", get(ui::permissions))
        .route("/ui/repo/{*rest}", get(ui::repo))
        .fallback(api::v2)
        .layer(axum::middleware::map_response(
            |mut r: axum::response::Response| async move {
                r.headers_mut().insert(
                    "docker-distribution-api-version",
                    axum::http::HeaderValue::from_static("registry/2.0"),
                );
                r
            },
        ))
        .with_state(state)
}

/// Loads a PEM certificate chain and key into a rustls acceptor.
pub fn tls_acceptor(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ServerError::TlsPem { path, source }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(cert))?;
    if certs.is_empty() {
        return Err(ServerError::TlsNoCertificate { path: cert.clone() });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServerError::Tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves connections from `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<api::AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let idle = Duration::from_secs(state.limits.idle_timeout_seconds.max(1));
    let sweeper = tokio::spawn(sweep_idle_uploads(state.clone()));
    let app = router(state);
    tokio::pin!(shutdown);
    loop {
        let (sock, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = sock.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc =
                app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(api::Remote(addr));
                    req
                });
            let svc = TowerToHyperService::new(svc);
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(idle);
            match tls {
                Some(acc) => {
                    if let Ok(Ok(s)) = tokio::time::timeout(idle, acc.accept(sock)).await {
                        let _ = b.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = b.serve_connection(TokioIo::new(sock), svc).await;
                }
            }
        });
    }
    sweeper.abort();
}

/// Removes idle upload sessions every quarter of the idle timeout (between 1 s and 1 min);
/// never returns. A timeout of 0 turns expiry off.
async fn sweep_idle_uploads(state: Arc<api::AppState>) {
    let timeout = state.limits.upload_idle_timeout_seconds;
    if timeout == 0 {
        return;
    }
    let every =
        (Duration::from_secs(timeout) / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || st.expire_idle_uploads()).await {
            tracing::error!(error = %e, "expiring idle uploads failed");
        }
    }
}

/// Runs the server on its own runtime until SIGINT or SIGTERM; `ready` gets the bound address.
pub fn serve_blocking(
    opts: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let state = state(opts)?;
    let tls = match &opts.tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth-registry")
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&opts.addr)
            .await
            .map_err(|e| ServerError::Listen {
                addr: opts.addr.clone(),
                source: e,
            })?;
        ready(listener.local_addr()?);
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! { _ = i.recv() => {}, _ = t.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        serve(listener, state, tls, shutdown).await;
        Ok::<_, ServerError>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}
