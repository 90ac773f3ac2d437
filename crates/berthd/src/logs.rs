//! Logging drivers and `GET /containers/{id}/logs`.
//!
//! Drivers: `json-file` (the shim's log, rotated; `compress` gzips rotated files; `labels`,
//! `env` and `tag` become each entry's `attrs`), `local` (the same files with the `local`
//! driver's defaults: 20 MB, 5 files, compressed), `none` (no log; `logs` refuses as dockerd).
//! Options are checked as dockerd's validators do, with their wording.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use crate::engine::{Container, Events};
use berth_util::url::query_escape;

/// Log drivers containers may use.
pub const DRIVERS: &[&str] = &["json-file", "local", "none"];
/// The log of a CRI container: the CRI format at the kubelet's `log_path` (set by
/// `berthd::cri`, never by a Docker API client).
pub const CRI_DRIVER: &str = "cri";

/// A log driver or option refused; the text is dockerd's.
#[derive(Debug, thiserror::Error)]
pub enum LogOptError {
    #[error("logger: logging mode not supported: {0}")]
    Mode(String),
    #[error("logger: max-buffer-size option is only supported with 'mode=non-blocking'")]
    BufferNeedsNonBlocking,
    #[error("error parsing option max-buffer-size: {0}")]
    BufferSize(#[source] berth_util::units::UnitsError),
    #[error("logger: no log driver named '{0}' is registered")]
    NoDriver(String),
    #[error("unknown log opt '{key}' for log driver local")]
    UnknownLocalOpt { key: String },
    #[error("unknown log opt '{key}' for {driver} log driver")]
    UnknownOpt { driver: String, key: String },
    #[error("compression cannot be enabled when max file count is 1")]
    LocalCompressOneFile,
    #[error("compress cannot be true when max-file is less than 2 or max-size is not set")]
    CompressOneFile,
    #[error("{0}")]
    MaxSize(#[source] berth_util::units::UnitsError),
    #[error("max-size must not be negative")]
    NegativeMaxSize,
    #[error("invalid max-size {0:?}")]
    InvalidMaxSize(String),
    #[error("max-file must not be negative")]
    NegativeMaxFile,
    #[error("max-file cannot be less than 1: {0:?}")]
    InvalidMaxFile(String),
    #[error("strconv.ParseBool: parsing {0:?}: invalid syntax")]
    Compress(String),
}

/// The `--log-opt`s of a file driver (Docker's `LogConfig.Config`), parsed once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LogOpts<'a> {
    /// `blocking` (`""`) or `non-blocking`.
    mode: Option<&'a str>,
    max_buffer_size: Option<&'a str>,
    max_size: Option<&'a str>,
    max_file: Option<&'a str>,
    compress: Option<&'a str>,
    /// Docker's common attributes: label names, variable names, the tag's template.
    labels: Option<&'a str>,
    env: Option<&'a str>,
    tag: Option<&'a str>,
    /// The first key (in order) no file driver takes.
    unknown: Option<&'a str>,
}

impl<'a> LogOpts<'a> {
    fn parse(opts: &'a BTreeMap<String, String>) -> LogOpts<'a> {
        let mut o = LogOpts::default();
        for (k, v) in opts {
            let slot = match k.as_str() {
                "mode" => &mut o.mode,
                "max-buffer-size" => &mut o.max_buffer_size,
                "max-size" => &mut o.max_size,
                "max-file" => &mut o.max_file,
                "compress" => &mut o.compress,
                "labels" => &mut o.labels,
                "env" => &mut o.env,
                "tag" => &mut o.tag,
                _ => {
                    o.unknown.get_or_insert(k);
                    continue;
                }
            };
            *slot = Some(v);
        }
        o
    }
}

/// Checks a log driver and its options as dockerd's `ValidateLogOpts` and the driver's own
/// checks do.
pub fn check_opts(driver: &str, opts: &BTreeMap<String, String>) -> Result<(), LogOptError> {
    if driver == "none" {
        return Ok(());
    }
    let o = LogOpts::parse(opts);
    let mode = o.mode.unwrap_or("");
    if !matches!(mode, "" | "blocking" | "non-blocking") {
        return Err(LogOptError::Mode(mode.to_string()));
    }
    if let Some(v) = o.max_buffer_size {
        if mode != "non-blocking" {
            return Err(LogOptError::BufferNeedsNonBlocking);
        }
        berth_util::units::parse_ram_bytes(v).map_err(LogOptError::BufferSize)?;
    }
    if !DRIVERS.contains(&driver) {
        return Err(LogOptError::NoDriver(driver.to_string()));
    }
    if let Some(key) = o.unknown {
        let key = key.to_string();
        return Err(if driver == "local" {
            LogOptError::UnknownLocalOpt { key }
        } else {
            LogOptError::UnknownOpt {
                driver: driver.to_string(),
                key,
            }
        });
    }
    let r = Rotation::from_opts(driver, &o)?;
    if r.compress && r.max_file < 2 {
        return Err(if driver == "local" {
            LogOptError::LocalCompressOneFile
        } else {
            LogOptError::CompressOneFile
        });
    }
    Ok(())
}

/// A file driver's rotation (the options over the driver's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes; 0 never rotates.
    pub max_size: u64,
    pub max_file: u32,
    pub compress: bool,
}

impl Rotation {
    /// The rotation of `driver` with `opts`.
    pub fn of(driver: &str, opts: &BTreeMap<String, String>) -> Result<Rotation, LogOptError> {
        Rotation::from_opts(driver, &LogOpts::parse(opts))
    }

