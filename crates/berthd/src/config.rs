//! The daemon's configuration: the flags (dockerd's names), the JSON file (`--config-file`,
//! default `/etc/berth/daemon.json`, dockerd's `daemon.json` keys), how the two merge, and what
//! a reload (SIGHUP) changes.
//!
//! Rules, as dockerd's:
//! - a key is the long name of its flag, plural for the repeatable ones (`hosts` for `-H`,
//!   `insecure-registries`, `registry-mirrors`, `labels`, `log-opts`, `default-ulimits`,
//!   `default-address-pools`);
//! - a key the daemon does not know is an error listing every such key ("the following
//!   directives don't match any configuration option"); dockerd keys Berth has no use for are
//!   named as such;
//! - an option given both on the command line (or through its `BERTHD_*` variable) and in the
//!   file is an error naming both values;
//! - a missing file is fine unless `--config-file` named it.
//!
//! Values are checked here (a bad value names its key and line), so `berthd --validate` catches
//! what a start would refuse. [`DaemonConfig`] is the merged result; [`DaemonConfig::changes`]
//! lists what a reload changes and [`OptionInfo::reloadable`] what it may apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_api::container::Ulimit;
use berth_network::Ipv4Net;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The configuration file read when `--config-file` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";
/// The API socket when neither `-H` nor `hosts` is given.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
/// Docker's socket, served too with `docker-compat`.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The group owning the API sockets (as dockerd's `docker`).
pub const DEFAULT_GROUP: &str = "berth";

/// berthd's command line.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "berthd",
    version,
    about = "Berth daemon: the Docker Engine API on unix sockets and TCP with TLS",
    long_about = "Berth daemon: serves the Docker Engine API (unix sockets, TCP with TLS, \
                  systemd socket activation with -H fd://). Options may also be set in the \
                  configuration file (--config-file, default /etc/berth/daemon.json) under \
                  dockerd's key names; an option set in both places is an error. SIGHUP \
                  reloads the file. Started by a user other than root, berthd is rootless: \
                  it enters a user namespace mapped from /etc/subuid and /etc/subgid \
                  (newuidmap/newgidmap), keeps its data in $XDG_DATA_HOME/berth and serves \
                  unix://$XDG_RUNTIME_DIR/berth/berth.sock (configuration: \
                  $XDG_CONFIG_HOME/berth/daemon.json)."
)]
pub struct Flags {
    /// The daemon's configuration file (JSON, dockerd's daemon.json keys).
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Check the configuration (file and flags) and exit.
    #[arg(long)]
    pub validate: bool,
    /// Address to listen on (`unix:///path`, `tcp://host:port`, `fd://` or `fd://N` for
    /// sockets passed by systemd); repeatable. Key `hosts`.
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Group owning the unix sockets (mode 0660); root only when the group does not exist.
    #[arg(short = 'G', long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Use TLS on TCP listeners (implied by --tlsverify); `--tls=false` allows plain TCP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub tls: Option<bool>,
    /// Use TLS and require client certificates signed by --tlscacert.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub tlsverify: Option<bool>,
    /// CA certificate(s) trusted for client certificates.
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// The server's TLS certificate (chain).
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// The server's TLS key.
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Root of persistent state [default: /var/lib/berth; rootless: $XDG_DATA_HOME/berth].
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Root of run-time state [default: /run/berth; rootless: $XDG_RUNTIME_DIR/berth].
    #[arg(long, value_name = "DIR")]
    pub exec_root: Option<PathBuf>,
    /// Pid file [default: EXEC_ROOT/berthd.pid].
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Parent cgroup of containers [default: /berth].
    #[arg(long, value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    /// A registry reachable over plain http (besides loopback ones); repeatable. Key
    /// `insecure-registries`.
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registries: Vec<String>,
    /// A mirror of Docker Hub (`https://host[:port]`), tried before it for pulls; repeatable.
    /// Key `registry-mirrors`.
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Layers downloaded at once per pull [default: 3].
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<usize>,
    /// Layers uploaded at once per push [default: 5].
    #[arg(long, value_name = "N")]
    pub max_concurrent_uploads: Option<usize>,
    /// The shim binary [default: next to berthd, /usr/libexec/berth, or PATH].
    #[arg(long, value_name = "FILE")]
    pub shim: Option<PathBuf>,
    /// The init of `--init` containers, a static binary (dockerd's `--init-path`)
    /// [default: berth-init next to berthd, in /usr/libexec/berth, or on PATH].
    #[arg(long = "init-path", value_name = "FILE")]
    pub init_path: Option<PathBuf>,
    /// Run an init inside every container unless it says otherwise (`--init` by default).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub init: Option<bool>,
    /// The OCI runtime binary [default: next to berthd, else berth-runtime on PATH].
    #[arg(long, value_name = "FILE")]
    pub runtime: Option<PathBuf>,
    /// Log level (debug, info, warn, error, fatal) [default: info].
    #[arg(short = 'l', long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Debug logging.
    #[arg(short = 'D', long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub debug: Option<bool>,
    /// Labels shown by `info` (`key=value`); repeatable. Key `labels`.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// The default bridge network's interface [default: berth0].
    #[arg(short = 'b', long, env = "BERTHD_BRIDGE", value_name = "NAME")]
    pub bridge: Option<String>,
    /// The default bridge's address and prefix (e.g. 172.17.0.1/16); chosen when absent.
    #[arg(long, env = "BERTHD_BIP", value_name = "CIDR")]
    pub bip: Option<Ipv4Net>,
    /// Where default-bridge containers get their addresses (inside --bip's subnet).
    #[arg(long, env = "BERTHD_FIXED_CIDR", value_name = "CIDR")]
    pub fixed_cidr: Option<Ipv4Net>,
    /// Subnets for networks created without one (`base=10.10.0.0/16,size=24`); repeatable,
    /// tried in order. Key `default-address-pools`.
    #[arg(long = "default-address-pool", value_name = "base=CIDR,size=N")]
    pub default_address_pools: Vec<String>,
    /// Firewall backend: auto, nftables, iptables, none [default: auto].
    #[arg(long, env = "BERTHD_FIREWALL", value_name = "BACKEND")]
    pub firewall_backend: Option<String>,
    /// The log driver of containers that name none [default: json-file].
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// An option of the default log driver (`max-size=10m`, `max-file=3`); repeatable. Key
    /// `log-opts`.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// A ulimit of containers that do not set it (`nofile=1024:2048`); repeatable. Key
    /// `default-ulimits`.
    #[arg(long = "default-ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub default_ulimits: Vec<String>,
    /// Accepted for dockerd's configurations: containers always outlive the daemon in Berth.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub live_restore: Option<bool>,
    /// Also serve the API on Docker's socket (/var/run/docker.sock), so the docker CLI,
    /// compose and docker-py work without DOCKER_HOST. Refused while a dockerd owns it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub docker_compat: Option<bool>,
    /// Serve the Kubernetes CRI (`runtime.v1`) for the kubelet [default: true]. Key `cri`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub cri: Option<bool>,
    /// The CRI's unix socket [default: EXEC_ROOT/cri.sock, i.e. /run/berth/cri.sock].
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,
    /// The CNI network configurations of pods [default: /etc/cni/net.d].
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// The CNI plugin binaries [default: /usr/lib/cni].
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// The address of the CRI streaming server (the URLs of Exec, Attach and PortForward)
    /// [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub cri_stream_address: Option<std::net::IpAddr>,
    /// The port of the CRI streaming server [default: 0, a free port].
    #[arg(long, value_name = "PORT")]
    pub cri_stream_port: Option<u16>,
    /// How long a CRI streaming connection (exec, attach, port-forward) may carry nothing
    /// before it is closed, a Go duration (containerd's `stream_idle_timeout`) [default: 4h;
    /// 0: never].
    #[arg(long, value_name = "DURATION")]
    pub cri_stream_idle_timeout: Option<String>,
}

