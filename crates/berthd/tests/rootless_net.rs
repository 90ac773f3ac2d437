//! The network of a rootless berthd (`berthd::rootless_net`): the daemon's own network
//! namespace with a slirp4netns uplink, bridges and user networks in it, ports published on
//! the host, the host's loopback reached through 10.0.2.2, and all of it across a crash of the
//! daemon. A test user (berth-testkit's `TestUser`, removed afterwards with every process it
//! had) runs the daemon; the checks run from the host's namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use berth_testkit::busybox::BUSYBOX;
use berth_testkit::guard::{find_program, skip_unless};
use berth_testkit::user::{privileged_in_initial_ns, TestUser};
use berth_testkit::user_daemon::UserDaemon;
use common::*;

/// Skips (printing why) unless slirp4netns is installed and ordinary users may open
/// /dev/net/tun.
fn no_slirp4netns() -> bool {
    use std::os::unix::fs::PermissionsExt;
    let tun = std::fs::metadata("/dev/net/tun").map(|m| m.permissions().mode() & 0o006);
    skip_unless(
        find_program("slirp4netns").is_some(),
        "slirp4netns not installed (apt-get install slirp4netns)",
    ) || skip_unless(
        tun.is_ok_and(|m| m == 0o006),
        "/dev/net/tun is not open to ordinary users (as root: chmod 0666 /dev/net/tun)",
    )
}

/// A test user (names starting with `prefix`) for the slirp4netns tests; `None`, after a
/// skip line, without slirp4netns or an open /dev/net/tun.
fn slirp_user(prefix: &str) -> Option<TestUser> {
    if no_slirp4netns() {
        return None;
    }
    Some(TestUser::create(prefix).expect("create the test user"))
}

/// The body of `GET /` at `addr` (None: refused, reset or empty).
fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// Waits until `GET /` at `addr` answers `want`; asserts it does within 20 s.
#[track_caller]
fn assert_serves(addr: SocketAddr, want: &str, d: &UserDaemon) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(20), || {
        last = http_get(addr);
        last.as_deref() == Some(want)
    });
    assert!(
        ok,
        "{addr} answered {last:?}, not {want:?}; log: {}",
        d.log()
    );
}

/// A detached container `name` (with `opts`) where `busybox httpd` serves `text` on port 80;
/// started through `cli` (`berth` or `docker`).
fn run_httpd(d: &UserDaemon, cli: &str, name: &str, opts: &[&str], text: &str) {
    let script =
        format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    match cli {
        "docker" => d.docker(&args),
        _ => d.berth(&args),
    }
    .ok();
}

/// [`run_httpd`] through `berth` publishing a free port of the host as the container's 80
/// (after `opts`); waits until it serves `text` on 127.0.0.1; that address.
#[track_caller]
fn serve_on_free_port(d: &UserDaemon, name: &str, opts: &[&str], text: &str) -> SocketAddr {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let publish = format!("{}:80", addr.port());
    run_httpd(d, "berth", name, &[opts, &["-p", &publish]].concat(), text);
    assert_serves(addr, &format!("{text}\n"), d);
    addr
}

/// A one-connection-at-a-time HTTP server on the host's loopback answering `body`.
fn host_server(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Waits until the user has no process left (the helper goes with the last of its namespace).
#[track_caller]
fn assert_nothing_left(user: &TestUser) {
    let gone = wait_until(Duration::from_secs(20), || user.pids().is_empty());
    let left: Vec<String> = user
        .pids()
        .iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect();
    assert!(gone, "processes of the user left behind: {left:?}");
}

/// The user's slirp4netns processes.
fn helpers(user: &TestUser) -> Vec<i32> {
    user.pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "slirp4netns")
        })
        .collect()
}

