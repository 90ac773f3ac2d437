//! A state's layers read as overlayfs would merge them, without mounting them: for steps
//! that only create directories (WORKDIR), whose layer is then made directly in a fresh
//! upper directory. A mount and its unmount cost milliseconds each (the unmount waits for
//! an RCU grace period); such a step needs neither.
//!
//! The lookup follows overlayfs' rules on the snapshots' lower directories (top first): a
//! name is the topmost layer's entry; a 0:0 character device hides it (a whiteout); a
//! directory merges with the directories of the same name below it until one is opaque;
//! a directory hides non-directories below it. Anything this view does not decide exactly
//! as the mounted overlay would (symlinks on the way, creating over a whiteout, a file in
//! the way) makes the caller take the mounted path instead ([`Direct::Mount`]).

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, Timespec, Timestamps};

use crate::fsops;

/// What a WORKDIR does, decided on the layers.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Direct {
    /// The directory exists: no layer.
    Exists,
    /// The directories were made in the upper directory (a layer to write).
    Created,
    /// Not decidable here exactly: mount the overlay and do it there.
    Mount,
}

/// The lower directories of a state (top first).
pub(super) struct Lowers<'a>(pub &'a [PathBuf]);

/// One name looked up through the layers.
enum Found {
    /// A directory: the layers that have it as a directory, top first (merged).
    Dir(Vec<usize>),
    /// Nothing; `whiteout`: a layer's whiteout hides what is below.
    Missing { whiteout: bool },
    /// A file, symlink or other non-directory, in layer `.0`.
    Other(usize, fs::FileType),
}

