//! An async client of a shim's line-JSON control socket, speaking berth-shim's typed
//! [`Request`]s.

use std::path::{Path, PathBuf};

use berth_shim::protocol::Request;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A shim's reply (`{"ok": true, …}`; the fields a request's reply carries).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reply {
    pub ok: bool,
    pub error: Option<String>,
    /// `wait`: the exit status.
    pub exit_code: Option<i64>,
    /// `wait`: when it exited.
    pub finished_at: Option<String>,
    /// `exec`: the process's pid.
    pub pid: Option<i64>,
    /// `state`: created, running or stopped.
    pub status: Option<String>,
}

/// What the `berth-shim` starter prints once the container is created.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StartReport {
    /// The shim's pid.
    pub pid: i64,
    /// The container's init.
    pub init_pid: i64,
    /// The shim's control socket.
    pub socket: PathBuf,
}

/// The payload of an exec stream's exit frame.
#[derive(Debug, Deserialize)]
pub struct ExitFrame {
    #[serde(default = "minus_one")]
    pub exit_code: i64,
}

fn minus_one() -> i64 {
    -1
}

impl ExitFrame {
    /// The exit code of a frame's payload (-1 when unreadable).
    pub fn code(payload: &[u8]) -> i64 {
        serde_json::from_slice::<ExitFrame>(payload)
            .map(|f| f.exit_code)
            .unwrap_or(-1)
    }
}

/// Connects to a shim socket (long paths work through `/proc/self/fd`).
pub async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let s = socket.to_path_buf();
    let std = tokio::task::spawn_blocking(move || berth_shim::client::connect_path(&s))
        .await
        .map_err(std::io::Error::other)??;
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// Sends one request on a connection and reads one reply line.
pub async fn call_on(stream: &mut UnixStream, req: &Request) -> std::io::Result<Reply> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    // Read byte-wise up to the newline so nothing after the reply is consumed (streams follow).
    let mut buf = Vec::new();
    let mut r = BufReader::with_capacity(1, &mut *stream);
    r.read_until(b'\n', &mut buf).await?;
    if buf.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "shim closed the connection",
        ));
    }
    let reply: Reply = serde_json::from_slice(&buf).map_err(std::io::Error::other)?;
    if reply.ok {
        Ok(reply)
    } else {
        Err(std::io::Error::other(
            reply.error.unwrap_or_else(|| "shim error".to_string()),
        ))
    }
}

/// Connects, sends one request, returns the reply.
pub async fn call(socket: &Path, req: Request) -> std::io::Result<Reply> {
    let mut s = connect(socket).await?;
    call_on(&mut s, &req).await
}

/// Copies an attach or exec client's input to the shim; with `keys` (a tty session, as
/// dockerd) through Docker's escape proxy, stopping at the detach sequence. Returns whether the
/// client detached (else its input ended).
pub async fn copy_input<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    keys: Option<Vec<u8>>,
) -> bool {
    let mut proxy = keys.map(berth_api::detach::EscapeProxy::new);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(buf.len());
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        out.clear();
        let detached = match proxy.as_mut() {
            Some(p) => p.feed(&buf[..n], &mut out),
            None => {
                out.extend_from_slice(&buf[..n]);
                false
            }
        };
        if !out.is_empty() && w.write_all(&out).await.is_err() {
            return false;
        }
        if detached {
            return true;
        }
    }
}

/// The detach keys of an attach or exec (`detachKeys`; empty: ctrl-p, ctrl-q), or dockerd's
/// error for keys it cannot parse.
pub fn detach_keys(spec: &str) -> Result<Vec<u8>, crate::engine::EngineError> {
    berth_api::detach::parse(spec).map_err(|_| {
        crate::engine::EngineError::BadRequest(format!("Invalid detach keys ({spec}) provided"))
    })
}