#[test]
fn rootless_daemon_has_bridges_dns_and_published_ports() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap", "docker");
    let Some(user) = slirp_user("bdn") else {
        return;
    };
    let mut d = UserDaemon::with_busybox(&user);
    // The default bridge: a published port, reached from the host's namespace on its
    // loopback and on its other addresses.
    let port = serve_on_free_port(&d, "web", &[], "hello-rootless").port();
    let other = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if let Some(ip) = other
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .find(|a| !a.is_loopback())
    {
        assert_serves(SocketAddr::from((ip, port)), "hello-rootless\n", &d);
    }
    let out = d.berth_stdout(&["port", "web"]);
    assert!(out.contains(&format!("80/tcp -> 0.0.0.0:{port}")), "{out}");
    // The container is on a bridge of the daemon's namespace, not the host's network.
    let ip = d.berth_stdout(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.IPAddress}}",
        "web",
    ]);
    assert!(ip.trim().parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
    // The helper's exit FIFO is held by the daemon's processes (shims, proxies), never by a
    // container's.
    let pid = d.berth_stdout(&["inspect", "--format", "{{.State.Pid}}", "web"]);
    let holds_fifo = |pid: &str| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .any(|l| l.ends_with("slirp4netns.exit"))
    };
    assert!(!holds_fifo(pid.trim()), "the container holds the exit FIFO");
    assert!(
        user.pids().iter().any(|p| holds_fifo(&p.to_string())),
        "nothing holds the exit FIFO"
    );
    // A port on the host's loopback is reached through 10.0.2.2 (containers reach the outside
    // through the helper, masqueraded by the daemon's nftables).
    let hp = host_server("from-the-host");
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://10.0.2.2:{hp}/"),
    ]);
    assert_eq!(out, "from-the-host", "{}", d.log());
    // A user network: containers reach each other by name (the embedded DNS).
    d.berth(&["network", "create", "backend"]).ok();
    // `run --rm` of busybox on the user network.
    let on_backend = |cmd: &[&'static str]| {
        let mut args = vec!["run", "--rm", "--network", "backend", "busybox"];
        args.extend_from_slice(cmd);
        args
    };
    run_httpd(&d, "berth", "api", &["--network", "backend"], "from-api");
    let out = d.berth_stdout(&on_backend(&[
        "sh",
        "-c",
        "ping -c1 -W5 api >/dev/null && echo pinged && \
             for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://api/ && break; sleep 0.5; done",
    ]));
    assert_eq!(out, "pinged\nfrom-api\n", "{}", d.log());
    let out = d.berth_stdout(&on_backend(&["nslookup", "api"]));
    assert!(out.contains("Name:") && out.contains("api"), "{out}");
    // The docker CLI on the same daemon, on the user network; and a port published from it.
    let out = d.docker_stdout(&on_backend(&["wget", "-qO-", "http://api/"]));
    assert_eq!(out, "from-api\n");
    let port2 = free_port();
    run_httpd(
        &d,
        "docker",
        "web2",
        &[
            "--network",
            "backend",
            "-p",
            &format!("127.0.0.1:{port2}:80"),
        ],
        "from-docker",
    );
    assert_serves(
        SocketAddr::from(([127, 0, 0, 1], port2)),
        "from-docker\n",
        &d,
    );
    // `--network host` is the daemon's namespace (its tap0), not the host's.
    let out = d.berth_stdout(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "cat",
        "/proc/net/dev",
    ]);
    assert!(out.contains("tap0:"), "{out}");
    assert!(!std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .contains("tap0:"));
    // A port below net.ipv4.ip_unprivileged_port_start is a clear error.
    let start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if start > 80 {
        let r = d.berth(&["run", "--rm", "-p", "80:80", "busybox", "true"]);
        r.fails_with("privileged port 80")
            .fails_with("ip_unprivileged_port_start");
    }
    // A host port taken on the host fails the start clearly, and leaves nothing behind: the
    // next publication works.
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let tport = taken.local_addr().unwrap().port();
    let r = d.berth(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("{tport}:80"),
        "busybox",
        "sleep",
        "100",
    ]);
    r.fails_with("in use on the host");
    d.berth(&["rm", "-f", "clash"]).ok();
    drop(taken);
    run_httpd(
        &d,
        "berth",
        "web3",
        &["-p", &format!("{tport}:80")],
        "third",
    );
    assert_serves(SocketAddr::from(([127, 0, 0, 1], tport)), "third\n", &d);
    d.berth(&["rm", "-f", "web3"]).ok();
    // No process of the user holds a capability in the initial namespace (the helper included).
    let pids = user.pids();
    assert_eq!(privileged_in_initial_ns(&pids), Vec::<String>::new());
    // A removed container's port is no longer forwarded.
    d.berth(&["rm", "-f", "web"]).ok();
    let gone = wait_until(Duration::from_secs(10), || {
        http_get(SocketAddr::from(([127, 0, 0, 1], port))).is_none()
    });
    assert!(gone, "port {port} still answers after rm");
    d.berth(&["rm", "-f", "api", "web2"]).ok();
    d.berth(&["network", "rm", "backend"]).ok();
    d.stop();
    // The helper exits with the namespace's last process.
    assert_nothing_left(&user);
}

