//! The control-socket protocol (`DIR/shim.sock`, a unix stream socket).
//!
//! Requests and replies are single lines of JSON. Each request is an object with an `op`:
//!
//! | request | reply |
//! |---|---|
//! | `{"op":"start"}` | `{"ok":true}` (runs `runtime start`) |
//! | `{"op":"kill","signal":15\|"SIGTERM","all":false,"exec_id":null}` | `{"ok":true}` |
//! | `{"op":"state","exec_id":null}` | `{"ok":true,"id","pid","status":"created"\|"running"\|"stopped","exit_code","started_at","finished_at","tty"}` |
//! | `{"op":"wait","exec_id":null}` | blocks until exit: `{"ok":true,"exit_code":137,"finished_at":"…"}` |
//! | `{"op":"resize","rows":24,"cols":80,"exec_id":null}` | `{"ok":true}` (tty only) |
//! | `{"op":"attach","stdin":false,"stdout":true,"stderr":true,"close_stdin":true}` | `{"ok":true,"tty":false}`, then the stream |
//! | `{"op":"exec","exec_id":"e1","process":{OCI process},"tty":false,"stdin":false}` or with `"args":[…]` (+ `env`, `cwd`) instead of `process` | `{"ok":true,"exec_id":"e1","pid":123}`, then the stream |
//! | `{"op":"delete","force":false}` | `{"ok":true}` (runs `runtime delete`) |
//! | `{"op":"shutdown","force":false}` | `{"ok":true}`, then the shim deletes the container (if needed) and exits |
//! | `{"op":"reopen_log"}` | `{"ok":true}` once the log file is opened again at its path (after a rotation by someone else, the kubelet's) |
//!
//! Errors are `{"ok":false,"error":"…"}`; the connection stays usable (a line over 1 MiB closes it).
//! Several requests may be sent in turn on one connection, until `attach` or `exec`.
//!
//! **Streams.** After the reply to `attach`, the connection carries the container's output:
//! without a tty in Docker's multiplexed format (8-byte header: stream (1 stdout, 2 stderr),
//! three zero bytes, big-endian u32 payload length; then the payload), with a tty raw bytes. Bytes
//! the client sends are the container's stdin (when `stdin` was asked for and the shim was started
//! with `--stdin` or `--tty`); the client's half-close (`shutdown(SHUT_WR)`) closes the container's
//! stdin when `close_stdin` (with a tty: sends ^D). The shim closes the stream once the container
//! has exited and its output is drained.
//!
//! After the reply to `exec`, the stream is always framed (with a tty everything is stream 1), and
//! ends with one frame of stream [`EXIT`] whose payload is `{"exit_code":N}`. Stdin works as for
//! attach. The exit code also stays available to `wait`/`state` with the `exec_id` (the last 128).

use serde::{Deserialize, Serialize};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Exec streams end with a frame of this type; its payload is `{"exit_code":N}`.
pub const EXIT: u8 = 3;

/// Longest accepted request line.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Signal {
    Number(i32),
    Name(String),
}

impl Signal {
    pub fn number(&self) -> Option<i32> {
        match self {
            Signal::Number(n) if (1..=64).contains(n) => Some(*n),
            Signal::Number(_) => None,
            Signal::Name(s) => signal_by_name(s),
        }
    }
}

pub fn signal_by_name(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN")?;
            let off: i32 = if rt.is_empty() {
                0
            } else {
                rt.strip_prefix('+')?.parse().ok()?
            };
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    })
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Start,
    Kill {
        signal: Signal,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        exec_id: Option<String>,
    },
    State {
        #[serde(default)]
        exec_id: Option<String>,
    },
    Wait {
        #[serde(default)]
        exec_id: Option<String>,
    },
    Resize {
        rows: u16,
        cols: u16,
        #[serde(default)]
        exec_id: Option<String>,
    },
    Attach {
        #[serde(default)]
        stdin: bool,
        #[serde(default = "yes")]
        stdout: bool,
        #[serde(default = "yes")]
        stderr: bool,
        #[serde(default = "yes")]
        close_stdin: bool,
    },
    Exec {
        #[serde(default)]
        exec_id: Option<String>,
        /// A full OCI `process` object (its `terminal` is set from `tty`).
        #[serde(default)]
        process: Option<serde_json::Value>,
        /// Or: arguments run with the container's own process settings (env, cwd, user...).
        #[serde(default)]
        args: Option<Vec<String>>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
    },
    Delete {
        #[serde(default)]
        force: bool,
    },
    Shutdown {
        #[serde(default)]
        force: bool,
    },
    ReopenLog,
    /// Copy what the init's output pipes hold into the log before replying (bounded), so a
    /// log read after the reply has every byte the process wrote before the request.
    Drain,
}

/// The reply to `state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(default)]
    pub id: String,
    pub pid: i32,
    pub status: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub tty: bool,
}

/// What the shim writes to `DIR/exit.json` when the container's init is reaped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    pub id: String,
    pub pid: i32,
    pub exit_code: i32,
    #[serde(default)]
    pub started_at: Option<String>,
    pub finished_at: String,
}

/// The 8-byte header of a multiplexed frame.
pub fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    let l = (len as u32).to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

/// Appends one frame (splitting payloads over 4 GiB is never needed: reads are 32 KiB).
pub fn push_frame(out: &mut Vec<u8>, stream: u8, payload: &[u8]) {
    out.extend_from_slice(&frame_header(stream, payload.len()));
    out.extend_from_slice(payload);
}

/// An exec or attach id must be a safe file-name component.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let r: Request = serde_json::from_str(r#"{"op":"kill","signal":"SIGKILL"}"#).unwrap();
        assert_eq!(
            r,
            Request::Kill {
                signal: Signal::Name("SIGKILL".into()),
                all: false,
                exec_id: None
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"attach","stdin":true}"#).unwrap();
        assert!(matches!(
            r,
            Request::Attach {
                stdin: true,
                stdout: true,
                stderr: true,
                close_stdin: true
            }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"op":"nope"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"resize","rows":"x"}"#).is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(signal_by_name("TERM"), Some(15));
        assert_eq!(signal_by_name("sigkill"), Some(9));
        assert_eq!(signal_by_name("9"), Some(9));
        assert_eq!(signal_by_name("RTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(signal_by_name("NOPE"), None);
        assert_eq!(Signal::Number(0).number(), None);
    }

    #[test]
    fn frames() {
        let mut v = Vec::new();
        push_frame(&mut v, STDERR, b"hi");
        assert_eq!(v, [2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn ids() {
        assert!(valid_id("abc-1.2_x"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(".x"));
        assert!(!valid_id(""));
    }
}
