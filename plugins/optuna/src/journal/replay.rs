//! The study state a journal describes, rebuilt the way Optuna's `JournalStorageReplayResult` rebuilds it, so
//! that bz and Python workers reading one journal agree on every id, number and state.
//!
//! Ids are implicit: a study's id is the count of studies created before it (a CREATE_STUDY with a name already
//! in use is ignored), a trial's id the count of trials created before it in any study, its number the count
//! before it in its study. Operations on unknown studies or trials, on finished trials, or re-setting a RUNNING
//! trial to RUNNING (the loser of two workers popping one WAITING trial) are ignored; when the operation is this
//! worker's own, Optuna raises instead, which [`Replay::rejected`] records.

use super::file::float;
use crate::space::{Direction, Distribution, State};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

pub const CREATE_STUDY: u64 = 0;
pub const DELETE_STUDY: u64 = 1;
pub const SET_STUDY_USER_ATTR: u64 = 2;
pub const SET_STUDY_SYSTEM_ATTR: u64 = 3;
pub const CREATE_TRIAL: u64 = 4;
pub const SET_TRIAL_PARAM: u64 = 5;
pub const SET_TRIAL_STATE_VALUES: u64 = 6;
pub const SET_TRIAL_INTERMEDIATE_VALUE: u64 = 7;
pub const SET_TRIAL_USER_ATTR: u64 = 8;
pub const SET_TRIAL_SYSTEM_ATTR: u64 = 9;
/// Rustuna's; Optuna skips it.
pub const DISCARD_TRIALS: u64 = 10;

#[derive(Debug, Clone)]
pub struct Study {
    pub name: String,
    pub directions: Vec<Direction>,
    pub user_attrs: Map<String, Value>,
    pub system_attrs: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Trial {
    pub study: usize,
    pub number: u64,
    pub state: State,
    /// One per objective once finished (a pruned trial's last intermediate value).
    pub values: Option<Vec<f64>>,
    pub params: BTreeMap<String, (f64, Distribution)>,
    pub intermediate: BTreeMap<u64, f64>,
    pub user_attrs: Map<String, Value>,
    pub system_attrs: Map<String, Value>,
}

pub struct Replay {
    worker_id: String,
    /// Live studies by id (a deleted one is gone, its id not reused).
    pub studies: BTreeMap<usize, Study>,
    next_study_id: usize,
    /// Every trial by id, a deleted study's included, as Optuna keeps them.
    pub trials: Vec<Trial>,
    /// Trial ids per study id, in number order.
    pub study_trials: HashMap<usize, Vec<usize>>,
    /// The trial this worker last created or popped into RUNNING.
    pub owned: Option<usize>,
    pub last_created: Option<usize>,
    /// Why this worker's latest operation did not apply (where Optuna raises), until taken.
    pub rejected: Option<String>,
}

fn state(code: u64) -> Option<State> {
    Some(match code {
        0 => State::Running,
        1 => State::Complete,
        2 => State::Pruned,
        3 => State::Fail,
        4 => State::Waiting,
        _ => return None,
    })
}

pub fn state_code(s: State) -> u64 {
    match s {
        State::Running => 0,
        State::Complete => 1,
        State::Pruned => 2,
        State::Fail => 3,
        State::Waiting => 4,
    }
}

pub fn direction_code(d: Direction) -> u64 {
    match d {
        Direction::Minimize => 1,
        Direction::Maximize => 2,
    }
}

fn finished(s: State) -> bool {
    matches!(s, State::Complete | State::Pruned | State::Fail)
}

/// Optuna's `check_distribution_compatibility`: the same kind, the same `log`, the same categorical choices.
fn compatible(old: &Distribution, new: &Distribution) -> bool {
    match (old, new) {
        (Distribution::Float { log: a, .. }, Distribution::Float { log: b, .. }) => a == b,
        (Distribution::Int { log: a, .. }, Distribution::Int { log: b, .. }) => a == b,
        (Distribution::Categorical { choices: a }, Distribution::Categorical { choices: b }) => a == b,
        _ => false,
    }
}

/// The fields of one operation, with errors that name the key.
struct Op<'a>(&'a Value);

