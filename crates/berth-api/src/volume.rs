//! Volumes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `UsageData` (`system df`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UsageData {
    /// Bytes used, -1 when not computed.
    pub size: i64,
    pub ref_count: i64,
}

/// A volume (`GET /volumes/{name}`, list entries, create answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Volume {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    pub driver: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub mountpoint: String,
    pub name: String,
    pub options: Option<BTreeMap<String, String>>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_data: Option<UsageData>,
}

/// `POST /volumes/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateOptions {
    pub name: String,
    pub driver: String,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ListResponse {
    pub volumes: Vec<Volume>,
    pub warnings: Option<Vec<String>>,
}

/// `POST /volumes/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PruneReport {
    pub volumes_deleted: Vec<String>,
    pub space_reclaimed: u64,
}
