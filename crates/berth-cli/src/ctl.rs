//! Container commands beyond the basics: Docker's create flags ([`CreateFlags`]), `create`,
//! `start`, `restart`, `kill`, `exec`, `inspect`, `top`, `rename`, `diff`, `pause`, `unpause`,
//! `update`, `stats`, `events`, `container prune`, `system prune`; interactive terminals.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use clap::Args;
use serde_json::{json, Value};

use crate::api::{self, enc, ApiError, Host};
use crate::commands::CliError;

use crate::containers::daemon;

fn w(e: std::io::Error) -> CliError {
    CliError::Message(e.to_string())
}

/// Docker's `RAMInBytes`: `512`, `16m`, `1.5g`, `64MB`.
pub fn parse_bytes(s: &str) -> Result<i64, CliError> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('p') => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| CliError::Usage(format!("invalid size: '{s}'")))?;
    if n < 0.0 {
        return Err(CliError::Usage(format!("invalid size: '{s}'")));
    }
    Ok((n * mult as f64) as i64)
}

/// Go's duration syntax (`300ms`, `1m30s`) in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, CliError> {
    let bad = || CliError::Usage(format!("invalid duration: {s:?}"));
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let i = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..i].parse().map_err(|_| bad())?;
        rest = &rest[i..];
        let j = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..j] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[j..];
    }
    Ok(total as i64)
}

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

fn throttle(list: &[String], iops: bool) -> Result<Value, CliError> {
    let mut v = Vec::new();
    for d in list {
        let (path, rate) = d
            .rsplit_once(':')
            .ok_or_else(|| CliError::Usage(format!("bad format: {d}")))?;
        let rate = if iops {
            rate.parse::<i64>()
                .map_err(|_| CliError::Usage(format!("invalid rate for device: {d}")))?
        } else {
            parse_bytes(rate)?
        };
        v.push(json!({"Path": path, "Rate": rate}));
    }
    Ok(json!(v))
}

