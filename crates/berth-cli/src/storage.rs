//! Storage commands over the daemon's Engine API: `volume create|ls|inspect|rm|prune`, `cp`
//! (both ways, `-a`, `-L`, `-` for a tar on stdin/stdout) and the `run` flags `-v`, `--mount`,
//! `--tmpfs`, `--volumes-from` ([`StorageFlags`]).
//!
//! `cp` streams: the archive is read from (or written to) the socket as it is produced, with
//! HTTP chunked encoding for uploads, never held in memory.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api::{self, enc, ApiError, Host};
use crate::commands::CliError;

use crate::containers::daemon;

fn ioerr(e: io::Error) -> CliError {
    CliError::Message(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// run flags

/// Storage flags of `run` (flattened into `RunCmd`).
#[derive(Debug, Default, Args)]
pub struct StorageFlags {
    /// Bind mount a volume (`name:/path[:opts]`, `/host:/path[:opts]`, `/path`)
    #[arg(short = 'v', long = "volume", value_name = "list")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (`type=bind|volume|tmpfs,…`)
    #[arg(long = "mount", value_name = "mount")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (`/path[:opts]`)
    #[arg(long = "tmpfs", value_name = "list")]
    pub tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s) (`name[:ro|rw]`)
    #[arg(long = "volumes-from", value_name = "list")]
    pub volumes_from: Vec<String>,
}

impl StorageFlags {
    /// Adds the flags to a container create body (as the docker CLI does: `-v` with a
    /// source goes to `HostConfig.Binds`, without one to `Config.Volumes`).
    pub fn apply(&self, body: &mut Value) -> Result<(), CliError> {
        let mut binds = Vec::new();
        let mut vols = serde_json::Map::new();
        for v in &self.volume {
            if v.contains(':') {
                binds.push(Value::String(v.clone()));
            } else {
                vols.insert(v.clone(), json!({}));
            }
        }
        if !binds.is_empty() {
            body["HostConfig"]["Binds"] = Value::Array(binds);
        }
        if !vols.is_empty() {
            body["Volumes"] = Value::Object(vols);
        }
        if !self.mount.is_empty() {
            let ms = self
                .mount
                .iter()
                .map(|m| parse_mount_flag(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(CliError::Usage)?;
            body["HostConfig"]["Mounts"] = Value::Array(ms);
        }
        if !self.tmpfs.is_empty() {
            let mut t = serde_json::Map::new();
            for s in &self.tmpfs {
                let (p, o) = s.split_once(':').unwrap_or((s, ""));
                t.insert(p.to_string(), Value::String(o.to_string()));
            }
            body["HostConfig"]["Tmpfs"] = Value::Object(t);
        }
        if !self.volumes_from.is_empty() {
            body["HostConfig"]["VolumesFrom"] = json!(self.volumes_from);
        }
        Ok(())
    }
}

fn parse_size(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let mul: i64 = match unit.trim_end_matches('b').trim_end_matches('i') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("invalid size: '{s}'")),
            };
            (&s[..i], mul)
        }
        None => (s, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    Ok((n * mul as f64) as i64)
}

/// Docker's `--mount` syntax (csv of key=value) to a `mount.Mount`.
pub fn parse_mount_flag(spec: &str) -> Result<Value, String> {
    let mut m = json!({"Type": "volume"});
    let mut bind = serde_json::Map::new();
    let mut vol = serde_json::Map::new();
    let mut tmpfs = serde_json::Map::new();
    let mut vopts = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let truthy = |v: &Option<String>| -> Result<bool, String> {
            match v.as_deref() {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(o) => Err(format!("invalid value for {k}: {o}")),
            }
        };
        let need = |v: &Option<String>| -> Result<String, String> {
            v.clone()
                .ok_or_else(|| format!("invalid field '{field}' must be a key=value pair"))
        };
        match k.as_str() {
            "type" => m["Type"] = json!(need(&v)?),
            "source" | "src" => m["Source"] = json!(need(&v)?),
            "target" | "dst" | "destination" => m["Target"] = json!(need(&v)?),
            "readonly" | "ro" => m["ReadOnly"] = json!(truthy(&v)?),
            "consistency" => m["Consistency"] = json!(need(&v)?),
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(need(&v)?));
            }
            "bind-nonrecursive" => {
                bind.insert("NonRecursive".into(), json!(truthy(&v)?));
            }
            "bind-create-mountpoint" => {
                bind.insert("CreateMountpoint".into(), json!(truthy(&v)?));
            }
            "volume-nocopy" => {
                vol.insert("NoCopy".into(), json!(truthy(&v)?));
            }
            "volume-subpath" => {
                vol.insert("Subpath".into(), json!(need(&v)?));
            }
            "volume-label" => {
                let kv = need(&v)?;
                let (lk, lv) = kv.split_once('=').unwrap_or((&kv, ""));
                labels.insert(lk.into(), json!(lv));
            }
            "volume-driver" => {
                vol.insert("DriverConfig".into(), json!({"Name": need(&v)?}));
            }
            "volume-opt" => {
                let kv = need(&v)?;
                let (ok, ov) = kv.split_once('=').unwrap_or((&kv, ""));
                vopts.insert(ok.into(), json!(ov));
            }
            "tmpfs-size" => {
                tmpfs.insert("SizeBytes".into(), json!(parse_size(&need(&v)?)?));
            }
            "tmpfs-mode" => {
                let s = need(&v)?;
                let mode = u32::from_str_radix(&s, 8)
                    .map_err(|_| format!("invalid value for tmpfs-mode: {s}"))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            _ => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    if !labels.is_empty() {
        vol.insert("Labels".into(), Value::Object(labels));
    }
    if !vopts.is_empty() {
        let dc = vol
            .entry("DriverConfig")
            .or_insert_with(|| json!({"Name": "local"}));
        dc["Options"] = Value::Object(vopts);
    }
    if !bind.is_empty() {
        m["BindOptions"] = Value::Object(bind);
    }
    if !vol.is_empty() {
        m["VolumeOptions"] = Value::Object(vol);
    }
    if !tmpfs.is_empty() {
        m["TmpfsOptions"] = Value::Object(tmpfs);
    }
    if m["Target"].is_null() {
        return Err("target is required".into());
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// volume

/// `volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(VolumeCreateCmd),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(VolumeLsCmd),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectCmd),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(VolumeRmCmd),
    /// Remove unused local volumes
    Prune(VolumePruneCmd),
}

/// `volume create` flags.
#[derive(Debug, Args)]
pub struct VolumeCreateCmd {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// The volume name (generated when omitted)
    pub name: Option<String>,
}

/// `volume ls` flags.
#[derive(Debug, Args)]
pub struct VolumeLsCmd {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// `volume inspect` flags.
#[derive(Debug, Args)]
pub struct VolumeInspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume rm` flags.
#[derive(Debug, Args)]
pub struct VolumeRmCmd {
    /// Do not error when a volume does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume prune` flags.
#[derive(Debug, Args)]
pub struct VolumePruneCmd {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

fn kv_map(items: &[String]) -> serde_json::Map<String, Value> {
    items
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), Value::String(v.to_string()))
        })
        .collect()
}

