//! `berthd`: the daemon binary.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::ServiceExt;
use clap::Parser;
use tower::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use berthd::config::{self, DaemonConfig, Flags};
use berthd::engine::{Engine, EngineConfig};
use berthd::http::{self, AppState};
use berthd::listen;
use berthd::sockets::{self, Passed};
use berthd::systemd::{self, Notify};

fn find_bin(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // Next to berthd, or in the package's helper directory (/usr/libexec/berth).
            for p in [dir.join(name), dir.join("../libexec/berth").join(name)] {
                if p.exists() {
                    return p;
                }
            }
        }
    }
    berth_util::fs::find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

/// How long a starting daemon waits for the data root's lock: a predecessor killed just
/// before (`kill -9`, a supervisor's immediate restart) can hold it a moment longer through
/// a child it forked that has not yet executed (the lock's descriptor is close-on-exec).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Takes the data root's lock (held for the daemon's life), waiting up to [`LOCK_WAIT`].
fn lock_data_root(root: &Path) -> anyhow::Result<std::fs::File> {
    let p = root.join("berthd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    while rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        if std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        bail!(
            "another berthd is already running on data root {} (lock {} is held)",
            root.display(),
            p.display()
        );
    }
    Ok(f)
}

fn main() {
    berthd::memory::limit_arenas();
    // A published port's proxy process (see `berth_network::proxy`), started by a daemon.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(berth_network::proxy::PROCESS_ARG) {
        if let Err(e) = berth_network::proxy::serve_process(&args[2..]) {
            eprintln!("berthd userland-proxy: {e}");
            std::process::exit(1);
        }
        return;
    }
    // An ordinary user's daemon lives in a user namespace of its own (see `rootless`): made
    // before any thread starts; this process stays behind as its supervisor.
    if berthd::rootless::wanted() && !flags_only_validate(&args) {
        if let Err(e) = berthd::rootless::enter() {
            eprintln!("berthd: {e}");
            std::process::exit(1);
        }
    }
    // systemd's variables are read and removed before any thread starts.
    let env = match systemd::take_environment() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("berthd: {e}");
            std::process::exit(1);
        }
    };
    let flags = Flags::parse();
    let cfg = config::load(&flags).and_then(|c| plan(&c).map(|p| (c, p)));
    let (cfg, plan) = match cfg {
        Ok(x) => x,
        Err(e) => {
            eprintln!("berthd: {e}");
            std::process::exit(1);
        }
    };
    if flags.validate {
        // dockerd's answer.
        eprintln!("configuration OK");
        return;
    }
    if let Err(e) = run(flags, cfg, plan, env) {
        eprintln!("berthd: {e:#}");
        std::process::exit(1);
    }
}

/// `--validate`, `--help` or `--version`: nothing runs, no namespace is needed.
fn flags_only_validate(args: &[String]) -> bool {
    args.iter().skip(1).any(|a| {
        matches!(
            a.as_str(),
            "--validate" | "--help" | "-h" | "--version" | "-V"
        )
    })
}

/// dockerd's warning, at every start, for an API served over TCP without TLS (`--tls=false`).
fn warn_plain_tcp(addr: &str) {
    tracing::warn!(
        "API is accessible on http://{addr} without encryption: anyone who can reach tcp://{addr} \
         has root access on this host. Give --tlsverify with --tlscacert/--tlscert/--tlskey."
    );
    tracing::warn!(
        "Binding to an IP address, even on localhost, can also give access to scripts run in a \
         browser (tcp://{addr})."
    );
}

/// Where the API is served, checked before anything starts.
struct Plan {
    unix: Vec<PathBuf>,
    tcp: Vec<std::net::SocketAddr>,
    /// `fd://…` selections.
    fds: Vec<String>,
}

fn plan(cfg: &DaemonConfig) -> Result<Plan, config::ConfigError> {
    let bad = |message: String| config::ConfigError::from(config::invalid("hosts", message));
    let use_tls = cfg.tlsverify || cfg.tls.unwrap_or(false);
    let mut p = Plan {
        unix: Vec::new(),
        tcp: Vec::new(),
        fds: Vec::new(),
    };
    for h in &cfg.hosts {
        if let Some(spec) = h.strip_prefix("fd://") {
            p.fds.push(spec.to_string());
            continue;
        }
        match listen::parse_host(h, use_tls).map_err(|e| bad(e.to_string()))? {
            listen::Endpoint::Unix(path) => p.unix.push(path),
            listen::Endpoint::Tcp(a) => p.tcp.push(a),
        }
    }
    if !use_tls && !p.tcp.is_empty() && cfg.tls != Some(false) {
        return Err(bad("refusing to listen on TCP without TLS (anyone who connects would be root on this host): give --tlsverify with --tlscacert/--tlscert/--tlskey, or --tls=false to do it anyway".into()));
    }
    if cfg.docker_compat {
        p.unix.push(PathBuf::from(config::DOCKER_SOCKET));
    }
    Ok(p)
}

