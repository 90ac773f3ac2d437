//! Small file helpers for cgroupfs, with a "fake kernel" mode used by tests against a temp dir.
//!
//! In fake mode, writes create missing files, `cgroup.subtree_control` writes are merged the way the
//! kernel merges `+ctrl`/`-ctrl` tokens, and a new v2 directory gets a `cgroup.controllers` file
//! holding its parent's enabled controllers.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{CgroupError, Result};

/// Every write done in fake mode, in order (tests inspect it with [`fake_writes_under`]).
static FAKE_WRITES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// The writes made by fake-mode cgroups below `root`, in order (for tests).
pub fn fake_writes_under(root: &Path) -> Vec<(PathBuf, String)> {
    FAKE_WRITES
        .lock()
        .map(|log| {
            log.iter()
                .filter(|(p, _)| p.starts_with(root))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// File access for one cgroup tree: real cgroupfs, or a fake tree in a temp dir.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Files {
    pub(crate) fake: bool,
}

impl Files {
    /// Write `value` to `dir/file` in one `write(2)`, as cgroupfs expects.
    pub(crate) fn write(&self, dir: &Path, file: &str, value: &str) -> Result<()> {
        let path = dir.join(file);
        self.write_path(&path, value)
    }

    pub(crate) fn write_path(&self, path: &Path, value: &str) -> Result<()> {
        let err = |source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        };
        if self.fake {
            self.fake_write(path, value).map_err(err)?;
            if let Ok(mut log) = FAKE_WRITES.lock() {
                log.push((path.to_path_buf(), value.to_string()));
            }
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        f.write_all(value.as_bytes()).map_err(err)
    }

    fn fake_write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.parent().is_some_and(|p| p.is_dir()) {
            return Err(io::Error::from(ErrorKind::NotFound));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "cgroup.subtree_control" {
            let mut enabled: Vec<String> = fs::read_to_string(path)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            for tok in value.split_whitespace() {
                if let Some(c) = tok.strip_prefix('+') {
                    if !enabled.iter().any(|e| e == c) {
                        enabled.push(c.to_string());
                    }
                } else if let Some(c) = tok.strip_prefix('-') {
                    enabled.retain(|e| e != c);
                } else {
                    return Err(io::Error::from_raw_os_error(libc::EINVAL));
                }
            }
            return fs::write(path, enabled.join(" "));
        }
        fs::write(path, value)
    }

    /// Read `dir/file` as a string.
    pub(crate) fn read(&self, dir: &Path, file: &str) -> Result<String> {
        read_path(&dir.join(file))
    }

    /// Read `dir/file`, `None` if it does not exist.
    pub(crate) fn read_opt(&self, dir: &Path, file: &str) -> Result<Option<String>> {
        let path = dir.join(file);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CgroupError::Read { path, source }),
        }
    }

    /// Create one directory level; returns whether it was created. For v2 fakes, fills in
    /// `cgroup.controllers` from the parent's `cgroup.subtree_control`.
    pub(crate) fn mkdir(&self, dir: &Path, v2: bool) -> Result<bool> {
        match fs::create_dir(dir) {
            Ok(()) => {
                if self.fake && v2 {
                    if let Some(parent) = dir.parent() {
                        let enabled = fs::read_to_string(parent.join("cgroup.subtree_control"))
                            .unwrap_or_default();
                        let path = dir.join("cgroup.controllers");
                        fs::write(&path, enabled.trim()).map_err(|source| CgroupError::Create {
                            path: path.clone(),
                            source,
                        })?;
                    }
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
            Err(source) => Err(CgroupError::Create {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Remove a cgroup directory and, first, any sub-cgroups below it. Missing is fine.
    /// Retries `EBUSY` a few times (tasks that were just killed may take a moment to leave).
    pub(crate) fn remove_cgroup_dir(&self, dir: &Path) -> Result<()> {
        if self.fake {
            return match fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(source) => Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                }),
            };
        }
        // Children first (cgroupfs only lets us rmdir empty cgroups; its files go with the dir).
        match fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        self.remove_cgroup_dir(&entry.path())?;
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
        let mut delay = std::time::Duration::from_millis(10);
        let mut attempt = 0;
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 6 => {
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }
}

/// Read a file as a string, mapping errors to [`CgroupError::Read`].
pub(crate) fn read_path(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse a single unsigned number; `max` maps to `u64::MAX`.
pub(crate) fn parse_u64(path: &Path, s: &str) -> Result<u64> {
    let t = s.trim();
    if t == "max" {
        return Ok(u64::MAX);
    }
    t.parse::<u64>().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: t.to_string(),
    })
}

/// Read `dir/file` as one unsigned number (`max` = `u64::MAX`).
pub(crate) fn read_u64(files: &Files, dir: &Path, file: &str) -> Result<u64> {
    let s = files.read(dir, file)?;
    parse_u64(&dir.join(file), &s)
}

/// Read `dir/file` as one number, 0 if the file does not exist.
pub(crate) fn read_u64_or_zero(files: &Files, dir: &Path, file: &str) -> Result<u64> {
    match files.read_opt(dir, file)? {
        Some(s) => parse_u64(&dir.join(file), &s),
        None => Ok(0),
    }
}

/// Parse a flat-keyed file (`key value` per line) into pairs; unparsable values are skipped.
pub(crate) fn parse_flat_keyed(s: &str) -> Vec<(String, u64)> {
    s.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let k = it.next()?;
            let v = it.next()?;
            let v = if v == "max" {
                u64::MAX
            } else {
                v.parse().ok()?
            };
            Some((k.to_string(), v))
        })
        .collect()
}

/// Look up `key` in a flat-keyed file's content.
pub(crate) fn flat_keyed_get(s: &str, key: &str) -> Option<u64> {
    parse_flat_keyed(s)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// All directories from `root` (exclusive) down to `leaf` (inclusive); `leaf` must be below `root`.
pub(crate) fn dirs_below(root: &Path, leaf: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rel) = leaf.strip_prefix(root) {
        let mut cur = root.to_path_buf();
        for c in rel.components() {
            cur.push(c);
            out.push(cur.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed() {
        let s = "populated 1\nfrozen 0\nbad\nmax max\n";
        assert_eq!(flat_keyed_get(s, "frozen"), Some(0));
        assert_eq!(flat_keyed_get(s, "populated"), Some(1));
        assert_eq!(flat_keyed_get(s, "max"), Some(u64::MAX));
        assert_eq!(flat_keyed_get(s, "bad"), None);
    }

    #[test]
    fn dirs_below_lists_each_level() {
        let d = dirs_below(Path::new("/a"), Path::new("/a/b/c"));
        assert_eq!(d, vec![PathBuf::from("/a/b"), PathBuf::from("/a/b/c")]);
        assert!(dirs_below(Path::new("/x"), Path::new("/a/b")).is_empty());
    }

    #[test]
    fn fake_subtree_control_merges() {
        let t = tempfile::tempdir().unwrap();
        let f = Files { fake: true };
        f.write(t.path(), "cgroup.subtree_control", "+cpu +memory")
            .unwrap();
        f.write(t.path(), "cgroup.subtree_control", "+io -cpu")
            .unwrap();
        assert_eq!(
            f.read(t.path(), "cgroup.subtree_control").unwrap(),
            "memory io"
        );
    }
}
