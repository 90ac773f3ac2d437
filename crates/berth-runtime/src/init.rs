//! The container side of `create`, `run` and `exec`: everything that happens in the forked
//! children, inside the new or joined namespaces, up to `execve` of the user's process.
//!
//! Process layout (see ARCHITECTURE.md): the runtime forks stage 1, which joins or creates the
//! namespaces; stage 1 forks stage 2 (so that a new pid namespace applies) and exits; stage 2 is
//! the container's init (or the exec'd process) and execs the user's program. A `create` whose
//! init needs nothing but its own fork clones it from the runtime directly ([`clone_init`]).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::capabilities::{self, CapSets};
use crate::console;
use crate::hooks;
use crate::mounts::{self, RootfsContext};
use crate::seccomp::{self, CompiledFilter};
use crate::spec::{NamespaceType, Process, Spec};
use crate::sync::{Channel, Msg, SyncError};
use crate::util::cstring;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{op}: {source}")]
    Sys { op: String, source: std::io::Error },
    #[error("cannot set {typ} to soft={soft} hard={hard}: {source} (a hard limit cannot be raised here)")]
    Rlimit {
        typ: String,
        soft: u64,
        hard: u64,
        source: std::io::Error,
    },
    #[error("unknown rlimit {0}")]
    UnknownRlimit(String),
    #[error("exec: {prog:?}: {reason}")]
    Executable { prog: String, reason: String },
    #[error("exec {prog:?}: {source}")]
    Exec {
        prog: String,
        source: std::io::Error,
    },
    #[error("a terminal was requested without a console socket")]
    NoConsoleSocket,
}

fn sys(op: impl Into<String>) -> impl FnOnce(Errno) -> InitError {
    let op = op.into();
    move |e| InitError::Sys {
        op,
        source: e.into(),
    }
}

fn sys_io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let op = op.into();
    move |source| InitError::Sys { op, source }
}

/// What the forked children need; built by the runtime before `fork`, so the children simply
/// inherit it in memory.
pub struct InitConfig<'a> {
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub bundle: &'a Path,
    pub rootfs: PathBuf,
    pub console_socket: Option<UnixStream>,
    /// Read end of the exec fifo (`create`): the init waits here for `start`.
    pub exec_fifo: Option<OwnedFd>,
    pub preserve_fds: i32,
    pub seccomp: Option<CompiledFilter>,
    /// `exec`: the namespaces to join, opened by the runtime (type, descriptor).
    pub join: Vec<(NamespaceType, OwnedFd)>,
    pub no_pivot: bool,
    /// The container's cgroup directories (`create`), shown at its `cgroup` mounts.
    pub cgroup_mounts: Option<berth_cgroups::MountSources>,
    /// The capabilities the process gets (decided by the runtime, see `capabilities`); `None`
    /// leaves them as they are.
    pub caps: Option<CapSets>,
    /// `create`: the container's cgroup, joined by the init itself (see [`SelfAttach`]);
    /// `None`: the runtime moves the init.
    pub attach: Option<SelfAttach>,
}

/// The container's cgroup, opened by the runtime for the init to join by itself: moving a
/// process into a cgroup (`cgroup.procs`, by pid) takes the kernel's global
/// `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period (8–15 ms on a
/// busy host, at every container start), while a thread moving itself (cgroup v1 `tasks`,
/// "0") and a clone straight into a v2 cgroup (`CLONE_INTO_CGROUP`) do not take it.
pub struct SelfAttach {
    /// `tasks` of the container's directory in each v1 hierarchy, open for writing.
    pub v1_tasks: Vec<OwnedFd>,
    /// The v2 directory (for `CLONE_INTO_CGROUP`) and its `cgroup.procs` (written when the
    /// clone cannot go there).
    pub unified: Option<(OwnedFd, OwnedFd)>,
}

