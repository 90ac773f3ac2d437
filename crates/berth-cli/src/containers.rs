//! Container commands over the daemon's Engine API: `run`, `ps`, `logs`, `stop`, `rm`, `wait`.

use std::io::Write;

use clap::Args;
use serde_json::{json, Value};

use crate::api::{self, enc, ApiError, Host};
use crate::commands::CliError;

/// A daemon error as the CLI prints it (`Error response from daemon: …`).
pub(crate) fn daemon(e: ApiError) -> CliError {
    match e {
        ApiError::Status { message, .. } => {
            CliError::Message(format!("Error response from daemon: {message}"))
        }
        other => CliError::Message(other.to_string()),
    }
}

/// `run` flags (the subset the daemon honours so far).
#[derive(Debug, Args)]
pub struct RunCmd {
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Connect a container to a network (none, host, default)
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set metadata on a container
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Override the key sequence for detaching a container
    #[arg(long, default_value = "")]
    detach_keys: String,
    /// Volumes, binds, tmpfs (crate::storage)
    #[command(flatten)]
    storage: crate::storage::StorageFlags,
    /// Networking flags (`-p`, `-P`, `--dns`, `--add-host`, `--ip`, `-h`, …)
    #[command(flatten)]
    net: Box<crate::network::NetworkFlags>,
    /// Docker's other create flags.
    #[command(flatten)]
    pub opts: crate::ctl::CreateFlags,
    /// The image
    image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn create_body(c: &RunCmd) -> Result<Value, CliError> {
    let labels: serde_json::Map<String, Value> = c
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), Value::String(v.to_string()))
        })
        .collect();
    let mut body = json!({
        "Image": c.image,
        "Env": c.env,
        "Labels": labels,
        "AttachStdout": !c.detach,
        "AttachStderr": !c.detach,
        "HostConfig": {"AutoRemove": c.rm},
    });
    if !c.command.is_empty() {
        body["Cmd"] = json!(c.command);
    }
    c.storage.apply(&mut body)?;
    if let Some(w) = &c.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = &c.user {
        body["User"] = json!(u);
    }
    if let Some(e) = &c.entrypoint {
        body["Entrypoint"] = json!([e]);
    }
    if let Some(n) = &c.network {
        body["HostConfig"]["NetworkMode"] = json!(n);
    }
    c.net.apply(&mut body, c.network.as_deref())?;
    c.opts.apply(&mut body)?;
    Ok(body)
}

/// Creates the container; errors are printed as Docker's and exit 125.
fn create_container(host: &Host, c: &RunCmd, err: &mut dyn Write) -> Result<String, CliError> {
    let body = match create_body(c) {
        Ok(b) => b,
        Err(CliError::Usage(m)) => {
            let _ = writeln!(err, "berth: {m}");
            return Err(CliError::Exit(125));
        }
        Err(e) => return Err(e),
    };
    let path = match &c.name {
        Some(n) => format!("/containers/create?name={}", enc(n)),
        None => "/containers/create".to_string(),
    };
    let created = api::request(host, "POST", &path, Some(&body)).map_err(|e| match e {
        ApiError::Status { code: 404, message } if message.contains("image") => CliError::Exit({
            let _ = writeln!(err, "Unable to find image '{}' locally", c.image);
            let _ = writeln!(err, "berth: Error response from daemon: {message}.");
            125
        }),
        e => CliError::Exit({
            let _ = writeln!(err, "berth: {}", daemon(e));
            125
        }),
    })?;
    let v = created.json().map_err(daemon)?;
    for warning in v["Warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(err, "WARNING: {}", warning.as_str().unwrap_or_default());
    }
    Ok(v["Id"].as_str().unwrap_or_default().to_string())
}

