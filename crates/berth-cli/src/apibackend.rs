//! [`ImageBackend`] over the Engine API: the image commands through `berthd` (used unless the
//! CLI is given `--data-root`, which works on a data root directly).

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use berth_api::image::{AuthConfig, InspectImage, PruneReport as ImagePrune};
use berth_api::message::JsonMessage;
use berth_api::system::DiskUsage as ApiDiskUsage;
use berth_api::Filters;
use berth_image::archive::{ImportOptions, ImportSource, LoadReport, LoadedImage};
use berth_image::image_store::{
    DeleteItem, DiskUsage, HistoryItem, ImageId, ImageSummary, ImageUsage, ListOptions, PruneReport,
};
use berth_image::manifest::Platform;
use berth_image::{Digest, Reference};
use berth_registry::images::{BackendError, ErrorKind, ImageBackend, PullOutcome};
use berth_registry::{ImageEvent, LayerEvent, Progress, PushedManifest};
use serde::de::DeserializeOwned;

use crate::api::{self, enc, json, ApiError, Host};

/// The daemon's image routes.
pub struct ApiBackend {
    pub host: Host,
}

fn err(e: ApiError) -> BackendError {
    match e {
        ApiError::Status { code, message } => BackendError {
            kind: match code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                400 => ErrorKind::InvalidArgument,
                _ => ErrorKind::Internal,
            },
            message,
        },
        other => BackendError {
            kind: ErrorKind::Internal,
            message: other.to_string(),
        },
    }
}

fn internal(m: impl std::fmt::Display) -> BackendError {
    BackendError {
        kind: ErrorKind::Internal,
        message: m.to_string(),
    }
}

fn digest(s: &str) -> Result<Digest, BackendError> {
    Digest::parse(s).map_err(internal)
}

/// A progress id (`abc123456789`) as a digest for the progress printer (which shows 12 hex).
fn short_digest(id: &str) -> Digest {
    let mut hex: String = id.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    while hex.len() < 64 {
        hex.push('0');
    }
    Digest::from_hex(&hex[..64]).unwrap_or_else(|_| Digest::of_bytes(id.as_bytes()))
}

impl ApiBackend {
    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BackendError> {
        self.host.get(path).map_err(err)
    }

    /// Reads Docker's JSON progress lines, handing them to `progress`; returns the `status`
    /// lines it did not map and fails on an `error` line.
    fn progress_stream(
        &self,
        r: Box<dyn Read + Send>,
        progress: &dyn Progress,
    ) -> Result<Vec<String>, BackendError> {
        let mut other = Vec::new();
        for line in std::io::BufReader::new(r).lines() {
            let line = line.map_err(internal)?;
            if line.trim().is_empty() {
                continue;
            }
            let v: JsonMessage = api::decode_str(&line).map_err(internal)?;
            if let Some(e) = &v.error {
                return Err(BackendError {
                    kind: if e.contains("not found") || e.contains("unknown") {
                        ErrorKind::NotFound
                    } else {
                        ErrorKind::Internal
                    },
                    message: e.to_string(),
                });
            }
            let status = v.status.as_deref().unwrap_or("");
            let id = v.id.as_deref().unwrap_or("");
            let detail = v.progress_detail.clone().unwrap_or_default();
            let cur = detail.current.unwrap_or(0);
            let total = detail.total.unwrap_or(0);
            if let Some(repo) = status.strip_prefix("Pulling from ") {
                progress.image(&ImageEvent::PullingFrom {
                    tag: id.to_string(),
                    repository: repo.to_string(),
                });
                continue;
            }
            if let Some(d) = status.strip_prefix("Digest: ") {
                if let Ok(d) = Digest::parse(d) {
                    progress.image(&ImageEvent::Resolved { digest: d });
                }
                continue;
            }
            if let Some(r) = status
                .strip_prefix("The push refers to repository [")
                .and_then(|r| r.strip_suffix(']'))
            {
                progress.image(&ImageEvent::PushingTo {
                    repository: r.to_string(),
                });
                continue;
            }
            if let Some((tag, rest)) = status.split_once(": digest: ") {
                if let Some((d, size)) = rest.split_once(" size: ") {
                    if let (Ok(d), Ok(size)) = (Digest::parse(d), size.parse::<u64>()) {
                        progress.image(&ImageEvent::Pushed {
                            tag: tag.to_string(),
                            digest: d,
                            size,
                        });
                        continue;
                    }
                }
            }
            if id.is_empty() {
                if !status.is_empty() {
                    other.push(status.to_string());
                }
                continue;
            }
            let ev = match status {
                "Pulling fs layer" => LayerEvent::PullingFsLayer,
                "Waiting" => LayerEvent::Waiting,
                "Downloading" => LayerEvent::Downloading {
                    current: cur,
                    total,
                },
                "Verifying Checksum" => LayerEvent::VerifyingChecksum,
                "Download complete" => LayerEvent::DownloadComplete,
                "Extracting" => LayerEvent::Extracting {
                    current: cur,
                    total,
                },
                "Pull complete" => LayerEvent::PullComplete,
                "Already exists" => LayerEvent::AlreadyExists,
                "Preparing" => LayerEvent::Preparing,
                "Pushing" => LayerEvent::Pushing {
                    current: cur,
                    total,
                },
                "Pushed" => LayerEvent::Pushed,
                "Layer already exists" => LayerEvent::LayerAlreadyExists,
                s => match s.strip_prefix("Mounted from ") {
                    Some(r) => LayerEvent::MountedFrom {
                        repository: r.to_string(),
                    },
                    None => continue,
                },
            };
            progress.layer(&short_digest(id), &ev);
        }
        Ok(other)
    }