fn filters_json(items: &[String], extra: &[(&str, &str)]) -> String {
    let mut m: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut add = |k: &str, v: &str| {
        let e = m.entry(k.to_string()).or_insert_with(|| json!({}));
        e[v] = json!(true);
    };
    for f in items {
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        add(k, v);
    }
    for (k, v) in extra {
        add(k, v);
    }
    Value::Object(m).to_string()
}

fn templated(format: &str, v: &Value) -> Result<String, CliError> {
    let t = crate::template::Template::parse(format)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let data = crate::template::Value::from_json_str(&v.to_string())
        .map_err(|e| CliError::Message(format!("template: {e}")))?;
    t.execute(&data)
        .map_err(|e| CliError::Message(format!("template: {}", e.0)))
}

/// Runs a `volume` subcommand.
pub fn volume(
    host: &Host,
    cmd: &VolumeCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, s: &str| writeln!(out, "{s}").map_err(ioerr);
    match cmd {
        VolumeCommand::Create(c) => {
            let body = json!({
                "Name": c.name.clone().unwrap_or_default(),
                "Driver": c.driver,
                "Labels": kv_map(&c.label),
                "DriverOpts": kv_map(&c.opt),
            });
            let v = api::request(host, "POST", "/volumes/create", Some(&body))
                .map_err(daemon)?
                .json()
                .map_err(daemon)?;
            w(out, v["Name"].as_str().unwrap_or_default())
        }
        VolumeCommand::Ls(c) => {
            let path = if c.filter.is_empty() {
                "/volumes".to_string()
            } else {
                format!("/volumes?filters={}", enc(&filters_json(&c.filter, &[])))
            };
            let v = api::request(host, "GET", &path, None)
                .map_err(daemon)?
                .json()
                .map_err(daemon)?;
            let mut vols: Vec<Value> = v["Volumes"].as_array().cloned().unwrap_or_default();
            vols.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
            if c.quiet {
                for v in &vols {
                    w(out, v["Name"].as_str().unwrap_or_default())?;
                }
                return Ok(());
            }
            let fmt = c
                .format
                .clone()
                .unwrap_or_else(|| "table {{.Driver}}\t{{.Name}}".into());
            let f = crate::format::parse(&fmt, "table {{.Driver}}\t{{.Name}}")
                .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
            let header = crate::format::row(&[
                ("Driver", "DRIVER".into()),
                ("Name", "VOLUME NAME".into()),
                ("Mountpoint", "MOUNTPOINT".into()),
                ("Scope", "SCOPE".into()),
                ("Labels", "LABELS".into()),
            ]);
            let rows: Vec<_> = vols
                .iter()
                .map(|v| {
                    let labels = v["Labels"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    crate::format::row(&[
                        ("Driver", v["Driver"].as_str().unwrap_or("").into()),
                        ("Name", v["Name"].as_str().unwrap_or("").into()),
                        ("Mountpoint", v["Mountpoint"].as_str().unwrap_or("").into()),
                        ("Scope", v["Scope"].as_str().unwrap_or("").into()),
                        ("Labels", labels),
                    ])
                })
                .collect();
            let s = f
                .render(&header, &rows)
                .map_err(|e| CliError::Message(format!("template: {}", e.0)))?;
            out.write_all(s.as_bytes()).map_err(ioerr)
        }
        VolumeCommand::Inspect(c) => {
            let mut all = Vec::new();
            let mut failed = false;
            for n in &c.names {
                match api::request(host, "GET", &format!("/volumes/{}", enc(n)), None)
                    .and_then(|r| r.json())
                {
                    Ok(v) => {
                        if let Some(f) = &c.format {
                            w(out, &templated(f, &v)?)?;
                        } else {
                            all.push(v);
                        }
                    }
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{}", daemon(e));
                    }
                }
            }
            if c.format.is_none() {
                let s = serde_json::to_string_pretty(&Value::Array(all))
                    .map_err(|e| CliError::Message(e.to_string()))?;
                w(out, &s.replace("  ", "    "))?;
            }
            if failed {
                return Err(CliError::Exit(1));
            }
            Ok(())
        }
        VolumeCommand::Rm(c) => {
            let mut failed = false;
            for n in &c.names {
                let p = format!("/volumes/{}?force={}", enc(n), c.force as u8);
                match api::request(host, "DELETE", &p, None) {
                    Ok(_) => w(out, n)?,
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{}", daemon(e));
                    }
                }
            }
            if failed {
                return Err(CliError::Exit(1));
            }
            Ok(())
        }
        VolumeCommand::Prune(c) => {
            if !c.force {
                let what = if c.all {
                    "all volumes not used by at least one container"
                } else {
                    "all anonymous local volumes not used by at least one container"
                };
                write!(
                    out,
                    "WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
                )
                .map_err(ioerr)?;
                out.flush().map_err(ioerr)?;
                let mut line = String::new();
                input.read_line(&mut line).map_err(ioerr)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(());
                }
            }
            let extra: Vec<(&str, &str)> = if c.all { vec![("all", "true")] } else { vec![] };
            let p = format!(
                "/volumes/prune?filters={}",
                enc(&filters_json(&c.filter, &extra))
            );
            let v = api::request(host, "POST", &p, None)
                .map_err(daemon)?
                .json()
                .map_err(daemon)?;
            let names = v["VolumesDeleted"].as_array().cloned().unwrap_or_default();
            if !names.is_empty() {
                w(out, "Deleted Volumes:")?;
                for n in &names {
                    w(out, n.as_str().unwrap_or_default())?;
                }
                w(out, "")?;
            }
            let space = v["SpaceReclaimed"].as_f64().unwrap_or(0.0);
            w(
                out,
                &format!("Total reclaimed space: {}", crate::units::human_size(space)),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// streaming HTTP for archives

struct ChunkedReader<R: BufRead> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.r.read_line(&mut line)?;
            }
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive stream cut short",
            ));
        }
        self.left -= got;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf)?;
        }
        Ok(got)
    }
}

