//! Links, addresses and routes through rtnetlink, in-process.
//!
//! The API is blocking: every call opens a netlink socket on a small current-thread tokio
//! runtime (sockets are cheap; no long-lived connection to keep healthy across daemon restarts).
//! Work inside a container's network namespace runs on a fresh thread that `setns(2)`s into it:
//! a network namespace switch affects only the calling thread, so the multi-threaded daemon
//! never changes namespace itself, and the thread ends with its work.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::subnet::{Ipv4Net, Ipv6Net};

/// Netlink failures, naming the operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no such link: {0}")]
    NoLink(String),
    /// An interface sysctl could not be set (libnetwork's words).
    #[error("{0}")]
    Sysctl(String),
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Netlink { op, source }
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Io { op, source }
}

/// The errno of a netlink error (0 when it is not one).
fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

/// `r`, with the error `tolerated` (`EEXIST` for an add, `ENODEV` for a delete) counted as
/// done; other errors name the operation `op()`.
fn done_unless(
    r: std::result::Result<(), rtnetlink::Error>,
    tolerated: i32,
    op: impl FnOnce() -> String,
) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == tolerated => Ok(()),
        Err(e) => Err(nl(op())(e)),
    }
}

/// Runs `f` with a fresh netlink handle in the current thread's network namespace.
fn with_handle<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io("starting a netlink runtime"))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(io("opening netlink"))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        r
    })
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

/// Whether a link exists in the daemon's namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    with_handle(|h| async move { Ok(index_of(&h, name).await?.is_some()) })
}

/// Adds `ip/prefix` to link `idx` (IPv6 without duplicate address detection, so the address
/// is usable at once, as Docker's); an existing address is not an error.
async fn add_address(h: &Handle, idx: u32, ip: IpAddr, prefix: u8, what: &str) -> Result<()> {
    let mut req = h.address().add(idx, ip, prefix);
    if ip.is_ipv6() {
        let m = req.message_mut();
        m.header.flags |= rtnetlink::packet_route::address::AddressHeaderFlags::Nodad;
        m.attributes
            .push(rtnetlink::packet_route::address::AddressAttribute::Flags(
                rtnetlink::packet_route::address::AddressFlags::Nodad,
            ));
    }
    done_unless(req.execute().await, libc::EEXIST, || {
        format!("adding {ip}/{prefix} to {what}")
    })
}

/// Creates the bridge `name` (or reuses it), gives it `gw/prefix` (and `gw6` when the network
/// has IPv6), brings it up.
pub fn ensure_bridge(
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    gw6: Option<Ipv6Net>,
    mtu: Option<u32>,
) -> Result<u32> {
    if gw6.is_some() {
        // A bridge created while IPv6 was off for new links would refuse the address.
        let p = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
        let _ = std::fs::write(p, "0");
    }
    with_handle(|h| async move {
        let idx = match index_of(&h, name).await? {
            Some(i) => i,
            None => {
                let mut b = LinkBridge::new(name);
                if let Some(m) = mtu {
                    b = b.mtu(m);
                }
                done_unless(
                    h.link().add(b.build()).execute().await,
                    libc::EEXIST,
                    || format!("creating bridge {name}"),
                )?;
                index_of(&h, name)
                    .await?
                    .ok_or_else(|| NetlinkError::NoLink(name.to_string()))?
            }
        };
        add_address(&h, idx, IpAddr::V4(gateway), prefix, name).await?;
        if let Some(g6) = gw6 {
            add_address(&h, idx, IpAddr::V6(g6.addr), g6.prefix, name).await?;
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl(format!("bringing {name} up")))?;
        Ok(idx)
    })
}

/// Deletes a link by name; a missing link is not an error.
pub fn delete_link(name: &str) -> Result<()> {
    with_handle(|h| async move {
        let Some(idx) = index_of(&h, name).await? else {
            return Ok(());
        };
        match h.link().del(idx).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::ENODEV => Ok(()),
            Err(e) => Err(nl(format!("deleting link {name}"))(e)),
        }
    })
}

/// Names of the links in the daemon's namespace whose names start with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>> {
    with_handle(|h| async move {
        let mut out = Vec::new();
        let mut links = h.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(nl("listing links"))? {
            for a in &m.attributes {
                if let LinkAttribute::IfName(n) = a {
                    if n.starts_with(prefix) {
                        out.push(n.clone());
                    }
                }
            }
        }
        Ok(out)
    })
}

/// One interface to create in a container's namespace.
#[derive(Debug, Clone)]
pub struct VethSpec {
    /// Host end, enslaved to `bridge`.
    pub host_name: String,
    pub bridge: String,
    /// Name inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    pub mac: [u8; 6],
    pub address: Ipv4Net,
    /// Default route through this gateway (only for the first network).
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 address (networks with `--ipv6`).
    pub address6: Option<Ipv6Net>,
    /// IPv6 default route through this gateway (only for the first network).
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: Option<u32>,
    /// Interface sysctls set inside the namespace once the addresses are in place, before the
    /// link comes up: (path below `/proc/sys` with `{}` for the interface name, value).
    pub sysctls: Vec<(String, String)>,
}

