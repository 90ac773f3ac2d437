//! `ContainerStats`, `ListContainerStats`, `PodSandboxStats`, `ListPodSandboxStats`: the
//! cgroup counters (`berth_cgroups::Cgroup::usage_stats`, v1 or v2) in the CRI's shape as
//! containerd computes them: working set = usage − inactive file pages, available = limit −
//! working set, `usage_nano_cores` from the previous sample of the same container or pod
//! (kept in memory, so the first answer says 0); the writable layer's allocated bytes and
//! inodes from its snapshot; a pod's network counters from its namespace's interfaces.
//!
//! A pod's CPU, memory and process count are those of its cgroup parent (the kubelet's pod
//! cgroup) when it has one, else the sums over the sandbox and its containers.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_cgroups::{CgroupVersion, Stats};
use berth_cri::proto as pb;
use tonic::Status;

use super::store::{ContainerRecord, SandboxRecord};
use super::{blocking, hmap, Cri};
use crate::engine::Container;

/// The previous CPU sample of each container and pod: (timestamp ns, usage core-ns).
#[derive(Default)]
pub(crate) struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// containerd's `usage_nano_cores`: the usage between the previous sample and this one
    /// per second (0 for the first sample or a counter that went back).
    fn nano_cores(&self, id: &str, now: i64, usage: u64) -> u64 {
        let mut m = self.0.lock().unwrap();
        let rate = match m.get(id) {
            Some(&(t, u)) if now > t && usage >= u => {
                ((usage - u) as u128 * 1_000_000_000 / (now - t) as u128) as u64
            }
            _ => 0,
        };
        m.insert(id.to_string(), (now, usage));
        rate
    }

    /// Forgets the samples of what is gone.
    fn retain(&self, live: &dyn Fn(&str) -> bool) {
        self.0.lock().unwrap().retain(|k, _| live(k));
    }
}

fn u64v(value: u64) -> Option<pb::UInt64Value> {
    Some(pb::UInt64Value { value })
}

/// Memory limits at or above this are "no limit" (cgroup v1's unlimited is page-rounded
/// `i64::MAX`; containerd's threshold).
const NO_LIMIT: u64 = 1 << 62;

/// The CRI's memory figures of a cgroup sample (`v2`: the `memory.stat` key names of v2).
fn memory_usage(s: &Stats, v2: bool, ts: i64) -> pb::MemoryUsage {
    let raw = |v1: &str, v2name: &str| {
        s.memory
            .raw
            .get(if v2 { v2name } else { v1 })
            .copied()
            .unwrap_or(0)
    };
    let usage = s.memory.usage.usage;
    let inactive = raw("total_inactive_file", "inactive_file");
    let working_set = usage.saturating_sub(inactive);
    let limit = s.memory.usage.limit;
    let available = if limit > 0 && limit < NO_LIMIT {
        limit.saturating_sub(working_set)
    } else {
        0
    };
    pb::MemoryUsage {
        timestamp: ts,
        working_set_bytes: u64v(working_set),
        available_bytes: u64v(available),
        usage_bytes: u64v(usage),
        rss_bytes: u64v(raw("total_rss", "anon")),
        page_faults: u64v(raw("total_pgfault", "pgfault")),
        major_page_faults: u64v(raw("total_pgmajfault", "pgmajfault")),
        psi: None,
    }
}

/// Swap: usage beyond memory (the sample's swap is memory + swap, as cgroup v1's memsw).
fn swap_usage(s: &Stats, ts: i64) -> pb::SwapUsage {
    let used = s.memory.swap.usage.saturating_sub(s.memory.usage.usage);
    let limit = s.memory.swap.limit;
    let available = if limit > 0 && limit < NO_LIMIT {
        limit
            .saturating_sub(s.memory.usage.limit)
            .saturating_sub(used)
    } else {
        0
    };
    pb::SwapUsage {
        timestamp: ts,
        swap_available_bytes: u64v(available),
        swap_usage_bytes: u64v(used),
    }
}

