//! A container's life: start (the bundle and the shim), the monitor and exit, restart
//! policies, stop/kill/wait, remove, attach, and reattaching after a daemon restart.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use berth_api::container::{Health, State};
use berth_runtime::spec::NamespaceType;
use berth_shim::protocol::{Request, Signal};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use super::{
    Bundle, Container, Engine, EngineError, Entry, Events, PendingAttach, Result, WaitCondition,
    REMOVING,
};
use crate::shimio::{self, StartReport};
use crate::{spec, util};

impl Engine {
    /// Reattaches to the shims of running containers and applies restart policies (call
    /// inside the runtime, once at start).
    /// Before the API serves (as dockerd's restore): a container that died while no daemon
    /// ran is recorded as exited (and, by its policy, restarting) first, so no client sees its
    /// stale "running" state.
    pub async fn reattach(self: &Arc<Self>) {
        // Networking: forget endpoints of vanished containers, re-adopt running ones.
        let all = self.list();
        self.net.adopt(&all);
        let running: Vec<String> = all
            .iter()
            .filter(|c| c.state.running)
            .map(|c| c.id.clone())
            .collect();
        // Restart policies on daemon start: `always`, and `unless-stopped` unless stopped by
        // hand — of containers stopped before this start (the records as read here: a running
        // one whose shim is lost is its monitor's to restart, which may already have marked it
        // exited by the time a second listing ran, and two starts raced).
        let to_start: Vec<String> = all
            .into_iter()
            .filter(|c| !c.state.running)
            .filter(|c| match c.host_config.restart_policy.name.as_str() {
                "always" => true,
                "unless-stopped" => !c.manually_stopped,
                "on-failure" => c.state.restarting,
                _ => false,
            })
            .map(|c| c.id)
            .collect();
        // The shims asked at once (each bounded: a slow one is left to its monitor).
        let states = futures_util::future::join_all(running.iter().map(|id| {
            let socket = self.shim_socket(id);
            async move {
                let state = shimio::call(&socket, Request::State { exec_id: None });
                tokio::time::timeout(Duration::from_secs(2), state).await
            }
        }))
        .await;
        let mut exits = Vec::new();
        for (id, state) in running.into_iter().zip(states) {
            // A lost shim, or one that saw the container exit.
            let exited = match state {
                Ok(Ok(r)) => r.status.as_deref() == Some("stopped"),
                Ok(Err(_)) => true,
                Err(_) => false,
            };
            if exited {
                tracing::info!("container {id} exited while no daemon ran");
                exits.push(self.clone().monitor(id));
                continue;
            }
            tracing::info!("reattaching to container {id}");
            let me = self.clone();
            let id2 = id.clone();
            tokio::spawn(async move { me.monitor(id2).await });
            self.spawn_health_checks(&id);
        }
        futures_util::future::join_all(exits).await;
        for id in to_start {
            tracing::info!("starting container {id} (restart policy)");
            let me = self.clone();
            tokio::spawn(async move {
                if let Ok(e) = me.lookup(&id) {
                    let mut r = e.rec.lock().unwrap();
                    r.state.restarting = true;
                    r.manually_stopped = false;
                }
                me.policy_restart(&id).await;
            });
        }
    }

    /// Starts a created or exited container.
    pub async fn start(self: &Arc<Self>, name_or_id: &str) -> Result<()> {
        self.start_inner(name_or_id, false, None).await
    }

    /// Starts a created container of network mode `none` in the network namespace at
    /// `netns` instead of a new one, for this start only (the CRI's pod sandboxes: their
    /// namespace is made first, so that CNI sets it up while the container starts).
    pub async fn start_in_netns(self: &Arc<Self>, name_or_id: &str, netns: &Path) -> Result<()> {
        self.start_inner(name_or_id, false, Some(netns)).await
    }

