//! The one confined-path resolver: opening a path inside a directory as if that directory were
//! the root (`chroot` semantics without a `chroot`), so that no symlink or `..` in a
//! container's (or an image's) file system can reach the host.
//!
//! [`open_in_root`] uses `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`. Where the
//! system call is missing (kernels before 5.6: `ENOSYS`) or refused (seccomp filters:
//! `EPERM`), a walk in user space gives the same answers: every component opened with
//! `O_NOFOLLOW` from the directory descriptor before it, symlinks read and resolved by the
//! walk itself (absolute targets from the root, relative ones from the link's directory), `..`
//! going back to the previous directory descriptor and never above the root, at most 40
//! symlinks per resolution (the kernel's limit, `ELOOP` beyond).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};

/// The kernel's limit of symlinks followed in one resolution (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// How paths are resolved: by the kernel, or by the walk in user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
    Openat2,
    /// Component by component with `O_NOFOLLOW`, symlinks resolved by the walk.
    Walk,
}

/// 0: not probed yet, 1: openat2 works, 2: it does not.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// The resolver this process uses: `openat2` unless a probe found it missing or refused.
pub fn resolver() -> Resolver {
    match OPENAT2.load(Ordering::Relaxed) {
        1 => Resolver::Openat2,
        2 => Resolver::Walk,
        _ => {
            let works = match openat2(rfs::CWD, b"/", libc::O_PATH) {
                Ok(_) => true,
                Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
            };
            OPENAT2.store(if works { 1 } else { 2 }, Ordering::Relaxed);
            if works {
                Resolver::Openat2
            } else {
                Resolver::Walk
            }
        }
    }
}

fn oflags(flags: libc::c_int) -> OFlags {
    OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC
}

/// How a path that would leave the root is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Clamped to the root (`RESOLVE_IN_ROOT`): the root is `/`.
    InRoot,
    /// Refused with `EXDEV` (`RESOLVE_BENEATH`): `..` above the root, absolute symlinks.
    Beneath,
}

fn openat2_scoped(
    dirfd: BorrowedFd<'_>,
    path: &[u8],
    flags: libc::c_int,
    scope: Scope,
) -> io::Result<OwnedFd> {
    let how = match scope {
        Scope::InRoot => ResolveFlags::IN_ROOT,
        Scope::Beneath => ResolveFlags::BENEATH,
    };
    Ok(rfs::openat2(
        dirfd,
        path,
        oflags(flags),
        Mode::empty(),
        how | ResolveFlags::NO_MAGICLINKS,
    )?)
}

fn openat2(dirfd: BorrowedFd<'_>, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    openat2_scoped(dirfd, path, flags, Scope::InRoot)
}

fn openat(dirfd: BorrowedFd<'_>, name: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dirfd, name, oflags(flags), Mode::empty())?)
}

fn file_type(fd: BorrowedFd<'_>) -> io::Result<FileType> {
    Ok(FileType::from_raw_mode(rfs::fstat(fd)?.st_mode))
}

/// The target of the symlink open as `fd` (an `O_PATH | O_NOFOLLOW` descriptor; the empty
/// path names it).
fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(fd, c"", Vec::new())?.into_bytes())
}

