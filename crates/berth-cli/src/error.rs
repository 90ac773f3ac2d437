//! The CLI's error: what went wrong, printed and mapped to an exit status the way the docker
//! CLI does.

use crate::api::ApiError;
use crate::backend::BackendError;

/// A command failure, reported the way the docker CLI reports it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad usage (exit 125).
    #[error("{0}")]
    Usage(String),
    /// An engine error: `Error response from daemon: …` (exit 1).
    #[error("Error response from daemon: {0}")]
    Daemon(BackendError),
    /// A message printed as is (exit 1).
    #[error("{0}")]
    Message(String),
    /// A message printed as is, with its own exit status.
    #[error("{1}")]
    Status(i32, String),
    /// Errors already printed; exit with this status.
    #[error("")]
    Exit(i32),
}

impl CliError {
    /// The exit status.
    pub fn status(&self) -> i32 {
        match self {
            CliError::Usage(_) => 125,
            CliError::Daemon(_) | CliError::Message(_) => 1,
            CliError::Status(n, _) | CliError::Exit(n) => *n,
        }
    }
}

impl From<BackendError> for CliError {
    fn from(e: BackendError) -> Self {
        CliError::Daemon(e)
    }
}

/// A daemon error as the CLI prints it: `Error response from daemon: …` for an error reply,
/// the failure itself otherwise (the daemon is not running, …).
impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Status { message, .. } => {
                CliError::Message(format!("Error response from daemon: {message}"))
            }
            other => CliError::Message(other.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Message(format!("Error: {e}"))
    }
}

impl From<crate::template::TemplateError> for CliError {
    fn from(e: crate::template::TemplateError) -> Self {
        CliError::Message(format!("Error: {e}"))
    }
}

/// Bad usage, as the docker CLI words a flag's invalid value:
/// `invalid argument "x" for "--flag" flag: why`.
pub fn bad_flag(value: &str, flag: &str, why: impl std::fmt::Display) -> CliError {
    CliError::Usage(format!(
        "invalid argument \"{value}\" for \"{flag}\" flag: {why}"
    ))
}

/// Shorthand for command results.
pub type Result<T = (), E = CliError> = std::result::Result<T, E>;
