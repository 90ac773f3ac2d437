//! COPY and ADD: sources from the context (globs, `--exclude`), another stage or image
//! (`--from`), heredocs and downloads; their content hash for the cache key; the copy into
//! the step's root with `--chown`/`--chmod`/`--parents`, and ADD's archive extraction.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_image::image_store::ImageStore;
use berth_image::manifest::ContainerConfig;
use berth_image::Digest;

use super::commit::FsOp;
use super::container::with_state_root;
use super::error::{at, invalid, BuildError, Result, StepError};
use super::instructions::Copy;
use super::schedule::stage_ref;
use super::state::State;
use super::steps::{StageCtx, Words};
use super::Eval;
use crate::dockerignore::{self, IgnoreFile};
use crate::fsops::{self, io_at, CopyAttrs, FsError};
use crate::shell::{self, Vars};

/// Where a COPY's files come from.
struct CopySources {
    /// Paths (globs) in the context or in `from_state`.
    local: Vec<String>,
    from_state: Option<State>,
    /// (name, content).
    heredocs: Vec<(String, Vec<u8>)>,
    downloads: Vec<(String, Vec<u8>)>,
}

/// How a COPY copies.
struct CopyPlan<'p> {
    store: &'p ImageStore,
    keyword: &'static str,
    is_add: bool,
    dest: String,
    /// The destination was written as a directory (`/d/`, `.`).
    dest_dir_syntax: bool,
    n_sources: usize,
    chown: Option<String>,
    chmod: Option<u32>,
    parents: bool,
    excludes: IgnoreFile,
    line: usize,
}

