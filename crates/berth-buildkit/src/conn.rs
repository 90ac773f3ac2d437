//! HTTP/2 over a hijacked connection, both ways: berthd *serves* gRPC (the control and
//! gateway APIs) on the connection `POST /grpc` upgraded, and is the gRPC *client* of the
//! session services on the connection `POST /session` upgraded (the BuildKit client serves
//! them). Both are h2c with prior knowledge: no TLS, no HTTP/1.1 upgrade dance inside.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// The largest message either side may send (BuildKit's clients allow 16 MiB; definitions
/// and file sync chunks stay far below).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Serves `routes` as an HTTP/2 server on `io` until the client closes it.
pub async fn serve<IO>(io: IO, routes: tonic::service::Routes) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(Timed(routes));
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // Progress streams stay open for a whole build: keep the connection alive, but tell a
    // dead peer quickly.
    b.timer(TokioTimer::new())
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .max_concurrent_streams(Some(1000));
    b.serve_connection(TokioIo::new(io), svc).await
}

/// A service that logs (at debug level) each call's method and how long its answer (the
/// response headers; a stream's first message comes later) took: where a client waits on
/// the daemon shows in the log.
#[derive(Clone)]
struct Timed<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFut<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let t0 = std::time::Instant::now();
        let answer = self.0.call(req);
        Box::pin(async move {
            let r = answer.await;
            tracing::debug!(
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "grpc {path}: answered"
            );
            r
        })
    }
}

/// A gRPC channel over one HTTP/2 client connection (the session's).
#[derive(Clone, Debug)]
pub struct H2Channel {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

impl H2Channel {
    /// Starts HTTP/2 as the client on `io`; the connection is driven by a task that ends
    /// (and `closed` resolves) when the peer goes away.
    pub async fn connect<IO>(
        io: IO,
    ) -> Result<(Self, tokio::sync::oneshot::Receiver<()>), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .handshake(TokioIo::new(io))
            .await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("session connection: {e}");
            }
            let _ = tx.send(());
        });
        Ok((H2Channel { send }, rx))
    }

    /// The origin generated clients put in front of their paths (HTTP/2 wants an authority).
    pub fn origin() -> http::Uri {
        http::Uri::from_static("http://buildkit-session")
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for H2Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = BoxFut<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(req))
    }
}
