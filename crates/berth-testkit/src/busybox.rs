//! Busybox root file systems (Debian's `busybox-static`, `/bin/busybox`) as directories or
//! image tars: the test image of every crate.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Where the static busybox is.
pub const BUSYBOX: &str = "/bin/busybox";

/// `root` and `nobody`.
pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `root` and `nogroup`.
pub const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The modification time of every entry of a tar made here (so tars are reproducible).
pub const MTIME: u64 = 1_700_000_000;

/// The busybox binary's bytes.
pub fn busybox_bytes() -> Vec<u8> {
    std::fs::read(BUSYBOX).expect("/bin/busybox is needed (apt-get install busybox-static)")
}

/// Every applet of this busybox (`busybox --list`, without `busybox` itself).
pub fn applets() -> &'static [String] {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let out = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("run busybox --list");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|a| *a != "busybox")
            .map(str::to_string)
            .collect()
    })
}

/// A busybox root file system under construction: directories, `bin/busybox`, applet links in
/// `bin/`, and files; written as a directory or a tar (in that order).
#[derive(Debug, Clone)]
pub struct Rootfs {
    dirs: Vec<String>,
    /// `None`: every applet.
    applets: Option<Vec<String>>,
    files: Vec<(String, Vec<u8>, u32)>,
    /// `bin/busybox`'s bytes; `None`: this machine's [`BUSYBOX`].
    binary: Option<Vec<u8>>,
}

impl Default for Rootfs {
    fn default() -> Self {
        Self::busybox()
    }
}

impl Rootfs {
    /// A complete root: `bin etc proc sys dev tmp root usr`, every applet, `etc/passwd` and
    /// `etc/group` with root and nobody.
    pub fn busybox() -> Self {
        Self::bare()
            .dirs(&["bin", "etc", "proc", "sys", "dev", "tmp", "root", "usr"])
            .file("etc/passwd", PASSWD.as_bytes())
            .file("etc/group", GROUP.as_bytes())
    }

    /// Only `bin/busybox` with every applet: add the rest.
    pub fn bare() -> Self {
        Self {
            dirs: vec!["bin".into()],
            applets: None,
            files: Vec::new(),
            binary: None,
        }
    }

    /// Another busybox as `bin/busybox` (e.g. another architecture's).
    pub fn binary(mut self, busybox: &[u8]) -> Self {
        self.binary = Some(busybox.to_vec());
        self
    }

    fn binary_bytes(&self) -> Vec<u8> {
        self.binary.clone().unwrap_or_else(busybox_bytes)
    }

    /// The directories (replacing the list), created first and in this order.
    pub fn dirs(mut self, dirs: &[&str]) -> Self {
        self.dirs = dirs.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Only these applets get a link in `bin/`.
    pub fn applets(mut self, names: &[&str]) -> Self {
        self.applets = Some(names.iter().map(|a| a.to_string()).collect());
        self
    }

    /// A regular file (mode 0644), replacing one of the same path.
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.file_mode(path, data, 0o644)
    }

    /// A regular file with a mode, replacing one of the same path.
    pub fn file_mode(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self.files.retain(|(p, _, _)| p != path);
        self.files.push((path.to_string(), data.to_vec(), mode));
        self
    }

    /// Several regular files (mode 0644).
    pub fn files(self, files: &[(&str, &[u8])]) -> Self {
        files.iter().fold(self, |r, (p, d)| r.file(p, d))
    }

    fn applet_names(&self) -> Vec<String> {
        match &self.applets {
            Some(v) => v.clone(),
            None => applets().to_vec(),
        }
    }

    /// The bytes of its regular files (busybox, files) plus the links' targets, as `docker
    /// images` counts an imported image's size.
    pub fn size(&self) -> u64 {
        let links = self.applet_names().len() * "busybox".len();
        let files: usize = self.files.iter().map(|(_, d, _)| d.len()).sum();
        self.binary_bytes().len() as u64 + (links + files) as u64
    }

    /// Writes it into the directory `dir` (created).
    pub fn write_dir(&self, dir: &Path) {
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for d in &self.dirs {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        match &self.binary {
            Some(b) => std::fs::write(dir.join("bin/busybox"), b).unwrap(),
            None => {
                std::fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
            }
        }
        for a in self.applet_names() {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(a));
        }
        for (p, data, mode) in &self.files {
            let path = dir.join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(&path, data).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
    }

    /// The root as an uncompressed tar (owner 0:0, time [`MTIME`]).
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for d in &self.dirs {
            append(&mut b, d, tar::EntryType::Directory, 0o755, b"", None);
        }
        append(
            &mut b,
            "bin/busybox",
            tar::EntryType::Regular,
            0o755,
            &self.binary_bytes(),
            None,
        );
        for a in self.applet_names() {
            let name = format!("bin/{a}");
            append(
                &mut b,
                &name,
                tar::EntryType::Symlink,
                0o777,
                b"",
                Some("busybox"),
            );
        }
        for (p, data, mode) in &self.files {
            append(&mut b, p, tar::EntryType::Regular, *mode, data, None);
        }
        b.into_inner().unwrap()
    }

    /// Writes [`Rootfs::tar`] to `path`.
    pub fn write_tar(&self, path: &Path) {
        std::fs::write(path, self.tar()).unwrap();
    }
}

/// Appends one entry (owner 0:0, time [`MTIME`]) to a tar.
pub fn append(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(data.len() as u64);
    match link {
        Some(l) => b.append_link(&mut h, path, l).unwrap(),
        None => b.append_data(&mut h, path, data).unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_and_tar_hold_the_same_tree() {
        if !Path::new(BUSYBOX).exists() {
            crate::guard::skipped("needs /bin/busybox (apt-get install busybox-static)");
            return;
        }
        let r = Rootfs::bare()
            .dirs(&["bin", "etc"])
            .applets(&["sh", "ls"])
            .file("etc/hostname", b"box\n")
            .file_mode("etc/run", b"#!/bin/sh\n", 0o755);
        let t = tempfile::tempdir().unwrap();
        r.write_dir(t.path());
        assert_eq!(
            std::fs::read_link(t.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(!t.path().join("bin/cat").exists());
        assert_eq!(
            std::fs::read(t.path().join("etc/hostname")).unwrap(),
            b"box\n"
        );
        let tar = r.tar();
        let mut names = Vec::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), MTIME);
            names.push(e.path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            [
                "bin",
                "etc",
                "bin/busybox",
                "bin/sh",
                "bin/ls",
                "etc/hostname",
                "etc/run"
            ]
        );
        assert_eq!(r.tar(), tar, "reproducible");
        assert_eq!(r.size(), busybox_bytes().len() as u64 + 2 * 7 + 4 + 10);
        assert!(applets().iter().any(|a| a == "sh"));
        assert!(Rootfs::busybox().tar().len() > tar.len());
    }

    #[test]
    fn another_binary_in_dir_tar_and_size() {
        let r = Rootfs::bare().applets(&["sh"]).binary(b"not busybox");
        let t = tempfile::tempdir().unwrap();
        r.write_dir(t.path());
        assert_eq!(
            std::fs::read(t.path().join("bin/busybox")).unwrap(),
            b"not busybox"
        );
        let tar = r.tar();
        let mut a = tar::Archive::new(&tar[..]);
        let mut found = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap() == Path::new("bin/busybox") {
                std::io::Read::read_to_end(&mut e, &mut found).unwrap();
            }
        }
        assert_eq!(found, b"not busybox");
        assert_eq!(r.size(), 11 + 7);
    }
}
