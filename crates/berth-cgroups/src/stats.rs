//! Resource usage statistics, shaped (and serialised) like runc's `events --stats` data
//! (`github.com/opencontainers/runc/types` `Stats`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// All statistics of one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU usage and throttling.
    pub cpu: Cpu,
    /// cpuset configuration.
    pub cpuset: CpuSet,
    /// Memory usage.
    pub memory: Memory,
    /// Number of tasks.
    pub pids: Pids,
    /// Block I/O.
    pub blkio: Blkio,
    /// Huge page usage per page size (e.g. `2MB`).
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

/// Huge pages of one size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hugetlb {
    /// Current usage in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// One block I/O counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlkioEntry {
    /// Device major.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// Operation (`Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// Counter value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block I/O counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blkio {
    /// Bytes transferred, per device and operation.
    #[serde(
        rename = "ioServiceBytesRecursive",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations, per device and operation.
    #[serde(
        rename = "ioServicedRecursive",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// Task counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pids {
    /// Number of tasks now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// The limit (0 = unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// CFS throttling counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(rename = "throttledPeriods", default, skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Total time throttled, in nanoseconds.
    #[serde(rename = "throttledTime", default, skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// CPU time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Total CPU time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Per-CPU total (cgroup v1 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Per-CPU kernel time (cgroup v1 only).
    #[serde(
        rename = "percpu_kernel",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub percpu_kernel: Vec<u64>,
    /// Per-CPU user time (cgroup v1 only).
    #[serde(rename = "percpu_user", default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// Time in kernel mode.
    #[serde(default)]
    pub kernel: u64,
    /// Time in user mode.
    #[serde(default)]
    pub user: u64,
}

/// CPU statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// Usage.
    pub usage: CpuUsage,
    /// Throttling.
    pub throttling: Throttling,
}

/// cpuset configuration (CPU and memory node lists, expanded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSet {
    /// CPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpus: Vec<u16>,
    /// Memory nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mems: Vec<u16>,
}

/// One memory counter set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEntry {
    /// Limit in bytes (`u64::MAX` = unlimited).
    #[serde(default)]
    pub limit: u64,
    /// Usage in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// Memory statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Page cache in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// Memory + swap (as in cgroup v1's memsw; on v2 computed as memory + swap).
    pub swap: MemoryEntry,
    /// Kernel memory (cgroup v1 only).
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (cgroup v1 only).
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// The raw `memory.stat` counters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Parse a cpuset list such as `0-3,7` into its members; bad tokens are skipped.
pub(crate) fn parse_cpu_list(s: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for tok in s.trim().split(',').filter(|t| !t.is_empty()) {
        match tok.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    if b >= a && b - a < 4096 {
                        out.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(v) = tok.parse() {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Parse v1 blkio lines (`8:0 Read 4096`, `Total 123`) into entries.
pub(crate) fn parse_blkio_v1(s: &str) -> Vec<BlkioEntry> {
    s.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                return None;
            }
            let (maj, min) = f[0].split_once(':')?;
            Some(BlkioEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                op: f[1].to_string(),
                value: f[2].parse().ok()?,
            })
        })
        .collect()
}

/// Parse v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`) into
/// (service bytes, serviced) entries with runc's `Read`/`Write`/`Discard` op names.
pub(crate) fn parse_io_stat_v2(s: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let Some((maj, min)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,7\n"), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<u16>::new());
        assert_eq!(parse_cpu_list("x,2,5-3"), vec![2]);
    }

    #[test]
    fn blkio_v1_lines() {
        let e = parse_blkio_v1("8:0 Read 4096\n8:0 Write 10\n8:0 Total 4106\nTotal 4106\n");
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
    }

    #[test]
    fn io_stat_v2() {
        let (b, i) = parse_io_stat_v2("8:16 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].op, "Write");
        assert_eq!(b[1].value, 200);
        assert_eq!(i[0].value, 1);
        assert_eq!(i[0].minor, 16);
    }

    #[test]
    fn json_field_names_follow_runc() {
        let mut s = Stats::default();
        s.cpu.usage.total = 5;
        s.cpu.usage.percpu = vec![2, 3];
        s.cpu.throttling.throttled_periods = 1;
        s.memory.kernel_tcp.limit = 7;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 1,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["cpu"]["usage"]["total"], 5);
        assert_eq!(v["cpu"]["usage"]["percpu"][1], 3);
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert!(v["cpu"]["usage"].get("percpu_kernel").is_none());
        assert_eq!(v["cpu"]["throttling"]["throttledPeriods"], 1);
        assert_eq!(v["memory"]["kernelTCP"]["limit"], 7);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0);
        assert_eq!(v["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
        assert!(v["blkio"].get("ioServicedRecursive").is_none());
        assert!(v["hugetlb"].is_object());
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }
}
