//! fsutil's file transfer over a session: receiving a client's directory (the build
//! context, the Dockerfile, named contexts) and sending directories and files back to it
//! (the local and tar exporters).
//!
//! Receiving: the client walks its tree and sends a STAT packet per entry (ID = its index;
//! an empty STAT ends the walk); we send REQ for each regular file we want, the client
//! answers with DATA chunks (an empty one ends the file); we send FIN when every file is
//! complete and the client answers FIN. Paths from the client are untrusted: each must be a
//! clean relative path whose parent is a directory *this transfer created*, so no entry
//! (not even through a symlink it sent earlier) lands outside the target directory.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use crate::conn::H2Channel;
use crate::proto::fsutil::types::{packet::PacketType, Packet, Stat};
use crate::proto::moby::filesync::v1::BytesMessage;

/// Go's os.FileMode bits (fsutil puts them on the wire).
pub mod gomode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    pub const IRREGULAR: u32 = 1 << 19;
    pub const TYPE: u32 = DIR | SYMLINK | NAMED_PIPE | SOCKET | DEVICE | CHAR_DEVICE | IRREGULAR;

    /// The permission and special bits as a Unix mode (no type bits).
    pub fn to_unix_perm(m: u32) -> u32 {
        let mut u = m & 0o777;
        if m & SETUID != 0 {
            u |= 0o4000;
        }
        if m & SETGID != 0 {
            u |= 0o2000;
        }
        if m & STICKY != 0 {
            u |= 0o1000;
        }
        u
    }

    /// Go's FileMode of a Unix `st_mode`.
    pub fn from_unix(st_mode: u32) -> u32 {
        let mut m = st_mode & 0o777;
        if st_mode & 0o4000 != 0 {
            m |= SETUID;
        }
        if st_mode & 0o2000 != 0 {
            m |= SETGID;
        }
        if st_mode & 0o1000 != 0 {
            m |= STICKY;
        }
        match st_mode & libc::S_IFMT {
            libc::S_IFDIR => m |= DIR,
            libc::S_IFLNK => m |= SYMLINK,
            libc::S_IFIFO => m |= NAMED_PIPE,
            libc::S_IFSOCK => m |= SOCKET,
            libc::S_IFBLK => m |= DEVICE,
            libc::S_IFCHR => m |= DEVICE | CHAR_DEVICE,
            _ => {}
        }
        m
    }
}

/// A file transfer failure.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the client does not serve {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error("invalid path from the client: {0:?}")]
    BadPath(String),
    #[error("the client sent {0}")]
    Protocol(String),
    #[error("error from the client: {0}")]
    Remote(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the session ended")]
    Closed,
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io {
        path: path.to_string(),
        source,
    }
}

/// What to ask the client for.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// The client's name for the directory (`context`, `dockerfile`, a named context).
    pub dir_name: String,
    pub include_patterns: Vec<String>,
    pub exclude_patterns: Vec<String>,
    pub follow_paths: Vec<String>,
}

/// gRPC metadata values must be printable ASCII: others are percent-encoded and the key gets
/// a `-encoded` companion (the client decodes them).
fn put_md(md: &mut tonic::metadata::MetadataMap, key: &'static str, vals: &[String]) {
    let needs = vals
        .iter()
        .any(|v| v.bytes().any(|b| !(0x20..0x7f).contains(&b) || b == b'%'));
    for v in vals {
        let v = if needs { pct_encode(v) } else { v.clone() };
        if let Ok(mv) = MetadataValue::try_from(v.as_str()) {
            md.append(key, mv);
        }
    }
    if needs {
        let k: &'static str = match key {
            "include-patterns" => "include-patterns-encoded",
            "exclude-patterns" => "exclude-patterns-encoded",
            "followpaths" => "followpaths-encoded",
            _ => "dir-name-encoded",
        };
        md.insert(k, MetadataValue::from_static("1"));
    }
}

fn pct_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// The client's stats of the entries a transfer wrote into its directory, by path: what a
/// later transfer into the same directory compares with.
pub type Manifest = HashMap<String, Stat>;

/// Receives the client's directory `req.dir_name` into `dest` (an empty directory of ours).
/// Returns the number of entries written.
pub async fn receive_dir(
    channel: H2Channel,
    req: &SyncRequest,
    dest: &Path,
) -> Result<usize, SyncError> {
    sync_dir(channel, req, dest, Manifest::new())
        .await
        .map(|(n, _)| n)
}

