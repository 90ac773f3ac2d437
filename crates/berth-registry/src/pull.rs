//! Pulling an image: resolve, fetch config, download layers in parallel while unpacking them
//! in order.
//!
//! # How layers flow
//!
//! Every layer that is missing from the blob store is downloaded by its own task (at most
//! [`RegistryConfig::max_concurrent_downloads`](crate::RegistryConfig) at once) into a
//! *partial file* `<store root>/partial/<hex>`, hashed on the way. When all bytes are in and
//! the digest matches, the file is fsynced and renamed into `blobs/sha256/<hex>` (same file
//! system, so nothing unverified is ever visible there). A mismatch deletes the partial file;
//! a broken connection leaves it for the next attempt, which resumes with
//! `Range: bytes=<len>-` after re-hashing what is on disk.
//!
//! Unpacking runs at the same time on one thread, in layer order (a snapshot's parent must
//! be committed first). It reads each layer *from its partial file while the download is still
//! writing it* (a "tail" reader that waits on a condition variable for more bytes), so layer 0
//! is decompressed and applied as it arrives, and layer N starts the moment layer N-1 is
//! committed, reading whatever of it has already been downloaded and then following the
//! download. The compressed bytes are read from disk rather than teed in memory so that a
//! download may run arbitrarily far ahead of the unpacker without buffering, and a layer
//! whose blob is already stored is unpacked from the same kind of file.
//!
//! The tail reader reports end-of-file only after the download has verified the whole blob's
//! digest; if verification fails it returns an error instead, so the snapshotter discards the
//! unpacked directory and never commits a snapshot of unverified content. (The snapshotter
//! also checks the DiffID against the verified config.) Layers whose snapshot and blob both
//! exist are skipped; a present snapshot with a missing blob downloads only the blob (the
//! store stays complete for `push` and `save`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use berth_image::digest::Hasher;
use berth_image::manifest::{
    self, parse_manifest, select_platform, Descriptor, ImageConfig, ImageManifest, Manifest,
    Platform,
};
use berth_image::snapshot::{SnapshotError, Snapshotter};
use berth_image::store::BlobStore;
use berth_image::{Digest, Reference};
use futures_util::StreamExt;
use reqwest::header::RANGE;
use reqwest::{Method, StatusCode};

use crate::client::{header_str, partial_dir, ApiFailure, Client, Endpoint, Inner};
use crate::error::{RegistryError, Result};
use crate::progress::{ImageEvent, LayerEvent, Progress};

/// What a pull produced. The blobs (manifest(s), config, layers) are in the blob store and the
/// layer snapshots are committed; recording the image (name → digest) is the caller's job.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference pulled.
    pub reference: Reference,
    /// What the tag or digest resolved to: the index's digest when there is one, else the
    /// manifest's (Docker's `RepoDigests`).
    pub repo_digest: Digest,
    /// The index / manifest list, when the reference named one.
    pub index: Option<(Digest, Vec<u8>, String)>,
    /// The platform-specific image manifest's digest.
    pub manifest_digest: Digest,
    /// Its bytes, exactly as served (and verified).
    pub manifest_bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// The config's digest (the image ID).
    pub config_digest: Digest,
    /// The config's bytes.
    pub config: Vec<u8>,
    /// Layer descriptors with their DiffIDs, base first.
    pub layers: Vec<(Descriptor, Digest)>,
    /// The top layer's chain ID (`None` for an image without layers).
    pub chain_id: Option<Digest>,
}

/// Shared state between a download and the unpacker reading the same file.
#[derive(Default)]
struct Feed {
    state: Mutex<FeedState>,
    cond: Condvar,
}

#[derive(Default)]
struct FeedState {
    file: Option<std::sync::Arc<File>>,
    written: u64,
    /// `Some(Ok)` once the whole blob is verified; `Some(Err)` when the download failed.
    done: Option<std::result::Result<(), FeedError>>,
}

