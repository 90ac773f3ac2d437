//! Legacy links (`HostConfig.Links` on the default bridge), as dockerd keeps them: each link
//! names a child container under `/<parent>/<alias>`; when the parent starts, the running
//! child's address goes into the parent's `/etc/hosts` and its ports, name and environment
//! into the parent's environment (`ALIAS_PORT_80_TCP=…`, `ALIAS_NAME=…`, `ALIAS_ENV_K=v`).

use serde::{Deserialize, Serialize};

use super::{Container, Engine, EngineError, Result};

/// One link of a parent container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Link {
    #[serde(rename = "ChildID")]
    pub child_id: String,
    /// The alias (the last part of the link name `/<parent>/<alias>`).
    pub alias: String,
}

/// dockerd's `opts.ParseLink`: `name:alias`, `name` (alias = name) or inspect's
/// `/name:/parent/alias`.
pub fn parse_link(val: &str) -> Result<(String, String)> {
    if val.is_empty() {
        return Err(EngineError::BadRequest(
            "empty string specified for links".into(),
        ));
    }
    let parts: Vec<&str> = val.split(':').collect();
    match parts.as_slice() {
        [one] => Ok((one.to_string(), one.to_string())),
        [name, alias] if name.starts_with('/') => {
            let alias = alias.rsplit('/').next().unwrap_or(alias);
            Ok((name[1..].to_string(), alias.to_string()))
        }
        [name, alias] => Ok((name.to_string(), alias.to_string())),
        _ => Err(EngineError::BadRequest(format!(
            "bad format for links: {val}"
        ))),
    }
}

/// Whether a network mode is one of the default bridge's (where legacy links apply).
fn on_default_bridge(mode: &str) -> bool {
    matches!(mode, "" | "default" | "bridge")
}

