//! Snapshotters: overlay (mounted for real, including a 200-layer stack) and copy.
//! These tests run as root.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_image::manifest::chain_ids;
use berth_image::snapshot::{
    child_chain_id, mount_overlay_legacy, open_best, CopySnapshotter, OverlaySnapshotter,
    SnapshotError, Snapshotter,
};
use berth_image::Digest;
use berth_testkit::{require_root, TempRoot};
use common::{gzip, snapshot_tree, zstd, MountGuard, Tar};

fn layers() -> Vec<Vec<u8>> {
    vec![
        Tar::new()
            .dir("bin")
            .file("bin/busybox", b"BB")
            .hardlink("bin/sh", "bin/busybox")
            .dir("etc")
            .file("etc/old", b"old")
            .dir("var")
            .file("var/a", b"a")
            .bytes(),
        Tar::new()
            .dir("etc")
            .whiteout("etc", "old")
            .file("etc/new", b"new")
            .bytes(),
        Tar::new()
            .dir("var")
            .opaque("var")
            .file("var/b", b"b")
            .bytes(),
    ]
}

fn expected() -> Vec<(String, char, u64)> {
    vec![
        ("bin".into(), 'd', 0),
        ("bin/busybox".into(), 'f', 2),
        ("bin/sh".into(), 'f', 2),
        ("etc".into(), 'd', 0),
        ("etc/new".into(), 'f', 3),
        ("var".into(), 'd', 0),
        ("var/b".into(), 'f', 1),
    ]
}

/// Applies `layers()` (gzip, zstd, plain) and returns the chain IDs.
fn apply_all(s: &dyn Snapshotter) -> Vec<Digest> {
    let ls = layers();
    let diff_ids: Vec<Digest> = ls.iter().map(|l| Digest::of_bytes(l)).collect();
    let mut parent: Option<Digest> = None;
    for (i, l) in ls.iter().enumerate() {
        let data = match i {
            0 => gzip(l),
            1 => zstd(l),
            _ => l.clone(),
        };
        let info = s
            .apply_layer(parent.as_ref(), &diff_ids[i], &mut &data[..])
            .unwrap();
        assert_eq!(info.diff_id, diff_ids[i]);
        assert_eq!(info.size, l.len() as u64);
        parent = Some(info.chain_id);
    }
    let ids = chain_ids(&diff_ids);
    assert_eq!(parent.as_ref(), ids.last());
    ids
}

