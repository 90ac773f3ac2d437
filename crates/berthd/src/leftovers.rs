//! Crash leftovers in the data root that no operation owns any more: the spooled context
//! of a build (`tmp/build-ctx-<pid>-…`; a BuildKit build's work directory,
//! `tmp/berth-bk-<pid>-…`, when `/dev/shm` is not there), the work directories of build
//! steps with their
//! overlay mounts (`tmp/build-<pid>-…`, `tmp/from-<pid>-…`) and their pending layer blobs
//! (`ingest/<pid>-…`), all of a daemon that is gone, and partial downloads
//! (`partial/<hex>`) that no pull holds (a pull locks its file while it writes it). At
//! daemon start also the build step containers such a build left running
//! ([`remove_build_containers`]).
//!
//! Removed at daemon start and by `POST /build/prune` (which `system prune` runs); `system
//! df` counts them as build cache records of type `crash-leftover`, which is what prune
//! reclaims. A partial download is kept while the daemon runs (a retried pull resumes
//! it), not across a restart.
//!
//! Outside the data root, the daemon start also removes the private credentials files of
//! pulls and pushes ([`auth_dir`]) and the build contexts extracted to `/dev/shm` (classic
//! and BuildKit builds') of a daemon that is gone.

use std::path::{Path, PathBuf};

use berth_image::image_store::ImageStore;

/// One leftover.
#[derive(Debug, Clone)]
pub struct Leftover {
    pub path: PathBuf,
    pub size: u64,
}

/// The prefix of a build context's spool directory made by this process.
pub fn context_prefix() -> String {
    format!("build-ctx-{}-", std::process::id())
}

/// Where small build contexts are extracted (tmpfs).
pub const SHM: &str = "/dev/shm";

/// The name prefix of this daemon's build contexts in [`SHM`].
const SHM_CONTEXT: &str = "berth-build-ctx-";

/// The prefix of a build context extracted to [`SHM`] by this process (claimed: see
/// [`berth_util::shared_tmp`]); `None` when the claim cannot be made (no `/dev/shm`).
pub fn shm_context_prefix() -> Option<String> {
    berth_util::shared_tmp::claim(Path::new(SHM), SHM_CONTEXT).ok()
}

/// Removes the build contexts in [`SHM`] of daemons that are gone (at daemon start and
/// before each build; other daemons' live contexts stay, in any PID namespace).
pub fn remove_shm_contexts() {
    for path in berth_util::shared_tmp::sweep(Path::new(SHM), SHM_CONTEXT) {
        tracing::info!(
            "removed the build context {} of a crashed build",
            path.display()
        );
    }
}

/// Whether the `<pid>` at the start of `rest` names a process that is neither this one nor
/// running (a name without a pid, from an older daemon, counts as gone).
fn owner_gone(rest: &str) -> bool {
    match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => true,
    }
}

/// Runs `f` on a partial download's file while holding its lock, if no pull holds it.
fn with_unheld(path: &Path, f: impl FnOnce(&std::fs::File)) {
    let Ok(file) = std::fs::File::open(path) else {
        return;
    };
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        f(&file);
    }
}

fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default()
}

/// The leftovers there are now.
pub fn find(store: &ImageStore) -> Vec<Leftover> {
    let mut out = Vec::new();
    for (name, path) in entries(&store.root().join("tmp")) {
        let rest = name
            .strip_prefix("build-ctx-")
            .or_else(|| name.strip_prefix("build-"))
            .or_else(|| name.strip_prefix("from-"))
            .or_else(|| name.strip_prefix("berth-bk-"));
        if rest.is_some_and(owner_gone) {
            let size = crate::volumes::dir_size(&path);
            out.push(Leftover { path, size });
        }
    }
    let blobs = store.blobs().root().to_path_buf();
    for (name, path) in entries(&blobs.join("ingest")) {
        if name
            .split('-')
            .next()
            .is_some_and(|p| p.parse::<u32>().is_ok())
            && owner_gone(&name)
        {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            out.push(Leftover { path, size });
        }
    }
    for (_, path) in entries(&blobs.join("partial")) {
        with_unheld(&path.clone(), |f| {
            let size = f.metadata().map_or(0, |m| m.len());
            out.push(Leftover { path, size });
        });
    }
    out
}

/// Removes the leftovers; what was removed, with its size.
pub fn remove(store: &ImageStore) -> Vec<Leftover> {
    let found = find(store);
    // Build work directories: unmounted and removed by the builder's own sweep.
    berth_build::builder::cleanup_stale(store);
    let mut removed = Vec::new();
    for l in found {
        let res = if l.path.is_dir() {
            std::fs::remove_dir_all(&l.path)
        } else {
            let mut r = Ok(());
            if l.path.parent().and_then(Path::file_name) == Some("partial".as_ref()) {
                // Under its lock: a pull that opens it meanwhile sees a new inode and
                // starts over.
                with_unheld(&l.path, |_| r = std::fs::remove_file(&l.path));
            } else {
                r = std::fs::remove_file(&l.path);
            }
            r
        };
        match res {
            Ok(()) => removed.push(l),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(l),
            Err(e) => tracing::warn!("removing the leftover {}: {e}", l.path.display()),
        }
    }
    if !removed.is_empty() {
        tracing::info!("removed {} crash leftovers", removed.len());
    }
    removed
}

/// Deletes, through the runtime (`delete --force`: processes, cgroups, state), the build
/// step containers whose state is in `root` (the builders' runtime root): at daemon start
/// they belong to builds of a daemon that crashed. The directory is made again by the next
/// build.
pub fn remove_build_containers(runtime: &Path, root: &Path) {
    let rt = berth_util::runtime::Runtime::new(runtime, root);
    for (id, _) in entries(root) {
        // `@…`: the runtime's own (its seccomp cache).
        if id.starts_with('@') {
            continue;
        }
        tracing::info!("deleting the build step container {id} of a crashed build");
        match rt.call(rt.delete(&id, true), None) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!("deleting the build step container {id}: {e}"),
        }
    }
}

/// `system df`'s build cache records of the leftovers.
pub fn records(store: &ImageStore) -> Vec<berth_api::system::BuildCacheRecord> {
    find(store)
        .into_iter()
        .map(|l| {
            let created = std::fs::symlink_metadata(&l.path)
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    crate::util::format_rfc3339_nano(m.mtime(), m.mtime_nsec() as u32)
                })
                .unwrap_or_default();
            let name = l
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            berth_api::system::BuildCacheRecord {
                id: name,
                parents: None,
                kind: "crash-leftover".into(),
                description: format!("crash leftover {}", l.path.display()),
                in_use: false,
                shared: false,
                size: l.size as i64,
                created_at: created.clone(),
                last_used_at: Some(created),
                usage_count: 0,
            }
        })
        .collect()
}

/// Where a pull or push keeps the credentials of its `X-Registry-Auth` header while it runs
/// (a private directory each, removed when it ends; see `images::registry_config`).
pub fn auth_dir(exec_root: &Path) -> PathBuf {
    exec_root.join("auth")
}

/// Removes the credentials that pulls and pushes of a crashed daemon left (at daemon
/// start, before any request runs).
pub fn remove_auth_dirs(exec_root: &Path) {
    let dir = auth_dir(exec_root);
    for (name, path) in entries(&dir) {
        tracing::info!("removing the credentials {name} of a crashed pull or push");
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!("removing {}: {e}", path.display());
        }
    }
}