impl Lowers<'_> {
    fn path(&self, layer: usize, comps: &[&str]) -> PathBuf {
        let mut p = self.0[layer].clone();
        p.extend(comps);
        p
    }

    /// Looks `name` up in the directory `comps` (merged from `dirs`).
    fn child(&self, dirs: &[usize], comps: &[&str]) -> io::Result<Found> {
        let mut merged = Vec::new();
        for &l in dirs {
            let p = self.path(l, comps);
            let m = match fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let ft = m.file_type();
            if ft.is_dir() {
                merged.push(l);
                if crate::diff::is_opaque(&p) {
                    break;
                }
                continue;
            }
            if !merged.is_empty() {
                // A directory above hides whatever is here.
                break;
            }
            if ft.is_char_device() && m.rdev() == 0 {
                return Ok(Found::Missing { whiteout: true });
            }
            return Ok(Found::Other(l, ft));
        }
        Ok(if merged.is_empty() {
            Found::Missing { whiteout: false }
        } else {
            Found::Dir(merged)
        })
    }

    /// The merged directory `comps` (from the root), or what is there instead.
    fn lookup(&self, comps: &[&str]) -> io::Result<Found> {
        let mut dirs: Vec<usize> = (0..self.0.len()).collect();
        for i in 0..comps.len() {
            match self.child(&dirs, &comps[..=i])? {
                Found::Dir(d) => dirs = d,
                other => return Ok(other),
            }
        }
        Ok(Found::Dir(dirs))
    }

    /// A regular file's text (`Some("")` when missing); `None` when a symlink (or anything
    /// but a file or nothing) is on its path.
    fn read_file(&self, path: &str) -> io::Result<Option<String>> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some((name, dir)) = comps.split_last() else {
            return Ok(None);
        };
        let dirs = match self.lookup(dir)? {
            Found::Dir(d) => d,
            Found::Missing { .. } => return Ok(Some(String::new())),
            Found::Other(..) => return Ok(None),
        };
        let mut full = dir.to_vec();
        full.push(name);
        match self.child(&dirs, &full)? {
            Found::Missing { .. } => Ok(Some(String::new())),
            Found::Other(l, ft) if ft.is_file() => {
                let mut text = String::new();
                let _ = fs::File::open(self.path(l, &full))?.read_to_string(&mut text);
                Ok(Some(text))
            }
            _ => Ok(None),
        }
    }

    /// `mkdir -p dir` (absolute, clean) as on the mounted overlay, done in `upper`: the
    /// existing directories on the way are copied up (mode, owner, times and extended
    /// attributes, as overlayfs copies a directory up; the one that gets the new
    /// directory has its time changed by it), the missing ones made with mode 0755, owned
    /// by `user` (Docker's `user[:group]`, read in the layers' `/etc/passwd` and
    /// `/etc/group`; root when empty). `upper` is created only when something is made.
    pub fn mkdir_all(&self, upper: &Path, dir: &str, user: &str) -> io::Result<Direct> {
        let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        // The existing part: plain directories only.
        let mut dirs: Vec<usize> = (0..self.0.len()).collect();
        // The layer whose directory gives each existing one its attributes (the topmost).
        let mut tops = Vec::new();
        while tops.len() < comps.len() {
            match self.child(&dirs, &comps[..=tops.len()])? {
                Found::Dir(d) => {
                    tops.push(d[0]);
                    dirs = d;
                }
                Found::Missing { whiteout: false } => break,
                // A symlink to follow, a file in the way, a directory over a whiteout
                // (overlayfs makes it opaque): the mounted path decides.
                Found::Missing { whiteout: true } | Found::Other(..) => return Ok(Direct::Mount),
            }
        }
        let have = tops.len();
        if have == comps.len() {
            return Ok(Direct::Exists);
        }
        let owner = if user.is_empty() {
            None
        } else {
            let (Some(passwd), Some(group)) = (
                self.read_file("/etc/passwd")?,
                self.read_file("/etc/group")?,
            ) else {
                return Ok(Direct::Mount);
            };
            let read = |f: &str| match f {
                "/etc/passwd" => passwd.clone(),
                "/etc/group" => group.clone(),
                _ => String::new(),
            };
            match fsops::resolve_user_with(user, read) {
                Ok(o) => Some(o),
                // The mounted path fails with the same words.
                Err(_) => return Ok(Direct::Mount),
            }
        };
        fs::create_dir_all(upper)?;
        let mut cur: OwnedFd = rustix::fs::open(
            upper,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Copied up: their times are set back once everything below them exists.
        let mut copied: Vec<(OwnedFd, Timestamps)> = Vec::new();
        for (i, name) in comps.iter().enumerate() {
            rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o700))?;
            let fd = open_dir(&cur, name)?;
            if let Some(&top) = tops.get(i) {
                let src = self.path(top, &comps[..=i]);
                let m = fs::symlink_metadata(&src)?;
                copy_xattrs(&src, &fd)?;
                set_owner_mode(&fd, Some((m.uid(), m.gid())), m.mode() & 0o7777)?;
                let times = Timestamps {
                    last_access: Timespec {
                        tv_sec: m.atime(),
                        tv_nsec: m.atime_nsec() as _,
                    },
                    last_modification: Timespec {
                        tv_sec: m.mtime(),
                        tv_nsec: m.mtime_nsec() as _,
                    },
                };
                copied.push((fd.try_clone()?, times));
            } else {
                set_owner_mode(&fd, owner, 0o755)?;
            }
            cur = fd;
        }
        // The last copied-up directory got a new one: its modification time is the
        // creation's (as on the overlay); the others keep the lower's times.
        if let Some((_, times)) = copied.last_mut() {
            times.last_modification.tv_nsec = rustix::fs::UTIME_OMIT;
        }
        for (fd, times) in copied.iter().rev() {
            rustix::fs::futimens(fd, times)?;
        }
        Ok(Direct::Created)
    }
}