type LevelHandle = tracing_subscriber::reload::Handle<
    tracing::level_filters::LevelFilter,
    tracing_subscriber::Registry,
>;

fn init_logging(cfg: &DaemonConfig) -> LevelHandle {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        tracing::level_filters::LevelFilter::from_level(cfg.level()),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    handle
}

/// Reads the configuration again (SIGHUP): applies what may change while running and logs
/// every change; a file that does not load leaves everything as it was.
fn reload(flags: &Flags, current: &mut DaemonConfig, level: &LevelHandle, engine: &Engine) {
    let (path, _) = config::config_path(flags);
    let new = match config::load(flags) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("reload failed, the configuration is unchanged: {e}");
            return;
        }
    };
    let changes = current.changes(&new);
    if changes.is_empty() {
        tracing::info!("reloaded {}: nothing changed", path.display());
        return;
    }
    let (apply, later): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.reloadable);
    for c in &later {
        tracing::warn!("{c}: needs a restart of berthd (kept the running value)");
    }
    if !apply.is_empty() {
        *current = current.with_reloadable_from(&new);
        engine.reconfigure(&current.live());
        let _ =
            level.modify(|f| *f = tracing::level_filters::LevelFilter::from_level(current.level()));
        let list: Vec<String> = apply.iter().map(|c| c.to_string()).collect();
        tracing::info!("reloaded {}: {}", path.display(), list.join("; "));
    }
}

