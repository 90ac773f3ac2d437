//! The distribution API client: endpoints, pings, authentication, requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_image::manifest::media_types as mt;
use berth_image::{Digest, Reference};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use url::Url;

use crate::auth::{parse_challenges, Challenge, Token, TokenResponse};
use crate::credentials::{CredentialStore, Credentials};
use crate::error::{RegistryError, Result};

/// The API host behind the `docker.io` reference domain.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// Largest manifest accepted (as containerd).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// Largest image config accepted.
pub const MAX_CONFIG_SIZE: u64 = 64 << 20;

/// Client configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registries (`host` or `host:port`) that may be reached over plain http (and https
    /// without certificate verification). Loopback hosts always may.
    pub insecure_registries: Vec<String>,
    /// Mirrors, tried in order before the registry itself for pulls: reference domain
    /// (`docker.io`, `registry.example:5000`) → endpoint URLs (`https://mirror.example`,
    /// `http://127.0.0.1:5001`). A mirror serves the same repository paths.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Where credentials are read and written.
    pub credentials: CredentialStore,
    /// Layers downloaded at once during a pull.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once during a push.
    pub max_concurrent_uploads: usize,
    /// Blobs up to this size are uploaded with one `PUT`; bigger ones in `PATCH` chunks.
    pub monolithic_upload_limit: u64,
    /// Size of a `PATCH` chunk for chunked uploads.
    pub upload_chunk_size: u64,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for a read on an established connection (no bytes for this long = broken).
    pub read_timeout: Duration,
    /// How many times an interrupted blob download is resumed before giving up.
    pub download_retries: u32,
    /// The `User-Agent`.
    pub user_agent: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            mirrors: HashMap::new(),
            credentials: CredentialStore::default_location(),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            monolithic_upload_limit: 32 << 20,
            upload_chunk_size: 16 << 20,
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            download_retries: 5,
            user_agent: format!("berth/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Whether `host` (`host[:port]`, `[v6]:port`) is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let h = h.trim_start_matches('[').trim_end_matches(']');
    match h.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        return match rest.find(']') {
            Some(i) => &host[..i + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

/// One place to send requests for a registry: the registry itself or a mirror.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    pub(crate) base: Url,
    /// `host[:port]` of the endpoint (token cache, errors).
    pub(crate) host: String,
    /// Key for credentials.
    pub(crate) cred_key: String,
    /// Accept invalid TLS certificates.
    pub(crate) insecure_tls: bool,
    /// Whether this is a mirror.
    pub(crate) mirror: bool,
}

impl Endpoint {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }
}

/// The result of pinging `/v2/`.
#[derive(Debug, Clone)]
struct Pinged {
    endpoint: Endpoint,
    challenge: Option<Challenge>,
}

pub(crate) struct Inner {
    pub(crate) config: RegistryConfig,
    http: reqwest::Client,
    http_insecure: reqwest::Client,
    /// Keyed by the candidate list's first base URL (before scheme fallback).
    pinged: Mutex<HashMap<String, Pinged>>,
    /// Keyed by realm, service and sorted scopes.
    tokens: Mutex<HashMap<String, Token>>,
    /// Serialises token fetches per key.
    token_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The registry client. Its methods block (they drive an internal tokio runtime); call them
/// from ordinary threads or `tokio::task::spawn_blocking`, never from inside an async task.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    pub(crate) rt: Arc<RtHolder>,
}

/// Owns the runtime and shuts it down without blocking when dropped (so dropping the client
/// inside an async context does not panic).
pub(crate) struct RtHolder(Option<tokio::runtime::Runtime>);

impl RtHolder {
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.0
            .as_ref()
            .expect("runtime present until drop")
            .block_on(f)
    }
}

impl Drop for RtHolder {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn transport_error(registry: &str, context: &str, e: reqwest::Error) -> RegistryError {
    if e.is_connect() || (e.is_timeout() && !e.is_body()) {
        let mut reason = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = format!("{reason}: {s}");
            src = s.source();
        }
        RegistryError::Unreachable {
            registry: registry.to_string(),
            reason,
        }
    } else {
        RegistryError::Http {
            registry: registry.to_string(),
            context: context.to_string(),
            source: e,
        }
    }
}

