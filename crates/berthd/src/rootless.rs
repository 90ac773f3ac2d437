//! berthd run by an ordinary user (rootless).
//!
//! Started by a user other than root, berthd first builds its own user namespace: it forks;
//! the child unshares a user namespace, the parent maps it with `newuidmap`/`newgidmap`
//! (Debian's `uidmap`; the user's own id becomes 0, its `/etc/subuid` and `/etc/subgid`
//! ranges 1…N), and the child — root of that namespace, in a mount namespace of its own — goes
//! on as the daemon. The parent stays as a supervisor: it forwards signals and exits with the
//! daemon's status. Containers, shims and the runtime run inside that namespace, so no process
//! of the user ever holds a capability in the initial namespace.
//!
//! A later daemon of the same user joins that namespace (and the mount namespace) while a
//! process of the earlier one still runs in it (its shims, its containers: live restore), as
//! recorded in `$XDG_RUNTIME_DIR/berth/rootless-namespaces`; only a namespace's owner in its
//! parent namespace may enter it, so a fresh sibling namespace could not reach them.
//!
//! Paths follow the XDG base directories: data root `$XDG_DATA_HOME/berth`
//! (`~/.local/share/berth`), exec root `$XDG_RUNTIME_DIR/berth`, the API on
//! `$XDG_RUNTIME_DIR/berth/berth.sock` (where the `berth` CLI of the same user looks when no
//! address is given), the configuration `$XDG_CONFIG_HOME/berth/daemon.json`.
//!
//! The daemon also gets a network namespace of its own with a `slirp4netns` uplink when that
//! is installed (see [`crate::rootless_net`]): bridges, user networks and published ports then
//! work as they do as root. Without it containers get the host's network, or `none`.
//!
//! Not yet: resource limits (no cgroup is delegated on cgroup v1; the runtime refuses limits
//! it cannot apply).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use berth_runtime::rootless::find_in_path;

use crate::rootless_net::NetMode;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True in a daemon that entered its rootless user namespace (see the module docs).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The daemon is root of its namespaces and runs root's tools (`nft`, `iptables-restore`),
/// which an ordinary user's `PATH` leaves out (Debian's: no `/usr/sbin`, `/sbin`); they are
/// added after the user's own directories. Called first thing in `main`, single-threaded.
fn add_sbin_to_path() {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        std::env::set_var("PATH", joined);
    }
}

/// True when berthd must go rootless: started by a user other than root.
pub fn wanted() -> bool {
    !rustix::process::geteuid().is_root()
}

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("rootless berthd needs {tool} (from the `uidmap` package: apt-get install uidmap) to map the subordinate ids of /etc/subuid and /etc/subgid")]
    MissingTool { tool: &'static str },
    #[error("rootless berthd: user {user} (uid {uid}) has no range in {file}: add one, e.g. `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` (as root)")]
    NoRange {
        user: String,
        uid: u32,
        file: &'static str,
    },
    #[error("rootless berthd: {0} is not set (it locates the run-time directory and the socket); log in with a session (e.g. pam_systemd) or set it to a directory only you can write")]
    NoEnv(&'static str),
    #[error("rootless berthd: {op}: {source}")]
    Sys {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("rootless berthd: {tool} {args}: {message}")]
    MapFailed {
        tool: &'static str,
        args: String,
        message: String,
    },
    #[error("rootless berthd: the daemon process exited while its user namespace was set up")]
    ChildGone,
    #[error("rootless berthd: {0}")]
    Network(#[from] crate::rootless_net::NetError),
}

fn sys(op: &'static str) -> impl FnOnce(std::io::Error) -> RootlessError {
    move |source| RootlessError::Sys { op, source }
}

fn errno(op: &'static str) -> impl FnOnce(nix::Error) -> RootlessError {
    move |e| RootlessError::Sys {
        op,
        source: e.into(),
    }
}

/// A subordinate id range: `count` ids from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    pub start: u32,
    pub count: u32,
}

/// The first range of the user (by name or uid) in a `/etc/subuid`-format text.
pub fn parse_subids(text: &str, name: &str, id: u32) -> Option<SubIds> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let start = f.next()?.trim().parse().ok()?;
        let count: u32 = f.next()?.trim().parse().ok()?;
        (count > 0).then_some(SubIds { start, count })
    })
}

fn subids(file: &'static str, user: &str, id: u32, uid: u32) -> Result<SubIds, RootlessError> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    parse_subids(&text, user, id).ok_or_else(|| RootlessError::NoRange {
        user: user.to_string(),
        uid,
        file,
    })
}

