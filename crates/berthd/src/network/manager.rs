//! The network manager: options, the state, the firewall, and the networks themselves
//! (create, remove, prune, find).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, Weak};

use berth_api::network::CreateRequest;
use berth_api::Filters;
use berth_network::dns::DnsServer;
use berth_network::etc::ResolvConf;
use berth_network::firewall::{self, BridgeRules, Firewall, PortRule, Proto, Ruleset};
use berth_network::ipam::{self, Pool, Pool6};
use berth_network::netlink;
use berth_network::proxy::Proxy;
use berth_network::{Ipv4Net, Ipv6Net};

use super::state::{NetState, Network, StateFile};
use crate::error::{EngineError, Result};
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
    /// Subnets new networks are picked from, in order (`default-address-pools`); empty:
    /// Docker's defaults.
    pub address_pools: Vec<Ipv4Net>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            bridge: "berth0".into(),
            bip: None,
            fixed_cidr: None,
            firewall: "auto".into(),
            address_pools: Vec::new(),
        }
    }
}

impl NetOptions {
    /// The subnets a network without one is given the first free of.
    pub fn subnet_candidates(&self) -> Vec<Ipv4Net> {
        if self.address_pools.is_empty() {
            ipam::default_candidates()
        } else {
            self.address_pools.clone()
        }
    }

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

    fn chain_prefix(&self) -> String {
        self.table().to_uppercase().replace('_', "-")
    }
}

/// What a running container holds in the daemon; dropping it stops the proxies and DNS.
pub(super) struct Running {
    #[allow(dead_code)] // held for its Drop
    pub(super) proxies: Vec<Proxy>,
    pub(super) dns: Option<DnsServer>,
    /// Indexes of the host ends of the veths created by this daemon (`None` when adopted
    /// after a restart: the names are used then).
    pub(super) links: Option<Vec<u32>>,
}

/// Networking of the daemon.
pub struct Manager {
    pub(super) opts: NetOptions,
    pub(super) file: StateFile,
    fw: Option<Box<dyn Firewall>>,
    pub(super) state: Mutex<NetState>,
    pub(super) running: Mutex<HashMap<String, Running>>,
    pub(super) host_resolv: ResolvConf,
    pub(super) me: Weak<Manager>,
    /// The bridges `forward_accept` was last run for: it lists the host's `FORWARD` chain
    /// (an `iptables` process), so it runs when Berth's bridges change (and at start), not
    /// for every published port.
    accept_for: Mutex<Option<(Vec<String>, Vec<String>)>>,
    /// Where network events go (set by the engine).
    events: std::sync::OnceLock<crate::events::Bus>,
    /// `<data-root>/containers`: a running container's `resolv.conf` is rewritten there
    /// when `network connect` gives it the embedded DNS.
    pub(super) containers_dir: std::path::PathBuf,
}

pub(super) fn new_network(name: &str, driver: &str, builtin: bool) -> Network {
    Network {
        id: util::new_id(),
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
        ipam_options: None,
        aux_addresses: BTreeMap::new(),
        builtin,
    }
}