/// dockerd's link environment (`links.Link.ToEnv`): `name` is the link's full name.
pub fn link_env(name: &str, child_ip: &str, child_env: &[String], ports: &[String]) -> Vec<String> {
    let alias = name
        .rsplit('/')
        .next()
        .unwrap_or(name)
        .to_uppercase()
        .replace('-', "_");
    // Ports as (number, protocol), TCP first, then by protocol and number.
    let mut ports: Vec<(u32, String)> = ports
        .iter()
        .filter_map(|p| {
            let (n, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            Some((n.parse().ok()?, proto.to_string()))
        })
        .collect();
    ports.sort_by(|a, b| {
        let rank = |p: &str| (p != "tcp", p.to_string());
        rank(&a.1).cmp(&rank(&b.1)).then(a.0.cmp(&b.0))
    });
    let mut env = Vec::new();
    let (mut start, mut end) = (None::<(u32, String)>, None::<(u32, String)>);
    for (i, (num, proto)) in ports.iter().enumerate() {
        if i == 0 {
            start = Some((*num, proto.clone()));
            end = start.clone();
            env.push(format!("{alias}_PORT={proto}://{child_ip}:{num}"));
        }
        let up = proto.to_uppercase();
        let prefix = format!("{alias}_PORT_{num}_{up}");
        env.push(format!("{prefix}={proto}://{child_ip}:{num}"));
        env.push(format!("{prefix}_ADDR={child_ip}"));
        env.push(format!("{prefix}_PORT={num}"));
        env.push(format!("{prefix}_PROTO={proto}"));
        let (s, e) = (
            start.clone().unwrap_or_default(),
            end.clone().unwrap_or_default(),
        );
        if *num == e.0 + 1 && *proto == e.1 {
            end = Some((*num, proto.clone()));
            if i < ports.len() - 1 {
                continue;
            }
        }
        let e = end.clone().unwrap_or_default();
        if e != s {
            let prefix = format!("{alias}_PORT_{}_{}", s.0, s.1.to_uppercase());
            env.push(format!("{prefix}_START={}://{child_ip}:{}", s.1, s.0));
            env.push(format!("{prefix}_PORT_START={}", s.0));
            env.push(format!("{prefix}_END={}://{child_ip}:{}", e.1, e.0));
            env.push(format!("{prefix}_PORT_END={}", e.0));
        }
        start = Some((*num, proto.clone()));
        end = start.clone();
    }
    env.push(format!("{alias}_NAME={name}"));
    for v in child_env {
        let Some((k, val)) = v.split_once('=') else {
            continue;
        };
        if k == "HOME" || k == "PATH" {
            continue;
        }
        env.push(format!("{alias}_ENV_{k}={val}"));
    }
    env
}

impl Engine {
    /// Create: the request's links, each child looked up (dockerd's `registerLinks`). Links
    /// of a container on a user-defined network are its endpoint's business.
    pub(crate) fn resolve_links(&self, c: &Container) -> Result<Vec<Link>> {
        let requested = c.host_config.links.clone().unwrap_or_default();
        if requested.is_empty() || !on_default_bridge(c.network_mode()) {
            return Ok(vec![]);
        }
        let mut out: Vec<Link> = Vec::new();
        for l in &requested {
            let (name, alias) = parse_link(l)?;
            let mut child = self.get(&name).map_err(|e| match e {
                EngineError::NotFound(_) => EngineError::BadRequest(format!(
                    "could not get container for {name}: No such container: {name}"
                )),
                e => e,
            })?;
            // A child sharing another container's network links to that one.
            let mut hops = 0;
            while let Some(other) = child.network_mode().strip_prefix("container:") {
                child = self.get(other)?;
                hops += 1;
                if hops > 16 {
                    break;
                }
            }
            if child.network_mode() == "host" {
                return Err(EngineError::BadRequest(
                    "conflicting options: host type networking can't be used with links. This would result in undefined behavior".into(),
                ));
            }
            // dockerd's `registerLink`: an alias already taken by another child is ignored
            // (the first link keeps it), with a warning.
            if let Some(first) = out.iter().find(|x| x.alias == alias) {
                if first.child_id != child.id {
                    tracing::warn!(
                        "container {}: link alias {alias} already names {}, ignoring the link to {}",
                        c.id,
                        first.child_id,
                        child.id
                    );
                }
                continue;
            }
            out.push(Link {
                child_id: child.id,
                alias,
            });
        }
        Ok(out)
    }

    /// Start: the parent's link environment and `/etc/hosts` lines; every child must run
    /// (dockerd: "Cannot link to a non running container").
    pub(crate) fn link_setup(&self, c: &Container) -> Result<(Vec<String>, Vec<String>)> {
        let (mut env, mut hosts) = (Vec::new(), Vec::new());
        for l in &c.links {
            let link_name = format!("{}/{}", c.name, l.alias);
            // A removed child took its links with it.
            let Ok(child) = self.get(&l.child_id) else {
                continue;
            };
            if !child.state.running {
                return Err(EngineError::BadRequest(format!(
                    "Cannot link to a non running container: {} AS {link_name}",
                    child.name
                )));
            }
            let settings = self.net.settings(&child);
            let ip = settings
                .networks
                .get("bridge")
                .map(|e| e.ip_address.clone())
                .unwrap_or_default();
            let ports: Vec<String> = child
                .config
                .exposed_ports
                .iter()
                .flat_map(|m| m.keys().cloned())
                .collect();
            env.extend(link_env(
                &link_name,
                &ip,
                child.config.env.as_deref().unwrap_or_default(),
                &ports,
            ));
            if !ip.is_empty() {
                let child_name = child.short_name().to_string();
                let mut names = format!("{} {}", l.alias, child.config.hostname);
                if l.alias != child_name {
                    names.push(' ');
                    names.push_str(&child_name);
                }
                hosts.push(format!("{ip}\t{names}"));
            }
        }
        Ok((env, hosts))
    }

    /// The link names (`/<parent>/<alias>`) under which other containers know `child_id`
    /// (the list's `Names`).
    pub(crate) fn link_names(&self, all: &[Container], child_id: &str) -> Vec<String> {
        all.iter()
            .flat_map(|p| {
                p.links
                    .iter()
                    .filter(|l| l.child_id == child_id)
                    .map(move |l| format!("{}/{}", p.name, l.alias))
            })
            .collect()
    }

    /// Inspect's `HostConfig.Links`: `/<child>:/<parent>/<alias>`.
    pub(crate) fn links_view(&self, c: &Container) -> Option<Vec<String>> {
        if c.links.is_empty() {
            return c.host_config.links.clone().filter(|l| l.is_empty());
        }
        Some(
            c.links
                .iter()
                .map(|l| {
                    let child = self
                        .get(&l.child_id)
                        .map(|x| x.name)
                        .unwrap_or_else(|_| l.child_id.clone());
                    format!("{child}:{}/{}", c.name, l.alias)
                })
                .collect(),
        )
    }

    /// `DELETE /containers/<parent>/<alias>?link=1` (dockerd's `rmLink`).
    pub fn remove_link(&self, name: &str) -> Result<()> {
        let name = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/{name}")
        };
        let (parent, alias) = name.rsplit_once('/').unwrap_or(("", &name));
        if parent.is_empty() {
            return Err(EngineError::BadRequest(
                "Conflict, cannot remove the default link name of the container".into(),
            ));
        }
        let e = self.lookup(parent).map_err(|_| {
            EngineError::BadRequest(format!("Cannot get parent {parent} for link name {name}"))
        })?;
        let mut r = e.rec.lock().unwrap();
        let before = r.links.len();
        r.links.retain(|l| l.alias != alias);
        if r.links.len() == before {
            return Err(EngineError::NotFound(name));
        }
        self.persist(&r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_parse_as_dockerd() {
        let p = |s: &str| parse_link(s).unwrap();
        assert_eq!(p("db:d"), ("db".into(), "d".into()));
        assert_eq!(p("db"), ("db".into(), "db".into()));
        assert_eq!(p("/db:/web/d"), ("db".into(), "d".into()));
        assert!(parse_link("").is_err());
        assert!(parse_link("a:b:c").is_err());
    }

    #[test]
    fn link_environment_as_dockerd() {
        let env = link_env(
            "/web/my-db",
            "10.0.0.2",
            &["PATH=/bin".into(), "FOO=1".into(), "X".into()],
            &[
                "6379/tcp".into(),
                "53/udp".into(),
                "80/tcp".into(),
                "81/tcp".into(),
            ],
        );
        assert_eq!(
            env,
            [
                "MY_DB_PORT=tcp://10.0.0.2:80",
                "MY_DB_PORT_80_TCP=tcp://10.0.0.2:80",
                "MY_DB_PORT_80_TCP_ADDR=10.0.0.2",
                "MY_DB_PORT_80_TCP_PORT=80",
                "MY_DB_PORT_80_TCP_PROTO=tcp",
                "MY_DB_PORT_81_TCP=tcp://10.0.0.2:81",
                "MY_DB_PORT_81_TCP_ADDR=10.0.0.2",
                "MY_DB_PORT_81_TCP_PORT=81",
                "MY_DB_PORT_81_TCP_PROTO=tcp",
                "MY_DB_PORT_6379_TCP=tcp://10.0.0.2:6379",
                "MY_DB_PORT_6379_TCP_ADDR=10.0.0.2",
                "MY_DB_PORT_6379_TCP_PORT=6379",
                "MY_DB_PORT_6379_TCP_PROTO=tcp",
                "MY_DB_PORT_80_TCP_START=tcp://10.0.0.2:80",
                "MY_DB_PORT_80_TCP_PORT_START=80",
                "MY_DB_PORT_80_TCP_END=tcp://10.0.0.2:81",
                "MY_DB_PORT_80_TCP_PORT_END=81",
                "MY_DB_PORT_53_UDP=udp://10.0.0.2:53",
                "MY_DB_PORT_53_UDP_ADDR=10.0.0.2",
                "MY_DB_PORT_53_UDP_PORT=53",
                "MY_DB_PORT_53_UDP_PROTO=udp",
                "MY_DB_NAME=/web/my-db",
                "MY_DB_ENV_FOO=1",
            ]
        );
    }
}
