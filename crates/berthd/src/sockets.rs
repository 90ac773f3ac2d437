//! The daemon's listening sockets beyond TCP (see [`crate::listen`]): unix sockets owned by
//! `root:GROUP` with mode 0660 (as dockerd's `docker` group), sockets passed by systemd
//! (`-H fd://`, `fd://N`, `fd://NAME`), and Docker's socket for `docker-compat`, which is never
//! taken from a daemon listening on it.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A socket that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{}: {what}", .path.display())]
    Io {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("refusing to listen on {}: {owner} is listening on it{hint}", .path.display())]
    InUse {
        path: PathBuf,
        owner: String,
        hint: String,
    },
    #[error("refusing to replace {}: it is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("no sockets found via socket activation (-H fd://): start berthd through berthd.socket, systemd-socket-activate or another supervisor passing LISTEN_FDS")]
    NoActivatedSockets,
    #[error("socket activation: no passed socket matches fd://{0} (passed: {1})")]
    NoSuchFd(String, String),
    #[error("socket activation: descriptor {0} is neither a unix nor a TCP socket")]
    BadFd(String),
    #[error("group {0:?} does not exist (--group)")]
    NoGroup(String),
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| SocketError::Io { path, what, source }
}

/// A group's id from `/etc/group`.
pub fn group_id(name: &str) -> Option<u32> {
    group_id_in(&std::fs::read_to_string("/etc/group").ok()?, name)
}

fn group_id_in(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// The group of the daemon's sockets: the gid, or `None` (root only) when the default group
/// does not exist; a group named explicitly must exist.
pub fn socket_group(name: &str, explicit: bool) -> Result<Option<u32>, SocketError> {
    match group_id(name) {
        Some(g) => Ok(Some(g)),
        None if explicit => Err(SocketError::NoGroup(name.to_string())),
        None => {
            tracing::debug!("group {name:?} does not exist: the API sockets are root's only");
            Ok(None)
        }
    }
}

/// Who listens on the unix socket at `path`: the process holding it (from `/proc/net/unix`
/// and `/proc/*/fd`, without connecting, so a socket-activated daemon is not started), or,
/// when the listener is in another network namespace, a connection that succeeds.
pub fn listener_of(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    // `/proc/net/unix` lists sockets by the path they were bound at, in whatever mount
    // namespace that was: a candidate counts only when its holder sees our file there.
    for inode in listening_inodes(path, &meta) {
        if let Some((pid, comm)) = holder_of(inode) {
            if holder_sees(pid, path, &meta) {
                return Some(format!("{comm} (pid {pid})"));
            }
        }
    }
    UnixStream::connect(path)
        .ok()
        .map(|_| "another process".to_string())
}

/// Whether process `pid` sees the file `meta` describes at `path`. The path is resolved inside
/// the holder's root (`RESOLVE_IN_ROOT`): through a plain `/proc/PID/root/...` an absolute
/// symlink on the way (`/var/run` -> `/run`) would resolve in *our* root and find our own file.
fn holder_sees(pid: u32, path: &Path, meta: &std::fs::Metadata) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(
        format!("/proc/{pid}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let rel = path.strip_prefix("/").unwrap_or(path);
    rustix::fs::openat2(
        &root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
    .and_then(|fd| rustix::fs::fstat(&fd))
    .is_ok_and(|st| st.st_dev == meta.dev() && st.st_ino == meta.ino())
}

/// The socket inodes of the listening unix sockets bound at `path` (in any mount namespace).
fn listening_inodes(path: &Path, meta: &std::fs::Metadata) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let listening = u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & 0x0001_0000 != 0);
        let named = Path::new(f[7]) == path
            || std::fs::metadata(f[7])
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
        if listening && named {
            if let Ok(i) = f[6].parse() {
                v.push(i);
            }
        }
    }
    v
}

/// A process holding socket `inode` open.
fn holder_of(inode: u64) -> Option<(u32, String)> {
    let target = format!("socket:[{inode}]");
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let comm = std::fs::read_to_string(p.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                return Some((pid, comm));
            }
        }
    }
    None
}

