//! Images: list, inspect, history, delete and prune reports, registry authentication.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::common::GraphDriver;

/// Docker's `ImageSummary` (an entry of `GET /images/json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ImageSummary {
    /// Image ID (`sha256:…`).
    pub id: String,
    /// Parent image ID or "".
    pub parent_id: String,
    /// Familiar tags; empty for an untagged image (`["<none>:<none>"]` below API 1.43).
    pub repo_tags: Vec<String>,
    /// Familiar digest references.
    pub repo_digests: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Size in bytes.
    pub size: i64,
    /// Size shared with other images (-1 when not computed).
    pub shared_size: i64,
    /// Labels from the config.
    pub labels: BTreeMap<String, String>,
    /// Containers using it (-1 below API 1.51, see
    /// [`crate::ApiVersion::image_list_counts_containers`]).
    pub containers: i64,
}

/// An entry of `GET /images/{name}/history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image ID for the top entry, `<missing>` otherwise.
    pub id: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The command that created the step.
    pub created_by: String,
    /// Tags (top entry only).
    pub tags: Vec<String>,
    /// The layer's size (0 for empty layers).
    pub size: i64,
    pub comment: String,
}

/// The container defaults of an image as `image inspect` shows them (`Config`), field order
/// as Docker's; the image config's own values pass through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectConfig {
    /// The container-only fields (always empty), below API 1.50 only (see
    /// [`crate::ApiVersion::has_pre_1_50_legacy_fields`]).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub container_fields: Option<InspectContainerFields>,
    /// `user[:group]`.
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    /// Windows-only flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    /// ONBUILD triggers.
    pub on_build: Option<serde_json::Value>,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<serde_json::Value>,
}

/// The fields of a container's config that image inspect's `Config` carried below API 1.50
/// (never part of an image's config: always empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectContainerFields {
    pub hostname: String,
    pub domainname: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub image: String,
}

/// `RootFS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectRootFs {
    /// `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// DiffIDs.
    pub layers: Vec<String>,
}

/// `Metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectMetadata {
    /// When a tag last changed.
    pub last_tag_time: String,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectImage {
    /// `sha256:…`.
    #[serde(rename = "Id")]
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Parent image ID or "".
    pub parent: String,
    pub comment: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The config of the container that built the image; API versions below 1.45 only
    /// (see [`crate::ApiVersion::adapt_image_inspect`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_config: Option<crate::container::Config>,
    pub docker_version: String,
    pub author: String,
    pub config: InspectConfig,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    pub size: i64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: InspectRootFs,
    pub metadata: InspectMetadata,
}

/// One line of a deletion report (`ImageDeleteResponseItem`): `{"Untagged": …}` or
/// `{"Deleted": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteItem {
    /// A reference was removed (familiar string).
    Untagged(String),
    /// An image or layer was deleted (`sha256:…`).
    Deleted(String),
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PruneReport {
    pub images_deleted: Option<Vec<DeleteItem>>,
    pub space_reclaimed: u64,
}

/// Registry credentials (`POST /auth`, and base64 JSON in `X-Registry-Auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub email: String,
    pub serveraddress: String,
    pub identitytoken: String,
    pub registrytoken: String,
}

/// The answer to `POST /auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AuthResponse {
    pub status: String,
    pub identity_token: String,
}

/// `aux` of a push's last message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PushResult {
    pub tag: String,
    pub digest: String,
    pub size: u64,
}

/// `aux` of a build's last message: the built image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildResult {
    #[serde(rename = "ID")]
    pub id: String,
}
