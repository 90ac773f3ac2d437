#![recursion_limit = "256"]
//! `berthd`: Berth's daemon. Serves the Docker Engine API (v1.44) on a unix socket.
//!
//! - [`api`]: routes, thin handlers, errors as `{"message": …}`.
//! - [`engine`]: containers (state on disk, shims, reattach) — extended later by exec, attach,
//!   restart policies and networks.
//! - [`spec`]: the OCI bundle with Docker's defaults; [`logs`]: the json-file reader;
//!   [`shimio`]: async client of a shim's control socket.

pub mod api;
pub mod api_ext;
pub mod archive;
pub mod build;
pub mod buildkit;
pub mod engine;
pub mod events;
pub mod exec;
pub mod health;
pub mod hostconfig;
pub mod images_api;
pub mod listen;
pub mod logs;
pub mod mounts;
pub mod names;
pub mod network;
pub mod ops;
pub mod shimio;
pub mod spec;
pub mod sysinfo;
pub mod util;
pub mod volumes;
