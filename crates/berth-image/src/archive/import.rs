//! `docker import`: a root file system tarball (or directory) as a one-layer image, with
//! Dockerfile-style `--change` lines applied to its config.

use super::load::{store_uncompressed_layer, Written};
use super::*;

/// Where an import's root file system comes from.
pub enum ImportSource<'a> {
    /// A tar stream (plain, gzip or zstd).
    Tar(Box<dyn Read + 'a>),
    /// A directory, archived as it is (symlinks not followed).
    Directory(PathBuf),
}

/// Options for [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Dockerfile-syntax changes (`-c`).
    pub changes: Vec<String>,
    /// Commit message (`-m`); default `Imported from <source>`.
    pub message: Option<String>,
    /// The source's name for the default message (`-` for stdin).
    pub source_name: String,
    /// Tag for the new image.
    pub tag: Option<Reference>,
    /// Platform recorded in the config (host by default).
    pub platform: Option<Platform>,
}

/// Imports a root file system as a one-layer image and returns its ID.
pub fn import(
    store: &ImageStore,
    source: ImportSource<'_>,
    opts: &ImportOptions,
) -> Result<ImageId> {
    // Validate the changes before reading anything.
    let container_config = apply_changes(ContainerConfig::default(), &opts.changes)?;
    let mut written = Written::default();
    let res = (|| {
        let (diff_id, size, content) = match source {
            ImportSource::Tar(r) => store_uncompressed_layer(store, r, None, &mut written)?,
            ImportSource::Directory(dir) => {
                let tmp = tempfile::tempfile_in(store.tmp_dir()?).map_err(ArchiveError::Read)?;
                let mut b = tar::Builder::new(io::BufWriter::new(tmp));
                b.follow_symlinks(false);
                append_tree(&mut b, &dir, Path::new(""))?;
                let w = b.into_inner().map_err(ArchiveError::Read)?;
                let mut f = w
                    .into_inner()
                    .map_err(|e| ArchiveError::Read(e.into_error()))?;
                io::Seek::seek(&mut f, io::SeekFrom::Start(0)).map_err(ArchiveError::Read)?;
                store_uncompressed_layer(store, f, None, &mut written)?
            }
        };
        let content = match content {
            Some(c) => c,
            None => layer_content_size(store.blobs().open_blob(&diff_id)?)
                .map_err(ArchiveError::Read)?,
        };
        let (secs, nanos) = timeutil::now();
        let created = timeutil::format_rfc3339_nano(secs, nanos);
        let msg = opts
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                if opts.source_name.is_empty() {
                    "Imported from -".to_string()
                } else {
                    format!("Imported from {}", opts.source_name)
                }
            });
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);
        let mut extra = BTreeMap::new();
        extra.insert(
            "comment".to_string(),
            serde_json::Value::String(msg.clone()),
        );
        extra.insert(
            "docker_version".to_string(),
            serde_json::Value::String(format!("berth-{}", env!("CARGO_PKG_VERSION"))),
        );
        let config = ImageConfig {
            created: Some(created.clone()),
            author: None,
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: None,
            variant: platform.variant.clone(),
            config: Some(container_config.clone()),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![History {
                created: Some(created),
                comment: Some(msg),
                ..Default::default()
            }],
            extra,
        };
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| ArchiveError::Invalid(e.to_string()))?;
        let desc = descriptor(mt::OCI_LAYER, &diff_id, size);
        let recs = vec![LayerRecord {
            digest: diff_id.clone(),
            media_type: mt::OCI_LAYER.into(),
            size,
            diff_id: diff_id.clone(),
            unpacked_size: content,
        }];
        store.unpack(&recs)?;
        let manifest = synthesize_manifest(&config_bytes, std::slice::from_ref(&desc));
        let reg = store.register(RegisterRequest {
            manifest,
            config: config_bytes,
            layers: vec![LayerInput {
                descriptor: desc,
                diff_id,
                unpacked_size: Some(content),
            }],
            tags: opts.tag.iter().cloned().collect(),
            ..Default::default()
        })?;
        Ok(reg.id)
    })();
    if res.is_err() {
        let _ = store.discard_unreferenced(&written.0);
    }
    res
}

pub(super) fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_at("read directory", &dir))?
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_at("read directory", &dir))?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let r = rel.join(e.file_name());
        let full = root.join(&r);
        b.append_path_with_name(&full, &r)
            .map_err(io_at("archive", &full))?;
        let ft = e.file_type().map_err(io_at("stat", &full))?;
        if ft.is_dir() {
            append_tree(b, root, &r)?;
        }
    }
    Ok(())
}

/// Splits a Dockerfile argument string into words, honouring quotes and backslashes.
pub(super) fn split_words(s: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(ArchiveError::Change(format!("unmatched quote in {s:?}")));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses `k=v k2="v 2"` (or the legacy `k v…` form) into pairs.
pub(super) fn parse_kv(instr: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let words = split_words(rest)?;
    if words.is_empty() {
        return Err(ArchiveError::Change(format!(
            "{instr} requires at least one argument"
        )));
    }
    if !words[0].contains('=') {
        // Legacy form: the first word is the key, the rest (verbatim) the value.
        let rest = rest.trim_start();
        let key_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let value = rest[key_end..].trim();
        if value.is_empty() && instr == "ENV" {
            return Err(ArchiveError::Change(format!(
                "{instr} must have two arguments"
            )));
        }
        let v = split_words(value)?.join(" ");
        return Ok(vec![(rest[..key_end].to_string(), v)]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ArchiveError::Change(format!(
                "{instr} names can not be blank"
            ))),
        })
        .collect()
}

