//! Whether the process runs in a user namespace other than the initial one (rootless Berth:
//! berthd's namespace, or one a runtime made), read from `/proc/self/uid_map` at each call
//! (a process may enter one after it started).

/// True when `/proc/self/uid_map` is not the initial namespace's identity map.
pub fn running_in_userns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| !is_initial_uid_map(&m))
}

/// The initial user namespace maps every id to itself: `0 0 4294967295`.
pub fn is_initial_uid_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_namespace_map() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
        assert!(!is_initial_uid_map("0 1000 1\n1 100000 65536\n"));
    }
}
