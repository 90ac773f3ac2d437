//! The containers of a pod: engine containers joining the sandbox's namespaces, their log in
//! the CRI format at the kubelet's path, and `ExecSync`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_api::container::{Config, DeviceMapping, HostConfig, Resources, UpdateConfig};
use berth_api::mount::{BindOptions, Mount};
use berth_cri::proto as pb;
use pb::NamespaceMode;
use tokio::io::AsyncReadExt;
use tonic::Status;

use super::store::{ContainerRecord, MountRecord, SandboxRecord};
use super::{hmap, map, status, Cri, KIND_LABEL, SANDBOX_LABEL};
use crate::engine::{Container, EngineError};

/// The engine's user string of a security context (`uid[:gid]` or `name[:gid]`).
fn user_of(sc: &pb::LinuxContainerSecurityContext) -> String {
    let user = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(u), _) => u.value.to_string(),
        (None, name) if !name.is_empty() => name.to_string(),
        _ => String::new(),
    };
    match (&sc.run_as_group, user.is_empty()) {
        (Some(g), false) => format!("{user}:{}", g.value),
        // A group without a user: the image's user is unknown here, so root's.
        (Some(g), true) => format!("0:{}", g.value),
        (None, _) => user,
    }
}

fn propagation(p: i32) -> &'static str {
    match pb::MountPropagation::try_from(p) {
        Ok(pb::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(pb::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

/// The cgroup limits of a container's resources (the kubelet's cgroupfs values).
fn resources(r: &pb::LinuxContainerResources) -> Resources {
    Resources {
        cpu_shares: r.cpu_shares,
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        memory: r.memory_limit_in_bytes,
        memory_swap: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        ..Default::default()
    }
}

/// The CRI state of an engine container.
fn state_of(c: &Container) -> pb::ContainerState {
    if c.state.running {
        pb::ContainerState::ContainerRunning
    } else if c.state.started_at.is_empty() || c.state.started_at.starts_with("0001-") {
        pb::ContainerState::ContainerCreated
    } else {
        pb::ContainerState::ContainerExited
    }
}

impl Cri {
    /// A container's record and its engine container.
    pub(crate) fn container(&self, id: &str) -> Result<(ContainerRecord, Container), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("no container id"));
        }
        // A full id is one record's file; a prefix is looked for among all.
        let matches: Vec<ContainerRecord> = match self.store.container(id)? {
            Some(exact) => vec![exact],
            None => self
                .store
                .containers()
                .into_iter()
                .filter(|c| c.id.starts_with(id))
                .collect(),
        };
        let rec = match <[ContainerRecord; 1]>::try_from(matches) {
            Ok([one]) => one,
            Err(v) if v.is_empty() => {
                return Err(Status::not_found(format!("container {id} not found")))
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "container id {id} is ambiguous"
                )))
            }
        };
        let c = self.engine.get(&rec.id).map_err(status)?;
        Ok((rec, c))
    }

    pub(crate) async fn create_container(
        &self,
        req: pb::CreateContainerRequest,
    ) -> Result<pb::CreateContainerResponse, Status> {
        let mut phases = super::Phases::new("CreateContainer");
        let sandbox = self.sandbox(&req.pod_sandbox_id)?;
        if !self.sandbox_ready(&sandbox) {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("no container config"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("no container metadata"))?;
        if meta.name.is_empty() {
            return Err(Status::invalid_argument("the container has no name"));
        }
        let image_name = config.image.clone().map(|i| i.image).unwrap_or_default();
        let image = self.find_image(&image_name)?.ok_or_else(|| {
            Status::not_found(format!(
                "image {image_name:?} is not present (pull it first)"
            ))
        })?;
        let name = format!(
            "k8s_{}_{}_{}_{}_{}",
            meta.name, sandbox.meta.name, sandbox.meta.namespace, sandbox.meta.uid, meta.attempt
        );
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(Status::invalid_argument(
                "run_as_group is set without run_as_user or run_as_username",
            ));
        }
        phases.mark("lookups");
        let seccomp = seccomp_option(&sc)?;
        // containerd refuses a shared or slave bind of a source that is not on a shared (or
        // slave) mount when it makes the spec, at create; the engine checks again at start.
        let mut root_propagation = None;
        for m in &config.mounts {
            crate::mounts::check_propagation(
                std::path::Path::new(&m.host_path),
                propagation(m.propagation),
                &mut root_propagation,
            )
            .map_err(status)?;
        }
        let (cfg, hc) = engine_config(&sandbox, &config, &image.id.to_string(), seccomp);
        // The log: the CRI format at the kubelet's path (the shim writes it).
        let log_path = if config.log_path.is_empty() || sandbox.log_directory.is_empty() {
            String::new()
        } else {
            std::path::Path::new(&sandbox.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let id = self
            .create_engine_container(None, name, cfg, hc, log_path.clone())
            .await?;
        phases.mark("create");
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: meta.name,
            attempt: meta.attempt,
            labels: map(&config.labels),
            annotations: map(&config.annotations),
            image: image_name,
            image_id: image.id.to_string(),
            created_at: super::now_nanos(),
            log_path,
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                })
                .collect(),
        };
        if let Err(e) = self.store.save_container(&rec) {
            let _ = self.engine.remove(&id, true, true).await;
            return Err(e.into());
        }
        phases.mark("save");
        self.emit(
            &id,
            &sandbox.id,
            pb::ContainerEventType::ContainerCreatedEvent,
        )
        .await;
        Ok(pb::CreateContainerResponse { container_id: id })
    }

    pub(crate) async fn start_container(&self, id: &str) -> Result<(), Status> {
        let mut phases = super::Phases::new("StartContainer");
        let (rec, c) = self.container(id)?;
        if state_of(&c) != pb::ContainerState::ContainerCreated {
            return Err(Status::failed_precondition(format!(
                "container {} is not in the created state",
                rec.id
            )));
        }
        if let Some(dir) = std::path::Path::new(&rec.log_path).parent() {
            if !rec.log_path.is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Status::internal(format!("creating log directory {}: {e}", dir.display()))
                })?;
            }
        }
        phases.mark("lookups");
        self.engine.start(&rec.id).await.map_err(status)?;
        phases.mark("start");
        self.emit(
            &rec.id,
            &rec.sandbox_id,
            pb::ContainerEventType::ContainerStartedEvent,
        )
        .await;
        Ok(())
    }

    /// Stopping a container that is gone succeeds: the CRI asks `StopContainer` to be
    /// idempotent (containerd 1.7+ and CRI-O answer OK for an unknown id; critest's
    /// "Idempotence StopContainer should not return an error if not found").
    pub(crate) async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let rec = match self.container(id) {
            Ok((rec, _)) => rec,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
            Err(s) => return Err(s),
        };
        self.stop_engine_container(&rec.id, timeout.max(0)).await
    }

    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), Status> {
        match self.container(id) {
            Ok((rec, _)) => self.remove_container_by_id(&rec.id).await,
            Err(s) if s.code() == tonic::Code::NotFound => {
                // A record without its engine container is removed too.
                if let Ok(Some(r)) = self.store.container(id) {
                    self.store.delete_container(&r.id)?;
                }
                Ok(())
            }
            Err(s) => Err(s),
        }
    }

    /// Removes a container in any state (forcibly) and its record.
    pub(crate) async fn remove_container_by_id(&self, id: &str) -> Result<(), Status> {
        let sandbox = self.store.container(id)?.map(|r| r.sandbox_id);
        match self.engine.remove(id, true, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(status(e)),
        }
        self.store.delete_container(id)?;
        if let Some(s) = sandbox {
            self.emit(id, &s, pb::ContainerEventType::ContainerDeletedEvent)
                .await;
        }
        Ok(())
    }

    fn container_message(&self, rec: &ContainerRecord, c: &Container) -> pb::Container {
        pb::Container {
            id: rec.id.clone(),
            pod_sandbox_id: rec.sandbox_id.clone(),
            metadata: Some(pb::ContainerMetadata {
                name: rec.name.clone(),
                attempt: rec.attempt,
            }),
            image: Some(pb::ImageSpec {
                image: rec.image.clone(),
                ..Default::default()
            }),
            image_ref: rec.image_id.clone(),
            image_id: rec.image_id.clone(),
            state: state_of(c) as i32,
            created_at: rec.created_at,
            labels: hmap(&rec.labels),
            annotations: hmap(&rec.annotations),
        }
    }

    pub(crate) async fn list_containers(
        &self,
        req: pb::ListContainersRequest,
    ) -> Result<pb::ListContainersResponse, Status> {
        let f = req.filter.unwrap_or_default();
        let mut containers: Vec<pb::Container> = self
            .store
            .containers()
            .into_iter()
            .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
            .filter(|r| f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
            .filter(|r| super::selects(&r.labels, &f.label_selector))
            .filter_map(|r| {
                let c = self.engine.get(&r.id).ok()?;
                Some(self.container_message(&r, &c))
            })
            .filter(|c| f.state.as_ref().is_none_or(|w| w.state == c.state))
            .collect();
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(pb::ListContainersResponse { containers })
    }

    pub(crate) async fn container_status(
        &self,
        req: pb::ContainerStatusRequest,
    ) -> Result<pb::ContainerStatusResponse, Status> {
        let (rec, c) = self.container(&req.container_id)?;
        let state = state_of(&c);
        let (reason, exit_code) = match state {
            pb::ContainerState::ContainerExited if c.state.oom_killed => {
                ("OOMKilled", c.state.exit_code)
            }
            pb::ContainerState::ContainerExited if c.state.exit_code == 0 => ("Completed", 0),
            pb::ContainerState::ContainerExited => ("Error", c.state.exit_code),
            _ => ("", 0),
        };
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({"pid": c.state.pid, "record": rec}).to_string(),
            );
        }
        let started = if state == pb::ContainerState::ContainerCreated {
            0
        } else {
            super::nanos(&c.state.started_at)
        };
        let finished = if state == pb::ContainerState::ContainerExited {
            super::nanos(&c.state.finished_at)
        } else {
            0
        };
        Ok(pb::ContainerStatusResponse {
            status: Some(pb::ContainerStatus {
                id: rec.id.clone(),
                metadata: Some(pb::ContainerMetadata {
                    name: rec.name.clone(),
                    attempt: rec.attempt,
                }),
                state: state as i32,
                created_at: rec.created_at,
                started_at: started,
                finished_at: finished,
                exit_code: exit_code as i32,
                image: Some(pb::ImageSpec {
                    image: rec.image.clone(),
                    ..Default::default()
                }),
                image_ref: rec.image_id.clone(),
                image_id: rec.image_id.clone(),
                reason: reason.into(),
                message: c.state.error.clone(),
                labels: hmap(&rec.labels),
                annotations: hmap(&rec.annotations),
                mounts: rec
                    .mounts
                    .iter()
                    .map(|m| pb::Mount {
                        container_path: m.container_path.clone(),
                        host_path: m.host_path.clone(),
                        readonly: m.readonly,
                        propagation: m.propagation,
                        ..Default::default()
                    })
                    .collect(),
                log_path: rec.log_path.clone(),
                ..Default::default()
            }),
            info,
        })
    }

    pub(crate) async fn update_container_resources(
        &self,
        req: pb::UpdateContainerResourcesRequest,
    ) -> Result<(), Status> {
        let (rec, _) = self.container(&req.container_id)?;
        let Some(r) = req.linux else {
            return Ok(());
        };
        let mut upd = UpdateConfig::default();
        upd.set_resources(resources(&r));
        self.engine
            .update(&rec.id, &upd)
            .await
            .map(|_| ())
            .map_err(status)
    }

    pub(crate) async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let (rec, c) = self.container(id)?;
        if !c.state.running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if rec.log_path.is_empty() {
            return Err(Status::failed_precondition(format!(
                "container {} has no log",
                rec.id
            )));
        }
        crate::shimio::call(
            &self.engine.shim_socket(&rec.id),
            berth_shim::protocol::Request::ReopenLog,
        )
        .await
        .map(drop)
        .map_err(|e| Status::internal(format!("reopening the log of {}: {e}", rec.id)))
    }

    /// Kills an exec's process (see [`crate::engine::Engine::exec_kill`]).
    pub(crate) async fn kill_exec(&self, container: &str, exec_id: &str) {
        self.engine.exec_kill(container, exec_id).await;
    }

    pub(crate) async fn exec_sync(
        &self,
        req: pb::ExecSyncRequest,
    ) -> Result<pb::ExecSyncResponse, Status> {
        let (rec, _) = self.container(&req.container_id)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("no command to run"));
        }
        let exec_id = self
            .engine
            .exec_create(
                &rec.id,
                &berth_api::exec::CreateRequest {
                    cmd: Some(req.cmd.clone()),
                    attach_stdout: true,
                    attach_stderr: true,
                    ..Default::default()
                },
            )
            .map_err(status)?;
        let (_, mut stream) = self.engine.exec_start(&exec_id).await.map_err(status)?;
        let collect = async {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut header = [0u8; 8];
            loop {
                if stream.read_exact(&mut header).await.is_err() {
                    // The stream ended without an exit frame.
                    return Ok::<_, std::io::Error>((out, err, -1));
                }
                let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                let mut payload = vec![0u8; len as usize];
                stream.read_exact(&mut payload).await?;
                match header[0] {
                    berth_shim::protocol::STDOUT => out.extend_from_slice(&payload),
                    berth_shim::protocol::STDERR => err.extend_from_slice(&payload),
                    berth_shim::protocol::EXIT => {
                        return Ok((out, err, crate::shimio::ExitFrame::code(&payload)))
                    }
                    _ => {}
                }
            }
        };
        tokio::pin!(collect);
        let result = if req.timeout > 0 {
            match tokio::time::timeout(Duration::from_secs(req.timeout as u64), &mut collect).await
            {
                Ok(r) => r,
                Err(_) => {
                    // Killed, and answered once it is gone (its exit read: reaped), as
                    // containerd does: a command run right after does not see it.
                    self.kill_exec(&rec.id, &exec_id).await;
                    let code = match tokio::time::timeout(KILLED_EXEC_EXIT, &mut collect).await {
                        Ok(Ok((_, _, code))) if code >= 0 => code,
                        _ => 128 + libc::SIGKILL as i64,
                    };
                    self.engine.exec_exited(&exec_id, code);
                    return Err(Status::deadline_exceeded(format!(
                        "command {:?} timed out after {}s",
                        req.cmd, req.timeout
                    )));
                }
            }
        } else {
            collect.await
        };
        let (stdout, stderr, code) =
            result.map_err(|e| Status::internal(format!("reading the exec's output: {e}")))?;
        self.engine.exec_exited(&exec_id, code);
        Ok(pb::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: code as i32,
        })
    }
}

