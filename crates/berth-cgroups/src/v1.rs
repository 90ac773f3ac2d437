//! cgroup v1 (and hybrid) resources, freezer and statistics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNetwork, LinuxResources,
};

use crate::cgroup::Cgroup;
use crate::devices;
use crate::error::{CgroupError, Result};
use crate::fsutil::{flat_keyed_get, parse_flat_keyed, read_u64, read_u64_or_zero, Files};
use crate::stats::{self, Hugetlb, Stats};

/// The directory of `controller`, or a [`CgroupError::ControllerMissing`] naming what was to be set.
fn need<'a>(cg: &'a Cgroup, controller: &str, resource: &str, value: &str) -> Result<&'a Path> {
    cg.v1_dir(controller)
        .ok_or_else(|| CgroupError::ControllerMissing {
            controller: controller.to_string(),
            resource: resource.to_string(),
            value: value.to_string(),
            path: PathBuf::from(cg.path()),
        })
}

pub(crate) fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<()> {
    let files = cg.files();
    // Refuse v2-only settings before changing anything.
    if let Some(u) = r.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        if let Some((k, v)) = keys.first() {
            return Err(CgroupError::UnifiedOnV1 {
                key: k.to_string(),
                value: v.to_string(),
                path: cg
                    .unified_dir()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(cg.path())),
                version: cg.version(),
            });
        }
    }
    if let Some(cpu) = r.cpu() {
        apply_cpuset(cg, &files, cpu)?;
    }
    if let Some(devs) = r.devices() {
        apply_devices(cg, &files, devs)?;
    }
    if let Some(m) = r.memory() {
        apply_memory(cg, &files, m)?;
    }
    if let Some(cpu) = r.cpu() {
        apply_cpu(cg, &files, cpu)?;
    }
    if let Some(p) = r.pids() {
        let v = crate::convert::pids_limit(p.limit());
        files.write(need(cg, "pids", "pids.limit", &v)?, "pids.max", &v)?;
    }
    if let Some(b) = r.block_io() {
        apply_blkio(cg, &files, b)?;
    }
    if let Some(h) = r.hugepage_limits() {
        apply_hugetlb(cg, &files, h)?;
    }
    if let Some(n) = r.network() {
        apply_network(cg, &files, n)?;
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        tracing::warn!(
            cgroup = cg.path(),
            "rdma limits are not supported and are ignored"
        );
    }
    Ok(())
}

fn apply_cpuset(cg: &Cgroup, files: &Files, cpu: &LinuxCpu) -> Result<()> {
    for (file, val) in [("cpuset.cpus", cpu.cpus()), ("cpuset.mems", cpu.mems())] {
        if let Some(v) = val.as_deref().filter(|v| !v.is_empty()) {
            files.write(need(cg, "cpuset", file, v)?, file, v)?;
        }
    }
    Ok(())
}

fn apply_devices(
    cg: &Cgroup,
    files: &Files,
    devs: &[oci_spec::runtime::LinuxDeviceCgroup],
) -> Result<()> {
    if devs.is_empty() {
        return Ok(());
    }
    match cg.v1_dir("devices") {
        Some(dir) => {
            let rules = devices::normalize(devs, dir)?;
            for (file, value) in devices::v1_writes(&rules) {
                files.write(dir, file, &value)?;
            }
            Ok(())
        }
        // Hybrid host without a v1 devices controller: the v2 device filter works on the
        // controller-less unified mount.
        None => match cg.unified_dir() {
            Some(dir) => devices::apply_device_filter(files, dir, devs),
            None => Err(CgroupError::ControllerMissing {
                controller: "devices".into(),
                resource: "devices".into(),
                value: format!("{} rules", devs.len()),
                path: PathBuf::from(cg.path()),
            }),
        },
    }
}

