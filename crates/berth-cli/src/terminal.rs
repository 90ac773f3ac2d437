//! Terminals and attached sessions: raw mode ([`RawTerminal`]), the terminal's size, Docker's
//! detach keys ([`parse_detach_keys`]), an interactive session over a hijacked stream
//! ([`interactive`]), waiting for a container's exit ([`spawn_wait`]) and the forwarding of
//! this process's signals to a container ([`SignalProxy`], Docker's `--sig-proxy`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_api::container::WaitResponse;

use crate::api::{self, enc, ApiError, Host};
use crate::error::{CliError, Result};

/// The terminal of this process in raw mode, restored on drop.
pub struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    pub fn enter() -> RawTerminal {
        use rustix::termios;
        let stdin = std::io::stdin();
        if !termios::isatty(&stdin) {
            return RawTerminal { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, &raw);
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// The size of the terminal on stdout (or stdin, stderr): (rows, cols).
pub fn term_size() -> Option<(u16, u16)> {
    use std::os::fd::AsFd;
    let fds = [
        std::io::stdout().as_fd().try_clone_to_owned().ok()?,
        std::io::stdin().as_fd().try_clone_to_owned().ok()?,
        std::io::stderr().as_fd().try_clone_to_owned().ok()?,
    ];
    for fd in fds {
        if let Ok(ws) = rustix::termios::tcgetwinsize(&fd) {
            if ws.ws_row > 0 {
                return Some((ws.ws_row, ws.ws_col));
            }
        }
    }
    None
}

/// Docker's `--detach-keys` (`berth_api::detach::parse`; empty: ctrl-p, ctrl-q).
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    berth_api::detach::parse(s)
        .map_err(|e| CliError::Message(format!("invalid detach keys ({s:?}): {e}")))
}

/// Runs an interactive session over a hijacked stream: stdin to the stream (through the
/// detach keys on a tty), the stream to stdout/stderr, window-size changes to `resize_path`.
/// Returns whether the user detached.
pub fn interactive(
    host: &Host,
    stream: std::io::BufReader<UnixStream>,
    tty: bool,
    stdin: bool,
    resize_path: Option<String>,
    detach_keys: &[u8],
) -> Result<bool> {
    let raw = if tty {
        Some(RawTerminal::enter())
    } else {
        None
    };
    let mut writer = stream.get_ref().try_clone()?;
    let detached = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    if let Some(rp) = resize_path.clone() {
        let host = host.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last = None;
            while !done.load(Ordering::Relaxed) {
                let now = term_size();
                if now.is_some() && now != last {
                    if let Some((h, wd)) = now {
                        let sep = if rp.contains('?') { '&' } else { '?' };
                        let _ = host.call("POST", &format!("{rp}{sep}h={h}&w={wd}"), None);
                    }
                    last = now;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
    if stdin {
        let detached = detached.clone();
        let sock = stream.get_ref().try_clone()?;
        let keys = detach_keys.to_vec();
        std::thread::spawn(move || {
            let mut input = std::io::stdin();
            let mut buf = [0u8; 4096];
            let mut proxy = berth_api::detach::EscapeProxy::new(keys);
            let mut pass = Vec::with_capacity(4096);
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pass.clear();
                // Docker filters only a tty's input (piped input is data).
                if tty {
                    if proxy.feed(&buf[..n], &mut pass) {
                        let _ = writer.write_all(&pass);
                        detached.store(true, Ordering::SeqCst);
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                } else {
                    pass.extend_from_slice(&buf[..n]);
                }
                if writer.write_all(&pass).is_err() {
                    return;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
    }
    let mut r = stream;
    let out = std::io::stdout();
    let err = std::io::stderr();
    let res = if tty {
        let mut o = out.lock();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = o.write_all(&buf[..n]);
                    let _ = o.flush();
                }
            }
        }
        Ok(())
    } else {
        api::demux(&mut r, &mut out.lock(), &mut err.lock())
    };
    done.store(true, Ordering::Relaxed);
    drop(raw);
    let detached = detached.load(Ordering::SeqCst);
    if !detached {
        if let Err(e) = res {
            if !matches!(e, ApiError::Io(_)) {
                return Err(e.into());
            }
        }
    }
    Ok(detached)
}

/// Waits (in a thread, from now) for a container's exit.
pub fn spawn_wait(
    host: &Host,
    id: &str,
    condition: &str,
) -> std::thread::JoinHandle<Result<i64, ApiError>> {
    // Registered (headers received) before the caller goes on to start the container.
    let pending = api::begin(
        host,
        "POST",
        &format!("/containers/{id}/wait?condition={condition}"),
        None,
    );
    std::thread::spawn(move || {
        let w: WaitResponse = pending?.finish()?.decode()?;
        Ok(w.status_code)
    })
}

/// A session attached to container `id` ([`interactive`]) until it ends: the container's exit
/// status from `waiter` ([`spawn_wait`]), or 0 when the detach keys were pressed.
pub fn container_session(
    host: &Host,
    id: &str,
    stream: std::io::BufReader<UnixStream>,
    tty: bool,
    stdin: bool,
    detach_keys: &[u8],
    waiter: std::thread::JoinHandle<Result<i64, ApiError>>,
) -> Result<i32> {
    let resize = tty.then(|| format!("/containers/{id}/resize"));
    if interactive(host, stream, tty, stdin, resize, detach_keys)? {
        return Ok(0);
    }
    Ok(join_wait(waiter))
}

pub fn join_wait(h: std::thread::JoinHandle<Result<i64, ApiError>>) -> i32 {
    match h.join() {
        Ok(Ok(code)) => code as i32,
        _ => 125,
    }
}

/// Forwards the signals this process receives to a container while it lives, as the docker
/// CLI's `--sig-proxy` (on by default for attached containers without a terminal): `SIGINT`
/// from Ctrl-C reaches the container's process instead of ending the CLI. As Docker's, three
/// `SIGINT`/`SIGTERM` in a row end the CLI anyway (the container keeps running).
pub struct SignalProxy {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The signals forwarded: every catchable one but `SIGCHLD`, `SIGPIPE` and `SIGURG` (as
/// Docker's `ForwardAllSignals`).
fn forwarded_signals() -> Vec<i32> {
    use signal_hook::consts::signal::*;
    let mut v = vec![
        SIGHUP, SIGINT, SIGQUIT, SIGTRAP, SIGABRT, SIGBUS, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM,
        SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO,
        SIGSYS,
    ];
    v.retain(|s| !signal_hook::consts::FORBIDDEN.contains(s));
    v
}

impl SignalProxy {
    /// Starts forwarding to container `id`.
    pub fn start(host: &Host, id: &str) -> Result<SignalProxy> {
        let mut signals = signal_hook::iterator::Signals::new(forwarded_signals())
            .map_err(|e| CliError::Message(format!("Error: forwarding signals: {e}")))?;
        let handle = signals.handle();
        let host = host.clone();
        let id = id.to_string();
        // Standard error of its own: the main thread may hold the lock of `Stderr`.
        let mut stderr = {
            use std::os::fd::AsFd;
            std::io::stderr()
                .as_fd()
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .ok()
        };
        let thread = std::thread::spawn(move || {
            let mut interrupts = 0;
            for sig in signals.forever() {
                let name = signal_name(sig);
                let _ = host.call(
                    "POST",
                    &format!("/containers/{id}/kill?signal={}", enc(name)),
                    None,
                );
                if sig == signal_hook::consts::SIGINT || sig == signal_hook::consts::SIGTERM {
                    interrupts += 1;
                    if interrupts >= 3 {
                        if let Some(e) = stderr.as_mut() {
                            let _ = e.write_all(b"got 3 SIGTERM/SIGINTs, forcefully exiting\n");
                        }
                        std::process::exit(1);
                    }
                }
            }
        });
        Ok(SignalProxy {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalProxy {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The name the kill route takes for a signal number.
fn signal_name(sig: i32) -> &'static str {
    use signal_hook::consts::signal::*;
    match sig {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGTRAP => "SIGTRAP",
        SIGABRT => "SIGABRT",
        SIGBUS => "SIGBUS",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGALRM => "SIGALRM",
        SIGTERM => "SIGTERM",
        SIGCONT => "SIGCONT",
        SIGTSTP => "SIGTSTP",
        SIGTTIN => "SIGTTIN",
        SIGTTOU => "SIGTTOU",
        SIGXCPU => "SIGXCPU",
        SIGXFSZ => "SIGXFSZ",
        SIGVTALRM => "SIGVTALRM",
        SIGPROF => "SIGPROF",
        SIGWINCH => "SIGWINCH",
        SIGIO => "SIGIO",
        SIGSYS => "SIGSYS",
        _ => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_parsed_by_the_api_rules() {
        assert_eq!(parse_detach_keys("").unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert!(parse_detach_keys("ctrl-A").is_err());
    }

    #[test]
    fn forwarded_signals_are_named() {
        let sigs = forwarded_signals();
        assert!(sigs.contains(&signal_hook::consts::SIGINT));
        assert!(!sigs.contains(&signal_hook::consts::SIGCHLD));
        for s in sigs {
            assert_ne!(signal_name(s), "", "{s}");
            if s != signal_hook::consts::SIGTERM {
                assert_ne!(signal_name(s), "SIGTERM", "{s}");
            }
        }
    }
}
