//! More of the CRI: a pod's network released when its sandbox is removed through the Docker
//! API and at daemon start (a record lost, a setup cut short by a crash); the mount
//! propagation check at `CreateContainer`; the streaming server's idle timeout and a dropped
//! streaming connection (the exec's process killed, nothing of the session left in berthd).

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cri::proto as pb;
use common::cri::*;
use common::*;

/// The rules of the portmap plugin for a container (their comments carry its id).
fn portmap_rules(id: &str) -> usize {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(id))
        .count()
}

fn pod_with_port(d: &Daemon, port: u16) -> pb::PodSandboxConfig {
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let mut cfg = sandbox_config(d, &uid, &d.path("pod-logs"));
    cfg.port_mappings = vec![pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: port as i32,
        host_ip: String::new(),
    }];
    cfg
}

#[test]
fn cri_network_released_when_the_sandbox_is_removed_through_the_docker_api() {
    let Some((net, d, _pods)) = cri_daemon(1) else {
        return;
    };
    let cfg = pod_with_port(&d, free_port());
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let sid = run_pod(&mut r, &cfg).await;
        assert_eq!(net.leases().len(), 1);
        assert!(portmap_rules(&sid) > 0, "portmap's rules of {sid}");
        d.docker(&["rm", "-f", &sid]).ok();
        assert!(
            wait_until(Duration::from_secs(20), || net.leases().is_empty()
                && portmap_rules(&sid) == 0),
            "the address ({:?}) or port mapping of a sandbox removed through the Docker API stays",
            net.leases()
        );
        // The record stays, NOTREADY, until the kubelet removes it (no second DEL).
        assert_eq!(
            sandbox_state(&mut r, &sid).await.0,
            pb::PodSandboxState::SandboxNotready as i32
        );
        remove_pod(&mut r, &sid).await;
        assert!(list_pods(&mut r).await.is_empty());
    });
    drop(_pods);
    d.finish();
}

#[test]
fn cri_networks_left_by_a_crash_are_released_at_daemon_start() {
    let Some((net, mut d, _pods)) = cri_daemon(2) else {
        return;
    };
    // (A record-less sandbox's port mappings are unknown: the record is synced before the
    // CNI ADD, so only a crash before it leaves none, and nothing to delete then.)
    let mut lost_cfg = pod_with_port(&d, free_port());
    lost_cfg.port_mappings.clear();
    let cut_cfg = pod_with_port(&d, free_port());
    let runtime = rt();
    let (lost, cut) = runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        (
            run_pod(&mut r, &lost_cfg).await,
            run_pod(&mut r, &cut_cfg).await,
        )
    });
    assert_eq!(net.leases().len(), 2);
    assert!(portmap_rules(&cut) > 0, "portmap's rules of {cut}");
    d.kill9();
    // `lost`: no record (its engine container made, berthd killed before the record);
    // `cut`: berthd died during its CNI ADD (the record written before, without the network,
    // or the complete one lost with a power loss).
    let records = d.path("data/cri/sandboxes");
    std::fs::remove_file(records.join(format!("{lost}.json"))).unwrap();
    let p = records.join(format!("{cut}.json"));
    let mut rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    rec["network"] = serde_json::Value::Null;
    std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
    d.start();
    assert!(
        wait_until(Duration::from_secs(30), || net.leases().is_empty()
            && portmap_rules(&cut) == 0),
        "addresses {:?} (or port mappings) of the crashed pods stay",
        net.leases()
    );
    runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        let items = list_pods(&mut r).await;
        // The sandbox without a record is removed; the one cut short is NOTREADY.
        assert_eq!(
            items.iter().map(|p| (&p.id, p.state)).collect::<Vec<_>>(),
            vec![(&cut, pb::PodSandboxState::SandboxNotready as i32)]
        );
        assert!(d.docker(&["inspect", &lost]).code != 0);
        stop_pod(&mut r, &cut).await;
        remove_pod(&mut r, &cut).await;
    });
    drop(_pods);
    d.finish();
}

/// A tmpfs mounted (with the given propagation) on a directory of its own; unmounted on drop.
struct TestMount(tempfile::TempDir);

impl TestMount {
    fn new(propagation: &str) -> TestMount {
        let dir = tempfile::Builder::new()
            .prefix("cri-prop")
            .tempdir()
            .unwrap();
        let p = dir.path().to_str().unwrap();
        assert!(Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs", p])
            .status()
            .unwrap()
            .success());
        let m = TestMount(dir);
        m.set(propagation);
        m
    }