/// Why a layer's file will not grow to its verified end (what its reader reports; the
/// download's own error goes to the pull's caller).
#[derive(Debug, Clone, thiserror::Error)]
enum FeedError {
    /// The download failed (its error's message).
    #[error("{0}")]
    Download(String),
    /// The pull stopped before this layer was downloaded.
    #[error("cancelled")]
    Cancelled,
}

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn set_file(&self, f: std::sync::Arc<File>, written: u64) {
        let mut s = self.lock();
        s.file = Some(f);
        s.written = written;
        self.cond.notify_all();
    }
    fn advance(&self, written: u64) {
        self.lock().written = written;
        self.cond.notify_all();
    }
    fn finish(&self, r: std::result::Result<(), FeedError>) {
        let mut s = self.lock();
        if s.done.is_none() {
            s.done = Some(r);
        }
        self.cond.notify_all();
    }
    fn is_done(&self) -> bool {
        self.lock().done.is_some()
    }
    fn wait_done(&self) {
        let mut s = self.lock();
        while s.done.is_none() {
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Reads a layer from its (possibly still growing) file; EOF only once verified.
struct FeedReader<'a> {
    feed: &'a Feed,
    pos: u64,
    total: u64,
    digest: &'a Digest,
    progress: &'a dyn Progress,
    reported: u64,
    verified_eof: bool,
}

impl<'a> FeedReader<'a> {
    /// A reader of `feed` from its start: `total` bytes of blob `digest`.
    fn new(feed: &'a Feed, total: u64, digest: &'a Digest, progress: &'a dyn Progress) -> Self {
        FeedReader {
            feed,
            pos: 0,
            total,
            digest,
            progress,
            reported: 0,
            verified_eof: false,
        }
    }
}

impl Read for FeedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (file, avail) = {
            let mut s = self.feed.lock();
            loop {
                if s.file.is_some() && s.written > self.pos {
                    break;
                }
                match &s.done {
                    Some(Ok(())) if s.written <= self.pos => {
                        self.verified_eof = true;
                        return Ok(0);
                    }
                    Some(Err(e)) => return Err(io::Error::other(e.clone())),
                    _ => {}
                }
                s = self.feed.cond.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            (s.file.clone().expect("checked above"), s.written)
        };
        let want = buf
            .len()
            .min((avail - self.pos).min(usize::MAX as u64) as usize);
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer file shorter than downloaded",
            ));
        }
        self.pos += n as u64;
        if self.pos - self.reported >= 512 * 1024 || self.pos == self.total {
            self.reported = self.pos;
            self.progress.layer(
                self.digest,
                &LayerEvent::Extracting {
                    current: self.pos,
                    total: self.total,
                },
            );
        }
        Ok(n)
    }
}

/// One layer's plan.
struct LayerPlan {
    desc: Descriptor,
    diff_id: Digest,
    chain_id: Digest,
    download: bool,
    unpack: bool,
}

/// Everything a download needs (borrowed for the duration of the pull).
struct Ctx<'a> {
    inner: &'a Inner,
    reference: &'a Reference,
    /// Endpoints to fetch blobs from, best first.
    endpoints: Vec<Endpoint>,
    store: &'a BlobStore,
    progress: &'a dyn Progress,
    cancel: AtomicBool,
}