/// `create`: prints the new container's ID.
pub fn create(
    host: &Host,
    c: &RunCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CliError> {
    let id = create_container(host, c, err)?;
    writeln!(out, "{id}").map_err(|e| CliError::Message(e.to_string()))?;
    Ok(0)
}

/// The exit status for a container that failed to start (Docker's 126/127/125).
fn start_failure(err: &mut dyn Write, e: ApiError) -> i32 {
    let msg = daemon(e).to_string();
    let _ = writeln!(err, "berth: {msg}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("not found") || lower.contains("no such file") {
        127
    } else if msg.contains("ermission denied") {
        126
    } else {
        125
    }
}

/// `run`: create, attach (unless detached), start, wait; exits with the container's status.
pub fn run(
    host: &Host,
    c: &RunCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CliError> {
    let id = create_container(host, c, err)?;
    if c.detach {
        if let Err(e) = api::request(host, "POST", &format!("/containers/{id}/start"), None) {
            return Ok(start_failure(err, e));
        }
        writeln!(out, "{id}").map_err(|e| CliError::Message(e.to_string()))?;
        return Ok(0);
    }
    let condition = if c.rm { "removed" } else { "next-exit" };
    if c.opts.interactive || c.opts.tty {
        let keys = crate::ctl::parse_detach_keys(&c.detach_keys)?;
        let stream = api::hijack(
            host,
            &format!(
                "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
                c.opts.interactive as u8
            ),
            None,
        )
        .map_err(daemon)?;
        let waiter = crate::ctl::spawn_wait(host, &id, condition);
        if let Err(e) = api::request(host, "POST", &format!("/containers/{id}/start"), None) {
            return Ok(start_failure(err, e));
        }
        if c.opts.tty {
            if let Some((h, w)) = crate::ctl::term_size() {
                let _ = api::request(
                    host,
                    "POST",
                    &format!("/containers/{id}/resize?h={h}&w={w}"),
                    None,
                );
            }
        }
        let detached = crate::ctl::interactive(
            host,
            stream,
            c.opts.tty,
            c.opts.interactive,
            c.opts.tty.then(|| format!("/containers/{id}/resize")),
            &keys,
        )?;
        if detached {
            return Ok(0);
        }
        return Ok(crate::ctl::join_wait(waiter));
    }
    // Attach before start so no output is lost; wait in the background from before the start
    // too, so a container removed at exit (--rm) is still waited for.
    let mut stream = api::attach(host, &id, false).map_err(daemon)?;
    let waiter = crate::ctl::spawn_wait(host, &id, condition);
    if let Err(e) = api::request(host, "POST", &format!("/containers/{id}/start"), None) {
        return Ok(start_failure(err, e));
    }
    api::demux(&mut stream, out, err).map_err(daemon)?;
    let code = waiter
        .join()
        .map_err(|_| CliError::Message("wait thread panicked".into()))?
        .map_err(daemon)?;
    Ok(code as i32)
}

/// `ps` flags.
#[derive(Debug, Args)]
pub struct PsCmd {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', or a Go template)
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
}

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

pub fn ps(host: &Host, c: &PsCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let mut query = format!("all={}", c.all as u8);
    let limit = if c.latest { 1 } else { c.last };
    if limit > 0 {
        query.push_str(&format!("&limit={limit}"));
    }
    if c.size {
        query.push_str("&size=1");
    }
    if !c.filter.is_empty() {
        query.push_str(&format!(
            "&filters={}",
            api::enc(&crate::ctl::filters_json(&c.filter)?)
        ));
    }
    let list = api::request(host, "GET", &format!("/containers/json?{query}"), None)
        .map_err(daemon)?
        .json()
        .map_err(daemon)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let w = |e: std::io::Error| CliError::Message(e.to_string());
    let mut rows = Vec::new();
    for ct in list.as_array().into_iter().flatten() {
        let id = ct["Id"].as_str().unwrap_or_default();
        let short = if c.no_trunc {
            id
        } else {
            &id[..id.len().min(12)]
        };
        if c.quiet {
            writeln!(out, "{short}").map_err(w)?;
            continue;
        }
        let mut cmd = format!("\"{}\"", ct["Command"].as_str().unwrap_or_default());
        if !c.no_trunc && cmd.chars().count() > 22 {
            cmd = format!("{}…\"", cmd.chars().take(20).collect::<String>());
        }
        let names: Vec<&str> = ct["Names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .map(|n| n.trim_start_matches('/'))
            .collect();
        let labels: Vec<String> = ct["Labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let size = if c.size {
            let rw = ct["SizeRw"].as_f64().unwrap_or(0.0);
            let root = ct["SizeRootFs"].as_f64().unwrap_or(0.0);
            format!(
                "{} (virtual {})",
                crate::units::human_size_with_precision(rw, 3),
                crate::units::human_size_with_precision(root, 3)
            )
        } else {
            String::new()
        };
        let created = ct["Created"].as_i64().unwrap_or(now);
        rows.push(crate::format::row(&[
            ("ID", short.to_string()),
            (
                "Image",
                ct["Image"].as_str().unwrap_or_default().to_string(),
            ),
            ("Command", cmd),
            (
                "CreatedAt",
                berth_image::timeutil::format_go_string_utc(created),
            ),
            ("RunningFor", crate::units::since(created, now)),
            (
                "Status",
                ct["Status"].as_str().unwrap_or_default().to_string(),
            ),
            (
                "State",
                ct["State"].as_str().unwrap_or_default().to_string(),
            ),
            ("Ports", crate::network::ports_column(&ct["Ports"])),
            ("Names", names.join(",")),
            ("Labels", labels.join(",")),
            ("Size", size),
            (
                "Networks",
                ct["NetworkSettings"]["Networks"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            ),
        ]));
    }
    if c.quiet {
        return Ok(());
    }
    let default_table = if c.size {
        format!("{PS_TABLE}\t{{{{.Size}}}}")
    } else {
        PS_TABLE.to_string()
    };
    let fmt = crate::format::parse(c.format.as_deref().unwrap_or("table"), &default_table)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let header = crate::format::row(&[
        ("ID", "CONTAINER ID".into()),
        ("Image", "IMAGE".into()),
        ("Command", "COMMAND".into()),
        ("CreatedAt", "CREATED AT".into()),
        ("RunningFor", "CREATED".into()),
        ("Status", "STATUS".into()),
        ("State", "STATE".into()),
        ("Ports", "PORTS".into()),
        ("Names", "NAMES".into()),
        ("Labels", "LABELS".into()),
        ("Size", "SIZE".into()),
        ("Networks", "NETWORKS".into()),
    ]);
    let text = fmt
        .render(&header, &rows)
        .map_err(|e| CliError::Message(format!("template: {}", e.0)))?;
    out.write_all(text.as_bytes()).map_err(w)?;
    Ok(())
}

/// `logs` flags.
#[derive(Debug, Args)]
pub struct LogsCmd {
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// The container
    container: String,
}

pub fn logs(
    host: &Host,
    c: &LogsCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        enc(&c.container),
        c.follow as u8,
        c.timestamps as u8,
        enc(&c.tail)
    );
    let info = api::request(
        host,
        "GET",
        &format!("/containers/{}/json", enc(&c.container)),
        None,
    )
    .and_then(|r| r.json())
    .map_err(daemon)?;
    let mut r = api::stream(host, &path).map_err(daemon)?;
    if info["Config"]["Tty"].as_bool() == Some(true) {
        std::io::copy(&mut r, out).map_err(|e| CliError::Message(e.to_string()))?;
        return Ok(());
    }
    api::demux(&mut r, out, err).map_err(daemon)
}

/// `stop` flags.
#[derive(Debug, Args)]
pub struct StopCmd {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(
    host: &Host,
    c: &StopCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |name| {
        let mut path = format!("/containers/{}/stop", enc(name));
        if let Some(t) = c.time {
            path.push_str(&format!("?t={t}"));
        }
        api::request(host, "POST", &path, None).map(|_| name.to_string())
    })
}

/// `rm` flags.
#[derive(Debug, Args)]
pub struct RmCmd {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    volumes: bool,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(
    host: &Host,
    c: &RmCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |name| {
        let path = format!(
            "/containers/{}?force={}&v={}",
            enc(name),
            c.force as u8,
            c.volumes as u8
        );
        api::request(host, "DELETE", &path, None).map(|_| name.to_string())
    })
}

/// `wait` flags.
#[derive(Debug, Args)]
pub struct WaitCmd {
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn wait(
    host: &Host,
    c: &WaitCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    each(&c.containers, out, err, |name| {
        let v = api::request(
            host,
            "POST",
            &format!("/containers/{}/wait", enc(name)),
            None,
        )?
        .json()?;
        Ok(v["StatusCode"].as_i64().unwrap_or(-1).to_string())
    })
}

/// Runs `op` for every container named, printing its result line, or the daemon's error (as the
/// docker CLI does, it goes on with the others and exits 1 if any failed).
pub(crate) fn each(
    names: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
    op: impl Fn(&str) -> Result<String, ApiError>,
) -> Result<(), CliError> {
    let mut failed = false;
    for name in names {
        match op(name) {
            Ok(line) => {
                let _ = writeln!(out, "{line}");
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(err, "{}", daemon(e));
            }
        }
    }
    if failed {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

/// `version` / `info` flags.
#[derive(Debug, Args)]
pub struct FormatCmd {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
}

fn templated(format: &str, v: &Value, out: &mut dyn Write) -> Result<(), CliError> {
    let t = crate::template::Template::parse(format)
        .map_err(|e| CliError::Usage(format!("template parsing error: {}", e.0)))?;
    let data = crate::template::Value::from_json_str(&v.to_string())
        .map_err(|e| CliError::Message(format!("template: {e}")))?;
    let s = t
        .execute(&data)
        .map_err(|e| CliError::Message(format!("template: {}", e.0)))?;
    writeln!(out, "{s}").map_err(|e| CliError::Message(e.to_string()))
}

/// `version`: the client, then the daemon's `/version` (like `docker version`).
pub fn version(
    host: &Host,
    c: &FormatCmd,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let client = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.44",
        "Os": std::env::consts::OS,
        "Arch": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
    });
    let server = api::request(host, "GET", "/version", None).and_then(|r| r.json());
    if let Some(f) = &c.format {
        let server = server.as_ref().cloned().unwrap_or(Value::Null);
        return templated(f, &json!({"Client": client, "Server": server}), out);
    }
    let w = |e: std::io::Error| CliError::Message(e.to_string());
    writeln!(
        out,
        "Client:\n Version:           {}\n API version:       {}\n OS/Arch:           {}/{}\n",
        client["Version"].as_str().unwrap_or_default(),
        client["ApiVersion"].as_str().unwrap_or_default(),
        client["Os"].as_str().unwrap_or_default(),
        client["Arch"].as_str().unwrap_or_default()
    )
    .map_err(w)?;
    match server {
        Ok(s) => {
            writeln!(
                out,
                "Server: {}\n Engine:\n  Version:          {}\n  API version:      {} (minimum version {})\n  OS/Arch:          {}/{}\n  Kernel:           {}",
                s["Platform"]["Name"].as_str().unwrap_or("Berth Engine"),
                s["Version"].as_str().unwrap_or_default(),
                s["ApiVersion"].as_str().unwrap_or_default(),
                s["MinAPIVersion"].as_str().unwrap_or_default(),
                s["Os"].as_str().unwrap_or_default(),
                s["Arch"].as_str().unwrap_or_default(),
                s["KernelVersion"].as_str().unwrap_or_default()
            )
            .map_err(w)?;
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(err, "{}", daemon(e));
            Err(CliError::Exit(1))
        }
    }
}

/// `info`: the daemon's `/info`, the lines `docker info` prints for a Berth daemon.
pub fn info(host: &Host, c: &FormatCmd, out: &mut dyn Write) -> Result<(), CliError> {
    let v = api::request(host, "GET", "/info", None)
        .and_then(|r| r.json())
        .map_err(daemon)?;
    if let Some(f) = &c.format {
        return templated(f, &v, out);
    }
    let s = |k: &str| match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let text = format!(
        "Server:\n Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n Images: {}\n Server Version: {}\n Storage Driver: {}\n Logging Driver: {}\n Cgroup Driver: {}\n Cgroup Version: {}\n Kernel Version: {}\n Operating System: {}\n OSType: {}\n Architecture: {}\n CPUs: {}\n Total Memory: {}\n Name: {}\n ID: {}\n Docker Root Dir: {}\n",
        s("Containers"),
        s("ContainersRunning"),
        s("ContainersPaused"),
        s("ContainersStopped"),
        s("Images"),
        s("ServerVersion"),
        s("Driver"),
        s("LoggingDriver"),
        s("CgroupDriver"),
        s("CgroupVersion"),
        s("KernelVersion"),
        s("OperatingSystem"),
        s("OSType"),
        s("Architecture"),
        s("NCPU"),
        crate::units::human_size_with_precision(v["MemTotal"].as_f64().unwrap_or(0.0), 4),
        s("Name"),
        s("ID"),
        s("DockerRootDir"),
    );
    out.write_all(text.as_bytes())
        .map_err(|e| CliError::Message(e.to_string()))
}
