//! Applying layer tarballs to a directory, confined to it.
//!
//! A layer is a tar stream (plain, gzip or zstd, detected by magic bytes) applied with
//! Docker / OCI semantics:
//!
//! - `.wh.<name>` deletes `<name>` from the layers below; `.wh..wh..opq` makes its directory
//!   opaque (hides everything below). In [`ApplyMode::Flat`] both are carried out on the
//!   target (which holds the lower layers); in [`ApplyMode::Overlay`] the target is a fresh
//!   overlayfs layer directory and they are recorded the way overlayfs expects: a whiteout is
//!   a 0:0 character device, an opaque directory has `trusted.overlay.opaque=y`.
//! - Regular files, directories, symlinks, hard links, devices and fifos, with ownership,
//!   modes (setuid, sticky…), times (directories last) and `SCHILY.xattr.*` xattrs.
//!
//! **Confinement.** Nothing is ever written outside the target: every path is cleaned
//! lexically (`..` may not climb above the root; a leading `/` is dropped) and resolved
//! component by component with `openat(O_NOFOLLOW | O_DIRECTORY)` on directory file
//! descriptors starting from a root descriptor. A parent component that is a symlink is
//! resolved by berth-util's confined resolver ([`berth_util::root::open_in_root`]:
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, or its user-space walk where openat2 is
//! refused) against the root descriptor, so it is interpreted inside the target as it would be
//! inside the container (and never outside). The component walk itself ([`resolve_dir`]) is
//! not that resolver: it follows no symlink (one `openat` per component on the fast path),
//! creates missing directories as it goes and records which it created. The last component is never followed: an entry replacing a symlink
//! removes the symlink. Hard link targets are resolved the same way and must exist already.
//!
//! On error the target is left partially applied: apply into a scratch directory and discard
//! it on failure (the [`crate::snapshot`] drivers do).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::digest::{Digest, Hasher};

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Result<Self, LayerError> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Ok(Self::Zstd)
        } else if head.starts_with(b"BZh") {
            Err(LayerError::UnsupportedCompression("bzip2"))
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Err(LayerError::UnsupportedCompression("xz"))
        } else {
            Ok(Self::None)
        }
    }
}

/// How whiteouts and opaque directories are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// The target holds the lower layers: whiteouts delete, opaque markers empty directories.
    #[default]
    Flat,
    /// The target is one overlayfs layer: whiteouts become 0:0 character devices and opaque
    /// directories get `trusted.overlay.opaque=y`.
    Overlay,
    /// Not a layer (`docker cp` uploads): `.wh.` names are ordinary files.
    Plain,
}

/// Options for [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Whiteout handling.
    pub mode: ApplyMode,
    /// Apply ownership from the tar (needs `CAP_CHOWN`); otherwise files belong to the caller.
    pub same_owner: bool,
    /// Refuse to replace an existing directory with a non-directory or the reverse (Docker's
    /// `noOverwriteDirNonDir`).
    pub no_overwrite_dir_non_dir: bool,
    /// Every entry gets this owner instead of the tar's (Docker's `copyUIDGID` with a user).
    pub chown: Option<(u32, u32)>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            mode: ApplyMode::Flat,
            same_owner: true,
            no_overwrite_dir_non_dir: false,
            chown: None,
        }
    }
}

impl ApplyOptions {
    /// Options for a mode, keeping ownership.
    pub fn new(mode: ApplyMode) -> Self {
        Self {
            mode,
            same_owner: true,
            no_overwrite_dir_non_dir: false,
            chown: None,
        }
    }
}

/// The result of applying a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream in bytes.
    pub size: u64,
    /// The compression that was detected.
    pub compression: Compression,
    /// How many tar entries were applied (including whiteouts).
    pub entries: u64,
    /// Content size as Docker counts it (see
    /// [`layer_content_size`](crate::image_store::layer_content_size)): regular file sizes
    /// plus symlink target lengths.
    pub content_size: u64,
}

