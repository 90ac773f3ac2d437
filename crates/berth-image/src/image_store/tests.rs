use super::*;

fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// The OCI descriptor of a layer blob.
fn layer_descriptor(digest: &Digest, blob: &[u8]) -> Descriptor {
    Descriptor {
        media_type: mt::OCI_LAYER.into(),
        digest: digest.clone(),
        size: blob.len() as u64,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    }
}

/// Registers an image made of the given layer tars; returns its ID.
fn add_image(s: &ImageStore, layers: &[Vec<u8>], tags: &[&str], label: &str) -> ImageId {
    let mut descs = Vec::new();
    let mut inputs = Vec::new();
    let mut diffs = Vec::new();
    for l in layers {
        let d = s.blobs().write_bytes(None, l).unwrap();
        let desc = layer_descriptor(&d, l);
        descs.push(desc.clone());
        inputs.push(LayerInput {
            descriptor: desc,
            diff_id: d.clone(),
            unpacked_size: None,
        });
        diffs.push(format!("\"{d}\""));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","created":"2024-01-0{}T00:00:00Z","config":{{"Labels":{{"l":"{label}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        1 + label.len() % 9,
        diffs.join(",")
    );
    let manifest = synthesize_manifest(config.as_bytes(), &descs);
    s.register(RegisterRequest {
        manifest,
        config: config.into_bytes(),
        layers: inputs,
        tags: tags.iter().map(|t| Reference::parse(t).unwrap()).collect(),
        ..Default::default()
    })
    .unwrap()
    .id
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    (d, s)
}

fn nobody(_: &ImageId) -> Vec<ImageUser> {
    Vec::new()
}

fn never(_: &ImageId) -> bool {
    false
}

#[test]
fn register_resolve_and_tags() {
    let (_d, s) = store();
    let base = tar_with(&[("a", b"hello")]);
    let id = add_image(
        &s,
        std::slice::from_ref(&base),
        &["busybox", "example.com/x/y:1"],
        "a",
    );
    let rec = s.get(&id).unwrap();
    assert_eq!(rec.size(), 5);
    assert_eq!(
        rec.familiar_tags(),
        vec!["busybox:latest", "example.com/x/y:1"]
    );
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "library/busybox",
        &id.to_string(),
        id.hex(),
        &id.hex()[..12],
        &id.hex()[..3],
        &format!("sha256:{}", &id.hex()[..12]),
        "example.com/x/y:1",
    ] {
        assert_eq!(s.resolve(name).unwrap().image.id, id, "{name}");
    }
    assert!(s.resolve("busybox").unwrap().reference.is_some());
    assert!(s.resolve(&id.hex()[..12]).unwrap().by_id());
    let e = s.resolve("nothere").unwrap_err();
    assert_eq!(e.to_string(), "No such image: nothere:latest");
    assert!(e.is_not_found());
    assert!(s.resolve("busybox:2").is_err());
    assert!(matches!(
        s.resolve("UPPER"),
        Err(ImageStoreError::Reference(_))
    ));
    // Tag moves between images.
    let other = add_image(&s, &[tar_with(&[("b", b"x")])], &[], "bb");
    let r = s
        .tag(other.hex(), &Reference::parse("busybox").unwrap())
        .unwrap();
    assert_eq!(r.moved_tags.len(), 1);
    assert_eq!(s.resolve("busybox").unwrap().image.id, other);
    assert!(s.get(&other).unwrap().last_tag_time.is_some());
    assert_eq!(
        s.get(&id).unwrap().familiar_tags(),
        vec!["example.com/x/y:1"]
    );
    assert!(s
        .tag("busybox", &Reference::parse(&format!("a@{id}")).unwrap())
        .is_err());
    // Untag.
    assert_eq!(
        s.untag(&Reference::parse("busybox").unwrap()).unwrap(),
        other
    );
    assert!(s.untag(&Reference::parse("busybox").unwrap()).is_err());
}

#[test]
fn ambiguous_prefix() {
    let (_d, s) = store();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(add_image(
            &s,
            &[tar_with(&[("f", format!("{i}").as_bytes())])],
            &[],
            &"x".repeat(i % 5),
        ));
    }
    // Some single-hex-digit prefix is shared by two of 40 images.
    let mut counts: HashMap<char, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.hex().chars().next().unwrap()).or_default() += 1;
    }
    let (c, _) = counts.iter().find(|(_, n)| **n > 1).unwrap();
    assert!(matches!(
        s.resolve(&c.to_string()),
        Err(ImageStoreError::Ambiguous(_))
    ));
}

