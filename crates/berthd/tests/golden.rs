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

/// The API version of an unversioned step: the golden files without a version in their
/// name pin API 1.44's shapes (the `_v1.51` ones the current version's).
const PINNED: &str = "/v1.44";

fn request(d: &Daemon, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let text = body.map(|b| b.to_string());
    let path = if path.starts_with("/v1.") {
        path.to_string()
    } else {
        format!("{PINNED}{path}")
    };
    let raw = d.http(method, &path, text.as_deref()).unwrap();
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
                // How long a container ran (a die event's attribute), in seconds.
                if key == "execDuration" {
                    return json!("<secs>");
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
    shape_of("", v)
}

/// The blkio lists of stats: one entry per device and operation the container's I/O touched
/// (none while everything it read was in the page cache), so their length is the host's.
const BLKIO_LISTS: &[&str] = &["io_service_bytes_recursive", "io_serviced_recursive"];

fn shape_of(key: &str, v: &Value) -> Value {
    match v {
        Value::String(_) => json!("<s>"),
        Value::Number(_) => json!(0),
        Value::Array(a) if BLKIO_LISTS.contains(&key) => {
            // Each entry is Docker's BlkioStatEntry; the list is `[]` in the golden file.
            for e in a {
                let mut keys: Vec<&str> = e
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                keys.sort_unstable();
                assert_eq!(keys, ["major", "minor", "op", "value"], "{key} entry {e}");
            }
            json!([])
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| shape_of(key, x)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), shape_of(k, x))).collect())
        }
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

    /// Sends a request and records its response whole under `name`; returns it.
    fn request(
        &mut self,
        d: &Daemon,
        name: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let r = request(d, method, path, body.as_ref());
        self.add(name, &r);
        r
    }

    /// Sends `steps` (name, method, path, body) in order, recording each response whole.
    fn record(&mut self, d: &Daemon, steps: &[(&str, &str, &str, Option<Value>)]) {
        for (name, method, path, body) in steps {
            self.request(d, name, method, path, body.clone());
        }
    }

    /// Sends `steps` in order, recording the shape of each response.
    fn record_shapes(&mut self, d: &Daemon, steps: &[(&str, &str, &str, Option<Value>)]) {
        for (name, method, path, body) in steps {
            self.add_shape(name, &request(d, method, path, body.as_ref()));
        }
    }
}

