//! Reading a built image's files for the gateway's `ReadFile`, `ReadDir` and `StatFile`: the
//! layers are unpacked into a temporary directory and the path resolved inside it.

use std::path::Path;

use berth_image::image_store::ImageStore;
use tonic::Status;

use crate::frontend::BuildResult;
use crate::proto::fsutil::types::Stat;

fn with_root<T>(
    store: &ImageStore,
    res: &BuildResult,
    f: impl FnOnce(&Path) -> Result<T, Status>,
) -> Result<T, Status> {
    let tmp = store
        .tmp_dir()
        .map_err(|e| Status::internal(e.to_string()))?;
    let work = tempfile::Builder::new()
        .prefix("berth-bk-read-")
        .tempdir_in(tmp)
        .map_err(|e| Status::internal(e.to_string()))?;
    let rec = store
        .get(&res.image_id)
        .map_err(|e| Status::internal(e.to_string()))?;
    for l in &rec.layers {
        let blob = store
            .blobs()
            .open_blob(&l.digest)
            .map_err(|e| Status::internal(e.to_string()))?;
        berth_image::layer::apply_layer(
            work.path(),
            std::io::BufReader::new(blob),
            &Default::default(),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
    }
    f(work.path())
}

fn resolve(root: &Path, p: &str) -> Result<std::path::PathBuf, Status> {
    berth_build::fsops::resolve_in_root(root, p, true)
        .map_err(|e| Status::not_found(format!("{p}: {e}")))
}

fn stat_of(host: &Path, name: String) -> Result<Stat, Status> {
    use std::os::unix::fs::MetadataExt;
    let m =
        std::fs::symlink_metadata(host).map_err(|e| Status::not_found(format!("{name}: {e}")))?;
    let linkname = if m.file_type().is_symlink() {
        std::fs::read_link(host)
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Stat {
        path: name,
        mode: crate::filesync::gomode::from_unix(m.mode()),
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.len() as i64 },
        mod_time: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        linkname,
        ..Default::default()
    })
}

pub fn read_file(
    store: &ImageStore,
    res: &BuildResult,
    path: &str,
    range: Option<(i64, i64)>,
) -> Result<Vec<u8>, Status> {
    with_root(store, res, |root| {
        let host = resolve(root, path)?;
        let data = std::fs::read(&host).map_err(|e| Status::not_found(format!("{path}: {e}")))?;
        Ok(match range {
            Some((off, len)) => {
                let off = (off.max(0) as usize).min(data.len());
                let end = if len <= 0 {
                    data.len()
                } else {
                    (off + len as usize).min(data.len())
                };
                data[off..end].to_vec()
            }
            None => data,
        })
    })
}

pub fn read_dir(store: &ImageStore, res: &BuildResult, path: &str) -> Result<Vec<Stat>, Status> {
    with_root(store, res, |root| {
        let host = resolve(root, path)?;
        let mut names: Vec<String> = std::fs::read_dir(&host)
            .map_err(|e| Status::not_found(format!("{path}: {e}")))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| stat_of(&host.join(&n), n))
            .collect()
    })
}

pub fn stat(store: &ImageStore, res: &BuildResult, path: &str) -> Result<Stat, Status> {
    with_root(store, res, |root| {
        let host = resolve(root, path)?;
        stat_of(&host, path.to_string())
    })
}