    fn from_opts(driver: &str, opts: &LogOpts<'_>) -> Result<Rotation, LogOptError> {
        let local = driver == "local";
        let mut r = if local {
            Rotation {
                max_size: 20 << 20,
                max_file: 5,
                compress: true,
            }
        } else {
            Rotation {
                max_size: berth_shim::jsonlog::DEFAULT_MAX_SIZE,
                max_file: berth_shim::jsonlog::DEFAULT_MAX_FILE,
                compress: false,
            }
        };
        if let Some(v) = opts.max_size {
            let n = berth_util::units::parse_ram_bytes(v).map_err(LogOptError::MaxSize)?;
            if n < 0 && (local || v.trim() != "-1") {
                return Err(if local {
                    LogOptError::NegativeMaxSize
                } else {
                    LogOptError::InvalidMaxSize(v.to_string())
                });
            }
            r.max_size = n.max(0) as u64;
        }
        if let Some(v) = opts.max_file {
            r.max_file = match v.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(i64::from(u32::MAX)) as u32,
                Ok(n) if local && n >= 0 => 1,
                Ok(_) if local => return Err(LogOptError::NegativeMaxFile),
                _ => return Err(LogOptError::InvalidMaxFile(v.to_string())),
            };
        }
        if let Some(v) = opts.compress {
            r.compress = go_bool(v).ok_or_else(|| LogOptError::Compress(v.to_string()))?;
        }
        Ok(r)
    }
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A container's log `attrs` (dockerd's `ExtraAttributes` and `tag`), as a JSON object;
/// `None` without any.
pub fn attrs(c: &Container) -> Option<String> {
    let opts = c.host_config.log_config.config.clone().unwrap_or_default();
    let opts = LogOpts::parse(&opts);
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    if let Some(labels) = opts.labels.filter(|l| !l.is_empty()) {
        let have = c.config.labels.clone().unwrap_or_default();
        for l in labels.split(',') {
            if let Some(v) = have.get(l) {
                out.insert(l.to_string(), v.clone());
            }
        }
    }
    if let Some(env) = opts.env.filter(|e| !e.is_empty()) {
        let vars: BTreeMap<&str, &str> = c
            .config
            .env
            .iter()
            .flatten()
            .filter_map(|e| e.split_once('='))
            .collect();
        for k in env.split(',') {
            if let Some(v) = vars.get(k) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    if let Some(t) = opts.tag.filter(|t| !t.is_empty()) {
        out.insert("tag".into(), log_tag(c, t));
    }
    (!out.is_empty()).then(|| serde_json::to_string(&out).unwrap_or_default())
}

/// dockerd's log tag template with its fields (`{{.ID}}`, `{{.FullID}}`, `{{.Name}}`,
/// `{{.ImageID}}`, `{{.ImageFullID}}`, `{{.ImageName}}`, `{{.DaemonName}}`, `{{.Hostname}}`);
/// other text is kept.
fn log_tag(c: &Container, template: &str) -> String {
    let image_hex = c.image.strip_prefix("sha256:").unwrap_or(&c.image);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let fields = [
        ("ID", c.id.chars().take(12).collect::<String>()),
        ("FullID", c.id.clone()),
        ("Name", c.short_name().to_string()),
        ("ImageID", image_hex.chars().take(12).collect()),
        ("ImageFullID", c.image.clone()),
        ("ImageName", c.config.image.clone()),
        ("DaemonName", "docker".to_string()),
        ("Hostname", hostname.trim().to_string()),
    ];
    let mut out = template.to_string();
    for (k, v) in fields {
        for form in [format!("{{{{.{k}}}}}"), format!("{{{{ .{k} }}}}")] {
            out = out.replace(&form, &v);
        }
    }
    out
}

/// The shim's arguments for a container's log driver.
pub fn shim_args(c: &Container) -> Vec<String> {
    let lc = &c.host_config.log_config;
    if lc.kind == "none" {
        return vec!["--no-log".into()];
    }
    if lc.kind == CRI_DRIVER {
        // The kubelet rotates CRI logs itself (`ReopenContainerLog`).
        return ["--log-format", "cri", "--log-max-size", "0"]
            .map(String::from)
            .to_vec();
    }
    let opts = lc.config.clone().unwrap_or_default();
    let Ok(r) = Rotation::of(&lc.kind, &opts) else {
        return vec![];
    };
    let mut args = vec![
        "--log-max-size".to_string(),
        r.max_size.to_string(),
        "--log-max-file".to_string(),
        r.max_file.to_string(),
    ];
    if r.compress {
        args.push("--log-compress".into());
    }
    if let Some(a) = attrs(c) {
        args.push("--log-attrs".into());
        args.push(a);
    }
    args
}

/// Options of a logs request.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    /// `None` = all.
    pub tail: Option<usize>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Multiplexed 8-byte frames (no tty).
    pub framed: bool,
    /// Each line's `attrs` first (`k=v,k2=v2 `).
    pub details: bool,
}

#[derive(Deserialize)]
struct Entry {
    log: String,
    stream: String,
    time: String,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
}

fn format_entry(line: &str, o: &LogOptions) -> Option<Vec<u8>> {
    let e: Entry = serde_json::from_str(line).ok()?;
    let stream = match e.stream.as_str() {
        "stdout" if o.stdout => 1u8,
        "stderr" if o.stderr => 2u8,
        _ => return None,
    };
    if o.since.is_some() || o.until.is_some() {
        let t = crate::util::parse_rfc3339(&e.time)
            .map(|(s, _)| s)
            .unwrap_or(0);
        if o.since.is_some_and(|s| t < s) || o.until.is_some_and(|u| u > 0 && t > u) {
            return None;
        }
    }
    let mut payload = Vec::new();
    if o.timestamps {
        payload.extend_from_slice(e.time.as_bytes());
        payload.push(b' ');
    }
    if o.details {
        let attrs: Vec<String> = e
            .attrs
            .iter()
            .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
            .collect();
        payload.extend_from_slice(attrs.join(",").as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(e.log.as_bytes());
    if !o.framed {
        return Some(payload);
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&berth_shim::protocol::frame_header(stream, payload.len()));
    out.extend_from_slice(&payload);
    Some(out)
}

/// The log files, oldest first (rotated ones may be gzipped: `.N.gz`).
fn files(path: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for n in (1..100).rev() {
        for p in [
            PathBuf::from(format!("{}.{n}.gz", path.display())),
            PathBuf::from(format!("{}.{n}", path.display())),
        ] {
            if p.exists() {
                v.push(p);
            }
        }
    }
    v.push(path.to_path_buf());
    v
}

/// Streams the log into `tx`. Runs blocking file I/O: call from `spawn_blocking`.
pub fn stream(
    path: PathBuf,
    o: LogOptions,
    events: Option<(watch::Receiver<Events>, u64)>,
    tx: mpsc::Sender<Bytes>,
) {
    let (mut events, seen) = match events {
        Some((rx, seen)) => (Some(rx), seen),
        None => (None, 0),
    };
    // Followed through one open descriptor: the container's directory may be renamed or
    // deleted (removal) before the last round, and rotation is seen as a new file at `path`.
    let mut current = std::fs::File::open(&path).ok();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0u64;
    for f in files(&path) {
        let opened = if f == path {
            current
                .as_ref()
                .map(|c| c.try_clone())
                .unwrap_or_else(|| Err(std::io::Error::from(std::io::ErrorKind::NotFound)))
        } else {
            std::fs::File::open(&f)
        };
        let Ok(file) = opened else {
            continue;
        };
        let gz = f.extension().is_some_and(|e| e == "gz");
        let mut r: BufReader<Box<dyn Read>> = if gz {
            BufReader::new(Box::new(flate2::read::GzDecoder::new(file)))
        } else {
            BufReader::new(Box::new(file))
        };
        let mut line = String::new();
        let mut consumed = 0u64;
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !line.ends_with('\n') {
                        break;
                    }
                    consumed += n as u64;
                    if let Some(c) = format_entry(line.trim_end(), &o) {
                        chunks.push(c);
                    }
                }
            }
        }
        if f == path {
            pos = consumed;
        }
    }
    let skip = o.tail.map(|t| chunks.len().saturating_sub(t)).unwrap_or(0);
    let mut buf = Vec::new();
    for c in chunks.into_iter().skip(skip) {
        buf.extend_from_slice(&c);
    }
    if !buf.is_empty() && tx.blocking_send(Bytes::from(buf)).is_err() {
        return;
    }
    if !o.follow {
        return;
    }
    let Some(ev) = events.as_mut() else { return };
    let wake = LogWake::new(&path);
    let mut last_round = false;
    loop {
        let done = {
            let e = ev.borrow_and_update();
            e.removed || e.exits > seen
        };
        // Read whatever is new.
        let at_path = std::fs::metadata(&path).ok();
        let rotated = match (&current, &at_path) {
            (Some(f), Some(m)) => f.metadata().is_ok_and(|fm| fm.ino() != m.ino()),
            (None, Some(_)) => true,
            _ => false,
        };
        if rotated {
            // A rotation: what was written to the old file after our last read is in `path.1`
            // now; Docker loses it too. Continue with the new file from its start.
            if let Ok(f) = std::fs::File::open(&path) {
                current = Some(f);
                pos = 0;
            }
        }
        if let Some(file) = current.as_mut() {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0; // truncated
            }
            if len > pos && file.seek(SeekFrom::Start(pos)).is_ok() {
                let mut data = Vec::new();
                let _ = (&mut *file).take(len - pos).read_to_end(&mut data);
                let complete = data
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                pos += complete as u64;
                let mut out = Vec::new();
                for l in String::from_utf8_lossy(&data[..complete]).lines() {
                    if let Some(c) = format_entry(l, &o) {
                        out.extend_from_slice(&c);
                    }
                }
                if !out.is_empty() && tx.blocking_send(Bytes::from(out)).is_err() {
                    return;
                }
            }
        }
        if last_round {
            return;
        }
        if done {
            last_round = true;
            continue;
        }
        if tx.is_closed() {
            return;
        }
        match &wake {
            Some(w) => w.wait(FOLLOW_TICK),
            None => std::thread::sleep(FOLLOW_TICK),
        }
    }
}

