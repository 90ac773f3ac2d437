//! Small helpers shared by the runtime's modules. Paths inside a root are resolved with
//! `berth_util::root` (the one confined-path resolver), files replaced with `berth_util::fs`.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

pub fn cstring(p: impl AsRef<std::ffi::OsStr>) -> std::io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
    })
}

/// The start time (clock ticks since boot) of `pid`, and whether it is a zombie.
/// `None` when the process does not exist.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

/// The current time as RFC 3339 with nanoseconds, UTC (as runc and Docker print it).
pub fn now_rfc3339() -> String {
    berth_util::time::now_rfc3339_nano9()
}

/// `secs.nanos` since the epoch as RFC 3339 with all nine fraction digits, UTC.
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    berth_util::time::format_rfc3339_nano9(secs, nanos)
}

/// `/proc/self/fd/N` for a descriptor: the magic-link path used as a mount target.
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Whether `pid` runs and is the process that started at `start` (not a later one with its pid).
pub fn pid_alive(pid: i32, start: u64) -> bool {
    matches!(proc_start_time(pid), Some((s, false)) if s == start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_700_000_000, 5), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn start_time_of_self() {
        let (t, zombie) = proc_start_time(std::process::id() as i32).expect("self");
        assert!(t > 0);
        assert!(!zombie);
        assert!(proc_start_time(i32::MAX).is_none());
    }
}
