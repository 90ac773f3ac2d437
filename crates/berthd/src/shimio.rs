//! An async client for a shim's line-JSON control socket.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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
pub async fn call_on(stream: &mut UnixStream, req: &Value) -> std::io::Result<Value> {
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
    let v: Value = serde_json::from_slice(&buf).map_err(std::io::Error::other)?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(v)
    } else {
        Err(std::io::Error::other(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("shim error")
                .to_string(),
        ))
    }
}

/// Connects, sends one request, returns the reply.
pub async fn call(socket: &Path, req: Value) -> std::io::Result<Value> {
    let mut s = connect(socket).await?;
    call_on(&mut s, &req).await
}