fn env_dir(name: &'static str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> PathBuf {
    env_dir("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// The rootless defaults (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub config_file: PathBuf,
}

impl Paths {
    pub fn from_env() -> Result<Paths, RootlessError> {
        let run = env_dir("XDG_RUNTIME_DIR").ok_or(RootlessError::NoEnv("XDG_RUNTIME_DIR"))?;
        Ok(Paths {
            data_root: env_dir("XDG_DATA_HOME")
                .unwrap_or_else(|| home().join(".local/share"))
                .join("berth"),
            exec_root: run.join("berth"),
            config_file: env_dir("XDG_CONFIG_HOME")
                .unwrap_or_else(|| home().join(".config"))
                .join("berth/daemon.json"),
        })
    }

    /// `unix://<exec root>/berth.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.exec_root.join("berth.sock").display())
    }
}

/// The name of the user `uid` through NSS (as `newuidmap` finds it in `/etc/subuid`: a
/// directory service's users too), or the number.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Builds the user namespace and returns in the daemon (root of it); the calling process
/// stays behind as the supervisor and never returns. Call before any thread starts.
pub fn enter() -> Result<(), RootlessError> {
    add_sbin_to_path();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let user = user_name(uid);
    let newuidmap =
        find_in_path("newuidmap").ok_or(RootlessError::MissingTool { tool: "newuidmap" })?;
    let newgidmap =
        find_in_path("newgidmap").ok_or(RootlessError::MissingTool { tool: "newgidmap" })?;
    let subuid = subids("/etc/subuid", &user, uid, uid)?;
    let subgid = subids("/etc/subgid", &user, gid, uid)?;
    // Checked here so that the error comes before anything starts.
    let paths = Paths::from_env()?;
    crate::rootless_net::remember_host_settings();
    let net = crate::rootless_net::mode()?;
    let record = paths.exec_root.join(NS_RECORD);
    let (to_child_r, to_child_w) = pipe()?;
    let (to_parent_r, to_parent_w) = pipe()?;
    // The namespace of an earlier daemon whose shims and containers still run: the new daemon
    // joins it, so that it can still reach them (a sibling namespace could not enter theirs).
    if let Some(ns) = live_namespace(&record, uid) {
        // The daemon's own network namespace, with its helper (started again if it died).
        let slirp = match (&ns.net, net) {
            (None, _) => None,
            (Some(_), NetMode::Slirp4netns(p)) => Some(p),
            (Some(_), NetMode::Host) => Some(
                berth_util::fs::find_in_path("slirp4netns")
                    .ok_or(crate::rootless_net::NetError::NoHelper)?,
            ),
        };
        // SAFETY: called first thing in main, single-threaded: the child may run Rust code.
        return match unsafe { nix::unistd::fork() }.map_err(errno("fork"))? {
            nix::unistd::ForkResult::Child => {
                drop((to_child_w, to_parent_r));
                nix::sched::setns(&ns.user, nix::sched::CloneFlags::CLONE_NEWUSER)
                    .map_err(errno("join the user namespace of the running containers"))?;
                nix::sched::setns(&ns.mnt, nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(errno("join the mount namespace of the running containers"))?;
                if let Some(n) = &ns.net {
                    nix::sched::setns(n, nix::sched::CloneFlags::CLONE_NEWNET).map_err(errno(
                        "join the network namespace of the running containers",
                    ))?;
                }
                drop(ns);
                become_root()?;
                if slirp.is_some() {
                    child_network(&to_parent_w, &to_child_r, &paths.exec_root)?;
                }
                ACTIVE.store(true, Ordering::Relaxed);
                Ok(())
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop((to_child_r, to_parent_w, ns));
                let _helper = parent_network(
                    (&to_parent_r, &to_child_w),
                    slirp.as_deref(),
                    child,
                    &paths.exec_root,
                    true,
                )?;
                std::process::exit(supervise(child))
            }
        };
    }
    let slirp = match net {
        NetMode::Slirp4netns(p) => Some(p),
        NetMode::Host => None,
    };
    // SAFETY: called first thing in main, single-threaded: the child may run Rust code.
    match unsafe { nix::unistd::fork() }.map_err(errno("fork"))? {
        nix::unistd::ForkResult::Child => {
            drop(to_child_w);
            drop(to_parent_r);
            child(to_child_r, to_parent_w, &record, slirp.is_some(), &paths)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(to_child_r);
            drop(to_parent_w);
            let pid = child.as_raw();
            let mapped = (|| {
                read_byte(&to_parent_r)?.ok_or(RootlessError::ChildGone)?;
                let maps = |id: u32, sub: SubIds| {
                    vec![
                        pid.to_string(),
                        "0".into(),
                        id.to_string(),
                        "1".into(),
                        "1".into(),
                        sub.start.to_string(),
                        sub.count.to_string(),
                    ]
                };
                run_map("newuidmap", &newuidmap, &maps(uid, subuid))?;
                run_map("newgidmap", &newgidmap, &maps(gid, subgid))
            })();
            let _ = write_byte(&to_child_w, if mapped.is_ok() { 1 } else { 0 });
            if let Err(e) = mapped {
                drop(to_child_w);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
            // The daemon's network namespace gets its uplink.
            let _helper = parent_network(
                (&to_parent_r, &to_child_w),
                slirp.as_deref(),
                child,
                &paths.exec_root,
                false,
            )?;
            drop(to_child_w);
            std::process::exit(supervise(child));
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RootlessError> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| sys("pipe")(e.into()))
}

fn read_byte(fd: &OwnedFd) -> Result<Option<u8>, RootlessError> {
    let mut b = [0u8; 1];
    loop {
        match rustix::io::read(fd, &mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(sys("sync pipe")(e.into())),
        }
    }
}

fn write_byte(fd: &OwnedFd, b: u8) -> Result<(), RootlessError> {
    rustix::io::write(fd, &[b])
        .map(|_| ())
        .map_err(|e| sys("sync pipe")(e.into()))
}

fn run_map(tool: &'static str, path: &Path, args: &[String]) -> Result<(), RootlessError> {
    let failed = |message: String| RootlessError::MapFailed {
        tool,
        args: args.join(" "),
        message,
    };
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// The supervisor's side of the network handshake (with a helper to run): once the daemon
/// is in its network namespace (`joined`: an earlier daemon's), the helper is started for it
/// (unless one serves it already); the returned writer of its exit FIFO is kept while the
/// supervisor runs. On failure the daemon exits and is reaped.
fn parent_network(
    (from_child, to_child): (&OwnedFd, &OwnedFd),
    slirp: Option<&Path>,
    child: nix::unistd::Pid,
    exec_root: &Path,
    joined: bool,
) -> Result<Option<OwnedFd>, RootlessError> {
    let Some(slirp) = slirp else {
        return Ok(None);
    };
    let helper = read_byte(from_child)
        .and_then(|b| b.ok_or(RootlessError::ChildGone))
        .and_then(|_| {
            let pid = child.as_raw();
            Ok(crate::rootless_net::ensure_helper(
                slirp, pid, exec_root, joined,
            )?)
        });
    let _ = write_byte(to_child, if helper.is_ok() { 1 } else { 0 });
    if helper.is_err() {
        let _ = nix::sys::wait::waitpid(child, None);
    }
    helper.map(Some)
}

/// The daemon's side of the network handshake (see [`parent_network`]).
fn child_network(
    to_parent: &OwnedFd,
    from_parent: &OwnedFd,
    exec_root: &Path,
) -> Result<(), RootlessError> {
    write_byte(to_parent, 2)?;
    if read_byte(from_parent)? != Some(1) {
        // The supervisor reports why.
        std::process::exit(1);
    }
    crate::rootless_net::joined(exec_root)?;
    Ok(())
}

/// The daemon's side: unshare the user namespace, wait for the maps, become its root, make a
/// mount namespace (and with a network helper, a network namespace) of its own.
fn child(
    from_parent: OwnedFd,
    to_parent: OwnedFd,
    record: &Path,
    own_net: bool,
    paths: &Paths,
) -> Result<(), RootlessError> {
    // The daemon stops with its supervisor.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let fail = |e: RootlessError| -> ! {
        eprintln!("berthd: {e}");
        std::process::exit(1)
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(errno("create the user namespace"))
        .unwrap_or_else(|e| fail(e));
    write_byte(&to_parent, 1).unwrap_or_else(|e| fail(e));
    if read_byte(&from_parent).unwrap_or_else(|e| fail(e)) != Some(1) {
        // The supervisor reports why.
        std::process::exit(1);
    }
    become_root()?;
    let mut flags = nix::sched::CloneFlags::CLONE_NEWNS;
    if own_net {
        flags |= nix::sched::CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(errno("create the mount and network namespaces"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(errno("make / a slave mount"))?;
    // Where a later daemon finds this namespace while anything still runs in it.
    if let Err(e) = record_namespace(record, own_net) {
        eprintln!(
            "berthd: recording the namespace in {}: {e}",
            record.display()
        );
    }
    if own_net {
        child_network(&to_parent, &from_parent, &paths.exec_root)?;
    }
    drop((to_parent, from_parent));
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(())
}

/// Root of the (joined or new) namespace, without the user's supplementary groups (unmapped
/// there, they would show as nogroup).
fn become_root() -> Result<(), RootlessError> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(errno("setresgid 0"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(errno("setresuid 0"))?;
    let _ = nix::unistd::setgroups(&[]);
    Ok(())
}

/// The record of the daemon's namespaces, in the exec root.
const NS_RECORD: &str = "rootless-namespaces";

/// `dev:inode` of one of the process's namespaces.
fn ns_key(pid: &str, ns: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/ns/{ns}")).ok()?;
    Some(format!("{}:{}", m.dev(), m.ino()))
}

/// `USER MNT [NET]`: the daemon's namespaces (its network namespace when it has its own).
fn record_namespace(record: &Path, own_net: bool) -> std::io::Result<()> {
    let (Some(user), Some(mnt)) = (ns_key("self", "user"), ns_key("self", "mnt")) else {
        return Err(std::io::Error::other("cannot read /proc/self/ns"));
    };
    let mut line = format!("{user} {mnt}");
    if own_net {
        let net = ns_key("self", "net").ok_or_else(|| std::io::Error::other("no netns"))?;
        line = format!("{line} {net}");
    }
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir)?;
    }
    berth_util::fs::replace_file_nosync(record, format!("{line}\n").as_bytes())
}

/// The recorded namespaces, opened.
struct LiveNamespace {
    user: OwnedFd,
    mnt: OwnedFd,
    net: Option<OwnedFd>,
}

/// The user and mount (and network) namespaces of the record, opened through a live process
/// of `uid` in them (a shim or a proxy of the earlier daemon), if there is one.
fn live_namespace(record: &Path, uid: u32) -> Option<LiveNamespace> {
    let text = std::fs::read_to_string(record).ok()?;
    let mut f = text.split_whitespace();
    let (user, mnt) = (f.next()?.to_string(), f.next()?.to_string());
    let net = f.next().map(str::to_string);
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        if real_uid != Some(uid)
            || ns_key(&pid, "user").as_deref() != Some(&user)
            || ns_key(&pid, "mnt").as_deref() != Some(&mnt)
            || net
                .as_ref()
                .is_some_and(|n| ns_key(&pid, "net").as_ref() != Some(n))
        {
            continue;
        }
        let open = |ns: &str| std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).ok();
        if let (Some(u), Some(m)) = (open("user"), open("mnt")) {
            let n = match &net {
                Some(_) => match open("net") {
                    Some(n) => Some(n.into()),
                    None => continue,
                },
                None => None,
            };
            // Still the same namespaces (the process may have exited and its pid been reused).
            if ns_key(&pid, "user").as_deref() == Some(&user)
                && net
                    .as_deref()
                    .is_none_or(|n| ns_key(&pid, "net").as_deref() == Some(n))
            {
                return Some(LiveNamespace {
                    user: u.into(),
                    mnt: m.into(),
                    net: n,
                });
            }
        }
    }
    None
}

/// Waits for the daemon, forwarding the signals that stop or reload it; its exit status.
fn supervise(child: nix::unistd::Pid) -> i32 {
    use berth_util::signal::{drain_signalfd, signalfd, FORWARDED};
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    let mut signals = vec![libc::SIGCHLD];
    signals.extend(FORWARDED);
    let sfd = signalfd(&signals);
    loop {
        // (Other children — a network helper that exited — are reaped too.)
        loop {
            match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == child => return code,
                Ok(WaitStatus::Signaled(p, sig, _)) if p == child => return 128 + sig as i32,
                Ok(WaitStatus::StillAlive) => break,
                Err(nix::errno::Errno::ECHILD) => return 1,
                Err(_) => break,
                Ok(_) => continue,
            }
        }
        let Ok(sfd) = &sfd else {
            // No signalfd: just wait.
            std::thread::sleep(std::time::Duration::from_millis(100));
            continue;
        };
        let mut fds = [nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        for sig in drain_signalfd(sfd.as_fd()) {
            if let Ok(sig) = Signal::try_from(sig) {
                if sig != Signal::SIGCHLD {
                    let _ = nix::sys::signal::kill(child, sig);
                }
            }
        }
    }
}

/// The error for what needs bridges (a daemon on the host's network namespace).
pub fn no_bridges(what: &str) -> String {
    format!(
        "rootless berthd: {what}: bridge and user-defined networks need the daemon's own \
         network namespace, with slirp4netns as its uplink (apt-get install slirp4netns; \
         {} unset or slirp4netns); use --network host (the default here) or --network none",
        crate::rootless_net::NET_ENV
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            parse_subids(text, "alice", 1000),
            Some(SubIds {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subids(text, "carol", 1001),
            Some(SubIds {
                start: 200000,
                count: 1000
            })
        );
        // An empty range is none.
        assert_eq!(parse_subids(text, "bob", 1002), None);
        assert_eq!(parse_subids(text, "ali", 7), None);
    }
}
