//! The network of a rootless berthd: a network namespace of its own with an uplink through
//! `slirp4netns` (as rootlesskit and Podman do).
//!
//! The daemon (root of its user namespace, see [`crate::rootless`]) unshares a network
//! namespace along with its mount namespace; its supervisor, still the user in the initial
//! namespaces, starts `slirp4netns --configure` for it: a `tap0` device (10.0.2.100/24, the
//! default route through 10.0.2.2, MTU 65520) whose packets slirp4netns carries through
//! ordinary sockets of the user. 10.0.2.2 also reaches the host's loopback, 10.0.2.3 is its
//! DNS forwarder. Inside that namespace the daemon owns netlink and nftables, so bridges,
//! IPAM, NAT, the embedded DNS and port publishing work as they do as root; `--network host`
//! is the daemon's namespace (as with rootlesskit).
//!
//! Published ports: Berth publishes them in the daemon's namespace as usual (on every address
//! there, whatever host address was asked for), and [`sync_ports`] keeps slirp4netns's
//! host forwards (its API socket, `add_hostfwd`) equal to them: the host's `ADDR:PORT`
//! forwards to `10.0.2.100:PORT`, where Berth's DNAT and proxy take over. Ports below the
//! host's `net.ipv4.ip_unprivileged_port_start` cannot be bound by the user: a clear error.
//!
//! Lifetime: slirp4netns exits when the last writer of a FIFO (`--exit-fd`) closes it. The
//! daemon holds a writer across `exec` (no `CLOEXEC`), so its shims and port proxies inherit
//! it: the helper outlives a daemon that stops or crashes while containers run, and goes with
//! the last of them. A restarted daemon joins the namespace (the `rootless-namespaces`
//! record), opens the FIFO again and reconciles the forwards; a helper found dead is started
//! anew for the joined namespace.
//!
//! Why slirp4netns rather than `pasta` (Debian's passt 2023-03): that pasta takes its port
//! forwards on its command line only (or scans the namespace's listening sockets every
//! second), while slirp4netns 1.2.0 adds and removes them at run time through its API socket,
//! at once and with an error when the host port is taken.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

/// The environment variable choosing the network of a rootless daemon: `slirp4netns` (the
/// default when installed) or `host` (the host's network namespace: no bridges).
pub const NET_ENV: &str = "BERTHD_ROOTLESS_NET";
/// The daemon namespace's uplink device.
pub const TAP: &str = "tap0";
/// The daemon namespace's address on [`TAP`], where host forwards arrive.
pub const GUEST_IP: &str = "10.0.2.100";
const MTU: u32 = 65520;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

static ISOLATED: AtomicBool = AtomicBool::new(false);
static PORT_START: AtomicU32 = AtomicU32::new(1024);
static API: OnceLock<PathBuf> = OnceLock::new();
/// The daemon's writer of the helper's exit FIFO (never closed, inherited by its children).
static EXIT_WRITER: OnceLock<OwnedFd> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{NET_ENV}={0:?}: expected slirp4netns or host")]
    BadMode(String),
    #[error(
        "{NET_ENV}=slirp4netns but slirp4netns is not installed (apt-get install slirp4netns)"
    )]
    NoHelper,
    #[error("slirp4netns: {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("slirp4netns needs /dev/net/tun, which this user cannot open ({0}); Debian's udev makes it mode 0666 (chmod 0666 /dev/net/tun as root), or set {NET_ENV}=host for the host's network")]
    NoTun(rustix::io::Errno),
    #[error("slirp4netns did not come up: {0}")]
    NotReady(String),
    #[error("slirp4netns API: {execute}: {desc}")]
    Api { execute: String, desc: String },
    #[error("slirp4netns API: {execute}: {source} in {reply:?}")]
    Reply {
        execute: String,
        reply: String,
        source: serde_json::Error,
    },
    #[error("forwarding the host's {addr} into the daemon's namespace (is the port in use on the host?): {source}")]
    Forward { addr: String, source: Box<NetError> },
    #[error("cannot expose privileged port {port} from a rootless daemon: add 'net.ipv4.ip_unprivileged_port_start={port}' to /etc/sysctl.conf (currently {start}), or choose a larger port number (>= {start})")]
    PrivilegedPort { port: u16, start: u32 },
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::Io { op, source }
}

fn errno(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> NetError {
    move |e| NetError::Io {
        op,
        source: e.into(),
    }
}

/// How the rootless daemon is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// A namespace of its own, slirp4netns (this program) as its uplink.
    Slirp4netns(PathBuf),
    /// The host's network namespace (containers: `host` or `none` only).
    Host,
}

