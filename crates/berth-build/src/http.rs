//! A minimal HTTP/1.1 GET for `ADD http://…` (plain HTTP only; redirects followed a few
//! times). HTTPS needs TLS, which the builder does not link: refused clearly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest download accepted.
pub const MAX_BODY: u64 = 1 << 30;

/// A download that failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("https URLs are not supported by the builder (no TLS): use http or COPY a local file")]
    Https,
    #[error("unsupported URL {0}")]
    Unsupported(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad HTTP response {0:?}")]
    BadResponse(String),
    #[error("redirect without Location")]
    NoLocation,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("bad chunk")]
    BadChunk,
    #[error("download too large")]
    TooLarge,
    #[error("connection closed early")]
    ClosedEarly,
    #[error("too many redirects")]
    TooManyRedirects,
}

/// Fetches a URL's body.
pub fn get(url: &str) -> Result<Vec<u8>, HttpError> {
    let mut url = url.to_string();
    for _ in 0..5 {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r.to_string()
        } else if url.starts_with("https://") {
            return Err(HttpError::Https);
        } else {
            return Err(HttpError::Unsupported(url));
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
            None => (rest.clone(), "/".to_string()),
        };
        let addr = if hostport.contains(':') {
            hostport.clone()
        } else {
            format!("{hostport}:80")
        };
        let mut s =
            TcpStream::connect(&addr).map_err(|source| HttpError::Connect { addr, source })?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        write!(s, "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: berth-build\r\nConnection: close\r\n\r\n")?;
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status)?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| HttpError::BadResponse(status.clone()))?;
        let mut len: Option<u64> = None;
        let mut chunked = false;
        let mut location = None;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 {
                break;
            }
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "location" => location = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        if (300..400).contains(&code) {
            let loc = location.ok_or(HttpError::NoLocation)?;
            url = if loc.starts_with("http") {
                loc
            } else {
                format!("http://{hostport}{loc}")
            };
            continue;
        }
        if code != 200 {
            return Err(HttpError::Status(code));
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut l = String::new();
                r.read_line(&mut l)?;
                let n = u64::from_str_radix(l.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| HttpError::BadChunk)?;
                if n == 0 {
                    break;
                }
                if body.len() as u64 + n > MAX_BODY {
                    return Err(HttpError::TooLarge);
                }
                let mut c = vec![0u8; n as usize];
                r.read_exact(&mut c)?;
                body.extend_from_slice(&c);
                let mut crlf = String::new();
                r.read_line(&mut crlf)?;
            }
        } else {
            let lim = len.unwrap_or(MAX_BODY).min(MAX_BODY);
            r.take(lim).read_to_end(&mut body)?;
            if let Some(l) = len {
                if body.len() as u64 != l {
                    return Err(HttpError::ClosedEarly);
                }
            }
        }
        return Ok(body);
    }
    Err(HttpError::TooManyRedirects)
}
