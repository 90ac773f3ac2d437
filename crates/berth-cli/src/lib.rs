//! `berth`'s command-line interface: commands, Docker-compatible tables and `--format`
//! templates. Kept as a library so that the template engine and formatting helpers can be
//! reused by later commands and tested on their own.
#![forbid(unsafe_code)]

pub mod tabwriter;
pub mod template;
pub mod units;
