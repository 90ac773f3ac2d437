//! Applying tar entries in order: metadata, regular files, directories, links, devices,
//! whiteouts and opaque directories, owners and times.

use super::paths::{dir_flags, join, lsetxattr_at};
use super::writers::OFFLOAD_MAX;
use super::*;

#[derive(Clone)]
pub(super) struct Meta {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mode: u32,
    pub(super) atime: Timespec,
    pub(super) mtime: Timespec,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    pub(super) fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime,
            last_modification: self.mtime,
        }
    }
}

pub(super) fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let tv_sec: i64 = sec.parse().ok()?;
    let mut nanos = 0i64;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        nanos = format!("{digits:0<9}").parse().ok()?;
        if tv_sec < 0 && nanos > 0 {
            return Some(Timespec {
                tv_sec: tv_sec - 1,
                tv_nsec: (1_000_000_000 - nanos) as _,
            });
        }
    }
    Some(Timespec {
        tv_sec,
        tv_nsec: nanos as _,
    })
}

pub(super) struct Applier<'a> {
    pub(super) root: BorrowedFd<'a>,
    pub(super) opts: &'a ApplyOptions,
    /// Paths created or replaced by this layer (for opaque directories in flat mode).
    pub(super) created: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end (contents change them).
    pub(super) dir_times: Vec<(Vec<Vec<u8>>, Timestamps)>,
    pub(super) entries: u64,
    /// Docker's content size of what was read so far.
    pub(super) content_size: u64,
    /// The last parent directory resolved (tar lists a directory's entries together): saves a
    /// confined walk from the root per entry. Dropped whenever an entry could change it.
    pub(super) parent_cache: Option<ParentDir>,
    /// Who owns what this process creates (to skip `chown` / `chmod` calls that would change
    /// nothing).
    pub(super) owner: Owner,
    /// The writer threads small regular files are handed to (see [`FileJob`]).
    pub(super) writers: Option<(std::sync::mpsc::SyncSender<FileJob>, Arc<WriterShared>)>,
}

/// A resolved parent directory.
pub(super) struct ParentDir {
    pub(super) comps: Vec<Vec<u8>>,
    pub(super) fd: Arc<OwnedFd>,
    /// The group new entries inherit from it (set-group-ID directory), if any.
    pub(super) inherit_gid: Option<u64>,
}

/// The owner and mode of what this process creates.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) umask: u32,
}

impl Owner {
    pub(super) fn current() -> Self {
        // The umask from /proc (umask(2) would have to change it to read it, racing with
        // other threads creating files); unknown = assume every bit is masked.
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777);
        Self {
            uid: u64::from(rustix::process::geteuid().as_raw()),
            gid: u64::from(rustix::process::getegid().as_raw()),
            umask,
        }
    }

    /// Whether an entry created in `parent` needs a `chown` to get `meta`'s owner.
    pub(super) fn needs_chown(&self, parent: &ParentDir, meta: &Meta) -> bool {
        meta.uid != self.uid || meta.gid != parent.inherit_gid.unwrap_or(self.gid)
    }

    /// Whether `mode` can be given at creation (no special bits, nothing the umask removes),
    /// so that no `chmod` is needed.
    pub(super) fn plain_mode(&self, mode: u32) -> bool {
        mode & 0o7000 == 0 && mode & self.umask == 0
    }
}

