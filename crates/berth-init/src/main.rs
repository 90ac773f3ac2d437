//! `berth-init -- CMD [ARGS…]`: the init of `docker run --init`, mounted read-only into the
//! container as `/sbin/docker-init`. It runs the command as its child, forwards every
//! catchable signal to it, reaps all zombies (it is PID 1), and exits with the child's status
//! (128 + signal when the child was killed). Built statically (see `build-static.sh`) so it
//! runs in any image.

use std::ffi::CString;

fn die(msg: &str) -> ! {
    eprintln!("berth-init: {msg}");
    std::process::exit(127)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    if args.is_empty() {
        die("usage: berth-init -- COMMAND [ARG...]");
    }
    let cargs: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| die("argument contains NUL")))
        .collect();
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());

    // SAFETY: a zeroed sigset is valid input for sigfillset, which initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a valid sigset_t; blocking signals has no memory effects.
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (sigprocmask, setpgid, execvp, write, _exit) before exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork failed");
    }
    if child == 0 {
        // SAFETY: see above; argv is NUL-terminated and outlives the call.
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
            libc::execvp(argv[0], argv.as_ptr());
            let msg = b"berth-init: exec failed\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(if *libc::__errno_location() == libc::ENOENT {
                127
            } else {
                126
            });
        }
    }
    loop {
        // SAFETY: a zeroed siginfo_t is a valid output buffer for sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` and `info` are valid; waits for one of the blocked signals.
        let sig = unsafe { libc::sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        // Reap every zombie; stop when our child is gone.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a valid integer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    1
                };
                std::process::exit(code);
            }
        }
    }
}