struct ChunkedWriter<W: Write>(W);

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

struct Head {
    code: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn read_head(r: &mut impl BufRead) -> Result<Head, ApiError> {
    let (code, headers) = api::read_head(r)?;
    Ok(Head { code, headers })
}

fn body_reader<'a>(r: BufReader<UnixStream>, h: &Head) -> Box<dyn Read + 'a> {
    if h.get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        Box::new(ChunkedReader {
            r,
            left: 0,
            done: false,
        })
    } else if let Some(n) = h.get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Box::new(r.take(n))
    } else {
        Box::new(r)
    }
}

fn error_from(code: u16, mut body: Box<dyn Read + '_>) -> ApiError {
    let mut b = Vec::new();
    let _ = body.read_to_end(&mut b);
    let message = serde_json::from_slice::<Value>(&b)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&b).trim().to_string());
    ApiError::Status { code, message }
}

/// The path stat Docker sends in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Clone, Default)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub link_target: String,
}

impl PathStat {
    pub fn is_dir(&self) -> bool {
        self.mode & (1 << 31) != 0
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & (1 << 27) != 0
    }
}

fn b64decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for ch in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in ch.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..ch.len().saturating_sub(1)]);
    }
    Some(out)
}

fn parse_stat(h: &Head) -> PathStat {
    let Some(raw) = h.get("x-docker-container-path-stat") else {
        return PathStat::default();
    };
    let v: Value = b64decode(raw)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    PathStat {
        name: v["name"].as_str().unwrap_or_default().into(),
        size: v["size"].as_i64().unwrap_or(0),
        mode: v["mode"].as_u64().unwrap_or(0) as u32,
        link_target: v["linkTarget"].as_str().unwrap_or_default().into(),
    }
}