/// The distribution error body.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A parsed error response.
pub(crate) struct ApiFailure {
    pub(crate) status: StatusCode,
    /// First error code (`MANIFEST_UNKNOWN`), if the body had one.
    pub(crate) code: Option<String>,
    /// First error message.
    pub(crate) message: String,
    pub(crate) url: String,
    pub(crate) method: String,
}

impl ApiFailure {
    pub(crate) async fn read(method: &Method, resp: Response) -> Self {
        let status = resp.status();
        let url = resp.url().to_string();
        let body = resp.bytes().await.unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let first = parsed.and_then(|b| b.errors.into_iter().next());
        let (code, message) = match first {
            Some(e) => (
                Some(e.code.clone()).filter(|c| !c.is_empty()),
                if e.message.is_empty() {
                    e.code.to_ascii_lowercase().replace('_', " ")
                } else {
                    e.message
                },
            ),
            None => {
                let text = String::from_utf8_lossy(&body).trim().to_string();
                let text = if text.is_empty() || text.len() > 512 {
                    status
                        .canonical_reason()
                        .unwrap_or("error")
                        .to_ascii_lowercase()
                } else {
                    text
                };
                (None, text)
            }
        };
        Self {
            status,
            code,
            message,
            url,
            method: method.to_string(),
        }
    }

    /// Docker's formatting: `manifest unknown: manifest unknown`.
    pub(crate) fn code_message(&self) -> String {
        match &self.code {
            Some(c) => format!(
                "{}: {}",
                c.to_ascii_lowercase().replace('_', " "),
                self.message
            ),
            None => self.message.clone(),
        }
    }

    pub(crate) fn into_error(self, registry: &str) -> RegistryError {
        match self.status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
                registry: registry.to_string(),
                message: if self.code.is_some() {
                    self.message
                } else {
                    "authentication required".to_string()
                },
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: registry.to_string(),
                message: self.message,
            },
            _ => RegistryError::Api {
                registry: registry.to_string(),
                method: self.method.clone(),
                url: self.url.clone(),
                status: self.status.as_u16(),
                message: self.code_message(),
            },
        }
    }
}

/// Options for one authenticated request.
pub(crate) struct Auth<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) scopes: &'a [String],
}

impl Client {
    /// A client with `config`.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(config.user_agent.clone())
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|e| RegistryError::Invalid(format!("building the HTTP client: {e}")))
        };
        let http = build(false)?;
        let http_insecure = build(true)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-registry")
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Invalid(format!("starting the I/O runtime: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                http_insecure,
                pinged: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                token_gates: Mutex::new(HashMap::new()),
            }),
            rt: Arc::new(RtHolder(Some(rt))),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Checks that the registry for `registry` (a reference domain) answers the `/v2/` API,
    /// with the stored credentials if it asks for them.
    pub fn ping(&self, registry: &str) -> Result<()> {
        self.rt.block_on(async {
            let eps = self.inner.primary_candidates(registry)?;
            let p = self.inner.ping(&eps, true).await?;
            let creds = self.inner.credentials(&p.endpoint.cred_key)?;
            self.inner.check_auth(&p, creds.as_ref()).await
        })
    }

    /// Checks `username`/`password` against the registry's `/v2/` (or its token service)
    /// and, when they work, stores them in the credentials file. Docker's `login`.
    pub fn login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let registry = normalize_registry_arg(registry);
        let creds = Credentials::new(username, password);
        self.rt.block_on(async {
            let eps = self.inner.primary_candidates(&registry)?;
            let p = self.inner.ping(&eps, false).await?;
            self.inner.check_auth(&p, Some(&creds)).await
        })?;
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inner.config.credentials.set(&registry, &creds)
    }

    /// Removes stored credentials for `registry`; returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        let registry = normalize_registry_arg(registry);
        self.inner
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.inner.config.credentials.remove(&registry)
    }
}

