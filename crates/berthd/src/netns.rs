//! Container network namespaces. For now only the loopback-only namespace (`none` and the
//! default mode until bridge networks land): `lo` is brought up as Docker does.
//!
//! `setns` must not run in the multi-threaded daemon, so [`loopback_up`] runs in a helper:
//! `berthd` re-executed with the hidden first argument [`HELPER_ARG`].

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The hidden argument that makes `berthd` run [`helper_main`].
pub const HELPER_ARG: &str = "__berthd-loopback-up";

/// Brings `lo` up in the network namespace of `pid`, from a helper process.
pub fn spawn_loopback_up(pid: i64) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .arg(HELPER_ARG)
        .arg(pid.to_string())
        .stdin(std::process::Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The helper's body (single-threaded process): join the namespace, set `IFF_UP` on `lo`.
pub fn helper_main(pid: &str) -> io::Result<()> {
    let pid: u32 = pid.parse().map_err(|_| io::Error::other("bad pid"))?;
    let ns = std::fs::File::open(Path::new("/proc").join(pid.to_string()).join("ns/net"))?;
    // SAFETY: setns(2) on a valid descriptor we own; this process has a single thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which lives for the
    // duration of the calls; the union member used is ifru_flags.
    let res = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing the descriptor we opened above.
    unsafe { libc::close(fd) };
    if res != 0 {
        return Err(err);
    }
    Ok(())
}
