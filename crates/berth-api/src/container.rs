//! Containers: `Config`, `HostConfig` (with the resources), the create, inspect, list, wait,
//! update, top and changes shapes, and `State`.
//!
//! Field types follow moby's `api/types/container`: a Go slice or map that may be nil is an
//! `Option` (`None` is `null`, `Some(vec![])` is `[]`), a field with `omitempty` is skipped
//! when empty, Go's `int`/`int64` are `i64`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::common::GraphDriver;
use crate::go::{is_empty_map, is_empty_vec, is_false, is_zero, strslice, Set};
use crate::mount::Mount;
use crate::network::{EndpointSettings, NetworkingConfig};

/// `HEALTHCHECK` settings (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `[]` inherits, `["NONE"]` disables, `["CMD", args…]`, `["CMD-SHELL", command]`.
    #[serde(skip_serializing_if = "is_empty_vec")]
    pub test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: i64,
}

impl HealthConfig {
    /// The command of the test (`CMD …` or `CMD-SHELL …`); `None` for `NONE`, empty or unknown.
    pub fn command(&self) -> Option<Vec<String>> {
        let t = self.test.as_deref().unwrap_or_default();
        match t.first().map(String::as_str) {
            Some("CMD") if t.len() > 1 => Some(t[1..].to_vec()),
            Some("CMD-SHELL") if t.len() > 1 => {
                Some(vec!["/bin/sh".into(), "-c".into(), t[1..].join(" ")])
            }
            _ => None,
        }
    }

    /// Dockerd's merge with the image's check: each zero field takes the image's value.
    pub fn merge_image(&mut self, image: &HealthConfig) {
        if self.test.as_ref().is_none_or(Vec::is_empty) {
            self.test.clone_from(&image.test);
        }
        for (mine, theirs) in [
            (&mut self.interval, image.interval),
            (&mut self.timeout, image.timeout),
            (&mut self.start_period, image.start_period),
            (&mut self.start_interval, image.start_interval),
            (&mut self.retries, image.retries),
        ] {
            if *mine == 0 {
                *mine = theirs;
            }
        }
    }
}

/// Docker's `container.Config`: what the container runs and how it is attached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Config {
    pub hostname: String,
    pub domainname: String,
    /// `user[:group]`; `""` means the image's.
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    #[serde(skip_serializing_if = "is_empty_map")]
    pub exposed_ports: Option<Set>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "strslice")]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    #[serde(skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    pub image: String,
    pub volumes: Option<Set>,
    /// `""` means the image's.
    pub working_dir: String,
    /// `None` inherits the image's, `[]` and `[""]` mean none.
    #[serde(deserialize_with = "strslice")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "is_false")]
    pub network_disabled: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    pub on_build: Option<Vec<String>>,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(skip_serializing_if = "is_empty_vec", deserialize_with = "strslice")]
    pub shell: Option<Vec<String>>,
}

/// `POST /containers/create`: the `Config` fields at the top level, with `HostConfig` and
/// `NetworkingConfig` beside them (Go embeds `Config`; decoded here without `flatten`, see
/// [`crate::decode`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateRequest {
    pub config: Config,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
}

/// dockerd's refusal of a create request without a config.
pub const EMPTY_CONFIG: &str = "config cannot be empty in order to create a container";

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CreateExtra {
    host_config: Option<HostConfig>,
    networking_config: Option<NetworkingConfig>,
}

impl CreateRequest {
    /// Decodes a create body with dockerd's rules (see [`crate::decode`]). `None`: the body
    /// names no `Config` field (`{}`, only `HostConfig` and `NetworkingConfig`, `null`), which
    /// leaves Go's embedded `*Config` nil and dockerd refuses ([`EMPTY_CONFIG`]).
    pub fn decode(body: &[u8]) -> Result<Option<CreateRequest>, crate::DecodeError> {
        let v: serde_json::Value = crate::from_slice(body)?;
        if v.is_null() {
            return Ok(None);
        }
        let Some(o) = v.as_object() else {
            return Err(crate::DecodeError::new(EMPTY_CONFIG));
        };
        let has_config = o.keys().any(|k| {
            !k.eq_ignore_ascii_case("HostConfig") && !k.eq_ignore_ascii_case("NetworkingConfig")
        });
        if !has_config {
            return Ok(None);
        }
        let extra: CreateExtra = crate::from_value(v.clone())?;
        Ok(Some(CreateRequest {
            config: crate::from_value(v)?,
            host_config: extra.host_config,
            networking_config: extra.networking_config,
        }))
    }
}

