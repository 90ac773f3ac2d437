//! `berth build` and `berth builder prune` through berthd's `POST /build` and
//! `POST /build/prune`.
//!
//! The context is sent as a plain tar made here, honouring `.dockerignore` as the docker CLI
//! does (the Dockerfile and `.dockerignore` are always sent). A Dockerfile from stdin or from
//! outside the context travels in the tar under a generated name.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use berth_api::image::BuildResult;
use berth_api::message::JsonMessage;
use berth_api::system::BuildCachePruneReport;
use clap::{Args, Subcommand};

use crate::api::{self, Host};
use crate::error::CliError;

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
    /// Secret to expose to the build: id=ID[,src=FILE|,env=VARIABLE]
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// Build context: a directory, `-` for a tar (or a lone Dockerfile) on stdin, or a git
    /// repository URL (`git://…`, `https://….git`, `file://…`, `git@…`) with an optional
    /// `#ref:subdir`
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

/// Whether a context argument names a git repository (Docker's rules, plus `file://`).
fn is_git_url(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git://")
        || s.starts_with("git@")
        || s.starts_with("ssh://")
        || s.starts_with("file://")
        || s.starts_with("github.com/")
        || ((s.starts_with("http://") || s.starts_with("https://"))
            && (base.ends_with(".git") || s.contains(".git#")))
}

/// A checked-out git context; the clone is removed on drop.
struct GitContext {
    _dir: tempfile::TempDir,
    /// The context directory (the checkout or its `subdir`).
    path: PathBuf,
}

/// A git command that could not run or failed.
#[derive(Debug, thiserror::Error)]
enum GitError {
    #[error("running git: {0} (is git installed?)")]
    Spawn(std::io::Error),
    #[error("git {command}: {stderr}")]
    Failed { command: String, stderr: String },
}

fn git(args: &[&str], dir: Option<&Path>) -> Result<(), GitError> {
    let mut cmd = std::process::Command::new("git");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let o = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(GitError::Spawn)?;
    if o.status.success() {
        Ok(())
    } else {
        Err(GitError::Failed {
            command: args.first().copied().unwrap_or("").to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        })
    }
}

