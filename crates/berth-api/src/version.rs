//! Engine API versions (`/v1.41/containers/json`): parsing, comparison, and the one place
//! where response shapes that changed between versions are decided.

use std::fmt;
use std::str::FromStr;

use crate::container::{CreateRequest, HostConfig, InspectResponse, Summary};
use crate::image::{ImageSummary, InspectContainerFields, InspectImage};
use crate::network::{CreateRequest as NetworkCreate, EndpointSettings, ENDPOINT_SYSCTLS};

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
    pub const CURRENT: ApiVersion = ApiVersion::new(1, 51);
    /// The oldest version Berth accepts.
    pub const MIN: ApiVersion = ApiVersion::new(1, 24);

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

    /// `VolumeOptions.Subpath` of a create's `Mounts` is refused below 1.45.
    pub fn accepts_volume_subpath(self) -> bool {
        self >= ApiVersion::new(1, 45)
    }

    /// The container list shows `HostConfig.Annotations` from 1.46.
    pub fn container_list_has_annotations(self) -> bool {
        self >= ApiVersion::new(1, 46)
    }

    /// `GET /events` streams the image `create` event from 1.46.
    pub fn events_include_image_create(self) -> bool {
        self >= ApiVersion::new(1, 46)
    }

    /// `POST /images/{name}/push` reads `platform` from 1.46.
    pub fn push_reads_platform(self) -> bool {
        self >= ApiVersion::new(1, 46)
    }

    /// `GET /info` carries `RegistryConfig.AllowNondistributableArtifactsCIDRs` and
    /// `…Hostnames` (always `null`) below 1.47.
    pub fn info_has_nondistributable_artifacts(self) -> bool {
        self < ApiVersion::new(1, 47)
    }

    /// `GET /images/json` reads `manifests` from 1.47.
    pub fn image_list_reads_manifests(self) -> bool {
        self >= ApiVersion::new(1, 47)
    }

    /// From 1.48: `GwPriority` of create/connect endpoints is honoured (below, every endpoint
    /// has priority 0), `Mounts` may have type `image`, a container-wide `VolumeDriver` with
    /// volume `Mounts` warns, network create reads `EnableIPv4`, image inspect reads
    /// `manifests`, image history/save/load read `platform`, build prune reads
    /// `reserved-space`, `max-used-space` and `min-free-space`.
    pub fn api_1_48_features(self) -> bool {
        self >= ApiVersion::new(1, 48)
    }

    /// From 1.49: `GET /info` has `FirewallBackend`; image inspect reads `platform`.
    pub fn api_1_49_features(self) -> bool {
        self >= ApiVersion::new(1, 49)
    }

    /// Below 1.50 `GET /info` has `BridgeNfIptables`/`BridgeNfIp6tables` (always `false`)
    /// and image inspect's `Config` has the container-only fields (`Hostname`, `Tty`, …,
    /// always empty); from 1.50 both are omitted, `DELETE /images/{name}` reads
    /// `platforms` and `GET /info` may have `DiscoveredDevices`.
    pub fn has_pre_1_50_legacy_fields(self) -> bool {
        self < ApiVersion::new(1, 50)
    }

    /// `DELETE /images/{name}` reads `platforms` from 1.50.
    pub fn image_delete_reads_platforms(self) -> bool {
        self >= ApiVersion::new(1, 50)
    }

    /// `GET /images/json` counts the containers using each image (`Containers`) from 1.51;
    /// below it is always -1.
    pub fn image_list_counts_containers(self) -> bool {
        self >= ApiVersion::new(1, 51)
    }
}

