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

mod declare;
use declare::{daemon_options, pick, KeyValues, Kind, Pools, Refusal, Ulimits};

/// The configuration file read when `--config-file` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";
/// The API socket when neither `-H` nor `hosts` is given.
pub use berth_util::host::DEFAULT_HOST;
/// Docker's socket, served too with `docker-compat`.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The group owning the API sockets (as dockerd's `docker`).
pub const DEFAULT_GROUP: &str = "berth";

daemon_options! {
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
    }
    options {
        /// Address to listen on (`unix:///path`, `tcp://host:port`, `fd://` or `fd://N` for
        /// sockets passed by systemd); repeatable. Key `hosts`.
        #[arg(long = "host", short = 'H', value_name = "HOST")]
        hosts: Vec<String>, key "hosts", restart => Vec<String> = or(vec![default_host()]);
        /// Group owning the unix sockets (mode 0660); root only when the group does not exist.
        #[arg(long = "group", short = 'G', value_name = "GROUP")]
        group: Option<String>, key "group", restart => String = or(DEFAULT_GROUP.into());
        /// Use TLS on TCP listeners (implied by --tlsverify); `--tls=false` allows plain TCP.
        #[arg(long = "tls", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        tls: Option<bool>, key "tls", restart => Option<bool> = optional;
        /// Use TLS and require client certificates signed by --tlscacert.
        #[arg(long = "tlsverify", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        tlsverify: Option<bool>, key "tlsverify", restart => bool = or(false);
        /// CA certificate(s) trusted for client certificates.
        #[arg(long = "tlscacert", value_name = "FILE")]
        tlscacert: Option<PathBuf>, key "tlscacert", restart => Option<PathBuf> = optional;
        /// The server's TLS certificate (chain).
        #[arg(long = "tlscert", value_name = "FILE")]
        tlscert: Option<PathBuf>, key "tlscert", restart => Option<PathBuf> = optional;
        /// The server's TLS key.
        #[arg(long = "tlskey", value_name = "FILE")]
        tlskey: Option<PathBuf>, key "tlskey", restart => Option<PathBuf> = optional;
        /// Root of persistent state [default: /var/lib/berth; rootless: $XDG_DATA_HOME/berth].
        #[arg(long = "data-root", value_name = "DIR")]
        data_root: Option<PathBuf>, key "data-root", restart
            => PathBuf = or(rootless_or(|u| u.data_root, "/var/lib/berth"));
        /// Root of run-time state [default: /run/berth; rootless: $XDG_RUNTIME_DIR/berth].
        #[arg(long = "exec-root", value_name = "DIR")]
        exec_root: Option<PathBuf>, key "exec-root", restart
            => PathBuf = or(rootless_or(|u| u.exec_root, "/run/berth"));
        /// Pid file [default: EXEC_ROOT/berthd.pid].
        #[arg(long = "pidfile", short = 'p', value_name = "FILE")]
        pidfile: Option<PathBuf>, key "pidfile", restart
            => PathBuf = or(exec_root.join("berthd.pid"));
        /// Parent cgroup of containers [default: /berth].
        #[arg(long = "cgroup-parent", value_name = "CGROUP")]
        cgroup_parent: Option<String>, key "cgroup-parent", restart
            => String = or(crate::rootless_cgroups::default_parent()), check(not_empty);
        /// A registry reachable over plain http (besides loopback ones); repeatable. Key
        /// `insecure-registries`.
        #[arg(long = "insecure-registry", value_name = "REGISTRY")]
        insecure_registries: Vec<String>, key "insecure-registries", reload
            => Vec<String> = or(Vec::new());
        /// A mirror of Docker Hub (`https://host[:port]`), tried before it for pulls; repeatable.
        /// Key `registry-mirrors`.
        #[arg(long = "registry-mirror", value_name = "URL")]
        registry_mirrors: Vec<String>, key "registry-mirrors", reload
            => Vec<String> = via(mirrors);
        /// Layers downloaded at once per pull [default: 3].
        #[arg(long = "max-concurrent-downloads", value_name = "N")]
        max_concurrent_downloads: Option<usize>, key "max-concurrent-downloads", reload
            => usize = or(3), check(at_least_one);
        /// Layers uploaded at once per push [default: 5].
        #[arg(long = "max-concurrent-uploads", value_name = "N")]
        max_concurrent_uploads: Option<usize>, key "max-concurrent-uploads", reload
            => usize = or(5), check(at_least_one);
        /// The shim binary [default: next to berthd, /usr/libexec/berth, or PATH].
        #[arg(long = "shim", value_name = "FILE")]
        shim: Option<PathBuf>, key "shim", restart => Option<PathBuf> = optional;
        /// The init of `--init` containers, a static binary (dockerd's `--init-path`)
        /// [default: berth-init next to berthd, in /usr/libexec/berth, or on PATH].
        #[arg(long = "init-path", value_name = "FILE")]
        init_path: Option<PathBuf>, key "init-path", restart => Option<PathBuf> = optional;
        /// Run an init inside every container unless it says otherwise (`--init` by default).
        #[arg(long = "init", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        init: Option<bool>, key "init", reload => bool = or(false);
        /// The OCI runtime binary [default: next to berthd, else berth-runtime on PATH].
        #[arg(long = "runtime", value_name = "FILE")]
        runtime: Option<PathBuf>, key "runtime", restart => Option<PathBuf> = optional;
        /// Log level (debug, info, warn, error, fatal) [default: info].
        #[arg(long = "log-level", short = 'l', value_name = "LEVEL")]
        log_level: Option<String>, key "log-level", reload
            => String = or("info".into()),
            check(one_of(&["debug", "info", "warn", "error", "fatal"]));
        /// Debug logging.
        #[arg(long = "debug", short = 'D', value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        debug: Option<bool>, key "debug", reload => bool = or(false);
        /// Labels shown by `info` (`key=value`); repeatable. Key `labels`.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>, key "labels", reload
            => Vec<String> = or(Vec::new()), check(key_values);
        /// The default bridge network's interface [default: berth0].
        #[arg(long = "bridge", short = 'b', env = "BERTHD_BRIDGE", value_name = "NAME")]
        bridge: Option<String>, key "bridge", restart => String = or("berth0".into());
        /// The default bridge's address and prefix (e.g. 172.17.0.1/16); chosen when absent.
        #[arg(long = "bip", env = "BERTHD_BIP", value_name = "CIDR")]
        bip: Option<Ipv4Net>, key "bip", restart => Option<Ipv4Net> = optional;
        /// Where default-bridge containers get their addresses (inside --bip's subnet).
        #[arg(long = "fixed-cidr", env = "BERTHD_FIXED_CIDR", value_name = "CIDR")]
        fixed_cidr: Option<Ipv4Net>, key "fixed-cidr", restart => Option<Ipv4Net> = optional;
        /// Subnets for networks created without one (`base=10.10.0.0/16,size=24`); repeatable,
        /// tried in order. Key `default-address-pools`.
        #[arg(long = "default-address-pool", value_name = "base=CIDR,size=N")]
        default_address_pools: Vec<String> as Pools, key "default-address-pools", restart
            => Vec<AddressPool> = or(Vec::new());
        /// Firewall backend: auto, nftables, iptables, none [default: auto].
        #[arg(long = "firewall-backend", env = "BERTHD_FIREWALL", value_name = "BACKEND")]
        firewall_backend: Option<String>, key "firewall-backend", restart
            => String = or("auto".into()),
            check(one_of(&["auto", "nftables", "iptables", "none"]));
        /// The log driver of containers that name none [default: json-file].
        #[arg(long = "log-driver", value_name = "DRIVER")]
        log_driver: Option<String>, key "log-driver", reload => String = or("json-file".into());
        /// An option of the default log driver (`max-size=10m`, `max-file=3`); repeatable. Key
        /// `log-opts`.
        #[arg(long = "log-opt", value_name = "KEY=VALUE")]
        log_opts: Vec<String> as KeyValues, key "log-opts", reload
            => BTreeMap<String, String> = or(BTreeMap::new()),
            check(|opts| check_log_opts(&log_driver, opts));
        /// A ulimit of containers that do not set it (`nofile=1024:2048`); repeatable. Key
        /// `default-ulimits`.
        #[arg(long = "default-ulimit", value_name = "NAME=SOFT[:HARD]")]
        default_ulimits: Vec<String> as Ulimits, key "default-ulimits", reload
            => BTreeMap<String, Ulimit> = or(BTreeMap::new()), check(check_ulimits);
        /// Accepted for dockerd's configurations: containers always outlive the daemon in Berth.
        #[arg(long = "live-restore", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        live_restore: Option<bool>, key "live-restore", reload => bool = or(true);
        /// Also serve the API on Docker's socket (/var/run/docker.sock), so the docker CLI,
        /// compose and docker-py work without DOCKER_HOST. Refused while a dockerd owns it.
        #[arg(long = "docker-compat", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        docker_compat: Option<bool>, key "docker-compat", restart => bool = or(false);
        /// Serve the Kubernetes CRI (`runtime.v1`) for the kubelet [default: true]. Key `cri`.
        #[arg(long = "cri", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true")]
        cri: Option<bool>, key "cri", restart => bool = or(true);
        /// The CRI's unix socket [default: EXEC_ROOT/cri.sock, i.e. /run/berth/cri.sock].
        #[arg(long = "cri-socket", value_name = "PATH")]
        cri_socket: Option<PathBuf>, key "cri-socket", restart
            => PathBuf = or(exec_root.join("cri.sock")), check(absolute);
        /// The CNI network configurations of pods [default: /etc/cni/net.d].
        #[arg(long = "cni-conf-dir", value_name = "DIR")]
        cni_conf_dir: Option<PathBuf>, key "cni-conf-dir", restart
            => PathBuf = or("/etc/cni/net.d".into()), check(absolute);
        /// The CNI plugin binaries [default: /usr/lib/cni].
        #[arg(long = "cni-bin-dir", value_name = "DIR")]
        cni_bin_dir: Option<PathBuf>, key "cni-bin-dir", restart
            => PathBuf = or("/usr/lib/cni".into()), check(absolute);
        /// The address of the CRI streaming server (the URLs of Exec, Attach and PortForward)
        /// [default: 127.0.0.1].
        #[arg(long = "cri-stream-address", value_name = "IP")]
        cri_stream_address: Option<std::net::IpAddr>, key "cri-stream-address", restart
            => std::net::IpAddr = or(std::net::Ipv4Addr::LOCALHOST.into());
        /// The port of the CRI streaming server [default: 0, a free port].
        #[arg(long = "cri-stream-port", value_name = "PORT")]
        cri_stream_port: Option<u16>, key "cri-stream-port", restart => u16 = or(0);
        /// How long a CRI streaming connection (exec, attach, port-forward) may carry nothing
        /// before it is closed, a Go duration (containerd's `stream_idle_timeout`) [default: 4h;
        /// 0: never].
        #[arg(long = "cri-stream-idle-timeout", value_name = "DURATION")]
        cri_stream_idle_timeout: Option<String>, key "cri-stream-idle-timeout", restart
            => Option<std::time::Duration> = via(idle_timeout);
    }
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

