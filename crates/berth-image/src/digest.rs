//! Content digests. Only `sha256` is accepted for content.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// Errors from parsing or verifying a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The string is not `algorithm:hex`.
    #[error("invalid digest format: {0:?}")]
    InvalidFormat(String),
    /// The algorithm is not supported (only sha256 is).
    #[error("unsupported digest algorithm {0:?}: only sha256 is supported")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not 64 lowercase hex digits.
    #[error("invalid sha256 digest {0:?}: expected 64 lowercase hexadecimal digits")]
    InvalidHex(String),
}

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Always 64 lowercase hex characters.
    hex: String,
}

impl Digest {
    /// The only algorithm Berth accepts for content.
    pub const ALGORITHM: &'static str = "sha256";

    /// Parses and validates `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, enc) = s
            .split_once(':')
            .ok_or_else(|| DigestError::InvalidFormat(s.to_string()))?;
        if alg.is_empty() || enc.is_empty() {
            return Err(DigestError::InvalidFormat(s.to_string()));
        }
        if alg != Self::ALGORITHM {
            return Err(DigestError::UnsupportedAlgorithm(alg.to_string()));
        }
        Self::from_hex(enc)
    }

    /// Builds a digest from its 64-character lowercase hex encoding.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::InvalidHex(hex.to_string()));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// Builds a digest from a raw 32-byte sha256 output.
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
        Self {
            hex: hex::encode(bytes),
        }
    }

    /// The sha256 digest of `data`.
    pub fn of_bytes(data: &[u8]) -> Self {
        Self::from_sha256_bytes(Sha256::digest(data).into())
    }

    /// `"sha256"`.
    pub fn algorithm(&self) -> &'static str {
        Self::ALGORITHM
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as Docker shows short IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

text_form!(Digest, DigestError, Digest::parse, Digest::parse);

/// An incremental sha256 hasher that also counts bytes.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    count: u64,
}

impl Hasher {
    /// A new, empty hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.count += data.len() as u64;
    }
    /// Bytes fed so far.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(self.inner.finalize().into())
    }
    /// Checks the digest (and, when given, the size) of everything fed.
    pub fn verify(
        self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Digest, VerifyError> {
        let size = self.count;
        if let Some(want) = expected_size {
            if want != size {
                return Err(VerifyError::Size {
                    expected: want,
                    actual: size,
                });
            }
        }
        let actual = self.finish();
        if &actual != expected {
            return Err(VerifyError::Digest {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(actual)
    }
}

/// Content did not match what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Wrong digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest {
        /// What the caller expected.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// Wrong size.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        /// What the caller expected.
        expected: u64,
        /// What was read.
        actual: u64,
    },
}

/// A reader that hashes (sha256) and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.hasher.count()
    }
    /// Consumes the wrapper, giving the hasher (digest of what was read) and the inner reader.
    pub fn into_parts(self) -> (Hasher, R) {
        (self.hasher, self.inner)
    }
    /// Reads `inner` to its end and returns the digest and size of everything read through it.
    pub fn finish_draining(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let n = self.hasher.count();
        Ok((self.hasher.finish(), n))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Consumes the wrapper.
    pub fn into_parts(self) -> (Hasher, W) {
        (self.hasher, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_valid() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::of_bytes(b""), d);
    }

    #[test]
    fn parse_invalid() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            Digest::parse("md5:abc"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn streaming_verify() {
        let data = b"hello world".repeat(1000);
        let want = Digest::of_bytes(&data);
        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        let (h, _) = r.into_parts();
        assert_eq!(
            h.clone().verify(&want, Some(data.len() as u64)).unwrap(),
            want
        );
        assert!(matches!(
            h.clone().verify(&want, Some(1)),
            Err(VerifyError::Size { .. })
        ));
        let other = Digest::of_bytes(b"x");
        assert!(matches!(
            h.verify(&other, None),
            Err(VerifyError::Digest { .. })
        ));
    }

    #[test]
    fn serde_roundtrip() {
        let d = Digest::parse(EMPTY).unwrap();
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
