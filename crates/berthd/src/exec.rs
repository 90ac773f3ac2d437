//! `docker exec`: exec instances (create, start with a hijacked stream, resize, inspect),
//! run by the container's shim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::engine::{Container, Engine, EngineError, Result};
use crate::{shimio, spec, util};

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
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

impl ExecRec {
    /// Docker's `ExecInspect`.
    pub fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": self.args.first().cloned().unwrap_or_default(),
                "arguments": self.args.iter().skip(1).collect::<Vec<_>>(),
                "privileged": self.privileged,
                "user": self.user,
            },
            "OpenStdin": self.stdin,
            "OpenStderr": self.stderr,
            "OpenStdout": self.stdout,
            "CanRemove": false,
            "ContainerID": self.container_id,
            "DetachKeys": self.detach_keys,
            "Pid": self.pid,
        })
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
    /// Forgets the instances of a removed container.
    pub fn forget_container(&self, cid: &str) {
        self.map
            .lock()
            .unwrap()
            .retain(|_, r| r.container_id != cid);
    }
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(vec![]),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    EngineError::BadRequest(format!("{field} must be a list of strings"))
                })
            })
            .collect(),
        _ => Err(EngineError::BadRequest(format!(
            "{field} must be a list of strings"
        ))),
    }
}

impl Engine {
    fn running_container(&self, name_or_id: &str) -> Result<Container> {
        let c = self.get(name_or_id)?;
        if !c.state.running {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        if c.state.paused {
            return Err(EngineError::Conflict(format!(
                "container {} is paused, unpause the container before exec",
                c.id
            )));
        }
        Ok(c)
    }

    /// `POST /containers/{id}/exec`.
    pub fn exec_create(&self, name_or_id: &str, body: &Value) -> Result<String> {
        let c = self.running_container(name_or_id)?;
        let args = strings(&body["Cmd"], "Cmd")?;
        if args.is_empty() {
            return Err(EngineError::BadRequest("No exec command specified".into()));
        }
        let env = strings(&body["Env"], "Env")?;
        let id = util::new_id();
        let rec = ExecRec {
            id: id.clone(),
            container_id: c.id.clone(),
            args,
            env,
            user: body["User"].as_str().unwrap_or("").to_string(),
            workdir: body["WorkingDir"].as_str().unwrap_or("").to_string(),
            privileged: body["Privileged"].as_bool().unwrap_or(false),
            tty: body["Tty"].as_bool().unwrap_or(false),
            stdin: body["AttachStdin"].as_bool().unwrap_or(false),
            stdout: body["AttachStdout"].as_bool().unwrap_or(false),
            stderr: body["AttachStderr"].as_bool().unwrap_or(false),
            detach_keys: body["DetachKeys"].as_str().unwrap_or("").to_string(),
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
    fn exec_process(&self, c: &Container, x: &ExecRec) -> Result<Value> {
        let user = if x.user.is_empty() {
            c.config["User"].as_str().unwrap_or("").to_string()
        } else {
            x.user.clone()
        };
        let (uid, gid) =
            spec::resolve_user(&self.rootfs(&c.id), &user).map_err(EngineError::BadRequest)?;
        let mut env: Vec<String> = c.config["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for e in &x.env {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|v| v.split('=').next() != Some(key));
            env.push(e.clone());
        }
        if x.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let cwd = if !x.workdir.is_empty() {
            x.workdir.clone()
        } else {
            match c.config["WorkingDir"].as_str() {
                Some(w) if !w.is_empty() => w.to_string(),
                _ => "/".into(),
            }
        };
        let privileged = x.privileged || c.host_config["Privileged"].as_bool().unwrap_or(false);
        let caps = crate::hostconfig::capabilities(&c.host_config, privileged)
            .map_err(EngineError::BadRequest)?;
        let gids = crate::hostconfig::group_add(&self.rootfs(&c.id), &c.host_config)
            .map_err(EngineError::BadRequest)?;
        let mut user = json!({"uid": uid, "gid": gid});
        if !gids.is_empty() {
            user["additionalGids"] = json!(gids);
        }
        Ok(json!({
            "terminal": x.tty,
            "user": user,
            "args": x.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": crate::hostconfig::no_new_privileges(&c.host_config),
        }))
    }

    /// The checks of `exec start` that come before the stream is hijacked.
    pub fn exec_check(&self, exec_id: &str) -> Result<ExecRec> {
        let x = self
            .execs
            .get(exec_id)
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {exec_id}")))?;
        if x.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        self.running_container(&x.container_id)?;
        Ok(x)
    }

    /// `POST /exec/{id}/start`: runs the process; returns the shim's stream (framed, ending
    /// with an exit frame) unless detached.
    pub async fn exec_start(self: &Arc<Self>, exec_id: &str) -> Result<(ExecRec, UnixStream)> {
        let x = self
            .execs
            .get(exec_id)
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {exec_id}")))?;
        if x.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        let c = self.running_container(&x.container_id)?;
        let process = self.exec_process(&c, &x)?;
        self.execs.update(exec_id, |r| r.started = true);
        let socket = self.shim_dir(&c.id).join("shim.sock");
        let mut s = shimio::connect(&socket).await.map_err(|e| {
            EngineError::Internal(format!("connecting to the container's shim: {e}"))
        })?;
        let short: String = exec_id.chars().take(32).collect();
        let reply = shimio::call_on(
            &mut s,
            &json!({"op": "exec", "exec_id": short, "process": process, "tty": x.tty, "stdin": x.stdin}),
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
        let pid = reply["pid"].as_i64().unwrap_or(0);
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

    /// `POST /exec/{id}/resize`.
    pub async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<()> {
        let x = self
            .execs
            .get(exec_id)
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {exec_id}")))?;
        let socket = self.shim_dir(&x.container_id).join("shim.sock");
        let short: String = exec_id.chars().take(32).collect();
        shimio::call(
            &socket,
            json!({"op": "resize", "rows": rows, "cols": cols, "exec_id": short}),
        )
        .await
        .map(drop)
        .map_err(|e| EngineError::BadRequest(e.to_string()))
    }

    /// Running exec ids of a container (inspect's `ExecIDs`).
    pub fn execs_of(&self, cid: &str) -> Vec<String> {
        self.execs.of_container(cid)
    }

    /// `GET /exec/{id}/json`.
    pub fn exec_inspect(&self, exec_id: &str) -> Result<Value> {
        self.execs
            .get(exec_id)
            .map(|x| x.to_json())
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {exec_id}")))
    }

    /// Runs a command in a container to completion, collecting up to `limit` bytes of output
    /// (health checks). Returns (exit code, output).
    pub async fn exec_collect(
        self: &Arc<Self>,
        cid: &str,
        args: Vec<String>,
        limit: usize,
    ) -> Result<(i64, String)> {
        let id = self.exec_create(
            cid,
            &json!({"Cmd": args, "AttachStdout": true, "AttachStderr": true}),
        )?;
        let (_, s) = self.exec_start(&id).await?;
        let (mut r, _w) = s.into_split();
        let mut out = Vec::new();
        let code = pump_frames(&mut r, false, |_, data| {
            if out.len() < limit {
                out.extend_from_slice(&data[..data.len().min(limit - out.len())]);
            }
        })
        .await;
        let code = code.unwrap_or(-1);
        self.exec_exited(&id, code);
        self.execs.map.lock().unwrap().remove(&id);
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// Reads the shim's framed exec stream, handing each payload (stream, bytes) to `f`, until the
/// exit frame; returns its exit code (`None` when the stream ended without one).
pub async fn pump_frames<R: AsyncRead + Unpin>(
    r: &mut R,
    _tty: bool,
    mut f: impl FnMut(u8, &[u8]),
) -> Option<i64> {
    let mut hdr = [0u8; 8];
    let mut buf = Vec::new();
    loop {
        if r.read_exact(&mut hdr).await.is_err() {
            return None;
        }
        let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
        buf.resize(len, 0);
        if r.read_exact(&mut buf).await.is_err() {
            return None;
        }
        if hdr[0] == berth_shim::protocol::EXIT {
            let v: Value = serde_json::from_slice(&buf).unwrap_or(Value::Null);
            return Some(v["exit_code"].as_i64().unwrap_or(-1));
        }
        f(hdr[0], &buf);
    }
}

/// Copies the shim's exec stream to a client: raw payloads with a tty, Docker's multiplexed
/// frames without. Returns the exit code.
pub async fn relay_to_client<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: &mut R,
    w: &mut W,
    tty: bool,
) -> Option<i64> {
    let mut hdr = [0u8; 8];
    let mut buf = Vec::new();
    let mut client_ok = true;
    loop {
        if r.read_exact(&mut hdr).await.is_err() {
            return None;
        }
        let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
        buf.resize(len, 0);
        if r.read_exact(&mut buf).await.is_err() {
            return None;
        }
        if hdr[0] == berth_shim::protocol::EXIT {
            let v: Value = serde_json::from_slice(&buf).unwrap_or(Value::Null);
            return Some(v["exit_code"].as_i64().unwrap_or(-1));
        }
        if !client_ok {
            continue;
        }
        let res = if tty {
            w.write_all(&buf).await
        } else {
            match w.write_all(&hdr).await {
                Ok(()) => w.write_all(&buf).await,
                Err(e) => Err(e),
            }
        };
        if res.is_err() || w.flush().await.is_err() {
            // Keep draining so the exit code is still recorded.
            client_ok = false;
        }
    }
}
