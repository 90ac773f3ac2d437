//! Docker's `HostConfig` (security, resources, namespaces) turned into the OCI bundle.
//!
//! [`check`] runs at create time and refuses what Berth cannot honour, naming the field;
//! [`apply`] edits the `config.json` value at start time.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::spec::DEFAULT_CAPS;

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

fn str_list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        _ => vec![],
    }
}

/// The capability set of the container's processes: Docker's defaults with `CapAdd`/`CapDrop`
/// (names with or without `CAP_`, any case, `ALL`), or every capability when privileged.
pub fn capabilities(hc: &Value, privileged: bool) -> Result<Vec<String>, String> {
    let all = all_caps();
    if privileged {
        return Ok(all);
    }
    let known = |c: &str| c == "ALL" || all.iter().any(|a| a == c);
    let add: Vec<String> = str_list(&hc["CapAdd"])
        .iter()
        .map(|c| norm_cap(c))
        .collect();
    let drop: Vec<String> = str_list(&hc["CapDrop"])
        .iter()
        .map(|c| norm_cap(c))
        .collect();
    for c in add.iter().chain(drop.iter()) {
        if !known(c) {
            return Err(format!("unknown capability: {c:?}"));
        }
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

/// Whether `--security-opt no-new-privileges` is set.
pub fn no_new_privileges(hc: &Value) -> bool {
    str_list(&hc["SecurityOpt"]).iter().any(|o| {
        matches!(
            o.as_str(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        )
    })
}

/// `GroupAdd` (names or numbers) resolved against the container's `/etc/group`.
pub fn group_add(rootfs: &Path, hc: &Value) -> Result<Vec<u32>, String> {
    let groups = str_list(&hc["GroupAdd"]);
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
                .ok_or_else(|| {
                    format!("Unable to find group {g}: no matching entries in group file")
                })
        })
        .collect()
}

fn num(hc: &Value, k: &str) -> i64 {
    hc[k].as_i64().unwrap_or(0)
}

const NAMESPACED_SYSCTL_PREFIXES: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "fs.mqueue.",
    "net.",
];