impl Client {
    /// Pulls `reference` for `platform` into `store` and `snapshotter`. See the module docs
    /// for how layers are downloaded and unpacked. Blocks until done.
    pub fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        store: &BlobStore,
        snapshotter: &dyn Snapshotter,
        progress: &dyn Progress,
    ) -> Result<PulledImage> {
        let inner = &*self.inner;
        let tag_or_digest = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        progress.image(&ImageEvent::PullingFrom {
            tag: reference
                .tag()
                .map(str::to_string)
                .unwrap_or_else(|| tag_or_digest.clone()),
            repository: reference.path().to_string(),
        });
        let display = reference.familiar_string();

        // Resolve the manifest (mirrors first) and the config.
        let resolved = self.rt.block_on(async {
            let lists = inner.pull_candidates(reference.domain())?;
            let mut last = None;
            let mut found = None;
            for (i, list) in lists.iter().enumerate() {
                let is_last = i + 1 == lists.len();
                let r = async {
                    let ep = inner.endpoint(list).await?;
                    let m = inner
                        .get_manifest(&ep, reference, &tag_or_digest, &display)
                        .await?;
                    Ok::<_, RegistryError>((ep, m))
                }
                .await;
                match r {
                    Ok(v) => {
                        found = Some((i, v));
                        break;
                    }
                    Err(e) if !is_last => {
                        tracing::info!(error = %e, "mirror failed; trying the next endpoint");
                        last = Some(e);
                    }
                    Err(e) => {
                        last = Some(e);
                    }
                }
            }
            let Some((chosen, (ep, (bytes, ctype, digest)))) = found else {
                return Err(last.unwrap_or(RegistryError::Invalid("no endpoint".into())));
            };
            // Blob endpoints: the one that answered, then the later ones (resolved lazily
            // only if needed: resolve now, ignoring failures).
            let mut endpoints = vec![ep.clone()];
            for list in &lists[chosen + 1..] {
                if let Ok(e) = inner.endpoint(list).await {
                    endpoints.push(e);
                }
            }
            let top = parse_manifest(ctype.as_deref(), &bytes)?;
            let top_media = top.kind().media_type().to_string();
            let (index, m_digest, m_bytes, m_media, image) = match top {
                Manifest::Image(_, m) => (None, digest, bytes, top_media, m),
                Manifest::Index(_, idx) => {
                    let desc = select_platform(&idx, platform)?.clone();
                    let (cb, cct, cd) = fetch_with_fallback(&endpoints, |ep| {
                        let d = desc.digest.to_string();
                        let disp = format!("{display} ({platform})");
                        async move { inner.get_manifest(&ep, reference, &d, &disp).await }
                    })
                    .await?;
                    if cd != desc.digest {
                        return Err(RegistryError::DigestMismatch {
                            what: "platform manifest".into(),
                            expected: desc.digest.clone(),
                            actual: cd,
                        });
                    }
                    match parse_manifest(cct.as_deref().or(Some(&desc.media_type)), &cb)? {
                        Manifest::Image(k, m) => (
                            Some((digest, bytes, top_media)),
                            cd,
                            cb,
                            k.media_type().to_string(),
                            m,
                        ),
                        Manifest::Index(..) => {
                            return Err(RegistryError::Manifest(manifest::ManifestError::Invalid(
                                "an index inside an index is not supported".into(),
                            )))
                        }
                    }
                }
            };
            let config = fetch_with_fallback(&endpoints, |ep| {
                let d = image.config.digest.clone();
                let size = image.config.size;
                async move {
                    inner
                        .get_small_blob(&ep, reference, &d, size, "image config")
                        .await
                }
            })
            .await?;
            Ok((endpoints, index, m_digest, m_bytes, m_media, image, config))
        })?;
        let (endpoints, index, manifest_digest, manifest_bytes, media_type, image, config_bytes) =
            resolved;
        let repo_digest = index
            .as_ref()
            .map(|(d, _, _)| d.clone())
            .unwrap_or_else(|| manifest_digest.clone());
        let config = ImageConfig::parse(&config_bytes)?;
        manifest::validate_image(&image, &config)?;
        let plan = make_plan(&image, &config, store, snapshotter);

        let ctx = Ctx {
            inner,
            reference,
            endpoints,
            store,
            progress,
            cancel: AtomicBool::new(false),
        };
        // An image that is here already (its config and every layer): dockerd prints no
        // layer lines for it, only the digest and status (pulling another tag of it).
        let here =
            store.exists(&image.config.digest) && plan.iter().all(|l| !l.download && !l.unpack);
        self.fetch_layers(&ctx, &plan, snapshotter, !here)?;

        // Everything verified and unpacked: record the small blobs.
        store.write_bytes(Some(&image.config.digest), &config_bytes)?;
        store.write_bytes(Some(&manifest_digest), &manifest_bytes)?;
        if let Some((d, b, _)) = &index {
            store.write_bytes(Some(d), b)?;
        }
        // Docker prints the digest after the layers.
        progress.image(&ImageEvent::Resolved {
            digest: repo_digest.clone(),
        });
        let chain_id = plan.last().map(|l| l.chain_id.clone());
        Ok(PulledImage {
            reference: reference.clone(),
            repo_digest,
            index,
            manifest_digest,
            manifest_bytes,
            media_type,
            config_digest: image.config.digest.clone(),
            config: config_bytes,
            layers: plan.into_iter().map(|l| (l.desc, l.diff_id)).collect(),
            chain_id,
        })
    }

    fn fetch_layers(
        &self,
        ctx: &Ctx<'_>,
        plan: &[LayerPlan],
        snapshotter: &dyn Snapshotter,
        say_existing: bool,
    ) -> Result<()> {
        let feeds: Vec<Feed> = plan.iter().map(|_| Feed::default()).collect();
        let mut jobs = Vec::new();
        for (i, l) in plan.iter().enumerate() {
            let d = &l.desc.digest;
            if !l.download && !l.unpack {
                if say_existing {
                    ctx.progress.layer(d, &LayerEvent::AlreadyExists);
                }
                feeds[i].finish(Ok(()));
                continue;
            }
            ctx.progress.layer(d, &LayerEvent::PullingFsLayer);
            if l.download {
                jobs.push(i);
            } else {
                // Unpack from the stored blob.
                let f = ctx.store.open_blob(d)?;
                feeds[i].set_file(std::sync::Arc::new(f), l.desc.size);
                feeds[i].finish(Ok(()));
                ctx.progress.layer(d, &LayerEvent::DownloadComplete);
            }
        }
        let n = ctx.inner.config.max_concurrent_downloads.max(1);
        for &i in jobs.iter().skip(n) {
            ctx.progress
                .layer(&plan[i].desc.digest, &LayerEvent::Waiting);
        }

        let (dl_results, unpack_result) = std::thread::scope(|s| {
            let unpacker = s.spawn(|| unpack_all(ctx, plan, &feeds, snapshotter));
            let dl: Vec<(usize, Result<()>)> = self.rt.block_on(
                futures_util::stream::iter(jobs.iter().copied())
                    .map(|i| {
                        let feed = &feeds[i];
                        let desc = &plan[i].desc;
                        async move {
                            let r = download(ctx, desc, feed).await;
                            if let Err(e) = &r {
                                feed.finish(Err(FeedError::Download(e.to_string())));
                                // Nothing worth resuming: do not leave an empty file.
                                let p = partial_dir(ctx.store).join(desc.digest.hex());
                                if std::fs::metadata(&p).is_ok_and(|m| m.len() == 0) {
                                    let _ = std::fs::remove_file(&p);
                                }
                                if !matches!(e, RegistryError::Cancelled) {
                                    ctx.cancel.store(true, Ordering::SeqCst);
                                }
                            }
                            (i, r)
                        }
                    })
                    .buffer_unordered(n)
                    .collect(),
            );
            // Nothing may be left waiting.
            for f in &feeds {
                f.finish(Err(FeedError::Cancelled));
            }
            let up = unpacker
                .join()
                .unwrap_or_else(|_| Err((0, RegistryError::Invalid("unpacker panicked".into()))));
            (dl, up)
        });

        // The error of the lowest layer wins; at the same layer the download's (it is the
        // cause, e.g. a digest mismatch, of the unpacker's read error).
        let mut best: Option<(usize, u8, RegistryError)> = None;
        let mut consider = |i: usize, rank: u8, e: RegistryError| {
            if matches!(e, RegistryError::Cancelled) {
                return;
            }
            if best
                .as_ref()
                .is_none_or(|(bi, br, _)| (i, rank) < (*bi, *br))
            {
                best = Some((i, rank, e));
            }
        };
        for (i, r) in dl_results {
            if let Err(e) = r {
                consider(i, 0, e);
            }
        }
        if let Err((i, e)) = unpack_result {
            consider(i, 1, e);
        }
        match best {
            Some((_, _, e)) => Err(e),
            None if ctx.cancel.load(Ordering::SeqCst) => Err(RegistryError::Cancelled),
            None => Ok(()),
        }
    }
}

