//! The runtime's operations on containers (`create`, `start`, `run`, `exec`, `kill`, `delete`,
//! `state`, `pause`, `resume`, `ps`, `update`, `list`), as a library the CLI calls.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use berth_cgroups::{Cgroup, Hierarchy};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::capabilities::{self, CapSets, Held};
use crate::init::{self, InitConfig};
use crate::seccomp;
use crate::spec::{NamespaceType, Process, Spec, SpecError};
use crate::state::{ContainerState, StateError, Status};
use crate::sync::{self, Msg, SyncError};
use crate::{console, hooks, util, validate};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] berth_cgroups::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    /// Making the container's init, in the runtime (see `init::clone_init`).
    #[error(transparent)]
    Init(#[from] init::InitError),
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    #[error("container {id} is {status}: {message}")]
    BadStatus {
        id: String,
        status: Status,
        message: &'static str,
    },
    #[error("container {0} has no cgroup")]
    NoCgroup(String),
    #[error("container {0}: its init exited during setup")]
    InitExited(String),
    #[error("{0}")]
    Usage(&'static str),
    #[error(transparent)]
    Rootless(#[from] crate::rootless::RootlessError),
    #[error("rootless: linux.resources asks for limits, but there is no writable cgroup to apply them ({0}); run without limits or delegate a cgroup v2 subtree to this user")]
    RootlessLimits(berth_cgroups::CgroupError),
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let op = op.into();
    move |source| RuntimeError::Io { op, source }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Global options (`--root`, `--rootless`).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    /// Rootless operation (see `rootless`): cgroups only where writable, id maps through
    /// `newuidmap`/`newgidmap` where the caller may not write them itself.
    pub rootless: bool,
}

/// Where a new process's pid and terminal go, and which descriptors it inherits (`create`,
/// `run` and `exec`; the same flags on each).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ProcessIo {
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
}

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub io: ProcessIo,
    pub no_pivot: bool,
}

#[derive(Debug, Default, Clone)]
pub struct ExecOptions {
    pub id: String,
    pub process: Process,
    pub io: ProcessIo,
    pub detach: bool,
}

/// What a foreground `run`/`exec` needs to wait for its process.
pub struct Foreground {
    pub pid: i32,
    pub master: Option<OwnedFd>,
}

/// Removes what a failed `create` made: processes, cgroup, state directory.
struct CreateGuard {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    pids: Vec<i32>,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        for &pid in &self.pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if let Some(cg) = &self.cgroup {
            kill_cgroup(cg);
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup: {e}");
            }
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The container's cgroup: [`RuntimeError::NoCgroup`] for a container created without one.
fn cgroup_of(st: &ContainerState) -> Result<&Cgroup> {
    st.cgroup
        .as_ref()
        .ok_or_else(|| RuntimeError::NoCgroup(st.id.clone()))
}

fn kill_cgroup(cg: &Cgroup) {
    let frozen = cg.is_frozen().unwrap_or(false);
    for pid in cg.pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if frozen {
        let _ = cg.thaw();
    }
    // Wait (briefly) for the processes to be gone so the cgroup can be removed.
    for _ in 0..500 {
        if cg.pids().map(|p| p.is_empty()).unwrap_or(true) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Settings for security modules this host does not have are accepted with a warning, as runc
/// does on such hosts.
fn warn_ignored(spec: &Spec) {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    let p = spec.process.as_ref();
    if p.and_then(|p| p.apparmor_profile.as_deref())
        .is_some_and(|a| !a.is_empty())
        && !lsm.contains("apparmor")
    {
        tracing::warn!("process.apparmorProfile ignored: AppArmor is not enabled on this host");
    }
    if p.and_then(|p| p.selinux_label.as_deref())
        .is_some_and(|a| !a.is_empty())
        && !lsm.contains("selinux")
    {
        tracing::warn!("process.selinuxLabel ignored: SELinux is not enabled on this host");
    }
    if spec
        .linux()
        .mount_label
        .as_deref()
        .is_some_and(|a| !a.is_empty())
        && !lsm.contains("selinux")
    {
        tracing::warn!("linux.mountLabel ignored: SELinux is not enabled on this host");
    }
}

/// The spec's resources plus, as runc adds them, device rules that let the container use the
/// default devices and its `linux.devices` (whatever deny rules the spec starts with).
fn effective_resources(spec: &Spec) -> Option<crate::spec::LinuxResources> {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
    let mut r = spec.linux().resources.clone()?;
    let Some(mut rules) = r.devices().clone().filter(|d| !d.is_empty()) else {
        return Some(r);
    };
    let allow = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.to_string()));
        d
    };
    rules.push(allow(LinuxDeviceType::C, None, None, "m"));
    rules.push(allow(LinuxDeviceType::B, None, None, "m"));
    for (maj, min) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(allow(LinuxDeviceType::C, Some(maj), Some(min), "rwm"));
    }
    rules.push(allow(LinuxDeviceType::C, Some(136), None, "rwm"));
    for d in &spec.linux().devices {
        let typ = match d.typ.as_str() {
            "c" | "u" => LinuxDeviceType::C,
            "b" => LinuxDeviceType::B,
            _ => continue,
        };
        rules.push(allow(typ, Some(d.major), Some(d.minor), "rwm"));
    }
    r.set_devices(Some(rules));
    Some(r)
}

fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux();
    crate::rootless::write_id_maps(pid, &linux.uid_mappings, &linux.gid_mappings)?;
    Ok(())
}

/// The container's cgroup, created and limited. Rootless, a cgroup the caller may not create
/// (no delegated subtree) is skipped with a warning: the container stays in the caller's
/// cgroup; limits are then an error, device rules are dropped (a rootless container cannot
/// make device nodes anyway, and only privileged callers may install device filters).
fn setup_cgroup(
    spec: &Spec,
    id: &str,
    rootless: bool,
    guard: &mut CreateGuard,
) -> Result<Option<Cgroup>> {
    let hier = Hierarchy::detect()?;
    let cg = Cgroup::new(&hier, spec.linux().cgroups_path.as_deref(), id)?;
    if !rootless {
        cg.create()?;
        guard.cgroup = Some(cg.clone());
        if let Some(r) = effective_resources(spec) {
            cg.apply(&r)?;
        }
        return Ok(Some(cg));
    }
    let limits = spec
        .linux()
        .resources
        .as_ref()
        .is_some_and(crate::rootless::requests_limits);
    if let Err(e) = cg.create() {
        let _ = cg.destroy();
        if !crate::rootless::is_permission_error(&e) {
            return Err(e.into());
        }
        if limits {
            return Err(RuntimeError::RootlessLimits(e));
        }
        tracing::warn!(
            "rootless: no writable cgroup ({e}): the container runs in the caller's cgroup \
             (no limits, pause, stats or update)"
        );
        return Ok(None);
    }
    guard.cgroup = Some(cg.clone());
    if let Some(mut r) = spec.linux().resources.clone() {
        r.set_devices(None);
        cg.apply(&r)?;
    }
    Ok(Some(cg))
}

/// With a terminal: the socket the init sends the pty master to (the caller's console socket,
/// or one end of a pair whose other end we keep to proxy the terminal ourselves).
fn console_endpoints(
    terminal: bool,
    console_socket: Option<&Path>,
) -> Result<(Option<UnixStream>, Option<UnixStream>)> {
    if !terminal {
        return Ok((None, None));
    }
    match console_socket {
        Some(p) => Ok((Some(console::connect(&p.to_string_lossy())?), None)),
        None => {
            let (a, b) = UnixStream::pair().map_err(io("console socket pair"))?;
            Ok((Some(a), Some(b)))
        }
    }
}

fn mkfifo(path: &Path) -> Result<OwnedFd> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io("create exec fifo")(e.into()))?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io("open exec fifo"))?;
    Ok(f.into())
}

/// Blocks until the read end of the fifo behind `fd` (a writer) has no reader left.
fn wait_no_reader(fd: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::empty())];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
        if fds[0].revents().is_none_or(|r| r.intersects(gone)) {
            return;
        }
    }
}

