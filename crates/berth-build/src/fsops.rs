//! File-system helpers for COPY/ADD/WORKDIR inside a mounted root file system: paths are
//! resolved inside the root by `berth_util::root::open_in_root` (never outside it), and
//! copies keep modes and times.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_util::root::open_in_root;

/// A file-system operation that failed, with what was being done and where.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A system call failed on a path.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Symlinks that loop (or nest more than 255 deep) while resolving a path in a root.
    #[error("too many symlinks resolving {0}")]
    SymlinkLoop(String),
    /// A directory to create is a file (inside the root).
    #[error("cannot create directory {0}: a file is in the way")]
    NotADirectory(String),
    /// A file would replace a directory.
    #[error("cannot overwrite directory {} with a file", .0.display())]
    IsADirectory(PathBuf),
}

/// `map_err` for an I/O error on `path`.
pub(crate) fn io_at<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `user[:group]` not found in the root's `/etc/passwd` or `/etc/group` (Docker's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    User(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    Group(String),
    /// A numeric ID outside `0..=2147483647` (moby/sys/user's `ErrRange`).
    #[error("uids and gids must be in range 0-2147483647")]
    Range,
}

/// A numeric user or group ID (`None`: not a number), in moby/sys/user's range.
fn numeric_id(s: &str) -> Option<Result<u32, UserError>> {
    let n = s.parse::<i64>().ok()?;
    Some(
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= i32::MAX as u32)
            .ok_or(UserError::Range),
    )
}

/// A root directory opened for resolutions inside it, and its canonical path (what
/// `/proc/self/fd` shows), so that resolved paths are given under `root` as the caller named
/// it.
struct Root<'a> {
    path: &'a Path,
    fd: OwnedFd,
    canonical: PathBuf,
}

impl<'a> Root<'a> {
    fn open(path: &'a Path) -> Result<Root<'a>, FsError> {
        let fd = fs::File::open(path)
            .map(OwnedFd::from)
            .map_err(io_at("opening", path))?;
        let canonical = fd_path(&fd).map_err(io_at("resolving", path))?;
        Ok(Root {
            path,
            fd,
            canonical,
        })
    }

    /// The path of an open descriptor of something inside the root, under `self.path`.
    fn host_path(&self, fd: &OwnedFd, what: &Path) -> Result<PathBuf, FsError> {
        let p = fd_path(fd).map_err(io_at("resolving", what))?;
        Ok(match p.strip_prefix(&self.canonical) {
            Ok(rel) if rel.as_os_str().is_empty() => self.path.to_path_buf(),
            Ok(rel) => self.path.join(rel),
            Err(_) => p,
        })
    }

    /// See [`resolve_in_root`]; `links` counts the symlinks of missing targets followed.
    fn resolve(&self, path: &Path, follow_last: bool, links: u32) -> Result<PathBuf, FsError> {
        let flags = if follow_last {
            libc::O_PATH
        } else {
            libc::O_PATH | libc::O_NOFOLLOW
        };
        match open_in_root(&self.fd, path, flags) {
            Ok(fd) => return self.host_path(&fd, path),
            // Missing, or a file where a directory is needed (missing too, as written).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
            Err(e) => return Err(io_at("resolving", &self.path.join(relative(path)))(e)),
        }
        // Something is missing: the parent resolved (itself perhaps missing), then the
        // last component as written, or, when it is a symlink to a missing target, that
        // target (FollowSymlinkInScope).
        let mut comps: Vec<Component> = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
            .collect();
        let Some(last) = comps.pop() else {
            return Ok(self.path.to_path_buf());
        };
        let parent: PathBuf = std::iter::once(Component::RootDir).chain(comps).collect();
        let mut p = self.resolve(&parent, true, links)?;
        let Component::Normal(name) = last else {
            // `..` of a missing directory: lexically its parent, never above the root.
            if p != self.path {
                p.pop();
            }
            return Ok(p);
        };
        let p = p.join(name);
        if follow_last {
            if let Ok(target) = fs::read_link(&p) {
                if links >= berth_util::root::MAX_SYMLINKS {
                    return Err(FsError::SymlinkLoop(path.display().to_string()));
                }
                return self.resolve(&parent.join(target), true, links + 1);
            }
        }
        Ok(p)
    }
}

/// The path the kernel gives an open descriptor (`/proc/self/fd/N`).
fn fd_path(fd: &OwnedFd) -> io::Result<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `path` without its leading `/`s.
fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// Resolves `path` (absolute inside the container) against `root` as if `root` were `/`
/// (Docker's `FollowSymlinkInScope`): what exists is opened by the one confined resolver,
/// `berth_util::root::open_in_root` (symlinks and `..` never leave the root), and its path
/// given under `root`; what does not exist yet is appended as written (a symlink to a
/// missing target resolving to that target). The last component is followed when
/// `follow_last`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, FsError> {
    Root::open(root)?.resolve(Path::new(path), follow_last, 0)
}

