//! Address management for one network: a subnet, its gateway, an optional narrower range
//! to hand out from, and the addresses in use (owned by the caller's persisted state).

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::subnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no available IPv4 addresses on this network's address pools: {0}")]
    Exhausted(Ipv4Net),
    #[error("Address already in use: {0}")]
    InUse(Ipv4Addr),
    #[error("invalid address {ip}: it does not belong to the subnet {subnet}")]
    OutOfSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("invalid address {0}: it is the network's gateway, network or broadcast address")]
    Reserved(Ipv4Addr),
    #[error("invalid pool request: {0}")]
    BadPool(String),
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoFreeSubnet,
    #[error("no available IPv6 addresses on this network's address pools: {0}")]
    Exhausted6(Ipv6Net),
    #[error("Address already in use: {0}")]
    InUse6(Ipv6Addr),
    #[error("invalid address {ip}: it does not belong to the subnet {subnet}")]
    OutOfSubnet6 { ip: Ipv6Addr, subnet: Ipv6Net },
    #[error(
        "invalid address {0}: it is the network's gateway or its subnet-router anycast address"
    )]
    Reserved6(Ipv6Addr),
}

/// A pool's subnet, either family, for the checks [`Pool::new`] and [`Pool6::new`] share.
trait PoolNet: Copy + fmt::Display {
    type Addr: Copy + fmt::Display;
    /// The longest prefix that leaves room for a gateway and an address.
    const MAX_PREFIX: u8;
    fn prefix(&self) -> u8;
    fn network_net(&self) -> Self;
    fn contains(&self, ip: Self::Addr) -> bool;
    /// The first address after the network's own (the default gateway).
    fn first(&self) -> Option<Self::Addr>;
    /// The error for a subnet without a free address.
    fn exhausted(self) -> IpamError;
}

/// Implements [`PoolNet`] for a family's prefix type.
macro_rules! pool_net {
    ($net:ident, $addr:ty, $max:literal, $exhausted:ident) => {
        impl PoolNet for $net {
            type Addr = $addr;
            const MAX_PREFIX: u8 = $max;
            fn prefix(&self) -> u8 {
                self.prefix
            }
            fn network_net(&self) -> Self {
                $net::network_net(self)
            }
            fn contains(&self, ip: $addr) -> bool {
                $net::contains(self, ip)
            }
            fn first(&self) -> Option<$addr> {
                self.nth(1)
            }
            fn exhausted(self) -> IpamError {
                IpamError::$exhausted(self)
            }
        }
    };
}

pool_net!(Ipv4Net, Ipv4Addr, 30, Exhausted);
pool_net!(Ipv6Net, Ipv6Addr, 126, Exhausted6);

/// The requested subnet with its host bits cleared, checked to be large enough, and the
/// gateway (by default its first address), checked to be inside it.
fn subnet_and_gateway<N: PoolNet>(
    subnet: N,
    gateway: Option<N::Addr>,
) -> Result<(N, N::Addr), IpamError> {
    let subnet = subnet.network_net();
    if subnet.prefix() > N::MAX_PREFIX {
        return Err(IpamError::BadPool(format!(
            "subnet {subnet} is too small (at most /{})",
            N::MAX_PREFIX
        )));
    }
    let gateway = match gateway {
        Some(g) => g,
        None => subnet.first().ok_or_else(|| subnet.exhausted())?,
    };
    if !subnet.contains(gateway) {
        return Err(IpamError::BadPool(format!(
            "gateway {gateway} is not in subnet {subnet}"
        )));
    }
    Ok((subnet, gateway))
}

/// One network's IPv4 pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pool {
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<Ipv4Net>,
}

impl Pool {
    /// Validates a requested pool; the gateway defaults to the first address.
    pub fn new(
        subnet: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        ip_range: Option<Ipv4Net>,
    ) -> Result<Pool, IpamError> {
        let (subnet, gateway) = subnet_and_gateway(subnet, gateway)?;
        if gateway == subnet.network() || gateway == subnet.broadcast() {
            return Err(IpamError::Reserved(gateway));
        }
        if let Some(r) = ip_range {
            if r.prefix < subnet.prefix || !subnet.contains(r.network()) {
                return Err(IpamError::BadPool(format!(
                    "ip-range {r} is not inside subnet {subnet}"
                )));
            }
        }
        Ok(Pool {
            subnet,
            gateway,
            ip_range: ip_range.map(|r| r.network_net()),
        })
    }

