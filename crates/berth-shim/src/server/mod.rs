//! The shim process: daemonizes, creates the container through the runtime binary, then runs a
//! single-threaded poll(2) loop over the container's stdio, the control socket and a signalfd.
//!
//! - this module: configuration, start-up (`launch`, `serve`, `Shim::setup`) and the loop;
//! - [`spawn`]: the runtime's `create` and `exec` with the processes' pipes or pty;
//! - [`lifecycle`]: signals, reaping, exit records, draining output after an exit;
//! - [`streams`]: output to the log and to attached clients, stdin, client connections;
//! - [`control`]: the control protocol's requests.

mod control;
mod lifecycle;
mod spawn;
mod streams;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_util::runtime::Runtime;
use berth_util::time::now_rfc3339_nano9 as now_rfc3339;
use serde_json::{json, Value};

use crate::error::{file, sys as sys_err, ShimError};
use crate::jsonlog::{JsonLog, LineSplitter};
use crate::protocol::{self, MAX_LINE};
use crate::sys;

/// How the shim was started (see the binary's `--help`).
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    /// When `runtime` is a descriptor the shim holds (berthd's shared sealed copy): that
    /// descriptor and the runtime's path. From the first exec whose process may hold
    /// `CAP_SYS_PTRACE` on, the runtime runs by its path and the descriptor is closed (see
    /// [`Shim::exec`]).
    pub runtime_shared: Option<(std::os::fd::RawFd, PathBuf)>,
    pub runtime_root: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_file: u32,
    /// Gzip rotated log files.
    pub log_compress: bool,
    /// A JSON object added to every log entry (`attrs`).
    pub log_attrs: Option<String>,
    /// No log at all (the `none` driver).
    pub log_disabled: bool,
    /// Write the Kubernetes CRI log format instead of json-file (see [`crate::jsonlog`]).
    pub log_cri: bool,
    pub tty: bool,
    pub stdin: bool,
    /// Start by writing the runtime's exec fifo (see the binary's `--help`).
    pub direct_start: bool,
    /// Start the container right after its create, before the readiness report (`--start`).
    pub start: bool,
}

impl Config {
    pub fn socket_path(&self) -> PathBuf {
        self.state_dir.join("shim.sock")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.state_dir.join("shim.pid")
    }
    pub fn exit_path(&self) -> PathBuf {
        self.state_dir.join("exit.json")
    }
}

/// Opens (appending, creating) the container's log as configured.
fn open_log(cfg: &Config) -> io::Result<JsonLog> {
    Ok(
        JsonLog::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_file)?
            .with_compress(cfg.log_compress)
            .with_attrs(cfg.log_attrs.clone())
            .with_cri_format(cfg.log_cri),
    )
}

/// Output an attached client has not taken yet at which its process's output stops being
/// read until the client catches up: as dockerd's attach pipes, which block their writer at
/// 1 MB, a slow reader slows the process down and loses nothing.
const CLIENT_HIGH_WATER: usize = 1 << 20;
/// Input buffered for a process's stdin before clients stop being read.
const MAX_STDIN_BUFFER: usize = 256 << 10;
/// After a process exits, how long its streams wait for the output pipes to close (a background
/// process may keep them open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Finished execs whose exit codes stay available.
const KEEP_EXECS: usize = 128;
const READ_BUF: usize = 32 << 10;
/// At most this much of each output is read by one `drain` request.
const MAX_DRAIN: usize = 4 << 20;

