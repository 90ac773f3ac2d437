//! System routes: `_ping`, `version`, `info`, `events`, `system/df`; the swarm routes as a
//! dockerd outside any swarm answers them, and the plugin routes as one without plugins.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_api::system::{
    BuildCacheRecord, Commit, Component, ComponentDetails, DiskUsage, FirewallInfo, Info, Platform,
    PluginsInfo, RegistryConfig, Runtime, SwarmInfo, Version,
};
use berth_api::ApiVersion;
use tokio::sync::broadcast::error::RecvError;

use super::{blocking, filters, json, json_line, qstr, stream, ApiError, AppState, St, Q, R};
use crate::events::Event;
use crate::{sysinfo, util};

pub fn routes() -> axum::Router<Arc<AppState>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .route("/system/df", get(system_df))
        .merge(swarm_routes())
        .merge(plugin_routes())
}

/// dockerd's answer to a cluster route on a node that is in no swarm (`errNoManager`).
const NO_MANAGER: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.";

async fn no_manager() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, NO_MANAGER)
}

/// `POST /swarm/leave` outside a swarm (dockerd's `errNoSwarm`; clients that tidy up with
/// `force` accept it).
async fn no_swarm() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "This node is not part of a swarm",
    )
}

/// `swarm init`/`join`: what would make this node a swarm member.
async fn swarm_unsupported() -> ApiError {
    ApiError::not_implemented(
        "swarm mode is not implemented by Berth: this node cannot init or join a swarm",
    )
}

/// The cluster routes (swarm, services, nodes, tasks, secrets, configs) of a node that is not
/// in a swarm.
fn swarm_routes() -> axum::Router<Arc<AppState>> {
    let mut r = Router::new()
        .route("/swarm/init", post(swarm_unsupported))
        .route("/swarm/join", post(swarm_unsupported))
        .route("/swarm/leave", post(no_swarm))
        .route("/swarm", get(no_manager))
        .route("/swarm/unlockkey", get(no_manager))
        .route("/swarm/update", post(no_manager))
        .route("/swarm/unlock", post(no_manager))
        .route("/services/{id}/logs", get(no_manager))
        .route("/tasks", get(no_manager))
        .route("/tasks/{id}", get(no_manager))
        .route("/tasks/{id}/logs", get(no_manager));
    // The objects a manager keeps: listed, created (nodes join instead), inspected, removed,
    // updated.
    for kind in ["services", "nodes", "secrets", "configs"] {
        r = r
            .route(&format!("/{kind}"), get(no_manager))
            .route(
                &format!("/{kind}/{{id}}"),
                get(no_manager).delete(no_manager),
            )
            .route(&format!("/{kind}/{{id}}/update"), post(no_manager));
        if kind != "nodes" {
            r = r.route(&format!("/{kind}/create"), post(no_manager));
        }
    }
    r
}

/// `GET /plugins`: no managed plugins (the filters must still be valid).
async fn plugins(Query(q): Q) -> R {
    filters(&q)?;
    Ok(json(&Vec::<berth_api::go::Empty>::new()))
}

/// A named plugin: none exists (dockerd's `errNotFound`); a path that is no plugin route is
/// dockerd's 404.
async fn plugin_not_found(
    method: axum::http::Method,
    axum::extract::Path(path): axum::extract::Path<String>,
) -> ApiError {
    let name = if method == axum::http::Method::DELETE {
        Some(path.as_str())
    } else if method == axum::http::Method::GET {
        path.strip_suffix("/json")
    } else {
        ["/enable", "/disable", "/push", "/upgrade", "/set"]
            .iter()
            .find_map(|s| path.strip_suffix(s))
    };
    match name {
        Some(name) if !name.is_empty() => ApiError::not_found(format!("plugin {name:?} not found")),
        _ => super::not_found().await,
    }
}

/// Installing or creating a plugin.
async fn plugins_unsupported() -> ApiError {
    ApiError::not_implemented("managed plugins are not implemented by Berth")
}

/// The plugin routes of a daemon with no plugins (names may hold slashes, as dockerd's
/// `{name:.*}`).
fn plugin_routes() -> axum::Router<Arc<AppState>> {
    Router::new()
        .route("/plugins", get(plugins))
        .route("/plugins/privileges", get(plugins_unsupported))
        .route("/plugins/pull", post(plugins_unsupported))
        .route("/plugins/create", post(plugins_unsupported))
        .route(
            "/plugins/{*name}",
            get(plugin_not_found)
                .delete(plugin_not_found)
                .post(plugin_not_found),
        )
}

async fn ping() -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response();
    // `Api-Version` and `Ostype`: every answer has them (`super::server_headers`).
    let h = r.headers_mut();
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

