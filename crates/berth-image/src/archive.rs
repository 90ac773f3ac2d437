//! Image archives: `docker save` / `docker load` and `docker import`.
//!
//! - [`save`] writes Docker 25+'s format, which is both a docker-archive (`manifest.json`
//!   with `Config` / `RepoTags` / `Layers`, and `repositories`) and an OCI image layout
//!   (`oci-layout`, `index.json`, `blobs/sha256/…`). Layers are written uncompressed, named
//!   by their DiffID, so that the archive is reproducible for a given image.
//! - [`load`] reads a docker-archive (legacy `<id>/layer.tar` or `blobs/sha256/` layout) or an
//!   OCI image layout, as a tar stream optionally compressed with gzip or zstd. The archive is
//!   first spooled into a scratch directory under flat, generated file names (no path from the
//!   archive is ever used on the host file system), with hostile entries refused: absolute or
//!   `..` paths, links pointing outside the archive, device nodes, oversized extension
//!   headers. Every digest is then verified (config = image ID, layer DiffIDs, OCI blob
//!   digests and sizes, file names that carry digests) before anything is registered; on
//!   failure, blobs written by the load are removed again.
//! - [`import`] turns a root file system tarball (plain/gzip/zstd) or a directory into a
//!   one-layer image, with Dockerfile-syntax `changes` (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`,
//!   `USER`, `LABEL`, `EXPOSE`, `VOLUME`, `STOPSIGNAL`, `ONBUILD`) and a commit message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::image_store::{
    decompress, layer_content_size, synthesize_manifest, tar_content_size, ImageId, ImageStore,
    ImageStoreError, LayerInput, LayerRecord, RegisterRequest,
};
use crate::manifest::{
    self, media_types as mt, parse_manifest, ContainerConfig, Descriptor, History, ImageConfig,
    ImageIndex, Manifest, ManifestError, Platform, RootFs,
};
use crate::reference::Reference;
use crate::store::StoreError;
use crate::timeutil;

/// Errors from archive operations.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive is malformed or inconsistent.
    #[error("invalid archive: {0}")]
    Invalid(String),
    /// The archive contains an entry Berth refuses to read.
    #[error("refusing archive entry {entry:?}: {reason}")]
    Hostile {
        /// The entry's name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// Content does not match its digest.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// Reading the archive failed.
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    /// Writing failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageStoreError),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A manifest or config is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An import change line is invalid.
    #[error("{0}")]
    Change(String),
}

impl From<crate::snapshot::SnapshotError> for ArchiveError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        Self::Image(e.into())
    }
}

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

fn io_at<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Longest GNU long name / PAX extension accepted.
const MAX_EXT_HEADER: u64 = 64 * 1024;
/// Largest JSON document read from an archive.
const MAX_JSON: u64 = 16 * 1024 * 1024;
/// Most entries accepted in one archive.
const MAX_ENTRIES: usize = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Spooling an archive

/// An archive's files, spooled under generated names in a scratch directory.
struct Spool {
    dir: tempfile::TempDir,
    files: HashMap<String, PathBuf>,
    links: HashMap<String, String>,
}

/// Cleans an archive path: no absolute paths, no `..`; `.` and empty components dropped.
fn clean_archive_path(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    if s.starts_with('/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("path contains '..'".into()),
            c => out.push(c),
        }
    }
    if out.iter().map(|c| c.len() + 1).sum::<usize>() > 4096 {
        return Err("path too long".into());
    }
    Ok(out.join("/"))
}

/// Resolves a symlink target (relative to the link's directory) lexically inside the archive.
fn resolve_link(link_path: &str, target: &[u8]) -> Result<String, String> {
    let t = std::str::from_utf8(target).map_err(|_| "link target is not UTF-8".to_string())?;
    if t.starts_with('/') {
        return Err(format!("symlink to absolute path {t:?}"));
    }
    let mut comps: Vec<&str> = link_path.split('/').collect();
    comps.pop();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if comps.pop().is_none() {
                    return Err(format!("symlink target {t:?} escapes the archive"));
                }
            }
            c => comps.push(c),
        }
    }
    Ok(comps.join("/"))
}

fn read_limited(r: &mut impl Read, size: u64, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    if size > limit {
        return Err(format!("{what} of {size} bytes is larger than {limit}"));
    }
    let mut v = Vec::with_capacity(size as usize);
    r.take(limit)
        .read_to_end(&mut v)
        .map_err(|e| format!("reading {what}: {e}"))?;
    Ok(v)
}

fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > rest.len() {
            return Err("malformed PAX record length".into());
        }
        let rec = &rest[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or("PAX record without newline")?;
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

impl Spool {
    fn read(store: &ImageStore, reader: impl Read) -> Result<Self> {
        let tmp = store.tmp_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(&tmp)
            .map_err(io_at("create directory", &tmp))?;
        let mut spool = Spool {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let dec = decompress(reader).map_err(ArchiveError::Read)?;
        let mut ar = tar::Archive::new(dec);
        let mut pending_name: Option<Vec<u8>> = None;
        let mut pending_link: Option<Vec<u8>> = None;
        let mut count = 0usize;
        let entries = ar.entries().map_err(ArchiveError::Read)?.raw(true);
        for e in entries {
            let mut e = e.map_err(ArchiveError::Read)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ArchiveError::Invalid(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let header_name = e.header().path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&header_name).into_owned();
            let hostile = |reason: String| ArchiveError::Hostile {
                entry: shown.clone(),
                reason,
            };
            let size = e.header().size().map_err(ArchiveError::Read)?;
            let kind = e.header().entry_type();
            match kind {
                tar::EntryType::GNULongName => {
                    let mut v = read_limited(&mut e, size, MAX_EXT_HEADER, "GNU long name")
                        .map_err(hostile)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    pending_name = Some(v);
                    continue;
                }
                tar::EntryType::GNULongLink => {
                    let mut v = read_limited(&mut e, size, MAX_EXT_HEADER, "GNU long link")
                        .map_err(hostile)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    pending_link = Some(v);
                    continue;
                }
                tar::EntryType::XHeader => {
                    let v = read_limited(&mut e, size, MAX_EXT_HEADER, "PAX header")
                        .map_err(hostile)?;
                    for (k, val) in parse_pax(&v).map_err(hostile)? {
                        match k.as_str() {
                            "path" => pending_name = Some(val),
                            "linkpath" => pending_link = Some(val),
                            _ => {}
                        }
                    }
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    read_limited(&mut e, size, MAX_EXT_HEADER, "PAX global header")
                        .map_err(hostile)?;
                    continue;
                }
                _ => {}
            }
            let raw_name = pending_name.take().unwrap_or(header_name);
            let raw_link = pending_link
                .take()
                .or_else(|| e.header().link_name_bytes().map(|c| c.into_owned()));
            let shown = String::from_utf8_lossy(&raw_name).into_owned();
            let hostile = |reason: String| ArchiveError::Hostile {
                entry: shown.clone(),
                reason,
            };
            let name = clean_archive_path(&raw_name).map_err(hostile)?;
            match kind {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if name.is_empty() {
                        return Err(hostile("a file without a name".into()));
                    }
                    let p = spool.dir.path().join(format!("f{count}"));
                    let mut f = File::create(&p).map_err(io_at("create", &p))?;
                    io::copy(&mut e, &mut f).map_err(ArchiveError::Read)?;
                    spool.links.remove(&name);
                    spool.files.insert(name, p);
                }
                tar::EntryType::Symlink => {
                    let target =
                        raw_link.ok_or_else(|| hostile("symlink without target".into()))?;
                    let resolved = resolve_link(&name, &target).map_err(hostile)?;
                    spool.files.remove(&name);
                    spool.links.insert(name, resolved);
                }
                tar::EntryType::Link => {
                    let target =
                        raw_link.ok_or_else(|| hostile("hard link without target".into()))?;
                    let resolved = clean_archive_path(&target)
                        .map_err(|r| hostile(format!("hard link target: {r}")))?;
                    spool.files.remove(&name);
                    spool.links.insert(name, resolved);
                }
                other => {
                    return Err(hostile(format!(
                        "unsupported entry type {:?}",
                        other.as_byte() as char
                    )));
                }
            }
        }
        Ok(spool)
    }

    /// The spooled file for an archive path, following links inside the archive.
    fn path(&self, name: &str) -> Result<&Path> {
        let mut cur = clean_archive_path(name.as_bytes()).map_err(|r| ArchiveError::Hostile {
            entry: name.to_string(),
            reason: r,
        })?;
        for _ in 0..32 {
            if let Some(p) = self.files.get(&cur) {
                return Ok(p);
            }
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => {
                    return Err(ArchiveError::Invalid(format!(
                        "{name:?} is not in the archive"
                    )))
                }
            }
        }
        Err(ArchiveError::Invalid(format!(
            "{name:?}: too many levels of links"
        )))
    }

    fn contains(&self, name: &str) -> bool {
        self.path(name).is_ok()
    }

    fn open(&self, name: &str) -> Result<File> {
        let p = self.path(name)?;
        File::open(p).map_err(io_at("open", p))
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let mut f = self.open(name)?;
        let size = f.metadata().map_err(ArchiveError::Read)?.len();
        read_limited(&mut f, size, MAX_JSON, name).map_err(ArchiveError::Invalid)
    }
}