/// Runs in the starter: forks the shim off in a session of its own, waits until it reports
/// readiness, prints the report (one JSON line) and returns the exit code for the starter.
///
/// The shim must be in no session or process group of the starter's and never get a
/// controlling terminal: a session leader whose child it is. That is the starter itself
/// when it can start a session (it is no process group's leader, as a daemon's
/// `posix_spawn`ed child): one fork, one process less on the critical path of every
/// container start than the classic double fork, which remains for a group leader (a
/// shell's job).
pub fn launch(cfg: Config) -> i32 {
    if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
        eprintln!("berth-shim: state dir {}: {e}", cfg.state_dir.display());
        return 1;
    }
    let (r, w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth-shim: pipe: {e}");
            return 1;
        }
    };
    // A session of our own (no controlling terminal, out of the starter's process group
    // and session): the shim, our child, is then in it without leading it.
    let own_session = sys::setsid().is_ok();
    let child = match sys::fork() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth-shim: fork: {e}");
            return 1;
        }
    };
    if child == 0 {
        drop(r);
        if own_session {
            let code = serve(cfg, w);
            sys::exit_now(code)
        }
        // A process group's leader cannot start a session: the classic double fork (a new
        // session in the child, the shim its child).
        let _ = sys::setsid();
        match sys::fork() {
            Ok(0) => {
                let code = serve(cfg, w);
                sys::exit_now(code)
            }
            _ => sys::exit_now(0),
        }
    }
    drop(w);
    if !own_session {
        let _ = sys::wait_pid(child);
    }
    let mut report = Vec::new();
    let _ = std::fs::File::from(r).read_to_end(&mut report);
    let text = String::from_utf8_lossy(&report);
    if let Some(err) = text.strip_prefix("error: ") {
        eprintln!("berth-shim: {}", err.trim_end());
        return 1;
    }
    if text.trim().is_empty() {
        eprintln!(
            "berth-shim: the shim exited before it was ready (see {})",
            cfg.state_dir.join("shim.log").display()
        );
        return 1;
    }
    print!("{text}");
    0
}

/// The shim proper (in the double-forked child). Reports readiness on `ready`.
pub fn serve(cfg: Config, ready: OwnedFd) -> i32 {
    let _ = std::env::set_current_dir("/");
    let _ = sys::redirect_stdio(Some(&cfg.state_dir.join("shim.log")));
    let mut shim = match Shim::setup(cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = sys::write_all_blocking(&ready, format!("error: {e}\n").as_bytes());
            return 1;
        }
    };
    let report = json!({
        "pid": std::process::id(),
        "init_pid": shim.init.pid,
        "socket": shim.cfg.socket_path(),
    });
    let _ = sys::write_all_blocking(&ready, format!("{report}\n").as_bytes());
    drop(ready);
    shim.run();
    shim.cleanup();
    0
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Init,
    Exec(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Created,
    Running,
    Stopped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// A process's stdin: a pipe's write end, or (with a tty) a duplicate of the pty master.
struct Sink {
    fd: OwnedFd,
    buf: Vec<u8>,
    close_pending: bool,
    tty: bool,
}

/// The container's init or an exec.
struct Proc {
    pid: i32,
    status: Status,
    exit_code: Option<i32>,
    started_at: Option<String>,
    finished_at: Option<String>,
    stdin: Option<Sink>,
    pty: Option<OwnedFd>,
    open_outputs: usize,
    drain_deadline: Option<Instant>,
    streams_ended: bool,
    tty: bool,
}

impl Proc {
    fn new(pid: i32, tty: bool) -> Proc {
        Proc {
            pid,
            status: Status::Created,
            exit_code: None,
            started_at: None,
            finished_at: None,
            stdin: None,
            pty: None,
            open_outputs: 0,
            drain_deadline: None,
            streams_ended: false,
            tty,
        }
    }
}

struct Output {
    fd: OwnedFd,
    target: Target,
    stream: u8,
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Control,
    Waiting(Target),
    Stream {
        target: Target,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        close_stdin: bool,
        framed: bool,
    },
}

struct Conn {
    sock: UnixStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    mode: Mode,
    read_closed: bool,
    close_after_flush: bool,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Signal,
    Listener,
    Output(u64),
    Sink(usize),
    Conn(u64),
}

struct Shim {
    cfg: Config,
    /// The runtime: `--root` the runtime root, `--log` `DIR/runtime.log`, run from the state
    /// directory (the console socket's short relative name) with default signal dispositions.
    rt: Runtime,
    sigfd: OwnedFd,
    listener: UnixListener,
    console: Option<UnixListener>,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    outputs: BTreeMap<u64, Output>,
    init: Proc,
    execs: BTreeMap<String, Proc>,
    done_execs: VecDeque<(String, i32, String)>,
    log: Option<JsonLog>,
    log_failing: bool,
    splitters: [LineSplitter; 2],
    buf: Vec<u8>,
    exit_requested: Option<Instant>,
    deleted: bool,
}

fn err(msg: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": msg.to_string()})
}

fn ok() -> Value {
    json!({"ok": true})
}

/// Binds a unix socket, through `/proc/self/fd/N` of its directory when the path is too long.
fn bind_path(path: &Path) -> io::Result<UnixListener> {
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(path);
    }
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?;
    UnixListener::bind(
        Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .join(path.file_name().unwrap_or_default()),
    )
}

