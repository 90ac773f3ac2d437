//! Pod sandboxes: an engine container of the pause image holding the pod's namespaces, its
//! CNI network, and the CRI's record of it.

use std::collections::{BTreeMap, HashMap};

use berth_api::container::{Config, HostConfig};
use berth_cri::cni::{Attachment, PortMapping};
use berth_cri::proto as pb;
use futures_util::FutureExt;
use pb::NamespaceMode;
use tonic::Status;

use super::store::{Network, PodMeta, SandboxRecord};
use super::{blocking, hmap, map, status, Cri, KIND_LABEL};
use crate::engine::EngineError;

/// Berth's pause image: `berth-init` as `/pause`, made from the daemon's init binary at the
/// first sandbox.
pub const PAUSE_IMAGE: &str = concat!("localhost/berth-pause:", env!("CARGO_PKG_VERSION"));

/// The interface of the pod's network inside its namespace.
pub(crate) const POD_IFNAME: &str = "eth0";

/// `/etc/*` files and the directories the runtime mounts on, for the pause image's layer.
fn pause_tar(init: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let bin = std::fs::read(init)?;
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, kind: tar::EntryType, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)
    };
    for d in ["dev", "proc", "sys", "etc"] {
        add(d, 0o755, tar::EntryType::Directory, &[])?;
    }
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        add(f, 0o644, tar::EntryType::Regular, &[])?;
    }
    add("pause", 0o755, tar::EntryType::Regular, &bin)?;
    b.into_inner()
}

impl Cri {
    /// The pause image, imported when missing.
    async fn pause_image(&self) -> Result<String, Status> {
        let _one = self.pause.lock().await;
        if self.find_image(PAUSE_IMAGE)?.is_some() {
            return Ok(PAUSE_IMAGE.to_string());
        }
        let engine = self.engine.clone();
        blocking(move || {
            let init = engine.cfg.init.clone();
            let tar = pause_tar(&init).map_err(|e| {
                Status::failed_precondition(format!(
                    "making the pause image from {}: {e}",
                    init.display()
                ))
            })?;
            let tag = berth_image::Reference::parse_normalized(PAUSE_IMAGE)
                .map_err(|e| Status::internal(e.to_string()))?;
            let opts = berth_image::archive::ImportOptions {
                changes: vec![r#"ENTRYPOINT ["/pause"]"#.to_string()],
                message: Some("Berth's pod sandbox (berth-init as pause)".into()),
                source_name: "berth-init".into(),
                tag: Some(tag),
                platform: None,
            };
            berth_image::archive::import(
                &engine.images,
                berth_image::archive::ImportSource::Tar(Box::new(std::io::Cursor::new(tar))),
                &opts,
            )
            .map_err(|e| Status::internal(format!("importing the pause image: {e}")))?;
            Ok(PAUSE_IMAGE.to_string())
        })
        .await
    }

    /// A sandbox's record, or NotFound.
    pub(crate) fn sandbox(&self, id: &str) -> Result<SandboxRecord, Status> {
        let full = self.sandbox_id(id)?;
        self.store
            .sandbox(&full)?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id} not found")))
    }

