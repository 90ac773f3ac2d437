//! systemd's protocols, without libsystemd: readiness notification (`sd_notify`: `READY=1`,
//! `RELOADING=1`, `STOPPING=1`, `STATUS=…` as datagrams to `$NOTIFY_SOCKET`) and socket
//! activation (`sd_listen_fds`: descriptors 3… passed with `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES`), as `berthd.service` (`Type=notify`) and `berthd.socket` use them. Both
//! work the same under `systemd-socket-activate` or any other supervisor speaking them.
//!
//! [`take_environment`] runs first in `main`, before any thread exists: it reads the
//! variables and removes them, so shims, runtimes and containers never inherit them.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// What systemd passed to the daemon.
#[derive(Debug, Default)]
pub struct Environment {
    /// Where notifications go (`NOTIFY_SOCKET`), when set.
    pub notify: Option<Notifier>,
    /// Sockets passed by socket activation, in order (fd 3 first), with their names.
    pub listen_fds: Vec<(OwnedFd, Option<String>)>,
}

/// A problem with socket activation's variables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0:?} is not a number")]
    BadCount(String),
    #[error("LISTEN_PID={0:?} is not a number")]
    BadPid(String),
}

/// A passed descriptor and its name (`LISTEN_FDNAMES`).
pub type NamedFd = (RawFd, Option<String>);

/// The descriptors (and names) that `LISTEN_*` give to process `my_pid`: `None` when they are
/// meant for another process or absent.
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Option<Vec<NamedFd>>, ActivationError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadPid(pid.to_string()))?;
    if pid != my_pid {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(fds.to_string()))?;
    let names: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    Ok(Some(
        (0..n)
            .map(|i| {
                (
                    3 + i as RawFd,
                    names
                        .get(i)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.to_string()),
                )
            })
            .collect(),
    ))
}

/// Reads and removes systemd's variables. Call before starting any thread.
pub fn take_environment() -> Result<Environment, ActivationError> {
    let var = |k: &str| std::env::var(k).ok();
    let notify = var("NOTIFY_SOCKET").and_then(|s| Notifier::new(&s));
    let fds = parse_listen_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for k in [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        std::env::remove_var(k);
    }
    let mut listen_fds = Vec::new();
    for (fd, name) in fds?.unwrap_or_default() {
        // SAFETY: LISTEN_PID names this process, so systemd's protocol hands it descriptors
        // 3..3+LISTEN_FDS; nothing else in the process owns them (this runs once, first).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Not inherited by the shims and runtimes the daemon starts.
        let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
        listen_fds.push((owned, name));
    }
    Ok(Environment { notify, listen_fds })
}

/// Sends notifications to the supervisor's socket.
#[derive(Debug)]
pub struct Notifier {
    addr: SocketAddr,
    sock: UnixDatagram,
}

impl Notifier {
    /// For `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn new(target: &str) -> Option<Notifier> {
        let addr = match target.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
            None if target.starts_with('/') => SocketAddr::from_pathname(target).ok()?,
            None => return None,
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { addr, sock })
    }

    /// Sends one message (`KEY=VALUE` lines).
    pub fn send(&self, msg: &str) -> std::io::Result<()> {
        self.sock.send_to_addr(msg.as_bytes(), &self.addr).map(drop)
    }
}

/// The monotonic clock in microseconds (`MONOTONIC_USEC=` of `RELOADING=1`).
pub fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
}

/// The daemon's notifications (nothing happens without a `NOTIFY_SOCKET`).
#[derive(Debug, Default)]
pub struct Notify(pub Option<Notifier>);

impl Notify {
    fn send(&self, msg: String) {
        if let Some(n) = &self.0 {
            if let Err(e) = n.send(&msg) {
                tracing::warn!("sd_notify: {e}");
            }
        }
    }

    /// The API answers.
    pub fn ready(&self, status: &str) {
        self.send(format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// A reload starts (`READY=1` follows when it is done).
    pub fn reloading(&self) {
        self.send(format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={}",
            monotonic_usec()
        ));
    }

    /// The daemon is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=shutting down (containers keep running)".into());
    }

    /// A status line.
    pub fn status(&self, status: &str) {
        self.send(format!("STATUS={status}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_env() {
        assert_eq!(parse_listen_env(None, None, None, 7), Ok(None));
        assert_eq!(parse_listen_env(Some("8"), Some("2"), None, 7), Ok(None));
        assert_eq!(
            parse_listen_env(Some("7"), Some("2"), Some("berthd.socket:docker"), 7),
            Ok(Some(vec![
                (3, Some("berthd.socket".into())),
                (4, Some("docker".into()))
            ]))
        );
        assert_eq!(
            parse_listen_env(Some("7"), Some("1"), None, 7),
            Ok(Some(vec![(3, None)]))
        );
        assert_eq!(
            parse_listen_env(Some("7"), Some("x"), None, 7),
            Err(ActivationError::BadCount("x".into()))
        );
        assert_eq!(
            parse_listen_env(Some("p"), Some("1"), None, 7),
            Err(ActivationError::BadPid("p".into()))
        );
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notify(Notifier::new(path.to_str().unwrap()));
        n.ready("ok");
        n.reloading();
        n.stopping();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        for _ in 0..3 {
            let len = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).to_string());
        }
        assert!(
            got[0].starts_with("READY=1\nSTATUS=ok\nMAINPID="),
            "{got:?}"
        );
        assert!(got[1].starts_with("RELOADING=1\n"), "{got:?}");
        assert!(got[1].contains("MONOTONIC_USEC="), "{got:?}");
        assert!(got[2].starts_with("STOPPING=1"), "{got:?}");

        // The abstract namespace.
        let name = format!("berth-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        Notify(Notifier::new(&format!("@{name}"))).status("hi");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=hi");
        assert!(Notifier::new("relative/path").is_none());
        // Without a socket nothing is sent and nothing fails.
        Notify(None).ready("x");
    }
}
