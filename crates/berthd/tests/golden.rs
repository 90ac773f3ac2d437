#![recursion_limit = "256"]
//! Golden responses of the Engine API: a fixed set of requests against a fresh daemon, the
//! JSON answers normalised (ids, times, addresses, paths, sizes) and compared with the files in
//! `tests/golden/`. They pin the exact shapes clients see (which fields are `null`, `[]`, `{}`
//! or absent), so a refactor of the API layer cannot change them unnoticed.
//!
//! `BERTH_GOLDEN_UPDATE=1` rewrites the files (review the diff: every change is a behaviour
//! change of the API).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

/// A response: status and body (JSON, JSON lines as an array, or text).
struct Resp {
    status: u16,
    body: Value,
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    loop {
        let Some((size, rest)) = b.split_once("\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            return out;
        }
        out.push_str(&rest[..n]);
        b = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
}

fn request(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let text = body.map(|b| b.to_string());
    let raw = d.http(method, path, text.as_deref()).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    let value = if body.trim().is_empty() {
        Value::Null
    } else if let Ok(v) = serde_json::from_str::<Value>(&body) {
        v
    } else {
        let lines: Option<Vec<Value>> = body
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).ok())
            .collect();
        lines.map(Value::Array).unwrap_or(Value::String(body))
    };
    Resp {
        status,
        body: value,
    }
}