/// Why a single entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The path climbs above the layer root with `..`.
    #[error("path escapes the layer root")]
    PathEscapes,
    /// A path or name is too long.
    #[error("path too long")]
    NameTooLong,
    /// A hard link's target is outside the layer root.
    #[error("hard link target {0:?} is outside the layer root")]
    LinkEscapes(String),
    /// A hard link's target does not exist (yet).
    #[error("hard link target {0:?} does not exist")]
    LinkTargetMissing(String),
    /// A hard link to a directory.
    #[error("hard link target {0:?} is a directory")]
    LinkToDirectory(String),
    /// A symlink with an empty target.
    #[error("symlink with an empty target")]
    EmptySymlink,
    /// A parent component is not a directory.
    #[error("a parent path component is not a directory")]
    NotADirectory,
    /// A parent component is a symlink that cannot be resolved inside the root.
    #[error("a parent path component is a symlink that does not resolve to a directory inside the layer root")]
    UnresolvableSymlink,
    /// A whiteout for `.`, `..` or an empty name.
    #[error("invalid whiteout")]
    InvalidWhiteout,
    /// An existing directory would be replaced by a non-directory or the reverse.
    #[error("{0}")]
    DirNonDir(&'static str),
    /// A tar entry type that cannot be applied.
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedType(char),
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`apply_layer`].
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Opening the target directory failed.
    #[error("opening layer target {path}: {source}")]
    Target {
        /// The target.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The stream uses a compression Berth does not support.
    #[error("unsupported layer compression: {0}")]
    UnsupportedCompression(&'static str),
    /// The stream is not a valid (compressed) tar, or reading it failed.
    #[error("reading layer stream: {0}")]
    Read(#[source] io::Error),
    /// One entry could not be applied (or is hostile).
    #[error("layer entry {entry:?}: {error}")]
    Entry {
        /// The entry's path as found in the tar (truncated when very long).
        entry: String,
        /// Why.
        #[source]
        error: EntryError,
    },
}

/// Paths longer than this (after cleaning) are refused, like PATH_MAX.
const MAX_PATH: usize = 4095;
/// Longest single name.
const MAX_NAME: usize = 255;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr marking an opaque directory.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn sys(op: &'static str) -> impl FnOnce(Errno) -> EntryError {
    move |e| EntryError::Io {
        op,
        source: e.into(),
    }
}

/// Applies a layer stream (plain, gzip or zstd tar) to `target`, returning its DiffID and
/// uncompressed size, computed while streaming.
pub fn apply_layer<R: Read>(
    target: &Path,
    reader: R,
    opts: &ApplyOptions,
) -> Result<AppliedLayer, LayerError> {
    let root = rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::Target {
        path: target.display().to_string(),
        source: e.into(),
    })?;
    apply_layer_at(root.as_fd(), reader, opts)
}

/// Size of the chunks of uncompressed stream handed from the decompressing thread to the
/// unpacking one.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between them.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Like [`apply_layer`], on an already open directory descriptor.
///
/// Stages run at once: this thread reads and decompresses the stream into 1 MiB chunks; a
/// `layer-hash` thread computes the DiffID from them (all of the stream, end-of-archive
/// blocks and padding included); a `layer-unpack` thread parses the tar and applies the
/// entries (small files through writer threads). An error on either side stops both.
pub fn apply_layer_at<R: Read>(
    root: BorrowedFd<'_>,
    reader: R,
    opts: &ApplyOptions,
) -> Result<AppliedLayer, LayerError> {
    let mut reader = reader;
    let head = read_head(&mut reader, 6).map_err(LayerError::Read)?;
    let buffered = BufReader::with_capacity(CHUNK, io::Cursor::new(head.clone()).chain(reader));
    let compression = Compression::detect(&head)?;
    let decompressed: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => crate::gzip::decoder(buffered),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(LayerError::Read)?)
        }
    };
    let mut decompressed = decompressed;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Arc<Chunk>>>(CHUNKS_IN_FLIGHT);
    // The DiffID is computed on a third thread, from the same chunks.
    let (htx, hrx) = std::sync::mpsc::sync_channel::<Arc<Chunk>>(CHUNKS_IN_FLIGHT);
    // Buffers of chunks both consumers are done with, for reuse.
    let (pool_tx, pool_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2 * CHUNKS_IN_FLIGHT + 4);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let hasher = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn_scoped(s, move || {
                let mut h = Hasher::new();
                for c in hrx {
                    h.update(c.data());
                }
                h
            })
            .map_err(LayerError::Read)?;
        let unpacker = std::thread::Builder::new()
            .name("layer-unpack".into())
            .spawn_scoped(s, move || {
                let res = std::thread::scope(|ws| {
                    let shared = Arc::new(WriterShared::default());
                    let (jtx, jrx) = std::sync::mpsc::sync_channel::<FileJob>(JOBS_IN_FLIGHT);
                    let jrx = Arc::new(Mutex::new(jrx));
                    let writers = writer_count();
                    for i in 0..writers {
                        let (jrx, shared) = (jrx.clone(), shared.clone());
                        std::thread::Builder::new()
                            .name(format!("layer-write-{i}"))
                            .spawn_scoped(ws, move || write_files(&jrx, &shared))
                            .map_err(LayerError::Read)?;
                    }
                    let mut archive = tar::Archive::new(ChunkReader {
                        rx,
                        cur: None,
                        pos: 0,
                    });
                    let mut applier = Applier {
                        root,
                        opts,
                        created: HashSet::new(),
                        dir_times: Vec::new(),
                        entries: 0,
                        content_size: 0,
                        parent_cache: None,
                        owner: Owner::current(),
                        writers: (writers > 0).then_some((jtx, shared)),
                    };
                    let r = (|| {
                        for entry in archive.entries().map_err(LayerError::Read)? {
                            let mut entry = entry.map_err(LayerError::Read)?;
                            applier.apply(&mut entry)?;
                        }
                        applier.finish()?;
                        Ok((applier.entries, applier.content_size))
                    })();
                    // Ends the writers (after the jobs already queued).
                    applier.writers = None;
                    r
                });
                if res.is_err() {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                res
            })
            .map_err(LayerError::Read)?;
        // Decompress and hash everything; the unpacker stops reading at the end of the
        // archive (then sends fail, and the rest is only hashed).
        let mut tx = Some(tx);
        let read = loop {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break Ok(());
            }
            let mut buf = pool_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            match fill(&mut decompressed, &mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    let buf = Arc::new(Chunk {
                        buf,
                        len: n,
                        pool: pool_tx.clone(),
                    });
                    if htx.send(buf.clone()).is_err() {
                        break Err(io::Error::other("the hashing thread stopped"));
                    }
                    if let Some(t) = &tx {
                        if t.send(Ok(buf)).is_err() {
                            tx = None;
                        }
                    }
                }
                Err(e) => {
                    if let Some(t) = &tx {
                        let _ = t.send(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    break Err(e);
                }
            }
        };
        drop(tx);
        drop(htx);
        let hasher = hasher
            .join()
            .map_err(|_| LayerError::Read(io::Error::other("hashing thread panicked")))?;
        let applied = unpacker
            .join()
            .unwrap_or_else(|_| Err(LayerError::Read(io::Error::other("unpacker panicked"))));
        match (read, applied) {
            // The read error is the cause of the unpacker's.
            (Err(e), _) => Err(LayerError::Read(e)),
            (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok((entries, content_size))) => {
                let n = hasher.count();
                Ok(AppliedLayer {
                    diff_id: hasher.finish(),
                    size: n,
                    compression,
                    entries,
                    content_size,
                })
            }
        }
    })
}

