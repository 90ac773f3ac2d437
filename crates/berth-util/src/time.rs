//! RFC 3339 timestamps without a date-time dependency, shared by every Berth crate (the
//! static shim included): parsing image config `created` fields, formatting times as Go's
//! `time.RFC3339Nano` does (UTC, trailing zeros of the fraction dropped), and as runc and
//! Docker's logs do (always nine fraction digits).

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an RFC 3339 timestamp (`2024-01-02T03:04:05.123456789Z`, `…+02:00`, a space
/// instead of `T` is accepted) into seconds and nanoseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let year = num(0..4)?;
    let month = num(5..7)? as u32;
    let day = num(8..10)? as u32;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let hour = num(11..13)?;
    let min = num(14..16)?;
    let sec = num(17..19)?;
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 9)];
        nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32);
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86400 + hour * 3600 + min * 60 + sec - offset, nanos))
}

/// `YYYY-MM-DD`, `sep`, `hh:mm:ss` of seconds since the epoch, in UTC.
fn date_time(secs: i64, sep: char) -> String {
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    format!(
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Formats seconds + nanoseconds since the epoch like Go's `time.RFC3339Nano` in UTC.
pub fn format_rfc3339_nano(secs: i64, nanos: u32) -> String {
    let mut s = date_time(secs, 'T');
    if nanos > 0 {
        let f = format!("{nanos:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Formats with all nine fraction digits, UTC (`2024-01-02T03:04:05.000000000Z`), as runc's
/// state and Docker's json-file log lines do.
pub fn format_rfc3339_nano9(secs: i64, nanos: u32) -> String {
    format!("{}.{nanos:09}Z", date_time(secs, 'T'))
}

/// The current time with all nine fraction digits (see [`format_rfc3339_nano9`]).
pub fn now_rfc3339_nano9() -> String {
    let (s, n) = now();
    format_rfc3339_nano9(s, n)
}

/// Formats like Go's `time.Time.String()` for a UTC time: `2024-01-02 03:04:05 +0000 UTC`.
pub fn format_go_string_utc(secs: i64) -> String {
    format!("{} +0000 UTC", date_time(secs, ' '))
}

/// Formats like Go's `time.RFC3339` (seconds precision) in UTC.
pub fn format_rfc3339(secs: i64) -> String {
    format_rfc3339_nano(secs, 0)
}

/// The current time as (seconds, nanoseconds) since the epoch.
pub fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

/// The current time in RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339_nano() -> String {
    let (s, n) = now();
    format_rfc3339_nano(s, n)
}

/// A duration as Go's `time.Duration.String` writes it: `0s`, `50ms`, `1.5µs`, `30s`,
/// `1m30s`, `1h0m0s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    // `whole` units and `frac` of them in `digits` decimals, trailing zeros dropped.
    let fixed = |whole: u128, frac: u128, digits: usize| {
        let f = format!("{frac:0digits$}");
        let f = f.trim_end_matches('0');
        if f.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{f}")
        }
    };
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", fixed(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", fixed(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let s = format!("{}s", fixed(secs % 60, ns % 1_000_000_000, 9));
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(go_duration(ms(0)), "0s");
        assert_eq!(go_duration(ms(50)), "50ms");
        assert_eq!(go_duration(std::time::Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(std::time::Duration::from_nanos(1500)), "1.5µs");
        assert_eq!(go_duration(std::time::Duration::from_nanos(7)), "7ns");
        assert_eq!(go_duration(ms(30_000)), "30s");
        assert_eq!(go_duration(ms(1_500)), "1.5s");
        assert_eq!(go_duration(ms(90_000)), "1m30s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }

    #[test]
    fn roundtrip_and_known_values() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-09-26T21:31:42.123Z"),
            Some((1727386302, 123_000_000))
        );
        assert_eq!(
            parse_rfc3339("2024-09-26T23:31:42+02:00"),
            Some((1727386302, 0))
        );
        assert_eq!(format_rfc3339_nano(1727386302, 0), "2024-09-26T21:31:42Z");
        assert_eq!(
            format_rfc3339_nano(1727386302, 158216052),
            "2024-09-26T21:31:42.158216052Z"
        );
        assert_eq!(
            format_rfc3339_nano(1727386302, 100_000_000),
            "2024-09-26T21:31:42.1Z"
        );
        assert_eq!(
            format_rfc3339_nano9(1727386302, 5),
            "2024-09-26T21:31:42.000000005Z"
        );
        assert_eq!(
            format_rfc3339_nano9(-1, 0),
            "1969-12-31T23:59:59.000000000Z"
        );
        // The shim's and the runtime's forms (moved from their tests).
        assert_eq!(format_rfc3339_nano9(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339_nano9(1_709_251_199, 123_456_789),
            "2024-02-29T23:59:59.123456789Z"
        );
        assert_eq!(
            format_rfc3339_nano9(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            format_go_string_utc(1727386302),
            "2024-09-26 21:31:42 +0000 UTC"
        );
        for s in [0i64, 951782400, 1709164800, 4102444800, -86400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(s)), Some((s, 0)), "{s}");
        }
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01",
            "2024-01-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