/// A network namespace: `/proc/<pid>/ns/net` or a bind-mounted file.
#[derive(Debug, Clone)]
pub struct Netns(pub PathBuf);

impl Netns {
    pub fn of_pid(pid: u32) -> Self {
        Netns(Path::new("/proc").join(pid.to_string()).join("ns/net"))
    }
    fn open(&self) -> Result<File> {
        File::open(&self.0).map_err(io(format!("opening {}", self.0.display())))
    }

    /// Runs `f` on a new thread inside this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::result::Result<T, std::io::Error> {
        let file = File::open(&self.0)?;
        std::thread::Builder::new()
            .name("berth-netns".into())
            .spawn(move || {
                // CLONE_NEWNET changes the calling thread's namespace only; the thread ends
                // after `f`.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(f())
            })?
            .join()
            .map_err(|_| std::io::Error::other("netns thread panicked"))?
    }
}

/// A new network namespace, held by the returned descriptor only (nothing is mounted: it
/// lives as long as the descriptor and the processes that joined it).
pub fn new_netns() -> std::io::Result<File> {
    std::thread::Builder::new()
        .name("berth-netns-new".into())
        .spawn(|| {
            // CLONE_NEWNET changes this thread's namespace only; the thread ends here.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            File::open("/proc/thread-self/ns/net")
        })?
        .join()
        .map_err(|_| std::io::Error::other("netns thread panicked"))?
}

/// Brings `lo` up inside `ns`.
pub fn loopback_up(ns: &Netns) -> Result<()> {
    ns.run(|| {
        with_handle(|h| async move {
            let idx = index_of(&h, "lo")
                .await?
                .ok_or_else(|| NetlinkError::NoLink("lo".into()))?;
            h.link()
                .set(LinkUnspec::new_with_index(idx).up().build())
                .execute()
                .await
                .map_err(nl("bringing lo up"))
        })
    })
    .map_err(io("entering the network namespace"))?
}

/// Creates a veth pair: the host end on the bridge, the peer created directly inside `ns`
/// (named, with its MAC), then the peer's address, link state and default route from inside.
pub fn attach_veth(ns: &Netns, v: &VethSpec) -> Result<u32> {
    Ok(attach_all(ns, std::slice::from_ref(v))?[0])
}

/// Sets up a container's namespace in one pass: every veth pair created from the daemon's
/// namespace on one netlink socket (each peer created directly inside `ns` with
/// `IFLA_NET_NS_FD`, so it never appears on the host), then one thread entering `ns` that
/// brings `lo` up and configures every interface (addresses, link up, default routes) on one
/// socket. On error the host ends created here are deleted. Returns the host ends' indexes
/// (for [`delete_link_index`]).
pub fn attach_all(ns: &Netns, specs: &[VethSpec]) -> Result<Vec<u32>> {
    let nsf = ns.open()?;
    let nsfd = nsf.as_raw_fd();
    let list = specs.to_vec();
    let created = with_handle(|h| async move {
        let mut created = Vec::new();
        for v in &list {
            let r = create_veth(&h, nsfd, v).await;
            match r {
                Ok(idx) => created.push(idx),
                Err(e) => {
                    for idx in created {
                        let _ = h.link().del(idx).execute().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(created)
    })?;
    drop(nsf);
    let list = specs.to_vec();
    let r = ns
        .run(move || with_handle(|h| async move { configure_inside(&h, &list).await }))
        .map_err(io("entering the network namespace"))
        .and_then(|r| r);
    if let Err(e) = r {
        let _ = with_handle(|h| async move {
            for idx in created {
                let _ = h.link().del(idx).execute().await;
            }
            Ok(())
        });
        return Err(e);
    }
    Ok(created)
}

/// Creates one veth pair (host end enslaved and up, peer inside the namespace `nsfd`);
/// returns the host end's index.
async fn create_veth(h: &Handle, nsfd: i32, v: &VethSpec) -> Result<u32> {
    let br = index_of(h, &v.bridge)
        .await?
        .ok_or_else(|| NetlinkError::NoLink(v.bridge.clone()))?;
    let mut peer = LinkUnspec::new_with_name(&v.ifname)
        .setns_by_fd(nsfd)
        .address(v.mac.to_vec());
    if let Some(m) = v.mtu {
        peer = peer.mtu(m);
    }
    let peer = peer.build();
    let mut msg = LinkVeth::new(&v.host_name, &v.ifname);
    msg = msg.set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
        rtnetlink::packet_route::link::InfoVeth::Peer(peer),
    ));
    if let Some(m) = v.mtu {
        msg = msg.mtu(m);
    }
    let msg = msg.controller(br).up().build();
    match h.link().add(msg.clone()).execute().await {
        Ok(()) => {}
        // A stale host end of the same name (a daemon crash, or a teardown not done yet):
        // replace it.
        Err(e) if errno(&e) == libc::EEXIST => {
            if let Some(old) = index_of(h, &v.host_name).await? {
                let _ = h.link().del(old).execute().await;
            }
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(nl(format!("creating veth {}", v.host_name)))?;
        }
        Err(e) => return Err(nl(format!("creating veth {}", v.host_name))(e)),
    }
    index_of(h, &v.host_name)
        .await?
        .ok_or_else(|| NetlinkError::NoLink(v.host_name.clone()))
}

/// Inside the container's namespace: `lo` up, then each interface's addresses, link state and
/// default routes.
async fn configure_inside(h: &Handle, specs: &[VethSpec]) -> Result<()> {
    if let Some(lo) = index_of(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("bringing lo up"))?;
    }
    for v in specs {
        let idx = index_of(h, &v.ifname)
            .await?
            .ok_or_else(|| NetlinkError::NoLink(v.ifname.clone()))?;
        add_address(
            h,
            idx,
            IpAddr::V4(v.address.addr),
            v.address.prefix,
            &v.ifname,
        )
        .await?;
        if let Some(a6) = v.address6 {
            add_address(h, idx, IpAddr::V6(a6.addr), a6.prefix, &v.ifname).await?;
        }
        set_sysctls(&v.ifname, &v.sysctls)?;
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl(format!("bringing {} up", v.ifname)))?;
        add_default_routes(h, idx, v.gateway, v.gateway6).await?;
    }
    Ok(())
}