/// One configuration option.
#[derive(Debug, Clone, Copy)]
pub struct OptionInfo {
    /// Its key in the file.
    pub key: &'static str,
    /// Its flag (long name).
    pub flag: &'static str,
    /// Whether a reload (SIGHUP) applies a change of it; others need a restart.
    pub reloadable: bool,
}

const fn opt(key: &'static str, flag: &'static str, reloadable: bool) -> OptionInfo {
    OptionInfo {
        key,
        flag,
        reloadable,
    }
}

/// Every option of the file, with its flag.
pub const OPTIONS: &[OptionInfo] = &[
    opt("hosts", "host", false),
    opt("group", "group", false),
    opt("tls", "tls", false),
    opt("tlsverify", "tlsverify", false),
    opt("tlscacert", "tlscacert", false),
    opt("tlscert", "tlscert", false),
    opt("tlskey", "tlskey", false),
    opt("data-root", "data-root", false),
    opt("exec-root", "exec-root", false),
    opt("pidfile", "pidfile", false),
    opt("cgroup-parent", "cgroup-parent", false),
    opt("insecure-registries", "insecure-registry", true),
    opt("registry-mirrors", "registry-mirror", true),
    opt("max-concurrent-downloads", "max-concurrent-downloads", true),
    opt("max-concurrent-uploads", "max-concurrent-uploads", true),
    opt("shim", "shim", false),
    opt("init-path", "init-path", false),
    opt("init", "init", true),
    opt("runtime", "runtime", false),
    opt("log-level", "log-level", true),
    opt("debug", "debug", true),
    opt("labels", "label", true),
    opt("bridge", "bridge", false),
    opt("bip", "bip", false),
    opt("fixed-cidr", "fixed-cidr", false),
    opt("default-address-pools", "default-address-pool", false),
    opt("firewall-backend", "firewall-backend", false),
    opt("log-driver", "log-driver", true),
    opt("log-opts", "log-opt", true),
    opt("default-ulimits", "default-ulimit", true),
    opt("live-restore", "live-restore", true),
    opt("docker-compat", "docker-compat", false),
    opt("cri", "cri", false),
    opt("cri-socket", "cri-socket", false),
    opt("cni-conf-dir", "cni-conf-dir", false),
    opt("cni-bin-dir", "cni-bin-dir", false),
    opt("cri-stream-address", "cri-stream-address", false),
    opt("cri-stream-port", "cri-stream-port", false),
    opt("cri-stream-idle-timeout", "cri-stream-idle-timeout", false),
];

/// dockerd keys that Berth does not implement: named as such instead of "unknown".
const DOCKERD_ONLY: &[&str] = &[
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "builder",
    "cdi-spec-dirs",
    "cgroup-parent-v2",
    "containerd",
    "containerd-namespace",
    "containerd-plugins-namespace",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cri-containerd",
    "data-path-port",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-runtime",
    "default-shm-size",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "experimental",
    "features",
    "fixed-cidr-v6",
    "host-gateway-ip",
    "icc",
    "ip",
    "ip-forward",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "max-download-attempts",
    "metrics-addr",
    "mtu",
    "network-control-plane-mtu",
    "no-new-privileges",
    "node-generic-resources",
    "oom-score-adjust",
    "proxies",
    "raw-logs",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
];

/// The lookup of an option by key.
pub fn option(key: &str) -> Option<&'static OptionInfo> {
    OPTIONS.iter().find(|o| o.key == key)
}

/// One of `default-address-pools`: networks get `size`-bit subnets carved out of `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    pub base: Ipv4Net,
    pub size: u8,
}

