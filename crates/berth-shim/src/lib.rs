//! `berth-shim`: one small process per container, started by the daemon, that outlives it.
//!
//! It holds the container's stdio (pipes) or pty, writes the `json-file` log ([`jsonlog`]), reaps
//! the container's init and exec processes as child subreaper, records the exit status in
//! `DIR/exit.json`, and serves a line-delimited JSON control socket `DIR/shim.sock`
//! ([`protocol`]; [`client`] is a blocking client for it).
//!
//! Files in the state directory: `shim.sock`, `shim.pid`, `init.pid`, `exit.json`,
//! `ID-json.log` (+ `.1`, `.2` …), `shim.log` (the shim's own diagnostics), `runtime.log`,
//! `console.sock` (tty), `exec-ID.json`/`exec-ID.pid` (while an exec runs).

pub mod client;
pub mod error;
pub mod jsonlog;
pub mod protocol;
pub mod server;
pub mod sys;

pub use protocol::{ExitRecord, Request, State};
pub use server::Config;
