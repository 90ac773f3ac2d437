//! The registry client's error type.

use std::path::PathBuf;

use berth_image::digest::DigestError;
use berth_image::fsutil::PathIoError;
use berth_image::manifest::ManifestError;
use berth_image::snapshot::SnapshotError;
use berth_image::store::StoreError;
use berth_image::Digest;

/// Everything that can go wrong talking to a registry, pulling or pushing.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached at all (DNS, connection refused, TLS, timeout).
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable {
        /// The registry host (`host[:port]`).
        registry: String,
        /// Why.
        reason: String,
    },
    /// 401: no or wrong credentials.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's message (`authentication required` for distribution).
        message: String,
    },
    /// 403: the credentials are valid but not allowed to do this.
    #[error("denied: {message}")]
    Denied {
        /// The registry host.
        registry: String,
        /// The registry's message.
        message: String,
    },
    /// The tag or digest does not exist in the repository.
    #[error("manifest for {reference} not found: manifest unknown: {message}")]
    ManifestUnknown {
        /// The reference as asked for.
        reference: String,
        /// The registry's message.
        message: String,
    },
    /// The repository does not exist (or is not visible).
    #[error("repository {repository} not found: name unknown: {message}")]
    NameUnknown {
        /// `domain/path`.
        repository: String,
        /// The registry's message.
        message: String,
    },
    /// A manifest references a blob the registry does not have.
    #[error("blob {digest} not found in repository {repository}")]
    BlobUnknown {
        /// `domain/path`.
        repository: String,
        /// The missing blob.
        digest: Digest,
    },
    /// Content does not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (`layer sha256:…`, `manifest`, `config`).
        what: String,
        /// The digest that names the content.
        expected: Digest,
        /// The digest of what was received.
        actual: Digest,
    },
    /// A blob ended before the size its descriptor declares.
    #[error("truncated blob {digest}: got {got} of {expected} bytes")]
    Truncated {
        /// The blob.
        digest: Digest,
        /// Bytes received.
        got: u64,
        /// Bytes declared.
        expected: u64,
    },
    /// A blob is longer than its descriptor declares.
    #[error("blob {digest} is larger than the {expected} bytes its descriptor declares")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Bytes declared.
        expected: u64,
    },
    /// A layer unpacked to a different DiffID than the image config lists.
    #[error(
        "layer {layer}: DiffID mismatch: the config says {expected}, the layer unpacks to {actual}"
    )]
    DiffIdMismatch {
        /// The layer's (compressed) digest.
        layer: Digest,
        /// From the image config.
        expected: Digest,
        /// Computed while unpacking.
        actual: Digest,
    },
    /// A manifest is larger than Berth accepts.
    #[error("manifest {reference} is larger than {limit} bytes")]
    ManifestTooLarge {
        /// The reference.
        reference: String,
        /// The limit.
        limit: u64,
    },
    /// Any other error response from the registry.
    #[error("{registry}: {method} {url}: {status}: {message}")]
    Api {
        /// The registry host.
        registry: String,
        /// HTTP method.
        method: String,
        /// Request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// `code: message` from the error body, or the body / reason phrase.
        message: String,
    },
    /// The registry answered something that breaks the protocol.
    #[error("{registry}: protocol error: {message}")]
    Protocol {
        /// The registry host.
        registry: String,
        /// What was wrong.
        message: String,
    },
    /// An HTTP transport error after the connection was established.
    #[error("{registry}: {context}: {source}")]
    Http {
        /// The registry host.
        registry: String,
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: reqwest::Error,
    },
    /// A plain-HTTP endpoint for a registry that is neither local nor listed as insecure.
    #[error("refusing plain http for {0}: only localhost and registries listed as insecure may use http")]
    InsecureRefused(String),
    /// Reading or writing the credentials file failed.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reference or digest parse errors.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// Manifest / config errors (schema 1, bad media types, no matching platform…).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Blob store errors.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Snapshotter errors.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Local I/O.
    #[error(transparent)]
    Io(PathIoError),
    /// An invalid argument or configuration.
    #[error("{0}")]
    Invalid(String),
    /// Stopped because another part of the same operation failed.
    #[error("cancelled because another layer failed")]
    Cancelled,
}

impl RegistryError {
    /// Whether retrying the same request (e.g. with `Range`) might help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { .. } | Self::Unreachable { .. } => true,
            Self::Api { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io(PathIoError { op, path, source })
    }
}

/// Result alias.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
