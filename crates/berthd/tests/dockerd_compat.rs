//! Differences from dockerd found by running the same docker CLI (28) command sequences
//! against a private dockerd and berthd, each pinned here with the answer dockerd gives (its
//! current source where 20.10 and 28 differ): container list filters and columns, stopping a
//! paused container, kill's errors, a process's groups and `/.dockerenv`, environment
//! variables given without a value, an exec's missing working directory, and create-time
//! checks (stop signal, restart policy, capabilities, mounts, devices).
//!
//! Needs root, `/bin/busybox` and `docker` on PATH; every test runs its own daemon.

mod common;
use common::*;

/// `docker ps` names, one line each, for `args`.
#[track_caller]
fn ps(d: &Daemon, args: &str) -> Vec<String> {
    d.docker_line(&format!("ps {args}"), &["--format", "{{.Names}}"])
        .ok()
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn container_list_filters_and_columns() {
    let d = root_daemon!("docker");
    d.docker_out("run -d --name p1 --label k=v busybox sleep 100", &[]);
    d.docker_line("run --name p2 --label k=w busybox sh -c", &["exit 3"]);
    d.docker_out("create --name p3 busybox", &[]);
    // `before` and `since` leave the named container out.
    assert_eq!(ps(&d, "-a --filter before=p3"), ["p2", "p1"]);
    assert_eq!(ps(&d, "-a --filter since=p1"), ["p3", "p2"]);
    d.docker_line("ps -a --filter before=nosuch", &[])
        .failed(1, "Error response from daemon: No such container: nosuch\n");
    // An image nothing runs (or no image at all) matches nothing.
    assert!(ps(&d, "-a --filter ancestor=nosuch").is_empty());
    assert_eq!(ps(&d, "-a --filter ancestor=busybox").len(), 3);
    // Names are regular expressions, against the name with and without its slash.
    assert_eq!(ps(&d, "-a --filter name=^p1$"), ["p1"]);
    assert_eq!(ps(&d, "-a --filter name=^/p[23]"), ["p3", "p2"]);
    // The values of one key are alternatives; keys all apply.
    assert_eq!(
        ps(&d, "-a --filter status=exited --filter status=created"),
        ["p3", "p2"]
    );
    assert!(ps(&d, "-a --filter status=exited --filter label=k=v").is_empty());
    assert_eq!(ps(&d, "-a --filter exited=3"), ["p2"]);
    assert_eq!(ps(&d, "-a --filter health=none").len(), 3);
    assert_eq!(ps(&d, "-a --filter network=bridge").len(), 3);
    assert!(ps(&d, "-a --filter volume=/x").is_empty());
    // Unknown keys and bad values are refused.
    d.docker_line("ps -a --filter bogus=1", &[])
        .failed(1, "Error response from daemon: invalid filter 'bogus'\n");
    d.docker_line("ps -a --filter status=bogus", &[]).failed(
        1,
        "Error response from daemon: invalid filter 'status=bogus': invalid value for state \
         (bogus): must be one of created, running, paused, restarting, removing, exited, dead\n",
    );
    // `-l` (limit 1) looks at stopped containers too.
    assert_eq!(ps(&d, "-l"), ["p3"]);
    assert_eq!(ps(&d, "-n 2"), ["p3", "p2"]);
    // Arguments holding a space are quoted in COMMAND.
    let cmd = d.docker_out(
        "ps -a --no-trunc --filter name=p2",
        &["--format", "{{.Command}}"],
    );
    assert_eq!(cmd.trim(), r#""sh -c 'exit 3'""#);
    // `-s`: the writable layer and the virtual size (image included).
    let size = d.docker_out("ps -s --filter name=p1", &["--format", "{{.Size}}"]);
    assert!(size.contains(" (virtual "), "{size}");
    d.docker_out("rm -f p1 p2 p3", &[]);
    finish(d);
}

#[test]
fn paused_container_stops_and_kill_errors() {
    let d = root_daemon!("docker");
    d.docker_out("run -d --name pz busybox sleep 100", &[]);
    d.docker_out("pause pz", &[]);
    // dockerd thaws a paused container it signals to stop.
    d.docker_out("stop -t 1 pz", &[]);
    assert_eq!(
        d.inspect("{{.State.Status}} {{.State.Paused}}", "pz")
            .trim(),
        "exited false"
    );
    let id = d.inspect("{{.Id}}", "pz");
    d.docker_line("unpause pz", &[]).failed(
        1,
        format!(
            "Error response from daemon: Container {} is not paused\n",
            id.trim()
        ),
    );
    // The same through kill.
    d.docker_out("start pz", &[]);
    d.docker_out("pause pz", &[]);
    d.docker_out("kill pz", &[]);
    assert_eq!(d.inspect("{{.State.Status}}", "pz").trim(), "exited");
    // kill's errors are wrapped by the router; the signal is checked before the container.
    d.docker_line("kill nosuch", &[]).failed(
        1,
        "Error response from daemon: cannot kill container: nosuch: No such container: nosuch\n",
    );
    d.docker_line("kill -s NOSIG nosuch", &[]).failed(
        1,
        "Error response from daemon: cannot kill container: nosuch: Invalid signal: NOSIG\n",
    );
    d.docker_out("rm pz", &[]);
    finish(d);
}

#[test]
fn process_groups_env_and_dockerenv() {
    let d = root_daemon!("docker");
    // Additional groups: the primary group, then the groups listing the user.
    assert_eq!(
        d.docker_out("run --rm -u nobody busybox id", &[]),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    );
    assert_eq!(
        d.docker_out("run --rm -u 1000 busybox id", &[]),
        "uid=1000 gid=0(root) groups=0(root)\n"
    );
    // `-e NAME` without a value (and not set for the CLI) unsets the variable.
    let out = d
        .docker_cmd(&[
            "run",
            "--rm",
            "-e",
            "A=1",
            "-e",
            "BERTH_UNSET",
            "busybox",
            "sh",
            "-c",
            "echo \"$A|${BERTH_UNSET-unset}\"",
        ])
        .env_remove("BERTH_UNSET")
        .run()
        .ok()
        .stdout;
    assert_eq!(out, "1|unset\n");
    // /.dockerenv exists, and is no change of the container's.
    d.docker_out("run --name de busybox ls /.dockerenv", &[]);
    let diff = d.docker_out("diff de", &[]);
    assert!(!diff.contains("dockerenv"), "{diff}");
    d.docker_out("rm de", &[]);

    d.docker_out("run -d --name ex busybox sleep 100", &[]);
    let out = d
        .docker_cmd(&[
            "exec",
            "-e",
            "B=2",
            "-e",
            "BERTH_UNSET",
            "ex",
            "sh",
            "-c",
            "echo $B-${BERTH_UNSET-unset}",
        ])
        .env_remove("BERTH_UNSET")
        .run()
        .ok()
        .stdout;
    assert_eq!(out, "2-unset\n");
    assert_eq!(
        d.docker_out("exec -u nobody ex id", &[]).trim(),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    // An exec's working directory must exist (the container's own is made).
    // (The CLI prints the runtime's error on standard output.)
    let r = d.docker_line("exec -w /nonexist ex pwd", &[]);
    assert_eq!(r.code, 126, "{r:?}");
    r.stdout_contains("chdir to cwd (\"/nonexist\") set in config.json failed");
    assert_eq!(d.docker_out("exec -w /tmp ex pwd", &[]), "/tmp\n");
    d.docker_out("rm -f ex", &[]);
    finish(d);
}

#[test]
fn create_time_checks() {
    let d = root_daemon!("docker");
    d.docker_line("run --rm --stop-signal NOSIG busybox true", &[])
        .failed_with(125, "Error response from daemon: Invalid signal: NOSIG");
    d.docker_line("run --rm --cap-add NOSUCH busybox true", &[])
        .failed_with(
            125,
            "Error response from daemon: invalid CapAdd: unknown capability: \"CAP_NOSUCH\"",
        );
    d.docker_line("run --rm --cap-drop NOSUCH busybox true", &[])
        .failed_with(
            125,
            "Error response from daemon: invalid CapDrop: unknown capability: \"CAP_NOSUCH\"",
        );
    d.docker_line("run --rm --mount type=volume,dst=/x,readonly busybox true", &[])
        .failed_with(
            125,
            "invalid mount config for type \"volume\": must not set ReadOnly mode when using anonymous volumes",
        );
    d.docker_line("run --rm -v /tmp:relative busybox true", &[]).failed_with(
        125,
        "invalid volume specification: '/tmp:relative': invalid mount config for type \"bind\": invalid mount path: 'relative' mount path must be absolute",
    );
    // Go's error text, which the CLI turns into 127.
    d.docker_line("run --rm --device /dev/nosuch busybox true", &[]).failed_with(
        127,
        "error gathering device information while adding custom device \"/dev/nosuch\": no such file or directory",
    );
    // An image of another platform is not found (the CLI would pull the wanted one).
    let body = r#"{"Image":"busybox","Cmd":["true"]}"#;
    let r = d
        .http(
            "POST",
            "/v1.44/containers/create?platform=linux/arm64",
            Some(body),
        )
        .unwrap();
    assert!(
        r.starts_with("HTTP/1.1 404")
            && r.contains("image with reference busybox was found but does not match the specified platform: wanted linux/arm64, actual: linux/amd64"),
        "{r}"
    );
    d.docker_out("run --rm --platform linux/amd64 busybox true", &[]);
    d.docker_out("run -d --name u1 busybox sleep 100", &[]);
    d.docker_line("update --restart bogus u1", &[])
        .failed_with(1, "invalid restart policy: unknown policy 'bogus'");
    assert_eq!(
        d.inspect("{{.HostConfig.RestartPolicy.Name}}", "u1").trim(),
        "no"
    );
    d.docker_out("create --name u2 busybox", &[]);
    let id2 = d.inspect("{{.Id}}", "u2");
    d.docker_line("rename u1 u2", &[]).failed(
        1,
        format!(
            "Error response from daemon: Error when allocating new name: Conflict. The container name \"/u2\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.\nError: failed to rename container named u1\n",
            id2.trim()
        ),
    );
    d.docker_line("cp u1:/nosuch -", &[]).failed(
        1,
        "Error response from daemon: Could not find the file /nosuch in container u1\n",
    );
    d.docker_line("network ls --filter bogus=1", &[])
        .failed(1, "Error response from daemon: invalid filter 'bogus'\n");
    assert_eq!(
        d.docker_out("network ls --filter name=^bri", &["--format", "{{.Name}}"]),
        "bridge\n"
    );
    d.docker_out("rm -f u1 u2", &[]);
    finish(d);
}

#[test]
fn prune_filters() {
    let d = root_daemon!("docker");
    d.docker_out("create --name keep busybox", &[]);
    // Unknown keys are refused before anything is removed.
    d.docker_line("container prune -f --filter bogus=1", &[])
        .failed(1, "Error response from daemon: invalid filter 'bogus'\n");
    d.docker_line("image prune -f --filter bogus=1", &[])
        .failed(1, "Error response from daemon: invalid filter 'bogus'\n");
    assert_eq!(ps(&d, "-a"), ["keep"]);
    d.docker_out("rm keep", &[]);
    // `until`: only images made before then (busybox was just imported).
    d.docker_out("image prune -a -f --filter until=1h", &[]);
    d.docker_out("image inspect busybox", &[]);
    // `label`: only images carrying it.
    d.docker_out("image prune -a -f --filter label=nosuch", &[]);
    d.docker_out("image inspect busybox", &[]);
    let out = d.docker_out("image prune -a -f --filter until=2100-01-01T00:00:00Z", &[]);
    assert!(out.contains("untagged: busybox:latest"), "{out}");
    finish(d);
}

/// A plain `docker create` as dockerd 28 records it: the CLI's "unlimited" pids limit (0) and
/// "default" swappiness (-1) are unset (`null`), the masked and read-only paths are the
/// defaults, and `GraphDriver.Data` names the overlay directories that exist.
#[test]
fn inspect_of_a_plain_container_unset_fields_and_graph_driver() {
    let d = root_daemon!("docker");
    d.docker_out("create --name plain busybox", &[]);
    let f = |c: &str, t: &str| d.docker_out(&format!("inspect {c} --format"), &[t]);
    let v2 = std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    assert_eq!(
        f(
            "plain",
            "{{json .HostConfig.PidsLimit}} {{json .HostConfig.MemorySwappiness}} {{json .HostConfig.OomKillDisable}} {{.HostConfig.CgroupnsMode}}"
        )
        .trim(),
        if v2 { "null null false private" } else { "null null false host" }
    );
    // A memory limit without a swap limit: twice as much swap, recorded.
    d.docker_out("create --name mem -m 32m busybox", &[]);
    assert_eq!(f("mem", "{{.HostConfig.MemorySwap}}").trim(), "67108864");
    let masked = f("plain", "{{json .HostConfig.MaskedPaths}}");
    assert!(masked.contains("\"/proc/kcore\""), "{masked}");
    let ro = f("plain", "{{json .HostConfig.ReadonlyPaths}}");
    assert!(ro.contains("\"/proc/sys\""), "{ro}");
    // Given values stay; a privileged container has no default paths.
    d.docker_out("create --name set --pids-limit 5 --privileged busybox", &[]);
    assert_eq!(
        f(
            "set",
            "{{json .HostConfig.PidsLimit}} {{json .HostConfig.MaskedPaths}}"
        )
        .trim(),
        "5 null"
    );
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&f("plain", "{{json .GraphDriver.Data}}")).unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["LowerDir", "MergedDir", "UpperDir", "WorkDir"]
    );
    for k in ["UpperDir", "WorkDir"] {
        assert!(std::path::Path::new(&data[k]).is_dir(), "{k}: {data:?}");
    }
    let lowers: Vec<&str> = data["LowerDir"].split(':').collect();
    assert!(
        lowers.iter().all(|l| std::path::Path::new(l).is_dir()),
        "{lowers:?}"
    );
    assert!(
        lowers
            .iter()
            .any(|l| std::path::Path::new(l).join("bin").is_dir()),
        "{lowers:?}"
    );
    d.docker_out("rm plain set mem", &[]);
    finish(d);
}

/// The events of an attached `docker run`, then `rm`, as dockerd 28 emits them: the client's
/// `attach` before the start, and the network's `disconnect` (the container's cleanup)
/// before its `die`.
#[test]
fn events_of_an_attached_run() {
    let d = root_daemon!("docker");
    d.docker_out("run --name ev busybox true", &[]);
    let id = d.docker_out("inspect ev --format", &["{{.Id}}"]);
    d.docker_out("rm ev", &[]);
    let id2 = d
        .docker_line(
            "run -d --name ev2 busybox sh -c",
            &["trap 'exit 0' TERM; sleep 100 & wait"],
        )
        .ok()
        .stdout;
    d.docker_out("exec ev2 true", &[]);
    d.docker_out("stop ev2", &[]);
    d.docker_out("rm ev2", &[]);
    let until = format!("{}", berth_util::time::now().0 + 1);
    // Every event so far, with `filters`, in `format`.
    let events = |filters: &[&str], format: &str| {
        let mut args = vec!["events", "--since", "0", "--until", &until];
        args.extend(filters);
        args.extend(["--format", format]);
        d.docker(&args).ok().stdout
    };
    let out = events(
        &[],
        "{{.Type}} {{.Action}}|{{.Actor.ID}}|{{.Actor.Attributes.container}}",
    );
    let of = |id: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.contains(id.trim()))
            .map(|l| l.split('|').next().unwrap_or_default().to_string())
            .collect()
    };
    let ours = of(&id);
    assert_eq!(
        ours,
        [
            "container create",
            "container attach",
            "network connect",
            "container start",
            "network disconnect",
            "container die",
            "container destroy"
        ],
        "{out}"
    );
    // The die's attributes: the exit code and how long it ran, in seconds.
    // (By ID: a container filter is a prefix of the name, and `ev` is one of `ev2`.)
    let by_id = format!("container={}", id.trim());
    let die = events(
        &["--filter", "event=die", "--filter", &by_id],
        "{{.Actor.Attributes.exitCode}} {{.Actor.Attributes.execDuration}}",
    );
    assert_eq!(die, "0 0\n");
    // A detached run, an exec, a stop (the signal's kill, the cleanup, the die, then the
    // stop).
    assert_eq!(
        of(&id2),
        [
            "container create",
            "network connect",
            "container start",
            "container exec_create: true",
            "container exec_start: true",
            "container exec_die",
            "container kill",
            "network disconnect",
            "container die",
            "container stop",
            "container destroy"
        ],
        "{out}"
    );
    finish(d);
}