/// How long `ExecSync` waits for the exit of a command it killed at its timeout.
const KILLED_EXEC_EXIT: Duration = Duration::from_secs(10);

/// The engine's `seccomp=` option of a container, as containerd chooses the profile: none
/// when privileged; the `seccomp` field, else the deprecated `seccomp_profile_path`
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`); unset is
/// unconfined (the kubelet asks for `RuntimeDefault` when it wants the default); a
/// `Localhost` profile is read from its file.
fn seccomp_option(sc: &pb::LinuxContainerSecurityContext) -> Result<Option<String>, Status> {
    use pb::security_profile::ProfileType;
    if sc.privileged {
        return Ok(None);
    }
    #[allow(deprecated)]
    let (kind, path) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::Unconfined),
            p.localhost_ref.clone(),
        ),
        None => match sc.seccomp_profile_path.as_str() {
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
            p => match p.strip_prefix("localhost/") {
                Some(path) => (ProfileType::Localhost, path.to_string()),
                None if p.is_empty() || p == "unconfined" => {
                    (ProfileType::Unconfined, String::new())
                }
                None => {
                    return Err(Status::invalid_argument(format!(
                        "unknown seccomp profile path {p:?}"
                    )))
                }
            },
        },
    };
    match kind {
        ProfileType::RuntimeDefault => Ok(None),
        ProfileType::Unconfined => Ok(Some("seccomp=unconfined".into())),
        ProfileType::Localhost => {
            if path.is_empty() {
                return Err(Status::invalid_argument(
                    "a Localhost seccomp profile needs its localhost_ref",
                ));
            }
            let json = std::fs::read_to_string(&path).map_err(|e| {
                Status::invalid_argument(format!("reading the seccomp profile {path}: {e}"))
            })?;
            Ok(Some(format!("seccomp={json}")))
        }
    }
}

/// The engine's create request of a pod's container.
fn engine_config(
    sandbox: &SandboxRecord,
    config: &pb::ContainerConfig,
    image_id: &str,
    seccomp: Option<String>,
) -> (Config, HostConfig) {
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let sandbox_ref = format!("container:{}", sandbox.id);
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut security_opt = Vec::new();
    if sc.no_new_privs {
        security_opt.push("no-new-privileges".to_string());
    }
    security_opt.extend(seccomp);
    let host_net = sandbox.network_mode == NamespaceMode::Node as i32;
    let mut hc = HostConfig {
        network_mode: if host_net {
            "host".into()
        } else {
            sandbox_ref.clone()
        },
        ipc_mode: if sandbox.ipc_mode == NamespaceMode::Node as i32 {
            "host".into()
        } else {
            sandbox_ref.clone()
        },
        pid_mode: match NamespaceMode::try_from(ns.pid) {
            Ok(NamespaceMode::Node) => "host".into(),
            Ok(NamespaceMode::Pod) => sandbox_ref.clone(),
            Ok(NamespaceMode::Target) if !ns.target_id.is_empty() => {
                format!("container:{}", ns.target_id)
            }
            _ => String::new(),
        },
        dns: some(&sandbox.dns_servers),
        dns_search: some(&sandbox.dns_searches),
        dns_options: some(&sandbox.dns_options),
        privileged: sc.privileged,
        readonly_rootfs: sc.readonly_rootfs,
        cap_add: some(&caps.add_capabilities),
        cap_drop: some(&caps.drop_capabilities),
        group_add: (!sc.supplemental_groups.is_empty()).then(|| {
            sc.supplemental_groups
                .iter()
                .map(|g| g.to_string())
                .collect()
        }),
        security_opt: (!security_opt.is_empty()).then_some(security_opt),
        masked_paths: some(&sc.masked_paths),
        readonly_paths: some(&sc.readonly_paths),
        mounts: (!config.mounts.is_empty() || !sandbox.shm.is_empty()).then(|| {
            let shm = super::pods::shm_mount(&sandbox.shm).unwrap_or_default();
            shm.into_iter()
                .chain(config.mounts.iter().map(|m| Mount {
                    kind: "bind".into(),
                    source: m.host_path.clone(),
                    target: m.container_path.clone(),
                    read_only: m.readonly,
                    bind_options: Some(BindOptions {
                        propagation: propagation(m.propagation).into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .collect()
        }),
        ..Default::default()
    };
    // The CRI log is set after create (see `create_container`); none until then.
    hc.log_config.kind = "none".into();
    let mut res = linux.resources.as_ref().map(resources).unwrap_or_default();
    res.cgroup_parent = sandbox.cgroup_parent.clone();
    res.devices = (!config.devices.is_empty()).then(|| {
        config
            .devices
            .iter()
            .map(|d| DeviceMapping {
                path_on_host: d.host_path.clone(),
                path_in_container: d.container_path.clone(),
                cgroup_permissions: if d.permissions.is_empty() {
                    "rwm".into()
                } else {
                    d.permissions.clone()
                },
            })
            .collect()
    });
    hc.set_resources(res);
    if let Some(r) = &linux.resources {
        hc.oom_score_adj = r.oom_score_adj;
    }
    let env: Vec<String> = config
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
        .collect();
    let cfg = Config {
        image: image_id.to_string(),
        hostname: if host_net {
            String::new()
        } else {
            sandbox.hostname.clone()
        },
        user: user_of(&sc),
        env: (!env.is_empty()).then_some(env),
        entrypoint: some(&config.command),
        cmd: some(&config.args),
        working_dir: config.working_dir.clone(),
        tty: config.tty,
        open_stdin: config.stdin,
        stdin_once: config.stdin_once,
        labels: Some(BTreeMap::from([
            (KIND_LABEL.to_string(), "container".to_string()),
            (SANDBOX_LABEL.to_string(), sandbox.id.clone()),
        ])),
        ..Default::default()
    };
    (cfg, hc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_of_security_contexts() {
        let mut sc = pb::LinuxContainerSecurityContext::default();
        assert_eq!(user_of(&sc), "");
        sc.run_as_user = Some(pb::Int64Value { value: 1000 });
        assert_eq!(user_of(&sc), "1000");
        sc.run_as_group = Some(pb::Int64Value { value: 5 });
        assert_eq!(user_of(&sc), "1000:5");
        sc.run_as_user = None;
        sc.run_as_username = "nobody".into();
        assert_eq!(user_of(&sc), "nobody:5");
    }

    #[test]
    #[allow(deprecated)]
    fn seccomp_profiles_as_containerd_chooses_them() {
        use pb::security_profile::ProfileType;
        let profile = |t: ProfileType, r: &str| pb::LinuxContainerSecurityContext {
            seccomp: Some(pb::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        };
        let unconfined = Some("seccomp=unconfined".to_string());
        let none = pb::LinuxContainerSecurityContext::default();
        assert_eq!(seccomp_option(&none).unwrap(), unconfined);
        let default = profile(ProfileType::RuntimeDefault, "");
        assert_eq!(seccomp_option(&default).unwrap(), None);
        let mut privileged = profile(ProfileType::Unconfined, "");
        privileged.privileged = true;
        assert_eq!(seccomp_option(&privileged).unwrap(), None);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        std::fs::write(&f, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let local = profile(ProfileType::Localhost, f.to_str().unwrap());
        assert_eq!(
            seccomp_option(&local).unwrap(),
            Some(r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#.to_string())
        );
        let missing = profile(ProfileType::Localhost, "/no/such/profile.json");
        assert_eq!(
            seccomp_option(&missing).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // The deprecated path field.
        let path = |p: &str| pb::LinuxContainerSecurityContext {
            seccomp_profile_path: p.into(),
            ..Default::default()
        };
        assert_eq!(seccomp_option(&path("runtime/default")).unwrap(), None);
        assert_eq!(seccomp_option(&path("unconfined")).unwrap(), unconfined);
        assert!(seccomp_option(&path(&format!("localhost/{}", f.display())))
            .unwrap()
            .is_some_and(|o| o.contains("SCMP_ACT_ALLOW")));
        assert!(seccomp_option(&path("bogus")).is_err());
    }

    #[test]
    fn pod_namespaces_and_security() {
        let sandbox = SandboxRecord {
            id: "sb".into(),
            hostname: "pod-a".into(),
            cgroup_parent: "/kubepods/podx".into(),
            dns_servers: vec!["10.0.0.10".into()],
            ..Default::default()
        };
        let config = pb::ContainerConfig {
            command: vec!["/bin/sh".into()],
            envs: vec![pb::KeyValue {
                key: "A".into(),
                value: b"b".to_vec(),
            }],
            linux: Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    readonly_rootfs: true,
                    no_new_privs: true,
                    namespace_options: Some(pb::NamespaceOption {
                        pid: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    capabilities: Some(pb::Capability {
                        add_capabilities: vec!["NET_ADMIN".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(pb::LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_quota: 50000,
                    cpu_period: 100000,
                    cpu_shares: 512,
                    ..Default::default()
                }),
            }),
            mounts: vec![pb::Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                propagation: pb::MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (cfg, hc) = engine_config(&sandbox, &config, "sha256:abc", None);
        assert_eq!(cfg.hostname, "pod-a");
        assert_eq!(cfg.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(cfg.cmd, None);
        assert_eq!(cfg.env, Some(vec!["A=b".to_string()]));
        assert_eq!(hc.network_mode, "container:sb");
        assert_eq!(hc.ipc_mode, "container:sb");
        assert_eq!(hc.pid_mode, "container:sb");
        assert_eq!(hc.cgroup_parent, "/kubepods/podx");
        assert_eq!(
            (hc.memory, hc.cpu_quota, hc.cpu_shares),
            (64 << 20, 50000, 512)
        );
        assert!(hc.readonly_rootfs);
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
        let m = &hc.mounts.as_ref().unwrap()[0];
        assert_eq!(
            m.bind_options.as_ref().unwrap().propagation,
            "rslave",
            "{m:?}"
        );
    }
}
