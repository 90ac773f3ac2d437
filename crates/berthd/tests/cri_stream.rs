//! The CRI streaming server: `Exec`, `Attach` and `PortForward` through the gRPC API, then
//! the returned URL spoken to by the tests' own clients, SPDY/3.1 (the channel protocols v4,
//! v5 and v2; `portforward.k8s.io`) and WebSocket (v5 with its close signal, v4 base64,
//! port forwarding), built on berthd's framing code; and by crictl (`exec -it`, `exec`,
//! `attach`, `port-forward`, both of its transports) when it is installed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use berth_cri::proto as pb;
use berthd::cri::stream::{spdy, ws};
use common::cri::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// An HTTP/1.1 upgrade request to `url`: the answer's status, headers (lower-case names) and
/// the connection.
/// A WebSocket upgrade of `url` with `key`, asking for `protocols`, which must be accepted
/// (101): the answer's headers, the connection and what came after the answer's head.
async fn ws_upgrade(
    url: &str,
    key: &str,
    protocols: &str,
) -> (Vec<(String, String)>, TcpStream, Vec<u8>) {
    let (code, hs, tcp, rest) = upgrade(
        url,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Protocol", protocols),
        ],
    )
    .await;
    assert_eq!(code, 101, "{hs:?}");
    (hs, tcp, rest)
}