/// Creates `path` (inside `root`) and missing parents, new directories owned by `owner` with
/// mode 0755; a symlink to a missing directory gets its target created. Returns whether
/// anything was created.
pub fn mkdir_all(root: &Path, path: &str, owner: Option<(u32, u32)>) -> Result<bool, FsError> {
    let r = Root::open(root)?;
    mkdir_all_in(&r, path, owner, 0)
}

fn mkdir_all_in(
    r: &Root<'_>,
    path: &str,
    owner: Option<(u32, u32)>,
    links: u32,
) -> Result<bool, FsError> {
    let mut created = false;
    let mut acc = String::from("/");
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = Path::new(&acc).to_path_buf();
        if !acc.ends_with('/') {
            acc.push('/');
        }
        acc.push_str(comp);
        let at = || r.path.join(relative(Path::new(&acc)));
        match open_in_root(&r.fd, Path::new(&acc), libc::O_PATH | libc::O_DIRECTORY) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(FsError::NotADirectory(acc))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(io_at("resolving", &at())(e)),
        }
        let dir = open_in_root(&r.fd, &parent, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| io_at("resolving", &r.path.join(relative(&parent)))(e))?;
        match rustix::fs::readlinkat(&dir, comp, Vec::new()) {
            Ok(target) => {
                // A symlink to a missing directory: the target is made.
                if links >= berth_util::root::MAX_SYMLINKS {
                    return Err(FsError::SymlinkLoop(path.to_string()));
                }
                let target = parent.join(target.to_string_lossy().as_ref());
                created |= mkdir_all_in(r, &target.to_string_lossy(), owner, links + 1)?;
            }
            Err(_) => {
                let mode = rustix::fs::Mode::from_raw_mode(0o755);
                rustix::fs::mkdirat(&dir, comp, mode)
                    .and_then(|()| {
                        rustix::fs::chmodat(&dir, comp, mode, rustix::fs::AtFlags::empty())
                    })
                    .map_err(|e| io_at("creating directory", &at())(e.into()))?;
                if let Some((u, g)) = owner {
                    rustix::fs::chownat(
                        &dir,
                        comp,
                        Some(rustix::fs::Uid::from_raw(u)),
                        Some(rustix::fs::Gid::from_raw(g)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_at("setting the owner of", &at())(e.into()))?;
                }
                created = true;
            }
        }
    }
    Ok(created)
}

/// How copied files are owned and moded.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyAttrs {
    /// `--chown` (else 0:0 as Docker does, unless `keep_owner`).
    pub owner: Option<(u32, u32)>,
    /// `--chmod`.
    pub mode: Option<u32>,
    /// Keep the source's owner (COPY --from keeps ownership unless --chown).
    pub keep_owner: bool,
}

fn set_attrs(dst: &Path, src_meta: &fs::Metadata, a: &CopyAttrs) -> Result<(), FsError> {
    let (u, g) = match a.owner {
        Some(o) => o,
        None if a.keep_owner => (src_meta.uid(), src_meta.gid()),
        None => (0, 0),
    };
    std::os::unix::fs::lchown(dst, Some(u), Some(g)).map_err(io_at("setting the owner of", dst))?;
    if !src_meta.file_type().is_symlink() {
        let mode = match a.mode {
            Some(m) => m,
            None => src_meta.mode() & 0o7777,
        };
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .map_err(io_at("setting the mode of", dst))?;
    }
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &times(src_meta),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_at("setting the times of", dst)(e.into()))
}

/// Copies one entry (file, symlink, or directory tree) from `src` (host path) to `dst`
/// (already resolved inside the target root; its parent exists).
pub fn copy_entry(src: &Path, dst: &Path, a: &CopyAttrs) -> Result<(), FsError> {
    let m = fs::symlink_metadata(src).map_err(io_at("inspecting", src))?;
    let ft = m.file_type();
    if ft.is_dir() {
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst).map_err(io_at("removing", dst))?;
                fs::create_dir(dst).map_err(io_at("creating directory", dst))?;
            }
            Err(_) => fs::create_dir(dst).map_err(io_at("creating directory", dst))?,
        }
        for e in sorted_entries(src)? {
            copy_entry(&e.path(), &dst.join(e.file_name()), a)?;
        }
        set_attrs(dst, &m, a)
    } else if ft.is_file() {
        copy_file(src, dst, &m, a)
    } else {
        replace_with(dst)?;
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_at("reading symlink", src))?;
            std::os::unix::fs::symlink(target, dst).map_err(io_at("creating symlink", dst))?;
        } else {
            // Devices, fifos, sockets: Docker copies them as they are.
            let mode = m.mode();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                dst,
                rustix::fs::FileType::from_raw_mode(mode),
                rustix::fs::Mode::from_raw_mode(mode & 0o7777),
                m.rdev(),
            )
            .map_err(|e| io_at("creating device node", dst)(e.into()))?;
        }
        set_attrs(dst, &m, a)
    }
}

