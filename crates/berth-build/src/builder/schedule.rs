//! Stages: the split of a Dockerfile into stages, `--target`, the dependencies between
//! stages (`FROM stage`, `COPY --from`, `RUN --mount from=`), and their evaluation, each on
//! a thread of its own as soon as the stages it uses are built. Step numbers are fixed per
//! stage in file order; [`Out`] shows the client the output of a sequential build.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Condvar, Mutex};

use super::cache::Pending;
use super::error::{invalid, BuildError, Result};
use super::instructions::{Instruction, Step};
use super::state::{platform_args, Args, Scope, State, PROXY_ARGS};
use super::{steps, BuildOptions, Built, Eval, Event, Sink};
use crate::parser::Dockerfile;
use crate::shell;

#[derive(Debug)]
pub(super) struct Stage {
    /// Its `FROM`.
    pub from: Step,
    pub insts: Vec<Step>,
}

impl Stage {
    fn base(&self) -> &str {
        match &self.from.inst {
            Instruction::From(f) => &f.base,
            _ => "",
        }
    }
}

/// What a build evaluates: the stages the target needs, in file order.
#[derive(Debug)]
pub(super) struct Plan {
    pub stages: Vec<Stage>,
    /// Stage names (lower case) → index.
    pub names: HashMap<String, usize>,
    /// The ARGs before the first FROM.
    pub meta: Args,
    /// Build args declared before the first FROM.
    pub used_args: BTreeSet<String>,
    pub target: usize,
    /// The stages to build, in file order (the target's dependencies and itself).
    pub order: Vec<usize>,
    /// The stages each of `order` uses.
    pub deps: Vec<Vec<usize>>,
}

impl Plan {
    pub fn new(df: &Dockerfile, opts: &BuildOptions) -> Result<Plan> {
        let esc = df.escape;
        let mut meta = Args::new();
        let mut used_args = BTreeSet::new();
        let mut stages: Vec<Stage> = Vec::new();
        let mut names = HashMap::new();
        let plat = platform_args(&super::state::target_platform(opts.platform.as_deref())?);
        for node in &df.nodes {
            let step = Step::parse(node, esc)?;
            match &step.inst {
                Instruction::From(f) => {
                    if let Some(n) = &f.name {
                        if names.contains_key(n) {
                            return Err(invalid(step.line, format!("duplicate stage name {n:?}")));
                        }
                        names.insert(n.clone(), stages.len());
                    }
                    stages.push(Stage {
                        from: step,
                        insts: Vec::new(),
                    });
                }
                _ if !stages.is_empty() => {
                    if let Some(s) = stages.last_mut() {
                        s.insts.push(step);
                    }
                }
                Instruction::Arg(defs) => {
                    let scope = Scope {
                        env: &[],
                        args: &meta,
                    };
                    for (k, v) in steps::arg_values(defs, esc, &scope, step.line)? {
                        let v = match opts.build_args.get(&k) {
                            Some(Some(b)) => Some(b.clone()),
                            _ => v.or_else(|| plat.get(&k).cloned()),
                        };
                        used_args.insert(k.clone());
                        meta.insert(k, v);
                    }
                }
                _ => return Err(invalid(
                    step.line,
                    "no build stage in current context (the first instruction must be FROM, or ARG before FROM)",
                )),
            }
        }
        if stages.is_empty() {
            return Err(BuildError::Invalid(
                "the Dockerfile has no FROM instruction (file with no instructions)".into(),
            ));
        }
        let target = match opts.target.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => *names.get(&t.to_ascii_lowercase()).ok_or_else(|| {
                // dockerd 28's and BuildKit's words.
                BuildError::Invalid(format!("target stage {t:?} could not be found"))
            })?,
            None => stages.len() - 1,
        };
        if opts.classic_stages {
            // dockerd's classic builder: each `--label` is a LABEL step of the target stage,
            // by key, its value taken as is (`Step N/M : LABEL key=value`, cached, committed).
            let st = &mut stages[target];
            let line = st.insts.last().unwrap_or(&st.from).line;
            for (k, v) in &opts.labels {
                st.insts.push(Step {
                    line,
                    original: format!("LABEL {k}={v}"),
                    inst: Instruction::Label(vec![(literal_word(k), literal_word(v))]),
                });
            }
        }
        // Which stages the target needs.
        let mut all_deps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut todo = vec![target];
        if opts.classic_stages {
            todo.extend(0..target);
        }
        while let Some(i) = todo.pop() {
            if all_deps.contains_key(&i) {
                continue;
            }
            let d = deps(&stages, &names, i, &meta, esc)?;
            todo.extend(&d);
            all_deps.insert(i, d);
        }
        let (order, deps) = all_deps.into_iter().unzip();
        Ok(Plan {
            stages,
            names,
            meta,
            used_args,
            target,
            order,
            deps,
        })
    }

    /// The number of steps the client sees (`Step N/total`).
    pub fn total_steps(&self) -> usize {
        self.order
            .iter()
            .map(|&i| self.stages[i].insts.len() + 1)
            .sum()
    }
}