#[test]
fn rmi_rules() {
    let (_d, s) = store();
    let shared = tar_with(&[("base", b"base layer")]);
    let top = tar_with(&[("top", b"top")]);
    let a = add_image(&s, std::slice::from_ref(&shared), &["a:1", "a:2"], "a");
    let b = add_image(&s, &[shared.clone(), top.clone()], &["b"], "b");
    // Two tags: removing by name only untags.
    let out = s.remove("a:1", false, &nobody).unwrap();
    assert_eq!(out, vec![DeleteItem::Untagged("a:1".into())]);
    assert!(s.get(&a).is_ok());
    // Referenced in several repositories: by ID refused without force.
    s.tag("a:2", &Reference::parse("other:x").unwrap()).unwrap();
    let e = s.remove(&a.hex()[..12], false, &nobody).unwrap_err();
    assert!(
        e.to_string()
            .contains("must be forced) - image is referenced in multiple repositories"),
        "{e}"
    );
    // In use: refused.
    let used = |i: &ImageId| {
        let user = ImageUser {
            container: "c0ffee".repeat(10),
            running: false,
            mount_only: false,
        };
        if *i == a {
            vec![user]
        } else {
            vec![]
        }
    };
    s.untag(&Reference::parse("other:x").unwrap()).unwrap();
    let e = s.remove("a:2", false, &used).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("conflict: unable to remove repository reference \"a:2\" (must force)"),
        "{e}"
    );
    let e = s.remove(a.hex(), false, &used).unwrap_err();
    assert!(e.to_string().contains("being used"), "{e}");
    // Last reference by name: untag and delete; the shared layer blob stays for b.
    let out = s.remove("a:2", false, &nobody).unwrap();
    assert_eq!(out[0], DeleteItem::Untagged("a:2".into()));
    assert_eq!(out[1], DeleteItem::Deleted(a.to_string()));
    assert!(s.get(&a).is_err());
    let shared_d = Digest::of_bytes(&shared);
    assert!(s.blobs().exists(&shared_d));
    assert!(!s.blobs().exists(&a));
    // By ID with one tag: untag + delete, now the shared blob goes too.
    let out = s.remove(&b.hex()[..5], false, &nobody).unwrap();
    assert_eq!(out[0], DeleteItem::Untagged("b:latest".into()));
    assert_eq!(out[1], DeleteItem::Deleted(b.to_string()));
    assert!(!s.blobs().exists(&shared_d));
    assert!(
        s.blobs().list().unwrap().is_empty(),
        "{:?}",
        s.blobs().list()
    );
    assert!(s.list().unwrap().is_empty());
    // Force removes every reference.
    let c = add_image(&s, std::slice::from_ref(&top), &["c", "d"], "c");
    let out = s.remove(c.hex(), true, &nobody).unwrap();
    assert_eq!(out.len(), 4, "{out:?}"); // 2 untagged, the image, its layer
    assert!(s
        .remove("nothing", true, &nobody)
        .unwrap_err()
        .is_not_found());
}

