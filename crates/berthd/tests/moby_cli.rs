//! Differences from dockerd 28 found by moby's legacy CLI suite (`integration-cli`, v28.5.2)
//! run against berthd, each pinned here with what dockerd answers: the events a request logs
//! and how `docker events --until` replays them.
//!
//! Needs root, `/bin/busybox` and `docker` on PATH; every test runs its own daemon.

mod common;
use common::*;

/// The daemon's clock now, as `docker events --until` takes it (`<seconds>.<nanoseconds>`).
fn now_arg() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

/// `docker events --until now` with `filters`: the past events, without `--since`.
fn events_until_now(d: &Daemon, filters: &[&str]) -> String {
    let until = now_arg();
    let mut args = vec!["events", "--until", until.as_str()];
    for f in filters {
        args.extend(["-f", f]);
    }
    args.extend(["--format", "{{.Type}} {{.Action}} {{.Actor.ID}}"]);
    d.docker(&args).ok().stdout
}

#[test]
fn events_until_replays_history_and_requests_log_theirs() {
    let d = root_daemon!("docker");
    let id = d.docker_out("run -d -t --name evweb busybox sleep 100", &[]);
    let id = id.trim();
    d.docker_out("top evweb", &[]);
    let r = d.post(&format!("/containers/{id}/resize?h=80&w=24"), "");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let file = d.path("copied");
    d.docker(&["cp", "evweb:/etc/passwd", file.to_str().unwrap()])
        .ok();
    d.docker(&["cp", file.to_str().unwrap(), "evweb:/tmp/x"])
        .ok();
    d.docker(&["export", "-o", d.path("x.tar").to_str().unwrap(), "evweb"])
        .ok();
    // A non-streaming attach (logs only) is logged too.
    let r = d.post(&format!("/containers/{id}/attach?logs=1&stdout=1"), "");
    assert!(r.starts_with("HTTP/1.1 101"), "{r}");
    d.docker_out("kill evweb", &[]);

    // `--until` without `--since` replays what happened before; a container filter is a
    // prefix of the ID or of the name (dockerd's FuzzyMatch).
    let out = events_until_now(&d, &["container=evw"]);
    let actions: Vec<&str> = out
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    for want in [
        "create",
        "start",
        "top",
        "resize",
        "archive-path",
        "extract-to-dir",
        "export",
        "attach",
        "kill",
        "die",
    ] {
        assert!(actions.contains(&want), "no {want} event in:\n{out}");
    }
    assert!(out.lines().all(|l| l.starts_with("container ")), "{out}");
    assert!(out.contains(id), "{out}");
    let by_id = events_until_now(&d, &[&format!("container={}", &id[..6])]);
    assert_eq!(by_id.lines().count(), out.lines().count(), "{by_id}");
    // A name that is no prefix matches nothing.
    assert_eq!(events_until_now(&d, &["container=web"]), "");
}
