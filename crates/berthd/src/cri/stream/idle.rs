//! A streaming connection's end, as the sessions on it learn of it: the client closed it (end
//! of file, an error), or nothing went either way for the idle timeout (the kubelet's
//! `StreamIdleTimeout`, containerd's `stream_idle_timeout`; SPDY's idle timer and the
//! WebSocket's deadline). [`Watched`] wraps the connection under HTTP and the upgrade, so
//! every byte in either direction counts as activity; [`Gone`] resolves once it ended, and a
//! session then ends what it runs (an exec's process is killed, as containerd does when the
//! stream's context is cancelled).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// The shared state of a connection: its last activity and whether it ended.
struct Shared {
    start: Instant,
    /// Milliseconds from `start` to the last read or write.
    last: AtomicU64,
    gone: watch::Sender<bool>,
}

impl Shared {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn end(&self) {
        self.gone.send_replace(true);
    }
}

/// A connection whose reads and writes are activity; reading fails with `TimedOut` once it
/// was idle for the timeout (the read of the session's reader task is always pending, so
/// its timer runs), and its end (EOF, an error, the timeout) is told to [`Gone`].
pub struct Watched<IO> {
    io: IO,
    shared: Arc<Shared>,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Resolves once the connection ended (cheap to clone; one per session).
#[derive(Clone)]
pub struct Gone(Option<watch::Receiver<bool>>);

impl Gone {
    /// Waits for the connection's end.
    pub async fn wait(&mut self) {
        match &mut self.0 {
            // The sender is dropped with the connection, which is its end too.
            Some(rx) => drop(rx.wait_for(|g| *g).await),
            None => std::future::pending().await,
        }
    }

    /// A `Gone` that never resolves (a request not on a watched connection).
    pub fn never() -> Gone {
        Gone(None)
    }
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, idle: Option<Duration>) -> (Watched<IO>, Gone) {
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            last: AtomicU64::new(0),
            gone: tx,
        });
        (
            Watched {
                io,
                shared,
                idle,
                timer: None,
            },
            Gone(Some(rx)),
        )
    }
}

impl<IO> Drop for Watched<IO> {
    fn drop(&mut self) {
        self.shared.end();
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() == before {
                    me.shared.end();
                } else {
                    me.shared.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                me.shared.end();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                let Some(idle) = me.idle else {
                    return Poll::Pending;
                };
                // The deadline moves with the activity (writes too): re-armed until it is
                // reached with nothing in between.
                loop {
                    let deadline = me.shared.last() + idle;
                    let timer = me
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if me.shared.last() + idle <= Instant::now() {
                        tracing::debug!("CRI stream: idle for {idle:?}, closing the connection");
                        me.shared.end();
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the streaming connection was idle for too long",
                        )));
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, data);
        match &r {
            Poll::Ready(Ok(_)) => me.shared.touch(),
            Poll::Ready(Err(_)) => me.shared.end(),
            Poll::Pending => {}
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_reads_time_out_and_activity_moves_the_deadline() {
        let idle = Duration::from_millis(400);
        let (a, mut b) = tokio::io::duplex(64);
        let (mut w, mut gone) = Watched::new(a, Some(idle));
        let t0 = Instant::now();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let mut got = Vec::new();
            loop {
                match w.read(&mut buf).await {
                    Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                    Ok(_) => return (got, None),
                    Err(e) => return (got, Some(e.kind())),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        b.write_all(b"hi").await.unwrap();
        let (got, err) = reader.await.unwrap();
        assert_eq!(got, b"hi");
        assert_eq!(err, Some(std::io::ErrorKind::TimedOut));
        // 250 ms, then 400 ms idle after the bytes (not 400 ms from the start).
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(650), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        tokio::time::timeout(Duration::from_millis(100), gone.wait())
            .await
            .expect("the end is told");
    }

    #[tokio::test]
    async fn the_peers_close_is_the_end_and_no_timeout_waits_forever() {
        let (a, b) = tokio::io::duplex(64);
        let (mut w, mut gone) = Watched::new(a, None);
        drop(b);
        let mut buf = [0u8; 8];
        assert_eq!(w.read(&mut buf).await.unwrap(), 0);
        gone.wait().await;
        let mut never = Gone::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), never.wait())
                .await
                .is_err()
        );
    }
}
