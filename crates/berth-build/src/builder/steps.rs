//! A stage's walk: its `FROM`, the base image's `ONBUILD` triggers, then one function per
//! instruction. The metadata instructions change the config only (an `empty_layer` history
//! entry); RUN is in `run`, COPY/ADD in `copy`.

use std::path::Path;

use berth_image::manifest::ContainerConfig;
use serde_json::Value;

use super::commit::FsOp;
use super::error::{at, invalid, Result, StepError};
use super::instructions::{CommandLine, Healthcheck, Instruction, Step, Volumes};
use super::schedule::{self, Stage};
use super::state::{parse_platform, platform_args, short, Args, Scope, State};
use super::Eval;
use crate::{dockerignore, fsops, parser, shell};

/// A stage being evaluated.
pub(super) struct StageCtx {
    pub state: State,
    /// The ARGs declared in the stage so far.
    pub args: Args,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// The stage's index.
    pub index: usize,
    /// The stage's steps ignore the cache (`--no-cache-filter`).
    pub no_cache: bool,
}

/// Expansion of an instruction's words in a scope, errors at its line.
pub(super) struct Words<'a> {
    pub esc: char,
    pub scope: Scope<'a>,
    pub line: usize,
}

impl Words<'_> {
    pub fn word(&self, s: &str) -> Result<String> {
        shell::expand_word(s, self.esc, &self.scope).map_err(|e| at(self.line, e))
    }

    pub fn words(&self, s: &str) -> Result<Vec<String>> {
        shell::expand_words(s, self.esc, &self.scope).map_err(|e| at(self.line, e))
    }

    /// ENV/LABEL pairs, expanded; a blank name is refused.
    fn pairs(&self, pairs: &[(String, String)], kw: &str) -> Result<Vec<(String, String)>> {
        pairs
            .iter()
            .map(|(k, v)| {
                let (k, v) = (self.word(k)?, self.word(v)?);
                if k.is_empty() {
                    return Err(invalid(self.line, format!("{kw} names can not be blank")));
                }
                Ok((k, v))
            })
            .collect()
    }
}

/// ARG definitions with their defaults expanded in `scope`.
pub(super) fn arg_values(
    defs: &[(String, Option<String>)],
    esc: char,
    scope: &Scope<'_>,
    line: usize,
) -> Result<Vec<(String, Option<String>)>> {
    defs.iter()
        .map(|(k, v)| {
            let v = v
                .as_deref()
                .map(|v| shell::expand_word(v, esc, scope).map_err(|e| at(line, e)))
                .transpose()?;
            Ok((k.clone(), v))
        })
        .collect()
}

