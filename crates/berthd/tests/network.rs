//! Networking end to end: bridges, DNS by name, isolation, published ports (loopback proxy and
//! DNAT from a "remote host" namespace), -P, connect/disconnect, container: mode, docker-py,
//! daemon restart, and cleanup checked with `ip` and `nft`.
//!
//! Every test daemon gets its own default bridge and subnets (from the test's pid, inside
//! 10.64.0.0/10), so tests run in parallel; only loopback and addresses inside namespaces
//! created here carry traffic.

mod common;

use std::process::Command;

use common::*;

/// Names and addresses unique to this test process; whatever carries the names is removed on
/// drop, then checked by a leak guard.
struct Net {
    tag: String,
    a: u32,
    b: u32,
    _leaks: berth_testkit::LeakGuard,
}

impl Net {
    fn new() -> Net {
        let pid = std::process::id();
        let tag = format!("bt{}", berth_testkit::unique_id());
        Net {
            _leaks: berth_testkit::LeakGuard::new([tag.clone()]),
            tag,
            a: 64 + ((pid >> 8) & 0x3f),
            b: pid & 0xff,
        }
    }
    /// The k-th /28 of this process (k < 16).
    fn subnet(&self, k: u32) -> String {
        format!("10.{}.{}.{}/28", self.a, self.b, k * 16)
    }
    fn ip(&self, k: u32, host: u32) -> String {
        format!("10.{}.{}.{}", self.a, self.b, k * 16 + host)
    }
    fn bridge(&self, s: &str) -> String {
        format!("{}{s}", self.tag)
    }
    /// [`Net::new`] and its [`Net::daemon`].
    fn with_daemon() -> (Net, Daemon) {
        let n = Net::new();
        let d = n.daemon();
        (n, d)
    }

    /// Starts a daemon whose default bridge is `<tag>d` on subnet 0.
    fn daemon(&self) -> Daemon {
        // nextest runs each test in its own process, so this environment is ours alone.
        std::env::set_var("BERTHD_BRIDGE", self.bridge("d"));
        std::env::set_var("BERTHD_BIP", format!("{}/28", self.ip(0, 1)));
        Daemon::new()
    }
    /// `docker network create --subnet <subnet k> <flags> …` of `name` on the bridge
    /// [`Net::bridge`]`(suffix)` (returned); `flags`: words without spaces.
    fn create(&self, d: &Daemon, k: u32, suffix: &str, flags: &str, name: &str) -> String {
        let bridge = self.bridge(suffix);
        let subnet = self.subnet(k);
        let opt = format!("com.docker.network.bridge.name={bridge}");
        let words = format!("network create --subnet {subnet} {flags} -o {opt} {name}");
        d.docker_line(&words, &[]).ok();
        bridge
    }

