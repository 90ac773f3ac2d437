//! `berth-registry`: Berth's client for the OCI distribution API (Docker registries).
//!
//! - [`Client`]: pings, `login` / `logout`, [`Client::pull`] and [`Client::push`].
//!   Authentication: anonymous, basic, and the bearer token flow (`WWW-Authenticate: Bearer
//!   realm=…,service=…,scope=…`), tokens cached per scope. `http://` only for loopback
//!   registries and those listed as insecure. Mirrors are tried first for pulls.
//! - [`credentials`]: Docker's `config.json` `auths` (base64 `user:password`).
//! - [`pull`]: parallel, resumable layer downloads unpacked in the same pass (see its docs).
//! - [`push`]: blobs skipped when present, cross-repository mounts, monolithic or chunked
//!   uploads, the manifest last.
//! - [`tags`]: tag listing with pagination (`pull --all-tags`).
//! - [`progress`]: per-layer events like `docker pull`'s, and a plain-line printer.
//!
//! The API is **blocking**: the client drives its own small tokio runtime (reqwest + rustls)
//! internally. From async code call it inside `tokio::task::spawn_blocking`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod credentials;
pub mod distribution;
pub mod error;
pub mod images;
pub mod progress;
pub mod pull;
pub mod push;
pub mod tags;

pub use client::{Client, RegistryConfig};
pub use credentials::{CredentialStore, Credentials};
pub use error::{RegistryError, Result};
pub use progress::{
    ImageEvent, LayerEvent, NoProgress, PlainProgress, Progress, RecordingProgress,
};
pub use pull::PulledImage;
pub use push::{PushOptions, PushedManifest};
