//! The network state file (`<data-root>/network/state.json`): networks and, per container,
//! its endpoints and published ports. Written whole and atomically after every change.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use berth_api::network::EndpointSettings;
use berth_network::ipam::{Pool, Pool6};
use berth_network::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

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
    /// `IPAM.Options` as given at create (`None`: not given, shown as `null` as dockerd does;
    /// the docker CLI sends an empty map, shown as `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<BTreeMap<String, String>>,
    /// `IPAM.Config[].AuxiliaryAddresses` of the IPv4 subnet, as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
    /// Predefined (`bridge`, `host`, `none`).
    #[serde(default)]
    pub builtin: bool,
}

impl Network {
    /// Embedded DNS (user-defined bridge networks only, as Docker).
    pub fn dns(&self) -> bool {
        !self.builtin && self.driver == "bridge"
    }

    /// The bridge's IPv6 gateway address with the subnet's prefix.
    pub fn gw6(&self) -> Option<Ipv6Net> {
        self.pool6
            .as_ref()
            .map(|p| Ipv6Net::new(p.gateway, p.subnet.prefix))
    }

    /// Docker's `label` filter.
    pub fn matches_label(&self, spec: &str) -> bool {
        match spec.split_once('=') {
            Some((k, v)) => self.labels.get(k).map(String::as_str) == Some(v),
            None => self.labels.contains_key(spec),
        }
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
    /// Endpoint `Links` as given (`container:alias`): on a user network the alias resolves
    /// to that container, for this container only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// `IPAMConfig.LinkLocalIPs` as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    /// `DriverOpts` as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// `GwPriority` as given (0 below API 1.48).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Endpoint {
    /// The settings this endpoint was requested with (its MAC address when it is not the
    /// one derived from its IPv4 address).
    pub fn requested(&self) -> EndpointSettings {
        let ipam = (self.requested_ip.is_some()
            || self.requested_ip6.is_some()
            || !self.link_local_ips.is_empty())
        .then(|| berth_api::network::EndpointIpamConfig {
            ipv4_address: self.requested_ip.map(|a| a.to_string()).unwrap_or_default(),
            ipv6_address: self
                .requested_ip6
                .map(|a| a.to_string())
                .unwrap_or_default(),
            link_local_ips: (!self.link_local_ips.is_empty()).then(|| self.link_local_ips.clone()),
        });
        let derived = berth_network::etc::mac_string(&berth_network::etc::mac_for(self.ip));
        EndpointSettings {
            ipam_config: ipam,
            links: (!self.links.is_empty()).then(|| self.links.clone()),
            aliases: (!self.aliases.is_empty()).then(|| self.aliases.clone()),
            mac_address: if self.mac == derived {
                String::new()
            } else {
                self.mac.clone()
            },
            driver_opts: (!self.driver_opts.is_empty()).then(|| self.driver_opts.clone()),
            gw_priority: self.gw_priority,
            ..Default::default()
        }
    }

    /// Where a published port bound on `host_ip` forwards: the container's IPv6 address for
    /// an IPv6 binding when it has one, else its IPv4 address.
    pub fn target_ip(&self, host_ip: &str) -> IpAddr {
        match (host_ip.parse::<IpAddr>(), self.ip6) {
            (Ok(IpAddr::V6(_)), Some(a)) => IpAddr::V6(a),
            _ => IpAddr::V4(self.ip),
        }
    }

    /// The container's own `/etc/hosts` lines: its IPv4 and (with `--ipv6`) IPv6 address,
    /// each with [`host_names`].
    pub fn own_hosts(&self, hostname: &str, domainname: &str) -> Vec<(IpAddr, Vec<String>)> {
        let names = host_names(hostname, domainname);
        std::iter::once(IpAddr::V4(self.ip))
            .chain(self.ip6.map(IpAddr::V6))
            .map(|ip| (ip, names.clone()))
            .collect()
    }
}

/// The names of a container's own `/etc/hosts` lines, as libnetwork writes them: the fully
/// qualified name (`hostname`, or `hostname.domainname`), then the bare host name when the
/// former has a domain part (`--hostname a.example.com` gives `a.example.com a`).
pub fn host_names(hostname: &str, domainname: &str) -> Vec<String> {
    let fqdn = if domainname.is_empty() {
        hostname.to_string()
    } else {
        format!("{hostname}.{domainname}")
    };
    match fqdn.split_once('.') {
        Some((short, _)) => {
            let short = short.to_string();
            vec![fqdn, short]
        }
        None => vec![fqdn],
    }
}

/// A port a running container publishes.
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
    /// `Config.Hostname`: the embedded DNS answers it too (dockerd's endpoint DNS names).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The first is the primary network (default route, published ports).
    pub endpoints: Vec<Endpoint>,
    /// Published while running.
    #[serde(default)]
    pub ports: Vec<PortMap>,
    /// Servers the embedded DNS forwards to.
    #[serde(default)]
    pub upstream: Vec<IpAddr>,
    /// Networks named at create that did not exist then: resolved (their endpoints
    /// allocated) when the container starts, as dockerd does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingEndpoint>,
}