    fn links(&self) -> String {
        sh(&format!("ip -o link show | grep -E '{}' || true", self.tag))
    }
    fn table(&self) -> String {
        format!("berth_{}d", self.tag)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for l in sh("ip -o link show").lines() {
            if let Some(name) = l.split(": ").nth(1) {
                let name = name.split('@').next().unwrap_or("");
                if name.starts_with(&self.tag) {
                    let _ = Command::new("ip").args(["link", "del", name]).status();
                }
            }
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table()])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}r", self.tag)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether the host end of a container's veth (`vb` + 6 characters of its id) is gone.
fn veth_gone(cid: &str) -> bool {
    !sh("ip -o link show").contains(&format!("vb{}", &cid.trim()[..6]))
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Waits until `addr` answers HTTP (a detached httpd needs a moment to bind).
fn wait_http(addr: &str) -> String {
    for _ in 0..100 {
        if let Ok(r) = http_get(addr) {
            if !r.is_empty() {
                return r;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{addr} did not answer");
}

/// `docker run -d <opts> busybox sh -c HTTPD`; the container's id.
fn httpd(d: &Daemon, opts: &str) -> String {
    d.docker_out(&format!("run -d {opts} busybox sh -c"), &[HTTPD])
}

const HTTPD: &str =
    "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn user_networks_dns_by_name_and_isolation() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let (ba, bb) = (n.bridge("a"), n.bridge("b"));
    n.create(&d, 1, "a", "", "neta");
    n.create(&d, 2, "b", "--label team=b", "netb");
    let dup = d.docker(&["network", "create", "neta"]);
    dup.fails_with("already exists");

    let web = httpd(&d, "--name web --network neta --network-alias www");
    let web = web.trim();
    let other = httpd(&d, "--name other --network netb");
    let other_ip = d.inspect("{{.NetworkSettings.Networks.netb.IPAddress}}", "other");
    let other_ip = other_ip.trim();
    assert_eq!(other_ip, n.ip(2, 2));
    let web_ip = d.inspect("{{.NetworkSettings.Networks.neta.IPAddress}} {{.NetworkSettings.Networks.neta.Gateway}} {{.NetworkSettings.Networks.neta.MacAddress}}", "web");
    assert_eq!(
        web_ip.trim(),
        format!(
            "{} {} 02:42:0a:{:02x}:{:02x}:{:02x}",
            n.ip(1, 2),
            n.ip(1, 1),
            n.a,
            n.b,
            16 + 2
        )
    );

    // By name, alias and short id: ping, nc, wget.
    let script = format!(
        "cat /etc/resolv.conf && ping -c1 -W2 web && echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc www 80 && wget -qO- http://{}/ && \
         timeout 3 wget -qO- http://{other_ip}/; echo OTHER-RC=$?; \
         if nslookup other 127.0.0.11; then echo RESOLVED-OTHER; fi; true",
        &web[..12]
    );
    let r = d
        .docker_line("run --rm --network neta busybox sh -c", &[&script])
        .ok();
    r.stdout_contains("nameserver 127.0.0.11");
    r.stdout_contains("options ndots:0");
    r.stdout_contains("1 packets received");
    assert_eq!(
        r.stdout
            .matches(&format!("hello-from-{}", &web[..12]))
            .count(),
        2,
        "{}",
        r.stdout
    );
    // (busybox wget's -T crashes here; `timeout` ends the attempt.)
    let other12 = &other.trim()[..12];
    assert!(
        !r.stdout.contains(&format!("hello-from-{other12}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("OTHER-RC=") && !r.stdout.contains("OTHER-RC=0"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("RESOLVED-OTHER"), "{}", r.stdout);

    // ls / inspect / filters / rm with active endpoints.
    let ls = d.docker_out("network ls --format", &["{{.Name}} {{.Driver}}"]);
    for want in [
        "bridge bridge",
        "host host",
        "none null",
        "neta bridge",
        "netb bridge",
    ] {
        assert!(ls.lines().any(|l| l == want), "{ls}");
    }
    let f = d.docker_out("network ls -q --filter label=team=b", &[]);
    assert_eq!(f.lines().count(), 1);
    let insp = d.docker_out(
        "network inspect -f",
        &[
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{len .Containers}}",
            "neta",
        ],
    );
    assert_eq!(insp.trim(), format!("{} {} 1", n.subnet(1), n.ip(1, 1)));
    let busy = d.docker(&["network", "rm", "neta"]);
    busy.stderr_contains("active endpoints");
    let builtin = d.docker(&["network", "rm", "bridge"]);
    builtin.stderr_contains("pre-defined");

    // Removing everything leaves no links, addresses or rules.
    assert!(n.links().contains(&ba));
    d.docker_line("rm -f web other", &[]).ok();
    d.docker(&["network", "rm", "neta"]).ok();
    let pruned = d.docker(&["network", "prune", "-f"]).ok().stdout;
    assert!(pruned.contains("netb"), "{pruned}");
    let links = n.links();
    assert!(!links.contains(&ba) && !links.contains(&bb), "{links}");
    wait_until("veths gone", || veth_gone(web) && veth_gone(&other));
    let addrs = sh("ip -o addr show");
    assert!(
        !addrs.contains(&n.ip(1, 1)) && !addrs.contains(&n.ip(2, 1)),
        "{addrs}"
    );
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(
        !rules.contains(&ba) && !rules.contains(&bb) && !rules.contains("dnat"),
        "{rules}"
    );
    assert!(!sh("nft list tables").contains(&format!("{}a", n.tag)));
    finish(d);
}

#[test]
fn published_ports_loopback_and_dnat_from_a_remote_host() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let (p_lo, p_all) = (free_port(), free_port());
    let cid = d.docker_out(
        "run -d --name pub -p",
        &[
            &format!("127.0.0.1:{p_lo}:80"),
            "-p",
            &format!("{p_all}:80"),
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let short = &cid.trim()[..12];
    let r = wait_http(&format!("127.0.0.1:{p_lo}"));
    assert!(r.contains(&format!("hello-from-{short}")), "{r}");
    let r = wait_http(&format!("127.0.0.1:{p_all}"));
    assert!(r.contains("hello-from"), "{r}");
    // busybox wget from the host, like a user would.
    let w = Command::new("busybox")
        .args(["wget", "-qO-", &format!("http://127.0.0.1:{p_lo}/")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&w.stdout).contains("hello-from"));

    // Port conflicts are a clear error.
    let c = d.docker_line(
        "run --rm -p",
        &[&format!("127.0.0.1:{p_lo}:80"), "busybox", "true"],
    );
    c.fails_with("port is already allocated");

    let port = d.docker(&["port", "pub"]).ok().stdout;
    assert!(
        port.contains(&format!("80/tcp -> 127.0.0.1:{p_lo}")),
        "{port}"
    );
    assert!(
        port.contains(&format!("80/tcp -> 0.0.0.0:{p_all}")),
        "{port}"
    );
    let ps = d.docker(&["ps", "--format", "{{.Ports}}"]).ok().stdout;
    assert!(ps.contains(&format!("127.0.0.1:{p_lo}->80/tcp")), "{ps}");

    // A remote host: a namespace with a veth to the host, addresses in subnet 15.
    let ns = format!("{}r", n.tag);
    let (h, rmt) = (n.ip(15, 1), n.ip(15, 2));
    let hv = n.bridge("h");
    let setup = format!(
        "set -e; ip netns add {ns}; ip link add {hv} type veth peer name {hv}p; ip link set {hv}p netns {ns}; \
         ip addr add {h}/28 dev {hv}; ip link set {hv} up; \
         ip -n {ns} addr add {rmt}/28 dev {hv}p; ip -n {ns} link set {hv}p up; ip -n {ns} link set lo up"
    );
    let st = Command::new("sh").arg("-c").arg(&setup).status().unwrap();
    assert!(st.success());
    let get = |port: u16| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "busybox",
                "timeout",
                "5",
                "busybox",
                "wget",
                "-qO-",
                &format!("http://{h}:{port}/"),
            ])
            .output()
            .unwrap()
    };
    let ok = get(p_all);
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("hello-from"),
        "DNAT from the remote host failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let denied = get(p_lo);
    assert!(
        !denied.status.success(),
        "a port bound to 127.0.0.1 answered another host"
    );
    assert!(!String::from_utf8_lossy(&denied.stdout).contains("hello-from"));

    // Outbound: a container reaches the remote host through masquerade (the remote host sees
    // the host's address, it has no route to the bridge); an --internal network does not.
    let out = d.docker_out("run --rm busybox ping -c1 -W2", &[&rmt]);
    assert!(out.contains("1 packets received"), "{out}");
    let bi = n.create(&d, 7, "i", "--internal", "inside");
    let r = d.docker_out(
        "run --rm --network inside busybox sh -c",
        &[&format!("ping -c1 -W2 {rmt}; echo RC=$?")],
    );
    assert!(
        r.contains("RC=1") && !r.contains("1 packets received"),
        "{r}"
    );
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(
        rules.contains(&format!("iifname \"{bi}\" oifname != \"{bi}\" drop")),
        "{rules}"
    );
    d.docker(&["network", "rm", "inside"]).ok();

    d.docker(&["rm", "-f", "pub"]).ok();
    assert!(http_get(&format!("127.0.0.1:{p_lo}")).is_err());
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(!rules.contains("dnat"), "{rules}");
    wait_until("veth gone", || veth_gone(&cid));
    finish(d);
}

#[test]
fn publish_all_connect_disconnect_and_container_mode() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let ba = n.create(&d, 3, "a", "", "side");
    d.docker_line("run -d --name pa --expose 80 --expose 81/udp -P --hostname myhost --add-host db.local:10.1.2.3 --add-host gw:host-gateway --dns-search example.test busybox sh -c", &[HTTPD])
    .ok();
    let port = d.docker(&["port", "pa", "80"]).ok().stdout;
    let hp: u16 = port
        .trim()
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let r = wait_http(&format!("127.0.0.1:{hp}"));
    assert!(r.contains("hello-from-myhost"), "{r}");
    let ports = d.inspect("{{json .NetworkSettings.Ports}}", "pa");
    assert!(
        ports.contains("\"80/tcp\":[{\"HostIp\":\"0.0.0.0\",\"HostPort\":\"")
            && ports.contains("81/udp"),
        "{ports}"
    );
    let files = d.docker_out(
        "run --rm --network container:pa busybox sh -c",
        &["wget -qO- http://127.0.0.1/; hostname"],
    );
    assert!(files.contains("hello-from-myhost"), "{files}");

    // Default bridge: hosts and resolv.conf as Docker writes them.
    let etc = d.docker_out("run --rm --add-host db.local:10.1.2.3 --add-host gw:host-gateway --dns 10.9.9.9 --dns-search example.test --dns-option attempts:2 -h box --mac-address 02:42:aa:bb:cc:dd busybox sh -c", &["cat /etc/hosts /etc/resolv.conf /sys/class/net/eth0/address; hostname"]);
    assert!(etc.contains("10.1.2.3\tdb.local"), "{etc}");
    assert!(etc.contains(&format!("{}\tgw", n.ip(0, 1))), "{etc}");
    assert!(
        etc.contains("nameserver 10.9.9.9\nsearch example.test\noptions attempts:2"),
        "{etc}"
    );
    assert!(etc.contains("02:42:aa:bb:cc:dd\n"), "{etc}");
    assert!(etc.trim_end().ends_with("box"), "{etc}");

    // connect (with an alias and a fixed address) and disconnect a running container.
    let fixed = n.ip(3, 9);
    d.docker_line(
        "network connect --alias pa-side --ip",
        &[&fixed, "side", "pa"],
    )
    .ok();
    let r = d.docker_out(
        "run --rm --network side busybox sh -c",
        &["nslookup pa-side 127.0.0.11 && wget -qO- http://pa-side/"],
    );
    assert!(r.contains(&fixed) && r.contains("hello-from-myhost"), "{r}");
    let taken = d.docker_line("run --rm --network side --ip", &[&fixed, "busybox", "true"]);
    taken.stderr_contains("in use");
    let ip_on_default = d.docker_line("run --rm --ip", &[&n.ip(0, 9), "busybox", "true"]);
    ip_on_default.stderr_contains("user defined networks");
    d.docker_line("network disconnect side pa", &[]).ok();
    let r = d.docker_out(
        "run --rm --network side busybox sh -c",
        &[&format!("timeout 3 wget -qO- http://{fixed}/ || echo GONE")],
    );
    assert!(r.contains("GONE"), "{r}");
    let net = d.inspect("{{len .NetworkSettings.Networks}}", "pa");
    assert_eq!(net.trim(), "1");

    // none and host modes.
    let none = d.docker_out("run --rm --network none busybox ip -o link", &[]);
    assert_eq!(none.lines().count(), 1, "{none}");
    d.docker(&["rm", "-f", "pa"]).ok();
    d.docker(&["network", "rm", "side"]).ok();
    assert!(!n.links().contains(&ba));
    finish(d);
}

#[test]
fn docker_py_networks() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let script = format!(
        r#"
import docker, os
c = docker.DockerClient(base_url=os.environ["BERTH_SOCK"])
ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="{sub}", gateway="{gw}")])
net = c.networks.create("pynet", driver="bridge", ipam=ipam, options={{"com.docker.network.bridge.name": "{br}"}}, labels={{"k": "v"}})
assert net.name == "pynet", net.attrs
assert [x.name for x in c.networks.list(names=["pynet"])] == ["pynet"]
srv = c.containers.run("busybox", ["httpd", "-f", "-p", "80"], detach=True, network="pynet", name="pysrv")
cli = c.containers.run("busybox", ["sleep", "30"], detach=True, name="pycli")
net.connect(cli, aliases=["client"])
net.reload()
assert len(net.containers) == 2, net.attrs["Containers"]
import time
look = c.containers.run("busybox", ["nslookup", "client", "127.0.0.11"], network="pynet", detach=True)
assert look.wait()["StatusCode"] == 0
out = b""
for _ in range(40):
    out = look.logs()
    if b"{cli_ip}" in out:
        break
    time.sleep(0.05)
