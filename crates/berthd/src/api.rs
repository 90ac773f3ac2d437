//! Docker Engine API routes (thin: the work is in [`crate::engine`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::engine::{Container, Engine, EngineError, WaitCondition};
use crate::{logs, sysinfo, util};

pub const API_VERSION: &str = "1.44";
pub const MIN_API_VERSION: &str = "1.24";

/// Shared state of the handlers.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub info: sysinfo::Static,
}

pub(crate) type St = State<Arc<AppState>>;
pub(crate) type Q = Query<HashMap<String, String>>;

/// An API error: `{"message": …}` with a status code.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0 == StatusCode::NOT_MODIFIED {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        (
            self.0,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": self.1}).to_string(),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
        )
    }
}

pub(crate) type R = Result<Response, ApiError>;

pub(crate) fn json_resp(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(crate) fn qbool(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(
        q.get(k).map(String::as_str),
        Some("1" | "true" | "True" | "yes")
    )
}

/// Docker filters: `{"key":["v"]}` or `{"key":{"v":true}}`.
pub(crate) fn parse_filters(
    q: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, ApiError> {
    let Some(f) = q.get("filters").filter(|s| !s.is_empty()) else {
        return Ok(vec![]);
    };
    let v: Value = serde_json::from_str(f).map_err(|e| bad(format!("invalid filter: {e}")))?;
    let mut out = Vec::new();
    for (k, vals) in v.as_object().ok_or_else(|| bad("invalid filter"))? {
        match vals {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .for_each(|s| out.push((k.clone(), s.to_string()))),
            Value::Object(o) => o.keys().for_each(|s| out.push((k.clone(), s.clone()))),
            _ => return Err(bad("invalid filter")),
        }
    }
    Ok(out)
}

/// The router (paths without the version prefix; see [`strip_version`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/images/json", get(images))
        .route("/containers/json", get(containers_list))
        .route("/containers/create", post(container_create))
        .route("/containers/{id}/json", get(container_inspect))
        .route("/containers/{id}/start", post(container_start))
        .route("/containers/{id}/stop", post(container_stop))
        .route("/containers/{id}/kill", post(container_kill))
        .route("/containers/{id}/wait", post(container_wait))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/attach", post(container_attach))
        .route("/containers/{id}", delete(container_delete))
        .merge(crate::build::routes()) // issue 4: Dockerfile builds
        .merge(crate::buildkit::routes()) // issue 15: BuildKit API for buildx
        .merge(crate::volumes::routes())
        .merge(crate::archive::routes())
        .route(
            "/_badversion/{v}",
            get(bad_version)
                .post(bad_version)
                .delete(bad_version)
                .head(bad_version),
        )
        .merge(crate::network::routes())
        .merge(crate::api_ext::routes())
        .merge(crate::images_api::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Rewrites `/v1.NN/…` to `/…`; unsupported versions go to a route that answers 400.
pub fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((ver, tail)) = rest.split_once('/') {
            if let Some(minor) = ver.strip_prefix("1.").and_then(|m| m.parse::<u32>().ok()) {
                let new_path = if (24..=44).contains(&minor) {
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
    }
    req
}

async fn bad_version(Path(v): Path<String>) -> ApiError {
    let minor: u32 = v
        .strip_prefix("1.")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor < 24 {
        bad(format!("client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"))
    } else {
        bad(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        ))
    }
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "page not found".into())
}

async fn ping() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response();
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    // BuildKit (`/grpc`, `/session`): the docker CLI hands builds to buildx.
    h.insert("Builder-Version", HeaderValue::from_static("2"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

async fn version(State(s): St) -> Response {
    let i = &s.info;
    let ver = env!("CARGO_PKG_VERSION");
    json_resp(json!({
        "Platform": {"Name": "Berth Engine"},
        "Components": [{
            "Name": "Engine",
            "Version": ver,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "GitCommit": "",
                "GoVersion": i.rustc,
                "Os": "linux",
                "Arch": i.arch,
                "KernelVersion": i.kernel,
                "Experimental": "false",
                "BuildTime": "",
            }
        }],
        "Version": ver,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": i.rustc,
        "Os": "linux",
        "Arch": i.arch,
        "KernelVersion": i.kernel,
        "BuildTime": "",
    }))
}

async fn info(State(s): St) -> Response {
    let e = &s.engine;
    let i = &s.info;
    let (total, running, stopped) = e.counts();
    let images = e.images.list().map(|l| l.len()).unwrap_or(0);
    let driver = e
        .images
        .snapshotter()
        .map(|s| s.driver().to_string())
        .unwrap_or_default();
    json_resp(json!({
        "ID": i.id,
        "Containers": total,
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": driver,
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": ["host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": sysinfo::nfd(),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": util::now_rfc3339_nano(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": i.cgroup_version,
        "NEventsListener": 0,
        "KernelVersion": i.kernel,
        "OperatingSystem": i.os,
        "OSVersion": i.os_version,
        "OSType": "linux",
        "Architecture": i.arch_uname,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "Mirrors": []},
        "NCPU": i.ncpu,
        "MemTotal": i.mem_total,
        "GenericResources": null,
        "DockerRootDir": e.cfg.data_root.display().to_string(),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": i.hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {"berth-runtime": {"path": e.cfg.runtime.display().to_string()}},
        "DefaultRuntime": "berth-runtime",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=cgroupns"],
        "Warnings": null,
    }))
}

async fn images(State(s): St, Query(q): Q) -> R {
    let opts = berth_image::image_store::ListOptions {
        all: qbool(&q, "all"),
        filters: parse_filters(&q)?,
    };
    let engine = s.engine.clone();
    let list = tokio::task::spawn_blocking(move || engine.images.list_summaries(&opts))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| bad(e.to_string()))?;
    Ok(json_resp(serde_json::to_value(list).unwrap_or(Value::Null)))
}

fn command_of(c: &Container) -> String {
    let mut v = vec![c.path.clone()];
    v.extend(c.args.iter().cloned());
    v.join(" ")
}

fn status_text(c: &Container) -> String {
    let now = util::now_secs();
    let health = match c.state.health.as_ref().and_then(|h| h["Status"].as_str()) {
        Some("starting") => " (health: starting)",
        Some("healthy") => " (healthy)",
        Some("unhealthy") => " (unhealthy)",
        _ => "",
    };
    match c.state.status.as_str() {
        "running" => format!(
            "Up {}{health}",
            util::human_duration(now - util::unix_secs(&c.state.started_at))
        ),
        "paused" => format!(
            "Up {} (Paused)",
            util::human_duration(now - util::unix_secs(&c.state.started_at))
        ),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            util::human_duration(now - util::unix_secs(&c.state.finished_at))
        ),
        "exited" => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            util::human_duration(now - util::unix_secs(&c.state.finished_at))
        ),
        _ => "Created".into(),
    }
}

