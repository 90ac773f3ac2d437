//! Spooling an archive: its files copied under generated names into a scratch directory,
//! every entry name cleaned and every link resolved inside the archive, so that no archive
//! path ever reaches the host.

use super::*;

/// Why an archive entry is refused, or a document in it cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EntryProblem {
    #[error("name is not UTF-8")]
    NameNotUtf8,
    #[error("absolute path")]
    AbsolutePath,
    #[error("path contains '..'")]
    DotDot,
    #[error("path too long")]
    PathTooLong,
    #[error("a file without a name")]
    NoName,
    #[error("link target is not UTF-8")]
    LinkNotUtf8,
    #[error("symlink to absolute path {0:?}")]
    AbsoluteLink(String),
    #[error("symlink target {0:?} escapes the archive")]
    LinkEscapes(String),
    #[error("{0} without target")]
    NoLinkTarget(&'static str),
    #[error("hard link target: {0}")]
    HardLinkTarget(Box<EntryProblem>),
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    #[error("{what} of {size} bytes is larger than {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Pax(&'static str),
}

/// An archive's files, spooled under generated names in a scratch directory.
pub(super) struct Spool {
    pub(super) dir: tempfile::TempDir,
    pub(super) files: HashMap<String, PathBuf>,
    pub(super) links: HashMap<String, String>,
}

/// Cleans an archive path: no absolute paths, no `..`; `.` and empty components dropped.
pub(super) fn clean_archive_path(raw: &[u8]) -> Result<String, EntryProblem> {
    let s = std::str::from_utf8(raw).map_err(|_| EntryProblem::NameNotUtf8)?;
    if s.starts_with('/') {
        return Err(EntryProblem::AbsolutePath);
    }
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(EntryProblem::DotDot),
            c => out.push(c),
        }
    }
    if out.iter().map(|c| c.len() + 1).sum::<usize>() > 4096 {
        return Err(EntryProblem::PathTooLong);
    }
    Ok(out.join("/"))
}

/// Resolves a symlink target (relative to the link's directory) lexically inside the archive.
pub(super) fn resolve_link(link_path: &str, target: &[u8]) -> Result<String, EntryProblem> {
    let t = std::str::from_utf8(target).map_err(|_| EntryProblem::LinkNotUtf8)?;
    if t.starts_with('/') {
        return Err(EntryProblem::AbsoluteLink(t.to_string()));
    }
    let mut comps: Vec<&str> = link_path.split('/').collect();
    comps.pop();
    for c in t.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if comps.pop().is_none() {
                    return Err(EntryProblem::LinkEscapes(t.to_string()));
                }
            }
            c => comps.push(c),
        }
    }
    Ok(comps.join("/"))
}

pub(super) fn read_limited(
    r: &mut impl Read,
    size: u64,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, EntryProblem> {
    if size > limit {
        return Err(EntryProblem::TooLarge {
            what: what.to_string(),
            size,
            limit,
        });
    }
    let mut v = Vec::with_capacity(size as usize);
    r.take(limit)
        .read_to_end(&mut v)
        .map_err(|source| EntryProblem::Read {
            what: what.to_string(),
            source,
        })?;
    Ok(v)
}

pub(super) fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, EntryProblem> {
    let malformed = || EntryProblem::Pax("malformed PAX record");
    let bad_length = || EntryProblem::Pax("malformed PAX record length");
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad_length)?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad_length());
        }
        let rec = &rest[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or(EntryProblem::Pax("PAX record without newline"))?;
        let eq = rec
            .iter()
            .position(|b| *b == b'=')
            .ok_or(EntryProblem::Pax("PAX record without '='"))?;
        out.push((
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            rec[eq + 1..].to_vec(),
        ));
        rest = &rest[len..];
    }
    Ok(out)
}