/// Copies a regular file: owner, mode and times are set on the open descriptor (a COPY of
/// many small files into an overlay pays a path walk per system call otherwise), and an
/// existing `dst` is only looked at when creating it fails.
fn copy_file(src: &Path, dst: &Path, m: &fs::Metadata, a: &CopyAttrs) -> Result<(), FsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut from = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(io_at("opening", src))?;
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dst)
    };
    let mut to = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            replace_with(dst)?;
            create()
        }
        r => r,
    }
    .map_err(io_at("creating", dst))?;
    // Small files (the common case) in one read and one write; std's `io::copy` would try
    // `copy_file_range` first, which fails across file systems (context → layer).
    const SMALL: u64 = 256 * 1024;
    if m.len() <= SMALL {
        let mut buf = Vec::with_capacity(m.len() as usize + 1);
        from.read_to_end(&mut buf).map_err(io_at("reading", src))?;
        io::Write::write_all(&mut to, &buf).map_err(io_at("writing", dst))?;
    } else {
        io::copy(&mut from, &mut to).map_err(io_at("copying to", dst))?;
    }
    let (u, g) = match a.owner {
        Some(o) => o,
        None if a.keep_owner => (m.uid(), m.gid()),
        None => (0, 0),
    };
    let (u, g) = (rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g));
    rustix::fs::fchown(&to, Some(u), Some(g))
        .map_err(|e| io_at("setting the owner of", dst)(e.into()))?;
    let mode = a.mode.unwrap_or(m.mode() & 0o7777);
    rustix::fs::fchmod(&to, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| io_at("setting the mode of", dst)(e.into()))?;
    rustix::fs::futimens(&to, &times(m)).map_err(|e| io_at("setting the times of", dst)(e.into()))
}

/// A source's access and modification times, as `utimensat` takes them.
fn times(m: &fs::Metadata) -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec() as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec() as _,
        },
    }
}

/// A directory's entries, sorted by name.
pub fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>, FsError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .and_then(|rd| rd.collect::<io::Result<Vec<_>>>())
        .map_err(io_at("reading directory", dir))?;
    names.sort_by_key(|e| e.file_name());
    Ok(names)
}

/// Applies owner, mode and times of `src` to an existing `dst`.
pub fn copy_entry_attrs_only(src: &Path, dst: &Path, a: &CopyAttrs) -> Result<(), FsError> {
    let m = fs::symlink_metadata(src).map_err(io_at("inspecting", src))?;
    set_attrs(dst, &m, a)
}

/// Removes whatever non-directory is at `dst` (directories in the way are an error).
fn replace_with(dst: &Path) -> Result<(), FsError> {
    match fs::symlink_metadata(dst) {
        Ok(d) if d.is_dir() => Err(FsError::IsADirectory(dst.to_path_buf())),
        Ok(_) => fs::remove_file(dst).map_err(io_at("removing", dst)),
        Err(_) => Ok(()),
    }
}

/// Writes `data` as a regular file.
pub fn write_file(
    dst: &Path,
    data: &[u8],
    a: &CopyAttrs,
    default_mode: u32,
) -> Result<(), FsError> {
    replace_with(dst)?;
    fs::write(dst, data).map_err(io_at("writing", dst))?;
    let (u, g) = a.owner.unwrap_or((0, 0));
    std::os::unix::fs::lchown(dst, Some(u), Some(g)).map_err(io_at("setting the owner of", dst))?;
    fs::set_permissions(
        dst,
        fs::Permissions::from_mode(a.mode.unwrap_or(default_mode)),
    )
    .map_err(io_at("setting the mode of", dst))
}

/// Resolves Docker's `user[:group]` against a root's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), UserError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let r = Root::open(root).ok();
    resolve_user_with(user, |f| read_in_root(r.as_ref(), f))
}

/// The text of file `f` inside `root` (empty when missing or unreadable).
fn read_in_root(root: Option<&Root>, f: &str) -> String {
    let mut text = String::new();
    if let Some(fd) = root.and_then(|r| open_in_root(&r.fd, Path::new(f), libc::O_RDONLY).ok()) {
        let _ = fs::File::from(fd).read_to_string(&mut text);
    }
    text
}

