//! `docker cp`: `HEAD`/`GET`/`PUT /containers/{id}/archive` and `GET /containers/{id}/export`.
//!
//! Every path inside a container is resolved on file descriptors relative to a descriptor of
//! the container's root, with `openat2(RESOLVE_IN_ROOT)` (symlinks and `..` can never leave
//! it) and single-component `openat(O_NOFOLLOW)` below a resolved directory; no path string
//! is ever joined onto a host path (the `docker cp` symlink-race CVE).
//!
//! The root: for a running container `/proc/<init>/root` (its mount namespace: volumes, binds
//! and tmpfs mounts are all there), checked against a pidfd so a recycled pid is never used.
//! For a stopped one, a dedicated thread unshares its mount namespace (`CLONE_FS|CLONE_NEWNS`,
//! everything private), mounts the container's snapshot and binds its volumes and bind mounts
//! on their destinations (resolved inside the root), and does the whole operation there: when
//! the thread ends the namespace and all these mounts disappear, even after an error.
//!
//! Both run under the container's operation lock (the stopped case for the whole operation),
//! so a `start` racing with a copy waits for it instead of mounting the same snapshot twice.
//!
//! Uploads are extracted with berth-image's confined layer applier rooted at the target
//! directory's descriptor (no `..`, absolute paths, symlinks or hard links can leave it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Container, Engine, EngineError};
use crate::mounts;

/// Errors of archive operations (with Docker's status codes).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("Could not find the file {0} in container {1}")]
    NotFound(String, String),
    #[error("{0}")]
    Bad(String),
    /// dockerd's system errors (500) with their message.
    #[error("{0}")]
    Internal(String),
    /// `op` failed.
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Engine(Box<EngineError>),
    #[error("archive thread panicked")]
    Panicked,
}

impl From<EngineError> for ArchiveError {
    fn from(e: EngineError) -> Self {
        ArchiveError::Engine(Box::new(e))
    }
}

impl ArchiveError {
    /// Docker's status code for the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ArchiveError::NotFound(..) => StatusCode::NOT_FOUND,
            ArchiveError::Bad(_) => StatusCode::BAD_REQUEST,
            ArchiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ArchiveError::Engine(e) => e.status(),
            ArchiveError::Io { .. } | ArchiveError::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn ioe(op: &str, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        op: op.to_string(),
        source,
    }
}

type Result<T> = std::result::Result<T, ArchiveError>;

impl ArchiveError {
    /// The error naming the container as the client did (dockerd: "Could not find the file
    /// /x in container web").
    pub fn named(self, name: &str) -> ArchiveError {
        match self {
            ArchiveError::NotFound(path, _) => ArchiveError::NotFound(path, name.to_string()),
            e => e,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the container's root

/// Runs `f` with a descriptor of the container's root, on a dedicated thread (see the module
/// documentation). `with_mounts = false` gives the bare root filesystem (export).
fn with_root<T: Send + 'static>(
    engine: Arc<Engine>,
    c: Container,
    with_mounts: bool,
    f: impl FnOnce(BorrowedFd<'_>) -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    std::thread::spawn(move || {
        // The container's operation lock (start, stop, remove and update take it): a stopped
        // container cannot start while its snapshot is mounted here (two overlay mounts of one
        // upper directory are undefined), and the state is read under the lock.
        let entry = engine
            .lookup(&c.id)
            .map_err(|_| ArchiveError::NotFound("/".into(), c.id.clone()))?;
        let op = entry.op.blocking_lock();
        let mut c = entry.rec.lock().unwrap().clone();
        // Running: its own root (export stays on the root filesystem by not crossing mounts).
        // The descriptor pins that root: the lock is not needed any longer.
        if c.state.running {
            match running_root(&c) {
                Ok(root) => {
                    drop(op);
                    return f(root.as_fd());
                }
                Err(e) => {
                    // Its process exited after the state was read (`run -d … true` then
                    // `export`): once the exit is recorded and its root unmounted (the exit
                    // holds the teardown lock through both), it is a stopped container.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while entry.rec.lock().unwrap().state.running {
                        if std::time::Instant::now() > deadline {
                            return Err(e);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    drop(entry.teardown.blocking_lock());
                    c = entry.rec.lock().unwrap().clone();
                    if c.state.running {
                        // Restarted meanwhile (its restart policy): its new root.
                        let root = running_root(&c)?;
                        drop(op);
                        return f(root.as_fd());
                    }
                }
            }
        }
        // Volumes with mount options are mounted in the host namespace first (refcounted).
        let user = format!("archive-{}", crate::util::random_hex(8));
        let points = if with_mounts {
            let mut p = engine.mounts.load(&c.id);
            // Image mounts are mounted only while the container runs.
            p.retain(|m| m.typ != "tmpfs" && m.typ != "image");
            p.sort_by_key(|m| m.destination.split('/').filter(|s| !s.is_empty()).count());
            p
        } else {
            vec![]
        };
        let mut sources = Vec::new();
        let res = (|| {
            for m in &points {
                let src = engine.mounts.host_source(m, &user)?;
                sources.push((m.clone(), src));
            }
            stopped_root(&engine, &c, &sources, f)
        })();
        engine.volumes.release(&user);
        drop(op);
        res
    })
}

fn running_root(c: &Container) -> Result<OwnedFd> {
    let pid = c.state.pid as libc::pid_t;
    // SAFETY: pidfd_open(2) with a pid and no flags; returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(ArchiveError::Bad(format!(
            "container {} is not running",
            c.id
        )));
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| ioe("opening the container's root", e))?;
    // The pid still names the same process: the root we opened is the container's.
    // SAFETY: pidfd_send_signal(2) with signal 0 only checks that the process lives.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(ArchiveError::Bad(format!(
            "container {} is not running",
            c.id
        )));
    }
    Ok(root.into())
}

