//! Errors: the distribution spec's JSON error bodies, and the library's own error type.

use std::path::PathBuf;

use berth_image::fsutil::PathIoError;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The spec's error codes (and a few of distribution's that clients know).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    TagInvalid,
    PaginationNumberInvalid,
    Unknown,
}

impl Code {
    /// The code's name in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid | Code::RangeInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::TagInvalid => "TAG_INVALID",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// The HTTP status the spec (or distribution, where the spec is silent) gives the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            // As distribution: a manifest naming missing blobs is a bad request.
            Code::ManifestBlobUnknown
            | Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::TagInvalid
            | Code::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An API error: a code, a message, an optional detail, a status and extra headers.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }
    pub fn status(mut self, s: StatusCode) -> Self {
        self.status = s;
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = Some(d);
        self
    }
    pub fn header(mut self, k: &'static str, v: String) -> Self {
        self.headers.push((k, v));
        self
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(Code::Unknown, format!("internal error: {e}"))
    }
    pub fn name_invalid(name: &str) -> Self {
        Self::new(Code::NameInvalid, "invalid repository name")
            .detail(serde_json::json!({ "name": name }))
    }
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            Code::SizeInvalid,
            format!("body exceeds the limit of {limit} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        if let Some(d) = self.detail {
            err["detail"] = d;
        }
        let body = serde_json::to_vec(&serde_json::json!({ "errors": [err] }))
            .unwrap_or_else(|_| b"{}".to_vec());
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        r
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(PathIoError),
    #[error("corrupt metadata {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Errors of configuration and serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A configuration that parses but does not make sense (the message says why).
    #[error("config {path}: {msg}")]
    ConfigInvalid { path: PathBuf, msg: String },
    #[error("audit log {path}: {source}")]
    AuditLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token key {path}: {source}")]
    TokenKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token key {path}: shorter than 32 bytes")]
    TokenKeyShort { path: PathBuf },
    #[error("random bytes: {0}")]
    Random(#[source] std::io::Error),
    #[error("TLS {path}: {source}")]
    TlsPem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS {path}: no certificate")]
    TlsNoCertificate { path: PathBuf },
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