impl AddressPool {
    /// Parses the flag's `base=CIDR,size=N`.
    pub fn parse_flag(s: &str) -> Result<AddressPool, ValueError> {
        let (mut base, mut size) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("base", v)) => base = Some(v.parse::<Ipv4Net>()?),
                Some(("size", v)) => {
                    size = Some(
                        v.parse::<u8>()
                            .map_err(|source| ValueError::PoolSizeSyntax {
                                size: v.to_string(),
                                pool: s.to_string(),
                                source,
                            })?,
                    )
                }
                _ => return Err(ValueError::PoolSyntax(s.to_string())),
            }
        }
        match (base, size) {
            (Some(base), Some(size)) => AddressPool { base, size }.checked(),
            _ => Err(ValueError::PoolIncomplete(s.to_string())),
        }
    }

    fn checked(self) -> Result<AddressPool, ValueError> {
        if self.size < self.base.prefix || self.size > 30 {
            return Err(ValueError::PoolSize(self));
        }
        Ok(AddressPool {
            base: self.base.network_net(),
            size: self.size,
        })
    }

    /// The pool's subnets, in order (at most `limit`).
    pub fn subnets(&self, limit: usize) -> Vec<Ipv4Net> {
        let base = u32::from(self.base.network_net().addr);
        let count = 1u64 << (self.size - self.base.prefix);
        let step = 1u64 << (32 - self.size);
        (0..count.min(limit as u64))
            .map(|i| {
                Ipv4Net::new(
                    std::net::Ipv4Addr::from((base as u64 + i * step) as u32),
                    self.size,
                )
            })
            .collect()
    }
}

/// The configuration file's content: every key optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub hosts: Option<Vec<String>>,
    pub group: Option<String>,
    pub tls: Option<bool>,
    pub tlsverify: Option<bool>,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    pub data_root: Option<PathBuf>,
    pub exec_root: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub cgroup_parent: Option<String>,
    pub insecure_registries: Option<Vec<String>>,
    pub registry_mirrors: Option<Vec<String>>,
    pub max_concurrent_downloads: Option<usize>,
    pub max_concurrent_uploads: Option<usize>,
    pub shim: Option<PathBuf>,
    pub init_path: Option<PathBuf>,
    pub init: Option<bool>,
    pub runtime: Option<PathBuf>,
    pub log_level: Option<String>,
    pub debug: Option<bool>,
    pub labels: Option<Vec<String>>,
    pub bridge: Option<String>,
    pub bip: Option<Ipv4Net>,
    pub fixed_cidr: Option<Ipv4Net>,
    pub default_address_pools: Option<Vec<AddressPool>>,
    pub firewall_backend: Option<String>,
    pub log_driver: Option<String>,
    pub log_opts: Option<BTreeMap<String, String>>,
    pub default_ulimits: Option<BTreeMap<String, Ulimit>>,
    pub live_restore: Option<bool>,
    pub docker_compat: Option<bool>,
    pub cri: Option<bool>,
    pub cri_socket: Option<PathBuf>,
    pub cni_conf_dir: Option<PathBuf>,
    pub cni_bin_dir: Option<PathBuf>,
    pub cri_stream_address: Option<std::net::IpAddr>,
    pub cri_stream_port: Option<u16>,
    pub cri_stream_idle_timeout: Option<String>,
    /// The keys present, with the text of their values (for conflict messages).
    pub present: BTreeMap<String, String>,
}

/// Why an option's value is refused.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// A JSON value of the wrong type or shape.
    #[error("{}", without_position(.0))]
    Json(#[source] serde_json::Error),
    #[error(transparent)]
    Cidr(#[from] berth_network::subnet::BadCidr),
    #[error("invalid address pool {0:?}: use base=CIDR,size=N")]
    PoolSyntax(String),
    #[error("invalid size {size:?} in {pool:?}")]
    PoolSizeSyntax {
        size: String,
        pool: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("invalid address pool {0:?}: both base and size are needed")]
    PoolIncomplete(String),
    #[error(
        "invalid address pool {}: size {} must be between the base's prefix length {} and 30",
        .0.base, .0.size, .0.base.prefix
    )]
    PoolSize(AddressPool),
    /// A `default-ulimits` entry that does not decode.
    #[error("{name}: {}", .source.message)]
    UlimitDecode {
        name: String,
        #[source]
        source: berth_api::decode::DecodeError,
    },
    #[error("invalid ulimit argument: {0}")]
    UlimitSyntax(String),
    #[error("invalid ulimit value {value:?} in {arg}")]
    UlimitValue {
        value: String,
        arg: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("invalid ulimit type: {0}")]
    UlimitType(String),
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    UlimitOrder { soft: i64, hard: i64 },
    /// A log driver or option refused (dockerd's text, from [`crate::logs::check_opts`]).
    #[error(transparent)]
    LogOpts(#[from] crate::logs::LogOptError),
    #[error("invalid mirror: {0:?} is not a URL (https://host[:port])")]
    MirrorNotUrl(String),
    #[error("invalid mirror: unsupported scheme {scheme:?} in {mirror:?}")]
    MirrorScheme { scheme: String, mirror: String },
    #[error(
        "invalid mirror: {0:?} must be scheme://host[:port] without a path, query or credentials"
    )]
    MirrorPath(String),
}

/// serde's message without its "at line 1 column 5" (relative to a value; or given apart).
fn without_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn val<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, ValueError> {
    serde_json::from_str(raw.get()).map_err(ValueError::Json)
}

fn cidr(raw: &RawValue) -> Result<Ipv4Net, ValueError> {
    let s: String = val(raw)?;
    Ok(s.parse::<Ipv4Net>()?)
}

