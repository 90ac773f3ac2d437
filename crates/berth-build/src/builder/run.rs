//! RUN: the command, its environment and mounts, and its cache key; the container's OCI
//! spec (the runtime's typed spec with Docker's defaults, `berth_runtime::profiles`) and the
//! runtime that runs it, its output streamed to the client line by line.

use std::fs;
use std::io::{self, BufRead};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_image::manifest::ContainerConfig;
use berth_runtime::spec::{Mount, Spec};
use berth_util::runtime::{RunOpts, Runtime};

use super::cache;
use super::commit::FsOp;
use super::container::{self, ContainerGuard};
use super::copy::{context_rel, hash_paths};
use super::error::{at, invalid, BuildError, Result, StepError};
use super::instructions::{MountKind, MountSpec, Network, Run};
use super::state::{PlatformError, State, PROXY_ARGS};
use super::steps::StageCtx;
use super::{Eval, Event, RunNetns, RunSandbox, Secret};
use crate::binfmt;
use crate::dockerignore::IgnoreFile;
use crate::fsops::{self, io_at};
use crate::shell::Vars;
use berth_image::manifest::Platform;

/// A RUN step, ready to run.
pub(super) struct RunSpec {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    /// `host`, `none`, `default` (the daemon's default: its bridge, a rootless daemon's
    /// host network) or a network's name or id.
    network: String,
    mounts: Vec<RunMount>,
    /// The image's `VOLUME`s (each gets a throw-away view, see [`container::volume_view`]).
    volumes: Vec<String>,
    /// The command as the failure message shows it.
    command: String,
    /// The platform of the step's image (its programs may need an emulator).
    platform: Platform,
}

impl RunSpec {
    /// The step's command.
    pub(super) fn args(&self) -> &[String] {
        &self.args
    }
}

