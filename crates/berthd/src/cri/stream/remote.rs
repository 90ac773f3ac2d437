//! Exec and attach sessions (the kubelet's `remotecommand`): the client's streams or
//! channels set up, then the engine's exec (`exec_create` + `exec_start`: the shim's framed
//! stream, its exit frame) or attach (the shim's attach stream) copied to and from them,
//! resizes as the shim's `resize`, and the outcome on the error stream: a JSON `Status` with
//! protocols v4/v5 (the exit code a `NonZeroExitCode` cause), its message alone before.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::idle::Gone;
use super::session::{SpdyConn, SpdyOut, WsConn, WsOut};
use super::{Pending, STREAM_CREATION_TIMEOUT};
use crate::cri::Cri;

/// The WebSocket channels of exec/attach.
const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;
const CH_RESIZE: u8 = 4;

/// How long the exit of an exec killed because its client went is waited for.
const EXIT_AFTER_KILL: std::time::Duration = std::time::Duration::from_secs(10);

/// Which streams a session has (the CRI request's; no stderr with a tty).
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Opts {
    pub fn of(p: &Pending) -> Opts {
        let (stdin, stdout, stderr, tty) = match p {
            Pending::Exec(e) => (e.stdin, e.stdout, e.stderr, e.tty),
            Pending::Attach(a) => (a.stdin, a.stdout, a.stderr, a.tty),
            Pending::PortForward(_) => (false, false, false, false),
        };
        Opts {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        }
    }
}

/// Where output goes.
enum Out {
    Spdy {
        out: SpdyOut,
        stdout: Option<u32>,
        stderr: Option<u32>,
        error: Option<u32>,
    },
    Ws {
        out: WsOut,
        stdout: bool,
        stderr: bool,
    },
}

impl Out {
    /// Writes to stdout (1) or stderr (2); false once the client is gone.
    async fn write(&self, stream: u8, data: &[u8]) -> bool {
        match self {
            Out::Spdy {
                out,
                stdout,
                stderr,
                ..
            } => match if stream == CH_STDERR { stderr } else { stdout } {
                Some(id) => out.data(*id, data).await,
                None => true,
            },
            Out::Ws {
                out,
                stdout,
                stderr,
            } => {
                let (on, ch) = if stream == CH_STDERR {
                    (*stderr, CH_STDERR)
                } else {
                    (*stdout, CH_STDOUT)
                };
                !on || out.send(ch, data).await
            }
        }
    }

    async fn error(&self, data: &[u8]) {
        match self {
            Out::Spdy {
                out,
                error: Some(id),
                ..
            } => {
                out.data(*id, data).await;
            }
            Out::Spdy { .. } => {}
            Out::Ws { out, .. } => {
                out.send(CH_ERROR, data).await;
            }
        }
    }
}

/// The end of a session: an exit code (attach: 0), or why it failed.
type Outcome = Result<i64, String>;

/// metav1.Status as the v4 error stream carries it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub metadata: Meta,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Details {
    pub causes: Vec<Cause>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Cause {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn status_of(o: &Outcome, what: &str) -> Status {
    match o {
        Ok(0) => Status {
            metadata: Meta {},
            status: "Success".into(),
            message: String::new(),
            reason: String::new(),
            details: None,
            code: None,
        },
        Ok(code) => Status {
            metadata: Meta {},
            status: "Failure".into(),
            message: format!(
                "command terminated with non-zero exit code: error executing command {what}, exit code {code}"
            ),
            reason: "NonZeroExitCode".into(),
            details: Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode".into(),
                    message: code.to_string(),
                }],
            }),
            code: None,
        },
        Err(msg) => Status {
            metadata: Meta {},
            status: "Failure".into(),
            message: msg.clone(),
            reason: "InternalError".into(),
            details: Some(Details {
                causes: vec![Cause {
                    reason: String::new(),
                    message: msg.clone(),
                }],
            }),
            code: Some(500),
        },
    }
}

