//! Pulls from a real `docker-registry` (distribution) seeded with `skopeo copy`.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_image::manifest::{chain_id, Platform};
use berth_image::snapshot::{OverlaySnapshotter, Snapshotter};
use berth_image::{Digest, Reference};
use berth_registry::{Client, LayerEvent, NoProgress, RecordingProgress, RegistryError};
use berth_testkit::skopeo;
use common::*;

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn assert_store_untouched(l: &Local) {
    assert!(
        l.store.list().unwrap().is_empty(),
        "blobs: {:?}",
        l.store.list()
    );
    assert!(l.snap.list().unwrap().is_empty());
    assert!(dir_is_empty(&l.store.root().join("ingest")));
    assert!(dir_is_empty(&l.store.root().join("partial")));
}

/// The flattened tree of the multi-layer image.
fn check_tree(root: &Path) {
    assert_eq!(std::fs::read(root.join("bin/busybox")).unwrap(), busybox());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(!root.join("data/a").exists(), "whiteout .wh.a");
    assert_eq!(std::fs::read(root.join("data/b")).unwrap(), b"b");
    assert!(
        std::fs::symlink_metadata(root.join("data/b2")).is_err(),
        "whiteout .wh.b2 in layer 3"
    );
    assert_eq!(std::fs::read(root.join("data/c")).unwrap(), b"c");
    assert!(!root.join("data/sub/x").exists(), "opaque data/sub");
    assert_eq!(std::fs::read(root.join("data/sub/y")).unwrap(), b"y");
    assert_eq!(
        std::fs::read(root.join("etc/hostname")).unwrap(),
        b"berth\n"
    );
}

#[test]
fn pull_multilayer_with_whiteouts_into_copy_snapshotter() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let img = multilayer_image("amd64");
    img.seed(&reg.host(), "test/busybox:1", None);
    let (l, client) = local_client();
    let r = reference(&reg.host(), "test/busybox:1");
    let rec = RecordingProgress::default();
    let pulled = client
        .pull(&r, &Platform::host(), &l.store, &l.snap, &rec)
        .unwrap();

    assert_eq!(pulled.manifest_digest, img.manifest_digest());
    assert_eq!(pulled.repo_digest, img.manifest_digest());
    assert!(pulled.index.is_none());
    assert_eq!(pulled.manifest_bytes, img.manifest);
    assert_eq!(pulled.config, img.config);
    assert_eq!(pulled.config_digest, img.config_digest());
    let diff_ids: Vec<Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(
        pulled
            .layers
            .iter()
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>(),
        diff_ids
    );
    let top = chain_id(&diff_ids).unwrap();
    assert_eq!(pulled.chain_id.as_ref(), Some(&top));
    check_tree(&l.snap.fs_dir(&top));
    for b in img.blobs() {
        assert!(l.store.exists(&Digest::of_bytes(&b)));
    }
    assert!(dir_is_empty(&l.store.root().join("partial")));
    for layer in &img.layers {
        let ev = rec.for_layer(&layer.digest());
        assert!(ev.contains(&LayerEvent::PullingFsLayer), "{ev:?}");
        assert!(ev.contains(&LayerEvent::DownloadComplete), "{ev:?}");
        assert!(ev.contains(&LayerEvent::PullComplete), "{ev:?}");
        assert!(
            ev.iter()
                .any(|e| matches!(e, LayerEvent::Downloading { .. })),
            "{ev:?}"
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e, LayerEvent::Extracting { .. })),
            "{ev:?}"
        );
    }

    // Again: everything is skipped, and the image is here whole: no layer lines at all, as
    // dockerd prints none for an image it has.
    let rec2 = RecordingProgress::default();
    let again = client
        .pull(&r, &Platform::host(), &l.store, &l.snap, &rec2)
        .unwrap();
    assert_eq!(again.chain_id, pulled.chain_id);
    for layer in &img.layers {
        assert_eq!(rec2.for_layer(&layer.digest()), vec![]);
    }

    // A snapshot present but its blob gone: only the blob is fetched again.
    let d0 = img.layers[0].digest();
    l.store.delete(&d0).unwrap();
    let rec3 = RecordingProgress::default();
    client
        .pull(&r, &Platform::host(), &l.store, &l.snap, &rec3)
        .unwrap();
    assert!(l.store.exists(&d0));
    assert!(!rec3
        .for_layer(&d0)
        .iter()
        .any(|e| matches!(e, LayerEvent::Extracting { .. })));
    // The image is incomplete then: the layers that are here say so.
    for layer in &img.layers[1..] {
        assert_eq!(
            rec3.for_layer(&layer.digest()),
            vec![LayerEvent::AlreadyExists]
        );
    }
}

