//! cgroup v2 resources, freezer and statistics.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use crate::convert;
use crate::devices;
use crate::error::{CgroupError, Result};
use crate::fsutil::{flat_keyed_get, parse_flat_keyed, read_u64_or_zero, Files};
use crate::stats::{self, Hugetlb, Stats};

/// Enable, in `dir`'s `cgroup.subtree_control`, every controller listed in its `cgroup.controllers`
/// that is not enabled yet. Failures are logged, not fatal (e.g. the no-internal-processes rule);
/// a later write of a limit then fails with a clear error.
pub(crate) fn enable_controllers(files: &Files, dir: &Path) {
    let available = files
        .read_opt(dir, "cgroup.controllers")
        .ok()
        .flatten()
        .unwrap_or_default();
    let enabled = files
        .read_opt(dir, "cgroup.subtree_control")
        .ok()
        .flatten()
        .unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    if files
        .write(dir, "cgroup.subtree_control", &missing.join(" "))
        .is_ok()
    {
        return;
    }
    // One at a time, so one refused controller does not block the others.
    for m in &missing {
        if let Err(e) = files.write(dir, "cgroup.subtree_control", m) {
            tracing::warn!(error = %e, "could not enable cgroup controller");
        }
    }
}

/// Write a v2 file; a missing file becomes "controller not available".
fn write(files: &Files, dir: &Path, file: &str, value: &str, resource: &str) -> Result<()> {
    match files.write(dir, file, value) {
        Err(CgroupError::Write { path, source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && dir.is_dir() =>
        {
            let controller = file.split('.').next().unwrap_or(file).to_string();
            Err(CgroupError::ControllerMissing {
                controller,
                resource: resource.to_string(),
                value: value.to_string(),
                path,
            })
        }
        other => other,
    }
}

pub(crate) fn apply(files: &Files, dir: &Path, r: &LinuxResources) -> Result<()> {
    if let Some(cpu) = r.cpu() {
        for (file, val) in [("cpuset.cpus", cpu.cpus()), ("cpuset.mems", cpu.mems())] {
            if let Some(v) = val.as_deref().filter(|v| !v.is_empty()) {
                write(files, dir, file, v, file)?;
            }
        }
        apply_cpu(files, dir, cpu)?;
    }
    if let Some(m) = r.memory() {
        apply_memory(files, dir, m)?;
    }
    if let Some(b) = r.block_io() {
        apply_io(files, dir, b)?;
    }
    if let Some(p) = r.pids() {
        write(
            files,
            dir,
            "pids.max",
            &convert::pids_limit(p.limit()),
            "pids.limit",
        )?;
    }
    for l in r.hugepage_limits().iter().flatten() {
        crate::v1::check_page_size(dir, l.page_size())?;
        let v = if l.limit() < 0 {
            "max".to_string()
        } else {
            l.limit().to_string()
        };
        write(
            files,
            dir,
            &format!("hugetlb.{}.max", l.page_size()),
            &v,
            "hugepageLimits",
        )?;
        let rsvd = format!("hugetlb.{}.rsvd.max", l.page_size());
        if dir.join(&rsvd).exists() {
            write(files, dir, &rsvd, &v, "hugepageLimits")?;
        }
    }
    if let Some(devs) = r.devices() {
        devices::apply_device_filter(files, dir, devs)?;
    }
    if r.network().is_some() {
        tracing::warn!(cgroup = %dir.display(), "network classID/priorities need cgroup v1 net_cls/net_prio; ignored on cgroup v2");
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        tracing::warn!(cgroup = %dir.display(), "rdma limits are not supported and are ignored");
    }
    if let Some(u) = r.unified() {
        apply_unified(files, dir, u)?;
    }
    Ok(())
}

fn apply_cpu(files: &Files, dir: &Path, c: &LinuxCpu) -> Result<()> {
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        let w = convert::cpu_shares_to_weight(shares);
        write(files, dir, "cpu.weight", &w.to_string(), "cpu.shares")?;
    }
    if let Some(idle) = c.idle() {
        write(files, dir, "cpu.idle", &idle.to_string(), "cpu.idle")?;
    }
    let quota = c.quota().filter(|q| *q != 0);
    let period = c.period().filter(|p| *p != 0);
    // A larger burst can be refused (EINVAL) until the quota is set: retry it afterwards.
    let mut burst_pending = None;
    if let Some(b) = c.burst() {
        match write(files, dir, "cpu.max.burst", &b.to_string(), "cpu.burst") {
            Ok(()) => {}
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                burst_pending = Some(b)
            }
            Err(e) => return Err(e),
        }
    }
    if quota.is_some() || period.is_some() {
        let existing = if quota.is_none() {
            files.read_opt(dir, "cpu.max")?
        } else {
            None
        };
        let existing_quota = existing
            .as_deref()
            .and_then(|s| s.split_whitespace().next());
        let v = convert::cpu_max(quota, period, existing_quota);
        write(files, dir, "cpu.max", &v, "cpu.quota/period")?;
        if let Some(b) = burst_pending {
            write(files, dir, "cpu.max.burst", &b.to_string(), "cpu.burst")?;
        }
    }
    if c.realtime_period().is_some_and(|p| p != 0) || c.realtime_runtime().is_some_and(|r| r != 0) {
        tracing::warn!(cgroup = %dir.display(), "realtime CPU scheduling limits are not supported on cgroup v2; ignored");
    }
    Ok(())
}

