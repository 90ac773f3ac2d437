//! Small pieces shared by Berth's crates; it depends on `libc` alone, so that the static
//! shim can link it without growing.
//!
//! - [`time`]: RFC 3339 parsing and formatting (Go's `RFC3339Nano`, runc's nine digits).
//! - [`fs`]: replacing a file's content atomically (without fsync, for run-time state).
//! - [`signal`]: resetting every signal disposition before `execve`.

pub mod fs;
pub mod signal;
pub mod time;
