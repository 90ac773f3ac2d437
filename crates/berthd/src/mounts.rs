//! A container's mounts: `HostConfig.Binds`, `HostConfig.Mounts`, `HostConfig.Tmpfs`,
//! `VolumesFrom`, anonymous volumes (`Config.Volumes`, the image's `VOLUME`s).
//!
//! [`Mounts`] takes part in a container's life ([`crate::engine::Participant`]): at create
//! the request is parsed into [`MountPoint`]s ([`Mounts::plan`], 400 on a bad spec), the
//! volumes are created and referenced and the list is recorded in
//! `<data-root>/containers/<id>/mounts.json`. At start ([`Mounts::setup`]) the volumes are
//! activated (those with options mounted), image content is copied into new empty volumes
//! (Docker's copy-up) and the OCI mount entries go into the bundle. At exit the volumes are
//! released, at removal the references dropped (and anonymous volumes removed on request).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::container::HostConfig;
use berth_api::go::Set;
use berth_runtime::spec::Mount;
use serde::{Deserialize, Serialize};

use crate::engine::{Bundle, Container, CreateInput, Participant, Peers};
use crate::error::{EngineError, Result};
use crate::util;
use crate::volumes::VolumeStore;

mod image;

/// One mount of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountPoint {
    /// `volume`, `bind`, `tmpfs` or `image`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// The volume name (volumes); the image as the request names it (images).
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
    /// The ID of an `image` mount's image, resolved at create (see [`image`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    /// The writable snapshot of an `image` mount's image that keeps its layers in use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snapshot: String,
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
            image: String::new(),
            snapshot: String::new(),
        }
    }
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn clean_dest(d: &str, spec: &str) -> Result<String> {
    if !d.starts_with('/') {
        return Err(EngineError::bad(format!(
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
        return Err(EngineError::bad(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"
        )));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// dockerd's `linuxValidMountMode`: a `-v` mode is a comma list of at most one each of `rw`/`ro`,
/// `z`/`Z`, a propagation, `nocopy` and a consistency (`consistent`, `cached`, `delegated`:
/// Docker Desktop's, accepted and ignored on Linux); nothing else, no empty element.
fn valid_bind_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut counts = [0u8; 5];
    for o in mode.split(',') {
        let kind = match o {
            "rw" | "ro" => 0,
            "z" | "Z" => 1,
            p if PROPAGATIONS.contains(&p) => 2,
            "nocopy" => 3,
            "consistent" | "cached" | "delegated" => 4,
            _ => return false,
        };
        counts[kind] += 1;
    }
    counts.iter().all(|&n| n <= 1)
}

/// Parses one `HostConfig.Binds` entry (dockerd's `ParseMountRaw`).
pub fn parse_bind(spec: &str) -> Result<MountPoint> {
    let invalid = || EngineError::bad(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [""] | ["", ..] => return Err(invalid()),
        [d] => ("", *d, ""),
        // `/dest:ro` is a destination with a mode: a volume takes none.
        [_, m] if valid_bind_mode(m) => return Err(invalid()),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(invalid()),
    };
    if dst.is_empty() {
        return Err(invalid());
    }
    if !valid_bind_mode(mode) {
        return Err(EngineError::bad(format!("invalid mode: {mode}")));
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
            return Err(EngineError::bad(format!(
                "create {src}: \"{src}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            )));
        }
        let mut m = MountPoint::new("volume", "");
        m.name = src.into();
        m
    };
    m.destination = clean_dest(dst, spec).map_err(|e| {
        // dockerd names the kind of mount the spec makes.
        if m.typ == "bind" {
            EngineError::bad(e.to_string().replace("type \"volume\"", "type \"bind\""))
        } else {
            e
        }
    })?;
    m.mode = mode.into();
    // A propagation is a bind's option, `nocopy` a volume's: dockerd's mount validation
    // refuses the other kind's option field.
    let extra = |field: &str| {
        EngineError::bad(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"{}\": field {field} must not be specified",
            m.typ
        ))
    };
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => m.rw = false,
            "nocopy" if m.typ == "bind" => return Err(extra("VolumeOptions")),
            "nocopy" => m.nocopy = true,
            p if PROPAGATIONS.contains(&p) && m.typ != "bind" => return Err(extra("BindOptions")),
            p if PROPAGATIONS.contains(&p) => m.propagation = p.into(),
            _ => {}
        }
    }
    if m.typ == "bind" && m.propagation.is_empty() {
        m.propagation = "rprivate".into();
    }
    set_volume_mode(&mut m);
    Ok(m)
}

/// dockerd's `setBindModeIfNull`: a volume of `Binds` or `Mounts` (a local one: the only
/// driver here) without a mode gets the shared SELinux label `z`. Anonymous volumes of the
/// config or the image, and `VolumesFrom` copies, keep none.
fn set_volume_mode(m: &mut MountPoint) {
    if m.typ == "volume" && m.mode.is_empty() {
        m.mode = "z".into();
    }
}

/// Parses one `HostConfig.Mounts` entry (Docker's `mount.Mount`).
pub fn parse_mount(v: &berth_api::mount::Mount) -> Result<MountPoint> {
    let typ = v.kind.as_str();
    let target = v.target.as_str();
    let source = v.source.as_str();
    let inv = |m: String| EngineError::bad(format!("invalid mount config for type \"{typ}\": {m}"));
    if target.is_empty() {
        return Err(inv("field Target must not be empty".into()));
    }
    let dest = clean_dest(target, target).map_err(|e| inv(e.to_string()))?;
    let mut m = MountPoint::new(typ, &dest);
    m.from_mounts_api = true;
    m.rw = !v.read_only;
    if v.image_options.is_some() && matches!(typ, "bind" | "volume" | "tmpfs") {
        return Err(inv("field ImageOptions must not be specified".into()));
    }
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
            if v.volume_options.is_some() || v.tmpfs_options.is_some() {
                return Err(inv(
                    "field VolumeOptions/TmpfsOptions must not be specified".into(),
                ));
            }
            let bo = v.bind_options.clone().unwrap_or_default();
            if !bo.create_mountpoint && std::fs::symlink_metadata(source).is_err() {
                return Err(inv(format!("bind source path does not exist: {source}")));
            }
            m.source = source.into();
            m.propagation = if bo.propagation.is_empty() {
                "rprivate".into()
            } else {
                bo.propagation
            };
            if !PROPAGATIONS.contains(&m.propagation.as_str()) {
                return Err(inv(format!("invalid propagation mode: {}", m.propagation)));
            }
            m.non_recursive = bo.non_recursive;
        }
        "volume" => {
            if v.bind_options.is_some() || v.tmpfs_options.is_some() {
                return Err(inv(
                    "field BindOptions/TmpfsOptions must not be specified".into()
                ));
            }
            if source.is_empty() {
                if v.read_only {
                    return Err(inv(
                        "must not set ReadOnly mode when using anonymous volumes".into(),
                    ));
                }
                m.anonymous = true;
            } else {
                if !crate::volumes::valid_name(source) {
                    return Err(inv(format!("invalid volume name: {source}")));
                }
                m.name = source.into();
            }
            let vo = v.volume_options.clone().unwrap_or_default();
            m.nocopy = vo.no_copy;
            m.volume_labels = vo.labels.unwrap_or_default();
            let driver = vo.driver_config.unwrap_or_default();
            if !driver.name.is_empty() && driver.name != "local" {
                return Err(inv(format!(
                    "volume driver {} is not supported",
                    driver.name
                )));
            }
            m.volume_opts = driver.options.unwrap_or_default();
            set_volume_mode(&mut m);
            let sub = vo.subpath;
            if !sub.is_empty() {
                if source.is_empty() {
                    return Err(inv(
                        "must not set Subpath when using anonymous volumes".into()
                    ));
                }
                if !is_local(&sub) {
                    return Err(inv(
                        "subpath must be a relative path within the volume".into()
                    ));
                }
                m.subpath = sub;
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(inv("field Source must not be specified".into()));
            }
            if v.bind_options.is_some() || v.volume_options.is_some() {
                return Err(inv(
                    "field BindOptions/VolumeOptions must not be specified".into()
                ));
            }
            let t = v.tmpfs_options.clone().unwrap_or_default();
            if t.size_bytes > 0 {
                m.tmpfs_options.push(format!("size={}", t.size_bytes));
            }
            if t.mode > 0 {
                m.tmpfs_options.push(format!("mode={:o}", t.mode & 0o7777));
            }
            for o in t.options.iter().flatten() {
                match o.as_slice() {
                    [k, val, ..] => m.tmpfs_options.push(format!("{k}={val}")),
                    [k] if !k.is_empty() => m.tmpfs_options.push(k.clone()),
                    _ => {}
                }
            }
        }
        // dockerd's checks (the version gate is the route's); the image is resolved at
        // create (`Mounts::commit`).
        "image" => {
            if v.bind_options.is_some() {
                return Err(inv("field BindOptions must not be specified".into()));
            }
            if v.volume_options.is_some() {
                return Err(inv("field VolumeOptions must not be specified".into()));
            }
            if source.is_empty() {
                return Err(inv("field Source must not be empty".into()));
            }
            let sub = v.image_options.clone().unwrap_or_default().subpath;
            if !sub.is_empty() && !is_local(&sub) {
                return Err(inv(
                    "subpath must be a relative path within the volume".into()
                ));
            }
            m.name = source.into();
            m.subpath = sub;
            m.rw = false;
            m.propagation = "rprivate".into();
        }
        "" => {
            return Err(EngineError::bad(
                "invalid mount config: mount type unknown: \"\"",
            ))
        }
        other => {
            return Err(EngineError::bad(format!(
                "invalid mount config for type \"{other}\": mount type unknown"
            )))
        }
    }
    Ok(m)
}

