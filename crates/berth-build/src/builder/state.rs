//! A *state*: an image config plus its layers, identified by the config's digest; and the
//! variables an instruction expands with.

use std::collections::BTreeMap;

use berth_image::image_store::LayerRecord;
use berth_image::manifest::{ContainerConfig, ImageConfig, Platform, RootFs};
use berth_image::Digest;

use crate::shell::Vars;

#[derive(Debug, Clone)]
pub(crate) struct State {
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    pub id: Digest,
    /// The local image the stage started from (through `FROM stage` too): the built image's
    /// parent, as the classic builder records one (set when a stage ends).
    pub base: Option<Digest>,
}

impl State {
    /// The container config (a default one when the image has none).
    /// dockerd's `setDefaultPath` at a stage's start: `PATH` added to the environment when
    /// missing. The state keeps its ID (its base's): the steps' states carry it.
    pub(crate) fn set_default_path(&mut self) {
        let cc = self.config.config.get_or_insert_with(Default::default);
        let env = cc.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(super::run::DEFAULT_PATH.into());
        }
    }

    pub fn cc(&self) -> ContainerConfig {
        self.config.config.clone().unwrap_or_default()
    }

    pub fn env(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// A list the config keeps outside the modelled fields (`Shell`, `OnBuild`).
    fn extra_list(&self, key: &str) -> Option<Vec<String>> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.extra.get(key))
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
    }

    /// The shell of RUN/CMD/ENTRYPOINT's shell form (`SHELL`, else `/bin/sh -c`).
    pub fn shell(&self) -> Vec<String> {
        self.extra_list("Shell")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    /// The base image's `ONBUILD` triggers.
    pub fn triggers(&self) -> Vec<String> {
        self.extra_list("OnBuild").unwrap_or_default()
    }

    /// The state `FROM scratch` starts from, for platform `p`.
    pub fn scratch(p: &Platform) -> State {
        let p = p.clone();
        let config = ImageConfig {
            created: None,
            author: None,
            architecture: p.architecture,
            os: p.os,
            os_version: None,
            variant: p.variant,
            config: Some(ContainerConfig::default()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![],
            },
            history: vec![],
            extra: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        State {
            config,
            layers: vec![],
            id: Digest::of_bytes(&bytes),
            base: None,
        }
    }

    /// A state of `config` and `layers`; its ID is the digest of the config's bytes, which
    /// come back with it.
    pub fn new(
        config: ImageConfig,
        layers: Vec<LayerRecord>,
    ) -> Result<(State, Vec<u8>), serde_json::Error> {
        let bytes = serde_json::to_vec(&config)?;
        let id = Digest::of_bytes(&bytes);
        Ok((
            Self {
                config,
                layers,
                id,
                base: None,
            },
            bytes,
        ))
    }
}

/// Docker's short form of an ID (12 hex digits).
pub(crate) fn short(d: &Digest) -> String {
    d.hex()[..12].to_string()
}

/// Build args in scope: name → value (`None`: declared without a value).
pub(crate) type Args = BTreeMap<String, Option<String>>;

/// Variables for expansion: the image env first, then the args in scope.
pub(crate) struct Scope<'a> {
    pub env: &'a [String],
    pub args: &'a Args,
}

impl Vars for Scope<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if let Some(v) = Vars::get(self.env, name) {
            return Some(v);
        }
        self.args.get(name).cloned().flatten()
    }
}

/// The proxy build args: passed to RUN without being declared, and never warned about.
pub(crate) const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `BUILDPLATFORM`, `BUILDOS`, … (the host's) and `TARGETPLATFORM`, `TARGETOS`, … (the
/// platform built for).
pub(crate) fn platform_args(target: &Platform) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (pre, p) in [("BUILD", &Platform::host()), ("TARGET", target)] {
        let plat = match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        };
        m.insert(format!("{pre}PLATFORM"), plat);
        m.insert(format!("{pre}OS"), p.os.clone());
        m.insert(format!("{pre}ARCH"), p.architecture.clone());
        m.insert(
            format!("{pre}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// A platform the build cannot be for (or run steps of).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: {1}")]
    Invalid(String, String),
    /// `a,b`: the classic builder builds one platform (multi-platform images come through
    /// BuildKit's API, one build per platform).
    #[error("{0:?}: one platform per build: a multi-platform image needs BuildKit (docker buildx build --platform a,b) and an exporter that stores an index (--push, type=oci or type=local)")]
    Multiple(String),
    /// A step has to run a program of a platform this host cannot run.
    #[error("cannot run a program of platform {platform}: {source}")]
    NotRunnable {
        platform: String,
        #[source]
        source: crate::binfmt::NotRunnable,
    },
}

/// Parses a `--platform` or `FROM --platform` value (normalised).
pub(crate) fn parse_platform(p: &str) -> Result<Platform, PlatformError> {
    if p.contains(',') {
        return Err(PlatformError::Multiple(p.to_string()));
    }
    Platform::parse(p.trim()).map_err(|e| {
        // The parser's own text already names the platform: only its reason is kept.
        let why = match e {
            berth_image::manifest::ManifestError::InvalidPlatform(_, why) => why.to_string(),
            e => e.to_string(),
        };
        PlatformError::Invalid(p.to_string(), why)
    })
}

/// The platform a build is for: `--platform`, else the host's.
pub(crate) fn target_platform(p: Option<&str>) -> Result<Platform, PlatformError> {
    match p.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) => parse_platform(p),
        None => Ok(Platform::host()),
    }
}

/// Whether an image's config is of platform `want` (normalised): its OS and architecture, and
/// its variant when `want` names one.
pub(crate) fn config_is(config: &ImageConfig, want: &Platform) -> bool {
    let have = config.platform().normalize();
    have.os == want.os
        && have.architecture == want.architecture
        && (want.variant.is_none() || have.variant == want.variant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let h = Platform::host();
        assert_eq!(target_platform(None).unwrap(), h);
        assert_eq!(
            target_platform(Some("linux/aarch64")).unwrap().architecture,
            "arm64"
        );
        assert!(matches!(
            target_platform(Some("linux/amd64,linux/arm64")),
            Err(PlatformError::Multiple(_))
        ));
        assert!(matches!(
            target_platform(Some("linux//x")),
            Err(PlatformError::Invalid(..))
        ));
        let args = platform_args(&Platform::parse("linux/arm/v7").unwrap());
        assert_eq!(args["TARGETPLATFORM"], "linux/arm/v7");
        assert_eq!(args["TARGETVARIANT"], "v7");
        assert_eq!(args["BUILDARCH"], h.architecture);
        let s = State::scratch(&Platform::parse("linux/arm64").unwrap());
        assert!(config_is(
            &s.config,
            &Platform::parse("linux/arm64").unwrap()
        ));
        assert!(!config_is(
            &s.config,
            &Platform::parse("linux/amd64").unwrap()
        ));
        assert_ne!(s.id, State::scratch(&h).id);
    }
}