#[test]
fn pull_into_overlay_snapshotter() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let l = local();
    let root = l.dir.path().join("overlay");
    std::fs::create_dir_all(&root).unwrap();
    require!(
        OverlaySnapshotter::supported(&root),
        "overlayfs not available here"
    );
    let snap = OverlaySnapshotter::open(&root).unwrap();
    let reg = Registry::start(false);
    let img = multilayer_image("amd64");
    img.seed(&reg.host(), "test/busybox:ov", None);
    let client = Client::new(config(l.dir.path())).unwrap();
    let pulled = client
        .pull(
            &reference(&reg.host(), "test/busybox:ov"),
            &Platform::host(),
            &l.store,
            &snap,
            &NoProgress,
        )
        .unwrap();
    let diff_ids: Vec<Digest> = img.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chains = berth_image::manifest::chain_ids(&diff_ids);
    // Layer 2 records the deletion as an overlay whiteout (a 0:0 character device).
    let wh = std::fs::symlink_metadata(snap.diff_dir(&chains[1]).join("data/a")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let target = l.dir.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    snap.mount_readonly(pulled.chain_id.as_ref().unwrap(), &target)
        .unwrap();
    let res = std::panic::catch_unwind(|| check_tree(&target));
    berth_image::snapshot::unmount(&target).unwrap();
    res.unwrap();
}

#[test]
fn pull_index_by_platform_and_digest() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let [amd, arm] = [11, 12].map(|seed| random_image(seed, 64));
    let arm = common::Image::new(arm.layers, "arm64");
    let src = local();
    amd.write_store(&src.store);
    arm.write_store(&src.store);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": arm.manifest_digest().to_string(), "size": arm.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": amd.manifest_digest().to_string(), "size": amd.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }))
    .unwrap();
    let index_digest = Digest::of_bytes(&index);
    let client = Client::new(config(src.dir.path())).unwrap();
    let pushed = src
        .push(
            &client,
            &reference(&reg.host(), "test/multi:1"),
            &index,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(pushed.digest, index_digest);
    let raw = skopeo::inspect_raw(&format!("{}/test/multi:1", reg.host()))
        .ok()
        .stdout;
    assert_eq!(raw.as_bytes(), &index[..]);

    let l = local();
    let multi = reference(&reg.host(), "test/multi:1");
    let p = l.pull(&client, &multi, &platform("linux/amd64")).unwrap();
    assert_eq!(p.manifest_digest, amd.manifest_digest());
    assert_eq!(p.repo_digest, index_digest);
    assert_eq!(p.index.as_ref().unwrap().0, index_digest);
    assert!(l.store.exists(&index_digest));
    let p = l
        .pull(
            &client,
            &Reference::parse(&format!("{}/test/multi@{index_digest}", reg.host())).unwrap(),
            &platform("linux/arm64"),
        )
        .unwrap();
    assert_eq!(p.manifest_digest, arm.manifest_digest());
    let err = l
        .pull(&client, &multi, &platform("linux/s390x"))
        .unwrap_err();
    assert!(err.to_string().contains("no matching manifest"), "{err}");
    // An unknown digest.
    let other = Digest::of_bytes(b"nothing");
    let err = l
        .pull(
            &client,
            &Reference::parse(&format!("{}/test/multi@{other}", reg.host())).unwrap(),
            &Platform::host(),
        )
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ManifestUnknown { .. }),
        "{err}"
    );
}

