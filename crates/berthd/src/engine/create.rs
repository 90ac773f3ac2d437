//! `POST /containers/create`: the request checked, merged with the image's config by
//! dockerd's rules, the record written and the participants' parts reserved.

use std::collections::BTreeMap;

use berth_api::container::{Config, CreateRequest, HealthConfig, HostConfig};
use berth_api::go::Set;
use berth_image::manifest::ContainerConfig;

use super::{Container, CreateInput, Engine, EngineError, Result};
use crate::names;

/// The `PATH` a container gets when neither its image nor its request sets one (dockerd's
/// `oci.DefaultPathEnv`).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// dockerd's `ValidateRestartPolicy` (an empty name takes any count, as before v25), for
/// create and update.
pub(crate) fn validate_restart_policy(rp: &berth_api::container::RestartPolicy) -> Result<()> {
    match rp.name.as_str() {
        "" => {}
        "no" | "always" | "unless-stopped" => {
            if rp.maximum_retry_count != 0 {
                let negative = if rp.maximum_retry_count < 0 {
                    " and cannot be negative"
                } else {
                    ""
                };
                return Err(EngineError::BadRequest(format!(
                    "invalid restart policy: maximum retry count can only be used with 'on-failure'{negative}"
                )));
            }
        }
        "on-failure" => {
            if rp.maximum_retry_count < 0 {
                return Err(EngineError::BadRequest(
                    "invalid restart policy: maximum retry count cannot be negative".into(),
                ));
            }
        }
        other => {
            return Err(EngineError::BadRequest(format!(
                "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
            )))
        }
    }
    Ok(())
}

/// dockerd's shortest health check interval, timeout, start period and start interval (1ms).
const MIN_HEALTH_DURATION_NS: i64 = 1_000_000;

/// dockerd's `validateContainerConfig`: an absolute working directory (cleaned, as dockerd
/// keeps it), variables with a name, health check durations of at least 1ms.
fn validate_config(config: &mut Config) -> Result<()> {
    let bad = |m: String| Err(EngineError::BadRequest(m));
    if !config.working_dir.is_empty() {
        if !config.working_dir.starts_with('/') {
            return bad(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                config.working_dir
            ));
        }
        let clean = berth_build::dockerignore::clean(&config.working_dir);
        config.working_dir = if clean == "." {
            "/".into()
        } else {
            format!("/{clean}")
        };
    }
    for e in config.env.iter().flatten() {
        if e.split('=').next().is_none_or(str::is_empty) {
            return bad(format!("invalid environment variable: {e}"));
        }
    }
    if let Some(h) = &config.healthcheck {
        for (what, v) in [
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
        ] {
            if v != 0 && v < MIN_HEALTH_DURATION_NS {
                return bad(format!("{what} in Healthcheck cannot be less than 1ms"));
            }
        }
        if h.retries < 0 {
            return bad("Retries in Healthcheck cannot be negative".into());
        }
    }
    Ok(())
}

/// Refuses options Berth cannot honour yet (never dropped silently), and invalid policies.
fn validate(config: &Config, hc: &HostConfig) -> Result<()> {
    let unsupported = |what: &str| {
        Err(EngineError::BadRequest(format!(
            "{what} is not supported by berth yet"
        )))
    };
    // NetworkMode, ports, DNS and extra hosts are checked by the network participant; links
    // when the container is made (they name other containers). `VolumeDriver`: checked when
    // the container's volumes are created (the mounts participant), as dockerd looks the
    // plugin up only then.
    if hc.device_requests.as_ref().is_some_and(|d| !d.is_empty()) {
        return unsupported("HostConfig.DeviceRequests");
    }
    let rp = &hc.restart_policy;
    validate_restart_policy(rp)?;
    if hc.auto_remove && !rp.is_none() {
        return Err(EngineError::BadRequest(
            "can't create 'AutoRemove' container with restart policy".into(),
        ));
    }
    // dockerd's `verifyContainerSettings`: a stop signal must be one.
    if !config.stop_signal.is_empty()
        && berth_shim::protocol::signal_by_name(&config.stop_signal).is_none()
    {
        return Err(EngineError::BadRequest(format!(
            "Invalid signal: {}",
            config.stop_signal
        )));
    }
    if let Some(t) = config.healthcheck.as_ref().and_then(|h| h.test.as_ref()) {
        match t.first().map(String::as_str) {
            None | Some("NONE" | "CMD" | "CMD-SHELL") => {}
            Some(other) => {
                return Err(EngineError::BadRequest(format!(
                    "invalid health check test: unknown type {other:?}"
                )))
            }
        }
    }
    Ok(())
}

