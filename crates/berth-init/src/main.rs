//! `berth-init -- CMD [ARGS…]`: the init of `docker run --init`, mounted read-only into the
//! container as `/sbin/docker-init`. It runs the command as its child, forwards every
//! catchable signal to it, reaps all zombies (it is PID 1), and exits with the child's status
//! (128 + signal when the child was killed). Built statically (see `build-static.sh`) so it
//! runs in any image.
//! Run as `pause` (or `berth-init --pause`) it is the pause process of a CRI pod sandbox.

use std::ffi::CString;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use rustix::process::WaitOptions;

fn die(msg: &str) -> ! {
    eprintln!("berth-init: {msg}");
    std::process::exit(127)
}

/// The pause process of a pod sandbox (run as `pause`, or `berth-init --pause`): holds the
/// pod's namespaces, reaps zombies (it is PID 1 of a pod sharing its PID namespace) and exits
/// 0 on SIGTERM or SIGINT.
fn pause() -> ! {
    let all = SigSet::all();
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None).is_err() {
        die("sigprocmask failed");
    }
    loop {
        // SAFETY: a zeroed siginfo_t is a valid output buffer for sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` and `info` are valid for the call.
        let sig = unsafe { libc::sigwaitinfo(all.as_ref(), &mut info) };
        match sig {
            libc::SIGTERM | libc::SIGINT => std::process::exit(0),
            libc::SIGCHLD => while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {},
            _ => {}
        }
    }
}

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if argv0.rsplit('/').next() == Some("pause") || args == ["--pause"] {
        pause();
    }
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

    let all = SigSet::all();
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None).is_err() {
        die("sigprocmask failed");
    }
    // SAFETY: fork in a single-threaded process; the child only calls async-signal-safe
    // functions (sigprocmask, execvp, write, _exit) before exec.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork failed");
    }
    if child == 0 {
        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&all), None);
        // SAFETY: argv is a NUL-terminated array of NUL-terminated strings that outlives the
        // call; write and _exit take plain buffers and integers (async-signal-safe).
        unsafe {
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
        // SAFETY: `all` and `info` are valid; waits for one of the blocked signals (nix's
        // `SigSet::wait` cannot return real-time signals, which must be forwarded too).
        let sig = unsafe { libc::sigwaitinfo(all.as_ref(), &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill(2) takes integers and has no memory effects (any signal number,
            // real-time ones included, which nix's `Signal` cannot name).
            unsafe { libc::kill(child, sig) };
            continue;
        }
        // Reap every zombie; stop when our child is gone.
        while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
            if pid.as_raw_nonzero().get() == child {
                let code = if let Some(code) = status.exit_status() {
                    code
                } else if let Some(sig) = status.terminating_signal() {
                    128 + sig
                } else {
                    1
                };
                std::process::exit(code);
            }
        }
    }
}