fn log_line(msg: &str) {
    let line = format!("{} {msg}\n", now_rfc3339());
    let _ = sys::write(std::io::stderr(), line.as_bytes());
}

/// Reads whatever is in a pipe without blocking (a runtime's error message).
fn drain_text(fd: &OwnedFd) -> String {
    let _ = sys::set_nonblocking(fd, true);
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(n) = sys::read(fd, &mut b) {
        if n == 0 || out.len() > 64 << 10 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

impl Shim {
    fn setup(cfg: Config) -> Result<Shim, ShimError> {
        if !protocol::valid_id(&cfg.id) {
            return Err(ShimError::InvalidId(cfg.id));
        }
        sys::set_child_subreaper().map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
        let sigfd = berth_util::signal::signalfd(&[
            libc::SIGCHLD,
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ])
        .map_err(sys_err("signalfd"))?;
        let sock = cfg.socket_path();
        if sock.exists() {
            if crate::client::connect_path(&sock).is_ok() {
                return Err(ShimError::AlreadyServing(sock));
            }
            let _ = std::fs::remove_file(&sock);
        }
        let log = if cfg.log_disabled {
            None
        } else {
            Some(open_log(&cfg).map_err(file("log", &cfg.log_path))?)
        };
        let listener = bind_path(&sock).map_err(file("bind", &sock))?;
        let rt = Runtime {
            log: Some(cfg.state_dir.join("runtime.log")),
            cwd: Some(cfg.state_dir.clone()),
            reset_signals: true,
            ..Runtime::new(&cfg.runtime, &cfg.runtime_root)
        };
        let mut shim = Shim {
            rt,
            sigfd,
            listener,
            console: None,
            conns: BTreeMap::new(),
            next_id: 1,
            outputs: BTreeMap::new(),
            init: Proc::new(0, cfg.tty),
            execs: BTreeMap::new(),
            done_execs: VecDeque::new(),
            log,
            log_failing: false,
            splitters: Default::default(),
            buf: vec![0u8; READ_BUF],
            exit_requested: None,
            deleted: false,
            cfg,
        };
        if let Err(e) = shim.check_terminal() {
            shim.cleanup();
            return Err(e);
        }
        if let Err(e) = shim.create().and_then(|()| {
            if shim.cfg.start {
                shim.start_init()
            } else {
                Ok(())
            }
        }) {
            if shim.init.pid > 0 {
                // The runtime created the container but the shim cannot serve it.
                let _ = shim.run_runtime(shim.rt.delete(&shim.cfg.id, true));
            }
            shim.cleanup();
            return Err(e);
        }
        let _ = sys::set_nonblocking(&shim.listener, true);
        let pid_path = shim.cfg.pid_path();
        berth_util::fs::replace_file_nosync(&pid_path, std::process::id().to_string().as_bytes())
            .map_err(file("write", pid_path))?;
        Ok(shim)
    }

    fn cleanup(&mut self) {
        let _ = std::fs::remove_file(self.cfg.socket_path());
        let _ = std::fs::remove_file(self.cfg.pid_path());
        if self.console.is_some() {
            let _ = std::fs::remove_file(self.cfg.state_dir.join("console.sock"));
        }
    }

    fn proc_mut(&mut self, t: &Target) -> Option<&mut Proc> {
        match t {
            Target::Init => Some(&mut self.init),
            Target::Exec(id) => self.execs.get_mut(id),
        }
    }

    fn run(&mut self) {
        let mut pfds: Vec<libc::pollfd> = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        loop {
            if let Some(since) = self.exit_requested {
                let flushed = self.conns.values().all(|c| c.wbuf.is_empty());
                if flushed || since.elapsed() > Duration::from_secs(2) {
                    return;
                }
            }
            pfds.clear();
            tags.clear();
            let mut push = |fd: RawFd, events: i16, tag: Tag| {
                pfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tags.push(tag);
            };
            push(self.sigfd.as_raw_fd(), libc::POLLIN, Tag::Signal);
            if self.exit_requested.is_none() {
                push(self.listener.as_raw_fd(), libc::POLLIN, Tag::Listener);
            }
            for (id, o) in &self.outputs {
                if !self.client_behind(&o.target) {
                    push(o.fd.as_raw_fd(), libc::POLLIN, Tag::Output(*id));
                }
            }
            // Sinks: 0 is the init, then execs in order.
            let sinks: Vec<Target> = std::iter::once(Target::Init)
                .chain(self.execs.keys().map(|k| Target::Exec(k.clone())))
                .collect();
            for (i, t) in sinks.iter().enumerate() {
                let p = match t {
                    Target::Init => &self.init,
                    Target::Exec(id) => &self.execs[id],
                };
                if let Some(s) = &p.stdin {
                    if !s.buf.is_empty() {
                        push(s.fd.as_raw_fd(), libc::POLLOUT, Tag::Sink(i));
                    }
                }
            }
            for (id, c) in &self.conns {
                let mut ev = 0;
                if !c.read_closed {
                    let backpressured = match &c.mode {
                        Mode::Stream {
                            target,
                            stdin: true,
                            ..
                        } => {
                            let p = match target {
                                Target::Init => Some(&self.init),
                                Target::Exec(x) => self.execs.get(x),
                            };
                            p.and_then(|p| p.stdin.as_ref())
                                .is_some_and(|s| s.buf.len() > MAX_STDIN_BUFFER)
                        }
                        _ => c.rbuf.len() > MAX_LINE,
                    };
                    if !backpressured {
                        ev |= libc::POLLIN;
                    }
                }
                if !c.wbuf.is_empty() {
                    ev |= libc::POLLOUT;
                }
                push(c.sock.as_raw_fd(), ev, Tag::Conn(*id));
            }
            let timeout = self.next_deadline().map_or(-1, |d| {
                d.saturating_duration_since(Instant::now()).as_millis() as i32 + 1
            });
            let timeout = if self.exit_requested.is_some() {
                100
            } else {
                timeout
            };
            if let Err(e) = sys::poll(&mut pfds, timeout) {
                log_line(&format!("poll: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let ready: Vec<(Tag, i16)> = pfds
                .iter()
                .zip(tags.iter())
                .filter(|(p, _)| p.revents != 0)
                .map(|(p, t)| (*t, p.revents))
                .collect();
            for (tag, rev) in ready {
                match tag {
                    Tag::Signal => self.on_signals(),
                    Tag::Listener => self.on_accept(),
                    Tag::Output(id) => {
                        self.on_output(id);
                    }
                    Tag::Sink(i) => {
                        if let Some(t) = sinks.get(i) {
                            self.flush_sink(&t.clone());
                        }
                    }
                    Tag::Conn(id) => self.on_conn(id, rev),
                }
            }
            self.check_deadlines();
        }
    }
}
