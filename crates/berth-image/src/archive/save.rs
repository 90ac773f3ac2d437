//! `docker save`: images as an archive that both Docker and OCI tools load.

use super::*;

/// The images a save writes: each image ID with the tags to name it by, in argument order.
pub type SaveSelection = Vec<(ImageId, Vec<Reference>)>;

/// Writes the images named by `names` (references, IDs or ID prefixes; a repository name
/// without a tag saves all of its tags) as a Docker 25+ save archive to `out`.
pub fn save(store: &ImageStore, names: &[String], out: impl Write) -> Result<()> {
    save_selected(store, &select_for_save(store, names)?, out)
}

/// Writes what [`select_for_save`] chose.
pub fn save_selected(store: &ImageStore, images: &SaveSelection, out: impl Write) -> Result<()> {
    write_archive(store, images, None, out)
}

/// Resolves the names of a save (see [`save`]) before anything is written: an unknown name is
/// an error here.
pub fn select_for_save(store: &ImageStore, names: &[String]) -> Result<SaveSelection> {
    let mut images: SaveSelection = Vec::new();
    let mut add = |id: ImageId, tag: Option<Reference>| {
        let pos = match images.iter().position(|(i, _)| *i == id) {
            Some(p) => p,
            None => {
                images.push((id, Vec::new()));
                images.len() - 1
            }
        };
        if let Some(t) = tag {
            if !images[pos].1.contains(&t) {
                images[pos].1.push(t);
            }
        }
    };
    for n in names {
        // A bare repository name saves every tag of it.
        if let Ok(r) = Reference::parse_normalized(n) {
            if r.tag().is_none() && r.digest().is_none() {
                let tags = store.repository_tags(&r)?;
                if !tags.is_empty() {
                    for (t, id) in tags {
                        add(id, Some(t));
                    }
                    continue;
                }
            }
        }
        let res = store.resolve(n)?;
        let tag = res.reference.filter(|r| r.digest().is_none());
        add(res.image.id.clone(), tag);
    }
    Ok(images)
}

/// Writes the image `id` as a save archive naming it `tags` (which the store need not have:
/// BuildKit's docker and oci exporters name what they export).
pub fn save_as(
    store: &ImageStore,
    id: &ImageId,
    tags: &[Reference],
    out: impl Write,
) -> Result<()> {
    write_archive(store, &[(id.clone(), tags.to_vec())], None, out)
}

/// Writes the images `ids` (one per platform) as one multi-platform image: `index.json`
/// points at an OCI image index (named `tags`) whose manifests carry their platforms.
pub fn save_index(
    store: &ImageStore,
    ids: &[ImageId],
    tags: &[Reference],
    out: impl Write,
) -> Result<()> {
    let images: Vec<(ImageId, Vec<Reference>)> =
        ids.iter().map(|id| (id.clone(), Vec::new())).collect();
    write_archive(store, &images, Some(tags), out)
}

/// The annotations that name an `index.json` entry `t` (containerd's and OCI's).
fn name_annotations(t: &Reference) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("io.containerd.image.name".to_string(), t.to_string()),
        (
            "org.opencontainers.image.ref.name".to_string(),
            t.tag().unwrap_or("latest").to_string(),
        ),
    ])
}

