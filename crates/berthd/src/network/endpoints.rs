//! A container's endpoints: allocated at create (addresses kept until removal), set up after
//! the runtime created the container (veths, published ports, embedded DNS), torn down at
//! exit, released at removal; `network connect`/`disconnect`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::network::{EndpointSettings, NetworkingConfig, ENDPOINT_SYSCTLS};
use berth_network::dns::{self, Answer, DnsServer};
use berth_network::etc::{self, DnsOverrides};
use berth_network::netlink::{self, Netns, VethSpec};
use berth_network::proxy;
use berth_network::resolv::{self, ResolvConf, Transform};
use berth_network::{Ipv4Net, Ipv6Net};

use super::manager::{Manager, Running};
use super::ports::{self, bind_port, wanted_ports, WantPort};
use super::state::{CNet, Endpoint, NetState, Network, PendingEndpoint, PortMap};
use crate::engine::{Container, Peers};
use crate::error::{EngineError, Result};
use crate::util;

/// What `prepare` gives the bundle: `/etc/hosts` and `resolv.conf`, and the network
/// namespace to join (`container:<x>`).
pub struct Plan {
    pub hosts: String,
    pub resolv: String,
    pub netns_path: Option<PathBuf>,
}

/// Whether dockerd's `NetworkMode(name).IsUserDefined()` is false for a network name.
fn predefined_network(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none" | "default") || name.starts_with("container:")
}

/// dockerd's `validateEndpointSettings` without a network: static addresses and aliases on a
/// `predefined` network (by its name), address syntax, MAC address, interface sysctls. Its
/// message, prefixed by the caller (create names the network).
pub(super) fn endpoint_settings_error(cfg: &EndpointSettings, predefined: bool) -> Option<String> {
    let mut errs: Vec<String> = predefined_network_errors(predefined, cfg)
        .into_iter()
        .map(str::to_string)
        .collect();
    if let Some(ipam) = &cfg.ipam_config {
        let bad = |a: &str, v4: bool| match a.parse::<IpAddr>() {
            Ok(ip) => ip.is_ipv4() != v4 || ip.is_unspecified(),
            Err(_) => true,
        };
        if !ipam.ipv4_address.is_empty() && bad(&ipam.ipv4_address, true) {
            errs.push(format!("invalid IPv4 address: {}", ipam.ipv4_address));
        }
        if !ipam.ipv6_address.is_empty() && bad(&ipam.ipv6_address, false) {
            errs.push(format!("invalid IPv6 address: {}", ipam.ipv6_address));
        }
        for a in ipam.link_local_ips.iter().flatten() {
            if a.parse::<IpAddr>().map_or(true, |ip| ip.is_unspecified()) {
                errs.push(format!("invalid link-local IP address: {a}"));
            }
        }
    }
    if !cfg.mac_address.is_empty() && etc::parse_mac(&cfg.mac_address).is_none() {
        return Some(format!("invalid MAC address {}", cfg.mac_address));
    }
    if let Some(list) = cfg
        .driver_opts
        .as_ref()
        .and_then(|o| o.get(ENDPOINT_SYSCTLS))
    {
        for sc in list.split(',') {
            if parse_sysctl(sc).is_none() {
                errs.push(format!("unrecognised network interface sysctl '{sc}'; represent 'net.X.Y.ethN.Z=V' as 'net.X.Y.IFNAME.Z=V', 'X' must be 'ipv4', 'ipv6' or 'mpls'"));
            }
        }
    }
    // dockerd's `multierror.Join`: one error bare, several as a list.
    let joined = match errs.as_slice() {
        [] => return None,
        [one] => one.clone(),
        all => format!("* {}", all.join("\n* ")),
    };
    Some(format!("invalid endpoint settings:\n{joined}"))
}

/// What a predefined network refuses (dockerd's `ErrUnsupportedNetworkAndIP` and
/// `ErrUnsupportedNetworkAndAlias`, in its order): static addresses and network-scoped aliases.
fn predefined_network_errors(predefined: bool, cfg: &EndpointSettings) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if !predefined {
        return errs;
    }
    if cfg
        .ipam_config
        .as_ref()
        .is_some_and(|i| !i.ipv4_address.is_empty() || !i.ipv6_address.is_empty())
    {
        errs.push("user specified IP address is supported on user defined networks only");
    }
    if cfg.aliases.as_ref().is_some_and(|a| !a.is_empty()) {
        errs.push("network-scoped alias is supported only for containers in user defined networks");
    }
    errs
}

/// One interface sysctl of [`ENDPOINT_SYSCTLS`] (`net.X.Y.IFNAME.Z=V`, `ifname` too, as
/// the CLI lower-cases it): the path below `/proc/sys` with `{}` for the interface, and the
/// value.
pub(super) fn parse_sysctl(sc: &str) -> Option<(String, String)> {
    let (name, value) = sc.split_once('=').unwrap_or((sc, ""));
    let parts: Vec<&str> = name.splitn(5, '.').collect();
    match parts.as_slice() {
        ["net", fam @ ("ipv4" | "ipv6" | "mpls"), y, "IFNAME" | "ifname", z] => Some((
            format!("net/{fam}/{y}/{{}}/{}", z.replace('.', "/")),
            value.to_string(),
        )),
        _ => None,
    }
}

/// The driver option naming an endpoint's interface in the container (dockerd 28).
const ENDPOINT_IFNAME: &str = "com.docker.network.endpoint.ifname";

fn custom_ifname(opts: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    opts.and_then(|o| o.get(ENDPOINT_IFNAME))
        .filter(|n| !n.is_empty())
        .cloned()
}