/// A network a container was created on before it existed: the name (or ID) as given and
/// the endpoint settings requested for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingEndpoint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<EndpointSettings>,
    /// The container's `NetworkMode`: its endpoint is the first (`eth0`).
    #[serde(default)]
    pub primary: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetState {
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, CNet>,
}

impl NetState {
    /// Looks a network up by full id, name, or id prefix.
    pub fn find(&self, key: &str) -> Result<&Network> {
        if let Some(n) = self.networks.get(key) {
            return Ok(n);
        }
        if let Some(n) = self.networks.values().find(|n| n.name == key) {
            return Ok(n);
        }
        let hits: Vec<&Network> = self
            .networks
            .values()
            .filter(|n| !key.is_empty() && n.id.starts_with(key))
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(EngineError::Missing(format!("network {key} not found"))),
            _ => Err(EngineError::BadRequest(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                hits.len()
            ))),
        }
    }

    /// The predefined network `name` (`bridge`, `host`, `none`).
    pub fn builtin(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.builtin && n.name == name)
    }

    /// Whether a container has an endpoint on network `id`.
    pub fn in_use(&self, id: &str) -> bool {
        self.containers
            .values()
            .any(|c| c.endpoints.iter().any(|e| e.network == id))
    }

    /// Whether one of the containers `running` has an endpoint on network `id`.
    pub fn in_use_by(&self, id: &str, running: &std::collections::HashSet<String>) -> bool {
        self.containers
            .iter()
            .any(|(cid, c)| running.contains(cid) && c.endpoints.iter().any(|e| e.network == id))
    }

    /// Network `net` goes: the endpoints (stopped containers') on it become networks named
    /// at create, by its name and with the settings they were requested with.
    pub fn release_endpoints_on(&mut self, net: &Network) {
        for cn in self.containers.values_mut() {
            let Some(pos) = cn.endpoints.iter().position(|e| e.network == net.id) else {
                continue;
            };
            let ep = cn.endpoints.remove(pos);
            cn.pending.push(PendingEndpoint {
                key: net.name.clone(),
                settings: Some(ep.requested()),
                primary: pos == 0,
            });
        }
    }

    /// The endpoints of every container on network `net`.
    pub fn endpoints_on<'a>(&'a self, net: &'a str) -> impl Iterator<Item = &'a Endpoint> + 'a {
        self.containers
            .values()
            .flat_map(|c| c.endpoints.iter())
            .filter(move |e| e.network == net)
    }

    /// The endpoint a container's ports are published to: its gateway endpoint (as libnetwork
    /// programs external connectivity there, see [`super::endpoints::gateway_index`]), none
    /// when that is on an `--internal` network (dockerd programs no port mapping there; a
    /// connection to another network publishes them there).
    pub fn publishing_endpoint<'a>(&self, eps: &'a [Endpoint]) -> Option<&'a Endpoint> {
        let (ep, net) = eps
            .iter()
            .filter_map(|e| Some((e, self.networks.get(&e.network)?)))
            .min_by_key(|(e, n)| super::endpoints::gateway_key(e, n))?;
        (!net.internal).then_some(ep)
    }

    /// Whether any endpoint of these is on a network with embedded DNS.
    pub fn any_dns(&self, eps: &[Endpoint]) -> bool {
        eps.iter()
            .any(|e| self.networks.get(&e.network).is_some_and(Network::dns))
    }
}

/// The state file: synchronous durable writes, and quick ones made durable by a flusher.
pub struct StateFile {
    path: PathBuf,
    flusher: Arc<Flusher>,
}

impl StateFile {
    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn open(path: PathBuf) -> StateFile {
        StateFile {
            flusher: Flusher::start(path.clone()),
            path,
        }
    }

    /// Reads the state (empty when there is none yet).
    pub fn read(&self) -> Result<NetState> {
        if !self.path.exists() {
            return Ok(NetState::default());
        }
        crate::util::read_json(&self.path).map_err(EngineError::io("reading", &self.path))
    }

    /// Writes the state durably (fsync of the file and its directory).
    pub fn save(&self, st: &NetState) -> Result<()> {
        crate::util::write_json_atomic(&self.path, st)
            .map_err(EngineError::io("writing", &self.path))
    }

    /// Writes the state atomically (a new file renamed over the old one, so a daemon crash
    /// leaves the old or the new state) without waiting for the disk; the flusher makes it
    /// durable shortly after. Used for container endpoints (create, removal): after a power
    /// loss a lost endpoint is allocated again at start and a lost removal is dropped by
    /// `adopt`.
    pub fn save_soon(&self, st: &NetState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(st)
            .map_err(|e| EngineError::Internal(format!("encoding the network state: {e}")))?;
        berth_util::fs::replace_file_nosync(&self.path, &bytes)
            .map_err(EngineError::io("writing", &self.path))?;
        self.flusher.kick();
        Ok(())
    }
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
                let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
                if let Err(e) =
                    sync(&path).and_then(|_| sync(path.parent().unwrap_or(Path::new("/"))))
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