impl CreateFlags {
    /// Writes the flags into a create body (`Config` at the top, `HostConfig` below).
    pub fn apply(&self, body: &mut Value) -> Result<(), CliError> {
        if !body["HostConfig"].is_object() {
            body["HostConfig"] = json!({});
        }
        let hc = &mut body["HostConfig"];
        if let Some(r) = &self.restart {
            let (name, count) = match r.split_once(':') {
                Some((n, c)) => (
                    n.to_string(),
                    c.parse::<i64>()
                        .map_err(|_| CliError::Usage(format!("invalid restart policy {r}")))?,
                ),
                None => (r.clone(), 0),
            };
            hc["RestartPolicy"] = json!({"Name": name, "MaximumRetryCount": count});
        }
        if let Some(m) = &self.memory {
            hc["Memory"] = json!(parse_bytes(m)?);
        }
        if let Some(m) = &self.memory_swap {
            hc["MemorySwap"] = json!(if m == "-1" { -1 } else { parse_bytes(m)? });
        }
        if let Some(m) = &self.memory_reservation {
            hc["MemoryReservation"] = json!(parse_bytes(m)?);
        }
        if self.oom_kill_disable {
            hc["OomKillDisable"] = json!(true);
        }
        if let Some(o) = self.oom_score_adj {
            hc["OomScoreAdj"] = json!(o);
        }
        if let Some(c) = self.cpus {
            hc["NanoCpus"] = json!((c * 1e9) as i64);
        }
        if let Some(c) = self.cpu_shares {
            hc["CpuShares"] = json!(c);
        }
        if let Some(c) = self.cpu_period {
            hc["CpuPeriod"] = json!(c);
        }
        if let Some(c) = self.cpu_quota {
            hc["CpuQuota"] = json!(c);
        }
        if let Some(c) = &self.cpuset_cpus {
            hc["CpusetCpus"] = json!(c);
        }
        if let Some(c) = &self.cpuset_mems {
            hc["CpusetMems"] = json!(c);
        }
        if let Some(p) = self.pids_limit {
            hc["PidsLimit"] = json!(p);
        }
        if let Some(b) = self.blkio_weight {
            hc["BlkioWeight"] = json!(b);
        }
        hc["BlkioDeviceReadBps"] = throttle(&self.device_read_bps, false)?;
        hc["BlkioDeviceWriteBps"] = throttle(&self.device_write_bps, false)?;
        hc["BlkioDeviceReadIOps"] = throttle(&self.device_read_iops, true)?;
        hc["BlkioDeviceWriteIOps"] = throttle(&self.device_write_iops, true)?;
        let mut ul = Vec::new();
        for u in &self.ulimit {
            let (name, lim) = u
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("invalid ulimit argument: {u}")))?;
            let (soft, hard) = lim.split_once(':').unwrap_or((lim, lim));
            let p = |x: &str| {
                x.parse::<i64>()
                    .map_err(|_| CliError::Usage(format!("invalid ulimit argument: {u}")))
            };
            ul.push(json!({"Name": name, "Soft": p(soft)?, "Hard": p(hard)?}));
        }
        if !ul.is_empty() {
            hc["Ulimits"] = json!(ul);
        }
        let mut devs = Vec::new();
        for d in &self.device {
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
            devs.push(
                json!({"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": perms}),
            );
        }
        if !devs.is_empty() {
            hc["Devices"] = json!(devs);
        }
        if let Some(s) = &self.shm_size {
            hc["ShmSize"] = json!(parse_bytes(s)?);
        }
        if self.privileged {
            hc["Privileged"] = json!(true);
        }
        if !self.cap_add.is_empty() {
            hc["CapAdd"] = json!(self.cap_add);
        }
        if !self.cap_drop.is_empty() {
            hc["CapDrop"] = json!(self.cap_drop);
        }
        let mut sec = Vec::new();
        for o in &self.security_opt {
            // seccomp=<file>: the CLI sends the profile's content, as Docker's.
            if let Some(f) = o
                .strip_prefix("seccomp=")
                .or_else(|| o.strip_prefix("seccomp:"))
            {
                if f != "unconfined" {
                    let text = std::fs::read_to_string(f).map_err(|e| {
                        CliError::Usage(format!("opening seccomp profile ({f}) failed: {e}"))
                    })?;
                    sec.push(format!("seccomp={}", text.trim()));
                    continue;
                }
            }
            sec.push(o.clone());
        }
        if !sec.is_empty() {
            hc["SecurityOpt"] = json!(sec);
        }
        if self.read_only {
            hc["ReadonlyRootfs"] = json!(true);
        }
        if self.init {
            hc["Init"] = json!(true);
        }
        if !self.group_add.is_empty() {
            hc["GroupAdd"] = json!(self.group_add);
        }
        if let Some(p) = &self.pid {
            hc["PidMode"] = json!(p);
        }
        if let Some(p) = &self.ipc {
            hc["IpcMode"] = json!(p);
        }
        if let Some(p) = &self.uts {
            hc["UTSMode"] = json!(p);
        }
        if !self.sysctl.is_empty() {
            let mut m = serde_json::Map::new();
            for s in &self.sysctl {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| CliError::Usage(format!("invalid sysctl value: {s}")))?;
                m.insert(k.into(), json!(v));
            }
            hc["Sysctls"] = Value::Object(m);
        }
        if let Some(p) = &self.cgroup_parent {
            hc["CgroupParent"] = json!(p);
        }
        if let Some(r) = &self.runtime {
            hc["Runtime"] = json!(r);
        }
        // Config.
        if self.tty {
            body["Tty"] = json!(true);
        }
        if self.interactive {
            body["OpenStdin"] = json!(true);
            body["AttachStdin"] = json!(true);
            body["StdinOnce"] = json!(true);
        }
        if let Some(s) = &self.stop_signal {
            body["StopSignal"] = json!(s);
        }
        if let Some(t) = self.stop_timeout {
            body["StopTimeout"] = json!(t);
        }
        if self.no_healthcheck {
            body["Healthcheck"] = json!({"Test": ["NONE"]});
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_retries.is_some()
        {
            let mut h = json!({});
            if let Some(c) = &self.health_cmd {
                h["Test"] = json!(["CMD-SHELL", c]);
            }
            for (k, v) in [
                ("Interval", &self.health_interval),
                ("Timeout", &self.health_timeout),
                ("StartPeriod", &self.health_start_period),
            ] {
                if let Some(d) = v {
                    h[k] = json!(parse_duration(d)?);
                }
            }
            if let Some(r) = self.health_retries {
                h["Retries"] = json!(r);
            }
            body["Healthcheck"] = h;
        }
        let mut env: Vec<Value> = body["Env"].as_array().cloned().unwrap_or_default();
        let mut from_files = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("open {f}: {e}")))?;
            for l in text.lines() {
                let l = l.trim_start();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                if l.contains('=') {
                    from_files.push(json!(l));
                } else if let Ok(v) = std::env::var(l) {
                    from_files.push(json!(format!("{l}={v}")));
                }
            }
        }
        // Files first, then -e (which wins).
        from_files.append(&mut env);
        if !from_files.is_empty() {
            body["Env"] = json!(from_files);
        }
        Ok(())
    }
}