impl FileConfig {
    /// Sets `key` from its JSON value. `Ok(false)`: not a key of the file.
    fn set(&mut self, key: &str, raw: &RawValue) -> Result<bool, ValueError> {
        match key {
            "hosts" => self.hosts = Some(val(raw)?),
            "group" => self.group = Some(val(raw)?),
            "tls" => self.tls = Some(val(raw)?),
            "tlsverify" => self.tlsverify = Some(val(raw)?),
            "tlscacert" => self.tlscacert = Some(val(raw)?),
            "tlscert" => self.tlscert = Some(val(raw)?),
            "tlskey" => self.tlskey = Some(val(raw)?),
            "data-root" => self.data_root = Some(val(raw)?),
            "exec-root" => self.exec_root = Some(val(raw)?),
            "pidfile" => self.pidfile = Some(val(raw)?),
            "cgroup-parent" => self.cgroup_parent = Some(val(raw)?),
            "insecure-registries" => self.insecure_registries = Some(val(raw)?),
            "registry-mirrors" => self.registry_mirrors = Some(val(raw)?),
            "max-concurrent-downloads" => self.max_concurrent_downloads = Some(val(raw)?),
            "max-concurrent-uploads" => self.max_concurrent_uploads = Some(val(raw)?),
            "shim" => self.shim = Some(val(raw)?),
            "init-path" => self.init_path = Some(val(raw)?),
            "init" => self.init = Some(val(raw)?),
            "runtime" => self.runtime = Some(val(raw)?),
            "log-level" => self.log_level = Some(val(raw)?),
            "debug" => self.debug = Some(val(raw)?),
            "labels" => self.labels = Some(val(raw)?),
            "bridge" => self.bridge = Some(val(raw)?),
            "bip" => self.bip = Some(cidr(raw)?),
            "fixed-cidr" => self.fixed_cidr = Some(cidr(raw)?),
            "default-address-pools" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Pool {
                    base: String,
                    size: u8,
                }
                let pools: Vec<Pool> = val(raw)?;
                let mut out = Vec::new();
                for p in pools {
                    let base = p.base.parse::<Ipv4Net>()?;
                    out.push(AddressPool { base, size: p.size }.checked()?);
                }
                self.default_address_pools = Some(out)
            }
            "firewall-backend" => self.firewall_backend = Some(val(raw)?),
            "log-driver" => self.log_driver = Some(val(raw)?),
            "log-opts" => self.log_opts = Some(val(raw)?),
            "default-ulimits" => {
                let m: BTreeMap<String, serde_json::Value> = val(raw)?;
                let mut out = BTreeMap::new();
                for (name, v) in m {
                    let u: Ulimit = berth_api::decode::from_value(v).map_err(|source| {
                        ValueError::UlimitDecode {
                            name: name.clone(),
                            source,
                        }
                    })?;
                    out.insert(name, u);
                }
                self.default_ulimits = Some(out)
            }
            "live-restore" => self.live_restore = Some(val(raw)?),
            "docker-compat" => self.docker_compat = Some(val(raw)?),
            "cri" => self.cri = Some(val(raw)?),
            "cri-socket" => self.cri_socket = Some(val(raw)?),
            "cni-conf-dir" => self.cni_conf_dir = Some(val(raw)?),
            "cni-bin-dir" => self.cni_bin_dir = Some(val(raw)?),
            "cri-stream-address" => self.cri_stream_address = Some(val(raw)?),
            "cri-stream-port" => self.cri_stream_port = Some(val(raw)?),
            "cri-stream-idle-timeout" => self.cri_stream_idle_timeout = Some(val(raw)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<FileConfig, FileProblem> {
        // A UTF-8 byte order mark is dropped (as dockerd does); an empty file is no options.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        let top: BTreeMap<String, &RawValue> =
            serde_json::from_str(text).map_err(|e| FileProblem::Syntax {
                line: e.line(),
                column: e.column(),
                message: without_position(&e),
            })?;
        let mut unknown = Vec::new();
        let mut unsupported = Vec::new();
        for k in top.keys() {
            if option(k).is_none() {
                if DOCKERD_ONLY.contains(&k.as_str()) {
                    unsupported.push(k.clone());
                } else {
                    unknown.push(k.clone());
                }
            }
        }
        if !unknown.is_empty() {
            return Err(FileProblem::Unknown(unknown));
        }
        if !unsupported.is_empty() {
            return Err(FileProblem::Unsupported(unsupported));
        }
        let mut cfg = FileConfig::default();
        for (k, raw) in &top {
            let line = line_of(text, raw);
            match cfg.set(k, raw) {
                Ok(true) => {}
                Ok(false) => unreachable!("every key of OPTIONS is settable (tested)"),
                Err(source) => {
                    return Err(FileProblem::Value {
                        key: k.clone(),
                        line,
                        source: Box::new(source),
                    })
                }
            }
            cfg.present.insert(k.clone(), compact(raw));
        }
        Ok(cfg)
    }
}

/// The line (from 1) where a value borrowed from `text` starts.
fn line_of(text: &str, raw: &RawValue) -> usize {
    let start = raw.get().as_ptr() as usize;
    let base = text.as_ptr() as usize;
    let off = start.saturating_sub(base).min(text.len());
    text[..off].bytes().filter(|b| *b == b'\n').count() + 1
}

fn compact(raw: &RawValue) -> String {
    serde_json::from_str::<serde_json::Value>(raw.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.get().to_string())
}

/// What is wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the following directives don't match any configuration option: {}", .0.join(", "))]
    Unknown(Vec<String>),
    #[error("the following directives are dockerd options that berthd does not support: {}", .0.join(", "))]
    Unsupported(Vec<String>),
    #[error("invalid value for {key:?} (line {line}): {source}")]
    Value {
        key: String,
        line: usize,
        #[source]
        source: Box<ValueError>,
    },
    #[error("the following directives are specified both as a flag and in the configuration file: {}", .0.join(", "))]
    Conflicts(Vec<String>),
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to configure the Berth daemon with file {}: {problem}", .path.display())]
    File { path: PathBuf, problem: FileProblem },
    #[error("unable to read the configuration file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {option}: {message}")]
    Invalid { option: String, message: String },
    #[error("invalid {option}: {source}")]
    Value {
        option: String,
        #[source]
        source: ValueError,
    },
}

/// The merged configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DaemonConfig {
    pub hosts: Vec<String>,
    pub group: String,
    pub tls: Option<bool>,
    pub tlsverify: bool,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub pidfile: PathBuf,
    pub cgroup_parent: String,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    pub shim: Option<PathBuf>,
    pub init_path: Option<PathBuf>,
    pub init: bool,
    pub runtime: Option<PathBuf>,
    pub log_level: String,
    pub debug: bool,
    pub labels: Vec<String>,
    pub bridge: String,
    pub bip: Option<Ipv4Net>,
    pub fixed_cidr: Option<Ipv4Net>,
    pub default_address_pools: Vec<AddressPool>,
    pub firewall_backend: String,
    pub log_driver: String,
    pub log_opts: BTreeMap<String, String>,
    pub default_ulimits: BTreeMap<String, Ulimit>,
    pub live_restore: bool,
    pub docker_compat: bool,
    /// Serve the CRI (see `crate::cri`).
    pub cri: bool,
    pub cri_socket: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// Where the CRI streaming server listens (port 0: any free one).
    pub cri_stream_address: std::net::IpAddr,
    pub cri_stream_port: u16,
    /// How long a streaming connection may be idle (none: no limit).
    pub cri_stream_idle_timeout: Option<std::time::Duration>,
}

