//! A small blocking client of the Docker Engine API that `berthd` serves on a unix socket: plain
//! HTTP/1.1 requests (one connection each) and the hijacked stream of `attach`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

/// Where the daemon listens (see [`crate::endpoint`]: `-H`, `BERTH_HOST`, `DOCKER_HOST`, the
/// default socket; unix sockets and TCP with TLS).
#[derive(Debug, Clone)]
pub struct Host {
    pub endpoint: crate::endpoint::Endpoint,
}

impl Host {
    /// A host from an address alone (`unix:///path`, a path, or plain `tcp://host:port`).
    pub fn parse(s: &str) -> Result<Host, String> {
        let args = crate::endpoint::ConnectionArgs {
            host: Some(s.to_string()),
            ..Default::default()
        };
        Self::resolve(&args, &crate::endpoint::ProcessEnv).map_err(|e| e.to_string())
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
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// An error reply: the daemon's `message`.
    #[error("{message}")]
    Status { code: u16, message: String },
}

pub struct Response {
    pub code: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<serde_json::Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Protocol(e.to_string()))
    }
}

fn write_request(
    stream: &mut UnixStream,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    extra: &str,
) -> Result<(), ApiError> {
    let data = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} /v1.44{path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli\r\n{extra}"
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", data.len()));
    stream.write_all(req.as_bytes())?;
    stream.write_all(data.as_bytes())?;
    Ok(())
}

/// Reads the status line and headers; returns the status and the headers (lower-cased names).
pub fn read_head(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), ApiError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ApiError::Protocol(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(ApiError::Protocol(
                "connection closed in the headers".into(),
            ));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((code, headers))
}

fn read_body(r: &mut impl BufRead, headers: &[(String, String)]) -> Result<Vec<u8>, ApiError> {
    let get = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| ApiError::Protocol(format!("bad chunk size {size:?}")))?;
            if n == 0 {
                let mut crlf = String::new();
                let _ = r.read_line(&mut crlf);
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

fn error_of(code: u16, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ApiError::Status { code, message }
}

/// One request; a status of 400 or more becomes [`ApiError::Status`].
pub fn request(
    host: &Host,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Response, ApiError> {
    begin(host, method, path, body)?.finish()
}

/// A request whose response status and headers have arrived; the body is read later. For
/// `POST /containers/{id}/wait`: berthd (like dockerd) sends the headers once the wait is
/// registered, so a container that exits and is removed right after `start` is still waited
/// for.
pub struct Pending {
    r: BufReader<UnixStream>,
    code: u16,
    headers: Vec<(String, String)>,
}

/// Sends a request and reads the response's head (an error status reads the body too).
pub fn begin(
    host: &Host,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Pending, ApiError> {
    let mut s = host.connect()?;
    write_request(&mut s, method, path, body, "Connection: close\r\n")?;
    let mut r = BufReader::new(s);
    let (code, headers) = read_head(&mut r)?;
    if code >= 400 {
        let body = read_body(&mut r, &headers)?;
        return Err(error_of(code, &body));
    }
    Ok(Pending { r, code, headers })
}

impl Pending {
    /// Reads the body.
    pub fn finish(mut self) -> Result<Response, ApiError> {
        let body = read_body(&mut self.r, &self.headers)?;
        Ok(Response {
            code: self.code,
            body,
        })
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
    body: Option<&serde_json::Value>,
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
    let (code, headers) = read_head(&mut r)?;
    if code >= 400 {
        let body = read_body(&mut r, &headers)?;
        return Err(error_of(code, &body));
    }
    if code != 101 && code != 200 {
        return Err(ApiError::Protocol(format!("upgrade answered {code}")));
    }
    Ok(r)
}

/// A POST with an optional streamed (chunked) body; the response body as a stream.
pub fn post_stream(
    host: &Host,
    path: &str,
    body: Option<Box<dyn Read + Send>>,
) -> Result<Box<dyn Read + Send>, ApiError> {
    let mut s = host.connect()?;
    match body {
        None => write_request(&mut s, "POST", path, None, "Connection: close\r\n")?,
        Some(mut r) => {
            let head = format!(
                "POST /v1.44{path} HTTP/1.1\r\nHost: berth\r\nUser-Agent: berth-cli/{}\r\nConnection: close\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            );
            s.write_all(head.as_bytes())?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                write!(s, "{n:x}\r\n")?;
                s.write_all(&buf[..n])?;
                s.write_all(b"\r\n")?;
            }
            s.write_all(b"0\r\n\r\n")?;
        }
    }
    let mut r = BufReader::new(s);
    let (code, headers) = read_head(&mut r)?;
    if code >= 400 {
        let body = read_body(&mut r, &headers)?;
        return Err(error_of(code, &body));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        Ok(Box::new(Chunked {
            r,
            left: 0,
            done: false,
        }))
    } else {
        Ok(Box::new(r))
    }
}

/// A streamed response (`logs -f`, `events`, `stats`): the reader after the head, de-chunked.
pub fn stream(host: &Host, path: &str) -> Result<Box<dyn Read + Send>, ApiError> {
    let mut s = host.connect()?;
    write_request(&mut s, "GET", path, None, "Connection: close\r\n")?;
    let mut r = BufReader::new(s);
    let (code, headers) = read_head(&mut r)?;
    if code >= 400 {
        let body = read_body(&mut r, &headers)?;
        return Err(error_of(code, &body));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        Ok(Box::new(Chunked {
            r,
            left: 0,
            done: false,
        }))
    } else {
        Ok(Box::new(r))
    }
}

struct Chunked<R> {
    r: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // The CRLF after the previous chunk, then the size line.
            loop {
                line.clear();
                if self.r.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
                if !line.trim().is_empty() {
                    break;
                }
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = out.len().min(self.left);
        let n = self.r.read(&mut out[..n])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n;
        Ok(n)
    }
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
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
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
        let (code, h) = read_head(&mut r).unwrap();
        assert_eq!(code, 200);
        assert_eq!(read_body(&mut r, &h).unwrap(), b"abcde");
        let mut frames = Vec::new();
        frames.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 3]);
        frames.extend_from_slice(b"out");
        frames.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        frames.extend_from_slice(b"err");
        let (mut o, mut e) = (Vec::new(), Vec::new());
        demux(&mut &frames[..], &mut o, &mut e).unwrap();
        assert_eq!((o.as_slice(), e.as_slice()), (&b"out"[..], &b"err"[..]));
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
