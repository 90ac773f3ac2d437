//! `docker exec`: create, start and inspect.

use serde::{Deserialize, Serialize};

use crate::go::strslice;

/// `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateRequest {
    pub user: String,
    pub privileged: bool,
    pub tty: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u64; 2]>,
    pub attach_stdin: bool,
    pub attach_stderr: bool,
    pub attach_stdout: bool,
    pub detach: bool,
    pub detach_keys: String,
    pub env: Option<Vec<String>>,
    pub working_dir: String,
    #[serde(deserialize_with = "strslice")]
    pub cmd: Option<Vec<String>>,
}

/// `POST /exec/{id}/start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct StartRequest {
    pub detach: bool,
    pub tty: bool,
    /// (height, width) of the terminal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u64; 2]>,
}

/// `ProcessConfig` of exec inspect (lower-case names, as Docker's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProcessConfig {
    pub tty: bool,
    pub entrypoint: String,
    pub arguments: Vec<String>,
    pub privileged: bool,
    pub user: String,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Inspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub process_config: ProcessConfig,
    pub open_stdin: bool,
    pub open_stderr: bool,
    pub open_stdout: bool,
    pub can_remove: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub detach_keys: String,
    pub pid: i64,
}
