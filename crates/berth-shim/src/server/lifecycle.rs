//! The processes' lives: signals, reaping, the exit record, and ending the streams of an
//! exited process once its output is drained.

use std::os::fd::AsFd;
use std::time::Instant;

use serde_json::json;

use super::{log_line, now_rfc3339, Mode, Shim, Status, Target, DRAIN_GRACE, KEEP_EXECS};
use crate::protocol::{self, ExitRecord, EXIT};
use crate::sys;

impl Shim {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        std::iter::once(&self.init)
            .chain(self.execs.values())
            .filter(|p| !p.streams_ended)
            .filter_map(|p| p.drain_deadline)
            .min()
    }

    pub(super) fn check_deadlines(&mut self) {
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
            // Output held back for a slow client is still to come: the grace starts again.
            if self.client_behind(&t) {
                if let Some(p) = self.proc_mut(&t) {
                    p.drain_deadline = Some(now + DRAIN_GRACE);
                }
                continue;
            }
            self.maybe_finish(&t);
        }
    }

    pub(super) fn on_signals(&mut self) {
        for sig in berth_util::signal::drain_signalfd(self.sigfd.as_fd()) {
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

    pub(super) fn on_exit(&mut self, t: Target, code: i32) {
        let now = now_rfc3339();
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
            if let Err(e) = berth_util::fs::replace_file_nosync(&self.cfg.exit_path(), &data) {
                log_line(&format!("write exit.json: {e}"));
            }
        }
        // Waiters are answered in `maybe_finish`, once the output is drained into the log.
        self.maybe_finish(&t);
    }

    /// Ends the streams of an exited process once its output is drained (or the grace is over).
    pub(super) fn maybe_finish(&mut self, t: &Target) {
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
}