    /// The full id of a sandbox named by id or unique id prefix.
    fn sandbox_id(&self, id: &str) -> Result<String, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("no pod sandbox id"));
        }
        // A full id is one record's file; a prefix is looked for among all.
        if self.store.sandbox(id)?.is_some() {
            return Ok(id.to_string());
        }
        let all: Vec<String> = self
            .store
            .sandboxes()
            .into_iter()
            .map(|s| s.id)
            .filter(|s| s.starts_with(id))
            .collect();
        match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Status::not_found(format!("pod sandbox {id} not found"))),
            _ => Err(Status::invalid_argument(format!(
                "pod sandbox id {id} is ambiguous"
            ))),
        }
    }

    /// Whether the sandbox's process runs and it was not stopped.
    pub(crate) fn sandbox_ready(&self, s: &SandboxRecord) -> bool {
        !s.stopped && self.engine.get(&s.id).is_ok_and(|c| c.state.running)
    }

    pub(crate) async fn run_pod_sandbox(
        &self,
        req: pb::RunPodSandboxRequest,
    ) -> Result<pb::RunPodSandboxResponse, Status> {
        let mut phases = super::Phases::new("RunPodSandbox");
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("no sandbox config"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("no sandbox metadata"))?;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(Status::invalid_argument(
                "sandbox metadata needs a name, a namespace and a uid",
            ));
        }
        if !req.runtime_handler.is_empty() {
            return Err(Status::invalid_argument(format!(
                "unknown runtime handler {:?} (Berth has only the default one)",
                req.runtime_handler
            )));
        }
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let ns = sc.namespace_options.clone().unwrap_or_default();
        let host_net = ns.network == NamespaceMode::Node as i32;
        let image = self.pause_image().await?;
        phases.mark("pause image");
        let dns = config.dns_config.clone().unwrap_or_default();
        let name = format!(
            "k8s_POD_{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        // The same pod attempt again: refused before anything is made (the engine's create
        // refuses it too, should two requests race).
        if self.engine.get(&name).is_ok() {
            return Err(Status::already_exists(format!(
                "pod sandbox {name} already exists"
            )));
        }
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        let host_ipc = ns.ipc == NamespaceMode::Node as i32;
        // The pod's /dev/shm: a tmpfs on the host, bound into the sandbox and each container
        // (with the sandbox's IPC namespace), as containerd does.
        let shm = if host_ipc {
            String::new()
        } else {
            let p = self
                .engine
                .cfg
                .exec_root
                .join("cri/shm")
                .join(berth_util::id::random_hex(16));
            mount_shm(&p)?;
            p.display().to_string()
        };
        phases.mark("shm");
        let mut hc = HostConfig {
            network_mode: if host_net { "host" } else { "none" }.into(),
            ipc_mode: if host_ipc { "host" } else { "shareable" }.into(),
            mounts: shm_mount(&shm),
            pid_mode: if ns.pid == NamespaceMode::Node as i32 {
                "host"
            } else {
                ""
            }
            .into(),
            cgroup_parent: linux.cgroup_parent.clone(),
            dns: some(dns.servers.clone()),
            dns_search: some(dns.searches.clone()),
            dns_options: some(dns.options.clone()),
            sysctls: (!linux.sysctls.is_empty()).then(|| map(&linux.sysctls)),
            privileged: sc.privileged,
            readonly_rootfs: sc.readonly_rootfs,
            ..Default::default()
        };
        hc.log_config.kind = "none".into();
        let cfg = Config {
            image,
            hostname: if host_net {
                String::new()
            } else {
                config.hostname.clone()
            },
            labels: Some(BTreeMap::from([(
                KIND_LABEL.to_string(),
                "sandbox".to_string(),
            )])),
            ..Default::default()
        };
        let id = berth_util::id::new_id();
        let mut rec = SandboxRecord {
            id: id.clone(),
            meta: PodMeta {
                name: meta.name,
                uid: meta.uid,
                namespace: meta.namespace,
                attempt: meta.attempt,
            },
            labels: map(&config.labels),
            annotations: map(&config.annotations),
            created_at: super::now_nanos(),
            log_directory: config.log_directory.clone(),
            runtime_handler: req.runtime_handler,
            hostname: config.hostname.clone(),
            cgroup_parent: linux.cgroup_parent,
            network_mode: ns.network,
            pid_mode: ns.pid,
            ipc_mode: ns.ipc,
            dns_servers: dns.servers,
            dns_searches: dns.searches,
            dns_options: dns.options,
            shm,
            port_mappings: config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| PortMapping {
                    host_port: p.host_port,
                    container_port: p.container_port,
                    protocol: match pb::Protocol::try_from(p.protocol) {
                        Ok(pb::Protocol::Udp) => "udp",
                        Ok(pb::Protocol::Sctp) => "sctp",
                        _ => "tcp",
                    }
                    .into(),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            ..Default::default()
        };
        if let Err(e) = self
            .start_sandbox(&mut rec, (name, cfg, hc), host_net, &mut phases)
            .await
        {
            let _ = self.remove_sandbox(&id).await;
            // (Its record may not have been written.)
            unmount_shm(&rec.shm);
            return Err(e);
        }
        self.emit(&id, &id, pb::ContainerEventType::ContainerStartedEvent)
            .await;
        Ok(pb::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    /// Writes the sandbox's first record (durable), creates and starts its process with its
    /// network, on two paths at the same time: the record and the network namespace (made
    /// alongside, held by berthd through a descriptor, never mounted, so a crash leaves
    /// nothing), then CNI's `ADD` in the namespace; the create of the engine container, then
    /// the start of its process joining the namespace once made.
    /// The record is durable before the `ADD`: whatever the `ADD` makes, a restart after a
    /// crash (kill -9 or power loss) finds the record to delete it with (see
    /// `recover_networks`). The engine container (of the record's id) needs no record
    /// first: one that a crash leaves without a record is removed at the daemon's start
    /// (`remove_orphans`). The complete record is written without a sync. A failure deletes
    /// what the `ADD` made.
    async fn start_sandbox(
        &self,
        rec: &mut SandboxRecord,
        (name, cfg, hc): (String, Config, HostConfig),
        host_net: bool,
        phases: &mut super::Phases,
    ) -> Result<(), Status> {
        let store = self.store.clone();
        let r = rec.clone();
        let save = blocking(move || store.save_sandbox(&r).map_err(Status::from));
        if host_net {
            // The record written before the start is the complete one.
            let create =
                self.create_engine_container(Some(rec.id.clone()), name, cfg, hc, String::new());
            let (saved, created) = tokio::join!(save, create);
            saved?;
            created?;
            phases.mark("create");
            self.engine.start(&rec.id).await.map_err(status)?;
            phases.mark("start");
            return Ok(());
        }
        // The namespace, made on a blocking thread while the record is written and the
        // engine container created (neither needs it); the ADD and the start wait for it.
        let ns = blocking(|| {
            let t = std::time::Instant::now();
            let ns = berth_network::netlink::new_netns().map_err(|e| {
                Status::internal(format!("creating the pod's network namespace: {e}"))
            })?;
            Ok((std::sync::Arc::new(ns), t.elapsed()))
        })
        .shared();
        let ns_path = |ns: &std::fs::File| {
            std::path::PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(ns)
            ))
        };
        let cni = self.cni.clone();
        let r = rec.clone();
        let id = rec.id.clone();
        let start = async {
            let (created, took) =
                timed(self.create_engine_container(Some(id.clone()), name, cfg, hc, String::new()))
                    .await;
            created?;
            let (ns, _) = ns.clone().await?;
            let started = self.engine.start_in_netns(&id, &ns_path(&ns)).await;
            started.map(|()| took).map_err(status)
        };
        // The record, then the ADD.
        let add = async {
            let ((saved, took), ns) = tokio::join!(timed(save), ns.clone());
            saved?;
            // (Held until the ADD ends; the sandbox's process holds it after.)
            let (ns, ns_took) = ns?;
            let p = ns_path(&ns);
            let add = blocking(move || {
                let net = cni
                    .load()
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                let result = cni
                    .add(&net, &attachment(&r, &p))
                    .map_err(|e| Status::unknown(format!("setting up the pod network: {e}")))?;
                Ok((net.name, result))
            });
            let (added, add_took) = timed(add).await;
            drop(ns);
            added.map(|a| (a, took, ns_took, add_took))
        };
        let (added, (started, start_took)) = tokio::join!(add, timed(start));
        let added = added.map(|(a, save_took, ns_took, add_took)| {
            phases.record("(record", save_took);
            phases.record("netns", ns_took);
            phases.record("cni alone", add_took);
            a
        });
        if let Ok(create_took) = &started {
            phases.record("create", *create_took);
        }
        phases.record("create+start alone)", start_took);
        // The sandbox's process holds the namespace now (or nothing does: it is gone).
        drop(ns);
        phases.mark("start+cni");
        let pid = started
            .and_then(|_| self.engine.get(&rec.id).map_err(status))
            .map(|c| c.state.pid);
        let (pid, (name, result)) = match (pid, added) {
            (Ok(pid), Ok(a)) => (pid, a),
            (pid, added) => {
                let prev = added.as_ref().ok().map(|(name, result)| Network {
                    name: name.clone(),
                    netns: String::new(),
                    result: result.raw.clone(),
                });
                if let Err(e) = self.cni_del(rec, prev).await {
                    tracing::warn!("CRI: pod sandbox {}: {}", rec.id, e.message());
                }
                return Err(pid
                    .err()
                    .or(added.err())
                    .unwrap_or_else(|| Status::internal("starting the pod sandbox failed")));
            }
        };
        rec.ips = result.addresses();
        rec.network = Some(Network {
            name,
            netns: format!("/proc/{pid}/ns/net"),
            result: result.raw,
        });
        self.store.save_sandbox_ready(rec)?;
        phases.mark("save");
        Ok(())
    }

    /// `DEL` of the sandbox's network, once (the record forgets it after).
    pub(crate) async fn teardown_network(&self, rec: &mut SandboxRecord) -> Result<(), Status> {
        let Some(net) = rec.network.clone() else {
            return Ok(());
        };
        self.cni_del(rec, Some(net)).await?;
        rec.network = None;
        self.store.save_sandbox(rec)?;
        Ok(())
    }

    /// CNI `DEL` of a sandbox with the current configuration: of its recorded attachment
    /// (`net`), or of one that may have been made (an `ADD` a crash cut short, a record a
    /// power loss took), which `DEL` without a previous result releases as well (the
    /// plugins find what they made by the container id). In the sandbox's namespace when
    /// its holder still runs.
    async fn cni_del(&self, rec: &SandboxRecord, net: Option<Network>) -> Result<(), Status> {
        let netns = self
            .engine
            .get(&rec.id)
            .ok()
            .filter(|c| c.state.running)
            .map(|c| format!("/proc/{}/ns/net", c.state.pid))
            .unwrap_or_default();
        let cni = self.cni.clone();
        let r = rec.clone();
        blocking(move || {
            let list = cni
                .load()
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            if let Some(net) = net.as_ref().filter(|n| n.name != list.name) {
                tracing::warn!(
                    "pod {}: the CNI network changed from {} to {}; deleting with the current configuration",
                    r.id,
                    net.name,
                    list.name
                );
            }
            cni.del(
                &list,
                &attachment(&r, std::path::Path::new(&netns)),
                net.as_ref().map(|n| &n.result),
            )
            .map_err(|e| Status::unknown(format!("tearing down the pod network: {e}")))
        })
        .await
    }

    /// The network of a sandbox whose engine container was removed behind the CRI's back
    /// (through the Docker API): released at once, so no address, veth or port mapping
    /// outlives it (the record stays, NOTREADY, until the kubelet removes it).
    pub(crate) async fn sandbox_destroyed(&self, id: &str) {
        let Ok(Some(mut rec)) = self.store.sandbox(id) else {
            return;
        };
        if rec.network.is_none() {
            return;
        }
        tracing::info!("CRI: pod sandbox {id} was removed outside the CRI; releasing its network");
        if let Err(e) = self.teardown_network(&mut rec).await {
            tracing::warn!("CRI: pod sandbox {id}: {}", e.message());
        }
    }

    /// At daemon start, before the CRI is served: the networks a crash or a removal through
    /// the Docker API while berthd was down left. A sandbox record with a network and no
    /// engine container has it deleted; one whose setup a crash cut short (not stopped, not
    /// on the host's network, no network recorded) has a `DEL` of what its `ADD` may have
    /// made and is marked stopped (NOTREADY: the kubelet stops and removes it).
    pub(crate) async fn recover_networks(&self) {
        for mut rec in self.store.sandboxes() {
            let gone = matches!(self.engine.get(&rec.id), Err(EngineError::NotFound(_)));
            let r = if rec.network.is_some() {
                if !gone {
                    continue;
                }
                tracing::info!(
                    "CRI: pod sandbox {} has no container; releasing its network",
                    rec.id
                );
                self.teardown_network(&mut rec).await
            } else if !rec.stopped && rec.network_mode != NamespaceMode::Node as i32 {
                tracing::info!("CRI: pod sandbox {}: its setup was cut short; releasing what its network setup made", rec.id);
                let r = self.cni_del(&rec, None).await;
                rec.stopped = true;
                r.and(self.store.save_sandbox(&rec).map_err(Status::from))
            } else {
                continue;
            };
            if let Err(e) = r {
                tracing::warn!("CRI: pod sandbox {}: {}", rec.id, e.message());
            }
        }
    }

    /// The network of an engine sandbox container that has no CRI record (its record was
    /// lost before it was synced): `DEL` of what its setup may have made.
    pub(crate) async fn release_orphan_network(&self, c: &crate::engine::Container) {
        if c.host_config.network_mode == "host" {
            return;
        }
        let meta = c
            .name
            .trim_start_matches('/')
            .strip_prefix("k8s_POD_")
            .map(|rest| {
                // k8s_POD_<name>_<namespace>_<uid>_<attempt>
                let mut p = rest.splitn(4, '_');
                PodMeta {
                    name: p.next().unwrap_or_default().to_string(),
                    namespace: p.next().unwrap_or_default().to_string(),
                    uid: p.next().unwrap_or_default().to_string(),
                    attempt: 0,
                }
            });
        let rec = SandboxRecord {
            id: c.id.clone(),
            meta: meta.unwrap_or_default(),
            ..Default::default()
        };
        if let Err(e) = self.cni_del(&rec, None).await {
            tracing::warn!("CRI: {}: {}", c.name, e.message());
        }
    }

    pub(crate) async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let mut rec = match self.sandbox(id) {
            Ok(r) => r,
            // Stopping what is gone succeeds (the kubelet retries).
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) => return Err(s),
        };
        for c in self.store.containers() {
            if c.sandbox_id == rec.id {
                self.stop_engine_container(&c.id, 0).await?;
            }
        }
        self.teardown_network(&mut rec).await?;
        self.stop_engine_container(&rec.id, 10).await?;
        rec.stopped = true;
        self.store.save_sandbox(&rec)?;
        Ok(())
    }

    /// Stops an engine container; one already stopped or gone is fine.
    pub(crate) async fn stop_engine_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        match self.engine.stop(id, Some(timeout), None).await {
            Ok(()) | Err(EngineError::NotModified) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(status(e)),
        }
    }

    pub(crate) async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let full = match self.sandbox_id(id) {
            Ok(f) => f,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) => return Err(s),
        };
        self.remove_sandbox(&full).await
    }

    /// Removes a sandbox in any state: its containers, network, process and records.
    async fn remove_sandbox(&self, id: &str) -> Result<(), Status> {
        for c in self.store.containers() {
            if c.sandbox_id == id {
                self.remove_container_by_id(&c.id).await?;
            }
        }
        if let Some(mut rec) = self.store.sandbox(id)? {
            self.teardown_network(&mut rec).await?;
        }
        match self.engine.remove(id, true, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(status(e)),
        }
        if let Some(rec) = self.store.sandbox(id)? {
            unmount_shm(&rec.shm);
        }
        self.store.delete_sandbox(id)?;
        self.emit(id, id, pb::ContainerEventType::ContainerDeletedEvent)
            .await;
        Ok(())
    }

    fn sandbox_state(&self, s: &SandboxRecord) -> pb::PodSandboxState {
        if self.sandbox_ready(s) {
            pb::PodSandboxState::SandboxReady
        } else {
            pb::PodSandboxState::SandboxNotready
        }
    }

    pub(crate) async fn pod_sandbox_status(
        &self,
        req: pb::PodSandboxStatusRequest,
    ) -> Result<pb::PodSandboxStatusResponse, Status> {
        let s = self.sandbox(&req.pod_sandbox_id)?;
        let ready = self.sandbox_ready(&s);
        // A host-network pod has no address of its own (the kubelet uses the node's).
        let mut ips = s.ips.iter();
        let network = Some(pb::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| pb::PodIp { ip: ip.clone() }).collect(),
        });
        let mut info = HashMap::new();
        if req.verbose {
            let c = self.engine.get(&s.id).ok();
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "pid": c.as_ref().map(|c| c.state.pid).unwrap_or(0),
                    "image": PAUSE_IMAGE,
                    "record": s,
                })
                .to_string(),
            );
        }
        Ok(pb::PodSandboxStatusResponse {
            status: Some(pb::PodSandboxStatus {
                id: s.id.clone(),
                metadata: Some(pod_metadata(&s.meta)),
                state: if ready {
                    pb::PodSandboxState::SandboxReady
                } else {
                    pb::PodSandboxState::SandboxNotready
                } as i32,
                created_at: s.created_at,
                network,
                linux: Some(pb::LinuxPodSandboxStatus {
                    namespaces: Some(pb::Namespace {
                        options: Some(pb::NamespaceOption {
                            network: s.network_mode,
                            pid: s.pid_mode,
                            ipc: s.ipc_mode,
                            ..Default::default()
                        }),
                    }),
                }),
                labels: hmap(&s.labels),
                annotations: hmap(&s.annotations),
                runtime_handler: s.runtime_handler.clone(),
            }),
            info,
            containers_statuses: vec![],
            timestamp: super::now_nanos(),
        })
    }

    pub(crate) async fn list_pod_sandbox(
        &self,
        req: pb::ListPodSandboxRequest,
    ) -> Result<pb::ListPodSandboxResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let mut items: Vec<pb::PodSandbox> = self
            .store
            .sandboxes()
            .into_iter()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .filter(|s| super::selects(&s.labels, &f.label_selector))
            .map(|s| pb::PodSandbox {
                id: s.id.clone(),
                metadata: Some(pod_metadata(&s.meta)),
                state: self.sandbox_state(&s) as i32,
                created_at: s.created_at,
                labels: hmap(&s.labels),
                annotations: hmap(&s.annotations),
                runtime_handler: s.runtime_handler.clone(),
            })
            .filter(|s| f.state.as_ref().is_none_or(|w| w.state == s.state))
            .collect();
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(pb::ListPodSandboxResponse { items })
    }
}