/// The stages stage `i` uses.
fn deps(
    stages: &[Stage],
    names: &HashMap<String, usize>,
    i: usize,
    meta: &Args,
    esc: char,
) -> Result<Vec<usize>> {
    let scope = Scope {
        env: &[],
        args: meta,
    };
    let mut out = Vec::new();
    let base = base_image_name(&stages[i], &scope, esc)?;
    out.extend(stage_ref(names, &base, i));
    for step in &stages[i].insts {
        let refs: Vec<String> = match &step.inst {
            Instruction::Copy(c) => c
                .from
                .iter()
                .map(|f| shell::expand_word(f, esc, &scope).unwrap_or_else(|_| f.clone()))
                .collect(),
            Instruction::Run(r) => r.mounts.iter().filter_map(|m| m.from.clone()).collect(),
            _ => Vec::new(),
        };
        out.extend(refs.iter().filter_map(|r| stage_ref(names, r, i)));
    }
    Ok(out)
}

/// A reference to an earlier stage by name or index.
pub(super) fn stage_ref(
    names: &HashMap<String, usize>,
    name: &str,
    current: usize,
) -> Option<usize> {
    if let Some(&j) = names.get(&name.to_ascii_lowercase()) {
        if j < current {
            return Some(j);
        }
    }
    match name.parse::<usize>() {
        Ok(j) if j < current => Some(j),
        _ => None,
    }
}

/// A stage's base (an image or a stage), expanded with the ARGs before the first FROM.
pub(super) fn base_image_name(st: &Stage, scope: &Scope<'_>, esc: char) -> Result<String> {
    let line = st.from.line;
    let raw = st.base();
    let name = shell::expand_word(raw, esc, scope).map_err(|e| super::error::at(line, e))?;
    if name.is_empty() {
        return Err(invalid(
            line,
            format!("base name ({raw}) should not be blank"),
        ));
    }
    Ok(name)
}

/// `s` as a Dockerfile word that expands to itself: single-quoted (nothing expands inside),
/// a `'` in it closed, double-quoted and reopened (no escape character involved).
fn literal_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

