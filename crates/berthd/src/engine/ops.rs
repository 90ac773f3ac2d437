//! Container operations beyond the life cycle: rename, restart, pause/unpause, resize, update,
//! top, stats, prune, changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use berth_api::container::{ChangeItem, PruneReport, TopResponse, UpdateConfig};
use berth_api::stats::{
    BlkioStatEntry, BlkioStats, CpuStats, CpuUsage, MemoryStats, NetworkStats, PidsStats,
    StatsResponse, ThrottlingData,
};
use berth_api::Filters;
use berth_shim::protocol::Request;
use berth_util::runtime::{Runtime, RuntimeError};

use super::{Container, Engine, EngineError, Result};
use crate::{names, shimio, util};

/// The host's cgroup hierarchy (detected once).
pub fn hierarchy() -> Result<&'static berth_cgroups::Hierarchy> {
    static H: OnceLock<berth_cgroups::Result<berth_cgroups::Hierarchy>> = OnceLock::new();
    H.get_or_init(berth_cgroups::Hierarchy::detect)
        .as_ref()
        .map_err(|e| EngineError::Internal(format!("detecting cgroups: {e}")))
}

/// Copies each resource an update sets (non-zero, non-null) into the container's, and says
/// which were set (dockerd's `UpdateContainer`, over the fields Berth applies).
macro_rules! merge_set {
    ($dst:expr, $src:expr, $changed:expr; $($f:ident),* $(,)?) => {$(
        if !is_unset(&$src.$f) {
            $dst.$f = $src.$f.clone();
            $changed.push(stringify!($f));
        }
    )*};
}

/// dockerd's `UpdateContainer` checks: `NanoCPUs` sets the CFS quota and period itself, so
/// neither kind can be updated while the other is set.
fn cpu_update_conflict(
    old: &berth_api::container::HostConfig,
    upd: &UpdateConfig,
) -> std::result::Result<(), &'static str> {
    if upd.nano_cpus > 0 && old.cpu_period > 0 {
        return Err(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        );
    }
    if upd.nano_cpus > 0 && old.cpu_quota > 0 {
        return Err(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        );
    }
    if upd.cpu_period > 0 && old.nano_cpus > 0 {
        return Err(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        );
    }
    if upd.cpu_quota > 0 && old.nano_cpus > 0 {
        return Err(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        );
    }
    Ok(())
}

/// Whether an update leaves a field alone (Docker: zero numbers, empty strings and lists,
/// `null`).
trait Unset {
    fn unset(&self) -> bool;
}
impl Unset for i64 {
    fn unset(&self) -> bool {
        *self == 0
    }
}
impl Unset for u16 {
    fn unset(&self) -> bool {
        *self == 0
    }
}
impl Unset for String {
    fn unset(&self) -> bool {
        self.is_empty()
    }
}
impl<T> Unset for Option<Vec<T>> {
    fn unset(&self) -> bool {
        self.as_ref().is_none_or(Vec::is_empty)
    }
}
impl Unset for Option<i64> {
    fn unset(&self) -> bool {
        self.is_none_or(|v| v == 0)
    }
}
impl Unset for Option<bool> {
    fn unset(&self) -> bool {
        self.is_none()
    }
}
fn is_unset(v: &impl Unset) -> bool {
    v.unset()
}

impl Engine {
    /// Runs one operation of the runtime (`pause`, `resume`, `update`) to completion off the
    /// async runtime, with `input` on its stdin.
    pub(crate) async fn runtime_call(
        &self,
        op: impl FnOnce(&Runtime) -> std::process::Command + Send + 'static,
        input: Option<Vec<u8>>,
    ) -> Result<()> {
        let rt = Runtime::new(&self.cfg.runtime, self.cfg.exec_root.join("runtime"));
        tokio::task::spawn_blocking(move || rt.call(op(&rt), input.as_deref())).await??;
        Ok(())
    }

    fn running(&self, name_or_id: &str) -> Result<Container> {
        self.running_as(name_or_id, "Container")
    }

