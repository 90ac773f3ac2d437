//! NAT, isolation and port forwarding rules, behind a backend trait.
//!
//! The whole of Berth's rule set is derived from the daemon's state ([`Ruleset`]) and written
//! in one atomic batch per change: the nftables backend recreates its own table (`add table`,
//! `delete table`, `add table`, chains, rules) in a single `nft -j -f -` transaction, so a
//! crash never leaves half a change, and a restarted daemon simply writes the current state
//! again. No other table is read, parsed or touched. IPv6 (networks with `--ipv6`) lives in
//! the same `inet` table; the iptables fallback writes it with `ip6tables-restore`.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::subnet::{Ipv4Net, Ipv6Net};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// Rules for one bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The IPv6 subnet of a network created with `--ipv6` (NAT66 like Docker's ip6tables).
    pub subnet6: Option<Ipv6Net>,
    /// No traffic in or out of the bridge (`--internal`).
    pub internal: bool,
    /// Masquerade outbound traffic (Docker's `enable_ip_masquerade`, default on).
    pub masquerade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port, forwarded with DNAT for traffic from other hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub proto: Proto,
    /// `None` = every local address (of the container address's family).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// IPv4 or IPv6; the rule applies to that family only.
    pub container_ip: IpAddr,
    pub container_port: u16,
    /// The container's bridge (DNAT does not apply to traffic coming from it).
    pub bridge: String,
}

/// Everything Berth's tables contain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub bridges: Vec<BridgeRules>,
    pub ports: Vec<PortRule>,
}

/// A firewall backend.
pub trait Firewall: Send + Sync {
    /// Replaces Berth's rules with `rules`, atomically.
    fn apply(&self, rules: &Ruleset) -> Result<(), FirewallError>;
    /// Removes everything Berth added.
    fn clear(&self) -> Result<(), FirewallError>;
    /// `nftables` or `iptables`.
    fn name(&self) -> &'static str;
}

/// nftables through `nft -j -f -`, in one `inet` table of its own.
pub struct Nftables {
    pub table: String,
    pub nft: String,
}

impl Nftables {
    pub fn new(table: impl Into<String>) -> Self {
        Nftables {
            table: table.into(),
            nft: "nft".into(),
        }
    }

    /// Whether `nft` runs here.
    pub fn available() -> bool {
        installed("nft")
    }

    fn run(&self, batch: &Value) -> Result<(), FirewallError> {
        run_with_stdin(&self.nft, &["-j", "-f", "-"], &batch.to_string())
    }

    fn table(&self) -> Value {
        json!({"family": "inet", "name": self.table})
    }

