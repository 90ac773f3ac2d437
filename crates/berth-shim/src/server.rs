//! The shim process: daemonizes, creates the container through the runtime binary, then runs a
//! single-threaded poll(2) loop over the container's stdio, the control socket and a signalfd.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::jsonlog::{JsonLog, LineSplitter};
use crate::protocol::{self, ExitRecord, Request, State, EXIT, MAX_LINE, STDERR, STDOUT};
use crate::sys;

/// How the shim was started (see the binary's `--help`).
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_file: u32,
    pub tty: bool,
    pub stdin: bool,
    /// Start by writing the runtime's exec fifo (see the binary's `--help`).
    pub direct_start: bool,
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

/// Output kept for a client that does not read before it is dropped.
const MAX_CLIENT_BUFFER: usize = 4 << 20;
/// Input buffered for a process's stdin before clients stop being read.
const MAX_STDIN_BUFFER: usize = 256 << 10;
/// After a process exits, how long its streams wait for the output pipes to close (a background
/// process may keep them open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Finished execs whose exit codes stay available.
const KEEP_EXECS: usize = 128;
const READ_BUF: usize = 32 << 10;

/// Runs in the starter: forks the shim off (setsid + double fork), waits until it reports
/// readiness, prints the report (one JSON line) and returns the exit code for the starter.
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
    let child = match sys::fork() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth-shim: fork: {e}");
            return 1;
        }
    };
    if child == 0 {
        drop(r);
        // A new session: no controlling terminal, out of the starter's process group.
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
    let _ = sys::wait_pid(child);
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
            let _ = sys::write_all_blocking(ready.as_raw_fd(), format!("error: {e}\n").as_bytes());
            return 1;
        }
    };
    let report = json!({
        "pid": std::process::id(),
        "init_pid": shim.init.pid,
        "socket": shim.cfg.socket_path(),
    });
    let _ = sys::write_all_blocking(ready.as_raw_fd(), format!("{report}\n").as_bytes());
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
    let line = format!("{} {msg}\n", sys::now_rfc3339());
    let _ = sys::write(2, line.as_bytes());
}

