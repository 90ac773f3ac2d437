//! Storage over the daemon's Engine API: `volume create|ls|inspect|rm|prune` and the `run`
//! flags `-v`, `--mount`, `--tmpfs`, `--volumes-from` ([`StorageFlags`]). `cp` is in
//! [`crate::cp`].

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use berth_api::container::CreateRequest;
use berth_api::go::Empty;
use berth_api::mount::{BindOptions, Driver, ImageOptions, Mount, TmpfsOptions, VolumeOptions};
use berth_api::volume::{CreateOptions, ListResponse, PruneReport, Volume};
use berth_util::units::parse_ram_bytes;
use clap::{Args, Subcommand};

use crate::api::{enc, json, Host};
use crate::error::{CliError, Result};
use crate::format;

// ---------------------------------------------------------------------------------------------
// run flags

/// Storage flags of `run` (flattened into `RunCmd`).
#[derive(Debug, Default, Args)]
pub struct StorageFlags {
    /// Bind mount a volume (`name:/path[:opts]`, `/host:/path[:opts]`, `/path`)
    #[arg(short = 'v', long = "volume", value_name = "list")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (`type=bind|volume|tmpfs,…`)
    #[arg(long = "mount", value_name = "mount")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (`/path[:opts]`)
    #[arg(long = "tmpfs", value_name = "list")]
    pub tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s) (`name[:ro|rw]`)
    #[arg(long = "volumes-from", value_name = "list")]
    pub volumes_from: Vec<String>,
}

impl StorageFlags {
    /// Adds the flags to a create request (as the docker CLI does: `-v` with a source goes to
    /// `HostConfig.Binds`, without one to `Config.Volumes`).
    pub fn apply(&self, req: &mut CreateRequest) -> Result {
        let mut binds = Vec::new();
        let mut vols = BTreeMap::new();
        for v in &self.volume {
            if v.contains(':') {
                binds.push(v.clone());
            } else {
                vols.insert(v.clone(), Empty {});
            }
        }
        if !vols.is_empty() {
            req.config.volumes = Some(vols);
        }
        let hc = req.host_config.get_or_insert_with(Default::default);
        if !binds.is_empty() {
            hc.binds = Some(binds);
        }
        if !self.mount.is_empty() {
            hc.mounts = Some(
                self.mount
                    .iter()
                    .map(|m| parse_mount_flag(m))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        if !self.tmpfs.is_empty() {
            hc.tmpfs = Some(
                self.tmpfs
                    .iter()
                    .map(|s| {
                        let (p, o) = s.split_once(':').unwrap_or((s, ""));
                        (p.to_string(), o.to_string())
                    })
                    .collect(),
            );
        }
        if !self.volumes_from.is_empty() {
            hc.volumes_from = Some(self.volumes_from.clone());
        }
        Ok(())
    }
}

/// Docker's `--mount` syntax (csv of key=value) to a `mount.Mount`.
pub fn parse_mount_flag(spec: &str) -> Result<Mount> {
    let bad = |m: String| CliError::Usage(m);
    let mut m = Mount {
        kind: "volume".into(),
        ..Default::default()
    };
    let mut bind = BindOptions::default();
    let mut vol = VolumeOptions::default();
    let mut tmpfs = TmpfsOptions::default();
    let mut image = ImageOptions::default();
    let mut vopts: BTreeMap<String, String> = BTreeMap::new();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let truthy = |v: &Option<String>| -> Result<bool> {
            match v.as_deref() {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(o) => Err(bad(format!("invalid value for {k}: {o}"))),
            }
        };
        let need = |v: &Option<String>| -> Result<String> {
            v.clone()
                .ok_or_else(|| bad(format!("invalid field '{field}' must be a key=value pair")))
        };
        match k.as_str() {
            "type" => m.kind = need(&v)?,
            "source" | "src" => m.source = need(&v)?,
            "target" | "dst" | "destination" => m.target = need(&v)?,
            "readonly" | "ro" => m.read_only = truthy(&v)?,
            "consistency" => m.consistency = need(&v)?,
            "bind-propagation" => bind.propagation = need(&v)?,
            "bind-nonrecursive" => bind.non_recursive = truthy(&v)?,
            "bind-create-mountpoint" => bind.create_mountpoint = truthy(&v)?,
            "volume-nocopy" => vol.no_copy = truthy(&v)?,
            "volume-subpath" => vol.subpath = need(&v)?,
            "image-subpath" => image.subpath = need(&v)?,
            "volume-label" => {
                let kv = need(&v)?;
                let (lk, lv) = kv.split_once('=').unwrap_or((&kv, ""));
                labels.insert(lk.into(), lv.into());
            }
            "volume-driver" => {
                vol.driver_config.get_or_insert_with(Driver::default).name = need(&v)?
            }
            "volume-opt" => {
                let kv = need(&v)?;
                let (ok, ov) = kv.split_once('=').unwrap_or((&kv, ""));
                vopts.insert(ok.into(), ov.into());
            }
            "tmpfs-size" => {
                let s = need(&v)?;
                tmpfs.size_bytes = parse_ram_bytes(&s)
                    .map_err(|e| bad(format!("invalid value for tmpfs-size: {e}")))?;
            }
            "tmpfs-mode" => {
                let s = need(&v)?;
                tmpfs.mode = u32::from_str_radix(&s, 8)
                    .map_err(|_| bad(format!("invalid value for tmpfs-mode: {s}")))?;
            }
            _ => return Err(bad(format!("unexpected key '{k}' in '{field}'"))),
        }
    }
    if !labels.is_empty() {
        vol.labels = Some(labels);
    }
    if !vopts.is_empty() {
        let dc = vol.driver_config.get_or_insert_with(|| Driver {
            name: "local".into(),
            options: None,
        });
        dc.options = Some(vopts);
    }
    if bind != BindOptions::default() {
        m.bind_options = Some(bind);
    }
    if vol != VolumeOptions::default() {
        m.volume_options = Some(vol);
    }
    if tmpfs != TmpfsOptions::default() {
        m.tmpfs_options = Some(tmpfs);
    }
    if image != ImageOptions::default() {
        m.image_options = Some(image);
    }
    if m.target.is_empty() {
        return Err(bad("target is required".into()));
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// volume

/// `volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume
    Create(VolumeCreateCmd),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(VolumeLsCmd),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectCmd),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(VolumeRmCmd),
    /// Remove unused local volumes
    Prune(VolumePruneCmd),
}

/// `volume create` flags.
#[derive(Debug, Args)]
pub struct VolumeCreateCmd {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long = "label")]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// The volume name (generated when omitted)
    pub name: Option<String>,
}