look.remove()
assert b"{cli_ip}" in out, out
cli.reload()
assert cli.attrs["NetworkSettings"]["Networks"]["pynet"]["Aliases"] == ["client"], cli.attrs["NetworkSettings"]
net.disconnect(cli)
for x in (srv, cli):
    x.remove(force=True)
net.remove()
assert c.networks.prune()["NetworksDeleted"] in (None, [])
print("OK")
"#,
        sub = n.subnet(4),
        gw = n.ip(4, 1),
        br = n.bridge("p"),
        cli_ip = n.ip(4, 3),
    );
    let Some(r) = d.docker_py(&script) else {
        return;
    };
    assert!(
        r.stdout.contains("OK"),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(!n.links().contains(&n.bridge("p")));
    finish(d);
}

#[test]
fn daemon_restart_keeps_networking() {
    require_root!();
    let (n, mut d) = Net::with_daemon();
    let ba = n.create(&d, 5, "a", "", "keep");
    let p = free_port();
    let cid = httpd(
        &d,
        &format!("--name srv --network keep -p 127.0.0.1:{p}:80"),
    );
    wait_http(&format!("127.0.0.1:{p}"));
    // A container that keeps resolving a name: its DNS server lives in the daemon.
    d.docker_line("run -d --name dnsw --network keep busybox sh -c", &["while sleep 0.2; do if nslookup srv 127.0.0.11 >/dev/null 2>&1; then echo DNS-OK; else echo DNS-FAIL; fi; done"]).ok();
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(600));
    d.start();
    let r = wait_http(&format!("127.0.0.1:{p}"));
    assert!(r.contains("hello-from"), "{r}");
    let mut last = String::new();
    for _ in 0..50 {
        last = d.docker_out("logs --tail 1 dnsw", &[]);
        if last.trim() == "DNS-OK" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        last.trim(),
        "DNS-OK",
        "the old container's DNS after the restart"
    );
    let r = d.docker_out("run --rm --network keep busybox wget -qO- http://srv/", &[]);
    assert!(r.contains("hello-from"), "{r}");
    // The address of srv is still taken after the restart.
    let ip = d.docker_out(
        "run --rm --network keep busybox sh -c",
        &["ip -o -4 addr show eth0"],
    );
    assert!(ip.contains(&n.ip(5, 4)), "{ip}");
    d.docker_line("rm -f srv dnsw", &[]).ok();
    d.docker(&["network", "rm", "keep"]).ok();
    assert!(!n.links().contains(&ba));
    wait_until("veth gone", || veth_gone(&cid));
    finish(d);
}

#[test]
fn berth_cli_network_commands_and_port() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let br = n.bridge("c");
    d.berth_line(
        "network create --subnet",
        &[
            &n.subnet(6),
            "--gateway",
            &n.ip(6, 14),
            "--ip-range",
            &format!("{}/29", n.ip(6, 8)),
            "-o",
            &format!("com.docker.network.bridge.name={br}"),
            "--label",
            "x=y",
            "clinet",
        ],
    )
    .ok();
    let ls = d.berth(&["network", "ls"]).ok().stdout;
    assert!(
        ls.starts_with("NETWORK ID     NAME") && ls.contains("clinet"),
        "{ls}"
    );
    let insp = d
        .berth_line("network inspect -f", &["{{.Name}} {{.Labels.x}}", "clinet"])
        .ok()
        .stdout;
    assert_eq!(insp.trim(), "clinet y");
    let p = free_port();
    d.berth_line(
        "run -d --name cw --network clinet --network-alias cwa -p",
        &[
            &format!("127.0.0.1:{p}:80"),
            "-P",
            "--expose",
            "81",
            "-h",
            "cwhost",
            "busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    )
    .ok();
    let r = wait_http(&format!("127.0.0.1:{p}"));
    assert!(r.contains("hello-from-cwhost"), "{r}");
    let port = d.berth(&["port", "cw"]).ok().stdout;
    assert!(
        port.contains(&format!("80/tcp -> 127.0.0.1:{p}")) && port.contains("81/tcp -> 0.0.0.0:"),
        "{port}"
    );
    assert_eq!(
        d.berth(&["port", "cw", "80"]).ok().stdout.trim(),
        format!("127.0.0.1:{p}")
    );
    // The address comes from --ip-range.
    let ip = d.inspect("{{.NetworkSettings.Networks.clinet.IPAddress}} {{.NetworkSettings.Networks.clinet.Gateway}}", "cw");
    assert_eq!(ip.trim(), format!("{} {}", n.ip(6, 8), n.ip(6, 14)));
    let ps = d.berth(&["ps"]).ok().stdout;
    assert!(ps.contains(&format!("127.0.0.1:{p}->80/tcp")), "{ps}");
    d.berth_line("run -d --name cx busybox sleep 30", &[]).ok();
    d.berth_line("network connect --alias cxa clinet cx", &[])
        .ok();
    let r = d
        .berth_line(
            "run --rm --network clinet busybox sh -c",
            &["wget -qO- http://cwa/ && ping -c1 cxa"],
        )
        .ok()
        .stdout;
    assert!(
        r.contains("hello-from-cwhost") && r.contains("1 packets received"),
        "{r}"
    );
    d.berth_line("network disconnect clinet cx", &[]).ok();
    d.berth_line("rm -f cw cx", &[]).ok();
    let pr = d.berth(&["network", "prune", "-f"]).ok().stdout;
    assert!(pr.contains("clinet"), "{pr}");
    assert!(!n.links().contains(&br));
    finish(d);
}

/// Waits up to 10 s for `f` to hold.
#[track_caller]
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    berth_testkit::wait_for(what, std::time::Duration::from_secs(10), f)
}