/// Write `memory.limit_in_bytes`, turning the kernel's EBUSY into a clear "below usage" error.
fn set_memory_limit(files: &Files, dir: &Path, limit: i64) -> Result<()> {
    if limit == 0 {
        return Ok(());
    }
    match files.write(dir, "memory.limit_in_bytes", &limit.to_string()) {
        Err(CgroupError::Write { path, source, .. })
            if source.raw_os_error() == Some(libc::EBUSY) =>
        {
            let usage = read_u64_or_zero(files, dir, "memory.usage_in_bytes").unwrap_or(0);
            let peak = read_u64_or_zero(files, dir, "memory.max_usage_in_bytes").unwrap_or(0);
            Err(CgroupError::MemoryLimitBelowUsage {
                path,
                value: limit,
                usage,
                peak,
            })
        }
        other => other,
    }
}

fn set_swap_limit(files: &Files, dir: &Path, swap: i64) -> Result<()> {
    if swap == 0 {
        return Ok(());
    }
    if swap == -1 && !dir.join("memory.memsw.limit_in_bytes").exists() {
        // No swap accounting: "unlimited" is already the case.
        return Ok(());
    }
    files.write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())
}

#[allow(deprecated)]
fn apply_memory(cg: &Cgroup, files: &Files, m: &LinuxMemory) -> Result<()> {
    if m.kernel().is_some() {
        tracing::warn!(
            cgroup = cg.path(),
            "memory.kernel is deprecated and ignored"
        );
    }
    if m.kernel_tcp().is_some() {
        tracing::warn!(
            cgroup = cg.path(),
            "memory.kernelTCP is deprecated and ignored"
        );
    }
    if m.use_hierarchy().is_some() {
        tracing::debug!(
            cgroup = cg.path(),
            "memory.useHierarchy ignored (always hierarchical)"
        );
    }
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    let wants_any = limit != 0
        || swap != 0
        || m.reservation().is_some_and(|r| r != 0)
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some();
    if !wants_any {
        return Ok(());
    }
    let desc = format!(
        "limit={limit} swap={swap} reservation={:?} swappiness={:?} disableOOMKiller={:?}",
        m.reservation(),
        m.swappiness(),
        m.disable_oom_killer()
    );
    let dir = need(cg, "memory", "memory", &desc)?;
    if limit < -1 || swap < -1 {
        return Err(CgroupError::InvalidValue {
            path: dir.join("memory.limit_in_bytes"),
            value: format!("limit={limit} swap={swap}"),
            reason: "memory limits must be positive, or -1 for unlimited".into(),
        });
    }
    if limit > 0 && swap > 0 && swap < limit {
        return Err(CgroupError::InvalidValue {
            path: dir.join("memory.memsw.limit_in_bytes"),
            value: swap.to_string(),
            reason: format!("memory+swap limit must be >= the memory limit {limit}"),
        });
    }
    // Unlimited memory with swap unset: unlimited swap too.
    if limit == -1 && swap == 0 && dir.join("memory.memsw.limit_in_bytes").exists() {
        swap = -1;
    }
    // The kernel requires memory.limit <= memsw.limit at every moment, so the write order depends on
    // whether we are raising or lowering (runc's setMemoryAndSwap).
    let mut done = false;
    if limit != 0 && swap != 0 {
        let cur = read_u64(files, dir, "memory.limit_in_bytes").unwrap_or(u64::MAX);
        if swap == -1 || cur < swap as u64 {
            files.write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
            set_memory_limit(files, dir, limit)?;
            done = true;
        }
    }
    if !done {
        set_memory_limit(files, dir, limit)?;
        set_swap_limit(files, dir, swap)?;
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        files.write(dir, "memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(CgroupError::InvalidValue {
                path: dir.join("memory.swappiness"),
                value: s.to_string(),
                reason: "swappiness must be between 0 and 100".into(),
            });
        }
        files.write(dir, "memory.swappiness", &s.to_string())?;
    }
    if let Some(d) = m.disable_oom_killer() {
        files.write(dir, "memory.oom_control", if d { "1" } else { "0" })?;
    }
    Ok(())
}