#[test]
fn list_filters_and_prune() {
    let (_d, s) = store();
    let a = add_image(&s, &[tar_with(&[("a", b"1")])], &["app:1"], "x");
    let b = add_image(&s, &[tar_with(&[("b", b"22")])], &[], "yy");
    let c = add_image(
        &s,
        &[tar_with(&[("c", b"333")])],
        &["tool:2", "app:3"],
        "zzz",
    );
    let ids = |opts: ListOptions| -> Vec<String> {
        s.list_summaries(&opts)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    let f = |k: &str, v: &str| ListOptions {
        filters: vec![(k.into(), v.into())],
        ..Default::default()
    };
    assert_eq!(ids(ListOptions::default()).len(), 3);
    assert_eq!(ids(f("dangling", "true")), vec![b.to_string()]);
    assert_eq!(ids(f("dangling", "false")).len(), 2);
    assert_eq!(ids(f("reference", "app")).len(), 2);
    let sum = s.list_summaries(&f("reference", "app:*")).unwrap();
    let cs = sum.iter().find(|i| i.id == c.to_string()).unwrap();
    assert_eq!(cs.repo_tags, vec!["app:3"]);
    assert_eq!(ids(f("reference", "to*")), vec![c.to_string()]);
    assert_eq!(ids(f("label", "l=yy")), vec![b.to_string()]);
    assert_eq!(ids(f("label", "l")).len(), 3);
    assert!(s.list_summaries(&f("bogus", "1")).is_err());
    // created: a=2024-01-02, b=2024-01-03, c=2024-01-04
    assert_eq!(
        ids(f("before", "tool:2")),
        vec![b.to_string(), a.to_string()]
    );
    assert_eq!(ids(f("since", "app:1")), vec![c.to_string(), b.to_string()]);
    // Disk usage.
    let du = s.disk_usage(&|i| *i == a).unwrap();
    assert_eq!(du.layers_size, 6);
    assert_eq!(du.reclaimable(), 5);
    // Prune dangling.
    let p = s.prune(false, &never).unwrap();
    assert_eq!(p.deleted[0], DeleteItem::Deleted(b.to_string()));
    assert_eq!(p.space_reclaimed, 2);
    // Prune all but the used one.
    let p = s.prune(true, &|i| *i == a).unwrap();
    assert_eq!(p.space_reclaimed, 3);
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn history_and_inspect() {
    let (_d, s) = store();
    let id = add_image(&s, &[tar_with(&[("a", b"abc")])], &["h"], "l");
    let h = s.history(&id).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].id, id.to_string());
    assert_eq!(h[0].size, 3);
    assert_eq!(h[0].tags, vec!["h:latest"]);
    let i = s.inspect(&id).unwrap();
    let v = serde_json::to_value(&i).unwrap();
    assert_eq!(v["Id"], id.to_string());
    assert_eq!(v["RepoTags"][0], "h:latest");
    assert_eq!(v["Config"]["Labels"]["l"], "l");
    assert!(v["Config"]["Cmd"].is_null());
    assert_eq!(v["RootFS"]["Type"], "layers");
    assert_eq!(v["Size"], 3);
    assert_eq!(v["Created"], "2024-01-02T00:00:00Z");
}

#[test]
fn register_rejects_inconsistent_input() {
    let (_d, s) = store();
    let l = tar_with(&[("a", b"1")]);
    let d = Digest::of_bytes(&l);
    let desc = layer_descriptor(&d, &l);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
    );
    let manifest = synthesize_manifest(config.as_bytes(), std::slice::from_ref(&desc));
    let req = RegisterRequest {
        manifest,
        config: config.into_bytes(),
        layers: vec![LayerInput {
            descriptor: desc,
            diff_id: d.clone(),
            unpacked_size: None,
        }],
        ..Default::default()
    };
    // Layer blob missing.
    assert!(s.register(req.clone()).is_err());
    s.blobs().write_bytes(None, &l).unwrap();
    let mut bad = req.clone();
    bad.layers[0].diff_id = Digest::of_bytes(b"x");
    assert!(s.register(bad).is_err());
    let mut bad = req.clone();
    bad.config = b"{}".to_vec();
    assert!(s.register(bad).is_err());
    assert!(s.list().unwrap().is_empty());
    s.register(req).unwrap();
    assert_eq!(s.list().unwrap().len(), 1);
}

#[test]
fn concurrent_tagging_keeps_every_update() {
    let (d, s) = store();
    let id = add_image(&s, &[tar_with(&[("a", b"1")])], &[], "a");
    let root = d.path().to_path_buf();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let s = ImageStore::open(root).unwrap();
                for j in 0..5 {
                    s.tag(id.hex(), &Reference::parse(&format!("t{i}:{j}")).unwrap())
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.get(&id).unwrap().repo_tags.len(), 40);
}

#[test]
fn gc_removes_only_unreferenced_content() {
    let (_d, s) = store();
    let l = tar_with(&[("a", b"kept")]);
    let id = add_image(&s, std::slice::from_ref(&l), &["kept"], "a");
    let rec = s.get(&id).unwrap();
    s.unpack(&rec.layers).unwrap();
    // Leftovers of an interrupted load: a blob and a snapshot nobody references.
    let orphan = tar_with(&[("b", b"orphan")]);
    let od = s.blobs().write_bytes(None, &orphan).unwrap();
    s.snapshotter()
        .unwrap()
        .apply_layer(None, &od, &mut &orphan[..])
        .unwrap();
    assert_eq!(s.gc().unwrap(), 2);
    assert!(!s.blobs().exists(&od));
    assert!(!s.snapshotter().unwrap().exists(&od));
    assert!(s.blobs().exists(&rec.layers[0].digest));
    assert!(s.snapshotter().unwrap().exists(&rec.layers[0].diff_id));
    assert_eq!(s.gc().unwrap(), 0);
    // A stray temporary index file from a crash does not disturb anything.
    fs::write(s.root().join("images/.index.json.tmp-1-2"), b"{garbage").unwrap();
    assert_eq!(s.resolve("kept").unwrap().image.id, id);
}