/// Create-time checks of `HostConfig` (Docker's messages where it has them). Returns warnings.
pub fn check(hc: &Value, ncpus: usize) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let privileged = hc["Privileged"].as_bool().unwrap_or(false);
    capabilities(hc, privileged)?;
    for o in str_list(&hc["SecurityOpt"]) {
        let (k, v) = o
            .split_once(['=', ':'])
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .unwrap_or((o.clone(), String::new()));
        match k.as_str() {
            "no-new-privileges" if matches!(v.as_str(), "" | "true" | "false") => {}
            "seccomp" if v == "unconfined" => {}
            "seccomp" => {
                let prof: Value = serde_json::from_str(&v)
                    .map_err(|e| format!("decoding seccomp profile failed: {e}"))?;
                if !prof.is_object() {
                    return Err("decoding seccomp profile failed: not an object".into());
                }
            }
            "apparmor" | "label" => warnings.push(format!(
                "security option {o:?} ignored: no LSM is in use on this host"
            )),
            _ => return Err(format!("invalid --security-opt: {o:?}")),
        }
    }
    let mem = num(hc, "Memory");
    if mem != 0 && mem < 6 * 1024 * 1024 {
        return Err("Minimum memory limit allowed is 6MB".into());
    }
    let swap = num(hc, "MemorySwap");
    if swap > 0 && mem == 0 {
        return Err(
            "You should always set the Memory limit when using Memoryswap limit, see usage".into(),
        );
    }
    if swap > 0 && swap < mem {
        return Err(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        );
    }
    let res = num(hc, "MemoryReservation");
    if mem > 0 && res > mem {
        return Err(
            "Minimum memory limit can not be less than memory reservation limit, see usage".into(),
        );
    }
    if let Some(sw) = hc["MemorySwappiness"].as_i64() {
        if !(-1..=100).contains(&sw) {
            return Err(format!(
                "Invalid value: {sw}, valid memory swappiness range is 0-100"
            ));
        }
    }
    let nano = num(hc, "NanoCpus");
    if nano != 0 {
        if num(hc, "CpuQuota") != 0 || num(hc, "CpuPeriod") != 0 {
            return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".into());
        }
        if nano < 0 || nano > ncpus as i64 * 1_000_000_000 {
            return Err(format!(
                "Range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available"
            ));
        }
    }
    let period = num(hc, "CpuPeriod");
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return Err(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
                .into(),
        );
    }
    let quota = num(hc, "CpuQuota");
    if quota > 0 && quota < 1000 {
        return Err("CPU cfs quota can not be less than 1ms (i.e. 1000)".into());
    }
    let w = num(hc, "BlkioWeight");
    if w != 0 && !(10..=1000).contains(&w) {
        return Err("Range of blkio weight is from 10 to 1000".into());
    }
    if let Some(o) = hc["OomScoreAdj"].as_i64() {
        if !(-1000..=1000).contains(&o) {
            return Err(format!(
                "Invalid value {o}, range for oom score adj is [-1000, 1000]"
            ));
        }
    }
    for u in hc["Ulimits"].as_array().into_iter().flatten() {
        let name = u["Name"].as_str().unwrap_or("");
        rlimit_type(name).ok_or_else(|| format!("invalid ulimit type: {name}"))?;
        if u["Soft"].as_i64().unwrap_or(0) > u["Hard"].as_i64().unwrap_or(0) {
            return Err(format!(
                "ulimit soft limit must be less than or equal to hard limit: {name}"
            ));
        }
    }
    let host_net = hc["NetworkMode"].as_str() == Some("host");
    if let Some(m) = hc["Sysctls"].as_object() {
        for k in m.keys() {
            let ok = NAMESPACED_SYSCTL_PREFIXES
                .iter()
                .any(|p| k == p.trim_end_matches('.') || k.starts_with(p));
            if !ok || (host_net && k.starts_with("net.")) {
                return Err(format!("sysctl {k:?} is not allowed"));
            }
        }
    }
    for k in [
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
    ] {
        let v = hc[k].as_str().unwrap_or("");
        let ok = match k {
            "PidMode" => v.is_empty() || v == "host" || v.starts_with("container:"),
            "IpcMode" => {
                matches!(v, "" | "private" | "shareable" | "host" | "none")
                    || v.starts_with("container:")
            }
            "UTSMode" => matches!(v, "" | "host"),
            "UsernsMode" => matches!(v, "" | "host"),
            _ => matches!(v, "" | "private" | "host"),
        };
        if !ok {
            return Err(format!("HostConfig.{k} {v:?} is not supported"));
        }
    }
    match hc["Runtime"].as_str().unwrap_or("") {
        "" | "runc" | "berth-runtime" | "berth" => {}
        r => return Err(format!("unknown or invalid runtime name: {r}")),
    }
    for d in hc["Devices"].as_array().into_iter().flatten() {
        let p = d["PathOnHost"].as_str().unwrap_or("");
        std::fs::metadata(p).map_err(|e| {
            format!("error gathering device information while adding custom device {p:?}: {e}")
        })?;
        let perms = d["CgroupPermissions"].as_str().unwrap_or("rwm");
        if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(format!("invalid device cgroup permissions: {perms:?}"));
        }
    }
    for k in [
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
        "BlkioWeightDevice",
    ] {
        for d in hc[k].as_array().into_iter().flatten() {
            let p = d["Path"].as_str().unwrap_or("");
            dev_numbers(Path::new(p))?;
        }
    }
    Ok(warnings)
}

fn rlimit_type(name: &str) -> Option<&'static str> {
    Some(match name {
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
        _ => return None,
    })
}

fn dev_numbers(p: &Path) -> Result<(u64, u64, char), String> {
    let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let ft = md.file_type();
    let t = if ft.is_block_device() {
        'b'
    } else if ft.is_char_device() {
        'c'
    } else {
        return Err(format!("{} is not a device", p.display()));
    };
    let rdev = md.rdev();
    Ok((libc::major(rdev) as u64, libc::minor(rdev) as u64, t))
}

