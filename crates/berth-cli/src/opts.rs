//! Docker's `create`/`run` flags beyond the basic ones ([`CreateFlags`]: resources, security,
//! terminals, restart policy, health checks, environment files) and how they fill the typed
//! create request (`berth_api::container::CreateRequest`) and `update`'s resources.

use std::collections::BTreeMap;

use berth_api::container::{
    CreateRequest, DeviceMapping, HealthConfig, HostConfig, Resources, RestartPolicy,
    ThrottleDevice, Ulimit,
};
use berth_util::units::{parse_duration, parse_ram_bytes};
use clap::Args;

use crate::error::{bad_flag, CliError, Result};

/// Docker's create flags beyond the basic ones of `run` (resources, security, terminals,
/// restart policy, health checks).
#[derive(Debug, Args, Default, Clone)]
pub struct CreateFlags {
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Restart policy to apply when a container exits
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    memory_reservation: Option<String>,
    /// Disable OOM Killer
    #[arg(long = "oom-kill-disable")]
    oom_kill_disable: bool,
    /// Tune host's OOM preferences (-1000 to 1000)
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    oom_score_adj: Option<i64>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    cpu_shares: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period")]
    cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// Limit read rate (bytes per second) from a device
    #[arg(long = "device-read-bps")]
    device_read_bps: Vec<String>,
    /// Limit write rate (bytes per second) to a device
    #[arg(long = "device-write-bps")]
    device_write_bps: Vec<String>,
    /// Limit read rate (IO per second) from a device
    #[arg(long = "device-read-iops")]
    device_read_iops: Vec<String>,
    /// Limit write rate (IO per second) to a device
    #[arg(long = "device-write-iops")]
    device_write_iops: Vec<String>,
    /// Ulimit options
    #[arg(long)]
    ulimit: Vec<String>,
    /// Add a host device to the container
    #[arg(long)]
    device: Vec<String>,
    /// Size of /dev/shm
    #[arg(long = "shm-size")]
    shm_size: Option<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    privileged: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Security Options
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<i64>,
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval")]
    health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout")]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown
    #[arg(long = "health-start-period")]
    health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Add additional groups to join
    #[arg(long = "group-add")]
    group_add: Vec<String>,
    /// PID namespace to use
    #[arg(long)]
    pid: Option<String>,
    /// IPC mode to use
    #[arg(long)]
    ipc: Option<String>,
    /// UTS namespace to use
    #[arg(long)]
    uts: Option<String>,
    /// Sysctl options
    #[arg(long)]
    sysctl: Vec<String>,
    /// Optional parent cgroup for the container
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
    /// Runtime to use for this container
    #[arg(long)]
    runtime: Option<String>,
}

/// `--device-read-bps /dev/sda:1mb` and friends: (path, rate) pairs; bytes for `bps` (Docker's
/// `RAMInBytes`), a count for `iops`.
fn throttle(list: &[String], flag: &str, iops: bool) -> Result<Option<Vec<ThrottleDevice>>> {
    each(list, |d| {
        let (path, rate) = d
            .rsplit_once(':')
            .ok_or_else(|| bad_flag(d, flag, format!("bad format: {d}")))?;
        let rate = if iops {
            rate.parse::<u64>()
                .map_err(|_| bad_flag(d, flag, format!("invalid rate for device: {d}. The correct format is <device-path>:<number>. Number must be a positive integer")))?
        } else {
            parse_ram_bytes(rate)
                .map(|n| n as u64)
                .map_err(|e| bad_flag(d, flag, format!("invalid rate for device: {d}. The correct format is <device-path>:<number>[<unit>]. Number must be a positive integer. Unit is optional and can be kb, mb, or gb: {e}")))?
        };
        Ok(ThrottleDevice {
            path: path.to_string(),
            rate,
        })
    })
}

/// The items of a repeatable flag, each read by `item`, collected (a list or a map); `None`
/// when the flag is not given.
fn each<C: FromIterator<T>, T>(
    list: &[String],
    item: impl FnMut(&String) -> Result<T>,
) -> Result<Option<C>> {
    if list.is_empty() {
        return Ok(None);
    }
    list.iter().map(item).collect::<Result<C>>().map(Some)
}

