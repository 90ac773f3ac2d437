//! The crate's error type. Every variant names the file or path involved and, for writes, the value.

use std::io;
use std::path::PathBuf;

/// Errors from detecting, creating, configuring, inspecting and removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Reading a cgroup file (or /proc file) failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Writing a value to a cgroup file failed.
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        /// The file that was written.
        path: PathBuf,
        /// The value that was written.
        value: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Creating a cgroup directory failed.
    #[error("creating cgroup directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Removing a cgroup directory failed (after retries on EBUSY).
    #[error("removing cgroup directory {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A file had content this crate cannot interpret.
    #[error("parsing {path}: unexpected content {content:?}")]
    Parse {
        /// The file (or pseudo-path such as `mountinfo`).
        path: PathBuf,
        /// The offending content (a line or token).
        content: String,
    },

    /// No cgroup file system is mounted.
    #[error("no cgroup (v1 or v2) file system found in {path}")]
    NoCgroupMounts {
        /// The mount table that was searched.
        path: PathBuf,
    },

    /// The process's own cgroup for a hierarchy could not be found in `/proc/self/cgroup`.
    #[error("no entry for hierarchy {hierarchy:?} in {path} (needed to resolve a relative cgroups path)")]
    OwnCgroupNotFound {
        /// The controllers of the hierarchy, or `""` for cgroup v2.
        hierarchy: String,
        /// Usually `/proc/self/cgroup`.
        path: PathBuf,
    },

    /// A systemd `slice:prefix:name` cgroups path was given; Berth only drives cgroupfs.
    #[error(
        "cgroups path {path:?} uses the systemd \"slice:prefix:name\" syntax, which is not supported: \
         Berth manages cgroupfs directly (there is no systemd cgroup driver); use a plain path such as \"/berth/<id>\""
    )]
    SystemdPath {
        /// The path as given.
        path: String,
    },

    /// A cgroups path or container id is not usable as a cgroup directory.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path or id as given.
        path: String,
        /// Why it was refused.
        reason: String,
    },

    /// A resource needs a controller that is not mounted / not available.
    #[error("cannot set {resource} (value {value:?}): the {controller} cgroup controller is not available for {path}")]
    ControllerMissing {
        /// The controller (e.g. `hugetlb`).
        controller: String,
        /// The resource being set (e.g. `hugepageLimits`).
        resource: String,
        /// The value that was to be written.
        value: String,
        /// The cgroup (or file) that was to be written.
        path: PathBuf,
    },

    /// A memory limit below the cgroup's current usage was refused by the kernel.
    #[error(
        "unable to set memory limit to {value} bytes in {path}: the cgroup currently uses {usage} bytes (peak {peak})"
    )]
    MemoryLimitBelowUsage {
        /// The limit file.
        path: PathBuf,
        /// The limit that was refused.
        value: i64,
        /// Current usage in bytes.
        usage: u64,
        /// Peak usage in bytes.
        peak: u64,
    },

    /// A resource value is invalid (refused before writing, or the kernel clamped it).
    #[error("invalid value {value:?} for {path}: {reason}")]
    InvalidValue {
        /// The file the value was meant for.
        path: PathBuf,
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A `unified` key/value was given but the resources are managed by cgroup v1.
    #[error(
        "unified resource {key:?} = {value:?} cannot be applied to {path}: unified (cgroup v2) resources need a \
         pure cgroup v2 host, this one is {version:?}"
    )]
    UnifiedOnV1 {
        /// The key (a cgroup v2 file name).
        key: String,
        /// The value.
        value: String,
        /// The cgroup directory.
        path: PathBuf,
        /// The detected version.
        version: crate::CgroupVersion,
    },

    /// Freezing did not complete.
    #[error("freezing {path}: state is still {state:?} after {waited_ms} ms")]
    FreezeTimeout {
        /// The freezer file that was polled.
        path: PathBuf,
        /// The last state read.
        state: String,
        /// How long we waited.
        waited_ms: u64,
    },

    /// A device cgroup rule cannot be expressed.
    #[error("device rule {rule:?} for {path}: {reason}")]
    DeviceRule {
        /// The rule, in cgroup v1 `type major:minor access` form.
        rule: String,
        /// The cgroup the rule was for.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A `bpf(2)` call for the device filter failed.
    #[error("bpf({cmd}) for {path}: {source}{}", if log.is_empty() { String::new() } else { format!("; verifier log: {log}") })]
    Bpf {
        /// The bpf command (e.g. `BPF_PROG_LOAD`).
        cmd: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
        /// The verifier log, if any.
        log: String,
    },
}

/// Crate-local result type.
pub type Result<T> = std::result::Result<T, CgroupError>;