/// The hex digest in a `blobs/sha256/<hex>` path, if it is one.
fn blob_path_digest(path: &str) -> Option<Digest> {
    let c = clean_archive_path(path.as_bytes()).ok()?;
    let hex = c.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}

// ---------------------------------------------------------------------------------------------
// Load

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
struct Written(Vec<Digest>);

impl Written {
    fn note(&mut self, d: &Digest, existed: bool) {
        if !existed && !self.0.contains(d) {
            self.0.push(d.clone());
        }
    }
}

/// Loads a docker-archive or an OCI layout archive (tar, optionally gzip/zstd).
pub fn load(store: &ImageStore, reader: impl Read) -> Result<LoadReport> {
    let spool = Spool::read(store, reader)?;
    let mut written = Written::default();
    let res = if spool.contains("manifest.json") {
        load_docker(store, &spool, &mut written)
    } else if spool.contains("index.json") {
        load_oci(store, &spool, &mut written)
    } else {
        Err(ArchiveError::Invalid(
            "neither manifest.json (docker-archive) nor index.json (OCI layout) found".into(),
        ))
    };
    // On failure, drop what this load wrote; on success, drop what no image ended up using
    // (layer blobs of an image that was already here in another form).
    let _ = store.discard_unreferenced(&written.0);
    res
}

#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn load_docker(store: &ImageStore, spool: &Spool, written: &mut Written) -> Result<LoadReport> {
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
        prepared.push((config_bytes, layers, tags));
    }
    let mut report = LoadReport::default();
    for (config_bytes, layers, tags) in prepared {
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
            ..Default::default()
        })?;
        report.images.push(loaded(reg, &tags));
    }
    Ok(report)
}

fn loaded(reg: crate::image_store::Registered, tags: &[Reference]) -> LoadedImage {
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

fn descriptor(media_type: &str, d: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: d.clone(),
        size,
        urls: None,
        annotations: None,
        platform: None,
        artifact_type: None,
    }
}

/// A reader that copies everything read through it into a writer.
struct Tee<'a, R, W> {
    inner: R,
    out: &'a mut W,
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
fn store_uncompressed_layer(
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

fn store_docker_layer(
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
fn read_oci_blob(spool: &Spool, d: &Descriptor) -> Result<Vec<u8>> {
    let path = format!("blobs/sha256/{}", d.digest.hex());
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

fn oci_names(d: &Descriptor) -> Vec<Reference> {
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

fn load_oci(store: &ImageStore, spool: &Spool, written: &mut Written) -> Result<LoadReport> {
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
                let chosen = manifest::select_platform(&inner, &Platform::host())?.clone();
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
        manifest::validate_image(&m, &config)?;
        let mut inputs = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            let path = format!("blobs/sha256/{}", l.digest.hex());
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
            ..Default::default()
        })?;
        report.images.push(loaded(reg, &names));
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Save

/// Writes the images named by `names` (references, IDs or ID prefixes; a repository name
/// without a tag saves all of its tags) as a Docker 25+ save archive to `out`.
pub fn save(store: &ImageStore, names: &[String], out: impl Write) -> Result<()> {
    // image ID -> tags to save with it (familiar strings), in argument order.
    let mut images: Vec<(ImageId, Vec<Reference>)> = Vec::new();
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
                let mut found = false;
                for rec in store.list()? {
                    for t in rec.references() {
                        if t.name() == r.name() && t.tag().is_some() && t.digest().is_none() {
                            add(rec.id.clone(), Some(t));
                            found = true;
                        }
                    }
                }
                if found {
                    continue;
                }
            }
        }
        let res = store.resolve(n)?;
        let tag = res.reference.filter(|r| r.digest().is_none());
        add(res.image.id.clone(), tag);
    }
    write_archive(store, &images, out)
}

