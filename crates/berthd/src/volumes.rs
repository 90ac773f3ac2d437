//! Named volumes with the `local` driver (`<data-root>/volumes/<name>/_data`).
//!
//! A volume is a directory `<root>/<name>` holding `_data` and `opts.json` (driver, labels,
//! options, creation time). Creation builds the whole directory under a temporary name,
//! fsyncs it and renames it into place; removal renames it to a `.trash-*` name first: after a
//! crash a volume either exists completely or not at all (leftovers are swept at open).
//!
//! Volumes with `type`/`device`/`o` options are mounted (mount(2)) on their `_data` while at
//! least one running container uses them, and unmounted when the last one stops. References
//! (which containers use a volume, running or not) are kept in memory, rebuilt from the
//! containers' mount records at start, and block removal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::http::StatusCode;
use berth_api::Filters;
use serde::{Deserialize, Serialize};

use crate::util;

/// Errors of the volume store, with Docker's status codes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Invalid(String),
    /// An operation on the volume's files failed (`op` names it and the volume).
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeError {
    pub fn status(&self) -> StatusCode {
        match self {
            VolumeError::NotFound(_) => StatusCode::NOT_FOUND,
            VolumeError::InUse(_) => StatusCode::CONFLICT,
            VolumeError::Invalid(_) => StatusCode::BAD_REQUEST,
            VolumeError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn io(op: &str, source: std::io::Error) -> VolumeError {
    VolumeError::Io {
        op: op.to_string(),
        source,
    }
}

pub type Result<T> = std::result::Result<T, VolumeError>;

/// The metadata of a volume (`opts.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: LocalOpts,
    pub created_at: String,
    /// Created for one container (`-v /path`, image `VOLUME`): `rm -v` removes it.
    #[serde(default)]
    pub anonymous: bool,
}

/// One volume's disk usage (for `system df`).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeUsage {
    pub name: String,
    pub size: u64,
    pub ref_count: usize,
}

#[derive(Default)]
struct Inner {
    vols: BTreeMap<String, Volume>,
    /// volume -> containers referencing it.
    refs: HashMap<String, BTreeSet<String>>,
    /// volume -> running users (containers or archive sessions) while it is mounted.
    active: HashMap<String, BTreeSet<String>>,
    /// container -> the volumes its running instance mounts (`mount`/`unmount` events).
    mounted: HashMap<String, Vec<String>>,
}

/// The volume store.
pub struct VolumeStore {
    root: PathBuf,
    inner: Mutex<Inner>,
    /// Where `create`, `mount`, `unmount` and `destroy` events go (set by the engine).
    events: std::sync::OnceLock<crate::events::Bus>,
}

/// Docker's volume name rule (that of every user-given name).
pub use crate::names::valid as valid_name;

/// The longest volume name: one file name under the volumes' root.
const MAX_NAME: usize = 255;

/// The local driver's options (dockerd's `optsConfig`), parsed once at creation; stored in
/// `opts.json` and answered as Docker's `Options` map with the same keys in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOpts {
    /// What to mount (`device=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Mount flags and data (`o=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub o: Option<String>,
    /// A quota (`size=`): refused, Berth has no quota support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The filesystem type (`type=`); a volume with one is mounted while in use.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

impl LocalOpts {
    /// Parses a create request's options with dockerd's checks and wording (`volume`, the
    /// volume's name, leads the message).
    fn parse(volume: &str, options: BTreeMap<String, String>) -> Result<LocalOpts> {
        let mut o = LocalOpts::default();
        for (k, v) in options {
            let slot = match k.as_str() {
                "device" => &mut o.device,
                "o" => &mut o.o,
                "size" => &mut o.size,
                "type" => &mut o.typ,
                _ => {
                    return Err(VolumeError::Invalid(format!(
                        "create {volume}: invalid option: {k:?}"
                    )))
                }
            };
            *slot = Some(v);
        }
        if o.size.is_some() {
            return Err(VolumeError::Invalid(format!(
                "create {volume}: quota size requested but no quota support"
            )));
        }
        let has = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
        if (has(&o.typ) || has(&o.o) || has(&o.device)) && !(has(&o.typ) && has(&o.device)) {
            let missing = if has(&o.typ) { "device" } else { "type" };
            return Err(VolumeError::Invalid(format!(
                "create {volume}: missing required option: \"{missing}\""
            )));
        }
        Ok(o)
    }

    /// Whether the volume is mounted on its `_data` while in use (a `type` is set).
    pub fn mounts(&self) -> bool {
        self.typ.as_deref().is_some_and(|t| !t.is_empty())
    }

    /// Docker's `Options` map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        [
            ("device", &self.device),
            ("o", &self.o),
            ("size", &self.size),
            ("type", &self.typ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.clone()?)))
        .collect()
    }
}