fn connect(host: &Host) -> Result<UnixStream, ApiError> {
    host.connect()
}

/// `HEAD /containers/{id}/archive`: the stat of a path (`None` when it does not exist).
pub fn stat_path(host: &Host, ctr: &str, path: &str) -> Result<Option<PathStat>, ApiError> {
    let mut s = connect(host)?;
    write!(
        s,
        "HEAD /v1.44/containers/{}/archive?path={} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n",
        enc(ctr),
        enc(path)
    )?;
    let mut r = BufReader::new(s);
    let h = read_head(&mut r)?;
    match h.code {
        200 => Ok(Some(parse_stat(&h))),
        404 => {
            // HEAD has no body: distinguish a missing container from a missing path.
            api::request(host, "GET", &format!("/containers/{}/json", enc(ctr)), None)?;
            Ok(None)
        }
        code => Err(ApiError::Status {
            code,
            message: format!("stat {path}: status {code}"),
        }),
    }
}

/// `GET /containers/{id}/archive`: the stat and a reader of the tar.
pub fn get_archive(
    host: &Host,
    ctr: &str,
    path: &str,
) -> Result<(PathStat, Box<dyn Read>), ApiError> {
    let mut s = connect(host)?;
    write!(
        s,
        "GET /v1.44/containers/{}/archive?path={} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n",
        enc(ctr),
        enc(path)
    )?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let h = read_head(&mut r)?;
    let body = body_reader(r, &h);
    if h.code >= 400 {
        return Err(error_from(h.code, body));
    }
    Ok((parse_stat(&h), body))
}

