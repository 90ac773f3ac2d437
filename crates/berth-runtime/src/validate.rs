//! Semantic validation of a [`Spec`], done before anything is created.
//!
//! Every error names the offending field, e.g. `config.json: linux.namespaces[2].path: ...`.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use crate::spec::{invalid, NamespaceType, Spec, SpecError};

/// The sysctls of the ipc namespace besides the `fs.mqueue.` ones (the kernel's
/// `ipc_sysctls`, as runc and dockerd allow them).
pub const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Mount types Berth knows how to mount (besides bind mounts, which have no type or `bind`).
const KNOWN_FS: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "bind",
    "rbind",
    "none",
    "overlay",
    "ramfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "hugetlbfs",
    "fuse",
    "binfmt_misc",
    "bpf",
    "nfs",
    "nfs4",
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "squashfs",
    "configfs",
    "pstore",
];

use nix::sys::resource::Resource;

pub const RLIMITS: &[(&str, Resource)] = &[
    ("RLIMIT_CPU", Resource::RLIMIT_CPU),
    ("RLIMIT_FSIZE", Resource::RLIMIT_FSIZE),
    ("RLIMIT_DATA", Resource::RLIMIT_DATA),
    ("RLIMIT_STACK", Resource::RLIMIT_STACK),
    ("RLIMIT_CORE", Resource::RLIMIT_CORE),
    ("RLIMIT_RSS", Resource::RLIMIT_RSS),
    ("RLIMIT_NPROC", Resource::RLIMIT_NPROC),
    ("RLIMIT_NOFILE", Resource::RLIMIT_NOFILE),
    ("RLIMIT_MEMLOCK", Resource::RLIMIT_MEMLOCK),
    ("RLIMIT_AS", Resource::RLIMIT_AS),
    ("RLIMIT_LOCKS", Resource::RLIMIT_LOCKS),
    ("RLIMIT_SIGPENDING", Resource::RLIMIT_SIGPENDING),
    ("RLIMIT_MSGQUEUE", Resource::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", Resource::RLIMIT_NICE),
    ("RLIMIT_RTPRIO", Resource::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", Resource::RLIMIT_RTTIME),
];

pub fn rlimit_resource(name: &str) -> Option<Resource> {
    RLIMITS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// A container id as runc accepts it.
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "id",
            format!("invalid container id {id:?}: use letters, digits, '_', '-', '.', '+'"),
        ))
    }
}

fn check_caps(field: &str, list: &Option<Vec<String>>) -> Result<(), SpecError> {
    for (i, c) in list.iter().flatten().enumerate() {
        if caps::Capability::from_str(c).is_err() {
            return Err(invalid(
                format!("process.capabilities.{field}[{i}]"),
                format!("unknown capability {c:?}"),
            ));
        }
    }
    Ok(())
}