/// Sets interface sysctls from a thread inside the namespace (`/proc/sys/net` is the calling
/// thread's namespace's). A value already in place is not written (`/proc/sys` may be
/// read-only), as libnetwork does.
fn set_sysctls(ifname: &str, sysctls: &[(String, String)]) -> Result<()> {
    for (template, value) in sysctls {
        let path = Path::new("/proc/sys").join(template.replace("{}", ifname));
        let shown = path.display();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(NetlinkError::Sysctl(format!(
                    "{shown} is not a sysctl file"
                )))
            }
        }
        let current = std::fs::read_to_string(&path)
            .map_err(|e| NetlinkError::Sysctl(format!("unable to read '{shown}': {e}")))?;
        if current.trim() == value {
            continue;
        }
        std::fs::write(&path, value)
            .map_err(|e| NetlinkError::Sysctl(format!("unable to write to '{shown}': {e}")))?;
    }
    Ok(())
}

/// Default routes via `gw4`/`gw6` on interface `idx` (of the namespace `h` works in).
async fn add_default_routes(
    h: &Handle,
    idx: u32,
    gw4: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
) -> Result<()> {
    let v4 = gw4.map(|gw| {
        let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw);
        (r.output_interface(idx).build(), IpAddr::V4(gw))
    });
    let v6 = gw6.map(|gw| {
        let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw);
        (r.output_interface(idx).build(), IpAddr::V6(gw))
    });
    for (route, gw) in v4.into_iter().chain(v6) {
        done_unless(h.route().add(route).execute().await, libc::EEXIST, || {
            format!("adding default route via {gw}")
        })?;
    }
    Ok(())
}

/// Inside `ns`: replaces the default routes (IPv4 and IPv6) with ones via `gw4`/`gw6` on
/// interface `ifname` (none for a family without a gateway): the container's gateway endpoint
/// changed (a connect with a higher `GwPriority`, a disconnect of the old one).
pub fn set_default_routes(
    ns: &Netns,
    ifname: &str,
    gw4: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
) -> Result<()> {
    let ifname = ifname.to_string();
    ns.run(move || {
        with_handle(|h| async move {
            let all = [
                RouteMessageBuilder::<Ipv4Addr>::new().build(),
                RouteMessageBuilder::<Ipv6Addr>::new().build(),
            ];
            for request in all {
                let mut defaults = Vec::new();
                let mut routes = h.route().get(request).execute();
                while let Some(m) = routes.try_next().await.map_err(nl("listing routes"))? {
                    let main = m.header.table
                        == rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN;
                    if m.header.destination_prefix_length == 0 && main {
                        defaults.push(m);
                    }
                }
                for m in defaults {
                    done_unless(h.route().del(m).execute().await, libc::ESRCH, || {
                        "removing a default route".to_string()
                    })?;
                }
            }
            let idx = match index_of(&h, &ifname).await? {
                Some(i) => i,
                None if gw4.is_none() && gw6.is_none() => return Ok(()),
                None => return Err(NetlinkError::NoLink(ifname)),
            };
            add_default_routes(&h, idx, gw4, gw6).await
        })
    })
    .map_err(io("entering the network namespace"))
    .and_then(|r| r)
}

