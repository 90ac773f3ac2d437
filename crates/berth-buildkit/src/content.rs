//! The client's content stores, over its session (containerd's content API, which a
//! BuildKit client serves for `--cache-to type=local,dest=DIR` and
//! `--cache-from type=local,src=DIR`: an OCI layout in `DIR`). A request names its store
//! with the `buildkit-attachable-store-id` metadata (`local:DIR`).

use std::path::Path;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::conn::H2Channel;
use crate::proto::containerd::services::content::v1::{
    content_client::ContentClient, ReadContentRequest, ReadContentResponse, WriteAction,
    WriteContentRequest, WriteContentResponse,
};
use crate::session::Session;

const STORE_ID: &str = "buildkit-attachable-store-id";
const WRITE: &str = "/containerd.services.content.v1.Content/Write";
const READ: &str = "/containerd.services.content.v1.Content/Read";
/// Bytes per write message (gRPC's default message limit is 4 MiB).
const CHUNK: usize = 1 << 20;

/// Why a transfer with a client's content store failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("the client serves no content store ({0})")]
    NotServed(&'static str),
    #[error("invalid content store ID {0:?}")]
    BadId(String),
    #[error("{op} {digest}: {status}")]
    Rpc {
        op: &'static str,
        digest: String,
        #[source]
        status: tonic::Status,
    },
    #[error("{op} {digest}: {source}")]
    Io {
        op: &'static str,
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{digest}: the client's store ended the transfer")]
    Closed { digest: String },
}

/// The store's answer to one write message: `false` when it has the blob already.
async fn next(
    replies: &mut tonic::Streaming<WriteContentResponse>,
    digest: &str,
) -> Result<bool, ContentError> {
    match replies.message().await {
        Ok(Some(_)) => Ok(true),
        Ok(None) => Err(ContentError::Closed {
            digest: digest.to_string(),
        }),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
        Err(status) => Err(ContentError::Rpc {
            op: "writing",
            digest: digest.to_string(),
            status,
        }),
    }
}

/// One of the client's content stores.
pub struct ClientStore {
    channel: H2Channel,
    id: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl ClientStore {
    /// The store `id` (`local:DIR`) of `session`, for writing (`write`) or reading.
    pub fn new(session: &Session, id: &str, write: bool) -> Result<Self, ContentError> {
        let method = if write { WRITE } else { READ };
        if !session.supports(method) {
            return Err(ContentError::NotServed(method));
        }
        let id = id
            .parse()
            .map_err(|_| ContentError::BadId(id.to_string()))?;
        Ok(ClientStore {
            channel: session.channel(),
            id,
        })
    }

    fn client(&self) -> ContentClient<H2Channel> {
        ContentClient::with_origin(self.channel.clone(), H2Channel::origin())
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(STORE_ID, self.id.clone());
        r
    }

    /// Writes the file `path` as blob `digest` of `size` bytes (nothing when the store has
    /// it already).
    pub async fn write_file(
        &self,
        digest: &str,
        size: u64,
        path: &Path,
    ) -> Result<(), ContentError> {
        let io = |op| {
            let digest = digest.to_string();
            move |source| ContentError::Io { op, digest, source }
        };
        let rpc = |op| {
            let digest = digest.to_string();
            move |status| ContentError::Rpc { op, digest, status }
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io("opening"))?;
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
        let send = |req: WriteContentRequest| {
            let tx = tx.clone();
            let digest = digest.to_string();
            async move {
                tx.send(req)
                    .await
                    .map_err(|_| ContentError::Closed { digest })
            }
        };
        // The first message names the write and what is expected; the store answers each.
        send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: format!("berth-{digest}"),
            total: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await?;
        let mut replies = match self
            .client()
            .write(self.request(ReceiverStream::new(rx)))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(rpc("writing")(s)),
        };
        if !next(&mut replies, digest).await? {
            return Ok(());
        }
        let mut offset = 0i64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(io("reading"))?;
            if n == 0 {
                break;
            }
            send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset,
                data: buf[..n].to_vec(),
                ..Default::default()
            })
            .await?;
            offset += n as i64;
            if !next(&mut replies, digest).await? {
                return Ok(());
            }
        }
        send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            total: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await?;
        next(&mut replies, digest).await?;
        Ok(())
    }

    /// Reads blob `digest` into the file `dest`; the bytes read.
    pub async fn read_to_file(&self, digest: &str, dest: &Path) -> Result<u64, ContentError> {
        use tokio::io::AsyncWriteExt;
        let io = |op| {
            let digest = digest.to_string();
            move |source| ContentError::Io { op, digest, source }
        };
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(io("creating"))?;
        let mut n = 0u64;
        let mut chunks = self.read_chunks(digest).await?;
        while let Some(data) = chunks.next().await? {
            out.write_all(&data).await.map_err(io("writing"))?;
            n += data.len() as u64;
        }
        out.flush().await.map_err(io("writing"))?;
        Ok(n)
    }

    /// Reads a small blob (a manifest, a config) into memory.
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>, ContentError> {
        let mut out = Vec::new();
        let mut chunks = self.read_chunks(digest).await?;
        while let Some(data) = chunks.next().await? {
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Starts reading blob `digest`.
    async fn read_chunks(&self, digest: &str) -> Result<Chunks, ContentError> {
        let stream = self
            .client()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|status| reading(digest, status))?
            .into_inner();
        Ok(Chunks {
            stream,
            digest: digest.to_string(),
        })
    }
}

/// A blob being read: its chunks, in order.
struct Chunks {
    stream: tonic::Streaming<ReadContentResponse>,
    digest: String,
}

impl Chunks {
    async fn next(&mut self) -> Result<Option<Vec<u8>>, ContentError> {
        let m = self.stream.message().await;
        Ok(m.map_err(|status| reading(&self.digest, status))?
            .map(|m| m.data))
    }
}

fn reading(digest: &str, status: tonic::Status) -> ContentError {
    ContentError::Rpc {
        op: "reading",
        digest: digest.to_string(),
        status,
    }
}
