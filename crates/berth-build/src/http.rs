//! A minimal HTTP/1.1 GET for `ADD http://…` (plain HTTP only; redirects followed a few
//! times). HTTPS needs TLS, which the builder does not link: refused clearly.

use berth_util::http1::{self, ChunkedReader, HeadError};
use std::io::{BufReader, ErrorKind, Read, Write};
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
        let head = http1::read_head(&mut r).map_err(|e| match e {
            HeadError::Io(e) => HttpError::Io(e),
            HeadError::StatusLine(line) => HttpError::BadResponse(line),
            HeadError::Closed => HttpError::ClosedEarly,
        })?;
        if (300..400).contains(&head.code) {
            let loc = head.get("location").ok_or(HttpError::NoLocation)?;
            url = if loc.starts_with("http") {
                loc.to_string()
            } else {
                format!("http://{hostport}{loc}")
            };
            continue;
        }
        if head.code != 200 {
            return Err(HttpError::Status(head.code));
        }
        let mut body = Vec::new();
        if head.chunked() {
            ChunkedReader::strict(r)
                .take(MAX_BODY + 1)
                .read_to_end(&mut body)
                .map_err(|e| match e.kind() {
                    ErrorKind::InvalidData => HttpError::BadChunk,
                    _ => HttpError::Io(e),
                })?;
            if body.len() as u64 > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
        } else {
            let len = head.content_length();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// Serves `replies` in turn, one a connection; the URL of the server.
    fn serve(replies: Vec<String>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for reply in replies {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap() > 0 && !line.ends_with("\r\n\r\n") {}
                r.get_mut().write_all(reply.as_bytes()).unwrap();
            }
        });
        url
    }

    #[test]
    fn sized_chunked_and_redirected_downloads() {
        let url = serve(vec![
            "HTTP/1.1 301 Moved\r\nLocation: /to\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                .into(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxyz".into(),
        ]);
        assert_eq!(get(&format!("{url}/from")).unwrap(), b"abcde");
        assert_eq!(get(&url).unwrap(), b"xy");
    }

    #[test]
    fn broken_downloads() {
        let url = serve(vec![
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".into(),
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc".into(),
            "garbage\r\n\r\n".into(),
            "HTTP/1.1 302 Found\r\n\r\n".into(),
        ]);
        assert!(matches!(get(&url), Err(HttpError::Status(404))));
        let e = get(&url).unwrap_err();
        assert!(
            matches!(&e, HttpError::Io(e) if e.kind() == ErrorKind::UnexpectedEof),
            "{e}"
        );
        assert!(matches!(get(&url), Err(HttpError::BadChunk)));
        assert!(matches!(get(&url), Err(HttpError::ClosedEarly)));
        assert!(matches!(get(&url), Err(HttpError::BadResponse(_))));
        assert!(matches!(get(&url), Err(HttpError::NoLocation)));
        assert!(matches!(get("https://x/"), Err(HttpError::Https)));
        assert!(matches!(get("ftp://x/"), Err(HttpError::Unsupported(_))));
    }
}
