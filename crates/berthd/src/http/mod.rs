//! The Engine API's routes: each handler decodes (berth-api's models, dockerd's rules), calls
//! the domain, and encodes. One error type, [`ApiError`], maps the domain's errors to status
//! codes; a body that does not decode is a 400 naming the field.
//!
//! A [`strip_version`] layer in front of the router removes the `/v1.NN` prefix and gives
//! each request its [`ApiVersion`] (an extension; the current one without a prefix).

mod attach_ws;
pub mod build;
pub mod containers;
pub mod distribution;
pub mod exec;
mod fetch;
pub mod images;
pub mod networks;
pub mod system;
pub mod volumes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use berth_api::{ApiVersion, DecodeError, ErrorResponse, Filters};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::sysinfo;

/// Shared state of the handlers.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub info: sysinfo::Static,
}

pub(crate) type St = State<Arc<AppState>>;
pub(crate) type Q = Query<HashMap<String, String>>;
pub(crate) type Id = Path<String>;
pub(crate) type R = Result<Response, ApiError>;

/// An API error: `{"message": …}` with a status code.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A feature Berth does not have (501).
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::NOT_MODIFIED {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        json_status(
            self.status,
            &ErrorResponse {
                message: self.message,
            },
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        ApiError::bad(e.to_string())
    }
}

impl From<crate::volumes::VolumeError> for ApiError {
    fn from(e: crate::volumes::VolumeError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl From<crate::archive::ArchiveError> for ApiError {
    fn from(e: crate::archive::ArchiveError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        EngineError::from(e).into()
    }
}

/// A JSON response (200).
pub(crate) fn json<T: Serialize>(v: &T) -> Response {
    json_status(StatusCode::OK, v)
}

/// A JSON response with a status.
pub(crate) fn json_status<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the response: {e}"),
        )
            .into_response(),
    }
}

/// A JSON line of a streamed response.
pub(crate) fn json_line<T: Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// A response streaming what a channel receives.
pub(crate) fn stream(
    content_type: &'static str,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

/// The `101 Switching Protocols` answer of a hijacked stream (attach, exec).
pub(crate) fn upgrade_response(content_type: &'static str) -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "tcp"),
        ],
    )
        .into_response()
}

/// The API connection of a request: its unix socket's descriptor (absent on TCP), recorded
/// when the connection is accepted (`into_make_service_with_connect_info`).
///
/// docker-py reads a hijacked stream from the raw socket under its buffered HTTP reader: the
/// bytes that reach the client together with the `101`'s head land in that reader's buffer and
/// are lost. A hijacked session therefore waits for the client to read the head
/// ([`ClientSocket::head_read`]) before the stream's first byte is sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientSocket(Option<std::os::fd::RawFd>);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for ClientSocket
{
    fn connect_info(s: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        use std::os::fd::AsRawFd;
        ClientSocket(Some(s.io().as_raw_fd()))
    }
}

/// How long a hijacked session waits for its client to read the response head.
const HEAD_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ClientSocket {
    /// The connection of `req` (none: not recorded, a TCP connection).
    pub(crate) fn of(req: &Request) -> ClientSocket {
        req.extensions()
            .get::<axum::extract::ConnectInfo<ClientSocket>>()
            .map(|c| c.0)
            .unwrap_or_default()
    }

    /// Waits until the client has read all that was sent on the connection (the response
    /// head), at most [`HEAD_READ_WAIT`]. `conn`, the connection upgraded, is held meanwhile:
    /// it owns the descriptor. False when that cannot be known (not a unix socket).
    pub(crate) async fn head_read(self, conn: &mut hyper::upgrade::Upgraded) -> bool {
        let _ = conn;
        let Some(fd) = self.0 else { return false };
        let start = std::time::Instant::now();
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: `fd` is the connection's socket, kept open by `conn` (borrowed for this
            // call); SIOCOUTQ (= TIOCOUTQ) writes one int, to `queued`. On a unix stream
            // socket it counts the bytes sent and not yet read by the peer.
            if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } < 0 {
                return false;
            }
            if queued == 0 {
                return true;
            }
            if start.elapsed() > HEAD_READ_WAIT {
                tracing::debug!("the client did not read the response head in {HEAD_READ_WAIT:?}");
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// The content type of a container's or exec's stream.
/// [`stream`] answered only once the first message is there: for jobs that report only at
/// their end (dockerd's import of a request body answers when the image exists), the client's
/// call returns with the work done.
pub(crate) async fn stream_after_first(
    content_type: &'static str,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> Response {
    let first = rx.recv().await;
    let body = futures_util::stream::unfold((first, rx), |(first, mut rx)| async move {
        match first {
            Some(b) => Some((Ok::<_, Infallible>(b), (None, rx))),
            None => rx.recv().await.map(|b| (Ok(b), (None, rx))),
        }
    });
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

pub(crate) fn stream_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// `204 No Content`.
pub(crate) fn no_content() -> R {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// dockerd's `CheckForJSON`: a body comes as `application/json` (parameters allowed); only an
/// empty body may come without a content type.
pub(crate) fn check_json_type(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(ct) = ct
        .filter(|c| !c.is_empty())
        .or_else(|| (!body.is_empty()).then(String::new))
    else {
        return Ok(());
    };
    let media = ct.split(';').next().unwrap_or_default().trim();
    if media.is_empty() {
        return Err(ApiError::bad(format!(
            "malformed Content-Type header ({ct}): mime: no media type"
        )));
    }
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::bad(format!(
            "unsupported Content-Type header ({ct}): must be 'application/json'"
        )));
    }
    Ok(())
}

/// A request body meant to hold JSON: its content type checked ([`check_json_type`]), not
/// decoded yet (handlers [`decode`] it into their model).
pub(crate) struct JsonBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad(format!("reading the body: {}", e.body_text())))?;
        check_json_type(&headers, &body)?;
        Ok(JsonBody(body))
    }
}