    fn post_stream(
        &self,
        path: &str,
        body: Option<&mut dyn Read>,
    ) -> Result<Box<dyn Read + Send>, BackendError> {
        api::post_stream(&self.host, path, body).map_err(err)
    }
}

impl ImageBackend for ApiBackend {
    fn list(&self, opts: &ListOptions) -> Result<Vec<ImageSummary>, BackendError> {
        let filters = crate::filters::to_json(&Filters(opts.filters.clone()));
        self.get(&format!(
            "/images/json?all={}&filters={}",
            opts.all as u8,
            enc(&filters)
        ))
    }

    fn inspect_raw(&self, name: &str) -> Result<String, BackendError> {
        let r =
            api::request(&self.host, "GET", &format!("/images/{name}/json"), None).map_err(err)?;
        String::from_utf8(r.body).map_err(internal)
    }

    fn history(&self, name: &str) -> Result<Vec<HistoryItem>, BackendError> {
        self.get(&format!("/images/{name}/history"))
    }

    fn tag(&self, source: &str, target: &Reference) -> Result<(), BackendError> {
        let repo = target.name();
        let tag = target.tag().unwrap_or("latest");
        self.host
            .call(
                "POST",
                &format!("/images/{source}/tag?repo={}&tag={}", enc(&repo), enc(tag)),
                None,
            )
            .map_err(err)
    }

    fn remove(&self, name: &str, force: bool) -> Result<Vec<DeleteItem>, BackendError> {
        let r = api::request(
            &self.host,
            "DELETE",
            &format!("/images/{name}?force={}", force as u8),
            None,
        )
        .map_err(err)?;
        let items: Option<Vec<DeleteItem>> = r.decode().map_err(internal)?;
        Ok(items.unwrap_or_default())
    }

    fn save(&self, names: &[String], out: &mut dyn Write) -> Result<(), BackendError> {
        let q: Vec<String> = names.iter().map(|n| format!("names={}", enc(n))).collect();
        let mut r =
            api::stream(&self.host, &format!("/images/get?{}", q.join("&"))).map_err(err)?;
        std::io::copy(&mut r, out).map_err(internal)?;
        Ok(())
    }

