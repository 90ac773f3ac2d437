//! CNI: the pod network through the standard plugins, as libcni calls them.
//!
//! The network is the first configuration file (by name) in the configuration directory
//! (`/etc/cni/net.d`): a `.conflist` (a list of plugins) or a single plugin's `.conf`/`.json`.
//! `ADD` runs the plugins in order, each getting the previous one's result as `prevResult`;
//! `DEL` runs them in reverse order (and succeeds when the namespace is already gone, as the
//! plugins themselves do). Each plugin is `BIN_DIR/<type>`, run with the CNI variables
//! (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`) and its
//! configuration on stdin; `runtimeConfig.portMappings` is given to plugins whose
//! `capabilities` ask for `portMappings` (the `portmap` plugin). The standard `portmap`
//! is left out of both for an attachment without port mappings (it would do nothing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where the configuration and the plugins are.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// The directory of network configurations (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The directory of plugin binaries (`/usr/lib/cni`).
    pub bin_dir: PathBuf,
}

/// A CNI failure.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network configuration in {0}")]
    NoConfig(PathBuf),
    #[error("reading CNI configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("CNI plugin {plugin} not found in {dir}")]
    MissingPlugin { plugin: String, dir: PathBuf },
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} failed ({command}): {message}")]
    Plugin {
        plugin: String,
        command: &'static str,
        message: String,
    },
}

/// One port mapping (`runtimeConfig.portMappings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The pod an invocation is for.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// The sandbox's id (`CNI_CONTAINERID`).
    pub id: &'a str,
    /// The network namespace's path (`CNI_NETNS`; empty on `DEL` when it is gone).
    pub netns: &'a Path,
    /// The interface inside (`eth0`).
    pub ifname: &'a str,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`.
    pub pod_namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub port_mappings: &'a [PortMapping],
}

/// A loaded network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The file it came from.
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    /// The plugins' configurations, in order.
    pub plugins: Vec<Map<String, Value>>,
}

/// An address of the `ADD` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `10.1.0.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// What `ADD` returned (the last plugin's result).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AddResult {
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// The full result, as the plugin printed it.
    #[serde(default)]
    pub raw: Value,
}

impl AddResult {
    /// The addresses without prefix length, IPv4 first.
    pub fn addresses(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ips
            .iter()
            .map(|i| i.address.split('/').next().unwrap_or("").to_string())
            .filter(|a| !a.is_empty())
            .collect();
        v.sort_by_key(|a| a.contains(':'));
        v
    }
}