/// The OCI `linux.resources` of Docker's resource fields.
pub fn resources(hc: &Value) -> Result<Value, String> {
    let mut r = serde_json::Map::new();
    let mut mem = serde_json::Map::new();
    let limit = num(hc, "Memory");
    if limit > 0 {
        mem.insert("limit".into(), json!(limit));
        let swap = num(hc, "MemorySwap");
        // Docker: unset swap = twice the memory; -1 = unlimited.
        let swap = match swap {
            0 => limit * 2,
            s => s,
        };
        if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            || Path::new("/sys/fs/cgroup/memory.swap.max").exists()
        {
            mem.insert("swap".into(), json!(swap));
        }
    }
    if num(hc, "MemoryReservation") > 0 {
        mem.insert("reservation".into(), json!(num(hc, "MemoryReservation")));
    }
    if let Some(sw) = hc["MemorySwappiness"].as_i64().filter(|s| *s >= 0) {
        mem.insert("swappiness".into(), json!(sw));
    }
    if hc["OomKillDisable"].as_bool() == Some(true) {
        mem.insert("disableOOMKiller".into(), json!(true));
    }
    if !mem.is_empty() {
        r.insert("memory".into(), Value::Object(mem));
    }
    let mut cpu = serde_json::Map::new();
    let nano = num(hc, "NanoCpus");
    if nano > 0 {
        cpu.insert("period".into(), json!(100_000));
        cpu.insert("quota".into(), json!(nano * 100_000 / 1_000_000_000));
    }
    if num(hc, "CpuPeriod") > 0 {
        cpu.insert("period".into(), json!(num(hc, "CpuPeriod")));
    }
    if num(hc, "CpuQuota") != 0 {
        cpu.insert("quota".into(), json!(num(hc, "CpuQuota")));
    }
    if num(hc, "CpuShares") > 0 {
        cpu.insert("shares".into(), json!(num(hc, "CpuShares")));
    }
    if num(hc, "CpuRealtimePeriod") > 0 {
        cpu.insert("realtimePeriod".into(), json!(num(hc, "CpuRealtimePeriod")));
    }
    if num(hc, "CpuRealtimeRuntime") > 0 {
        cpu.insert(
            "realtimeRuntime".into(),
            json!(num(hc, "CpuRealtimeRuntime")),
        );
    }
    for (k, o) in [("CpusetCpus", "cpus"), ("CpusetMems", "mems")] {
        if let Some(s) = hc[k].as_str().filter(|s| !s.is_empty()) {
            cpu.insert(o.into(), json!(s));
        }
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    if num(hc, "PidsLimit") > 0 {
        r.insert("pids".into(), json!({"limit": num(hc, "PidsLimit")}));
    }
    let mut bio = serde_json::Map::new();
    if num(hc, "BlkioWeight") > 0 {
        bio.insert("weight".into(), json!(num(hc, "BlkioWeight")));
    }
    let mut wd = Vec::new();
    for d in hc["BlkioWeightDevice"].as_array().into_iter().flatten() {
        let (ma, mi, _) = dev_numbers(Path::new(d["Path"].as_str().unwrap_or("")))?;
        wd.push(json!({"major": ma, "minor": mi, "weight": d["Weight"].as_i64().unwrap_or(0)}));
    }
    if !wd.is_empty() {
        bio.insert("weightDevice".into(), json!(wd));
    }
    for (k, o) in [
        ("BlkioDeviceReadBps", "throttleReadBpsDevice"),
        ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
        ("BlkioDeviceReadIOps", "throttleReadIOPSDevice"),
        ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice"),
    ] {
        let mut v = Vec::new();
        for d in hc[k].as_array().into_iter().flatten() {
            let (ma, mi, _) = dev_numbers(Path::new(d["Path"].as_str().unwrap_or("")))?;
            v.push(json!({"major": ma, "minor": mi, "rate": d["Rate"].as_u64().unwrap_or(0)}));
        }
        if !v.is_empty() {
            bio.insert(o.into(), json!(v));
        }
    }
    if !bio.is_empty() {
        r.insert("blockIO".into(), Value::Object(bio));
    }
    Ok(Value::Object(r))
}

/// Host devices for `--privileged` (every char/block device under `/dev`, as Docker).
fn host_devices() -> Vec<(String, u64, u64, char, u32)> {
    let mut out = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<(String, u64, u64, char, u32)>, depth: u32) {
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
                'c'
            } else if ft.is_block_device() {
                'b'
            } else {
                continue;
            };
            if p == Path::new("/dev/console") || p == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = md.rdev();
            out.push((
                p.display().to_string(),
                libc::major(rdev) as u64,
                libc::minor(rdev) as u64,
                t,
                md.mode() & 0o7777,
            ));
        }
    }
    walk(Path::new("/dev"), &mut out, 0);
    out
}