/// Deletes a link by index (the host end of a veth recorded at creation: an index is never
/// reused for a newer link soon, so a late delete cannot hit a link created since).
pub fn delete_link_index(idx: u32) -> Result<()> {
    with_handle(|h| async move {
        done_unless(h.link().del(idx).execute().await, libc::ENODEV, || {
            format!("deleting link {idx}")
        })
    })
}

/// The destinations (with their prefix lengths) of the main table's routes of one family
/// (`request`: an empty route of that family).
async fn route_destinations(
    h: &Handle,
    request: rtnetlink::packet_route::route::RouteMessage,
) -> Result<Vec<(IpAddr, u8)>> {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let mut out = Vec::new();
    let mut routes = h.route().get(request).execute();
    while let Some(m) = routes.try_next().await.map_err(nl("listing routes"))? {
        let prefix = m.header.destination_prefix_length;
        for a in &m.attributes {
            let ip = match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => IpAddr::V4(*ip),
                RouteAttribute::Destination(RouteAddress::Inet6(ip)) => IpAddr::V6(*ip),
                _ => continue,
            };
            out.push((ip, prefix));
        }
    }
    Ok(out)
}

/// The addresses of the host's interfaces: interface index, address, prefix length.
async fn host_addresses(h: &Handle) -> Result<Vec<(u32, IpAddr, u8)>> {
    let mut out = Vec::new();
    let mut addrs = h.address().get().execute();
    while let Some(m) = addrs.try_next().await.map_err(nl("listing addresses"))? {
        for a in &m.attributes {
            if let rtnetlink::packet_route::address::AddressAttribute::Address(ip) = a {
                out.push((m.header.index, *ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// IPv6 destinations of the routes in the main table and the host's IPv6 addresses (to pick
/// ULA subnets that do not collide).
pub fn ipv6_taken() -> Result<Vec<Ipv6Net>> {
    with_handle(|h| async move {
        let request = RouteMessageBuilder::<Ipv6Addr>::new().build();
        let routes = route_destinations(&h, request).await?;
        let routes = routes.into_iter().filter(|(_, prefix)| *prefix > 0);
        let addrs = host_addresses(&h).await?;
        let addrs = addrs.into_iter().map(|(_, ip, prefix)| (ip, prefix));
        Ok(routes
            .chain(addrs)
            .filter_map(|(ip, prefix)| match ip {
                IpAddr::V6(ip) => Some(Ipv6Net::new(ip, prefix).network_net()),
                IpAddr::V4(_) => None,
            })
            .collect())
    })
}

/// Whether a link named `name` is up (flags) — for tests and diagnostics.
pub fn link_is_up(name: &str) -> Result<bool> {
    with_handle(|h| async move {
        let mut links = h.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(m.header.flags.contains(LinkFlags::Up)),
            Ok(None) => Err(NetlinkError::NoLink(name.into())),
            Err(e) if errno(&e) == libc::ENODEV => Err(NetlinkError::NoLink(name.into())),
            Err(e) => Err(nl(format!("looking up {name}"))(e)),
        }
    })
}

/// IPv4 destinations of the routes in the main table (to pick subnets that do not collide).
pub fn ipv4_routes() -> Result<Vec<Ipv4Net>> {
    with_handle(|h| async move {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let routes = route_destinations(&h, request).await?;
        Ok(routes
            .into_iter()
            .filter_map(|(ip, prefix)| match ip {
                IpAddr::V4(ip) if prefix > 0 => Some(Ipv4Net::new(ip, prefix).network_net()),
                _ => None,
            })
            .collect())
    })
}

/// IPv4 addresses configured on the host's interfaces (with their prefixes).
pub fn ipv4_addresses() -> Result<Vec<Ipv4Net>> {
    with_handle(|h| async move {
        Ok(host_addresses(&h)
            .await?
            .into_iter()
            .filter_map(|(_, ip, prefix)| match ip {
                IpAddr::V4(ip) => Some(Ipv4Net::new(ip, prefix)),
                IpAddr::V6(_) => None,
            })
            .collect())
    })
}

/// The first IPv4 address (with prefix) of link `name`, if the link exists and has one.
pub fn link_ipv4(name: &str) -> Result<Option<Ipv4Net>> {
    with_handle(|h| async move {
        let Some(idx) = index_of(&h, name).await? else {
            return Ok(None);
        };
        let addrs = host_addresses(&h).await?;
        Ok(addrs.into_iter().find_map(|(index, ip, prefix)| match ip {
            IpAddr::V4(ip) if index == idx => Some(Ipv4Net::new(ip, prefix)),
            _ => None,
        }))
    })
}