/// `volume ls` flags.
#[derive(Debug, Args)]
pub struct VolumeLsCmd {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// `volume inspect` flags.
#[derive(Debug, Args)]
pub struct VolumeInspectCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume rm` flags.
#[derive(Debug, Args)]
pub struct VolumeRmCmd {
    /// Do not error when a volume does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Volumes
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `volume prune` flags.
#[derive(Debug, Args)]
pub struct VolumePruneCmd {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

const VOLUMES_TABLE: &str = "table {{.Driver}}\t{{.Name}}";

/// The `volume ls` row of a volume (Docker's `volumeContext`).
fn volume_row(v: &Volume) -> crate::template::Value {
    let na = |x: i64| {
        if x < 0 {
            "N/A".to_string()
        } else {
            crate::units::human_size(x as f64)
        }
    };
    let size = v
        .usage_data
        .as_ref()
        .map_or("N/A".to_string(), |u| na(u.size));
    let links = v.usage_data.as_ref().map_or("N/A".to_string(), |u| {
        if u.ref_count < 0 {
            "N/A".into()
        } else {
            u.ref_count.to_string()
        }
    });
    let labels = v.labels.clone().unwrap_or_default();
    format::labeled_row(
        &[
            ("Driver", v.driver.clone()),
            ("Name", v.name.clone()),
            ("Mountpoint", v.mountpoint.clone()),
            ("Scope", v.scope.clone()),
            ("Labels", format::labels_column(Some(&labels))),
            ("Links", links),
            ("Size", size),
            ("Group", "N/A".into()),
            ("Availability", "N/A".into()),
            ("Status", "N/A".into()),
        ],
        labels,
    )
}

/// Runs a `volume` subcommand.
pub fn volume(
    host: &Host,
    cmd: &VolumeCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
    input: &mut dyn BufRead,
) -> Result {
    match cmd {
        VolumeCommand::Create(c) => {
            let body = CreateOptions {
                name: c.name.clone().unwrap_or_default(),
                driver: c.driver.clone(),
                labels: Some(crate::containers::label_map(&c.label)),
                driver_opts: Some(crate::containers::label_map(&c.opt)),
            };
            let v: Volume = host.post("/volumes/create", Some(&json(&body)))?;
            writeln!(out, "{}", v.name)?;
            Ok(())
        }
        VolumeCommand::Ls(c) => {
            let r: ListResponse = host.get(&format!(
                "/volumes{}",
                crate::filters::query(&c.filter, &[])?
            ))?;
            let mut vols = r.volumes;
            vols.sort_by(|a, b| crate::units::natural_cmp(&a.name, &b.name));
            if c.quiet {
                for v in &vols {
                    writeln!(out, "{}", v.name)?;
                }
                return Ok(());
            }
            let columns = [
                ("Driver", "DRIVER"),
                ("Name", "VOLUME NAME"),
                ("Mountpoint", "MOUNTPOINT"),
                ("Scope", "SCOPE"),
                ("Labels", "LABELS"),
                ("Links", "LINKS"),
                ("Size", "SIZE"),
                ("Group", "GROUP"),
                ("Availability", "AVAILABILITY"),
                ("Status", "STATUS"),
            ];
            let rows: Vec<_> = vols.iter().map(volume_row).collect();
            format::print_list(
                out,
                c.format.as_deref().unwrap_or("table"),
                VOLUMES_TABLE,
                &columns,
                &rows,
            )
        }
        VolumeCommand::Inspect(c) => crate::ctl::inspect_each(
            host,
            &c.names,
            |n| format!("/volumes/{}", enc(n)),
            // The docker CLI decodes a volume and encodes it again (its fields, Go's escapes).
            |raw| match berth_api::from_str::<Volume>(&raw) {
                Ok(v) => String::from_utf8(json(&v)).unwrap_or(raw),
                Err(_) => raw,
            },
            (c.format.as_deref(), crate::commands::InspectJson::GoEncoded),
            out,
            err,
        ),
        VolumeCommand::Rm(c) => crate::containers::each(&c.names, out, err, |n| {
            let p = format!("/volumes/{}?force={}", enc(n), c.force as u8);
            host.call("DELETE", &p, None).map(|()| n.to_string())
        }),
        VolumeCommand::Prune(c) => {
            let what = if c.all {
                "all volumes not used by at least one container"
            } else {
                "all anonymous local volumes not used by at least one container"
            };
            if !crate::system::confirm(
                &format!("WARNING! This will remove {what}."),
                c.force,
                input,
                out,
            )? {
                return Ok(());
            }
            let extra: Vec<(&str, &str)> = if c.all { vec![("all", "true")] } else { vec![] };
            let q = crate::filters::query(&c.filter, &extra)?;
            let v: PruneReport = host.post(&format!("/volumes/prune{q}"), None)?;
            crate::system::print_deleted(out, "Deleted Volumes:", &v.volumes_deleted)?;
            crate::system::print_reclaimed(out, v.space_reclaimed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let m =
            parse_mount_flag("type=bind,src=/a,dst=/b,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(m.kind, "bind");
        assert_eq!(m.source, "/a");
        assert!(m.read_only);
        assert_eq!(m.bind_options.as_ref().unwrap().propagation, "rslave");
        let m =
            parse_mount_flag("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        assert_eq!(m.tmpfs_options.as_ref().unwrap().size_bytes, 1 << 20);
        assert_eq!(m.tmpfs_options.as_ref().unwrap().mode, 0o1770);
        let m = parse_mount_flag(
            "source=v,target=/v,volume-nocopy,volume-label=a=b,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
        )
        .unwrap();
        assert_eq!(m.kind, "volume");
        let vo = m.volume_options.as_ref().unwrap();
        assert!(vo.no_copy);
        let map = |kv: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some(m)
        };
        assert_eq!(vo.labels, map(&[("a", "b")]));
        assert_eq!(
            vo.driver_config.as_ref().unwrap().options,
            map(&[("type", "tmpfs"), ("device", "tmpfs")])
        );
        assert!(parse_mount_flag("type=bind,src=/a").is_err());
        assert!(parse_mount_flag("target=/a,bogus=1").is_err());
        assert!(parse_mount_flag("type=tmpfs,target=/t,tmpfs-size=lots").is_err());
    }

    #[test]
    fn storage_flags_apply() {
        let f = StorageFlags {
            volume: vec!["/anon".into(), "v:/data:ro".into()],
            tmpfs: vec!["/run:size=1m".into()],
            volumes_from: vec!["other:ro".into()],
            mount: vec![],
        };
        let mut req = CreateRequest::default();
        f.apply(&mut req).unwrap();
        assert_eq!(
            req.config.volumes,
            Some([("/anon".to_string(), Empty {})].into())
        );
        let hc = req.host_config.unwrap();
        assert_eq!(hc.binds.unwrap(), ["v:/data:ro"]);
        assert_eq!(
            hc.tmpfs,
            Some([("/run".to_string(), "size=1m".to_string())].into())
        );
        assert_eq!(hc.volumes_from.unwrap(), ["other:ro"]);
    }

    #[test]
    fn volume_rows_like_docker() {
        let v: Volume = berth_api::from_str(
            r#"{"Name":"v1","Driver":"local","Mountpoint":"/m","Scope":"local","Labels":{"a.b-c_d":"1"}}"#,
        )
        .unwrap();
        let f = format::parse(
            r#"table {{.Name}}\t{{.Labels}}\t{{.Links}}\t{{.Size}}\t{{.Label "a.b-c_d"}}"#,
            "",
        )
        .unwrap();
        let h = format::header(&[
            ("Name", "VOLUME NAME"),
            ("Labels", "LABELS"),
            ("Links", "LINKS"),
            ("Size", "SIZE"),
        ]);
        assert_eq!(
            f.render(&h, &[volume_row(&v)]).unwrap(),
            "VOLUME NAME   LABELS      LINKS     SIZE      b c d\nv1            a.b-c_d=1   N/A       N/A       1\n"
        );
    }
}