/// A request a route refuses for its API version or its settings (dockerd's messages; a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// A create naming several networks below API 1.44.
    #[error("Container cannot be created with multiple network endpoints: {}", .0.join(", "))]
    MultipleEndpoints(Vec<String>),
    #[error("VolumeOptions.Subpath needs API v1.45 or newer")]
    SubpathNeedsV145,
    #[error(r#"Mount type "Image" needs API v1.48 or newer"#)]
    ImageMountNeedsV148,
    /// A network with neither IPv4 nor IPv6.
    #[error("IPv4 or IPv6 must be enabled")]
    NoAddressFamily,
    /// `EnableIPv4: false` with IPv6: Berth's networks always have IPv4.
    #[error("IPv6-only networks (EnableIPv4 false) are not supported")]
    Ipv6Only,
    /// A top-level `Sysctls` entry naming an interface that cannot be migrated to the
    /// endpoint's driver option (dockerd answers these with a plain error: 500).
    #[error("{0}")]
    InterfaceSysctl(String),
    /// `HostConfig.NetworkMode` names no entry of `EndpointsConfig` (dockerd's words).
    #[error(
        "HostConfig.NetworkMode must match the identity of a network in NetworkSettings.Networks"
    )]
    NetworkModeNotInEndpoints,
    /// A container-wide `MacAddress` below API 1.44 with a network mode that has no
    /// endpoint of its own (host, none, `container:`).
    #[error("conflicting options: mac-address and the network mode")]
    MacAddressAndNetworkMode,
    /// From API 1.44: the container-wide `MacAddress` and the main network's differ.
    #[error("the container-wide MAC address must match the endpoint-specific MAC address for the main network, or be left empty")]
    MacAddressMismatch,
    /// From API 1.44: the container-wide `MacAddress` has no network to move to.
    #[error("unable to migrate container-wide MAC address to a specific network: {NetworkModeNotInEndpoints}", NetworkModeNotInEndpoints = RouteError::NetworkModeNotInEndpoints)]
    MacAddressNoNetwork,
}

/// dockerd's `handleMACAddressBC`: below API 1.44 the container-wide `Config.MacAddress` is
/// the main network's (refused with a network mode without endpoint; an endpoint's own is
/// ignored, as those versions had none); from 1.44 it is deprecated: moved to the main
/// network's endpoint (which must not name another) with a warning, and cleared.
fn migrate_mac_address(
    v: ApiVersion,
    req: &mut CreateRequest,
) -> Result<Option<String>, RouteError> {
    let old_api = v < ApiVersion::new(1, 44);
    let deprecated = req.config.mac_address.clone();
    let mode = req
        .host_config
        .as_ref()
        .map_or("", |h| h.network_mode.as_str())
        .to_string();
    if deprecated.is_empty() {
        if old_api {
            let eps = req
                .networking_config
                .as_mut()
                .and_then(|n| n.endpoints_config.as_mut());
            eps.into_iter()
                .flatten()
                .for_each(|(_, e)| e.mac_address.clear());
        }
        return Ok(None);
    }
    let eps = req
        .networking_config
        .get_or_insert_with(Default::default)
        .endpoints_config
        .get_or_insert_with(Default::default);
    let bridge = matches!(mode.as_str(), "" | "default" | "bridge");
    let own_endpoint =
        bridge || !(mode == "host" || mode == "none" || mode.starts_with("container:"));
    if old_api && !own_endpoint {
        return Err(RouteError::MacAddressAndNetworkMode);
    }
    if own_endpoint {
        // dockerd's `epConfigForNetMode`: the only entry below 1.44, else the one of the mode.
        let names: &[&str] = if bridge {
            &["default", "bridge"]
        } else {
            &[mode.as_str()]
        };
        let key = if eps.is_empty() {
            names[0].to_string()
        } else if old_api {
            eps.keys().next().cloned().unwrap_or_default()
        } else {
            match names.iter().find(|n| eps.contains_key(**n)) {
                Some(n) => n.to_string(),
                None => return Err(RouteError::MacAddressNoNetwork),
            }
        };
        let ep = eps.entry(key).or_default();
        if old_api || ep.mac_address.is_empty() {
            ep.mac_address.clone_from(&deprecated);
        } else if ep.mac_address != deprecated {
            return Err(RouteError::MacAddressMismatch);
        }
    }
    if old_api {
        return Ok(None);
    }
    req.config.mac_address.clear();
    Ok(Some(
        "The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead.".into(),
    ))
}

