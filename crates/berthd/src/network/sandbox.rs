//! Network namespaces for Dockerfile RUN steps (`berth_build::builder::RunNetworks`).
//!
//! As Docker's classic builder, a RUN step runs on the default bridge unless the build names
//! another network (`networkmode`, a user network's name or id), `none` (loopback only) or
//! `host` (only when asked for). For a bridge network the daemon creates a namespace held
//! by a file descriptor (never bind-mounted: a crash leaves nothing mounted, and the
//! namespace goes away with the descriptor and the step's process), allocates an endpoint
//! on the network under a build id (kept in memory only; a restart forgets it with the
//! other unknown ids, see [`Manager::adopt`]), plugs a veth and serves the embedded DNS on
//! user networks. The step's container joins the namespace through
//! `/proc/<berthd>/fd/<n>`. Dropping the guard undoes it all. `container:<name|id>` joins a
//! running container's namespace (`/proc/<pid>/ns/net`), as a container of that mode does.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Weak;

use berth_build::builder::{NetworkError, RunNetns, RunNetworks, RunSandbox};
use berth_network::dns::DnsServer;
use berth_network::etc::{self, DnsOverrides};
use berth_network::netlink::{self, Netns};
use berth_network::resolv::{self, Transform};

use super::endpoints::veth_spec;
use super::manager::Manager;
use super::state::CNet;
use crate::engine::Peers;
use crate::error::{EngineError, Result};
use crate::util;

/// What a RUN step on a bridge network holds; dropped after the step.
struct BuildEndpoint {
    manager: Weak<Manager>,
    id: String,
    links: Vec<u32>,
    dns: Option<DnsServer>,
    /// Keeps the namespace alive (the step joins it through this descriptor's path).
    _netns: File,
}

impl Drop for BuildEndpoint {
    fn drop(&mut self) {
        self.dns.take();
        for i in self.links.drain(..) {
            if let Err(e) = netlink::delete_link_index(i) {
                tracing::warn!("deleting a build step's link {i}: {e}");
            }
        }
        if let Some(m) = self.manager.upgrade() {
            m.state.lock().unwrap().containers.remove(&self.id);
        }
    }
}

impl Manager {
    /// A RUN step's network (see the module's documentation); `peers` finds the container of
    /// `container:<name|id>`.
    pub fn build_sandbox(
        &self,
        network: &str,
        hostname: &str,
        extra_hosts: &[String],
        peers: &dyn Peers,
    ) -> Result<RunSandbox> {
        let extra = self.parse_extra_hosts(extra_hosts)?;
        let no_overrides = DnsOverrides::default();
        // A rootless daemon on the host's network namespace has no bridge: its RUN steps'
        // default is the host's network, as for its containers (see `crate::rootless_net`).
        let network = match network {
            "default" if crate::rootless_net::host_only() => "host",
            n => n,
        };
        match network {
            "host" => {
                let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                for (n, ip) in &extra {
                    hosts += &format!("{ip}\t{n}\n");
                }
                let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_else(|_| {
                    resolv::generate(&self.host_resolv, &no_overrides, Transform::Host).0
                });
                return Ok(RunSandbox {
                    netns: RunNetns::Host,
                    hosts,
                    resolv,
                    guard: Box::new(()),
                });
            }
            "none" => {
                let own = [(IpAddr::V4(Ipv4Addr::LOCALHOST), vec![hostname.to_string()])];
                return Ok(RunSandbox {
                    netns: RunNetns::New,
                    hosts: etc::hosts(&extra, &own),
                    resolv: resolv::generate(
                        &self.host_resolv,
                        &no_overrides,
                        Transform::Legacy { ipv6: false },
                    )
                    .0,
                    guard: Box::new(()),
                });
            }
            n if n.starts_with("container:") => {
                // The namespace of a running container, joined by its init's path (the
                // container holds it; nothing to release).
                let x = &n["container:".len()..];
                let (oid, pid) = peers.running(x).ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "cannot join network namespace of container {x}: it is not running"
                    ))
                })?;
                let (hosts, resolv) = self.joined_files(&oid, hostname, "", &no_overrides, &extra);
                return Ok(RunSandbox {
                    netns: RunNetns::Join(format!("/proc/{pid}/ns/net").into()),
                    hosts,
                    resolv,
                    guard: Box::new(()),
                });
            }
            _ => {}
        }
        let key = if network == "default" {
            "bridge"
        } else {
            network
        };
        let id = util::new_id();
        let ns_file =
            netlink::new_netns().map_err(EngineError::sys("creating a network namespace"))?;
        let ns = Netns(format!("/proc/{}/fd/{}", std::process::id(), ns_file.as_raw_fd()).into());
        let (ep, net, hosts, resolv) = {
            let mut st = self.state.lock().unwrap();
            let net = st
                .find(key)
                .map_err(|e| match e {
                    EngineError::Missing(_) => {
                        EngineError::bad(format!("network {network} not found"))
                    }
                    e => e,
                })?
                .clone();
            let ep = Self::new_endpoint(&st, &id, &net, None, "eth0".into(), None)?;
            let t = match net.dns() {
                true => Transform::Internal,
                false => Transform::Legacy {
                    ipv6: net.pool6.is_some(),
                },
            };
            let (resolv, upstream) = resolv::generate(&self.host_resolv, &no_overrides, t);
            let hosts = etc::hosts(&extra, &ep.own_hosts(hostname, ""));
            st.containers.insert(
                id.clone(),
                CNet {
                    name: hostname.to_string(),
                    endpoints: vec![ep.clone()],
                    upstream,
                    ..CNet::default()
                },
            );
            (ep, net, hosts, resolv)
        };
        let mut guard = BuildEndpoint {
            manager: self.me.clone(),
            id: id.clone(),
            links: Vec::new(),
            dns: None,
            _netns: ns_file,
        };
        let spec = veth_spec(&ep, &net, true)?;
        guard.links = netlink::attach_all(&ns, std::slice::from_ref(&spec)).map_err(
            EngineError::netlink(format!("attaching to network {}", net.name)),
        )?;
        if net.dns() {
            guard.dns = Some(self.dns_server(&id, &ns)?);
        }
        Ok(RunSandbox {
            netns: RunNetns::Join(ns.0.clone()),
            hosts,
            resolv,
            guard: Box::new(guard),
        })
    }
}

/// The engine's networks for RUN steps (the engine finds the containers of `container:`).
impl RunNetworks for crate::engine::Engine {
    fn sandbox(
        &self,
        network: &str,
        hostname: &str,
        extra_hosts: &[String],
    ) -> std::result::Result<RunSandbox, NetworkError> {
        Ok(self
            .net
            .build_sandbox(network, hostname, extra_hosts, self)?)
    }
}