/// `PUT /containers/{id}/archive`: `produce` writes the tar (sent chunked).
pub fn put_archive(
    host: &Host,
    ctr: &str,
    path: &str,
    copy_uid_gid: bool,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), ApiError> {
    let s = connect(host)?;
    let mut w = io::BufWriter::with_capacity(256 * 1024, s.try_clone()?);
    write!(
        w,
        "PUT /v1.44/containers/{}/archive?path={}&noOverwriteDirNonDir=1&copyUIDGID={} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n",
        enc(ctr),
        enc(path),
        copy_uid_gid as u8
    )?;
    let res = {
        let mut cw = io::BufWriter::with_capacity(512 * 1024, ChunkedWriter(&mut w));
        let r = produce(&mut cw);
        r.and_then(|_| cw.flush())
    };
    // The daemon may answer early (an error) and close: read its answer in any case.
    if res.is_ok() {
        w.write_all(b"0\r\n\r\n")?;
        w.flush()?;
    }
    // (No half-close: the server would drop the connection before answering.)
    drop(w);
    let mut r = BufReader::new(s);
    let h = read_head(&mut r)?;
    let body = body_reader(r, &h);
    if h.code >= 400 {
        return Err(error_from(h.code, body));
    }
    res.map_err(ApiError::Io)
}

// ---------------------------------------------------------------------------------------------
// cp

/// `cp` flags.
#[derive(Debug, Args)]
pub struct CpCmd {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// SRC: `CONTAINER:SRC_PATH`, a local path or `-`
    pub src: String,
    /// DEST: `CONTAINER:DEST_PATH`, a local path or `-`
    pub dest: String,
}

fn split_container(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (c, p) = arg.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

/// Whether the path names a directory's content (`…/.`) or ends with a separator.
fn ends_with_sep(p: &str) -> bool {
    p.ends_with('/')
}
fn ends_with_dot(p: &str) -> bool {
    p == "." || p.ends_with("/.")
}

fn parent_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    match t.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((d, _)) => d.into(),
        None => ".".into(),
    }
}

fn base_of(p: &str) -> String {
    let t = p.trim_end_matches('/');
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// `cp`: copies between a container and the local filesystem.
pub fn cp(
    host: &Host,
    c: &CpCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let _ = (c.quiet, &err);
    match (split_container(&c.src), split_container(&c.dest)) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "copying between containers is not supported".into(),
        )),
        (None, None) => Err(CliError::Usage(
            "must specify at least one container source".into(),
        )),
        (Some((ctr, path)), None) => from_container(host, c, ctr, path, out),
        (None, Some((ctr, path))) => to_container(host, c, ctr, path),
    }
}

