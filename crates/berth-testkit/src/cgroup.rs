//! Cgroup hierarchies of this host and removing a test's cgroup trees.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The mount points of every cgroup (v1) and cgroup2 hierarchy.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split(' ').next()?;
            let mnt = pre.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(unescape(mnt)))
        })
        .collect()
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directories of `parent` (a cgroup path such as `/berth-test-x`) in every hierarchy.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    cgroup_mounts()
        .into_iter()
        .map(|m| m.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup `parent` and everything below it in every hierarchy, deepest first,
/// retrying for a moment while dying processes still hold one. Returns what is left.
pub fn remove_cgroup_tree(parent: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for _ in 0..100 {
        left.clear();
        for top in cgroup_dirs(parent) {
            let mut dirs = Vec::new();
            subdirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            dirs.push(top);
            for d in dirs {
                if std::fs::remove_dir(&d).is_err() && d.exists() {
                    left.push(d);
                }
            }
        }
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    left
}

fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(e.path());
                subdirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }

    #[test]
    fn a_cgroup_tree_is_removed_in_every_hierarchy() {
        if crate::guard::skip_unless_root() {
            return;
        }
        let parent = format!("/{}", crate::unique_name("berth-test"));
        let mounts = cgroup_mounts();
        assert!(!mounts.is_empty());
        for m in &mounts {
            let _ = std::fs::create_dir_all(m.join(&parent[1..]).join("a/b"));
        }
        assert!(!cgroup_dirs(&parent).is_empty());
        assert_eq!(remove_cgroup_tree(&parent), Vec::<PathBuf>::new());
        assert!(cgroup_dirs(&parent).is_empty());
    }
}
