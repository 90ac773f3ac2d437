//! `berth-image`: Berth's image layer.
//!
//! - [`reference`]: Docker image references, parsed and normalised exactly like
//!   docker/distribution (`busybox` = `docker.io/library/busybox:latest`).
//! - [`digest`]: content digests (sha256) and streaming verification.
//! - [`store`]: a verified, content-addressable blob store.
//! - [`fsutil`]: crash-safe file writes.
//! - [`manifest`]: OCI / Docker schema 2 manifests, indexes, image configs, platforms, chain IDs.
//! - [`layer`]: confined application of layer tarballs (whiteouts, overlay or flat mode).
//! - [`snapshot`]: layer snapshots (overlayfs, or a copying fallback) and container rootfs.
//! - [`image_store`]: the image index (IDs, tags, digests), Docker's rmi rules, inspect, history.
//! - [`archive`]: `docker save` / `docker load` archives, OCI layout archives, `import`.
//! - [`timeutil`]: RFC 3339 parsing and formatting.
//! - [`gzip`]: the gzip decoder every layer path uses.
#![forbid(unsafe_code)]

/// Defines `fn $name(op, path) -> impl FnOnce(io::Error) -> $err`: the `map_err` helper of an
/// error type with an `Io(`[`fsutil::PathIoError`]`)` variant, naming what failed where.
macro_rules! io_error_fn {
    ($name:ident, $err:ident) => {
        fn $name<'a>(
            op: &'static str,
            path: &'a std::path::Path,
        ) -> impl FnOnce(std::io::Error) -> $err + 'a {
            move |source| {
                $err::Io($crate::fsutil::PathIoError {
                    op,
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    };
}

/// Implements the text forms of a parsed value type: `FromStr` through `$parse`, `Serialize`
/// as its `Display` text, and `Deserialize` from a string through `$deserialize`.
macro_rules! text_form {
    ($ty:ident, $err:ident, $parse:path, $deserialize:path) => {
        impl std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $parse(s)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $deserialize(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod archive;
pub mod digest;
pub mod fsutil;
pub mod gzip;
pub mod image_store;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod snapshot;
pub mod store;
/// RFC 3339 timestamps (`berth_util::time`).
pub use berth_util::time as timeutil;

pub use digest::Digest;
pub use reference::Reference;