/// Where the configuration file is, and whether it must exist.
pub fn config_path(flags: &Flags) -> (PathBuf, bool) {
    match &flags.config_file {
        Some(p) => (p.clone(), true),
        None => match user_defaults() {
            Some(p) => (p.config_file, false),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        },
    }
}

/// The defaults of a daemon run by an ordinary user (see `rootless`), `None` for root's.
fn user_defaults() -> Option<crate::rootless::Paths> {
    if crate::rootless::active() || crate::rootless::wanted() {
        crate::rootless::Paths::from_env().ok()
    } else {
        None
    }
}

/// Reads the file (`None`: absent and not required).
pub fn read_file(path: &Path, required: bool) -> Result<Option<FileConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    FileConfig::parse(&text)
        .map(Some)
        .map_err(|problem| ConfigError::File {
            path: path.to_path_buf(),
            problem,
        })
}

/// Loads the file named by the flags and merges it with them.
pub fn load(flags: &Flags) -> Result<DaemonConfig, ConfigError> {
    let (path, required) = config_path(flags);
    let file = read_file(&path, required)?.unwrap_or_default();
    merge(flags, &file).map_err(|e| match e {
        MergeError::Conflicts(c) => ConfigError::File {
            path,
            problem: FileProblem::Conflicts(c),
        },
        MergeError::Invalid { option, message } => ConfigError::Invalid { option, message },
        MergeError::Value { option, source } => ConfigError::Value { option, source },
    })
}

/// Why flags and file do not merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("the following directives are specified both as a flag and in the configuration file: {}", .0.join(", "))]
    Conflicts(Vec<String>),
    #[error("invalid {option}: {message}")]
    Invalid { option: String, message: String },
    #[error("invalid {option}: {source}")]
    Value {
        option: String,
        #[source]
        source: ValueError,
    },
}

/// The flags' values of the options given on the command line, as text, by key.
fn flags_given(f: &Flags) -> BTreeMap<&'static str, String> {
    fn list(v: &[String]) -> Option<String> {
        (!v.is_empty()).then(|| format!("[{}]", v.join(" ")))
    }
    fn one<T: std::fmt::Display>(v: &Option<T>) -> Option<String> {
        v.as_ref().map(|x| x.to_string())
    }
    fn path(v: &Option<PathBuf>) -> Option<String> {
        v.as_ref().map(|x| x.display().to_string())
    }
    let pairs: Vec<(&'static str, Option<String>)> = vec![
        ("hosts", list(&f.hosts)),
        ("group", one(&f.group)),
        ("tls", one(&f.tls)),
        ("tlsverify", one(&f.tlsverify)),
        ("tlscacert", path(&f.tlscacert)),
        ("tlscert", path(&f.tlscert)),
        ("tlskey", path(&f.tlskey)),
        ("data-root", path(&f.data_root)),
        ("exec-root", path(&f.exec_root)),
        ("pidfile", path(&f.pidfile)),
        ("cgroup-parent", one(&f.cgroup_parent)),
        ("insecure-registries", list(&f.insecure_registries)),
        ("registry-mirrors", list(&f.registry_mirrors)),
        ("max-concurrent-downloads", one(&f.max_concurrent_downloads)),
        ("max-concurrent-uploads", one(&f.max_concurrent_uploads)),
        ("shim", path(&f.shim)),
        ("init-path", path(&f.init_path)),
        ("init", one(&f.init)),
        ("runtime", path(&f.runtime)),
        ("log-level", one(&f.log_level)),
        ("debug", one(&f.debug)),
        ("labels", list(&f.labels)),
        ("bridge", one(&f.bridge)),
        ("bip", one(&f.bip)),
        ("fixed-cidr", one(&f.fixed_cidr)),
        ("default-address-pools", list(&f.default_address_pools)),
        ("firewall-backend", one(&f.firewall_backend)),
        ("log-driver", one(&f.log_driver)),
        ("log-opts", list(&f.log_opts)),
        ("default-ulimits", list(&f.default_ulimits)),
        ("live-restore", one(&f.live_restore)),
        ("docker-compat", one(&f.docker_compat)),
        ("cri", one(&f.cri)),
        ("cri-socket", path(&f.cri_socket)),
        ("cni-conf-dir", path(&f.cni_conf_dir)),
        ("cni-bin-dir", path(&f.cni_bin_dir)),
        ("cri-stream-address", one(&f.cri_stream_address)),
        ("cri-stream-port", one(&f.cri_stream_port)),
        ("cri-stream-idle-timeout", one(&f.cri_stream_idle_timeout)),
    ];
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

