//! Container commands over the daemon's Engine API: `run` and `create` (the typed create
//! request from the flags, pulling a missing image, forwarding signals), `ps`, `logs`,
//! `stop`, `rm`, `wait`.

use std::collections::BTreeMap;
use std::io::Write;

use berth_api::container::{
    Config, CreateRequest, CreateResponse, HostConfig, Summary, WaitResponse,
};
use berth_image::Reference;
use clap::Args;

use crate::api::{self, enc, json, ApiError, Host};
use crate::error::{CliError, Result};
use crate::format::TemplateUse;
use crate::terminal::{container_session, parse_detach_keys, spawn_wait, term_size, SignalProxy};

/// `--pull`: when `run` and `create` pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Always pull before creating.
    Always,
    /// Pull when the image is not there (the default).
    #[default]
    Missing,
    /// Never pull.
    Never,
}

/// A `--pull` value that is none of Docker's.
#[derive(Debug, thiserror::Error)]
#[error("invalid pull option: '{0}': must be one of \"always\", \"missing\" or \"never\"")]
pub struct BadPullPolicy(String);

fn parse_pull_policy(s: &str) -> Result<PullPolicy, BadPullPolicy> {
    match s {
        "always" => Ok(PullPolicy::Always),
        "missing" => Ok(PullPolicy::Missing),
        "never" => Ok(PullPolicy::Never),
        other => Err(BadPullPolicy(other.to_string())),
    }
}

/// The flags of the process that `run` and `exec` start: its environment, working directory
/// and user.
#[derive(Debug, Args)]
pub struct ProcessFlags {
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
}

impl ProcessFlags {
    /// `Env` of a create or exec request.
    pub fn env(&self) -> Option<Vec<String>> {
        Some(self.env.clone())
    }

    /// `WorkingDir` (`""`: the image's).
    pub fn working_dir(&self) -> String {
        self.workdir.clone().unwrap_or_default()
    }

    /// `User` (`""`: the image's).
    pub fn user(&self) -> String {
        self.user.clone().unwrap_or_default()
    }
}

/// `run` / `create` flags.
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
    /// `-e`, `-w`, `-u`
    #[command(flatten)]
    process: ProcessFlags,
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
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing", value_parser = parse_pull_policy)]
    pull: PullPolicy,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// Suppress the pull output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Proxy received signals to the process
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    sig_proxy: bool,
    /// Volumes, binds, tmpfs (crate::storage)
    #[command(flatten)]
    storage: crate::storage::StorageFlags,
    /// Networking flags (`-p`, `-P`, `--dns`, `--add-host`, `--ip`, `-h`, …)
    #[command(flatten)]
    net: Box<crate::network::NetworkFlags>,
    /// Docker's other create flags.
    #[command(flatten)]
    pub opts: crate::opts::CreateFlags,
    /// The image, then the command and its arguments (everything after the image is the
    /// command's, as Docker parses it: `run busybox -c x` runs `-c x`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    args: Vec<String>,
}

impl RunCmd {
    /// The image.
    pub fn image(&self) -> &str {
        &self.args[0]
    }

    /// The command and its arguments (empty: the image's).
    pub fn command(&self) -> &[String] {
        &self.args[1..]
    }
}

