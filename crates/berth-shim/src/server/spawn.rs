//! Starting processes through the runtime: the container's init (`create`) and execs, with
//! pipes or a pty as their stdio.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_util::runtime::{CreateOpts, ExecOpts, ProcessIo, RuntimeError};
use serde_json::{json, Value};

use super::{bind_path, drain_text, log_line, now_rfc3339, Mode, Output, Proc, Shim, Sink};
use super::{Status, Target};
use crate::error::{file, sys as sys_err, BadExec, ShimError};
use crate::protocol::{self, STDERR, STDOUT};
use crate::sys;

/// The console socket's name, relative to the state directory (the runtime runs there), so
/// that a long state directory does not overflow `sun_path`.
const CONSOLE_SOCKET: &str = "console.sock";

/// The shim's ends of a started process's stdio pipes.
struct Pipes {
    err_r: OwnedFd,
    out_r: Option<OwnedFd>,
    in_w: Option<OwnedFd>,
}

/// A started process's stdio as the shim holds it.
struct Connected {
    stdin: Option<Sink>,
    pty: Option<OwnedFd>,
    open_outputs: usize,
}

fn read_pid(path: &Path, what: &'static str) -> Result<i32, ShimError> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ShimError::NoPidFile {
            what,
            path: path.to_path_buf(),
        })
}

fn sink(fd: OwnedFd, tty: bool) -> Sink {
    Sink {
        fd,
        buf: Vec::new(),
        close_pending: false,
        tty,
    }
}

impl Shim {
    /// Runs a runtime command that does not touch the container's stdio.
    pub(super) fn run_runtime(&self, cmd: Command) -> Result<(), RuntimeError> {
        self.rt.call(cmd, None).map(drop)
    }

    /// The listening console socket (`DIR/console.sock`), made on first use.
    fn console_listener(&mut self) -> Result<(), ShimError> {
        if self.console.is_none() {
            let p = self.cfg.state_dir.join(CONSOLE_SOCKET);
            let _ = std::fs::remove_file(&p);
            let l = bind_path(&p).map_err(file("bind console socket", &p))?;
            self.console = Some(l);
        }
        Ok(())
    }

    /// Receives the pty master that a runtime command just sent to the console socket.
    fn receive_master(&self) -> Result<OwnedFd, ShimError> {
        let path = self.cfg.state_dir.join(CONSOLE_SOCKET);
        let l = self
            .console
            .as_ref()
            .ok_or_else(|| ShimError::NoPtyMaster(std::io::Error::other("no console socket")))?;
        let _ = sys::set_nonblocking(l, true);
        let (conn, _) = l.accept().map_err(ShimError::NoPtyMaster)?;
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        sys::recv_fd(&conn).map_err(file("receive pty master from", path))
    }

    pub(super) fn add_output(&mut self, fd: OwnedFd, target: Target, stream: u8) {
        let _ = sys::set_nonblocking(&fd, true);
        let id = self.next_id;
        self.next_id += 1;
        self.outputs.insert(id, Output { fd, target, stream });
    }

    /// The bundle's `config.json`.
    fn bundle_spec(&self) -> Result<Value, ShimError> {
        let p = self.cfg.bundle.join("config.json");
        let data = std::fs::read(&p).map_err(file("read", &p))?;
        serde_json::from_slice(&data).map_err(|source| ShimError::Json { path: p, source })
    }

    /// `--tty` must agree with the bundle's `process.terminal`.
    pub(super) fn check_terminal(&self) -> Result<(), ShimError> {
        let terminal = self.bundle_spec()?["process"]["terminal"]
            .as_bool()
            .unwrap_or(false);
        if terminal != self.cfg.tty {
            return Err(ShimError::TerminalMismatch {
                path: self.cfg.bundle.join("config.json"),
                terminal,
            });
        }
        Ok(())
    }

