//! `GET /distribution/{name}/json`: what a reference resolves to in its registry (the
//! manifest's descriptor) and the platforms it offers, without pulling anything — dockerd's
//! `getDistributionInfo` and `fetchManifest`.

use berth_image::manifest::{parse_manifest, Descriptor, Manifest, ManifestKind, Platform};
use berth_image::Reference;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{RegistryError, Result};

/// Docker's `registry.DistributionInspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionInspect {
    /// The manifest (or index) the reference names: media type, digest, size.
    #[serde(rename = "Descriptor")]
    pub descriptor: Descriptor,
    /// An index's platforms, or a Docker schema 2 image's (from its config); `null` for an
    /// OCI image manifest, as dockerd answers.
    #[serde(rename = "Platforms")]
    pub platforms: Option<Vec<Platform>>,
}

/// The platform fields of an image config (all optional, as Go's `json.Unmarshal` reads them).
#[derive(Deserialize, Default)]
struct ConfigPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(rename = "os.version", default)]
    os_version: Option<String>,
    #[serde(rename = "os.features", default)]
    os_features: Option<Vec<String>>,
    #[serde(default)]
    variant: Option<String>,
}

/// The fields dockerd copies from an index entry's platform.
fn docker_platform(p: &Platform) -> Platform {
    Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        os_version: p.os_version.clone().filter(|v| !v.is_empty()),
        os_features: p.os_features.clone().filter(|v| !v.is_empty()),
        variant: p.variant.clone().filter(|v| !v.is_empty()),
        features: None,
    }
}

impl Client {
    /// Resolves `reference` (its tag, `latest` without one, or its digest) in its registry
    /// (mirrors first, as a pull) and describes the manifest found.
    pub fn inspect_distribution(&self, reference: &Reference) -> Result<DistributionInspect> {
        let inner = &*self.inner;
        let what = match (reference.digest(), reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let display = reference.familiar_string();
        self.rt.block_on(inner.on_pull_endpoints(
            reference.domain(),
            "inspecting the distribution",
            async |ep| {
                let (bytes, ctype, digest) =
                    inner.get_manifest(ep, reference, &what, &display).await?;
                let manifest = parse_manifest(ctype.as_deref(), &bytes)?;
                let kind = manifest.kind();
                let platforms = match &manifest {
                    Manifest::Index(_, idx) => Some(
                        idx.manifests
                            .iter()
                            .map(|d| d.platform.as_ref().map(docker_platform).unwrap_or_default())
                            .collect(),
                    ),
                    Manifest::Image(ManifestKind::DockerManifest, m) => {
                        // dockerd ignores a config it cannot fetch or read.
                        let config = inner
                            .get_small_blob(
                                ep,
                                reference,
                                &m.config.digest,
                                m.config.size,
                                "config",
                            )
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice::<ConfigPlatform>(&b).ok())
                            .filter(|p| !p.os.is_empty() || !p.architecture.is_empty());
                        config.map(|p| {
                            vec![docker_platform(&Platform {
                                architecture: p.architecture,
                                os: p.os,
                                os_version: p.os_version,
                                os_features: p.os_features,
                                variant: p.variant,
                                features: None,
                            })]
                        })
                    }
                    Manifest::Image(..) => None,
                };
                Ok::<_, RegistryError>(DistributionInspect {
                    descriptor: Descriptor {
                        media_type: kind.media_type().to_string(),
                        digest,
                        size: bytes.len() as u64,
                        urls: None,
                        annotations: None,
                        platform: None,
                        artifact_type: None,
                    },
                    platforms,
                })
            },
        ))
    }
}