impl Eval<'_, '_, '_> {
    fn step_header(
        &mut self,
        step: &Step,
        stage: &str,
        position: usize,
        stage_steps: usize,
    ) -> Result<()> {
        self.step += 1;
        tracing::debug!("step on line {}: starts", step.line);
        self.step_event(super::StepEvent::Start {
            number: self.step,
            stage: stage.to_string(),
            position,
            stage_steps,
            text: step.original.clone(),
            line: step.line,
        })?;
        let text = format!("Step {}/{} : {}\n", self.step, self.total, step.original);
        self.say(text)
    }

    /// Builds stage `index`: its base, the base's triggers, its instructions.
    pub(super) fn build_stage(&mut self, index: usize, st: &Stage, meta: &Args) -> Result<State> {
        let from = &st.from;
        let line = from.line;
        let own_name = self
            .stage_names
            .iter()
            .find(|(_, &i)| i == index)
            .map(|(n, _)| n.clone());
        let stage_name = own_name.clone().unwrap_or_else(|| format!("stage-{index}"));
        let stage_steps = st.insts.len() + 1;
        self.step_header(from, &stage_name, 1, stage_steps)?;
        let from_step = self.step;
        let scope = Scope {
            env: &[],
            args: meta,
        };
        // The platform asked for (`FROM --platform`, else `--platform`): the base image must
        // be of it. With neither, the image is taken as it is (as Docker's classic builder).
        let mut want = self
            .opts
            .platform
            .as_deref()
            .is_some_and(|p| !p.trim().is_empty())
            .then(|| self.target.clone());
        if let Instruction::From(f) = &from.inst {
            if let Some(p) = &f.platform {
                // The platform args are there without being declared (as BuildKit's).
                let mut args: Args = platform_args(&self.target)
                    .into_iter()
                    .map(|(k, v)| (k, Some(v)))
                    .collect();
                args.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
                let scope = Scope {
                    env: &[],
                    args: &args,
                };
                let p = shell::expand_word(p, self.escape, &scope).map_err(|e| at(line, e))?;
                want = Some(parse_platform(&p).map_err(|e| at(line, e))?);
            }
        }
        let name = schedule::base_image_name(st, &scope, self.escape)?;
        let (state, base) = if schedule::stage_ref(self.stage_names, &name, index).is_some() {
            let s = self.source_state(&name, index, line)?;
            // The classic builder registers every stage as an image (its ID an `aux`
            // message): an image built on a stage has it as its parent, as dockerd's chain
            // of step images leads there.
            let base = if self.opts.classic_stages {
                Some(s.id.clone())
            } else {
                s.base.clone()
            };
            (s, base)
        } else if name == "scratch" {
            (State::scratch(want.as_ref().unwrap_or(&self.target)), None)
        } else {
            let s = self.image_state(&name, line, true, want.as_ref())?;
            let base = Some(s.id.clone());
            (s, base)
        };
        self.say(format!(" ---> {}\n", short(&state.id)))?;
        self.step_event(super::StepEvent::Done { number: from_step })?;
        let no_cache = own_name.is_some_and(|n| self.opts.no_cache_stages.contains(&n));
        let mut ctx = StageCtx {
            state,
            args: Args::new(),
            cmd_set: false,
            index,
            no_cache,
        };
        // Only the stage's steps see it: a stage without any is its base image unchanged.
        if !st.insts.is_empty() || !ctx.state.triggers().is_empty() {
            ctx.state.set_default_path();
        }
        self.triggers(&mut ctx, line, meta)?;
        for (i, step) in st.insts.iter().enumerate() {
            self.step_header(step, &stage_name, i + 2, stage_steps)?;
            let number = self.step;
            self.dispatch(&mut ctx, step, meta)?;
            self.step_event(super::StepEvent::Done { number })?;
        }
        let mut state = ctx.state;
        state.base = base;
        Ok(state)
    }

    /// Runs the base image's ONBUILD triggers (once: the stage's image does not keep them).
    fn triggers(&mut self, ctx: &mut StageCtx, line: usize, meta: &Args) -> Result<()> {
        let triggers = ctx.state.triggers();
        if triggers.is_empty() {
            return Ok(());
        }
        self.say(format!(
            "# Executing {} build trigger{}\n",
            triggers.len(),
            if triggers.len() == 1 { "" } else { "s" }
        ))?;
        let mut cc = ctx.state.cc();
        cc.extra.remove("OnBuild");
        ctx.state.config.config = Some(cc);
        for t in triggers {
            let df = parser::parse(&t)
                .map_err(|e| invalid(line, format!("ONBUILD trigger {t:?}: {}", e.message)))?;
            for mut node in df.nodes {
                node.line = line;
                let step = Step::parse(&node, self.escape)?;
                self.say(format!(" ---> Running in trigger: {}\n", step.original))?;
                self.dispatch(ctx, &step, meta)?;
            }
        }
        Ok(())
    }

    /// One instruction.
    fn dispatch(&mut self, ctx: &mut StageCtx, step: &Step, meta: &Args) -> Result<()> {
        let line = step.line;
        let mut cc = ctx.state.cc();
        let env = ctx.state.env();
        let args = ctx.args.clone();
        let x = Words {
            esc: self.escape,
            scope: Scope {
                env: &env,
                args: &args,
            },
            line,
        };
        let shown = match &step.inst {
            Instruction::Env(pairs) => env_step(&mut cc, pairs, &x)?,
            Instruction::Label(pairs) => label(&mut cc, pairs, &x)?,
            Instruction::Maintainer(m) => {
                ctx.state.config.author = Some(m.clone());
                format!("MAINTAINER {m}")
            }
            Instruction::Arg(defs) => self.arg(ctx, defs, meta, line)?,
            Instruction::Cmd(c) => {
                ctx.cmd_set = true;
                cmd(&mut cc, c, &ctx.state)
            }
            Instruction::Entrypoint(c) => entrypoint(&mut cc, c, ctx),
            Instruction::Shell(v) => shell_step(&mut cc, v),
            Instruction::Expose(ports) => expose(&mut cc, ports, &x)?,
            Instruction::Volume(v) => {
                let shown = volume(&mut cc, v, &x)?;
                self.volumes_over_files(ctx, &cc, line)?;
                shown
            }
            Instruction::User(u) => user(&mut cc, u, &x)?,
            Instruction::StopSignal(s) => stop_signal(&mut cc, s, &x)?,
            Instruction::Onbuild(t) => onbuild(&mut cc, t),
            Instruction::Healthcheck(h) => healthcheck(&mut cc, h)?,
            Instruction::Workdir(w) => {
                let (dir, op) = workdir(&mut cc, w, &x)?;
                let text = nop(&format!("WORKDIR {dir}"));
                return self.commit(ctx, line, text.clone(), text, cc, op);
            }
            Instruction::Run(r) => return self.run_step(ctx, line, r, cc),
            Instruction::Copy(c) => return self.copy_step(ctx, line, c, cc, &x),
            Instruction::From(_) => return Err(invalid(line, "unexpected FROM")),
        };
        let text = nop(&shown);
        self.commit(ctx, line, text.clone(), text, cc, FsOp::None)
    }

    /// dockerd creates each step's container with the config so far, and a volume over an
    /// existing file fails that create (`createContainerOSSpecificSettings`): so does the
    /// VOLUME step here, in its words, naming the path in the image. BuildKit makes no
    /// container for metadata steps: only classic builds (those recording a parent) check.
    fn volumes_over_files(&self, ctx: &StageCtx, cc: &ContainerConfig, line: usize) -> Result<()> {
        if !self.opts.record_parent {
            return Ok(());
        }
        let Some(vols) = cc.volumes.as_ref().filter(|v| !v.is_empty()) else {
            return Ok(());
        };
        let lowers = super::container::lower_dirs(self.b.store, &ctx.state.layers)?;
        for v in vols.keys() {
            let path = dockerignore::clean(v);
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            let file = super::lowers::Lowers(&lowers)
                .is_non_dir(&path)
                .map_err(|e| at(line, fsops::io_at("VOLUME", Path::new(&path))(e)))?;
            if file {
                return Err(invalid(
                    line,
                    format!("cannot mount volume over existing file, file exists {path}"),
                ));
            }
        }
        Ok(())
    }

    fn arg(
        &mut self,
        ctx: &mut StageCtx,
        defs: &[(String, Option<String>)],
        meta: &Args,
        line: usize,
    ) -> Result<String> {
        let mut visible = meta.clone();
        visible.extend(ctx.args.clone());
        let scope = Scope {
            env: &[],
            args: &visible,
        };
        let plat = platform_args(&self.target);
        let mut shown = Vec::new();
        for (k, v) in arg_values(defs, self.escape, &scope, line)? {
            // The history shows the default as written (dockerd's commit string), not the
            // value a `--build-arg` gives.
            shown.push(match &v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
            let v = match self.opts.build_args.get(&k) {
                Some(Some(b)) => Some(b.clone()),
                _ => v.or_else(|| {
                    meta.get(&k)
                        .cloned()
                        .flatten()
                        .or_else(|| plat.get(&k).cloned())
                }),
            };
            self.used_args.insert(k.clone());
            ctx.args.insert(k, v);
        }
        Ok(format!("ARG {}", shown.join(" ")))
    }
}