    /// The container if it runs; otherwise a conflict, `{noun} <id> is not running` (dockerd
    /// writes "Container" for kill, pause and top, "container" for exec).
    pub(crate) fn running_as(&self, name_or_id: &str, noun: &str) -> Result<Container> {
        let c = self.get(name_or_id)?;
        if !c.state.running {
            return Err(EngineError::Conflict(format!(
                "{noun} {} is not running",
                c.id
            )));
        }
        Ok(c)
    }

    /// `POST /containers/{id}/rename`.
    pub fn rename(&self, name_or_id: &str, new: &str) -> Result<()> {
        let new = new.strip_prefix('/').unwrap_or(new);
        if new.is_empty() {
            return Err(EngineError::BadRequest(
                "Neither old nor new names may be empty".into(),
            ));
        }
        if !names::valid(new) {
            return Err(EngineError::BadRequest(format!(
                "Error when allocating new name: Invalid container name (/{new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let full = format!("/{new}");
        let e = self.lookup(name_or_id)?;
        let (old, c) = {
            let map = self.map.lock().unwrap();
            let my_id = e.rec.lock().unwrap().id.clone();
            for (id, other) in map.iter().filter(|(id, _)| **id != my_id) {
                let o = other.rec.lock().unwrap();
                if o.name == full {
                    return Err(EngineError::Conflict(format!(
                        "Error when allocating new name: Conflict. The container name \"{full}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
                    )));
                }
            }
            let mut r = e.rec.lock().unwrap();
            if r.name == full {
                return Err(EngineError::Conflict(
                    "Renaming a container with the same name as its current name".into(),
                ));
            }
            let old = std::mem::replace(&mut r.name, full);
            self.persist(&r)?;
            (old, r.clone())
        };
        self.net.on_rename(&c.id, new);
        self.container_event(&c, "rename", &[("oldName", old.as_str())]);
        Ok(())
    }

    /// `POST /containers/{id}/restart`.
    pub async fn restart(
        self: &Arc<Self>,
        name_or_id: &str,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        e.manual_restart.store(true, Ordering::Relaxed);
        let stopped = self.stop(name_or_id, t, signal).await;
        e.manual_restart.store(false, Ordering::Relaxed);
        match stopped {
            Ok(()) | Err(EngineError::NotModified) => {}
            Err(e) => return Err(e),
        }
        self.start(name_or_id).await?;
        let c = self.get(name_or_id)?;
        self.container_event(&c, "restart", &[]);
        Ok(())
    }

    /// `POST /containers/{id}/pause` and `/unpause` (the runtime's freezer).
    pub async fn set_paused(&self, name_or_id: &str, pause: bool) -> Result<()> {
        // dockerd: unpause asks "paused?" before "running?".
        if !pause {
            let c = self.get(name_or_id)?;
            if !c.state.paused {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not paused",
                    c.id
                )));
            }
        }
        let c = self.running(name_or_id)?;
        if c.state.paused == pause {
            return Err(EngineError::Conflict(if pause {
                format!("Container {} is already paused", c.id)
            } else {
                format!("Container {} is not paused", c.id)
            }));
        }
        crate::rootless_cgroups::needs_cgroup(if pause { "pause" } else { "unpause" }, &c.id)?;
        let id = c.id.clone();
        self.runtime_call(
            move |rt| if pause { rt.pause(&id) } else { rt.resume(&id) },
            None,
        )
        .await?;
        let e = self.lookup(&c.id)?;
        let c = {
            let mut r = e.rec.lock().unwrap();
            // Its exit was recorded while the runtime froze its (empty) cgroup: nothing is
            // paused, and a record saying so would outlive the process (a stopped container
            // that reads as paused, which nothing can unpause).
            if pause && (!r.state.running || r.state.pid != c.state.pid) {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not running",
                    c.id
                )));
            }
            r.state.paused = pause;
            r.state.status = if pause { "paused" } else { "running" }.into();
            self.persist(&r)?;
            r.clone()
        };
        self.container_event(&c, if pause { "pause" } else { "unpause" }, &[]);
        Ok(())
    }

    /// `POST /containers/{id}/resize`.
    pub async fn resize(&self, name_or_id: &str, rows: u16, cols: u16) -> Result<()> {
        let c = self.running(name_or_id)?;
        shimio::call(
            &self.shim_socket(&c.id),
            Request::Resize {
                rows,
                cols,
                exec_id: None,
            },
        )
        .await
        .map(drop)
        .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// Before a read of a running container's log: has its shim copy what the process already
    /// wrote to its pipes into the log (`drain`), so that output written before the request is
    /// in the answer (dockerd's copier is as far along when its start returns). Bounded; a shim
    /// that does not answer (or does not know the request) leaves the log as it is.
    pub async fn drain_log(&self, c: &Container) {
        if !c.state.running || c.state.paused {
            return;
        }
        let socket = self.shim_socket(&c.id);
        let drain = shimio::call(&socket, Request::Drain);
        match tokio::time::timeout(std::time::Duration::from_secs(1), drain).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("draining the output of {}: {e}", c.id),
            Err(_) => tracing::debug!("draining the output of {}: no answer", c.id),
        }
    }

    /// `POST /containers/{id}/update`: resources and the restart policy; running containers
    /// get the new limits at once (a limit the kernel refuses is an error and nothing
    /// changes).
    pub async fn update(&self, name_or_id: &str, upd: &UpdateConfig) -> Result<Vec<String>> {
        if !upd.cgroup_parent.is_empty() {
            return Err(EngineError::BadRequest(
                "CgroupParent cannot be updated".into(),
            ));
        }
        if upd.kernel_memory != 0 {
            return Err(EngineError::BadRequest(
                "KernelMemory cannot be updated".into(),
            ));
        }
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let c = e.rec.lock().unwrap().clone();
        let mut hc = c.host_config.clone();
        cpu_update_conflict(&hc, upd)
            .map_err(|m| EngineError::Conflict(format!("Cannot update container {}: {m}", c.id)))?;
        let mut changed: Vec<&str> = Vec::new();
        merge_set!(hc, upd, changed;
            cpu_shares, memory, blkio_weight, blkio_weight_device, blkio_device_read_bps,
            blkio_device_write_bps, blkio_device_read_iops, blkio_device_write_iops, cpu_period,
            cpu_quota, cpu_realtime_period, cpu_realtime_runtime, cpuset_cpus, cpuset_mems,
            memory_reservation, memory_swap, memory_swappiness, nano_cpus, oom_kill_disable,
        );
        // dockerd's pointer: any value is a change, 0 meaning unlimited.
        if upd.pids_limit.is_some() {
            hc.pids_limit = upd.pids_limit;
            changed.push("pids_limit");
        }
        if !changed.is_empty() {
            crate::rootless_cgroups::needs_cgroup("update the limits of", &c.id)?;
        }
        let set = |f: &str| changed.contains(&f);
        // Memory raised above the old swap limit: Docker raises swap with it.
        if set("memory") && !set("memory_swap") && hc.memory_swap > 0 && hc.memory_swap < hc.memory
        {
            hc.memory_swap = hc.memory * 2;
        }
        if !upd.restart_policy.name.is_empty() {
            if c.auto_remove() && !upd.restart_policy.is_none() {
                return Err(EngineError::Conflict(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container"
                        .into(),
                ));
            }
            super::create::validate_restart_policy(&upd.restart_policy)?;
            hc.restart_policy = upd.restart_policy.clone();
        }
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let warnings = crate::hostconfig::check(&hc, ncpus)?;
        if c.state.running && !changed.is_empty() {
            // The full resource set, so the runtime writes every limit consistently.
            let mut res = crate::hostconfig::resources(&hc.resources())?;
            if hc.memory_swap == -1 {
                if let Some(m) = res.memory_mut() {
                    m.set_swap(Some(-1));
                }
            }
            let data = serde_json::to_vec(&res).map_err(EngineError::encode("resources"))?;
            let id = c.id.clone();
            self.runtime_call(move |rt| rt.update(&id, Path::new("-")), Some(data))
                .await
                .map_err(|e| match e {
                    EngineError::Runtime(e @ RuntimeError::Failed { .. }) => {
                        EngineError::BadRequest(format!("Cannot update container {}: {e}", c.id))
                    }
                    o => o,
                })?;
        }
        let c = {
            let mut r = e.rec.lock().unwrap();
            r.host_config = hc;
            self.persist(&r)?;
            r.clone()
        };
        self.container_event(&c, "update", &[]);
        Ok(warnings)
    }

    pub(crate) fn cgroup_of(&self, c: &Container) -> Result<berth_cgroups::Cgroup> {
        crate::rootless_cgroups::needs_cgroup("read the cgroup of", &c.id)?;
        let h = hierarchy()?;
        berth_cgroups::Cgroup::open_existing(h, Some(&self.cgroups_path(c)), &c.id).map_err(
            |source| EngineError::Cgroup {
                what: format!("the cgroup of {}", c.id),
                source,
            },
        )
    }

    /// The host pids of a running container's processes.
    pub fn pids(&self, name_or_id: &str) -> Result<Vec<i32>> {
        let c = self.running(name_or_id)?;
        if !crate::rootless_cgroups::containers_have_cgroups() {
            return Ok(crate::rootless_cgroups::processes_of(c.state.pid as i32));
        }
        let cg = self.cgroup_of(&c)?;
        let mut p = cg.pids().map_err(|source| EngineError::Cgroup {
            what: format!("the processes of {}", c.id),
            source,
        })?;
        p.sort();
        Ok(p)
    }

    /// `GET /containers/{id}/top`: the host's `ps` for the container's processes.
    pub async fn top(&self, name_or_id: &str, ps_args: &str) -> Result<TopResponse> {
        let pids = self.pids(name_or_id)?;
        let args: Vec<String> = if ps_args.is_empty() {
            vec!["-ef".into()]
        } else {
            ps_args.split_whitespace().map(str::to_string).collect()
        };
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(EngineError::sys("running ps"))?;
        if !out.status.success() {
            return Err(EngineError::Internal(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }

    /// One stats sample in Docker's shape (`GET /containers/{id}/stats`).
    pub fn stats_sample(&self, name_or_id: &str) -> Result<StatsResponse> {
        let c = self.get(name_or_id)?;
        if !c.state.running {
            return Ok(StatsResponse {
                read: util::ZERO_TIME.into(),
                preread: util::ZERO_TIME.into(),
                name: c.name,
                id: c.id,
                ..Default::default()
            });
        }
        let now = util::now_rfc3339_nano();
        let cg = self.cgroup_of(&c)?;
        let s = cg.usage_stats().map_err(|source| EngineError::Cgroup {
            what: format!("the statistics of {}", c.id),
            source,
        })?;
        let mem_total = host_mem_total();
        let limit = if s.memory.usage.limit == 0 || s.memory.usage.limit > mem_total {
            mem_total
        } else {
            s.memory.usage.limit
        };
        let blk = |v: &[berth_cgroups::stats::BlkioEntry]| {
            Some(
                v.iter()
                    .map(|e| BlkioStatEntry {
                        major: e.major,
                        minor: e.minor,
                        op: e.op.clone(),
                        value: e.value,
                    })
                    .collect(),
            )
        };
        Ok(StatsResponse {
            read: now,
            preread: util::ZERO_TIME.into(),
            pids_stats: PidsStats {
                current: s.pids.current,
                limit: s.pids.limit,
            },
            blkio_stats: BlkioStats {
                io_service_bytes_recursive: blk(&s.blkio.io_service_bytes_recursive),
                io_serviced_recursive: blk(&s.blkio.io_serviced_recursive),
                ..Default::default()
            },
            cpu_stats: CpuStats {
                cpu_usage: CpuUsage {
                    total_usage: s.cpu.usage.total,
                    percpu_usage: Some(s.cpu.usage.percpu.clone()),
                    usage_in_kernelmode: s.cpu.usage.kernel,
                    usage_in_usermode: s.cpu.usage.user,
                },
                system_cpu_usage: system_cpu_usage(),
                online_cpus: online_cpus(),
                throttling_data: ThrottlingData {
                    periods: s.cpu.throttling.periods,
                    throttled_periods: s.cpu.throttling.throttled_periods,
                    throttled_time: s.cpu.throttling.throttled_time,
                },
            },
            memory_stats: MemoryStats {
                usage: s.memory.usage.usage,
                max_usage: s.memory.usage.max,
                stats: s.memory.raw.clone(),
                failcnt: s.memory.usage.failcnt,
                limit,
            },
            // No interfaces but `lo` without a network (and /proc/<pid>/net/dev is costly).
            networks: if c.host_config.network_mode == "none" {
                None
            } else {
                net_dev(c.state.pid)
            },
            name: c.name,
            id: c.id,
            ..Default::default()
        })
    }

    /// `POST /containers/prune`: removes stopped containers (label / until filters).
    pub async fn prune(self: &Arc<Self>, filters: &Filters) -> Result<PruneReport> {
        if let Some((k, _)) = filters
            .0
            .iter()
            .find(|(k, _)| !matches!(k.as_str(), "label" | "label!" | "until"))
        {
            return Err(EngineError::BadRequest(format!("invalid filter '{k}'")));
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        // To the nanosecond, as dockerd's `c.Created.After(until)`.
        let until = filters
            .get("until")
            .next()
            .and_then(crate::events::parse_time);
        for c in self.list() {
            if c.state.running || c.state.restarting {
                continue;
            }
            let labels_ok = filters.prune_labels_match(|v| c.matches_label(v));
            let created = berth_util::time::parse_rfc3339(&c.created)
                .map_or(0, |(s, n)| i64::from(n) + s.saturating_mul(1_000_000_000));
            if !labels_ok || until.is_some_and(|u| created > u) {
                continue;
            }
            // The writable layer's size is what removing the container frees (Docker's
            // SpaceReclaimed).
            let upper = self.container_upper(&c.id);
            let size = match upper {
                Some(u) => tokio::task::spawn_blocking(move || crate::volumes::dir_size(&u))
                    .await
                    .unwrap_or(0),
                None => 0,
            };
            if self.remove(&c.id, false, false).await.is_ok() {
                deleted.push(c.id);
                reclaimed += size;
            }
        }
        self.bus.emit("container", "prune", "", Default::default());
        Ok(PruneReport {
            containers_deleted: (!deleted.is_empty()).then_some(deleted),
            space_reclaimed: reclaimed,
        })
    }

    /// `GET /containers/{id}/changes`: the container's writable layer against its image.
    pub fn changes(&self, name_or_id: &str) -> Result<Vec<ChangeItem>> {
        let c = self.get(name_or_id)?;
        let sn = self.images.snapshotter()?;
        let Some(upper) = sn.container_upper(&c.id) else {
            return Err(EngineError::BadRequest(format!(
                "changes are not available for the {} driver",
                sn.driver()
            )));
        };
        let lowers = sn.container_lowers(&c.id)?;
        let mut out = Vec::new();
        walk_changes(&upper, Path::new("/"), &lowers, &mut out);
        hide_mount_points(&mut out);
        out.sort();
        Ok(out
            .into_iter()
            .map(|(path, kind)| ChangeItem { path, kind })
            .collect())
    }
}

/// What dockerd's init layer holds (the mount points the runtime needs, the files the daemon
/// binds): below the writable layer there, so never a change; here created in the writable
/// layer when the image lacks them.
pub(crate) const INIT_LAYER: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/.dockerenv",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/mtab",
];

/// Drops the init layer's paths (and what is below `/dev`, `/proc`, `/sys`) from a change
/// list, and their parent directories when nothing else in them changed.
fn hide_mount_points(out: &mut Vec<(String, u8)>) {
    let hidden = |p: &str| {
        INIT_LAYER.iter().any(|m| {
            p == *m || (matches!(*m, "/dev" | "/proc" | "/sys") && p.starts_with(&format!("{m}/")))
        })
    };
    let had: Vec<String> = out
        .iter()
        .filter(|(p, _)| hidden(p))
        .map(|(p, _)| p.clone())
        .collect();
    out.retain(|(p, _)| !hidden(p));
    let under = |dir: &str, p: &str| p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    let kept: Vec<String> = out.iter().map(|(p, _)| p.clone()).collect();
    out.retain(|(p, kind)| {
        *kind != 0 || !had.iter().any(|h| under(p, h)) || kept.iter().any(|k| under(p, k))
    });
}

fn exists_in(lowers: &[PathBuf], rel: &Path) -> bool {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    lowers
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join(rel)).is_ok())
}