/// The terminal of this process in raw mode, restored on drop.
pub struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    pub fn enter() -> RawTerminal {
        use rustix::termios;
        let stdin = std::io::stdin();
        if !termios::isatty(&stdin) {
            return RawTerminal { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw);
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// The size of the terminal on stdout (or stdin, stderr): (rows, cols).
pub fn term_size() -> Option<(u16, u16)> {
    use std::os::fd::AsFd;
    let fds = [
        std::io::stdout().as_fd().try_clone_to_owned().ok()?,
        std::io::stdin().as_fd().try_clone_to_owned().ok()?,
        std::io::stderr().as_fd().try_clone_to_owned().ok()?,
    ];
    for fd in fds {
        if let Ok(ws) = rustix::termios::tcgetwinsize(&fd) {
            if ws.ws_row > 0 {
                return Some((ws.ws_row, ws.ws_col));
            }
        }
    }
    None
}

/// Docker's `--detach-keys`: comma-separated keys, each a single character or `ctrl-<c>` with
/// `<c>` one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`. Empty: the default `ctrl-p,ctrl-q`.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, CliError> {
    if s.is_empty() {
        return Ok(vec![0x10, 0x11]);
    }
    let mut out = Vec::new();
    for key in s.split(',') {
        let b = key.as_bytes();
        let code = if b.len() == 1 {
            Some(b[0])
        } else if let Some(c) = key.strip_prefix("ctrl-").filter(|c| c.len() == 1) {
            match c.as_bytes()[0] {
                c @ b'a'..=b'z' => Some(c - b'a' + 1),
                b'@' => Some(0),
                b'[' => Some(27),
                b'\\' => Some(28),
                b']' => Some(29),
                b'^' => Some(30),
                b'_' => Some(31),
                _ => None,
            }
        } else {
            None
        };
        out.push(code.ok_or_else(|| {
            CliError::Message(format!("invalid detach keys ({s:?}): unknown key {key:?}"))
        })?);
    }
    Ok(out)
}

/// The detach-key filter on a tty's input, as Docker's escape proxy: bytes that may start the
/// sequence are held back until it is complete (detach) or broken (they are passed on).
struct EscapeProxy<'a> {
    keys: &'a [u8],
    held: usize,
}

impl EscapeProxy<'_> {
    /// Filters `input` into `out`; true when the whole sequence was typed.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

