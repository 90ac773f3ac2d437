//! Removal: `rmi` under Docker's rules, prune, and the garbage collection of blobs and
//! snapshots that no image references any more.

use super::*;

/// A container using an image, as `rmi`'s conflicts name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// The container's ID.
    pub container: String,
    /// Running (or restarting, or paused): a conflict even `force` cannot lift.
    pub running: bool,
    /// Uses the image only through an `image` mount: as for moby, that refuses only the
    /// removal of its last reference by name without `force`, not the image's deletion
    /// (the container keeps the layers).
    pub mount_only: bool,
}

impl ImageUser {
    fn short(&self) -> &str {
        &self.container[..self.container.len().min(12)]
    }
}

/// moby's `conflictType` bits: what `rmi` checks before deleting an image.
const CONFLICT_CHILD: u8 = 1;
const CONFLICT_RUNNING: u8 = 2;
const CONFLICT_REFERENCE: u8 = 4;
const CONFLICT_STOPPED: u8 = 8;
const CONFLICT_HARD: u8 = CONFLICT_CHILD | CONFLICT_RUNNING;
const CONFLICT_SOFT: u8 = CONFLICT_REFERENCE | CONFLICT_STOPPED;

/// A reason not to delete an image (moby's `imageDeleteConflict`).
struct DeleteConflict {
    /// Not even with `force`.
    hard: bool,
    /// A container uses the image.
    used: bool,
    message: String,
}

impl ImageStore {
    /// Removes an image or a reference to it, following Docker's `rmi` rules (moby's
    /// `ImageDelete`):
    ///
    /// - by name: the reference is removed (`Untagged`); if other references remain, that is
    ///   all. Refused without `force` when it is the last reference and a container uses it.
    /// - by ID: with at most one tag (all references in one repository) the references are
    ///   removed first, unless a child image or a running container (or without `force` a
    ///   stopped one) uses the image.
    /// - then the image is deleted: never while it has child images or a running container
    ///   uses it; without `force` neither while a stopped container uses it or references
    ///   remain. After a reference removed by name such a conflict just leaves the image (as
    ///   dockerd does quietly), unless it is dangling and unused.
    ///
    /// The blobs and snapshots no other image uses go with it. `users` lists the containers
    /// using an image.
    pub fn remove(
        &self,
        name_or_id: &str,
        force: bool,
        users: &dyn Fn(&ImageId) -> Vec<ImageUser>,
    ) -> Result<Vec<DeleteItem>> {
        self.remove_pruning(name_or_id, force, false, users)
    }

