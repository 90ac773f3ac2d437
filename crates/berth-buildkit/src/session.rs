//! Client sessions: the connection a BuildKit client opens with `POST /session` and on which
//! it serves its own gRPC services (file sync, auth, secrets, ssh, uploads). Solves name the
//! session they use by its ID; the daemon calls the client's services through it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

use crate::conn::H2Channel;

const H_ID: &str = "x-docker-expose-session-uuid";
const H_NAME: &str = "x-docker-expose-session-name";
const H_KEY: &str = "x-docker-expose-session-sharedkey";
const H_METHOD: &str = "x-docker-expose-session-grpc-method";

/// A session's identity and the methods its client serves, from the `/session` request's
/// headers.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    pub id: String,
    pub name: String,
    pub shared_key: String,
    pub methods: HashSet<String>,
}

/// Why a `/session` request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session ID header {H_ID} missing")]
    NoId,
    #[error("session {0} already exists")]
    Duplicate(String),
}

impl SessionInfo {
    /// Reads the `X-Docker-Expose-Session-*` headers.
    pub fn from_headers(h: &http::HeaderMap) -> Result<Self, SessionError> {
        let one = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let id = one(H_ID);
        if id.is_empty() {
            return Err(SessionError::NoId);
        }
        let methods = h
            .get_all(H_METHOD)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        Ok(SessionInfo {
            id,
            name: one(H_NAME),
            shared_key: one(H_KEY),
            methods,
        })
    }
}

/// A connected session.
#[derive(Debug)]
pub struct Session {
    pub info: SessionInfo,
    channel: H2Channel,
    closed: watch::Receiver<bool>,
}

impl Session {
    /// A gRPC channel to the client's services.
    pub fn channel(&self) -> H2Channel {
        self.channel.clone()
    }

    /// Whether the client serves `method` (`/package.Service/Method`, case-insensitive as
    /// BuildKit compares them).
    pub fn supports(&self, method: &str) -> bool {
        self.info
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the session's connection is gone.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// The sessions connected to this daemon.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    changed: Notify,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a session on the hijacked connection `io` until it ends.
    pub async fn serve<IO>(&self, info: SessionInfo, io: IO) -> Result<(), SessionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if self.lock().contains_key(&info.id) {
            return Err(SessionError::Duplicate(info.id));
        }
        let (channel, ended) = match H2Channel::connect(io).await {
            Ok(x) => x,
            Err(e) => {
                tracing::info!("session {}: HTTP/2 handshake failed: {e}", info.id);
                return Ok(());
            }
        };
        let (tx, rx) = watch::channel(false);
        let id = info.id.clone();
        tracing::debug!("session {id} ({}) connected: {:?}", info.name, info.methods);
        let s = Arc::new(Session {
            info,
            channel,
            closed: rx,
        });
        self.lock().insert(id.clone(), s);
        self.changed.notify_waiters();
        let _ = ended.await;
        let _ = tx.send(true);
        self.lock().remove(&id);
        tracing::debug!("session {id} ended");
        Ok(())
    }

    /// The session `id`, waiting up to `wait` for it to connect (clients start the session
    /// and the solve that uses it at the same time).
    pub async fn get(&self, id: &str, wait: Duration) -> Option<Arc<Session>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            if let Some(s) = self.lock().get(id) {
                return Some(s.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}
