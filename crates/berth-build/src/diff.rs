//! An overlayfs upper directory → a layer tar (OCI whiteouts), gzip-compressed (flate2 with
//! the zlib-rs backend, level 6, pinned: the level changes blob digests) into the blob store.
//!
//! Whiteouts: a 0:0 character device becomes an empty `.wh.<name>`; a directory with
//! `trusted.overlay.opaque=y` gets a `<dir>/.wh..wh..opq` entry. Entries are written in
//! sorted order with the files' modes, owners and modification times, so the same tree
//! always gives the same DiffID.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_image::digest::HashingWriter;
use berth_image::image_store::LayerRecord;
use berth_image::manifest::media_types as mt;
use berth_image::store::BlobStore;
use berth_image::Digest;

/// The gzip level of layers we write.
pub const GZIP_LEVEL: u32 = 6;

/// A written layer.
#[derive(Debug, Clone)]
pub struct WrittenLayer {
    pub record: LayerRecord,
    /// Uncompressed tar size.
    pub tar_size: u64,
}

struct Walker<'s, W: Write> {
    b: tar::Builder<W>,
    content: u64,
    inodes: HashMap<(u64, u64), String>,
    /// Entries left out, with what is below them (by path relative to the upper directory).
    skip: &'s dyn Fn(&str) -> bool,
}

fn header(m: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(m.uid() as u64);
    h.set_gid(m.gid() as u64);
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, dir: &Path, rel: &str) -> io::Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
        names.sort_by_key(|a| a.file_name());
        for e in names {
            let name = e.file_name();
            let name = String::from_utf8_lossy(name.as_bytes()).into_owned();
            let path = e.path();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if (self.skip)(&r) {
                continue;
            }
            let m = fs::symlink_metadata(&path)?;
            let ft = m.file_type();
            if ft.is_char_device() && m.rdev() == 0 {
                let wh = match r.rsplit_once('/') {
                    Some((d, n)) => format!("{d}/.wh.{n}"),
                    None => format!(".wh.{r}"),
                };
                let mut h = header(&m, tar::EntryType::Regular);
                h.set_mode(0o644);
                self.b.append_data(&mut h, &wh, io::empty())?;
            } else if ft.is_dir() {
                let mut h = header(&m, tar::EntryType::Directory);
                self.b.append_data(&mut h, format!("{r}/"), io::empty())?;
                if is_opaque(&path) {
                    let mut h = header(&m, tar::EntryType::Regular);
                    h.set_mode(0o644);
                    self.b
                        .append_data(&mut h, format!("{r}/.wh..wh..opq"), io::empty())?;
                }
                self.walk(&path, &r)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)?;
                let mut h = header(&m, tar::EntryType::Symlink);
                self.content += target.as_os_str().len() as u64;
                self.b.append_link(&mut h, &r, &target)?;
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = self.inodes.get(&(m.dev(), m.ino())) {
                        let mut h = header(&m, tar::EntryType::Link);
                        self.b.append_link(&mut h, &r, first)?;
                        continue;
                    }
                    self.inodes.insert((m.dev(), m.ino()), r.clone());
                }
                let mut h = header(&m, tar::EntryType::Regular);
                h.set_size(m.len());
                self.content += m.len();
                let f = fs::File::open(&path)?;
                self.b.append_data(&mut h, &r, f)?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    // Sockets do not go into layers.
                    continue;
                };
                let mut h = header(&m, kind);
                let rdev = m.rdev();
                h.set_device_major(rustix::fs::major(rdev))?;
                h.set_device_minor(rustix::fs::minor(rdev))?;
                self.b.append_data(&mut h, &r, io::empty())?;
            }
        }
        Ok(())
    }
}

/// Whether a directory of an overlay upper or lower layer is opaque (hides what the layers
/// below hold under it).
pub(crate) fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    match rustix::fs::lgetxattr(p, berth_image::layer::overlay_opaque_xattr(), &mut buf) {
        Ok(n) => &buf[..n] == b"y",
        Err(_) => false,
    }
}

