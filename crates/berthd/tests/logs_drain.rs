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

/// A line without its newline is not in the log until it ends (or the output does), as with
/// dockerd's log copier: `attach?logs=1` replays whole lines only, and what the session then
/// sees live is not seen twice (`TestPostContainersAttach`).
#[test]
fn a_line_still_going_waits_for_its_end() {
    let d = root_daemon!();
    d.docker_out(
        "run -d --name partial busybox sh -c",
        &["echo hello; printf partial; touch /wrote; sleep 1000"],
    );
    let id = d.inspect("{{.Id}}", "partial").trim().to_string();
    let rootfs = d.path("exec/containers").join(&id).join("rootfs");
    let wrote: &Path = &rootfs.join("wrote");
    wait("the process to write", || wrote.exists());
    assert_eq!(d.docker_out("logs partial", &[]), "hello\n");
    d.docker(&["stop", "-t", "0", "partial"]).ok();
    // The output's end writes what was held back.
    assert_eq!(d.docker_out("logs partial", &[]), "hello\npartial");
    d.docker(&["rm", "-f", "partial"]).ok();
    finish(d);
}