    fn reserved(&self, ip: Ipv4Addr) -> bool {
        ip == self.gateway || ip == self.subnet.network() || ip == self.subnet.broadcast()
    }

    /// Takes `requested` (checked) or the lowest free address of the range (else subnet).
    pub fn allocate(
        &self,
        used: &BTreeSet<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = requested {
            if !self.subnet.contains(ip) {
                return Err(IpamError::OutOfSubnet {
                    ip,
                    subnet: self.subnet,
                });
            }
            if self.reserved(ip) {
                return Err(IpamError::Reserved(ip));
            }
            if used.contains(&ip) {
                return Err(IpamError::InUse(ip));
            }
            return Ok(ip);
        }
        let range = self.ip_range.unwrap_or(self.subnet);
        let size = range.size().min(1 << 24) as u32;
        for n in 0..size {
            let Some(ip) = range.nth(n) else { break };
            if self.reserved(ip) || used.contains(&ip) {
                continue;
            }
            return Ok(ip);
        }
        Err(IpamError::Exhausted(range))
    }
}

/// Docker's default pools, in order: 172.17–31/16, then 192.168.0–240/20.
pub fn default_candidates() -> Vec<Ipv4Net> {
    let mut v = Vec::new();
    for b in 17..=31u8 {
        v.push(Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    }
    for c in (0..=240u8).step_by(16) {
        v.push(Ipv4Net::new(Ipv4Addr::new(192, 168, c, 0), 20));
    }
    v
}

/// The first candidate that overlaps none of `taken` (host routes, host addresses, other
/// networks).
pub fn pick_subnet(candidates: &[Ipv4Net], taken: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    candidates
        .iter()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .copied()
        .ok_or(IpamError::NoFreeSubnet)
}

/// One network's IPv6 pool (`--ipv6`): a subnet (at most /126) and its gateway. As Docker's
/// default IPAM, addresses are handed out sequentially (lowest free), not derived from MACs;
/// the subnet-router anycast address (host part 0) and the gateway are never given out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pool6 {
    pub subnet: Ipv6Net,
    pub gateway: Ipv6Addr,
}

impl Pool6 {
    /// Validates a requested pool; the gateway defaults to the first address (`::1`).
    pub fn new(subnet: Ipv6Net, gateway: Option<Ipv6Addr>) -> Result<Pool6, IpamError> {
        let (subnet, gateway) = subnet_and_gateway(subnet, gateway)?;
        if gateway == subnet.network() {
            return Err(IpamError::Reserved6(gateway));
        }
        Ok(Pool6 { subnet, gateway })
    }