/// Writes the image `id` as a save archive naming it `tags` (which the store need not have:
/// BuildKit's docker and oci exporters name what they export).
pub fn save_as(
    store: &ImageStore,
    id: &ImageId,
    tags: &[Reference],
    out: impl Write,
) -> Result<()> {
    write_archive(store, &[(id.clone(), tags.to_vec())], out)
}

fn write_archive(
    store: &ImageStore,
    images: &[(ImageId, Vec<Reference>)],
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
        let mut layer_descs = Vec::new();
        for l in &rec.layers {
            let path = format!("blobs/sha256/{}", l.diff_id.hex());
            let size = if l.digest == l.diff_id {
                let size = store.blobs().size(&l.digest)?;
                if written_blobs.insert(l.diff_id.clone()) {
                    let f = store.blobs().open_blob(&l.digest)?;
                    add_file(&mut b, &path, size, f)?;
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
                    add_file(&mut b, &path, size, tmp)?;
                }
                size
            };
            layer_descs.push(descriptor(mt::OCI_LAYER, &l.diff_id, size));
        }
        let cpath = format!("blobs/sha256/{}", id.hex());
        if written_blobs.insert(id.clone()) {
            add_file(&mut b, &cpath, config_bytes.len() as u64, &config_bytes[..])?;
        }
        let manifest = synthesize_manifest(&config_bytes, &layer_descs);
        let mdigest = Digest::of_bytes(&manifest);
        if written_blobs.insert(mdigest.clone()) {
            add_file(
                &mut b,
                &format!("blobs/sha256/{}", mdigest.hex()),
                manifest.len() as u64,
                &manifest[..],
            )?;
        }
        let mut mdesc = descriptor(mt::OCI_MANIFEST, &mdigest, manifest.len() as u64);
        if tags.is_empty() {
            index_entries.push(mdesc.clone());
        }
        for t in tags {
            let mut a = BTreeMap::new();
            a.insert("io.containerd.image.name".to_string(), t.to_string());
            a.insert(
                "org.opencontainers.image.ref.name".to_string(),
                t.tag().unwrap_or("latest").to_string(),
            );
            mdesc.annotations = Some(a);
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
            layers: layer_descs
                .iter()
                .map(|d| format!("blobs/sha256/{}", d.digest.hex()))
                .collect(),
        });
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

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Invalid(e.to_string()))
}

fn header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> Result<tar::Header> {
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

fn add_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let h = header(path, 0, tar::EntryType::Directory, 0o755)?;
    b.append(&h, io::empty()).map_err(ArchiveError::Read)
}

fn add_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: impl Read,
) -> Result<()> {
    let h = header(path, size, tar::EntryType::Regular, 0o644)?;
    b.append(&h, data).map_err(ArchiveError::Read)
}

fn add_file_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    add_file(b, path, data.len() as u64, data)
}

// ---------------------------------------------------------------------------------------------
// Import

/// Where an import's root file system comes from.
pub enum ImportSource<'a> {
    /// A tar stream (plain, gzip or zstd).
    Tar(Box<dyn Read + 'a>),
    /// A directory, archived as it is (symlinks not followed).
    Directory(PathBuf),
}

/// Options for [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile-syntax changes (`-c`).
    pub changes: Vec<String>,
    /// Commit message (`-m`); default `Imported from <source>`.
    pub message: Option<String>,
    /// The source's name for the default message (`-` for stdin).
    pub source_name: String,
    /// Tag for the new image.
    pub tag: Option<Reference>,
    /// Platform recorded in the config (host by default).
    pub platform: Option<Platform>,
}

