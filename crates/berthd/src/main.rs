//! `berthd`: the daemon binary.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::ServiceExt;
use clap::Parser;
use tower::Layer;

use berthd::api::{self, AppState};
use berthd::engine::{Engine, EngineConfig};

#[derive(Parser, Debug)]
#[command(
    name = "berthd",
    version,
    about = "Berth daemon: the Docker Engine API on a unix socket"
)]
struct Args {
    /// Daemon socket to listen on (`unix:///path`).
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/berth/berth.sock",
        overrides_with = "host"
    )]
    host: String,
    /// Root of persistent state.
    #[arg(long, default_value = "/var/lib/berth")]
    data_root: PathBuf,
    /// Root of run-time state.
    #[arg(long, default_value = "/run/berth")]
    exec_root: PathBuf,
    /// Pid file (default EXEC_ROOT/berthd.pid).
    #[arg(short = 'p', long)]
    pidfile: Option<PathBuf>,
    /// Parent cgroup of containers.
    #[arg(long, default_value = "/berth")]
    cgroup_parent: String,
    /// A registry reachable over plain http (besides loopback ones); repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// The shim binary (default: next to berthd, else `berth-shim` on PATH).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// The OCI runtime binary (default: next to berthd, else `berth-runtime` on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Log level (error, warn, info, debug).
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
    /// Debug logging.
    #[arg(short = 'D', long)]
    debug: bool,
}

fn find_bin(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

/// Takes the data root's lock (held for the daemon's life).
fn lock_data_root(root: &Path) -> anyhow::Result<std::fs::File> {
    let p = root.join("berthd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another berthd is already running on data root {} (lock {} is held)",
            root.display(),
            p.display()
        );
    }
    Ok(f)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == berthd::netns::HELPER_ARG {
        if let Err(e) = berthd::netns::helper_main(&argv[2]) {
            eprintln!("bringing up lo: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("berthd: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let level = if args.debug {
        "debug"
    } else {
        args.log_level.as_str()
    };
    tracing_subscriber::fmt()
        .with_max_level(
            level
                .parse::<tracing::Level>()
                .unwrap_or(tracing::Level::INFO),
        )
        .with_writer(std::io::stderr)
        .init();
    let Some(sock) = args.host.strip_prefix("unix://") else {
        bail!("only unix:// hosts are supported for now: {}", args.host);
    };
    let sock = PathBuf::from(sock);
    std::fs::create_dir_all(&args.data_root)?;
    std::fs::create_dir_all(&args.exec_root)?;
    let _lock = lock_data_root(&args.data_root)?;
    let pidfile = args
        .pidfile
        .clone()
        .unwrap_or_else(|| args.exec_root.join("berthd.pid"));
    berth_image::fsutil::atomic_write(&pidfile, format!("{}", std::process::id()).as_bytes())
        .with_context(|| format!("writing {}", pidfile.display()))?;

    let cfg = EngineConfig {
        data_root: args.data_root.clone(),
        exec_root: args.exec_root.clone(),
        shim: args.shim.clone().unwrap_or_else(|| find_bin("berth-shim")),
        runtime: args
            .runtime
            .clone()
            .unwrap_or_else(|| find_bin("berth-runtime")),
        cgroup_parent: args.cgroup_parent.clone(),
        insecure_registries: args.insecure_registries.clone(),
    };
    let engine = Engine::open(cfg)?;
    let info = berthd::sysinfo::Static::read(&args.data_root);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        engine.reattach();
        if let Some(d) = sock.parent() {
            std::fs::create_dir_all(d)?;
        }
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock)
            .with_context(|| format!("binding {}", sock.display()))?;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))?;
        tracing::info!("API listening on {}", sock.display());
        let state = Arc::new(AppState { engine, info });
        let app = api::router(state);
        let app = tower::util::MapRequestLayer::new(api::strip_version).layer(app);
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down (containers keep running)");
        };
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(shutdown)
            .await?;
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(&pidfile);
        anyhow::Ok(())
    })
}