fn open_dir(parent: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The owner (when given; else the creator's, root) and mode, set on the open directory
/// (the owner first: it may clear mode bits).
fn set_owner_mode(fd: &OwnedFd, ids: Option<(u32, u32)>, mode: u32) -> io::Result<()> {
    if let Some((u, g)) = ids {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(u)),
            Some(rustix::fs::Gid::from_raw(g)),
        )?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    Ok(())
}

/// The extended attributes overlayfs copies up with a directory (not its own).
fn copy_xattrs(src: &Path, dst: &impl AsFd) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(src, &mut names) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(rustix::io::Errno::RANGE) => {
            names = vec![0u8; 64 << 10];
            rustix::fs::llistxattr(src, &mut names)?
        }
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 64 << 10];
        let len = match rustix::fs::lgetxattr(src, name.as_ref(), &mut value) {
            Ok(len) => len,
            // Gone meanwhile, or not readable here: overlayfs skips it too.
            Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => continue,
            Err(e) => return Err(e.into()),
        };
        rustix::fs::fsetxattr(
            dst,
            name.as_ref(),
            &value[..len],
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn layer(root: &Path, name: &str) -> PathBuf {
        let p = root.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn whiteout(p: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
    }

    fn set_time(p: &Path, secs: i64) {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// The entries of a tree as the layer diff sees them (type, mode, owner, time) and its
    /// extended attributes; times of `fresh` paths (set by the step) only as "recent".
    fn tree(root: &Path, fresh: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let mut names: Vec<_> = fs::read_dir(root.join(&rel))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let r = rel.join(&n);
                let p = root.join(&r);
                let m = fs::symlink_metadata(&p).unwrap();
                let rs = r.to_string_lossy().into_owned();
                let time = if fresh.contains(&rs.as_str()) {
                    assert!(m.mtime() > 1_000_000_000, "{rs}: {}", m.mtime());
                    "now".to_string()
                } else {
                    m.mtime().to_string()
                };
                let mut names = vec![0u8; 4096];
                let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
                let mut xattrs: Vec<String> = names[..n]
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .filter(|n| n != "trusted.overlay.origin" && n != "trusted.overlay.impure")
                    .collect();
                xattrs.sort();
                out.push(format!(
                    "{rs} {:o} {}:{} {time} {xattrs:?}",
                    m.mode(),
                    m.uid(),
                    m.gid()
                ));
                if m.is_dir() {
                    stack.push(r);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn decides_on_the_layers_what_the_mounted_overlay_would() {
        let d = tempfile::tempdir().unwrap();
        let (top, mid, base) = (
            layer(d.path(), "top"),
            layer(d.path(), "mid"),
            layer(d.path(), "base"),
        );
        fs::create_dir_all(base.join("usr/share")).unwrap();
        fs::create_dir_all(base.join("gone/sub")).unwrap();
        fs::create_dir_all(base.join("hidden/deep")).unwrap();
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(
            base.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnode:x:1000:1001::/home/node:/bin/sh\n",
        )
        .unwrap();
        fs::write(base.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        fs::write(base.join("file"), "f").unwrap();
        symlink("/usr/share", base.join("link")).unwrap();
        fs::create_dir_all(mid.join("usr")).unwrap();
        whiteout(&mid.join("gone"));
        fs::create_dir_all(top.join("hidden")).unwrap();
        rustix::fs::setxattr(
            top.join("hidden"),
            berth_image::layer::overlay_opaque_xattr(),
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        // The topmost directory gives the attributes.
        fs::set_permissions(mid.join("usr"), fs::Permissions::from_mode(0o2775)).unwrap();
        std::os::unix::fs::chown(mid.join("usr"), Some(7), Some(8)).unwrap();
        set_time(&mid.join("usr"), 1_000_000);
        set_time(&base.join("usr/share"), 2_000_000);
        let lowers = [top, mid, base];
        let l = Lowers(&lowers);
        let up = |n: &str| d.path().join(format!("up-{n}"));
        assert_eq!(
            l.mkdir_all(&up("a"), "/usr/share", "").unwrap(),
            Direct::Exists
        );
        assert_eq!(l.mkdir_all(&up("a"), "/", "").unwrap(), Direct::Exists);
        assert!(!up("a").exists(), "nothing made for an existing directory");
        // Symlinks, files in the way, directories over whiteouts: the mounted path.
        assert_eq!(l.mkdir_all(&up("b"), "/link/x", "").unwrap(), Direct::Mount);
        assert_eq!(l.mkdir_all(&up("b"), "/file/x", "").unwrap(), Direct::Mount);
        assert_eq!(
            l.mkdir_all(&up("b"), "/gone/sub", "").unwrap(),
            Direct::Mount
        );
        assert!(!up("b").exists());
        // Below an opaque directory the lower's content is not there.
        assert_eq!(
            l.mkdir_all(&up("c"), "/hidden/deep", "").unwrap(),
            Direct::Created
        );
        assert_eq!(
            l.mkdir_all(&up("d"), "/usr/share/app/x", "node:staff")
                .unwrap(),
            Direct::Created
        );
        let got = tree(&up("d"), &["usr/share", "usr/share/app", "usr/share/app/x"]);
        assert_eq!(
            got,
            vec![
                "usr 42775 7:8 1000000 []".to_string(),
                "usr/share 40755 0:0 now []".to_string(),
                "usr/share/app 40755 1000:50 now []".to_string(),
                "usr/share/app/x 40755 1000:50 now []".to_string(),
            ]
        );
        // An unknown user: the mounted path fails with Docker's words.
        assert_eq!(
            l.mkdir_all(&up("e"), "/new", "nobody").unwrap(),
            Direct::Mount
        );
        // No layers at all (FROM scratch).
        assert_eq!(
            Lowers(&[]).mkdir_all(&up("f"), "/a/b", "").unwrap(),
            Direct::Created
        );
        assert_eq!(
            tree(&up("f"), &["a", "a/b"]),
            vec!["a 40755 0:0 now []", "a/b 40755 0:0 now []"]
        );
    }

    /// The same `mkdir -p` on a mounted overlay of the same layers (root only) gives the
    /// same upper directory.
    #[test]
    fn matches_the_mounted_overlay() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (overlay mounts)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (top, base) = (layer(d.path(), "top"), layer(d.path(), "base"));
        fs::create_dir_all(base.join("srv/www")).unwrap();
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(base.join("etc/passwd"), "app:x:33:44::/:/bin/sh\n").unwrap();
        fs::create_dir_all(top.join("srv")).unwrap();
        fs::set_permissions(top.join("srv"), fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::chown(top.join("srv"), Some(3), Some(4)).unwrap();
        rustix::fs::setxattr(
            top.join("srv"),
            "user.note",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        fs::set_permissions(base.join("srv/www"), fs::Permissions::from_mode(0o750)).unwrap();
        set_time(&top.join("srv"), 3_000_000);
        set_time(&base.join("srv/www"), 4_000_000);
        let lowers = [top, base];
        let direct = d.path().join("direct");
        assert_eq!(
            Lowers(&lowers)
                .mkdir_all(&direct, "/srv/www/site/logs", "app")
                .unwrap(),
            Direct::Created
        );
        let (merged, upper, work) = (
            layer(d.path(), "merged"),
            layer(d.path(), "upper"),
            layer(d.path(), "work"),
        );
        berth_image::snapshot::mount_overlay_volatile(&lowers, (&upper, &work), &merged).unwrap();
        let owner = fsops::resolve_user(&merged, "app").unwrap();
        let made = fsops::mkdir_all(&merged, "/srv/www/site/logs", Some(owner));
        berth_image::snapshot::unmount(&merged).unwrap();
        assert!(made.unwrap());
        let fresh = ["srv/www", "srv/www/site", "srv/www/site/logs"];
        assert_eq!(tree(&direct, &fresh), tree(&upper, &fresh));
        assert_eq!(
            tree(&direct, &fresh)[0],
            "srv 41777 3:4 3000000 [\"user.note\"]"
        );
    }
}
