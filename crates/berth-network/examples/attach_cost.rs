//! What plugging a container into a bridge costs on the daemon's side, per container
//! (`cargo run --release -p berth-network --example attach_cost [N]`, root; used by
//! `bench/network`). A private bridge and, per iteration, a fresh network namespace (held by
//! `unshare -n sleep`, created outside the timed part) get one veth pair, as `berthd` does:
//!
//! - `run path`: `attach_all` (veth created inside the namespace, `lo` up, address, route) —
//!   what `berth run` waits for; teardown is a deletion by index on another thread.
//! - `previous sequence`: `loopback_up` on its own thread, then the veth; teardown: two
//!   deletions by name (exit, removal) waited for (while the namespace still exists, i.e. the
//!   worst case: when the kernel has already removed the pair with the namespace they are
//!   two lookups).
//!
//! Prints the medians in microseconds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_network::netlink::{self, Netns, VethSpec};

fn holder() -> Child {
    let c = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare");
    // The namespace exists once /proc/<pid>/ns/net differs from ours.
    let mine = std::fs::read_link("/proc/self/ns/net").ok();
    for _ in 0..200 {
        if std::fs::read_link(format!("/proc/{}/ns/net", c.id())).ok() != mine {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    c
}

fn median(mut v: Vec<Duration>) -> u128 {
    v.sort();
    v[v.len() / 2].as_micros()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let br = format!("bac{}", std::process::id() % 100_000);
    let gw: std::net::Ipv4Addr = "10.253.7.1".parse().unwrap();
    netlink::ensure_bridge(&br, gw, 24, None, None).expect("bridge");
    let spec = |i: usize| VethSpec {
        host_name: format!("vbac{}", i % 10_000),
        bridge: br.clone(),
        ifname: "eth0".into(),
        mac: [0x02, 0x42, 10, 253, 7, 2],
        address: berth_network::Ipv4Net::new("10.253.7.2".parse().unwrap(), 24),
        gateway: Some(gw),
        address6: None,
        gateway6: None,
        mtu: None,
        sysctls: Vec::new(),
    };
    let (mut new, mut old, mut new_td, mut old_td) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let mut h = holder();
        let ns = Netns::of_pid(h.id());
        let s = spec(i);
        let t = Instant::now();
        let idx = netlink::attach_all(&ns, std::slice::from_ref(&s)).expect("attach");
        new.push(t.elapsed());
        let t = Instant::now();
        let th = std::thread::spawn(move || {
            for i in idx {
                let _ = netlink::delete_link_index(i);
            }
        });
        new_td.push(t.elapsed());
        th.join().unwrap();
        let _ = h.kill();
        let _ = h.wait();

        let mut h = holder();
        let ns = Netns::of_pid(h.id());
        let t = Instant::now();
        netlink::loopback_up(&ns).expect("lo");
        netlink::attach_veth(&ns, &s).expect("attach");
        old.push(t.elapsed());
        let t = Instant::now();
        netlink::delete_link(&s.host_name).expect("delete");
        netlink::delete_link(&s.host_name).expect("delete again");
        old_td.push(t.elapsed());
        let _ = h.kill();
        let _ = h.wait();
    }
    let _ = netlink::delete_link(&br);
    println!(
        "attach (run path): median {} us; async teardown hand-off: median {} us",
        median(new),
        median(new_td)
    );
    println!(
        "previous sequence: attach (lo on its own thread, then the veth) median {} us; \
         two synchronous deletions by name median {} us",
        median(old),
        median(old_td)
    );
}
