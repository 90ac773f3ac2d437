//! Networks: Docker's network API, container attachment, published ports, embedded DNS.
//!
//! State (`<data-root>/network/state.json`, written atomically after every change) holds the
//! networks and, per container, its endpoints (address, MAC, aliases — kept from create to
//! removal, so an address is never handed out twice and is released when the container is
//! removed or disconnected) and the host ports it has published while it runs.
//!
//! Per running container the daemon holds userland proxies of its published ports and an
//! embedded DNS server inside its namespace; both are rebuilt after a daemon restart
//! ([`Manager::adopt`]). Bridges are created or reused at start, and the firewall is always
//! written whole from the state, so a crash leaves nothing that the next start does not reuse
//! or replace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use berth_network::dns::{self, Answer, DnsServer};
use berth_network::etc::{self, DnsOverrides, ResolvConf};
use berth_network::firewall::{self, BridgeRules, Firewall, PortRule, Proto, Ruleset};
use berth_network::ipam::{self, Pool, Pool6};
use berth_network::netlink::{self, Netns, VethSpec};
use berth_network::proxy::{self, Proxy};
use berth_network::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{ApiError, AppState};
use crate::engine::{Container, EngineError};
use crate::util;

/// Daemon options for networking (`berthd --bridge --bip --fixed-cidr --firewall-backend`).
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// The default bridge's interface (`berth0`).
    pub bridge: String,
    /// The default bridge's address and prefix (`--bip`, like dockerd's); chosen when absent.
    pub bip: Option<Ipv4Net>,
    /// Where default-bridge containers get addresses (`--fixed-cidr`).
    pub fixed_cidr: Option<Ipv4Net>,
    /// `nftables`, `iptables` or `auto`.
    pub firewall: String,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            bridge: "berth0".into(),
            bip: None,
            fixed_cidr: None,
            firewall: "auto".into(),
        }
    }
}

