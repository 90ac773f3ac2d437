//! Manifests, indexes and image configs: OCI image-spec v1 and Docker schema 2.
//!
//! Manifests are parsed by media type (from the registry's `Content-Type`) or, when that is
//! missing or generic, by sniffing the document's `mediaType` / `schemaVersion` / shape.
//! Schema 1 manifests are refused. The raw bytes are never re-serialised for hashing: callers
//! keep the bytes they fetched and verified.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layer::Compression;

/// Media type constants.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// OCI non-distributable uncompressed layer (deprecated).
    pub const OCI_LAYER_NONDIST: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
    /// OCI non-distributable gzip layer (deprecated).
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    /// OCI non-distributable zstd layer (deprecated).
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    /// OCI empty descriptor.
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (rarely seen; used by some tools).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker foreign (non-distributable) layer.
    pub const DOCKER_LAYER_FOREIGN: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    /// Docker schema 1 manifest (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker signed schema 1 manifest (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Every manifest type Berth accepts, for a registry `Accept` header.
    pub const ACCEPTED_MANIFESTS: [&str; 4] = [
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
        OCI_MANIFEST,
        DOCKER_MANIFEST,
    ];
}

use media_types as mt;

/// Errors from manifest and config handling.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Schema 1 manifests are refused.
    #[error("schema 1 manifests are not supported; push the image again with a newer client")]
    Schema1,
    /// An unknown or unsupported media type.
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// The document is not a manifest Berth understands.
    #[error("cannot determine the manifest type: {0}")]
    Unrecognised(String),
    /// The document's `mediaType` field disagrees with the media type it was served as.
    #[error("manifest media type mismatch: served as {served:?}, document says {document:?}")]
    MediaTypeMismatch {
        /// From the transport (`Content-Type`).
        served: String,
        /// From the document's `mediaType` field.
        document: String,
    },
    /// Unsupported `schemaVersion`.
    #[error("unsupported manifest schemaVersion {0}")]
    SchemaVersion(i64),
    /// Malformed JSON or missing fields.
    #[error("invalid {what}: {source}")]
    Json {
        /// What was being parsed.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// No manifest in an index matches the wanted platform.
    #[error(
        "no matching manifest for {wanted} in the manifest list entries (available: {available})"
    )]
    NoMatchingPlatform {
        /// The platform asked for.
        wanted: String,
        /// The platforms the index offers.
        available: String,
    },
    /// A `--platform` string that cannot be parsed.
    #[error("invalid platform {0:?}: {1}")]
    InvalidPlatform(String, &'static str),
    /// Manifest and config disagree, or a field is invalid.
    #[error("invalid image: {0}")]
    Invalid(String),
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Alternative download URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// A platform, as in index entries and image configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (GOARCH), e.g. `amd64`.
    pub architecture: String,
    /// Operating system (GOOS), e.g. `linux`.
    pub os: String,
    /// OS version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant, e.g. `v7`, `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// CPU features (reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
}