/// Sorted so parents are mounted before children (Docker sorts by path depth).
pub fn by_depth(points: &mut [MountPoint]) {
    points.sort_by_key(|m| m.destination.split('/').filter(|s| !s.is_empty()).count());
}

/// The mounts of the daemon's containers (see the module documentation).
pub struct Mounts {
    volumes: Arc<VolumeStore>,
    /// The images of `image` mounts (their snapshots).
    images: Arc<berth_image::image_store::ImageStore>,
    data_root: PathBuf,
    exec_root: PathBuf,
}

impl Mounts {
    pub fn new(
        volumes: Arc<VolumeStore>,
        images: Arc<berth_image::image_store::ImageStore>,
        data_root: &Path,
        exec_root: &Path,
    ) -> Mounts {
        Mounts {
            volumes,
            images,
            data_root: data_root.to_path_buf(),
            exec_root: exec_root.to_path_buf(),
        }
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.data_root
            .join("containers")
            .join(id)
            .join("mounts.json")
    }

    fn subpaths_dir(&self, id: &str) -> PathBuf {
        self.exec_root.join("containers").join(id).join("subpaths")
    }

    /// The recorded mounts of a container (empty when none).
    pub fn load(&self, id: &str) -> Vec<MountPoint> {
        util::read_json(&self.record_path(id)).unwrap_or_default()
    }