/// How to find another container's namespaces (`container:<name>` modes).
pub trait Peers {
    /// The init pid of a running container.
    fn pid_of(&self, name_or_id: &str) -> Result<i64, String>;
}

fn set_ns(spec: &mut Value, typ: &str, path: Option<String>, keep: bool) {
    let ns = spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces");
    ns.retain(|n| n["type"] != typ);
    if keep {
        match path {
            Some(p) => ns.push(json!({"type": typ, "path": p})),
            None => ns.push(json!({"type": typ})),
        }
    }
}

/// Applies `HostConfig` to the bundle's `config.json` value.
pub fn apply(spec: &mut Value, hc: &Value, peers: &dyn Peers) -> Result<(), String> {
    let privileged = hc["Privileged"].as_bool().unwrap_or(false);
    let caps = capabilities(hc, privileged)?;
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    spec["process"]["noNewPrivileges"] = json!(no_new_privileges(hc));
    if let Some(o) = hc["OomScoreAdj"].as_i64() {
        spec["process"]["oomScoreAdj"] = json!(o);
    }
    // seccomp: the default profile for the final capability set, a given one, or none.
    // `spec::build` already holds the profile for the default capabilities: recompute only
    // when the set differs (it is on every container start).
    let default_set = caps.len() == DEFAULT_CAPS.len()
        && DEFAULT_CAPS.iter().all(|c| caps.iter().any(|x| x == c));
    let mut seccomp = if default_set && spec["linux"]["seccomp"].is_object() {
        spec["linux"]["seccomp"].take()
    } else {
        serde_json::to_value(berth_runtime::profiles::default_seccomp(&caps)).unwrap_or(Value::Null)
    };
    for o in str_list(&hc["SecurityOpt"]) {
        if let Some(v) = o
            .strip_prefix("seccomp=")
            .or_else(|| o.strip_prefix("seccomp:"))
        {
            seccomp = if v == "unconfined" {
                Value::Null
            } else {
                docker_seccomp_to_oci(&serde_json::from_str(v).map_err(|e| e.to_string())?)
            };
        }
    }
    if privileged {
        seccomp = Value::Null;
    }
    if seccomp.is_null() {
        spec["linux"].as_object_mut().unwrap().remove("seccomp");
    } else {
        spec["linux"]["seccomp"] = seccomp;
    }
    if privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        for m in spec["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
                if let Some(opts) = m["options"].as_array_mut() {
                    opts.retain(|o| o != "ro");
                    opts.push(json!("rw"));
                }
            }
        }
        let mut devs = Vec::new();
        for (p, ma, mi, t, mode) in host_devices() {
            devs.push(json!({"path": p, "type": t.to_string(), "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}));
        }
        spec["linux"]["devices"] = json!(devs);
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    } else {
        if let Some(m) = hc["MaskedPaths"].as_array() {
            spec["linux"]["maskedPaths"] = json!(m);
        }
        if let Some(m) = hc["ReadonlyPaths"].as_array() {
            spec["linux"]["readonlyPaths"] = json!(m);
        }
    }
    // Devices.
    for d in hc["Devices"].as_array().into_iter().flatten() {
        let host = d["PathOnHost"].as_str().unwrap_or("");
        let inside = d["PathInContainer"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(host);
        let perms = d["CgroupPermissions"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("rwm");
        let (ma, mi, t) = dev_numbers(Path::new(host))?;
        let mode = std::fs::metadata(host)
            .map(|m| m.mode() & 0o7777)
            .unwrap_or(0o666);
        if !spec["linux"]["devices"].is_array() {
            spec["linux"]["devices"] = json!([]);
        }
        spec["linux"]["devices"].as_array_mut().unwrap().push(json!({"path": inside, "type": t.to_string(), "major": ma, "minor": mi, "fileMode": mode, "uid": 0, "gid": 0}));
        spec["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": t.to_string(), "major": ma, "minor": mi, "access": perms}));
    }
    for rule in str_list(&hc["DeviceCgroupRules"]) {
        // "c 1:3 mr", "a *:* rwm"
        let f: Vec<&str> = rule.split_whitespace().collect();
        if f.len() != 3 {
            return Err(format!("invalid device cgroup rule {rule:?}"));
        }
        let (ma, mi) = f[1]
            .split_once(':')
            .ok_or_else(|| format!("invalid device cgroup rule {rule:?}"))?;
        let n = |s: &str| -> Result<Value, String> {
            if s == "*" {
                Ok(Value::Null)
            } else {
                s.parse::<i64>()
                    .map(|v| json!(v))
                    .map_err(|_| format!("invalid device cgroup rule {rule:?}"))
            }
        };
        let mut r = json!({"allow": true, "type": f[0], "access": f[2]});
        if !n(ma)?.is_null() {
            r["major"] = n(ma)?;
        }
        if !n(mi)?.is_null() {
            r["minor"] = n(mi)?;
        }
        spec["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(r);
    }
    // Resources.
    if let Value::Object(res) = resources(hc)? {
        for (k, v) in res {
            spec["linux"]["resources"][k] = v;
        }
    }
    if hc["ReadonlyRootfs"].as_bool() == Some(true) {
        spec["root"]["readonly"] = json!(true);
    }
    let mut rl = Vec::new();
    for u in hc["Ulimits"].as_array().into_iter().flatten() {
        let name = u["Name"].as_str().unwrap_or("");
        let t = rlimit_type(name).ok_or_else(|| format!("invalid ulimit type: {name}"))?;
        rl.push(json!({"type": t, "soft": u["Soft"].as_u64().unwrap_or(0), "hard": u["Hard"].as_u64().unwrap_or(0)}));
    }
    if !rl.is_empty() {
        spec["process"]["rlimits"] = json!(rl);
    }
    if let Some(m) = hc["Sysctls"].as_object().filter(|m| !m.is_empty()) {
        spec["linux"]["sysctl"] = json!(m);
    }
    let shm = num(hc, "ShmSize");
    // Namespaces.
    let pid_mode = hc["PidMode"].as_str().unwrap_or("");
    if pid_mode == "host" {
        set_ns(spec, "pid", None, false);
    } else if let Some(c) = pid_mode.strip_prefix("container:") {
        let pid = peers.pid_of(c)?;
        set_ns(spec, "pid", Some(format!("/proc/{pid}/ns/pid")), true);
    }
    let ipc = hc["IpcMode"].as_str().unwrap_or("");
    let mounts = spec["mounts"].as_array_mut().unwrap();
    if ipc == "host" {
        mounts.retain(|m| m["destination"] != "/dev/shm" && m["destination"] != "/dev/mqueue");
        mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": ["rbind", "nosuid", "noexec", "nodev"]}));
        mounts.push(json!({"destination": "/dev/mqueue", "type": "bind", "source": "/dev/mqueue", "options": ["rbind", "nosuid", "noexec", "nodev"]}));
        set_ns(spec, "ipc", None, false);
    } else if let Some(c) = ipc.strip_prefix("container:") {
        let pid = peers.pid_of(c)?;
        mounts.retain(|m| m["destination"] != "/dev/shm");
        mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": format!("/proc/{pid}/root/dev/shm"), "options": ["rbind", "nosuid", "noexec", "nodev"]}));
        set_ns(spec, "ipc", Some(format!("/proc/{pid}/ns/ipc")), true);
    } else if ipc == "none" {
        mounts.retain(|m| m["destination"] != "/dev/shm");
    } else if shm > 0 {
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev/shm" {
                m["options"] = json!([
                    "nosuid",
                    "noexec",
                    "nodev",
                    "mode=1777",
                    format!("size={}k", (shm + 1023) / 1024)
                ]);
            }
        }
    }
    if hc["UTSMode"].as_str() == Some("host") {
        set_ns(spec, "uts", None, false);
        spec.as_object_mut().unwrap().remove("hostname");
    }
    if hc["CgroupnsMode"].as_str() == Some("private") {
        set_ns(spec, "cgroup", None, true);
    }
    Ok(())
}

