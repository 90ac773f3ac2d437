//! The OCI bundle (`config.json`) for a container: Docker's defaults.

use serde_json::{json, Value};

/// Docker's defaults, shared with the runtime's `profiles` module.
pub use berth_runtime::profiles::{
    DEFAULT_CAPABILITIES as DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS,
};

/// The `config.json` value with Docker's defaults (the root is `rootfs` next to it); berthd's
/// containers set `cgroup_mount` and put [`etc_mounts`] before their volumes.
pub use berth_runtime::profiles::{default_spec as build, DefaultSpec};

/// Bind mounts (read-write) of the files berthd writes for a container: (host, container).
pub fn etc_mounts(files: &[(String, String)]) -> Vec<Value> {
    files
        .iter()
        .map(|(src, dst)| json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}))
        .collect()
}

/// Resolves Docker's `user[:group]` against the container's `/etc/passwd` and `/etc/group`,
/// read inside the root (a symlinked `/etc/passwd` never reaches the host's files).
pub fn resolve_user(rootfs: &std::path::Path, user: &str) -> Result<(u32, u32), String> {
    berth_build::fsops::resolve_user(rootfs, user).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_docker_defaults() {
        let v = build(&DefaultSpec {
            args: &["sh".into()],
            env: &["PATH=/bin".into()],
            cwd: "",
            uid: 0,
            gid: 0,
            additional_gids: &[],
            tty: false,
            hostname: "abc",
            host_network: true,
            cgroups_path: "/berth/x".into(),
            cgroup_mount: true,
            mounts: etc_mounts(&[("/h/hosts".into(), "/etc/hosts".into())]),
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
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/sys/fs/cgroup"));
        assert_eq!(mounts.last().unwrap()["source"], "/h/hosts");
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
