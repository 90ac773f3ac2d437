//! Thin wrappers over the few system calls the shim needs: rustix's safe ones where it has
//! them (its raw Linux syscalls add nothing to the static binary's libc), libc for the rest
//! (`fork`, `_exit`, `poll` over raw descriptors, and `kill` with
//! any signal number, real-time ones included).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendFlags};
use rustix::process::{Pid, WaitOptions};

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Sets `FD_CLOEXEC` on the descriptor number `fd` (an invalid one fails with EBADF).
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) takes an integer argument and touches no memory; `fd` is only a
    // number here (it may not be open), which is why no borrowed descriptor is made of it.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Moves standard input to a new close-on-exec descriptor above the standard ones, puts
/// /dev/null in its place, and returns the new descriptor (kept for the process's life).
pub fn take_stdin() -> io::Result<RawFd> {
    let fd = rustix::io::fcntl_dupfd_cloexec(io::stdin(), 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    Ok(fd.into_raw_fd())
}

pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    let flags = if on {
        flags | OFlags::NONBLOCK
    } else {
        flags - OFlags::NONBLOCK
    };
    Ok(rustix::fs::fcntl_setfl(&fd, flags)?)
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return Ok(r?),
        }
    }
}

/// `read(2)`; `Ok(0)` is end of file. EIO (a pty whose slave side is gone) also reads as EOF.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    match retry(|| rustix::io::read(&fd, &mut *buf)) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
        r => r,
    }
}

/// `write(2)` (sockets get MSG_NOSIGNAL through `send`).
pub fn write(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    retry(|| rustix::io::write(&fd, buf))
}

/// `send(2)` without SIGPIPE and without blocking.
pub fn send(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    retry(|| rustix::net::send(&fd, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT))
}

pub fn write_all_blocking(fd: impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = write(&fd, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the shim forks only while single-threaded; both sides continue with plain code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

pub fn setsid() -> io::Result<()> {
    rustix::process::setsid()?;
    Ok(())
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running Rust destructors or atexit handlers, which
    // is what a forked intermediate process must do.
    unsafe { libc::_exit(code) }
}

pub fn set_child_subreaper() -> io::Result<()> {
    Ok(rustix::process::set_child_subreaper(Some(
        rustix::process::getpid(),
    ))?)
}

/// A new close-on-exec descriptor (numbered 3 or above) for the same open file.
pub fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Exit status of a `waitpid` status word: the code, or 128+signal when killed.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Reaps one exited child without blocking: `Some((pid, exit code))`, `None` when none is ready.
pub fn reap_any() -> Option<(libc::pid_t, i32)> {
    match retry(|| rustix::process::wait(WaitOptions::NOHANG)) {
        Ok(Some((pid, status))) => Some((pid.as_raw_nonzero().get(), exit_code(status.as_raw()))),
        _ => None,
    }
}

/// Blocks until `pid` (a child) exits; returns its exit code.
pub fn wait_pid(pid: libc::pid_t) -> io::Result<i32> {
    let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?;
    match retry(|| rustix::process::waitpid(Some(pid), WaitOptions::empty()))? {
        Some((_, status)) => Ok(exit_code(status.as_raw())),
        None => Err(io::Error::from_raw_os_error(libc::ECHILD)),
    }
}

/// `kill(2)` with any signal number (rustix's `Signal` needs `unsafe` for real-time ones).
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes integers and touches no memory of this process.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: fds is a valid, writable array of pollfd of the given length.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

pub fn set_winsize(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(fd, ws)?)
}

/// Receives one descriptor sent with SCM_RIGHTS (the pty master from the runtime).
pub fn recv_fd(sock: impl AsFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 256];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    retry(|| {
        rustix::net::recvmsg(
            &sock,
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
    })?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no descriptor in the console socket message",
    ))
}

/// Redirects stdin and stdout to /dev/null and stderr to `err` (or /dev/null).
pub fn redirect_stdio(err: Option<&Path>) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    match err.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    }) {
        Some(f) => rustix::stdio::dup2_stderr(&f)?,
        None => rustix::stdio::dup2_stderr(&null)?,
    }
    Ok(())
}

/// VmRSS of `pid` in KiB, from /proc/PID/status.
pub fn vm_rss_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How long a start waits for the init to exec the user's process (runc's `start` waits
/// without a bound; the shim's loop must not hang on an init stuck in a startContainer hook).
const EXEC_WAIT_MS: i32 = 5_000;

/// Starts a created container the way `runtime start` does: one byte into the exec fifo its
/// init blocks on (non-blocking open: no reader means the init is gone), then the fifo goes.
/// Like runc's `start` (which reads the fifo to its end), it returns once the init has closed
/// its read end, i.e. exec'd the user's process (or exited): a short command's output is then
/// already on its way to the log when the client asks for it right after the start.
pub fn write_exec_fifo(path: &Path) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                io::Error::other("the container's init is not waiting for start (it exited)")
            } else {
                e
            }
        })?;
    f.write_all(b"0")?;
    let _ = std::fs::remove_file(path);
    wait_no_reader(f.as_fd(), EXEC_WAIT_MS);
    Ok(())
}

/// Waits (at most `timeout_ms`) until the fifo whose write end is `fd` has no reader left
/// (POLLERR on the write end).
fn wait_no_reader(fd: impl AsFd, timeout_ms: i32) {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [libc::pollfd {
            fd: fd.as_fd().as_raw_fd(),
            events: 0,
            revents: 0,
        }];
        match poll(&mut fds, left.as_millis().max(1) as i32) {
            Ok(0) => continue,
            Ok(_) if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 => {
                return
            }
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

/// The placeholder of a standby's `--id` (see [`standby_args`]): as long as a container id,
/// and no id (not hexadecimal), so that a waiting standby is no container's process.
pub const STANDBY_ID: &str = "standby-standby-standby-standby-standby-standby-standby-standby-";

/// `--standby`: the command line the daemon sends on standard output (a socket to it), one
/// JSON array of strings and a newline. `None` when the daemon closed the socket first (it
/// exited or let this standby go) or sent something else.
pub fn standby_args() -> Option<Vec<String>> {
    let out = io::stdout();
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = retry(|| rustix::io::read(&out, &mut buf)).ok()?;
        if n == 0 {
            return None;
        }
        line.extend_from_slice(&buf[..n]);
        if line.last() == Some(&b'\n') {
            return serde_json::from_slice(&line).ok();
        }
    }
}

/// Writes `id` over the [`STANDBY_ID`] placeholder in this process's own command line (its
/// argument strings in its memory, what /proc/PID/cmdline shows), so that the daemon finds
/// a standby turned shim by its container's id as it finds any other (see berthd's
/// `task_processes`). Only an id of the placeholder's length fits.
pub fn set_cmdline_id(id: &str) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if id.len() != STANDBY_ID.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "id length"));
    }
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let at = cmdline
        .split(|b| *b == 0)
        .scan(0usize, |off, a| {
            let here = *off;
            *off += a.len() + 1;
            Some((here, a))
        })
        .find(|(_, a)| *a == STANDBY_ID.as_bytes())
        .map(|(off, _)| off)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no placeholder"))?;
    // Field 48 of /proc/self/stat, `arg_start` (counted after the parenthesized name).
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let arg_start: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(45))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/self/stat"))?;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    mem.write_all_at(id.as_bytes(), arg_start + at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }
}
