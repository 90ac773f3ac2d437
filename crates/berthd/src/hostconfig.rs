//! Docker's `HostConfig` (security, resources, namespaces) applied to the container's OCI spec.
//!
//! [`check`] runs at create time and refuses what Berth cannot honour, naming the field and
//! using Docker's messages; [`apply`] edits the runtime's typed [`Spec`] at start time;
//! [`resources`] gives the cgroup limits (also for `update`).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_api::container::{HostConfig, Resources, Ulimit};
use berth_runtime::spec::{
    Capabilities, Device, LinuxResources, Mount, Namespace, NamespaceType, Rlimit, Seccomp,
    SeccompArg, Spec, Syscall,
};
use berth_runtime::validate::IPC_SYSCTLS;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxPids,
    LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
};
use serde::Deserialize;

use crate::engine::Peers;
use crate::spec::DEFAULT_CAPS;

/// A `HostConfig` Berth cannot honour, or a device or group it cannot find (400s).
#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    /// Docker's message for an invalid setting.
    #[error("{0}")]
    Invalid(String),
    /// `invalid CapAdd: unknown capability: "CAP_X"` (dockerd's `validateCapabilities`).
    #[error("invalid {0}: unknown capability: {1:?}")]
    UnknownCapability(&'static str, String),
    #[error("Unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error(
        "error gathering device information while adding custom device {path:?}: {}",
        berth_util::errno::go_text(source)
    )]
    DeviceInfo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Device {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a device", path.display())]
    NotADevice { path: PathBuf },
    #[error("decoding seccomp profile failed: {0}")]
    Seccomp(#[source] berth_api::DecodeError),
    #[error("invalid device cgroup rule {0:?}")]
    DeviceRule(String),
    #[error("invalid ulimit type: {0}")]
    Ulimit(String),
    /// `container:<x>` modes whose container cannot be joined.
    #[error("{0}")]
    Peer(String),
    /// dockerd's `failed to join PID namespace: container <id> is not running` (a 500).
    #[error("failed to join {ns} namespace: container {id} is not running")]
    PeerNotRunning { ns: &'static str, id: String },
    /// A `StorageOpt` the storage cannot honour, with overlay2's message (a 500, from the
    /// layer's creation in dockerd).
    #[error("{0}")]
    StorageOpt(String),
}

type Result<T, E = HostConfigError> = std::result::Result<T, E>;

fn invalid(m: impl Into<String>) -> HostConfigError {
    HostConfigError::Invalid(m.into())
}

/// Every capability the daemon itself holds in its bounding set (for `--privileged` and
/// `--cap-add ALL`; a capability we lack could never be granted).
pub fn all_caps() -> Vec<String> {
    let held = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut v: Vec<String> = held.into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

fn norm_cap(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or_default()
}

/// The capability set of the container's processes: Docker's defaults with `CapAdd`/`CapDrop`
/// (names with or without `CAP_`, any case, `ALL`), or every capability when privileged.
pub fn capabilities(hc: &HostConfig, privileged: bool) -> Result<Vec<String>> {
    let all = all_caps();
    let known = |c: &str| c == "ALL" || all.iter().any(|a| a == c);
    let add: Vec<String> = list(&hc.cap_add).iter().map(|c| norm_cap(c)).collect();
    let drop: Vec<String> = list(&hc.cap_drop).iter().map(|c| norm_cap(c)).collect();
    if let Some(c) = add.iter().find(|c| !known(c)) {
        return Err(HostConfigError::UnknownCapability("CapAdd", c.clone()));
    }
    if let Some(c) = drop.iter().find(|c| !known(c)) {
        return Err(HostConfigError::UnknownCapability("CapDrop", c.clone()));
    }
    if privileged {
        return Ok(all);
    }
    let mut set: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all.clone()
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        set.clear();
    }
    set.retain(|c| !drop.contains(c));
    for c in add {
        if c != "ALL" && !set.contains(&c) {
            set.push(c);
        }
    }
    Ok(set)
}

/// The OCI capabilities of a process holding `caps`.
pub fn oci_capabilities(caps: &[String]) -> Capabilities {
    Capabilities {
        bounding: Some(caps.to_vec()),
        effective: Some(caps.to_vec()),
        permitted: Some(caps.to_vec()),
        inheritable: None,
        ambient: None,
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A boolean `--security-opt` (`key`, `key=<bool>`, `key:<bool>`): the last one given.
fn security_flag(hc: &HostConfig, key: &str) -> Option<bool> {
    list(&hc.security_opt)
        .iter()
        .filter_map(|o| {
            if o == key {
                return Some(true);
            }
            let (k, v) = o.split_once(['=', ':'])?;
            (k == key).then(|| go_bool(v)).flatten()
        })
        .next_back()
}

/// Whether `--security-opt no-new-privileges` is set.
pub fn no_new_privileges(hc: &HostConfig) -> bool {
    security_flag(hc, "no-new-privileges").unwrap_or(false)
}

/// Whether the container's cgroup file system is mounted writable: `--security-opt
/// writable-cgroups[=<bool>]`, by default when privileged (dockerd).
pub fn writable_cgroups(hc: &HostConfig) -> bool {
    security_flag(hc, "writable-cgroups").unwrap_or(hc.privileged)
}

/// `GroupAdd` (names or numbers) resolved against the container's `/etc/group`.
/// A process's additional groups as dockerd's `getUser` makes them: its primary group, the
/// groups `/etc/group` lists the user as a member of (when the user is found in
/// `/etc/passwd` and no group was given), then `GroupAdd`.
pub fn additional_gids(rootfs: &Path, user: &str, gid: u32, hc: &HostConfig) -> Result<Vec<u32>> {
    let mut gids = vec![gid];
    gids.extend(member_gids(rootfs, user));
    gids.extend(group_add(rootfs, hc)?);
    Ok(gids)
}

/// The supplementary groups of `user` (`berth_util::passwd::supplementary_gids`).
fn member_gids(rootfs: &Path, user: &str) -> Vec<u32> {
    let read = |f: &str| std::fs::read_to_string(rootfs.join(f)).unwrap_or_default();
    berth_util::passwd::supplementary_gids(&read("etc/passwd"), &read("etc/group"), user)
}

fn group_add(rootfs: &Path, hc: &HostConfig) -> Result<Vec<u32>> {
    let groups = list(&hc.group_add);
    if groups.is_empty() {
        return Ok(vec![]);
    }
    let table = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    groups
        .iter()
        .map(|g| {
            if let Ok(n) = g.parse::<u32>() {
                return Ok(n);
            }
            table
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| HostConfigError::UnknownGroup(g.clone()))
        })
        .collect()
}

/// Sysctl prefixes of the ipc and network namespaces (besides [`IPC_SYSCTLS`]).
const NAMESPACED_SYSCTL_PREFIXES: &[&str] = &["fs.mqueue.", "net."];

/// Create-time checks of `HostConfig` (Docker's messages where it has them). Returns warnings.
pub fn check(hc: &HostConfig, ncpus: usize) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    // dockerd 28 warns of each image mount.
    let image_mounts = hc.mounts.iter().flatten().filter(|m| m.kind == "image");
    warnings.extend(image_mounts.map(|_| "Image mount is an experimental feature".to_string()));
    capabilities(hc, hc.privileged)?;
    // dockerd's `parseSecurityOpt`, with its messages.
    for o in list(&hc.security_opt) {
        if matches!(
            o.as_str(),
            "no-new-privileges" | "writable-cgroups" | "disable"
        ) {
            continue;
        }
        let Some((k, v)) = o.split_once(['=', ':']) else {
            return Err(invalid(format!("invalid --security-opt 1: {o:?}")));
        };
        match k {
            "no-new-privileges" | "writable-cgroups" if go_bool(v).is_some() => {}
            "seccomp" if v == "unconfined" => {}
            "seccomp" => {
                DockerSeccomp::parse(v)?;
            }
            "apparmor" | "label" => warnings.push(format!(
                "security option {o:?} ignored: no LSM is in use on this host"
            )),
            _ => return Err(invalid(format!("invalid --security-opt 2: {o:?}"))),
        }
    }
    check_resources(&hc.resources(), ncpus)?;
    if hc.shm_size < 0 {
        return Err(invalid("SHM size can not be less than 0"));
    }
    if let Some(o) = Some(hc.oom_score_adj).filter(|o| !(-1000..=1000).contains(o)) {
        return Err(invalid(format!(
            "Invalid value {o}, range for oom score adj is [-1000, 1000]"
        )));
    }
    let host_net = hc.network_mode == "host";
    for k in hc.sysctls.iter().flat_map(|m| m.keys()) {
        let ok = IPC_SYSCTLS
            .iter()
            .chain(NAMESPACED_SYSCTL_PREFIXES)
            .any(|p| k == p.trim_end_matches('.') || k.starts_with(p));
        if !ok || (host_net && k.starts_with("net.")) {
            return Err(invalid(format!("sysctl {k:?} is not allowed")));
        }
    }
    // dockerd's `Valid()` of each mode, in its order and with its messages: an IPC mode may
    // name no container (`container:`), a PID mode must.
    let container = |v: &str| v.strip_prefix("container:").is_some();
    let named = |v: &str| v.strip_prefix("container:").is_some_and(|n| !n.is_empty());
    for (what, v, ok) in [
        (
            "IPC mode",
            &hc.ipc_mode,
            matches!(
                hc.ipc_mode.as_str(),
                "" | "private" | "shareable" | "host" | "none"
            ) || container(&hc.ipc_mode),
        ),
        (
            "PID mode",
            &hc.pid_mode,
            matches!(hc.pid_mode.as_str(), "" | "host") || named(&hc.pid_mode),
        ),
        (
            "UTS mode",
            &hc.uts_mode,
            matches!(hc.uts_mode.as_str(), "" | "host"),
        ),
        (
            "user namespace mode",
            &hc.userns_mode,
            matches!(hc.userns_mode.as_str(), "" | "host"),
        ),
        (
            "cgroup namespace mode",
            &hc.cgroupns_mode,
            matches!(hc.cgroupns_mode.as_str(), "" | "private" | "host"),
        ),
    ] {
        if !ok {
            return Err(invalid(format!("invalid {what}: {v}")));
        }
    }
    if hc.annotations.iter().flatten().any(|(k, _)| k.is_empty()) {
        return Err(invalid(
            "invalid Annotations: the empty string is not permitted as an annotation key",
        ));
    }
    match hc.runtime.as_str() {
        // Berth's runtime serves as dockerd's `runc` (and its containerd shim's name).
        "" | "runc" | "io.containerd.runc.v2" | "berth-runtime" | "berth" => {}
        r => return Err(invalid(format!("unknown or invalid runtime name: {r}"))),
    }
    Ok(warnings)
}

/// dockerd's overlay2 driver's checks of a container's `StorageOpt` when it creates the
/// writable layer: `size` needs XFS project quotas, which Berth's storage does not set, so it
/// is refused rather than accepted and not enforced; any other option is unknown.
pub fn check_storage_opt(hc: &HostConfig) -> Result<()> {
    let mut keys = hc.storage_opt.iter().flat_map(|m| m.keys());
    let Some(first) = keys.clone().next() else {
        return Ok(());
    };
    Err(HostConfigError::StorageOpt(
        if keys.any(|k| k.eq_ignore_ascii_case("size")) {
            "--storage-opt is supported only for overlay over xfs with 'pquota' mount option".into()
        } else {
            format!("Unknown option {}", first.to_ascii_lowercase())
        },
    ))
}

/// What dockerd fills into a new container's `HostConfig` (what inspect shows): an
/// "unlimited" pids limit (the CLI sends 0) and the "default" swappiness (-1) become unset
/// (`null`), as does the swappiness on cgroup v2, which cannot apply it (with dockerd's
/// warning); OOM-kill disabling is `false` unless set (and cannot be on cgroup v2); a memory
/// limit without a swap limit gets twice as much swap; the cgroup namespace is `host` on
/// cgroup v1 and `private` on v2 (a privileged container's `host` on v1); an unprivileged
/// container's masked and read-only paths are the defaults. Returns the warnings.
pub fn fill_defaults(hc: &mut HostConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    let v2 = crate::sysinfo::cgroup_version() == "2";
    if hc.pids_limit.is_some_and(|l| l <= 0) {
        hc.pids_limit = None;
    }
    if hc.memory_swappiness == Some(-1) {
        hc.memory_swappiness = None;
    }
    if v2 {
        if hc.memory_swappiness.take().is_some() {
            warnings.push(
                "Your kernel does not support memory swappiness capabilities or the cgroup is \
                 not mounted. Memory swappiness discarded."
                    .into(),
            );
        }
        if hc.oom_kill_disable.take() == Some(true) {
            warnings.push(
                "Your kernel does not support OomKillDisable. OomKillDisable discarded.".into(),
            );
        }
    }
    hc.oom_kill_disable.get_or_insert(false);
    if hc.memory > 0 && hc.memory_swap == 0 {
        hc.memory_swap = hc.memory * 2;
    }
    if hc.cgroupns_mode.is_empty() {
        hc.cgroupns_mode = if v2 { "private" } else { "host" }.into();
    }
    if !hc.privileged {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        hc.masked_paths
            .get_or_insert_with(|| owned(crate::spec::MASKED_PATHS));
        hc.readonly_paths
            .get_or_insert_with(|| owned(crate::spec::READONLY_PATHS));
    }
    warnings
}

/// dockerd's smallest memory limit (and reservation): 6 MiB.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The range of `cpu.shares` the kernel accepts; shares outside it are clamped.
const CPU_SHARES: std::ops::RangeInclusive<i64> = 2..=262_144;

/// The checks of the resource fields (create and update).
pub fn check_resources(r: &Resources, ncpus: usize) -> Result<()> {
    let mem = r.memory;
    if mem != 0 && mem < MIN_MEMORY {
        return Err(invalid("Minimum memory limit allowed is 6MB"));
    }
    if r.memory_reservation > 0 && r.memory_reservation < MIN_MEMORY {
        return Err(invalid("Minimum memory reservation allowed is 6MB"));
    }
    let swap = r.memory_swap;
    if swap > 0 && mem == 0 {
        return Err(invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if swap > 0 && swap < mem {
        return Err(invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    if mem > 0 && r.memory_reservation > mem {
        return Err(invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    if let Some(sw) = r.memory_swappiness.filter(|s| !(-1..=100).contains(s)) {
        return Err(invalid(format!(
            "Invalid value: {sw}, valid memory swappiness range is 0-100"
        )));
    }
    let nano = r.nano_cpus;
    if nano != 0 {
        if r.cpu_quota != 0 || r.cpu_period != 0 {
            return Err(invalid(
                "Conflicting options: Nano CPUs and CPU Period cannot both be set",
            ));
        }
        if nano < 0 || nano > ncpus as i64 * 1_000_000_000 {
            return Err(invalid(format!(
                "Range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available"
            )));
        }
    }
    if r.cpu_period != 0 && !(1000..=1_000_000).contains(&r.cpu_period) {
        return Err(invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if r.cpu_quota > 0 && r.cpu_quota < 1000 {
        return Err(invalid(
            "CPU cfs quota can not be less than 1ms (i.e. 1000)",
        ));
    }
    if r.cpu_shares < 0 {
        return Err(invalid(format!(
            "invalid CPU shares ({}): value must be a positive integer",
            r.cpu_shares
        )));
    }
    check_cpuset(
        &r.cpuset_cpus,
        "cpus",
        "CPUs",
        "/sys/devices/system/cpu/online",
        || format!("0-{}", ncpus.max(1) - 1),
    )?;
    check_cpuset(
        &r.cpuset_mems,
        "mems",
        "memory nodes",
        "/sys/devices/system/node/online",
        || "0".to_string(),
    )?;
    if r.blkio_weight != 0 && !(10..=1000).contains(&r.blkio_weight) {
        return Err(invalid("Range of blkio weight is from 10 to 1000"));
    }
    for u in r.ulimits.iter().flatten() {
        check_ulimit(u)?;
    }
    for d in r.devices.iter().flatten() {
        let p = &d.path_on_host;
        std::fs::metadata(p).map_err(|source| HostConfigError::DeviceInfo {
            path: p.clone(),
            source,
        })?;
        let perms = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            &d.cgroup_permissions
        };
        if !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid(format!(
                "invalid device cgroup permissions: {perms:?}"
            )));
        }
    }
    for d in throttle_lists(r).into_iter().flat_map(|(_, l)| l) {
        dev_numbers(Path::new(&d.path))?;
    }
    for d in r.blkio_weight_device.iter().flatten() {
        dev_numbers(Path::new(&d.path))?;
    }
    Ok(())
}

/// A ulimit's value as the kernel's: a negative value (Docker's `-1`) is unlimited.
fn rlimit_value(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(libc::RLIM_INFINITY)
}

/// A ulimit's name, order and, for `nofile`, the kernel's ceiling (`fs.nr_open`: no process
/// may raise its open-file limit above it, so the container would fail to start).
fn check_ulimit(u: &Ulimit) -> Result<()> {
    rlimit_type(&u.name)?;
    let (soft, hard) = (rlimit_value(u.soft), rlimit_value(u.hard));
    if soft > hard {
        return Err(invalid(format!(
            "ulimit soft limit must be less than or equal to hard limit: {}",
            u.name
        )));
    }
    if u.name == "nofile" {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(max) = nr_open.filter(|max| hard > *max) {
            let shown = |v: i64| {
                if v < 0 {
                    format!("{v} (unlimited)")
                } else {
                    v.to_string()
                }
            };
            return Err(invalid(format!(
                "ulimit nofile={}:{}: the hard limit is above the kernel's maximum number of open files ({max}, fs.nr_open)",
                shown(u.soft),
                shown(u.hard)
            )));
        }
    }
    Ok(())
}

/// Parses a cpuset list (`0-3,5`) as dockerd's `parsers.ParseUintList`; `None` when it is
/// malformed. Ranges stay ranges (a huge one is not expanded).
fn cpuset_ranges(list: &str) -> Option<Vec<(u32, u32)>> {
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    list.split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                (a <= b).then_some((a, b))
            }
            None => num(part).map(|n| (n, n)),
        })
        .collect()
}

/// `CpusetCpus`/`CpusetMems`: the syntax, then every CPU (memory node) among the host's
/// (`online`, a sysfs list; `fallback` when it cannot be read), with dockerd's messages.
fn check_cpuset(
    value: &str,
    field: &str,
    what: &str,
    online: &str,
    fallback: impl FnOnce() -> String,
) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    let Some(wanted) = cpuset_ranges(value) else {
        return Err(invalid(format!(
            "Invalid value {value} for cpuset {field}: invalid format: {value}"
        )));
    };
    let available = std::fs::read_to_string(online)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| cpuset_ranges(s).is_some())
        .unwrap_or_else(fallback);
    let have = cpuset_ranges(&available).unwrap_or_default();
    let covered = |(a, b): (u32, u32)| {
        // Each wanted range must lie within the union of the host's: walk it range by range.
        let mut next = a;
        while let Some(&(_, hb)) = have.iter().find(|(ha, hb)| *ha <= next && next <= *hb) {
            if hb >= b {
                return true;
            }
            next = hb + 1;
        }
        false
    };
    if !wanted.into_iter().all(covered) {
        return Err(invalid(format!(
            "Requested {what} are not available - requested {value}, available: {available}"
        )));
    }
    Ok(())
}

fn throttle_lists(r: &Resources) -> [(&'static str, &[berth_api::container::ThrottleDevice]); 4] {
    [
        (
            "read_bps",
            r.blkio_device_read_bps.as_deref().unwrap_or_default(),
        ),
        (
            "write_bps",
            r.blkio_device_write_bps.as_deref().unwrap_or_default(),
        ),
        (
            "read_iops",
            r.blkio_device_read_iops.as_deref().unwrap_or_default(),
        ),
        (
            "write_iops",
            r.blkio_device_write_iops.as_deref().unwrap_or_default(),
        ),
    ]
}

fn rlimit_type(name: &str) -> Result<&'static str> {
    Ok(match name {
        "core" => "RLIMIT_CORE",
        "cpu" => "RLIMIT_CPU",
        "data" => "RLIMIT_DATA",
        "fsize" => "RLIMIT_FSIZE",
        "locks" => "RLIMIT_LOCKS",
        "memlock" => "RLIMIT_MEMLOCK",
        "msgqueue" => "RLIMIT_MSGQUEUE",
        "nice" => "RLIMIT_NICE",
        "nofile" => "RLIMIT_NOFILE",
        "nproc" => "RLIMIT_NPROC",
        "rss" => "RLIMIT_RSS",
        "rtprio" => "RLIMIT_RTPRIO",
        "rttime" => "RLIMIT_RTTIME",
        "sigpending" => "RLIMIT_SIGPENDING",
        "stack" => "RLIMIT_STACK",
        "as" => "RLIMIT_AS",
        _ => return Err(HostConfigError::Ulimit(name.to_string())),
    })
}

fn dev_numbers(p: &Path) -> Result<(i64, i64, LinuxDeviceType)> {
    let md = std::fs::metadata(p).map_err(|source| HostConfigError::Device {
        path: p.to_path_buf(),
        source,
    })?;
    let ft = md.file_type();
    let t = if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_char_device() {
        LinuxDeviceType::C
    } else {
        return Err(HostConfigError::NotADevice {
            path: p.to_path_buf(),
        });
    };
    let rdev = md.rdev();
    Ok((libc::major(rdev) as i64, libc::minor(rdev) as i64, t))
}

/// The devices of one `--device` (dockerd's `devicesFromPath`): the node itself, or, for a
/// directory (`/dev/dri`), every device node below it, each at the same place under the path
/// in the container; (host path, container path).
fn custom_devices(host: &Path, inside: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let not_found = |e: HostConfigError| match e {
        HostConfigError::Device { source, .. } => HostConfigError::DeviceInfo {
            path: host.display().to_string(),
            source,
        },
        HostConfigError::NotADevice { .. } => HostConfigError::DeviceInfo {
            path: host.display().to_string(),
            source: std::io::Error::other("not a device node"),
        },
        e => e,
    };
    match dev_numbers(host) {
        Ok(_) => Ok(vec![(host.to_path_buf(), inside.to_path_buf())]),
        Err(e @ HostConfigError::NotADevice { .. }) if host.is_dir() => {
            let mut found = Vec::new();
            let mut dirs = vec![host.to_path_buf()];
            while let Some(dir) = dirs.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(ft) = entry.file_type() else { continue };
                    if ft.is_dir() {
                        dirs.push(path);
                    } else if ft.is_char_device() || ft.is_block_device() {
                        if let Ok(rel) = path.strip_prefix(host) {
                            found.push((path.clone(), inside.join(rel)));
                        }
                    }
                }
            }
            if found.is_empty() {
                return Err(not_found(e));
            }
            found.sort();
            Ok(found)
        }
        Err(e) => Err(not_found(e)),
    }
}

