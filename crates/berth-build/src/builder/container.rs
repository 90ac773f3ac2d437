//! A step's work directory and the overlay mounts of states in it, cleaned up whatever
//! happens.
//!
//! Build mounts are not snapshotter containers: nothing is written to the snapshotter's
//! metadata (no fsyncs) for a step that lives a few milliseconds. They are overlay
//! `volatile` mounts in `<data-root>/tmp/<kind>-<pid>-<id>/`; a later daemon removes what a
//! crashed one left (`cache::cleanup_stale`).

use std::fs;
use std::path::{Path, PathBuf};

use berth_image::image_store::{ImageStore, LayerRecord};
use berth_image::Digest;

use super::error::{self, io_at, BuildError, Result};
use super::run::RuntimeContainer;
use super::state::State;

/// Cleans up a step's container whatever happens: the runtime's container, the mounts
/// (deepest first), the work directory.
pub(super) struct ContainerGuard {
    /// A new random ID: the runtime container's, its hostname and work directory's (the
    /// first 12 digits).
    pub id: String,
    pub work: PathBuf,
    mounts: Vec<PathBuf>,
    /// A RUN container the runtime may still hold.
    pub runtime: Option<RuntimeContainer>,
}

impl ContainerGuard {
    /// A work directory `<tmp>/<kind>-<pid>-<id>` (created when something is mounted).
    pub fn new(store: &ImageStore, kind: &str) -> Result<ContainerGuard> {
        let id = super::new_id();
        let work = store
            .tmp_dir()
            .map_err(error::store("creating the build's work directory"))?
            .join(format!("{kind}-{}-{}", std::process::id(), &id[..12]));
        Ok(ContainerGuard {
            id,
            work,
            mounts: Vec::new(),
            runtime: None,
        })
    }

    /// The ID as Docker shows it.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
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
        self.unmount_all();
        let _ = fs::remove_dir_all(&self.work);
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

/// Mounts `layers` (unpacked into snapshots when needed) with a fresh upper directory at
/// `<work>/rootfs` (`<work>/upper`, `<work>/work` beside it), recording the mount in `guard`.
pub(super) fn mount_layers(
    store: &ImageStore,
    layers: &[LayerRecord],
    work: &Path,
    guard: &mut ContainerGuard,
) -> Result<PathBuf> {
    let snap = store
        .snapshotter()
        .map_err(error::store("opening the snapshotter"))?;
    let top = store
        .unpack(layers)
        .map_err(error::store("unpacking the parent's layers"))?;
    let rootfs = work.join("rootfs");
    let upper = work.join("upper");
    let wk = work.join("work");
    for d in [&rootfs, &upper, &wk] {
        fs::create_dir_all(d).map_err(io_at("creating directory", d))?;
    }
    let lowers = match &top {
        Some(t) => snap
            .overlay_lowers(t)
            .ok_or(BuildError::Unsupported(
                "the builder needs the overlay snapshotter (the copy driver cannot record changes)",
            ))?
            .map_err(error::snapshot("finding the parent's layers"))?,
        None => {
            let empty = work.join("lower-empty");
            fs::create_dir_all(&empty).map_err(io_at("creating directory", &empty))?;
            vec![empty]
        }
    };
    // Volatile: unmounting does not sync the host file system; the upper directory is
    // archived right after, and a crashed build's work directory is thrown away.
    berth_image::snapshot::mount_overlay_volatile(&lowers, (&upper, &wk), &rootfs)
        .map_err(error::snapshot("mounting the step's root file system"))?;
    guard.mounts.push(rootfs.clone());
    Ok(rootfs)
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
