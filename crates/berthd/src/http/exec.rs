//! Exec routes: create, start (hijacked, plain or detached), resize, inspect.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use berth_api::common::IdResponse;
use berth_api::exec::{CreateRequest, StartRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    check_json_type, decode, json, json_status, stream, stream_type, upgrade_response, ApiError,
    AppState, ClientSocket, Id, JsonBody, Params, SizeQuery, St, R,
};
use crate::exec;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/containers/{id}/exec", post(create))
        .route("/exec/{id}/start", post(start))
        .route("/exec/{id}/resize", post(resize))
        .route("/exec/{id}/json", get(inspect))
}

async fn create(s: St, id: Id, JsonBody(body): JsonBody) -> R {
    let req: CreateRequest = decode(&body)?;
    let eid = s.engine.exec_create(&id, &req)?;
    Ok(json_status(StatusCode::CREATED, &IdResponse { id: eid }))
}

async fn start(s: St, id: Id, mut req: Request) -> R {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 1 << 20)
        .await
        .map_err(|e| ApiError::bad(format!("reading the body: {e}")))?;
    check_json_type(req.headers(), &body)?;
    let start: StartRequest = decode(&body)?;
    let engine = s.engine.clone();
    let x = engine.exec_check(&id)?;
    // The output's framing follows the start request's `Tty` (dockerd), the process's
    // terminal the create request's.
    let tty = start.tty;
    let ct = stream_type(tty);
    // dockerd: a start's size only with a terminal, else the create's.
    if let Some(size) = start.console_size.filter(|_| tty) {
        engine.exec_console_size(&id, size);
    }
    if start.detach || !upgrade {
        let (_, shim) = engine.exec_start(&id).await?;
        let (mut sr, mut sw) = shim.into_split();
        let _ = sw.shutdown().await;
        if start.detach {
            tokio::spawn(async move {
                let code = exec::pump_frames(&mut sr, |_, _| {}).await;
                engine.exec_exited(&id, code.unwrap_or(-1));
            });
            return Ok(StatusCode::OK.into_response());
        }
        // A plain request: the output as the body, no stdin.
        let (mut w, mut r) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let code = exec::relay_to_client(&mut sr, &mut w, tty, std::future::pending()).await;
            engine.exec_exited(&id, code.unwrap_or(-1));
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        return Ok(stream(ct, rx));
    }
    // Hijack first (as Docker): a failure to start is written into the stream, and the client
    // reads the exit code (126/127) from the exec's inspect.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sock = ClientSocket::of(&req);
    let stdin = x.stdin;
    // A tty exec's input goes through its detach keys (checked at create).
    let keys = x
        .tty
        .then(|| crate::shimio::detach_keys(&x.detach_keys).ok())
        .flatten();
    tokio::spawn(async move {
        let Ok(mut upgraded) = on_upgrade.await else {
            return;
        };
        // The process starts once the client has read the head: its first output cannot
        // reach the client with it (see `ClientSocket`).
        sock.head_read(&mut upgraded).await;
        let client = hyper_util::rt::TokioIo::new(upgraded);
        let (mut cr, mut cw) = tokio::io::split(client);
        let shim = match engine.exec_start(&id).await {
            Ok((_, shim)) => shim,
            Err(e) => {
                let msg = format!("{e}\r\n");
                if tty {
                    let _ = cw.write_all(msg.as_bytes()).await;
                } else {
                    let hdr = berth_shim::protocol::frame_header(1, msg.len());
                    let _ = cw.write_all(&hdr).await;
                    let _ = cw.write_all(msg.as_bytes()).await;
                }
                let _ = cw.shutdown().await;
                return;
            }
        };
        let (mut sr, mut sw) = shim.into_split();
        let (detach_tx, detach_rx) = tokio::sync::oneshot::channel::<()>();
        let (e3, id3) = (engine.clone(), id.clone());
        let to_shim = async move {
            if stdin && crate::shimio::copy_input(&mut cr, &mut sw, keys).await {
                // Detached: the client goes, the process keeps running (and its input
                // open); the stream is drained for its exit code.
                drop(cr);
                let _ = detach_tx.send(());
                e3.exec_detached(&id3);
                return std::future::pending::<()>().await;
            }
            let _ = sw.shutdown().await;
            std::future::pending::<()>().await
        };
        let detached = async {
            if detach_rx.await.is_err() {
                std::future::pending::<()>().await
            }
        };
        let e2 = engine.clone();
        let id2 = id.clone();
        let to_client = async move {
            let code = exec::relay_to_client(&mut sr, cw, tty, detached).await;
            e2.exec_exited(&id2, code.unwrap_or(-1));
        };
        tokio::select! {
            _ = to_client => {}
            _ = to_shim => {}
        }
    });
    Ok(upgrade_response(ct))
}

async fn resize(s: St, id: Id, Params(q): Params<SizeQuery>) -> R {
    let (h, w) = q.dims()?;
    s.engine.exec_resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

async fn inspect(s: St, id: Id) -> R {
    Ok(json(&s.engine.exec_inspect(&id)?))
}
