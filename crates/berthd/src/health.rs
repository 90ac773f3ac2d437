//! Health checks (`HEALTHCHECK`, `--health-cmd`): run by exec in the container on an interval,
//! recorded in `State.Health` as Docker does (status, failing streak, the last five results).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::util;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const MAX_LOG: usize = 5;
const MAX_OUTPUT: usize = 4096;

fn dur(v: &Value, default: Duration) -> Duration {
    match v.as_i64() {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

/// The command of a health check test (`CMD …` or `CMD-SHELL …`); `None` for `NONE`/empty.
pub fn command(test: &Value) -> Option<Vec<String>> {
    let t: Vec<String> = test
        .as_array()?
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    match t.first().map(String::as_str) {
        Some("CMD") if t.len() > 1 => Some(t[1..].to_vec()),
        Some("CMD-SHELL") if t.len() > 1 => {
            Some(vec!["/bin/sh".into(), "-c".into(), t[1..].join(" ")])
        }
        _ => None,
    }
}

impl Engine {
    /// Starts the health-check loop of a running container (no-op without a check).
    pub fn spawn_health_checks(self: &Arc<Self>, id: &str) {
        let Ok(c) = self.get(id) else { return };
        let hc = c.config["Healthcheck"].clone();
        let Some(cmd) = command(&hc["Test"]) else {
            return;
        };
        let interval = dur(&hc["Interval"], DEFAULT_INTERVAL);
        let timeout = dur(&hc["Timeout"], DEFAULT_TIMEOUT);
        let start_period = dur(&hc["StartPeriod"], Duration::ZERO);
        let start_interval = dur(&hc["StartInterval"], DEFAULT_START_INTERVAL);
        let retries = hc["Retries"].as_i64().filter(|r| *r > 0).unwrap_or(3);
        let started_at = c.state.started_at.clone();
        let me = self.clone();
        let id = c.id.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            loop {
                let in_start = began.elapsed() < start_period;
                let wait = if in_start && !hc["StartInterval"].is_null() {
                    start_interval
                } else {
                    interval
                };
                tokio::time::sleep(wait).await;
                match me.get(&id) {
                    Ok(c) if c.state.running && c.state.started_at == started_at => {
                        if c.state.paused {
                            continue;
                        }
                    }
                    _ => return,
                }
                let start = util::now_rfc3339_nano();
                let res =
                    tokio::time::timeout(timeout, me.exec_collect(&id, cmd.clone(), MAX_OUTPUT))
                        .await;
                let (code, output) = match res {
                    Ok(Ok((code, out))) => (code, out),
                    Ok(Err(e)) => (-1, e.to_string()),
                    Err(_) => (
                        -1,
                        format!("Health check exceeded timeout ({}s)", timeout.as_secs()),
                    ),
                };
                let in_start = began.elapsed() < start_period;
                me.record_health(&id, &started_at, &start, code, output, retries, in_start);
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn record_health(
        &self,
        id: &str,
        started_at: &str,
        start: &str,
        code: i64,
        output: String,
        retries: i64,
        in_start: bool,
    ) {
        let Ok(e) = self.lookup(id) else { return };
        let mut changed = None;
        {
            let mut r = e.rec.lock().unwrap();
            if !r.state.running || r.state.started_at != started_at {
                return;
            }
            let mut h =
                r.state.health.clone().unwrap_or_else(
                    || json!({"Status": "starting", "FailingStreak": 0, "Log": []}),
                );
            let old = h["Status"].as_str().unwrap_or("").to_string();
            let mut log: Vec<Value> = h["Log"].as_array().cloned().unwrap_or_default();
            log.push(json!({"Start": start, "End": util::now_rfc3339_nano(), "ExitCode": code, "Output": output}));
            if log.len() > MAX_LOG {
                log.drain(..log.len() - MAX_LOG);
            }
            h["Log"] = json!(log);
            if code == 0 {
                h["Status"] = json!("healthy");
                h["FailingStreak"] = json!(0);
            } else if !in_start {
                let streak = h["FailingStreak"].as_i64().unwrap_or(0) + 1;
                h["FailingStreak"] = json!(streak);
                if streak >= retries {
                    h["Status"] = json!("unhealthy");
                }
            }
            let new = h["Status"].as_str().unwrap_or("").to_string();
            r.state.health = Some(h);
            if let Err(err) = self.persist(&r) {
                tracing::warn!("persisting {id}: {err}");
            }
            if new != old {
                changed = Some((r.clone(), new));
            }
        }
        if let Some((c, status)) = changed {
            self.container_event(&c, &format!("health_status: {status}"), &[]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            command(&json!(["CMD-SHELL", "test -f /x"])).unwrap(),
            vec!["/bin/sh", "-c", "test -f /x"]
        );
        assert_eq!(command(&json!(["CMD", "true"])).unwrap(), vec!["true"]);
        assert!(command(&json!(["NONE"])).is_none());
        assert!(command(&Value::Null).is_none());
    }
}