/// The bind of a pod's `/dev/shm` (none for a host-IPC pod).
pub(crate) fn shm_mount(shm: &str) -> Option<Vec<berth_api::mount::Mount>> {
    (!shm.is_empty()).then(|| {
        vec![berth_api::mount::Mount {
            kind: "bind".into(),
            source: shm.to_string(),
            target: "/dev/shm".into(),
            ..Default::default()
        }]
    })
}

/// Mounts a pod's `/dev/shm` (64 MiB, Docker's and containerd's default size).
fn mount_shm(p: &std::path::Path) -> Result<(), Status> {
    use rustix::mount::{mount, MountFlags};
    std::fs::create_dir_all(p)
        .map_err(|e| Status::internal(format!("creating {}: {e}", p.display())))?;
    mount(
        "shm",
        p,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=1777,size=65536k"),
    )
    .map_err(|e| {
        let _ = std::fs::remove_dir(p);
        Status::internal(format!(
            "mounting the pod's /dev/shm at {}: {e}",
            p.display()
        ))
    })
}

fn unmount_shm(p: &str) {
    if p.is_empty() {
        return;
    }
    match rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => tracing::warn!("unmounting {p}: {e}"),
    }
    let _ = std::fs::remove_dir(p);
}

pub(crate) fn pod_metadata(m: &PodMeta) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

/// A future's output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, std::time::Duration) {
    let t = std::time::Instant::now();
    let r = f.await;
    (r, t.elapsed())
}

fn attachment<'a>(r: &'a SandboxRecord, netns: &'a std::path::Path) -> Attachment<'a> {
    Attachment {
        id: &r.id,
        netns,
        ifname: POD_IFNAME,
        pod_namespace: &r.meta.namespace,
        pod_name: &r.meta.name,
        pod_uid: &r.meta.uid,
        port_mappings: &r.port_mappings,
    }
}