    /// [`ImageStore::remove`], then with `prune` (`rmi` without `--no-prune`) the deleted
    /// image's parents in turn while each is untagged, has no other child and no container
    /// uses it (dockerd's quiet `imageDeleteHelper` on the parent).
    pub fn remove_pruning(
        &self,
        name_or_id: &str,
        force: bool,
        prune: bool,
        users: &dyn Fn(&ImageId) -> Vec<ImageUser>,
    ) -> Result<Vec<DeleteItem>> {
        let _g = self.lock()?;
        let mut idx = self.read_index()?;
        let resolved = resolve_in(&idx, name_or_id)?;
        let id = resolved.image.id.clone();
        let mut records = Vec::new();
        let refs = resolved.image.references();
        let mut quiet = false;
        match &resolved.reference {
            Some(r) => {
                if !force && is_single_reference(&refs) {
                    if let Some(u) = users(&id).first() {
                        return Err(ImageStoreError::Conflict(format!(
                            "conflict: unable to remove repository reference {:?} (must force) - container {} is using its referenced image {}",
                            name_or_id,
                            u.short(),
                            id.short()
                        )));
                    }
                }
                untag_in(&mut idx, r)?;
                records.push(DeleteItem::Untagged(r.familiar_string()));
                // The last tag of a repository gone: drop its digest references too.
                if r.digest().is_none() {
                    let rec = &idx.images[id.hex()];
                    let same_repo_tag = rec.repo_tags.iter().any(|t| {
                        Reference::parse_normalized(t).is_ok_and(|t| t.name() == r.name())
                    });
                    if !same_repo_tag {
                        let digests: Vec<String> = rec
                            .repo_digests
                            .iter()
                            .filter(|d| {
                                Reference::parse_normalized(d).is_ok_and(|d| d.name() == r.name())
                            })
                            .cloned()
                            .collect();
                        for d in digests {
                            let dr = Reference::parse_normalized(&d)?;
                            untag_in(&mut idx, &dr)?;
                            records.push(DeleteItem::Untagged(dr.familiar_string()));
                        }
                    }
                }
                let rec = &idx.images[id.hex()];
                if !rec.repo_tags.is_empty() || !rec.repo_digests.is_empty() {
                    self.write_index(&idx)?;
                    return Ok(records);
                }
                quiet = true;
            }
            None => {
                if is_single_reference(&refs) {
                    let mask = if force {
                        CONFLICT_HARD
                    } else {
                        CONFLICT_HARD | CONFLICT_STOPPED
                    };
                    if let Some(c) = delete_conflict(&idx, &id, mask, users) {
                        return Err(c.into_error(&id));
                    }
                    for r in &refs {
                        untag_in(&mut idx, r)?;
                        records.push(DeleteItem::Untagged(r.familiar_string()));
                    }
                }
            }
        }
        // imageDeleteHelper
        let mask = if force {
            CONFLICT_HARD
        } else {
            CONFLICT_HARD | CONFLICT_SOFT
        };
        if let Some(c) = delete_conflict(&idx, &id, mask, users) {
            let rec = &idx.images[id.hex()];
            let dangling = rec.repo_tags.is_empty()
                && rec.repo_digests.is_empty()
                && !idx.images.values().any(|i| i.parent.as_ref() == Some(&id));
            if quiet && (!dangling || c.used) {
                self.write_index(&idx)?;
                return Ok(records);
            }
            return Err(c.into_error(&id));
        }
        let mut next = Some(id);
        while let Some(id) = next.take() {
            let rec = idx.images[id.hex()].clone();
            for r in rec.references() {
                untag_in(&mut idx, &r)?;
                records.push(DeleteItem::Untagged(r.familiar_string()));
            }
            idx.images.remove(id.hex());
            for child in idx.images.values_mut() {
                if child.parent.as_ref() == Some(&id) {
                    child.parent = None;
                }
            }
            self.write_index(&idx)?;
            records.push(DeleteItem::Deleted(id.to_string()));
            let (deleted_layers, _) = self.delete_content(&idx, &rec)?;
            records.extend(
                deleted_layers
                    .into_iter()
                    .map(|c| DeleteItem::Deleted(c.to_string())),
            );
            next = rec
                .parent
                .filter(|p| prune && idx.images.contains_key(p.hex()))
                .filter(|p| {
                    delete_conflict(&idx, p, CONFLICT_HARD | CONFLICT_SOFT, users).is_none()
                });
        }
        Ok(records)
    }

