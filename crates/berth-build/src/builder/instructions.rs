//! Typed instructions: each parser [`Node`] becomes one [`Instruction`], its flags parsed
//! once here (unknown flags, bad values and bad `--mount`s are errors naming the line), as
//! Docker's `instructions.Parse` does before anything runs. Words Docker expands (`--from`,
//! `--chown`, arguments, ENV values) stay as written: the evaluator expands them in the
//! stage's scope.

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::{invalid, Result};
use crate::parser::{self, Heredoc, Node};
use crate::shell;

/// An instruction with the line it starts on and its text.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub line: usize,
    /// As Docker prints it in `Step N/M : …`.
    pub original: String,
    pub inst: Instruction,
}

#[derive(Debug, Clone)]
pub(crate) enum Instruction {
    From(From),
    /// `name[=default]`, the defaults unexpanded.
    Arg(Vec<(String, Option<String>)>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Maintainer(String),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    /// Ports, unexpanded.
    Expose(String),
    Volume(Volumes),
    User(String),
    StopSignal(String),
    Workdir(String),
    /// A trigger, validated, its keyword in upper case.
    Onbuild(String),
    Healthcheck(Healthcheck),
    Run(Run),
    /// COPY and ADD.
    Copy(Copy),
}

#[derive(Debug, Clone)]
pub(crate) struct From {
    /// The base: an image or an earlier stage (unexpanded).
    pub base: String,
    /// `AS name`, in lower case.
    pub name: Option<String>,
    /// `--platform` (unexpanded).
    pub platform: Option<String>,
}

/// CMD/ENTRYPOINT: the exec form as is, the shell form runs through the stage's shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandLine {
    Exec(Vec<String>),
    Shell(String),
}

impl CommandLine {
    fn parse(args: &str) -> CommandLine {
        match parser::json_array(args) {
            Some(v) => CommandLine::Exec(v),
            None => CommandLine::Shell(args.to_string()),
        }
    }

    pub fn argv(&self, shell: Vec<String>) -> Vec<String> {
        match self {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = shell;
                v.push(s.clone());
                v
            }
        }
    }
}

/// VOLUME's two forms.
#[derive(Debug, Clone)]
pub(crate) enum Volumes {
    Json(Vec<String>),
    Words(String),
}

/// The config's `Healthcheck` (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Healthcheck {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub command: CommandLine,
    /// The arguments as written (the line a script of heredocs starts with).
    pub raw: String,
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<MountSpec>,
    /// `--network`, when given.
    pub network: Option<Network>,
    /// The flags as written (`--mount=… `), for the history.
    pub flags: String,
}

impl Run {
    /// The argv: the exec form as is (without heredocs), else the script (a heredoc that
    /// is the whole command, or the line with its heredocs) through the stage's shell.
    pub fn argv(&self, shell: Vec<String>) -> Vec<String> {
        let line = match &self.command {
            CommandLine::Exec(v) if self.heredocs.is_empty() => return v.clone(),
            CommandLine::Exec(_) | CommandLine::Shell(_) => self.raw.clone(),
        };
        let script = match self.heredocs.as_slice() {
            [h] if line
                .trim()
                .trim_start_matches("<<")
                .trim_start_matches('-')
                .trim_matches(|c| c == '"' || c == '\'')
                == h.name =>
            {
                h.content.clone()
            }
            _ => {
                let mut s = line;
                for h in &self.heredocs {
                    s.push('\n');
                    s.push_str(&h.content);
                    s.push_str(&h.name);
                }
                s
            }
        };
        let mut v = shell;
        v.push(script);
        v
    }

    /// The command as written, as a failure message shows it.
    pub fn command_text(&self) -> String {
        match &self.command {
            CommandLine::Exec(v) => v.join(" "),
            CommandLine::Shell(s) => format!("/bin/sh -c {s}"),
        }
    }
}

