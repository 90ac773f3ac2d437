//! The OCI distribution API (`/v2/…`) and the token endpoint (`/token`).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_image::Digest;
use futures_util::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::audit::{self, Audit};
use crate::auth::{parse_basic, Action, Auth, Identity, Limits};
use crate::error::{ApiError, Code};
use crate::manifest;
use crate::names::{self, parse_digest, valid_name, DigestProblem, Reference, Route};
use crate::storage::{now_secs, ManifestEntry, Store, UploadWriter};

/// The remote address of a connection (inserted by the server loop).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub SocketAddr);

/// Hash state of an upload kept between requests: (bytes hashed, state).
type HashState = Arc<tokio::sync::Mutex<Option<(u64, Sha256)>>>;

/// Everything the handlers share.
pub struct AppState {
    pub store: Arc<Store>,
    pub auth: Auth,
    pub audit: Audit,
    pub limits: Limits,
    pub tls: bool,
    pub upload_slots: Arc<Semaphore>,
    hashes: Mutex<HashMap<String, HashState>>,
}

impl AppState {
    pub fn new(store: Arc<Store>, auth: Auth, audit: Audit, limits: Limits, tls: bool) -> Self {
        Self {
            store,
            auth,
            audit,
            upload_slots: Arc::new(Semaphore::new(limits.max_concurrent_uploads.max(1))),
            limits,
            tls,
            hashes: Mutex::new(HashMap::new()),
        }
    }

    fn hash_state(&self, id: &str) -> HashState {
        let mut m = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    fn forget_upload(&self, id: &str) {
        let mut m = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id);
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

// ---- identity and authorization -----------------------------------------------------------

/// Who sent the request; `Err` for credentials that are wrong (not merely absent).
pub fn identify(st: &AppState, headers: &HeaderMap, host: &str) -> Result<Identity, ApiError> {
    if !st.auth.enabled() {
        return Ok(Identity::Anonymous);
    }
    let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(Identity::Anonymous);
    };
    if let Some((u, p)) = parse_basic(v) {
        if st.auth.check_password(&u, &p) {
            return Ok(Identity::User(u));
        }
        return Err(ApiError::new(Code::Unauthorized, "authentication required")
            .header("www-authenticate", challenge(st, host, None, None)));
    }
    if let Some(t) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
    {
        if let Some(id) = st.auth.verify(t.trim(), now_secs()) {
            return Ok(id);
        }
        return Err(
            ApiError::new(Code::Unauthorized, "invalid or expired token").header(
                "www-authenticate",
                challenge(st, host, None, Some("invalid_token")),
            ),
        );
    }
    Err(
        ApiError::new(Code::Unauthorized, "unsupported authorization scheme")
            .header("www-authenticate", challenge(st, host, None, None)),
    )
}

/// [`identify`] off the async threads when a password has to be checked (bcrypt is slow on
/// purpose; wrong passwords are never cached).
pub async fn identify_async(
    st: &St,
    headers: &HeaderMap,
    host: &str,
) -> Result<Identity, ApiError> {
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v.as_bytes()[..6].eq_ignore_ascii_case(b"basic "));
    if !basic || !st.auth.enabled() {
        return identify(st, headers, host);
    }
    let (st2, h2, host2) = (st.clone(), headers.clone(), host.to_string());
    tokio::task::spawn_blocking(move || identify(&st2, &h2, &host2))
        .await
        .map_err(ApiError::internal)?
}

/// The `Host` header, reduced to characters that are safe in a URL authority.
pub fn host_of(headers: &HeaderMap) -> String {
    let h = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let ok = !h.is_empty()
        && h.len() < 256
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".:-[]".contains(&c));
    if ok {
        h.to_string()
    } else {
        "localhost".to_string()
    }
}

/// A `WWW-Authenticate: Bearer …` challenge.
pub fn challenge(st: &AppState, host: &str, scope: Option<&str>, error: Option<&str>) -> String {
    let realm = st
        .auth
        .config
        .as_ref()
        .and_then(|c| c.realm.clone())
        .unwrap_or_else(|| format!("{}://{host}/token", if st.tls { "https" } else { "http" }));
    let mut s = format!("Bearer realm=\"{realm}\",service=\"{}\"", st.auth.service);
    if let Some(sc) = scope {
        s.push_str(&format!(",scope=\"{sc}\""));
    }
    if let Some(e) = error {
        s.push_str(&format!(",error=\"{e}\""));
    }
    s
}