impl Serialize for CreateRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire<'a> {
            #[serde(flatten)]
            config: &'a Config,
            #[serde(skip_serializing_if = "Option::is_none")]
            host_config: &'a Option<HostConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            networking_config: &'a Option<NetworkingConfig>,
        }
        Wire {
            config: &self.config,
            host_config: &self.host_config,
            networking_config: &self.networking_config,
        }
        .serialize(s)
    }
}

/// `RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// `""`/`no`, `always`, `on-failure`, `unless-stopped`.
    pub name: String,
    pub maximum_retry_count: i64,
}

impl RestartPolicy {
    /// No restarts (`""` or `no`).
    pub fn is_none(&self) -> bool {
        matches!(self.name.as_str(), "" | "no")
    }
}

/// `LogConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: Option<BTreeMap<String, String>>,
}

/// One host binding of a published port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    /// `""` (any free port), `"8080"` or a range `"8000-8010"`.
    pub host_port: String,
}

/// `PortBindings` / `NetworkSettings.Ports`: `"80/tcp"` → bindings (`null` when exposed only).
pub type PortMap = BTreeMap<String, Option<Vec<PortBinding>>>;

/// A device of the host made available in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

/// A request for devices of a driver (GPUs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceRequest {
    pub driver: String,
    pub count: i64,
    #[serde(rename = "DeviceIDs")]
    pub device_ids: Option<Vec<String>>,
    pub capabilities: Option<Vec<Vec<String>>>,
    pub options: Option<BTreeMap<String, String>>,
}

/// `blkiodev.WeightDevice`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WeightDevice {
    pub path: String,
    pub weight: u16,
}

/// `blkiodev.ThrottleDevice`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ThrottleDevice {
    pub path: String,
    pub rate: u64,
}