/// The history text of a metadata step.
fn nop(s: &str) -> String {
    format!("/bin/sh -c #(nop) {s}")
}

fn env_step(cc: &mut ContainerConfig, pairs: &[(String, String)], x: &Words) -> Result<String> {
    let mut env = cc.env.clone().unwrap_or_default();
    let mut shown = Vec::new();
    for (k, v) in x.pairs(pairs, "ENV")? {
        let kv = format!("{k}={v}");
        shown.push(kv.clone());
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(k.as_str()))
        {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    }
    cc.env = Some(env);
    Ok(format!("ENV {}", shown.join(" ")))
}

fn label(cc: &mut ContainerConfig, pairs: &[(String, String)], x: &Words) -> Result<String> {
    let mut labels = cc.labels.clone().unwrap_or_default();
    let mut shown = Vec::new();
    for (k, v) in x.pairs(pairs, "LABEL")? {
        shown.push(format!("{k}={v}"));
        labels.insert(k, v);
    }
    cc.labels = Some(labels);
    Ok(format!("LABEL {}", shown.join(" ")))
}

fn cmd(cc: &mut ContainerConfig, c: &CommandLine, state: &State) -> String {
    let v = c.argv(state.shell());
    let text = format!("CMD {}", serde_json::to_string(&v).unwrap_or_default());
    // An empty list is no command: Go's `omitempty` drops it from the config (`null`).
    cc.cmd = (!v.is_empty()).then_some(v);
    text
}