impl<'a> Op<'a> {
    fn get(&self, k: &str) -> Result<&'a Value, String> {
        self.0.get(k).ok_or_else(|| format!("`{k}` is missing"))
    }
    fn uint(&self, k: &str) -> Result<u64, String> {
        self.get(k)?.as_u64().ok_or_else(|| format!("`{k}` is not a non-negative integer"))
    }
    fn id(&self, k: &str) -> Result<usize, String> {
        usize::try_from(self.uint(k)?).map_err(|_| format!("`{k}` is too large"))
    }
    fn str(&self, k: &str) -> Result<&'a str, String> {
        self.get(k)?.as_str().ok_or_else(|| format!("`{k}` is not a string"))
    }
    fn float(&self, k: &str) -> Result<f64, String> {
        float(self.get(k)?).ok_or_else(|| format!("`{k}` is not a number"))
    }
    fn obj(&self, k: &str) -> Result<&'a Map<String, Value>, String> {
        self.get(k)?.as_object().ok_or_else(|| format!("`{k}` is not an object"))
    }
    /// The one-key object of a SET_*_ATTR operation.
    fn attr(&self, k: &str) -> Result<(&'a String, &'a Value), String> {
        let m = self.obj(k)?;
        m.iter().next().filter(|_| m.len() == 1).ok_or_else(|| format!("`{k}` must hold exactly one key"))
    }
    fn state(&self) -> Result<State, String> {
        let code = self.uint("state")?;
        state(code).ok_or_else(|| format!("unknown trial state {code}"))
    }
    /// `values`: a list of numbers or null.
    fn values(&self, k: &str) -> Result<Option<Vec<f64>>, String> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a.iter().map(|v| float(v).ok_or_else(|| format!("`{k}` holds a non-number"))).collect::<Result<_, _>>().map(Some),
            Some(_) => Err(format!("`{k}` is not a list")),
        }
    }
}

/// A distribution as the journal holds it: Optuna's distribution JSON, itself as a JSON string.
fn distribution(v: &Value) -> Result<Distribution, String> {
    let text = v.as_str().ok_or("a distribution is not a JSON string")?;
    serde_json::from_str(text).ok().and_then(|d| Distribution::from_optuna_json(&d)).ok_or_else(|| format!("unreadable distribution {text}"))
}

