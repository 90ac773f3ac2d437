//! Garbage collection of unreferenced blobs, safe while the server runs.
//!
//! Mark and sweep over the file system, in this order:
//! 1. list the blobs whose mtime is older than the grace period (the candidates);
//! 2. mark everything reachable from every manifest of every repository: the manifest itself,
//!    its config and layers, an index's children (recursively, read from the blobs, so that a
//!    child whose own entry was deleted still keeps its layers), and subjects;
//! 3. delete each unmarked candidate after checking again that its mtime is still old.
//!
//! Why this is safe with a live server: a blob only becomes referenced by a manifest PUT,
//! which checks that the blob exists and *touches* it (sets its mtime to now), as do blob HEAD
//! (how clients decide to skip an upload) and cross-repository mounts; newly uploaded blobs are
//! young. So a blob that a client is about to reference is younger than the grace period when
//! gc re-checks it in step 3, and spared. Uploads in progress live in `uploads/`, which gc does
//! not read as blobs; only uploads untouched for `upload_max_age` are removed. Blob links
//! (`blobs` in a repository's metadata) do not keep a blob alive by themselves: a layer
//! uploaded but never referenced by a manifest is collected once older than the grace period.
//! Step 3 runs under an exclusive `flock` on `ROOT/gc.lock`, which the server holds shared
//! while it validates a manifest PUT, answers a blob HEAD or mounts a blob: so between gc's
//! mtime re-check and its unlink nothing can start relying on the blob. What the grace
//! period still protects is the time between a client's HEAD (or upload) and its manifest PUT:
//! choose one longer than any push (default one hour).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_image::Digest;

use crate::error::StoreError;
use crate::storage::{now_secs, RepoMeta, Store};
use berth_image::fsutil::PathIoError;

/// How gc runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Blobs modified more recently are never removed.
    pub grace: Duration,
    /// Uploads untouched for this long are removed.
    pub upload_max_age: Duration,
    /// Also forget manifests that no tag reaches (directly, as an index's child, or as a
    /// referrer of a kept manifest), as distribution's `--delete-untagged`.
    pub delete_untagged: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            grace: Duration::from_secs(3600),
            upload_max_age: Duration::from_secs(24 * 3600),
            delete_untagged: false,
        }
    }
}

/// What gc found and did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs: usize,
    pub marked: usize,
    /// Removed (or, in a dry run, removable) blobs.
    pub removed: Vec<Digest>,
    pub bytes_freed: u64,
    /// Unreferenced but younger than the grace period.
    pub spared_young: usize,
    /// Untagged manifests forgotten (or, in a dry run, to forget) with `delete_untagged`.
    pub manifests_pruned: usize,
    pub uploads_removed: usize,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Marks `d` and everything a manifest stored under `d` refers to.
fn mark(store: &Store, d: &str, marked: &mut HashSet<String>) {
    if !marked.insert(d.to_string()) {
        return;
    }
    let Ok(dg) = Digest::parse(d) else { return };
    let p = store.blob_path(&dg);
    // Only small JSON documents can be manifests.
    if std::fs::metadata(&p)
        .map(|m| m.len() > 8 << 20)
        .unwrap_or(true)
    {
        return;
    }
    let Ok(bytes) = std::fs::read(&p) else { return };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    let mut descs = Vec::new();
    if let Some(c) = v.get("config") {
        descs.push(c);
    }
    for k in ["layers", "manifests", "blobs"] {
        if let Some(a) = v.get(k).and_then(|x| x.as_array()) {
            descs.extend(a.iter());
        }
    }
    if let Some(s) = v.get("subject") {
        descs.push(s);
    }
    for desc in descs {
        if let Some(cd) = desc.get("digest").and_then(|x| x.as_str()) {
            let mt = desc.get("mediaType").and_then(|x| x.as_str()).unwrap_or("");
            if crate::manifest::SUPPORTED.contains(&mt) {
                mark(store, cd, marked);
            } else {
                marked.insert(cd.to_string());
            }
        }
    }
}