/// Clones `url#ref:subdir` as the docker CLI does for git contexts: a shallow fetch of the
/// ref (a full clone when the server refuses it, e.g. for a commit ID), submodules, and the
/// subdirectory checked to stay inside the checkout.
fn git_context(spec: &str) -> Result<GitContext, CliError> {
    let (url, frag) = match spec.split_once('#') {
        Some((u, f)) => (u, f),
        None => (spec, ""),
    };
    let (reference, subdir) = match frag.split_once(':') {
        Some((r, d)) => (r, d),
        None => (frag, ""),
    };
    let url = url
        .strip_prefix("github.com/")
        .map_or(url.to_string(), |r| format!("https://github.com/{r}"));
    let fail = |e: &dyn std::fmt::Display| {
        msg(format!(
            "unable to prepare context: unable to 'git clone' to temporary context directory: {e}"
        ))
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-build-git-")
        .tempdir()
        .map_err(|e| fail(&e))?;
    let root = dir.path().join("src");
    let rs = root.to_string_lossy().into_owned();
    git(&["init", "-q", &rs], None).map_err(|e| fail(&e))?;
    git(&["remote", "add", "origin", &url], Some(&root)).map_err(|e| fail(&e))?;
    let want = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    let shallow = git(
        &["fetch", "-q", "--depth", "1", "origin", want],
        Some(&root),
    );
    if shallow.is_ok() {
        git(&["checkout", "-q", "FETCH_HEAD"], Some(&root)).map_err(|e| fail(&e))?;
    } else {
        git(&["fetch", "-q", "origin"], Some(&root)).map_err(|e| fail(&e))?;
        git(&["checkout", "-q", want], Some(&root)).map_err(|e| {
            fail(&format!(
                "{e}{}",
                shallow.err().map(|s| format!(" ({s})")).unwrap_or_default()
            ))
        })?;
    }
    if root.join(".gitmodules").exists() {
        git(
            &[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ],
            Some(&root),
        )
        .map_err(|e| fail(&e))?;
    }
    let rel = subdir.trim_matches('/');
    let path = if rel.is_empty() {
        root.clone()
    } else {
        let canon_root = root.canonicalize().map_err(|e| fail(&e))?;
        let p = root.join(rel).canonicalize().map_err(|_| {
            fail(&format!(
                "subdirectory {rel:?} not found in {url}#{reference}"
            ))
        })?;
        if !p.starts_with(&canon_root) || !p.is_dir() {
            return Err(fail(&format!(
                "subdirectory {rel:?} is not a directory inside the repository"
            )));
        }
        p
    };
    Ok(GitContext { _dir: dir, path })
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
    let git_ctx = if is_git_url(&c.context) {
        Some(git_context(&c.context)?)
    } else if c.context.starts_with("http://") || c.context.starts_with("https://") {
        return Err(msg(format!(
            "unable to prepare context: remote tarball contexts ({}) are not supported: download it and build from stdin",
            c.context
        )));
    } else {
        None
    };
    let dir = match &git_ctx {
        Some(g) => g.path.as_path(),
        None => Path::new(&c.context),
    };
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
            } else if git_ctx.is_some() {
                // In a git context, -f names a file of the repository.
                dir.join(fp)
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

/// One `--secret id=ID[,src=FILE|,env=VARIABLE]` (also `source=`, `type=file|env`), parsed
/// once; other keys are ignored.
#[derive(Debug, Default, PartialEq, Eq)]
struct SecretSpec<'a> {
    id: &'a str,
    typ: Option<&'a str>,
    src: Option<&'a str>,
    source: Option<&'a str>,
    env: Option<&'a str>,
}

impl<'a> SecretSpec<'a> {
    fn parse(spec: &'a str) -> Result<SecretSpec<'a>, CliError> {
        let mut s = SecretSpec::default();
        let mut id = None;
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("invalid secret {spec:?}: expected key=value pairs"))
            })?;
            let slot = match k.trim() {
                "id" => &mut id,
                "type" => &mut s.typ,
                "src" => &mut s.src,
                "source" => &mut s.source,
                "env" => &mut s.env,
                _ => continue,
            };
            *slot = Some(v.trim());
        }
        s.id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| CliError::Usage(format!("invalid secret {spec:?}: id is required")))?;
        Ok(s)
    }
}

/// Berth's request header choosing the builder's stage semantics (`needed`: only the stages
/// the target uses, as BuildKit).
const STAGES_HEADER: &str = "X-Berth-Build-Stages";

/// The `X-Berth-Build-Secrets` header line of the `--secret`s (empty without secrets): a lone
/// `id=ID` reads the variable ID, else the file ID.
fn secrets_header(specs: &[String]) -> Result<String, CliError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for spec in specs {
        let secret = SecretSpec::parse(spec)?;
        let id = secret.id;
        let src = secret.src.or(secret.source);
        let data = match (secret.typ, src, secret.env) {
            (Some("env"), s, e) => env_secret(id, e.or(s).unwrap_or(id))?,
            (_, Some(f), None) => {
                std::fs::read(f).map_err(|e| msg(format!("secret {id}: reading {f}: {e}")))?
            }
            (_, None, Some(e)) => env_secret(id, e)?,
            (_, Some(_), Some(_)) => {
                return Err(CliError::Usage(format!(
                    "invalid secret {spec:?}: src and env are exclusive"
                )))
            }
            (_, None, None) => match std::env::var_os(id) {
                Some(v) => v.into_encoded_bytes(),
                None => std::fs::read(id).map_err(|e| {
                    msg(format!(
                        "secret {id}: no variable {id} and reading file {id}: {e}"
                    ))
                })?,
            },
        };
        m.insert(id.to_string(), b64.encode(data));
    }
    if m.is_empty() {
        return Ok(String::new());
    }
    let json = serde_json::to_string(&m).map_err(|e| msg(e.to_string()))?;
    Ok(format!("X-Berth-Build-Secrets: {}\r\n", b64.encode(json)))
}