impl VolumeStore {
    /// Opens (creating) `<root>`, sweeping interrupted creations and removals.
    pub fn open(root: &Path) -> std::io::Result<VolumeStore> {
        std::fs::create_dir_all(root)?;
        let mut vols = BTreeMap::new();
        for e in std::fs::read_dir(root)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                let _ = unmount_if_mounted(&e.path().join("_data"));
                let _ = std::fs::remove_dir_all(e.path());
                continue;
            }
            match util::read_json::<Volume>(&e.path().join("opts.json")) {
                Ok(v) => {
                    vols.insert(name, v);
                }
                Err(err) => tracing::warn!("skipping volume {name}: {err}"),
            }
        }
        Ok(VolumeStore {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner {
                vols,
                ..Inner::default()
            }),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Publishes volume events on `bus` from now on.
    pub fn set_events(&self, bus: crate::events::Bus) {
        let _ = self.events.set(bus);
    }

    fn event(&self, action: &str, name: &str, extra: &[(&str, &str)]) {
        if let Some(b) = self.events.get() {
            b.volume(action, name, extra);
        }
    }

    /// A container's start mounts volume `name` at `destination` (the `mount` event; its
    /// stop gives the `unmount` one, see [`VolumeStore::release`]).
    pub fn mounted(
        &self,
        name: &str,
        container: &str,
        destination: &str,
        rw: bool,
        propagation: &str,
    ) {
        self.inner
            .lock()
            .unwrap()
            .mounted
            .entry(container.to_string())
            .or_default()
            .push(name.to_string());
        self.event(
            "mount",
            name,
            &[
                ("container", container),
                ("destination", destination),
                ("propagation", propagation),
                ("read/write", if rw { "true" } else { "false" }),
            ],
        );
    }

    /// `<root>/<name>`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The host directory containers see (`<root>/<name>/_data`).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    /// Creates a volume; an existing one with the same name is returned as is (Docker).
    pub fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        let driver = if driver.is_empty() { "local" } else { driver };
        if driver != "local" {
            return Err(VolumeError::Invalid(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                if !valid_name(n) {
                    return Err(VolumeError::Invalid(format!(
                        "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
                    )));
                }
                if n.len() > MAX_NAME {
                    return Err(VolumeError::Invalid(format!(
                        "create {}…: volume name is too long ({} characters, at most {MAX_NAME})",
                        &n[..32],
                        n.len()
                    )));
                }
                n.to_string()
            }
            None => util::new_id(),
        };
        let options = LocalOpts::parse(&name, options)?;
        let mut g = self.inner.lock().unwrap();
        if let Some(v) = g.vols.get(&name) {
            return Ok(v.clone());
        }
        let v = Volume {
            name: name.clone(),
            driver: driver.into(),
            labels,
            options,
            created_at: now_rfc3339_secs(),
            anonymous,
        };
        let tmp = self.root.join(format!(".tmp-{}", util::random_hex(8)));
        let res = (|| -> std::io::Result<()> {
            std::fs::create_dir(&tmp)?;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o701))?;
            std::fs::create_dir(tmp.join("_data"))?;
            std::fs::set_permissions(
                tmp.join("_data"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            util::write_json_atomic(&tmp.join("opts.json"), &v)?;
            berth_image::fsutil::fsync_dir(&tmp)?;
            crate::failpoint::hit("volume.create");
            std::fs::rename(&tmp, self.dir(&name))?;
            berth_image::fsutil::fsync_dir(&self.root)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io(&format!("create {name}"), e));
        }
        g.vols.insert(name.clone(), v.clone());
        drop(g);
        self.event("create", &name, &[]);
        Ok(v)
    }

    pub fn get(&self, name: &str) -> Result<Volume> {
        self.inner
            .lock()
            .unwrap()
            .vols
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<Volume> {
        self.inner.lock().unwrap().vols.values().cloned().collect()
    }

    /// Containers referencing a volume.
    pub fn users(&self, name: &str) -> Vec<String> {
        self.inner
            .lock()
            .unwrap()
            .refs
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes a volume; refused (409) while a container references it. `force` only makes a
    /// missing volume not an error (Docker).
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        let mut g = self.inner.lock().unwrap();
        if !g.vols.contains_key(name) {
            return if force {
                Ok(())
            } else {
                Err(VolumeError::NotFound(name.to_string()))
            };
        }
        if let Some(users) = g.refs.get(name).filter(|s| !s.is_empty()) {
            let list: Vec<&str> = users.iter().map(String::as_str).collect();
            return Err(VolumeError::InUse(format!(
                "remove {name}: volume is in use - [{}]",
                list.join(", ")
            )));
        }
        let dir = self.dir(name);
        // Never delete through a mount (a bind volume's device is someone's directory).
        unmount_if_mounted(&dir.join("_data"))
            .map_err(|e| io(&format!("remove {name}: unmounting"), e))?;
        let trash = self.root.join(format!(".trash-{}", util::random_hex(8)));
        std::fs::rename(&dir, &trash).map_err(|e| io(&format!("remove {name}"), e))?;
        let _ = berth_image::fsutil::fsync_dir(&self.root);
        crate::failpoint::hit("volume.remove");
        g.vols.remove(name);
        g.active.remove(name);
        drop(g);
        if let Err(e) = berth_image::snapshot::remove_tree(&trash) {
            tracing::warn!("removing {}: {e}", trash.display());
        }
        self.event("destroy", name, &[]);
        Ok(())
    }

    /// Records that `container` uses `name` (which must exist).
    pub fn add_ref(&self, name: &str, container: &str) -> Result<()> {
        let mut g = self.inner.lock().unwrap();
        if !g.vols.contains_key(name) {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        g.refs
            .entry(name.to_string())
            .or_default()
            .insert(container.to_string());
        Ok(())
    }

    /// Drops every reference of `container`; returns the volumes it referenced.
    pub fn drop_refs(&self, container: &str) -> Vec<String> {
        let mut g = self.inner.lock().unwrap();
        let mut out = Vec::new();
        for (name, users) in g.refs.iter_mut() {
            if users.remove(container) {
                out.push(name.clone());
            }
        }
        g.refs.retain(|_, u| !u.is_empty());
        out
    }

    /// Makes a volume's data available for `user` (a running container or an archive
    /// session): volumes with mount options are mounted on their `_data` by the first user.
    pub fn activate(&self, name: &str, user: &str) -> Result<PathBuf> {
        let mut g = self.inner.lock().unwrap();
        let v = g
            .vols
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::NotFound(name.to_string()))?;
        let data = self.data_path(name);
        if v.options.mounts() {
            let users = g.active.entry(name.to_string()).or_default();
            if users.is_empty() && !is_mountpoint(&data) {
                mount_opts(&v.options, &data)
                    .map_err(|e| io(&format!("mounting volume {name}"), e))?;
            }
            users.insert(user.to_string());
        }
        Ok(data)
    }

    /// `user` no longer needs its volumes: the last user of a mounted volume unmounts it.
    pub fn release(&self, user: &str) {
        let mut g = self.inner.lock().unwrap();
        let unmounted = g.mounted.remove(user).unwrap_or_default();
        let mut emptied = Vec::new();
        for (name, users) in g.active.iter_mut() {
            if users.remove(user) && users.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            g.active.remove(&name);
            if let Err(e) = unmount_if_mounted(&self.data_path(&name)) {
                tracing::warn!("unmounting volume {name}: {e}");
            }
        }
        drop(g);
        for name in unmounted {
            self.event("unmount", &name, &[("container", user)]);
        }
    }

    /// After loading containers: unmounts option volumes nobody runs with.
    pub fn sweep_mounts(&self) {
        let g = self.inner.lock().unwrap();
        for (name, v) in &g.vols {
            if v.options.typ.is_some() && !g.active.contains_key(name) {
                let _ = unmount_if_mounted(&self.data_path(name));
            }
        }
    }

    /// Disk usage of every volume (`-1` refcount never: unused volumes have 0).
    pub fn usage(&self) -> Vec<VolumeUsage> {
        let (vols, refs): (Vec<String>, HashMap<String, usize>) = {
            let g = self.inner.lock().unwrap();
            (
                g.vols.keys().cloned().collect(),
                g.refs.iter().map(|(k, v)| (k.clone(), v.len())).collect(),
            )
        };
        vols.into_iter()
            .map(|name| VolumeUsage {
                size: dir_size(&self.data_path(&name)),
                ref_count: refs.get(&name).copied().unwrap_or(0),
                name,
            })
            .collect()
    }

    /// `POST /volumes/prune`: removes unused volumes matching the filters (anonymous ones only
    /// unless `all=true`). Returns (names, bytes reclaimed).
    pub fn prune(&self, filters: &Filters) -> Result<(Vec<String>, u64)> {
        let all = filters.get("all").any(|v| matches!(v, "1" | "true"));
        for (k, _) in &filters.0 {
            if !matches!(k.as_str(), "all" | "label" | "label!") {
                return Err(VolumeError::Invalid(format!("invalid filter '{k}'")));
            }
        }
        let candidates: Vec<Volume> = {
            let g = self.inner.lock().unwrap();
            g.vols
                .values()
                .filter(|v| g.refs.get(&v.name).is_none_or(|s| s.is_empty()))
                .filter(|v| all || v.anonymous)
                .filter(|v| label_filters_match(v, filters))
                .cloned()
                .collect()
        };
        let mut names = Vec::new();
        let mut space = 0;
        for v in candidates {
            let size = dir_size(&self.data_path(&v.name));
            match self.remove(&v.name, false) {
                Ok(()) => {
                    names.push(v.name);
                    space += size;
                }
                Err(VolumeError::InUse(_)) | Err(VolumeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((names, space))
    }
}

fn label_filters_match(v: &Volume, filters: &Filters) -> bool {
    let has = |spec: &str| match spec.split_once('=') {
        Some((k, val)) => v.labels.get(k).map(String::as_str) == Some(val),
        None => v.labels.contains_key(spec),
    };
    filters.prune_labels_match(has)
}

fn now_rfc3339_secs() -> String {
    let (s, _) = berth_image::timeutil::now();
    let full = util::format_rfc3339_nano(s, 0);
    // Docker shows seconds: `2024-01-01T00:00:00Z`.
    match full.split_once('.') {
        Some((a, _)) => format!("{a}Z"),
        None => full,
    }
}

/// Total bytes of regular files below `p` (hard links counted once), not following symlinks.
pub fn dir_size(p: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>, dev: u64) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        let mut total = 0;
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                if m.dev() == dev {
                    total += walk(&e.path(), seen, dev);
                }
            } else if m.is_file() && (m.nlink() <= 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
        total
    }
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(p).map(|m| m.dev()).unwrap_or(0);
    walk(p, &mut Default::default(), dev)
}

/// Whether `p` is a mount point (its mount id differs from its parent's).
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(canon) = std::fs::canonicalize(p) else {
        return false;
    };
    let want = canon.to_string_lossy();
    mi.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

pub(crate) fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn unmount_if_mounted(p: &Path) -> std::io::Result<()> {
    while is_mountpoint(p) {
        berth_image::snapshot::unmount(p)?;
    }
    Ok(())
}

/// The mount(2) flags Docker's `o=` understands (the runtime's option table: `ro`, `nosuid`,
/// `noatime`, `bind`, `rbind`, propagation...); the rest becomes the data string.
pub fn parse_mount_options(o: &str) -> (libc::c_ulong, String) {
    let opts: Vec<String> = o
        .split(',')
        .filter(|s| !s.is_empty() && *s != "defaults")
        .map(str::to_string)
        .collect();
    let p = berth_runtime::mounts::parse_options(&opts);
    let mut flags = p.flags;
    if p.bind {
        flags |= libc::MS_BIND;
    }
    if p.recursive {
        flags |= libc::MS_REC;
    }
    for f in p.propagation {
        flags |= f;
    }
    (flags, p.data.join(","))
}

/// Mounts a volume's `type`/`device`/`o` on `target` (Docker's local driver).
pub fn mount_opts(opts: &LocalOpts, target: &Path) -> std::io::Result<()> {
    let typ = opts.typ.as_deref().unwrap_or("");
    let device = opts.device.as_deref().unwrap_or("");
    let o = opts.o.as_deref().unwrap_or("");
    let (flags, mut data) = parse_mount_options(o);
    // nfs-style `addr=host`: the kernel wants an address.
    if typ.starts_with("nfs") {
        data = data
            .split(',')
            .map(|kv| match kv.split_once('=') {
                Some(("addr", host)) => {
                    use std::net::ToSocketAddrs;
                    match (host, 0).to_socket_addrs().ok().and_then(|mut a| a.next()) {
                        Some(a) => format!("addr={}", a.ip()),
                        None => kv.to_string(),
                    }
                }
                _ => kv.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    let c = |s: &str| {
        std::ffi::CString::new(s)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in option"))
    };
    let src = c(device)?;
    let tgt = c(&target.to_string_lossy())?;
    let fstype = c(typ)?;
    let dat = c(&data)?;
    let bind = flags & libc::MS_BIND != 0;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            if bind {
                std::ptr::null()
            } else {
                fstype.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                dat.as_ptr().cast()
            },
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if bind && flags & libc::MS_RDONLY != 0 {
        // SAFETY: as above; a read-only bind needs a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                tgt.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let _ = berth_image::snapshot::unmount(target);
            return Err(e);
        }
    }
    Ok(())
}

impl VolumeStore {
    /// Docker's shape of a volume.
    pub fn to_api(&self, v: &Volume) -> berth_api::volume::Volume {
        let mut labels = v.labels.clone();
        if v.anonymous {
            labels.insert("com.docker.volume.anonymous".into(), String::new());
        }
        berth_api::volume::Volume {
            created_at: v.created_at.clone(),
            driver: v.driver.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            mountpoint: self.data_path(&v.name).display().to_string(),
            name: v.name.clone(),
            options: Some(v.options.to_map()).filter(|o| !o.is_empty()),
            scope: "local".into(),
            usage_data: None,
        }
    }

    /// `GET /volumes` (filters: name, driver, dangling, label, label!).
    pub fn list_api(&self, filters: &Filters) -> Result<Vec<berth_api::volume::Volume>> {
        if let Some((k, _)) = filters.0.iter().find(|(k, _)| {
            !matches!(
                k.as_str(),
                "name" | "driver" | "dangling" | "label" | "label!"
            )
        }) {
            return Err(VolumeError::Invalid(format!("invalid filter '{k}'")));
        }
        let dangling = filters
            .has("dangling")
            .then(|| filters.bool_or("dangling", false))
            .transpose()
            .map_err(VolumeError::Invalid)?;
        Ok(self
            .list()
            .iter()
            .filter(|v| {
                dangling.is_none_or(|d| self.users(&v.name).is_empty() == d)
                    && filters.0.iter().all(|(k, val)| match k.as_str() {
                        "name" => v.name.contains(val.as_str()),
                        "driver" => &v.driver == val,
                        "label" | "label!" => {
                            label_filters_match(v, &Filters(vec![(k.clone(), val.clone())]))
                        }
                        _ => true,
                    })
            })
            .map(|v| self.to_api(v))
            .collect())
    }

    /// The volumes part of `GET /system/df` (`verbose` adds nothing more for volumes, the
    /// CLI's `-v` shows the same entries).
    pub fn df(&self) -> Vec<berth_api::volume::Volume> {
        let usage: HashMap<String, VolumeUsage> = self
            .usage()
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        self.list()
            .iter()
            .map(|v| {
                let u = usage.get(&v.name);
                berth_api::volume::Volume {
                    usage_data: Some(berth_api::volume::UsageData {
                        size: u.map(|u| u.size as i64).unwrap_or(-1),
                        ref_count: u.map(|u| u.ref_count as i64).unwrap_or(0),
                    }),
                    ..self.to_api(v)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh temporary directory (removed when the guard drops).
    fn store() -> (tempfile::TempDir, VolumeStore) {
        let d = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn names() {
        assert!(valid_name("ab"));
        assert!(valid_name("my_vol.1-x"));
        assert!(!valid_name("a"));
        assert!(!valid_name("-ab"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn create_remove_refs_and_reopen() {
        let (d, s) = store();
        let mut labels = BTreeMap::new();
        labels.insert("k".into(), "v".into());
        let v = s
            .create(Some("vol1"), "", labels, BTreeMap::new(), false)
            .unwrap();
        assert_eq!(v.driver, "local");
        assert!(s.data_path("vol1").is_dir());
        // Same name again: the existing volume.
        let again = s
            .create(
                Some("vol1"),
                "local",
                BTreeMap::new(),
                BTreeMap::new(),
                false,
            )
            .unwrap();
        assert_eq!(again, v);
        s.add_ref("vol1", "c1").unwrap();
        let e = s.remove("vol1", true).unwrap_err();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert!(e.to_string().contains("volume is in use - [c1]"), "{e}");
        assert_eq!(s.drop_refs("c1"), vec!["vol1".to_string()]);
        // Reopen: the metadata survived; leftovers of an interrupted creation are swept.
        std::fs::create_dir(d.path().join(".tmp-dead")).unwrap();
        drop(s);
        let s = VolumeStore::open(d.path()).unwrap();
        assert_eq!(s.get("vol1").unwrap(), v, "labels and all");
        assert!(!d.path().join(".tmp-dead").exists());
        s.remove("vol1", false).unwrap();
        assert!(s.get("vol1").is_err());
        assert!(!d.path().join("vol1").exists());
        assert!(s.remove("vol1", true).is_ok());
        assert_eq!(
            s.remove("vol1", false).unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn local_opts_keep_the_map_shape() {
        let map: BTreeMap<String, String> =
            [("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        let o = LocalOpts::parse("v", map.clone()).unwrap();
        assert_eq!(
            (o.typ.as_deref(), o.device.as_deref()),
            (Some("tmpfs"), Some("tmpfs"))
        );
        assert_eq!((o.o.as_deref(), o.size.as_deref()), (Some("size=1m"), None));
        let json = serde_json::to_string(&map).unwrap();
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            json,
            "opts.json keeps its bytes"
        );
        assert_eq!(serde_json::from_str::<LocalOpts>(&json).unwrap(), o);
        assert_eq!(o.to_map(), map, "the API's Options");
        assert!(serde_json::from_str::<LocalOpts>(r#"{"bogus":"1"}"#).is_err());
        let none = LocalOpts::parse("v", BTreeMap::new()).unwrap();
        assert!(!none.mounts() && none.to_map().is_empty());
        assert_eq!(serde_json::to_string(&none).unwrap(), "{}");
    }

    #[test]
    fn bad_options() {
        let (_d, s) = store();
        for (name, key, value, want) in [
            ("v1", "bogus", "1", "invalid option: \"bogus\""),
            ("v2", "type", "tmpfs", "missing required option: \"device\""),
        ] {
            let o = BTreeMap::from([(key.to_string(), value.to_string())]);
            let e = s
                .create(Some(name), "", BTreeMap::new(), o, false)
                .unwrap_err();
            assert!(e.to_string().contains(want), "{name}: {e}");
        }
        assert!(s
            .create(
                Some("v3"),
                "flocker",
                BTreeMap::new(),
                BTreeMap::new(),
                false
            )
            .is_err());
    }

    #[test]
    fn tmpfs_volume_is_mounted_while_active() {
        let (_d, s) = store();
        let mut o = BTreeMap::new();
        o.insert("type".into(), "tmpfs".into());
        o.insert("device".into(), "tmpfs".into());
        o.insert("o".into(), "size=1m,uid=1000".into());
        s.create(Some("tv"), "", BTreeMap::new(), o, false).unwrap();
        let p = s.activate("tv", "a").unwrap();
        s.activate("tv", "b").unwrap();
        assert!(is_mountpoint(&p));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), 1000);
        s.release("a");
        assert!(is_mountpoint(&p));
        s.release("b");
        assert!(!is_mountpoint(&p));
        s.remove("tv", false).unwrap();
    }

    #[test]
    fn bind_volume_opts() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("f"), "x").unwrap();
        let s = VolumeStore::open(&d.path().join("vols")).unwrap();
        let mut o = BTreeMap::new();
        o.insert("type".into(), "none".into());
        o.insert("device".into(), host.display().to_string());
        o.insert("o".into(), "bind,ro".into());
        s.create(Some("bv"), "", BTreeMap::new(), o, false).unwrap();
        let p = s.activate("bv", "c").unwrap();
        let seen = std::fs::read_to_string(p.join("f"));
        let write = std::fs::write(p.join("g"), "y");
        s.release("c");
        assert_eq!(seen.unwrap(), "x");
        assert!(write.is_err(), "a read-only bind volume accepted a write");
        assert!(!is_mountpoint(&p));
        s.remove("bv", false).unwrap();
        assert!(
            host.join("f").exists(),
            "removing the volume touched the bound directory"
        );
    }

    #[test]
    fn mount_option_parsing() {
        let (f, d) = parse_mount_options("ro,nosuid,size=10m,uid=5");
        assert_eq!(f, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(d, "size=10m,uid=5");
        let (f, d) = parse_mount_options("defaults,rbind,rw,rshared,noexec,addr=1.2.3.4");
        assert_eq!(
            f,
            libc::MS_BIND | libc::MS_REC | libc::MS_SHARED | libc::MS_NOEXEC
        );
        assert_eq!(d, "addr=1.2.3.4");
    }
}