impl Eval<'_, '_, '_> {
    pub(super) fn copy_step(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        c: &Copy,
        cc: ContainerConfig,
        x: &Words<'_>,
    ) -> Result<()> {
        let is_add = c.add;
        let mut words: Vec<String> = c.words.iter().map(|w| x.word(w)).collect::<Result<_>>()?;
        let dest_raw = words.pop().unwrap_or_default();
        let workdir = cc.working_dir.clone().unwrap_or_else(|| "/".into());
        let dest_dir_syntax =
            dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest_raw)
        };
        let chown = c.chown.as_deref().map(|w| x.word(w)).transpose()?;
        let excludes = IgnoreFile::parse(&c.excludes.join("\n"));
        // Heredoc sources: `COPY <<EOF /file`.
        let mut heredoc_files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut srcs: Vec<String> = Vec::new();
        for w in words {
            let name = w.strip_prefix("<<").map(|n| {
                n.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            });
            if let Some(hd) = name.and_then(|n| c.heredocs.iter().find(|h| h.name == n)) {
                let content = if hd.expand {
                    expand_heredoc(&hd.content, x.esc, &x.scope)
                } else {
                    hd.content.clone()
                };
                heredoc_files.push((hd.name.clone(), content.into_bytes()));
                continue;
            }
            srcs.push(w);
        }
        // Sources: the context, another stage, or an image.
        let from = c.from.as_deref().map(|w| x.word(w)).transpose()?;
        let from_state = match &from {
            Some(f) => {
                // dockerd's words: what the value names (a stage by name or index, else an
                // image) could not be had, then why.
                let flag_err = |source: StepError| {
                    at(
                        line,
                        StepError::FromFlag {
                            value: f.clone(),
                            source: Box::new(source),
                        },
                    )
                };
                if stage_ref(self.stage_names, f, ctx.index).is_none() {
                    if self.stage_names.contains_key(&f.to_ascii_lowercase()) {
                        return Err(flag_err(StepError::Invalid(
                            "a stage cannot copy from itself or a later stage".into(),
                        )));
                    }
                    // An index: this stage's own, or past it (dockerd's `validateIndex`).
                    if let Ok(i) = f.parse::<i64>() {
                        let current = ctx.index as i64;
                        return Err(flag_err(StepError::Invalid(
                            if i == current {
                                "refers to current build stage"
                            } else {
                                "index out of bounds"
                            }
                            .into(),
                        )));
                    }
                }
                Some(self.source_state(f, ctx.index, line).map_err(|e| match e {
                    BuildError::Step { source, .. } => flag_err(source),
                    other => other,
                })?)
            }
            None => None,
        };
        let mut urls: Vec<String> = Vec::new();
        let mut local: Vec<String> = Vec::new();
        for s in &srcs {
            if is_add && (s.starts_with("http://") || s.starts_with("https://")) {
                urls.push(s.clone());
            } else if is_add && (s.starts_with("git@") || s.ends_with(".git")) {
                return Err(invalid(
                    line,
                    format!("ADD {s}: git sources are not supported"),
                ));
            } else {
                local.push(s.clone());
            }
        }
        if c.checksum.is_some() && urls.is_empty() {
            return Err(invalid(
                line,
                "ADD --checksum is only supported for HTTP(S) sources",
            ));
        }
        let n_sources = srcs.len() + heredoc_files.len();
        // Downloads happen before the cache check: their content is part of the key.
        let downloads = urls
            .iter()
            .map(|u| download(u, c.checksum.as_deref(), line))
            .collect::<Result<Vec<_>>>()?;
        let copy_ctx = CopySources {
            local,
            from_state,
            heredocs: heredoc_files,
            downloads,
        };
        // Cache text: the sources' content hash, dest and flags.
        let mut src_hash = String::new();
        if let Some(s) = &copy_ctx.from_state {
            // What is copied, by content (as dockerd hashes it): the same files from a stage
            // built again differently are a hit. Owners too, which COPY --from keeps.
            let keyed = with_state_root(self.b.store, s, |root| {
                source_hash(root, &copy_ctx.local, line, &excludes, true)
            })?;
            src_hash.push_str(&format!("from:{keyed}"));
        } else if !copy_ctx.local.is_empty() {
            let keyed = source_hash(self.context(line)?, &copy_ctx.local, line, &excludes, false)?;
            src_hash.push_str(&format!("ctx:{keyed}"));
        }
        for (n, d) in copy_ctx.heredocs.iter().chain(&copy_ctx.downloads) {
            src_hash.push_str(&format!(";{n}:{}", Digest::of_bytes(d)));
        }
        let kind = if n_sources > 1 { "multi" } else { "file" };
        let short_hash = Digest::of_bytes(src_hash.as_bytes());
        let created_by = format!(
            "/bin/sh -c #(nop) {} {}{kind}:{} in {dest_raw} ",
            c.keyword(),
            c.flags,
            short_hash.hex()
        );
        let cache_text = format!(
            "{}\n{src_hash}\ndest={dest}\nchown={}\nchmod={:?}\nparents={}\nexclude={:?}\nworkdir={workdir}",
            c.keyword(),
            chown.clone().unwrap_or_default(),
            c.chmod,
            c.parents,
            excludes.patterns
        );
        let context = self.opts.context.clone();
        // Written straight into the step's layer, without mounting the parent's, when every
        // write lands at or below a path the parent does not have (`FsOp::Create`): not for
        // ADD (archives unpack with their whiteouts), `--parents`, a destination with `..`,
        // nor a glob copied to a file destination (a match may be a symlink that the next
        // match is then written through).
        let direct_path = (!is_add
            && !c.parents
            && !dest.split('/').any(|p| p == "..")
            && (dest_dir_syntax || n_sources > 1 || !srcs.iter().any(|s| has_glob(s))))
        .then(|| {
            let comps: Vec<&str> = dest
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            format!("/{}", comps.join("/"))
        });
        let plan = CopyPlan {
            store: self.b.store,
            keyword: c.keyword(),
            is_add,
            dest,
            dest_dir_syntax,
            n_sources,
            chown,
            chmod: c.chmod,
            parents: c.parents,
            excludes,
            line,
        };
        let op = match direct_path {
            Some(path) => FsOp::Create {
                path,
                chown: plan.chown.clone(),
                files: Box::new(move |root: &Path, owner| {
                    do_copy(root, owner, &context, &copy_ctx, &plan)
                }),
            },
            None => FsOp::Files(Box::new(move |root: &Path| {
                let owner = match &plan.chown {
                    Some(c) => Some(fsops::resolve_user(root, c).map_err(|e| at(line, e))?),
                    None => None,
                };
                do_copy(root, owner, &context, &copy_ctx, &plan)?;
                Ok(true)
            })),
        };
        self.commit(ctx, line, created_by, cache_text, cc, op)
    }
}