/// Imports a root file system as a one-layer image and returns its ID.
pub fn import(
    store: &ImageStore,
    source: ImportSource<'_>,
    opts: &ImportOptions,
) -> Result<ImageId> {
    // Validate the changes before reading anything.
    let container_config = apply_changes(ContainerConfig::default(), &opts.changes)?;
    let mut written = Written::default();
    let res = (|| {
        let (diff_id, size, content) = match source {
            ImportSource::Tar(r) => store_uncompressed_layer(store, r, None, &mut written)?,
            ImportSource::Directory(dir) => {
                let tmp = tempfile::tempfile_in(store.tmp_dir()?).map_err(ArchiveError::Read)?;
                let mut b = tar::Builder::new(io::BufWriter::new(tmp));
                b.follow_symlinks(false);
                append_tree(&mut b, &dir, Path::new(""))?;
                let w = b.into_inner().map_err(ArchiveError::Read)?;
                let mut f = w
                    .into_inner()
                    .map_err(|e| ArchiveError::Read(e.into_error()))?;
                io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(ArchiveError::Read)?;
                store_uncompressed_layer(store, f, None, &mut written)?
            }
        };
        let content = match content {
            Some(c) => c,
            None => layer_content_size(store.blobs().open_blob(&diff_id)?)
                .map_err(ArchiveError::Read)?,
        };
        let (secs, nanos) = timeutil::now();
        let created = timeutil::format_rfc3339_nano(secs, nanos);
        let msg = opts
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                if opts.source_name.is_empty() {
                    "Imported from -".to_string()
                } else {
                    format!("Imported from {}", opts.source_name)
                }
            });
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let mut extra = BTreeMap::new();
        extra.insert(
            "comment".to_string(),
            serde_json::Value::String(msg.clone()),
        );
        extra.insert(
            "docker_version".to_string(),
            serde_json::Value::String(format!("berth-{}", env!("CARGO_PKG_VERSION"))),
        );
        let config = ImageConfig {
            created: Some(created.clone()),
            author: None,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: None,
            variant: platform.variant.clone(),
            config: Some(container_config.clone()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created: Some(created),
                comment: Some(msg),
                ..Default::default()
            }],
            extra,
        };
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| ArchiveError::Invalid(e.to_string()))?;
        let desc = descriptor(mt::OCI_LAYER, &diff_id, size);
        let recs = vec![LayerRecord {
            digest: diff_id.clone(),
            media_type: mt::OCI_LAYER.into(),
            size,
            diff_id: diff_id.clone(),
            unpacked_size: content,
        }];
        store.unpack(&recs)?;
        let manifest = synthesize_manifest(&config_bytes, std::slice::from_ref(&desc));
        let reg = store.register(RegisterRequest {
            manifest,
            config: config_bytes,
            layers: vec![LayerInput {
                descriptor: desc,
                diff_id,
                unpacked_size: Some(content),
            }],
            tags: opts.tag.iter().cloned().collect(),
            ..Default::default()
        })?;
        Ok(reg.id)
    })();
    if res.is_err() {
        let _ = store.discard_unreferenced(&written.0);
    }
    res
}

fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_at("read directory", &dir))?
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_at("read directory", &dir))?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let r = rel.join(e.file_name());
        let full = root.join(&r);
        b.append_path_with_name(&full, &r)
            .map_err(io_at("archive", &full))?;
        let ft = e.file_type().map_err(io_at("stat", &full))?;
        if ft.is_dir() {
            append_tree(b, root, &r)?;
        }
    }
    Ok(())
}

/// Splits a Dockerfile argument string into words, honouring quotes and backslashes.
fn split_words(s: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(ArchiveError::Change(format!("unmatched quote in {s:?}")));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses `k=v k2="v 2"` (or the legacy `k v…` form) into pairs.
fn parse_kv(instr: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let words = split_words(rest)?;
    if words.is_empty() {
        return Err(ArchiveError::Change(format!(
            "{instr} requires at least one argument"
        )));
    }
    if !words[0].contains('=') {
        // Legacy form: the first word is the key, the rest (verbatim) the value.
        let rest = rest.trim_start();
        let key_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let value = rest[key_end..].trim();
        if value.is_empty() && instr == "ENV" {
            return Err(ArchiveError::Change(format!(
                "{instr} must have two arguments"
            )));
        }
        let v = split_words(value)?.join(" ");
        return Ok(vec![(rest[..key_end].to_string(), v)]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ArchiveError::Change(format!(
                "{instr} names can not be blank"
            ))),
        })
        .collect()
}

/// The JSON (exec) form `["a", "b"]`, or the shell form wrapped in `/bin/sh -c`.
fn exec_or_shell(rest: &str) -> Vec<String> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), t.to_string()]
}

fn json_or_words(rest: &str) -> Result<Vec<String>> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Ok(v);
        }
    }
    split_words(t)
}