/// The init's own error when it reported one: a failure of the runtime's side of the
/// handshake (writing to an init that exited, moving it into its cgroup) is its consequence.
fn init_error_first(chan: &sync::Channel, e: RuntimeError) -> RuntimeError {
    if matches!(e, RuntimeError::Sync(SyncError::Remote { .. })) {
        return e;
    }
    match chan.pending_error() {
        Some(remote) => remote.into(),
        None => e,
    }
}

/// The cgroup files an init needs to join `cg` by itself ([`init::SelfAttach`]); `None` when
/// one cannot be opened (the runtime moves the init then).
fn open_self_attach(cg: &Cgroup) -> Option<init::SelfAttach> {
    let open = |p: &Path, write: bool| -> Option<OwnedFd> {
        let mut o = std::fs::OpenOptions::new();
        if write {
            o.write(true);
        } else {
            o.read(true).custom_flags(libc::O_DIRECTORY);
        }
        o.open(p)
            .map_err(|e| tracing::debug!("{}: {e}", p.display()))
            .ok()
            .map(OwnedFd::from)
    };
    let v1_tasks = cg
        .v1_dirs()
        .iter()
        .map(|d| open(&d.dir.join("tasks"), true))
        .collect::<Option<Vec<_>>>()?;
    let unified = match cg.unified_dir() {
        Some(d) => Some((open(d, false)?, open(&d.join("cgroup.procs"), true)?)),
        None => None,
    };
    Some(init::SelfAttach { v1_tasks, unified })
}

/// Forks stage 1 of an init, which runs `stage` in the child (our end of the sync channel
/// closed there); the child's end is closed here. `wait`: we wait for the init, which is
/// re-parented to us (the subreaper) when stage 1 exits. Our end and stage 1's pid.
fn fork_stage1(
    cfg: &InitConfig,
    parent: sync::Channel,
    child: sync::Channel,
    wait: bool,
    stage: fn(&InitConfig, &sync::Channel) -> !,
) -> Result<(sync::Channel, i32)> {
    if wait {
        set_child_subreaper();
    }
    match fork()? {
        nix::unistd::ForkResult::Child => {
            drop(parent);
            stage(cfg, &child)
        }
        nix::unistd::ForkResult::Parent { child: pid } => {
            drop(child);
            Ok((parent, pid.as_raw()))
        }
    }
}

/// Clones the container's init straight from here (`init::clone_init`; no stage 1), which
/// runs `init::cloned_init` in the child (our end of the sync channel closed there); the
/// child's end is closed here. `wait`: as for [`fork_stage1`] (the init is our child
/// anyway). Our end and the init's pid.
fn clone_init(
    cfg: &InitConfig,
    parent: sync::Channel,
    child: sync::Channel,
    wait: bool,
) -> Result<(sync::Channel, i32)> {
    if wait {
        set_child_subreaper();
    }
    match init::clone_init(cfg) {
        Ok((nix::unistd::ForkResult::Child, in_v2)) => {
            drop(parent);
            init::cloned_init(cfg, &child, in_v2)
        }
        Ok((nix::unistd::ForkResult::Parent { child: pid }, _)) => {
            drop(child);
            Ok((parent, pid.as_raw()))
        }
        Err(e) => Err(e.into()),
    }
}

fn fork() -> Result<nix::unistd::ForkResult> {
    // SAFETY: the runtime is single-threaded; the child only runs our init code and exits
    // with _exit.
    unsafe { nix::unistd::fork() }.map_err(|e| io("fork")(e.into()))
}

fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
}

fn set_child_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("PR_SET_CHILD_SUBREAPER: {e}");
    }
}

/// The capabilities the process gets, with a warning for each one it cannot be given (see
/// `capabilities`): decided here, where the caller sees the warning, before anything runs.
fn grant_capabilities(process: &Process, in_user_ns: bool) -> Result<Option<CapSets>> {
    let Some(requested) = &process.capabilities else {
        return Ok(None);
    };
    let held = Held::current(in_user_ns).map_err(io("read the runtime's capabilities"))?;
    let (sets, dropped) = capabilities::resolve(requested, &held)?;
    for d in dropped {
        tracing::warn!("{d}");
    }
    Ok(Some(sets))
}