fn type_letter(t: LinuxDeviceType) -> &'static str {
    match t {
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C => "c",
        LinuxDeviceType::U => "u",
        LinuxDeviceType::P => "p",
        LinuxDeviceType::A => "a",
    }
}

/// Whether this host can limit swap (v1 `memsw` or v2 `swap.max`).
fn swap_accounting() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/memory.swap.max").exists()
}

/// The OCI `linux.resources` of Docker's resource fields (devices excepted).
pub fn resources(r: &Resources) -> Result<LinuxResources> {
    let mut out = LinuxResources::default();
    let mut mem = LinuxMemory::default();
    let mut any_mem = false;
    if r.memory > 0 {
        mem.set_limit(Some(r.memory));
        // Docker: unset swap = twice the memory; -1 = unlimited.
        let swap = match r.memory_swap {
            0 => r.memory * 2,
            s => s,
        };
        if swap_accounting() {
            mem.set_swap(Some(swap));
        }
        any_mem = true;
    }
    if r.memory_reservation > 0 {
        mem.set_reservation(Some(r.memory_reservation));
        any_mem = true;
    }
    if let Some(sw) = r.memory_swappiness.filter(|s| *s >= 0) {
        mem.set_swappiness(Some(sw as u64));
        any_mem = true;
    }
    if r.oom_kill_disable == Some(true) {
        mem.set_disable_oom_killer(Some(true));
        any_mem = true;
    }
    if any_mem {
        out.set_memory(Some(mem));
    }
    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.nano_cpus > 0 {
        cpu.set_period(Some(100_000));
        cpu.set_quota(Some(r.nano_cpus * 100_000 / 1_000_000_000));
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_shares > 0 {
        // As the kernel (v1) and runc (v2) do: outside 2..=262144 is clamped, not refused.
        let shares = r.cpu_shares.clamp(*CPU_SHARES.start(), *CPU_SHARES.end());
        if shares != r.cpu_shares {
            tracing::info!(
                "changing requested CpuShares of {} to the allowed {shares}",
                r.cpu_shares
            );
        }
        cpu.set_shares(Some(shares as u64));
        any_cpu = true;
    }
    if r.cpu_realtime_period > 0 {
        cpu.set_realtime_period(Some(r.cpu_realtime_period as u64));
        any_cpu = true;
    }
    if r.cpu_realtime_runtime > 0 {
        cpu.set_realtime_runtime(Some(r.cpu_realtime_runtime));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }
    // 0 (the only value below 1 left after the API's normalisation) is "max": an update
    // to unlimited must reach the cgroup.
    if let Some(l) = r.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(l);
        out.set_pids(Some(p));
    }
    let mut bio = LinuxBlockIo::default();
    let mut any_bio = false;
    if r.blkio_weight > 0 {
        bio.set_weight(Some(r.blkio_weight));
        any_bio = true;
    }
    let mut wd = Vec::new();
    for d in r.blkio_weight_device.iter().flatten() {
        let (ma, mi, _) = dev_numbers(Path::new(&d.path))?;
        wd.push(
            LinuxWeightDeviceBuilder::default()
                .major(ma)
                .minor(mi)
                .weight(d.weight)
                .build()
                .map_err(|e| invalid(format!("blkio weight device {}: {e}", d.path)))?,
        );
    }
    if !wd.is_empty() {
        bio.set_weight_device(Some(wd));
        any_bio = true;
    }
    for (which, devs) in throttle_lists(r) {
        let mut v = Vec::new();
        for d in devs {
            let (ma, mi, _) = dev_numbers(Path::new(&d.path))?;
            v.push(
                LinuxThrottleDeviceBuilder::default()
                    .major(ma)
                    .minor(mi)
                    .rate(d.rate)
                    .build()
                    .map_err(|e| invalid(format!("blkio device {}: {e}", d.path)))?,
            );
        }
        if v.is_empty() {
            continue;
        }
        any_bio = true;
        match which {
            "read_bps" => bio.set_throttle_read_bps_device(Some(v)),
            "write_bps" => bio.set_throttle_write_bps_device(Some(v)),
            "read_iops" => bio.set_throttle_read_iops_device(Some(v)),
            _ => bio.set_throttle_write_iops_device(Some(v)),
        };
    }
    if any_bio {
        out.set_block_io(Some(bio));
    }
    Ok(out)
}