    fn set(&self, propagation: &str) {
        assert!(Command::new("mount")
            .arg(format!("--make-{propagation}"))
            .arg(self.0.path())
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn cri_mount_propagation_is_checked_at_create() {
    let d = root_daemon!();
    let _pods = remove_pods(&d);
    let m = TestMount::new("private");
    let host_path = m.0.path().display().to_string();
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let uid = format!("uid-{}", berth_testkit::unique_id());
        let cfg = host_network_sandbox_config(&d, &uid, &d.path("pod-logs"));
        let sid = run_pod(&mut r, &cfg).await;
        let create = |propagation: pb::MountPropagation, attempt: u32| {
            let mut c = busybox_container("prop", "sleep 3600");
            c.metadata.as_mut().unwrap().attempt = attempt;
            c.mounts = vec![pb::Mount {
                container_path: "/m".into(),
                host_path: host_path.clone(),
                propagation: propagation as i32,
                ..Default::default()
            }];
            pb::CreateContainerRequest {
                pod_sandbox_id: sid.clone(),
                config: Some(c),
                sandbox_config: Some(cfg.clone()),
            }
        };
        // containerd's words, at create (not at start).
        let e = r
            .create_container(create(pb::MountPropagation::PropagationBidirectional, 0))
            .await
            .unwrap_err();
        assert!(
            e.message().ends_with("but it is not a shared mount"),
            "{e:?}"
        );
        let e = r
            .create_container(create(pb::MountPropagation::PropagationHostToContainer, 0))
            .await
            .unwrap_err();
        assert!(
            e.message()
                .ends_with("but it is not a shared or slave mount"),
            "{e:?}"
        );
        // Nothing was created.
        assert!(list_containers(&mut r).await.is_empty());
        // A shared source: both are created and start.
        m.set("shared");
        for (i, p) in [
            pb::MountPropagation::PropagationBidirectional,
            pb::MountPropagation::PropagationHostToContainer,
        ]
        .into_iter()
        .enumerate()
        {
            let id = r
                .create_container(create(p, i as u32))
                .await
                .unwrap()
                .into_inner()
                .container_id;
            start_container(&mut r, &id).await;
        }
        remove_pod(&mut r, &sid).await;
    });
    drop(_pods);
    d.finish();
    drop(m);
}

/// A host-network pod with a running busybox container; (sandbox, container).
async fn host_pod(r: &mut Runtime, d: &Daemon) -> (String, String) {
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let cfg = host_network_sandbox_config(d, &uid, &d.path("pod-logs"));
    let sid = run_pod(r, &cfg).await;
    let cid = run_container(r, &sid, &cfg, busybox_container("main", "sleep 3600")).await;
    (sid, cid)
}

/// The host's processes whose command line is `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want)
        })
        .collect()
}

/// `pid`'s open descriptors, leaving out the CRI socket's (the test's own gRPC client may
/// open another connection to it at any time; a session's descriptors are TCP and shim
/// streams).
fn open_fds(pid: u32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| !t.ends_with("/cri.sock"))
        .count()
}

