//! `berth-image`: Berth's image layer.
//!
//! - [`reference`]: Docker image references, parsed and normalised exactly like
//!   docker/distribution (`busybox` = `docker.io/library/busybox:latest`).
//! - [`digest`]: content digests (sha256) and streaming verification.
//! - [`store`]: a verified, content-addressable blob store.
//! - [`fsutil`]: crash-safe file writes.
//! - [`manifest`]: OCI / Docker schema 2 manifests, indexes, image configs, platforms, chain IDs.
//! - [`layer`]: confined application of layer tarballs (whiteouts, overlay or flat mode).
//! - [`snapshot`]: layer snapshots (overlayfs, or a copying fallback) and container rootfs.
#![forbid(unsafe_code)]

pub mod digest;
pub mod fsutil;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod snapshot;
pub mod store;

pub use digest::Digest;
pub use reference::Reference;
