//! The OCI bundle (`config.json`) of a container: the runtime's typed [`Spec`] with Docker's
//! defaults.

use berth_runtime::spec::{Mount, Spec};

/// Docker's defaults, shared with the runtime's `profiles` module.
pub use berth_runtime::profiles::{
    DEFAULT_CAPABILITIES as DEFAULT_CAPS, MASKED_PATHS, READONLY_PATHS,
};

pub use berth_runtime::profiles::DefaultSpec;

/// The spec with Docker's defaults (the root is `rootfs` next to it); berthd's containers set
/// `cgroup_mount` and add their volumes and then [`etc_mounts`] after Docker's mounts.
pub fn build(i: &DefaultSpec<'_>) -> Spec {
    serde_json::from_value(berth_runtime::profiles::default_spec(i))
        .expect("the runtime's default spec is a valid Spec")
}

/// Bind mounts of the files berthd writes for a container: (host, container); read-only with
/// `read_only` (a read-only root file system, as dockerd's `NetworkMounts`).
pub fn etc_mounts(files: &[(String, String)], read_only: bool) -> Vec<Mount> {
    files
        .iter()
        .map(|(src, dst)| Mount {
            destination: dst.into(),
            typ: Some("bind".into()),
            source: Some(src.into()),
            options: ["rbind", "rprivate"]
                .into_iter()
                .chain(read_only.then_some("ro"))
                .map(String::from)
                .collect(),
            uid_mappings: vec![],
            gid_mappings: vec![],
        })
        .collect()
}

/// Resolves Docker's `user[:group]` against the container's `/etc/passwd` and `/etc/group`,
/// read inside the root (a symlinked `/etc/passwd` never reaches the host's files).
pub fn resolve_user(
    rootfs: &std::path::Path,
    user: &str,
) -> Result<(u32, u32), berth_build::fsops::UserError> {
    berth_build::fsops::resolve_user(rootfs, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_has_docker_defaults() {
        let mut s = build(&DefaultSpec {
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
            mounts: vec![],
        });
        s.mounts.extend(etc_mounts(
            &[("/h/hosts".into(), "/etc/hosts".into())],
            false,
        ));
        let process = s.process.as_ref().unwrap();
        assert_eq!(process.cwd, std::path::Path::new("/"));
        let caps = process.capabilities.as_ref().unwrap();
        assert_eq!(caps.bounding.as_ref().unwrap().len(), 14);
        assert!(!s.has_namespace(berth_runtime::spec::NamespaceType::Network));
        assert!(s
            .mounts
            .iter()
            .any(|m| m.destination == std::path::Path::new("/sys/fs/cgroup")));
        let last = s.mounts.last().unwrap();
        assert_eq!(
            last.source.as_deref(),
            Some(std::path::Path::new("/h/hosts"))
        );
        assert_eq!(last.typ.as_deref(), Some("bind"));
    }

    /// The typed spec keeps everything the runtime's default JSON holds.
    #[test]
    fn typed_spec_round_trips_the_default() {
        let i = DefaultSpec {
            args: &["sh".into()],
            env: &[],
            cwd: "/w",
            uid: 5,
            gid: 6,
            additional_gids: &[7],
            tty: true,
            hostname: "h",
            host_network: false,
            cgroups_path: "/b/x".into(),
            cgroup_mount: true,
            mounts: vec![],
        };
        let raw = berth_runtime::profiles::default_spec(&i);
        let typed = serde_json::to_value(build(&i)).unwrap();
        fn same(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
            match a {
                serde_json::Value::Object(o) => {
                    for (k, v) in o {
                        same(v, &b[k.as_str()], &format!("{path}.{k}"));
                    }
                }
                serde_json::Value::Array(x) => {
                    for (n, v) in x.iter().enumerate() {
                        same(v, &b[n], &format!("{path}[{n}]"));
                    }
                }
                _ => assert_eq!(a, b, "{path}"),
            }
        }
        same(&raw, &typed, "");
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
