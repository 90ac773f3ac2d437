//! The step cache: records, keys, `--cache-from` images, the blobs and records a build
//! publishes at its end, `builder prune` and the clean-up after a crashed daemon.
//!
//! A step's key is `sha256(parent state ID, cache text)`; its record is
//! `<data-root>/buildcache/steps/<key>.json` (config bytes + layer records). A hit needs its
//! layer blobs to still exist: a pruned blob is a miss, never a wrong hit.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_image::image_store::{ImageStore, LayerRecord};
use berth_image::manifest::{ContainerConfig, ImageConfig};
use berth_image::store::PendingBlob;
use berth_image::Digest;
use serde::{Deserialize, Serialize};

use super::error::{self, Result};
use super::state::State;
use crate::fsops::io_at;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CacheRecord {
    config: String,
    layers: Vec<LayerRecord>,
}

impl CacheRecord {
    /// The record of `state`, whose config encodes as `config` (the bytes of its ID; JSON,
    /// so UTF-8).
    pub fn new(config: &[u8], state: &State) -> CacheRecord {
        CacheRecord {
            config: String::from_utf8_lossy(config).into_owned(),
            layers: state.layers.clone(),
        }
    }
}

/// The build cache directory.
pub fn cache_dir(store: &ImageStore) -> PathBuf {
    store.root().join("buildcache")
}

/// Where the record of a step made from `parent` by `text` lives.
pub(crate) fn record_path(store: &ImageStore, parent: &Digest, text: &str) -> PathBuf {
    let key = Digest::of_bytes(format!("berth-build-cache-v1\n{parent}\n{text}").as_bytes());
    cache_dir(store)
        .join("steps")
        .join(format!("{}.json", key.hex()))
}

/// The directory of a `RUN --mount=type=cache` with this id.
pub(crate) fn mount_dir(store: &ImageStore, id: &str) -> PathBuf {
    cache_dir(store)
        .join("mounts")
        .join(Digest::of_bytes(id.as_bytes()).hex())
}

/// The state a record names, if it parses and its blobs all exist.
pub(crate) fn load(store: &ImageStore, p: &Path) -> Option<State> {
    let rec: CacheRecord = berth_image::fsutil::read_json(p).ok()?;
    let config = ImageConfig::parse(rec.config.as_bytes()).ok()?;
    if config.rootfs.diff_ids.len() != rec.layers.len() {
        return None;
    }
    for (l, d) in rec.layers.iter().zip(&config.rootfs.diff_ids) {
        if &l.diff_id != d || !store.blobs().exists(&l.digest) {
            return None;
        }
    }
    Some(State {
        id: Digest::of_bytes(rec.config.as_bytes()),
        config,
        layers: rec.layers,
        base: None,
    })
}

/// Writes a cache record: temp file + rename, without fsync. A record lost or torn by a
/// power failure reads as a miss (it must parse, and its blobs must exist), never as a hit.
pub(crate) fn write_record(p: &Path, rec: &CacheRecord) -> io::Result<()> {
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir)?;
    }
    // A name of its own: two builds may write the same record at once.
    let tmp = p.with_extension(format!("tmp-{}", berth_util::id::random_hex(4)));
    fs::write(&tmp, serde_json::to_vec(rec).map_err(io::Error::other)?)?;
    fs::rename(&tmp, p).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// A `--cache-from` image.
pub(crate) struct CacheSource {
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
}