/// Brings `dest`, which holds what an earlier transfer wrote there (`base`, its manifest),
/// up to date with the client's directory, as fsutil's receiver does with BuildKit's
/// local-source snapshots: a regular file whose stat (mode, owner, size, modification time,
/// link name, xattrs) is unchanged is kept without asking for its data; others are written
/// again; entries the client no longer has are removed. `dest` is first checked against
/// `base` (an entry changed or added behind the manifest's back is removed and sent again).
/// Returns the number of entries and `dest`'s new manifest. After an error, `dest` is in
/// no known state.
pub async fn sync_dir(
    channel: H2Channel,
    req: &SyncRequest,
    dest: &Path,
    base: Manifest,
) -> Result<(usize, Manifest), SyncError> {
    let base = if base.is_empty() {
        base
    } else {
        let d = dest.to_path_buf();
        tokio::task::spawn_blocking(move || verify(&d, &base))
            .await
            .map_err(|e| SyncError::Protocol(format!("checking the last transfer: {e}")))??
    };
    use crate::proto::moby::filesync::v1::file_sync_client::FileSyncClient;
    let mut client = FileSyncClient::with_origin(channel, H2Channel::origin())
        .max_decoding_message_size(crate::conn::MAX_MESSAGE);
    let (tx, rx) = mpsc::channel::<Packet>(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    {
        let md = request.metadata_mut();
        put_md(md, "dir-name", std::slice::from_ref(&req.dir_name));
        if !req.include_patterns.is_empty() {
            put_md(md, "include-patterns", &req.include_patterns);
        }
        if !req.exclude_patterns.is_empty() {
            put_md(md, "exclude-patterns", &req.exclude_patterns);
        }
        if !req.follow_paths.is_empty() {
            put_md(md, "followpaths", &req.follow_paths);
        }
    }
    let mut inbound = client.diff_copy(request).await?.into_inner();
    // File system work happens on a blocking thread, in packet order.
    let (wtx, wrx) = std::sync::mpsc::channel::<WriteOp>();
    let dest2 = dest.to_path_buf();
    // Which files need no data: decided here (the requests go out as stats come in), applied
    // by the writer.
    let base = std::sync::Arc::new(base);
    let unchanged = |st: &Stat| base.get(&st.path) == Some(st);
    let writer_base = base.clone();
    let writer = tokio::task::spawn_blocking(move || Writer::new(dest2, writer_base).run(wrx));
    let mut index: u32 = 0;
    let mut wanted: HashSet<u32> = HashSet::new();
    let mut stats_done = false;
    let mut fin_sent = false;
    let mut entries = 0usize;
    let result: Result<(), SyncError> = async {
        loop {
            if stats_done && wanted.is_empty() && !fin_sent {
                let _ = tx
                    .send(Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    })
                    .await;
                fin_sent = true;
            }
            let Some(p) = inbound.message().await? else {
                if fin_sent {
                    return Ok(());
                }
                return Err(SyncError::Protocol("an early end of the transfer".into()));
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketStat) => {
                    let Some(st) = p.stat else {
                        stats_done = true;
                        continue;
                    };
                    let id = index;
                    index += 1;
                    let path = check_path(&st.path)?;
                    let regular = st.mode & gomode::TYPE == 0 && st.linkname.is_empty();
                    let keep = regular && unchanged(&st);
                    let want = regular && !keep;
                    entries += 1;
                    if wtx.send(WriteOp::Entry(id, path, st, keep)).is_err() {
                        break Ok(());
                    }
                    if want {
                        wanted.insert(id);
                        let _ = tx
                            .send(Packet {
                                r#type: PacketType::PacketReq as i32,
                                id,
                                ..Default::default()
                            })
                            .await;
                    }
                }
                Ok(PacketType::PacketData) => {
                    if !wanted.contains(&p.id) {
                        return Err(SyncError::Protocol(format!(
                            "data for file {} that was not requested",
                            p.id
                        )));
                    }
                    let end = p.data.is_empty();
                    if wtx.send(WriteOp::Data(p.id, p.data)).is_err() {
                        break Ok(());
                    }
                    if end {
                        wanted.remove(&p.id);
                    }
                }
                Ok(PacketType::PacketFin) => {
                    if !fin_sent {
                        return Err(SyncError::Protocol("FIN before the transfer ended".into()));
                    }
                    return Ok(());
                }
                Ok(PacketType::PacketErr) => {
                    return Err(SyncError::Remote(
                        String::from_utf8_lossy(&p.data).into_owned(),
                    ))
                }
                Ok(PacketType::PacketReq) | Err(_) => {
                    return Err(SyncError::Protocol(format!("packet type {}", p.r#type)))
                }
            }
        }
    }
    .await;
    drop(wtx);
    drop(tx);
    let written = writer
        .await
        .map_err(|e| SyncError::Protocol(format!("writer: {e}")))?;
    result?;
    Ok((entries, written?))
}

/// Whether `st` (a manifest's entry) still describes the entry `m` on disk.
fn on_disk_as(st: &Stat, m: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let kind = st.mode & gomode::TYPE;
    let ft = m.file_type();
    if kind & gomode::DIR != 0 {
        return ft.is_dir();
    }
    if kind & gomode::SYMLINK != 0 {
        return ft.is_symlink();
    }
    if kind == 0 {
        // Hard links are made again by every transfer.
        return ft.is_file()
            && st.linkname.is_empty()
            && m.len() as i64 == st.size
            && m.mode() & 0o7777 == gomode::to_unix_perm(st.mode)
            && m.mtime() * 1_000_000_000 + m.mtime_nsec() == st.mod_time;
    }
    // Named pipes are made again by every transfer.
    false
}

/// The path of entry `name` of the directory at `rel` (`""`: the root), as transfers name it.
fn entry_path(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// What of `base` still matches `dest` (checked with `lstat`); what `dest` holds beyond it
/// is removed.
fn verify(dest: &Path, base: &Manifest) -> Result<Manifest, SyncError> {
    fn rec(dest: &Path, rel: &str, base: &Manifest, out: &mut Manifest) -> Result<(), SyncError> {
        for e in fs::read_dir(dest.join(rel)).map_err(io_err(rel))? {
            let e = e.map_err(io_err(rel))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let p = entry_path(rel, &name);
            let full = dest.join(&p);
            let m = fs::symlink_metadata(&full).map_err(io_err(&p))?;
            match base.get(&p).filter(|st| on_disk_as(st, &m)) {
                Some(st) => {
                    out.insert(p.clone(), st.clone());
                    if m.is_dir() {
                        rec(dest, &p, base, out)?;
                    }
                }
                None if m.is_dir() => fs::remove_dir_all(&full).map_err(io_err(&p))?,
                None => fs::remove_file(&full).map_err(io_err(&p))?,
            }
        }
        Ok(())
    }
    let mut out = Manifest::new();
    rec(dest, "", base, &mut out)?;
    Ok(out)
}

/// A clean relative path: no empty, `.` or `..` components, not absolute, no NUL.
fn check_path(p: &str) -> Result<String, SyncError> {
    let bad = || SyncError::BadPath(p.to_string());
    if p.is_empty() || p.starts_with('/') || p.contains('\0') {
        return Err(bad());
    }
    for c in p.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(bad());
        }
    }
    Ok(p.to_string())
}

enum WriteOp {
    /// An entry, and whether it is a regular file of `base` kept as it is.
    Entry(u32, String, Stat, bool),
    Data(u32, Vec<u8>),
}

struct Writer {
    dest: PathBuf,
    /// What `dest` held before (checked by `verify`).
    base: std::sync::Arc<Manifest>,
    /// Directories of `base` removed with their contents (replaced by another kind of entry).
    replaced: HashSet<String>,
    /// The entries of this transfer.
    manifest: Manifest,
    /// Directories this transfer created (relative paths; "" is the target itself).
    dirs: HashSet<String>,
    /// Entries created, by relative path (for hard links: regular files only).
    files: HashSet<String>,
    open: HashMap<u32, (fs::File, String, Stat)>,
    dir_times: Vec<(String, i64)>,
}

impl Writer {
    fn new(dest: PathBuf, base: std::sync::Arc<Manifest>) -> Self {
        let mut dirs = HashSet::new();
        dirs.insert(String::new());
        Writer {
            dest,
            base,
            replaced: HashSet::new(),
            manifest: Manifest::new(),
            dirs,
            files: HashSet::new(),
            open: HashMap::new(),
            dir_times: Vec::new(),
        }
    }

    fn run(mut self, rx: std::sync::mpsc::Receiver<WriteOp>) -> Result<Manifest, SyncError> {
        for op in rx {
            match op {
                WriteOp::Entry(id, path, st, keep) => {
                    self.manifest.insert(path.clone(), st.clone());
                    self.entry(id, &path, st, keep)?
                }
                WriteOp::Data(id, data) => self.data(id, &data)?,
            }
        }
        if let Some((_, (_, p, _))) = self.open.iter().next() {
            return Err(SyncError::Protocol(format!("{p}: incomplete file")));
        }
        // What the client no longer has, children first.
        let mut gone: Vec<&String> = self
            .base
            .keys()
            .filter(|p| !self.manifest.contains_key(*p) && !self.under_replaced(p))
            .collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for p in gone {
            let full = self.dest.join(p);
            let r = if self.base[p].mode & gomode::DIR != 0 {
                fs::remove_dir_all(&full)
            } else {
                fs::remove_file(&full)
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(p)(e)),
                _ => {}
            }
        }
        // Directory times last (creating entries changed them).
        for (p, t) in self.dir_times.iter().rev() {
            set_times(&self.dest.join(p), *t, true);
        }
        Ok(self.manifest)
    }

    /// Whether `path` was below a directory of `base` removed as a whole.
    fn under_replaced(&self, path: &str) -> bool {
        path.match_indices('/')
            .any(|(i, _)| self.replaced.contains(&path[..i]))
    }

    /// Takes `path` out of the way for a new entry, or keeps it (`true`): a regular file
    /// the client's stat says is unchanged (`keep`), or a directory that stays one.
    fn reuse(&mut self, path: &str, st: &Stat, keep: bool) -> Result<bool, SyncError> {
        let Some(old) = self.base.get(path) else {
            return Ok(false);
        };
        if self.under_replaced(path) {
            return Ok(false);
        }
        let full = self.dest.join(path);
        let old_dir = old.mode & gomode::DIR != 0;
        if keep {
            return Ok(true);
        }
        if old_dir && st.mode & gomode::DIR != 0 {
            return Ok(true);
        }
        if old_dir {
            fs::remove_dir_all(&full).map_err(io_err(path))?;
            self.replaced.insert(path.to_string());
        } else {
            fs::remove_file(&full).map_err(io_err(path))?;
        }
        Ok(false)
    }

    fn parent_ok(&self, path: &str) -> Result<(), SyncError> {
        let parent = path.rsplit_once('/').map(|(a, _)| a).unwrap_or("");
        if self.dirs.contains(parent) {
            Ok(())
        } else {
            Err(SyncError::BadPath(format!(
                "{path} (its parent is not a directory sent before it)"
            )))
        }
    }

    fn entry(&mut self, id: u32, path: &str, st: Stat, keep: bool) -> Result<(), SyncError> {
        self.parent_ok(path)?;
        let full = self.dest.join(path);
        let perm = gomode::to_unix_perm(st.mode);
        let kind = st.mode & gomode::TYPE;
        if self.dirs.contains(path) || self.files.contains(path) {
            return Err(SyncError::BadPath(format!("{path} (sent twice)")));
        }
        let reused = self.reuse(path, &st, keep)?;
        if reused && kind == 0 {
            self.files.insert(path.to_string());
            return Ok(());
        }
        if kind & gomode::DIR != 0 {
            if !reused {
                fs::create_dir(&full).map_err(io_err(path))?;
            }
            fs::set_permissions(&full, fs::Permissions::from_mode(perm)).map_err(io_err(path))?;
            lchown(&full, st.uid, st.gid);
            self.dirs.insert(path.to_string());
            self.dir_times.push((path.to_string(), st.mod_time));
            return Ok(());
        }
        if kind & gomode::SYMLINK != 0 {
            std::os::unix::fs::symlink(&st.linkname, &full).map_err(io_err(path))?;
            lchown(&full, st.uid, st.gid);
            set_times(&full, st.mod_time, false);
            self.files.insert(path.to_string());
            return Ok(());
        }
        if kind == 0 && !st.linkname.is_empty() {
            // A hard link to a regular file this transfer created.
            let target = check_path(&st.linkname)?;
            if !self.files.contains(&target) || self.dirs.contains(&target) {
                return Err(SyncError::BadPath(format!(
                    "{path} (hard link to {target}, which was not sent before)"
                )));
            }
            fs::hard_link(self.dest.join(&target), &full).map_err(io_err(path))?;
            self.files.insert(path.to_string());
            return Ok(());
        }
        if kind == 0 {
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o600)
                .open(&full)
                .map_err(io_err(path))?;
            self.files.insert(path.to_string());
            self.open.insert(id, (f, path.to_string(), st));
            return Ok(());
        }
        if kind & gomode::NAMED_PIPE != 0 {
            let c = CString::new(full.as_os_str().as_bytes())
                .map_err(|_| SyncError::BadPath(path.into()))?;
            // SAFETY: mkfifo(3) with a valid NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), perm) } != 0 {
                return Err(io_err(path)(std::io::Error::last_os_error()));
            }
            lchown(&full, st.uid, st.gid);
            self.files.insert(path.to_string());
            return Ok(());
        }
        // Devices and sockets have no place in a build context: skipped, as the tar path
        // of the legacy builder does.
        tracing::debug!("file sync: skipping special file {path}");
        Ok(())
    }

    fn data(&mut self, id: u32, data: &[u8]) -> Result<(), SyncError> {
        if data.is_empty() {
            let Some((f, path, st)) = self.open.remove(&id) else {
                return Err(SyncError::Protocol(format!("data for unknown file {id}")));
            };
            let _ = std::os::unix::fs::fchown(&f, Some(st.uid), Some(st.gid));
            f.set_permissions(fs::Permissions::from_mode(gomode::to_unix_perm(st.mode)))
                .map_err(io_err(&path))?;
            futimes(&f, st.mod_time);
            return Ok(());
        }
        let Some((f, path, _)) = self.open.get_mut(&id) else {
            return Err(SyncError::Protocol(format!("data for unknown file {id}")));
        };
        f.write_all(data).map_err(io_err(path))
    }
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

