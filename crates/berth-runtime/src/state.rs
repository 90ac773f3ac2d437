//! Per-container runtime state under `--root`: `<root>/<id>/state.json` (written atomically)
//! and, while the container is created but not started, `<root>/<id>/exec.fifo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::Spec;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("state of container {id}: {source}")]
    Io { id: String, source: std::io::Error },
    #[error("state of container {id} is corrupt: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub pid: i32,
    /// The init's start time in clock ticks, to tell it from a later process with the same pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub cgroup: Option<berth_cgroups::Cgroup>,
    pub config: Spec,
}

/// The OCI `state` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

pub const OCI_VERSION: &str = "1.2.0";

impl ContainerState {
    pub fn dir(root: &Path, id: &str) -> PathBuf {
        root.join(id)
    }

    pub fn load(root: &Path, id: &str) -> Result<ContainerState, StateError> {
        crate::validate::validate_id(id).map_err(|_| StateError::NotFound(id.to_string()))?;
        let path = Self::dir(root, id).join("state.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    id: id.to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Corrupt {
            id: id.to_string(),
            source,
        })
    }

    /// Replaces `state.json` atomically (a reader never sees a mix), without fsync: the state
    /// describes processes and lives in a tmpfs (`/run`), so it never outlives a reboot and
    /// durability against power loss would only cost milliseconds per container.
    pub fn save(&self, root: &Path) -> Result<(), StateError> {
        let data = serde_json::to_vec(self).map_err(|source| StateError::Corrupt {
            id: self.id.clone(),
            source,
        })?;
        berth_util::fs::replace_file_nosync(&Self::dir(root, &self.id).join("state.json"), &data)
            .map_err(|source| StateError::Io {
                id: self.id.clone(),
                source,
            })
    }

    pub fn fifo_path(root: &Path, id: &str) -> PathBuf {
        Self::dir(root, id).join("exec.fifo")
    }

    pub fn init_alive(&self) -> bool {
        crate::util::pid_alive(self.pid, self.pid_start)
    }

    pub fn status(&self, root: &Path) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if Self::fifo_path(root, &self.id).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    pub fn oci(&self, root: &Path) -> OciState {
        let status = self.status(root);
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: self.owner.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// The state JSON given to hooks on stdin.
    pub fn hook_state(&self, status: Status) -> String {
        let s = serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": self.pid,
            "bundle": self.bundle,
            "annotations": self.annotations,
        });
        s.to_string()
    }
}

/// Every container id under `root` (directories with a state file).
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("state.json").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}