impl Replay {
    pub fn new(worker_id: String) -> Replay {
        Replay {
            worker_id,
            studies: BTreeMap::new(),
            next_study_id: 0,
            trials: Vec::new(),
            study_trials: HashMap::new(),
            owned: None,
            last_created: None,
            rejected: None,
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Applies one operation; an error means the operation is malformed (Optuna would fail on it too).
    pub fn apply(&mut self, op: &Value) -> Result<(), String> {
        let o = Op(op);
        let mine = o.str("worker_id")? == self.worker_id;
        match o.uint("op_code")? {
            CREATE_STUDY => self.create_study(&o, mine),
            DELETE_STUDY => {
                let id = o.id("study_id")?;
                if self.studies.remove(&id).is_none() && mine {
                    self.reject(format!("study {id} does not exist"));
                }
                Ok(())
            }
            code @ (SET_STUDY_USER_ATTR | SET_STUDY_SYSTEM_ATTR) => {
                let id = o.id("study_id")?;
                let (k, v) = o.attr(if code == SET_STUDY_USER_ATTR { "user_attr" } else { "system_attr" })?;
                match self.studies.get_mut(&id) {
                    Some(s) if code == SET_STUDY_USER_ATTR => drop(s.user_attrs.insert(k.clone(), v.clone())),
                    Some(s) => drop(s.system_attrs.insert(k.clone(), v.clone())),
                    None if mine => self.reject(format!("study {id} does not exist")),
                    None => {}
                }
                Ok(())
            }
            CREATE_TRIAL => self.create_trial(&o, mine),
            SET_TRIAL_PARAM => self.set_param(&o, mine),
            SET_TRIAL_STATE_VALUES => self.set_state(&o, mine),
            SET_TRIAL_INTERMEDIATE_VALUE => {
                let (id, step, v) = (o.id("trial_id")?, o.uint("step")?, o.float("intermediate_value")?);
                if let Some(t) = self.updatable(id, mine) {
                    t.intermediate.insert(step, v);
                }
                Ok(())
            }
            code @ (SET_TRIAL_USER_ATTR | SET_TRIAL_SYSTEM_ATTR) => {
                let id = o.id("trial_id")?;
                let (k, v) = o.attr(if code == SET_TRIAL_USER_ATTR { "user_attr" } else { "system_attr" })?;
                if let Some(t) = self.updatable(id, mine) {
                    let attrs = if code == SET_TRIAL_USER_ATTR { &mut t.user_attrs } else { &mut t.system_attrs };
                    attrs.insert(k.clone(), v.clone());
                }
                Ok(())
            }
            DISCARD_TRIALS => Ok(()),
            other => Err(format!("unknown op_code {other}")),
        }
    }

    fn reject(&mut self, why: String) {
        self.rejected = Some(why);
    }

    fn create_study(&mut self, o: &Op, mine: bool) -> Result<(), String> {
        let name = o.str("study_name")?;
        let directions = o
            .get("directions")?
            .as_array()
            .ok_or("`directions` is not a list")?
            .iter()
            .map(|d| match d.as_u64() {
                Some(1) => Ok(Direction::Minimize),
                Some(2) => Ok(Direction::Maximize),
                _ => Err(format!("direction {d} is neither 1 (minimize) nor 2 (maximize)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.studies.values().any(|s| s.name == name) {
            if mine {
                self.reject(format!("study '{name}' already exists"));
            }
            return Ok(());
        }
        let id = self.next_study_id;
        self.next_study_id += 1;
        self.studies.insert(id, Study { name: name.to_string(), directions, user_attrs: Map::new(), system_attrs: Map::new() });
        self.study_trials.insert(id, Vec::new());
        Ok(())
    }

    fn create_trial(&mut self, o: &Op, mine: bool) -> Result<(), String> {
        let study = o.id("study_id")?;
        let state = if o.0.get("state").is_some() { o.state()? } else { State::Running };
        let mut distributions = BTreeMap::new();
        if let Some(d) = o.0.get("distributions") {
            for (k, v) in d.as_object().ok_or("`distributions` is not an object")? {
                distributions.insert(k.clone(), distribution(v)?);
            }
        }
        let mut params = BTreeMap::new();
        if let Some(p) = o.0.get("params") {
            for (k, v) in p.as_object().ok_or("`params` is not an object")? {
                let d = distributions.get(k).ok_or_else(|| format!("parameter {k} has no distribution"))?;
                params.insert(k.clone(), (float(v).ok_or_else(|| format!("parameter {k} is not a number"))?, d.clone()));
            }
        }
        let mut intermediate = BTreeMap::new();
        if let Some(iv) = o.0.get("intermediate_values") {
            for (k, v) in iv.as_object().ok_or("`intermediate_values` is not an object")? {
                let step = k.parse::<u64>().map_err(|_| format!("intermediate step {k:?} is not an integer"))?;
                intermediate.insert(step, float(v).ok_or_else(|| format!("intermediate value of step {k} is not a number"))?);
            }
        }
        let value = match o.0.get("value") {
            None | Some(Value::Null) => None,
            Some(_) => Some(o.float("value")?),
        };
        let values = match (value, o.values("values")?) {
            (Some(_), Some(_)) => return Err("both `value` and `values` are set".into()),
            (Some(v), None) => Some(vec![v]),
            (None, vs) => vs,
        };
        let attrs = |k: &str| -> Result<Map<String, Value>, String> {
            match o.0.get(k) {
                None => Ok(Map::new()),
                Some(v) => v.as_object().cloned().ok_or_else(|| format!("`{k}` is not an object")),
            }
        };
        let (user_attrs, system_attrs) = (attrs("user_attrs")?, attrs("system_attrs")?);
        if !self.studies.contains_key(&study) {
            if mine {
                self.reject(format!("study {study} does not exist"));
            }
            return Ok(());
        }
        let id = self.trials.len();
        let ids = self.study_trials.entry(study).or_default();
        self.trials.push(Trial { study, number: ids.len() as u64, state, values, params, intermediate, user_attrs, system_attrs });
        ids.push(id);
        if mine {
            self.last_created = Some(id);
            if state == State::Running {
                self.owned = Some(id);
            }
        }
        Ok(())
    }

    /// The trial, if it exists and is not finished; otherwise `None`, rejecting this worker's own operation.
    fn updatable(&mut self, id: usize, mine: bool) -> Option<&mut Trial> {
        let why = match self.trials.get(id) {
            None => format!("trial {id} does not exist"),
            Some(t) if finished(t.state) => format!("trial {} has already finished and cannot be updated", t.number),
            Some(_) => return self.trials.get_mut(id),
        };
        if mine {
            self.reject(why);
        }
        None
    }

    fn set_param(&mut self, o: &Op, mine: bool) -> Result<(), String> {
        let (id, name, v) = (o.id("trial_id")?, o.str("param_name")?, o.float("param_value_internal")?);
        let d = distribution(o.get("distribution")?)?;
        let Some(study) = self.updatable(id, mine).map(|t| t.study) else { return Ok(()) };
        // The first earlier trial of the study holding this parameter decides whether the new one is compatible.
        let earlier = self.study_trials.get(&study).into_iter().flatten().find_map(|t| self.trials[*t].params.get(name));
        if let Some((_, old)) = earlier {
            if !compatible(old, &d) {
                if mine {
                    self.reject(format!("parameter {name}: a different distribution than earlier trials gave it"));
                }
                return Ok(());
            }
        }
        self.trials[id].params.insert(name.to_string(), (v, d));
        Ok(())
    }

    fn set_state(&mut self, o: &Op, mine: bool) -> Result<(), String> {
        let (id, state, values) = (o.id("trial_id")?, o.state()?, o.values("values")?);
        let Some(t) = self.updatable(id, mine) else { return Ok(()) };
        if state == State::Running && t.state == State::Running {
            // Another worker popped this WAITING trial first.
            return Ok(());
        }
        t.state = state;
        if values.is_some() {
            t.values = values;
        }
        if mine && state == State::Running {
            self.owned = Some(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn replay(worker: &str, ops: &[Value]) -> Replay {
        let mut r = Replay::new(worker.into());
        for op in ops {
            r.apply(op).unwrap();
        }
        r
    }

    #[test]
    fn the_first_of_two_pops_of_a_waiting_trial_wins() {
        let ops = [
            json!({"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}),
            json!({"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_start": null, "state": 4, "system_attrs": {"fixed_params": {"x": 1}}}),
            json!({"op_code": 6, "worker_id": "b", "trial_id": 0, "state": 0, "values": null, "datetime_start": "2026-01-01T00:00:00.000000+00:00"}),
            json!({"op_code": 6, "worker_id": "c", "trial_id": 0, "state": 0, "values": null, "datetime_start": "2026-01-01T00:00:00.000000+00:00"}),
        ];
        assert_eq!(replay("b", &ops).owned, Some(0));
        let c = replay("c", &ops);
        assert_eq!(c.owned, None);
        assert_eq!(c.trials[0].state, State::Running);
    }

    #[test]
    fn ids_and_numbers_are_implicit_and_ignored_operations_take_none() {
        let ops = [
            json!({"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]}),
            json!({"op_code": 0, "worker_id": "b", "study_name": "s", "directions": [2]}),
            json!({"op_code": 0, "worker_id": "a", "study_name": "t", "directions": [2, 1]}),
            json!({"op_code": 4, "worker_id": "a", "study_id": 7, "datetime_start": null}),
            json!({"op_code": 4, "worker_id": "a", "study_id": 1, "datetime_start": null}),
            json!({"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_start": null}),
            json!({"op_code": 4, "worker_id": "a", "study_id": 0, "datetime_start": null}),
            json!({"op_code": 6, "worker_id": "a", "trial_id": 2, "state": 1, "values": [0.5], "datetime_complete": "x"}),
            json!({"op_code": 7, "worker_id": "z", "trial_id": 2, "step": 1, "intermediate_value": 3.0}),
        ];
        let r = replay("b", &ops);
        assert_eq!(r.studies.len(), 2);
        assert_eq!(r.studies[&0].directions, vec![Direction::Minimize]);
        assert_eq!(r.studies[&1].directions, vec![Direction::Maximize, Direction::Minimize]);
        assert_eq!(r.study_trials[&0], vec![1, 2]);
        assert_eq!((r.trials[2].number, r.trials[2].state), (1, State::Complete));
        assert_eq!(r.trials[2].values, Some(vec![0.5]));
        assert!(r.trials[2].intermediate.is_empty(), "a finished trial takes no more values");
        // Worker b's duplicate CREATE_STUDY is what Optuna raises DuplicatedStudyError for.
        assert!(r.rejected.unwrap().contains("already exists"));
    }

    #[test]
    fn a_malformed_operation_says_which_key() {
        let mut r = Replay::new("a".into());
        assert_eq!(r.apply(&json!({"op_code": 0, "worker_id": "a"})).unwrap_err(), "`study_name` is missing");
        assert_eq!(r.apply(&json!({"op_code": 11, "worker_id": "a"})).unwrap_err(), "unknown op_code 11");
        r.apply(&json!({"op_code": 0, "worker_id": "a", "study_name": "s", "directions": [1]})).unwrap();
        let bad = json!({"op_code": 5, "worker_id": "a", "trial_id": 0, "param_name": "x", "param_value_internal": 1, "distribution": "{}"});
        assert_eq!(r.apply(&bad).unwrap_err(), "unreadable distribution {}");
    }
}