    /// Whether the container's mounts record exists but is empty: what a power loss leaves
    /// of a volatile create's unsynced record whose content was never written back (see
    /// [`Mounts::commit`]; a synced record, never empty, cannot be). Such a container's
    /// create is undone at the daemon's start, as one without a record.
    pub fn damaged(&self, id: &str) -> bool {
        std::fs::metadata(self.record_path(id)).is_ok_and(|m| m.len() == 0)
    }

    /// Parses the mounts of a create request (no side effects).
    pub fn plan(
        &self,
        hc: &HostConfig,
        input: CreateInput<'_>,
        peers: &dyn Peers,
    ) -> Result<Vec<MountPoint>> {
        let mut out: Vec<MountPoint> = Vec::new();
        let mut seen = HashSet::new();
        let push =
            |m: MountPoint, out: &mut Vec<MountPoint>, seen: &mut HashSet<String>| -> Result<()> {
                if !seen.insert(m.destination.clone()) {
                    return Err(EngineError::bad(format!(
                        "Duplicate mount point: {}",
                        m.destination
                    )));
                }
                out.push(m);
                Ok(())
            };
        for b in hc.binds.iter().flatten() {
            push(parse_bind(b)?, &mut out, &mut seen)?;
        }
        for m in hc.mounts.iter().flatten() {
            push(parse_mount(m)?, &mut out, &mut seen)?;
        }
        for (dest, opts) in hc.tmpfs.iter().flatten() {
            let d = clean_dest(dest, dest)?;
            let mut m = MountPoint::new("tmpfs", &d);
            for o in opts.split(',').filter(|o| !o.is_empty()) {
                match o {
                    "ro" => m.rw = false,
                    "rw" => m.rw = true,
                    o => m.tmpfs_options.push(o.to_string()),
                }
            }
            push(m, &mut out, &mut seen)?;
        }
        // VolumesFrom: the other container's volumes and binds. Explicit mounts above take
        // precedence; between containers, the later one's mount of a path replaces the
        // earlier one's (dockerd's `registerMountPoints`).
        let explicit = seen.clone();
        for spec in hc.volumes_from.iter().flatten() {
            let (name, mode) = match spec.rsplit_once(':') {
                Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
                Some((_, m)) => return Err(EngineError::bad(format!("invalid mode: {m}"))),
                None => (spec.as_str(), None),
            };
            let other = peers
                .id_of(name)
                .map_err(EngineError::not_found_is_invalid)?;
            for mut m in self.load(&other) {
                if m.typ == "tmpfs" || explicit.contains(&m.destination) {
                    continue;
                }
                if let Some(mode) = mode {
                    m.rw = mode == "rw";
                }
                // dockerd's copy has no mode.
                m.mode.clear();
                // dockerd's copy of a `VolumesFrom` mount point: no copy-up of this image's
                // content (`CopyData: false`); an anonymous volume stays anonymous, so the
                // `rm -v` of the last container using it removes it. Of two containers
                // mounting the same path, the later one wins.
                m.nocopy = true;
                match out.iter_mut().find(|p| p.destination == m.destination) {
                    Some(earlier) => *earlier = m,
                    None => push(m, &mut out, &mut seen)?,
                }
            }
        }
        let anon = input
            .volumes
            .into_iter()
            .flat_map(Set::keys)
            .chain(input.image_volumes.into_iter().flat_map(BTreeMap::keys));
        for dest in anon {
            let d = clean_dest(dest, dest)?;
            if seen.contains(&d) {
                continue;
            }
            let mut m = MountPoint::new("volume", &d);
            m.anonymous = true;
            push(m, &mut out, &mut seen)?;
        }
        Ok(out)
    }

