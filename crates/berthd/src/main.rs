//! `berthd`: the daemon binary.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::ServiceExt;
use clap::Parser;
use tower::Layer;

use berthd::engine::{Engine, EngineConfig};
use berthd::http::{self, AppState};
use berthd::listen;

#[derive(Parser, Debug)]
#[command(
    name = "berthd",
    version,
    about = "Berth daemon: the Docker Engine API on a unix socket"
)]
struct Args {
    /// Address to listen on (`unix:///path` or `tcp://host:port`); repeatable.
    #[arg(short = 'H', long = "host")]
    host: Vec<String>,
    /// Use TLS on TCP listeners (implied by --tlsverify); `--tls=false` allows plain TCP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    tls: Option<bool>,
    /// Use TLS and require client certificates signed by --tlscacert.
    #[arg(long)]
    tlsverify: bool,
    /// CA certificate(s) trusted for client certificates.
    #[arg(long)]
    tlscacert: Option<PathBuf>,
    /// The server's TLS certificate (chain).
    #[arg(long)]
    tlscert: Option<PathBuf>,
    /// The server's TLS key.
    #[arg(long)]
    tlskey: Option<PathBuf>,
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
    /// The init of `--init` containers, a static binary (default: `berth-init` next to
    /// berthd or on PATH; dockerd's `--init-path`).
    #[arg(long = "init-path")]
    init_path: Option<PathBuf>,
    /// The OCI runtime binary (default: next to berthd, else `berth-runtime` on PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Log level (error, warn, info, debug).
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
    /// Debug logging.
    #[arg(short = 'D', long)]
    debug: bool,
    /// The default bridge network's interface.
    #[arg(short = 'b', long, env = "BERTHD_BRIDGE", default_value = "berth0")]
    bridge: String,
    /// The default bridge's address and prefix (e.g. 172.17.0.1/16); chosen when absent.
    #[arg(long, env = "BERTHD_BIP")]
    bip: Option<berth_network::Ipv4Net>,
    /// Where default-bridge containers get their addresses (inside --bip's subnet).
    #[arg(long, env = "BERTHD_FIXED_CIDR")]
    fixed_cidr: Option<berth_network::Ipv4Net>,
    /// Firewall backend: auto, nftables, iptables, none.
    #[arg(long, env = "BERTHD_FIREWALL", default_value = "auto")]
    firewall_backend: String,
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
    let use_tls = args.tlsverify || args.tls.unwrap_or(false);
    let hosts = if args.host.is_empty() {
        vec!["unix:///run/berth/berth.sock".to_string()]
    } else {
        args.host.clone()
    };
    let mut unix_socks = Vec::new();
    let mut tcp_addrs = Vec::new();
    for h in &hosts {
        match listen::parse_host(h, use_tls)? {
            listen::Endpoint::Unix(p) => unix_socks.push(p),
            listen::Endpoint::Tcp(a) => tcp_addrs.push(a),
        }
    }
    let tls_config = if use_tls {
        Some(listen::server_config(&listen::TlsFiles {
            cert: args.tlscert.clone(),
            key: args.tlskey.clone(),
            ca: args.tlscacert.clone(),
            verify: args.tlsverify,
        })?)
    } else {
        if !tcp_addrs.is_empty() && args.tls != Some(false) {
            bail!("refusing to listen on TCP without TLS (anyone who connects would be root on this host): give --tlsverify with --tlscacert/--tlscert/--tlskey, or --tls=false to do it anyway");
        }
        None
    };
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
        network: berthd::network::NetOptions {
            bridge: args.bridge.clone(),
            bip: args.bip,
            fixed_cidr: args.fixed_cidr,
            firewall: args.firewall_backend.clone(),
        },
        insecure_registries: args.insecure_registries.clone(),
        init: args
            .init_path
            .clone()
            .unwrap_or_else(|| find_bin("berth-init")),
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
        let state = Arc::new(AppState {
            engine: engine.clone(),
            info,
        });
        let app = http::router(state);
        let app = tower::util::MapRequestLayer::new(http::strip_version).layer(app);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for sock in &unix_socks {
            if let Some(d) = sock.parent() {
                std::fs::create_dir_all(d)?;
            }
            let _ = std::fs::remove_file(sock);
            let listener = tokio::net::UnixListener::bind(sock)
                .with_context(|| format!("binding {}", sock.display()))?;
            std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))?;
            tracing::info!("API listening on {}", sock.display());
            let mut rx = stop_rx.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(async move {
                        let _ = rx.changed().await;
                    })
                    .await;
            }));
        }
        for addr in &tcp_addrs {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(
                "API listening on tcp://{addr}{}",
                if tls_config.is_some() { " (TLS)" } else { " (no TLS!)" }
            );
            tasks.push(tokio::spawn(listen::serve_tcp(
                listener,
                tls_config.clone(),
                app.clone(),
                stop_rx.clone(),
            )));
        }
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down (containers keep running)");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        // Storage cleanups of removed containers finish before the daemon exits.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), engine.settle()).await;
        for sock in &unix_socks {
            let _ = std::fs::remove_file(sock);
        }
        let _ = std::fs::remove_file(&pidfile);
        anyhow::Ok(())
    })
}
