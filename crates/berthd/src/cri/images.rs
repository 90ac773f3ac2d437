//! `ImageService` on the engine's image store.
//!
//! CRI and Docker API images are one namespace (as dockershim had it): an image the kubelet
//! pulls is in `docker images`, and one pulled or built through the Docker API serves a pod.
//! An image reference's answer is the image ID (`sha256:…`), as containerd's.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_api::image::AuthConfig as DockerAuth;
use berth_cri::proto as pb;
use berth_image::image_store::ImageRecord;
use berth_image::Reference;
use tonic::Status;

use super::{blocking, Cri};

/// A CRI image name as a full reference (`busybox` → `docker.io/library/busybox:latest`).
pub(crate) fn normalized(name: &str) -> Result<Reference, Status> {
    let r = Reference::parse_normalized(name)
        .map_err(|e| Status::invalid_argument(format!("invalid image reference {name:?}: {e}")))?;
    if r.tag().is_none() && r.digest().is_none() {
        r.with_tag(berth_image::reference::DEFAULT_TAG)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    } else {
        Ok(r)
    }
}

impl Cri {
    /// The image a CRI image spec names (a reference, an ID or an ID prefix), if any.
    pub(crate) fn find_image(&self, name: &str) -> Result<Option<ImageRecord>, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("no image named"));
        }
        match self.engine.images.resolve(name) {
            Ok(r) => Ok(Some(r.image)),
            Err(e) if e.is_not_found() => Ok(None),
            // A name that is neither a valid reference nor an ID names no image.
            Err(berth_image::image_store::ImageStoreError::Reference(_)) => Ok(None),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    fn image_message(&self, rec: &ImageRecord) -> pb::Image {
        let user = self
            .engine
            .images
            .config(&rec.id)
            .ok()
            .and_then(|c| c.config.and_then(|c| c.user))
            .unwrap_or_default();
        // `uid[:gid]` gives `uid`, a name gives `username`.
        let user = user.split(':').next().unwrap_or("").to_string();
        let (uid, username) = match user.parse::<i64>() {
            Ok(n) => (Some(pb::Int64Value { value: n }), String::new()),
            Err(_) => (None, user),
        };
        pb::Image {
            id: rec.id.to_string(),
            repo_tags: rec.repo_tags.clone(),
            repo_digests: rec.repo_digests.clone(),
            size: rec.size(),
            uid,
            username,
            spec: Some(pb::ImageSpec {
                image: rec.id.to_string(),
                ..Default::default()
            }),
            // The pause image is the runtime's: the kubelet's image GC keeps it.
            pinned: rec.repo_tags.iter().any(|t| t == super::pods::PAUSE_IMAGE),
        }
    }

    pub(crate) async fn list_images(
        &self,
        req: pb::ListImagesRequest,
    ) -> Result<pb::ListImagesResponse, Status> {
        let wanted = req
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match wanted {
            Some(name) => self.find_image(&name)?.into_iter().collect(),
            None => self
                .engine
                .images
                .list()
                .map_err(|e| Status::internal(e.to_string()))?,
        };
        Ok(pb::ListImagesResponse {
            images: images.iter().map(|r| self.image_message(r)).collect(),
        })
    }

    pub(crate) async fn image_status(
        &self,
        req: pb::ImageStatusRequest,
    ) -> Result<pb::ImageStatusResponse, Status> {
        let name = req.image.map(|s| s.image).unwrap_or_default();
        let Some(rec) = self.find_image(&name)? else {
            // Not found is an empty answer, not an error.
            return Ok(pb::ImageStatusResponse::default());
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            if let Ok(cfg) = self.engine.images.config_bytes(&rec.id) {
                info.insert(
                    "imageSpec".to_string(),
                    String::from_utf8_lossy(&cfg).into_owned(),
                );
            }
        }
        Ok(pb::ImageStatusResponse {
            image: Some(self.image_message(&rec)),
            info,
        })
    }

    pub(crate) async fn pull_image(
        &self,
        req: pb::PullImageRequest,
    ) -> Result<pb::PullImageResponse, Status> {
        let name = req.image.map(|s| s.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Status::invalid_argument("no image to pull"));
        }
        let r = normalized(&name)?;
        let auth = docker_auth(req.auth.as_ref())?;
        let engine = self.engine.clone();
        let id = blocking(move || {
            let (cfg, _guard) = crate::images::with_credentials(&engine, &auth, r.domain())
                .map_err(super::status)?;
            crate::images::pull_one(
                &engine,
                &r,
                &berth_image::manifest::Platform::host(),
                cfg,
                &berth_registry::NoProgress,
            )
            .map_err(|e| {
                let e: crate::engine::EngineError = crate::images::JobError::from(e).into();
                super::status(e)
            })?;
            let rec = engine
                .images
                .resolve(&r.to_string())
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(rec.image.id.to_string())
        })
        .await?;
        Ok(pb::PullImageResponse { image_ref: id })
    }

    pub(crate) async fn remove_image(
        &self,
        req: pb::RemoveImageRequest,
    ) -> Result<pb::RemoveImageResponse, Status> {
        let name = req.image.map(|s| s.image).unwrap_or_default();
        let Some(rec) = self.find_image(&name)? else {
            // Removing what is not there succeeds.
            return Ok(pb::RemoveImageResponse::default());
        };
        let id = rec.id.to_string();
        if let Some(c) = self.engine.list().into_iter().find(|c| c.image == id) {
            return Err(Status::failed_precondition(format!(
                "image {id} is in use by container {}",
                c.id
            )));
        }
        let engine = self.engine.clone();
        blocking(move || {
            // Every tag goes with it (the CRI removes images, not references).
            crate::images::remove(&engine, &id, true, false).map_err(super::status)
        })
        .await?;
        Ok(pb::RemoveImageResponse::default())
    }

    /// The image file system's identifier: the snapshots' directory (containers' writable
    /// layers are there too).
    pub(crate) fn image_fs_mountpoint(&self) -> String {
        self.engine
            .images
            .root()
            .join("snapshotter")
            .display()
            .to_string()
    }

    pub(crate) async fn image_fs_info(&self) -> Result<pb::ImageFsInfoResponse, Status> {
        let root = self.engine.images.root().to_path_buf();
        let mountpoint = self.image_fs_mountpoint();
        let usage = blocking(move || {
            let mut used = 0u64;
            let mut inodes = 0u64;
            for d in ["snapshotter", "blobs"] {
                walk(&root.join(d), &mut used, &mut inodes);
            }
            Ok(pb::FilesystemUsage {
                timestamp: super::now_nanos(),
                fs_id: Some(pb::FilesystemIdentifier { mountpoint }),
                used_bytes: Some(pb::UInt64Value { value: used }),
                inodes_used: Some(pb::UInt64Value { value: inodes }),
            })
        })
        .await?;
        Ok(pb::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        })
    }
}

