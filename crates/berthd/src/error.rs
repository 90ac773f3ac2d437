//! The engine's errors: what went wrong, with its source and (for files) the operation and the
//! path; [`EngineError::status`] gives the HTTP status dockerd uses for it.

use std::path::PathBuf;

use axum::http::StatusCode;
use berth_image::fsutil::PathIoError;

use crate::hostconfig::HostConfigError;
use crate::volumes::VolumeError;

/// Errors of container, network and exec operations.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("No such image: {0}")]
    ImageNotFound(String),
    #[error("No such exec instance: {0}")]
    ExecNotFound(String),
    /// A 404 whose message is complete (`network x not found`).
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// A registry refused the credentials.
    #[error("{0}")]
    Unauthorized(String),
    #[error("not modified")]
    NotModified,
    /// A file system operation on a path failed.
    #[error(transparent)]
    Io(PathIoError),
    /// An operation without a path failed (a process, a socket, a shim call).
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: berth_network::netlink::NetlinkError,
    },
    #[error("{what}: {source}")]
    Firewall {
        what: String,
        #[source]
        source: berth_network::firewall::FirewallError,
    },
    #[error(transparent)]
    Image(#[from] berth_image::image_store::ImageStoreError),
    #[error(transparent)]
    Snapshot(#[from] berth_image::snapshot::SnapshotError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Ipam(#[from] berth_network::ipam::IpamError),
    /// The runtime refused an operation (its message) or could not run.
    #[error(transparent)]
    Runtime(#[from] berth_util::runtime::RuntimeError),
    #[error(transparent)]
    HostConfig(#[from] HostConfigError),
    /// The container's user or group is not in its passwd/group files.
    #[error(transparent)]
    User(#[from] berth_build::fsops::UserError),
    #[error("{what}: {source}")]
    Cgroup {
        what: String,
        #[source]
        source: berth_cgroups::CgroupError,
    },
    /// A document could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Build(#[from] berth_build::BuildError),
    /// A blocking task of the engine panicked or was cancelled.
    #[error("background task: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A condition the engine could not recover from (a message for the client).
    #[error("{0}")]
    Internal(String),
}

impl EngineError {
    /// The HTTP status code dockerd uses.
    pub fn status(&self) -> StatusCode {
        match self {
            EngineError::NotFound(_)
            | EngineError::ImageNotFound(_)
            | EngineError::ExecNotFound(_)
            | EngineError::Missing(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::HostConfig(
                HostConfigError::PeerNotRunning { .. } | HostConfigError::StorageOpt(_),
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::BadRequest(_) | EngineError::HostConfig(_) | EngineError::User(_) => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EngineError::NotModified => StatusCode::NOT_MODIFIED,
            EngineError::Volume(e) => e.status(),
            EngineError::Ipam(
                berth_network::ipam::IpamError::InUse(_)
                | berth_network::ipam::IpamError::InUse6(_),
            ) => StatusCode::CONFLICT,
            EngineError::Ipam(_) => StatusCode::BAD_REQUEST,
            EngineError::Runtime(berth_util::runtime::RuntimeError::Failed { .. }) => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::Image(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            EngineError::Io(_)
            | EngineError::Sys { .. }
            | EngineError::Netlink { .. }
            | EngineError::Firewall { .. }
            | EngineError::Image(_)
            | EngineError::Snapshot(_)
            | EngineError::Cgroup { .. }
            | EngineError::Join(_)
            | EngineError::Encode { .. }
            | EngineError::Build(_)
            | EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The same error (its status kept) with its message after `prefix: `, as Go's
    /// `fmt.Errorf("prefix: %w", err)`.
    pub fn prefixed(self, prefix: &str) -> Self {
        let msg = format!("{prefix}: {self}");
        match self {
            EngineError::NotFound(_)
            | EngineError::ImageNotFound(_)
            | EngineError::ExecNotFound(_)
            | EngineError::Missing(_) => EngineError::Missing(msg),
            EngineError::Conflict(_) => EngineError::Conflict(msg),
            EngineError::Forbidden(_) => EngineError::Forbidden(msg),
            EngineError::Unauthorized(_) => EngineError::Unauthorized(msg),
            e if e.status() == StatusCode::BAD_REQUEST => EngineError::BadRequest(msg),
            _ => EngineError::Internal(msg),
        }
    }

    /// A 400 with Docker's message.
    pub fn bad(message: impl Into<String>) -> Self {
        EngineError::BadRequest(message.into())
    }

    /// A missing container named in a request's settings (`VolumesFrom`, `container:<x>`
    /// modes): a 400 with the 404's message, as dockerd's `errdefs.InvalidParameter`.
    pub fn not_found_is_invalid(self) -> Self {
        match self {
            EngineError::NotFound(_) => EngineError::BadRequest(self.to_string()),
            e => e,
        }
    }

    /// An I/O error of `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| EngineError::Io(PathIoError { op, path, source })
    }

    /// An error of an operation without a path (`what` names it).
    pub fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| EngineError::Sys { what, source }
    }

    /// A JSON encoding error of `what`.
    pub fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| EngineError::Encode { what, source }
    }

    /// A netlink error while doing `what`.
    pub fn netlink(
        what: impl Into<String>,
    ) -> impl FnOnce(berth_network::netlink::NetlinkError) -> Self {
        let what = what.into();
        move |source| EngineError::Netlink { what, source }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