    /// Creates the volumes a new container needs, takes its references and records its
    /// mounts. On error nothing is left (volumes it created are removed).
    fn commit(&self, id: &str, planned: &[MountPoint], volatile: bool) -> Result<()> {
        let vs = &self.volumes;
        let mut points = planned.to_vec();
        let mut created: Vec<String> = Vec::new();
        let res = (|| -> Result<()> {
            for m in points.iter_mut() {
                match m.typ.as_str() {
                    "volume" => {
                        let existed = !m.name.is_empty() && vs.get(&m.name).is_ok();
                        let v = vs
                            .create(
                                // Empty for a new anonymous volume (a fresh ID); an
                                // anonymous one of `VolumesFrom` is named already.
                                Some(m.name.as_str()),
                                "local",
                                m.volume_labels.clone(),
                                m.volume_opts.clone(),
                                m.anonymous,
                            )
                            .map_err(|e| EngineError::bad(e.to_string()))?;
                        if !existed {
                            created.push(v.name.clone());
                        }
                        m.name = v.name;
                    }
                    // `-v /host:/path` creates a missing host directory (Docker).
                    "bind"
                        if !m.from_mounts_api && std::fs::symlink_metadata(&m.source).is_err() =>
                    {
                        std::fs::create_dir_all(&m.source).map_err(|e| {
                            EngineError::bad(format!(
                                "error while creating mount source path '{}': {e}",
                                m.source
                            ))
                        })?;
                    }
                    _ => {}
                }
            }
            self.prepare_images(id, &mut points, volatile)?;
            // No mounts, no record (a missing record reads as none). Synced, as the
            // container's record after it, unless the create is volatile and the record names
            // no volume: then a power loss can only take it with the container (the record,
            // renamed into place after it, is not synced either), or leave it empty, which
            // the daemon's start reads as an interrupted create ([`Mounts::damaged`]). The
            // volumes' references must be found again, whatever the container's fate.
            if !points.is_empty() {
                let p = self.record_path(id);
                let written = if volatile && !points.iter().any(|m| m.typ == "volume") {
                    util::replace_json(&p, &points)
                } else {
                    util::write_json_atomic(&p, &points)
                };
                written.map_err(EngineError::io("writing", &p))?;
            }
            for m in points.iter().filter(|m| m.typ == "volume") {
                vs.add_ref(&m.name, id)?;
            }
            Ok(())
        })();
        if res.is_err() {
            self.remove_image_snapshots(id);
            vs.drop_refs(id);
            for n in created {
                let _ = vs.remove(&n, true);
            }
        }
        res
    }

    /// After the engine loaded its containers: rebuild references (and which volumes running
    /// containers keep mounted), then unmount option volumes nobody uses.
    pub fn load_refs(&self, containers: &[Container]) {
        for c in containers {
            for m in self.load(&c.id).iter().filter(|m| m.typ == "volume") {
                let _ = self.volumes.add_ref(&m.name, &c.id);
                if c.state.running {
                    let _ = self.volumes.activate(&m.name, &c.id);
                }
            }
        }
        self.volumes.sweep_mounts();
    }

