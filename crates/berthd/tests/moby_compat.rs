//! Behaviours of dockerd 28 that moby's own API integration tests (`integration/container`)
//! check: request validation at create (messages and status codes) and default sysctls.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// A raw `POST` with a content type of the caller's; the whole response as text.
fn post_as(d: &Daemon, path: &str, content_type: &str, body: &str) -> String {
    let mut s = UnixStream::connect(d.sock()).unwrap();
    let ct = if content_type.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {content_type}\r\n")
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The `message` of an API error response, its status checked.
#[track_caller]
fn api_error(resp: &str, status: u16) -> String {
    assert!(
        resp.starts_with(&format!("HTTP/1.1 {status} ")),
        "wanted {status}: {resp}"
    );
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("{e}: not a JSON error body: {body}"));
    v["message"].as_str().unwrap_or_default().to_string()
}

/// The `Id` of a created container.
#[track_caller]
fn created(resp: &str) -> String {
    assert!(resp.starts_with("HTTP/1.1 201 "), "{resp}");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    v["Id"].as_str().unwrap().to_string()
}

#[test]
fn create_settings_are_checked_with_dockerds_messages() {
    let d = root_daemon!();
    let cases = [
        (
            r#"{"Image":"busybox","Env":["=foo"]}"#,
            "invalid environment variable: =foo",
        ),
        (
            r#"{"Image":"busybox","Env":[""]}"#,
            "invalid environment variable: ",
        ),
        (
            r#"{"Image":"busybox","WorkingDir":"tmp"}"#,
            "the working directory 'tmp' is invalid, it needs to be an absolute path",
        ),
        (
            r#"{"Image":"busybox","Healthcheck":{"Interval":-1}}"#,
            "Interval in Healthcheck cannot be less than 1ms",
        ),
        (
            r#"{"Image":"busybox","Healthcheck":{"Timeout":100000}}"#,
            "Timeout in Healthcheck cannot be less than 1ms",
        ),
        (
            r#"{"Image":"busybox","Healthcheck":{"Retries":-1}}"#,
            "Retries in Healthcheck cannot be negative",
        ),
        (
            r#"{"Image":"busybox","Healthcheck":{"StartInterval":100000}}"#,
            "StartInterval in Healthcheck cannot be less than 1ms",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"IpcMode":"invalid"}}"#,
            "invalid IPC mode: invalid",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"PidMode":"container"}}"#,
            "invalid PID mode: container",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"UTSMode":"invalid"}}"#,
            "invalid UTS mode: invalid",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"Annotations":{"":"a"}}}"#,
            "invalid Annotations: the empty string is not permitted as an annotation key",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"VolumesFrom":["nosuchcontainer"]}}"#,
            "No such container: nosuchcontainer",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"PidMode":"container:nosuchcontainer"}}"#,
            "No such container: nosuchcontainer",
        ),
    ];
    for (body, message) in cases {
        let m = api_error(&d.post("/containers/create", body), 400);
        assert_eq!(m, message, "{body}");
    }
    assert_eq!(d.docker(&["ps", "-aq"]).ok().stdout.trim(), "");
    // The working directory is kept cleaned.
    let id = created(&d.post(
        "/containers/create",
        r#"{"Image":"busybox","WorkingDir":"/tmp/","Cmd":["true"]}"#,
    ));
    assert_eq!(d.inspect("{{.Config.WorkingDir}}", &id).trim(), "/tmp");
    // A PID namespace of a stopped container: created, but the start fails (a 500).
    d.docker(&["create", "--name", "pidsrc", "busybox", "top"])
        .ok();
    let src = d.inspect("{{.Id}}", "pidsrc").trim().to_string();
    let id = created(&d.post(
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["top"],"HostConfig":{"PidMode":"container:pidsrc"}}"#,
    ));
    assert_eq!(
        d.inspect("{{.HostConfig.PidMode}}", &id).trim(),
        format!("container:{src}")
    );
    let m = api_error(&d.post(&format!("/containers/{id}/start"), ""), 500);
    assert_eq!(
        m,
        format!("failed to join PID namespace: container {src} is not running")
    );
    finish(d);
}

#[test]
fn containers_get_dockerds_default_sysctls_and_domain_name() {
    let d = root_daemon!();
    let cat = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&[
            "busybox",
            "cat",
            "/proc/sys/net/ipv4/ping_group_range",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/kernel/domainname",
        ]);
        d.docker(&a).ok().stdout
    };
    assert_eq!(
        cat(&["--user", "1000:1000", "--domainname", "example.org"]),
        "0\t2147483647\n0\nexample.org\n"
    );
    // The request's own sysctls win; no network namespace of its own (none is one).
    assert_eq!(
        cat(&[
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=1024",
            "--network",
            "none"
        ]),
        "0\t2147483647\n1024\n(none)\n"
    );
    finish(d);
}