async fn upgrade(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, TcpStream, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.unwrap();
        assert!(n > 0, "no answer: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let code = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (code, hs, tcp, buf[end..].to_vec())
}

fn get<'h>(h: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    h.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What a SPDY client sees.
#[derive(Debug, PartialEq)]
enum Ev {
    Reply(u32),
    Data(u32, Vec<u8>),
    Fin(u32),
    Reset(u32),
    GoAway,
    Closed,
}

/// A minimal SPDY/3.1 client (client-go's side of the protocol).
struct SpdyClient {
    w: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    enc: spdy::Encoder,
    events: mpsc::UnboundedReceiver<Ev>,
    next_id: u32,
}

impl SpdyClient {
    /// Upgrades `url` offering `protocols` (header `X-Stream-Protocol-Version`); the refusal's
    /// status code and body otherwise.
    async fn connect(url: &str, protocols: &[&str]) -> Result<(SpdyClient, String), (u16, String)> {
        let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let (code, hs, mut tcp, mut rest) = upgrade(url, &h).await;
        if code != 101 {
            let mut body = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut body)).await;
            rest.extend_from_slice(&body);
            return Err((code, String::from_utf8_lossy(&rest).into_owned()));
        }
        let chosen = get(&hs, "x-stream-protocol-version")
            .first()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Ok((SpdyClient::on(tcp, rest), chosen))
    }

    /// client-go's port forwarding over WebSocket: the SPDY session in binary messages.
    async fn tunnel(url: &str) -> SpdyClient {
        let key = "c3BkeSBvdmVyIHdlYnNvY2tldA==";
        let (hs, tcp, rest) = ws_upgrade(url, key, "SPDY/3.1+portforward.k8s.io").await;
        assert_eq!(
            get(&hs, "sec-websocket-protocol"),
            vec!["SPDY/3.1+portforward.k8s.io"]
        );
        assert!(rest.is_empty(), "the server waits for the client's streams");
        let io = berthd::cri::stream::session::ws_tunnel(tcp, Some([3, 1, 4, 1]));
        SpdyClient::on(io, Vec::new())
    }

    /// A client on an upgraded connection (`rest`: what came with the answer's head).
    fn on<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static>(
        io: IO,
        mut rest: Vec<u8>,
    ) -> SpdyClient {
        let (mut r, w) = tokio::io::split(io);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut dec = spdy::Decoder::new();
            loop {
                let f = spdy::read_frame(&mut r, &mut rest, &mut dec).await;
                let ev = match f {
                    Ok(Some(spdy::Frame::SynReply { stream, .. })) => Ev::Reply(stream),
                    Ok(Some(spdy::Frame::Data {
                        stream,
                        flags,
                        data,
                    })) => {
                        if !data.is_empty() {
                            let _ = tx.send(Ev::Data(stream, data));
                        }
                        if flags & spdy::FLAG_FIN == 0 {
                            continue;
                        }
                        Ev::Fin(stream)
                    }
                    Ok(Some(spdy::Frame::RstStream { stream, .. })) => Ev::Reset(stream),
                    Ok(Some(spdy::Frame::GoAway { .. })) => Ev::GoAway,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Ev::Closed);
                        return;
                    }
                };
                let _ = tx.send(ev);
            }
        });
        SpdyClient {
            w: Box::pin(w),
            enc: spdy::Encoder::new(),
            events,
            next_id: 1,
        }
    }

    async fn send(&mut self, f: spdy::Frame) {
        let mut buf = Vec::new();
        self.enc.encode(&f, &mut buf).unwrap();
        self.w.write_all(&buf).await.unwrap();
    }

    /// Opens a stream with these headers, and waits for its reply (as client-go does).
    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.syn(headers).await;
        match self.next().await {
            Ev::Reply(r) if r == id => id,
            e => panic!("stream {id}: {e:?}"),
        }
    }

    /// Sends the `SYN_STREAM` of a new stream with these headers: its id.
    async fn syn(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        self.send(spdy::Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await;
        id
    }

    /// Opens one stream of each `streamType`, in this order.
    async fn streams<const N: usize>(&mut self, types: [&str; N]) -> [u32; N] {
        let mut ids = [0; N];
        for (id, t) in ids.iter_mut().zip(types) {
            *id = self.open(&[("streamType", t)]).await;
        }
        ids
    }

    /// Opens the `error` or `data` stream of port-forwarding request `rid` to `port`.
    async fn forward_stream(&mut self, kind: &str, port: &str, rid: &str) -> u32 {
        self.open(&[("streamType", kind), ("port", port), ("requestID", rid)])
            .await
    }

    /// What stream `id` carries until its end (stream `other` may end meanwhile; any other
    /// event is a failure).
    async fn read_to_fin(&mut self, id: u32, other: u32) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match self.next().await {
                Ev::Data(s, d) if s == id => got.extend_from_slice(&d),
                Ev::Fin(s) if s == id => return got,
                Ev::Fin(s) if s == other => {}
                ev => panic!("{ev:?}"),
            }
        }
    }

    async fn data(&mut self, id: u32, data: &[u8]) {
        self.send(spdy::Frame::Data {
            stream: id,
            flags: 0,
            data: data.to_vec(),
        })
        .await;
    }

    async fn fin(&mut self, id: u32) {
        self.send(spdy::Frame::Data {
            stream: id,
            flags: spdy::FLAG_FIN,
            data: vec![],
        })
        .await;
    }

    async fn next(&mut self) -> Ev {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no SPDY frame in time")
            .unwrap_or(Ev::Closed)
    }

    /// Everything until the server closes the connection: each stream's bytes, and which
    /// streams it finished.
    async fn drain(&mut self) -> (HashMap<u32, Vec<u8>>, Vec<u32>) {
        let (mut data, mut fins) = (HashMap::<u32, Vec<u8>>::new(), Vec::new());
        loop {
            match self.next().await {
                Ev::Data(id, d) => data.entry(id).or_default().extend_from_slice(&d),
                Ev::Fin(id) => fins.push(id),
                Ev::Closed => return (data, fins),
                _ => {}
            }
        }
    }

    /// Reads stream `id` until `want` shows up in what it sent, sending `poke` on stream
    /// `input` every half second meanwhile (`None`: just wait).
    async fn until(&mut self, id: u32, want: &str, input: Option<(u32, &[u8])>) -> String {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !String::from_utf8_lossy(&seen).contains(want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{want:?} not in {:?}",
                String::from_utf8_lossy(&seen)
            );
            if let Some((i, poke)) = input {
                self.data(i, poke).await;
            }
            let tick = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    e = self.events.recv() => match e {
                        Some(Ev::Data(s, d)) if s == id => seen.extend_from_slice(&d),
                        Some(Ev::Closed) | None => panic!("closed; saw {:?}", String::from_utf8_lossy(&seen)),
                        _ => {}
                    },
                    _ = &mut tick => break,
                }
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }
}

/// The v4 error stream's status.
#[derive(serde::Deserialize, Debug)]
struct Status {
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Option<Details>,
}

