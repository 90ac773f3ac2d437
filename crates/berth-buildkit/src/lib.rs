//! BuildKit's API over Berth's builder, for buildx's `docker` driver (and any BuildKit
//! client that dials a Docker daemon): what dockerd serves on `POST /grpc` and
//! `POST /session`.
//!
//! - [`conn`]: HTTP/2 on the hijacked connections (server for `/grpc`, client for `/session`).
//! - [`session`]: the client's sessions and their services; [`filesync`]: fsutil transfers.
//! - [`control`]: `moby.buildkit.v1.Control` (solve, status, workers, info, du, prune) and
//!   `moby.buildkit.v1.frontend.LLBBridge` (the gateway a client-side build function drives).
//! - [`frontend`]: the `dockerfile.v0` frontend on `berth-build`; [`export`]: exporters.
//! - [`progress`]: the `Status` stream; [`errors`]: errors as BuildKit clients render them.
//!
//! The daemon provides the image store, the runtime and registry access through [`Backend`].

pub mod cache;
pub mod cache_io;
pub mod conn;
pub mod content;
pub mod contexts;
pub mod control;
pub mod errors;
pub mod export;
pub mod filesync;
pub mod frontend;
pub mod progress;
pub mod proto;
pub mod rootfs;
pub mod session;
pub mod ssh;

use std::path::PathBuf;
use std::sync::Arc;

use berth_image::image_store::ImageStore;

/// Registry credentials a session's client gave for a host.
#[derive(Clone, Default)]
pub struct RegistryAuth {
    pub host: String,
    pub username: String,
    pub secret: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}, {})", self.host, self.username)
    }
}

/// Why the daemon could not pull or push an image for a build. The text is the underlying
/// error's, so clients see the registry's or the store's message.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The name is not a valid image reference.
    #[error(transparent)]
    Reference(#[from] berth_image::reference::ReferenceError),
    /// The image store refused (e.g. tagging the image to push).
    #[error(transparent)]
    Store(#[from] berth_image::image_store::ImageStoreError),
    /// The session's credentials for `registry` could not be staged for the transfer.
    #[error("staging credentials for {registry}: {source}")]
    Credentials {
        registry: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry transfer failed.
    #[error(transparent)]
    Registry(Box<dyn std::error::Error + Send + Sync>),
}

/// What the daemon provides.
pub trait Backend: Send + Sync + 'static {
    /// The image store builds read and write.
    fn store(&self) -> Arc<ImageStore>;
    /// The runc-compatible runtime for RUN steps.
    fn runtime(&self) -> PathBuf;
    /// The runtime's `--root` for build containers.
    fn runtime_root(&self) -> PathBuf;
    /// The cgroup parent of build containers.
    fn cgroup_parent(&self) -> String;
    /// Pulls `name` into the store for `platform` (`None`: the host's), with `auth` when
    /// the client gave credentials for its registry; a status line for the client.
    fn pull(
        &self,
        name: &str,
        platform: Option<&berth_image::manifest::Platform>,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransferError>;
    /// Pushes the local image `name` to its registry; the pushed manifest's digest.
    fn push(&self, name: &str, auth: Option<&RegistryAuth>) -> Result<String, TransferError>;
    /// Pushes the images `ids` (one per platform, unnamed in the store) as one image index
    /// named `name`; the index's digest.
    fn push_index(
        &self,
        name: &str,
        ids: &[berth_image::Digest],
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransferError>;
    /// Records an image event (`tag`, `pull`, `push`) for `docker events`.
    fn image_event(&self, action: &str, name: &str);
    /// The daemon's networks for RUN steps (the default bridge, user networks by
    /// `force-network-mode`); `None`: RUN steps not on `host` get loopback only.
    fn run_networks(&self) -> Option<&dyn berth_build::builder::RunNetworks>;
    /// The daemon's version (shown as the builder's BuildKit version).
    fn version(&self) -> String;
}

/// The BuildKit service of a daemon: its sessions and solves.
pub struct BuildKit {
    backend: Arc<dyn Backend>,
    sessions: session::Sessions,
    jobs: Arc<control::Jobs>,
    contexts: contexts::Contexts,
}

impl BuildKit {
    pub fn new(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(BuildKit {
            backend,
            sessions: session::Sessions::default(),
            jobs: Arc::new(control::Jobs::default()),
            contexts: contexts::Contexts::default(),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn sessions(&self) -> &session::Sessions {
        &self.sessions
    }

    /// The build contexts kept between builds.
    pub fn contexts(&self) -> &contexts::Contexts {
        &self.contexts
    }

    /// Serves the control and gateway APIs on a connection hijacked from `POST /grpc`.
    pub async fn serve_grpc<IO>(self: Arc<Self>, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let routes = control::routes(self);
        if let Err(e) = conn::serve(io, routes).await {
            tracing::debug!("grpc connection: {e}");
        }
    }

    /// Runs a client session on a connection hijacked from `POST /session`.
    pub async fn serve_session<IO>(self: Arc<Self>, info: session::SessionInfo, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if let Err(e) = self.sessions.serve(info, io).await {
            tracing::info!("session refused: {e}");
        }
    }
}