fn apply_cpu(cg: &Cgroup, files: &Files, c: &LinuxCpu) -> Result<()> {
    let any = c.shares().is_some_and(|s| s != 0)
        || c.quota().is_some_and(|q| q != 0)
        || c.period().is_some_and(|p| p != 0)
        || c.burst().is_some()
        || c.realtime_period().is_some_and(|p| p != 0)
        || c.realtime_runtime().is_some_and(|r| r != 0)
        || c.idle().is_some();
    if !any {
        return Ok(());
    }
    let desc = format!(
        "shares={:?} quota={:?} period={:?} burst={:?} rt={:?}/{:?} idle={:?}",
        c.shares(),
        c.quota(),
        c.period(),
        c.burst(),
        c.realtime_runtime(),
        c.realtime_period(),
        c.idle()
    );
    let dir = need(cg, "cpu", "cpu", &desc)?;
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        files.write(dir, "cpu.shares", &shares.to_string())?;
        let got = read_u64(files, dir, "cpu.shares")?;
        if got != shares {
            return Err(CgroupError::InvalidValue {
                path: dir.join("cpu.shares"),
                value: shares.to_string(),
                reason: format!("the kernel set {got} instead (cpu shares must be in 2..=262144)"),
            });
        }
    }
    // A shorter period can be refused (EINVAL) until the quota is lowered: retry it after the quota.
    let quota = c.quota().filter(|q| *q != 0);
    let mut period_pending = None;
    if let Some(p) = c.period().filter(|p| *p != 0) {
        match files.write(dir, "cpu.cfs_period_us", &p.to_string()) {
            Ok(()) => {}
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                period_pending = Some(p);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = quota {
        let v = if q < 0 {
            "-1".to_string()
        } else {
            q.to_string()
        };
        files.write(dir, "cpu.cfs_quota_us", &v)?;
        if let Some(p) = period_pending {
            files.write(dir, "cpu.cfs_period_us", &p.to_string())?;
        }
    }
    if let Some(b) = c.burst() {
        files.write(dir, "cpu.cfs_burst_us", &b.to_string())?;
    }
    if let Some(p) = c.realtime_period().filter(|p| *p != 0) {
        files.write(dir, "cpu.rt_period_us", &p.to_string())?;
    }
    if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
        files.write(dir, "cpu.rt_runtime_us", &r.to_string())?;
    }
    if let Some(i) = c.idle() {
        files.write(dir, "cpu.idle", &i.to_string())?;
    }
    Ok(())
}

fn apply_blkio(cg: &Cgroup, files: &Files, b: &LinuxBlockIo) -> Result<()> {
    let any = b.weight().is_some_and(|w| w != 0)
        || b.leaf_weight().is_some_and(|w| w != 0)
        || [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty());
    if !any {
        return Ok(());
    }
    let dir = need(cg, "blkio", "blockIO", &format!("{b:?}"))?;
    // CFQ is gone from modern kernels; BFQ exposes blkio.bfq.weight{,_device}.
    let bfq = dir.join("blkio.bfq.weight").exists();
    let (weight_file, weight_dev_file) = if bfq {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        files.write(dir, weight_file, &w.to_string())?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        if dir.join("blkio.leaf_weight").exists() {
            files.write(dir, "blkio.leaf_weight", &w.to_string())?;
        } else {
            tracing::warn!(
                cgroup = cg.path(),
                "blkio leafWeight is not supported by this kernel; ignored"
            );
        }
    }
    for wd in b.weight_device().iter().flatten() {
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            files.write(
                dir,
                weight_dev_file,
                &format!("{}:{} {}", wd.major(), wd.minor(), w),
            )?;
        }
        if let Some(w) = wd.leaf_weight().filter(|w| *w != 0) {
            if dir.join("blkio.leaf_weight_device").exists() {
                let v = format!("{}:{} {}", wd.major(), wd.minor(), w);
                files.write(dir, "blkio.leaf_weight_device", &v)?;
            } else {
                tracing::warn!(
                    cgroup = cg.path(),
                    "blkio leafWeight per device is not supported by this kernel; ignored"
                );
            }
        }
    }
    for (file, list) in [
        (
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ] {
        for td in list.iter().flatten() {
            files.write(
                dir,
                file,
                &format!("{}:{} {}", td.major(), td.minor(), td.rate()),
            )?;
        }
    }
    Ok(())
}