/// dockerd's `handleSysctlBC`: top-level sysctls of an interface (`net.X.Y.ethN.Z`) cannot
/// be set when the container's namespace is made (the interface comes later). Those of
/// `eth0` move to the driver option of the endpoint of `NetworkMode` as `net.X.Y.IFNAME.Z`
/// (with a warning), below API 1.48; from 1.48, and for other interfaces, it is an error.
fn migrate_interface_sysctls(
    v: ApiVersion,
    req: &mut CreateRequest,
) -> Result<Option<String>, RouteError> {
    let Some(hc) = req.host_config.as_mut() else {
        return Ok(None);
    };
    let mode = hc.network_mode.as_str();
    if mode == "host" || mode.starts_with("container:") {
        return Ok(None);
    }
    let mut moved = Vec::new();
    let mut migrated = Vec::new();
    for (k, val) in hc.sysctls.iter().flatten() {
        let parts: Vec<&str> = k.splitn(5, '.').collect();
        let [_, x, y, ifname, z] = parts.as_slice() else {
            continue;
        };
        if parts[0] != "net" || !ifname.starts_with("eth") {
            continue;
        }
        if v.api_1_48_features() {
            return Err(RouteError::InterfaceSysctl(format!(
                "interface specific sysctl setting \"{k}\" must be supplied using driver option '{ENDPOINT_SYSCTLS}'"
            )));
        }
        if *ifname != "eth0" {
            return Err(RouteError::InterfaceSysctl(format!(
                "unable to determine network endpoint for sysctl {k}, use driver option '{ENDPOINT_SYSCTLS}' to set per-interface sysctls"
            )));
        }
        moved.push(k.clone());
        migrated.push(format!("net.{x}.{y}.IFNAME.{z}={val}"));
    }
    if moved.is_empty() {
        return Ok(None);
    }
    let name = match mode {
        "" | "default" => "bridge",
        m => m,
    };
    let eps = req
        .networking_config
        .get_or_insert_with(Default::default)
        .endpoints_config
        .get_or_insert_with(Default::default);
    let key = if eps.is_empty() || eps.contains_key(name) {
        name.to_string()
    } else if v < ApiVersion::new(1, 44) {
        // One endpoint at most: the one the container gets.
        eps.keys().next().cloned().unwrap_or_default()
    } else {
        return Err(RouteError::InterfaceSysctl(format!(
            "unable to find a network for sysctl {}: {}",
            moved[0],
            RouteError::NetworkModeNotInEndpoints
        )));
    };
    let ep = eps.entry(key).or_default();
    let mut opt = migrated.join(",");
    let warning = format!(
        "Migrated sysctl {:?} to DriverOpts{{{:?}:{:?}}}.",
        moved.join(","),
        ENDPOINT_SYSCTLS,
        opt
    );
    let opts = ep.driver_opts.get_or_insert_with(Default::default);
    if let Some(old) = opts.get(ENDPOINT_SYSCTLS) {
        opt = format!("{opt},{old}");
    }
    opts.insert(ENDPOINT_SYSCTLS.into(), opt);
    if let Some(s) = hc.sysctls.as_mut() {
        s.retain(|k, _| !moved.contains(k));
    }
    Ok(Some(warning))
}

