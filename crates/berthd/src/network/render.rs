//! Networking in Docker's shapes: a container's `NetworkSettings` (inspect) and `Ports`
//! (list), and network inspect/list entries.

use std::collections::BTreeMap;

use berth_api::container::{NetworkSettings, Port, PortBinding, PortMap, SummaryNetworkSettings};
use berth_api::network::{
    ConfigReference, EndpointIpamConfig, EndpointResource, EndpointSettings, Inspect, Ipam,
    IpamConfig,
};
use berth_api::Filters;

use super::manager::Manager;
use super::state::{CNet, Endpoint, NetState, Network};
use crate::engine::Container;
use crate::error::Result;

/// `IPAMConfig` of an endpoint: the addresses that were requested.
fn ipam_config(ep: &Endpoint) -> Option<EndpointIpamConfig> {
    if ep.requested_ip.is_none() && ep.requested_ip6.is_none() && ep.link_local_ips.is_empty() {
        return None;
    }
    Some(EndpointIpamConfig {
        ipv4_address: ep.requested_ip.map(|a| a.to_string()).unwrap_or_default(),
        ipv6_address: ep.requested_ip6.map(|a| a.to_string()).unwrap_or_default(),
        link_local_ips: (!ep.link_local_ips.is_empty()).then(|| ep.link_local_ips.clone()),
    })
}

fn endpoint_settings(c: &Container, ep: &Endpoint, net: &Network) -> EndpointSettings {
    let pool = net.pool.as_ref();
    let (ip6, prefix6, gw6) = match (&net.pool6, ep.ip6) {
        (Some(p6), Some(a)) => (a.to_string(), p6.subnet.prefix, p6.gateway.to_string()),
        _ => (String::new(), 0, String::new()),
    };
    // dockerd's order (the first one names the PTR records): name, aliases, short ID,
    // hostname, each once.
    let dns_names = net.dns().then(|| {
        let mut v: Vec<String> = Vec::new();
        let all = std::iter::once(c.short_name())
            .chain(ep.aliases.iter().map(String::as_str))
            .chain([&c.id[..12], c.config.hostname.as_str()]);
        for n in all.filter(|n| !n.is_empty()) {
            if !v.iter().any(|x| x == n) {
                v.push(n.to_string());
            }
        }
        v
    });
    EndpointSettings {
        ipam_config: ipam_config(ep),
        links: (!ep.links.is_empty()).then(|| ep.links.clone()),
        aliases: (!ep.aliases.is_empty()).then(|| ep.aliases.clone()),
        mac_address: ep.mac.clone(),
        driver_opts: (!ep.driver_opts.is_empty()).then(|| ep.driver_opts.clone()),
        gw_priority: ep.gw_priority,
        network_id: net.id.clone(),
        endpoint_id: ep.endpoint_id.clone(),
        gateway: pool.map(|p| p.gateway.to_string()).unwrap_or_default(),
        ip_address: ep.ip.to_string(),
        ip_prefix_len: pool.map(|p| p.subnet.prefix).unwrap_or(0).into(),
        ipv6_gateway: gw6,
        global_ipv6_address: ip6,
        global_ipv6_prefix_len: prefix6.into(),
        dns_names,
    }
}

/// `NetworkSettings.Ports`: exposed ports (`null`) and, while running, their bindings.
fn ports_map(c: &Container, cn: Option<&CNet>) -> PortMap {
    let mut ports: PortMap = c
        .config
        .exposed_ports
        .iter()
        .flat_map(|m| m.keys())
        .map(|k| (k.clone(), None))
        .collect();
    if c.state.running {
        for p in cn.map(|x| x.ports.as_slice()).unwrap_or_default() {
            let key = format!("{}/{}", p.container_port, p.proto);
            ports
                .entry(key)
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: if p.host_ip.is_empty() {
                        "0.0.0.0".into()
                    } else {
                        p.host_ip.clone()
                    },
                    host_port: p.host_port.to_string(),
                });
        }
    }
    ports
}

impl Manager {
    /// `NetworkSettings` of container inspect.
    pub fn settings(&self, c: &Container) -> NetworkSettings {
        let st = self.state.lock().unwrap();
        let mode = c.network_mode();
        let mut s = NetworkSettings::default();
        if c.state.running && !mode.starts_with("container:") && mode != "host" {
            s.sandbox_key = format!("/proc/{}/ns/net", c.state.pid);
        }
        if mode == "host" || mode == "none" {
            s.networks.insert(
                mode.to_string(),
                EndpointSettings {
                    network_id: st.builtin(mode).map(|n| n.id.clone()).unwrap_or_default(),
                    ..Default::default()
                },
            );
        }
        let cn = st.containers.get(&c.id);
        for ep in cn.map(|x| x.endpoints.as_slice()).unwrap_or_default() {
            let Some(net) = st.networks.get(&ep.network) else {
                continue;
            };
            let e = endpoint_settings(c, ep, net);
            if net.builtin && net.name == "bridge" {
                s.endpoint_id.clone_from(&e.endpoint_id);
                s.gateway.clone_from(&e.gateway);
                s.ip_address.clone_from(&e.ip_address);
                s.ip_prefix_len = e.ip_prefix_len;
                s.mac_address.clone_from(&e.mac_address);
            }
            s.networks.insert(net.name.clone(), e);
        }
        // Networks named at create that do not exist yet: as requested, nothing allocated
        // (dockerd shows them so until the start resolves them).
        for p in cn.map(|x| x.pending.as_slice()).unwrap_or_default() {
            let req = p.settings.clone().unwrap_or_default();
            s.networks.entry(p.key.clone()).or_insert(EndpointSettings {
                ipam_config: req.ipam_config,
                links: req.links,
                aliases: req.aliases,
                mac_address: req.mac_address,
                driver_opts: req.driver_opts,
                gw_priority: req.gw_priority,
                ..Default::default()
            });
        }
        s.ports = ports_map(c, cn);
        s
    }

