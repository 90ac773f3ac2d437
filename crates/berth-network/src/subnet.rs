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

/// What both address families share: construction, masks, containment, and the text form
/// (`addr/prefix`, also their serde form).
macro_rules! prefix_type {
    ($net:ident, $addr:ty, $bits:ty, $max:literal) => {
        impl $net {
            pub fn new(addr: $addr, prefix: u8) -> Self {
                $net {
                    addr,
                    prefix: prefix.min($max),
                }
            }
            pub fn mask(&self) -> $bits {
                if self.prefix == 0 {
                    0
                } else {
                    <$bits>::MAX << ($max - self.prefix as u32)
                }
            }
            pub fn network(&self) -> $addr {
                <$addr>::from(<$bits>::from(self.addr) & self.mask())
            }
            /// The network itself (host bits cleared).
            pub fn network_net(&self) -> $net {
                $net::new(self.network(), self.prefix)
            }
            pub fn contains(&self, ip: $addr) -> bool {
                <$bits>::from(ip) & self.mask() == <$bits>::from(self.network())
            }
            pub fn overlaps(&self, other: &$net) -> bool {
                self.contains(other.network()) || other.contains(self.network())
            }
        }

        impl fmt::Display for $net {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.addr, self.prefix)
            }
        }

        impl FromStr for $net {
            type Err = BadCidr;
            fn from_str(s: &str) -> Result<Self, BadCidr> {
                let (a, p) = s.split_once('/').ok_or_else(|| BadCidr(s.into()))?;
                let addr: $addr = a.parse().map_err(|_| BadCidr(s.into()))?;
                let prefix: u8 = p.parse().map_err(|_| BadCidr(s.into()))?;
                if prefix > $max {
                    return Err(BadCidr(s.into()));
                }
                Ok($net { addr, prefix })
            }
        }

        impl Serialize for $net {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $net {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefix_type!(Ipv4Net, Ipv4Addr, u32, 32);
prefix_type!(Ipv6Net, Ipv6Addr, u128, 128);

impl Ipv4Net {
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
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

/// An IPv6 address with a prefix length (an interface address or a network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
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