fn walk_changes(dir: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<(String, u8)>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let r = rel.join(e.file_name());
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let name = r.display().to_string();
        if md.file_type().is_char_device() && md.rdev() == 0 {
            out.push((name, 2));
            continue;
        }
        let kind = if exists_in(lowers, &r) { 0 } else { 1 };
        out.push((name, kind));
        if md.is_dir() {
            let opaque = xattr_opaque(&p);
            if opaque || kind == 1 {
                // Everything below an added or opaque directory is added.
                walk_added(&p, &r, out);
            } else {
                walk_changes(&p, &r, lowers, out);
            }
        }
    }
}

fn walk_added(dir: &Path, rel: &Path, out: &mut Vec<(String, u8)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let r = rel.join(e.file_name());
        out.push((r.display().to_string(), 1));
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk_added(&e.path(), &r, out);
        }
    }
}

pub(super) fn xattr_opaque(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
        // SAFETY: valid NUL-terminated strings and a buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n == 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

/// Parses `ps` output, keeping the rows of `pids` (Docker's `top` response).
pub fn parse_ps(out: &str, pids: &[i32]) -> Result<TopResponse> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| EngineError::BadRequest("Couldn't find PID field in ps output".into()))?;
    let mut procs = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < titles.len() {
            continue;
        }
        let Ok(pid) = f[pid_col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        // The last column takes the rest of the line (the command and its arguments).
        let mut row: Vec<String> = f[..titles.len() - 1]
            .iter()
            .map(|s| s.to_string())
            .collect();
        row.push(f[titles.len() - 1..].join(" "));
        procs.push(row);
    }
    Ok(TopResponse {
        titles: titles.iter().map(|t| t.to_string()).collect(),
        processes: procs,
    })
}