/// A RUN user's groups after its primary one, as a container's: those the root's
/// `/etc/group` lists it as a member of (`berth_util::passwd::supplementary_gids`).
pub fn supplementary_gids(root: &Path, user: &str) -> Vec<u32> {
    let r = Root::open(root).ok();
    berth_util::passwd::supplementary_gids(
        &read_in_root(r.as_ref(), "/etc/passwd"),
        &read_in_root(r.as_ref(), "/etc/group"),
        user,
    )
}

/// [`resolve_user`] with the root's files read by `read` (`/etc/passwd`, `/etc/group`; an
/// empty text when missing).
pub(crate) fn resolve_user_with(
    user: &str,
    read: impl Fn(&str) -> String,
) -> Result<(u32, u32), UserError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read("/etc/passwd");
    use berth_util::passwd::{find, Key};
    let (uid, mut gid) = if let Some(n) = numeric_id(u) {
        (
            n?,
            find(&passwd, Key::Uid(u)).and_then(|e| e.gid).unwrap_or(0),
        )
    } else {
        match find(&passwd, Key::Name(u)).map(|e| (e.uid, e.gid)) {
            Some((Some(a), Some(b))) => (a, b),
            _ => return Err(UserError::User(u.to_string())),
        }
    };
    if let Some(g) = g {
        gid = if let Some(n) = numeric_id(g) {
            n?
        } else {
            read("/etc/group")
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| UserError::Group(g.to_string()))?
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("../../../../real", r.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/etc-link/passwd", true).unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(r, "/up/sub", true).unwrap(),
            r.join("real/sub")
        );
        assert_eq!(resolve_in_root(r, "/../../x", true).unwrap(), r.join("x"));
        assert_eq!(
            resolve_in_root(r, "/etc-link", false).unwrap(),
            r.join("etc-link")
        );
        assert!(mkdir_all(r, "/etc-link/new/dir", None).unwrap());
        assert!(r.join("etc/new/dir").is_dir());
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "/loop/x", true).is_err());
    }

    #[test]
    fn missing_tails_aliases_and_users() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        fs::create_dir_all(r.join("real/sub")).unwrap();
        fs::write(r.join("f"), "").unwrap();
        // A root named through a symlink: results stay under the name given.
        let a = d.path().join("alias");
        symlink(&r, &a).unwrap();
        assert_eq!(
            resolve_in_root(&a, "/real/sub", true).unwrap(),
            a.join("real/sub")
        );
        assert_eq!(resolve_in_root(&a, "/", true).unwrap(), a);
        // What is missing is appended as written; `..` of a missing directory is lexical; a
        // file where a directory is needed is missing too.
        assert_eq!(
            resolve_in_root(&a, "/real/missing/x", true).unwrap(),
            a.join("real/missing/x")
        );
        assert_eq!(
            resolve_in_root(&a, "/real/missing/../sub", true).unwrap(),
            a.join("real/sub")
        );
        assert_eq!(resolve_in_root(&a, "/f/x", true).unwrap(), a.join("f/x"));
        // Absolute links and `..` stay inside.
        symlink("/etc/passwd", r.join("pw")).unwrap();
        assert_eq!(
            resolve_in_root(&a, "/pw", true).unwrap(),
            a.join("etc/passwd")
        );
        symlink("../../../real", r.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(&a, "/up/sub", true).unwrap(),
            a.join("real/sub")
        );
        // mkdir_all: new directories 0755 whatever the umask, owned as asked; false when
        // everything exists; a file in the way is refused.
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        assert!(mkdir_all(&a, "/n/m", Some(me)).unwrap());
        let m = fs::metadata(r.join("n/m")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (me.0, me.1, 0o755));
        assert!(!mkdir_all(&a, "n/./m/", None).unwrap());
        assert!(matches!(
            mkdir_all(&a, "/f/x", None),
            Err(FsError::NotADirectory(p)) if p == "/f"
        ));
        // Users are read inside the root: an absolute /etc/passwd link stays in it.
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::remove_file(r.join("pw")).unwrap();
        fs::write(r.join("real/pw"), "u:x:5:6::/:/bin/sh\n").unwrap();
        symlink("/real/pw", r.join("etc/passwd")).unwrap();
        fs::write(r.join("etc/group"), "g:x:7:\n").unwrap();
        assert_eq!(resolve_user(&a, "u").unwrap(), (5, 6));
        assert_eq!(resolve_user(&a, "u:g").unwrap(), (5, 7));
        assert_eq!(resolve_user(&a, "9:8").unwrap(), (9, 8));
        assert_eq!(
            resolve_user(&a, "root").unwrap_err(),
            UserError::User("root".into())
        );
        assert_eq!(
            resolve_user(&a, "u:nogroup").unwrap_err(),
            UserError::Group("nogroup".into())
        );
    }
}