#[test]
fn ipv6_networks_ping6_by_name_aaaa_and_published_ports_on_v6_loopback() {
    require_root!();
    require!(
        std::path::Path::new("/proc/net/if_inet6").exists(),
        "IPv6 is disabled on this host"
    );
    let (n, mut d) = Net::with_daemon();
    let pid = std::process::id();
    let sub6 = format!("fd42:{:x}:{:x}::/64", pid >> 16, pid & 0xffff);
    let pfx6 = format!("fd42:{:x}:{:x}::", pid >> 16, pid & 0xffff);
    let (b6, bu) = (n.bridge("6"), n.bridge("u"));
    n.create(&d, 4, "6", &format!("--ipv6 --subnet {sub6}"), "net6");
    // No IPv6 subnet given: a ULA /64 from the default pool.
    n.create(&d, 5, "u", "--ipv6", "ula6");
    let insp = d.docker_out(
        "network inspect -f",
        &[
            "{{.EnableIPv6}} {{range .IPAM.Config}}{{.Subnet}},{{.Gateway}} {{end}}",
            "net6",
        ],
    );
    assert_eq!(
        insp.trim(),
        format!("true {},{} {sub6},{pfx6}1", n.subnet(4), n.ip(4, 1)),
        "{insp}"
    );
    let ula = d.docker_out(
        "network inspect -f",
        &["{{range .IPAM.Config}}{{.Subnet}} {{end}}", "ula6"],
    );
    let ula_sub = ula.split_whitespace().nth(1).unwrap_or("").to_string();
    assert!(
        ula_sub.starts_with("fd") && ula_sub.ends_with("::/64"),
        "{ula}"
    );
    let v4only = d.docker_line(
        "network create --subnet",
        &[&n.subnet(6), "--subnet", "fd43::/64", "nov6"],
    );
    assert_ne!(v4only.code, 0, "an IPv6 subnet without --ipv6 is refused");

    // The bridge carries the gateway; the nft table NATs the v6 subnet.
    let addrs = sh(&format!("ip -o -6 addr show dev {b6}"));
    assert!(addrs.contains(&format!("{pfx6}1/64")), "{addrs}");
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(
        rules.contains(&format!("ip6 saddr {sub6} oifname != \"{b6}\" masquerade")),
        "{rules}"
    );

    let port = free_port();
    let web = httpd(&d, &format!("--name web6 --network net6 -p {port}:80"));
    let short = web.trim()[..12].to_string();
    let info = d.inspect("{{.NetworkSettings.Networks.net6.GlobalIPv6Address}} {{.NetworkSettings.Networks.net6.GlobalIPv6PrefixLen}} {{.NetworkSettings.Networks.net6.IPv6Gateway}}", "web6");
    assert_eq!(info.trim(), format!("{pfx6}2 64 {pfx6}1"), "{info}");
    let containers = d.docker_out(
        "network inspect -f",
        &["{{range .Containers}}{{.IPv6Address}}{{end}}", "net6"],
    );
    assert_eq!(containers.trim(), format!("{pfx6}2/64"));

    // Inside: the address and the default route; /etc/hosts has both families; AAAA by name;
    // ping6 both ways by name; HTTP over IPv6 by name.
    let script =
        "ip -6 -o addr show dev eth0 scope global; ip -6 route show default; cat /etc/hosts; \
         nslookup -type=AAAA web6 127.0.0.11; ping -6 -c1 -W3 web6 && echo PING6-OK; \
         wget -qO- http://web6/ | sed 's/^/HTTP: /'";
    let r = d.docker_out(
        "run --rm --name cli6 --network net6 busybox sh -c",
        &[script],
    );
    assert!(r.contains(&format!("inet6 {pfx6}3/64")), "{r}");
    assert!(r.contains(&format!("default via {pfx6}1 dev eth0")), "{r}");
    assert!(
        r.lines()
            .any(|l| l.starts_with(&format!("{pfx6}3\t")) || l.starts_with(&format!("{pfx6}3 "))),
        "{r}"
    );
    assert!(r.contains(&format!("Address: {pfx6}2")), "{r}");
    assert!(r.contains("PING6-OK"), "{r}");
    assert!(r.contains(&format!("HTTP: hello-from-{short}")), "{r}");
    // A requested IPv6 address (`--ip6`).
    let fixed = d.docker_out(
        "run --rm --network net6 --ip6",
        &[
            &format!("{pfx6}99"),
            "busybox",
            "ip",
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
            "scope",
            "global",
        ],
    );
    assert!(fixed.contains(&format!("inet6 {pfx6}99/64")), "{fixed}");
    // The other way: web6 pings a sibling by name over IPv6.
    d.docker_line("run -d --name peer6 --network net6 busybox sleep 300", &[])
        .ok();
    let back = d.docker_out(
        "exec web6 sh -c",
        &["ping -6 -c1 -W3 peer6 && echo BACK-OK"],
    );
    assert!(back.contains("BACK-OK"), "{back}");

    // Published on every address: reachable on [::1] (proxy on [::] too) and on 127.0.0.1.
    let r = wait_http(&format!("[::1]:{port}"));
    assert!(r.contains(&format!("hello-from-{short}")), "{r}");
    let r = wait_http(&format!("127.0.0.1:{port}"));
    assert!(r.contains(&format!("hello-from-{short}")), "{r}");
    let ports = d.docker(&["port", "web6"]).ok().stdout;
    assert!(ports.contains(&format!("80/tcp -> [::]:{port}")), "{ports}");
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(
        rules.contains(&format!("dnat ip6 to [{pfx6}2]:80")),
        "{rules}"
    );

    // `network connect` of a running container to a second IPv6 network: an address there
    // (no second default route).
    d.docker_line("network connect ula6 peer6", &[]).ok();
    let ula_pfx = ula_sub.trim_end_matches("/64").to_string();
    let eth1 = d.docker_out(
        "exec peer6 sh -c",
        &["ip -6 -o addr show dev eth1 scope global; ip -6 route show default"],
    );
    assert!(eth1.contains(&format!("inet6 {ula_pfx}2/64")), "{eth1}");
    assert_eq!(eth1.matches("default via").count(), 1, "{eth1}");
    d.docker_line("network disconnect ula6 peer6", &[]).ok();

    // A daemon crash and restart: the bridge keeps its v6 gateway, the [::] proxy and the
    // AAAA answers come back.
    d.kill9();
    d.start();
    let r = wait_http(&format!("[::1]:{port}"));
    assert!(r.contains(&format!("hello-from-{short}")), "{r}");
    let addrs = sh(&format!("ip -o -6 addr show dev {b6}"));
    assert!(addrs.contains(&format!("{pfx6}1/64")), "{addrs}");
    let again = d.docker_out(
        "exec peer6 sh -c",
        &["nslookup -type=AAAA web6 127.0.0.11 && ping -6 -c1 -W3 web6 && echo AGAIN-OK"],
    );
    assert!(again.contains(&format!("Address: {pfx6}2")), "{again}");
    assert!(again.contains("AGAIN-OK"), "{again}");

    // Cleanup: no links, addresses or rules left.
    d.docker_line("rm -f web6 peer6", &[]).ok();
    assert!(http_get(&format!("[::1]:{port}")).is_err());
    d.docker_line("network rm net6 ula6", &[]).ok();
    let links = n.links();
    assert!(!links.contains(&b6) && !links.contains(&bu), "{links}");
    wait_until("veths gone", || veth_gone(&web));
    let addrs = sh("ip -o -6 addr show");
    assert!(
        !addrs.contains(&pfx6) && !addrs.contains(ula_sub.trim_end_matches("/64")),
        "{addrs}"
    );
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(
        !rules.contains("ip6") && !rules.contains("dnat") && !rules.contains(&b6),
        "{rules}"
    );
    finish(d);
}

