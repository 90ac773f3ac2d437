//! Crash safety: an intent written before each multi-step operation on a container, and
//! the pass at daemon start that finishes or undoes what a crash interrupted.
//!
//! An intent is `<data-root>/journal/<op>-<id>.json`, written before the operation's first
//! step and removed when it ends, whether it succeeded or undid itself ([`Intent`]'s
//! guard). A file that is still there at daemon start names an operation that a `kill -9`
//! (or a power loss) cut short; [`Engine::recover`] then decides from what is on disk:
//!
//! - `create`: the record (`config.v2.json`, written last) exists: the create finished.
//!   Otherwise it is undone: the participants' parts (anonymous volumes, addresses), the
//!   writable snapshot, the container's directories. The same for `createvolatile` (the
//!   CRI's creates, neither intent nor record synced) and for any container directory left
//!   without a record or with an empty one, or with an empty mounts record (what a power
//!   loss leaves of a volatile create whose intent it took too: neither the record nor the
//!   mounts record of a volume-less volatile create is synced).
//! - `start`: the record says running: the start finished (the reattach pass adopts it).
//!   Otherwise it is undone: the shim (which deletes the runtime's container: the init
//!   blocked on its start fifo, its cgroups, its state), or the runtime's state directly
//!   when the shim is gone, the rootfs mount and the participants' run-time parts. The
//!   container is left as it was before the start, and can be started or removed.
//! - `exit`: the record was marked exited, then the shim, rootfs and participants' parts
//!   are torn down; a crash in between leaves them: they go as for `start`.
//! - `pause`: a commit paused the running container (written before the pause, removed
//!   after the resume): it is resumed, and its record says running again.
//! - `commit` (for the whole commit) and `build` (their ids are their own): a commit
//!   writes its layer as a pending blob (in `ingest/`, which the daemon start removes with
//!   the other crash leftovers), publishes and unpacks it, then registers the image; a
//!   build's steps commit their snapshots as they go and publish their blobs, cache records
//!   and image at its end. What an interrupted one made is referenced by no image and no
//!   cache record: after such an intent, the image store's blobs and snapshots that neither
//!   an image nor the build cache references are removed (once, whatever the number of
//!   intents).
//!
//! Create intents are durable (`atomic_write`: a power loss between the snapshot and the
//! record must not leave an orphan), except the volatile ones; the others only need to outlive the process
//! (`replace_file_nosync`), since after a power loss no container, shim or mount is left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::runtime::Runtime;
use serde::{Deserialize, Serialize};

use super::{Engine, EngineError, Result};

/// What an intent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    Create,
    /// A create whose intent and record are not synced (`CreateOptions::volatile`).
    CreateVolatile,
    Start,
    Exit,
    Pause,
    Commit,
    Build,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::CreateVolatile => "createvolatile",
            Op::Start => "start",
            Op::Exit => "exit",
            Op::Pause => "pause",
            Op::Commit => "commit",
            Op::Build => "build",
        }
    }
}

/// An intent's file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    op: Op,
    id: String,
}

/// A written intent; dropping it marks the operation as ended (the file is removed).
#[must_use = "the intent ends when this is dropped"]
pub(crate) struct Intent {
    path: PathBuf,
}

impl Drop for Intent {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing the intent {}: {e}", self.path.display());
        }
    }
}

impl Engine {
    fn journal_dir(&self) -> PathBuf {
        self.cfg.data_root.join("journal")
    }

