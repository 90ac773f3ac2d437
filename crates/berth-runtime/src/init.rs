//! The container side of `create`, `run` and `exec`: everything that happens in the forked
//! children, inside the new or joined namespaces, up to `execve` of the user's process.
//!
//! Process layout (see ARCHITECTURE.md): the runtime forks stage 1, which joins or creates the
//! namespaces; stage 1 forks stage 2 (so that a new pid namespace applies) and exits; stage 2 is
//! the container's init (or the exec'd process) and execs the user's program.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    #[error("{0}")]
    Other(String),
}

fn sys(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let op = op.into();
    move |source| InitError::Sys { op, source }
}

fn check(rc: libc::c_int, op: impl Into<String>) -> Result<(), InitError> {
    if rc < 0 {
        Err(InitError::Sys {
            op: op.into(),
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
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
}

fn fork() -> Result<libc::pid_t, InitError> {
    // SAFETY: the runtime is single-threaded, so the child may keep running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(InitError::Sys {
            op: "fork".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(pid)
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit handlers or destructors,
    // which belong to the runtime process we were forked from.
    unsafe { libc::_exit(code) }
}

fn setns_fd(fd: i32, flag: libc::c_int, what: &str) -> Result<(), InitError> {
    // SAFETY: setns on a descriptor we own.
    check(
        unsafe { libc::setns(fd, flag) },
        format!("join {what} namespace"),
    )
}

fn setns_path(path: &Path, typ: NamespaceType) -> Result<(), InitError> {
    let f = std::fs::File::open(path).map_err(sys(format!("open namespace {}", path.display())))?;
    setns_fd(f.as_raw_fd(), typ.clone_flag(), typ.proc_name())
}

fn report(chan: &Channel, err: &InitError) {
    let _ = chan.send(&Msg::Error {
        message: err.to_string(),
    });
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
    // Not dumpable: other processes cannot open our /proc/<pid>/exe or memory.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let spec = cfg.spec;
    let mut in_user_ns = false;
    if let Some(ns) = spec.namespace(NamespaceType::User) {
        in_user_ns = true;
        match &ns.path {
            Some(p) => setns_path(p, NamespaceType::User)?,
            None => {
                check(
                    // SAFETY: unshare with a namespace flag.
                    unsafe { libc::unshare(libc::CLONE_NEWUSER) },
                    "create user namespace",
                )?;
                chan.send(&Msg::MapRequest {
                    // SAFETY: getpid cannot fail.
                    pid: unsafe { libc::getpid() },
                })?;
                chan.expect("MapDone", |m| *m == Msg::MapDone)?;
            }
        }
        become_ns_root();
    }
    // Without a mount namespace of its own, the container shares the host's (not the runtime's
    // private one, see protect.rs).
    if !spec.has_namespace(NamespaceType::Mount) {
        if let Some(fd) = crate::protect::host_mount_ns() {
            setns_fd(fd, libc::CLONE_NEWNS, "host mount")?;
        }
    }
    let mut flags = 0;
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
                None => flags |= typ.clone_flag(),
            }
        }
    }
    if flags != 0 {
        // SAFETY: unshare with namespace flags.
        check(unsafe { libc::unshare(flags) }, "create namespaces")?;
    }
    if flags & NamespaceType::Time.clone_flag() != 0 {
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
                .map_err(sys("write timens_offsets"))?;
        }
    }
    let needs_fork = spec.has_namespace(NamespaceType::Pid)
        || spec
            .namespace(NamespaceType::Time)
            .is_some_and(|n| n.path.is_none());
    if needs_fork {
        let pid = fork()?;
        if pid == 0 {
            init_stage2(cfg, chan, in_user_ns)
        }
        chan.send(&Msg::InitPid { pid })?;
        Ok(())
    } else {
        chan.send(&Msg::InitPid {
            // SAFETY: getpid cannot fail.
            pid: unsafe { libc::getpid() },
        })?;
        init_stage2(cfg, chan, in_user_ns)
    }
}

/// In a new user namespace, become its root (when 0 is mapped) so that setup has every capability.
fn become_ns_root() {
    // SAFETY: plain credential syscalls; failure (0 unmapped) leaves credentials unchanged.
    unsafe {
        libc::setresgid(0, 0, 0);
        libc::setresuid(0, 0, 0);
    }
}

/// Stage 2: the container's init. Never returns.
fn init_stage2(cfg: &InitConfig, chan: &Channel, in_user_ns: bool) -> ! {
    match init_stage2_inner(cfg, chan, in_user_ns) {
        Ok(never) => match never {},
        Err(e) => {
            report(chan, &e);
            // After Ready the runtime is gone: the error goes to the container's stderr.
            if READY.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("berth-runtime init: {e}");
            }
            exit_now(127)
        }
    }
}