/// ENTRYPOINT resets a CMD inherited from the base (not one set in this stage).
fn entrypoint(cc: &mut ContainerConfig, c: &CommandLine, ctx: &StageCtx) -> String {
    let v = c.argv(ctx.state.shell());
    let text = format!(
        "ENTRYPOINT {}",
        serde_json::to_string(&v).unwrap_or_default()
    );
    cc.entrypoint = (!v.is_empty()).then_some(v);
    if !ctx.cmd_set {
        cc.cmd = None;
    }
    text
}

fn shell_step(cc: &mut ContainerConfig, v: &[String]) -> String {
    cc.extra.insert("Shell".into(), Value::from(v.to_vec()));
    format!("SHELL {}", serde_json::to_string(v).unwrap_or_default())
}

fn expose(cc: &mut ContainerConfig, ports: &str, x: &Words) -> Result<String> {
    let mut all = cc.exposed_ports.clone().unwrap_or_default();
    // BuildKit's parser sorts the words as written (`EXPOSE 80 443` and `EXPOSE 443 80` are
    // one step, one cache entry); each is then expanded (`$PORTS` may give several).
    let mut raw: Vec<&str> = ports.split_whitespace().collect();
    raw.sort_unstable();
    let mut shown = Vec::new();
    for r in raw {
        for w in x.words(r)? {
            for p in expand_port(&w, x.line)? {
                all.insert(p, Value::Object(Default::default()));
            }
            shown.push(w);
        }
    }
    cc.exposed_ports = Some(all);
    Ok(format!("EXPOSE {}", shown.join(" ")))
}

/// `80`, `53/udp`, `7000-7002`: `port/proto` each.
fn expand_port(w: &str, line: usize) -> Result<Vec<String>> {
    let (p, proto) = match w.split_once('/') {
        Some((p, pr)) => (p, pr.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid(line, format!("invalid proto: {proto}")));
    }
    let (a, b) = p.split_once('-').unwrap_or((p, p));
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| invalid(line, format!("invalid containerPort: {p}")))
    };
    let (a, b) = (port(a)?, port(b)?);
    if b < a {
        return Err(invalid(line, format!("invalid port range: {p}")));
    }
    Ok((a..=b).map(|x| format!("{x}/{proto}")).collect())
}

fn volume(cc: &mut ContainerConfig, v: &Volumes, x: &Words) -> Result<String> {
    let vols = match v {
        Volumes::Json(v) => v.iter().map(|s| x.word(s)).collect::<Result<Vec<_>>>()?,
        Volumes::Words(w) => {
            // dockerd splits the words before expanding each: `VOLUME $EMPTY` is an empty path.
            for raw in w.split_whitespace() {
                if x.word(raw)?.trim().is_empty() {
                    return Err(invalid(
                        x.line,
                        "VOLUME specified can not be an empty string",
                    ));
                }
            }
            x.words(w)?
        }
    };
    let mut m = cc.volumes.clone().unwrap_or_default();
    for v in &vols {
        if v.trim().is_empty() {
            return Err(invalid(
                x.line,
                "VOLUME specified can not be an empty string",
            ));
        }
        m.insert(v.clone(), Value::Object(Default::default()));
    }
    cc.volumes = Some(m);
    Ok(format!(
        "VOLUME {}",
        serde_json::to_string(&vols).unwrap_or_default()
    ))
}

fn user(cc: &mut ContainerConfig, u: &str, x: &Words) -> Result<String> {
    let u = x.word(u)?;
    if u.is_empty() {
        return Err(invalid(x.line, "USER requires an argument"));
    }
    cc.user = Some(u.clone());
    Ok(format!("USER {u}"))
}

fn stop_signal(cc: &mut ContainerConfig, s: &str, x: &Words) -> Result<String> {
    let s = x.word(s)?;
    let ok = s.parse::<u32>().is_ok()
        || s.to_ascii_uppercase()
            .trim_start_matches("SIG")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
    if !ok || s.is_empty() {
        return Err(invalid(x.line, format!("Invalid signal: {s}")));
    }
    cc.stop_signal = Some(s.clone());
    Ok(format!("STOPSIGNAL {s}"))
}

fn onbuild(cc: &mut ContainerConfig, trigger: &str) -> String {
    let mut list: Vec<Value> = cc
        .extra
        .get("OnBuild")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    list.push(Value::from(trigger));
    cc.extra.insert("OnBuild".into(), Value::Array(list));
    format!("ONBUILD {trigger}")
}

