//! A log read of a running container has what the process already wrote: the daemon has the
//! shim copy what its pipes hold into the log before it reads the file (docker-py's
//! `create; start; logs` with no wait, `api_build_test.py`'s in-context Dockerfile tests).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Sends a signal by name to a process (`kill -SIG PID`).
fn signal(pid: &str, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), pid])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// Resumes a stopped shim when the test ends, failing or not (its container is then removed
/// by the daemon's cleanup).
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

#[test]
fn logs_include_output_still_in_the_pipe() {
    let d = root_daemon!();
    let id = d
        .docker_out(
            "run -d --name drain busybox sh -c",
            &["while [ ! -e /go ]; do usleep 10000; done; echo written; touch /done; sleep 1000"],
        )
        .trim()
        .to_string();
    let dir = d.path("exec/containers").join(&id);
    let shim_pid = std::fs::read_to_string(dir.join("shim/shim.pid"))
        .unwrap()
        .trim()
        .to_string();
    let rootfs = dir.join("rootfs");
    // The shim stops reading: what the process writes now stays in its stdout pipe.
    signal(&shim_pid, "STOP");
    let resume = Resume(shim_pid.clone());
    std::fs::write(rootfs.join("go"), b"").unwrap();
    let done: &Path = &rootfs.join("done");
    wait("the process to write its line", || done.exists());
    // The log read starts while the shim is stopped; the shim resumes a moment later.
    let logs = std::thread::scope(|s| {
        let read = s.spawn(|| d.http("GET", "/containers/drain/logs?stdout=1", None));
        std::thread::sleep(Duration::from_millis(300));
        signal(&shim_pid, "CONT");
        read.join().unwrap().unwrap()
    });
    drop(resume);
    assert!(
        logs.contains("written"),
        "the line the process wrote before the request is missing: {logs:?}"
    );
    d.docker(&["rm", "-f", "drain"]).ok();
    finish(d);
}
