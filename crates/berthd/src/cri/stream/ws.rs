//! WebSocket (RFC 6455) framing for the Kubernetes channel protocols: the handshake's accept
//! key, frames in both directions (a client masks, a server does not), fragmented messages
//! reassembled. Sans-IO like [`super::spdy`]; [`read_message`] is the async loop. The
//! channel protocols (`channel.k8s.io` and its `v4.`/`v5.` and `base64.` variants) put the
//! channel number in each message's first byte.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const OP_CONTINUATION: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// The largest message accepted (the channel protocols send small ones).
pub const MAX_MESSAGE: usize = 16 << 20;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("websocket connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed websocket frame: {0}")]
    Malformed(&'static str),
}

/// One whole message (fragments joined), or a control frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub opcode: u8,
    pub data: Vec<u8>,
}

/// Appends one unfragmented frame to `out`, masked with `mask` (a client's frames).
pub fn encode(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    out.push(0x80 | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

/// A close frame's payload: the status code and a reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Decodes the frame at the front of `buf`: `None` while incomplete, else (fin, opcode,
/// unmasked payload) and its length.
#[allow(clippy::type_complexity)]
pub fn decode(buf: &[u8]) -> Result<Option<((bool, u8, Vec<u8>), usize)>, Error> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    if buf[0] & 0x70 != 0 {
        return Err(Error::Malformed(
            "reserved bits set (no extension was negotiated)",
        ));
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut p) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(Error::Malformed("frame over 16 MiB"));
    }
    if opcode >= 8 && (len > 125 || !fin) {
        return Err(Error::Malformed("bad control frame"));
    }
    let key = if masked {
        if buf.len() < p + 4 {
            return Ok(None);
        }
        let k = [buf[p], buf[p + 1], buf[p + 2], buf[p + 3]];
        p += 4;
        Some(k)
    } else {
        None
    };
    let len = len as usize;
    if buf.len() < p + len {
        return Ok(None);
    }
    let mut payload = buf[p..p + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Ok(Some(((fin, opcode, payload), p + len)))
}

/// What [`read_message`] keeps between calls.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    partial: Option<(u8, Vec<u8>)>,
}

/// Reads the next message (control frames come as they arrive, between a message's
/// fragments too); `None` at the end of the connection.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    st: &mut Reader,
) -> Result<Option<Message>, Error> {
    loop {
        if let Some(((fin, opcode, data), used)) = decode(&st.buf)? {
            st.buf.drain(..used);
            if opcode >= 8 {
                return Ok(Some(Message { opcode, data }));
            }
            let (op, mut acc) = match (opcode, st.partial.take()) {
                (OP_CONTINUATION, Some(p)) => p,
                (OP_CONTINUATION, None) => {
                    return Err(Error::Malformed("continuation without a message"))
                }
                (_, Some(_)) => return Err(Error::Malformed("new message inside a message")),
                (op, None) => (op, Vec::new()),
            };
            acc.extend_from_slice(&data);
            if acc.len() > MAX_MESSAGE {
                return Err(Error::Malformed("message over 16 MiB"));
            }
            if fin {
                return Ok(Some(Message {
                    opcode: op,
                    data: acc,
                }));
            }
            st.partial = Some((op, acc));
            continue;
        }
        let mut chunk = [0u8; 32 * 1024];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            if st.buf.is_empty() && st.partial.is_none() {
                return Ok(None);
            }
            return Err(Error::Malformed("connection closed inside a frame"));
        }
        st.buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn fragments_masks_and_lengths() {
        let mut wire = Vec::new();
        // A fragmented masked message with a ping between the fragments.
        wire.extend_from_slice(&[0x02, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        encode(OP_PING, b"p", Some([9, 9, 9, 9]), &mut wire);
        wire.extend_from_slice(&[0x80, 0x01, b'd']);
        let big = vec![7u8; 70_000];
        encode(OP_BINARY, &big, None, &mut wire);
        let mid = vec![5u8; 300];
        encode(OP_TEXT, &mid, Some([1, 0, 1, 0]), &mut wire);
        let mut r = &wire[..];
        let mut st = Reader::default();
        let mut next = || {
            let m = futures_util::FutureExt::now_or_never(read_message(&mut r, &mut st));
            m.unwrap().unwrap()
        };
        assert_eq!(
            next(),
            Some(Message {
                opcode: OP_PING,
                data: b"p".to_vec()
            })
        );
        assert_eq!(
            next(),
            Some(Message {
                opcode: OP_BINARY,
                data: b"abcd".to_vec()
            })
        );
        assert_eq!(next().unwrap().data, big);
        assert_eq!(next().unwrap().data, mid);
        assert_eq!(next(), None);
        assert!(decode(&[0xf2, 0]).is_err());
        assert!(decode(&[0x09, 0x7e, 1, 0]).is_err());
    }
}
