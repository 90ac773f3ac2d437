//! The OCI bundle (`config.json`) for a container: Docker's defaults.

use serde_json::{json, Value};

/// Docker's defaults, shared with the runtime's `profiles` module.
pub use berth_runtime::profiles::{
    DEFAULT_CAPABILITIES as DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS,
};

/// What the bundle needs to know.
pub struct SpecInput<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub tty: bool,
    pub hostname: &'a str,
    pub host_network: bool,
    pub cgroups_path: String,
    /// Files bind-mounted read-write: (host path, container path).
    pub etc_files: Vec<(String, String)>,
    /// Volumes, binds and tmpfs mounts (OCI entries from crate::mounts), in mount order.
    pub mounts: Vec<Value>,
}

/// The `config.json` value (the root is `rootfs` next to it).
pub fn build(i: &SpecInput<'_>) -> Value {
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let cap_names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    // Docker's default seccomp profile for these capabilities.
    let seccomp = serde_json::to_value(berth_runtime::profiles::default_seccomp(&cap_names))
        .unwrap_or(Value::Null);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !i.host_network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    for (src, dst) in &i.etc_files {
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}));
    }
    mounts.extend(i.mounts.iter().cloned());
    let mut user = json!({"uid": i.uid, "gid": i.gid});
    if !i.additional_gids.is_empty() {
        user["additionalGids"] = json!(i.additional_gids);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": i.tty,
            "user": user,
            "args": i.args,
            "env": i.env,
            "cwd": if i.cwd.is_empty() { "/" } else { i.cwd },
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": false,
            "oomScoreAdj": 0,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": i.cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp,
        }
    })
}

/// Resolves Docker's `user[:group]` against the container's `/etc/passwd` and `/etc/group`,
/// read inside the root (a symlinked `/etc/passwd` never reaches the host's files).
pub fn resolve_user(rootfs: &std::path::Path, user: &str) -> Result<(u32, u32), String> {
    berth_build::fsops::resolve_user(rootfs, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_docker_defaults() {
        let v = build(&SpecInput {
            args: &["sh".into()],
            env: &["PATH=/bin".into()],
            cwd: "",
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            tty: false,
            hostname: "abc",
            host_network: true,
            cgroups_path: "/berth/x".into(),
            etc_files: vec![],
            mounts: vec![],
        });
        assert_eq!(v["process"]["cwd"], "/");
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        assert!(!v["linux"]["namespaces"].to_string().contains("network"));
    }

    #[test]
    fn users() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65533::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(d.path(), "nobody").unwrap(), (65534, 65533));
        assert_eq!(resolve_user(d.path(), "1000:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_user(d.path(), "65534").unwrap(), (65534, 65533));
        assert!(resolve_user(d.path(), "ghost").is_err());
        // An absolute symlink is followed inside the root, never to the host's file.
        let alt = d.path().join("alt");
        std::fs::create_dir(&alt).unwrap();
        std::fs::write(alt.join("passwd"), "app:x:1234:4321::/:/bin/sh\n").unwrap();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/alt/passwd", d.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(d.path(), "app").unwrap(), (1234, 4321));
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("etc/passwd")).unwrap();
        // The host's root user is not the container's: no passwd inside, no such user.
        assert!(resolve_user(d.path(), "root").is_err());
    }
}
