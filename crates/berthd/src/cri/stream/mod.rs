//! The CRI streaming server: `Exec`, `Attach` and `PortForward` answer the URL of a session
//! here (`http://ADDR:PORT/{exec,attach,portforward}/<token>`, the token good for one use
//! within a minute, as the kubelet's `cri/streaming` request cache), and the kubelet (or
//! crictl) upgrades that URL's connection to one of the protocols client-go speaks:
//!
//! - **SPDY/3.1** ([`spdy`]): `X-Stream-Protocol-Version` negotiates `v5.channel.k8s.io`
//!   (the same as v4 over SPDY), `v4.channel.k8s.io`, `v3.channel.k8s.io`,
//!   `v2.channel.k8s.io`, `channel.k8s.io` for exec/attach (the client opens one stream per
//!   `streamType` header: `error`, `stdin`, `stdout`, `stderr`, `resize`) and
//!   `portforward.k8s.io` (a `data` + `error` stream pair per `requestID`, the `port` header
//!   saying where to).
//! - **WebSocket** ([`ws`]): `Sec-WebSocket-Protocol` `v5.channel.k8s.io` (channel 255 closes
//!   a channel), `v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io`,
//!   `base64.channel.k8s.io`; each message's first byte is its channel (0 stdin, 1 stdout,
//!   2 stderr, 3 error, 4 resize; port forwarding: 2i data and 2i+1 error of the i-th port).
//!
//! [`session`] maps both transports onto the same channels; [`remote`] runs an exec or an
//! attach on the engine (the Docker API's exec and attach machinery: the shim's streams,
//! its `resize`), [`portforward`] dials the port inside the pod's network namespace.

pub mod idle;
pub mod portforward;
pub mod remote;
pub mod session;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use berth_cri::proto as pb;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Cri;