fn authorize(
    st: &AppState,
    id: &Identity,
    host: &str,
    repo: &str,
    actions: &[Action],
) -> Result<(), ApiError> {
    if actions.iter().all(|a| st.auth.permits(id, repo, *a)) {
        return Ok(());
    }
    let scope = format!(
        "repository:{repo}:{}",
        actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let detail = serde_json::json!([{"Type": "repository", "Name": repo,
        "Action": actions.iter().map(|a| a.as_str()).collect::<Vec<_>>()}]);
    match id {
        Identity::Anonymous => Err(ApiError::new(Code::Unauthorized, "authentication required")
            .detail(detail)
            .header("www-authenticate", challenge(st, host, Some(&scope), None))),
        Identity::User(_) => Err(ApiError::new(
            Code::Denied,
            "requested access to the resource is denied",
        )
        .detail(detail)),
        Identity::Token { sub, .. } => {
            let may = st.auth.allowed(sub.as_deref(), repo);
            if actions.iter().all(|a| may.contains(a)) {
                // The user may, the token does not say so: ask for a token with this scope.
                Err(
                    ApiError::new(Code::Unauthorized, "token does not grant this access")
                        .detail(detail)
                        .header(
                            "www-authenticate",
                            challenge(st, host, Some(&scope), Some("insufficient_scope")),
                        ),
                )
            } else {
                Err(
                    ApiError::new(Code::Denied, "requested access to the resource is denied")
                        .detail(detail),
                )
            }
        }
    }
}

struct Ctx {
    id: Identity,
    remote: Option<SocketAddr>,
    host: String,
}

impl Ctx {
    fn audit(
        &self,
        st: &AppState,
        action: &str,
        kind: &str,
        repo: &str,
        reference: Option<&str>,
        digest: Option<&str>,
    ) {
        st.audit.log(&audit::Entry {
            user: self.id.user(),
            remote: self.remote,
            action,
            kind,
            repository: repo,
            reference,
            digest,
        });
    }
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
    let id = identify_async(&st, &parts.headers, &host).await?;
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
            authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Pull])?;
            bounded(timeout, tags(st, name, q)).await
        }
        Route::Referrers(name, d) => {
            check_name(&name)?;
            method_is(&m, &[Method::GET])?;
            authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Pull])?;
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
            match m {
                Method::GET | Method::HEAD => {
                    authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Pull])?;
                    bounded(
                        timeout,
                        get_manifest(st, ctx, name, reference, m == Method::GET),
                    )
                    .await
                }
                Method::PUT => {
                    authorize(
                        &st,
                        &ctx.id,
                        &ctx.host,
                        &name,
                        &[Action::Pull, Action::Push],
                    )?;
                    let ct = parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let len = content_length(&parts.headers);
                    bounded(
                        timeout,
                        put_manifest(st, ctx, name, reference, ct, len, body),
                    )
                    .await
                }
                Method::DELETE => {
                    authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Delete])?;
                    bounded(timeout, delete_manifest(st, ctx, name, reference)).await
                }
                _ => Err(not_allowed()),
            }
        }
        Route::Blob(name, d) => {
            check_name(&name)?;
            let d = digest_or_err(&d)?;
            match m {
                Method::GET | Method::HEAD => {
                    authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Pull])?;
                    let range = parts
                        .headers
                        .get("range")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    bounded(timeout, get_blob(st, name, d, m == Method::GET, range)).await
                }
                Method::DELETE => {
                    authorize(&st, &ctx.id, &ctx.host, &name, &[Action::Delete])?;
                    bounded(timeout, delete_blob(st, ctx, name, d)).await
                }
                _ => Err(not_allowed()),
            }
        }
        Route::Upload(name, upload) => {
            check_name(&name)?;
            authorize(
                &st,
                &ctx.id,
                &ctx.host,
                &name,
                &[Action::Pull, Action::Push],
            )?;
            let headers = parts.headers;
            match (m, upload) {
                (Method::POST, None) => post_upload(st, ctx, name, q, &headers, body).await,
                (Method::PATCH, Some(u)) => patch_upload(st, name, u, &headers, body).await,
                (Method::PUT, Some(u)) => put_upload(st, ctx, name, u, q, &headers, body).await,
                (Method::GET, Some(u)) => upload_status(st, name, u).await,
                (Method::DELETE, Some(u)) => cancel_upload(st, name, u).await,
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

fn method_is(m: &Method, ok: &[Method]) -> Result<(), ApiError> {
    if ok.contains(m) || (*m == Method::HEAD && ok.contains(&Method::GET)) {
        Ok(())
    } else {
        Err(not_allowed())
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

// ---- listing ------------------------------------------------------------------------------

/// A page of names and, when more follow, the `n` and `last` of the next page.
type Page = (Vec<String>, Option<(usize, String)>);

fn paginate(all: Vec<String>, q: &[(String, String)]) -> Result<Page, ApiError> {
    let n = match q1(q, "n") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::new(Code::PaginationNumberInvalid, "invalid number of results")
                .detail(serde_json::json!({ "n": s }))
        })?),
    };
    let last = q1(q, "last").unwrap_or("");
    let rest: Vec<String> = all
        .into_iter()
        .filter(|t| last.is_empty() || t.as_str() > last)
        .collect();
    match n {
        Some(n) if rest.len() > n => {
            let page: Vec<String> = rest.into_iter().take(n).collect();
            let next = page.last().cloned().map(|l| (n, l));
            Ok((page, next))
        }
        _ => Ok((rest, None)),
    }
}