/// Host devices for `--privileged` (every char/block device under `/dev`, as Docker).
fn host_devices() -> Vec<Device> {
    fn walk(dir: &Path, out: &mut Vec<Device>, depth: u32) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if depth < 3 && !matches!(name.to_str(), Some("pts" | "shm" | "mqueue" | "fd")) {
                    walk(&p, out, depth + 1);
                }
                continue;
            }
            let t = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if p == Path::new("/dev/console") || p == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = md.rdev();
            out.push(Device {
                path: p,
                typ: t.into(),
                major: libc::major(rdev) as i64,
                minor: libc::minor(rdev) as i64,
                file_mode: Some(md.mode() & 0o7777),
                uid: Some(0),
                gid: Some(0),
            });
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out, 0);
    out
}

/// The init pid of the running container a `container:<name>` mode of namespace `ns` names.
fn peer_pid(peers: &dyn Peers, ns: &'static str, name_or_id: &str) -> Result<i64> {
    let id = peers
        .id_of(name_or_id)
        .map_err(|e| HostConfigError::Peer(e.to_string()))?;
    peers
        .running(&id)
        .map(|(_, pid)| pid)
        .filter(|pid| *pid > 0)
        .ok_or(HostConfigError::PeerNotRunning { ns, id })
}

/// dockerd's sysctls of every container (`withCommonOptions`, before the request's own): the
/// NIS domain name, and in a network namespace of its own unprivileged ICMP echo sockets and
/// low ports (not in a user namespace, where ping sockets cannot be set up).
pub fn default_sysctls(spec: &mut Spec, domainname: &str, network_mode: &str) {
    let sysctl = &mut linux(spec).sysctl;
    if !domainname.is_empty() {
        sysctl.insert("kernel.domainname".into(), domainname.into());
    }
    if network_mode == "host" || network_mode.starts_with("container:") {
        return;
    }
    let exists = |k: &str| Path::new("/proc/sys").join(k.replace('.', "/")).exists();
    if !berth_util::userns::running_in_userns() && exists("net.ipv4.ping_group_range") {
        sysctl.insert("net.ipv4.ping_group_range".into(), "0 2147483647".into());
    }
    if exists("net.ipv4.ip_unprivileged_port_start") {
        sysctl.insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
    }
}

