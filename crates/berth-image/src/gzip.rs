//! The gzip decoder of every layer path (pull, load, import, content sizes): flate2 over
//! zlib-rs, multi-member, each member's CRC-32 and size verified. The workspace enables
//! zlib-rs's `std` feature, without which zlib-rs has no run-time CPU detection and inflates
//! a quarter slower (no AVX2 fast path, table-driven CRC-32 instead of PCLMULQDQ).

use std::io::{BufRead, Read};

/// A multi-member gzip decoder over `reader`.
pub fn decoder<'a, R: BufRead + 'a>(reader: R) -> Box<dyn Read + 'a> {
    Box::new(flate2::bufread::MultiGzDecoder::new(reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn gz(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("line {i} of the sample {}\n", i * 7919 % 1013).as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn decode(bytes: &[u8], bufsize: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(io::BufReader::with_capacity(bufsize, bytes)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_members_levels_and_small_buffers() {
        let a = sample(3 << 20);
        for level in [0, 1, 6, 9] {
            assert_eq!(decode(&gz(&a, level), 1 << 16).unwrap(), a, "level {level}");
        }
        let mut two = gz(&a[..100_000], 6);
        two.extend_from_slice(&gz(b"second member", 1));
        let mut want = a[..100_000].to_vec();
        want.extend_from_slice(b"second member");
        assert_eq!(decode(&two, 7).unwrap(), want);
    }

    #[test]
    fn corrupt_and_truncated_streams_are_errors() {
        let g = gz(&sample(200_000), 6);
        for cut in [5, 10, 20, g.len() / 2, g.len() - 8, g.len() - 1] {
            assert!(decode(&g[..cut], 4096).is_err(), "cut at {cut}");
        }
        let mut bad = g.clone();
        let n = bad.len();
        bad[n - 6] ^= 0x55;
        assert!(decode(&bad, 4096).is_err(), "CRC mismatch");
    }
}