/// How long a session's URL stays good (the kubelet's `CacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// The most URLs handed out and not used yet (the kubelet's `maxInFlight`).
const MAX_IN_FLIGHT: usize = 1000;
/// How long a SPDY client has to open the streams it asked for (client-go's
/// `DefaultStreamCreationTimeout`).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The header of SPDY's protocol negotiation (`X-Stream-Protocol-Version`).
pub const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// Exec/attach subprotocols over SPDY, in the server's order of preference.
pub const SPDY_REMOTE_COMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// Exec/attach subprotocols over WebSocket.
pub const WS_REMOTE_COMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// Port forwarding over SPDY.
pub const SPDY_PORT_FORWARD: &[&str] = &["portforward.k8s.io"];
/// Port forwarding over WebSocket.
pub const WS_PORT_FORWARD: &[&str] = &[
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// client-go's port forwarding over WebSocket: SPDY in binary messages.
pub const WS_SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(pb::ExecRequest),
    Attach(pb::AttachRequest),
    PortForward(pb::PortForwardRequest),
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The server's address and its pending requests.
#[derive(Default)]
pub struct Streams {
    base: OnceLock<String>,
    cache: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Streams {
    /// Remembers `req` and answers its URL.
    pub fn insert(&self, req: Pending) -> Result<String, tonic::Status> {
        let base = self
            .base
            .get()
            .ok_or_else(|| tonic::Status::unavailable("the streaming server is not running"))?;
        let mut cache = self.cache.lock().unwrap();
        let now = Instant::now();
        cache.retain(|_, (t, _)| now.duration_since(*t) < TOKEN_TTL);
        if cache.len() >= MAX_IN_FLIGHT {
            return Err(tonic::Status::resource_exhausted(
                "maximum number of in-flight streaming requests exceeded",
            ));
        }
        let token = berth_util::id::random_hex(16);
        let url = format!("{base}/{}/{token}", req.path());
        cache.insert(token, (now, req));
        Ok(url)
    }

    /// Takes the request of `token` (once; none when expired).
    pub fn consume(&self, token: &str) -> Option<Pending> {
        let (t, req) = self.cache.lock().unwrap().remove(token)?;
        (t.elapsed() < TOKEN_TTL).then_some(req)
    }
}

/// The checks of `Exec` and `Attach` requests (the kubelet's streaming server's).
/// An exec or attach request: the container it runs in and the streams it asks for.
pub(crate) trait ContainerStreams {
    fn container_id(&mut self) -> &mut String;
    /// stdin, stdout, stderr, tty.
    fn streams(&self) -> [bool; 4];
    /// What else makes the request invalid (checked after its streams).
    fn check(&self) -> Result<(), tonic::Status> {
        Ok(())
    }
    fn pending(self) -> Pending;
}

impl ContainerStreams for pb::ExecRequest {
    fn container_id(&mut self) -> &mut String {
        &mut self.container_id
    }
    fn streams(&self) -> [bool; 4] {
        [self.stdin, self.stdout, self.stderr, self.tty]
    }
    fn check(&self) -> Result<(), tonic::Status> {
        if self.cmd.is_empty() {
            return Err(tonic::Status::invalid_argument("no command to run"));
        }
        Ok(())
    }
    fn pending(self) -> Pending {
        Pending::Exec(self)
    }
}

impl ContainerStreams for pb::AttachRequest {
    fn container_id(&mut self) -> &mut String {
        &mut self.container_id
    }
    fn streams(&self) -> [bool; 4] {
        [self.stdin, self.stdout, self.stderr, self.tty]
    }
    fn pending(self) -> Pending {
        Pending::Attach(self)
    }
}

fn check_streams(
    container: &str,
    [stdin, stdout, stderr, tty]: [bool; 4],
) -> Result<(), tonic::Status> {
    if container.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "missing required container_id",
        ));
    }
    if tty && stderr {
        return Err(tonic::Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(tonic::Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

impl Cri {
    fn running_container(&self, id: &str) -> Result<String, tonic::Status> {
        let (rec, c) = self.container(id)?;
        if !c.state.running {
            return Err(tonic::Status::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(rec.id)
    }

    /// `Exec` and `Attach`: the URL of a session in a running container, the request checked
    /// (the session names the container by its full id).
    pub(crate) fn container_session(
        &self,
        mut req: impl ContainerStreams,
    ) -> Result<String, tonic::Status> {
        let streams = req.streams();
        check_streams(req.container_id(), streams)?;
        req.check()?;
        let id = self.running_container(req.container_id())?;
        *req.container_id() = id;
        self.streams.insert(req.pending())
    }

    /// `PortForward`: the URL of a port-forwarding session into a ready sandbox.
    pub(crate) async fn port_forward(
        &self,
        req: pb::PortForwardRequest,
    ) -> Result<pb::PortForwardResponse, tonic::Status> {
        let rec = self.sandbox(&req.pod_sandbox_id)?;
        if !self.sandbox_ready(&rec) {
            return Err(tonic::Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                rec.id
            )));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(tonic::Status::invalid_argument(format!("invalid port {p}")));
        }
        let url = self
            .streams
            .insert(Pending::PortForward(pb::PortForwardRequest {
                pod_sandbox_id: rec.id,
                ..req
            }))?;
        Ok(pb::PortForwardResponse { url })
    }
}

/// Serves the streaming server on `listener` until `stop` changes; a connection idle for
/// `idle` is closed (see [`idle`]).
pub async fn serve(
    listener: TcpListener,
    cri: Arc<Cri>,
    idle: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    if let Ok(a) = listener.local_addr() {
        let _ = cri.streams.base.set(base_url(a));
        tracing::info!("CRI streaming server on {}", base_url(a));
    }
    while let Some((tcp, peer)) = crate::listen::accept(&listener, &mut stop, "CRI streaming").await
    {
        let _ = tcp.set_nodelay(true);
        let cri = cri.clone();
        let (tcp, gone) = idle::Watched::new(tcp, idle);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let cri = cri.clone();
                req.extensions_mut().insert(gone.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(cri, req).await) }
            });
            let res = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
            if let Err(e) = res {
                tracing::debug!("CRI streaming connection from {peer}: {e}");
            }
        });
    }
}

fn base_url(a: SocketAddr) -> String {
    // An unspecified address is no address to hand out: the loopback of its family.
    let ip = match a.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, a.port()))
}

