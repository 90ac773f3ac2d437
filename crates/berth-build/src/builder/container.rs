//! A step's work directory and the overlay mounts of states in it, cleaned up whatever
//! happens.
//!
//! Build mounts are not snapshotter containers: nothing is written to the snapshotter's
//! metadata (no fsyncs) for a step that lives a few milliseconds. They are overlay
//! `volatile` mounts in `<data-root>/tmp/<kind>-<pid>-<id>/`; a later daemon removes what a
//! crashed one left (`cache::cleanup_stale`).
//!
//! A step that succeeded hands its container to the build's [`Reaper`], which cleans it up
//! on a thread of its own while the next steps run; the build waits for it before it
//! returns (a finished build leaves nothing behind). A failing step cleans up in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use berth_image::image_store::{ImageStore, LayerRecord};
use berth_image::Digest;

use super::error::{self, BuildError, Result};
use super::run::RuntimeContainer;
use super::state::State;
use crate::fsops::io_at;

/// Cleans up a step's container whatever happens: the runtime's container, its network,
/// the mounts (deepest first), the work directory.
pub(super) struct ContainerGuard {
    /// A new random ID: the runtime container's, its hostname and work directory's (the
    /// first 12 digits).
    pub id: String,
    pub work: PathBuf,
    mounts: Vec<PathBuf>,
    /// A RUN container the runtime may still hold.
    pub runtime: Option<RuntimeContainer>,
    /// What the daemon set up for a RUN step's network ([`super::RunSandbox::guard`]):
    /// released once the container is gone.
    pub network: Option<Box<dyn Send>>,
}

impl ContainerGuard {
    /// A work directory `<tmp>/<kind>-<pid>-<id>` (created when something is mounted).
    pub fn new(store: &ImageStore, kind: &str) -> Result<ContainerGuard> {
        let id = berth_util::id::new_id();
        let work = store
            .tmp_dir()
            .map_err(error::store("creating the build's work directory"))?
            .join(format!("{kind}-{}-{}", std::process::id(), &id[..12]));
        Ok(ContainerGuard {
            id,
            work,
            mounts: Vec::new(),
            runtime: None,
            network: None,
        })
    }

    /// The ID as Docker shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The upper directory of the container's overlay: the step's changes (its layer).
    pub fn upper(&self) -> PathBuf {
        self.work.join("upper")
    }

    pub fn unmount_all(&mut self) {
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = berth_image::snapshot::unmount(&m) {
                tracing::warn!("unmounting {}: {e}", m.display());
            }
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(c) = self.runtime.take() {
            // `run` deletes on exit; this covers a failure half-way.
            c.delete();
        }
        drop(self.network.take());
        self.unmount_all();
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// Cleans up finished steps' containers off the critical path (see the module's
/// documentation): on its thread, started at the first hand-over (a fully cached build
/// starts none), in the order they were handed over. [`Reaper::finish`] (or dropping it)
/// waits until all are gone; what it is handed afterwards is cleaned up in place.
pub(super) struct Reaper(std::sync::Mutex<Reaping>);

enum Reaping {
    Idle,
    Running(mpsc::Sender<ContainerGuard>, std::thread::JoinHandle<()>),
    Finished,
}

impl Reaper {
    pub fn new() -> Reaper {
        Reaper(std::sync::Mutex::new(Reaping::Idle))
    }

    /// Cleans up `g` (in the background).
    pub fn reap(&self, g: ContainerGuard) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*st, Reaping::Idle) {
            let (tx, rx) = mpsc::channel::<ContainerGuard>();
            let spawned = std::thread::Builder::new()
                .name("berth-build-reap".into())
                .spawn(move || {
                    for g in rx {
                        let t0 = std::time::Instant::now();
                        let id = g.short_id().to_string();
                        drop(g);
                        tracing::debug!("step container {id} cleaned up in {:?}", t0.elapsed());
                    }
                });
            match spawned {
                Ok(t) => *st = Reaping::Running(tx, t),
                // Cleaned up in place then.
                Err(e) => tracing::warn!("starting the build's clean-up thread: {e}"),
            }
        }
        let left = match &*st {
            Reaping::Running(tx, _) => tx.send(g).err().map(|mpsc::SendError(g)| g),
            Reaping::Idle | Reaping::Finished => Some(g),
        };
        drop(st);
        drop(left);
    }

