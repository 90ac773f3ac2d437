//! Both transports as tasks over an upgraded connection: a reader that routes what the client
//! sends to per-stream (SPDY) or per-channel (WebSocket) queues, and a writer that owns the
//! write half (and SPDY's header compressor). A queue's end is the client's close of that
//! stream or channel (SPDY `FIN`/`RST_STREAM`, WebSocket v5's channel 255, or the end of the
//! connection).

use std::collections::HashMap;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spdy::{self, Frame, Headers};
use super::ws;

/// The largest payload written in one frame or message.
const CHUNK: usize = 32 * 1024;

/// The two tasks of a connection.
struct Tasks {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Tasks {
    /// Sends the writer its `last` command (the close), lets it flush and end, and stops the
    /// reader.
    async fn close<C>(self, out: mpsc::Sender<C>, last: C) {
        let _ = out.send(last).await;
        drop(out);
        let _ = self.writer.await;
        self.reader.abort();
    }
}

/// The writer task of a connection: each command is `encode`d into a buffer that is written
/// and flushed; `encode` answers whether the connection closes after it (`None`: it could not
/// be encoded, the connection ends at once). The write half is shut down at the end.
fn spawn_writer<W, C, E>(mut w: W, mut rx: mpsc::Receiver<C>, mut encode: E) -> JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
    C: Send + 'static,
    E: FnMut(C, &mut Vec<u8>) -> Option<bool> + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(cmd) = rx.recv().await {
            buf.clear();
            let Some(close) = encode(cmd, &mut buf) else {
                break;
            };
            if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                break;
            }
            if close {
                break;
            }
        }
        let _ = w.shutdown().await;
    })
}

/// What a reader task reads next: `None` at the connection's end or on an error (logged as
/// `what`'s).
async fn next<T, E: std::fmt::Display>(
    what: &str,
    read: impl std::future::Future<Output = Result<Option<T>, E>>,
) -> Option<T> {
    match read.await {
        Ok(next) => next,
        Err(e) => {
            tracing::debug!("{what}: {e}");
            None
        }
    }
}

enum SpdyCmd {
    Frame(Frame),
    Close,
}

/// A stream the client opened.
pub struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; ends at its `FIN` (or reset, or the connection's end).
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl SpdyStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }
}

/// The writing side of a SPDY server connection.
#[derive(Clone)]
pub struct SpdyOut(mpsc::Sender<SpdyCmd>);

impl SpdyOut {
    /// Sends `data` on stream `id`; false once the connection is gone.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for c in data.chunks(CHUNK) {
            let f = Frame::Data {
                stream: id,
                flags: 0,
                data: c.to_vec(),
            };
            if self.0.send(SpdyCmd::Frame(f)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Closes the server's half of stream `id`.
    pub async fn fin(&self, id: u32) {
        let f = Frame::Data {
            stream: id,
            flags: spdy::FLAG_FIN,
            data: Vec::new(),
        };
        let _ = self.0.send(SpdyCmd::Frame(f)).await;
    }

    /// Resets stream `id`.
    pub async fn reset(&self, id: u32, status: u32) {
        let _ = self
            .0
            .send(SpdyCmd::Frame(Frame::RstStream { stream: id, status }))
            .await;
    }
}

/// A SPDY server connection.
pub struct SpdyConn {
    pub out: SpdyOut,
    /// The streams the client opens (each answered with a `SYN_REPLY` already).
    pub streams: mpsc::Receiver<SpdyStream>,
    tasks: Tasks,
}

impl SpdyConn {
    pub fn new<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> SpdyConn {
        let (mut r, w) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<SpdyCmd>(64);
        let mut enc = spdy::Encoder::new();
        let mut last_good = 0;
        let writer = spawn_writer(w, rx, move |cmd, buf| match cmd {
            SpdyCmd::Frame(f) => {
                if let Frame::SynReply { stream, .. } = &f {
                    last_good = *stream;
                }
                if let Err(e) = enc.encode(&f, buf) {
                    tracing::debug!("SPDY: {e}");
                    return None;
                }
                Some(false)
            }
            SpdyCmd::Close => {
                let f = Frame::GoAway {
                    last_good,
                    status: 0,
                };
                let _ = enc.encode(&f, buf);
                Some(true)
            }
        });
        let out = SpdyOut(tx);
        let (stx, streams) = mpsc::channel(16);
        let out2 = out.clone();
        let reader = tokio::spawn(async move {
            let mut dec = spdy::Decoder::new();
            let mut buf = Vec::new();
            let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
            while let Some(f) = next("SPDY", spdy::read_frame(&mut r, &mut buf, &mut dec)).await {
                match f {
                    Frame::SynStream {
                        stream,
                        flags,
                        headers,
                        ..
                    } => {
                        if stream == 0 || stream % 2 == 0 || open.contains_key(&stream) {
                            out2.reset(stream, spdy::RST_PROTOCOL_ERROR).await;
                            continue;
                        }
                        let reply = Frame::SynReply {
                            stream,
                            flags: 0,
                            headers: Vec::new(),
                        };
                        if out2.0.send(SpdyCmd::Frame(reply)).await.is_err() {
                            break;
                        }
                        let (dtx, drx) = mpsc::channel(32);
                        if flags & spdy::FLAG_FIN == 0 {
                            open.insert(stream, dtx);
                        }
                        let s = SpdyStream {
                            id: stream,
                            headers,
                            data: drx,
                        };
                        if stx.send(s).await.is_err() {
                            // Nobody takes new streams any more.
                            out2.reset(stream, spdy::RST_REFUSED_STREAM).await;
                        }
                    }
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } => {
                        if !data.is_empty() {
                            if let Some(tx) = open.get(&stream) {
                                if tx.send(data).await.is_err() {
                                    open.remove(&stream);
                                }
                            }
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            open.remove(&stream);
                        }
                    }
                    Frame::Headers { stream, flags, .. } => {
                        if flags & spdy::FLAG_FIN != 0 {
                            open.remove(&stream);
                        }
                    }
                    Frame::RstStream { stream, .. } => {
                        open.remove(&stream);
                    }
                    Frame::Ping { id } => {
                        let _ = out2.0.send(SpdyCmd::Frame(Frame::Ping { id })).await;
                    }
                    Frame::GoAway { .. } => break,
                    Frame::SynReply { .. }
                    | Frame::Settings { .. }
                    | Frame::WindowUpdate { .. } => {}
                }
            }
        });
        SpdyConn {
            out,
            streams,
            tasks: Tasks { reader, writer },
        }
    }

