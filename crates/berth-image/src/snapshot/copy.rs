//! The copying driver (no overlayfs), and the tree copy it is made of (hard links,
//! owners, modes, times and xattrs kept).

use super::*;

/// The copying snapshotter (no overlayfs needed).
pub struct CopySnapshotter {
    base: Base,
}

impl CopySnapshotter {
    /// Opens (creating) a snapshotter rooted at `root`.
    pub fn open(root: &Path) -> Result<Self, SnapshotError> {
        Ok(Self {
            base: Base::open(
                root,
                Layout {
                    driver: "copy",
                    layer_dir: "fs",
                    mode: ApplyMode::Flat,
                },
            )?,
        })
    }

    /// The flattened file system of a snapshot.
    pub fn fs_dir(&self, chain_id: &Digest) -> PathBuf {
        self.base.layer_dir(chain_id)
    }

    /// A container's root file system directory.
    pub fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.base.container_dir(id).join("rootfs")
    }

    /// `dest`, a copy of the parent's file system (empty without one).
    fn copy_parent(&self, parent: Option<&Digest>, dest: &Path) -> Result<(), SnapshotError> {
        fs::create_dir(dest).map_err(io_at("create directory", dest))?;
        if let Some(p) = parent {
            let src = self.fs_dir(p);
            copy_tree(&src, dest)?;
        }
        Ok(())
    }

    fn prepare_layer_dir(&self, parent: Option<&Digest>, t: &Path) -> Result<(), SnapshotError> {
        self.copy_parent(parent, t)
    }

    fn fill_container_dir(&self, parent: Option<&Digest>, dir: &Path) -> Result<(), SnapshotError> {
        self.copy_parent(parent, &dir.join("rootfs"))
    }
}

impl Snapshotter for CopySnapshotter {
    base_methods!();

    fn mount_container(&self, id: &str, target: &Path) -> Result<(), SnapshotError> {
        self.base.container(id)?;
        let src = self.rootfs_dir(id);
        rustix::mount::mount_bind(&src, target).map_err(|e| SnapshotError::Mount {
            target: target.to_path_buf(),
            source: e.into(),
        })
    }
}

/// Copies the tree under `src` into the existing empty directory `dst`, preserving types,
/// ownership, modes, times, xattrs and hard links, never following symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let open = |p: &Path| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at("open", p)(e.into()))
    };
    let s = open(src)?;
    let d = open(dst)?;
    let mut links = std::collections::HashMap::new();
    let mut rel = Vec::new();
    copy_dir_contents(s.as_fd(), d.as_fd(), d.as_fd(), &mut rel, &mut links)
        .map_err(io_at("copy", src))?;
    copy_meta_fd(s.as_fd(), d.as_fd()).map_err(io_at("copy metadata", dst))
}

pub(super) type LinkMap = std::collections::HashMap<(u64, u64), Vec<Vec<u8>>>;

pub(super) fn copy_dir_contents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    rel: &mut Vec<Vec<u8>>,
    links: &mut LinkMap,
) -> io::Result<()> {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    for name in layer::list_dir(src)? {
        let name = name.as_slice();
        let st = rfs::statat(src, name, nofollow)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        let times = stat_times(&st);
        // Owners of what is made by name (symlinks and devices), without following it.
        let chown_entry = || {
            rfs::chownat(
                dst,
                name,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                nofollow,
            )
        };
        rel.push(name.to_vec());
        let key = (st.st_dev as u64, st.st_ino as u64);
        if ft != FileType::Directory && st.st_nlink > 1 {
            if let Some(first) = links.get(&key) {
                let (fbase, fparent) = first
                    .split_last()
                    .ok_or_else(|| io::Error::other("empty link path"))?;
                let pfd = layer::resolve_dir(dst_root, fparent, None).map_err(io::Error::other)?;
                rfs::linkat(&pfd, fbase.as_slice(), dst, name, AtFlags::empty())?;
                rel.pop();
                continue;
            }
            links.insert(key, rel.clone());
        }
        match ft {
            FileType::Directory => {
                rfs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let s2 = rfs::openat(src, name, flags, Mode::empty())?;
                let d2 = rfs::openat(dst, name, flags, Mode::empty())?;
                copy_dir_contents(s2.as_fd(), d2.as_fd(), dst_root, rel, links)?;
                copy_meta_fd(s2.as_fd(), d2.as_fd())?;
            }
            FileType::RegularFile => {
                let sf = rfs::openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let df = rfs::openat(
                    dst,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut sf = fs::File::from(sf);
                let mut df = fs::File::from(df);
                io::copy(&mut sf, &mut df)?;
                copy_meta_fd(sf.as_fd(), df.as_fd())?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(src, name, Vec::new())?;
                rfs::symlinkat(target.as_c_str(), dst, name)?;
                chown_entry()?;
            }
            ft => {
                rfs::mknodat(dst, name, ft, mode, st.st_rdev as _)?;
                chown_entry()?;
                rfs::chmodat(dst, name, mode, AtFlags::empty())?;
            }
        }
        if ft != FileType::Directory && ft != FileType::RegularFile {
            rfs::utimensat(dst, name, &times, nofollow)?;
        }
        rel.pop();
    }
    Ok(())
}

/// Copies ownership, mode, xattrs and times from one open file or directory to another.
pub(super) fn copy_meta_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let st = rfs::fstat(src)?;
    rfs::fchown(
        dst,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )?;
    rfs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    copy_xattrs(src, dst)?;
    let times = stat_times(&st);
    rfs::futimens(dst, &times)?;
    Ok(())
}

pub(super) fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        let name = std::ffi::CString::new(name.to_vec()).map_err(io::Error::other)?;
        let vn = match rfs::fgetxattr(src, name.as_c_str(), &mut val[..]) {
            Ok(v) => v,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match rfs::fsetxattr(dst, name.as_c_str(), &val[..vn], rfs::XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The access and modification times of a `stat`.
// The casts are no-ops here, not on targets whose `stat` has 32-bit times.
#[allow(clippy::unnecessary_cast)]
fn stat_times(st: &rfs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as i64,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as i64,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}
