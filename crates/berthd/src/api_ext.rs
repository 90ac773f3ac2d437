//! Routes for exec, events and the container operations of [`crate::ops`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::api::{bad, json_resp, parse_filters, qbool, ApiError, AppState, St, Q, R};
use crate::exec;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/containers/{id}/exec", post(exec_create))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/resize", post(exec_resize))
        .route("/exec/{id}/json", get(exec_inspect))
        .route("/events", get(events))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/changes", get(changes))
        .route("/containers/prune", post(prune))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))
}

async fn exec_create(State(s): St, Path(id): Path<String>, body: Bytes) -> R {
    let v = parse_body(&body)?;
    let eid = s.engine.exec_create(&id, &v)?;
    Ok((StatusCode::CREATED, json_resp(json!({"Id": eid}))).into_response())
}

async fn exec_start(State(s): St, Path(id): Path<String>, mut req: Request) -> R {
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), 1 << 20)
        .await
        .map_err(|e| bad(format!("reading the body: {e}")))?;
    let v = parse_body(&body)?;
    let detach = v["Detach"].as_bool().unwrap_or(false);
    let engine = s.engine.clone();
    let x = engine.exec_check(&id)?;
    let tty = x.tty;
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let size = v["ConsoleSize"][0]
        .as_u64()
        .map(|r| (r as u16, v["ConsoleSize"][1].as_u64().unwrap_or(80) as u16));
    if detach || !upgrade {
        let (_, shim) = engine.exec_start(&id).await?;
        if let Some((r, c)) = size {
            let _ = engine.exec_resize(&id, r, c).await;
        }
        let (mut sr, mut sw) = shim.into_split();
        let _ = sw.shutdown().await;
        if detach {
            tokio::spawn(async move {
                let code = exec::pump_frames(&mut sr, tty, |_, _| {}).await;
                engine.exec_exited(&id, code.unwrap_or(-1));
            });
            return Ok(StatusCode::OK.into_response());
        }
        // A plain request: the output as the body, no stdin.
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let code = exec::relay_to_client(&mut sr, &mut w, tty).await;
            engine.exec_exited(&id, code.unwrap_or(-1));
        });
        let body = futures_util::stream::unfold(r, |mut r| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 16 * 1024];
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, Infallible>(Bytes::from(buf)), r))
                }
            }
        });
        return Ok(([(header::CONTENT_TYPE, ct)], Body::from_stream(body)).into_response());
    }
    // Hijack first (as Docker): a failure to start is written into the stream, and the client
    // reads the exit code (126/127) from the exec's inspect.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let stdin = x.stdin;
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let client = hyper_util::rt::TokioIo::new(upgraded);
        let (mut cr, mut cw) = tokio::io::split(client);
        let shim = match engine.exec_start(&id).await {
            Ok((_, shim)) => shim,
            Err(e) => {
                let msg = format!("{e}\r\n");
                if tty {
                    let _ = cw.write_all(msg.as_bytes()).await;
                } else {
                    let mut hdr = [1u8, 0, 0, 0, 0, 0, 0, 0];
                    hdr[4..].copy_from_slice(&(msg.len() as u32).to_be_bytes());
                    let _ = cw.write_all(&hdr).await;
                    let _ = cw.write_all(msg.as_bytes()).await;
                }
                let _ = cw.shutdown().await;
                return;
            }
        };
        if let Some((r, c)) = size {
            let _ = engine.exec_resize(&id, r, c).await;
        }
        let (mut sr, mut sw) = shim.into_split();
        let to_shim = async move {
            if stdin {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            }
            let _ = sw.shutdown().await;
            std::future::pending::<()>().await
        };
        let to_client = async {
            let code = exec::relay_to_client(&mut sr, &mut cw, tty).await;
            engine.exec_exited(&id, code.unwrap_or(-1));
            let _ = cw.shutdown().await;
        };
        tokio::select! {
            _ = to_client => {}
            _ = to_shim => {}
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONTENT_TYPE, ct)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Body::empty())
        .unwrap())
}

fn dims(q: &std::collections::HashMap<String, String>) -> Result<(u16, u16), ApiError> {
    let p = |k: &str| -> Result<u16, ApiError> {
        q.get(k)
            .ok_or_else(|| bad(format!("missing {k}")))?
            .parse::<u16>()
            .map_err(|_| bad(format!("invalid {k}")))
    };
    Ok((p("h")?, p("w")?))
}

