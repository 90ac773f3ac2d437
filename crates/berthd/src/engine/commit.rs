//! `POST /commit`: a new image from a container's changes (dockerd's
//! `CreateImageFromContainer`): the container's image layers and one layer of its writable
//! layer (without the mount points the runtime made), its config with the request's.

use std::path::Path;
use std::sync::Arc;

use berth_api::container::Config;
use berth_image::image_store::{LayerRecord, RegisterRequest};
use berth_image::manifest::{ContainerConfig, Descriptor, History, ImageConfig};
use berth_image::{Digest, Reference};

use super::ops::{xattr_opaque, INIT_LAYER};
use super::recovery::Op;
use super::{Container, Engine, EngineError, Result};

/// What to commit and how.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// The container (name or ID).
    pub container: String,
    /// The tag of the new image (none: untagged).
    pub tag: Option<Reference>,
    pub author: String,
    pub comment: String,
    /// Pause a running container while its changes are read.
    pub pause: bool,
    /// Dockerfile lines applied to the config (`ENV`, `CMD`, …).
    pub changes: Vec<String>,
    /// A config whose set fields win over the container's.
    pub config: Option<Config>,
}

impl Engine {
    /// Commits a container's changes as an image; returns its ID (`sha256:…`).
    pub async fn commit(self: &Arc<Self>, req: CommitRequest) -> Result<String> {
        let c = self.get(&req.container)?;
        if c.state.dead {
            return Err(EngineError::Conflict(format!(
                "You cannot commit container {} which is Dead",
                c.id
            )));
        }
        let mut paused_here = req.pause && c.state.running && !c.state.paused;
        // What a crash leaves of the commit goes at the next start (`recovery`); a container
        // it paused is resumed then.
        let _commit = self.intent(Op::Commit, &crate::util::new_id())?;
        let _pause = paused_here
            .then(|| self.intent(Op::Pause, &c.id))
            .transpose()?;
        if paused_here {
            if let Err(e) = self.set_paused(&c.id, true).await {
                // A container that exited after its state was read (its exit not recorded
                // yet) has nothing to pause: it is committed as it is.
                if !e.to_string().contains("not running") {
                    return Err(e);
                }
                paused_here = false;
            }
            crate::failpoint::hit("commit.paused");
        }
        let engine = self.clone();
        let (cid, tag, comment) = (c.id.clone(), req.tag.clone(), req.comment.clone());
        let res = tokio::task::spawn_blocking(move || engine.commit_image(&c, req))
            .await
            .map_err(EngineError::from)
            .and_then(|r| r);
        if let Ok(id) = &res {
            // dockerd's order: the image's `create`, its `tag`, the container's `commit`;
            // before the resume, as dockerd (whose resume is deferred).
            let id = id.to_string();
            self.image_event_of("create", &id, &id);
            let image_ref = tag.map(|t| t.familiar_string()).unwrap_or_default();
            if !image_ref.is_empty() {
                self.image_event_of("tag", &id, &image_ref);
            }
            if let Ok(c) = self.get(&cid) {
                self.container_event(
                    &c,
                    "commit",
                    &[
                        ("comment", comment.as_str()),
                        ("imageID", id.as_str()),
                        ("imageRef", image_ref.as_str()),
                    ],
                );
            }
        }
        if paused_here {
            if let Err(e) = self.set_paused(&cid, false).await {
                tracing::warn!("resuming container {cid} after its commit: {e}");
            }
        }
        Ok(res?.to_string())
    }

