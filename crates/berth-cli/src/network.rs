//! Networking commands over the Engine API: `network create|ls|inspect|rm|prune|connect|
//! disconnect`, `port`, and the networking flags of `run` ([`NetworkFlags`]).

use std::collections::BTreeMap;
use std::io::Write;

use berth_api::container::{CreateRequest, Port, PortBinding};
use berth_api::go::Empty;
use berth_api::network::{
    ConnectRequest, CreateRequest as NetworkCreate, CreateResponse, DisconnectRequest,
    EndpointIpamConfig, EndpointSettings, Inspect, Ipam, IpamConfig, NetworkingConfig, PruneReport,
};
use clap::{Args, Subcommand};

use crate::api::{enc, json, ApiError, Host};
use crate::error::{CliError, Result};
use crate::format;

/// The networking flags of `run` (`-h` is the hostname, as in docker; help is `--help`).
#[derive(Debug, Args, Default)]
#[command(disable_help_flag = true)]
pub struct NetworkFlags {
    /// Publish a container's port(s) to the host ([ip:][hostPort:]containerPort[/proto])
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// One `-p` value, expanded: (container port key, host ip, host port).
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>> {
    let bad = |m: String| CliError::Usage(m);
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(bad(format!("invalid proto: {proto}")));
    }
    // An IPv6 host address is in brackets.
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| bad(format!("invalid IP address in {spec}")))?;
        (ip.to_string(), after.strip_prefix(':').unwrap_or(after))
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
            _ => return Err(bad(format!("invalid port format: {spec}"))),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(format!("invalid IP address: {ip}")));
    }
    let (host, cport) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let range = |s: &str| -> Result<(u16, u16)> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .parse()
            .map_err(|_| bad(format!("invalid containerPort: {s}")))?;
        let b: u16 = b
            .parse()
            .map_err(|_| bad(format!("invalid containerPort: {s}")))?;
        if a == 0 || a > b {
            return Err(bad(format!("invalid port range: {s}")));
        }
        Ok((a, b))
    };
    let (c0, c1) = range(cport)?;
    let mut out = Vec::new();
    if host.is_empty() {
        for p in c0..=c1 {
            out.push((format!("{p}/{proto}"), ip.clone(), String::new()));
        }
        return Ok(out);
    }
    let (h0, h1) = range(host).map_err(|_| bad(format!("invalid hostPort: {host}")))?;
    if c0 == c1 {
        // One container port, maybe a range of host ports to choose from.
        let hp = if h0 == h1 {
            h0.to_string()
        } else {
            format!("{h0}-{h1}")
        };
        out.push((format!("{c0}/{proto}"), ip.clone(), hp));
        return Ok(out);
    }
    if h1 - h0 != c1 - c0 {
        return Err(bad(format!(
            "invalid ranges specified for container and host Ports: {cport} and {host}"
        )));
    }
    for i in 0..=(c1 - c0) {
        out.push((
            format!("{}/{proto}", c0 + i),
            ip.clone(),
            (h0 + i).to_string(),
        ));
    }
    Ok(out)
}

impl NetworkFlags {
    /// Adds the flags to a create request (`network` is `--network`).
    pub fn apply(&self, req: &mut CreateRequest, network: Option<&str>) -> Result {
        let mut bindings: BTreeMap<String, Option<Vec<PortBinding>>> = BTreeMap::new();
        let mut exposed: BTreeMap<String, Empty> = BTreeMap::new();
        for p in &self.publish {
            for (key, ip, hp) in parse_publish(p)? {
                exposed.insert(key.clone(), Empty {});
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: ip,
                        host_port: hp,
                    });
            }
        }
        for e in &self.expose {
            let (p, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a > 0 && a <= b => {
                    for x in a..=b {
                        exposed.insert(format!("{x}/{proto}"), Empty {});
                    }
                }
                _ => {
                    return Err(CliError::Usage(format!(
                        "invalid range format for --expose: {e}"
                    )))
                }
            }
        }
        let hc = req.host_config.get_or_insert_with(Default::default);
        if !bindings.is_empty() {
            hc.port_bindings = Some(bindings);
        }
        hc.publish_all_ports |= self.publish_all;
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        if let Some(d) = list(&self.dns) {
            hc.dns = Some(d);
        }
        if let Some(d) = list(&self.dns_search) {
            hc.dns_search = Some(d);
        }
        if let Some(d) = list(&self.dns_option) {
            hc.dns_options = Some(d);
        }
        if let Some(d) = list(&self.add_host) {
            hc.extra_hosts = Some(d);
        }
        if !exposed.is_empty() {
            req.config.exposed_ports = Some(exposed);
        }
        if let Some(h) = &self.hostname {
            req.config.hostname = h.clone();
        }
        let ep = EndpointSettings {
            ipam_config: self.ip.as_ref().map(|ip| EndpointIpamConfig {
                ipv4_address: ip.clone(),
                ..Default::default()
            }),
            mac_address: self.mac_address.clone().unwrap_or_default(),
            aliases: list(&self.network_alias),
            ..Default::default()
        };
        if ep != EndpointSettings::default() {
            let key = network.unwrap_or("default").to_string();
            req.networking_config = Some(NetworkingConfig {
                endpoints_config: Some([(key, ep)].into()),
            });
        }
        Ok(())
    }
}

