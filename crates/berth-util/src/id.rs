//! Random identifiers: container, exec, build and upload IDs.

use std::io::Read;

/// Fills `buf` from the kernel's random source: `getrandom(2)`, or `/dev/urandom` where the
/// system call is missing or refused (old kernels, seccomp filters).
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::rand::getrandom(&mut buf[done..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                return std::fs::File::open("/dev/urandom")?.read_exact(&mut buf[done..]);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `nbytes` random bytes as lowercase hex (`2 * nbytes` characters).
///
/// # Panics
///
/// When the system has no random source at all (neither `getrandom(2)` nor `/dev/urandom`):
/// an identifier that might collide is worse than no identifier.
pub fn random_hex(nbytes: usize) -> String {
    let mut buf = vec![0u8; nbytes];
    if let Err(e) = fill_random(&mut buf) {
        panic!("no source of random bytes (getrandom, /dev/urandom): {e}");
    }
    to_hex(&buf)
}

/// A new 64-hex-character identifier (32 random bytes), the shape of Docker's container and
/// exec IDs.
pub fn new_id() -> String {
    random_hex(32)
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_of_the_asked_length_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert_eq!(random_hex(16).len(), 32);
        assert_eq!(random_hex(0), "");
        // A large request needs several getrandom calls on some kernels.
        assert_eq!(random_hex(1 << 20).len(), 2 << 20);
    }

    #[test]
    fn hex_encoding() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
