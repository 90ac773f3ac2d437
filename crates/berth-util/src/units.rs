//! Docker's size and duration syntaxes, with Go's exact rules so that a flag or an API
//! value means in Berth what it means in Docker:
//!
//! - [`parse_ram_bytes`]: go-units `RAMInBytes`, binary multiples (`512m`, `1.5g`, `64MiB`);
//!   memory limits, `--shm-size`, tmpfs sizes, `RUN --mount type=tmpfs,size=`.
//! - [`parse_human_size`]: go-units `FromHumanSize`, decimal multiples (`1kB` = 1000).
//! - [`parse_duration`]: Go's `time.ParseDuration` (`1h2m3.5s`, `300ms`, `-1s`, `0`).

/// A size or duration that does not parse. The messages are Docker's (go-units and Go's
/// `time` package).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    /// No number, a malformed number, or a negative size.
    #[error("invalid size: '{0}'")]
    InvalidSize(String),
    /// A unit that is not one of b, k, m, g, t, p (with an optional `b` or `ib`).
    #[error("invalid suffix: '{suffix}'")]
    InvalidSuffix { input: String, suffix: String },
    /// A size of 2^63 bytes or more.
    #[error("size out of range: '{0}'")]
    SizeOutOfRange(String),
    /// A malformed duration, or one beyond ±2^63 nanoseconds.
    #[error("time: invalid duration \"{0}\"")]
    InvalidDuration(String),
    /// A number without a unit (other than a lone `0`).
    #[error("time: missing unit in duration \"{0}\"")]
    MissingUnit(String),
    /// A unit other than ns, us (µs, μs), ms, s, m, h.
    #[error("time: unknown unit \"{unit}\" in duration \"{input}\"")]
    UnknownUnit { input: String, unit: String },
}

/// The multiplier of a unit letter: powers of 1024 or of 1000.
fn multiplier(c: u8, binary: bool) -> Option<f64> {
    let exp = match c {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        b'p' => 5,
        _ => return None,
    };
    let base: f64 = if binary { 1024.0 } else { 1000.0 };
    Some(base.powi(exp))
}

/// go-units `RAMInBytes`: a non-negative number (decimals allowed) and an optional unit of
/// b, k, m, g, t or p, each optionally followed by `b` or `ib`, case-insensitive, optionally
/// separated by one space; powers of 1024 (`512m` = 512 MiB, `1.5g`, `64MB` = 64 MiB).
/// Fractions of a byte are dropped.
pub fn parse_ram_bytes(s: &str) -> Result<i64, UnitsError> {
    parse_size(s, true)
}

/// go-units `FromHumanSize`: the syntax of [`parse_ram_bytes`] with powers of 1000
/// (`1kB` = 1000, `1.5MB` = 1 500 000).
pub fn parse_human_size(s: &str) -> Result<i64, UnitsError> {
    parse_size(s, false)
}

