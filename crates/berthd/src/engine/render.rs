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
    /// The directory of a container's changes (its writable layer), when the snapshotter has
    /// one.
    pub(crate) fn container_upper(&self, id: &str) -> Option<std::path::PathBuf> {
        self.images
            .snapshotter()
            .ok()
            .and_then(|sn| sn.container_upper(id))
    }

    /// The size of a container's writable layer (Docker's `SizeRw`); 0 without one.
    pub(crate) fn size_rw(&self, id: &str) -> i64 {
        self.container_upper(id)
            .map(|p| crate::volumes::dir_size(&p))
            .unwrap_or(0) as i64
    }

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
                data: self.graph_driver_data(&c.id),
            },
            mounts: self.mounts.inspect(&c.id),
            network_settings: self.net.settings(&c),
            config: c.config,
        })
    }

    /// `GraphDriver.Data` of a container: where its file system is mounted and, with overlay,
    /// its image directories (`LowerDir`, top first), changes and work directory.
    fn graph_driver_data(&self, id: &str) -> std::collections::BTreeMap<String, String> {
        let show = |p: &std::path::Path| p.display().to_string();
        let mut data =
            std::collections::BTreeMap::from([("MergedDir".to_string(), show(&self.rootfs(id)))]);
        let Ok(sn) = self.images.snapshotter() else {
            return data;
        };
        if let (Some(upper), Some(work)) = (sn.container_upper(id), sn.container_work(id)) {
            let lowers: Vec<String> = sn
                .container_lowers(id)
                .unwrap_or_default()
                .iter()
                .map(|p| show(p))
                .collect();
            if !lowers.is_empty() {
                data.insert("LowerDir".into(), lowers.join(":"));
            }
            data.insert("UpperDir".into(), show(&upper));
            data.insert("WorkDir".into(), show(&work));
        }
        data
    }

    /// A container as `GET /containers/json` lists it.
    pub fn summary(&self, c: &Container) -> Summary {
        let (ports, network_settings) = self.net.list_fields(c);
        // dockerd's `refreshImage`: the image's ID once the name given at create time no
        // longer resolves to the container's image.
        let image = if c.config.image == c.image
            || self
                .images
                .resolve(&c.config.image)
                .is_ok_and(|r| r.image.id.to_string() == c.image)
        {
            c.config.image.clone()
        } else {
            c.image.clone()
        };
        Summary {
            id: c.id.clone(),
            names: vec![c.name.clone()],
            image,
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
                annotations: c.host_config.annotations.clone(),
            },
            network_settings,
            mounts: self.mounts.inspect(&c.id),
        }
    }

    /// `GET /containers/json` as dockerd's `Containers`: running containers (all with `all`,
    /// a `status` filter or a `limit`), newest first, at most `limit`; values of one filter
    /// key are alternatives, keys all apply (`id`/`name` as regular expressions, `before`/
    /// `since` exclusive); unknown keys and bad values are errors. `size` adds `SizeRw` and
    /// `SizeRootFs`.
    pub fn summaries(
        &self,
        all: bool,
        limit: Option<usize>,
        size: bool,
        filters: &Filters,
    ) -> Result<Vec<Summary>> {
        let list = self.list();
        // Other containers' links name a container too (`/<parent>/<alias>`).
        let linked: Vec<Container> = list
            .iter()
            .filter(|c| !c.links.is_empty())
            .cloned()
            .collect();
        let f = PsFilter::new(self, &list, filters)?;
        let all = all || limit.is_some() || filters.has("status");
        let mut out = Vec::new();
        let mut before = f.before.clone();
        for c in &list {
            if let Some(b) = &before {
                if *b == c.id {
                    before = None;
                }
                continue;
            }
            if f.since.as_deref() == Some(c.id.as_str()) {
                break;
            }
            if !(all || c.state.running || c.state.restarting) {
                continue;
            }
            if limit.is_some_and(|n| out.len() >= n) {
                break;
            }
            let mut s = self.summary(c);
            if !f.matches(c, &s) {
                continue;
            }
            s.names.extend(self.link_names(&linked, &c.id));
            if size {
                let rw = self.size_rw(&c.id);
                let image = self
                    .images
                    .resolve(&c.image)
                    .map(|r| r.image.size() as i64)
                    .unwrap_or(0);
                s.size_rw = Some(rw);
                s.size_root_fs = Some(rw + image);
            }
            out.push(s);
        }
        Ok(out)
    }
}

