//! SPDY/3.1 framing, as the Kubernetes streaming protocols use it (moby/spdystream under
//! client-go and the kubelet): control frames (`SYN_STREAM`, `SYN_REPLY`, `RST_STREAM`,
//! `SETTINGS`, `PING`, `GOAWAY`, `HEADERS`, `WINDOW_UPDATE`) and data frames, the header blocks
//! zlib-compressed with the SPDY/3 dictionary, one compression context per direction of a
//! connection (each block ends with a sync flush). Sans-IO: [`Decoder::decode`] takes bytes,
//! [`Encoder::encode`] gives bytes; [`read_frame`] is the async loop over a reader. Used by
//! the streaming server and by the tests' client alike. spdystream does no flow control, so
//! `WINDOW_UPDATE` and `SETTINGS` are parsed and ignored by their users.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// `FLAG_FIN` of data frames and of `SYN_STREAM`/`SYN_REPLY`/`HEADERS`: the sender's half of
/// the stream is closed.
pub const FLAG_FIN: u8 = 0x01;
/// `SYN_STREAM`'s `FLAG_UNIDIRECTIONAL`.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The longest payload of one frame (24-bit lengths).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

/// `RST_STREAM` status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;
pub const RST_REFUSED_STREAM: u32 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// A header block: lower-case names with their values (several values of one name are one
/// value joined by NUL bytes on the wire).
pub type Headers = Vec<(String, String)>;

/// The first value of header `name`.
pub fn header<'h>(h: &'h Headers, name: &str) -> Option<&'h str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// (flags, id, value) entries.
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// A framing error: the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY header block compression: {0}")]
    Zlib(String),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY version {0} is not supported (3 is)")]
    Version(u16),
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): header
/// names and values, each a big-endian u32 length and the bytes, then a run of common
/// substrings.
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,public",
            "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        for t in TAIL {
            d.extend_from_slice(t.as_bytes());
        }
        d
    })
}

fn zerr(e: impl std::fmt::Display) -> Error {
    Error::Zlib(e.to_string())
}

/// The sending side of a connection (owns the header compressor).
pub struct Encoder {
    z: Compress,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut z = Compress::new(Compression::default(), true);
        // A fresh stream takes a dictionary; this cannot fail.
        let _ = z.set_dictionary(dictionary());
        Encoder { z }
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.z
                .compress_vec(&raw[done..], &mut out, FlushCompress::Sync)
                .map_err(zerr)?;
            let done = (self.z.total_in() - start) as usize;
            // Complete once every byte went in and the flush had room to finish.
            if done == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Appends the bytes of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), Error> {
        let control = |out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
            out.extend_from_slice(body);
        };
        let mut body = Vec::new();
        match frame {
            Frame::SynStream {
                stream,
                associated,
                priority,
                flags,
                headers,
            } => {
                body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 7) << 5);
                body.push(0);
                body.extend_from_slice(&self.header_block(headers)?);
                control(out, SYN_STREAM, *flags, &body);
            }
            Frame::SynReply {
                stream,
                flags,
                headers,
            }
            | Frame::Headers {
                stream,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&self.header_block(headers)?);
                control(out, kind, *flags, &body);
            }
            Frame::RstStream { stream, status } => {
                body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Settings { flags, entries } => {
                body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (f, id, v) in entries {
                    body.extend_from_slice(
                        &((u32::from(*f) << 24) | (id & 0xff_ffff)).to_be_bytes(),
                    );
                    body.extend_from_slice(&v.to_be_bytes());
                }
                control(out, SETTINGS, *flags, &body);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                body.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream, delta } => {
                body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &body);
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(Error::Malformed("data frame over 16 MiB"));
                }
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(
                    &((u32::from(*flags) << 24) | data.len() as u32).to_be_bytes(),
                );
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