fn link(path: &str, next: Option<(usize, String)>) -> Vec<(&'static str, String)> {
    match next {
        Some((n, last)) => {
            let enc: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
            vec![("link", format!("<{path}?n={n}&last={enc}>; rel=\"next\""))]
        }
        None => Vec::new(),
    }
}

fn with_headers(mut r: Response, hs: Vec<(&'static str, String)>) -> Response {
    for (k, v) in hs {
        r.headers_mut().insert(k, hv(&v));
    }
    r
}

async fn catalog(st: St, ctx: Ctx, q: Vec<(String, String)>) -> Result<Response, ApiError> {
    if st.auth.enabled() && ctx.id == Identity::Anonymous {
        return Err(
            ApiError::new(Code::Unauthorized, "authentication required").header(
                "www-authenticate",
                challenge(&st, &ctx.host, Some("registry:catalog:*"), None),
            ),
        );
    }
    let st2 = st.clone();
    let repos = blocking(move || Ok(st2.store.list_repos()?)).await?;
    let user = ctx.id.user().map(str::to_string);
    let visible: Vec<String> = repos
        .into_iter()
        .filter(|r| match &ctx.id {
            Identity::Token { .. } => st.auth.allowed(user.as_deref(), r).contains(&Action::Pull),
            id => st.auth.permits(id, r, Action::Pull),
        })
        .collect();
    let (page, next) = paginate(visible, &q)?;
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({ "repositories": page }),
        "application/json",
    );
    Ok(with_headers(r, link("/v2/_catalog", next)))
}

async fn tags(st: St, name: String, q: Vec<(String, String)>) -> Result<Response, ApiError> {
    let n2 = name.clone();
    let meta = blocking(move || Ok(st.store.read_meta(&n2)?)).await?;
    let Some(meta) = meta.filter(|m| !m.tags.is_empty() || !m.manifests.is_empty()) else {
        return Err(name_unknown(&name));
    };
    let (page, next) = paginate(meta.tags.keys().cloned().collect(), &q)?;
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({ "name": name, "tags": page }),
        "application/json",
    );
    Ok(with_headers(
        r,
        link(&format!("/v2/{name}/tags/list"), next),
    ))
}

fn name_unknown(name: &str) -> ApiError {
    ApiError::new(Code::NameUnknown, "repository name not known to registry")
        .detail(serde_json::json!({ "name": name }))
}

async fn referrers(
    st: St,
    name: String,
    subject: Digest,
    q: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let meta = blocking(move || Ok(st.store.read_meta(&name)?)).await?;
    let filter = q1(&q, "artifactType").map(str::to_string);
    let mut list = Vec::new();
    if let Some(meta) = meta {
        let s = subject.to_string();
        for (d, e) in &meta.manifests {
            if e.subject.as_deref() != Some(s.as_str()) {
                continue;
            }
            if let Some(f) = &filter {
                if e.artifact_type.as_deref() != Some(f.as_str()) {
                    continue;
                }
            }
            let mut desc =
                serde_json::json!({"mediaType": e.media_type, "digest": d, "size": e.size});
            if let Some(a) = &e.artifact_type {
                desc["artifactType"] = a.clone().into();
            }
            if let Some(a) = &e.annotations {
                desc["annotations"] = serde_json::to_value(a).unwrap_or_default();
            }
            list.push(desc);
        }
    }
    let r = json_response(
        StatusCode::OK,
        &serde_json::json!({"schemaVersion": 2, "mediaType": berth_image::manifest::media_types::OCI_INDEX, "manifests": list}),
        berth_image::manifest::media_types::OCI_INDEX,
    );
    Ok(if filter.is_some() {
        with_headers(r, vec![("oci-filters-applied", "artifactType".to_string())])
    } else {
        r
    })
}

// ---- manifests ----------------------------------------------------------------------------

fn manifest_unknown(r: &Reference) -> ApiError {
    ApiError::new(Code::ManifestUnknown, "manifest unknown")
        .detail(serde_json::json!({ "reference": r.to_string() }))
}