/// The filter keys of `GET /containers/json` (dockerd's `acceptedPsFilterTags`).
const PS_FILTERS: &[&str] = &[
    "ancestor",
    "before",
    "exited",
    "id",
    "isolation",
    "label",
    "name",
    "status",
    "health",
    "since",
    "volume",
    "network",
    "is-task",
    "publish",
    "expose",
];

const STATES: &[&str] = &[
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
];
const HEALTHS: &[&str] = &["none", "starting", "healthy", "unhealthy"];

/// The filters of one container listing, checked and resolved (dockerd's `foldFilter`).
struct PsFilter<'a> {
    filters: &'a Filters,
    names: Vec<regex::Regex>,
    ids: Vec<regex::Regex>,
    exited: Vec<i64>,
    /// Image IDs of the `ancestor` filter (`None`: no such filter).
    ancestors: Option<Vec<String>>,
    before: Option<String>,
    since: Option<String>,
    is_task: Option<bool>,
    publish: Vec<(u16, String)>,
    expose: Vec<(u16, String)>,
}

fn bad(msg: String) -> super::EngineError {
    super::EngineError::BadRequest(msg)
}

/// `<port>[-<end>][/<proto>]` of the `publish` and `expose` filters.
fn port_filter(key: &str, v: &str, into: &mut Vec<(u16, String)>) -> Result<()> {
    if v.contains(':') {
        return Err(bad(format!(
            "filter for '{key}' should not contain ':': {v}"
        )));
    }
    let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
    let proto = if proto.is_empty() { "tcp" } else { proto };
    let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
    let parse = |p: &str| {
        p.parse::<u16>().map_err(|_| {
            bad(format!(
                "error while looking up for {key} {v}: invalid port range: {ports}"
            ))
        })
    };
    let (a, b) = (parse(a)?, parse(b)?);
    for p in a..=b {
        into.push((p, proto.to_lowercase()));
    }
    Ok(())
}

/// A Go regular expression's matches (dockerd's `filters.Match`: an exact match or the
/// expression found anywhere); an invalid expression matches only exactly.
fn pattern(v: &str) -> regex::Regex {
    regex::Regex::new(v).unwrap_or_else(|_| {
        regex::Regex::new(&format!("^{}$", regex::escape(v))).expect("an escaped pattern")
    })
}

