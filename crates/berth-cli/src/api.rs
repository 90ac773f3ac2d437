//! A small blocking client of the Docker Engine API that `berthd` serves on a unix socket: plain
//! HTTP/1.1 requests (one connection each), streamed bodies both ways (chunked), and the
//! hijacked streams of `attach` and `exec`.
//!
//! Bodies are typed: requests are `berth_api` models serialised with [`json`], responses are
//! decoded into models with Go's rules ([`Response::decode`], [`Host::get`], [`Host::post`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The API version every request names (`/v1.50/…`): the docker CLI 28.2's, whose output
/// the berth CLI matches (berthd speaks up to 1.51).
pub const API_VERSION: &str = "1.50";

/// Where the daemon listens (see [`crate::endpoint`]: `-H`, `BERTH_HOST`, `DOCKER_HOST`, the
/// default socket; unix sockets and TCP with TLS).
#[derive(Debug, Clone)]
pub struct Host {
    pub endpoint: crate::endpoint::Endpoint,
}

impl Host {
    /// A host from an address alone (`unix:///path`, a path, or plain `tcp://host:port`).
    pub fn parse(s: &str) -> Result<Host, ApiError> {
        let args = crate::endpoint::ConnectionArgs {
            host: Some(s.to_string()),
            ..Default::default()
        };
        Ok(Self::resolve(&args, &crate::endpoint::ProcessEnv)?)
    }

    /// The host the connection flags and the environment name.
    pub fn resolve(
        args: &crate::endpoint::ConnectionArgs,
        env: &dyn crate::endpoint::Env,
    ) -> Result<Host, crate::endpoint::EndpointError> {
        Ok(Host {
            endpoint: crate::endpoint::resolve(args, env)?,
        })
    }

    pub fn connect(&self) -> Result<UnixStream, ApiError> {
        self.endpoint.connect().map_err(|e| ApiError::Connect {
            path: self.endpoint.to_string(),
            source: e,
        })
    }

    /// `GET path`, the answer decoded into `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        request(self, "GET", path, None)?.decode()
    }

    /// `POST path` with an optional JSON body, the answer decoded into `T`.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ApiError> {
        request(self, "POST", path, body)?.decode()
    }

    /// A request whose answer has no body the caller needs.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(), ApiError> {
        request(self, method, path, body).map(drop)
    }
}

/// A request body: the model as JSON.
pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising the API models cannot fail (string keys, no non-finite floats).
    serde_json::to_vec(v).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Address(#[from] crate::endpoint::EndpointError),
    #[error(
        "Cannot connect to the Berth daemon at {path}. Is berthd running? Start it with `service berthd start` or `berthd` (or point -H / BERTH_HOST at its socket): {source}"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response from the daemon: {0}")]
    Protocol(String),
    #[error("malformed response from the daemon: {0}")]
    Decode(#[from] berth_api::DecodeError),
    /// An error reply: the daemon's `message`.
    #[error("{message}")]
    Status { code: u16, message: String },
}

/// A whole response.
pub struct Response {
    pub code: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body decoded into a model, with Go's rules (an empty body is `{}`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        Ok(berth_api::from_slice(&self.body)?)
    }
}

/// Decodes a JSON text (a line of a stream) into a model.
pub fn decode_str<T: DeserializeOwned>(s: &str) -> Result<T, ApiError> {
    Ok(berth_api::from_str(s)?)
}

pub use berth_util::http1::{body_reader, Head};

/// Reads the status line and headers ([`berth_util::http1::read_head`]).
pub fn read_head(r: &mut impl BufRead) -> Result<Head, ApiError> {
    berth_util::http1::read_head(r).map_err(|e| match e {
        berth_util::http1::HeadError::Io(e) => ApiError::Io(e),
        other => ApiError::Protocol(other.to_string()),
    })
}

/// Reads an error reply's body into [`ApiError::Status`].
fn error_from(code: u16, mut body: impl Read) -> ApiError {
    let mut b = Vec::new();
    let _ = body.read_to_end(&mut b);
    error_of(code, &b)
}