async fn get_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
    with_body: bool,
) -> Result<Response, ApiError> {
    let (st2, n2, r2) = (st.clone(), name.clone(), reference.clone());
    let (digest, entry, bytes) = blocking(move || {
        let meta = st2.store.read_meta(&n2)?.ok_or_else(|| name_unknown(&n2))?;
        let d = match &r2 {
            Reference::Tag(t) => meta
                .tags
                .get(t)
                .cloned()
                .ok_or_else(|| manifest_unknown(&r2))?,
            Reference::Digest(d) => d.to_string(),
        };
        let entry = meta
            .manifests
            .get(&d)
            .cloned()
            .ok_or_else(|| manifest_unknown(&r2))?;
        let digest = Digest::parse(&d).map_err(ApiError::internal)?;
        let bytes =
            std::fs::read(st2.store.blob_path(&digest)).map_err(|_| manifest_unknown(&r2))?;
        Ok((digest, entry, bytes))
    })
    .await?;
    if with_body {
        let ds = digest.to_string();
        ctx.audit(
            &st,
            "pull",
            "manifest",
            &name,
            Some(&reference.to_string()),
            Some(&ds),
        );
    }
    let len = bytes.len();
    let mut r = Response::new(if with_body {
        Body::from(bytes)
    } else {
        Body::empty()
    });
    let h = r.headers_mut();
    h.insert("content-type", hv(&entry.media_type));
    h.insert("content-length", hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&digest.to_string()));
    h.insert("etag", hv(&format!("\"{digest}\"")));
    Ok(r)
}

async fn put_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
    content_type: Option<String>,
    len: Option<u64>,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = st.limits.max_manifest_bytes;
    if len.is_some_and(|l| l > limit as u64) {
        return Err(ApiError::too_large(limit as u64));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit as u64))?;
    let parsed = manifest::parse(&bytes, content_type.as_deref())?;
    let digest = Digest::of_bytes(&bytes);
    if let Reference::Digest(want) = &reference {
        if *want != digest {
            return Err(ApiError::new(
                Code::DigestInvalid,
                "manifest digest does not match the reference",
            )
            .detail(
                serde_json::json!({"expected": want.to_string(), "actual": digest.to_string()}),
            ));
        }
    }
    let (st2, n2, r2, p2, d2) = (
        st.clone(),
        name.clone(),
        reference.clone(),
        parsed.clone(),
        digest.clone(),
    );
    let size = bytes.len() as u64;
    blocking(move || {
        let store = &st2.store;
        let _gc = store.gc_lock(false)?;
        store.update_meta_locked(&n2, true, |meta| {
            let meta = meta.expect("created");
            for b in p2.blobs.iter().filter(|b| !b.external) {
                let ds = b.digest.to_string();
                let linked = meta.blobs.contains(&ds) || meta.manifests.contains_key(&ds);
                match store.blob_size(&b.digest) {
                    Some(s) if linked && s == b.size => store.touch(&b.digest),
                    Some(s) if linked => {
                        return Err(ApiError::new(
                            Code::ManifestInvalid,
                            format!("size of {ds} is {s}, the manifest says {}", b.size),
                        ))
                    }
                    _ => {
                        return Err(ApiError::new(
                            Code::ManifestBlobUnknown,
                            "blob unknown to registry",
                        )
                        .detail(serde_json::json!({ "digest": ds })))
                    }
                }
            }
            for c in &p2.children {
                let ds = c.digest.to_string();
                match meta.manifests.get(&ds) {
                    Some(e) if e.size == c.size => store.touch(&c.digest),
                    _ => {
                        return Err(ApiError::new(
                            Code::ManifestBlobUnknown,
                            "manifest references an unknown manifest",
                        )
                        .detail(serde_json::json!({ "digest": ds })))
                    }
                }
            }
            store.put_blob_bytes(&bytes)?;
            let artifact_type = p2
                .artifact_type
                .clone()
                .or_else(|| (!p2.is_index()).then(|| p2.blobs[0].media_type.clone()));
            meta.manifests.insert(
                d2.to_string(),
                ManifestEntry {
                    media_type: p2.media_type.clone(),
                    size,
                    blobs: p2.blobs.iter().map(|b| b.digest.to_string()).collect(),
                    children: p2.children.iter().map(|b| b.digest.to_string()).collect(),
                    subject: p2.subject.as_ref().map(|s| s.digest.to_string()),
                    artifact_type,
                    annotations: p2.annotations.clone(),
                    pushed: now_secs(),
                },
            );
            if let Reference::Tag(t) = &r2 {
                meta.tags.insert(t.clone(), d2.to_string());
            }
            Ok(((), true))
        })
    })
    .await?;
    let ds = digest.to_string();
    ctx.audit(
        &st,
        "push",
        "manifest",
        &name,
        Some(&reference.to_string()),
        Some(&ds),
    );
    let mut hs = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", ds),
    ];
    if let Some(s) = &parsed.subject {
        hs.push(("oci-subject", s.digest.to_string()));
    }
    Ok(empty(StatusCode::CREATED, &hs))
}