impl Applier<'_> {
    /// An entry name or link target as components ([`ApplyOptions::clamp_to_root`]).
    fn clean(&self, raw: &[u8]) -> Result<Vec<Vec<u8>>, EntryError> {
        if self.opts.clamp_to_root {
            clean_path_in_root(raw)
        } else {
            clean_path(raw)
        }
    }

    pub(super) fn apply<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw_path = e.path_bytes().into_owned();
        let wrap = |error: EntryError| LayerError::Entry {
            entry: display_entry(&raw_path),
            error,
        };
        let kind = e.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.entries += 1;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let base = raw_path.rsplit(|b| *b == b'/').next().unwrap_or(&raw_path);
                if !base.starts_with(WHITEOUT_PREFIX) {
                    self.content_size += e.size();
                }
            }
            tar::EntryType::Symlink => {
                self.content_size += e.link_name_bytes().map_or(0, |l| l.len() as u64);
            }
            _ => {}
        }
        let comps = self.clean(&raw_path).map_err(wrap)?;
        let Some((base, parent)) = comps.split_last() else {
            // The root itself ("./" or "/"): leave the target's own metadata alone.
            return Ok(());
        };
        // An entry at or above the cached directory may replace it (or a component of its path).
        if let Some(cached) = &self.parent_cache {
            if cached.comps.starts_with(&comps)
                || (self.opts.mode != ApplyMode::Plain && base.starts_with(WHITEOUT_PREFIX))
            {
                self.parent_cache = None;
            }
        }
        let is_whiteout = self.opts.mode != ApplyMode::Plain && base.starts_with(WHITEOUT_PREFIX);
        // A writer failed: stop early with its error.
        if self
            .writers
            .as_ref()
            .is_some_and(|(_, sh)| sh.failed.load(AtomicOrdering::SeqCst))
        {
            self.barrier()?;
        }
        if is_whiteout {
            return self.whiteout(e, parent, base).map_err(wrap);
        }
        let mut meta = self.meta(e).map_err(wrap)?;
        if let Some((u, g)) = self.opts.chown {
            meta.uid = u64::from(u);
            meta.gid = u64::from(g);
        }
        if self.opts.no_overwrite_dir_non_dir {
            self.check_dir_non_dir(parent, base, kind).map_err(wrap)?;
        }
        self.apply_entry(e, &comps, parent, base, kind, &meta)
            .map_err(|err| match err {
                Ok(error) => wrap(error),
                Err(read) => LayerError::Read(read),
            })
    }

    pub(super) fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>) -> Result<Meta, EntryError> {
        let h = e.header();
        let bad = |source| EntryError::Io {
            op: "read header",
            source,
        };
        // Like Go's archive/tar, an empty numeric field reads as 0.
        let blank = |f: &[u8]| f.iter().all(|b| *b == 0 || *b == b' ');
        let old = h.as_old();
        let lenient = |r: io::Result<u64>, field: &[u8]| match r {
            Err(_) if blank(field) => Ok(0),
            r => r,
        };
        let uid = lenient(h.uid(), &old.uid).map_err(bad)?;
        let gid = lenient(h.gid(), &old.gid).map_err(bad)?;
        let mode = lenient(h.mode().map(u64::from), &old.mode).map_err(bad)? as u32 & 0o7777;
        let secs = lenient(h.mtime(), &old.mtime).map_err(bad)?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(bad)? {
            for ext in exts {
                let ext = ext.map_err(bad)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                if key == "mtime" {
                    if let Some(t) = parse_pax_time(value) {
                        mtime = t;
                    }
                } else if key == "atime" {
                    atime = parse_pax_time(value);
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // Overlay metadata is Berth's to write, never the image's.
                    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                        continue;
                    }
                    xattrs.push((name.to_string(), value.to_vec()));
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    /// Errors are `Ok(EntryError)` for entry problems and `Err(io)` for stream read errors.
    pub(super) fn apply_entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        parent_comps: &[Vec<u8>],
        base: &[u8],
        kind: tar::EntryType,
        meta: &Meta,
    ) -> Result<(), Result<EntryError, io::Error>> {
        let pd = match self.parent_cache.take() {
            Some(pd) if pd.comps.as_slice() == parent_comps => pd,
            _ => {
                let fd =
                    resolve_dir(self.root, parent_comps, Some(&mut self.created)).map_err(Ok)?;
                let st = rfs::fstat(&fd).map_err(|e| Ok(sys("stat directory")(e)))?;
                ParentDir {
                    comps: parent_comps.to_vec(),
                    fd: Arc::new(fd),
                    inherit_gid: (st.st_mode & libc::S_ISGID != 0).then_some(u64::from(st.st_gid)),
                }
            }
        };
        // The entry changes only what is inside the parent: it stays cached.
        let r = self.apply_in(e, comps, &pd, base, kind, meta);
        self.parent_cache = Some(pd);
        r?;
        self.created.insert(join(comps));
        Ok(())
    }

    pub(super) fn apply_in<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        pd: &ParentDir,
        base: &[u8],
        kind: tar::EntryType,
        meta: &Meta,
    ) -> Result<(), Result<EntryError, io::Error>> {
        let parent = pd.fd.as_fd();
        let chown = self.opts.same_owner && self.owner.needs_chown(pd, meta);
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                // Created with its final mode when the umask cannot change it: then no
                // chmod (a chown never changes plain permission bits).
                let plain = self.owner.plain_mode(meta.mode);
                let create = || {
                    rfs::openat(
                        parent,
                        base,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(if plain { meta.mode } else { 0o600 }),
                    )
                };
                let fd = match create() {
                    // Something is there (a symlink is never followed with O_EXCL): replace it.
                    Err(Errno::EXIST) => {
                        self.prepare_slot(parent, base, false).map_err(Ok)?;
                        create()
                    }
                    r => r,
                }
                .map_err(|e| Ok(sys("create file")(e)))?;
                let Some(mut f) = self.offload(e, comps, File::from(fd), meta, chown)? else {
                    return Ok(());
                };
                copy_entry(e, &mut f)?;
                if chown {
                    rfs::fchown(
                        &f,
                        Some(uid(meta.uid).map_err(Ok)?),
                        Some(gid(meta.gid).map_err(Ok)?),
                    )
                    .map_err(|e| Ok(sys("chown")(e)))?;
                }
                if !plain {
                    // After chown, which clears setuid/setgid.
                    rfs::fchmod(&f, Mode::from_raw_mode(meta.mode))
                        .map_err(|e| Ok(sys("chmod")(e)))?;
                }
                for (k, v) in &meta.xattrs {
                    xattr_result(
                        k,
                        rfs::fsetxattr(&f, k.as_str(), v, XattrFlags::empty()).map_err(Into::into),
                    )
                    .map_err(Ok)?;
                }
                rfs::futimens(&f, &meta.times()).map_err(|e| Ok(sys("set times")(e)))?;
            }
            T::Directory => {
                let existing = rfs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW);
                let is_dir = matches!(&existing, Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if !is_dir {
                    if existing.is_ok() {
                        remove_all_at(parent, base).map_err(|source| {
                            Ok(EntryError::Io {
                                op: "remove existing entry",
                                source,
                            })
                        })?;
                    }
                    rfs::mkdirat(parent, base, Mode::from_raw_mode(0o700))
                        .map_err(|e| Ok(sys("mkdir")(e)))?;
                }
                let fd = rfs::openat(parent, base, dir_flags(), Mode::empty())
                    .map_err(|e| Ok(sys("open directory")(e)))?;
                self.set_fd_meta(fd.as_fd(), meta).map_err(Ok)?;
                self.dir_times.push((comps.to_vec(), meta.times()));
            }
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(Ok(EntryError::EmptySymlink));
                }
                match rfs::symlinkat(target.as_slice(), parent, base) {
                    Err(Errno::EXIST) => {
                        self.prepare_slot(parent, base, false).map_err(Ok)?;
                        rfs::symlinkat(target.as_slice(), parent, base)
                    }
                    r => r,
                }
                .map_err(|e| Ok(sys("symlink")(e)))?;
                self.set_at_meta_owned(parent, base, meta, false, chown)
                    .map_err(Ok)?;
            }
            T::Link => {
                let target = e
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                self.hardlink(parent, base, &target).map_err(Ok)?;
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                self.prepare_slot(parent, base, false).map_err(Ok)?;
                rfs::mknodat(
                    parent,
                    base,
                    ft,
                    Mode::from_raw_mode(meta.mode & 0o777),
                    rfs::makedev(major, minor),
                )
                .map_err(|e| Ok(sys("mknod")(e)))?;
                self.set_at_meta(parent, base, meta, true).map_err(Ok)?;
            }
            other => {
                return Err(Ok(EntryError::UnsupportedType(other.as_byte() as char)));
            }
        }
        Ok(())
    }

    /// Makes room for a new non-directory entry: removes whatever is there (a symlink is
    /// removed, never written through; a directory is removed recursively).
    /// Docker's `noOverwriteDirNonDir`: an existing directory is not replaced by a
    /// non-directory, nor an existing non-directory by a directory.
    pub(super) fn check_dir_non_dir(
        &self,
        parent_comps: &[Vec<u8>],
        base: &[u8],
        kind: tar::EntryType,
    ) -> Result<(), EntryError> {
        let parent = match resolve_dir(self.root, parent_comps, None) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        let Ok(st) = rfs::statat(&parent, base, AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(());
        };
        let existing_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        let new_dir = kind == tar::EntryType::Directory;
        if existing_dir && !new_dir {
            return Err(EntryError::DirNonDir(
                "cannot overwrite directory with non-directory",
            ));
        }
        if !existing_dir && new_dir {
            return Err(EntryError::DirNonDir(
                "cannot overwrite non-directory with directory",
            ));
        }
        Ok(())
    }

    pub(super) fn prepare_slot(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        _dir: bool,
    ) -> Result<(), EntryError> {
        remove_all_at(parent, base).map_err(|source| EntryError::Io {
            op: "remove existing entry",
            source,
        })
    }

    pub(super) fn set_fd_meta(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), EntryError> {
        if self.opts.same_owner {
            rfs::fchown(fd, Some(uid(meta.uid)?), Some(gid(meta.gid)?)).map_err(sys("chown"))?;
        }
        // After chown, which clears setuid/setgid.
        rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(sys("chmod"))?;
        for (k, v) in &meta.xattrs {
            xattr_result(
                k,
                rfs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()).map_err(Into::into),
            )?;
        }
        Ok(())
    }

    pub(super) fn set_at_meta(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), EntryError> {
        self.set_at_meta_owned(parent, base, meta, chmod, self.opts.same_owner)
    }

    /// [`Self::set_at_meta`], with `chown` saying whether the owner must be changed.
    pub(super) fn set_at_meta_owned(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
        chown: bool,
    ) -> Result<(), EntryError> {
        if chown {
            rfs::chownat(
                parent,
                base,
                Some(uid(meta.uid)?),
                Some(gid(meta.gid)?),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(sys("chown"))?;
        }
        if chmod {
            // The node was just created by us and is not a symlink.
            rfs::chmodat(
                parent,
                base,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(sys("chmod"))?;
        }
        for (k, v) in &meta.xattrs {
            xattr_result(k, lsetxattr_at(parent, base, k, v))?;
        }
        rfs::utimensat(parent, base, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(sys("set times"))?;
        Ok(())
    }

    pub(super) fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        target: &[u8],
    ) -> Result<(), EntryError> {
        let shown = display_entry(target);
        let tcomps = self.clean(target).map_err(|e| match e {
            EntryError::PathEscapes => EntryError::LinkEscapes(shown.clone()),
            e => e,
        })?;
        let Some((tbase, tparent_comps)) = tcomps.split_last() else {
            return Err(EntryError::LinkToDirectory(shown));
        };
        let tparent = match resolve_dir(self.root, tparent_comps, None) {
            Ok(fd) => fd,
            Err(EntryError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Err(EntryError::LinkTargetMissing(shown))
            }
            Err(EntryError::UnresolvableSymlink) => {
                return Err(EntryError::LinkTargetMissing(shown))
            }
            Err(e) => return Err(e),
        };
        let st = match rfs::statat(&tparent, tbase.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(EntryError::LinkTargetMissing(shown)),
            Err(e) => return Err(sys("stat link target")(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => return Err(EntryError::LinkToDirectory(shown)),
            FileType::Symlink => {
                // A hard link to a symlink is a second name for the symlink itself; refuse it
                // when the symlink points outside the root (absolute, or climbing out).
                let dest = rfs::readlinkat(&tparent, tbase.as_slice(), Vec::new())
                    .map_err(sys("readlink"))?;
                let dest = dest.as_bytes();
                let mut full = join(tparent_comps);
                full.push(b'/');
                full.extend_from_slice(dest);
                if dest.starts_with(b"/") || clean_path(&full).is_err() {
                    return Err(EntryError::LinkEscapes(shown));
                }
            }
            _ => {}
        }
        // Linking an entry to itself: nothing to do.
        if let Ok(cur) = rfs::statat(parent, base, AtFlags::SYMLINK_NOFOLLOW) {
            if cur.st_ino == st.st_ino && cur.st_dev == st.st_dev {
                return Ok(());
            }
        }
        self.prepare_slot(parent, base, false)?;
        rfs::linkat(&tparent, tbase.as_slice(), parent, base, AtFlags::empty()).map_err(sys("link"))
    }

    pub(super) fn whiteout<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        parent_comps: &[Vec<u8>],
        base: &[u8],
    ) -> Result<(), EntryError> {
        if base == WHITEOUT_OPAQUE {
            let parent = resolve_dir(self.root, parent_comps, Some(&mut self.created))?;
            return match self.opts.mode {
                ApplyMode::Overlay => {
                    rfs::fsetxattr(&parent, overlay_opaque_xattr(), b"y", XattrFlags::empty())
                        .map_err(sys("set opaque xattr"))
                }
                ApplyMode::Flat | ApplyMode::Plain => {
                    let prefix = join(parent_comps);
                    self.remove_lower(parent.as_fd(), &prefix)
                }
            };
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): ignored, like Docker.
            return Ok(());
        }
        let name = &base[WHITEOUT_PREFIX.len()..];
        if name.is_empty() || name == b"." || name == b".." {
            return Err(EntryError::InvalidWhiteout);
        }
        match self.opts.mode {
            ApplyMode::Flat | ApplyMode::Plain => {
                let parent = match resolve_dir(self.root, parent_comps, None) {
                    Ok(p) => p,
                    // Nothing below to hide.
                    Err(EntryError::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ENOENT) =>
                    {
                        return Ok(())
                    }
                    Err(e) => return Err(e),
                };
                remove_all_at(parent.as_fd(), name).map_err(|source| EntryError::Io {
                    op: "remove whited-out entry",
                    source,
                })
            }
            ApplyMode::Overlay => {
                let parent = resolve_dir(self.root, parent_comps, Some(&mut self.created))?;
                let parent = parent.as_fd();
                self.prepare_slot(parent, name, false)?;
                rfs::mknodat(
                    parent,
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(sys("mknod whiteout"))?;
                if self.opts.same_owner {
                    let h = e.header();
                    let u = h.uid().unwrap_or(0);
                    let g = h.gid().unwrap_or(0);
                    rfs::chownat(
                        parent,
                        name,
                        Some(uid(u)?),
                        Some(gid(g)?),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(sys("chown whiteout"))?;
                }
                Ok(())
            }
        }
    }

    /// Flat-mode opaque directory: removes everything below `dir` that this layer did not
    /// create itself.
    pub(super) fn remove_lower(
        &self,
        dir: BorrowedFd<'_>,
        prefix: &[u8],
    ) -> Result<(), EntryError> {
        let io_err = |source| EntryError::Io {
            op: "clear opaque directory",
            source,
        };
        for name in list_dir(dir).map_err(io_err)? {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            if !self.created.contains(&path) {
                remove_all_at(dir, &name).map_err(io_err)?;
                continue;
            }
            let st = rfs::statat(dir, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(e.into()))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = rfs::openat(dir, name.as_slice(), dir_flags(), Mode::empty())
                    .map_err(|e| io_err(e.into()))?;
                self.remove_lower(sub.as_fd(), &path)?;
            }
        }
        Ok(())
    }

    /// Waits until the writers have finished every file handed to them; their first error.
    pub(super) fn barrier(&mut self) -> Result<(), LayerError> {
        let Some((_, shared)) = &self.writers else {
            return Ok(());
        };
        let mut n = shared.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = shared.cond.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        drop(n);
        match shared
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands a small regular file (just created) to the writers; gives it back when it must
    /// be written here.
    pub(super) fn offload<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        comps: &[Vec<u8>],
        file: File,
        meta: &Meta,
        chown: bool,
    ) -> Result<Option<File>, Result<EntryError, io::Error>> {
        let Some((tx, shared)) = &self.writers else {
            return Ok(Some(file));
        };
        let size = e.size();
        if size > OFFLOAD_MAX {
            return Ok(Some(file));
        }
        let mut data = Vec::with_capacity(size as usize);
        e.read_to_end(&mut data).map_err(Err)?;
        let job = FileJob {
            file,
            data,
            meta: meta.clone(),
            chown,
            plain: self.owner.plain_mode(meta.mode),
            entry: join(comps),
        };
        *shared.outstanding.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if tx.send(job).is_err() {
            return Err(Ok(EntryError::Io {
                op: "hand file to a writer",
                source: io::Error::other("writer threads gone"),
            }));
        }
        Ok(None)
    }

    /// Sets directory times, deepest last-applied first, after all contents are in place.
    pub(super) fn finish(&mut self) -> Result<(), LayerError> {
        self.barrier()?;
        let dirs = std::mem::take(&mut self.dir_times);
        for (comps, times) in dirs.iter().rev() {
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            let res = resolve_dir(self.root, parent, None).and_then(|p| {
                match rfs::utimensat(&p, base.as_slice(), times, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(sys("set directory times")(e)),
                }
            });
            match res {
                Ok(()) => {}
                // Removed or replaced later in the same layer.
                Err(EntryError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(EntryError::NotADirectory) | Err(EntryError::UnresolvableSymlink) => {}
                Err(error) => {
                    return Err(LayerError::Entry {
                        entry: display_entry(&join(comps)),
                        error,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Copies an entry's data; read errors are stream errors, write errors entry errors.
pub(super) fn copy_entry<R: Read>(
    e: &mut R,
    f: &mut File,
) -> Result<(), Result<EntryError, io::Error>> {
    use std::io::Write;
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = match e.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Err(err)),
        };
        f.write_all(&buf[..n]).map_err(|source| {
            Ok(EntryError::Io {
                op: "write file",
                source,
            })
        })?;
    }
}

pub(super) fn uid(v: u64) -> Result<rfs::Uid, EntryError> {
    owner_id(v, "uid").map(rfs::Uid::from_raw)
}

pub(super) fn gid(v: u64) -> Result<rfs::Gid, EntryError> {
    owner_id(v, "gid").map(rfs::Gid::from_raw)
}

/// A tar header's owner id as a 32-bit id (`u32::MAX`, "no change" to chown, is refused).
fn owner_id(v: u64, what: &str) -> Result<u32, EntryError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or(EntryError::Io {
            op: "chown",
            source: io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what} {v}")),
        })
}

/// xattrs the file system cannot store are skipped with a debug log, like Docker.
pub(super) fn xattr_result(key: &str, r: io::Result<()>) -> Result<(), EntryError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => {
            tracing::debug!(xattr = key, error = %e, "skipping xattr");
            Ok(())
        }
        Err(source) => Err(EntryError::Io {
            op: "set xattr",
            source,
        }),
    }
}
