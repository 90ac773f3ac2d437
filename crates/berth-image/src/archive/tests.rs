use super::spool::{clean_archive_path, parse_pax, resolve_link};
use super::*;

#[test]
fn changes() {
    let c = apply_changes(
        ContainerConfig::default(),
        &[
            r#"CMD ["sh"]"#.into(),
            "ENV A=1 B=\"two words\"".into(),
            "ENV C three words".into(),
            "ENV A=2".into(),
            "WORKDIR /app".into(),
            "WORKDIR sub/../x".into(),
            "USER 1000:1000".into(),
            "LABEL a=b \"c d\"=e".into(),
            "EXPOSE 80 53/udp 8000-8001".into(),
            "VOLUME [\"/data\"]".into(),
            "VOLUME /a /b".into(),
            "STOPSIGNAL SIGTERM".into(),
            "ONBUILD RUN echo hi".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.cmd.as_deref(), Some(&["sh".to_string()][..]));
    // ENV replaces a variable in place, as the builder's ENV (dockerd's `dispatchEnv`).
    assert_eq!(c.env.unwrap(), vec!["A=2", "B=two words", "C=three words"]);
    assert_eq!(c.working_dir.as_deref(), Some("/app/x"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    let l = c.labels.unwrap();
    assert_eq!(l["a"], "b");
    assert_eq!(l["c d"], "e");
    let p: Vec<_> = c.exposed_ports.unwrap().into_keys().collect();
    assert_eq!(p, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    let v: Vec<_> = c.volumes.unwrap().into_keys().collect();
    assert_eq!(v, vec!["/a", "/b", "/data"]);
    assert_eq!(c.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(c.extra["OnBuild"], serde_json::json!(["RUN echo hi"]));

    let c = apply_changes(
        ContainerConfig::default(),
        &["ENTRYPOINT /bin/app --x".into()],
    )
    .unwrap();
    assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c", "/bin/app --x"]);
    for bad in [
        "RUN echo",
        "FROM x",
        "CMD",
        "EXPOSE 80/xyz",
        "ONBUILD FROM x",
        "ENV A",
        "LABEL =x",
        "ENV A=\"x",
    ] {
        assert!(
            apply_changes(ContainerConfig::default(), &[bad.into()]).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        apply_changes(ContainerConfig::default(), &["RUN x".into()])
            .unwrap_err()
            .to_string(),
        "RUN is not a valid change command"
    );
}

#[test]
fn archive_paths() {
    assert_eq!(clean_archive_path(b"./a//b/").unwrap(), "a/b");
    assert!(clean_archive_path(b"../x").is_err());
    assert!(clean_archive_path(b"a/../../x").is_err());
    assert!(clean_archive_path(b"/etc/passwd").is_err());
    assert_eq!(resolve_link("a/b/l", b"../c").unwrap(), "a/c");
    assert_eq!(
        resolve_link("x/layer.tar", b"../y/layer.tar").unwrap(),
        "y/layer.tar"
    );
    assert!(resolve_link("l", b"../../etc").is_err());
    assert!(resolve_link("l", b"/etc/passwd").is_err());
    assert_eq!(
        parse_pax(b"20 path=a/b/c/d/e/f\n").unwrap(),
        vec![("path".to_string(), b"a/b/c/d/e/f".to_vec())]
    );
    assert!(parse_pax(b"99 path=x\n").is_err());
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, d) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *d).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn oci_layout_with_nested_multi_platform_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let layer = tar_of(&[("hello.txt", b"hello world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let diff_id = Digest::of_bytes(&layer);
    let host = Platform::host();
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Cmd":["/hello"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#,
        host.architecture
    );
    let ldesc = descriptor(mt::OCI_LAYER_GZIP, &Digest::of_bytes(&gz), gz.len() as u64);
    let manifest = synthesize_manifest(config.as_bytes(), std::slice::from_ref(&ldesc));
    let mdigest = Digest::of_bytes(&manifest);
    let other = if host.architecture == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    // The other platform's manifest is absent: only the selected one is read.
    let nested = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
            {{"mediaType":"{}","digest":"sha256:{}","size":10,"platform":{{"os":"linux","architecture":"{other}"}}}},
            {{"mediaType":"{}","digest":"{mdigest}","size":{},"platform":{{"os":"linux","architecture":"{}"}}}}]}}"#,
        mt::OCI_INDEX,
        mt::OCI_MANIFEST,
        "e".repeat(64),
        mt::OCI_MANIFEST,
        manifest.len(),
        host.architecture
    );
    let ndigest = Digest::of_bytes(nested.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{ndigest}","size":{},"annotations":{{"io.containerd.image.name":"example.com/multi:1","org.opencontainers.image.ref.name":"1"}}}}]}}"#,
        mt::OCI_INDEX,
        nested.len()
    );
    let archive = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", index.as_bytes()),
        (&blob_path(&ndigest), nested.as_bytes()),
        (&blob_path(&mdigest), &manifest),
        (
            &blob_path(&Digest::of_bytes(config.as_bytes())),
            config.as_bytes(),
        ),
        (&blob_path(&ldesc.digest), &gz),
    ]);
    let report = load(&store, &archive[..]).unwrap();
    assert_eq!(report.images.len(), 1);
    let img = &report.images[0];
    assert_eq!(img.id, Digest::of_bytes(config.as_bytes()));
    assert_eq!(img.tags, vec!["example.com/multi:1"]);
    let rec = store.get(&img.id).unwrap();
    assert_eq!(rec.manifests, vec![mdigest.clone(), ndigest.clone()]);
    assert_eq!(
        rec.layers[0].digest, ldesc.digest,
        "the gzip blob is kept as is"
    );
    assert_eq!(rec.size(), 11);
    assert!(store.snapshotter().unwrap().exists(&diff_id));
    // Removing the image deletes the index blob too.
    store
        .remove("example.com/multi:1", false, &|_| Vec::new())
        .unwrap();
    assert!(store.blobs().list().unwrap().is_empty());
}
