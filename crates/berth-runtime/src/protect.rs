//! Protection of the runtime binary against being overwritten from inside a container
//! (CVE-2019-5736, the `/proc/self/exe` attack).
//!
//! Before entering a container, the runtime re-executes itself from a read-only view of its
//! binary, so that a container process reaching our executable through `/proc/<pid>/exe` (or by
//! making us exec `/proc/self/exe` through a `#!` line) cannot open it for writing:
//!
//! 1. Preferred, no copy: the runtime moves into a private mount namespace, bind-mounts its binary
//!    onto itself read-only there and re-executes it. The executable's mount is read-only and lives
//!    only in that namespace, which no container can reach to remount it. The descriptor of the
//!    host's mount namespace is kept (`BERTH_HOST_MNTNS_FD`) so that hooks, and containers that
//!    share the host's mount namespace, still see and change the host's mounts.
//! 2. Fallback: a sealed `memfd` copy of the binary (costs a copy of the whole file).
//!
//! A binary already on a read-only mount, or a sealed memfd (e.g. handed over by berthd), needs
//! neither.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::sched::CloneFlags;
use rustix::fs::SealFlags;
use rustix::io::FdFlags;

const SEALS: SealFlags = SealFlags::SEAL
    .union(SealFlags::SHRINK)
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE);
const HOST_MNTNS_ENV: &str = "BERTH_HOST_MNTNS_FD";
const REEXEC_ENV: &str = "BERTH_REEXEC";

static HOST_MNTNS: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// The host's mount namespace when the runtime runs in its private one (see module docs).
pub fn host_mount_ns() -> Option<BorrowedFd<'static>> {
    HOST_MNTNS
        .get_or_init(take_host_mntns_from_env)
        .as_ref()
        .map(|f| f.as_fd())
}

fn take_host_mntns_from_env() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(HOST_MNTNS_ENV).ok()?.parse().ok()?;
    if fd < 0 {
        return None;
    }
    // SAFETY: the variable is set only by our own re-exec (`reexec_readonly_bind`), and names
    // the descriptor it left open across the exec for us; `init_after_reexec` takes it first
    // thing in `main`, before anything else can own or close it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC) {
        tracing::debug!("{HOST_MNTNS_ENV}: {e}");
        return None;
    }
    Some(fd)
}

/// Call first thing in `main`: consumes the variables of our own re-exec.
pub fn init_after_reexec() {
    let _ = host_mount_ns();
    // The process is single-threaded at this point of main: nothing reads the environment
    // concurrently.
    std::env::remove_var(HOST_MNTNS_ENV);
    std::env::remove_var(REEXEC_ENV);
}

/// True when our executable is already a sealed memfd or lives on a read-only mount.
pub fn is_protected() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    if rustix::fs::fcntl_get_seals(&f).is_ok_and(|s| s.contains(SEALS)) {
        return true;
    }
    rustix::fs::fstatvfs(&f)
        .is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Re-executes the current process from a protected view of its executable. Returns only on
/// failure.
pub fn reexec_protected() -> std::io::Error {
    if std::env::var_os(REEXEC_ENV).is_some() {
        return std::io::Error::other("re-executed once already and still not protected");
    }
    match reexec_readonly_bind() {
        Ok(never) => match never {},
        Err(e) => tracing::debug!("read-only bind re-exec unavailable ({e}); using a sealed copy"),
    }
    reexec_sealed()
}

enum Never {}

fn argv_envp(extra: &[(String, String)]) -> (Vec<CString>, Vec<CString>) {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_os_str().as_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut b = k.as_os_str().as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_os_str().as_bytes());
            CString::new(b).ok()
        })
        .collect();
    for (k, v) in extra {
        if let Ok(c) = CString::new(format!("{k}={v}")) {
            env.push(c);
        }
    }
    (args, env)
}

fn cstrs(v: &[CString]) -> Vec<&CStr> {
    v.iter().map(CString::as_c_str).collect()
}