fn abs(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

fn from_container(
    host: &Host,
    c: &CpCmd,
    ctr: &str,
    path: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut path = abs(path);
    if c.follow_link {
        if let Some(st) = stat_path(host, ctr, &path).map_err(daemon)? {
            if st.is_symlink() && !st.link_target.is_empty() {
                path = st.link_target;
            }
        }
    }
    let (stat, mut tar) = get_archive(host, ctr, &path).map_err(daemon)?;
    if c.dest == "-" {
        io::copy(&mut tar, out).map_err(ioerr)?;
        return out.flush().map_err(ioerr);
    }
    // Where the archive's top entry goes (Docker's rules).
    let dest = Path::new(&c.dest);
    let top = if ends_with_dot(&path) {
        ".".to_string()
    } else {
        stat.name.clone()
    };
    let dest_is_dir = dest.is_dir();
    if ends_with_sep(&c.dest) && !dest_is_dir && !stat.is_dir() {
        return Err(CliError::Message(format!(
            "destination directory \"{}\" does not exist",
            c.dest
        )));
    }
    let (root, rename_to): (PathBuf, Option<String>) = if ends_with_dot(&path) {
        if !dest_is_dir {
            std::fs::create_dir_all(dest).map_err(ioerr)?;
        }
        (dest.to_path_buf(), None)
    } else if dest_is_dir {
        (dest.to_path_buf(), None)
    } else {
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(CliError::Message(format!(
                "destination directory \"{}\" does not exist",
                parent.display()
            )));
        }
        (
            parent.to_path_buf(),
            Some(
                dest.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        )
    };
    extract_local(&mut tar, &root, &top, rename_to.as_deref()).map_err(ioerr)
}

/// Extracts a tar from the daemon below `root`, renaming its top entry `top` to `rename`.
/// Paths are checked component by component (no `..`, no absolute paths, no symlinked parents).
fn extract_local(r: &mut dyn Read, root: &Path, top: &str, rename: Option<&str>) -> io::Result<()> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    let mut dirs = Vec::new();
    for e in a.entries()? {
        let mut e = e?;
        let p = e.path()?.into_owned();
        let mut comps: Vec<std::ffi::OsString> = Vec::new();
        for comp in p.components() {
            match comp {
                Component::Normal(n) => comps.push(n.to_os_string()),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::other(format!(
                        "refusing archive entry {}",
                        p.display()
                    )))
                }
            }
        }
        if top != "." {
            if let (Some(first), Some(new)) = (comps.first_mut(), rename) {
                if first.to_string_lossy() == top {
                    *first = new.into();
                }
            }
        }
        if comps.is_empty() {
            continue;
        }
        let mut full = root.to_path_buf();
        for (i, comp) in comps.iter().enumerate() {
            full.push(comp);
            if i + 1 < comps.len() {
                match std::fs::symlink_metadata(&full) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(io::Error::other(format!(
                            "refusing to write through the symlink {}",
                            full.display()
                        )))
                    }
                    Ok(_) => {}
                    Err(_) => std::fs::create_dir_all(&full)?,
                }
            }
        }
        if e.header().entry_type() == tar::EntryType::Link {
            // Hard links name another entry of this archive: map it the same way.
            if let Some(t) = e.link_name()? {
                let mut tc: Vec<std::ffi::OsString> = t
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        _ => None,
                    })
                    .collect();
                if let (Some(first), Some(new)) = (tc.first_mut(), rename) {
                    if top != "." && first.to_string_lossy() == top {
                        *first = new.into();
                    }
                }
                let target: PathBuf = tc.iter().fold(root.to_path_buf(), |p, c| p.join(c));
                let _ = std::fs::remove_file(&full);
                std::fs::hard_link(&target, &full)?;
                continue;
            }
        }
        if e.header().entry_type() == tar::EntryType::Directory {
            if let Ok(m) = std::fs::symlink_metadata(&full) {
                if !m.is_dir() {
                    std::fs::remove_file(&full)?;
                }
            }
            std::fs::create_dir_all(&full)?;
            dirs.push((full, e.header().mode()?, e.header().mtime()?));
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(&full) {
            if m.is_dir() {
                std::fs::remove_dir_all(&full)?;
            }
        }
        e.unpack(&full)?;
    }
    // Directory modes and times last (children were written into them).
    for (d, mode, mtime) in dirs.into_iter().rev() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        if let Ok(f) = std::fs::File::open(&d) {
            let _ = f.set_modified(t);
        }
    }
    Ok(())
}

fn to_container(host: &Host, c: &CpCmd, ctr: &str, path: &str) -> Result<(), CliError> {
    let dest = abs(path);
    if c.src == "-" {
        // A tar on stdin is extracted into the destination directory as is.
        let stdin = io::stdin();
        return put_archive(host, ctr, &dest, c.archive, |w| {
            io::copy(&mut stdin.lock(), w).map(drop)
        })
        .map_err(daemon);
    }
    let src = PathBuf::from(&c.src);
    let smeta = if c.follow_link {
        std::fs::metadata(&src)
    } else {
        std::fs::symlink_metadata(&src)
    }
    .map_err(|e| CliError::Message(format!("lstat {}: {e}", src.display())))?;
    let dst_stat = stat_path(host, ctr, &dest).map_err(daemon)?;
    let src_contents = ends_with_dot(&c.src);
    // (the directory to extract into, the archive name of the source's top entry)
    let (extract_dir, top): (String, String) = match &dst_stat {
        Some(st) if st.is_dir() => (
            dest.clone(),
            if src_contents {
                ".".into()
            } else {
                base_of(&c.src)
            },
        ),
        Some(_) => {
            if smeta.is_dir() {
                return Err(CliError::Message(format!(
                    "cannot copy directory to file: \"{dest}\" is not a directory"
                )));
            }
            (parent_of(&dest), base_of(&dest))
        }
        None => {
            if ends_with_sep(&dest) && !smeta.is_dir() {
                return Err(CliError::Message(format!(
                    "Error response from daemon: Could not find the file {dest} in container {ctr}"
                )));
            }
            (parent_of(&dest), base_of(&dest))
        }
    };
    let keep_owner = c.archive;
    let follow = c.follow_link;
    put_archive(host, ctr, &extract_dir, c.archive, move |w| {
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        let mut links = std::collections::HashMap::new();
        let top_path = if top == "." {
            PathBuf::new()
        } else {
            PathBuf::from(&top)
        };
        add_local(
            &mut b, &src, &top_path, keep_owner, follow, &mut links, true,
        )?;
        b.finish()
    })
    .map_err(daemon)
}