/// dockerd's `validateNetMode` of a create request (its decoding step, before anything is
/// looked up): what a container sharing another's network namespace (`container:<x>`) or the
/// host's cannot set, with dockerd's messages.
pub(crate) fn validate_net_mode(config: &Config, hc: &HostConfig) -> Result<()> {
    let bad = |m: &str| Err(EngineError::BadRequest(m.into()));
    let mode = hc.network_mode.as_str();
    let some = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if mode == "container" || mode.starts_with("container:") {
        if mode.strip_prefix("container:").is_none_or(str::is_empty) {
            return bad("invalid network mode: invalid container format container:<name|id>");
        }
        if !config.hostname.is_empty() {
            return bad("conflicting options: hostname and the network mode");
        }
        if some(&hc.links) {
            return bad("conflicting options: container type network can't be used with links. This would result in undefined behavior");
        }
        if some(&hc.dns) {
            return bad("conflicting options: dns and the network mode");
        }
        if some(&hc.extra_hosts) {
            return bad("conflicting options: custom host-to-IP mapping and the network mode");
        }
        if hc.port_bindings.as_ref().is_some_and(|p| !p.is_empty()) || hc.publish_all_ports {
            return bad("conflicting options: port publishing and the container type network mode");
        }
        if config.exposed_ports.as_ref().is_some_and(|p| !p.is_empty()) {
            return bad("conflicting options: port exposing and the container type network mode");
        }
    }
    if hc.uts_mode == "host" && !config.hostname.is_empty() {
        return bad("conflicting options: hostname and the UTS mode");
    }
    if mode == "host" && some(&hc.links) {
        return bad("conflicting options: host type networking can't be used with links. This would result in undefined behavior");
    }
    Ok(())
}

/// The image's health check (kept verbatim in the image config).
fn image_healthcheck(ic: &ContainerConfig) -> Option<HealthConfig> {
    match ic.healthcheck() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("ignoring the image's health check: {e}");
            None
        }
    }
}

/// Dockerd's merge of a create request's `Config` with the image's (`daemon/commit.go`):
/// empty values take the image's (`User ""`, `WorkingDir ""`, no `Env`…), labels and exposed
/// ports and volumes are unions, `Entrypoint` `null` inherits the image's while `[]` and
/// `[""]` mean none, and `Cmd` is inherited only without an entrypoint of the request.
pub fn merge_image_config(c: &mut Config, ic: &ContainerConfig) -> Result<()> {
    if c.user.is_empty() {
        c.user = ic.user.clone().unwrap_or_default();
    }
    let image_env = ic.env.clone().unwrap_or_default();
    match c.env.as_mut().filter(|e| !e.is_empty()) {
        None => c.env = Some(image_env),
        Some(env) => {
            for ie in image_env {
                let key = ie.split('=').next().unwrap_or("");
                if !env.iter().any(|e| e.split('=').next() == Some(key)) {
                    env.push(ie);
                }
            }
        }
    }
    let labels = c.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in ic.labels.iter().flatten() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if c.entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if c.cmd.as_ref().is_none_or(Vec::is_empty) {
            c.cmd.clone_from(&ic.cmd);
        }
        if c.entrypoint.is_none() {
            c.entrypoint.clone_from(&ic.entrypoint);
        }
    }
    if let Some(ih) = image_healthcheck(ic) {
        match c.healthcheck.as_mut() {
            None => c.healthcheck = Some(ih),
            Some(h) => h.merge_image(&ih),
        }
    }
    if c.working_dir.is_empty() {
        c.working_dir = ic.working_dir.clone().unwrap_or_default();
    }
    if c.stop_signal.is_empty() {
        c.stop_signal = ic.stop_signal.clone().unwrap_or_default();
    }
    // Reset the entrypoint if it is [""].
    if c.entrypoint.as_deref() == Some(&[String::new()][..]) {
        c.entrypoint = None;
    }
    let ep = c.entrypoint.as_deref().unwrap_or_default();
    let cmd = c.cmd.as_deref().unwrap_or_default();
    if ep.is_empty() && cmd.is_empty() {
        return Err(EngineError::BadRequest("no command specified".into()));
    }
    // Berth keeps a PATH in the container's environment (the image's, or the default).
    let env = c.env.get_or_insert_with(Vec::new);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    Ok(())
}