#[test]
fn manifest_unknown_and_unreachable_errors() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    random_image(1, 4).seed(&reg.host(), "test/busybox:1", None);
    let (l, client) = local_client();
    let err = l
        .pull_ref(&client, &reg.host(), "test/busybox:nope")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "manifest for {}/test/busybox:nope not found: manifest unknown: manifest unknown",
            reg.host()
        )
    );
    assert_store_untouched(&l);

    let port = free_port();
    let start = Instant::now();
    let err = l
        .pull(
            &client,
            &reference(&format!("127.0.0.1:{port}"), "x/y:1"),
            &Platform::host(),
        )
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("registry 127.0.0.1:{port} is unreachable")),
        "{err}"
    );
    assert_store_untouched(&l);
}

#[test]
fn corrupt_truncated_and_missing_blobs_leave_nothing() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let [a, b, c] = [21, 22, 23].map(|seed| random_image(seed, 300));
    a.seed(&reg.host(), "test/corrupt:1", None);
    b.seed(&reg.host(), "test/truncated:1", None);
    c.seed(&reg.host(), "test/missing:1", None);
    // Same size, one byte changed.
    let pa = reg.blob_data(&a.layers[0].digest());
    let mut data = std::fs::read(&pa).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&pa, &data).unwrap();
    // Half the blob.
    let pb = reg.blob_data(&b.layers[0].digest());
    let data = std::fs::read(&pb).unwrap();
    std::fs::write(&pb, &data[..data.len() / 2]).unwrap();
    // Gone.
    std::fs::remove_file(reg.blob_data(&c.layers[0].digest())).unwrap();

    let (l, client) = local_client();
    let pull = |repo: &str| l.pull(&client, &reference(&reg.host(), repo), &Platform::host());
    match pull("test/corrupt:1").unwrap_err() {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, a.layers[0].digest());
            assert_ne!(actual, expected);
        }
        e => panic!("expected a digest mismatch, got {e:?}"),
    }
    assert_store_untouched(&l);
    let err = pull("test/truncated:1").unwrap_err();
    assert!(
        matches!(err, RegistryError::Truncated { .. }),
        "expected truncation, got {err:?}"
    );
    assert_store_untouched(&l);
    let err = pull("test/missing:1").unwrap_err();
    assert!(
        matches!(err, RegistryError::BlobUnknown { ref digest, .. } if digest == &c.layers[0].digest()),
        "expected a missing blob, got {err:?}"
    );
    assert_store_untouched(&l);
}

#[test]
fn diff_id_mismatch_commits_no_snapshot() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let mut img = random_image(31, 16);
    // Lie about the DiffID in the config.
    img.layers[0].diff_id = Digest::of_bytes(b"not the layer");
    let img = common::Image::new(img.layers, "amd64");
    let src = local();
    img.write_store(&src.store);
    let client = Client::new(config(src.dir.path())).unwrap();
    src.push(
        &client,
        &reference(&reg.host(), "test/diffid:1"),
        &img.manifest,
        &NoProgress,
    )
    .unwrap();
    let l = local();
    let err = l
        .pull_ref(&client, &reg.host(), "test/diffid:1")
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DiffIdMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("DiffID mismatch"), "{err}");
    assert!(l.snap.list().unwrap().is_empty());
    assert!(!l.store.exists(&img.manifest_digest()));
    assert!(!l.store.exists(&img.config_digest()));
}

