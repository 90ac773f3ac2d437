//! Paths inside the target: lexical cleaning of entry names, and walks over directory
//! descriptors that never leave the root (see the module documentation of [`super`]).

use super::*;

/// Cleans a tar path: drops empty and `.` components and a leading `/`, resolves `..`
/// lexically and refuses to climb above the root.
pub fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, EntryError> {
    clean(raw, false)
}

/// As [`clean_path`], but a `..` at the root stays at the root, as a path resolves in a
/// chroot (dockerd extracts a build context chrooted: `../foo` and `/foo` both land at `foo`).
pub fn clean_path_in_root(raw: &[u8]) -> Result<Vec<Vec<u8>>, EntryError> {
    clean(raw, true)
}

fn clean(raw: &[u8], clamp: bool) -> Result<Vec<Vec<u8>>, EntryError> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !clamp {
                    return Err(EntryError::PathEscapes);
                }
            }
            c => {
                if c.len() > MAX_NAME {
                    return Err(EntryError::NameTooLong);
                }
                out.push(c.to_vec());
            }
        }
    }
    let total: usize = out.iter().map(|c| c.len() + 1).sum();
    if total > MAX_PATH {
        return Err(EntryError::NameTooLong);
    }
    Ok(out)
}

pub(super) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

pub(super) fn display_entry(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

pub(super) fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `comps` (relative to `root`) without ever leaving `root`; creates
/// missing components (mode 0755) when `create` is set, recording them in `created`.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    comps: &[Vec<u8>],
    mut created: Option<&mut HashSet<Vec<u8>>>,
) -> Result<OwnedFd, EntryError> {
    let mut cur = rustix::io::dup(root).map_err(sys("dup"))?;
    for (i, c) in comps.iter().enumerate() {
        match rfs::openat(&cur, c.as_slice(), dir_flags(), Mode::empty()) {
            Ok(fd) => cur = fd,
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                let st = rfs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(sys("stat"))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                    return Err(EntryError::NotADirectory);
                }
                // Resolve the whole prefix inside the root, as the container would see it
                // (berth-util's confined resolver: openat2 or its user-space walk).
                let prefix = join(&comps[..=i]);
                cur = berth_util::root::open_in_root(
                    root,
                    Path::new(std::ffi::OsStr::from_bytes(&prefix)),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV) => {
                        EntryError::UnresolvableSymlink
                    }
                    _ => EntryError::Io {
                        op: "resolve symlink",
                        source: e,
                    },
                })?;
            }
            Err(Errno::NOENT) if created.is_some() => {
                match rfs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(sys("mkdir")(e)),
                }
                if let Some(set) = created.as_deref_mut() {
                    set.insert(join(&comps[..=i]));
                }
                cur = rfs::openat(&cur, c.as_slice(), dir_flags(), Mode::empty())
                    .map_err(sys("open directory"))?;
            }
            Err(e) => return Err(sys("open directory")(e)),
        }
    }
    Ok(cur)
}

/// Removes `name` in `dir` (recursively if it is a directory), never following symlinks.
/// A missing entry is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = rfs::openat(dir, name, dir_flags(), Mode::empty())?;
        clear_dir(sub.as_fd())?;
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Removes everything inside the directory `dir`.
pub(crate) fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in list_dir(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// Names in a directory (without `.` and `..`).
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let d = rfs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    for ent in d {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Sets an xattr on `name` inside `dir` without following a symlink, through the
/// `/proc/self/fd/<dir>/<name>` path (the directory descriptor is trusted, `name` is one
/// component, and `lsetxattr` does not follow the last component).
pub(super) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &str,
    value: &[u8],
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    let path = Path::new(std::ffi::OsStr::from_bytes(&p));
    rfs::lsetxattr(path, key, value, XattrFlags::empty()).map_err(Into::into)
}