/// A `--mount` resolved for this step.
enum RunMount {
    Bind {
        src: PathBuf,
        dst: String,
        rw: bool,
    },
    /// A bind from another state's root file system (mounted for the step).
    StateBind {
        state: Box<State>,
        src: String,
        dst: String,
        rw: bool,
    },
    Tmpfs {
        dst: String,
        size: Option<u64>,
    },
    /// An SSH agent socket, with `SSH_AUTH_SOCK` set to `dst`.
    Ssh {
        socket: PathBuf,
        dst: String,
    },
    /// A build secret: a read-only file at `dst` and/or an environment variable.
    Secret {
        data: Secret,
        dst: Option<String>,
        env: Option<String>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

pub(super) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Eval<'_, '_, '_> {
    pub(super) fn run_step(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        r: &Run,
        cc: ContainerConfig,
    ) -> Result<()> {
        let mut argv = r.argv(ctx.state.shell());
        if argv.is_empty() {
            // `RUN []`: dockerd's step container runs with the image's entrypoint and command.
            let cc = ctx.state.cc();
            let (ep, cmd) = (cc.entrypoint, cc.cmd);
            argv = ep
                .into_iter()
                .flatten()
                .chain(cmd.into_iter().flatten())
                .collect();
            if argv.is_empty() {
                return Err(invalid(line, "no command specified"));
            }
        }
        // Build args in scope: in the environment, the history and the cache key.
        let arg_env: Vec<String> = ctx
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        let img_env = ctx.state.env();
        let mut env = img_env.clone();
        for kv in &arg_env {
            let k = kv.split('=').next().unwrap_or("");
            if Vars::get(img_env.as_slice(), k).is_none() {
                env.push(kv.clone());
            }
        }
        for p in PROXY_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*p) {
                if !ctx.args.contains_key(*p) {
                    env.push(format!("{p}={v}"));
                }
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.into());
        }
        let mut created_by = if arg_env.is_empty() {
            argv.join(" ")
        } else {
            format!(
                "|{} {} {}",
                arg_env.len(),
                arg_env.join(" "),
                argv.join(" ")
            )
        };
        let network = match r.network {
            Some(Network::Host) => "host".to_string(),
            Some(Network::None) => "none".to_string(),
            Some(Network::Default) | None => match self.opts.network.as_deref() {
                None | Some("" | "default") => "default".to_string(),
                Some(n) => n.to_string(),
            },
        };
        // (As Docker's, the key does not name the network, only whether it is the host's.)
        let host_network = network == "host";
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        for spec in &r.mounts {
            let (m, key) = self.resolve_mount(ctx, spec, line)?;
            mount_keys.push(key);
            mounts.extend(m);
        }
        if !mount_keys.is_empty() || r.network.is_some() {
            created_by = format!("RUN {}{created_by}", r.flags);
        }
        let user = cc.user.clone().unwrap_or_default();
        let workdir = cc.working_dir.clone().unwrap_or_default();
        let cache_text = format!(
            "RUN\n{}\nnet={host_network}\nmounts={}\nuser={user}\ncwd={workdir}",
            serde_json::to_string(&(&argv, &arg_env)).unwrap_or_default(),
            mount_keys.join(";"),
        );
        let spec = RunSpec {
            args: argv,
            env,
            cwd: if workdir.is_empty() {
                "/".into()
            } else {
                workdir
            },
            user,
            network,
            mounts,
            // (A relative one is below `/`, as runc takes a relative destination.)
            volumes: cc
                .volumes
                .iter()
                .flatten()
                .filter(|_| self.opts.volume_views)
                .map(|(v, _)| format!("/{}", v.trim_start_matches('/')))
                .collect(),
            command: r.command_text(),
            platform: ctx.state.config.platform().normalize(),
        };
        self.commit(
            ctx,
            line,
            created_by,
            cache_text,
            cc,
            FsOp::Run(Box::new(spec)),
        )
    }

    /// A `--mount` for this step and its cache-key text (`None`: an optional secret that
    /// was not given).
    fn resolve_mount(
        &mut self,
        ctx: &StageCtx,
        spec: &MountSpec,
        line: usize,
    ) -> Result<(Option<RunMount>, String)> {
        let key = spec.key.clone();
        match &spec.kind {
            MountKind::Cache {
                target,
                id,
                uid,
                gid,
                mode,
            } => {
                let dir = cache::mount_dir(self.b.store, id);
                fs::create_dir_all(&dir).map_err(io_at("creating the cache mount", &dir))?;
                let _ = std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid));
                if let Some(m) = mode {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(*m));
                }
                // The cache's content is not part of the key (as Docker).
                let m = RunMount::Bind {
                    src: dir,
                    dst: target.clone(),
                    rw: true,
                };
                Ok((Some(m), key))
            }
            MountKind::Ssh {
                id,
                target,
                required,
            } => match self.opts.ssh.get(id) {
                Some(socket) => Ok((
                    Some(RunMount::Ssh {
                        socket: socket.clone(),
                        dst: target.clone(),
                    }),
                    key,
                )),
                None if *required => Err(invalid(
                    line,
                    format!(
                        "no SSH key {id:?} forwarded from the client (pass it with --ssh {id}=…)"
                    ),
                )),
                None => Ok((None, key)),
            },
            MountKind::Tmpfs { target, size } => Ok((
                Some(RunMount::Tmpfs {
                    dst: target.clone(),
                    size: *size,
                }),
                key,
            )),
            MountKind::Bind { target, source, rw } => {
                let (src, dst, rw) = (source.clone(), target.clone(), *rw);
                if let Some(from) = &spec.from {
                    let state = self.source_state(from, ctx.index, line)?;
                    let key = format!("{key}@{}", state.id);
                    let state = Box::new(state);
                    return Ok((
                        Some(RunMount::StateBind {
                            state,
                            src,
                            dst,
                            rw,
                        }),
                        key,
                    ));
                }
                let rel = context_rel(&src, line)?;
                let context = self.context(line)?;
                let host = fsops::resolve_in_root(context, &rel, true)?;
                if !host.exists() {
                    return Err(invalid(
                        line,
                        format!("--mount=type=bind: source {src} not found in the build context"),
                    ));
                }
                // The bound content is part of the key.
                let h = hash_paths(
                    context,
                    std::slice::from_ref(&host),
                    &IgnoreFile::default(),
                    false,
                )?;
                Ok((
                    Some(RunMount::Bind { src: host, dst, rw }),
                    format!("{key}#{h}"),
                ))
            }
            MountKind::Secret {
                id,
                target,
                env,
                required,
                mode,
                uid,
                gid,
            } => {
                let Some(data) = self.opts.secrets.get(id) else {
                    if *required {
                        return Err(invalid(
                            line,
                            format!("secret {id} is required but was not provided (pass it with --secret id={id},src=FILE or id={id},env=VARIABLE)"),
                        ));
                    }
                    return Ok((None, key));
                };
                // The key names the secret, never its content.
                let m = RunMount::Secret {
                    data: data.clone(),
                    dst: target.clone(),
                    env: env.clone(),
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                };
                Ok((Some(m), key))
            }
        }
    }

    /// How programs of `p` run: the interpreters that must be reachable at their paths in
    /// the container (those of matching handlers without `F`; none when native or when
    /// every handler's interpreter is held open by the kernel).
    fn emulators(&mut self, p: &Platform) -> std::result::Result<Vec<PathBuf>, PlatformError> {
        if p.architecture.is_empty() {
            return Ok(Vec::new());
        }
        let key = p.to_string();
        let how = self
            .runnable
            .entry(key.clone())
            .or_insert_with(|| binfmt::execution(p))
            .clone();
        match how {
            Ok(binfmt::Execution::Native) => Ok(Vec::new()),
            Ok(binfmt::Execution::Emulated(found)) => {
                let names: Vec<&str> = found.iter().map(|e| e.name.as_str()).collect();
                tracing::debug!(platform = %key, handlers = ?names, "RUN through binfmt_misc");
                let mut binds: Vec<PathBuf> = found
                    .into_iter()
                    .filter(|e| !e.fix_binary())
                    .map(|e| e.interpreter)
                    .collect();
                binds.sort();
                binds.dedup();
                Ok(binds)
            }
            Err(source) => Err(PlatformError::NotRunnable {
                platform: key,
                source,
            }),
        }
    }

    /// Runs a RUN step's container on `rootfs`, its output streamed to the client; fails
    /// with the command's exit code when it is not 0.
    pub(super) fn run_container(
        &mut self,
        guard: &mut ContainerGuard,
        rootfs: &Path,
        spec: RunSpec,
        line: usize,
    ) -> Result<()> {
        let bundle = guard.work.clone();
        let (uid, gid) = fsops::resolve_user(rootfs, &spec.user).map_err(|e| at(line, e))?;
        // As a container's process (dockerd's `getUser`): the primary group, then the
        // user's groups in `/etc/group`.
        let mut gids = vec![gid];
        gids.extend(fsops::supplementary_gids(rootfs, &spec.user));
        // Mount points the runtime would create in the image: remember which, to remove
        // them afterwards (they are not part of the step's changes).
        let mut dests: Vec<String> = vec!["/proc".into(), "/dev".into(), "/sys".into()];
        // After Docker's defaults (`berth_runtime::profiles::default_spec`).
        let mut mounts: Vec<Mount> = Vec::new();
        // The step's network (kept until its container is gone) and the files a container
        // there gets.
        let hostname = guard.short_id().to_string();
        let RunSandbox {
            netns,
            hosts,
            resolv,
            guard: network,
        } = match self.b.networks {
            Some(n) => n
                .sandbox(&spec.network, &hostname, &self.opts.extra_hosts)
                .map_err(|source| {
                    at(
                        line,
                        StepError::Network {
                            network: spec.network.clone(),
                            source,
                        },
                    )
                })?,
            None => standalone_sandbox(&spec.network, &hostname, &self.opts.extra_hosts),
        };
        // Released with the container (after it is gone), by the build's reaper.
        guard.network = Some(network);
        // The image's volumes first (parents before children): the network files and the
        // step's own mounts go over them, as dockerd's.
        let mut volumes: Vec<&String> = spec
            .volumes
            .iter()
            .filter(|v| !spec.mounts.iter().any(|m| mount_dst(m) == Some(v.as_str())))
            .collect();
        volumes.sort_by_key(|v| v.split('/').filter(|c| !c.is_empty()).count());
        for (n, v) in volumes.into_iter().enumerate() {
            let lower = match fsops::resolve_in_root(rootfs, v, true) {
                Ok(p) if p.is_dir() => Some(p),
                Ok(p) if p.symlink_metadata().is_ok() => {
                    return Err(invalid(
                        line,
                        format!("cannot mount volume over existing file, file exists {v}"),
                    ))
                }
                _ => None,
            };
            let src =
                container::volume_view(lower.as_deref(), &bundle.join(format!("v{n}")), guard)?;
            mounts.push(bind(v.as_str(), src, &["rbind", "rprivate"]));
        }
        for (f, body) in [
            ("hosts", hosts),
            ("resolv.conf", resolv),
            ("hostname", format!("{hostname}\n")),
        ] {
            let path = bundle.join(f);
            fs::write(&path, body).map_err(io_at("writing", &path))?;
            let dst = format!("/etc/{f}");
            dests.push(dst.clone());
            mounts.push(bind(dst, path, &["rbind", "rprivate"]));
        }
        // A foreign platform's programs run through the host's binfmt_misc handler; one
        // without the F flag finds its interpreter in the container, at its path.
        for interp in self.emulators(&spec.platform).map_err(|e| at(line, e))? {
            let src =
                fs::canonicalize(&interp).map_err(io_at("resolving the emulator", &interp))?;
            let dst = interp.to_string_lossy().into_owned();
            dests.push(dst.clone());
            mounts.push(bind(
                dst,
                src,
                &["bind", "ro", "rprivate", "nosuid", "nodev"],
            ));
        }
        let mut env = spec.env;
        for (n, m) in spec.mounts.iter().enumerate() {
            let rw_opts: &[&str] = if mount_rw(m) {
                &["rbind", "rprivate"]
            } else {
                &["rbind", "rprivate", "ro"]
            };
            match m {
                RunMount::Bind { src, dst, .. } => {
                    dests.push(dst.clone());
                    mounts.push(bind(dst, src.clone(), rw_opts));
                }
                RunMount::StateBind {
                    state, src, dst, ..
                } => {
                    let mw = bundle.join(format!("m{n}"));
                    let mp = container::mount_layers(self.b.store, &state.layers, &mw, guard)?;
                    let host = fsops::resolve_in_root(&mp, src, true)?;
                    dests.push(dst.clone());
                    mounts.push(bind(dst, host, rw_opts));
                }
                RunMount::Secret {
                    data,
                    dst,
                    env: var,
                    mode,
                    uid,
                    gid,
                } => {
                    if let Some(e) = var {
                        env.push(format!("{e}={}", String::from_utf8_lossy(&data.0)));
                    }
                    if let Some(dst) = dst {
                        // Beside the bundle, outside the root file system: never in a layer.
                        let f = bundle.join(format!("secret-{n}"));
                        write_secret(&f, &data.0, *mode, *uid, *gid)
                            .map_err(io_at("writing the secret file", &f))?;
                        dests.push(dst.clone());
                        mounts.push(bind(
                            dst,
                            f,
                            &["bind", "ro", "rprivate", "nosuid", "nodev", "noexec"],
                        ));
                    }
                }
                RunMount::Ssh { socket, dst } => {
                    dests.push(dst.clone());
                    env.push(format!("SSH_AUTH_SOCK={dst}"));
                    mounts.push(bind(
                        dst,
                        socket.clone(),
                        &["bind", "rprivate", "nosuid", "nodev", "noexec"],
                    ));
                }
                RunMount::Tmpfs { dst, size } => {
                    dests.push(dst.clone());
                    let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                    options.extend(size.map(|s| format!("size={s}")));
                    mounts.push(Mount {
                        destination: dst.into(),
                        typ: Some("tmpfs".into()),
                        source: Some("tmpfs".into()),
                        options,
                        ..Default::default()
                    });
                }
            }
        }
        let created: Vec<PathBuf> = dests
            .iter()
            .filter_map(|d| first_missing(rootfs, d))
            .collect();
        let c = RuntimeContainer {
            runtime: Runtime::new(&self.b.runtime, &self.b.runtime_root),
            id: guard.id.clone(),
        };
        let mut config = bundle_spec(
            &berth_runtime::profiles::DefaultSpec {
                args: &spec.args,
                env: &env,
                cwd: &spec.cwd,
                uid,
                gid,
                additional_gids: &gids,
                tty: false,
                hostname: &hostname,
                host_network: netns == RunNetns::Host,
                cgroups_path: format!(
                    "{}/build-{}",
                    self.b.cgroup_parent.trim_end_matches('/'),
                    guard.short_id()
                ),
                cgroup_mount: false,
                mounts: Vec::new(),
            },
            mounts,
        )?;
        if let RunNetns::Join(path) = &netns {
            join_netns(&mut config, path)?;
        }
        let config_path = bundle.join("config.json");
        fs::write(&config_path, serde_json::to_vec(&config)?)
            .map_err(io_at("writing", &config_path))?;
        let (out_r, out_w) = std::os::unix::net::UnixStream::pair()
            .map_err(io_at("creating a socket pair for", &bundle))?;
        let (err_r, err_w) = std::os::unix::net::UnixStream::pair()
            .map_err(io_at("creating a socket pair for", &bundle))?;
        let mut child = c
            .run(&bundle, out_w.into(), err_w.into())
            .map_err(io_at("starting the runtime", &self.b.runtime))?;
        let status = {
            guard.runtime = Some(c);
            // Both streams read on threads of their own, lines handed over in order of
            // arrival; stderr is marked as dockerd marks it (red, `\x1b[91m`…`\x1b[0m`).
            let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
            for (is_err, r) in [(false, out_r), (true, err_r)] {
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name("berth-build-out".into())
                    .spawn(move || {
                        let mut r = io::BufReader::new(r);
                        let mut buf = Vec::new();
                        loop {
                            buf.clear();
                            match r.read_until(b'\n', &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {
                                    let line = String::from_utf8_lossy(&buf).into_owned();
                                    if tx.send((is_err, line)).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    })
                    .map_err(io_at("starting an output reader for", &bundle))?;
            }
            drop(tx);
            let mut cancelled = false;
            let mut last_kill: Option<std::time::Instant> = None;
            const KILL_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);
            loop {
                // A timeout, so that a client that went away is noticed while a step runs
                // quietly (the sink answers `Event::Idle` with whether to go on).
                let ev = match rx.recv_timeout(std::time::Duration::from_millis(250)) {
                    Ok((_, line)) if self.opts.output_events => Event::Output(line),
                    Ok((true, line)) => Event::Stream(format!("\x1b[91m{line}\x1b[0m")),
                    Ok((false, line)) => Event::Stream(line),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Event::Idle,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let go_on = (self.sink)(ev);
                // Killed again each second until the step ends: a kill that came while the
                // runtime was still creating the container had nothing to signal yet.
                if !go_on && last_kill.is_none_or(|t| t.elapsed() >= KILL_AGAIN) {
                    cancelled = true;
                    last_kill = Some(std::time::Instant::now());
                    if let Some(c) = &guard.runtime {
                        c.kill();
                    }
                }
            }
            let status = child
                .wait()
                .map_err(io_at("waiting for the runtime", &self.b.runtime))?;
            // `run` deletes the container when it exits: no `delete` process needed then.
            if guard.runtime.as_ref().is_some_and(|c| !c.exists()) {
                guard.runtime = None;
            }
            if cancelled {
                return Err(BuildError::Cancelled);
            }
            status
        };
        remove_mount_points(rootfs, &dests, &created);
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if code != 0 {
            return Err(at(
                line,
                StepError::Failed {
                    command: spec.command,
                    code,
                },
            ));
        }
        Ok(())
    }
}

/// Joins the network namespace at `path` (set up by the daemon).
fn join_netns(spec: &mut Spec, path: &Path) -> Result<()> {
    let linux = spec.linux.as_mut().ok_or(BuildError::Internal(
        "the default spec has no linux section",
    ))?;
    let ns = linux
        .namespaces
        .iter_mut()
        .find(|n| n.typ == berth_runtime::spec::NamespaceType::Network)
        .ok_or(BuildError::Internal(
            "the default spec has no network namespace",
        ))?;
    ns.path = Some(path.to_path_buf());
    Ok(())
}

/// A RUN step's network without a daemon's networks: the host's when asked for, else a
/// namespace with only loopback.
fn standalone_sandbox(network: &str, hostname: &str, extra_hosts: &[String]) -> RunSandbox {
    let mut extra = String::new();
    for h in extra_hosts {
        if let Some((name, ip)) = h.split_once('=').or_else(|| h.split_once(':')) {
            extra += &format!("{ip}\t{name}\n");
        }
    }
    let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if network == "host" {
        let hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
        return RunSandbox {
            netns: RunNetns::Host,
            hosts: hosts + &extra,
            resolv,
            guard: Box::new(()),
        };
    }
    RunSandbox {
        netns: RunNetns::New,
        hosts: format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{extra}127.0.0.1\t{hostname}\n"
        ),
        resolv,
        guard: Box::new(()),
    }
}

fn mount_rw(m: &RunMount) -> bool {
    matches!(
        m,
        RunMount::Bind { rw: true, .. } | RunMount::StateBind { rw: true, .. }
    )
}

/// Where a step's mount is in the container (`None`: a secret only in the environment).
fn mount_dst(m: &RunMount) -> Option<&str> {
    match m {
        RunMount::Bind { dst, .. }
        | RunMount::StateBind { dst, .. }
        | RunMount::Tmpfs { dst, .. }
        | RunMount::Ssh { dst, .. } => Some(dst),
        RunMount::Secret { dst, .. } => dst.as_deref(),
    }
}

/// A bind mount of `src` at `dst`.
fn bind(dst: impl Into<PathBuf>, src: PathBuf, options: &[&str]) -> Mount {
    Mount {
        destination: dst.into(),
        typ: Some("bind".into()),
        source: Some(src),
        options: options.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// The bundle's `config.json`: Docker's defaults, then the step's `mounts`.
fn bundle_spec(
    defaults: &berth_runtime::profiles::DefaultSpec<'_>,
    mounts: Vec<Mount>,
) -> Result<Spec> {
    let mut spec: Spec = serde_json::from_value(berth_runtime::profiles::default_spec(defaults))?;
    spec.mounts.extend(mounts);
    Ok(spec)
}

/// A container of the runtime (`berth-runtime`, or any runc-compatible one), driven through
/// the one runtime client.
pub(super) struct RuntimeContainer {
    runtime: Runtime,
    id: String,
}

impl RuntimeContainer {
    /// `run --bundle B ID`: creates, starts and waits; deletes the container when it exits.
    fn run(&self, bundle: &Path, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Child> {
        let mut cmd = self.runtime.run(&self.id, bundle, &RunOpts::default());
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // `cmd` keeps the write ends: dropped with it, so the reader sees the end.
        cmd.spawn()
    }

    fn kill(&self) {
        let _ = quiet(self.runtime.kill(&self.id, "KILL", false)).status();
    }

    /// Removes the container if the runtime still has it.
    pub fn delete(self) {
        let _ = quiet(self.runtime.delete(&self.id, true)).status();
    }

    /// Whether the runtime still has the container.
    fn exists(&self) -> bool {
        self.runtime.root.join(&self.id).exists()
    }
}

fn quiet(mut c: Command) -> Command {
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Writes a secret file (created with its final mode: never readable by others).
fn write_secret(p: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
}

/// The first component of `dst` (inside `root`) that does not exist.
fn first_missing(root: &Path, dst: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for c in dst.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        if fs::symlink_metadata(&p).is_err() {
            return Some(p);
        }
    }
    None
}

/// Removes the mount points the runtime created (`created`: the first missing component
/// of each), deepest first, if still empty.
fn remove_mount_points(rootfs: &Path, dests: &[String], created: &[PathBuf]) {
    for d in dests {
        let full = rootfs.join(d.trim_start_matches('/'));
        let Some(top) = created.iter().find(|c| full.starts_with(c)) else {
            continue;
        };
        let mut p = full;
        loop {
            let _ = fs::remove_dir(&p).or_else(|_| remove_empty_file(&p));
            if p == *top || !p.pop() || !p.starts_with(rootfs) {
                break;
            }
        }
    }
}

fn remove_empty_file(p: &Path) -> io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    if m.is_file() && m.len() == 0 {
        fs::remove_file(p)
    } else {
        Err(io::Error::other("not empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_spec_keeps_docker_s_defaults_and_adds_the_mounts() {
        let spec = bundle_spec(
            &berth_runtime::profiles::DefaultSpec {
                args: &["sh".into()],
                env: &[DEFAULT_PATH.into()],
                cwd: "/w",
                uid: 1,
                gid: 2,
                additional_gids: &[],
                tty: false,
                hostname: "abc",
                host_network: false,
                cgroups_path: "/b/build-abc".into(),
                cgroup_mount: false,
                mounts: Vec::new(),
            },
            vec![bind("/s", "/h/s".into(), &["rbind", "ro"])],
        )
        .unwrap();
        let p = spec.process.as_ref().unwrap();
        assert_eq!((p.user.uid, p.user.gid), (1, 2));
        assert_eq!(p.cwd, Path::new("/w"));
        assert_eq!(
            p.capabilities
                .as_ref()
                .unwrap()
                .bounding
                .as_ref()
                .unwrap()
                .len(),
            14
        );
        assert!(spec.has_namespace(berth_runtime::spec::NamespaceType::Network));
        assert!(spec.linux().seccomp.is_some());
        let last = spec.mounts.last().unwrap();
        assert_eq!(last.destination, Path::new("/s"));
        assert_eq!(last.options, vec!["rbind", "ro"]);
        assert!(spec
            .mounts
            .iter()
            .any(|m| m.destination == Path::new("/proc")));
        // What the runtime reads back is what was built.
        let bytes = serde_json::to_vec(&spec).unwrap();
        let back = Spec::parse(&bytes, Path::new("config.json")).unwrap();
        assert_eq!(back.mounts.len(), spec.mounts.len());
        assert_eq!(back.linux().masked_paths, spec.linux().masked_paths);
    }

    #[test]
    fn mount_points_the_runtime_made_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        fs::create_dir_all(root.join("proc")).unwrap();
        let dests = vec!["/proc".to_string(), "/a/b/c".to_string(), "/f".to_string()];
        let created: Vec<PathBuf> = dests
            .iter()
            .filter_map(|x| first_missing(root, x))
            .collect();
        assert_eq!(created, vec![root.join("a"), root.join("f")]);
        // What the runtime creates: directories and an empty file.
        fs::create_dir_all(root.join("a/b/c")).unwrap();
        fs::write(root.join("f"), "").unwrap();
        remove_mount_points(root, &dests, &created);
        assert!(!root.join("a").exists());
        assert!(!root.join("f").exists());
        assert!(root.join("proc").exists());
    }
}
