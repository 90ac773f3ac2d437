//! Open upload sessions: who opened each, its hash state between requests, the quotas on
//! opening them and the expiry of idle ones.
//!
//! The index is in memory and rebuilt from `ROOT/uploads/*/info.json` at start; the directories
//! stay the truth about what exists (gc may remove one behind the server's back: the index
//! forgets it at the next check). A session belongs to an *owner*: `user:<name>` for a signed-in
//! user, `addr:<client>` for anonymous requests ([`crate::ratelimit::client_key`]). Opening one
//! checks the owner's quota and the global cap under one lock, so concurrent requests cannot
//! both take the last place. A session that received no data for the idle timeout is removed
//! with its data, unless a request is working on it at that moment (it holds the session's
//! hash state lock, which expiry only ever tries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Sha256;

use crate::storage::{now_secs, Store, UPLOAD_ID_BYTES};

/// Hash state of an upload kept between requests: (bytes hashed, state). Requests working on
/// an upload hold its lock.
pub type HashState = Arc<tokio::sync::Mutex<Option<(u64, Sha256)>>>;

struct Session {
    owner: String,
    hash: HashState,
    /// Reserved, its directory not created yet ([`Sessions::opened`] clears it): the sweeps
    /// that forget sessions without a directory must not forget this one.
    pending: bool,
}

impl Session {
    /// Whether the index still holds a real session: one being created, or one on disk.
    fn exists(&self, store: &Store, id: &str) -> bool {
        self.pending || store.upload_dir(id).exists()
    }
}

/// Why a session was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The owner has this many open already.
    Owner(usize),
    /// The server has this many open already.
    Total(usize),
}

/// The index of open upload sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// A session removed for idleness.
#[derive(Debug, Clone)]
pub struct Expired {
    pub id: String,
    pub repository: Option<String>,
    pub owner: Option<String>,
}