#[test]
fn interrupted_download_resumes_with_range() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let img = random_image(41, 3 * 1024);
    img.seed(&reg.host(), "test/big:1", None);
    let layer = img.layers[0].digest();
    let blob_path = format!("/v2/test/big/blobs/{layer}");
    let cut_done = Arc::new(AtomicBool::new(false));
    let backend = reg.host();
    let (bp, cd) = (blob_path.clone(), cut_done.clone());
    let proxy = TestServer::start(Arc::new(move |req: &Req| {
        let cut = req.method == "GET"
            && req.path == bp
            && req.header("range").is_none()
            && !cd.swap(true, Ordering::SeqCst);
        Action::Forward {
            backend: backend.clone(),
            cut_after: cut.then_some(1024 * 1024),
            delay: Duration::ZERO,
            throttle: None,
            gate: None,
        }
    }));
    let (l, client) = local_client();
    let rec = RecordingProgress::default();
    let pulled = l
        .pull_progress(&client, &reference(&proxy.host(), "test/big:1"), &rec)
        .unwrap();
    assert!(cut_done.load(Ordering::SeqCst));
    let ranged: Vec<String> = proxy
        .requests()
        .iter()
        .filter(|r| r.path == blob_path)
        .filter_map(|r| r.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranged.len(), 1, "{ranged:?}");
    let offset: u64 = ranged[0]
        .strip_prefix("bytes=")
        .unwrap()
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(offset > 0 && offset <= 1024 * 1024, "{offset}");
    assert!(rec
        .for_layer(&layer)
        .iter()
        .any(|e| matches!(e, LayerEvent::Retrying { .. })));
    assert!(l.store.exists(&layer));
    let fs = l.snap.fs_dir(pulled.chain_id.as_ref().unwrap());
    assert_eq!(
        std::fs::metadata(fs.join("file-41")).unwrap().len(),
        3 * 1024 * 1024
    );

    // A partial file left by an earlier (killed) pull is continued, not restarted.
    let l2 = local();
    let partial = l2.store.root().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    let half = img.layers[0].blob.len() / 2;
    std::fs::write(partial.join(layer.hex()), &img.layers[0].blob[..half]).unwrap();
    let before = proxy.requests().len();
    l2.pull_ref(&client, &proxy.host(), "test/big:1").unwrap();
    let reqs = proxy.requests();
    let blob_gets: Vec<&Req> = reqs[before..]
        .iter()
        .filter(|r| r.path == blob_path)
        .collect();
    assert_eq!(blob_gets.len(), 1);
    assert_eq!(
        blob_gets[0].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
    assert!(l2.store.exists(&layer));
    assert!(dir_is_empty(&partial));

    // A partial file with a wrong prefix fails verification and is thrown away; the next
    // pull starts over and succeeds.
    let l3 = local();
    let partial = l3.store.root().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join(layer.hex()), vec![0u8; half]).unwrap();
    let r = reference(&proxy.host(), "test/big:1");
    let err = l3.pull(&client, &r, &Platform::host()).unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(l3.snap.list().unwrap().is_empty());
    assert!(!l3.store.exists(&layer));
    assert!(dir_is_empty(&partial));
    l3.pull(&client, &r, &Platform::host()).unwrap();
}

#[test]
fn mirrors_are_tried_first_and_fall_back() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let primary = Registry::start(false);
    let mirror = Registry::start(false);
    let img = random_image(51, 32);
    img.seed(&mirror.host(), "test/m:1", None);
    let l = local();
    let mut cfg = config(l.dir.path());
    cfg.mirrors.insert(
        primary.host(),
        vec![
            format!("http://127.0.0.1:{}", free_port()), // dead mirror: skipped
            format!("http://{}", mirror.host()),
        ],
    );
    let client = Client::new(cfg).unwrap();
    let p = l.pull_ref(&client, &primary.host(), "test/m:1").unwrap();
    assert_eq!(p.manifest_digest, img.manifest_digest());
    // Only on the primary: the mirror misses, the primary serves it.
    let other = random_image(52, 32);
    other.seed(&primary.host(), "test/only-primary:1", None);
    let p = l
        .pull_ref(&client, &primary.host(), "test/only-primary:1")
        .unwrap();
    assert_eq!(p.manifest_digest, other.manifest_digest());
}

#[test]
fn schema1_is_refused() {
    let fake = TestServer::start(Arc::new(|req: &Req| {
        if req.path == "/v2/" {
            return Action::Respond {
                status: 200,
                headers: vec![],
                body: b"{}".to_vec(),
            };
        }
        Action::Respond {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            )],
            body: br#"{"schemaVersion":1,"name":"old/image","tag":"1","fsLayers":[],"history":[]}"#
                .to_vec(),
        }
    }));
    let (l, client) = local_client();
    let err = l
        .pull_ref(&client, &fake.host(), "old/image:1")
        .unwrap_err();
    assert!(err.to_string().contains("schema 1"), "{err}");
    assert_store_untouched(&l);
}

