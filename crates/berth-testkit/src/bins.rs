//! The workspace's binaries for tests of other crates: found next to the running test and
//! brought up to date with `cargo build` (a no-op when they are).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The target directory of the running test binary.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf()
}

/// Removes the variables cargo and nextest set for test processes from `cmd`'s environment:
/// a `cargo build` run under them would see changed build-script fingerprints (and rebuild
/// everything twice).
pub fn without_cargo_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR")
            || k.starts_with("NEXTEST")
            || k == "OUT_DIR"
            || k == "TARGET"
            || k == "HOST"
            || k == "RUST_TEST_THREADS"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// `cargo` in the workspace root, under the environment a developer's `cargo build` has.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    without_cargo_env(&mut cmd).current_dir(workspace_root());
    cmd
}

/// The packages whose binaries the tests run, built as one set: the set `scripts/test`
/// builds before the tests (another set can unify dependencies' features differently, and a
/// cargo run inside a test would then rebuild half the dependency graph).
pub const BINARIES: &[&str] = &["berth-shim", "berth-runtime", "berth-cli", "berthd"];

/// Builds these packages' binaries (debug) into the running test's target directory: once
/// per process and set of packages, and once per nextest run (`NEXTEST_RUN_ID`, recorded in a
/// stamp file under a lock, so the test processes of one run do not each call cargo).
pub fn build(packages: &[&str]) {
    static DONE: Mutex<Option<HashSet<Vec<String>>>> = Mutex::new(None);
    let key: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.get_or_insert_with(HashSet::new).contains(&key) {
        return;
    }
    let stamp = profile_dir().join(format!(".berth-testkit-built-{}", key.join("+")));
    let run_id = std::env::var("NEXTEST_RUN_ID").ok();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stamp.with_extension("lock"))
        .expect("open the build lock");
    // Released when `lock` closes.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("lock the build");
    let fresh =
        run_id.is_some() && std::fs::read_to_string(&stamp).ok().as_deref() == run_id.as_deref();
    if !fresh {
        let mut cmd = cargo();
        cmd.arg("build");
        for p in packages {
            cmd.args(["-p", p]);
        }
        let st = cmd
            .arg("--target-dir")
            .arg(target_dir())
            .status()
            .expect("run cargo build");
        assert!(st.success(), "cargo build {packages:?} failed");
        if let Some(id) = &run_id {
            let _ = std::fs::write(&stamp, id);
        }
    }
    drop(lock);
    done.get_or_insert_with(HashSet::new).insert(key);
}

/// The binary `bin` of `package`, up to date: `$<env_var>` when set (taken as is), else
/// built by [`build`] next to the running test.
pub fn workspace_bin(env_var: &str, package: &str, bin: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    if BINARIES.contains(&package) {
        build(BINARIES);
    } else {
        build(&[package]);
    }
    let p = profile_dir().join(bin);
    assert!(p.exists(), "no {bin} at {}", p.display());
    p
}

/// Runs `crates/<package>/build-static.sh` (the static build the package ships, see
/// `scripts/build-static`) into the target directory `target` and returns the binary's
/// absolute path (the script prints it).
pub fn build_static(package: &str, target: &Path) -> PathBuf {
    use crate::process::CommandRun;
    let mut bash = Command::new("bash");
    let o = without_cargo_env(&mut bash)
        .arg(workspace_root().join(format!("crates/{package}/build-static.sh")))
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target)
        .output_ok();
    workspace_root().join(String::from_utf8_lossy(&o.stdout).trim())
}