/// Reads until `buf` is full or the stream ends.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A piece of the uncompressed stream, shared by the hashing and the unpacking thread. Its
/// buffer goes back to the decompressing thread when both are done with it: a fresh 1 MiB
/// buffer per chunk costs a page fault per 4 KiB and the zeroing of each page.
struct Chunk {
    /// Always `CHUNK` bytes long; the data is the first `len`.
    buf: Vec<u8>,
    len: usize,
    pool: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl Chunk {
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // A full pool, or a finished layer: the buffer is simply freed.
        let _ = self.pool.try_send(std::mem::take(&mut self.buf));
    }
}

/// The unpacker's side of the chunk channel.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Arc<Chunk>>>,
    cur: Option<Arc<Chunk>>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &self.cur {
                if self.pos < c.len {
                    let n = buf.len().min(c.len - self.pos);
                    buf[..n].copy_from_slice(&c.data()[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            // Done with this chunk: let its buffer go back before waiting for the next.
            self.cur = None;
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = Some(c);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The producer is done: end of stream.
                Err(_) => return Ok(0),
            }
        }
    }
}

/// Reads up to `n` bytes (fewer only at EOF), however small the reader's chunks are.
fn read_head<R: Read>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// Cleans a tar path: drops empty and `.` components and a leading `/`, resolves `..`
/// lexically and refuses to climb above the root.
pub fn clean_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, EntryError> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
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

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn display_entry(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

fn dir_flags() -> OFlags {
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
fn lsetxattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &str, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    let path = Path::new(std::ffi::OsStr::from_bytes(&p));
    rfs::lsetxattr(path, key, value, XattrFlags::empty()).map_err(Into::into)
}

#[derive(Clone)]
struct Meta {
    uid: u64,
    gid: u64,
    mode: u32,
    atime: Timespec,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.atime,
            last_modification: self.mtime,
        }
    }
}

fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
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

struct Applier<'a> {
    root: BorrowedFd<'a>,
    opts: &'a ApplyOptions,
    /// Paths created or replaced by this layer (for opaque directories in flat mode).
    created: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end (contents change them).
    dir_times: Vec<(Vec<Vec<u8>>, Timestamps)>,
    entries: u64,
    /// Docker's content size of what was read so far.
    content_size: u64,
    /// The last parent directory resolved (tar lists a directory's entries together): saves a
    /// confined walk from the root per entry. Dropped whenever an entry could change it.
    parent_cache: Option<ParentDir>,
    /// Who owns what this process creates (to skip `chown` / `chmod` calls that would change
    /// nothing).
    owner: Owner,
    /// The writer threads small regular files are handed to (see [`FileJob`]).
    writers: Option<(std::sync::mpsc::SyncSender<FileJob>, Arc<WriterShared>)>,
}

/// Regular files up to this size are written by writer threads while the tar is read on.
const OFFLOAD_MAX: u64 = 256 * 1024;
/// Writer threads per layer, unless `BERTH_UNPACK_WRITERS` says otherwise (0: the tar
/// thread writes every file itself).
const WRITERS: usize = 3;

fn writer_count() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("BERTH_UNPACK_WRITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(|n: usize| n.min(64))
            .unwrap_or(WRITERS)
    })
}
/// Files queued for the writers at most.
const JOBS_IN_FLIGHT: usize = 64;

/// A small regular file for a writer thread, already created by the tar thread (so every
/// change to names stays in tar order): written, owned, moded, xattr'd, timed and closed
/// there. A later entry that replaces or removes the name leaves the writer working on an
/// unlinked inode, which is harmless; a hard link to it shares the inode the writer
/// finishes.
struct FileJob {
    file: File,
    data: Vec<u8>,
    meta: Meta,
    chown: bool,
    plain: bool,
    entry: Vec<u8>,
}

/// State shared by the tar thread and the writers.
#[derive(Default)]
struct WriterShared {
    /// Jobs sent and not finished.
    outstanding: Mutex<usize>,
    cond: Condvar,
    /// The first failure.
    error: Mutex<Option<LayerError>>,
    failed: AtomicBool,
}

fn write_files(rx: &Mutex<std::sync::mpsc::Receiver<FileJob>>, shared: &WriterShared) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else { return };
        if !shared.failed.load(AtomicOrdering::SeqCst) {
            if let Err(error) = write_file(&job) {
                let mut first = shared.error.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    *first = Some(LayerError::Entry {
                        entry: display_entry(&job.entry),
                        error,
                    });
                }
                shared.failed.store(true, AtomicOrdering::SeqCst);
            }
        }
        drop(job);
        let mut n = shared.outstanding.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            shared.cond.notify_all();
        }
    }
}

