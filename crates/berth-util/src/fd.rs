//! File descriptors handed to a child process.

use std::io;
use std::os::fd::RawFd;

/// Makes `fd` this process's descriptor `target`, kept across `execve`: `dup2`, or clearing
/// close-on-exec when `fd` already is `target`. Async-signal-safe (for `pre_exec`, between
/// fork and exec).
pub fn inherit_as(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 and fcntl(F_SETFD) take descriptor numbers and touch no memory of ours.
    let rc = unsafe {
        if fd == target {
            libc::fcntl(target, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on a descriptor number.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn a_descriptor_moves_to_the_target_without_close_on_exec() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(cloexec(f.as_raw_fd()));
        // In place: close-on-exec cleared.
        inherit_as(f.as_raw_fd(), f.as_raw_fd()).unwrap();
        assert!(!cloexec(f.as_raw_fd()));
        // To another number: a duplicate without close-on-exec.
        let g = std::fs::File::open("/dev/null").unwrap();
        let target = g.as_raw_fd() + 100;
        inherit_as(g.as_raw_fd(), target).unwrap();
        assert!(!cloexec(target));
        // SAFETY: closing the duplicate made above, owned by nothing else.
        unsafe { libc::close(target) };
        assert!(inherit_as(-1, target).is_err());
    }
}
