//! Behaviours of dockerd 28 that moby's own API integration tests (`integration/container`)
//! check: request validation at create (messages and status codes), JSON bodies, resize
//! parameters, exec resize and update conflicts, default sysctls, the IPC mode older
//! clients get, the archive API's entry names and errors, console sizes, health probes past
//! their timeout and writable cgroups.

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
        // No `Config` field at all (Go's embedded `*Config` stays nil): `TestAPIErrorJSON`.
        (
            "{}",
            "config cannot be empty in order to create a container",
        ),
        (
            "null",
            "config cannot be empty in order to create a container",
        ),
        ("", "invalid JSON: got EOF while reading request body"),
        (
            r#"{"HostConfig":{},"NetworkingConfig":{}}"#,
            "config cannot be empty in order to create a container",
        ),
        // A config without image nor command (the Go client's empty `Config`):
        // `TestContainerAPICreateEmptyConfig`.
        (
            r#"{"Hostname":"","Image":"","Entrypoint":[""],"HostConfig":{}}"#,
            "no command specified",
        ),
        (r#"{"Cmd":["true"]}"#, "no image specified"),
        // `TestContainerAPIBadPort`: dockerd's `validatePortBindings`.
        (
            r#"{"Image":"busybox","HostConfig":{"PortBindings":{"8080/tcp":[{"HostPort":"aa80"}]}}}"#,
            r#"invalid port specification: "aa80""#,
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"PortBindings":{"8080/tcp":[{"HostPort":"90-80"}]}}}"#,
            r#"invalid port specification: "90-80""#,
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
fn json_bodies_are_checked_as_dockerd_does() {
    let d = root_daemon!();
    d.docker(&["run", "-d", "--name", "c1", "busybox", "top"])
        .ok();
    for ep in [
        "/containers/create",
        "/containers/c1/update",
        "/containers/nosuch/exec",
        "/commit?container=nosuch",
        "/exec/nosuch/start",
        "/networks/create",
        "/volumes/create",
    ] {
        let m = api_error(&post_as(&d, ep, "text/plain", "{}"), 400);
        assert_eq!(
            m, "unsupported Content-Type header (text/plain): must be 'application/json'",
            "{ep}"
        );
        let m = api_error(&post_as(&d, ep, "", "{}"), 400);
        assert_eq!(
            m, "malformed Content-Type header (): mime: no media type",
            "{ep}"
        );
        let m = api_error(&post_as(&d, ep, "application/json", "{invalid json"), 400);
        assert_eq!(
            m, "invalid JSON: invalid character 'i' looking for beginning of object key string",
            "{ep}"
        );
        let m = api_error(
            &post_as(&d, ep, "application/json", "{} trailing content"),
            400,
        );
        assert_eq!(m, "invalid JSON: unexpected content after JSON", "{ep}");
    }
    // A charset parameter is fine, and an empty body needs no content type.
    let r = post_as(
        &d,
        "/containers/c1/update",
        "application/json; charset=utf-8",
        r#"{"CpuShares":512}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let r = post_as(&d, "/containers/c1/pause", "", "");
    assert!(r.starts_with("HTTP/1.1 204 "), "{r}");
    d.docker(&["unpause", "c1"]).ok();
    finish(d);
}

#[test]
fn resize_parameters_and_conflicts_read_as_dockerds() {
    let d = root_daemon!();
    d.docker(&["run", "-d", "-t", "--name", "c1", "busybox", "top"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(
        d.post("/containers/c1/exec", r#"{"Cmd":["top"],"Tty":true}"#)
            .split_once("\r\n\r\n")
            .unwrap()
            .1,
    )
    .unwrap();
    let exec = v["Id"].as_str().unwrap().to_string();
    let r = d.post(
        &format!("/exec/{exec}/start"),
        r#"{"Detach":true,"Tty":true}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    for base in ["/containers/c1/resize", &format!("/exec/{exec}/resize")] {
        for (query, message) in [
            ("w=100", r#"invalid resize height "": invalid syntax"#),
            ("h=100", r#"invalid resize width "": invalid syntax"#),
            ("h=x&w=100", r#"invalid resize height "x": invalid syntax"#),
            (
                "h=100&w=%2B5",
                r#"invalid resize width "+5": invalid syntax"#,
            ),
            (
                "h=-100&w=100",
                r#"invalid resize height "-100": value out of range"#,
            ),
            (
                "h=100&w=4294967296",
                r#"invalid resize width "4294967296": value out of range"#,
            ),
        ] {
            let m = api_error(&d.post(&format!("{base}?{query}"), ""), 400);
            assert_eq!(m, message, "{base}?{query}");
        }
        let r = d.post(&format!("{base}?h=40&w=80"), "");
        assert!(r.starts_with("HTTP/1.1 200 "), "{base}: {r}");
    }
    // Resizing a stopped container: a conflict; its execs went with its run.
    d.docker(&["kill", "c1"]).ok();
    wait("c1 to stop", || {
        d.inspect("{{.State.Running}}", "c1").trim() == "false"
    });
    let m = api_error(&d.post("/containers/c1/resize?h=40&w=40", ""), 409);
    assert!(m.contains("is not running"), "{m}");
    let m = api_error(&d.post(&format!("/exec/{exec}/resize?h=40&w=40"), ""), 404);
    assert_eq!(m, format!("No such exec instance: {exec}"));
    // A restart policy on an auto-removed container: a conflict too.
    d.docker(&["run", "-d", "--rm", "--name", "c2", "busybox", "top"])
        .ok();
    let m = api_error(
        &d.post(
            "/containers/c2/update",
            r#"{"RestartPolicy":{"Name":"always"}}"#,
        ),
        409,
    );
    assert_eq!(
        m,
        "Restart policy cannot be updated because AutoRemove is enabled for the container"
    );
    finish(d);
}

/// `POST /containers/{id}/exec` as JSON: the new exec's ID.
#[track_caller]
fn exec_create(d: &Daemon, container: &str) -> String {
    let r = d.post(
        &format!("/containers/{container}/exec"),
        r#"{"Cmd":["true"]}"#,
    );
    assert!(r.starts_with("HTTP/1.1 201 "), "{r}");
    let v: serde_json::Value = serde_json::from_str(body(&r)).unwrap();
    v["Id"].as_str().unwrap().to_string()
}

/// An exec lives as long as its container's run: after a stop it is unknown (a 404), even
/// once the container runs again; a paused container refuses execs, naming the container as
/// the request did (`TestExecAPIStart`, `TestExecAPICreateContainerPaused`).
#[test]
fn execs_end_with_their_containers_run_and_paused_ones_refuse() {
    let d = root_daemon!();
    d.docker(&["run", "-d", "--name", "ex", "busybox", "top"])
        .ok();
    let cid = d.inspect("{{.Id}}", "ex").trim().to_string();
    let start = |id: &str| d.post(&format!("/exec/{id}/start"), r#"{"Detach":true}"#);
    let first = exec_create(&d, "ex");
    assert!(start(&first).starts_with("HTTP/1.1 200 "));
    let stale = exec_create(&d, "ex");
    d.docker(&["stop", "-t", "0", "ex"]).ok();
    for _ in 0..2 {
        for id in [&first, &stale] {
            let gone = format!("No such exec instance: {id}");
            assert_eq!(api_error(&start(id), 404), gone);
            let r = d.http("GET", &format!("/exec/{id}/json"), None).unwrap();
            assert_eq!(api_error(&r, 404), gone);
        }
        d.docker(&["start", "ex"]).ok();
    }
    let before_pause = exec_create(&d, "ex");
    d.docker(&["pause", "ex"]).ok();
    let m = api_error(&d.post("/containers/ex/exec", r#"{"Cmd":["true"]}"#), 409);
    assert_eq!(
        m,
        "Container ex is paused, unpause the container before exec"
    );
    assert_eq!(
        api_error(&start(&before_pause), 409),
        format!("Container {cid} is paused, unpause the container before exec")
    );
    d.docker(&["unpause", "ex"]).ok();
    assert!(start(&before_pause).starts_with("HTTP/1.1 200 "));
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

#[test]
fn clients_older_than_1_40_get_shareable_ipc() {
    let d = root_daemon!();
    for (version, mode) in [("v1.39", "shareable"), ("v1.40", "private")] {
        let id = created(&d.post(
            &format!("/{version}/containers/create"),
            r#"{"Image":"busybox","Cmd":["true"]}"#,
        ));
        assert_eq!(
            d.inspect("{{.HostConfig.IpcMode}}", &id).trim(),
            mode,
            "{version}"
        );
    }
    finish(d);
}

#[test]
fn pids_limit_updates_as_dockerd() {
    let d = root_daemon!();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "pl",
        "--pids-limit",
        "32",
        "busybox",
        "top",
    ])
    .ok();
    let limit = || {
        d.inspect("{{.HostConfig.PidsLimit}}", "pl")
            .trim()
            .to_string()
    };
    let cgroup = || {
        // cgroup v2, or v1's pids hierarchy.
        let sh = "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max";
        d.docker(&["exec", "pl", "sh", "-c", sh]).ok().stdout
    };
    // Below API 1.40 an update leaves the limit alone.
    let r = d.post("/v1.39/containers/pl/update", r#"{"PidsLimit":16}"#);
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert_eq!((limit(), cgroup()), ("32".into(), "32\n".into()));
    // Any value below 1 removes it.
    for unlimited in ["-2", "-1", "0"] {
        d.post("/containers/pl/update", r#"{"PidsLimit":8}"#);
        assert_eq!(cgroup(), "8\n");
        let r = d.post(
            "/containers/pl/update",
            &format!(r#"{{"PidsLimit":{unlimited}}}"#),
        );
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        assert_eq!(
            (limit(), cgroup()),
            ("0".into(), "max\n".into()),
            "{unlimited}"
        );
    }
    finish(d);
}

#[test]
fn restarting_an_auto_removed_container_keeps_it() {
    let d = root_daemon!();
    d.docker(&["run", "-d", "--rm", "--name", "rmx", "busybox", "top"])
        .ok();
    let id = d.inspect("{{.Id}}", "rmx").trim().to_string();
    d.docker(&["restart", "-t", "0", "rmx"]).ok();
    assert_eq!(d.inspect("{{.State.Status}}", "rmx").trim(), "running");
    assert_eq!(d.inspect("{{.Id}}", "rmx").trim(), id);
    // A stop still removes it.
    d.docker(&["stop", "-t", "0", "rmx"]).ok();
    wait("rmx to be removed", || {
        d.docker(&["ps", "-aq"]).ok().stdout.trim().is_empty()
    });
    finish(d);
}

#[test]
fn a_health_check_past_its_timeout_reports_go_duration_and_output() {
    let d = root_daemon!();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "echo \"logs1 logs2 logs3\"; sleep 60",
        "--health-interval",
        "100ms",
        // Long enough for the exec to start on a loaded machine, not a whole second.
        "--health-timeout",
        "2500ms",
        "--health-retries",
        "1",
        "busybox",
        "top",
    ])
    .ok();
    let first = || d.inspect("{{range .State.Health.Log}}{{.Output}}|{{end}}", "hc");
    wait("a health check", || !first().trim().is_empty());
    let out = first();
    assert!(
        out.starts_with("Health check exceeded timeout (2.5s): logs1 logs2 logs3\n|"),
        "{out}"
    );
    finish(d);
}

#[test]
fn inspect_shows_the_default_masked_and_read_only_paths() {
    let d = root_daemon!();
    let paths = |name: &str| {
        d.inspect(
            "{{json .HostConfig.MaskedPaths}} {{json .HostConfig.ReadonlyPaths}}",
            name,
        )
        .trim()
        .to_string()
    };
    d.docker(&["create", "--name", "plain", "busybox", "true"])
        .ok();
    let (masked, ro) = paths("plain")
        .split_once(' ')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let masked: Vec<String> = serde_json::from_str(&masked).unwrap();
    let ro: Vec<String> = serde_json::from_str(&ro).unwrap();
    assert!(masked.contains(&"/proc/kcore".to_string()), "{masked:?}");
    assert!(ro.contains(&"/proc/sys".to_string()), "{ro:?}");
    d.docker(&[
        "create",
        "--privileged",
        "--name",
        "priv",
        "busybox",
        "true",
    ])
    .ok();
    assert_eq!(paths("priv"), "null null");
    let id = created(&d.post(
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"MaskedPaths":["/proc/keys"],"ReadonlyPaths":[]}}"#,
    ));
    assert_eq!(paths(&id), r#"["/proc/keys"] []"#);
    finish(d);
}

#[test]
fn a_stop_whose_client_went_away_still_kills_after_the_timeout() {
    let d = root_daemon!();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "trapper",
        "busybox",
        "sh",
        "-c",
        "trap 'echo received TERM' TERM; while true; do usleep 10000; done",
    ])
    .ok();
    let mut s = UnixStream::connect(d.sock()).unwrap();
    s.write_all(
        b"POST /containers/trapper/stop?t=2 HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    wait("the TERM to arrive", || {
        d.docker(&["logs", "trapper"])
            .ok()
            .stdout
            .contains("received TERM")
    });
    // The client gives up; the container keeps running until the timeout's kill.
    drop(s);
    assert_eq!(d.inspect("{{.State.Running}}", "trapper").trim(), "true");
    wait("the kill after the timeout", || {
        d.inspect("{{.State.Running}}", "trapper").trim() == "false"
    });
    assert_eq!(d.inspect("{{.State.ExitCode}}", "trapper").trim(), "137");
    finish(d);
}

#[test]
fn a_custom_seccomp_profile_holds_for_privileged_containers() {
    let d = root_daemon!();
    let profile = d.path("no-chown.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chown","fchown","fchownat","lchown"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    for flags in [vec![], vec!["--privileged"]] {
        let mut args = vec!["run", "--rm", "--security-opt", &opt];
        args.extend(flags.iter().copied());
        args.extend(["busybox", "chown", "42", "/bin/true"]);
        let r = d.docker(&args).fails_with("Operation not permitted");
        assert_eq!(r.code, 1, "{flags:?}");
    }
    // Privileged without a profile of its own: unconfined.
    d.docker(&[
        "run",
        "--rm",
        "--privileged",
        "busybox",
        "chown",
        "42",
        "/bin/true",
    ])
    .ok();
    finish(d);
}

/// A raw `GET` answered without chunking (HTTP/1.0): the status line and the body's bytes.
fn get_raw(d: &Daemon, path: &str) -> (String, Vec<u8>) {
    let mut s = UnixStream::connect(d.sock()).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: berth\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    (head, out[at + 4..].to_vec())
}

/// The entry names (and contents of regular files) of `GET /containers/{c}/archive?path=`.
fn archive_entries(d: &Daemon, c: &str, path: &str) -> Vec<(String, String)> {
    let (head, body) = get_raw(d, &format!("/containers/{c}/archive?path={path}"));
    assert!(
        head.starts_with("HTTP/1.0 200 ") || head.starts_with("HTTP/1.1 200 "),
        "{path}: {head}"
    );
    let mut a = tar::Archive::new(body.as_slice());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, String::from_utf8_lossy(&data).into_owned()));
    }
    out
}

#[test]
fn archive_entries_are_named_as_dockerd_rebases_them() {
    let d = root_daemon!();
    d.docker(&[
        "run",
        "--name",
        "cpsrc",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /bar/quux && printf hello >/foo && printf world >/bar/quux/baz && \
         ln -s notexist /bar/notarget && ln -s quux/baz /bar/filesymlink && \
         ln -s quux /bar/dirsymlink && ln -s / /bar/root",
    ])
    .ok();
    let has = |src: &str, want: &[(&str, &str)]| {
        let got = archive_entries(&d, "cpsrc", src);
        for (name, data) in want {
            assert!(
                got.iter().any(|(n, c)| n == name && c == data),
                "{src}: no {name:?} with {data:?} in {:?}",
                got.iter().map(|(n, _)| n).take(40).collect::<Vec<_>>()
            );
        }
        got
    };
    // The root: entries named from `/`.
    has(
        "/",
        &[
            ("/", ""),
            ("/foo", "hello"),
            ("/bar/quux/baz", "world"),
            ("/bar/dirsymlink", ""),
        ],
    );
    // A directory's contents (`.`, `/.`, `dir/.`): `./` and `./…`.
    for src in [".", "/.", "./", "/bar/root/."] {
        has(
            src,
            &[("./", ""), ("./foo", "hello"), ("./bar/quux/baz", "world")],
        );
    }
    has("bar/quux/.", &[("./", ""), ("./baz", "world")]);
    has("bar/quux/", &[("quux/", ""), ("quux/baz", "world")]);
    // A symlink to a directory: the link itself, or (trailing `/`) the directory under the
    // link's name, never the target's.
    let link = has("bar/dirsymlink", &[("dirsymlink", "")]);
    assert_eq!(link.len(), 1, "{link:?}");
    has(
        "bar/dirsymlink/",
        &[("dirsymlink/", ""), ("dirsymlink/baz", "world")],
    );
    has("bar/dirsymlink/.", &[("./", ""), ("./baz", "world")]);
    has("/bar/root/", &[("root/", ""), ("root/foo", "hello")]);
    // A file named as a directory: dockerd's lstat error (a system error, not "not found").
    let (head, body) = get_raw(&d, "/containers/cpsrc/archive?path=/etc/passwd/");
    assert!(head.contains(" 500 "), "{head}");
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("lstat /etc/passwd/: not a directory"),
        "{body}"
    );
    let r = d
        .http("HEAD", "/containers/cpsrc/archive?path=/etc/passwd/", None)
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 500 "), "{r}");
    finish(d);
}

#[test]
fn copying_into_a_read_only_volume_is_refused_as_dockerd_does() {
    let d = root_daemon!();
    let host = d.path("ro-src");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "x").unwrap();
    let ro = format!("{}:/vol_ro:ro", host.display());
    d.docker(&[
        "create",
        "--name",
        "rov",
        "-v",
        &ro,
        "-v",
        "/vol_rw",
        "--read-only",
        "busybox",
        "true",
    ])
    .ok();
    // A stopped container with a read-only bind: copying out works.
    let got = archive_entries(&d, "rov", "/vol_ro/f");
    assert_eq!(got, vec![("f".to_string(), "x".to_string())]);
    // Into the read-only volume: dockerd's 400 "mounted volume is marked read-only".
    let src = d.path("up.txt");
    std::fs::write(&src, "up").unwrap();
    let src = src.to_str().unwrap();
    d.docker(&["cp", src, "rov:/vol_ro/new"])
        .fails_with("mounted volume is marked read-only");
    // The read-only root file system outside the volumes; a writable volume inside it.
    d.docker(&["cp", src, "rov:/new"])
        .fails_with("container rootfs is marked read-only");
    d.docker(&["cp", src, "rov:/vol_rw/new"]).ok();
    assert_eq!(
        archive_entries(&d, "rov", "/vol_rw/new"),
        vec![("new".into(), "up".into())]
    );
    assert!(!host.join("new").exists());
    finish(d);
}

#[test]
fn terminals_get_their_console_size_from_the_start() {
    let d = root_daemon!();
    // A container's `HostConfig.ConsoleSize` (height, width): `stty size` reads it at once.
    let id = created(&d.post(
        "/containers/create?name=sized",
        r#"{"Image":"busybox","Tty":true,"Cmd":["stty","size"],"HostConfig":{"ConsoleSize":[57,123]}}"#,
    ));
    d.docker(&["start", "-a", &id]).ok();
    assert_eq!(d.docker(&["logs", "sized"]).ok().stdout.trim(), "57 123");
    // An exec's: the start request's size, else the create request's.
    d.docker(&["run", "-d", "--name", "ex", "busybox", "top"])
        .ok();
    let exec = |create_size: &str, start_size: &str| {
        let r = d.post(
            "/containers/ex/exec",
            &format!(r#"{{"Cmd":["stty","size"],"Tty":true,"AttachStdout":true{create_size}}}"#),
        );
        let id = created(&r);
        let out = d.post(
            &format!("/exec/{id}/start"),
            &format!(r#"{{"Tty":true{start_size}}}"#),
        );
        out.split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string()
    };
    let out = exec(r#","ConsoleSize":[40,100]"#, "");
    assert!(out.contains("40 100"), "{out}");
    let out = exec(r#","ConsoleSize":[40,100]"#, r#","ConsoleSize":[57,123]"#);
    assert!(out.contains("57 123"), "{out}");
    let out = exec("", r#","ConsoleSize":[21,77]"#);
    assert!(out.contains("21 77"), "{out}");
    finish(d);
}

#[test]
fn a_health_probe_past_its_timeout_is_killed() {
    let d = root_daemon!();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "hk",
        "--health-cmd",
        "echo probing; sleep 61",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "top",
    ])
    .ok();
    let logs = || {
        d.inspect("{{len .State.Health.Log}}", "hk")
            .trim()
            .parse::<usize>()
            .unwrap_or(0)
    };
    wait("four timed-out probes", || logs() >= 4);
    let out = d.inspect("{{range .State.Health.Log}}{{.Output}}|{{end}}", "hk");
    assert!(
        out.starts_with("Health check exceeded timeout (300ms): probing\n|"),
        "{out}"
    );
    // Each probe was killed at its timeout: at most the one running now is left, and only
    // its exec is listed.
    let ps = d.docker_out("exec hk ps -o args", &[]);
    let probes = ps.lines().filter(|l| l.contains("sleep 61")).count();
    assert!(probes <= 1, "probes left running:\n{ps}");
    let execs = d.inspect("{{len .ExecIDs}}", "hk");
    assert!(execs.trim().parse::<usize>().unwrap() <= 2, "{execs}");
    finish(d);
}

#[test]
fn writable_cgroups_follow_the_security_option_and_privileged() {
    let d = root_daemon!();
    let mkdir = |opts: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend(opts);
        args.extend(["busybox", "mkdir", "/sys/fs/cgroup/probe"]);
        d.docker(&args).code
    };
    assert_ne!(mkdir(&[]), 0, "cgroups writable by default");
    // The bare option (which the docker CLI refuses) through the API.
    let id = created(&d.post(
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["mkdir","/sys/fs/cgroup/probe"],"HostConfig":{"SecurityOpt":["writable-cgroups"]}}"#,
    ));
    assert_eq!(d.docker(&["start", "-a", &id]).code, 0);
    assert_eq!(mkdir(&["--security-opt", "writable-cgroups=1"]), 0);
    assert_ne!(mkdir(&["--security-opt", "writable-cgroups=false"]), 0);
    assert_eq!(mkdir(&["--privileged"]), 0);
    assert_ne!(
        mkdir(&["--privileged", "--security-opt", "writable-cgroups=false"]),
        0
    );
    // dockerd's `parseSecurityOpt` messages.
    for (opt, n) in [
        ("writable-cgroups=potato", 2),
        ("writeable-cgroups=true", 2),
        ("bogus", 1),
    ] {
        let body = format!(r#"{{"Image":"busybox","HostConfig":{{"SecurityOpt":["{opt}"]}}}}"#);
        let msg = api_error(&d.post("/containers/create", &body), 400);
        assert_eq!(msg, format!("invalid --security-opt {n}: \"{opt}\""));
    }
    finish(d);
}

/// An attach that cannot start is answered as dockerd writes it on the connection it took
/// over: the message as raw-stream text ending in CRLF, not a JSON error
/// (`TestPostContainersAttachContainerNotFound`).
#[test]
fn a_failed_attach_answers_in_raw_text() {
    let d = root_daemon!();
    let r = d.post("/containers/doesnotexist/attach?stream=1&stdout=1", "");
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let head = r.split_once("\r\n\r\n").map_or("", |(h, _)| h);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/vnd.docker.raw-stream"),
        "{r}"
    );
    assert_eq!(body(&r), "No such container: doesnotexist\r\n");
    finish(d);
}

/// A WebSocket attach on the daemon's socket at `path`: the connection after the 101 (the
/// accept key checked) and what came with the head.
async fn ws_attach(d: &Daemon, path: &str) -> (tokio::net::UnixStream, Vec<u8>) {
    use berthd::cri::stream::ws;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut s = tokio::net::UnixStream::connect(d.sock()).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains(&format!("sec-websocket-accept: {}", ws::accept_key(key)).to_lowercase()),
        "{head}"
    );
    (s, buf[end..].to_vec())
}

/// `GET /containers/{id}/attach/ws` (`TestGetContainersAttachWebsocket`): what the client
/// sends reaches the container's stdin, its output comes back unframed, in binary messages
/// (text ones before API 1.28); a missing container is a JSON 404
/// (`TestGetContainersWsAttachContainerNotFound`).
#[test]
fn attach_over_a_websocket() {
    use berthd::cri::stream::ws;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = root_daemon!();
    d.docker(&["run", "-di", "--name", "wsc", "busybox", "cat"])
        .ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (version, opcode) in [("v1.51", ws::OP_BINARY), ("v1.27", ws::OP_TEXT)] {
        rt.block_on(async {
            let path =
                format!("/{version}/containers/wsc/attach/ws?stream=1&stdin=1&stdout=1&stderr=1");
            let (s, rest) = ws_attach(&d, &path).await;
            let (r, mut w) = s.into_split();
            let mut r = AsyncReadExt::chain(std::io::Cursor::new(rest), r);
            let mut frame = Vec::new();
            ws::encode(ws::OP_TEXT, b"hello", Some([1, 2, 3, 4]), &mut frame);
            w.write_all(&frame).await.unwrap();
            let mut st = ws::Reader::default();
            let mut got = Vec::new();
            while got.len() < 5 {
                let m = tokio::time::timeout(
                    std::time::Duration::from_secs(20),
                    ws::read_message(&mut r, &mut st),
                )
                .await
                .expect("no message in time")
                .unwrap()
                .expect("closed");
                assert_eq!(m.opcode, opcode, "{version}: {m:?}");
                got.extend_from_slice(&m.data);
            }
            assert_eq!(got, b"hello", "{version}");
        });
    }
    let r = d
        .http("GET", "/containers/doesnotexist/attach/ws", None)
        .unwrap();
    assert_eq!(api_error(&r, 404), "No such container: doesnotexist");
    finish(d);
}
