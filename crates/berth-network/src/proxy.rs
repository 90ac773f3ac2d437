//! The userland proxy of published ports (Docker's `docker-proxy`).
//!
//! Every published port is bound here first: the bind reserves the port (a conflict is a clear
//! error at start), chooses random host ports for `-P`, and serves connections made from the
//! host itself (127.0.0.1 and the host's own addresses), which never pass through PREROUTING
//! DNAT. Traffic from other hosts is forwarded by DNAT before it reaches these sockets.
//!
//! A proxy runs either as a task of the daemon ([`Bound::serve`]) or as a process of its
//! own holding the socket ([`Bound::spawn_process`], as `docker-proxy`): the process
//! outlives a daemon that crashes or restarts, so published ports keep answering, and the
//! next daemon adopts it ([`Proxy::adopt`]) by its command line ([`find_processes`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::firewall::Proto;

/// A bound, not yet serving, host port.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Binds `addr` (port 0 = a random port); the OS error as it is (the caller words it).
pub fn bind(proto: Proto, addr: SocketAddr) -> io::Result<Bound> {
    if addr.is_ipv6() {
        return bind_v6only(proto, addr);
    }
    Ok(match proto {
        Proto::Tcp => {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Bound::Tcp(l)
        }
        Proto::Udp => {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Bound::Udp(s)
        }
    })
}

/// An IPv6 socket with `IPV6_V6ONLY`: `[::]:P` must not take the IPv4 `0.0.0.0:P` the same
/// port publishes separately (the host's `bindv6only` default is dual-stack).
fn bind_v6only(proto: Proto, addr: SocketAddr) -> io::Result<Bound> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (ty, p) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let s = Socket::new(Domain::IPV6, ty, Some(p))?;
    s.set_only_v6(true)?;
    if proto == Proto::Tcp {
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(match proto {
        Proto::Tcp => {
            s.listen(1024)?;
            Bound::Tcp(s.into())
        }
        Proto::Udp => Bound::Udp(s.into()),
    })
}

impl Bound {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(s) => s.local_addr(),
        }
    }

    /// Starts a proxy process forwarding to `target`: `exe` (an executable that calls
    /// [`serve_process`] when its first argument is [`PROCESS_ARG`]) with the socket as its
    /// descriptor 3, in a session of its own; `tags` (more arguments) identify it for
    /// [`find_processes`].
    pub fn spawn_process(
        self,
        exe: &Path,
        target: SocketAddr,
        tags: &[String],
    ) -> io::Result<Proxy> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let (proto, fd) = match &self {
            Bound::Tcp(l) => ("tcp", l.as_raw_fd()),
            Bound::Udp(s) => ("udp", s.as_raw_fd()),
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.arg(PROCESS_ARG)
            .arg(proto)
            .arg(target.to_string())
            .args(tags)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, fcntl, setsid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                berth_util::fd::inherit_as(fd, 3)?;
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Proxy {
            run: Run::Process {
                pid: child.id() as i32,
                child: Some(child),
            },
        })
    }

    /// Starts forwarding to `target` on the current tokio runtime.
    pub fn serve(self, target: SocketAddr) -> io::Result<Proxy> {
        let task = match self {
            Bound::Tcp(l) => {
                let l = TcpListener::from_std(l)?;
                tokio::spawn(tcp_loop(l, target))
            }
            Bound::Udp(s) => {
                let s = UdpSocket::from_std(s)?;
                tokio::spawn(udp_loop(Arc::new(s), target))
            }
        };
        Ok(Proxy {
            run: Run::Task(task),
        })
    }
}

/// A serving proxy; stops when dropped.
pub struct Proxy {
    run: Run,
}

enum Run {
    Task(JoinHandle<()>),
    /// A proxy process: this daemon's child, or adopted from an earlier daemon.
    Process {
        pid: i32,
        child: Option<std::process::Child>,
    },
}