/// Adds `b`'s counters that pod sums need into `a`.
fn add(a: &mut Stats, b: &Stats) {
    a.cpu.usage.total += b.cpu.usage.total;
    a.memory.usage.usage += b.memory.usage.usage;
    a.memory.swap.usage += b.memory.swap.usage;
    a.pids.current += b.pids.current;
    for (k, v) in &b.memory.raw {
        *a.memory.raw.entry(k.clone()).or_default() += v;
    }
}

/// A cgroup sample and whether it is cgroup v2's.
struct Sample {
    stats: Stats,
    v2: bool,
}

/// One interface's counters.
fn interface(name: &str, n: &berth_api::stats::NetworkStats) -> pb::NetworkInterfaceUsage {
    pb::NetworkInterfaceUsage {
        name: name.to_string(),
        rx_bytes: u64v(n.rx_bytes),
        rx_errors: u64v(n.rx_errors),
        tx_bytes: u64v(n.tx_bytes),
        tx_errors: u64v(n.tx_errors),
    }
}

impl Cri {
    /// The cgroup sample of a running engine container (None when it does not run).
    fn sample(&self, c: &Container) -> Result<Option<Sample>, Status> {
        if !c.state.running {
            return Ok(None);
        }
        let cg = match self.engine.cgroup_of(c) {
            Ok(cg) => cg,
            // It exited meanwhile.
            Err(_) if !self.engine.get(&c.id).is_ok_and(|c| c.state.running) => return Ok(None),
            Err(e) => return Err(super::status(e)),
        };
        let stats = cg
            .usage_stats()
            .map_err(|e| Status::internal(format!("the statistics of {}: {e}", c.id)))?;
        Ok(Some(Sample {
            stats,
            v2: cg.version() == CgroupVersion::V2,
        }))
    }