/// `docker cp CONTAINER:path -` as dockerd 28 writes it (Go's tar writer, PAX format): ustar
/// headers, the file type bits in the mode, directories named with a slash, no user names, a
/// name too long for the header in a `PaxHeaders.0` extended header, hard links to the first.
#[test]
fn cp_out_tar_headers() {
    let d = root_daemon!("docker");
    let long = "l".repeat(120);
    d.docker_line("run --name cpt busybox sh -c", &[&format!(
        "mkdir -p /d/sub && echo hi > /d/f && chmod 640 /d/f && ln -s f /d/s && ln /d/f /d/h && echo x > /d/{long}"
    )])
    .ok();
    let out = d.docker_cmd(&["cp", "cpt:/d", "-"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut a = tar::Archive::new(out.stdout.as_slice());
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        assert_eq!(h.as_ustar().map(|u| u.magic), Some(*b"ustar\0"), "{h:?}");
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let pax: Vec<String> = match e.pax_extensions().unwrap() {
            Some(x) => x.map(|r| r.unwrap().key().unwrap().to_string()).collect(),
            None => Vec::new(),
        };
        seen.push((path, format!("{:o}", h.mode().unwrap()), link, pax));
    }
    seen.sort();
    let long_path = format!("d/{long}");
    let want: Vec<(String, String, Option<String>, Vec<String>)> = vec![
        ("d/".into(), "40755".into(), None, vec![]),
        ("d/f".into(), "100640".into(), None, vec![]),
        ("d/h".into(), "100640".into(), Some("d/f".into()), vec![]),
        (long_path, "100644".into(), None, vec!["path".into()]),
        ("d/s".into(), "120777".into(), Some("f".into()), vec![]),
        ("d/sub/".into(), "40755".into(), None, vec![]),
    ];
    let mut want = want;
    want.sort();
    assert_eq!(seen, want);
    // The extended header's own name, as Go writes it.
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(raw.contains("d/PaxHeaders.0/lll"), "no PaxHeaders.0 entry");
    d.docker_out("rm cpt", &[]);
    finish(d);
}

/// A host port that cannot be published, in dockerd 28's words: its port allocator's when
/// one of its containers has it (naming the address it has it on), the bridge driver's with
/// the binding and the system's error when another program has it or the address is not the
/// host's.
#[test]
fn published_port_failures_in_dockerds_words() {
    let d = root_daemon!("docker");
    let port = free_port();
    let fails = |p: &str| {
        let r = d.docker_line("run --rm -p", &[p, "busybox", "true"]);
        let err = r.stderr.clone();
        assert_ne!(r.code, 0, "{err}");
        err
    };
    d.docker_line(
        "run -d --name holder -p",
        &[&format!("127.0.0.1:{port}:80"), "busybox", "sleep", "60"],
    )
    .ok();
    // Every address overlaps the one the other container has.
    let err = fails(&format!("{port}:80"));
    assert!(
        err.contains(&format!(
            "Bind for 127.0.0.1:{port} failed: port is already allocated"
        )),
        "{err}"
    );
    d.docker_out("rm -f holder", &[]);
    let other = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let err = fails(&format!("127.0.0.1:{port}:80"));
    let binding = binding_text(&err);
    assert_eq!(
        binding,
        format!(
            "failed to bind host port for 127.0.0.1:{port}:<ip>:80/tcp: address already in use"
        ),
        "{err}"
    );
    drop(other);
    let err = fails(&format!("192.0.2.77:{port}:80"));
    assert_eq!(
        binding_text(&err),
        format!("failed to bind host port for 192.0.2.77:{port}:<ip>:80/tcp: cannot assign requested address"),
        "{err}"
    );
    d.finish();
}

/// The `failed to bind host port …` part of a daemon error, the container's address as
/// `<ip>`.
fn binding_text(err: &str) -> String {
    let start = err.find("failed to bind host port").unwrap_or(0);
    let line = err[start..].lines().next().unwrap_or("");
    let mut parts: Vec<&str> = line.splitn(4, ':').collect();
    if parts.len() == 4 {
        // `…for HOSTIP` `PORT` `CTRIP` `80/tcp: why`
        parts[2] = "<ip>";
    }
    parts.join(":")
}