/// `Config.Volumes`: the request's and the image's (`None` when there are none).
fn merged_volumes(
    request: Option<&Set>,
    image: Option<&BTreeMap<String, serde_json::Value>>,
) -> Option<Set> {
    let m: Set = image
        .into_iter()
        .flat_map(BTreeMap::keys)
        .chain(request.into_iter().flat_map(Set::keys))
        .map(|k| (k.clone(), Default::default()))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// How [`Engine::create_with`] creates a container beyond Docker's request (the CRI's).
#[derive(Debug, Default)]
pub(crate) struct CreateOptions {
    /// The container's id, chosen by the caller (the CRI writes its sandbox record, named by
    /// it, before the container exists); a new one when `None`.
    pub id: Option<String>,
    /// The intent and the record are written atomically but not synced: a `kill -9` at any
    /// point finds them as for any create; a power loss may take them, and the daemon's start
    /// then removes the container's directory that has no (or an empty) record, with its
    /// snapshot and parts (see `recovery`). For the CRI's containers, which a node's reboot
    /// ends anyway (the kubelet makes new ones): one journal commit less per create.
    pub volatile: bool,
}

impl Engine {
    /// dockerd's `adaptSharedNamespaceContainer`: `container:<name>` PID and IPC modes keep
    /// the container's ID (the sharing outlives a rename); a PID mode's container must exist.
    fn adapt_shared_namespaces(&self, hc: &mut HostConfig) -> Result<()> {
        if let Some(c) = hc.pid_mode.strip_prefix("container:") {
            let id = self.get(c).map_err(EngineError::not_found_is_invalid)?.id;
            hc.pid_mode = format!("container:{id}");
        }
        if let Some(c) = hc.ipc_mode.strip_prefix("container:") {
            if let Ok(other) = self.get(c) {
                hc.ipc_mode = format!("container:{}", other.id);
            }
        }
        Ok(())
    }

    /// Creates a container from Docker's create request.
    pub fn create(&self, name: Option<&str>, req: CreateRequest) -> Result<(String, Vec<String>)> {
        self.create_with(name, req, CreateOptions::default(), |_| {})
    }

    /// [`Self::create`], with `finish` changing the record before its one write (the CRI's
    /// log file and driver: no second write of the record), and the CRI's options.
    pub(crate) fn create_with(
        &self,
        name: Option<&str>,
        req: CreateRequest,
        opts: CreateOptions,
        finish: impl FnOnce(&mut Container),
    ) -> Result<(String, Vec<String>)> {
        let CreateRequest {
            mut config,
            host_config,
            networking_config,
        } = req;
        let image_name = config.image.clone();
        if image_name.is_empty() {
            // dockerd's merge with no image: a command is all it checks then (Berth cannot
            // run a container without an image).
            let no_cmd = config.cmd.as_ref().is_none_or(Vec::is_empty)
                && config
                    .entrypoint
                    .as_ref()
                    .is_none_or(|e| e.is_empty() || e == &[String::new()]);
            return Err(EngineError::BadRequest(
                if no_cmd {
                    "no command specified"
                } else {
                    "no image specified"
                }
                .into(),
            ));
        }
        let mut hc = host_config.unwrap_or_default();
        validate_config(&mut config)?;
        validate(&config, &hc)?;
        self.adapt_shared_namespaces(&mut hc)?;
        let ncpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut warnings = crate::hostconfig::check(&hc, ncpus)?;
        warnings.extend(crate::hostconfig::fill_defaults(&mut hc));
        warnings.extend(crate::rootless_cgroups::drop_limits(&mut hc)?);
        let resolved = self.images.resolve(&image_name).map_err(|e| {
            if e.is_not_found() {
                EngineError::ImageNotFound(image_name.clone())
            } else {
                EngineError::BadRequest(e.to_string())
            }
        })?;
        // After the image, as dockerd's layer creation.
        crate::hostconfig::check_storage_opt(&hc)?;
        let icfg = self.images.config(&resolved.image.id)?;
        let ic = icfg.config.clone().unwrap_or_default();
        let request_volumes = config.volumes.take();
        config.exposed_ports = crate::network::ports::exposed_ports(
            ic.exposed_ports.iter().flat_map(|m| m.keys()),
            config.exposed_ports.as_ref(),
            &hc,
        );
        config.volumes = merged_volumes(request_volumes.as_ref(), ic.volumes.as_ref());
        merge_image_config(&mut config, &ic)?;
        let ep = config.entrypoint.clone().unwrap_or_default();
        let cmd = config.cmd.clone().unwrap_or_default();
        let mut argv: Vec<String> = ep.into_iter().chain(cmd.iter().cloned()).collect();
        let path = argv.remove(0);
        if cmd.is_empty() {
            config.cmd = None;
        }
        let id = match opts.id {
            Some(id) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                if self.lookup(&id).is_ok() {
                    return Err(EngineError::Conflict(format!(
                        "container id {id} is in use"
                    )));
                }
                id
            }
            Some(id) => return Err(EngineError::bad(format!("invalid container id {id:?}"))),
            None => crate::util::new_id(),
        };
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                if !names::valid(n) {
                    return Err(EngineError::BadRequest(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => {
                let mut retry = 0;
                loop {
                    let n = names::generate(retry);
                    if self.lookup(&n).is_err() {
                        break n;
                    }
                    retry += 1;
                }
            }
        };
        if config.hostname.is_empty() {
            config.hostname = id[..12].to_string();
        }
        config.hostname = config.hostname.chars().take(64).collect();
        config.image = image_name;
        if hc.network_mode.is_empty() {
            hc.network_mode = "default".into();
        }
        // A rootless daemon has no bridge: its default is the host's network.
        if hc.network_mode == "default" && crate::rootless_net::host_only() {
            hc.network_mode = "host".into();
        }
        self.live()
            .defaults
            .merge_log_config(&mut hc.log_config)
            .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        let mut container = Container {
            id: id.clone(),
            name: format!("/{name}"),
            created: crate::util::now_rfc3339_nano(),
            path,
            args: argv,
            image: resolved.image.id.to_string(),
            config,
            host_config: hc,
            log_path: self
                .data_dir(&id)
                .join(format!("{id}-json.log"))
                .display()
                .to_string(),
            warnings: warnings.clone(),
            ..Default::default()
        };
        container.links = self.resolve_links(&container)?;
        // Reserve the name under the map lock.
        {
            let map = self.map.lock().unwrap();
            if let Some(e) = map
                .values()
                .find(|e| e.rec.lock().unwrap().name == container.name)
            {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"{}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    container.name,
                    e.rec.lock().unwrap().id
                )));
            }
        }
        // Undone at the next daemon start if a crash interrupts what follows.
        let t0 = std::time::Instant::now();
        let op = if opts.volatile {
            super::recovery::Op::CreateVolatile
        } else {
            super::recovery::Op::Create
        };
        let _intent = self.intent(op, &id)?;
        super::trace_step("create", &id, "intent", t0);
        let dir = self.data_dir(&id);
        std::fs::create_dir_all(&dir).map_err(EngineError::io("creating", &dir))?;
        crate::failpoint::hit("create.dir");
        let snap = (|| -> Result<String> {
            let sn = self.images.snapshotter()?;
            let top = resolved.image.chain_ids().last().cloned();
            if opts.volatile {
                sn.prepare_container_volatile(&id, top.as_ref())?;
            } else {
                sn.prepare_container(&id, top.as_ref())?;
            }
            let driver = sn.driver().to_string();
            // Docker's working directory exists from the create on (the CRI's, as
            // containerd's, is made by the runtime at the start). An image's own (as a
            // built WORKDIR) is seen in its layers: no mount then.
            let wd = container.config.working_dir.as_str();
            let in_image = || {
                let lowers = sn.overlay_lowers(top.as_ref()?)?.ok()?;
                berth_build::builder::dir_in_layers(&lowers, wd).ok()?
            };
            if !opts.volatile && !matches!(wd, "" | "/") && in_image() != Some(true) {
                if let Err(e) = crate::archive::make_working_dir(self, &container) {
                    let _ = sn.remove_container(&id);
                    return Err(e);
                }
            }
            Ok(driver)
        })();
        match snap {
            Ok(d) => container.driver = d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        super::trace_step("create", &id, "snapshot", t0);
        crate::failpoint::hit("create.snapshot");
        // Volumes and mounts, then networking: each participant reserves its part.
        let input = CreateInput {
            networking: networking_config.as_ref(),
            volumes: request_volumes.as_ref(),
            image_volumes: ic.volumes.as_ref(),
            volatile: opts.volatile,
        };
        let parts = self.participants();
        let mut done = 0;
        let mut created = Ok(());
        for p in parts {
            created = p.create(&container, input, self);
            if created.is_err() {
                break;
            }
            done += 1;
        }
        if created.is_ok() {
            crate::failpoint::hit("create.participants");
        }
        let created = created.and_then(|_| {
            finish(&mut container);
            if opts.volatile {
                self.persist_state(&container)
            } else {
                self.persist(&container)
            }
        });
        if let Err(e) = created {
            for p in parts[..done].iter().rev() {
                p.remove(&id, true);
            }
            if let Ok(sn) = self.images.snapshotter() {
                let _ = sn.remove_container(&id);
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        super::trace_step("create", &id, "persisted", t0);
        self.container_event(&container, "create", &[]);
        self.insert(container);
        Ok((id, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(v: serde_json::Value) -> ContainerConfig {
        serde_json::from_value(v).unwrap()
    }

    fn config(v: serde_json::Value) -> Config {
        berth_api::from_value(v).unwrap()
    }

    #[test]
    fn empty_values_take_the_images() {
        let ic = image(serde_json::json!({
            "User": "appuser", "WorkingDir": "/app", "Env": ["A=image", "B=image"],
            "Entrypoint": ["/entry"], "Cmd": ["serve"], "Labels": {"l": "image", "m": "image"},
            "StopSignal": "SIGINT",
            "Healthcheck": {"Test": ["CMD", "check"], "Interval": 5, "Retries": 3},
        }));
        // What the docker CLI sends for `docker run IMAGE id`.
        let mut c = config(serde_json::json!({
            "User": "", "WorkingDir": "", "Env": ["B=user", "C=user"], "Cmd": ["id"],
            "Entrypoint": null, "Labels": {"l": "user"},
            "Healthcheck": {"Interval": 7},
        }));
        merge_image_config(&mut c, &ic).unwrap();
        assert_eq!(c.user, "appuser");
        assert_eq!(c.working_dir, "/app");
        assert_eq!(
            c.env.unwrap(),
            vec![DEFAULT_PATH, "B=user", "C=user", "A=image"],
            "the request's env first, then the image's that it does not set"
        );
        assert_eq!(c.entrypoint.unwrap(), vec!["/entry"]);
        assert_eq!(c.cmd.unwrap(), vec!["id"]);
        let labels = BTreeMap::from([("l".into(), "user".into()), ("m".into(), "image".into())]);
        assert_eq!(c.labels.unwrap(), labels, "the request's over the image's");
        assert_eq!(c.stop_signal, "SIGINT");
        let h = c.healthcheck.unwrap();
        assert_eq!((h.interval, h.retries), (7, 3));
        assert_eq!(h.test.unwrap(), vec!["CMD", "check"]);
        // A user given explicitly wins.
        let mut c = Config {
            user: "0".into(),
            cmd: Some(vec!["id".into()]),
            ..Default::default()
        };
        merge_image_config(&mut c, &ic).unwrap();
        assert_eq!(c.user, "0");
    }

    #[test]
    fn entrypoint_and_cmd_rules() {
        let ic = ContainerConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        };
        let merged = |v: serde_json::Value| {
            let mut c = config(v);
            merge_image_config(&mut c, &ic).map(|_| (c.entrypoint, c.cmd))
        };
        let s = |v: &[&str]| Some(v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        // null: the image's entrypoint and command.
        assert_eq!(
            merged(serde_json::json!({})).unwrap(),
            (s(&["/entry"]), s(&["serve"]))
        );
        // [] : no entrypoint, the image's command.
        assert_eq!(
            merged(serde_json::json!({"Entrypoint": []})).unwrap(),
            (s(&[]), s(&["serve"]))
        );
        // [""] with a command: no entrypoint, that command.
        assert_eq!(
            merged(serde_json::json!({"Entrypoint": [""], "Cmd": ["ls"]})).unwrap(),
            (None, s(&["ls"]))
        );
        // [""] alone: nothing to run.
        assert!(merged(serde_json::json!({"Entrypoint": [""]})).is_err());
        // An entrypoint of the request: the image's command is not inherited.
        assert_eq!(
            merged(serde_json::json!({"Entrypoint": ["/other"]})).unwrap(),
            (s(&["/other"]), None)
        );
        // A string is a one-element list.
        assert_eq!(
            merged(serde_json::json!({"Cmd": "ls"})).unwrap(),
            (s(&["/entry"]), s(&["ls"]))
        );
    }

    #[test]
    fn unsupported_options_name_the_field() {
        let hc: HostConfig =
            berth_api::from_value(serde_json::json!({"DeviceRequests": [{"Count": 1}]})).unwrap();
        let e = validate(&Config::default(), &hc).unwrap_err();
        assert!(e.to_string().contains("HostConfig.DeviceRequests"));
        let hc: HostConfig = berth_api::from_value(
            serde_json::json!({"NetworkMode": "none", "PidsLimit": 0, "Binds": null}),
        )
        .unwrap();
        assert!(validate(&Config::default(), &hc).is_ok());
        let hc: HostConfig = berth_api::from_value(
            serde_json::json!({"AutoRemove": true, "RestartPolicy": {"Name": "always"}}),
        )
        .unwrap();
        assert!(validate(&Config::default(), &hc).is_err());
    }
}