/// The manifests of a repository that tags reach: tagged ones, children of kept indexes,
/// referrers (by `subject`) of kept manifests.
fn reachable(meta: &RepoMeta) -> HashSet<String> {
    let mut keep: HashSet<String> = meta.tags.values().cloned().collect();
    loop {
        let before = keep.len();
        for (d, e) in &meta.manifests {
            if keep.contains(d) {
                keep.extend(e.children.iter().cloned());
            } else if e.subject.as_ref().is_some_and(|s| keep.contains(s)) {
                keep.insert(d.clone());
            }
        }
        if keep.len() == before {
            return keep;
        }
    }
}

/// Runs gc on the store at `root`.
pub fn gc(root: &Path, opts: &GcOptions) -> Result<GcReport, StoreError> {
    // Never create a store here: a mistyped root must not look like an empty registry.
    let blobs = root.join("blobs/sha256");
    if !blobs.is_dir() {
        return Err(StoreError::Io(PathIoError {
            op: "open",
            path: blobs,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a registry root"),
        }));
    }
    let store = Store::open(root)?;
    let now = SystemTime::now();
    let cutoff = now
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = GcReport::default();
    // 1. candidates
    let all = store.list_blobs()?;
    report.blobs = all.len();
    let mut candidates = Vec::new();
    for d in all {
        match mtime(&store.blob_path(&d)) {
            Some(t) if t < cutoff => candidates.push(d),
            _ => {}
        }
    }
    // 1b. forget untagged manifests (under the exclusive gc lock: the server changes no
    // metadata meanwhile).
    if opts.delete_untagged {
        let _lock = if opts.dry_run {
            None
        } else {
            Some(store.gc_lock(true)?)
        };
        for repo in store.list_repos()? {
            let n = store.update_meta_locked(&repo, false, |meta| {
                let Some(meta) = meta else {
                    return Ok::<_, StoreError>((0, false));
                };
                let keep = reachable(meta);
                let before = meta.manifests.len();
                if !opts.dry_run {
                    meta.manifests.retain(|d, _| keep.contains(d));
                    let n = before - meta.manifests.len();
                    return Ok((n, n > 0));
                }
                Ok((
                    meta.manifests.keys().filter(|d| !keep.contains(*d)).count(),
                    false,
                ))
            })?;
            report.manifests_pruned += n;
        }
    }
    // 2. mark
    let mut marked = HashSet::new();
    for repo in store.list_repos()? {
        let Some(meta) = store.read_meta(&repo)? else {
            continue;
        };
        let keep = opts.delete_untagged.then(|| reachable(&meta));
        for (d, e) in &meta.manifests {
            if keep.as_ref().is_some_and(|k| !k.contains(d)) {
                continue; // (dry run: would be forgotten)
            }
            mark(&store, d, &mut marked);
            for b in e.blobs.iter().chain(&e.children) {
                marked.insert(b.clone());
            }
            if let Some(s) = &e.subject {
                marked.insert(s.clone());
            }
        }
    }
    report.marked = marked.len();
    // 3. sweep, holding the gc lock exclusively: no manifest PUT, blob HEAD or mount runs
    // meanwhile, and whatever ran since step 2 touched its blobs (young now).
    let _lock = if opts.dry_run {
        None
    } else {
        Some(store.gc_lock(true)?)
    };
    for d in candidates {
        if marked.contains(&d.to_string()) {
            continue;
        }
        let p = store.blob_path(&d);
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if m.modified().map(|t| t >= cutoff).unwrap_or(true) {
            continue; // touched since step 1: counted as young below
        }
        if !opts.dry_run {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(StoreError::Io(PathIoError {
                        op: "remove",
                        path: p,
                        source: e,
                    }))
                }
            }
        }
        report.bytes_freed += m.len();
        report.removed.push(d);
    }
    // Unreferenced blobs still young are reported too.
    let marked_or_removed: HashSet<String> = report.removed.iter().map(|d| d.to_string()).collect();
    for d in store.list_blobs()? {
        let ds = d.to_string();
        if !marked.contains(&ds) && !marked_or_removed.contains(&ds) {
            if let Some(t) = mtime(&store.blob_path(&d)) {
                if t >= cutoff {
                    report.spared_young += 1;
                }
            }
        }
    }
    // 4. stale uploads
    let older = now_secs().saturating_sub(opts.upload_max_age.as_secs());
    for id in store.stale_uploads(older) {
        if !opts.dry_run {
            store.remove_upload(&id);
        }
        report.uploads_removed += 1;
    }
    Ok(report)
}
