//! Container routes: create, inspect, list, the life cycle, logs and attach, the operations
//! (top, rename, pause, resize, update, stats, changes, prune) and the archive routes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use berth_api::container::{
    CreateRequest, CreateResponse, UpdateConfig, UpdateResponse, WaitResponse,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{
    blocking, decode, flag, json, json_line, json_status, no_content, parse_filters, stream,
    stream_type, upgrade_response, ApiError, AppState, ClientSocket, Id, JsonBody, Params,
    SizeQuery, St, StopQuery, R,
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
        .route(
            "/containers/{id}/attach/ws",
            get(super::attach_ws::attach_ws),
        )
        .route("/containers/{id}", delete(remove))
        // A legacy link's name, `/<parent>/<alias>` (`DELETE …?link=1`).
        .route("/containers/{id}/{alias}", delete(remove_link))
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

#[derive(Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    #[serde(deserialize_with = "flag")]
    all: bool,
    limit: String,
    #[serde(deserialize_with = "flag")]
    size: bool,
    filters: String,
}

async fn list(
    s: St,
    axum::Extension(v): axum::Extension<berth_api::ApiVersion>,
    Params(q): Params<ListQuery>,
) -> R {
    let f = parse_filters(&q.filters)?;
    let limit = q
        .limit
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    let mut list = s.engine.summaries(q.all, limit, q.size, &f)?;
    v.adapt_container_list(&mut list);
    Ok(json(&list))
}

/// `name` of create and rename.
#[derive(Default, Deserialize)]
#[serde(default)]
struct NameQuery {
    name: String,
    /// `platform` of create (`os/arch[/variant]`).
    platform: String,
}

/// `x86_64` → `amd64`, `aarch64` → `arm64` (Go's names).
fn go_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// dockerd's check of create's `platform`: an image of another platform is not found (the
/// CLI then pulls the wanted one).
fn check_platform(
    engine: &crate::engine::Engine,
    image: &str,
    platform: &str,
) -> Result<(), ApiError> {
    let mut want = platform.split('/');
    let (Some(os), Some(arch)) = (want.next(), want.next()) else {
        return Ok(());
    };
    let Ok(resolved) = engine.images.resolve(image) else {
        return Ok(());
    };
    let Ok(cfg) = engine.images.config(&resolved.image.id) else {
        return Ok(());
    };
    if cfg.os.eq_ignore_ascii_case(os) && go_arch(&cfg.architecture) == go_arch(arch) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "image with reference {image} was found but does not match the specified platform: wanted {os}/{arch}, actual: {}/{}",
            cfg.os,
            go_arch(&cfg.architecture)
        ),
    ))
}

async fn create(
    s: St,
    axum::Extension(v): axum::Extension<berth_api::ApiVersion>,
    Params(q): Params<NameQuery>,
    JsonBody(body): JsonBody,
) -> R {
    if body.trim_ascii().is_empty() {
        return Err(ApiError::bad(
            "invalid JSON: got EOF while reading request body",
        ));
    }
    let mut req = CreateRequest::decode(&body)?
        .ok_or_else(|| ApiError::bad(berth_api::container::EMPTY_CONFIG))?;
    if let Some(hc) = req.host_config.as_ref() {
        crate::engine::create::validate_net_mode(&req.config, hc)?;
    }
    let route_warnings = v.adapt_create(&mut req).map_err(|e| match e {
        // dockerd returns a plain error here.
        berth_api::version::RouteError::InterfaceSysctl(m) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
        e => ApiError::bad(e.to_string()),
    })?;
    // dockerd's route: a PidsLimit below 1 is no limit at all.
    if let Some(hc) = req.host_config.as_mut() {
        hc.pids_limit = hc.pids_limit.filter(|l| *l > 0);
    }
    if v.ipc_shareable_by_default() {
        let hc = req.host_config.get_or_insert_with(Default::default);
        if hc.ipc_mode.is_empty() {
            hc.ipc_mode = "shareable".into();
        }
    }
    if !q.platform.is_empty() {
        check_platform(&s.engine, &req.config.image, &q.platform)?;
    }
    let engine = s.engine.clone();
    let (id, mut warnings) = blocking(move || engine.create(Some(q.name.as_str()), req)).await?;
    warnings.extend(route_warnings);
    Ok(json_status(
        StatusCode::CREATED,
        &CreateResponse { id, warnings },
    ))
}