impl Proxy {
    /// A proxy process an earlier daemon started (see [`find_processes`]).
    pub fn adopt(pid: i32) -> Proxy {
        Proxy {
            run: Run::Process { pid, child: None },
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Task(t) => t.abort(),
            Run::Process { pid, child } => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                if let Some(c) = child {
                    let _ = c.wait();
                }
            }
        }
    }
}

/// The first argument of a proxy process's command line.
pub const PROCESS_ARG: &str = "userland-proxy";

/// Proxy processes whose command line carries every one of `tags` (after
/// [`PROCESS_ARG`]): their pids and arguments after it.
pub fn find_processes(tags: &[String]) -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for (pid, raw) in berth_util::process::command_lines() {
        let args: Vec<String> = raw
            .iter()
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) != Some(PROCESS_ARG) {
            continue;
        }
        let rest = args[2..].to_vec();
        if tags.iter().all(|t| rest.contains(t)) {
            out.push((pid, rest));
        }
    }
    out
}

/// A proxy process's life: `args` are what follows [`PROCESS_ARG`] (`tcp|udp`, the target,
/// tags); the socket is descriptor 3. Serves until killed.
pub fn serve_process(args: &[String]) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    let (Some(proto), Some(target)) = (args.first(), args.get(1)) else {
        return Err(bad("usage: userland-proxy tcp|udp TARGET [TAG…]"));
    };
    let target: SocketAddr = target.parse().map_err(|_| bad("bad target address"))?;
    let bound = match proto.as_str() {
        // SAFETY: descriptor 3 is the socket the daemon passed, owned by this process only.
        "tcp" => Bound::Tcp(unsafe { std::net::TcpListener::from_raw_fd(3) }),
        // SAFETY: as above.
        "udp" => Bound::Udp(unsafe { std::net::UdpSocket::from_raw_fd(3) }),
        _ => return Err(bad("the protocol is tcp or udp")),
    };
    match &bound {
        Bound::Tcp(l) => l.set_nonblocking(true)?,
        Bound::Udp(u) => u.set_nonblocking(true)?,
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let _proxy = bound.serve(target)?;
        std::future::pending::<io::Result<()>>().await
    })
}

async fn tcp_loop(l: TcpListener, target: SocketAddr) {
    loop {
        let (mut inbound, _) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("proxy accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match TcpStream::connect(target).await {
                Ok(mut out) => {
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut inbound,
                        &mut out,
                        256 * 1024,
                        256 * 1024,
                    )
                    .await;
                }
                Err(e) => tracing::debug!("proxy connect {target}: {e}"),
            }
        });
    }
}

const UDP_IDLE: Duration = Duration::from_secs(90);

async fn udp_loop(s: Arc<UdpSocket>, target: SocketAddr) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows.lock().unwrap().get(&from).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let bind: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                let Ok(u) = UdpSocket::bind(bind).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().unwrap().insert(from, u.clone());
                let (s2, u2, flows2) = (s.clone(), u.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut b)).await {
                        let _ = s2.send_to(&b[..n], from).await;
                    }
                    flows2.lock().unwrap().remove(&from);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_and_udp_forwarding_and_conflicts() {
        // A TCP echo server as the "container".
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let b = bind(Proto::Tcp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = b.local_addr().unwrap();
        let err = match bind(Proto::Tcp, addr) {
            Err(e) => e,
            Ok(_) => panic!("second bind succeeded"),
        };
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        let _p = b.serve(echo_addr).unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        let us = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let us_addr = us.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 100];
            while let Ok((n, from)) = us.recv_from(&mut b).await {
                let _ = us.send_to(&b[..n], from).await;
            }
        });
        let ub = bind(Proto::Udp, "127.0.0.1:0".parse().unwrap()).unwrap();
        let uaddr = ub.local_addr().unwrap();
        let _up = ub.serve(us_addr).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", uaddr).await.unwrap();
        let mut got = [0u8; 10];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..n], b"ping");
    }
}
