//! An OS error as Go's `syscall.Errno` prints it (dockerd's messages embed that text): the C
//! library's description with a lower-case first letter, without Rust's ` (os error N)`.

/// `Cannot assign requested address (os error 99)` → `cannot assign requested address`; an
/// error without an errno keeps its own text, its first letter lower-cased as Go's are.
pub fn go_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match e.raw_os_error() {
        Some(n) => s
            .strip_suffix(&format!(" (os error {n})"))
            .unwrap_or(&s)
            .to_string(),
        None => s,
    };
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
        let e = std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(go_text(&e), "no such file or directory");
        let e = std::io::Error::other("Custom text");
        assert_eq!(go_text(&e), "custom text");
    }
}
