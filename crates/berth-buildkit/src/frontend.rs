//! The `dockerfile.v0` frontend on Berth's builder: the Dockerfile and the context come from
//! the client's session (file sync), options from the frontend attributes buildx sets
//! (`filename`, `target`, `build-arg:*`, `label:*`, `no-cache`, `image-resolve-mode`,
//! `context:*`, …), progress goes to the solve's `Status` stream as vertexes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_build::builder::StepError;
use berth_build::{BuildError, BuildOptions, Builder, Event, StepEvent};
use berth_image::{Digest, Reference};

use crate::errors::{run_failure_message, SolveError, SourceLocation};
use crate::filesync::{receive_dir, sync_dir, SyncRequest};
use crate::progress::{vertex_digest, Progress, VertexRun};
use crate::session::Session;
use crate::{BuildKit, RegistryAuth};

/// A built image (the first platform's, for a multi-platform build).
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub image_id: Digest,
    /// The image config as stored.
    pub config: Vec<u8>,
    /// Names the image was given (fully qualified).
    pub tags: Vec<String>,
    /// A multi-platform build's images, one per platform, in the order asked for (empty
    /// for a single-platform build).
    pub platforms: Vec<PlatformImage>,
}

/// One platform's image of a multi-platform build (in the store, unnamed).
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: berth_image::manifest::Platform,
    pub image_id: Digest,
    pub config: Vec<u8>,
}

impl BuildResult {
    /// Whether the result is an image index (several platforms).
    pub fn is_multi(&self) -> bool {
        self.platforms.len() > 1
    }
}

/// The items of a comma-separated attribute (`a, b`), trimmed; none when it is absent.
pub fn attr_list<'a>(
    attrs: &'a HashMap<String, String>,
    key: &str,
) -> impl Iterator<Item = &'a str> {
    attrs
        .get(key)
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The platforms of a `platform` attribute (`a,b`), normalised; empty when none is named.
pub fn platforms(
    attrs: &HashMap<String, String>,
) -> Result<Vec<berth_image::manifest::Platform>, SolveError> {
    let mut out: Vec<berth_image::manifest::Platform> = Vec::new();
    for p in attr_list(attrs, "platform") {
        let p = berth_image::manifest::Platform::parse(p)
            .map_err(|e| bad(format!("invalid platform {p:?}: {e}")))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// What a frontend run needs.
pub struct FrontendRun {
    pub solve_id: String,
    pub attrs: HashMap<String, String>,
    pub session: Arc<Session>,
    pub progress: Arc<Progress>,
    /// Names for the image (the image exporter's `name`).
    pub tags: Vec<Reference>,
    /// Set when the client went away: the build stops at its next step or output line.
    pub cancel: tokio::sync::watch::Receiver<bool>,
    /// Cache sources (besides the `cache-imports` attribute).
    pub cache_imports: Vec<crate::cache_io::CacheEntry>,
}

fn bad(msg: impl Into<String>) -> SolveError {
    SolveError::new(tonic::Code::InvalidArgument, msg)
}

/// `# syntax=` names the frontend image. Only the standard Dockerfile frontend is accepted
/// (it is built in); any other would have to be pulled and run.
pub fn check_syntax(dockerfile: &str) -> Result<(), SolveError> {
    for line in dockerfile.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let Some(rest) = l.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        if !k.trim().eq_ignore_ascii_case("syntax") {
            continue;
        }
        let v = v.trim();
        let name = v.split(['@']).next().unwrap_or(v);
        let repo = name.rsplit_once(':').map(|(r, _)| r).unwrap_or(name);
        let repo = repo
            .trim_start_matches("docker.io/")
            .trim_start_matches("index.docker.io/");
        if repo == "docker/dockerfile" || repo == "docker/dockerfile-upstream" {
            return Ok(());
        }
        return Err(bad(format!(
            "unsupported frontend {v:?} (# syntax): Berth builds with its built-in Dockerfile frontend (docker/dockerfile) and runs no other frontend image"
        )));
    }
    Ok(())
}

/// The secret and ssh ids the Dockerfile's RUN mounts use.
fn mount_ids(df: &berth_build::parser::Dockerfile) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut secrets = BTreeSet::new();
    let mut ssh = BTreeSet::new();
    for inst in df.nodes.iter().filter(|i| i.keyword == "RUN") {
        for m in inst.flag_all("mount") {
            let kv: BTreeMap<String, String> = m
                .split(',')
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, "true"));
                    (k.trim().to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            match kv.get("type").map(String::as_str) {
                Some("secret") => {
                    let id = kv.get("id").cloned().or_else(|| {
                        kv.get("target")
                            .or_else(|| kv.get("dst"))
                            .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
                    });
                    if let Some(id) = id.filter(|i| !i.is_empty()) {
                        secrets.insert(id);
                    }
                }
                Some("ssh") => {
                    ssh.insert(
                        kv.get("id")
                            .cloned()
                            .filter(|i| !i.is_empty())
                            .unwrap_or_else(|| "default".into()),
                    );
                }
                _ => {}
            }
        }
    }
    (secrets, ssh)
}