/// What a request of an older version may not use, and the warnings dockerd's router adds.
impl ApiVersion {
    /// dockerd's route checks of `POST /containers/create`: below 1.44 one network at most; a volume
    /// `Subpath` needs 1.45, an `image` mount 1.48 (errors, the message as dockerd's); below
    /// 1.48 every endpoint's `GwPriority` is 0. Returns the route's warnings (from 1.48 a
    /// container-wide `VolumeDriver` next to volume `Mounts` without a driver of their own).
    pub fn adapt_create(self, req: &mut CreateRequest) -> Result<Vec<String>, RouteError> {
        // Creating a container connected to several networks needs API 1.44.
        if self < ApiVersion::new(1, 44) {
            let eps = req
                .networking_config
                .as_ref()
                .and_then(|n| n.endpoints_config.as_ref());
            if let Some(eps) = eps.filter(|e| e.len() > 1) {
                return Err(RouteError::MultipleEndpoints(eps.keys().cloned().collect()));
            }
        }
        let mac_warning = migrate_mac_address(self, req)?;
        let sysctl_warning = migrate_interface_sysctls(self, req)?;
        let mounts = req
            .host_config
            .as_ref()
            .and_then(|h| h.mounts.as_deref())
            .unwrap_or_default();
        if !self.accepts_volume_subpath()
            && mounts.iter().any(|m| {
                m.volume_options
                    .as_ref()
                    .is_some_and(|o| !o.subpath.is_empty())
            })
        {
            return Err(RouteError::SubpathNeedsV145);
        }
        if !self.api_1_48_features() {
            if mounts.iter().any(|m| m.kind == "image") {
                return Err(RouteError::ImageMountNeedsV148);
            }
            if let Some(eps) = req
                .networking_config
                .as_mut()
                .and_then(|n| n.endpoints_config.as_mut())
            {
                eps.values_mut().for_each(|e| e.gw_priority = 0);
            }
            return Ok(mac_warning.into_iter().chain(sysctl_warning).collect());
        }
        let unnamed_volume = |hc: &HostConfig| {
            hc.mounts.iter().flatten().any(|m| {
                m.kind == "volume"
                    && m.volume_options
                        .as_ref()
                        .and_then(|o| o.driver_config.as_ref())
                        .is_none_or(|d| d.name.is_empty())
            })
        };
        let volume_driver_warning = req
            .host_config
            .as_ref()
            .filter(|hc| !hc.volume_driver.is_empty() && unnamed_volume(hc))
            .map(|_| "WARNING: the container-wide volume-driver configuration is ignored for volumes specified via 'mount'. Use '--mount type=volume,volume-driver=...' instead".to_string());
        Ok(volume_driver_warning
            .into_iter()
            .chain(mac_warning)
            .chain(sysctl_warning)
            .collect())
    }

    /// `POST /networks/{id}/connect`: below 1.48 the endpoint's `GwPriority` is 0.
    pub fn adapt_connect(self, ep: &mut EndpointSettings) {
        if !self.api_1_48_features() {
            ep.gw_priority = 0;
        }
    }

    /// `POST /networks/create`: `EnableIPv4` is read from 1.48 (ignored below). Berth's
    /// networks always have IPv4: `false` is refused (with dockerd's message when IPv6 is
    /// off too).
    pub fn adapt_network_create(self, req: &mut NetworkCreate) -> Result<(), RouteError> {
        if !self.api_1_48_features() {
            req.enable_ipv4 = None;
        }
        match req.enable_ipv4 {
            Some(false) if !req.enable_ipv6 => Err(RouteError::NoAddressFamily),
            Some(false) => Err(RouteError::Ipv6Only),
            _ => Ok(()),
        }
    }

    /// `GET /containers/{id}/json` in this version's shape: below 1.45 the aliases of a
    /// user-defined network's endpoint also list the container's short ID and host name
    /// (dockerd lists those in `DNSNames` from 1.45).
    pub fn adapt_container_inspect(self, c: &mut InspectResponse) {
        if self >= ApiVersion::new(1, 45) {
            return;
        }
        let names = [c.id.chars().take(12).collect(), c.config.hostname.clone()];
        for (net, ep) in c.network_settings.networks.iter_mut() {
            let builtin = matches!(net.as_str(), "bridge" | "host" | "none" | "default");
            if builtin || net.starts_with("container:") {
                continue;
            }
            let aliases = ep.aliases.get_or_insert_with(Vec::new);
            for n in &names {
                if !aliases.contains(n) {
                    aliases.push(n.clone());
                }
            }
        }
    }

    /// `GET /containers/json` in this version's shape: `HostConfig.Annotations` from 1.46.
    pub fn adapt_container_list(self, list: &mut [Summary]) {
        if !self.container_list_has_annotations() {
            list.iter_mut()
                .for_each(|c| c.host_config.annotations = None);
        }
    }