#[test]
fn hairpin_published_port_through_the_gateway_address() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let bh = n.create(&d, 3, "h", "", "hpnet");
    let (p_user, p_def) = (free_port(), free_port());
    let web = httpd(&d, &format!("--name hpweb --network hpnet -p {p_user}:80"));
    let web_short = web.trim()[..12].to_string();
    let dweb = httpd(&d, &format!("--name hpdef -p {p_def}:80"));
    let dweb_short = dweb.trim()[..12].to_string();
    wait_http(&format!("127.0.0.1:{p_user}"));
    wait_http(&format!("127.0.0.1:{p_def}"));
    let (gw_user, gw_def) = (n.ip(3, 1), n.ip(0, 1));
    // A container reaches its own published port through its gateway (the host's address on
    // its bridge), on both the default bridge and a user network.
    // A sibling on the same bridge, and a container on another network (through DNAT and
    // masquerade, past the isolation between bridges), reach it the same way.
    for (words, url, want) in [
        (
            "exec hpweb wget -qO-",
            format!("http://{gw_user}:{p_user}/"),
            &web_short,
        ),
        (
            "exec hpdef wget -qO-",
            format!("http://{gw_def}:{p_def}/"),
            &dweb_short,
        ),
        (
            "run --rm --network hpnet busybox wget -qO-",
            format!("http://{gw_user}:{p_user}/"),
            &web_short,
        ),
        (
            "run --rm busybox wget -qO-",
            format!("http://{gw_def}:{p_user}/"),
            &web_short,
        ),
    ] {
        let got = d.docker_out(words, &[&url]);
        assert!(
            got.contains(&format!("hello-from-{want}")),
            "{words} {url}: {got}"
        );
    }
    d.docker_line("rm -f hpweb hpdef", &[]).ok();
    d.docker(&["network", "rm", "hpnet"]).ok();
    let rules = sh(&format!("nft list table inet {}", n.table()));
    assert!(!rules.contains("dnat") && !rules.contains(&bh), "{rules}");
    finish(d);
}

#[test]
fn ipam_never_hands_out_an_address_twice_under_concurrency() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 8, "c", "", "conc");
    let count = 10;
    // Ten `docker run -d` at once; each container prints the address it really has on eth0.
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> =
            (0..count)
                .map(|i| {
                    let d = &d;
                    s.spawn(move || {
                        d.docker_out("run -d --name", &[&format!("conc{i}"), "--network", "conc", "busybox", "sh", "-c", "ip -o -4 addr show dev eth0 | awk '{print \"ADDR=\" $4}'; exec sleep 300"])
                    .trim()
                    .to_string()
                    })
                })
                .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut inspected = std::collections::BTreeSet::new();
    let mut real = std::collections::BTreeSet::new();
    for id in &ids {
        let ip = d
            .inspect("{{.NetworkSettings.Networks.conc.IPAddress}}", id)
            .trim()
            .to_string();
        assert!(ip.starts_with(&format!("10.{}.{}.", n.a, n.b)), "{ip}");
        inspected.insert(ip.clone());
        let mut logs = String::new();
        wait_until("the container's address in its log", || {
            logs = d.docker(&["logs", id]).stdout;
            logs.contains("ADDR=")
        });
        assert!(
            logs.contains(&format!("ADDR={ip}/28")),
            "{id}: {logs} vs {ip}"
        );
        real.insert(logs);
    }
    assert_eq!(inspected.len(), count, "{inspected:?}");
    assert_eq!(real.len(), count);
    let net = d.docker_out("network inspect -f", &["{{len .Containers}}", "conc"]);
    assert_eq!(net.trim(), count.to_string());
    let names: Vec<String> = (0..count).map(|i| format!("conc{i}")).collect();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    d.docker(&args).ok();
    d.docker(&["network", "rm", "conc"]).ok();
    finish(d);
}

/// The host ports of `docker port CONTAINER 80`: (address, port) per line.
fn host_ports(d: &Daemon, c: &str) -> Vec<(String, u16)> {
    d.docker(&["port", c, "80"])
        .ok()
        .stdout
        .lines()
        .map(|l| {
            let (a, p) = l.rsplit_once(':').unwrap();
            (a.to_string(), p.parse().unwrap())
        })
        .collect()
}

/// dockerd 28 with the default (IPv4-only) bridge on a host with IPv6: a port published on
/// every address is bound on 0.0.0.0 and [::] on one host port, the [::] one forwarded by
/// the proxy to the container's IPv4 address, and it keeps serving across a daemon crash.
/// Random host ports come in turn from the start of the kernel's ephemeral range, the next
/// after the last one handed out.
#[test]
fn published_ports_on_ipv6_for_ipv4_containers_and_random_ports_in_turn() {
    require_root!();
    let (_n, mut d) = Net::with_daemon();
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let lo: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
    httpd(&d, "--name r1 -p 80");
    let p1 = host_ports(&d, "r1");
    assert_eq!(p1.len(), 2, "{p1:?}");
    let port1 = p1[0].1;
    assert_eq!(
        p1,
        [("0.0.0.0".to_string(), port1), ("[::]".to_string(), port1)]
    );
    // Near the start of the range (other tests hold some ports), not a random one of it.
    assert!(
        (lo..lo + 500).contains(&port1),
        "{port1} not near the start {lo}"
    );
    let r = wait_http(&format!("[::1]:{port1}"));
    assert!(r.contains("hello-from"), "{r}");
    let r = wait_http(&format!("127.0.0.1:{port1}"));
    assert!(r.contains("hello-from"), "{r}");
    // The next one after the last; a released port is not handed out again at once.
    d.docker_out("run -d --name r2 -P --expose 80 busybox sleep 1000", &[]);
    let port2 = host_ports(&d, "r2")[0].1;
    assert!(port2 > port1 && port2 < port1 + 50, "{port1} then {port2}");
    d.docker_line("rm -f r2", &[]).ok();
    d.docker_out("run -d --name r3 -p 80 busybox sleep 1000", &[]);
    let port3 = host_ports(&d, "r3")[0].1;
    assert!(port3 > port2 && port3 < port2 + 50, "{port2} then {port3}");
    // inspect and ps show both bindings; a second claim of the port is refused.
    let ports = d.docker_out("inspect r1 --format", &["{{json .NetworkSettings.Ports}}"]);
    assert_eq!(
        ports.trim(),
        format!(
            r#"{{"80/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{port1}"}},{{"HostIp":"::","HostPort":"{port1}"}}]}}"#
        )
    );
    let ps = d.docker_out("ps --filter name=r1 --format", &["{{.Ports}}"]);
    assert_eq!(
        ps.trim(),
        format!("0.0.0.0:{port1}->80/tcp, [::]:{port1}->80/tcp")
    );
    d.docker_line("run --rm -p", &[&format!("{port1}:80"), "busybox", "true"])
        .fails_with(&format!(
            "Bind for 0.0.0.0:{port1} failed: port is already allocated"
        ));
    // An explicit IPv6 host address for an IPv4-only container: the proxy forwards it.
    let p6 = free_port();
    httpd(&d, &format!("--name r4 -p [::1]:{p6}:80"));
    let r = wait_http(&format!("[::1]:{p6}"));
    assert!(r.contains("hello-from"), "{r}");
    // Both keep serving while no daemon runs, and after it comes back.
    d.kill9();
    let r = wait_http(&format!("[::1]:{port1}"));
    assert!(r.contains("hello-from"), "{r}");
    d.start();
    let r = wait_http(&format!("[::1]:{port1}"));
    assert!(r.contains("hello-from"), "{r}");
    assert_eq!(host_ports(&d, "r1"), p1);
    d.docker_line("rm -f r1 r3 r4", &[]).ok();
    assert!(http_get(&format!("[::1]:{port1}")).is_err());
    assert!(http_get(&format!("[::1]:{p6}")).is_err());
    finish(d);
}