fn make_plan(
    image: &ImageManifest,
    config: &ImageConfig,
    store: &BlobStore,
    snapshotter: &dyn Snapshotter,
) -> Vec<LayerPlan> {
    let chains = config.chain_ids();
    image
        .layers
        .iter()
        .zip(config.rootfs.diff_ids.iter())
        .zip(chains)
        .map(|((desc, diff_id), chain_id)| LayerPlan {
            download: !store.exists(&desc.digest),
            unpack: !snapshotter.exists(&chain_id),
            desc: desc.clone(),
            diff_id: diff_id.clone(),
            chain_id,
        })
        .collect()
}

/// Tries `f` on each endpoint in order, returning the first success or the first error.
async fn fetch_with_fallback<T, F, Fut>(endpoints: &[Endpoint], f: F) -> Result<T>
where
    F: Fn(Endpoint) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut first_err = None;
    for ep in endpoints {
        match f(ep.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::debug!(endpoint = %ep.base, error = %e, "fetch failed");
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or(RegistryError::Invalid("no endpoint".into())))
}

/// Unpacks the layers in order. Errors carry the layer index.
fn unpack_all(
    ctx: &Ctx<'_>,
    plan: &[LayerPlan],
    feeds: &[Feed],
    snapshotter: &dyn Snapshotter,
) -> std::result::Result<(), (usize, RegistryError)> {
    for (i, l) in plan.iter().enumerate() {
        if !l.unpack {
            continue;
        }
        let digest = &l.desc.digest;
        if snapshotter.exists(&l.chain_id) {
            ctx.progress.layer(digest, &LayerEvent::PullComplete);
            continue;
        }
        if ctx.cancel.load(Ordering::SeqCst) {
            return Err((i, RegistryError::Cancelled));
        }
        let parent = if i == 0 {
            None
        } else {
            Some(&plan[i - 1].chain_id)
        };
        let mut reader = FeedReader::new(&feeds[i], l.desc.size, digest, ctx.progress);
        let res = snapshotter.apply_layer(parent, &l.diff_id, &mut reader);
        let fail = |e: RegistryError| {
            // Let this layer's download finish so its error (the likely cause) is known,
            // then stop the others.
            feeds[i].wait_done();
            ctx.cancel.store(true, Ordering::SeqCst);
            Err((i, e))
        };
        match res {
            Ok(_) => {
                if !reader.verified_eof {
                    // The decompressor stopped before the end of the blob: check the rest
                    // (and the digest) now; undo the snapshot if it does not verify.
                    if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
                        let _ = snapshotter.remove(&l.chain_id);
                        return fail(RegistryError::io("reading layer", digest.to_string())(e));
                    }
                }
                ctx.progress.layer(digest, &LayerEvent::PullComplete);
            }
            Err(SnapshotError::DiffIdMismatch { expected, actual }) => {
                return fail(RegistryError::DiffIdMismatch {
                    layer: digest.clone(),
                    expected,
                    actual,
                })
            }
            Err(e) => return fail(e.into()),
        }
    }
    Ok(())
}

