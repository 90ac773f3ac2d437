//! Requests decoded as dockerd decodes them (berth-api): a value of the wrong type is a 400
//! naming the field, field names match case-insensitively, and empty values mean "the
//! image's" (`docker run IMAGE id` runs as the image's `USER`).

mod common;
use common::*;

use std::path::PathBuf;

/// Status and body of a raw HTTP response.
fn status_body(resp: &str) -> (u16, String) {
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

#[test]
fn wrong_types_are_400s_that_name_the_field() {
    let d = Daemon::new();
    for (version, memory) in [
        ("", r#""512m""#),
        ("", "1e9"),
        ("/v1.41", r#""512m""#),
        ("/v1.24", "1.5"),
    ] {
        let body =
            format!(r#"{{"Image":"busybox","Cmd":["true"],"HostConfig":{{"Memory":{memory}}}}}"#);
        let r = d.post(&format!("{version}/containers/create"), &body);
        let (status, msg) = status_body(&r);
        assert_eq!(status, 400, "{memory}: {r}");
        assert!(msg.contains("HostConfig.Memory"), "{memory}: {msg}");
    }
    // Nothing was created.
    assert_eq!(d.docker(&["ps", "-aq"]).ok().stdout.trim(), "");
    // Deeper paths and lists are named too; other requests decode the same way.
    let r = d.post(
        "/containers/create",
        r#"{"Image":"busybox","HostConfig":{"Ulimits":[{"Name":"nofile","Soft":"x","Hard":1}]}}"#,
    );
    let (status, msg) = status_body(&r);
    assert_eq!(status, 400, "{r}");
    assert!(msg.contains("HostConfig.Ulimits[0].Soft"), "{msg}");
    let id = d.docker_out("create busybox true", &[]).trim().to_string();
    let r = d.post(&format!("/containers/{id}/update"), r#"{"Memory":"1g"}"#);
    let (status, msg) = status_body(&r);
    assert_eq!(status, 400, "{r}");
    assert!(msg.contains("Memory"), "{msg}");
    let r = d.post("/networks/create", r#"{"Name":"n1","Internal":"yes"}"#);
    let (status, msg) = status_body(&r);
    assert_eq!(status, 400, "{r}");
    assert!(msg.contains("Internal"), "{msg}");
    finish(d);
}

#[test]
fn case_folded_field_names_are_honoured() {
    let d = Daemon::new();
    // What a Go client may send: names that match only case-insensitively.
    let body = r#"{"image":"busybox","cmd":["sleep","100"],
        "hostconfig":{"cpushares":512,"MEMORY":33554432,"pidsLimit":64,"CPURealtimeRuntime":0}}"#;
    let r = d.post("/containers/create?name=folded", body);
    let (status, msg) = status_body(&r);
    assert_eq!(status, 201, "{r}");
    assert!(msg.contains("\"Id\""), "{msg}");
    d.docker(&["start", "folded"]).ok();
    let out = d
        .docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.CpuShares}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
            "folded",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "512 33554432 64");
    // And they reached the cgroup.
    let id = d.inspect("{{.Id}}", "folded").trim().to_string();
    let cg = |ctl: &str, file: &str| -> Option<String> {
        let p = PathBuf::from(format!(
            "/sys/fs/cgroup/{ctl}{}/{id}/{file}",
            d.cgroup_parent
        ));
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if let Some(shares) = cg("cpu", "cpu.shares") {
        assert_eq!(shares, "512");
        assert_eq!(
            cg("memory", "memory.limit_in_bytes").as_deref(),
            Some("33554432")
        );
        assert_eq!(cg("pids", "pids.max").as_deref(), Some("64"));
    } else {
        eprintln!("skipped the cgroup check: no cgroup v1 cpu controller here");
    }
    finish(d);
}

fn docker_build(d: &Daemon, dir: &std::path::Path, tag: &str) -> Run {
    d.classic_build(dir, &["-q", "-t", tag])
}

#[test]
fn docker_run_uses_the_images_user_and_workdir() {
    let d = Daemon::new();
    let dir = d.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
         RUN echo 'appuser:x:1234:1234::/home/appuser:/bin/sh' >> /etc/passwd && \
             echo 'appuser:x:1234:' >> /etc/group && mkdir -p /srv/app\n\
         WORKDIR /srv/app\n\
         USER appuser\n",
        )],
    );
    docker_build(&d, &dir, "userimg").ok();
    // The docker CLI sends `"User": ""` and `"WorkingDir": ""`: the image's apply.
    let out = d.docker_line("run --rm userimg id", &[]).ok();
    assert!(
        out.stdout
            .starts_with("uid=1234(appuser) gid=1234(appuser)"),
        "{}",
        out.stdout
    );
    let out = d.docker_line("run --rm userimg pwd", &[]).ok();
    assert_eq!(out.stdout.trim(), "/srv/app");
    // Given explicitly, they win.
    let out = d
        .docker_line("run --rm -u 0 -w / userimg sh -c", &["id -u; pwd"])
        .ok();
    assert_eq!(out.stdout, "0\n/\n");
    // Through the API without the fields: the same.
    let r = d.post(
        "/containers/create?name=apiuser",
        r#"{"Image":"userimg","Cmd":["id","-u"]}"#,
    );
    assert_eq!(status_body(&r).0, 201, "{r}");
    let out = d
        .docker(&[
            "inspect",
            "-f",
            "{{.Config.User}} {{.Config.WorkingDir}}",
            "apiuser",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "appuser /srv/app");
    finish(d);
}