enum Never {}

static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn init_stage2_inner(
    cfg: &InitConfig,
    chan: &Channel,
    in_user_ns: bool,
) -> Result<Never, InitError> {
    let spec = cfg.spec;
    let linux = spec.linux();
    // SAFETY: setsid has no memory-safety preconditions; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    let has_mnt = spec.has_namespace(NamespaceType::Mount);
    // The runtime moves us into the container's cgroup while we set up the mounts (on cgroup v1 a
    // move waits for an RCU grace period, which would otherwise add to the start-up time). We
    // wait for it before the first cgroup mount, or after the mounts at the latest, and only then
    // make the cgroup namespace (rooted at the container's cgroup).
    let new_cgroup_ns = spec
        .namespace(NamespaceType::Cgroup)
        .is_some_and(|n| n.path.is_none());
    let join = || -> std::io::Result<()> {
        chan.expect("Go", |m| *m == Msg::Go)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if new_cgroup_ns {
            // SAFETY: unshare with a namespace flag.
            if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
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
            new_cgroup_ns: spec
                .namespace(NamespaceType::Cgroup)
                .is_some_and(|n| n.path.is_none()),
            new_net_ns: spec.has_namespace(NamespaceType::Network),
            cgroup_paths: if spec.has_namespace(NamespaceType::Cgroup) {
                Vec::new()
            } else {
                mounts::own_cgroup_paths()
            },
        };
        let _root = mounts::prepare_rootfs(&ctx)?;
    }
    cgroup_join.ensure()?;
    let h = spec.hooks();
    if !h.prestart.is_empty() || !h.create_runtime.is_empty() || !h.create_container.is_empty() {
        chan.send(&Msg::RuntimeHooks)?;
        let state = match chan.expect("HooksDone", |m| matches!(m, Msg::HooksDone { .. }))? {
            Msg::HooksDone { state } => state,
            _ => String::new(),
        };
        hooks::run_hooks("createContainer", &h.create_container, &state)?;
        run_after_start_hooks_state(state);
    }
    if has_mnt && !cfg.no_pivot {
        mounts::pivot_root(&cfg.rootfs)?;
    } else {
        let c = cstring(&cfg.rootfs).map_err(sys("rootfs path"))?;
        // SAFETY: valid path strings.
        check(unsafe { libc::chroot(c.as_ptr()) }, "chroot")?;
        let slash = cstring("/").map_err(sys("chdir"))?;
        // SAFETY: valid path string.
        check(unsafe { libc::chdir(slash.as_ptr()) }, "chdir /")?;
    }
    if cfg.process.terminal {
        setup_terminal(cfg, true)?;
    }
    // Before /proc/sys becomes read-only.
    for (k, v) in &linux.sysctl {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        std::fs::write(&path, v).map_err(sys(format!("sysctl {k}={v}")))?;
    }
    if has_mnt {
        mounts::finish_rootfs(spec, in_user_ns)?;
    }
    if let Some(hn) = spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(hn).map_err(|e| InitError::Sys {
            op: "sethostname".into(),
            source: e.into(),
        })?;
    }
    if let Some(dn) = spec.domainname.as_deref().filter(|h| !h.is_empty()) {
        let c = cstring(dn).map_err(sys("domainname"))?;
        check(
            // SAFETY: valid buffer and length.
            unsafe { libc::setdomainname(c.as_ptr(), dn.len()) },
            "setdomainname",
        )?;
    }
    prepare_process(cfg.process)?;
    let exe = find_executable(cfg.process)?;
    chan.send(&Msg::Ready)?;
    READY.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(fifo) = &cfg.exec_fifo {
        wait_for_start(fifo)?;
    }
    if !h.start_container.is_empty() {
        let state = START_STATE.with(|s| s.borrow().clone());
        hooks::run_hooks("startContainer", &h.start_container, &state)?;
    }
    finalize_and_exec(
        cfg.process,
        cfg.seccomp.as_ref(),
        cfg.preserve_fds,
        in_user_ns,
        &exe,
    )
}