/// `units.Ulimit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Declares a struct with its own fields followed by Docker's resource fields (Go's
/// `Resources`, embedded in `HostConfig` and `UpdateConfig`; no `flatten`, see
/// [`crate::decode`]), and `resources()`/`set_resources()` to move them as a [`Resources`].
macro_rules! with_resources {
    (
        $(#[$m:meta])*
        pub struct $name:ident { $($own:tt)* }
    ) => {
        with_resources! { @emit [$(#[$m])*] $name [$($own)*]
            #[serde(rename = "CpuShares")] cpu_shares: i64,
            memory: i64,
            #[serde(rename = "NanoCpus")] nano_cpus: i64,
            cgroup_parent: String,
            blkio_weight: u16,
            blkio_weight_device: Option<Vec<WeightDevice>>,
            blkio_device_read_bps: Option<Vec<ThrottleDevice>>,
            blkio_device_write_bps: Option<Vec<ThrottleDevice>>,
            #[serde(rename = "BlkioDeviceReadIOps")] blkio_device_read_iops: Option<Vec<ThrottleDevice>>,
            #[serde(rename = "BlkioDeviceWriteIOps")] blkio_device_write_iops: Option<Vec<ThrottleDevice>>,
            #[serde(rename = "CpuPeriod")] cpu_period: i64,
            #[serde(rename = "CpuQuota")] cpu_quota: i64,
            #[serde(rename = "CpuRealtimePeriod")] cpu_realtime_period: i64,
            #[serde(rename = "CpuRealtimeRuntime")] cpu_realtime_runtime: i64,
            cpuset_cpus: String,
            cpuset_mems: String,
            devices: Option<Vec<DeviceMapping>>,
            device_cgroup_rules: Option<Vec<String>>,
            device_requests: Option<Vec<DeviceRequest>>,
            #[serde(skip_serializing_if = "is_zero")] kernel_memory: i64,
            #[serde(rename = "KernelMemoryTCP", skip_serializing_if = "is_zero")] kernel_memory_tcp: i64,
            memory_reservation: i64,
            memory_swap: i64,
            memory_swappiness: Option<i64>,
            oom_kill_disable: Option<bool>,
            pids_limit: Option<i64>,
            ulimits: Option<Vec<Ulimit>>,
            #[serde(rename = "CpuCount")] cpu_count: i64,
            #[serde(rename = "CpuPercent")] cpu_percent: i64,
            #[serde(rename = "IOMaximumIOps")] io_maximum_iops: u64,
            #[serde(rename = "IOMaximumBandwidth")] io_maximum_bandwidth: u64,
        }
    };
    (@emit [$($m:tt)*] $name:ident [$($own:tt)*]
        $( $(#[$rm:meta])* $rf:ident : $rt:ty ),* $(,)?
    ) => {
        $($m)*
        pub struct $name {
            $($own)*
            $( $(#[$rm])* pub $rf: $rt, )*
        }

        impl $name {
            /// The resource fields.
            pub fn resources(&self) -> Resources {
                Resources { $( $rf: self.$rf.clone(), )* }
            }

            /// Replaces the resource fields.
            pub fn set_resources(&mut self, r: Resources) {
                $( self.$rf = r.$rf; )*
            }
        }
    };
}

with_resources! {
    /// Go's `container.Resources`: cgroup limits, devices, ulimits.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default, rename_all = "PascalCase")]
    pub struct Resources {}
}

with_resources! {
    /// `POST /containers/{id}/update`: resources and the restart policy.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default, rename_all = "PascalCase")]
    pub struct UpdateConfig {
        pub restart_policy: RestartPolicy,
    }
}

with_resources! {
    /// Docker's `HostConfig`: how the container relates to the host.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default, rename_all = "PascalCase")]
    pub struct HostConfig {
        pub binds: Option<Vec<String>>,
        #[serde(rename = "ContainerIDFile")]
        pub container_id_file: String,
        pub log_config: LogConfig,
        /// `default`, `bridge`, `host`, `none`, `container:<x>` or a network's name.
        pub network_mode: String,
        pub port_bindings: Option<PortMap>,
        pub restart_policy: RestartPolicy,
        pub auto_remove: bool,
        pub volume_driver: String,
        pub volumes_from: Option<Vec<String>>,
        /// Initial console size (height, width).
        pub console_size: [u64; 2],
        #[serde(skip_serializing_if = "is_empty_map")]
        pub annotations: Option<BTreeMap<String, String>>,
        #[serde(deserialize_with = "strslice")]
        pub cap_add: Option<Vec<String>>,
        #[serde(deserialize_with = "strslice")]
        pub cap_drop: Option<Vec<String>>,
        pub cgroupns_mode: String,
        pub dns: Option<Vec<String>>,
        pub dns_options: Option<Vec<String>>,
        pub dns_search: Option<Vec<String>>,
        pub extra_hosts: Option<Vec<String>>,
        pub group_add: Option<Vec<String>>,
        pub ipc_mode: String,
        pub cgroup: String,
        pub links: Option<Vec<String>>,
        pub oom_score_adj: i64,
        pub pid_mode: String,
        pub privileged: bool,
        pub publish_all_ports: bool,
        pub readonly_rootfs: bool,
        pub security_opt: Option<Vec<String>>,
        #[serde(skip_serializing_if = "is_empty_map")]
        pub storage_opt: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "is_empty_map")]
        pub tmpfs: Option<BTreeMap<String, String>>,
        #[serde(rename = "UTSMode")]
        pub uts_mode: String,
        pub userns_mode: String,
        pub shm_size: i64,
        #[serde(skip_serializing_if = "is_empty_map")]
        pub sysctls: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub runtime: String,
        pub isolation: String,
        #[serde(skip_serializing_if = "is_empty_vec")]
        pub mounts: Option<Vec<Mount>>,
        pub masked_paths: Option<Vec<String>>,
        pub readonly_paths: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub init: Option<bool>,
    }
}

impl HostConfig {
    /// The network mode with dockerd's default (`""` is `default`).
    pub fn network_mode(&self) -> &str {
        if self.network_mode.is_empty() {
            "default"
        } else {
            &self.network_mode
        }
    }
}

/// The answer to a create: the new id and warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

/// The error of a wait whose container could not be waited for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WaitExitError {
    pub message: String,
}

/// `POST /containers/{id}/wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct WaitResponse {
    pub status_code: i64,
    pub error: Option<WaitExitError>,
}

/// `POST /containers/{id}/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct UpdateResponse {
    pub warnings: Vec<String>,
}

/// `GET /containers/{id}/top`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TopResponse {
    pub titles: Vec<String>,
    pub processes: Vec<Vec<String>>,
}

/// One entry of `GET /containers/{id}/changes` (`Kind`: 0 modified, 1 added, 2 deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ChangeItem {
    pub path: String,
    pub kind: u8,
}