fn healthcheck(cc: &mut ContainerConfig, h: &Healthcheck) -> Result<String> {
    let v = serde_json::to_value(h)?;
    let text = format!("HEALTHCHECK {v}");
    cc.extra.insert("Healthcheck".into(), v);
    Ok(text)
}

/// WORKDIR: the directory (relative to the current one) is created, owned by the stage's
/// user, when missing; no layer when it exists.
fn workdir<'f>(cc: &mut ContainerConfig, w: &str, x: &Words) -> Result<(String, FsOp<'f>)> {
    let line = x.line;
    let w = x.word(w)?;
    let cur = cc.working_dir.clone().unwrap_or_default();
    let dir = if w.starts_with('/') {
        w.clone()
    } else {
        format!("{}/{w}", cur.trim_end_matches('/'))
    };
    let dir = format!("/{}", dockerignore::clean(&dir)).replace("/.", "/");
    let dir = if dir == "/" || dir.is_empty() {
        "/".to_string()
    } else {
        dir.trim_end_matches('/').to_string()
    };
    cc.working_dir = Some(dir.clone());
    let owner = cc.user.clone().unwrap_or_default();
    let user = owner.clone();
    let d = dir.clone();
    let files: super::commit::FilesFn<'f> = Box::new(move |root: &Path| {
        let own = if owner.is_empty() {
            None
        } else {
            Some(fsops::resolve_user(root, &owner).map_err(|e| at(line, e))?)
        };
        fsops::mkdir_all(root, &d, own).map_err(|source| {
            at(
                line,
                StepError::Fs {
                    op: format!("WORKDIR {d}"),
                    source,
                },
            )
        })
    });
    let op = FsOp::Mkdir {
        dir: dir.clone(),
        user,
        files,
    };
    Ok((dir, op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn ports() {
        assert_eq!(expand_port("80", 1).unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP", 1).unwrap(), vec!["53/udp"]);
        assert_eq!(expand_port("7-8", 1).unwrap(), vec!["7/tcp", "8/tcp"]);
        assert!(expand_port("9-8", 1).is_err());
        assert!(expand_port("x", 1).is_err());
        assert!(expand_port("80/foo", 1).is_err());
    }

    #[test]
    fn metadata_steps_change_the_config() {
        let args = BTreeMap::from([("V".to_string(), Some("2".to_string()))]);
        let env = vec!["A=1".to_string()];
        let x = Words {
            esc: '\\',
            scope: Scope {
                env: &env,
                args: &args,
            },
            line: 3,
        };
        let mut cc = ContainerConfig {
            env: Some(env.clone()),
            ..Default::default()
        };
        // ENV sees the env before the instruction; a name set again is replaced in place.
        let pairs = vec![("A".into(), "$A$V".into()), ("B".into(), "$A".into())];
        assert_eq!(env_step(&mut cc, &pairs, &x).unwrap(), "ENV A=12 B=1");
        assert_eq!(cc.env, Some(vec!["A=12".to_string(), "B=1".to_string()]));
        assert!(env_step(&mut cc, &[("$NONE".into(), "x".into())], &x)
            .unwrap_err()
            .to_string()
            .contains("line 3: ENV names can not be blank"));
        assert_eq!(
            healthcheck(
                &mut cc,
                &Healthcheck {
                    test: vec!["NONE".into()],
                    ..Default::default()
                }
            )
            .unwrap(),
            r#"HEALTHCHECK {"Test":["NONE"]}"#
        );
        assert_eq!(
            volume(&mut cc, &Volumes::Json(vec!["/v$V".into()]), &x).unwrap(),
            r#"VOLUME ["/v2"]"#
        );
        assert!(volume(&mut cc, &Volumes::Json(vec![" ".into()]), &x).is_err());
        assert_eq!(
            stop_signal(&mut cc, "SIGKILL", &x).unwrap(),
            "STOPSIGNAL SIGKILL"
        );
        assert!(stop_signal(&mut cc, "SIG KILL!", &x).is_err());
        cc.working_dir = Some("/a".into());
        let (dir, _) = workdir(&mut cc, "b/../c/./d/", &x).unwrap();
        assert_eq!(dir, "/a/c/d");
        let (dir, _) = workdir(&mut cc, "/", &x).unwrap();
        assert_eq!(dir, "/");
    }
}
