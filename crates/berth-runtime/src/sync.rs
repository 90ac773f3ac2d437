//! The message channel between the runtime process and the container's init while it is set up:
//! a `SOCK_SEQPACKET` socket pair carrying one JSON message per packet.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    /// Child → parent: the exec'd process started (for `exec`).
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("sync socket: the container's init exited before it was ready")]
    Eof,
    #[error("sync socket: malformed message: {0}")]
    Decode(String),
    #[error("{0}")]
    Remote(String),
    #[error("sync socket: expected {expected}, got {got:?}")]
    Unexpected { expected: &'static str, got: Msg },
}

pub struct Channel {
    fd: OwnedFd,
}

pub fn pair() -> std::io::Result<(Channel, Channel)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<(), SyncError> {
        let data = serde_json::to_vec(msg).map_err(|e| SyncError::Decode(e.to_string()))?;
        loop {
            // SAFETY: `data` is a valid buffer of `data.len()` bytes.
            let rc = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            return Ok(());
        }
    }

    pub fn recv(&self) -> Result<Msg, SyncError> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: `buf` is a writable buffer of `buf.len()` bytes.
            let rc =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if rc == 0 {
                return Err(SyncError::Eof);
            }
            let msg: Msg = serde_json::from_slice(&buf[..rc as usize])
                .map_err(|e| SyncError::Decode(e.to_string()))?;
            if let Msg::Error { message } = msg {
                return Err(SyncError::Remote(message));
            }
            return Ok(msg);
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

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
