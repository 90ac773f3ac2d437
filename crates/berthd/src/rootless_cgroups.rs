//! cgroups of a rootless daemon (see `rootless`).
//!
//! On a cgroup v2 host where systemd delegates a subtree to the user (`user@UID.service`,
//! found by `berth_cgroups::Hierarchy::delegation` from the daemon's own cgroup), containers
//! go below it — the default cgroup parent is `<subtree>/berth` — and limits, pause, stats
//! and update work as for root. Without one (cgroup v1 or hybrid hosts such as this one, or
//! no delegation) containers stay in the daemon's cgroup: limit flags are ignored with a
//! warning at create, as Podman does on cgroup v1 ("Resource limits are not supported and
//! ignored on cgroups V1 rootless systems"), and what needs a container's own cgroup
//! (pause, update of limits) is an error saying so.

use std::sync::OnceLock;

use berth_api::container::{HostConfig, Resources};
use berth_cgroups::Delegation;

use crate::error::{EngineError, Result};

/// The warning of a create whose limits are dropped.
pub const LIMITS_IGNORED: &str = "Resource limits are not supported and ignored on rootless \
    systems without a delegated cgroup v2 subtree (this host: cgroup v1 or hybrid, or none \
    delegated to the user)";

/// The subtree delegated to the daemon's user, detected once; `None` for a root daemon.
pub fn delegation() -> Option<&'static Delegation> {
    if !crate::rootless::active() {
        return None;
    }
    static DELEGATION: OnceLock<Option<Delegation>> = OnceLock::new();
    DELEGATION
        .get_or_init(|| {
            let h = berth_cgroups::Hierarchy::detect().ok()?;
            // Root of the daemon's namespace: the user's own files show as 0's.
            let d = h.delegation(rustix::process::geteuid().as_raw());
            match &d {
                Some(d) => tracing::info!(
                    subtree = %d.path,
                    controllers = %d.controllers.join(" "),
                    "rootless: containers go below the delegated cgroup subtree"
                ),
                None => tracing::warn!(
                    "rootless: no delegated cgroup v2 subtree: containers stay in the \
                     daemon's cgroup, limits are ignored, pause is unavailable"
                ),
            }
            d
        })
        .as_ref()
}

/// The default cgroup parent: `<subtree>/berth` for a rootless daemon with a delegated
/// subtree, `/berth` otherwise (a rootless daemon's containers then stay in its cgroup).
pub fn default_parent() -> String {
    parent_for(delegation())
}

fn parent_for(d: Option<&Delegation>) -> String {
    d.map_or_else(|| "/berth".to_string(), |d| d.child("berth"))
}

/// Whether the daemon's containers have cgroups of their own: always for root, with a
/// delegated subtree for a rootless daemon.
pub fn containers_have_cgroups() -> bool {
    !crate::rootless::active() || delegation().is_some()
}

/// At create: without cgroups of their own, the container's limits are dropped; the warning
/// for the client when there were any.
pub fn drop_limits(hc: &mut HostConfig) -> Result<Option<String>> {
    if containers_have_cgroups() {
        return Ok(None);
    }
    without_limits(hc)
}

fn without_limits(hc: &mut HostConfig) -> Result<Option<String>> {
    let r = hc.resources();
    let oci = crate::hostconfig::resources(&r)?;
    if !berth_runtime::rootless::requests_limits(&oci) {
        return Ok(None);
    }
    // What is not a cgroup limit stays: devices, rlimits, the parent.
    hc.set_resources(Resources {
        cgroup_parent: r.cgroup_parent,
        devices: r.devices,
        device_cgroup_rules: r.device_cgroup_rules,
        device_requests: r.device_requests,
        ulimits: r.ulimits,
        ..Resources::default()
    });
    Ok(Some(LIMITS_IGNORED.to_string()))
}

/// The error of what needs the container's own cgroup (`what`: "pause", "update the limits
/// of") where it has none.
pub fn needs_cgroup(what: &str, id: &str) -> Result<()> {
    if containers_have_cgroups() {
        return Ok(());
    }
    Err(EngineError::Conflict(format!(
        "cannot {what} container {id}: rootless containers have no cgroup on this host (no \
         cgroup v2 subtree is delegated to the user; cgroup v1 or hybrid hosts have none)"
    )))
}

/// The processes of a container without a cgroup of its own, from its init's pid: every
/// process in its pid namespace, or (sharing the daemon's) the init and its descendants.
/// Sorted.
pub fn processes_of(init: i32) -> Vec<i32> {
    let ns = |pid: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let Some(own_ns) = ns(&init.to_string()) else {
        return Vec::new();
    };
    let shares_ours = ns("self") == Some(own_ns);
    // (pid, parent) of every process.
    let all: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found: Vec<i32> = if shares_ours {
        let mut v = vec![init];
        let mut i = 0;
        while i < v.len() {
            let parent = v[i];
            v.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
            i += 1;
        }
        v
    } else {
        all.iter()
            .map(|(p, _)| *p)
            .filter(|p| ns(&p.to_string()) == Some(own_ns))
            .collect()
    };
    found.sort_unstable();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_dropped_other_resources_kept() {
        let mut hc = HostConfig {
            memory: 64 << 20,
            nano_cpus: 1_000_000_000,
            pids_limit: Some(10),
            cgroup_parent: "/p".into(),
            ulimits: Some(vec![berth_api::container::Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: 10,
            }]),
            ..HostConfig::default()
        };
        assert_eq!(
            without_limits(&mut hc).unwrap().as_deref(),
            Some(LIMITS_IGNORED)
        );
        assert_eq!((hc.memory, hc.nano_cpus, hc.pids_limit), (0, 0, None));
        assert_eq!(hc.cgroup_parent, "/p");
        assert_eq!(hc.ulimits.as_ref().map(Vec::len), Some(1));
        // Nothing to drop: no warning.
        assert_eq!(without_limits(&mut hc).unwrap(), None);
        let mut plain = HostConfig::default();
        assert_eq!(without_limits(&mut plain).unwrap(), None);
    }

    #[test]
    fn processes_by_pid_namespace_or_descent() {
        // This test's process shares the test's pid namespace: itself and its children.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let found = processes_of(me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            found.contains(&me) && found.contains(&(child.id() as i32)),
            "{found:?}"
        );
        assert!(!found.contains(&1), "{found:?}");
        assert_eq!(processes_of(-5), Vec::<i32>::new());
    }

    #[test]
    fn parent_inside_the_delegation() {
        assert_eq!(parent_for(None), "/berth");
        let d = Delegation {
            path: "/user.slice/user-1000.slice/user@1000.service".into(),
            dir: "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service".into(),
            controllers: vec!["memory".into(), "pids".into()],
        };
        assert_eq!(
            parent_for(Some(&d)),
            "/user.slice/user-1000.slice/user@1000.service/berth"
        );
    }
}