/// Opens and locks the partial file for `digest`, making sure the locked inode is still the
/// one at the path (another puller may have finished or removed it meanwhile).
async fn open_partial(ctx: &Ctx<'_>, digest: &Digest) -> Result<Option<File>> {
    let dir = partial_dir(ctx.store);
    std::fs::create_dir_all(&dir).map_err(RegistryError::io("create directory", &dir))?;
    let path = dir.join(digest.hex());
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(RegistryError::io("open", &path))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    if ctx.cancel.load(Ordering::SeqCst) {
                        return Err(RegistryError::Cancelled);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(RegistryError::io("lock", &path)(e.into())),
            }
        }
        if ctx.store.exists(digest) {
            return Ok(None);
        }
        let ours = file.metadata().map_err(RegistryError::io("stat", &path))?;
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => return Ok(Some(file)),
            _ => continue,
        }
    }
}

/// Downloads one blob into the store (see the module docs).
async fn download(ctx: &Ctx<'_>, desc: &Descriptor, feed: &Feed) -> Result<()> {
    if ctx.cancel.load(Ordering::SeqCst) {
        return Err(RegistryError::Cancelled);
    }
    let digest = &desc.digest;
    let size = desc.size;
    let path = partial_dir(ctx.store).join(digest.hex());
    let Some(file) = open_partial(ctx, digest).await? else {
        let f = ctx.store.open_blob(digest)?;
        feed.set_file(std::sync::Arc::new(f), size);
        feed.finish(Ok(()));
        ctx.progress.layer(digest, &LayerEvent::DownloadComplete);
        return Ok(());
    };
    let mut have = file
        .metadata()
        .map_err(RegistryError::io("stat", &path))?
        .len();
    if have > size {
        file.set_len(0)
            .map_err(RegistryError::io("truncate", &path))?;
        have = 0;
    }
    // Re-hash what an earlier attempt left.
    let mut hasher = Hasher::new();
    if have > 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < have {
            let want = buf.len().min((have - off) as usize);
            let n = file
                .read_at(&mut buf[..want], off)
                .map_err(RegistryError::io("read", &path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        have = off;
    }
    let file = std::sync::Arc::new(file);
    feed.set_file(file.clone(), have);
    let mut ep_idx = 0;
    let mut failures = 0u32;
    let mut reported = 0u64;
    let mut notified = have;
    let mut attempt = 0u32;
    while have < size {
        if ctx.cancel.load(Ordering::SeqCst) {
            return Err(RegistryError::Cancelled);
        }
        let ep = &ctx.endpoints[ep_idx];
        let url = ep.url(&format!("/v2/{}/blobs/{}", ctx.reference.path(), digest));
        let range = format!("bytes={have}-");
        let sent = ctx
            .inner
            .get_pull(ep, ctx.reference.path(), &url, &|r| {
                if have > 0 {
                    r.header(RANGE, range.as_str())
                } else {
                    r
                }
            })
            .await;
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_transient() && ep_idx + 1 < ctx.endpoints.len() && have == 0 => {
                ep_idx += 1;
                continue;
            }
            Err(e) if e.is_transient() && failures < ctx.inner.config.download_retries => {
                failures += 1;
                backoff(failures).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut skip = 0u64;
        match resp.status() {
            StatusCode::OK => {
                match resp.content_length() {
                    Some(l) if l < size => {
                        return Err(RegistryError::Truncated {
                            digest: digest.clone(),
                            got: l,
                            expected: size,
                        })
                    }
                    Some(l) if l > size => {
                        return Err(RegistryError::TooLarge {
                            digest: digest.clone(),
                            expected: size,
                        })
                    }
                    _ => {}
                }
                // The server ignored the range: skip what is already on disk.
                skip = have;
            }
            StatusCode::PARTIAL_CONTENT => {
                let cr = header_str(resp.headers(), "content-range").unwrap_or_default();
                let (start, total) =
                    parse_content_range(&cr).ok_or_else(|| RegistryError::Protocol {
                        registry: ep.host.clone(),
                        message: format!("bad Content-Range {cr:?} for blob {digest}"),
                    })?;
                if start != have {
                    return Err(RegistryError::Protocol {
                        registry: ep.host.clone(),
                        message: format!(
                            "asked for blob {digest} from byte {have}, got a range from {start}"
                        ),
                    });
                }
                if let Some(t) = total {
                    if t < size {
                        return Err(RegistryError::Truncated {
                            digest: digest.clone(),
                            got: t,
                            expected: size,
                        });
                    }
                    if t > size {
                        return Err(RegistryError::TooLarge {
                            digest: digest.clone(),
                            expected: size,
                        });
                    }
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(RegistryError::Truncated {
                    digest: digest.clone(),
                    got: have,
                    expected: size,
                })
            }
            StatusCode::NOT_FOUND if have == 0 && ep_idx + 1 < ctx.endpoints.len() => {
                ep_idx += 1;
                continue;
            }
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::BlobUnknown {
                    repository: ctx.reference.name(),
                    digest: digest.clone(),
                })
            }
            _ => {
                let f = ApiFailure::read(&Method::GET, resp).await;
                let e = f.into_error(&ep.host);
                if e.is_transient() && failures < ctx.inner.config.download_retries {
                    failures += 1;
                    backoff(failures).await;
                    continue;
                }
                return Err(e);
            }
        }
        let before = have;
        let stream_err = loop {
            if ctx.cancel.load(Ordering::SeqCst) {
                return Err(RegistryError::Cancelled);
            }
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let mut data = &chunk[..];
                    if skip > 0 {
                        let k = (skip as usize).min(data.len());
                        skip -= k as u64;
                        data = &data[k..];
                    }
                    if data.is_empty() {
                        continue;
                    }
                    if have + data.len() as u64 > size {
                        drop(resp);
                        let _ = std::fs::remove_file(&path);
                        return Err(RegistryError::TooLarge {
                            digest: digest.clone(),
                            expected: size,
                        });
                    }
                    file.write_all_at(data, have)
                        .map_err(RegistryError::io("write", &path))?;
                    hasher.update(data);
                    have += data.len() as u64;
                    // Wake the unpacker for whole batches, not for every network chunk.
                    if have - notified >= FEED_BATCH || have == size {
                        notified = have;
                        feed.advance(have);
                    }
                    if have - reported >= 256 * 1024 || have == size {
                        reported = have;
                        ctx.progress.layer(
                            digest,
                            &LayerEvent::Downloading {
                                current: have,
                                total: size,
                            },
                        );
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        if notified != have {
            notified = have;
            feed.advance(have);
        }
        if have == size {
            break;
        }
        // Interrupted (error or early end): resume with a Range request.
        if have == before {
            failures += 1;
        }
        if failures > ctx.inner.config.download_retries || (stream_err.is_none() && have == before)
        {
            return match stream_err {
                Some(e) => Err(RegistryError::Http {
                    registry: ep.host.clone(),
                    context: format!("downloading blob {digest}"),
                    source: e,
                }),
                None => Err(RegistryError::Truncated {
                    digest: digest.clone(),
                    got: have,
                    expected: size,
                }),
            };
        }
        attempt += 1;
        tracing::info!(%digest, offset = have, attempt, error = ?stream_err, "blob download interrupted; resuming");
        ctx.progress.layer(
            digest,
            &LayerEvent::Retrying {
                attempt,
                offset: have,
            },
        );
        backoff(attempt.min(3)).await;
    }

    ctx.progress.layer(digest, &LayerEvent::VerifyingChecksum);
    let actual = hasher.finish();
    if &actual != digest {
        let _ = std::fs::remove_file(&path);
        return Err(RegistryError::DigestMismatch {
            what: format!("layer {digest}"),
            expected: digest.clone(),
            actual,
        });
    }
    file.sync_all().map_err(RegistryError::io("fsync", &path))?;
    let dest = ctx.store.blob_path(digest);
    std::fs::rename(&path, &dest).map_err(RegistryError::io("rename", &dest))?;
    if let Some(dir) = dest.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(RegistryError::io("fsync", dir))?;
    }
    feed.finish(Ok(()));
    ctx.progress.layer(digest, &LayerEvent::DownloadComplete);
    debug_assert!(feed.is_done());
    Ok(())
}

/// Downloaded bytes between wake-ups of the unpacker reading the same file.
const FEED_BATCH: u64 = 64 * 1024;

async fn backoff(n: u32) {
    let ms = (100u64 << n.min(5)).min(2000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// `bytes 100-199/1000` → (100, Some(1000)); `bytes 100-199/*` → (100, None).
fn parse_content_range(s: &str) -> Option<(u64, Option<u64>)> {
    let rest = s.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }

    #[test]
    fn feed_reader_waits_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::sync::Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap(),
        );
        let feed = Feed::default();
        let d = Digest::of_bytes(b"x");
        let np = crate::progress::NoProgress;
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let mut r = FeedReader::new(&feed, 10, &d, &np);
                let mut out = Vec::new();
                r.read_to_end(&mut out).map(|_| (out, r.verified_eof))
            });
            feed.set_file(f.clone(), 0);
            for i in 0..10u8 {
                f.write_all_at(&[b'a' + i], i as u64).unwrap();
                feed.advance(i as u64 + 1);
                std::thread::sleep(Duration::from_millis(2));
            }
            feed.finish(Ok(()));
            let (out, eof) = h.join().unwrap().unwrap();
            assert_eq!(out, b"abcdefghij");
            assert!(eof);
        });
        // A failed download is an error, not EOF.
        let feed = Feed::default();
        feed.set_file(f.clone(), 3);
        feed.finish(Err(FeedError::Download("digest mismatch".into())));
        let mut r = FeedReader::new(&feed, 10, &d, &np);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("digest mismatch"));
        assert_eq!(out, b"abc");
    }
}