fn errno(e: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `path` relative to the root, `.` for the root itself; a trailing `/` is kept (it means
/// "a directory").
fn relative(path: &Path) -> &[u8] {
    let b = path.as_os_str().as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'/' {
        i += 1;
    }
    if i == b.len() {
        b"."
    } else {
        &b[i..]
    }
}

/// Opens `path` inside the directory `root` as if `root` were `/`: symlinks (absolute ones
/// too) and `..` are resolved inside `root` and can never leave it; magic links
/// (`/proc/self/fd/N`) are refused by `openat2` and, in the fallback walk, read as ordinary
/// symlinks resolved inside the root (never followed). The last component is followed unless
/// `flags` has `O_NOFOLLOW`. `O_CLOEXEC` is always added. `O_CREAT` is not supported (the mode
/// would be 0): create with [`mkdir_all_in_root`] / [`touch_in_root`] or `openat` on a parent
/// opened here.
pub fn open_in_root(root: impl AsFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_in_root_with(resolver(), root.as_fd(), path, flags)
}

/// [`open_in_root`] with the resolver given (tests exercise both on the same cases).
pub fn open_in_root_with(
    how: Resolver,
    root: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    open_scoped(how, root, path, flags, Scope::InRoot)
}

/// Opens `path` beneath the directory `root` (a volume's subpath): as [`open_in_root`], but a
/// path that would leave `root` (`..` above it, an absolute symlink) is refused with `EXDEV`
/// instead of being resolved inside it (`openat2(RESOLVE_BENEATH)`; the walk does the same).
pub fn open_beneath(root: impl AsFd, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_beneath_with(resolver(), root.as_fd(), path, flags)
}

/// [`open_beneath`] with the resolver given.
pub fn open_beneath_with(
    how: Resolver,
    root: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    open_scoped(how, root, path, flags, Scope::Beneath)
}

fn open_scoped(
    how: Resolver,
    root: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    scope: Scope,
) -> io::Result<OwnedFd> {
    if flags & libc::O_CREAT != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "open_in_root does not create files",
        ));
    }
    let rel = relative(path);
    match how {
        Resolver::Openat2 => {
            let mut tries = 0;
            let res = loop {
                match openat2_scoped(root, rel, flags, scope) {
                    // A rename or mount raced with a `..`: the kernel asks for a retry.
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 32 => tries += 1,
                    r => break r,
                }
            };
            match res {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    // Refused after the probe said yes (a filter installed since): walk. A
                    // genuine EPERM comes back from the walk as well.
                    walk(root, rel, flags, scope)
                }
                r => r,
            }
        }
        Resolver::Walk => walk(root, rel, flags, scope),
    }
}

/// The user-space resolution (see the module's documentation).
fn walk(root: BorrowedFd<'_>, rel: &[u8], flags: libc::c_int, scope: Scope) -> io::Result<OwnedFd> {
    let dir_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    // The directories walked through, the root first: `..` pops back to the previous one.
    let mut stack: Vec<OwnedFd> = vec![openat(root, b".", dir_flags)?];
    // Components still to resolve, in reverse order (a symlink's target is pushed on top).
    let mut todo: Vec<Vec<u8>> = Vec::new();
    let push_path = |todo: &mut Vec<Vec<u8>>, p: &[u8]| {
        // A trailing slash requires a directory: kept as a "." component after the name.
        if p.ends_with(b"/") {
            todo.push(b".".to_vec());
        }
        for c in p.split(|b| *b == b'/').rev().filter(|c| !c.is_empty()) {
            todo.push(c.to_vec());
        }
    };
    push_path(&mut todo, rel);
    let mut links = 0u32;
    // The final open: the last directory itself ("/", ".", a trailing "..").
    let finish_dir = |stack: &Vec<OwnedFd>| {
        let cur = stack.last().expect("the root stays on the stack");
        openat(cur.as_fd(), b".", flags & !libc::O_NOFOLLOW)
    };
    while let Some(name) = todo.pop() {
        let last = todo.is_empty();
        let cur = stack.last().expect("the root stays on the stack").as_fd();
        match name.as_slice() {
            b"." => {
                if last {
                    return finish_dir(&stack);
                }
                continue;
            }
            b".." => {
                if stack.len() > 1 {
                    stack.pop();
                } else if scope == Scope::Beneath {
                    return Err(errno(libc::EXDEV));
                }
                if last {
                    return finish_dir(&stack);
                }
                continue;
            }
            _ => {}
        }
        if last && flags & libc::O_NOFOLLOW != 0 {
            // Not followed: the kernel opens the name itself (ELOOP for a symlink unless
            // O_PATH, which opens the link).
            return openat(cur, &name, flags);
        }
        let fd = openat(cur, &name, libc::O_PATH | libc::O_NOFOLLOW)?;
        let kind = file_type(fd.as_fd())?;
        if kind == FileType::Symlink {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(errno(libc::ELOOP));
            }
            let target = readlink_fd(fd.as_fd())?;
            if target.is_empty() {
                return Err(errno(libc::ENOENT));
            }
            if target.starts_with(b"/") {
                if scope == Scope::Beneath {
                    return Err(errno(libc::EXDEV));
                }
                stack.truncate(1);
            }
            push_path(&mut todo, &target);
            if todo.is_empty() {
                // A link to "/" (nothing left): the root itself.
                return finish_dir(&stack);
            }
            continue;
        }
        if last {
            // Reopened with the caller's flags; O_NOFOLLOW keeps a symlink swapped in since
            // the check from being followed (the open fails instead).
            return openat(cur, &name, flags | libc::O_NOFOLLOW);
        }
        if kind != FileType::Directory {
            return Err(errno(libc::ENOTDIR));
        }
        // Reopened as a directory without following: a swapped-in symlink fails here too.
        stack.push(openat(cur, &name, dir_flags)?);
    }
    finish_dir(&stack)
}