/// Validate a huge page size such as `2MB` (it becomes part of a file name).
pub(crate) fn check_page_size(dir: &Path, size: &str) -> Result<()> {
    let ok = !size.is_empty()
        && size.len() <= 8
        && size.chars().all(|c| c.is_ascii_alphanumeric())
        && size.ends_with('B');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidValue {
            path: dir.to_path_buf(),
            value: size.to_string(),
            reason: "hugepage size must look like 2MB or 1GB".into(),
        })
    }
}

fn apply_hugetlb(cg: &Cgroup, files: &Files, limits: &[LinuxHugepageLimit]) -> Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let first = format!("{}={}", limits[0].page_size(), limits[0].limit());
    let dir = need(cg, "hugetlb", "hugepageLimits", &first)?;
    for l in limits {
        check_page_size(dir, l.page_size())?;
        let v = l.limit().to_string();
        files.write(
            dir,
            &format!("hugetlb.{}.limit_in_bytes", l.page_size()),
            &v,
        )?;
        let rsvd = format!("hugetlb.{}.rsvd.limit_in_bytes", l.page_size());
        if dir.join(&rsvd).exists() {
            files.write(dir, &rsvd, &v)?;
        }
    }
    Ok(())
}

fn apply_network(cg: &Cgroup, files: &Files, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        match cg.v1_dir("net_cls") {
            Some(dir) => files.write(dir, "net_cls.classid", &id.to_string())?,
            None => tracing::warn!(
                cgroup = cg.path(),
                "net_cls is not mounted; network classID ignored"
            ),
        }
    }
    if let Some(prios) = n.priorities().as_ref().filter(|p| !p.is_empty()) {
        match cg.v1_dir("net_prio") {
            Some(dir) => {
                for p in prios {
                    files.write(
                        dir,
                        "net_prio.ifpriomap",
                        &format!("{} {}", p.name(), p.priority()),
                    )?;
                }
            }
            None => tracing::warn!(
                cgroup = cg.path(),
                "net_prio is not mounted; network priorities ignored"
            ),
        }
    }
    Ok(())
}

/// Freeze through `freezer.state`, retrying while it reads FREEZING (runc's strategy).
pub(crate) fn freeze(files: &Files, dir: &Path) -> Result<()> {
    let start = Instant::now();
    let mut state = String::new();
    for i in 0..1000 {
        if i % 50 == 49 {
            // An occasional thaw and short sleep helps when new processes keep appearing.
            let _ = files.write(dir, "freezer.state", "THAWED");
            std::thread::sleep(Duration::from_millis(10));
        }
        files.write(dir, "freezer.state", "FROZEN")?;
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_micros(10));
        }
        state = files.read(dir, "freezer.state")?.trim().to_string();
        match state.as_str() {
            "FROZEN" => return Ok(()),
            "FREEZING" => continue,
            _ => {
                return Err(CgroupError::Parse {
                    path: dir.join("freezer.state"),
                    content: state,
                })
            }
        }
    }
    let _ = files.write(dir, "freezer.state", "THAWED");
    Err(CgroupError::FreezeTimeout {
        path: dir.join("freezer.state"),
        state,
        waited_ms: start.elapsed().as_millis() as u64,
    })
}

/// Nanoseconds per USER_HZ tick (USER_HZ is 100 on Linux).
const NS_PER_TICK: u64 = 10_000_000;

fn read_entry(files: &Files, dir: &Path, prefix: &str) -> Result<stats::MemoryEntry> {
    let f = |name: &str| read_u64_or_zero(files, dir, &format!("{prefix}.{name}"));
    Ok(stats::MemoryEntry {
        limit: f("limit_in_bytes")?,
        usage: f("usage_in_bytes")?,
        max: f("max_usage_in_bytes")?,
        failcnt: f("failcnt")?,
    })
}