fn cstr(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ArchiveError::Bad("NUL in path".into()))
}

fn sys_mount(
    src: Option<&Path>,
    target: &Path,
    flags: libc::c_ulong,
) -> std::result::Result<(), io::Error> {
    let s = src.map(|s| std::ffi::CString::new(s.as_os_str().as_bytes()).unwrap_or_default());
    let t = std::ffi::CString::new(target.as_os_str().as_bytes()).unwrap_or_default();
    // SAFETY: valid NUL-terminated strings (or NULL) that outlive the call.
    let rc = unsafe {
        libc::mount(
            s.as_ref().map(|s| s.as_ptr()).unwrap_or(std::ptr::null()),
            t.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn stopped_root<T>(
    engine: &Engine,
    c: &Container,
    sources: &[(mounts::MountPoint, PathBuf)],
    f: impl FnOnce(BorrowedFd<'_>) -> Result<T>,
) -> Result<T> {
    // SAFETY: unshare(2) on this thread only (CLONE_FS gives it its own root/cwd first).
    if unsafe { libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) } != 0 {
        return Err(ioe("unshare", io::Error::last_os_error()));
    }
    sys_mount(None, Path::new("/"), libc::MS_REC | libc::MS_PRIVATE)
        .map_err(|e| ioe("making mounts private", e))?;
    let dir = engine
        .cfg
        .exec_root
        .join("containers")
        .join(&c.id)
        .join(format!("archive-{}", crate::util::random_hex(6)));
    std::fs::create_dir_all(&dir).map_err(|e| ioe("creating a mount point", e))?;
    let res = (|| {
        let sn = engine.images.snapshotter().map_err(EngineError::from)?;
        sn.mount_container(&c.id, &dir).map_err(EngineError::from)?;
        let root = std::fs::File::open(&dir).map_err(|e| ioe("opening the root", e))?;
        for (m, src) in sources {
            bind_in_root(root.as_fd(), m, src)?;
        }
        // Re-open: the descriptor must see the mounts made below the root.
        let root = std::fs::File::open(&dir).map_err(|e| ioe("opening the root", e))?;
        f(root.as_fd())
    })();
    // Only this thread's namespace holds these mounts; detach and remove the directory.
    let t = cstr(&dir)?;
    // SAFETY: umount2(2) with a valid path string.
    unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    let _ = std::fs::remove_dir(&dir);
    res
}

/// dockerd's `SetupWorkingDirectory` at create: the missing directories of the working
/// directory are made (0755, the daemon's user) in the container's root file system, the
/// snapshot alone (no volume yet), so `docker cp` finds it before the first start; an
/// existing non-directory there is refused with dockerd's words (a 500, as its plain error).
/// Runs on a thread of its own (the mount namespace it unshares ends with it).
pub(crate) fn make_working_dir(
    engine: &Engine,
    c: &Container,
) -> std::result::Result<(), EngineError> {
    let wd = c.config.working_dir.as_str();
    if wd.is_empty() || wd == "/" {
        return Ok(());
    }
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            stopped_root(engine, c, &[], |root| {
                let Err(e) = berth_util::root::mkdir_all_in_root(root, Path::new(wd), 0o755) else {
                    return Ok(());
                };
                let not_dir = open_in_root(root, wd, libc::O_PATH)
                    .and_then(|fd| fstat(fd.as_fd()))
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR);
                Err(if not_dir {
                    ArchiveError::Internal(format!("Cannot mkdir: {wd} is not a directory"))
                } else {
                    ioe(&format!("mkdir {wd}"), e)
                })
            })
        })
        .join()
        .unwrap_or(Err(ArchiveError::Panicked))
    });
    made.map_err(|e| match e {
        ArchiveError::Engine(e) => *e,
        e => EngineError::Internal(e.to_string()),
    })
}

