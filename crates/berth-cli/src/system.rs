//! Daemon-wide commands: `version`, `info`, `events`, `stats`, `system df`, `container prune`,
//! `system prune`.

use std::io::{BufRead, Write};

use berth_api::container::{PruneReport as ContainerPrune, Summary};
use berth_api::image::{DeleteItem, PruneReport as ImagePrune};
use berth_api::stats::StatsResponse;
use berth_api::system::{BuildCachePruneReport, DiskUsage, EventMessage, Info, Version};
use berth_api::volume::PruneReport as VolumePrune;
use clap::Args;
use serde::Serialize;

use crate::api::{self, enc, Host};
use crate::commands::DfRow;
use crate::error::{CliError, Result};
use crate::format::{self, TemplateUse};
use crate::units::human_size;

/// `version` / `info` flags.
#[derive(Debug, Args)]
pub struct FormatCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
}

/// The client part of `version`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ClientVersion {
    version: &'static str,
    api_version: &'static str,
    os: &'static str,
    arch: &'static str,
}

/// What `version --format` sees.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionInfo<'a> {
    client: &'a ClientVersion,
    server: Option<&'a Version>,
}

/// `version`: the client, then the daemon's `/version` (like `docker version`).
pub fn version(host: &Host, c: &FormatCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    let client = ClientVersion {
        version: env!("CARGO_PKG_VERSION"),
        api_version: api::API_VERSION,
        os: std::env::consts::OS,
        arch: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        },
    };
    let server: std::result::Result<Version, _> = host.get("/version");
    if let Some(f) = &c.format {
        let t = TemplateUse::Document.parse(f)?;
        let v = VersionInfo {
            client: &client,
            server: server.as_ref().ok(),
        };
        writeln!(out, "{}", format::render(&t, &v, TemplateUse::Document)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "Client:\n Version:           {}\n API version:       {}\n OS/Arch:           {}/{}\n",
        client.version, client.api_version, client.os, client.arch
    )?;
    match server {
        Ok(s) => {
            let platform = if s.platform.name.is_empty() {
                "Berth Engine"
            } else {
                &s.platform.name
            };
            writeln!(
                out,
                "Server: {platform}\n Engine:\n  Version:          {}\n  API version:      {} (minimum version {})\n  OS/Arch:          {}/{}\n  Kernel:           {}",
                s.version, s.api_version, s.min_api_version, s.os, s.arch, s.kernel_version
            )?;
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(err, "{}", CliError::from(e));
            Err(CliError::Exit(1))
        }
    }
}