/// `POST /containers/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct PruneReport {
    pub containers_deleted: Option<Vec<String>>,
    pub space_reclaimed: u64,
}

/// One result of a health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HealthcheckResult {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

/// `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: i64,
    pub log: Vec<HealthcheckResult>,
}

/// Docker's zero time (a container never started or never stopped).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A container's `State`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct State {
    /// `created`, `running`, `paused`, `restarting`, `exited`.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: "created".into(),
            running: false,
            paused: false,
            restarting: false,
            oom_killed: false,
            dead: false,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            health: None,
        }
    }
}

/// A mount of container inspect and list (`Mounts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MountPoint {
    #[serde(rename = "Type", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub source: String,
    pub destination: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub driver: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
}

/// `NetworkSettings` of container inspect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkSettings {
    pub bridge: String,
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    pub sandbox_key: String,
    pub hairpin_mode: bool,
    #[serde(rename = "LinkLocalIPv6Address")]
    pub link_local_ipv6_address: String,
    #[serde(rename = "LinkLocalIPv6PrefixLen")]
    pub link_local_ipv6_prefix_len: i64,
    #[serde(rename = "SecondaryIPAddresses")]
    pub secondary_ip_addresses: Option<Vec<serde_json::Value>>,
    #[serde(rename = "SecondaryIPv6Addresses")]
    pub secondary_ipv6_addresses: Option<Vec<serde_json::Value>>,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: i64,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: i64,
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: String,
    pub mac_address: String,
    pub networks: BTreeMap<String, EndpointSettings>,
    pub ports: PortMap,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct InspectResponse {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: State,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: i64,
    pub driver: String,
    pub platform: String,
    pub mount_label: String,
    pub process_label: String,
    pub app_armor_profile: String,
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    pub host_config: HostConfig,
    pub graph_driver: GraphDriver,
    pub mounts: Vec<MountPoint>,
    pub config: Config,
    pub network_settings: NetworkSettings,
}

/// A published or exposed port of the container list (`Ports`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Port {
    #[serde(rename = "IP", skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub private_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    #[serde(rename = "Type")]
    pub kind: String,
}

/// `HostConfig` of the container list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SummaryHostConfig {
    pub network_mode: String,
    /// API 1.46 and up (see [`crate::ApiVersion::container_list_has_annotations`]).
    #[serde(skip_serializing_if = "crate::go::is_empty_map")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `NetworkSettings` of the container list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SummaryNetworkSettings {
    pub networks: BTreeMap<String, EndpointSettings>,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Summary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<i64>,
    pub labels: Option<BTreeMap<String, String>>,
    pub state: String,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworkSettings,
    pub mounts: Vec<MountPoint>,
}

