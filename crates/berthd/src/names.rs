//! Docker-style generated container names (`adjective_surname`).

const LEFT: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "bold",
    "brave",
    "busy",
    "clever",
    "compassionate",
    "dazzling",
    "eager",
    "elastic",
    "festive",
    "focused",
    "gallant",
    "happy",
    "jolly",
    "keen",
    "laughing",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
];

const RIGHT: &[&str] = &[
    "albattani",
    "babbage",
    "banach",
    "bohr",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermat",
    "galileo",
    "gauss",
    "hopper",
    "hypatia",
    "kepler",
    "knuth",
    "lamport",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "wozniak",
    "yalow",
    "zhukovsky",
];

/// A random name; `retry` > 0 appends a digit as Docker does.
pub fn generate(retry: u32) -> String {
    let r = crate::util::random_hex(4);
    let n = u32::from_str_radix(&r, 16).unwrap_or(0);
    let l = LEFT[(n as usize) % LEFT.len()];
    let rr = RIGHT[((n >> 16) as usize) % RIGHT.len()];
    if retry > 0 {
        format!("{l}_{rr}{}", n % 10)
    } else {
        format!("{l}_{rr}")
    }
}

/// Docker's rule for user-given names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        let n = super::generate(0);
        assert!(n.contains('_'));
        assert!(super::valid(&n));
        assert!(!super::valid("/x"));
        assert!(super::valid("t1"));
    }
}