/// The cache text of sources `srcs` (globs) in `root` (the context, or a stage's or image's
/// root): the hash of their content (and `owners`) and their relative paths.
fn source_hash(
    root: &Path,
    srcs: &[String],
    line: usize,
    excl: &IgnoreFile,
    owners: bool,
) -> Result<String> {
    let mut paths = Vec::new();
    for s in srcs {
        for rel in glob_context(root, s, line)? {
            if excluded(excl, &rel) {
                continue;
            }
            paths.push((fsops::resolve_in_root(root, &rel, true)?, rel));
        }
    }
    let hosts: Vec<PathBuf> = paths.iter().map(|(h, _)| h.clone()).collect();
    let h = hash_paths(root, &hosts, excl, owners)?;
    let rels: Vec<&String> = paths.iter().map(|(_, r)| r).collect();
    Ok(format!(
        "{h}:{}",
        serde_json::to_string(&rels).unwrap_or_default()
    ))
}

/// `ADD http://…`: the body (checked against `--checksum`) and the file name.
fn download(url: &str, checksum: Option<&str>, line: usize) -> Result<(String, Vec<u8>)> {
    let body = crate::http::get(url).map_err(|source| {
        at(
            line,
            StepError::Download {
                url: url.to_string(),
                source,
            },
        )
    })?;
    if let Some(c) = checksum {
        let got = Digest::of_bytes(&body);
        if got.to_string() != c {
            return Err(invalid(
                line,
                format!("ADD {url}: checksum mismatch: expected {c}, got {got}"),
            ));
        }
    }
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("download")
        .to_string();
    Ok((name, body))
}