async fn inspect(s: St, axum::Extension(v): axum::Extension<berth_api::ApiVersion>, id: Id) -> R {
    let mut c = s.engine.inspect(&id)?;
    v.adapt_container_inspect(&mut c);
    Ok(json(&c))
}

async fn start(s: St, id: Id) -> R {
    s.engine.start(&id).await?;
    no_content()
}

async fn stop(s: St, id: Id, Params(q): Params<StopQuery>) -> R {
    let (t, signal) = (q.timeout()?, q.signal().map(str::to_string));
    let (engine, id) = (s.engine.clone(), id.to_string());
    // dockerd finishes a stop whose client went away, the kill after the timeout included:
    // the stop runs in a task of its own, not in the request's (dropped on disconnect).
    let stop = tokio::spawn(async move { engine.stop(&id, t, signal.as_deref()).await });
    stop.await.map_err(crate::engine::EngineError::from)??;
    no_content()
}

async fn kill(s: St, id: Id, Params(q): Params<StopQuery>) -> R {
    // dockerd's router wraps every kill error (its status kept).
    if let Err(e) = s.engine.kill(&id, q.signal()).await {
        return Err(ApiError::new(
            e.status(),
            format!("cannot kill container: {}: {e}", *id),
        ));
    }
    no_content()
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct WaitQuery {
    condition: String,
}

async fn wait(s: St, id: Id, Params(q): Params<WaitQuery>) -> R {
    let cond = match q.condition.as_str() {
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

#[derive(Default, Deserialize)]
#[serde(default)]
struct LogsQuery {
    #[serde(deserialize_with = "flag")]
    stdout: bool,
    #[serde(deserialize_with = "flag")]
    stderr: bool,
    #[serde(deserialize_with = "flag")]
    follow: bool,
    #[serde(deserialize_with = "flag")]
    timestamps: bool,
    tail: String,
    since: String,
    until: String,
    #[serde(deserialize_with = "flag")]
    details: bool,
}

/// `since`/`until` of logs: seconds (a fraction is ignored); 0 means none.
fn log_time(t: &str) -> Option<i64> {
    t.split('.')
        .next()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|s| *s > 0)
}

async fn container_logs(s: St, id: Id, Params(q): Params<LogsQuery>) -> R {
    let c = s.engine.get(&id)?;
    if c.host_config.log_config.kind == "none" {
        return Err(ApiError::not_implemented(
            "configured logging driver does not support reading",
        ));
    }
    let o = logs::LogOptions {
        stdout: q.stdout,
        stderr: q.stderr,
        follow: q.follow,
        timestamps: q.timestamps,
        tail: q.tail.parse::<usize>().ok(),
        since: log_time(&q.since),
        until: log_time(&q.until),
        framed: !c.tty(),
        details: q.details,
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
    s.engine.drain_log(&c).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let path = std::path::PathBuf::from(&c.log_path);
    tokio::task::spawn_blocking(move || logs::stream(path, o, events, tx));
    Ok(stream(stream_type(c.tty()), rx))
}

/// The query of both attach routes.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct AttachQuery {
    #[serde(deserialize_with = "flag")]
    pub stdin: bool,
    #[serde(deserialize_with = "flag")]
    pub stdout: bool,
    #[serde(deserialize_with = "flag")]
    pub stderr: bool,
    #[serde(deserialize_with = "flag")]
    pub logs: bool,
    #[serde(deserialize_with = "flag")]
    pub stream: bool,
    #[serde(rename = "detachKeys")]
    pub detach_keys: String,
}

/// What a container wrote so far on the streams asked for (an attach's `logs=1`), `framed`
/// in multiplexed frames.
pub(crate) async fn log_replay(
    c: &crate::engine::Container,
    stdout: bool,
    stderr: bool,
    framed: bool,
) -> Vec<u8> {
    if !stdout && !stderr {
        return Vec::new();
    }
    let o = logs::LogOptions {
        stdout,
        stderr,
        framed,
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
}

/// `POST /containers/{id}/attach`. An error before the session (no such container, bad
/// detach keys) is answered as dockerd writes it on the connection it hijacked: the message
/// as raw-stream text ending in CRLF, and the connection closed.
async fn attach(s: St, id: Id, q: Params<AttachQuery>, req: Request) -> Response {
    match attach_session(s, id, q, req).await {
        Ok(r) => r,
        Err(e) => (
            e.status,
            [
                (header::CONTENT_TYPE, "application/vnd.docker.raw-stream"),
                (header::CONNECTION, "close"),
            ],
            format!("{}\r\n", e.message),
        )
            .into_response(),
    }
}

async fn attach_session(s: St, id: Id, Params(q): Params<AttachQuery>, mut req: Request) -> R {
    let AttachQuery {
        stdin,
        stdout,
        stderr,
        ..
    } = q;
    let c = s.engine.get(&id)?;
    // A tty session's input goes through the detach keys (dockerd's escape proxy).
    let keys = crate::shimio::detach_keys(&q.detach_keys)?;
    let keys = c.tty().then_some(keys);
    // `logs=1`: what the container wrote so far comes first (in the attach stream's framing).
    let replay = if q.logs {
        log_replay(&c, stdout, stderr, !c.tty()).await
    } else {
        Vec::new()
    };
    // dockerd's `attach` event, for every attach (with or without `stream`): after the log
    // replay is read, before the streams.
    s.engine.container_event(&c, "attach", &[]);
    let ct = stream_type(c.tty());
    if !q.stream {
        // Without `stream=1` Docker answers with the logs (if asked) and ends the session.
        let on_upgrade = hyper::upgrade::on(&mut req);
        let sock = ClientSocket::of(&req);
        tokio::spawn(async move {
            let Ok(mut upgraded) = on_upgrade.await else {
                return;
            };
            // The head goes alone first (see `ClientSocket`; dockerd's log replay comes later
            // by nature); over TCP, where the client's reading cannot be seen, after a pause.
            if !replay.is_empty() && !sock.head_read(&mut upgraded).await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut client = hyper_util::rt::TokioIo::new(upgraded);
            let _ = client.write_all(&replay).await;
            let _ = client.shutdown().await;
        });
        return Ok(upgrade_response(ct));
    }
    let (_, shim_rx) = s.engine.attach(&id, stdin, stdout, stderr)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sock = ClientSocket::of(&req);
    let engine = s.engine.clone();
    tokio::spawn(async move {
        let Ok(mut upgraded) = on_upgrade.await else {
            return;
        };
        sock.head_read(&mut upgraded).await;
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
                if crate::shimio::copy_input(&mut cr, &mut sw, keys).await {
                    // Detached: the session ends, the container keeps running.
                    return;
                }
                let _ = sw.shutdown().await;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = to_client => {}
            _ = to_shim => {
                if let Ok(c) = engine.get(&c.id) {
                    engine.container_event(&c, "detach", &[]);
                }
            }
        }
    });
    Ok(upgrade_response(ct))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RemoveQuery {
    #[serde(deserialize_with = "flag")]
    force: bool,
    #[serde(deserialize_with = "flag")]
    v: bool,
    #[serde(deserialize_with = "flag")]
    link: bool,
}

async fn remove(s: St, id: Id, Params(q): Params<RemoveQuery>) -> R {
    if q.link {
        // `/<parent>/<alias>`: only the link goes.
        s.engine.remove_link(&id)?;
        return no_content();
    }
    // `v=1`: anonymous volumes go with the container.
    s.engine.remove(&id, q.force, q.v).await?;
    no_content()
}

/// `DELETE /containers/<parent>/<alias>?link=1`.
async fn remove_link(
    s: St,
    axum::extract::Path((parent, alias)): axum::extract::Path<(String, String)>,
    Params(q): Params<RemoveQuery>,
) -> R {
    let name = format!("{parent}/{alias}");
    if !q.link {
        // Not a container's name: dockerd's lookup fails.
        return Err(crate::engine::EngineError::NotFound(name).into());
    }
    s.engine.remove_link(&name)?;
    no_content()
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TopQuery {
    ps_args: String,
}

async fn top(s: St, id: Id, Params(q): Params<TopQuery>) -> R {
    let top = s.engine.top(&id, &q.ps_args).await?;
    event(&s, &id, "top", &[]);
    Ok(json(&top))
}

/// A container event for a request that succeeded (`top`, `resize`, `archive-path`,
/// `extract-to-dir`, `export`), as dockerd logs them.
fn event(s: &St, id: &str, action: &str, extra: &[(&str, &str)]) {
    if let Ok(c) = s.engine.get(id) {
        s.engine.container_event(&c, action, extra);
    }
}

async fn rename(s: St, id: Id, Params(q): Params<NameQuery>) -> R {
    s.engine.rename(&id, &q.name)?;
    no_content()
}

async fn restart(s: St, id: Id, Params(q): Params<StopQuery>) -> R {
    s.engine.restart(&id, q.timeout()?, q.signal()).await?;
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

async fn resize(s: St, id: Id, Params(q): Params<SizeQuery>) -> R {
    let (h, w) = q.dims()?;
    s.engine.resize(&id, h, w).await?;
    let (h, w) = (h.to_string(), w.to_string());
    event(&s, &id, "resize", &[("height", &h), ("width", &w)]);
    Ok(StatusCode::OK.into_response())
}

async fn update(
    s: St,
    axum::Extension(v): axum::Extension<berth_api::ApiVersion>,
    id: Id,
    JsonBody(body): JsonBody,
) -> R {
    let mut upd: UpdateConfig = decode(&body)?;
    // dockerd's route: no PidsLimit below 1.40; any value below 1 is "unlimited" (0).
    if v.update_ignores_pids_limit() {
        upd.pids_limit = None;
    }
    if let Some(l) = upd.pids_limit.as_mut().filter(|l| **l < 0) {
        *l = 0;
    }
    let warnings = s.engine.update(&id, &upd).await?;
    Ok(json(&UpdateResponse { warnings }))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct StatsQuery {
    stream: String,
    #[serde(rename = "one-shot", deserialize_with = "flag")]
    one_shot: bool,
}

async fn stats(s: St, id: Id, Params(q): Params<StatsQuery>) -> R {
    // docker-py sends Python's `False`.
    let streaming = !matches!(q.stream.to_ascii_lowercase().as_str(), "0" | "false");
    let one_shot = q.one_shot;
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

/// `filters` alone (prune).
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct FiltersQuery {
    pub(crate) filters: String,
}

async fn prune(s: St, Params(q): Params<FiltersQuery>) -> R {
    let f = parse_filters(&q.filters)?;
    Ok(json(&s.engine.prune(&f).await?))
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ArchiveQuery {
    path: String,
    #[serde(rename = "noOverwriteDirNonDir")]
    no_overwrite_dir_non_dir: String,
    #[serde(rename = "copyUIDGID")]
    copy_uid_gid: String,
}

impl ArchiveQuery {
    /// `path` (absolute).
    fn path(&self) -> Result<String, ApiError> {
        match self.path.as_str() {
            "" => Err(ApiError::bad("bad parameter: path cannot be empty")),
            p if p.starts_with('/') => Ok(p.to_string()),
            p => Ok(format!("/{p}")),
        }
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

async fn head_archive(s: St, id: Id, Params(q): Params<ArchiveQuery>) -> R {
    let path = q.path()?;
    let c = s.engine.get(&id)?;
    let stat = archive::stat(s.engine.clone(), c, path)
        .await
        .map_err(|e| e.named(&id))?;
    Ok(with_stat(StatusCode::OK.into_response(), &stat))
}

async fn get_archive(s: St, id: Id, Params(q): Params<ArchiveQuery>) -> R {
    let path = q.path()?;
    let c = s.engine.get(&id)?;
    let (stat, rx) = archive::tar(s.engine.clone(), c, path, true)
        .await
        .map_err(|e| e.named(&id))?;
    event(&s, &id, "archive-path", &[]);
    Ok(with_stat(stream("application/x-tar", rx), &stat))
}

async fn export(s: St, id: Id) -> R {
    let c = s.engine.get(&id)?;
    let (_, rx) = archive::tar(s.engine.clone(), c, "/".into(), false).await?;
    event(&s, &id, "export", &[]);
    Ok(stream("application/x-tar", rx))
}

async fn put_archive(s: St, id: Id, Params(q): Params<ArchiveQuery>, body: Body) -> R {
    let path = q.path()?;
    let c = s.engine.get(&id)?;
    let yes = |v: &str| matches!(v, "1" | "true" | "True");
    let opts = archive::PutOptions {
        no_overwrite_dir_non_dir: yes(&q.no_overwrite_dir_non_dir),
        copy_uid_gid: yes(&q.copy_uid_gid),
    };
    archive::put(s.engine.clone(), c, path, opts, body.into_data_stream())
        .await
        .map_err(|e| e.named(&id))?;
    event(&s, &id, "extract-to-dir", &[]);
    Ok(StatusCode::OK.into_response())
}