/// Validates a spec for `create`/`run`. `bundle` is used to check that the rootfs exists.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    let rootfs = spec.rootfs(bundle);
    if spec.root.is_none() {
        return Err(invalid(
            "root",
            "missing: the container needs a root filesystem",
        ));
    }
    match std::fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", rootfs.display()),
            ))
        }
        Err(e) => return Err(invalid("root.path", format!("{}: {e}", rootfs.display()))),
    }
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| invalid("process", "missing: nothing to run"))?;
    validate_process(process, "process")?;
    let linux = spec.linux();

    // Namespaces.
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces.iter().enumerate() {
        if !seen.insert(ns.typ) {
            return Err(invalid(
                format!("linux.namespaces[{i}].type"),
                format!("duplicate namespace {:?}", ns.typ.proc_name()),
            ));
        }
        if let Some(p) = &ns.path {
            if !p.is_absolute() {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{} must be an absolute path", p.display()),
                ));
            }
            if let Err(e) = std::fs::metadata(p) {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{}: {e}", p.display()),
                ));
            }
        }
        if ns.typ == NamespaceType::Time
            && ns.path.is_none()
            && !Path::new("/proc/self/ns/time").exists()
        {
            return Err(invalid(
                format!("linux.namespaces[{i}]"),
                "time namespaces are not supported by this kernel",
            ));
        }
    }
    let new_user = spec
        .namespace(NamespaceType::User)
        .is_some_and(|n| n.path.is_none());
    if new_user {
        if linux.uid_mappings.is_empty() {
            return Err(invalid(
                "linux.uidMappings",
                "a new user namespace needs uid mappings",
            ));
        }
        if linux.gid_mappings.is_empty() {
            return Err(invalid(
                "linux.gidMappings",
                "a new user namespace needs gid mappings",
            ));
        }
    } else if (!linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty())
        && !spec.has_namespace(NamespaceType::User)
    {
        return Err(invalid(
            "linux.uidMappings",
            "id mappings given without a user namespace",
        ));
    }
    for (field, maps) in [
        ("linux.uidMappings", &linux.uid_mappings),
        ("linux.gidMappings", &linux.gid_mappings),
    ] {
        for (i, m) in maps.iter().enumerate() {
            if m.size == 0 {
                return Err(invalid(
                    format!("{field}[{i}].size"),
                    "must be greater than 0",
                ));
            }
        }
    }
    if spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.namespace(NamespaceType::Uts).is_none()
    {
        return Err(invalid(
            "hostname",
            "setting the hostname needs a uts namespace",
        ));
    }
    if spec.domainname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.namespace(NamespaceType::Uts).is_none()
    {
        return Err(invalid(
            "domainname",
            "setting the domainname needs a uts namespace",
        ));
    }

    // Mounts. Without a mount namespace runc makes them in the host's namespace, where they
    // outlive the container and every host process sees them (a proc or tmpfs over a host
    // directory the bundle names): refused.
    if !spec.mounts.is_empty() && !spec.has_namespace(NamespaceType::Mount) {
        return Err(invalid(
            "mounts",
            "without a mount namespace (no \"mount\" in linux.namespaces) the mounts would be \
             made in the host's mount namespace, outlive the container and be seen by every \
             host process; add a mount namespace or remove the mounts",
        ));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        if !m.destination.is_absolute() {
            return Err(invalid(
                format!("mounts[{i}].destination"),
                format!("{} must be an absolute path", m.destination.display()),
            ));
        }
        let typ = m.typ.as_deref().unwrap_or("");
        let is_bind = typ == "bind"
            || typ == "rbind"
            || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind {
            if typ.is_empty() {
                return Err(invalid(
                    format!("mounts[{i}].type"),
                    "missing (only bind mounts may omit it)",
                ));
            }
            if !KNOWN_FS.contains(&typ)
                && !std::fs::read_to_string("/proc/filesystems")
                    .map(|f| f.split_whitespace().any(|t| t == typ))
                    .unwrap_or(false)
            {
                return Err(invalid(
                    format!("mounts[{i}].type"),
                    format!("unknown file system type {typ:?}"),
                ));
            }
        } else {
            let src = m.source.as_ref().ok_or_else(|| {
                invalid(format!("mounts[{i}].source"), "a bind mount needs a source")
            })?;
            let src = if src.is_absolute() {
                src.clone()
            } else {
                bundle.join(src)
            };
            if let Err(e) = std::fs::symlink_metadata(&src) {
                return Err(invalid(
                    format!("mounts[{i}].source"),
                    format!("{}: {e}", src.display()),
                ));
            }
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(invalid(
                format!("mounts[{i}].uidMappings"),
                "id-mapped mounts are not supported",
            ));
        }
        for (j, o) in m.options.iter().enumerate() {
            if o == "idmap" || o == "ridmap" {
                return Err(invalid(
                    format!("mounts[{i}].options[{j}]"),
                    "id-mapped mounts are not supported",
                ));
            }
        }
    }

    // Devices.
    for (i, d) in linux.devices.iter().enumerate() {
        if !d.path.is_absolute() {
            return Err(invalid(
                format!("linux.devices[{i}].path"),
                format!("{} must be an absolute path", d.path.display()),
            ));
        }
        if !matches!(d.typ.as_str(), "c" | "b" | "u" | "p") {
            return Err(invalid(
                format!("linux.devices[{i}].type"),
                format!("unknown device type {:?} (want c, b, u or p)", d.typ),
            ));
        }
    }

    // Sysctls.
    let has_net = spec.has_namespace(NamespaceType::Network);
    let has_ipc = spec.has_namespace(NamespaceType::Ipc);
    let has_uts = spec.has_namespace(NamespaceType::Uts);
    for key in linux.sysctl.keys() {
        let field = format!("linux.sysctl.{key}");
        if key.contains("..") || key.contains('/') && key.contains('.') && key.starts_with('/') {
            return Err(invalid(field, "invalid sysctl name"));
        }
        if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            if !has_ipc {
                return Err(invalid(field, "needs an ipc namespace"));
            }
        } else if key.starts_with("net.") {
            if !has_net {
                return Err(invalid(field, "needs a network namespace"));
            }
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            if !has_uts {
                return Err(invalid(field, "needs a uts namespace"));
            }
        } else {
            return Err(invalid(
                field,
                "not namespaced: refusing to change the host's value",
            ));
        }
    }

    if let Some(t) = linux.time_offsets.as_ref() {
        let obj = t
            .as_object()
            .ok_or_else(|| invalid("linux.timeOffsets", "must be an object"))?;
        for k in obj.keys() {
            if k != "monotonic" && k != "boottime" {
                return Err(invalid(
                    format!("linux.timeOffsets.{k}"),
                    "only monotonic and boottime clocks can be offset",
                ));
            }
        }
        if spec
            .namespace(NamespaceType::Time)
            .is_none_or(|n| n.path.is_some())
        {
            return Err(invalid("linux.timeOffsets", "needs a new time namespace"));
        }
    }
    if linux.intel_rdt.is_some() {
        return Err(invalid(
            "linux.intelRdt",
            "Intel RDT is not supported by berth-runtime",
        ));
    }
    if linux.personality.is_some() {
        // Accept only the default Linux domain.
        let dom = linux
            .personality
            .as_ref()
            .and_then(|p| p.get("domain"))
            .and_then(|d| d.as_str())
            .unwrap_or("LINUX");
        if dom != "LINUX" && dom != "LINUX32" {
            return Err(invalid(
                "linux.personality.domain",
                format!("unsupported domain {dom:?}"),
            ));
        }
    }
    if let Some(p) = &linux.rootfs_propagation {
        if crate::mounts::propagation_flag(p).is_none() {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {p:?}"),
            ));
        }
    }
    for (i, p) in linux
        .masked_paths
        .iter()
        .chain(linux.readonly_paths.iter())
        .enumerate()
    {
        if !p.starts_with('/') {
            return Err(invalid(
                format!("linux.maskedPaths/readonlyPaths[{i}]"),
                format!("{p} must be an absolute path"),
            ));
        }
    }
    if let Some(s) = &linux.seccomp {
        crate::seccomp::validate(s)?;
    }
    if let Some(cg) = &linux.cgroups_path {
        if cg.contains("..") {
            return Err(invalid("linux.cgroupsPath", "must not contain '..'"));
        }
    }

    // Hooks.
    let hooks = spec.hooks();
    for (kind, list) in [
        ("prestart", &hooks.prestart),
        ("createRuntime", &hooks.create_runtime),
        ("createContainer", &hooks.create_container),
        ("startContainer", &hooks.start_container),
        ("poststart", &hooks.poststart),
        ("poststop", &hooks.poststop),
    ] {
        for (i, h) in list.iter().enumerate() {
            if !h.path.is_absolute() {
                return Err(invalid(
                    format!("hooks.{kind}[{i}].path"),
                    format!("{} must be an absolute path", h.path.display()),
                ));
            }
            if h.timeout.is_some_and(|t| t <= 0) {
                return Err(invalid(
                    format!("hooks.{kind}[{i}].timeout"),
                    "must be positive",
                ));
            }
        }
    }
    Ok(())
}

