//! Pushing an image: blobs first (skipped when present, mounted across repositories when
//! possible, else uploaded monolithically or in chunks), the manifest last.

use std::io::Read;
use std::os::unix::fs::FileExt;

use berth_image::manifest::{parse_manifest, Descriptor, Manifest};
use berth_image::store::BlobStore;
use berth_image::{Digest, Reference};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::auth::repository_scope;
use crate::client::{header_str, ApiFailure, Auth, Client, Endpoint, Inner};
use crate::error::{RegistryError, Result};
use crate::progress::{ImageEvent, LayerEvent, Progress};

/// Push options.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Repository paths on the same registry (`library/busybox`) that may already hold the
    /// blobs: each missing blob is first mounted from them (`POST …?mount=&from=`).
    pub mount_from: Vec<String>,
}

/// What was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// How a blob got to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BlobOutcome {
    Existed,
    Mounted(String),
    Uploaded,
}

impl Client {
    /// Pushes the manifest `manifest` (an image manifest or an index, whose blobs and child
    /// manifests are read from `store`) to `reference` (its tag, or its digest when it has no
    /// tag). Blocks until done.
    pub fn push(
        &self,
        reference: &Reference,
        manifest: &[u8],
        store: &BlobStore,
        progress: &dyn Progress,
    ) -> Result<PushedManifest> {
        self.push_with(
            reference,
            manifest,
            store,
            progress,
            &PushOptions::default(),
        )
    }