    /// Host source of a mount point, activating volumes for `user`.
    pub fn host_source(&self, m: &MountPoint, user: &str) -> Result<PathBuf> {
        match m.typ.as_str() {
            "volume" => Ok(self.volumes.activate(&m.name, user)?),
            _ => Ok(PathBuf::from(&m.source)),
        }
    }

    /// At start (blocking, the rootfs is mounted at `rootfs`): activates the volumes, performs
    /// copy-up and returns the OCI mounts, with the root propagation the binds' propagation
    /// needs (see [`check_propagation`]). On error the volumes are released again.
    pub fn setup(&self, id: &str, rootfs: &Path) -> Result<(Vec<Mount>, Option<&'static str>)> {
        let mut points = self.load(id);
        by_depth(&mut points);
        let res = (|| -> Result<(Vec<Mount>, Option<&'static str>)> {
            let mut out = Vec::new();
            let mut root_propagation = None;
            for m in &points {
                match m.typ.as_str() {
                    "image" => {
                        let src = self.mount_image(id, m, out.len())?;
                        let opts = ["rbind", "ro", "rprivate"].map(String::from).to_vec();
                        out.push(oci_mount(&m.destination, "bind", src, opts));
                    }
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
                        out.push(oci_mount(&m.destination, "tmpfs", "tmpfs", opts));
                    }
                    "volume" | "bind" => {
                        let mut src = self.host_source(m, id)?;
                        if !m.subpath.is_empty() {
                            src = self.stage_subpath(id, m, &src, out.len())?;
                        }
                        if m.typ == "bind" && std::fs::symlink_metadata(&src).is_err() {
                            return Err(EngineError::bad(format!(
                                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                                src.display()
                            )));
                        }
                        // dockerd copies into a volume's subpath too (when it is an empty
                        // directory).
                        if m.typ == "volume" && !m.nocopy && (m.subpath.is_empty() || src.is_dir())
                        {
                            copy_up(rootfs, &m.destination, &src).map_err(EngineError::sys(
                                format!(
                                    "copying image content of {} into volume {}",
                                    m.destination, m.name
                                ),
                            ))?;
                        }
                        check_propagation(&src, &m.propagation, &mut root_propagation)?;
                        let mut opts =
                            vec![if m.non_recursive { "bind" } else { "rbind" }.to_string()];
                        if !m.rw {
                            opts.push("ro".into());
                        }
                        opts.push(if m.propagation.is_empty() {
                            "rprivate".into()
                        } else {
                            m.propagation.clone()
                        });
                        out.push(oci_mount(&m.destination, "bind", src, opts));
                        if m.typ == "volume" {
                            self.volumes
                                .mounted(&m.name, id, &m.destination, m.rw, &m.propagation);
                        }
                    }
                    _ => {}
                }
            }
            Ok((out, root_propagation))
        })();
        if res.is_err() {
            self.volumes.release(id);
            self.unstage_subpaths(id);
            self.unmount_images(id);
        }
        res
    }

    /// Binds a volume's subpath (resolved on a descriptor) onto a staging point of the
    /// container (`<exec-root>/containers/<id>/subpaths/<n>`), the source the runtime then
    /// binds: a symlink swapped into the volume after the check cannot redirect the mount.
    /// The staging mounts go when the container stops.
    fn stage_subpath(&self, id: &str, m: &MountPoint, data: &Path, n: usize) -> Result<PathBuf> {
        let fd = open_subpath(m, data)?;
        let src = berth_runtime::util::fd_path(&fd);
        let is_dir = std::fs::metadata(&src)
            .map_err(EngineError::io("reading subpath", &m.subpath))?
            .is_dir();
        let dir = self.subpaths_dir(id);
        std::fs::create_dir_all(&dir).map_err(EngineError::io("creating", &dir))?;
        let stage = dir.join(n.to_string());
        if is_dir {
            std::fs::create_dir_all(&stage).map_err(EngineError::io("creating", &stage))?;
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&stage)
                .map_err(EngineError::io("creating", &stage))?;
        }
        rustix::mount::mount_bind_recursive(src.as_str(), &stage)
            .map_err(|e| EngineError::io("binding a subpath onto", &stage)(e.into()))?;
        Ok(stage)
    }

    /// Removes a container's subpath staging mounts (the container's own mounts stay).
    fn unstage_subpaths(&self, id: &str) {
        let dir = self.subpaths_dir(id);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&p).or_else(|_| std::fs::remove_file(&p));
        }
        let _ = std::fs::remove_dir(&dir);
    }

    /// The volumes that go with the container on `rm -v`.
    fn anonymous_volumes(&self, id: &str) -> Vec<String> {
        self.load(id)
            .into_iter()
            .filter(|m| m.typ == "volume" && m.anonymous)
            .map(|m| m.name)
            .collect()
    }

    /// Docker's `Mounts` of container inspect and list.
    pub fn inspect(&self, id: &str) -> Vec<berth_api::container::MountPoint> {
        self.load(id)
            .into_iter()
            .filter(|m| m.typ != "tmpfs" || m.from_mounts_api)
            .map(|m| {
                let mut p = berth_api::container::MountPoint {
                    kind: m.typ.clone(),
                    destination: m.destination.clone(),
                    rw: m.rw,
                    ..Default::default()
                };
                match m.typ.as_str() {
                    "volume" => {
                        p.source = self.volumes.data_path(&m.name).display().to_string();
                        p.driver = "local".into();
                        p.mode = m.mode;
                        p.name = m.name;
                    }
                    "bind" => {
                        p.source = m.source;
                        p.mode = m.mode;
                        p.propagation = m.propagation;
                    }
                    // dockerd: the name as given, the source where the image is mounted.
                    "image" => {
                        p.name = m.name;
                        p.source = self.image_dir(id, &m.snapshot).display().to_string();
                        p.propagation = m.propagation;
                    }
                    _ => {}
                }
                p
            })
            .collect()
    }
}

