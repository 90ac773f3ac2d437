//! `docker exec`: exec instances (create, start with a hijacked stream, resize, inspect),
//! run by the container's shim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_api::exec::{CreateRequest, Inspect, ProcessConfig};
use berth_runtime::spec::{Process, User};
use berth_shim::protocol::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::engine::{Container, Engine, EngineError, Result};
use crate::shimio::{self, ExitFrame};
use crate::{spec, util};

/// One exec instance (`/exec/{id}/json`).
#[derive(Debug, Clone)]
pub struct ExecRec {
    pub id: String,
    pub container_id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub privileged: bool,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub detach_keys: String,
    /// The terminal's size at the start (`[height, width]`): the start request's, else the
    /// create request's (dockerd).
    pub console_size: Option<[u64; 2]>,
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

impl ExecRec {
    /// Docker's `ExecInspect`.
    pub fn to_inspect(&self) -> Inspect {
        Inspect {
            id: self.id.clone(),
            running: self.running,
            exit_code: self.exit_code,
            process_config: ProcessConfig {
                tty: self.tty,
                entrypoint: self.args.first().cloned().unwrap_or_default(),
                arguments: self.args.iter().skip(1).cloned().collect(),
                privileged: self.privileged,
                user: self.user.clone(),
            },
            open_stdin: self.stdin,
            open_stderr: self.stderr,
            open_stdout: self.stdout,
            can_remove: false,
            container_id: self.container_id.clone(),
            detach_keys: self.detach_keys.clone(),
            pid: self.pid,
        }
    }
}

/// The exec instances of the daemon (kept in memory, like Docker's).
#[derive(Default)]
pub struct Execs {
    map: Mutex<HashMap<String, ExecRec>>,
}

impl Execs {
    pub fn get(&self, id: &str) -> Option<ExecRec> {
        self.map.lock().unwrap().get(id).cloned()
    }
    fn update(&self, id: &str, f: impl FnOnce(&mut ExecRec)) {
        if let Some(r) = self.map.lock().unwrap().get_mut(id) {
            f(r)
        }
    }
    /// Running exec ids of a container (inspect's `ExecIDs`).
    pub fn of_container(&self, cid: &str) -> Vec<String> {
        self.map
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.container_id == cid && r.running)
            .map(|r| r.id.clone())
            .collect()
    }
    /// Forgets the instances of a container that stopped or was removed (dockerd's cleanup
    /// at exit: its execs are gone, a 404, after that).
    pub fn forget_container(&self, cid: &str) {
        self.map
            .lock()
            .unwrap()
            .retain(|_, r| r.container_id != cid);
    }
}

impl Engine {
    /// The container an exec runs in; paused, it is named as the caller named it (dockerd's
    /// `errExecPaused`: the name given at create, the ID at start).
    fn running_container(&self, name_or_id: &str) -> Result<Container> {
        let c = self.running_as(name_or_id, "container")?;
        if c.state.paused {
            return Err(EngineError::Conflict(format!(
                "Container {name_or_id} is paused, unpause the container before exec"
            )));
        }
        Ok(c)
    }

    /// `POST /containers/{id}/exec`.
    pub fn exec_create(&self, name_or_id: &str, req: &CreateRequest) -> Result<String> {
        let c = self.running_container(name_or_id)?;
        let args = req.cmd.clone().unwrap_or_default();
        if args.is_empty() {
            return Err(EngineError::BadRequest("No exec command specified".into()));
        }
        if !req.detach_keys.is_empty() && berth_api::detach::parse(&req.detach_keys).is_err() {
            return Err(EngineError::BadRequest(format!(
                "Invalid escape keys ({}) provided",
                req.detach_keys
            )));
        }
        // As dockerd (28.2 on): an unknown user fails the create, not the start.
        if !req.user.is_empty() {
            spec::resolve_user(&self.rootfs(&c.id), &req.user)
                .map_err(|e| EngineError::BadRequest(e.to_string()))?;
        }
        let id = util::new_id();
        let rec = ExecRec {
            id: id.clone(),
            container_id: c.id.clone(),
            args,
            env: req.env.clone().unwrap_or_default(),
            user: req.user.clone(),
            workdir: req.working_dir.clone(),
            privileged: req.privileged,
            tty: req.tty,
            stdin: req.attach_stdin,
            stdout: req.attach_stdout,
            stderr: req.attach_stderr,
            detach_keys: req.detach_keys.clone(),
            console_size: req.console_size,
            running: false,
            started: false,
            exit_code: None,
            pid: 0,
        };
        let cmdline = rec.args.join(" ");
        self.execs.map.lock().unwrap().insert(id.clone(), rec);
        self.container_event(&c, &format!("exec_create: {cmdline}"), &[("execID", &id)]);
        Ok(id)
    }

