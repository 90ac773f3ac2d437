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
//!
//! Modules: this one holds the types and the read/decompress/hash/unpack pipeline;
//! `paths` the confined walks, `applier` the entries' effects, `writers` the file writers.

mod applier;
mod paths;
mod writers;

pub use paths::{clean_path, clean_path_in_root};
pub(crate) use paths::{list_dir, remove_all_at, resolve_dir};

use applier::{Applier, Owner};
use paths::display_entry;
use writers::{write_files, writer_count, FileJob, WriterShared, JOBS_IN_FLIGHT};

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
use crate::fsutil::{fill, read_head};

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
    /// Entry names and hard link targets climbing above the root stay at it
    /// ([`clean_path_in_root`]) instead of being refused: dockerd's chrooted extraction of a
    /// build context.
    pub clamp_to_root: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            mode: ApplyMode::Flat,
            same_owner: true,
            no_overwrite_dir_non_dir: false,
            chown: None,
            clamp_to_root: false,
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
            clamp_to_root: false,
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
/// The opaque marker of overlayfs mounted with `userxattr`, as it is inside a user namespace
/// (rootless berthd), where `trusted.*` attributes cannot be set.
pub const OVERLAY_OPAQUE_USER_XATTR: &str = "user.overlay.opaque";

/// The opaque marker overlayfs reads in this process's user namespace (see
/// [`OVERLAY_OPAQUE_USER_XATTR`]; the snapshotter's mounts add `userxattr` there).
pub fn overlay_opaque_xattr() -> &'static str {
    if berth_util::userns::running_in_userns() {
        OVERLAY_OPAQUE_USER_XATTR
    } else {
        OVERLAY_OPAQUE_XATTR
    }
}

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
                    let mut archive = tar::Archive::new(ChunkReader::new(rx));
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

/// The unpacker's side of the chunk channel. A stream ending inside a block (an entry's data
/// without its padding: the docker CLI sends `docker build -f -` contexts so) reads as if
/// zeros completed the block, as Go's tar reader takes such an end for the archive's end.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Arc<Chunk>>>,
    cur: Option<Arc<Chunk>>,
    pos: usize,
    /// Bytes read so far (padding included).
    total: u64,
    /// Zeros still to give before the end.
    pad: usize,
}

impl ChunkReader {
    fn new(rx: std::sync::mpsc::Receiver<io::Result<Arc<Chunk>>>) -> Self {
        Self {
            rx,
            cur: None,
            pos: 0,
            total: 0,
            pad: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pad > 0 {
                let n = buf.len().min(self.pad);
                buf[..n].fill(0);
                self.pad -= n;
                return Ok(n);
            }
            if let Some(c) = &self.cur {
                if self.pos < c.len {
                    let n = buf.len().min(c.len - self.pos);
                    buf[..n].copy_from_slice(&c.data()[self.pos..self.pos + n]);
                    self.pos += n;
                    self.total += n as u64;
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
                // The producer is done: end of stream (after the block's padding).
                Err(_) => {
                    let partial = (self.total % 512) as usize;
                    if partial == 0 {
                        return Ok(0);
                    }
                    self.pad = 512 - partial;
                    self.total += self.pad as u64;
                }
            }
        }
    }
}