    /// `Ports` and `NetworkSettings` of `/containers/json`.
    pub fn list_fields(&self, c: &Container) -> (Vec<Port>, SummaryNetworkSettings) {
        let s = self.settings(c);
        let mut ports = Vec::new();
        for (k, v) in &s.ports {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            let private_port: u16 = port.parse().unwrap_or(0);
            match v.as_deref() {
                Some(bindings) if !bindings.is_empty() => {
                    for b in bindings {
                        ports.push(Port {
                            ip: Some(b.host_ip.clone()),
                            private_port,
                            public_port: b.host_port.parse().ok(),
                            kind: proto.into(),
                        });
                    }
                }
                _ => ports.push(Port {
                    ip: None,
                    private_port,
                    public_port: None,
                    kind: proto.into(),
                }),
            }
        }
        (
            ports,
            SummaryNetworkSettings {
                networks: s.networks,
            },
        )
    }

    fn network_json(st: &NetState, n: &Network, with_containers: bool) -> Inspect {
        let mut containers = BTreeMap::new();
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
                        EndpointResource {
                            name: cn.name.clone(),
                            endpoint_id: ep.endpoint_id.clone(),
                            mac_address: ep.mac.clone(),
                            ipv4_address: format!("{}/{prefix}", ep.ip),
                            ipv6_address: v6,
                        },
                    );
                }
            }
        }
        let mut config: Vec<IpamConfig> = n
            .pool
            .iter()
            .map(|p| IpamConfig {
                subnet: p.subnet.to_string(),
                gateway: p.gateway.to_string(),
                ip_range: p.ip_range.map(|r| r.to_string()).unwrap_or_default(),
                auxiliary_addresses: (!n.aux_addresses.is_empty()).then(|| n.aux_addresses.clone()),
            })
            .collect();
        if let Some(p6) = &n.pool6 {
            config.push(IpamConfig {
                subnet: p6.subnet.to_string(),
                gateway: p6.gateway.to_string(),
                ..Default::default()
            });
        }
        Inspect {
            name: n.name.clone(),
            id: n.id.clone(),
            created: n.created.clone(),
            scope: "local".into(),
            driver: n.driver.clone(),
            enable_ipv4: true,
            enable_ipv6: n.pool6.is_some(),
            ipam: Ipam {
                driver: "default".into(),
                // dockerd: `null` unless options were given.
                options: n.ipam_options.clone(),
                config: Some(config),
            },
            internal: n.internal,
            attachable: n.attachable,
            ingress: false,
            config_from: ConfigReference::default(),
            config_only: false,
            containers,
            options: n.options.clone(),
            labels: n.labels.clone(),
        }
    }

    /// `GET /networks` (Docker's filters: name, id, driver, type, label, scope, dangling;
    /// the values of one key are alternatives, `name` and `id` regular expressions, every
    /// `label` must match; other keys are refused).
    pub fn list_networks(&self, filters: &Filters) -> Result<Vec<Inspect>> {
        const KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
        let bad = |m: String| crate::error::EngineError::BadRequest(m);
        for (k, v) in &filters.0 {
            if !KEYS.contains(&k.as_str()) {
                return Err(bad(format!("invalid filter '{k}'")));
            }
            if k == "type" && v != "custom" && v != "builtin" {
                return Err(bad(format!("invalid filter: 'type'='{v}'")));
            }
            if k == "dangling" && !matches!(v.as_str(), "true" | "1" | "false" | "0") {
                return Err(bad(
                    r#"invalid value for filter 'dangling', must be "true" (or "1"), or "false" (or "0")"#
                        .into(),
                ));
            }
        }
        if filters.get("dangling").nth(1).is_some() {
            return Err(bad(
                r#"got more than one value for filter key "dangling""#.into()
            ));
        }
        let re = |key: &str| -> Vec<regex::Regex> {
            filters
                .get(key)
                .map(|v| {
                    regex::Regex::new(v).unwrap_or_else(|_| {
                        regex::Regex::new(&format!("^{}$", regex::escape(v))).expect("escaped")
                    })
                })
                .collect()
        };
        let (names, ids) = (re("name"), re("id"));
        let st = self.state.lock().unwrap();
        let mut nets: Vec<&Network> = st.networks.values().collect();
        nets.sort_by(|a, b| a.created.cmp(&b.created));
        let any =
            |key: &str, ok: &dyn Fn(&str) -> bool| !filters.has(key) || filters.get(key).any(ok);
        Ok(nets
            .into_iter()
            .filter(|n| {
                (names.is_empty() || names.iter().any(|r| r.is_match(&n.name)))
                    && (ids.is_empty() || ids.iter().any(|r| r.is_match(&n.id)))
                    && any("driver", &|v| n.driver == v)
                    && any("scope", &|v| v == "local")
                    && any("type", &|v| (v == "custom") != n.builtin)
                    && filters.get("label").all(|v| n.matches_label(v))
                    && any("dangling", &|v| {
                        matches!(v, "true" | "1") == (!st.in_use(&n.id) && !n.builtin)
                    })
            })
            .map(|n| Self::network_json(&st, n, false))
            .collect())
    }

    /// `GET /networks/{id}`.
    pub fn inspect_network(&self, key: &str) -> Result<Inspect> {
        let st = self.state.lock().unwrap();
        let n = st.find(key)?;
        Ok(Self::network_json(&st, n, true))
    }
}