/// `https://host:5000/` → `host:5000`; `index.docker.io` → `docker.io`.
pub fn normalize_registry_arg(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

impl Inner {
    pub(crate) fn is_insecure(&self, host: &str) -> bool {
        is_loopback(host)
            || self
                .config
                .insecure_registries
                .iter()
                .any(|r| normalize_registry_arg(r) == host || strip_port(host) == r.as_str())
    }

    fn credentials(&self, key: &str) -> Result<Option<Credentials>> {
        self.config.credentials.get(key)
    }

    /// Endpoint candidates for the registry itself, in the order to try them: https (with
    /// certificate checks unless insecure), then plain http for insecure / loopback hosts.
    pub(crate) fn primary_candidates(&self, domain: &str) -> Result<Vec<Endpoint>> {
        let api_host = if domain == "docker.io" {
            DOCKER_HUB_API_HOST
        } else {
            domain
        };
        let insecure = self.is_insecure(domain);
        let mk = |scheme: &str| -> Result<Endpoint> {
            Ok(Endpoint {
                base: Url::parse(&format!("{scheme}://{api_host}"))
                    .map_err(|e| RegistryError::Invalid(format!("registry {domain:?}: {e}")))?,
                host: api_host.to_string(),
                cred_key: domain.to_string(),
                insecure_tls: insecure,
                mirror: false,
            })
        };
        let mut v = vec![mk("https")?];
        if insecure {
            v.push(mk("http")?);
        }
        Ok(v)
    }

    /// Candidate lists for a pull: each mirror (its own list), then the registry.
    pub(crate) fn pull_candidates(&self, domain: &str) -> Result<Vec<Vec<Endpoint>>> {
        let mut out = Vec::new();
        for m in self.config.mirrors.get(domain).into_iter().flatten() {
            let explicit = m.starts_with("http://") || m.starts_with("https://");
            let url_s = if explicit {
                m.clone()
            } else {
                format!("https://{m}")
            };
            let base = Url::parse(&url_s)
                .map_err(|e| RegistryError::Invalid(format!("mirror {m:?}: {e}")))?;
            let host = match (base.host_str(), base.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return Err(RegistryError::Invalid(format!("mirror {m:?} has no host"))),
            };
            let insecure = self.is_insecure(&host);
            let ep = |base: Url| Endpoint {
                base,
                host: host.clone(),
                cred_key: host.clone(),
                insecure_tls: insecure,
                mirror: true,
            };
            let mut list = vec![ep(base.clone())];
            if !explicit && insecure {
                let mut b = base.clone();
                let _ = b.set_scheme("http");
                list.push(ep(b));
            }
            out.push(list);
        }
        out.push(self.primary_candidates(domain)?);
        Ok(out)
    }

    fn http_for(&self, ep: &Endpoint) -> &reqwest::Client {
        if ep.insecure_tls {
            &self.http_insecure
        } else {
            &self.http
        }
    }

    /// Pings the candidates in order (cached per candidate list), returning the first
    /// endpoint that speaks the v2 API and its challenge.
    async fn ping(&self, candidates: &[Endpoint], use_cache: bool) -> Result<Pinged> {
        let key = candidates
            .first()
            .map(|e| e.base.to_string())
            .unwrap_or_default();
        if use_cache {
            if let Some(p) = self
                .pinged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
            {
                return Ok(p.clone());
            }
        }
        let mut last_err = None;
        for ep in candidates {
            if ep.base.scheme() == "http" && !ep.mirror && !self.is_insecure(&ep.host) {
                return Err(RegistryError::InsecureRefused(ep.host.clone()));
            }
            let url = ep.url("/v2/");
            let resp = match self.http_for(ep).get(&url).send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(url, error = %e, "ping failed");
                    last_err = Some(transport_error(&ep.host, "ping", e));
                    continue;
                }
            };
            let challenge = match resp.status() {
                s if s.is_success() => None,
                StatusCode::UNAUTHORIZED => {
                    preferred_challenge(resp.headers()).or(Some(Challenge::Basic))
                }
                _ => {
                    let f = ApiFailure::read(&Method::GET, resp).await;
                    last_err = Some(RegistryError::Protocol {
                        registry: ep.host.clone(),
                        message: format!(
                            "{} does not serve the registry v2 API ({}: {})",
                            url,
                            f.status,
                            f.code_message()
                        ),
                    });
                    continue;
                }
            };
            let p = Pinged {
                endpoint: ep.clone(),
                challenge,
            };
            self.pinged
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, p.clone());
            return Ok(p);
        }
        Err(last_err.unwrap_or_else(|| RegistryError::Invalid("no registry endpoint".into())))
    }

    /// Validates credentials (or anonymous access) against a pinged endpoint.
    async fn check_auth(&self, p: &Pinged, creds: Option<&Credentials>) -> Result<()> {
        let ep = &p.endpoint;
        match &p.challenge {
            None => Ok(()),
            Some(Challenge::Basic) => self
                .get_basic(ep, ep.url("/v2/"), creds, "GET /v2/")
                .await
                .map(drop),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let creds = creds.ok_or_else(|| RegistryError::Unauthorized {
                    registry: ep.host.clone(),
                    message: "authentication required".into(),
                })?;
                self.fetch_token(ep, realm, service.as_deref(), &[], Some(creds))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// `GET url` with basic credentials when there are some; a status other than success is
    /// the registry's error. `what` names the request in a transport error.
    async fn get_basic(
        &self,
        ep: &Endpoint,
        url: impl reqwest::IntoUrl,
        creds: Option<&Credentials>,
        what: &str,
    ) -> Result<Response> {
        let mut req = self.http_for(ep).get(url);
        if let Some(c) = creds {
            req = req.header(AUTHORIZATION, c.basic_header());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(&ep.host, what, e))?;
        if !resp.status().is_success() {
            return Err(ApiFailure::read(&Method::GET, resp)
                .await
                .into_error(&ep.host));
        }
        Ok(resp)
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> Result<Token> {
        let mut url = Url::parse(realm).map_err(|e| RegistryError::Protocol {
            registry: ep.host.clone(),
            message: format!("invalid token realm {realm:?}: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
            if let Some(c) = creds {
                q.append_pair("account", &c.username);
            }
        }
        let resp = self
            .get_basic(ep, url.clone(), creds, "fetching a token")
            .await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| transport_error(&ep.host, "reading the token", e))?;
        let tr: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                registry: ep.host.clone(),
                message: format!("invalid token response from {url}: {e}"),
            })?;
        tr.into_token().ok_or_else(|| RegistryError::Protocol {
            registry: ep.host.clone(),
            message: format!("token response from {url} has neither token nor access_token"),
        })
    }

    fn token_key(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
        s.sort_unstable();
        format!("{realm}\n{}\n{}", service.unwrap_or(""), s.join(" "))
    }

    /// The `Authorization` header for a request under `challenge`, from the token cache
    /// unless `fresh`.
    async fn auth_header(
        &self,
        ep: &Endpoint,
        challenge: &Option<Challenge>,
        scopes: &[String],
        fresh: bool,
    ) -> Result<Option<String>> {
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credentials(&ep.cred_key)?.map(|c| c.basic_header())),
            Some(Challenge::Bearer { realm, service, .. }) => {
                let key = Self::token_key(realm, service.as_deref(), scopes);
                // One fetch per scope at a time: concurrent requests wait for it.
                let gate = self
                    .token_gates
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key.clone())
                    .or_default()
                    .clone();
                let _g = gate.lock().await;
                if !fresh {
                    if let Some(t) = self
                        .tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&key)
                        .filter(|t| t.valid())
                    {
                        return Ok(Some(format!("Bearer {}", t.token)));
                    }
                }
                let creds = self.credentials(&ep.cred_key)?;
                let t = self
                    .fetch_token(ep, realm, service.as_deref(), scopes, creds.as_ref())
                    .await?;
                let h = format!("Bearer {}", t.token);
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, t);
                Ok(Some(h))
            }
        }
    }

    /// Resolves the endpoint to use from `candidates` (pinging once).
    pub(crate) async fn endpoint(&self, candidates: &[Endpoint]) -> Result<Endpoint> {
        Ok(self.ping(candidates, true).await?.endpoint)
    }

    /// Runs `f` on the pull candidates of `domain` (each mirror, then the registry) until
    /// one answers; the last failure otherwise. `what` names the operation in the log.
    pub(crate) async fn on_pull_endpoints<T>(
        &self,
        domain: &str,
        what: &str,
        mut f: impl AsyncFnMut(&Endpoint) -> Result<T>,
    ) -> Result<T> {
        let mut last = None;
        for list in &self.pull_candidates(domain)? {
            let r = match self.endpoint(list).await {
                Ok(ep) => f(&ep).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    tracing::info!(error = %e, "{what} failed on an endpoint");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(RegistryError::Invalid("no endpoint".into())))
    }

    /// A GET on `ep` with pull rights on the repository `repo` (what every read of a pull
    /// needs: manifests, blobs, tag lists).
    pub(crate) async fn get_pull(
        &self,
        ep: &Endpoint,
        repo: &str,
        url: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let scopes = [crate::auth::repository_scope(repo, false)];
        let auth = Auth {
            endpoint: ep,
            scopes: &scopes,
        };
        self.send(auth, Method::GET, url, build).await
    }

    /// Sends an authenticated request. `build` makes the request (it may be called twice:
    /// once more after a 401 with a fresh token). Returns the response whatever its status,
    /// except that a second 401 is returned as is too (the caller maps it).
    pub(crate) async fn send(
        &self,
        auth: Auth<'_>,
        method: Method,
        url: &str,
        build: &(dyn Fn(RequestBuilder) -> RequestBuilder + Sync),
    ) -> Result<Response> {
        let ep = auth.endpoint;
        let cache_key = self
            .pinged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(_, p)| p.endpoint.base == ep.base)
            .map(|(k, p)| (k.clone(), p.challenge.clone()));
        let mut challenge = cache_key.as_ref().and_then(|(_, c)| c.clone());
        let same_origin = Url::parse(url)
            .map(|u| u.origin() == ep.base.origin())
            .unwrap_or(false);
        let mut fresh = false;
        for attempt in 0..2 {
            let header = if same_origin {
                self.auth_header(ep, &challenge, auth.scopes, fresh).await?
            } else {
                None
            };
            let mut req = self.http_for(ep).request(method.clone(), url);
            if let Some(h) = &header {
                req = req.header(AUTHORIZATION, h);
            }
            let req = build(req);
            let resp = req
                .send()
                .await
                .map_err(|e| transport_error(&ep.host, &format!("{method} {url}"), e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 || !same_origin {
                return Ok(resp);
            }
            // 401: learn the challenge the registry gives for this resource and retry once
            // with a fresh token (or with basic credentials).
            let new = preferred_challenge(resp.headers());
            let worth_retry = match (&new, &challenge) {
                (Some(n), Some(c)) => n != c || matches!(n, Challenge::Bearer { .. }),
                (Some(_), None) => true,
                _ => false,
            };
            if !worth_retry {
                return Ok(resp);
            }
            if let (Some(n), Some((k, _))) = (&new, &cache_key) {
                if let Some(p) = self
                    .pinged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(k)
                {
                    p.challenge = Some(n.clone());
                }
            }
            challenge = new;
            fresh = true;
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// GETs a manifest by tag or digest. Returns bytes, content type and the verified digest.
    pub(crate) async fn get_manifest(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        what: &str,
        display: &str,
    ) -> Result<(Vec<u8>, Option<String>, Digest)> {
        let url = ep.url(&format!("/v2/{}/manifests/{}", reference.path(), what));
        let accept = mt::ACCEPTED_MANIFESTS.join(", ");
        let resp = self
            .get_pull(ep, reference.path(), &url, &|r| {
                r.header(ACCEPT, accept.as_str())
            })
            .await?;
        if !resp.status().is_success() {
            let f = ApiFailure::read(&Method::GET, resp).await;
            return Err(match (f.status, f.code.as_deref()) {
                (StatusCode::NOT_FOUND, Some("NAME_UNKNOWN")) => RegistryError::NameUnknown {
                    repository: reference.name(),
                    message: f.message,
                },
                (StatusCode::NOT_FOUND, _) => RegistryError::ManifestUnknown {
                    reference: display.to_string(),
                    message: f.message,
                },
                _ => f.into_error(&ep.host),
            });
        }
        let content_type = header_str(resp.headers(), "content-type");
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE, &ep.host, display).await?;
        let actual = Digest::of_bytes(&bytes);
        let expected = match Digest::parse(what) {
            Ok(d) => Some(d),
            Err(_) => header_digest.and_then(|h| Digest::parse(&h).ok()),
        };
        if let Some(exp) = expected {
            if exp != actual {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {display}"),
                    expected: exp,
                    actual,
                });
            }
        }
        Ok((bytes, content_type, actual))
    }

    /// GETs a small blob (config) fully into memory, verified.
    pub(crate) async fn get_small_blob(
        &self,
        ep: &Endpoint,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if size > MAX_CONFIG_SIZE {
            return Err(RegistryError::Invalid(format!(
                "{what} {digest} is {size} bytes, more than the {MAX_CONFIG_SIZE} accepted"
            )));
        }
        let url = ep.url(&format!("/v2/{}/blobs/{}", reference.path(), digest));
        let resp = self.get_pull(ep, reference.path(), &url, &|r| r).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::BlobUnknown {
                repository: reference.name(),
                digest: digest.clone(),
            });
        }
        if !resp.status().is_success() {
            return Err(ApiFailure::read(&Method::GET, resp)
                .await
                .into_error(&ep.host));
        }
        let bytes = read_limited(resp, size, &ep.host, what)
            .await
            .map_err(|e| match e {
                RegistryError::ManifestTooLarge { .. } => RegistryError::TooLarge {
                    digest: digest.clone(),
                    expected: size,
                },
                e => e,
            })?;
        if (bytes.len() as u64) < size {
            return Err(RegistryError::Truncated {
                digest: digest.clone(),
                got: bytes.len() as u64,
                expected: size,
            });
        }
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