    /// Writes the layer, the config and registers the image (blocking).
    fn commit_image(&self, c: &Container, req: CommitRequest) -> Result<Digest> {
        let store = &self.images;
        let sn = store.snapshotter()?;
        let Some(upper) = sn.container_upper(&c.id) else {
            return Err(EngineError::BadRequest(format!(
                "commit is not available for the {} driver",
                sn.driver()
            )));
        };
        let parent_id = Digest::parse(&c.image)
            .map_err(|e| EngineError::Internal(format!("container image {}: {e}", c.image)))?;
        let parent = store.get(&parent_id)?;
        let parent_config = store.config(&parent_id)?;
        let config = commit_config(&req, &c.config)?;

        let (written, pending) =
            berth_build::diff::write_layer_pending_filtered(store.blobs(), &upper, &|r| {
                init_layer_only(&upper, r)
            })
            .map_err(EngineError::io("writing the layer of", &upper))?;
        crate::failpoint::hit("commit.layer");
        let empty = written.record.diff_id == berth_build::diff::empty_diff_id();
        let mut layers = parent.layers.clone();
        let mut published = Vec::new();
        if !empty {
            published = store
                .blobs()
                .publish(vec![pending])
                .map_err(|e| EngineError::Image(e.into()))?;
            layers.push(written.record.clone());
        }
        let res = self.register_commit(c, &req, config, parent_config, &layers, empty);
        if res.is_err() {
            let _ = store.discard_unreferenced(&published);
        }
        res
    }

    fn register_commit(
        &self,
        c: &Container,
        req: &CommitRequest,
        config: ContainerConfig,
        parent: ImageConfig,
        layers: &[LayerRecord],
        empty: bool,
    ) -> Result<Digest> {
        let store = &self.images;
        let now = berth_image::timeutil::now_rfc3339_nano();
        let author = Some(req.author.clone()).filter(|a| !a.is_empty());
        let container_config = to_image_config(&c.config)?;
        let mut img = parent;
        for k in ["container", "container_config", "comment", "docker_version"] {
            img.extra.remove(k);
        }
        img.extra.insert("container".into(), c.id.clone().into());
        img.extra.insert(
            "container_config".into(),
            serde_json::to_value(&container_config).map_err(EngineError::encode("a config"))?,
        );
        img.extra.insert(
            "docker_version".into(),
            format!("berth-{}", env!("CARGO_PKG_VERSION")).into(),
        );
        img.created = Some(now.clone());
        img.author = author.clone();
        img.config = Some(config);
        if let Some(l) = layers.last().filter(|_| !empty) {
            img.rootfs.diff_ids.push(l.diff_id.clone());
        }
        img.history.push(History {
            created: Some(now),
            created_by: Some(c.config.cmd.clone().unwrap_or_default().join(" ")),
            author,
            comment: Some(req.comment.clone()).filter(|m| !m.is_empty()),
            empty_layer: empty,
        });
        let config = serde_json::to_vec(&img).map_err(EngineError::encode("the image config"))?;
        let descs: Vec<Descriptor> = layers.iter().map(LayerRecord::descriptor).collect();
        store.unpack(layers)?;
        crate::failpoint::hit("commit.unpacked");
        let manifest = berth_image::image_store::synthesize_manifest(&config, &descs);
        let reg = store.register(RegisterRequest {
            manifest,
            config,
            layers: layers
                .iter()
                .zip(&descs)
                .map(|(l, d)| l.input(d.clone()))
                .collect(),
            tags: req.tag.iter().cloned().collect(),
            // The container's image is the new image's parent (inspect's `Parent`).
            parent: Digest::parse(&c.image).ok(),
            ..Default::default()
        })?;
        Ok(reg.id)
    }
}

/// Whether an entry of the writable layer (`r`, relative) is one of the init layer's mount
/// points (or below `/dev`, `/proc`, `/sys`), or a directory holding only those: dockerd
/// keeps them in a layer of their own, so they are never committed.
fn init_layer_only(upper: &Path, r: &str) -> bool {
    let abs = format!("/{r}");
    if INIT_LAYER.contains(&abs.as_str()) {
        return true;
    }
    let prefix = format!("{abs}/");
    if !INIT_LAYER.iter().any(|m| m.starts_with(&prefix)) {
        return false;
    }
    let dir = upper.join(r);
    let Ok(md) = std::fs::symlink_metadata(&dir) else {
        return false;
    };
    if !md.is_dir() || xattr_opaque(&dir) {
        return false;
    }
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return false;
    };
    let mut any = false;
    for e in rd.flatten() {
        any = true;
        let name = e.file_name();
        if !init_layer_only(upper, &format!("{r}/{}", name.to_string_lossy())) {
            return false;
        }
    }
    any
}