/// `RUN --network` (BuildKit's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    /// `default`: the build's network (`--network`, else the default bridge).
    Default,
    /// The host's.
    Host,
    /// A network namespace with loopback only.
    None,
}

impl Network {
    pub fn parse(s: &str, line: usize) -> Result<Network> {
        match s {
            "default" | "" => Ok(Network::Default),
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            other => Err(invalid(
                line,
                format!("RUN --network={other} is not supported (host, none or default)"),
            )),
        }
    }
}

/// Whether a `RUN` of `df` mounts the build context writable (`--mount=type=bind,rw` without
/// `from`): its writes land in the context directory, which then cannot be kept for another
/// build. A mount that does not parse writes nothing (the build fails on it).
pub fn writes_context(df: &parser::Dockerfile) -> bool {
    df.nodes
        .iter()
        .filter(|i| i.keyword == "RUN")
        .flat_map(|i| i.flag_all("mount"))
        .filter_map(|m| MountSpec::parse(m, 0).ok())
        .any(|m| {
            m.from.as_deref().is_none_or(str::is_empty)
                && matches!(m.kind, MountKind::Bind { rw: true, .. })
        })
}

/// One `RUN --mount`.
#[derive(Debug, Clone)]
pub(crate) struct MountSpec {
    pub kind: MountKind,
    /// `from=`: the stage or image a bind mount reads (the stage is a dependency).
    pub from: Option<String>,
    /// Its part of the cache key: the type and the options as written.
    pub key: String,
}

#[derive(Debug, Clone)]
pub(crate) enum MountKind {
    /// From the context, or from `from`'s root file system.
    Bind {
        target: String,
        source: String,
        rw: bool,
    },
    /// A directory kept under the build cache (its content is not part of the key).
    Cache {
        target: String,
        id: String,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// An SSH agent socket (`SSH_AUTH_SOCK` points at `target`).
    Ssh {
        id: String,
        target: String,
        required: bool,
    },
    /// A build secret as a read-only file (`target`) and/or an environment variable.
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl MountSpec {
    /// `type=…,target=…,…`.
    pub fn parse(spec: &str, line: usize) -> Result<MountSpec> {
        let mut kv: BTreeMap<String, String> = BTreeMap::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').unwrap_or((part, "true"));
            kv.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let typ = kv.get("type").cloned().unwrap_or_else(|| "bind".into());
        let key = format!("{typ}:{}", serde_json::to_string(&kv).unwrap_or_default());
        let target = kv
            .get("target")
            .or_else(|| kv.get("dst"))
            .or_else(|| kv.get("destination"))
            .cloned();
        let need_target = || {
            target
                .clone()
                .ok_or_else(|| invalid(line, format!("--mount=type={typ} needs a target")))
        };
        let num = |k: &str, radix: u32| -> Result<Option<u32>> {
            kv.get(k)
                .map(|v| {
                    u32::from_str_radix(v, radix).map_err(|_| {
                        invalid(line, format!("--mount=type={typ}: invalid {k} {v:?}"))
                    })
                })
                .transpose()
        };
        let kind = match typ.as_str() {
            "bind" => MountKind::Bind {
                target: need_target()?,
                source: kv
                    .get("source")
                    .or_else(|| kv.get("src"))
                    .cloned()
                    .unwrap_or_else(|| "/".into()),
                rw: ["rw", "readwrite"]
                    .iter()
                    .any(|k| kv.get(*k).is_some_and(|v| v != "false")),
            },
            "cache" => {
                let target = need_target()?;
                MountKind::Cache {
                    id: kv.get("id").cloned().unwrap_or_else(|| target.clone()),
                    target,
                    uid: num("uid", 10)?.unwrap_or(0),
                    gid: num("gid", 10)?.unwrap_or(0),
                    mode: num("mode", 8)?,
                }
            }
            "tmpfs" => MountKind::Tmpfs {
                target: need_target()?,
                // go-units RAMInBytes, as BuildKit.
                size: kv
                    .get("size")
                    .map(|s| berth_util::units::parse_ram_bytes(s))
                    .transpose()
                    .map_err(|e| invalid(line, format!("--mount=type=tmpfs: {e}")))?
                    .map(|s| s as u64),
            },
            "secret" => {
                // BuildKit: the id defaults to the target's base name, the target to
                // /run/secrets/<id> (none when only an env is asked for).
                let id = kv
                    .get("id")
                    .cloned()
                    .or_else(|| {
                        target
                            .as_deref()
                            .map(|t| t.rsplit('/').next().unwrap_or(t).to_string())
                    })
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| invalid(line, "--mount=type=secret needs an id or a target"))?;
                let env = kv.get("env").cloned().filter(|e| !e.is_empty());
                let target = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                MountKind::Secret {
                    id,
                    target,
                    env,
                    required: kv.get("required").is_some_and(|v| v == "true"),
                    mode: num("mode", 8)?.unwrap_or(0o400),
                    uid: num("uid", 10)?.unwrap_or(0),
                    gid: num("gid", 10)?.unwrap_or(0),
                }
            }
            "ssh" => MountKind::Ssh {
                id: kv
                    .get("id")
                    .cloned()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| "default".into()),
                target: target
                    .clone()
                    .unwrap_or_else(|| "/run/buildkit/ssh_agent.0".into()),
                required: kv.get("required").is_some_and(|v| v == "true"),
            },
            other => {
                return Err(invalid(
                    line,
                    format!(
                        "--mount type={other} is not supported (bind, cache, tmpfs, secret, ssh)"
                    ),
                ))
            }
        };
        Ok(MountSpec {
            kind,
            from: kv.get("from").cloned(),
            key,
        })
    }
}