fn bind_in_root(root: BorrowedFd<'_>, m: &mounts::MountPoint, src: &Path) -> Result<()> {
    use berth_runtime::util::fd_path;
    use berth_util::root::{mkdir_all_in_root, touch_in_root};
    // A volume subpath: resolved inside the volume on a descriptor (opened in this thread's
    // mount namespace, as bind mounts need), bound through it.
    let pinned = if m.subpath.is_empty() {
        None
    } else {
        Some(mounts::open_subpath(m, src)?)
    };
    let pinned_path = pinned.as_ref().map(|fd| PathBuf::from(fd_path(fd)));
    let src = pinned_path.as_deref().unwrap_or(src);
    let is_dir = std::fs::metadata(src).map(|m| m.is_dir()).unwrap_or(true);
    let dest = Path::new(&m.destination);
    let fd = if is_dir {
        mkdir_all_in_root(root, dest, 0o755)
    } else {
        touch_in_root(root, dest)
    }
    .map_err(|e| ioe(&format!("preparing mount point {}", m.destination), e))?;
    let target = PathBuf::from(fd_path(&fd));
    let mut flags = libc::MS_BIND;
    if !m.non_recursive {
        flags |= libc::MS_REC;
    }
    sys_mount(Some(src), &target, flags).map_err(|e| {
        ioe(
            &format!("mounting {} on {}", src.display(), m.destination),
            e,
        )
    })?;
    if !m.rw {
        // `fd` still names the directory below the new mount: remount through a descriptor
        // opened after it, on the bind mount's root.
        let top = open_in_root(root, &m.destination, libc::O_PATH)
            .map_err(|e| ioe(&format!("opening mount point {}", m.destination), e))?;
        sys_mount(
            None,
            &PathBuf::from(fd_path(&top)),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        )
        .map_err(|e| ioe("read-only remount", e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// resolution and stat

/// Splits a container path into (parent, last name) the way Docker does: a trailing `/` or
/// `/.` means the directory itself, followed.
fn split(path: &str) -> (String, Option<String>) {
    let trimmed = path.trim_end_matches('/');
    if path.ends_with('/') || trimmed.ends_with("/.") || trimmed == "." || trimmed.is_empty() {
        return (path.to_string(), None);
    }
    match trimmed.rsplit_once('/') {
        Some((d, b)) if b != ".." => (
            if d.is_empty() { "/".into() } else { d.into() },
            Some(b.into()),
        ),
        _ => (trimmed.to_string(), None),
    }
}

/// An open entry: its parent directory and name (or the followed path itself), and its stat.
struct Target {
    /// `O_PATH` descriptor of the entry itself (symlinks not followed).
    fd: OwnedFd,
    st: libc::stat,
}

fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: i32) -> io::Result<OwnedFd> {
    berth_util::root::open_in_root(root, Path::new(path), flags)
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `st` is written by fstat(2) on success; zeroed is a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Resolves `path` inside the root: the parent followed, the last name not (Docker's
/// `ResolvePath` + lstat).
fn resolve(root: BorrowedFd<'_>, path: &str) -> io::Result<Target> {
    let (dir, base) = split(path);
    let fd = match base {
        None => open_in_root(root, &dir, libc::O_PATH)?,
        Some(b) => {
            let d = open_in_root(root, &dir, libc::O_PATH | libc::O_DIRECTORY)?;
            open_entry(&d, b.as_str())?
        }
    };
    let st = fstat(fd.as_fd())?;
    Ok(Target { fd, st })
}

/// The container path a symlink finally points at (symlinks resolved inside the root; a
/// missing component ends the walk lexically), like Docker's `FollowSymlinkInScope`.
fn follow_in_scope(root: BorrowedFd<'_>, path: &str) -> String {
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut queue: std::collections::VecDeque<Vec<u8>> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.as_bytes().to_vec())
        .collect();
    let mut links = 0;
    let join = |s: &[Vec<u8>]| {
        let mut p = Vec::new();
        for c in s {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        if p.is_empty() {
            p.push(b'/');
        }
        String::from_utf8_lossy(&p).into_owned()
    };
    let mut missing = false;
    while let Some(c) = queue.pop_front() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        stack.push(c);
        if missing {
            continue;
        }
        let p = join(&stack);
        let Ok(fd) = open_in_root(root, &p, libc::O_PATH | libc::O_NOFOLLOW) else {
            missing = true;
            continue;
        };
        let Ok(st) = fstat(fd.as_fd()) else {
            missing = true;
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            links += 1;
            if links > 40 {
                break;
            }
            let Ok(t) = rustix::fs::readlinkat(&fd, "", Vec::new()) else {
                missing = true;
                continue;
            };
            let t = t.into_bytes();
            stack.pop();
            if t.starts_with(b"/") {
                stack.clear();
            }
            for comp in t.split(|b| *b == b'/').rev().filter(|s| !s.is_empty()) {
                queue.push_front(comp.to_vec());
            }
        }
    }
    join(&stack)
}

/// Go's `os.FileMode` bits of a `stat` mode (what the docker CLI decodes).
pub fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    match mode & libc::S_IFMT {
        libc::S_IFDIR => m |= DIR,
        libc::S_IFLNK => m |= SYMLINK,
        libc::S_IFBLK => m |= DEVICE,
        libc::S_IFCHR => m |= DEVICE | CHAR_DEVICE,
        libc::S_IFIFO => m |= NAMED_PIPE,
        libc::S_IFSOCK => m |= SOCKET,
        _ => {}
    }
    if mode & libc::S_ISUID != 0 {
        m |= SETUID;
    }
    if mode & libc::S_ISGID != 0 {
        m |= SETGID;
    }
    if mode & libc::S_ISVTX != 0 {
        m |= STICKY;
    }
    m
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn base_name(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// The `X-Docker-Container-Path-Stat` value of a resolved path.
fn stat_header(root: BorrowedFd<'_>, path: &str, t: &Target) -> String {
    let mode = t.st.st_mode;
    let link = if mode & libc::S_IFMT == libc::S_IFLNK {
        follow_in_scope(root, path)
    } else {
        String::new()
    };
    let stat = berth_api::container::PathStat {
        name: base_name(path),
        size: t.st.st_size,
        mode: go_file_mode(mode),
        mtime: crate::util::format_rfc3339_nano(t.st.st_mtime, t.st.st_mtime_nsec as u32),
        link_target: link,
    };
    base64(&serde_json::to_vec(&stat).unwrap_or_default())
}

/// The container path as dockerd names it: `filepath.Join("/", path)` keeping a trailing `/`
/// or `/.` (`archive.PreserveTrailingDotOrSeparator`).
fn go_abs(path: &str) -> String {
    let mut abs = String::from("/");
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    abs.push_str(&parts.join("/"));
    if specifies_current_dir(path) && !specifies_current_dir(&abs) {
        if !abs.ends_with('/') {
            abs.push('/');
        }
        abs.push('.');
    }
    if path.ends_with('/') && !abs.ends_with('/') {
        abs.push('/');
    }
    abs
}

/// Go's `filepath.Base(path) == "."`: the path names the current directory (`.`, `dir/.`,
/// `dir/./`).
fn specifies_current_dir(path: &str) -> bool {
    path.trim_end_matches('/').rsplit('/').next() == Some(".")
}

/// The name of the archived resource in the tar (dockerd's `TarResourceRebaseOpts` with
/// `filepath.Base` of the absolute path): `/` for the root (its entries then read `/foo`),
/// `.` for a directory's contents (`dir/.`, entries `./foo`), else the last name as asked
/// (`dir/link/` gives `link/…`, not the link target's name).
fn rebase_name(path: &str) -> String {
    if specifies_current_dir(path) {
        return ".".into();
    }
    base_name(&go_abs(path))
}

fn not_found_or(e: io::Error, path: &str, id: &str) -> ArchiveError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => ArchiveError::NotFound(path.to_string(), id.to_string()),
        // dockerd's lstat error, not a missing file (`/etc/passwd/`): a system error.
        Some(libc::ENOTDIR) => {
            ArchiveError::Internal(format!("lstat {}: not a directory", go_abs(path)))
        }
        Some(libc::EXDEV) | Some(libc::ELOOP) => ArchiveError::Bad(format!(
            "path {path} cannot be resolved inside the container: {e}"
        )),
        _ => ioe(path, e),
    }
}

// ---------------------------------------------------------------------------------------------
// tar writing on descriptors

/// A writer sending chunks into the response body.
struct ChanWriter(mpsc::Sender<Bytes>);

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct TarWalker<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    /// Do not descend into other filesystems (export).
    one_fs: Option<u64>,
    /// Entries of a root named `.` are named without the `./` (export, as `docker export`).
    bare_root: bool,
}

/// A header as dockerd's (Go's `tar.FileInfoHeader` without name lookups, written in the
/// PAX format): ustar, the file type bits in the mode (`040755` for a directory), no user or
/// group names.
fn header_for(st: &libc::stat) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_mode(st.st_mode);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    h
}

/// Go's PAX record `"<len> <key>=<value>\n"`, its length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let mut size = key.len() + value.len() + 3;
    size += size.to_string().len();
    let mut r = format!("{size} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    if r.len() != size {
        let mut again = format!("{} {key}=", r.len()).into_bytes();
        again.extend_from_slice(value);
        again.push(b'\n');
        return again;
    }
    r
}

