//! Layer application: features, whiteouts (flat and overlay), and hostile tarballs.
//! These tests run as root (ownership, device nodes, overlay mounts).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_image::layer::{
    apply_layer, ApplyMode, ApplyOptions, Compression, EntryError, LayerError,
};
use berth_image::snapshot::mount_overlay;
use berth_image::Digest;
use berth_testkit::{require_root, TempRoot};
use common::{gzip, snapshot_tree, zstd, MountGuard, Tar};
use tar::EntryType;

fn flat() -> ApplyOptions {
    ApplyOptions::new(ApplyMode::Flat)
}

/// A target directory next to an `outside` directory holding a sentinel, to prove that
/// nothing outside the target is touched.
struct Sandbox {
    tmp: tempfile::TempDir,
    target: PathBuf,
    outside: PathBuf,
    before: Vec<(String, char, u64)>,
    passwd: (u64, u64, i64, u64),
}

fn passwd_meta() -> (u64, u64, i64, u64) {
    let m = fs::metadata("/etc/passwd").unwrap();
    (m.ino(), m.nlink(), m.mtime(), m.len())
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let outside = tmp.path().join("outside");
        fs::create_dir(&target).unwrap();
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sentinel"), b"keep").unwrap();
        fs::write(outside.join("sub/inner"), b"keep").unwrap();
        let before = snapshot_tree(&outside);
        Self {
            tmp,
            target,
            outside,
            before,
            passwd: passwd_meta(),
        }
    }

    fn apply(&self, tar: Vec<u8>) -> Result<berth_image::layer::AppliedLayer, LayerError> {
        apply_layer(&self.target, &tar[..], &flat())
    }

    fn outside_str(&self) -> String {
        self.outside.to_str().unwrap().to_string()
    }

    /// Nothing outside the target changed.
    fn check(&self) {
        assert_eq!(
            snapshot_tree(&self.outside),
            self.before,
            "outside dir changed"
        );
        assert_eq!(fs::read(self.outside.join("sentinel")).unwrap(), b"keep");
        let top: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut top = top;
        top.sort();
        assert_eq!(
            top,
            vec!["outside", "target"],
            "something was written beside the target"
        );
        assert_eq!(passwd_meta(), self.passwd, "/etc/passwd changed");
        assert!(!Path::new("/tmp/outside-berth-test").exists());
    }
}

fn entry_error(r: Result<berth_image::layer::AppliedLayer, LayerError>) -> (String, EntryError) {
    match r {
        Err(LayerError::Entry { entry, error }) => (entry, error),
        other => panic!("expected an entry error, got {other:?}"),
    }
}

