//! The daemon's addresses as `-H`, `hosts` and `DOCKER_HOST` write them, shared by berthd's
//! listeners and the CLI: `unix:///path` (or a bare `/path`) and `tcp://host[:port]`, with
//! dockerd's default ports (2376 with TLS, 2375 without) and `tcp://:port` for 127.0.0.1.

use std::path::PathBuf;

/// berthd's socket when no address is given (root's daemon).
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";

/// A parsed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    /// Host and port (`None`: the default port, see [`Address::tcp_addr`]).
    Tcp(String, Option<u16>),
}

/// An address that is neither `unix://` nor `tcp://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported address {0:?}: use unix:///path or tcp://host[:port]")]
pub struct BadAddress(pub String);

impl Address {
    /// Parses `unix:///path`, `/path`, `tcp://host[:port]` (`[v6]` in brackets;
    /// `tcp://:2376` is 127.0.0.1).
    pub fn parse(s: &str) -> Result<Address, BadAddress> {
        let bad = || BadAddress(s.to_string());
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(bad());
            }
            return Ok(Address::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        let rest = s.strip_prefix("tcp://").ok_or_else(bad)?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad()),
            };
            (h, port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>())
            .transpose()
            .map_err(|_| bad())?;
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(Address::Tcp(host.to_string(), port))
    }
}

/// `host:port` (`[host]:port` for an IPv6 address), the port dockerd's default when `None`:
/// 2376 with TLS, 2375 without.
pub fn tcp_addr(host: &str, port: Option<u16>, tls: bool) -> String {
    let port = port.unwrap_or(if tls { 2376 } else { 2375 });
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let parse = Address::parse;
        assert_eq!(
            parse("unix:///run/b.sock").unwrap(),
            Address::Unix("/run/b.sock".into())
        );
        assert_eq!(parse("/x.sock").unwrap(), Address::Unix("/x.sock".into()));
        assert_eq!(
            parse("tcp://1.2.3.4:2375").unwrap(),
            Address::Tcp("1.2.3.4".into(), Some(2375))
        );
        assert_eq!(
            parse("tcp://:2376").unwrap(),
            Address::Tcp("127.0.0.1".into(), Some(2376))
        );
        assert_eq!(
            parse("tcp://[::1]:1").unwrap(),
            Address::Tcp("::1".into(), Some(1))
        );
        assert_eq!(
            parse("tcp://host.example").unwrap(),
            Address::Tcp("host.example".into(), None)
        );
        for bad in [
            "ssh://x",
            "unix://",
            "tcp://h:port",
            "tcp://h:1/path",
            "npipe:////./pipe/x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_ports() {
        assert_eq!(tcp_addr("h", None, true), "h:2376");
        assert_eq!(tcp_addr("h", None, false), "h:2375");
        assert_eq!(tcp_addr("::1", Some(1), false), "[::1]:1");
    }
}
