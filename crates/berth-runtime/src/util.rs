//! Small file-system and process helpers shared by the runtime.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Replaces `path` with `data` atomically: a temp file in the same directory renamed over it, so
/// a reader (or a runtime killed half-way) sees the old or the new content, never a mix.
///
/// No fsync: the runtime's state describes processes and lives in a tmpfs (`/run`); it does not
/// outlive a reboot, so durability against power loss buys nothing and costs milliseconds.
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    berth_util::fs::replace_file_nosync(path, data)
}

pub fn cstring(p: impl AsRef<std::ffi::OsStr>) -> std::io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
    })
}

/// The start time (clock ticks since boot) of `pid`, and whether it is a zombie.
/// `None` when the process does not exist.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// The current time as RFC 3339 with nanoseconds, UTC (as runc and Docker print it).
pub fn now_rfc3339() -> String {
    berth_util::time::now_rfc3339_nano9()
}

/// `secs.nanos` since the epoch as RFC 3339 with all nine fraction digits, UTC.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    berth_util::time::format_rfc3339_nano9(secs, nanos)
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: `path` is resolved as if
/// `dirfd` were the root, so no symlink or `..` can escape it.
pub fn open_in_root(root: RawFd, path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstring(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is a valid NUL-terminated string and `how` a properly laid out `open_how`
    // that live across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Creates every missing directory of `path` inside `root` (confined like [`open_in_root`]) and
/// returns an `O_PATH` descriptor of the final directory.
pub fn mkdir_all_in_root(root: RawFd, path: &Path, mode: u32) -> std::io::Result<OwnedFd> {
    match open_in_root(root, path, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = std::path::PathBuf::from("/");
    let mut dirfd = open_in_root(root, &cur, libc::O_PATH | libc::O_DIRECTORY)?;
    for comp in path.components() {
        let name = match comp {
            std::path::Component::Normal(n) => n,
            _ => continue,
        };
        cur.push(name);
        match open_in_root(root, &cur, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => dirfd = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let c = cstring(name)?;
                // SAFETY: `dirfd` is an open directory descriptor and `c` a valid C string.
                let rc = unsafe { libc::mkdirat(dirfd.as_raw_fd(), c.as_ptr(), mode) };
                if rc < 0 {
                    let err = std::io::Error::last_os_error();
                    if err.raw_os_error() != Some(libc::EEXIST) {
                        return Err(err);
                    }
                }
                dirfd = open_in_root(root, &cur, libc::O_PATH | libc::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dirfd)
}

/// Creates an empty file at `path` inside `root` when missing (parents too) and returns an
/// `O_PATH` descriptor of it.
pub fn touch_in_root(root: RawFd, path: &Path) -> std::io::Result<OwnedFd> {
    match open_in_root(root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let pfd = mkdir_all_in_root(root, parent, 0o755)?;
    let c = cstring(name)?;
    // SAFETY: `pfd` is an O_PATH directory descriptor usable with mknodat; `c` is valid.
    let rc = unsafe { libc::mknodat(pfd.as_raw_fd(), c.as_ptr(), libc::S_IFREG | 0o644, 0) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    open_in_root(root, path, libc::O_PATH)
}

/// `/proc/self/fd/N` for a descriptor: the magic-link path used as a mount target.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Reads the calling process's effective capability mask (to check for a live process etc.).
pub fn pid_alive(pid: i32, start: u64) -> bool {
    matches!(proc_start_time(pid), Some((s, false)) if s == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn start_time_of_self() {
        let (t, zombie) = proc_start_time(std::process::id() as i32).expect("self");
        assert!(t > 0);
        assert!(!zombie);
        assert!(proc_start_time(i32::MAX).is_none());
    }

    #[test]
    fn confined_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("/", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("a/dots")).unwrap();
        let rfd = std::fs::File::open(&root).unwrap();
        // A symlink to "/" resolves to the container's root, not the host's.
        let fd = mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/a/up/etc/x"), 0o755).unwrap();
        drop(fd);
        assert!(root.join("etc/x").is_dir());
        let fd = mkdir_all_in_root(rfd.as_raw_fd(), Path::new("/a/dots/y"), 0o755).unwrap();
        drop(fd);
        assert!(root.join("y").is_dir());
        let f = touch_in_root(rfd.as_raw_fd(), Path::new("/a/up/z/file")).unwrap();
        drop(f);
        assert!(root.join("z/file").is_file());
    }
}
