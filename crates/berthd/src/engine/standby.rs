//! A shim started ahead of need: `berth-shim --standby`, its standard output a socket to the
//! daemon on which it waits for its command line. A container start hands the waiting shim
//! its arguments instead of spawning one: the exec of the shim and its C library's start
//! (hundreds of microseconds of CPUID traps in a VM) are then off the start's critical path,
//! done in the background after the previous start. What the shim does with its arguments
//! is exactly what a freshly spawned one does (`berth_shim::standby`).
//!
//! A standby has the runtime's sealed copy as its standard input, so it serves only starts
//! that pass that copy (`--runtime-fd 0`); others spawn their shim. The daemon's end of the
//! socket closing (the daemon exited or was killed) makes a waiting standby exit.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One shim waiting for its command line.
struct Standby {
    child: Child,
    sock: UnixStream,
}

impl Standby {
    fn spawn(pool: &Pool, runtime: &OwnedFd) -> std::io::Result<Standby> {
        let (ours, theirs) = UnixStream::pair()?;
        let child = Command::new(&pool.shim)
            .arg("--standby")
            .arg("--runtime-root")
            .arg(&pool.runtime_root)
            .arg("--id")
            .arg(berth_shim::sys::STANDBY_ID)
            .stdin(Stdio::from(runtime.try_clone()?))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Standby { child, sock: ours })
    }

    /// Gives the shim `args` and waits for the launch to end, as `Command::output` does for
    /// a spawned one: what it printed, its exit status. `None` when the standby was gone
    /// before it got them (nothing was started: the caller spawns a shim instead).
    fn launch(mut self, args: &[String]) -> Option<std::io::Result<Output>> {
        let mut line = serde_json::to_vec(args).ok()?;
        line.push(b'\n');
        if self.sock.write_all(&line).is_err() {
            self.retire();
            return None;
        }
        Some(self.finish())
    }

    fn finish(mut self) -> std::io::Result<Output> {
        let mut stdout = Vec::new();
        let read = self.sock.read_to_end(&mut stdout);
        drop(self.sock);
        let mut stderr = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        let status = self.child.wait()?;
        read?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Lets a standby go unused: it exits on the closed socket; reaped here.
    fn retire(mut self) {
        drop(self.sock);
        let _ = self.child.wait();
    }
}

/// The daemon's standby shim (at most one: starts come one at a time from a client, and a
/// start finding none spawns its own).
pub(crate) struct Pool {
    shim: PathBuf,
    /// The runtime root every start passes (`--runtime-root`), in the standby's command line
    /// from its start, as its container's id once it has one: what the daemon's recovery
    /// finds shims by.
    runtime_root: PathBuf,
    runtime: Option<OwnedFd>,
    slot: Mutex<Option<Standby>>,
    /// A refill is under way (one at a time: a burst of starts finds the slot empty at
    /// each but the first).
    refilling: AtomicBool,
}

impl Pool {
    /// A pool for `shim` with the runtime's sealed copy (none: no standbys), filled in the
    /// background.
    pub(crate) fn new(
        shim: PathBuf,
        runtime_root: PathBuf,
        runtime: Option<&OwnedFd>,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            shim,
            runtime_root,
            runtime: runtime.and_then(|fd| fd.try_clone().ok()),
            slot: Mutex::new(None),
            refilling: AtomicBool::new(false),
        });
        pool.refill();
        pool
    }

    /// Runs the shim with `args` (which pass the runtime's copy as standard input) through
    /// the standby when there is one, otherwise through `cmd`; then a new standby is started
    /// in the background.
    pub(crate) fn output(self: &Arc<Self>, cmd: &mut Command) -> std::io::Result<Output> {
        let standby = self.slot.lock().unwrap().take();
        let Some(standby) = standby else {
            let out = cmd.output();
            self.refill();
            return out;
        };
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let out = standby.launch(&args).unwrap_or_else(|| cmd.output());
        self.refill();
        out
    }

    /// Starts a standby in the background if there is none.
    fn refill(self: &Arc<Self>) {
        if self.runtime.is_none()
            || self.slot.lock().unwrap().is_some()
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("berth-standby".into())
            .spawn(move || {
                if let Some(runtime) = &me.runtime {
                    match Standby::spawn(&me, runtime) {
                        Ok(s) => *me.slot.lock().unwrap() = Some(s),
                        Err(e) => tracing::debug!("starting a standby shim: {e}"),
                    }
                }
                me.refilling.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.refilling.store(false, Ordering::Release);
            tracing::debug!("starting a standby shim: {e}");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(s) = self.slot.get_mut().unwrap().take() {
            s.retire();
        }
    }
}