/// `network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateCmd),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsCmd),
    /// Display detailed information on one or more networks
    Inspect(InspectCmd),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmCmd),
    /// Remove all unused networks
    Prune(PruneCmd),
    /// Connect a container to a network
    Connect(ConnectCmd),
    /// Disconnect a container from a network
    Disconnect(DisconnectCmd),
}

#[derive(Debug, Args)]
pub struct CreateCmd {
    /// Driver to manage the Network
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Enable or disable IPv6 networking
    #[arg(long)]
    ipv6: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// The network's name
    name: String,
}

#[derive(Debug, Args)]
pub struct LsCmd {
    /// Only display network IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long)]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct InspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// The networks
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmCmd {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long)]
    force: bool,
    /// The networks
    #[arg(required = true)]
    networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneCmd {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long)]
    filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConnectCmd {
    /// Add network-scoped alias for the container
    #[arg(long)]
    alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    ip: Option<String>,
    /// The network
    network: String,
    /// The container
    container: String,
}

#[derive(Debug, Args)]
pub struct DisconnectCmd {
    /// Force the container to disconnect from a network
    #[arg(short = 'f', long)]
    force: bool,
    /// The network
    network: String,
    /// The container
    container: String,
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`
#[derive(Debug, Args)]
pub struct PortCmd {
    /// The container
    container: String,
    /// A private port (`80` or `80/tcp`)
    private_port: Option<String>,
}

/// `key=value` flags into a map (`--label`, `--opt`; `key` alone is an empty value).
fn kv(v: &[String]) -> BTreeMap<String, String> {
    crate::containers::label_map(v)
}

const NETWORKS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}";

/// The `network ls` row of a network (Docker's `networkContext`).
fn network_row(n: &Inspect, no_trunc: bool) -> crate::template::Value {
    let id = crate::containers::short_id(&n.id, no_trunc);
    let created = berth_util::time::parse_rfc3339(&n.created)
        .map(|(s, ns)| crate::units::go_time_string(s, ns))
        .unwrap_or_default();
    format::labeled_row(
        &[
            ("ID", id),
            ("Name", n.name.clone()),
            ("Driver", n.driver.clone()),
            ("Scope", n.scope.clone()),
            ("IPv4", n.enable_ipv4.to_string()),
            ("IPv6", n.enable_ipv6.to_string()),
            ("Internal", n.internal.to_string()),
            ("Labels", format::labels_column(Some(&n.labels))),
            ("CreatedAt", created),
        ],
        n.labels.clone(),
    )
}

/// Runs a `network` subcommand.
pub fn network(
    host: &Host,
    cmd: &NetworkCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result {
    match cmd {
        NetworkCommand::Create(c) => {
            if c.subnet.is_empty() && (!c.gateway.is_empty() || !c.ip_range.is_empty()) {
                return Err(CliError::Usage(
                    "berth: gateway and ip-range require a subnet".into(),
                ));
            }
            let config = c
                .subnet
                .iter()
                .enumerate()
                .map(|(i, s)| IpamConfig {
                    subnet: s.clone(),
                    gateway: c.gateway.get(i).cloned().unwrap_or_default(),
                    ip_range: c.ip_range.get(i).cloned().unwrap_or_default(),
                    auxiliary_addresses: None,
                })
                .collect();
            let body = NetworkCreate {
                name: c.name.clone(),
                driver: c.driver.clone(),
                internal: c.internal,
                attachable: c.attachable,
                enable_ipv6: c.ipv6,
                ipam: Some(Ipam {
                    driver: "default".into(),
                    options: None,
                    config: Some(config),
                }),
                options: Some(kv(&c.opt)),
                labels: Some(kv(&c.label)),
                ..Default::default()
            };
            let r: CreateResponse = host.post("/networks/create", Some(&json(&body)))?;
            writeln!(out, "{}", r.id)?;
            Ok(())
        }
        NetworkCommand::Ls(c) => {
            let mut list: Vec<Inspect> = host.get(&format!(
                "/networks{}",
                crate::filters::query(&c.filter, &[])?
            ))?;
            list.sort_by(|a, b| crate::units::natural_cmp(&a.name, &b.name));
            if c.quiet {
                for n in &list {
                    writeln!(out, "{}", crate::containers::short_id(&n.id, c.no_trunc))?;
                }
                return Ok(());
            }
            let columns = [
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("IPv4", "IPV4"),
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
                ("Labels", "LABELS"),
                ("CreatedAt", "CREATED AT"),
            ];
            let rows: Vec<_> = list.iter().map(|n| network_row(n, c.no_trunc)).collect();
            format::print_list(
                out,
                c.format.as_deref().unwrap_or("table"),
                NETWORKS_TABLE,
                &columns,
                &rows,
            )
        }
        NetworkCommand::Inspect(c) => crate::ctl::inspect_each(
            host,
            &c.networks,
            |n| format!("/networks/{}", enc(n)),
            |raw| raw,
            (c.format.as_deref(), crate::commands::InspectJson::Raw),
            out,
            err,
        ),
        NetworkCommand::Rm(c) => {
            crate::containers::each_maybe(&c.networks, out, err, |n| {
                match host.call("DELETE", &format!("/networks/{}", enc(n)), None) {
                    Ok(()) => Ok(Some(n.to_string())),
                    Err(ApiError::Status { code: 404, .. }) if c.force => Ok(None),
                    Err(e) => Err(e),
                }
            })
        }
        NetworkCommand::Prune(c) => {
            let _ = c.force;
            let r: PruneReport = host.post(
                &format!("/networks/prune{}", crate::filters::query(&c.filter, &[])?),
                None,
            )?;
            crate::system::print_deleted(
                out,
                "Deleted Networks:",
                &r.networks_deleted.unwrap_or_default(),
            )
        }
        NetworkCommand::Connect(c) => {
            let body = ConnectRequest {
                container: c.container.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: (!c.alias.is_empty()).then(|| c.alias.clone()),
                    ipam_config: c.ip.as_ref().map(|ip| EndpointIpamConfig {
                        ipv4_address: ip.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            host.call(
                "POST",
                &format!("/networks/{}/connect", enc(&c.network)),
                Some(&json(&body)),
            )?;
            Ok(())
        }
        NetworkCommand::Disconnect(c) => {
            let body = DisconnectRequest {
                container: c.container.clone(),
                force: c.force,
            };
            host.call(
                "POST",
                &format!("/networks/{}/disconnect", enc(&c.network)),
                Some(&json(&body)),
            )?;
            Ok(())
        }
    }
}

/// `port`: the published ports of a container, from inspect (as the docker CLI does).
pub fn port(host: &Host, c: &PortCmd, out: &mut dyn Write) -> Result {
    let v = crate::ctl::inspect_container(host, &c.container)?;
    let want = c.private_port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut lines = Vec::new();
    for (k, binds) in &v.network_settings.ports {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in binds.iter().flatten() {
            let ip = if b.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &b.host_ip
            };
            let hp = &b.host_port;
            let addr = if ip.contains(':') {
                format!("[{ip}]:{hp}")
            } else {
                format!("{ip}:{hp}")
            };
            lines.push(if want.is_some() {
                addr
            } else {
                format!("{k} -> {addr}")
            });
        }
    }
    if lines.is_empty() {
        if let Some(w) = want {
            return Err(CliError::Message(format!(
                "Error: No public port '{w}' published for {}",
                c.container
            )));
        }
    }
    lines.sort();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

/// `host:port`, with brackets around an IPv6 host (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The PORTS column of `ps`, as Docker's `DisplayablePorts`: ports sorted, consecutive ones
/// grouped into ranges (`80-81/tcp`, `0.0.0.0:80-81->80-81/tcp` when published on the same
/// numbers), then the other published ports (`0.0.0.0:8080->80/tcp`).
pub fn ports_column(ports: &[Port]) -> String {
    let mut ports: Vec<&Port> = ports.iter().collect();
    ports.sort_by(|a, b| {
        a.private_port
            .cmp(&b.private_port)
            .then_with(|| a.ip.cmp(&b.ip))
            .then_with(|| a.public_port.cmp(&b.public_port))
            .then_with(|| a.kind.cmp(&b.kind))
    });
    // (key, first, last) in order of appearance; a key is `type` or `ip/type`.
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut result = Vec::new();
    let mut mappings = Vec::new();
    for p in ports {
        let current = p.private_port;
        let mut key = p.kind.clone();
        if let Some(ip) = p.ip.as_deref().filter(|ip| !ip.is_empty()) {
            let public = p.public_port.unwrap_or(0);
            if public != current {
                mappings.push(format!(
                    "{}->{current}/{}",
                    join_host_port(ip, &public.to_string()),
                    p.kind
                ));
                continue;
            }
            key = format!("{ip}/{}", p.kind);
        }
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            None => groups.push((key, current, current)),
            Some(g) if u32::from(current) == u32::from(g.2) + 1 => g.2 = current,
            Some(g) => {
                result.push(port_group(&g.0, g.1, g.2));
                *g = (key, current, current);
            }
        }
    }
    for (k, first, last) in &groups {
        result.push(port_group(k, *first, *last));
    }
    result.extend(mappings);
    result.join(", ")
}

/// Docker's `formGroup`: `80/tcp`, `80-81/tcp`, `0.0.0.0:80->80/tcp`.
fn port_group(key: &str, first: u16, last: u16) -> String {
    let (ip, kind) = match key.rsplit_once('/') {
        Some((ip, kind)) => (ip, kind),
        None => ("", key),
    };
    let mut group = first.to_string();
    if first != last {
        group = format!("{group}-{last}");
    }
    if !ip.is_empty() {
        group = format!("{}->{group}", join_host_port(ip, &group));
    }
    format!("{group}/{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let p = |s: &str| parse_publish(s).unwrap();
        assert_eq!(p("80"), vec![("80/tcp".into(), "".into(), "".into())]);
        assert_eq!(
            p("127.0.0.1:8080:80/udp"),
            vec![("80/udp".into(), "127.0.0.1".into(), "8080".into())]
        );
        assert_eq!(
            p("127.0.0.1::80"),
            vec![("80/tcp".into(), "127.0.0.1".into(), "".into())]
        );
        assert_eq!(p("8000-8001:80-81").len(), 2);
        assert_eq!(
            p("8000-8001:80-81")[1],
            ("81/tcp".into(), "".into(), "8001".into())
        );
        assert_eq!(p("8000-8010:80")[0].2, "8000-8010");
        assert_eq!(p("[::1]:8080:80")[0].1, "::1");
        assert!(parse_publish("a:b:c:d").is_err());
        assert!(parse_publish("8000-8002:80-81").is_err());
        assert!(parse_publish("80/sctp").is_err());
        assert!(parse_publish("nope:80:80").is_err());
    }

    #[test]
    fn flags_become_the_create_request() {
        let f = NetworkFlags {
            publish: vec!["127.0.0.1:8080:80".into()],
            publish_all: true,
            dns: vec!["10.0.0.1".into()],
            add_host: vec!["a:1.2.3.4".into()],
            ip: Some("10.1.0.9".into()),
            network_alias: vec!["web".into()],
            hostname: Some("box".into()),
            ..Default::default()
        };
        let mut req = CreateRequest::default();
        f.apply(&mut req, Some("mynet")).unwrap();
        let hc = req.host_config.as_ref().unwrap();
        assert_eq!(
            hc.port_bindings,
            Some(
                [(
                    "80/tcp".to_string(),
                    Some(vec![PortBinding {
                        host_ip: "127.0.0.1".into(),
                        host_port: "8080".into()
                    }])
                )]
                .into()
            )
        );
        assert!(hc.publish_all_ports);
        assert_eq!(hc.dns.as_deref().unwrap(), ["10.0.0.1"]);
        assert_eq!(hc.extra_hosts.as_deref().unwrap(), ["a:1.2.3.4"]);
        assert_eq!(req.config.hostname, "box");
        assert_eq!(
            req.config.exposed_ports,
            Some([("80/tcp".to_string(), Empty {})].into())
        );
        let ep = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: "10.1.0.9".into(),
                ..Default::default()
            }),
            aliases: Some(vec!["web".into()]),
            ..Default::default()
        };
        assert_eq!(
            req.networking_config.unwrap().endpoints_config,
            Some([("mynet".to_string(), ep)].into()),
            "the one network's endpoint"
        );
    }

    #[test]
    fn ps_ports_column() {
        let v: Vec<Port> = berth_api::from_str(
            r#"[{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"PrivatePort": 53, "Type": "udp"}]"#,
        )
        .unwrap();
        // Docker's order: grouped ports first, then the ports published on other numbers.
        assert_eq!(ports_column(&v), "53/udp, 0.0.0.0:8080->80/tcp");
        let v: Vec<Port> = berth_api::from_str(
            r#"[{"PrivatePort": 81, "Type": "tcp"}, {"PrivatePort": 80, "Type": "tcp"},
                {"PrivatePort": 83, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 90, "PublicPort": 90, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 91, "PublicPort": 91, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]"#,
        )
        .unwrap();
        assert_eq!(
            ports_column(&v),
            "80-81/tcp, 83/tcp, 0.0.0.0:90-91->90-91/tcp, [::]:8080->80/tcp"
        );
    }
}
