//! The tuner bz drives: ask (a trial with sampled parameters), report (an intermediate objective value;
//! answers whether to prune), tell (the final state and value). Everything goes through the storage, so
//! several `bz tune` workers — and Python Optuna workers — share one study.

use crate::cmaes::CmaEsSampler;
use crate::nsga2::{Nsga2Sampler, GENERATION_KEY, PARENT_KEY_PREFIX};
use crate::pareto::{pareto_front, penalty, CONSTRAINTS_KEY};
use crate::pruners::Pruner;
use crate::space::{Conditions, Direction, Distribution, FrozenTrial, Space, State};
use crate::storage::Storage;
use crate::tpe::{sample_random, TpeSampler};
use bz_plugin_api::{log, Level};
use rand::SeedableRng;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A proposed trial: its number and its parameters as the config takes them.
pub type Asked = (u64, Map<String, Value>);

#[derive(Debug, Clone)]
pub enum Sampler {
    Tpe(TpeSampler),
    CmaEs(CmaEsSampler),
    Random { seed: u64 },
    Grid,
    Nsga2(Nsga2Sampler),
}

pub struct StudyTuner {
    /// Behind a lock because `summary` takes `&self` and a database connection needs `&mut`.
    storage: Mutex<Storage>,
    study: String,
    direction: Direction,
    /// One per objective (`direction` is the first).
    directions: Vec<Direction>,
    space: Space,
    conditions: Conditions,
    sampler: Sampler,
    pruner: Pruner,
    budget: Option<u64>,
    /// Optuna trial number → trial_id, for this worker's running trials (the heartbeat keeps them alive).
    running: Arc<Mutex<HashMap<u64, i64>>>,
    grace: Duration,
    stop: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StudyTuner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

/// The grid's points in a fixed order: every combination of every parameter's values.
fn grid_values(d: &Distribution) -> Option<Vec<f64>> {
    match d {
        Distribution::Categorical { choices } => Some((0..choices.len()).map(|i| i as f64).collect()),
        Distribution::Int { low, high, step, .. } => Some((*low..=*high).step_by((*step).max(1) as usize).map(|v| v as f64).collect()),
        Distribution::Float { low, high, step: Some(s), .. } => {
            let n = ((high - low) / s + 1e-9).floor() as usize;
            Some((0..=n).map(|i| low + s * i as f64).collect())
        }
        Distribution::Float { step: None, .. } => None,
    }
}

impl StudyTuner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(storage: Storage, space: Space, sampler: Sampler, pruner: Pruner, budget: Option<u64>, heartbeat: Duration) -> Result<StudyTuner, String> {
        if matches!(sampler, Sampler::Grid) {
            for (name, d) in &space {
                if grid_values(d).is_none() {
                    return Err(format!("the grid sampler needs a finite grid: give tune.params.\"{name}\" a `step`"));
                }
            }
        }
        let running: Arc<Mutex<HashMap<u64, i64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        // Heartbeats from a thread with its own connection: a trial's training can take minutes between reports.
        let (r2, s2) = (running.clone(), stop.clone());
        let study = storage.study.clone();
        let directions = storage.directions.clone();
        let url = storage.url().to_string();
        let handle = std::thread::Builder::new()
            .name("bz-optuna-heartbeat".into())
            .spawn(move || {
                // Its own connection, opened again after any error: a lost connection must not silently stop the
                // heartbeats, or another worker fails this worker's live trials as stale.
                let mut hb: Option<Storage> = None;
                let mut failing = false;
                let tick = Duration::from_millis(100);
                let mut since = heartbeat;
                while !s2.load(Ordering::SeqCst) {
                    std::thread::sleep(tick);
                    since += tick;
                    if since < heartbeat {
                        continue;
                    }
                    since = Duration::ZERO;
                    let ids: Vec<i64> = r2.lock().map(|m| m.values().copied().collect()).unwrap_or_default();
                    let beat = |hb: &mut Option<Storage>| -> Result<(), String> {
                        let st = match hb {
                            Some(st) => st,
                            None => hb.insert(Storage::open_multi(&url, &study, &directions, true)?),
                        };
                        ids.iter().try_for_each(|id| st.heartbeat(*id))
                    };
                    match beat(&mut hb) {
                        Ok(()) if failing => {
                            log!(Level::Info, "heartbeats recorded again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if !failing {
                                log!(Level::Warn, "cannot record heartbeats ({e}); retrying every {} s", heartbeat.as_secs_f64());
                            }
                            failing = true;
                            hb = None;
                        }
                    }
                }
            })
            .ok();
        let (study, direction, directions) = (storage.study.clone(), storage.direction, storage.directions.clone());
        Ok(StudyTuner {
            storage: Mutex::new(storage),
            study,
            direction,
            directions,
            space,
            conditions: Conditions::default(),
            sampler,
            pruner,
            budget,
            running,
            grace: heartbeat * 2 + Duration::from_secs(1),
            stop,
            heartbeat: handle,
        })
    }