/// The JSON (exec) form `["a", "b"]`, or the shell form wrapped in `/bin/sh -c`.
pub(super) fn exec_or_shell(rest: &str) -> Vec<String> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return v;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), t.to_string()]
}

pub(super) fn json_or_words(rest: &str) -> Result<Vec<String>> {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Ok(v);
        }
    }
    split_words(t)
}

pub(super) fn clean_abs_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Applies Dockerfile-syntax change lines (as `docker import -c` / `commit -c`) to a config.
pub fn apply_changes(mut c: ContainerConfig, changes: &[String]) -> Result<ContainerConfig> {
    let mut cmd_set = false;
    for line in changes {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instr, rest) = match line.find(char::is_whitespace) {
            Some(i) => (&line[..i], line[i..].trim()),
            None => (line, ""),
        };
        let instr_up = instr.to_ascii_uppercase();
        let need = |what: &str| -> Result<()> {
            if rest.is_empty() {
                Err(ArchiveError::Change(format!(
                    "{what} requires at least one argument"
                )))
            } else {
                Ok(())
            }
        };
        match instr_up.as_str() {
            "CMD" => {
                need("CMD")?;
                c.cmd = Some(exec_or_shell(rest));
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                need("ENTRYPOINT")?;
                c.entrypoint = Some(exec_or_shell(rest));
                if !cmd_set {
                    c.cmd = None;
                }
            }
            "ENV" => {
                let env = c.env.get_or_insert_with(Vec::new);
                for (k, v) in parse_kv("ENV", rest)? {
                    // As the builder's ENV: a variable already set is replaced in place.
                    let var = format!("{k}={v}");
                    match env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
                    {
                        Some(e) => *e = var,
                        None => env.push(var),
                    }
                }
            }
            "LABEL" => {
                let labels = c.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in parse_kv("LABEL", rest)? {
                    labels.insert(k, v);
                }
            }
            "WORKDIR" => {
                need("WORKDIR")?;
                let w = split_words(rest)?.join(" ");
                let base = c.working_dir.clone().unwrap_or_else(|| "/".into());
                let p = if w.starts_with('/') {
                    w
                } else {
                    format!("{base}/{w}")
                };
                c.working_dir = Some(clean_abs_path(&p));
            }
            "USER" => {
                need("USER")?;
                c.user = Some(rest.to_string());
            }
            "EXPOSE" => {
                need("EXPOSE")?;
                let ports = c.exposed_ports.get_or_insert_with(BTreeMap::new);
                for w in split_words(rest)? {
                    let (p, proto) = match w.split_once('/') {
                        Some((p, proto)) => (p.to_string(), proto.to_ascii_lowercase()),
                        None => (w.clone(), "tcp".to_string()),
                    };
                    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(ArchiveError::Change(format!("invalid proto: {proto}")));
                    }
                    let (lo, hi) = match p.split_once('-') {
                        Some((a, b)) => (a.to_string(), b.to_string()),
                        None => (p.clone(), p.clone()),
                    };
                    let lo: u16 = lo
                        .parse()
                        .map_err(|_| ArchiveError::Change(format!("invalid containerPort: {p}")))?;
                    let hi: u16 = hi
                        .parse()
                        .map_err(|_| ArchiveError::Change(format!("invalid containerPort: {p}")))?;
                    if hi < lo {
                        return Err(ArchiveError::Change(format!("invalid port range: {p}")));
                    }
                    for port in lo..=hi {
                        ports.insert(format!("{port}/{proto}"), serde_json::json!({}));
                    }
                }
            }
            "VOLUME" => {
                need("VOLUME")?;
                let vols = c.volumes.get_or_insert_with(BTreeMap::new);
                for v in json_or_words(rest)? {
                    if v.trim().is_empty() {
                        return Err(ArchiveError::Change(
                            "VOLUME specified can not be an empty string".into(),
                        ));
                    }
                    vols.insert(v, serde_json::json!({}));
                }
            }
            "STOPSIGNAL" => {
                need("STOPSIGNAL")?;
                c.stop_signal = Some(rest.to_string());
            }
            "ONBUILD" => {
                need("ONBUILD")?;
                let trigger = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                if matches!(trigger.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(ArchiveError::Change(format!(
                        "{trigger} isn't allowed as an ONBUILD trigger"
                    )));
                }
                let ob = c
                    .extra
                    .entry("OnBuild".to_string())
                    .or_insert_with(|| serde_json::json!([]));
                if !ob.is_array() {
                    *ob = serde_json::json!([]);
                }
                if let Some(a) = ob.as_array_mut() {
                    a.push(serde_json::Value::String(rest.to_string()));
                }
            }
            _ => {
                return Err(ArchiveError::Change(format!(
                    "{instr} is not a valid change command"
                )))
            }
        }
    }
    Ok(c)
}