fn exercise(s: &dyn Snapshotter, root: &Path) {
    let ids = apply_all(s);
    assert_eq!(s.list().unwrap().len(), 3);
    for (i, id) in ids.iter().enumerate() {
        let info = s.info(id).unwrap();
        assert_eq!(
            info.parent.as_ref(),
            if i == 0 { None } else { Some(&ids[i - 1]) }
        );
    }
    // Applying again is a no-op that does not read the stream.
    let mut never = std::io::repeat(0xff);
    let again = s
        .apply_layer(Some(&ids[1]), &s.info(&ids[2]).unwrap().diff_id, &mut never)
        .unwrap();
    assert_eq!(again.chain_id, ids[2]);

    let top = ids[2].clone();
    s.prepare_container("c1", Some(&top)).unwrap();
    assert!(matches!(
        s.prepare_container("c1", Some(&top)),
        Err(SnapshotError::ContainerExists(_))
    ));
    assert!(matches!(
        s.prepare_container("../x", None),
        Err(SnapshotError::InvalidId(_))
    ));

    let mnt = root.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    {
        s.mount_container("c1", &mnt).unwrap();
        let _g = MountGuard(mnt.clone());
        assert_eq!(snapshot_tree(&mnt), expected());
        assert_eq!(
            fs::metadata(mnt.join("bin/sh")).unwrap().ino(),
            fs::metadata(mnt.join("bin/busybox")).unwrap().ino(),
            "hard link kept"
        );
        fs::write(mnt.join("etc/written"), b"w").unwrap();
        fs::remove_file(mnt.join("etc/new")).unwrap();
    }
    // The image's layers are untouched by the container's writes.
    s.prepare_container("c2", Some(&top)).unwrap();
    {
        s.mount_container("c2", &mnt).unwrap();
        let _g = MountGuard(mnt.clone());
        assert_eq!(snapshot_tree(&mnt), expected());
    }

    // In use: by containers, and by child snapshots.
    let err = s.remove(&top).unwrap_err();
    assert!(matches!(err, SnapshotError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("c1"), "{err}");
    let err = s.remove(&ids[0]).unwrap_err();
    assert!(err.to_string().contains(&ids[1].to_string()), "{err}");

    assert_eq!(s.list_containers().unwrap().len(), 2);
    s.remove_container("c1").unwrap();
    s.remove_container("c2").unwrap();
    assert!(matches!(
        s.remove_container("c1"),
        Err(SnapshotError::ContainerNotFound(_))
    ));
    assert!(s.info(&top).unwrap().users.is_empty());
    for id in ids.iter().rev() {
        s.remove(id).unwrap();
    }
    assert!(s.list().unwrap().is_empty());
    assert!(matches!(s.remove(&ids[0]), Err(SnapshotError::NotFound(_))));

    // A container on an empty image.
    s.prepare_container("empty", None).unwrap();
    {
        s.mount_container("empty", &mnt).unwrap();
        let _g = MountGuard(mnt.clone());
        assert!(snapshot_tree(&mnt).is_empty());
    }
    s.remove_container("empty").unwrap();
}

fn no_temp_left(root: &Path) {
    for e in fs::read_dir(root.join("snapshots")).unwrap() {
        let n = e.unwrap().file_name();
        assert!(!n.to_string_lossy().starts_with("tmp-"), "leftover {n:?}");
    }
}

/// A snapshotter opened by `open` on a fresh root (mounts there fail the test) goes through
/// [`exercise`] and leaves no temporary directory.
fn end_to_end<S: Snapshotter>(open: fn(&Path) -> Result<S, SnapshotError>, driver: &str) {
    let d = TempRoot::new("berth-snap");
    let s = open(d.path()).unwrap();
    assert_eq!(s.driver(), driver);
    exercise(&s, d.path());
    no_temp_left(d.path());
}

#[test]
fn overlay_snapshotter_end_to_end() {
    require_root!();
    end_to_end(OverlaySnapshotter::open, "overlay");
}

#[test]
fn copy_snapshotter_end_to_end() {
    require_root!();
    end_to_end(CopySnapshotter::open, "copy");
}

#[test]
fn overlay_layers_are_shared_by_chain_id() {
    require_root!();
    let d = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let ids = apply_all(&s);
    // The diff dir holds only that layer, in overlay form.
    let diff2 = s.diff_dir(&ids[1]);
    assert!(diff2.join("etc/new").exists());
    assert!(!diff2.join("bin").exists());
    assert!(!s.diff_dir(&ids[2]).join("var/a").exists());
    // Another image sharing the base layer reuses it.
    let other = Tar::new().file("other", b"o").bytes();
    let od = Digest::of_bytes(&other);
    let info = s.apply_layer(Some(&ids[0]), &od, &mut &other[..]).unwrap();
    assert_eq!(info.chain_id, child_chain_id(Some(&ids[0]), &od));
    assert_eq!(s.list().unwrap().len(), 4);
}

#[test]
fn diff_id_mismatch_commits_nothing() {
    require_root!();
    for copy in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let s: Box<dyn Snapshotter> = if copy {
            Box::new(CopySnapshotter::open(d.path()).unwrap())
        } else {
            Box::new(OverlaySnapshotter::open(d.path()).unwrap())
        };
        let l = Tar::new().file("a", b"a").bytes();
        let wrong = Digest::of_bytes(b"not it");
        let err = s.apply_layer(None, &wrong, &mut &l[..]).unwrap_err();
        assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
        // A hostile layer fails and leaves nothing either.
        let bad = Tar::new().file("../../x", b"x").bytes();
        let err = s
            .apply_layer(None, &Digest::of_bytes(&bad), &mut &bad[..])
            .unwrap_err();
        assert!(matches!(err, SnapshotError::Layer(_)), "{err}");
        // A missing parent.
        let err = s
            .apply_layer(Some(&wrong), &Digest::of_bytes(&l), &mut &l[..])
            .unwrap_err();
        assert!(matches!(err, SnapshotError::NotFound(_)), "{err}");
        assert!(s.list().unwrap().is_empty());
        no_temp_left(d.path());
    }
}

#[test]
fn leftovers_are_cleaned_on_open() {
    require_root!();
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("snapshots/tmp-123-456/diff/x")).unwrap();
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    no_temp_left(d.path());
    assert!(s.list().unwrap().is_empty());
    assert_eq!(open_best(d.path()).unwrap().driver(), "overlay");
}