/// Replaces what differs between runs: ids, times, addresses, paths, pids, sizes.
struct Norm {
    root: String,
    /// The daemon's own default bridge.
    bridge: Option<String>,
    ids: Vec<String>,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Norm {
    fn collect_ids(&mut self, v: &Value) {
        match v {
            Value::String(s) => {
                for tok in s.split(|c: char| !c.is_ascii_alphanumeric()) {
                    if tok.len() == 64 && is_hex(tok) && !self.ids.iter().any(|i| i == tok) {
                        self.ids.push(tok.to_string());
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.collect_ids(x)),
            Value::Object(o) => o.iter().for_each(|(k, x)| {
                self.collect_ids(&Value::String(k.clone()));
                self.collect_ids(x)
            }),
            _ => {}
        }
    }

    fn string(&self, s: &str) -> String {
        let mut s = s.replace(&self.root, "<root>");
        for (n, id) in self.ids.iter().enumerate() {
            s = s.replace(id.as_str(), &format!("<id{n}>"));
        }
        // Short ids (12 hex) and the prefixes of veth names and bridges.
        for (n, id) in self.ids.iter().enumerate() {
            for len in [32, 12, 6, 5] {
                let p = &id[..len];
                s = s
                    .split_inclusive(|c: char| !c.is_ascii_alphanumeric())
                    .map(|part| {
                        let (tok, sep) = match part.char_indices().last() {
                            Some((i, c)) if !c.is_ascii_alphanumeric() => part.split_at(i),
                            _ => (part, ""),
                        };
                        if tok == p {
                            format!("<id{n}:{len}>{sep}")
                        } else {
                            part.to_string()
                        }
                    })
                    .collect();
            }
        }
        // Times (RFC 3339 with any fraction), but not Docker's zero time.
        let re_time = |t: &str| {
            t.len() >= 20
                && t.as_bytes()[4] == b'-'
                && t.as_bytes()[10] == b'T'
                && t.as_bytes()[13] == b':'
                && !t.starts_with("0001-")
        };
        if re_time(&s) {
            return "<time>".into();
        }
        // Addresses and MACs.
        if s.parse::<std::net::Ipv4Addr>().is_ok() && s != "0.0.0.0" && s != "127.0.0.1" {
            return "<ip>".into();
        }
        if let Some((a, p)) = s.split_once('/') {
            if a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok() {
                return "<ip>/<n>".into();
            }
        }
        if s.len() == 17 && s.starts_with("02:42:") {
            return "<mac>".into();
        }
        if let Some(rest) = s.strip_prefix("/proc/") {
            if let Some((pid, tail)) = rest.split_once('/') {
                if pid.bytes().all(|b| b.is_ascii_digit()) {
                    return format!("/proc/<pid>/{tail}");
                }
            }
        }
        // The daemon's own bridge (a unique name).
        if self.bridge.as_deref() == Some(s.as_str()) {
            return "<bridge>".into();
        }
        s
    }

    fn value(&self, key: &str, v: &Value) -> Value {
        const VOLATILE_NUM: &[&str] = &[
            "Created",
            "time",
            "timeNano",
            "Pid",
            "Size",
            "VirtualSize",
            "SizeRw",
            "SharedSize",
            "LayersSize",
            "SpaceReclaimed",
            "PublicPort",
        ];
        match v {
            Value::String(s) => {
                if key == "HostPort" && !s.is_empty() {
                    return json!("<port>");
                }
                if key == "Status" {
                    // `Up 2 seconds`, `Exited (0) Less than a second ago`: the time varies.
                    for p in ["Up ", "Exited (", "Restarting ("] {
                        if let Some(rest) = s.strip_prefix(p) {
                            let kept = match rest.split_once(") ") {
                                Some((code, _)) if p != "Up " => format!("{p}{code}) "),
                                _ => p.to_string(),
                            };
                            // A health or pause note after the duration stays.
                            let note = match rest.rfind(" (") {
                                Some(i) if p == "Up " => &rest[i..],
                                _ => "",
                            };
                            return json!(format!("{kept}<duration>{note}"));
                        }
                    }
                }
                json!(self.string(s))
            }
            Value::Number(n) if VOLATILE_NUM.contains(&key) && n.as_f64() != Some(0.0) => {
                json!("<n>")
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(key, x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.string(k), self.value(k, x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Keeps the structure (keys, arrays, nulls, booleans) and blanks strings and numbers: for
/// documents about the host (info, version, stats, top).
fn shape(v: &Value) -> Value {
    match v {
        Value::String(_) => json!("<s>"),
        Value::Number(_) => json!(0),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), shape(x))).collect()),
        other => other.clone(),
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Differences between two JSON documents, as paths.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k}: only in the golden file ({va})")),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: new ({vb})"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: golden {a}, now {b}")),
        _ => {}
    }
}

#[derive(Default)]
struct Recorder {
    /// (name, status, body, shape only)
    entries: Vec<(String, u16, Value, bool)>,
}

impl Recorder {
    fn add(&mut self, name: &str, r: &Resp) {
        self.entries
            .push((name.to_string(), r.status, r.body.clone(), false));
    }
    fn add_shape(&mut self, name: &str, r: &Resp) {
        self.entries
            .push((name.to_string(), r.status, shape(&r.body), true));
    }
}

/// Waits up to 20 s for `f` to hold.
#[track_caller]
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    berth_testkit::wait_for(what, Duration::from_secs(20), f)
}

#[test]
fn api_responses_match_the_golden_files() {
    require_root!();
    let d = Daemon::new();
    let mut rec = Recorder::default();
    let bind = d.path("bind-src");
    std::fs::create_dir_all(&bind).unwrap();

    // Errors.
    let r = request(&d, "GET", "/containers/nope/json", None);
    rec.add("error_no_such_container", &r);
    let r = request(&d, "GET", "/v1.12/version", None);
    rec.add("error_old_version", &r);
    let r = request(
        &d,
        "POST",
        "/containers/create",
        Some(&json!({"Image": "nope:latest"})),
    );
    rec.add("error_no_such_image", &r);
    let r = request(&d, "POST", "/containers/create", Some(&json!({})));
    rec.add("error_no_image", &r);

    // Networks and volumes first (the container uses them).
    let r = request(
        &d,
        "POST",
        "/networks/create",
        Some(
            &json!({"Name": "goldnet", "Labels": {"tier": "gold"}, "Options": {"com.docker.network.driver.mtu": "1400"}, "IPAM": {"Config": [{"Subnet": "10.213.77.0/24"}]}}),
        ),
    );
    rec.add("network_create", &r);
    let net_id = r.body["Id"].as_str().unwrap().to_string();
    let r = request(
        &d,
        "POST",
        "/volumes/create",
        Some(&json!({"Name": "goldvol", "Labels": {"k": "v"}})),
    );
    rec.add("volume_create", &r);

    // A rich create.
    let body = json!({
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": false,
        "AttachStdout": true,
        "AttachStderr": true,
        "ExposedPorts": {"80/tcp": {}},
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": ["GOLD=1", "PATH=/usr/bin:/bin"],
        "Cmd": ["sh", "-c", "echo hi > /tmp/golden; exec sleep 1000"],
        "Image": "busybox",
        "Volumes": {"/anon": {}},
        "WorkingDir": "/tmp",
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": {"com.example.golden": "yes"},
        "StopSignal": "SIGTERM",
        "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 3600000000000i64, "Retries": 2},
        "HostConfig": {
            "Binds": [format!("{}:/bind:ro", bind.display()), "goldvol:/vol"],
            "ContainerIDFile": "",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
            "NetworkMode": "goldnet",
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
            "AutoRemove": false,
            "VolumeDriver": "",
            "VolumesFrom": null,
            "CapAdd": ["NET_ADMIN"],
            "CapDrop": ["MKNOD"],
            "Dns": ["192.0.2.53"],
            "DnsOptions": [],
            "DnsSearch": ["example.com"],
            "ExtraHosts": ["gold.example:192.0.2.1"],
            "GroupAdd": null,
            "IpcMode": "",
            "Cgroup": "",
            "Links": null,
            "OomScoreAdj": 0,
            "PidMode": "",
            "Privileged": false,
            "PublishAllPorts": false,
            "ReadonlyRootfs": false,
            "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": {"/run": "size=1m"},
            "UTSMode": "",
            "UsernsMode": "",
            "ShmSize": 0,
            "Memory": 67108864,
            "CpuShares": 512,
            "PidsLimit": 100,
            "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
            "Sysctls": {"net.ipv4.ip_forward": "1"},
        },
        "NetworkingConfig": {"EndpointsConfig": {"goldnet": {"Aliases": ["goldalias"]}}},
    });
    let r = request(&d, "POST", "/containers/create?name=gold", Some(&body));
    rec.add("container_create", &r);
    assert_eq!(r.status, 201, "{}", r.body);
    let cid = r.body["Id"].as_str().unwrap().to_string();
    let r = request(&d, "GET", "/containers/gold/json", None);
    rec.add("container_inspect_created", &r);
    let r = request(&d, "GET", "/v1.24/containers/gold/json", None);
    rec.add("container_inspect_created_v1.24", &r);
    // A minimal create (defaults everywhere).
    let r = request(
        &d,
        "POST",
        "/containers/create?name=plain",
        Some(&json!({"Image": "busybox", "Cmd": ["true"]})),
    );
    rec.add("container_create_minimal", &r);
    let r = request(&d, "GET", "/containers/plain/json", None);
    rec.add("container_inspect_minimal", &r);

    let r = request(&d, "POST", "/containers/gold/start", None);
    rec.add("container_start", &r);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = request(&d, "POST", "/containers/gold/start", None);
    rec.add("container_start_again", &r);
    let r = request(&d, "GET", "/containers/gold/json", None);
    rec.add("container_inspect_running", &r);
    let r = request(&d, "GET", "/containers/json", None);
    rec.add("container_list", &r);
    let r = request(&d, "GET", "/containers/json?all=1", None);
    rec.add("container_list_all", &r);
    let r = request(
        &d,
        "GET",
        "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22com.example.golden%3Dyes%22%5D%7D",
        None,
    );
    rec.add("container_list_filtered", &r);

    // Exec.
    let r = request(
        &d,
        "POST",
        "/containers/gold/exec",
        Some(
            &json!({"Cmd": ["sh", "-c", "exit 3"], "AttachStdout": true, "Env": ["X=1"], "User": "65534", "WorkingDir": "/"}),
        ),
    );
    rec.add("exec_create", &r);
    let eid = r.body["Id"].as_str().unwrap().to_string();
    let r = request(&d, "GET", &format!("/exec/{eid}/json"), None);
    rec.add("exec_inspect_created", &r);
    let r = request(
        &d,
        "POST",
        &format!("/exec/{eid}/start"),
        Some(&json!({"Detach": true})),
    );
    rec.add("exec_start_detached", &r);
    wait_until("the exec to end", || {
        let r = request(&d, "GET", &format!("/exec/{eid}/json"), None);
        r.body["Running"] == false && !r.body["ExitCode"].is_null()
    });
    let r = request(&d, "GET", &format!("/exec/{eid}/json"), None);
    rec.add("exec_inspect_exited", &r);

    // Operations on the running container.
    let r = request(&d, "GET", "/containers/gold/top", None);
    rec.add_shape("container_top", &r);
    let r = request(
        &d,
        "GET",
        "/containers/gold/stats?stream=false&one-shot=true",
        None,
    );
    rec.add_shape("container_stats", &r);
    let r = request(
        &d,
        "POST",
        "/containers/gold/update",
        Some(
            &json!({"Memory": 134217728, "MemorySwap": -1, "RestartPolicy": {"Name": "unless-stopped"}}),
        ),
    );
    rec.add("container_update", &r);
    let r = request(
        &d,
        "POST",
        "/containers/gold/update",
        Some(&json!({"Memory": "1g"})),
    );
    rec.add("container_update_wrong_type", &r);
    let r = request(&d, "GET", "/containers/gold/changes", None);
    rec.add("container_changes", &r);
    let r = request(&d, "POST", "/containers/gold/rename?name=golden", None);
    rec.add("container_rename", &r);
    let r = request(&d, "POST", "/containers/golden/stop?t=0", None);
    rec.add("container_stop", &r);
    let r = request(&d, "POST", "/containers/golden/stop?t=0", None);
    rec.add("container_stop_again", &r);
    let r = request(&d, "POST", "/containers/golden/wait", None);
    rec.add("container_wait", &r);
    let r = request(&d, "GET", "/containers/golden/json", None);
    rec.add("container_inspect_exited", &r);
    let r = request(&d, "GET", "/containers/golden/logs?stdout=1&stderr=1", None);
    rec.add("container_logs", &r);

    // Images.
    let r = request(&d, "GET", "/images/json", None);
    rec.add("image_list", &r);
    let r = request(&d, "GET", "/images/busybox/json", None);
    rec.add("image_inspect", &r);
    let r = request(&d, "GET", "/v1.41/images/busybox/json", None);
    rec.add("image_inspect_v1.41", &r);
    let r = request(&d, "GET", "/images/busybox/history", None);
    rec.add("image_history", &r);
    let r = request(&d, "POST", "/images/busybox/tag?repo=gold&tag=one", None);
    rec.add("image_tag", &r);
    let r = request(&d, "DELETE", "/images/gold:one", None);
    rec.add("image_delete", &r);
    let r = request(&d, "DELETE", "/images/busybox", None);
    rec.add("image_delete_in_use", &r);
    let r = request(&d, "GET", "/images/nope/json", None);
    rec.add("image_inspect_missing", &r);

    // Networks and volumes.
    let r = request(&d, "GET", "/networks/goldnet", None);
    rec.add("network_inspect", &r);
    let r = request(&d, "GET", "/networks/bridge", None);
    rec.add("network_inspect_bridge", &r);
    let r = request(&d, "GET", "/networks", None);
    rec.add("network_list", &r);
    let r = request(
        &d,
        "POST",
        "/networks/bridge/connect",
        Some(&json!({"Container": "plain"})),
    );
    rec.add("network_connect", &r);
    let r = request(
        &d,
        "POST",
        "/networks/bridge/disconnect",
        Some(&json!({"Container": "plain"})),
    );
    rec.add("network_disconnect", &r);
    let r = request(&d, "GET", "/networks/nope", None);
    rec.add("network_inspect_missing", &r);
    let r = request(&d, "GET", "/volumes/goldvol", None);
    rec.add("volume_inspect", &r);
    let r = request(&d, "GET", "/volumes", None);
    rec.add("volume_list", &r);
    let r = request(&d, "GET", "/system/df", None);
    rec.add("system_df", &r);

    // System.
    let r = request(&d, "GET", "/info", None);
    rec.add_shape("info", &r);
    let r = request(&d, "GET", "/version", None);
    rec.add_shape("version", &r);
    let r = request(&d, "GET", "/_ping", None);
    rec.add("ping", &r);

    // Removal and prunes.
    let r = request(&d, "DELETE", "/containers/golden?v=1", None);
    rec.add("container_delete", &r);
    let r = request(&d, "DELETE", "/containers/golden", None);
    rec.add("container_delete_again", &r);
    let r = request(&d, "POST", "/containers/prune", None);
    rec.add("container_prune", &r);
    let r = request(&d, "POST", "/volumes/prune", None);
    rec.add("volume_prune", &r);
    let r = request(&d, "POST", "/networks/prune", None);
    rec.add("network_prune", &r);
    let until = berth_util::time::now().0 + 1;
    let r = request(&d, "GET", &format!("/events?since=0&until={until}"), None);
    rec.add("events", &r);
    let _ = net_id;
    let _ = cid;

    // Normalise and compare.
    let mut norm = Norm {
        root: d.dir.path().display().to_string(),
        bridge: d.bridge.clone(),
        ids: Vec::new(),
    };
    for (_, _, body, _) in &rec.entries {
        norm.collect_ids(body);
    }
    let mut docs: BTreeMap<String, Value> = BTreeMap::new();
    for (name, status, body, _) in &rec.entries {
        docs.insert(
            name.clone(),
            json!({"status": status, "body": norm.value("", body)}),
        );
    }
    let dir = golden_dir();
    let update = std::env::var_os("BERTH_GOLDEN_UPDATE").is_some();
    let mut failures = Vec::new();
    for (name, doc) in &docs {
        let path = dir.join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap() + "\n").unwrap();
            continue;
        }
        let want: Value = match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).unwrap(),
            Err(e) => {
                failures.push(format!("{name}: {}: {e}", path.display()));
                continue;
            }
        };
        let mut out = Vec::new();
        diff(name, &want, doc, &mut out);
        failures.extend(out);
    }
    finish(d);
    assert!(
        failures.is_empty(),
        "responses differ from tests/golden (BERTH_GOLDEN_UPDATE=1 rewrites them):\n{}",
        failures.join("\n")
    );
}
