//! `berth-runtime`: Berth's OCI runtime, as a library.
//!
//! It turns an OCI bundle (`config.json` + rootfs) into an isolated, limited process with Linux
//! namespaces, cgroups (through `berth-cgroups`), `pivot_root`, capabilities, seccomp and
//! rlimits. The `berth-runtime` binary exposes it with runc's command line.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod capabilities;
pub mod cgroupfs;
pub mod console;
pub mod container;
pub mod defaults;
pub mod hooks;
pub mod init;
pub mod mounts;
pub mod profiles;
pub mod protect;
pub mod rootless;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
pub mod util;
pub mod validate;

pub use container::{CreateOptions, ExecOptions, ProcessIo, Runtime, RuntimeError};
pub use spec::Spec;