    /// The OCI `process` of an exec: the container's settings with the exec's overrides.
    fn exec_process(&self, c: &Container, x: &ExecRec) -> Result<Process> {
        let user = if x.user.is_empty() {
            &c.config.user
        } else {
            &x.user
        };
        let (uid, gid) = spec::resolve_user(&self.rootfs(&c.id), user)?;
        // As the container's process: its links' variables and HOSTNAME too.
        let (link_env, _) = self.link_setup(c)?;
        let env = crate::engine::run::process_env(c, link_env, &x.env, x.tty);
        let cwd = [&x.workdir, &c.config.working_dir]
            .into_iter()
            .find(|w| !w.is_empty())
            .map(String::as_str)
            .unwrap_or("/");
        let privileged = x.privileged || c.host_config.privileged;
        let caps = crate::hostconfig::capabilities(&c.host_config, privileged)?;
        let gids =
            crate::hostconfig::additional_gids(&self.rootfs(&c.id), user, gid, &c.host_config)?;
        Ok(Process {
            terminal: x.tty,
            console_size: x
                .console_size
                .filter(|_| x.tty)
                .and_then(crate::engine::run::console_size),
            user: User {
                uid,
                gid,
                additional_gids: gids,
                ..Default::default()
            },
            args: x.args.clone(),
            env,
            cwd: cwd.into(),
            capabilities: Some(crate::hostconfig::oci_capabilities(&caps)),
            no_new_privileges: crate::hostconfig::no_new_privileges(&c.host_config),
            // The container's `--ulimit`s apply to its execs too (dockerd starts from the
            // container's process spec).
            rlimits: crate::hostconfig::rlimits(&c.host_config)?,
            ..Default::default()
        })
    }

    fn exec_rec(&self, exec_id: &str) -> Result<ExecRec> {
        self.execs
            .get(exec_id)
            .ok_or_else(|| EngineError::ExecNotFound(exec_id.to_string()))
    }

    /// The checks of `exec start` that come before the stream is hijacked.
    pub fn exec_check(&self, exec_id: &str) -> Result<ExecRec> {
        let x = self.exec_rec(exec_id)?;
        if x.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        self.running_container(&x.container_id)?;
        Ok(x)
    }

    /// The size a start request gives an exec's terminal (before [`Engine::exec_start`]).
    pub fn exec_console_size(&self, exec_id: &str, size: [u64; 2]) {
        self.execs.update(exec_id, |r| r.console_size = Some(size));
    }