/// Decodes a JSON body with dockerd's rules (an empty body is `{}`).
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(berth_api::from_slice(body)?)
}

/// Docker's boolean query parameters.
pub(crate) fn qbool(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| is_true(v))
}

fn is_true(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "yes")
}

/// dockerd's `httputils.BoolValue` of a present parameter: true unless it is (after trimming,
/// any case) empty, `0`, `no`, `false` or `none`.
pub(crate) fn form_bool(v: &str) -> bool {
    !matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// Typed query parameters: `T` derives `Deserialize` (with `#[serde(default)]`); a query
/// that does not decode is a 400.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// A Docker boolean query parameter (`1`, `true`, `True`, `yes`) as a `bool` field.
pub(crate) fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s: String = serde::Deserialize::deserialize(d)?;
    Ok(is_true(&s))
}

/// Filters of a typed query's `filters` field.
pub(crate) fn parse_filters(f: &str) -> Result<Filters, ApiError> {
    Filters::parse(f).map_err(|e| ApiError::bad(format!("invalid filter: {}", e.message)))
}

/// A non-empty query parameter.
pub(crate) fn qstr<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

/// The `filters` query parameter.
pub(crate) fn filters(q: &HashMap<String, String>) -> Result<Filters, ApiError> {
    parse_filters(qstr(q, "filters").unwrap_or(""))
}

/// `t` (seconds) of stop and restart, and their `signal`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct StopQuery {
    t: String,
    signal: String,
}

impl StopQuery {
    pub(crate) fn timeout(&self) -> Result<Option<i64>, ApiError> {
        Some(self.t.as_str())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<i64>()
                    .map_err(|_| ApiError::bad(format!("invalid value for t: {t}")))
            })
            .transpose()
    }

    pub(crate) fn signal(&self) -> Option<&str> {
        Some(self.signal.as_str()).filter(|s| !s.is_empty())
    }
}

/// `h`/`w` of the resize routes.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct SizeQuery {
    h: Option<String>,
    w: Option<String>,
}

impl SizeQuery {
    /// The height and width, checked as dockerd's `httputils.Uint32Value` (its messages);
    /// sizes past a terminal's 16 bits are clamped.
    pub(crate) fn dims(&self) -> Result<(u16, u16), ApiError> {
        let p = |v: &Option<String>, k: &str| -> Result<u16, ApiError> {
            let raw = v.as_deref().unwrap_or_default();
            let err = |why: &str| ApiError::bad(format!("invalid resize {k} {raw:?}: {why}"));
            let (digits, negative) = match raw.strip_prefix('-') {
                Some(d) => (d, true),
                None => (raw, false),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("invalid syntax"));
            }
            let n = digits
                .parse::<u32>()
                .map_err(|_| err("value out of range"))?;
            if negative {
                return Err(err("value out of range"));
            }
            Ok(u16::try_from(n).unwrap_or(u16::MAX))
        };
        Ok((p(&self.h, "height")?, p(&self.w, "width")?))
    }
}

/// Decodes `%XX` and `+` of a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query pairs in order, repeated keys kept (`t` of a build, `names` of a save).
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Runs blocking domain work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?.map_err(Into::into)
}

/// The most a request body read whole (a JSON document) may have: dockerd sets no limit,
/// and a create publishing `1-65535` sends several megabytes (axum's default is 2 MiB).
const BODY_LIMIT: usize = 64 << 20;

/// The router (paths without the version prefix; see [`strip_version`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(containers::routes())
        .merge(exec::routes())
        .merge(images::routes())
        .merge(distribution::routes())
        .merge(build::routes())
        .merge(crate::buildkit::routes()) // issue 15: BuildKit API for buildx
        .merge(networks::routes())
        .merge(volumes::routes())
        .route(
            "/_badversion/{v}",
            get(bad_version)
                .post(bad_version)
                .delete(bad_version)
                .head(bad_version)
                .put(bad_version)
                .options(bad_version),
        )
        // dockerd's `OPTIONS /{anyroute:.*}`: a 200 with no body for any path.
        .route(
            OPTIONS_PATH,
            axum::routing::options(|| async { StatusCode::OK }),
        )
        .fallback(not_found)
        // dockerd's router answers a known path with another method as an unknown one.
        .method_not_allowed_fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(server_headers))
        .layer(axum::middleware::from_fn(drain_unread))
        .with_state(state)
}