    /// The batch that replaces the table's contents with `r`.
    pub fn batch(&self, r: &Ruleset) -> Value {
        let t = &self.table;
        let mut cmds = vec![
            json!({"add": {"table": self.table()}}),
            json!({"delete": {"table": self.table()}}),
            json!({"add": {"table": self.table()}}),
        ];
        let chain = |name: &str, ty: &str, hook: &str, prio: i32| json!({"add": {"chain": {"family": "inet", "table": t, "name": name, "type": ty, "hook": hook, "prio": prio, "policy": "accept"}}});
        cmds.push(chain("forward", "filter", "forward", 0));
        cmds.push(chain("prerouting", "nat", "prerouting", -100));
        cmds.push(chain("postrouting", "nat", "postrouting", 100));
        let rule = |chain: &str, expr: Vec<Value>| json!({"add": {"rule": {"family": "inet", "table": t, "chain": chain, "expr": expr}}});
        let is = |key: &str, v: Value| json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": v}});
        let not = |key: &str, v: Value| json!({"match": {"op": "!=", "left": {"meta": {"key": key}}, "right": v}});
        let saddr = |n: &Ipv4Net| json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": n.network().to_string(), "len": n.prefix}}}});
        let saddr6 = |n: &Ipv6Net| json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": {"prefix": {"addr": n.network().to_string(), "len": n.prefix}}}});
        // Published ports are reachable from every network (the DNAT marks them).
        if !r.ports.is_empty() {
            cmds.push(rule(
                "forward",
                vec![
                    json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}),
                    json!({"accept": null}),
                ],
            ));
        }
        let names: Vec<&str> = r.bridges.iter().map(|b| b.bridge.as_str()).collect();
        for b in &r.bridges {
            if b.internal {
                // Nothing leaves the bridge, nothing enters it from elsewhere.
                for (this, other) in [("iifname", "oifname"), ("oifname", "iifname")] {
                    cmds.push(rule(
                        "forward",
                        vec![
                            is(this, json!(b.bridge)),
                            not(other, json!(b.bridge)),
                            json!({"drop": null}),
                        ],
                    ));
                }
                continue;
            }
            // Isolation: nothing from this bridge to another Berth bridge.
            let others: Vec<&str> = names.iter().copied().filter(|n| *n != b.bridge).collect();
            if !others.is_empty() {
                cmds.push(rule(
                    "forward",
                    vec![
                        is("iifname", json!(b.bridge)),
                        is("oifname", json!({"set": others})),
                        json!({"drop": null}),
                    ],
                ));
            }
            if b.masquerade {
                let sources =
                    std::iter::once(saddr(&b.subnet)).chain(b.subnet6.as_ref().map(saddr6));
                for source in sources {
                    cmds.push(rule(
                        "postrouting",
                        vec![
                            source,
                            not("oifname", json!(b.bridge)),
                            json!({"masquerade": null}),
                        ],
                    ));
                }
            }
        }
        for p in &r.ports {
            // A port bound to a loopback address is served by the userland proxy only: no
            // DNAT, so other hosts can never reach it.
            if p.host_ip.is_some_and(|ip| ip.is_loopback()) {
                continue;
            }
            let (fam, nfproto) = if p.container_ip.is_ipv6() {
                ("ip6", "ipv6")
            } else {
                ("ip", "ipv4")
            };
            // A host address of the other family never matches this rule.
            if p.host_ip
                .is_some_and(|ip| ip.is_ipv6() != p.container_ip.is_ipv6())
            {
                continue;
            }
            let mut e = vec![
                is("nfproto", json!(nfproto)),
                not("iifname", json!(p.bridge)),
            ];
            match p.host_ip {
                Some(ip) if !ip.is_unspecified() => e.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": fam, "field": "daddr"}}, "right": ip.to_string()}})),
                _ => e.push(json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})),
            }
            e.push(json!({"match": {"op": "==", "left": {"payload": {"protocol": p.proto.as_str(), "field": "dport"}}, "right": p.host_port}}));
            e.push(json!({"dnat": {"family": fam, "addr": p.container_ip.to_string(), "port": p.container_port}}));
            cmds.push(rule("prerouting", e));
        }
        json!({"nftables": cmds})
    }
}

impl Firewall for Nftables {
    fn apply(&self, rules: &Ruleset) -> Result<(), FirewallError> {
        self.run(&self.batch(rules))
    }
    fn clear(&self) -> Result<(), FirewallError> {
        self.run(&json!({"nftables": [
            {"add": {"table": self.table()}},
            {"delete": {"table": self.table()}},
        ]}))
    }
    fn name(&self) -> &'static str {
        "nftables"
    }
}

/// iptables fallback: chains of its own (`<PREFIX>-FWD`, `<PREFIX>-PRE`, `<PREFIX>-POST`),
/// rewritten with `iptables-restore --noflush` (atomic per table), plus one jump from each
/// built-in chain. Nothing else is read or changed.
pub struct Iptables {
    pub prefix: String,
    /// `iptables` (IPv4) or `ip6tables`.
    pub bin: &'static str,
    /// (IPv4 instance) whether chains of ours may exist in `ip6tables`: true at start (a
    /// stale run), then only while networks with `--ipv6` exist, so IPv4-only setups never
    /// spawn `ip6tables`.
    v6_maybe: std::sync::atomic::AtomicBool,
}