/// The embedded DNS answers a container's hostname (dockerd's endpoint DNS names: name,
/// aliases, short ID, hostname) and, right after a rename, its new name instead of the old.
#[test]
fn embedded_dns_answers_hostnames_and_renamed_containers() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "h", "", "hnet");
    let id = d.docker_out(
        "run -d --name dn1 --hostname foobar --network hnet --network-alias al busybox sleep 300",
        &[],
    );
    let id = id.trim();
    let ip = n.ip(1, 2);
    // Its own hostname through DNS once /etc/hosts no longer names it (moby's
    // TestHostnameDnsResolution).
    let own = d
        .docker_line(
            "exec dn1 sh -c",
            &["echo 127.0.0.1 localhost > /etc/hosts && ping -c1 -W2 foobar"],
        )
        .ok();
    own.stdout_contains("1 packets received");
    let names = d.inspect("{{json .NetworkSettings.Networks.hnet.DNSNames}}", "dn1");
    assert_eq!(
        names.trim(),
        format!(r#"["dn1","al","{}","foobar"]"#, &id[..12])
    );

    d.docker_out("rename dn1 dn2", &[]);
    let look = |name: &str| {
        d.docker_line(
            "run --rm --network hnet busybox sh -c",
            &[&format!(
                "if nslookup {name} 127.0.0.11 >/dev/null 2>&1; then echo FOUND; else echo MISSING; fi"
            )],
        )
        .ok()
        .stdout
    };
    assert!(look("dn2").contains("FOUND"), "the new name");
    assert!(look("dn1").contains("MISSING"), "the old name");
    assert!(look("foobar").contains("FOUND"), "the hostname");
    let names = d.inspect("{{json .NetworkSettings.Networks.hnet.DNSNames}}", "dn2");
    assert!(names.starts_with(r#"["dn2","al""#), "{names}");
    let r = d
        .docker_line(
            "run --rm --network hnet busybox sh -c",
            &["ping -c1 -W2 dn2"],
        )
        .ok();
    r.stdout_contains(&format!("({ip})"));
    d.docker_out("rm -f dn2", &[]);
    d.docker_out("network rm hnet", &[]);
}

/// `GwPriority` (API 1.48): the endpoint with the highest priority gives the container its
/// default route, and inspect shows it; below 1.48 every priority is 0 (the `NetworkMode`
/// network's gateway).
#[test]
fn gw_priority_picks_the_default_route_from_api_1_48() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "gwa");
    n.create(&d, 2, "b", "", "gwb");
    let body = serde_json::json!({"Image": "busybox", "Cmd": ["ip", "route"],
        "HostConfig": {"NetworkMode": "gwa"},
        "NetworkingConfig": {"EndpointsConfig": {"gwa": {"GwPriority": 10}, "gwb": {"GwPriority": 100}}}});
    for (ver, gw, prio) in [("1.48", n.ip(2, 1), 100), ("1.47", n.ip(1, 1), 0)] {
        let name = format!("gw{}", ver.replace('.', ""));
        let r = d.post(
            &format!("/v{ver}/containers/create?name={name}"),
            &body.to_string(),
        );
        assert!(r.starts_with("HTTP/1.1 201"), "{r}");
        let routes = d.docker_out("start -a", &[&name]);
        assert!(
            routes.contains(&format!("default via {gw} ")),
            "{ver}: {routes}"
        );
        let r = d
            .http("GET", &format!("/v{ver}/containers/{name}/json"), None)
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(r.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(
            v["NetworkSettings"]["Networks"]["gwb"]["GwPriority"], prio,
            "{ver}"
        );
        d.docker_out("rm -f", &[&name]);
    }
    // A running container: a connect with a higher priority moves the default route, its
    // disconnect moves it back.
    d.docker_out("run -d --name gwrun --network gwa busybox sleep 60", &[]);
    let default_via = || {
        let r = d.docker_out("exec gwrun ip route", &[]);
        r.lines()
            .find(|l| l.starts_with("default"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        default_via().starts_with(&format!("default via {} ", n.ip(1, 1))),
        "{}",
        default_via()
    );
    let connect = serde_json::json!({"Container": "gwrun", "EndpointConfig": {"GwPriority": 100}});
    let r = d.post("/v1.48/networks/gwb/connect", &connect.to_string());
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        default_via().starts_with(&format!("default via {} dev eth1", n.ip(2, 1))),
        "{}",
        default_via()
    );
    d.docker_out("network disconnect gwb gwrun", &[]);
    assert!(
        default_via().starts_with(&format!("default via {} dev eth0", n.ip(1, 1))),
        "{}",
        default_via()
    );
    d.docker_out("rm -f gwrun", &[]);
    d.docker_out("network rm gwa gwb", &[]);
    finish(d);
}

/// dockerd resolves a container's networks when it starts: a create naming networks that do
/// not exist yet succeeds (inspect shows them as requested), its start fails with a 404 and
/// leaves it created, and once they exist it starts on them in order (`NetworkMode` first).
#[test]
fn networks_named_at_create_are_resolved_at_start() {
    require_root!();
    let (n, d) = Net::with_daemon();
    let body = serde_json::json!({"Image": "busybox", "Cmd": ["ip", "-o", "-4", "addr"],
        "HostConfig": {"NetworkMode": "later1"},
        "NetworkingConfig": {"EndpointsConfig": {
            "later2": {"Aliases": ["two"]}, "later1": {}}}});
    let r = d.post("/v1.51/containers/create?name=late", &body.to_string());
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let v = get_json(&d, "/v1.51/containers/late/json");
    let nets = &v["NetworkSettings"]["Networks"];
    assert_eq!(nets["later1"]["NetworkID"], "", "{nets}");
    assert_eq!(
        nets["later2"]["Aliases"],
        serde_json::json!(["two"]),
        "{nets}"
    );
    let r = d.post("/v1.51/containers/late/start", "");
    assert_eq!(
        api_error(&r, 404),
        "failed to set up container networking: network later1 not found"
    );
    assert_eq!(d.inspect("{{.State.Status}}", "late").trim(), "created");
    // Below 1.44 one network at most: dockerd's route refuses before anything else.
    let r = d.post("/v1.43/containers/create", &body.to_string());
    assert!(
        api_error(&r, 400)
            .starts_with("Container cannot be created with multiple network endpoints"),
        "{r}"
    );
    n.create(&d, 1, "a", "", "later1");
    n.create(&d, 2, "b", "", "later2");
    let out = d.docker_out("start -a late", &[]);
    let eth = |i: u32, k: u32| {
        out.lines()
            .any(|l| l.contains(&format!("eth{i} ")) && l.contains(&format!("{}/28", n.ip(k, 2))))
    };
    assert!(eth(0, 1) && eth(1, 2), "{out}");
    let v = get_json(&d, "/v1.51/containers/late/json");
    let nets = &v["NetworkSettings"]["Networks"];
    assert_eq!(nets["later1"]["IPAddress"], n.ip(1, 2), "{nets}");
    assert_eq!(
        nets["later2"]["Aliases"],
        serde_json::json!(["two"]),
        "{nets}"
    );
    // A stopped container's disconnect from a network that does not exist forgets it.
    let body = serde_json::json!({"Image": "busybox", "HostConfig": {"NetworkMode": "later1"},
        "NetworkingConfig": {"EndpointsConfig": {"later1": {}, "later3": {}}}});
    let r = d.post("/v1.51/containers/create?name=late3", &body.to_string());
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    d.docker_out("network disconnect later3 late3", &[]);
    let v = get_json(&d, "/v1.51/containers/late3/json");
    assert!(v["NetworkSettings"]["Networks"]["later3"].is_null(), "{v}");
    d.docker_out("rm -f late late3", &[]);
    d.docker_out("network rm later1 later2", &[]);
    finish(d);
}

/// `com.docker.network.endpoint.sysctls` (API 1.46+): set on the endpoint's interface inside
/// the container; a malformed one refused at create; a top-level `net.*.eth0.*` sysctl moved
/// to it below 1.48 (with dockerd's warning), refused from 1.48.
#[test]
fn endpoint_sysctls_are_set_on_the_interface() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "scnet");
    let opts = "net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.ifname.arp_ignore=2";
    let body = serde_json::json!({"Image": "busybox",
        "Cmd": ["cat", "/proc/sys/net/ipv4/conf/eth0/log_martians",
                "/proc/sys/net/ipv4/conf/eth0/arp_ignore"],
        "HostConfig": {"NetworkMode": "scnet"},
        "NetworkingConfig": {"EndpointsConfig": {"scnet": {
            "DriverOpts": {"com.docker.network.endpoint.sysctls": opts}}}}});
    let r = d.post("/v1.51/containers/create?name=sc1", &body.to_string());
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert_eq!(d.docker_out("start -a sc1", &[]), "1\n2\n");
    let bad = serde_json::json!({"Image": "busybox", "HostConfig": {"NetworkMode": "scnet"},
        "NetworkingConfig": {"EndpointsConfig": {"scnet": {
            "DriverOpts": {"com.docker.network.endpoint.sysctls": "net.ipv4.conf.eth0.forwarding=1"}}}}});
    let r = d.post("/v1.51/containers/create", &bad.to_string());
    assert_eq!(
        api_error(&r, 400),
        "invalid config for network scnet: invalid endpoint settings:\nunrecognised network interface sysctl 'net.ipv4.conf.eth0.forwarding=1'; represent 'net.X.Y.ethN.Z=V' as 'net.X.Y.IFNAME.Z=V', 'X' must be 'ipv4', 'ipv6' or 'mpls'"
    );
    let top = serde_json::json!({"Image": "busybox",
        "Cmd": ["cat", "/proc/sys/net/ipv4/conf/eth0/log_martians"],
        "HostConfig": {"NetworkMode": "scnet", "Sysctls": {"net.ipv4.conf.eth0.log_martians": "1"}}});
    let r = d.post("/v1.47/containers/create?name=sc2", &top.to_string());
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let v: serde_json::Value = serde_json::from_str(common::body(&r)).unwrap();
    assert_eq!(
        v["Warnings"][0],
        r#"Migrated sysctl "net.ipv4.conf.eth0.log_martians" to DriverOpts{"com.docker.network.endpoint.sysctls":"net.ipv4.conf.IFNAME.log_martians=1"}."#
    );
    assert_eq!(d.docker_out("start -a sc2", &[]), "1\n");
    let r = d.post("/v1.48/containers/create", &top.to_string());
    assert_eq!(
        api_error(&r, 500),
        "interface specific sysctl setting \"net.ipv4.conf.eth0.log_martians\" must be supplied using driver option 'com.docker.network.endpoint.sysctls'"
    );
    d.docker_out("rm -f sc1 sc2", &[]);
    d.docker_out("network rm scnet", &[]);
    finish(d);
}

