//! `berth-api`: the Docker Engine API as typed models, shared by `berthd` (which decodes
//! requests and encodes responses) and the `berth` CLI (which does the reverse).
//!
//! - [`decode`]: JSON decoding with dockerd's Go rules (case-insensitive field names, unknown
//!   fields ignored, `null` as absent, wrong types an error naming the field path).
//! - [`version`]: API versions and the response shapes that depend on them.
//! - [`error`]: the error body `{"message": …}`.

pub mod decode;
pub mod error;
pub mod version;

pub use decode::{from_slice, from_str, from_value, DecodeError};
pub use error::ErrorResponse;
pub use version::ApiVersion;
