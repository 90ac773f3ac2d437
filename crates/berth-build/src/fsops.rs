//! File-system helpers for COPY/ADD/WORKDIR inside a mounted root file system: symlinks are
//! resolved inside the root (never outside it), and copies keep modes and times.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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
}

/// Resolves `path` (absolute inside the container) against `root`, following symlinks as if
/// `root` were `/` (Docker's `FollowSymlinkInScope`). The last component is resolved too
/// when `follow_last`.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, FsError> {
    let mut todo: Vec<String> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let last = todo.is_empty();
        let mut p = root.to_path_buf();
        p.extend(&cur);
        p.push(&c);
        if last && !follow_last {
            cur.push(c);
            break;
        }
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(FsError::SymlinkLoop(path.to_string()));
                }
                let target = fs::read_link(&p).map_err(io_at("reading symlink", &p))?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur.clear();
                }
                for comp in Path::new(&t).components().rev() {
                    match comp {
                        Component::Normal(s) => todo.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => cur.push(c),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&cur);
    Ok(p)
}

/// Creates `path` (inside `root`) and missing parents, new directories owned by `owner` with
/// mode 0755. Returns whether anything was created.
pub fn mkdir_all(root: &Path, path: &str, owner: Option<(u32, u32)>) -> Result<bool, FsError> {
    let mut created = false;
    let mut acc = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        acc.push('/');
        acc.push_str(comp);
        let p = resolve_in_root(root, &acc, true)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(FsError::NotADirectory(acc)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(io_at("creating directory", &p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(io_at("setting the mode of", &p))?;
                if let Some((u, g)) = owner {
                    std::os::unix::fs::lchown(&p, Some(u), Some(g))
                        .map_err(io_at("setting the owner of", &p))?;
                }
                created = true;
            }
            Err(e) => return Err(io_at("inspecting", &p)(e)),
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
    let atime = rustix::fs::Timespec {
        tv_sec: src_meta.atime(),
        tv_nsec: src_meta.atime_nsec() as _,
    };
    let mtime = rustix::fs::Timespec {
        tv_sec: src_meta.mtime(),
        tv_nsec: src_meta.mtime_nsec() as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dst,
        &rustix::fs::Timestamps {
            last_access: atime,
            last_modification: mtime,
        },
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
    } else {
        replace_with(dst)?;
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(io_at("reading symlink", src))?;
            std::os::unix::fs::symlink(target, dst).map_err(io_at("creating symlink", dst))?;
        } else if ft.is_file() {
            fs::copy(src, dst).map_err(io_at("copying to", dst))?;
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
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let read = |f: &str| {
        resolve_in_root(root, f, true)
            .ok()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    let entry = |name_or_id: &str, by_id: bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[if by_id { 2 } else { 0 }] == name_or_id)
            .map(|f| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
    };
    let (uid, mut gid) = if let Ok(n) = u.parse::<u32>() {
        (n, entry(u, true).and_then(|e| e.1).unwrap_or(0))
    } else {
        match entry(u, false) {
            Some((Some(a), Some(b))) => (a, b),
            _ => return Err(UserError::User(u.to_string())),
        }
    };
    if let Some(g) = g {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
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
}
