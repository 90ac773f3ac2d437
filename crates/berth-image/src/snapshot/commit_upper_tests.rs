use super::*;

#[test]
fn commit_upper_dir_makes_a_stackable_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let s = OverlaySnapshotter::open(&d.path().join("snap")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, "base.txt", &b"b"[..]).unwrap();
    let tarb = b.into_inner().unwrap();
    let base = Digest::of_bytes(&tarb);
    s.apply_layer(None, &base, &mut &tarb[..]).unwrap();
    let up = d.path().join("up");
    fs::create_dir_all(&up).unwrap();
    fs::write(up.join("new.txt"), "n").unwrap();
    let diff = Digest::of_bytes(b"the layer's tar");
    let info = s
        .commit_upper_dir(Some(&base), &diff, 1, &up)
        .unwrap()
        .unwrap();
    assert_eq!(info.chain_id, child_chain_id(Some(&base), &diff));
    assert!(!up.exists());
    let lowers = s.overlay_lowers(&info.chain_id).unwrap().unwrap();
    assert_eq!(lowers.len(), 2);
    assert!(lowers[0].join("new.txt").is_file());
    assert!(lowers[1].join("base.txt").is_file());
    // Committing the same layer again keeps the first; a missing parent is refused.
    let up2 = d.path().join("up2");
    fs::create_dir_all(&up2).unwrap();
    let again = s
        .commit_upper_dir(Some(&base), &diff, 1, &up2)
        .unwrap()
        .unwrap();
    assert_eq!(again.chain_id, info.chain_id);
    let ghost = Digest::of_bytes(b"ghost");
    assert!(s.commit_upper_dir(Some(&ghost), &diff, 1, &up2).is_err());
    assert!(CopySnapshotter::open(&d.path().join("copy"))
        .unwrap()
        .commit_upper_dir(None, &diff, 1, &up2)
        .unwrap()
        .is_none());
}
