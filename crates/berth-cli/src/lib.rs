//! `berth`'s command-line interface: commands, Docker-compatible tables and `--format`
//! templates. Kept as a library so that the template engine and formatting helpers can be
//! reused by later commands and tested on their own.
//!
//! - [`cli`]: argument parsing (Docker's names and flags, `container …` and `image …`
//!   included) and dispatch; [`cli::run`].
//! - [`api`]: the Engine API client (typed `berth_api` models both ways) over a unix socket
//!   or TCP with TLS; [`endpoint`]: which daemon (`-H`, `BERTH_HOST`/`DOCKER_HOST`, TLS files).
//! - [`backend`]: what the image commands ask of the engine ([`backend::ImageBackend`]): the
//!   daemon ([`apibackend`]) or, with `--data-root`, a data root directly.
//! - Commands: [`commands`] (images), [`containers`] (`run`, `create`, `ps`, `logs`, `stop`,
//!   `rm`, `wait`), [`ctl`] (other container commands), [`system`] (`version`, `info`,
//!   `events`, `stats`, `df`, prunes), [`network`], [`storage`] (volumes), [`cp`], [`build`],
//!   [`registry_server`].
//! - Flags that make the create request: [`opts`] (resources, security, health …),
//!   [`storage::StorageFlags`], [`network::NetworkFlags`].
//! - [`terminal`]: raw terminals, detach keys, attached sessions, signal forwarding.
//! - [`template`]: Go's `text/template` for `--format`; [`format`], [`tabwriter`], [`units`]:
//!   Docker's tables, human sizes and durations; [`filters`]: `--filter` flags.
//! - [`error`]: [`error::CliError`] and Docker's exit statuses.
#![forbid(unsafe_code)]

pub mod api;
pub mod apibackend;
pub use berth_registry::images as backend;
pub mod build;
pub mod cli;
pub mod commands;
pub mod containers;
pub mod cp;
pub mod ctl;
pub mod endpoint;
pub mod error;
pub mod filters;
pub mod format;
pub mod network;
pub mod opts;
pub mod registry_server;
pub mod storage;
pub mod system;
pub mod tabwriter;
pub mod template;
pub mod terminal;
pub mod units;

/// Test helper: `args` (after the program name) parsed as one command's flags.
#[cfg(test)]
pub(crate) fn try_parse_args<T: clap::Args>(args: &[&str]) -> Result<T, clap::Error> {
    let cmd = T::augment_args(clap::Command::new("t"));
    let m = cmd.try_get_matches_from(std::iter::once("t").chain(args.iter().copied()))?;
    T::from_arg_matches(&m)
}

/// [`try_parse_args`], asserting success.
#[cfg(test)]
pub(crate) fn parse_args<T: clap::Args>(args: &[&str]) -> T {
    try_parse_args(args).unwrap()
}

/// Test helper: `f(input)` is `want` for each case (the failing input in the message).
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_cases<T: Copy + std::fmt::Debug>(
    f: impl Fn(T) -> String,
    cases: &[(T, &str)],
) {
    for &(input, want) in cases {
        assert_eq!(f(input), want, "{input:?}");
    }
}