    /// Takes `requested` (checked) or the lowest free address.
    pub fn allocate(
        &self,
        used: &BTreeSet<Ipv6Addr>,
        requested: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, IpamError> {
        let reserved = |ip: Ipv6Addr| ip == self.gateway || ip == self.subnet.network();
        if let Some(ip) = requested {
            if !self.subnet.contains(ip) {
                return Err(IpamError::OutOfSubnet6 {
                    ip,
                    subnet: self.subnet,
                });
            }
            if reserved(ip) {
                return Err(IpamError::Reserved6(ip));
            }
            if used.contains(&ip) {
                return Err(IpamError::InUse6(ip));
            }
            return Ok(ip);
        }
        // At most one candidate per used address plus the reserved two is ever skipped.
        let limit = used.len() as u128 + 3;
        for n in 1..=limit {
            let Some(ip) = self.subnet.nth(n) else { break };
            if reserved(ip) || used.contains(&ip) {
                continue;
            }
            return Ok(ip);
        }
        Err(IpamError::Exhausted6(self.subnet))
    }
}

/// A unique local /64 for a network created with `--ipv6` and no IPv6 subnet (Docker 28
/// allocates one from a ULA prefix): `fdXX:XXXX:XXXX::/64`, the 40-bit global id derived from
/// `seed` (the network id) and `attempt`.
pub fn ula_candidate(seed: &str, attempt: u32) -> Ipv6Net {
    // FNV-1a: stable, dependency-free; the seed (a random network id) supplies the entropy.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(attempt.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let global = (h & 0xff_ffff_ffff) as u128;
    let addr = (0xfdu128 << 120) | (global << 80);
    Ipv6Net::new(Ipv6Addr::from(addr), 64)
}

/// The first ULA candidate for `seed` that overlaps none of `taken`.
pub fn pick_ula(seed: &str, taken: &[Ipv6Net]) -> Result<Ipv6Net, IpamError> {
    (0..64)
        .map(|i| ula_candidate(seed, i))
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .ok_or(IpamError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_lowest_free_and_refuses_duplicates() {
        let p = Pool::new(net("10.9.0.0/29"), None, None).unwrap();
        assert_eq!(p.gateway, Ipv4Addr::new(10, 9, 0, 1));
        let mut used = BTreeSet::new();
        for want in 2..=6 {
            let ip = p.allocate(&used, None).unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 9, 0, want));
            used.insert(ip);
        }
        assert_eq!(
            p.allocate(&used, None),
            Err(IpamError::Exhausted(net("10.9.0.0/29")))
        );
        used.remove(&Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(p.allocate(&used, None).unwrap(), Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(
            p.allocate(&used, Some(Ipv4Addr::new(10, 9, 0, 3))),
            Err(IpamError::InUse(Ipv4Addr::new(10, 9, 0, 3)))
        );
        assert!(p.allocate(&used, Some(Ipv4Addr::new(10, 9, 0, 1))).is_err());
        assert!(p.allocate(&used, Some(Ipv4Addr::new(10, 8, 0, 9))).is_err());
    }

    #[test]
    fn ranges_and_gateways() {
        let p = Pool::new(
            net("10.1.0.0/16"),
            Some(Ipv4Addr::new(10, 1, 0, 254)),
            Some(net("10.1.5.0/24")),
        )
        .unwrap();
        assert_eq!(
            p.allocate(&BTreeSet::new(), None).unwrap(),
            Ipv4Addr::new(10, 1, 5, 0)
        );
        assert!(Pool::new(net("10.1.0.0/16"), Some(Ipv4Addr::new(10, 2, 0, 1)), None).is_err());
        assert!(Pool::new(net("10.1.0.0/16"), None, Some(net("10.2.0.0/24"))).is_err());
    }

    #[test]
    fn default_subnet_avoids_host_routes() {
        let c = default_candidates();
        let taken = vec![net("172.17.0.0/16"), net("172.16.0.0/12")];
        assert_eq!(pick_subnet(&c, &taken).unwrap(), net("192.168.0.0/20"));
        assert_eq!(pick_subnet(&c, &[]).unwrap(), net("172.17.0.0/16"));
    }

    #[test]
    fn v6_pools() {
        let p = Pool6::new("fd01:2::/64".parse().unwrap(), None).unwrap();
        assert_eq!(p.gateway, "fd01:2::1".parse::<Ipv6Addr>().unwrap());
        let mut used = BTreeSet::new();
        for want in ["fd01:2::2", "fd01:2::3", "fd01:2::4"] {
            let ip = p.allocate(&used, None).unwrap();
            assert_eq!(ip, want.parse::<Ipv6Addr>().unwrap());
            used.insert(ip);
        }
        used.remove(&"fd01:2::3".parse().unwrap());
        assert_eq!(
            p.allocate(&used, None).unwrap(),
            "fd01:2::3".parse::<Ipv6Addr>().unwrap()
        );
        assert!(p
            .allocate(&used, Some("fd01:2::2".parse().unwrap()))
            .is_err());
        assert!(p
            .allocate(&used, Some("fd01:3::2".parse().unwrap()))
            .is_err());
        assert!(p
            .allocate(&used, Some("fd01:2::1".parse().unwrap()))
            .is_err());
        let tiny = Pool6::new("fd01:2::/126".parse().unwrap(), None).unwrap();
        let full: BTreeSet<Ipv6Addr> = ["fd01:2::2", "fd01:2::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(tiny.allocate(&full, None).is_err());
        let u = ula_candidate("abc", 0);
        assert_eq!(u.prefix, 64);
        assert_eq!(u.addr.segments()[0] >> 8, 0xfd);
        assert_eq!(u.addr.segments()[3], 0);
        assert_ne!(ula_candidate("abc", 1), u);
        assert_ne!(pick_ula("abc", &[u]).unwrap(), u);
    }
}
