//! Signals.

/// The kernel's `struct sigaction` for `rt_sigaction(2)` on x86-64 and aarch64.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Resets every signal's disposition to the default with the raw system call: glibc refuses
/// its internal signals 32 and 33, which its `posix_spawn` leaves ignored in children (and
/// ignored dispositions survive `execve` into a container). Async-signal-safe (for
/// `pre_exec` and the runtime's init between fork and exec).
pub fn reset_dispositions() {
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid kernel sigaction and an 8-byte signal set; no
        // handler is installed, so nothing runs in this process's memory.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// The signals a supervisor passes on to the process it waits for (the runtime's foreground
/// `run`, rootless berthd's parent).
pub const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Blocks `signals` for the calling thread and returns a non-blocking, close-on-exec signalfd
/// that reports them. Children started through `std::process::Command` get an empty mask
/// again.
pub fn signalfd(signals: &[i32]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let set = mask(libc::SIG_BLOCK, signals)?;
    // SAFETY: set is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and owned here.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Unblocks `signals` for the calling thread again (after [`signalfd`]).
pub fn unblock(signals: &[i32]) -> std::io::Result<()> {
    mask(libc::SIG_UNBLOCK, signals).map(drop)
}

/// Changes the calling thread's signal mask by `how` for `signals`; the set of them.
fn mask(how: libc::c_int, signals: &[i32]) -> std::io::Result<libc::sigset_t> {
    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; sigaddset rejects invalid numbers with an error.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: set is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Reads every pending signal from a (non-blocking) signalfd; returns their numbers.
pub fn drain_signalfd(fd: std::os::fd::BorrowedFd<'_>) -> Vec<i32> {
    const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut out = Vec::new();
    let mut buf = [0u8; SIZE];
    loop {
        // Each read returns whole `signalfd_siginfo` records, whose first field is `ssi_signo`.
        match rustix::io::read(fd, &mut buf) {
            Ok(SIZE) => out.push(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as i32),
            Err(rustix::io::Errno::INTR) => continue,
            _ => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    #[test]
    fn signalfd_reports_blocked_signals() {
        // On a thread of its own: the mask stays there.
        std::thread::spawn(|| {
            let fd = super::signalfd(&[libc::SIGUSR2]).unwrap();
            assert!(super::drain_signalfd(fd.as_fd()).is_empty());
            // SAFETY: raises a signal this thread has blocked; it stays pending for the fd.
            let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
            assert_eq!(rc, 0);
            assert_eq!(super::drain_signalfd(fd.as_fd()), vec![libc::SIGUSR2]);
            assert!(super::drain_signalfd(fd.as_fd()).is_empty());
        })
        .join()
        .unwrap();
    }
}