/// `index_tags`: `Some` writes one image index of all the images (named by those tags)
/// instead of one `index.json` entry per image.
fn write_archive(
    store: &ImageStore,
    images: &[(ImageId, Vec<Reference>)],
    index_tags: Option<&[Reference]>,
    out: impl Write,
) -> Result<()> {
    let mut b = tar::Builder::new(out);
    let mut written_blobs = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut manifest_json = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    add_dir(&mut b, "blobs/")?;
    add_dir(&mut b, "blobs/sha256/")?;
    for (id, tags) in images {
        let rec = store.get(id)?;
        let config_bytes = store.config_bytes(id)?;
        // An image's config and layers carry its creation time (as dockerd's graphdriver
        // store writes them); the archive's other entries the epoch (reproducible).
        let created = u64::try_from(rec.created).unwrap_or(0);
        let mut layer_descs = Vec::new();
        for l in &rec.layers {
            let path = blob_path(&l.diff_id);
            let size = if l.digest == l.diff_id {
                let size = store.blobs().size(&l.digest)?;
                if written_blobs.insert(l.diff_id.clone()) {
                    let f = store.blobs().open_blob(&l.digest)?;
                    add_file_at(&mut b, &path, size, f, created)?;
                }
                size
            } else {
                // A compressed blob: decompress into a scratch file to know its size.
                let tmp = tempfile::tempfile_in(store.tmp_dir()?).map_err(ArchiveError::Read)?;
                let mut w = io::BufWriter::new(tmp);
                let blob = store.blobs().open_blob(&l.digest)?;
                let mut hr = HashingReader::new(decompress(blob).map_err(ArchiveError::Read)?);
                let size = io::copy(&mut hr, &mut w).map_err(ArchiveError::Read)?;
                let (h, _) = hr.into_parts();
                let d = h.finish();
                if d != l.diff_id {
                    return Err(ArchiveError::DigestMismatch {
                        what: format!("stored layer {}", l.digest),
                        expected: l.diff_id.to_string(),
                        actual: d.to_string(),
                    });
                }
                if written_blobs.insert(l.diff_id.clone()) {
                    let mut tmp = w
                        .into_inner()
                        .map_err(|e| ArchiveError::Read(e.into_error()))?;
                    io::Seek::seek(&mut tmp, io::SeekFrom::Start(0)).map_err(ArchiveError::Read)?;
                    add_file_at(&mut b, &path, size, tmp, created)?;
                }
                size
            };
            layer_descs.push(descriptor(mt::OCI_LAYER, &l.diff_id, size));
        }
        let cpath = blob_path(id);
        if written_blobs.insert(id.clone()) {
            let len = config_bytes.len() as u64;
            add_file_at(&mut b, &cpath, len, &config_bytes[..], created)?;
        }
        let manifest = synthesize_manifest(&config_bytes, &layer_descs);
        let mdigest = Digest::of_bytes(&manifest);
        if written_blobs.insert(mdigest.clone()) {
            add_file_bytes(&mut b, &blob_path(&mdigest), &manifest)?;
        }
        let mut mdesc = descriptor(mt::OCI_MANIFEST, &mdigest, manifest.len() as u64);
        if index_tags.is_some() {
            let config: ImageConfig = serde_json::from_slice(&config_bytes)
                .map_err(|e| ArchiveError::Invalid(e.to_string()))?;
            mdesc.platform = Some(config.platform());
        }
        if tags.is_empty() {
            index_entries.push(mdesc.clone());
        }
        for t in tags {
            mdesc.annotations = Some(name_annotations(t));
            index_entries.push(mdesc.clone());
            if let Some(top) = rec.layers.last() {
                repositories.entry(t.familiar_name()).or_default().insert(
                    t.tag().unwrap_or("latest").to_string(),
                    top.diff_id.hex().to_string(),
                );
            }
        }
        manifest_json.push(DockerManifestEntry {
            config: cpath,
            repo_tags: if tags.is_empty() {
                None
            } else {
                Some(tags.iter().map(|t| t.familiar_string()).collect())
            },
            layers: layer_descs.iter().map(|d| blob_path(&d.digest)).collect(),
            // dockerd's validatedParentLinks: a parent only when it is saved too.
            parent: rec
                .parent
                .as_ref()
                .filter(|p| *p != id && images.iter().any(|(i, _)| i == *p))
                .map(|p| p.to_string()),
        });
    }
    if let Some(tags) = index_tags {
        let nested = ImageIndex {
            schema_version: 2,
            media_type: Some(mt::OCI_INDEX.to_string()),
            artifact_type: None,
            manifests: std::mem::take(&mut index_entries),
            subject: None,
            annotations: None,
        };
        let bytes = to_json(&nested)?;
        let d = Digest::of_bytes(&bytes);
        add_file_bytes(&mut b, &blob_path(&d), &bytes)?;
        let desc = descriptor(mt::OCI_INDEX, &d, bytes.len() as u64);
        if tags.is_empty() {
            index_entries.push(desc.clone());
        }
        for t in tags {
            let mut desc = desc.clone();
            desc.annotations = Some(name_annotations(t));
            index_entries.push(desc);
        }
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(mt::OCI_INDEX.to_string()),
        artifact_type: None,
        manifests: index_entries,
        subject: None,
        annotations: None,
    };
    add_file_bytes(&mut b, "index.json", &to_json(&index)?)?;
    add_file_bytes(&mut b, "manifest.json", &to_json(&manifest_json)?)?;
    add_file_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !repositories.is_empty() {
        add_file_bytes(&mut b, "repositories", &to_json(&repositories)?)?;
    }
    let mut out = b.into_inner().map_err(ArchiveError::Read)?;
    out.flush().map_err(ArchiveError::Read)?;
    Ok(())
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Invalid(e.to_string()))
}

pub(super) fn header(
    path: &str,
    size: u64,
    kind: tar::EntryType,
    mode: u32,
) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(ArchiveError::Read)?;
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

pub(super) fn add_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let h = header(path, 0, tar::EntryType::Directory, 0o755)?;
    b.append(&h, io::empty()).map_err(ArchiveError::Read)
}

pub(super) fn add_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    add_file_at(b, path, size, data, 0)
}

/// [`add_file`] with a modification time (seconds since the epoch).
fn add_file_at<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
    mtime: u64,
) -> Result<()> {
    let mut h = header(path, size, tar::EntryType::Regular, 0o644)?;
    h.set_mtime(mtime);
    h.set_cksum();
    b.append(&h, data).map_err(ArchiveError::Read)
}

pub(super) fn add_file_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
) -> Result<()> {
    add_file(b, path, data.len() as u64, data)
}
