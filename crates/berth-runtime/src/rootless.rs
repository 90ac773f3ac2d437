//! Rootless operation: the runtime run by an unprivileged user (or as root of a user namespace
//! that is not the initial one, e.g. inside rootless berthd's namespace).
//!
//! What changes (as in runc): state under `$XDG_RUNTIME_DIR/berth-runtime`; the container's
//! user namespace is mapped by the runtime itself when the mapping is the caller's own uid/gid
//! (one id each), and through the set-uid `newuidmap`/`newgidmap` (Debian's `uidmap`) when it
//! uses subordinate ranges from `/etc/subuid` and `/etc/subgid`; cgroups are used only when
//! writable (a delegated subtree) — without one the container runs in the caller's cgroup, and
//! a spec asking for limits is refused; device nodes are bind-mounted from the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::spec::IdMapping;

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("{tool} not found in PATH: install the `uidmap` package (it maps the subordinate ids of /etc/subuid and /etc/subgid into the container's user namespace)")]
    MissingTool { tool: &'static str },
    #[error("{tool} {args}: {message} (are the container's ids within the caller's ranges in /etc/subuid and /etc/subgid?)")]
    ToolFailed {
        tool: &'static str,
        args: String,
        message: String,
    },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("rootless: XDG_RUNTIME_DIR is not set: give the state directory with --root")]
    NoRuntimeDir,
}

pub use berth_util::userns::running_in_userns;

/// Whether the runtime works rootless: runc's `--rootless` (`true`, `false`, or `auto`/absent:
/// rootless when not root or inside a user namespace).
pub fn detect(flag: Option<&str>) -> bool {
    match flag {
        Some("true") => true,
        Some("false") => false,
        _ => !nix::unistd::geteuid().is_root() || running_in_userns(),
    }
}

/// The default state directory: `/run/berth-runtime` for root, else
/// `$XDG_RUNTIME_DIR/berth-runtime`.
pub fn default_state_root() -> Result<PathBuf, RootlessError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run/berth-runtime"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Ok(Path::new(&d).join("berth-runtime")),
        None => Err(RootlessError::NoRuntimeDir),
    }
}

/// True when `maps` is the single id `own` mapped alone (what an unprivileged process may write
/// itself).
fn only_own_id(maps: &[IdMapping], own: u32) -> bool {
    matches!(maps, [m] if m.size == 1 && m.host_id == own)
}

fn map_text(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

fn write_proc(path: String, data: &str) -> Result<(), RootlessError> {
    std::fs::write(&path, data).map_err(|source| RootlessError::Write { path, source })
}

/// Writes the uid and gid maps of `pid` (a process that has just made a user namespace).
///
/// Root writes them itself (it may map anything of its own namespace). An unprivileged caller
/// writes a map of its own single id itself (`setgroups` is denied first, as the kernel
/// requires for a gid map written without `CAP_SETGID`) and goes through `newuidmap`/
/// `newgidmap` for anything else.
pub fn write_id_maps(
    pid: i32,
    uid_maps: &[IdMapping],
    gid_maps: &[IdMapping],
) -> Result<(), RootlessError> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if euid == 0 {
        write_proc(format!("/proc/{pid}/uid_map"), &map_text(uid_maps))?;
        return write_proc(format!("/proc/{pid}/gid_map"), &map_text(gid_maps));
    }
    if only_own_id(uid_maps, euid) {
        write_proc(format!("/proc/{pid}/uid_map"), &map_text(uid_maps))?;
    } else {
        run_map_tool("newuidmap", pid, uid_maps)?;
    }
    if only_own_id(gid_maps, egid) {
        write_proc(format!("/proc/{pid}/setgroups"), "deny")?;
        write_proc(format!("/proc/{pid}/gid_map"), &map_text(gid_maps))?;
    } else {
        run_map_tool("newgidmap", pid, gid_maps)?;
    }
    Ok(())
}

/// `newuidmap PID CONTAINER-ID HOST-ID SIZE …` (or `newgidmap`).
fn run_map_tool(tool: &'static str, pid: i32, maps: &[IdMapping]) -> Result<(), RootlessError> {
    let path = find_in_path(tool).ok_or(RootlessError::MissingTool { tool })?;
    let mut args = vec![pid.to_string()];
    for m in maps {
        args.extend([
            m.container_id.to_string(),
            m.host_id.to_string(),
            m.size.to_string(),
        ]);
    }
    let out = Command::new(&path)
        .args(&args)
        .output()
        .map_err(|e| RootlessError::ToolFailed {
            tool,
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(RootlessError::ToolFailed {
            tool,
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

pub use berth_util::fs::find_in_path;

/// True when a cgroup error means "not allowed to create or write it" (no delegation), as
/// opposed to a real failure.
pub fn is_permission_error(e: &berth_cgroups::CgroupError) -> bool {
    use berth_cgroups::CgroupError as E;
    let source = match e {
        E::Create { source, .. } | E::Write { source, .. } | E::Read { source, .. } => source,
        _ => return false,
    };
    matches!(
        source.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS)
    )
}

/// True when the resources ask for a limit (anything but device rules, which a rootless
/// container cannot enforce and does not need: it cannot create device nodes).
/// (Any serializable `linux.resources`: the runtime's own type or oci-spec's.)
pub fn requests_limits(r: &impl serde::Serialize) -> bool {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::to_value(r) else {
        return false;
    };
    m.remove("devices");
    m.values().any(|v| match v {
        serde_json::Value::Null => false,
        serde_json::Value::Object(o) => o.values().any(|x| !x.is_null()),
        serde_json::Value::Array(a) => !a.is_empty(),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(container_id: u32, host_id: u32, size: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            size,
        }
    }

    #[test]
    fn own_id_alone() {
        assert!(only_own_id(&[map(0, 1000, 1)], 1000));
        assert!(!only_own_id(&[map(0, 1000, 2)], 1000));
        assert!(!only_own_id(&[map(0, 1001, 1)], 1000));
        assert!(!only_own_id(
            &[map(0, 1000, 1), map(1, 100000, 65536)],
            1000
        ));
        assert_eq!(
            map_text(&[map(0, 1000, 1), map(1, 100000, 65536)]),
            "0 1000 1\n1 100000 65536\n"
        );
    }

    #[test]
    fn limits_versus_device_rules() {
        let r: crate::spec::LinuxResources =
            serde_json::from_str(r#"{"devices": [{"allow": false, "access": "rwm"}]}"#).unwrap();
        assert!(!requests_limits(&r));
        let r: crate::spec::LinuxResources = serde_json::from_str("{}").unwrap();
        assert!(!requests_limits(&r));
        let r: crate::spec::LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 1048576}}"#).unwrap();
        assert!(requests_limits(&r));
        let r: crate::spec::LinuxResources =
            serde_json::from_str(r#"{"pids": {"limit": 10}}"#).unwrap();
        assert!(requests_limits(&r));
    }

    #[test]
    fn permission_errors() {
        let e = berth_cgroups::CgroupError::Create {
            path: "/sys/fs/cgroup/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        assert!(is_permission_error(&e));
        let e = berth_cgroups::CgroupError::Create {
            path: "/sys/fs/cgroup/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(!is_permission_error(&e));
    }
}