#[test]
fn rootless_published_ports_survive_a_daemon_crash() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap");
    let Some(user) = slirp_user("bdc") else {
        return;
    };
    let mut d = UserDaemon::with_busybox(&user);
    let addr = serve_on_free_port(&d, "keeps", &[], "still-served");
    let port = addr.port();
    // kill -9 of the daemon: the namespace, the helper and the port stay.
    d.crash();
    assert_serves(addr, "still-served\n", &d);
    drop(d);
    // The next daemon joins the namespace (and its helper): the port is still served, and
    // new ports are forwarded through the same helper.
    let mut d = UserDaemon::start(&user);
    assert_serves(addr, "still-served\n", &d);
    // A helper that dies is replaced by the next daemon, which forwards the ports again.
    d.crash();
    for p in helpers(&user) {
        berth_testkit::kill9(p);
    }
    let dead = wait_until(Duration::from_secs(10), || helpers(&user).is_empty());
    assert!(dead, "the helper survived SIGKILL");
    assert_eq!(http_get(addr), None, "port {port} answers without a helper");
    let mut d = UserDaemon::start(&user);
    assert_serves(addr, "still-served\n", &d);
    // The new helper is tied to the namespace's processes, not to the daemon that started
    // it: an orderly stop with only the earlier daemon's container running keeps it.
    d.stop();
    assert_serves(addr, "still-served\n", &d);
    let mut d = UserDaemon::start(&user);
    let out = d.berth_stdout(&["inspect", "--format", "{{.State.Running}}", "keeps"]);
    assert_eq!(out, "true\n");
    serve_on_free_port(&d, "new", &[], "after-restart");
    assert_eq!(helpers(&user).len(), 1, "one helper for the namespace");
    d.stop();
    assert_serves(addr, "still-served\n", &d);
    let d = UserDaemon::start(&user);
    d.berth(&["rm", "-f", "keeps", "new"]).ok();
    assert_eq!(privileged_in_initial_ns(&user.pids()), Vec::<String>::new());
    drop(d);
    assert_nothing_left(&user);
}

#[test]
fn rootless_network_comes_back_after_the_namespace_is_lost() {
    require_root!(BUSYBOX, "newuidmap", "newgidmap");
    let Some(user) = slirp_user("bdl") else {
        return;
    };
    let mut d = UserDaemon::with_busybox(&user);
    let addr = serve_on_free_port(&d, "back", &["--restart", "always"], "back-again");
    // Every process of the user killed (as after a reboot): the namespace and its helper are
    // gone; the next daemon makes new ones, with a new helper on the stale files' paths, and
    // starts the container there with its port forwarded again.
    d.stop();
    for p in user.pids() {
        berth_testkit::kill9(p);
    }
    assert!(wait_until(Duration::from_secs(10), || user
        .pids()
        .is_empty()));
    assert_eq!(http_get(addr), None);
    let d = UserDaemon::start(&user);
    assert_serves(addr, "back-again\n", &d);
    let out = d.berth_stdout(&["inspect", "--format", "{{.State.Status}}", "back"]);
    assert_eq!(out, "running\n", "{}", d.log());
    assert_eq!(helpers(&user).len(), 1, "one helper for the new namespace");
    d.berth(&["rm", "-f", "back"]).ok();
    drop(d);
    assert_nothing_left(&user);
}