/// A start whose network setup fails (a published port taken) fails with dockerd's
/// `failed to set up container networking: ` prefix and leaves the container created, its
/// restart policy not applied.
#[test]
fn a_network_setup_failure_at_start_leaves_the_container_created() {
    require_root!();
    let (_n, d) = Net::with_daemon();
    let port = free_port();
    let p = format!("127.0.0.1:{port}:80");
    d.docker_line("run -d --name holder -p", &[&p, "busybox", "sleep", "60"])
        .ok();
    d.docker_line(
        "create --name late --restart always -p",
        &[&p, "busybox", "sleep", "60"],
    )
    .ok();
    let r = d.post("/v1.51/containers/late/start", "");
    let msg = api_error(&r, 500);
    assert!(
        msg.starts_with("failed to set up container networking: ")
            && msg.ends_with("port is already allocated"),
        "{msg}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(d.inspect("{{.State.Status}}", "late").trim(), "created");
    d.docker_out("rm -f holder late", &[]);
    finish(d);
}

/// As dockerd, whose stopped containers hold no endpoints, a network only stopped containers
/// are on can be removed (at once after an exit: the exit's teardown comes first); their next
/// start needs a network of that name again.
#[test]
fn a_network_of_stopped_containers_only_can_be_removed() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "held");
    n.create(&d, 3, "c", "", "held2");
    d.docker_out("run -d --name runs --network held busybox sleep 60", &[]);
    d.docker_out(
        "run --name was --network held2 --network-alias w busybox true",
        &[],
    );
    d.docker_out("network rm held2", &[]);
    d.docker_line("network rm held", &[])
        .fails_with("has active endpoints");
    d.docker_line("start was", &[])
        .fails_with("failed to set up container networking: network held2 not found");
    n.create(&d, 2, "b", "", "held2");
    assert_eq!(d.docker_out("start -a was", &[]), "");
    let v = get_json(&d, "/v1.51/containers/was/json");
    let ep = &v["NetworkSettings"]["Networks"]["held2"];
    assert_eq!(ep["IPAddress"], n.ip(2, 2), "{ep}");
    assert_eq!(ep["Aliases"], serde_json::json!(["w"]), "{ep}");
    d.docker_out("rm -f was runs", &[]);
    d.docker_out("network rm held held2", &[]);
    finish(d);
}

/// `com.docker.network.endpoint.ifname` names the endpoint's interface in the container;
/// the other interfaces take the lowest free `ethN`.
#[test]
fn an_endpoint_driver_option_names_its_interface() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "ifa");
    n.create(&d, 2, "b", "", "ifb");
    let body = serde_json::json!({"Image": "busybox", "Cmd": ["ip", "-o", "link", "show"],
        "HostConfig": {"NetworkMode": "ifa"},
        "NetworkingConfig": {"EndpointsConfig": {
            "ifa": {"DriverOpts": {"com.docker.network.endpoint.ifname": "foobar"}},
            "ifb": {}}}});
    let r = d.post("/v1.51/containers/create?name=ifn", &body.to_string());
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    let out = d.docker_out("start -a ifn", &[]);
    assert!(
        out.contains(": foobar@if") && out.contains(": eth0@if") && !out.contains(": eth1@if"),
        "{out}"
    );
    d.docker_out("rm -f ifn", &[]);
    d.docker_out("network rm ifa ifb", &[]);
    finish(d);
}

/// A subnet overlapping another network's is libnetwork's `ErrPoolOverlap`: a 403 in
/// dockerd's words (`TestAPINetworkIPAMMultipleBridgeNetworks`), and nothing is created.
#[test]
fn an_overlapping_subnet_is_forbidden() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 2, "a", "", "wide");
    // The /28 of `wide` again, and a /29 inside it.
    let inner = format!("{}/29", n.ip(2, 8));
    for subnet in [n.subnet(2), inner] {
        let body = serde_json::json!({"Name": "narrow", "IPAM": {"Config": [{"Subnet": subnet}]}});
        let r = d.post("/networks/create", &body.to_string());
        assert_eq!(
            api_error(&r, 403),
            "invalid pool request: Pool overlaps with other one on this address space",
            "{subnet}"
        );
    }
    d.docker_line("network inspect narrow", &[])
        .fails_with("network narrow not found");
    d.docker_out("network rm wide", &[]);
    finish(d);
}

