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
    let mut mounts: Vec<Value> = i
        .etc_files
        .iter()
        .map(|(src, dst)| json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}))
        .collect();
    mounts.extend(i.mounts.iter().cloned());
    berth_runtime::profiles::default_spec(&berth_runtime::profiles::DefaultSpec {
        args: i.args,
        env: i.env,
        cwd: i.cwd,
        uid: i.uid,
        gid: i.gid,
        additional_gids: &i.additional_gids,
        tty: i.tty,
        hostname: i.hostname,
        host_network: i.host_network,
        cgroups_path: i.cgroups_path.clone(),
        cgroup_mount: true,
        mounts,
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
