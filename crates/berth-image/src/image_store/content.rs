//! Layer content: sizes counted as Docker counts them, decompression, and the manifest
//! synthesised for an image that came without one.

use super::*;

/// Content size of a layer stream (plain, gzip or zstd tar) as Docker counts it: regular file
/// sizes plus symlink target lengths (hard links count once, directories not at all).
pub fn layer_content_size(reader: impl Read) -> io::Result<u64> {
    let dec = decompress(reader)?;
    tar_content_size(dec)
}

/// Like [`layer_content_size`] for an uncompressed tar.
pub fn tar_content_size(reader: impl Read) -> io::Result<u64> {
    let mut ar = tar::Archive::new(reader);
    let mut total = 0u64;
    for e in ar.entries()? {
        let e = e?;
        let h = e.header();
        match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let name = e.path_bytes();
                let base = name.rsplit(|b| *b == b'/').next().unwrap_or(&name);
                if !base.starts_with(b".wh.") {
                    total += e.size();
                }
            }
            tar::EntryType::Symlink => {
                total += e.link_name_bytes().map(|l| l.len() as u64).unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(total)
}

/// Wraps a stream in the decompressor its magic bytes call for (plain, gzip, zstd).
pub fn decompress<'a>(mut reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = crate::fsutil::read_head(&mut reader, 6)?;
    let comp = Compression::detect(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let chained = io::BufReader::with_capacity(256 * 1024, io::Cursor::new(head).chain(reader));
    Ok(match comp {
        Compression::None => Box::new(chained),
        Compression::Gzip => crate::gzip::decoder(chained),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(chained)?),
    })
}

/// An OCI manifest for a config and layers (used when an image arrives without one: load
/// from a docker archive, import, build).
pub fn synthesize_manifest(config: &[u8], layers: &[Descriptor]) -> Vec<u8> {
    let m = ImageManifest {
        schema_version: 2,
        media_type: Some(mt::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor {
            media_type: mt::OCI_CONFIG.to_string(),
            digest: Digest::of_bytes(config),
            size: config.len() as u64,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
        },
        layers: layers.to_vec(),
        subject: None,
        annotations: None,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}