fn reexec_readonly_bind() -> std::io::Result<Never> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(std::io::Error::other("executable was deleted"));
    }
    let host = std::fs::File::open("/proc/self/ns/mnt")?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    let restore = |e: std::io::Error| {
        // Back to the host's namespace on failure.
        let _ = nix::sched::setns(&host, CloneFlags::CLONE_NEWNS);
        e
    };
    let exe_s = exe.to_string_lossy().into_owned();
    crate::mounts::sys_mount(None, "/", None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(restore)?;
    crate::mounts::sys_mount(Some(&exe_s), &exe_s, None, libc::MS_BIND, None).map_err(restore)?;
    crate::mounts::sys_mount(
        None,
        &exe_s,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(restore)?;
    // The host namespace descriptor survives exec for the new image to take.
    rustix::io::fcntl_setfd(&host, FdFlags::empty()).map_err(|e| restore(e.into()))?;
    use std::os::fd::AsRawFd;
    let extra = [
        (HOST_MNTNS_ENV.to_string(), host.as_raw_fd().to_string()),
        (REEXEC_ENV.to_string(), "1".to_string()),
    ];
    let (args, env) = argv_envp(&extra);
    let path = CString::new(exe_s.as_bytes()).map_err(std::io::Error::other)?;
    let err = match nix::unistd::execve(&path, &cstrs(&args), &cstrs(&env)) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(restore(err.into()))
}

/// Re-executes the current process from a sealed memfd copy of its executable. Returns only on
/// failure.
pub fn reexec_sealed() -> std::io::Error {
    match make_sealed_copy() {
        Ok(fd) => {
            let (args, env) = argv_envp(&[(REEXEC_ENV.to_string(), "1".to_string())]);
            match nix::unistd::fexecve(&fd, &cstrs(&args), &cstrs(&env)) {
                Err(e) => e.into(),
                Ok(never) => match never {},
            }
        }
        Err(e) => e,
    }
}

fn make_sealed_copy() -> std::io::Result<OwnedFd> {
    sealed_copy_of(std::path::Path::new("/proc/self/exe"))
}

/// A sealed, executable memfd copy of the file at `path` (close-on-exec). A runtime executed
/// from it (`/proc/self/fd/N`) is protected from the start and needs no re-execution: berthd
/// makes one copy when it starts and hands it to every shim.
pub fn sealed_copy_of(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    let mut src = std::fs::File::open(path)?;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let mem = match rustix::fs::memfd_create("berth-runtime", flags | MemfdFlags::EXEC) {
        Ok(fd) => fd,
        // Kernels before 6.3 do not know MFD_EXEC.
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("berth-runtime", flags)?,
        Err(e) => return Err(e.into()),
    };
    let mut dst = std::fs::File::from(mem);
    // std's copy uses copy_file_range/sendfile between the two descriptors.
    std::io::copy(&mut src, &mut dst)?;
    let mem = OwnedFd::from(dst);
    rustix::fs::fcntl_add_seals(&mem, SEALS)?;
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_testkit::CommandRun;
    use std::os::fd::AsRawFd;

    #[test]
    fn sealed_copy_is_identical_sealed_and_executable() {
        let src = std::fs::read("/proc/self/exe").unwrap();
        let fd = sealed_copy_of(std::path::Path::new("/proc/self/exe")).unwrap();
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert_eq!(std::fs::read(&path).unwrap(), src);
        assert!(rustix::fs::fcntl_get_seals(&fd).unwrap().contains(SEALS));
        // No writer can change it, not even through a new open of the same file.
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let err = w.write_all(b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert_eq!(w.set_len(1).unwrap_err().raw_os_error(), Some(libc::EPERM));
        drop(w); // an open writer makes exec fail with ETXTBSY
                 // It runs (this test binary, listing its tests).
        let out = std::process::Command::new(&path)
            .args([
                "--list",
                "--exact",
                "protect::tests::sealed_copy_is_identical_sealed_and_executable",
            ])
            .output_ok();
        assert!(String::from_utf8_lossy(&out.stdout).contains("sealed_copy_is_identical"));
    }
}