fn clean_abs_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Applies Dockerfile-syntax change lines (as `docker import -c` / `commit -c`) to a config.
pub fn apply_changes(mut c: ContainerConfig, changes: &[String]) -> Result<ContainerConfig> {
    let mut cmd_set = false;
    for line in changes {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instr, rest) = match line.find(char::is_whitespace) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        let instr_up = instr.to_ascii_uppercase();
        let need = |what: &str| -> Result<()> {
            if rest.is_empty() {
                Err(ArchiveError::Change(format!(
                    "{what} requires at least one argument"
                )))
            } else {
                Ok(())
            }
        };
        match instr_up.as_str() {
            "CMD" => {
                need("CMD")?;
                c.cmd = Some(exec_or_shell(rest));
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                need("ENTRYPOINT")?;
                c.entrypoint = Some(exec_or_shell(rest));
                if !cmd_set {
                    c.cmd = None;
                }
            }
            "ENV" => {
                let env = c.env.get_or_insert_with(Vec::new);
                for (k, v) in parse_kv("ENV", rest)? {
                    env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                }
            }
            "LABEL" => {
                let labels = c.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in parse_kv("LABEL", rest)? {
                    labels.insert(k, v);
                }
            }
            "WORKDIR" => {
                need("WORKDIR")?;
                let w = split_words(rest)?.join(" ");
                let base = c.working_dir.clone().unwrap_or_else(|| "/".into());
                let p = if w.starts_with('/') {
                    w
                } else {
                    format!("{base}/{w}")
                };
                c.working_dir = Some(clean_abs_path(&p));
            }
            "USER" => {
                need("USER")?;
                c.user = Some(rest.to_string());
            }
            "EXPOSE" => {
                need("EXPOSE")?;
                let ports = c.exposed_ports.get_or_insert_with(BTreeMap::new);
                for w in split_words(rest)? {
                    let (p, proto) = match w.split_once('/') {
                        Some((p, proto)) => (p.to_string(), proto.to_ascii_lowercase()),
                        None => (w.clone(), "tcp".to_string()),
                    };
                    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(ArchiveError::Change(format!("invalid proto: {proto}")));
                    }
                    let (lo, hi) = match p.split_once('-') {
                        Some((a, b)) => (a.to_string(), b.to_string()),
                        None => (p.clone(), p.clone()),
                    };
                    let lo: u16 = lo
                        .parse()
                        .map_err(|_| ArchiveError::Change(format!("invalid containerPort: {p}")))?;
                    let hi: u16 = hi
                        .parse()
                        .map_err(|_| ArchiveError::Change(format!("invalid containerPort: {p}")))?;
                    if hi < lo {
                        return Err(ArchiveError::Change(format!("invalid port range: {p}")));
                    }
                    for port in lo..=hi {
                        ports.insert(format!("{port}/{proto}"), serde_json::json!({}));
                    }
                }
            }
            "VOLUME" => {
                need("VOLUME")?;
                let vols = c.volumes.get_or_insert_with(BTreeMap::new);
                for v in json_or_words(rest)? {
                    if v.trim().is_empty() {
                        return Err(ArchiveError::Change(
                            "VOLUME specified can not be an empty string".into(),
                        ));
                    }
                    vols.insert(v, serde_json::json!({}));
                }
            }
            "STOPSIGNAL" => {
                need("STOPSIGNAL")?;
                c.stop_signal = Some(rest.to_string());
            }
            "ONBUILD" => {
                need("ONBUILD")?;
                let trigger = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(trigger.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(ArchiveError::Change(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                let ob = c
                    .extra
                    .entry("OnBuild".to_string())
                    .or_insert_with(|| serde_json::json!([]));
                if !ob.is_array() {
                    *ob = serde_json::json!([]);
                }
                if let Some(a) = ob.as_array_mut() {
                    a.push(serde_json::Value::String(rest.to_string()));
                }
            }
            _ => {
                return Err(ArchiveError::Change(format!(
                    "{instr} is not a valid change command"
                )))
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.env.unwrap(), vec!["B=two words", "C=three words", "A=2"]);
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
        let p = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let archive = tar_of(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", index.as_bytes()),
            (&p(&ndigest), nested.as_bytes()),
            (&p(&mdigest), &manifest),
            (&p(&Digest::of_bytes(config.as_bytes())), config.as_bytes()),
            (&p(&ldesc.digest), &gz),
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
            .remove("example.com/multi:1", false, &|_| false)
            .unwrap();
        assert!(store.blobs().list().unwrap().is_empty());
    }
}