/// Runs an interactive session over a hijacked stream: stdin to the stream (through the
/// detach keys on a tty), the stream to stdout/stderr, window-size changes to `resize_path`.
/// Returns whether the user detached.
pub fn interactive(
    host: &Host,
    stream: std::io::BufReader<UnixStream>,
    tty: bool,
    stdin: bool,
    resize_path: Option<String>,
    detach_keys: &[u8],
) -> Result<bool, CliError> {
    let raw = if tty {
        Some(RawTerminal::enter())
    } else {
        None
    };
    let mut writer = stream.get_ref().try_clone().map_err(w)?;
    let detached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(rp) = resize_path.clone() {
        let host = host.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last = None;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = term_size();
                if now.is_some() && now != last {
                    if let Some((h, wd)) = now {
                        let sep = if rp.contains('?') { '&' } else { '?' };
                        let _ =
                            api::request(&host, "POST", &format!("{rp}{sep}h={h}&w={wd}"), None);
                    }
                    last = now;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
    if stdin {
        let detached = detached.clone();
        let sock = stream.get_ref().try_clone().map_err(w)?;
        let keys = detach_keys.to_vec();
        std::thread::spawn(move || {
            let mut input = std::io::stdin();
            let mut buf = [0u8; 4096];
            let mut proxy = EscapeProxy {
                keys: &keys,
                held: 0,
            };
            let mut pass = Vec::with_capacity(4096);
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pass.clear();
                // Docker filters only a tty's input (piped input is data).
                if tty {
                    if proxy.feed(&buf[..n], &mut pass) {
                        let _ = writer.write_all(&pass);
                        detached.store(true, std::sync::atomic::Ordering::SeqCst);
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                } else {
                    pass.extend_from_slice(&buf[..n]);
                }
                if writer.write_all(&pass).is_err() {
                    return;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut r = stream;
    let out = std::io::stdout();
    let err = std::io::stderr();
    let res = if tty {
        let mut o = out.lock();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = o.write_all(&buf[..n]);
                    let _ = o.flush();
                }
            }
        }
        Ok(())
    } else {
        api::demux(&mut r, &mut out.lock(), &mut err.lock())
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(raw);
    let detached = detached.load(std::sync::atomic::Ordering::SeqCst);
    if !detached {
        if let Err(e) = res {
            if !matches!(e, ApiError::Io(_)) {
                return Err(daemon(e));
            }
        }
    }
    Ok(detached)
}

/// `start` flags.
#[derive(Debug, Args)]
pub struct StartCmd {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn start(
    host: &Host,
    c: &StartCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CliError> {
    if c.attach || c.interactive {
        let name = &c.containers[0];
        let info = api::request(
            host,
            "GET",
            &format!("/containers/{}/json", enc(name)),
            None,
        )
        .and_then(|r| r.json())
        .map_err(daemon)?;
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
        let id = info["Id"].as_str().unwrap_or_default().to_string();
        let stream = api::hijack(
            host,
            &format!(
                "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                c.interactive as u8
            ),
            None,
        )
        .map_err(daemon)?;
        let keys = parse_detach_keys(&c.detach_keys)?;
        let waiter = spawn_wait(host, &id, "next-exit");
        api::request(host, "POST", &format!("/containers/{id}/start"), None).map_err(daemon)?;
        let detached = interactive(
            host,
            stream,
            tty,
            c.interactive,
            tty.then(|| format!("/containers/{id}/resize")),
            &keys,
        )?;
        if detached {
            return Ok(0);
        }
        return Ok(join_wait(waiter));
    }
    each(&c.containers, out, err, |n| {
        api::request(host, "POST", &format!("/containers/{}/start", enc(n)), None)
            .map(|_| n.to_string())
    })?;
    Ok(0)
}

/// Waits (in a thread, from now) for a container's exit.
pub fn spawn_wait(
    host: &Host,
    id: &str,
    condition: &str,
) -> std::thread::JoinHandle<Result<i64, ApiError>> {
    // Registered (headers received) before the caller goes on to start the container.
    let pending = api::begin(
        host,
        "POST",
        &format!("/containers/{id}/wait?condition={condition}"),
        None,
    );
    std::thread::spawn(move || {
        let v = pending?.finish()?.json()?;
        Ok(v["StatusCode"].as_i64().unwrap_or(125))
    })
}

pub fn join_wait(h: std::thread::JoinHandle<Result<i64, ApiError>>) -> i32 {
    match h.join() {
        Ok(Ok(code)) => code as i32,
        _ => 125,
    }
}

use crate::containers::each;

/// `restart` flags.
#[derive(Debug, Args)]
pub struct RestartCmd {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn restart(
    host: &Host,
    c: &RestartCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |n| {
        let mut p = format!("/containers/{}/restart?", enc(n));
        if let Some(t) = c.time {
            p.push_str(&format!("t={t}&"));
        }
        if let Some(s) = &c.signal {
            p.push_str(&format!("signal={}", enc(s)));
        }
        api::request(host, "POST", &p, None).map(|_| n.to_string())
    })
}

/// `kill` flags.
#[derive(Debug, Args)]
pub struct KillCmd {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn kill(
    host: &Host,
    c: &KillCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |n| {
        api::request(
            host,
            "POST",
            &format!("/containers/{}/kill?signal={}", enc(n), enc(&c.signal)),
            None,
        )
        .map(|_| n.to_string())
    })
}

/// Names-only commands: `pause`, `unpause`.
#[derive(Debug, Args)]
pub struct NamesCmd {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn simple_post(
    host: &Host,
    op: &str,
    c: &NamesCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |n| {
        api::request(host, "POST", &format!("/containers/{}/{op}", enc(n)), None)
            .map(|_| n.to_string())
    })
}

/// `rename OLD NEW`.
#[derive(Debug, Args)]
pub struct RenameCmd {
    container: String,
    new_name: String,
}

pub fn rename(host: &Host, c: &RenameCmd) -> Result<(), CliError> {
    api::request(
        host,
        "POST",
        &format!(
            "/containers/{}/rename?name={}",
            enc(&c.container),
            enc(&c.new_name)
        ),
        None,
    )
    .map_err(daemon)?;
    Ok(())
}

/// `exec` flags.
#[derive(Debug, Args)]
pub struct ExecCmd {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn exec(host: &Host, c: &ExecCmd, err: &mut dyn Write) -> Result<i32, CliError> {
    let keys = parse_detach_keys(&c.detach_keys)?;
    let body = json!({
        "AttachStdin": c.interactive && !c.detach,
        "AttachStdout": !c.detach,
        "AttachStderr": !c.detach,
        "Tty": c.tty,
        "Cmd": c.command,
        "Env": c.env,
        "WorkingDir": c.workdir.clone().unwrap_or_default(),
        "User": c.user.clone().unwrap_or_default(),
        "Privileged": c.privileged,
    });
    let created = api::request(
        host,
        "POST",
        &format!("/containers/{}/exec", enc(&c.container)),
        Some(&body),
    )
    .and_then(|r| r.json())
    .map_err(|e| {
        let _ = writeln!(err, "{}", daemon(e));
        CliError::Exit(1)
    })?;
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    let size = term_size().filter(|_| c.tty);
    let start = json!({
        "Detach": c.detach,
        "Tty": c.tty,
        "ConsoleSize": size.map(|(h, w)| json!([h, w])).unwrap_or(Value::Null),
    });
    if c.detach {
        api::request(host, "POST", &format!("/exec/{id}/start"), Some(&start)).map_err(daemon)?;
        return Ok(0);
    }
    let stream = api::hijack(host, &format!("/exec/{id}/start"), Some(&start)).map_err(daemon)?;
    if interactive(
        host,
        stream,
        c.tty,
        c.interactive,
        c.tty.then(|| format!("/exec/{id}/resize")),
        &keys,
    )? {
        return Ok(0);
    }
    let v = api::request(host, "GET", &format!("/exec/{id}/json"), None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    Ok(v["ExitCode"].as_i64().unwrap_or(126) as i32)
}

/// `inspect` flags.
#[derive(Debug, Args)]
pub struct InspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Return JSON for specified type
    #[arg(long = "type")]
    typ: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    size: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

fn render(format: &str, v: &Value) -> Result<String, CliError> {
    let t = crate::template::Template::parse(format)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let data = crate::template::Value::from_json_str(&v.to_string())
        .map_err(|e| CliError::Message(format!("template: {e}")))?;
    t.execute(&data)
        .map_err(|e| CliError::Message(format!("template: {}", e.0)))
}

pub fn inspect(
    host: &Host,
    c: &InspectCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let mut docs = Vec::new();
    let mut failed = false;
    for n in &c.names {
        let try_c = c.typ.as_deref().is_none_or(|t| t == "container");
        let try_i = c.typ.as_deref().is_none_or(|t| t == "image");
        let mut found = None;
        if try_c {
            if let Ok(v) = api::request(host, "GET", &format!("/containers/{}/json", enc(n)), None)
                .and_then(|r| r.json())
            {
                found = Some(v);
            }
        }
        if found.is_none() && try_i {
            if let Ok(v) =
                api::request(host, "GET", &format!("/images/{n}/json"), None).and_then(|r| r.json())
            {
                found = Some(v);
            }
        }
        match found {
            Some(v) => docs.push(v),
            None => {
                failed = true;
                let _ = writeln!(err, "Error: No such object: {n}");
            }
        }
    }
    match &c.format {
        Some(f) => {
            for d in &docs {
                writeln!(out, "{}", render(f, d)?).map_err(w)?;
            }
        }
        None => {
            let s = serde_json::to_string_pretty(&Value::Array(docs)).unwrap_or_default();
            writeln!(out, "{}", s.replace("  ", "    ")).map_err(w)?;
        }
    }
    if failed {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

/// `top CONTAINER [ps OPTIONS]`.
#[derive(Debug, Args)]
pub struct TopCmd {
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub fn top(host: &Host, c: &TopCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let mut p = format!("/containers/{}/top", enc(&c.container));
    if !c.ps_args.is_empty() {
        p.push_str(&format!("?ps_args={}", enc(&c.ps_args.join(" "))));
    }
    let v = api::request(host, "GET", &p, None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    let mut text = String::new();
    let titles: Vec<&str> = v["Titles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str())
        .collect();
    text.push_str(&titles.join("\t"));
    text.push('\n');
    for row in v["Processes"].as_array().into_iter().flatten() {
        let cells: Vec<&str> = row
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    out.write_all(crate::tabwriter::docker_table(&text).as_bytes())
        .map_err(w)
}

/// `diff CONTAINER`.
#[derive(Debug, Args)]
pub struct DiffCmd {
    container: String,
}

pub fn diff(host: &Host, c: &DiffCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let v = api::request(
        host,
        "GET",
        &format!("/containers/{}/changes", enc(&c.container)),
        None,
    )
    .and_then(|r| r.json())
    .map_err(daemon)?;
    for ch in v.as_array().into_iter().flatten() {
        let k = match ch["Kind"].as_i64() {
            Some(0) => 'C',
            Some(1) => 'A',
            _ => 'D',
        };
        writeln!(out, "{k} {}", ch["Path"].as_str().unwrap_or_default()).map_err(w)?;
    }
    Ok(())
}

/// `update` flags.
#[derive(Debug, Args)]
pub struct UpdateCmd {
    #[command(flatten)]
    flags: CreateFlags,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn update(
    host: &Host,
    c: &UpdateCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let mut body = json!({});
    c.flags.apply(&mut body)?;
    let hc = body["HostConfig"].clone();
    each(&c.containers, out, err, |n| {
        api::request(
            host,
            "POST",
            &format!("/containers/{}/update", enc(n)),
            Some(&hc),
        )
        .map(|_| n.to_string())
    })
}

/// `stats` flags.
#[derive(Debug, Args)]
pub struct StatsCmd {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

fn stats_row(v: &Value, no_trunc: bool) -> crate::template::Value {
    let cpu = |k: &str| v[k]["cpu_usage"]["total_usage"].as_f64().unwrap_or(0.0);
    let sys = |k: &str| v[k]["system_cpu_usage"].as_f64().unwrap_or(0.0);
    let cpu_delta = cpu("cpu_stats") - cpu("precpu_stats");
    let sys_delta = sys("cpu_stats") - sys("precpu_stats");
    let ncpu = v["cpu_stats"]["online_cpus"].as_f64().unwrap_or(1.0);
    let cpu_pct = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * ncpu * 100.0
    } else {
        0.0
    };
    let m = &v["memory_stats"];
    let cache = m["stats"]["total_inactive_file"]
        .as_f64()
        .or_else(|| m["stats"]["inactive_file"].as_f64())
        .unwrap_or(0.0);
    let used = (m["usage"].as_f64().unwrap_or(0.0) - cache).max(0.0);
    let limit = m["limit"].as_f64().unwrap_or(0.0);
    let mem_pct = if limit > 0.0 {
        used / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    if let Some(n) = v["networks"].as_object() {
        for i in n.values() {
            rx += i["rx_bytes"].as_f64().unwrap_or(0.0);
            tx += i["tx_bytes"].as_f64().unwrap_or(0.0);
        }
    }
    let (mut br, mut bw) = (0.0, 0.0);
    for e in v["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().unwrap_or("").to_ascii_lowercase().as_str() {
            "read" => br += e["value"].as_f64().unwrap_or(0.0),
            "write" => bw += e["value"].as_f64().unwrap_or(0.0),
            _ => {}
        }
    }
    let id = v["id"].as_str().unwrap_or_default();
    let hs = |x: f64| crate::units::human_size_with_precision(x, 3);
    let bin = |x: f64| {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut x = x;
        let mut i = 0;
        while x >= 1024.0 && i < units.len() - 1 {
            x /= 1024.0;
            i += 1;
        }
        format!("{}{}", trim_float(x), units[i])
    };
    crate::format::row(&[
        (
            "Container",
            id.chars().take(if no_trunc { 64 } else { 12 }).collect(),
        ),
        (
            "ID",
            id.chars().take(if no_trunc { 64 } else { 12 }).collect(),
        ),
        (
            "Name",
            v["name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
        ),
        ("CPUPerc", format!("{cpu_pct:.2}%")),
        ("MemUsage", format!("{} / {}", bin(used), bin(limit))),
        ("MemPerc", format!("{mem_pct:.2}%")),
        ("NetIO", format!("{} / {}", hs(rx), hs(tx))),
        ("BlockIO", format!("{} / {}", hs(br), hs(bw))),
        (
            "PIDs",
            v["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
        ),
    ])
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

pub fn stats(host: &Host, c: &StatsCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let names: Vec<String> = if c.containers.is_empty() {
        let list = api::request(
            host,
            "GET",
            &format!("/containers/json?all={}", c.all as u8),
            None,
        )
        .and_then(|r| r.json())
        .map_err(daemon)?;
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["Id"].as_str().map(str::to_string))
            .collect()
    } else {
        c.containers.clone()
    };
    let fmt = crate::format::parse(c.format.as_deref().unwrap_or("table"), STATS_TABLE)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let header = crate::format::row(&[
        ("Container", "CONTAINER".into()),
        ("ID", "CONTAINER ID".into()),
        ("Name", "NAME".into()),
        ("CPUPerc", "CPU %".into()),
        ("MemUsage", "MEM USAGE / LIMIT".into()),
        ("MemPerc", "MEM %".into()),
        ("NetIO", "NET I/O".into()),
        ("BlockIO", "BLOCK I/O".into()),
        ("PIDs", "PIDS".into()),
    ]);
    loop {
        // One request per container, in parallel (each takes a second for the CPU delta).
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let host = host.clone();
                let p = format!("/containers/{}/stats?stream=0", enc(n));
                std::thread::spawn(move || {
                    api::request(&host, "GET", &p, None).and_then(|r| r.json())
                })
            })
            .collect();
        let mut rows = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => rows.push(stats_row(&v, c.no_trunc)),
                Ok(Err(e)) if !c.containers.is_empty() => return Err(daemon(e)),
                _ => {}
            }
        }
        let text = fmt
            .render(&header, &rows)
            .map_err(|e| CliError::Message(format!("template: {}", e.0)))?;
        if !c.no_stream {
            write!(out, "\x1b[2J\x1b[H").map_err(w)?;
        }
        out.write_all(text.as_bytes()).map_err(w)?;
        out.flush().map_err(w)?;
        if c.no_stream {
            return Ok(());
        }
    }
}

/// `events` flags.
#[derive(Debug, Args)]
pub struct EventsCmd {
    /// Show all events created since timestamp
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

pub(crate) fn filters_json(list: &[String]) -> Result<String, CliError> {
    let mut m: serde_json::Map<String, Value> = serde_json::Map::new();
    for f in list {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            CliError::Usage(format!("bad format of filter (expected name=value): {f}"))
        })?;
        m.entry(k.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap()
            .insert(v.to_string(), json!(true));
    }
    Ok(Value::Object(m).to_string())
}

pub fn events(host: &Host, c: &EventsCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let mut p = String::from("/events?");
    for (k, v) in [("since", &c.since), ("until", &c.until)] {
        if let Some(v) = v {
            p.push_str(&format!("{k}={}&", enc(v)));
        }
    }
    if !c.filter.is_empty() {
        p.push_str(&format!("filters={}", enc(&filters_json(&c.filter)?)));
    }
    let r = api::stream(host, &p).map_err(daemon)?;
    let reader = std::io::BufReader::new(r);
    use std::io::BufRead;
    for line in reader.lines() {
        let line = line.map_err(w)?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| CliError::Message(e.to_string()))?;
        let text = match &c.format {
            Some(f) => render(f, &v)?,
            None => {
                let ns = v["timeNano"].as_i64().unwrap_or(0);
                let t = berth_image::timeutil::format_rfc3339_nano(
                    ns / 1_000_000_000,
                    (ns % 1_000_000_000) as u32,
                );
                let mut attrs: Vec<String> = v["Actor"]["Attributes"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default()))
                    .collect();
                attrs.sort();
                format!(
                    "{t} {} {} {} ({})",
                    v["Type"].as_str().unwrap_or_default(),
                    v["Action"].as_str().unwrap_or_default(),
                    v["Actor"]["ID"].as_str().unwrap_or_default(),
                    attrs.join(", ")
                )
            }
        };
        writeln!(out, "{text}").map_err(w)?;
        out.flush().map_err(w)?;
    }
    Ok(())
}

/// `container prune` / `system prune` flags.
#[derive(Debug, Args)]
pub struct PruneCmd {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove all unused images not just dangling ones (system prune)
    #[arg(short = 'a', long)]
    all: bool,
    /// Prune anonymous volumes (system prune)
    #[arg(long)]
    volumes: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long)]
    filter: Vec<String>,
}

fn confirm(prompt: &str, force: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    if force {
        return Ok(true);
    }
    write!(out, "{prompt}\nAre you sure you want to continue? [y/N] ").map_err(w)?;
    out.flush().map_err(w)?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(w)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

pub fn container_prune(host: &Host, c: &PruneCmd, out: &mut dyn Write) -> Result<(), CliError> {
    if !confirm(
        "WARNING! This will remove all stopped containers.",
        c.force,
        out,
    )? {
        return Ok(());
    }
    let mut p = "/containers/prune".to_string();
    if !c.filter.is_empty() {
        p.push_str(&format!("?filters={}", enc(&filters_json(&c.filter)?)));
    }
    let v = api::request(host, "POST", &p, None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    if let Some(d) = v["ContainersDeleted"].as_array() {
        writeln!(out, "Deleted Containers:").map_err(w)?;
        for id in d {
            writeln!(out, "{}", id.as_str().unwrap_or_default()).map_err(w)?;
        }
        writeln!(out).map_err(w)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        crate::units::human_size(v["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    )
    .map_err(w)
}

pub fn system_prune(host: &Host, c: &PruneCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let what = if c.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    let vols = if c.volumes {
        "\n  - all anonymous volumes not used by at least one container"
    } else {
        ""
    };
    if !confirm(
        &format!("WARNING! This will remove:\n  - all stopped containers{vols}\n{what}\n  - unused build cache\n"),
        c.force,
        out,
    )? {
        return Ok(());
    }
    let v = api::request(host, "POST", "/containers/prune", None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    let mut total = v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    if let Some(d) = v["ContainersDeleted"].as_array() {
        writeln!(out, "Deleted Containers:").map_err(w)?;
        for id in d {
            writeln!(out, "{}", id.as_str().unwrap_or_default()).map_err(w)?;
        }
        writeln!(out).map_err(w)?;
    }
    if c.volumes {
        // As docker: anonymous volumes only (named ones need `volume prune -a`).
        let v = api::request(host, "POST", "/volumes/prune", None)
            .and_then(|r| r.json())
            .map_err(daemon)?;
        total += v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
        if let Some(d) = v["VolumesDeleted"].as_array().filter(|d| !d.is_empty()) {
            writeln!(out, "Deleted Volumes:").map_err(w)?;
            for n in d {
                writeln!(out, "{}", n.as_str().unwrap_or_default()).map_err(w)?;
            }
            writeln!(out).map_err(w)?;
        }
    }
    let filters = if c.all {
        format!("?filters={}", enc(r#"{"dangling":{"false":true}}"#))
    } else {
        String::new()
    };
    let v = api::request(host, "POST", &format!("/images/prune{filters}"), None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    total += v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    if let Some(d) = v["ImagesDeleted"].as_array() {
        writeln!(out, "Deleted Images:").map_err(w)?;
        for it in d {
            if let Some(u) = it["Untagged"].as_str() {
                writeln!(out, "untagged: {u}").map_err(w)?;
            }
            if let Some(u) = it["Deleted"].as_str() {
                writeln!(out, "deleted: {u}").map_err(w)?;
            }
        }
        writeln!(out).map_err(w)?;
    }
    // Build cache (issue 4), as docker's system prune.
    let path = if c.all {
        "/build/prune?all=1"
    } else {
        "/build/prune"
    };
    let v = api::request(host, "POST", path, None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    total += v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
    if let Some(d) = v["CachesDeleted"].as_array().filter(|d| !d.is_empty()) {
        writeln!(out, "Deleted build cache objects:").map_err(w)?;
        for id in d {
            writeln!(out, "{}", id.as_str().unwrap_or_default()).map_err(w)?;
        }
        writeln!(out).map_err(w)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        crate::units::human_size(total)
    )
    .map_err(w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn detach_keys_parse_and_filter_like_docker() {
        use super::{parse_detach_keys, EscapeProxy};
        assert_eq!(parse_detach_keys("").unwrap(), vec![0x10, 0x11]);
        assert_eq!(
            parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-[,ctrl-\\,ctrl-_").unwrap(),
            vec![1, b'x', 0, 27, 28, 31]
        );
        for bad in ["ctrl-1", "ctrl-", "ab", "ctrl-A", ","] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
        let keys = [0x10, 0x11];
        let mut p = EscapeProxy {
            keys: &keys,
            held: 0,
        };
        let mut out = Vec::new();
        // A broken sequence is passed on whole, in order.
        assert!(!p.feed(b"a\x10b", &mut out));
        assert_eq!(out, b"a\x10b");
        out.clear();
        // Held across reads, then completed.
        assert!(!p.feed(b"c\x10", &mut out));
        assert_eq!(out, b"c");
        assert!(p.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"c");
        // A repeated first key restarts the match.
        let mut p = EscapeProxy {
            keys: &keys,
            held: 0,
        };
        let mut out = Vec::new();
        assert!(p.feed(b"\x10\x10\x11", &mut out));
        assert_eq!(out, b"\x10");
    }

    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("16m").unwrap(), 16 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64MB").unwrap(), 64 << 20);
        assert!(parse_bytes("x").is_err());
        assert_eq!(parse_duration("200ms").unwrap(), 200_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn flags_to_body() {
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
            ..Default::default()
        };
        let mut b = json!({"Env": ["A=1"]});
        f.apply(&mut b).unwrap();
        assert_eq!(b["HostConfig"]["Memory"], 32 << 20);
        assert_eq!(b["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(b["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
        assert_eq!(b["HostConfig"]["Ulimits"][0]["Hard"], 20);
        assert_eq!(b["Tty"], true);
        assert_eq!(b["OpenStdin"], true);
        assert_eq!(b["Healthcheck"]["Interval"], 1_000_000_000i64);
        assert_eq!(b["Env"][0], "A=1");
    }
}

/// `attach` flags.
#[derive(Debug, Args)]
pub struct AttachCmd {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    container: String,
}

/// `attach`: the container's output (and input, when it has stdin open) until it exits or the
/// detach keys are pressed; exits with the container's status.
pub fn attach(host: &Host, c: &AttachCmd) -> Result<i32, CliError> {
    let info = api::request(
        host,
        "GET",
        &format!("/containers/{}/json", enc(&c.container)),
        None,
    )
    .and_then(|r| r.json())
    .map_err(daemon)?;
    if info["State"]["Running"].as_bool() != Some(true) {
        return Err(CliError::Message(
            "You cannot attach to a stopped container, start it first".into(),
        ));
    }
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !c.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let stream = api::hijack(
        host,
        &format!(
            "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
            stdin as u8
        ),
        None,
    )
    .map_err(daemon)?;
    let keys = parse_detach_keys(&c.detach_keys)?;
    let waiter = spawn_wait(host, &id, "next-exit");
    let detached = interactive(
        host,
        stream,
        tty,
        stdin,
        tty.then(|| format!("/containers/{id}/resize")),
        &keys,
    )?;
    if detached {
        return Ok(0);
    }
    Ok(join_wait(waiter))
}