/// Four layers behind a slow proxy: all four downloads start at once, and each layer is
/// unpacked while its bytes are still arriving (not after the download): the proxy holds the
/// rest of layer 0 (768 KiB) after its first 600 KiB until the pull reports extracting it
/// (reported every 512 KiB the unpacker consumed).
#[test]
fn layers_download_concurrently_and_unpack_while_downloading() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let layers: Vec<common::Layer> = (0..4)
        .map(|i| random_image(90 + i, 768).layers.remove(0))
        .collect();
    let img = common::Image::new(layers, "amd64");
    img.seed(&reg.host(), "test/four:1", None);
    let backend = reg.host();
    let rec = Arc::new(RecordingProgress::default());
    let d0 = img.layers[0].digest();
    let gate = {
        let (rec, d0) = (rec.clone(), d0.clone());
        Gate {
            after: 600 * 1024,
            open: Arc::new(move || {
                rec.all_layers()
                    .iter()
                    .any(|(d, e)| d == &d0 && matches!(e, LayerEvent::Extracting { .. }))
            }),
            timeout: Duration::from_secs(30),
        }
    };
    let d0_path = d0.to_string();
    let proxy = TestServer::start(Arc::new(move |req: &Req| {
        if req.path.contains("/blobs/") && req.method == "GET" {
            Action::Forward {
                backend: backend.clone(),
                cut_after: None,
                delay: Duration::from_millis(1000),
                throttle: Some((32 * 1024, Duration::from_millis(40))),
                gate: req.path.ends_with(&d0_path).then(|| gate.clone()),
            }
        } else {
            forward(&backend)
        }
    }));
    let l = local();
    let mut cfg = config(l.dir.path());
    cfg.max_concurrent_downloads = 4;
    let client = Client::new(cfg).unwrap();
    l.pull_progress(&client, &reference(&proxy.host(), "test/four:1"), &*rec)
        .unwrap();
    let reqs = proxy.requests();
    let starts: Vec<Instant> = img
        .layers
        .iter()
        .map(|layer| {
            reqs.iter()
                .find(|r| r.path.ends_with(&layer.digest().to_string()))
                .expect("layer fetched")
                .at
        })
        .collect();
    // Sequential downloads would start at least 1 s (the proxy's delay) plus a throttled
    // transfer apart; concurrent ones within milliseconds (the margin is for a loaded CI).
    let first = *starts.iter().min().unwrap();
    let last = *starts.iter().max().unwrap();
    assert!(
        last - first < Duration::from_millis(800),
        "layer downloads did not start together: spread {:?}",
        last - first
    );
    // Streaming: layer 0 is being extracted before its download completes.
    let events = rec.all_layers();
    let first_extract = events
        .iter()
        .position(|(d, e)| d == &d0 && matches!(e, LayerEvent::Extracting { .. }))
        .unwrap();
    let complete = events
        .iter()
        .position(|(d, e)| d == &d0 && e == &LayerEvent::DownloadComplete)
        .unwrap();
    assert!(
        first_extract < complete,
        "layer 0 was extracted only after its download"
    );
    assert_eq!(l.snap.list().unwrap().len(), 4);
}

/// Timing of a ~200 MB single-layer pull (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn timing_large_single_layer() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let bb = busybox();
    let mut names = Vec::new();
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    let mut i = 0u64;
    while total < 200 << 20 {
        let mut f = bb.clone();
        f.extend_from_slice(&random_image(i, 64).layers[0].blob);
        total += f.len();
        names.push(format!("f{i}"));
        files.push(f);
        i += 1;
    }
    let entries: Vec<Entry> = names
        .iter()
        .zip(&files)
        .map(|(n, f)| Entry::File(n, f, 0o644))
        .collect();
    let img = common::Image::new(vec![layer_gz(&entries)], "amd64");
    eprintln!(
        "layer: {} MB uncompressed, {} MB compressed",
        total >> 20,
        img.layers[0].blob.len() >> 20
    );
    img.seed(&reg.host(), "test/large:1", None);
    let (l, client) = local_client();
    let t = Instant::now();
    l.pull_ref(&client, &reg.host(), "test/large:1").unwrap();
    eprintln!("pull took {:?}", t.elapsed());
}
