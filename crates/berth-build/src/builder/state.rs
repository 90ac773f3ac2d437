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
}

impl State {
    /// The container config (a default one when the image has none).
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

    /// The state `FROM scratch` starts from.
    pub fn scratch() -> State {
        let p = Platform::host();
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
        Ok((Self { config, layers, id }, bytes))
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

/// `BUILDPLATFORM`, `TARGETOS`, …: the host's platform (the only one built for).
pub(crate) fn platform_args() -> BTreeMap<String, String> {
    let p = Platform::host();
    let plat = match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    };
    let mut m = BTreeMap::new();
    for pre in ["BUILD", "TARGET"] {
        m.insert(format!("{pre}PLATFORM"), plat.clone());
        m.insert(format!("{pre}OS"), p.os.clone());
        m.insert(format!("{pre}ARCH"), p.architecture.clone());
        m.insert(
            format!("{pre}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    m
}

/// A platform other than the host's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "platform {requested:?} is not supported: berth builds for the host platform ({host}) only"
)]
pub struct PlatformError {
    pub requested: String,
    /// `os/architecture`.
    pub host: String,
}

/// Refuses a platform other than the host's.
pub(crate) fn check_platform(p: &str) -> Result<(), PlatformError> {
    let h = Platform::host();
    let parts: Vec<&str> = p.split('/').collect();
    let ok = match parts.as_slice() {
        [os] => *os == h.os,
        [os, arch] => *os == h.os && *arch == h.architecture,
        [os, arch, v] => *os == h.os && *arch == h.architecture && Some(*v) == h.variant.as_deref(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(PlatformError {
            requested: p.to_string(),
            host: format!("{}/{}", h.os, h.architecture),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let h = Platform::host();
        assert!(check_platform(&format!("{}/{}", h.os, h.architecture)).is_ok());
        assert!(check_platform("linux/s390x").is_err() || h.architecture == "s390x");
    }
}