async fn version(s: St) -> Response {
    let i = &s.info;
    json(&Version::of_engine(
        Platform {
            name: "Berth Engine".into(),
        },
        Component {
            name: "Engine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            details: ComponentDetails {
                api_version: ApiVersion::CURRENT.to_string(),
                min_api_version: ApiVersion::MIN.to_string(),
                git_commit: String::new(),
                go_version: i.rustc.clone(),
                os: "linux".into(),
                arch: i.arch.clone(),
                kernel_version: i.kernel.clone(),
                experimental: "false".into(),
                build_time: String::new(),
            },
        },
    ))
}

async fn info(s: St, axum::Extension(v): axum::Extension<ApiVersion>) -> Response {
    let e = &s.engine;
    let i = &s.info;
    let (running, paused, stopped) = e.counts();
    let images = e.images.list().map(|l| l.len()).unwrap_or(0);
    let driver = e
        .images
        .snapshotter()
        .map(|s| s.driver().to_string())
        .unwrap_or_default();
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let live = e.live();
    json(&Info {
        id: i.id.clone(),
        containers: (running + paused + stopped) as i64,
        containers_running: running as i64,
        containers_paused: paused as i64,
        containers_stopped: stopped as i64,
        images: images as i64,
        driver,
        driver_status: vec![],
        plugins: PluginsInfo {
            volume: vec![],
            network: strs(&["host", "null"]),
            authorization: None,
            log: strs(crate::logs::DRIVERS),
        },
        memory_limit: true,
        swap_limit: false,
        cpu_cfs_period: true,
        cpu_cfs_quota: true,
        cpu_shares: true,
        cpu_set: true,
        pids_limit: true,
        ipv4_forwarding: false,
        bridge_nf_iptables: v.has_pre_1_50_legacy_fields().then_some(false),
        bridge_nf_ip6tables: v.has_pre_1_50_legacy_fields().then_some(false),
        debug: false,
        nfd: sysinfo::nfd() as i64,
        oom_kill_disable: false,
        ngoroutines: 0,
        system_time: util::now_rfc3339_nano(),
        logging_driver: live.defaults.log_driver.clone(),
        cgroup_driver: "cgroupfs".into(),
        cgroup_version: i.cgroup_version.clone(),
        n_events_listener: 0,
        kernel_version: i.kernel.clone(),
        operating_system: i.os.clone(),
        os_version: i.os_version.clone(),
        os_type: "linux".into(),
        architecture: i.arch_uname.clone(),
        index_server_address: "https://index.docker.io/v1/".into(),
        registry_config: RegistryConfig {
            index_configs: Default::default(),
            insecure_registry_cidrs: strs(&["127.0.0.0/8"]),
            mirrors: live
                .registry_mirrors
                .iter()
                .map(|m| format!("{m}/"))
                .collect(),
            allow_nondistributable_artifacts_cidrs: v
                .info_has_nondistributable_artifacts()
                .then_some(None),
            allow_nondistributable_artifacts_hostnames: v
                .info_has_nondistributable_artifacts()
                .then_some(None),
        },
        ncpu: i.ncpu,
        mem_total: i.mem_total,
        generic_resources: None,
        docker_root_dir: e.cfg.data_root.display().to_string(),
        http_proxy: String::new(),
        https_proxy: String::new(),
        no_proxy: String::new(),
        name: i.hostname.clone(),
        labels: live.labels.clone(),
        experimental_build: false,
        server_version: env!("CARGO_PKG_VERSION").into(),
        runtimes: [(
            crate::engine::render::DEFAULT_RUNTIME.to_string(),
            Runtime {
                path: e.cfg.runtime.display().to_string(),
            },
        )]
        .into(),
        default_runtime: crate::engine::render::DEFAULT_RUNTIME.into(),
        swarm: SwarmInfo {
            local_node_state: "inactive".into(),
            ..Default::default()
        },
        live_restore_enabled: true,
        isolation: String::new(),
        init_binary: String::new(),
        containerd_commit: Commit::default(),
        runc_commit: Commit::default(),
        init_commit: Commit::default(),
        security_options: security_options(),
        firewall_backend: e
            .net
            .firewall_name()
            .filter(|_| v.api_1_49_features())
            .map(|d| FirewallInfo {
                driver: d.into(),
                info: vec![],
            }),
        warnings: None,
    })
}