/// Copies `v` into a header field, cut to its size.
fn put_field(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&v[..n]);
}

/// Appends an entry as Go's tar writer in the PAX format: the names in the header (cut), and
/// before it an extended header (`<dir>/PaxHeaders.0/<file>`) with those that do not fit or
/// are not ASCII (`path`, `linkpath`; keys sorted).
fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    let fits = |v: &[u8], size: usize| v.len() <= size && v.is_ascii();
    let u = h
        .as_ustar_mut()
        .ok_or_else(|| io::Error::other("not a ustar header"))?;
    put_field(&mut u.name, name);
    if !fits(name, 100) {
        pax.push(("path", name));
    }
    if let Some(l) = link {
        put_field(&mut u.linkname, l);
        if !fits(l, 100) {
            pax.push(("linkpath", l));
        }
    }
    if !pax.is_empty() {
        pax.sort_by_key(|(k, _)| *k);
        let records: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        let (dir, file) = match name.iter().rposition(|c| *c == b'/') {
            Some(i) => (&name[..=i], &name[i + 1..]),
            None => (&b""[..], name),
        };
        let mut x_name = dir.to_vec();
        x_name.extend_from_slice(b"PaxHeaders.0");
        if !file.is_empty() {
            x_name.push(b'/');
            x_name.extend_from_slice(file);
        }
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_mode(0);
        x.set_uid(0);
        x.set_gid(0);
        x.set_mtime(0);
        x.set_size(records.len() as u64);
        let _ = x.set_device_major(0);
        let _ = x.set_device_minor(0);
        if let Some(u) = x.as_ustar_mut() {
            put_field(&mut u.name, &x_name);
        }
        x.set_cksum();
        b.append(&x, records.as_slice())?;
    }
    h.set_cksum();
    b.append(h, data)
}