/// What goes on the error stream: the JSON status (v4 and later), or before v4 the message of
/// a failure (nothing on success).
fn error_stream(o: &Outcome, what: &str, json: bool) -> Vec<u8> {
    let s = status_of(o, what);
    if json {
        serde_json::to_vec(&s).unwrap_or_default()
    } else if s.status == "Success" {
        Vec::new()
    } else {
        s.message.into_bytes()
    }
}

/// Serves an exec or attach URL.
pub async fn serve(
    cri: Arc<Cri>,
    pending: Pending,
    req: Request<Body>,
    gone: Gone,
) -> Response<Body> {
    let opts = Opts::of(&pending);
    if super::is_websocket(req.headers()) {
        let hs = super::ws_handshake(&req, super::WS_REMOTE_COMMAND);
        return super::upgrade(req, hs, move |proto, up| async move {
            let mut readable = vec![CH_RESIZE];
            if opts.stdin {
                readable.push(CH_STDIN);
            }
            let mut conn = WsConn::new(up, &proto, &readable);
            // An empty message on the first writable channel says the session is set up.
            let first = if opts.stdout {
                CH_STDOUT
            } else if opts.stderr {
                CH_STDERR
            } else {
                CH_ERROR
            };
            conn.out.send(first, &[]).await;
            let out = Out::Ws {
                out: conn.out.clone(),
                stdout: opts.stdout,
                stderr: opts.stderr,
            };
            let stdin = conn.inputs.remove(&CH_STDIN);
            let resize = conn.inputs.remove(&CH_RESIZE);
            let json = proto.starts_with("v4.") || proto.starts_with("v5.");
            let what = describe(&pending);
            let outcome = run(&cri, pending, opts, stdin, resize, &out, gone).await;
            out.error(&error_stream(&outcome, &what, json)).await;
            drop(out);
            conn.close().await;
        });
    }
    let hs = super::spdy_handshake(&req, super::SPDY_REMOTE_COMMAND);
    super::upgrade(req, hs, move |proto, up| async move {
        let mut conn = SpdyConn::new(up);
        // v3 and later have a resize stream with a tty; v4 and later a JSON status.
        let resizes = !matches!(proto.as_str(), "" | "channel.k8s.io" | "v2.channel.k8s.io");
        let json = proto.starts_with("v4.") || proto.starts_with("v5.");
        let expected = 1
            + usize::from(opts.stdin)
            + usize::from(opts.stdout)
            + usize::from(opts.stderr)
            + usize::from(opts.tty && resizes);
        let (mut stdin, mut resize) = (None, None);
        let (mut stdout, mut stderr, mut error) = (None, None, None);
        let mut got = 0;
        let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
        tokio::pin!(deadline);
        while got < expected {
            let s = tokio::select! {
                s = conn.streams.recv() => s,
                _ = &mut deadline => None,
            };
            let Some(s) = s else {
                tracing::debug!("CRI stream: the client did not open its streams");
                conn.close().await;
                return;
            };
            match s.header("streamtype").unwrap_or("") {
                "error" => error = Some(s.id),
                "stdin" => stdin = Some(s.data),
                "stdout" => stdout = Some(s.id),
                "stderr" => stderr = Some(s.id),
                "resize" => resize = Some(s.data),
                other => {
                    tracing::debug!("CRI stream: unexpected stream type {other:?}");
                    continue;
                }
            }
            got += 1;
        }
        let out = Out::Spdy {
            out: conn.out.clone(),
            stdout,
            stderr,
            error,
        };
        let what = describe(&pending);
        let outcome = run(&cri, pending, opts, stdin, resize, &out, gone).await;
        out.error(&error_stream(&outcome, &what, json)).await;
        for id in [stdout, stderr, error].into_iter().flatten() {
            conn.out.fin(id).await;
        }
        drop(out);
        conn.close().await;
    })
}