#[test]
fn features_and_diff_id() {
    require_root!();
    let long_gnu = format!("{}/file", vec!["d".repeat(100); 5].join("/"));
    let long_pax = format!("{}/paxfile", "p".repeat(200));
    let tar = Tar::new()
        .dir_mode("bin", 0o755, 1_500_000_000)
        .file_mode("bin/su", 0o4755, 0, 0, 1_500_000_001, b"#!setuid")
        .file_mode("bin/owned", 0o640, 1234, 5678, 1_500_000_002, b"owned")
        .dir_mode("tmp", 0o1777, 1_500_000_003)
        .symlink("bin/sh", "busybox")
        .file("bin/busybox", b"BB")
        .hardlink("bin/ls", "bin/busybox")
        .node("dev/null", EntryType::Char, 1, 3)
        .node("dev/loop0", EntryType::Block, 7, 0)
        .node("run/fifo", EntryType::Fifo, 0, 0)
        .gnu_long_file(&long_gnu, b"gnu")
        .pax_file(
            &[
                ("path", long_pax.as_bytes()),
                ("SCHILY.xattr.user.test", b"value"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/evil"),
                ("mtime", b"1500000004.5"),
                ("uid", b"4242"),
            ],
            b"pax",
        )
        .bytes();
    let want_diff = Digest::of_bytes(&tar);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    let applied = apply_layer(t, &tar[..], &flat()).unwrap();
    assert_eq!(applied.diff_id, want_diff);
    assert_eq!(applied.size, tar.len() as u64);
    assert_eq!(applied.compression, Compression::None);
    // Counted while unpacking exactly as the separate pass over the stream counts it.
    assert_eq!(
        applied.content_size,
        berth_image::image_store::layer_content_size(&tar[..]).unwrap()
    );
    assert_eq!(applied.content_size, 8 + 5 + 7 + 2 + 3 + 3);

    let m = fs::metadata(t.join("bin/su")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(m.mtime(), 1_500_000_001);
    let m = fs::metadata(t.join("bin/owned")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    let m = fs::metadata(t.join("tmp")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o1777, "sticky kept");
    // Directory times are set after their contents.
    assert_eq!(fs::metadata(t.join("bin")).unwrap().mtime(), 1_500_000_000);
    assert_eq!(
        fs::read_link(t.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let a = fs::metadata(t.join("bin/busybox")).unwrap();
    let b = fs::metadata(t.join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link");
    let null = fs::metadata(t.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(fs::metadata(t.join("dev/loop0"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::metadata(t.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(t.join(&long_gnu)).unwrap(), b"gnu");
    let p = t.join(&long_pax);
    assert_eq!(fs::read(&p).unwrap(), b"pax");
    let m = fs::metadata(&p).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_004, 500_000_000));
    assert_eq!(m.uid(), 4242);
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(&p, "user.test", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"value");
    assert!(
        rustix::fs::getxattr(&p, "trusted.overlay.redirect", &mut buf[..]).is_err(),
        "overlay xattrs from the image are dropped"
    );

    // Compressed forms give the same DiffID.
    for (data, c) in [
        (gzip(&tar), Compression::Gzip),
        (zstd(&tar), Compression::Zstd),
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = apply_layer(d.path(), &data[..], &flat()).unwrap();
        assert_eq!(r.compression, c);
        assert_eq!(r.diff_id, want_diff);
        assert_eq!(r.size, tar.len() as u64);
        assert_eq!(snapshot_tree(d.path()), snapshot_tree(t));
    }
}

#[test]
fn empty_and_corrupt_streams() {
    let d = tempfile::tempdir().unwrap();
    let r = apply_layer(d.path(), &b""[..], &flat()).unwrap();
    assert_eq!(r.diff_id, Digest::of_bytes(b""));
    let tar = Tar::new().file("a", &[7u8; 10000]).bytes();
    // Truncated in the middle of a file's data.
    let err = apply_layer(d.path(), &tar[..3000], &flat()).unwrap_err();
    assert!(matches!(err, LayerError::Read(_)), "{err}");
    // Truncated gzip.
    let gz = gzip(&tar);
    let err = apply_layer(d.path(), &gz[..gz.len() / 2], &flat()).unwrap_err();
    assert!(matches!(err, LayerError::Read(_)), "{err}");
    // Corrupt zstd.
    let mut zs = zstd(&tar);
    let n = zs.len();
    zs[n / 2] ^= 0xff;
    zs.truncate(n - 3);
    assert!(apply_layer(d.path(), &zs[..], &flat()).is_err());
    // Garbage that is not a tar.
    let err = apply_layer(d.path(), &[0x41u8; 1024][..], &flat()).unwrap_err();
    assert!(matches!(err, LayerError::Read(_)), "{err}");
    // Unsupported compression.
    let err = apply_layer(d.path(), &b"BZh91AY&SY"[..], &flat()).unwrap_err();
    assert!(
        matches!(err, LayerError::UnsupportedCompression("bzip2")),
        "{err}"
    );
    // A missing target.
    let err = apply_layer(&d.path().join("missing"), &tar[..], &flat()).unwrap_err();
    assert!(matches!(err, LayerError::Target { .. }), "{err}");
}

#[test]
fn hostile_dotdot_paths() {
    require_root!();
    for name in ["../../etc/x", "a/../../x", "../outside/sentinel", "./../x"] {
        let s = Sandbox::new();
        let (entry, err) = entry_error(s.apply(Tar::new().file(name, b"pwned").bytes()));
        assert_eq!(entry, name);
        assert!(matches!(err, EntryError::PathEscapes), "{name}: {err}");
        s.check();
    }
    // `..` that stays inside is fine.
    let s = Sandbox::new();
    s.apply(Tar::new().file("a/../b", b"ok").bytes()).unwrap();
    assert_eq!(fs::read(s.target.join("b")).unwrap(), b"ok");
    s.check();
}

#[test]
fn hostile_absolute_path_is_stripped() {
    require_root!();
    let s = Sandbox::new();
    let abs = format!("{}/abs", s.outside_str());
    s.apply(Tar::new().file("/abs", b"x").file(&abs, b"y").bytes())
        .unwrap();
    assert_eq!(fs::read(s.target.join("abs")).unwrap(), b"x");
    // The absolute outside path lands inside the target.
    assert_eq!(
        fs::read(s.target.join(abs.trim_start_matches('/'))).unwrap(),
        b"y"
    );
    s.check();
}

#[test]
fn hostile_symlink_parent() {
    require_root!();
    // Absolute symlink to a real outside directory, then a file through it.
    let s = Sandbox::new();
    let r = s.apply(
        Tar::new()
            .symlink("evil", &s.outside_str())
            .file("evil/x", b"pwned")
            .bytes(),
    );
    let (_, err) = entry_error(r);
    assert!(matches!(err, EntryError::UnresolvableSymlink), "{err}");
    s.check();

    // Relative symlink climbing to the real outside directory.
    let s = Sandbox::new();
    let r = s.apply(
        Tar::new()
            .symlink("evil", "../outside")
            .file("evil/sentinel", b"pwned")
            .bytes(),
    );
    assert!(r.is_err());
    s.check();

    // When the in-root target exists, the entry lands inside the target (as in the container).
    let s = Sandbox::new();
    let inside = format!("{}/", s.outside_str());
    s.apply(
        Tar::new()
            .dir(&inside)
            .symlink("evil", &s.outside_str())
            .file("evil/x", b"contained")
            .bytes(),
    )
    .unwrap();
    assert_eq!(
        fs::read(
            s.target
                .join(s.outside_str().trim_start_matches('/'))
                .join("x")
        )
        .unwrap(),
        b"contained"
    );
    s.check();

    // A directory entry replacing a symlink to outside removes the symlink.
    let s = Sandbox::new();
    s.apply(
        Tar::new()
            .symlink("d", &s.outside_str())
            .dir("d")
            .file("d/sentinel", b"pwned")
            .bytes(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(s.target.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(s.target.join("d/sentinel")).unwrap(), b"pwned");
    s.check();
}

#[test]
fn hostile_dotdot_symlink_chains() {
    require_root!();
    let s = Sandbox::new();
    s.apply(
        Tar::new()
            .symlink("a", "../../../../..")
            .symlink("b", "a/../../a/..")
            .symlink("c", "/b/../../..")
            .file("a/x", b"1")
            .file("b/y", b"2")
            .file("c/z", b"3")
            .dir("a/d")
            .file("a/d/w", b"4")
            .bytes(),
    )
    .unwrap();
    // Every `..` chain is clamped at the target's root.
    assert_eq!(fs::read(s.target.join("x")).unwrap(), b"1");
    assert_eq!(fs::read(s.target.join("y")).unwrap(), b"2");
    assert_eq!(fs::read(s.target.join("z")).unwrap(), b"3");
    assert_eq!(fs::read(s.target.join("d/w")).unwrap(), b"4");
    s.check();
}

#[test]
fn hostile_file_replacing_symlink() {
    require_root!();
    let s = Sandbox::new();
    let victim = format!("{}/sentinel", s.outside_str());
    s.apply(
        Tar::new()
            .symlink("link", &victim)
            .file("link", b"new")
            .bytes(),
    )
    .unwrap();
    let m = fs::symlink_metadata(s.target.join("link")).unwrap();
    assert!(m.is_file(), "the symlink was replaced, not written through");
    assert_eq!(fs::read(s.target.join("link")).unwrap(), b"new");
    s.check();
    // The same across layers.
    let s = Sandbox::new();
    s.apply(Tar::new().symlink("link", &victim).bytes())
        .unwrap();
    s.apply(Tar::new().file("link", b"new").bytes()).unwrap();
    s.apply(
        Tar::new()
            .symlink("l2", &victim)
            .node("l2", EntryType::Fifo, 0, 0)
            .bytes(),
    )
    .unwrap();
    assert!(fs::symlink_metadata(s.target.join("l2"))
        .unwrap()
        .file_type()
        .is_fifo());
    s.check();
}

#[test]
fn hostile_hardlinks() {
    require_root!();
    enum Refused {
        TargetMissing,
        Escapes,
        /// Refused, by whichever check meets it first.
        Any,
    }
    type Layer = Box<dyn Fn(&Sandbox) -> Tar>;
    let cases: Vec<(&str, Layer, Refused)> = vec![
        // Straight to a host file.
        (
            "absolute",
            Box::new(|_| Tar::new().hardlink("pw", "/etc/passwd")),
            Refused::TargetMissing,
        ),
        (
            "dot-dot",
            Box::new(|_| Tar::new().hardlink("pw", "../../../../etc/passwd")),
            Refused::Escapes,
        ),
        (
            "dot-dot outside",
            Box::new(|_| Tar::new().hardlink("s", "../outside/sentinel")),
            Refused::Escapes,
        ),
        // Through a symlinked parent directory.
        (
            "parent symlink to /etc",
            Box::new(|_| {
                Tar::new()
                    .symlink("etc", "/etc")
                    .hardlink("pw", "etc/passwd")
            }),
            Refused::Any,
        ),
        (
            "parent symlink outside",
            Box::new(|s| {
                Tar::new()
                    .symlink("o", &s.outside_str())
                    .hardlink("pw", "o/sentinel")
            }),
            Refused::Any,
        ),
        (
            "parent symlink up",
            Box::new(|_| {
                Tar::new()
                    .symlink("up", "../outside")
                    .hardlink("pw", "up/sentinel")
            }),
            Refused::Any,
        ),
        // To a symlink that points outside.
        (
            "symlink to a host file",
            Box::new(|_| Tar::new().symlink("s", "/etc/passwd").hardlink("h", "s")),
            Refused::Escapes,
        ),
        (
            "symlink outside",
            Box::new(|_| {
                Tar::new()
                    .symlink("s", "../outside/sentinel")
                    .hardlink("h", "s")
            }),
            Refused::Escapes,
        ),
    ];
    for (what, layer, refused) in cases {
        let s = Sandbox::new();
        let r = s.apply(layer(&s).bytes());
        match refused {
            Refused::Any => assert!(r.is_err(), "{what}: {r:?}"),
            Refused::TargetMissing => {
                let (_, err) = entry_error(r);
                assert!(
                    matches!(err, EntryError::LinkTargetMissing(_)),
                    "{what}: {err}"
                );
            }
            Refused::Escapes => {
                let (_, err) = entry_error(r);
                assert!(matches!(err, EntryError::LinkEscapes(_)), "{what}: {err}");
            }
        }
        s.check();
    }

    // Legitimate links inside work, including to a relative symlink that stays inside.
    let s = Sandbox::new();
    s.apply(
        Tar::new()
            .file("a/f", b"data")
            .hardlink("b", "a/f")
            .symlink("a/rel", "f")
            .hardlink("rel2", "a/rel")
            .hardlink("b", "b")
            .bytes(),
    )
    .unwrap();
    let a = fs::metadata(s.target.join("a/f")).unwrap();
    assert_eq!(a.ino(), fs::metadata(s.target.join("b")).unwrap().ino());
    assert_eq!(a.nlink(), 2);
    assert!(fs::symlink_metadata(s.target.join("rel2"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A link to a directory is refused.
    let (_, err) = entry_error(s.apply(Tar::new().hardlink("dl", "a").bytes()));
    assert!(matches!(err, EntryError::LinkToDirectory(_)), "{err}");
    s.check();
}

#[test]
fn hostile_whiteouts() {
    let s = Sandbox::new();
    let (_, err) = entry_error(s.apply(Tar::new().file("../.wh.outside", b"").bytes()));
    assert!(matches!(err, EntryError::PathEscapes), "{err}");
    s.check();
    let s = Sandbox::new();
    let (_, err) = entry_error(s.apply(Tar::new().file("a/.wh...", b"").bytes()));
    assert!(matches!(err, EntryError::InvalidWhiteout), "{err}");
    s.check();
    // Whiteout through a symlink to outside.
    let s = Sandbox::new();
    let r = s.apply(
        Tar::new()
            .symlink("d", &s.outside_str())
            .whiteout("d", "sentinel")
            .whiteout("d", "sub")
            .bytes(),
    );
    let _ = r;
    s.check();
    let s = Sandbox::new();
    let _ = s.apply(Tar::new().symlink("d", "../outside").opaque("d").bytes());
    s.check();
    // Overlay mode: a whiteout device through a symlink.
    let s = Sandbox::new();
    let _ = apply_layer(
        &s.target,
        &Tar::new()
            .symlink("d", "../outside")
            .whiteout("d", "new")
            .bytes()[..],
        &ApplyOptions::new(ApplyMode::Overlay),
    );
    s.check();
}

#[test]
fn hostile_devices_stay_inside() {
    require_root!();
    let s = Sandbox::new();
    s.apply(
        Tar::new()
            .node("dev/sda", EntryType::Block, 8, 0)
            .node("dev/mem", EntryType::Char, 1, 1)
            .bytes(),
    )
    .unwrap();
    let m = fs::metadata(s.target.join("dev/sda")).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), rustix::fs::makedev(8, 0));
    assert!(fs::metadata(s.target.join("dev/mem"))
        .unwrap()
        .file_type()
        .is_char_device());
    s.check();
}

#[test]
fn hostile_huge_names() {
    // A fresh sandbox with one file whose path (a PAX record: no length limit) is `path`.
    let apply_path = |path: &str| {
        let s = Sandbox::new();
        let r = s.apply(
            Tar::new()
                .pax_file(&[("path", path.as_bytes())], b"x")
                .bytes(),
        );
        (s, r)
    };
    let (s, r) = apply_path(&("a/".repeat(3000) + "f"));
    let (entry, err) = entry_error(r);
    assert!(matches!(err, EntryError::NameTooLong), "{err}");
    assert!(
        entry.chars().count() <= 201,
        "error names a truncated entry"
    );
    s.check();
    let (s, r) = apply_path(&"b".repeat(300));
    let (_, err) = entry_error(r);
    assert!(matches!(err, EntryError::NameTooLong), "{err}");
    s.check();
    let (s, r) = apply_path(&("../".repeat(2000) + "x"));
    assert!(r.is_err());
    s.check();
}

/// Three layers exercising whiteouts and opaque directories.
fn three_layers() -> [Vec<u8>; 3] {
    let l1 = Tar::new()
        .dir("a")
        .file("a/1", b"one")
        .file("a/2", b"two")
        .dir("b")
        .file("b/x", b"x")
        .dir("b/sub")
        .file("b/sub/deep", b"deep")
        .file("c", b"c")
        .dir("e")
        .file("e/keep", b"keep")
        .bytes();
    let l2 = Tar::new()
        .dir("a")
        .whiteout("a", "1")
        .dir("b")
        .file("b/y", b"y")
        .opaque("b")
        .dir("b/sub")
        .file("b/sub/new", b"new")
        .file("d", b"d")
        .whiteout("", "nonexistent")
        .bytes();
    let l3 = Tar::new()
        .whiteout("", "c")
        .dir("a/1")
        .file("a/1/again", b"again")
        .whiteout("", "d")
        .dir("e")
        .opaque("e")
        .bytes();
    [l1, l2, l3]
}

fn expected_three_layers() -> Vec<(String, char, u64)> {
    vec![
        ("a".into(), 'd', 0),
        ("a/1".into(), 'd', 0),
        ("a/1/again".into(), 'f', 5),
        ("a/2".into(), 'f', 3),
        ("b".into(), 'd', 0),
        ("b/sub".into(), 'd', 0),
        ("b/sub/new".into(), 'f', 3),
        ("b/y".into(), 'f', 1),
        ("e".into(), 'd', 0),
    ]
}

#[test]
fn whiteouts_flat_three_layers() {
    require_root!();
    let d = tempfile::tempdir().unwrap();
    for l in three_layers() {
        apply_layer(d.path(), &l[..], &flat()).unwrap();
    }
    assert_eq!(snapshot_tree(d.path()), expected_three_layers());
}

#[test]
fn whiteouts_overlay_three_layers_mounted() {
    require_root!();
    let d = TempRoot::new("berth-layer");
    let mut diffs = Vec::new();
    for (i, l) in three_layers().iter().enumerate() {
        let diff = d.path().join(format!("l{i}"));
        fs::create_dir(&diff).unwrap();
        apply_layer(&diff, &l[..], &ApplyOptions::new(ApplyMode::Overlay)).unwrap();
        diffs.push(diff);
    }
    // The overlay encoding on disk.
    let wh = fs::symlink_metadata(diffs[1].join("a/1")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout device"
    );
    let mut buf = [0u8; 4];
    let n =
        rustix::fs::getxattr(diffs[1].join("b"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!diffs[1].join("b/.wh..wh..opq").exists());

    let merged = d.path().join("merged");
    let upper = d.path().join("upper");
    let work = d.path().join("work");
    for p in [&merged, &upper, &work] {
        fs::create_dir(p).unwrap();
    }
    let lowers: Vec<PathBuf> = diffs.iter().rev().cloned().collect();
    mount_overlay(&lowers, Some((&upper, &work)), &merged).unwrap();
    let _g = MountGuard(merged.clone());
    assert_eq!(snapshot_tree(&merged), expected_three_layers());
    assert_eq!(fs::read(merged.join("a/2")).unwrap(), b"two");
    // Writes go to the upper dir.
    fs::write(merged.join("new"), b"n").unwrap();
    assert!(upper.join("new").exists());
}

/// A reader that returns one byte per call, like a slow network stream.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn compression_detected_from_tiny_reads() {
    require_root!();
    let tar = Tar::new().file("a", b"hello").bytes();
    for (data, c) in [
        (gzip(&tar), Compression::Gzip),
        (zstd(&tar), Compression::Zstd),
        (tar.clone(), Compression::None),
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = apply_layer(d.path(), Trickle(&data), &flat()).unwrap();
        assert_eq!(r.compression, c);
        assert_eq!(r.diff_id, Digest::of_bytes(&tar));
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"hello");
    }
}

/// Small files are written by writer threads while the tar is read on: entries that depend on
/// a file not yet written (same path again, a hard link to it, a directory or a whiteout at
/// its path, a file replacing a directory with pending children) still see tar order.
#[test]
fn writer_threads_keep_entry_order() {
    require_root!();
    let mut t = Tar::new().dir("d");
    for i in 0..300 {
        t = t.file(&format!("d/f{i}"), format!("v1-{i}").as_bytes());
    }
    let t = t
        .file("d/f1", b"second")
        .hardlink("d/h5", "d/f5")
        .file("x", b"a file first")
        .dir("x")
        .file("x/inner", b"in")
        .file("d/gone", b"bye")
        .whiteout("d", "gone")
        .file("y/z", b"child")
        .file("y", b"replaces the directory")
        .file_mode("d/suid", 0o4755, 1000, 1000, 1_600_000_000, b"s");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t");
    fs::create_dir(&target).unwrap();
    apply_layer(&target, gzip(&t.bytes()).as_slice(), &flat()).unwrap();
    for i in 0..300 {
        let want = if i == 1 {
            "second".to_string()
        } else {
            format!("v1-{i}")
        };
        assert_eq!(
            fs::read_to_string(target.join(format!("d/f{i}"))).unwrap(),
            want
        );
    }
    let f5 = fs::metadata(target.join("d/f5")).unwrap();
    let h5 = fs::metadata(target.join("d/h5")).unwrap();
    assert_eq!((f5.ino(), f5.nlink()), (h5.ino(), 2));
    assert!(fs::metadata(target.join("x")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("x/inner")).unwrap(), b"in");
    assert!(fs::symlink_metadata(target.join("d/gone")).is_err());
    assert_eq!(
        fs::read(target.join("y")).unwrap(),
        b"replaces the directory"
    );
    let m = fs::metadata(target.join("d/f7")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    assert_eq!(m.mtime(), 1_600_000_000);
    if berth_testkit::is_root() {
        let s = fs::metadata(target.join("d/suid")).unwrap();
        assert_eq!(s.permissions().mode() & 0o7777, 0o4755);
        assert_eq!((s.uid(), s.gid()), (1000, 1000));
    }
}