fn futimes(f: &fs::File, ns: i64) {
    use std::os::fd::AsRawFd;
    let ts = [timespec(ns), timespec(ns)];
    // SAFETY: futimens(2) on an open descriptor with two valid timespecs.
    unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) };
}

fn set_times(p: &Path, ns: i64, follow: bool) {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return;
    };
    let ts = [timespec(ns), timespec(ns)];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: utimensat(2) with a valid path and two valid timespecs.
    unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) };
}

/// Writes a byte stream into the client's file output `exporter_id` (the tar exporter and
/// file outputs of the oci/docker exporters). `md` is passed as `exporter-md-*` metadata.
pub async fn send_file(
    channel: H2Channel,
    exporter_id: usize,
    md: &[(String, String)],
    mut data: mpsc::Receiver<Vec<u8>>,
) -> Result<(), SyncError> {
    use crate::proto::moby::filesync::v1::file_send_client::FileSendClient;
    let mut client = FileSendClient::with_origin(channel, H2Channel::origin());
    let (tx, rx) = mpsc::channel::<BytesMessage>(8);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    set_exporter_md(request.metadata_mut(), exporter_id, md);
    let call = tokio::spawn(async move { client.diff_copy(request).await });
    while let Some(chunk) = data.recv().await {
        // Messages below the peers' 4 MiB default.
        for part in chunk.chunks(1 << 20) {
            if tx
                .send(BytesMessage {
                    data: part.to_vec(),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    }
    drop(tx);
    let mut inbound = call
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))??
        .into_inner();
    while inbound.message().await?.is_some() {}
    Ok(())
}

fn set_exporter_md(md: &mut tonic::metadata::MetadataMap, id: usize, extra: &[(String, String)]) {
    if let Ok(v) = MetadataValue::try_from(id.to_string().as_str()) {
        md.insert("buildkit-attachable-exporter-id", v);
    }
    for (k, v) in extra {
        let key = format!("exporter-md-{k}");
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(k, v);
        }
    }
}