    /// Runs `cmd` (the runtime's `op`) with fresh pipes as the process's stdio: stderr always,
    /// stdout and stdin (when asked) unless there is a tty, whose master comes through the
    /// console socket instead. The runtime's error message on failure.
    fn spawn_with_pipes(
        &mut self,
        mut cmd: Command,
        op: &'static str,
        tty: bool,
        stdin: bool,
    ) -> Result<Pipes, ShimError> {
        let pipe = || sys::pipe().map_err(sys_err("pipe"));
        let (err_r, err_w) = pipe()?;
        let (out_r, out_w) = if tty {
            (None, None)
        } else {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        };
        let (in_r, in_w) = if stdin && !tty {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        if tty {
            self.console_listener()?;
        }
        cmd.stdin(in_r.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(out_w.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stderr(Stdio::from(err_w));
        let status = cmd.status().map_err(|source| RuntimeError::Spawn {
            binary: self.rt.binary.clone(),
            op: op.into(),
            source,
        })?;
        // `cmd` still holds the write ends: drop it so only the process has them.
        drop(cmd);
        if !status.success() {
            let msg = drain_text(&err_r);
            return Err(RuntimeError::failed(op, status, msg.as_bytes()).into());
        }
        Ok(Pipes { err_r, out_r, in_w })
    }

    /// Connects a started process's output to the log and clients and keeps its input: the
    /// pty master (tty), or the pipes. `runtime_stderr`: what the stderr pipe holds already
    /// came from the runtime (the process has not started yet), logged rather than streamed.
    fn connect_stdio(
        &mut self,
        target: &Target,
        pipes: Pipes,
        tty: bool,
        stdin: bool,
        runtime_stderr: bool,
    ) -> Result<Connected, ShimError> {
        if tty {
            drop(pipes.err_r);
            let master = self.receive_master()?;
            let _ = sys::set_nonblocking(&master, true);
            let dup = || sys::dup(&master).map_err(sys_err("dup"));
            let stdin = if stdin {
                Some(sink(dup()?, true))
            } else {
                None
            };
            let pty = Some(dup()?);
            self.add_output(master, target.clone(), STDOUT);
            return Ok(Connected {
                stdin,
                pty,
                open_outputs: 1,
            });
        }
        if runtime_stderr {
            let warn = drain_text(&pipes.err_r);
            if !warn.is_empty() {
                log_line(&format!("runtime create: {warn}"));
            }
        }
        if let Some(out) = pipes.out_r {
            self.add_output(out, target.clone(), STDOUT);
        }
        self.add_output(pipes.err_r, target.clone(), STDERR);
        let stdin = pipes.in_w.map(|w| {
            let _ = sys::set_nonblocking(&w, true);
            sink(w, false)
        });
        Ok(Connected {
            stdin,
            pty: None,
            open_outputs: 2,
        })
    }

    /// `runtime create` with pipes (or a pty) as the container's stdio.
    pub(super) fn create(&mut self) -> Result<(), ShimError> {
        let (tty, stdin) = (self.cfg.tty, self.cfg.stdin);
        let pid_file = self.cfg.state_dir.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        let opts = CreateOpts {
            io: ProcessIo {
                pid_file: Some(pid_file.clone()),
                console_socket: tty.then(|| CONSOLE_SOCKET.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let cmd = self.rt.create(&self.cfg.id, &self.cfg.bundle, &opts);
        let pipes = self.spawn_with_pipes(cmd, "create", tty, stdin)?;
        self.init.pid = read_pid(&pid_file, "init")?;
        let c = self.connect_stdio(&Target::Init, pipes, tty, stdin, true)?;
        self.init.stdin = c.stdin;
        self.init.pty = c.pty;
        self.init.open_outputs = c.open_outputs;
        Ok(())
    }

    /// The process JSON for an exec: the given one, or the container's with other arguments.
    fn exec_process(
        &self,
        process: Option<Value>,
        args: Option<Vec<String>>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
    ) -> Result<Value, ShimError> {
        let mut p = match (process, args) {
            (Some(p), _) if p.is_object() => p,
            (Some(_), _) => return Err(BadExec::ProcessNotObject.into()),
            (None, Some(args)) => {
                if args.is_empty() {
                    return Err(BadExec::EmptyArgs.into());
                }
                let spec = self.bundle_spec()?;
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
            (None, None) => return Err(BadExec::NoProcess.into()),
        };
        p["terminal"] = json!(tty);
        Ok(p)
    }

    /// Runs the runtime by its path from now on, closing berthd's shared sealed copy, once a
    /// process in the container may hold `CAP_SYS_PTRACE` (a privileged exec): such a process
    /// could reach that copy through `/proc/<pid>/exe` of a runtime entering the container and
    /// hold it open for writing, and every later exec of it, for any container, would fail with
    /// ETXTBSY. Run by its path, each runtime protects itself with a read-only view of its own.
    fn stop_sharing_runtime(&mut self) {
        if let Some((fd, path)) = self.cfg.runtime_shared.take() {
            self.cfg.runtime = path.clone();
            self.rt.binary = path;
            // SAFETY: the descriptor was the shim's own since its arguments were parsed (no
            // other owner), is used only through `runtime`, just replaced, and `take` makes
            // this the one close.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn exec(
        &mut self,
        conn: u64,
        exec_id: Option<String>,
        process: Option<Value>,
        args: Option<Vec<String>>,
        env: Vec<String>,
        cwd: Option<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<Value, ShimError> {
        if self.init.status != Status::Running {
            return Err(ShimError::State {
                op: "exec in",
                status: self.init.status.as_str(),
            });
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
            return Err(BadExec::InvalidId(x).into());
        }
        if self.execs.contains_key(&x) || self.done_execs.iter().any(|(i, _, _)| *i == x) {
            return Err(BadExec::IdInUse(x).into());
        }
        let p = self.exec_process(process, args, env, cwd, tty)?;
        if may_ptrace(&p) {
            self.stop_sharing_runtime();
        }
        let dir = &self.cfg.state_dir;
        let proc_file = dir.join(format!("exec-{x}.json"));
        let pid_file = dir.join(format!("exec-{x}.pid"));
        let _ = std::fs::remove_file(&pid_file);
        std::fs::write(&proc_file, p.to_string()).map_err(file("write", &proc_file))?;
        let opts = ExecOpts {
            detach: true,
            process_file: Some(proc_file.clone()),
            io: ProcessIo {
                pid_file: Some(pid_file.clone()),
                console_socket: tty.then(|| CONSOLE_SOCKET.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let cmd = self.rt.exec(&self.cfg.id, &opts);
        let fail = |e: ShimError| {
            let _ = std::fs::remove_file(&proc_file);
            let _ = std::fs::remove_file(&pid_file);
            e
        };
        let pipes = self
            .spawn_with_pipes(cmd, "exec", tty, stdin)
            .map_err(fail)?;
        let pid = read_pid(&pid_file, "exec").map_err(fail)?;
        let target = Target::Exec(x.clone());
        let c = self
            .connect_stdio(&target, pipes, tty, stdin, false)
            .map_err(|e| {
                let _ = sys::kill(pid, libc::SIGKILL);
                fail(e)
            })?;
        let mut proc_ = Proc::new(pid, tty);
        proc_.status = Status::Running;
        proc_.started_at = Some(now_rfc3339());
        proc_.stdin = c.stdin;
        proc_.pty = c.pty;
        proc_.open_outputs = c.open_outputs;
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

/// Whether an OCI process may hold `CAP_SYS_PTRACE` (in any of its capability sets).
fn may_ptrace(process: &Value) -> bool {
    let Some(caps) = process.get("capabilities").and_then(Value::as_object) else {
        return false;
    };
    caps.values()
        .filter_map(Value::as_array)
        .flatten()
        .any(|c| c.as_str() == Some("CAP_SYS_PTRACE"))
}