/// The receiving side of a connection (owns the header decompressor).
pub struct Decoder {
    z: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            z: Decompress::new(true),
        }
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            match self
                .z
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(dictionary()).map_err(zerr)?;
                }
                Err(e) => return Err(zerr(e)),
            }
            let done = (self.z.total_in() - start) as usize;
            if done == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() > 16 << 20 {
                return Err(Error::Malformed("header block over 16 MiB"));
            }
        }
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, Error> {
        let raw = self.inflate(compressed)?;
        let short = Error::Malformed("truncated header block");
        let take = |p: &mut usize, n: usize| -> Option<&[u8]> {
            let s = raw.get(*p..*p + n)?;
            *p += n;
            Some(s)
        };
        let mut p = 0;
        let count = be32(take(&mut p, 4).ok_or(Error::Malformed("truncated header block"))?);
        let mut headers = Vec::with_capacity((count as usize).min(64));
        for _ in 0..count {
            let mut field = || -> Option<String> {
                let n = be32(take(&mut p, 4)?) as usize;
                Some(String::from_utf8_lossy(take(&mut p, n)?).into_owned())
            };
            let (Some(k), Some(v)) = (field(), field()) else {
                return Err(short);
            };
            headers.push((k.to_ascii_lowercase(), v));
        }
        Ok(headers)
    }

    /// Decodes the frame at the front of `buf`: `None` while it is incomplete, else the frame
    /// and how many bytes it took. Unknown control frame types are skipped (`None` frame with
    /// their length).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Option<Frame>, usize)>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let first = be32(&buf[0..4]);
        let word = be32(&buf[4..8]);
        let flags = (word >> 24) as u8;
        let len = (word & 0xff_ffff) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body = &buf[8..8 + len];
        let used = 8 + len;
        if first & 0x8000_0000 == 0 {
            return Ok(Some((
                Some(Frame::Data {
                    stream: first & 0x7fff_ffff,
                    flags,
                    data: body.to_vec(),
                }),
                used,
            )));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let need = |n: usize| {
            if body.len() < n {
                Err(Error::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        let kind = (first & 0xffff) as u16;
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    stream: be32(&body[0..4]) & 0x7fff_ffff,
                    associated: be32(&body[4..8]) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    flags,
                    headers: self.header_block(&body[10..])?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream = be32(&body[0..4]) & 0x7fff_ffff;
                let headers = self.header_block(&body[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream: be32(&body[0..4]) & 0x7fff_ffff,
                    status: be32(&body[4..8]),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = be32(&body[0..4]) as usize;
                need(4 + n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|i| {
                        let e = &body[4 + i * 8..];
                        let idw = be32(&e[0..4]);
                        ((idw >> 24) as u8, idw & 0xff_ffff, be32(&e[4..8]))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping {
                    id: be32(&body[0..4]),
                }
            }
            GOAWAY => {
                need(4)?;
                Frame::GoAway {
                    last_good: be32(&body[0..4]) & 0x7fff_ffff,
                    status: if body.len() >= 8 {
                        be32(&body[4..8])
                    } else {
                        0
                    },
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream: be32(&body[0..4]) & 0x7fff_ffff,
                    delta: be32(&body[4..8]) & 0x7fff_ffff,
                }
            }
            _ => return Ok(Some((None, used))),
        };
        Ok(Some((Some(frame), used)))
    }
}

/// Reads the next frame from `r` (`buf` keeps what was read beyond it); `None` at the end of
/// the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    dec: &mut Decoder,
) -> Result<Option<Frame>, Error> {
    loop {
        if let Some((frame, used)) = dec.decode(buf)? {
            buf.drain(..used);
            match frame {
                Some(f) => return Ok(Some(f)),
                None => continue,
            }
        }
        let mut chunk = [0u8; 32 * 1024];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(Error::Malformed("connection closed inside a frame"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Its Adler-32, the dictionary id in every SPDY/3 zlib stream's header.
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(d).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_with_one_compression_context() {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
        let h = |t: &str| vec![("streamtype".to_string(), t.to_string())];
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h("error"),
            },
            Frame::SynStream {
                stream: 3,
                associated: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::SynReply {
                stream: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Ping { id: 7 },
            Frame::RstStream {
                stream: 5,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::WindowUpdate {
                stream: 3,
                delta: 100,
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut got = Vec::new();
        let mut p = 0;
        // Byte by byte: incomplete frames wait.
        let mut end = 0;
        while p < wire.len() {
            end = (end + 1).min(wire.len());
            if let Some((f, used)) = dec.decode(&wire[p..end]).unwrap() {
                got.push(f.unwrap());
                p += used;
            }
        }
        assert_eq!(got, frames);
        assert_eq!(
            header(&frames[1].headers().unwrap().clone(), "Port"),
            Some("8080")
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut dec = Decoder::new();
        // Version 2.
        let f = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(dec.decode(&f), Err(Error::Version(2))));
        // A header block that is not zlib.
        let f = [0x80, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4];
        assert!(matches!(
            Decoder::new().decode(&f),
            Err(Error::Zlib(_) | Error::Malformed(_))
        ));
        // A short RST_STREAM.
        let f = [0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0];
        assert!(matches!(
            Decoder::new().decode(&f),
            Err(Error::Malformed(_))
        ));
    }

    impl Frame {
        fn headers(&self) -> Option<&Headers> {
            match self {
                Frame::SynStream { headers, .. }
                | Frame::SynReply { headers, .. }
                | Frame::Headers { headers, .. } => Some(headers),
                _ => None,
            }
        }
    }
}
