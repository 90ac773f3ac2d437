//! Published ports: `PortBindings` and `PublishAllPorts` checked and resolved, host ports
//! bound (a conflict fails the start), `ExposedPorts` merged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use berth_api::container::{HostConfig, PortBinding, PortMap};
use berth_api::go::Set;
use berth_network::firewall::Proto;
use berth_network::proxy;

use crate::engine::Container;
use crate::error::{EngineError, Result};

/// One requested published port.
#[derive(Debug, Clone)]
pub struct WantPort {
    pub proto: String,
    pub host_ip: String,
    /// `""` (random), `"8080"` or a range `"8000-8010"`.
    pub host_port: String,
    pub container_port: u16,
}

/// `80/tcp` → (80, `tcp`); tcp and udp only.
pub fn parse_port_key(k: &str) -> Result<(u16, String)> {
    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return Err(EngineError::bad(format!(
            "invalid proto: {proto} (tcp and udp are supported)"
        )));
    }
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| EngineError::bad(format!("invalid port specification: {k:?}")))?;
    Ok((port, proto))
}

/// `PortBindings` checked and flattened (a port without bindings gets a random one), exact
/// host ports first (dockerd's `cmpPortBinding`: a random port never takes one that another
/// binding of the same container names).
pub fn parse_port_bindings(bindings: Option<&PortMap>) -> Result<Vec<WantPort>> {
    let mut out = Vec::new();
    for (k, v) in bindings.into_iter().flatten() {
        let (port, proto) = parse_port_key(k)?;
        let any = [PortBinding::default()];
        let binds = match v.as_deref() {
            Some(b) if !b.is_empty() => b,
            _ => &any[..],
        };
        for b in binds {
            if !b.host_ip.is_empty() && b.host_ip.parse::<IpAddr>().is_err() {
                return Err(EngineError::bad(format!("invalid host IP: {}", b.host_ip)));
            }
            let hp = &b.host_port;
            if !hp.is_empty() {
                let ok = match hp.split_once('-') {
                    Some((a, b)) => {
                        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= b)
                    }
                    None => hp.parse::<u16>().is_ok(),
                };
                if !ok {
                    return Err(EngineError::bad(format!(
                        "invalid port specification: {hp:?}"
                    )));
                }
            }
            out.push(WantPort {
                proto: proto.clone(),
                host_ip: b.host_ip.clone(),
                host_port: hp.clone(),
                container_port: port,
            });
        }
    }
    let exact = |w: &WantPort| w.host_port.parse::<u16>().is_ok_and(|p| p > 0);
    out.sort_by_key(|w| !exact(w));
    Ok(out)
}

/// `PortBindings` plus, with `PublishAllPorts`, every exposed port not bound explicitly.
pub fn wanted_ports(c: &Container) -> Result<Vec<WantPort>> {
    let mut v = parse_port_bindings(c.host_config.port_bindings.as_ref())?;
    if c.host_config.publish_all_ports {
        for k in c.config.exposed_ports.iter().flat_map(|m| m.keys()) {
            let (port, proto) = parse_port_key(k)?;
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

/// The range random host ports come from, as dockerd's: the kernel's ephemeral ports
/// (`net.ipv4.ip_local_port_range`), else 49153-65535.
fn dynamic_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|w| w.parse::<u16>().ok());
            match (it.next()??, it.next()??) {
                (a, b) if a > 0 && a <= b => Some((a, b)),
                _ => None,
            }
        })
        .unwrap_or((49153, 65535))
}

/// Which ports of a range a wanted port may take: its own port, its range, or the
/// [`dynamic_range`].
fn port_range(w: &WantPort) -> (u16, u16) {
    match w.host_port.split_once('-') {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
        None => match w.host_port.parse().unwrap_or(0) {
            0 => dynamic_range(),
            p => (p, p),
        },
    }
}

/// (proto, first host address, range) → the last port handed out: like dockerd's port
/// allocator, ports of a range are handed out in turn from its start (32768, 32769, … for
/// random ports on a default Linux), each after the last one, skipping those in use.
type Turns = std::collections::HashMap<(String, String, u16, u16), u16>;
static TURNS: std::sync::Mutex<Option<Turns>> = std::sync::Mutex::new(None);

/// What a failed bind's message names: each wanted port's container address (in the
/// group's order), and the address on which one of the daemon's containers publishes a host
/// port already, if one does (`proto`, host address, port).
pub struct BindCtx<'a> {
    pub targets: &'a [IpAddr],
    pub published: &'a dyn Fn(&str, IpAddr, u16) -> Option<IpAddr>,
}

/// dockerd's words for a host port that cannot be bound: its port allocator's when one of
/// its containers has the port, else the bridge driver's with the binding
/// (`HostIP:HostPort:IP:Port/proto`) and the system's error.
fn bind_error(
    w: &WantPort,
    ip: IpAddr,
    port: u16,
    target: Option<&IpAddr>,
    ranged: bool,
    e: &std::io::Error,
    ctx: &BindCtx<'_>,
) -> String {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        if let Some(held) = (ctx.published)(&w.proto, ip, port) {
            return format!("Bind for {held}:{port} failed: port is already allocated");
        }
    }
    let bracket = |a: &IpAddr| match a {
        IpAddr::V6(_) => format!("[{a}]"),
        IpAddr::V4(_) => a.to_string(),
    };
    let mut binding = format!("{}:", bracket(&ip));
    if !w.host_port.is_empty() && w.host_port != "0" {
        binding += &format!("{}:", w.host_port);
    }
    if let Some(t) = target {
        binding += &format!("{}:", bracket(t));
    }
    binding += &format!("{}/{}", w.container_port, w.proto);
    let why = berth_util::errno::go_text(e);
    match ranged {
        true => format!("failed to bind host port {port} for {binding}: {why}"),
        false => format!("failed to bind host port for {binding}: {why}"),
    }
}