async fn containers_list(State(s): St, Query(q): Q) -> R {
    let all = qbool(&q, "all");
    let filters = parse_filters(&q)?;
    let mut out = Vec::new();
    let mut list = s.engine.list();
    if let Some(n) = q
        .get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|n| *n > 0)
    {
        list.truncate(n as usize);
    }
    for c in list {
        let has_status_filter = filters.iter().any(|(k, _)| k == "status");
        if !all && !c.state.running && !has_status_filter {
            continue;
        }
        let keep = filters.iter().all(|(k, v)| match k.as_str() {
            "id" => c.id.starts_with(v.as_str()),
            "name" => c
                .name
                .trim_start_matches('/')
                .contains(v.trim_start_matches('/')),
            "status" => &c.state.status == v,
            "label" => match v.split_once('=') {
                Some((lk, lv)) => c.config["Labels"][lk].as_str() == Some(lv),
                None => !c.config["Labels"][v.as_str()].is_null(),
            },
            "exited" => !c.state.running && c.state.exit_code.to_string() == *v,
            _ => true,
        });
        if !keep {
            continue;
        }
        let (ports, netsettings) = s.engine.net.list_fields(&c); // [network]
        out.push(json!({
            "Id": c.id,
            "Names": [c.name],
            "Image": c.config["Image"],
            "ImageID": c.image,
            "Command": command_of(&c),
            "Created": util::unix_secs(&c.created),
            "Ports": ports,
            "Labels": c.config["Labels"],
            "State": c.state.status,
            "Status": status_text(&c),
            "HostConfig": {"NetworkMode": c.network_mode()},
            "NetworkSettings": netsettings,
            "Mounts": crate::mounts::inspect_json(&s.engine, &c.id),
        }));
    }
    Ok(json_resp(Value::Array(out)))
}

async fn container_create(State(s): St, Query(q): Q, body: Bytes) -> R {
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let engine = s.engine.clone();
    let name = q.get("name").cloned();
    let (id, warnings) = tokio::task::spawn_blocking(move || engine.create(name.as_deref(), &v))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok((
        StatusCode::CREATED,
        json_resp(json!({"Id": id, "Warnings": warnings})),
    )
        .into_response())
}

