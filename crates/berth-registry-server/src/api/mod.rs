//! The OCI distribution API (`/v2/…`) and the token endpoint (`/token`).
//!
//! `mod.rs` holds the shared state, the `/v2` dispatcher and the response helpers; the
//! handlers live by concern in [`access`] (identity, challenges, authorization), [`listing`]
//! (catalog, tags, referrers), [`manifests`], [`blobs`], [`uploads`] and [`token`].

mod access;
mod blobs;
mod listing;
mod manifests;
mod token;
mod uploads;

pub use access::{challenge, host_of, identify, identify_async};
pub use token::{token_get, token_post};

use access::authorize;
use blobs::{delete_blob, get_blob};
use listing::{catalog, referrers, tags};
use manifests::{delete_manifest, get_manifest, put_manifest};
use uploads::{cancel_upload, patch_upload, post_upload, put_upload, upload_status};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_image::Digest;
use tokio::sync::Semaphore;

use crate::audit::{self, Audit};
use crate::auth::{Action, Auth, Identity, Limits};
use crate::error::{ApiError, Code};
use crate::names::{self, parse_digest, valid_name, DigestProblem, Reference, Route};
use crate::ratelimit::client_key;
use crate::sessions::Sessions;
use crate::storage::RepoMeta;
use crate::storage::Store;

/// The remote address of a connection (inserted by the server loop).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

/// Everything the handlers share.
pub struct AppState {
    pub store: Arc<Store>,
    pub auth: Auth,
    pub audit: Audit,
    pub limits: Limits,
    pub tls: bool,
    pub upload_slots: Arc<Semaphore>,
    /// Open upload sessions (read from the store at start).
    pub sessions: Sessions,
}

impl AppState {
    pub fn new(store: Arc<Store>, auth: Auth, audit: Audit, limits: Limits, tls: bool) -> Self {
        Self {
            sessions: Sessions::load(&store),
            store,
            auth,
            audit,
            upload_slots: Arc::new(Semaphore::new(limits.max_concurrent_uploads.max(1))),
            limits,
            tls,
        }
    }

    /// Removes upload `id` from disk and from the session index.
    fn drop_upload(&self, id: &str) {
        self.store.remove_upload(id);
        self.sessions.remove(id);
    }

    /// Removes the upload sessions idle for longer than the configured timeout (see
    /// [`Sessions::expire_idle`]) and logs each; blocking.
    pub fn expire_idle_uploads(&self) -> usize {
        let idle = Duration::from_secs(self.limits.upload_idle_timeout_seconds);
        let gone = self.sessions.expire_idle(&self.store, idle);
        for e in &gone {
            tracing::info!(id = %e.id, repository = ?e.repository, "idle upload session removed");
            self.audit.log(&audit::Entry {
                action: "expire",
                kind: "upload",
                repository: e.repository.as_deref(),
                reference: Some(&e.id),
                ..Default::default()
            });
        }
        gone.len()
    }
}

pub type St = Arc<AppState>;

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Removes something from repository `name`'s metadata off the async runtime: `missing` is
/// the error when the repository does not exist, `remove` fails with its own when the thing
/// is not there.
async fn remove_from_repo(
    st: &St,
    name: &str,
    missing: ApiError,
    remove: impl FnOnce(&mut RepoMeta) -> Result<(), ApiError> + Send + 'static,
) -> Result<(), ApiError> {
    let (st, name) = (st.clone(), name.to_string());
    blocking(move || {
        st.store.update_meta(&name, false, |meta| {
            remove(meta.ok_or(missing)?)?;
            Ok(((), true))
        })
    })
    .await
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn empty(status: StatusCode, headers: &[(&str, String)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-length", HeaderValue::from_static("0"));
    for (k, v) in headers {
        if let Ok(name) = axum::http::HeaderName::from_bytes(k.as_bytes()) {
            h.insert(name, hv(v));
        }
    }
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value, ct: &str) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body.clone()));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hv(ct));
    r.headers_mut()
        .insert("content-length", hv(&body.len().to_string()));
    r
}

/// Query parameters in order (repeated keys kept).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn q1<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

fn digest_or_err(s: &str) -> Result<Digest, ApiError> {
    parse_digest(s).map_err(|p| {
        let msg = match p {
            DigestProblem::Invalid => "invalid digest",
            DigestProblem::Unsupported => "unsupported digest algorithm (only sha256)",
        };
        ApiError::new(Code::DigestInvalid, msg).detail(serde_json::json!({ "digest": s }))
    })
}

/// A request's identity and origin.
struct Ctx {
    id: Identity,
    remote: Option<SocketAddr>,
    host: String,
}

impl Ctx {
    /// An audit entry with the request's user and address filled in.
    fn entry(&self) -> audit::Entry<'_> {
        audit::Entry {
            user: self.id.user(),
            remote: self.remote,
            ..Default::default()
        }
    }

    /// Writes an audit entry: `action` on a `kind` of object of `repository`, named by
    /// `reference` and/or `digest`.
    fn audit(
        &self,
        st: &AppState,
        action: &str,
        kind: &str,
        repository: &str,
        reference: Option<&str>,
        digest: Option<&str>,
    ) {
        st.audit.log(&audit::Entry {
            action,
            kind,
            repository: Some(repository),
            reference,
            digest,
            ..self.entry()
        });
    }

    /// Who owns the upload sessions this request opens: the signed-in user, or for anonymous
    /// requests the client's address.
    fn owner(&self) -> String {
        match self.id.user() {
            Some(u) => format!("user:{u}"),
            None => format!("addr:{}", client_key(client_ip(self.remote))),
        }
    }
}

