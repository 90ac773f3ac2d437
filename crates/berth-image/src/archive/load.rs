//! `docker load`: Docker's `manifest.json` archives and OCI layouts (nested indexes, several
//! platforms) into the store.

use super::spool::{blob_path_digest, Spool};
use super::*;

/// One image loaded from an archive.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    /// Its ID.
    pub id: ImageId,
    /// Tags given to it (familiar strings).
    pub tags: Vec<String>,
    /// Tags taken from other images: (familiar tag, previous image).
    pub moved: Vec<(String, ImageId)>,
}

/// What [`load`] did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The images, in archive order.
    pub images: Vec<LoadedImage>,
}

/// Tracks blobs a load wrote, so that a failed load can remove them.
#[derive(Default)]
pub(super) struct Written(pub(super) Vec<Digest>);

impl Written {
    pub(super) fn note(&mut self, d: &Digest, existed: bool) {
        if !existed && !self.0.contains(d) {
            self.0.push(d.clone());
        }
    }
}

/// Loads a docker-archive or an OCI layout archive (tar, optionally gzip/zstd).
pub fn load(store: &ImageStore, reader: impl Read) -> Result<LoadReport> {
    load_platform(store, reader, None)
}

/// [`load`], only the images of `platform` when given (dockerd's `load --platform`, API
/// 1.48: containerd's strict match; the others are skipped, none at all is an error).
pub fn load_platform(
    store: &ImageStore,
    reader: impl Read,
    platform: Option<&Platform>,
) -> Result<LoadReport> {
    let spool = Spool::read(store, reader)?;
    let mut written = Written::default();
    let res = if spool.contains("manifest.json") {
        load_docker(store, &spool, &mut written, platform)
    } else if spool.contains("index.json") {
        load_oci(store, &spool, &mut written, platform)
    } else {
        Err(ArchiveError::Invalid(
            "neither manifest.json (docker-archive) nor index.json (OCI layout) found".into(),
        ))
    };
    let res = res.and_then(|r| match platform {
        Some(p) if r.images.is_empty() => Err(ArchiveError::PlatformNotFound(p.to_string())),
        _ => Ok(r),
    });
    // On failure, drop what this load wrote; on success, drop what no image ended up using
    // (layer blobs of an image that was already here in another form).
    let _ = store.discard_unreferenced(&written.0);
    res
}

/// Whether an image config is of `platform` (any without one).
fn of_platform(config: &ImageConfig, platform: Option<&Platform>) -> bool {
    platform.is_none_or(|p| {
        p.matches_strictly(&Platform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
            variant: config.variant.clone().filter(|v| !v.is_empty()),
            ..Default::default()
        })
    })
}