impl SelfAttach {
    /// The init's first step: joins the v1 hierarchies (and the v2 one unless `in_v2`, when
    /// it was cloned into it). Before anything else, so that nothing it does escapes the
    /// cgroup's limits.
    fn join(&self, in_v2: bool) -> Result<(), InitError> {
        for fd in &self.v1_tasks {
            nix::unistd::write(fd, b"0").map_err(sys("join the container's cgroup (v1)"))?;
        }
        if let (false, Some((_, procs))) = (in_v2, &self.unified) {
            nix::unistd::write(procs, b"0").map_err(sys("join the container's cgroup"))?;
        }
        Ok(())
    }
}

/// `fork`, straight into the v2 cgroup `cgroup` (`clone3` with `CLONE_INTO_CGROUP`).
fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> Result<nix::unistd::ForkResult, Errno> {
    clone_child(0, Some(cgroup))
}

/// `fork` with the namespace `flags` of `clone(2)` (new namespaces of the child's), into the
/// v2 cgroup `cgroup` when given (`clone3` with `CLONE_INTO_CGROUP`).
fn clone_child(
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> Result<nix::unistd::ForkResult, Errno> {
    use std::os::fd::AsRawFd;
    /// The kernel's `struct clone_args` (the size given tells it which fields there are).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |c| c.as_raw_fd() as u64),
        ..Default::default()
    };
    // SAFETY: as `fork` (no stack, no shared memory: the child continues on a copy of ours):
    // the runtime is single-threaded, so the child may keep running Rust code; `args` lives
    // across the call and its size is the one passed. glibc's cached thread ID is stale in
    // the child, which uses nothing that reads it (its own signals go through `gettid`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(Errno::last()),
        0 => Ok(nix::unistd::ForkResult::Child),
        pid => Ok(nix::unistd::ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
    }
}

fn fork() -> Result<nix::unistd::ForkResult, InitError> {
    // SAFETY: the runtime is single-threaded, so the child may keep running Rust code.
    unsafe { nix::unistd::fork() }.map_err(sys("fork"))
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit handlers or destructors,
    // which belong to the runtime process we were forked from.
    unsafe { libc::_exit(code) }
}

fn clone_flags(typ: NamespaceType) -> CloneFlags {
    CloneFlags::from_bits_retain(typ.clone_flag())
}

fn setns_fd(fd: BorrowedFd<'_>, typ: NamespaceType, what: &str) -> Result<(), InitError> {
    nix::sched::setns(fd, clone_flags(typ)).map_err(sys(format!("join {what} namespace")))
}

fn setns_path(path: &Path, typ: NamespaceType) -> Result<(), InitError> {
    let f =
        std::fs::File::open(path).map_err(sys_io(format!("open namespace {}", path.display())))?;
    setns_fd(f.as_fd(), typ, typ.proc_name())
}

fn set_not_dumpable() {
    // Not dumpable: other processes cannot open our /proc/<pid>/exe or memory.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::debug!("PR_SET_DUMPABLE: {e}");
    }
}

/// Sends the error to the runtime, which shows it to its caller (the init exits next).
fn report(chan: &Channel, err: &InitError) {
    let _ = chan.send(&Msg::Error {
        message: err.to_string(),
        errno: root_errno(err),
    });
}

/// The system error at the root of `err`, if any.
fn root_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(err);
    let mut found = None;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            found = io.raw_os_error().or(found);
        }
        cur = e.source();
    }
    found
}

/// Stage 1 of `create`/`run`. Never returns.
pub fn create_stage1(cfg: &InitConfig, chan: &Channel) -> ! {
    match create_stage1_inner(cfg, chan) {
        Ok(()) => exit_now(0),
        Err(e) => {
            report(chan, &e);
            exit_now(1)
        }
    }
}