    /// Deletes the blobs and snapshots of `rec` that no image in `idx` uses. Returns the
    /// deleted chain IDs (top first) and the content size of their layers.
    pub(super) fn delete_content(
        &self,
        idx: &Index,
        rec: &ImageRecord,
    ) -> Result<(Vec<Digest>, u64)> {
        let mut used_blobs = BTreeSet::new();
        let mut used_chains = BTreeSet::new();
        for i in idx.images.values() {
            used_blobs.extend(i.blobs());
            used_chains.extend(i.chain_ids());
        }
        for b in rec.blobs() {
            if !used_blobs.contains(&b) {
                self.blobs.delete(&b)?;
            }
        }
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        let chains = rec.chain_ids();
        let snap = self.recorded_snapshotter(idx)?;
        for (chain, layer) in chains.iter().zip(&rec.layers).rev() {
            if used_chains.contains(chain) {
                // A lower snapshot still in use: everything below is in use too.
                break;
            }
            reclaimed += layer.unpacked_size;
            deleted.push(chain.clone());
            if let Some(s) = snap {
                if s.exists(chain) {
                    match s.remove(chain) {
                        Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                        // Used by a container or another snapshot: keep it.
                        Err(SnapshotError::InUse { .. }) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok((deleted, reclaimed))
    }

    /// Removes dangling images (no references at all, no children), or with `all` every image
    /// no container uses. Images used by containers are kept.
    pub fn prune(&self, all: bool, in_use: &dyn Fn(&ImageId) -> bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        loop {
            let _g = self.lock()?;
            let mut idx = self.read_index()?;
            let parents: BTreeSet<Digest> = idx
                .images
                .values()
                .filter_map(|i| i.parent.clone())
                .collect();
            let victim = idx
                .images
                .values()
                .find(|i| {
                    !in_use(&i.id)
                        && !parents.contains(&i.id)
                        && (all || (i.repo_tags.is_empty() && i.repo_digests.is_empty()))
                })
                .cloned();
            let Some(rec) = victim else { break };
            for r in rec.references() {
                untag_in(&mut idx, &r)?;
                report
                    .deleted
                    .push(DeleteItem::Untagged(r.familiar_string()));
            }
            idx.images.remove(rec.id.hex());
            self.write_index(&idx)?;
            report.deleted.push(DeleteItem::Deleted(rec.id.to_string()));
            let (layers, reclaimed) = self.delete_content(&idx, &rec)?;
            report.deleted.extend(
                layers
                    .into_iter()
                    .map(|c| DeleteItem::Deleted(c.to_string())),
            );
            report.space_reclaimed += reclaimed;
        }
        Ok(report)
    }

    /// Deletes blobs and snapshots no image references (leftovers of crashes or failed
    /// loads). Only safe when no other process is adding images.
    pub fn gc(&self) -> Result<usize> {
        self.gc_keeping(&BTreeSet::new(), &BTreeSet::new())
    }

    /// [`gc`](Self::gc), keeping also the blobs `blobs` and the snapshots `chains` (what
    /// another index references, such as the build cache's records).
    pub fn gc_keeping(&self, blobs: &BTreeSet<Digest>, chains: &BTreeSet<Digest>) -> Result<usize> {
        let _g = self.lock()?;
        let idx = self.read_index()?;
        let mut used_blobs = blobs.clone();
        let mut used_chains = chains.clone();
        for i in idx.images.values() {
            used_blobs.extend(i.blobs());
            used_chains.extend(i.chain_ids());
        }
        let mut n = 0;
        for b in self.blobs.list()? {
            if !used_blobs.contains(&b) && self.blobs.delete(&b)? {
                n += 1;
            }
        }
        if let Some(snap) = self.recorded_snapshotter(&idx)? {
            // Remove unused snapshots children first: repeat until nothing more goes.
            loop {
                let mut removed = false;
                for s in snap.list()? {
                    if !used_chains.contains(&s.chain_id) && snap.remove(&s.chain_id).is_ok() {
                        removed = true;
                        n += 1;
                    }
                }
                if !removed {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Removes blobs from `candidates` that no image references (cleanup after a failed load
    /// that wrote them).
    pub fn discard_unreferenced(&self, candidates: &[Digest]) -> Result<()> {
        let _g = self.lock()?;
        let idx = self.read_index()?;
        let used: BTreeSet<Digest> = idx.images.values().flat_map(|i| i.blobs()).collect();
        for c in candidates {
            if !used.contains(c) {
                self.blobs.delete(c)?;
            }
        }
        Ok(())
    }
}

/// The first of the conflicts in `mask` that keeps `id` from being deleted (moby's
/// `checkImageDeleteConflict`, in its order).
fn delete_conflict(
    idx: &Index,
    id: &ImageId,
    mask: u8,
    users: &dyn Fn(&ImageId) -> Vec<ImageUser>,
) -> Option<DeleteConflict> {
    let conflict = |hard, used, message: String| {
        Some(DeleteConflict {
            hard,
            used,
            message,
        })
    };
    if mask & CONFLICT_CHILD != 0 && idx.images.values().any(|i| i.parent.as_ref() == Some(id)) {
        return conflict(true, false, "image has dependent child images".into());
    }
    let users = if mask & (CONFLICT_RUNNING | CONFLICT_STOPPED) != 0 {
        let mut u = users(id);
        u.retain(|u| !u.mount_only);
        u
    } else {
        Vec::new()
    };
    if mask & CONFLICT_RUNNING != 0 {
        if let Some(u) = users.iter().find(|u| u.running) {
            let m = format!("image is being used by running container {}", u.short());
            return conflict(true, true, m);
        }
    }
    let rec = &idx.images[id.hex()];
    if mask & CONFLICT_REFERENCE != 0 && (!rec.repo_tags.is_empty() || !rec.repo_digests.is_empty())
    {
        let m = "image is referenced in multiple repositories".to_string();
        return conflict(false, false, m);
    }
    if mask & CONFLICT_STOPPED != 0 {
        if let Some(u) = users.iter().find(|u| !u.running) {
            let m = format!("image is being used by stopped container {}", u.short());
            return conflict(false, true, m);
        }
    }
    None
}

impl DeleteConflict {
    fn into_error(self, id: &ImageId) -> ImageStoreError {
        let force = if self.hard {
            "cannot be forced"
        } else {
            "must be forced"
        };
        ImageStoreError::Conflict(format!(
            "conflict: unable to delete {} ({force}) - {}",
            id.short(),
            self.message
        ))
    }
}

/// At most one tag, and every reference in one repository (moby's `isSingleReference`):
/// removing the last reference of an image a container uses needs `force`.
pub fn is_single_reference(refs: &[Reference]) -> bool {
    let tags = refs.iter().filter(|r| r.digest().is_none()).count();
    if tags > 1 {
        return false;
    }
    let names: BTreeSet<String> = refs.iter().map(|r| r.name()).collect();
    names.len() <= 1
}
