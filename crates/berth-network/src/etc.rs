//! `/etc/hosts` and `/etc/resolv.conf` of a container, as Docker writes them.

use std::net::{IpAddr, Ipv4Addr};

/// The fixed head of Docker's `/etc/hosts`.
pub const HOSTS_HEAD: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

/// `/etc/hosts`: the head, `--add-host` entries (already resolved), then the container's own
/// address(es) with its hostname (and aliases).
pub fn hosts(extra: &[(String, String)], own: &[(IpAddr, Vec<String>)]) -> String {
    let mut s = HOSTS_HEAD.to_string();
    for (name, ip) in extra {
        s += &format!("{ip}\t{name}\n");
    }
    for (ip, names) in own {
        s += &format!("{ip}\t{}\n", names.join(" "));
    }
    s
}

/// A running container's `/etc/hosts` after it joined a network: its lines for that
/// network's addresses appended (libnetwork's `etchosts.Add`).
pub fn hosts_add(text: &str, own: &[(IpAddr, Vec<String>)]) -> String {
    let mut s = text.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    for (ip, names) in own {
        s += &format!("{ip}\t{}\n", names.join(" "));
    }
    s
}

/// A running container's `/etc/hosts` after it left a network: the lines naming it at that
/// network's addresses removed, every other line kept (libnetwork's `etchosts.Delete`, which
/// also drops blank lines).
pub fn hosts_remove(text: &str, own: &[(IpAddr, Vec<String>)]) -> String {
    let mut s = String::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let gone = !line.starts_with('#')
            && own.iter().any(|(ip, names)| {
                line.strip_suffix(&format!("\t{}", names.join(" ")))
                    .and_then(|a| a.trim().parse::<IpAddr>().ok())
                    == Some(*ip)
            });
        if !gone {
            s += line;
            s.push('\n');
        }
    }
    s
}

/// Parsed resolver configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => {
                    if let Some(ip) = w.next().and_then(|s| s.parse().ok()) {
                        r.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => r.search = w.map(str::to_string).collect(),
                Some("options") => r.options.extend(w.map(str::to_string)),
                _ => {}
            }
        }
        r
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for n in &self.nameservers {
            s += &format!("nameserver {n}\n");
        }
        if !self.search.is_empty() {
            s += &format!("search {}\n", self.search.join(" "));
        }
        if !self.options.is_empty() {
            s += &format!("options {}\n", self.options.join(" "));
        }
        s
    }
}