fn invalid(option: &str, message: impl Into<String>) -> MergeError {
    MergeError::Invalid {
        option: option.to_string(),
        message: message.into(),
    }
}

/// `map_err` of a value check: the option it is for.
fn bad_value(option: &'static str) -> impl FnOnce(ValueError) -> MergeError {
    move |source| MergeError::Value {
        option: option.to_string(),
        source,
    }
}

fn key_values(option: &str, items: &[String]) -> Result<BTreeMap<String, String>, MergeError> {
    let mut m = BTreeMap::new();
    for it in items {
        let (k, v) = it
            .split_once('=')
            .ok_or_else(|| invalid(option, format!("{it:?} is not KEY=VALUE")))?;
        m.insert(k.to_string(), v.to_string());
    }
    Ok(m)
}

/// Parses `--default-ulimit NAME=SOFT[:HARD]` (Docker's `units.ParseUlimit`).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, ValueError> {
    let (name, vals) = s
        .split_once('=')
        .ok_or_else(|| ValueError::UlimitSyntax(s.to_string()))?;
    let num = |v: &str| {
        v.parse::<i64>().map_err(|source| ValueError::UlimitValue {
            value: v.to_string(),
            arg: s.to_string(),
            source,
        })
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let v = num(vals)?;
            (v, v)
        }
    };
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// The rlimit names Docker accepts in ulimits.
const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn check_ulimit(u: &Ulimit) -> Result<(), ValueError> {
    if !ULIMITS.contains(&u.name.as_str()) {
        return Err(ValueError::UlimitType(u.name.clone()));
    }
    if u.soft > u.hard && u.hard >= 0 {
        return Err(ValueError::UlimitOrder {
            soft: u.soft,
            hard: u.hard,
        });
    }
    Ok(())
}

/// Checks a log driver and its options, as dockerd's validators do (see
/// [`crate::logs::check_opts`]).
pub fn check_log_opts(driver: &str, opts: &BTreeMap<String, String>) -> Result<(), ValueError> {
    crate::logs::check_opts(driver, opts).map_err(ValueError::LogOpts)
}