/// The build's work directory: contexts go to tmpfs when there is one (thousands of small
/// files created and removed cost more on a journaling file system than the build).
fn work_dir(bk: &BuildKit) -> Result<tempfile::TempDir, SolveError> {
    // In /dev/shm, shared with other daemons: named and claimed as `shared_tmp` says.
    if let Ok(shared) = berth_util::shared_tmp::claim(Path::new(SHM), WORK_PREFIX) {
        if let Ok(d) = tempfile::Builder::new().prefix(&shared).tempdir_in(SHM) {
            return Ok(d);
        }
    }
    let prefix = format!("{WORK_PREFIX}{}-", std::process::id());
    let tmp = bk
        .backend()
        .store()
        .tmp_dir()
        .map_err(|e| SolveError::unknown(e.to_string()))?;
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(tmp)
        .map_err(|e| SolveError::unknown(e.to_string()))
}

/// Where work directories go when it exists (tmpfs), and their name prefix.
const SHM: &str = "/dev/shm";
const WORK_PREFIX: &str = "berth-bk-";

/// Removes work directories that daemons no longer running left in /dev/shm.
pub fn cleanup_stale() {
    berth_util::shared_tmp::sweep(Path::new(SHM), WORK_PREFIX);
}

/// The registry host BuildKit asks credentials for (`docker.io` is served by
/// `registry-1.docker.io`).
pub fn auth_host(reference: &str) -> Option<String> {
    let r = Reference::parse_normalized(reference).ok()?;
    let d = r.domain();
    Some(if d == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        d.to_string()
    })
}

/// The client's credentials for the registry of `reference`, if it has any.
pub async fn session_auth(session: &Session, reference: &str) -> Option<RegistryAuth> {
    use crate::proto::moby::filesync::v1::{auth_client::AuthClient, CredentialsRequest};
    if !session.supports("/moby.filesync.v1.Auth/Credentials") {
        return None;
    }
    let host = auth_host(reference)?;
    let mut c = AuthClient::with_origin(session.channel(), crate::conn::H2Channel::origin());
    let r = c
        .credentials(CredentialsRequest { host: host.clone() })
        .await
        .ok()?
        .into_inner();
    if r.username.is_empty() && r.secret.is_empty() {
        return None;
    }
    Some(RegistryAuth {
        host,
        username: r.username,
        secret: r.secret,
    })
}