    /// Searches the parameters `conditions` guard only where their conditions hold; TPE then samples the
    /// group-decomposed space (Optuna's `group=True`), which a conditional space needs. Grid search refuses them.
    pub fn with_conditions(mut self, conditions: Conditions) -> Result<StudyTuner, String> {
        if conditions.is_empty() {
            return Ok(self);
        }
        match &mut self.sampler {
            Sampler::Grid => return Err("the grid sampler cannot search conditional parameters (`when`): use sampler = \"tpe\" or \"random\"".into()),
            // As in Optuna, `group` implies the multivariate TPE, with several objectives too.
            Sampler::Tpe(tpe) => {
                tpe.group = true;
                tpe.multivariate = true;
            }
            _ => {}
        }
        self.conditions = conditions;
        Ok(self)
    }

    fn st(&self) -> Result<MutexGuard<'_, Storage>, String> {
        self.storage.lock().map_err(|e| e.to_string())
    }

    /// The next trial: its number and parameters (external values), or `None` when the study is done.
    pub fn ask(&mut self) -> Result<Option<Asked>, String> {
        self.st()?.fail_stale(self.grace)?;
        let popped = self.st()?.pop_waiting(self.budget)?;
        let (id, number, fixed) = match popped {
            Some(w) => w,
            None => {
                if let Sampler::Grid = self.sampler {
                    if self.next_grid_point(&self.st()?.trials()?).is_none() {
                        return Ok(None);
                    }
                }
                match self.st()?.create_trial(self.budget)? {
                    Some((id, number)) => (id, number, Map::new()),
                    None => return Ok(None),
                }
            }
        };
        self.running.lock().map_err(|e| e.to_string())?.insert(number, id);
        let trials: Vec<FrozenTrial> = self.st()?.trials()?.into_iter().filter(|t| t.number != number).collect();
        let mut internal: BTreeMap<String, f64> = BTreeMap::new();
        for (name, d) in &self.space {
            if let Some(v) = fixed.get(name).and_then(|v| d.internal(v)) {
                internal.insert(name.clone(), v);
            }
        }
        let missing: Space = self.space.iter().filter(|(n, _)| !internal.contains_key(n)).cloned().collect();
        if !missing.is_empty() {
            let sampled = match &self.sampler {
                Sampler::Tpe(tpe) => tpe.sample(&missing, &trials, self.direction, number),
                Sampler::CmaEs(cma) => cma.sample(&missing, &trials, self.direction, number),
                Sampler::Random { seed } => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ number);
                    missing.iter().map(|(n, d)| (n.clone(), sample_random(d, &mut rng))).collect()
                }
                Sampler::Grid => self.next_grid_point(&trials).unwrap_or_default(),
                Sampler::Nsga2(ga) => self.sample_nsga2(ga, &missing, &trials, id, number)?,
            };
            internal.extend(sampled);
        }
        self.conditions.retain_active(&self.space, &mut internal);
        let mut params = Map::new();
        for (name, d) in &self.space {
            let Some(v) = internal.get(name).copied() else { continue };
            self.st()?.set_param(id, name, v, d)?;
            params.insert(name.clone(), d.external(v));
        }
        Ok(Some((number, params)))
    }

    /// NSGA-II's draw for trial `number` (id `id`): its generation recorded as Optuna does, then a child of that
    /// generation's parents.
    fn sample_nsga2(&self, ga: &Nsga2Sampler, space: &Space, trials: &[FrozenTrial], id: i64, number: u64) -> Result<BTreeMap<String, f64>, String> {
        let mut st = self.st()?;
        let generations = st.trial_attrs(GENERATION_KEY)?;
        let ids = st.trial_ids()?;
        let generation_of = |n: u64| ids.get(&n).and_then(|i| generations.get(i)).and_then(Value::as_i64);
        let complete: Vec<&FrozenTrial> = trials.iter().filter(|t| t.state == State::Complete).collect();
        let generation = ga.generation(complete.iter().map(|t| generation_of(t.number).unwrap_or(-1)));
        st.set_trial_system_attr(id, GENERATION_KEY, &json!(generation))?;
        // Generations without cached parents are selected oldest first, each from the one before.
        let first_uncached = (1..=generation).rev().take_while(|g| st.study_attr(&format!("{PARENT_KEY_PREFIX}{g}")).ok().flatten().is_none()).last();
        for g in first_uncached.unwrap_or(generation + 1)..=generation {
            let prev: Vec<u64> = self.cached_parents(&mut st, g - 1, &ids)?;
            let pool: Vec<&FrozenTrial> = complete.iter().copied().filter(|t| generation_of(t.number) == Some(g - 1) || prev.contains(&t.number)).collect();
            let elite: Vec<i64> = ga.select_elite(&pool, &self.directions).iter().filter_map(|t| ids.get(&t.number).copied()).collect();
            st.set_study_system_attr(&format!("{PARENT_KEY_PREFIX}{g}"), &json!(elite))?;
        }
        let parents = self.cached_parents(&mut st, generation, &ids)?;
        let parent_trials: Vec<&FrozenTrial> = complete.iter().copied().filter(|t| parents.contains(&t.number)).collect();
        Ok(ga.sample(space, &parent_trials, &self.directions, number))
    }

    /// The trial numbers of generation `g`'s cached parents (none for generation 0 or when not cached).
    fn cached_parents(&self, st: &mut Storage, g: i64, ids: &BTreeMap<u64, i64>) -> Result<Vec<u64>, String> {
        if g <= 0 {
            return Ok(Vec::new());
        }
        let cached: Vec<i64> = st.study_attr(&format!("{PARENT_KEY_PREFIX}{g}"))?.and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default();
        Ok(ids.iter().filter(|(_, id)| cached.contains(id)).map(|(n, _)| *n).collect())
    }

    /// The first grid point no trial (running or finished) has taken yet.
    fn next_grid_point(&self, trials: &[FrozenTrial]) -> Option<BTreeMap<String, f64>> {
        let axes: Vec<(String, Vec<f64>)> = self.space.iter().filter_map(|(n, d)| grid_values(d).map(|v| (n.clone(), v))).collect();
        let total: usize = axes.iter().map(|(_, v)| v.len().max(1)).product();
        let taken =
            |point: &BTreeMap<String, f64>| trials.iter().any(|t| point.iter().all(|(n, v)| t.params.get(n).is_some_and(|(x, _)| (x - v).abs() < 1e-9)));
        for mut i in 0..total.min(1_000_000) {
            let mut point = BTreeMap::new();
            for (name, values) in &axes {
                point.insert(name.clone(), values[i % values.len()]);
                i /= values.len();
            }
            if !taken(&point) {
                return Some(point);
            }
        }
        None
    }

    fn id(&self, number: u64) -> Result<i64, String> {
        if let Some(id) = self.running.lock().map_err(|e| e.to_string())?.get(&number) {
            return Ok(*id);
        }
        self.st()?.trial_id(number)?.ok_or_else(|| format!("trial {number} is not in the study"))
    }

    pub fn report(&mut self, number: u64, step: u64, value: f64) -> Result<bool, String> {
        if self.directions.len() > 1 {
            return Err("intermediate values are not supported with several objectives (as in Optuna)".into());
        }
        let id = self.id(number)?;
        self.st()?.report(id, step, value)?;
        if self.pruner == Pruner::None {
            return Ok(false);
        }
        let trials = self.st()?.trials()?;
        let Some(me) = trials.iter().find(|t| t.number == number).cloned() else { return Ok(false) };
        let rungs = self.st()?.rungs()?;
        let d = self.pruner.decide(&self.study, &me, &trials, &rungs, self.direction);
        for (k, v) in &d.attrs {
            self.st()?.set_trial_system_attr(id, k, &json!(v))?;
        }
        Ok(d.prune)
    }

    pub fn tell(&mut self, number: u64, state: State, value: Option<f64>) -> Result<(), String> {
        self.tell_outcome(number, state, &value.into_iter().collect::<Vec<_>>(), &[])
    }

    /// How trial `number` ended: one value per objective, and its constraint values (`c <= 0` holds), stored as
    /// Optuna's `constraints` system attribute for COMPLETE and PRUNED trials before the state, as Optuna does.
    pub fn tell_outcome(&mut self, number: u64, state: State, values: &[f64], constraints: &[f64]) -> Result<(), String> {
        if !values.is_empty() && values.len() != self.directions.len() {
            return Err(format!("trial {number} has {} values; the study has {} objectives", values.len(), self.directions.len()));
        }
        let id = self.id(number)?;
        let value = values.first().copied();
        if matches!(state, State::Complete | State::Pruned) && !constraints.is_empty() {
            if constraints.iter().any(|c| c.is_nan()) {
                return Err(format!("trial {number}: constraint values cannot be NaN"));
            }
            self.st()?.set_trial_system_attr(id, CONSTRAINTS_KEY, &json!(constraints))?;
        }
        let (state, value) = match state {
            // Optuna fails a trial whose objective is NaN.
            State::Complete if value.is_none_or(f64::is_nan) => (State::Fail, None),
            // A pruned trial's value is its last intermediate value, as Optuna records it.
            State::Pruned => {
                let last = self.st()?.trials()?.into_iter().find(|t| t.number == number).and_then(|t| t.intermediate.values().next_back().copied());
                (State::Pruned, last.or(value))
            }
            s => (s, value),
        };
        let values: Vec<f64> = match (state, values.len()) {
            (State::Complete, n) if n > 1 && values.iter().any(|v| v.is_nan()) => return self.tell_outcome(number, State::Fail, &[], &[]),
            (State::Complete, n) if n > 1 => values.to_vec(),
            _ => value.into_iter().collect(),
        };
        let finished = self.st()?.finish_values(id, state, &values)?;
        self.running.lock().map_err(|e| e.to_string())?.remove(&number);
        if !finished {
            return Err(format!(
                "trial {number} had already been failed as stale (no heartbeat for over {} s), so its result is not in the study",
                self.grace.as_secs()
            ));
        }
        Ok(())
    }

    /// The study's counts and its best trial (`best`, feasible only when there are constraints), and with
    /// several objectives its Pareto front (`best_trials`, Optuna's `study.best_trials`, in number order).
    pub fn summary(&self) -> Value {
        let trials = self.st().ok().and_then(|mut s| s.trials().ok()).unwrap_or_default();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &trials {
            *counts.entry(t.state.name()).or_default() += 1;
        }
        let params = |t: &FrozenTrial| -> Map<String, Value> { t.params.iter().map(|(n, (x, d))| (n.clone(), d.external(*x))).collect() };
        let directions: Vec<&str> = self.directions.iter().map(|d| if *d == Direction::Minimize { "minimize" } else { "maximize" }).collect();
        if self.directions.len() > 1 {
            let front: Vec<Value> = pareto_front(&trials, &self.directions)
                .iter()
                .map(|t| json!({ "number": t.number, "values": t.values, "params": params(t), "constraints": t.constraints }))
                .collect();
            return json!({ "study": self.study, "counts": counts, "directions": directions, "best_trials": front, "trials": trials.len() });
        }
        let better = |a: f64, b: f64| match self.direction {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        };
        let constrained = trials.iter().any(|t| !t.constraints.is_empty());
        let feasible = |t: &FrozenTrial| !constrained || (!t.constraints.is_empty() && penalty(t) <= 0.0);
        let best = trials.iter().filter(|t| t.state == State::Complete && feasible(t)).filter_map(|t| t.value.filter(|v| !v.is_nan()).map(|v| (t, v))).fold(
            None::<(&FrozenTrial, f64)>,
            |acc, (t, v)| match acc {
                Some((_, bv)) if !better(v, bv) => acc,
                _ => Some((t, v)),
            },
        );
        let best = best.map(|(t, v)| json!({ "number": t.number, "value": v, "params": params(t), "constraints": t.constraints }));
        json!({ "study": self.study, "counts": counts, "directions": directions, "best": best, "trials": trials.len() })
    }

    pub fn enqueue(&mut self, fixed: &Map<String, Value>) -> Result<bool, String> {
        self.st()?.enqueue(fixed)
    }
}

