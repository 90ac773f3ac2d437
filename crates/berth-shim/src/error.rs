//! The shim's errors: what failed, on which file, and why.

use std::io;
use std::path::PathBuf;

use berth_util::runtime::RuntimeError;

/// An error of the shim while it sets up or serves a container. Its text is what the daemon
/// (and through it the user) sees.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A system call that names no file failed (`pipe`, `dup`, `signalfd`, `prctl`…).
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// An operation on a file failed.
    #[error("{op} {}: {source}", path.display())]
    File {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A JSON file (the bundle's `config.json`) does not parse.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The runtime could not run, or failed (its message).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The runtime succeeded but left no pid file.
    #[error("the runtime wrote no {what} pid file {}", path.display())]
    NoPidFile { what: &'static str, path: PathBuf },
    /// The runtime sent no pty master to the console socket.
    #[error("the runtime sent no pty master: {0}")]
    NoPtyMaster(#[source] io::Error),
    /// Not a container id the shim accepts.
    #[error("invalid container id {0:?}")]
    InvalidId(String),
    /// Another live shim serves this socket.
    #[error("a shim is already serving {}", .0.display())]
    AlreadyServing(PathBuf),
    /// `--tty` disagrees with the bundle's `process.terminal`.
    #[error(
        "process.terminal is {terminal} in {} but the shim was started {} --tty",
        path.display(),
        if *terminal { "without" } else { "with" }
    )]
    TerminalMismatch { path: PathBuf, terminal: bool },
    /// A request that the container's state forbids (`exec` in a stopped container…).
    #[error("cannot {op} a container that is {status}")]
    State {
        op: &'static str,
        status: &'static str,
    },
    /// Writing the exec fifo to start the container failed.
    #[error("start container {id}: {source}")]
    Start {
        id: String,
        #[source]
        source: io::Error,
    },
    /// A malformed exec request.
    #[error(transparent)]
    BadExec(#[from] BadExec),
}

/// What is wrong with an exec request.
#[derive(Debug, thiserror::Error)]
pub enum BadExec {
    #[error("invalid exec id {0:?}")]
    InvalidId(String),
    #[error("exec id {0} is already used")]
    IdInUse(String),
    #[error("process must be an object")]
    ProcessNotObject,
    #[error("args is empty")]
    EmptyArgs,
    #[error("exec needs process or args")]
    NoProcess,
}

/// `map_err` helper for a failed system call.
pub(crate) fn sys(op: &'static str) -> impl FnOnce(io::Error) -> ShimError {
    move |source| ShimError::Sys { op, source }
}

/// `map_err` helper for a failed operation on a file.
pub(crate) fn file(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ShimError {
    let path = path.into();
    move |source| ShimError::File { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            ShimError::TerminalMismatch {
                path: "/b/config.json".into(),
                terminal: true
            }
            .to_string(),
            "process.terminal is true in /b/config.json but the shim was started without --tty"
        );
        assert_eq!(
            ShimError::State {
                op: "exec in",
                status: "stopped"
            }
            .to_string(),
            "cannot exec in a container that is stopped"
        );
        let e = file("read", "/b/config.json")(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(e.to_string().starts_with("read /b/config.json: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            ShimError::from(BadExec::IdInUse("x".into())).to_string(),
            "exec id x is already used"
        );
    }
}