impl Platform {
    /// The platform of this host: `linux/<GOARCH of this build>[/<variant>]`.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
            "mips64" => ("mips64", None),
            other => (other, None),
        };
        Self {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
            ..Default::default()
        }
    }

    /// containerd's `platforms.Parse` checks of a specifier, in its words (dockerd's routes
    /// answer them as they are): `None` when it passes them.
    pub fn specifier_error(s: &str) -> Option<String> {
        const OS_RE: &str = r"^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)\))?$";
        const PART_RE: &str = "^[A-Za-z0-9_.-]+$";
        let word = |p: &str, extra: &[u8]| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-".contains(&c) || extra.contains(&c))
        };
        let os_ok = |p: &str| match p.split_once('(') {
            None => word(p, b""),
            Some((os, ver)) => {
                word(os, b"")
                    && ver
                        .strip_suffix(')')
                        .is_some_and(|v| v.is_empty() || word(v, b"."))
            }
        };
        if s.contains('*') {
            return Some(format!(
                "{s:?}: wildcards not yet supported: invalid argument"
            ));
        }
        let parts: Vec<&str> = s.splitn(4, '/').collect();
        for (i, p) in parts.iter().enumerate() {
            if i == 0 && !os_ok(p) {
                return Some(format!("{p:?} is an invalid OS component of {s:?}: OSAndVersion specifier component must match {OS_RE:?}: invalid argument"));
            }
            if i > 0 && !word(p, b".") {
                return Some(format!("{p:?} is an invalid component of {s:?}: platform specifier component must match {PART_RE:?}: invalid argument"));
            }
        }
        match parts.len() {
            1 => {
                let one = parts[0]
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                (!is_known_os(&one) && !is_known_arch(&one)).then(|| {
                    format!("{s:?}: unknown operating system or architecture: invalid argument")
                })
            }
            4 => Some(format!(
                "{s:?}: cannot parse platform specifier: invalid argument"
            )),
            _ => None,
        }
    }

    /// Parses `os[/arch[/variant]]` or a bare `arch` (as Docker's `--platform`), normalised.
    pub fn parse(s: &str) -> Result<Self, ManifestError> {
        let bad = |why| ManifestError::InvalidPlatform(s.to_string(), why);
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty component"));
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-' | b'.'))
        {
            return Err(bad("invalid characters"));
        }
        let p = match parts.as_slice() {
            [one] => {
                let one = one.to_ascii_lowercase();
                if is_known_os(&one) {
                    Self {
                        os: one,
                        architecture: Self::host().architecture,
                        ..Default::default()
                    }
                } else if is_known_arch(&one) {
                    Self {
                        os: "linux".into(),
                        architecture: one,
                        ..Default::default()
                    }
                } else {
                    return Err(bad("unknown operating system or architecture"));
                }
            }
            [os, arch] => Self {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                ..Default::default()
            },
            [os, arch, variant] => Self {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: Some(variant.to_ascii_lowercase()),
                ..Default::default()
            },
            _ => return Err(bad("expected os[/arch[/variant]]")),
        };
        Ok(p.normalize())
    }

    /// Normalises aliases the way containerd does (`x86_64` = `amd64`, `aarch64` = `arm64`,
    /// `armhf` = `arm/v7`, arm64's `v8` variant, `macos` = `darwin`).
    pub fn normalize(mut self) -> Self {
        self.os = self.os.to_ascii_lowercase();
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.take().map(|v| v.to_ascii_lowercase());
        let (arch, variant) = match arch.as_str() {
            "i386" => ("386".to_string(), None),
            "x86_64" | "x86-64" | "amd64" => (
                "amd64".to_string(),
                variant.filter(|v| v != "v1" && !v.is_empty()),
            ),
            "aarch64" | "arm64" => (
                "arm64".to_string(),
                variant.filter(|v| !matches!(v.as_str(), "8" | "v8" | "v8.0" | "")),
            ),
            "armhf" => ("arm".to_string(), Some("v7".to_string())),
            "armel" => ("arm".to_string(), Some("v6".to_string())),
            "arm" => {
                let v = match variant.as_deref() {
                    None | Some("") | Some("7") => "v7".to_string(),
                    Some("5") => "v5".to_string(),
                    Some("6") => "v6".to_string(),
                    Some("8") => "v8".to_string(),
                    Some(v) => v.to_string(),
                };
                ("arm".to_string(), Some(v))
            }
            _ => (arch.clone(), variant.filter(|v| !v.is_empty())),
        };
        self.architecture = arch;
        self.variant = variant;
        self
    }

    /// How well `self` (wanted, normalised) accepts `candidate`: `None` = not at all,
    /// `Some(0)` = exact, higher = less preferred (an older compatible arm variant).
    /// containerd's `OnlyStrict`: the same OS, architecture and variant once normalised (no
    /// older compatible variant).
    pub fn matches_strictly(&self, candidate: &Platform) -> bool {
        let (a, b) = (self.clone().normalize(), candidate.clone().normalize());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    fn match_rank(&self, candidate: &Platform) -> Option<usize> {
        let c = candidate.clone().normalize();
        if c.os != self.os || c.architecture != self.architecture {
            return None;
        }
        if self.architecture == "arm" {
            // A v7 host runs v7, v6 and v5 images (preferring the newest).
            let order = ["v8", "v7", "v6", "v5"];
            let want = order
                .iter()
                .position(|v| Some(*v) == self.variant.as_deref())?;
            let have = order
                .iter()
                .position(|v| Some(*v) == c.variant.as_deref())?;
            return (have >= want).then(|| have - want);
        }
        (c.variant == self.variant).then_some(0)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn is_known_os(s: &str) -> bool {
    matches!(
        s,
        "linux"
            | "windows"
            | "darwin"
            | "macos"
            | "freebsd"
            | "netbsd"
            | "openbsd"
            | "solaris"
            | "illumos"
            | "aix"
            | "android"
            | "ios"
            | "plan9"
            | "js"
            | "wasip1"
    )
}

fn is_known_arch(s: &str) -> bool {
    matches!(
        s,
        "386"
            | "i386"
            | "amd64"
            | "x86_64"
            | "x86-64"
            | "arm"
            | "armhf"
            | "armel"
            | "arm64"
            | "aarch64"
            | "ppc64"
            | "ppc64le"
            | "s390x"
            | "riscv64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "loong64"
            | "wasm"
    )
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: i64,
    /// The manifest's media type (required by Docker schema 2, optional in OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Subject (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: i64,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Subject (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Which kind of manifest a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest.
    OciManifest,
    /// OCI image index.
    OciIndex,
    /// Docker schema 2 manifest.
    DockerManifest,
    /// Docker manifest list.
    DockerManifestList,
}

impl ManifestKind {
    /// The media type string.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::OciManifest => mt::OCI_MANIFEST,
            Self::OciIndex => mt::OCI_INDEX,
            Self::DockerManifest => mt::DOCKER_MANIFEST,
            Self::DockerManifestList => mt::DOCKER_MANIFEST_LIST,
        }
    }

    /// From a media type; schema 1 types give [`ManifestError::Schema1`].
    pub fn from_media_type(m: &str) -> Result<Self, ManifestError> {
        match m {
            mt::OCI_MANIFEST => Ok(Self::OciManifest),
            mt::OCI_INDEX => Ok(Self::OciIndex),
            mt::DOCKER_MANIFEST => Ok(Self::DockerManifest),
            mt::DOCKER_MANIFEST_LIST => Ok(Self::DockerManifestList),
            mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED => Err(ManifestError::Schema1),
            other => Err(ManifestError::UnsupportedMediaType(other.to_string())),
        }
    }

    /// Whether this is an index / manifest list.
    pub fn is_index(self) -> bool {
        matches!(self, Self::OciIndex | Self::DockerManifestList)
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // parsed once per pull; boxing buys nothing
pub enum Manifest {
    /// A single-platform image manifest.
    Image(ManifestKind, ImageManifest),
    /// An index of manifests.
    Index(ManifestKind, ImageIndex),
}

impl Manifest {
    /// The manifest's kind.
    pub fn kind(&self) -> ManifestKind {
        match self {
            Self::Image(k, _) | Self::Index(k, _) => *k,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    fs_layers: Option<serde_json::Value>,
}

/// Parses a manifest served with `content_type` (may be `None`, generic, or carry parameters).
pub fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: "manifest",
        source,
    })?;
    if probe.fs_layers.is_some()
        || matches!(&probe.schema_version, Some(v) if v.as_i64() == Some(1))
    {
        return Err(ManifestError::Schema1);
    }
    let served = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| {
            !matches!(
                c.as_str(),
                "" | "application/json" | "text/plain" | "application/octet-stream"
            )
        });
    let kind = match (&served, &probe.media_type) {
        (Some(s), Some(d)) => {
            let k = ManifestKind::from_media_type(s)?;
            if s != d {
                return Err(ManifestError::MediaTypeMismatch {
                    served: s.clone(),
                    document: d.clone(),
                });
            }
            k
        }
        (Some(s), None) => ManifestKind::from_media_type(s)?,
        (None, Some(d)) => ManifestKind::from_media_type(d)?,
        (None, None) => {
            if probe.manifests.is_some() {
                ManifestKind::OciIndex
            } else if probe.config.is_some() || probe.layers.is_some() {
                ManifestKind::OciManifest
            } else {
                return Err(ManifestError::Unrecognised(
                    "no mediaType and neither manifests nor config".into(),
                ));
            }
        }
    };
    match probe.schema_version.as_ref().and_then(|v| v.as_i64()) {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::Unrecognised("missing schemaVersion".into())),
    }
    if kind.is_index() {
        let idx: ImageIndex =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                what: "image index",
                source,
            })?;
        Ok(Manifest::Index(kind, idx))
    } else {
        let m: ImageManifest =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                what: "image manifest",
                source,
            })?;
        if probe.manifests.is_some() {
            return Err(ManifestError::Unrecognised(
                "an image manifest with a manifests field".into(),
            ));
        }
        Ok(Manifest::Image(kind, m))
    }
}