impl Runtime {
    /// The compiled seccomp filter of `spec`, if it has one (cached under the state root).
    fn seccomp_filter(&self, spec: &Spec) -> Result<Option<seccomp::CompiledFilter>> {
        let cache = self.root.join(SECCOMP_CACHE);
        let filter = spec.linux().seccomp.as_ref();
        Ok(filter
            .map(|s| seccomp::compile_cached(s, &cache))
            .transpose()?)
    }

    /// A runtime on the state directory `root`, rootless when not root or inside a user
    /// namespace (see `rootless::detect`).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            root: root.into(),
            rootless: crate::rootless::detect(None),
        }
    }

    fn load(&self, id: &str) -> Result<ContainerState> {
        Ok(ContainerState::load(&self.root, id)?)
    }

    /// Loads container `id` and its status, which `allowed` must accept:
    /// [`RuntimeError::BadStatus`] with `message` otherwise.
    fn load_when(
        &self,
        id: &str,
        allowed: impl Fn(Status) -> bool,
        message: &'static str,
    ) -> Result<(ContainerState, Status)> {
        let st = self.load(id)?;
        let status = st.status(&self.root);
        if !allowed(status) {
            return Err(RuntimeError::BadStatus {
                id: id.into(),
                status,
                message,
            });
        }
        Ok((st, status))
    }

    /// `create` (and the first half of `run`). With `foreground`, no exec fifo is made (the init
    /// goes straight to exec) and a terminal without a console socket is proxied by the caller.
    pub fn create(
        &self,
        opts: &CreateOptions,
        foreground: bool,
    ) -> Result<(ContainerState, Option<OwnedFd>)> {
        validate::validate_id(&opts.id)?;
        let bundle = std::fs::canonicalize(&opts.bundle).map_err(|e| SpecError::Read {
            path: opts.bundle.clone(),
            source: e,
        })?;
        let spec = Spec::load(&bundle)?;
        validate::validate(&spec, &bundle)?;
        let process = spec.process.clone().unwrap_or_default();
        warn_ignored(&spec);
        let caps = grant_capabilities(&process, spec.has_namespace(NamespaceType::User))?;
        if process.terminal && opts.io.console_socket.is_none() && !foreground {
            return Err(RuntimeError::Usage(
                "a terminal needs --console-socket when the runtime detaches",
            ));
        }
        let filter = self.seccomp_filter(&spec)?;
        std::fs::create_dir_all(&self.root)
            .map_err(io(format!("create root {}", self.root.display())))?;
        let dir = ContainerState::dir(&self.root, &opts.id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(opts.id.clone()).into())
            }
            Err(e) => return Err(io(format!("create {}", dir.display()))(e)),
        }
        let mut guard = CreateGuard {
            dir: Some(dir.clone()),
            cgroup: None,
            pids: Vec::new(),
        };
        let cg = setup_cgroup(&spec, &opts.id, self.rootless, &mut guard)?;
        let exec_fifo = if foreground {
            None
        } else {
            Some(mkfifo(&ContainerState::fifo_path(&self.root, &opts.id))?)
        };
        let (console_socket, local_console) =
            console_endpoints(process.terminal, opts.io.console_socket.as_deref())?;
        let rootfs = spec.rootfs(&bundle);
        let (parent, child) = sync::pair().map_err(io("sync socket"))?;
        let cfg = InitConfig {
            spec: &spec,
            process: &process,
            bundle: &bundle,
            rootfs: rootfs.clone(),
            console_socket,
            exec_fifo,
            preserve_fds: opts.io.preserve_fds,
            seccomp: filter,
            join: Vec::new(),
            no_pivot: opts.no_pivot,
            cgroup_mounts: cg.as_ref().map(Cgroup::mount_sources),
            caps,
            attach: cg
                .as_ref()
                .filter(|_| !self.rootless)
                .and_then(open_self_attach),
        };
        let self_attach = cfg.attach.is_some();
        let direct = init::can_clone_init(&spec);
        let (parent, stage1) = if direct {
            clone_init(&cfg, parent, child, foreground)?
        } else {
            fork_stage1(&cfg, parent, child, foreground, init::create_stage1)?
        };
        drop(cfg.console_socket);
        guard.pids.push(stage1);
        let mut state = ContainerState {
            id: opts.id.clone(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.clone(),
            rootfs,
            created: util::now_rfc3339(),
            owner: berth_util::passwd::host_user_name(nix::unistd::geteuid().as_raw()),
            annotations: spec.annotations.clone(),
            cgroup: cg.clone(),
            config: spec.clone(),
        };
        let handshake = (|| -> Result<()> {
            // The init's pid: stage 1 tells it, unless it is the init (no stage 1).
            let mut init_pid = |pid: i32, state: &mut ContainerState| -> Result<()> {
                state.pid = pid;
                if pid != stage1 {
                    guard.pids.insert(0, pid);
                }
                // The init sets up its mounts meanwhile; it waits for "Go" before it needs
                // the cgroup (an init that joins it itself did so first thing).
                if let (Some(cg), false) = (&cg, self_attach) {
                    cg.add_task(pid)?;
                }
                parent.send(&Msg::Go)?;
                Ok(())
            };
            if direct {
                init_pid(stage1, &mut state)?;
            }
            loop {
                match parent.recv()? {
                    Msg::MapRequest { pid } => {
                        write_id_maps(pid, &spec)?;
                        parent.send(&Msg::MapDone)?;
                    }
                    Msg::InitPid { pid } => init_pid(pid, &mut state)?,
                    Msg::RuntimeHooks => {
                        let h = spec.hooks();
                        let st = state.hook_state(Status::Creating);
                        hooks::run_hooks("prestart", &h.prestart, &st)?;
                        hooks::run_hooks("createRuntime", &h.create_runtime, &st)?;
                        parent.send(&Msg::HooksDone {
                            state: state.hook_state(Status::Created),
                        })?;
                    }
                    Msg::Ready => break,
                    other => {
                        return Err(SyncError::Unexpected {
                            expected: "Ready",
                            got: other,
                        }
                        .into());
                    }
                }
            }
            Ok(())
        })();
        handshake.map_err(|e| init_error_first(&parent, e))?;
        if state.pid != stage1 {
            reap(stage1);
        }
        if foreground && !spec.hooks().poststart.is_empty() {
            // poststart hooks run after the user's process is executed: the init's end of the
            // channel is close-on-exec, so end of file means the exec happened (or the init
            // failed, which the caller learns from the exit status).
            let _ = parent.recv();
        }
        let (start, _) = util::proc_start_time(state.pid)
            .ok_or_else(|| RuntimeError::InitExited(opts.id.clone()))?;
        state.pid_start = start;
        state.save(&self.root)?;
        if let Some(p) = &opts.io.pid_file {
            berth_util::fs::replace_file_nosync(p, state.pid.to_string().as_bytes())
                .map_err(io(format!("pid file {}", p.display())))?;
        }
        let master = match local_console {
            Some(sock) => Some(console::recv_fd(&sock)?),
            None => None,
        };
        guard.dir = None;
        guard.cgroup = None;
        guard.pids.clear();
        Ok((state, master))
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let (st, _) = self.load_when(
            id,
            |s| s == Status::Created,
            "cannot start a container that is not created",
        )?;
        let fifo = ContainerState::fifo_path(&self.root, id);
        let mut fd = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(io("open exec fifo (is the container's init alive?)"))?;
        fd.write_all(b"0")
            .map_err(io("signal the container to start"))?;
        let _ = std::fs::remove_file(&fifo);
        // As runc's `start` (which reads the fifo to its end), return once the user's process
        // is executed: poststart hooks run after that, and a short command's output is on its
        // way when the caller asks for it right after the start. The init holds the fifo's
        // read end close-on-exec (after any startContainer hooks), so the writer sees POLLERR
        // once no reader is left.
        wait_no_reader(&fd.into());
        self.poststart(&st);
        Ok(())
    }

    fn poststart(&self, st: &ContainerState) {
        let h = st.config.hooks();
        hooks::run_hooks_warn("poststart", &h.poststart, &st.hook_state(Status::Running));
    }

    /// `run`: create and start; returns what the caller waits for (unless detached).
    pub fn run(&self, opts: &CreateOptions, detach: bool) -> Result<Foreground> {
        if detach {
            let (st, _) = self.create(opts, false)?;
            self.start(&opts.id)?;
            return Ok(Foreground {
                pid: st.pid,
                master: None,
            });
        }
        let (st, master) = self.create(opts, true)?;
        self.poststart(&st);
        Ok(Foreground {
            pid: st.pid,
            master,
        })
    }

    pub fn state(&self, id: &str) -> Result<crate::state::OciState> {
        Ok(self.load(id)?.oci(&self.root))
    }

    pub fn kill(&self, id: &str, sig: i32, all: bool) -> Result<()> {
        let (st, status) = self.load_when(id, |s| s != Status::Stopped, "container not running")?;
        if all {
            if let Some(cg) = &st.cgroup {
                for pid in cg.pids()? {
                    let _ = kill_raw(pid, sig);
                }
                if sig == libc::SIGKILL && status == Status::Paused {
                    let _ = cg.thaw();
                }
                return Ok(());
            }
        }
        signal_init(&st, sig)?;
        if sig == libc::SIGKILL && status == Status::Paused {
            if let Some(cg) = &st.cgroup {
                let _ = cg.thaw();
            }
        }
        Ok(())
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let (st, status) = self.load_when(
            id,
            |s| force || matches!(s, Status::Stopped | Status::Created),
            "cannot delete a container that is not stopped (use --force)",
        )?;
        if status != Status::Stopped {
            let _ = signal_init(&st, libc::SIGKILL);
            wait_exit(st.pid, st.pid_start, 5000);
        }
        if let Some(cg) = &st.cgroup {
            kill_cgroup(cg);
            cg.destroy()?;
        }
        let h = st.config.hooks();
        hooks::run_hooks_warn("poststop", &h.poststop, &st.hook_state(Status::Stopped));
        std::fs::remove_dir_all(ContainerState::dir(&self.root, id))
            .map_err(io(format!("remove state of {id}")))?;
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let (st, _) = self.load_when(
            id,
            |s| matches!(s, Status::Running | Status::Created),
            "cannot pause a container that is not running",
        )?;
        match cgroup_of(&st)?.freeze() {
            Ok(()) => Ok(()),
            // The init exited after the look at its status (its cgroup may be gone already):
            // the answer for a container that is not running, not a cgroup error.
            Err(e) => match st.status(&self.root) {
                Status::Running | Status::Created => Err(e.into()),
                status => Err(RuntimeError::BadStatus {
                    id: id.into(),
                    status,
                    message: "cannot pause a container that is not running",
                }),
            },
        }
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let (st, _) = self.load_when(
            id,
            |s| s == Status::Paused,
            "cannot resume a container that is not paused",
        )?;
        cgroup_of(&st)?.thaw()?;
        Ok(())
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.load(id)?;
        match &st.cgroup {
            Some(cg) => Ok(cg.pids()?),
            None => Ok(if st.init_alive() {
                vec![st.pid]
            } else {
                vec![]
            }),
        }
    }

    pub fn list(&self) -> Vec<crate::state::OciState> {
        crate::state::list_ids(&self.root)
            .into_iter()
            .filter_map(|id| ContainerState::load(&self.root, &id).ok())
            .map(|s| s.oci(&self.root))
            .collect()
    }

    pub fn update(&self, id: &str, res: &crate::spec::LinuxResources) -> Result<()> {
        let (mut st, _) = self.load_when(
            id,
            |s| s != Status::Stopped,
            "cannot update a stopped container",
        )?;
        cgroup_of(&st)?.apply(res)?;
        if let Some(l) = st.config.linux.as_mut() {
            l.resources = Some(res.clone());
        }
        st.save(&self.root)?;
        Ok(())
    }

    pub fn stats(&self, id: &str) -> Result<berth_cgroups::Stats> {
        Ok(cgroup_of(&self.load(id)?)?.stats()?)
    }

    /// `exec`: run another process in a running container.
    pub fn exec(&self, opts: &ExecOptions) -> Result<Foreground> {
        let (st, _) = self.load_when(
            &opts.id,
            |s| matches!(s, Status::Running | Status::Created),
            "cannot exec in a container that is not running",
        )?;
        validate::validate_process(&opts.process, "process")?;
        if opts.process.terminal && opts.detach && opts.io.console_socket.is_none() {
            return Err(RuntimeError::Usage(
                "a terminal needs --console-socket with --detach",
            ));
        }
        let filter = self.seccomp_filter(&st.config)?;
        // The namespaces of the init that differ from ours, opened before anything changes.
        let mut join = Vec::new();
        for typ in NamespaceType::ALL {
            let theirs = format!("/proc/{}/ns/{}", st.pid, typ.proc_name());
            let ours = format!("/proc/self/ns/{}", typ.proc_name());
            let (Ok(a), Ok(b)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            if a.ino() != b.ino() || a.dev() != b.dev() {
                let f = std::fs::File::open(&theirs).map_err(io(format!("open {theirs}")))?;
                join.push((typ, OwnedFd::from(f)));
            }
        }
        if !st.init_alive() {
            return Err(RuntimeError::BadStatus {
                id: opts.id.clone(),
                status: Status::Stopped,
                message: "the container exited",
            });
        }
        let in_user_ns = join.iter().any(|(t, _)| *t == NamespaceType::User);
        let caps = grant_capabilities(&opts.process, in_user_ns)?;
        let (console_socket, local_console) =
            console_endpoints(opts.process.terminal, opts.io.console_socket.as_deref())?;
        let (parent, child) = sync::pair().map_err(io("sync socket"))?;
        let cfg = InitConfig {
            spec: &st.config,
            process: &opts.process,
            bundle: &st.bundle,
            rootfs: st.rootfs.clone(),
            console_socket,
            exec_fifo: None,
            preserve_fds: opts.io.preserve_fds,
            seccomp: filter,
            join,
            no_pivot: false,
            cgroup_mounts: None,
            caps,
            attach: None,
        };
        let (parent, stage1) = fork_stage1(&cfg, parent, child, !opts.detach, init::exec_stage1)?;
        drop(cfg.console_socket);
        drop(cfg.join);
        let mut guard = CreateGuard {
            dir: None,
            cgroup: None,
            pids: vec![stage1],
        };
        let mut pid = 0;
        let handshake = (|| -> Result<()> {
            loop {
                match parent.recv()? {
                    Msg::InitPid { pid: p } => {
                        pid = p;
                        guard.pids.insert(0, p);
                        if let Some(cg) = &st.cgroup {
                            cg.add_task(p)?;
                        }
                        parent.send(&Msg::Go)?;
                    }
                    Msg::Ready => break,
                    other => {
                        return Err(SyncError::Unexpected {
                            expected: "Ready",
                            got: other,
                        }
                        .into())
                    }
                }
            }
            Ok(())
        })();
        handshake.map_err(|e| init_error_first(&parent, e))?;
        reap(stage1);
        if let Some(p) = &opts.io.pid_file {
            berth_util::fs::replace_file_nosync(p, pid.to_string().as_bytes())
                .map_err(io(format!("pid file {}", p.display())))?;
        }
        let master = match local_console {
            Some(sock) => Some(console::recv_fd(&sock)?),
            None => None,
        };
        guard.pids.clear();
        Ok(Foreground { pid, master })
    }
}