async fn delete_manifest(
    st: St,
    ctx: Ctx,
    name: String,
    reference: Reference,
) -> Result<Response, ApiError> {
    let (st2, n2, r2) = (st.clone(), name.clone(), reference.clone());
    blocking(move || {
        st2.store.update_meta(&n2, false, |meta| {
            let meta = meta.ok_or_else(|| name_unknown(&n2))?;
            match &r2 {
                Reference::Tag(t) => {
                    meta.tags.remove(t).ok_or_else(|| manifest_unknown(&r2))?;
                }
                Reference::Digest(d) => {
                    let ds = d.to_string();
                    meta.manifests
                        .remove(&ds)
                        .ok_or_else(|| manifest_unknown(&r2))?;
                    meta.tags.retain(|_, v| *v != ds);
                }
            }
            Ok(((), true))
        })
    })
    .await?;
    let (kind, digest) = match &reference {
        Reference::Tag(_) => ("tag", None),
        Reference::Digest(d) => ("manifest", Some(d.to_string())),
    };
    ctx.audit(
        &st,
        "delete",
        kind,
        &name,
        Some(&reference.to_string()),
        digest.as_deref(),
    );
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

// ---- blobs --------------------------------------------------------------------------------

fn blob_unknown(d: &Digest) -> ApiError {
    ApiError::new(Code::BlobUnknown, "blob unknown to registry")
        .detail(serde_json::json!({ "digest": d.to_string() }))
}

/// Parses `bytes=a-b`, `bytes=a-`, `bytes=-n` against `size`: `Ok(None)` for no range,
/// `Err(())` when unsatisfiable or malformed.
fn parse_range(h: &str, size: u64) -> Result<(u64, u64), ()> {
    let spec = h.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Err(());
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            size.checked_sub(1).ok_or(())?
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if start >= size || start > end {
        return Err(());
    }
    Ok((start, end))
}

async fn get_blob(
    st: St,
    name: String,
    d: Digest,
    with_body: bool,
    range: Option<String>,
) -> Result<Response, ApiError> {
    let (st2, d2) = (st.clone(), d.clone());
    let size = blocking(move || {
        let meta = st2
            .store
            .read_meta(&name)?
            .ok_or_else(|| blob_unknown(&d2))?;
        let ds = d2.to_string();
        if !meta.blobs.contains(&ds) && !meta.manifests.contains_key(&ds) {
            return Err(blob_unknown(&d2));
        }
        let size = st2.store.blob_size(&d2).ok_or_else(|| blob_unknown(&d2))?;
        if !with_body {
            // HEAD is how pushers ask whether to upload: keep the blob out of gc's reach
            // (checked again under the gc lock, so that gc cannot be deleting it right now).
            let _gc = st2.store.gc_lock(false)?;
            st2.store.blob_size(&d2).ok_or_else(|| blob_unknown(&d2))?;
            st2.store.touch(&d2);
        }
        Ok(size)
    })
    .await?;
    let mut status = StatusCode::OK;
    let (mut start, mut len) = (0u64, size);
    let mut extra = Vec::new();
    if let Some(r) = range.filter(|_| with_body) {
        match parse_range(&r, size) {
            Ok((s, e)) => {
                status = StatusCode::PARTIAL_CONTENT;
                start = s;
                len = e - s + 1;
                extra.push(("content-range", format!("bytes {s}-{e}/{size}")));
            }
            Err(()) => {
                return Err(
                    ApiError::new(Code::RangeInvalid, "requested range not satisfiable")
                        .header("content-range", format!("bytes */{size}")),
                )
            }
        }
    }
    let body = if with_body {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut f = tokio::fs::File::open(st.store.blob_path(&d))
            .await
            .map_err(|_| blob_unknown(&d))?;
        if start > 0 {
            f.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let stream = futures_util::stream::unfold((f, len), |(mut f, rem)| async move {
            if rem == 0 {
                return None;
            }
            let mut buf = vec![0u8; rem.min(512 * 1024) as usize];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shorter than expected",
                    )),
                    (f, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (f, rem - n as u64)))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        });
        Body::from_stream(stream)
    } else {
        Body::empty()
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("content-length", hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&d.to_string()));
    h.insert("etag", hv(&format!("\"{d}\"")));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=31536000"),
    );
    for (k, v) in extra {
        h.insert(k, hv(&v));
    }
    Ok(r)
}

async fn delete_blob(st: St, ctx: Ctx, name: String, d: Digest) -> Result<Response, ApiError> {
    let (st2, n2, d2) = (st.clone(), name.clone(), d.clone());
    blocking(move || {
        st2.store.update_meta(&n2, false, |meta| {
            let meta = meta.ok_or_else(|| blob_unknown(&d2))?;
            if !meta.blobs.remove(&d2.to_string()) {
                return Err(blob_unknown(&d2));
            }
            Ok(((), true))
        })
    })
    .await?;
    let ds = d.to_string();
    ctx.audit(&st, "delete", "blob", &name, None, Some(&ds));
    Ok(empty(StatusCode::ACCEPTED, &[]))
}

