//! What the CRI records about sandboxes and containers beyond the engine's records:
//! `<data-root>/cri/sandboxes/<id>.json` and `<data-root>/cri/containers/<id>.json`, written
//! atomically (a crash leaves the old or the new record, never a torn one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_cri::cni::PortMapping;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The kubelet's names of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodMeta {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

/// A pod sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub meta: PodMeta,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    #[serde(default)]
    pub log_directory: String,
    #[serde(default)]
    pub runtime_handler: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub cgroup_parent: String,
    /// The namespace modes (the CRI's `NamespaceMode` values).
    #[serde(default)]
    pub network_mode: i32,
    #[serde(default)]
    pub pid_mode: i32,
    #[serde(default)]
    pub ipc_mode: i32,
    /// DNS for the pod's containers.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    #[serde(default)]
    pub dns_searches: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The host tmpfs bound as the pod's `/dev/shm` (empty with host IPC).
    #[serde(default)]
    pub shm: String,
    /// `StopPodSandbox` was called (the sandbox is NOTREADY even if its process runs).
    #[serde(default)]
    pub stopped: bool,
    /// The CNI network is attached: its `ADD` result (torn down by `DEL` when stopping).
    #[serde(default)]
    pub network: Option<Network>,
    /// The pod's addresses (IPv4 first), kept after the network is torn down.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The CNI attachment of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// The network's name (the configuration's `name`).
    pub name: String,
    /// The namespace it was attached in.
    pub netns: String,
    /// The `ADD` result (the `prevResult` of `DEL`).
    #[serde(default)]
    pub result: serde_json::Value,
}

/// A container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The image as the request named it.
    pub image: String,
    /// The image's id (`sha256:…`).
    pub image_id: String,
    pub created_at: i64,
    /// The log file (the sandbox's log directory joined with the container's `log_path`;
    /// empty for none).
    #[serde(default)]
    pub log_path: String,
    #[serde(default)]
    pub mounts: Vec<MountRecord>,
}

/// A mount of a container, for its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
}

/// Where the records are.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("CRI record {}: {source}", path.display())]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        tonic::Status::internal(e.to_string())
    }
}

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    fn dir(&self, kind: &str) -> PathBuf {
        self.root.join(kind)
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.dir(kind).join(format!("{id}.json"))
    }

    fn save<T: Serialize>(&self, kind: &str, id: &str, v: &T) -> Result<(), StoreError> {
        self.write(kind, id, v, true)
    }

    /// Atomic; durable (synced) or only outliving the process.
    fn write<T: Serialize>(
        &self,
        kind: &str,
        id: &str,
        v: &T,
        durable: bool,
    ) -> Result<(), StoreError> {
        let path = self.path(kind, id);
        let err = |source| StoreError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(self.dir(kind)).map_err(err)?;
        let bytes = serde_json::to_vec_pretty(v).map_err(|e| err(e.into()))?;
        if durable {
            berth_util::fs::atomic_write(&path, &bytes).map_err(err)
        } else {
            berth_util::fs::replace_file_nosync(&path, &bytes).map_err(err)
        }
    }

    fn load<T: DeserializeOwned>(&self, kind: &str, id: &str) -> Result<Option<T>, StoreError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Ok(None);
        }
        read(&self.path(kind, id))
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        let Ok(rd) = std::fs::read_dir(self.dir(kind)) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| match read(&e.path()) {
                Ok(v) => v,
                Err(err) => {
                    tracing::warn!("{err}");
                    None
                }
            })
            .collect()
    }

    fn delete(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let path = self.path(kind, id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError { path, source: e })
            }
            _ => Ok(()),
        }
    }

    pub fn save_sandbox(&self, s: &SandboxRecord) -> Result<(), StoreError> {
        self.save("sandboxes", &s.id, s)
    }
    /// The record of a sandbox once set up (its network attached): atomic, not synced. The
    /// record written before the setup ([`Self::save_sandbox`]) is: after a power loss that
    /// took this one, the daemon's start finds the sandbox's setup cut short and deletes its
    /// network with what that record holds (its port mappings: the portmap plugin's `DEL`
    /// needs them); a kill -9 finds this one.
    pub fn save_sandbox_ready(&self, s: &SandboxRecord) -> Result<(), StoreError> {
        self.write("sandboxes", &s.id, s, false)
    }
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        self.load("sandboxes", id)
    }
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        self.all("sandboxes")
    }
    pub fn delete_sandbox(&self, id: &str) -> Result<(), StoreError> {
        self.delete("sandboxes", id)
    }
    /// A container's record (written once, at create): atomic, not synced. A kill -9 finds
    /// it; after a power loss that took it, its engine container (volatile too, when the
    /// power loss left it) has no record and is removed at the daemon's start, as one whose
    /// create was cut short (the kubelet creates the container again).
    pub fn save_container(&self, c: &ContainerRecord) -> Result<(), StoreError> {
        self.write("containers", &c.id, c, false)
    }
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        self.load("containers", id)
    }
    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.all("containers")
    }
    pub fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.delete("containers", id)
    }
}

fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let err = |source| StoreError {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err(e.into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path().join("cri"));
        assert!(s.sandboxes().is_empty());
        let rec = SandboxRecord {
            id: "abc".into(),
            meta: PodMeta {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 1,
            },
            ips: vec!["10.0.0.2".into()],
            ..Default::default()
        };
        s.save_sandbox(&rec).unwrap();
        assert_eq!(s.sandbox("abc").unwrap(), Some(rec.clone()));
        assert_eq!(s.sandboxes(), vec![rec]);
        assert_eq!(s.sandbox("../x").unwrap(), None);
        s.delete_sandbox("abc").unwrap();
        s.delete_sandbox("abc").unwrap();
        assert_eq!(s.sandbox("abc").unwrap(), None);
    }
}
