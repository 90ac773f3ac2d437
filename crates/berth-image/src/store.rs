//! A content-addressable blob store: `<root>/blobs/sha256/<hex>`.
//!
//! Every blob is verified while it is written: content is streamed into a temporary file in
//! `<root>/ingest/`, hashed on the way, fsynced, checked against the expected digest and size,
//! and only then renamed into place (and the directory fsynced). A mismatch or an interrupted
//! write never leaves anything visible under `blobs/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher, VerifyError};
use crate::fsutil;
use crate::fsutil::PathIoError;

/// Errors from the blob store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a path.
    #[error(transparent)]
    Io(#[from] PathIoError),
    /// Reading the content failed.
    #[error("reading blob content: {0}")]
    Read(#[source] io::Error),
    /// The content did not match the expected digest or size.
    #[error("blob verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// The content was longer than the expected size.
    #[error("blob is larger than the expected {expected} bytes")]
    TooLarge {
        /// The expected size.
        expected: u64,
    },
    /// No such blob.
    #[error("blob {0} not found")]
    NotFound(Digest),
}

io_error_fn!(io_err, StoreError);

/// The sha256 digests named by the files of a blob directory (`blobs/sha256`), in directory
/// order; other names are ignored.
pub fn digests_in(dir: &Path) -> io::Result<Vec<Digest>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir)? {
        if let Some(name) = ent?.file_name().to_str() {
            if let Ok(d) = Digest::from_hex(name) {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// The blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let s = Self { root };
        for d in [s.blob_dir(), s.ingest_dir()] {
            fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
        }
        Ok(s)
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    /// Starts writing a blob. Nothing is visible until [`BlobWriter::commit`] succeeds.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let dir = self.ingest_dir();
        let path = dir.join(format!("{}-{}", std::process::id(), fsutil::unique()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: Hasher::new(),
            limit: None,
        })
    }

    /// Streams `reader` into the store and returns the content's digest.
    ///
    /// When `expected` is given the content must hash to it; if the blob is already present,
    /// the reader is not consumed at all.
    pub fn write_blob(
        &self,
        expected: Option<&Digest>,
        reader: impl Read,
    ) -> Result<Digest, StoreError> {
        self.write_blob_sized(expected, None, reader)
    }

    /// Like [`write_blob`](Self::write_blob), also checking the size when `expected_size` is given.
    /// Content longer than the expected size is refused as soon as it exceeds it.
    pub fn write_blob_sized(
        &self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
        mut reader: impl Read,
    ) -> Result<Digest, StoreError> {
        if let Some(d) = expected {
            if self.exists(d) {
                return Ok(d.clone());
            }
        }
        let mut w = self.writer()?;
        w.limit = expected_size;
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Read(e)),
            };
            w.write_chunk(&buf[..n])?;
        }
        w.commit(expected, expected_size)
    }

    /// Stores `bytes`, returning their digest.
    pub fn write_bytes(
        &self,
        expected: Option<&Digest>,
        bytes: &[u8],
    ) -> Result<Digest, StoreError> {
        self.write_blob_sized(expected, Some(bytes.len() as u64), bytes)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(digest.clone())
            } else {
                StoreError::Io(PathIoError {
                    op: "open",
                    path: p,
                    source: e,
                })
            }
        })
    }

    /// Reads a whole blob into memory, verifying it against its digest again (use for small
    /// blobs like manifests and configs).
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(digest)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(StoreError::Read)?;
        let mut h = Hasher::new();
        h.update(&v);
        h.verify(digest, None)?;
        Ok(v)
    }

    /// Whether the blob exists.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(StoreError::Io(PathIoError {
                op: "stat",
                path: p,
                source: e,
            })),
        }
    }

    /// Deletes a blob. Returns `false` if it did not exist.
    pub fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Ok(()) => {
                let d = self.blob_dir();
                fsutil::fsync_dir(&d).map_err(io_err("fsync", &d))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io(PathIoError {
                op: "remove",
                path: p,
                source: e,
            })),
        }
    }

    /// Lists every blob in the store (files with non-digest names are ignored).
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let d = self.blob_dir();
        let mut out = digests_in(&d).map_err(io_err("read directory", &d))?;
        out.sort();
        Ok(out)
    }

    /// Removes leftover temporary files in `ingest/` (from a crash). Call only when no write
    /// is in progress, e.g. at daemon start.
    pub fn cleanup_ingest(&self) -> Result<usize, StoreError> {
        let d = self.ingest_dir();
        let mut n = 0;
        for ent in fs::read_dir(&d).map_err(io_err("read directory", &d))? {
            let ent = ent.map_err(io_err("read directory", &d))?;
            if fs::remove_file(ent.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// An in-progress blob write. Dropping it without committing deletes the temporary file.
pub struct BlobWriter {
    store: BlobStore,
    file: Option<File>,
    path: PathBuf,
    hasher: Hasher,
    limit: Option<u64>,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.count()
    }

    /// The error of an operation on a writer already committed or finished.
    fn finished(&self, op: &'static str) -> StoreError {
        StoreError::Io(PathIoError {
            op,
            path: self.path.clone(),
            source: io::Error::other("writer already finished"),
        })
    }

    fn write_chunk(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if let Some(limit) = self.limit {
            if self.hasher.count() + data.len() as u64 > limit {
                return Err(StoreError::TooLarge { expected: limit });
            }
        }
        let Some(f) = self.file.as_mut() else {
            return Err(self.finished("write"));
        };
        f.write_all(data).map_err(io_err("write", &self.path))?;
        self.hasher.update(data);
        Ok(())
    }

    /// Fsyncs, verifies and moves the blob into place, returning its digest.
    /// On any failure the temporary file is removed and nothing becomes visible.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Digest, StoreError> {
        let file = self.file.take().ok_or_else(|| self.finished("commit"))?;
        file.sync_all().map_err(io_err("fsync", &self.path))?;
        drop(file);
        let hasher = std::mem::take(&mut self.hasher);
        let digest = match expected {
            Some(want) => hasher.verify(want, expected_size)?,
            None => {
                if let Some(size) = expected_size {
                    if size != hasher.count() {
                        return Err(VerifyError::Size {
                            expected: size,
                            actual: hasher.count(),
                        }
                        .into());
                    }
                }
                hasher.finish()
            }
        };
        let dest = self.store.blob_path(&digest);
        fs::rename(&self.path, &dest).map_err(io_err("rename", &dest))?;
        let d = self.store.blob_dir();
        fsutil::fsync_dir(&d).map_err(io_err("fsync", &d))?;
        // The temp path no longer exists: make Drop a no-op.
        self.path = PathBuf::new();
        Ok(digest)
    }
}

impl BlobWriter {
    /// Finishes the content without making it durable or visible: the returned
    /// [`PendingBlob`] stays in `ingest/` until [`BlobStore::publish`] (dropped unpublished,
    /// it is removed). Lets a caller that writes several blobs in a row (build steps) pay for
    /// their fsyncs once, overlapped, instead of twice per blob.
    pub fn finish_pending(mut self) -> Result<PendingBlob, StoreError> {
        let file = self.file.take().ok_or_else(|| self.finished("commit"))?;
        let hasher = std::mem::take(&mut self.hasher);
        let size = hasher.count();
        let digest = hasher.finish();
        let path = std::mem::take(&mut self.path);
        Ok(PendingBlob {
            file: Some(file),
            path,
            digest,
            size,
        })
    }
}

/// A blob written to `ingest/` but not yet durable nor visible (see
/// [`BlobWriter::finish_pending`]).
#[derive(Debug)]
pub struct PendingBlob {
    file: Option<File>,
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl PendingBlob {
    /// The content's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// The content's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl BlobStore {
    /// Makes pending blobs durable and visible: their fsyncs run at once (one thread each,
    /// so the file system can commit them together), then each is renamed into place and
    /// the blob directory is fsynced once. Returns their digests.
    pub fn publish(&self, blobs: Vec<PendingBlob>) -> Result<Vec<Digest>, StoreError> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        let synced: Vec<Result<(), StoreError>> = std::thread::scope(|sc| {
            let hs: Vec<_> = blobs
                .iter()
                .map(|b| {
                    sc.spawn(move || match &b.file {
                        Some(f) => f.sync_all().map_err(io_err("fsync", &b.path)),
                        None => Ok(()),
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Io(PathIoError {
                            op: "fsync",
                            path: PathBuf::new(),
                            source: io::Error::other("fsync thread panicked"),
                        }))
                    })
                })
                .collect()
        });
        for r in synced {
            r?;
        }
        let mut out = Vec::with_capacity(blobs.len());
        for mut b in blobs {
            b.file = None;
            let dest = self.blob_path(&b.digest);
            fs::rename(&b.path, &dest).map_err(io_err("rename", &dest))?;
            b.path = PathBuf::new();
            out.push(b.digest.clone());
        }
        let d = self.blob_dir();
        fsutil::fsync_dir(&d).map_err(io_err("fsync", &d))?;
        Ok(out)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_chunk(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::open(d.path()).unwrap();
        (d, s)
    }

    fn ingest_empty(s: &BlobStore) -> bool {
        fs::read_dir(s.root().join("ingest"))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn pending_blobs_are_invisible_until_published() {
        let (_d, s) = store();
        let mut pend = Vec::new();
        for c in [&b"one"[..], b"two", b"three"] {
            let mut w = s.writer().unwrap();
            w.write_all(c).unwrap();
            let p = w.finish_pending().unwrap();
            assert_eq!(p.digest(), &Digest::of_bytes(c));
            assert_eq!(p.size(), c.len() as u64);
            assert!(!s.exists(p.digest()));
            pend.push(p);
        }
        // Dropped unpublished: removed from ingest/, never visible.
        let dropped = pend.pop().unwrap();
        let dd = dropped.digest().clone();
        drop(dropped);
        let got = s.publish(pend).unwrap();
        assert_eq!(
            got,
            vec![Digest::of_bytes(b"one"), Digest::of_bytes(b"two")]
        );
        for d in &got {
            assert!(s.exists(d));
        }
        assert_eq!(s.read_verified(&got[1]).unwrap(), b"two");
        assert!(!s.exists(&dd));
        assert!(ingest_empty(&s));
        // Publishing content that is already stored is harmless.
        let mut w = s.writer().unwrap();
        w.write_all(b"one").unwrap();
        let again = s.publish(vec![w.finish_pending().unwrap()]).unwrap();
        assert_eq!(again, vec![Digest::of_bytes(b"one")]);
        assert!(s.publish(Vec::new()).unwrap().is_empty());
        assert!(ingest_empty(&s));
    }

    #[test]
    fn write_open_list_delete() {
        let (_d, s) = store();
        let data = b"some content".to_vec();
        let dg = s.write_blob(None, &data[..]).unwrap();
        assert_eq!(dg, Digest::of_bytes(&data));
        assert!(s.exists(&dg));
        assert_eq!(s.size(&dg).unwrap(), data.len() as u64);
        let mut back = Vec::new();
        s.open_blob(&dg).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(s.read_verified(&dg).unwrap(), data);
        assert_eq!(s.list().unwrap(), vec![dg.clone()]);
        // Writing again with the expected digest is a no-op.
        assert_eq!(s.write_blob(Some(&dg), io::empty()).unwrap(), dg);
        assert!(s.delete(&dg).unwrap());
        assert!(!s.delete(&dg).unwrap());
        assert!(!s.exists(&dg));
        assert!(matches!(s.open_blob(&dg), Err(StoreError::NotFound(_))));
        assert!(matches!(s.size(&dg), Err(StoreError::NotFound(_))));
        assert!(ingest_empty(&s));
    }

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let (_d, s) = store();
        let wrong = Digest::of_bytes(b"other");
        let err = s.write_blob(Some(&wrong), &b"content"[..]).unwrap_err();
        assert!(
            matches!(err, StoreError::Verify(VerifyError::Digest { .. })),
            "{err}"
        );
        assert!(s.list().unwrap().is_empty());
        assert!(!s.exists(&wrong));
        assert!(ingest_empty(&s));
    }

    #[test]
    fn size_mismatch_and_truncation() {
        let (_d, s) = store();
        let data = b"0123456789";
        let dg = Digest::of_bytes(data);
        // Truncated content.
        let err = s
            .write_blob_sized(Some(&dg), Some(10), &data[..5])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Verify(VerifyError::Size { .. })),
            "{err}"
        );
        // Too long content is refused early.
        let err = s.write_blob_sized(None, Some(3), &data[..]).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { expected: 3 }), "{err}");
        assert!(s.list().unwrap().is_empty());
        assert!(ingest_empty(&s));
        // Correct size works.
        assert_eq!(
            s.write_blob_sized(Some(&dg), Some(10), &data[..]).unwrap(),
            dg
        );
    }

    #[test]
    fn read_error_leaves_nothing() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (_d, s) = store();
        let err = s.write_blob(None, Failing(100)).unwrap_err();
        assert!(matches!(err, StoreError::Read(_)));
        assert!(s.list().unwrap().is_empty());
        assert!(ingest_empty(&s));
    }

    #[test]
    fn dropped_writer_cleans_up() {
        let (_d, s) = store();
        let mut w = s.writer().unwrap();
        w.write_all(b"partial").unwrap();
        assert_eq!(w.written(), 7);
        assert!(!ingest_empty(&s));
        drop(w);
        assert!(ingest_empty(&s));
        let mut w = s.writer().unwrap();
        w.write_all(b"full").unwrap();
        let dg = w.commit(Some(&Digest::of_bytes(b"full")), Some(4)).unwrap();
        assert!(s.exists(&dg));
        assert!(ingest_empty(&s));
    }
}