/// `{"type": "float", "low": …}` entries as the host sends them (`[tune.params]`), in config order.
pub fn parse_space(v: &Value) -> Result<Space, String> {
    let mut out = Vec::new();
    for p in v.as_array().ok_or("the search space must be a list")? {
        let name = p["name"].as_str().ok_or("a parameter without a name")?.to_string();
        let bad = |why: &str| format!("tune.params.\"{name}\": {why}");
        let num = |k: &str| p[k].as_f64();
        let log = p["log"].as_bool().unwrap_or(false);
        let d = match p["type"].as_str() {
            Some("float") => {
                let (low, high) = (num("low").ok_or_else(|| bad("`low` is required"))?, num("high").ok_or_else(|| bad("`high` is required"))?);
                let step = num("step");
                if low > high {
                    return Err(bad("`low` must not exceed `high`"));
                }
                if log && step.is_some() {
                    return Err(bad("`log` and `step` cannot be used together"));
                }
                if log && low <= 0.0 {
                    return Err(bad("`log = true` needs `low` > 0"));
                }
                if step.is_some_and(|s| s <= 0.0) {
                    return Err(bad("`step` must be > 0"));
                }
                // Optuna lowers `high` to the last step that fits.
                let high = match step {
                    Some(s) => low + ((high - low) / s + 1e-9).floor() * s,
                    None => high,
                };
                Distribution::Float { low, high, log, step }
            }
            Some("int") => {
                let (low, high) =
                    (p["low"].as_i64().ok_or_else(|| bad("`low` must be an integer"))?, p["high"].as_i64().ok_or_else(|| bad("`high` must be an integer"))?);
                let step = p["step"].as_i64().unwrap_or(1);
                if low > high {
                    return Err(bad("`low` must not exceed `high`"));
                }
                if step < 1 {
                    return Err(bad("`step` must be ≥ 1"));
                }
                if log && (step != 1 || low < 1) {
                    return Err(bad("`log = true` needs `step = 1` and `low` ≥ 1"));
                }
                Distribution::Int { low, high: low + (high - low) / step * step, log, step }
            }
            Some("categorical") => {
                let choices = p["choices"].as_array().filter(|c| !c.is_empty()).ok_or_else(|| bad("`choices` must be a non-empty list"))?;
                Distribution::Categorical { choices: choices.clone() }
            }
            other => return Err(bad(&format!("type {other:?} is not float, int or categorical"))),
        };
        out.push((name, d));
    }
    Ok(out)
}
