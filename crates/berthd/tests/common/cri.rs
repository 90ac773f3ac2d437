//! The shared prologue of the CRI tests (`cri.rs`, `cri_stream.rs`): gRPC clients of a
//! daemon's CRI socket, a CNI network of the test's own, pod removal on drop, pod and
//! container configurations.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use berth_buildkit::conn::H2Channel;
use berth_cri::proto as pb;
use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;

pub const CNI_BIN: &str = "/usr/lib/cni";

pub type Runtime = RuntimeServiceClient<H2Channel>;
pub type Images = ImageServiceClient<H2Channel>;

/// Clients of the daemon's CRI socket (one connection each).
pub async fn clients(d: &Daemon) -> (Runtime, Images) {
    let sock = d.path("exec/cri.sock");
    let mut out = Vec::new();
    for _ in 0..2 {
        let io = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let (ch, _) = H2Channel::connect(io).await.unwrap();
        out.push(ch);
    }
    let images = ImageServiceClient::with_origin(out.pop().unwrap(), H2Channel::origin());
    let runtime = RuntimeServiceClient::with_origin(out.pop().unwrap(), H2Channel::origin());
    (runtime, images)
}

/// A CNI network of the test's own: a conflist (bridge + host-local + portmap) in its own
/// configuration directory; the bridge link is deleted on drop, and the portmap plugin's
/// shared chains by the last network of all test processes (see [`PortmapUse`]).
pub struct CniNet {
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet_prefix: String,
    _portmap: PortmapUse,
}

/// The CNI `portmap` plugin makes shared chains (`CNI-HOSTPORT-*` in the iptables `nat`
/// tables, IPv4 and IPv6) at its first pod and keeps them after the last one, as on any CNI
/// host. Every test network holds a shared lock on [`PortmapUse::LOCK`] while it lives; the
/// last one dropped (whose exclusive lock then succeeds: no other test network exists in
/// any test process) removes the chains when no port mapping remains in them, and a `nat`
/// table left with nothing but empty base chains. The lock file goes with them (each holder
/// checks that it locked the file still at the path).
struct PortmapUse(std::fs::File);

impl PortmapUse {
    const LOCK: &'static str = "/run/berth-test-cni-portmap.lock";

    fn hold() -> PortmapUse {
        use rustix::fs::{flock, FlockOperation};
        use std::os::unix::fs::MetadataExt;
        loop {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(Self::LOCK)
                .unwrap();
            flock(&f, FlockOperation::LockShared).unwrap();
            let held = f.metadata().unwrap().ino();
            if std::fs::metadata(Self::LOCK).is_ok_and(|m| m.ino() == held) {
                return PortmapUse(f);
            }
            // Removed by the last user between our open and our lock: again.
        }
    }
}

impl Drop for PortmapUse {
    fn drop(&mut self) {
        use rustix::fs::{flock, FlockOperation};
        // Unlocked first: of two networks dropped at once, each converting its shared lock
        // would fail on the other's, and neither would clean up; unlocked, one of them wins.
        let _ = flock(&self.0, FlockOperation::Unlock);
        if flock(&self.0, FlockOperation::NonBlockingLockExclusive).is_err() {
            return;
        }
        for tool in ["iptables", "ip6tables"] {
            remove_idle_portmap_chains(tool);
        }
        let _ = std::fs::remove_file(Self::LOCK);
    }
}