/// Docker's seccomp profile format (`defaultAction`, `syscalls[].names`, `archMap`...) is a
/// superset of the OCI one: keep the OCI keys and drop the rest (`archMap`, `includes`...).
fn docker_seccomp_to_oci(p: &Value) -> Value {
    let mut out = json!({
        "defaultAction": p["defaultAction"].as_str().unwrap_or("SCMP_ACT_ERRNO"),
    });
    if let Some(e) = p["defaultErrnoRet"].as_u64() {
        out["defaultErrnoRet"] = json!(e);
    }
    let mut arches: Vec<Value> = p["architectures"].as_array().cloned().unwrap_or_default();
    if arches.is_empty() {
        for m in p["archMap"].as_array().into_iter().flatten() {
            if m["architecture"] == "SCMP_ARCH_X86_64" {
                arches.push(m["architecture"].clone());
                arches.extend(
                    m["subArchitectures"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
    }
    out["architectures"] = json!(arches);
    let mut sys = Vec::new();
    for s in p["syscalls"].as_array().into_iter().flatten() {
        let mut names: Vec<Value> = s["names"].as_array().cloned().unwrap_or_default();
        if let Some(n) = s["name"].as_str() {
            names.push(json!(n));
        }
        let mut e = json!({"names": names, "action": s["action"]});
        if !s["args"].is_null() {
            e["args"] = s["args"].clone();
        }
        if let Some(r) = s["errnoRet"].as_u64() {
            e["errnoRet"] = json!(r);
        }
        sys.push(e);
    }
    out["syscalls"] = json!(sys);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPeers;
    impl Peers for NoPeers {
        fn pid_of(&self, n: &str) -> Result<i64, String> {
            Err(format!("no {n}"))
        }
    }

    #[test]
    fn caps() {
        let c = capabilities(
            &json!({"CapAdd": ["sys_admin"], "CapDrop": ["CAP_CHOWN", "net_raw"]}),
            false,
        )
        .unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_NET_RAW".to_string()));
        let c = capabilities(&json!({"CapDrop": ["ALL"], "CapAdd": ["KILL"]}), false).unwrap();
        assert_eq!(c, vec!["CAP_KILL".to_string()]);
        assert!(capabilities(&json!({"CapAdd": ["BOGUS"]}), false).is_err());
        assert!(capabilities(&json!({}), true).unwrap().len() > 30);
    }

    #[test]
    fn checks() {
        assert!(check(&json!({"Memory": 1024}), 2)
            .unwrap_err()
            .contains("6MB"));
        assert!(check(&json!({"NanoCpus": 3_000_000_000i64}), 2)
            .unwrap_err()
            .contains("only 2 CPUs"));
        assert!(check(&json!({"SecurityOpt": ["bogus"]}), 2).is_err());
        assert!(check(&json!({"Sysctls": {"kernel.hostname": "x"}}), 2).is_err());
        assert!(check(&json!({"Sysctls": {"net.ipv4.ip_forward": "1"}}), 2).is_ok());
        assert!(check(
            &json!({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}),
            2
        )
        .is_err());
        assert!(check(
            &json!({"Memory": 8388608, "SecurityOpt": ["no-new-privileges"]}),
            2
        )
        .is_ok());
    }

    #[test]
    fn resource_mapping() {
        let r = resources(&json!({"Memory": 10485760, "MemorySwap": -1, "NanoCpus": 500000000, "PidsLimit": 20, "CpuShares": 512})).unwrap();
        assert_eq!(r["memory"]["limit"], 10485760);
        assert_eq!(r["cpu"]["quota"], 50000);
        assert_eq!(r["cpu"]["period"], 100000);
        assert_eq!(r["cpu"]["shares"], 512);
        assert_eq!(r["pids"]["limit"], 20);
    }

    #[test]
    fn apply_privileged_and_modes() {
        let mut s = crate::spec::build(&crate::spec::DefaultSpec {
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
        });
        apply(
            &mut s,
            &json!({"Privileged": true, "PidMode": "host", "ReadonlyRootfs": true, "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]}),
            &NoPeers,
        )
        .unwrap();
        assert!(s["linux"]["seccomp"].is_null());
        assert_eq!(s["root"]["readonly"], true);
        assert!(!s["linux"]["namespaces"].to_string().contains("\"pid\""));
        assert_eq!(s["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);
        assert!(apply(&mut s, &json!({"PidMode": "container:x"}), &NoPeers).is_err());
    }
}