/// Where [`strip_version`] sends every `OPTIONS` request (any path, as dockerd's route).
const OPTIONS_PATH: &str = "/_options";

/// The headers dockerd's version middleware sets on every answer: the server, the API
/// version it speaks by default and its OS.
async fn server_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::SERVER,
        header::HeaderValue::from_static(concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    if let Ok(v) = header::HeaderValue::from_str(&ApiVersion::CURRENT.to_string()) {
        h.insert("Api-Version", v);
    }
    h.insert("Ostype", header::HeaderValue::from_static("linux"));
    r
}

/// How much of a request body its handler left unread is read before an error answer, as
/// Go's net/http server reads it (its `maxPostHandlerReadBytes`).
const DRAIN_LIMIT: usize = 256 << 10;

/// A handler that refuses a request before reading its body (a bad query, an unknown
/// platform) answers, then the connection closes: a client still writing the body (the Go
/// client streams it) would get a broken pipe instead of the answer. As dockerd, up to
/// [`DRAIN_LIMIT`] of it is read first (for at most two seconds).
async fn drain_unread(req: Request, next: axum::middleware::Next) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = req.into_parts();
    let shared = Arc::new(tokio::sync::Mutex::new(body.into_data_stream()));
    let pulled = futures_util::stream::unfold(shared.clone(), |s| async move {
        let item = s.lock().await.next().await;
        item.map(|i| (i, s))
    });
    let resp = next
        .run(Request::from_parts(parts, Body::from_stream(pulled)))
        .await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        if let Ok(mut rest) = shared.try_lock() {
            let mut read = 0;
            while read < DRAIN_LIMIT {
                match tokio::time::timeout_at(deadline, rest.next()).await {
                    Ok(Some(Ok(chunk))) => read += chunk.len(),
                    _ => break,
                }
            }
        }
    }
    resp
}

/// Rewrites `/v1.NN/…` to `/…` and records the request's [`ApiVersion`]; unsupported
/// versions go to a route that answers 400.
pub fn strip_version(mut req: Request) -> Request {
    let mut version = ApiVersion::CURRENT;
    let path = req.uri().path().to_string();
    // As dockerd at `--log-level debug`; with the timestamps, how a client's time splits
    // between its own start-up and the daemon (bench/buildx).
    tracing::debug!("Calling {} {path}", req.method());
    let options = req.method() == axum::http::Method::OPTIONS;
    if let Some((ver, tail)) = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
    {
        if let Ok(v) = ver.parse::<ApiVersion>() {
            let new_path = if v.major == 1 && (ApiVersion::MIN..=ApiVersion::CURRENT).contains(&v) {
                version = v;
                format!("/{tail}")
            } else {
                format!("/_badversion/{ver}")
            };
            let pq = match req.uri().query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            if let Ok(u) = pq.parse::<Uri>() {
                *req.uri_mut() = u;
            }
        }
    }
    if options && !req.uri().path().starts_with("/_badversion/") {
        if let Ok(u) = OPTIONS_PATH.parse::<Uri>() {
            *req.uri_mut() = u;
        }
    }
    req.extensions_mut().insert(version);
    req
}

/// The version check's error. A client older than API 1.24 gets it as plain text, as
/// dockerd answers those (they predate JSON errors).
async fn bad_version(Path(v): Path<String>) -> Response {
    let too_old = v.parse::<ApiVersion>().is_ok_and(|v| v < ApiVersion::MIN);
    if too_old {
        let msg = format!("client version {v} is too old. Minimum supported API version is {}, please upgrade your client to a newer version", ApiVersion::MIN);
        (
            StatusCode::BAD_REQUEST,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            format!("{msg}\n"),
        )
            .into_response()
    } else {
        ApiError::bad(format!(
            "client version {v} is too new. Maximum supported API version is {}",
            ApiVersion::CURRENT
        ))
        .into_response()
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("page not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped_and_recorded() {
        let req = |p: &str| {
            let r = strip_version(Request::builder().uri(p).body(Body::empty()).unwrap());
            (
                r.uri().to_string(),
                *r.extensions().get::<ApiVersion>().unwrap(),
            )
        };
        assert_eq!(
            req("/v1.41/containers/json?all=1"),
            ("/containers/json?all=1".to_string(), ApiVersion::new(1, 41))
        );
        assert_eq!(req("/_ping"), ("/_ping".to_string(), ApiVersion::CURRENT));
        assert_eq!(req("/v1.12/version").0, "/_badversion/1.12");
        assert_eq!(req("/v1.99/version").0, "/_badversion/1.99");
        assert_eq!(req("/v2.0/version").0, "/_badversion/2.0");
        assert_eq!(req("/volumes/v1.2/x").0, "/volumes/v1.2/x");
    }

    #[test]
    fn queries() {
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%41%zz%é"), "A%zz%é");
        assert_eq!(
            query_pairs(Some("names=a%3A1&names=b&x")),
            vec![
                ("names".to_string(), "a:1".to_string()),
                ("names".into(), "b".into()),
                ("x".into(), "".into())
            ]
        );
    }
}