fn run(
    flags: Flags,
    cfg: DaemonConfig,
    plan: Plan,
    env: systemd::Environment,
) -> anyhow::Result<()> {
    let level = init_logging(&cfg);
    let notify = Notify(env.notify);
    let mut passed_fds = env.listen_fds;
    if !cfg.live_restore {
        tracing::warn!(
            "live-restore is always on in Berth: containers keep running when the daemon stops"
        );
    }
    let use_tls = cfg.tlsverify || cfg.tls.unwrap_or(false);
    let tls_config = if use_tls {
        Some(listen::server_config(&listen::TlsFiles {
            cert: cfg.tlscert.clone(),
            key: cfg.tlskey.clone(),
            ca: cfg.tlscacert.clone(),
            verify: cfg.tlsverify,
        })?)
    } else {
        None
    };
    std::fs::create_dir_all(&cfg.data_root)?;
    std::fs::create_dir_all(&cfg.exec_root)?;
    let _lock = lock_data_root(&cfg.data_root)?;
    berth_image::fsutil::atomic_write(&cfg.pidfile, format!("{}", std::process::id()).as_bytes())
        .with_context(|| format!("writing {}", cfg.pidfile.display()))?;

    // Sockets first: a refusal (Docker's socket taken) stops the start before anything runs.
    let gid = sockets::socket_group(&cfg.group, flags.group.is_some())?;
    let mut unix_listeners = Vec::new();
    for path in &plan.unix {
        let hint = if path == Path::new(config::DOCKER_SOCKET) {
            "; stop Docker (systemctl stop docker.socket docker.service) or turn docker-compat off"
        } else {
            ""
        };
        unix_listeners.push((sockets::bind_unix(path, gid, hint)?, Some(path.clone())));
    }
    let mut tcp_listeners = Vec::new();
    for spec in &plan.fds {
        for p in sockets::take_passed(spec, &mut passed_fds)? {
            tracing::info!("API listening on {}", p.describe());
            match p {
                Passed::Unix(l) => unix_listeners.push((l, None)),
                Passed::Tcp(l) => {
                    if tls_config.is_none() {
                        if cfg.tls != Some(false) {
                            bail!("refusing to serve a TCP socket passed by systemd without TLS: give --tlsverify with --tlscacert/--tlscert/--tlskey, or --tls=false");
                        }
                        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                        warn_plain_tcp(&addr);
                    }
                    tcp_listeners.push(l)
                }
            }
        }
    }
    for addr in &plan.tcp {
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        l.set_nonblocking(true)?;
        if tls_config.is_some() {
            tracing::info!("API listening on tcp://{addr} (TLS)");
        } else {
            tracing::info!("API listening on tcp://{addr} (no TLS!)");
            warn_plain_tcp(&addr.to_string());
        }
        tcp_listeners.push(l);
    }

    let engine_cfg = EngineConfig {
        data_root: cfg.data_root.clone(),
        exec_root: cfg.exec_root.clone(),
        shim: cfg.shim.clone().unwrap_or_else(|| find_bin("berth-shim")),
        runtime: cfg
            .runtime
            .clone()
            .unwrap_or_else(|| find_bin("berth-runtime")),
        cgroup_parent: cfg.cgroup_parent.clone(),
        network: berthd::network::NetOptions {
            bridge: cfg.bridge.clone(),
            bip: cfg.bip,
            fixed_cidr: cfg.fixed_cidr,
            firewall: cfg.firewall_backend.clone(),
            address_pools: cfg.subnet_candidates().unwrap_or_default(),
        },
        insecure_registries: cfg.insecure_registries.clone(),
        init: cfg
            .init_path
            .clone()
            .unwrap_or_else(|| find_bin("berth-init")),
    };
    // The CRI's socket, bound with the others (a refusal stops the start).
    let cri_listener = if cfg.cri {
        // root only: whoever talks to it runs pods as root.
        let stream = std::net::SocketAddr::new(cfg.cri_stream_address, cfg.cri_stream_port);
        let tcp = std::net::TcpListener::bind(stream)
            .with_context(|| format!("binding the CRI streaming server on {stream}"))?;
        tcp.set_nonblocking(true)?;
        Some((sockets::bind_unix(&cfg.cri_socket, None, "")?, tcp))
    } else {
        None
    };
    let engine = Engine::open(engine_cfg)?;
    engine.reconfigure(&cfg.live());
    let info = berthd::sysinfo::Static::read(&cfg.data_root);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()?;
    let current_cri_socket = cfg.cri_socket.clone();
    let cri_cni = (cfg.cni_conf_dir.clone(), cfg.cni_bin_dir.clone());
    let cri_stream_idle = cfg.cri_stream_idle_timeout;
    rt.block_on(async move {
        engine.reattach().await;
        let state = Arc::new(AppState {
            engine: engine.clone(),
            info,
        });
        let app = http::router(state);
        let app = tower::util::MapRequestLayer::new(http::strip_version).layer(app);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut created = Vec::new();
        for (l, path) in unix_listeners {
            let listener = tokio::net::UnixListener::from_std(l)?;
            if let Some(p) = path {
                tracing::info!("API listening on {}", p.display());
                created.push(p);
            }
            let mut rx = stop_rx.clone();
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<berthd::http::ClientSocket>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
            }));
        }
        for l in tcp_listeners {
            let listener = tokio::net::TcpListener::from_std(l)?;
            tasks.push(tokio::spawn(listen::serve_tcp(
                listener,
                tls_config.clone(),
                app.clone(),
                stop_rx.clone(),
            )));
        }
        if let Some((l, stream)) = cri_listener {
            let listener = tokio::net::UnixListener::from_std(l)?;
            tracing::info!("CRI listening on {}", current_cri_socket.display());
            created.push(current_cri_socket.clone());
            let cri = berthd::cri::Cri::new(
                engine.clone(),
                berth_cri::cni::CniConfig {
                    conf_dir: cri_cni.0.clone(),
                    bin_dir: cri_cni.1.clone(),
                },
            );
            tasks.push(tokio::spawn(berthd::cri::stream::serve(
                tokio::net::TcpListener::from_std(stream)?,
                cri.clone(),
                cri_stream_idle,
                stop_rx.clone(),
            )));
            tasks.push(tokio::spawn(berthd::cri::serve(
                listener,
                cri,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(berthd::memory::trim_when_idle(
            stop_rx.clone(),
        )));
        notify.ready("serving the Engine API");
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut current = cfg;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    notify.reloading();
                    reload(&flags, &mut current, &level, &engine);
                    notify.ready("serving the Engine API");
                }
            }
        }
        notify.stopping();
        tracing::info!("shutting down (containers keep running)");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        // Storage cleanups of removed containers finish before the daemon exits.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), engine.settle()).await;
        for sock in &created {
            let _ = std::fs::remove_file(sock);
        }
        let _ = std::fs::remove_file(&current.pidfile);
        // The build contexts kept in /dev/shm, then the claims on work directories there
        // (see berth_util::shared_tmp).
        berthd::buildkit::shutdown();
        berth_util::shared_tmp::release();
        anyhow::Ok(())
    })
}
