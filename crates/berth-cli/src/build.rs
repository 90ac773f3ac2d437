//! `berth build` and `berth builder prune` through berthd's `POST /build` and
//! `POST /build/prune`.
//!
//! The context is sent as a plain tar made here, honouring `.dockerignore` as the docker CLI
//! does (the Dockerfile and `.dockerignore` are always sent). A Dockerfile from stdin or from
//! outside the context travels in the tar under a generated name.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::api::{self, ApiError, Host};
use crate::commands::CliError;

/// `build` flags.
#[derive(Debug, Args)]
pub struct BuildCmd {
    /// Name and optionally a tag in the name:tag format (repeatable)
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pull: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Set metadata for an image (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Type of progress output (auto, plain, tty)
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Set platform if server is multi-platform capable (the host's only)
    #[arg(long)]
    platform: Option<String>,
    /// Images to consider as cache sources
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Set the networking mode for the RUN instructions during build (host, none, default)
    #[arg(long)]
    network: Option<String>,
    /// Remove intermediate containers after a successful build (always)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    rm: bool,
    /// Always remove intermediate containers (always)
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Build context: a directory, or `-` for a tar (or a lone Dockerfile) on stdin
    context: String,
}

/// `builder` subcommands.
#[derive(Debug, Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune(BuilderPruneCmd),
}

/// `builder prune` flags.
#[derive(Debug, Args)]
pub struct BuilderPruneCmd {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

fn host_platform() -> (String, String) {
    let p = berth_image::manifest::Platform::host();
    (p.os, p.architecture)
}

fn gen_name() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = berth_image::Digest::of_bytes(format!("{t}-{}", std::process::id()).as_bytes());
    format!(".dockerfile.{}", &d.hex()[..20])
}

fn is_tar(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
        || b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (b.len() >= 262 && &b[257..262] == b"ustar")
}

fn msg(m: impl Into<String>) -> CliError {
    CliError::Message(m.into())
}

/// Builds the query string.
fn query(c: &BuildCmd, dockerfile: &str) -> Result<String, CliError> {
    let mut q: Vec<(String, String)> = Vec::new();
    for t in &c.tags {
        q.push(("t".into(), t.clone()));
    }
    q.push(("dockerfile".into(), dockerfile.to_string()));
    let mut args: BTreeMap<String, Option<String>> = BTreeMap::new();
    for a in &c.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                args.insert(k.to_string(), Some(v.to_string()));
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    args.insert(a.clone(), Some(v));
                }
            }
        }
    }
    if !args.is_empty() {
        q.push((
            "buildargs".into(),
            serde_json::to_string(&args).unwrap_or_default(),
        ));
    }
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for l in &c.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_string(), v.to_string());
    }
    if !labels.is_empty() {
        q.push((
            "labels".into(),
            serde_json::to_string(&labels).unwrap_or_default(),
        ));
    }
    if !c.cache_from.is_empty() {
        q.push((
            "cachefrom".into(),
            serde_json::to_string(&c.cache_from).unwrap_or_default(),
        ));
    }
    if let Some(t) = &c.target {
        q.push(("target".into(), t.clone()));
    }
    if let Some(n) = &c.network {
        q.push(("networkmode".into(), n.clone()));
    }
    if let Some(p) = &c.platform {
        q.push(("platform".into(), p.clone()));
    }
    for (k, on) in [
        ("nocache", c.no_cache),
        ("pull", c.pull),
        ("q", c.quiet),
        ("forcerm", c.force_rm),
    ] {
        if on {
            q.push((k.into(), "1".into()));
        }
    }
    q.push(("rm".into(), if c.rm { "1" } else { "0" }.into()));
    Ok(q.iter()
        .map(|(k, v)| format!("{k}={}", api::enc(v)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// The context tar and the Dockerfile's name inside it.
fn context_tar(c: &BuildCmd) -> Result<(Vec<u8>, String), CliError> {
    let mut stdin_used = false;
    let mut read_stdin = || -> Result<Vec<u8>, CliError> {
        if stdin_used {
            return Err(CliError::Usage(
                "invalid argument: can't use stdin for both build context and dockerfile".into(),
            ));
        }
        stdin_used = true;
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|e| msg(format!("reading stdin: {e}")))?;
        Ok(b)
    };
    if c.context == "-" {
        let data = read_stdin()?;
        if is_tar(&data) {
            if c.file.as_deref() == Some("-") {
                return Err(CliError::Usage(
                    "invalid argument: can't use stdin for both build context and dockerfile"
                        .into(),
                ));
            }
            return Ok((data, c.file.clone().unwrap_or_else(|| "Dockerfile".into())));
        }
        // A lone Dockerfile: an empty context.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "Dockerfile", &data[..])
            .map_err(|e| msg(e.to_string()))?;
        return Ok((
            b.into_inner().map_err(|e| msg(e.to_string()))?,
            "Dockerfile".into(),
        ));
    }
    if c.context.starts_with("http://")
        || c.context.starts_with("https://")
        || c.context.starts_with("git@")
        || c.context.starts_with("git://")
    {
        return Err(msg(format!(
            "unable to prepare context: remote contexts ({}) are not supported: clone it and build the directory",
            c.context
        )));
    }
    let dir = Path::new(&c.context);
    if !dir.is_dir() {
        return Err(msg(format!(
            "unable to prepare context: path {:?} not found",
            c.context
        )));
    }
    let mut extra: Option<(String, Vec<u8>)> = None;
    let dockerfile = match c.file.as_deref() {
        Some("-") => {
            let data = read_stdin()?;
            let n = gen_name();
            extra = Some((n.clone(), data));
            n
        }
        Some(f) => {
            let fp = Path::new(f);
            let abs = if fp.is_absolute() {
                fp.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| msg(e.to_string()))?
                    .join(fp)
            };
            let cdir = dir.canonicalize().map_err(|e| msg(e.to_string()))?;
            let canon = abs.canonicalize().map_err(|_| {
                msg(format!(
                    "unable to prepare context: the Dockerfile ({f}) cannot be empty or missing"
                ))
            })?;
            match canon.strip_prefix(&cdir) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => {
                    let data =
                        std::fs::read(&canon).map_err(|e| msg(format!("reading {f}: {e}")))?;
                    let n = gen_name();
                    extra = Some((n.clone(), data));
                    n
                }
            }
        }
        None => {
            if !dir.join("Dockerfile").exists() && dir.join("dockerfile").exists() {
                "dockerfile".into()
            } else {
                if !dir.join("Dockerfile").exists() {
                    return Err(msg(format!(
                        "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory",
                        dir.join("Dockerfile").display()
                    )));
                }
                "Dockerfile".into()
            }
        }
    };
    let mut buf = Vec::new();
    berth_build::context::write_context_tar(
        dir,
        Some(&dockerfile),
        extra.as_ref().map(|(n, d)| (n.as_str(), d.as_slice())),
        &mut buf,
    )
    .map_err(|e| msg(format!("unable to prepare context: {e}")))?;
    Ok((buf, dockerfile))
}

