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

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
const HOST_MNTNS_ENV: &str = "BERTH_HOST_MNTNS_FD";
const REEXEC_ENV: &str = "BERTH_REEXEC";

static HOST_MNTNS: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// The host's mount namespace when the runtime runs in its private one (see module docs).
pub fn host_mount_ns() -> Option<RawFd> {
    HOST_MNTNS
        .get_or_init(take_host_mntns_from_env)
        .as_ref()
        .map(|f| f.as_raw_fd())
}

fn take_host_mntns_from_env() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(HOST_MNTNS_ENV).ok()?.parse().ok()?;
    // SAFETY: the variable is set only by our own re-exec, and names a descriptor it left open
    // for us; we take ownership and mark it close-on-exec.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on a valid descriptor.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}

/// Call first thing in `main`: consumes the variables of our own re-exec.
pub fn init_after_reexec() {
    let _ = host_mount_ns();
    // SAFETY: single-threaded at this point of main.
    unsafe {
        std::env::remove_var(HOST_MNTNS_ENV);
        std::env::remove_var(REEXEC_ENV);
    }
}

/// True when our executable is already a sealed memfd or lives on a read-only mount.
pub fn is_protected() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl on a valid descriptor.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & SEALS == SEALS {
        return true;
    }
    // SAFETY: zeroed statvfs is a valid output buffer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and output pointer.
    unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 }
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

fn ptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    let mut p: Vec<*const libc::c_char> = v.iter().map(|a| a.as_ptr()).collect();
    p.push(std::ptr::null());
    p
}

fn reexec_readonly_bind() -> std::io::Result<Never> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(std::io::Error::other("executable was deleted"));
    }
    let host = std::fs::File::open("/proc/self/ns/mnt")?;
    // SAFETY: unshare with a namespace flag in a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let restore = |e: std::io::Error| {
        // SAFETY: back to the host's namespace on failure.
        unsafe { libc::setns(host.as_raw_fd(), libc::CLONE_NEWNS) };
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
    // SAFETY: fcntl on a valid descriptor.
    unsafe { libc::fcntl(host.as_raw_fd(), libc::F_SETFD, 0) };
    let extra = [
        (HOST_MNTNS_ENV.to_string(), host.as_raw_fd().to_string()),
        (REEXEC_ENV.to_string(), "1".to_string()),
    ];
    let (args, env) = argv_envp(&extra);
    let path = CString::new(exe_s.as_bytes()).map_err(std::io::Error::other)?;
    let (argv, envp) = (ptrs(&args), ptrs(&env));
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(restore(std::io::Error::last_os_error()))
}

/// Re-executes the current process from a sealed memfd copy of its executable. Returns only on
/// failure.
pub fn reexec_sealed() -> std::io::Error {
    match make_sealed_copy() {
        Ok(fd) => {
            let (args, env) = argv_envp(&[(REEXEC_ENV.to_string(), "1".to_string())]);
            let (argv, envp) = (ptrs(&args), ptrs(&env));
            // SAFETY: NULL-terminated arrays of valid C strings; fd is a sealed executable memfd.
            unsafe { libc::fexecve(fd.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
            std::io::Error::last_os_error()
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
    let src = std::fs::File::open(path)?;
    let len = src.metadata()?.len();
    let name = c"berth-runtime";
    // SAFETY: valid name string; flags are constants.
    let fd = unsafe {
        libc::memfd_create(
            name.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_EXEC,
        )
    };
    let fd = if fd < 0 {
        // Kernels before 6.3 do not know MFD_EXEC.
        // SAFETY: as above.
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) }
    } else {
        fd
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: new descriptor owned here.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: sendfile between two valid descriptors with a null offset.
        let n =
            unsafe { libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        left -= n as usize;
    }
    // SAFETY: fcntl on a valid descriptor.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mem)
}