#[allow(deprecated)]
fn apply_memory(files: &Files, dir: &Path, m: &LinuxMemory) -> Result<()> {
    if m.kernel().is_some() {
        tracing::warn!(cgroup = %dir.display(), "memory.kernel is deprecated and ignored");
    }
    if m.kernel_tcp().is_some() {
        tracing::warn!(cgroup = %dir.display(), "memory.kernelTCP is deprecated and ignored");
    }
    if m.swappiness().is_some() {
        tracing::warn!(cgroup = %dir.display(), "memory.swappiness is not supported on cgroup v2; ignored");
    }
    if m.disable_oom_killer() == Some(true) {
        tracing::warn!(cgroup = %dir.display(), "disableOOMKiller is not supported on cgroup v2; ignored");
    }
    let limit = m.limit().unwrap_or(0);
    let swap = m.swap().unwrap_or(0);
    if limit < -1 {
        return Err(CgroupError::InvalidValue {
            path: dir.join("memory.max"),
            value: limit.to_string(),
            reason: "memory limit must be positive, or -1 for unlimited".into(),
        });
    }
    if m.check_before_update() == Some(true) && limit > 0 {
        let usage = read_u64_or_zero(files, dir, "memory.current")?;
        if usage > limit as u64 {
            return Err(CgroupError::MemoryLimitBelowUsage {
                path: dir.join("memory.max"),
                value: limit,
                usage,
                peak: read_u64_or_zero(files, dir, "memory.peak")?,
            });
        }
    }
    let swap_v2 =
        convert::memory_swap_to_v2(swap, limit).map_err(|reason| CgroupError::InvalidValue {
            path: dir.join("memory.swap.max"),
            value: swap.to_string(),
            reason: reason.to_string(),
        })?;
    let swap_str = match convert::num_to_v2(swap_v2) {
        // memory == swap: no swap at all.
        None if swap > 0 => Some("0".to_string()),
        other => other,
    };
    if let Some(v) = swap_str {
        match files.write(dir, "memory.swap.max", &v) {
            Ok(()) => {}
            // No swap accounting: "max" and "0" are already true.
            Err(CgroupError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && (v == "max" || v == "0") => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(v) = convert::num_to_v2(limit) {
        write(files, dir, "memory.max", &v, "memory.limit")?;
    }
    if let Some(v) = m.reservation().and_then(convert::num_to_v2) {
        write(files, dir, "memory.low", &v, "memory.reservation")?;
    }
    Ok(())
}

fn apply_io(files: &Files, dir: &Path, b: &LinuxBlockIo) -> Result<()> {
    let has_weight_devices = b.weight_device().as_ref().is_some_and(|v| !v.is_empty());
    let bfq = dir.join("io.bfq.weight").exists();
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        if bfq {
            write(
                files,
                dir,
                "io.bfq.weight",
                &w.to_string(),
                "blockIO.weight",
            )?;
        } else {
            let v = convert::blkio_weight_to_io_weight(w);
            write(files, dir, "io.weight", &v.to_string(), "blockIO.weight")?;
        }
    }
    if b.leaf_weight().is_some() {
        tracing::warn!(cgroup = %dir.display(), "blockIO.leafWeight is not supported on cgroup v2; ignored");
    }
    if has_weight_devices {
        if bfq {
            for wd in b.weight_device().iter().flatten() {
                if let Some(w) = wd.weight().filter(|w| *w != 0) {
                    let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                    write(files, dir, "io.bfq.weight", &v, "blockIO.weightDevice")?;
                }
            }
        } else {
            tracing::warn!(cgroup = %dir.display(), "per-device blockIO weights need the BFQ scheduler (io.bfq.weight); ignored");
        }
    }
    // One io.max line per device with all its limits.
    let mut per_dev: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
    for (key, list) in [
        ("rbps", b.throttle_read_bps_device()),
        ("wbps", b.throttle_write_bps_device()),
        ("riops", b.throttle_read_iops_device()),
        ("wiops", b.throttle_write_iops_device()),
    ] {
        for td in list.iter().flatten() {
            let rate = if td.rate() == 0 {
                "max".to_string()
            } else {
                td.rate().to_string()
            };
            per_dev
                .entry((td.major(), td.minor()))
                .or_default()
                .push(format!("{key}={rate}"));
        }
    }
    for ((maj, min), kv) in per_dev {
        let v = format!("{maj}:{min} {}", kv.join(" "));
        write(files, dir, "io.max", &v, "blockIO.throttle")?;
    }
    Ok(())
}

fn apply_unified(
    files: &Files,
    dir: &Path,
    u: &std::collections::HashMap<String, String>,
) -> Result<()> {
    let mut keys: Vec<_> = u.iter().collect();
    keys.sort();
    for (k, v) in keys {
        if k.is_empty() || k.contains('/') || k == "." || k == ".." || !k.contains('.') {
            return Err(CgroupError::InvalidValue {
                path: dir.join(k),
                value: v.clone(),
                reason: format!("{k:?} is not a cgroup v2 file name"),
            });
        }
        write(files, dir, k, v, &format!("unified[{k}]"))?;
    }
    Ok(())
}

/// Freeze via `cgroup.freeze` and wait until `cgroup.events` says `frozen 1`.
pub(crate) fn freeze(files: &Files, dir: &Path) -> Result<()> {
    files.write(dir, "cgroup.freeze", "1")?;
    let start = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut delay = Duration::from_millis(1);
    loop {
        if is_frozen(files, dir)? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            let _ = files.write(dir, "cgroup.freeze", "0");
            return Err(CgroupError::FreezeTimeout {
                path: dir.join("cgroup.events"),
                state: files
                    .read_opt(dir, "cgroup.events")?
                    .unwrap_or_default()
                    .replace('\n', "; "),
                waited_ms: start.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// `frozen 1` in `cgroup.events` (falls back to `cgroup.freeze` if there is no events file).
pub(crate) fn is_frozen(files: &Files, dir: &Path) -> Result<bool> {
    if let Some(ev) = files.read_opt(dir, "cgroup.events")? {
        if let Some(v) = flat_keyed_get(&ev, "frozen") {
            return Ok(v == 1);
        }
    }
    Ok(files
        .read_opt(dir, "cgroup.freeze")?
        .is_some_and(|s| s.trim() == "1"))
}

pub(crate) fn stats(files: &Files, dir: &Path) -> Result<Stats> {
    let mut s = Stats::default();
    if let Some(t) = files.read_opt(dir, "cpu.stat")? {
        let g = |k: &str| flat_keyed_get(&t, k).unwrap_or(0);
        s.cpu.usage.total = g("usage_usec").saturating_mul(1000);
        s.cpu.usage.user = g("user_usec").saturating_mul(1000);
        s.cpu.usage.kernel = g("system_usec").saturating_mul(1000);
        s.cpu.throttling.periods = g("nr_periods");
        s.cpu.throttling.throttled_periods = g("nr_throttled");
        s.cpu.throttling.throttled_time = g("throttled_usec").saturating_mul(1000);
    }
    let cpus = match files.read_opt(dir, "cpuset.cpus.effective")? {
        Some(c) => Some(c),
        None => files.read_opt(dir, "cpuset.cpus")?,
    };
    s.cpuset.cpus = stats::parse_cpu_list(&cpus.unwrap_or_default());
    let mems = match files.read_opt(dir, "cpuset.mems.effective")? {
        Some(c) => Some(c),
        None => files.read_opt(dir, "cpuset.mems")?,
    };
    s.cpuset.mems = stats::parse_cpu_list(&mems.unwrap_or_default());

    // Memory (runc's fs2 statMemory).
    let events = |f: &str, key: &str| -> Result<u64> {
        Ok(files
            .read_opt(dir, f)?
            .and_then(|t| flat_keyed_get(&t, key))
            .unwrap_or(0))
    };
    s.memory.usage = stats::MemoryEntry {
        usage: read_u64_or_zero(files, dir, "memory.current")?,
        limit: read_u64_or_zero(files, dir, "memory.max")?,
        max: read_u64_or_zero(files, dir, "memory.peak")?,
        failcnt: events("memory.events", "max")?,
    };
    let swap_usage = read_u64_or_zero(files, dir, "memory.swap.current")?;
    let swap_limit = read_u64_or_zero(files, dir, "memory.swap.max")?;
    // As in runc: report memory+swap like cgroup v1's memsw.
    s.memory.swap = stats::MemoryEntry {
        usage: swap_usage.saturating_add(s.memory.usage.usage),
        limit: if swap_limit == u64::MAX {
            u64::MAX
        } else {
            swap_limit.saturating_add(s.memory.usage.limit)
        },
        max: 0,
        failcnt: events("memory.swap.events", "fail")?,
    };
    if let Some(t) = files.read_opt(dir, "memory.stat")? {
        s.memory.raw = parse_flat_keyed(&t).into_iter().collect();
        s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    }

    s.pids.current = read_u64_or_zero(files, dir, "pids.current")?;
    let max = read_u64_or_zero(files, dir, "pids.max")?;
    s.pids.limit = if max == u64::MAX { 0 } else { max };

    if let Some(t) = files.read_opt(dir, "io.stat")? {
        let (bytes, ios) = stats::parse_io_stat_v2(&t);
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }

    for size in crate::v1::hugetlb_sizes(dir, ".max") {
        let usage = read_u64_or_zero(files, dir, &format!("hugetlb.{size}.current"))?;
        let failcnt = events(&format!("hugetlb.{size}.events"), "max")?;
        s.hugetlb.insert(
            size,
            Hugetlb {
                usage,
                max: 0,
                failcnt,
            },
        );
    }
    Ok(s)
}
