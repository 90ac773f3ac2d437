//! IPv4 and IPv6 prefixes (`10.1.2.0/24`, `fd12:3456:789a::/64`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address with a prefix length (an interface address or a network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid CIDR address: {0}")]
pub struct BadCidr(pub String);

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Ipv4Net {
            addr,
            prefix: prefix.min(32),
        }
    }
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix as u32)
        }
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    /// The network itself (host bits cleared).
    pub fn network_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.network(), self.prefix)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
    /// The `n`th address of the network (0 = the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = if self.prefix == 0 {
            u32::MAX
        } else {
            (1u32 << (32 - self.prefix as u32)) - 1
        };
        (n <= size).then(|| Ipv4Addr::from(u32::from(self.network()) + n))
    }
    /// Number of addresses (saturating).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let (a, p) = s.split_once('/').ok_or_else(|| BadCidr(s.into()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| BadCidr(s.into()))?;
        let prefix: u8 = p.parse().map_err(|_| BadCidr(s.into()))?;
        if prefix > 32 {
            return Err(BadCidr(s.into()));
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An IPv6 address with a prefix length (an interface address or a network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Self {
        Ipv6Net {
            addr,
            prefix: prefix.min(128),
        }
    }
    pub fn mask(&self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix as u32)
        }
    }
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }
    /// The network itself (host bits cleared).
    pub fn network_net(&self) -> Ipv6Net {
        Ipv6Net::new(self.network(), self.prefix)
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }
    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
    /// The `n`th address of the network (0 = the network address), if inside it.
    pub fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let host_bits = 128 - self.prefix as u32;
        if host_bits < 128 && n >> host_bits != 0 {
            return None;
        }
        Some(Ipv6Addr::from(u128::from(self.network()) | n))
    }
    /// Number of host bits.
    pub fn host_bits(&self) -> u32 {
        128 - self.prefix as u32
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let (a, p) = s.split_once('/').ok_or_else(|| BadCidr(s.into()))?;
        let addr: Ipv6Addr = a.parse().map_err(|_| BadCidr(s.into()))?;
        let prefix: u8 = p.parse().map_err(|_| BadCidr(s.into()))?;
        if prefix > 128 {
            return Err(BadCidr(s.into()));
        }
        Ok(Ipv6Net { addr, prefix })
    }
}

impl Serialize for Ipv6Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv6Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let n: Ipv4Net = "172.18.5.7/16".parse().unwrap();
        assert_eq!(n.network(), Ipv4Addr::new(172, 18, 0, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 18, 255, 255));
        assert!(n.contains(Ipv4Addr::new(172, 18, 9, 9)));
        assert!(!n.contains(Ipv4Addr::new(172, 19, 0, 1)));
        assert_eq!(n.nth(1), Some(Ipv4Addr::new(172, 18, 0, 1)));
        let m: Ipv4Net = "172.18.3.0/24".parse().unwrap();
        assert!(n.overlaps(&m) && m.overlaps(&n));
        assert!(!m.overlaps(&"172.18.4.0/24".parse().unwrap()));
        assert!("1.2.3.4".parse::<Ipv4Net>().is_err());
        assert!("1.2.3.4/33".parse::<Ipv4Net>().is_err());
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"172.18.3.0/24\"");
    }

    #[test]
    fn v6_prefixes() {
        let n: Ipv6Net = "fd12:3456:789a:1::5/64".parse().unwrap();
        assert_eq!(
            n.network(),
            "fd12:3456:789a:1::".parse::<Ipv6Addr>().unwrap()
        );
        assert!(n.contains("fd12:3456:789a:1:ffff::1".parse().unwrap()));
        assert!(!n.contains("fd12:3456:789a:2::1".parse().unwrap()));
        assert_eq!(n.nth(2), Some("fd12:3456:789a:1::2".parse().unwrap()));
        let small: Ipv6Net = "fd00::/126".parse().unwrap();
        assert_eq!(small.nth(4), None);
        assert!(n.overlaps(&"fd12:3456:789a::/48".parse().unwrap()));
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert_eq!(serde_json::to_string(&small).unwrap(), "\"fd00::/126\"");
    }
}