#[test]
fn api_responses_match_the_golden_files() {
    let d = root_daemon!();
    let mut rec = Recorder::default();
    let bind = d.path("bind-src");
    std::fs::create_dir_all(&bind).unwrap();

    // Errors.
    rec.record(
        &d,
        &[
            (
                "error_no_such_container",
                "GET",
                "/containers/nope/json",
                None,
            ),
            ("error_old_version", "GET", "/v1.12/version", None),
            (
                "error_no_such_image",
                "POST",
                "/containers/create",
                Some(json!({"Image": "nope:latest"})),
            ),
            (
                "error_no_image",
                "POST",
                "/containers/create",
                Some(json!({})),
            ),
        ],
    );

    // Networks and volumes first (the container uses them).
    let net = json!({"Name": "goldnet", "Labels": {"tier": "gold"}, "Options": {"com.docker.network.driver.mtu": "1400"}, "IPAM": {"Config": [{"Subnet": "10.213.77.0/24"}]}});
    let r = rec.request(&d, "network_create", "POST", "/networks/create", Some(net));
    let net_id = r.body["Id"].as_str().unwrap().to_string();
    let vol = json!({"Name": "goldvol", "Labels": {"k": "v"}});
    rec.request(&d, "volume_create", "POST", "/volumes/create", Some(vol));

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
    let r = rec.request(
        &d,
        "container_create",
        "POST",
        "/containers/create?name=gold",
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let cid = r.body["Id"].as_str().unwrap().to_string();
    rec.record(
        &d,
        &[
            (
                "container_inspect_created",
                "GET",
                "/containers/gold/json",
                None,
            ),
            (
                "container_inspect_created_v1.24",
                "GET",
                "/v1.24/containers/gold/json",
                None,
            ),
            (
                "container_inspect_created_v1.51",
                "GET",
                "/v1.51/containers/gold/json",
                None,
            ),
        ],
    );
    // A minimal create (defaults everywhere).
    rec.record(
        &d,
        &[
            (
                "container_create_minimal",
                "POST",
                "/containers/create?name=plain",
                Some(json!({"Image": "busybox", "Cmd": ["true"]})),
            ),
            (
                "container_inspect_minimal",
                "GET",
                "/containers/plain/json",
                None,
            ),
        ],
    );
    let r = rec.request(
        &d,
        "container_start",
        "POST",
        "/containers/gold/start",
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    const LABEL_FILTERED: &str =
        "/containers/json?all=1&filters=%7B%22label%22%3A%5B%22com.example.golden%3Dyes%22%5D%7D";
    rec.record(
        &d,
        &[
            (
                "container_start_again",
                "POST",
                "/containers/gold/start",
                None,
            ),
            (
                "container_inspect_running",
                "GET",
                "/containers/gold/json",
                None,
            ),
            ("container_list", "GET", "/containers/json", None),
            ("container_list_all", "GET", "/containers/json?all=1", None),
            ("container_list_filtered", "GET", LABEL_FILTERED, None),
        ],
    );

    // Exec.
    let exec = json!({"Cmd": ["sh", "-c", "exit 3"], "AttachStdout": true, "Env": ["X=1"], "User": "65534", "WorkingDir": "/"});
    let r = rec.request(
        &d,
        "exec_create",
        "POST",
        "/containers/gold/exec",
        Some(exec),
    );
    let eid = r.body["Id"].as_str().unwrap().to_string();
    let (exec_json, exec_start) = (format!("/exec/{eid}/json"), format!("/exec/{eid}/start"));
    rec.request(&d, "exec_inspect_created", "GET", &exec_json, None);
    let detach = Some(json!({"Detach": true}));
    rec.request(&d, "exec_start_detached", "POST", &exec_start, detach);
    wait("the exec to end", || {
        let r = request(&d, "GET", &exec_json, None);
        r.body["Running"] == false && !r.body["ExitCode"].is_null()
    });
    rec.request(&d, "exec_inspect_exited", "GET", &exec_json, None);

    // Operations on the running container.
    rec.record_shapes(
        &d,
        &[
            ("container_top", "GET", "/containers/gold/top", None),
            (
                "container_stats",
                "GET",
                "/containers/gold/stats?stream=false&one-shot=true",
                None,
            ),
        ],
    );
    let update =
        json!({"Memory": 134217728, "MemorySwap": -1, "RestartPolicy": {"Name": "unless-stopped"}});
    rec.record(
        &d,
        &[
            (
                "container_update",
                "POST",
                "/containers/gold/update",
                Some(update),
            ),
            (
                "container_update_wrong_type",
                "POST",
                "/containers/gold/update",
                Some(json!({"Memory": "1g"})),
            ),
            ("container_changes", "GET", "/containers/gold/changes", None),
            (
                "container_rename",
                "POST",
                "/containers/gold/rename?name=golden",
                None,
            ),
            (
                "container_stop",
                "POST",
                "/containers/golden/stop?t=0",
                None,
            ),
            (
                "container_stop_again",
                "POST",
                "/containers/golden/stop?t=0",
                None,
            ),
            ("container_wait", "POST", "/containers/golden/wait", None),
            (
                "container_inspect_exited",
                "GET",
                "/containers/golden/json",
                None,
            ),
            (
                "container_logs",
                "GET",
                "/containers/golden/logs?stdout=1&stderr=1",
                None,
            ),
        ],
    );

    // Images.
    rec.record(
        &d,
        &[
            ("image_list", "GET", "/images/json", None),
            ("image_inspect", "GET", "/images/busybox/json", None),
            (
                "image_inspect_v1.41",
                "GET",
                "/v1.41/images/busybox/json",
                None,
            ),
            ("image_list_v1.51", "GET", "/v1.51/images/json", None),
            (
                "image_inspect_v1.51",
                "GET",
                "/v1.51/images/busybox/json",
                None,
            ),
            ("image_history", "GET", "/images/busybox/history", None),
            (
                "image_tag",
                "POST",
                "/images/busybox/tag?repo=gold&tag=one",
                None,
            ),
            ("image_delete", "DELETE", "/images/gold:one", None),
            ("image_delete_in_use", "DELETE", "/images/busybox", None),
            ("image_inspect_missing", "GET", "/images/nope/json", None),
        ],
    );

    // Networks and volumes.
    rec.record(
        &d,
        &[
            ("network_inspect", "GET", "/networks/goldnet", None),
            ("network_inspect_bridge", "GET", "/networks/bridge", None),
            ("network_list", "GET", "/networks", None),
            (
                "network_connect",
                "POST",
                "/networks/bridge/connect",
                Some(json!({"Container": "plain"})),
            ),
            (
                "network_disconnect",
                "POST",
                "/networks/bridge/disconnect",
                Some(json!({"Container": "plain"})),
            ),
            ("network_inspect_missing", "GET", "/networks/nope", None),
            ("volume_inspect", "GET", "/volumes/goldvol", None),
            ("volume_list", "GET", "/volumes", None),
            ("system_df", "GET", "/system/df", None),
        ],
    );

    // System.
    rec.record_shapes(
        &d,
        &[
            ("info", "GET", "/info", None),
            ("info_v1.51", "GET", "/v1.51/info", None),
            ("version", "GET", "/version", None),
        ],
    );
    rec.request(&d, "ping", "GET", "/_ping", None);

    // Removal and prunes.
    rec.record(
        &d,
        &[
            ("container_delete", "DELETE", "/containers/golden?v=1", None),
            (
                "container_delete_again",
                "DELETE",
                "/containers/golden",
                None,
            ),
            ("container_prune", "POST", "/containers/prune", None),
            ("volume_prune", "POST", "/volumes/prune", None),
            ("network_prune", "POST", "/networks/prune", None),
        ],
    );
    let until = berth_util::time::now().0 + 1;
    let events = format!("/events?since=0&until={until}");
    rec.request(&d, "events", "GET", &events, None);
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
