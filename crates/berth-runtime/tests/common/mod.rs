//! Test harness: busybox bundles in temporary directories, a runtime with its own `--root`, and
//! guards that remove every container, cgroup and state directory a test made, even on failure
//! (berth-testkit's `OciEnv`, whose leak guard fails a test that leaves anything behind).
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use berth_testkit::busybox::BUSYBOX;
pub use berth_testkit::{require_root, unique_name as unique, Bundle, CommandRun, OciEnv};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

/// An [`OciEnv`] for this crate's runtime binary.
pub fn test_env() -> OciEnv {
    OciEnv::new(Path::new(BIN), "berth-rt-test", "state")
}

/// A new environment and the container name `unique(prefix)`.
pub fn with_id(prefix: &str) -> (OciEnv, String) {
    (test_env(), unique(prefix))
}

/// An environment and a bundle running `args` for the container `unique(prefix)`.
pub fn setup(prefix: &str, args: &[&str]) -> (OciEnv, String, Bundle) {
    let (env, id) = with_id(prefix);
    let b = env.bundle(&id, args);
    (env, id, b)
}

/// `sh -c <script>`.
pub fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

/// The same capabilities in the bounding, effective and permitted sets.
pub fn caps_json<T: serde::Serialize>(caps: &T) -> serde_json::Value {
    serde_json::json!({"bounding": caps, "effective": caps, "permitted": caps})
}

/// The JSON array `v` (a list in a config), to change in place.
pub fn array(v: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    v.as_array_mut().expect("a JSON array")
}

/// `run` a bundle in the foreground; returns (exit code, stdout, stderr).
pub fn run_fg(env: &OciEnv, b: &Bundle, id: &str) -> (i32, String, String) {
    b.write();
    let out = env.run(&["run", "--bundle", b.p(), id]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// True (after printing the skip line) when not root or busybox is missing: the caller
/// returns. (`require_root!(BUSYBOX)` says the same in one line.)
pub fn skip() -> bool {
    berth_testkit::skip_unless_root() || berth_testkit::skip_unless_programs(&[BUSYBOX])
}