    /// `GET /images/{name}/json` in this version's shape: `Config`'s container-only fields
    /// below 1.50. `ContainerConfig` (given by the caller, who reads it from the image) is
    /// kept at every version: dockerd drops it from 1.45, and compose 1.29 (Debian's
    /// `docker-compose`, which negotiates the newest version) then fails every recreate with
    /// `KeyError: 'ContainerConfig'`; clients of 1.45+ ignore the extra field.
    pub fn adapt_image_inspect(
        self,
        i: &mut InspectImage,
        container_config: impl FnOnce() -> crate::container::Config,
    ) {
        i.container_config = Some(container_config());
        i.config.container_fields = self
            .has_pre_1_50_legacy_fields()
            .then(InspectContainerFields::default);
    }

    /// `GET /images/json` in this version's shape: `Containers` is -1 below 1.51 (`count`
    /// gives the number of containers using an image ID otherwise).
    pub fn adapt_image_list(self, list: &mut [ImageSummary], count: impl Fn(&str) -> i64) {
        for i in list {
            i.containers = if self.image_list_counts_containers() {
                count(&i.id)
            } else {
                -1
            };
        }
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
        assert!(ApiVersion::new(1, 41).volume_prune_all_by_default());
    }

    /// Every 1.45–1.51 gate flips exactly at its version (below: the old shape).
    #[test]
    fn gates_from_1_45_to_1_51() {
        let v = |m| ApiVersion::new(1, m);
        type Gate = fn(ApiVersion) -> bool;
        let gates: [(Gate, u16, bool); 11] = [
            (ApiVersion::accepts_volume_subpath, 45, true),
            (ApiVersion::container_list_has_annotations, 46, true),
            (ApiVersion::events_include_image_create, 46, true),
            (ApiVersion::push_reads_platform, 46, true),
            (ApiVersion::info_has_nondistributable_artifacts, 47, false),
            (ApiVersion::image_list_reads_manifests, 47, true),
            (ApiVersion::api_1_48_features, 48, true),
            (ApiVersion::api_1_49_features, 49, true),
            (ApiVersion::has_pre_1_50_legacy_fields, 50, false),
            (ApiVersion::image_delete_reads_platforms, 50, true),
            (ApiVersion::image_list_counts_containers, 51, true),
        ];
        for (gate, at, from) in gates {
            assert_eq!(gate(v(at - 1)), !from, "below 1.{at}");
            assert_eq!(gate(v(at)), from, "at 1.{at}");
            assert_eq!(gate(ApiVersion::MIN), !from, "1.24 vs 1.{at}");
            assert_eq!(gate(ApiVersion::CURRENT), from, "current vs 1.{at}");
        }
        assert_eq!(ApiVersion::CURRENT.to_string(), "1.51");
    }

    use serde_json::{json, Value};