impl Manager {
    /// The firewall backend's name (`nftables`, `iptables`), `None` without one (`info`'s
    /// `FirewallBackend`).
    pub fn firewall_name(&self) -> Option<&'static str> {
        self.fw.as_ref().map(|f| f.name())
    }

    /// Loads the state, creates the predefined networks, (re)creates bridges and rewrites the
    /// firewall.
    pub fn open(opts: &NetOptions, data_root: &std::path::Path) -> Result<Arc<Manager>> {
        let dir = data_root.join("network");
        std::fs::create_dir_all(&dir).map_err(EngineError::io("creating", &dir))?;
        let file = StateFile::open(dir.join("state.json"));
        let mut st = file.read()?;
        // A rootless daemon on the host's network namespace cannot touch it (see
        // `crate::rootless_net`); in a namespace of its own it works as root does.
        let rootless = crate::rootless_net::host_only();
        let fw: Option<Box<dyn Firewall>> = match opts.firewall.as_str() {
            _ if rootless => None,
            "nftables" => Some(Box::new(firewall::Nftables::new(opts.table()))),
            "iptables" => Some(Box::new(firewall::Iptables::new(opts.chain_prefix()))),
            "none" => None,
            _ if firewall::Nftables::available() => {
                Some(Box::new(firewall::Nftables::new(opts.table())))
            }
            _ => Some(Box::new(firewall::Iptables::new(opts.chain_prefix()))),
        };
        // Predefined networks (stable ids once created).
        for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
            if st.builtin(name).is_none() {
                let n = new_network(name, driver, true);
                st.networks.insert(n.id.clone(), n);
            }
        }
        // The default bridge: its pool from --bip, the state, or a free default subnet.
        let def_id = st
            .builtin("bridge")
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let bad_bip = |e| EngineError::BadRequest(format!("--bip: {e}"));
        let pool = match opts.bip {
            Some(bip) => Pool::new(bip, Some(bip.addr), opts.fixed_cidr).map_err(bad_bip)?,
            None => match st.networks[&def_id].pool.clone() {
                Some(p) if opts.fixed_cidr.is_none() || p.ip_range == opts.fixed_cidr => p,
                // An existing bridge keeps its address (never a second one).
                _ => match netlink::link_ipv4(&opts.bridge) {
                    Ok(Some(a)) => Pool::new(a.network_net(), Some(a.addr), opts.fixed_cidr)?,
                    _ => {
                        let mut taken = host_taken();
                        taken.extend(
                            st.networks
                                .values()
                                .filter(|n| n.id != def_id)
                                .filter_map(|n| n.pool.as_ref().map(|p| p.subnet)),
                        );
                        let subnet = ipam::pick_subnet(&opts.subnet_candidates(), &taken)?;
                        Pool::new(subnet, None, opts.fixed_cidr)?
                    }
                },
            },
        };
        if let Some(n) = st.networks.get_mut(&def_id) {
            n.pool = Some(pool);
            n.bridge = opts.bridge.clone();
            n.options = default_bridge_options(&opts.bridge);
        }
        for n in st
            .networks
            .values()
            .filter(|n| n.driver == "bridge" && !rootless)
        {
            if let Some(p) = &n.pool {
                netlink::ensure_bridge(&n.bridge, p.gateway, p.subnet.prefix, n.gw6(), None)
                    .map_err(EngineError::netlink(format!("network {}", n.name)))?;
            }
        }
        let forward = if rootless {
            Ok(())
        } else {
            firewall::enable_ip_forward()
        };
        if let Err(e) = forward {
            tracing::warn!("enabling IPv4 forwarding: {e}");
        }
        if st.networks.values().any(|n| n.pool6.is_some()) {
            if let Err(e) = firewall::enable_ipv6_forward() {
                tracing::warn!("enabling IPv6 forwarding: {e}");
            }
        }
        let host_resolv = crate::rootless_net::resolv_conf(ResolvConf::load_host());
        let m = Arc::new_cyclic(|me| Manager {
            opts: opts.clone(),
            file,
            fw,
            state: Mutex::new(st),
            running: Mutex::new(HashMap::new()),
            host_resolv,
            me: me.clone(),
            accept_for: Mutex::new(None),
            events: std::sync::OnceLock::new(),
            containers_dir: data_root.join("containers"),
        });
        {
            let st = m.state.lock().unwrap();
            m.file.save(&st)?;
            m.apply_rules(&st)?;
            // A forward that cannot be restored (its host port taken meanwhile) does not keep
            // the daemon down.
            if let Err(e) = m.sync_forwards(&st) {
                tracing::warn!("{e}");
            }
        }
        Ok(m)
    }

    /// Publishes network events on `bus` from now on.
    pub fn set_events(&self, bus: crate::events::Bus) {
        let _ = self.events.set(bus);
    }

    /// A network event (`create`, `destroy`; `connect`/`disconnect` with the container).
    pub(super) fn event(&self, action: &str, net: &Network, container: Option<&str>) {
        if let Some(b) = self.events.get() {
            b.network(action, &net.id, &net.name, &net.driver, container);
        }
    }

    /// The daemon's networking options.
    pub fn options(&self) -> &NetOptions {
        &self.opts
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
            let Some(ep) = st.publishing_endpoint(&c.endpoints) else {
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
                    host_ip: crate::rootless_net::netns_host_ip(&p.host_ip).parse().ok(),
                    host_port: p.host_port,
                    container_ip: ep.target_ip(&p.host_ip),
                    container_port: p.container_port,
                    bridge: n.bridge.clone(),
                });
            }
        }
        r
    }

    /// The host forwards of a rootless daemon's published ports (IPv4; see
    /// `crate::rootless_net`).
    fn host_forwards(st: &NetState) -> Vec<crate::rootless_net::HostFwd> {
        st.containers
            .values()
            .filter(|c| !c.endpoints.is_empty())
            .flat_map(|c| c.ports.iter())
            .filter(|p| p.host_ip.is_empty() || p.host_ip.parse::<std::net::Ipv4Addr>().is_ok())
            .map(|p| crate::rootless_net::HostFwd::published(&p.proto, &p.host_ip, p.host_port))
            .collect()
    }

    /// Rewrites the firewall from the state (one atomic batch); a rootless daemon's host
    /// forwards follow (both are attempted; the first error is returned).
    pub(super) fn apply_firewall(&self, st: &NetState) -> Result<()> {
        let rules = self.apply_rules(st);
        rules.and(self.sync_forwards(st))
    }

    /// A rootless daemon's host forwards made those of the published ports.
    fn sync_forwards(&self, st: &NetState) -> Result<()> {
        crate::rootless_net::sync_ports(&Self::host_forwards(st))
            .map_err(|e| EngineError::Internal(e.to_string()))
    }

    fn apply_rules(&self, st: &NetState) -> Result<()> {
        let Some(fw) = &self.fw else {
            return Ok(());
        };
        let rules = Self::ruleset(st);
        fw.apply(&rules).map_err(|source| EngineError::Firewall {
            what: format!("{} rules", fw.name()),
            source,
        })?;
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
        let prefix = self.opts.chain_prefix();
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

    /// Saves and rewrites the firewall, logging failures (teardown paths keep going).
    pub(super) fn save_and_apply_logged(&self, st: &NetState) {
        if let Err(e) = self.file.save(st) {
            tracing::warn!("saving network state: {e}");
        }
        if let Err(e) = self.apply_firewall(st) {
            tracing::warn!("{e}");
        }
    }

    /// The default bridge's gateway (`host-gateway`).
    pub(super) fn default_gateway(&self) -> Option<Ipv4Addr> {
        let st = self.state.lock().unwrap();
        st.builtin("bridge")
            .and_then(|n| n.pool.as_ref().map(|p| p.gateway))
    }

    /// `POST /networks/create`; returns (id, warning).
    pub fn create_network(&self, req: &CreateRequest) -> Result<(String, String)> {
        let bad = |m: String| EngineError::BadRequest(m);
        let name = req.name.clone();
        // dockerd accepts any name (spaces included) but an empty one.
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(bad(format!("invalid network name: {name:?}")));
        }
        if crate::rootless_net::host_only() {
            return Err(bad(crate::rootless::no_bridges("network create")));
        }
        if matches!(name.as_str(), "bridge" | "host" | "none") {
            return Err(EngineError::Forbidden(format!(
                "{name} is a pre-defined network and cannot be created"
            )));
        }
        let driver = if req.driver.is_empty() {
            "bridge"
        } else {
            &req.driver
        };
        if driver != "bridge" {
            return Err(bad(format!(
                "plugin \"{driver}\" not found: only the bridge driver is supported"
            )));
        }
        let options = req.options.clone().unwrap_or_default();
        let labels = req.labels.clone().unwrap_or_default();
        let cfgs = req
            .ipam
            .as_ref()
            .and_then(|i| i.config.clone())
            .unwrap_or_default();
        let (v6, v4): (Vec<_>, Vec<_>) = cfgs.iter().partition(|c| c.subnet.contains(':'));
        if v4.len() > 1 {
            return Err(bad("only one IPv4 subnet per network is supported".into()));
        }
        if v6.len() > 1 {
            return Err(bad("only one IPv6 subnet per network is supported".into()));
        }
        if !v6.is_empty() && !req.enable_ipv6 {
            return Err(bad(
                "an IPv6 subnet was given but IPv6 is not enabled on the network (--ipv6)".into(),
            ));
        }
        let parse_net = |s: &str, k: &str| -> Result<Option<Ipv4Net>> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse()
                .map(Some)
                .map_err(|e| bad(format!("invalid {k}: {e}")))
        };
        // libnetwork's `ErrPoolOverlap`, a Forbidden error (403), in dockerd's words.
        let overlap = |o: &dyn std::fmt::Display| {
            tracing::debug!("{name}: the pool overlaps {o}");
            EngineError::Forbidden(
                "invalid pool request: Pool overlaps with other one on this address space".into(),
            )
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
        let free_subnet = || -> Result<Ipv4Net> {
            let mut taken = host_taken();
            taken.extend(others.iter().copied());
            Ok(ipam::pick_subnet(&self.opts.subnet_candidates(), &taken)?)
        };
        let pool = match v4.first() {
            Some(c) => {
                let subnet = parse_net(&c.subnet, "Subnet")?;
                let range = parse_net(&c.ip_range, "IPRange")?;
                let gw = match c.gateway.as_str() {
                    "" => None,
                    g => Some(
                        g.parse::<Ipv4Addr>()
                            .map_err(|_| bad(format!("invalid gateway address {g}")))?,
                    ),
                };
                let subnet = match subnet {
                    Some(s) => s,
                    None => free_subnet()?,
                };
                if let Some(o) = others.iter().find(|o| o.overlaps(&subnet)) {
                    return Err(overlap(o));
                }
                Pool::new(subnet, gw, range)?
            }
            None => Pool::new(free_subnet()?, None, None)?,
        };
        let id = util::new_id();
        let pool6 = if req.enable_ipv6 {
            let others6: Vec<Ipv6Net> = st
                .networks
                .values()
                .filter_map(|n| n.pool6.as_ref().map(|p| p.subnet))
                .collect();
            let (subnet, gw) = match v6.first() {
                Some(c) => {
                    let subnet: Ipv6Net = c
                        .subnet
                        .parse()
                        .map_err(|e| bad(format!("invalid Subnet: {e}")))?;
                    let gw = match c.gateway.as_str() {
                        "" => None,
                        g => Some(
                            g.parse::<Ipv6Addr>()
                                .map_err(|_| bad(format!("invalid gateway address {g}")))?,
                        ),
                    };
                    if let Some(o) = others6.iter().find(|o| o.overlaps(&subnet)) {
                        return Err(overlap(o));
                    }
                    (subnet, gw)
                }
                None => {
                    let mut taken = netlink::ipv6_taken().unwrap_or_default();
                    taken.extend(others6.iter().copied());
                    (ipam::pick_ula(&id, &taken)?, None)
                }
            };
            Some(Pool6::new(subnet, gw)?)
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
            bridge: bridge.clone(),
            pool: Some(pool.clone()),
            pool6,
            internal: req.internal,
            attachable: req.attachable,
            labels,
            options,
            ipam_options: req.ipam.as_ref().and_then(|i| i.options.clone()),
            aux_addresses: v4
                .first()
                .and_then(|c| c.auxiliary_addresses.clone())
                .unwrap_or_default(),
            ..new_network(&name, "bridge", false)
        };
        // Recorded first: after a crash the next start creates the missing bridge, so no
        // bridge ever exists without its network.
        let gw6 = net.gw6();
        let created = net.clone();
        st.networks.insert(id.clone(), net);
        let res = self.file.save(&st).and_then(|_| {
            if gw6.is_some() {
                firewall::enable_ipv6_forward()
                    .map_err(EngineError::sys("enabling IPv6 forwarding"))?;
            }
            netlink::ensure_bridge(&bridge, pool.gateway, pool.subnet.prefix, gw6, None)
                .map_err(EngineError::netlink(format!("creating bridge {bridge}")))?;
            self.apply_firewall(&st)
        });
        if let Err(e) = res {
            st.networks.remove(&id);
            let _ = netlink::delete_link(&bridge);
            let _ = self.file.save(&st);
            let _ = self.apply_firewall(&st);
            return Err(e);
        }
        drop(st);
        self.event("create", &created, None);
        Ok((id, String::new()))
    }

    /// The containers this daemon has attached (running ones).
    pub fn running_ids(&self) -> std::collections::HashSet<String> {
        self.running.lock().unwrap().keys().cloned().collect()
    }

    /// `DELETE /networks/{id}`; returns the network's name. As dockerd, whose stopped
    /// containers hold no endpoint, only running containers keep a network: the endpoints
    /// of stopped ones become networks named at create again, resolved at their next start
    /// (a network of that name then, else the start fails).
    pub fn remove_network(&self, key: &str) -> Result<String> {
        let running = self.running_ids();
        let mut st = self.state.lock().unwrap();
        let n = st.find(key)?.clone();
        if n.builtin {
            return Err(EngineError::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if st.in_use_by(&n.id, &running) {
            return Err(EngineError::Forbidden(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        netlink::delete_link(&n.bridge).map_err(EngineError::netlink(format!(
            "deleting bridge {}",
            n.bridge
        )))?;
        st.release_endpoints_on(&n);
        st.networks.remove(&n.id);
        self.file.save(&st)?;
        self.apply_firewall(&st)?;
        drop(st);
        self.event("destroy", &n, None);
        Ok(n.name)
    }

    /// `POST /networks/prune`: unused user-defined networks (`label`, `label!` and `until`
    /// filters, dockerd's accepted ones; `until` a time before which they were created).
    pub fn prune(&self, filters: &Filters) -> Result<Vec<String>> {
        if let Some((k, _)) = filters
            .0
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "label" | "label!" | "until"))
        {
            return Err(EngineError::BadRequest(format!("invalid filter '{k}'")));
        }
        let mut until = None;
        for v in filters.get("until") {
            let t = crate::events::parse_time(v)
                .ok_or_else(|| EngineError::BadRequest(format!("invalid filter 'until={v}'")))?;
            until = Some(t);
        }
        let running = self.running_ids();
        let candidates: Vec<String> = {
            let st = self.state.lock().unwrap();
            st.networks
                .values()
                .filter(|n| !n.builtin && !st.in_use_by(&n.id, &running))
                .filter(|n| filters.prune_labels_match(|v| n.matches_label(v)))
                .filter(|n| {
                    until.is_none_or(|u| {
                        crate::events::parse_time(&n.created).is_some_and(|c| c < u)
                    })
                })
                .map(|n| n.id.clone())
                .collect()
        };
        Ok(candidates
            .iter()
            .filter_map(|id| self.remove_network(id).ok())
            .collect())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_bridge() {
        let mut o = NetOptions::default();
        assert_eq!(o.table(), "berth");
        o.bridge = "bt-1.2".into();
        assert_eq!(o.table(), "berth_bt_1_2");
        assert_eq!(o.chain_prefix(), "BERTH-BT-1-2");
    }
}