    /// [`push`](Self::push) with options.
    pub fn push_with(
        &self,
        reference: &Reference,
        manifest: &[u8],
        store: &BlobStore,
        progress: &dyn Progress,
        opts: &PushOptions,
    ) -> Result<PushedManifest> {
        let digest = Digest::of_bytes(manifest);
        if let Some(want) = reference.digest() {
            if want != &digest {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest for {}", reference.familiar_string()),
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let tag = match reference.tag() {
            Some(t) => t.to_string(),
            None => digest.to_string(),
        };
        progress.image(&ImageEvent::PushingTo {
            repository: reference.repository().name(),
        });
        let inner = &*self.inner;
        let pushed = self.rt.block_on(async {
            let eps = inner.primary_candidates(reference.domain())?;
            let ep = inner.endpoint(&eps).await?;
            let mut scopes = vec![repository_scope(reference.path(), true)];
            for f in &opts.mount_from {
                if f != reference.path() {
                    scopes.push(repository_scope(f, false));
                }
            }
            let p = Pusher {
                inner,
                ep: &ep,
                reference,
                scopes: &scopes,
                store,
                progress,
                opts,
            };
            p.push_manifest(manifest, &tag).await
        })?;
        progress.image(&ImageEvent::Pushed {
            tag,
            digest: pushed.digest.clone(),
            size: pushed.size,
        });
        Ok(pushed)
    }
}

struct Pusher<'a> {
    inner: &'a Inner,
    ep: &'a Endpoint,
    reference: &'a Reference,
    scopes: &'a [String],
    store: &'a BlobStore,
    progress: &'a dyn Progress,
    opts: &'a PushOptions,
}

impl Pusher<'_> {
    fn auth(&self) -> Auth<'_> {
        Auth {
            endpoint: self.ep,
            scopes: self.scopes,
        }
    }

    fn path(&self) -> &str {
        self.reference.path()
    }

    async fn fail(&self, method: Method, resp: Response) -> RegistryError {
        ApiFailure::read(&method, resp)
            .await
            .into_error(&self.ep.host)
    }

    fn push_manifest<'b>(
        &'b self,
        bytes: &'b [u8],
        tag: &'b str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PushedManifest>> + 'b>> {
        Box::pin(async move {
            let parsed = parse_manifest(None, bytes)?;
            let media_type = parsed.kind().media_type().to_string();
            match &parsed {
                Manifest::Index(_, idx) => {
                    for child in &idx.manifests {
                        if self.store.exists(&child.digest) {
                            let cb = self.store.read_verified(&child.digest)?;
                            self.push_manifest(&cb, &child.digest.to_string()).await?;
                        } else if !self.manifest_exists(&child.digest).await? {
                            return Err(RegistryError::Invalid(format!(
                                "manifest {} listed in the index is neither in the local store nor in {}",
                                child.digest,
                                self.reference.name()
                            )));
                        }
                    }
                }
                Manifest::Image(_, m) => {
                    let mut blobs: Vec<(&Descriptor, bool)> = vec![(&m.config, false)];
                    blobs.extend(m.layers.iter().map(|l| (l, true)));
                    for (d, is_layer) in &blobs {
                        if *is_layer {
                            self.progress.layer(&d.digest, &LayerEvent::Preparing);
                        }
                    }
                    let n = self.inner.config.max_concurrent_uploads.max(1);
                    let results: Vec<Result<()>> = futures_util::stream::iter(blobs.iter())
                        .map(|(d, is_layer)| self.push_blob(d, *is_layer))
                        .buffer_unordered(n)
                        .collect()
                        .await;
                    for r in results {
                        r?;
                    }
                }
            }
            self.progress.manifest_upload(&Digest::of_bytes(bytes));
            self.put_manifest(bytes, &media_type, tag).await
        })
    }

    async fn manifest_exists(&self, digest: &Digest) -> Result<bool> {
        let url = self
            .ep
            .url(&format!("/v2/{}/manifests/{}", self.path(), digest));
        let accept = berth_image::manifest::media_types::ACCEPTED_MANIFESTS.join(", ");
        let resp = self
            .inner
            .send(self.auth(), Method::HEAD, &url, &|r| {
                r.header("accept", accept.as_str())
            })
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(Method::HEAD, resp).await),
        }
    }

    async fn put_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: &str,
    ) -> Result<PushedManifest> {
        let digest = Digest::of_bytes(bytes);
        let url = self
            .ep
            .url(&format!("/v2/{}/manifests/{}", self.path(), tag));
        let body = bytes.to_vec();
        let resp = self
            .inner
            .send(self.auth(), Method::PUT, &url, &|r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(Method::PUT, resp).await);
        }
        self.check_digest_header(&resp, &digest, "manifest")?;
        Ok(PushedManifest {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
        })
    }

    fn check_digest_header(&self, resp: &Response, want: &Digest, what: &str) -> Result<()> {
        if let Some(h) = header_str(resp.headers(), "docker-content-digest") {
            let got = Digest::parse(&h).map_err(|_| RegistryError::Protocol {
                registry: self.ep.host.clone(),
                message: format!("invalid Docker-Content-Digest {h:?}"),
            })?;
            if &got != want {
                return Err(RegistryError::DigestMismatch {
                    what: format!("{what} as stored by the registry"),
                    expected: want.clone(),
                    actual: got,
                });
            }
        }
        Ok(())
    }

    async fn push_blob(&self, desc: &Descriptor, is_layer: bool) -> Result<()> {
        let outcome = self.push_blob_inner(desc, is_layer).await?;
        if is_layer {
            let ev = match outcome {
                BlobOutcome::Existed => LayerEvent::LayerAlreadyExists,
                BlobOutcome::Uploaded => LayerEvent::Pushed,
                BlobOutcome::Mounted(from) => LayerEvent::MountedFrom { repository: from },
            };
            self.progress.layer(&desc.digest, &ev);
        }
        Ok(())
    }

    async fn push_blob_inner(&self, desc: &Descriptor, is_layer: bool) -> Result<BlobOutcome> {
        let digest = &desc.digest;
        let blob_url = self
            .ep
            .url(&format!("/v2/{}/blobs/{}", self.path(), digest));
        let resp = self
            .inner
            .send(self.auth(), Method::HEAD, &blob_url, &|r| r)
            .await?;
        match resp.status() {
            s if s.is_success() => return Ok(BlobOutcome::Existed),
            StatusCode::NOT_FOUND => {}
            _ => return Err(self.fail(Method::HEAD, resp).await),
        }
        let file = self.store.open_blob(digest)?;
        let size = self.store.size(digest)?;
        if size != desc.size {
            return Err(RegistryError::Invalid(format!(
                "blob {digest} is {size} bytes in the store but the manifest says {}",
                desc.size
            )));
        }

        // Cross-repository mount.
        let mut location: Option<Url> = None;
        for from in self
            .opts
            .mount_from
            .iter()
            .filter(|f| f.as_str() != self.path())
        {
            let url = {
                let mut u =
                    Url::parse(&self.ep.url(&format!("/v2/{}/blobs/uploads/", self.path())))
                        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
                u.query_pairs_mut()
                    .append_pair("mount", &digest.to_string())
                    .append_pair("from", from);
                u.to_string()
            };
            let resp = self
                .inner
                .send(self.auth(), Method::POST, &url, &|r| {
                    r.header(CONTENT_LENGTH, 0)
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    self.check_digest_header(&resp, digest, "mounted blob")?;
                    return Ok(BlobOutcome::Mounted(from.clone()));
                }
                StatusCode::ACCEPTED => {
                    // Mount refused; the registry opened an upload session instead.
                    location = Some(self.location(&resp)?);
                    break;
                }
                _ => {
                    let f = ApiFailure::read(&Method::POST, resp).await;
                    tracing::debug!(from, status = %f.status, "cross-repository mount failed");
                }
            }
        }
        let mut location = match location {
            Some(l) => l,
            None => {
                let url = self.ep.url(&format!("/v2/{}/blobs/uploads/", self.path()));
                let resp = self
                    .inner
                    .send(self.auth(), Method::POST, &url, &|r| {
                        r.header(CONTENT_LENGTH, 0)
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.fail(Method::POST, resp).await);
                }
                self.location(&resp)?
            }
        };

        let report = |current: u64| {
            if is_layer {
                self.progress.layer(
                    digest,
                    &LayerEvent::Pushing {
                        current,
                        total: size,
                    },
                );
            }
        };
        let read_at = |off: u64, len: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, off)
                .map_err(RegistryError::io("read", self.store.blob_path(digest)))?;
            Ok(buf)
        };
        // The upload session is open: `Pushing` from 0, as dockerd shows it.
        report(0);
        let cfg = &self.inner.config;
        let resp = if size <= cfg.monolithic_upload_limit {
            let body = bytes_of_file(&file, size)
                .map_err(RegistryError::io("read", self.store.blob_path(digest)))?;
            let mut url = location.clone();
            url.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            let body = bytes::Bytes::from(body);
            let resp = self
                .inner
                .send(self.auth(), Method::PUT, url.as_str(), &|r| {
                    r.header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, size)
                        .body(body.clone())
                })
                .await?;
            report(size);
            resp
        } else {
            let chunk = cfg.upload_chunk_size.max(1);
            let mut off = 0u64;
            while off < size {
                let len = chunk.min(size - off);
                let data = bytes::Bytes::from(read_at(off, len)?);
                let range = format!("{}-{}", off, off + len - 1);
                let resp = self
                    .inner
                    .send(self.auth(), Method::PATCH, location.as_str(), &|r| {
                        r.header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, len)
                            .header("content-range", range.as_str())
                            .body(data.clone())
                    })
                    .await?;
                if resp.status() != StatusCode::ACCEPTED && resp.status() != StatusCode::NO_CONTENT
                {
                    return Err(self.fail(Method::PATCH, resp).await);
                }
                if resp.headers().contains_key(LOCATION) {
                    location = self.location(&resp)?;
                }
                off += len;
                report(off);
            }
            let mut url = location.clone();
            url.query_pairs_mut()
                .append_pair("digest", &digest.to_string());
            self.inner
                .send(self.auth(), Method::PUT, url.as_str(), &|r| {
                    r.header(CONTENT_LENGTH, 0)
                })
                .await?
        };
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self.fail(Method::PUT, resp).await);
        }
        self.check_digest_header(&resp, digest, "uploaded blob")?;
        Ok(BlobOutcome::Uploaded)
    }

    fn location(&self, resp: &Response) -> Result<Url> {
        let loc =
            header_str(resp.headers(), "location").ok_or_else(|| RegistryError::Protocol {
                registry: self.ep.host.clone(),
                message: "upload response without a Location header".into(),
            })?;
        self.ep
            .base
            .join(&loc)
            .map_err(|e| RegistryError::Protocol {
                registry: self.ep.host.clone(),
                message: format!("invalid upload Location {loc:?}: {e}"),
            })
    }
}

fn bytes_of_file(file: &std::fs::File, size: u64) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::with_capacity(size as usize);
    let mut r = file;
    r.read_to_end(&mut v)?;
    if v.len() as u64 != size {
        return Err(std::io::Error::other(format!(
            "blob changed while reading: {} bytes, expected {size}",
            v.len()
        )));
    }
    Ok(v)
}