/// `kill(pid, sig)` for any signal number, real-time ones included (which nix's and rustix's
/// safe signal types do not cover).
fn kill_raw(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A pidfd of `pid`, if it (still) runs with start time `start`: the descriptor pins the
/// process, so a signal sent through it cannot hit a later process that reused the pid.
fn pidfd_of(pid: i32, start: u64) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    util::pid_alive(pid.as_raw_nonzero().get(), start).then_some(fd)
}

fn signal_init(st: &ContainerState, sig: i32) -> Result<()> {
    let Some(fd) = pidfd_of(st.pid, st.pid_start) else {
        return Err(RuntimeError::BadStatus {
            id: st.id.clone(),
            status: Status::Stopped,
            message: "container not running",
        });
    };
    // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number and no siginfo (null); it
    // reads no memory of ours. (rustix's wrapper takes only signals of its safe type, which
    // leaves out real-time signals.)
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io(format!("signal {sig} to {}", st.id))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Waits up to `ms` milliseconds for `pid` (with this start time) to exit.
pub fn wait_exit(pid: i32, start: u64, ms: u64) -> bool {
    let Some(fd) = pidfd_of(pid, start) else {
        return true;
    };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let ready = nix::poll::poll(&mut fds, timeout).unwrap_or(0);
    ready > 0 || !util::pid_alive(pid, start)
}

/// Waits for a foreground process (our child or re-parented to us as subreaper), forwarding
/// signals to it and proxying its terminal. Returns its exit code (128+signal when killed).
pub fn wait_foreground(fg: &Foreground) -> i32 {
    let mut signals = vec![libc::SIGCHLD, libc::SIGWINCH];
    signals.extend(berth_util::signal::FORWARDED);
    let Ok(sfd) = berth_util::signal::signalfd(&signals) else {
        return wait_plain(fg.pid);
    };
    let stdin_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    let saved = match (&fg.master, stdin_tty) {
        (Some(m), true) => {
            let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
            if let Some(s) = &saved {
                let mut raw = s.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ = nix::sys::termios::tcsetattr(
                    std::io::stdin(),
                    nix::sys::termios::SetArg::TCSANOW,
                    &raw,
                );
            }
            if let Some((r, c)) = console::get_size(std::io::stdin()) {
                let _ = console::set_size(m, r, c);
            }
            saved
        }
        _ => None,
    };
    let mut code = None;
    let mut stdin_open = fg.master.is_some();
    let mut master_open = fg.master.is_some();
    let mut buf = [0u8; 16384];
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    // Reap first in case it already exited.
    code = code.or_else(|| reap_nohang(fg.pid));
    while code.is_none() || master_open {
        let master = fg.master.as_ref().filter(|_| master_open);
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        // With the process gone, drain the terminal without blocking forever.
        let timeout = if code.is_some() {
            PollTimeout::from(100u8)
        } else {
            PollTimeout::NONE
        };
        let n = match nix::poll::poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(_) => continue,
        };
        if n == 0 && code.is_some() {
            break;
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if revents[0].contains(PollFlags::POLLIN) {
            for sig in berth_util::signal::drain_signalfd(sfd.as_fd()) {
                if sig == libc::SIGCHLD {
                    if let Some(c) = reap_nohang(fg.pid) {
                        code = Some(c);
                    }
                } else if sig == libc::SIGWINCH {
                    if let (Some(m), Some((r, c))) = (&fg.master, console::get_size(&stdin)) {
                        let _ = console::set_size(m, r, c);
                    }
                } else {
                    let _ = kill_raw(fg.pid, sig);
                }
            }
        }
        let Some(m) = master else { continue };
        let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        if revents.get(1).is_some_and(|r| r.intersects(readable)) {
            match nix::unistd::read(m, &mut buf) {
                Ok(0) | Err(_) => master_open = false,
                Ok(n) => {
                    let _ = console::write_all(&stdout, &buf[..n]);
                }
            }
        }
        if revents
            .get(2)
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = console::write_all(m, &[4]);
                }
                Ok(n) => {
                    let _ = console::write_all(m, &buf[..n]);
                }
            }
        }
    }
    if let Some(s) = saved {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &s);
    }
    let _ = berth_util::signal::unblock(&signals);
    code.unwrap_or(255)
}

fn exit_code(st: WaitStatus) -> i32 {
    match st {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    }
}

/// Reaps every exited child; returns the exit code of `pid` if it was among them.
fn reap_nohang(pid: i32) -> Option<i32> {
    let mut result = None;
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(st) => {
                if st.pid() == Some(Pid::from_raw(pid)) {
                    result = Some(exit_code(st));
                }
            }
        }
    }
    result
}

fn wait_plain(pid: i32) -> i32 {
    loop {
        match nix::sys::wait::waitpid(None, None) {
            Err(Errno::EINTR) => continue,
            Err(_) => return 255,
            Ok(st) if st.pid() == Some(Pid::from_raw(pid)) => return exit_code(st),
            Ok(_) => {}
        }
    }
}

/// The cache of compiled seccomp programs under the state root ('@' is not allowed in a container
/// id, see `validate_id`).
const SECCOMP_CACHE: &str = "@seccomp-cache";