/// [`open_fds`] once it holds still for 300 ms.
fn settled_fds(pid: u32) -> usize {
    let mut last = open_fds(pid);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = open_fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// What `pid`'s descriptors point at (for a failure's message).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| {
                    let t = t.display().to_string();
                    let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']'))
                    else {
                        return t;
                    };
                    // The socket's line in /proc/net/{unix,tcp,tcp6}, when it has one.
                    ["unix", "tcp", "tcp6"]
                        .iter()
                        .filter_map(|f| {
                            std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok()
                        })
                        .flat_map(|txt| txt.lines().map(str::to_string).collect::<Vec<_>>())
                        .find(|l| l.split_whitespace().any(|w| w == inode))
                        .map_or(t.clone(), |l| format!("{t} {}", l.trim()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Opens an exec URL as a WebSocket (`v5.channel.k8s.io`); the connection after the 101.
fn ws_exec(url: &str) -> std::net::TcpStream {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = std::net::TcpStream::connect(host).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut b).unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

async fn exec_url(r: &mut Runtime, cid: &str, cmd: &[&str]) -> String {
    r.exec(pb::ExecRequest {
        container_id: cid.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdout: true,
        stderr: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

#[test]
fn cri_stream_idle_timeout_closes_the_connection_and_kills_the_exec() {
    require_root!();
    let d = Daemon::with_args(&["--cri-stream-idle-timeout".into(), "1s".into()]);
    let _pods = remove_pods(&d);
    let n = format!("{}", 40000 + std::process::id() % 20000);
    let argv = ["sleep", n.as_str()];
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let (_, cid) = host_pod(&mut r, &d).await;
        let url = exec_url(&mut r, &cid, &argv).await;
        let mut tcp = ws_exec(&url);
        let t0 = Instant::now();
        assert!(wait_until(Duration::from_secs(10), || !processes(&argv).is_empty()));
        // Nothing goes either way: the server closes the connection after a second.
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(20),
            "closed after {took:?}"
        );
        assert!(
            wait_until(Duration::from_secs(10), || processes(&argv).is_empty()),
            "the exec's process outlives its idle connection"
        );
    });
    drop(_pods);
    d.finish();
}

#[test]
fn cri_dropped_stream_connection_kills_the_exec_and_leaves_nothing() {
    require_root!();
    // The default idle timeout (4h): only the drop ends the session here.
    let d = Daemon::new();
    let _pods = remove_pods(&d);
    let n = format!("{}", 20000 + std::process::id() % 20000);
    let argv = ["sleep", n.as_str()];
    let berthd = d.child.as_ref().unwrap().id();
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let (_, cid) = host_pod(&mut r, &d).await;
        // Settled: the container's monitor connects to its shim after the start returns.
        let before = settled_fds(berthd);
        let targets = fd_targets(berthd);
        let url = exec_url(&mut r, &cid, &argv).await;
        let tcp = ws_exec(&url);
        assert!(wait_until(Duration::from_secs(10), || !processes(&argv).is_empty()));
        assert!(open_fds(berthd) > before);
        drop(tcp);
        let t0 = Instant::now();
        assert!(
            wait_until(Duration::from_secs(10), || processes(&argv).is_empty()),
            "the exec's process outlives its client's connection"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        // The session's connection and its shim stream are closed.
        assert!(
            wait_until(Duration::from_secs(10), || open_fds(berthd) <= before),
            "berthd holds {} descriptors, {before} before the session: {:?}, before {targets:?}",
            open_fds(berthd),
            fd_targets(berthd)
        );
    });
    drop(_pods);
    d.finish();
}

/// A CRI create is volatile (neither its intent nor its record synced): what a power loss
/// can leave of one (its directory with an empty record or none, its snapshot, its intent
/// gone) is removed at the daemon's start, and the container can be made again; the
/// sandbox and a container that kept its record are as they were. Also: `StopContainer` of
/// an unknown container succeeds (the CRI's idempotence), an ambiguous id does not.
#[test]
fn cri_creates_a_power_loss_cut_are_removed_at_daemon_start() {
    require_root!();
    let mut d = Daemon::new();
    let _pods = remove_pods(&d);
    let runtime = rt();
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let cfg = host_network_sandbox_config(&d, &uid, &d.path("pod-logs"));
    let (sid, kept, empty, missing) = runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        let sid = run_pod(&mut r, &cfg).await;
        let mut ids = Vec::new();
        for name in ["kept", "empty", "missing"] {
            ids.push(
                create_container(&mut r, &sid, &cfg, busybox_container(name, "sleep 3600")).await,
            );
        }
        stop_container(&mut r, "0123456789abcdef-no-such-container", 0).await;
        (sid, ids[0].clone(), ids[1].clone(), ids[2].clone())
    });
    d.kill9();
    // The records a power loss took: one emptied (written, never synced), one never there;
    // the CRI's records of them too (written after, not synced either).
    std::fs::write(
        d.path(&format!("data/containers/{empty}/config.v2.json")),
        b"",
    )
    .unwrap();
    std::fs::remove_file(d.path(&format!("data/containers/{missing}/config.v2.json"))).unwrap();
    for id in [&empty, &missing] {
        std::fs::remove_file(d.path(&format!("data/cri/containers/{id}.json"))).unwrap();
        assert!(d
            .path(&format!("data/snapshotter/containers/{id}"))
            .exists());
    }
    d.start();
    for id in [&empty, &missing] {
        for dir in [
            "data/containers",
            "data/snapshotter/containers",
            "exec/containers",
        ] {
            let p = d.path(&format!("{dir}/{id}"));
            assert!(!p.exists(), "{} is left", p.display());
        }
    }
    assert!(list_dir(&d.path("data/journal")).is_empty());
    runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        let listed: Vec<String> = r
            .list_containers(pb::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(listed, vec![kept.clone()]);
        assert_eq!(
            sandbox_state(&mut r, &sid).await.0,
            pb::PodSandboxState::SandboxReady as i32
        );
        // The names are free again.
        let again =
            run_container(&mut r, &sid, &cfg, busybox_container("empty", "sleep 3600")).await;
        assert_eq!(
            container_state(&mut r, &again).await.state,
            pb::ContainerState::ContainerRunning as i32
        );
        // No id at all is still an error.
        let e = r
            .stop_container(pb::StopContainerRequest {
                container_id: String::new(),
                timeout: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        remove_pod(&mut r, &sid).await;
    });
    drop(_pods);
    d.finish();
}

