//! A container's mounts: `HostConfig.Binds`, `HostConfig.Mounts`, `HostConfig.Tmpfs`,
//! `VolumesFrom`, anonymous volumes (`Config.Volumes`, the image's `VOLUME`s).
//!
//! At create the request is parsed into [`MountPoint`]s ([`plan`], 400 on a bad spec), the
//! volumes are created and referenced and the list is recorded in
//! `<data-root>/containers/<id>/mounts.json` ([`commit`]). At start [`setup`] activates the
//! volumes (mounting those with options), copies image content into new empty volumes
//! (Docker's copy-up) and returns the OCI mount entries. The engine calls [`on_stopped`] when
//! the container stops and [`on_removed`] when it is removed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::{Engine, EngineError};
use crate::util;

type Result<T> = std::result::Result<T, EngineError>;

fn bad(m: impl Into<String>) -> EngineError {
    EngineError::BadRequest(m.into())
}

/// One mount of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountPoint {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// The volume name (volumes).
    #[serde(default)]
    pub name: String,
    /// The host path (binds).
    #[serde(default)]
    pub source: String,
    pub destination: String,
    pub rw: bool,
    /// Docker's `Mode` string as given (`ro`, `z`, `ro,Z`…).
    #[serde(default)]
    pub mode: String,
    /// `rprivate`, `rshared`, … (binds).
    #[serde(default)]
    pub propagation: String,
    #[serde(default)]
    pub anonymous: bool,
    /// No copy-up for this volume.
    #[serde(default)]
    pub nocopy: bool,
    /// Bind only the top mount (no `rbind`).
    #[serde(default)]
    pub non_recursive: bool,
    /// Options of a tmpfs mount (`size=…`, `mode=…`, `noexec`…).
    #[serde(default)]
    pub tmpfs_options: Vec<String>,
    /// Came from `HostConfig.Mounts` (shown as such in inspect).
    #[serde(default)]
    pub from_mounts_api: bool,
    /// Volume creation details from `--mount` (labels, driver options).
    #[serde(default)]
    pub volume_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub volume_opts: BTreeMap<String, String>,
    /// `volume-subpath` (`VolumeOptions.Subpath`): only this directory or file of the volume
    /// is mounted (relative, resolved inside the volume).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subpath: String,
}

