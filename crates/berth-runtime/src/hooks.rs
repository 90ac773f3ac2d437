//! OCI hooks: each runs with the container's state JSON on stdin, in order, with an optional
//! timeout. A failing hook fails the operation, except poststart and poststop hooks: the
//! container already runs (or is gone), so a failure is a warning and the hooks after it still
//! run ([`run_hooks_warn`]), as the runtime spec asks.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: {source}")]
    Spawn {
        kind: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{kind} hook {path} failed: {status}{stderr}")]
    Failed {
        kind: &'static str,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook {path} timed out after {secs}s")]
    Timeout {
        kind: &'static str,
        path: String,
        secs: i64,
    },
}

pub fn run_hooks(kind: &'static str, hooks: &[Hook], state_json: &str) -> Result<(), HookError> {
    for h in hooks {
        run_hook(kind, h, state_json)?;
    }
    Ok(())
}

/// Runs every hook of `hooks` even when some fail; each failure is logged as a warning and
/// returned.
pub fn run_hooks_warn(kind: &'static str, hooks: &[Hook], state_json: &str) -> Vec<HookError> {
    let mut failed = Vec::new();
    for h in hooks {
        if let Err(e) = run_hook(kind, h, state_json) {
            tracing::warn!("{e}");
            failed.push(e);
        }
    }
    failed
}

pub fn run_hook(kind: &'static str, h: &Hook, state_json: &str) -> Result<(), HookError> {
    let path = h.path.display().to_string();
    let mut cmd = Command::new(&h.path);
    if let Some(a0) = h.args.first() {
        cmd.arg0(a0);
        cmd.args(&h.args[1..]);
    }
    cmd.env_clear();
    for e in &h.env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = h
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(source) => return Err(HookError::Spawn { kind, path, source }),
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    kind,
                    path,
                    secs: h.timeout.unwrap_or(0),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut s) = child.stderr.take() {
            use std::io::Read;
            let _ = s.read_to_string(&mut err);
        }
        let stderr = if err.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", err.trim())
        };
        return Err(HookError::Failed {
            kind,
            path,
            status: status.to_string(),
            stderr,
        });
    }
    Ok(())
}
