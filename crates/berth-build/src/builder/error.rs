//! The builder's errors. A build fails with a [`BuildError`]; an instruction that fails says
//! its line and a [`StepError`] (Docker's wording where Docker has one). Failures of the
//! machinery keep their source and say what was being done, and where.

use std::io;
use std::path::Path;

use berth_image::image_store::ImageStoreError;
use berth_image::snapshot::SnapshotError;
use berth_image::store::StoreError;

use super::state::PlatformError;
use crate::fsops::{FsError, UserError};
use crate::http::HttpError;
use crate::parser::ParseError;
use crate::shell::ExpandError;

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// An instruction failed.
    #[error("Dockerfile line {line}: {source}")]
    Step {
        line: usize,
        #[source]
        source: StepError,
    },
    /// The request cannot be built as asked (target, context, Dockerfile).
    #[error("{0}")]
    Invalid(String),
    /// `--platform` names a platform other than the host's.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The client went away (or another stage failed first).
    #[error("build cancelled")]
    Cancelled,
    /// A file-system operation failed (what was being done, and where).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The image store failed.
    #[error("{op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: ImageStoreError,
    },
    /// The blob store failed (writing or publishing layers).
    #[error("{op}: {source}")]
    Blobs {
        op: &'static str,
        #[source]
        source: StoreError,
    },
    /// The snapshotter failed.
    #[error("{op}: {source}")]
    Snapshot {
        op: &'static str,
        #[source]
        source: SnapshotError,
    },
    /// The builder cannot work here (no overlay snapshotter, …).
    #[error("{0}")]
    Unsupported(&'static str),
    /// An invariant of the builder does not hold (a bug).
    #[error("{0}")]
    Internal(&'static str),
    /// A stage's thread panicked.
    #[error("a build stage panicked")]
    Panicked,
    /// An image config or a bundle's spec could not be encoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BuildError {
    /// The exit code clients should use (a failing RUN's, else 1).
    pub fn code(&self) -> i32 {
        match self {
            BuildError::Step {
                source: StepError::Failed { code, .. },
                ..
            } => *code,
            _ => 1,
        }
    }

    /// An I/O error: what was being done, and on which path.
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> BuildError {
        BuildError::Fs(FsError::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

/// Why an instruction failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A RUN's command exited with a non-zero status (or a signal: 128 + its number).
    #[error("The command '{command}' returned a non-zero code: {code}")]
    Failed { command: String, code: i32 },
    /// The instruction cannot be done as written or as it expands (Docker's wording).
    #[error("{0}")]
    Invalid(String),
    /// `FROM --platform` names a platform other than the host's.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// Variable expansion failed (`${V:?msg}`, bad substitution, unterminated quote).
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// `--chown`, `USER` or a RUN's user names no user or group of the image.
    #[error(transparent)]
    User(#[from] UserError),
    /// A file operation of COPY, ADD or WORKDIR failed.
    #[error(transparent)]
    Files(#[from] FsError),
    /// A file operation failed while doing `op` (`COPY src`, `WORKDIR /dir`).
    #[error("{op}: {source}")]
    Fs {
        op: String,
        #[source]
        source: FsError,
    },
    /// `COPY --from=<value>` names no stage or image it can copy from (dockerd's wrapping).
    #[error("invalid from flag value {value}: {source}")]
    FromFlag {
        value: String,
        #[source]
        source: Box<StepError>,
    },
    /// Pulling an image failed.
    #[error("pulling {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A RUN step's network could not be set up (an unknown network, a netlink failure).
    #[error("setting up network {network} for RUN: {source}")]
    Network {
        network: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `ADD http://…`: the download failed.
    #[error("ADD {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: HttpError,
    },
    /// The build context never arrived (its transfer failed).
    #[error("loading the build context: {0}")]
    Context(#[source] super::ContextUnavailable),
    /// `ADD archive`: extracting it failed.
    #[error("ADD {path}: extracting: {source}")]
    Extract {
        path: String,
        #[source]
        source: berth_image::layer::LayerError,
    },
}

/// A step's error at `line`.
pub(crate) fn at(line: usize, source: impl Into<StepError>) -> BuildError {
    BuildError::Step {
        line,
        source: source.into(),
    }
}

/// A step refused at `line`, in Docker's words.
pub(crate) fn invalid(line: usize, message: impl Into<String>) -> BuildError {
    at(line, StepError::Invalid(message.into()))
}

/// `map_err` for an image store operation.
pub(crate) fn store(op: &'static str) -> impl FnOnce(ImageStoreError) -> BuildError {
    move |source| BuildError::Store { op, source }
}

/// `map_err` for a blob store operation.
pub(crate) fn blobs(op: &'static str) -> impl FnOnce(StoreError) -> BuildError {
    move |source| BuildError::Blobs { op, source }
}

/// `map_err` for a snapshotter operation.
pub(crate) fn snapshot(op: &'static str) -> impl FnOnce(SnapshotError) -> BuildError {
    move |source| BuildError::Snapshot { op, source }
}

pub(crate) type Result<T, E = BuildError> = std::result::Result<T, E>;