impl Spool {
    pub(super) fn read(store: &ImageStore, reader: impl Read) -> Result<Self> {
        let tmp = store.tmp_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(&tmp)
            .map_err(io_at("create directory", &tmp))?;
        let mut spool = Spool {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let dec = decompress(reader).map_err(ArchiveError::Read)?;
        let mut ar = tar::Archive::new(dec);
        let mut pending_name: Option<Vec<u8>> = None;
        let mut pending_link: Option<Vec<u8>> = None;
        let mut count = 0usize;
        let entries = ar.entries().map_err(ArchiveError::Read)?.raw(true);
        for e in entries {
            let mut e = e.map_err(ArchiveError::Read)?;
            count += 1;
            if count > MAX_ENTRIES {
                return Err(ArchiveError::Invalid(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let header_name = e.header().path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&header_name).into_owned();
            let hostile = |reason: EntryProblem| ArchiveError::Hostile {
                entry: shown.clone(),
                reason,
            };
            let size = e.header().size().map_err(ArchiveError::Read)?;
            let kind = e.header().entry_type();
            match kind {
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
                    let (what, pending) = if kind == tar::EntryType::GNULongName {
                        ("GNU long name", &mut pending_name)
                    } else {
                        ("GNU long link", &mut pending_link)
                    };
                    let mut v =
                        read_limited(&mut e, size, MAX_EXT_HEADER, what).map_err(hostile)?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    *pending = Some(v);
                    continue;
                }
                tar::EntryType::XHeader => {
                    let v = read_limited(&mut e, size, MAX_EXT_HEADER, "PAX header")
                        .map_err(hostile)?;
                    for (k, val) in parse_pax(&v).map_err(hostile)? {
                        match k.as_str() {
                            "path" => pending_name = Some(val),
                            "linkpath" => pending_link = Some(val),
                            _ => {}
                        }
                    }
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    read_limited(&mut e, size, MAX_EXT_HEADER, "PAX global header")
                        .map_err(hostile)?;
                    continue;
                }
                _ => {}
            }
            let raw_name = pending_name.take().unwrap_or(header_name);
            let raw_link = pending_link
                .take()
                .or_else(|| e.header().link_name_bytes().map(|c| c.into_owned()));
            let shown = String::from_utf8_lossy(&raw_name).into_owned();
            let hostile = |reason: EntryProblem| ArchiveError::Hostile {
                entry: shown.clone(),
                reason,
            };
            let name = clean_archive_path(&raw_name).map_err(hostile)?;
            match kind {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if name.is_empty() {
                        return Err(hostile(EntryProblem::NoName));
                    }
                    let p = spool.dir.path().join(format!("f{count}"));
                    let mut f = File::create(&p).map_err(io_at("create", &p))?;
                    io::copy(&mut e, &mut f).map_err(ArchiveError::Read)?;
                    spool.links.remove(&name);
                    spool.files.insert(name, p);
                }
                tar::EntryType::Symlink => {
                    let target =
                        raw_link.ok_or_else(|| hostile(EntryProblem::NoLinkTarget("symlink")))?;
                    let resolved = resolve_link(&name, &target).map_err(hostile)?;
                    spool.files.remove(&name);
                    spool.links.insert(name, resolved);
                }
                tar::EntryType::Link => {
                    let target =
                        raw_link.ok_or_else(|| hostile(EntryProblem::NoLinkTarget("hard link")))?;
                    let resolved = clean_archive_path(&target)
                        .map_err(|r| hostile(EntryProblem::HardLinkTarget(Box::new(r))))?;
                    spool.files.remove(&name);
                    spool.links.insert(name, resolved);
                }
                other => {
                    return Err(hostile(EntryProblem::UnsupportedType(
                        other.as_byte() as char
                    )));
                }
            }
        }
        Ok(spool)
    }

    /// The spooled file for an archive path, following links inside the archive.
    pub(super) fn path(&self, name: &str) -> Result<&Path> {
        let mut cur = clean_archive_path(name.as_bytes()).map_err(|r| ArchiveError::Hostile {
            entry: name.to_string(),
            reason: r,
        })?;
        for _ in 0..32 {
            if let Some(p) = self.files.get(&cur) {
                return Ok(p);
            }
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => {
                    return Err(ArchiveError::Invalid(format!(
                        "{name:?} is not in the archive"
                    )))
                }
            }
        }
        Err(ArchiveError::Invalid(format!(
            "{name:?}: too many levels of links"
        )))
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.path(name).is_ok()
    }

    pub(super) fn open(&self, name: &str) -> Result<File> {
        let p = self.path(name)?;
        File::open(p).map_err(io_at("open", p))
    }

    pub(super) fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let mut f = self.open(name)?;
        let size = f.metadata().map_err(ArchiveError::Read)?.len();
        read_limited(&mut f, size, MAX_JSON, name).map_err(|problem| ArchiveError::Unreadable {
            name: name.to_string(),
            problem,
        })
    }
}

/// The hex digest in a `blobs/sha256/<hex>` path, if it is one.
pub(super) fn blob_path_digest(path: &str) -> Option<Digest> {
    let c = clean_archive_path(path.as_bytes()).ok()?;
    let hex = c.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}
