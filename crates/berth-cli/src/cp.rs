//! `cp`: copies between a container and the local file system (both ways, `-a`, `-L`, `-` for
//! a tar on stdin/stdout) over the archive routes (`HEAD`/`GET`/`PUT
//! /containers/{id}/archive`).
//!
//! `cp` streams: the archive is read from (or written to) the socket as it is produced, with
//! HTTP chunked encoding for uploads, never held in memory.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use berth_api::container::PathStat;
use clap::Args;

use crate::api::{self, enc, ApiError, ChunkedWriter, Host};
use crate::error::{CliError, Result};

fn ioerr(e: io::Error) -> CliError {
    CliError::Message(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// the archive routes

/// A directory (Go's `os.ModeDir`).
fn is_dir(st: &PathStat) -> bool {
    st.mode & (1 << 31) != 0
}

/// A symbolic link (Go's `os.ModeSymlink`).
fn is_symlink(st: &PathStat) -> bool {
    st.mode & (1 << 27) != 0
}

/// Base64 as the daemon writes it (padding optional, either alphabet).
fn b64decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine as _;
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&base64::alphabet::STANDARD, cfg)
        .decode(s)
        .or_else(|_| GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg).decode(s))
        .ok()
}

/// The stat in `X-Docker-Container-Path-Stat` (base64 JSON).
fn parse_stat(h: &api::Head) -> PathStat {
    h.get("x-docker-container-path-stat")
        .and_then(b64decode)
        .and_then(|b| berth_api::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Sends a request head without a body; the response's head and reader.
fn archive_request(
    host: &Host,
    method: &str,
    ctr: &str,
    path: &str,
) -> Result<(api::Head, BufReader<std::os::unix::net::UnixStream>), ApiError> {
    let mut s = host.connect()?;
    api::write_head(
        &mut s,
        method,
        &format!("/containers/{}/archive?path={}", enc(ctr), enc(path)),
        "Connection: close\r\n",
    )?;
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let h = api::read_head(&mut r)?;
    Ok((h, r))
}

/// `HEAD /containers/{id}/archive`: the stat of a path (`None` when it does not exist).
pub fn stat_path(host: &Host, ctr: &str, path: &str) -> Result<Option<PathStat>, ApiError> {
    let (h, _) = archive_request(host, "HEAD", ctr, path)?;
    match h.code {
        200 => Ok(Some(parse_stat(&h))),
        404 => {
            // HEAD has no body: distinguish a missing container from a missing path.
            crate::ctl::inspect_container(host, ctr)?;
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
) -> Result<(PathStat, Box<dyn Read + Send>), ApiError> {
    let (h, r) = archive_request(host, "GET", ctr, path)?;
    let body = api::body_reader(r, &h);
    if h.code >= 400 {
        let mut b = Vec::new();
        let _ = { body }.read_to_end(&mut b);
        return Err(api::error_of(h.code, &b));
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
    let s = host.connect()?;
    let mut w = io::BufWriter::with_capacity(256 * 1024, s.try_clone()?);
    api::write_head(
        &mut w,
        "PUT",
        &format!(
            "/containers/{}/archive?path={}&noOverwriteDirNonDir=1&copyUIDGID={}",
            enc(ctr),
            enc(path),
            copy_uid_gid as u8
        ),
        "Connection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n",
    )?;
    let res = {
        let mut cw = io::BufWriter::with_capacity(512 * 1024, ChunkedWriter(&mut w));
        let r = produce(&mut cw);
        r.and_then(|_| cw.flush())
    };
    // The daemon may answer early (an error) and close: read its answer in any case.
    if res.is_ok() {
        ChunkedWriter(&mut w).finish()?;
    }
    // (No half-close: the server would drop the connection before answering.)
    drop(w);
    let mut r = BufReader::new(s);
    let h = api::read_head(&mut r)?;
    if h.code >= 400 {
        let mut b = Vec::new();
        let _ = api::body_reader(r, &h).read_to_end(&mut b);
        return Err(api::error_of(h.code, &b));
    }
    res.map_err(ApiError::Io)
}

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
pub fn cp(host: &Host, c: &CpCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
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

fn from_container(host: &Host, c: &CpCmd, ctr: &str, path: &str, out: &mut dyn Write) -> Result {
    let mut path = abs(path);
    if c.follow_link {
        if let Some(st) = stat_path(host, ctr, &path).map_err(CliError::from)? {
            if is_symlink(&st) && !st.link_target.is_empty() {
                path = st.link_target;
            }
        }
    }
    let (stat, mut tar) = get_archive(host, ctr, &path).map_err(CliError::from)?;
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
    if ends_with_sep(&c.dest) && !dest_is_dir && !is_dir(&stat) {
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

fn to_container(host: &Host, c: &CpCmd, ctr: &str, path: &str) -> Result {
    let dest = abs(path);
    if c.src == "-" {
        // A tar on stdin is extracted into the destination directory as is.
        let stdin = io::stdin();
        return put_archive(host, ctr, &dest, c.archive, |w| {
            io::copy(&mut stdin.lock(), w).map(drop)
        })
        .map_err(CliError::from);
    }
    let src = PathBuf::from(&c.src);
    let smeta = if c.follow_link {
        std::fs::metadata(&src)
    } else {
        std::fs::symlink_metadata(&src)
    }
    .map_err(|e| CliError::Message(format!("lstat {}: {e}", src.display())))?;
    let dst_stat = stat_path(host, ctr, &dest).map_err(CliError::from)?;
    let src_contents = ends_with_dot(&c.src);
    // (the directory to extract into, the archive name of the source's top entry)
    let (extract_dir, top): (String, String) = match &dst_stat {
        Some(st) if is_dir(st) => (
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
    .map_err(CliError::from)
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
    fn container_args_and_base64() {
        assert_eq!(split_container("c1:/x"), Some(("c1", "/x")));
        assert_eq!(split_container("/a:b"), None);
        assert_eq!(split_container("./c:d"), None);
        assert_eq!(split_container("-"), None);
        assert_eq!(b64decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64decode("aGkh").unwrap(), b"hi!");
        assert_eq!(b64decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(base_of("/a/b/"), "b");
    }

    #[test]
    fn path_stats_from_the_header() {
        use base64::Engine as _;
        let json = r#"{"name":"etc","size":4096,"mode":2147484141,"mtime":"2024-01-01T00:00:00Z","linkTarget":""}"#;
        let h = api::Head {
            code: 200,
            headers: vec![(
                "x-docker-container-path-stat".into(),
                base64::engine::general_purpose::STANDARD.encode(json),
            )],
        };
        let st = parse_stat(&h);
        assert_eq!(st.name, "etc");
        assert!(is_dir(&st) && !is_symlink(&st));
        assert_eq!(
            parse_stat(&api::Head {
                code: 200,
                headers: vec![]
            }),
            PathStat::default()
        );
    }
}