/// Creates every missing directory of `path` inside `root` (resolved like [`open_in_root`],
/// so symlinks in it are followed inside the root) with `mode`, and returns an `O_PATH`
/// descriptor of the final directory.
pub fn mkdir_all_in_root(root: impl AsFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    mkdir_all_with(resolver(), root.as_fd(), path, mode)
}

fn mkdir_all_with(
    how: Resolver,
    root: BorrowedFd<'_>,
    path: &Path,
    mode: u32,
) -> io::Result<OwnedFd> {
    let dir = libc::O_PATH | libc::O_DIRECTORY;
    match open_in_root_with(how, root, path, dir) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = PathBuf::from("/");
    let mut dirfd = open_in_root_with(how, root, &cur, dir)?;
    for comp in path.components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::ParentDir => {
                cur.push("..");
                dirfd = open_in_root_with(how, root, &cur, dir)?;
                continue;
            }
            _ => continue,
        };
        cur.push(name);
        match open_in_root_with(how, root, &cur, dir) {
            Ok(fd) => dirfd = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                match rfs::mkdirat(&dirfd, name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                dirfd = open_in_root_with(how, root, &cur, dir)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dirfd)
}

/// Creates an empty regular file (mode 0644) at `path` inside `root` when missing, its
/// parents too (0755), and returns an `O_PATH` descriptor of it.
pub fn touch_in_root(root: impl AsFd, path: &Path) -> io::Result<OwnedFd> {
    touch_with(resolver(), root.as_fd(), path)
}