    fn load(&self, input: &mut dyn Read) -> Result<LoadReport, BackendError> {
        // The body is streamed from `input`; it must be 'static + Send: spool it to a file.
        let mut tmp = tempfile::tempfile().map_err(internal)?;
        std::io::copy(input, &mut tmp).map_err(internal)?;
        use std::io::Seek;
        tmp.rewind().map_err(internal)?;
        let r = self.post_stream("/images/load?quiet=1", Some(&mut tmp))?;
        let mut images: Vec<LoadedImage> = Vec::new();
        for line in std::io::BufReader::new(r).lines() {
            let line = line.map_err(internal)?;
            let Ok(v) = api::decode_str::<JsonMessage>(&line) else {
                continue;
            };
            if let Some(e) = v.error {
                return Err(BackendError {
                    kind: ErrorKind::InvalidArgument,
                    message: e,
                });
            }
            let s = v.stream.as_deref().unwrap_or("").trim();
            if let Some(t) = s.strip_prefix("Loaded image: ") {
                let id = self
                    .get::<InspectImage>(&format!("/images/{t}/json"))
                    .ok()
                    .and_then(|i| Digest::parse(&i.id).ok());
                if let Some(id) = id {
                    match images.iter_mut().find(|i| i.id == id) {
                        Some(i) => i.tags.push(t.to_string()),
                        None => images.push(LoadedImage {
                            id,
                            tags: vec![t.to_string()],
                            moved: vec![],
                        }),
                    }
                }
            } else if let Some(i) = s.strip_prefix("Loaded image ID: ") {
                images.push(LoadedImage {
                    id: digest(i)?,
                    tags: vec![],
                    moved: vec![],
                });
            }
        }
        Ok(LoadReport { images })
    }

    fn import(
        &self,
        source: ImportSource<'_>,
        opts: &ImportOptions,
    ) -> Result<ImageId, BackendError> {
        let mut tmp = tempfile::tempfile().map_err(internal)?;
        match source {
            ImportSource::Tar(mut r) => {
                std::io::copy(&mut r, &mut tmp).map_err(internal)?;
            }
            ImportSource::Directory(d) => {
                let st = std::process::Command::new("tar")
                    .arg("-C")
                    .arg(&d)
                    .args(["-cf", "-", "."])
                    .stdout(tmp.try_clone().map_err(internal)?)
                    .status()
                    .map_err(internal)?;
                if !st.success() {
                    return Err(internal(format!("archiving {}", d.display())));
                }
            }
        }
        use std::io::Seek;
        tmp.rewind().map_err(internal)?;
        let mut q = format!(
            "/images/create?fromSrc=-&changes={}",
            enc(&serde_json::to_string(&opts.changes).unwrap_or_default())
        );
        if let Some(m) = &opts.message {
            q.push_str(&format!("&message={}", enc(m)));
        }
        if let Some(t) = &opts.tag {
            q.push_str(&format!(
                "&repo={}&tag={}",
                enc(&t.name()),
                enc(t.tag().unwrap_or("latest"))
            ));
        }
        if let Some(p) = &opts.platform {
            q.push_str(&format!("&platform={}", enc(&p.to_string())));
        }
        let r = self.post_stream(&q, Some(&mut tmp))?;
        let lines = self.progress_stream(r, &berth_registry::NoProgress)?;
        let id = lines
            .iter()
            .find(|l| l.starts_with("sha256:"))
            .ok_or_else(|| internal("the daemon reported no image ID"))?;
        digest(id)
    }