fn create_stage1_inner(cfg: &InitConfig, chan: &Channel) -> Result<(), InitError> {
    set_not_dumpable();
    let spec = cfg.spec;
    // The container's mount namespace is a copy of the host's (or the host's itself without one
    // of its own), not of the runtime's private one (see protect.rs), whose mounts are all slaves:
    // binds of the host's shared mounts must stay their peers for `rshared` propagation. First
    // of all: once in a new user namespace the host's mount namespace cannot be joined. The
    // executable stays the read-only bind of the private namespace.
    if spec
        .namespace(NamespaceType::Mount)
        .is_none_or(|ns| ns.path.is_none())
    {
        if let Some(fd) = crate::protect::host_mount_ns() {
            setns_fd(fd, NamespaceType::Mount, "host mount")?;
        }
    }
    let mut in_user_ns = false;
    if let Some(ns) = spec.namespace(NamespaceType::User) {
        in_user_ns = true;
        match &ns.path {
            Some(p) => setns_path(p, NamespaceType::User)?,
            None => {
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
                    .map_err(sys("create user namespace"))?;
                // An unprivileged runtime (or newuidmap, which checks the owner of
                // /proc/PID) can write our maps only while /proc/PID is ours: dumpable.
                let unprivileged = !nix::unistd::geteuid().is_root();
                if unprivileged {
                    let _ = nix::sys::prctl::set_dumpable(true);
                }
                chan.send(&Msg::MapRequest {
                    pid: nix::unistd::getpid().as_raw(),
                })?;
                chan.expect("MapDone", |m| *m == Msg::MapDone)?;
                if unprivileged {
                    set_not_dumpable();
                }
            }
        }
        become_ns_root();
    }
    // A runtime that itself runs in a user namespace (rootless berthd's) makes containers in
    // one even without a namespace of their own: no mknod, locked mount flags.
    in_user_ns = in_user_ns || crate::rootless::running_in_userns();
    let mut flags = CloneFlags::empty();
    let order = [
        NamespaceType::Ipc,
        NamespaceType::Uts,
        NamespaceType::Network,
        NamespaceType::Pid,
        NamespaceType::Mount,
        NamespaceType::Cgroup,
        NamespaceType::Time,
    ];
    for typ in order {
        if let Some(ns) = spec.namespace(typ) {
            match &ns.path {
                Some(p) => setns_path(p, typ)?,
                // A new cgroup namespace is made by the init once it is in its cgroup.
                None if typ == NamespaceType::Cgroup => {}
                None => flags |= clone_flags(typ),
            }
        }
    }
    if !flags.is_empty() {
        nix::sched::unshare(flags).map_err(sys("create namespaces"))?;
    }
    if flags.contains(clone_flags(NamespaceType::Time)) {
        if let Some(offsets) = spec
            .linux()
            .time_offsets
            .as_ref()
            .and_then(|o| o.as_object())
        {
            // Offsets must be written before the first process enters the time namespace.
            let mut text = String::new();
            for (clock, v) in offsets {
                let secs = v.get("secs").and_then(|x| x.as_i64()).unwrap_or(0);
                let nanos = v.get("nanosecs").and_then(|x| x.as_u64()).unwrap_or(0);
                text.push_str(&format!("{clock} {secs} {nanos}\n"));
            }
            std::fs::write("/proc/self/timens_offsets", text)
                .map_err(sys_io("write timens_offsets"))?;
        }
    }
    let needs_fork = spec.has_namespace(NamespaceType::Pid)
        || spec
            .namespace(NamespaceType::Time)
            .is_some_and(|n| n.path.is_none());
    if needs_fork {
        // Into the v2 cgroup at once when the runtime left it to us, else a plain fork (the
        // init then joins it by writing its cgroup.procs). Not from a user namespace: its
        // root may not create there, and a failed clone into a new pid namespace leaves one
        // where no process can be made any more (so only the plain fork's errors are left,
        // which an unsupported kernel's `ENOSYS`, raised first, is not).
        let into = cfg
            .attach
            .as_ref()
            .and_then(|a| a.unified.as_ref())
            .filter(|_| !in_user_ns);
        let (forked, in_v2) = match into.map(|(dir, _)| fork_into_cgroup(dir.as_fd())) {
            Some(Ok(r)) => (r, true),
            Some(Err(_)) | None => (fork()?, false),
        };
        match forked {
            nix::unistd::ForkResult::Child => init_stage2(cfg, chan, in_user_ns, in_v2),
            nix::unistd::ForkResult::Parent { child } => {
                chan.send(&Msg::InitPid {
                    pid: child.as_raw(),
                })?;
                Ok(())
            }
        }
    } else {
        chan.send(&Msg::InitPid {
            pid: nix::unistd::getpid().as_raw(),
        })?;
        init_stage2(cfg, chan, in_user_ns, false)
    }
}