/// `ExecSync` past its timeout: `DeadlineExceeded` (what the kubelet's client reads as a
/// timeout), answered once the command is gone: a command run right after sees no trace of
/// it (critest's "execSync with timeout": `pgrep sleep` finds nothing), not even a zombie.
#[test]
fn cri_exec_sync_timeout_answers_once_the_command_is_gone() {
    require_root!();
    let d = Daemon::new();
    let _pods = remove_pods(&d);
    rt().block_on(async {
        let (mut r, _) = clients(&d).await;
        let (sid, cid) = host_pod(&mut r, &d).await;
        for _ in 0..3 {
            let t0 = Instant::now();
            let e = try_exec_sync(&mut r, &cid, &["sleep", "4321"], 1)
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
            assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
            let out = try_exec_sync(&mut r, &cid, &["sh", "-c", "cat /proc/[0-9]*/stat"], 10)
                .await
                .unwrap();
            let stat = String::from_utf8_lossy(&out.stdout).to_string();
            // `pid (comm) state …`: the container's own `sleep 3600`, `sh` and `cat`.
            let procs: Vec<(&str, &str)> = stat
                .lines()
                .filter_map(|l| {
                    let (head, rest) = l.rsplit_once(") ")?;
                    Some((head.split_once(" (")?.1, rest.split(' ').next()?))
                })
                .collect();
            assert_eq!(
                procs.iter().filter(|(comm, _)| *comm == "sleep").count(),
                1,
                "{procs:?}"
            );
            assert!(procs.iter().all(|(_, state)| *state != "Z"), "{procs:?}");
        }
        remove_pod(&mut r, &sid).await;
    });
    drop(_pods);
    d.finish();
}

#[test]
fn cri_container_whose_mounts_record_a_power_loss_emptied_is_removed_at_daemon_start() {
    let Some((_net, mut d, _pods)) = cri_daemon(1) else {
        return;
    };
    let uid = format!("uid-{}", berth_testkit::unique_id());
    let cfg = sandbox_config(&d, &uid, &d.path("pod-logs"));
    let runtime = rt();
    let (sid, cid) = runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        let sid = run_pod(&mut r, &cfg).await;
        let cid = create_container(&mut r, &sid, &cfg, busybox_container("c", "sleep 60")).await;
        (sid, cid)
    });
    // A CRI create writes its mounts record (the pod's /dev/shm at least) without a sync,
    // as its container record: a power loss may leave it empty.
    let mounts = d.path(&format!("data/containers/{cid}/mounts.json"));
    assert!(
        std::fs::metadata(&mounts).unwrap().len() > 0,
        "no mounts record"
    );
    d.kill9();
    std::fs::write(&mounts, b"").unwrap();
    d.start();
    // The create is undone, as one whose record a power loss took; the pod is untouched.
    assert!(
        d.docker(&["inspect", &cid]).code != 0,
        "{cid} is still there"
    );
    assert!(!d.path(&format!("data/containers/{cid}")).exists());
    runtime.block_on(async {
        let (mut r, _) = clients(&d).await;
        assert_eq!(
            sandbox_state(&mut r, &sid).await.0,
            pb::PodSandboxState::SandboxReady as i32
        );
        r.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: sid.clone(),
        })
        .await
        .unwrap();
        remove_pod(&mut r, &sid).await;
        assert!(list_pods(&mut r).await.is_empty());
    });
    drop(_pods);
    d.finish();
}