/// The mode from [`NET_ENV`]; without it slirp4netns when installed, else the host's network
/// (with a warning).
pub fn mode() -> Result<NetMode, NetError> {
    let slirp = || berth_util::fs::find_in_path("slirp4netns");
    match std::env::var(NET_ENV).unwrap_or_default().as_str() {
        "" => Ok(match slirp() {
            Some(p) => NetMode::Slirp4netns(p),
            None => {
                eprintln!(
                    "berthd: rootless: slirp4netns is not installed (apt-get install \
                     slirp4netns): containers get the host's network or none, no bridges"
                );
                NetMode::Host
            }
        }),
        "slirp4netns" => slirp().map(NetMode::Slirp4netns).ok_or(NetError::NoHelper),
        "host" => Ok(NetMode::Host),
        other => Err(NetError::BadMode(other.to_string())),
    }
}

/// Reads what must come from the host's (initial) network namespace before the daemon
/// leaves it: `net.ipv4.ip_unprivileged_port_start`.
pub fn remember_host_settings() {
    if let Some(v) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        PORT_START.store(v, Ordering::Relaxed);
    }
}

/// True in a rootless daemon living in a network namespace of its own with an uplink.
pub fn isolated() -> bool {
    ISOLATED.load(Ordering::Relaxed)
}

/// True in a rootless daemon on the host's network namespace: no bridges, no firewall, the
/// default network mode is `host`.
pub fn host_only() -> bool {
    crate::rootless::active() && !isolated()
}

fn api_socket(exec_root: &Path) -> PathBuf {
    exec_root.join("slirp4netns.sock")
}

fn exit_fifo(exec_root: &Path) -> PathBuf {
    exec_root.join("slirp4netns.exit")
}

/// A writer of the exit FIFO when a helper (its reader) is alive.
fn open_writer(fifo: &Path, cloexec: bool) -> Option<OwnedFd> {
    let mut flags = OFlags::WRONLY | OFlags::NONBLOCK;
    if cloexec {
        flags |= OFlags::CLOEXEC;
    }
    // ENXIO: no reader.
    rustix::fs::open(fifo, flags, Mode::empty()).ok()
}

/// The supervisor's side: starts slirp4netns for the network namespace of `target` (the
/// daemon, already in it) unless a helper serves the namespace already (`joined`: the
/// namespace of an earlier daemon; in a new one, a helper still reading the FIFO serves
/// another namespace and is left to its own writers). The returned writer keeps the helper
/// while the supervisor runs.
pub fn ensure_helper(
    slirp: &Path,
    target: i32,
    exec_root: &Path,
    joined: bool,
) -> Result<OwnedFd, NetError> {
    let fifo = exit_fifo(exec_root);
    // (A helper still reading the FIFO must also answer: one being killed may hold it a
    // moment longer than its socket.)
    if joined {
        if let Some(w) = open_writer(&fifo, true) {
            if Api::new(api_socket(exec_root)).list().is_ok() {
                return Ok(w);
            }
        }
    }
    rustix::fs::access(
        "/dev/net/tun",
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .map_err(NetError::NoTun)?;
    std::fs::create_dir_all(exec_root).map_err(io("creating the exec root"))?;
    let socket = api_socket(exec_root);
    // A joined namespace keeps its FIFO: its processes hold writers of it, and the new
    // helper must live as long as they do. A new namespace gets a FIFO of its own.
    let keep_fifo = joined
        && rustix::fs::stat(&fifo)
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_fifo());
    let stale: &[&PathBuf] = if keep_fifo {
        &[&socket]
    } else {
        &[&fifo, &socket]
    };
    for f in stale {
        match std::fs::remove_file(f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing a stale file")(e))
            }
            _ => {}
        }
    }
    if !keep_fifo {
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600))
            .map_err(errno("mkfifo"))?;
    }
    // The helper's copies (inherited: no CLOEXEC) — the FIFO's reader and the ready pipe's
    // writer; ours are closed once it runs.
    let reader = rustix::fs::open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())
        .map_err(errno("opening the exit FIFO"))?;
    let writer = open_writer(&fifo, true).ok_or_else(|| {
        NetError::NotReady("the exit FIFO has no reader right after opening it".into())
    })?;
    let (ready_r, ready_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(errno("pipe"))?;
    rustix::io::fcntl_setfd(&ready_w, rustix::io::FdFlags::empty()).map_err(errno("fcntl"))?;
    let log_path = exec_root.join("slirp4netns.log");
    let log = std::fs::File::create(&log_path).map_err(io("creating its log"))?;
    let mut child = std::process::Command::new(slirp)
        .arg("--configure")
        .arg(format!("--mtu={MTU}"))
        .arg(format!("--api-socket={}", socket.display()))
        .arg(format!("--exit-fd={}", reader.as_raw_fd()))
        .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
        .arg(target.to_string())
        .arg(TAP)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io("its log"))?)
        .stderr(log)
        // Not stopped by a terminal's signals to the daemon's group.
        .process_group(0)
        .spawn()
        .map_err(io("starting it"))?;
    drop(reader);
    drop(ready_w);
    let mut fds = [rustix::event::PollFd::new(
        &ready_r,
        rustix::event::PollFlags::IN,
    )];
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let mut byte = [0u8; 1];
    let ready = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break false;
        }
        let ts = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {
                break matches!(rustix::io::read(&ready_r, &mut byte), Ok(1) if byte[0] == b'1')
            }
            Err(e) => return Err(errno("waiting for it")(e)),
        }
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(NetError::NotReady(tail.join("; ")));
    }
    // (The supervisor reaps it should it exit first; otherwise init does.)
    Ok(writer)
}