fn write_file(j: &FileJob) -> Result<(), EntryError> {
    use std::io::Write;
    let meta = &j.meta;
    let mut f = &j.file;
    f.write_all(&j.data).map_err(|source| EntryError::Io {
        op: "write file",
        source,
    })?;
    if j.chown {
        rfs::fchown(f, Some(uid(meta.uid)?), Some(gid(meta.gid)?)).map_err(sys("chown"))?;
    }
    if !j.plain {
        rfs::fchmod(f, Mode::from_raw_mode(meta.mode)).map_err(sys("chmod"))?;
    }
    for (k, v) in &meta.xattrs {
        xattr_result(
            k,
            rfs::fsetxattr(f, k.as_str(), v, XattrFlags::empty()).map_err(Into::into),
        )?;
    }
    rfs::futimens(f, &meta.times()).map_err(sys("set times"))
}

/// A resolved parent directory.
struct ParentDir {
    comps: Vec<Vec<u8>>,
    fd: Arc<OwnedFd>,
    /// The group new entries inherit from it (set-group-ID directory), if any.
    inherit_gid: Option<u64>,
}

/// The owner and mode of what this process creates.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u64,
    gid: u64,
    umask: u32,
}

impl Owner {
    fn current() -> Self {
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
    fn needs_chown(&self, parent: &ParentDir, meta: &Meta) -> bool {
        meta.uid != self.uid || meta.gid != parent.inherit_gid.unwrap_or(self.gid)
    }

    /// Whether `mode` can be given at creation (no special bits, nothing the umask removes),
    /// so that no `chmod` is needed.
    fn plain_mode(&self, mode: u32) -> bool {
        mode & 0o7000 == 0 && mode & self.umask == 0
    }
}

impl Applier<'_> {
    fn apply<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), LayerError> {
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
        let comps = clean_path(&raw_path).map_err(wrap)?;
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

    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>) -> Result<Meta, EntryError> {
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
    fn apply_entry<R: Read>(
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

    fn apply_in<R: Read>(
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
    fn check_dir_non_dir(
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

    fn prepare_slot(
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

    fn set_fd_meta(&self, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), EntryError> {
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

    fn set_at_meta(
        &self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), EntryError> {
        self.set_at_meta_owned(parent, base, meta, chmod, self.opts.same_owner)
    }

    /// [`Self::set_at_meta`], with `chown` saying whether the owner must be changed.
    fn set_at_meta_owned(
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

    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &[u8],
        target: &[u8],
    ) -> Result<(), EntryError> {
        let shown = display_entry(target);
        let tcomps = clean_path(target).map_err(|e| match e {
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

    fn whiteout<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        parent_comps: &[Vec<u8>],
        base: &[u8],
    ) -> Result<(), EntryError> {
        if base == WHITEOUT_OPAQUE {
            let parent = resolve_dir(self.root, parent_comps, Some(&mut self.created))?;
            return match self.opts.mode {
                ApplyMode::Overlay => {
                    rfs::fsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
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
    fn remove_lower(&self, dir: BorrowedFd<'_>, prefix: &[u8]) -> Result<(), EntryError> {
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
    fn barrier(&mut self) -> Result<(), LayerError> {
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
    fn offload<R: Read>(
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
    fn finish(&mut self) -> Result<(), LayerError> {
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
fn copy_entry<R: Read>(e: &mut R, f: &mut File) -> Result<(), Result<EntryError, io::Error>> {
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

fn uid(v: u64) -> Result<rfs::Uid, EntryError> {
    let raw = u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or(EntryError::Io {
            op: "chown",
            source: io::Error::new(io::ErrorKind::InvalidInput, format!("invalid uid {v}")),
        })?;
    Ok(rfs::Uid::from_raw(raw))
}

fn gid(v: u64) -> Result<rfs::Gid, EntryError> {
    let raw = u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or(EntryError::Io {
            op: "chown",
            source: io::Error::new(io::ErrorKind::InvalidInput, format!("invalid gid {v}")),
        })?;
    Ok(rfs::Gid::from_raw(raw))
}

/// xattrs the file system cannot store are skipped with a debug log, like Docker.
fn xattr_result(key: &str, r: io::Result<()>) -> Result<(), EntryError> {
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
