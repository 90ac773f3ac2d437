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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(image_size(4261550), "4.26MB");
        assert_eq!(image_size(0), "0B");
        assert_eq!(image_size(999), "999B");
        assert_eq!(image_size(1000), "1kB");
        assert_eq!(image_size(1234), "1.23kB");
        assert_eq!(image_size(999_500), "1e+03kB");
        assert_eq!(image_size(77_800_000), "77.8MB");
        assert_eq!(image_size(1_500_000_000), "1.5GB");
        assert_eq!(image_size(123_456_789_012), "123GB");
        assert_eq!(human_size(4261550.0), "4.262MB");
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(16_430_000.0), "16.43MB");
        assert_eq!(human_size(1e27), "1000YB");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.2), "Less than a second");
        assert_eq!(human_duration(1.0), "1 second");
        assert_eq!(human_duration(45.0), "45 seconds");
        assert_eq!(human_duration(60.0), "About a minute");
        assert_eq!(human_duration(119.0), "About a minute");
        assert_eq!(human_duration(120.0), "2 minutes");
        assert_eq!(human_duration(3600.0), "About an hour");
        assert_eq!(human_duration(3600.0 * 5.0), "5 hours");
        assert_eq!(human_duration(86400.0 * 2.0), "2 days");
        assert_eq!(human_duration(86400.0 * 15.0), "2 weeks");
        assert_eq!(human_duration(86400.0 * 70.0), "2 months");
        assert_eq!(human_duration(86400.0 * 365.0 * 3.0), "3 years");
        assert_eq!(since(0, 86400 * 3), "3 days ago");
    }
}