/// A plain answer.
pub(crate) fn reply(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(msg.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(cri: Arc<Cri>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed");
    }
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    };
    if token.contains('/') || !["exec", "attach", "portforward"].contains(&kind) {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    }
    let Some(pending) = cri.streams.consume(token) else {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    };
    if pending.path() != kind {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    }
    let req = req.map(Body::new);
    let gone = req
        .extensions()
        .get::<idle::Gone>()
        .cloned()
        .unwrap_or_else(idle::Gone::never);
    match pending {
        Pending::Exec(_) | Pending::Attach(_) => remote::serve(cri, pending, req, gone).await,
        Pending::PortForward(pf) => portforward::serve(cri, pf, req, gone).await,
    }
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`, `Connection: upgrade`).
pub fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade && connection_upgrade(h)
}

fn connection_upgrade(h: &HeaderMap) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The values of a list header (repeated and/or comma-separated).
pub(crate) fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The protocol chosen among those the client `offered` (`""` when it named none); none when
/// the server supports none of them.
fn negotiate(offered: &[String], supported: &[&str]) -> Option<String> {
    if offered.is_empty() {
        return Some(String::new());
    }
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
}

/// The SPDY upgrade: the negotiated protocol (`""` when the client named none) and the 101
/// answer, or the answer refusing it (httpstream's `Handshake` and `UpgradeResponse`).
pub fn spdy_handshake(
    req: &Request<Body>,
    supported: &[&'static str],
) -> Result<(String, Response<Body>), Box<Response<Body>>> {
    let h = req.headers();
    let offered = list(h, PROTOCOL_HEADER);
    let Some(chosen) = negotiate(&offered, supported) else {
        let mut r = reply(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
                    ),
                );
        for s in supported {
            r.headers_mut().append(
                "x-accepted-stream-protocol-versions",
                HeaderValue::from_static(s),
            );
        }
        return Err(Box::new(r));
    };
    let spdy = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("SPDY/3.1"));
    if !spdy || !connection_upgrade(h) {
        return Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (Connection: Upgrade and Upgrade: SPDY/3.1, or a websocket)",
        )));
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if !chosen.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&chosen) {
            hs.insert(PROTOCOL_HEADER, v);
        }
    }
    Ok((chosen, r))
}

/// An upgraded connection.
pub type Upgraded = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// Answers an upgrade: the refusal of `handshake` ([`spdy_handshake`], [`ws_handshake`]) as it
/// is, else its 101 answer, `session` running on the upgraded connection (given the negotiated
/// protocol) once the client has it.
pub fn upgrade<F, Fut>(
    mut req: Request<Body>,
    handshake: Result<(String, Response<Body>), Box<Response<Body>>>,
    session: F,
) -> Response<Body>
where
    F: FnOnce(String, Upgraded) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (protocol, resp) = match handshake {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        session(protocol, hyper_util::rt::TokioIo::new(up)).await;
    });
    resp
}

/// The WebSocket upgrade: the negotiated subprotocol (`""` when the client named none) and the
/// 101 answer, or the answer refusing it.
pub fn ws_handshake(
    req: &Request<Body>,
    supported: &[&str],
) -> Result<(String, Response<Body>), Box<Response<Body>>> {
    let h = req.headers();
    let key = h
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return Err(Box::new(reply(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        )));
    }
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        let mut r = reply(StatusCode::BAD_REQUEST, "unsupported websocket version");
        r.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
        return Err(Box::new(r));
    }
    let offered = list(h, "sec-websocket-protocol");
    let Some(chosen) = negotiate(&offered, supported) else {
        return Err(Box::new(reply(
            StatusCode::FORBIDDEN,
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}"),
        )));
    };

    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&ws::accept_key(key)) {
        hs.insert("sec-websocket-accept", v);
    }
    if !chosen.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&chosen) {
            hs.insert("sec-websocket-protocol", v);
        }
    }
    Ok((chosen, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_carry_their_kind() {
        let s = Streams::default();
        let e = s
            .insert(Pending::Exec(pb::ExecRequest::default()))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        s.base.set("http://127.0.0.1:1".into()).unwrap();
        let url = s
            .insert(Pending::PortForward(pb::PortForwardRequest::default()))
            .unwrap();
        let token = url.strip_prefix("http://127.0.0.1:1/portforward/").unwrap();
        assert_eq!(token.len(), 32);
        assert!(matches!(s.consume(token), Some(Pending::PortForward(_))));
        assert!(s.consume(token).is_none());
        assert!(s.consume("nope").is_none());
    }

    #[test]
    fn handshakes_negotiate_in_the_clients_order() {
        let req = |pairs: &[(&str, &str)]| {
            let mut b = Request::builder().uri("/exec/x");
            for (k, v) in pairs {
                b = b.header(*k, *v);
            }
            b.body(Body::empty()).unwrap()
        };
        let r = req(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v9.channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
        ]);
        let (p, resp) = spdy_handshake(&r, SPDY_REMOTE_COMMAND).unwrap();
        assert_eq!(p, "v4.channel.k8s.io");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()[PROTOCOL_HEADER], "v4.channel.k8s.io");
        let r = req(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v9.channel.k8s.io"),
        ]);
        let resp = spdy_handshake(&r, SPDY_REMOTE_COMMAND).unwrap_err();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let r = req(&[("x-stream-protocol-version", "v4.channel.k8s.io")]);
        assert_eq!(
            spdy_handshake(&r, SPDY_REMOTE_COMMAND)
                .unwrap_err()
                .status(),
            StatusCode::BAD_REQUEST
        );
        let r = req(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "sec-websocket-protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            ),
        ]);
        assert!(is_websocket(r.headers()));
        let (p, resp) = ws_handshake(&r, WS_REMOTE_COMMAND).unwrap();
        assert_eq!(p, "v5.channel.k8s.io");
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base_url("0.0.0.0:5".parse().unwrap()), "http://127.0.0.1:5");
        assert_eq!(base_url("[::]:5".parse().unwrap()), "http://[::1]:5");
    }
}