#[derive(serde::Deserialize, Debug)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(serde::Deserialize, Debug)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The exit code a v4 status says (0 for success).
fn exit_code(raw: &[u8]) -> i64 {
    let s: Status = serde_json::from_slice(raw)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(raw)));
    if s.status == "Success" {
        return 0;
    }
    assert_eq!(s.reason, "NonZeroExitCode", "{s:?}");
    let c = &s.details.unwrap().causes[0];
    assert_eq!(c.reason, "ExitCode");
    c.message.parse().unwrap()
}

/// A minimal WebSocket client of the channel protocols.
struct WsClient {
    /// What came with the answer's head, then the connection.
    r: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    w: tokio::net::tcp::OwnedWriteHalf,
    st: ws::Reader,
    base64: bool,
}

impl WsClient {
    async fn connect(url: &str, protocols: &str) -> (WsClient, String) {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let (hs, tcp, rest) = ws_upgrade(url, key, protocols).await;
        assert_eq!(get(&hs, "sec-websocket-accept"), vec![ws::accept_key(key)]);
        let chosen = get(&hs, "sec-websocket-protocol")[0].to_string();
        let (r, w) = tcp.into_split();
        (
            WsClient {
                r: Box::pin(std::io::Cursor::new(rest).chain(r)),
                w,
                st: ws::Reader::default(),
                base64: chosen.contains("base64."),
            },
            chosen,
        )
    }

    async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut buf = Vec::new();
        if self.base64 {
            use base64::Engine as _;
            let mut text = vec![b'0' + channel];
            text.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(data)
                    .as_bytes(),
            );
            ws::encode(ws::OP_TEXT, &text, Some([1, 2, 3, 4]), &mut buf);
        } else {
            let mut msg = vec![channel];
            msg.extend_from_slice(data);
            ws::encode(ws::OP_BINARY, &msg, Some([7, 0, 9, 1]), &mut buf);
        }
        self.w.write_all(&buf).await.unwrap();
    }

    /// The next data message (channel, payload); `None` at the server's close.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let m = tokio::time::timeout(WAIT, ws::read_message(&mut self.r, &mut self.st))
                .await
                .expect("no websocket message in time")
                .unwrap()?;
            match m.opcode {
                ws::OP_CLOSE => return None,
                ws::OP_BINARY => {
                    let (c, d) = m.data.split_first().unwrap();
                    return Some((*c, d.to_vec()));
                }
                ws::OP_TEXT => {
                    use base64::Engine as _;
                    let (c, d) = m.data.split_first().unwrap();
                    let d = base64::engine::general_purpose::STANDARD.decode(d).unwrap();
                    return Some((c - b'0', d));
                }
                _ => {}
            }
        }
    }

    /// Asks the shell on stdin for its terminal's size (`stty size`) every half second until
    /// stdout says `want`.
    async fn until_size(&mut self, want: &str) {
        let mut out = String::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !out.contains(want) {
            assert!(tokio::time::Instant::now() < deadline, "{out}");
            self.send(0, b"stty size\n").await;
            if let Ok(Some((1, d))) =
                tokio::time::timeout(Duration::from_millis(500), self.next()).await
            {
                out.push_str(&String::from_utf8_lossy(&d));
            }
        }
    }

    /// Every channel's bytes until the close.
    async fn drain(&mut self) -> HashMap<u8, Vec<u8>> {
        let mut all = HashMap::<u8, Vec<u8>>::new();
        while let Some((c, d)) = self.next().await {
            all.entry(c).or_default().extend_from_slice(&d);
        }
        all
    }
}