async fn events(s: St, axum::Extension(v): axum::Extension<ApiVersion>, Query(q): Q) -> R {
    let filters = filters(&q)?;
    // Image `create` events exist from API 1.46; older clients get neither past nor new ones.
    let image_create = v.events_include_image_create();
    let wanted = move |e: &Event| {
        e.matches(&filters) && (image_create || e.typ != "image" || e.action != "create")
    };
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        qstr(&q, k)
            .map(|v| {
                crate::events::parse_time(v)
                    .ok_or_else(|| ApiError::bad(format!("invalid {k}: {v}")))
            })
            .transpose()
    };
    let since = time("since")?;
    let until = time("until")?;
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            return Err(ApiError::bad(format!(
                "`since` time ({}) cannot be after `until` time ({})",
                qstr(&q, "since").unwrap_or_default(),
                qstr(&q, "until").unwrap_or_default()
            )));
        }
    }
    let (past, mut rx) = s.engine.bus.subscribe(since, until.is_some());
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let line = |e: &Event| json_line(&e.to_message());
        for e in past {
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            if wanted(&e) && tx.send(line(&e)).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let (ns, nn) = berth_image::timeutil::now();
            let now = ns * 1_000_000_000 + i64::from(nn);
            tokio::time::Instant::now() + Duration::from_nanos((u - now).max(0) as u64)
        });
        loop {
            // `None`: the bus closed; `Some(None)`: this subscriber lagged (events lost).
            let next = async {
                match rx.recv().await {
                    Ok(e) => Some(Some(e)),
                    Err(RecvError::Lagged(_)) => Some(None),
                    Err(RecvError::Closed) => None,
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
            let Some(ev) = ev else { return };
            let Some(e) = ev else { continue };
            if wanted(&e) && tx.send(line(&e)).await.is_err() {
                return;
            }
        }
    });
    Ok(stream("application/json", out))
}

async fn system_df(s: St) -> R {
    // Removed containers' writable layers go before images (and their sizes) are looked at.
    s.engine.settle().await;
    let s2 = s.clone();
    let du = blocking(move || -> Result<DiskUsage, ApiError> {
        let engine = &s2.engine;
        let in_use = super::images::in_use_fn(engine);
        let du = engine
            .images
            .disk_usage(&in_use)
            .map_err(crate::engine::EngineError::from)?;
        let summaries = engine
            .images
            .list_summaries(&Default::default())
            .map_err(crate::engine::EngineError::from)?;
        let containers = engine.list();
        let images = summaries
            .into_iter()
            .map(|mut i| {
                let u = du.images.iter().find(|u| u.id.to_string() == i.id);
                i.shared_size = u.map(|u| u.shared_size as i64).unwrap_or(0);
                i.containers = containers.iter().filter(|c| c.image == i.id).count() as i64;
                i
            })
            .collect();
        let cs = containers
            .iter()
            .map(|c| {
                let mut summary = engine.summary(c);
                summary.size_rw = Some(engine.size_rw(&c.id));
                summary.size_root_fs = Some(0);
                summary
            })
            .collect();
        Ok(DiskUsage {
            layers_size: du.layers_size as i64,
            images,
            containers: cs,
            volumes: engine.volumes.df(),
            // The build cache's records, and what crashed operations left (counted until
            // the next daemon start or `system prune` removes it).
            build_cache: {
                let mut v = build_cache(&engine.images);
                v.extend(crate::leftovers::records(&engine.images));
                v
            },
        })
    })
    .await?;
    Ok(json(&du))
}

/// The build cache's records (`system df`'s Build Cache): the builder's cached steps, as
/// `buildx du` lists them.
fn build_cache(store: &berth_image::image_store::ImageStore) -> Vec<BuildCacheRecord> {
    use berth_util::time::format_rfc3339_nano as time;
    berth_buildkit::cache::usage(store)
        .into_iter()
        .map(|r| BuildCacheRecord {
            id: r.id,
            parents: None,
            kind: r.record_type,
            description: r.description,
            in_use: r.in_use,
            shared: r.shared,
            size: r.size,
            created_at: r
                .created_at
                .map(|t| time(t.seconds, t.nanos as u32))
                .unwrap_or_default(),
            last_used_at: r.last_used_at.map(|t| time(t.seconds, t.nanos as u32)),
            usage_count: r.usage_count,
        })
        .collect()
}

/// `SecurityOptions` in dockerd's order: the default seccomp profile (Berth's is built in,
/// Docker's; dockerd reports it when the kernel has seccomp); its rootless daemon says so
/// (`docker info` shows "rootless"); "name=cgroupns" when containers get a private cgroup
/// namespace by default, which is on cgroup v2 hosts only (clients skip cgroupns tests
/// without it).
fn security_options() -> Vec<String> {
    let mut o = Vec::new();
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    if seccomp {
        o.push("name=seccomp,profile=builtin".to_string());
    }
    if crate::rootless::active() {
        o.push("name=rootless".to_string());
    }
    if crate::sysinfo::cgroup_version() == "2" {
        o.push("name=cgroupns".to_string());
    }
    o
}
