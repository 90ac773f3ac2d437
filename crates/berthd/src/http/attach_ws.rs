//! `GET /containers/{id}/attach/ws`: attach over a WebSocket (RFC 6455, the framing of
//! [`crate::cri::stream::ws`]), as dockerd's `wsContainersAttach`. The output is never
//! multiplexed: each chunk of the container's output (without a tty: each frame's payload)
//! is one message, binary from API 1.28 on and text before; each message the client sends
//! goes to the container's stdin. Before API 1.42 all three streams are attached whatever
//! the query says. An error before the upgrade (no such container) is a JSON error.

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use berth_api::ApiVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::containers::AttachQuery;
use super::{ApiError, Id, Params, St};
use crate::cri::stream::{self, ws};

/// Frames of the container's output waiting for the client; a slow client holds the
/// container's output back as the hijacked attach does.
const QUEUE: usize = 16;

pub(super) async fn attach_ws(
    s: St,
    id: Id,
    axum::Extension(v): axum::Extension<ApiVersion>,
    Params(q): Params<AttachQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let c = s.engine.get(&id)?;
    let (stdin, stdout, stderr) = if v >= ApiVersion::new(1, 42) {
        (q.stdin, q.stdout, q.stderr)
    } else {
        (true, true, true)
    };
    let opcode = if v >= ApiVersion::new(1, 28) {
        ws::OP_BINARY
    } else {
        ws::OP_TEXT
    };
    // As Go's websocket server: the one subprotocol a client offers is accepted.
    let offered: Vec<String> = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|p| p.to_str().ok())
        .map(|p| p.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_default();
    let supported: Vec<&str> = offered.iter().take(1).map(String::as_str).collect();
    let handshake = stream::ws_handshake(&req, &supported);
    if handshake.is_err() {
        return Ok(stream::upgrade(req, handshake, |_, _| async {}));
    }
    let replay = if q.logs {
        super::containers::log_replay(&c, stdout, stderr, false).await
    } else {
        Vec::new()
    };
    let shim = if q.stream {
        Some(s.engine.attach(&id, stdin, stdout, stderr)?.1)
    } else {
        None
    };
    s.engine.container_event(&c, "attach", &[]);
    let tty = c.tty();
    Ok(stream::upgrade(req, handshake, move |_, conn| async move {
        let (mut cr, mut cw) = tokio::io::split(conn);
        // One writer: the output's messages, the answers to pings and the close.
        let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(QUEUE);
        let writer = tokio::spawn(async move {
            while let Some((op, data)) = rx.recv().await {
                let mut frame = Vec::with_capacity(data.len() + 10);
                ws::encode(op, &data, None, &mut frame);
                if cw.write_all(&frame).await.is_err() || op == ws::OP_CLOSE {
                    break;
                }
            }
            let _ = cw.shutdown().await;
        });
        if !replay.is_empty() && tx.send((opcode, replay)).await.is_err() {
            return;
        }
        let Some(shim) = shim else {
            let _ = tx.send((ws::OP_CLOSE, ws::close_payload(1000, ""))).await;
            let _ = writer.await;
            return;
        };
        let Ok(Ok(shim)) = shim.await else { return };
        let (mut sr, mut sw) = shim.into_split();
        let out_tx = tx.clone();
        let to_client = async move {
            let _ = forward_output(&mut sr, tty, opcode, &out_tx).await;
            let _ = out_tx
                .send((ws::OP_CLOSE, ws::close_payload(1000, "")))
                .await;
        };
        let from_client = async move {
            let mut st = ws::Reader::default();
            while let Ok(Some(m)) = ws::read_message(&mut cr, &mut st).await {
                match m.opcode {
                    ws::OP_TEXT | ws::OP_BINARY if stdin => {
                        let written = sw.write_all(&m.data).await;
                        if written.is_err() {
                            break;
                        }
                    }
                    ws::OP_PING => {
                        let _ = tx.send((ws::OP_PONG, m.data)).await;
                    }
                    ws::OP_CLOSE => break,
                    _ => {}
                }
            }
            if stdin {
                let _ = sw.shutdown().await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = to_client => {}
            _ = from_client => {}
        }
        let _ = writer.await;
    }))
}

/// Sends the container's output as messages: a tty's chunks as they come, else the payload
/// of each multiplexed frame of the shim's stream.
async fn forward_output(
    sr: &mut (impl AsyncReadExt + Unpin),
    tty: bool,
    opcode: u8,
    tx: &mpsc::Sender<(u8, Vec<u8>)>,
) -> std::io::Result<()> {
    if tty {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 || tx.send((opcode, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    }
    let mut head = [0u8; 8];
    loop {
        match sr.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; len];
        sr.read_exact(&mut payload).await?;
        if matches!(head[0], 0..=2) && tx.send((opcode, payload)).await.is_err() {
            return Ok(());
        }
    }
}
