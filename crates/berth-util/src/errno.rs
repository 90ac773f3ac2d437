//! An OS error as Go's `syscall.Errno` prints it (dockerd's messages embed that text): the C
//! library's description with a lower-case first letter, without Rust's ` (os error N)`.

/// `Cannot assign requested address (os error 99)` → `cannot assign requested address`; an
/// error without an errno keeps its own text.
pub fn go_text(e: &std::io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return e.to_string();
    };
    let s = std::io::Error::from_raw_os_error(n).to_string();
    let s = s.strip_suffix(&format!(" (os error {n})")).unwrap_or(&s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_go() {
        let e = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(go_text(&e), "address already in use");
        let e = std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        assert_eq!(go_text(&e), "cannot assign requested address");
        let e = std::io::Error::other("plain");
        assert_eq!(go_text(&e), "plain");
    }
}