impl<W: Write> TarWalker<W> {
    /// Appends the entry `name` of directory `dir` (or `fd` itself when it is the root entry)
    /// under the archive name `arch`.
    fn entry(&mut self, fd: BorrowedFd<'_>, st: &libc::stat, arch: &Path) -> io::Result<()> {
        let mut h = header_for(st);
        let name = arch.as_os_str().as_bytes();
        let fmt = st.st_mode & libc::S_IFMT;
        if fmt != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.as_os_str().as_bytes().to_vec();
                return append_entry(&mut self.b, &mut h, name, Some(&first), io::empty());
            }
            self.links.insert(key, arch.to_path_buf());
        }
        match fmt {
            libc::S_IFREG => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                let f = std::fs::File::open(berth_runtime::util::fd_path(&fd))?;
                // A file that shrinks meanwhile is padded, one that grows is cut: the header
                // already promised `st_size` bytes.
                let r = f
                    .take(st.st_size as u64)
                    .chain(io::repeat(0))
                    .take(st.st_size as u64);
                let r = io::BufReader::with_capacity(256 * 1024, r);
                append_entry(&mut self.b, &mut h, name, None, r)
            }
            libc::S_IFLNK => {
                let t = rustix::fs::readlinkat(fd, "", Vec::new())?;
                h.set_entry_type(tar::EntryType::Symlink);
                append_entry(&mut self.b, &mut h, name, Some(t.as_bytes()), io::empty())
            }
            libc::S_IFDIR => {
                h.set_entry_type(tar::EntryType::Directory);
                // Go's canonical name of a directory ends with a slash.
                let mut dir_name = name.to_vec();
                if !dir_name.ends_with(b"/") {
                    dir_name.push(b'/');
                }
                append_entry(&mut self.b, &mut h, &dir_name, None, io::empty())?;
                if self.one_fs.is_some_and(|d| d != st.st_dev) {
                    return Ok(());
                }
                let dir = std::fs::File::open(berth_runtime::util::fd_path(&fd))?;
                let mut names: Vec<Vec<u8>> = Vec::new();
                for e in rustix::fs::Dir::read_from(&dir)? {
                    let e = e?;
                    let n = e.file_name().to_bytes();
                    if n != b"." && n != b".." {
                        names.push(n.to_vec());
                    }
                }
                names.sort();
                for n in names {
                    let child = match open_entry(&dir, n.as_slice()) {
                        Ok(c) => c,
                        // Removed meanwhile.
                        Err(rustix::io::Errno::NOENT) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let cst = fstat(child.as_fd())?;
                    let sub = if self.bare_root && arch.as_os_str() == "." {
                        PathBuf::from(OsStr::from_bytes(&n))
                    } else {
                        arch.join(OsStr::from_bytes(&n))
                    };
                    self.entry(child.as_fd(), &cst, &sub)?;
                }
                Ok(())
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                h.set_entry_type(if fmt == libc::S_IFCHR {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
                append_entry(&mut self.b, &mut h, name, None, io::empty())
            }
            libc::S_IFIFO => {
                h.set_entry_type(tar::EntryType::Fifo);
                append_entry(&mut self.b, &mut h, name, None, io::empty())
            }
            // Sockets are not archived (Docker skips them too).
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the operations (`HEAD`/`GET`/`PUT /containers/{id}/archive`, `GET /containers/{id}/export`)

async fn join<T: Send + 'static>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    tokio::task::spawn_blocking(move || h.join())
        .await
        .map_err(EngineError::from)?
        .map_err(|_| ArchiveError::Panicked)?
}

/// The stat header (`X-Docker-Container-Path-Stat`) of `path` in the container.
pub async fn stat(engine: Arc<Engine>, c: Container, path: String) -> Result<String> {
    let cid = c.id.clone();
    join(with_root(engine, c, true, move |root| {
        let t = resolve(root, &path).map_err(|e| not_found_or(e, &path, &cid))?;
        Ok(stat_header(root, &path, &t))
    }))
    .await
}

/// The tar of `path` (`archive`), or of the whole root filesystem (export): the stat header
/// of `path` and the stream, which a thread of its own writes.
pub async fn tar(
    engine: Arc<Engine>,
    c: Container,
    path: String,
    archive: bool,
) -> Result<(String, mpsc::Receiver<Bytes>)> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let (stat_tx, stat_rx) = oneshot::channel::<Result<String>>();
    let cid = c.id.clone();
    let h = with_root(engine, c, archive, move |root| {
        let t = match resolve(root, &path) {
            Ok(t) => t,
            Err(e) => {
                let _ = stat_tx.send(Err(not_found_or(e, &path, &cid)));
                return Ok(());
            }
        };
        let _ = stat_tx.send(Ok(stat_header(root, &path, &t)));
        let w = io::BufWriter::with_capacity(512 * 1024, ChanWriter(tx));
        let mut walker = TarWalker {
            b: tar::Builder::new(w),
            links: HashMap::new(),
            one_fs: if archive { None } else { Some(t.st.st_dev) },
            bare_root: !archive,
        };
        let name = PathBuf::from(if archive {
            rebase_name(&path)
        } else {
            ".".into()
        });
        let res = walker
            .entry(t.fd.as_fd(), &t.st, &name)
            .and_then(|_| walker.b.finish());
        if let Err(e) = res {
            tracing::warn!("archive of {path} in {cid}: {e}");
        }
        Ok(())
    });
    let stat = match stat_rx.await {
        Ok(stat) => {
            tokio::spawn(async move {
                let _ = join(h).await;
            });
            stat?
        }
        // The root could not be set up: the thread's error says why.
        Err(_) => {
            join(h).await?;
            return Err(ArchiveError::Panicked);
        }
    };
    Ok((stat, rx))
}

/// The uid/gid of the container's `User` (resolved in its passwd/group), `None` without one.
async fn copy_owner(engine: &Arc<Engine>, c: &Container) -> Result<Option<(u32, u32)>> {
    let user = c.config.user.clone();
    if user.is_empty() {
        return Ok(None);
    }
    let h = with_root(engine.clone(), c.clone(), true, move |root| {
        let read = |p: &str| -> String {
            open_in_root(root, p, libc::O_RDONLY)
                .ok()
                .and_then(|fd| std::fs::read_to_string(berth_runtime::util::fd_path(&fd)).ok())
                .unwrap_or_default()
        };
        let tmp = tempfile_dir()?;
        std::fs::create_dir_all(tmp.join("etc")).map_err(|e| ioe("tmp", e))?;
        std::fs::write(tmp.join("etc/passwd"), read("/etc/passwd")).map_err(|e| ioe("tmp", e))?;
        std::fs::write(tmp.join("etc/group"), read("/etc/group")).map_err(|e| ioe("tmp", e))?;
        let r =
            crate::spec::resolve_user(&tmp, &user).map_err(|e| ArchiveError::Bad(e.to_string()));
        let _ = std::fs::remove_dir_all(&tmp);
        r
    });
    Ok(Some(join(h).await?))
}

fn tempfile_dir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!("berthd-user-{}", crate::util::random_hex(8)));
    std::fs::create_dir(&p).map_err(|e| ioe("tmp", e))?;
    Ok(p)
}