/// Keeps, replaces (`path`) or removes (`keep = false`) a namespace of the spec.
pub fn set_ns(spec: &mut Spec, typ: NamespaceType, path: Option<PathBuf>, keep: bool) {
    let ns = &mut linux(spec).namespaces;
    ns.retain(|n| n.typ != typ);
    if keep {
        ns.push(Namespace { typ, path });
    }
}

fn linux(spec: &mut Spec) -> &mut berth_runtime::spec::Linux {
    spec.linux.get_or_insert_with(Default::default)
}

fn resources_of(spec: &mut Spec) -> &mut LinuxResources {
    linux(spec).resources.get_or_insert_with(Default::default)
}

fn device_rules(spec: &mut Spec) -> &mut Vec<LinuxDeviceCgroup> {
    resources_of(spec)
        .devices_mut()
        .get_or_insert_with(Vec::new)
}

fn allow_rule(
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

fn bind(dest: &str, source: impl Into<PathBuf>, options: &[&str]) -> Mount {
    Mount {
        destination: dest.into(),
        typ: Some("bind".into()),
        source: Some(source.into()),
        options: options.iter().map(|o| o.to_string()).collect(),
        uid_mappings: vec![],
        gid_mappings: vec![],
    }
}

/// Applies `HostConfig` to the container's spec.
pub fn apply(spec: &mut Spec, hc: &HostConfig, peers: &dyn Peers) -> Result<()> {
    let privileged = hc.privileged;
    let caps = capabilities(hc, privileged)?;
    let process = spec.process.get_or_insert_with(Default::default);
    process.capabilities = Some(oci_capabilities(&caps));
    process.no_new_privileges = no_new_privileges(hc);
    if hc.oom_score_adj != 0 {
        process.oom_score_adj = Some(hc.oom_score_adj as i32);
    }
    // seccomp: the default profile for the final capability set, a given one, or none.
    // The default spec already holds the profile for the default capabilities: recompute only
    // when the set differs (it is on every container start).
    let default_set = caps.len() == DEFAULT_CAPS.len()
        && DEFAULT_CAPS.iter().all(|c| caps.iter().any(|x| x == c));
    let mut seccomp = match linux(spec).seccomp.take() {
        Some(s) if default_set => Some(s),
        _ => Some(berth_runtime::profiles::default_seccomp(&caps)),
    };
    let mut custom_seccomp = false;
    for o in list(&hc.security_opt) {
        if let Some(v) = o
            .strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
        {
            custom_seccomp = v != "unconfined";
            seccomp = if v == "unconfined" {
                None
            } else {
                Some(DockerSeccomp::parse(v)?.into_oci())
            };
        }
    }
    // Privileged containers drop the default profile, not one of the request's (moby#47499).
    if privileged && !custom_seccomp {
        seccomp = None;
    }
    linux(spec).seccomp = seccomp;
    let writable = writable_cgroups(hc);
    for m in spec.mounts.iter_mut() {
        if m.typ.as_deref() == Some("cgroup") || m.destination == Path::new("/sys/fs/cgroup") {
            m.options.retain(|o| o != "ro" && o != "rw");
            m.options.push(if writable { "rw" } else { "ro" }.into());
        }
    }
    if privileged {
        linux(spec).masked_paths.clear();
        linux(spec).readonly_paths.clear();
        for m in spec.mounts.iter_mut() {
            if m.destination == Path::new("/sys") {
                m.options.retain(|o| o != "ro");
                m.options.push("rw".into());
            }
        }
        linux(spec).devices = host_devices();
        *device_rules(spec) = vec![allow_rule(None, None, None, "rwm")];
    } else {
        if let Some(m) = &hc.masked_paths {
            linux(spec).masked_paths.clone_from(m);
        }
        if let Some(m) = &hc.readonly_paths {
            linux(spec).readonly_paths.clone_from(m);
        }
    }
    for d in hc.devices.iter().flatten() {
        let host = &d.path_on_host;
        let inside = if d.path_in_container.is_empty() {
            host
        } else {
            &d.path_in_container
        };
        let perms = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            &d.cgroup_permissions
        };
        for (host, inside) in custom_devices(Path::new(host), Path::new(inside))? {
            let (ma, mi, t) = dev_numbers(&host)?;
            let mode = std::fs::metadata(&host)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o666);
            linux(spec).devices.push(Device {
                path: inside,
                typ: type_letter(t).into(),
                major: ma,
                minor: mi,
                file_mode: Some(mode),
                uid: Some(0),
                gid: Some(0),
            });
            device_rules(spec).push(allow_rule(Some(t), Some(ma), Some(mi), perms));
        }
    }
    for rule in list(&hc.device_cgroup_rules) {
        // "c 1:3 mr", "a *:* rwm"
        let bad = || HostConfigError::DeviceRule(rule.clone());
        let f: Vec<&str> = rule.split_whitespace().collect();
        let [t, nums, access] = f[..] else {
            return Err(bad());
        };
        let t = match t {
            "a" => LinuxDeviceType::A,
            "b" => LinuxDeviceType::B,
            "c" => LinuxDeviceType::C,
            _ => return Err(bad()),
        };
        let (ma, mi) = nums.split_once(':').ok_or_else(bad)?;
        let n = |s: &str| -> Result<Option<i64>> {
            if s == "*" {
                Ok(None)
            } else {
                s.parse::<i64>().map(Some).map_err(|_| bad())
            }
        };
        device_rules(spec).push(allow_rule(Some(t), n(ma)?, n(mi)?, access));
    }
    let res = resources(&hc.resources())?;
    let target = resources_of(spec);
    if let Some(m) = res.memory() {
        target.set_memory(Some(*m));
    }
    if let Some(c) = res.cpu() {
        target.set_cpu(Some(c.clone()));
    }
    if let Some(p) = res.pids() {
        target.set_pids(Some(*p));
    }
    if let Some(b) = res.block_io() {
        target.set_block_io(Some(b.clone()));
    }
    if hc.readonly_rootfs {
        spec.root.get_or_insert_with(Default::default).readonly = true;
    }
    let rlimits = rlimits(hc)?;
    if !rlimits.is_empty() {
        spec.process.get_or_insert_with(Default::default).rlimits = rlimits;
    }
    // The request's sysctls over the defaults ([`default_sysctls`]), as dockerd merges them.
    if let Some(m) = hc.sysctls.as_ref().filter(|m| !m.is_empty()) {
        linux(spec)
            .sysctl
            .extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    // Namespaces.
    if hc.pid_mode == "host" {
        set_ns(spec, NamespaceType::Pid, None, false);
    } else if let Some(c) = hc.pid_mode.strip_prefix("container:") {
        let pid = peer_pid(peers, "PID", c)?;
        set_ns(
            spec,
            NamespaceType::Pid,
            Some(format!("/proc/{pid}/ns/pid").into()),
            true,
        );
    }
    let ipc = hc.ipc_mode.as_str();
    let shm = hc.shm_size;
    let is = |m: &Mount, d: &str| m.destination == Path::new(d);
    let opts = ["rbind", "nosuid", "noexec", "nodev"];
    if ipc == "host" {
        // The host's /dev/mqueue when it has one mounted; else the spec's own mqueue mount,
        // which in the host's IPC namespace shows the same queues.
        let host_mqueue = Path::new("/dev/mqueue").is_dir();
        spec.mounts
            .retain(|m| !(is(m, "/dev/shm") || host_mqueue && is(m, "/dev/mqueue")));
        spec.mounts.push(bind("/dev/shm", "/dev/shm", &opts));
        if host_mqueue {
            spec.mounts.push(bind("/dev/mqueue", "/dev/mqueue", &opts));
        }
        set_ns(spec, NamespaceType::Ipc, None, false);
    } else if let Some(c) = ipc.strip_prefix("container:") {
        let pid = peer_pid(peers, "IPC", c)?;
        // A /dev/shm bound from the host (a CRI pod's, shared by its containers) stays.
        let bound = spec
            .mounts
            .iter()
            .any(|m| is(m, "/dev/shm") && m.typ.as_deref() == Some("bind"));
        if !bound {
            spec.mounts.retain(|m| !is(m, "/dev/shm"));
            spec.mounts
                .push(bind("/dev/shm", format!("/proc/{pid}/root/dev/shm"), &opts));
        }
        set_ns(
            spec,
            NamespaceType::Ipc,
            Some(format!("/proc/{pid}/ns/ipc").into()),
            true,
        );
    } else if ipc == "none" {
        spec.mounts.retain(|m| !is(m, "/dev/shm"));
    } else if shm > 0 {
        for m in spec.mounts.iter_mut().filter(|m| is(m, "/dev/shm")) {
            m.options = vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                format!("size={}k", (shm + 1023) / 1024),
            ];
        }
    }
    if hc.uts_mode == "host" {
        set_ns(spec, NamespaceType::Uts, None, false);
        spec.hostname = None;
    }
    if hc.cgroupns_mode == "private" {
        set_ns(spec, NamespaceType::Cgroup, None, true);
    }
    Ok(())
}

