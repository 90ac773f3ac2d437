//! The network of Dockerfile RUN steps (issue 16, item 1): never the host's unless asked for.
//! A RUN step gets a network namespace of its own on the default bridge (Docker's classic
//! builder), on the network the build names (`--network NAME|ID`) or loopback only
//! (`none`); `--network host` alone shares the host's. Checked through the docker CLI's
//! classic builder (`DOCKER_BUILDKIT=0`, `POST /build`) and through buildx (BuildKit's API),
//! which share berth-build's executor.
mod common;

use berth_testkit::unique_name;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An HTTP server on the host's 127.0.0.1 that answers `host-secret` (stopped on drop).
struct HostService {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl HostService {
    fn start() -> HostService {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        std::thread::spawn(move || {
            while !s2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = c.read(&mut buf);
                        let _ = c
                            .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nhost-secret");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        HostService { port, stop }
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn host_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

/// A Dockerfile whose RUN records its namespace, its interfaces, whether the host's
/// 127.0.0.1 service answers, and its /etc files.
fn probe_dockerfile(port: u16) -> String {
    format!(
        "FROM busybox\n\
         RUN readlink /proc/self/ns/net > /ns && \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ' > /ifaces && \
         ((echo GET | nc -w 3 127.0.0.1 {port} | grep -o host-secret) || echo unreachable) > /reach && \
         cat /etc/hosts > /hosts-file && cat /etc/hostname > /hostname-file && \
         cat /etc/resolv.conf > /resolv-file\n"
    )
}

/// The docker CLI's classic builder (`POST /build`).
fn classic_build(d: &Daemon, dir: &Path, args: &[&str]) -> Run {
    d.classic_build(dir, &[&["--no-cache"], args].concat())
}

fn cat(d: &Daemon, image: &str, file: &str) -> String {
    d.docker_out("run --rm", &[image, "cat", file])
}

/// The interfaces the probe's RUN step saw, without the fallback devices the kernel puts
/// in every new namespace when tunnel modules are loaded.
fn ifaces(d: &Daemon, image: &str) -> Vec<String> {
    const FALLBACK: &[&str] = &[
        "tunl0", "sit0", "ip6tnl0", "gre0", "gretap0", "erspan0", "ip_vti0", "ip6_vti0", "ip6gre0",
    ];
    cat(d, image, "/ifaces")
        .split_whitespace()
        .filter(|i| !FALLBACK.contains(i))
        .map(str::to_string)
        .collect()
}

#[test]
fn run_steps_get_their_own_network_namespace() {
    let d = root_daemon!();
    let svc = HostService::start();
    let host = host_netns();
    let dir = d.context("c", &[("Dockerfile", &probe_dockerfile(svc.port))]);

    // Default: the default bridge, a namespace of its own, the host's loopback unreachable.
    classic_build(
        &d,
        &dir,
        &["-t", "net:default", "--add-host", "extra.test:10.1.2.3"],
    )
    .ok();
    let ns = cat(&d, "net:default", "/ns");
    assert!(ns.starts_with("net:["), "{ns}");
    assert_ne!(
        ns.trim(),
        host,
        "a RUN step shares the host's network namespace"
    );
    assert_eq!(cat(&d, "net:default", "/reach").trim(), "unreachable");
    assert_eq!(ifaces(&d, "net:default"), ["eth0", "lo"]);
    let hosts = cat(&d, "net:default", "/hosts-file");
    assert!(hosts.contains("10.1.2.3\textra.test"), "{hosts}");
    let hostname = cat(&d, "net:default", "/hostname-file");
    assert_eq!(hostname.trim().len(), 12, "{hostname}");
    // The step's own address on the bridge is in its /etc/hosts with its name.
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("10.") && l.ends_with(hostname.trim())),
        "{hosts}"
    );
    assert!(cat(&d, "net:default", "/resolv-file").contains("nameserver"));
    // The mount points of /etc/hosts & co. are not part of the image: the run's are.
    let etc = d.docker_out("run --rm net:default cat /etc/hostname", &[]);
    assert_ne!(etc.trim(), hostname.trim());

    // `--network host`: only when asked for.
    classic_build(&d, &dir, &["-t", "net:host", "--network", "host"]).ok();
    assert_eq!(cat(&d, "net:host", "/ns").trim(), host);
    assert_eq!(cat(&d, "net:host", "/reach").trim(), "host-secret");

    // `none`: loopback only; a step that needs the network fails.
    classic_build(&d, &dir, &["-t", "net:none", "--network", "none"]).ok();
    assert_ne!(cat(&d, "net:none", "/ns").trim(), host);
    assert_eq!(cat(&d, "net:none", "/reach").trim(), "unreachable");
    // An empty namespace: no interface but loopback.
    assert_eq!(ifaces(&d, "net:none"), ["lo"]);
    let gw = d.inspect("{{(index .IPAM.Config 0).Gateway}}", "bridge");
    let ping_dockerfile = format!("FROM busybox\nRUN ping -c1 -W2 {}\n", gw.trim());
    let ping = d.context("ping", &[("Dockerfile", &ping_dockerfile)]);
    classic_build(&d, &ping, &["--network", "none"]).fails_with("returned a non-zero code");
    classic_build(&d, &ping, &[]).ok();

    // A user network by name and by id: its containers are reachable by name (embedded DNS).
    let net = unique_name("bnet");
    let id = d.docker_out("network create", &[&net]).trim().to_string();
    d.docker_out(
        "run -d --name",
        &[
            &format!("{net}-t"),
            "--network",
            &net,
            "--network-alias",
            "pingtarget.test",
            "busybox",
            "sleep",
            "60",
        ],
    );
    let by_name = d.context(
        "byname",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN ping -c1 -W2 pingtarget.test\n",
        )],
    );
    classic_build(&d, &by_name, &["--network", &net]).ok();
    classic_build(&d, &by_name, &["--network", &id[..12]]).ok();
    // Not on the default bridge.
    classic_build(&d, &by_name, &[]).fails_with("returned a non-zero code");
    classic_build(&d, &by_name, &["--network", "no-such-network"]).fails_with("no-such-network");
    d.docker_out("rm -f", &[&format!("{net}-t")]);
    // The build's endpoints are gone: the network can be removed.
    d.docker_out("network rm", &[&net]);
    drop(svc);
    d.finish();
}

#[test]
fn buildkit_run_steps_get_their_own_network_namespace() {
    require_root!();
    let Some(d) = Daemon::with_cli_plugin("docker-buildx") else {
        return;
    };
    let svc = HostService::start();
    let host = host_netns();
    let dir = d.context("c", &[("Dockerfile", &probe_dockerfile(svc.port))]);
    let build = |args: &[&str]| {
        d.buildkit_cmd(&[&["buildx", "build", "--no-cache", "--load"], args].concat())
            .arg(&dir)
            .stdin(Stdio::null())
            .run()
    };
    build(&["-t", "bk:default", "--add-host", "extra.test=10.1.2.3"]).ok();
    assert_ne!(cat(&d, "bk:default", "/ns").trim(), host);
    assert_eq!(cat(&d, "bk:default", "/reach").trim(), "unreachable");
    assert!(cat(&d, "bk:default", "/hosts-file").contains("10.1.2.3\textra.test"));
    build(&["-t", "bk:host", "--network", "host"]).ok();
    assert_eq!(cat(&d, "bk:host", "/ns").trim(), host);
    assert_eq!(cat(&d, "bk:host", "/reach").trim(), "host-secret");
    drop(svc);
    d.finish();
}

/// moby integration-cli TestBuildNetContainer: `--network container:<name|id>` runs the
/// steps in a running container's network namespace (its loopback services answer); a
/// container that is not running is refused.
#[test]
fn run_steps_join_a_running_containers_network() {
    let d = root_daemon!();
    let name = unique_name("netc");
    let id = d
        .docker_out(
            "run -d --name",
            &[
                &name,
                "busybox",
                "sh",
                "-c",
                "echo -n peer-said-hi | nc -l -p 1234",
            ],
        )
        .trim()
        .to_string();
    let dir = d.context(
        "netc",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN readlink /proc/self/ns/net > /ns && nc localhost 1234 > /otherhost\n",
        )],
    );
    // Wait for the listener (its container runs, nc may not yet be bound).
    berth_testkit::wait_for("nc listening", std::time::Duration::from_secs(10), || {
        d.docker_line("exec", &[&name, "sh", "-c", "netstat -ltn | grep -q :1234"])
            .code
            == 0
    });
    // (Read now: the peer exits once nc has served the step.)
    let pid = d.inspect("{{.State.Pid}}", &name);
    let peer_ns = std::fs::read_link(format!("/proc/{}/ns/net", pid.trim())).unwrap();
    classic_build(
        &d,
        &dir,
        &["-t", "netc:built", "--network", &format!("container:{id}")],
    )
    .ok();
    assert_eq!(cat(&d, "netc:built", "/otherhost"), "peer-said-hi");
    assert_eq!(
        cat(&d, "netc:built", "/ns").trim(),
        peer_ns.display().to_string()
    );
    d.docker_out("wait", &[&name]);
    classic_build(&d, &dir, &["--network", &format!("container:{name}")])
        .fails_with("it is not running");
    d.finish();
}