    /// Says `GOAWAY`, flushes and closes the connection.
    pub async fn close(self) {
        self.tasks.close(self.out.0, SpdyCmd::Close).await;
    }
}

enum WsCmd {
    Message(u8, Vec<u8>),
    Control(u8, Vec<u8>),
    Close,
}

/// The writing side of a WebSocket channel connection.
#[derive(Clone)]
pub struct WsOut(mpsc::Sender<WsCmd>);

impl WsOut {
    /// Sends `data` on `channel` (an empty message too); false once the connection is gone.
    pub async fn send(&self, channel: u8, data: &[u8]) -> bool {
        if data.is_empty() {
            return self
                .0
                .send(WsCmd::Message(channel, Vec::new()))
                .await
                .is_ok();
        }
        for c in data.chunks(CHUNK) {
            if self
                .0
                .send(WsCmd::Message(channel, c.to_vec()))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

/// A WebSocket server connection speaking one of the channel protocols.
pub struct WsConn {
    pub out: WsOut,
    /// What the client sends on each readable channel; a queue ends when the client closes
    /// its channel (v5) or the connection.
    pub inputs: HashMap<u8, mpsc::Receiver<Vec<u8>>>,
    tasks: Tasks,
}

/// The channel of v5's close signal: its one-byte payload names the channel the client closes.
pub const WS_CLOSE_CHANNEL: u8 = 255;

impl WsConn {
    /// `protocol` is the negotiated subprotocol (base64 variants encode the payloads);
    /// `readable` the channels whose input is taken.
    pub fn new<IO: AsyncRead + AsyncWrite + Send + 'static>(
        io: IO,
        protocol: &str,
        readable: &[u8],
    ) -> WsConn {
        let base64 = protocol.contains("base64.");
        let v5 = protocol.starts_with("v5.");
        let (mut r, w) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<WsCmd>(64);
        let b64 = base64::engine::general_purpose::STANDARD;
        let writer = spawn_writer(w, rx, move |cmd, buf| match cmd {
            WsCmd::Message(ch, data) => {
                if base64 {
                    let mut text = vec![b'0' + ch];
                    text.extend_from_slice(b64.encode(&data).as_bytes());
                    ws::encode(ws::OP_TEXT, &text, None, buf);
                } else {
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(ch);
                    msg.extend_from_slice(&data);
                    ws::encode(ws::OP_BINARY, &msg, None, buf);
                }
                Some(false)
            }
            WsCmd::Control(op, payload) => {
                ws::encode(op, &payload, None, buf);
                Some(op == ws::OP_CLOSE)
            }
            WsCmd::Close => {
                ws::encode(ws::OP_CLOSE, &ws::close_payload(1000, ""), None, buf);
                Some(true)
            }
        });
        let out = WsOut(tx);
        let mut senders = HashMap::new();
        let mut inputs = HashMap::new();
        for &ch in readable {
            let (stx, srx) = mpsc::channel(32);
            senders.insert(ch, stx);
            inputs.insert(ch, srx);
        }
        let out2 = out.clone();
        let reader = tokio::spawn(async move {
            let mut st = ws::Reader::default();
            let b64 = base64::engine::general_purpose::STANDARD;
            while let Some(m) = next("websocket", ws::read_message(&mut r, &mut st)).await {
                match m.opcode {
                    ws::OP_PING => {
                        let _ = out2.0.send(WsCmd::Control(ws::OP_PONG, m.data)).await;
                    }
                    ws::OP_CLOSE => {
                        let code = m.data.get(..2).map(<[u8]>::to_vec).unwrap_or_default();
                        let _ = out2.0.send(WsCmd::Control(ws::OP_CLOSE, code)).await;
                        break;
                    }
                    ws::OP_BINARY | ws::OP_TEXT => {
                        let Some((&first, rest)) = m.data.split_first() else {
                            continue;
                        };
                        let (ch, data) = if base64 {
                            let Ok(d) = b64.decode(rest) else {
                                tracing::debug!("websocket: bad base64 on channel {first}");
                                continue;
                            };
                            (first.wrapping_sub(b'0'), d)
                        } else {
                            (first, rest.to_vec())
                        };
                        if v5 && ch == WS_CLOSE_CHANNEL {
                            if let Some(&closed) = data.first() {
                                senders.remove(&closed);
                            }
                            continue;
                        }
                        if data.is_empty() {
                            continue;
                        }
                        if let Some(tx) = senders.get(&ch) {
                            if tx.send(data).await.is_err() {
                                senders.remove(&ch);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        WsConn {
            out,
            inputs,
            tasks: Tasks { reader, writer },
        }
    }

    /// Sends a normal close, flushes and ends the connection.
    pub async fn close(self) {
        self.tasks.close(self.out.0, WsCmd::Close).await;
    }
}

/// A WebSocket whose binary messages carry a byte stream (client-go's SPDY tunnel,
/// `SPDY/3.1+portforward.k8s.io`): answers the stream's other end. Pings are answered; the
/// peer's close, or the end of the returned stream, ends the WebSocket. `mask` is a client's
/// (the server's end has none).
pub fn ws_tunnel<IO: AsyncRead + AsyncWrite + Send + 'static>(
    io: IO,
    mask: Option<[u8; 4]>,
) -> tokio::io::DuplexStream {
    use tokio::io::AsyncReadExt;
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut r, mut w) = tokio::io::split(io);
    let (mut tr, mut tw) = tokio::io::split(ours);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<(u8, Vec<u8>)>(8);
    tokio::spawn(async move {
        let mut st = ws::Reader::default();
        while let Ok(Some(m)) = ws::read_message(&mut r, &mut st).await {
            match m.opcode {
                ws::OP_BINARY | ws::OP_TEXT if tw.write_all(&m.data).await.is_err() => break,
                ws::OP_PING => {
                    let _ = ctl_tx.send((ws::OP_PONG, m.data)).await;
                }
                ws::OP_CLOSE => {
                    let code = m.data.get(..2).map(<[u8]>::to_vec).unwrap_or_default();
                    let _ = ctl_tx.send((ws::OP_CLOSE, code)).await;
                    break;
                }
                _ => {}
            }
        }
        let _ = tw.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut frame = Vec::new();
        let mut control = true;
        loop {
            frame.clear();
            let mut last = false;
            tokio::select! {
                n = tr.read(&mut buf) => match n {
                    Ok(n) if n > 0 => ws::encode(ws::OP_BINARY, &buf[..n], mask, &mut frame),
                    _ => {
                        ws::encode(ws::OP_CLOSE, &ws::close_payload(1000, ""), mask, &mut frame);
                        last = true;
                    }
                },
                c = ctl_rx.recv(), if control => match c {
                    Some((op, payload)) => {
                        ws::encode(op, &payload, mask, &mut frame);
                        last = op == ws::OP_CLOSE;
                    }
                    None => {
                        control = false;
                        continue;
                    }
                },
            }
            if w.write_all(&frame).await.is_err() || last {
                break;
            }
        }
        let _ = w.shutdown().await;
    });
    theirs
}