/// Opens `m.subpath` inside the volume directory `data` (`openat2(RESOLVE_IN_ROOT)`: symlinks
/// and `..` in the volume cannot leave it). The descriptor, not a path, names the target.
pub fn open_subpath(m: &MountPoint, data: &Path) -> Result<std::os::fd::OwnedFd> {
    let root = std::fs::File::open(data).map_err(EngineError::io("opening volume", data))?;
    berth_util::root::open_beneath(&root, Path::new(&m.subpath), libc::O_PATH).map_err(|e| {
        if e.raw_os_error() == Some(libc::EXDEV) {
            // dockerd's `safepath.ErrEscapesBase`.
            EngineError::bad(format!(
                "path concatenation escapes the base directory, base: {}, subpath: {}",
                data.display(),
                m.subpath
            ))
        } else if m.typ == "image" {
            // dockerd's `safepath.ErrNotAccessible`: a 404 with Go's errno text (the docker
            // CLI's `run` exits 127 on "no such file or directory").
            EngineError::Missing(format!(
                "cannot access path {}: {}",
                data.join(&m.subpath).display(),
                berth_util::errno::go_text(&e)
            ))
        } else {
            EngineError::Missing(format!(
                "cannot access path {} in volume {}: {}",
                m.subpath,
                m.name,
                berth_util::errno::go_text(&e)
            ))
        }
    })
}

/// Go's `filepath.IsLocal` on Unix: relative, not empty, and never above its start.
fn is_local(p: &str) -> bool {
    if p.is_empty() || p.starts_with('/') {
        return false;
    }
    let mut depth = 0i32;
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
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

/// dockerd's and containerd's checks of a bind's `propagation` against the mount holding its
/// source `src`, and the root propagation (`linux.rootfsPropagation`) it needs: shared
/// propagation needs a shared source mount and a shared root (`rshared`, containerd's choice),
/// slave propagation a shared or slave source mount and at least a slave root (`rslave`). The
/// runtime's default root propagation (`rslave`) would turn shared binds into slaves.
pub(crate) fn check_propagation(
    src: &Path,
    propagation: &str,
    root: &mut Option<&'static str>,
) -> Result<()> {
    let shared = match propagation {
        "shared" | "rshared" => true,
        "slave" | "rslave" => false,
        _ => return Ok(()),
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(EngineError::io("reading", "/proc/self/mountinfo"))?;
    let canon = std::fs::canonicalize(src).map_err(EngineError::io("resolving", src))?;
    let (mount_point, fields) = mount_of(&mountinfo, &canon)
        .ok_or_else(|| EngineError::bad(format!("no mount holds path {}", canon.display())))?;
    let is_shared = fields.iter().any(|f| f.starts_with("shared:"));
    let is_slave = fields.iter().any(|f| f.starts_with("master:"));
    if shared && !is_shared {
        return Err(EngineError::bad(format!(
            "path {} is mounted on {mount_point} but it is not a shared mount",
            src.display()
        )));
    }
    if !shared && !is_shared && !is_slave {
        return Err(EngineError::bad(format!(
            "path {} is mounted on {mount_point} but it is not a shared or slave mount",
            src.display()
        )));
    }
    *root = if shared || *root == Some("rshared") {
        Some("rshared")
    } else {
        Some("rslave")
    };
    Ok(())
}

/// The mount holding the (resolved) `path` in a mountinfo text: the deepest mount point above
/// it (of several on one point, the last, the one on top), with its optional fields
/// (`shared:N`, `master:N`...).
fn mount_of(mountinfo: &str, path: &Path) -> Option<(String, Vec<String>)> {
    let mut best: Option<(String, Vec<String>)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4).map(|m| crate::volumes::unescape_mountinfo(m)) else {
            continue;
        };
        if !path.starts_with(&mp) || best.as_ref().is_some_and(|(b, _)| b.len() > mp.len()) {
            continue;
        }
        let optional = fields
            .iter()
            .skip(6)
            .take_while(|f| **f != "-")
            .map(|f| f.to_string())
            .collect();
        best = Some((mp, optional));
    }
    best
}