/// A blocking reader over the request body chunks.
struct ChanReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// How an upload is extracted.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// `noOverwriteDirNonDir`: a directory never replaces a non-directory or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// `copyUIDGID`: with a container user, everything belongs to that user (Docker).
    pub copy_uid_gid: bool,
}

/// Extracts a tar (the body's chunks) into the directory `path` of the container.
pub async fn put<S, E>(
    engine: Arc<Engine>,
    c: Container,
    path: String,
    opts: PutOptions,
    mut body: S,
) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let no_overwrite = opts.no_overwrite_dir_non_dir;
    let owner = if opts.copy_uid_gid {
        copy_owner(&engine, &c).await?
    } else {
        None
    };
    let points = engine.mounts.load(&c.id);
    let readonly_rootfs = c.host_config.readonly_rootfs;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let cid = c.id.clone();
    let h = with_root(engine, c, true, move |root| {
        let dir = open_in_root(root, &path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                ArchiveError::Bad("extraction point is not a directory".into())
            } else {
                not_found_or(e, &path, &cid)
            }
        })?;
        check_writable(&points, readonly_rootfs, &follow_in_scope(root, &path))?;
        let reader = ChanReader {
            rx,
            cur: Bytes::new(),
        };
        let opts = berth_image::layer::ApplyOptions {
            mode: berth_image::layer::ApplyMode::Plain,
            same_owner: true,
            no_overwrite_dir_non_dir: no_overwrite,
            chown: owner,
            clamp_to_root: false,
        };
        berth_image::layer::apply_layer_at(dir.as_fd(), reader, &opts).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Read-only file system") {
                ArchiveError::Bad(format!("{msg}: the destination is read-only"))
            } else {
                ArchiveError::Bad(msg)
            }
        })?;
        Ok(())
    });
    while let Some(chunk) = body.next().await {
        let item = chunk.map_err(io::Error::other);
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    join(h).await
}