/// Docker's seccomp profile format (`defaultAction`, `syscalls[].names`, `archMap`...), a
/// superset of the OCI one: the OCI keys are kept, the rest (`archMap`, `includes`...) used
/// or dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DockerSeccomp {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Vec<String>,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<DockerSyscall>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    sub_architectures: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DockerSyscall {
    names: Vec<String>,
    name: String,
    action: String,
    args: Vec<DockerArg>,
    errno_ret: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct DockerArg {
    index: u32,
    value: u64,
    value_two: u64,
    op: String,
}

impl DockerSeccomp {
    fn parse(json: &str) -> Result<DockerSeccomp> {
        let v: serde_json::Value = berth_api::from_str(json).map_err(HostConfigError::Seccomp)?;
        if !v.is_object() {
            return Err(invalid("decoding seccomp profile failed: not an object"));
        }
        berth_api::from_value(v).map_err(HostConfigError::Seccomp)
    }

    fn into_oci(self) -> Seccomp {
        let mut arches = self.architectures;
        if arches.is_empty() {
            for m in self
                .arch_map
                .into_iter()
                .filter(|m| m.architecture == "SCMP_ARCH_X86_64")
            {
                arches.push(m.architecture);
                arches.extend(m.sub_architectures);
            }
        }
        Seccomp {
            default_action: if self.default_action.is_empty() {
                "SCMP_ACT_ERRNO".into()
            } else {
                self.default_action
            },
            default_errno_ret: self.default_errno_ret,
            architectures: arches,
            flags: vec![],
            listener_path: None,
            listener_metadata: None,
            syscalls: self
                .syscalls
                .into_iter()
                .map(|s| {
                    let mut names = s.names;
                    if !s.name.is_empty() {
                        names.push(s.name);
                    }
                    Syscall {
                        names,
                        action: s.action,
                        errno_ret: s.errno_ret,
                        args: s
                            .args
                            .into_iter()
                            .map(|a| SeccompArg {
                                index: a.index,
                                value: a.value,
                                value_two: a.value_two,
                                op: a.op,
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// The OCI rlimits of `--ulimit` (the container's process and its execs).
pub fn rlimits(hc: &HostConfig) -> Result<Vec<Rlimit>> {
    hc.ulimits
        .iter()
        .flatten()
        .map(|u: &Ulimit| {
            Ok(Rlimit {
                typ: rlimit_type(&u.name)?.into(),
                soft: rlimit_value(u.soft),
                hard: rlimit_value(u.hard),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPeers;
    impl Peers for NoPeers {
        fn running(&self, _: &str) -> Option<(String, i64)> {
            None
        }
        fn id_of(&self, n: &str) -> crate::error::Result<String> {
            Err(crate::error::EngineError::NotFound(n.into()))
        }
    }

    fn hc(v: serde_json::Value) -> HostConfig {
        berth_api::from_value(v).unwrap()
    }

    fn strings(l: &[&str]) -> Option<Vec<String>> {
        Some(l.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn caps() {
        let c = capabilities(
            &hc(serde_json::json!({"CapAdd": ["sys_admin"], "CapDrop": ["CAP_CHOWN", "net_raw"]})),
            false,
        )
        .unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_NET_RAW".to_string()));
        let all_but_kill = HostConfig {
            cap_drop: strings(&["ALL"]),
            cap_add: strings(&["KILL"]),
            ..Default::default()
        };
        assert_eq!(
            capabilities(&all_but_kill, false).unwrap(),
            vec!["CAP_KILL".to_string()]
        );
        let bogus = HostConfig {
            cap_add: strings(&["BOGUS"]),
            ..Default::default()
        };
        assert!(capabilities(&bogus, false).is_err());
        assert!(capabilities(&HostConfig::default(), true).unwrap().len() > 30);
    }

    #[test]
    fn checks() {
        let err = |v| check(&hc(v), 2).unwrap_err().to_string();
        assert!(err(serde_json::json!({"Memory": 1024})).contains("6MB"));
        assert!(err(serde_json::json!({"NanoCpus": 3_000_000_000i64})).contains("only 2 CPUs"));
        let bogus = HostConfig {
            security_opt: strings(&["bogus"]),
            ..Default::default()
        };
        assert!(check(&bogus, 2).is_err());
        assert!(check(
            &hc(serde_json::json!({"Sysctls": {"kernel.hostname": "x"}})),
            2
        )
        .is_err());
        assert!(check(
            &hc(serde_json::json!({"Sysctls": {"net.ipv4.ip_forward": "1"}})),
            2
        )
        .is_ok());
        assert!(check(
            &hc(serde_json::json!({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]})),
            2
        )
        .is_err());
        assert!(check(
            &hc(serde_json::json!({"Memory": 8388608, "SecurityOpt": ["no-new-privileges"]})),
            2
        )
        .is_ok());
        assert!(err(serde_json::json!({"SecurityOpt": ["seccomp={"]})).contains("seccomp"));
    }

    #[test]
    fn resource_mapping() {
        let r = resources(
            &hc(serde_json::json!({"Memory": 10485760, "MemorySwap": -1, "NanoCpus": 500000000, "PidsLimit": 20, "CpuShares": 512}))
                .resources(),
        )
        .unwrap();
        assert_eq!(r.memory().unwrap().limit(), Some(10485760));
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(50000));
        assert_eq!(cpu.period(), Some(100000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(r.pids().unwrap().limit(), 20);
        assert!(r.block_io().is_none());
    }

    fn spec() -> Spec {
        crate::spec::build(&crate::spec::DefaultSpec {
            args: &["sh".into()],
            env: &[],
            cwd: "/",
            uid: 0,
            gid: 0,
            additional_gids: &[],
            tty: false,
            hostname: "h",
            host_network: false,
            cgroups_path: "/x/y".into(),
            cgroup_mount: true,
            mounts: vec![],
        })
    }

    /// The device cgroup rules of the spec's resources.
    fn device_rules(s: &Spec) -> &[LinuxDeviceCgroup] {
        let resources = s.linux().resources.as_ref().unwrap();
        resources.devices().as_deref().unwrap()
    }

    #[test]
    fn apply_privileged_and_modes() {
        let mut s = spec();
        apply(
            &mut s,
            &hc(serde_json::json!({"Privileged": true, "PidMode": "host", "ReadonlyRootfs": true, "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]})),
            &NoPeers,
        )
        .unwrap();
        assert!(s.linux().seccomp.is_none());
        assert!(s.root.as_ref().unwrap().readonly);
        assert!(!s.has_namespace(NamespaceType::Pid));
        assert_eq!(s.process.as_ref().unwrap().rlimits[0].typ, "RLIMIT_NOFILE");
        assert!(device_rules(&s)[0].allow());
        assert!(apply(
            &mut s,
            &hc(serde_json::json!({"PidMode": "container:x"})),
            &NoPeers
        )
        .is_err());
    }

    #[test]
    fn apply_rules_seccomp_and_shm() {
        let mut s = spec();
        apply(
            &mut s,
            &hc(serde_json::json!({
                "DeviceCgroupRules": ["c 1:3 mr", "a *:* rwm"],
                "ShmSize": 1048576,
                "CapAdd": ["SYS_ADMIN"],
                "SecurityOpt": ["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\",\"archMap\":[{\"architecture\":\"SCMP_ARCH_X86_64\",\"subArchitectures\":[\"SCMP_ARCH_X86\"]}],\"syscalls\":[{\"name\":\"mkdir\",\"action\":\"SCMP_ACT_ERRNO\"}]}"],
                "OomScoreAdj": 100,
                "Sysctls": {"net.ipv4.ip_forward": "1"},
            })),
            &NoPeers,
        )
        .unwrap();
        let rules = device_rules(&s);
        assert!(!rules[0].allow(), "the default deny stays first");
        assert_eq!(rules[1].typ(), Some(LinuxDeviceType::C));
        assert_eq!(rules[1].major(), Some(1));
        assert_eq!(rules[1].access().as_deref(), Some("mr"));
        assert!(rules[2].major().is_none(), "* is any major");
        let shm = s
            .mounts
            .iter()
            .find(|m| m.destination == Path::new("/dev/shm"))
            .unwrap();
        assert!(shm.options.contains(&"size=1024k".to_string()));
        let sc = s.linux().seccomp.as_ref().unwrap();
        assert_eq!(sc.default_action, "SCMP_ACT_ALLOW");
        assert_eq!(sc.architectures[1], "SCMP_ARCH_X86");
        assert_eq!(sc.syscalls[0].names[0], "mkdir");
        let process = s.process.as_ref().unwrap();
        assert_eq!(process.oom_score_adj, Some(100));
        assert_eq!(
            s.linux()
                .sysctl
                .get("net.ipv4.ip_forward")
                .map(String::as_str),
            Some("1")
        );
        let caps = process.capabilities.as_ref().unwrap();
        assert!(caps.bounding.iter().flatten().any(|c| c == "CAP_SYS_ADMIN"));
        let mut s = spec();
        assert!(apply(
            &mut s,
            &hc(serde_json::json!({"DeviceCgroupRules": ["x 1:3 r"]})),
            &NoPeers
        )
        .is_err());
    }

    #[test]
    fn cpuset_lists_parse_as_dockerd() {
        for (list, want) in [
            ("0", Some(vec![(0, 0)])),
            ("0-3,5", Some(vec![(0, 3), (5, 5)])),
            ("7,1-2", Some(vec![(7, 7), (1, 2)])),
            ("", None),
            ("3-1", None),
            ("1-x", None),
            ("-1", None),
            ("+1", None),
            ("0,,1", None),
            ("0-", None),
        ] {
            assert_eq!(cpuset_ranges(list), want, "{list:?}");
        }
    }

    #[test]
    fn ulimits_minus_one_is_unlimited() {
        assert_eq!(rlimit_value(-1), libc::RLIM_INFINITY);
        assert_eq!(rlimit_value(0), 0);
        assert_eq!(rlimit_value(1024), 1024);
        let u = |soft, hard| Ulimit {
            name: "core".into(),
            soft,
            hard,
        };
        assert!(check_ulimit(&u(5, -1)).is_ok());
        assert!(check_ulimit(&u(-1, 5)).is_err());
        assert!(check_ulimit(&u(-1, -1)).is_ok());
    }
}
