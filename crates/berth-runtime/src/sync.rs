//! The message channel between the runtime process and the container's init while it is set up:
//! a `SOCK_SEQPACKET` socket pair carrying one JSON message per packet.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// Parent → child: the child has been placed in its cgroup; go on.
    Go,
    /// Child → parent: write the uid/gid maps of this process (the one that unshared the user ns).
    MapRequest { pid: i32 },
    /// Parent → child: maps written.
    MapDone,
    /// Child → parent: the container's init, as a pid in the runtime's pid namespace.
    InitPid { pid: i32 },
    /// Child → parent: mounts are in place; run prestart and createRuntime hooks.
    RuntimeHooks,
    /// Parent → child: hooks ran; `state` is the OCI state to give createContainer hooks.
    HooksDone { state: String },
    /// Child → parent: set up and waiting for `start`.
    Ready,
    /// Child → parent: setup failed (the child exits next). `errno` is the system error at the
    /// root of it, if any.
    Error { message: String, errno: Option<i32> },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("sync socket: the container's init exited before it was ready")]
    Eof,
    #[error("sync socket: malformed message: {0}")]
    Decode(#[from] serde_json::Error),
    /// The error the container's init reported.
    #[error("{message}")]
    Remote {
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("sync socket: expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: Msg },
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> std::io::Result<(Channel, Channel)> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<(), SyncError> {
        let data = serde_json::to_vec(msg)?;
        loop {
            match socket::send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
                Ok(_) => return Ok(()),
            }
        }
    }

    /// The next message as sent (an `Error` included).
    fn recv_raw(&self, flags: MsgFlags) -> Result<Msg, SyncError> {
        let mut buf = vec![0u8; 65536];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, flags) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
                Ok(0) => return Err(SyncError::Eof),
                Ok(n) => return Ok(serde_json::from_slice(&buf[..n])?),
            }
        }
    }

    /// The next message; an `Error` from the other side is returned as [`SyncError::Remote`].
    pub fn recv(&self) -> Result<Msg, SyncError> {
        match self.recv_raw(MsgFlags::empty())? {
            Msg::Error { message, errno } => Err(remote(message, errno)),
            msg => Ok(msg),
        }
    }

    /// The error the other side reported, if one is queued (without waiting). A failure on the
    /// runtime's side of the handshake (`EPIPE` writing to an init that has exited, `ESRCH`
    /// moving it into its cgroup) is the consequence of the init's own failure, which it reports
    /// before it exits: that is the error to show.
    pub fn pending_error(&self) -> Option<SyncError> {
        loop {
            match self.recv_raw(MsgFlags::MSG_DONTWAIT) {
                Ok(Msg::Error { message, errno }) => return Some(remote(message, errno)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    pub fn expect(
        &self,
        expected: &'static str,
        pred: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, SyncError> {
        let m = self.recv()?;
        if pred(&m) {
            Ok(m)
        } else {
            Err(SyncError::Unexpected { expected, got: m })
        }
    }
}

fn remote(message: String, errno: Option<i32>) -> SyncError {
    SyncError::Remote {
        message,
        source: errno.map(std::io::Error::from_raw_os_error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_error_is_found_after_the_peer_left() {
        let (a, b) = pair().unwrap();
        b.send(&Msg::InitPid { pid: 7 }).unwrap();
        b.send(&Msg::Error {
            message: "mount x: Permission denied".into(),
            errno: Some(libc::EACCES),
        })
        .unwrap();
        drop(b);
        // Writing to the departed peer fails; the reason is waiting in the socket.
        assert!(matches!(a.send(&Msg::Go), Err(SyncError::Io(_))));
        let e = a.pending_error().expect("the peer's error");
        assert_eq!(e.to_string(), "mount x: Permission denied");
        let src = std::error::Error::source(&e).unwrap();
        let io = src.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.raw_os_error(), Some(libc::EACCES));
        assert!(a.pending_error().is_none());
        // Nothing queued and the peer alive: no wait, no error.
        let (c, _d) = pair().unwrap();
        assert!(c.pending_error().is_none());
    }
}