impl NetOptions {
    /// Berth's nftables table / iptables chain prefix: `berth` for the default bridge name,
    /// else derived from it (so daemons with different bridges never share rules).
    pub fn table(&self) -> String {
        if self.bridge == "berth0" {
            "berth".into()
        } else {
            format!(
                "berth_{}",
                self.bridge
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub created: String,
    #[serde(default)]
    pub bridge: String,
    #[serde(default)]
    pub pool: Option<Pool>,
    /// The IPv6 pool of a network created with `--ipv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool6: Option<Pool6>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Predefined (`bridge`, `host`, `none`).
    #[serde(default)]
    pub builtin: bool,
}

impl Network {
    /// Embedded DNS (user-defined bridge networks only, as Docker).
    fn dns(&self) -> bool {
        !self.builtin && self.driver == "bridge"
    }
    /// The bridge's IPv6 gateway address with the subnet's prefix.
    fn gw6(&self) -> Option<Ipv6Net> {
        self.pool6
            .as_ref()
            .map(|p| Ipv6Net::new(p.gateway, p.subnet.prefix))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub endpoint_id: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `IPAMConfig.IPv4Address` as requested.
    #[serde(default)]
    pub requested_ip: Option<Ipv4Addr>,
    /// The IPv6 address on networks with `--ipv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// `IPAMConfig.IPv6Address` as requested (`--ip6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_ip6: Option<Ipv6Addr>,
    pub ifname: String,
    pub host_veth: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortMap {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// One container's networking.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CNet {
    pub name: String,
    /// The first is the primary network (default route, published ports).
    pub endpoints: Vec<Endpoint>,
    /// Published while running.
    #[serde(default)]
    pub ports: Vec<PortMap>,
    /// Servers the embedded DNS forwards to.
    #[serde(default)]
    pub upstream: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NetState {
    networks: BTreeMap<String, Network>,
    containers: BTreeMap<String, CNet>,
}

/// What a running container holds in the daemon; dropping it stops the proxies and DNS.
struct Running {
    #[allow(dead_code)] // held for its Drop
    proxies: Vec<Proxy>,
    dns: Option<DnsServer>,
    /// Indexes of the host ends of the veths created by this daemon (`None` when adopted
    /// after a restart: the names are used then).
    links: Option<Vec<u32>>,
}

/// Networking of the daemon.
pub struct Manager {
    opts: NetOptions,
    path: PathBuf,
    fw: Option<Box<dyn Firewall>>,
    state: Mutex<NetState>,
    running: Mutex<HashMap<String, Running>>,
    host_resolv: ResolvConf,
    me: Weak<Manager>,
    /// Durability of [`Manager::save_soon`] writes, off the request path.
    flusher: Arc<Flusher>,
    /// The bridges `forward_accept` was last run for: it lists the host's `FORWARD` chain
    /// (an `iptables` process), so it runs when Berth's bridges change (and at start), not
    /// for every published port.
    accept_for: Mutex<Option<(Vec<String>, Vec<String>)>>,
}

/// Makes the state file durable (fsync of the file and its directory) on a thread of its own:
/// the container run path writes the state without waiting for the disk (an fsync costs
/// 1–20 ms here), and a burst of writes is made durable once (after a 100 ms pause, at most
/// a second after the first).
struct Flusher {
    dirty: Mutex<bool>,
    cv: Condvar,
}

impl Flusher {
    fn start(path: PathBuf) -> Arc<Flusher> {
        let f = Arc::new(Flusher {
            dirty: Mutex::new(false),
            cv: Condvar::new(),
        });
        let weak = Arc::downgrade(&f);
        let _ = std::thread::Builder::new()
            .name("berth-net-flush".into())
            .spawn(move || loop {
                let Some(f) = weak.upgrade() else { return };
                {
                    let mut d = f.dirty.lock().unwrap();
                    while !*d {
                        d = f.cv.wait(d).unwrap();
                    }
                    // Coalesce a burst (a loop of `run --rm` writes twice per container):
                    // flush once the writes pause for 100 ms, or after at most a second.
                    let start = std::time::Instant::now();
                    while start.elapsed() < std::time::Duration::from_secs(1) {
                        *d = false;
                        d =
                            f.cv.wait_timeout(d, std::time::Duration::from_millis(100))
                                .unwrap()
                                .0;
                        if !*d {
                            break;
                        }
                    }
                    *d = false;
                }
                drop(f);
                let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
                if let Err(e) = sync(&path)
                    .and_then(|_| sync(path.parent().unwrap_or(std::path::Path::new("/"))))
                {
                    tracing::warn!("syncing {}: {e}", path.display());
                }
            });
        f
    }
    fn kick(&self) {
        *self.dirty.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

type NResult<T> = std::result::Result<T, EngineError>;

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}
fn bad(e: impl std::fmt::Display) -> EngineError {
    EngineError::BadRequest(e.to_string())
}

/// What `launch` writes and how the namespace is set up.
pub struct Plan {
    pub hosts: String,
    pub resolv: String,
    /// `container:<x>` mode: join this network namespace.
    pub netns_path: Option<String>,
}

impl Manager {
    /// Loads the state, creates the predefined networks, (re)creates bridges and rewrites the
    /// firewall.
    pub fn open(opts: &NetOptions, data_root: &std::path::Path) -> anyhow::Result<Arc<Manager>> {
        let dir = data_root.join("network");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("state.json");
        let mut st: NetState = if path.exists() {
            util::read_json(&path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
        } else {
            NetState::default()
        };
        let fw: Option<Box<dyn Firewall>> = match opts.firewall.as_str() {
            "nftables" => Some(Box::new(firewall::Nftables::new(opts.table()))),
            "iptables" => Some(Box::new(firewall::Iptables::new(
                opts.table().to_uppercase().replace('_', "-"),
            ))),
            "none" => None,
            _ if firewall::Nftables::available() => {
                Some(Box::new(firewall::Nftables::new(opts.table())))
            }
            _ => Some(Box::new(firewall::Iptables::new(
                opts.table().to_uppercase().replace('_', "-"),
            ))),
        };
        // Predefined networks (stable ids once created).
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if !st.networks.values().any(|n| n.name == name && n.builtin) {
                let id = util::new_id();
                st.networks.insert(
                    id.clone(),
                    Network {
                        id,
                        name: name.into(),
                        driver: driver.into(),
                        created: util::now_rfc3339_nano(),
                        bridge: String::new(),
                        pool: None,
                        pool6: None,
                        internal: false,
                        attachable: false,
                        labels: BTreeMap::new(),
                        options: BTreeMap::new(),
                        builtin: true,
                    },
                );
            }
        }
        // The default bridge: its pool from --bip, the state, or a free default subnet.
        let def_id = st
            .networks
            .values()
            .find(|n| n.name == "bridge" && n.builtin)
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let pool = match opts.bip {
            Some(bip) => Pool::new(bip, Some(bip.addr), opts.fixed_cidr)
                .map_err(|e| anyhow::anyhow!("--bip: {e}"))?,
            None => match st.networks[&def_id].pool.clone() {
                Some(p) if opts.fixed_cidr.is_none() || p.ip_range == opts.fixed_cidr => p,
                // An existing bridge keeps its address (never a second one).
                _ if matches!(netlink::link_ipv4(&opts.bridge), Ok(Some(_))) => {
                    let a = netlink::link_ipv4(&opts.bridge)?
                        .unwrap_or(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0));
                    Pool::new(a.network_net(), Some(a.addr), opts.fixed_cidr)?
                }
                _ => {
                    let mut taken = host_taken();
                    taken.extend(
                        st.networks
                            .values()
                            .filter(|n| n.id != def_id)
                            .filter_map(|n| n.pool.as_ref().map(|p| p.subnet)),
                    );
                    let subnet = ipam::pick_subnet(&ipam::default_candidates(), &taken)?;
                    Pool::new(subnet, None, opts.fixed_cidr)?
                }
            },
        };
        if let Some(n) = st.networks.get_mut(&def_id) {
            n.pool = Some(pool);
            n.bridge = opts.bridge.clone();
            n.options = default_bridge_options(&opts.bridge);
        }
        for n in st.networks.values().filter(|n| n.driver == "bridge") {
            if let Some(p) = &n.pool {
                netlink::ensure_bridge(&n.bridge, p.gateway, p.subnet.prefix, n.gw6(), None)
                    .map_err(|e| anyhow::anyhow!("network {}: {e}", n.name))?;
            }
        }
        if let Err(e) = firewall::enable_ip_forward() {
            tracing::warn!("enabling IPv4 forwarding: {e}");
        }
        if st.networks.values().any(|n| n.pool6.is_some()) {
            if let Err(e) = firewall::enable_ipv6_forward() {
                tracing::warn!("enabling IPv6 forwarding: {e}");
            }
        }
        let host_resolv =
            ResolvConf::parse(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let path_for_flush = path.clone();
        let m = Arc::new_cyclic(|me| Manager {
            opts: opts.clone(),
            path,
            fw,
            state: Mutex::new(st),
            running: Mutex::new(HashMap::new()),
            host_resolv,
            me: me.clone(),
            flusher: Flusher::start(path_for_flush),
            accept_for: Mutex::new(None),
        });
        {
            let st = m.state.lock().unwrap();
            m.save(&st).map_err(|e| anyhow::anyhow!("{e}"))?;
            m.apply_firewall(&st)
                .map_err(|e| anyhow::anyhow!("firewall: {e}"))?;
        }
        Ok(m)
    }

    fn save(&self, st: &NetState) -> NResult<()> {
        util::write_json_atomic(&self.path, st).map_err(internal)
    }

    /// Writes the state atomically (a new file renamed over the old one, so a daemon crash
    /// leaves the old or the new state) without waiting for the disk; the flusher makes it
    /// durable shortly after. Used for container endpoints (create, removal): after a power
    /// loss a lost endpoint is allocated again at start ([`Manager::attach`]) and a lost
    /// removal is dropped by [`Manager::adopt`].
    fn save_soon(&self, st: &NetState) -> NResult<()> {
        let bytes = serde_json::to_vec_pretty(st).map_err(internal)?;
        let tmp = self
            .path
            .with_file_name(format!(".state.json.tmp-{}", util::new_id()));
        let res = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(internal(format!("writing {}: {e}", self.path.display())));
        }
        self.flusher.kick();
        Ok(())
    }

    fn ruleset(st: &NetState) -> Ruleset {
        let mut r = Ruleset::default();
        for n in st.networks.values().filter(|n| n.driver == "bridge") {
            if let Some(p) = &n.pool {
                r.bridges.push(BridgeRules {
                    bridge: n.bridge.clone(),
                    subnet: p.subnet,
                    subnet6: n.pool6.as_ref().map(|p| p.subnet),
                    internal: n.internal,
                    masquerade: n
                        .options
                        .get("com.docker.network.bridge.enable_ip_masquerade")
                        .map(|v| v != "false")
                        .unwrap_or(true),
                });
            }
        }
        for c in st.containers.values() {
            let Some(ep) = c.endpoints.first() else {
                continue;
            };
            let Some(n) = st.networks.get(&ep.network) else {
                continue;
            };
            for p in &c.ports {
                r.ports.push(PortRule {
                    proto: if p.proto == "udp" {
                        Proto::Udp
                    } else {
                        Proto::Tcp
                    },
                    host_ip: p.host_ip.parse().ok(),
                    host_port: p.host_port,
                    container_ip: target_ip(ep, &p.host_ip),
                    container_port: p.container_port,
                    bridge: n.bridge.clone(),
                });
            }
        }
        r
    }

    fn apply_firewall(&self, st: &NetState) -> NResult<()> {
        let Some(fw) = &self.fw else {
            return Ok(());
        };
        let rules = Self::ruleset(st);
        fw.apply(&rules)
            .map_err(|e| internal(format!("{} rules: {e}", fw.name())))?;
        // Where the host's FORWARD policy drops: narrow accepts for our bridges only.
        let bridges: Vec<String> = rules
            .bridges
            .iter()
            .filter(|b| !b.internal)
            .map(|b| b.bridge.clone())
            .collect();
        let bridges6: Vec<String> = rules
            .bridges
            .iter()
            .filter(|b| !b.internal && b.subnet6.is_some())
            .map(|b| b.bridge.clone())
            .collect();
        let key = (bridges, bridges6);
        let mut last = self.accept_for.lock().unwrap();
        if last.as_ref() == Some(&key) {
            return Ok(());
        }
        let prefix = self.opts.table().to_uppercase().replace('_', "-");
        let v4 = firewall::forward_accept(&prefix, &key.0);
        // (IPv6: at start — a stale chain of an earlier run goes — and while or after a
        // network has IPv6.)
        let v6 = if key.1.is_empty() && last.as_ref().is_some_and(|l| l.1.is_empty()) {
            Ok(false)
        } else {
            firewall::forward_accept6(&prefix, &key.1)
        };
        match (v4, v6) {
            (Ok(_), Ok(_)) => *last = Some(key),
            (Err(e), _) | (_, Err(e)) => tracing::warn!("forward accept rules: {e}"),
        }
        Ok(())
    }

    /// Looks a network up by full id, name, or id prefix.
    fn find<'a>(st: &'a NetState, key: &str) -> NResult<&'a Network> {
        if let Some(n) = st.networks.get(key) {
            return Ok(n);
        }
        if let Some(n) = st.networks.values().find(|n| n.name == key) {
            return Ok(n);
        }
        let hits: Vec<&Network> = st
            .networks
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(EngineError::Missing(format!("network {key} not found"))),
            _ => Err(bad(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                hits.len()
            ))),
        }
    }

    fn used_ips(st: &NetState, net: &str) -> BTreeSet<Ipv4Addr> {
        st.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.network == net)
            .map(|e| e.ip)
            .collect()
    }

    fn used_ips6(st: &NetState, net: &str) -> BTreeSet<Ipv6Addr> {
        st.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(|e| e.network == net)
            .filter_map(|e| e.ip6)
            .collect()
    }

    /// Creates an endpoint of `cid` on `net` (address allocated), without persisting.
    fn new_endpoint(
        st: &NetState,
        cid: &str,
        net: &Network,
        cfg: &Value,
        ifname: String,
        mac: Option<String>,
    ) -> NResult<Endpoint> {
        if net.driver != "bridge" {
            return Err(bad(format!(
                "container cannot be connected to network {} (driver {})",
                net.name, net.driver
            )));
        }
        let pool = net
            .pool
            .as_ref()
            .ok_or_else(|| internal("network without pool"))?;
        let requested: Option<Ipv4Addr> = match cfg["IPAMConfig"]["IPv4Address"].as_str() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| bad(format!("invalid IPv4 address: {s}")))?,
            ),
            _ => None,
        };
        if requested.is_some() && net.builtin {
            return Err(bad(
                "user specified IP address is supported on user defined networks only",
            ));
        }
        let ip = pool
            .allocate(&Self::used_ips(st, &net.id), requested)
            .map_err(|e| match e {
                ipam::IpamError::InUse(_) => EngineError::Conflict(e.to_string()),
                _ => bad(e),
            })?;
        let requested6: Option<Ipv6Addr> = match cfg["IPAMConfig"]["IPv6Address"].as_str() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| bad(format!("invalid IPv6 address: {s}")))?,
            ),
            _ => None,
        };
        let ip6 = match (&net.pool6, requested6) {
            (Some(p6), r) => Some(p6.allocate(&Self::used_ips6(st, &net.id), r).map_err(
                |e| match e {
                    ipam::IpamError::InUse6(_) => EngineError::Conflict(e.to_string()),
                    _ => bad(e),
                },
            )?),
            (None, Some(_)) => {
                return Err(bad(format!(
                    "invalid IPv6 address: network {} has no IPv6 (created without --ipv6)",
                    net.name
                )))
            }
            (None, None) => None,
        };
        let mac = match mac
            .or_else(|| cfg["MacAddress"].as_str().map(str::to_string))
            .filter(|m| !m.is_empty())
        {
            Some(m) => {
                let parsed =
                    etc::parse_mac(&m).ok_or_else(|| bad(format!("invalid MAC address: {m}")))?;
                etc::mac_string(&parsed)
            }
            None => etc::mac_string(&etc::mac_for(ip)),
        };
        let mut aliases: Vec<String> = cfg["Aliases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        aliases.dedup();
        if net.builtin && !aliases.is_empty() {
            return Err(bad(
                "network-scoped alias is supported only for containers in user defined networks",
            ));
        }
        Ok(Endpoint {
            network: net.id.clone(),
            endpoint_id: util::new_id(),
            ip,
            mac,
            aliases,
            requested_ip: requested,
            ip6,
            requested_ip6: requested6,
            host_veth: format!("vb{}{}", &cid[..6], &net.id[..5]),
            ifname,
        })
    }

    /// Container create: validates the network settings and creates the endpoints.
    pub fn on_create(&self, c: &Container, body: &Value) -> NResult<()> {
        let hc = &c.host_config;
        parse_port_bindings(hc)?;
        for d in hc["Dns"].as_array().into_iter().flatten() {
            let s = d.as_str().unwrap_or("");
            s.parse::<IpAddr>()
                .map_err(|_| bad(format!("invalid DNS server address: {s}")))?;
        }
        self.extra_hosts(hc)?;
        let mode = c.network_mode();
        let eps = &body["NetworkingConfig"]["EndpointsConfig"];
        let mut st = self.state.lock().unwrap();
        let mut wanted: Vec<(String, Value)> = Vec::new();
        match mode.as_str() {
            "host" | "none" => {
                if eps
                    .as_object()
                    .is_some_and(|o| o.keys().any(|k| k != &mode))
                {
                    return Err(bad(
                        "container sharing network namespace with another container or host cannot be connected to any other network",
                    ));
                }
            }
            m if m.starts_with("container:") => {
                if !c.host_config["PortBindings"]
                    .as_object()
                    .is_none_or(|o| o.is_empty())
                    || c.host_config["PublishAllPorts"].as_bool().unwrap_or(false)
                {
                    return Err(bad(
                        "conflicting options: port publishing and the container type network mode",
                    ));
                }
            }
            m => {
                let key = if m == "default" { "bridge" } else { m };
                // A 404 here would make clients try to pull the image.
                let net = Self::find(&st, key).map_err(|e| match e {
                    EngineError::Missing(m) => EngineError::BadRequest(m),
                    e => e,
                })?;
                let cfg = eps
                    .get(m)
                    .or_else(|| eps.get(&net.name))
                    .or_else(|| eps.get(&net.id))
                    .cloned()
                    .unwrap_or(Value::Null);
                wanted.push((net.id.clone(), cfg));
                if let Some(o) = eps.as_object() {
                    for (k, v) in o {
                        let k = if k == "default" { "bridge" } else { k.as_str() };
                        let n = Self::find(&st, k)?;
                        if !wanted.iter().any(|(id, _)| id == &n.id) {
                            wanted.push((n.id.clone(), v.clone()));
                        }
                    }
                }
            }
        }
        if wanted.is_empty() {
            // `none`, `host`, `container:`: no endpoint, nothing to record (or to sync to disk).
            return Ok(());
        }
        let mut cn = CNet {
            name: c.name.trim_start_matches('/').to_string(),
            ..CNet::default()
        };
        let top_mac = body["MacAddress"].as_str().map(str::to_string);
        for (i, (nid, cfg)) in wanted.iter().enumerate() {
            let net = st.networks[nid].clone();
            let mac = if i == 0 { top_mac.clone() } else { None };
            let ep = Self::new_endpoint(&st, &c.id, &net, cfg, format!("eth{i}"), mac)?;
            // Reserve within this create too.
            st.containers
                .entry(c.id.clone())
                .or_default()
                .endpoints
                .push(ep.clone());
            cn.endpoints.push(ep);
        }
        st.containers.insert(c.id.clone(), cn);
        self.save_soon(&st)
    }

    fn extra_hosts(&self, hc: &Value) -> NResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for h in hc["ExtraHosts"].as_array().into_iter().flatten() {
            let s = h.as_str().unwrap_or("");
            let (name, ip) = s
                .split_once('=')
                .or_else(|| s.split_once(':'))
                .ok_or_else(|| bad(format!("invalid extra host: {s}")))?;
            let ip = if ip == "host-gateway" {
                self.default_gateway()
                    .map(|g| g.to_string())
                    .ok_or_else(|| bad("host-gateway: the default bridge has no gateway"))?
            } else {
                let t = ip.trim_start_matches('[').trim_end_matches(']');
                t.parse::<IpAddr>()
                    .map_err(|_| bad(format!("invalid IP address in add-host: {ip:?}")))?;
                t.to_string()
            };
            out.push((name.to_string(), ip));
        }
        Ok(out)
    }

    fn default_gateway(&self) -> Option<Ipv4Addr> {
        let st = self.state.lock().unwrap();
        st.networks
            .values()
            .find(|n| n.builtin && n.name == "bridge")
            .and_then(|n| n.pool.as_ref().map(|p| p.gateway))
    }

    /// `launch`: the hosts and resolv.conf bodies and the namespace to join.
    /// `other` resolves `container:<x>` to (id, pid) of a running container.
    pub fn prepare(
        &self,
        c: &Container,
        hostname: &str,
        other: &dyn Fn(&str) -> Option<(String, i64)>,
    ) -> NResult<Plan> {
        let mode = c.network_mode();
        let hc = &c.host_config;
        let strs = |k: &str| -> Vec<String> {
            hc[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let overrides = DnsOverrides {
            servers: strs("Dns").iter().filter_map(|s| s.parse().ok()).collect(),
            search: strs("DnsSearch"),
            options: strs("DnsOptions"),
        };
        let extra = self.extra_hosts(hc)?;
        if let Some(x) = mode.strip_prefix("container:") {
            let (oid, pid) = other(x).ok_or_else(|| {
                EngineError::Conflict(format!(
                    "cannot join network namespace of container {x}: it is not running"
                ))
            })?;
            if oid == c.id {
                return Err(bad("cannot join own network namespace"));
            }
            let st = self.state.lock().unwrap();
            let own: Vec<(IpAddr, Vec<String>)> = st
                .containers
                .get(&oid)
                .and_then(|o| o.endpoints.first())
                .map(|e| own_hosts(e, hostname))
                .unwrap_or_default();
            let embedded = st.containers.get(&oid).is_some_and(|o| {
                o.endpoints
                    .iter()
                    .any(|e| st.networks.get(&e.network).is_some_and(|n| n.dns()))
            });
            drop(st);
            let (resolv, _) = etc::resolv_conf(&self.host_resolv, &overrides, embedded);
            return Ok(Plan {
                hosts: etc::hosts(&extra, &own),
                resolv,
                netns_path: Some(format!("/proc/{pid}/ns/net")),
            });
        }
        if mode == "host" {
            let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (n, ip) in &extra {
                hosts += &format!("{ip}\t{n}\n");
            }
            let (resolv, _) = etc::resolv_conf(&self.host_resolv, &overrides, false);
            return Ok(Plan {
                hosts,
                resolv: if overrides.servers.is_empty()
                    && overrides.search.is_empty()
                    && overrides.options.is_empty()
                {
                    std::fs::read_to_string("/etc/resolv.conf").unwrap_or(resolv)
                } else {
                    resolv
                },
                netns_path: None,
            });
        }
        let known = self.state.lock().unwrap().containers.contains_key(&c.id);
        // (`none` containers have no endpoints and are not recorded at all.)
        if !known && mode != "none" {
            // Only after a power loss took the endpoints written at create: allocate again
            // (requested addresses and aliases were in the lost record).
            tracing::warn!(
                "container {}: network endpoints missing from the state, allocating again",
                &c.id[..12]
            );
            self.on_create(c, &json!({}))?;
        }
        let mut st = self.state.lock().unwrap();
        let cn = st.containers.entry(c.id.clone()).or_default();
        let own: Vec<(IpAddr, Vec<String>)> = cn
            .endpoints
            .first()
            .map(|e| own_hosts(e, hostname))
            .unwrap_or_default();
        let eps = cn.endpoints.clone();
        let embedded = eps
            .iter()
            .any(|e| st.networks.get(&e.network).is_some_and(|n| n.dns()));
        let (resolv, upstream) = etc::resolv_conf(&self.host_resolv, &overrides, embedded);
        if let Some(cn) = st.containers.get_mut(&c.id) {
            cn.upstream = upstream;
        }
        let hosts = if mode == "none" {
            etc::hosts(
                &extra,
                &[(IpAddr::V4(Ipv4Addr::LOCALHOST), vec![hostname.to_string()])],
            )
        } else {
            etc::hosts(&extra, &own)
        };
        Ok(Plan {
            hosts,
            resolv,
            netns_path: None,
        })
    }

    /// The daemon's networking options.
    pub fn options(&self) -> &NetOptions {
        &self.opts
    }

    /// Sets the network namespace path of `container:<x>` mode in the OCI config.
    pub fn patch_spec(cfg: &mut Value, plan: &Plan) {
        if let Some(p) = &plan.netns_path {
            if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
                for n in ns.iter_mut() {
                    if n["type"] == "network" {
                        n["path"] = json!(p);
                    }
                }
            }
        }
    }

    /// After `berth-runtime create` (the init waits for `start`): loopback, veths, published
    /// ports, DNS. On error everything done here is undone.
    pub fn attach(&self, c: &Container, pid: i64) -> NResult<()> {
        let mode = c.network_mode();
        if mode == "host" || mode.starts_with("container:") {
            return Ok(());
        }
        let ns = Netns::of_pid(pid as u32);
        let has_endpoints = {
            let st = self.state.lock().unwrap();
            st.containers
                .get(&c.id)
                .is_some_and(|x| !x.endpoints.is_empty())
        };
        if mode == "none" || !has_endpoints {
            // (With endpoints, `lo` comes up in the same pass as the veths.)
            return netlink::loopback_up(&ns)
                .map_err(|e| internal(format!("setting up the loopback interface: {e}")));
        }
        let t0 = std::time::Instant::now();
        let res = self.attach_inner(c, &ns);
        tracing::debug!("network attach of {} took {:?}", &c.id[..12], t0.elapsed());
        if res.is_err() {
            self.on_exit(&c.id);
            self.delete_veths_by_name(&c.id);
        }
        res
    }

    fn attach_inner(&self, c: &Container, ns: &Netns) -> NResult<()> {
        let (eps, nets) = {
            let st = self.state.lock().unwrap();
            let eps = st
                .containers
                .get(&c.id)
                .map(|x| x.endpoints.clone())
                .unwrap_or_default();
            let nets: Vec<Network> = eps
                .iter()
                .filter_map(|e| st.networks.get(&e.network).cloned())
                .collect();
            (eps, nets)
        };
        let specs = eps
            .iter()
            .zip(nets.iter())
            .enumerate()
            .map(|(i, (ep, net))| veth_spec(ep, net, i == 0))
            .collect::<NResult<Vec<_>>>()?;
        let links = netlink::attach_all(ns, &specs).map_err(|e| {
            let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
            internal(format!("attaching to network {}: {e}", names.join(", ")))
        })?;
        // Published ports: bind now (conflicts fail the start), then DNAT. With an IPv6
        // address, a port published on every address is bound on [::] too.
        let mut proxies = Vec::new();
        let mut maps = Vec::new();
        if let Some(primary) = eps.first() {
            for want in wanted_ports(c)? {
                let v6 = want.host_ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6());
                if v6
                    && want
                        .host_ip
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_unspecified())
                    && primary.ip6.is_none()
                {
                    continue;
                }
                let (bound, port) = bind_port(&want)?;
                let target =
                    SocketAddr::new(target_ip(primary, &want.host_ip), want.container_port);
                proxies.push(bound.serve(target).map_err(internal)?);
                maps.push(PortMap {
                    proto: want.proto.clone(),
                    host_ip: want.host_ip.clone(),
                    host_port: port,
                    container_port: want.container_port,
                });
                if let (Some(ip6), true) = (primary.ip6, want.host_ip.is_empty()) {
                    let w6 = WantPort {
                        host_ip: "::".into(),
                        host_port: port.to_string(),
                        ..want.clone()
                    };
                    let (bound, _) = bind_port(&w6)?;
                    let target = SocketAddr::new(IpAddr::V6(ip6), want.container_port);
                    proxies.push(bound.serve(target).map_err(internal)?);
                    maps.push(PortMap {
                        proto: want.proto.clone(),
                        host_ip: "::".into(),
                        host_port: port,
                        container_port: want.container_port,
                    });
                }
            }
        }
        let dns_needed = nets.iter().any(|n| n.dns());
        let dns = if dns_needed {
            Some(self.dns_server(&c.id, ns)?)
        } else {
            None
        };
        if !maps.is_empty() {
            let mut st = self.state.lock().unwrap();
            if let Some(cn) = st.containers.get_mut(&c.id) {
                cn.ports = maps;
            }
            self.save(&st)?;
            self.apply_firewall(&st)?;
        }
        self.running.lock().unwrap().insert(
            c.id.clone(),
            Running {
                proxies,
                dns,
                links: Some(links),
            },
        );
        Ok(())
    }

    fn plug(&self, ns: &Netns, ep: &Endpoint, net: &Network, primary: bool) -> NResult<u32> {
        let spec = veth_spec(ep, net, primary)?;
        netlink::attach_veth(ns, &spec)
            .map_err(|e| internal(format!("attaching to network {}: {e}", net.name)))
    }

    fn dns_server(&self, cid: &str, ns: &Netns) -> NResult<DnsServer> {
        let me = self.me.clone();
        let cid2 = cid.to_string();
        let lookup: dns::Lookup = Arc::new(move |name: &str| match me.upgrade() {
            Some(m) => m.resolve(&cid2, name),
            None => Answer::Forward(vec![]),
        });
        dns::serve_in(ns, lookup)
            .map_err(|e| internal(format!("starting the embedded DNS server: {e}")))
    }

    /// A name as seen from container `cid`.
    fn resolve(&self, cid: &str, name: &str) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let st = self.state.lock().unwrap();
        let Some(me) = st.containers.get(cid) else {
            return Answer::Forward(vec![]);
        };
        let mut ips = Vec::new();
        for ep in &me.endpoints {
            let Some(net) = st.networks.get(&ep.network) else {
                continue;
            };
            if !net.dns() {
                continue;
            }
            for (oid, other) in &st.containers {
                for oe in other.endpoints.iter().filter(|e| e.network == ep.network) {
                    let hit = other.name.to_ascii_lowercase() == name
                        || oe.aliases.iter().any(|a| a.to_ascii_lowercase() == name)
                        || (name.len() == 12 && oid.starts_with(&name))
                        || name
                            == format!(
                                "{}.{}",
                                other.name.to_ascii_lowercase(),
                                net.name.to_ascii_lowercase()
                            );
                    if hit {
                        for ip in std::iter::once(IpAddr::V4(oe.ip)).chain(oe.ip6.map(IpAddr::V6)) {
                            if !ips.contains(&ip) {
                                ips.push(ip);
                            }
                        }
                    }
                }
            }
        }
        if !ips.is_empty() {
            return Answer::Local(ips);
        }
        Answer::Forward(
            me.upstream
                .iter()
                .map(|ip| SocketAddr::new(*ip, 53))
                .collect(),
        )
    }

    /// The container stopped: proxies, DNS, port rules and host veths go away.
    ///
    /// The host ends are deleted on a thread of their own, by the indexes recorded when they
    /// were created: the container's namespace is gone (the kernel removes the pairs with it
    /// anyway), nothing waits on a link deletion (an RTNL round with RCU grace periods), and
    /// an index is never that of a link created since, so a restart that plugs a veth of the
    /// same name at once is never hit. Containers adopted after a daemon restart (indexes
    /// unknown) are cleaned up by name, synchronously.
    pub fn on_exit(&self, cid: &str) {
        let run = self.running.lock().unwrap().remove(cid);
        let Some(run) = run else {
            // Not attached by this daemon (or already torn down): only stale port records.
            self.clear_ports(cid);
            return;
        };
        let links = run.links.clone();
        drop(run);
        self.clear_ports(cid);
        match links {
            Some(idx) if !idx.is_empty() => {
                let spawned = std::thread::Builder::new()
                    .name("berth-net-teardown".into())
                    .spawn(move || {
                        for i in idx {
                            if let Err(e) = netlink::delete_link_index(i) {
                                tracing::warn!("deleting link {i}: {e}");
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("veth teardown thread: {e}");
                }
            }
            Some(_) => {}
            None => self.delete_veths_by_name(cid),
        }
    }

    /// Deletes the host ends of a container's veths by name (synchronously).
    fn delete_veths_by_name(&self, cid: &str) {
        let names: Vec<String> = {
            let st = self.state.lock().unwrap();
            st.containers
                .get(cid)
                .map(|cn| cn.endpoints.iter().map(|e| e.host_veth.clone()).collect())
                .unwrap_or_default()
        };
        for n in names {
            if let Err(e) = netlink::delete_link(&n) {
                tracing::warn!("deleting {n}: {e}");
            }
        }
    }

    /// Forgets the published ports of a stopped container (state and rules).
    fn clear_ports(&self, cid: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(cn) = st.containers.get_mut(cid) else {
            return;
        };
        if cn.ports.is_empty() {
            return;
        }
        cn.ports.clear();
        if let Err(e) = self.save(&st) {
            tracing::warn!("saving network state: {e}");
        }
        if let Err(e) = self.apply_firewall(&st) {
            tracing::warn!("{e}");
        }
    }

    /// The container was removed: its addresses are released.
    pub fn on_remove(&self, cid: &str) {
        self.on_exit(cid);
        let mut st = self.state.lock().unwrap();
        // Containers without endpoints were never saved (see `on_create`).
        if st
            .containers
            .remove(cid)
            .is_some_and(|cn| !cn.endpoints.is_empty())
        {
            if let Err(e) = self.save_soon(&st) {
                tracing::warn!("saving network state: {e}");
            }
        }
    }

    /// Daemon start: forget endpoints of containers that no longer exist, clear ports of
    /// stopped ones, and re-adopt running ones (proxies on the same host ports, DNS servers).
    pub fn adopt(&self, containers: &[Container]) {
        let known: HashMap<&str, &Container> =
            containers.iter().map(|c| (c.id.as_str(), c)).collect();
        let running: Vec<(String, i64, Vec<PortMap>, Vec<Endpoint>)> = {
            let mut st = self.state.lock().unwrap();
            st.containers
                .retain(|id, _| known.contains_key(id.as_str()));
            for (id, cn) in st.containers.iter_mut() {
                if !known[id.as_str()].state.running {
                    cn.ports.clear();
                }
            }
            if let Err(e) = self.save(&st) {
                tracing::warn!("saving network state: {e}");
            }
            if let Err(e) = self.apply_firewall(&st) {
                tracing::warn!("{e}");
            }
            st.containers
                .iter()
                .filter(|(id, _)| known[id.as_str()].state.running)
                .map(|(id, cn)| {
                    (
                        id.clone(),
                        known[id.as_str()].state.pid,
                        cn.ports.clone(),
                        cn.endpoints.clone(),
                    )
                })
                .collect()
        };
        for (id, pid, ports, eps) in running {
            let ns = Netns::of_pid(pid as u32);
            if !ns.0.exists() {
                continue;
            }
            let mut proxies = Vec::new();
            if let Some(primary) = eps.first() {
                for p in &ports {
                    let want = WantPort {
                        proto: p.proto.clone(),
                        host_ip: p.host_ip.clone(),
                        host_port: p.host_port.to_string(),
                        container_port: p.container_port,
                    };
                    match bind_port(&want).and_then(|(b, _)| {
                        b.serve(SocketAddr::new(
                            target_ip(primary, &p.host_ip),
                            p.container_port,
                        ))
                        .map_err(internal)
                    }) {
                        Ok(px) => proxies.push(px),
                        Err(e) => tracing::warn!("re-publishing port {} of {id}: {e}", p.host_port),
                    }
                }
            }
            let nets_dns = {
                let st = self.state.lock().unwrap();
                eps.iter()
                    .any(|e| st.networks.get(&e.network).is_some_and(|n| n.dns()))
            };
            let dns = if nets_dns {
                match self.dns_server(&id, &ns) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!("DNS for {id}: {e}");
                        None
                    }
                }
            } else {
                None
            };
            self.running.lock().unwrap().insert(
                id,
                Running {
                    proxies,
                    dns,
                    links: None,
                },
            );
        }
    }

    /// `NetworkSettings` of container inspect.
    pub fn settings(&self, c: &Container) -> Value {
        let st = self.state.lock().unwrap();
        let mode = c.network_mode();
        let mut networks = serde_json::Map::new();
        let mut top = json!({
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": false,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
            "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
        });
        if c.state.running && !mode.starts_with("container:") && mode != "host" {
            top["SandboxKey"] = json!(format!("/proc/{}/ns/net", c.state.pid));
        }
        if mode == "host" || mode == "none" {
            let n = st.networks.values().find(|n| n.builtin && n.name == mode);
            networks.insert(mode.clone(), json!({
                "IPAMConfig": null, "Links": null, "Aliases": null, "MacAddress": "", "DriverOpts": null,
                "NetworkID": n.map(|n| n.id.clone()).unwrap_or_default(), "EndpointID": "", "Gateway": "",
                "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0, "DNSNames": null,
            }));
        }
        let cn = st.containers.get(&c.id);
        for ep in cn.map(|x| x.endpoints.as_slice()).unwrap_or_default() {
            let Some(net) = st.networks.get(&ep.network) else {
                continue;
            };
            let pool = net.pool.clone();
            let prefix = pool.as_ref().map(|p| p.subnet.prefix).unwrap_or(0);
            let gw = pool
                .as_ref()
                .map(|p| p.gateway.to_string())
                .unwrap_or_default();
            let (ip6, prefix6, gw6) = match (&net.pool6, ep.ip6) {
                (Some(p6), Some(a)) => (a.to_string(), p6.subnet.prefix, p6.gateway.to_string()),
                _ => (String::new(), 0, String::new()),
            };
            let mut dns_names = Value::Null;
            if net.dns() {
                let mut v = vec![
                    c.name.trim_start_matches('/').to_string(),
                    c.id[..12].to_string(),
                ];
                v.extend(ep.aliases.iter().cloned());
                dns_names = json!(v);
            }
            networks.insert(
                net.name.clone(),
                json!({
                    "IPAMConfig": ipam_config(ep),
                    "Links": null,
                    "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
                    "MacAddress": ep.mac,
                    "DriverOpts": null,
                    "NetworkID": net.id,
                    "EndpointID": ep.endpoint_id,
                    "Gateway": gw,
                    "IPAddress": ep.ip.to_string(),
                    "IPPrefixLen": prefix,
                    "IPv6Gateway": gw6,
                    "GlobalIPv6Address": ip6,
                    "GlobalIPv6PrefixLen": prefix6,
                    "DNSNames": dns_names,
                }),
            );
            if net.builtin && net.name == "bridge" {
                top["Bridge"] = json!("");
                top["EndpointID"] = json!(ep.endpoint_id);
                top["Gateway"] = json!(gw);
                top["IPAddress"] = json!(ep.ip.to_string());
                top["IPPrefixLen"] = json!(prefix);
                top["MacAddress"] = json!(ep.mac);
            }
        }
        top["Networks"] = Value::Object(networks);
        top["Ports"] = self.ports_map(c, cn);
        top
    }

    fn ports_map(&self, c: &Container, cn: Option<&CNet>) -> Value {
        let mut ports = serde_json::Map::new();
        for p in exposed_of(c) {
            ports.insert(p, Value::Null);
        }
        if c.state.running {
            for p in cn.map(|x| x.ports.as_slice()).unwrap_or_default() {
                let key = format!("{}/{}", p.container_port, p.proto);
                let entry = ports.entry(key).or_insert(json!([]));
                if entry.is_null() {
                    *entry = json!([]);
                }
                if let Some(a) = entry.as_array_mut() {
                    a.push(json!({"HostIp": if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() }, "HostPort": p.host_port.to_string()}));
                }
            }
        }
        Value::Object(ports)
    }

    /// `Ports` and `NetworkSettings` of `/containers/json`.
    pub fn list_fields(&self, c: &Container) -> (Value, Value) {
        let s = self.settings(c);
        let mut ports = Vec::new();
        if let Some(o) = s["Ports"].as_object() {
            for (k, v) in o {
                let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                let port: u16 = port.parse().unwrap_or(0);
                match v.as_array() {
                    Some(a) if !a.is_empty() => {
                        for b in a {
                            ports.push(json!({"IP": b["HostIp"], "PrivatePort": port, "PublicPort": b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()), "Type": proto}));
                        }
                    }
                    _ => ports.push(json!({"PrivatePort": port, "Type": proto})),
                }
            }
        }
        (Value::Array(ports), json!({"Networks": s["Networks"]}))
    }

    // ---- network API ----

    fn network_json(&self, st: &NetState, n: &Network, with_containers: bool) -> Value {
        let mut containers = serde_json::Map::new();
        if with_containers {
            for (cid, cn) in &st.containers {
                for ep in cn.endpoints.iter().filter(|e| e.network == n.id) {
                    let prefix = n.pool.as_ref().map(|p| p.subnet.prefix).unwrap_or(0);
                    let v6 = match (&n.pool6, ep.ip6) {
                        (Some(p6), Some(a)) => format!("{a}/{}", p6.subnet.prefix),
                        _ => String::new(),
                    };
                    containers.insert(
                        cid.clone(),
                        json!({
                            "Name": cn.name, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
                            "IPv4Address": format!("{}/{prefix}", ep.ip), "IPv6Address": v6,
                        }),
                    );
                }
            }
        }
        let mut config: Vec<Value> = n
            .pool
            .iter()
            .map(|p| {
                let mut v =
                    json!({"Subnet": p.subnet.to_string(), "Gateway": p.gateway.to_string()});
                if let Some(r) = p.ip_range {
                    v["IPRange"] = json!(r.to_string());
                }
                v
            })
            .collect();
        if let Some(p6) = &n.pool6 {
            config
                .push(json!({"Subnet": p6.subnet.to_string(), "Gateway": p6.gateway.to_string()}));
        }
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv4": true,
            "EnableIPv6": n.pool6.is_some(),
            "IPAM": {"Driver": "default", "Options": if n.builtin { Value::Null } else { json!({}) }, "Config": config},
            "Internal": n.internal,
            "Attachable": n.attachable,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": n.options,
            "Labels": n.labels,
        })
    }

    pub fn list_networks(&self, filters: &[(String, String)]) -> Value {
        let st = self.state.lock().unwrap();
        let mut out = Vec::new();
        let mut nets: Vec<&Network> = st.networks.values().collect();
        nets.sort_by(|a, b| a.created.cmp(&b.created));
        for n in nets {
            let keep = filters.iter().all(|(k, v)| match k.as_str() {
                "name" => n.name.contains(v.as_str()),
                "id" => n.id.starts_with(v.as_str()),
                "driver" => n.driver == *v,
                "type" => (v == "custom") != n.builtin,
                "label" => match v.split_once('=') {
                    Some((lk, lv)) => n.labels.get(lk).map(String::as_str) == Some(lv),
                    None => n.labels.contains_key(v.as_str()),
                },
                "dangling" => {
                    let used = st
                        .containers
                        .values()
                        .any(|c| c.endpoints.iter().any(|e| e.network == n.id));
                    (v == "true" || v == "1") == (!used && !n.builtin)
                }
                _ => true,
            });
            if keep {
                out.push(self.network_json(&st, n, false));
            }
        }
        Value::Array(out)
    }

    pub fn inspect_network(&self, key: &str) -> NResult<Value> {
        let st = self.state.lock().unwrap();
        let n = Self::find(&st, key)?;
        Ok(self.network_json(&st, n, true))
    }

    pub fn create_network(&self, body: &Value) -> NResult<(String, String)> {
        let name = body["Name"].as_str().unwrap_or("").to_string();
        if name.is_empty() || !crate::names::valid(&name) {
            return Err(bad(format!("invalid network name: {name:?}")));
        }
        let driver = body["Driver"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("bridge");
        if driver != "bridge" {
            return Err(bad(format!(
                "plugin \"{driver}\" not found: only the bridge driver is supported"
            )));
        }
        let enable6 = body["EnableIPv6"].as_bool().unwrap_or(false);
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        if let Some(o) = body["Options"].as_object() {
            for (k, v) in o {
                options.insert(
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                );
            }
        }
        let mut labels = BTreeMap::new();
        if let Some(o) = body["Labels"].as_object() {
            for (k, v) in o {
                labels.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        let cfgs = body["IPAM"]["Config"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let v4: Vec<&Value> = cfgs
            .iter()
            .filter(|c| !c["Subnet"].as_str().unwrap_or("").contains(':'))
            .collect();
        if v4.len() > 1 {
            return Err(bad("only one IPv4 subnet per network is supported"));
        }
        let v6: Vec<&Value> = cfgs
            .iter()
            .filter(|c| c["Subnet"].as_str().unwrap_or("").contains(':'))
            .collect();
        if v6.len() > 1 {
            return Err(bad("only one IPv6 subnet per network is supported"));
        }
        if !v6.is_empty() && !enable6 {
            return Err(bad(
                "an IPv6 subnet was given but IPv6 is not enabled on the network (--ipv6)",
            ));
        }
        let parse_net = |v: &Value, k: &str| -> NResult<Option<Ipv4Net>> {
            match v[k].as_str().filter(|s| !s.is_empty()) {
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|e| bad(format!("invalid {k}: {e}"))),
                None => Ok(None),
            }
        };
        let mut st = self.state.lock().unwrap();
        if st.networks.values().any(|n| n.name == name) {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let others: Vec<Ipv4Net> = st
            .networks
            .values()
            .filter_map(|n| n.pool.as_ref().map(|p| p.subnet))
            .collect();
        let pool = match v4.first() {
            Some(c) => {
                let subnet = parse_net(c, "Subnet")?;
                let range = parse_net(c, "IPRange")?;
                let gw = match c["Gateway"].as_str().filter(|s| !s.is_empty()) {
                    Some(g) => Some(
                        g.parse::<Ipv4Addr>()
                            .map_err(|_| bad(format!("invalid gateway address {g}")))?,
                    ),
                    None => None,
                };
                let subnet = match subnet {
                    Some(s) => s,
                    None => {
                        let mut taken = host_taken();
                        taken.extend(others.iter().copied());
                        ipam::pick_subnet(&ipam::default_candidates(), &taken).map_err(bad)?
                    }
                };
                if let Some(o) = others.iter().find(|o| o.overlaps(&subnet)) {
                    return Err(EngineError::Conflict(format!("invalid pool request: Pool overlaps with other one on this address space ({o})")));
                }
                Pool::new(subnet, gw, range).map_err(bad)?
            }
            None => {
                let mut taken = host_taken();
                taken.extend(others.iter().copied());
                let s = ipam::pick_subnet(&ipam::default_candidates(), &taken).map_err(bad)?;
                Pool::new(s, None, None).map_err(bad)?
            }
        };
        let id = util::new_id();
        let pool6 = if enable6 {
            let others6: Vec<Ipv6Net> = st
                .networks
                .values()
                .filter_map(|n| n.pool6.as_ref().map(|p| p.subnet))
                .collect();
            let (subnet, gw) = match v6.first() {
                Some(c) => {
                    let subnet: Ipv6Net = c["Subnet"]
                        .as_str()
                        .unwrap_or("")
                        .parse()
                        .map_err(|e| bad(format!("invalid Subnet: {e}")))?;
                    let gw = match c["Gateway"].as_str().filter(|s| !s.is_empty()) {
                        Some(g) => Some(
                            g.parse::<Ipv6Addr>()
                                .map_err(|_| bad(format!("invalid gateway address {g}")))?,
                        ),
                        None => None,
                    };
                    if let Some(o) = others6.iter().find(|o| o.overlaps(&subnet)) {
                        return Err(EngineError::Conflict(format!("invalid pool request: Pool overlaps with other one on this address space ({o})")));
                    }
                    (subnet, gw)
                }
                None => {
                    let mut taken = netlink::ipv6_taken().unwrap_or_default();
                    taken.extend(others6.iter().copied());
                    (ipam::pick_ula(&id, &taken).map_err(bad)?, None)
                }
            };
            Some(Pool6::new(subnet, gw).map_err(bad)?)
        } else {
            None
        };
        let bridge = options
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        if bridge.len() > 15 || bridge.is_empty() {
            return Err(bad(format!(
                "invalid bridge name {bridge:?} (at most 15 characters)"
            )));
        }
        if st.networks.values().any(|n| n.bridge == bridge) {
            return Err(EngineError::Conflict(format!(
                "bridge name {bridge} is already in use by another network"
            )));
        }
        let net = Network {
            id: id.clone(),
            name,
            driver: "bridge".into(),
            created: util::now_rfc3339_nano(),
            bridge: bridge.clone(),
            pool: Some(pool.clone()),
            pool6: pool6.clone(),
            internal: body["Internal"].as_bool().unwrap_or(false),
            attachable: body["Attachable"].as_bool().unwrap_or(false),
            labels,
            options,
            builtin: false,
        };
        // Recorded first: after a crash the next start creates the missing bridge, so no
        // bridge ever exists without its network.
        let gw6 = net.gw6();
        st.networks.insert(id.clone(), net);
        let res = self.save(&st).and_then(|_| {
            if gw6.is_some() {
                firewall::enable_ipv6_forward()
                    .map_err(|e| internal(format!("enabling IPv6 forwarding: {e}")))?;
            }
            netlink::ensure_bridge(&bridge, pool.gateway, pool.subnet.prefix, gw6, None)
                .map_err(|e| internal(format!("creating bridge {bridge}: {e}")))?;
            self.apply_firewall(&st)
        });
        if let Err(e) = res {
            st.networks.remove(&id);
            let _ = netlink::delete_link(&bridge);
            let _ = self.save(&st);
            let _ = self.apply_firewall(&st);
            return Err(e);
        }
        Ok((id, String::new()))
    }

    pub fn remove_network(&self, key: &str) -> NResult<String> {
        let mut st = self.state.lock().unwrap();
        let n = Self::find(&st, key)?.clone();
        if n.builtin {
            return Err(EngineError::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if st
            .containers
            .values()
            .any(|c| c.endpoints.iter().any(|e| e.network == n.id))
        {
            return Err(EngineError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        netlink::delete_link(&n.bridge)
            .map_err(|e| internal(format!("deleting bridge {}: {e}", n.bridge)))?;
        st.networks.remove(&n.id);
        self.save(&st)?;
        self.apply_firewall(&st)?;
        Ok(n.name)
    }

    pub fn prune(&self, filters: &[(String, String)]) -> Vec<String> {
        let candidates: Vec<String> = {
            let st = self.state.lock().unwrap();
            st.networks
                .values()
                .filter(|n| !n.builtin)
                .filter(|n| {
                    !st.containers
                        .values()
                        .any(|c| c.endpoints.iter().any(|e| e.network == n.id))
                })
                .filter(|n| {
                    filters.iter().all(|(k, v)| match k.as_str() {
                        "label" => match v.split_once('=') {
                            Some((lk, lv)) => n.labels.get(lk).map(String::as_str) == Some(lv),
                            None => n.labels.contains_key(v.as_str()),
                        },
                        _ => true,
                    })
                })
                .map(|n| n.id.clone())
                .collect()
        };
        candidates
            .iter()
            .filter_map(|id| self.remove_network(id).ok())
            .collect()
    }

    /// `network connect`: a new endpoint; plugged in now when the container runs.
    pub fn connect(&self, c: &Container, key: &str, cfg: &Value) -> NResult<()> {
        let mode = c.network_mode();
        if mode == "host" || mode == "none" || mode.starts_with("container:") {
            return Err(bad("container sharing network namespace with another container or host cannot be connected to any other network"));
        }
        let (ep, net, primary) = {
            let mut st = self.state.lock().unwrap();
            let net = Self::find(&st, key)?.clone();
            let cn = st.containers.get(&c.id).cloned().unwrap_or_default();
            if cn.endpoints.iter().any(|e| e.network == net.id) {
                return Err(EngineError::Forbidden(format!(
                    "endpoint with name {} already exists in network {}",
                    c.name.trim_start_matches('/'),
                    net.name
                )));
            }
            let mut n = 0;
            while cn.endpoints.iter().any(|e| e.ifname == format!("eth{n}")) {
                n += 1;
            }
            let ep = Self::new_endpoint(&st, &c.id, &net, cfg, format!("eth{n}"), None)?;
            let primary = cn.endpoints.is_empty();
            let e = st.containers.entry(c.id.clone()).or_default();
            e.name = c.name.trim_start_matches('/').to_string();
            e.endpoints.push(ep.clone());
            self.save(&st)?;
            (ep, net, primary)
        };
        if c.state.running {
            let ns = Netns::of_pid(c.state.pid as u32);
            match self.plug(&ns, &ep, &net, primary) {
                Ok(idx) => {
                    let mut run = self.running.lock().unwrap();
                    if let Some(Some(links)) = run.get_mut(&c.id).map(|r| r.links.as_mut()) {
                        links.push(idx);
                    }
                }
                Err(e) => {
                    self.drop_endpoint(&c.id, &net.id);
                    return Err(e);
                }
            }
            if net.dns() {
                let mut run = self.running.lock().unwrap();
                if let Some(r) = run.get_mut(&c.id) {
                    if r.dns.is_none() {
                        r.dns = Some(self.dns_server(&c.id, &ns)?);
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_endpoint(&self, cid: &str, nid: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(cn) = st.containers.get_mut(cid) {
            cn.endpoints.retain(|e| e.network != nid);
        }
        let _ = self.save(&st);
    }

    /// `network disconnect`.
    pub fn disconnect(&self, c: &Container, key: &str) -> NResult<()> {
        let ep = {
            let st = self.state.lock().unwrap();
            let net = Self::find(&st, key)?;
            st.containers
                .get(&c.id)
                .and_then(|cn| cn.endpoints.iter().find(|e| e.network == net.id).cloned())
                .ok_or_else(|| {
                    EngineError::Forbidden(format!(
                        "container {} is not connected to network {}",
                        c.id, net.name
                    ))
                })?
        };
        if c.state.running {
            netlink::delete_link(&ep.host_veth)
                .map_err(|e| internal(format!("removing {}: {e}", ep.host_veth)))?;
        }
        self.drop_endpoint(&c.id, &ep.network);
        let st = self.state.lock().unwrap();
        self.apply_firewall(&st)?;
        Ok(())
    }
}

/// The interface an endpoint gets in the container's namespace.
fn veth_spec(ep: &Endpoint, net: &Network, primary: bool) -> NResult<VethSpec> {
    let pool = net
        .pool
        .as_ref()
        .ok_or_else(|| internal("network without pool"))?;
    let mac = etc::parse_mac(&ep.mac).unwrap_or_else(|| etc::mac_for(ep.ip));
    let routed = primary && !net.internal;
    Ok(VethSpec {
        host_name: ep.host_veth.clone(),
        bridge: net.bridge.clone(),
        ifname: ep.ifname.clone(),
        mac,
        address: Ipv4Net::new(ep.ip, pool.subnet.prefix),
        gateway: routed.then_some(pool.gateway),
        address6: match (&net.pool6, ep.ip6) {
            (Some(p6), Some(a)) => Some(Ipv6Net::new(a, p6.subnet.prefix)),
            _ => None,
        },
        gateway6: match (&net.pool6, ep.ip6) {
            (Some(p6), Some(_)) if routed => Some(p6.gateway),
            _ => None,
        },
        mtu: net
            .options
            .get("com.docker.network.driver.mtu")
            .and_then(|m| m.parse().ok()),
    })
}

/// Where a published port bound on `host_ip` forwards: the container's IPv6 address for an
/// IPv6 binding when it has one, else its IPv4 address.
fn target_ip(ep: &Endpoint, host_ip: &str) -> IpAddr {
    match (host_ip.parse::<IpAddr>(), ep.ip6) {
        (Ok(IpAddr::V6(_)), Some(a)) => IpAddr::V6(a),
        _ => IpAddr::V4(ep.ip),
    }
}

/// The container's own `/etc/hosts` lines: its IPv4 and (with `--ipv6`) IPv6 address.
fn own_hosts(ep: &Endpoint, hostname: &str) -> Vec<(IpAddr, Vec<String>)> {
    std::iter::once(IpAddr::V4(ep.ip))
        .chain(ep.ip6.map(IpAddr::V6))
        .map(|ip| (ip, vec![hostname.to_string()]))
        .collect()
}

/// `IPAMConfig` of an endpoint: the addresses that were requested.
fn ipam_config(ep: &Endpoint) -> Value {
    if ep.requested_ip.is_none() && ep.requested_ip6.is_none() {
        return Value::Null;
    }
    let mut v = json!({});
    if let Some(ip) = ep.requested_ip {
        v["IPv4Address"] = json!(ip.to_string());
    }
    if let Some(ip) = ep.requested_ip6 {
        v["IPv6Address"] = json!(ip.to_string());
    }
    v
}

fn default_bridge_options(bridge: &str) -> BTreeMap<String, String> {
    [
        ("com.docker.network.bridge.default_bridge", "true"),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        ("com.docker.network.bridge.name", bridge),
        ("com.docker.network.driver.mtu", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Prefixes already used on the host (routes and addresses).
fn host_taken() -> Vec<Ipv4Net> {
    let mut v = netlink::ipv4_routes().unwrap_or_default();
    v.extend(
        netlink::ipv4_addresses()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.addr.is_loopback())
            .map(|a| a.network_net()),
    );
    v
}

/// One requested published port.
#[derive(Debug, Clone)]
struct WantPort {
    proto: String,
    host_ip: String,
    /// `""` (random), `"8080"` or a range `"8000-8010"`.
    host_port: String,
    container_port: u16,
}

fn parse_port_key(k: &str) -> NResult<(u16, String)> {
    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return Err(bad(format!(
            "invalid proto: {proto} (tcp and udp are supported)"
        )));
    }
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("invalid port specification: {k:?}")))?;
    Ok((port, proto))
}

fn parse_port_bindings(hc: &Value) -> NResult<Vec<WantPort>> {
    let mut out = Vec::new();
    if let Some(o) = hc["PortBindings"].as_object() {
        for (k, v) in o {
            let (port, proto) = parse_port_key(k)?;
            let binds = v.as_array().cloned().unwrap_or_default();
            let binds = if binds.is_empty() {
                vec![json!({})]
            } else {
                binds
            };
            for b in binds {
                let host_ip = b["HostIp"].as_str().unwrap_or("").to_string();
                if !host_ip.is_empty() {
                    let ip: IpAddr = host_ip
                        .parse()
                        .map_err(|_| bad(format!("invalid host IP: {host_ip}")))?;
                    let _ = ip;
                }
                let hp = b["HostPort"].as_str().unwrap_or("").to_string();
                if !hp.is_empty() {
                    let ok = match hp.split_once('-') {
                        Some((a, b)) => {
                            matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= b)
                        }
                        None => hp.parse::<u16>().is_ok(),
                    };
                    if !ok {
                        return Err(bad(format!("invalid hostPort: {hp}")));
                    }
                }
                out.push(WantPort {
                    proto: proto.clone(),
                    host_ip,
                    host_port: hp,
                    container_port: port,
                });
            }
        }
    }
    Ok(out)
}

/// `Config.ExposedPorts` keys (`80/tcp`).
fn exposed_of(c: &Container) -> Vec<String> {
    c.config["ExposedPorts"]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// `PortBindings` plus, with `PublishAllPorts`, every exposed port not bound explicitly.
fn wanted_ports(c: &Container) -> NResult<Vec<WantPort>> {
    let mut v = parse_port_bindings(&c.host_config)?;
    if c.host_config["PublishAllPorts"].as_bool().unwrap_or(false) {
        for k in exposed_of(c) {
            let (port, proto) = parse_port_key(&k)?;
            if !v
                .iter()
                .any(|w| w.container_port == port && w.proto == proto)
            {
                v.push(WantPort {
                    proto,
                    host_ip: String::new(),
                    host_port: String::new(),
                    container_port: port,
                });
            }
        }
    }
    Ok(v)
}

fn bind_port(w: &WantPort) -> NResult<(proxy::Bound, u16)> {
    let ip: IpAddr = if w.host_ip.is_empty() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        w.host_ip
            .parse()
            .map_err(|_| bad(format!("invalid host IP: {}", w.host_ip)))?
    };
    let proto = if w.proto == "udp" {
        Proto::Udp
    } else {
        Proto::Tcp
    };
    let range: Vec<u16> = match w.host_port.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u16, u16) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
            (a..=b).collect()
        }
        None if w.host_port.is_empty() => vec![0],
        None => vec![w.host_port.parse().unwrap_or(0)],
    };
    let mut last = None;
    for p in range {
        match proxy::bind(proto, SocketAddr::new(ip, p)) {
            Ok(b) => {
                let port = b.local_addr().map_err(internal)?.port();
                return Ok((b, port));
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last
        .map(|e| e.to_string())
        .unwrap_or_else(|| "no port".into());
    Err(internal(format!(
        "driver failed programming external connectivity on endpoint: {e}"
    )))
}

/// Merges the image's and the request's exposed ports (for `Config.ExposedPorts`).
pub fn exposed_ports<'a>(body: &Value, image: impl IntoIterator<Item = &'a String>) -> Value {
    let mut m = serde_json::Map::new();
    for p in image {
        let k = if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        };
        m.insert(k, json!({}));
    }
    if let Some(o) = body["ExposedPorts"].as_object() {
        for k in o.keys() {
            let k = if k.contains('/') {
                k.clone()
            } else {
                format!("{k}/tcp")
            };
            m.insert(k, json!({}));
        }
    }
    // Ports published explicitly are exposed too.
    if let Some(o) = body["HostConfig"]["PortBindings"].as_object() {
        for k in o.keys() {
            let k = if k.contains('/') {
                k.clone()
            } else {
                format!("{k}/tcp")
            };
            m.insert(k, json!({}));
        }
    }
    if m.is_empty() {
        Value::Null
    } else {
        Value::Object(m)
    }
}

// ---- routes ----

type St = State<Arc<AppState>>;
type Q = Query<HashMap<String, String>>;
type R = Result<Response, ApiError>;

fn json_resp(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> NResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??)
}

/// The network routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

async fn list(State(s): St, Query(q): Q) -> R {
    let f = crate::api::parse_filters(&q)?;
    Ok(json_resp(s.engine.net.list_networks(&f)))
}

async fn inspect(State(s): St, Path(id): Path<String>) -> R {
    Ok(json_resp(s.engine.net.inspect_network(&id)?))
}

async fn create(State(s): St, body: Bytes) -> R {
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| crate::api::bad(format!("invalid JSON: {e}")))?;
    let net = s.engine.net.clone();
    let (id, warning) = blocking(move || net.create_network(&v)).await?;
    Ok((
        StatusCode::CREATED,
        json_resp(json!({"Id": id, "Warning": warning})),
    )
        .into_response())
}

async fn remove(State(s): St, Path(id): Path<String>) -> R {
    let net = s.engine.net.clone();
    blocking(move || net.remove_network(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn prune(State(s): St, Query(q): Q) -> R {
    let f = crate::api::parse_filters(&q)?;
    let net = s.engine.net.clone();
    let deleted = blocking(move || Ok(net.prune(&f))).await?;
    Ok(json_resp(json!({"NetworksDeleted": deleted})))
}

async fn connect(State(s): St, Path(id): Path<String>, body: Bytes) -> R {
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| crate::api::bad(format!("invalid JSON: {e}")))?;
    let c = s.engine.get(v["Container"].as_str().unwrap_or(""))?;
    let net = s.engine.net.clone();
    blocking(move || net.connect(&c, &id, &v["EndpointConfig"])).await?;
    Ok(StatusCode::OK.into_response())
}

async fn disconnect(State(s): St, Path(id): Path<String>, body: Bytes) -> R {
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| crate::api::bad(format!("invalid JSON: {e}")))?;
    let c = s.engine.get(v["Container"].as_str().unwrap_or(""))?;
    let net = s.engine.net.clone();
    blocking(move || net.disconnect(&c, &id)).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bindings_parse_and_validate() {
        let hc = json!({"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": [{"HostPort": "5300-5310"}], "81": null}});
        let v = parse_port_bindings(&hc).unwrap();
        assert_eq!(v.len(), 3);
        assert!(parse_port_bindings(&json!({"PortBindings": {"80/sctp": []}})).is_err());
        assert!(parse_port_bindings(&json!({"PortBindings": {"x/tcp": []}})).is_err());
        assert!(
            parse_port_bindings(&json!({"PortBindings": {"80/tcp": [{"HostPort": "9-1"}]}}))
                .is_err()
        );
        assert!(
            parse_port_bindings(&json!({"PortBindings": {"80/tcp": [{"HostIp": "nope"}]}}))
                .is_err()
        );
    }

    #[test]
    fn exposed_ports_merge() {
        let v = exposed_ports(
            &json!({"ExposedPorts": {"53/udp": {}}}),
            &vec!["80".to_string()],
        );
        assert_eq!(v, json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(exposed_ports(&json!({}), &Vec::new()), Value::Null);
    }

    #[test]
    fn table_names_follow_the_bridge() {
        let mut o = NetOptions::default();
        assert_eq!(o.table(), "berth");
        o.bridge = "bt-1.2".into();
        assert_eq!(o.table(), "berth_bt_1_2");
    }
}
