//! Percent-encoding of URL components.

/// Go's `url.QueryEscape`: letters, digits and `-_.~` kept, a space as `+`, every other byte
/// as `%XX`.
pub fn query_escape(s: &str) -> String {
    escape(s, true)
}

/// Letters, digits and `-_.~` kept, every other byte (a space too) as `%XX`.
pub fn percent_encode(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' if space_as_plus => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_go() {
        assert_eq!(query_escape("a b&c=d/é~-_."), "a+b%26c%3Dd%2F%C3%A9~-_.");
        assert_eq!(
            percent_encode("a b&c=d/é~-_."),
            "a%20b%26c%3Dd%2F%C3%A9~-_."
        );
        assert_eq!(query_escape(""), "");
    }
}