/// Selects the manifest for `wanted` from an index. Exact matches win; on arm an older
/// compatible variant is accepted. Entries without a platform are used only when nothing
/// matches and they are the only candidates (single-entry indexes without platforms).
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let wanted = wanted.clone().normalize();
    let mut best: Option<(usize, &Descriptor)> = None;
    for d in &index.manifests {
        if ManifestKind::from_media_type(&d.media_type).is_err() {
            continue;
        }
        if let Some(p) = &d.platform {
            if let Some(rank) = wanted.match_rank(p) {
                if best.is_none_or(|(r, _)| rank < r) {
                    best = Some((rank, d));
                }
            }
        }
    }
    if let Some((_, d)) = best {
        return Ok(d);
    }
    let unlabeled: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.is_none() && ManifestKind::from_media_type(&d.media_type).is_ok())
        .collect();
    if unlabeled.len() == 1 && unlabeled.len() == index.manifests.len() {
        return Ok(unlabeled[0]);
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    Err(ManifestError::NoMatchingPlatform {
        wanted: wanted.to_string(),
        available: available.join(", "),
    })
}

/// The container configuration inside an image config (Docker field names).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `user[:group]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports, `"80/tcp": {}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Fields not modelled here (Healthcheck, OnBuild, Shell, ArgsEscaped, …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ContainerConfig {
    /// The image's `HEALTHCHECK`, decoded with dockerd's rules; `Ok(None)` without one. It
    /// stays verbatim in [`Self::extra`] so a stored config keeps its bytes (and its digest).
    pub fn healthcheck(
        &self,
    ) -> Result<Option<berth_api::container::HealthConfig>, berth_api::DecodeError> {
        decode_extra(&self.extra, "Healthcheck")
    }
}