/// Whether `create` clones the container's init straight from the runtime, without stage 1
/// (one process less to start on every create): when the init needs a fork of its own for
/// its PID namespace and nothing needs a process before it: no user namespace (made and
/// mapped first), no time namespace (its offsets are written before any process enters
/// it), a runtime that is neither in a protective mount namespace of its own (a
/// container's is a copy of the host's, which stage 1 joins first) nor in a user namespace
/// (rootless).
pub fn can_clone_init(spec: &Spec) -> bool {
    spec.has_namespace(NamespaceType::Pid)
        && !spec.has_namespace(NamespaceType::User)
        && !spec.has_namespace(NamespaceType::Time)
        && crate::protect::host_mount_ns().is_none()
        && !crate::rootless::running_in_userns()
}

/// The namespaces stage 1 joins by path, in its order; the PID namespace is the runtime's
/// business in [`clone_init`].
const JOINED_BY_INIT: [NamespaceType; 5] = [
    NamespaceType::Ipc,
    NamespaceType::Uts,
    NamespaceType::Network,
    NamespaceType::Mount,
    NamespaceType::Cgroup,
];

/// Clones the container's init from the runtime itself (see [`can_clone_init`]), in the
/// runtime: the init's PID namespace, joined or made, is our children's for the clone only
/// (ours again right after, for hooks and anything else we start); its new namespaces are
/// the clone's; those it joins by path are its first steps ([`cloned_init`]). We are not
/// dumpable from here on, so that the init never is: a process of a PID namespace it joins
/// could otherwise open it before it could say so itself. Returns in both: the child runs
/// [`cloned_init`] next; the parent gets whether the init is in its v2 cgroup already.
pub fn clone_init(cfg: &InitConfig) -> Result<(nix::unistd::ForkResult, bool), InitError> {
    let spec = cfg.spec;
    set_not_dumpable();
    let ours =
        std::fs::File::open("/proc/self/ns/pid").map_err(sys_io("open our PID namespace"))?;
    let path = spec
        .namespace(NamespaceType::Pid)
        .and_then(|n| n.path.clone());
    let mut flags = 0;
    for typ in [
        NamespaceType::Ipc,
        NamespaceType::Uts,
        NamespaceType::Network,
        NamespaceType::Mount,
    ] {
        if spec.namespace(typ).is_some_and(|n| n.path.is_none()) {
            flags |= typ.clone_flag() as u64;
        }
    }
    let into = cfg
        .attach
        .as_ref()
        .and_then(|a| a.unified.as_ref())
        .map(|(dir, _)| dir.as_fd());
    // Into the v2 cgroup at once when the runtime left it to us, else a plain clone (the init
    // then joins it by writing its cgroup.procs). A clone that fails after its pid was taken
    // leaves a new PID namespace where no process can be made any more: each attempt has a
    // namespace of its own.
    let attempt = |cgroup: Option<BorrowedFd<'_>>| {
        match &path {
            Some(p) => setns_path(p, NamespaceType::Pid)?,
            None => nix::sched::unshare(CloneFlags::CLONE_NEWPID)
                .map_err(sys("create PID namespace"))?,
        }
        let cloned = clone_child(flags, cgroup);
        if !matches!(cloned, Ok(nix::unistd::ForkResult::Child)) {
            setns_fd(ours.as_fd(), NamespaceType::Pid, "the runtime's own PID")?;
        }
        Ok::<_, InitError>(cloned)
    };
    if let Some(dir) = into {
        if let Ok(r) = attempt(Some(dir))? {
            return Ok((r, true));
        }
    }
    let r = attempt(None)?.map_err(sys("clone the container's init"))?;
    Ok((r, false))
}

