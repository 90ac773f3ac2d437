//! The embedded DNS server of user-defined networks (Docker's 127.0.0.11).
//!
//! One UDP socket and one TCP listener per container, bound to `127.0.0.11:53` *inside* the
//! container's network namespace (created on a thread that entered it; sockets keep their
//! namespace), served by the daemon's tokio runtime. Each server knows its container, so names
//! resolve only on the networks that container is attached to. Names that are not ours are
//! forwarded, from the daemon's (host) namespace, to the upstream resolvers. After a daemon
//! restart the servers are created again for every running container.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::netlink::Netns;

/// Docker's embedded DNS address.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// What a name means to one container.
pub enum Answer {
    /// One of ours: these addresses (A answers the IPv4 ones, AAAA the IPv6 ones; none of
    /// the asked family = exists, empty NOERROR).
    Local(Vec<IpAddr>),
    /// Ask these servers.
    Forward(Vec<SocketAddr>),
}

/// Looks names up (lowercase, no trailing dot) for one container.
pub type Lookup = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds 127.0.0.11:53 (UDP and TCP) inside `ns` and serves it on the current runtime.
pub fn serve_in(ns: &Netns, lookup: Lookup) -> io::Result<DnsServer> {
    let (udp, tcp) = ns.run(|| -> io::Result<_> {
        let addr = SocketAddr::from((DNS_ADDR, 53));
        let u = std::net::UdpSocket::bind(addr)?;
        let t = std::net::TcpListener::bind(addr)?;
        u.set_nonblocking(true)?;
        t.set_nonblocking(true)?;
        Ok((u, t))
    })??;
    serve(udp, tcp, lookup)
}

/// Serves already bound sockets (tests bind them on loopback).
pub fn serve(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    lookup: Lookup,
) -> io::Result<DnsServer> {
    let udp = Arc::new(UdpSocket::from_std(udp)?);
    let tcp = TcpListener::from_std(tcp)?;
    let l2 = lookup.clone();
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let q = buf[..n].to_vec();
            let (udp, lookup) = (udp.clone(), lookup.clone());
            tokio::spawn(async move {
                if let Some(r) = answer(&q, &lookup).await {
                    let _ = udp.send_to(&r, from).await;
                }
            });
        }
    });
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = tcp.accept().await else {
                continue;
            };
            let lookup = l2.clone();
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 2];
                    if c.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if c.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Some(r) = answer(&q, &lookup).await else {
                        return;
                    };
                    let mut out = (r.len() as u16).to_be_bytes().to_vec();
                    out.extend_from_slice(&r);
                    if c.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(DnsServer {
        tasks: vec![t1, t2],
    })
}

/// A parsed question.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    /// Byte offset just past the question.
    pub end: usize,
}

/// Parses the header and first question of a query (`None` for anything malformed).
pub fn parse_query(q: &[u8]) -> Option<Question> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) < 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(i)? as usize;
        if l == 0 {
            i += 1;
            break;
        }
        if l & 0xc0 != 0 {
            return None;
        }
        let label = q.get(i + 1..i + 1 + l)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += 1 + l;
        if i > 270 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    q.get(i + 3)?;
    Some(Question {
        name: labels.join("."),
        qtype,
        end: i + 4,
    })
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// A response to `q` with `rcode`: A records for the IPv4 addresses of `ips` (type A
/// questions), AAAA records for the IPv6 ones (type AAAA), nothing for other types.
pub fn build_response(q: &[u8], question: &Question, rcode: u8, ips: &[IpAddr]) -> Vec<u8> {
    let ips: Vec<&IpAddr> = ips
        .iter()
        .filter(|ip| match question.qtype {
            TYPE_A => ip.is_ipv4(),
            TYPE_AAAA => ip.is_ipv6(),
            _ => false,
        })
        .collect();
    let mut r = Vec::with_capacity(question.end + 16 * ips.len());
    r.extend_from_slice(&q[0..2]);
    // QR, the query's opcode and RD; AA (we are authoritative for our names) and RA.
    r.push(0x80 | (q[2] & 0x79) | 0x04);
    r.push(0x80 | (rcode & 0x0f));
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..question.end]);
    for ip in ips {
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&question.qtype.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&600u32.to_be_bytes());
        match ip {
            IpAddr::V4(a) => {
                r.extend_from_slice(&[0, 4]);
                r.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                r.extend_from_slice(&[0, 16]);
                r.extend_from_slice(&a.octets());
            }
        }
    }
    r
}

async fn forward(q: &[u8], servers: &[SocketAddr]) -> Option<Vec<u8>> {
    for s in servers {
        let bind: SocketAddr = if s.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.connect(s).await.is_err() || sock.send(q).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf)).await {
            if n >= 2 && buf[..2] == q[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

/// The reply to one query.
pub async fn answer(q: &[u8], lookup: &Lookup) -> Option<Vec<u8>> {
    let question = parse_query(q)?;
    match lookup(&question.name) {
        Answer::Local(ips) => Some(build_response(q, &question, 0, &ips)),
        Answer::Forward(servers) => match forward(q, &servers).await {
            Some(r) => Some(r),
            // SERVFAIL
            None => Some(build_response(q, &question, 2, &[])),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[tokio::test]
    async fn answers_local_names_and_forwards_others() {
        // An "upstream" answering NXDOMAIN to everything.
        let up = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 512];
            while let Ok((n, from)) = up.recv_from(&mut b).await {
                let q = parse_query(&b[..n]).unwrap();
                let r = build_response(&b[..n], &q, 3, &[]);
                let _ = up.send_to(&r, from).await;
            }
        });
        let lookup: Lookup = Arc::new(move |n: &str| {
            if n == "web" {
                Answer::Local(vec![
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    "fd00::2".parse().unwrap(),
                ])
            } else {
                Answer::Forward(vec![up_addr])
            }
        });
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        u.set_nonblocking(true).unwrap();
        t.set_nonblocking(true).unwrap();
        let (ua, ta) = (u.local_addr().unwrap(), t.local_addr().unwrap());
        let _srv = serve(u, t, lookup).unwrap();

        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&query("WEB", 1), ua).await.unwrap();
        let mut b = [0u8; 512];
        let (n, _) = c.recv_from(&mut b).await.unwrap();
        let r = &b[..n];
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[n - 4..], &[10, 0, 0, 2]);

        c.send_to(&query("example.org", 1), ua).await.unwrap();
        let (n, _) = c.recv_from(&mut b).await.unwrap();
        assert_eq!(b[3] & 0x0f, 3, "{:?}", &b[..n]);

        // AAAA for a local name with an IPv6 address.
        c.send_to(&query("web", 28), ua).await.unwrap();
        let (n, _) = c.recv_from(&mut b).await.unwrap();
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), 1);
        assert_eq!(&b[n - 18..n - 16], &[0, 16]);
        assert_eq!(
            &b[n - 16..n],
            &"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );

        // TCP, MX for a local name: NOERROR, no answers.
        let mut s = tokio::net::TcpStream::connect(ta).await.unwrap();
        let q = query("web", 15);
        let mut m = (q.len() as u16).to_be_bytes().to_vec();
        m.extend_from_slice(&q);
        s.write_all(&m).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
    }

    #[test]
    fn malformed_queries_are_ignored() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut q = query("a.b", 1);
        q.truncate(q.len() - 3);
        assert!(parse_query(&q).is_none());
    }
}