/// Interface names in endpoint order: a name given by [`ENDPOINT_IFNAME`] is kept, the others
/// get the lowest `ethN` not taken (libnetwork's `generateIfaceName`).
fn assign_ifnames(eps: &mut [Endpoint]) {
    let mut taken: Vec<String> = eps
        .iter()
        .filter_map(|e| custom_ifname(Some(&e.driver_opts)))
        .collect();
    for ep in eps.iter_mut() {
        if custom_ifname(Some(&ep.driver_opts)).is_some() {
            continue;
        }
        let name = (0..)
            .map(|n| format!("eth{n}"))
            .find(|n| !taken.contains(n))
            .expect("unbounded");
        taken.push(name.clone());
        ep.ifname = name;
    }
}

/// dockerd's prefix of the errors of a container's network setup at start (its
/// `errSetupNetworking`): such a start leaves the container created, its restart policy not
/// applied.
pub const SETUP_NETWORKING: &str = "failed to set up container networking";

fn parse_opt<T: std::str::FromStr>(s: &str, what: &str) -> Result<Option<T>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| EngineError::bad(format!("invalid {what} address: {s}")))
}

impl Manager {
    /// Creates an endpoint of `cid` on `net` (address allocated), without persisting.
    pub(super) fn new_endpoint(
        st: &NetState,
        cid: &str,
        net: &Network,
        cfg: Option<&EndpointSettings>,
        ifname: String,
        mac: Option<&str>,
    ) -> Result<Endpoint> {
        if net.driver != "bridge" {
            return Err(EngineError::bad(format!(
                "container cannot be connected to network {} (driver {})",
                net.name, net.driver
            )));
        }
        let pool = net
            .pool
            .as_ref()
            .ok_or_else(|| EngineError::Internal(format!("network {} has no pool", net.name)))?;
        let ipam = cfg.and_then(|c| c.ipam_config.clone()).unwrap_or_default();
        // Validated with the request already; a network that became predefined since (a
        // pending endpoint) is refused the same way.
        if let Some(e) =
            cfg.and_then(|c| predefined_network_errors(net.builtin, c).first().copied())
        {
            return Err(EngineError::bad(e));
        }
        let requested: Option<Ipv4Addr> = parse_opt(&ipam.ipv4_address, "IPv4")?;
        let used: std::collections::BTreeSet<Ipv4Addr> =
            st.endpoints_on(&net.id).map(|e| e.ip).collect();
        let ip = pool.allocate(&used, requested)?;
        let requested6: Option<Ipv6Addr> = parse_opt(&ipam.ipv6_address, "IPv6")?;
        let ip6 = match (&net.pool6, requested6) {
            (Some(p6), r) => {
                let used6 = st.endpoints_on(&net.id).filter_map(|e| e.ip6).collect();
                Some(p6.allocate(&used6, r)?)
            }
            (None, Some(_)) => {
                return Err(EngineError::bad(format!(
                    "invalid IPv6 address: network {} has no IPv6 (created without --ipv6)",
                    net.name
                )))
            }
            (None, None) => None,
        };
        let mac = mac.filter(|m| !m.is_empty()).or_else(|| {
            cfg.map(|c| c.mac_address.as_str())
                .filter(|m| !m.is_empty())
        });
        let mac = match mac {
            Some(m) => {
                let parsed = etc::parse_mac(m)
                    .ok_or_else(|| EngineError::bad(format!("invalid MAC address: {m}")))?;
                etc::mac_string(&parsed)
            }
            None => etc::mac_string(&etc::mac_for(ip)),
        };
        let mut aliases = cfg.and_then(|c| c.aliases.clone()).unwrap_or_default();
        aliases.dedup();
        let links = cfg.and_then(|c| c.links.clone()).unwrap_or_default();
        let ifname = custom_ifname(cfg.and_then(|c| c.driver_opts.as_ref())).unwrap_or(ifname);
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
            links,
            link_local_ips: ipam.link_local_ips.clone().unwrap_or_default(),
            driver_opts: cfg.and_then(|c| c.driver_opts.clone()).unwrap_or_default(),
            gw_priority: cfg.map_or(0, |c| c.gw_priority),
        })
    }

    /// Container create: validates the network settings and creates the endpoints.
    pub fn on_create(&self, c: &Container, nc: Option<&NetworkingConfig>) -> Result<()> {
        let hc = &c.host_config;
        super::ports::parse_port_bindings(hc.port_bindings.as_ref())?;
        for d in hc.dns.iter().flatten() {
            d.parse::<IpAddr>()
                .map_err(|_| EngineError::bad(format!("invalid DNS server address: {d}")))?;
        }
        self.extra_hosts(c)?;
        let mode = c.network_mode();
        let eps = nc.and_then(|n| n.endpoints_config.as_ref());
        for (k, v) in eps.into_iter().flatten() {
            // (dockerd's route names the default network `bridge` first.)
            let k = if k == "default" { "bridge" } else { k.as_str() };
            if let Some(e) = endpoint_settings_error(v, predefined_network(k)) {
                return Err(EngineError::bad(format!(
                    "invalid config for network {k}: {e}"
                )));
            }
        }
        let mut st = self.state.lock().unwrap();
        let mut wanted: Vec<(String, Option<EndpointSettings>)> = Vec::new();
        let mut pending: Vec<PendingEndpoint> = Vec::new();
        match mode {
            "host" | "none" => {
                // A rootless daemon's "default" network is the host's (see `crate::rootless`).
                let rootless_default = |k: &str| k == "default" && crate::rootless_net::host_only();
                if eps.is_some_and(|o| o.keys().any(|k| k != mode && !rootless_default(k))) {
                    return Err(EngineError::bad(if mode == "none" {
                        "container cannot be connected to multiple networks with one of the networks in private (none) mode"
                    } else {
                        "container sharing network namespace with another container or host cannot be connected to any other network"
                    }));
                }
            }
            // Its conflicts are checked with the request (`create::validate_net_mode`).
            m if m.starts_with("container:") => {}
            m if crate::rootless_net::host_only() => {
                return Err(EngineError::bad(crate::rootless::no_bridges(&format!(
                    "--network {m}"
                ))));
            }
            // A network that does not exist (yet) is resolved when the container starts:
            // dockerd's create keeps the names as given (`updateContainerNetworkSettings`)
            // and its start fails while one is still missing.
            m => {
                let key = if m == "default" { "bridge" } else { m };
                match st.find(key) {
                    Ok(net) => {
                        let cfg = eps.and_then(|e| {
                            e.get(m)
                                .or_else(|| e.get(&net.name))
                                .or_else(|| e.get(&net.id))
                                .cloned()
                        });
                        wanted.push((net.id.clone(), cfg));
                    }
                    Err(EngineError::Missing(_)) => pending.push(PendingEndpoint {
                        key: m.to_string(),
                        settings: eps.and_then(|e| e.get(m)).cloned(),
                        primary: true,
                    }),
                    Err(e) => return Err(e),
                }
                for (k, v) in eps.into_iter().flatten() {
                    let key = if k == "default" { "bridge" } else { k.as_str() };
                    match st.find(key) {
                        Ok(n) => {
                            if !wanted.iter().any(|(id, _)| id == &n.id) {
                                wanted.push((n.id.clone(), Some(v.clone())));
                            }
                        }
                        Err(EngineError::Missing(_)) => {
                            if !pending.iter().any(|p| p.key == *k) {
                                pending.push(PendingEndpoint {
                                    key: k.clone(),
                                    settings: Some(v.clone()),
                                    primary: false,
                                });
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if wanted.is_empty() && pending.is_empty() {
            // `none`, `host`, `container:`: no endpoint, nothing to record (or to sync to disk).
            return Ok(());
        }
        let mut cn = CNet {
            name: c.short_name().to_string(),
            hostname: c.config.hostname.clone(),
            pending,
            ..CNet::default()
        };
        let primary_pending = cn.pending.iter().any(|p| p.primary);
        for (i, (nid, cfg)) in wanted.iter().enumerate() {
            let net = st.networks[nid].clone();
            let mac = (i == 0 && !primary_pending).then_some(c.config.mac_address.as_str());
            let ep = Self::new_endpoint(&st, &c.id, &net, cfg.as_ref(), format!("eth{i}"), mac)?;
            // Reserve within this create too.
            st.containers
                .entry(c.id.clone())
                .or_default()
                .endpoints
                .push(ep.clone());
            cn.endpoints.push(ep);
        }
        assign_ifnames(&mut cn.endpoints);
        st.containers.insert(c.id.clone(), cn);
        self.file.save_soon(&st)
    }

    /// `ExtraHosts` as (name, address), `host-gateway` resolved.
    fn extra_hosts(&self, c: &Container) -> Result<Vec<(String, String)>> {
        self.parse_extra_hosts(c.host_config.extra_hosts.as_deref().unwrap_or_default())
    }

    /// `name:ip` (or `name=ip`) entries as (name, address), `host-gateway` resolved.
    pub(super) fn parse_extra_hosts(&self, list: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for s in list {
            let (name, ip) = s
                .split_once('=')
                .or_else(|| s.split_once(':'))
                .ok_or_else(|| EngineError::bad(format!("invalid extra host: {s}")))?;
            let ip = if ip == "host-gateway" {
                self.default_gateway()
                    .map(|g| g.to_string())
                    .ok_or_else(|| {
                        EngineError::bad("host-gateway: the default bridge has no gateway")
                    })?
            } else {
                let t = ip.trim_start_matches('[').trim_end_matches(']');
                t.parse::<IpAddr>().map_err(|_| {
                    EngineError::bad(format!("invalid IP address in add-host: {ip:?}"))
                })?;
                t.to_string()
            };
            out.push((name.to_string(), ip));
        }
        Ok(out)
    }

    /// `/etc/hosts` and `resolv.conf` of a process joining the network namespace of running
    /// container `other` (`--network container:`): its own name on the other's first address,
    /// the embedded DNS server when the other has one.
    pub(super) fn joined_files(
        &self,
        other: &str,
        hostname: &str,
        domainname: &str,
        overrides: &DnsOverrides,
        extra: &[(String, String)],
    ) -> (String, String) {
        let st = self.state.lock().unwrap();
        let other = st.containers.get(other);
        let own = other
            .and_then(|o| o.endpoints.first())
            .map(|e| e.own_hosts(hostname, domainname))
            .unwrap_or_default();
        let embedded = other.is_some_and(|o| st.any_dns(&o.endpoints));
        drop(st);
        let (resolv, _) = resolv::generate(&self.host_resolv, overrides, transform(embedded));
        (etc::hosts(extra, &own), resolv)
    }

    /// Start (blocking): the hosts and resolv.conf bodies and the namespace to join.
    pub fn prepare(&self, c: &Container, hostname: &str, peers: &dyn Peers) -> Result<Plan> {
        let mode = c.network_mode();
        let overrides = dns_overrides(c);
        let extra = self.extra_hosts(c)?;
        if let Some(x) = mode.strip_prefix("container:") {
            let (oid, pid) = peers.running(x).ok_or_else(|| {
                EngineError::Conflict(format!(
                    "cannot join network namespace of container {x}: it is not running"
                ))
            })?;
            if oid == c.id {
                return Err(EngineError::bad("cannot join own network namespace"));
            }
            let (hosts, resolv) =
                self.joined_files(&oid, hostname, &c.config.domainname, &overrides, &extra);
            return Ok(Plan {
                hosts,
                resolv,
                netns_path: Some(format!("/proc/{pid}/ns/net").into()),
            });
        }
        if mode == "host" {
            let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (n, ip) in &extra {
                hosts += &format!("{ip}\t{n}\n");
            }
            // The host's own file, whatever systemd-resolved keeps (dockerd's origin path
            // for the host's network).
            let host =
                ResolvConf::parse(&std::fs::read_to_string(resolv::HOST_PATH).unwrap_or_default());
            let (resolv, _) = resolv::generate(&host, &overrides, Transform::Host);
            return Ok(Plan {
                hosts,
                resolv,
                netns_path: None,
            });
        }
        self.resolve_pending(c)?;
        let known = self.state.lock().unwrap().containers.contains_key(&c.id);
        // (`none` containers have no endpoints and are not recorded at all.)
        if !known && mode != "none" {
            // Only after a power loss took the endpoints written at create: allocate again
            // (requested addresses and aliases were in the lost record).
            tracing::warn!(
                "container {}: network endpoints missing from the state, allocating again",
                &c.id[..12]
            );
            self.on_create(c, None)?;
        }
        let mut st = self.state.lock().unwrap();
        let cn = st.containers.entry(c.id.clone()).or_default();
        let v6_off = ipv6_disabled(c);
        if v6_off && cn.endpoints.iter().any(|e| e.ip6.is_some()) {
            // As dockerd creates the endpoints of a container without IPv6: no IPv6 address
            // (released), none on its interfaces.
            for e in cn.endpoints.iter_mut() {
                e.ip6 = None;
            }
            self.file.save(&st)?;
        }
        let cn = st.containers.entry(c.id.clone()).or_default();
        // A line (or two, with IPv6) for each network it joins, in their order, as libnetwork
        // adds them at each join.
        let own: Vec<_> = cn
            .endpoints
            .iter()
            .flat_map(|e| e.own_hosts(hostname, &c.config.domainname))
            .collect();
        let eps = cn.endpoints.clone();
        let t = start_transform(&st, &eps);
        let (resolv, upstream) = resolv::generate(&self.host_resolv, &overrides, t);
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
        let hosts = match v6_off {
            true => etc::hosts_no_ipv6(&hosts),
            false => hosts,
        };
        Ok(Plan {
            hosts,
            resolv,
            netns_path: None,
        })
    }

    /// Start: the endpoints on networks named at create that did not exist then, allocated
    /// now (the container's `NetworkMode` first, `eth0`). A network still missing fails the
    /// start as dockerd's does (404), nothing allocated.
    fn resolve_pending(&self, c: &Container) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        let Some(orig) = st.containers.get(&c.id).filter(|cn| !cn.pending.is_empty()) else {
            return Ok(());
        };
        let orig = orig.clone();
        let res = (|| {
            for p in &orig.pending {
                let net = st
                    .find(&p.key)
                    .map_err(|e| e.prefixed(SETUP_NETWORKING))?
                    .clone();
                let cn = &st.containers[&c.id];
                if cn.endpoints.iter().any(|e| e.network == net.id) {
                    continue;
                }
                let mac = p.primary.then_some(c.config.mac_address.as_str());
                let ep =
                    Self::new_endpoint(&st, &c.id, &net, p.settings.as_ref(), String::new(), mac)?;
                let eps = &mut st.containers.get_mut(&c.id).expect("checked").endpoints;
                if p.primary {
                    eps.insert(0, ep);
                } else {
                    eps.push(ep);
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            st.containers.insert(c.id.clone(), orig);
            return Err(e);
        }
        let cn = st.containers.get_mut(&c.id).expect("checked");
        cn.pending.clear();
        // Not running: no interface exists, the names follow the new order.
        assign_ifnames(&mut cn.endpoints);
        self.file.save_soon(&st)
    }

    /// After `berth-runtime create` (the init waits for `start`): loopback, veths, published
    /// ports, DNS. On error everything done here is undone.
    pub fn attach(&self, c: &Container, pid: i64) -> Result<()> {
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
                .map_err(EngineError::netlink("setting up the loopback interface"));
        }
        let t0 = std::time::Instant::now();
        let res = self.attach_inner(c, &ns);
        tracing::debug!("network attach of {} took {:?}", &c.id[..12], t0.elapsed());
        if res.is_err() {
            self.on_exit(&c.id);
            self.delete_veths_by_name(&c.id);
        } else {
            for net in self.networks_of(&c.id) {
                self.event("connect", &net, Some(&c.id));
            }
        }
        res
    }

    fn attach_inner(&self, c: &Container, ns: &Netns) -> Result<()> {
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
        let gw = gateway_index(&eps, &nets);
        let specs = eps
            .iter()
            .zip(nets.iter())
            .enumerate()
            .map(|(i, (ep, net))| veth_spec(ep, net, i == gw))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        let links = netlink::attach_all(ns, &specs).map_err(EngineError::netlink(format!(
            "attaching to network {}",
            names.join(", ")
        )))?;
        let target = self
            .state
            .lock()
            .unwrap()
            .publishing_endpoint(&eps)
            .cloned();
        let (proxies, maps) = match &target {
            Some(ep) => self.publish(c, ep)?,
            None => (Vec::new(), Vec::new()),
        };
        let dns = if nets.iter().any(Network::dns) {
            Some(self.dns_server(&c.id, ns)?)
        } else {
            None
        };
        if !maps.is_empty() {
            let mut st = self.state.lock().unwrap();
            if let Some(cn) = st.containers.get_mut(&c.id) {
                cn.ports = maps;
            }
            self.file.save(&st)?;
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

    /// Publishes the container's ports to endpoint `ep`: binds them now (conflicts fail the
    /// start), the proxies and (with the maps recorded) DNAT. A port published on every
    /// address is bound on [::] too (one host port for both) when the host can listen on
    /// IPv6, as dockerd does: to the container's IPv6 address, else by the proxy alone to its
    /// IPv4 address.
    fn publish(&self, c: &Container, ep: &Endpoint) -> Result<(Vec<proxy::Proxy>, Vec<PortMap>)> {
        let mut proxies = Vec::new();
        let mut maps = Vec::new();
        let v6 = ports::v6_listenable() && !crate::rootless_net::isolated();
        for want in wanted_ports(c)? {
            let mut group = vec![want.clone()];
            if want.host_ip.is_empty() && v6 {
                group.push(WantPort {
                    host_ip: "::".into(),
                    ..want.clone()
                });
            }
            let targets: Vec<IpAddr> = group.iter().map(|w| ep.target_ip(&w.host_ip)).collect();
            let published = |proto: &str, ip: IpAddr, port: u16| self.publishes(proto, ip, port);
            let ctx = ports::BindCtx {
                targets: &targets,
                published: &published,
            };
            let (bound, port) = ports::bind_ports(&group, &ctx).map_err(|e| match e {
                // dockerd names the endpoint (the container's name and the endpoint's ID).
                EngineError::Internal(m) => EngineError::Internal(m.replacen(
                    "on endpoint:",
                    &format!("on endpoint {} ({}):", c.short_name(), ep.endpoint_id),
                    1,
                )),
                e => e,
            })?;
            for (w, bound) in group.iter().zip(bound) {
                let target = SocketAddr::new(ep.target_ip(&w.host_ip), w.container_port);
                let tags = self.proxy_tags(&c.id, &w.proto, &w.host_ip, port);
                let proxy = bound
                    .spawn_process(Path::new("/proc/self/exe"), target, &tags)
                    .map_err(EngineError::sys("starting a port's proxy"))?;
                proxies.push(proxy);
                maps.push(PortMap {
                    proto: w.proto.clone(),
                    host_ip: w.host_ip.clone(),
                    host_port: port,
                    container_port: w.container_port,
                });
            }
        }
        Ok((proxies, maps))
    }

    /// The address on which one of the containers publishes host port `port` (`proto`)
    /// that `ip` overlaps: the same one, or either is every address of the family (dockerd's
    /// port allocator's rule).
    fn publishes(&self, proto: &str, ip: IpAddr, port: u16) -> Option<IpAddr> {
        let st = self.state.lock().unwrap();
        st.containers
            .values()
            .flat_map(|cn| &cn.ports)
            .filter(|p| p.proto == proto && p.host_port == port)
            .map(|p| {
                p.host_ip
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            })
            .find(|held| {
                held.is_ipv4() == ip.is_ipv4()
                    && (*held == ip || held.is_unspecified() || ip.is_unspecified())
            })
    }

    fn plug(&self, ns: &Netns, ep: &Endpoint, net: &Network, primary: bool) -> Result<u32> {
        let spec = veth_spec(ep, net, primary)?;
        netlink::attach_veth(ns, &spec).map_err(EngineError::netlink(format!(
            "attaching to network {}",
            net.name
        )))
    }

    pub(super) fn dns_server(&self, cid: &str, ns: &Netns) -> Result<DnsServer> {
        let me = self.me.clone();
        let cid2 = cid.to_string();
        let lookup: dns::Lookup = Arc::new(move |name: &str| match me.upgrade() {
            Some(m) => m.resolve(&cid2, name),
            None => Answer::Forward(vec![]),
        });
        dns::serve_in(ns, lookup).map_err(EngineError::sys("starting the embedded DNS server"))
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
            let Some(net) = st.networks.get(&ep.network).filter(|n| n.dns()) else {
                continue;
            };
            // An endpoint link's alias names its container, for this container only.
            let linked = ep.links.iter().find_map(|l| {
                let (target, alias) = l.split_once(':').unwrap_or((l, l));
                (alias.to_ascii_lowercase() == name).then(|| target.to_ascii_lowercase())
            });
            let name = linked.unwrap_or_else(|| name.clone());
            for (oid, other) in &st.containers {
                let oname = other.name.to_ascii_lowercase();
                let ohost = other.hostname.to_ascii_lowercase();
                for oe in other.endpoints.iter().filter(|e| e.network == ep.network) {
                    let hit = oname == name
                        || (!ohost.is_empty() && ohost == name)
                        || oe.aliases.iter().any(|a| a.to_ascii_lowercase() == name)
                        || (name.len() == 12 && oid.starts_with(&name))
                        || name == format!("{oname}.{}", net.name.to_ascii_lowercase());
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
        for net in self.networks_of(cid) {
            self.event("disconnect", &net, Some(cid));
        }
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

    /// The networks a container has endpoints on.
    fn networks_of(&self, cid: &str) -> Vec<Network> {
        let st = self.state.lock().unwrap();
        st.containers
            .get(cid)
            .map(|cn| {
                cn.endpoints
                    .iter()
                    .filter_map(|e| st.networks.get(&e.network).cloned())
                    .collect()
            })
            .unwrap_or_default()
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
        self.save_and_apply_logged(&st);
    }

    /// `rename`: the embedded DNS answers the new name at once (dockerd updates its
    /// endpoints' DNS names).
    pub fn on_rename(&self, cid: &str, new: &str) {
        let mut st = self.state.lock().unwrap();
        let Some(cn) = st.containers.get_mut(cid) else {
            return;
        };
        cn.name = new.to_string();
        if let Err(e) = self.file.save_soon(&st) {
            tracing::warn!("saving network state: {e}");
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
            .is_some_and(|cn| !cn.endpoints.is_empty() || !cn.pending.is_empty())
        {
            if let Err(e) = self.file.save_soon(&st) {
                tracing::warn!("saving network state: {e}");
            }
        }
    }

    /// What identifies the proxy process of a published port: this daemon's network state,
    /// the container, the host side.
    fn proxy_tags(&self, id: &str, proto: &str, host_ip: &str, port: u16) -> Vec<String> {
        vec![
            format!("--state={}", self.file.path().display()),
            format!("--container={id}"),
            format!("--host={proto}/{host_ip}/{port}"),
        ]
    }

    /// Daemon start: forget endpoints of containers that no longer exist, clear ports of
    /// stopped ones, and re-adopt running ones (proxies on the same host ports, DNS servers).
    pub fn adopt(&self, containers: &[Container]) {
        // Proxy processes of containers that are not running (any more) go.
        let state_tag = format!("--state={}", self.file.path().display());
        for (pid, args) in proxy::find_processes(std::slice::from_ref(&state_tag)) {
            let running = containers
                .iter()
                .any(|c| c.state.running && args.contains(&format!("--container={}", c.id)));
            if !running {
                drop(proxy::Proxy::adopt(pid));
            }
        }
        let known: HashMap<&str, &Container> =
            containers.iter().map(|c| (c.id.as_str(), c)).collect();
        #[allow(clippy::type_complexity)]
        let running: Vec<(String, i64, Vec<PortMap>, Vec<Endpoint>, Option<Endpoint>)> = {
            let mut st = self.state.lock().unwrap();
            st.containers
                .retain(|id, _| known.contains_key(id.as_str()));
            for (id, cn) in st.containers.iter_mut() {
                if !known[id.as_str()].state.running {
                    cn.ports.clear();
                }
            }
            self.save_and_apply_logged(&st);
            st.containers
                .iter()
                .filter(|(id, _)| known[id.as_str()].state.running)
                .map(|(id, cn)| {
                    (
                        id.clone(),
                        known[id.as_str()].state.pid,
                        cn.ports.clone(),
                        cn.endpoints.clone(),
                        st.publishing_endpoint(&cn.endpoints).cloned(),
                    )
                })
                .collect()
        };
        for (id, pid, ports, eps, target) in running {
            let ns = Netns::of_pid(pid as u32);
            if !ns.0.exists() {
                continue;
            }
            let mut proxies = Vec::new();
            if let Some(primary) = target {
                for p in &ports {
                    let want = WantPort {
                        proto: p.proto.clone(),
                        host_ip: p.host_ip.clone(),
                        host_port: p.host_port.to_string(),
                        container_port: p.container_port,
                    };
                    let target = SocketAddr::new(primary.target_ip(&p.host_ip), p.container_port);
                    // The proxy process that kept the port while no daemon ran, else a new one.
                    let tags = self.proxy_tags(&id, &p.proto, &p.host_ip, p.host_port);
                    if let Some((pid, _)) = proxy::find_processes(&tags).first() {
                        proxies.push(proxy::Proxy::adopt(*pid));
                        continue;
                    }
                    let ctx = ports::BindCtx {
                        targets: &[target.ip()],
                        published: &|_, _, _| None,
                    };
                    match bind_port(&want, &ctx).and_then(|(b, _)| {
                        b.spawn_process(Path::new("/proc/self/exe"), target, &tags)
                            .map_err(EngineError::sys("starting a port's proxy"))
                    }) {
                        Ok(px) => proxies.push(px),
                        Err(e) => tracing::warn!("re-publishing port {} of {id}: {e}", p.host_port),
                    }
                }
            }
            let dns = if self.state.lock().unwrap().any_dns(&eps) {
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

    /// `network connect`: a new endpoint; plugged in now when the container runs.
    pub fn connect(&self, c: &Container, key: &str, cfg: Option<&EndpointSettings>) -> Result<()> {
        if crate::rootless_net::host_only() {
            return Err(EngineError::bad(crate::rootless::no_bridges(
                "network connect",
            )));
        }
        // dockerd's `connectToNetwork` and `updateNetworkSettings`, in their order.
        let mode = c.network_mode();
        let shared = "container sharing network namespace with another container or host cannot be connected to any other network";
        let no_network = "container cannot be connected to multiple networks with one of the networks in private (none) mode";
        if mode.starts_with("container:") {
            return Err(EngineError::bad(shared));
        }
        let (ep, net, primary) = {
            let mut st = self.state.lock().unwrap();
            let net = st.find(key)?.clone();
            // The settings against the network found, before its conflicts (dockerd's
            // `updateNetworkConfig`, then `updateNetworkSettings` and the endpoint).
            if let Some(e) =
                cfg.and_then(|c| endpoint_settings_error(c, predefined_network(&net.name)))
            {
                return Err(EngineError::bad(e));
            }
            if mode != "host" && net.driver == "host" {
                return Err(EngineError::bad("cannot connect container to host network - container must be created in host network mode"));
            }
            if mode == "host" {
                return Err(EngineError::bad(shared));
            }
            let connected = st
                .containers
                .get(&c.id)
                .is_some_and(|x| !x.endpoints.is_empty());
            if mode == "none" || (net.driver == "null" && connected) {
                return Err(EngineError::bad(no_network));
            }
            let cn = st.containers.get(&c.id).cloned().unwrap_or_default();
            if cn.endpoints.iter().any(|e| e.network == net.id) {
                return Err(EngineError::Forbidden(format!(
                    "endpoint with name {} already exists in network {}",
                    c.short_name(),
                    net.name
                )));
            }
            let mut n = 0;
            while cn.endpoints.iter().any(|e| e.ifname == format!("eth{n}")) {
                n += 1;
            }
            let mut ep = Self::new_endpoint(&st, &c.id, &net, cfg, format!("eth{n}"), None)?;
            if ipv6_disabled(c) {
                ep.ip6 = None;
            }
            let primary = cn.endpoints.is_empty();
            let e = st.containers.entry(c.id.clone()).or_default();
            e.name = c.short_name().to_string();
            e.hostname.clone_from(&c.config.hostname);
            e.endpoints.push(ep.clone());
            // The same network named at create before it existed: connected now.
            e.pending
                .retain(|p| p.key != net.name && !net.id.starts_with(&p.key));
            self.file.save(&st)?;
            (ep, net, primary)
        };
        if c.state.running {
            let ns = Netns::of_pid(c.state.pid as u32);
            match self.plug(&ns, &ep, &net, primary) {
                Ok(idx) => {
                    crate::failpoint::hit("network.connect");
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
            if !primary {
                self.reroute(c, &ns)?;
            }
            self.publish_on_connect(c)?;
            self.rewrite_hosts(c, |h| {
                etc::hosts_add(h, &ep.own_hosts(&c.hostname(), &c.config.domainname))
            });
            if net.dns() {
                let started = {
                    let mut run = self.running.lock().unwrap();
                    match run.get_mut(&c.id) {
                        Some(r) if r.dns.is_none() => {
                            r.dns = Some(self.dns_server(&c.id, &ns)?);
                            true
                        }
                        _ => false,
                    }
                };
                if started {
                    self.use_embedded_dns(c);
                }
            }
            self.event("connect", &net, Some(&c.id));
        }
        Ok(())
    }

    /// A running container whose ports are not published (its networks were all internal)
    /// was connected to another network: they are published to its gateway endpoint now
    /// (when that is not internal).
    fn publish_on_connect(&self, c: &Container) -> Result<()> {
        let target = {
            let st = self.state.lock().unwrap();
            st.containers
                .get(&c.id)
                .filter(|cn| cn.ports.is_empty())
                .and_then(|cn| st.publishing_endpoint(&cn.endpoints).cloned())
        };
        let Some(ep) = target else {
            return Ok(());
        };
        if wanted_ports(c)?.is_empty() {
            return Ok(());
        }
        let (proxies, maps) = self.publish(c, &ep)?;
        {
            let mut st = self.state.lock().unwrap();
            if let Some(cn) = st.containers.get_mut(&c.id) {
                cn.ports = maps;
            }
            self.file.save(&st)?;
            self.apply_firewall(&st)?;
        }
        if let Some(r) = self.running.lock().unwrap().get_mut(&c.id) {
            r.proxies.extend(proxies);
        }
        Ok(())
    }

    /// A running container just got the embedded DNS (`network connect` to a user network):
    /// its `resolv.conf` now names it, the servers it named before become the upstream ones,
    /// as Docker does.
    /// A file the user changed since the start is left as it is (its header says so), as
    /// dockerd leaves it.
    fn use_embedded_dns(&self, c: &Container) {
        let overrides = dns_overrides(c);
        let (resolv, upstream) =
            resolv::generate(&self.host_resolv, &overrides, Transform::Internal);
        let was = {
            let mut st = self.state.lock().unwrap();
            let Some(cn) = st.containers.get_mut(&c.id) else {
                return;
            };
            cn.upstream = upstream;
            let first = cn.endpoints.first().cloned();
            let t = start_transform(&st, first.as_slice());
            resolv::generate(&self.host_resolv, &overrides, t).0
        };
        let p = self.containers_dir.join(&c.id).join("resolv.conf");
        if std::fs::read_to_string(&p).is_ok_and(|now| now != was) {
            tracing::debug!("{} was changed in the container: kept", p.display());
            return;
        }
        // The file is bound into the container: rewritten in place (same inode).
        if let Err(e) = std::fs::write(&p, resolv) {
            tracing::warn!("rewriting {}: {e}", p.display());
        }
    }

    /// A running container's `/etc/hosts` rewritten by `f`, in place (the file is bound into
    /// the container: same inode), as libnetwork updates it at each join and leave.
    fn rewrite_hosts(&self, c: &Container, f: impl FnOnce(&str) -> String) {
        let p = self.containers_dir.join(&c.id).join("hosts");
        let res = std::fs::read_to_string(&p).and_then(|h| std::fs::write(&p, f(&h)));
        if let Err(e) = res {
            tracing::warn!("updating {}: {e}", p.display());
        }
    }

    fn drop_endpoint(&self, cid: &str, nid: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(cn) = st.containers.get_mut(cid) {
            cn.endpoints.retain(|e| e.network != nid);
        }
        let _ = self.file.save(&st);
    }

    /// `network disconnect`.
    pub fn disconnect(&self, c: &Container, key: &str) -> Result<()> {
        let ep = {
            let mut st = self.state.lock().unwrap();
            let found = st.find(key).map(|n| n.id.clone());
            if let (Err(EngineError::Missing(_)), false) = (&found, c.state.running) {
                // A network named at create that does not exist: forgotten (dockerd deletes
                // it from the container's settings).
                let cn = st.containers.get_mut(&c.id);
                if let Some(cn) = cn.filter(|cn| cn.pending.iter().any(|p| p.key == key)) {
                    cn.pending.retain(|p| p.key != key);
                    return self.file.save(&st);
                }
                // dockerd's words and status (a plain error) for a stopped container.
                return Err(EngineError::Internal(format!(
                    "container {} is not connected to the network {key}",
                    c.id
                )));
            }
            let net = st.find(key)?;
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
                .map_err(EngineError::netlink(format!("removing {}", ep.host_veth)))?;
            let net = self
                .state
                .lock()
                .unwrap()
                .networks
                .get(&ep.network)
                .cloned();
            if let Some(net) = net {
                self.event("disconnect", &net, Some(&c.id));
            }
            self.rewrite_hosts(c, |h| {
                etc::hosts_remove(h, &ep.own_hosts(&c.hostname(), &c.config.domainname))
            });
        }
        self.drop_endpoint(&c.id, &ep.network);
        if c.state.running {
            self.reroute(c, &Netns::of_pid(c.state.pid as u32))?;
        }
        let st = self.state.lock().unwrap();
        self.apply_firewall(&st)
    }

    /// A running container's endpoints changed: its default routes go via the endpoint
    /// [`gateway_index`] picks now (none without an endpoint or on an internal network).
    fn reroute(&self, c: &Container, ns: &Netns) -> Result<()> {
        let (eps, nets) = {
            let st = self.state.lock().unwrap();
            let eps: Vec<Endpoint> = st
                .containers
                .get(&c.id)
                .map(|x| x.endpoints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|e| st.networks.contains_key(&e.network))
                .collect();
            let nets: Vec<Network> = eps
                .iter()
                .map(|e| st.networks[&e.network].clone())
                .collect();
            (eps, nets)
        };
        let (ifname, gw4, gw6) = match eps.is_empty() {
            true => (String::new(), None, None),
            false => {
                let i = gateway_index(&eps, &nets);
                let spec = veth_spec(&eps[i], &nets[i], true)?;
                (spec.ifname, spec.gateway, spec.gateway6)
            }
        };
        netlink::set_default_routes(ns, &ifname, gw4, gw6).map_err(EngineError::netlink(format!(
            "default routes of {}",
            c.short_name()
        )))
    }
}

/// Whether the container has no IPv6: its sysctls disable it on every interface, or the
/// host's kernel has none (dockerd's probe of the container's loopback address, known here
/// before the runtime applies the sysctls).
fn ipv6_disabled(c: &Container) -> bool {
    let off = c
        .host_config
        .sysctls
        .as_ref()
        .and_then(|m| m.get("net.ipv6.conf.all.disable_ipv6"))
        .is_some_and(|v| v.trim() == "1");
    off || !Path::new("/proc/net/if_inet6").exists()
}

/// How a container's `resolv.conf` is made at start: for the embedded resolver when one of
/// its networks has it, else for its first network (without IPv6 servers unless that has
/// IPv6).
fn start_transform(st: &NetState, eps: &[Endpoint]) -> Transform {
    match eps.first().and_then(|e| st.networks.get(&e.network)) {
        _ if st.any_dns(eps) => Transform::Internal,
        Some(n) => Transform::Legacy {
            ipv6: n.pool6.is_some(),
        },
        None => Transform::Legacy { ipv6: false },
    }
}

/// How a container's `resolv.conf` is made: for the embedded resolver, or without it.
fn transform(embedded: bool) -> Transform {
    match embedded {
        true => Transform::Internal,
        false => Transform::Legacy { ipv6: false },
    }
}

/// A container's `Dns`, `DnsSearch` and `DnsOptions`.
fn dns_overrides(c: &Container) -> DnsOverrides {
    let hc = &c.host_config;
    DnsOverrides {
        servers: hc
            .dns
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect(),
        search: hc.dns_search.clone().unwrap_or_default(),
        options: hc.dns_options.clone().unwrap_or_default(),
    }
}

/// Which endpoint gives a container its default routes, as libnetwork orders them: the highest
/// `GwPriority`, then a non-internal network, then one with more gateways (IPv4 and IPv6),
/// then the network name that sorts first. `eps` and `nets` are parallel.
pub(super) fn gateway_index(eps: &[Endpoint], nets: &[Network]) -> usize {
    (0..eps.len().min(nets.len()))
        .min_by_key(|i| gateway_key(&eps[*i], &nets[*i]))
        .unwrap_or(0)
}

/// [`gateway_index`]'s order: the least key is the gateway endpoint.
pub(super) fn gateway_key(
    ep: &Endpoint,
    net: &Network,
) -> (
    std::cmp::Reverse<i64>,
    bool,
    std::cmp::Reverse<usize>,
    String,
) {
    let gateways = 1 + usize::from(net.pool6.is_some() && ep.ip6.is_some());
    (
        std::cmp::Reverse(ep.gw_priority),
        net.internal,
        std::cmp::Reverse(gateways),
        net.name.clone(),
    )
}

/// The interface an endpoint gets in the container's namespace.
pub(super) fn veth_spec(ep: &Endpoint, net: &Network, primary: bool) -> Result<VethSpec> {
    let pool = net
        .pool
        .as_ref()
        .ok_or_else(|| EngineError::Internal(format!("network {} has no pool", net.name)))?;
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
        sysctls: ep
            .driver_opts
            .get(ENDPOINT_SYSCTLS)
            .into_iter()
            .flat_map(|l| l.split(','))
            .filter_map(parse_sysctl)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_endpoint_is_chosen_as_libnetwork_does() {
        let ep = |p: i64| Endpoint {
            network: String::new(),
            endpoint_id: String::new(),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            mac: String::new(),
            aliases: vec![],
            requested_ip: None,
            ip6: None,
            requested_ip6: None,
            ifname: String::new(),
            host_veth: String::new(),
            links: vec![],
            link_local_ips: vec![],
            driver_opts: Default::default(),
            gw_priority: p,
        };
        let net = |name: &str, internal: bool| {
            let mut n = super::super::manager::new_network(name, "bridge", false);
            n.internal = internal;
            n
        };
        let pick = |v: &[(i64, &str, bool)]| {
            let eps: Vec<Endpoint> = v.iter().map(|(p, _, _)| ep(*p)).collect();
            let nets: Vec<Network> = v.iter().map(|(_, n, i)| net(n, *i)).collect();
            gateway_index(&eps, &nets)
        };
        assert_eq!(pick(&[]), 0);
        // The highest priority, then a non-internal network, then the name.
        assert_eq!(pick(&[(10, "a", false), (100, "b", false)]), 1);
        assert_eq!(pick(&[(0, "zz", false), (0, "aa", false)]), 1);
        assert_eq!(pick(&[(0, "aa", true), (0, "zz", false)]), 1);
        assert_eq!(pick(&[(0, "net1", false), (-100, "net5", false)]), 0);
        assert_eq!(pick(&[(10, "net4", false), (10, "net3", false)]), 1);
    }
}