impl CniConfig {
    /// The network: the first configuration file by name, as libcni's `ConfFiles` + sort.
    pub fn load(&self) -> Result<NetworkList, CniError> {
        let rd = std::fs::read_dir(&self.conf_dir).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                CniError::NoConfig(self.conf_dir.clone())
            } else {
                CniError::Read {
                    path: self.conf_dir.clone(),
                    source,
                }
            }
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conflist" | "conf" | "json")
                    )
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::NoConfig(self.conf_dir.clone()))?;
        let text = std::fs::read_to_string(&path).map_err(|source| CniError::Read {
            path: path.clone(),
            source,
        })?;
        parse_network(&path, &text)
    }

    /// Whether a usable configuration is there (the `NetworkReady` condition).
    pub fn ready(&self) -> Result<NetworkList, CniError> {
        let net = self.load()?;
        for p in &net.plugins {
            self.plugin_path(plugin_type(p))?;
        }
        Ok(net)
    }

    fn plugin_path(&self, typ: &str) -> Result<PathBuf, CniError> {
        let p = self.bin_dir.join(typ);
        if typ.is_empty() || typ.contains('/') || !p.is_file() {
            return Err(CniError::MissingPlugin {
                plugin: typ.to_string(),
                dir: self.bin_dir.clone(),
            });
        }
        Ok(p)
    }

    /// `ADD`: attaches the pod's namespace to the network.
    pub fn add(&self, net: &NetworkList, a: &Attachment<'_>) -> Result<AddResult, CniError> {
        let mut prev: Option<Value> = None;
        for p in net.plugins.iter().filter(|p| runs_for(p, a)) {
            let out = self.invoke("ADD", net, p, a, prev.as_ref())?;
            prev = Some(out);
        }
        let raw = prev.unwrap_or(Value::Null);
        let mut r: AddResult = serde_json::from_value(raw.clone()).unwrap_or_default();
        r.raw = raw;
        Ok(r)
    }

    /// `DEL`: detaches it (in reverse order; `prev` is the `ADD` result when known).
    pub fn del(
        &self,
        net: &NetworkList,
        a: &Attachment<'_>,
        prev: Option<&Value>,
    ) -> Result<(), CniError> {
        let mut first_err = None;
        for p in net.plugins.iter().rev().filter(|p| runs_for(p, a)) {
            if let Err(e) = self.invoke("DEL", net, p, a, prev.filter(|v| !v.is_null())) {
                tracing::warn!("CNI DEL of {}: {e}", a.id);
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn invoke(
        &self,
        command: &'static str,
        net: &NetworkList,
        plugin: &Map<String, Value>,
        a: &Attachment<'_>,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let typ = plugin_type(plugin).to_string();
        let exe = self.plugin_path(&typ)?;
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(net.name.clone()));
        conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        let wants_ports = plugin
            .get("capabilities")
            .and_then(|c| c.get("portMappings"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if wants_ports && !a.port_mappings.is_empty() {
            let mut rc = Map::new();
            rc.insert(
                "portMappings".into(),
                serde_json::to_value(a.port_mappings).unwrap_or(Value::Null),
            );
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        let input = serde_json::to_vec(&conf).unwrap_or_default();
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            a.pod_namespace, a.pod_name, a.id, a.pod_uid
        );
        let exec_err = |source| CniError::Exec {
            plugin: typ.clone(),
            source,
        };
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", a.id)
            .env("CNI_NETNS", a.netns)
            .env("CNI_IFNAME", a.ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // (Its answer without waiting for the reaping of a Go program's threads.)
        let out = berth_util::process::output_with_input_reaped_after(&mut cmd, &input)
            .map_err(exec_err)?;
        if !out.status.success() {
            // Plugins print a JSON error object on stdout.
            let msg = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| {
                    let m = v.get("msg").and_then(Value::as_str)?.to_string();
                    Some(match v.get("details").and_then(Value::as_str) {
                        Some(d) if !d.is_empty() => format!("{m}: {d}"),
                        _ => m,
                    })
                })
                .unwrap_or_else(|| {
                    let mut s = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    s.push_str(String::from_utf8_lossy(&out.stderr).trim());
                    s
                });
            return Err(CniError::Plugin {
                plugin: typ,
                command,
                message: msg,
            });
        }
        if command == "DEL" || out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(prev.cloned().unwrap_or(Value::Null));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| CniError::Plugin {
            plugin: typ,
            command,
            message: format!("unreadable result: {e}"),
        })
    }
}

/// Whether a plugin of the chain runs for an attachment: all do, except the standard
/// `portmap` for one without port mappings, whose `ADD` then prints its previous result
/// unchanged and whose `DEL` does nothing (containernetworking/plugins' `cmdAdd` and
/// `cmdDel`): one plugin process less on a pod's critical path.
fn runs_for(p: &Map<String, Value>, a: &Attachment<'_>) -> bool {
    plugin_type(p) != "portmap" || !a.port_mappings.is_empty()
}

fn plugin_type(p: &Map<String, Value>) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Parses a `.conflist`, or a single plugin's `.conf` (made a list of one).
pub fn parse_network(path: &Path, text: &str) -> Result<NetworkList, CniError> {
    let invalid = |message: String| CniError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let v: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a JSON object: {e}")))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("no \"name\"".into()))?
        .to_string();
    let cni_version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.4.0")
        .to_string();
    let plugins: Vec<Map<String, Value>> = match v.get("plugins") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| invalid("a plugin is not an object".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
        None => vec![v.clone()],
    };
    if plugins.is_empty() {
        return Err(invalid("no plugins".into()));
    }
    for p in &plugins {
        if plugin_type(p).is_empty() {
            return Err(invalid("a plugin has no \"type\"".into()));
        }
    }
    Ok(NetworkList {
        path: path.to_path_buf(),
        name,
        cni_version,
        plugins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_and_single_conf() {
        let p = Path::new("/x/10.conflist");
        let n = parse_network(
            p,
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!(n.name, "k");
        assert_eq!(n.cni_version, "1.0.0");
        assert_eq!(n.plugins.len(), 2);
        let one = parse_network(p, r#"{"name":"b","type":"bridge"}"#).unwrap();
        assert_eq!(one.plugins.len(), 1);
        assert_eq!(one.cni_version, "0.4.0");
        for bad in [
            "[]",
            r#"{"plugins":[{"type":"x"}]}"#,
            r#"{"name":"a","plugins":[]}"#,
            r#"{"name":"a","plugins":[{}]}"#,
        ] {
            assert!(parse_network(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_file_by_name_and_missing_plugins() {
        let d = tempfile::tempdir().unwrap();
        let bins = tempfile::tempdir().unwrap();
        let cfg = CniConfig {
            conf_dir: d.path().into(),
            bin_dir: bins.path().into(),
        };
        assert!(matches!(cfg.load(), Err(CniError::NoConfig(_))));
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"name":"a","type":"loopback"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("05-ignored.txt"), "x").unwrap();
        assert_eq!(cfg.load().unwrap().name, "a");
        assert!(matches!(
            cfg.ready(),
            Err(CniError::MissingPlugin { plugin, .. }) if plugin == "loopback"
        ));
        std::fs::write(bins.path().join("loopback"), "").unwrap();
        assert!(cfg.ready().is_ok());
    }

    #[test]
    fn addresses_ipv4_first() {
        let r = AddResult {
            ips: vec![
                IpConfig {
                    address: "fd00::5/64".into(),
                    gateway: None,
                },
                IpConfig {
                    address: "10.1.0.5/24".into(),
                    gateway: None,
                },
            ],
            raw: Value::Null,
        };
        assert_eq!(r.addresses(), vec!["10.1.0.5", "fd00::5"]);
    }

    #[test]
    fn portmap_runs_only_with_port_mappings() {
        let d = tempfile::tempdir().unwrap();
        let bins = d.path().join("bin");
        std::fs::create_dir(&bins).unwrap();
        let log = d.path().join("calls");
        for (name, result) in [
            (
                "bridge",
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}"#,
            ),
            (
                "portmap",
                r#"{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}"#,
            ),
        ] {
            let p = bins.join(name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\ncat >/dev/null\necho \"{name} $CNI_COMMAND\" >>{}\necho '{result}'\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let cfg = CniConfig {
            conf_dir: d.path().into(),
            bin_dir: bins.clone(),
        };
        let net = parse_network(
            Path::new("/x/10.conflist"),
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let ports = [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let attachment = |port_mappings| Attachment {
            id: "c1",
            netns: Path::new("/proc/self/ns/net"),
            ifname: "eth0",
            pod_namespace: "ns",
            pod_name: "p",
            pod_uid: "u",
            port_mappings,
        };
        let calls = || {
            let c = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            c
        };
        let r = cfg.add(&net, &attachment(&[])).unwrap();
        assert_eq!(r.addresses(), vec!["10.9.0.2"]);
        assert_eq!(calls(), "bridge ADD\n");
        cfg.del(&net, &attachment(&[]), Some(&r.raw)).unwrap();
        assert_eq!(calls(), "bridge DEL\n");
        let r = cfg.add(&net, &attachment(&ports)).unwrap();
        assert_eq!(r.addresses(), vec!["10.9.0.2"]);
        assert_eq!(calls(), "bridge ADD\nportmap ADD\n");
        cfg.del(&net, &attachment(&ports), Some(&r.raw)).unwrap();
        assert_eq!(calls(), "portmap DEL\nbridge DEL\n");
    }
}