    fn cpu_usage(&self, key: &str, s: &Stats, ts: i64) -> pb::CpuUsage {
        let total = s.cpu.usage.total;
        pb::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: u64v(total),
            usage_nano_cores: u64v(self.cpu_samples.nano_cores(key, ts, total)),
            psi: None,
        }
    }

    /// The writable layer's usage (allocated bytes and inodes of the container's upper
    /// directory) on the image file system.
    fn writable_layer(&self, id: &str, ts: i64) -> pb::FilesystemUsage {
        let (mut used, mut inodes) = (0, 0);
        if let Some(upper) = self.engine.container_upper(id) {
            super::images::walk(&upper, &mut used, &mut inodes);
        }
        pb::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(pb::FilesystemIdentifier {
                mountpoint: self.image_fs_mountpoint(),
            }),
            used_bytes: u64v(used),
            inodes_used: u64v(inodes),
        }
    }

    /// The stats of one container (CPU, memory and swap only while it runs).
    fn stats_of(
        &self,
        rec: &ContainerRecord,
        c: &Container,
    ) -> Result<(pb::ContainerStats, Option<Sample>), Status> {
        let sample = self.sample(c)?;
        let ts = super::now_nanos();
        let mut out = pb::ContainerStats {
            attributes: Some(pb::ContainerAttributes {
                id: rec.id.clone(),
                metadata: Some(pb::ContainerMetadata {
                    name: rec.name.clone(),
                    attempt: rec.attempt,
                }),
                labels: hmap(&rec.labels),
                annotations: hmap(&rec.annotations),
            }),
            writable_layer: Some(self.writable_layer(&rec.id, ts)),
            ..Default::default()
        };
        if let Some(s) = &sample {
            out.cpu = Some(self.cpu_usage(&rec.id, &s.stats, ts));
            out.memory = Some(memory_usage(&s.stats, s.v2, ts));
            out.swap = Some(swap_usage(&s.stats, ts));
        }
        Ok((out, sample))
    }

    /// Containers' records and engine containers passing `keep`.
    fn containers_where(
        &self,
        keep: impl Fn(&ContainerRecord) -> bool,
    ) -> Vec<(ContainerRecord, Container)> {
        let mut v: Vec<(ContainerRecord, Container)> = self
            .store
            .containers()
            .into_iter()
            .filter(|r| keep(r))
            .filter_map(|r| {
                let c = self.engine.get(&r.id).ok()?;
                Some((r, c))
            })
            .collect();
        v.sort_by_key(|(r, _)| std::cmp::Reverse(r.created_at));
        v
    }

    pub(crate) async fn container_stats(
        self: &std::sync::Arc<Self>,
        req: pb::ContainerStatsRequest,
    ) -> Result<pb::ContainerStatsResponse, Status> {
        let me = self.clone();
        blocking(move || {
            let (rec, c) = me.container(&req.container_id)?;
            let (stats, _) = me.stats_of(&rec, &c)?;
            Ok(pb::ContainerStatsResponse { stats: Some(stats) })
        })
        .await
    }

    pub(crate) async fn list_container_stats(
        self: &std::sync::Arc<Self>,
        req: pb::ListContainerStatsRequest,
    ) -> Result<pb::ListContainerStatsResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let me = self.clone();
        blocking(move || {
            let list = me.containers_where(|r| {
                (f.id.is_empty() || r.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
                    && super::selects(&r.labels, &f.label_selector)
            });
            let mut stats = Vec::with_capacity(list.len());
            for (rec, c) in &list {
                stats.push(me.stats_of(rec, c)?.0);
            }
            let live: std::collections::HashSet<String> = me
                .store
                .containers()
                .into_iter()
                .map(|r| r.id)
                .chain(me.store.sandboxes().into_iter().map(|s| s.id))
                .collect();
            me.cpu_samples.retain(&|id| live.contains(id));
            Ok(pb::ListContainerStatsResponse { stats })
        })
        .await
    }

    /// The stats of a ready pod and its containers.
    fn pod_stats(&self, s: &SandboxRecord) -> Result<pb::PodSandboxStats, Status> {
        let pause = self.engine.get(&s.id).map_err(super::status)?;
        let mut containers = Vec::new();
        let mut samples = Vec::new();
        for (rec, c) in self.containers_where(|r| r.sandbox_id == s.id) {
            let (st, sample) = self.stats_of(&rec, &c)?;
            containers.push(st);
            samples.extend(sample);
        }
        samples.extend(self.sample(&pause)?);
        let pod = match self.pod_cgroup(s) {
            Some(cg) => Sample {
                stats: cg
                    .usage_stats()
                    .map_err(|e| Status::internal(format!("the statistics of {}: {e}", s.id)))?,
                v2: cg.version() == CgroupVersion::V2,
            },
            None => {
                let v2 = samples.first().is_some_and(|x| x.v2);
                let mut sum = Stats::default();
                for x in &samples {
                    add(&mut sum, &x.stats);
                }
                Sample { stats: sum, v2 }
            }
        };
        let ts = super::now_nanos();
        let network = (s.network_mode != pb::NamespaceMode::Node as i32 && pause.state.running)
            .then(|| crate::engine::ops::net_dev(pause.state.pid))
            .flatten()
            .map(|m| {
                let interfaces: Vec<pb::NetworkInterfaceUsage> =
                    m.iter().map(|(k, v)| interface(k, v)).collect();
                pb::NetworkUsage {
                    timestamp: ts,
                    default_interface: interfaces
                        .iter()
                        .find(|i| i.name == super::pods::POD_IFNAME)
                        .or(interfaces.first())
                        .cloned(),
                    interfaces,
                }
            });
        Ok(pb::PodSandboxStats {
            attributes: Some(pb::PodSandboxAttributes {
                id: s.id.clone(),
                metadata: Some(super::pods::pod_metadata(&s.meta)),
                labels: hmap(&s.labels),
                annotations: hmap(&s.annotations),
            }),
            linux: Some(pb::LinuxPodSandboxStats {
                cpu: Some(self.cpu_usage(&s.id, &pod.stats, ts)),
                memory: Some(memory_usage(&pod.stats, pod.v2, ts)),
                network,
                process: Some(pb::ProcessUsage {
                    timestamp: ts,
                    process_count: u64v(pod.stats.pids.current),
                }),
                containers,
                io: None,
            }),
            windows: None,
        })
    }

    /// The pod's own cgroup (the kubelet's cgroup parent), when it has one.
    fn pod_cgroup(&self, s: &SandboxRecord) -> Option<berth_cgroups::Cgroup> {
        if s.cgroup_parent.is_empty() {
            return None;
        }
        let h = crate::engine::ops::hierarchy().ok()?;
        let path = format!("/{}", s.cgroup_parent.trim_start_matches('/'));
        berth_cgroups::Cgroup::open_existing(h, Some(&path), &s.id).ok()
    }

    pub(crate) async fn pod_sandbox_stats(
        self: &std::sync::Arc<Self>,
        req: pb::PodSandboxStatsRequest,
    ) -> Result<pb::PodSandboxStatsResponse, Status> {
        let me = self.clone();
        blocking(move || {
            let s = me.sandbox(&req.pod_sandbox_id)?;
            if !me.sandbox_ready(&s) {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {} is not ready",
                    s.id
                )));
            }
            Ok(pb::PodSandboxStatsResponse {
                stats: Some(me.pod_stats(&s)?),
            })
        })
        .await
    }

    pub(crate) async fn list_pod_sandbox_stats(
        self: &std::sync::Arc<Self>,
        req: pb::ListPodSandboxStatsRequest,
    ) -> Result<pb::ListPodSandboxStatsResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let me = self.clone();
        blocking(move || {
            let mut pods: Vec<SandboxRecord> = me
                .store
                .sandboxes()
                .into_iter()
                .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
                .filter(|s| super::selects(&s.labels, &f.label_selector))
                .filter(|s| me.sandbox_ready(s))
                .collect();
            pods.sort_by_key(|s| std::cmp::Reverse(s.created_at));
            let mut stats = Vec::with_capacity(pods.len());
            for s in &pods {
                match me.pod_stats(s) {
                    Ok(p) => stats.push(p),
                    // A pod stopped meanwhile is left out, as containerd does.
                    Err(e) if !me.sandbox_ready(s) => {
                        tracing::debug!("stats of pod {}: {e}", s.id)
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(pb::ListPodSandboxStatsResponse { stats })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(usage: u64, limit: u64, raw: &[(&str, u64)]) -> Stats {
        let mut s = Stats::default();
        s.memory.usage.usage = usage;
        s.memory.usage.limit = limit;
        s.memory.swap.usage = usage + 10;
        s.memory.swap.limit = limit.saturating_add(100);
        s.memory.raw = raw.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        s
    }

    #[test]
    fn working_set_available_and_faults_v1_and_v2() {
        let v1 = sample(
            1000,
            4000,
            &[
                ("total_inactive_file", 300),
                ("total_rss", 500),
                ("total_pgfault", 7),
                ("total_pgmajfault", 2),
                ("inactive_file", 999),
            ],
        );
        let m = memory_usage(&v1, false, 5);
        assert_eq!(m.timestamp, 5);
        assert_eq!(m.working_set_bytes, u64v(700));
        assert_eq!(m.available_bytes, u64v(3300));
        assert_eq!(m.usage_bytes, u64v(1000));
        assert_eq!(m.rss_bytes, u64v(500));
        assert_eq!(m.page_faults, u64v(7));
        assert_eq!(m.major_page_faults, u64v(2));
        let v2 = sample(
            1000,
            u64::MAX,
            &[("inactive_file", 1200), ("anon", 40), ("pgfault", 3)],
        );
        let m = memory_usage(&v2, true, 5);
        // More inactive pages than usage: no working set, and no limit: nothing "available".
        assert_eq!(m.working_set_bytes, u64v(0));
        assert_eq!(m.available_bytes, u64v(0));
        assert_eq!(m.rss_bytes, u64v(40));
        assert_eq!(m.page_faults, u64v(3));
        let s = swap_usage(&v1, 5);
        assert_eq!(s.swap_usage_bytes, u64v(10));
        assert_eq!(s.swap_available_bytes, u64v(90));
    }

    #[test]
    fn nano_cores_between_samples() {
        let c = CpuSamples::default();
        assert_eq!(c.nano_cores("a", 1_000_000_000, 500), 0);
        // Half a core over two seconds.
        assert_eq!(c.nano_cores("a", 3_000_000_000, 1_000_000_500), 500_000_000);
        // A counter that went back (a new cgroup) starts over.
        assert_eq!(c.nano_cores("a", 4_000_000_000, 10), 0);
        assert_eq!(c.nano_cores("b", 4_000_000_000, 10), 0);
        c.retain(&|id| id == "b");
        assert_eq!(c.0.lock().unwrap().len(), 1);
    }
}