/// A step taken from a `--cache-from` image, as Docker's classic builder does: an image
/// whose history and layers start with the parent state's, and whose next history entry
/// was made by the same instruction (`created_by`), gives that entry (and its layer) on top
/// of the parent with the config the step computes.
pub(crate) fn from_cache_sources(
    sources: &[CacheSource],
    parent: &State,
    created_by: &str,
    cc: &ContainerConfig,
) -> Option<State> {
    let ph = &parent.config.history;
    let pd = &parent.config.rootfs.diff_ids;
    for src in sources {
        let h = &src.config.history;
        let d = &src.config.rootfs.diff_ids;
        if h.len() <= ph.len() || d.len() < pd.len() || h[..ph.len()] != ph[..] {
            continue;
        }
        if d[..pd.len()] != pd[..] || src.layers.len() != d.len() {
            continue;
        }
        let next = &h[ph.len()];
        if next.created_by.as_deref() != Some(created_by) {
            continue;
        }
        let mut config = parent.config.clone();
        let mut layers = parent.layers.clone();
        if !next.empty_layer {
            let Some(l) = src.layers.get(pd.len()) else {
                continue;
            };
            if l.diff_id != d[pd.len()] {
                continue;
            }
            config.rootfs.diff_ids.push(l.diff_id.clone());
            layers.push(l.clone());
        }
        config.created = next.created.clone();
        config.config = Some(cc.clone());
        config.history.push(next.clone());
        return State::new(config, layers).ok().map(|(s, _)| s);
    }
    None
}

/// What a build's steps made that becomes durable at its end: layer (and config, manifest)
/// blobs, then the steps' cache records (a record never names a blob that a power failure
/// could lose).
#[derive(Default)]
pub(crate) struct Pending {
    blobs: Vec<PendingBlob>,
    records: Vec<(PathBuf, CacheRecord)>,
}

impl Pending {
    pub fn blob(&mut self, blob: PendingBlob) {
        self.blobs.push(blob);
    }

    pub fn record(&mut self, path: PathBuf, rec: CacheRecord) {
        self.records.push((path, rec));
    }

    /// Adds `bytes` as a blob.
    pub fn bytes(&mut self, store: &ImageStore, bytes: &[u8]) -> Result<()> {
        let mut w = store
            .blobs()
            .writer()
            .map_err(error::blobs("writing a blob"))?;
        let path = store.blobs().root().join("ingest");
        w.write_all(bytes)
            .map_err(io_at("writing a blob in", &path))?;
        self.blobs
            .push(w.finish_pending().map_err(error::blobs("writing a blob"))?);
        Ok(())
    }

    pub fn extend(&mut self, other: Pending) {
        self.blobs.extend(other.blobs);
        self.records.extend(other.records);
    }

    /// Publishes the blobs (fsynced at once), then writes the records.
    pub fn publish(&mut self, store: &ImageStore) -> Result<()> {
        let t0 = std::time::Instant::now();
        let n = self.blobs.len();
        store
            .blobs()
            .publish(std::mem::take(&mut self.blobs))
            .map_err(error::blobs("writing layers"))?;
        for (p, rec) in std::mem::take(&mut self.records) {
            write_record(&p, &rec).map_err(io_at("writing the cache record", &p))?;
        }
        tracing::debug!("{n} layer blobs published in {:?}", t0.elapsed());
        Ok(())
    }
}

/// The steps of one build by cache record, shared by its stages: a step made earlier in the
/// build is a hit for an identical step of another stage (its record is written only when
/// the build ends), and a stage reaching a step another stage is making waits for it rather
/// than making it twice — as dockerd's sequential classic builder finds the first in its
/// cache.
#[derive(Default)]
pub(crate) struct StepMemo {
    slots: std::sync::Mutex<std::collections::HashMap<PathBuf, Slot>>,
    cv: std::sync::Condvar,
}

enum Slot {
    Making,
    Made(Box<State>),
}

/// A claim on a step being made ([`StepMemo::claim`]); dropped without [`Claim::made`] (the
/// step failed), the step is free again for a waiting stage to make.
pub(crate) struct Claim<'m> {
    memo: &'m StepMemo,
    key: Option<PathBuf>,
}

impl Claim<'_> {
    /// The step is made: stages waiting for it, and later ones, get `state`.
    pub fn made(mut self, state: &State) {
        if let Some(k) = self.key.take() {
            self.memo
                .lock()
                .insert(k, Slot::Made(Box::new(state.clone())));
            self.memo.cv.notify_all();
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.memo.lock().remove(&k);
            self.memo.cv.notify_all();
        }
    }
}

