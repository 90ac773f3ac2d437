//! Port forwarding into a pod: each forwarded connection is a TCP connection to
//! `localhost:PORT` made inside the pod's network namespace (a short-lived thread joins the
//! sandbox's namespace with `setns`, connects, and ends; the socket stays in the namespace it
//! was made in), its bytes copied to and from the client's data stream (SPDY: a `data` and
//! an `error` stream per `requestID`; WebSocket: channels 2i and 2i+1 for the i-th port of
//! the request, each first carrying the port as a little-endian u16).

use std::os::fd::AsFd;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use berth_cri::proto as pb;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::idle::Gone;
use super::session::{SpdyConn, SpdyOut, SpdyStream, WsConn};
use super::STREAM_CREATION_TIMEOUT;
use crate::cri::Cri;

/// The kubelet's error-stream answer of a failed forward.
#[derive(Debug, Serialize)]
struct ErrResponse {
    #[serde(rename = "closeConnection", skip_serializing_if = "std::ops::Not::not")]
    close_connection: bool,
    message: String,
}

/// Where a pod's ports are: the network namespace of its sandbox (`None`: the host's).
fn netns(cri: &Cri, sandbox: &str) -> std::io::Result<Option<String>> {
    let rec = cri
        .sandbox(sandbox)
        .map_err(|s| std::io::Error::other(s.message().to_string()))?;
    if !cri.sandbox_ready(&rec) {
        return Err(std::io::Error::other(format!(
            "pod sandbox {} is not ready",
            rec.id
        )));
    }
    if rec.network_mode == pb::NamespaceMode::Node as i32 {
        return Ok(None);
    }
    let c = cri.engine.get(&rec.id).map_err(std::io::Error::other)?;
    Ok(Some(format!("/proc/{}/ns/net", c.state.pid)))
}

/// Connects to `localhost:port` in `netns` (IPv4, then IPv6).
async fn dial(netns: Option<String>, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: it changes its network namespace and ends.
    std::thread::Builder::new()
        .name("cri-portforward".into())
        .spawn(move || {
            let r = (|| -> std::io::Result<std::net::TcpStream> {
                if let Some(ns) = &netns {
                    let f = std::fs::File::open(ns)?;
                    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)?;
                }
                let timeout = std::time::Duration::from_secs(10);
                let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                let s = std::net::TcpStream::connect_timeout(&v4, timeout).or_else(|e| {
                    std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e)
                })?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(r);
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread went away"))??;
    TcpStream::from_std(s)
}

/// Connects to `port` in `sandbox`'s network and copies between that connection and the
/// client: the client's input until it closes it (then the pod connection's write side is
/// shut), the pod's output until it ends, or until the client's connection ends. Errors are
/// the pod side's.
async fn forward<F, Fut>(
    cri: &Cri,
    sandbox: &str,
    port: u16,
    mut input: mpsc::Receiver<Vec<u8>>,
    mut send: F,
    mut gone: Gone,
) -> std::io::Result<()>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ns = netns(cri, sandbox)?;
    let (mut r, mut w) = dial(ns, port).await?.into_split();
    let to_pod = async {
        while let Some(b) = input.recv().await {
            w.write_all(&b).await?;
        }
        w.shutdown().await?;
        std::future::pending::<std::io::Result<()>>().await
    };
    let from_pod = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 || !send(buf[..n].to_vec()).await {
                return Ok(());
            }
        }
    };
    tokio::select! {
        r = from_pod => r,
        r = to_pod => r,
        // The client's connection ended: the pod connection is closed.
        _ = gone.wait() => Ok(()),
    }
}

/// The error stream's answer of a failed forward (either transport, as the kubelet): a reset
/// or broken pipe from the pod leaves the client's connection usable, other errors close it.
fn failure(port: u16, sandbox: &str, e: &std::io::Error) -> Vec<u8> {
    let keep = matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    );
    let msg = format!("error forwarding port {port} to pod {sandbox}, uid : {e}");
    let mut v = serde_json::to_vec(&ErrResponse {
        close_connection: !keep,
        message: msg,
    })
    .unwrap_or_default();
    v.push(b'\n');
    v
}

