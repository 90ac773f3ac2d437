//! Small shapes shared by several routes.

use serde::{Deserialize, Serialize};

/// `{"Id": …}` (exec create and others).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct IdResponse {
    pub id: String,
}

/// `GraphDriver` of container and image inspect: the storage driver and its directories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct GraphDriver {
    pub name: String,
    pub data: std::collections::BTreeMap<String, String>,
}