/// dockerd's `checkWritablePath`: the extraction directory `abs` (symlinks resolved) is in a
/// read-only mount (the deepest mount holding it decides), or in a read-only root filesystem
/// outside every mount.
fn check_writable(points: &[mounts::MountPoint], readonly_rootfs: bool, abs: &str) -> Result<()> {
    let inside = |dest: &str| {
        let dest = dest.trim_end_matches('/');
        abs == dest || abs.starts_with(&format!("{dest}/")) || dest.is_empty()
    };
    let holder = points
        .iter()
        .filter(|m| inside(&m.destination))
        .max_by_key(|m| m.destination.trim_end_matches('/').len());
    match holder {
        Some(m) if !m.rw => Err(ArchiveError::Bad(
            "mounted volume is marked read-only".into(),
        )),
        None if readonly_rootfs => Err(ArchiveError::Bad(
            "container rootfs is marked read-only".into(),
        )),
        _ => Ok(()),
    }
}

/// An `O_PATH` handle on the entry `name` of `dir` itself (a symlink is not followed).
fn open_entry<P: rustix::path::Arg>(
    dir: &impl std::os::fd::AsFd,
    name: P,
) -> rustix::io::Result<std::os::fd::OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_base64() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(base64(b"h"), "aA==");
    }

    #[test]
    fn splitting() {
        assert_eq!(split("/a/b"), ("/a".into(), Some("b".into())));
        assert_eq!(split("/b"), ("/".into(), Some("b".into())));
        assert_eq!(split("/a/b/"), ("/a/b/".into(), None));
        assert_eq!(split("/a/."), ("/a/.".into(), None));
        assert_eq!(split("/"), ("/".into(), None));
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/"), "/");
        assert_eq!(go_abs("bar/quux/."), "/bar/quux/.");
        assert_eq!(go_abs("."), "/.");
        assert_eq!(go_abs("/etc/passwd/"), "/etc/passwd/");
        assert_eq!(go_abs("a/../b"), "/b");
        for (path, name) in [
            ("/", "/"),
            (".", "."),
            ("/./", "."),
            ("bar/root/", "root"),
            ("a/..", "/"),
        ] {
            assert_eq!(rebase_name(path), name, "{path}");
        }
    }

    #[test]
    fn resolution_stays_in_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/passwd"), "inside").unwrap();
        std::os::unix::fs::symlink("/", r.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("x")).unwrap();
        let root = std::fs::File::open(r).unwrap();
        let t = resolve(root.as_fd(), "/evil/etc/passwd").unwrap();
        let f = std::fs::read_to_string(berth_runtime::util::fd_path(&t.fd)).unwrap();
        assert_eq!(f, "inside");
        let t = resolve(root.as_fd(), "/x/etc/passwd").unwrap();
        let f = std::fs::read_to_string(berth_runtime::util::fd_path(&t.fd)).unwrap();
        assert_eq!(f, "inside");
        assert_eq!(follow_in_scope(root.as_fd(), "/x/etc"), "/etc");
        assert_eq!(follow_in_scope(root.as_fd(), "/evil"), "/");
        // The last component is not followed.
        let t = resolve(root.as_fd(), "/evil").unwrap();
        assert_eq!(t.st.st_mode & libc::S_IFMT, libc::S_IFLNK);
    }
}