    /// Boxed: it is reached again from the restart policy (through `on_exit`).
    fn start_inner<'a>(
        self: &'a Arc<Self>,
        name_or_id: &'a str,
        by_policy: bool,
        netns: Option<&'a Path>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(self.start_inner_impl(name_or_id, by_policy, netns))
    }

    async fn start_inner_impl(
        self: &Arc<Self>,
        name_or_id: &str,
        by_policy: bool,
        netns: Option<&Path>,
    ) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let op = e.op.lock().await;
        // The last exit's teardown finishes first.
        drop(e.teardown.lock().await);
        let c = e.rec.lock().unwrap().clone();
        // dockerd's order: a paused container is running too, but gets its own answer.
        if c.state.paused {
            return Err(EngineError::Conflict(
                "cannot start a paused container, try unpause instead".into(),
            ));
        }
        if c.state.running {
            return Err(EngineError::NotModified);
        }
        if by_policy && (c.manually_stopped || !c.state.restarting) {
            return Ok(());
        }
        let c = match self.join_network_of(&e, c) {
            Ok(c) => c,
            Err(err) => {
                drop(op);
                self.start_failed(&e, &err).await;
                return Err(err);
            }
        };
        let id = c.id.clone();
        // Undone at the next daemon start if a crash interrupts the start (see `recovery`).
        let t0 = std::time::Instant::now();
        let _intent = self.intent(super::recovery::Op::Start, &id)?;
        super::trace_step("start", &id, "intent", t0);
        if netns.is_some() && c.network_mode() != "none" {
            return Err(EngineError::bad(
                "only a container of network mode none starts in a given network namespace",
            ));
        }
        // The shim starts the process as soon as the runtime created it, saving the `Start`
        // round trip, when nothing has to happen in between: no attach client waits for the
        // start, and no participant sets anything up in the container's namespaces first (it
        // joins the host's or another container's network, or a namespace its caller set
        // up; the loopback of that one comes up before the start returns, as ever).
        let mode = c.network_mode();
        let eager = e.pending.lock().unwrap().is_empty()
            && (netns.is_some() || mode == "host" || mode.starts_with("container:"));
        let me = self.clone();
        let c2 = c.clone();
        let netns = netns.map(Path::to_path_buf);
        let launched = tokio::task::spawn_blocking(move || me.launch(&c2, netns.as_deref(), eager))
            .await
            .map_err(EngineError::from)
            .and_then(|r| r);
        let out = match launched {
            Ok(out) => out,
            Err(err) => {
                drop(op);
                self.start_failed(&e, &err).await;
                return Err(err);
            }
        };
        super::trace_step("start", &id, "launched", t0);
        crate::failpoint::hit("start.shim");
        // Attach clients that were waiting for the start.
        let pending: Vec<PendingAttach> = std::mem::take(&mut *e.pending.lock().unwrap());
        for p in pending {
            let r = attach_shim(&out.socket, p.stdin, p.stdout, p.stderr, c.closes_stdin()).await;
            let _ = p.tx.send(r);
        }
        if eager {
            // Started by the shim.
        } else if let Err(err) = shimio::call(&out.socket, Request::Start).await {
            let _ = shimio::call(&out.socket, Request::Shutdown { force: true }).await;
            let _ = berth_image::snapshot::unmount(&self.rootfs(&id));
            let err =
                EngineError::BadRequest(format!("failed to create task for container: {err}"));
            drop(op);
            self.start_failed(&e, &err).await;
            return Err(err);
        }
        super::trace_step("start", &id, "Start", t0);
        crate::failpoint::hit("start.started");
        let killed_meanwhile;
        {
            let mut r = e.rec.lock().unwrap();
            let health = r
                .config
                .healthcheck
                .as_ref()
                .and_then(|h| h.test.as_ref())
                .filter(|t| !t.is_empty() && t[0] != "NONE")
                .map(|_| Health {
                    status: "starting".into(),
                    failing_streak: 0,
                    log: vec![],
                });
            r.state = State {
                status: "running".into(),
                running: true,
                pid: out.init_pid,
                started_at: util::now_rfc3339_nano(),
                finished_at: r.state.finished_at.clone(),
                health,
                ..State::default()
            };
            r.shim_pid = out.pid;
            // A kill or stop that came while the policy's restart was launching found the
            // container not running: it still holds (below).
            killed_meanwhile = by_policy && r.manually_stopped;
            if !by_policy {
                r.manually_stopped = false;
                // A start by hand begins the restart policy afresh (dockerd's
                // `ResetRestartManager(true)`): its count and back-off.
                r.restart_count = 0;
                e.backoff_ms.store(0, Ordering::Relaxed);
            }
            self.persist_state(&r)?;
            self.container_event(&r, "start", &[]);
        }
        super::trace_step("start", &id, "persisted", t0);
        if killed_meanwhile {
            if let Err(err) = self.signal(&id, libc::SIGKILL).await {
                tracing::warn!("killing {id} stopped during its restart: {err}");
            }
        }
        self.spawn_health_checks(&id);
        let me = self.clone();
        tokio::spawn(async move { me.monitor(id).await });
        Ok(())
    }

    /// dockerd's `getNetworkedContainer` and `initializeNetworking` for a container sharing
    /// another's network namespace (`container:<x>`): that one must exist, be another and run;
    /// the container takes its hostname and domain name (recorded, as dockerd does).
    fn join_network_of(&self, e: &Entry, c: Container) -> Result<Container> {
        let Some(x) = c.network_mode().strip_prefix("container:") else {
            return Ok(c);
        };
        let other = self.get(x).map_err(|err| {
            EngineError::Internal(format!("joining network namespace of container: {err}"))
        })?;
        if other.id == c.id {
            return Err(EngineError::Internal(
                "cannot join own network namespace".into(),
            ));
        }
        if !other.state.running {
            return Err(EngineError::Conflict(format!(
                "cannot join network namespace of a non running container: container {} is {}",
                other.short_name(),
                other.state.status
            )));
        }
        let mut r = e.rec.lock().unwrap();
        r.config.hostname = other.hostname();
        r.config.domainname.clone_from(&other.config.domainname);
        Ok(r.clone())
    }

    /// Records a failed start as Docker does (exit code 127/126/128, `State.Error`), ends
    /// waiting attach clients and waiters, and honours `AutoRemove`.
    async fn start_failed(self: &Arc<Self>, e: &Entry, err: &EngineError) {
        let msg = err.to_string();
        // The docker CLI's reading of the same words (`toStatusError`).
        let code = if msg.contains("executable file not found")
            || msg.contains("no such file or directory")
            || msg.contains("not found")
            || msg.contains("No such file")
        {
            127
        } else if msg.contains("ermission denied") || msg.contains("is a directory") {
            126
        } else {
            128
        };
        e.pending.lock().unwrap().clear();
        let id = e.rec.lock().unwrap().id.clone();
        for p in self.participants() {
            p.exit(&id);
        }
        let auto_remove = {
            let mut r = e.rec.lock().unwrap();
            r.state.error = msg;
            r.state.exit_code = code;
            if let Err(err) = self.persist_state(&r) {
                tracing::warn!("persisting {}: {err}", r.id);
            }
            r.auto_remove()
        };
        e.events.send_modify(|ev| {
            ev.exits += 1;
            ev.last_exit = code;
        });
        if auto_remove {
            if let Err(err) = self.remove(&id, true, false).await {
                tracing::warn!("auto-removing {id}: {err}");
            }
        }
    }

    /// Mounts the rootfs, writes the bundle, starts the shim (blocking). Returns its report.
    /// `start`: the shim starts the container too (`--start`).
    fn launch(&self, c: &Container, netns: Option<&Path>, start: bool) -> Result<StartReport> {
        let id = &c.id;
        let exec_dir = self.exec_dir(id);
        let rootfs = self.rootfs(id);
        let shim_dir = self.shim_dir(id);
        // What an earlier run left (a shim or the runtime's state of a container whose start
        // or shim a crash cut short) would make the runtime's `create` fail.
        self.discard_task(id);
        for d in [&rootfs, &shim_dir] {
            std::fs::create_dir_all(d).map_err(EngineError::io("creating", d))?;
        }
        let t0 = std::time::Instant::now();
        let sn = self.images.snapshotter()?;
        sn.mount_container_transient(id, &rootfs, c.auto_remove())?;
        super::trace_step("launch", id, "mounted", t0);
        crate::failpoint::hit("start.mounted");
        let unmount = |e: EngineError| {
            let _ = berth_image::snapshot::unmount(&rootfs);
            e
        };
        let (uid, gid) =
            spec::resolve_user(&rootfs, &c.config.user).map_err(|e| unmount(e.into()))?;
        let hostname = c.hostname();
        let dd = self.data_dir(id);
        let write = |name: &str, content: &str| -> Result<(String, String)> {
            let p = dd.join(name);
            std::fs::write(&p, content).map_err(EngineError::io("writing", &p))?;
            Ok((p.display().to_string(), String::new()))
        };
        let mut etc = Vec::new();
        let (hn, _) = write("hostname", &format!("{hostname}\n")).map_err(unmount)?;
        etc.push((hn, "/etc/hostname".to_string()));
        // The daemon's defaults (default-ulimits, init) as they are at this start.
        let start_hc = self.live().defaults.for_start(&c.host_config);
        let init = start_hc.init == Some(true);
        if init && !self.cfg.init.is_file() {
            return Err(unmount(EngineError::BadRequest(format!(
                "--init: the init binary {} does not exist (give berthd --init-path)",
                self.cfg.init.display()
            ))));
        }
        let gids = crate::hostconfig::additional_gids(&rootfs, &c.config.user, gid, &c.host_config)
            .map_err(|e| unmount(e.into()))?;
        // dockerd's init layer marks a container with an empty `/.dockerenv` (which scripts
        // test for); hidden from diff and commit as the init layer is.
        if let Ok(root) = std::fs::File::open(&rootfs) {
            if let Err(err) = berth_util::root::touch_in_root(&root, Path::new(".dockerenv")) {
                tracing::debug!("creating /.dockerenv in {id}: {err}");
            }
        }
        // The participants' parts: /etc/hosts, resolv.conf and the namespace to join
        // (networking), volumes, binds and tmpfs (mounts).
        let mut bundle = Bundle {
            rootfs: rootfs.clone(),
            hostname: hostname.clone(),
            ..Default::default()
        };
        let parts = self.participants();
        for (i, p) in parts.iter().enumerate() {
            if let Err(e) = p.prepare(c, &mut bundle, self) {
                for q in parts[..i].iter().rev() {
                    q.exit(id);
                }
                return Err(unmount(e));
            }
        }
        let fail = |e: EngineError| {
            for p in parts.iter().rev() {
                p.exit(id);
            }
            unmount(e)
        };
        // Legacy links: the children's addresses and environment.
        let (link_env, link_hosts) = self.link_setup(c).map_err(fail)?;
        if !link_hosts.is_empty() {
            if let Some((_, hosts)) = bundle.files.iter_mut().find(|(d, _)| *d == "/etc/hosts") {
                for l in &link_hosts {
                    hosts.push_str(l);
                    hosts.push('\n');
                }
            }
        }
        for (dest, content) in &bundle.files {
            let name = dest.trim_start_matches("/etc/");
            let (p, _) = write(name, content).map_err(fail)?;
            etc.push((p, dest.to_string()));
        }
        let env = process_env(c, link_env, &[], c.tty());
        let mut args = if init {
            vec![
                "/sbin/docker-init".to_string(),
                "--".to_string(),
                c.path.clone(),
            ]
        } else {
            vec![c.path.clone()]
        };
        args.extend(c.args.iter().cloned());
        let cwd = if c.config.working_dir.is_empty() {
            "/"
        } else {
            c.config.working_dir.as_str()
        };
        let mut cfg = spec::build(&spec::DefaultSpec {
            args: &args,
            env: &env,
            cwd,
            uid,
            gid,
            additional_gids: &gids,
            tty: c.tty(),
            hostname: &hostname,
            host_network: c.network_mode() == "host",
            cgroups_path: self.cgroups_path(c),
            cgroup_mount: true,
            mounts: vec![],
        });
        // dockerd's `setupMounts`: the network files go after the volumes and binds (an
        // `-v /etc` volume does not hide them), read-only with a read-only root file system;
        // a user's mount at one of their paths replaces it.
        let user_dests: Vec<std::path::PathBuf> = bundle
            .mounts
            .iter()
            .map(|m| m.destination.clone())
            .collect();
        etc.retain(|(_, d)| !user_dests.iter().any(|u| u == Path::new(d)));
        cfg.mounts.append(&mut bundle.mounts);
        cfg.mounts
            .extend(spec::etc_mounts(&etc, c.host_config.readonly_rootfs));
        if let (Some(p), Some(linux)) = (bundle.rootfs_propagation, cfg.linux.as_mut()) {
            linux.rootfs_propagation = Some(p.into());
        }
        crate::hostconfig::default_sysctls(&mut cfg, &c.config.domainname, c.network_mode());
        crate::hostconfig::apply(&mut cfg, &start_hc, self).map_err(|e| fail(e.into()))?;
        // The terminal's size from the start (dockerd's `WithConsoleSize`).
        if let (Some(size), Some(p)) = (console_size(start_hc.console_size), cfg.process.as_mut()) {
            p.console_size = Some(size);
        }
        if init {
            cfg.mounts.push(berth_runtime::spec::Mount {
                destination: "/sbin/docker-init".into(),
                typ: Some("bind".into()),
                source: Some(self.cfg.init.clone()),
                options: ["rbind", "ro", "nosuid", "nodev"]
                    .iter()
                    .map(|o| o.to_string())
                    .collect(),
                uid_mappings: vec![],
                gid_mappings: vec![],
            });
        }
        if let Some(p) = netns {
            bundle.netns = Some(p.to_path_buf());
        }
        if let Some(p) = &bundle.netns {
            crate::hostconfig::set_ns(&mut cfg, NamespaceType::Network, Some(p.clone()), true);
        }
        super::trace_step("launch", id, "spec", t0);
        let config_json = exec_dir.join("config.json");
        util::replace_json(&config_json, &cfg)
            .map_err(|e| fail(EngineError::io("writing", &config_json)(e)))?;
        let mut cmd = std::process::Command::new(&self.cfg.shim);
        cmd.arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(&exec_dir)
            .arg("--state-dir")
            .arg(&shim_dir)
            .arg("--runtime")
            .arg(&self.cfg.runtime)
            .arg("--runtime-root")
            .arg(self.cfg.exec_root.join("runtime"))
            .arg("--log-path")
            .arg(&c.log_path);
        cmd.args(crate::logs::shim_args(c));
        if c.tty() {
            cmd.arg("--tty");
        }
        if c.config.open_stdin {
            cmd.arg("--stdin");
        }
        // Berth's specs have no poststart hooks, the only thing `runtime start` adds to the
        // write into the exec fifo: the shim saves an exec of the runtime per start.
        if cfg.hooks.as_ref().is_none_or(|h| h.poststart.is_empty()) {
            cmd.arg("--direct-start");
        }
        if start {
            cmd.arg("--start");
        }
        // The sealed copy of the runtime as the shim's standard input: with nothing but stdio
        // to pass, the spawn runs no code between fork and exec, and so is a vfork-style
        // posix_spawn rather than a copy of the daemon's address space. Not for a container
        // that may hold CAP_SYS_PTRACE: it can reach the copy through /proc/<pid>/exe of a
        // runtime entering it and, though it cannot write it (sealed), hold it open for
        // writing, and every later exec of that one copy, for any container, would then fail
        // with ETXTBSY. Its shim runs the runtime by its path (each run protects itself with
        // a read-only view of its own).
        let shared_copy = self.runtime_copy.as_ref().filter(|_| !may_ptrace(&cfg));
        let through_standby = shared_copy.is_some();
        match shared_copy {
            Some(fd) => {
                let copy = fd
                    .try_clone()
                    .map_err(|e| fail(EngineError::sys("duplicating the runtime's copy")(e)))?;
                cmd.arg("--runtime-fd").arg("0");
                cmd.stdin(std::process::Stdio::from(copy));
            }
            None => {
                cmd.stdin(std::process::Stdio::null());
            }
        }
        super::trace_step("launch", id, "config written", t0);
        // A standby shim has the runtime's copy as its standard input already.
        let out = if through_standby {
            self.standby.output(&mut cmd)
        } else {
            cmd.output()
        };
        let out = out.map_err(|e| {
            fail(EngineError::sys(format!(
                "starting {}",
                self.cfg.shim.display()
            ))(e))
        })?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout).trim().to_string()
                + String::from_utf8_lossy(&out.stderr).trim();
            return Err(fail(EngineError::BadRequest(format!(
                "failed to create task for container: {msg}"
            ))));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let report: StartReport = serde_json::from_str(line.trim()).map_err(|e| {
            fail(EngineError::Internal(format!(
                "bad shim report {line:?}: {e}"
            )))
        })?;
        // The container exists (its init waits for `start`): the participants' parts that
        // need its namespaces (loopback, veths, published ports, DNS).
        for p in parts {
            if let Err(e) = p.start(c, report.init_pid) {
                if let Ok(mut c) = berth_shim::client::Client::connect(&shim_dir.join("shim.sock"))
                {
                    let _ = c.shutdown(true);
                }
                return Err(fail(e));
            }
        }
        Ok(report)
    }

    /// Waits on a running container's shim and records its exit.
    async fn monitor(self: Arc<Self>, id: String) {
        let res = shimio::call(&self.shim_socket(&id), Request::Wait { exec_id: None }).await;
        let lost = res.is_err();
        let (code, finished, error) = match res {
            Ok(v) => (
                v.exit_code.unwrap_or(255),
                v.finished_at.unwrap_or_else(util::now_rfc3339_nano),
                String::new(),
            ),
            Err(e) => match util::read_json::<berth_shim::protocol::ExitRecord>(
                &self.shim_dir(&id).join("exit.json"),
            ) {
                Ok(x) => (i64::from(x.exit_code), x.finished_at, String::new()),
                Err(_) => (
                    255,
                    util::now_rfc3339_nano(),
                    format!("lost the container's shim: {e}"),
                ),
            },
        };
        self.on_exit(&id, code, finished, error, lost).await;
    }

    /// Records an exit and applies the restart policy; `lost_shim`: the shim died (it
    /// neither reported the exit nor will it delete the container from the runtime).
    async fn on_exit(
        self: &Arc<Self>,
        id: &str,
        code: i64,
        finished: String,
        error: String,
        lost_shim: bool,
    ) {
        let Ok(e) = self.lookup(id) else { return };
        let teardown = e.teardown.lock().await;
        // The record says exited before the shim, rootfs and participants are torn down:
        // a crash in between is finished at the next daemon start (see `recovery`).
        let intent = self.intent(super::recovery::Op::Exit, id);
        if let Err(err) = &intent {
            tracing::warn!("{id}: {err}");
        }
        // Read before the shim deletes the container (and its cgroup).
        let oom = {
            let r = e.rec.lock().unwrap().clone();
            super::oom_killed(&self.cgroups_path(&r))
        };
        let (auto_remove, restart, snapshot, ran_for) = {
            let mut r = e.rec.lock().unwrap();
            let ran_secs = util::now_secs() - util::unix_secs(&r.state.started_at);
            // How long it ran, in whole seconds (dockerd's `execDuration`).
            let ran_for = {
                let (now_s, now_ns) = berth_image::timeutil::now();
                let (s, ns) = util::parse_rfc3339(&r.state.started_at).unwrap_or((now_s, now_ns));
                ((now_s - s) * 1_000_000_000 + (i64::from(now_ns) - i64::from(ns))).max(0)
                    / 1_000_000_000
            };
            r.state.running = false;
            r.state.paused = false;
            r.state.status = "exited".into();
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.finished_at = finished;
            r.state.error = error;
            r.state.oom_killed = oom;
            if let Some(h) = r.state.health.as_mut() {
                h.status = "unhealthy".into();
            }
            r.shim_pid = 0;
            let policy = &r.host_config.restart_policy;
            let restart = !r.manually_stopped
                && match policy.name.as_str() {
                    "always" | "unless-stopped" => true,
                    "on-failure" => {
                        code != 0
                            && (policy.maximum_retry_count == 0
                                || r.restart_count < policy.maximum_retry_count)
                    }
                    _ => false,
                };
            if restart {
                r.state.restarting = true;
                r.state.status = "restarting".into();
                // Docker's back-off: 100 ms doubling, reset after 10 s of running, at most 1 min.
                let prev = e.backoff_ms.load(Ordering::Relaxed);
                let next = if ran_secs >= 10 || prev == 0 {
                    100
                } else {
                    (prev * 2).min(60_000)
                };
                e.backoff_ms.store(next, Ordering::Relaxed);
            }
            if let Err(err) = self.persist_state(&r) {
                tracing::warn!("persisting {id}: {err}");
            }
            // A container stopped by `restart` is not removed (dockerd's
            // `HasBeenManuallyRestarted`).
            let restarting_by_hand = e.manual_restart.load(Ordering::Relaxed);
            (
                r.auto_remove() && !restarting_by_hand,
                restart,
                r.clone(),
                ran_for,
            )
        };
        crate::failpoint::hit("exit.recorded");
        // The shim deletes the container from the runtime (its cgroup, state) and exits. For a
        // container removed at exit that happens in the background with the rest of its
        // cleanup (see `clean_storage`), off the path of `run --rm`.
        if lost_shim {
            // As containerd does when a shim dies: kill what it monitored and delete it from
            // the runtime (processes, cgroups, state), so that nothing is orphaned and a
            // restart can create the container again.
            tracing::warn!("container {id} lost its shim: deleting it from the runtime");
            let me = self.clone();
            let id2 = id.to_string();
            let _ = tokio::task::spawn_blocking(move || me.discard_task(&id2)).await;
        } else if !auto_remove || restart {
            let _ = shimio::call(&self.shim_socket(id), Request::Shutdown { force: true }).await;
        }
        let _ = berth_image::snapshot::unmount(&self.rootfs(id));
        // The participants: volumes, then networking (proxies, DNS, host veths, port rules).
        let me = self.clone();
        let id2 = id.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            for p in me.participants() {
                p.exit(&id2);
            }
        })
        .await;
        drop(intent);
        drop(teardown);
        // dockerd's `Cleanup`: the container's execs go with its run.
        self.execs.forget_container(id);
        if oom {
            self.container_event(&snapshot, "oom", &[]);
        }
        // dockerd's attributes: the exit code and how long it ran (whole seconds).
        self.container_event(
            &snapshot,
            "die",
            &[
                ("exitCode", &code.to_string()),
                ("execDuration", &ran_for.to_string()),
            ],
        );
        e.events.send_modify(|ev| {
            ev.exits += 1;
            ev.last_exit = code;
        });
        if restart {
            let delay = e.backoff_ms.load(Ordering::Relaxed);
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                me.policy_restart(&id).await;
            });
        } else if auto_remove {
            let me = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                if let Err(err) = me.remove(&id, true, false).await {
                    tracing::warn!("auto-removing {id}: {err}");
                }
            });
        }
    }

    /// A restart decided by the restart policy (unless stopped or removed meanwhile).
    async fn policy_restart(self: &Arc<Self>, id: &str) {
        let Ok(e) = self.lookup(id) else { return };
        {
            let mut r = e.rec.lock().unwrap();
            if !r.state.restarting || r.manually_stopped || r.state.running {
                return;
            }
            r.restart_count += 1;
        }
        if let Err(err) = self.start_inner(id, true, None).await {
            tracing::warn!("restarting {id}: {err}");
            let mut r = e.rec.lock().unwrap();
            r.state.restarting = false;
            r.state.status = "exited".into();
            let _ = self.persist_state(&r);
        }
    }

    pub(crate) async fn signal(&self, id: &str, sig: i32) -> Result<()> {
        shimio::call(
            &self.shim_socket(id),
            Request::Kill {
                signal: Signal::Number(sig),
                all: false,
                exec_id: None,
            },
        )
        .await
        .map(drop)
        .map_err(EngineError::sys(format!("signalling container {id}")))
    }

    /// `kill`: sends a signal to a running container, as dockerd's `ContainerKill`: the
    /// container's stop signal (or any signal when it has none, and SIGKILL always) means it
    /// stays down (no restart policy, `unless-stopped` stopped by hand); SIGKILL (the default)
    /// returns once the exit is recorded.
    pub async fn kill(&self, name_or_id: &str, signal: Option<&str>) -> Result<()> {
        // The signal is checked first (dockerd: `kill -s BOGUS nosuch` is about the signal).
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => berth_shim::protocol::signal_by_name(s)
                .ok_or_else(|| EngineError::BadRequest(format!("Invalid signal: {s}")))?,
            None => libc::SIGKILL,
        };
        let e = self.lookup(name_or_id)?;
        let mut rx = e.events.subscribe();
        let seen = rx.borrow_and_update().exits;
        let c = {
            let mut r = e.rec.lock().unwrap();
            if !r.state.running && !r.state.restarting {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not running",
                    r.id
                )));
            }
            let stop_signal = berth_shim::protocol::signal_by_name(&r.config.stop_signal);
            if sig == libc::SIGKILL || stop_signal.is_none_or(|s| s == sig) {
                r.manually_stopped = true;
                if r.state.restarting && !r.state.running {
                    // Between two runs: the pending restart is called off.
                    r.state.restarting = false;
                    r.state.status = "exited".into();
                }
                self.persist_state(&r)?;
            }
            r.clone()
        };
        if !c.state.running {
            return Ok(());
        }
        self.signal(&c.id, sig).await?;
        self.container_event(&c, "kill", &[("signal", &sig.to_string())]);
        if c.manually_stopped {
            // A paused container gets its signal once thawed (dockerd resumes it).
            self.thaw_for_exit(&c).await;
        }
        if sig == libc::SIGKILL {
            tokio::time::timeout(Duration::from_secs(10), wait_exit(&mut rx, seen))
                .await
                .map_err(|_| {
                    EngineError::Internal(
                        "tried to kill container, but did not receive an exit event".into(),
                    )
                })?;
        }
        Ok(())
    }

    /// Resumes a container paused when it was signalled to stop, so the signal takes effect
    /// (as dockerd's `killWithSignal`); a no-op when it is not paused.
    async fn thaw_for_exit(&self, c: &Container) {
        let paused = self
            .lookup(&c.id)
            .map(|e| e.rec.lock().unwrap().state.paused)
            .unwrap_or(false);
        if !paused {
            return;
        }
        let id = c.id.clone();
        if let Err(err) = self.runtime_call(move |rt| rt.resume(&id), None).await {
            tracing::warn!("resuming {} to stop it: {err}", c.id);
            return;
        }
        if let Ok(e) = self.lookup(&c.id) {
            let mut r = e.rec.lock().unwrap();
            if r.state.paused {
                r.state.paused = false;
                if r.state.running {
                    r.state.status = "running".into();
                }
                let _ = self.persist_state(&r);
            }
        }
    }

    /// `stop`: the stop signal, `t` seconds, then SIGKILL.
    pub async fn stop(&self, name_or_id: &str, t: Option<i64>, signal: Option<&str>) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let was_restarting = {
            let mut r = e.rec.lock().unwrap();
            r.manually_stopped = true;
            let was = r.state.restarting;
            if was && !r.state.running {
                r.state.restarting = false;
                r.state.status = "exited".into();
            }
            self.persist(&r)?;
            was && !r.state.running
        };
        if was_restarting {
            return Ok(());
        }
        let res = self.stop_entry(&e, t, signal).await;
        if res.is_ok() {
            let c = e.rec.lock().unwrap().clone();
            self.container_event(&c, "stop", &[]);
        }
        res
    }

    async fn stop_entry(&self, e: &Entry, t: Option<i64>, signal: Option<&str>) -> Result<()> {
        let mut rx = e.events.subscribe();
        let c = e.rec.lock().unwrap().clone();
        if !c.state.running {
            return Err(EngineError::NotModified);
        }
        let sig_name = signal
            .filter(|s| !s.is_empty())
            .or(Some(c.config.stop_signal.as_str()).filter(|s| !s.is_empty()))
            .unwrap_or("SIGTERM");
        let sig = berth_shim::protocol::signal_by_name(sig_name)
            .ok_or_else(|| EngineError::BadRequest(format!("Invalid signal: {sig_name}")))?;
        let t = t.or(c.config.stop_timeout).unwrap_or(10);
        let seen = rx.borrow_and_update().exits;
        // dockerd's `kill` event for each signal a stop sends.
        let signalled = |sig: i32| {
            self.container_event(&c, "kill", &[("signal", &sig.to_string())]);
        };
        if sig != libc::SIGKILL {
            if self.signal(&c.id, sig).await.is_ok() {
                signalled(sig);
            }
            self.thaw_for_exit(&c).await;
            crate::failpoint::hit("stop.signalled");
            let wait = wait_exit(&mut rx, seen);
            if t < 0 {
                wait.await;
                return Ok(());
            }
            if tokio::time::timeout(Duration::from_secs(t as u64), wait)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        if self.signal(&c.id, libc::SIGKILL).await.is_ok() {
            signalled(libc::SIGKILL);
        }
        self.thaw_for_exit(&c).await;
        tokio::time::timeout(Duration::from_secs(30), wait_exit(&mut rx, seen))
            .await
            .map_err(|_| EngineError::Internal("the container did not exit after SIGKILL".into()))
    }

    /// `wait`: checks the container now; the returned future gives the exit code.
    pub fn wait(
        &self,
        name_or_id: &str,
        cond: WaitCondition,
    ) -> Result<impl std::future::Future<Output = i64> + Send + 'static> {
        let e = self.lookup(name_or_id)?;
        let mut rx = e.events.subscribe();
        let seen = rx.borrow_and_update().exits;
        let (running, code) = {
            let r = e.rec.lock().unwrap();
            (r.state.running, r.state.exit_code)
        };
        Ok(async move {
            match cond {
                WaitCondition::NotRunning if !running => code,
                WaitCondition::NotRunning | WaitCondition::NextExit => {
                    wait_exit(&mut rx, seen).await;
                    let v = rx.borrow().last_exit;
                    v
                }
                WaitCondition::Removed => {
                    let mut last = code;
                    loop {
                        {
                            let ev = rx.borrow_and_update();
                            if ev.exits > seen {
                                last = ev.last_exit;
                            }
                            if ev.removed {
                                return last;
                            }
                        }
                        if rx.changed().await.is_err() {
                            return last;
                        }
                    }
                }
            }
        })
    }

    /// `DELETE /containers/{id}`; `volumes` (`v=1`) removes its anonymous volumes too (as
    /// `AutoRemove` does).
    pub async fn remove(
        self: &Arc<Self>,
        name_or_id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let e = self.lookup(name_or_id)?;
        let _op = e.op.lock().await;
        let id = e.rec.lock().unwrap().id.clone();
        if !self.map.lock().unwrap().contains_key(&id) {
            return Err(EngineError::NotFound(name_or_id.to_string()));
        }
        {
            // dockerd counts a container between two runs of its restart policy as running.
            let mut r = e.rec.lock().unwrap();
            if (r.state.running || r.state.restarting) && !force {
                let what = if r.state.paused {
                    return Err(EngineError::Conflict(format!(
                        "cannot remove container \"{}\": container is paused and must be unpaused first",
                        r.name
                    )));
                } else if r.state.restarting {
                    "restarting"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"{}\": container is {what}: stop the container before removing or force remove",
                    r.name
                )));
            }
            if r.state.restarting {
                r.manually_stopped = true;
                if !r.state.running {
                    r.state.restarting = false;
                }
            }
        }
        if e.rec.lock().unwrap().state.running {
            match self.stop_entry(&e, Some(0), Some("SIGKILL")).await {
                Ok(()) | Err(EngineError::NotModified) => {}
                Err(err) => return Err(err),
            }
        }
        let volumes = volumes || e.rec.lock().unwrap().auto_remove();
        let me = self.clone();
        let id2 = id.clone();
        // The removal is committed by one rename of the container's directory: from then on a
        // restarted daemon no longer has the container, and finishes the cleanup of what is
        // left. The storage (unmount, writable layer, directories) is cleaned in the
        // background, so that `run --rm` and `rm` return without waiting for the file system;
        // operations that need it gone (image removal, prune, shutdown) wait with `settle`.
        let trash = tokio::task::spawn_blocking(move || {
            // The participants release what the container kept (addresses, volume
            // references, anonymous volumes).
            for p in me.participants() {
                p.remove(&id2, volumes);
            }
            crate::failpoint::hit("remove.participants");
            let trash = me
                .cfg
                .data_root
                .join("containers")
                .join(format!("{REMOVING}{id2}"));
            let dir = me.data_dir(&id2);
            std::fs::rename(&dir, &trash)
                .map(|_| trash)
                .map_err(EngineError::io("removing the container's directory", dir))
        })
        .await??;
        crate::failpoint::hit("remove.renamed");
        self.cleanups.send_modify(|n| *n += 1);
        let me = self.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || {
            me.clean_storage(&id2, &trash);
            me.cleanups.send_modify(|n| *n -= 1);
        });
        self.map.lock().unwrap().remove(&id);
        e.pending.lock().unwrap().clear();
        self.execs.forget_container(&id);
        let c = e.rec.lock().unwrap().clone();
        self.container_event(&c, "destroy", &[]);
        e.events.send_modify(|ev| ev.removed = true);
        Ok(())
    }

    /// Unmounts and deletes the storage of a removed container (`trash` is its renamed data
    /// directory).
    pub(super) fn clean_storage(&self, id: &str, trash: &Path) {
        // A shim still there (a container removed at exit, see `on_exit`) deletes the
        // container from the runtime and exits.
        // A shim gone with the runtime's state still there (a crash) is handled too.
        self.discard_task(id);
        // A shim that could not be asked (still starting when a crash cut its start short,
        // or its socket gone) must not outlive its directory and record: nothing could
        // find it again.
        self.discard_unreachable_task(id);
        self.remove_snapshot(id);
        let _ = std::fs::remove_dir_all(self.exec_dir(id));
        if let Err(e) = std::fs::remove_dir_all(trash) {
            tracing::warn!("removing {}: {e}", trash.display());
        }
    }

    /// Attach: a stream from the shim now (running) or once the container starts.
    pub fn attach(
        &self,
        name_or_id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<(bool, oneshot::Receiver<std::io::Result<UnixStream>>)> {
        let e = self.lookup(name_or_id)?;
        let (tx, rx) = oneshot::channel();
        let c = e.rec.lock().unwrap().clone();
        if c.state.running {
            let socket = self.shim_socket(&c.id);
            let close = c.closes_stdin();
            tokio::spawn(async move {
                let _ = tx.send(attach_shim(&socket, stdin, stdout, stderr, close).await);
            });
        } else {
            e.pending.lock().unwrap().push(PendingAttach {
                stdin,
                stdout,
                stderr,
                tx,
            });
        }
        Ok((c.tty(), rx))
    }
}

