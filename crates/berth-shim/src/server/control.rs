//! The control protocol: request lines, and each request's effect and reply.

use std::time::Instant;

use serde_json::{json, Value};

use super::{err, log_line, now_rfc3339, ok, Mode, Shim, Status, Target};
use crate::error::ShimError;
use crate::protocol::{Request, State, MAX_LINE};
use crate::sys;

impl Shim {
    /// Handles complete request lines while the connection is in control mode.
    pub(super) fn process_lines(&mut self, id: u64) {
        loop {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            if c.mode != Mode::Control {
                return;
            }
            let nl = c.rbuf.iter().position(|&b| b == b'\n');
            // A line (or an unfinished one) longer than the limit ends the connection.
            if nl.map_or(c.rbuf.len(), |i| i) > MAX_LINE {
                c.rbuf.clear();
                c.read_closed = true;
                c.close_after_flush = true;
                self.reply(id, &err("request line too long"));
                return;
            }
            let Some(i) = nl else {
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
    pub(super) fn handle(&mut self, id: u64, req: Request) -> Option<Value> {
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
            Request::ReopenLog => self.reopen_log(),
            Request::Drain => {
                self.drain_init_outputs();
                ok()
            }
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
                    if let Err(e) = self.run_runtime(self.rt.delete(&self.cfg.id, true)) {
                        if !e.is_not_found() {
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

    pub(super) fn start(&mut self) -> Value {
        match self.start_init() {
            Ok(()) => ok(),
            Err(e) => err(e),
        }
    }

    /// Starts the created container (its init waits for it).
    pub(super) fn start_init(&mut self) -> Result<(), ShimError> {
        if self.init.status != Status::Created {
            return Err(ShimError::State {
                op: "start",
                status: self.init.status.as_str(),
            });
        }
        if self.cfg.direct_start {
            sys::write_exec_fifo(&self.cfg.runtime_root.join(&self.cfg.id).join("exec.fifo"))
                .map_err(|source| ShimError::Start {
                    id: self.cfg.id.clone(),
                    source,
                })?;
        } else {
            self.run_runtime(self.rt.start(&self.cfg.id))?;
        }
        // The exit may already have been reaped (a very short container): keep Stopped.
        if self.init.status == Status::Created {
            self.init.status = Status::Running;
        }
        self.init.started_at = Some(now_rfc3339());
        Ok(())
    }

    pub(super) fn kill(&mut self, sig: i32, all: bool, exec_id: Option<String>) -> Value {
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
            return match self.run_runtime(self.rt.kill(&self.cfg.id, &sig.to_string(), true)) {
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

    pub(super) fn state(&self, exec_id: Option<String>) -> Value {
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

    pub(super) fn wait(&mut self, id: u64, exec_id: Option<String>) -> Option<Value> {
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

    pub(super) fn resize(&mut self, rows: u16, cols: u16, exec_id: Option<String>) -> Value {
        let t = exec_id.map_or(Target::Init, Target::Exec);
        let Some(p) = self.proc_mut(&t) else {
            return err("no such exec");
        };
        match &p.pty {
            Some(m) => match sys::set_winsize(m, rows, cols) {
                Ok(()) => ok(),
                Err(e) => err(format!("resize: {e}")),
            },
            None => err("not a terminal"),
        }
    }

    /// Opens the log file again at its path (the old file, renamed by a rotation, is closed).
    pub(super) fn reopen_log(&mut self) -> Value {
        if self.log.is_none() {
            return err("the container has no log");
        }
        match super::open_log(&self.cfg) {
            Ok(l) => {
                self.log = Some(l);
                ok()
            }
            Err(e) => err(format!("reopening {}: {e}", self.cfg.log_path.display())),
        }
    }

    pub(super) fn delete(&mut self, force: bool) -> Value {
        if self.init.status != Status::Stopped && !force {
            return err("the container is running (stop it first, or force)");
        }
        match self.run_runtime(self.rt.delete(&self.cfg.id, force)) {
            Ok(()) => {
                self.deleted = true;
                ok()
            }
            Err(e) => err(e),
        }
    }
}