/// A path in a container (`X-Docker-Container-Path-Stat` of the archive routes, base64 JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    pub link_target: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requests_decode_like_dockerd() {
        let r = CreateRequest::decode(
            br#"{"Image":"busybox","User":"","Cmd":"id","Entrypoint":[""],
                 "hostconfig":{"CPURealtimeRuntime":5,"cpuShares":7,"Memory":67108864,
                 "PortBindings":{"80/tcp":null,"81/tcp":[{"HostPort":"8081"}]}},
                 "NetworkingConfig":{"EndpointsConfig":{"n":{"Aliases":["a"]}}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.config.user, "");
        assert_eq!(r.config.cmd, Some(vec!["id".to_string()]));
        assert_eq!(r.config.entrypoint, Some(vec![String::new()]));
        let hc = r.host_config.unwrap();
        assert_eq!(hc.cpu_realtime_runtime, 5);
        assert_eq!(hc.cpu_shares, 7);
        assert_eq!(hc.resources().memory, 67108864);
        let pb = hc.port_bindings.unwrap();
        assert_eq!(pb["80/tcp"], None);
        assert_eq!(pb["81/tcp"].as_ref().unwrap()[0].host_port, "8081");
        let eps = r.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(eps["n"].aliases, Some(vec!["a".to_string()]));

        for (body, path) in [
            (
                r#"{"Image":"b","HostConfig":{"Memory":1e9}}"#,
                "HostConfig.Memory",
            ),
            (
                r#"{"Image":"b","HostConfig":{"Memory":"512m"}}"#,
                "HostConfig.Memory",
            ),
            (r#"{"Image":"b","Env":"A=1"}"#, "Env"),
            (
                r#"{"Image":"b","HostConfig":{"RestartPolicy":{"MaximumRetryCount":"3"}}}"#,
                "HostConfig.RestartPolicy.MaximumRetryCount",
            ),
        ] {
            let e = CreateRequest::decode(body.as_bytes()).unwrap_err();
            assert_eq!(e.path_string(), path, "{body}: {e}");
        }
        assert!(CreateRequest::decode(b"[]").is_err());
        // No config field: Go's embedded `*Config` stays nil.
        for body in ["{}", "null", r#"{"hostconfig":{},"NetworkingConfig":null}"#] {
            assert_eq!(CreateRequest::decode(body.as_bytes()), Ok(None), "{body}");
        }
    }

    #[test]
    fn shapes_follow_go() {
        let v = serde_json::to_value(Config::default()).unwrap();
        // nil slices and maps are null; omitempty fields are absent.
        assert!(v["Env"].is_null() && v["Cmd"].is_null() && v["Labels"].is_null());
        for absent in [
            "ExposedPorts",
            "Healthcheck",
            "StopSignal",
            "StopTimeout",
            "Shell",
            "MacAddress",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        let v = serde_json::to_value(HostConfig::default()).unwrap();
        assert_eq!(v["ConsoleSize"], serde_json::json!([0, 0]));
        assert!(v["PidsLimit"].is_null() && v["Binds"].is_null());
        assert_eq!(v["CpuShares"], 0);
        for absent in [
            "Tmpfs",
            "Sysctls",
            "Mounts",
            "Init",
            "KernelMemory",
            "Runtime",
        ] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        let mut hc = HostConfig {
            memory: 5,
            ..Default::default()
        };
        let mut r = hc.resources();
        r.pids_limit = Some(3);
        hc.set_resources(r);
        assert_eq!((hc.memory, hc.pids_limit), (5, Some(3)));
        let h = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "a".into(), "b".into()]),
            ..Default::default()
        };
        assert_eq!(h.command().unwrap(), vec!["/bin/sh", "-c", "a b"]);
        let s = CreateRequest {
            config: Config {
                image: "x".into(),
                ..Default::default()
            },
            host_config: Some(HostConfig::default()),
            networking_config: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["Image"], "x");
        assert!(v["HostConfig"].is_object() && v.get("NetworkingConfig").is_none());
        assert_eq!(
            CreateRequest::decode(v.to_string().as_bytes())
                .unwrap()
                .unwrap()
                .config
                .image,
            "x"
        );
    }
}
