//! Crash failpoints: named places in multi-step operations where the crash tests kill the
//! daemon, to check that the next start finishes or undoes what was interrupted.
//!
//! Runtime-gated and inert in production: `BERTHD_FAILPOINTS` (a comma-separated list of
//! names, read once) arms them; when it is unset (always, outside the tests) [`hit`] is one
//! load of an initialised `OnceLock`. An armed failpoint sends the daemon `SIGKILL`, as a
//! `kill -9` at that moment would: no destructor, no flush, no cleanup runs. The names are
//! `<operation>.<step>` (listed in [`NAMES`], which the tests use).

use std::sync::OnceLock;

/// The environment variable that arms failpoints.
pub const ENV: &str = "BERTHD_FAILPOINTS";

/// Every failpoint (each is a step of an operation; see the crash tests).
pub const NAMES: &[&str] = &[
    "create.dir",
    "create.snapshot",
    "create.participants",
    "start.mounted",
    "start.shim",
    "start.started",
    "stop.signalled",
    "exit.recorded",
    "remove.participants",
    "remove.renamed",
    "pull.layer",
    "push.blob",
    "push.manifest",
    "build.run",
    "build.commit",
    "commit.paused",
    "commit.layer",
    "commit.unpacked",
    "volume.create",
    "volume.remove",
    "network.connect",
];

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let v: Vec<String> = std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for n in &v {
            if !NAMES.contains(&n.as_str()) {
                tracing::warn!("{ENV}: unknown failpoint {n:?}");
            }
        }
        v
    })
}

/// Whether the failpoint `name` is armed.
pub fn is_armed(name: &str) -> bool {
    debug_assert!(NAMES.contains(&name), "unlisted failpoint {name}");
    armed().iter().any(|n| n == name)
}

/// Kills the daemon (`SIGKILL`) if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if is_armed(name) {
        tracing::error!("failpoint {name}: killing the daemon");
        // SAFETY: kill(2) of this process; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        // SIGKILL is delivered before kill(2) returns to a single-threaded process, and to
        // a multi-threaded one before any of its threads runs user code again.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_unique_and_dotted() {
        let mut v = super::NAMES.to_vec();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), super::NAMES.len());
        assert!(super::NAMES.iter().all(|n| n.split('.').count() == 2));
    }
}