/// Checks a registry mirror as dockerd's `ValidateMirror`: an http(s) URL without a path,
/// query or credentials. Returns it without a trailing slash.
pub fn check_mirror(m: &str) -> Result<String, ValueError> {
    let (scheme, rest) = m
        .split_once("://")
        .ok_or_else(|| ValueError::MirrorNotUrl(m.to_string()))?;
    if scheme != "http" && scheme != "https" {
        return Err(ValueError::MirrorScheme {
            scheme: scheme.to_string(),
            mirror: m.to_string(),
        });
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(ValueError::MirrorPath(m.to_string()));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// Merges the flags over the file over the defaults; an option in both is an error.
pub fn merge(flags: &Flags, file: &FileConfig) -> Result<DaemonConfig, MergeError> {
    let given = flags_given(flags);
    let conflicts: Vec<String> = given
        .iter()
        .filter_map(|(k, fv)| {
            file.present
                .get(*k)
                .map(|filev| format!("{k}: (from flag: {fv}, from file: {filev})"))
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(MergeError::Conflicts(conflicts));
    }
    fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
        flag.clone().or_else(|| file.clone())
    }
    fn pick_list<T: Clone>(flag: &[T], file: &Option<Vec<T>>) -> Vec<T> {
        if flag.is_empty() {
            file.clone().unwrap_or_default()
        } else {
            flag.to_vec()
        }
    }
    let user = user_defaults();
    let exec_root = pick(&flags.exec_root, &file.exec_root).unwrap_or_else(|| match &user {
        Some(u) => u.exec_root.clone(),
        None => "/run/berth".into(),
    });
    let mut hosts = pick_list(&flags.hosts, &file.hosts);
    if hosts.is_empty() {
        hosts.push(match &user {
            Some(u) => u.host(),
            None => DEFAULT_HOST.to_string(),
        });
    }
    let log_level = pick(&flags.log_level, &file.log_level).unwrap_or_else(|| "info".into());
    if !["debug", "info", "warn", "error", "fatal"].contains(&log_level.as_str()) {
        return Err(invalid(
            "log-level",
            format!("{log_level:?} (use debug, info, warn, error or fatal)"),
        ));
    }
    let firewall_backend =
        pick(&flags.firewall_backend, &file.firewall_backend).unwrap_or_else(|| "auto".into());
    if !["auto", "nftables", "iptables", "none"].contains(&firewall_backend.as_str()) {
        return Err(invalid(
            "firewall-backend",
            format!("{firewall_backend:?} (use auto, nftables, iptables or none)"),
        ));
    }
    let mut default_address_pools = Vec::new();
    for p in &flags.default_address_pools {
        default_address_pools
            .push(AddressPool::parse_flag(p).map_err(bad_value("default-address-pool"))?);
    }
    if default_address_pools.is_empty() {
        default_address_pools = file.default_address_pools.clone().unwrap_or_default();
    }
    let log_driver =
        pick(&flags.log_driver, &file.log_driver).unwrap_or_else(|| "json-file".into());
    let log_opts = if flags.log_opts.is_empty() {
        file.log_opts.clone().unwrap_or_default()
    } else {
        key_values("log-opt", &flags.log_opts)?
    };
    check_log_opts(&log_driver, &log_opts).map_err(bad_value("log-opts"))?;
    let default_ulimits = if flags.default_ulimits.is_empty() {
        file.default_ulimits.clone().unwrap_or_default()
    } else {
        let mut m = BTreeMap::new();
        for s in &flags.default_ulimits {
            let u = parse_ulimit(s).map_err(bad_value("default-ulimit"))?;
            m.insert(u.name.clone(), u);
        }
        m
    };
    for (name, u) in &default_ulimits {
        if name != &u.name {
            return Err(invalid(
                "default-ulimits",
                format!("the key {name:?} names the ulimit {:?}", u.name),
            ));
        }
        check_ulimit(u).map_err(bad_value("default-ulimits"))?;
    }
    let registry_mirrors = pick_list(&flags.registry_mirrors, &file.registry_mirrors)
        .iter()
        .map(|m| check_mirror(m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad_value("registry-mirrors"))?;
    let labels = pick_list(&flags.labels, &file.labels);
    for l in &labels {
        if !l.contains('=') {
            return Err(invalid("labels", format!("{l:?} is not KEY=VALUE")));
        }
    }
    let max_concurrent_downloads = pick(
        &flags.max_concurrent_downloads,
        &file.max_concurrent_downloads,
    )
    .unwrap_or(3);
    let max_concurrent_uploads =
        pick(&flags.max_concurrent_uploads, &file.max_concurrent_uploads).unwrap_or(5);
    if max_concurrent_downloads == 0 || max_concurrent_uploads == 0 {
        return Err(invalid(
            "max-concurrent-downloads/uploads",
            "must be at least 1",
        ));
    }
    let cgroup_parent = pick(&flags.cgroup_parent, &file.cgroup_parent)
        .unwrap_or_else(crate::rootless_cgroups::default_parent);
    if cgroup_parent.is_empty() {
        return Err(invalid("cgroup-parent", "must not be empty"));
    }
    let live_restore = pick(&flags.live_restore, &file.live_restore).unwrap_or(true);
    let cri_socket =
        pick(&flags.cri_socket, &file.cri_socket).unwrap_or_else(|| exec_root.join("cri.sock"));
    let cni_conf_dir =
        pick(&flags.cni_conf_dir, &file.cni_conf_dir).unwrap_or_else(|| "/etc/cni/net.d".into());
    let cni_bin_dir =
        pick(&flags.cni_bin_dir, &file.cni_bin_dir).unwrap_or_else(|| "/usr/lib/cni".into());
    let idle = pick(
        &flags.cri_stream_idle_timeout,
        &file.cri_stream_idle_timeout,
    )
    .unwrap_or_else(|| "4h".into());
    let cri_stream_idle_timeout = match berth_util::units::parse_duration(&idle) {
        Ok(0) => None,
        Ok(ns) if ns > 0 => Some(std::time::Duration::from_nanos(ns as u64)),
        Ok(_) => return Err(invalid("cri-stream-idle-timeout", "must not be negative")),
        Err(e) => return Err(invalid("cri-stream-idle-timeout", e.to_string())),
    };
    for (key, p) in [
        ("cri-socket", &cri_socket),
        ("cni-conf-dir", &cni_conf_dir),
        ("cni-bin-dir", &cni_bin_dir),
    ] {
        if !p.is_absolute() {
            return Err(invalid(
                key,
                format!("{} is not an absolute path", p.display()),
            ));
        }
    }
    Ok(DaemonConfig {
        hosts,
        group: pick(&flags.group, &file.group).unwrap_or_else(|| DEFAULT_GROUP.into()),
        tls: pick(&flags.tls, &file.tls),
        tlsverify: pick(&flags.tlsverify, &file.tlsverify).unwrap_or(false),
        tlscacert: pick(&flags.tlscacert, &file.tlscacert),
        tlscert: pick(&flags.tlscert, &file.tlscert),
        tlskey: pick(&flags.tlskey, &file.tlskey),
        data_root: pick(&flags.data_root, &file.data_root).unwrap_or_else(|| match &user {
            Some(u) => u.data_root.clone(),
            None => "/var/lib/berth".into(),
        }),
        pidfile: pick(&flags.pidfile, &file.pidfile)
            .unwrap_or_else(|| exec_root.join("berthd.pid")),
        exec_root,
        cgroup_parent,
        insecure_registries: pick_list(&flags.insecure_registries, &file.insecure_registries),
        registry_mirrors,
        max_concurrent_downloads,
        max_concurrent_uploads,
        shim: pick(&flags.shim, &file.shim),
        init_path: pick(&flags.init_path, &file.init_path),
        init: pick(&flags.init, &file.init).unwrap_or(false),
        runtime: pick(&flags.runtime, &file.runtime),
        log_level,
        debug: pick(&flags.debug, &file.debug).unwrap_or(false),
        labels,
        bridge: pick(&flags.bridge, &file.bridge).unwrap_or_else(|| "berth0".into()),
        bip: pick(&flags.bip, &file.bip),
        fixed_cidr: pick(&flags.fixed_cidr, &file.fixed_cidr),
        default_address_pools,
        firewall_backend,
        log_driver,
        log_opts,
        default_ulimits,
        live_restore,
        docker_compat: pick(&flags.docker_compat, &file.docker_compat).unwrap_or(false),
        cri: pick(&flags.cri, &file.cri).unwrap_or(true),
        cri_socket,
        cni_conf_dir,
        cni_bin_dir,
        cri_stream_address: pick(&flags.cri_stream_address, &file.cri_stream_address)
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        cri_stream_port: pick(&flags.cri_stream_port, &file.cri_stream_port).unwrap_or(0),
        cri_stream_idle_timeout,
    })
}

/// What the engine takes from the configuration while it runs, replaced by a reload: registry
/// settings, the defaults of containers, the daemon's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub insecure_registries: Vec<String>,
    /// Docker Hub's mirrors (`registry-mirrors`).
    pub registry_mirrors: Vec<String>,
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    pub labels: Vec<String>,
    pub defaults: ContainerDefaults,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            insecure_registries: Vec::new(),
            registry_mirrors: Vec::new(),
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            labels: Vec::new(),
            defaults: ContainerDefaults::default(),
        }
    }
}