/// `full`: everything runc reports; otherwise only what Docker's stats API shows (no swap,
/// kernel or TCP memory entries, per-CPU user/kernel split, cpuset or hugetlb files): about half
/// the files, for `stats` streams that read every container once a second.
pub(crate) fn stats(cg: &Cgroup, full: bool) -> Result<Stats> {
    let files = cg.files();
    let mut s = Stats::default();
    if let Some(dir) = cg.v1_dir("cpuacct") {
        s.cpu.usage.total = read_u64_or_zero(&files, dir, "cpuacct.usage")?;
        if let Some(t) = files.read_opt(dir, "cpuacct.usage_percpu")? {
            s.cpu.usage.percpu = t
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        if let Some(t) = files.read_opt(dir, "cpuacct.stat")? {
            s.cpu.usage.user = flat_keyed_get(&t, "user")
                .unwrap_or(0)
                .saturating_mul(NS_PER_TICK);
            s.cpu.usage.kernel = flat_keyed_get(&t, "system")
                .unwrap_or(0)
                .saturating_mul(NS_PER_TICK);
        }
        let all = if full {
            files.read_opt(dir, "cpuacct.usage_all")?
        } else {
            None
        };
        if let Some(t) = all {
            for line in t.lines().skip(1) {
                let f: Vec<u64> = line
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                if f.len() == 3 {
                    s.cpu.usage.percpu_user.push(f[1]);
                    s.cpu.usage.percpu_kernel.push(f[2]);
                }
            }
        }
    }
    if let Some(dir) = cg.v1_dir("cpu") {
        if let Some(t) = files.read_opt(dir, "cpu.stat")? {
            s.cpu.throttling.periods = flat_keyed_get(&t, "nr_periods").unwrap_or(0);
            s.cpu.throttling.throttled_periods = flat_keyed_get(&t, "nr_throttled").unwrap_or(0);
            s.cpu.throttling.throttled_time = flat_keyed_get(&t, "throttled_time").unwrap_or(0);
        }
    }
    if let Some(dir) = cg.v1_dir("cpuset").filter(|_| full) {
        s.cpuset.cpus =
            stats::parse_cpu_list(&files.read_opt(dir, "cpuset.cpus")?.unwrap_or_default());
        s.cpuset.mems =
            stats::parse_cpu_list(&files.read_opt(dir, "cpuset.mems")?.unwrap_or_default());
    }
    if let Some(dir) = cg.v1_dir("memory") {
        s.memory.usage = read_entry(&files, dir, "memory")?;
        if full {
            s.memory.swap = read_entry(&files, dir, "memory.memsw")?;
            s.memory.kernel = read_entry(&files, dir, "memory.kmem")?;
            s.memory.kernel_tcp = read_entry(&files, dir, "memory.kmem.tcp")?;
        }
        if let Some(t) = files.read_opt(dir, "memory.stat")? {
            s.memory.raw = parse_flat_keyed(&t).into_iter().collect();
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
    }
    if let Some(dir) = cg.v1_dir("pids") {
        s.pids.current = read_u64_or_zero(&files, dir, "pids.current")?;
        let max = read_u64_or_zero(&files, dir, "pids.max")?;
        s.pids.limit = if max == u64::MAX { 0 } else { max };
    }
    if let Some(dir) = cg.v1_dir("blkio") {
        for prefix in ["blkio", "blkio.bfq", "blkio.throttle"] {
            let bytes = files
                .read_opt(dir, &format!("{prefix}.io_service_bytes_recursive"))?
                .map(|t| stats::parse_blkio_v1(&t))
                .unwrap_or_default();
            let ios = files
                .read_opt(dir, &format!("{prefix}.io_serviced_recursive"))?
                .map(|t| stats::parse_blkio_v1(&t))
                .unwrap_or_default();
            if !bytes.is_empty() || !ios.is_empty() {
                s.blkio.io_service_bytes_recursive = bytes;
                s.blkio.io_serviced_recursive = ios;
                break;
            }
        }
    }
    if let Some(dir) = cg.v1_dir("hugetlb").filter(|_| full) {
        for size in hugetlb_sizes(dir, ".limit_in_bytes") {
            let f = |n: &str| read_u64_or_zero(&files, dir, &format!("hugetlb.{size}.{n}"));
            s.hugetlb.insert(
                size.clone(),
                Hugetlb {
                    usage: f("usage_in_bytes")?,
                    max: f("max_usage_in_bytes")?,
                    failcnt: f("failcnt")?,
                },
            );
        }
    }
    Ok(s)
}

/// Page sizes that have `hugetlb.<size><suffix>` files in `dir` (reserved-page files excluded).
pub(crate) fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                    (!size.contains('.')).then(|| size.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