// ---- uploads ------------------------------------------------------------------------------

fn upload_unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
        .detail(serde_json::json!({ "id": id }))
}

fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", range_value(size)),
        ("docker-upload-uuid", id.to_string()),
    ]
}

fn upload_of(st: &AppState, name: &str, id: &str) -> Result<u64, ApiError> {
    match st.store.upload(id) {
        Some((info, size)) if info.repository == name => Ok(size),
        _ => Err(upload_unknown(id)),
    }
}

async fn post_upload(
    st: St,
    ctx: Ctx,
    name: String,
    q: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Cross-repository mount.
    if let Some(m) = q1(&q, "mount") {
        let d = digest_or_err(m)?;
        if let Some(from) = q1(&q, "from").filter(|f| valid_name(f)) {
            if st.auth.permits(&ctx.id, from, Action::Pull) {
                let (st2, n2, f2, d2) = (st.clone(), name.clone(), from.to_string(), d.clone());
                let mounted = blocking(move || {
                    let ds = d2.to_string();
                    let in_from = st2
                        .store
                        .read_meta(&f2)?
                        .is_some_and(|m| m.blobs.contains(&ds) || m.manifests.contains_key(&ds));
                    let _gc = st2.store.gc_lock(false)?;
                    if !in_from || st2.store.blob_size(&d2).is_none() {
                        return Ok(false);
                    }
                    st2.store.touch(&d2);
                    st2.store.update_meta_locked(&n2, true, |meta| {
                        let meta = meta.expect("created");
                        Ok::<_, ApiError>((true, meta.blobs.insert(ds)))
                    })
                })
                .await?;
                if mounted {
                    let ds = d.to_string();
                    ctx.audit(&st, "push", "mount", &name, Some(from), Some(&ds));
                    return Ok(empty(
                        StatusCode::CREATED,
                        &[
                            ("location", format!("/v2/{name}/blobs/{d}")),
                            ("docker-content-digest", ds),
                        ],
                    ));
                }
            }
        }
        // Not mountable: an ordinary upload session, as the spec says.
    }
    let digest = match q1(&q, "digest") {
        Some(d) => Some(digest_or_err(d)?),
        None => None,
    };
    let (st2, n2) = (st.clone(), name.clone());
    let max_open = st.limits.max_open_uploads.max(1);
    let id = blocking(move || {
        // Each session is a directory on disk until it is finished, cancelled or collected:
        // without a cap, a client could start them without end.
        if st2.store.open_uploads() >= max_open {
            return Err(
                ApiError::new(Code::TooManyRequests, "too many open upload sessions")
                    .header("retry-after", "5".to_string()),
            );
        }
        Ok(st2.store.new_upload(&n2)?)
    })
    .await?;
    if let Some(d) = digest {
        // Monolithic upload: the body is the blob.
        let r = async {
            append(&st, &id, headers, body, None).await?;
            finish(&st, &ctx, &name, &id, &d).await
        }
        .await;
        if r.is_err() {
            st.store.remove_upload(&id);
            st.forget_upload(&id);
        }
        return r;
    }
    Ok(empty(StatusCode::ACCEPTED, &upload_headers(&name, &id, 0)))
}

/// `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v.strip_prefix("bytes ").unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

async fn patch_upload(
    st: St,
    name: String,
    id: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload_of(&st, &name, &id)?;
    let cr = match headers.get("content-range").and_then(|v| v.to_str().ok()) {
        Some(v) => Some(
            parse_content_range(v)
                .ok_or_else(|| ApiError::new(Code::RangeInvalid, "malformed Content-Range"))?,
        ),
        None => None,
    };
    let size = append(&st, &id, headers, body, cr).await.map_err(|e| {
        if e.code == Code::RangeInvalid {
            let size = st.store.upload(&id).map(|u| u.1).unwrap_or(0);
            e.header("location", format!("/v2/{name}/blobs/uploads/{id}"))
                .header("range", range_value(size))
        } else {
            e
        }
    })?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &upload_headers(&name, &id, size),
    ))
}

async fn put_upload(
    st: St,
    ctx: Ctx,
    name: String,
    id: String,
    q: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload_of(&st, &name, &id)?;
    let d = digest_or_err(
        q1(&q, "digest")
            .ok_or_else(|| ApiError::new(Code::DigestInvalid, "digest parameter missing"))?,
    )?;
    if content_length(headers) != Some(0) {
        let cr = headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        append(&st, &id, headers, body, cr).await?;
    }
    finish(&st, &ctx, &name, &id, &d).await
}

async fn upload_status(st: St, name: String, id: String) -> Result<Response, ApiError> {
    let size = upload_of(&st, &name, &id)?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &upload_headers(&name, &id, size),
    ))
}

