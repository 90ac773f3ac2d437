//! Where the daemon is and how to reach it, found as the docker CLI finds it:
//!
//! - the address: `-H`, else `BERTH_HOST`, else `DOCKER_HOST`, else, for a user other than
//!   root, the socket of their own rootless berthd (`$XDG_RUNTIME_DIR/berth/berth.sock`) when
//!   it exists, else the default socket `unix:///run/berth/berth.sock`; `unix:///path` (or a bare path) and `tcp://host[:port]`
//!   (port 2376 with TLS, 2375 without);
//! - TLS on `tcp://` with `--tls` (the server is not verified) or `--tlsverify` (also
//!   `BERTH_TLS_VERIFY`/`DOCKER_TLS_VERIFY` set to anything but empty); the files come from
//!   `--tlscacert`/`--tlscert`/`--tlskey`, else `ca.pem`/`cert.pem`/`key.pem` in
//!   `BERTH_CERT_PATH`, `DOCKER_CERT_PATH`, `~/.berth` (when it holds certificates) or
//!   `~/.docker`; a client certificate is sent when both its files exist.
//!
//! Every connection reaches the rest of the CLI as a [`UnixStream`]: a TCP connection (plain
//! or TLS) is relayed through a socket pair by a thread, so the HTTP client, attach and exec,
//! with their half-closes, are the same code for every transport.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use berth_util::host::Address;
pub use berth_util::host::DEFAULT_HOST;

/// The connection flags (`berth -H … --tlsverify …`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectionArgs {
    /// Daemon socket to connect to (`unix:///path`, `tcp://host[:port]`) [env: BERTH_HOST,
    /// then DOCKER_HOST] [default: unix:///run/berth/berth.sock]
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub host: Option<String>,
    /// Use TLS; implied by --tlsverify
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the daemon [env: BERTH_TLS_VERIFY, DOCKER_TLS_VERIFY]
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA [default: CERT_PATH/ca.pem]
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file [default: CERT_PATH/cert.pem]
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file [default: CERT_PATH/key.pem]
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
}

/// An address or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("unsupported daemon address {0:?}: use unix:///path/to/berth.sock or tcp://host:port")]
    Address(String),
    #[error("could not read {what} {}: {message}", .path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS settings: {0}")]
    Tls(String),
}

/// How to reach the daemon.
#[derive(Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        /// `host:port`.
        addr: String,
        host: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { addr, tls, .. } => {
                write!(
                    f,
                    "tcp://{addr}{}",
                    if tls.is_some() { " (TLS)" } else { "" }
                )
            }
        }
    }
}

/// The environment the settings are read from (tests give their own).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    /// The effective user id.
    fn euid(&self) -> u32 {
        rustix::process::geteuid().as_raw()
    }
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }
}

/// The socket a rootless berthd of this (non-root) user listens on, when it exists.
fn rootless_socket(env: &dyn Env) -> Option<String> {
    if env.euid() == 0 {
        return None;
    }
    let dir = PathBuf::from(env.var("XDG_RUNTIME_DIR")?);
    let sock = dir.join("berth/berth.sock");
    (dir.is_absolute() && env.exists(&sock)).then(|| format!("unix://{}", sock.display()))
}

/// The process's environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}

/// Where certificates are looked up when no flag names them.
fn cert_dir(env: &dyn Env) -> Option<PathBuf> {
    if let Some(p) = env
        .var("BERTH_CERT_PATH")
        .or_else(|| env.var("DOCKER_CERT_PATH"))
    {
        return Some(PathBuf::from(p));
    }
    let home = env.home()?;
    let berth = home.join(".berth");
    if ["ca.pem", "cert.pem", "key.pem"]
        .iter()
        .any(|f| berth.join(f).exists())
    {
        return Some(berth);
    }
    Some(home.join(".docker"))
}

