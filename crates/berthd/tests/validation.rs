//! Validation as dockerd's: bad resource settings, log options, ulimits and volume names are
//! refused when the container (or volume) is created, with dockerd's messages and a 400; CPU
//! shares out of the kernel's range are clamped; a plain-TCP API is warned about at every start.

mod common;
use common::*;

#[test]
fn bad_settings_are_refused_at_create_like_dockerd() {
    let d = root_daemon!();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let online = online.trim();
    // Through the docker CLI: each create fails (exit 1) with dockerd's message.
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cpu-shares", "-1"],
            "invalid CPU shares (-1): value must be a positive integer",
        ),
        (
            &["--cpuset-cpus", "0-4096"],
            &format!("Requested CPUs are not available - requested 0-4096, available: {online}"),
        ),
        (
            &["--cpuset-cpus", "1-x"],
            "Invalid value 1-x for cpuset cpus: invalid format: 1-x",
        ),
        (&["--cpuset-cpus", "3-1"], "invalid format: 3-1"),
        (
            &["--cpuset-mems", "0-63"],
            "Requested memory nodes are not available - requested 0-63",
        ),
        (&["-m", "4m"], "Minimum memory limit allowed is 6MB"),
        (
            &["-m", "64m", "--memory-reservation", "1m"],
            "Minimum memory reservation allowed is 6MB",
        ),
        (&["--log-opt", "max-size=12q"], "invalid suffix: 'q'"),
        (
            &["--log-opt", "max-file=0"],
            "max-file cannot be less than 1",
        ),
        (&["--ulimit", "nofile=-1:-1"], "ulimit nofile"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["create"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["busybox", "true"]);
        let r = d.docker(&args).fails_with(message);
        assert_eq!(r.code, 1, "{flags:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("Error response from daemon"),
            "{flags:?}: {}",
            r.stderr
        );
    }
    // Through the API: fields the docker CLI checks itself.
    let cases = [
        (
            r#"{"Image":"busybox","HostConfig":{"ShmSize":-1}}"#,
            "SHM size can not be less than 0",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"CpuShares":-1024}}"#,
            "invalid CPU shares (-1024)",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"Ulimits":[{"Name":"nofile","Soft":2048,"Hard":1024}]}}"#,
            "ulimit soft limit must be less than or equal to hard limit: nofile",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"Memory":1}}"#,
            "Minimum memory limit allowed is 6MB",
        ),
        (
            r#"{"Image":"busybox","HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"-5m"}}}}"#,
            "invalid size",
        ),
    ];
    for (body, message) in cases {
        let m = api_error(&d.post("/containers/create", body), 400);
        assert!(m.contains(message), "{body}: {m}");
    }
    // Nothing was created.
    let ps = d.docker(&["ps", "-aq"]).ok().stdout;
    assert_eq!(ps.trim(), "", "created anyway: {ps}");
    finish(d);
}

#[test]
fn cpu_shares_outside_the_kernels_range_are_clamped() {
    let d = root_daemon!();
    for (shares, applied) in [("1", "2"), ("1000000", "262144"), ("512", "512")] {
        let name = format!("shares{shares}");
        d.docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "--cpu-shares",
            shares,
            "busybox",
            "sleep",
            "60",
        ])
        .ok();
        let id = d.inspect("{{.Id}}", &name).trim().to_string();
        let file = format!("/sys/fs/cgroup/cpu{}/{id}/cpu.shares", d.cgroup_parent);
        let v2 = format!("/sys/fs/cgroup{}/{id}/cpu.weight", d.cgroup_parent);
        match std::fs::read_to_string(&file) {
            Ok(got) => assert_eq!(got.trim(), applied, "--cpu-shares {shares}"),
            // A unified hierarchy: the weight of the clamped shares.
            Err(_) => {
                let w = std::fs::read_to_string(&v2).unwrap();
                let s: u64 = applied.parse().unwrap();
                assert_eq!(w.trim(), (1 + (s - 2) * 9999 / 262142).to_string());
            }
        }
        // The container keeps what was asked for, as dockerd's inspect shows it.
        assert_eq!(d.inspect("{{.HostConfig.CpuShares}}", &name).trim(), shares);
        d.docker(&["rm", "-f", &name]).ok();
    }
    finish(d);
}

#[test]
fn an_overlong_volume_name_is_a_bad_request() {
    let d = root_daemon!();
    let long = "v".repeat(300);
    let m = api_error(
        &d.post("/volumes/create", &format!(r#"{{"Name":"{long}"}}"#)),
        400,
    );
    assert!(m.contains("too long"), "{m}");
    // As a named volume of a new container too.
    let body = format!(r#"{{"Image":"busybox","HostConfig":{{"Binds":["{long}:/data"]}}}}"#);
    let m = api_error(&d.post("/containers/create", &body), 400);
    assert!(m.contains("too long"), "{m}");
    let r = d
        .docker(&["volume", "create", &long])
        .fails_with("too long");
    assert_eq!(r.code, 1);
    assert_eq!(d.docker(&["volume", "ls", "-q"]).ok().stdout.trim(), "");
    finish(d);
}

#[test]
fn plain_tcp_is_warned_about_at_every_start() {
    require_root!();
    let port = free_port();
    let mut d = Daemon::with_args(&[
        "-H".into(),
        format!("tcp://127.0.0.1:{port}"),
        "--tls=false".into(),
    ]);
    let warned = |text: &str| {
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("without encryption"))
            .count()
    };
    let log = |d: &Daemon| std::fs::read_to_string(d.path("berthd.log")).unwrap_or_default();
    let first = log(&d);
    assert_eq!(warned(&first), 1, "{first}");
    assert!(
        first.contains(&format!("tcp://127.0.0.1:{port}")) && first.contains("root access"),
        "{first}"
    );
    d.restart();
    let second = log(&d);
    assert_eq!(warned(&second), 2, "{second}");
    finish(d);
}