pub(crate) fn header_str(h: &HeaderMap<HeaderValue>, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn read_limited(
    mut resp: Response,
    limit: u64,
    registry: &str,
    what: &str,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(RegistryError::ManifestTooLarge {
            reference: what.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(registry, &format!("reading {what}"), e))?
    {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::ManifestTooLarge {
                reference: what.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Where partial downloads are kept: `<store root>/partial/<hex>` (same file system as the
/// blobs, so a finished download is renamed into place).
pub(crate) fn partial_dir(store: &berth_image::store::BlobStore) -> PathBuf {
    store.root().join("partial")
}

/// The challenge of a response's `WWW-Authenticate` headers to answer: bearer when there is
/// one (it covers basic too: the token service takes basic credentials), else the first.
fn preferred_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let cs: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect();
    cs.iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or(cs.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn schemes() {
        let c = Inner {
            config: RegistryConfig {
                insecure_registries: vec!["reg.internal:5000".into(), "plain.internal".into()],
                ..Default::default()
            },
            http: reqwest::Client::new(),
            http_insecure: reqwest::Client::new(),
            pinged: Default::default(),
            tokens: Default::default(),
            token_gates: Default::default(),
        };
        let schemes = |d: &str| -> Vec<String> {
            c.primary_candidates(d)
                .unwrap()
                .iter()
                .map(|e| e.base.to_string())
                .collect()
        };
        assert_eq!(schemes("docker.io"), vec!["https://registry-1.docker.io/"]);
        assert_eq!(schemes("quay.io"), vec!["https://quay.io/"]);
        assert_eq!(
            schemes("localhost:5000"),
            vec!["https://localhost:5000/", "http://localhost:5000/"]
        );
        assert_eq!(
            schemes("reg.internal:5000"),
            vec!["https://reg.internal:5000/", "http://reg.internal:5000/"]
        );
        assert_eq!(schemes("plain.internal:8080").len(), 2);
        assert_eq!(schemes("reg.internal:5001").len(), 1);
        let eps = c.primary_candidates("quay.io").unwrap();
        assert!(!eps[0].insecure_tls);
    }

    #[test]
    fn registry_arg() {
        assert_eq!(
            normalize_registry_arg("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry_arg("localhost:5000"), "localhost:5000");
        assert_eq!(
            normalize_registry_arg("http://localhost:5000/v2/"),
            "localhost:5000"
        );
        assert_eq!(normalize_registry_arg(""), "docker.io");
    }
}
