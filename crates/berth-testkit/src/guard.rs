//! Skipping tests whose requirements (root, programs) this machine does not meet, with one
//! clear line on standard error: `skipped: <test>: <why>`.

use std::path::{Path, PathBuf};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The name of the running test: the test harness names each test's thread after the test.
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("test")
        .to_string()
}

/// The line printed for a skipped test.
pub fn skip_line(test: &str, why: &str) -> String {
    format!("skipped: {test}: {why}")
}

/// Prints the skip line for the running test.
pub fn skipped(why: &str) {
    eprintln!("{}", skip_line(&test_name(), why));
}

/// True (after printing `skipped: <test>: needs root`) when not root: the caller returns.
pub fn skip_unless_root() -> bool {
    skip_unless(is_root(), "needs root")
}

/// True (after printing the skip line with `why`) when `ok` is false: the caller returns.
pub fn skip_unless(ok: bool, why: &str) -> bool {
    if !ok {
        skipped(why);
    }
    !ok
}

/// Where a program is: an absolute or relative path as given, else the first match on `$PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Debian package that provides a program the tests use (for the skip line).
fn package_of(program: &str) -> Option<&'static str> {
    let base = program.rsplit('/').next().unwrap_or(program);
    Some(match base {
        "busybox" => "busybox-static",
        "docker-registry" => "docker-registry",
        "skopeo" => "skopeo",
        "openssl" => "openssl",
        "chromium" => "chromium",
        "git" => "git",
        "docker-compose" => "docker-compose",
        "docker" => "docker-cli",
        "dockerd" => "docker.io",
        "systemd-socket-activate" => "systemd",
        "python3" => "python3",
        "nft" => "nftables",
        "ip" => "iproute2",
        "dpkg-shlibdeps" => "dpkg-dev",
        _ => return None,
    })
}

/// The programs of `programs` that cannot be found.
pub fn missing_programs<'a>(programs: &[&'a str]) -> Vec<&'a str> {
    programs
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect()
}

/// The reason to skip when these programs are missing (`None` when all are present).
pub fn missing_reason(programs: &[&str]) -> Option<String> {
    let missing = missing_programs(programs);
    if missing.is_empty() {
        return None;
    }
    let pkgs: Vec<&str> = missing.iter().filter_map(|p| package_of(p)).collect();
    let mut why = format!("needs {}", missing.join(", "));
    if !pkgs.is_empty() {
        why.push_str(&format!(" (apt-get install {})", pkgs.join(" ")));
    }
    Some(why)
}

/// True (after printing why) when one of `programs` is missing: the caller returns.
pub fn skip_unless_programs(programs: &[&str]) -> bool {
    match missing_reason(programs) {
        Some(why) => {
            skipped(&why);
            true
        }
        None => false,
    }
}

/// Returns from the calling test (printing `skipped: <test>: needs root`) unless running as
/// root; with arguments, also unless each of these programs is present.
#[macro_export]
macro_rules! require_root {
    () => {
        if $crate::guard::skip_unless_root() {
            return;
        }
    };
    ($($program:expr),+ $(,)?) => {
        if $crate::guard::skip_unless_root()
            || $crate::guard::skip_unless_programs(&[$($program),+])
        {
            return;
        }
    };
}

/// A [`Daemon`](crate::daemon::Daemon) with the default flags, once [`require_root!`] (with
/// the same arguments) let the calling test go on: `let d = root_daemon!();`.
#[macro_export]
macro_rules! root_daemon {
    ($($program:expr),* $(,)?) => {{
        $crate::require_root!($($program),*);
        $crate::daemon::Daemon::new()
    }};
}

/// Returns from the calling test (printing which ones are missing) unless every program is
/// present (a name on `$PATH` or a path).
#[macro_export]
macro_rules! require_programs {
    ($($program:expr),+ $(,)?) => {
        if $crate::guard::skip_unless_programs(&[$($program),+]) {
            return;
        }
    };
}

/// Returns from the calling test, printing `skipped: <test>: <why>`, unless `cond` holds.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if $crate::guard::skip_unless($cond, &format!($($why)+)) {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skip_line_names_the_test_and_the_reason() {
        assert_eq!(
            skip_line("net::ports", "needs root"),
            "skipped: net::ports: needs root"
        );
        assert_eq!(
            test_name(),
            "guard::tests::the_skip_line_names_the_test_and_the_reason"
        );
    }

    #[test]
    fn skip_unless_follows_the_condition() {
        assert!(!skip_unless(true, "never printed"));
        assert!(skip_unless(false, "printed"));
        assert_eq!(skip_unless_root(), !is_root());
    }

    #[test]
    fn programs_are_found_by_name_or_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("no-such-program-berth").is_none());
        assert_eq!(
            missing_programs(&["sh", "no-such-program-berth"]),
            vec!["no-such-program-berth"]
        );
        assert_eq!(missing_reason(&["sh"]), None);
        assert_eq!(
            missing_reason(&["/nonexistent/docker-registry"]).unwrap(),
            "needs /nonexistent/docker-registry (apt-get install docker-registry)"
        );
    }

    fn guarded(root: bool, ran: &mut bool) {
        require!(root, "needs root");
        *ran = true;
    }

    fn guarded_programs(ran: &mut bool) {
        require_programs!("sh", "no-such-program-berth");
        *ran = true;
    }

    #[test]
    fn the_macros_return_early() {
        let mut ran = false;
        guarded(false, &mut ran);
        assert!(!ran);
        guarded(true, &mut ran);
        assert!(ran);
        let mut ran = false;
        guarded_programs(&mut ran);
        assert!(!ran);
    }
}
