//! The `layer-write-N` threads: small regular files created by the unpacker are written,
//! owned, moded, timed and closed there.

use super::applier::{gid, uid, xattr_result, Meta};
use super::*;

/// Regular files up to this size are written by writer threads while the tar is read on.
pub(super) const OFFLOAD_MAX: u64 = 256 * 1024;

/// Writer threads per layer, unless `BERTH_UNPACK_WRITERS` says otherwise (0: the tar
/// thread writes every file itself).
pub(super) const WRITERS: usize = 3;

pub(super) fn writer_count() -> usize {
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
pub(super) const JOBS_IN_FLIGHT: usize = 64;

/// A small regular file for a writer thread, already created by the tar thread (so every
/// change to names stays in tar order): written, owned, moded, xattr'd, timed and closed
/// there. A later entry that replaces or removes the name leaves the writer working on an
/// unlinked inode, which is harmless; a hard link to it shares the inode the writer
/// finishes.
pub(super) struct FileJob {
    pub(super) file: File,
    pub(super) data: Vec<u8>,
    pub(super) meta: Meta,
    pub(super) chown: bool,
    pub(super) plain: bool,
    pub(super) entry: Vec<u8>,
}

/// State shared by the tar thread and the writers.
#[derive(Default)]
pub(super) struct WriterShared {
    /// Jobs sent and not finished.
    pub(super) outstanding: Mutex<usize>,
    pub(super) cond: Condvar,
    /// The first failure.
    pub(super) error: Mutex<Option<LayerError>>,
    pub(super) failed: AtomicBool,
}

pub(super) fn write_files(rx: &Mutex<std::sync::mpsc::Receiver<FileJob>>, shared: &WriterShared) {
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

pub(super) fn write_file(j: &FileJob) -> Result<(), EntryError> {
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
