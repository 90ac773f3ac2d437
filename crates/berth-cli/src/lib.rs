//! `berth`'s command-line interface: commands, Docker-compatible tables and `--format`
//! templates. Kept as a library so that the template engine and formatting helpers can be
//! reused by later commands and tested on their own.
//!
//! - [`cli`]: argument parsing (Docker's names and flags) and dispatch; [`cli::run`].
//! - [`backend`]: what the commands ask of the engine ([`backend::ImageBackend`]); today the
//!   daemonless [`backend::LocalBackend`], later an Engine API client.
//! - [`commands`]: the commands and their Docker output.
//! - [`template`]: a Go `text/template` subset for `--format`.
//! - [`format`], [`tabwriter`], [`units`]: Docker's tables, human sizes and durations.
#![forbid(unsafe_code)]

pub mod api;
pub mod apibackend;
pub use berth_registry::images as backend;
pub mod build;
pub mod cli;
pub mod commands;
pub mod containers;
pub mod ctl;
pub mod endpoint;
pub mod format;
pub mod network;
pub mod registry_server;
pub mod storage;
pub mod tabwriter;
pub mod template;
pub mod units;