impl StepMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of step `key` made in this build (waiting while another stage makes it), or
    /// a claim to make it.
    pub fn claim(&self, key: &Path) -> std::result::Result<State, Claim<'_>> {
        let mut g = self.lock();
        loop {
            match g.get(key) {
                Some(Slot::Made(st)) => return Ok(State::clone(st)),
                Some(Slot::Making) => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                None => {
                    g.insert(key.to_path_buf(), Slot::Making);
                    return Err(Claim {
                        memo: self,
                        key: Some(key.to_path_buf()),
                    });
                }
            }
        }
    }
}

/// Removes work directories (and their mounts) that builds of a daemon which is no longer
/// running left in the data root's `tmp` (a crash mid-step).
pub fn cleanup_stale(store: &ImageStore) {
    // Layer blobs a crashed build left pending in ingest/ (named `<pid>-…`).
    if let Ok(rd) = fs::read_dir(store.blobs().root().join("ingest")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if pid_gone(name.split('-').next()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let Ok(tmp) = store.tmp_dir() else { return };
    let Ok(rd) = fs::read_dir(&tmp) else { return };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("build-")
            .or_else(|| name.strip_prefix("from-"))
        else {
            continue;
        };
        if !pid_gone(rest.split('-').next()) {
            continue;
        }
        let dir = e.path();
        let prefix = dir.to_string_lossy().into_owned();
        let mut mounts: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = berth_image::snapshot::unmount(Path::new(m));
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Whether `pid` names a process that is neither this one nor running.
fn pid_gone(pid: Option<&str>) -> bool {
    let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// The blobs and snapshots (chain IDs) that the step records reference: what a garbage
/// collection of the image store keeps besides the images' (see
/// [`ImageStore::gc_keeping`]).
pub fn references(store: &ImageStore) -> (BTreeSet<Digest>, BTreeSet<Digest>) {
    let (mut blobs, mut chains) = (BTreeSet::new(), BTreeSet::new());
    let Ok(rd) = fs::read_dir(cache_dir(store).join("steps")) else {
        return (blobs, chains);
    };
    for e in rd.flatten() {
        let Ok(rec) = berth_image::fsutil::read_json::<CacheRecord>(&e.path()) else {
            continue;
        };
        let diffs: Vec<Digest> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        chains.extend(berth_image::manifest::chain_ids(&diffs));
        blobs.extend(rec.layers.into_iter().map(|l| l.digest));
        blobs.insert(Digest::of_bytes(rec.config.as_bytes()));
    }
    (blobs, chains)
}

/// What `builder prune` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    #[serde(rename = "CachesDeleted")]
    pub caches_deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed")]
    pub space_reclaimed: u64,
}

/// A cached step, as `buildx du` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    /// The step's key (hex).
    pub id: String,
    /// The bytes of the step's own layer (0 for a step without one).
    pub size: u64,
    pub created: std::time::SystemTime,
    pub last_used: std::time::SystemTime,
    /// The record shares its base layers with others.
    pub shared: bool,
}

impl StepInfo {
    /// BuildKit's record type (every step is a `regular` record).
    pub const TYPE: &'static str = "regular";
    /// BuildKit's description of a record.
    pub const DESCRIPTION: &'static str = "berth build step";
}

/// The cached steps, by ID.
pub fn steps(store: &ImageStore) -> Vec<StepInfo> {
    let dir = cache_dir(store).join("steps");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Some(id) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let Ok(rec) = berth_image::fsutil::read_json::<CacheRecord>(&p) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        let created = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let last_used = meta.accessed().unwrap_or(created).max(created);
        out.push(StepInfo {
            id,
            size: rec.layers.last().map(|l| l.size).unwrap_or(0),
            created,
            last_used,
            shared: rec.layers.len() > 1,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// One condition of a prune filter (`key==value`, `key!=value`, `key~=pattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneFilter {
    pub key: String,
    pub op: FilterOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Equal,
    NotEqual,
    /// Matches the pattern: a substring, `^` and `$` anchoring it.
    Matches,
}

/// A prune filter that is not `key[op]value` (the filter as given).
#[derive(Debug, thiserror::Error)]
#[error("invalid filter {0:?}")]
pub struct InvalidFilter(pub String);

impl PruneFilter {
    /// Parses BuildKit's filter strings (containerd's syntax, as buildx sends them:
    /// `type==regular,id~=abc`; `key=value` is `key==value`; a bare key asks that the field
    /// be set).
    pub fn parse_all(filters: &[String]) -> std::result::Result<Vec<PruneFilter>, InvalidFilter> {
        let mut out = Vec::new();
        for part in filters.iter().flat_map(|f| f.split(',')) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (key, op, value) = if let Some((k, v)) = part.split_once("==") {
                (k, FilterOp::Equal, v)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k, FilterOp::NotEqual, v)
            } else if let Some((k, v)) = part.split_once("~=") {
                (k, FilterOp::Matches, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, FilterOp::Equal, v)
            } else {
                (part, FilterOp::NotEqual, "")
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
            {
                return Err(InvalidFilter(part.to_string()));
            }
            out.push(PruneFilter {
                key: key.to_string(),
                op,
                value: value.trim().trim_matches('"').to_string(),
            });
        }
        Ok(out)
    }

    /// Whether `step` matches (BuildKit's fields; an unknown field matches nothing).
    pub fn matches(&self, step: &StepInfo) -> bool {
        let field = match self.key.as_str() {
            "id" => step.id.clone(),
            "type" => StepInfo::TYPE.to_string(),
            "description" => StepInfo::DESCRIPTION.to_string(),
            "shared" => step.shared.to_string(),
            "private" => (!step.shared).to_string(),
            "inuse" | "mutable" => "false".to_string(),
            _ => return false,
        };
        match self.op {
            FilterOp::Equal => field == self.value,
            FilterOp::NotEqual => field != self.value,
            FilterOp::Matches => {
                let (start, p) = match self.value.strip_prefix('^') {
                    Some(p) => (true, p),
                    None => (false, self.value.as_str()),
                };
                let (end, p) = match p.strip_suffix('$') {
                    Some(p) => (true, p),
                    None => (false, p),
                };
                match (start, end) {
                    (true, true) => field == p,
                    (true, false) => field.starts_with(p),
                    (false, true) => field.ends_with(p),
                    (false, false) => field.contains(p),
                }
            }
        }
    }
}

/// What a prune removes: the steps every filter matches, except those used within
/// `keep_duration` and, oldest used first, only until the cache is within its space limits
/// (BuildKit's `--reserved-space`/`--keep-storage`, `--max-used-space`, `--min-free-space`;
/// 0 = none). With no limit, every matching step.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub filters: Vec<PruneFilter>,
    pub keep_duration: Option<std::time::Duration>,
    pub reserved_space: u64,
    pub max_used_space: u64,
    pub min_free_space: u64,
}

impl PruneOptions {
    fn everything(&self) -> bool {
        self.filters.is_empty()
            && self.keep_duration.is_none()
            && self.reserved_space == 0
            && self.max_used_space == 0
            && self.min_free_space == 0
    }

    /// The bytes the cache may keep (`None`: no limit, remove every candidate), as BuildKit
    /// computes it from the used and free space.
    fn keep_bytes(&self, used: u64, free: u64) -> Option<u64> {
        if self.max_used_space == 0 && self.min_free_space == 0 {
            return (self.reserved_space > 0).then_some(self.reserved_space);
        }
        let mut keep = self.max_used_space;
        if self.min_free_space > free {
            let excess = self.min_free_space - free;
            let room = used.saturating_sub(excess);
            keep = if keep == 0 { room } else { keep.min(room) };
        }
        Some(keep.max(self.reserved_space))
    }

    /// The IDs of `steps` to remove (`now`: the time `keep_duration` counts back from;
    /// `free`: the free bytes of the cache's file system).
    pub fn select(&self, steps: &[StepInfo], now: std::time::SystemTime, free: u64) -> Vec<String> {
        let used: u64 = steps.iter().map(|s| s.size).sum();
        let mut candidates: Vec<&StepInfo> = steps
            .iter()
            .filter(|s| self.filters.iter().all(|f| f.matches(s)))
            .filter(|s| match self.keep_duration {
                Some(d) => now.duration_since(s.last_used).is_ok_and(|age| age > d),
                None => true,
            })
            .collect();
        let Some(keep) = self.keep_bytes(used, free) else {
            return candidates.into_iter().map(|s| s.id.clone()).collect();
        };
        candidates.sort_by(|a, b| (a.last_used, &a.id).cmp(&(b.last_used, &b.id)));
        let mut total = used;
        let mut out = Vec::new();
        for s in candidates {
            if total <= keep {
                break;
            }
            total = total.saturating_sub(s.size);
            out.push(s.id.clone());
        }
        out
    }
}

/// Removes the build cache (step records and cache mounts) and the layers only it used.
pub fn prune(store: &ImageStore) -> Result<PruneReport> {
    prune_matching(store, &PruneOptions::default())
}

/// Removes the steps `opts` selects and the layers only they used; the cache mounts too
/// when it removes everything.
pub fn prune_matching(store: &ImageStore, opts: &PruneOptions) -> Result<PruneReport> {
    let dir = cache_dir(store);
    let mut report = PruneReport::default();
    let mut sizes: BTreeMap<Digest, u64> = BTreeMap::new();
    let steps_dir = dir.join("steps");
    let free = rustix::fs::statvfs(&dir)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(u64::MAX);
    let chosen = opts.select(&steps(store), std::time::SystemTime::now(), free);
    for id in chosen {
        let p = steps_dir.join(format!("{id}.json"));
        if let Ok(rec) = berth_image::fsutil::read_json::<CacheRecord>(&p) {
            for l in rec.layers {
                sizes.insert(l.digest, l.size);
            }
        }
        if fs::remove_file(&p).is_ok() {
            report.caches_deleted.push(id);
        }
    }
    let mounts = dir.join("mounts");
    if opts.everything() && mounts.exists() {
        report.space_reclaimed += dir_size(&mounts);
        let _ = berth_image::snapshot::remove_tree(&mounts);
    }
    // The records left keep their layers.
    let (keep_blobs, keep_chains) = references(store);
    store
        .gc_keeping(&keep_blobs, &keep_chains)
        .map_err(error::store("removing unused layers"))?;
    for (d, s) in sizes {
        if !store.blobs().exists(&d) {
            report.space_reclaimed += s;
        }
    }
    report.caches_deleted.sort();
    Ok(report)
}

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                if m.is_dir() {
                    n += dir_size(&e.path());
                } else {
                    n += m.len();
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, size: u64, age_s: u64, shared: bool) -> StepInfo {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 - age_s);
        StepInfo {
            id: id.into(),
            size,
            created: t,
            last_used: t,
            shared,
        }
    }

    #[test]
    fn prune_selection() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let steps = vec![
            step("aa11", 100, 3600 * 5, false),
            step("bb22", 200, 3600 * 3, true),
            step("cc33", 300, 60, false),
        ];
        let sel = |o: &PruneOptions| o.select(&steps, now, u64::MAX);
        assert_eq!(sel(&PruneOptions::default()), ["aa11", "bb22", "cc33"]);
        // until=2h: only what was not used for 2 hours.
        let o = PruneOptions {
            keep_duration: Some(std::time::Duration::from_secs(7200)),
            ..Default::default()
        };
        assert_eq!(sel(&o), ["aa11", "bb22"]);
        // keep-storage 450 bytes of 600: the oldest two go (100 + 200 brings it to 300).
        let o = PruneOptions {
            reserved_space: 450,
            ..Default::default()
        };
        assert_eq!(sel(&o), ["aa11", "bb22"]);
        let o = PruneOptions {
            reserved_space: 500,
            ..Default::default()
        };
        assert_eq!(sel(&o), ["aa11"]);
        let o = PruneOptions {
            reserved_space: 600,
            ..Default::default()
        };
        assert!(sel(&o).is_empty());
        // max-used-space, and min-free-space with 50 bytes free wanting 400: keep 250.
        let o = PruneOptions {
            max_used_space: 350,
            ..Default::default()
        };
        assert_eq!(sel(&o), ["aa11", "bb22"]);
        let o = PruneOptions {
            min_free_space: 300,
            ..Default::default()
        };
        assert_eq!(o.select(&steps, now, 50), ["aa11", "bb22"]);
        // Filters: BuildKit's syntax as buildx sends it.
        let f = |s: &str| PruneOptions {
            filters: PruneFilter::parse_all(&[s.to_string()]).unwrap(),
            ..Default::default()
        };
        assert_eq!(sel(&f("id~=bb")), ["bb22"]);
        assert_eq!(sel(&f("id~=^cc")), ["cc33"]);
        assert_eq!(sel(&f("type==regular,id~=a")), ["aa11"]);
        assert!(sel(&f("type==exec.cachemount")).is_empty());
        assert_eq!(sel(&f("shared==true")), ["bb22"]);
        assert_eq!(sel(&f("private")), ["aa11", "bb22", "cc33"]);
        assert!(sel(&f("nosuchfield==x")).is_empty());
        assert!(PruneFilter::parse_all(&["==x".to_string()]).is_err());
    }
    use berth_image::manifest::History;

    #[test]
    fn cache_from_matches_history_prefix_and_instruction() {
        let base = State::scratch(&berth_image::manifest::Platform::host());
        let hist = |by: &str, empty: bool| History {
            created: Some("2020-01-01T00:00:00Z".into()),
            created_by: Some(by.into()),
            author: None,
            comment: None,
            empty_layer: empty,
        };
        let layer = |n: &str| LayerRecord {
            digest: Digest::of_bytes(format!("blob{n}").as_bytes()),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 1,
            diff_id: Digest::of_bytes(format!("diff{n}").as_bytes()),
            unpacked_size: 1,
        };
        let mut cfg = base.config.clone();
        cfg.history = vec![hist("RUN a", false), hist("ENV X=1", true)];
        cfg.rootfs.diff_ids = vec![layer("a").diff_id];
        let src = CacheSource {
            config: cfg,
            layers: vec![layer("a")],
        };
        let cc = ContainerConfig::default();
        let sources = std::slice::from_ref(&src);
        // First step: the layer and the entry are taken.
        let s1 = from_cache_sources(sources, &base, "RUN a", &cc).unwrap();
        assert_eq!(s1.layers, vec![layer("a")]);
        assert_eq!(s1.config.history.len(), 1);
        assert_eq!(s1.config.created.as_deref(), Some("2020-01-01T00:00:00Z"));
        // Second step on top of the first: an empty-layer entry.
        let s2 = from_cache_sources(sources, &s1, "ENV X=1", &cc).unwrap();
        assert_eq!(s2.layers.len(), 1);
        assert_eq!(s2.config.history.len(), 2);
        // Another instruction, another parent, or past the end: no match.
        assert!(from_cache_sources(sources, &base, "RUN b", &cc).is_none());
        assert!(from_cache_sources(sources, &s2, "CMD x", &cc).is_none());
        let mut other = s1.clone();
        other.config.history[0].created_by = Some("RUN other".into());
        assert!(from_cache_sources(sources, &other, "ENV X=1", &cc).is_none());
    }
}
