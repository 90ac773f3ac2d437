//! Differences from dockerd 28 found by moby's legacy CLI suite (`integration-cli`, v28.5.2)
//! run against berthd, each pinned here with what dockerd answers: the events a request logs
//! and how `docker events --until` replays them, network mode conflicts and port publishing
//! on internal networks.
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

/// `docker rmi`'s conflicts as dockerd words them: a running container's image cannot be
/// removed even with `-f`, a stopped one's needs `-f`, a parent image (the base of a classic
/// build) is kept, and a blank name is refused.
#[test]
fn rmi_conflicts_name_running_containers_and_children() {
    let d = root_daemon!("docker");
    let ctx = dockerfile_context("FROM busybox\nRUN echo hello > /hi\n");
    d.classic_build(ctx.path(), &["-q", "-t", "child"]).ok();
    let busybox = d.inspect("{{.ID}}", "busybox").trim().to_string();
    assert_eq!(d.inspect("{{.Parent}}", "child").trim(), busybox);
    // busybox is the parent of child: not even -f removes it, and it keeps its tag.
    let short = &busybox["sha256:".len()..][..12];
    for args in [
        vec!["rmi", busybox.as_str()],
        vec!["rmi", "-f", busybox.as_str()],
    ] {
        d.docker(&args).failed(
            1,
            format!(
                "Error response from daemon: conflict: unable to delete {short} (cannot be forced) - image has dependent child images\n"
            ),
        );
    }
    assert_eq!(d.inspect("{{.ID}}", "busybox:latest").trim(), busybox);

    let child = d.inspect("{{.ID}}", "child").trim().to_string();
    let cshort = &child["sha256:".len()..][..12];
    d.docker_out("tag child child:two", &[]);
    let running = d.docker_out("run -d child sleep 100", &[]);
    let rshort = &running.trim()[..12];
    // Two tags, by ID and forced: a running container's image is a hard conflict.
    d.docker(&["rmi", "-f", &child]).failed(
        1,
        format!(
            "Error response from daemon: conflict: unable to delete {cshort} (cannot be forced) - image is being used by running container {rshort}\n"
        ),
    );
    d.docker_out("rm -f", &[running.trim()]);
    d.docker_out("rmi child:two", &[]);
    // One tag, a stopped container: without -f refused, naming it; with -f deleted.
    let stopped = d.docker_out("create child", &[]);
    let sshort = &stopped.trim()[..12];
    d.docker(&["rmi", &child]).failed(
        1,
        format!(
            "Error response from daemon: conflict: unable to delete {cshort} (must be forced) - image is being used by stopped container {sshort}\n"
        ),
    );
    d.docker(&["rmi", "child"]).failed(
        1,
        format!(
            "Error response from daemon: conflict: unable to remove repository reference \"child\" (must force) - container {sshort} is using its referenced image {cshort}\n"
        ),
    );
    d.docker(&["rmi", "-f", &child]).ok();
    d.docker(&["rmi", " "]).failed(
        1,
        "Error response from daemon: image name cannot be blank\n",
    );
}

/// `docker commit --change ENV…` replaces a variable the container has in place (the image's
/// `PATH` stays first), as dockerd's builder does.
#[test]
fn commit_change_env_replaces_in_place() {
    let d = root_daemon!("docker");
    import_rootfs(&d, &["ENV PATH=/usr/bin:/bin"], "withpath");
    d.docker_out("run --name src withpath true", &[]);
    d.docker(&[
        "commit",
        "--change",
        "ENV DEBUG true",
        "--change",
        "ENV test 1",
        "--change",
        "ENV PATH /foo",
        "src",
        "committed",
    ])
    .ok();
    assert_eq!(
        d.inspect("{{.Config.Env}}", "committed").trim(),
        "[PATH=/foo DEBUG=true test=1]"
    );
}