async fn get_secret(session: &Session, id: &str) -> Result<Option<Vec<u8>>, SolveError> {
    use crate::proto::moby::buildkit::secrets::v1::{
        secrets_client::SecretsClient, GetSecretRequest,
    };
    if !session.supports("/moby.buildkit.secrets.v1.Secrets/GetSecret") {
        return Ok(None);
    }
    let mut c = SecretsClient::with_origin(session.channel(), crate::conn::H2Channel::origin());
    match c
        .get_secret(GetSecretRequest {
            id: id.to_string(),
            annotations: Default::default(),
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner().data)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(SolveError::unknown(format!("secret {id}: {}", s.message()))),
    }
}

/// Options from the frontend attributes.
fn options(attrs: &HashMap<String, String>) -> Result<BuildOptions, SolveError> {
    let mut o = BuildOptions::default();
    for (k, v) in attrs {
        if let Some(a) = k.strip_prefix("build-arg:") {
            o.build_args.insert(a.to_string(), Some(v.clone()));
        } else if let Some(l) = k.strip_prefix("label:") {
            o.labels.insert(l.to_string(), v.clone());
        }
    }
    o.target = attrs.get("target").cloned().filter(|t| !t.is_empty());
    if let Some(nc) = attrs.get("no-cache") {
        if nc.is_empty() {
            o.no_cache = true;
        } else {
            o.no_cache_stages = attr_list(attrs, "no-cache")
                .map(str::to_ascii_lowercase)
                .collect();
        }
    }
    o.pull = attrs.get("image-resolve-mode").is_some_and(|m| m == "pull");
    o.network = attrs
        .get("force-network-mode")
        .cloned()
        .filter(|s| !s.is_empty());
    // `--add-host`: `name=ip` entries separated by commas.
    o.extra_hosts = attr_list(attrs, "add-hosts").map(String::from).collect();
    // Several platforms: one build each (see `dockerfile`).
    if let [p] = platforms(attrs)?.as_slice() {
        o.platform = Some(p.to_string());
    }
    for (k, v) in attrs {
        let Some(name) = k.strip_prefix("context:") else {
            continue;
        };
        if let Some(r) = v.strip_prefix("docker-image://") {
            o.image_contexts.insert(name.to_string(), r.to_string());
        } else if !v.starts_with("local:") {
            return Err(bad(format!(
                "named context {name}={v} is not supported (local directories and docker-image:// references are)"
            )));
        }
    }
    Ok(o)
}

/// The vertex of each step, and which one is receiving output.
struct StepVertices<'p> {
    progress: &'p Progress,
    solve_id: String,
    multi_stage: bool,
    /// The platform being built, in a multi-platform build (named in each vertex).
    platform: Option<String>,
    open: BTreeMap<usize, (VertexRun<'p>, usize)>,
    current: Option<usize>,
}

impl<'p> StepVertices<'p> {
    fn event(&mut self, ev: Event) {
        match ev {
            Event::Step(StepEvent::Start {
                number,
                stage,
                position,
                stage_steps,
                text,
                line,
            }) => {
                let prefix = match (&self.platform, self.multi_stage) {
                    (Some(p), true) => format!("{p} {stage} "),
                    (Some(p), false) => format!("{p} "),
                    (None, true) => format!("{stage} "),
                    (None, false) => String::new(),
                };
                let name = format!("[{prefix}{position}/{stage_steps}] {text}");
                let d = vertex_digest(&self.solve_id, &name, number);
                self.open
                    .insert(number, (VertexRun::start(self.progress, d, name), line));
                self.current = Some(number);
            }
            Event::Step(StepEvent::Cached { number }) => {
                if let Some((v, _)) = self.open.remove(&number) {
                    v.cached();
                }
            }
            Event::Step(StepEvent::Done { number }) => {
                if let Some((v, _)) = self.open.remove(&number) {
                    v.done();
                }
            }
            Event::Output(s) => {
                if let Some((v, _)) = self.current.and_then(|c| self.open.get(&c)) {
                    v.log(1, s.into_bytes());
                }
            }
            Event::Stream(s) => {
                // The classic builder's own lines are not shown, but pulls and warnings are.
                let t = s.trim_start();
                if t.starts_with("[Warning]")
                    || t.starts_with("Pulling ")
                    || t.starts_with("Status: ")
                {
                    if let Some((v, _)) = self.current.and_then(|c| self.open.get(&c)) {
                        v.log(2, s.into_bytes());
                    }
                }
            }
            Event::Aux(_) | Event::Idle => {}
        }
    }

