//! Files: replacing a file's content atomically, durably ([`atomic_write`]) or not
//! ([`replace_file_nosync`]); finding a program in `$PATH` ([`find_in_path`]).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `name` in `$PATH` (or the usual system directories when `PATH` is unset): the first
/// regular file of that name.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Fsyncs a directory so that renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` crash-safely: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. After a crash at any moment `path` holds the
/// old content or the new one, never a mix; once this returns, the new content survives a
/// power loss. For metadata under the data root.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, 0o644, true)
}

/// [`atomic_write`] with the file's mode (before the umask): 0600 for secrets.
pub fn atomic_write_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_and_rename(path, bytes, mode, true)
}

/// Replaces `path`'s content by writing a temporary file next to it and renaming it over, so
/// a reader (or a writer killed half-way) sees the old or the new content, never a mix.
///
/// No fsync: for run-time state (pid files, runtime state, exit status) that lives in a tmpfs
/// and only has to survive the death of processes, which the rename guarantees; durability
/// against power loss would buy nothing and cost milliseconds.
pub fn replace_file_nosync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_and_rename(path, bytes, 0o644, false)
}

/// The temporary file is `.<name>.tmp-<pid>-<n>` next to `path` (unique across the threads
/// and processes writing the same file), created exclusively with `mode` and removed again
/// when anything fails.
fn write_and_rename(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // A name left by a crashed writer whose pid came back (after a reboot) is skipped.
    let (tmp, mut f) = loop {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}-{}", std::process::id(), unique()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let res = (|| {
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)?;
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A number for temporary names: distinct for every call in a process (a counter in the high
/// 32 bits), and unlikely to repeat a name that a process with the same pid left before a
/// reboot (the clock's nanoseconds in the low bits).
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) << 32) ^ nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "berth-util-fs-{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes `one` then `two` to a file of a new scratch directory with `write`, and checks
    /// that the file holds `two` and is the directory's only entry (no temporary left).
    fn write_twice(tag: &str, write: fn(&Path, &[u8]) -> io::Result<()>) -> (PathBuf, PathBuf) {
        let d = scratch(tag);
        let p = d.join("state.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        (d, p)
    }

    #[test]
    fn replaces_and_leaves_no_temporary() {
        let (d, _) = write_twice("nosync", replace_file_nosync);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        use std::os::unix::fs::PermissionsExt;
        let (d, p) = write_twice("durable", atomic_write);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        atomic_write_mode(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failures_leave_no_temporary() {
        let d = scratch("fail");
        // Renaming a file over a non-empty directory fails: the temporary must go.
        let p = d.join("sub");
        std::fs::create_dir_all(p.join("x")).unwrap();
        assert!(atomic_write(&p, b"data").is_err());
        assert!(replace_file_nosync(&p, b"data").is_err());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(atomic_write(Path::new("/"), b"x").is_err());
        assert!(atomic_write(&d.join("missing/dir/file"), b"x").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unique_numbers_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(unique()));
        }
    }

    #[test]
    fn concurrent_writers_never_collide() {
        let d = scratch("threads");
        let p = d.join("f");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        replace_file_nosync(p, &[t; 64]).unwrap();
                    }
                });
            }
        });
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 64);
        assert!(data.iter().all(|b| *b == data[0]));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