/// `info`: the daemon's `/info`, the lines `docker info` prints for a Berth daemon.
pub fn info(host: &Host, c: &FormatCmd, out: &mut dyn Write) -> Result {
    let v: Info = host.get("/info")?;
    if let Some(f) = &c.format {
        let t = TemplateUse::Document.parse(f)?;
        writeln!(out, "{}", format::render(&t, &v, TemplateUse::Document)?)?;
        return Ok(());
    }
    let text = format!(
        "Server:\n Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n Images: {}\n Server Version: {}\n Storage Driver: {}\n Logging Driver: {}\n Cgroup Driver: {}\n Cgroup Version: {}\n Kernel Version: {}\n Operating System: {}\n OSType: {}\n Architecture: {}\n CPUs: {}\n Total Memory: {}\n Name: {}\n ID: {}\n Docker Root Dir: {}\n",
        v.containers,
        v.containers_running,
        v.containers_paused,
        v.containers_stopped,
        v.images,
        v.server_version,
        v.driver,
        v.logging_driver,
        v.cgroup_driver,
        v.cgroup_version,
        v.kernel_version,
        v.operating_system,
        v.os_type,
        v.architecture,
        v.ncpu,
        crate::units::human_size_with_precision(v.mem_total as f64, 4),
        v.name,
        v.id,
        v.docker_root_dir,
    );
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// `stats` flags.
#[derive(Debug, Args)]
pub struct StatsCmd {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

/// A number with at most three decimals, trailing zeros dropped.
fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Binary units (`1.5MiB`), as Docker's memory column.
fn binary_size(x: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = x;
    let mut i = 0;
    while x >= 1024.0 && i < units.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    format!("{}{}", trim_float(x), units[i])
}

/// The `stats` row of one sample, computed as the docker CLI does.
fn stats_row(v: &StatsResponse, no_trunc: bool) -> crate::template::Value {
    let cpu_delta =
        v.cpu_stats.cpu_usage.total_usage as f64 - v.precpu_stats.cpu_usage.total_usage as f64;
    let sys_delta = v.cpu_stats.system_cpu_usage as f64 - v.precpu_stats.system_cpu_usage as f64;
    let mut ncpu = v.cpu_stats.online_cpus as f64;
    if ncpu == 0.0 {
        ncpu = v
            .cpu_stats
            .cpu_usage
            .percpu_usage
            .as_ref()
            .map_or(1, Vec::len) as f64;
    }
    let cpu_pct = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * ncpu * 100.0
    } else {
        0.0
    };
    let m = &v.memory_stats;
    // The page cache does not count (cgroup v1 `total_inactive_file`, v2 `inactive_file`).
    let cache = m
        .stats
        .get("total_inactive_file")
        .or_else(|| m.stats.get("inactive_file"))
        .copied()
        .unwrap_or(0) as f64;
    let used = (m.usage as f64 - cache).max(0.0);
    let limit = m.limit as f64;
    let mem_pct = if limit > 0.0 {
        used / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    for i in v.networks.iter().flat_map(|n| n.values()) {
        rx += i.rx_bytes as f64;
        tx += i.tx_bytes as f64;
    }
    let (mut br, mut bw) = (0.0, 0.0);
    for e in v.blkio_stats.io_service_bytes_recursive.iter().flatten() {
        match e.op.to_ascii_lowercase().as_str() {
            "read" => br += e.value as f64,
            "write" => bw += e.value as f64,
            _ => {}
        }
    }
    let id = crate::containers::short_id(&v.id, no_trunc);
    let hs = |x: f64| crate::units::human_size_with_precision(x, 3);
    format::row(&[
        ("Container", id.clone()),
        ("ID", id),
        ("Name", v.name.trim_start_matches('/').to_string()),
        ("CPUPerc", format!("{cpu_pct:.2}%")),
        (
            "MemUsage",
            format!("{} / {}", binary_size(used), binary_size(limit)),
        ),
        ("MemPerc", format!("{mem_pct:.2}%")),
        ("NetIO", format!("{} / {}", hs(rx), hs(tx))),
        ("BlockIO", format!("{} / {}", hs(br), hs(bw))),
        ("PIDs", v.pids_stats.current.to_string()),
    ])
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

pub fn stats(host: &Host, c: &StatsCmd, out: &mut dyn Write) -> Result {
    let names: Vec<String> = if c.containers.is_empty() {
        let list: Vec<Summary> = host.get(&format!("/containers/json?all={}", c.all as u8))?;
        list.into_iter().map(|x| x.id).collect()
    } else {
        c.containers.clone()
    };
    let fmt = format::parse_list(c.format.as_deref().unwrap_or("table"), STATS_TABLE)?;
    let header = format::header(&[
        ("Container", "CONTAINER"),
        ("ID", "CONTAINER ID"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ]);
    loop {
        // One request per container, in parallel (each takes a second for the CPU delta).
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let host = host.clone();
                let p = format!("/containers/{}/stats?stream=0", enc(n));
                std::thread::spawn(move || host.get::<StatsResponse>(&p))
            })
            .collect();
        let mut rows = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => rows.push(stats_row(&v, c.no_trunc)),
                Ok(Err(e)) if !c.containers.is_empty() => return Err(e.into()),
                _ => {}
            }
        }
        let text = fmt.render_list(&header, &rows)?;
        if !c.no_stream {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if c.no_stream {
            return Ok(());
        }
    }
}

/// `events` flags.
#[derive(Debug, Args)]
pub struct EventsCmd {
    /// Show all events created since timestamp
    #[arg(long)]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    until: Option<String>,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

/// An event as `docker events` prints it without a format.
fn event_line(v: &EventMessage) -> String {
    let ns = v.time_nano;
    // Docker's `RFC3339NanoFixed`: always nine digits.
    let t = berth_image::timeutil::format_rfc3339_nano9(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    );
    let attrs: Vec<String> = v
        .actor
        .attributes
        .iter()
        .map(|(k, x)| format!("{k}={x}"))
        .collect();
    format!(
        "{t} {} {} {} ({})",
        v.kind,
        v.action,
        v.actor.id,
        attrs.join(", ")
    )
}

pub fn events(host: &Host, c: &EventsCmd, out: &mut dyn Write) -> Result {
    let mut q = Vec::new();
    for (k, v) in [("since", &c.since), ("until", &c.until)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    if !c.filter.is_empty() {
        q.push(("filters", crate::filters::json(&c.filter)?));
    }
    let t = c
        .format
        .as_deref()
        .map(|f| TemplateUse::List.parse(f))
        .transpose()?;
    let r = api::stream(host, &format!("/events{}", api::query(&q)))?;
    for line in std::io::BufReader::new(r).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: EventMessage = api::decode_str(&line)?;
        let text = match &t {
            Some(t) => {
                // `Actor.Attributes` is a Go map: a missing key is `<no value>`.
                let mut val = crate::template::Value::from_serialize(&v);
                val.mark_map("Actor.Attributes");
                format::render_value(t, &val, TemplateUse::List)?
            }
            None => event_line(&v),
        };
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(())
}

/// `container prune` / `system prune` flags.
#[derive(Debug, Args)]
pub struct PruneCmd {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove all unused images not just dangling ones (system prune)
    #[arg(short = 'a', long)]
    all: bool,
    /// Prune anonymous volumes (system prune)
    #[arg(long)]
    volumes: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long)]
    filter: Vec<String>,
}

/// Asks before a prune (unless forced); true to go on.
pub fn confirm(
    prompt: &str,
    force: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<bool> {
    if force {
        return Ok(true);
    }
    write!(out, "{prompt}\nAre you sure you want to continue? [y/N] ")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    // As the docker CLI: "y" or "yes", in any case.
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Prints a prune's list (`Deleted Containers:` …) when it is not empty.
pub(crate) fn print_deleted(out: &mut dyn Write, title: &str, items: &[String]) -> Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(out, "{title}")?;
    for i in items {
        writeln!(out, "{i}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// Prints a prune's last line: `Total reclaimed space: 1.2MB`.
pub(crate) fn print_reclaimed(out: &mut dyn Write, bytes: u64) -> Result {
    writeln!(out, "Total reclaimed space: {}", human_size(bytes as f64))?;
    Ok(())
}

/// Prints an image prune's `Deleted Images:` list (`untagged: …`, `deleted: …`).
pub(crate) fn print_deleted_images(out: &mut dyn Write, items: &[DeleteItem]) -> Result {
    let lines: Vec<String> = items
        .iter()
        .map(|d| match d {
            DeleteItem::Untagged(u) => format!("untagged: {u}"),
            DeleteItem::Deleted(d) => format!("deleted: {d}"),
        })
        .collect();
    print_deleted(out, "Deleted Images:", &lines)
}

fn prune_containers(host: &Host, filters: &[String], out: &mut dyn Write) -> Result<u64> {
    let q = crate::filters::query(filters, &[])?;
    let r: ContainerPrune = host.post(&format!("/containers/prune{q}"), None)?;
    print_deleted(
        out,
        "Deleted Containers:",
        r.containers_deleted.as_deref().unwrap_or_default(),
    )?;
    Ok(r.space_reclaimed)
}

pub fn container_prune(
    host: &Host,
    c: &PruneCmd,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result {
    if !confirm(
        "WARNING! This will remove all stopped containers.",
        c.force,
        input,
        out,
    )? {
        return Ok(());
    }
    let total = prune_containers(host, &c.filter, out)?;
    print_reclaimed(out, total)
}

pub fn system_prune(
    host: &Host,
    c: &PruneCmd,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result {
    let what = if c.all {
        "  - all images without at least one container associated to them"
    } else {
        "  - all dangling images"
    };
    let vols = if c.volumes {
        "\n  - all anonymous volumes not used by at least one container"
    } else {
        ""
    };
    if !confirm(
        &format!("WARNING! This will remove:\n  - all stopped containers{vols}\n{what}\n  - unused build cache\n"),
        c.force,
        input,
        out,
    )? {
        return Ok(());
    }
    let mut total = prune_containers(host, &[], out)?;
    if c.volumes {
        // As docker: anonymous volumes only (named ones need `volume prune -a`).
        let v: VolumePrune = host.post("/volumes/prune", None)?;
        total += v.space_reclaimed;
        print_deleted(out, "Deleted Volumes:", &v.volumes_deleted)?;
    }
    let filters = if c.all {
        format!("?filters={}", enc(r#"{"dangling":["false"]}"#))
    } else {
        String::new()
    };
    let v: ImagePrune = host.post(&format!("/images/prune{filters}"), None)?;
    total += v.space_reclaimed;
    print_deleted_images(out, &v.images_deleted.unwrap_or_default())?;
    // The build cache, as docker's system prune.
    let path = if c.all {
        "/build/prune?all=1"
    } else {
        "/build/prune"
    };
    let v: BuildCachePruneReport = host.post(path, None)?;
    total += v.space_reclaimed;
    print_deleted(
        out,
        "Deleted build cache objects:",
        v.caches_deleted.as_deref().unwrap_or_default(),
    )?;
    print_reclaimed(out, total)
}

/// `system df` flags.
#[derive(Debug, Args)]
pub struct DfCmd {
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// The rows of `system df` from the daemon's disk usage, counted as the docker CLI counts
/// them (active images have containers; active containers are running, paused or
/// restarting; active volumes are in use; the build cache counts unshared records).
pub fn df_rows(du: &DiskUsage) -> Result<Vec<DfRow>> {
    let image_used: i64 = du
        .images
        .iter()
        .filter(|i| i.containers != 0 && i.size != -1 && i.shared_size != -1)
        .map(|i| i.size - i.shared_size)
        .sum();
    let images = DfRow {
        kind: "Images",
        total: du.images.len(),
        active: du.images.iter().filter(|i| i.containers > 0).count(),
        size: du.layers_size,
        reclaimable: du.layers_size - image_used,
        percent: true,
    };
    let active_state =
        |s: &str| s.contains("running") || s.contains("paused") || s.contains("restarting");
    let containers = DfRow {
        kind: "Containers",
        total: du.containers.len(),
        active: du
            .containers
            .iter()
            .filter(|c| active_state(&c.state))
            .count(),
        size: du.containers.iter().map(|c| c.size_rw.unwrap_or(0)).sum(),
        reclaimable: du
            .containers
            .iter()
            .filter(|c| !active_state(&c.state))
            .map(|c| c.size_rw.unwrap_or(0))
            .sum(),
        percent: true,
    };
    let usage = |v: &berth_api::volume::Volume| v.usage_data.clone().unwrap_or_default();
    let volumes = DfRow {
        kind: "Local Volumes",
        total: du.volumes.len(),
        active: du.volumes.iter().filter(|v| usage(v).ref_count > 0).count(),
        size: du
            .volumes
            .iter()
            .map(|v| usage(v).size)
            .filter(|s| *s != -1)
            .sum(),
        reclaimable: du
            .volumes
            .iter()
            .map(usage)
            .filter(|u| u.ref_count == 0 && u.size != -1)
            .map(|u| u.size)
            .sum(),
        percent: true,
    };
    let records = &du.build_cache;
    let build = DfRow {
        kind: "Build Cache",
        total: records.len(),
        active: records.iter().filter(|r| r.in_use).count(),
        size: records.iter().filter(|r| !r.shared).map(|r| r.size).sum(),
        reclaimable: records
            .iter()
            .filter(|r| !r.shared && !r.in_use)
            .map(|r| r.size)
            .sum(),
        percent: false,
    };
    Ok(vec![images, containers, volumes, build])
}

/// `system df` through the daemon.
pub fn df(host: &Host, c: &DfCmd, out: &mut dyn Write) -> Result {
    let du: DiskUsage = host.get("/system/df")?;
    crate::commands::render_df(&df_rows(&du)?, c.format.as_deref(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_counts_like_docker() {
        let du: DiskUsage = berth_api::from_str(
            r#"{"LayersSize": 1000,
                "Images": [{"Id":"a","Size":600,"SharedSize":100,"Containers":1},
                           {"Id":"b","Size":400,"SharedSize":0,"Containers":0}],
                "Containers": [{"Id":"c1","State":"running","SizeRw":10},
                               {"Id":"c2","State":"exited","SizeRw":30}],
                "Volumes": [{"Name":"v1","UsageData":{"Size":50,"RefCount":1}},
                            {"Name":"v2","UsageData":{"Size":150,"RefCount":0}},
                            {"Name":"v3","UsageData":{"Size":-1,"RefCount":0}}],
                "BuildCache": [{"ID":"x","InUse":true,"Size":5},{"ID":"y","Size":7},
                               {"ID":"z","Shared":true,"Size":100}]}"#,
        )
        .unwrap();
        let rows = df_rows(&du).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.total, r.active, r.size, r.reclaimable))
                .collect::<Vec<_>>(),
            vec![
                (2, 1, 1000, 500),
                (2, 1, 40, 30),
                (3, 1, 200, 150),
                (3, 1, 12, 7)
            ]
        );
        let mut out = Vec::new();
        crate::commands::render_df(&rows, None, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n\
             Images          2         1         1kB       500B (50%)\n\
             Containers      2         1         40B       30B (75%)\n\
             Local Volumes   3         1         200B      150B (75%)\n\
             Build Cache     3         1         12B       7B\n"
        );
    }

    #[test]
    fn stats_rows_like_docker() {
        let s: StatsResponse = berth_api::from_str(
            r#"{"id":"0123456789abcdef","name":"/web",
                "cpu_stats":{"cpu_usage":{"total_usage":300},"system_cpu_usage":2000,"online_cpus":2},
                "precpu_stats":{"cpu_usage":{"total_usage":100},"system_cpu_usage":1000},
                "memory_stats":{"usage":3145728,"limit":10485760,"stats":{"inactive_file":1048576}},
                "networks":{"eth0":{"rx_bytes":1000,"tx_bytes":2000}},
                "blkio_stats":{"io_service_bytes_recursive":[{"op":"Read","value":4096},{"op":"write","value":8192}]},
                "pids_stats":{"current":3}}"#,
        )
        .unwrap();
        let f = format::parse("{{.ID}}|{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|{{.NetIO}}|{{.BlockIO}}|{{.PIDs}}", "").unwrap();
        let h = format::header(&[]);
        assert_eq!(
            f.render(&h, &[stats_row(&s, false)]).unwrap(),
            "0123456789ab|web|40.00%|2MiB / 10MiB|20.00%|1kB / 2kB|4.1kB / 8.19kB|3\n"
        );
    }

    #[test]
    fn event_lines() {
        let e: EventMessage = berth_api::from_str(
            r#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"x","image":"busybox"}},"time":1,"timeNano":1000000005}"#,
        )
        .unwrap();
        assert_eq!(
            event_line(&e),
            "1970-01-01T00:00:01.000000005Z container start abc (image=busybox, name=x)"
        );
        let e = EventMessage {
            time_nano: 1_500_000_000,
            ..e
        };
        assert!(event_line(&e).starts_with("1970-01-01T00:00:01.500000000Z "));
    }
}