/// A field kept verbatim in an `extra` map, decoded with dockerd's rules; `Ok(None)` without it.
fn decode_extra<T: serde::de::DeserializeOwned>(
    extra: &BTreeMap<String, serde_json::Value>,
    key: &str,
) -> Result<Option<T>, berth_api::DecodeError> {
    extra
        .get(key)
        .map(|v| berth_api::from_value(v.clone()))
        .transpose()
}

/// The image's root filesystem: its layers' DiffIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// DiffIDs (digests of the uncompressed layer tars), base first (`null`: none, as Go reads it).
    #[serde(default, deserialize_with = "berth_api::go::null_default")]
    pub diff_ids: Vec<Digest>,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct History {
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command that created the layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Whether this step created no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config (OCI and Docker share the shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// OS version.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Container defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' DiffIDs.
    pub rootfs: RootFs,
    /// History.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Other fields (Docker's `container`, `docker_version`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageConfig {
    /// Docker's legacy `container_config` (the config of the container a builder committed),
    /// decoded with dockerd's rules; `Ok(None)` without one. Kept verbatim in [`Self::extra`]
    /// so a stored config keeps its bytes.
    pub fn container_config(
        &self,
    ) -> Result<Option<berth_api::container::Config>, berth_api::DecodeError> {
        decode_extra(&self.extra, "container_config")
    }

    /// Parses and checks an image config.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let c: Self = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            what: "image config",
            source,
        })?;
        if c.rootfs.kind != "layers" {
            return Err(ManifestError::Invalid(format!(
                "rootfs type {:?}, expected \"layers\"",
                c.rootfs.kind
            )));
        }
        Ok(c)
    }

    /// The config's platform.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }

    /// The chain IDs of the image's layers, base first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.rootfs.diff_ids)
    }
}