impl FileConfig {
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
    /// An option's value refused.
    #[error(transparent)]
    Merge(#[from] MergeError),
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
        e => ConfigError::Merge(e),
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

/// A value of `option` refused, with why.
pub fn invalid(option: &str, message: impl Into<String>) -> MergeError {
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

/// The conflicts between flags and file: every option given in both, with both values.
fn check_conflicts(flags: &Flags, file: &FileConfig) -> Result<(), MergeError> {
    let conflicts: Vec<String> = flags_given(flags)
        .iter()
        .filter_map(|(k, fv)| {
            file.present
                .get(*k)
                .map(|filev| format!("{k}: (from flag: {fv}, from file: {filev})"))
        })
        .collect();
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(MergeError::Conflicts(conflicts))
    }
}

/// The default of `hosts`: the rootless daemon's socket, else [`DEFAULT_HOST`].
fn default_host() -> String {
    match user_defaults() {
        Some(u) => u.host(),
        None => DEFAULT_HOST.to_string(),
    }
}

/// A default that a rootless daemon takes from its paths (see `rootless`), root's otherwise.
fn rootless_or(user: impl FnOnce(crate::rootless::Paths) -> PathBuf, root: &str) -> PathBuf {
    user_defaults().map_or_else(|| PathBuf::from(root), user)
}

/// `registry-mirrors`, each checked and without its trailing slash.
fn mirrors(given: Option<Vec<String>>) -> Result<Vec<String>, ValueError> {
    given
        .unwrap_or_default()
        .iter()
        .map(|m| check_mirror(m))
        .collect()
}

/// `cri-stream-idle-timeout`: a Go duration [default: 4h]; 0 is no limit.
fn idle_timeout(given: Option<String>) -> Result<Option<std::time::Duration>, Refusal> {
    match berth_util::units::parse_duration(given.as_deref().unwrap_or("4h")) {
        Ok(0) => Ok(None),
        Ok(ns) if ns > 0 => Ok(Some(std::time::Duration::from_nanos(ns as u64))),
        Ok(_) => Err("must not be negative".into()),
        Err(e) => Err(e.to_string().into()),
    }
}

/// A check that the value is one of `allowed` ("… (use a, b or c)").
fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<(), Refusal> {
    move |v| {
        if allowed.contains(&v) {
            return Ok(());
        }
        let (last, first) = allowed.split_last().unwrap_or((&"", &[]));
        Err(format!("{v:?} (use {} or {last})", first.join(", ")).into())
    }
}

fn at_least_one(n: &usize) -> Result<(), Refusal> {
    if *n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(())
}

fn not_empty(s: &str) -> Result<(), Refusal> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<(), Refusal> {
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()).into());
    }
    Ok(())
}

/// The message of an item that is not `KEY=VALUE`.
fn not_key_value(item: &str) -> String {
    format!("{item:?} is not KEY=VALUE")
}

/// `labels`: each `KEY=VALUE`.
fn key_values(items: &[String]) -> Result<(), Refusal> {
    match items.iter().find(|l| !l.contains('=')) {
        Some(l) => Err(not_key_value(l).into()),
        None => Ok(()),
    }
}

/// `default-ulimits`: each known, soft at most hard, under its own name.
fn check_ulimits(ulimits: &BTreeMap<String, Ulimit>) -> Result<(), Refusal> {
    for (name, u) in ulimits {
        if name != &u.name {
            return Err(format!("the key {name:?} names the ulimit {:?}", u.name).into());
        }
        check_ulimit(u)?;
    }
    Ok(())
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