async fn container_inspect(State(s): St, Path(id): Path<String>) -> R {
    let c = s.engine.get(&id)?;
    let dd = s.engine.cfg.data_root.join("containers").join(&c.id);
    let shim = s.engine.cfg.exec_root.join("containers").join(&c.id);
    let mut hc = c.host_config.clone();
    if let Some(o) = hc.as_object_mut() {
        for (k, d) in [
            ("Binds", Value::Null),
            ("ContainerIDFile", json!("")),
            ("PortBindings", json!({})),
            (
                "RestartPolicy",
                json!({"Name": "no", "MaximumRetryCount": 0}),
            ),
            ("AutoRemove", json!(false)),
            ("Privileged", json!(false)),
            ("ReadonlyRootfs", json!(false)),
            ("CapAdd", Value::Null),
            ("CapDrop", Value::Null),
            ("Dns", json!([])),
            ("ExtraHosts", Value::Null),
            ("IpcMode", json!("private")),
            ("PidMode", json!("")),
            ("ShmSize", json!(67108864)),
            ("Runtime", json!("berth-runtime")),
            ("Memory", json!(0)),
            ("NanoCpus", json!(0)),
        ] {
            o.entry(k).or_insert(d);
        }
    }
    let exec_ids = {
        let x = s.engine.execs_of(&c.id);
        if x.is_empty() {
            Value::Null
        } else {
            json!(x)
        }
    };
    Ok(json_resp(json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": c.state,
        "Image": c.image,
        "ResolvConfPath": dd.join("resolv.conf"),
        "HostnamePath": dd.join("hostname"),
        "HostsPath": dd.join("hosts"),
        "LogPath": c.log_path,
        "Name": c.name,
        "RestartCount": c.restart_count,
        "Driver": c.driver,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids,
        "HostConfig": hc,
        "GraphDriver": {"Name": c.driver, "Data": {"MergedDir": shim.join("rootfs")}},
        "Mounts": crate::mounts::inspect_json(&s.engine, &c.id),
        "Config": c.config,
        "NetworkSettings": s.engine.net.settings(&c), // [network]
    })))
}

async fn container_start(State(s): St, Path(id): Path<String>) -> R {
    s.engine.start(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_stop(State(s): St, Path(id): Path<String>, Query(q): Q) -> R {
    let t = match q.get("t").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| bad(format!("invalid value for t: {t}")))?,
        ),
        None => None,
    };
    s.engine
        .stop(&id, t, q.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_kill(State(s): St, Path(id): Path<String>, Query(q): Q) -> R {
    s.engine
        .kill(&id, q.get("signal").map(String::as_str))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn container_wait(State(s): St, Path(id): Path<String>, Query(q): Q) -> R {
    let cond = match q.get("condition").map(String::as_str).unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => return Err(bad(format!("invalid condition: \"{other}\""))),
    };
    let fut = s.engine.wait(&id, cond)?;
    let stream = futures_util::stream::once(async move {
        let code = fut.await;
        Ok::<_, Infallible>(Bytes::from(
            json!({"StatusCode": code, "Error": null}).to_string() + "\n",
        ))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn container_logs(State(s): St, Path(id): Path<String>, Query(q): Q) -> R {
    let c = s.engine.get(&id)?;
    let o = logs::LogOptions {
        stdout: qbool(&q, "stdout"),
        stderr: qbool(&q, "stderr"),
        follow: qbool(&q, "follow"),
        timestamps: qbool(&q, "timestamps"),
        tail: q.get("tail").and_then(|t| t.parse::<usize>().ok()),
        since: q
            .get("since")
            .and_then(|t| t.split('.').next()?.parse::<i64>().ok())
            .filter(|s| *s > 0),
        until: q
            .get("until")
            .and_then(|t| t.split('.').next()?.parse::<i64>().ok())
            .filter(|s| *s > 0),
        framed: !c.tty(),
    };
    if !o.stdout && !o.stderr {
        return Err(bad("Bad parameters: you must choose at least one stream"));
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
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let ct = if c.tty() {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(([(header::CONTENT_TYPE, ct)], Body::from_stream(body)).into_response())
}

async fn container_attach(
    State(s): St,
    Path(id): Path<String>,
    Query(q): Q,
    mut req: Request,
) -> R {
    let stdin = qbool(&q, "stdin");
    let stdout = qbool(&q, "stdout");
    let stderr = qbool(&q, "stderr");
    let c = s.engine.get(&id)?;
    // `logs=1`: what the container wrote so far comes first (in the attach stream's framing).
    let replay = if qbool(&q, "logs") && (stdout || stderr) {
        let o = logs::LogOptions {
            stdout,
            stderr,
            follow: false,
            timestamps: false,
            tail: None,
            since: None,
            until: None,
            framed: !c.tty(),
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
    let ct = if c.tty() {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let upgrade_response = || {
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp")
            .body(Body::empty())
            .unwrap()
    };
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
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let _ = client.write_all(&replay).await;
            let _ = client.shutdown().await;
        });
        return Ok(upgrade_response());
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
    Ok(upgrade_response())
}

async fn container_delete(State(s): St, Path(id): Path<String>, Query(q): Q) -> R {
    if qbool(&q, "link") {
        return Err(bad("links are not supported"));
    }
    // `v=1`: anonymous volumes go with the container (crate::mounts).
    let c = s.engine.get(&id)?;
    let anon = crate::mounts::anonymous_volumes(&s.engine, &c.id);
    s.engine.remove(&id, qbool(&q, "force")).await?;
    if qbool(&q, "v") {
        crate::mounts::on_removed(&s.engine, &c.id, &anon, true);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