/// Validates a `process` object (also used by `exec --process`).
pub fn validate_process(p: &crate::spec::Process, field: &str) -> Result<(), SpecError> {
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(invalid(
            format!("{field}.args"),
            "must contain at least the program to run",
        ));
    }
    if !p.cwd.is_absolute() {
        return Err(invalid(
            format!("{field}.cwd"),
            format!("{:?} must be an absolute path", p.cwd),
        ));
    }
    for (i, e) in p.env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') {
            return Err(invalid(
                format!("{field}.env[{i}]"),
                format!("{e:?} is not KEY=value"),
            ));
        }
    }
    if let Some(c) = &p.capabilities {
        check_caps("bounding", &c.bounding)?;
        check_caps("effective", &c.effective)?;
        check_caps("inheritable", &c.inheritable)?;
        check_caps("permitted", &c.permitted)?;
        check_caps("ambient", &c.ambient)?;
    }
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits.iter().enumerate() {
        if rlimit_resource(&r.typ).is_none() {
            return Err(invalid(
                format!("{field}.rlimits[{i}].type"),
                format!("unknown rlimit {:?}", r.typ),
            ));
        }
        if !seen.insert(r.typ.clone()) {
            return Err(invalid(
                format!("{field}.rlimits[{i}].type"),
                format!("duplicate rlimit {:?}", r.typ),
            ));
        }
        if r.soft > r.hard {
            return Err(invalid(
                format!("{field}.rlimits[{i}]"),
                "soft limit is above the hard limit",
            ));
        }
    }
    if let Some(adj) = p.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                format!("{field}.oomScoreAdj"),
                "must be within -1000..1000",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("rootfs")).unwrap();
        d
    }

    fn check(edit: impl Fn(&mut serde_json::Value)) -> Result<(), SpecError> {
        let b = bundle();
        let mut v = crate::defaults::default_spec_json();
        edit(&mut v);
        let data = serde_json::to_vec(&v).unwrap();
        let spec = Spec::parse(&data, &b.path().join("config.json"))?;
        validate(&spec, b.path())
    }

    fn field_of(r: Result<(), SpecError>) -> String {
        match r {
            Err(SpecError::Invalid { field, .. }) | Err(SpecError::Parse { field, .. }) => field,
            other => panic!("expected an error naming a field, got {other:?}"),
        }
    }

    #[test]
    fn default_spec_is_valid() {
        check(|_| {}).unwrap();
    }

    #[test]
    fn errors_name_their_field() {
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "linux.namespaces[2].type",
                Box::new(|v| v["linux"]["namespaces"][2]["type"] = json!("nope")),
            ),
            (
                "linux.namespaces[1].type",
                Box::new(|v| v["linux"]["namespaces"][1]["type"] = json!("pid")),
            ),
            (
                "linux.namespaces[0].path",
                Box::new(|v| v["linux"]["namespaces"][0]["path"] = json!("rel/ns")),
            ),
            (
                "mounts[3].destination",
                Box::new(|v| v["mounts"][3]["destination"] = json!("dev/shm")),
            ),
            (
                "mounts[0].type",
                Box::new(|v| v["mounts"][0]["type"] = json!("nosuchfs")),
            ),
            (
                "mounts[7].source",
                Box::new(|v| {
                    v["mounts"].as_array_mut().unwrap().push(
                        json!({"destination": "/x", "type": "bind", "source": "/nonexistent/src"}),
                    )
                }),
            ),
            (
                "process.capabilities.effective[1]",
                Box::new(|v| v["process"]["capabilities"]["effective"][1] = json!("CAP_FLY")),
            ),
            (
                "process.args",
                Box::new(|v| v["process"]["args"] = json!([])),
            ),
            (
                "process.cwd",
                Box::new(|v| v["process"]["cwd"] = json!("tmp")),
            ),
            (
                "process.env[0]",
                Box::new(|v| v["process"]["env"][0] = json!("NOEQUALS")),
            ),
            (
                "process.rlimits[0]",
                Box::new(|v| {
                    v["process"]["rlimits"][0] =
                        json!({"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5})
                }),
            ),
            (
                "process.oomScoreAdj",
                Box::new(|v| v["process"]["oomScoreAdj"] = json!(5000)),
            ),
            (
                "linux.uidMappings",
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"type": "user"}))
                }),
            ),
            (
                "linux.sysctl.vm.swappiness",
                Box::new(|v| v["linux"]["sysctl"] = json!({"vm.swappiness": "1"})),
            ),
            (
                "linux.sysctl.net.ipv4.ip_forward",
                Box::new(|v| {
                    v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|n| n["type"] != "network");
                }),
            ),
            (
                "hostname",
                Box::new(|v| {
                    v["linux"]["namespaces"]
                        .as_array_mut()
                        .unwrap()
                        .retain(|n| n["type"] != "uts")
                }),
            ),
            (
                "linux.devices[0].type",
                Box::new(|v| v["linux"]["devices"] = json!([{"path": "/dev/x", "type": "z"}])),
            ),
            (
                "linux.seccomp.syscalls[0].action",
                Box::new(
                    |v| v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}),
                ),
            ),
            (
                "linux.seccomp.syscalls[0].args[0].op",
                Box::new(
                    |v| v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}),
                ),
            ),
            (
                "linux.intelRdt",
                Box::new(|v| v["linux"]["intelRdt"] = json!({})),
            ),
            (
                "linux.rootfsPropagation",
                Box::new(|v| v["linux"]["rootfsPropagation"] = json!("sideways")),
            ),
            (
                "hooks.poststop[0].path",
                Box::new(|v| v["hooks"] = json!({"poststop": [{"path": "hook"}]})),
            ),
            (
                "root",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("root");
                }),
            ),
            (
                "process.user.uid",
                Box::new(|v| v["process"]["user"]["uid"] = json!("root")),
            ),
        ];
        for (field, edit) in cases {
            assert_eq!(field_of(check(edit)), field);
        }
    }

    #[test]
    fn ids() {
        validate_id("abc-1.2_x+y").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let data = serde_json::to_vec(&crate::defaults::default_spec_json()).unwrap();
        let spec = Spec::parse(&data, &d.path().join("config.json")).unwrap();
        assert_eq!(field_of(validate(&spec, d.path())), "root.path");
    }
}