fn parse_size(s: &str, binary: bool) -> Result<i64, UnitsError> {
    let invalid = || UnitsError::InvalidSize(s.to_string());
    // The number ends at the last digit, dot or space (go-units' `LastIndexAny`); one space
    // between number and unit is dropped.
    let sep = s
        .bytes()
        .rposition(|c| c.is_ascii_digit() || c == b'.' || c == b' ')
        .ok_or_else(invalid)?;
    let (num, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    let mut size = parse_go_float(num).ok_or_else(invalid)?;
    if size < 0.0 {
        return Err(invalid());
    }
    if !suffix.is_empty() {
        if suffix.len() > 3 {
            return Err(UnitsError::InvalidSuffix {
                input: s.to_string(),
                suffix: suffix.to_string(),
            });
        }
        let sfx = suffix.to_ascii_lowercase();
        let bad = || UnitsError::InvalidSuffix {
            input: s.to_string(),
            suffix: sfx.clone(),
        };
        let b = sfx.as_bytes();
        if b[0] == b'b' {
            if b.len() > 1 {
                return Err(bad());
            }
        } else {
            size *= multiplier(b[0], binary).ok_or_else(bad)?;
            match b.len() {
                2 if b[1] != b'b' => return Err(bad()),
                3 if &b[1..] != b"ib" => return Err(bad()),
                _ => {}
            }
        }
    }
    // 2^63 and above do not fit an i64 (Go's conversion would give a meaningless value).
    if size >= 9_223_372_036_854_775_808.0 {
        return Err(UnitsError::SizeOutOfRange(s.to_string()));
    }
    Ok(size as i64)
}

/// A decimal floating-point number as Go's `strconv.ParseFloat` reads the strings that can
/// reach it here (the text before a unit, which ends in a digit or a dot): an optional sign,
/// digits with at most one dot, an optional exponent. No spaces, no `inf`/`nan`, no hex.
fn parse_go_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut digits = 0;
    let mut dot = false;
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' => digits += 1,
            b'.' if !dot => dot = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() {
        if !matches!(b[i], b'e' | b'E') {
            return None;
        }
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if i == b.len() || !b[i..].iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    s.parse().ok()
}

/// Go's `time.ParseDuration`, in nanoseconds: an optional sign, then one or more decimal
/// numbers each with a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), e.g. `300ms`,
/// `-1.5h`, `2h45m`; a lone `0` needs no unit. Fractions are exact to the nanosecond; a
/// total beyond the range of an i64 is an error.
pub fn parse_duration(s: &str) -> Result<i64, UnitsError> {
    let invalid = || UnitsError::InvalidDuration(s.to_string());
    let mut rest = s;
    let mut neg = false;
    if let Some(c) = rest.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            rest = &rest[1..];
        }
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // The integer part (overflow is an error).
        let mut i = 0;
        let mut v: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        // The fraction (digits beyond what a u64 holds only lose precision).
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let start = i;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(b[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > start;
        }
        if !pre && !post {
            return Err(invalid());
        }
        // The unit: everything up to the next number.
        let u_end = rest[i..]
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |p| p + i);
        if u_end == i {
            return Err(UnitsError::MissingUnit(s.to_string()));
        }
        let unit = &rest[i..u_end];
        rest = &rest[u_end..];
        let mult: u64 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(UnitsError::UnknownUnit {
                    input: s.to_string(),
                    unit: unit.to_string(),
                })
            }
        };
        if v > LIMIT / mult {
            return Err(invalid());
        }
        v *= mult;
        if f > 0 {
            // f64 is exact enough: f * mult / scale is at most 3.6e12 (an hour in ns).
            v += (f as f64 * (mult as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // -2^63 is representable.
        return Ok((total as i64).wrapping_neg());
    }
    i64::try_from(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KI: i64 = 1024;

    #[test]
    fn ram_bytes_like_go_units() {
        for (s, want) in [
            ("32", 32),
            ("32b", 32),
            ("32B", 32),
            ("32k", 32 * KI),
            ("32K", 32 * KI),
            ("32kb", 32 * KI),
            ("32Kb", 32 * KI),
            ("32Kib", 32 * KI),
            ("32KIB", 32 * KI),
            ("32Mb", 32 * KI * KI),
            ("32Gb", 32 * KI * KI * KI),
            ("32Tb", 32 * KI * KI * KI * KI),
            ("32Pb", 32 * KI * KI * KI * KI * KI),
            ("32PB", 32 * KI * KI * KI * KI * KI),
            ("32P", 32 * KI * KI * KI * KI * KI),
            ("32.3", 32),
            ("32.3b", 32),
            ("32.3k", 33075),
            ("0.3 K", 307),
            ("32 MiB", 32 << 20),
            ("512m", 512 << 20),
            ("1.5g", 3 << 29),
            ("64MB", 64 << 20),
            ("16m", 16 << 20),
            ("0", 0),
            ("-0", 0),
            (".5k", 512),
            ("5.k", 5120),
            ("1e3", 1000),
            ("10 ", 10),
        ] {
            assert_eq!(parse_ram_bytes(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn ram_bytes_errors() {
        for s in [
            "", " ", "32.3.3", "hello", "-32", "-1", ".", "-", "k", "32 b b", "inf", "0x10", " 32",
            "+-1", "32mib ",
        ] {
            assert!(
                matches!(parse_ram_bytes(s), Err(UnitsError::InvalidSize(_))),
                "{s:?}: {:?}",
                parse_ram_bytes(s)
            );
        }
        for (s, sfx) in [
            ("32bm", "bm"),
            ("32mbb", "mbb"),
            ("32kbytes", "kbytes"),
            ("32x", "x"),
            ("32kk", "kk"),
            ("32kib1", ""),
            ("1e", "e"),
            ("32KBYTES", "KBYTES"),
        ] {
            match parse_ram_bytes(s) {
                Err(UnitsError::InvalidSuffix { suffix, .. }) => assert_eq!(suffix, sfx, "{s}"),
                // "32kib1" parses its number as "32kib1" (up to the last digit): not a number.
                Err(UnitsError::InvalidSize(_)) if sfx.is_empty() => {}
                other => panic!("{s:?}: {other:?}"),
            }
        }
        for s in [
            "8192p",
            "9223372036854775808",
            "1e30",
            "99999999999999999999g",
        ] {
            assert!(
                matches!(parse_ram_bytes(s), Err(UnitsError::SizeOutOfRange(_))),
                "{s:?}"
            );
        }
        // The largest value that a float conversion keeps below 2^63.
        assert_eq!(parse_ram_bytes("8191p"), Ok(8191 << 50));
    }

    #[test]
    fn human_size_is_decimal() {
        for (s, want) in [
            ("32", 32),
            ("32b", 32),
            ("32.5KB", 32500),
            ("1kB", 1000),
            ("1k", 1000),
            ("1KiB", 1000),
            ("10m", 10_000_000),
            ("32mb", 32_000_000),
            ("32Gb", 32_000_000_000),
            ("32Tb", 32_000_000_000_000),
            ("32Pb", 32_000_000_000_000_000),
            ("0.5 MB", 500_000),
        ] {
            assert_eq!(parse_human_size(s), Ok(want), "{s:?}");
        }
        for s in ["", "A", "-1", "1q", "10000p"] {
            assert!(parse_human_size(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn durations_like_go() {
        const S: i64 = 1_000_000_000;
        for (s, want) in [
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600_000_000),
            ("5.s", 5 * S),
            (".5s", S / 2),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4_000_000),
            ("1.0040s", S + 4_000_000),
            ("100.00100s", 100 * S + 1_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14 * S),
            ("15m", 15 * 60 * S),
            ("16h", 16 * 3600 * S),
            ("3h30m", (3 * 3600 + 30 * 60) * S),
            ("10.5s4m", 4 * 60 * S + 10 * S + S / 2),
            ("-2m3.4s", -(2 * 60 * S + 3 * S + 400_000_000)),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 20 * 60 * S),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-2562047.788015215h", -9_223_372_036_854_774_000),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("0.100000000000000000000h", 6 * 60 * S),
            (
                "0.830103483285477580700h",
                49 * 60 * S + 48 * S + 372_539_827,
            ),
            ("300ms", 300_000_000),
            ("1m30s", 90 * S),
            ("1.5h", 5400 * S),
        ] {
            assert_eq!(parse_duration(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn duration_errors() {
        for s in [
            "",
            "-",
            "+",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "3000000h",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
            "-9223372036854775809ns",
            "1.5.5s",
            "s",
            "5 s",
        ] {
            assert!(parse_duration(s).is_err(), "{s:?}: {:?}", parse_duration(s));
        }
        assert_eq!(
            parse_duration("5"),
            Err(UnitsError::MissingUnit("5".into()))
        );
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(UnitsError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn error_messages_read_as_dockers() {
        for (got, want) in [
            (parse_ram_bytes("32x"), "invalid suffix: 'x'"),
            (parse_ram_bytes("x"), "invalid size: 'x'"),
            (
                parse_duration("1d"),
                "time: unknown unit \"d\" in duration \"1d\"",
            ),
            (
                parse_duration("3000000h"),
                "time: invalid duration \"3000000h\"",
            ),
        ] {
            assert_eq!(got.unwrap_err().to_string(), want);
        }
    }
}
