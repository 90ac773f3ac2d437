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

/// `/etc/hosts` of a container without IPv6: its IPv6 lines dropped, the head's too
/// (libnetwork's `BuildNoIPv6`).
pub fn hosts_no_ipv6(text: &str) -> String {
    let mut s = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.parse::<std::net::Ipv6Addr>().is_err() {
            s += line;
            s.push('\n');
        }
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

pub use crate::resolv::{DnsOverrides, ResolvConf};

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
    fn hosts_without_ipv6() {
        let own = [("10.0.0.2".parse().unwrap(), vec!["c".to_string()])];
        let extra = [("h".to_string(), "2001:db8::1".to_string())];
        assert_eq!(
            hosts_no_ipv6(&hosts(&extra, &own)),
            "127.0.0.1\tlocalhost\n10.0.0.2\tc\n"
        );
    }

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
    fn macs() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(mac_string(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:00:00:00:00"), None);
        assert_eq!(parse_mac("zz"), None);
    }
}
