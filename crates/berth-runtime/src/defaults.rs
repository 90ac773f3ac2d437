//! The default `config.json` written by `berth-runtime spec` (runc's template).

pub fn default_spec_json() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Turns a spec into one an unprivileged user can run, as runc's `spec --rootless`
/// (`specconv.ToRootless`): a user namespace mapping `uid`/`gid` to 0 (one id each), the host's
/// network namespace (an unprivileged user cannot connect a new one to anything), `/sys` bound
/// from the host instead of a sysfs mount (sysfs needs a network namespace of the user
/// namespace's own), no `uid=`/`gid=` mount options (ids the namespace does not map) and no
/// cgroup resources.
pub fn to_rootless(spec: &mut serde_json::Value, uid: u32, gid: u32) {
    use serde_json::json;
    let linux = &mut spec["linux"];
    if let Some(ns) = linux.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
        ns.retain(|n| !matches!(n["type"].as_str(), Some("network" | "user")));
        ns.push(json!({"type": "user"}));
    }
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    if let Some(l) = linux.as_object_mut() {
        l.remove("resources");
    }
    if let Some(mounts) = spec.get_mut("mounts").and_then(|m| m.as_array_mut()) {
        for m in mounts.iter_mut() {
            let dest = m["destination"].as_str().unwrap_or("");
            if std::path::Path::new(dest) == std::path::Path::new("/sys") {
                *m = json!({
                    "destination": "/sys",
                    "type": "none",
                    "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]
                });
                continue;
            }
            if let Some(opts) = m.get_mut("options").and_then(|o| o.as_array_mut()) {
                opts.retain(|o| {
                    !o.as_str()
                        .is_some_and(|o| o.starts_with("uid=") || o.starts_with("gid="))
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_spec_is_runcs() {
        let mut v = default_spec_json();
        to_rootless(&mut v, 1234, 4321);
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "cgroup", "user"]);
        assert_eq!(
            v["linux"]["uidMappings"],
            serde_json::json!([{"containerID": 0, "hostID": 1234, "size": 1}])
        );
        assert_eq!(
            v["linux"]["gidMappings"],
            serde_json::json!([{"containerID": 0, "hostID": 4321, "size": 1}])
        );
        assert!(v["linux"].get("resources").is_none());
        let mounts = v["mounts"].as_array().unwrap();
        let sys = mounts.iter().find(|m| m["destination"] == "/sys").unwrap();
        assert_eq!(sys["type"], "none");
        assert_eq!(sys["source"], "/sys");
        assert_eq!(
            sys["options"],
            serde_json::json!(["rbind", "nosuid", "noexec", "nodev", "ro"])
        );
        let pts = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/pts")
            .unwrap();
        assert_eq!(
            pts["options"],
            serde_json::json!([
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620"
            ])
        );
        // Everything else is the default spec's.
        let default = default_spec_json();
        let others = |v: &serde_json::Value| -> Vec<serde_json::Value> {
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["destination"] != "/sys" && m["destination"] != "/dev/pts")
                .cloned()
                .collect()
        };
        assert_eq!(others(&v), others(&default));
        assert_eq!(v["process"], default_spec_json()["process"]);
    }
}
