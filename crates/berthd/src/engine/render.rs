//! Containers in Docker's shapes: inspect and the list (also `system df`'s entries).

use berth_api::container::{
    GraphDriver, HostConfig, InspectResponse, RestartPolicy, State, Summary, SummaryHostConfig,
};
use berth_api::Filters;

use super::{Container, Engine, Result};
use crate::util;

/// Docker's default `/dev/shm` size, shown for containers that did not set one.
const DEFAULT_SHM_SIZE: i64 = 64 << 20;

/// The name Berth's runtime serves under: dockerd's default runtime, which clients expect
/// (`HostConfig.Runtime`, `docker info`); the binary stays `berth-runtime`.
pub const DEFAULT_RUNTIME: &str = "runc";

/// `HostConfig` as inspect shows it: dockerd's defaults where the record has none.
fn host_config_view(hc: &HostConfig) -> HostConfig {
    let mut hc = hc.clone();
    hc.port_bindings.get_or_insert_with(Default::default);
    if hc.restart_policy.name.is_empty() {
        hc.restart_policy = RestartPolicy {
            name: "no".into(),
            maximum_retry_count: hc.restart_policy.maximum_retry_count,
        };
    }
    hc.dns.get_or_insert_with(Vec::new);
    if hc.ipc_mode.is_empty() {
        hc.ipc_mode = "private".into();
    }
    if hc.shm_size == 0 {
        hc.shm_size = DEFAULT_SHM_SIZE;
    }
    if hc.runtime.is_empty() {
        hc.runtime = DEFAULT_RUNTIME.into();
    }
    hc
}

/// Docker's status text (`Up 5 seconds`, `Exited (0) 2 minutes ago`).
fn status_text(c: &Container) -> String {
    let now = util::now_secs();
    let health = match c.state.health.as_ref().map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)",
        Some("healthy") => " (healthy)",
        Some("unhealthy") => " (unhealthy)",
        _ => "",
    };
    let since = |t: &str| util::human_duration(now - util::unix_secs(t));
    match c.state.status.as_str() {
        "running" => format!("Up {}{health}", since(&c.state.started_at)),
        "paused" => format!("Up {} (Paused)", since(&c.state.started_at)),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            c.state.exit_code,
            since(&c.state.finished_at)
        ),
        "exited" => format!(
            "Exited ({}) {} ago",
            c.state.exit_code,
            since(&c.state.finished_at)
        ),
        _ => "Created".into(),
    }
}

/// The state as dockerd shows it: a container its restart policy is about to start again
/// counts as running (`Running` and `Restarting`, no pid).
fn state_view(s: &State) -> State {
    let mut s = s.clone();
    if s.restarting {
        s.running = true;
        s.pid = 0;
    }
    s
}

impl Engine {
    /// `GET /containers/{id}/json`.
    pub fn inspect(&self, name_or_id: &str) -> Result<InspectResponse> {
        let c = self.get(name_or_id)?;
        let dd = self.data_dir(&c.id);
        let path = |name: &str| dd.join(name).display().to_string();
        let exec_ids = self.execs.of_container(&c.id);
        Ok(InspectResponse {
            id: c.id.clone(),
            created: c.created.clone(),
            path: c.path.clone(),
            args: c.args.clone(),
            state: state_view(&c.state),
            image: c.image.clone(),
            resolv_conf_path: path("resolv.conf"),
            hostname_path: path("hostname"),
            hosts_path: path("hosts"),
            log_path: c.log_path.clone(),
            name: c.name.clone(),
            restart_count: c.restart_count,
            driver: c.driver.clone(),
            platform: "linux".into(),
            mount_label: String::new(),
            process_label: String::new(),
            app_armor_profile: String::new(),
            exec_ids: (!exec_ids.is_empty()).then_some(exec_ids),
            host_config: HostConfig {
                links: self.links_view(&c),
                ..host_config_view(&c.host_config)
            },
            graph_driver: GraphDriver {
                name: c.driver.clone(),
                data: [(
                    "MergedDir".to_string(),
                    self.rootfs(&c.id).display().to_string(),
                )]
                .into(),
            },
            mounts: self.mounts.inspect(&c.id),
            network_settings: self.net.settings(&c),
            config: c.config,
        })
    }

    /// A container as `GET /containers/json` lists it.
    pub fn summary(&self, c: &Container) -> Summary {
        let (ports, network_settings) = self.net.list_fields(c);
        Summary {
            id: c.id.clone(),
            names: vec![c.name.clone()],
            image: c.config.image.clone(),
            image_id: c.image.clone(),
            command: c.command_line(),
            created: util::unix_secs(&c.created),
            ports,
            size_rw: None,
            size_root_fs: None,
            labels: c.config.labels.clone(),
            state: c.state.status.clone(),
            status: status_text(c),
            host_config: SummaryHostConfig {
                network_mode: c.network_mode().to_string(),
            },
            network_settings,
            mounts: self.mounts.inspect(&c.id),
        }
    }

    /// `GET /containers/json`: running containers (all with `all`), newest first, at most
    /// `limit`, filtered by Docker's `id`, `name`, `status`, `label`, `exited`.
    pub fn summaries(&self, all: bool, limit: Option<usize>, filters: &Filters) -> Vec<Summary> {
        let mut list = self.list();
        // Other containers' links name a container too (`/<parent>/<alias>`).
        let linked: Vec<Container> = list
            .iter()
            .filter(|c| !c.links.is_empty())
            .cloned()
            .collect();
        if let Some(n) = limit {
            list.truncate(n);
        }
        let has_status = filters.has("status");
        list.iter()
            .filter(|c| all || c.state.running || c.state.restarting || has_status)
            .filter(|c| {
                filters.0.iter().all(|(k, v)| match k.as_str() {
                    "id" => c.id.starts_with(v.as_str()),
                    "name" => c.short_name().contains(v.trim_start_matches('/')),
                    "status" => &c.state.status == v,
                    "label" => c.matches_label(v),
                    "exited" => !c.state.running && c.state.exit_code.to_string() == *v,
                    _ => true,
                })
            })
            .map(|c| {
                let mut s = self.summary(c);
                s.names.extend(self.link_names(&linked, &c.id));
                s
            })
            .collect()
    }
}