pub(super) fn load_docker(
    store: &ImageStore,
    spool: &Spool,
    written: &mut Written,
    platform: Option<&Platform>,
) -> Result<LoadReport> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&spool.read_small("manifest.json")?)
            .map_err(|e| ArchiveError::Invalid(format!("manifest.json: {e}")))?;
    // Verify and store everything first, register afterwards.
    let mut prepared = Vec::new();
    for ent in &entries {
        let config_bytes = spool.read_small(&ent.config)?;
        let id = Digest::of_bytes(&config_bytes);
        let named = blob_path_digest(&ent.config).or_else(|| {
            ent.config
                .strip_suffix(".json")
                .and_then(|h| Digest::from_hex(h).ok())
        });
        if let Some(n) = named {
            if n != id {
                return Err(ArchiveError::DigestMismatch {
                    what: format!("config {}", ent.config),
                    expected: n.to_string(),
                    actual: id.to_string(),
                });
            }
        }
        let config = ImageConfig::parse(&config_bytes)?;
        if !of_platform(&config, platform) {
            continue;
        }
        if config.rootfs.diff_ids.len() != ent.layers.len() {
            return Err(ArchiveError::Invalid(format!(
                "{} lists {} layers but its config has {} DiffIDs",
                ent.config,
                ent.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in ent.layers.iter().zip(&config.rootfs.diff_ids) {
            layers.push(store_docker_layer(store, spool, path, diff_id, written)?);
        }
        let mut tags = Vec::new();
        for t in ent.repo_tags.iter().flatten() {
            let r = Reference::parse(t).map_err(|e| {
                ArchiveError::Invalid(format!("invalid tag {t:?} in manifest.json: {e}"))
            })?;
            if r.digest().is_some() {
                return Err(ArchiveError::Invalid(format!("tag {t:?} has a digest")));
            }
            tags.push(r);
        }
        prepared.push((ent, config_bytes, layers, tags));
    }
    let mut report = LoadReport::default();
    let mut loaded = Vec::new();
    for (ent, config_bytes, layers, tags) in prepared {
        let recs: Vec<LayerRecord> = layers
            .iter()
            .map(|(d, size, u)| LayerRecord {
                digest: d.clone(),
                media_type: mt::OCI_LAYER.into(),
                size: *size,
                diff_id: d.clone(),
                unpacked_size: u.unwrap_or(0),
            })
            .collect();
        store.unpack(&recs)?;
        let descs: Vec<Descriptor> = layers
            .iter()
            .map(|(d, s, _)| descriptor(mt::OCI_LAYER, d, *s))
            .collect();
        let manifest = synthesize_manifest(&config_bytes, &descs);
        let reg = store.register(RegisterRequest {
            manifest,
            config: config_bytes,
            layers: layers
                .iter()
                .zip(descs)
                .map(|((d, _, u), desc)| LayerInput {
                    descriptor: desc,
                    diff_id: d.clone(),
                    unpacked_size: *u,
                })
                .collect(),
            tags: tags.clone(),
            keep_tag_time: true,
            ..Default::default()
        })?;
        loaded.push((ent, reg.id.clone()));
        report.images.push(loaded_image(reg, &tags));
    }
    let loaded_ids: Vec<&ImageId> = loaded.iter().map(|(_, id)| id).collect();
    // dockerd's validatedParentLinks and setParentID: a parent the archive holds too, when
    // its history is the image's but for the last entry.
    for (ent, id) in &loaded {
        let Some(parent) = ent
            .parent
            .as_deref()
            .and_then(|p| p.parse::<ImageId>().ok())
        else {
            continue;
        };
        if parent == *id || !loaded_ids.contains(&&parent) {
            continue;
        }
        store.set_parent(id, &parent)?;
    }
    Ok(report)
}

pub(super) fn loaded_image(reg: crate::image_store::Registered, tags: &[Reference]) -> LoadedImage {
    LoadedImage {
        id: reg.id,
        tags: tags.iter().map(|t| t.familiar_string()).collect(),
        moved: reg
            .moved_tags
            .into_iter()
            .map(|(r, id)| (r.familiar_string(), id))
            .collect(),
    }
}

/// A reader that copies everything read through it into a writer.
pub(super) struct Tee<'a, R, W> {
    pub(super) inner: R,
    pub(super) out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Streams a (possibly compressed) layer tar into the blob store as an uncompressed blob whose
/// digest must be `expected` (the DiffID) when given. Returns the digest, the uncompressed size
/// and the content size (`None` when the blob existed already and the stream was not read).
pub(super) fn store_uncompressed_layer(
    store: &ImageStore,
    reader: impl Read,
    expected: Option<&Digest>,
    written: &mut Written,
) -> Result<(Digest, u64, Option<u64>)> {
    if let Some(d) = expected {
        if store.blobs().exists(d) {
            return Ok((d.clone(), store.blobs().size(d)?, None));
        }
    }
    let dec = decompress(reader).map_err(ArchiveError::Read)?;
    let mut w = store.blobs().writer()?;
    let content = {
        let mut tee = Tee {
            inner: dec,
            out: &mut w,
        };
        let n = tar_content_size(&mut tee)
            .map_err(|e| ArchiveError::Invalid(format!("layer is not a valid tar: {e}")))?;
        io::copy(&mut tee, &mut io::sink()).map_err(ArchiveError::Read)?;
        n
    };
    let size = w.written();
    let d = w.commit(expected, None).map_err(|e| match (e, expected) {
        (StoreError::Verify(crate::digest::VerifyError::Digest { expected, actual }), _) => {
            ArchiveError::DigestMismatch {
                what: "layer DiffID".into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            }
        }
        (e, _) => e.into(),
    })?;
    written.note(&d, false);
    Ok((d, size, Some(content)))
}

pub(super) fn store_docker_layer(
    store: &ImageStore,
    spool: &Spool,
    path: &str,
    diff_id: &Digest,
    written: &mut Written,
) -> Result<(Digest, u64, Option<u64>)> {
    // A file named by digest must hash to it (checked on the raw, possibly compressed bytes).
    if let Some(n) = blob_path_digest(path) {
        let (actual, _) = HashingReader::new(spool.open(path)?)
            .finish_draining()
            .map_err(ArchiveError::Read)?;
        if actual != n {
            return Err(ArchiveError::DigestMismatch {
                what: format!("layer {path}"),
                expected: n.to_string(),
                actual: actual.to_string(),
            });
        }
    }
    store_uncompressed_layer(store, spool.open(path)?, Some(diff_id), written)
}

/// Reads a blob of an OCI layout, verifying digest and size.
pub(super) fn read_oci_blob(spool: &Spool, d: &Descriptor) -> Result<Vec<u8>> {
    let path = blob_path(&d.digest);
    if d.size > MAX_JSON {
        return Err(ArchiveError::Invalid(format!(
            "{path}: {} bytes is too large",
            d.size
        )));
    }
    let bytes = spool.read_small(&path)?;
    let actual = Digest::of_bytes(&bytes);
    if actual != d.digest {
        return Err(ArchiveError::DigestMismatch {
            what: path,
            expected: d.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    if bytes.len() as u64 != d.size {
        return Err(ArchiveError::Invalid(format!(
            "{path}: size {} does not match the descriptor's {}",
            bytes.len(),
            d.size
        )));
    }
    Ok(bytes)
}

pub(super) fn oci_names(d: &Descriptor) -> Vec<Reference> {
    let Some(a) = &d.annotations else {
        return Vec::new();
    };
    if let Some(n) = a.get("io.containerd.image.name") {
        if let Ok(r) = Reference::parse(n) {
            return vec![r];
        }
    }
    if let Some(n) = a.get("org.opencontainers.image.ref.name") {
        if n.contains(':') || n.contains('/') {
            if let Ok(r) = Reference::parse(n) {
                if r.digest().is_none() {
                    return vec![r];
                }
            }
        }
    }
    Vec::new()
}

pub(super) fn load_oci(
    store: &ImageStore,
    spool: &Spool,
    written: &mut Written,
    platform: Option<&Platform>,
) -> Result<LoadReport> {
    if spool.contains("oci-layout") {
        let v: serde_json::Value = serde_json::from_slice(&spool.read_small("oci-layout")?)
            .map_err(|e| ArchiveError::Invalid(format!("oci-layout: {e}")))?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(ArchiveError::Invalid(
                "oci-layout without imageLayoutVersion".into(),
            ));
        }
    }
    let index_bytes = spool.read_small("index.json")?;
    let index: ImageIndex = match parse_manifest(None, &index_bytes)? {
        Manifest::Index(_, i) => i,
        Manifest::Image(..) => {
            return Err(ArchiveError::Invalid(
                "index.json is not an image index".into(),
            ))
        }
    };
    // (manifest descriptor, names, index digests kept with the image)
    let mut targets: Vec<(Descriptor, Vec<Reference>, Vec<Digest>)> = Vec::new();
    let mut seen: BTreeMap<Digest, usize> = BTreeMap::new();
    for d in &index.manifests {
        let names = oci_names(d);
        let (m, extra) = match manifest::ManifestKind::from_media_type(&d.media_type) {
            Ok(k) if k.is_index() => {
                let bytes = read_oci_blob(spool, d)?;
                let Manifest::Index(_, inner) = parse_manifest(Some(&d.media_type), &bytes)? else {
                    return Err(ArchiveError::Invalid("nested index is not an index".into()));
                };
                let chosen = match platform {
                    None => manifest::select_platform(&inner, &Platform::host())?.clone(),
                    Some(p) => {
                        let found = inner
                            .manifests
                            .iter()
                            .find(|d| d.platform.as_ref().is_some_and(|dp| p.matches_strictly(dp)));
                        match found {
                            Some(d) => d.clone(),
                            None => continue,
                        }
                    }
                };
                let existed = store.blobs().exists(&d.digest);
                store.blobs().write_bytes(Some(&d.digest), &bytes)?;
                written.note(&d.digest, existed);
                (chosen, vec![d.digest.clone()])
            }
            Ok(_) => (d.clone(), Vec::new()),
            Err(_) => continue, // artifacts, attestations, …
        };
        match seen.get(&m.digest) {
            Some(&i) => {
                for n in names {
                    if !targets[i].1.contains(&n) {
                        targets[i].1.push(n);
                    }
                }
            }
            None => {
                seen.insert(m.digest.clone(), targets.len());
                targets.push((m, names, extra));
            }
        }
    }
    if targets.is_empty() {
        if let Some(p) = platform {
            return Err(ArchiveError::PlatformNotFound(p.to_string()));
        }
        return Err(ArchiveError::Invalid(
            "index.json lists no image manifests".into(),
        ));
    }
    let mut prepared = Vec::new();
    for (md, names, extra) in targets {
        let mbytes = read_oci_blob(spool, &md)?;
        let Manifest::Image(_, m) = parse_manifest(Some(&md.media_type), &mbytes)? else {
            return Err(ArchiveError::Invalid(format!(
                "{} is not an image manifest",
                md.digest
            )));
        };
        let cbytes = read_oci_blob(spool, &m.config)?;
        let config = ImageConfig::parse(&cbytes)?;
        if !of_platform(&config, platform) {
            continue;
        }
        manifest::validate_image(&m, &config)?;
        let mut inputs = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            let path = blob_path(&l.digest);
            let existed = store.blobs().exists(&l.digest);
            if !existed {
                let f = spool.open(&path)?;
                store
                    .blobs()
                    .write_blob_sized(Some(&l.digest), Some(l.size), f)
                    .map_err(|e| match e {
                        StoreError::Verify(crate::digest::VerifyError::Digest {
                            expected,
                            actual,
                        }) => ArchiveError::DigestMismatch {
                            what: path.clone(),
                            expected: expected.to_string(),
                            actual: actual.to_string(),
                        },
                        e => ArchiveError::Invalid(format!("{path}: {e}")),
                    })?;
                written.note(&l.digest, false);
            }
            inputs.push(LayerInput {
                descriptor: l.clone(),
                diff_id: diff_id.clone(),
                unpacked_size: None,
            });
        }
        prepared.push((mbytes, cbytes, inputs, names, extra));
    }
    let mut report = LoadReport::default();
    for (mbytes, cbytes, inputs, names, extra) in prepared {
        let mut recs = Vec::new();
        for i in &inputs {
            recs.push(LayerRecord {
                digest: i.descriptor.digest.clone(),
                media_type: i.descriptor.media_type.clone(),
                size: i.descriptor.size,
                diff_id: i.diff_id.clone(),
                unpacked_size: 0,
            });
        }
        // Unpacking verifies each DiffID.
        store.unpack(&recs).map_err(|e| match e {
            ImageStoreError::Snapshot(crate::snapshot::SnapshotError::DiffIdMismatch {
                expected,
                actual,
            }) => ArchiveError::DigestMismatch {
                what: "layer DiffID".into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            },
            e => e.into(),
        })?;
        let reg = store.register(RegisterRequest {
            manifest: mbytes,
            config: cbytes,
            layers: inputs,
            tags: names.clone(),
            extra_manifests: extra,
            keep_tag_time: true,
            ..Default::default()
        })?;
        report.images.push(loaded_image(reg, &names));
    }
    Ok(report)
}
