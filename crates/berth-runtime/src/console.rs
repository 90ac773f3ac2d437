//! Terminals: the container's pty (created inside the container, its master sent to the caller's
//! console socket with `SCM_RIGHTS`), and the raw-mode proxy used by a foreground `run -t`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

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
    let c = crate::util::cstring(ptmx_path).map_err(io("ptmx path"))?;
    // SAFETY: valid path string.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(ConsoleError::Io {
            op: "open /dev/ptmx",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is new and owned here.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } < 0 {
        return Err(ConsoleError::Io {
            op: "unlockpt",
            source: std::io::Error::last_os_error(),
        });
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty number into an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(ConsoleError::Io {
            op: "ptsname",
            source: std::io::Error::last_os_error(),
        });
    }
    // TIOCGPTPEER opens the slave through the master, without a path lookup.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor.
    let sfd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if sfd < 0 {
        return Err(ConsoleError::Io {
            op: "open pty slave",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: sfd is new and owned here.
    let slave = unsafe { OwnedFd::from_raw_fd(sfd) };
    if let Some((rows, cols)) = size {
        set_size(slave.as_raw_fd(), rows, cols)?;
    }
    Ok(Pty {
        master,
        slave,
        slave_name: format!("/dev/pts/{n}"),
    })
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> Result<(), ConsoleError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(ConsoleError::Io {
            op: "set window size",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub fn get_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: zeroed winsize is a valid output buffer.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize struct.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } < 0 {
        return None;
    }
    Some((ws.ws_row, ws.ws_col))
}

/// Sends `fd` over the console socket, as runc does (the message body is the pty's name).
pub fn send_fd(sock: &UnixStream, fd: RawFd, name: &str) -> Result<(), ConsoleError> {
    let fds = [fd];
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
    for c in msg.cmsgs().map_err(errno("control message"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ConsoleError::Io {
        op: "receive pty master",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no descriptor in message"),
    })
}

/// Makes `slave` the controlling terminal and the stdio of the calling process.
pub fn attach_stdio(slave: RawFd) -> Result<(), ConsoleError> {
    // SAFETY: setsid/ioctl/dup2 on valid descriptors; failures are checked.
    unsafe {
        libc::setsid();
        if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
            return Err(ConsoleError::Io {
                op: "set controlling terminal",
                source: std::io::Error::last_os_error(),
            });
        }
        for target in 0..3 {
            if libc::dup2(slave, target) < 0 {
                return Err(ConsoleError::Io {
                    op: "dup2 pty",
                    source: std::io::Error::last_os_error(),
                });
            }
        }
    }
    Ok(())
}

/// Writes all of `data` to `fd`, retrying on EINTR.
pub fn write_all(fd: RawFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        // SAFETY: data is a valid readable buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}