/// The init that [`clone_init`] cloned: joins the namespaces given by path as stage 1 does,
/// then goes on as stage 2. Never returns.
pub fn cloned_init(cfg: &InitConfig, chan: &Channel, in_v2: bool) -> ! {
    run_stage2(chan, "berth-runtime init", |ready| {
        for typ in JOINED_BY_INIT {
            if let Some(p) = cfg.spec.namespace(typ).and_then(|n| n.path.as_ref()) {
                setns_path(p, typ)?;
            }
        }
        if let Some(a) = &cfg.attach {
            a.join(in_v2)?;
        }
        init_stage2_inner(cfg, chan, false, ready)
    })
}

/// In a new user namespace, become its root (when 0 is mapped) so that setup has every capability.
fn become_ns_root() {
    // Failure (0 unmapped) leaves the credentials unchanged.
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    let _ = nix::unistd::setresgid(root_gid, root_gid, root_gid);
    let _ = nix::unistd::setresuid(root_uid, root_uid, root_uid);
}

/// Stage 2: the container's init. Never returns.
/// `in_v2`: cloned into the container's v2 cgroup already.
fn init_stage2(cfg: &InitConfig, chan: &Channel, in_user_ns: bool, in_v2: bool) -> ! {
    run_stage2(chan, "berth-runtime init", |ready| {
        if let Some(a) = &cfg.attach {
            a.join(in_v2)?;
        }
        init_stage2_inner(cfg, chan, in_user_ns, ready)
    })
}

/// Runs a stage 2 (`stage`, told through its argument when Ready was sent) and exits 127 on
/// its error, reported to the runtime; after Ready the runtime is gone, so the error goes to
/// the process's stderr too (`who: error`).
fn run_stage2(
    chan: &Channel,
    who: &str,
    stage: impl FnOnce(&mut bool) -> Result<Never, InitError>,
) -> ! {
    let mut ready = false;
    match stage(&mut ready) {
        Ok(never) => match never {},
        Err(e) => {
            report(chan, &e);
            if ready {
                eprintln!("{who}: {e}");
            }
            exit_now(127)
        }
    }
}

enum Never {}

fn init_stage2_inner(
    cfg: &InitConfig,
    chan: &Channel,
    in_user_ns: bool,
    ready: &mut bool,
) -> Result<Never, InitError> {
    let spec = cfg.spec;
    let linux = spec.linux();
    // Failure (already a session leader) is harmless.
    let _ = nix::unistd::setsid();
    let has_mnt = spec.has_namespace(NamespaceType::Mount);
    // The runtime moves us into the container's cgroup while we set up the mounts (on cgroup v1 a
    // move waits for an RCU grace period, which would otherwise add to the start-up time). We
    // wait for it before the first fresh cgroup mount, or after the mounts at the latest, and
    // only then make the cgroup namespace (rooted at the container's cgroup).
    let new_cgroup_ns = spec
        .namespace(NamespaceType::Cgroup)
        .is_some_and(|n| n.path.is_none());
    let join = || -> Result<(), mounts::MountError> {
        chan.expect("Go", |m| *m == Msg::Go)
            .map_err(|e| mounts::MountError::CgroupJoin(Box::new(e)))?;
        if new_cgroup_ns {
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
                .map_err(|e| mounts::path_err("create cgroup namespace", "")(e.into()))?;
        }
        Ok(())
    };
    let cgroup_join = mounts::CgroupJoin::new(&join);
    if has_mnt {
        let ctx = RootfsContext {
            cgroup_join: &cgroup_join,
            spec,
            bundle: cfg.bundle,
            rootfs: cfg.rootfs.clone(),
            in_user_ns,
            cgroupns: spec.has_namespace(NamespaceType::Cgroup),
            new_net_ns: spec.has_namespace(NamespaceType::Network),
            cgroups: cfg.cgroup_mounts.as_ref(),
        };
        let _root = mounts::prepare_rootfs(&ctx)?;
    }
    cgroup_join.ensure()?;
    let h = spec.hooks();
    let mut start_state = String::new();
    if !h.prestart.is_empty() || !h.create_runtime.is_empty() || !h.create_container.is_empty() {
        chan.send(&Msg::RuntimeHooks)?;
        if let Msg::HooksDone { state } =
            chan.expect("HooksDone", |m| matches!(m, Msg::HooksDone { .. }))?
        {
            start_state = state;
        }
        hooks::run_hooks("createContainer", &h.create_container, &start_state)?;
    }
    if has_mnt && !cfg.no_pivot {
        mounts::pivot_root(&cfg.rootfs)?;
    } else {
        nix::unistd::chroot(&cfg.rootfs).map_err(sys("chroot"))?;
        std::env::set_current_dir("/").map_err(sys_io("chdir /"))?;
    }
    if cfg.process.terminal {
        setup_terminal(cfg, true)?;
    }
    // Before /proc/sys becomes read-only.
    for (k, v) in &linux.sysctl {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(sys_io(format!("sysctl {k}={v}")))?;
    }
    if has_mnt {
        mounts::finish_rootfs(spec, in_user_ns)?;
    }
    if let Some(hn) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hn).map_err(sys("sethostname"))?;
    }
    if let Some(dn) = spec.domainname.as_deref().filter(|h| !h.is_empty()) {
        rustix::system::setdomainname(dn.as_bytes())
            .map_err(|e| sys_io("setdomainname")(e.into()))?;
    }
    prepare_process(cfg.process, true)?;
    let exe = find_executable(cfg.process)?;
    chan.send(&Msg::Ready)?;
    *ready = true;
    if let Some(fifo) = &cfg.exec_fifo {
        wait_for_start(fifo)?;
    }
    if !h.start_container.is_empty() {
        hooks::run_hooks("startContainer", &h.start_container, &start_state)?;
    }
    finalize_and_exec(cfg, in_user_ns, &exe)
}