/// What a stream or channel carried, as text.
fn text<K: std::hash::Hash + Eq>(m: &HashMap<K, Vec<u8>>, k: K) -> String {
    String::from_utf8_lossy(m.get(&k).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// A pod with an echo server on 8080 (`nc -ll -e cat`), a `cat` reading its stdin and a shell
/// on a tty; answers the sandbox id and the containers' ids.
async fn pod(r: &mut Runtime, d: &Daemon) -> (String, String, String, String) {
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let config = sandbox_config(d, &uid, &d.path("pod-logs"));
    let sid = run_pod(r, &config).await;
    let echo = run_container(
        r,
        &sid,
        &config,
        busybox_container("echo", "exec nc -ll -p 8080 -e cat"),
    )
    .await;
    let cat = run_container(
        r,
        &sid,
        &config,
        pb::ContainerConfig {
            stdin: true,
            ..busybox_container("cat", "exec cat")
        },
    )
    .await;
    let tty = run_container(
        r,
        &sid,
        &config,
        pb::ContainerConfig {
            stdin: true,
            tty: true,
            ..busybox_container("tty", "exec sh")
        },
    )
    .await;
    (sid, echo, cat, tty)
}

async fn exec_url(r: &mut Runtime, req: pb::ExecRequest) -> String {
    r.exec(req).await.unwrap().into_inner().url
}

/// Runs `req` over SPDY offering `protocols`: the client and the protocol chosen.
async fn spdy_exec(
    r: &mut Runtime,
    req: pb::ExecRequest,
    protocols: &[&str],
) -> (SpdyClient, String) {
    let url = exec_url(r, req).await;
    SpdyClient::connect(&url, protocols).await.unwrap()
}

async fn attach_url(r: &mut Runtime, req: pb::AttachRequest) -> String {
    r.attach(req).await.unwrap().into_inner().url
}

async fn port_forward_url(r: &mut Runtime, sandbox: &str, port: Vec<i32>) -> String {
    r.port_forward(pb::PortForwardRequest {
        pod_sandbox_id: sandbox.into(),
        port,
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

fn exec_req(cid: &str, cmd: &[&str], stdin: bool, tty: bool) -> pb::ExecRequest {
    pb::ExecRequest {
        container_id: cid.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

#[test]
fn cri_exec_attach_port_forward_over_spdy_and_websocket() {
    let Some((net, d, _pods)) = cri_daemon(6) else {
        return;
    };
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let (sid, echo, cat, tty) = pod(&mut r, &d).await;

        // Requests are checked before a URL is handed out.
        let e = r
            .exec(pb::ExecRequest {
                stderr: true,
                ..exec_req(&echo, &["true"], false, true)
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = r
            .exec(exec_req("nope", &["true"], false, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = r
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: "nope".into(),
                port: vec![80],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        // SPDY v4: stdout, stderr, the exit code as a NonZeroExitCode cause.
        let req = exec_req(
            &echo,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        );
        let url = exec_url(&mut r, req).await;
        assert!(
            url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
            "{url}"
        );
        let (mut c, proto) = SpdyClient::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
            .await
            .unwrap();
        assert_eq!(proto, "v4.channel.k8s.io");
        let [error, stdout, stderr] = c.streams(["error", "stdout", "stderr"]).await;
        let (data, fins) = c.drain().await;
        assert_eq!(text(&data, stdout), "out\n");
        assert_eq!(text(&data, stderr), "err\n");
        assert_eq!(exit_code(&data[&error]), 3);
        for s in [error, stdout, stderr] {
            assert!(fins.contains(&s), "{fins:?}");
        }
        // A URL is good once.
        let again = SpdyClient::connect(&url, &["v4.channel.k8s.io"])
            .await
            .err();
        assert_eq!(again.map(|e| e.0), Some(404));

        // SPDY v5 (v4 over SPDY) with stdin: its end is the process's EOF.
        let req = exec_req(&cat, &["sh", "-c", "cat; echo done"], true, false);
        let (mut c, proto) = spdy_exec(&mut r, req, &["v5.channel.k8s.io"]).await;
        assert_eq!(proto, "v5.channel.k8s.io");
        let [error, stdin, stdout, _] = c.streams(["error", "stdin", "stdout", "stderr"]).await;
        c.data(stdin, b"abc\n").await;
        c.data(stdin, b"def\n").await;
        c.fin(stdin).await;
        let (data, _) = c.drain().await;
        assert_eq!(text(&data, stdout), "abc\ndef\ndone\n");
        assert_eq!(exit_code(&data[&error]), 0);

        // SPDY v4 with a tty: resizes reach the terminal, input and output are raw.
        let req = exec_req(&tty, &["sh"], true, true);
        let (mut c, _) = spdy_exec(&mut r, req, &["v4.channel.k8s.io"]).await;
        let [error, stdin, stdout, resize] =
            c.streams(["error", "stdin", "stdout", "resize"]).await;
        c.data(resize, br#"{"Width":123,"Height":45}"#).await;
        c.until(stdout, "45 123", Some((stdin, b"stty size\n")))
            .await;
        c.data(resize, br#"{"Width":90,"Height":20}"#).await;
        c.until(stdout, "20 90", Some((stdin, b"stty size\n")))
            .await;
        c.data(stdin, b"tty; exit 5\n").await;
        let (data, _) = c.drain().await;
        assert!(text(&data, stdout).contains("/dev/pts/"), "{data:?}");
        assert_eq!(exit_code(&data[&error]), 5);

        // SPDY v2: no resize stream; the error stream has the message of a failure only.
        let req = exec_req(&echo, &["sh", "-c", "exit 2"], false, false);
        let (mut c, proto) = spdy_exec(&mut r, req, &["v2.channel.k8s.io"]).await;
        assert_eq!(proto, "v2.channel.k8s.io");
        let [error, ..] = c.streams(["error", "stdout", "stderr"]).await;
        let (data, _) = c.drain().await;
        assert!(text(&data, error).contains("exit code 2"), "{data:?}");
        // A command that cannot run is a failure, said on the error stream.
        let req = exec_req(&echo, &["/no/such"], false, false);
        let (mut c, _) = spdy_exec(&mut r, req, &["v4.channel.k8s.io"]).await;
        let [error, ..] = c.streams(["error", "stdout", "stderr"]).await;
        let (data, _) = c.drain().await;
        let st: Status = serde_json::from_slice(&data[&error]).unwrap();
        assert_eq!(st.status, "Failure");
        assert!(st.message.contains("/no/such"), "{st:?}");

        // Protocols the server does not speak are refused, and say what it speaks.
        let url = exec_url(&mut r, exec_req(&echo, &["true"], false, false)).await;
        let (code, body) = SpdyClient::connect(&url, &["v9.channel.k8s.io"])
            .await
            .err()
            .unwrap();
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("v4.channel.k8s.io"), "{body}");

        // WebSocket v5: stdin, its close signal, stderr, the status on channel 3.
        let cmd = ["sh", "-c", "read x; echo got $x; cat; echo e >&2; exit 4"];
        let url = exec_url(&mut r, exec_req(&cat, &cmd, true, false)).await;
        let (mut c, proto) = WsClient::connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await;
        assert_eq!(proto, "v5.channel.k8s.io");
        // The session is set up: an empty message on stdout.
        assert_eq!(c.next().await, Some((1, vec![])));
        c.send(0, b"hi\nmore\n").await;
        c.send(255, &[0]).await;
        let all = c.drain().await;
        assert_eq!(text(&all, 1), "got hi\nmore\n");
        assert_eq!(text(&all, 2), "e\n");
        assert_eq!(exit_code(&all[&3]), 4);

        // WebSocket v4 in base64 with a tty and a resize on channel 4.
        let url = exec_url(&mut r, exec_req(&tty, &["sh"], true, true)).await;
        let (mut c, proto) = WsClient::connect(&url, "v4.base64.channel.k8s.io").await;
        assert_eq!(proto, "v4.base64.channel.k8s.io");
        c.send(4, br#"{"Width":77,"Height":33}"#).await;
        c.until_size("33 77").await;
        c.send(0, b"exit 0\n").await;
        let all = c.drain().await;
        assert_eq!(exit_code(&all[&3]), 0);

        // Attach over SPDY to the running cat: input echoed; closing stdin ends the session
        // and leaves the container running (no StdinOnce; checked below).
        let url = attach_url(
            &mut r,
            pb::AttachRequest {
                container_id: cat.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            },
        )
        .await;
        assert!(url.contains("/attach/"), "{url}");
        let (mut c, _) = SpdyClient::connect(&url, &["v4.channel.k8s.io"])
            .await
            .unwrap();
        let [error, stdin, stdout, _] = c.streams(["error", "stdin", "stdout", "stderr"]).await;
        c.data(stdin, b"attached\n").await;
        c.until(stdout, "attached\n", None).await;
        c.fin(stdin).await;
        let (data, _) = c.drain().await;
        assert_eq!(exit_code(&data[&error]), 0);

        // Attach over WebSocket to the tty shell, with a resize.
        let url = attach_url(
            &mut r,
            pb::AttachRequest {
                container_id: tty.clone(),
                stdin: true,
                tty: true,
                stdout: true,
                stderr: false,
            },
        )
        .await;
        let (mut c, _) = WsClient::connect(&url, "v5.channel.k8s.io").await;
        assert_eq!(c.next().await, Some((1, vec![])));
        c.send(4, br#"{"Width":61,"Height":17}"#).await;
        c.until_size("17 61").await;
        c.send(255, &[0]).await;
        let all = c.drain().await;
        assert_eq!(exit_code(&all[&3]), 0);
        // The end of a tty attach's input leaves the shell running.
        for id in [&cat, &tty] {
            let st = container_state(&mut r, id).await;
            assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
        }

        // Port forwarding over SPDY: two connections at once, each a data + error pair.
        let url = port_forward_url(&mut r, &sid, vec![8080]).await;
        assert!(url.contains("/portforward/"), "{url}");
        let (mut c, proto) = SpdyClient::connect(&url, &["portforward.k8s.io"])
            .await
            .unwrap();
        assert_eq!(proto, "portforward.k8s.io");
        let mut pairs = Vec::new();
        for rid in ["0", "1"] {
            let e = c.forward_stream("error", "8080", rid).await;
            c.fin(e).await;
            let d = c.forward_stream("data", "8080", rid).await;
            pairs.push((e, d));
        }
        let (e0, d0) = pairs[0];
        let (e1, d1) = pairs[1];
        c.data(d0, b"zero\n").await;
        c.data(d1, b"one\n").await;
        c.fin(d0).await;
        c.fin(d1).await;
        // The pod's side closes after the input ended: each data stream ends, and each error
        // stream, empty.
        let mut fins = Vec::new();
        let mut got = HashMap::<u32, Vec<u8>>::new();
        while ![d0, d1, e0, e1].iter().all(|s| fins.contains(s)) {
            match c.next().await {
                Ev::Fin(id) => fins.push(id),
                Ev::Data(id, d) => got.entry(id).or_default().extend_from_slice(&d),
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(text(&got, d0), "zero\n");
        assert_eq!(text(&got, d1), "one\n");
        assert!(!got.contains_key(&e0) && !got.contains_key(&e1), "{got:?}");
        // A closed port: the error stream says so, the connection stays.
        let e = c.forward_stream("error", "9", "2").await;
        let dd = c.forward_stream("data", "9", "2").await;
        let err = c.read_to_fin(e, dd).await;
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains("error forwarding port 9"), "{err}");
        // A stream without a port is reset.
        let id = c.syn(&[("streamtype", "data")]).await;
        assert_eq!(c.next().await, Ev::Reply(id));
        assert_eq!(c.next().await, Ev::Reset(id));
        drop(c);

        // Port forwarding over WebSocket: the port on both channels first, then the bytes.
        let url = port_forward_url(&mut r, &sid, vec![8080]).await;
        let (mut c, proto) = WsClient::connect(&url, "v4.channel.k8s.io").await;
        assert_eq!(proto, "v4.channel.k8s.io");
        let port = 8080u16.to_le_bytes().to_vec();
        let mut first = vec![c.next().await.unwrap(), c.next().await.unwrap()];
        first.sort();
        assert_eq!(first, vec![(0, port.clone()), (1, port)]);
        c.send(0, b"over websocket\n").await;
        let mut got = Vec::new();
        while got != b"over websocket\n" {
            let (ch, d) = c.next().await.unwrap();
            assert_eq!(ch, 0, "{}", String::from_utf8_lossy(&d));
            got.extend_from_slice(&d);
        }
        drop(c);

        // Port forwarding as client-go does it over WebSocket: SPDY inside, the same streams.
        let url = port_forward_url(&mut r, &sid, vec![]).await;
        let mut c = SpdyClient::tunnel(&url).await;
        let e = c.forward_stream("error", "8080", "0").await;
        c.fin(e).await;
        let dd = c.forward_stream("data", "8080", "0").await;
        c.data(dd, b"tunneled\n").await;
        c.fin(dd).await;
        assert_eq!(c.read_to_fin(dd, e).await, b"tunneled\n");
        drop(c);

        // Unknown paths and tokens are not found.
        let base = url.split("/portforward/").next().unwrap().to_string();
        for p in ["/exec/nope", "/nope", "/portforward/a/b"] {
            let (code, _, _, _) = upgrade(&format!("{base}{p}"), &[]).await;
            assert_eq!(code, 404, "{p}");
        }

        remove_pod(&mut r, &sid).await;
    });
    assert!(net.leases().is_empty());
    finish(d);
}

/// Runs `cmd` with `input` on its stdin (closed `hold` later), killed after a minute.
fn with_input(mut cmd: std::process::Command, input: &'static [u8], hold: Duration) -> Run {
    use std::io::Write;
    let mut child = cmd.spawn_piped();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = stdin.write_all(input);
        std::thread::sleep(hold);
    });
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if d2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill(2) on our own child's pid; it is not reaped before `done` is set.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    run_output(out)
}

/// `argv` as one shell command line.
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn crictl_exec_attach_port_forward() {
    let Some((net, d, _pods, crictl)) = crictl_daemon(7) else {
        return;
    };
    let (sid, echo, cat, _tty) = rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        pod(&mut r, &d).await
    });
    for transport in ["spdy", "websocket"] {
        // exec, no tty: both outputs apart, the exit code.
        let run = crictl.run(&[
            "exec",
            "-r",
            transport,
            &echo,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ]);
        // (crictl says the exit code it read from the error stream, and fails.)
        assert_eq!(run.code, 1, "{transport}: {run:?}");
        assert_eq!(run.stdout, "out\n", "{transport}: {run:?}");
        assert!(run.stderr.starts_with("err\n"), "{transport}: {run:?}");
        assert!(
            run.stderr.contains("command terminated with exit code 3"),
            "{transport}: {run:?}"
        );
        // exec -i: stdin to its end.
        let run = with_input(
            crictl.command(&[
                "exec",
                "-i",
                "-r",
                transport,
                &cat,
                "sh",
                "-c",
                "cat; echo end",
            ]),
            b"piped in\n",
            Duration::ZERO,
        );
        assert_eq!(run.code, 0, "{transport}: {run:?}");
        assert_eq!(run.stdout, "piped in\nend\n", "{transport}: {run:?}");
        // exec -it under a terminal (script(1) makes one).
        let mut argv: Vec<String> = crictl
            .command(&["exec", "-it", "-r", transport, &echo, "sh"])
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.insert(0, CRICTL.into());
        let mut script = std::process::Command::new("script");
        script
            .args(["-qfec", &shell_line(&argv), "/dev/null"])
            .env("CRI_CONFIG_FILE", d.path("crictl.yaml"));
        let run = with_input(script, b"tty; echo hi-$((6*7)); exit 7\n", Duration::ZERO);
        assert_eq!(run.code, 1, "{transport}: {run:?}");
        assert!(
            run.stdout.contains("command terminated with exit code 7"),
            "{transport}: {run:?}"
        );
        assert!(run.stdout.contains("hi-42"), "{transport}: {run:?}");
        assert!(run.stdout.contains("/dev/pts/"), "{transport}: {run:?}");
        // attach -i to the cat: what goes in comes back; the end of input ends the session.
        let run = with_input(
            crictl.command(&["attach", "-i", "-r", transport, &cat]),
            b"through attach\n",
            // The end of input ends an attach at once: let the echo come back first.
            Duration::from_secs(2),
        );
        assert_eq!(run.code, 0, "{transport}: {run:?}");
        assert!(
            run.stdout.contains("through attach"),
            "{transport}: {run:?}"
        );
        // port-forward: a local port to the pod's 8080.
        let port = free_port();
        let mut pf = crictl.command(&[
            "port-forward",
            "-r",
            transport,
            &sid,
            &format!("{port}:8080"),
        ]);
        let _pf = berth_testkit::KillOnDrop(
            pf.stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(d.path("port-forward.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let mut conn = None;
        assert!(
            wait_until(Duration::from_secs(20), || {
                conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
                conn.is_some()
            }),
            "{transport}: crictl port-forward does not listen: {}",
            std::fs::read_to_string(d.path("port-forward.log")).unwrap_or_default()
        );
        let mut conn = conn.unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        use std::io::{Read, Write};
        conn.write_all(b"forwarded\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got != b"forwarded\n" {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "{transport}: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
    crictl.run(&["rmp", "-f", &sid]).ok();
    assert!(net.leases().is_empty());
    finish(d);
}