/// Heredoc bodies: `$VAR` expansion only (quotes are content).
fn expand_heredoc(s: &str, esc: char, vars: &dyn Vars) -> String {
    let mut out = String::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == esc {
            if let Some(&(_, n)) = it.peek() {
                if n == '$' || n == esc {
                    out.push(n);
                    it.next();
                    continue;
                }
            }
            out.push(c);
        } else if c == '$' {
            // Find the extent of the reference and expand it alone.
            let rest = &s[i..];
            let len = if rest[1..].starts_with('{') {
                rest.find('}').map(|p| p + 1).unwrap_or(1)
            } else {
                1 + rest[1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len() - 1)
            };
            let piece = &rest[..len];
            match shell::expand_word(piece, esc, vars) {
                Ok(v) if len > 1 => out.push_str(&v),
                _ => out.push_str(piece),
            }
            for _ in 1..piece.chars().count() {
                it.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A source path relative to the context (refusing `..` escapes).
pub(super) fn context_rel(s: &str, line: usize) -> Result<String> {
    let c = dockerignore::clean(s);
    if c == ".." || c.starts_with("../") {
        return Err(invalid(
            line,
            format!("forbidden path outside the build context: {s} ()"),
        ));
    }
    Ok(if c == "." { String::new() } else { c })
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Expands a source (with wildcards) against the context: context-relative paths.
fn glob_context(ctx: &Path, s: &str, line: usize) -> Result<Vec<String>> {
    let rel = context_rel(s, line)?;
    if !has_glob(&rel) {
        let host = fsops::resolve_in_root(ctx, &rel, true)?;
        if fs::symlink_metadata(&host).is_err() {
            return Err(invalid(line, format!("COPY failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist")));
        }
        return Ok(vec![rel]);
    }
    let mut cur: Vec<String> = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for base in &cur {
            let dir = fsops::resolve_in_root(ctx, base, true)?;
            let join = |n: &str| {
                if base.is_empty() {
                    n.to_string()
                } else {
                    format!("{base}/{n}")
                }
            };
            if !has_glob(comp) {
                if fs::symlink_metadata(dir.join(comp)).is_ok() {
                    next.push(join(comp));
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            next.extend(
                names
                    .iter()
                    .filter(|n| dockerignore::path_match(comp, n))
                    .map(|n| join(n)),
            );
        }
        cur = next;
    }
    if cur.is_empty() {
        return Err(invalid(
            line,
            format!("COPY failed: no source files were specified (nothing matches {s})"),
        ));
    }
    Ok(cur)
}

/// Hash of files' paths, types, modes, sizes and contents, and with `owners` their uid and gid
/// (never times).
pub(super) fn hash_paths(
    ctx: &Path,
    paths: &[PathBuf],
    excl: &IgnoreFile,
    owners: bool,
) -> Result<Digest, FsError> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    fn walk(
        h: &mut sha2::Sha256,
        p: &Path,
        rel: &str,
        excl: &IgnoreFile,
        owners: bool,
    ) -> Result<(), FsError> {
        use std::os::unix::fs::MetadataExt;
        if !rel.is_empty() && excluded(excl, rel) {
            return Ok(());
        }
        let m = fs::symlink_metadata(p).map_err(io_at("inspecting", p))?;
        h.update(format!("{rel}\0{:o}\0{}\0", m.mode(), m.len()).as_bytes());
        if owners {
            h.update(format!("{}:{}\0", m.uid(), m.gid()).as_bytes());
        }
        if m.is_dir() {
            for e in fsops::sorted_entries(p)? {
                let n = e.file_name().to_string_lossy().into_owned();
                let r = if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                };
                walk(h, &e.path(), &r, excl, owners)?;
            }
        } else if m.file_type().is_symlink() {
            let target = fs::read_link(p).map_err(io_at("reading symlink", p))?;
            h.update(target.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            fs::File::open(p)
                .and_then(|mut f| io::copy(&mut f, h))
                .map_err(io_at("reading", p))?;
        } else {
            h.update(format!("dev{}", m.rdev()).as_bytes());
        }
        h.update(b"\n");
        Ok(())
    }
    for p in paths {
        let rel = p
            .strip_prefix(ctx)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned();
        h.update(format!("src:{rel}\n").as_bytes());
        walk(&mut h, p, "", excl, owners)?;
    }
    Ok(Digest::from_sha256_bytes(h.finalize().into()))
}

/// The copy into `root`, `owner` being `--chown` resolved in it.
fn do_copy(
    root: &Path,
    owner: Option<(u32, u32)>,
    context: &Path,
    src: &CopySources,
    p: &CopyPlan<'_>,
) -> Result<()> {
    let line = p.line;
    let attrs = CopyAttrs {
        owner,
        mode: p.chmod,
        keep_owner: src.from_state.is_some() && owner.is_none(),
    };
    let dir_dest = p.dest_dir_syntax || p.n_sources > 1;
    if p.n_sources > 1 && !p.dest_dir_syntax {
        return Err(invalid(line, format!("When using {} with more than one source file, the destination must be a directory and end with a /", p.keyword)));
    }
    let files = |e: FsError| at(line, e);
    let mkdir = |root: &Path, dir: &str| fsops::mkdir_all(root, dir, owner).map_err(files);
    let target_for = |root: &Path, name: &str| -> Result<PathBuf> {
        let to_dir =
            dir_dest || fsops::resolve_in_root(root, &p.dest, true).is_ok_and(|d| d.is_dir());
        let d = if to_dir {
            mkdir(root, &p.dest)?;
            format!("{}/{name}", p.dest.trim_end_matches('/'))
        } else {
            let parent = Path::new(&p.dest)
                .parent()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            mkdir(root, &parent)?;
            p.dest.clone()
        };
        Ok(fsops::resolve_in_root(root, &d, false)?)
    };
    for (name, data) in src.heredocs.iter() {
        let t = target_for(root, name)?;
        fsops::write_file(&t, data, &attrs, 0o644).map_err(files)?;
    }
    for (name, data) in src.downloads.iter() {
        let t = target_for(root, name)?;
        fsops::write_file(&t, data, &attrs, 0o600).map_err(files)?;
    }
    if src.local.is_empty() {
        return Ok(());
    }
    let copy_error = |rel: &str| {
        let op = format!("{} {rel}", p.keyword);
        move |source| at(line, StepError::Fs { op, source })
    };
    let copy_from = |sroot: &Path| -> Result<()> {
        for s in &src.local {
            for rel in glob_context(sroot, s, line)? {
                if excluded(&p.excludes, &rel) {
                    continue;
                }
                let host = fsops::resolve_in_root(sroot, &rel, true)?;
                let m = fs::symlink_metadata(&host)
                    .map_err(io_at("inspecting", &host))
                    .map_err(files)?;
                let name = Path::new(&rel)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if p.is_add
                    && m.is_file()
                    && src.from_state.is_none()
                    && super::archive::is_archive(&host)
                {
                    mkdir(root, &p.dest)?;
                    let d = fsops::resolve_in_root(root, &p.dest, true)?;
                    super::archive::extract(&host, &d).map_err(|source| {
                        at(
                            line,
                            StepError::Extract {
                                path: rel.clone(),
                                source,
                            },
                        )
                    })?;
                    continue;
                }
                if m.is_dir() {
                    let dd = if p.parents && !rel.is_empty() {
                        format!("{}/{rel}", p.dest.trim_end_matches('/'))
                    } else {
                        p.dest.clone()
                    };
                    mkdir(root, &dd)?;
                    let d = fsops::resolve_in_root(root, &dd, true)?;
                    for e in fsops::sorted_entries(&host).map_err(files)? {
                        let n = e.file_name().to_string_lossy().into_owned();
                        copy_filtered(&e.path(), &d.join(&n), &attrs, &p.excludes, &n)
                            .map_err(copy_error(&rel))?;
                    }
                } else {
                    let t = if p.parents {
                        let full = format!("{}/{rel}", p.dest.trim_end_matches('/'));
                        let parent = Path::new(&full)
                            .parent()
                            .map(|x| x.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        mkdir(root, &parent)?;
                        fsops::resolve_in_root(root, &full, false)?
                    } else {
                        target_for(root, &name)?
                    };
                    fsops::copy_entry(&host, &t, &attrs).map_err(copy_error(&rel))?;
                }
            }
        }
        Ok(())
    };
    match &src.from_state {
        None => copy_from(context),
        Some(st) => with_state_root(p.store, st, copy_from),
    }
}

/// Whether `--exclude` patterns drop a path (matched against the path below the source and
/// against its base name).
fn excluded(excl: &IgnoreFile, rel: &str) -> bool {
    !excl.patterns.is_empty()
        && (excl.ignored(rel) || excl.ignored(rel.rsplit('/').next().unwrap_or(rel)))
}

fn copy_filtered(
    src: &Path,
    dst: &Path,
    a: &CopyAttrs,
    excl: &IgnoreFile,
    rel: &str,
) -> Result<(), FsError> {
    if excluded(excl, rel) {
        return Ok(());
    }
    let m = fs::symlink_metadata(src).map_err(io_at("inspecting", src))?;
    if m.is_dir() && !excl.patterns.is_empty() {
        if fs::symlink_metadata(dst).is_err() {
            fs::create_dir(dst).map_err(io_at("creating directory", dst))?;
        }
        let rd = fs::read_dir(src).map_err(io_at("reading directory", src))?;
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            copy_filtered(&e.path(), &dst.join(&n), a, excl, &format!("{rel}/{n}"))?;
        }
        fsops::copy_entry_attrs_only(src, dst, a)
    } else {
        fsops::copy_entry(src, dst, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn heredoc_expansion_keeps_quotes() {
        let v: BTreeMap<String, String> = [("N".to_string(), "x".to_string())].into();
        assert_eq!(
            expand_heredoc("a=\"$N\" '${N}' \\$N $\n", '\\', &v),
            "a=\"x\" 'x' $N $\n"
        );
    }

    #[test]
    fn paths() {
        assert!(context_rel("../x", 1).is_err());
        assert!(context_rel("a/../../x", 1).is_err());
        assert_eq!(context_rel("./a/b/..", 1).unwrap(), "a");
        assert_eq!(context_rel(".", 1).unwrap(), "");
    }

    #[test]
    fn globs_in_context() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("a/b/x.txt"), "").unwrap();
        fs::write(d.path().join("a/y.txt"), "").unwrap();
        fs::write(d.path().join("z.md"), "").unwrap();
        assert_eq!(
            glob_context(d.path(), "a/*.txt", 1).unwrap(),
            vec!["a/y.txt"]
        );
        assert_eq!(
            glob_context(d.path(), "a/*/x.txt", 1).unwrap(),
            vec!["a/b/x.txt"]
        );
        assert_eq!(glob_context(d.path(), "*.md", 1).unwrap(), vec!["z.md"]);
        assert!(glob_context(d.path(), "*.none", 1).is_err());
        assert!(glob_context(d.path(), "missing", 1).is_err());
        // Hashes see content and modes, not times.
        let p = vec![d.path().join("a")];
        let h1 = hash_paths(d.path(), &p, &IgnoreFile::default(), false).unwrap();
        fs::write(d.path().join("a/y.txt"), "changed").unwrap();
        let h2 = hash_paths(d.path(), &p, &IgnoreFile::default(), false).unwrap();
        assert_ne!(h1, h2);
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a/y.txt"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            h2,
            hash_paths(d.path(), &p, &IgnoreFile::default(), false).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.path().join("a/y.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(
            h2,
            hash_paths(d.path(), &p, &IgnoreFile::default(), false).unwrap()
        );
    }
}
