//! Container routes: create, inspect, list, the life cycle, logs and attach, the operations
//! (top, rename, pause, resize, update, stats, changes, prune) and the archive routes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use berth_api::container::{
    CreateRequest, CreateResponse, UpdateConfig, UpdateResponse, WaitResponse,
};
use tokio::io::AsyncWriteExt;

use super::{
    blocking, decode, dims, filters, json, json_line, json_status, no_content, qbool, qstr, stream,
    stream_type, timeout, upgrade_response, ApiError, AppState, Id, St, Q, R,
};
use crate::archive;
use crate::engine::WaitCondition;
use crate::logs;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/containers/json", get(list))
        .route("/containers/create", post(create))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}", delete(remove))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/changes", get(changes))
        .route(
            "/containers/{id}/archive",
            get(get_archive).head(head_archive).put(put_archive),
        )
        .route("/containers/{id}/export", get(export))
}

async fn list(s: St, Query(q): Q) -> R {
    let f = filters(&q)?;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    Ok(json(&s.engine.summaries(qbool(&q, "all"), limit, &f)))
}

async fn create(s: St, Query(q): Q, body: Bytes) -> R {
    let req = CreateRequest::decode(&body)?;
    let engine = s.engine.clone();
    let name = q.get("name").cloned();
    let (id, warnings) = blocking(move || engine.create(name.as_deref(), req)).await?;
    Ok(json_status(
        StatusCode::CREATED,
        &CreateResponse { id, warnings },
    ))
}

async fn inspect(s: St, id: Id) -> R {
    Ok(json(&s.engine.inspect(&id)?))
}

async fn start(s: St, id: Id) -> R {
    s.engine.start(&id).await?;
    no_content()
}

async fn stop(s: St, id: Id, Query(q): Q) -> R {
    s.engine.stop(&id, timeout(&q)?, qstr(&q, "signal")).await?;
    no_content()
}

async fn kill(s: St, id: Id, Query(q): Q) -> R {
    s.engine.kill(&id, qstr(&q, "signal")).await?;
    no_content()
}

async fn wait(s: St, id: Id, Query(q): Q) -> R {
    let cond = match q.get("condition").map(String::as_str).unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => return Err(ApiError::bad(format!("invalid condition: \"{other}\""))),
    };
    let fut = s.engine.wait(&id, cond)?;
    // The head goes at once (clients register the wait before starting the container).
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let status_code = fut.await;
        let _ = tx
            .send(json_line(&WaitResponse {
                status_code,
                error: None,
            }))
            .await;
    });
    Ok(stream("application/json", rx))
}

/// `since`/`until` of logs: seconds (a fraction is ignored); 0 means none.
fn log_time(q: &HashMap<String, String>, k: &str) -> Option<i64> {
    q.get(k)
        .and_then(|t| t.split('.').next()?.parse::<i64>().ok())
        .filter(|s| *s > 0)
}