/// `docker ps`: `--filter ancestor=` matches the images built on the given one too, and a
/// container whose image name now means another image shows its image's ID.
#[test]
fn ps_ancestor_descendants_and_retagged_image() {
    let d = root_daemon!("docker");
    let ctx = dockerfile_context("FROM busybox\nRUN echo 1 > /one\n");
    d.classic_build(ctx.path(), &["-q", "-t", "img1"]).ok();
    let ctx2 = dockerfile_context("FROM img1\nRUN echo 2 > /two\n");
    d.classic_build(ctx2.path(), &["-q", "-t", "img2"]).ok();
    let a = d.docker_out("create busybox", &[]);
    let b = d.docker_out("create img1", &[]);
    let c = d.docker_out("create img2", &[]);
    let ids = |anc: &str| {
        let mut v: Vec<String> = d
            .docker_line(
                "ps -aq --no-trunc",
                &["--filter", &format!("ancestor={anc}")],
            )
            .ok()
            .stdout
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    let mut all = vec![
        a.trim().to_string(),
        b.trim().to_string(),
        c.trim().to_string(),
    ];
    all.sort();
    assert_eq!(ids("busybox"), all);
    let mut two = vec![b.trim().to_string(), c.trim().to_string()];
    two.sort();
    assert_eq!(ids("img1"), two);
    assert_eq!(ids("img2"), vec![c.trim().to_string()]);

    // img1 moves to another image: the container created from it shows its image's ID.
    let img1 = d.inspect("{{.ID}}", "img1").trim().to_string();
    let image_of = |id: &str| {
        d.docker_line(
            "ps -a --no-trunc",
            &["--filter", &format!("id={id}"), "--format", "{{.Image}}"],
        )
        .ok()
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(image_of(b.trim()), "img1");
    d.docker_out("tag img2 img1", &[]);
    assert_eq!(image_of(b.trim()), img1);
    assert_eq!(image_of(a.trim()), "busybox");
}

/// An exec's process is the container's: its `--ulimit`s, `HOSTNAME` and links' variables.
#[test]
fn exec_gets_container_ulimits_hostname_and_link_env() {
    let d = root_daemon!("docker");
    d.docker_out("run -d --name foo busybox sleep 100", &[]);
    d.docker_out(
        "run -d --link foo:db --hostname myhost --ulimit nofile=511:511 --name bar busybox sleep 100",
        &[],
    );
    let env = d.docker_out("exec bar env", &[]);
    assert!(env.contains("HOSTNAME=myhost\n"), "{env}");
    assert!(env.contains("DB_NAME=/bar/db\n"), "{env}");
    let n = d.docker_line("exec bar sh -c", &["ulimit -n"]).ok().stdout;
    assert_eq!(n.trim(), "511");
    // The exec's own variables still win.
    let env = d.docker_out("exec -e HOSTNAME=other bar env", &[]);
    assert!(env.contains("HOSTNAME=other\n"), "{env}");
}

/// `docker restart` of a `--rm` container restarts it (it is not removed), and a start by
/// hand gives an `on-failure:N` policy its N retries again.
#[test]
fn restart_keeps_rm_container_and_start_resets_retries() {
    let d = root_daemon!("docker");
    let id = d.docker_out("run -d --rm busybox sleep 100", &[]);
    let id = id.trim();
    d.docker_out("restart -t 1", &[id]);
    assert_eq!(d.inspect("{{.State.Running}}", id).trim(), "true");

    let f = d.docker_out("run -d --restart=on-failure:2 busybox false", &[]);
    let f = f.trim();
    let settled = || {
        d.inspect(
            "{{.State.Restarting}} {{.State.Running}} {{.RestartCount}}",
            f,
        )
    };
    wait("two retries", || settled().trim() == "false false 2");
    d.docker_out("start", &[f]);
    // The count starts over: the policy retries twice again.
    wait("two retries after the start", || {
        d.inspect("{{.RestartCount}}", f).trim() == "2" && settled().trim() == "false false 2"
    });
    let events = d
        .docker(&[
            "events",
            "--since",
            "0",
            "--until",
            &now_arg(),
            "-f",
            &format!("container={f}"),
            "-f",
            "event=start",
            "--format",
            "{{.Action}}",
        ])
        .ok()
        .stdout;
    // The first run, two retries, the start by hand and two more retries.
    assert_eq!(events.lines().count(), 6, "{events}");

    // A kill while an `always` policy restarts the container quickly (its back-off reset by
    // the start) stops it for good, whichever moment of a restart it lands in.
    let a = d.docker_out("run -d --restart=always busybox false", &[]);
    let a = a.trim();
    for _ in 0..5 {
        d.docker_out("start", &[a]);
        let _ = d.docker(&["kill", a]);
        wait("the container stopped", || {
            d.inspect("{{.State.Restarting}} {{.State.Running}}", a)
                .trim()
                == "false false"
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            d.inspect("{{.State.Restarting}} {{.State.Running}}", a)
                .trim(),
            "false false"
        );
    }
}

/// Image events as dockerd's `LogImageEvent` logs them: the image ID as actor of `tag`,
/// `untag`, `delete`, `save` and `load`, the image's labels as attributes; `--filter image=`
/// matches a name without its tag; `--since` after `--until` is refused.
#[test]
fn image_events_name_the_image_id_and_carry_labels() {
    let d = root_daemon!("docker");
    import_rootfs(&d, &["LABEL evlabel=yes"], "labelled");
    let id = d.inspect("{{.ID}}", "labelled").trim().to_string();
    d.docker_out("tag labelled labelled:two", &[]);
    let tar = d.path("img.tar");
    d.docker(&["save", "-o", tar.to_str().unwrap(), "labelled:two"])
        .ok();
    d.docker_out("rmi labelled:two", &[]);
    d.docker_out("rmi labelled", &[]);
    d.docker(&["load", "-i", tar.to_str().unwrap()]).ok();
    d.docker_out("run --name c1 busybox:latest true", &[]);
    let until = now_arg();
    let ev = |filters: &[&str]| {
        let mut args = vec!["events", "--since", "0", "--until", until.as_str()];
        for f in filters {
            args.extend(["-f", f]);
        }
        args.extend([
            "--format",
            "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ]);
        d.docker(&args).ok().stdout
    };
    let out = ev(&["type=image", "label=evlabel=yes"]);
    let want = [
        format!("tag {id} labelled:two"),
        format!("save {id} {id}"),
        format!("untag {id} {id}"),
        format!("load {id} {id}"),
    ];
    for w in &want {
        assert!(out.lines().any(|l| l == w), "no {w:?} in:\n{out}");
    }
    // A deleted image has no labels any more (as in dockerd).
    let out = ev(&["type=image", "event=delete"]);
    assert_eq!(out.trim(), format!("delete {id} {id}"));
    // busybox:latest's container events match `image=busybox`.
    let out = ev(&["image=busybox", "event=start"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    d.docker(&["events", "--since", &now_arg(), "--until", "1"])
        .fails_with("cannot be after `until` time (1)");
}

/// A create publishing every port (a body of several megabytes) is read whole.
#[test]
fn create_with_the_whole_port_range() {
    let d = root_daemon!("docker");
    let id = d.docker_out("create -p 1-65535:1-65535/tcp busybox echo", &[]);
    let n = d.inspect("{{len .HostConfig.PortBindings}}", id.trim());
    assert_eq!(n.trim(), "65535");
}

/// A numeric user or group outside `0-2147483647` is refused with moby's words.
#[test]
fn run_user_id_out_of_range() {
    let d = root_daemon!("docker");
    for u in ["2147483648", "-1", "0:-5"] {
        d.docker(&["run", "--rm", "-u", u, "busybox", "id"])
            .fails_with("uids and gids must be in range 0-2147483647");
    }
    let out = d.docker_out("run --rm -u 2147483647 busybox id -u", &[]);
    assert_eq!(out.trim(), "2147483647");
}

#[test]
fn network_namespace_sharing_refuses_dockerds_conflicts_and_shares_the_hostname() {
    let d = root_daemon!("docker");
    let run = |args: &str| d.docker_line(&format!("run --rm {args} busybox true"), &[]);
    // dockerd's `validateNetMode`, before the other container is even looked up.
    for (opts, msg) in [
        (
            "--net=container",
            "invalid container format container:<name|id>",
        ),
        (
            "-h x --net=container:nope",
            "conflicting options: hostname and the network mode",
        ),
        (
            "--link a:b --net=container:nope",
            "conflicting options: container type network can't be used with links",
        ),
        (
            "--dns 1.2.3.4 --net=container:nope",
            "conflicting options: dns and the network mode",
        ),
        (
            "--add-host a:1.2.3.4 --net=container:nope",
            "conflicting options: custom host-to-IP mapping and the network mode",
        ),
        (
            "-P --net=container:nope",
            "conflicting options: port publishing and the container type network mode",
        ),
        (
            "--expose 80 --net=container:nope",
            "conflicting options: port exposing and the container type network mode",
        ),
        (
            "--link a:b --net=host",
            "conflicting options: host type networking can't be used with links",
        ),
        (
            "-h x --uts=host",
            "conflicting options: hostname and the UTS mode",
        ),
    ] {
        let r = run(opts).fails_with(msg);
        assert_eq!(r.code, 125, "{opts}");
    }
    // At the start: itself, a stopped container.
    d.docker_line("run --name=me --net=container:me busybox true", &[])
        .fails_with("cannot join own network namespace");
    d.docker_line("create --name stopped busybox true", &[])
        .ok();
    d.docker_line("run --rm --net=container:stopped busybox true", &[])
        .fails_with("cannot join network namespace of a non running container: container stopped is created");
    // The hostname (and /etc/hostname) of the container whose namespace it joins.
    d.docker_line("run -d --name parent -h parenthost busybox top", &[])
        .ok();
    let out = d.docker_out(
        "run --rm --net=container:parent busybox sh -c",
        &["hostname; cat /etc/hostname"],
    );
    assert_eq!(out, "parenthost\nparenthost\n");
    // `network connect` of a container without a network of its own: dockerd's messages.
    d.docker_line("network create cnet", &[]).ok();
    d.docker_line("run -d --name lonely --net=none busybox top", &[])
        .ok();
    d.docker_line("network connect cnet lonely", &[])
        .fails_with("container cannot be connected to multiple networks with one of the networks in private (none) mode");
    d.docker_line("network connect host parent", &[])
        .fails_with(
        "cannot connect container to host network - container must be created in host network mode",
    );
    d.docker_line("network connect none parent", &[])
        .fails_with("container cannot be connected to multiple networks with one of the networks in private (none) mode");
    // A host-network container keeps a loopback name server it is given.
    let out = d.docker_out(
        "run --rm --net=host --dns=127.0.0.1 busybox cat /etc/resolv.conf",
        &[],
    );
    assert!(out.contains("nameserver 127.0.0.1"), "{out}");
    finish(d);
}

#[test]
fn clients_before_1_44_create_with_one_network_only() {
    let d = root_daemon!("docker");
    let body = r#"{"Image":"busybox","NetworkingConfig":{"EndpointsConfig":{"n1":{},"n2":{}}}}"#;
    let r = d.post("/v1.43/containers/create", body);
    let msg = api_error(&r, 400);
    assert_eq!(
        msg,
        "Container cannot be created with multiple network endpoints: n1, n2"
    );
    finish(d);
}

/// moby integration-cli TestConflictNetworkModeNetHostAndOptions (its CLI speaks API 1.38):
/// dockerd's `handleMACAddressBC`. Below 1.44 the container-wide `MacAddress` is refused
/// with a network mode without an endpoint and an endpoint's own is ignored; from 1.44 the
/// container-wide one moves to the main network's endpoint with a warning, and must not
/// differ from the endpoint's.
#[test]
fn container_wide_mac_addresses_follow_the_api_version() {
    let d = root_daemon!("docker");
    let host = r#"{"Image":"busybox","Cmd":["true"],"MacAddress":"92:d0:c6:0a:29:33","HostConfig":{"NetworkMode":"host"}}"#;
    let r = d.post("/v1.43/containers/create", host);
    assert_eq!(
        api_error(&r, 400),
        "conflicting options: mac-address and the network mode"
    );
    let mismatch = r#"{"Image":"busybox","Cmd":["true"],"MacAddress":"92:d0:c6:0a:29:33","NetworkingConfig":{"EndpointsConfig":{"bridge":{"MacAddress":"92:d0:c6:0a:29:34"}}}}"#;
    let r = d.post("/v1.51/containers/create", mismatch);
    assert_eq!(
        api_error(&r, 400),
        "the container-wide MAC address must match the endpoint-specific MAC address for the main network, or be left empty"
    );
    let mac_of = |version: &str, name: &str, body: &str| {
        let r = d.post(&format!("/{version}/containers/create?name={name}"), body);
        assert!(r.starts_with("HTTP/1.1 201"), "{r}");
        d.docker_out("start -a", &[name]).trim().to_string()
    };
    let cmd = r#""Cmd":["cat","/sys/class/net/eth0/address"]"#;
    let moved = format!(r#"{{"Image":"busybox",{cmd},"MacAddress":"92:d0:c6:0a:29:35"}}"#);
    let r = d.post("/v1.51/containers/create?name=moved", &moved);
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let warnings = serde_json::from_str::<serde_json::Value>(body(&r)).unwrap()["Warnings"].clone();
    assert_eq!(
        warnings,
        serde_json::json!(["The container-wide MacAddress field is now deprecated. It should be specified in EndpointsConfig instead."])
    );
    assert_eq!(
        d.docker_out("start -a moved", &[]).trim(),
        "92:d0:c6:0a:29:35"
    );
    let ignored = format!(
        r#"{{"Image":"busybox",{cmd},"NetworkingConfig":{{"EndpointsConfig":{{"bridge":{{"MacAddress":"92:d0:c6:0a:29:36"}}}}}}}}"#
    );
    assert_ne!(mac_of("v1.43", "ignored", &ignored), "92:d0:c6:0a:29:36");
    assert_eq!(mac_of("v1.51", "kept", &ignored), "92:d0:c6:0a:29:36");
    finish(d);
}

/// moby integration-cli TestPruneNetworkLabel: network prune honours `label!` (it pruned a
/// network carrying the excluded label), refuses filters dockerd does not accept, and takes
/// `until`; `label!` filters exclude only when all of them match (dockerd's matchLabels).
#[test]
fn network_prune_label_filters() {
    let d = root_daemon!();
    for (n, l) in [("pn1", Some("foo")), ("pn2", Some("bar")), ("pn3", None)] {
        let mut args = vec!["network", "create"];
        if let Some(l) = l {
            args.extend(["--label", l]);
        }
        args.push(n);
        d.docker(&args).ok();
    }
    let out = d
        .docker_line("network prune -f --filter label=foo", &[])
        .ok()
        .stdout;
    assert!(
        out.contains("pn1") && !out.contains("pn2") && !out.contains("pn3"),
        "{out}"
    );
    let out = d
        .docker_line("network prune -f --filter label!=bar", &[])
        .ok()
        .stdout;
    assert!(!out.contains("pn2") && out.contains("pn3"), "{out}");
    // Both label! filters must match to keep a network.
    let out = d
        .docker_line(
            "network prune -f --filter label!=bar --filter label!=baz",
            &[],
        )
        .ok()
        .stdout;
    assert!(out.contains("pn2"), "{out}");
    d.docker_line("network create --label keep pn4", &[]).ok();
    let out = d
        .docker_line("network prune -f --filter until=1h", &[])
        .ok()
        .stdout;
    assert!(!out.contains("pn4"), "{out}");
    d.docker_line("network prune -f --filter dangling=true", &[])
        .fails_with("invalid filter 'dangling'");
    let out = d.docker_line("network prune -f", &[]).ok().stdout;
    assert!(out.contains("pn4"), "{out}");
    d.finish();
}

#[test]
fn ports_are_published_only_through_a_network_that_is_not_internal() {
    let d = root_daemon!("docker");
    let port = free_port().to_string();
    d.docker_line("network create --internal inet", &[]).ok();
    d.docker_line("network create onet", &[]).ok();
    d.docker_line(
        "run -d --name srv --net inet -p",
        &[
            &format!("{port}:8080"),
            "busybox",
            "sh",
            "-c",
            "while true; do echo hi | nc -l -p 8080; done",
        ],
    )
    .ok();
    let get = || d.docker_line("run --rm --net=host busybox nc -w 2 127.0.0.1", &[&port]);
    // On an internal network only: nothing is published (dockerd maps no port there).
    let r = get();
    assert!(
        r.code != 0 || !r.stdout.contains("hi"),
        "published on an internal network: {}",
        r.stdout
    );
    // Connected to a network that is not internal: published through it.
    d.docker_line("network connect onet srv", &[]).ok();
    wait("the port published on the new network", || {
        get().stdout.contains("hi")
    });
    finish(d);
}

/// moby integration-cli TestPruneContainerUntil: `until` is compared to the nanosecond, as
/// dockerd's `Created.After(until)` (whole seconds kept a container created in the same second
/// before `until`).
#[test]
fn container_prune_until_to_the_nanosecond() {
    let d = root_daemon!();
    let c1 = d
        .docker_line("create busybox true", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let until = now_arg();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let c2 = d
        .docker_line("create busybox true", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    let out = d
        .docker(&[
            "container",
            "prune",
            "-f",
            "--filter",
            &format!("until={until}"),
        ])
        .ok()
        .stdout;
    assert!(out.contains(&c1) && !out.contains(&c2), "{out}");
    d.finish();
}

/// moby integration-cli TestRunHostnameFQDN: a container's own `/etc/hosts` line names the
/// fully qualified host name and then the bare one, as libnetwork writes it (`hostname -f`
/// and `ping <short name>` resolve through it); a `--domainname` is part of the former.
#[test]
fn hosts_line_names_the_fqdn_and_the_short_name() {
    let d = root_daemon!("docker");
    let own_line = |args: &str| {
        let out = d
            .docker_line(&format!("run --rm {args} busybox cat /etc/hosts"), &[])
            .ok()
            .stdout;
        out.lines()
            .last()
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        own_line("--hostname=foobar.example.com"),
        "foobar.example.com foobar"
    );
    assert_eq!(
        own_line("--hostname=h1 --domainname=example.org"),
        "h1.example.org h1"
    );
    assert_eq!(own_line("--hostname=plain"), "plain");
    let out = d
        .docker_line(
            "run --rm --hostname=foobar.example.com busybox hostname -f",
            &[],
        )
        .ok()
        .stdout;
    assert_eq!(out.trim(), "foobar.example.com");
    d.finish();
}

/// moby integration-cli TestRunEnvironment: `-e HOME=` (an empty `HOME`) gets the user's home
/// directory, as runc sets it when `HOME` is unset or empty; a set one is kept.
#[test]
fn an_empty_home_becomes_the_users_home() {
    let d = root_daemon!("docker");
    let env = |args: &str| {
        d.docker_line(&format!("run --rm {args} busybox env"), &[])
            .ok()
            .stdout
    };
    let out = env("-e HOME=");
    assert!(out.lines().any(|l| l == "HOME=/root"), "{out}");
    assert!(!out.lines().any(|l| l == "HOME="), "{out}");
    let out = env("-e HOME=/x");
    assert!(out.lines().any(|l| l == "HOME=/x"), "{out}");
    let out = env("");
    assert!(out.lines().any(|l| l == "HOME=/root"), "{out}");
    d.finish();
}

/// moby integration-cli TestRunSlowStdoutConsumer: a client that reads an attached stream
/// slowly gets all of it; the container's output waits for it (dockerd's attach pipes block
/// their writer) instead of the client being dropped once megabytes are pending.
#[test]
fn a_slow_attach_reader_gets_all_the_output() {
    use std::io::Read;
    let d = root_daemon!("docker");
    // 8,000 KiB of zeros, doubled by `cat -v` (`^@`): 16,384,000 bytes.
    let mut child = d
        .docker_cmd(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "dd if=/dev/zero bs=1024 count=8000 2>/dev/null | cat -v",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Nothing read for a while: every buffer on the way fills up.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut n = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("reading the output: {e}"),
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(n, 2 * 1024 * 8000);
    assert!(status.success(), "{status}");
    d.finish();
}

/// moby integration-cli TestRunEnvironmentErase: a bare `-e KEY` the client does not have
/// unsets the daemon's default too (`HOSTNAME`), as dockerd's `ReplaceOrAppendEnvValues` over
/// `PATH`, `HOSTNAME` (and `TERM` with a tty); a set variable replaces a default in place.
#[test]
fn a_bare_env_key_unsets_the_daemons_defaults() {
    let d = root_daemon!("docker");
    let o = d
        .docker_cmd(&[
            "run", "--rm", "-e", "HOSTNAME", "-e", "NOPE", "busybox", "env",
        ])
        .env_remove("HOSTNAME")
        .env_remove("NOPE")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("HOSTNAME="), "{out}");
    let out = d
        .docker_line("run --rm -h envh -e A=1 busybox env", &[])
        .ok()
        .stdout;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("PATH="), "{out}");
    assert_eq!(lines[1], "HOSTNAME=envh", "{out}");
    assert!(lines.contains(&"A=1"), "{out}");
    let o = d
        .docker_cmd(&["run", "--rm", "-t", "-e", "TERM", "busybox", "env"])
        .env_remove("TERM")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("TERM="), "{out}");
    d.finish();
}

/// moby integration-cli TestStartPausedContainer: starting a paused container is a conflict
/// with dockerd's words, not the "already running" no-op.
#[test]
fn starting_a_paused_container_says_to_unpause() {
    let d = root_daemon!("docker");
    d.docker_line("run -d --name paused1 busybox sleep 100", &[])
        .ok();
    d.docker_line("pause paused1", &[]).ok();
    d.docker_line("start paused1", &[])
        .fails_with("cannot start a paused container, try unpause instead");
    let r = d.post("/containers/paused1/start", "");
    assert!(r.starts_with("HTTP/1.1 409"), "{r}");
    d.docker_line("unpause paused1", &[]).ok();
    let r = d.post("/containers/paused1/start", "");
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    d.finish();
}

/// moby integration-cli TestLinksMultipleWithSameName: a second link with an alias already
/// taken is ignored (dockerd's `registerLink` warns), the first child keeps the alias.
#[test]
fn a_repeated_link_alias_keeps_the_first_child() {
    let d = root_daemon!("docker");
    d.docker_line("run -d --name upa busybox sleep 100", &[])
        .ok();
    d.docker_line("run -d --name upb busybox sleep 100", &[])
        .ok();
    let ip_a = d.inspect("{{.NetworkSettings.IPAddress}}", "upa");
    let out = d
        .docker_line(
            "run --rm --link upa:upstream --link upb:upstream busybox grep upstream /etc/hosts",
            &[],
        )
        .ok()
        .stdout;
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with(&format!("{}\t", ip_a.trim())), "{out}");
    d.finish();
}

/// moby integration-cli TestUpdateWithNanoCPUs: `NanoCPUs` and the CFS quota/period exclude
/// each other in an update too (dockerd's `UpdateContainer`: a 409 naming what is set).
#[test]
fn nano_cpus_and_cpu_quota_updates_conflict() {
    let d = root_daemon!("docker");
    d.docker_line("run -d --cpus 0.5 --name nano1 busybox sleep 100", &[])
        .ok();
    d.docker_line("update --cpu-quota 80000 nano1", &[])
        .fails_with(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        );
    d.docker_line("update --cpu-period 80000 nano1", &[])
        .fails_with(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        );
    d.docker_line("update --cpus 0.8 nano1", &[]).ok();
    assert_eq!(
        d.inspect("{{.HostConfig.NanoCpus}}", "nano1").trim(),
        "800000000"
    );
    assert_eq!(d.inspect("{{.HostConfig.CpuQuota}}", "nano1").trim(), "0");
    d.docker_line(
        "run -d --cpu-quota 50000 --name quota1 busybox sleep 100",
        &[],
    )
    .ok();
    d.docker_line("update --cpus 1 quota1", &[]).fails_with(
        "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
    );
    assert_eq!(
        d.inspect("{{.HostConfig.CpuQuota}}", "quota1").trim(),
        "50000"
    );
    d.finish();
}

/// moby integration-cli TestRunCreateVolumeEtc and TestRunContainerWithReadonlyRootfs: the
/// network files are mounted after the volumes (an `-v /etc` volume does not hide them) and
/// read-only with `--read-only`, as dockerd's `setupMounts`/`NetworkMounts`; a bind of the
/// user's own at one of their paths still replaces the daemon's file.
#[test]
fn network_files_are_mounted_over_volumes_and_read_only_with_the_root() {
    let d = root_daemon!("docker");
    let out = d
        .docker_line(
            "run --rm -h etc123 --add-host=etchost:192.168.0.1 -v /etc busybox cat",
            &["/etc/hostname", "/etc/hosts"],
        )
        .ok()
        .stdout;
    assert!(out.starts_with("etc123\n"), "{out}");
    assert!(out.contains("192.168.0.1\tetchost"), "{out}");
    d.docker_line("run --rm -v /etc busybox test -s /etc/resolv.conf", &[])
        .ok();
    let r = d.docker_line(
        "run --rm --read-only busybox sh -c",
        &["touch /etc/hosts /etc/resolv.conf /etc/hostname"],
    );
    assert_ne!(r.code, 0);
    for f in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        assert!(
            r.stderr
                .contains(&format!("touch: {f}: Read-only file system")),
            "{}",
            r.stderr
        );
    }
    d.docker_line("run --rm busybox touch /etc/hosts", &[]).ok();
    let mine = d.path("myhosts");
    std::fs::write(&mine, "10.1.2.3\tmine\n").unwrap();
    let out = d
        .docker_line(
            "run --rm -v",
            &[
                &format!("{}:/etc/hosts:ro", mine.display()),
                "busybox",
                "cat",
                "/etc/hosts",
            ],
        )
        .ok()
        .stdout;
    assert_eq!(out, "10.1.2.3\tmine\n");
    d.finish();
}

/// `docker info` counts a paused container as paused only (dockerd's state counter), not as
/// running.
#[test]
fn info_counts_paused_containers_apart_from_running() {
    let d = root_daemon!("docker");
    let counts = || {
        d.docker_out(
            "info --format",
            &["{{.Containers}} {{.ContainersRunning}} {{.ContainersPaused}} {{.ContainersStopped}}"],
        )
        .trim()
        .to_string()
    };
    let id = d.docker_out("run -d busybox sleep 100", &[]);
    d.docker_out("create busybox true", &[]);
    assert_eq!(counts(), "2 1 0 1");
    d.docker_out("pause", &[id.trim()]);
    assert_eq!(counts(), "2 0 1 1");
    d.docker_out("unpause", &[id.trim()]);
    assert_eq!(counts(), "2 1 0 1");
    d.docker_out("rm -f", &[id.trim()]);
    d.finish();
}

/// A classic build's `-t` tags are logged as image `tag` events after its `create`, each
/// named as dockerd's image service names them and carrying the image's labels.
#[test]
fn classic_build_logs_a_tag_event_per_tag() {
    let d = root_daemon!("docker");
    let ctx = dockerfile_context("FROM busybox\nLABEL evlabel=yes\n");
    let since = now_arg();
    d.classic_build(ctx.path(), &["-q", "-t", "evbuilt", "-t", "evbuilt:two"])
        .ok();
    let id = d.inspect("{{.ID}}", "evbuilt").trim().to_string();
    let until = now_arg();
    let out = d
        .docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "-f",
            "type=image",
            "-f",
            "label=evlabel=yes",
            "--format",
            "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ])
        .ok()
        .stdout;
    assert_eq!(
        out,
        format!("create {id} {id}\ntag {id} evbuilt:latest\ntag {id} evbuilt:two\n")
    );
    // Image `create` events are new in API 1.46: an older client gets only the tags.
    let old = d
        .http(
            "GET",
            &format!("/v1.45/events?since={since}&until={until}&filters=%7B%22type%22%3A%5B%22image%22%5D%7D"),
            None,
        )
        .unwrap();
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
    assert!(!old.contains(r#""Action":"create""#), "{old}");
    assert_eq!(old.matches(r#""Action":"tag""#).count(), 2, "{old}");
    d.finish();
}

/// Two `--volumes-from` with a volume at the same path: the later container's volume is
/// mounted (dockerd's `registerMountPoints` lets it replace the earlier one).
#[test]
fn volumes_from_the_later_container_wins_a_path() {
    let d = root_daemon!("docker");
    let ctx = dockerfile_context("FROM busybox\nVOLUME [\"/tmp/data\"]\n");
    d.classic_build(ctx.path(), &["-q", "-t", "vimage"]).ok();
    d.docker_out("run --name=data1 vimage true", &[]);
    d.docker_out("run --name=data2 vimage true", &[]);
    let name = |c: &str| {
        d.inspect("{{(index .Mounts 0).Name}}", c)
            .trim()
            .to_string()
    };
    let (v1, v2) = (name("data1"), name("data2"));
    assert_ne!(v1, v2);
    d.docker_out(
        "create --name=app --volumes-from=data1 --volumes-from=data2 busybox true",
        &[],
    );
    assert_eq!(name("app"), v2);
    assert_eq!(d.inspect("{{len .Mounts}}", "app").trim(), "1");
    // An explicit mount of the path still takes precedence over both.
    d.docker_out(
        "create --name=app2 --volumes-from=data1 --volumes-from=data2 -v named:/tmp/data busybox true",
        &[],
    );
    assert_eq!(name("app2"), "named");
    d.finish();
}

/// `docker volume ls -f dangling=…` takes only true/false values: anything else is dockerd's
/// "invalid filter" (a 400), not an empty list.
#[test]
fn volume_ls_refuses_a_dangling_value_that_is_no_boolean() {
    let d = root_daemon!("docker");
    d.docker_out("volume create used", &[]);
    d.docker_out("volume create unused", &[]);
    d.docker_out("create -v used:/v busybox true", &[]);
    d.docker(&["volume", "ls", "-f", "dangling=invalid"])
        .failed(
            1,
            "Error response from daemon: invalid filter 'dangling=[invalid]'\n",
        );
    let ls = |f: &str| d.docker_out("volume ls -q -f", &[f]);
    assert_eq!(ls("dangling=true"), "unused\n");
    assert_eq!(ls("dangling=0"), "used\n");
    d.finish();
}

/// `docker rmi` of an image deletes its parents in turn while they are untagged, unused and
/// childless (dockerd prunes them unless `--no-prune`).
#[test]
fn rmi_prunes_untagged_unused_parents() {
    let d = root_daemon!("docker");
    let busybox = d.inspect("{{.ID}}", "busybox").trim().to_string();
    let commit = |from: &str, file: &str| {
        let c = d.docker_out("run -d", &[from, "touch", file]);
        d.docker_out("wait", &[c.trim()]);
        let id = d.docker_out("commit", &[c.trim()]).trim().to_string();
        d.docker_out("rm", &[c.trim()]);
        id
    };
    let foo = commit("busybox", "/foo");
    let bar = commit(&foo, "/bar");
    assert_eq!(d.inspect("{{.Parent}}", &bar).trim(), foo);
    let out = d.docker_out("rmi", &[&bar]);
    assert!(out.contains(&format!("Deleted: {bar}")), "{out}");
    assert!(out.contains(&format!("Deleted: {foo}")), "{out}");
    // busybox is tagged: it stays.
    assert_eq!(d.inspect("{{.ID}}", "busybox").trim(), busybox);
    // --no-prune keeps the parent.
    let foo = commit("busybox", "/foo2");
    let bar = commit(&foo, "/bar2");
    let out = d.docker_out("rmi --no-prune", &[&bar]);
    assert!(!out.contains(&foo), "{out}");
    d.inspect("{{.ID}}", &foo);
    // A parent a container uses stays too.
    let bar = commit(&foo, "/bar3");
    d.docker_out("create", &[&foo]);
    let out = d.docker_out("rmi", &[&bar]);
    assert!(!out.contains(&foo), "{out}");
    d.inspect("{{.ID}}", &foo);
    d.finish();
}

/// moby integration-cli TestVolumesNoCopyData and TestRunNamedVolumesFromNotRemoved: a volume
/// taken with `--volumes-from` gets no copy of the new container's image content (dockerd's
/// `CopyData: false`), and an anonymous one stays anonymous: the `rm -v` of the last container
/// using it removes it, a named one is kept.
#[test]
fn volumes_from_mounts_get_no_copy_up_and_stay_anonymous() {
    let d = root_daemon!("docker");
    d.docker_line(
        "run --name datamaker busybox sh -c",
        &["mkdir /foo && touch /foo/bar"],
    )
    .ok();
    d.docker_line("commit datamaker dataimage", &[]).ok();
    d.docker_line("run --name vparent -v /foo busybox true", &[])
        .ok();
    let r = d.docker_line("run --rm --volumes-from vparent dataimage ls /foo/bar", &[]);
    assert_ne!(r.code, 0, "copied up: {}", r.stdout);
    assert!(
        r.stderr.contains("No such file or directory"),
        "{}",
        r.stderr
    );

    d.docker_line("volume create keepme", &[]).ok();
    d.docker_line("run --name vp2 -v keepme:/foo -v /bar busybox true", &[])
        .ok();
    let anon = d.inspect(
        "{{range .Mounts}}{{if eq .Destination \"/bar\"}}{{.Name}}{{end}}{{end}}",
        "vp2",
    );
    let anon = anon.trim().to_string();
    assert_eq!(anon.len(), 64, "{anon}");
    d.docker_line("run --name vc2 --volumes-from vp2 busybox true", &[])
        .ok();
    // Still used by the child: the parent's rm -v keeps it.
    d.docker_line("rm -v vp2", &[]).ok();
    let ls = d.docker_line("volume ls -q", &[]).ok().stdout;
    assert!(ls.contains(&anon), "{ls}");
    d.docker_line("rm -v vc2", &[]).ok();
    let ls = d.docker_line("volume ls -q", &[]).ok().stdout;
    assert!(!ls.contains(&anon), "{ls}");
    assert!(ls.lines().any(|l| l == "keepme"), "{ls}");
    d.finish();
}

/// moby integration-cli TestRunInvalidCgroupParent: a `--cgroup-parent` with `..` climbing
/// out is cleaned as runc cleans a cgroup path (rooted: `../../x` is `/x`), and the container
/// runs there; the runtime never sees `..`.
#[test]
fn a_cgroup_parent_with_dot_dots_is_cleaned() {
    let d = root_daemon!("docker");
    let name = berth_testkit::names::unique_name("cgp");
    for parent in [format!("../../../../{name}"), format!("/../../{name}/./")] {
        let r = d.docker_line(
            "run --rm --cgroup-parent",
            &[&parent, "busybox", "cat", "/proc/self/cgroup"],
        );
        let left = berth_testkit::cgroup::remove_cgroup_tree(&format!("/{name}"));
        let r = r.ok();
        assert!(left.is_empty(), "{left:?}");
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(":memory:") || l.starts_with("0::"))
            .unwrap_or_default();
        assert!(line.contains(&format!(":/{name}/")), "{}", r.stdout);
        assert!(!std::path::Path::new("/").join(&name).exists());
    }
    d.finish();
}

/// moby integration-cli TestRunWithBadDevice: `--device` of a directory passes every device
/// node below it (dockerd's `devicesFromPath`, as `--device /dev/dri`); a path that is neither
/// gets dockerd's error.
#[test]
fn a_device_directory_passes_its_device_nodes() {
    let d = root_daemon!("docker");
    let dir = d.path("devdir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("plain"), b"").unwrap();
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        &dir.join("sub/mynull"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    let out = d
        .docker_line(
            "run --rm --device",
            &[
                &format!("{}:/dev/mine", dir.display()),
                "busybox",
                "sh",
                "-c",
                "ls -l /dev/mine/sub/mynull && echo x > /dev/mine/sub/mynull && ls /dev/mine",
            ],
        )
        .ok()
        .stdout;
    assert!(out.starts_with('c'), "{out}");
    assert!(out.contains("1,   3"), "{out}");
    assert!(!out.contains("plain"), "{out}");
    d.docker_line("run --rm --device /etc busybox true", &[])
        .fails_with(
        "error gathering device information while adding custom device \"/etc\": not a device node",
    );
    d.finish();
}

/// moby integration-cli TestRunCreateVolumeEtc: a name server given with `--dns` is written as
/// given, a loopback one too (libnetwork's `TransformForLegacyNw` returns early for overrides;
/// only the host's loopback servers are replaced by the defaults).
#[test]
fn a_given_loopback_dns_server_is_kept() {
    let d = root_daemon!("docker");
    for extra in ["", "-v /etc"] {
        let out = d
            .docker_line(
                &format!("run --rm --dns=127.0.0.1 {extra} busybox cat /etc/resolv.conf"),
                &[],
            )
            .ok()
            .stdout;
        assert!(out.contains("nameserver 127.0.0.1"), "{out}");
        assert!(!out.contains("8.8.8.8"), "{out}");
    }
    d.finish();
}

/// `docker network ls -f dangling=…` refuses a value that is no boolean and a second value
/// with dockerd's own messages (its network filter, not the generic one).
#[test]
fn network_ls_dangling_values_are_checked_as_dockerd() {
    let d = root_daemon!("docker");
    d.docker(&["network", "ls", "-f", "dangling=x"]).failed(
        1,
        "Error response from daemon: invalid value for filter 'dangling', must be \"true\" (or \"1\"), or \"false\" (or \"0\")\n",
    );
    d.docker(&[
        "network",
        "ls",
        "-f",
        "dangling=true",
        "-f",
        "dangling=false",
    ])
    .failed(
        1,
        "Error response from daemon: got more than one value for filter key \"dangling\"\n",
    );
    d.docker_out("network create unusednet", &[]);
    let ls = d.docker_out("network ls --format {{.Name}} -f dangling=1", &[]);
    assert_eq!(ls, "unusednet\n");
    d.finish();
}

/// `docker images -f dangling=…` reads the value as dockerd's `GetBoolOrDefault`: only
/// `true`/`1`/`false`/`0`, anything else named in dockerd's words.
#[test]
fn images_dangling_filter_reads_booleans_as_dockerd() {
    let d = root_daemon!("docker");
    for v in ["TRUE", "x"] {
        d.docker(&["images", "-f", &format!("dangling={v}")])
            .failed(
                1,
                format!("Error response from daemon: invalid filter 'dangling=[{v}]'\n"),
            );
    }
    assert_eq!(d.docker_out("images -q -f dangling=true", &[]), "");
    assert!(!d.docker_out("images -q -f dangling=0", &[]).is_empty());
    d.finish();
}

/// moby integration-cli TestCreateWithWorkdir and TestRunWorkdirExistsAndIsFile: the working
/// directory is made at create (dockerd's `SetupWorkingDirectory`, 0755), so `docker cp` finds
/// it before any start; a file there refuses the create with dockerd's words (a 500), and
/// leaves no container behind.
#[test]
fn the_working_directory_is_made_at_create() {
    use std::os::unix::fs::PermissionsExt;
    let d = root_daemon!("docker");
    d.docker_out("create --name wdc -w /home/foo/bar busybox", &[]);
    let out = d.path("wd-out");
    d.docker(&["cp", "wdc:/home/foo/bar", out.to_str().unwrap()])
        .ok();
    let md = std::fs::metadata(&out).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    d.docker(&["create", "-w", "/bin/cat", "busybox"])
        .fails_with("Cannot mkdir: /bin/cat is not a directory");
    let r = d.post(
        "/containers/create",
        r#"{"Image":"busybox","Cmd":["true"],"WorkingDir":"/bin/cat"}"#,
    );
    assert_eq!(
        api_error(&r, 500),
        "Cannot mkdir: /bin/cat is not a directory"
    );
    let all = d.docker_out("ps -aq", &[]);
    assert_eq!(all.lines().count(), 1, "{all}");
    d.finish();
}

/// moby integration-cli TestRunNamedVolumesMountedAsShared: dockerd's `-v` modes. A propagation
/// on a named volume is refused by the mount validation (dockerd's words), as `nocopy` on a
/// bind; Docker Desktop's `cached`/`delegated` (compose files written on macOS) are taken and
/// ignored; two of one kind are no mode.
#[test]
fn bind_modes_are_validated_as_dockerd() {
    let d = root_daemon!("docker");
    d.docker(&["run", "--rm", "-v", "foo:/test:shared", "busybox", "true"])
        .fails_with("invalid volume specification: 'foo:/test:shared': invalid mount config for type \"volume\": field BindOptions must not be specified");
    let host = d.path("bm");
    std::fs::create_dir_all(&host).unwrap();
    let host = host.to_str().unwrap();
    d.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{host}:/b:nocopy"),
        "busybox",
        "true",
    ])
    .fails_with(
        "invalid mount config for type \"bind\": field VolumeOptions must not be specified",
    );
    d.docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{host}:/b:ro,rw"),
        "busybox",
        "true",
    ])
    .fails_with("invalid mode: ro,rw");
    let out = d
        .docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{host}:/b:cached"),
            "-v",
            "cachedvol:/v:delegated,ro",
            "busybox",
            "sh",
            "-c",
            "echo hi >/b/f && cat /b/f && ! touch /v/x 2>/dev/null",
        ])
        .ok()
        .stdout;
    assert_eq!(out.trim(), "hi");
    d.docker_out("volume rm cachedvol", &[]);
    d.finish();
}

/// moby integration-cli TestRunWithNetAliasOnDefaultNetworks (its CLI leaves the check to
/// the daemon): aliases and static addresses are refused on every predefined network, host
/// and none too, in dockerd's `validateEndpointSettings` words (several errors as a list);
/// a create names the network (`default` as `bridge`), a connect does not.
#[test]
fn predefined_networks_refuse_aliases_and_addresses() {
    let d = root_daemon!("docker");
    let alias = "network-scoped alias is supported only for containers in user defined networks";
    let create = |mode: &str, key: &str, ep: &str| {
        let body = format!(
            r#"{{"Image":"busybox","Cmd":["top"],"HostConfig":{{"NetworkMode":"{mode}"}},"NetworkingConfig":{{"EndpointsConfig":{{"{key}":{ep}}}}}}}"#
        );
        api_error(&d.post("/v1.51/containers/create", &body), 400)
    };
    for n in ["bridge", "host", "none"] {
        assert_eq!(
            create(n, n, r#"{"Aliases":["a1"]}"#),
            format!("invalid config for network {n}: invalid endpoint settings:\n{alias}")
        );
    }
    assert_eq!(
        create("default", "default", r#"{"Aliases":["a1"]}"#),
        format!("invalid config for network bridge: invalid endpoint settings:\n{alias}")
    );
    assert_eq!(
        create("host", "host", r#"{"Aliases":["a1"],"IPAMConfig":{"IPv4Address":"10.9.9.9"}}"#),
        format!("invalid config for network host: invalid endpoint settings:\n* user specified IP address is supported on user defined networks only\n* {alias}")
    );
    let id = d.docker_out("create busybox top", &[]);
    let r = d.post(
        "/networks/bridge/connect",
        &format!(
            r#"{{"Container":"{}","EndpointConfig":{{"Aliases":["a1"]}}}}"#,
            id.trim()
        ),
    );
    assert_eq!(
        api_error(&r, 400),
        format!("invalid endpoint settings:\n{alias}")
    );
    assert_eq!(d.docker_out("ps -aq", &[]).lines().count(), 1);
    d.finish();
}

/// moby integration-cli TestUserDefinedNetworkConnectDisconnectAlias: an alias (or a static
/// address) on a predefined network is refused as dockerd's `validateEndpointSettings` words
/// it, at connect before the container's own conflicts (already on the network), at create
/// naming the network.
#[test]
fn predefined_networks_refuse_aliases_before_the_endpoint_conflicts() {
    let d = root_daemon!("docker");
    d.docker_out("run -d --name first busybox top", &[]);
    d.docker_line("network connect --alias=any bridge first", &[])
        .failed(
            1,
            "Error response from daemon: invalid endpoint settings:\nnetwork-scoped alias is supported only for containers in user defined networks\n",
        );
    d.docker_line("network connect --ip=172.17.9.9 bridge first", &[])
        .failed(
            1,
            "Error response from daemon: invalid endpoint settings:\nuser specified IP address is supported on user defined networks only\n",
        );
    // Without settings: the endpoint conflict.
    d.docker_line("network connect bridge first", &[])
        .fails_with("endpoint with name first already exists in network bridge");
    let r = d.post(
        "/containers/create?name=aliased",
        r#"{"Image":"busybox","NetworkingConfig":{"EndpointsConfig":{"bridge":{"Aliases":["any"]}}}}"#,
    );
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.contains(r#""message":"invalid config for network bridge: invalid endpoint settings:\nnetwork-scoped alias is supported only for containers in user defined networks""#),
        "{r}"
    );
    d.finish();
}

/// moby integration-cli TestImportBadURL: `docker import <url>` downloads the archive (a
/// source without a scheme is `http://`, the default comment names the source); failures
/// are dockerd's: a name that does not resolve is a 404 in Go's words, an error status is
/// `failed to GET … with status …` with the body.
#[test]
fn import_downloads_from_a_url() {
    let d = root_daemon!("docker");
    let www = d.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(d.path("rootfs.tar"), www.join("rootfs.tar")).unwrap();
    let srv = berth_testkit::HttpServer::serve(&www);
    let src = format!("http://127.0.0.1:{}/rootfs.tar", srv.port);
    let out = d.docker_out(
        "import -c",
        &["CMD [\"echo\", \"from-url\"]", &src, "urlimp"],
    );
    // dockerd's status line, then the ID.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("Downloading from {src}"), "{out}");
    assert!(lines[1].starts_with("sha256:"), "{out}");
    assert_eq!(d.docker_out("run --rm urlimp", &[]), "from-url\n");
    assert_eq!(
        d.docker_out("history --no-trunc --format {{.Comment}} urlimp", &[]),
        format!("Imported from {src}\n")
    );
    // Through the API (the CLI reads a scheme-less source as a file): `http://` is implied.
    let r = d.post(
        &format!(
            "/images/create?fromSrc=127.0.0.1:{}/rootfs.tar&repo=urlimp2",
            srv.port
        ),
        "",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("Downloading from http://127.0.0.1:"), "{r}");
    d.docker_out("image inspect urlimp2", &[]);
    d.docker_line(
        "import",
        &[&format!("http://127.0.0.1:{}/missing.tar", srv.port)],
    )
    .fails_with(&format!(
        "Error response from daemon: failed to GET http://127.0.0.1:{}/missing.tar with status 404 File not found",
        srv.port
    ));
    d.docker_line("import https://nosuchdomain.invalid/bad", &[])
        .fails_with(
            "Error response from daemon: Get \"https://nosuchdomain.invalid/bad\": dial tcp: lookup nosuchdomain.invalid: no such host",
        );
    drop(srv);
    d.finish();
}

/// moby integration-cli TestRmiImgIDMultipleTag's race: committing (pausing) a container
/// whose process exits meanwhile never leaves it recorded as paused once it has stopped
/// (the suite's teardown could then not unpause it).
#[test]
fn a_container_exiting_during_a_commit_is_not_left_paused() {
    let d = root_daemon!("docker");
    for i in 0..15 {
        let id = d.docker_out("run -d --net=none busybox true", &[]);
        d.docker_out("commit", &[id.trim(), &format!("exiting:{i}")]);
    }
    d.docker_out("ps -aq", &[]).lines().for_each(|id| {
        d.docker_out("wait", &[id]);
        let st = d.inspect("{{.State.Running}} {{.State.Paused}} {{.State.Status}}", id);
        assert_eq!(st.trim(), "false false exited", "{id}");
    });
    d.finish();
}

/// moby integration-cli TestImportDisplay / TestEventsImageImport's race: `docker export`
/// right after `docker run -d … true` exports the container whether its process is still
/// there, has just exited (its exit not yet recorded), or is gone.
#[test]
fn export_of_a_container_exiting_meanwhile_succeeds() {
    let d = root_daemon!("docker");
    let out = d.path("x.tar");
    for _ in 0..25 {
        let id = d.docker_out("run -d --net=none busybox true", &[]);
        d.docker_out("export -o", &[out.to_str().unwrap(), id.trim()]);
        assert!(std::fs::metadata(&out).unwrap().len() > 10240);
        d.docker_out("rm -f", &[id.trim()]);
    }
    d.finish();
}
