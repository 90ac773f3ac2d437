//! Engine API versions (`/v1.41/containers/json`): parsing, comparison, and the one place
//! where response shapes that changed between versions are decided.

use std::fmt;
use std::str::FromStr;

/// An API version `1.N` (Docker has only ever used major version 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

impl ApiVersion {
    pub const fn new(major: u16, minor: u16) -> Self {
        ApiVersion { major, minor }
    }

    /// The newest version Berth speaks (what a request without a version prefix gets).
    pub const CURRENT: ApiVersion = ApiVersion::new(1, 44);
    /// The oldest version Berth accepts.
    pub const MIN: ApiVersion = ApiVersion::new(1, 24);

    /// Image inspect carries `ContainerConfig` (dropped from the response in 1.45; compose
    /// 1.29 reads it on recreate).
    pub fn image_inspect_has_container_config(self) -> bool {
        self < ApiVersion::new(1, 45)
    }

    /// A container created without an IPC mode gets `shareable` below 1.40 (older clients
    /// expect it), the daemon's default (`private`) from 1.40.
    pub fn ipc_shareable_by_default(self) -> bool {
        self < ApiVersion::new(1, 40)
    }

    /// `POST /containers/{id}/update` ignores `PidsLimit` below 1.40.
    pub fn update_ignores_pids_limit(self) -> bool {
        self < ApiVersion::new(1, 40)
    }

    /// The image list shows a dangling image as `<none>:<none>` / `<none>@<none>` below 1.43;
    /// from 1.43 its `RepoTags` and `RepoDigests` are empty lists.
    pub fn image_list_has_none_placeholders(self) -> bool {
        self < ApiVersion::new(1, 43)
    }

    /// `POST /volumes/prune` removes every unused volume below 1.42; from 1.42 only
    /// anonymous ones unless `all=true`.
    pub fn volume_prune_all_by_default(self) -> bool {
        self < ApiVersion::new(1, 42)
    }
}

impl Default for ApiVersion {
    fn default() -> Self {
        ApiVersion::CURRENT
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A version string that is not `MAJOR.MINOR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API version {0:?}")]
pub struct BadVersion(pub String);

impl FromStr for ApiVersion {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, BadVersion> {
        let bad = || BadVersion(s.to_string());
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let num = |x: &str| {
            if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                Err(bad())
            } else {
                x.parse::<u16>().map_err(|_| bad())
            }
        };
        Ok(ApiVersion::new(num(a)?, num(b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        let v: ApiVersion = "1.41".parse().unwrap();
        assert_eq!(v, ApiVersion::new(1, 41));
        assert!(v < ApiVersion::CURRENT && v > ApiVersion::MIN);
        assert!("1.9".parse::<ApiVersion>().unwrap() < "1.10".parse().unwrap());
        for bad in ["", "1", "1.", ".4", "1.4x", "v1.4", "1.4.1", "1.99999"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
        assert_eq!(ApiVersion::new(1, 44).to_string(), "1.44");
        assert!(ApiVersion::new(1, 44).image_inspect_has_container_config());
        assert!(!ApiVersion::new(1, 45).image_inspect_has_container_config());
        assert!(ApiVersion::new(1, 41).volume_prune_all_by_default());
    }
}