/// A size flag (`RAMInBytes`).
fn bytes(v: &str, flag: &str) -> Result<i64> {
    parse_ram_bytes(v).map_err(|e| bad_flag(v, flag, e))
}

/// A duration flag (Go's `ParseDuration`), in nanoseconds.
fn duration(v: &Option<String>, flag: &str) -> Result<i64> {
    match v {
        None => Ok(0),
        Some(d) => parse_duration(d).map_err(|e| bad_flag(d, flag, e)),
    }
}

/// `key=value` flags into a map (`--sysctl`).
fn key_values(list: &[String], what: &str) -> Result<Option<BTreeMap<String, String>>> {
    each(list, |s| {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("invalid {what} value: {s}")))?;
        Ok((k.to_string(), v.to_string()))
    })
}

fn restart_policy(r: &str) -> Result<RestartPolicy> {
    let (name, count) = match r.split_once(':') {
        Some((n, c)) => (
            n.to_string(),
            c.parse::<i64>()
                .map_err(|_| CliError::Usage(format!("invalid restart policy {r}")))?,
        ),
        None => (r.to_string(), 0),
    };
    Ok(RestartPolicy {
        name,
        maximum_retry_count: count,
    })
}

/// `--ulimit name=soft[:hard]`.
fn ulimit(u: &str) -> Result<Ulimit> {
    let bad = || CliError::Usage(format!("invalid ulimit argument: {u}"));
    let (name, lim) = u.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = lim.split_once(':').unwrap_or((lim, lim));
    Ok(Ulimit {
        name: name.to_string(),
        soft: soft.parse().map_err(|_| bad())?,
        hard: hard.parse().map_err(|_| bad())?,
    })
}

/// `--device host[:container][:perms]`.
fn device(d: &str) -> Result<DeviceMapping> {
    let parts: Vec<&str> = d.split(':').collect();
    let (host, inside, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|x| "rwm".contains(x)) => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => {
            return Err(CliError::Usage(format!(
                "invalid device specification: {d}"
            )))
        }
    };
    Ok(DeviceMapping {
        path_on_host: host.to_string(),
        path_in_container: inside.to_string(),
        cgroup_permissions: perms.to_string(),
    })
}

/// `--security-opt`: `seccomp=<file>` sends the profile's content, as the docker CLI does.
fn security_opt(o: &str) -> Result<String> {
    if let Some(f) = o
        .strip_prefix("seccomp=")
        .or_else(|| o.strip_prefix("seccomp:"))
    {
        if f != "unconfined" {
            let text = std::fs::read_to_string(f).map_err(|e| {
                CliError::Usage(format!("opening seccomp profile ({f}) failed: {e}"))
            })?;
            return Ok(format!("seccomp={}", text.trim()));
        }
    }
    Ok(o.to_string())
}

/// The lines of `--env-file` files: `KEY=value` as is, a bare `KEY` from this environment
/// (dropped when unset); blank lines and `#` comments skipped.
fn env_files(files: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| CliError::Usage(format!("open {f}: {e}")))?;
        for l in text.lines() {
            let l = l.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if l.contains('=') {
                out.push(l.to_string());
            } else if let Ok(v) = std::env::var(l) {
                out.push(format!("{l}={v}"));
            }
        }
    }
    Ok(out)
}