/// Binds the wanted ports of a group, which differ only in their host address, on one host
/// port: the given one, or the next of its range that every address can bind (see [`TURNS`]).
/// Returns the sockets (in the group's order) and the port. A rootless daemon in its own
/// network namespace binds on every address there (the host's address is slirp4netns's, see
/// `crate::rootless_net`).
pub fn bind_ports(group: &[WantPort], ctx: &BindCtx<'_>) -> Result<(Vec<proxy::Bound>, u16)> {
    let Some(first) = group.first() else {
        return Err(EngineError::Internal("no port to bind".into()));
    };
    let mut addrs = Vec::new();
    for w in group {
        let host_ip = crate::rootless_net::netns_host_ip(&w.host_ip);
        let ip: IpAddr = if host_ip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            host_ip
                .parse()
                .map_err(|_| EngineError::bad(format!("invalid host IP: {}", w.host_ip)))?
        };
        let proto = if w.proto == "udp" {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        addrs.push((proto, ip));
    }
    let (begin, end) = port_range(first);
    let key = (first.proto.clone(), first.host_ip.clone(), begin, end);
    let mut turns = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let last = turns
        .get_or_insert_with(Default::default)
        .get(&key)
        .copied();
    let mut port = last.unwrap_or(end);
    let mut err = None;
    for _ in begin..=end {
        port = if port >= end { begin } else { port + 1 };
        if let Err(e) = crate::rootless_net::check_port(port) {
            err = Some(e.to_string());
            continue;
        }
        let bound: std::result::Result<Vec<proxy::Bound>, String> = addrs
            .iter()
            .enumerate()
            .map(|(i, (proto, ip))| {
                proxy::bind(*proto, SocketAddr::new(*ip, port)).map_err(|e| {
                    bind_error(
                        &group[i],
                        *ip,
                        port,
                        ctx.targets.get(i),
                        begin < end,
                        &e,
                        ctx,
                    )
                })
            })
            .collect();
        match bound {
            Ok(b) => {
                if begin < end {
                    turns.get_or_insert_with(Default::default).insert(key, port);
                }
                return Ok((b, port));
            }
            Err(e) => err = Some(e),
        }
    }
    let e = err.unwrap_or_else(|| "no port".into());
    Err(EngineError::Internal(format!(
        "driver failed programming external connectivity on endpoint: {e}"
    )))
}

/// Binds one wanted port; see [`bind_ports`].
pub fn bind_port(w: &WantPort, ctx: &BindCtx<'_>) -> Result<(proxy::Bound, u16)> {
    let (mut b, port) = bind_ports(std::slice::from_ref(w), ctx)?;
    match b.pop() {
        Some(b) => Ok((b, port)),
        None => Err(EngineError::Internal("no port bound".into())),
    }
}

/// Whether the host can listen on IPv6 (dockerd's `IsV6Listenable`): then a port published
/// on every address is bound on `[::]` too, even for an IPv4-only container (its proxy
/// forwards to the IPv4 address).
pub fn v6_listenable() -> bool {
    static V6: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V6.get_or_init(|| std::net::TcpListener::bind("[::1]:0").is_ok())
}

/// `80` → `80/tcp`.
fn with_proto(k: &str) -> String {
    if k.contains('/') {
        k.to_string()
    } else {
        format!("{k}/tcp")
    }
}

/// `Config.ExposedPorts` of a new container: the image's, the request's and the published
/// ones (`None` when there are none).
pub fn exposed_ports<'a>(
    image: impl IntoIterator<Item = &'a String>,
    request: Option<&'a Set>,
    hc: &'a HostConfig,
) -> Option<Set> {
    let m: Set = image
        .into_iter()
        .chain(request.into_iter().flat_map(|r| r.keys()))
        .chain(hc.port_bindings.iter().flat_map(|p| p.keys()))
        .map(|k| (with_proto(k), Default::default()))
        .collect();
    (!m.is_empty()).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(v: serde_json::Value) -> PortMap {
        berth_api::from_value(v).unwrap()
    }

    #[test]
    fn port_bindings_parse_and_validate() {
        let pb = bindings(
            serde_json::json!({"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "53/udp": [{"HostPort": "5300-5310"}], "81": null}),
        );
        let v = parse_port_bindings(Some(&pb)).unwrap();
        assert_eq!(v.len(), 3);
        // Exact host ports are bound before random ones and ranges.
        let pb = bindings(serde_json::json!({"80/tcp": null, "8080/tcp": [{"HostPort": "32772"}]}));
        let v = parse_port_bindings(Some(&pb)).unwrap();
        assert_eq!((v[0].container_port, v[1].container_port), (8080, 80));
        for bad in [
            serde_json::json!({"80/sctp": []}),
            serde_json::json!({"x/tcp": []}),
            serde_json::json!({"80/tcp": [{"HostPort": "9-1"}]}),
            serde_json::json!({"80/tcp": [{"HostIp": "nope"}]}),
        ] {
            assert!(
                parse_port_bindings(Some(&bindings(bad.clone()))).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn exposed_ports_merge() {
        let req: Set = [("53/udp".to_string(), Default::default())].into();
        let hc: HostConfig =
            berth_api::from_value(serde_json::json!({"PortBindings": {"8080": null}})).unwrap();
        let v = exposed_ports(&vec!["80".to_string()], Some(&req), &hc).unwrap();
        assert_eq!(
            v.keys().collect::<Vec<_>>(),
            vec!["53/udp", "80/tcp", "8080/tcp"]
        );
        assert_eq!(
            exposed_ports(&Vec::new(), None, &HostConfig::default()),
            None
        );
    }
}
