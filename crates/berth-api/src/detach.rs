//! Detach keys (`detachKeys` of attach, `DetachKeys` of exec, the CLI's `--detach-keys`):
//! Docker's key syntax and its escape proxy, which the daemon runs on a tty session's input.

/// The default sequence: ctrl-p, ctrl-q.
pub const DEFAULT: [u8; 2] = [0x10, 0x11];

/// A detach-key specification Docker refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown character: '{key}'")]
pub struct DetachKeysError {
    /// The key that is neither one character nor `ctrl-<c>`.
    pub key: String,
}

/// Docker's `term.ToBytes`: comma-separated keys, each a single character or `ctrl-<c>` with
/// `<c>` one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`. Empty: the default ctrl-p, ctrl-q.
pub fn parse(s: &str) -> Result<Vec<u8>, DetachKeysError> {
    if s.is_empty() {
        return Ok(DEFAULT.to_vec());
    }
    s.split(',')
        .map(|key| {
            let b = key.as_bytes();
            let code = if b.len() == 1 {
                Some(b[0])
            } else if let Some(c) = key.strip_prefix("ctrl-").filter(|c| c.len() == 1) {
                match c.as_bytes()[0] {
                    c @ b'a'..=b'z' => Some(c - b'a' + 1),
                    b'@' => Some(0),
                    b'[' => Some(27),
                    b'\\' => Some(28),
                    b']' => Some(29),
                    b'^' => Some(30),
                    b'_' => Some(31),
                    _ => None,
                }
            } else {
                None
            };
            code.ok_or_else(|| DetachKeysError {
                key: key.to_string(),
            })
        })
        .collect()
}

/// The detach-key filter on a tty's input, as Docker's escape proxy: bytes that may start the
/// sequence are held back until it is complete (detach) or broken (they are passed on).
#[derive(Debug, Clone)]
pub struct EscapeProxy {
    keys: Vec<u8>,
    held: usize,
}

impl EscapeProxy {
    pub fn new(keys: Vec<u8>) -> Self {
        EscapeProxy { keys, held: 0 }
    }

    /// Filters `input` into `out`; true when the whole sequence was typed (what follows it in
    /// `input` is dropped).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_and_filter_like_docker() {
        assert_eq!(parse("").unwrap(), vec![0x10, 0x11]);
        assert_eq!(
            parse("ctrl-a,x,ctrl-@,ctrl-[,ctrl-\\,ctrl-_").unwrap(),
            vec![1, b'x', 0, 27, 28, 31]
        );
        for bad in ["ctrl-1", "ctrl-", "ab", "ctrl-A", ","] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("ctrl-A").unwrap_err().to_string(),
            "unknown character: 'ctrl-A'"
        );
        let mut p = EscapeProxy::new(DEFAULT.to_vec());
        let mut out = Vec::new();
        // A broken sequence is passed on whole, in order.
        assert!(!p.feed(b"a\x10b", &mut out));
        assert_eq!(out, b"a\x10b");
        out.clear();
        // Held across reads, then completed.
        assert!(!p.feed(b"c\x10", &mut out));
        assert_eq!(out, b"c");
        assert!(p.feed(b"\x11rest", &mut out));
        assert_eq!(out, b"c");
        // A repeated first key restarts the match.
        let mut p = EscapeProxy::new(DEFAULT.to_vec());
        let mut out = Vec::new();
        assert!(p.feed(b"\x10\x10\x11", &mut out));
        assert_eq!(out, b"\x10");
        // One key.
        let mut p = EscapeProxy::new(vec![0x10]);
        assert!(p.feed(b"ab\x10", &mut out));
    }
}