impl CreateFlags {
    /// The resource flags (also `update`'s).
    pub fn resources(&self) -> Result<Resources> {
        let mut r = Resources::default();
        if let Some(m) = &self.memory {
            r.memory = bytes(m, "-m, --memory")?;
        }
        if let Some(m) = &self.memory_swap {
            r.memory_swap = if m == "-1" {
                -1
            } else {
                bytes(m, "--memory-swap")?
            };
        }
        if let Some(m) = &self.memory_reservation {
            r.memory_reservation = bytes(m, "--memory-reservation")?;
        }
        if self.oom_kill_disable {
            r.oom_kill_disable = Some(true);
        }
        if let Some(c) = self.cpus {
            r.nano_cpus = (c * 1e9) as i64;
        }
        r.cpu_shares = self.cpu_shares.unwrap_or(0);
        r.cpu_period = self.cpu_period.unwrap_or(0);
        r.cpu_quota = self.cpu_quota.unwrap_or(0);
        r.cpuset_cpus = self.cpuset_cpus.clone().unwrap_or_default();
        r.cpuset_mems = self.cpuset_mems.clone().unwrap_or_default();
        r.pids_limit = self.pids_limit;
        r.blkio_weight = self.blkio_weight.unwrap_or(0);
        r.blkio_device_read_bps = throttle(&self.device_read_bps, "--device-read-bps", false)?;
        r.blkio_device_write_bps = throttle(&self.device_write_bps, "--device-write-bps", false)?;
        r.blkio_device_read_iops = throttle(&self.device_read_iops, "--device-read-iops", true)?;
        r.blkio_device_write_iops = throttle(&self.device_write_iops, "--device-write-iops", true)?;
        r.ulimits = each(&self.ulimit, |u| ulimit(u))?;
        r.devices = each(&self.device, |d| device(d))?;
        r.cgroup_parent = self.cgroup_parent.clone().unwrap_or_default();
        Ok(r)
    }

    /// `--restart`, when given.
    pub fn restart_policy(&self) -> Result<Option<RestartPolicy>> {
        self.restart.as_deref().map(restart_policy).transpose()
    }

    /// The health check of `--health-*` / `--no-healthcheck` (`None`: the image's).
    fn healthcheck(&self) -> Result<Option<HealthConfig>> {
        if self.no_healthcheck {
            return Ok(Some(HealthConfig {
                test: Some(vec!["NONE".into()]),
                ..Default::default()
            }));
        }
        let h = HealthConfig {
            test: self
                .health_cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
            interval: duration(&self.health_interval, "--health-interval")?,
            timeout: duration(&self.health_timeout, "--health-timeout")?,
            start_period: duration(&self.health_start_period, "--health-start-period")?,
            start_interval: 0,
            retries: self.health_retries.unwrap_or(0),
        };
        Ok((h != HealthConfig::default()).then_some(h))
    }

