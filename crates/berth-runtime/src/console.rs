//! Terminals: the container's pty (created inside the container, its master sent to the caller's
//! console socket with `SCM_RIGHTS`), and the raw-mode proxy used by a foreground `run -t`.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use rustix::termios::Winsize;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console: {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("console socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> ConsoleError {
    move |source| ConsoleError::Io { op, source }
}

fn errno(op: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |e| ConsoleError::Io {
        op,
        source: std::io::Error::from(e),
    }
}

fn rerrno(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> ConsoleError {
    move |e| ConsoleError::Io {
        op,
        source: std::io::Error::from(e),
    }
}

pub fn connect(path: &str) -> Result<UnixStream, ConsoleError> {
    UnixStream::connect(path).map_err(|source| ConsoleError::Connect {
        path: path.to_string(),
        source,
    })
}

/// A new pty pair from the `ptmx` at `ptmx_path` (the container's `/dev/ptmx`).
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_name: String,
}

pub fn open_pty(ptmx_path: &str, size: Option<(u16, u16)>) -> Result<Pty, ConsoleError> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(ptmx_path)
        .map_err(io("open /dev/ptmx"))?
        .into();
    rustix::pty::unlockpt(&master).map_err(rerrno("unlockpt"))?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(rerrno("ptsname"))?;
    // TIOCGPTPEER opens the slave through the master, without a path lookup.
    use rustix::pty::OpenptFlags;
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .map_err(rerrno("open pty slave"))?;
    if let Some((rows, cols)) = size {
        set_size(&slave, rows, cols)?;
    }
    Ok(Pty {
        master,
        slave,
        slave_name: name.to_string_lossy().into_owned(),
    })
}

pub fn set_size(fd: impl AsFd, rows: u16, cols: u16) -> Result<(), ConsoleError> {
    let ws = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws).map_err(rerrno("set window size"))
}

pub fn get_size(fd: impl AsFd) -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(fd).ok()?;
    Some((ws.ws_row, ws.ws_col))
}

/// Sends `fd` over the console socket, as runc does (the message body is the pty's name).
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>, name: &str) -> Result<(), ConsoleError> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(errno("send pty master"))?;
    Ok(())
}

/// Receives one descriptor from a console socket connection (used by tests and the engine).
pub fn recv_fd(sock: &UnixStream) -> Result<OwnedFd, ConsoleError> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(errno("receive pty master"))?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().map_err(errno("control message"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel installed these descriptors in this process for this
                // message; nothing else owns them.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Extra descriptors (a misbehaving sender) are closed when `received` drops.
    if received.is_empty() {
        return Err(ConsoleError::Io {
            op: "receive pty master",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no descriptor in message",
            ),
        });
    }
    Ok(received.swap_remove(0))
}

/// Makes `slave` the controlling terminal and the stdio of the calling process.
pub fn attach_stdio(slave: OwnedFd) -> Result<(), ConsoleError> {
    // Failure (already a session leader) is harmless.
    let _ = nix::unistd::setsid();
    rustix::process::ioctl_tiocsctty(&slave).map_err(rerrno("set controlling terminal"))?;
    nix::unistd::dup2_stdin(&slave).map_err(errno("dup2 pty"))?;
    nix::unistd::dup2_stdout(&slave).map_err(errno("dup2 pty"))?;
    nix::unistd::dup2_stderr(&slave).map_err(errno("dup2 pty"))?;
    Ok(())
}

/// Writes all of `data` to `fd`, retrying on EINTR.
pub fn write_all(fd: impl AsFd, mut data: &[u8]) -> std::io::Result<()> {
    let fd = fd.as_fd();
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(n) => data = &data[n..],
        }
    }
    Ok(())
}
