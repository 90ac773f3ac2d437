//! `berth-runtime`: a runc-compatible command line over the `berth_runtime` library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_runtime::container::{wait_foreground, Foreground};
use berth_runtime::spec::Process;
use berth_runtime::{CreateOptions, ExecOptions, ProcessIo, Runtime};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "berth-runtime",
    version,
    about = "Berth's OCI runtime (runc-compatible command line)"
)]
struct Cli {
    /// Directory for container state (runc's --root; default /run/berth-runtime, rootless
    /// $XDG_RUNTIME_DIR/berth-runtime).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Log file (default: stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility; there is no systemd here.
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Rootless operation: true, false or auto (default: when not root or inside a user
    /// namespace). With `spec`: write a spec an unprivileged user can run.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The options `create` and `run` share.
#[derive(clap::Args, Debug)]
struct CreateArgs {
    id: String,
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[command(flatten)]
    io: ProcessIo,
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for compatibility (no session keyring is created).
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            io: self.io.clone(),
            no_pivot: self.no_pivot,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a container (it waits for `start`).
    Create {
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Start a created container.
    Start { id: String },
    /// Create and start a container.
    Run {
        #[command(flatten)]
        args: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the OCI state of a container.
    State { id: String },
    /// Send a signal to the container's init (or to all its processes).
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container.
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Run a process in a running container.
    Exec {
        id: String,
        /// The command and its arguments (unless --process).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(short, long)]
        cap: Vec<String>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[command(flatten)]
        io: ProcessIo,
        #[arg(long = "apparmor")]
        apparmor: Option<String>,
        #[arg(long = "process-label")]
        process_label: Option<String>,
    },
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// List the processes of a container.
    Ps {
        id: String,
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List containers.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Change the resources of a running container.
    Update {
        id: String,
        /// A JSON file of linux.resources ("-" for stdin).
        #[arg(short, long)]
        resources: Option<PathBuf>,
        #[arg(long)]
        memory: Option<String>,
        #[arg(long = "memory-reservation")]
        memory_reservation: Option<String>,
        #[arg(long = "memory-swap")]
        memory_swap: Option<String>,
        #[arg(long = "kernel-memory")]
        kernel_memory: Option<String>,
        #[arg(long = "cpu-shares")]
        cpu_shares: Option<u64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<u64>,
        #[arg(long = "cpu-quota")]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-rt-period")]
        cpu_rt_period: Option<u64>,
        #[arg(long = "cpu-rt-runtime")]
        cpu_rt_runtime: Option<i64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        #[arg(long = "pids-limit")]
        pids_limit: Option<i64>,
        #[arg(long = "blkio-weight")]
        blkio_weight: Option<u16>,
    },
    /// Resource usage of a container (`--stats` prints once).
    Events {
        id: String,
        #[arg(long)]
        stats: bool,
        #[arg(long, default_value = "5s")]
        interval: String,
    },
    /// Print what this runtime supports (OCI features JSON).
    Features,
    /// Write a default config.json into the bundle.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("BERTH_LOG").ok().as_deref() {
        Some("trace") => LevelFilter::TRACE,
        Some("debug") => LevelFilter::DEBUG,
        Some("info") => LevelFilter::INFO,
        Some("error") => LevelFilter::ERROR,
        _ if cli.debug => LevelFilter::DEBUG,
        _ => LevelFilter::WARN,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    match (file, cli.log_format.as_str()) {
        (Some(f), "json") => {
            let _ = builder
                .json()
                .with_writer(std::sync::Mutex::new(f))
                .try_init();
        }
        (Some(f), _) => {
            let _ = builder.with_writer(std::sync::Mutex::new(f)).try_init();
        }
        (None, _) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
}

/// Writes the error where runc does: stderr, and the log file in runc's format.
fn log_error(cli: &Cli, msg: &str) {
    eprintln!("berth-runtime: {msg}");
    if let Some(p) = &cli.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
        {
            let time = berth_runtime::util::now_rfc3339();
            let line = if cli.log_format == "json" {
                serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
            } else {
                format!("time=\"{time}\" level=error msg={msg:?}")
            };
            let _ = writeln!(f, "{line}");
        }
    }
}

fn main() -> ExitCode {
    berth_runtime::protect::init_after_reexec();
    let cli = Cli::parse();
    let needs_protection = matches!(
        cli.cmd,
        Cmd::Create { .. } | Cmd::Run { .. } | Cmd::Exec { .. }
    );
    if needs_protection && !berth_runtime::protect::is_protected() {
        let e = berth_runtime::protect::reexec_protected();
        log_error(
            &cli,
            &format!("cannot re-execute from a protected copy of the runtime: {e}"),
        );
        return ExitCode::from(1);
    }
    init_logging(&cli);
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log_error(&cli, &error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, skipping a cause whose text the previous message already includes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
}

pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if n > 0 && n <= 64 {
            return Ok(n);
        }
        bail!("invalid signal number {n}");
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    if let Some(rest) = name.strip_prefix("SIGRTMIN+") {
        let n: i32 = rest.parse().context("invalid real-time signal")?;
        return Ok(libc::SIGRTMIN() + n);
    }
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

/// A memory size as runc's `update` takes it: `-1` (unlimited) or go-units `RAMInBytes`.
fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "-1" {
        return Ok(-1);
    }
    Ok(berth_util::units::parse_ram_bytes(s)?)
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    if let Some(r) = cli.rootless.as_deref() {
        if !matches!(r, "true" | "false" | "auto") {
            bail!("invalid --rootless value {r:?} (true, false or auto)");
        }
    }
    let root = match &cli.root {
        Some(r) => r.clone(),
        None => match berth_runtime::rootless::default_state_root() {
            Ok(r) => r,
            // These need no state directory.
            Err(_) if matches!(cli.cmd, Cmd::Spec { .. } | Cmd::Features) => PathBuf::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let rt = Runtime {
        rootless: berth_runtime::rootless::detect(cli.rootless.as_deref()),
        ..Runtime::new(root)
    };
    match &cli.cmd {
        Cmd::Create { args } => {
            rt.create(&args.options(), false)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            rt.start(id)?;
            Ok(0)
        }
        Cmd::Run { args, detach, keep } => {
            let id = &args.id;
            let opts = args.options();
            let fg = rt.run(&opts, *detach)?;
            if *detach {
                return Ok(0);
            }
            let code = wait_foreground(&fg);
            if !keep {
                rt.delete(id, true)?;
            }
            Ok(code as u8)
        }
        Cmd::State { id } => {
            let st = rt.state(id)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Cmd::Kill { id, signal, all } => {
            rt.kill(id, parse_signal(signal)?, *all)?;
            Ok(0)
        }
        Cmd::Delete { id, force } => match rt.delete(id, *force) {
            Err(berth_runtime::RuntimeError::State(
                berth_runtime::state::StateError::NotFound(_),
            )) if *force => Ok(0),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(0),
        },
        Cmd::Exec {
            id,
            args,
            process,
            tty,
            detach,
            env,
            cwd,
            user,
            additional_gids,
            cap,
            no_new_privs,
            io,
            ..
        } => {
            let proc_ = match process {
                Some(p) => {
                    let data = std::fs::read(p)
                        .with_context(|| format!("read process file {}", p.display()))?;
                    let de = &mut serde_json::Deserializer::from_slice(&data);
                    serde_path_to_error::deserialize::<_, Process>(de).map_err(|e| {
                        anyhow::anyhow!("{}: {}: {}", p.display(), e.path(), e.inner())
                    })?
                }
                None => {
                    if args.is_empty() {
                        bail!("exec: give a command or --process");
                    }
                    let st = berth_runtime::state::ContainerState::load(&rt.root, id)?;
                    let mut p = st.config.process.clone().unwrap_or_default();
                    p.args = args.clone();
                    p.terminal = *tty;
                    p.console_size = None;
                    p.env.extend(env.iter().cloned());
                    if let Some(c) = cwd {
                        p.cwd = c.clone();
                    }
                    if let Some(u) = user {
                        let (uid, gid) = u.split_once(':').unwrap_or((u.as_str(), "0"));
                        p.user.uid = uid
                            .parse()
                            .with_context(|| format!("invalid uid in {u:?}"))?;
                        p.user.gid = gid
                            .parse()
                            .with_context(|| format!("invalid gid in {u:?}"))?;
                    }
                    if !additional_gids.is_empty() {
                        p.user.additional_gids = additional_gids.clone();
                    }
                    if !cap.is_empty() {
                        let c = p.capabilities.get_or_insert_with(Default::default);
                        for set in [
                            &mut c.bounding,
                            &mut c.effective,
                            &mut c.permitted,
                            &mut c.ambient,
                            &mut c.inheritable,
                        ] {
                            let v = set.get_or_insert_with(Vec::new);
                            v.extend(cap.iter().cloned());
                        }
                    }
                    if *no_new_privs {
                        p.no_new_privileges = true;
                    }
                    p
                }
            };
            let opts = ExecOptions {
                id: id.clone(),
                process: proc_,
                io: io.clone(),
                detach: *detach,
            };
            let fg: Foreground = rt.exec(&opts)?;
            if *detach {
                return Ok(0);
            }
            Ok(wait_foreground(&fg) as u8)
        }
        Cmd::Pause { id } => {
            rt.pause(id)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            rt.resume(id)?;
            Ok(0)
        }
        Cmd::Ps {
            id,
            format,
            ps_args,
        } => {
            let pids = rt.pids(id)?;
            if format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
                return Ok(0);
            }
            if format != "table" {
                bail!("invalid format {format:?} (table or json)");
            }
            let args = if ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                ps_args.clone()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !out.status.success() {
                bail!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or("");
            let col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .context("ps output has no PID column")?;
            println!("{header}");
            for l in lines {
                if let Some(pid) = l
                    .split_whitespace()
                    .nth(col)
                    .and_then(|p| p.parse::<i32>().ok())
                {
                    if pids.contains(&pid) {
                        println!("{l}");
                    }
                }
            }
            Ok(0)
        }
        Cmd::List { format, quiet } => {
            let list = rt.list();
            if *quiet {
                for s in &list {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                let mut rows = vec![[
                    "ID".to_string(),
                    "PID".into(),
                    "STATUS".into(),
                    "BUNDLE".into(),
                    "CREATED".into(),
                    "OWNER".into(),
                ]];
                for s in &list {
                    rows.push([
                        s.id.clone(),
                        s.pid.to_string(),
                        s.status.to_string(),
                        s.bundle.display().to_string(),
                        s.created.clone(),
                        s.owner.clone(),
                    ]);
                }
                let widths: Vec<usize> = (0..6)
                    .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                    .collect();
                for r in rows {
                    let line: Vec<String> = r
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            if i < 5 {
                                format!("{c:<w$}", w = widths[i])
                            } else {
                                c.clone()
                            }
                        })
                        .collect();
                    println!("{}", line.join("   ").trim_end());
                }
            }
            Ok(0)
        }
        Cmd::Update {
            id,
            resources,
            memory,
            memory_reservation,
            memory_swap,
            kernel_memory,
            cpu_shares,
            cpu_period,
            cpu_quota,
            cpu_rt_period,
            cpu_rt_runtime,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            blkio_weight,
        } => {
            let st = berth_runtime::state::ContainerState::load(&rt.root, id)?;
            let mut v = match resources {
                Some(p) => {
                    let data = if p.as_os_str() == "-" {
                        let mut s = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
                        s
                    } else {
                        std::fs::read(p).with_context(|| format!("read {}", p.display()))?
                    };
                    serde_json::from_slice::<serde_json::Value>(&data)
                        .context("resources file is not JSON")?
                }
                None => st
                    .config
                    .linux()
                    .resources
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()?
                    .unwrap_or_else(|| serde_json::json!({})),
            };
            let obj = v
                .as_object_mut()
                .context("resources must be a JSON object")?;
            let mut set = |section: &str, key: &str, val: serde_json::Value| {
                let s = obj.entry(section).or_insert_with(|| serde_json::json!({}));
                if let Some(o) = s.as_object_mut() {
                    o.insert(key.to_string(), val);
                }
            };
            if let Some(m) = memory {
                set("memory", "limit", parse_bytes(m)?.into());
            }
            if let Some(m) = memory_reservation {
                set("memory", "reservation", parse_bytes(m)?.into());
            }
            if let Some(m) = memory_swap {
                set("memory", "swap", parse_bytes(m)?.into());
            }
            if kernel_memory.is_some() {
                tracing::warn!("--kernel-memory is ignored (deprecated by the kernel)");
            }
            if let Some(x) = cpu_shares {
                set("cpu", "shares", (*x).into());
            }
            if let Some(x) = cpu_period {
                set("cpu", "period", (*x).into());
            }
            if let Some(x) = cpu_quota {
                set("cpu", "quota", (*x).into());
            }
            if let Some(x) = cpu_rt_period {
                set("cpu", "realtimePeriod", (*x).into());
            }
            if let Some(x) = cpu_rt_runtime {
                set("cpu", "realtimeRuntime", (*x).into());
            }
            if let Some(x) = cpuset_cpus {
                set("cpu", "cpus", x.clone().into());
            }
            if let Some(x) = cpuset_mems {
                set("cpu", "mems", x.clone().into());
            }
            if let Some(x) = pids_limit {
                set("pids", "limit", (*x).into());
            }
            if let Some(x) = blkio_weight {
                set("blockIO", "weight", (*x).into());
            }
            let res: berth_runtime::spec::LinuxResources =
                serde_json::from_value(v).context("invalid resources")?;
            rt.update(id, &res)?;
            Ok(0)
        }
        Cmd::Events {
            id,
            stats,
            interval,
        } => {
            let every = parse_duration(interval)?;
            loop {
                let s = rt.stats(id)?;
                println!(
                    "{}",
                    serde_json::json!({"type": "stats", "id": id, "data": s})
                );
                if *stats {
                    return Ok(0);
                }
                std::thread::sleep(every);
                if rt.state(id)?.status == berth_runtime::state::Status::Stopped {
                    return Ok(0);
                }
            }
        }
        Cmd::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists: remove it first", path.display());
            }
            let mut v = berth_runtime::defaults::default_spec_json();
            if cli.rootless.as_deref() == Some("true") {
                berth_runtime::defaults::to_rootless(
                    &mut v,
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                );
            }
            v["process"]["terminal"] = serde_json::Value::Bool(true);
            std::fs::write(&path, serde_json::to_string_pretty(&v)?)?;
            Ok(0)
        }
    }
}

/// `events --interval`: Go's `time.ParseDuration` (as runc), at least a millisecond.
fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let nanos = berth_util::units::parse_duration(s)?;
    Ok(std::time::Duration::from_nanos(nanos.max(1_000_000) as u64))
}

fn features() -> serde_json::Value {
    let caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": berth_runtime::state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "rdev", "rdiratime", "relatime", "remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec", "rnosuid", "ro", "rprivate", "rro", "rrw", "rshared", "rslave", "rstrictatime", "rsuid", "runbindable", "rw", "shared", "silent", "slave", "strictatime", "suid", "sync", "tmpcopyup", "unbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "berth-runtime"}
    })
}