/// Checks that a manifest and its config agree (one DiffID per layer, a config media type
/// that is a config).
pub fn validate_image(manifest: &ImageManifest, config: &ImageConfig) -> Result<(), ManifestError> {
    if !matches!(
        manifest.config.media_type.as_str(),
        mt::OCI_CONFIG | mt::DOCKER_CONFIG
    ) {
        return Err(ManifestError::Invalid(format!(
            "config media type {:?} is not an image config",
            manifest.config.media_type
        )));
    }
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ManifestError::Invalid(format!(
            "manifest has {} layers but the config lists {} diff IDs",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for l in &manifest.layers {
        layer_compression(&l.media_type)?;
    }
    Ok(())
}

/// The compression a layer media type declares.
pub fn layer_compression(media_type: &str) -> Result<Compression, ManifestError> {
    match media_type {
        mt::OCI_LAYER | mt::OCI_LAYER_NONDIST | mt::DOCKER_LAYER => Ok(Compression::None),
        mt::OCI_LAYER_GZIP
        | mt::OCI_LAYER_NONDIST_GZIP
        | mt::DOCKER_LAYER_GZIP
        | mt::DOCKER_LAYER_FOREIGN => Ok(Compression::Gzip),
        mt::OCI_LAYER_ZSTD | mt::OCI_LAYER_NONDIST_ZSTD => Ok(Compression::Zstd),
        other => Err(ManifestError::Invalid(format!(
            "unsupported layer media type {other:?}"
        ))),
    }
}

/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))`.
/// Returns the chain ID of every prefix, base first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of_bytes(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The chain ID of the whole stack (`None` for no layers).
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn oci_manifest_json(media_type: Option<&str>) -> String {
        let mt_field = media_type
            .map(|m| format!("\"mediaType\": \"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion": 2, {mt_field}
              "config": {{"mediaType": "{}", "digest": "{}", "size": 10}},
              "layers": [{{"mediaType": "{}", "digest": "{}", "size": 20}},
                         {{"mediaType": "{}", "digest": "{}", "size": 30}}],
              "annotations": {{"a": "b"}}}}"#,
            mt::OCI_CONFIG,
            d('a'),
            mt::OCI_LAYER_GZIP,
            d('b'),
            mt::OCI_LAYER_ZSTD,
            d('c')
        )
    }

    fn index_json(media_type: &str, entries: &[(&str, &str, Option<&str>)]) -> String {
        let mut ms = Vec::new();
        for (i, (os, arch, variant)) in entries.iter().enumerate() {
            let v = variant
                .map(|v| format!(", \"variant\": \"{v}\""))
                .unwrap_or_default();
            let c = char::from_digit(i as u32, 16).unwrap();
            ms.push(format!(
                r#"{{"mediaType": "{}", "digest": "{}", "size": 1, "platform": {{"os": "{os}", "architecture": "{arch}"{v}}}}}"#,
                mt::DOCKER_MANIFEST,
                d(c)
            ));
        }
        format!(
            r#"{{"schemaVersion": 2, "mediaType": "{media_type}", "manifests": [{}]}}"#,
            ms.join(",")
        )
    }

    #[test]
    fn parse_oci_manifest_by_type_and_sniffing() {
        let body = oci_manifest_json(None);
        for ct in [
            Some(mt::OCI_MANIFEST),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            None,
            Some("application/json"),
        ] {
            let m = parse_manifest(ct, body.as_bytes()).unwrap();
            let Manifest::Image(kind, im) = m else {
                panic!("not an image manifest")
            };
            assert_eq!(kind, ManifestKind::OciManifest);
            assert_eq!(im.layers.len(), 2);
            assert_eq!(im.config.size, 10);
            assert_eq!(
                layer_compression(&im.layers[1].media_type).unwrap(),
                Compression::Zstd
            );
        }
    }

    #[test]
    fn parse_docker_manifest_and_lists() {
        let body = oci_manifest_json(Some(mt::DOCKER_MANIFEST));
        let m = parse_manifest(None, body.as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifest);
        let m = parse_manifest(Some(mt::DOCKER_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifest);
        // Served type disagrees with the document.
        assert!(matches!(
            parse_manifest(Some(mt::OCI_MANIFEST), body.as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let list = index_json(mt::DOCKER_MANIFEST_LIST, &[("linux", "amd64", None)]);
        let m = parse_manifest(None, list.as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifestList);
        // An OCI index without mediaType is sniffed from its shape.
        let idx = list.replace(
            &format!("\"mediaType\": \"{}\", ", mt::DOCKER_MANIFEST_LIST),
            "",
        );
        let m = parse_manifest(None, idx.as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciIndex);
    }

    #[test]
    fn schema1_refused() {
        let s1 =
            r#"{"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": [], "history": []}"#;
        for ct in [
            None,
            Some(mt::DOCKER_SCHEMA1),
            Some(mt::DOCKER_SCHEMA1_SIGNED),
        ] {
            let e = parse_manifest(ct, s1.as_bytes()).unwrap_err();
            assert!(matches!(e, ManifestError::Schema1));
            assert_eq!(
                e.to_string(),
                "schema 1 manifests are not supported; push the image again with a newer client"
            );
        }
        let e = parse_manifest(Some(mt::DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err();
        assert!(matches!(e, ManifestError::Schema1));
    }

    #[test]
    fn bad_manifests() {
        assert!(matches!(
            parse_manifest(None, b"not json"),
            Err(ManifestError::Json { .. })
        ));
        assert!(matches!(
            parse_manifest(None, b"{}"),
            Err(ManifestError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_manifest(
                Some("application/x-foo"),
                oci_manifest_json(None).as_bytes()
            ),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let v3 = oci_manifest_json(None).replace("\"schemaVersion\": 2", "\"schemaVersion\": 3");
        assert!(matches!(
            parse_manifest(None, v3.as_bytes()),
            Err(ManifestError::SchemaVersion(3))
        ));
        let bad_digest = oci_manifest_json(None).replace(&d('b'), "sha256:1234");
        assert!(matches!(
            parse_manifest(None, bad_digest.as_bytes()),
            Err(ManifestError::Json { .. })
        ));
        let neg = oci_manifest_json(None).replace("\"size\": 20", "\"size\": -1");
        assert!(parse_manifest(None, neg.as_bytes()).is_err());
    }

    #[test]
    fn platform_parsing() {
        for (given, canonical) in [
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("Linux/X86_64", "linux/amd64"),
            ("arm64", "linux/arm64"),
        ] {
            assert_eq!(
                Platform::parse(given).unwrap().to_string(),
                canonical,
                "{given}"
            );
        }
        assert_eq!(Platform::parse("linux").unwrap().os, "linux");
        for bad in ["", "/", "linux/", "a/b/c/d", "nonsense", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let host = Platform::host().normalize();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn specifier_errors_are_containerds() {
        for ok in [
            "linux",
            "amd64",
            "linux/arm64/v8",
            "windows(10.0)/amd64",
            "macos",
        ] {
            assert_eq!(Platform::specifier_error(ok), None, "{ok}");
        }
        let e = |s| Platform::specifier_error(s).unwrap();
        assert!(e("       ").starts_with(r#""       " is an invalid OS component of "       ": "#));
        assert!(e("/").starts_with(r#""" is an invalid OS component of "/""#));
        assert!(e("linux/amd 64").starts_with(r#""amd 64" is an invalid component of"#));
        assert_eq!(
            e("nintendo64"),
            r#""nintendo64": unknown operating system or architecture: invalid argument"#
        );
        assert!(e("a/b/c/d").ends_with("cannot parse platform specifier: invalid argument"));
    }

    #[test]
    fn platform_selection() {
        let list = index_json(
            mt::OCI_INDEX,
            &[
                ("linux", "arm", Some("v6")),
                ("linux", "arm", Some("v7")),
                ("linux", "arm64", Some("v8")),
                ("linux", "amd64", None),
                ("windows", "amd64", None),
                ("unknown", "unknown", None),
            ],
        );
        let Manifest::Index(_, idx) = parse_manifest(None, list.as_bytes()).unwrap() else {
            panic!()
        };
        let pick =
            |p: &str| select_platform(&idx, &Platform::parse(p).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap().to_string(), d('3'));
        assert_eq!(pick("linux/arm64").unwrap().to_string(), d('2'));
        assert_eq!(pick("linux/arm64/v8").unwrap().to_string(), d('2'));
        assert_eq!(pick("linux/arm/v7").unwrap().to_string(), d('1'));
        assert_eq!(pick("linux/arm/v6").unwrap().to_string(), d('0'));
        assert_eq!(pick("windows/amd64").unwrap().to_string(), d('4'));
        let e = pick("linux/s390x").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no matching manifest for linux/s390x"),
            "{e}"
        );
        assert!(pick("linux/arm/v5").is_err());
        // An arm/v8 host accepts v7 when there is no v8.
        assert_eq!(pick("linux/arm/v8").unwrap().to_string(), d('1'));
        // The host default.
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                select_platform(&idx, &Platform::host())
                    .unwrap()
                    .digest
                    .to_string(),
                d('3')
            );
        }
    }

    #[test]
    fn config_and_chain_ids() {
        let l0 = Digest::of_bytes(b"layer0");
        let l1 = Digest::of_bytes(b"layer1");
        let l2 = Digest::of_bytes(b"layer2");
        let json = format!(
            r#"{{"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                "config": {{"Env": ["PATH=/bin"], "Cmd": ["sh"], "Healthcheck": {{"Test": ["NONE"]}}}},
                "rootfs": {{"type": "layers", "diff_ids": ["{l0}", "{l1}", "{l2}"]}},
                "history": [{{"created_by": "x"}}, {{"empty_layer": true}}],
                "docker_version": "28"}}"#
        );
        let c = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(c.platform().to_string(), "linux/amd64");
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert!(cc.extra.contains_key("Healthcheck"));
        let test = cc.healthcheck().unwrap().unwrap().test.unwrap();
        assert_eq!(test, ["NONE"]);
        let no_check = ContainerConfig::default();
        assert_eq!(no_check.healthcheck().unwrap(), None);
        assert!(c.extra.contains_key("docker_version"));
        assert_eq!(c.container_config().unwrap(), None);
        let mut legacy = c.clone();
        legacy
            .extra
            .insert("container_config".into(), serde_json::json!({"Cmd": "ls"}));
        let cc = legacy.container_config().unwrap().unwrap();
        assert_eq!(cc.cmd.unwrap(), ["ls"], "decoded as dockerd decodes it");
        assert!(c.history[1].empty_layer);
        let ids = c.chain_ids();
        assert_eq!(ids[0], l0);
        let c1 = Digest::of_bytes(format!("{l0} {l1}").as_bytes());
        assert_eq!(ids[1], c1);
        assert_eq!(ids[2], Digest::of_bytes(format!("{c1} {l2}").as_bytes()));
        assert_eq!(chain_id(&[]), None);
        assert_eq!(
            chain_id(&[l0.clone(), l1.clone(), l2.clone()]).unwrap(),
            ids[2]
        );
        // Round trip keeps unknown fields.
        let back = ImageConfig::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let bad = json.replace("\"layers\"", "\"other\"");
        assert!(ImageConfig::parse(bad.as_bytes()).is_err());
        // Manifest/config agreement.
        let Manifest::Image(_, m) =
            parse_manifest(None, oci_manifest_json(None).as_bytes()).unwrap()
        else {
            panic!()
        };
        assert!(validate_image(&m, &c).is_err(), "2 layers vs 3 diff IDs");
        let mut c2 = c.clone();
        c2.rootfs.diff_ids.pop();
        validate_image(&m, &c2).unwrap();
    }

    #[test]
    fn chain_id_known_value() {
        // Known value from the OCI image spec's chain ID example style: a single layer's
        // chain ID is its diff ID.
        let a = Digest::parse(&d('a')).unwrap();
        assert_eq!(chain_ids(std::slice::from_ref(&a)), vec![a.clone()]);
        let b = Digest::parse(&d('b')).unwrap();
        let want = Digest::of_bytes(format!("{} {}", d('a'), d('b')).as_bytes());
        assert_eq!(chain_id(&[a, b]).unwrap(), want);
    }
}