    /// Writes the intent of `op` on container `id` (see the module docs).
    pub(crate) fn intent(&self, op: Op, id: &str) -> Result<Intent> {
        let dir = self.journal_dir();
        let path = dir.join(format!("{}-{id}.json", op.name()));
        let bytes = serde_json::to_vec(&Record {
            op,
            id: id.to_string(),
        })
        .map_err(|e| EngineError::Internal(format!("encoding an intent: {e}")))?;
        let write = |p: &Path| match op {
            Op::Create => berth_util::fs::atomic_write(p, &bytes),
            Op::CreateVolatile | Op::Start | Op::Exit | Op::Pause | Op::Commit | Op::Build => {
                berth_util::fs::replace_file_nosync(p, &bytes)
            }
        };
        if let Err(e) = write(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(EngineError::io("writing", &path)(e));
            }
            std::fs::create_dir_all(&dir).map_err(EngineError::io("creating", &dir))?;
            write(&path).map_err(EngineError::io("writing", &path))?;
        }
        Ok(Intent { path })
    }

    /// Finishes or undoes every operation whose intent a crash left (once, at daemon start,
    /// after the records are loaded and before the reattach pass).
    pub(crate) fn recover(&self) {
        let dir = self.journal_dir();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut intents: Vec<(PathBuf, Record)> = Vec::new();
        for ent in rd.flatten() {
            let path = ent.path();
            match crate::util::read_json::<Record>(&path) {
                Ok(r) if r.id.len() == 64 && r.id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    intents.push((path, r))
                }
                // A torn or foreign file: nothing can be decided from it.
                _ => {
                    tracing::warn!("removing the unreadable intent {}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let collect = intents
            .iter()
            .any(|(_, r)| matches!(r.op, Op::Build | Op::Commit));
        for (_, r) in &intents {
            match r.op {
                Op::Create | Op::CreateVolatile => self.recover_create(&r.id),
                Op::Start | Op::Exit => self.recover_task(&r.id),
                Op::Pause => self.recover_pause(&r.id),
                Op::Commit | Op::Build => {}
            }
        }
        // A volatile create's intent and record may both be gone after a power loss, which
        // leaves its directory without a record (or with an empty one: its content was
        // never synced); a synced create never does.
        for id in self.unrecorded_dirs() {
            if !intents.iter().any(|(_, r)| r.id == id) {
                self.recover_create(&id);
            }
        }
        if collect {
            self.collect_image_garbage();
        }
        for (path, _) in intents {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("removing the intent {}: {e}", path.display());
            }
        }
    }

    /// Removes the blobs and snapshots of an interrupted build or commit: those that no
    /// image and no build cache record references (at daemon start, before any request).
    fn collect_image_garbage(&self) {
        let (blobs, chains) = berth_build::builder::references(&self.images);
        match self.images.gc_keeping(&blobs, &chains) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!("removed {n} blobs and snapshots of an interrupted build or commit")
            }
            Err(e) => tracing::warn!(
                "removing the blobs and snapshots of an interrupted build or commit: {e}"
            ),
        }
    }

    /// The containers' directories (named by an id) that have no record, or an empty one, or
    /// an empty mounts record (a volatile create's, see `Mounts::damaged`).
    fn unrecorded_dirs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.cfg.data_root.join("containers")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|id| {
                self.lookup(id).is_err()
                    && (self.mounts.damaged(id)
                        || match std::fs::metadata(self.record_path(id)) {
                            Ok(m) => m.len() == 0,
                            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                        })
            })
            .collect()
    }

    fn recover_create(&self, id: &str) {
        if self.lookup(id).is_ok() {
            return;
        }
        tracing::info!("undoing the interrupted creation of container {id}");
        // The participants read what they reserved from the container's directory.
        for p in self.participants().iter().rev() {
            p.remove(id, true);
        }
        self.remove_snapshot(id);
        let _ = std::fs::remove_dir_all(self.exec_dir(id));
        let dir = self.data_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", dir.display());
            }
        }
    }

    fn recover_task(&self, id: &str) {
        let running = match self.lookup(id) {
            Ok(e) => e.rec.lock().unwrap().state.running,
            // Removed meanwhile (its removal cleans up what is left).
            Err(_) => false,
        };
        if running {
            return;
        }
        tracing::info!("undoing the interrupted start or exit of container {id}");
        self.discard_task(id);
        for p in self.participants().iter().rev() {
            p.exit(id);
        }
    }

    /// The processes of this daemon's tasks whose container `select` picks: its shims and
    /// the runtime calls they or the daemon made (their argv names this daemon's runtime
    /// root, as `--runtime-root` or `--root`, and the container's id), as `(pid, id)`.
    /// Read from `/proc`, so a shim is found without its directory (its socket or pid
    /// file may be gone with a crash).
    fn task_processes(&self, select: &dyn Fn(&str) -> bool) -> Vec<(i32, String)> {
        let root = self.cfg.exec_root.join("runtime");
        let root = root.as_os_str().as_encoded_bytes();
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        let mut out = Vec::new();
        for (pid, args) in berth_util::process::command_lines() {
            if pid == me || !args.iter().any(|a| a.as_slice() == root) {
                continue;
            }
            let id = args
                .iter()
                .filter_map(|a| std::str::from_utf8(a).ok())
                .find(|a| a.len() == 64 && a.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(id) = id {
                if select(id) {
                    out.push((pid, id.to_string()));
                }
            }
        }
        out
    }

    /// Kills (`SIGKILL`) the shims and runtime calls of the containers `select` picks (see
    /// [`Engine::task_processes`]) that are still there after `grace` (a shim told to shut
    /// down exits by itself), again until none is left (a dying shim's runtime call may
    /// have just started) or a few seconds passed. Returns the ids it killed processes of.
    /// Blocking.
    fn kill_task_processes(&self, select: &dyn Fn(&str) -> bool, grace: Duration) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let start = std::time::Instant::now();
        let deadline = start + grace + Duration::from_secs(5);
        loop {
            let procs = self.task_processes(select);
            if procs.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            if start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            for (pid, id) in procs {
                tracing::info!("killing process {pid} of container {id}, whose shim is unreachable or which has no record");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ids
    }

    /// Ends what a removed container (`id`, whose record is gone) may still have running
    /// after [`Engine::discard_task`]: a shim that could not be asked (its socket was not
    /// bound yet, or is gone) and runtime calls, by their processes; then the runtime's
    /// state. Blocking.
    pub(crate) fn discard_unreachable_task(&self, id: &str) {
        let grace = Duration::from_secs(1);
        if !self.kill_task_processes(&|x| x == id, grace).is_empty() {
            self.discard_task(id);
        }
    }

    /// What a crash can leave of containers that have no record (a removal committed while
    /// their shim was starting or unreachable, see `clean_storage`): their shims and
    /// runtime calls (killed), their runtime state (deleted with its processes and cgroups),
    /// their run-time directory and writable snapshot. At daemon start, after the records
    /// are loaded, unfinished removals finished and intents recovered, when every container
    /// of this daemon has a record.
    pub(crate) fn sweep_unrecorded_tasks(&self) {
        let known = |id: &str| self.map.lock().unwrap().contains_key(id);
        let is_id = |n: &str| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit());
        let mut ids = self.kill_task_processes(&|id| !known(id), Duration::ZERO);
        for dir in [
            self.cfg.exec_root.join("runtime"),
            self.cfg.exec_root.join("containers"),
        ] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for n in rd
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                {
                    if is_id(&n) && !known(&n) && !ids.contains(&n) {
                        ids.push(n);
                    }
                }
            }
        }
        for id in ids {
            // A removal in progress is finished by the daemon start (`.removing-ID`).
            tracing::warn!("container {id} has no record: deleting what is left of it");
            self.discard_task(&id);
            self.remove_snapshot(&id);
            let dir = self.exec_dir(&id);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
            }
        }
    }

    /// Resumes a container that a commit paused (see the module docs).
    fn recover_pause(&self, id: &str) {
        let Ok(e) = self.lookup(id) else {
            return;
        };
        if !e.rec.lock().unwrap().state.running {
            return;
        }
        tracing::info!("resuming container {id}, paused by an interrupted commit");
        let rt = Runtime::new(&self.cfg.runtime, self.cfg.exec_root.join("runtime"));
        // Not paused (the crash came before the pause) or gone meanwhile (the reattach pass
        // records its exit): nothing to resume.
        if let Err(err) = rt.call(rt.resume(id), None) {
            tracing::info!("resuming container {id}: {err}");
        }
        let mut r = e.rec.lock().unwrap();
        if r.state.paused {
            r.state.paused = false;
            r.state.status = "running".into();
            if let Err(err) = self.persist(&r) {
                tracing::warn!("recording the resume of container {id}: {err}");
            }
        }
    }

    /// Removes a container's writable snapshot (a missing one is fine).
    pub(crate) fn remove_snapshot(&self, id: &str) {
        if let Ok(sn) = self.images.snapshotter() {
            match sn.remove_container(id) {
                Ok(()) | Err(berth_image::snapshot::SnapshotError::ContainerNotFound(_)) => {}
                Err(err) => tracing::warn!("removing snapshot of {id}: {err}"),
            }
        }
    }

    /// Ends whatever the runtime still has of a container that is not (or no longer)
    /// monitored, as containerd does when a shim dies: its shim if it answers (it kills the
    /// container and deletes it from the runtime), else the runtime's `delete --force`
    /// (kills every process in the container's cgroups, removes them and its state); then
    /// the rootfs mount and the shim's directory. Blocking.
    pub(crate) fn discard_task(&self, id: &str) {
        if let Ok(mut c) = berth_shim::client::Client::connect(&self.shim_socket(id)) {
            let _ = c.set_timeout(Some(Duration::from_secs(20)));
            let _ = c.shutdown(true);
        }
        let rt = Runtime::new(&self.cfg.runtime, self.cfg.exec_root.join("runtime"));
        // The state directory of runc-compatible runtimes is ROOT/ID.
        if rt.root.join(id).exists() {
            match rt.call(rt.delete(id, true), None) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!("deleting container {id} from the runtime: {e}"),
            }
        }
        let _ = berth_image::snapshot::unmount(&self.rootfs(id));
        let shim_dir = self.shim_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&shim_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing {}: {e}", shim_dir.display());
            }
        }
    }
}