impl Live {
    /// Sets the registry options of `cfg` (mirrors serve Docker Hub, as dockerd's).
    pub fn apply_registry(&self, cfg: &mut berth_registry::RegistryConfig) {
        cfg.insecure_registries = self.insecure_registries.clone();
        cfg.mirrors.remove("docker.io");
        if !self.registry_mirrors.is_empty() {
            cfg.mirrors
                .insert("docker.io".into(), self.registry_mirrors.clone());
        }
        cfg.max_concurrent_downloads = self.max_concurrent_downloads;
        cfg.max_concurrent_uploads = self.max_concurrent_uploads;
    }
}

/// Defaults of containers (`log-driver`, `log-opts`, `default-ulimits`, `init`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDefaults {
    pub log_driver: String,
    pub log_opts: BTreeMap<String, String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    pub init: bool,
}

impl Default for ContainerDefaults {
    fn default() -> Self {
        ContainerDefaults {
            log_driver: "json-file".into(),
            log_opts: BTreeMap::new(),
            ulimits: BTreeMap::new(),
            init: false,
        }
    }
}

impl ContainerDefaults {
    /// At create, as dockerd's `mergeAndVerifyLogConfig`: no log driver named = the default
    /// one; the default driver gets the default options it does not set; then the options
    /// are checked.
    pub fn merge_log_config(
        &self,
        lc: &mut berth_api::container::LogConfig,
    ) -> Result<(), ValueError> {
        if lc.kind.is_empty() {
            lc.kind = self.log_driver.clone();
        }
        let opts = lc.config.get_or_insert_with(BTreeMap::new);
        if lc.kind == self.log_driver {
            for (k, v) in &self.log_opts {
                opts.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        check_log_opts(&lc.kind, opts)
    }

    /// At start, as dockerd's: the default ulimits a container does not set, and the init
    /// unless the container chose (`Init` null).
    pub fn for_start(
        &self,
        hc: &berth_api::container::HostConfig,
    ) -> berth_api::container::HostConfig {
        let mut hc = hc.clone();
        if !self.ulimits.is_empty() {
            let mut list = hc.ulimits.clone().unwrap_or_default();
            for (name, u) in &self.ulimits {
                if !list.iter().any(|x| &x.name == name) {
                    list.push(u.clone());
                }
            }
            hc.ulimits = Some(list);
        }
        if hc.init.is_none() && self.init {
            hc.init = Some(true);
        }
        hc
    }
}

/// The json-file rotation of a container's log options, as the shim's
/// `--log-max-size`/`--log-max-file` (`None`: the shim's defaults).
pub fn log_rotation(opts: Option<&BTreeMap<String, String>>) -> (Option<u64>, Option<u32>) {
    let Some(o) = opts else {
        return (None, None);
    };
    let size = o
        .get("max-size")
        .and_then(|v| berth_util::units::parse_ram_bytes(v).ok())
        .map(|n| if n < 0 { 0 } else { n as u64 });
    let files = o.get("max-file").and_then(|v| v.parse::<u32>().ok());
    (size, files)
}

/// One option whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
    pub reloadable: bool,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}

impl DaemonConfig {
    /// The effective tracing level.
    pub fn level(&self) -> tracing::Level {
        if self.debug {
            return tracing::Level::DEBUG;
        }
        match self.log_level.as_str() {
            "debug" => tracing::Level::DEBUG,
            "warn" => tracing::Level::WARN,
            "error" | "fatal" => tracing::Level::ERROR,
            _ => tracing::Level::INFO,
        }
    }

    /// What the engine takes from the configuration while running.
    pub fn live(&self) -> Live {
        Live {
            insecure_registries: self.insecure_registries.clone(),
            registry_mirrors: self.registry_mirrors.clone(),
            max_concurrent_downloads: self.max_concurrent_downloads,
            max_concurrent_uploads: self.max_concurrent_uploads,
            labels: self.labels.clone(),
            defaults: ContainerDefaults {
                log_driver: self.log_driver.clone(),
                log_opts: self.log_opts.clone(),
                ulimits: self.default_ulimits.clone(),
                init: self.init,
            },
        }
    }

    /// `self` with the reloadable options taken from `new` (the others need a restart).
    pub fn with_reloadable_from(&self, new: &DaemonConfig) -> DaemonConfig {
        let mut out = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( out.$f = new.$f.clone(); )* };
        }
        take!(
            insecure_registries,
            registry_mirrors,
            max_concurrent_downloads,
            max_concurrent_uploads,
            init,
            log_level,
            debug,
            labels,
            log_driver,
            log_opts,
            default_ulimits,
            live_restore
        );
        out
    }

    /// The options whose values differ from `self` in `new`, in key order.
    pub fn changes(&self, new: &DaemonConfig) -> Vec<Change> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(new).unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, va) in a {
            let vb = b.get(k).cloned().unwrap_or_default();
            if *va != vb {
                out.push(Change {
                    key: k.clone(),
                    old: va.to_string(),
                    new: vb.to_string(),
                    reloadable: option(k).is_some_and(|o| o.reloadable),
                });
            }
        }
        out
    }

    /// The pools new networks take their subnets from (`default-address-pools`), or `None`
    /// for Docker's defaults.
    pub fn subnet_candidates(&self) -> Option<Vec<Ipv4Net>> {
        if self.default_address_pools.is_empty() {
            return None;
        }
        // Enough subnets to find a free one on any host without listing a /8 in /30s.
        const PER_POOL: usize = 4096;
        Some(
            self.default_address_pools
                .iter()
                .flat_map(|p| p.subnets(PER_POOL))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