/// The new image's config: the request's (or the container's) with the changes applied,
/// then completed from the container's (dockerd's `merge`).
fn commit_config(req: &CommitRequest, container: &Config) -> Result<ContainerConfig> {
    let base = to_image_config(req.config.as_ref().unwrap_or(container))?;
    let apply = |changes: &[String]| {
        berth_image::archive::apply_changes(base.clone(), changes)
            .map_err(|e| EngineError::BadRequest(e.to_string()))
    };
    // Each change sees the environment the ones before it left (dockerd dispatches them as
    // Dockerfile instructions, one after the other).
    let mut changes = Vec::new();
    for line in &req.changes {
        let env = apply(&changes)?.env.unwrap_or_default();
        changes.push(expand_change(line, &env));
    }
    let changed = apply(&changes)?;
    let mut user: Config = serde_json::to_value(&changed)
        .and_then(serde_json::from_value)
        .map_err(EngineError::encode("the committed config"))?;
    merge(&mut user, container);
    to_image_config(&user)
}

/// The instructions whose arguments dockerd's builder expands (`$VAR`, `${VAR:-x}`) with the
/// image's environment.
const EXPANDED: &[&str] = &[
    "ENV",
    "LABEL",
    "WORKDIR",
    "USER",
    "EXPOSE",
    "VOLUME",
    "STOPSIGNAL",
];