/// Removes the portmap plugin's chains from `tool`'s `nat` table when no mapping is left in
/// them, then the table itself (through nft) if only empty base chains remain (or none: the
/// plugin's teardown leaves an empty `ip6 nat`).
fn remove_idle_portmap_chains(tool: &str) {
    let run = |args: &[&str]| {
        std::process::Command::new(tool)
            .args(["-w", "-t", "nat"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(rules) = run(&["-S"]) else {
        return;
    };
    if rules.contains("-A CNI-HOSTPORT-DNAT") {
        return;
    }
    if rules.contains("CNI-HOSTPORT") {
        for hook in ["PREROUTING", "OUTPUT"] {
            run(&[
                "-D",
                hook,
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                "CNI-HOSTPORT-DNAT",
            ]);
        }
        run(&[
            "-D",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ]);
        for chain in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ] {
            run(&["-F", chain]);
            run(&["-X", chain]);
        }
    }
    // What iptables-nft made for the chains: `table ip nat` (`ip6`) with base chains only.
    if run(&["-S"]).is_some_and(|r| r.lines().all(|l| l.starts_with("-P "))) {
        let family = if tool == "iptables" { "ip" } else { "ip6" };
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", family, "nat"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl CniNet {
    pub fn new(n: u32) -> CniNet {
        let dir = tempfile::Builder::new()
            .prefix("cri-cni")
            .tempdir()
            .unwrap();
        let pid = std::process::id();
        let bridge = format!("bc{}", berth_testkit::unique_id());
        let subnet_prefix = format!("10.{}.{}.", 192 + ((pid >> 8) & 0x3f), pid & 0xff);
        let subnet = format!("{subnet_prefix}{}/28", (n % 16) * 16);
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("{bridge}-net"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "dataDir": dir.path().join("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(
            dir.path().join("net.d/10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
        CniNet {
            dir,
            bridge,
            subnet_prefix,
            _portmap: PortmapUse::hold(),
        }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// Addresses host-local has handed out (its per-address files).
    pub fn leases(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(
            self.dir
                .path()
                .join("ipam")
                .join(format!("{}-net", self.bridge)),
        ) else {
            return vec![];
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("10."))
            .collect()
    }

    pub fn daemon(&self) -> Daemon {
        let d = Daemon::with_args(&[
            "--cni-conf-dir".into(),
            self.conf_dir().display().to_string(),
            "--cni-bin-dir".into(),
            CNI_BIN.into(),
        ]);
        d
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes every pod through the CRI when dropped (a failed test's too), so their networks
/// are torn down by CNI before the daemon's cleanup removes the containers. Declared after
/// the daemon, so dropped before it.
pub struct RemovePods(PathBuf);

impl Drop for RemovePods {
    fn drop(&mut self) {
        let sock = self.0.clone();
        let Ok(rt) = tokio::runtime::Runtime::new() else {
            return;
        };
        rt.block_on(async move {
            let Ok(io) = tokio::net::UnixStream::connect(&sock).await else {
                return;
            };
            let Ok((ch, _)) = H2Channel::connect(io).await else {
                return;
            };
            let mut r = RuntimeServiceClient::with_origin(ch, H2Channel::origin());
            let Ok(list) = r
                .list_pod_sandbox(pb::ListPodSandboxRequest::default())
                .await
            else {
                return;
            };
            for p in list.into_inner().items {
                let _ = r
                    .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                        pod_sandbox_id: p.id,
                    })
                    .await;
            }
        });
    }
}

pub fn remove_pods(d: &Daemon) -> RemovePods {
    RemovePods(d.path("exec/cri.sock"))
}

pub fn cni_available() -> bool {
    if Path::new(CNI_BIN).join("bridge").exists() && Path::new(CNI_BIN).join("host-local").exists()
    {
        return true;
    }
    eprintln!(
        "skipped: the CNI plugins are not installed in {CNI_BIN} (containernetworking-plugins)"
    );
    false
}

/// The prologue of a CRI test: a CNI network of its own (`n`: its subnet among the test
/// file's), a daemon using it, and the pods' removal on drop (in this order, so dropped in
/// reverse); `None`, after a skip line, without root or the CNI plugins.
pub fn cri_daemon(n: u32) -> Option<(CniNet, Daemon, RemovePods)> {
    if berth_testkit::guard::skip_unless_root() || !cni_available() {
        return None;
    }
    let net = CniNet::new(n);
    let d = net.daemon();
    let pods = remove_pods(&d);
    Some((net, d, pods))
}

/// [`cri_daemon`] with crictl pointed at the daemon; `None`, after a skip line, without root,
/// the CNI plugins or crictl.
pub fn crictl_daemon(n: u32) -> Option<(CniNet, Daemon, RemovePods, Crictl)> {
    let (net, d, pods) = cri_daemon(n)?;
    let crictl = Crictl::new(&d)?;
    Some((net, d, pods, crictl))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A pod uid of the test's own and the pods' log directory on the daemon `d`.
pub fn pod_uid_and_logs(d: &Daemon) -> (String, PathBuf) {
    (
        format!("uid-{}", berth_testkit::unique_id()),
        d.path("pod-logs"),
    )
}

pub fn sandbox_config(d: &Daemon, uid: &str, logs: &Path) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: "web".into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        log_directory: logs.display().to_string(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: [("app".to_string(), "web".to_string())].into(),
        annotations: [("note".to_string(), "x".to_string())].into(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", d.cgroup_parent),
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`sandbox_config`] of a pod on the host's network (no sysctls: a host-network pod may not
/// set network ones).
pub fn host_network_sandbox_config(d: &Daemon, uid: &str, logs: &Path) -> pb::PodSandboxConfig {
    let mut cfg = sandbox_config(d, uid, logs);
    let linux = cfg.linux.get_or_insert_with(Default::default);
    linux.sysctls.clear();
    linux.security_context = Some(pb::LinuxSandboxSecurityContext {
        namespace_options: Some(pb::NamespaceOption {
            network: pb::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

/// Runs a pod sandbox of `cfg` (the default runtime handler); its id.
pub async fn run_pod(r: &mut Runtime, cfg: &pb::PodSandboxConfig) -> String {
    r.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(cfg.clone()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

pub fn busybox_container(name: &str, script: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// CreateContainer of `config` in the pod `sid` (configured as `sandbox`): the container's id.
pub async fn try_create_container(
    r: &mut Runtime,
    sid: &str,
    sandbox: &pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> Result<String, tonic::Status> {
    let res = r
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: sid.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await?;
    Ok(res.into_inner().container_id)
}

/// [`try_create_container`], which must succeed.
pub async fn create_container(
    r: &mut Runtime,
    sid: &str,
    sandbox: &pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> String {
    try_create_container(r, sid, sandbox, config).await.unwrap()
}

/// StartContainer.
pub async fn try_start_container(r: &mut Runtime, id: &str) -> Result<(), tonic::Status> {
    r.start_container(pb::StartContainerRequest {
        container_id: id.into(),
    })
    .await?;
    Ok(())
}

/// [`try_start_container`], which must succeed.
pub async fn start_container(r: &mut Runtime, id: &str) {
    try_start_container(r, id).await.unwrap()
}

/// ExecSync of `cmd` in the container `id`, `timeout` in seconds (0: none).
pub async fn try_exec_sync(
    r: &mut Runtime,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<pb::ExecSyncResponse, tonic::Status> {
    let res = r
        .exec_sync(pb::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await?;
    Ok(res.into_inner())
}

/// RemovePodSandbox, which must succeed.
pub async fn remove_pod(r: &mut Runtime, id: &str) {
    r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// StopPodSandbox, which must succeed.
pub async fn stop_pod(r: &mut Runtime, id: &str) {
    r.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// StopContainer with a grace period of `timeout` seconds, which must succeed.
pub async fn stop_container(r: &mut Runtime, id: &str, timeout: i64) {
    r.stop_container(pb::StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
    .await
    .unwrap();
}

/// RemoveContainer, which must succeed.
pub async fn remove_container(r: &mut Runtime, id: &str) {
    r.remove_container(pb::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

/// Every pod sandbox (ListPodSandbox without a filter).
pub async fn list_pods(r: &mut Runtime) -> Vec<pb::PodSandbox> {
    r.list_pod_sandbox(pb::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

/// Every container (ListContainers without a filter).
pub async fn list_containers(r: &mut Runtime) -> Vec<pb::Container> {
    r.list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// PodSandboxStatus of `id`, not verbose.
pub async fn try_sandbox_status(
    r: &mut Runtime,
    id: &str,
) -> Result<pb::PodSandboxStatusResponse, tonic::Status> {
    let res = r
        .pod_sandbox_status(pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await?;
    Ok(res.into_inner())
}

/// PodSandboxStatus of `id`: its state and pod IP.
pub async fn sandbox_state(r: &mut Runtime, id: &str) -> (i32, String) {
    let s = try_sandbox_status(r, id).await.unwrap().status.unwrap();
    (s.state, s.network.map(|n| n.ip).unwrap_or_default())
}

/// ImageStatus of `image`, which must answer.
pub async fn image_status(
    i: &mut Images,
    image: Option<pb::ImageSpec>,
    verbose: bool,
) -> pb::ImageStatusResponse {
    let res = i
        .image_status(pb::ImageStatusRequest { image, verbose })
        .await
        .unwrap();
    res.into_inner()
}

/// ContainerStatus's status of `id`.
pub async fn container_state(r: &mut Runtime, id: &str) -> pb::ContainerStatus {
    r.container_status(pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// A container created and started; its id.
pub async fn run_container(
    r: &mut Runtime,
    sid: &str,
    sandbox: &pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> String {
    let id = create_container(r, sid, sandbox, config).await;
    start_container(r, &id).await;
    id
}

pub const CRICTL: &str = "/root/peers/bin/crictl";

/// crictl (cri-tools) pointed at a daemon's CRI socket, with an empty configuration file.
pub struct Crictl {
    endpoint: String,
    config: PathBuf,
}

impl Crictl {
    /// `None` (saying the test is skipped) when crictl is not installed.
    pub fn new(d: &Daemon) -> Option<Crictl> {
        if !Path::new(CRICTL).exists() {
            eprintln!("skipped: crictl not installed ({CRICTL})");
            return None;
        }
        let config = d.path("crictl.yaml");
        std::fs::write(&config, "").unwrap();
        Some(Crictl {
            endpoint: format!("unix://{}", d.path("exec/cri.sock").display()),
            config,
        })
    }

    /// The command line of `crictl ARGS` (to run with input or a terminal).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(CRICTL);
        c.args([
            "--runtime-endpoint",
            &self.endpoint,
            "--image-endpoint",
            &self.endpoint,
            "--timeout",
            "30s",
        ])
        .args(args)
        .env("CRI_CONFIG_FILE", &self.config);
        c
    }

    /// Runs `crictl ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        run_output(self.command(args).output().unwrap())
    }
}