/// Binds a unix socket at `path` (mode 0660, group `gid`). A stale socket file is replaced;
/// a socket some process listens on is not (`hint` ends that error).
pub fn bind_unix(path: &Path, gid: Option<u32>, hint: &str) -> Result<UnixListener, SocketError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io_err(d, "creating the directory"))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Some(owner) = listener_of(path) {
                return Err(SocketError::InUse {
                    path: path.to_path_buf(),
                    owner,
                    hint: hint.to_string(),
                });
            }
            std::fs::remove_file(path).map_err(io_err(path, "removing the stale socket"))?;
        }
        Ok(_) => return Err(SocketError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(io_err(path, "binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io_err(path, "setting the mode"))?;
    if let Some(g) = gid {
        std::os::unix::fs::chown(path, Some(0), Some(g))
            .map_err(io_err(path, "setting the group"))?;
    }
    l.set_nonblocking(true)
        .map_err(io_err(path, "setting O_NONBLOCK"))?;
    Ok(l)
}

/// A socket passed by the supervisor.
#[derive(Debug)]
pub enum Passed {
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

impl Passed {
    /// What the log says about it.
    pub fn describe(&self) -> String {
        match self {
            Passed::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => format!("{} (passed by systemd)", p.display()),
                None => "a unix socket passed by systemd".into(),
            },
            Passed::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp://{a} (passed by systemd)"),
                Err(_) => "a TCP socket passed by systemd".into(),
            },
        }
    }
}

fn classify(fd: OwnedFd, label: &str) -> Result<Passed, SocketError> {
    let u = UnixListener::from(fd);
    if u.local_addr().is_ok() {
        u.set_nonblocking(true)
            .map_err(io_err(Path::new(label), "setting O_NONBLOCK"))?;
        return Ok(Passed::Unix(u));
    }
    let t = std::net::TcpListener::from(OwnedFd::from(u));
    if t.local_addr().is_ok() {
        t.set_nonblocking(true)
            .map_err(io_err(Path::new(label), "setting O_NONBLOCK"))?;
        return Ok(Passed::Tcp(t));
    }
    Err(SocketError::BadFd(label.to_string()))
}

/// The sockets `fd://SPEC` selects from those passed (`""` or `*`: all; a number: that
/// descriptor; else the `FileDescriptorName=`). Selected ones are taken out of `passed`.
pub fn take_passed(
    spec: &str,
    passed: &mut Vec<(OwnedFd, Option<String>)>,
) -> Result<Vec<Passed>, SocketError> {
    use std::os::fd::AsRawFd;
    if passed.is_empty() {
        return Err(SocketError::NoActivatedSockets);
    }
    let all = spec.is_empty() || spec == "*";
    let mut out = Vec::new();
    let mut rest = Vec::new();
    let listing: Vec<String> = passed
        .iter()
        .map(|(fd, n)| match n {
            Some(n) => format!("{} ({n})", fd.as_raw_fd()),
            None => fd.as_raw_fd().to_string(),
        })
        .collect();
    for (fd, name) in passed.drain(..) {
        let hit = all
            || spec.parse::<i32>().is_ok_and(|n| n == fd.as_raw_fd())
            || name.as_deref() == Some(spec);
        if hit {
            let label = format!("fd {}", fd.as_raw_fd());
            out.push(classify(fd, &label)?);
        } else {
            rest.push((fd, name));
        }
    }
    *passed = rest;
    if out.is_empty() {
        return Err(SocketError::NoSuchFd(spec.to_string(), listing.join(", ")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        let t = "root:x:0:\nberth:x:998:alice,bob\nbad line\n";
        assert_eq!(group_id_in(t, "berth"), Some(998));
        assert_eq!(group_id_in(t, "root"), Some(0));
        assert_eq!(group_id_in(t, "docker"), None);
        assert!(matches!(
            socket_group("no-such-group-berth-test", true),
            Err(SocketError::NoGroup(_))
        ));
        assert_eq!(
            socket_group("no-such-group-berth-test", false).unwrap(),
            None
        );
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/api.sock");
        let l = bind_unix(&p, Some(0), "").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        // A listener: refused, naming this process.
        match bind_unix(&p, None, "; stop it first") {
            Err(e @ SocketError::InUse { .. }) => {
                let s = e.to_string();
                assert!(s.contains(&format!("pid {}", std::process::id())), "{s}");
                assert!(s.ends_with("; stop it first"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        drop(l);
        // The file of a closed listener is stale: replaced.
        let l2 = bind_unix(&p, None, "").unwrap();
        drop(l2);
        // Not a socket: refused.
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            bind_unix(&f, None, ""),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(listener_of(&f), None);
    }

    #[test]
    fn passed_sockets_are_selected() {
        let dir = tempfile::tempdir().unwrap();
        let u = UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (ufd, tfd): (OwnedFd, OwnedFd) = (u.into(), t.into());
        use std::os::fd::AsRawFd;
        let traw = tfd.as_raw_fd();
        let mut passed = vec![(ufd, Some("api".to_string())), (tfd, None)];
        let got = take_passed(&traw.to_string(), &mut passed).unwrap();
        assert!(matches!(got[..], [Passed::Tcp(_)]));
        assert_eq!(passed.len(), 1);
        assert!(matches!(
            take_passed("nope", &mut passed),
            Err(SocketError::NoSuchFd(..))
        ));
        let got = take_passed("api", &mut passed).unwrap();
        assert!(matches!(got[..], [Passed::Unix(_)]));
        assert!(got[0].describe().ends_with("a.sock (passed by systemd)"));
        assert!(matches!(
            take_passed("", &mut passed),
            Err(SocketError::NoActivatedSockets)
        ));
    }
}