#[test]
fn overlay_200_layers_via_lowerdir_plus() {
    require_root!();
    let d = TempRoot::new("berth-snap");
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let mut parent: Option<Digest> = None;
    for i in 0..200 {
        let l = Tar::new()
            .file(&format!("l{i:03}"), b"x")
            .file("top", format!("{i}").as_bytes())
            .bytes();
        let info = s
            .apply_layer(parent.as_ref(), &Digest::of_bytes(&l), &mut &l[..])
            .unwrap();
        parent = Some(info.chain_id);
    }
    let top = parent.unwrap();
    let lowers = s.lower_dirs(&top).unwrap();
    assert_eq!(lowers.len(), 200);
    let joined: usize = lowers.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(
        joined > 4096,
        "the stack must not fit in one mount(2) option page"
    );
    let mnt0 = d.path().join("mnt0");
    fs::create_dir(&mnt0).unwrap();
    let err = mount_overlay_legacy(&lowers, None, &mnt0).unwrap_err();
    assert!(
        matches!(err, SnapshotError::TooManyLayers { layers: 200 }),
        "{err}"
    );
    s.prepare_container("big", Some(&top)).unwrap();
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    {
        s.mount_container("big", &mnt).unwrap();
        let _g = MountGuard(mnt.clone());
        assert_eq!(fs::read_to_string(mnt.join("top")).unwrap(), "199");
        assert!(mnt.join("l000").exists());
        assert!(mnt.join("l199").exists());
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 201);
    }
    s.remove_container("big").unwrap();
}

#[test]
fn overlay_legacy_mount_string() {
    require_root!();
    let d = TempRoot::new("berth-snap");
    let s = OverlaySnapshotter::open(d.path()).unwrap();
    let ids = apply_all(&s);
    let lowers = s.lower_dirs(&ids[2]).unwrap();
    let (u, w, m) = (d.path().join("u"), d.path().join("w"), d.path().join("m"));
    for p in [&u, &w, &m] {
        fs::create_dir(p).unwrap();
    }
    mount_overlay_legacy(&lowers, Some((&u, &w)), &m).unwrap();
    let _g = MountGuard(m.clone());
    assert_eq!(snapshot_tree(&m), expected());
}

#[test]
fn copy_tree_preserves_metadata() {
    require_root!();
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let dst = d.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    let tar = Tar::new()
        .file_mode("bin/su", 0o4755, 12, 34, 1_400_000_000, b"su")
        .dir_mode("tmp", 0o1777, 1_400_000_001)
        .symlink("bin/sh", "su")
        .node("dev/null", tar::EntryType::Char, 1, 3)
        .pax_file(
            &[("path", b"x".as_slice()), ("SCHILY.xattr.user.k", b"v")],
            b"x",
        )
        .bytes();
    berth_image::layer::apply_layer(&src, &tar[..], &Default::default()).unwrap();
    berth_image::snapshot::copy_tree(&src, &dst).unwrap();
    assert_eq!(snapshot_tree(&src), snapshot_tree(&dst));
    let m = fs::metadata(dst.join("bin/su")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid(), m.mtime()), (12, 34, 1_400_000_000));
    let t = fs::metadata(dst.join("tmp")).unwrap();
    assert_eq!(
        (t.permissions().mode() & 0o7777, t.mtime()),
        (0o1777, 1_400_000_001)
    );
    assert_eq!(fs::read_link(dst.join("bin/sh")).unwrap(), Path::new("su"));
    let n = fs::metadata(dst.join("dev/null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), rustix::fs::makedev(1, 3));
    let mut buf = [0u8; 8];
    let k = rustix::fs::getxattr(dst.join("x"), "user.k", &mut buf[..]).unwrap();
    assert_eq!(&buf[..k], b"v");
}

/// A volatile container snapshot is one like any other; one whose metadata a power loss
/// emptied (never synced) is removed when the store opens, as one without metadata.
#[test]
fn volatile_container_snapshot_without_synced_metadata_is_removed_on_open() {
    require_root!();
    for copy in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let open = |p: &Path| -> Box<dyn Snapshotter> {
            if copy {
                Box::new(CopySnapshotter::open(p).unwrap())
            } else {
                Box::new(OverlaySnapshotter::open(p).unwrap())
            }
        };
        let s = open(d.path());
        let top = apply_all(s.as_ref()).pop().unwrap();
        s.prepare_container_volatile("kept", Some(&top)).unwrap();
        s.prepare_container_volatile("torn", Some(&top)).unwrap();
        assert!(matches!(
            s.prepare_container_volatile("kept", Some(&top)),
            Err(SnapshotError::ContainerExists(_))
        ));
        drop(s);
        let meta = d.path().join("containers/torn/meta.json");
        fs::write(&meta, b"").unwrap();
        let s = open(d.path());
        let left: Vec<String> = s
            .list_containers()
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, vec!["kept".to_string()]);
        assert!(!d.path().join("containers/torn").exists());
        s.remove_container("kept").unwrap();
        assert!(s.list_containers().unwrap().is_empty());
    }
}