/// Archives `upper` into a gzip layer blob. Returns the layer record.
pub fn write_layer(blobs: &BlobStore, upper: &Path) -> io::Result<WrittenLayer> {
    let (w, pending) = write_layer_pending(blobs, upper)?;
    blobs.publish(vec![pending]).map_err(io::Error::other)?;
    Ok(w)
}

/// [`write_layer`] whose blob is left pending (not yet durable nor visible): the caller
/// publishes it with [`BlobStore::publish`], with others at once.
pub fn write_layer_pending(
    blobs: &BlobStore,
    upper: &Path,
) -> io::Result<(WrittenLayer, berth_image::store::PendingBlob)> {
    write_layer_pending_filtered(blobs, upper, &|_| false)
}

/// [`write_layer_pending`] leaving out the entries `skip` names (paths relative to `upper`,
/// without a leading `/`) and what is below them.
pub fn write_layer_pending_filtered(
    blobs: &BlobStore,
    upper: &Path,
    skip: &dyn Fn(&str) -> bool,
) -> io::Result<(WrittenLayer, berth_image::store::PendingBlob)> {
    let w = blobs.writer().map_err(io::Error::other)?;
    let gz = flate2::write::GzEncoder::new(
        io::BufWriter::with_capacity(128 * 1024, w),
        flate2::Compression::new(GZIP_LEVEL),
    );
    let hw = HashingWriter::new(gz);
    let mut walker = Walker {
        b: tar::Builder::new(hw),
        content: 0,
        inodes: HashMap::new(),
        skip,
    };
    walker.b.mode(tar::HeaderMode::Complete);
    walker.walk(upper, "")?;
    let content = walker.content;
    let hw = walker.b.into_inner()?;
    let (hasher, gz) = hw.into_parts();
    let tar_size = hasher.count();
    let diff_id = hasher.finish();
    let bw = gz.finish()?;
    let w = bw.into_inner().map_err(|e| e.into_error())?;
    let size = w.written();
    let pending = w.finish_pending().map_err(io::Error::other)?;
    Ok((
        WrittenLayer {
            record: LayerRecord {
                digest: pending.digest().clone(),
                media_type: mt::OCI_LAYER_GZIP.to_string(),
                size,
                diff_id,
                unpacked_size: content,
            },
            tar_size,
        },
        pending,
    ))
}

/// The DiffID of an empty layer (an empty upper directory).
pub fn empty_diff_id() -> Digest {
    Digest::of_bytes(&[0u8; 1024])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteouts_and_determinism() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let up = d.path().join("up");
        fs::create_dir_all(up.join("a/b")).unwrap();
        fs::write(up.join("a/f"), b"hello").unwrap();
        fs::hard_link(up.join("a/f"), up.join("a/g")).unwrap();
        std::os::unix::fs::symlink("f", up.join("a/l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            up.join("gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        let l1 = write_layer(&store, &up).unwrap();
        let l2 = write_layer(&store, &up).unwrap();
        assert_eq!(l1.record.diff_id, l2.record.diff_id);
        assert_eq!(l1.record.digest, l2.record.digest);
        assert_eq!(
            layer_names(&store, &l1.record.digest),
            vec!["a/", "a/b/", "a/f", "a/g", "a/l", ".wh.gone"]
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            write_layer(&store, empty.path()).unwrap().record.diff_id,
            empty_diff_id()
        );
    }

    #[test]
    fn filtered_layers_leave_out_the_skipped_entries() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(d.path().join("store")).unwrap();
        let up = d.path().join("up");
        fs::create_dir_all(up.join("proc/sub")).unwrap();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::write(up.join("etc/hosts"), b"").unwrap();
        fs::write(up.join("etc/kept"), b"x").unwrap();
        let (l, pending) =
            write_layer_pending_filtered(&store, &up, &|r| r == "proc" || r == "etc/hosts")
                .unwrap();
        store.publish(vec![pending]).unwrap();
        assert_eq!(
            layer_names(&store, &l.record.digest),
            vec!["etc/", "etc/kept"]
        );
    }

    /// The entry names of a stored (gzipped) layer, in archive order.
    fn layer_names(store: &BlobStore, digest: &Digest) -> Vec<String> {
        let f = store.open_blob(digest).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }
}