fn setup_terminal(cfg: &InitConfig, bind_console: bool) -> Result<(), InitError> {
    let size = cfg.process.console_size.map(|s| (s.height, s.width));
    let pty = console::open_pty("/dev/ptmx", size)?;
    if bind_console {
        // /dev/console is the pty, as in runc.
        if let Ok(root) = std::fs::File::open("/") {
            if let Ok(t) = berth_util::root::touch_in_root(&root, Path::new("/dev/console")) {
                let _ = mounts::sys_mount(
                    Some(&pty.slave_name),
                    &crate::util::fd_path(&t),
                    None,
                    libc::MS_BIND,
                    None,
                );
            }
        }
    }
    let sock = cfg
        .console_socket
        .as_ref()
        .ok_or(InitError::NoConsoleSocket)?;
    console::send_fd(sock, pty.master.as_fd(), &pty.slave_name)?;
    drop(pty.master);
    console::attach_stdio(pty.slave)?;
    Ok(())
}

fn wait_for_start(fifo: &OwnedFd) -> Result<(), InitError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys("wait for start")(e)),
            Ok(_) => {}
        }
        let mut b = [0u8; 1];
        match nix::unistd::read(fifo, &mut b) {
            Ok(1) => return Ok(()),
            // A writer opened and closed without writing: keep waiting.
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(sys("wait for start")(e)),
        }
    }
}