thread_local! {
    static START_STATE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn run_after_start_hooks_state(state: String) {
    START_STATE.with(|s| *s.borrow_mut() = state);
}

fn setup_terminal(cfg: &InitConfig, bind_console: bool) -> Result<(), InitError> {
    let size = cfg.process.console_size.map(|s| (s.height, s.width));
    let pty = console::open_pty("/dev/ptmx", size)?;
    if bind_console {
        // /dev/console is the pty, as in runc.
        if let Ok(root) = std::fs::File::open("/") {
            if let Ok(t) = crate::util::touch_in_root(root.as_raw_fd(), Path::new("/dev/console")) {
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
    let sock = cfg.console_socket.as_ref().ok_or_else(|| {
        InitError::Other("a terminal was requested without a console socket".into())
    })?;
    console::send_fd(sock, pty.master.as_raw_fd(), &pty.slave_name)?;
    drop(pty.master);
    console::attach_stdio(pty.slave.as_raw_fd())?;
    Ok(())
}

fn wait_for_start(fifo: &OwnedFd) -> Result<(), InitError> {
    let fd = fifo.as_raw_fd();
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, -1) };
        if rc < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(sys("wait for start")(std::io::Error::last_os_error()));
        }
        let mut b = [0u8; 1];
        // SAFETY: one-byte buffer.
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
        if n == 1 {
            return Ok(());
        }
        if n == 0 {
            // A writer opened and closed without writing: keep waiting.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Everything that needs privileges and must be reported before `Ready`: oom score, rlimits,
/// the working directory.
fn prepare_process(p: &Process) -> Result<(), InitError> {
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(sys("set oom_score_adj"))?;
    }
    for r in &p.rlimits {
        let res = crate::validate::rlimit_resource(&r.typ)
            .ok_or_else(|| InitError::Other(format!("unknown rlimit {}", r.typ)))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: valid rlimit struct.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(InitError::Other(format!(
                "cannot set {} to soft={} hard={}: {e} (a hard limit cannot be raised here)",
                r.typ, r.soft, r.hard
            )));
        }
    }
    let cwd = &p.cwd;
    if std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd).map_err(sys(format!("create cwd {}", cwd.display())))?;
        if p.user.uid != 0 {
            let _ = std::os::unix::fs::chown(cwd, Some(p.user.uid), Some(p.user.gid));
        }
    }
    std::env::set_current_dir(cwd).map_err(sys(format!("chdir to cwd {}", cwd.display())))?;
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
            return cstring(prog).map_err(sys("program"));
        }
        return Err(InitError::Other(format!(
            "exec: {prog:?}: stat {prog}: no such file or directory or not executable"
        )));
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
            return cstring(&cand).map_err(sys("program"));
        }
    }
    Err(InitError::Other(format!(
        "exec: {prog:?}: executable file not found in $PATH"
    )))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn cap_mask(list: &Option<Vec<String>>) -> Result<u64, InitError> {
    let mut m = 0u64;
    for c in list.iter().flatten() {
        let cap = caps::Capability::from_str(c)
            .map_err(|_| InitError::Other(format!("unknown capability {c}")))?;
        m |= 1u64 << cap.index();
    }
    Ok(m)
}

fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Credentials, capabilities, no_new_privs, seccomp, descriptors, then `execve`.
fn finalize_and_exec(
    p: &Process,
    filter: Option<&CompiledFilter>,
    preserve_fds: i32,
    in_user_ns: bool,
    exe: &CString,
) -> Result<Never, InitError> {
    // Without no_new_privs the filter must be loaded while we still hold CAP_SYS_ADMIN.
    if let Some(f) = filter {
        if !p.no_new_privileges {
            seccomp::load(f)?;
        }
    }
    let caps_cfg = p.capabilities.as_ref();
    if let Some(c) = caps_cfg {
        let bounding = cap_mask(&c.bounding)?;
        for cap in 0..=last_cap() {
            if bounding & (1u64 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                let rc =
                    unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
                if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(sys(format!("drop capability {cap} from the bounding set"))(
                        std::io::Error::last_os_error(),
                    ));
                }
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let u = &p.user;
    let groups: Vec<libc::gid_t> = u.additional_gids.clone();
    // SAFETY: valid pointer and length.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // In a user namespace with setgroups denied, only an empty list is meaningful.
        if !(in_user_ns && groups.is_empty()) {
            return Err(sys("setgroups")(e));
        }
    }
    check(
        // SAFETY: plain credential syscalls.
        unsafe { libc::setresgid(u.gid, u.gid, u.gid) },
        format!("setgid {}", u.gid),
    )?;
    check(
        // SAFETY: plain credential syscalls.
        unsafe { libc::setresuid(u.uid, u.uid, u.uid) },
        format!("setuid {}", u.uid),
    )?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(c) = caps_cfg {
        let eff = cap_mask(&c.effective)?;
        let perm = cap_mask(&c.permitted)?;
        let inh = cap_mask(&c.inheritable)?;
        let mut hdr = CapHeader {
            version: 0x20080522,
            pid: 0,
        };
        let data = [
            CapData {
                effective: eff as u32,
                permitted: perm as u32,
                inheritable: inh as u32,
            },
            CapData {
                effective: (eff >> 32) as u32,
                permitted: (perm >> 32) as u32,
                inheritable: (inh >> 32) as u32,
            },
        ];
        // SAFETY: header and two data structs as capset(2) version 3 expects.
        let rc =
            unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            let held = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
            let missing: Vec<String> = caps::all()
                .into_iter()
                .filter(|c| (perm | eff) & (1u64 << c.index()) != 0 && !held.contains(c))
                .map(|c| c.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(InitError::Other(format!(
                    "capset: {err}: the runtime itself does not hold {}",
                    missing.join(", ")
                )));
            }
            return Err(sys("capset")(err));
        }
        let amb = cap_mask(&c.ambient)?;
        for cap in 0..64u64 {
            if amb & (1 << cap) != 0 {
                // SAFETY: prctl with integer arguments.
                let rc = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if rc < 0 {
                    return Err(sys(format!("raise ambient capability {cap}"))(
                        std::io::Error::last_os_error(),
                    ));
                }
            }
        }
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(u.umask.unwrap_or(0o022) as libc::mode_t) };
    if p.no_new_privileges {
        check(
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "set no_new_privs",
        )?;
        if let Some(f) = filter {
            seccomp::load(f)?;
        }
    }
    // No descriptor of the runtime survives exec, except stdio and the preserved ones.
    let first = 3 + preserve_fds.max(0) as u32;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            4u32, /* CLOSE_RANGE_CLOEXEC */
        )
    };
    reset_signals();
    let args: Vec<CString> = p
        .args
        .iter()
        .map(cstring)
        .collect::<Result<_, _>>()
        .map_err(sys("args"))?;
    let mut env: Vec<CString> = p
        .env
        .iter()
        .map(cstring)
        .collect::<Result<_, _>>()
        .map_err(sys("env"))?;
    if !p.env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(cstring(format!("HOME={}", home_of(u.uid))).map_err(sys("env"))?);
    }
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that live until execve.
    unsafe { libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(InitError::Other(format!(
        "exec {:?}: {}",
        p.args[0],
        std::io::Error::last_os_error()
    )))
}

/// Default dispositions and an empty mask for the user's process: ignored signals survive
/// `execve`, and whoever started the runtime (e.g. `posix_spawn`) may have left some ignored,
/// including glibc's internal 32 and 33, which only the raw syscall can reset.
fn reset_signals() {
    berth_util::signal::reset_dispositions();
    // SAFETY: an empty, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
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
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let mut in_user_ns = false;
        // User namespace first: it grants the capabilities needed to join the others.
        for (typ, fd) in cfg.join.iter().filter(|(t, _)| *t == NamespaceType::User) {
            setns_fd(fd.as_raw_fd(), typ.clone_flag(), typ.proc_name())?;
            in_user_ns = true;
        }
        for (typ, fd) in cfg.join.iter().filter(|(t, _)| *t != NamespaceType::User) {
            setns_fd(fd.as_raw_fd(), typ.clone_flag(), typ.proc_name())?;
        }
        if in_user_ns {
            become_ns_root();
        }
        let pid = fork()?;
        if pid == 0 {
            match exec_stage2(cfg, chan, in_user_ns) {
                Ok(never) => match never {},
                Err(e) => {
                    report(chan, &e);
                    if READY.load(std::sync::atomic::Ordering::Relaxed) {
                        eprintln!("berth-runtime exec: {e}");
                    }
                    exit_now(127)
                }
            }
        }
        chan.send(&Msg::InitPid { pid })?;
        Ok(())
    })();
    match res {
        Ok(()) => exit_now(0),
        Err(e) => {
            report(chan, &e);
            exit_now(1)
        }
    }
}

fn exec_stage2(cfg: &InitConfig, chan: &Channel, in_user_ns: bool) -> Result<Never, InitError> {
    // The runtime puts us in the container's cgroup before anything runs.
    chan.expect("Go", |m| *m == Msg::Go)?;
    // SAFETY: setsid has no preconditions.
    unsafe { libc::setsid() };
    if cfg.process.terminal {
        setup_terminal(cfg, false)?;
    }
    prepare_process(cfg.process)?;
    let exe = find_executable(cfg.process)?;
    chan.send(&Msg::Ready)?;
    READY.store(true, std::sync::atomic::Ordering::Relaxed);
    finalize_and_exec(
        cfg.process,
        cfg.seccomp.as_ref(),
        cfg.preserve_fds,
        in_user_ns,
        &exe,
    )
}