/// Sends the directory tree `src` to the client's directory output `exporter_id` (the local
/// exporter): fsutil's sender side over `FileSend.DiffCopy`.
pub async fn send_dir(
    channel: H2Channel,
    exporter_id: usize,
    src: PathBuf,
) -> Result<(), SyncError> {
    let path = "/moby.filesync.v1.FileSend/DiffCopy";
    let mut grpc = tonic::client::Grpc::with_origin(channel, H2Channel::origin());
    grpc.ready()
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<Packet>(64);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    set_exporter_md(request.metadata_mut(), exporter_id, &[]);
    let codec = tonic_prost::ProstCodec::<Packet, Packet>::default();
    // The client answers (response headers included) only once it has stats: the call runs
    // on its own while they are sent.
    let call = tokio::spawn(async move {
        grpc.streaming(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
    });
    // The walk: every entry's stat, in lexical order, parents first.
    let list = tokio::task::spawn_blocking(move || walk(&src))
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))??;
    let mut files: HashMap<u32, PathBuf> = HashMap::new();
    for (i, (host, st)) in list.into_iter().enumerate() {
        if st.mode & gomode::TYPE == 0 && st.linkname.is_empty() {
            files.insert(i as u32, host);
        }
        if tx
            .send(Packet {
                r#type: PacketType::PacketStat as i32,
                stat: Some(st),
                ..Default::default()
            })
            .await
            .is_err()
        {
            return Err(SyncError::Closed);
        }
    }
    let _ = tx
        .send(Packet {
            r#type: PacketType::PacketStat as i32,
            ..Default::default()
        })
        .await;
    let mut inbound = call
        .await
        .map_err(|e| SyncError::Protocol(e.to_string()))??
        .into_inner();
    while let Some(p) = inbound.message().await? {
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketReq) => {
                let Some(host) = files.remove(&p.id) else {
                    return Err(SyncError::Protocol(format!("a request for file {}", p.id)));
                };
                let data = tokio::fs::read(&host)
                    .await
                    .map_err(io_err(&host.display().to_string()))?;
                for chunk in data.chunks(32 << 10) {
                    let _ = tx
                        .send(Packet {
                            r#type: PacketType::PacketData as i32,
                            id: p.id,
                            data: chunk.to_vec(),
                            ..Default::default()
                        })
                        .await;
                }
                let _ = tx
                    .send(Packet {
                        r#type: PacketType::PacketData as i32,
                        id: p.id,
                        ..Default::default()
                    })
                    .await;
            }
            Ok(PacketType::PacketFin) => {
                let _ = tx
                    .send(Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    })
                    .await;
                drop(tx);
                while inbound.message().await?.is_some() {}
                return Ok(());
            }
            Ok(PacketType::PacketErr) => {
                return Err(SyncError::Remote(
                    String::from_utf8_lossy(&p.data).into_owned(),
                ))
            }
            _ => return Err(SyncError::Protocol(format!("packet type {}", p.r#type))),
        }
    }
    Err(SyncError::Protocol("an early end of the transfer".into()))
}

