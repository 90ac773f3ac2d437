//! Crash-safe file writes for metadata: the writes are berth-util's ([`atomic_write`],
//! [`replace_file`]); JSON on top of them here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use berth_util::fs::{atomic_write, fsync_dir};

/// Replaces `path` atomically (temp file, rename) without making it durable: for state that
/// must survive the death of a process but not of the machine (what a container is doing right
/// now, files under the exec root).
pub use berth_util::fs::replace_file_nosync as replace_file;

/// An I/O error on a path, naming what was being done: `{op} {path}: {source}` (the `Io`
/// variant of the blob store's, snapshotters', image store's and archives' errors).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    /// What was being done.
    pub op: &'static str,
    /// Where.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// Serialises `value` as JSON and writes it with [`replace_file`] (atomic, not durable).
pub fn replace_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace_file(path, &bytes)
}

/// Serialises `value` as JSON and writes it with [`atomic_write`].
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    atomic_write(path, &bytes)
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// A number for unique temporary names (see [`berth_util::fs::unique`]).
pub(crate) use berth_util::fs::unique;

/// Reads until `buf` is full or the stream ends; how much was read.
pub(crate) fn fill<R: io::Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
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

/// Reads up to `n` bytes (fewer only at EOF), however small the reader's chunks are.
pub(crate) fn read_head<R: io::Read + ?Sized>(r: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; n];
    let got = fill(r, &mut head)?;
    head.truncate(got);
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_json_atomic(&p, &vec![1, 2, 3]).unwrap();
        let v: Vec<u32> = read_json(&p).unwrap();
        assert_eq!(v, vec![1, 2, 3]);
        fs::write(&p, b"{").unwrap();
        assert!(read_json::<Vec<u32>>(&p).is_err());
    }
}