/// How often a follower looks at the container's state (exit, removal) and its client when
/// the log does not change.
const FOLLOW_TICK: Duration = Duration::from_millis(100);

/// Wakes a follower as soon as the log's directory changes (a line written, a rotation):
/// `logs -f` shows a line when it is written, not up to a polling interval later.
struct LogWake(std::os::fd::OwnedFd);

impl LogWake {
    fn new(path: &Path) -> Option<Self> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        let flags = WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO;
        inotify::add_watch(&fd, path.parent()?, flags).ok()?;
        Some(Self(fd))
    }

    /// Waits for a change or `timeout`, then drains the events.
    fn wait(&self, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let ts = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let _ = rustix::event::poll(&mut fds, Some(&ts));
        let mut buf = [0u8; 4096];
        while matches!(rustix::io::read(&self.0, &mut buf), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_parse_once_into_their_fields() {
        let m = map(&[
            ("compress", "true"),
            ("labels", "app"),
            ("zzz", "1"),
            ("aaa", "2"),
            ("max-size", "1m"),
            ("tag", "{{.Name}}"),
        ]);
        let o = LogOpts::parse(&m);
        assert_eq!(
            o,
            LogOpts {
                compress: Some("true"),
                labels: Some("app"),
                max_size: Some("1m"),
                tag: Some("{{.Name}}"),
                unknown: Some("aaa"),
                ..Default::default()
            }
        );
    }

    #[test]
    fn checks_in_dockerds_order_and_wording() {
        let err = |driver: &str, kv: &[(&str, &str)]| {
            check_opts(driver, &map(kv)).unwrap_err().to_string()
        };
        assert!(check_opts("none", &map(&[("x", "1")])).is_ok());
        assert_eq!(
            err("json-file", &[("mode", "bogus"), ("x", "1")]),
            "logger: logging mode not supported: bogus"
        );
        assert_eq!(
            err("json-file", &[("max-buffer-size", "1m")]),
            "logger: max-buffer-size option is only supported with 'mode=non-blocking'"
        );
        assert!(check_opts(
            "json-file",
            &map(&[("mode", "non-blocking"), ("max-buffer-size", "1m")])
        )
        .is_ok());
        assert_eq!(
            err("syslog", &[("x", "1")]),
            "logger: no log driver named 'syslog' is registered"
        );
        assert_eq!(
            err("local", &[("y", "1"), ("x", "1")]),
            "unknown log opt 'x' for log driver local"
        );
        assert_eq!(
            err("json-file", &[("x", "1"), ("max-file", "0")]),
            "unknown log opt 'x' for json-file log driver"
        );
        assert_eq!(
            err("json-file", &[("max-file", "0")]),
            "max-file cannot be less than 1: \"0\""
        );
        assert_eq!(
            err("json-file", &[("max-file", "1"), ("compress", "true")]),
            "compress cannot be true when max-file is less than 2 or max-size is not set"
        );
        assert_eq!(
            err("local", &[("max-file", "1")]),
            "compression cannot be enabled when max file count is 1"
        );
        assert_eq!(
            err("json-file", &[("compress", "yes")]),
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        for ok in [
            &[("labels", "a"), ("env", "B"), ("tag", "t")][..],
            &[("max-size", "1k"), ("max-file", "3"), ("compress", "1")][..],
        ] {
            assert!(check_opts("json-file", &map(ok)).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn rotations_over_the_drivers_defaults() {
        let local = Rotation::of("local", &BTreeMap::new()).unwrap();
        assert_eq!(
            local,
            Rotation {
                max_size: 20 << 20,
                max_file: 5,
                compress: true
            }
        );
        let r = Rotation::of(
            "json-file",
            &map(&[("max-size", "1k"), ("max-file", "3"), ("compress", "true")]),
        )
        .unwrap();
        assert_eq!(
            r,
            Rotation {
                max_size: 1024,
                max_file: 3,
                compress: true
            }
        );
        assert_eq!(
            Rotation::of("local", &map(&[("max-file", "0")]))
                .unwrap()
                .max_file,
            1
        );
        assert!(Rotation::of("local", &map(&[("max-size", "-1")])).is_err());
    }
}