/// Changes the recorded metadata of snapshot `id` of the store at `root` behind its back.
fn edit_snapshot_meta(
    root: &Path,
    id: &Digest,
    edit: impl FnOnce(&mut crate::snapshot::SnapshotInfo),
) {
    let meta = root
        .join("snapshotter/snapshots")
        .join(id.hex())
        .join("meta.json");
    let mut info = fsutil::read_json(&meta).unwrap();
    edit(&mut info);
    fsutil::write_json_atomic(&meta, &info).unwrap();
}

#[test]
fn snapshots_dropped_after_a_reboot_are_unpacked_again_from_blobs() {
    let (d, s) = store();
    let l1 = tar_with(&[("a", b"base")]);
    let l2 = tar_with(&[("b", b"top")]);
    let id = add_image(&s, &[l1, l2], &["img"], "a");
    let rec = s.get(&id).unwrap();
    let top = s.unpack(&rec.layers).unwrap().unwrap();
    s.snapshotter().unwrap().wait_synced();
    drop(s);
    // As if the machine lost power before the top layer reached the disk.
    edit_snapshot_meta(d.path(), &top, |info| {
        info.unsynced = Some("a-boot-before-this-one".into())
    });
    let s = ImageStore::open(d.path()).unwrap();
    let sn = s.snapshotter().unwrap();
    assert_eq!(sn.dropped_on_open(), 1);
    assert!(sn.exists(&top), "the dropped layer is unpacked again");
    let lowers = sn.overlay_lowers(&top);
    if let Some(lowers) = lowers {
        let lowers = lowers.unwrap();
        assert_eq!(fs::read(lowers[0].join("b")).unwrap(), b"top");
    }
    sn.wait_synced();
    assert_eq!(sn.info(&top).unwrap().unsynced, None);
}

#[test]
fn register_takes_the_content_size_the_unpacker_counted() {
    let (d, s) = store();
    let l = tar_with(&[("a", b"12345"), ("b", b"678")]);
    let diff = s.blobs().write_bytes(None, &l).unwrap();
    let info = s
        .snapshotter()
        .unwrap()
        .apply_layer(None, &diff, &mut &l[..])
        .unwrap();
    assert_eq!(info.content_size, Some(8));
    s.snapshotter().unwrap().wait_synced();
    // A recognisable value: register must take it instead of reading the blob again.
    edit_snapshot_meta(d.path(), &diff, |info| info.content_size = Some(4242));
    let id = add_image(&s, std::slice::from_ref(&l), &[], "a");
    assert_eq!(s.get(&id).unwrap().layers[0].unpacked_size, 4242);
    // Without a snapshot, the blob is read.
    let (_d2, s2) = store();
    let id = add_image(&s2, &[l], &[], "a");
    assert_eq!(s2.get(&id).unwrap().layers[0].unpacked_size, 8);
}

#[test]
fn glob() {
    assert!(path_match("busybox", "busybox"));
    assert!(path_match("busy*", "busybox"));
    assert!(!path_match("*", "a/b"));
    assert!(path_match("*/*", "a/b"));
    assert!(path_match("b?sybox:[l]atest", "busybox:latest"));
    assert!(path_match("[^a]x", "bx"));
    assert!(!path_match("[^a]x", "ax"));
    assert!(path_match("[a-c]", "b"));
    assert!(!path_match("[", "a"));
}

#[test]
fn content_size_counts_files_and_symlinks() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("d/").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_path("d/l").unwrap();
    h.set_link_name("target").unwrap();
    h.set_size(0);
    h.set_cksum();
    b.append(&h, io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("d/f").unwrap();
    h.set_size(10);
    h.set_cksum();
    b.append(&h, &[0u8; 10][..]).unwrap();
    let t = b.into_inner().unwrap();
    assert_eq!(layer_content_size(&t[..]).unwrap(), 16);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &t).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(layer_content_size(&gz[..]).unwrap(), 16);
}
