//! Data paths: process output to the json-file log and to attached clients, client input to
//! process stdin, and the client connections themselves.

use std::io::{self, Read};

use serde_json::Value;

use super::{
    log_line, now_rfc3339, Conn, Mode, Shim, Target, CLIENT_HIGH_WATER, MAX_DRAIN, READ_BUF,
};
use crate::protocol::{self, STDERR, STDOUT};
use crate::sys;

impl Shim {
    pub(super) fn on_accept(&mut self) {
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

    /// Handles one read of an output; returns the bytes read (`None`: nothing to read now,
    /// or the output ended).
    pub(super) fn on_output(&mut self, oid: u64) -> Option<usize> {
        let o = self.outputs.get(&oid)?;
        // The shared buffer is out while a connection is read (a `drain` request comes from
        // there): a zero-length read would look like the end of the output.
        let mut buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            buf = vec![0u8; READ_BUF];
        }
        let res = sys::read(&o.fd, &mut buf);
        let (target, stream) = (o.target.clone(), o.stream);
        let read = match res {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Ok(0) | Err(_) => {
                self.outputs.remove(&oid);
                if target == Target::Init {
                    self.log_flush(stream);
                }
                if let Some(p) = self.proc_mut(&target) {
                    p.open_outputs = p.open_outputs.saturating_sub(1);
                }
                self.maybe_finish(&target);
                None
            }
            Ok(n) => {
                let data = &buf[..n];
                if target == Target::Init {
                    self.log_data(stream, data);
                }
                self.broadcast(&target, stream, data);
                Some(n)
            }
        };
        self.buf = buf;
        read
    }

    /// Reads what the init's output pipes hold now (each until it would block, at most
    /// [`MAX_DRAIN`] bytes, so a process writing without pause cannot hold the loop), handled
    /// as the poll loop handles it: into the log and to attached clients.
    pub(super) fn drain_init_outputs(&mut self) {
        let ids: Vec<u64> = self
            .outputs
            .iter()
            .filter(|(_, o)| o.target == Target::Init)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let mut budget = MAX_DRAIN;
            while budget > 0 {
                match self.on_output(id) {
                    Some(n) if n > 0 => budget = budget.saturating_sub(n),
                    _ => break,
                }
            }
        }
    }

    pub(super) fn log_data(&mut self, stream: u8, data: &[u8]) {
        let Some(log) = self.log.as_mut() else { return };
        let name = if stream == STDERR { "stderr" } else { "stdout" };
        let time = now_rfc3339();
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

    pub(super) fn log_flush(&mut self, stream: u8) {
        let Some(log) = self.log.as_mut() else { return };
        let name = if stream == STDERR { "stderr" } else { "stdout" };
        let time = now_rfc3339();
        self.splitters[(stream == STDERR) as usize].finish(|e| {
            let _ = log.write_entry(name, e, &time);
        });
    }

    /// Whether a client attached to `target`'s output holds [`CLIENT_HIGH_WATER`] unsent:
    /// the output is not read until it has taken some.
    pub(super) fn client_behind(&self, target: &Target) -> bool {
        self.conns.values().any(|c| {
            matches!(&c.mode, Mode::Stream { target: t, .. } if t == target)
                && c.wbuf.len() >= CLIENT_HIGH_WATER
        })
    }

    pub(super) fn broadcast(&mut self, target: &Target, stream: u8, data: &[u8]) {
        for c in self.conns.values_mut() {
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
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.try_flush(id);
        }
    }

    /// Writes what a connection has buffered; closes it when done and asked to.
    pub(super) fn try_flush(&mut self, id: u64) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match write_out(&mut c.wbuf, |b| sys::send(&c.sock, b)) {
            Flush::Done => {}
            Flush::Blocked => return,
            Flush::Failed => {
                self.drop_conn(id);
                return;
            }
        }
        if c.close_after_flush {
            self.drop_conn(id);
        }
    }

    pub(super) fn drop_conn(&mut self, id: u64) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if !c.read_closed {
            self.stream_input_closed(&c.mode);
        }
    }

    /// A stream client stopped sending: close the process's stdin if it asked for that.
    pub(super) fn stream_input_closed(&mut self, mode: &Mode) {
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

    pub(super) fn flush_sink(&mut self, t: &Target) {
        let Some(p) = self.proc_mut(t) else { return };
        let Some(s) = p.stdin.as_mut() else { return };
        match write_out(&mut s.buf, |b| sys::write(&s.fd, b)) {
            Flush::Done => {}
            Flush::Blocked => return,
            Flush::Failed => {
                p.stdin = None;
                return;
            }
        }
        if s.close_pending {
            if s.tty {
                // A pty cannot be half-closed: end the input with ^D, as a terminal does.
                let _ = sys::write(&s.fd, &[4]);
            }
            p.stdin = None;
        }
    }

    pub(super) fn on_conn(&mut self, id: u64, rev: i16) {
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

    pub(super) fn read_conn(&mut self, id: u64) {
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

    pub(super) fn feed_stdin(&mut self, t: &Target, data: &[u8]) {
        if let Some(s) = self.proc_mut(t).and_then(|p| p.stdin.as_mut()) {
            if !s.close_pending {
                s.buf.extend_from_slice(data);
            }
        }
        self.flush_sink(t);
    }

    pub(super) fn reply(&mut self, id: u64, v: &Value) {
        if let Some(c) = self.conns.get_mut(&id) {
            let _ = serde_json::to_writer(&mut c.wbuf, v);
            c.wbuf.push(b'\n');
        }
        self.try_flush(id);
    }
}

/// How far [`write_out`] got.
enum Flush {
    /// Everything was written.
    Done,
    /// The descriptor would block; the rest stays buffered.
    Blocked,
    /// Writing failed.
    Failed,
}

/// Writes `buf` out with `write` (a non-blocking descriptor), dropping what was written.
fn write_out(buf: &mut Vec<u8>, mut write: impl FnMut(&[u8]) -> io::Result<usize>) -> Flush {
    while !buf.is_empty() {
        match write(buf) {
            Ok(n) => {
                buf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
            Err(_) => return Flush::Failed,
        }
    }
    Flush::Done
}
