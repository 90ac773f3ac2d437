//! Progress reporting for pulls and pushes.
//!
//! The client calls a [`Progress`] with image-level events and per-layer events (keyed by the
//! blob's digest; Docker shows its first 12 hex digits). A terminal front end can draw one bar
//! per layer like `docker pull`; [`PlainProgress`] prints one line per status change, like
//! `docker pull` does when its output is not a terminal. Events may come from several
//! threads.

use std::io::Write;
use std::sync::Mutex;

use berth_image::Digest;

/// Image-level events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEvent {
    /// Resolving a reference (`docker pull`: `latest: Pulling from library/busybox`).
    PullingFrom {
        /// The tag or digest being pulled.
        tag: String,
        /// The repository path on its registry (`library/busybox`), as Docker prints it.
        repository: String,
    },
    /// The manifest was resolved to this digest (the repository digest).
    Resolved {
        /// The digest the tag points to.
        digest: Digest,
    },
    /// A push is starting (`The push refers to repository [...]`).
    PushingTo {
        /// The repository (`domain/path`).
        repository: String,
    },
    /// The manifest was pushed (`<tag>: digest: sha256:… size: N`).
    Pushed {
        /// The tag or digest pushed to.
        tag: String,
        /// The manifest's digest.
        digest: Digest,
        /// The manifest's size in bytes.
        size: u64,
    },
}

/// Per-layer (per-blob) events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEvent {
    /// Pull: the layer is known and queued.
    PullingFsLayer,
    /// Pull or push: waiting for a download / upload slot (or for the layer below).
    Waiting,
    /// Pull: bytes downloaded so far (including bytes resumed from an earlier attempt).
    Downloading {
        /// Bytes so far.
        current: u64,
        /// Total bytes.
        total: u64,
    },
    /// Pull: a connection broke; resuming from `offset` with a Range request.
    Retrying {
        /// Which attempt this is (1 = first retry).
        attempt: u32,
        /// Byte offset resumed from.
        offset: u64,
    },
    /// Pull: the whole blob is in; checking its digest.
    VerifyingChecksum,
    /// Pull: the blob is verified and stored.
    DownloadComplete,
    /// Pull: compressed bytes consumed by the unpacker so far.
    Extracting {
        /// Bytes so far.
        current: u64,
        /// Total bytes.
        total: u64,
    },
    /// Pull: the layer is unpacked and its snapshot committed.
    PullComplete,
    /// Pull: the blob and the snapshot were present already.
    AlreadyExists,
    /// Push: about to check the layer.
    Preparing,
    /// Push: bytes uploaded so far.
    Pushing {
        /// Bytes so far.
        current: u64,
        /// Total bytes.
        total: u64,
    },
    /// Push: uploaded.
    Pushed,
    /// Push: mounted from another repository of the same registry.
    MountedFrom {
        /// The source repository path.
        repository: String,
    },
    /// Push: the registry had the blob already.
    LayerAlreadyExists,
}

impl LayerEvent {
    /// Docker's wording for this status (without the byte counts).
    pub fn status(&self) -> String {
        match self {
            Self::PullingFsLayer => "Pulling fs layer".into(),
            Self::Waiting => "Waiting".into(),
            Self::Downloading { .. } => "Downloading".into(),
            Self::Retrying { attempt, offset } => {
                format!("Resuming at byte {offset} (attempt {attempt})")
            }
            Self::VerifyingChecksum => "Verifying Checksum".into(),
            Self::DownloadComplete => "Download complete".into(),
            Self::Extracting { .. } => "Extracting".into(),
            Self::PullComplete => "Pull complete".into(),
            Self::AlreadyExists => "Already exists".into(),
            Self::Preparing => "Preparing".into(),
            Self::Pushing { .. } => "Pushing".into(),
            Self::Pushed => "Pushed".into(),
            Self::MountedFrom { repository } => format!("Mounted from {repository}"),
            Self::LayerAlreadyExists => "Layer already exists".into(),
        }
    }
}

