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

/// Whether `dir` (absolute) is a directory in the merged `lowers` (top first), read as
/// overlayfs merges them; `None` when not decidable without mounting (a symlink, a file or
/// a whiteout on the way). For the daemon's create: an image's existing working directory
/// needs no mount to be made.
pub fn dir_in_layers(lowers: &[PathBuf], dir: &str) -> io::Result<Option<bool>> {
    let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    Ok(Lowers(lowers)
        .existing_dirs(&comps)?
        .map(|tops| tops.len() == comps.len()))
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

    /// Whether `path` is something other than a directory in the layers (a file, a device; not
    /// a symlink, which only the mounted view resolves, nor what is below a non-directory).
    pub fn is_non_dir(&self, path: &str) -> io::Result<bool> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        Ok(matches!(self.lookup(&comps)?, Found::Other(_, ft) if !ft.is_symlink()))
    }

    /// Docker's `user[:group]` read in the layers' `/etc/passwd` and `/etc/group` (`None`
    /// for an empty one: the creator's, root). `Err(None)`: not decided here (a symlink on
    /// the files' paths, an unknown user or group: the mounted path fails with Docker's
    /// words).
    pub fn owner(&self, user: &str) -> io::Result<Option<Option<(u32, u32)>>> {
        if user.is_empty() {
            return Ok(Some(None));
        }
        let (Some(passwd), Some(group)) = (
            self.read_file("/etc/passwd")?,
            self.read_file("/etc/group")?,
        ) else {
            return Ok(None);
        };
        let read = |f: &str| match f {
            "/etc/passwd" => passwd.clone(),
            "/etc/group" => group.clone(),
            _ => String::new(),
        };
        Ok(fsops::resolve_user_with(user, read).ok().map(Some))
    }

    /// The existing part of `comps`: the layer giving each existing directory its
    /// attributes (the topmost), until the first missing name; `None` when something else
    /// is on the way (a symlink to follow, a file, a whiteout: overlayfs makes a directory
    /// created over one opaque), which the mounted path decides.
    fn existing_dirs(&self, comps: &[&str]) -> io::Result<Option<Vec<usize>>> {
        let mut dirs: Vec<usize> = (0..self.0.len()).collect();
        let mut tops = Vec::new();
        while tops.len() < comps.len() {
            match self.child(&dirs, &comps[..=tops.len()])? {
                Found::Dir(d) => {
                    tops.push(d[0]);
                    dirs = d;
                }
                Found::Missing { whiteout: false } => break,
                Found::Missing { whiteout: true } | Found::Other(..) => return Ok(None),
            }
        }
        Ok(Some(tops))
    }

    /// Makes `comps` in `upper` (created): the existing directories (`tops`, see
    /// [`Lowers::existing_dirs`]) copied up as overlayfs copies a directory up (mode, owner,
    /// extended attributes), the missing ones with mode 0755, owned by `owner`. Returns the
    /// copied-up ones with their lower times, to set back once everything below them exists.
    fn copy_up(
        &self,
        upper: &Path,
        comps: &[&str],
        tops: &[usize],
        owner: Option<(u32, u32)>,
    ) -> io::Result<Vec<(OwnedFd, Timestamps)>> {
        fs::create_dir_all(upper)?;
        let mut cur: OwnedFd = rustix::fs::open(
            upper,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
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
        Ok(copied)
    }

    /// `mkdir -p dir` (absolute, clean) as on the mounted overlay, done in `upper`: the
    /// existing directories on the way are copied up (mode, owner, times and extended
    /// attributes, as overlayfs copies a directory up; the one that gets the new
    /// directory has its time changed by it), the missing ones made with mode 0755, owned
    /// by `user` (Docker's `user[:group]`, read in the layers' `/etc/passwd` and
    /// `/etc/group`; root when empty). `upper` is created only when something is made.
    pub fn mkdir_all(&self, upper: &Path, dir: &str, user: &str) -> io::Result<Direct> {
        let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        let Some(tops) = self.existing_dirs(&comps)? else {
            return Ok(Direct::Mount);
        };
        if tops.len() == comps.len() {
            return Ok(Direct::Exists);
        }
        let Some(owner) = self.owner(user)? else {
            return Ok(Direct::Mount);
        };
        let mut copied = self.copy_up(upper, &comps, &tops, owner)?;
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

    /// Prepares `upper` for a step that writes only at or below `path` (absolute, clean),
    /// which must not exist in the layers (a missing name on the way, plain directories
    /// before it): the existing directories are copied up as overlayfs copies them (times
    /// included), nothing else is made, and the step then writes into `upper` what it would
    /// write on the mounted overlay, with the same result. `Exists` (the path is there:
    /// the step would merge with the layers' content) and `Mount` leave `upper` alone.
    pub fn prepare_new(&self, upper: &Path, path: &str) -> io::Result<Direct> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some(tops) = self.existing_dirs(&comps)? else {
            return Ok(Direct::Mount);
        };
        if tops.len() == comps.len() {
            return Ok(Direct::Exists);
        }
        let copied = self.copy_up(upper, &comps[..tops.len()], &tops, None)?;
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

    /// Two lower layers under `root`: `top` with `/srv` (mode 1777, owner 3:4, an xattr, a
    /// time of its own) over `base` with `/srv/www` (a time of its own): what a copy-up of
    /// `/srv` must keep.
    fn srv_over_www(root: &Path) -> (PathBuf, PathBuf) {
        let (top, base) = (layer(root, "top"), layer(root, "base"));
        fs::create_dir_all(base.join("srv/www")).unwrap();
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
        set_time(&top.join("srv"), 3_000_000);
        set_time(&base.join("srv/www"), 4_000_000);
        (top, base)
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
        let (top, base) = srv_over_www(d.path());
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(base.join("etc/passwd"), "app:x:33:44::/:/bin/sh\n").unwrap();
        fs::set_permissions(base.join("srv/www"), fs::Permissions::from_mode(0o750)).unwrap();
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

    /// The daemon's create: an image's working directory found in the layers, or not.
    #[test]
    fn dir_in_layers_decides_only_what_needs_no_mount() {
        let d = tempfile::tempdir().unwrap();
        let (top, base) = (layer(d.path(), "top"), layer(d.path(), "base"));
        fs::create_dir_all(base.join("app/src")).unwrap();
        fs::create_dir_all(base.join("gone")).unwrap();
        fs::write(base.join("file"), "f").unwrap();
        symlink("/app", base.join("link")).unwrap();
        whiteout(&top.join("gone"));
        let lowers = [top, base];
        for (dir, want) in [
            ("/app/src", Some(true)),
            ("/app", Some(true)),
            ("/app/new", Some(false)),
            ("/missing/x", Some(false)),
            ("/file", None),
            ("/link/src", None),
            ("/gone", None),
        ] {
            assert_eq!(dir_in_layers(&lowers, dir).unwrap(), want, "{dir}");
        }
    }

    #[test]
    fn prepare_new_copies_up_only_the_existing_parents_of_a_new_path() {
        let d = tempfile::tempdir().unwrap();
        let (top, base) = (layer(d.path(), "top"), layer(d.path(), "base"));
        fs::create_dir_all(base.join("app/old")).unwrap();
        fs::create_dir_all(base.join("gone")).unwrap();
        fs::write(base.join("file"), "f").unwrap();
        symlink("/app", base.join("link")).unwrap();
        whiteout(&top.join("gone"));
        fs::set_permissions(base.join("app"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::chown(base.join("app"), Some(5), Some(6)).unwrap();
        set_time(&base.join("app"), 5_000_000);
        let lowers = [top, base];
        let l = Lowers(&lowers);
        let up = |n: &str| d.path().join(format!("up-{n}"));
        // The path is there: the step would merge with it.
        assert_eq!(l.prepare_new(&up("a"), "/app/old").unwrap(), Direct::Exists);
        // A symlink, a file, a whiteout on the way: the mounted path.
        assert_eq!(l.prepare_new(&up("a"), "/link/new").unwrap(), Direct::Mount);
        assert_eq!(l.prepare_new(&up("a"), "/file/new").unwrap(), Direct::Mount);
        assert_eq!(l.prepare_new(&up("a"), "/gone/new").unwrap(), Direct::Mount);
        assert!(!up("a").exists());
        assert_eq!(
            l.prepare_new(&up("b"), "/app/new/deep").unwrap(),
            Direct::Created
        );
        // Only the parent, with the lower's attributes and times: the step makes the rest.
        assert_eq!(tree(&up("b"), &[]), vec!["app 40750 5:6 5000000 []"]);
        assert_eq!(l.prepare_new(&up("c"), "/new").unwrap(), Direct::Created);
        assert_eq!(tree(&up("c"), &[]), Vec::<String>::new());
        // Users come from the layers' files; an unknown one is left to the mounted path.
        fs::create_dir_all(lowers[1].join("etc")).unwrap();
        fs::write(lowers[1].join("etc/passwd"), "app:x:12:34::/:/bin/sh\n").unwrap();
        fs::write(lowers[1].join("etc/group"), "grp:x:56:\n").unwrap();
        assert_eq!(l.owner("").unwrap(), Some(None));
        assert_eq!(l.owner("app").unwrap(), Some(Some((12, 34))));
        assert_eq!(l.owner("app:grp").unwrap(), Some(Some((12, 56))));
        assert_eq!(l.owner("99:7").unwrap(), Some(Some((99, 7))));
        assert_eq!(l.owner("nobody").unwrap(), None);
        assert_eq!(l.owner("app:nogroup").unwrap(), None);
    }

    /// A COPY written into the upper directory `prepare_new` made gives the upper directory
    /// the same COPY gives on the mounted overlay (root only).
    #[test]
    fn a_copy_into_a_new_path_matches_the_mounted_overlay() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root (overlay mounts)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let (top, base) = srv_over_www(d.path());
        let src = layer(d.path(), "src");
        // The copied tree: a file, an executable, a symlink, a subdirectory.
        fs::create_dir_all(src.join("files/sub")).unwrap();
        fs::write(src.join("files/a.txt"), "a").unwrap();
        fs::write(src.join("files/sub/run.sh"), "#!/bin/sh").unwrap();
        fs::set_permissions(
            src.join("files/sub/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("../a.txt", src.join("files/sub/link")).unwrap();
        for p in ["files/a.txt", "files/sub/run.sh", "files/sub", "files"] {
            set_time(&src.join(p), 6_000_000);
        }
        let copy = |root: &Path| {
            let owner = Some((1000, 1000));
            fsops::mkdir_all(root, "/srv/www/site/files", owner).unwrap();
            let dst = fsops::resolve_in_root(root, "/srv/www/site/files", true).unwrap();
            let attrs = fsops::CopyAttrs {
                owner,
                ..Default::default()
            };
            for e in fsops::sorted_entries(&src.join("files")).unwrap() {
                fsops::copy_entry(&e.path(), &dst.join(e.file_name()), &attrs).unwrap();
            }
        };
        let lowers = [top, base];
        let direct = d.path().join("direct");
        assert_eq!(
            Lowers(&lowers)
                .prepare_new(&direct, "/srv/www/site/files")
                .unwrap(),
            Direct::Created
        );
        copy(&direct);
        let (merged, upper, work) = (
            layer(d.path(), "merged"),
            layer(d.path(), "upper"),
            layer(d.path(), "work"),
        );
        berth_image::snapshot::mount_overlay_volatile(&lowers, (&upper, &work), &merged).unwrap();
        let copied = std::panic::catch_unwind(|| copy(&merged));
        berth_image::snapshot::unmount(&merged).unwrap();
        copied.unwrap();
        let fresh = ["srv/www", "srv/www/site", "srv/www/site/files"];
        assert_eq!(tree(&direct, &fresh), tree(&upper, &fresh));
        assert_eq!(
            tree(&direct, &fresh)[..3],
            [
                "srv 41777 3:4 3000000 [\"user.note\"]",
                "srv/www 40755 0:0 now []",
                "srv/www/site 40755 1000:1000 now []",
            ]
        );
    }
}