    /// `POST /exec/{id}/start`: runs the process; returns the shim's stream (framed, ending
    /// with an exit frame) unless detached.
    pub async fn exec_start(self: &Arc<Self>, exec_id: &str) -> Result<(ExecRec, UnixStream)> {
        let x = self.exec_rec(exec_id)?;
        if x.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        let c = self.running_container(&x.container_id)?;
        let process = match self.exec_process(&c, &x) {
            Ok(p) => p,
            Err(e) => {
                // dockerd: an exec that fails to start has run, with exit code 126.
                self.execs.update(exec_id, |r| {
                    r.started = true;
                    r.exit_code = Some(126);
                });
                return Err(e);
            }
        };
        self.execs.update(exec_id, |r| r.started = true);
        let mut s = shimio::connect(&self.shim_socket(&c.id))
            .await
            .map_err(EngineError::sys("connecting to the container's shim"))?;
        let short: String = exec_id.chars().take(32).collect();
        let process =
            serde_json::to_value(&process).map_err(EngineError::encode("the exec's process"))?;
        let reply = shimio::call_on(
            &mut s,
            &Request::Exec {
                exec_id: Some(short),
                process: Some(process),
                args: None,
                env: vec![],
                cwd: None,
                tty: x.tty,
                stdin: x.stdin,
            },
        )
        .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                let code = if msg.contains("no such file") || msg.contains("not found") {
                    127
                } else {
                    126
                };
                self.execs.update(exec_id, |r| r.exit_code = Some(code));
                return Err(EngineError::BadRequest(format!(
                    "OCI runtime exec failed: {msg}"
                )));
            }
        };
        let pid = reply.pid.unwrap_or(0);
        self.execs.update(exec_id, |r| {
            r.running = true;
            r.pid = pid;
        });
        self.container_event(
            &c,
            &format!("exec_start: {}", x.args.join(" ")),
            &[("execID", exec_id)],
        );
        Ok((self.execs.get(exec_id).unwrap_or(x), s))
    }

    /// Records an exec's exit (from its stream's exit frame).
    pub fn exec_exited(&self, exec_id: &str, code: i64) {
        self.execs.update(exec_id, |r| {
            r.running = false;
            r.exit_code = Some(code);
        });
        if let Some(x) = self.execs.get(exec_id) {
            if let Ok(c) = self.get(&x.container_id) {
                let code = code.to_string();
                self.container_event(&c, "exec_die", &[("execID", exec_id), ("exitCode", &code)]);
            }
        }
    }

    /// An exec's client detached (its process keeps running).
    pub fn exec_detached(&self, exec_id: &str) {
        if let Some(x) = self.execs.get(exec_id) {
            if let Ok(c) = self.get(&x.container_id) {
                self.container_event(&c, "exec_detach", &[("execID", exec_id)]);
            }
        }
    }

    /// `POST /exec/{id}/resize`.
    pub async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let x = self.exec_rec(exec_id)?;
        // dockerd's `getExecConfig`: a 409 once the container stopped (or is paused).
        self.running_container(&x.container_id)?;
        let short: String = exec_id.chars().take(32).collect();
        shimio::call(
            &self.shim_socket(&x.container_id),
            Request::Resize {
                rows,
                cols,
                exec_id: Some(short),
            },
        )
        .await
        .map(drop)
        .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// `GET /exec/{id}/json`.
    pub fn exec_inspect(&self, exec_id: &str) -> Result<Inspect> {
        Ok(self.exec_rec(exec_id)?.to_inspect())
    }

    /// Kills an exec's process (SIGKILL through the container's shim); one that ended is
    /// fine.
    pub async fn exec_kill(&self, container: &str, exec_id: &str) {
        let short: String = exec_id.chars().take(32).collect();
        let r = shimio::call(
            &self.shim_socket(container),
            Request::Kill {
                signal: berth_shim::protocol::Signal::Number(libc::SIGKILL),
                all: false,
                exec_id: Some(short),
            },
        )
        .await;
        if let Err(e) = r {
            tracing::debug!("killing exec {exec_id}: {e}");
        }
    }

    /// Runs a command in a container, collecting up to `limit` bytes of output into `out` as
    /// it comes (health checks: a check that times out reports what it wrote). Returns the
    /// exit code, or `None` when the process ran past `timeout` (counted from its start, as
    /// dockerd's probes): it is then killed and its end awaited (no probe left running).
    pub async fn exec_collect(
        self: &Arc<Self>,
        cid: &str,
        args: Vec<String>,
        limit: usize,
        out: &std::sync::Mutex<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<Option<i64>> {
        let id = self.exec_create(
            cid,
            &CreateRequest {
                cmd: Some(args),
                attach_stdout: true,
                attach_stderr: true,
                ..Default::default()
            },
        )?;
        let started = tokio::time::timeout(EXEC_START_TIMEOUT, self.exec_start(&id)).await;
        let s = match started {
            Ok(Ok((_, s))) => s,
            Ok(Err(e)) => {
                self.execs.map.lock().unwrap().remove(&id);
                return Err(e);
            }
            Err(_) => {
                // A wedged start: whatever started is killed, the exec forgotten.
                self.exec_kill(cid, &id).await;
                self.execs.map.lock().unwrap().remove(&id);
                return Err(EngineError::Internal(format!(
                    "timed out starting health check for container {cid}"
                )));
            }
        };
        let (mut r, _w) = s.into_split();
        let mut frames = Frames::new(&mut r);
        let collect = |data: &[u8]| {
            let mut out = out.lock().unwrap();
            if out.len() < limit {
                let n = data.len().min(limit - out.len());
                out.extend_from_slice(&data[..n]);
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        let code = loop {
            let next = if timed_out {
                frames.next().await
            } else {
                match tokio::time::timeout_at(deadline, frames.next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Past the timeout: kill the process, then read on to its end.
                        timed_out = true;
                        self.exec_kill(cid, &id).await;
                        continue;
                    }
                }
            };
            match next {
                Ok(()) => {
                    if !timed_out {
                        collect(frames.frame().1);
                    }
                }
                Err(code) => break code.unwrap_or(-1),
            }
        };
        self.exec_exited(&id, code);
        self.execs.map.lock().unwrap().remove(&id);
        Ok((!timed_out).then_some(code))
    }
}

/// How long an exec of the daemon's own (a health probe) may take to start (dockerd's).
const EXEC_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The reader of a shim's framed exec stream (Docker's 8-byte headers; a last frame of
/// stream [`berth_shim::protocol::EXIT`] carries the exit code). [`Frames::next`] is
/// cancel-safe: what a cancelled call read stays buffered for the next one.
pub(crate) struct Frames<'r, R> {
    r: &'r mut R,
    pending: Vec<u8>,
    hdr: [u8; 8],
    buf: Vec<u8>,
}