fn describe(p: &Pending) -> String {
    match p {
        Pending::Exec(e) => format!("{:?}", e.cmd),
        _ => String::new(),
    }
}

/// The terminal sizes a resize stream carries: JSON objects one after the other.
#[derive(Debug, Deserialize)]
struct TermSize {
    #[serde(rename = "Width", alias = "width")]
    width: u16,
    #[serde(rename = "Height", alias = "height")]
    height: u16,
}

/// [`resizes`], then waits for good: a session ends by its other parts.
async fn resizes_then_wait<F, Fut>(rx: Option<mpsc::Receiver<Vec<u8>>>, apply: F)
where
    F: Fn(u16, u16) -> Fut,
    Fut: std::future::Future,
{
    resizes(rx, apply).await;
    std::future::pending::<()>().await
}

/// Reads terminal sizes from `rx` and applies each with `apply(rows, cols)`; returns at the
/// stream's end (or at bad input).
async fn resizes<F, Fut>(rx: Option<mpsc::Receiver<Vec<u8>>>, apply: F)
where
    F: Fn(u16, u16) -> Fut,
    Fut: std::future::Future,
{
    let Some(mut rx) = rx else { return };
    let mut buf = Vec::new();
    while let Some(b) = rx.recv().await {
        buf.extend_from_slice(&b);
        let mut sizes = Vec::new();
        let used = {
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
            loop {
                match it.next() {
                    Some(Ok(s)) => sizes.push(s),
                    Some(Err(e)) if e.is_eof() => break it.byte_offset(),
                    Some(Err(e)) => {
                        tracing::debug!("CRI stream: bad terminal size: {e}");
                        return;
                    }
                    None => break it.byte_offset(),
                }
            }
        };
        buf.drain(..used);
        for s in sizes {
            if s.width > 0 && s.height > 0 {
                // A failed resize is no reason to end the session.
                let _ = apply(s.height, s.width).await;
            }
        }
    }
}

/// Copies the shim's output to the client: framed (exec, attach without a tty) or raw. Returns
/// the exit frame's code.
async fn pump<R: AsyncRead + Unpin>(r: &mut R, framed: bool, out: &Out) -> Option<i64> {
    if framed {
        let mut frames = crate::exec::Frames::new(r);
        let mut client = true;
        loop {
            if let Err(code) = frames.next().await {
                return code;
            }
            let (stream, data) = frames.frame();
            // Keep draining after the client went, for the exit code.
            if client {
                client = out.write(stream, data).await;
            }
        }
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => {
                if !out.write(CH_STDOUT, &buf[..n]).await {
                    return None;
                }
            }
        }
    }
}

/// Copies the client's stdin to the shim until the client closes it; false when it was not
/// asked for.
async fn copy_stdin<W: tokio::io::AsyncWrite + Unpin>(
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    w: &mut W,
) -> bool {
    let Some(mut rx) = stdin else { return false };
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            break;
        }
    }
    true
}