async fn cancel_upload(st: St, name: String, id: String) -> Result<Response, ApiError> {
    upload_of(&st, &name, &id)?;
    let hs = st.hash_state(&id);
    let _g = hs.lock().await;
    st.store.remove_upload(&id);
    st.forget_upload(&id);
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

enum WriteFail {
    TooLarge,
    Io(std::io::Error),
}

/// Appends a request body to an upload (one request at a time per upload), hashing as it goes.
/// Returns the upload's new size.
async fn append(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    content_range: Option<(u64, u64)>,
) -> Result<u64, ApiError> {
    let max = st.limits.max_upload_bytes;
    let hs = st.hash_state(id);
    let mut guard = hs.lock().await;
    let size = st.store.upload(id).ok_or_else(|| upload_unknown(id))?.1;
    if let Some((start, end)) = content_range {
        if start != size || end < start {
            return Err(ApiError::new(
                Code::RangeInvalid,
                format!("Content-Range starts at {start}, the upload has {size} bytes"),
            ));
        }
        if let Some(len) = content_length(headers) {
            if len != end - start + 1 {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    "Content-Range and Content-Length disagree",
                ));
            }
        }
    }
    if let Some(len) = content_length(headers) {
        if size.saturating_add(len) > max {
            return Err(ApiError::too_large(max));
        }
    }
    let _slot = st.upload_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(Code::TooManyRequests, "too many uploads in progress")
            .header("retry-after", "5".to_string())
    })?;
    let hasher = match guard.take() {
        Some((n, h)) if n == size => h,
        _ if size == 0 => Sha256::new(),
        _ => {
            // Unknown state (after a restart): hash what is on disk.
            let p = st.store.upload_data(id);
            blocking(move || {
                let mut f = std::fs::File::open(&p)?;
                let mut h = Sha256::new();
                std::io::copy(&mut f, &mut h)?;
                Ok(h)
            })
            .await?
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let path = st.store.upload_data(id);
    let writer = tokio::task::spawn_blocking(move || {
        let mut h = hasher;
        let mut total = size;
        let res = (|| {
            let mut w = UploadWriter::open(&path).map_err(WriteFail::Io)?;
            while let Some(b) = rx.blocking_recv() {
                if total + b.len() as u64 > max {
                    return Err(WriteFail::TooLarge);
                }
                w.write(&b).map_err(WriteFail::Io)?;
                h.update(&b);
                total += b.len() as u64;
            }
            w.finish().map_err(WriteFail::Io)
        })();
        (res, h, total)
    });
    let idle = Duration::from_secs(st.limits.idle_timeout_seconds.max(1));
    let mut stream = body.into_data_stream();
    let mut body_err: Option<String> = None;
    loop {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(b))) => {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Ok(Some(Err(e))) => {
                body_err = Some(format!("reading the request body: {e}"));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                body_err = Some("request body stalled".into());
                break;
            }
        }
    }
    drop(tx);
    let (res, h, total) = writer.await.map_err(ApiError::internal)?;
    match res {
        Ok(()) => {
            *guard = Some((total, h));
            match body_err {
                None => Ok(total),
                Some(e) => Err(ApiError::new(Code::BlobUploadInvalid, e)),
            }
        }
        Err(WriteFail::TooLarge) => {
            st.store.remove_upload(id);
            drop(guard);
            st.forget_upload(id);
            Err(ApiError::too_large(max))
        }
        Err(WriteFail::Io(e)) => Err(ApiError::internal(e)),
    }
}

/// Verifies an upload against `want` and makes it a blob linked to `name`.
async fn finish(
    st: &AppState,
    ctx: &Ctx,
    name: &str,
    id: &str,
    want: &Digest,
) -> Result<Response, ApiError> {
    let hs = st.hash_state(id);
    let mut guard = hs.lock().await;
    let size = st.store.upload(id).ok_or_else(|| upload_unknown(id))?.1;
    let got = match guard.take() {
        Some((n, h)) if n == size => Digest::from_sha256_bytes(h.finalize().into()),
        _ => {
            let store = st.store.clone();
            let id2 = id.to_string();
            blocking(move || Ok(store.hash_upload(&id2)?.0)).await?
        }
    };
    if &got != want {
        st.store.remove_upload(id);
        drop(guard);
        st.forget_upload(id);
        return Err(ApiError::new(
            Code::DigestInvalid,
            "provided digest did not match uploaded content",
        )
        .detail(serde_json::json!({"expected": want.to_string(), "actual": got.to_string()})));
    }
    let (store, id2, d2, n2) = (
        st.store.clone(),
        id.to_string(),
        want.clone(),
        name.to_string(),
    );
    blocking(move || {
        store.commit_upload(&id2, &d2)?;
        store.update_meta(&n2, true, |meta| {
            let meta = meta.expect("created");
            Ok::<_, ApiError>(((), meta.blobs.insert(d2.to_string())))
        })
    })
    .await?;
    drop(guard);
    st.forget_upload(id);
    let ds = want.to_string();
    ctx.audit(st, "push", "blob", name, None, Some(&ds));
    Ok(empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{want}")),
            ("docker-content-digest", ds),
        ],
    ))
}