/// Stats of every entry below `root` in fsutil's order (lexical by path, a directory before
/// its children), with hard links to an earlier path.
pub fn walk(root: &Path) -> Result<Vec<(PathBuf, Stat)>, SyncError> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    fn rec(
        root: &Path,
        rel: &str,
        out: &mut Vec<(PathBuf, Stat)>,
        inodes: &mut HashMap<(u64, u64), String>,
    ) -> Result<(), SyncError> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(rel))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let p = entry_path(rel, &n);
            let host = root.join(&p);
            let m = fs::symlink_metadata(&host).map_err(io_err(&p))?;
            let mut st = Stat {
                path: p.clone(),
                mode: gomode::from_unix(m.mode()),
                uid: m.uid(),
                gid: m.gid(),
                size: 0,
                mod_time: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ..Default::default()
            };
            if m.file_type().is_symlink() {
                st.linkname = fs::read_link(&host)
                    .map_err(io_err(&p))?
                    .to_string_lossy()
                    .into_owned();
                st.size = st.linkname.len() as i64;
            } else if m.is_file() {
                st.size = m.len() as i64;
                if m.nlink() > 1 {
                    match inodes.get(&(m.dev(), m.ino())) {
                        Some(first) => {
                            st.linkname = first.clone();
                            st.size = 0;
                        }
                        None => {
                            inodes.insert((m.dev(), m.ino()), p.clone());
                        }
                    }
                }
            }
            let is_dir = m.is_dir();
            out.push((host, st));
            if is_dir {
                rec(root, &p, out, inodes)?;
            }
        }
        Ok(())
    }
    rec(root, "", &mut out, &mut inodes)?;
    Ok(out)
}
