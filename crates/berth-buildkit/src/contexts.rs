//! Build contexts kept between builds, as BuildKit keeps a local source's snapshot per shared
//! key: the next build of the same client directory (same session shared key, same directory
//! name and patterns) syncs into the copy the last one left, so only files whose stat changed
//! are transferred again (`filesync::sync_dir`) and unchanged files keep their inodes.
//!
//! A copy is used by one build at a time (a build that finds it busy syncs into a directory
//! of its own), and dropped when its transfer failed, when a build may have written into it
//! (`RUN --mount=type=bind,rw` of the context), or when it holds more than [`MAX_BYTES`].
//! At most [`MAX_ENTRIES`] copies are kept, the least recently used going first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

use crate::filesync::{gomode, Manifest, SyncRequest};

/// Copies kept at most.
pub const MAX_ENTRIES: usize = 4;
/// The largest copy kept (bytes of regular files).
pub const MAX_BYTES: u64 = 64 << 20;

/// A kept copy: its directory and its manifest.
pub struct Copy {
    pub dir: tempfile::TempDir,
    pub manifest: Manifest,
}

type Slot = Arc<tokio::sync::Mutex<Option<Copy>>>;

/// The kept copies, by key.
#[derive(Default)]
pub struct Contexts {
    slots: Mutex<HashMap<String, (Slot, Instant)>>,
}

/// A build's hold on a key's copy (its directory, when one is kept).
pub struct Lease {
    guard: OwnedMutexGuard<Option<Copy>>,
}

impl Lease {
    /// The copy kept for this key, taken out (the build syncs into it and puts it back).
    pub fn take(&mut self) -> Option<Copy> {
        self.guard.take()
    }

    /// Keeps `copy` for the next build of the key, unless it is too large.
    pub fn put(&mut self, copy: Copy) {
        let bytes: u64 = copy
            .manifest
            .values()
            .filter(|st| st.mode & gomode::TYPE == 0)
            .map(|st| st.size.max(0) as u64)
            .sum();
        if bytes <= MAX_BYTES {
            *self.guard = Some(copy);
        }
    }
}

/// The key of a sync: `None` when the session gave no shared key (nothing identifies the
/// client's directory across sessions).
pub fn key(shared_key: &str, req: &SyncRequest) -> Option<String> {
    if shared_key.is_empty() {
        return None;
    }
    Some(format!(
        "{shared_key}\0{}\0{:?}\0{:?}\0{:?}",
        req.dir_name, req.include_patterns, req.exclude_patterns, req.follow_paths
    ))
}

impl Contexts {
    /// The copy of `key` for one build; `None` while another build holds it.
    pub fn lease(&self, key: &str) -> Option<Lease> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = match slots.get_mut(key) {
            Some((s, used)) => {
                *used = Instant::now();
                s.clone()
            }
            None => {
                let s: Slot = Default::default();
                slots.insert(key.to_string(), (s.clone(), Instant::now()));
                // The least recently used idle copies go beyond the limit.
                while slots.len() > MAX_ENTRIES {
                    let oldest = slots
                        .iter()
                        .filter(|(k, (s, _))| k.as_str() != key && s.try_lock().is_ok())
                        .min_by_key(|(_, (_, used))| *used)
                        .map(|(k, _)| k.clone());
                    match oldest {
                        Some(k) => {
                            slots.remove(&k);
                        }
                        None => break,
                    }
                }
                s
            }
        };
        drop(slots);
        slot.try_lock_owned().ok().map(|guard| Lease { guard })
    }

    /// Drops every copy no build holds (their directories are removed): at the daemon's exit.
    pub fn clear(&self) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (s, _)| s.try_lock().is_err());
    }

    /// How many keys are known (kept or being built).
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