/// Labels from `KEY=VALUE` flags (`KEY` alone is an empty value).
pub fn label_map(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The create request of the flags.
fn create_request(c: &RunCmd) -> Result<CreateRequest> {
    let mut req = CreateRequest {
        config: Config {
            image: c.image().to_string(),
            env: c.process.env(),
            labels: Some(label_map(&c.label)),
            attach_stdout: !c.detach,
            attach_stderr: !c.detach,
            cmd: (!c.command().is_empty()).then(|| c.command().to_vec()),
            working_dir: c.process.working_dir(),
            user: c.process.user(),
            entrypoint: c.entrypoint.as_ref().map(|e| vec![e.clone()]),
            ..Default::default()
        },
        host_config: Some(HostConfig {
            auto_remove: c.rm,
            network_mode: c.network.clone().unwrap_or_default(),
            ..Default::default()
        }),
        networking_config: None,
    };
    c.storage.apply(&mut req)?;
    c.net.apply(&mut req, c.network.as_deref())?;
    c.opts.apply(&mut req)?;
    Ok(req)
}

/// The image named as Docker's CLI names it in "Unable to find image" (`busybox:latest`);
/// `None` for an image ID.
fn named_image(image: &str) -> Option<Reference> {
    let r = Reference::parse_normalized(image).ok()?;
    if r.tag().is_some() || r.digest().is_some() {
        return Some(r);
    }
    r.with_tag(berth_image::reference::DEFAULT_TAG).ok()
}

/// Pulls `reference` for `run`/`create`: the progress on standard error (nothing with `-q`),
/// as the docker CLI shows it.
fn pull_for_create(host: &Host, c: &RunCmd, reference: &Reference, err: &mut dyn Write) -> Result {
    let backend = crate::apibackend::ApiBackend { host: host.clone() };
    let mut sink = std::io::sink();
    let out: &mut dyn Write = if c.quiet { &mut sink } else { err };
    crate::commands::pull_reference(
        &backend,
        reference,
        c.platform.as_deref(),
        c.quiet,
        out,
        Box::new(std::io::stderr()),
        crate::commands::ProgressTarget::Stderr,
    )
    // The docker CLI shows a pull's failure as the stream's error (no "Error response").
    .map_err(|e| match e {
        CliError::Daemon(b) => CliError::Message(b.message),
        other => other,
    })
}

/// Creates the container (pulling its image as `--pull` says); errors are printed as
/// Docker's and exit 125.
fn create_container(host: &Host, c: &RunCmd, err: &mut dyn Write) -> Result<String> {
    let fail = |err: &mut dyn Write, e: CliError| {
        let _ = writeln!(err, "berth: {e}");
        CliError::Exit(125)
    };
    let req = create_request(c).map_err(|e| fail(err, e))?;
    let body = json(&req);
    let mut path = "/containers/create".to_string();
    let mut q = Vec::new();
    if let Some(n) = &c.name {
        q.push(("name", n.clone()));
    }
    if let Some(p) = &c.platform {
        q.push(("platform", p.clone()));
    }
    path.push_str(&api::query(&q));
    let named = named_image(c.image());
    if c.pull == PullPolicy::Always {
        if let Some(r) = &named {
            pull_for_create(host, c, r, err).map_err(|e| fail(err, e))?;
        }
    }
    let created: CreateResponse = match host.post(&path, Some(&body)) {
        Ok(r) => r,
        Err(ApiError::Status { code: 404, message })
            if message.contains("image") && c.pull == PullPolicy::Missing && named.is_some() =>
        {
            let r = named.as_ref().expect("checked");
            if !c.quiet {
                let _ = writeln!(
                    err,
                    "Unable to find image '{}' locally",
                    r.familiar_string()
                );
            }
            // A failed pull names the missing image and why it could not be pulled.
            pull_for_create(host, c, r, err).map_err(|e| {
                let why = e.to_string();
                fail(
                    err,
                    CliError::Message(format!(
                        "Error response from daemon: {message} (pulling it: {why})"
                    )),
                )
            })?;
            host.post(&path, Some(&body))
                .map_err(|e| fail(err, e.into()))?
        }
        Err(e) => return Err(fail(err, e.into())),
    };
    for warning in &created.warnings {
        let _ = writeln!(err, "WARNING: {warning}");
    }
    Ok(created.id)
}

/// `create`: prints the new container's ID.
pub fn create(host: &Host, c: &RunCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    let id = create_container(host, c, err)?;
    writeln!(out, "{id}")?;
    Ok(0)
}

/// The exit status for a container that failed to start (Docker's 126/127/125).
fn start_failure(err: &mut dyn Write, e: ApiError) -> i32 {
    let msg = CliError::from(e).to_string();
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
/// Without a terminal, the signals the CLI receives go to the container (`--sig-proxy`).
pub fn run(host: &Host, c: &RunCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32> {
    let id = create_container(host, c, err)?;
    let start = format!("/containers/{id}/start");
    if c.detach {
        if let Err(e) = host.call("POST", &start, None) {
            return Ok(start_failure(err, e));
        }
        writeln!(out, "{id}")?;
        return Ok(0);
    }
    let condition = if c.rm { "removed" } else { "next-exit" };
    let tty = c.opts.tty;
    // Forwarding starts before the start, as Docker's: a signal right after it is not lost.
    let _proxy = if c.sig_proxy && !tty {
        Some(SignalProxy::start(host, &id)?)
    } else {
        None
    };
    if c.opts.interactive || tty {
        let keys = parse_detach_keys(&c.detach_keys)?;
        let stream = api::attach(host, &id, c.opts.interactive)?;
        let waiter = spawn_wait(host, &id, condition);
        if let Err(e) = host.call("POST", &start, None) {
            return Ok(start_failure(err, e));
        }
        if tty {
            if let Some((h, w)) = term_size() {
                let _ = host.call(
                    "POST",
                    &format!("/containers/{id}/resize?h={h}&w={w}"),
                    None,
                );
            }
        }
        return container_session(host, &id, stream, tty, c.opts.interactive, &keys, waiter);
    }
    // Attach before start so no output is lost; wait in the background from before the start
    // too, so a container removed at exit (--rm) is still waited for.
    let mut stream = api::attach(host, &id, false)?;
    let waiter = spawn_wait(host, &id, condition);
    if let Err(e) = host.call("POST", &start, None) {
        return Ok(start_failure(err, e));
    }
    api::demux(&mut stream, out, err)?;
    let code = waiter
        .join()
        .map_err(|_| CliError::Message("wait thread panicked".into()))??;
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

/// An ID as lists show it: its first 12 characters unless `--no-trunc`.
pub fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

/// The `ps` row of a container (Docker's `ContainerContext`; `no_trunc` is `--no-trunc`).
fn ps_row(ct: &Summary, no_trunc: bool, now: i64) -> crate::template::Value {
    use crate::commands::ellipsis;
    let trunc = !no_trunc;
    let short = short_id(&ct.id, no_trunc);
    let cmd = crate::template::value::go_quote(&if trunc {
        ellipsis(&ct.command, 20)
    } else {
        ct.command.clone()
    });
    let names: Vec<&str> = ct.names.iter().map(|n| n.trim_start_matches('/')).collect();
    // Docker's `Size()`: the writable layer, and the virtual size when known.
    let rw = crate::units::human_size_with_precision(ct.size_rw.unwrap_or(0) as f64, 3);
    let size_col = match ct.size_root_fs.unwrap_or(0) {
        root if root > 0 => format!(
            "{rw} (virtual {})",
            crate::units::human_size_with_precision(root as f64, 3)
        ),
        _ => rw,
    };
    let mounts: Vec<String> = ct
        .mounts
        .iter()
        .map(|m| {
            let name = if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            };
            if trunc {
                ellipsis(name, 15)
            } else {
                name.clone()
            }
        })
        .collect();
    let local_volumes = ct.mounts.iter().filter(|m| m.driver == "local").count();
    let labels = ct.labels.clone().unwrap_or_default();
    let mut row = crate::format::labeled_row(
        &[
            ("ID", short),
            ("Image", ct.image.clone()),
            ("Command", cmd),
            (
                "CreatedAt",
                berth_image::timeutil::format_go_string_utc(ct.created),
            ),
            ("RunningFor", crate::units::since(ct.created, now)),
            ("Status", ct.status.clone()),
            ("State", ct.state.clone()),
            ("Ports", crate::network::ports_column(&ct.ports)),
            ("Names", names.join(",")),
            ("Labels", crate::format::labels_column(Some(&labels))),
            ("Size", size_col),
            ("Mounts", mounts.join(",")),
            ("LocalVolumes", local_volumes.to_string()),
            (
                "Networks",
                ct.network_settings
                    .networks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ],
        labels,
    );
    // The image's platform: not reported by the daemon (Docker's is then nil).
    if let crate::template::Value::Context(fields) = &mut row {
        fields.push(("Platform".into(), crate::template::Value::Nil));
    }
    row
}

fn ps_header() -> crate::template::Value {
    crate::format::header(&[
        ("ID", "CONTAINER ID"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Status", "STATUS"),
        ("State", "STATE"),
        ("Ports", "PORTS"),
        ("Names", "NAMES"),
        ("Labels", "LABELS"),
        ("Size", "SIZE"),
        ("Mounts", "MOUNTS"),
        ("LocalVolumes", "LOCAL VOLUMES"),
        ("Networks", "NETWORKS"),
        ("Platform", "PLATFORM"),
    ])
}

pub fn ps(host: &Host, c: &PsCmd, out: &mut dyn Write) -> Result {
    let mut size = c.size;
    let source = c.format.as_deref().unwrap_or("table");
    let default_table = if c.size {
        format!("{PS_TABLE}\t{{{{.Size}}}}")
    } else {
        PS_TABLE.to_string()
    };
    let fmt = if c.quiet {
        None
    } else {
        // As the docker CLI: the template runs once on an empty container first (an error
        // there is the command's), and showing `.Size` asks the daemon for sizes.
        let fmt = crate::format::parse(source, &default_table)
            .map_err(|e| CliError::Message(format!("failed to parse template: {e}")))?;
        let probe = ps_row(&Summary::default(), c.no_trunc, 0);
        let (r, used) = fmt.template().execute_tracking(&probe);
        r.map_err(|e| TemplateUse::Ps.error(e))?;
        size |= used.iter().any(|f| f == "Size");
        Some(fmt)
    };
    let mut q: Vec<(&str, String)> = vec![("all", (c.all as u8).to_string())];
    let limit = if c.latest { 1 } else { c.last };
    if limit > 0 {
        q.push(("limit", limit.to_string()));
    }
    if size {
        q.push(("size", "1".into()));
    }
    if !c.filter.is_empty() {
        q.push(("filters", crate::filters::json(&c.filter)?));
    }
    let list: Vec<Summary> = host.get(&format!("/containers/json{}", api::query(&q)))?;
    let Some(fmt) = fmt else {
        for ct in &list {
            writeln!(out, "{}", short_id(&ct.id, c.no_trunc))?;
        }
        return Ok(());
    };
    let now = berth_image::timeutil::now().0;
    let rows: Vec<_> = list.iter().map(|ct| ps_row(ct, c.no_trunc, now)).collect();
    let text = fmt
        .render(&ps_header(), &rows)
        .map_err(|e| TemplateUse::Ps.error(e))?;
    out.write_all(text.as_bytes())?;
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

pub fn logs(host: &Host, c: &LogsCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    let path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        enc(&c.container),
        c.follow as u8,
        c.timestamps as u8,
        enc(&c.tail)
    );
    let info = crate::ctl::inspect_container(host, &c.container)?;
    let mut r = api::stream(host, &path)?;
    if info.config.tty {
        std::io::copy(&mut r, out)?;
        return Ok(());
    }
    Ok(api::demux(&mut r, out, err)?)
}

/// The flags of `stop` and `restart`.
#[derive(Debug, Args)]
pub struct StopFlags {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
}

impl StopFlags {
    /// `POST /containers/NAME/ACTION` (`stop`, `restart`) with these flags, for each container.
    pub fn post_each(
        &self,
        host: &Host,
        action: &str,
        containers: &[String],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result {
        let mut q = Vec::new();
        if let Some(t) = self.time {
            q.push(("t", t.to_string()));
        }
        if let Some(s) = &self.signal {
            q.push(("signal", s.clone()));
        }
        let q = api::query(&q);
        each(containers, out, err, |name| {
            host.call(
                "POST",
                &format!("/containers/{}/{action}{q}", enc(name)),
                None,
            )
            .map(|_| name.to_string())
        })
    }
}

/// `stop` flags.
#[derive(Debug, Args)]
pub struct StopCmd {
    #[command(flatten)]
    flags: StopFlags,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(host: &Host, c: &StopCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    c.flags.post_each(host, "stop", &c.containers, out, err)
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
    /// Remove the specified link
    #[arg(short = 'l', long)]
    link: bool,
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(host: &Host, c: &RmCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    each(&c.containers, out, err, |name| {
        let path = format!(
            "/containers/{}?force={}&v={}&link={}",
            enc(name),
            c.force as u8,
            c.volumes as u8,
            c.link as u8
        );
        host.call("DELETE", &path, None).map(|_| name.to_string())
    })
}

/// `wait` flags.
#[derive(Debug, Args)]
pub struct WaitCmd {
    /// The containers
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn wait(host: &Host, c: &WaitCmd, out: &mut dyn Write, err: &mut dyn Write) -> Result {
    each(&c.containers, out, err, |name| {
        let w: WaitResponse = host.post(&format!("/containers/{}/wait", enc(name)), None)?;
        Ok(w.status_code.to_string())
    })
}

/// Runs `op` for every container named, printing its result line, or the daemon's error (as the
/// docker CLI does, it goes on with the others and exits 1 if any failed).
pub(crate) fn each(
    names: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
    op: impl Fn(&str) -> Result<String, ApiError>,
) -> Result {
    each_maybe(names, out, err, |name| op(name).map(Some))
}

/// [`each`] where a success may print nothing (`None`).
pub(crate) fn each_maybe(
    names: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
    op: impl Fn(&str) -> Result<Option<String>, ApiError>,
) -> Result {
    let mut failed = false;
    for name in names {
        match op(name) {
            Ok(line) => {
                if let Some(line) = line {
                    let _ = writeln!(out, "{line}");
                }
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(err, "{}", CliError::from(e));
            }
        }
    }
    if failed {
        return Err(CliError::Exit(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_to_the_create_request() {
        let c = crate::parse_args::<RunCmd>(&[
            "--rm",
            "--name",
            "x",
            "-e",
            "A=1",
            "-l",
            "k=v",
            "-l",
            "bare",
            "-w",
            "/w",
            "-u",
            "nobody",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            "-v",
            "/anon",
            "-p",
            "8080:80",
            "-m",
            "64m",
            "busybox",
            "-c",
            "echo hi",
        ]);
        let r = create_request(&c).unwrap();
        assert_eq!(r.config.image, "busybox");
        assert_eq!(r.config.cmd.as_deref().unwrap(), ["-c", "echo hi"]);
        assert_eq!(r.config.entrypoint.as_deref().unwrap(), ["/bin/sh"]);
        assert_eq!(r.config.env.as_deref().unwrap(), ["A=1"]);
        let labels = [("k", "v"), ("bare", "")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(r.config.labels, Some(labels.into()));
        assert_eq!(
            (r.config.working_dir.as_str(), r.config.user.as_str()),
            ("/w", "nobody")
        );
        assert!(r.config.attach_stdout && r.config.attach_stderr);
        let hc = r.host_config.as_ref().unwrap();
        assert!(hc.auto_remove);
        assert_eq!(hc.network_mode, "none");
        assert_eq!(hc.memory, 64 << 20);
        assert!(hc.port_bindings.as_ref().unwrap().contains_key("80/tcp"));
        assert!(r.config.volumes.as_ref().unwrap().contains_key("/anon"));
        assert_eq!(c.pull, PullPolicy::Missing);
        assert!(c.sig_proxy);
        // No command: the image's (null, not []).
        let r = create_request(&crate::parse_args::<RunCmd>(&["-d", "busybox"])).unwrap();
        assert_eq!(r.config.cmd, None);
        assert!(!r.config.attach_stdout);
    }

    #[test]
    fn pull_and_sig_proxy_flags() {
        assert_eq!(
            crate::parse_args::<RunCmd>(&["--pull", "never", "b"]).pull,
            PullPolicy::Never
        );
        assert_eq!(
            crate::parse_args::<RunCmd>(&["--pull=always", "b"]).pull,
            PullPolicy::Always
        );
        assert!(crate::try_parse_args::<RunCmd>(&["--pull", "sometimes", "b"]).is_err());
        assert!(!crate::parse_args::<RunCmd>(&["--sig-proxy=false", "b"]).sig_proxy);
        assert_eq!(
            named_image("busybox").unwrap().familiar_string(),
            "busybox:latest"
        );
        assert_eq!(
            named_image("example.com/a/b:1").unwrap().familiar_string(),
            "example.com/a/b:1"
        );
        assert!(named_image("Not Valid").is_none());
    }
}
