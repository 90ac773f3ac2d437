//! Host facts for `/info` and `/version`, read once at start.

/// Facts that do not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct Static {
    pub id: String,
    pub kernel: String,
    pub os: String,
    pub os_version: String,
    pub arch: String,
    pub arch_uname: String,
    pub ncpu: i64,
    pub mem_total: i64,
    pub hostname: String,
    pub cgroup_version: String,
    pub rustc: String,
}

fn uname() -> (String, String, String) {
    let u = rustix::system::uname();
    (
        u.release().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
        u.nodename().to_string_lossy().into_owned(),
    )
}

fn os_release() -> (String, String) {
    let s = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let pretty = get("PRETTY_NAME");
    (
        if pretty.is_empty() {
            "Linux".into()
        } else {
            pretty
        },
        get("VERSION_ID"),
    )
}

fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Open descriptors of this process.
pub fn nfd() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

// `f_type`'s width differs between architectures.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn cgroup_version() -> String {
    // cgroup2 at /sys/fs/cgroup itself means pure v2; otherwise v1 (or hybrid).
    match rustix::fs::statfs("/sys/fs/cgroup") {
        Ok(s) if s.f_type as i64 == 0x6367_7270 => "2".into(),
        _ => "1".into(),
    }
}

impl Static {
    /// Reads the facts; `id` is the engine ID kept under the data root.
    pub fn read(data_root: &std::path::Path) -> Static {
        let (kernel, machine, hostname) = uname();
        let (os, os_version) = os_release();
        let idp = data_root.join("engine-id");
        let id = match std::fs::read_to_string(&idp) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                let h = crate::util::random_hex(16);
                let id = format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                );
                let _ = berth_image::fsutil::atomic_write(&idp, id.as_bytes());
                id
            }
        };
        let arch = match machine.as_str() {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
        .to_string();
        Static {
            id,
            kernel,
            os,
            os_version,
            arch,
            arch_uname: machine,
            ncpu: std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
            mem_total: mem_total(),
            hostname,
            cgroup_version: cgroup_version(),
            rustc: option_env!("BERTHD_RUSTC_VERSION")
                .unwrap_or("rustc")
                .to_string(),
        }
    }
}