/// Everything that needs privileges and must be reported before `Ready`: oom score, rlimits,
/// the working directory (made when missing for the container's process, as runc does; an
/// exec's must exist).
fn prepare_process(p: &Process, create_cwd: bool) -> Result<(), InitError> {
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(sys_io("set oom_score_adj"))?;
    }
    for r in &p.rlimits {
        let res = crate::validate::rlimit_resource(&r.typ)
            .ok_or_else(|| InitError::UnknownRlimit(r.typ.clone()))?;
        nix::sys::resource::setrlimit(res, r.soft, r.hard).map_err(|e| InitError::Rlimit {
            typ: r.typ.clone(),
            soft: r.soft,
            hard: r.hard,
            source: e.into(),
        })?;
    }
    let cwd = &p.cwd;
    if create_cwd && std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd).map_err(sys_io(format!("create cwd {}", cwd.display())))?;
        if p.user.uid != 0 {
            let _ = std::os::unix::fs::chown(cwd, Some(p.user.uid), Some(p.user.gid));
        }
    }
    std::env::set_current_dir(cwd).map_err(sys_io(format!(
        "chdir to cwd ({:?}) set in config.json failed",
        cwd.display().to_string()
    )))?;
    Ok(())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn find_executable(p: &Process) -> Result<CString, InitError> {
    let prog = &p.args[0];
    let is_exec = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        if is_exec(Path::new(prog)) {
            return cstring(prog).map_err(sys_io("program"));
        }
        // Go's `exec.LookPath` (runc's): a missing file is stat's error, anything else that
        // cannot run (not executable, a directory) is a permission error. Clients read the
        // exit status from these words (127, 126).
        let reason = match std::fs::metadata(prog) {
            Err(e) => format!("stat {prog}: {}", go_errno_text(&e)),
            Ok(_) => "permission denied".to_string(),
        };
        return Err(InitError::Executable {
            prog: prog.clone(),
            reason,
        });
    }
    let path = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(prog);
        if is_exec(&cand) {
            return cstring(&cand).map_err(sys_io("program"));
        }
    }
    Err(InitError::Executable {
        prog: prog.clone(),
        reason: "executable file not found in $PATH".into(),
    })
}

/// An I/O error's text as Go prints an errno (`no such file or directory`).
fn go_errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        _ => e.to_string(),
    }
}

fn capability(cap: u8) -> CapabilitySet {
    CapabilitySet::from_bits_retain(1u64 << cap)
}

/// Credentials, capabilities, no_new_privs, seccomp, descriptors, then `execve`.
fn finalize_and_exec(
    cfg: &InitConfig,
    in_user_ns: bool,
    exe: &CString,
) -> Result<Never, InitError> {
    let p = cfg.process;
    let filter = cfg.seccomp.as_ref();
    // Without no_new_privs the filter must be loaded while we still hold CAP_SYS_ADMIN.
    if let Some(f) = filter {
        if !p.no_new_privileges {
            seccomp::load(f)?;
        }
    }
    if let Some(c) = &cfg.caps {
        for cap in 0..=capabilities::last_cap() {
            if c.bounding & (1u64 << cap) == 0 {
                match rustix::thread::remove_capability_from_bounding_set(capability(cap)) {
                    Ok(()) | Err(rustix::io::Errno::INVAL) => {}
                    Err(e) => {
                        return Err(sys_io(format!(
                            "drop capability {cap} from the bounding set"
                        ))(e.into()))
                    }
                }
            }
        }
    }
    rustix::thread::set_keep_capabilities(true).map_err(|e| sys_io("PR_SET_KEEPCAPS")(e.into()))?;
    let u = &p.user;
    let groups: Vec<Gid> = u
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // In a user namespace with setgroups denied, only an empty list is meaningful.
        if !(in_user_ns && groups.is_empty()) {
            return Err(sys("setgroups")(e));
        }
    }
    let gid = Gid::from_raw(u.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(sys(format!("setgid {}", u.gid)))?;
    let uid = Uid::from_raw(u.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(sys(format!("setuid {}", u.uid)))?;
    rustix::thread::set_keep_capabilities(false)
        .map_err(|e| sys_io("PR_SET_KEEPCAPS")(e.into()))?;
    if let Some(c) = &cfg.caps {
        let sets = CapabilitySets {
            effective: CapabilitySet::from_bits_retain(c.effective),
            permitted: CapabilitySet::from_bits_retain(c.permitted),
            inheritable: CapabilitySet::from_bits_retain(c.inheritable),
        };
        rustix::thread::set_capabilities(None, sets).map_err(|e| sys_io("capset")(e.into()))?;
        for cap in 0..64u8 {
            if c.ambient & (1u64 << cap) != 0 {
                rustix::thread::configure_capability_in_ambient_set(capability(cap), true)
                    .map_err(|e| sys_io(format!("raise ambient capability {cap}"))(e.into()))?;
            }
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        u.umask.unwrap_or(0o022),
    ));
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(sys("set no_new_privs"))?;
        if let Some(f) = filter {
            seccomp::load(f)?;
        }
    }
    // No descriptor of the runtime survives exec, except stdio and the preserved ones.
    let first = 3 + cfg.preserve_fds.max(0) as u32;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing, it only marks descriptors
    // close-on-exec; no Rust object's descriptor becomes invalid before the exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    reset_signals();
    let args: Vec<CString> = p
        .args
        .iter()
        .map(cstring)
        .collect::<Result<_, _>>()
        .map_err(sys_io("args"))?;
    let mut env: Vec<CString> = p
        .env
        .iter()
        .map(cstring)
        .collect::<Result<_, _>>()
        .map_err(sys_io("env"))?;
    // As runc: a `HOME` that is unset or empty (`-e HOME=`) becomes the user's home.
    let home = cstring(format!("HOME={}", home_of(u.uid))).map_err(sys_io("env"))?;
    match p.env.iter().rposition(|e| e.starts_with("HOME=")) {
        Some(i) if p.env[i] == "HOME=" => env[i] = home,
        Some(_) => {}
        None => env.push(home),
    }
    let err = match nix::unistd::execve::<&CStr, &CStr>(
        exe,
        &args.iter().map(CString::as_c_str).collect::<Vec<_>>(),
        &env.iter().map(CString::as_c_str).collect::<Vec<_>>(),
    ) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(InitError::Exec {
        prog: p.args[0].clone(),
        source: err.into(),
    })
}

