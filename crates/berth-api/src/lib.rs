//! `berth-api`: the Docker Engine API as typed models, shared by `berthd` (which decodes
//! requests and encodes responses) and the `berth` CLI (which does the reverse).
//!
//! - [`decode`]: JSON decoding with dockerd's Go rules (case-insensitive field names, unknown
//!   fields ignored, `null` as absent, wrong types an error naming the field path).
//! - [`version`]: API versions and the response shapes that depend on them.
//! - Models by area: [`container`] (`Config`, `HostConfig` with the resources, create,
//!   inspect, list, wait, update, top, changes, prune), [`exec`], [`image`], [`network`],
//!   [`volume`], [`mount`], [`system`] (version, info, events, disk usage), [`message`] (the
//!   JSON progress and build streams), [`filters`], [`error`] (`{"message": …}`).
//!
//! Shapes follow moby's `api/types`: a Go slice or map that may be nil is an `Option`
//! (`null`), `omitempty` fields are skipped when empty ([`go`]).

pub mod common;
pub mod container;
pub mod decode;
pub mod detach;
pub mod error;
pub mod exec;
pub mod filters;
pub mod go;
pub mod image;
pub mod message;
pub mod mount;
pub mod network;
pub mod stats;
pub mod system;
pub mod version;
pub mod volume;

pub use decode::{from_slice, from_str, from_value, DecodeError};
pub use error::ErrorResponse;
pub use filters::Filters;
pub use version::ApiVersion;