// ---- /token ---------------------------------------------------------------------------------

/// Grants for `scope` strings (`repository:<name>:<actions>`, `registry:catalog:*`).
fn grant(
    st: &AppState,
    user: Option<&str>,
    scopes: &[String],
) -> Vec<(String, String, Vec<Action>)> {
    let mut out: Vec<(String, String, Vec<Action>)> = Vec::new();
    for s in scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
    {
        let Some((ty, rest)) = s.split_once(':') else {
            continue;
        };
        let Some((name, acts)) = rest.rsplit_once(':') else {
            continue;
        };
        if ty == "registry" && name == "catalog" {
            out.push(("registry".into(), "catalog".into(), Vec::new()));
            continue;
        }
        if ty != "repository" || !valid_name(name) {
            continue;
        }
        let may = st.auth.allowed(user, name);
        let mut want: BTreeSet<Action> = BTreeSet::new();
        for a in acts.split(',') {
            if a == "*" {
                want.extend(Action::ALL);
            } else if let Some(a) = Action::parse(a) {
                want.insert(a);
            }
        }
        let granted: Vec<Action> = want.intersection(&may).copied().collect();
        out.push(("repository".into(), name.to_string(), granted));
    }
    out
}

fn token_error(status: StatusCode, error: &str, desc: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"error": error, "error_description": desc,
            "errors": [{"code": "UNAUTHORIZED", "message": desc}]}),
        "application/json",
    )
}

/// `GET /token?service=…&scope=…` with optional basic auth (Docker's token protocol).
pub async fn token_get(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return token_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is not configured",
        );
    }
    let q = query_pairs(req.uri().query());
    let user = match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(parse_basic)
    {
        None => None,
        Some(Some((u, p))) if blocking_check(&st, &u, &p).await => Some(u),
        Some(_) => {
            let mut r = token_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid username or password",
            );
            r.headers_mut().insert(
                "www-authenticate",
                hv(&format!("Basic realm=\"{}\"", st.auth.service)),
            );
            return r;
        }
    };
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let access = grant(&st, user.as_deref(), &scopes);
    let now = now_secs();
    let token = st.auth.issue(user.as_deref(), &access, now);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"token": token, "access_token": token, "expires_in": st.auth.ttl(),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}

async fn blocking_check(st: &St, u: &str, p: &str) -> bool {
    let (st, u, p) = (st.clone(), u.to_string(), p.to_string());
    tokio::task::spawn_blocking(move || st.auth.check_password(&u, &p))
        .await
        .unwrap_or(false)
}

/// `POST /token` (OAuth2 password grant, as containerd and podman send it).
pub async fn token_post(State(st): State<St>, req: Request) -> Response {
    if !st.auth.enabled() {
        return token_error(
            StatusCode::NOT_FOUND,
            "unsupported",
            "authentication is not configured",
        );
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request", "body too large");
    };
    let f = query_pairs(std::str::from_utf8(&body).ok());
    if q1(&f, "grant_type") != Some("password") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the password grant is supported",
        );
    }
    let (Some(u), Some(p)) = (q1(&f, "username"), q1(&f, "password")) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "username and password required",
        );
    };
    if !blocking_check(&st, u, p).await {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "invalid username or password",
        );
    }
    let scopes: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    let access = grant(&st, Some(u), &scopes);
    let now = now_secs();
    let token = st.auth.issue(Some(u), &access, now);
    json_response(
        StatusCode::OK,
        &serde_json::json!({"access_token": token, "token_type": "Bearer",
            "expires_in": st.auth.ttl(), "scope": scopes.join(" "),
            "issued_at": berth_image::timeutil::format_rfc3339(now as i64)}),
        "application/json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Ok((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,3-4", 100), Err(()));
        assert_eq!(parse_range("items=0-1", 100), Err(()));
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
    }

    #[test]
    fn pages() {
        let all: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let q = vec![("n".to_string(), "2".to_string())];
        let (p, next) = paginate(all.clone(), &q).unwrap();
        assert_eq!(p, ["a", "b"]);
        assert_eq!(next, Some((2, "b".to_string())));
        let q = vec![
            ("n".to_string(), "2".to_string()),
            ("last".to_string(), "b".to_string()),
        ];
        let (p, next) = paginate(all.clone(), &q).unwrap();
        assert_eq!(p, ["c", "d"]);
        assert_eq!(next, None);
        let (p, _) = paginate(all.clone(), &[("n".into(), "0".into())]).unwrap();
        assert!(p.is_empty());
        assert!(paginate(all, &[("n".into(), "x".into())]).is_err());
    }
}
