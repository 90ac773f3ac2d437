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