/// Reads whatever is in a pipe without blocking (a runtime's error message).
fn drain_text(fd: &OwnedFd) -> String {
    let _ = sys::set_nonblocking(fd.as_raw_fd(), true);
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while let Ok(n) = sys::read(fd.as_raw_fd(), &mut b) {
        if n == 0 || out.len() > 64 << 10 {
            break;
        }
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

impl Shim {
    fn setup(cfg: Config) -> Result<Shim, String> {
        if !protocol::valid_id(&cfg.id) {
            return Err(format!("invalid container id {:?}", cfg.id));
        }
        sys::set_child_subreaper().map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
        let sigfd = sys::signalfd(&[
            libc::SIGCHLD,
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ])
        .map_err(|e| format!("signalfd: {e}"))?;
        let sock = cfg.socket_path();
        if sock.exists() {
            if crate::client::connect_path(&sock).is_ok() {
                return Err(format!("a shim is already serving {}", sock.display()));
            }
            let _ = std::fs::remove_file(&sock);
        }
        let log = JsonLog::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_file)
            .map_err(|e| format!("log {}: {e}", cfg.log_path.display()))?;
        let listener = bind_path(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        let mut shim = Shim {
            sigfd,
            listener,
            console: None,
            conns: BTreeMap::new(),
            next_id: 1,
            outputs: BTreeMap::new(),
            init: Proc::new(0, cfg.tty),
            execs: BTreeMap::new(),
            done_execs: VecDeque::new(),
            log: Some(log),
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
        if let Err(e) = shim.create() {
            if shim.init.pid > 0 {
                // The runtime created the container but the shim cannot serve it.
                let _ = shim.run_runtime(&["delete", "--force", &shim.cfg.id.clone()]);
            }
            shim.cleanup();
            return Err(e);
        }
        let _ = sys::set_nonblocking(shim.listener.as_raw_fd(), true);
        sys::atomic_write(
            &shim.cfg.pid_path(),
            std::process::id().to_string().as_bytes(),
        )
        .map_err(|e| format!("write shim.pid: {e}"))?;
        Ok(shim)
    }

    fn runtime(&self) -> Command {
        let mut c = Command::new(&self.cfg.runtime);
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // rt_sigaction calls (async-signal-safe). std clears the signal mask itself.
        unsafe {
            c.pre_exec(|| {
                sys::reset_signal_dispositions();
                Ok(())
            });
        }
        c.arg("--root")
            .arg(&self.cfg.runtime_root)
            .arg("--log")
            .arg(self.cfg.state_dir.join("runtime.log"))
            .current_dir(&self.cfg.state_dir);
        c
    }

    /// Runs a runtime command that does not touch the container's stdio; its stderr on failure.
    fn run_runtime(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .runtime()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("run {}: {e}", self.cfg.runtime.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(if msg.is_empty() {
                format!("runtime {} failed: {}", args[0], out.status)
            } else {
                msg
            })
        }
    }

    /// The listening console socket (`DIR/console.sock`), made on first use.
    fn console_listener(&mut self) -> Result<(), String> {
        if self.console.is_none() {
            let p = self.cfg.state_dir.join("console.sock");
            let _ = std::fs::remove_file(&p);
            let l = bind_path(&p).map_err(|e| format!("console socket: {e}"))?;
            self.console = Some(l);
        }
        Ok(())
    }

    /// Receives the pty master that a runtime command just sent to the console socket.
    fn receive_master(&self) -> Result<OwnedFd, String> {
        let l = self.console.as_ref().ok_or("no console socket")?;
        let _ = sys::set_nonblocking(l.as_raw_fd(), true);
        let (conn, _) = l
            .accept()
            .map_err(|e| format!("the runtime sent no pty master: {e}"))?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        sys::recv_fd(conn.as_raw_fd()).map_err(|e| format!("receive pty master: {e}"))
    }

    fn add_output(&mut self, fd: OwnedFd, target: Target, stream: u8) {
        let _ = sys::set_nonblocking(fd.as_raw_fd(), true);
        let id = self.next_id;
        self.next_id += 1;
        self.outputs.insert(id, Output { fd, target, stream });
    }

    /// `--tty` must agree with the bundle's `process.terminal`.
    fn check_terminal(&self) -> Result<(), String> {
        let p = self.cfg.bundle.join("config.json");
        let data = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        let spec: Value =
            serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", p.display()))?;
        let terminal = spec["process"]["terminal"].as_bool().unwrap_or(false);
        if terminal != self.cfg.tty {
            return Err(format!(
                "process.terminal is {terminal} in {} but the shim was started {} --tty",
                p.display(),
                if self.cfg.tty { "with" } else { "without" }
            ));
        }
        Ok(())
    }

    /// `runtime create` with pipes (or a pty) as the container's stdio.
    fn create(&mut self) -> Result<(), String> {
        let tty = self.cfg.tty;
        let (err_r, err_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (out_r, out_w) = if tty {
            (None, None)
        } else {
            let (r, w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            (Some(r), Some(w))
        };
        let (in_r, in_w) = if self.cfg.stdin && !tty {
            let (r, w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        if tty {
            self.console_listener()?;
        }
        let pid_file = self.cfg.state_dir.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            self.cfg.bundle.clone().into(),
            "--pid-file".into(),
            pid_file.clone().into(),
        ];
        if tty {
            args.push("--console-socket".into());
            args.push("console.sock".into());
        }
        args.push(self.cfg.id.clone().into());
        let mut cmd = self.runtime();
        cmd.args(&args)
            .stdin(in_r.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(out_w.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stderr(Stdio::from(err_w));
        let status = cmd
            .status()
            .map_err(|e| format!("run {}: {e}", self.cfg.runtime.display()))?;
        // `cmd` still holds the write ends: drop it so only the container has them.
        drop(cmd);
        if !status.success() {
            let msg = drain_text(&err_r);
            return Err(if msg.is_empty() {
                format!("runtime create failed: {status}")
            } else {
                msg
            });
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("the runtime wrote no pid file")?;
        self.init.pid = pid;
        if tty {
            let master = self.receive_master()?;
            let _ = sys::set_nonblocking(master.as_raw_fd(), true);
            if self.cfg.stdin {
                self.init.stdin = Some(Sink {
                    fd: sys::dup(master.as_raw_fd()).map_err(|e| format!("dup: {e}"))?,
                    buf: Vec::new(),
                    close_pending: false,
                    tty: true,
                });
            }
            self.init.pty = Some(sys::dup(master.as_raw_fd()).map_err(|e| format!("dup: {e}"))?);
            self.add_output(master, Target::Init, STDOUT);
            self.init.open_outputs = 1;
        } else {
            // The container has not started: anything in its stderr came from the runtime.
            let warn = drain_text(&err_r);
            if !warn.is_empty() {
                log_line(&format!("runtime create: {warn}"));
            }
            self.add_output(out_r.expect("pipe"), Target::Init, STDOUT);
            self.add_output(err_r, Target::Init, STDERR);
            self.init.open_outputs = 2;
            if let Some(w) = in_w {
                let _ = sys::set_nonblocking(w.as_raw_fd(), true);
                self.init.stdin = Some(Sink {
                    fd: w,
                    buf: Vec::new(),
                    close_pending: false,
                    tty: false,
                });
            }
        }
        Ok(())
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
                push(o.fd.as_raw_fd(), libc::POLLIN, Tag::Output(*id));
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
                    Tag::Output(id) => self.on_output(id),
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

    fn next_deadline(&self) -> Option<Instant> {
        std::iter::once(&self.init)
            .chain(self.execs.values())
            .filter(|p| !p.streams_ended)
            .filter_map(|p| p.drain_deadline)
            .min()
    }

    fn check_deadlines(&mut self) {
        let now = Instant::now();
        let mut due: Vec<Target> = Vec::new();
        if !self.init.streams_ended && self.init.drain_deadline.is_some_and(|d| d <= now) {
            due.push(Target::Init);
        }
        for (id, p) in &self.execs {
            if !p.streams_ended && p.drain_deadline.is_some_and(|d| d <= now) {
                due.push(Target::Exec(id.clone()));
            }
        }
        for t in due {
            self.maybe_finish(&t);
        }
    }

    fn on_signals(&mut self) {
        for sig in sys::drain_signalfd(&self.sigfd) {
            match sig {
                libc::SIGCHLD => {}
                libc::SIGTERM | libc::SIGINT if self.init.status == Status::Stopped => {
                    log_line("terminating on signal after the container exited");
                    self.exit_requested.get_or_insert_with(Instant::now);
                }
                s => log_line(&format!("ignored signal {s}")),
            }
        }
        while let Some((pid, code)) = sys::reap_any() {
            if pid == self.init.pid && self.init.status != Status::Stopped {
                self.on_exit(Target::Init, code);
            } else if let Some(id) = self
                .execs
                .iter()
                .find(|(_, p)| p.pid == pid && p.status != Status::Stopped)
                .map(|(k, _)| k.clone())
            {
                self.on_exit(Target::Exec(id), code);
            }
        }
    }

    fn on_exit(&mut self, t: Target, code: i32) {
        let now = sys::now_rfc3339();
        let Some(p) = self.proc_mut(&t) else { return };
        p.status = Status::Stopped;
        p.exit_code = Some(code);
        p.finished_at = Some(now.clone());
        p.drain_deadline = Some(Instant::now() + DRAIN_GRACE);
        // Nothing reads the stdin of a dead process.
        p.stdin = None;
        if t == Target::Init {
            let rec = ExitRecord {
                id: self.cfg.id.clone(),
                pid: self.init.pid,
                exit_code: code,
                started_at: self.init.started_at.clone(),
                finished_at: now.clone(),
            };
            let data = serde_json::to_vec(&rec).unwrap_or_default();
            if let Err(e) = sys::atomic_write(&self.cfg.exit_path(), &data) {
                log_line(&format!("write exit.json: {e}"));
            }
        }
        // Waiters are answered in `maybe_finish`, once the output is drained into the log.
        self.maybe_finish(&t);
    }

    /// Ends the streams of an exited process once its output is drained (or the grace is over).
    fn maybe_finish(&mut self, t: &Target) {
        let now = Instant::now();
        let Some(p) = self.proc_mut(t) else { return };
        if p.status != Status::Stopped || p.streams_ended {
            return;
        }
        let over = p.drain_deadline.is_some_and(|d| d <= now);
        if p.open_outputs > 0 && !over {
            return;
        }
        p.streams_ended = true;
        let code = p.exit_code.unwrap_or(-1);
        let finished = p.finished_at.clone().unwrap_or_default();
        // Answer the waiters: the process is gone and its output is in the log.
        let waiting: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.mode == Mode::Waiting(t.clone()))
            .map(|(id, _)| *id)
            .collect();
        let reply = json!({"ok": true, "exit_code": code, "finished_at": finished});
        for id in waiting {
            self.reply(id, &reply);
            if let Some(c) = self.conns.get_mut(&id) {
                c.mode = Mode::Control;
            }
            self.process_lines(id);
        }
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(&c.mode, Mode::Stream { target, .. } if target == t))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let c = self.conns.get_mut(&id).expect("conn");
            if matches!(t, Target::Exec(_)) {
                protocol::push_frame(
                    &mut c.wbuf,
                    EXIT,
                    json!({"exit_code": code}).to_string().as_bytes(),
                );
            }
            c.read_closed = true;
            c.close_after_flush = true;
            self.try_flush(id);
        }
        if let Target::Exec(x) = t {
            self.execs.remove(x);
            let dead: Vec<u64> = self
                .outputs
                .iter()
                .filter(|(_, o)| &o.target == t)
                .map(|(k, _)| *k)
                .collect();
            for k in dead {
                self.outputs.remove(&k);
            }
            for ext in ["json", "pid"] {
                let _ = std::fs::remove_file(self.cfg.state_dir.join(format!("exec-{x}.{ext}")));
            }
            self.done_execs.push_back((x.clone(), code, finished));
            while self.done_execs.len() > KEEP_EXECS {
                self.done_execs.pop_front();
            }
        }
    }

    fn on_accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    let _ = sock.set_nonblocking(true);
                    let id = self.next_id;
                    self.next_id += 1;
                    self.conns.insert(
                        id,
                        Conn {
                            sock,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            mode: Mode::Control,
                            read_closed: false,
                            close_after_flush: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log_line(&format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn on_output(&mut self, oid: u64) {
        let Some(o) = self.outputs.get(&oid) else {
            return;
        };
        let mut buf = std::mem::take(&mut self.buf);
        let res = sys::read(o.fd.as_raw_fd(), &mut buf);
        let (target, stream) = (o.target.clone(), o.stream);
        match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => {
                self.outputs.remove(&oid);
                if target == Target::Init {
                    self.log_flush(stream);
                }
                if let Some(p) = self.proc_mut(&target) {
                    p.open_outputs = p.open_outputs.saturating_sub(1);
                }
                self.maybe_finish(&target);
            }
            Ok(n) => {
                let data = &buf[..n];
                if target == Target::Init {
                    self.log_data(stream, data);
                }
                self.broadcast(&target, stream, data);
            }
        }
        self.buf = buf;
    }

    fn log_data(&mut self, stream: u8, data: &[u8]) {
        let Some(log) = self.log.as_mut() else { return };
        let name = if stream == STDERR { "stderr" } else { "stdout" };
        let time = sys::now_rfc3339();
        let mut failed = None;
        self.splitters[(stream == STDERR) as usize].push(data, |e| {
            if let Err(err) = log.write_entry(name, e, &time) {
                failed = Some(err);
            }
        });
        match failed {
            Some(e) if !self.log_failing => {
                log_line(&format!("log write (further failures not reported): {e}"));
                self.log_failing = true;
            }
            Some(_) => {}
            None => self.log_failing = false,
        }
    }

    fn log_flush(&mut self, stream: u8) {
        let Some(log) = self.log.as_mut() else { return };
        let name = if stream == STDERR { "stderr" } else { "stdout" };
        let time = sys::now_rfc3339();
        self.splitters[(stream == STDERR) as usize].finish(|e| {
            let _ = log.write_entry(name, e, &time);
        });
    }

    fn broadcast(&mut self, target: &Target, stream: u8, data: &[u8]) {
        let mut full = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            let Mode::Stream {
                target: t,
                stdout,
                stderr,
                framed,
                ..
            } = &c.mode
            else {
                continue;
            };
            if t != target || c.close_after_flush {
                continue;
            }
            if (stream == STDOUT && !stdout) || (stream == STDERR && !stderr) {
                continue;
            }
            if *framed {
                protocol::push_frame(&mut c.wbuf, stream, data);
            } else {
                c.wbuf.extend_from_slice(data);
            }
            if c.wbuf.len() > MAX_CLIENT_BUFFER {
                full.push(*id);
            }
        }
        for id in full {
            log_line("dropping a client that does not read its stream");
            self.drop_conn(id);
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.try_flush(id);
        }
    }

    /// Writes what a connection has buffered; closes it when done and asked to.
    fn try_flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        while !c.wbuf.is_empty() {
            match sys::send(c.sock.as_raw_fd(), &c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.drop_conn(id);
                    return;
                }
            }
        }
        if c.close_after_flush {
            self.drop_conn(id);
        }
    }

    fn drop_conn(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if !c.read_closed {
            self.stream_input_closed(&c.mode);
        }
    }

    /// A stream client stopped sending: close the process's stdin if it asked for that.
    fn stream_input_closed(&mut self, mode: &Mode) {
        if let Mode::Stream {
            target,
            stdin: true,
            close_stdin: true,
            ..
        } = mode
        {
            let t = target.clone();
            if let Some(s) = self.proc_mut(&t).and_then(|p| p.stdin.as_mut()) {
                s.close_pending = true;
            }
            self.flush_sink(&t);
        }
    }

    fn flush_sink(&mut self, t: &Target) {
        let Some(p) = self.proc_mut(t) else { return };
        let Some(s) = p.stdin.as_mut() else { return };
        while !s.buf.is_empty() {
            match sys::write(s.fd.as_raw_fd(), &s.buf) {
                Ok(n) => {
                    s.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    p.stdin = None;
                    return;
                }
            }
        }
        if s.close_pending {
            if s.tty {
                // A pty cannot be half-closed: end the input with ^D, as a terminal does.
                let _ = sys::write(s.fd.as_raw_fd(), &[4]);
            }
            p.stdin = None;
        }
    }

    fn on_conn(&mut self, id: u64, rev: i16) {
        if rev & libc::POLLOUT != 0 {
            self.try_flush(id);
        }
        if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.read_conn(id);
        }
        if rev & (libc::POLLHUP | libc::POLLERR) != 0 {
            // The peer closed both directions: nothing more can be delivered.
            self.drop_conn(id);
        }
    }

    fn read_conn(&mut self, id: u64) {
        let mut buf = std::mem::take(&mut self.buf);
        for _ in 0..8 {
            let Some(c) = self.conns.get_mut(&id) else {
                break;
            };
            if c.read_closed {
                break;
            }
            let n = match (&c.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(id);
                    break;
                }
            };
            if n == 0 {
                c.read_closed = true;
                let mode = c.mode.clone();
                match mode {
                    Mode::Control => {
                        c.close_after_flush = true;
                        self.try_flush(id);
                    }
                    Mode::Waiting(_) => {}
                    m @ Mode::Stream { .. } => self.stream_input_closed(&m),
                }
                break;
            }
            let data = &buf[..n];
            match &c.mode {
                Mode::Stream { target, stdin, .. } => {
                    let (t, stdin) = (target.clone(), *stdin);
                    if stdin {
                        self.feed_stdin(&t, data);
                    }
                }
                _ => {
                    c.rbuf.extend_from_slice(data);
                    self.process_lines(id);
                }
            }
        }
        self.buf = buf;
    }

    fn feed_stdin(&mut self, t: &Target, data: &[u8]) {
        if let Some(s) = self.proc_mut(t).and_then(|p| p.stdin.as_mut()) {
            if !s.close_pending {
                s.buf.extend_from_slice(data);
            }
        }
        self.flush_sink(t);
    }

    fn reply(&mut self, id: u64, v: &Value) {
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = serde_json::to_writer(&mut c.wbuf, v);
            c.wbuf.push(b'\n');
        }
        self.try_flush(id);
    }

    /// Handles complete request lines while the connection is in control mode.
    fn process_lines(&mut self, id: u64) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.mode != Mode::Control {
                return;
            }
            let nl = c.rbuf.iter().position(|&b| b == b'\n');
            if nl.map_or(c.rbuf.len(), |i| i) > MAX_LINE {
                c.rbuf.clear();
                c.read_closed = true;
                c.close_after_flush = true;
                self.reply(id, &err("request line too long"));
                return;
            }
            let Some(i) = nl else {
                if c.rbuf.len() > MAX_LINE {
                    c.rbuf.clear();
                    c.read_closed = true;
                    c.close_after_flush = true;
                    self.reply(id, &err("request line too long"));
                }
                return;
            };
            let rest = c.rbuf.split_off(i + 1);
            let mut line = std::mem::replace(&mut c.rbuf, rest);
            line.pop();
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let reply = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(id, req),
                Err(e) => Some(err(format!("bad request: {e}"))),
            };
            if let Some(r) = reply {
                self.reply(id, &r);
            }
            // A stream request turns what follows the line into stdin.
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if let Mode::Stream { target, stdin, .. } = &c.mode {
                let (t, stdin) = (target.clone(), *stdin);
                let rest = std::mem::take(&mut c.rbuf);
                let closed = c.read_closed;
                let mode = c.mode.clone();
                if stdin && !rest.is_empty() {
                    self.feed_stdin(&t, &rest);
                }
                if closed {
                    self.stream_input_closed(&mode);
                }
                return;
            }
            if c.read_closed && c.mode == Mode::Control && !c.rbuf.contains(&b'\n') {
                c.close_after_flush = true;
                self.try_flush(id);
                return;
            }
        }
    }

    /// One request; `None` when the reply comes later (`wait`).
    fn handle(&mut self, id: u64, req: Request) -> Option<Value> {
        Some(match req {
            Request::Start => self.start(),
            Request::Kill {
                signal,
                all,
                exec_id,
            } => match signal.number() {
                None => err(format!("invalid signal {signal:?}")),
                Some(sig) => self.kill(sig, all, exec_id),
            },
            Request::State { exec_id } => self.state(exec_id),
            Request::Wait { exec_id } => return self.wait(id, exec_id),
            Request::Resize {
                rows,
                cols,
                exec_id,
            } => self.resize(rows, cols, exec_id),
            Request::Attach {
                stdin,
                stdout,
                stderr,
                close_stdin,
            } => {
                if self.init.streams_ended {
                    return Some(err("the container has exited"));
                }
                let stdin_ok = stdin && self.init.stdin.is_some();
                let c = self.conns.get_mut(&id)?;
                c.mode = Mode::Stream {
                    target: Target::Init,
                    stdin: stdin_ok,
                    stdout,
                    stderr,
                    close_stdin,
                    framed: !self.cfg.tty,
                };
                json!({"ok": true, "tty": self.cfg.tty, "stdin": stdin_ok})
            }
            Request::Exec {
                exec_id,
                process,
                args,
                env,
                cwd,
                tty,
                stdin,
            } => match self.exec(id, exec_id, process, args, env, cwd, tty, stdin) {
                Ok(v) => v,
                Err(e) => err(e),
            },
            Request::Delete { force } => self.delete(force),
            Request::Shutdown { force } => {
                if self.init.status != Status::Stopped && !force {
                    return Some(err(
                        "the container is still running (kill it first, or force)",
                    ));
                }
                if self.init.status != Status::Stopped {
                    let _ = sys::kill(self.init.pid, libc::SIGKILL);
                }
                if !self.deleted {
                    if let Err(e) = self.run_runtime(&["delete", "--force", &self.cfg.id.clone()]) {
                        if !e.contains("not found") && !e.contains("does not exist") {
                            log_line(&format!("delete on shutdown: {e}"));
                        }
                    }
                    self.deleted = true;
                }
                self.exit_requested = Some(Instant::now());
                ok()
            }
        })
    }

    fn start(&mut self) -> Value {
        if self.init.status != Status::Created {
            return err(format!(
                "cannot start a container that is {}",
                self.init.status.as_str()
            ));
        }
        let started = if self.cfg.direct_start {
            sys::write_exec_fifo(&self.cfg.runtime_root.join(&self.cfg.id).join("exec.fifo"))
                .map_err(|e| format!("start container {}: {e}", self.cfg.id))
        } else {
            self.run_runtime(&["start", &self.cfg.id.clone()])
        };
        match started {
            Ok(()) => {
                // The exit may already have been reaped (a very short container): keep Stopped.
                if self.init.status == Status::Created {
                    self.init.status = Status::Running;
                }
                self.init.started_at = Some(sys::now_rfc3339());
                ok()
            }
            Err(e) => err(e),
        }
    }

    fn kill(&mut self, sig: i32, all: bool, exec_id: Option<String>) -> Value {
        if let Some(x) = exec_id {
            return match self.execs.get(&x) {
                Some(p) if p.status != Status::Stopped => match sys::kill(p.pid, sig) {
                    Ok(()) => ok(),
                    Err(e) => err(format!("kill exec {x}: {e}")),
                },
                _ => err(format!("exec {x} is not running")),
            };
        }
        if self.init.status == Status::Stopped {
            return err("the container is not running");
        }
        if all {
            return match self.run_runtime(&[
                "kill",
                "--all",
                &self.cfg.id.clone(),
                &sig.to_string(),
            ]) {
                Ok(()) => ok(),
                Err(e) => err(e),
            };
        }
        // The init is our child and not reaped yet: its pid cannot have been reused.
        match sys::kill(self.init.pid, sig) {
            Ok(()) => ok(),
            Err(e) => err(format!("kill: {e}")),
        }
    }

    fn state(&self, exec_id: Option<String>) -> Value {
        let st = match exec_id {
            None => State {
                id: self.cfg.id.clone(),
                pid: self.init.pid,
                status: self.init.status.as_str().into(),
                exit_code: self.init.exit_code,
                started_at: self.init.started_at.clone(),
                finished_at: self.init.finished_at.clone(),
                tty: self.cfg.tty,
            },
            Some(x) => match self.execs.get(&x) {
                Some(p) => State {
                    id: x,
                    pid: p.pid,
                    status: p.status.as_str().into(),
                    exit_code: p.exit_code,
                    started_at: p.started_at.clone(),
                    finished_at: p.finished_at.clone(),
                    tty: p.tty,
                },
                None => match self.done_execs.iter().find(|(i, _, _)| *i == x) {
                    Some((_, code, fin)) => State {
                        id: x,
                        pid: 0,
                        status: "stopped".into(),
                        exit_code: Some(*code),
                        started_at: None,
                        finished_at: Some(fin.clone()),
                        tty: false,
                    },
                    None => return err(format!("no exec {x}")),
                },
            },
        };
        let mut v = serde_json::to_value(st).unwrap_or(Value::Null);
        v["ok"] = Value::Bool(true);
        v
    }

    fn wait(&mut self, id: u64, exec_id: Option<String>) -> Option<Value> {
        let target = match exec_id {
            None => Target::Init,
            Some(x) => {
                if let Some((_, code, fin)) = self.done_execs.iter().find(|(i, _, _)| *i == x) {
                    return Some(json!({"ok": true, "exit_code": code, "finished_at": fin}));
                }
                if !self.execs.contains_key(&x) {
                    return Some(err(format!("no exec {x}")));
                }
                Target::Exec(x)
            }
        };
        let p = self.proc_mut(&target)?;
        // Answered once the output is drained too, so that logs read after `wait` are complete.
        if p.status == Status::Stopped && p.streams_ended {
            return Some(
                json!({"ok": true, "exit_code": p.exit_code, "finished_at": p.finished_at}),
            );
        }
        self.conns.get_mut(&id)?.mode = Mode::Waiting(target);
        None
    }

    fn resize(&mut self, rows: u16, cols: u16, exec_id: Option<String>) -> Value {
        let t = exec_id.map_or(Target::Init, Target::Exec);
        let Some(p) = self.proc_mut(&t) else {
            return err("no such exec");
        };
        match &p.pty {
            Some(m) => match sys::set_winsize(m.as_raw_fd(), rows, cols) {
                Ok(()) => ok(),
                Err(e) => err(format!("resize: {e}")),
            },
            None => err("not a terminal"),
        }
    }

    fn delete(&mut self, force: bool) -> Value {
        if self.init.status != Status::Stopped && !force {
            return err("the container is running (stop it first, or force)");
        }
        let id = self.cfg.id.clone();
        let args: Vec<&str> = if force {
            vec!["delete", "--force", &id]
        } else {
            vec!["delete", &id]
        };
        match self.run_runtime(&args) {
            Ok(()) => {
                self.deleted = true;
                ok()
            }
            Err(e) => err(e),
        }
    }

    /// The process JSON for an exec: the given one, or the container's with other arguments.
    fn exec_process(
        &self,
        process: Option<Value>,
        args: Option<Vec<String>>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
    ) -> Result<Value, String> {
        let mut p = match (process, args) {
            (Some(p), _) if p.is_object() => p,
            (Some(_), _) => return Err("process must be an object".into()),
            (None, Some(args)) => {
                if args.is_empty() {
                    return Err("args is empty".into());
                }
                let cfg_path = self.cfg.bundle.join("config.json");
                let data = std::fs::read(&cfg_path)
                    .map_err(|e| format!("read {}: {e}", cfg_path.display()))?;
                let spec: Value = serde_json::from_slice(&data)
                    .map_err(|e| format!("{}: {e}", cfg_path.display()))?;
                let mut p = spec.get("process").cloned().unwrap_or_else(|| json!({}));
                p["args"] = json!(args);
                p.as_object_mut().map(|o| o.remove("consoleSize"));
                if !env.is_empty() {
                    let mut all: Vec<Value> = p["env"].as_array().cloned().unwrap_or_default();
                    all.extend(env.into_iter().map(Value::String));
                    p["env"] = Value::Array(all);
                }
                if let Some(c) = cwd {
                    p["cwd"] = json!(c);
                }
                p
            }
            (None, None) => return Err("exec needs process or args".into()),
        };
        p["terminal"] = json!(tty);
        Ok(p)
    }

    #[allow(clippy::too_many_arguments)]
    fn exec(
        &mut self,
        conn: u64,
        exec_id: Option<String>,
        process: Option<Value>,
        args: Option<Vec<String>>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<Value, String> {
        if self.init.status != Status::Running {
            return Err(format!(
                "cannot exec in a container that is {}",
                self.init.status.as_str()
            ));
        }
        let x = match exec_id {
            Some(x) => x,
            None => {
                let n = self.next_id;
                self.next_id += 1;
                format!("exec{n}")
            }
        };
        if !protocol::valid_id(&x) {
            return Err(format!("invalid exec id {x:?}"));
        }
        if self.execs.contains_key(&x) || self.done_execs.iter().any(|(i, _, _)| *i == x) {
            return Err(format!("exec id {x} is already used"));
        }
        let p = self.exec_process(process, args, env, cwd, tty)?;
        let dir = &self.cfg.state_dir;
        let proc_file = dir.join(format!("exec-{x}.json"));
        let pid_file = dir.join(format!("exec-{x}.pid"));
        let _ = std::fs::remove_file(&pid_file);
        std::fs::write(&proc_file, p.to_string()).map_err(|e| format!("write process: {e}"))?;
        let (err_r, err_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (out_r, out_w) = if tty {
            (None, None)
        } else {
            let (r, w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            (Some(r), Some(w))
        };
        let (in_r, in_w) = if stdin && !tty {
            let (r, w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        if tty {
            self.console_listener()?;
        }
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.clone().into(),
            "--process".into(),
            proc_file.clone().into(),
        ];
        if tty {
            args.push("--console-socket".into());
            args.push("console.sock".into());
        }
        args.push(self.cfg.id.clone().into());
        let mut cmd = self.runtime();
        cmd.args(&args)
            .stdin(in_r.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(out_w.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stderr(Stdio::from(err_w));
        let status = cmd.status();
        drop(cmd);
        let fail = |msg: String| {
            let _ = std::fs::remove_file(&proc_file);
            let _ = std::fs::remove_file(&pid_file);
            msg
        };
        let status = status.map_err(|e| fail(format!("run runtime: {e}")))?;
        if !status.success() {
            let m = drain_text(&err_r);
            return Err(fail(if m.is_empty() {
                format!("runtime exec failed: {status}")
            } else {
                m
            }));
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| fail("the runtime wrote no exec pid file".into()))?;
        let mut proc_ = Proc::new(pid, tty);
        proc_.status = Status::Running;
        proc_.started_at = Some(sys::now_rfc3339());
        let target = Target::Exec(x.clone());
        if tty {
            drop(err_r);
            let master = self.receive_master().map_err(|e| {
                let _ = sys::kill(pid, libc::SIGKILL);
                fail(e)
            })?;
            let _ = sys::set_nonblocking(master.as_raw_fd(), true);
            if stdin {
                proc_.stdin = Some(Sink {
                    fd: sys::dup(master.as_raw_fd()).map_err(|e| format!("dup: {e}"))?,
                    buf: Vec::new(),
                    close_pending: false,
                    tty: true,
                });
            }
            proc_.pty = Some(sys::dup(master.as_raw_fd()).map_err(|e| format!("dup: {e}"))?);
            proc_.open_outputs = 1;
            self.add_output(master, target.clone(), STDOUT);
        } else {
            proc_.open_outputs = 2;
            self.add_output(out_r.expect("pipe"), target.clone(), STDOUT);
            self.add_output(err_r, target.clone(), STDERR);
            if let Some(w) = in_w {
                let _ = sys::set_nonblocking(w.as_raw_fd(), true);
                proc_.stdin = Some(Sink {
                    fd: w,
                    buf: Vec::new(),
                    close_pending: false,
                    tty: false,
                });
            }
        }
        self.execs.insert(x.clone(), proc_);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.mode = Mode::Stream {
                target,
                stdin,
                stdout: true,
                stderr: true,
                close_stdin: true,
                framed: true,
            };
        }
        Ok(json!({"ok": true, "exec_id": x, "pid": pid}))
    }
}