/// Online CPUs of the host (read once).
fn online_cpus() -> u64 {
    static N: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no memory effects.
    *N.get_or_init(|| (unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }).max(1) as u64)
}

/// The host's memory (read once: stats samples every container each second).
fn host_mem_total() -> u64 {
    static M: OnceLock<u64> = OnceLock::new();
    *M.get_or_init(read_mem_total)
}

fn read_mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let kb: u64 = l
                .strip_prefix("MemTotal:")?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// The host's total CPU time in nanoseconds (`/proc/stat`), as Docker's `system_cpu_usage`.
pub fn system_cpu_usage() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum::<u64>()
                * (1_000_000_000 / hz)
        })
        .unwrap_or(0)
}

/// Per-interface counters of a container's network namespace (without `lo`).
pub(crate) fn net_dev(pid: i64) -> Option<BTreeMap<String, NetworkStats>> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut m = BTreeMap::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 16 {
            continue;
        }
        m.insert(
            name.to_string(),
            NetworkStats {
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            },
        );
    }
    (!m.is_empty()).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_no_changes() {
        let mut v: Vec<(String, u8)> = [
            ("/dev", 1),
            ("/dev/pts", 1),
            ("/proc", 1),
            ("/sys", 1),
            ("/etc", 0),
            ("/etc/hosts", 1),
            ("/etc/resolv.conf", 1),
            ("/tmp", 0),
            ("/tmp/x", 1),
            ("/devices", 1),
            ("/test", 1),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_string(), k))
        .collect();
        hide_mount_points(&mut v);
        let paths: Vec<&str> = v.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/tmp", "/tmp/x", "/devices", "/test"]);
        // A directory with a change of its own stays.
        let mut v = vec![
            ("/etc".to_string(), 0),
            ("/etc/hosts".to_string(), 1),
            ("/etc/passwd".to_string(), 0),
        ];
        hide_mount_points(&mut v);
        assert_eq!(v, [("/etc".to_string(), 0), ("/etc/passwd".to_string(), 0)]);
    }

    #[test]
    fn ps_rows() {
        let out = "UID          PID    PPID  C STIME TTY          TIME CMD\nroot           1       0  0 10:00 ?        00:00:00 /sbin/init\nroot          42       1  0 10:00 ?        00:00:00 sleep 100 now\n";
        let v = parse_ps(out, &[42]).unwrap();
        assert_eq!(v.titles[1], "PID");
        assert_eq!(v.processes.len(), 1);
        assert_eq!(v.processes[0][7], "sleep 100 now");
        assert!(parse_ps("A B\n", &[1]).is_err());
    }
}