async fn wait_exit(rx: &mut watch::Receiver<Events>, seen: u64) {
    loop {
        if rx.borrow_and_update().exits > seen || rx.borrow().removed {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn attach_shim(
    socket: &Path,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    close_stdin: bool,
) -> std::io::Result<UnixStream> {
    let mut s = shimio::connect(socket).await?;
    shimio::call_on(
        &mut s,
        &Request::Attach {
            stdin,
            stdout,
            stderr,
            close_stdin,
        },
    )
    .await?;
    Ok(s)
}

/// Whether a container's processes may hold `CAP_SYS_PTRACE` (in its bounding set).
/// An OCI console size of Docker's `[height, width]` (none when both are 0).
pub(crate) fn console_size([h, w]: [u64; 2]) -> Option<berth_runtime::spec::ConsoleSize> {
    (h > 0 || w > 0).then(|| berth_runtime::spec::ConsoleSize {
        height: h.min(u64::from(u16::MAX)) as u16,
        width: w.min(u64::from(u16::MAX)) as u16,
    })
}

fn may_ptrace(spec: &berth_runtime::spec::Spec) -> bool {
    spec.process
        .as_ref()
        .and_then(|p| p.capabilities.as_ref())
        .and_then(|c| c.bounding.as_ref())
        .is_some_and(|b| b.iter().any(|c| c == "CAP_SYS_PTRACE"))
}

/// The environment of a container's process or of an exec in it (dockerd's
/// `CreateDaemonEnvironment`): the defaults — `PATH`, `HOSTNAME`, `TERM=xterm` with a tty,
/// the links' variables — overridden by the container's own and then by `extra` (an
/// exec's); a bare `KEY` among those unsets a default (`-e HOSTNAME`).
pub(crate) fn process_env(
    c: &Container,
    link_env: Vec<String>,
    extra: &[String],
    tty: bool,
) -> Vec<String> {
    let mut env = vec![
        super::create::DEFAULT_PATH.to_string(),
        format!("HOSTNAME={}", c.hostname()),
    ];
    if tty {
        env.push("TERM=xterm".into());
    }
    env.extend(link_env);
    util::override_env(&mut env, c.config.env.as_deref().unwrap_or_default());
    util::override_env(&mut env, extra);
    env
}
