//! Helpers for building (possibly hostile) layer tarballs and guarding mounts.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

/// A tar under construction.
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A header whose name (and link name) bytes are written raw, bypassing the builder's
    /// path checks (so `..` and absolute paths get through).
    fn raw(&mut self, name: &[u8], link: &[u8], kind: EntryType, mode: u32, data: &[u8]) {
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "use pax for long names"
        );
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.raw(name.as_bytes(), b"", EntryType::Regular, 0o644, data);
        self
    }

    pub fn file_mode(
        mut self,
        name: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
        data: &[u8],
    ) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.raw(name.as_bytes(), b"", EntryType::Directory, 0o755, b"");
        self
    }

    pub fn dir_mode(mut self, name: &str, mode: u32, mtime: u64) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_size(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.raw(
            name.as_bytes(),
            target.as_bytes(),
            EntryType::Symlink,
            0o777,
            b"",
        );
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.raw(
            name.as_bytes(),
            target.as_bytes(),
            EntryType::Link,
            0o644,
            b"",
        );
        self
    }

    pub fn node(mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o620);
        h.set_size(0);
        h.set_mtime(1_600_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }

    /// A PAX extended header followed by a file entry (placeholder name in the ustar header).
    pub fn pax_file(mut self, records: &[(&str, &[u8])], data: &[u8]) -> Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n" where len counts itself.
            let rest = 1 + k.len() + 1 + v.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len += 1;
            }
            write!(body, "{len} {k}=").unwrap();
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_path("PaxHeader").unwrap();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.b.append(&h, &body[..]).unwrap();
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_path("placeholder").unwrap();
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    /// A GNU long-name file (the builder emits the `././@LongLink` entry itself).
    pub fn gnu_long_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"")
    }

    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    pub fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

/// Unmounts (lazily) on drop, so a failing test never leaves a mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A recursive listing (relative path, type char, size) for comparing trees.
pub fn snapshot_tree(root: &Path) -> Vec<(String, char, u64)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, char, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut ents: Vec<_> = rd.filter_map(Result::ok).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let t = if m.is_dir() {
                'd'
            } else if m.file_type().is_symlink() {
                'l'
            } else {
                'f'
            };
            out.push((rel, t, if m.is_file() { m.len() } else { 0 }));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}