    /// Fails the step the error names (by line), or the current one; its digest.
    fn fail(&mut self, line: Option<usize>, msg: &str) -> Option<String> {
        let n = line
            .and_then(|l| {
                self.open
                    .iter()
                    .find(|(_, (_, vl))| *vl == l)
                    .map(|(n, _)| *n)
            })
            .or(self.current)?;
        let (v, _) = self.open.remove(&n)?;
        let d = v.digest().to_string();
        v.fail(msg);
        Some(d)
    }

    /// Steps still open when the build stopped (cancelled): marked as such.
    fn cancel_rest(&mut self) {
        for (_, (v, _)) in std::mem::take(&mut self.open) {
            v.fail("context canceled");
        }
    }
}

/// Runs the Dockerfile build of `run`; the image is registered (and named `run.tags`).
pub async fn dockerfile(bk: &Arc<BuildKit>, run: FrontendRun) -> Result<BuildResult, SolveError> {
    let t0 = std::time::Instant::now();
    let phase = |what: &str| {
        tracing::debug!(solve = %run.solve_id, ms = t0.elapsed().as_secs_f64() * 1e3, "frontend: {what}");
    };
    let attrs = &run.attrs;
    let session = &run.session;
    let progress = run.progress.clone();
    let work = work_dir(bk)?;
    let filename = attrs
        .get("filename")
        .cloned()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "Dockerfile".into());
    if filename.contains('/') || filename == ".." || filename == "." {
        return Err(bad(format!("invalid Dockerfile name {filename:?}")));
    }
    let df_key = attrs
        .get("dockerfilekey")
        .cloned()
        .unwrap_or_else(|| "dockerfile".into());
    let ctx_key = attrs
        .get("contextkey")
        .cloned()
        .unwrap_or_else(|| "context".into());
    if let Some(c) = attrs.get("context").filter(|c| !c.is_empty()) {
        return Err(bad(format!(
            "remote build contexts are not supported ({c}): build from a local directory"
        )));
    }
    let sync_err = |what: &str| {
        let what = what.to_string();
        move |e: crate::filesync::SyncError| SolveError::unknown(format!("{what}: {e}"))
    };
    // The Dockerfile.
    let v = VertexRun::start(
        &progress,
        vertex_digest(&run.solve_id, "dockerfile", 0),
        format!("[internal] load build definition from {filename}"),
    );
    let df_dir = work.path().join("dockerfile");
    std::fs::create_dir(&df_dir).map_err(|e| SolveError::unknown(e.to_string()))?;
    let ignore_dir = work.path().join("ignore");
    std::fs::create_dir(&ignore_dir).map_err(|e| SolveError::unknown(e.to_string()))?;
    // The Dockerfile (with its own `NAME.dockerignore`) and the context's `.dockerignore`
    // in one round trip: two transfers at once on the session (the context's is used only
    // when the Dockerfile has no ignore file of its own).
    let df_req = SyncRequest {
        dir_name: df_key,
        include_patterns: vec![filename.clone(), format!("{filename}.dockerignore")],
        ..Default::default()
    };
    let ignore_req = SyncRequest {
        dir_name: ctx_key.clone(),
        include_patterns: vec![".dockerignore".into()],
        ..Default::default()
    };
    let (r, ignore_r) = tokio::join!(
        receive_dir(session.channel(), &df_req, &df_dir),
        receive_dir(session.channel(), &ignore_req, &ignore_dir)
    );
    if let Err(e) = r {
        let e = sync_err("loading the Dockerfile")(e);
        v.fail(&e.message);
        return Err(e);
    }
    let text = match std::fs::read(df_dir.join(&filename)) {
        Ok(t) => t,
        Err(_) => {
            let e = bad(format!(
                "failed to read dockerfile: open {filename}: no such file or directory"
            ));
            v.fail(&e.message);
            return Err(e);
        }
    };
    v.log(2, format!("transferring dockerfile: {}B\n", text.len()));
    v.done();
    phase("Dockerfile loaded");
    let dockerfile = String::from_utf8_lossy(&text).into_owned();
    let (src_name, src_data) = (filename.clone(), text.clone());
    let source = move |line: usize| SourceLocation {
        filename: src_name.clone(),
        data: src_data.clone(),
        line,
    };
    check_syntax(&dockerfile)?;
    let parsed = berth_build::parser::parse(&dockerfile).map_err(|e| {
        let mut se = SolveError::new(
            tonic::Code::InvalidArgument,
            format!("dockerfile parse error on line {}: {}", e.line, e.message),
        );
        se.source = Some(Box::new(source(e.line)));
        se
    })?;
    // .dockerignore: the Dockerfile's own (`NAME.dockerignore`), else the context's.
    let v = VertexRun::start(
        &progress,
        vertex_digest(&run.solve_id, "dockerignore", 0),
        "[internal] load .dockerignore",
    );
    let own = df_dir.join(format!("{filename}.dockerignore"));
    let ignore_text = if own.is_file() {
        std::fs::read_to_string(&own).unwrap_or_default()
    } else {
        ignore_r.map_err(sync_err("loading .dockerignore"))?;
        std::fs::read_to_string(ignore_dir.join(".dockerignore")).unwrap_or_default()
    };
    v.done();
    phase(".dockerignore loaded");
    let ignore = berth_build::dockerignore::IgnoreFile::parse(&ignore_text);
    let excludes: Vec<String> = ignore
        .patterns
        .iter()
        .map(|p| {
            if p.exclusion {
                format!("!{}", p.text)
            } else {
                p.text.clone()
            }
        })
        .collect();
    // The context: loaded while the steps that do not read it run, as BuildKit does (the
    // builder's context gate opens when it is all there; see the `join!` below).
    let ctx_vertex = VertexRun::start(
        &progress,
        vertex_digest(&run.solve_id, "context", 0),
        "[internal] load build context",
    );
    // Into the copy the last build of this directory left, when there is one (only what
    // changed is transferred), else into a new directory.
    let ctx_req = SyncRequest {
        dir_name: ctx_key,
        exclude_patterns: excludes,
        ..Default::default()
    };
    let mut lease = crate::contexts::key(&session.info.shared_key, &ctx_req)
        .and_then(|k| bk.contexts().lease(&k));
    let (ctx_tmp, base) = match lease.as_mut().and_then(|l| l.take()) {
        Some(c) => (c.dir, c.manifest),
        None => (work_dir(bk)?, Default::default()),
    };
    let ctx_dir = ctx_tmp.path().to_path_buf();
    let (gate, opener) = berth_build::builder::ContextGate::new();
    let load_context = {
        let (v, channel, dir, phase, sync_err) = (
            ctx_vertex,
            session.channel(),
            ctx_dir.clone(),
            &phase,
            &sync_err,
        );
        async move {
            match sync_dir(channel, &ctx_req, &dir, base).await {
                Ok((n, manifest)) => {
                    v.log(2, format!("transferring context: {n} entries\n"));
                    v.done();
                    phase("context loaded");
                    opener.open(Ok(()));
                    // Kept for the next build when this one cannot write into it.
                    Ok(crate::contexts::Copy {
                        dir: ctx_tmp,
                        manifest,
                    })
                }
                Err(e) => {
                    let e = sync_err("loading the build context")(e);
                    v.fail(&e.message);
                    opener.open(Err(berth_build::builder::ContextUnavailable::Failed(
                        e.message.clone(),
                    )));
                    Err(e)
                }
            }
        }
    };
    let mut opts = options(attrs)?;
    // Local named contexts.
    let mut local_contexts: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (k, val) in attrs {
        if let (Some(name), Some(dir)) = (k.strip_prefix("context:"), val.strip_prefix("local:")) {
            let d = work.path().join(format!("named-{}", local_contexts.len()));
            std::fs::create_dir(&d).map_err(|e| SolveError::unknown(e.to_string()))?;
            let v = VertexRun::start(
                &progress,
                vertex_digest(&run.solve_id, &format!("named:{name}"), 0),
                format!("[context {name}] load from client"),
            );
            receive_dir(
                session.channel(),
                &SyncRequest {
                    dir_name: dir.to_string(),
                    ..Default::default()
                },
                &d,
            )
            .await
            .map_err(sync_err(&format!("loading context {name}")))?;
            v.done();
            local_contexts.insert(name.to_string(), d);
        }
    }
    // Each local named context becomes an image of its files (what `FROM name` starts from,
    // what `COPY --from=name` copies), removed from the store when the solve ends.
    let mut dir_images = DirImages {
        store: bk.backend().store(),
        ids: Vec::new(),
    };
    for (name, dir) in local_contexts {
        let store = dir_images.store.clone();
        let source_name = format!("context {name}");
        let id = tokio::task::spawn_blocking(move || {
            berth_image::archive::import(
                &store,
                berth_image::archive::ImportSource::Directory(dir),
                &berth_image::archive::ImportOptions {
                    source_name,
                    ..Default::default()
                },
            )
        })
        .await
        .map_err(|e| SolveError::unknown(format!("context {name}: {e}")))?
        .map_err(|e| SolveError::unknown(format!("context {name}: {e}")))?;
        opts.image_contexts.insert(name, id.to_string());
        dir_images.ids.push(id);
    }
    // Secrets the RUN mounts ask for.
    let (secret_ids, ssh_ids) = mount_ids(&parsed);
    for id in secret_ids {
        if let Some(data) = get_secret(session, &id).await? {
            opts.secrets.insert(id, berth_build::builder::Secret(data));
        }
    }
    let _ssh = crate::ssh::forwarders(session, &ssh_ids, work.path()).await?;
    for (id, p) in &_ssh.sockets {
        opts.ssh.insert(id.clone(), p.clone());
    }
    // Cache sources: pulled, then used to seed the step cache.
    let mut imports = run.cache_imports.clone();
    for e in crate::cache_io::from_attr(attrs)? {
        if !imports.contains(&e) {
            imports.push(e);
        }
    }
    crate::cache_io::check(&imports, false)?;
    let imported = crate::cache_io::import(bk, session, &run.solve_id, &imports, &progress).await;
    opts.cache_from = imported.sources;
    dir_images.ids.extend(imported.temporary);
    opts.dockerfile = dockerfile.clone();
    opts.context = ctx_dir;
    opts.context_gate = Some(gate);
    opts.tags = run.tags.clone();
    opts.output_events = true;
    let multi_stage = parsed.nodes.iter().filter(|i| i.keyword == "FROM").count() > 1;
    let targets: Vec<Option<berth_image::manifest::Platform>> = match platforms(attrs)? {
        p if p.len() > 1 => p.into_iter().map(Some).collect(),
        _ => vec![None],
    };
    phase("build starts");
    // The build, on a blocking thread.
    let backend = bk.backend().clone();
    let handle = tokio::runtime::Handle::current();
    let session2 = session.clone();
    let solve_id = run.solve_id.clone();
    let cancel = run.cancel.clone();
    let build_progress = progress.clone();
    let build = tokio::task::spawn_blocking(move || {
        let progress = build_progress;
        let store = backend.store();
        berth_build::builder::cleanup_stale(&store);
        let puller = |name: &str, platform: Option<&berth_image::manifest::Platform>| {
            let auth = handle.block_on(session_auth(&session2, name));
            let r = backend.pull(name, platform, auth.as_ref());
            if r.is_ok() {
                backend.image_event("pull", name);
            }
            r.map_err(berth_build::builder::PullError::from)
        };
        let b = Builder {
            store: &store,
            runtime: backend.runtime(),
            runtime_root: backend.runtime_root(),
            cgroup_parent: backend.cgroup_parent(),
            puller: Some(&puller),
            networks: backend.run_networks(),
            intermediates: None,
        };
        let mut steps = StepVertices {
            progress: &progress,
            solve_id,
            multi_stage,
            platform: None,
            open: BTreeMap::new(),
            current: None,
        };
        // A multi-platform build is one build per platform, its images unnamed.
        let multi = targets.len() > 1;
        let mut images: Vec<PlatformImage> = Vec::new();
        let mut r = Err(BuildError::Internal("no platform to build"));
        for t in &targets {
            let mut o = opts.clone();
            if multi {
                o.platform = t.as_ref().map(|p| p.to_string());
                o.tags.clear();
                steps.platform = t.as_ref().map(|p| p.to_string());
            }
            let mut sink = |ev: Event| -> bool {
                if *cancel.borrow() {
                    return false;
                }
                steps.event(ev);
                true
            };
            r = b.build(&o, &mut sink);
            match (&r, t) {
                (Ok(built), Some(p)) if multi => {
                    let config = store
                        .config_bytes(&built.id)
                        .map_err(|e| SolveError::unknown(e.to_string()))?;
                    images.push(PlatformImage {
                        platform: p.clone(),
                        image_id: built.id.clone(),
                        config,
                    });
                }
                (Ok(_), _) => {}
                (Err(_), _) => break,
            }
        }
        match r {
            Ok(built) if multi => {
                let first = images
                    .first()
                    .cloned()
                    .ok_or_else(|| SolveError::unknown("a multi-platform build without images"))?;
                let _ = built;
                Ok(BuildResult {
                    image_id: first.image_id,
                    config: first.config,
                    tags: Vec::new(),
                    platforms: images,
                })
            }
            Ok(built) => {
                let config = store
                    .config_bytes(&built.id)
                    .map_err(|e| SolveError::unknown(e.to_string()))?;
                for t in &built.tags {
                    backend.image_event("tag", t);
                }
                Ok(BuildResult {
                    image_id: built.id,
                    config,
                    tags: opts.tags.iter().map(|t| t.to_string()).collect(),
                    platforms: Vec::new(),
                })
            }
            Err(BuildError::Cancelled) => {
                steps.cancel_rest();
                Err(SolveError::new(tonic::Code::Cancelled, "context canceled"))
            }
            Err(e) => {
                let (line, msg) = match &e {
                    BuildError::Step {
                        line,
                        source: StepError::Failed { command, code },
                    } => (Some(*line), run_failure_message(command, *code)),
                    BuildError::Step { line, source } => (Some(*line), source.to_string()),
                    BuildError::Parse(p) => (Some(p.line), p.message.clone()),
                    other => (None, other.to_string()),
                };
                let vertex = steps.fail(line, &msg);
                steps.cancel_rest();
                let mut se = SolveError::unknown(msg.clone());
                se.vertex = vertex;
                se.source = line.map(|l| Box::new(source(l)));
                Err(se)
            }
        }
    });
    let (loaded, res) = tokio::join!(load_context, build);
    let res = res.map_err(|e| SolveError::unknown(format!("build thread: {e}")))?;
    phase("build done");
    drop(work);
    // A failed transfer is the build's error (its vertex says so), whatever the steps did.
    let ctx_copy = loaded?;
    match lease.as_mut() {
        Some(l) if !berth_build::builder::writes_context(&parsed) => l.put(ctx_copy),
        _ => drop(ctx_copy),
    }
    // A build whose every step came from an imported cache image is that image.
    if let Ok(r) = &res {
        dir_images.ids.retain(|id| *id != r.image_id);
    }
    drop(dir_images);
    res
}