async fn exec_resize(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let (h, w) = dims(&q)?;
    s.engine.exec_resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

async fn exec_inspect(State(s): St, Path(id): Path<String>) -> R {
    Ok(json_resp(s.engine.exec_inspect(&id)?))
}

async fn events(State(s): St, axum::extract::Query(q): Q) -> R {
    let filters = parse_filters(&q)?;
    let since = match q.get("since").filter(|v| !v.is_empty()) {
        Some(v) => {
            Some(crate::events::parse_time(v).ok_or_else(|| bad(format!("invalid since: {v}")))?)
        }
        None => None,
    };
    let until = match q.get("until").filter(|v| !v.is_empty()) {
        Some(v) => {
            Some(crate::events::parse_time(v).ok_or_else(|| bad(format!("invalid until: {v}")))?)
        }
        None => None,
    };
    let (past, mut rx) = s.engine.bus.subscribe(since);
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let line = |e: &crate::events::Event| Bytes::from(e.to_json().to_string() + "\n");
        for e in past {
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            if e.matches(&filters) && tx.send(line(&e)).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let (ns, nn) = berth_image::timeutil::now();
            let now = ns * 1_000_000_000 + i64::from(nn);
            tokio::time::Instant::now() + Duration::from_nanos((u - now).max(0) as u64)
        });
        loop {
            let next = async {
                match rx.recv().await {
                    Ok(e) => Some(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        Some(crate::events::Event {
                            typ: String::new(),
                            action: String::new(),
                            id: String::new(),
                            attributes: Default::default(),
                            time_nano: -1,
                        })
                    }
                }
            };
            let ev = match deadline {
                Some(d) => match tokio::time::timeout_at(d, next).await {
                    Ok(e) => e,
                    Err(_) => return,
                },
                None => tokio::select! {
                    e = next => e,
                    _ = tx.closed() => return,
                },
            };
            let Some(e) = ev else { continue };
            if e.time_nano < 0 {
                return;
            }
            if e.matches(&filters) && tx.send(line(&e)).await.is_err() {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(out, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn top(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let ps_args = q.get("ps_args").cloned().unwrap_or_default();
    Ok(json_resp(s.engine.top(&id, &ps_args).await?))
}

async fn rename(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let name = q.get("name").cloned().unwrap_or_default();
    s.engine.rename(&id, &name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restart(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let t = match q.get("t").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| bad(format!("invalid value for t: {t}")))?,
        ),
        None => None,
    };
    s.engine
        .restart(&id, t, q.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pause(State(s): St, Path(id): Path<String>) -> R {
    s.engine.set_paused(&id, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unpause(State(s): St, Path(id): Path<String>) -> R {
    s.engine.set_paused(&id, false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn resize(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let (h, w) = dims(&q)?;
    s.engine.resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

async fn update(State(s): St, Path(id): Path<String>, body: Bytes) -> R {
    let v = parse_body(&body)?;
    let warnings = s.engine.update(&id, &v).await?;
    Ok(json_resp(json!({"Warnings": warnings})))
}

async fn stats(State(s): St, Path(id): Path<String>, axum::extract::Query(q): Q) -> R {
    let stream = !matches!(q.get("stream").map(String::as_str), Some("0" | "false"));
    let one_shot = qbool(&q, "one-shot");
    let engine = s.engine.clone();
    let first = {
        let e = engine.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || e.stats_sample(&id))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
    };
    if !stream && one_shot {
        return Ok(json_resp(first));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut prev = first;
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.tick().await;
        loop {
            interval.tick().await;
            let e = engine.clone();
            let id2 = id.clone();
            let Ok(Ok(mut cur)) = tokio::task::spawn_blocking(move || e.stats_sample(&id2)).await
            else {
                return;
            };
            cur["precpu_stats"] = prev["cpu_stats"].clone();
            cur["preread"] = prev["read"].clone();
            let running = cur["read"] != crate::util::ZERO_TIME;
            if tx.send(Bytes::from(cur.to_string() + "\n")).await.is_err() || !stream || !running {
                return;
            }
            prev = cur;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

async fn changes(State(s): St, Path(id): Path<String>) -> R {
    let engine = s.engine.clone();
    let v = tokio::task::spawn_blocking(move || engine.changes(&id))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(json_resp(v))
}

async fn prune(State(s): St, axum::extract::Query(q): Q) -> R {
    let filters = parse_filters(&q)?;
    Ok(json_resp(s.engine.prune(&filters).await?))
}