    /// Waits until everything handed over is cleaned up.
    pub fn finish(&mut self) {
        let st = self.0.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Reaping::Running(tx, t) = std::mem::replace(st, Reaping::Finished) {
            drop(tx);
            let t0 = std::time::Instant::now();
            if t.join().is_err() {
                tracing::warn!("the build's clean-up thread panicked");
            }
            tracing::debug!("clean-up joined in {:?}", t0.elapsed());
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The chain ID of a layer list's top.
pub(super) fn chain_top(layers: &[LayerRecord]) -> Option<Digest> {
    let mut parent: Option<Digest> = None;
    for l in layers {
        parent = Some(berth_image::snapshot::child_chain_id(
            parent.as_ref(),
            &l.diff_id,
        ));
    }
    parent
}

/// The lower directories of `layers` (unpacked into snapshots when needed), top first;
/// none for no layers.
pub(super) fn lower_dirs(store: &ImageStore, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
    let snap = store
        .snapshotter()
        .map_err(error::store("opening the snapshotter"))?;
    let top = store
        .unpack(layers)
        .map_err(error::store("unpacking the parent's layers"))?;
    match &top {
        Some(t) => snap
            .overlay_lowers(t)
            .ok_or(BuildError::Unsupported(
                "the builder needs the overlay snapshotter (the copy driver cannot record changes)",
            ))?
            .map_err(error::snapshot("finding the parent's layers")),
        None => Ok(Vec::new()),
    }
}

/// Mounts `layers` (unpacked into snapshots when needed) with a fresh upper directory at
/// `<work>/rootfs` (`<work>/upper`, `<work>/work` beside it), recording the mount in `guard`.
pub(super) fn mount_layers(
    store: &ImageStore,
    layers: &[LayerRecord],
    work: &Path,
    guard: &mut ContainerGuard,
) -> Result<PathBuf> {
    let mut lowers = lower_dirs(store, layers)?;
    let rootfs = work.join("rootfs");
    let upper = work.join("upper");
    let wk = work.join("work");
    for d in [&rootfs, &upper, &wk] {
        fs::create_dir_all(d).map_err(io_at("creating directory", d))?;
    }
    if lowers.is_empty() {
        let empty = work.join("lower-empty");
        fs::create_dir_all(&empty).map_err(io_at("creating directory", &empty))?;
        lowers.push(empty);
    }
    // Volatile: unmounting does not sync the host file system; the upper directory is
    // archived right after, and a crashed build's work directory is thrown away.
    berth_image::snapshot::mount_overlay_volatile(&lowers, (&upper, &wk), &rootfs)
        .map_err(error::snapshot("mounting the step's root file system"))?;
    guard.mounts.push(rootfs.clone());
    Ok(rootfs)
}

/// A RUN step's view of one of its image's volumes: dockerd gives the step's container an
/// anonymous volume there, filled from the image and thrown away with the container (the
/// step's writes below a `VOLUME` are not in its layer). An overlay of the image's directory
/// (`lower`, its owner and mode on the root) with a fresh upper directory, mounted at
/// `<work>/merged` and recorded in `guard`; an empty directory when the image has none there.
pub(super) fn volume_view(
    lower: Option<&Path>,
    work: &Path,
    guard: &mut ContainerGuard,
) -> Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let merged = work.join("merged");
    let upper = work.join("upper");
    let wk = work.join("work");
    for d in [&merged, &upper, &wk] {
        fs::create_dir_all(d).map_err(io_at("creating directory", d))?;
    }
    let Some(lower) = lower else {
        return Ok(upper);
    };
    let md = fs::metadata(lower).map_err(io_at("reading", lower))?;
    std::os::unix::fs::chown(&upper, Some(md.uid()), Some(md.gid()))
        .map_err(io_at("changing the owner of", &upper))?;
    fs::set_permissions(&upper, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(io_at("changing the mode of", &upper))?;
    berth_image::snapshot::mount_overlay_volatile(&[lower.to_path_buf()], (&upper, &wk), &merged)
        .map_err(error::snapshot("mounting a volume of the step"))?;
    guard.mounts.push(merged.clone());
    Ok(merged)
}

/// Mounts a state's layers for the duration of `f`.
pub(super) fn with_state_root<T>(
    store: &ImageStore,
    st: &State,
    f: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let mut g = ContainerGuard::new(store, "from")?;
    let work = g.work.clone();
    let root = mount_layers(store, &st.layers, &work, &mut g)?;
    f(&root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts its drops (a step's network, released with the container).
    struct Released(Arc<AtomicUsize>);

    impl Drop for Released {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn guard(work: PathBuf, released: &Arc<AtomicUsize>) -> ContainerGuard {
        fs::create_dir_all(work.join("rootfs/proc")).unwrap();
        fs::create_dir_all(work.join("work/work")).unwrap();
        fs::write(work.join("config.json"), "{}").unwrap();
        ContainerGuard {
            id: berth_util::id::new_id(),
            work,
            mounts: Vec::new(),
            runtime: None,
            network: Some(Box::new(Released(released.clone()))),
        }
    }

    #[test]
    fn the_reaper_cleans_up_what_it_is_handed_and_finish_waits_for_it() {
        let d = tempfile::tempdir().unwrap();
        let released = Arc::new(AtomicUsize::new(0));
        let mut reaper = Reaper::new();
        let works: Vec<PathBuf> = (0..4)
            .map(|i| d.path().join(format!("build-{i}")))
            .collect();
        for w in &works {
            reaper.reap(guard(w.clone(), &released));
        }
        reaper.finish();
        for w in &works {
            assert!(!w.exists(), "{} left after the build", w.display());
        }
        assert_eq!(released.load(Ordering::SeqCst), 4);
        // Once finished, what it is handed is cleaned up in place.
        let late = d.path().join("build-late");
        reaper.reap(guard(late.clone(), &released));
        assert!(!late.exists());
        assert_eq!(released.load(Ordering::SeqCst), 5);
        // A guard dropped in place (a failing step) cleans up as well.
        let failed = d.path().join("build-failed");
        drop(guard(failed.clone(), &released));
        assert!(!failed.exists());
        assert_eq!(released.load(Ordering::SeqCst), 6);
        // Dropping the reaper waits as finish does.
        let reaper = Reaper::new();
        let last = d.path().join("build-last");
        reaper.reap(guard(last.clone(), &released));
        drop(reaper);
        assert!(!last.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