/// The images registered for one build only (local named contexts, local cache imports),
/// removed when dropped (the built image keeps the layers it took from them).
struct DirImages {
    store: std::sync::Arc<berth_image::image_store::ImageStore>,
    ids: Vec<berth_image::image_store::ImageId>,
}

impl Drop for DirImages {
    fn drop(&mut self) {
        for id in &self.ids {
            // Named since (by another build): no longer this build's.
            if self
                .store
                .get(id)
                .is_ok_and(|r| !r.repo_tags.is_empty() || !r.repo_digests.is_empty())
            {
                continue;
            }
            if let Err(e) = self.store.remove(&id.to_string(), true, &|_| Vec::new()) {
                tracing::warn!("removing the build's temporary image {id}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_lines() {
        assert!(check_syntax("# syntax=docker/dockerfile:1\nFROM x\n").is_ok());
        assert!(check_syntax("#syntax=docker.io/docker/dockerfile:1.7-labs\nFROM x\n").is_ok());
        assert!(
            check_syntax("# escape=`\n# syntax = docker/dockerfile@sha256:abc\nFROM x").is_ok()
        );
        assert!(check_syntax("FROM x\n# syntax=other/frontend\n").is_ok());
        let e = check_syntax("# syntax=tonistiigi/frontend:1\nFROM x\n").unwrap_err();
        assert!(e.message.contains("unsupported frontend"), "{}", e.message);
    }

    #[test]
    fn attrs_to_options() {
        let mut a = HashMap::new();
        a.insert("build-arg:A".to_string(), "1".to_string());
        a.insert("label:l".to_string(), "v".to_string());
        a.insert("no-cache".to_string(), "Build,test".to_string());
        a.insert("image-resolve-mode".to_string(), "pull".to_string());
        a.insert(
            "context:base".to_string(),
            "docker-image://busybox:1".to_string(),
        );
        let o = options(&a).unwrap();
        assert_eq!(o.build_args.get("A"), Some(&Some("1".into())));
        assert_eq!(o.labels.get("l").map(String::as_str), Some("v"));
        assert!(!o.no_cache && o.no_cache_stages.contains("build") && o.pull);
        assert_eq!(
            o.image_contexts.get("base").map(String::as_str),
            Some("busybox:1")
        );
        a.insert("no-cache".to_string(), String::new());
        assert!(options(&a).unwrap().no_cache);
        // Several platforms are one build each: none is set on the options.
        a.insert(
            "platform".to_string(),
            "linux/amd64,linux/aarch64".to_string(),
        );
        assert_eq!(options(&a).unwrap().platform, None);
        let p = platforms(&a).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].to_string(), "linux/arm64");
        a.insert("platform".to_string(), "linux/arm64".to_string());
        assert_eq!(
            options(&a).unwrap().platform.as_deref(),
            Some("linux/arm64")
        );
        a.insert("platform".to_string(), "linux//x".to_string());
        assert!(options(&a).is_err());
    }

    #[test]
    fn secret_and_ssh_ids() {
        let df = berth_build::parser::parse(
            "FROM x\nRUN --mount=type=secret,id=tok --mount=type=secret,target=/run/secrets/aws cat\nRUN --mount=type=ssh true\nRUN --mount=type=ssh,id=gh true\n",
        )
        .unwrap();
        let (s, h) = mount_ids(&df);
        assert_eq!(s.into_iter().collect::<Vec<_>>(), ["aws", "tok"]);
        assert_eq!(h.into_iter().collect::<Vec<_>>(), ["default", "gh"]);
    }
}
