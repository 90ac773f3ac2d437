//! Docker's `go-units` formatting: human sizes and durations.

use crate::template::go_float_g;

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// `units.HumanSizeWithPrecision`: decimal units, `precision` significant digits (Go `%.*g`).
pub fn human_size_with_precision(size: f64, precision: usize) -> String {
    let mut s = size;
    let mut i = 0;
    while s >= 1000.0 && i < DECIMAL.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_float_g(s, precision), DECIMAL[i])
}

/// `units.HumanSize` (4 significant digits), as `system df` uses it.
pub fn human_size(size: f64) -> String {
    human_size_with_precision(size, 4)
}

/// The size column of `images` and `history` (3 significant digits).
pub fn image_size(size: i64) -> String {
    human_size_with_precision(size as f64, 3)
}

/// `units.HumanDuration`.
pub fn human_duration(secs: f64) -> String {
    let seconds = secs as i64;
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = (secs / 60.0) as i64;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (secs / 3600.0 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (secs / 3600.0) as i64 / 24 / 365)
}

/// `2 days ago`, from a Unix time.
pub fn since(created: i64, now: i64) -> String {
    format!("{} ago", human_duration((now - created) as f64))
}

/// Go's `time.Time.String()` of a UTC time with nanoseconds:
/// `2024-01-02 03:04:05.123456789 +0000 UTC` (the fraction without trailing zeros).
pub fn go_time_string(secs: i64, nanos: u32) -> String {
    let base = berth_image::timeutil::format_go_string_utc(secs);
    if nanos == 0 {
        return base;
    }
    let frac = format!("{nanos:09}");
    let frac = frac.trim_end_matches('0');
    match base.split_once(' ') {
        Some((date, rest)) => match rest.split_once(' ') {
            Some((time, zone)) => format!("{date} {time}.{frac} {zone}"),
            None => base,
        },
        None => base,
    }
}

/// Natural order (`sortorder.NaturalLess`): runs of digits compare as numbers and sort before
/// other characters.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            // Digits sort before other characters.
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if da {
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("")
                .trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
            // Equal values: fewer leading zeros first.
            let o = (i - si).cmp(&(j - sj));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let o = a[i].cmp(&b[j]);
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        crate::assert_cases(
            image_size,
            &[
                (4261550, "4.26MB"),
                (0, "0B"),
                (999, "999B"),
                (1000, "1kB"),
                (1234, "1.23kB"),
                (999_500, "1e+03kB"),
                (77_800_000, "77.8MB"),
                (1_500_000_000, "1.5GB"),
                (123_456_789_012, "123GB"),
            ],
        );
        crate::assert_cases(
            human_size,
            &[
                (4261550.0, "4.262MB"),
                (0.0, "0B"),
                (16_430_000.0, "16.43MB"),
                (1e27, "1000YB"),
            ],
        );
    }

    #[test]
    fn durations() {
        crate::assert_cases(
            human_duration,
            &[
                (0.2, "Less than a second"),
                (1.0, "1 second"),
                (45.0, "45 seconds"),
                (60.0, "About a minute"),
                (119.0, "About a minute"),
                (120.0, "2 minutes"),
                (3600.0, "About an hour"),
                (3600.0 * 5.0, "5 hours"),
                (86400.0 * 2.0, "2 days"),
                (86400.0 * 15.0, "2 weeks"),
                (86400.0 * 70.0, "2 months"),
                (86400.0 * 365.0 * 3.0, "3 years"),
            ],
        );
        assert_eq!(since(0, 86400 * 3), "3 days ago");
    }

    #[test]
    fn go_times_and_natural_order() {
        assert_eq!(
            go_time_string(0, 883_255_650),
            "1970-01-01 00:00:00.88325565 +0000 UTC"
        );
        assert_eq!(go_time_string(86400, 0), "1970-01-02 00:00:00 +0000 UTC");
        let mut v = vec!["v10", "v9", "a", "v1", "v01", "v-1", "1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["1", "a", "v1", "v01", "v9", "v10", "v-1"]);
    }
}
