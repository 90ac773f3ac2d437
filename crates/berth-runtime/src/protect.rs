//! Protection of the runtime binary against being overwritten from inside a container
//! (CVE-2019-5736, the `/proc/self/exe` attack).
//!
//! Before entering a container, the runtime re-executes itself from a sealed `memfd` copy: a
//! container process that reaches our executable through `/proc/<pid>/exe` (or by making us exec
//! `/proc/self/exe` via a `#!` line) finds an immutable anonymous file, not the host binary.
//! A binary on a read-only mount needs no copy.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

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

/// Re-executes the current process from a sealed memfd copy of its executable. Returns only on
/// failure.
pub fn reexec_sealed() -> std::io::Error {
    match make_sealed_copy() {
        Ok(fd) => {
            let args: Vec<CString> = std::env::args_os()
                .filter_map(|a| {
                    CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())).ok()
                })
                .collect();
            let env: Vec<CString> = std::env::vars_os()
                .filter_map(|(k, v)| {
                    let mut b = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
                    b.push(b'=');
                    b.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
                    CString::new(b).ok()
                })
                .collect();
            let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
            envp.push(std::ptr::null());
            // SAFETY: NULL-terminated arrays of valid C strings; fd is a sealed executable memfd.
            unsafe { libc::fexecve(fd.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
            std::io::Error::last_os_error()
        }
        Err(e) => e,
    }
}

fn make_sealed_copy() -> std::io::Result<OwnedFd> {
    let src = std::fs::File::open("/proc/self/exe")?;
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