/// Decodes a chunked body as it arrives.
struct Chunked<R> {
    r: R,
    left: usize,
    done: bool,
    chunked: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.r.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.r.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.r.read_line(&mut line)?;
            }
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let k = buf.len().min(self.left);
        let n = self.r.read(&mut buf[..k])?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed in a chunk"));
        }
        self.left -= n;
        Ok(n)
    }
}

/// `berth build`.
pub fn build(
    host: &Host,
    c: &BuildCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    if !matches!(
        c.progress.as_str(),
        "auto" | "plain" | "tty" | "quiet" | "rawjson"
    ) {
        return Err(CliError::Usage(format!(
            "invalid argument {:?} for \"--progress\" flag: use auto, plain or tty",
            c.progress
        )));
    }
    if let Some(p) = &c.platform {
        let (os, arch) = host_platform();
        let parts: Vec<&str> = p.split('/').collect();
        let ok = parts.first() == Some(&os.as_str()) && parts.get(1).is_none_or(|a| *a == arch);
        if !ok {
            return Err(msg(format!(
                "platform {p:?} is not supported: berth builds for the host platform ({os}/{arch}) only"
            )));
        }
    }
    let (tar, dockerfile) = context_tar(c)?;
    let q = query(c, &dockerfile)?;
    let mut s = host.connect().map_err(|e| msg(e.to_string()))?;
    let head = format!(
        "POST /v1.44/build?{q} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli\r\nContent-Type: application/x-tar\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        tar.len()
    );
    let io = |e: std::io::Error| msg(format!("talking to the daemon: {e}"));
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(&tar).map_err(io)?;
    drop(tar);
    let mut r = BufReader::new(s);
    let (code, headers) = api::read_head(&mut r).map_err(|e| msg(e.to_string()))?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = BufReader::new(Chunked {
        r,
        left: 0,
        done: false,
        chunked,
    });
    if code >= 400 {
        let mut b = Vec::new();
        let _ = body.read_to_end(&mut b);
        let m = serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned());
        return Err(msg(format!("Error response from daemon: {m}")));
    }
    let mut id: Option<String> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = body.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        let t = String::from_utf8_lossy(&line);
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| msg(format!("malformed message from the daemon: {e}: {t}")))?;
        if let Some(e) = v.get("error") {
            let m = v["errorDetail"]["message"]
                .as_str()
                .or(e.as_str())
                .unwrap_or("build failed");
            let code = v["errorDetail"]["code"]
                .as_i64()
                .filter(|c| *c != 0)
                .unwrap_or(1);
            let _ = out.flush();
            let _ = writeln!(err, "{m}");
            return Err(CliError::Exit(code as i32));
        }
        if let Some(a) = v.get("aux") {
            if let Some(i) = a["ID"].as_str() {
                id = Some(i.to_string());
            }
            continue;
        }
        if let Some(s) = v["stream"].as_str() {
            if !c.quiet {
                out.write_all(s.as_bytes()).map_err(io)?;
                out.flush().map_err(io)?;
            }
        }
    }
    let id = id.ok_or_else(|| msg("the build ended without an image ID"))?;
    if c.quiet {
        writeln!(out, "{id}").map_err(io)?;
    }
    if let Some(f) = &c.iidfile {
        std::fs::write(f, &id).map_err(|e| msg(format!("writing {}: {e}", f.display())))?;
    }
    Ok(())
}

/// `berth builder prune`.
pub fn builder(host: &Host, c: &BuilderCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match c {
        BuilderCommand::Prune(p) => {
            let path = if p.all {
                "/build/prune?all=1"
            } else {
                "/build/prune"
            };
            let _ = p.force;
            let r = api::request(host, "POST", path, None).map_err(|e| match e {
                ApiError::Status { message, .. } => {
                    msg(format!("Error response from daemon: {message}"))
                }
                e => msg(e.to_string()),
            })?;
            let v = r.json().map_err(|e| msg(e.to_string()))?;
            let ids = v["CachesDeleted"].as_array().cloned().unwrap_or_default();
            let io = |e: std::io::Error| msg(e.to_string());
            if !ids.is_empty() {
                writeln!(out, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED").map_err(io)?;
                for i in &ids {
                    writeln!(out, "{}", i.as_str().unwrap_or("")).map_err(io)?;
                }
            }
            let n = v["SpaceReclaimed"].as_u64().unwrap_or(0);
            writeln!(out, "Total:\t{}", crate::units::human_size(n as f64)).map_err(io)?;
            Ok(())
        }
    }
}
