//! The daemon's listeners (`-H`): unix sockets, and TCP with TLS (`--tls`, `--tlsverify` with
//! client certificates from `--tlscacert`) as dockerd's. Plain TCP is refused unless asked for
//! explicitly, since it gives root on the host to anyone who can connect.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_util::host::{tcp_addr, Address};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A listener that cannot be set up (the flag or file at fault named).
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("invalid host {host}: {reason}")]
    Host { host: String, reason: String },
    /// A TLS flag is missing.
    #[error("{0}")]
    Missing(&'static str),
    #[error("reading {}: {source}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// One `-H` address.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// Parses `unix:///path`, `/path`, `tcp://host:port` (port 2376 by default with TLS, 2375
/// without, as dockerd).
pub fn parse_host(s: &str, tls: bool) -> Result<Endpoint, ListenError> {
    let bad = |reason: String| ListenError::Host {
        host: s.to_string(),
        reason,
    };
    match Address::parse(s).map_err(|e| bad(e.to_string()))? {
        Address::Unix(p) => Ok(Endpoint::Unix(p)),
        Address::Tcp(host, port) => {
            std::net::ToSocketAddrs::to_socket_addrs(&tcp_addr(&host, port, tls))
                .map_err(|e| bad(e.to_string()))?
                .next()
                .map(Endpoint::Tcp)
                .ok_or_else(|| bad("no address".into()))
        }
    }
}

/// TLS settings (dockerd's flags).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Require client certificates signed by `ca`.
    pub verify: bool,
}

fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> ListenError + '_ {
    move |source| ListenError::Pem {
        path: path.to_path_buf(),
        source,
    }
}

fn certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, ListenError> {
    CertificateDer::pem_file_iter(p)
        .map_err(pem(p))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(p))
}

/// The rustls server configuration for `files`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ListenError> {
    let tls = |what: String| move |source| ListenError::Tls { what, source };
    let cert = files.cert.as_ref().ok_or(ListenError::Missing(
        "--tlscert is required for a TLS listener",
    ))?;
    let key = files.key.as_ref().ok_or(ListenError::Missing(
        "--tlskey is required for a TLS listener",
    ))?;
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls("protocol versions".into()))?;
    let builder = if files.verify {
        let ca = files
            .ca
            .as_ref()
            .ok_or(ListenError::Missing("--tlsverify needs --tlscacert"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca)? {
            roots.add(c).map_err(tls(ca.display().to_string()))?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(tls("the TLS certificate and key".into()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The next connection on `listener` (`what` names the server in the logs), `None` once `stop`
/// changes. A failed accept (out of descriptors, …) is logged and retried after a pause.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!("{what} server: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return None,
        }
    }
}

/// Serves `app` on a TCP listener, over TLS when `tls` is given, until `shutdown` resolves.
pub async fn serve_tcp<S>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: S,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) where
    S: tower::Service<
            axum::http::Request<axum::body::Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    while let Some((tcp, peer)) = accept(&listener, &mut shutdown, "API").await {
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |req: axum::http::Request<hyper::body::Incoming>| {
                    let mut app = app.clone();
                    async move { app.call(req.map(axum::body::Body::new)).await }
                },
            );
            let builder = hyper::server::conn::http1::Builder::new();
            let res = match acceptor {
                Some(a) => match a.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await
                    }
                    Err(e) => {
                        tracing::info!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = res {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///run/x.sock", false).unwrap(),
            Endpoint::Unix("/run/x.sock".into())
        );
        assert_eq!(
            parse_host("tcp://127.0.0.1", true).unwrap(),
            Endpoint::Tcp("127.0.0.1:2376".parse().unwrap())
        );
        assert_eq!(
            parse_host("tcp://:2375", false).unwrap(),
            Endpoint::Tcp("127.0.0.1:2375".parse().unwrap())
        );
        assert!(parse_host("ftp://x", false).is_err());
    }
}
