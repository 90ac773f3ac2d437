//! A container's record on disk (`<data-root>/containers/<id>/config.v2.json`).
//!
//! `Config` and `HostConfig` are berth-api's models. Records are read with dockerd's decoding
//! rules (names case-insensitive, `null` as absent); a field of a wrong type, which the old
//! untyped daemon accepted and read as zero, is dropped with a warning rather than losing the
//! container.

use std::path::Path;

use berth_api::container::{Config, HostConfig, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The on-disk record of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Container {
    #[serde(rename = "ID")]
    pub id: String,
    /// `/name`.
    pub name: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    /// The image ID (`sha256:…`).
    pub image: String,
    pub config: Config,
    pub host_config: HostConfig,
    pub state: State,
    pub driver: String,
    pub log_path: String,
    pub restart_count: i64,
    pub shim_pid: i64,
    /// Stopped by `stop`/`kill` (restart policies do not apply, `unless-stopped` stays down).
    pub manually_stopped: bool,
    /// Warnings given at create time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Legacy links to other containers (see [`super::links`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::links::Link>,
}

impl Container {
    pub fn tty(&self) -> bool {
        self.config.tty
    }

    /// The host name inside: `Config.Hostname`, else the ID's first 12 characters.
    pub fn hostname(&self) -> String {
        if self.config.hostname.is_empty() {
            self.id[..self.id.len().min(12)].to_string()
        } else {
            self.config.hostname.clone()
        }
    }

    /// Whether the end of an attach client's input closes the container's stdin: Docker's
    /// rule, `StdinOnce` without a tty (a tty's input is never closed by a client going away,
    /// so `run -it` survives a detach or a lost terminal).
    pub fn closes_stdin(&self) -> bool {
        self.config.stdin_once && !self.tty()
    }

    pub fn auto_remove(&self) -> bool {
        self.host_config.auto_remove
    }

    /// `HostConfig.NetworkMode` (`default` when empty).
    pub fn network_mode(&self) -> &str {
        self.host_config.network_mode()
    }

    /// The name without its leading `/`.
    pub fn short_name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    /// The command line as the container list shows it.
    /// The command as the container list shows it: arguments holding a space in single
    /// quotes (dockerd's `Command`).
    pub fn command_line(&self) -> String {
        std::iter::once(self.path.clone())
            .chain(self.args.iter().map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A label of the container.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }

    /// Docker's `label` filter (`key` or `key=value`).
    pub fn matches_label(&self, spec: &str) -> bool {
        match spec.split_once('=') {
            Some((k, v)) => self.label(k) == Some(v),
            None => self.label(spec).is_some(),
        }
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Decode {
        path: std::path::PathBuf,
        #[source]
        source: berth_api::DecodeError,
    },
}

/// Reads a record (see the module documentation).
pub fn load(path: &Path) -> Result<Container, RecordError> {
    let bytes = std::fs::read(path).map_err(|source| RecordError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let decode = |source| RecordError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut v: Value = berth_api::from_slice(&bytes).map_err(decode)?;
    // Each round drops one field of a wrong type; a record has far fewer fields than this.
    for _ in 0..256 {
        match berth_api::from_value::<Container>(v.clone()) {
            Ok(c) => return Ok(c),
            Err(e) if !e.path.is_empty() && remove_path(&mut v, &e.path) => {
                tracing::warn!(
                    "{}: ignoring field {} ({}), as the daemon that wrote it did",
                    path.display(),
                    e.path_string(),
                    e.message
                );
            }
            Err(e) => return Err(decode(e)),
        }
    }
    berth_api::from_value(v).map_err(decode)
}

/// Removes the value at a decode error's path (object keys matched as the decoder matched
/// them: exactly, else case-insensitively); false when there is nothing to remove.
fn remove_path(v: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for p in parents {
        cur = match child(cur, p) {
            Some(c) => c,
            None => return false,
        };
    }
    match (cur, index_of(last)) {
        (Value::Array(a), Some(i)) if i < a.len() => {
            a.remove(i);
            true
        }
        (Value::Object(o), None) => match key_of(o, last) {
            Some(k) => o.remove(&k).is_some(),
            None => false,
        },
        _ => false,
    }
}

fn index_of(p: &str) -> Option<usize> {
    p.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn key_of(o: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    if o.contains_key(name) {
        return Some(name.to_string());
    }
    o.keys()
        .rev()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

fn child<'a>(v: &'a mut Value, p: &str) -> Option<&'a mut Value> {
    match (v, index_of(p)) {
        (Value::Array(a), Some(i)) => a.get_mut(i),
        (Value::Object(o), None) => {
            let k = key_of(o, p)?;
            o.get_mut(&k)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the untyped daemon wrote it: `Config`/`HostConfig` as received (with a
    /// wrong-typed limit it accepted and ignored), `StopTimeout: null`, `Health` as JSON.
    const OLD: &str = r#"{
      "ID": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
      "Name": "/old", "Created": "2024-01-01T00:00:00.000000001Z", "Path": "sh",
      "Args": ["-c", "true"], "Image": "sha256:aa",
      "Config": {"Hostname": "0123456789ab", "Domainname": "", "User": "", "AttachStdin": false,
        "AttachStdout": true, "AttachStderr": true, "Tty": false, "OpenStdin": false,
        "StdinOnce": false, "Env": ["PATH=/bin"], "Cmd": ["sh", "-c", "true"],
        "Image": "busybox", "Volumes": null, "WorkingDir": "", "Entrypoint": null,
        "OnBuild": null, "Labels": {"a": "b"}, "StopSignal": null, "StopTimeout": null,
        "ExposedPorts": {"80/tcp": {}}, "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000}},
      "HostConfig": {"NetworkMode": "default", "Memory": "512m", "CpuShares": 512,
        "memoryreservation": 1048576,
        "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
        "LogConfig": {"Type": "json-file", "Config": {}}, "Ulimits": [{"Name": "nofile", "Soft": "x", "Hard": 5}]},
      "State": {"Status": "exited", "Running": false, "Paused": false, "Restarting": false,
        "OOMKilled": false, "Dead": false, "Pid": 0, "ExitCode": 3, "Error": "",
        "StartedAt": "2024-01-01T00:00:01Z", "FinishedAt": "2024-01-01T00:00:02Z",
        "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": [{"Start": "s", "End": "e", "ExitCode": 1, "Output": "o"}]}},
      "Driver": "overlay", "LogPath": "/x.log", "RestartCount": 2, "ShimPid": 0,
      "ManuallyStopped": true
    }"#;

    #[test]
    fn records_of_the_untyped_daemon_load() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.v2.json");
        std::fs::write(&p, OLD).unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.short_name(), "old");
        assert_eq!(c.config.cmd.as_deref().unwrap(), ["sh", "-c", "true"]);
        assert_eq!(c.label("a"), Some("b"));
        assert!(c.config.exposed_ports.unwrap().contains_key("80/tcp"));
        assert_eq!(c.config.healthcheck.unwrap().interval, 1000);
        // The wrong-typed Memory is dropped (it was ignored); the rest is kept, the
        // case-folded key included.
        assert_eq!(c.host_config.memory, 0);
        assert_eq!(c.host_config.cpu_shares, 512);
        assert_eq!(c.host_config.memory_reservation, 1048576);
        assert_eq!(c.host_config.restart_policy.name, "always");
        let ul = c.host_config.ulimits.unwrap();
        assert_eq!(
            (ul[0].soft, ul[0].hard),
            (0, 5),
            "only the bad field goes: {ul:?}"
        );
        assert_eq!(c.state.exit_code, 3);
        assert_eq!(c.state.health.unwrap().log[0].output, "o");
        assert_eq!(c.restart_count, 2);
        assert!(c.manually_stopped);
        // Written back and read again: the same record.
        let again: Container =
            berth_api::from_slice(&serde_json::to_vec(&load(&p).unwrap()).unwrap()).unwrap();
        assert_eq!(again.host_config, load(&p).unwrap().host_config);
    }

    #[test]
    fn unreadable_records_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.v2.json");
        std::fs::write(&p, "{").unwrap();
        assert!(load(&p).is_err());
        assert!(load(&d.path().join("missing")).is_err());
    }
}
