//! `HostConfig.Mounts` entries (Docker's `mount.Mount`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::go::{is_empty_map, is_empty_vec, is_false, is_zero};

/// One `--mount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs` or `image` (API 1.48+).
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_options: Option<ImageOptions>,
}

/// `ImageOptions` (an `image` mount).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ImageOptions {
    /// Only this path of the image's file system is mounted (relative).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
}

/// `BindOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BindOptions {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    #[serde(skip_serializing_if = "is_false")]
    pub non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub create_mountpoint: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_non_recursive: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only_force_recursive: bool,
}

/// `VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeOptions {
    #[serde(skip_serializing_if = "is_false")]
    pub no_copy: bool,
    #[serde(skip_serializing_if = "is_empty_map")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Only this path of the volume is mounted (relative).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subpath: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<Driver>,
}

/// A volume driver and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Driver {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "is_empty_map")]
    pub options: Option<BTreeMap<String, String>>,
}

/// `TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TmpfsOptions {
    #[serde(skip_serializing_if = "is_zero")]
    pub size_bytes: i64,
    /// `os.FileMode` (permission bits used).
    #[serde(skip_serializing_if = "is_zero")]
    pub mode: u32,
    /// More options as `[name]` or `[name, value]`.
    #[serde(skip_serializing_if = "is_empty_vec")]
    pub options: Option<Vec<Vec<String>>>,
}