fn pem_certs(what: &'static str, p: &Path) -> Result<Vec<CertificateDer<'static>>, EndpointError> {
    let err = |message: String| EndpointError::Pem {
        what,
        path: p.to_path_buf(),
        message,
    };
    let v = CertificateDer::pem_file_iter(p)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if v.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    Ok(v)
}

/// Resolves the flags and the environment into an endpoint.
pub fn resolve(args: &ConnectionArgs, env: &dyn Env) -> Result<Endpoint, EndpointError> {
    let addr = args
        .host
        .clone()
        .or_else(|| env.var("BERTH_HOST"))
        .or_else(|| env.var("DOCKER_HOST"))
        .or_else(|| rootless_socket(env))
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let verify = args.tlsverify
        || env.var("BERTH_TLS_VERIFY").is_some()
        || env.var("DOCKER_TLS_VERIFY").is_some();
    let tls = args.tls || verify;
    match Address::parse(&addr).map_err(|e| EndpointError::Address(e.0))? {
        Address::Unix(p) => Ok(Endpoint::Unix(p)),
        Address::Tcp(host, port) => {
            let addr = berth_util::host::tcp_addr(&host, port, tls);
            let tls = if tls {
                Some(client_config(args, env, verify)?)
            } else {
                None
            };
            Ok(Endpoint::Tcp { addr, host, tls })
        }
    }
}

fn client_config(
    args: &ConnectionArgs,
    env: &dyn Env,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>, EndpointError> {
    let dir = cert_dir(env);
    let file = |flag: &Option<PathBuf>, name: &str| -> (Option<PathBuf>, bool) {
        match flag {
            Some(p) => (Some(p.clone()), true),
            None => (dir.as_ref().map(|d| d.join(name)), false),
        }
    };
    let (ca, _) = file(&args.tlscacert, "ca.pem");
    let (cert, cert_given) = file(&args.tlscert, "cert.pem");
    let (key, key_given) = file(&args.tlskey, "key.pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    let builder = if verify {
        let ca = ca.ok_or_else(|| EndpointError::Tls("--tlsverify needs --tlscacert".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs("CA certificate", &ca)? {
            roots
                .add(c)
                .map_err(|e| EndpointError::Tls(format!("{}: {e}", ca.display())))?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    // A client certificate when both files exist (or were named: then they must).
    let both = match (cert, key) {
        (Some(c), Some(k)) if cert_given || key_given || (c.exists() && k.exists()) => Some((c, k)),
        _ => None,
    };
    let mut cfg = match both {
        Some((c, k)) => {
            let chain = pem_certs("certificate", &c)?;
            let key = PrivateKeyDer::from_pem_file(&k).map_err(|e| EndpointError::Pem {
                what: "key",
                path: k.clone(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| EndpointError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `--tls` without `--tlsverify`: the server's certificate is not checked (docker's
/// `InsecureSkipVerify`), its signatures still are.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Endpoint {
    /// A connection to the daemon. TCP and TLS connections are relayed through a socket
    /// pair; the TLS handshake completes (or fails) before this returns.
    pub fn connect(&self) -> std::io::Result<UnixStream> {
        match self {
            Endpoint::Unix(p) => UnixStream::connect(p),
            Endpoint::Tcp { addr, host, tls } => {
                let tcp = TcpStream::connect(addr.as_str())?;
                let _ = tcp.set_nodelay(true);
                let (ours, theirs) = UnixStream::pair()?;
                match tls {
                    None => relay_plain(tcp, theirs)?,
                    Some(cfg) => {
                        let name = ServerName::try_from(host.clone())
                            .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
                        let mut conn = rustls::ClientConnection::new(cfg.clone(), name)
                            .map_err(std::io::Error::other)?;
                        let mut tcp = tcp;
                        while conn.is_handshaking() {
                            conn.complete_io(&mut tcp)?;
                        }
                        std::thread::Builder::new()
                            .name("tls-relay".into())
                            .spawn(move || {
                                if let Err(e) = relay_tls(conn, tcp, theirs) {
                                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                                        eprintln!("berth: TLS connection: {e}");
                                    }
                                }
                            })?;
                    }
                }
                Ok(ours)
            }
        }
    }
}

/// Copies both ways between a TCP connection and our end of the pair, passing half-closes on.
fn relay_plain(tcp: TcpStream, local: UnixStream) -> std::io::Result<()> {
    let (mut t_in, mut t_out) = (tcp.try_clone()?, tcp);
    let (mut l_in, mut l_out) = (local.try_clone()?, local);
    std::thread::Builder::new()
        .name("tcp-relay-in".into())
        .spawn(move || {
            let _ = std::io::copy(&mut t_in, &mut l_out);
            let _ = l_out.shutdown(std::net::Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("tcp-relay-out".into())
        .spawn(move || {
            let _ = std::io::copy(&mut l_in, &mut t_out);
            let _ = t_out.shutdown(std::net::Shutdown::Write);
        })?;
    Ok(())
}

/// One thread drives a TLS session between the TCP connection and our end of the pair: what
/// the daemon sends is decrypted to `local`, what `local` writes is encrypted; the end of
/// `local`'s input sends `close_notify` (the daemon sees the half-close).
fn relay_tls(
    mut conn: rustls::ClientConnection,
    mut tcp: TcpStream,
    mut local: UnixStream,
) -> std::io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let (mut local_open, mut remote_open) = (true, true);
    loop {
        while conn.wants_write() {
            conn.write_tls(&mut tcp)?;
        }
        if !remote_open && !local_open {
            return Ok(());
        }
        let (tcp_ready, local_ready) = {
            let mut fds = Vec::with_capacity(2);
            if remote_open {
                fds.push(PollFd::new(&tcp, PollFlags::IN));
            }
            if local_open {
                fds.push(PollFd::new(&local, PollFlags::IN));
            }
            poll(&mut fds, None).map_err(std::io::Error::from)?;
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            match (remote_open, local_open) {
                (true, true) => (ready[0], ready[1]),
                (true, false) => (ready[0], false),
                _ => (false, ready[0]),
            }
        };
        if tcp_ready {
            if conn.read_tls(&mut tcp)? == 0 {
                remote_open = false;
            }
            let state = conn
                .process_new_packets()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut n = state.plaintext_bytes_to_read();
            while n > 0 {
                let want = n.min(buf.len());
                let got = conn.reader().read(&mut buf[..want])?;
                if got == 0 {
                    break;
                }
                local.write_all(&buf[..got])?;
                n -= got;
            }
            if state.peer_has_closed() {
                remote_open = false;
            }
            if !remote_open {
                let _ = local.shutdown(std::net::Shutdown::Write);
            }
        }
        if local_ready {
            let n = local.read(&mut buf)?;
            if n == 0 {
                local_open = false;
                conn.send_close_notify();
            } else {
                conn.writer().write_all(&buf[..n])?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeEnv(HashMap<&'static str, String>, Option<PathBuf>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            self.1.clone()
        }
    }
    fn env(vars: &[(&'static str, &str)]) -> FakeEnv {
        FakeEnv(
            vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            None,
        )
    }

    struct UserEnv(u32, &'static str, bool);
    impl Env for UserEnv {
        fn var(&self, name: &str) -> Option<String> {
            match name {
                "XDG_RUNTIME_DIR" => Some(self.1.to_string()),
                _ => None,
            }
        }
        fn home(&self) -> Option<PathBuf> {
            None
        }
        fn euid(&self) -> u32 {
            self.0
        }
        fn exists(&self, p: &Path) -> bool {
            self.2 && p == Path::new("/run/user/1000/berth/berth.sock")
        }
    }

    #[test]
    fn rootless_socket_for_users_only() {
        let a = ConnectionArgs::default();
        let found = |e: UserEnv| resolve(&a, &e).unwrap().to_string();
        assert_eq!(
            found(UserEnv(1000, "/run/user/1000", true)),
            "unix:///run/user/1000/berth/berth.sock"
        );
        // No rootless daemon: the system's socket.
        assert_eq!(found(UserEnv(1000, "/run/user/1000", false)), DEFAULT_HOST);
        // Root uses the system's daemon; a relative directory is ignored.
        assert_eq!(found(UserEnv(0, "/run/user/1000", true)), DEFAULT_HOST);
        assert_eq!(found(UserEnv(1000, "run/user/1000", true)), DEFAULT_HOST);
    }

    #[test]
    fn discovery_order() {
        let a = ConnectionArgs::default();
        assert_eq!(resolve(&a, &env(&[])).unwrap().to_string(), DEFAULT_HOST);
        assert_eq!(
            resolve(&a, &env(&[("DOCKER_HOST", "unix:///d.sock")]))
                .unwrap()
                .to_string(),
            "unix:///d.sock"
        );
        assert_eq!(
            resolve(
                &a,
                &env(&[
                    ("DOCKER_HOST", "unix:///d.sock"),
                    ("BERTH_HOST", "unix:///b.sock")
                ])
            )
            .unwrap()
            .to_string(),
            "unix:///b.sock"
        );
        let flag = ConnectionArgs {
            host: Some("tcp://127.0.0.1".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&flag, &env(&[("BERTH_HOST", "unix:///b.sock")]))
                .unwrap()
                .to_string(),
            "tcp://127.0.0.1:2375"
        );
    }

    #[test]
    fn tls_needs_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = ConnectionArgs {
            host: Some("tcp://127.0.0.1".into()),
            tlsverify: true,
            ..Default::default()
        };
        let e = resolve(
            &a,
            &env(&[("DOCKER_CERT_PATH", dir.path().to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("could not read CA certificate"),
            "{e}"
        );
        // DOCKER_TLS_VERIFY alone turns verification on (and the default port to 2376).
        let b = ConnectionArgs {
            host: Some("tcp://127.0.0.1".into()),
            ..Default::default()
        };
        let e = resolve(
            &b,
            &env(&[
                ("DOCKER_TLS_VERIFY", "1"),
                ("BERTH_CERT_PATH", dir.path().to_str().unwrap()),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        // --tls without verification and without client files: fine.
        let c = ConnectionArgs {
            host: Some("tcp://127.0.0.1".into()),
            tls: true,
            ..Default::default()
        };
        let ep = resolve(
            &c,
            &env(&[("BERTH_CERT_PATH", dir.path().to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(ep.to_string(), "tcp://127.0.0.1:2376 (TLS)");
        // ~/.berth is used when it holds certificates, else ~/.docker.
        let home = tempfile::tempdir().unwrap();
        let e = FakeEnv(HashMap::new(), Some(home.path().to_path_buf()));
        assert_eq!(cert_dir(&e).unwrap(), home.path().join(".docker"));
        std::fs::create_dir_all(home.path().join(".berth")).unwrap();
        std::fs::write(home.path().join(".berth/ca.pem"), "").unwrap();
        assert_eq!(cert_dir(&e).unwrap(), home.path().join(".berth"));
    }

    #[test]
    fn plain_tcp_is_relayed_with_half_closes() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"echo:").unwrap();
            s.write_all(&got).unwrap();
        });
        let ep = resolve(
            &ConnectionArgs {
                host: Some(format!("tcp://127.0.0.1:{port}")),
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap();
        let mut c = ep.connect().unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "echo:hello");
        t.join().unwrap();
    }
}