fn env_secret(id: &str, var: &str) -> Result<Vec<u8>, CliError> {
    std::env::var_os(var)
        .map(|v| v.into_encoded_bytes())
        .ok_or_else(|| {
            msg(format!(
                "secret {id}: environment variable {var} is not set"
            ))
        })
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
    // Berth's builds run only the stages the target needs (the docker CLI's legacy builds
    // get dockerd's classic builder, every stage up to the target).
    let secrets = format!("{}{STAGES_HEADER}: needed\r\n", secrets_header(&c.secrets)?);
    let (tar, dockerfile) = context_tar(c)?;
    let q = query(c, &dockerfile)?;
    let io = |e: std::io::Error| msg(format!("talking to the daemon: {e}"));
    let mut ctx: &[u8] = &tar;
    let r = api::send_stream(
        host,
        "POST",
        &format!("/build?{q}"),
        Some(("application/x-tar", &mut ctx)),
        &secrets,
    )?;
    drop(tar);
    let mut body = BufReader::new(r);
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
        let v: JsonMessage = api::decode_str(t)
            .map_err(|e| msg(format!("malformed message from the daemon: {e}: {t}")))?;
        if let Some(e) = &v.error {
            let detail = v.error_detail.clone().unwrap_or_default();
            let m = if detail.message.is_empty() {
                e.as_str()
            } else {
                detail.message.as_str()
            };
            let m = if m.is_empty() { "build failed" } else { m };
            let code = detail.code.filter(|c| *c != 0).unwrap_or(1);
            let _ = out.flush();
            let _ = writeln!(err, "{m}");
            return Err(CliError::Exit(code as i32));
        }
        if let Some(a) = v.aux {
            let r: BuildResult = berth_api::from_value(a).map_err(|e| msg(e.to_string()))?;
            if !r.id.is_empty() {
                id = Some(r.id);
            }
            continue;
        }
        if let Some(s) = &v.stream {
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
            let v: BuildCachePruneReport = host.post(path, None)?;
            let ids = v.caches_deleted.unwrap_or_default();
            if !ids.is_empty() {
                writeln!(out, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED")?;
                for i in &ids {
                    writeln!(out, "{i}")?;
                }
            }
            writeln!(
                out,
                "Total:\t{}",
                crate::units::human_size(v.space_reclaimed as f64)
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn secret_specs_parse_once() {
        assert_eq!(
            SecretSpec::parse("id=a, src = /f ,source=/g,env=E,type=env,other=x").unwrap(),
            SecretSpec {
                id: "a",
                typ: Some("env"),
                src: Some("/f"),
                source: Some("/g"),
                env: Some("E"),
            }
        );
        assert_eq!(
            SecretSpec::parse("id=a,id=b").unwrap().id,
            "b",
            "the last wins"
        );
        for (bad, want) in [
            ("src=/x", "id is required"),
            ("id=,src=/x", "id is required"),
            ("id", "expected key=value pairs"),
        ] {
            let e = SecretSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_become_the_header() {
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(secrets_header(&[]).unwrap(), "");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("s");
        std::fs::write(&f, "s3cret").unwrap();
        let path = std::env::var("PATH").unwrap();
        let specs = [
            format!("id=k,src={}", f.display()),
            format!("id=j,source={}", f.display()),
            "id=p,type=env,src=PATH".to_string(),
        ];
        let json = serde_json::json!({
            "k": b64.encode("s3cret"),
            "j": b64.encode("s3cret"),
            "p": b64.encode(&path),
        });
        assert_eq!(
            secrets_header(&specs).unwrap(),
            format!(
                "X-Berth-Build-Secrets: {}\r\n",
                b64.encode(json.to_string())
            )
        );
        let both = format!("id=k,src={},env=PATH", f.display());
        let e = secrets_header(&[both]).unwrap_err().to_string();
        assert!(e.contains("src and env are exclusive"), "{e}");
    }
}