/// The client's address (unspecified when the request did not come through [`crate::serve`]).
fn client_ip(remote: Option<SocketAddr>) -> IpAddr {
    remote.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |r| r.ip())
}

// ---- the /v2 dispatcher ---------------------------------------------------------------------

/// Handles every `/v2/…` request.
pub async fn v2(State(st): State<St>, req: Request) -> Response {
    match v2_inner(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn v2_inner(st: St, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let Some(route) = names::route(parts.uri.path()) else {
        return Ok(ApiError::new(Code::Unsupported, "no such endpoint")
            .status(StatusCode::NOT_FOUND)
            .into_response());
    };
    let host = host_of(&parts.headers);
    let remote = parts.extensions.get::<Remote>().map(|r| r.0);
    let id = identify_async(&st, &parts.headers, &host, remote).await?;
    let ctx = Ctx { id, remote, host };
    let q = query_pairs(parts.uri.query());
    let m = parts.method.clone();
    let check_name = |n: &str| -> Result<(), ApiError> {
        if valid_name(n) {
            Ok(())
        } else {
            Err(ApiError::name_invalid(n))
        }
    };
    let timeout = Duration::from_secs(st.limits.request_timeout_seconds.max(1));
    match route {
        Route::Base => {
            if st.auth.enabled() && ctx.id == Identity::Anonymous {
                return Err(ApiError::new(Code::Unauthorized, "authentication required")
                    .header("www-authenticate", challenge(&st, &ctx.host, None, None)));
            }
            Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({}),
                "application/json",
            ))
        }
        Route::Catalog => {
            method_is(&m, &[Method::GET])?;
            bounded(timeout, catalog(st, ctx, q)).await
        }
        Route::Tags(name) => {
            check_name(&name)?;
            method_is(&m, &[Method::GET])?;
            authorize(&st, &ctx, &name, &[Action::Pull])?;
            bounded(timeout, tags(st, name, q)).await
        }
        Route::Referrers(name, d) => {
            check_name(&name)?;
            method_is(&m, &[Method::GET])?;
            authorize(&st, &ctx, &name, &[Action::Pull])?;
            let d = digest_or_err(&d)?;
            bounded(timeout, referrers(st, name, d, q)).await
        }
        Route::Manifest(name, r) => {
            check_name(&name)?;
            let reference = Reference::parse(&r).ok_or_else(|| {
                if r.contains(':') {
                    ApiError::new(Code::DigestInvalid, "invalid digest")
                } else {
                    ApiError::new(Code::TagInvalid, "invalid tag")
                }
                .detail(serde_json::json!({ "reference": r }))
            })?;
            method_is(&m, &[Method::GET, Method::PUT, Method::DELETE])?;
            authorize(&st, &ctx, &name, needed_actions(&m))?;
            match m {
                Method::PUT => {
                    let ct = header(&parts.headers, "content-type").map(str::to_string);
                    let len = content_length(&parts.headers);
                    bounded(
                        timeout,
                        put_manifest(st, ctx, name, reference, ct, len, body),
                    )
                    .await
                }
                Method::DELETE => bounded(timeout, delete_manifest(st, ctx, name, reference)).await,
                _ => {
                    let get = m == Method::GET;
                    bounded(timeout, get_manifest(st, ctx, name, reference, get)).await
                }
            }
        }
        Route::Blob(name, d) => {
            check_name(&name)?;
            let d = digest_or_err(&d)?;
            method_is(&m, &[Method::GET, Method::DELETE])?;
            authorize(&st, &ctx, &name, needed_actions(&m))?;
            if m == Method::DELETE {
                bounded(timeout, delete_blob(st, ctx, name, d)).await
            } else {
                let range = header(&parts.headers, "range").map(str::to_string);
                bounded(timeout, get_blob(st, name, d, m == Method::GET, range)).await
            }
        }
        Route::Upload(name, upload) => {
            check_name(&name)?;
            authorize(&st, &ctx, &name, &[Action::Pull, Action::Push])?;
            let headers = parts.headers;
            match (m, upload) {
                (Method::POST, None) => post_upload(st, ctx, name, q, &headers, body).await,
                (Method::PATCH, Some(u)) => patch_upload(st, name, u, &headers, body).await,
                (Method::PUT, Some(u)) => put_upload(st, ctx, name, u, q, &headers, body).await,
                (Method::GET, Some(u)) => upload_status(st, name, u).await,
                (Method::DELETE, Some(u)) => cancel_upload(st, ctx, name, u).await,
                _ => Err(not_allowed()),
            }
        }
    }
}

async fn bounded(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<Response, ApiError>>,
) -> Result<Response, ApiError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(Code::Unknown, "request timed out")
            .status(StatusCode::SERVICE_UNAVAILABLE)),
    }
}

fn not_allowed() -> ApiError {
    ApiError::new(Code::Unsupported, "method not allowed here")
}

/// What a request on a manifest or blob needs: pull to read it, pull and push to write it,
/// delete to delete it.
fn needed_actions(m: &Method) -> &'static [Action] {
    match *m {
        Method::DELETE => &[Action::Delete],
        Method::PUT => &[Action::Pull, Action::Push],
        _ => &[Action::Pull],
    }
}

fn method_is(m: &Method, ok: &[Method]) -> Result<(), ApiError> {
    if ok.contains(m) || (*m == Method::HEAD && ok.contains(&Method::GET)) {
        Ok(())
    } else {
        Err(not_allowed())
    }
}

/// A header's value, when it is text.
fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    header(h, "content-length").and_then(|v| v.trim().parse().ok())
}

fn with_headers(mut r: Response, hs: Vec<(&'static str, String)>) -> Response {
    for (k, v) in hs {
        r.headers_mut().insert(k, hv(&v));
    }
    r
}