impl<'a> PsFilter<'a> {
    fn new(engine: &Engine, list: &[Container], filters: &'a Filters) -> Result<Self> {
        for (k, _) in &filters.0 {
            if !PS_FILTERS.contains(&k.as_str()) {
                return Err(bad(format!("invalid filter '{k}'")));
            }
        }
        let mut exited = Vec::new();
        for v in filters.get("exited") {
            exited.push(v.parse::<i64>().map_err(|_| {
                bad(format!(
                    "invalid filter 'exited={v}': strconv.Atoi: parsing {v:?}: invalid syntax"
                ))
            })?);
        }
        for v in filters.get("status") {
            if !STATES.contains(&v) {
                return Err(bad(format!(
                    "invalid filter 'status={v}': invalid value for state ({v}): must be one of {}",
                    STATES.join(", ")
                )));
            }
        }
        for v in filters.get("health") {
            if !HEALTHS.contains(&v) {
                return Err(bad(format!(
                    "invalid filter 'health={v}': invalid value for health ({v}): must be one of {}",
                    HEALTHS.join(", ")
                )));
            }
        }
        let is_task = match filters.get("is-task").collect::<Vec<_>>().as_slice() {
            [] => None,
            [v] if v.eq_ignore_ascii_case("true") || *v == "1" => Some(true),
            [v] if v.eq_ignore_ascii_case("false") || *v == "0" => Some(false),
            _ => return Err(bad("invalid filter 'is-task'".to_string())),
        };
        // `before`/`since` name a container: by name, full ID or ID prefix.
        let find = |v: &str| -> Result<String> {
            let name = v.trim_start_matches('/');
            list.iter()
                .find(|c| c.id == v || c.short_name() == name)
                .or_else(|| {
                    let m: Vec<&Container> = list.iter().filter(|c| c.id.starts_with(v)).collect();
                    (m.len() == 1).then(|| m[0])
                })
                .map(|c| c.id.clone())
                .ok_or_else(|| super::EngineError::NotFound(v.to_string()))
        };
        let mut before = None;
        for v in filters.get("before") {
            before = Some(find(v)?);
        }
        let mut since = None;
        for v in filters.get("since") {
            since = Some(find(v)?);
        }
        let ancestors = filters.has("ancestor").then(|| {
            filters
                .get("ancestor")
                .flat_map(|a| match engine.images.resolve(a) {
                    // The image and the images built on it (dockerd's `Children`).
                    Ok(r) => engine
                        .images
                        .with_descendants(&r.image.id)
                        .unwrap_or_else(|_| vec![r.image.id]),
                    Err(_) => {
                        tracing::warn!("Error while looking up for image {a}");
                        Vec::new()
                    }
                })
                .map(|id| id.to_string())
                .collect()
        });
        let mut publish = Vec::new();
        for v in filters.get("publish") {
            port_filter("publish", v, &mut publish)?;
        }
        let mut expose = Vec::new();
        for v in filters.get("expose") {
            port_filter("expose", v, &mut expose)?;
        }
        Ok(PsFilter {
            filters,
            names: filters.get("name").map(pattern).collect(),
            ids: filters.get("id").map(pattern).collect(),
            exited,
            ancestors,
            before,
            since,
            is_task,
            publish,
            expose,
        })
    }

    fn matches(&self, c: &Container, s: &Summary) -> bool {
        let f = self.filters;
        let any = |key: &str, ok: &dyn Fn(&str) -> bool| !f.has(key) || f.get(key).any(ok);
        let name = c.name.as_str();
        if !self.names.is_empty()
            && !self
                .names
                .iter()
                .any(|r| r.is_match(name) || r.is_match(name.trim_start_matches('/')))
        {
            return false;
        }
        if !self.ids.is_empty() && !self.ids.iter().any(|r| r.is_match(&c.id)) {
            return false;
        }
        if self.is_task == Some(true) {
            return false;
        }
        if !f.get("label").all(|v| c.matches_label(v)) {
            return false;
        }
        let exited = c.state.status == "exited" && self.exited.contains(&c.state.exit_code);
        if !self.exited.is_empty() && !exited {
            return false;
        }
        if !any("status", &|v| v == c.state.status) {
            return false;
        }
        let health = c
            .state
            .health
            .as_ref()
            .map(|h| h.status.as_str())
            .unwrap_or("none");
        if !any("health", &|v| v == health) {
            return false;
        }
        if !any("volume", &|v| {
            s.mounts
                .iter()
                .any(|m| m.destination == v || m.name == v || (m.name.is_empty() && m.source == v))
        }) {
            return false;
        }
        if let Some(ids) = &self.ancestors {
            if !ids.contains(&c.image) {
                return false;
            }
        }
        if !any("network", &|v| {
            s.network_settings.networks.iter().any(|(n, ep)| {
                n == v || (!ep.network_id.is_empty() && ep.network_id.starts_with(v))
            })
        }) {
            return false;
        }
        if !self.publish.is_empty() || !self.expose.is_empty() {
            let hit = s.ports.iter().any(|p| {
                p.public_port
                    .is_some_and(|pp| self.publish.contains(&(pp, p.kind.clone())))
                    || self.expose.contains(&(p.private_port, p.kind.clone()))
            });
            if !hit {
                return false;
            }
        }
        true
    }
}