/// Serves a port-forward URL.
pub async fn serve(
    cri: Arc<Cri>,
    pf: pb::PortForwardRequest,
    req: Request<Body>,
    gone: Gone,
) -> Response<Body> {
    let tunnel = super::list(req.headers(), "sec-websocket-protocol")
        .iter()
        .any(|p| p == super::WS_SPDY_TUNNEL);
    if tunnel && super::is_websocket(req.headers()) {
        // client-go's SPDY over WebSocket: the SPDY session inside binary messages.
        let hs = super::ws_handshake(&req, &[super::WS_SPDY_TUNNEL]);
        return super::upgrade(req, hs, move |_, up| async move {
            let io = super::session::ws_tunnel(up, None);
            spdy_session(cri, pf, io, gone).await;
        });
    }
    if super::is_websocket(req.headers()) {
        // The ports: the request's, else the URL's `port` parameters (the kubelet's V4Options).
        let mut ports: Vec<u16> = pf
            .port
            .iter()
            .filter_map(|p| u16::try_from(*p).ok())
            .collect();
        if ports.is_empty() {
            for (k, v) in url_query(req.uri().query().unwrap_or("")) {
                if k == "port" {
                    for p in v.split(',') {
                        match p.parse::<u16>() {
                            Ok(p) if p > 0 => ports.push(p),
                            _ => {
                                return super::reply(
                                    axum::http::StatusCode::BAD_REQUEST,
                                    format!("unable to parse {v:?} as a port"),
                                )
                            }
                        }
                    }
                }
            }
        }
        if ports.is_empty() || ports.len() > 64 {
            return super::reply(
                axum::http::StatusCode::BAD_REQUEST,
                "query parameter \"port\" is required",
            );
        }
        let hs = super::ws_handshake(&req, super::WS_PORT_FORWARD);
        return super::upgrade(req, hs, move |proto, up| async move {
            let readable: Vec<u8> = (0..ports.len()).map(|i| (i * 2) as u8).collect();
            let mut conn = WsConn::new(up, &proto, &readable);
            let mut tasks = Vec::new();
            for (i, port) in ports.iter().copied().enumerate() {
                let (data, err) = ((i * 2) as u8, (i * 2 + 1) as u8);
                let out = conn.out.clone();
                out.send(data, &port.to_le_bytes()).await;
                out.send(err, &port.to_le_bytes()).await;
                let input = conn
                    .inputs
                    .remove(&data)
                    .unwrap_or_else(|| mpsc::channel(1).1);
                let cri = cri.clone();
                let sandbox = pf.pod_sandbox_id.clone();
                let gone = gone.clone();
                tasks.push(tokio::spawn(async move {
                    let send = |b: Vec<u8>| {
                        let out = out.clone();
                        async move { out.send(data, &b).await }
                    };
                    let r = forward(&cri, &sandbox, port, input, send, gone).await;
                    if let Err(e) = r {
                        out.send(err, &failure(port, &sandbox, &e)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            conn.close().await;
        });
    }
    let hs = super::spdy_handshake(&req, super::SPDY_PORT_FORWARD);
    super::upgrade(req, hs, move |_, up| async move {
        spdy_session(cri, pf, up, gone).await;
    })
}

/// A port-forwarding SPDY session on `io`, until the client closes it.
async fn spdy_session<IO>(cri: Arc<Cri>, pf: pb::PortForwardRequest, io: IO, gone: Gone)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut conn = SpdyConn::new(io);
    // Streams pair up by request id: (data, error), the first one's arrival time.
    let mut pairs: std::collections::HashMap<
        String,
        (Option<SpdyStream>, Option<SpdyStream>, tokio::time::Instant),
    > = Default::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let s = tokio::select! {
            s = conn.streams.recv() => match s { Some(s) => s, None => break },
            _ = tick.tick() => {
                // Pairs never completed are dropped (their streams reset).
                let stale: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.2.elapsed() > STREAM_CREATION_TIMEOUT)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    if let Some((d, e, _)) = pairs.remove(&k) {
                        for s in [d, e].into_iter().flatten() {
                            conn.out.reset(s.id, super::spdy::RST_CANCEL).await;
                        }
                    }
                }
                continue;
            }
        };
        let port = s.header("port").and_then(|p| p.parse::<u16>().ok());
        let kind = s.header("streamtype").unwrap_or("").to_string();
        if port.is_none_or(|p| p == 0) || !(kind == "data" || kind == "error") {
            tracing::debug!("CRI port-forward: a stream without a valid port or type");
            conn.out.reset(s.id, super::spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        // Old clients send no request id: derive it from the stream ids as the kubelet does.
        let rid = match s.header("requestid") {
            Some(r) => r.to_string(),
            None if kind == "error" => s.id.to_string(),
            None => s.id.saturating_sub(2).to_string(),
        };
        let entry = pairs
            .entry(rid.clone())
            .or_insert_with(|| (None, None, tokio::time::Instant::now()));
        let slot = if kind == "data" {
            &mut entry.0
        } else {
            &mut entry.1
        };
        if slot.is_some() {
            conn.out.reset(s.id, super::spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if entry.0.is_some() && entry.1.is_some() {
            let Some((Some(data), Some(error), _)) = pairs.remove(&rid) else {
                continue;
            };
            tokio::spawn(spdy_pair(
                cri.clone(),
                pf.pod_sandbox_id.clone(),
                conn.out.clone(),
                data,
                error,
                gone.clone(),
            ));
        }
    }
    // The client closed the connection.
    conn.close().await;
}

/// One forwarded connection over SPDY.
async fn spdy_pair(
    cri: Arc<Cri>,
    sandbox: String,
    out: SpdyOut,
    data: SpdyStream,
    error: SpdyStream,
    gone: Gone,
) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let id = data.id;
    let send = |b: Vec<u8>| {
        let out = out.clone();
        async move { out.data(id, &b).await }
    };
    let r = forward(&cri, &sandbox, port, data.data, send, gone).await;
    if let Err(e) = r {
        out.data(error.id, &failure(port, &sandbox, &e)).await;
    }
    out.fin(id).await;
    out.fin(error.id).await;
}

/// The pairs of a URL query (percent-decoding is not needed for ports).
fn url_query(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
}