/// Receives progress events. Must be cheap: it is called from download loops.
pub trait Progress: Send + Sync {
    /// An image-level event.
    fn image(&self, event: &ImageEvent);
    /// A per-layer event; `digest` names the blob.
    fn layer(&self, digest: &Digest, event: &LayerEvent);
    /// Push: every blob of the manifest `digest` is in the registry and the manifest is put
    /// next (clients show nothing for it; a daemon's crash tests stop there).
    fn manifest_upload(&self, _digest: &Digest) {}
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn image(&self, _: &ImageEvent) {}
    fn layer(&self, _: &Digest, _: &LayerEvent) {}
}

/// Plain lines, one per status change, as `docker pull` prints when not on a terminal:
///
/// ```text
/// latest: Pulling from library/busybox
/// 3f4d90098f5b: Pulling fs layer
/// 3f4d90098f5b: Downloading
/// 3f4d90098f5b: Verifying Checksum
/// 3f4d90098f5b: Download complete
/// 3f4d90098f5b: Extracting
/// 3f4d90098f5b: Pull complete
/// Digest: sha256:…
/// ```
pub struct PlainProgress {
    out: Mutex<(
        Box<dyn Write + Send>,
        std::collections::HashMap<Digest, String>,
    )>,
}

impl PlainProgress {
    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new((out, Default::default())),
        }
    }

    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }
}

impl Progress for PlainProgress {
    fn image(&self, event: &ImageEvent) {
        let line = match event {
            ImageEvent::PullingFrom { tag, repository } => {
                format!("{tag}: Pulling from {repository}")
            }
            ImageEvent::Resolved { digest } => format!("Digest: {digest}"),
            ImageEvent::PushingTo { repository } => {
                format!("The push refers to repository [{repository}]")
            }
            ImageEvent::Pushed { tag, digest, size } => {
                format!("{tag}: digest: {digest} size: {size}")
            }
        };
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(g.0, "{line}");
        let _ = g.0.flush();
    }

    fn layer(&self, digest: &Digest, event: &LayerEvent) {
        let status = event.status();
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if g.1.get(digest) == Some(&status) {
            return;
        }
        g.1.insert(digest.clone(), status.clone());
        let _ = writeln!(g.0, "{}: {status}", digest.short());
        let _ = g.0.flush();
    }
}

/// Records every event (for tests and for front ends that replay them).
#[derive(Debug, Default)]
pub struct RecordingProgress {
    /// Image events, in order.
    pub images: Mutex<Vec<ImageEvent>>,
    /// Layer events, in order.
    pub layers: Mutex<Vec<(Digest, LayerEvent)>>,
}

impl RecordingProgress {
    /// Layer events for one digest.
    pub fn for_layer(&self, digest: &Digest) -> Vec<LayerEvent> {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(d, _)| d == digest)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// All layer events.
    pub fn all_layers(&self) -> Vec<(Digest, LayerEvent)> {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Progress for RecordingProgress {
    fn image(&self, event: &ImageEvent) {
        self.images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
    fn layer(&self, digest: &Digest, event: &LayerEvent) {
        self.layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((digest.clone(), event.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_once_per_status() {
        let buf = Buf::default();
        let p = PlainProgress::new(Box::new(buf.clone()));
        let d = Digest::of_bytes(b"x");
        p.image(&ImageEvent::PullingFrom {
            tag: "1".into(),
            repository: "test/busybox".into(),
        });
        p.layer(&d, &LayerEvent::PullingFsLayer);
        for i in 0..5 {
            p.layer(
                &d,
                &LayerEvent::Downloading {
                    current: i,
                    total: 5,
                },
            );
        }
        p.layer(&d, &LayerEvent::PullComplete);
        let s = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let short = d.short();
        assert_eq!(
            s,
            format!(
                "1: Pulling from test/busybox\n{short}: Pulling fs layer\n{short}: Downloading\n{short}: Pull complete\n"
            )
        );
    }
}