impl MountPoint {
    fn new(typ: &str, dest: &str) -> MountPoint {
        MountPoint {
            typ: typ.into(),
            name: String::new(),
            source: String::new(),
            destination: dest.into(),
            rw: true,
            mode: String::new(),
            propagation: String::new(),
            anonymous: false,
            nocopy: false,
            non_recursive: false,
            tmpfs_options: vec![],
            from_mounts_api: false,
            volume_labels: BTreeMap::new(),
            volume_opts: BTreeMap::new(),
            subpath: String::new(),
        }
    }
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn clean_dest(d: &str, spec: &str) -> Result<String> {
    if !d.starts_with('/') {
        return Err(bad(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"volume\": invalid mount path: '{d}' mount path must be absolute"
        )));
    }
    let mut parts = Vec::new();
    for c in d.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(bad(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Parses one `HostConfig.Binds` entry.
pub fn parse_bind(spec: &str) -> Result<MountPoint> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(bad(format!("invalid volume specification: '{spec}'"))),
    };
    if dst.is_empty() {
        return Err(bad(format!("invalid volume specification: '{spec}'")));
    }
    let mut m = if src.is_empty() {
        let mut m = MountPoint::new("volume", "");
        m.anonymous = true;
        m
    } else if src.starts_with('/') {
        let mut m = MountPoint::new("bind", "");
        m.source = clean_dest(src, spec).unwrap_or_else(|_| "/".into());
        if src == "/" {
            m.source = "/".into();
        }
        m
    } else {
        if !crate::volumes::valid_name(src) {
            return Err(bad(format!(
                "create {src}: \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        let mut m = MountPoint::new("volume", "");
        m.name = src.into();
        m
    };
    m.destination = clean_dest(dst, spec)?;
    m.mode = mode.into();
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => m.rw = false,
            "rw" => m.rw = true,
            "z" | "Z" => {}
            "nocopy" if m.typ == "volume" => m.nocopy = true,
            p if PROPAGATIONS.contains(&p) && m.typ == "bind" => m.propagation = p.into(),
            _ => return Err(bad(format!("invalid mode: {mode}"))),
        }
    }
    if m.typ == "bind" && m.propagation.is_empty() {
        m.propagation = "rprivate".into();
    }
    Ok(m)
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one `HostConfig.Mounts` entry (Docker's `mount.Mount`).
pub fn parse_mount(v: &Value) -> Result<MountPoint> {
    let typ = v["Type"].as_str().unwrap_or("");
    let target = v["Target"].as_str().unwrap_or("");
    let source = v["Source"].as_str().unwrap_or("");
    let inv = |m: String| bad(format!("invalid mount config for type \"{typ}\": {m}"));
    if target.is_empty() {
        return Err(inv("field Target must not be empty".into()));
    }
    let dest = clean_dest(target, target).map_err(|e| inv(e.to_string()))?;
    let mut m = MountPoint::new(typ, &dest);
    m.from_mounts_api = true;
    m.rw = !v["ReadOnly"].as_bool().unwrap_or(false);
    let has = |k: &str| !v[k].is_null();
    match typ {
        "bind" => {
            if source.is_empty() {
                return Err(inv("field Source must not be empty".into()));
            }
            if !source.starts_with('/') {
                return Err(inv(format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            if has("VolumeOptions") || has("TmpfsOptions") {
                return Err(inv(
                    "field VolumeOptions/TmpfsOptions must not be specified".into(),
                ));
            }
            let create = v["BindOptions"]["CreateMountpoint"]
                .as_bool()
                .unwrap_or(false);
            if !create && std::fs::symlink_metadata(source).is_err() {
                return Err(inv(format!("bind source path does not exist: {source}")));
            }
            m.source = source.into();
            m.propagation = v["BindOptions"]["Propagation"]
                .as_str()
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate")
                .into();
            if !PROPAGATIONS.contains(&m.propagation.as_str()) {
                return Err(inv(format!("invalid propagation mode: {}", m.propagation)));
            }
            m.non_recursive = v["BindOptions"]["NonRecursive"].as_bool().unwrap_or(false);
        }
        "volume" => {
            if has("BindOptions") || has("TmpfsOptions") {
                return Err(inv(
                    "field BindOptions/TmpfsOptions must not be specified".into()
                ));
            }
            if source.is_empty() {
                m.anonymous = true;
            } else {
                if !crate::volumes::valid_name(source) {
                    return Err(inv(format!("invalid volume name: {source}")));
                }
                m.name = source.into();
            }
            let vo = &v["VolumeOptions"];
            m.nocopy = vo["NoCopy"].as_bool().unwrap_or(false);
            m.volume_labels = str_map(&vo["Labels"]);
            let driver = vo["DriverConfig"]["Name"].as_str().unwrap_or("");
            if !driver.is_empty() && driver != "local" {
                return Err(inv(format!("volume driver {driver} is not supported")));
            }
            m.volume_opts = str_map(&vo["DriverConfig"]["Options"]);
            let sub = vo["Subpath"].as_str().unwrap_or("");
            if !sub.is_empty() {
                if sub.starts_with('/') {
                    return Err(inv(format!(
                        "subpath must be a relative path within the volume: {sub}"
                    )));
                }
                if sub.split('/').any(|c| c == "..") {
                    return Err(inv(format!("subpath must be a local path: {sub}")));
                }
                m.subpath = sub.into();
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(inv("field Source must not be specified".into()));
            }
            if has("BindOptions") || has("VolumeOptions") {
                return Err(inv(
                    "field BindOptions/VolumeOptions must not be specified".into()
                ));
            }
            let t = &v["TmpfsOptions"];
            if let Some(size) = t["SizeBytes"].as_i64().filter(|s| *s > 0) {
                m.tmpfs_options.push(format!("size={size}"));
            }
            if let Some(mode) = t["Mode"].as_u64().filter(|m| *m > 0) {
                m.tmpfs_options.push(format!("mode={:o}", mode & 0o7777));
            }
            if let Some(extra) = t["Options"].as_array() {
                for o in extra {
                    if let Some(a) = o.as_array() {
                        let k = a.first().and_then(Value::as_str).unwrap_or("");
                        match a.get(1).and_then(Value::as_str) {
                            Some(val) => m.tmpfs_options.push(format!("{k}={val}")),
                            None if !k.is_empty() => m.tmpfs_options.push(k.into()),
                            None => {}
                        }
                    }
                }
            }
        }
        "" => return Err(bad("invalid mount config: mount type unknown: \"\"")),
        other => {
            return Err(bad(format!(
                "invalid mount config for type \"{other}\": mount type unknown"
            )))
        }
    }
    Ok(m)
}

/// Docker's `Config.Volumes` of a new container: the request's and the image's.
pub fn config_volumes(body: &Value, image: Option<&BTreeMap<String, Value>>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(img) = image {
        for k in img.keys() {
            out.insert(k.clone(), json!({}));
        }
    }
    if let Some(o) = body["Volumes"].as_object() {
        for k in o.keys() {
            out.insert(k.clone(), json!({}));
        }
    }
    if out.is_empty() {
        Value::Null
    } else {
        Value::Object(out)
    }
}

/// Parses the mounts of a create request (no side effects). `image_volumes` are the image's
/// `VOLUME`s.
pub fn plan(
    engine: &Engine,
    body: &Value,
    hc: &Value,
    image_volumes: Option<&BTreeMap<String, Value>>,
) -> Result<Vec<MountPoint>> {
    let mut out: Vec<MountPoint> = Vec::new();
    let mut seen = HashSet::new();
    let push =
        |m: MountPoint, out: &mut Vec<MountPoint>, seen: &mut HashSet<String>| -> Result<()> {
            if !seen.insert(m.destination.clone()) {
                return Err(bad(format!("Duplicate mount point: {}", m.destination)));
            }
            out.push(m);
            Ok(())
        };
    if let Some(binds) = hc["Binds"].as_array() {
        for b in binds {
            let s = b
                .as_str()
                .ok_or_else(|| bad("HostConfig.Binds must be a list of strings"))?;
            push(parse_bind(s)?, &mut out, &mut seen)?;
        }
    }
    if let Some(ms) = hc["Mounts"].as_array() {
        for m in ms {
            push(parse_mount(m)?, &mut out, &mut seen)?;
        }
    }
    if let Some(t) = hc["Tmpfs"].as_object() {
        for (dest, opts) in t {
            let d = clean_dest(dest, dest)?;
            let mut m = MountPoint::new("tmpfs", &d);
            let opts = opts.as_str().unwrap_or("");
            for o in opts.split(',').filter(|o| !o.is_empty()) {
                match o {
                    "ro" => m.rw = false,
                    "rw" => m.rw = true,
                    o => m.tmpfs_options.push(o.to_string()),
                }
            }
            push(m, &mut out, &mut seen)?;
        }
    }
    // VolumesFrom: the other container's volumes and binds (its own destinations win over
    // nothing here: explicit mounts above take precedence).
    if let Some(vf) = hc["VolumesFrom"].as_array() {
        for f in vf {
            let spec = f
                .as_str()
                .ok_or_else(|| bad("HostConfig.VolumesFrom must be a list of strings"))?;
            let (name, mode) = match spec.rsplit_once(':') {
                Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
                Some((_, m)) => return Err(bad(format!("invalid mode: {m}"))),
                None => (spec, None),
            };
            let other = engine.get(name)?;
            for mut m in load(engine, &other.id) {
                if m.typ == "tmpfs" || seen.contains(&m.destination) {
                    continue;
                }
                if let Some(mode) = mode {
                    m.rw = mode == "rw";
                    m.mode = mode.into();
                }
                // The volume is shared, not owned: `rm -v` of this container keeps it.
                m.anonymous = false;
                push(m, &mut out, &mut seen)?;
            }
        }
    }
    let mut anon: Vec<String> = Vec::new();
    if let Some(o) = body["Volumes"].as_object() {
        anon.extend(o.keys().cloned());
    }
    if let Some(img) = image_volumes {
        anon.extend(img.keys().cloned());
    }
    for dest in anon {
        let d = clean_dest(&dest, &dest)?;
        if seen.contains(&d) {
            continue;
        }
        let mut m = MountPoint::new("volume", &d);
        m.anonymous = true;
        push(m, &mut out, &mut seen)?;
    }
    Ok(out)
}

fn record_path(engine: &Engine, id: &str) -> PathBuf {
    engine
        .cfg
        .data_root
        .join("containers")
        .join(id)
        .join("mounts.json")
}

/// The recorded mounts of a container (empty when none).
pub fn load(engine: &Engine, id: &str) -> Vec<MountPoint> {
    util::read_json(&record_path(engine, id)).unwrap_or_default()
}

/// Creates the volumes a new container needs, takes its references and records its mounts.
/// On error nothing is left (volumes it created are removed).
pub fn commit(engine: &Engine, id: &str, planned: &[MountPoint]) -> Result<()> {
    let vs = &engine.volumes;
    let mut points = planned.to_vec();
    let mut created: Vec<String> = Vec::new();
    let res = (|| -> Result<()> {
        for m in points.iter_mut() {
            match m.typ.as_str() {
                "volume" => {
                    let existed = !m.name.is_empty() && vs.get(&m.name).is_ok();
                    let v = vs
                        .create(
                            if m.anonymous {
                                None
                            } else {
                                Some(m.name.as_str())
                            },
                            "local",
                            m.volume_labels.clone(),
                            m.volume_opts.clone(),
                            m.anonymous,
                        )
                        .map_err(|e| bad(e.to_string()))?;
                    if !existed {
                        created.push(v.name.clone());
                    }
                    m.name = v.name;
                }
                // `-v /host:/path` creates a missing host directory (Docker).
                "bind" if !m.from_mounts_api && std::fs::symlink_metadata(&m.source).is_err() => {
                    std::fs::create_dir_all(&m.source).map_err(|e| {
                        bad(format!(
                            "error while creating mount source path '{}': {e}",
                            m.source
                        ))
                    })?;
                }
                _ => {}
            }
        }
        // No mounts, no record (a missing record reads as none).
        if !points.is_empty() {
            util::write_json_atomic(&record_path(engine, id), &points)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        for m in &points {
            if m.typ == "volume" {
                vs.add_ref(&m.name, id)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
            }
        }
        Ok(())
    })();
    if res.is_err() {
        vs.drop_refs(id);
        for n in created {
            let _ = vs.remove(&n, true);
        }
    }
    res
}

/// After the engine loaded its containers: rebuild references (and which volumes running
/// containers keep mounted), then unmount option volumes nobody uses.
pub fn load_refs(engine: &Engine) {
    for c in engine.list() {
        for m in load(engine, &c.id) {
            if m.typ == "volume" {
                let _ = engine.volumes.add_ref(&m.name, &c.id);
                if c.state.running {
                    let _ = engine.volumes.activate(&m.name, &c.id);
                }
            }
        }
    }
    engine.volumes.sweep_mounts();
}

/// Sorted so parents are mounted before children (Docker sorts by path depth).
fn by_depth(points: &mut [MountPoint]) {
    points.sort_by_key(|m| m.destination.split('/').filter(|s| !s.is_empty()).count());
}

/// Host source of a mount point, activating volumes for `user`.
pub fn host_source(engine: &Engine, m: &MountPoint, user: &str) -> Result<PathBuf> {
    match m.typ.as_str() {
        "volume" => engine
            .volumes
            .activate(&m.name, user)
            .map_err(|e| EngineError::Internal(e.to_string())),
        _ => Ok(PathBuf::from(&m.source)),
    }
}

/// At start (blocking, the rootfs is mounted at `rootfs`): activates the volumes, performs
/// copy-up and returns the OCI `mounts` entries. On error the volumes are released again.
pub fn setup(engine: &Engine, id: &str, rootfs: &Path) -> Result<Vec<Value>> {
    let mut points = load(engine, id);
    by_depth(&mut points);
    let res = (|| -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for m in &points {
            match m.typ.as_str() {
                "tmpfs" => {
                    let mut opts = vec!["nosuid".to_string(), "nodev".into(), "noexec".into()];
                    for o in &m.tmpfs_options {
                        match o.as_str() {
                            "exec" => opts.retain(|x| x != "noexec"),
                            "suid" => opts.retain(|x| x != "nosuid"),
                            "dev" => opts.retain(|x| x != "nodev"),
                            o => opts.push(o.to_string()),
                        }
                    }
                    if !m.rw {
                        opts.push("ro".into());
                    }
                    out.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}));
                }
                "volume" | "bind" => {
                    let mut src = host_source(engine, m, id)?;
                    if !m.subpath.is_empty() {
                        src = stage_subpath(engine, id, m, &src, out.len())?;
                    }
                    if m.typ == "bind" && std::fs::symlink_metadata(&src).is_err() {
                        return Err(bad(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            src.display()
                        )));
                    }
                    if m.typ == "volume" && !m.nocopy && m.subpath.is_empty() {
                        copy_up(rootfs, &m.destination, &src).map_err(|e| {
                            EngineError::Internal(format!(
                                "copying image content of {} into volume {}: {e}",
                                m.destination, m.name
                            ))
                        })?;
                    }
                    let mut opts = vec![if m.non_recursive { "bind" } else { "rbind" }.to_string()];
                    if !m.rw {
                        opts.push("ro".into());
                    }
                    opts.push(if m.propagation.is_empty() {
                        "rprivate".into()
                    } else {
                        m.propagation.clone()
                    });
                    out.push(json!({"destination": m.destination, "type": "bind", "source": src, "options": opts}));
                }
                _ => {}
            }
        }
        Ok(out)
    })();
    if res.is_err() {
        engine.volumes.release(id);
        unstage_subpaths(engine, id);
    }
    res
}

/// Opens `m.subpath` inside the volume directory `data` (`openat2(RESOLVE_IN_ROOT)`: symlinks
/// and `..` in the volume cannot leave it). The descriptor, not a path, names the target.
pub fn open_subpath(m: &MountPoint, data: &Path) -> Result<std::os::fd::OwnedFd> {
    let root = std::fs::File::open(data)
        .map_err(|e| EngineError::Internal(format!("opening volume {}: {e}", m.name)))?;
    berth_util::root::open_in_root(&root, Path::new(&m.subpath), libc::O_PATH).map_err(|e| {
        bad(format!(
            "cannot access path {} in volume {}: {e}",
            m.subpath, m.name
        ))
    })
}

fn subpaths_dir(engine: &Engine, id: &str) -> PathBuf {
    engine
        .cfg
        .exec_root
        .join("containers")
        .join(id)
        .join("subpaths")
}

/// Binds a volume's subpath (resolved on a descriptor) onto a staging point of the container
/// (`<exec-root>/containers/<id>/subpaths/<n>`), the source the runtime then binds: a
/// symlink swapped into the volume after the check cannot redirect the mount. The staging
/// mounts go when the container stops.
fn stage_subpath(
    engine: &Engine,
    id: &str,
    m: &MountPoint,
    data: &Path,
    n: usize,
) -> Result<PathBuf> {
    let fd = open_subpath(m, data)?;
    let src = berth_runtime::util::fd_path(&fd);
    let is_dir = std::fs::metadata(&src)
        .map_err(|e| EngineError::Internal(format!("subpath {}: {e}", m.subpath)))?
        .is_dir();
    let dir = subpaths_dir(engine, id);
    let internal = |e: std::io::Error| EngineError::Internal(format!("staging subpath: {e}"));
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let stage = dir.join(n.to_string());
    if is_dir {
        std::fs::create_dir_all(&stage).map_err(internal)?;
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&stage)
            .map_err(internal)?;
    }
    let c_src = std::ffi::CString::new(src).map_err(|_| bad("NUL in path"))?;
    let c_dst = std::ffi::CString::new(stage.as_os_str().as_encoded_bytes())
        .map_err(|_| bad("NUL in path"))?;
    // SAFETY: mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c_src.as_ptr(),
            c_dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(internal(std::io::Error::last_os_error()));
    }
    Ok(stage)
}

/// Removes a container's subpath staging mounts (the container's own mounts stay).
fn unstage_subpaths(engine: &Engine, id: &str) {
    let dir = subpaths_dir(engine, id);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) with a valid path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&p).or_else(|_| std::fs::remove_file(&p));
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Docker's copy-up: when `data` (a volume) is empty and `dest` is a non-empty directory in
/// the image, its content (ownership, modes, times, xattrs, hard links) is copied into the
/// volume. `dest` is resolved inside the rootfs with `openat2(RESOLVE_IN_ROOT)`.
pub fn copy_up(rootfs: &Path, dest: &str, data: &Path) -> std::io::Result<()> {
    if std::fs::read_dir(data)?.next().is_some() {
        return Ok(());
    }
    let root = std::fs::File::open(rootfs)?;
    let src = match berth_util::root::open_in_root(
        &root,
        Path::new(dest),
        libc::O_RDONLY | libc::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let src_path = berth_runtime::util::fd_path(&src);
    if std::fs::read_dir(&src_path)?.next().is_none() {
        // Only the directory's metadata (Docker copies ownership and mode of the mount point).
        copy_dir_meta(&src, data)?;
        return Ok(());
    }
    berth_image::snapshot::copy_tree(Path::new(&src_path), data).map_err(std::io::Error::other)
}

fn copy_dir_meta(src: &impl std::os::fd::AsRawFd, data: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(berth_runtime::util::fd_path(src))?;
    std::os::unix::fs::chown(data, Some(m.uid()), Some(m.gid()))?;
    std::fs::set_permissions(
        data,
        std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
    )
}

/// The container stopped: volumes it kept mounted may be unmounted.
pub fn on_stopped(engine: &Engine, id: &str) {
    engine.volumes.release(id);
    unstage_subpaths(engine, id);
}

/// The container was removed: drop its references; with `remove_anonymous` (`rm -v`,
/// `--rm`) its anonymous volumes go too (kept when another container still uses them).
pub fn on_removed(engine: &Engine, id: &str, anonymous: &[String], remove_anonymous: bool) {
    engine.volumes.release(id);
    engine.volumes.drop_refs(id);
    if remove_anonymous {
        for n in anonymous {
            match engine.volumes.remove(n, true) {
                Ok(()) => {}
                Err(e) => tracing::info!("keeping anonymous volume {n}: {e}"),
            }
        }
    }
}

/// Anonymous volumes of a container (read before removing it).
pub fn anonymous_volumes(engine: &Engine, id: &str) -> Vec<String> {
    load(engine, id)
        .into_iter()
        .filter(|m| m.typ == "volume" && m.anonymous)
        .map(|m| m.name)
        .collect()
}

/// Docker's `Mounts` array of container inspect / list.
pub fn inspect_json(engine: &Engine, id: &str) -> Value {
    let out: Vec<Value> = load(engine, id)
        .iter()
        .filter(|m| m.typ != "tmpfs" || m.from_mounts_api)
        .map(|m| match m.typ.as_str() {
            "volume" => json!({
                "Type": "volume",
                "Name": m.name,
                "Source": engine.volumes.data_path(&m.name),
                "Destination": m.destination,
                "Driver": "local",
                "Mode": if m.from_mounts_api { String::new() } else if m.mode.is_empty() { "z".to_string() } else { m.mode.clone() },
                "RW": m.rw,
                "Propagation": "",
            }),
            "bind" => json!({
                "Type": "bind",
                "Source": m.source,
                "Destination": m.destination,
                "Mode": m.mode,
                "RW": m.rw,
                "Propagation": m.propagation,
            }),
            _ => json!({
                "Type": "tmpfs",
                "Source": "",
                "Destination": m.destination,
                "Mode": "",
                "RW": m.rw,
                "Propagation": "",
            }),
        })
        .collect();
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let m = parse_bind("data:/var/lib/db").unwrap();
        assert_eq!(
            (m.typ.as_str(), m.name.as_str(), m.rw),
            ("volume", "data", true)
        );
        let m = parse_bind("/srv/x:/x:ro,Z,rshared").unwrap();
        assert_eq!(m.typ, "bind");
        assert_eq!(m.source, "/srv/x");
        assert!(!m.rw);
        assert_eq!(m.propagation, "rshared");
        let m = parse_bind("/only").unwrap();
        assert!(m.anonymous);
        assert!(parse_bind("/a:/b:bogus").is_err());
        assert!(parse_bind("/a:relative").is_err());
        assert!(parse_bind("/a:/").is_err());
        assert!(parse_bind("bad/name:/x").is_err());
        assert_eq!(parse_bind("v1:/x/../y/").unwrap().destination, "/y");
    }

    #[test]
    fn mounts_api() {
        let m = parse_mount(&json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o1770}})).unwrap();
        assert_eq!(m.tmpfs_options, vec!["size=1048576", "mode=1770"]);
        let m = parse_mount(
            &json!({"Type": "volume", "Target": "/v", "VolumeOptions": {"NoCopy": true}}),
        )
        .unwrap();
        assert!(m.anonymous && m.nocopy);
        let e =
            parse_mount(&json!({"Type": "bind", "Source": "/nonexistent-berth", "Target": "/b"}))
                .unwrap_err();
        assert!(
            e.to_string().contains("bind source path does not exist"),
            "{e}"
        );
        assert!(parse_mount(&json!({"Type": "npipe", "Target": "/b"})).is_err());
        let m = parse_mount(&json!({"Type": "bind", "Source": "/tmp", "Target": "/b", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}})).unwrap();
        assert!(!m.rw);
        assert_eq!(m.propagation, "rslave");
    }
}