/// The daemon's side, in its network namespace with the helper up: keeps a writer of the
/// exit FIFO open across `exec` (shims and proxies inherit it) and turns the bridges on.
pub fn joined(exec_root: &Path) -> Result<(), NetError> {
    let fifo = exit_fifo(exec_root);
    let w = open_writer(&fifo, false).ok_or_else(|| {
        NetError::NotReady(format!("no helper reads {} any more", fifo.display()))
    })?;
    let _ = EXIT_WRITER.set(w);
    let _ = API.set(api_socket(exec_root));
    ISOLATED.store(true, Ordering::Relaxed);
    Ok(())
}

/// A host forward of slirp4netns (its API's `add_hostfwd` arguments, `list_hostfwd` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFwd {
    #[serde(default, skip_serializing)]
    pub id: u64,
    pub proto: String,
    pub host_addr: String,
    pub host_port: u16,
    pub guest_addr: String,
    pub guest_port: u16,
}

impl HostFwd {
    /// The forward of a port published on the host's `host_ip` (empty: every address).
    pub fn published(proto: &str, host_ip: &str, port: u16) -> HostFwd {
        HostFwd {
            id: 0,
            proto: proto.to_string(),
            host_addr: if host_ip.is_empty() {
                "0.0.0.0".into()
            } else {
                host_ip.to_string()
            },
            host_port: port,
            guest_addr: GUEST_IP.into(),
            guest_port: port,
        }
    }

    fn same(&self, o: &HostFwd) -> bool {
        (
            &self.proto,
            &self.host_addr,
            self.host_port,
            &self.guest_addr,
            self.guest_port,
        ) == (
            &o.proto,
            &o.host_addr,
            o.host_port,
            &o.guest_addr,
            o.guest_port,
        )
    }
}

#[derive(Serialize)]
struct Request<'a, A: Serialize> {
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<A>,
}

#[derive(Serialize)]
struct RemoveArgs {
    id: u64,
}

#[derive(Debug, Default, Deserialize)]
struct Returned {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    entries: Option<Vec<HostFwd>>,
}

#[derive(Debug, Deserialize)]
struct ErrorDesc {
    #[serde(default)]
    desc: String,
}

/// A reply: `{"return": …}` or `{"error": {"desc": …}}` (slirp4netns 1.2.0 answers
/// `list_hostfwd` with the entries unwrapped).
#[derive(Debug, Deserialize)]
struct Reply {
    #[serde(rename = "return", default)]
    ret: Option<Returned>,
    #[serde(default)]
    error: Option<ErrorDesc>,
    #[serde(default)]
    entries: Option<Vec<HostFwd>>,
}

/// The slirp4netns API socket.
pub struct Api {
    socket: PathBuf,
}

impl Api {
    pub fn new(socket: PathBuf) -> Api {
        Api { socket }
    }

