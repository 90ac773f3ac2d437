//! Names unique to a test: containers, cgroups, bridges, repositories.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u32, width: usize) -> String {
    let mut s = Vec::new();
    while n > 0 || s.len() < width {
        s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// Eight characters made of this process's id and a counter: fixed in width, so that no id is
/// part of another one (they serve as leak markers too); lower case letters and digits only,
/// valid in container, image, cgroup, nftables and interface names.
pub fn unique_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!(
        "{}{}",
        base36(std::process::id(), 5),
        base36(n % (36 * 36 * 36), 3)
    )
}

/// `<prefix>-<unique_id>`: short enough that `unique_name("bd")` plus a few characters is a
/// valid link name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_fixed_width_and_short() {
        let a = unique_name("bd");
        let b = unique_name("bd");
        assert_ne!(a, b);
        assert_eq!(a.len(), "bd-".len() + 8);
        assert!(!b.contains(&a) && !a.contains(&b));
        assert!(a.len() + 4 <= 15, "leaves room in a link name: {a}");
        assert!(a[3..]
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(36 * 36 + 35, 3), "10z");
        assert_eq!(base36(4_194_304, 5), "2hwcg");
    }
}