    fn create(body: Value) -> CreateRequest {
        CreateRequest::decode(body.to_string().as_bytes())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn create_checks_and_warnings() {
        let (v44, v45, v47, v48) = (
            ApiVersion::new(1, 44),
            ApiVersion::new(1, 45),
            ApiVersion::new(1, 47),
            ApiVersion::new(1, 48),
        );
        let subpath = json!({"Image": "busybox", "HostConfig": {"Mounts": [
            {"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"Subpath": "a"}}]}});
        let err = v44.adapt_create(&mut create(subpath.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VolumeOptions.Subpath needs API v1.45 or newer"
        );
        assert_eq!(v45.adapt_create(&mut create(subpath)), Ok(vec![]));

        let image = json!({"Image": "busybox", "HostConfig": {"Mounts": [
            {"Type": "image", "Source": "busybox", "Target": "/i"}]}});
        let err = v47.adapt_create(&mut create(image.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"Mount type "Image" needs API v1.48 or newer"#
        );
        assert!(v48.adapt_create(&mut create(image)).is_ok());

        let prio = json!({"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {
            "a": {"GwPriority": 10}, "b": {"GwPriority": -5}}}});
        let prios = |r: &CreateRequest| -> Vec<i64> {
            let eps = r
                .networking_config
                .as_ref()
                .unwrap()
                .endpoints_config
                .as_ref();
            eps.unwrap().values().map(|e| e.gw_priority).collect()
        };
        let mut r = create(prio.clone());
        v47.adapt_create(&mut r).unwrap();
        assert_eq!(prios(&r), [0, 0]);
        let mut r = create(prio);
        v48.adapt_create(&mut r).unwrap();
        assert_eq!(prios(&r), [10, -5]);

        let driver = json!({"Image": "busybox", "HostConfig": {"VolumeDriver": "local",
            "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}});
        assert_eq!(v47.adapt_create(&mut create(driver.clone())), Ok(vec![]));
        let w = v48.adapt_create(&mut create(driver)).unwrap();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("WARNING: the container-wide volume-driver configuration is ignored")
        );
        let named = json!({"Image": "busybox", "HostConfig": {"VolumeDriver": "local",
            "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                "VolumeOptions": {"DriverConfig": {"Name": "local"}}}]}});
        assert_eq!(v48.adapt_create(&mut create(named)), Ok(vec![]));
    }

    #[test]
    fn list_and_image_shapes() {
        let mut l = vec![Summary::default()];
        l[0].host_config.annotations = Some([("a".to_string(), "b".to_string())].into());
        let mut old = l.clone();
        ApiVersion::new(1, 45).adapt_container_list(&mut old);
        assert_eq!(old[0].host_config.annotations, None);
        ApiVersion::new(1, 46).adapt_container_list(&mut l);
        let v = serde_json::to_value(&l[0]).unwrap();
        assert_eq!(v["HostConfig"]["Annotations"]["a"], "b");
        assert!(serde_json::to_value(&old[0]).unwrap()["HostConfig"]
            .get("Annotations")
            .is_none());

        let mut imgs = vec![ImageSummary {
            id: "sha256:x".into(),
            ..Default::default()
        }];
        ApiVersion::new(1, 50).adapt_image_list(&mut imgs, |_| 3);
        assert_eq!(imgs[0].containers, -1);
        ApiVersion::new(1, 51).adapt_image_list(&mut imgs, |id| (id == "sha256:x").into());
        assert_eq!(imgs[0].containers, 1);

        let shape = |v: ApiVersion| {
            let mut i = InspectImage::default();
            v.adapt_image_inspect(&mut i, Default::default);
            serde_json::to_value(&i).unwrap()
        };
        let (v44, v49, v50) = (
            shape(ApiVersion::new(1, 44)),
            shape(ApiVersion::new(1, 49)),
            shape(ApiVersion::new(1, 50)),
        );
        assert!(v44.get("ContainerConfig").is_some() && v50.get("ContainerConfig").is_some());
        for k in ["Hostname", "Tty", "Image"] {
            assert!(v49["Config"].get(k).is_some(), "{k}");
            assert!(v50["Config"].get(k).is_none(), "{k}");
        }
        // Fields without `omitempty` in dockerd stay (`null`/`""`).
        assert_eq!(
            (&v50["Config"]["Cmd"], &v50["Config"]["User"]),
            (&Value::Null, &json!(""))
        );
    }

    #[test]
    fn network_create_enable_ipv4() {
        let req = |v4: Option<bool>, v6: bool| NetworkCreate {
            enable_ipv4: v4,
            enable_ipv6: v6,
            ..Default::default()
        };
        let mut r = req(Some(false), false);
        assert_eq!(ApiVersion::new(1, 47).adapt_network_create(&mut r), Ok(()));
        assert_eq!(r.enable_ipv4, None);
        let err = ApiVersion::new(1, 48).adapt_network_create(&mut req(Some(false), false));
        assert_eq!(err.unwrap_err().to_string(), "IPv4 or IPv6 must be enabled");
        assert!(ApiVersion::new(1, 48)
            .adapt_network_create(&mut req(Some(false), true))
            .is_err());
        assert_eq!(
            ApiVersion::new(1, 48).adapt_network_create(&mut req(Some(true), false)),
            Ok(())
        );
    }
}