/// The error of a reply: the daemon's `{"message": …}`, or the body's text.
pub fn error_of(code: u16, body: &[u8]) -> ApiError {
    let message = berth_api::from_slice::<berth_api::ErrorResponse>(body)
        .ok()
        .map(|e| e.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ApiError::Status { code, message }
}

/// Writes a request head (`extra`: more header lines, each ending in CRLF).
pub fn write_head(
    w: &mut impl Write,
    method: &str,
    path: &str,
    extra: &str,
) -> Result<(), ApiError> {
    write!(
        w,
        "{method} /v{API_VERSION}{path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli/{}\r\n{extra}\r\n",
        env!("CARGO_PKG_VERSION")
    )?;
    Ok(())
}

fn write_request(
    stream: &mut UnixStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    extra: &str,
) -> Result<(), ApiError> {
    let data = body.unwrap_or_default();
    let mut headers = extra.to_string();
    if body.is_some() {
        headers.push_str("Content-Type: application/json\r\n");
    }
    headers.push_str(&format!("Content-Length: {}\r\n", data.len()));
    let mut buf = Vec::with_capacity(256 + data.len());
    write_head(&mut buf, method, path, &headers)?;
    buf.extend_from_slice(data);
    stream.write_all(&buf)?;
    Ok(())
}

/// One request; a status of 400 or more becomes [`ApiError::Status`].
pub fn request(
    host: &Host,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    begin(host, method, path, body)?.finish()
}

/// A request whose response status and headers have arrived; the body is read later. For
/// `POST /containers/{id}/wait`: berthd (like dockerd) sends the headers once the wait is
/// registered, so a container that exits and is removed right after `start` is still waited
/// for.
pub struct Pending {
    r: BufReader<UnixStream>,
    head: Head,
}

/// Sends a request and reads the response's head (an error status reads the body too).
pub fn begin(
    host: &Host,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Pending, ApiError> {
    let mut s = host.connect()?;
    write_request(&mut s, method, path, body, "Connection: close\r\n")?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    if head.code >= 400 {
        return Err(error_from(head.code, body_reader(r, &head)));
    }
    Ok(Pending { r, head })
}

impl Pending {
    /// Reads the body.
    pub fn finish(self) -> Result<Response, ApiError> {
        let code = self.head.code;
        let mut body = Vec::new();
        body_reader(self.r, &self.head).read_to_end(&mut body)?;
        Ok(Response { code, body })
    }
}

/// `POST /containers/{id}/attach` with an HTTP upgrade: the returned reader carries the
/// container's output (Docker's multiplexed frames without a tty, raw bytes with one).
pub fn attach(host: &Host, id: &str, stdin: bool) -> Result<BufReader<UnixStream>, ApiError> {
    hijack(
        host,
        &format!(
            "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
            stdin as u8
        ),
        None,
    )
}

/// A request answered with an HTTP upgrade (exec start, attach with stdin): the raw stream.
pub fn hijack(
    host: &Host,
    path: &str,
    body: Option<&[u8]>,
) -> Result<BufReader<UnixStream>, ApiError> {
    let mut s = host.connect()?;
    write_request(
        &mut s,
        "POST",
        path,
        body,
        "Connection: Upgrade\r\nUpgrade: tcp\r\n",
    )?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    if head.code >= 400 {
        return Err(error_from(head.code, body_reader(r, &head)));
    }
    if head.code != 101 && head.code != 200 {
        return Err(ApiError::Protocol(format!(
            "upgrade answered {}",
            head.code
        )));
    }
    Ok(r)
}

/// Writes a body with HTTP chunked encoding (each write one chunk; finish with
/// [`ChunkedWriter::finish`]).
pub struct ChunkedWriter<W: Write>(pub W);

impl<W: Write> ChunkedWriter<W> {
    /// The last, empty chunk.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.0.write_all(b"0\r\n\r\n")?;
        self.0.flush()?;
        Ok(self.0)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.0, "{:x}\r\n", buf.len())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A request with a body streamed (chunked) from `body` (`content_type` names it; `extra`:
/// more header lines); the response body as a stream.
pub fn send_stream(
    host: &Host,
    method: &str,
    path: &str,
    body: Option<(&str, &mut dyn Read)>,
    extra: &str,
) -> Result<Box<dyn Read + Send>, ApiError> {
    let mut s = host.connect()?;
    match body {
        None => write_request(
            &mut s,
            method,
            path,
            None,
            &format!("Connection: close\r\n{extra}"),
        )?,
        Some((content_type, r)) => {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, &mut s);
            write_head(
                &mut w,
                method,
                path,
                &format!(
                    "Connection: close\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{extra}"
                ),
            )?;
            let mut cw = ChunkedWriter(w);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                cw.write_all(&buf[..n])?;
            }
            cw.finish()?;
        }
    }
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?;
    let body = body_reader(r, &head);
    if head.code >= 400 {
        return Err(error_from(head.code, body));
    }
    Ok(body)
}

/// A POST with an optional streamed tar body; the response body as a stream.
pub fn post_stream(
    host: &Host,
    path: &str,
    body: Option<&mut dyn Read>,
) -> Result<Box<dyn Read + Send>, ApiError> {
    send_stream(
        host,
        "POST",
        path,
        body.map(|b| ("application/x-tar", b)),
        "",
    )
}

/// A streamed response (`logs -f`, `events`, `stats`): the reader after the head, de-chunked.
pub fn stream(host: &Host, path: &str) -> Result<Box<dyn Read + Send>, ApiError> {
    send_stream(host, "GET", path, None, "")
}

/// Copies a multiplexed attach/logs stream to `out`/`err` until it ends.
pub fn demux(r: &mut impl Read, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), ApiError> {
    let mut head = [0u8; 8];
    loop {
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        match head[0] {
            2 => {
                err.write_all(&buf)?;
                err.flush()?;
            }
            _ => {
                out.write_all(&buf)?;
                out.flush()?;
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    berth_util::url::percent_encode(s)
}

/// A query string from (name, value) pairs (values percent-encoded): `?a=1&b=x` or "".
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("unix:///run/b.sock")
                .unwrap()
                .endpoint
                .to_string(),
            "unix:///run/b.sock"
        );
        assert_eq!(
            Host::parse("/x.sock").unwrap().endpoint.to_string(),
            "unix:///x.sock"
        );
        // TCP is a daemon address too (TLS settings: see `endpoint`).
        assert_eq!(
            Host::parse("tcp://1.2.3.4:2375")
                .unwrap()
                .endpoint
                .to_string(),
            "tcp://1.2.3.4:2375"
        );
        assert!(Host::parse("ssh://1.2.3.4").is_err());
    }

    #[test]
    fn chunked_and_frames() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let head = read_head(&mut r).unwrap();
        assert_eq!(head.code, 200);
        let mut body = Vec::new();
        body_reader(r, &head).read_to_end(&mut body).unwrap();
        assert_eq!(body, b"abcde");
        let mut frames = Vec::new();
        frames.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 3]);
        frames.extend_from_slice(b"out");
        frames.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        frames.extend_from_slice(b"err");
        let (mut o, mut e) = (Vec::new(), Vec::new());
        demux(&mut &frames[..], &mut o, &mut e).unwrap();
        assert_eq!((o.as_slice(), e.as_slice()), (&b"out"[..], &b"err"[..]));
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query(&[("a", "1".into()), ("b", "x y".into())]),
            "?a=1&b=x%20y"
        );
        assert_eq!(query(&[]), "");
    }

    #[test]
    fn chunked_writer_round_trip() {
        let mut w = ChunkedWriter(Vec::new());
        w.write_all(b"hello").unwrap();
        w.write_all(b"").unwrap();
        w.write_all(b"!").unwrap();
        let wire = w.finish().unwrap();
        assert_eq!(wire, b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n");
        let head = Head {
            code: 200,
            headers: vec![("transfer-encoding".into(), "chunked".into())],
        };
        let mut out = Vec::new();
        body_reader(std::io::Cursor::new(wire), &head)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"hello!");
    }

    #[test]
    fn errors_carry_the_daemon_message() {
        match error_of(404, br#"{"message":"No such container: x"}"#) {
            ApiError::Status { code, message } => {
                assert_eq!((code, message.as_str()), (404, "No such container: x"))
            }
            other => panic!("{other:?}"),
        }
        match error_of(500, b"plain text\n") {
            ApiError::Status { message, .. } => assert_eq!(message, "plain text"),
            other => panic!("{other:?}"),
        }
    }
}