    /// Writes the flags into a create request (`Config` and `HostConfig`).
    pub fn apply(&self, req: &mut CreateRequest) -> Result {
        let hc = req.host_config.get_or_insert_with(HostConfig::default);
        // Only these flags set resources.
        hc.set_resources(self.resources()?);
        if let Some(p) = self.restart_policy()? {
            hc.restart_policy = p;
        }
        if let Some(o) = self.oom_score_adj {
            hc.oom_score_adj = o;
        }
        if let Some(s) = &self.shm_size {
            hc.shm_size = bytes(s, "--shm-size")?;
        }
        hc.privileged |= self.privileged;
        if !self.cap_add.is_empty() {
            hc.cap_add = Some(self.cap_add.clone());
        }
        if !self.cap_drop.is_empty() {
            hc.cap_drop = Some(self.cap_drop.clone());
        }
        if let Some(o) = each(&self.security_opt, |o| security_opt(o))? {
            hc.security_opt = Some(o);
        }
        hc.readonly_rootfs |= self.read_only;
        if self.init {
            hc.init = Some(true);
        }
        if !self.group_add.is_empty() {
            hc.group_add = Some(self.group_add.clone());
        }
        if let Some(p) = &self.pid {
            hc.pid_mode = p.clone();
        }
        if let Some(p) = &self.ipc {
            hc.ipc_mode = p.clone();
        }
        if let Some(p) = &self.uts {
            hc.uts_mode = p.clone();
        }
        if let Some(s) = key_values(&self.sysctl, "sysctl")? {
            hc.sysctls = Some(s);
        }
        if let Some(r) = &self.runtime {
            hc.runtime = r.clone();
        }
        let cfg = &mut req.config;
        cfg.tty |= self.tty;
        if self.interactive {
            cfg.open_stdin = true;
            cfg.attach_stdin = true;
            cfg.stdin_once = true;
        }
        if let Some(s) = &self.stop_signal {
            cfg.stop_signal = s.clone();
        }
        if let Some(t) = self.stop_timeout {
            cfg.stop_timeout = Some(t);
        }
        if let Some(h) = self.healthcheck()? {
            cfg.healthcheck = Some(h);
        }
        // Files first, then -e (which wins).
        let mut env = env_files(&self.env_file)?;
        if !env.is_empty() {
            env.extend(cfg.env.take().unwrap_or_default());
            cfg.env = Some(env);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::container::Config;

    #[test]
    fn flags_to_request() {
        let f = CreateFlags {
            memory: Some("32m".into()),
            cpus: Some(0.5),
            restart: Some("on-failure:3".into()),
            ulimit: vec!["nofile=10:20".into()],
            cap_add: vec!["NET_ADMIN".into()],
            tty: true,
            interactive: true,
            health_cmd: Some("true".into()),
            health_interval: Some("1s".into()),
            device_read_bps: vec!["/dev/sda:1mb".into()],
            ..Default::default()
        };
        let mut r = CreateRequest {
            config: Config {
                env: Some(vec!["A=1".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        f.apply(&mut r).unwrap();
        let hc = r.host_config.as_ref().unwrap();
        assert_eq!(hc.memory, 32 << 20);
        assert_eq!(hc.nano_cpus, 500_000_000);
        assert_eq!(hc.restart_policy.maximum_retry_count, 3);
        assert_eq!(hc.ulimits.as_ref().unwrap()[0].hard, 20);
        assert_eq!(hc.blkio_device_read_bps.as_ref().unwrap()[0].rate, 1 << 20);
        assert!(r.config.tty && r.config.open_stdin);
        let h = r.config.healthcheck.as_ref().unwrap();
        assert_eq!(h.interval, 1_000_000_000);
        assert_eq!(h.test.as_deref().unwrap(), ["CMD-SHELL", "true"]);
        assert_eq!(r.config.env.as_deref().unwrap(), ["A=1"]);
        // The wire shape: Config at the top, HostConfig beside it, as dockerd decodes it.
        let wire = serde_json::to_vec(&r).unwrap();
        assert_eq!(CreateRequest::decode(&wire).unwrap().unwrap(), r);
    }

    #[test]
    fn sizes_and_durations() {
        // Docker's RAMInBytes and Go's ParseDuration (berth_util::units).
        assert_eq!(bytes("16m", "-m").unwrap(), 16 << 20);
        assert_eq!(bytes("1g", "-m").unwrap(), 1 << 30);
        assert_eq!(bytes("512", "-m").unwrap(), 512);
        assert_eq!(bytes("64MB", "-m").unwrap(), 64 << 20);
        assert!(bytes("x", "-m").is_err());
        assert_eq!(duration(&Some("200ms".into()), "-x").unwrap(), 200_000_000);
        assert_eq!(
            duration(&Some("1m30s".into()), "-x").unwrap(),
            90_000_000_000
        );
        assert!(duration(&Some("5 parsecs".into()), "-x").is_err());
    }

    #[test]
    fn bad_values_name_the_flag() {
        let f = CreateFlags {
            memory: Some("lots".into()),
            ..Default::default()
        };
        let e = f.apply(&mut CreateRequest::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid argument \"lots\" for \"-m, --memory\" flag: invalid size: 'lots'"
        );
        assert_eq!(e.status(), 125);
        let f = CreateFlags {
            health_interval: Some("5 parsecs".into()),
            ..Default::default()
        };
        let e = f.apply(&mut CreateRequest::default()).unwrap_err();
        assert!(e.to_string().contains("--health-interval"), "{e}");
        assert!(ulimit("nofile").is_err() && device("a:b:c:d").is_err());
        assert!(restart_policy("on-failure:x").is_err());
        let none = CreateFlags {
            no_healthcheck: true,
            ..Default::default()
        };
        assert_eq!(
            none.healthcheck().unwrap().unwrap().test.unwrap(),
            vec!["NONE"]
        );
        assert_eq!(CreateFlags::default().healthcheck().unwrap(), None);
    }
}