impl<'r, R: AsyncRead + Unpin> Frames<'r, R> {
    pub(crate) fn new(r: &'r mut R) -> Self {
        Frames {
            r,
            pending: Vec::new(),
            hdr: [0; 8],
            buf: Vec::new(),
        }
    }

    /// The last frame read: its stream and payload.
    pub(crate) fn frame(&self) -> (u8, &[u8]) {
        (self.hdr[0], &self.buf)
    }

    /// Reads the next data frame into `hdr`/`buf`; at the end of the stream, `Err` with the
    /// exit code (`None` when the stream ended without one).
    pub(crate) async fn next(&mut self) -> Result<(), Option<i64>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.pending.len() >= 8 {
                let p = &self.pending;
                let len = u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize;
                if p.len() >= 8 + len {
                    self.hdr.copy_from_slice(&p[..8]);
                    self.buf.clear();
                    self.buf.extend_from_slice(&p[8..8 + len]);
                    self.pending.drain(..8 + len);
                    if self.hdr[0] == berth_shim::protocol::EXIT {
                        return Err(Some(ExitFrame::code(&self.buf)));
                    }
                    return Ok(());
                }
            }
            match self.r.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Reads the shim's framed exec stream, handing each payload (stream, bytes) to `f`, until the
/// exit frame; returns its exit code (`None` when the stream ended without one).
pub async fn pump_frames<R: AsyncRead + Unpin>(
    r: &mut R,
    mut f: impl FnMut(u8, &[u8]),
) -> Option<i64> {
    let mut frames = Frames::new(r);
    loop {
        if let Err(code) = frames.next().await {
            return code;
        }
        f(frames.hdr[0], &frames.buf);
    }
}

/// Copies the shim's exec stream to a client: raw payloads with a tty, Docker's multiplexed
/// frames without. Once `detach` resolves (the client typed its detach keys) the client is
/// closed and the rest of the stream drained. Returns the exit code.
pub async fn relay_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: W,
    tty: bool,
    detach: impl std::future::Future<Output = ()>,
) -> Option<i64> {
    let mut frames = Frames::new(r);
    let mut client = Some(w);
    let mut detach = std::pin::pin!(detach);
    loop {
        let next = if client.is_some() {
            tokio::select! {
                n = frames.next() => n,
                _ = &mut detach => {
                    if let Some(mut w) = client.take() {
                        let _ = w.shutdown().await;
                    }
                    continue;
                }
            }
        } else {
            frames.next().await
        };
        if let Err(code) = next {
            return code;
        }
        let Some(w) = client.as_mut() else { continue };
        let res = if tty {
            w.write_all(&frames.buf).await
        } else {
            match w.write_all(&frames.hdr).await {
                Ok(()) => w.write_all(&frames.buf).await,
                Err(e) => Err(e),
            }
        };
        if res.is_err() || w.flush().await.is_err() {
            // Keep draining so the exit code is still recorded.
            client = None;
        }
    }
}