async fn container_logs(s: St, id: Id, Query(q): Q) -> R {
    let c = s.engine.get(&id)?;
    let o = logs::LogOptions {
        stdout: qbool(&q, "stdout"),
        stderr: qbool(&q, "stderr"),
        follow: qbool(&q, "follow"),
        timestamps: qbool(&q, "timestamps"),
        tail: q.get("tail").and_then(|t| t.parse::<usize>().ok()),
        since: log_time(&q, "since"),
        until: log_time(&q, "until"),
        framed: !c.tty(),
    };
    if !o.stdout && !o.stderr {
        return Err(ApiError::bad(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    // Subscribe first, then look at the state: an exit after the look is then an exit the
    // stream sees (`exits` grows past `seen`), and one before it means no following at all.
    let events = if o.follow {
        let rx = s.engine.subscribe(&c.id)?;
        let seen = rx.borrow().exits;
        s.engine.get(&c.id)?.state.running.then_some((rx, seen))
    } else {
        None
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let path = std::path::PathBuf::from(&c.log_path);
    tokio::task::spawn_blocking(move || logs::stream(path, o, events, tx));
    Ok(stream(stream_type(c.tty()), rx))
}

async fn attach(s: St, id: Id, Query(q): Q, mut req: Request) -> R {
    let stdin = qbool(&q, "stdin");
    let stdout = qbool(&q, "stdout");
    let stderr = qbool(&q, "stderr");
    let c = s.engine.get(&id)?;
    // `logs=1`: what the container wrote so far comes first (in the attach stream's framing).
    let replay = if qbool(&q, "logs") && (stdout || stderr) {
        let o = logs::LogOptions {
            stdout,
            stderr,
            framed: !c.tty(),
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let path = std::path::PathBuf::from(&c.log_path);
        tokio::task::spawn_blocking(move || logs::stream(path, o, None, tx));
        let mut all = Vec::new();
        while let Some(b) = rx.recv().await {
            all.extend_from_slice(&b);
        }
        all
    } else {
        Vec::new()
    };
    let ct = stream_type(c.tty());
    if !qbool(&q, "stream") {
        // Without `stream=1` Docker answers with the logs (if asked) and ends the session.
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut client = hyper_util::rt::TokioIo::new(upgraded);
            if !replay.is_empty() {
                // docker-py reads the stream from the raw socket under its HTTP reader: bytes
                // that arrive with the 101's head end up in that reader's buffer and are lost.
                // Let the head go alone first (dockerd's log replay comes later by nature).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = client.write_all(&replay).await;
            let _ = client.shutdown().await;
        });
        return Ok(upgrade_response(ct));
    }
    let (_, shim_rx) = s.engine.attach(&id, stdin, stdout, stderr)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let Ok(Ok(shim)) = shim_rx.await else { return };
        let mut client = hyper_util::rt::TokioIo::new(upgraded);
        if !replay.is_empty() && client.write_all(&replay).await.is_err() {
            return;
        }
        let (mut sr, mut sw) = shim.into_split();
        let (mut cr, mut cw) = tokio::io::split(&mut client);
        let to_client = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        };
        let to_shim = async {
            if stdin {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = to_client => {}
            _ = to_shim => {}
        }
    });
    Ok(upgrade_response(ct))
}

async fn remove(s: St, id: Id, Query(q): Q) -> R {
    if qbool(&q, "link") {
        return Err(ApiError::bad("links are not supported"));
    }
    // `v=1`: anonymous volumes go with the container.
    s.engine
        .remove(&id, qbool(&q, "force"), qbool(&q, "v"))
        .await?;
    no_content()
}

async fn top(s: St, id: Id, Query(q): Q) -> R {
    let ps_args = q.get("ps_args").map(String::as_str).unwrap_or("");
    Ok(json(&s.engine.top(&id, ps_args).await?))
}

async fn rename(s: St, id: Id, Query(q): Q) -> R {
    let name = q.get("name").map(String::as_str).unwrap_or("");
    s.engine.rename(&id, name)?;
    no_content()
}

async fn restart(s: St, id: Id, Query(q): Q) -> R {
    s.engine
        .restart(&id, timeout(&q)?, qstr(&q, "signal"))
        .await?;
    no_content()
}

async fn pause(s: St, id: Id) -> R {
    s.engine.set_paused(&id, true).await?;
    no_content()
}

async fn unpause(s: St, id: Id) -> R {
    s.engine.set_paused(&id, false).await?;
    no_content()
}

async fn resize(s: St, id: Id, Query(q): Q) -> R {
    let (h, w) = dims(&q)?;
    s.engine.resize(&id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

async fn update(s: St, id: Id, body: Bytes) -> R {
    let upd: UpdateConfig = decode(&body)?;
    let warnings = s.engine.update(&id, &upd).await?;
    Ok(json(&UpdateResponse { warnings }))
}

async fn stats(s: St, id: Id, Query(q): Q) -> R {
    // docker-py sends Python's `False`.
    let streaming = !matches!(
        q.get("stream").map(|s| s.to_ascii_lowercase()).as_deref(),
        Some("0" | "false")
    );
    let one_shot = qbool(&q, "one-shot");
    let engine = s.engine.clone();
    let first = {
        let e = engine.clone();
        let id = id.clone();
        blocking(move || e.stats_sample(&id)).await?
    };
    if !streaming && one_shot {
        return Ok(json(&first));
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
            cur.precpu_stats = prev.cpu_stats;
            cur.preread = prev.read;
            let running = cur.read != crate::util::ZERO_TIME;
            if tx.send(json_line(&cur)).await.is_err() || !streaming || !running {
                return;
            }
            prev = cur;
        }
    });
    Ok(stream("application/json", rx))
}

async fn changes(s: St, id: Id) -> R {
    let engine = s.engine.clone();
    Ok(json(&blocking(move || engine.changes(&id)).await?))
}

async fn prune(s: St, Query(q): Q) -> R {
    let f = filters(&q)?;
    Ok(json(&s.engine.prune(&f).await?))
}

/// `path` of the archive routes (absolute).
fn archive_path(q: &HashMap<String, String>) -> Result<String, ApiError> {
    match qstr(q, "path") {
        Some(p) if p.starts_with('/') => Ok(p.to_string()),
        Some(p) => Ok(format!("/{p}")),
        None => Err(ApiError::bad("bad parameter: path cannot be empty")),
    }
}

const PATH_STAT: &str = "X-Docker-Container-Path-Stat";

fn with_stat(mut r: Response, stat: &str) -> Response {
    r.headers_mut().insert(
        PATH_STAT,
        HeaderValue::from_str(stat).unwrap_or(HeaderValue::from_static("")),
    );
    r
}

async fn head_archive(s: St, id: Id, Query(q): Q) -> R {
    let path = archive_path(&q)?;
    let c = s.engine.get(&id)?;
    let stat = archive::stat(s.engine.clone(), c, path).await?;
    Ok(with_stat(StatusCode::OK.into_response(), &stat))
}

async fn get_archive(s: St, id: Id, Query(q): Q) -> R {
    let path = archive_path(&q)?;
    let c = s.engine.get(&id)?;
    let (stat, rx) = archive::tar(s.engine.clone(), c, path, true).await?;
    Ok(with_stat(stream("application/x-tar", rx), &stat))
}

async fn export(s: St, id: Id) -> R {
    let c = s.engine.get(&id)?;
    let (_, rx) = archive::tar(s.engine.clone(), c, "/".into(), false).await?;
    Ok(stream("application/x-tar", rx))
}

async fn put_archive(s: St, id: Id, Query(q): Q, body: Body) -> R {
    let path = archive_path(&q)?;
    let c = s.engine.get(&id)?;
    let opts = archive::PutOptions {
        no_overwrite_dir_non_dir: q
            .get("noOverwriteDirNonDir")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True")),
        copy_uid_gid: q
            .get("copyUIDGID")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True")),
    };
    archive::put(s.engine.clone(), c, path, opts, body.into_data_stream()).await?;
    Ok(StatusCode::OK.into_response())
}
