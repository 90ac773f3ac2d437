//! Work directories in a directory other daemons share (`/dev/shm`), and the sweep that removes
//! those of daemons that are gone.
//!
//! A process names its directories `<prefix><token>-…`, with a token of its own
//! (`<pid>x<random>`), and holds `<prefix><token>.lock` locked (`flock`) for as long as it
//! runs. A sweep removes the
//! directories whose lock it can take: their owner is dead, whatever PID namespace it ran in
//! (a daemon in a PID namespace of its own, e.g. a package test's, cannot tell another's pid
//! from a dead one). Names of older daemons, `<prefix><pid>-…` without a lock file, fall back
//! to the pid.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{flock, FlockOperation};

/// This process's token, the same for every prefix: its pid (for people and tests reading
/// the names; pids repeat across PID namespaces) and a random part.
fn token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| format!("{}x{}", std::process::id(), crate::id::random_hex(6)))
}

/// The lock files this process holds, by path (kept open, hence locked, until it exits).
fn held() -> &'static Mutex<HashMap<PathBuf, File>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, File>>> = OnceLock::new();
    HELD.get_or_init(Default::default)
}

fn lock_path(dir: &Path, prefix: &str, token: &str) -> PathBuf {
    dir.join(format!("{prefix}{token}.lock"))
}

/// The name prefix of this process's work directories under `dir`
/// (`tempfile::Builder::prefix`). Claims them first: the lock file is created and locked once
/// per `dir` and `prefix`, before any directory exists.
pub fn claim(dir: &Path, prefix: &str) -> io::Result<String> {
    let path = lock_path(dir, prefix, token());
    let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
    if let std::collections::hash_map::Entry::Vacant(slot) = held.entry(path) {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(slot.key())?;
        flock(&f, FlockOperation::NonBlockingLockExclusive)?;
        slot.insert(f);
    }
    Ok(format!("{prefix}{}-", token()))
}

/// Removes this process's lock files whose directories are all gone (at a clean exit; a lock
/// file left with a directory is the next sweep's to remove with it).
pub fn release() {
    let mut held = held().lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|lock, _| {
        let (Some(dir), Some(stem)) = (
            lock.parent(),
            lock.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".lock")),
        ) else {
            return true;
        };
        let mine = format!("{stem}-");
        let busy = std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&mine))
        });
        busy || std::fs::remove_file(lock).is_err()
    });
}

/// Whether the owner of `token` is gone: its lock file is free (or missing), or, for an old
/// `<pid>` name without one, no such process runs.
fn owner_gone(dir: &Path, prefix: &str, token: &str) -> bool {
    if token == self::token() {
        return false;
    }
    match File::open(lock_path(dir, prefix, token)) {
        Ok(f) => flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok(),
        Err(_) => match token.parse::<u32>() {
            Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        },
    }
}

/// Removes the work directories under `dir` named with `prefix` whose owner is gone, then
/// their lock files; returns the directories removed. Errors (another user's directory in a
/// sticky `/dev/shm`) leave the entry.
pub fn sweep(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    // Directories first, while their lock files still say who owns them.
    names.sort_by_key(|n| n.ends_with(".lock"));
    let mut removed = Vec::new();
    for name in names {
        let rest = &name[prefix.len()..];
        if let Some(token) = rest.strip_suffix(".lock") {
            if owner_gone(dir, prefix, token) {
                let _ = std::fs::remove_file(dir.join(&name));
            }
            continue;
        }
        let Some(token) = rest.split('-').next().filter(|t| !t.is_empty()) else {
            continue;
        };
        if owner_gone(dir, prefix, token) {
            let path = dir.join(&name);
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_owners_keep_their_directories_dead_ones_lose_them() {
        let dir = tempfile_dir();
        let p = "bt-ctx-";
        let mine = claim(&dir, p).unwrap();
        std::fs::create_dir(dir.join(format!("{mine}a"))).unwrap();
        // Another live owner: its lock held (here by a second open file description).
        let other = dir.join(format!("{p}tother.lock"));
        let held = File::create(&other).unwrap();
        flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        std::fs::create_dir(dir.join(format!("{p}tother-b"))).unwrap();
        // A dead owner: its lock file free.
        File::create(dir.join(format!("{p}tdead.lock"))).unwrap();
        std::fs::create_dir(dir.join(format!("{p}tdead-c"))).unwrap();
        // An old daemon's pid name: a pid that cannot run, and this process's own.
        std::fs::create_dir(dir.join(format!("{p}4194304-d"))).unwrap();
        std::fs::create_dir(dir.join(format!("{p}{}-e", std::process::id()))).unwrap();
        // Not ours at all.
        std::fs::create_dir(dir.join("other-dir")).unwrap();

        let removed = sweep(&dir, p);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            format!("{mine}a"),
            format!("{p}{}.lock", token()),
            format!("{p}tother-b"),
            format!("{p}tother.lock"),
            format!("{p}{}-e", std::process::id()),
            "other-dir".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(removed.len(), 2, "{removed:?}");
        drop(held);
        sweep(&dir, p);
        assert!(!dir.join(format!("{p}tother-b")).exists());
        assert!(!other.exists());
        // At exit: our lock file stays while a directory of ours does, then goes.
        let own_lock = dir.join(format!("{p}{}.lock", token()));
        release();
        assert!(own_lock.exists());
        std::fs::remove_dir(dir.join(format!("{mine}a"))).unwrap();
        release();
        assert!(!own_lock.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("berth-util-shared-{}", crate::id::random_hex(6)));
        std::fs::create_dir(&d).unwrap();
        d
    }
}