impl Eval<'_, '_, '_> {
    /// Builds the plan's stages, then the image of its target.
    pub(super) fn build(&mut self, plan: &Plan) -> Result<Built> {
        let target = &plan.stages[plan.target];
        if self.opts.classic_stages
            && target.insts.is_empty()
            && self.opts.labels.is_empty()
            && target.base().eq_ignore_ascii_case("scratch")
        {
            // dockerd's classic builder commits nothing for a lone `FROM scratch` (`--label`
            // flags are a LABEL step of their own there).
            return Err(BuildError::Invalid(
                "No image was generated. Is your Dockerfile empty?".into(),
            ));
        }
        self.build_stages(plan)?;
        if self.opts.classic_stages {
            for &i in plan.order.iter().filter(|&&i| i != plan.target) {
                let st = self.stage_states[i]
                    .clone()
                    .ok_or(BuildError::Internal("stage not built"))?;
                self.register_stage(&st)?;
            }
        }
        let mut fin = self.stage_states[plan.target]
            .clone()
            .ok_or(BuildError::Internal("target stage not built"))?;
        // Build args that nothing declared.
        let unused: Vec<&str> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .map(String::as_str)
            .collect();
        if !unused.is_empty() {
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                unused.join(" ")
            ))?;
        }
        // (The classic builder's labels were steps of the target stage.)
        if !self.opts.labels.is_empty() && !self.opts.classic_stages {
            let mut config = fin.config.clone();
            let mut cc = fin.cc();
            let labels = cc.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
            config.config = Some(cc);
            let base = fin.base.clone();
            fin = State::new(config, fin.layers)?.0;
            fin.base = base;
        }
        self.register(&fin)
    }

    /// Builds the needed stages, each as soon as the stages it uses are built: independent
    /// stages run at once, on threads of their own.
    fn build_stages(&mut self, plan: &Plan) -> Result<()> {
        let order = &plan.order;
        let mut first_step: Vec<usize> = Vec::new();
        let mut step = self.step;
        for &i in order {
            first_step.push(step);
            step += plan.stages[i].insts.len() + 1;
        }
        // Per stage: None while pending, then Some(Some(state)) or Some(None) (failed).
        let results: Mutex<Vec<Option<Option<State>>>> = Mutex::new(vec![None; plan.stages.len()]);
        let cv = Condvar::new();
        let out = Out::new(&mut *self.sink, order.len());
        let (b, opts, escape, total) = (self.b, self.opts, self.escape, self.total);
        let (names, sources) = (self.stage_names, self.cache_sources);
        let target = &self.target;
        let (reaper, memo) = (self.reaper, self.memo);
        let build_one = |pos: usize| -> (Result<State>, BTreeSet<String>, Pending) {
            let i = order[pos];
            let deps = &plan.deps[pos];
            let lock = || results.lock().unwrap_or_else(|p| p.into_inner());
            let mut g = lock();
            while deps.iter().any(|&j| g[j].is_none()) {
                g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            if deps.iter().any(|&j| matches!(g[j], Some(None))) {
                drop(g);
                out.finish(pos, false);
                lock()[i] = Some(None);
                cv.notify_all();
                return (
                    Err(BuildError::Cancelled),
                    BTreeSet::new(),
                    Pending::default(),
                );
            }
            let states: Vec<Option<State>> = g.iter().map(|r| r.clone().flatten()).collect();
            drop(g);
            let mut sink = |ev: Event| out.emit(pos, ev);
            let mut w = Eval {
                b,
                opts,
                escape,
                sink: &mut sink,
                step: first_step[pos],
                total,
                used_args: BTreeSet::new(),
                stage_states: states,
                stage_names: names,
                cache_sources: sources,
                pending: Pending::default(),
                memo,
                target: target.clone(),
                runnable: HashMap::new(),
                reaper,
            };
            let r = w.build_stage(i, &plan.stages[i], &plan.meta);
            out.finish(pos, r.is_ok());
            lock()[i] = Some(r.as_ref().ok().cloned());
            cv.notify_all();
            (r, w.used_args, w.pending)
        };
        let outcomes: Vec<(Result<State>, BTreeSet<String>, Pending)> = if order.len() == 1 {
            vec![build_one(0)]
        } else {
            std::thread::scope(|sc| {
                let hs: Vec<_> = (0..order.len())
                    .map(|pos| {
                        let f = &build_one;
                        sc.spawn(move || f(pos))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (
                                Err(BuildError::Panicked),
                                BTreeSet::new(),
                                Pending::default(),
                            )
                        })
                    })
                    .collect()
            })
        };
        let mut first_err: Option<BuildError> = None;
        for (pos, (r, used, pending)) in outcomes.into_iter().enumerate() {
            self.used_args.extend(used);
            self.pending.extend(pending);
            match r {
                Ok(s) => self.stage_states[order[pos]] = Some(s),
                Err(BuildError::Cancelled) => {
                    first_err.get_or_insert(BuildError::Cancelled);
                }
                Err(e) => {
                    if matches!(first_err, None | Some(BuildError::Cancelled)) {
                        first_err = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            out.flush_all();
            return Err(e);
        }
        self.step = step;
        Ok(())
    }
}

/// The output of stages that run at once. The first unfinished stage in file order streams
/// live; the others are buffered and flushed, in order, as the ones before them finish: the
/// client sees the sequence a sequential build would print.
pub(super) struct Out<'o, 's> {
    inner: Mutex<OutInner<'o, 's>>,
}

struct OutInner<'o, 's> {
    sink: &'o mut Sink<'s>,
    /// The position (in build order) streaming live.
    cur: usize,
    bufs: Vec<Vec<Event>>,
    done: Vec<bool>,
    /// The client went away.
    gone: bool,
    /// A stage failed: the others stop at their next message.
    failed: bool,
}

impl<'o, 's> Out<'o, 's> {
    pub fn new(sink: &'o mut Sink<'s>, n: usize) -> Self {
        Out {
            inner: Mutex::new(OutInner {
                sink,
                cur: 0,
                bufs: vec![Vec::new(); n],
                done: vec![false; n],
                gone: false,
                failed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutInner<'o, 's>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message of the stage at `pos`; false: stop (client gone or another stage failed).
    pub fn emit(&self, pos: usize, ev: Event) -> bool {
        let mut g = self.lock();
        if g.gone || g.failed {
            return false;
        }
        if pos == g.cur {
            if !(g.sink)(ev) {
                g.gone = true;
                return false;
            }
        } else {
            g.bufs[pos].push(ev);
        }
        true
    }

    pub fn finish(&self, pos: usize, ok: bool) {
        let mut g = self.lock();
        g.done[pos] = true;
        if !ok {
            g.failed = true;
        }
        let n = g.done.len();
        while g.cur < n && g.done[g.cur] {
            g.cur += 1;
            if g.cur < n {
                let cur = g.cur;
                g.send(cur);
            }
        }
    }

    /// After a failure: everything still buffered, in order (the failing step's output).
    pub fn flush_all(&self) {
        let mut g = self.lock();
        for i in g.cur..g.bufs.len() {
            g.send(i);
        }
    }
}

impl OutInner<'_, '_> {
    /// Sends what stage `pos` buffered.
    fn send(&mut self, pos: usize) {
        for ev in std::mem::take(&mut self.bufs[pos]) {
            if !self.gone && !(self.sink)(ev) {
                self.gone = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` makes an [`Out`] of `n` stages send.
    fn sent(n: usize, f: impl FnOnce(&Out)) -> Vec<String> {
        let mut got: Vec<String> = Vec::new();
        let mut sink = |e: Event| {
            if let Event::Stream(s) = e {
                got.push(s);
            }
            true
        };
        f(&Out::new(&mut sink, n));
        got
    }

    #[test]
    fn parallel_output_reads_in_stage_order() {
        let got = sent(3, |out| {
            assert!(out.emit(1, Event::Stream("b1".into())));
            assert!(out.emit(0, Event::Stream("a1".into())));
            assert!(out.emit(2, Event::Stream("c1".into())));
            out.finish(1, true);
            assert!(out.emit(0, Event::Stream("a2".into())));
            // Stage 0 done: 1 (done) flushes, 2 becomes live.
            out.finish(0, true);
            assert!(out.emit(2, Event::Stream("c2".into())));
            out.finish(2, true);
        });
        assert_eq!(got, vec!["a1", "a2", "b1", "c1", "c2"]);
        // A failure stops the others and flush_all shows what was buffered.
        let got = sent(2, |out| {
            assert!(out.emit(1, Event::Stream("b-fails".into())));
            out.finish(1, false);
            assert!(!out.emit(0, Event::Stream("a-stopped".into())));
            out.finish(0, false);
            out.flush_all();
        });
        assert_eq!(got, vec!["b-fails"]);
    }

    fn plan(df: &str, target: Option<&str>) -> Result<Plan> {
        let opts = BuildOptions {
            target: target.map(str::to_string),
            ..Default::default()
        };
        Plan::new(&crate::parser::parse(df).unwrap(), &opts)
    }

    #[test]
    fn plans_follow_the_target_s_dependencies() {
        let df = "ARG BASE=busybox\nFROM $BASE AS a\nFROM busybox AS b\nRUN --mount=from=a,target=/a true\nFROM busybox AS c\nFROM b\nCOPY --from=c /x /y\n";
        let p = plan(df, None).unwrap();
        assert_eq!(p.order, vec![0, 1, 2, 3]);
        assert_eq!(p.deps, vec![vec![], vec![0], vec![], vec![1, 2]]);
        assert_eq!(p.total_steps(), 6);
        assert_eq!(p.meta.get("BASE"), Some(&Some("busybox".into())));
        let p = plan(df, Some("B")).unwrap();
        assert_eq!(p.order, vec![0, 1]);
        assert_eq!(p.total_steps(), 3);
        let p = plan(df, Some("c")).unwrap();
        assert_eq!(p.order, vec![2]);
        assert!(plan(df, Some("nope"))
            .unwrap_err()
            .to_string()
            .contains(r#"target stage "nope" could not be found"#));
        assert!(plan("FROM a AS x\nFROM b AS X\n", None)
            .unwrap_err()
            .to_string()
            .contains("duplicate stage name"));
        assert!(plan("RUN true\n", None)
            .unwrap_err()
            .to_string()
            .starts_with("Dockerfile line 1: no build stage"));
        assert!(plan("ARG X\n", None).is_err());
        assert!(plan("ARG E\nFROM ${E}\n", None)
            .unwrap_err()
            .to_string()
            .contains("base name (${E}) should not be blank"));
    }
}