fn touch_with(how: Resolver, root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    match open_in_root_with(how, root, path, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let pfd = mkdir_all_with(how, root, parent, 0o755)?;
    let mode = Mode::from_raw_mode(0o644);
    match rfs::mknodat(&pfd, name, FileType::RegularFile, mode, 0) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_in_root_with(how, root, path, libc::O_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const BOTH: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A root with adversarial links, and files outside it (next to it) that nothing may
    /// reach; in a scratch directory of its own, removed on drop.
    fn fixture(tag: &str) -> (Scratch, PathBuf, std::fs::File) {
        let base = std::env::temp_dir().join(format!(
            "berth-util-root-{tag}-{}-{}",
            std::process::id(),
            crate::fs::unique()
        ));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"inside").unwrap();
        std::fs::write(root.join("a/b/file"), b"deep").unwrap();
        std::fs::write(base.join("secret"), b"outside").unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::write(base.join("etc/passwd"), b"host").unwrap();
        // Absolute links point at the root's own /etc.
        symlink("/etc", root.join("abs")).unwrap();
        symlink("/etc/passwd", root.join("abs_file")).unwrap();
        symlink("/", root.join("a/up")).unwrap();
        // `..` escapes are clamped at the root.
        symlink("../../../../../../secret", root.join("dots")).unwrap();
        symlink("../../../etc", root.join("a/b/rel_etc")).unwrap();
        symlink("../../../../..", root.join("a/dots")).unwrap();
        // Chains and loops.
        symlink("chain2", root.join("chain1")).unwrap();
        symlink("a/b", root.join("chain2")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("self/x", root.join("self")).unwrap();
        // A symlinked parent whose target is relative to the link's directory.
        symlink("b", root.join("a/blink")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("/proc/self/root/etc", root.join("proc_escape")).unwrap();
        let fd = std::fs::File::open(&root).unwrap();
        (Scratch(base), root, fd)
    }

    fn read(how: Resolver, root: &std::fs::File, p: &str) -> io::Result<String> {
        let fd = open_in_root_with(how, root.as_fd(), Path::new(p), libc::O_RDONLY)?;
        let mut s = String::new();
        use std::io::Read;
        std::fs::File::from(fd).read_to_string(&mut s)?;
        Ok(s)
    }

    fn code(r: io::Result<impl Sized>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn the_probe_finds_openat2_where_it_works() {
        // Kernel 5.6+ without a seccomp filter: the fast path is the one in use.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let filtered = status
            .lines()
            .any(|l| l.starts_with("Seccomp:") && l.trim_end() != "Seccomp:\t0");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if filtered || (major, minor) < (5, 6) {
            println!("skipped: seccomp filter or kernel {major}.{minor} (openat2 may be refused)");
            return;
        }
        assert_eq!(resolver(), Resolver::Openat2);
    }

    #[test]
    fn reads_stay_inside_the_root() {
        let (_g, _root, rfd) = fixture("read");
        for how in BOTH {
            for (p, want) in [
                ("/etc/passwd", "inside"),
                ("etc/passwd", "inside"),
                ("/abs/passwd", "inside"),
                ("/abs_file", "inside"),
                ("/a/up/etc/passwd", "inside"),
                ("/a/up/a/up/etc/passwd", "inside"),
                ("/../../etc/passwd", "inside"),
                ("/a/../../../etc/passwd", "inside"),
                ("/a/b/rel_etc/passwd", "inside"),
                ("/a/dots/etc/passwd", "inside"),
                ("/chain1/file", "deep"),
                ("/a/blink/file", "deep"),
                ("/a/blink/../b/./file", "deep"),
                ("//a//b//file", "deep"),
                ("/a/b/../../a/b/file", "deep"),
            ] {
                assert_eq!(read(how, &rfd, p).unwrap(), want, "{how:?} {p}");
            }
            // `dots` climbs to the root and finds no `secret` there.
            assert_eq!(
                code(read(how, &rfd, "/dots")),
                Some(libc::ENOENT),
                "{how:?}"
            );
            assert_eq!(code(read(how, &rfd, "/dangling")), Some(libc::ENOENT));
            assert_eq!(code(read(how, &rfd, "/etc/nothing")), Some(libc::ENOENT));
            assert_eq!(code(read(how, &rfd, "/a/b/file/x")), Some(libc::ENOTDIR));
            assert_eq!(code(read(how, &rfd, "/a/b/file/")), Some(libc::ENOTDIR));
            // /proc/self/root inside the root is just a missing path.
            assert_eq!(
                code(read(how, &rfd, "/proc_escape/passwd")),
                Some(libc::ENOENT)
            );
        }
    }

    #[test]
    fn loops_fail_with_eloop() {
        let (_g, _root, rfd) = fixture("loop");
        for how in BOTH {
            for p in ["/loop1", "/loop2/x", "/self", "/self/y"] {
                assert_eq!(code(read(how, &rfd, p)), Some(libc::ELOOP), "{how:?} {p}");
            }
        }
    }

    #[test]
    fn forty_links_resolve_and_forty_one_do_not() {
        let (_g, root, rfd) = fixture("limit");
        // l0 -> l1 -> ... -> l40 -> etc/passwd: 41 links from l0, 40 from l1.
        std::fs::create_dir(root.join("l")).unwrap();
        for i in 0..=40 {
            let target = if i == 40 {
                "/etc/passwd".to_string()
            } else {
                format!("l{}", i + 1)
            };
            symlink(target, root.join(format!("l/l{i}"))).unwrap();
        }
        for how in BOTH {
            assert_eq!(read(how, &rfd, "/l/l1").unwrap(), "inside", "{how:?}");
            assert_eq!(code(read(how, &rfd, "/l/l0")), Some(libc::ELOOP), "{how:?}");
        }
    }

    #[test]
    fn nofollow_and_o_path_open_the_link_itself() {
        let (_g, _root, rfd) = fixture("nofollow");
        for how in BOTH {
            let open =
                |path: &str, flags| open_in_root_with(how, rfd.as_fd(), Path::new(path), flags);
            let fd = open("/a/blink/../up", libc::O_PATH | libc::O_NOFOLLOW).unwrap();
            assert_eq!(file_type(fd.as_fd()).unwrap(), FileType::Symlink, "{how:?}");
            assert_eq!(readlink_fd(fd.as_fd()).unwrap(), b"/");
            assert_eq!(
                code(open("/abs_file", libc::O_RDONLY | libc::O_NOFOLLOW)),
                Some(libc::ELOOP),
                "{how:?}"
            );
            // Parents are still followed.
            let fd = open("/abs/passwd", libc::O_PATH | libc::O_NOFOLLOW).unwrap();
            assert_eq!(file_type(fd.as_fd()).unwrap(), FileType::RegularFile);
            assert!(open("/x", libc::O_CREAT).is_err());
        }
    }

    #[test]
    fn the_root_itself_and_directories() {
        let (_g, root, rfd) = fixture("dirs");
        let ino = |fd: &OwnedFd| rfs::fstat(fd).unwrap().st_ino;
        let root_ino = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&root).unwrap().ino()
        };
        for how in BOTH {
            for p in [
                "/", "", ".", "/..", "/a/..", "/a/up", "/a/dots", "/a/up/", "/abs/..",
            ] {
                let fd = open_in_root_with(
                    how,
                    rfd.as_fd(),
                    Path::new(p),
                    libc::O_PATH | libc::O_DIRECTORY,
                )
                .unwrap_or_else(|e| panic!("{how:?} {p:?}: {e}"));
                assert_eq!(ino(&fd), root_ino, "{how:?} {p:?}");
            }
            assert_eq!(
                code(open_in_root_with(
                    how,
                    rfd.as_fd(),
                    Path::new("/etc/passwd"),
                    libc::O_RDONLY | libc::O_DIRECTORY
                )),
                Some(libc::ENOTDIR)
            );
        }
    }

    #[test]
    fn mkdir_and_touch_stay_inside() {
        for how in BOTH {
            let (g, root, rfd) = fixture("mkdir");
            let base = g.0.clone();
            // A symlink to "/" resolves to the container's root, not the host's.
            mkdir_all_with(how, rfd.as_fd(), Path::new("/a/up/new/x"), 0o755).unwrap();
            assert!(root.join("new/x").is_dir(), "{how:?}");
            mkdir_all_with(how, rfd.as_fd(), Path::new("/a/dots/y"), 0o755).unwrap();
            assert!(root.join("y").is_dir());
            mkdir_all_with(how, rfd.as_fd(), Path::new("/a/../../z/../w"), 0o755).unwrap();
            assert!(root.join("w").is_dir());
            assert!(!base.join("w").exists());
            assert!(!base.join("z").exists());
            mkdir_all_with(how, rfd.as_fd(), Path::new("/abs/sub"), 0o755).unwrap();
            assert!(root.join("etc/sub").is_dir());
            touch_with(how, rfd.as_fd(), Path::new("/a/up/t/file")).unwrap();
            assert!(root.join("t/file").is_file());
            touch_with(how, rfd.as_fd(), Path::new("/dots2")).unwrap();
            assert!(root.join("dots2").is_file());
            // An existing file is kept.
            touch_with(how, rfd.as_fd(), Path::new("/abs_file")).unwrap();
            assert_eq!(std::fs::read(root.join("etc/passwd")).unwrap(), b"inside");
            assert_eq!(std::fs::read(base.join("etc/passwd")).unwrap(), b"host");
            assert_eq!(
                code(mkdir_all_with(
                    how,
                    rfd.as_fd(),
                    Path::new("/etc/passwd/x"),
                    0o755
                )),
                Some(libc::ENOTDIR)
            );
            assert_eq!(
                code(mkdir_all_with(
                    how,
                    rfd.as_fd(),
                    Path::new("/loop1/x"),
                    0o755
                )),
                Some(libc::ELOOP)
            );
        }
    }

    #[test]
    fn beneath_refuses_what_leaves_the_root() {
        let (_g, _root, rfd) = fixture("beneath");
        for how in [Resolver::Openat2, Resolver::Walk] {
            let open = |p: &str| open_beneath_with(how, rfd.as_fd(), Path::new(p), libc::O_PATH);
            for escaping in ["abs", "a/up", "dots", "a/b/rel_etc", "..", "a/../.."] {
                assert_eq!(
                    code(open(escaping)),
                    Some(libc::EXDEV),
                    "{how:?} {escaping}"
                );
            }
            for inside in ["a", "a/b", "a/blink", "chain1", "a/b/.."] {
                assert!(open(inside).is_ok(), "{how:?} {inside}");
            }
            assert_eq!(code(open("dangling")), Some(libc::ENOENT), "{how:?}");
        }
    }

    #[test]
    fn walk_matches_openat2_on_generated_paths() {
        // Every combination of a few adversarial components: both resolvers give the same
        // file (by inode) or the same error.
        let (_g, _root, rfd) = fixture("cross");
        let parts = [
            "a", "b", "..", ".", "up", "abs", "dots", "blink", "etc", "chain1", "loop1", "file",
            "passwd", "rel_etc", "dangling",
        ];
        let ident = |r: io::Result<OwnedFd>| -> Result<(u64, u64), i32> {
            match r {
                Ok(fd) => {
                    let st = rfs::fstat(&fd).unwrap();
                    Ok((st.st_dev, st.st_ino))
                }
                Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
            }
        };
        let mut n = 0;
        for x in parts {
            for y in parts {
                for z in parts {
                    let p = format!("/{x}/{y}/{z}");
                    for flags in [libc::O_PATH, libc::O_PATH | libc::O_NOFOLLOW] {
                        let k = ident(open_in_root_with(
                            Resolver::Openat2,
                            rfd.as_fd(),
                            Path::new(&p),
                            flags,
                        ));
                        let w = ident(open_in_root_with(
                            Resolver::Walk,
                            rfd.as_fd(),
                            Path::new(&p),
                            flags,
                        ));
                        assert_eq!(k, w, "{p} flags {flags:#x}");
                        let p = p.trim_start_matches('/');
                        let (kb, wb) = (
                            ident(open_beneath_with(
                                Resolver::Openat2,
                                rfd.as_fd(),
                                Path::new(p),
                                flags,
                            )),
                            ident(open_beneath_with(
                                Resolver::Walk,
                                rfd.as_fd(),
                                Path::new(p),
                                flags,
                            )),
                        );
                        assert_eq!(kb, wb, "beneath {p} flags {flags:#x}");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 2 * parts.len().pow(3));
    }
}