impl Iptables {
    pub fn new(prefix: impl Into<String>) -> Self {
        Iptables {
            prefix: prefix.into(),
            bin: "iptables",
            v6_maybe: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The same chains in `ip6tables`: NAT66, DNAT to containers' IPv6 addresses, isolation.
    pub fn v6(prefix: impl Into<String>) -> Self {
        Iptables {
            prefix: prefix.into(),
            bin: "ip6tables",
            v6_maybe: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn is_v6(&self) -> bool {
        self.bin == "ip6tables"
    }

    fn restore(&self, input: &str) -> Result<(), FirewallError> {
        run_with_stdin(&format!("{}-restore", self.bin), &["--noflush"], input)
    }

    fn jump(&self, table: &str, builtin: &str, chain: &str, add: bool) {
        let exists = self.call(&["-t", table, "-C", builtin, "-j", chain]);
        if add && !exists {
            let _ = Command::new(self.bin)
                .args(["-w", "-t", table, "-I", builtin, "-j", chain])
                .status();
        } else if !add && exists {
            let _ = Command::new(self.bin)
                .args(["-w", "-t", table, "-D", builtin, "-j", chain])
                .status();
        }
    }

    /// The `iptables-restore` (or `ip6tables-restore`) input for `r`.
    pub fn script(&self, r: &Ruleset) -> String {
        let v6 = self.is_v6();
        let (fwd, pre, post) = (
            format!("{}-FWD", self.prefix),
            format!("{}-PRE", self.prefix),
            format!("{}-POST", self.prefix),
        );
        let mut f = format!("*filter\n:{fwd} - [0:0]\n");
        let mut n = format!("*nat\n:{pre} - [0:0]\n:{post} - [0:0]\n");
        if !r.ports.is_empty() {
            f += &format!("-A {fwd} -m conntrack --ctstate DNAT -j ACCEPT\n");
        }
        for b in &r.bridges {
            if b.internal {
                f += &format!("-A {fwd} -i {0} ! -o {0} -j DROP\n", b.bridge);
                f += &format!("-A {fwd} -o {0} ! -i {0} -j DROP\n", b.bridge);
                continue;
            }
            for o in r.bridges.iter().filter(|o| o.bridge != b.bridge) {
                f += &format!("-A {fwd} -i {} -o {} -j DROP\n", b.bridge, o.bridge);
            }
            let subnet = if v6 {
                b.subnet6.map(|s| format!("{}/{}", s.network(), s.prefix))
            } else {
                Some(format!("{}/{}", b.subnet.network(), b.subnet.prefix))
            };
            if let (true, Some(sn)) = (b.masquerade, subnet) {
                n += &format!("-A {post} -s {sn} ! -o {} -j MASQUERADE\n", b.bridge);
            }
        }
        for p in &r.ports {
            // Each family's rules in its own tool; loopback bindings never get DNAT.
            if p.host_ip
                .is_some_and(|ip| ip.is_loopback() || ip.is_ipv6() != v6)
                || p.container_ip.is_ipv6() != v6
            {
                continue;
            }
            let dst = match p.host_ip {
                Some(ip) if !ip.is_unspecified() => {
                    format!("-d {ip}/{}", if v6 { 128 } else { 32 })
                }
                _ => "-m addrtype --dst-type LOCAL".into(),
            };
            let to = if v6 {
                format!("[{}]:{}", p.container_ip, p.container_port)
            } else {
                format!("{}:{}", p.container_ip, p.container_port)
            };
            n += &format!(
                "-A {pre} ! -i {} {dst} -p {proto} -m {proto} --dport {} -j DNAT --to-destination {to}\n",
                p.bridge,
                p.host_port,
                proto = p.proto.as_str()
            );
        }
        f += "COMMIT\n";
        n += "COMMIT\n";
        f + &n
    }
}

impl Iptables {
    fn apply_family(&self, rules: &Ruleset) -> Result<(), FirewallError> {
        self.restore(&self.script(rules))?;
        self.jump("filter", "FORWARD", &format!("{}-FWD", self.prefix), true);
        self.jump("nat", "PREROUTING", &format!("{}-PRE", self.prefix), true);
        self.jump("nat", "POSTROUTING", &format!("{}-POST", self.prefix), true);
        Ok(())
    }

    fn clear_family(&self) {
        self.jump("filter", "FORWARD", &format!("{}-FWD", self.prefix), false);
        self.jump("nat", "PREROUTING", &format!("{}-PRE", self.prefix), false);
        self.jump(
            "nat",
            "POSTROUTING",
            &format!("{}-POST", self.prefix),
            false,
        );
        for (t, c) in [("filter", "FWD"), ("nat", "PRE"), ("nat", "POST")] {
            self.remove_chain(t, &format!("{}-{c}", self.prefix));
        }
    }

    fn has_ip6tables() -> bool {
        installed("ip6tables-restore")
    }

    /// Runs `iptables -w ARGS`, its errors not shown; whether it succeeded.
    fn call(&self, args: &[&str]) -> bool {
        Command::new(self.bin)
            .arg("-w")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Flushes and deletes `chain` of `table` (nothing where it does not exist).
    fn remove_chain(&self, table: &str, chain: &str) {
        self.call(&["-t", table, "-F", chain]);
        self.call(&["-t", table, "-X", chain]);
    }
}

impl Firewall for Iptables {
    /// IPv4 rules in `iptables`; with networks with `--ipv6`, the IPv6 ones in `ip6tables`.
    fn apply(&self, rules: &Ruleset) -> Result<(), FirewallError> {
        use std::sync::atomic::Ordering;
        self.apply_family(rules)?;
        if self.is_v6() {
            return Ok(());
        }
        let wants6 = rules.bridges.iter().any(|b| b.subnet6.is_some());
        if wants6 {
            self.v6_maybe.store(true, Ordering::Relaxed);
            Iptables::v6(self.prefix.clone()).apply_family(rules)?;
        } else if self.v6_maybe.swap(false, Ordering::Relaxed) && Self::has_ip6tables() {
            Iptables::v6(self.prefix.clone()).clear_family();
        }
        Ok(())
    }
    fn clear(&self) -> Result<(), FirewallError> {
        self.clear_family();
        if !self.is_v6() && Self::has_ip6tables() {
            Iptables::v6(self.prefix.clone()).clear_family();
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "iptables"
    }
}

/// Narrow accept rules where the host's iptables `FORWARD` policy drops (Docker installs
/// such a policy; so do many firewalls). A Berth nftables table cannot override a drop in
/// another table, so when — and only when — `iptables -S FORWARD` shows `-P FORWARD DROP`,
/// a chain of Berth's own (`<prefix>-ACCEPT`, jumped to first from `FORWARD`) accepts traffic
/// leaving each bridge and replies / DNAT-ed flows entering it. Otherwise the chain and the
/// jump are removed. Returns whether the rules are installed.
pub fn forward_accept(prefix: &str, bridges: &[String]) -> Result<bool, FirewallError> {
    forward_accept_in(&Iptables::new(prefix), bridges)
}

/// [`forward_accept`] for IPv6 (`ip6tables`), for the bridges of networks with `--ipv6`
/// (Docker sets the IPv6 `FORWARD` policy to DROP too). Nothing is done, and `false` is
/// returned, where `ip6tables` is missing.
pub fn forward_accept6(prefix: &str, bridges: &[String]) -> Result<bool, FirewallError> {
    if !installed("ip6tables") {
        return Ok(false);
    }
    forward_accept_in(&Iptables::v6(prefix), bridges)
}

fn forward_accept_in(ipt: &Iptables, bridges: &[String]) -> Result<bool, FirewallError> {
    let chain = format!("{}-ACCEPT", ipt.prefix);
    let listing = Command::new(ipt.bin)
        .args(["-w", "-S", "FORWARD"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let drop_policy = listing.lines().any(|l| l.trim() == "-P FORWARD DROP");
    if !drop_policy || bridges.is_empty() {
        // Nothing to undo unless our jump is there (the common case costs one `iptables -S`).
        if !listing.contains(&format!("-j {chain}")) {
            return Ok(false);
        }
        ipt.jump("filter", "FORWARD", &chain, false);
        ipt.remove_chain("filter", &chain);
        return Ok(false);
    }
    let mut script = format!("*filter\n:{chain} - [0:0]\n");
    for b in bridges {
        script += &format!("-A {chain} -i {b} -j ACCEPT\n");
        script += &format!(
            "-A {chain} -o {b} -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n"
        );
    }
    script += "COMMIT\n";
    ipt.restore(&script)?;
    ipt.jump("filter", "FORWARD", &chain, true);
    Ok(true)
}

/// Enables IPv4 forwarding (needed for NAT, as Docker does).
pub fn enable_ip_forward() -> std::io::Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)?.trim() != "1" {
        std::fs::write(p, "1")?;
    }
    Ok(())
}

/// Enables IPv6 forwarding (networks with `--ipv6`, as Docker does).
pub fn enable_ipv6_forward() -> std::io::Result<()> {
    let p = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(p)?.trim() != "1" {
        std::fs::write(p, "1")?;
    }
    Ok(())
}

/// Whether `program --version` succeeds: the tool is installed.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args` with `input` on its standard input; a failure carries its stderr.
fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Result<(), FirewallError> {
    let cmd = format!("{program} {}", args.join(" "));
    let spawn_err = |source| FirewallError::Spawn {
        cmd: cmd.clone(),
        source,
    };
    let out = berth_util::process::output_with_input(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        input.as_bytes(),
    )
    .map_err(spawn_err)?;
    if !out.status.success() {
        return Err(FirewallError::Failed {
            cmd,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` contains `needle` (the text is shown when it does not).
    #[track_caller]
    fn assert_has(text: &str, needle: &str) {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    fn rules() -> Ruleset {
        Ruleset {
            bridges: vec![
                BridgeRules {
                    bridge: "bra".into(),
                    subnet: "10.1.0.0/24".parse().unwrap(),
                    subnet6: Some("fd00:1:2::/64".parse().unwrap()),
                    internal: false,
                    masquerade: true,
                },
                BridgeRules {
                    bridge: "brb".into(),
                    subnet: "10.2.0.0/24".parse().unwrap(),
                    subnet6: None,
                    internal: false,
                    masquerade: true,
                },
            ],
            ports: vec![
                PortRule {
                    proto: Proto::Tcp,
                    host_ip: Some(IpAddr::from([127, 0, 0, 1])),
                    host_port: 8080,
                    container_ip: "10.1.0.2".parse().unwrap(),
                    container_port: 80,
                    bridge: "bra".into(),
                },
                PortRule {
                    proto: Proto::Udp,
                    host_ip: None,
                    host_port: 5353,
                    container_ip: "10.1.0.2".parse().unwrap(),
                    container_port: 53,
                    bridge: "bra".into(),
                },
                PortRule {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8443,
                    container_ip: "fd00:1:2::2".parse().unwrap(),
                    container_port: 443,
                    bridge: "bra".into(),
                },
            ],
        }
    }

    #[test]
    fn nft_batch_is_self_contained_and_skips_loopback_ports() {
        let b = Nftables::new("berth_t").batch(&rules()).to_string();
        assert!(b.starts_with(
            r#"{"nftables":[{"add":{"table":{"family":"inet","name":"berth_t"}}},{"delete""#
        ));
        assert!(!b.contains("8080"), "{b}");
        assert_has(&b, r#""right":5353}"#);
        assert!(b.contains(r#""masquerade":null"#));
        // Every command names our table only.
        let v: Value = serde_json::from_str(&b).unwrap();
        for c in v["nftables"].as_array().unwrap() {
            let inner = c.as_object().unwrap().values().next().unwrap();
            let obj = inner.as_object().unwrap().values().next().unwrap();
            let name = obj.get("table").or(obj.get("name")).unwrap();
            assert_eq!(name, "berth_t");
        }
    }

    #[test]
    fn nft_applies_and_clears_its_own_table() {
        if !Nftables::available() {
            return;
        }
        let name = format!("berth_ut_{}", std::process::id());
        let nft = Nftables::new(name.clone());
        nft.apply(&rules()).unwrap();
        let list = |n: &str| {
            Command::new("nft")
                .args(["list", "table", "inet", n])
                .output()
                .unwrap()
        };
        let out = String::from_utf8(list(&name).stdout).unwrap();
        assert_has(&out, "dnat ip to 10.1.0.2:53");
        assert_has(&out, "dnat ip6 to [fd00:1:2::2]:443");
        assert_has(&out, "ip6 saddr fd00:1:2::/64");
        assert_has(&out, "masquerade");
        // Applying again replaces (no duplicates).
        nft.apply(&rules()).unwrap();
        let again = String::from_utf8(list(&name).stdout).unwrap();
        assert_eq!(again.matches("masquerade").count(), 3, "{again}");
        nft.clear().unwrap();
        assert!(!list(&name).status.success());
        nft.clear().unwrap();
    }

    /// Runs `f` in a network namespace of its own (held by an `unshare -n sleep` process that
    /// is killed afterwards, on failure too), so that the host's iptables are never touched;
    /// `None`, printing why, without iptables.
    fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if !installed("iptables-restore") {
            eprintln!("skipped: needs iptables-restore");
            return None;
        }
        struct Holder(std::process::Child);
        impl Drop for Holder {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let holder = Holder(
            Command::new("unshare")
                .args(["-n", "sleep", "60"])
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let ns = crate::netlink::Netns::of_pid(holder.0.id());
        Some(ns.run(f).unwrap())
    }

    #[test]
    fn iptables_applies_and_clears_its_own_chains() {
        let Some((nat, after)) = in_private_netns(|| {
            let ipt = Iptables::new("BERTH-UT");
            ipt.apply(&rules()).unwrap();
            ipt.apply(&rules()).unwrap();
            let nat = Command::new("sh")
                .arg("-c")
                .arg("iptables -w -t nat -S; ip6tables -w -t nat -S")
                .output()
                .unwrap();
            ipt.clear().unwrap();
            let all = Command::new("sh")
                    .arg("-c")
                    .arg("iptables -w -S; iptables -w -t nat -S; ip6tables -w -S; ip6tables -w -t nat -S")
                    .output()
                    .unwrap();
            (
                String::from_utf8_lossy(&nat.stdout).into_owned(),
                String::from_utf8_lossy(&all.stdout).into_owned(),
            )
        }) else {
            return;
        };
        assert!(
            nat.lines()
                .any(|l| l.starts_with("-A BERTH-UT-PRE ! -i bra")
                    && l.contains("--dport 5353 -j DNAT --to-destination 10.1.0.2:53")),
            "{nat}"
        );
        let families = if Iptables::has_ip6tables() { 2 } else { 1 };
        assert_eq!(nat.matches("-j BERTH-UT-PRE").count(), families, "{nat}");
        if Iptables::has_ip6tables() {
            assert_has(
                &nat,
                "--dport 8443 -j DNAT --to-destination [fd00:1:2::2]:443",
            );
            assert_has(
                &nat,
                "-A BERTH-UT-POST -s fd00:1:2::/64 ! -o bra -j MASQUERADE",
            );
        }
        assert!(!after.contains("BERTH-UT"), "{after}");
    }

    #[test]
    fn forward_accept_only_under_a_drop_policy_in_a_private_namespace() {
        let Some(out) = in_private_netns(|| {
            let run = |program: &str, args: &[&str]| {
                let o = Command::new(program).arg("-w").args(args).output().unwrap();
                String::from_utf8_lossy(&o.stdout).into_owned()
            };
            let ipt = |args: &[&str]| run("iptables", args);
            let ip6t = |args: &[&str]| run("ip6tables", args);
            let bridges = vec!["bra".to_string()];
            let r1 = forward_accept("BERTH-T", &bridges).unwrap();
            ipt(&["-P", "FORWARD", "DROP"]);
            let r2 = forward_accept("BERTH-T", &bridges).unwrap();
            let r3 = forward_accept("BERTH-T", &bridges).unwrap();
            let rules = ipt(&["-S"]);
            ipt(&["-P", "FORWARD", "ACCEPT"]);
            let r4 = forward_accept("BERTH-T", &bridges).unwrap();
            let after = ipt(&["-S"]);
            // IPv6: the same, in ip6tables, independently of the IPv4 policy.
            ip6t(&["-P", "FORWARD", "DROP"]);
            let v6 = forward_accept6("BERTH-T", &bridges).unwrap();
            let rules6 = ip6t(&["-S"]);
            ip6t(&["-P", "FORWARD", "ACCEPT"]);
            let v6_off = forward_accept6("BERTH-T", &bridges).unwrap();
            let after6 = ip6t(&["-S"]);
            let have6 = Iptables::has_ip6tables();
            assert_eq!(v6, have6);
            if have6 {
                assert_has(&rules6, "-A BERTH-T-ACCEPT -i bra -j ACCEPT");
                assert!(!v6_off && !after6.contains("BERTH-T"), "{after6}");
            }
            (r1, r2, r3, r4, rules, after)
        }) else {
            return;
        };
        let (r1, r2, r3, r4, rules, after) = out;
        assert!(!r1 && r2 && r3 && !r4);
        assert_has(&rules, "-A BERTH-T-ACCEPT -i bra -j ACCEPT");
        assert_eq!(
            rules.matches("-A FORWARD -j BERTH-T-ACCEPT").count(),
            1,
            "{rules}"
        );
        assert!(
            rules.contains("-P FORWARD DROP"),
            "the policy is never changed: {rules}"
        );
        assert!(!after.contains("BERTH-T"), "{after}");
    }

    #[test]
    fn iptables_script_uses_own_chains() {
        let s = Iptables::new("BERTH-T").script(&rules());
        for l in s.lines().filter(|l| l.starts_with("-A")) {
            assert!(l.starts_with("-A BERTH-T-"), "{l}");
        }
        assert!(!s.contains("8080"));
        assert!(
            !s.contains("8443"),
            "IPv6 rules are not written to iptables"
        );
        assert!(s.contains("-i bra -o brb -j DROP"));
    }
}
