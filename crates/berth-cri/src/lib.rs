//! The Kubernetes Container Runtime Interface for Berth.
//!
//! - [`proto`]: `runtime.v1` (Berth's own schema, `proto/runtime/v1/api.proto`, written from
//!   the published k8s.io/cri-api): prost messages, tonic servers and clients of
//!   `RuntimeService` and `ImageService`.
//! - [`cni`]: the pod network through the standard CNI plugins.
//!
//! berthd implements the services on its engine (`berthd::cri`).

pub mod cni;
pub mod proto;

/// The CRI version Berth serves (`VersionResponse.runtime_api_version`).
pub const RUNTIME_API_VERSION: &str = "v1";
