//! Berth's networking library: Linux bridges and veth pairs over rtnetlink (in-process), IPAM,
//! NAT / isolation / port forwarding through nftables (iptables fallback) in Berth's own tables,
//! the userland proxy of published ports, and the embedded DNS server of user-defined networks.
//!
//! - [`netlink`]: links, addresses, routes; work inside a container's namespace on a thread
//!   that entered it.
//! - [`ipam`]: pools and allocation; [`subnet`]: IPv4 prefixes.
//! - [`firewall`]: the [`firewall::Firewall`] trait, [`firewall::Nftables`], [`firewall::Iptables`].
//! - [`proxy`]: published ports served from the host.
//! - [`dns`]: 127.0.0.11 inside containers.
//! - [`etc`]: `/etc/hosts`, `/etc/resolv.conf`, MAC addresses.

pub mod dns;
pub mod etc;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod proxy;
pub mod resolv;
pub mod subnet;

pub use subnet::{Ipv4Net, Ipv6Net};