/// Default dispositions and an empty mask for the user's process: ignored signals survive
/// `execve`, and whoever started the runtime (e.g. `posix_spawn`) may have left some ignored,
/// including glibc's internal 32 and 33, which only the raw syscall can reset.
fn reset_signals() {
    berth_util::signal::reset_dispositions();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// The home directory of `uid` from the container's /etc/passwd, or `/`.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Stage 1 of `exec`: join the container's namespaces, fork into its pid namespace. Never returns.
pub fn exec_stage1(cfg: &InitConfig, chan: &Channel) -> ! {
    let res = (|| -> Result<(), InitError> {
        set_not_dumpable();
        let mut in_user_ns = false;
        // User namespace first: it grants the capabilities needed to join the others.
        for (typ, fd) in cfg.join.iter().filter(|(t, _)| *t == NamespaceType::User) {
            setns_fd(fd.as_fd(), *typ, typ.proc_name())?;
            in_user_ns = true;
        }
        for (typ, fd) in cfg.join.iter().filter(|(t, _)| *t != NamespaceType::User) {
            setns_fd(fd.as_fd(), *typ, typ.proc_name())?;
        }
        if in_user_ns {
            become_ns_root();
        }
        let in_user_ns = in_user_ns || crate::rootless::running_in_userns();
        match fork()? {
            nix::unistd::ForkResult::Child => run_stage2(chan, "berth-runtime exec", |ready| {
                exec_stage2(cfg, chan, in_user_ns, ready)
            }),
            nix::unistd::ForkResult::Parent { child } => {
                chan.send(&Msg::InitPid {
                    pid: child.as_raw(),
                })?;
                Ok(())
            }
        }
    })();
    match res {
        Ok(()) => exit_now(0),
        Err(e) => {
            report(chan, &e);
            exit_now(1)
        }
    }
}

fn exec_stage2(
    cfg: &InitConfig,
    chan: &Channel,
    in_user_ns: bool,
    ready: &mut bool,
) -> Result<Never, InitError> {
    // The runtime puts us in the container's cgroup before anything runs.
    chan.expect("Go", |m| *m == Msg::Go)?;
    let _ = nix::unistd::setsid();
    if cfg.process.terminal {
        setup_terminal(cfg, false)?;
    }
    prepare_process(cfg.process, false)?;
    let exe = find_executable(cfg.process)?;
    chan.send(&Msg::Ready)?;
    *ready = true;
    finalize_and_exec(cfg, in_user_ns, &exe)
}
