use super::*;

fn one_file_layer(name: &str) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, name, &b"hi"[..]).unwrap();
    let t = b.into_inner().unwrap();
    let d = Digest::of_bytes(&t);
    (t, d)
}

fn set_mark(root: &Path, chain_id: &Digest, mark: Option<&str>) {
    let p = root
        .join("snapshots")
        .join(chain_id.hex())
        .join("meta.json");
    let mut info: SnapshotInfo = fsutil::read_json(&p).unwrap();
    info.unsynced = mark.map(str::to_string);
    fsutil::write_json_atomic(&p, &info).unwrap();
}

#[test]
fn commits_are_marked_until_synced_and_a_reboot_drops_the_marked() {
    let Some(boot) = boot_id() else {
        return; // no boot ID: commits sync at once, nothing is deferred
    };
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("snap");
    for open in [
        |r: &Path| Box::new(OverlaySnapshotter::open(r).unwrap()) as Box<dyn Snapshotter>,
        |r: &Path| Box::new(CopySnapshotter::open(r).unwrap()) as Box<dyn Snapshotter>,
    ] {
        let _ = fs::remove_dir_all(&root);
        let s = open(&root);
        let (t1, d1) = one_file_layer("a");
        let info = s.apply_layer(None, &d1, &mut &t1[..]).unwrap();
        // Marked with this boot (and a per-commit suffix) until the sync thread is done.
        assert!(
            info.unsynced.is_none() || info.unsynced.as_deref().and_then(mark_boot) == Some(boot)
        );
        s.wait_synced();
        // The background sync cleared the mark.
        assert_eq!(s.info(&d1).unwrap().unsynced, None);
        let (t2, d2) = one_file_layer("b");
        let top = s
            .apply_layer(Some(&d1), &d2, &mut &t2[..])
            .unwrap()
            .chain_id;
        s.wait_synced();
        drop(s);

        // Marked in this boot (a process that died before its sync): kept, synced again.
        set_mark(&root, &d1, Some(boot));
        let s = open(&root);
        assert_eq!(s.dropped_on_open(), 0);
        s.wait_synced();
        assert_eq!(s.info(&d1).unwrap().unsynced, None);
        drop(s);

        // Marked in another boot: maybe torn by a power loss, dropped at open.
        set_mark(&root, &top, Some("another-boot"));
        let s = open(&root);
        assert_eq!(s.dropped_on_open(), 1);
        assert!(!s.exists(&top));
        assert!(s.exists(&d1));
        // And it can be unpacked again.
        s.apply_layer(Some(&d1), &d2, &mut &t2[..]).unwrap();
        assert!(s.exists(&top));
        s.wait_synced();
        assert_eq!(s.info(&top).unwrap().unsynced, None);
    }
}