    fn call<A: Serialize>(&self, execute: &str, arguments: Option<A>) -> Result<Reply, NetError> {
        let mut s = UnixStream::connect(&self.socket).map_err(io("connecting to its API"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("API socket"))?;
        let req = serde_json::to_vec(&Request { execute, arguments }).map_err(|source| {
            NetError::Reply {
                execute: execute.into(),
                reply: String::new(),
                source,
            }
        })?;
        s.write_all(&req).map_err(io("writing to its API"))?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(io("writing to its API"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(io("reading its API"))?;
        let r: Reply = serde_json::from_slice(&out).map_err(|source| NetError::Reply {
            execute: execute.into(),
            reply: String::from_utf8_lossy(&out).into_owned(),
            source,
        })?;
        if let Some(e) = r.error {
            return Err(NetError::Api {
                execute: execute.into(),
                desc: e.desc,
            });
        }
        Ok(r)
    }

    pub fn list(&self) -> Result<Vec<HostFwd>, NetError> {
        let r = self.call::<()>("list_hostfwd", None)?;
        Ok(r.entries
            .or(r.ret.and_then(|x| x.entries))
            .unwrap_or_default())
    }

    pub fn add(&self, f: &HostFwd) -> Result<u64, NetError> {
        let r = self.call("add_hostfwd", Some(f))?;
        Ok(r.ret.and_then(|x| x.id).unwrap_or_default())
    }

    pub fn remove(&self, id: u64) -> Result<(), NetError> {
        self.call("remove_hostfwd", Some(RemoveArgs { id }))
            .map(|_| ())
    }
}

/// Makes the helper's host forwards those of `want` (removing the others); a no-op unless
/// [`isolated`]. Every forward is tried; the first that cannot be added is the error (its
/// host port is probably taken on the host).
pub fn sync_ports(want: &[HostFwd]) -> Result<(), NetError> {
    let Some(socket) = API.get().filter(|_| isolated()) else {
        return Ok(());
    };
    let api = Api::new(socket.clone());
    let have = api.list()?;
    for h in have.iter().filter(|h| !want.iter().any(|w| w.same(h))) {
        api.remove(h.id)?;
    }
    let mut first = Ok(());
    for w in want.iter().filter(|w| !have.iter().any(|h| h.same(w))) {
        if let Err(e) = api.add(w) {
            if first.is_ok() {
                first = Err(NetError::Forward {
                    addr: format!("{}:{}/{}", w.host_addr, w.host_port, w.proto),
                    source: Box::new(e),
                });
            }
        }
    }
    first
}

/// Where a port published on the host's `host_ip` is bound in the daemon's namespace: every
/// address there (forwards arrive on [`GUEST_IP`]) when the daemon is [`isolated`], IPv4.
pub fn netns_host_ip(host_ip: &str) -> &str {
    let v4 = host_ip.is_empty() || host_ip.parse::<std::net::Ipv4Addr>().is_ok();
    if isolated() && v4 {
        ""
    } else {
        host_ip
    }
}

/// slirp4netns's DNS forwarder (it resolves with the host's configuration).
pub const DNS_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 3);

/// The host's resolver configuration as containers of an [`isolated`] daemon use it: a
/// loopback server of the host (e.g. systemd-resolved's 127.0.0.53), unreachable from the
/// daemon's namespace, becomes slirp4netns's forwarder [`DNS_IP`] (as rootlesskit does).
pub fn resolv_conf(host: berth_network::etc::ResolvConf) -> berth_network::etc::ResolvConf {
    if isolated() {
        with_forwarder(host)
    } else {
        host
    }
}

fn with_forwarder(mut r: berth_network::etc::ResolvConf) -> berth_network::etc::ResolvConf {
    let mut servers = Vec::new();
    for ip in r.nameservers {
        let ip = if ip.is_loopback() { DNS_IP.into() } else { ip };
        if !servers.contains(&ip) {
            servers.push(ip);
        }
    }
    r.nameservers = servers;
    r
}

/// A host port the user may not bind (below `net.ipv4.ip_unprivileged_port_start`): the
/// error, as rootlesskit words it.
pub fn check_port(port: u16) -> Result<(), NetError> {
    let start = PORT_START.load(Ordering::Relaxed);
    if isolated() && port != 0 && u32::from(port) < start {
        return Err(NetError::PrivilegedPort { port, start });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_slirp4netns_decode() {
        let r: Reply = serde_json::from_str(r#"{"return":{"id":3}}"#).unwrap();
        assert_eq!(r.ret.and_then(|x| x.id), Some(3));
        let r: Reply = serde_json::from_str(
            r#"{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":8080}]}"#,
        )
        .unwrap();
        let e = r.entries.unwrap();
        assert_eq!(e[0].id, 1);
        assert!(e[0].same(&HostFwd::published("tcp", "", 8080)));
        assert!(!e[0].same(&HostFwd::published("tcp", "127.0.0.1", 8080)));
        let r: Reply = serde_json::from_str(
            r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#,
        )
        .unwrap();
        assert!(r.error.unwrap().desc.contains("failed"));
        // The arguments of add_hostfwd carry no id.
        let a = serde_json::to_string(&HostFwd::published("udp", "127.0.0.1", 53)).unwrap();
        assert_eq!(
            a,
            r#"{"proto":"udp","host_addr":"127.0.0.1","host_port":53,"guest_addr":"10.0.2.100","guest_port":53}"#
        );
    }

    #[test]
    fn loopback_resolvers_become_the_forwarder() {
        let r = berth_network::etc::ResolvConf::parse(
            "nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.1\nsearch lan\n",
        );
        let r = with_forwarder(r);
        assert_eq!(
            r.nameservers,
            vec![
                std::net::IpAddr::from([10, 0, 2, 3]),
                "192.0.2.1".parse().unwrap()
            ]
        );
        assert_eq!(r.search, vec!["lan".to_string()]);
    }
}
