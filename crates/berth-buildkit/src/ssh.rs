//! SSH agent forwarding (`RUN --mount=type=ssh`): a unix socket per id on the host, bind-
//! mounted into the step; each connection to it becomes a `ForwardAgent` stream to the
//! client's agent through the session.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::errors::SolveError;
use crate::proto::moby::sshforward::v1::{ssh_client::SshClient, BytesMessage, CheckAgentRequest};
use crate::session::Session;

/// The sockets of a build; forwarding stops when this is dropped.
#[derive(Default)]
pub struct Forwarders {
    pub sockets: BTreeMap<String, PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Forwarders {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a forwarder for each id the client has an agent for (`CheckAgent`); ids it lacks
/// are left out (the step fails if its mount is `required`).
pub async fn forwarders(
    session: &Arc<Session>,
    ids: &BTreeSet<String>,
    dir: &Path,
) -> Result<Forwarders, SolveError> {
    let mut f = Forwarders::default();
    if ids.is_empty() || !session.supports("/moby.sshforward.v1.SSH/ForwardAgent") {
        return Ok(f);
    }
    let sock_dir = dir.join("ssh");
    std::fs::create_dir(&sock_dir).map_err(|e| SolveError::unknown(e.to_string()))?;
    for (n, id) in ids.iter().enumerate() {
        let mut c = SshClient::with_origin(session.channel(), crate::conn::H2Channel::origin());
        if c.check_agent(CheckAgentRequest { id: id.clone() })
            .await
            .is_err()
        {
            continue;
        }
        let path = sock_dir.join(format!("agent-{n}.sock"));
        let listener = UnixListener::bind(&path).map_err(|e| SolveError::unknown(e.to_string()))?;
        // Steps may run as any user: the socket is theirs to connect to, as BuildKit's is.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        let session = session.clone();
        let id2 = id.clone();
        f.tasks.push(tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let session = session.clone();
                let id = id2.clone();
                tokio::spawn(async move {
                    if let Err(e) = forward(&session, &id, conn).await {
                        tracing::debug!("ssh forwarding {id}: {e}");
                    }
                });
            }
        }));
        f.sockets.insert(id.clone(), path);
    }
    Ok(f)
}

async fn forward(
    session: &Session,
    id: &str,
    conn: tokio::net::UnixStream,
) -> Result<(), tonic::Status> {
    let mut c = SshClient::with_origin(session.channel(), crate::conn::H2Channel::origin());
    let (tx, rx) = mpsc::channel::<BytesMessage>(16);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(id) {
        req.metadata_mut().insert("buildkit.ssh.id", v);
    }
    let mut inbound = c.forward_agent(req).await?.into_inner();
    let (mut r, mut w) = conn.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send(BytesMessage {
                            data: buf[..n].to_vec(),
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Some(m) = inbound.message().await? {
        if w.write_all(&m.data).await.is_err() {
            break;
        }
    }
    up.abort();
    Ok(())
}
