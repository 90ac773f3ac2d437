//! The client side of HTTP/1.1 over any byte stream: a response's head and its body
//! (de-chunked, or limited to its `Content-Length`). Requests are the callers' (a line and
//! headers written in one go).

use std::io::{BufRead, Read};

/// The status line and headers of a response (names lower-cased, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub code: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (the first of that name; `name` lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body is chunked (`Transfer-Encoding: chunked`).
    pub fn chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// `Content-Length`, when given and a number.
    pub fn content_length(&self) -> Option<u64> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }
}

/// A response head that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("bad status line {0:?}")]
    StatusLine(String),
    #[error("connection closed in the headers")]
    Closed,
}

/// Reads the status line and the headers, up to the empty line.
pub fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(HeadError::StatusLine(line.clone()))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(HeadError::Closed);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Head { code, headers })
}

/// The body after `head` as a stream: de-chunked, or limited to its `Content-Length`, or all
/// that follows.
pub fn body_reader<R: BufRead + Send + 'static>(r: R, head: &Head) -> Box<dyn Read + Send> {
    if head.chunked() {
        Box::new(ChunkedReader::new(r))
    } else if let Some(n) = head.content_length() {
        Box::new(r.take(n))
    } else {
        Box::new(r)
    }
}

/// Decodes a chunked body as it arrives. A closed connection between chunks ends it, or, when
/// [`strict`](Self::strict), is an [`UnexpectedEof`](std::io::ErrorKind::UnexpectedEof) error
/// (a download must end with its last, empty chunk).
pub struct ChunkedReader<R> {
    r: R,
    left: usize,
    done: bool,
    strict: bool,
}

impl<R> ChunkedReader<R> {
    pub fn new(r: R) -> Self {
        ChunkedReader {
            r,
            left: 0,
            done: false,
            strict: false,
        }
    }

    /// A reader for which a body without its last chunk is an error.
    pub fn strict(r: R) -> Self {
        ChunkedReader {
            strict: true,
            ..Self::new(r)
        }
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // The CRLF after the previous chunk, then the size line.
            loop {
                line.clear();
                if self.r.read_line(&mut line)? == 0 {
                    if self.strict {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "connection closed before the last chunk",
                        ));
                    }
                    self.done = true;
                    return Ok(0);
                }
                if !line.trim().is_empty() {
                    break;
                }
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = out.len().min(self.left);
        let n = self.r.read(&mut out[..n])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in a chunk",
            ));
        }
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn body(raw: &'static [u8]) -> (Head, std::io::Result<Vec<u8>>) {
        let mut r = BufReader::new(raw);
        let head = read_head(&mut r).unwrap();
        let mut b = Vec::new();
        let res = body_reader(r, &head).read_to_end(&mut b).map(|_| b);
        (head, res)
    }

    #[test]
    fn chunked_and_sized_bodies() {
        let (head, b) = body(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\nX-A:  1 \r\n\r\n3;ext\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!(head.code, 200);
        assert_eq!(head.get("x-a"), Some("1"));
        assert_eq!(b.unwrap(), b"abcde");
        let (head, b) = body(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnomore");
        assert_eq!((head.code, head.content_length()), (404, Some(2)));
        assert_eq!(b.unwrap(), b"no");
        let (_, b) = body(b"HTTP/1.0 200 OK\r\n\r\nto the end");
        assert_eq!(b.unwrap(), b"to the end");
    }

    #[test]
    fn broken_responses() {
        let e = read_head(&mut BufReader::new(&b"garbage\r\n\r\n"[..])).unwrap_err();
        assert_eq!(e.to_string(), "bad status line \"garbage\\r\\n\"");
        let e = read_head(&mut BufReader::new(&b"HTTP/1.1 200 OK\r\nA: b\r\n"[..])).unwrap_err();
        assert!(matches!(e, HeadError::Closed), "{e}");
        let (_, b) = body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(b.unwrap_err().to_string().contains("bad chunk size"));
        let (_, b) = body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc");
        assert_eq!(b.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_strict_reader_wants_the_last_chunk() {
        let read = |raw: &'static [u8], strict: bool| {
            let r = BufReader::new(raw);
            let mut c = if strict {
                ChunkedReader::strict(r)
            } else {
                ChunkedReader::new(r)
            };
            let mut b = Vec::new();
            c.read_to_end(&mut b).map(|_| b)
        };
        let cut = b"3\r\nabc\r\n";
        assert_eq!(read(cut, false).unwrap(), b"abc");
        let e = read(cut, true).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        assert_eq!(read(b"3\r\nabc\r\n0\r\n\r\n", true).unwrap(), b"abc");
        let e = read(b"zz\r\n", true).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }
}