async fn run(
    cri: &Arc<Cri>,
    pending: Pending,
    opts: Opts,
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    resize: Option<mpsc::Receiver<Vec<u8>>>,
    out: &Out,
    mut gone: Gone,
) -> Outcome {
    let engine = cri.engine.clone();
    match pending {
        Pending::Exec(req) => {
            let (rec, _) = cri
                .container(&req.container_id)
                .map_err(|s| s.message().to_string())?;
            let id = engine
                .exec_create(
                    &rec.id,
                    &berth_api::exec::CreateRequest {
                        cmd: Some(req.cmd.clone()),
                        tty: opts.tty,
                        attach_stdin: opts.stdin,
                        attach_stdout: opts.stdout,
                        attach_stderr: opts.stderr,
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
            let (_, shim) = engine.exec_start(&id).await.map_err(|e| e.to_string())?;
            let (mut sr, mut sw) = shim.into_split();
            let input = async {
                copy_stdin(stdin, &mut sw).await;
                let _ = sw.shutdown().await;
                std::future::pending::<()>().await
            };
            let (e, exec) = (&engine, &id);
            let sizes =
                resizes_then_wait(resize, move |rows, cols| e.exec_resize(exec, rows, cols));
            let ended = tokio::select! {
                c = pump(&mut sr, true, out) => Some(c),
                _ = input => Some(None),
                _ = sizes => Some(None),
                _ = gone.wait() => None,
            };
            let code = match ended {
                Some(c) => c,
                None => {
                    // The client went (or its connection idled out): its process goes too
                    // (containerd kills it), and its exit frame is read for the record.
                    tracing::debug!("CRI exec {id}: the client's connection ended, killing it");
                    cri.kill_exec(&rec.id, &id).await;
                    tokio::time::timeout(EXIT_AFTER_KILL, pump(&mut sr, true, out))
                        .await
                        .ok()
                        .flatten()
                }
            };
            let code = code.unwrap_or(-1);
            engine.exec_exited(&id, code);
            if code < 0 {
                return Err("the exec's stream ended without an exit code".into());
            }
            Ok(code)
        }
        Pending::Attach(req) => {
            let (rec, c) = cri
                .container(&req.container_id)
                .map_err(|s| s.message().to_string())?;
            if !c.state.running {
                return Err(format!("container {} is not running", rec.id));
            }
            let stays_open = c.closes_stdin();
            let (tty, rx) = engine
                .attach(&rec.id, opts.stdin, opts.stdout, opts.stderr)
                .map_err(|e| e.to_string())?;
            let shim = rx
                .await
                .map_err(|_| "the attach was abandoned".to_string())?
                .map_err(|e| format!("attaching to the container's shim: {e}"))?;
            let (mut sr, mut sw) = shim.into_split();
            let input = async {
                if copy_stdin(stdin, &mut sw).await {
                    // The client closed its input: with StdinOnce (no tty) the container's
                    // stdin closes and its output goes on to the end; else the session ends.
                    let _ = sw.shutdown().await;
                    if !stays_open {
                        return;
                    }
                }
                std::future::pending::<()>().await
            };
            let (e, cid) = (&engine, &rec.id);
            let sizes = resizes_then_wait(resize, move |rows, cols| e.resize(cid, rows, cols));
            tokio::select! {
                _ = pump(&mut sr, !tty, out) => {}
                _ = input => {}
                _ = sizes => {}
                // The client went: the attach ends (the container runs on).
                _ = gone.wait() => {}
            }
            Ok(0)
        }
        Pending::PortForward(_) => Err("not an exec or attach".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stream_as_client_go_reads_it() {
        let ok = error_stream(&Ok(0), "[\"true\"]", true);
        assert_eq!(
            String::from_utf8(ok).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let s: Status = serde_json::from_slice(&error_stream(&Ok(3), "[\"false\"]", true)).unwrap();
        assert_eq!(s.reason, "NonZeroExitCode");
        assert_eq!(s.details.unwrap().causes[0].message, "3");
        // Before v4: nothing on success, the message on failure.
        assert!(error_stream(&Ok(0), "", false).is_empty());
        assert_eq!(error_stream(&Err("boom".into()), "", false), b"boom");
    }

    #[tokio::test]
    async fn resize_stream_in_pieces() {
        let (tx, rx) = mpsc::channel(8);
        tx.send(br#"{"Width":80,"He"#.to_vec()).await.unwrap();
        tx.send(br#"ight":24}{"Width":100,"Height":30}"#.to_vec())
            .await
            .unwrap();
        drop(tx);
        let got = std::sync::Mutex::new(Vec::new());
        resizes(Some(rx), |r, c| {
            got.lock().unwrap().push((r, c));
            async {}
        })
        .await;
        assert_eq!(*got.lock().unwrap(), vec![(24, 80), (30, 100)]);
    }
}
