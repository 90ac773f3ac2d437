//! Networking commands over the Engine API: `network create|ls|inspect|rm|prune|connect|
//! disconnect`, `port`, and the networking flags of `run` ([`NetworkFlags`]).

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::api::{self, enc, ApiError, Host};
use crate::commands::CliError;

use crate::containers::daemon;

fn w(e: std::io::Error) -> CliError {
    CliError::Message(e.to_string())
}

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
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(format!("invalid proto: {proto}"));
    }
    // An IPv6 host address is in brackets.
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| format!("invalid IP address in {spec}"))?;
        (ip.to_string(), after.strip_prefix(':').unwrap_or(after))
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
            _ => return Err(format!("invalid port format: {spec}")),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (host, cport) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let range = |s: &str| -> Result<(u16, u16), String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let a: u16 = a
            .parse()
            .map_err(|_| format!("invalid containerPort: {s}"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| format!("invalid containerPort: {s}"))?;
        if a == 0 || a > b {
            return Err(format!("invalid port range: {s}"));
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
    let (h0, h1) = range(host).map_err(|_| format!("invalid hostPort: {host}"))?;
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
        return Err(format!(
            "invalid ranges specified for container and host Ports: {cport} and {host}"
        ));
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
    /// Adds the flags to a container create body (`network` is `--network`).
    pub fn apply(&self, body: &mut Value, network: Option<&str>) -> Result<(), CliError> {
        let usage = CliError::Usage;
        let mut bindings: Map<String, Value> = Map::new();
        let mut exposed: Map<String, Value> = Map::new();
        for p in &self.publish {
            for (key, ip, hp) in parse_publish(p).map_err(usage)? {
                exposed.insert(key.clone(), json!({}));
                let e = bindings.entry(key).or_insert(json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(json!({"HostIp": ip, "HostPort": hp}));
                }
            }
        }
        for e in &self.expose {
            let (p, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            match (a.parse::<u16>(), b.parse::<u16>()) {
                (Ok(a), Ok(b)) if a > 0 && a <= b => {
                    for x in a..=b {
                        exposed.insert(format!("{x}/{proto}"), json!({}));
                    }
                }
                _ => return Err(usage(format!("invalid range format for --expose: {e}"))),
            }
        }
        let hc = &mut body["HostConfig"];
        if !bindings.is_empty() {
            hc["PortBindings"] = Value::Object(bindings);
        }
        if self.publish_all {
            hc["PublishAllPorts"] = json!(true);
        }
        if !self.dns.is_empty() {
            hc["Dns"] = json!(self.dns);
        }
        if !self.dns_search.is_empty() {
            hc["DnsSearch"] = json!(self.dns_search);
        }
        if !self.dns_option.is_empty() {
            hc["DnsOptions"] = json!(self.dns_option);
        }
        if !self.add_host.is_empty() {
            hc["ExtraHosts"] = json!(self.add_host);
        }
        if !exposed.is_empty() {
            body["ExposedPorts"] = Value::Object(exposed);
        }
        if let Some(h) = &self.hostname {
            body["Hostname"] = json!(h);
        }
        let mut ep = json!({});
        if let Some(ip) = &self.ip {
            ep["IPAMConfig"] = json!({"IPv4Address": ip});
        }
        if let Some(m) = &self.mac_address {
            ep["MacAddress"] = json!(m);
        }
        if !self.network_alias.is_empty() {
            ep["Aliases"] = json!(self.network_alias);
        }
        if ep.as_object().is_some_and(|o| !o.is_empty()) {
            let key = network.unwrap_or("default");
            body["NetworkingConfig"] = json!({"EndpointsConfig": {key: ep}});
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

fn filters_query(f: &[String]) -> String {
    if f.is_empty() {
        return String::new();
    }
    let mut m: Map<String, Value> = Map::new();
    for x in f {
        let (k, v) = x.split_once('=').unwrap_or((x, ""));
        let e = m.entry(k.to_string()).or_insert(json!({}));
        e[v] = json!(true);
    }
    format!("?filters={}", enc(&Value::Object(m).to_string()))
}

fn templated(format: &str, v: &Value, out: &mut dyn Write) -> Result<(), CliError> {
    let t = crate::template::Template::parse(format)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let data = crate::template::Value::from_json_str(&v.to_string())
        .map_err(|e| CliError::Message(format!("template: {e}")))?;
    let s = t
        .execute(&data)
        .map_err(|e| CliError::Message(format!("template: {}", e.0)))?;
    writeln!(out, "{s}").map_err(w)
}

/// Runs a `network` subcommand.
pub fn network(
    host: &Host,
    cmd: &NetworkCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        NetworkCommand::Create(c) => {
            let kv = |v: &[String]| -> Map<String, Value> {
                v.iter()
                    .map(|x| {
                        let (k, v) = x.split_once('=').unwrap_or((x, ""));
                        (k.to_string(), json!(v))
                    })
                    .collect()
            };
            let mut cfg = Vec::new();
            for (i, s) in c.subnet.iter().enumerate() {
                let mut e = json!({"Subnet": s});
                if let Some(g) = c.gateway.get(i) {
                    e["Gateway"] = json!(g);
                }
                if let Some(r) = c.ip_range.get(i) {
                    e["IPRange"] = json!(r);
                }
                cfg.push(e);
            }
            if c.subnet.is_empty() && (!c.gateway.is_empty() || !c.ip_range.is_empty()) {
                return Err(CliError::Usage(
                    "berth: gateway and ip-range require a subnet".into(),
                ));
            }
            let body = json!({
                "Name": c.name,
                "Driver": c.driver,
                "Internal": c.internal,
                "Attachable": c.attachable,
                "EnableIPv6": c.ipv6,
                "IPAM": {"Driver": "default", "Config": cfg},
                "Options": kv(&c.opt),
                "Labels": kv(&c.label),
            });
            let r = api::request(host, "POST", "/networks/create", Some(&body))
                .map_err(daemon)?
                .json()
                .map_err(daemon)?;
            writeln!(out, "{}", r["Id"].as_str().unwrap_or_default()).map_err(w)
        }
        NetworkCommand::Ls(c) => {
            let list = api::request(
                host,
                "GET",
                &format!("/networks{}", filters_query(&c.filter)),
                None,
            )
            .map_err(daemon)?
            .json()
            .map_err(daemon)?;
            let mut text = String::from("NETWORK ID\tNAME\tDRIVER\tSCOPE\n");
            for n in list.as_array().into_iter().flatten() {
                let id = n["Id"].as_str().unwrap_or_default();
                let short = if c.no_trunc {
                    id
                } else {
                    &id[..id.len().min(12)]
                };
                if c.quiet {
                    writeln!(out, "{short}").map_err(w)?;
                    continue;
                }
                if let Some(f) = &c.format {
                    let mut v = n.clone();
                    v["ID"] = json!(short);
                    templated(f, &v, out)?;
                    continue;
                }
                text.push_str(&format!(
                    "{short}\t{}\t{}\t{}\n",
                    n["Name"].as_str().unwrap_or_default(),
                    n["Driver"].as_str().unwrap_or_default(),
                    n["Scope"].as_str().unwrap_or_default()
                ));
            }
            if !c.quiet && c.format.is_none() {
                out.write_all(crate::tabwriter::docker_table(&text).as_bytes())
                    .map_err(w)?;
            }
            Ok(())
        }
        NetworkCommand::Inspect(c) => {
            let mut all = Vec::new();
            let mut failed = false;
            for n in &c.networks {
                match api::request(host, "GET", &format!("/networks/{}", enc(n)), None)
                    .and_then(|r| r.json())
                {
                    Ok(v) => match &c.format {
                        Some(f) => templated(f, &v, out)?,
                        None => all.push(v),
                    },
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{}", daemon(e));
                    }
                }
            }
            if c.format.is_none() {
                let s = serde_json::to_string_pretty(&Value::Array(all))
                    .map_err(|e| CliError::Message(e.to_string()))?;
                writeln!(out, "{s}").map_err(w)?;
            }
            if failed {
                return Err(CliError::Exit(1));
            }
            Ok(())
        }
        NetworkCommand::Rm(c) => {
            let mut failed = false;
            for n in &c.networks {
                match api::request(host, "DELETE", &format!("/networks/{}", enc(n)), None) {
                    Ok(_) => writeln!(out, "{n}").map_err(w)?,
                    Err(ApiError::Status { code: 404, .. }) if c.force => {}
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{}", daemon(e));
                    }
                }
            }
            if failed {
                return Err(CliError::Exit(1));
            }
            Ok(())
        }
        NetworkCommand::Prune(c) => {
            let r = api::request(
                host,
                "POST",
                &format!("/networks/prune{}", filters_query(&c.filter)),
                None,
            )
            .map_err(daemon)?
            .json()
            .map_err(daemon)?;
            let _ = c.force;
            let deleted: Vec<&str> = r["NetworksDeleted"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect();
            if !deleted.is_empty() {
                writeln!(out, "Deleted Networks:").map_err(w)?;
                for d in deleted {
                    writeln!(out, "{d}").map_err(w)?;
                }
            }
            Ok(())
        }
        NetworkCommand::Connect(c) => {
            let mut ep = json!({});
            if !c.alias.is_empty() {
                ep["Aliases"] = json!(c.alias);
            }
            if let Some(ip) = &c.ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            let body = json!({"Container": c.container, "EndpointConfig": ep});
            api::request(
                host,
                "POST",
                &format!("/networks/{}/connect", enc(&c.network)),
                Some(&body),
            )
            .map_err(daemon)?;
            Ok(())
        }
        NetworkCommand::Disconnect(c) => {
            let body = json!({"Container": c.container, "Force": c.force});
            api::request(
                host,
                "POST",
                &format!("/networks/{}/disconnect", enc(&c.network)),
                Some(&body),
            )
            .map_err(daemon)?;
            Ok(())
        }
    }
}

/// `port`: the published ports of a container, from inspect (as the docker CLI does).
pub fn port(host: &Host, c: &PortCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let v = api::request(
        host,
        "GET",
        &format!("/containers/{}/json", enc(&c.container)),
        None,
    )
    .map_err(daemon)?
    .json()
    .map_err(daemon)?;
    let ports = v["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let want = c.private_port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut lines = Vec::new();
    for (k, binds) in &ports {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in binds.as_array().into_iter().flatten() {
            let ip = b["HostIp"].as_str().unwrap_or("0.0.0.0");
            let hp = b["HostPort"].as_str().unwrap_or("");
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
        writeln!(out, "{l}").map_err(w)?;
    }
    Ok(())
}

/// The PORTS column of `ps`: `0.0.0.0:8080->80/tcp, 81/tcp`.
pub fn ports_column(ports: &Value) -> String {
    let mut v: Vec<String> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = p["PrivatePort"].as_u64().unwrap_or(0);
            let ty = p["Type"].as_str().unwrap_or("tcp");
            match p["PublicPort"].as_u64() {
                Some(public) => format!(
                    "{}:{public}->{private}/{ty}",
                    p["IP"].as_str().unwrap_or("0.0.0.0")
                ),
                None => format!("{private}/{ty}"),
            }
        })
        .collect();
    v.sort();
    v.join(", ")
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
    fn flags_become_the_create_body() {
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
        let mut body = json!({"HostConfig": {}});
        f.apply(&mut body, Some("mynet")).unwrap();
        assert_eq!(
            body["HostConfig"]["PortBindings"],
            json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]})
        );
        assert_eq!(body["HostConfig"]["PublishAllPorts"], json!(true));
        assert_eq!(body["Hostname"], json!("box"));
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"]["mynet"],
            json!({"IPAMConfig": {"IPv4Address": "10.1.0.9"}, "Aliases": ["web"]})
        );
    }

    #[test]
    fn ps_ports_column() {
        let v = json!([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"PrivatePort": 53, "Type": "udp"}]);
        assert_eq!(ports_column(&v), "0.0.0.0:8080->80/tcp, 53/udp");
    }
}