    fn prune(&self, all: bool) -> Result<PruneReport, BackendError> {
        let f = if all {
            format!("?filters={}", enc(r#"{"dangling":{"false":true}}"#))
        } else {
            String::new()
        };
        let v: ImagePrune = self
            .host
            .post(&format!("/images/prune{f}"), None)
            .map_err(err)?;
        Ok(PruneReport {
            deleted: v.images_deleted.unwrap_or_default(),
            space_reclaimed: v.space_reclaimed,
        })
    }

    fn disk_usage(&self) -> Result<DiskUsage, BackendError> {
        let v: ApiDiskUsage = self.get("/system/df")?;
        let mut images = Vec::new();
        for i in &v.images {
            images.push(ImageUsage {
                id: digest(&i.id)?,
                size: i.size.max(0) as u64,
                shared_size: i.shared_size.max(0) as u64,
                in_use: i.containers > 0,
            });
        }
        Ok(DiskUsage {
            layers_size: v.layers_size.max(0) as u64,
            images,
        })
    }

    fn pull(
        &self,
        reference: &Reference,
        platform: &Platform,
        progress: &dyn Progress,
    ) -> Result<PullOutcome, BackendError> {
        let mut q = format!("/images/create?fromImage={}", enc(&reference.name()));
        if let Some(d) = reference.digest() {
            q.push_str(&format!("&tag={}", enc(&d.to_string())));
        } else if let Some(t) = reference.tag() {
            q.push_str(&format!("&tag={}", enc(t)));
        }
        q.push_str(&format!("&platform={}", enc(&platform.to_string())));
        let r = self.post_stream(&q, None)?;
        let lines = self.progress_stream(r, progress)?;
        let updated = lines.iter().any(|l| l.contains("Downloaded newer image"));
        let info: InspectImage = self.get(&format!("/images/{reference}/json"))?;
        let id = digest(&info.id)?;
        let repo_digest = info
            .repo_digests
            .iter()
            .find_map(|d| {
                let (name, dg) = d.split_once('@')?;
                (Reference::parse_normalized(name).ok()?.name() == reference.name())
                    .then(|| Digest::parse(dg).ok())
                    .flatten()
            })
            .unwrap_or_else(|| id.clone());
        let or = |s: &str, d: &'static str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        let platform = Platform::parse(&format!(
            "{}/{}",
            or(&info.os, "linux"),
            or(&info.architecture, "amd64")
        ))
        .unwrap_or_else(|_| Platform::host());
        Ok(PullOutcome {
            digest: repo_digest,
            id,
            updated,
            platform,
        })
    }

    fn pull_all_tags(
        &self,
        repository: &Reference,
        platform: &Platform,
        progress: &dyn Progress,
    ) -> Result<bool, BackendError> {
        // No `tag` parameter: the daemon pulls every tag (as Docker's CLI asks for `-a`).
        let q = format!(
            "/images/create?fromImage={}&platform={}",
            enc(&repository.name()),
            enc(&platform.to_string())
        );
        let r = self.post_stream(&q, None)?;
        let lines = self.progress_stream(r, progress)?;
        Ok(lines.iter().any(|l| l.contains("Downloaded newer image")))
    }

    fn push(
        &self,
        reference: &Reference,
        progress: &dyn Progress,
    ) -> Result<PushedManifest, BackendError> {
        let tag = reference.tag().unwrap_or("latest");
        let q = format!("/images/{}/push?tag={}", reference.name(), enc(tag));
        let r = self.post_stream(&q, None)?;
        struct Capture<'a> {
            inner: &'a dyn Progress,
            pushed: std::sync::Mutex<Option<(Digest, u64)>>,
        }
        impl Progress for Capture<'_> {
            fn image(&self, e: &ImageEvent) {
                if let ImageEvent::Pushed { digest, size, .. } = e {
                    *self.pushed.lock().unwrap() = Some((digest.clone(), *size));
                }
                self.inner.image(e)
            }
            fn layer(&self, d: &Digest, e: &LayerEvent) {
                self.inner.layer(d, e)
            }
        }
        let cap = Capture {
            inner: progress,
            pushed: std::sync::Mutex::new(None),
        };
        self.progress_stream(r, &cap)?;
        let (digest, size) = cap
            .pushed
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| internal("the daemon reported no pushed manifest"))?;
        Ok(PushedManifest {
            digest,
            size,
            media_type: String::new(),
        })
    }

    fn login(&self, server: &str, username: &str, password: &str) -> Result<(), BackendError> {
        // Checked by the daemon, stored by the client (as Docker's CLI does).
        let auth = AuthConfig {
            serveraddress: server.to_string(),
            username: username.to_string(),
            password: password.to_string(),
            ..Default::default()
        };
        self.host
            .call("POST", "/auth", Some(&json(&auth)))
            .map_err(err)?;
        berth_registry::CredentialStore::default_location()
            .set(
                server,
                &berth_registry::Credentials::new(username, password),
            )
            .map_err(internal)
    }

    fn logout(&self, server: &str) -> Result<bool, BackendError> {
        berth_registry::CredentialStore::default_location()
            .remove(server)
            .map_err(internal)
    }

    fn credentials_path(&self) -> PathBuf {
        berth_registry::CredentialStore::default_location()
            .path()
            .to_path_buf()
    }
}