/// A change line with its variables expanded as the builder expands them (quotes honoured:
/// nothing in single quotes); a word that needs it is quoted again for the change parser.
/// A line that does not expand is kept as it is (the parser gives its error).
fn expand_change(line: &str, env: &[String]) -> String {
    use berth_build::shell::{expand_word, split_raw};
    let t = line.trim();
    let (instr, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    if !EXPANDED.contains(&instr.to_ascii_uppercase().as_str()) {
        return line.to_string();
    }
    let Ok(words) = split_raw(rest.trim(), '\\') else {
        return line.to_string();
    };
    let vars: std::collections::BTreeMap<String, String> = env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut out = vec![instr.to_string()];
    for w in words {
        let Ok(x) = expand_word(&w, '\\', &vars) else {
            return line.to_string();
        };
        if x.is_empty() || x.contains(|c: char| c.is_whitespace() || "\"'\\".contains(c)) {
            out.push(format!(
                "\"{}\"",
                x.replace('\\', "\\\\").replace('"', "\\\"")
            ));
        } else {
            out.push(x);
        }
    }
    out.join(" ")
}

fn to_image_config(c: &Config) -> Result<ContainerConfig> {
    serde_json::to_value(c)
        .and_then(serde_json::from_value)
        .map_err(EngineError::encode("the container config"))
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// dockerd's `merge` (daemon/commit.go): what the user's config leaves empty comes from the
/// container's.
fn merge(user: &mut Config, image: &Config) {
    if user.user.is_empty() {
        user.user = image.user.clone();
    }
    match (&mut user.exposed_ports, &image.exposed_ports) {
        (Some(u), Some(i)) if !u.is_empty() => {
            for (k, v) in i {
                u.entry(k.clone()).or_insert(*v);
            }
        }
        (u, i) => {
            if u.as_ref().is_none_or(|u| u.is_empty()) {
                *u = i.clone();
            }
        }
    }
    match &mut user.env {
        Some(u) if !u.is_empty() => {
            for ie in image.env.iter().flatten() {
                if !u.iter().any(|ue| env_key(ue) == env_key(ie)) {
                    u.push(ie.clone());
                }
            }
        }
        u => *u = image.env.clone(),
    }
    let labels = user.labels.get_or_insert_with(Default::default);
    for (k, v) in image.labels.iter().flatten() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if user.entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if user.cmd.as_ref().is_none_or(Vec::is_empty) {
            user.cmd = image.cmd.clone();
        }
        if user.entrypoint.is_none() {
            user.entrypoint = image.entrypoint.clone();
        }
    }
    if let Some(ih) = &image.healthcheck {
        match &mut user.healthcheck {
            None => user.healthcheck = Some(ih.clone()),
            Some(uh) => uh.merge_image(ih),
        }
    }
    if user.working_dir.is_empty() {
        user.working_dir = image.working_dir.clone();
    }
    match &mut user.volumes {
        Some(u) if !u.is_empty() => {
            for (k, v) in image.volumes.iter().flatten() {
                u.insert(k.clone(), *v);
            }
        }
        u => *u = image.volumes.clone(),
    }
    if user.stop_signal.is_empty() {
        user.stop_signal = image.stop_signal.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(l: &[&str]) -> Option<Vec<String>> {
        Some(l.iter().map(|s| s.to_string()).collect())
    }

    fn set(l: &[&str]) -> Option<berth_api::go::Set> {
        Some(
            l.iter()
                .map(|k| (k.to_string(), Default::default()))
                .collect(),
        )
    }

    fn labels(l: &[(&str, &str)]) -> Option<std::collections::BTreeMap<String, String>> {
        Some(
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn merge_fills_what_the_user_left_empty() {
        let image = Config {
            user: "u".into(),
            env: strings(&["A=1", "B=2"]),
            cmd: strings(&["sh"]),
            working_dir: "/w".into(),
            labels: labels(&[("l", "1"), ("m", "2")]),
            exposed_ports: set(&["80/tcp"]),
            stop_signal: "SIGINT".into(),
            ..Default::default()
        };
        let mut user = Config {
            env: strings(&["B=3"]),
            labels: labels(&[("m", "9")]),
            exposed_ports: set(&["81/tcp"]),
            ..Default::default()
        };
        merge(&mut user, &image);
        assert_eq!(user.user, "u");
        assert_eq!(user.env.unwrap(), vec!["B=3", "A=1"]);
        assert_eq!(user.cmd, strings(&["sh"]));
        assert_eq!(user.working_dir, "/w");
        assert_eq!(user.labels, labels(&[("l", "1"), ("m", "9")]));
        assert_eq!(user.exposed_ports, set(&["80/tcp", "81/tcp"]));
        assert_eq!(user.stop_signal, "SIGINT");
        // An entrypoint of the user's keeps the user's (empty) command.
        let mut user = Config {
            entrypoint: strings(&["e"]),
            ..Default::default()
        };
        merge(&mut user, &image);
        assert_eq!(user.cmd, None);
    }

    #[test]
    fn changes_apply_over_the_container_config() {
        let container = Config {
            env: strings(&["A=1"]),
            cmd: strings(&["sh"]),
            image: "busybox".into(),
            ..Default::default()
        };
        let req = CommitRequest {
            changes: vec!["ENV B=2".into(), "CMD [\"cat\", \"/f\"]".into()],
            ..Default::default()
        };
        let c = commit_config(&req, &container).unwrap();
        assert_eq!(c.env.unwrap(), vec!["A=1", "B=2"]);
        assert_eq!(c.cmd.unwrap(), vec!["cat", "/f"]);
        let bad = CommitRequest {
            changes: vec!["RUN x".into()],
            ..Default::default()
        };
        assert!(matches!(
            commit_config(&bad, &container),
            Err(EngineError::BadRequest(_))
        ));
    }

    #[test]
    fn init_layer_paths_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path();
        std::fs::create_dir_all(up.join("etc")).unwrap();
        std::fs::write(up.join("etc/hosts"), b"").unwrap();
        std::fs::write(up.join("etc/resolv.conf"), b"").unwrap();
        std::fs::create_dir_all(up.join("proc")).unwrap();
        std::fs::create_dir_all(up.join("data")).unwrap();
        assert!(init_layer_only(up, "etc"));
        assert!(init_layer_only(up, "etc/hosts"));
        assert!(init_layer_only(up, "proc"));
        assert!(!init_layer_only(up, "data"));
        std::fs::write(up.join("etc/passwd"), b"").unwrap();
        assert!(!init_layer_only(up, "etc"));
        assert!(!init_layer_only(up, "etc/passwd"));
    }
}