/// User overrides (`--dns`, `--dns-search`, `--dns-option`).
#[derive(Debug, Default, Clone)]
pub struct DnsOverrides {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// The container's resolv.conf and the upstream servers the embedded DNS forwards to.
///
/// With the embedded DNS (user-defined networks): `nameserver 127.0.0.11`, the search list,
/// `options ndots:0` plus user options; upstreams are `--dns` or the host's servers. Without
/// it (default bridge): the host's file with overrides applied, loopback servers dropped
/// (unreachable from a container) and Google's servers as Docker's fallback.
pub fn resolv_conf(host: &ResolvConf, o: &DnsOverrides, embedded: bool) -> (String, Vec<IpAddr>) {
    resolv_conf_with(host, o, embedded, false)
}

/// [`resolv_conf`] of a container in the host's network namespace (`--network host`) with
/// overrides: the host's loopback name servers stay, reachable there.
pub fn host_resolv_conf(host: &ResolvConf, o: &DnsOverrides) -> String {
    resolv_conf_with(host, o, false, true).0
}

fn resolv_conf_with(
    host: &ResolvConf,
    o: &DnsOverrides,
    embedded: bool,
    keep_loopback: bool,
) -> (String, Vec<IpAddr>) {
    let upstream: Vec<IpAddr> = if o.servers.is_empty() {
        host.nameservers.clone()
    } else {
        o.servers.clone()
    };
    let search = if o.search.is_empty() {
        host.search.clone()
    } else {
        o.search
            .iter()
            .filter(|s| s.as_str() != ".")
            .cloned()
            .collect()
    };
    if embedded {
        let mut options = vec!["ndots:0".to_string()];
        for opt in host.options.iter().chain(o.options.iter()) {
            if !opt.starts_with("ndots:") && !options.contains(opt) {
                options.push(opt.clone());
            }
        }
        if let Some(n) = o.options.iter().find(|x| x.starts_with("ndots:")) {
            options[0] = n.clone();
        }
        let rc = ResolvConf {
            nameservers: vec![IpAddr::V4(crate::dns::DNS_ADDR)],
            search,
            options,
        };
        let mut text = rc.render();
        text += &format!(
            "\n# Based on host file: '/etc/resolv.conf' (internal resolver)\n# ExtServers: [{}]\n",
            upstream
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        return (text, upstream);
    }
    // libnetwork's `TransformForLegacyNw`: name servers given with `--dns` are kept as they
    // are (a loopback one too); loopback ones read from the host's file are dropped.
    let given = !o.servers.is_empty();
    let mut servers: Vec<IpAddr> = upstream
        .iter()
        .copied()
        .filter(|ip| keep_loopback || given || !ip.is_loopback())
        .collect();
    if servers.is_empty() {
        servers = vec![
            IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
            IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
        ];
    }
    let mut options = host.options.clone();
    for opt in &o.options {
        if !options.contains(opt) {
            options.push(opt.clone());
        }
    }
    let rc = ResolvConf {
        nameservers: servers.clone(),
        search,
        options,
    };
    (rc.render(), servers)
}

/// Docker's MAC for an address: `02:42:` followed by the four octets.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let m: [u8; 6] = parts.try_into().ok()?;
    // Unicast only.
    (m[0] & 1 == 0).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_of_a_network_come_and_go_alone() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let own = [(ip, vec!["c1.x".to_string(), "c1".to_string()])];
        let text = "# kept\n127.0.0.1\tlocalhost\n10.0.0.2\tother\n\n10.0.0.3\tc1.x c1\n";
        let added = hosts_add(text, &own);
        assert_eq!(added, format!("{text}10.0.0.2\tc1.x c1\n"));
        // Only its own line goes (an --add-host at the same address stays), blank lines too.
        assert_eq!(
            hosts_remove(&added, &own),
            "# kept\n127.0.0.1\tlocalhost\n10.0.0.2\tother\n10.0.0.3\tc1.x c1\n"
        );
    }

    #[test]
    fn resolv_conf_like_docker() {
        let host = ResolvConf::parse(
            "nameserver 127.0.0.53\nnameserver 10.0.0.1\nsearch example.com\noptions edns0\n",
        );
        let (text, up) = resolv_conf(&host, &DnsOverrides::default(), true);
        assert!(
            text.starts_with("nameserver 127.0.0.11\nsearch example.com\noptions ndots:0 edns0\n"),
            "{text}"
        );
        assert_eq!(up.len(), 2);
        let (text, up) = resolv_conf(&host, &DnsOverrides::default(), false);
        assert_eq!(
            text,
            "nameserver 10.0.0.1\nsearch example.com\noptions edns0\n"
        );
        assert_eq!(up, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        // In the host's namespace a loopback server given stays.
        let lo = DnsOverrides {
            servers: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(
            host_resolv_conf(&host, &lo),
            "nameserver 127.0.0.1\nsearch example.com\noptions edns0\n"
        );
        let o = DnsOverrides {
            servers: vec!["10.9.9.9".parse().unwrap()],
            search: vec!["corp".into()],
            options: vec!["ndots:3".into()],
        };
        let (text, up) = resolv_conf(&host, &o, true);
        assert!(
            text.starts_with("nameserver 127.0.0.11\nsearch corp\noptions ndots:3 edns0\n"),
            "{text}"
        );
        assert_eq!(up, vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn macs() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac_string(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:00:00:00:00"), None);
        assert_eq!(parse_mac("zz"), None);
    }
}