impl Sessions {
    /// The sessions on disk (after a restart; owners of uploads from older versions are
    /// unknown and count for nobody).
    pub fn load(store: &Store) -> Self {
        let map = store
            .upload_ids()
            .into_iter()
            .map(|id| {
                let owner = store
                    .upload(&id)
                    .and_then(|(info, _)| info.owner)
                    .unwrap_or_default();
                (
                    id,
                    Session {
                        owner,
                        hash: HashState::default(),
                        pending: false,
                    },
                )
            })
            .collect();
        Self {
            map: Mutex::new(map),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of open sessions of `owner`.
    pub fn count(&self, owner: &str) -> usize {
        self.lock().values().filter(|s| s.owner == owner).count()
    }

    /// Takes a place for a new session of `owner` and returns its id, or says which limit
    /// is reached. The caller creates the upload on disk and calls [`opened`](Self::opened),
    /// or calls [`remove`](Self::remove) when that fails. Before refusing, sessions whose directory is gone are forgotten.
    pub fn reserve(
        &self,
        store: &Store,
        owner: &str,
        per_owner: usize,
        total: usize,
    ) -> Result<String, Refused> {
        let mut m = self.lock();
        let mine = |m: &HashMap<String, Session>| m.values().filter(|s| s.owner == owner).count();
        if mine(&m) >= per_owner || m.len() >= total {
            m.retain(|id, s| s.exists(store, id));
        }
        let n = mine(&m);
        if n >= per_owner {
            return Err(Refused::Owner(n));
        }
        if m.len() >= total {
            return Err(Refused::Total(m.len()));
        }
        let id = berth_util::id::random_hex(UPLOAD_ID_BYTES);
        m.insert(
            id.clone(),
            Session {
                owner: owner.to_string(),
                hash: HashState::default(),
                pending: true,
            },
        );
        Ok(id)
    }

    /// Session `id`, reserved, now exists on disk.
    pub fn opened(&self, id: &str) {
        if let Some(s) = self.lock().get_mut(id) {
            s.pending = false;
        }
    }

    /// The hash state of session `id`; `None` when there is no such session.
    pub fn hash_state(&self, id: &str) -> Option<HashState> {
        self.lock().get(id).map(|s| s.hash.clone())
    }

    /// Forgets session `id` (finished, cancelled, refused or removed).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Removes, with their data, the sessions that received nothing for `idle` and that no
    /// request is working on; forgets sessions whose directory is gone.
    pub fn expire_idle(&self, store: &Store, idle: Duration) -> Vec<Expired> {
        let cutoff = now_secs().saturating_sub(idle.as_secs());
        let mut out = Vec::new();
        for id in store.stale_uploads(cutoff) {
            let hs = self.hash_state(&id);
            // A request working on it holds the lock: not idle.
            let guard = match &hs {
                Some(h) => match h.try_lock() {
                    Ok(g) => Some(g),
                    Err(_) => continue,
                },
                None => None,
            };
            // Checked again under the lock: a request may have just written to it.
            if store
                .upload_last_activity(&id)
                .is_none_or(|last| last >= cutoff)
            {
                continue;
            }
            let info = store.upload(&id).map(|(i, _)| i);
            store.remove_upload(&id);
            self.remove(&id);
            drop(guard);
            out.push(Expired {
                id,
                repository: info.as_ref().map(|i| i.repository.clone()),
                owner: info.and_then(|i| i.owner),
            });
        }
        self.lock().retain(|id, s| s.exists(store, id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_per_owner_and_in_total() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = Sessions::default();
        let mut alice = Vec::new();
        for _ in 0..2 {
            let id = s.reserve(&store, "user:alice", 2, 3).unwrap();
            store.create_upload(&id, "r", "user:alice").unwrap();
            s.opened(&id);
            alice.push(id);
        }
        assert_eq!(
            s.reserve(&store, "user:alice", 2, 3),
            Err(Refused::Owner(2))
        );
        let bob = s.reserve(&store, "user:bob", 2, 3).unwrap();
        store.create_upload(&bob, "r", "user:bob").unwrap();
        s.opened(&bob);
        assert_eq!(
            s.reserve(&store, "user:carol", 2, 3),
            Err(Refused::Total(3))
        );
        // A session removed behind the index's back (gc) frees its place.
        store.remove_upload(&alice[0]);
        let again = s.reserve(&store, "user:alice", 2, 3).unwrap();
        assert_eq!(s.count("user:alice"), 2);
        assert!(s.hash_state(&again).is_some());
        s.remove(&again);
        assert!(s.hash_state(&again).is_none());
        // Rebuilt from disk with the owners.
        let loaded = Sessions::load(&store);
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded.count("user:alice"), 1);
        assert_eq!(loaded.count("user:bob"), 1);
    }

    #[test]
    fn idle_sessions_expire_unless_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let s = Sessions::default();
        let old = |id: &str| {
            let past = std::time::SystemTime::now() - Duration::from_secs(7200);
            let info = dir.path().join("uploads").join(id).join("info.json");
            let mut i: crate::storage::UploadInfo =
                serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
            i.started = now_secs() - 7200;
            std::fs::write(&info, serde_json::to_vec(&i).unwrap()).unwrap();
            let data = std::fs::File::options()
                .write(true)
                .open(store.upload_data(id))
                .unwrap();
            data.set_modified(past).unwrap();
            let dir = std::fs::File::open(store.upload_dir(id)).unwrap();
            dir.set_modified(past).unwrap();
        };
        let idle = s.reserve(&store, "o", 10, 10).unwrap();
        store.create_upload(&idle, "r", "o").unwrap();
        s.opened(&idle);
        let busy = s.reserve(&store, "o", 10, 10).unwrap();
        store.create_upload(&busy, "r", "o").unwrap();
        s.opened(&busy);
        let fresh = s.reserve(&store, "o", 10, 10).unwrap();
        store.create_upload(&fresh, "r", "o").unwrap();
        s.opened(&fresh);
        // A session being created: its directory, no files yet.
        let creating = s.reserve(&store, "o", 10, 10).unwrap();
        std::fs::create_dir(store.upload_dir(&creating)).unwrap();
        // One reserved a moment ago, its directory not made yet (a sweep racing a POST).
        let reserved = s.reserve(&store, "o", 10, 10).unwrap();
        old(&idle);
        old(&busy);
        let hs = s.hash_state(&busy).unwrap();
        let held = hs.try_lock().unwrap();
        let gone = s.expire_idle(&store, Duration::from_secs(3600));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, idle);
        assert_eq!(gone[0].repository.as_deref(), Some("r"));
        assert!(!store.upload_dir(&idle).exists());
        assert!(s.hash_state(&idle).is_none());
        assert!(store.upload_dir(&busy).exists(), "in use");
        assert!(store.upload_dir(&fresh).exists(), "not idle");
        assert!(store.upload_dir(&creating).exists(), "being created");
        assert!(
            s.hash_state(&reserved).is_some(),
            "reserved, not on disk yet"
        );
        drop(held);
        let gone = s.expire_idle(&store, Duration::from_secs(3600));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, busy);
        // fresh, creating and the reserved one (until its POST makes it or drops it).
        assert_eq!(s.len(), 3);
        s.remove(&reserved);
        assert_eq!(s.len(), 2);
    }
}