/// COPY and ADD.
#[derive(Debug, Clone)]
pub(crate) struct Copy {
    pub add: bool,
    /// Sources then the destination, unexpanded (`<<NAME` names a heredoc).
    pub words: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    /// `--from` (COPY): a stage or an image (unexpanded).
    pub from: Option<String>,
    /// `--chown` (unexpanded).
    pub chown: Option<String>,
    pub chmod: Option<u32>,
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--checksum` (ADD of URLs).
    pub checksum: Option<String>,
    /// The flags but `--from` as written (`--chown=… `), for the history.
    pub flags: String,
}

impl Copy {
    pub fn keyword(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }
}

impl Step {
    /// The typed form of a parser node.
    pub fn parse(node: &Node, escape: char) -> Result<Step> {
        let line = node.line;
        let args = node.args.as_str();
        let split = |s: &str| shell::split_raw(s, escape).map_err(|e| super::error::at(line, e));
        let kw = node.keyword.as_str();
        node.check_flags(match kw {
            "FROM" => &["platform"],
            "RUN" => &["mount", "network", "security"],
            "COPY" => &["from", "chown", "chmod", "link", "parents", "exclude"],
            // `--link` and `--keep-git-dir` are accepted and change nothing here.
            "ADD" => &[
                "chown",
                "chmod",
                "checksum",
                "link",
                "keep-git-dir",
                "exclude",
            ],
            "HEALTHCHECK" => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        })?;
        let inst = match kw {
            "FROM" => {
                let words = split(args)?;
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        let n = n.to_ascii_lowercase();
                        if !n
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                            || !n.starts_with(|c: char| c.is_ascii_alphabetic())
                        {
                            return Err(invalid(line, format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols")));
                        }
                        Some(n)
                    }
                    _ => return Err(invalid(line, "FROM requires either one or three arguments")),
                };
                Instruction::From(From {
                    base: words[0].clone(),
                    name,
                    platform: node.flag("platform").map(str::to_string),
                })
            }
            "ARG" => {
                let mut defs = Vec::new();
                for w in split(args)? {
                    let (k, v) = match w.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w, None),
                    };
                    if k.is_empty() {
                        return Err(invalid(line, "ARG names can not be blank"));
                    }
                    if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(invalid(line, format!("invalid ARG name {k:?}")));
                    }
                    defs.push((k, v));
                }
                Instruction::Arg(defs)
            }
            "ENV" => Instruction::Env(kv_pairs(args, escape, true, line)?),
            "LABEL" => Instruction::Label(kv_pairs(args, escape, false, line)?),
            "MAINTAINER" => Instruction::Maintainer(args.to_string()),
            "CMD" => Instruction::Cmd(CommandLine::parse(args)),
            "ENTRYPOINT" => Instruction::Entrypoint(CommandLine::parse(args)),
            "SHELL" => Instruction::Shell(
                parser::json_array(args)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        invalid(line, "SHELL requires the arguments to be in JSON form")
                    })?,
            ),
            "EXPOSE" => Instruction::Expose(args.to_string()),
            "VOLUME" => Instruction::Volume(match parser::json_array(args) {
                Some(v) => Volumes::Json(v),
                None => Volumes::Words(args.to_string()),
            }),
            "USER" => Instruction::User(args.trim().to_string()),
            "STOPSIGNAL" => Instruction::StopSignal(args.trim().to_string()),
            "WORKDIR" => Instruction::Workdir(args.trim().to_string()),
            "ONBUILD" => Instruction::Onbuild(onbuild(args, line)?),
            "HEALTHCHECK" => Instruction::Healthcheck(healthcheck(node)?),
            "RUN" => {
                if let Some(s) = node.flag("security") {
                    if s != "sandbox" {
                        return Err(invalid(
                            line,
                            format!("RUN --security={s} is not supported"),
                        ));
                    }
                }
                // `RUN []` is no error (dockerd runs the image's command, see `run_step`).
                let command = CommandLine::parse(args);
                Instruction::Run(Run {
                    command,
                    raw: args.to_string(),
                    heredocs: node.heredocs.clone(),
                    mounts: node
                        .flag_all("mount")
                        .into_iter()
                        .map(|m| MountSpec::parse(m, line))
                        .collect::<Result<_>>()?,
                    network: node
                        .flag("network")
                        .map(|n| Network::parse(n, line))
                        .transpose()?,
                    flags: flags_text(node, |_| true),
                })
            }
            "COPY" | "ADD" => {
                let words = match parser::json_array(args) {
                    Some(v) => v,
                    None => split(args)?,
                };
                if words.len() < 2 {
                    return Err(invalid(line, format!("{kw} requires at least two arguments, but only one was provided. Destination could not be determined")));
                }
                let chmod = node
                    .flag("chmod")
                    .map(|m| {
                        u32::from_str_radix(m, 8).map_err(|_| {
                            invalid(line, format!("invalid --chmod {m:?}: octal modes only"))
                        })
                    })
                    .transpose()?;
                Instruction::Copy(Copy {
                    add: kw == "ADD",
                    words,
                    heredocs: node.heredocs.clone(),
                    from: node.flag("from").map(str::to_string),
                    chown: node.flag("chown").map(str::to_string),
                    chmod,
                    parents: node.flag("parents").is_some_and(|v| v != "false"),
                    excludes: node
                        .flag_all("exclude")
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    checksum: node.flag("checksum").map(str::to_string),
                    flags: flags_text(node, |k| k != "from"),
                })
            }
            other => return Err(invalid(line, format!("unknown instruction: {other}"))),
        };
        Ok(Step {
            line,
            original: node.original.clone(),
            inst,
        })
    }
}

/// The flags `keep` keeps, as written in the history: `--name=value ` each.
fn flags_text(node: &Node, keep: impl Fn(&str) -> bool) -> String {
    node.flags
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| format!("--{k}={v} "))
        .collect()
}

/// `ENV`/`LABEL` pairs: `k=v …` or the legacy `k v`.
fn kv_pairs(args: &str, esc: char, legacy_ok: bool, line: usize) -> Result<Vec<(String, String)>> {
    let words = shell::split_raw(args, esc).map_err(|e| super::error::at(line, e))?;
    if words.is_empty() {
        return Err(invalid(line, "requires at least one argument"));
    }
    if !words[0].contains('=') {
        if !legacy_ok && words.len() < 2 {
            return Err(invalid(
                line,
                format!("LABEL {}: a key=value pair is required", words[0]),
            ));
        }
        let (k, rest) = args.trim().split_at(
            args.trim()
                .find(char::is_whitespace)
                .unwrap_or(args.trim().len()),
        );
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(invalid(line, format!("{k} must have two arguments")));
        }
        return Ok(vec![(k.to_string(), rest.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            invalid(
                line,
                format!("Syntax error - can't find = in {w:?}. Must be of the form: name=value"),
            )
        })?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Validates an ONBUILD trigger; returns it with its keyword in upper case.
fn onbuild(args: &str, line: usize) -> Result<String> {
    let t = args.trim();
    let first = t
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match first.as_str() {
        "ONBUILD" => {
            return Err(invalid(
                line,
                "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
            ))
        }
        "FROM" | "MAINTAINER" => {
            return Err(invalid(
                line,
                format!("{first} isn't allowed as an ONBUILD trigger"),
            ))
        }
        _ => {}
    }
    parser::parse(t).map_err(|e| invalid(line, e.message))?;
    Ok(format!("{first}{}", &t[first.len()..]))
}

fn healthcheck(node: &Node) -> Result<Healthcheck> {
    let line = node.line;
    let words: Vec<&str> = node.args.split_whitespace().collect();
    let typ = words
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    if typ == "NONE" {
        if words.len() > 1 || !node.flags.is_empty() {
            return Err(invalid(line, "HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    if typ != "CMD" {
        return Err(invalid(
            line,
            format!("Unknown type {typ:?} in HEALTHCHECK (try CMD)"),
        ));
    }
    let rest = node.args.trim_start()[3..].trim_start();
    let test: Vec<String> = match parser::json_array(rest) {
        Some(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
        None => vec!["CMD-SHELL".into(), rest.to_string()],
    };
    let duration = |flag: &str| -> Result<Option<i64>> {
        let Some(v) = node.flag(flag) else {
            return Ok(None);
        };
        let ns = berth_util::units::parse_duration(v)
            .map_err(|e| invalid(line, format!("invalid duration for --{flag}: {e}")))?;
        if ns != 0 && ns < 1_000_000 {
            return Err(invalid(line, format!("--{flag} cannot be less than 1ms")));
        }
        Ok(Some(ns))
    };
    let retries = match node.flag("retries") {
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| invalid(line, format!("invalid --retries {v:?}")))?;
            if n < 0 {
                return Err(invalid(line, "--retries cannot be negative"));
            }
            Some(n)
        }
        None => None,
    };
    Ok(Healthcheck {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(df: &str) -> Result<Vec<Step>> {
        let df = parser::parse(df).unwrap();
        df.nodes.iter().map(|n| Step::parse(n, df.escape)).collect()
    }

    #[test]
    fn writes_context_only_for_a_writable_bind_of_the_context() {
        let writes =
            |run: &str| writes_context(&parser::parse(&format!("FROM x\n{run}\n")).unwrap());
        assert!(writes("RUN --mount=type=bind,target=/c,rw true"));
        assert!(writes("RUN --mount=target=/c,readwrite=true true"));
        assert!(writes("RUN --mount=type=bind,target=/c,rw,from= true"));
        assert!(!writes("RUN --mount=type=bind,target=/c true"));
        assert!(!writes("RUN --mount=type=bind,target=/c,rw=false true"));
        assert!(!writes(
            "RUN --mount=type=bind,target=/c,rw,from=stage true"
        ));
        assert!(!writes("RUN --mount=type=cache,target=/c,rw true"));
        assert!(!writes("COPY . /c"));
    }

    fn one(df: &str) -> Instruction {
        steps(&format!("FROM x\n{df}\n"))
            .unwrap()
            .pop()
            .unwrap()
            .inst
    }

    fn err(df: &str) -> String {
        steps(&format!("FROM x\n{df}\n")).unwrap_err().to_string()
    }

    #[test]
    fn pairs() {
        assert_eq!(
            kv_pairs("A=1 B=\"x y\"", '\\', true, 1).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "\"x y\"".into())]
        );
        assert_eq!(
            kv_pairs("KEY some value", '\\', true, 1).unwrap(),
            vec![("KEY".into(), "some value".into())]
        );
        assert!(kv_pairs("KEY", '\\', true, 1).is_err());
    }

    #[test]
    fn flags_are_parsed_once_with_the_line() {
        assert_eq!(
            err("COPY --bogus=1 a /b"),
            "dockerfile parse error on line 2: unknown flag: --bogus for COPY"
        );
        assert_eq!(
            err("ADD --from=x a /b"),
            "dockerfile parse error on line 2: unknown flag: --from for ADD"
        );
        assert_eq!(
            err("COPY --chmod=rwx a /b"),
            "Dockerfile line 2: invalid --chmod \"rwx\": octal modes only"
        );
        assert_eq!(
            err("RUN --security=insecure true"),
            "Dockerfile line 2: RUN --security=insecure is not supported"
        );
        assert_eq!(
            err("RUN --network=foo true"),
            "Dockerfile line 2: RUN --network=foo is not supported (host, none or default)"
        );
        assert_eq!(
            err("RUN --mount=type=nfs,target=/x true"),
            "Dockerfile line 2: --mount type=nfs is not supported (bind, cache, tmpfs, secret, ssh)"
        );
        // ssh mounts: the agent id defaults to `default`, the target to BuildKit's path.
        match MountSpec::parse("type=ssh", 2).unwrap().kind {
            MountKind::Ssh {
                id,
                target,
                required,
            } => {
                assert_eq!(id, "default");
                assert_eq!(target, "/run/buildkit/ssh_agent.0");
                assert!(!required);
            }
            _ => panic!("not an ssh mount"),
        }
        match MountSpec::parse("type=ssh,id=gh,target=/s,required=true", 2)
            .unwrap()
            .kind
        {
            MountKind::Ssh {
                id,
                target,
                required,
            } => assert!(id == "gh" && target == "/s" && required),
            _ => panic!("not an ssh mount"),
        }
        assert_eq!(
            err("RUN --mount=type=cache true"),
            "Dockerfile line 2: --mount=type=cache needs a target"
        );
        assert_eq!(
            err("RUN --mount=type=secret,id=s,mode=9 true"),
            "Dockerfile line 2: --mount=type=secret: invalid mode \"9\""
        );
        assert_eq!(
            err("RUN --mount=type=tmpfs,target=/t,size=lots true"),
            "Dockerfile line 2: --mount=type=tmpfs: invalid size: 'lots'"
        );
        assert_eq!(
            err("COPY onlyone"),
            "Dockerfile line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        let Instruction::Copy(c) =
            one("COPY --from=$S --chown=1:2 --chmod=640 --parents --exclude=*.md a b /d/")
        else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("$S"));
        assert_eq!(c.chown.as_deref(), Some("1:2"));
        assert_eq!(c.chmod, Some(0o640));
        assert!(c.parents);
        assert_eq!(c.excludes, vec!["*.md"]);
        assert_eq!(c.words, vec!["a", "b", "/d/"]);
        assert_eq!(
            c.flags,
            "--chown=1:2 --chmod=640 --parents= --exclude=*.md "
        );
        let Instruction::Run(r) = one(
            "RUN --mount=type=cache,target=/c,uid=5 --mount=from=st,target=/s --network=none ls",
        ) else {
            panic!()
        };
        assert!(matches!(
            r.mounts[0].kind,
            MountKind::Cache { ref id, uid: 5, gid: 0, mode: None, .. } if id == "/c"
        ));
        assert_eq!(r.mounts[1].from.as_deref(), Some("st"));
        assert_eq!(r.mounts[1].key, "bind:{\"from\":\"st\",\"target\":\"/s\"}");
        assert_eq!(r.network, Some(Network::None));
        let Instruction::Run(t) = one("RUN --mount=type=tmpfs,target=/t,size=64m true") else {
            panic!()
        };
        assert!(
            matches!(t.mounts[0].kind, MountKind::Tmpfs { size: Some(s), .. } if s == 64 << 20)
        );
        assert_eq!(
            r.argv(vec!["sh".into(), "-c".into()]),
            vec!["sh", "-c", "ls"]
        );
        assert_eq!(r.command_text(), "/bin/sh -c ls");
    }

    #[test]
    fn secrets_default_their_id_and_target() {
        let Instruction::Run(r) = one(
            "RUN --mount=type=secret,target=/etc/tok --mount=type=secret,id=a,env=A --mount=type=secret,id=b true",
        ) else {
            panic!()
        };
        let got: Vec<(String, Option<String>)> = r
            .mounts
            .iter()
            .map(|m| match &m.kind {
                MountKind::Secret { id, target, .. } => (id.clone(), target.clone()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("tok".into(), Some("/etc/tok".into())),
                ("a".into(), None),
                ("b".into(), Some("/run/secrets/b".into())),
            ]
        );
    }

    #[test]
    fn healthchecks() {
        let Instruction::Healthcheck(h) =
            one("HEALTHCHECK --interval=1m30s --timeout=500ms --retries=3 CMD [\"true\"]")
        else {
            panic!()
        };
        assert_eq!(h.test, vec!["CMD", "true"]);
        assert_eq!(h.interval, Some(90_000_000_000));
        assert_eq!(h.timeout, Some(500_000_000));
        assert_eq!(h.retries, Some(3));
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"Test":["CMD","true"],"Interval":90000000000,"Timeout":500000000,"Retries":3}"#
        );
        let Instruction::Healthcheck(h) = one("HEALTHCHECK --start-period=1.5h CMD curl x") else {
            panic!()
        };
        assert_eq!(h.test, vec!["CMD-SHELL", "curl x"]);
        assert_eq!(h.start_period, Some(5_400_000_000_000));
        assert!(err("HEALTHCHECK --interval=5x CMD true").contains("invalid duration"));
        assert!(err("HEALTHCHECK --interval= CMD true").contains("invalid duration"));
        assert!(err("HEALTHCHECK --interval=10us CMD true").contains("less than 1ms"));
        assert!(err("HEALTHCHECK --retries=-1 CMD true").contains("negative"));
        assert!(err("HEALTHCHECK NONE x").contains("takes no arguments"));
        assert!(err("HEALTHCHECK FOO").contains("Unknown type"));
    }

    #[test]
    fn from_onbuild_arg() {
        let s = steps("FROM busybox AS Build\n").unwrap();
        let Instruction::From(f) = &s[0].inst else {
            panic!()
        };
        assert_eq!(f.name.as_deref(), Some("build"));
        assert!(steps("FROM a AS 1x\n").is_err());
        assert!(steps("FROM a b\n").is_err());
        assert!(err("ONBUILD ONBUILD RUN x").contains("Chaining"));
        assert!(err("ONBUILD FROM x").contains("isn't allowed"));
        assert!(matches!(one("onbuild run echo"), Instruction::Onbuild(t) if t == "RUN echo"));
        assert!(err("ARG a-b").contains("invalid ARG name"));
        assert!(err("ARG =foo").contains("ARG names can not be blank"));
    }
}
