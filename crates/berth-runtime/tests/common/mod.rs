//! Test harness: busybox bundles in temporary directories, a runtime with its own `--root`, and
//! guards that remove every container, cgroup and state directory a test made, even on failure
//! (berth-testkit's `OciEnv`, whose leak guard fails a test that leaves anything behind).
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use berth_testkit::busybox::BUSYBOX;
pub use berth_testkit::{require_root, unique_name as unique, Bundle, OciEnv};

pub const BIN: &str = env!("CARGO_BIN_EXE_berth-runtime");

/// An [`OciEnv`] for this crate's runtime binary.
pub struct TestEnv(OciEnv);

impl std::ops::Deref for TestEnv {
    type Target = OciEnv;
    fn deref(&self) -> &OciEnv {
        &self.0
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv(OciEnv::new(Path::new(BIN), "berth-rt-test", "state"))
    }
}

/// `run` a bundle in the foreground; returns (exit code, stdout, stderr).
pub fn run_fg(env: &TestEnv, b: &Bundle, id: &str) -> (i32, String, String) {
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