/// moby's TestEtcHostsDisconnect: a container's `/etc/hosts` names it at its address on each
/// network it joined, in the order it joined them (all of them at start, as compose creates
/// a service on several networks); `network connect` appends a network's line, `disconnect`
/// removes that one line and keeps the others.
#[test]
fn etc_hosts_follows_network_connect_and_disconnect() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "eha");
    n.create(&d, 2, "b", "", "ehb");
    let head = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n192.0.2.3\totherhost.invalid\n";
    // The container's line on network `net`, at its address there now.
    let line = |c: &str, net: &str| {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        format!("{}\tc1.invalid c1\n", d.inspect(&f, c).trim())
    };
    d.docker_out(
        "run -d --name eh --hostname c1.invalid --network eha --add-host otherhost.invalid:192.0.2.3 busybox sleep 60",
        &[],
    );
    let hosts = || d.docker_out("exec eh cat /etc/hosts", &[]);
    let a = line("eh", "eha");
    d.docker_out("network connect ehb eh", &[]);
    let b = line("eh", "ehb");
    assert_eq!(hosts(), format!("{head}{a}{b}"));
    d.docker_out("network disconnect eha eh", &[]);
    assert_eq!(hosts(), format!("{head}{b}"));
    d.docker_out("network connect eha eh", &[]);
    let a = line("eh", "eha");
    assert_eq!(hosts(), format!("{head}{b}{a}"));
    d.docker_out("network disconnect eha eh", &[]);
    d.docker_out("network disconnect ehb eh", &[]);
    assert_eq!(hosts(), head);
    d.docker_out("rm -f eh", &[]);
    // Created on both networks: a line for each from the start.
    d.docker_out(
        "create --name eh2 --hostname c1.invalid --network eha --network ehb --add-host otherhost.invalid:192.0.2.3 busybox cat /etc/hosts",
        &[],
    );
    let both = format!("{head}{}{}", line("eh2", "eha"), line("eh2", "ehb"));
    assert_eq!(d.docker_out("start -a eh2", &[]), both);
    d.docker_out("rm -f eh2", &[]);
    d.docker_out("network rm eha ehb", &[]);
    finish(d);
}

/// moby's TestResolvConfLocalhostIPv6 and libnetwork's resolvconf: a container's
/// `resolv.conf` is dockerd 28's generated file (its header, the transformed directives, the
/// comments on where they came from); a file the user changed is left alone when the
/// container later gets the embedded resolver (`network connect`), as its header promises.
#[test]
fn resolv_conf_is_dockerds_generated_file() {
    require_root!();
    let (n, d) = Net::with_daemon();
    n.create(&d, 1, "a", "", "rca");
    let head = "# Generated by Docker Engine.\n# This file can be edited; Docker Engine will not make further changes once it\n# has been modified.\n\n";
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let src = match host.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["nameserver", "127.0.0.53"]
            if std::path::Path::new("/run/systemd/resolve/resolv.conf").exists() =>
        {
            "/run/systemd/resolve/resolv.conf"
        }
        _ => "/etc/resolv.conf",
    };
    let given = "--dns 10.9.9.9 --dns-search example.test --dns-option attempts:2";
    let internal = d.docker_out(
        &format!("run --rm --network rca {given} busybox cat /etc/resolv.conf"),
        &[],
    );
    assert_eq!(
        internal,
        format!("{head}nameserver 127.0.0.11\nsearch example.test\noptions attempts:2 ndots:0\n\n# Based on host file: '{src}' (internal resolver)\n# ExtServers: [10.9.9.9]\n# Overrides: [nameservers search options]\n# Option ndots from: internal\n")
    );
    let legacy = d.docker_out(
        &format!("run --rm {given} busybox cat /etc/resolv.conf"),
        &[],
    );
    assert_eq!(
        legacy,
        format!("{head}nameserver 10.9.9.9\nsearch example.test\noptions attempts:2\n\n# Based on host file: '{src}' (legacy)\n# Overrides: [nameservers search options]\n")
    );
    // Connected to a network with the embedded resolver: rewritten for it, unless changed.
    d.docker_out(&format!("run -d --name rc1 {given} busybox sleep 60"), &[]);
    d.docker_out(&format!("run -d --name rc2 {given} busybox sleep 60"), &[]);
    d.docker_line(
        "exec rc2 sh -c",
        &["echo nameserver 192.0.2.1 > /etc/resolv.conf"],
    )
    .ok();
    d.docker_out("network connect rca rc1", &[]);
    d.docker_out("network connect rca rc2", &[]);
    assert_eq!(d.docker_out("exec rc1 cat /etc/resolv.conf", &[]), internal);
    assert_eq!(
        d.docker_out("exec rc2 cat /etc/resolv.conf", &[]),
        "nameserver 192.0.2.1\n"
    );
    d.docker_out("rm -f rc1 rc2", &[]);
    d.docker_out("network rm rca", &[]);
    finish(d);
}

/// moby's TestEtcHostsIpv6 and TestContainerDisabledIPv6: a container whose sysctls disable
/// IPv6 starts on an IPv6 network (dockerd gives its endpoint no IPv6 address) and its
/// `/etc/hosts` has no IPv6 line, the head's included; a network connected later too.
#[test]
fn a_container_without_ipv6_gets_no_ipv6_address_or_hosts_lines() {
    require_root!();
    require!(
        std::path::Path::new("/proc/net/if_inet6").exists(),
        "IPv6 is disabled on this host"
    );
    let (n, d) = Net::with_daemon();
    let pid = std::process::id();
    let sub6 = |k: u32| format!("fd43:{:x}:{:x}:{k}::/64", pid >> 16, pid & 0xffff);
    n.create(&d, 1, "a", &format!("--ipv6 --subnet {}", sub6(1)), "v6a");
    n.create(&d, 2, "b", &format!("--ipv6 --subnet {}", sub6(2)), "v6b");
    let off = "--sysctl net.ipv6.conf.all.disable_ipv6=1";
    d.docker_out(
        &format!("run -d --name no6 --hostname h6 --network v6a {off} --add-host x6:2001:db8::1 --add-host x4:192.0.2.1 busybox sleep 60"),
        &[],
    );
    let addr = |net: &str| {
        let f = format!("{{{{with index .NetworkSettings.Networks \"{net}\"}}}}{{{{.IPAddress}}}} [{{{{.GlobalIPv6Address}}}}]{{{{end}}}}");
        d.inspect(&f, "no6").trim().to_string()
    };
    assert_eq!(addr("v6a"), format!("{} []", n.ip(1, 2)));
    let hosts = || d.docker_out("exec no6 cat /etc/hosts", &[]);
    assert_eq!(
        hosts(),
        format!("127.0.0.1\tlocalhost\n192.0.2.1\tx4\n{}\th6\n", n.ip(1, 2))
    );
    d.docker_out("network connect v6b no6", &[]);
    assert_eq!(addr("v6b"), format!("{} []", n.ip(2, 2)));
    assert_eq!(
        hosts(),
        format!(
            "127.0.0.1\tlocalhost\n192.0.2.1\tx4\n{}\th6\n{}\th6\n",
            n.ip(1, 2),
            n.ip(2, 2)
        )
    );
    d.docker_out("rm -f no6", &[]);
    d.docker_out("network rm v6a v6b", &[]);
    finish(d);
}
