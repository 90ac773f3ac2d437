//! Health checks (`HEALTHCHECK`, `--health-cmd`): run by exec in the container on an interval,
//! recorded in `State.Health` as Docker does (status, failing streak, the last five results).

use std::sync::Arc;
use std::time::Duration;

use berth_api::container::{Health, HealthcheckResult};

use crate::engine::Engine;
use crate::util;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const MAX_LOG: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A health check duration (nanoseconds; zero or negative means the default).
fn dur(n: i64, default: Duration) -> Duration {
    if n > 0 {
        Duration::from_nanos(n as u64)
    } else {
        default
    }
}

impl Engine {
    /// Starts the health-check loop of a running container (no-op without a check).
    pub fn spawn_health_checks(self: &Arc<Self>, id: &str) {
        let Ok(c) = self.get(id) else { return };
        let Some(hc) = c.config.healthcheck.clone() else {
            return;
        };
        let Some(cmd) = hc.command() else {
            return;
        };
        let interval = dur(hc.interval, DEFAULT_INTERVAL);
        let timeout = dur(hc.timeout, DEFAULT_TIMEOUT);
        let start_period = dur(hc.start_period, Duration::ZERO);
        let start_interval = dur(hc.start_interval, DEFAULT_START_INTERVAL);
        let retries = Some(hc.retries).filter(|r| *r > 0).unwrap_or(3);
        let started_at = c.state.started_at.clone();
        let me = self.clone();
        let id = c.id.clone();
        tokio::spawn(async move {
            let began = std::time::Instant::now();
            loop {
                let in_start = began.elapsed() < start_period;
                let wait = if in_start && hc.start_interval > 0 {
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
                let out = std::sync::Mutex::new(Vec::new());
                let res = me
                    .exec_collect(&id, cmd.clone(), MAX_OUTPUT, &out, timeout)
                    .await;
                let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
                let (code, output) = match res {
                    Ok(Some(code)) => (code, text),
                    Err(e) => (-1, e.to_string()),
                    // dockerd's message, with what the check wrote until then.
                    Ok(None) => {
                        let limit = berth_util::time::go_duration(timeout);
                        let mut m = format!("Health check exceeded timeout ({limit})");
                        if !text.is_empty() {
                            m = format!("{m}: {text}");
                        }
                        (-1, m)
                    }
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
            let mut h = r.state.health.clone().unwrap_or_else(|| Health {
                status: "starting".into(),
                ..Default::default()
            });
            let old = h.status.clone();
            h.log.push(HealthcheckResult {
                start: start.to_string(),
                end: util::now_rfc3339_nano(),
                exit_code: code,
                output,
            });
            if h.log.len() > MAX_LOG {
                h.log.drain(..h.log.len() - MAX_LOG);
            }
            if code == 0 {
                h.status = "healthy".into();
                h.failing_streak = 0;
            } else if !in_start {
                h.failing_streak += 1;
                if h.failing_streak >= retries {
                    h.status = "unhealthy".into();
                }
            }
            let new = h.status.clone();
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
    use berth_api::container::HealthConfig;

    fn command(test: Option<&[&str]>) -> Option<Vec<String>> {
        HealthConfig {
            test: test.map(|t| t.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
        .command()
    }

    #[test]
    fn commands() {
        assert_eq!(
            command(Some(&["CMD-SHELL", "test -f /x"])).unwrap(),
            vec!["/bin/sh", "-c", "test -f /x"]
        );
        assert_eq!(command(Some(&["CMD", "true"])).unwrap(), vec!["true"]);
        assert!(command(Some(&["NONE"])).is_none());
        assert!(command(None).is_none());
    }
}