/// Disk usage (allocated blocks) and inodes under `p`, not crossing into other file
/// systems (overlay mounts of running containers).
pub(crate) fn walk(p: &Path, used: &mut u64, inodes: &mut u64) {
    let Ok(top) = std::fs::symlink_metadata(p) else {
        return;
    };
    let dev = top.dev();
    let mut stack = vec![p.to_path_buf()];
    *used += top.blocks() * 512;
    *inodes += 1;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            *used += m.blocks() * 512;
            *inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// The request's credentials as the Docker API's (`auth` is base64 `user:password`).
fn docker_auth(a: Option<&pb::AuthConfig>) -> Result<DockerAuth, Status> {
    let Some(a) = a else {
        return Ok(DockerAuth::default());
    };
    let (mut username, mut password) = (a.username.clone(), a.password.clone());
    if username.is_empty() && !a.auth.is_empty() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| Status::invalid_argument("auth: not base64"))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("auth: not user:password"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("auth: not user:password"))?;
        (username, password) = (u.to_string(), p.to_string());
    }
    if username.is_empty() && !a.identity_token.is_empty() {
        // An identity token is sent as the password of the `<token>` user (Docker's rule).
        (username, password) = ("<token>".to_string(), a.identity_token.clone());
    }
    Ok(DockerAuth {
        username,
        password,
        serveraddress: a.server_address.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_the_request() {
        let a = pb::AuthConfig {
            auth: "dTpw".into(), // u:p
            ..Default::default()
        };
        let d = docker_auth(Some(&a)).unwrap();
        assert_eq!((d.username.as_str(), d.password.as_str()), ("u", "p"));
        let a = pb::AuthConfig {
            username: "x".into(),
            password: "y".into(),
            auth: "dTpw".into(),
            ..Default::default()
        };
        assert_eq!(docker_auth(Some(&a)).unwrap().username, "x");
        let bad = pb::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(docker_auth(Some(&bad)).is_err());
        assert!(docker_auth(None).unwrap().username.is_empty());
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalized("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert!(normalized("has space").is_err());
    }
}