fn oci_mount(dest: &str, typ: &str, source: impl Into<PathBuf>, options: Vec<String>) -> Mount {
    Mount {
        destination: dest.into(),
        typ: Some(typ.into()),
        source: Some(source.into()),
        options,
        uid_mappings: vec![],
        gid_mappings: vec![],
    }
}

impl Participant for Mounts {
    fn create(&self, c: &Container, input: CreateInput<'_>, peers: &dyn Peers) -> Result<()> {
        let planned = self.plan(&c.host_config, input, peers)?;
        // A volume driver other than `local` is needed only for volumes to create.
        let driver = c.host_config.volume_driver.as_str();
        if !matches!(driver, "" | "local")
            && planned
                .iter()
                .any(|m| m.typ == "volume" && self.volumes.get(&m.name).is_err())
        {
            return Err(EngineError::bad(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        self.commit(&c.id, &planned, input.volatile)
    }

    fn prepare(&self, c: &Container, b: &mut Bundle, _: &dyn Peers) -> Result<()> {
        let (mounts, root_propagation) = self.setup(&c.id, &b.rootfs)?;
        b.mounts = mounts;
        b.rootfs_propagation = root_propagation;
        Ok(())
    }

    fn start(&self, _: &Container, _: i64) -> Result<()> {
        Ok(())
    }

    fn exit(&self, id: &str) {
        self.volumes.release(id);
        self.unstage_subpaths(id);
        self.unmount_images(id);
    }

    fn remove(&self, id: &str, volumes: bool) {
        let anonymous = if volumes {
            self.anonymous_volumes(id)
        } else {
            Vec::new()
        };
        self.volumes.release(id);
        self.volumes.drop_refs(id);
        self.unstage_subpaths(id);
        self.unmount_images(id);
        self.remove_image_snapshots(id);
        for n in anonymous {
            match self.volumes.remove(&n, true) {
                Ok(()) => {}
                Err(e) => tracing::info!("keeping anonymous volume {n}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volatile_record_left_empty_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let vs = Arc::new(VolumeStore::open(&dir.path().join("volumes")).unwrap());
        let images =
            Arc::new(berth_image::image_store::ImageStore::open(dir.path().join("data")).unwrap());
        let m = Mounts::new(
            vs,
            images,
            &dir.path().join("data"),
            &dir.path().join("exec"),
        );
        let id = "a".repeat(64);
        std::fs::create_dir_all(dir.path().join("data/containers").join(&id)).unwrap();
        let shm = dir.path().join("shm");
        std::fs::create_dir(&shm).unwrap();
        let mut bind = MountPoint::new("bind", "/dev/shm");
        bind.source = shm.display().to_string();
        // No record, no damage (a container without mounts has none).
        assert!(!m.damaged(&id));
        m.commit(&id, std::slice::from_ref(&bind), true).unwrap();
        assert_eq!(m.load(&id), vec![bind]);
        assert!(!m.damaged(&id));
        // What a power loss may leave of the unsynced record.
        std::fs::write(m.record_path(&id), b"").unwrap();
        assert!(m.damaged(&id));
        assert!(m.load(&id).is_empty());
    }

    #[test]
    fn mount_of_finds_the_deepest_top_mount() {
        let mi = "22 1 0:21 / / rw - ext4 /dev/vda rw\n\
                  30 22 0:30 / /data rw shared:7 - ext4 /dev/vdb rw\n\
                  31 30 0:31 / /data/my\\040dir rw shared:8 master:3 - tmpfs t rw\n\
                  32 30 0:32 / /data/my\\040dir rw - tmpfs t rw\n\
                  33 22 0:33 / /datax rw shared:9 - tmpfs t rw\n";
        let at = |p: &str| mount_of(mi, Path::new(p)).unwrap();
        assert_eq!(at("/etc"), ("/".into(), vec![]));
        assert_eq!(at("/data/x"), ("/data".into(), vec!["shared:7".into()]));
        assert_eq!(at("/datax/y").0, "/datax");
        assert_eq!(at("/data/my dir/z"), ("/data/my dir".into(), vec![]));
    }

    #[test]
    fn propagation_needs_a_shared_or_slave_source() {
        let mut root = None;
        check_propagation(Path::new("/"), "rprivate", &mut root).unwrap();
        assert_eq!(root, None);
        // This machine's `/` is private (as in containers and most test hosts) or shared
        // (systemd hosts): the check follows what mountinfo says.
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mp, fields) = mount_of(&mi, &dir.path().canonicalize().unwrap()).unwrap();
        let shared = fields.iter().any(|f| f.starts_with("shared:"));
        let slave = fields.iter().any(|f| f.starts_with("master:"));
        let res = check_propagation(dir.path(), "rshared", &mut root);
        if shared {
            res.unwrap();
            assert_eq!(root, Some("rshared"));
        } else {
            let e = res.unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "path {} is mounted on {mp} but it is not a shared mount",
                    dir.path().display()
                )
            );
        }
        let mut root = None;
        let res = check_propagation(dir.path(), "rslave", &mut root);
        if shared || slave {
            res.unwrap();
            assert_eq!(root, Some("rslave"));
        } else {
            assert!(res
                .unwrap_err()
                .to_string()
                .ends_with("but it is not a shared or slave mount"));
        }
    }

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
        // dockerd's modes: Docker Desktop's consistencies are taken, one of each kind only,
        // no empty element; a destination with a mode and no source is no spec.
        assert!(parse_bind("/a:/b:cached").unwrap().rw);
        assert!(!parse_bind("vol:/b:delegated,ro").unwrap().rw);
        for (spec, msg) in [
            ("/a:/b:ro,rw", "invalid mode: ro,rw"),
            ("/a:/b:ro,", "invalid mode: ro,"),
            ("/a:/b:cached,delegated", "invalid mode: cached,delegated"),
            ("/dest:ro", "invalid volume specification: '/dest:ro'"),
            (":/x", "invalid volume specification: ':/x'"),
            ("/a:/b:c:d", "invalid volume specification: '/a:/b:c:d'"),
        ] {
            assert_eq!(parse_bind(spec).unwrap_err().to_string(), msg);
        }
    }

    fn mnt(v: serde_json::Value) -> berth_api::mount::Mount {
        berth_api::from_value(v).unwrap()
    }

    #[test]
    fn mounts_api() {
        let m = parse_mount(&mnt(serde_json::json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 0o1770}}))).unwrap();
        assert_eq!(m.tmpfs_options, vec!["size=1048576", "mode=1770"]);
        let m = parse_mount(
            &mnt(serde_json::json!({"Type": "volume", "Target": "/v", "VolumeOptions": {"NoCopy": true}})),
        )
        .unwrap();
        assert!(m.anonymous && m.nocopy);
        // dockerd's subpath checks (Go's `filepath.IsLocal`).
        for (sub, ok) in [
            ("a/../b", true),
            ("a/./b/", true),
            ("../x", false),
            ("a/../../x", false),
            ("/abs", false),
        ] {
            let r = parse_mount(&mnt(
                serde_json::json!({"Type": "volume", "Source": "vol", "Target": "/v", "VolumeOptions": {"Subpath": sub}}),
            ));
            match r {
                Ok(m) => assert!(ok && m.subpath == sub, "{sub}"),
                Err(e) => assert!(!ok && e.to_string() == "invalid mount config for type \"volume\": subpath must be a relative path within the volume", "{sub}: {e}"),
            }
        }
        let e = parse_mount(&mnt(serde_json::json!({"Type": "volume", "Target": "/v", "VolumeOptions": {"Subpath": "a"}}))).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("must not set Subpath when using anonymous volumes"),
            "{e}"
        );
        let e = parse_mount(&mnt(
            serde_json::json!({"Type": "bind", "Source": "/nonexistent-berth", "Target": "/b"}),
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("bind source path does not exist"),
            "{e}"
        );
        assert!(parse_mount(&mnt(serde_json::json!({"Type": "npipe", "Target": "/b"}))).is_err());
        let m = parse_mount(&mnt(serde_json::json!({"Type": "bind", "Source": "/tmp", "Target": "/b", "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}}))).unwrap();
        assert!(!m.rw);
        assert_eq!(m.propagation, "rslave");
    }
}