fn add_local(
    b: &mut tar::Builder<&mut dyn Write>,
    p: &Path,
    name: &Path,
    keep_owner: bool,
    follow_top: bool,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
    top: bool,
) -> io::Result<()> {
    let m = if top && follow_top {
        std::fs::metadata(p)?
    } else {
        std::fs::symlink_metadata(p)?
    };
    let mut h = tar::Header::new_gnu();
    h.set_mode(m.mode() & 0o7777);
    h.set_mtime(m.mtime().max(0) as u64);
    if keep_owner {
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
    } else {
        h.set_uid(0);
        h.set_gid(0);
    }
    h.set_size(0);
    let ft = m.file_type();
    let is_root_name = name.as_os_str().is_empty();
    if !ft.is_dir() && m.nlink() > 1 {
        if let Some(first) = links.get(&(m.dev(), m.ino())) {
            h.set_entry_type(tar::EntryType::Link);
            return b.append_link(&mut h, name, first);
        }
        links.insert((m.dev(), m.ino()), name.to_path_buf());
    }
    if ft.is_dir() {
        if !is_root_name {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, name, io::empty())?;
        }
        let mut entries: Vec<_> = std::fs::read_dir(p)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            add_local(
                b,
                &e.path(),
                &name.join(e.file_name()),
                keep_owner,
                false,
                links,
                false,
            )?;
        }
        Ok(())
    } else if ft.is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        let t = std::fs::read_link(p)?;
        b.append_link(&mut h, name, t)
    } else if ft.is_file() {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(m.len());
        let f = std::fs::File::open(p)?;
        b.append_data(&mut h, name, f.take(m.len()))
    } else {
        // Devices, fifos and sockets are not copied.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let m =
            parse_mount_flag("type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(m["Type"], "bind");
        assert_eq!(m["Source"], "/a");
        assert_eq!(m["ReadOnly"], true);
        assert_eq!(m["BindOptions"]["Propagation"], "rslave");
        let m =
            parse_mount_flag("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!(m["TmpfsOptions"]["SizeBytes"], 1 << 20);
        assert_eq!(m["TmpfsOptions"]["Mode"], 0o1770);
        let m = parse_mount_flag(
            "source=v,target=/v,volume-nocopy,volume-label=a=b,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
        )
        .unwrap();
        assert_eq!(m["Type"], "volume");
        assert_eq!(m["VolumeOptions"]["NoCopy"], true);
        assert_eq!(m["VolumeOptions"]["Labels"]["a"], "b");
        assert_eq!(
            m["VolumeOptions"]["DriverConfig"]["Options"]["type"],
            "tmpfs"
        );
        assert!(parse_mount_flag("type=bind,src=/a").is_err());
        assert!(parse_mount_flag("target=/a,bogus=1").is_err());
    }

    #[test]
    fn storage_flags_apply() {
        let f = StorageFlags {
            volume: vec!["/anon".into(), "v:/data:ro".into()],
            tmpfs: vec!["/run:size=1m".into()],
            volumes_from: vec!["other:ro".into()],
            mount: vec![],
        };
        let mut body = json!({"HostConfig": {}});
        f.apply(&mut body).unwrap();
        assert_eq!(body["Volumes"], json!({"/anon": {}}));
        assert_eq!(body["HostConfig"]["Binds"], json!(["v:/data:ro"]));
        assert_eq!(body["HostConfig"]["Tmpfs"], json!({"/run": "size=1m"}));
        assert_eq!(body["HostConfig"]["VolumesFrom"], json!(["other:ro"]));
    }

    #[test]
    fn container_args_and_base64() {
        assert_eq!(split_container("c1:/x"), Some(("c1", "/x")));
        assert_eq!(split_container("/a:b"), None);
        assert_eq!(split_container("./c:d"), None);
        assert_eq!(split_container("-"), None);
        assert_eq!(b64decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64decode("aGkh").unwrap(), b"hi!");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(base_of("/a/b/"), "b");
    }
}
