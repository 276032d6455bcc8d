//! Studies in Optuna's journal (`JournalStorage(JournalFileBackend(path))`): a JSON-lines file of operations that
//! any number of workers, bz or Python, append to under Optuna's lock-file protocol, and that each replays into
//! memory. No database server, and safe on network filesystems where SQLite is not.
//!
//! Every write that depends on what the study holds (the budget, the next WAITING trial, a trial still RUNNING)
//! reads the journal to its end and appends while holding the lock, so the decision cannot be overtaken; the
//! replay then confirms it as Optuna would (who popped a trial is who appended its RUNNING first).
//!
//! Optuna's journal has no heartbeats (they are RDB-only), so neither does bz's: a killed worker's trial stays
//! RUNNING, as with Optuna.

pub mod file;
pub mod replay;

use crate::space::{Direction, Distribution, FrozenTrial, State};
use file::{num, JournalFile};
use replay::{Replay, Trial};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The file of `journal:///relative.log` or `journal:////absolute.log` (three slashes, then the path, as for
/// `sqlite:///`); `None` for any other URL.
pub fn path_of(url: &str) -> Option<&str> {
    url.strip_prefix("journal:///")
}

/// Optuna's journal timestamps: aware UTC, ISO 8601 with microseconds.
fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Optuna's `constraints` attribute as numbers (a non-number counts as NaN: not known to hold).
fn constraint_values(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()).unwrap_or_default()
}

fn text(s: &str) -> String {
    Value::from(s).to_string()
}

pub struct JournalStorage {
    file: JournalFile,
    replay: Replay,
    study_id: usize,
}

impl JournalStorage {
    /// Opens (creating) the journal at `path` and the study `name` in it: created when missing; an existing one
    /// only with `load_if_exists` and the same direction.
    pub fn open(path: &Path, name: &str, direction: Direction, load_if_exists: bool) -> Result<JournalStorage, String> {
        Self::open_multi(path, name, &[direction], load_if_exists)
    }

    /// As [`JournalStorage::open`], for a study with one direction per objective.
    pub fn open_multi(path: &Path, name: &str, directions: &[Direction], load_if_exists: bool) -> Result<JournalStorage, String> {
        if directions.is_empty() {
            return Err("a study needs at least one direction".into());
        }
        // Python's worker ids are `<uuid4>-<thread id>`; one id per open journal is enough for bz.
        let worker_id = format!("{}-{}", file::uuid4(), std::process::id());
        let mut j = JournalStorage { file: JournalFile::open(path)?, replay: Replay::new(worker_id), study_id: 0 };
        let lock = j.file.lock()?;
        j.sync()?;
        let existed = j.find(name).is_some();
        if !existed {
            let codes: Vec<String> = directions.iter().map(|d| replay::direction_code(*d).to_string()).collect();
            let line = j.line(replay::CREATE_STUDY, &[("study_name", text(name)), ("directions", format!("[{}]", codes.join(",")))]);
            j.file.append(&lock, &[line])?;
        }
        drop(lock);
        j.applied()?;
        let id = j.find(name).ok_or_else(|| format!("{}: study '{name}' is not in the journal after creating it", j.file.path().display()))?;
        if existed {
            if !load_if_exists {
                return Err(format!("study '{name}' already exists: pass --resume to continue it, or choose another study name"));
            }
            let dirs = &j.replay.studies[&id].directions;
            if dirs != directions {
                let words =
                    |ds: &[Direction]| ds.iter().map(|d| if *d == Direction::Minimize { "minimize" } else { "maximize" }).collect::<Vec<_>>().join(", ");
                return Err(format!("study '{name}' was created to {} its objectives; tune.direction says {}", words(dirs), words(directions)));
            }
        }
        j.study_id = id;
        Ok(j)
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.replay.studies.iter().find(|(_, s)| s.name == name).map(|(id, _)| *id)
    }

    /// One operation's line: `op_code`, `worker_id`, then `fields` (each already JSON), as Optuna orders them.
    fn line(&self, op: u64, fields: &[(&str, String)]) -> String {
        let mut s = format!("{{\"op_code\":{op},\"worker_id\":{}", text(self.replay.worker_id()));
        for (k, v) in fields {
            s.push_str(&format!(",{}:{v}", text(k)));
        }
        s.push('}');
        s
    }

    /// Replays what other workers appended since the last read.
    fn sync(&mut self) -> Result<(), String> {
        for line in self.file.read_new()? {
            self.replay.apply(&line.value).map_err(|e| format!("{}:{}: {e}", self.file.path().display(), line.number))?;
        }
        Ok(())
    }

    /// Appends this worker's operation and replays up to it; an error when Optuna would raise for it.
    fn write(&mut self, op: u64, fields: &[(&str, String)]) -> Result<(), String> {
        let line = self.line(op, fields);
        let lock = self.file.lock()?;
        self.file.append(&lock, &[line])?;
        drop(lock);
        self.applied()
    }

    /// Replays to the end; an error when Optuna would have raised for one of this worker's operations.
    fn applied(&mut self) -> Result<(), String> {
        self.sync()?;
        match self.replay.rejected.take() {
            Some(why) => Err(format!("{}: {why}", self.file.path().display())),
            None => Ok(()),
        }
    }

    /// This study's trials: (trial_id, trial), in number order.
    fn study_trials(&self) -> impl Iterator<Item = (usize, &Trial)> {
        self.replay.study_trials.get(&self.study_id).into_iter().flatten().map(|id| (*id, &self.replay.trials[*id]))
    }

    fn started(&self) -> u64 {
        self.study_trials().filter(|(_, t)| t.state != State::Waiting).count() as u64
    }

    /// A new RUNNING trial: (trial_id, number); `None` when the study already has `budget` started trials.
    pub fn create_trial(&mut self, budget: Option<u64>) -> Result<Option<(i64, u64)>, String> {
        let line = self.line(replay::CREATE_TRIAL, &[("study_id", self.study_id.to_string()), ("datetime_start", text(&now()))]);
        let lock = self.file.lock()?;
        self.sync()?;
        if budget.is_some_and(|b| self.started() >= b) {
            return Ok(None);
        }
        self.replay.last_created = None;
        self.file.append(&lock, &[line])?;
        drop(lock);
        self.applied()?;
        let id = self.replay.last_created.ok_or("the new trial is not in the journal")?;
        Ok(Some((id as i64, self.replay.trials[id].number)))
    }

    /// Adds a WAITING trial with `fixed_params` (Optuna's `enqueue_trial`), unless one with the same params exists.
    pub fn enqueue(&mut self, fixed: &Map<String, Value>) -> Result<bool, String> {
        let want = Value::Object(fixed.clone());
        let fields = [
            ("study_id", self.study_id.to_string()),
            ("datetime_start", "null".into()),
            ("state", replay::state_code(State::Waiting).to_string()),
            ("value", "null".into()),
            ("values", "null".into()),
            ("distributions", "{}".into()),
            ("params", "{}".into()),
            ("user_attrs", "{}".into()),
            ("system_attrs", serde_json::json!({ "fixed_params": want }).to_string()),
            ("intermediate_values", "{}".into()),
        ];
        let line = self.line(replay::CREATE_TRIAL, &fields);
        let lock = self.file.lock()?;
        self.sync()?;
        if self.study_trials().any(|(_, t)| t.system_attrs.get("fixed_params") == Some(&want)) {
            return Ok(false);
        }
        self.file.append(&lock, &[line])?;
        drop(lock);
        self.applied()?;
        Ok(true)
    }

    /// Takes the oldest WAITING trial, if any and if the budget allows: (trial_id, number, fixed params).
    pub fn pop_waiting(&mut self, budget: Option<u64>) -> Result<Option<crate::storage::Popped>, String> {
        let lock = self.file.lock()?;
        self.sync()?;
        if budget.is_some_and(|b| self.started() >= b) {
            return Ok(None);
        }
        let Some(id) = self.study_trials().find(|(_, t)| t.state == State::Waiting).map(|(id, _)| id) else { return Ok(None) };
        let line = self.line(
            replay::SET_TRIAL_STATE_VALUES,
            &[("trial_id", id.to_string()), ("state", "0".into()), ("values", "null".into()), ("datetime_start", text(&now()))],
        );
        self.replay.owned = None;
        self.file.append(&lock, &[line])?;
        drop(lock);
        self.applied()?;
        // Optuna's rule: the pop is ours only if our RUNNING was the first one in the journal.
        if self.replay.owned != Some(id) {
            return Ok(None);
        }
        let t = &self.replay.trials[id];
        let fixed = t.system_attrs.get("fixed_params").and_then(Value::as_object).cloned().unwrap_or_default();
        Ok(Some((id as i64, t.number, fixed)))
    }

    pub fn set_param(&mut self, trial_id: i64, name: &str, internal: f64, d: &Distribution) -> Result<(), String> {
        let fields = [
            ("trial_id", trial_id.to_string()),
            ("param_name", text(name)),
            ("param_value_internal", num(internal)),
            ("distribution", text(&d.to_optuna_json().to_string())),
        ];
        self.write(replay::SET_TRIAL_PARAM, &fields)
    }

    pub fn report(&mut self, trial_id: i64, step: u64, value: f64) -> Result<(), String> {
        self.write(replay::SET_TRIAL_INTERMEDIATE_VALUE, &[("trial_id", trial_id.to_string()), ("step", step.to_string()), ("intermediate_value", num(value))])
    }

    /// Finishes a RUNNING trial (state, value, completion time); a trial that is no longer RUNNING is left as it is.
    pub fn finish(&mut self, trial_id: i64, state: State, value: Option<f64>) -> Result<bool, String> {
        self.finish_values(trial_id, state, &value.into_iter().collect::<Vec<_>>())
    }

    /// [`JournalStorage::finish`] with one value per objective; values are written only when every one is a number.
    pub fn finish_values(&mut self, trial_id: i64, state: State, values: &[f64]) -> Result<bool, String> {
        let values = if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            "null".to_string()
        } else {
            format!("[{}]", values.iter().map(|v| num(*v)).collect::<Vec<_>>().join(","))
        };
        let fields =
            [("trial_id", trial_id.to_string()), ("state", replay::state_code(state).to_string()), ("values", values), ("datetime_complete", text(&now()))];
        let line = self.line(replay::SET_TRIAL_STATE_VALUES, &fields);
        let lock = self.file.lock()?;
        self.sync()?;
        let running = usize::try_from(trial_id).ok().and_then(|id| self.replay.trials.get(id)).is_some_and(|t| t.state == State::Running);
        if running {
            self.file.append(&lock, &[line])?;
        }
        drop(lock);
        self.applied()?;
        Ok(running)
    }

    /// Optuna's journal keeps no heartbeats.
    pub fn heartbeat(&mut self, _trial_id: i64) -> Result<(), String> {
        Ok(())
    }

    /// Without heartbeats no trial is known to be stale.
    pub fn fail_stale(&mut self) -> Result<Vec<u64>, String> {
        Ok(Vec::new())
    }

    pub fn trial_id(&mut self, number: u64) -> Result<Option<i64>, String> {
        self.sync()?;
        Ok(self.replay.study_trials.get(&self.study_id).and_then(|ids| ids.get(number as usize)).map(|id| *id as i64))
    }

    /// Every trial of the study, with params, value and intermediate values, in number order.
    pub fn trials(&mut self) -> Result<Vec<FrozenTrial>, String> {
        self.sync()?;
        Ok(self
            .study_trials()
            .map(|(_, t)| FrozenTrial {
                number: t.number,
                state: t.state,
                value: t.values.as_ref().and_then(|v| v.first().copied()),
                params: t.params.clone(),
                intermediate: t.intermediate.clone(),
                values: t.values.clone().unwrap_or_default(),
                constraints: t.system_attrs.get(crate::pareto::CONSTRAINTS_KEY).map(constraint_values).unwrap_or_default(),
            })
            .collect())
    }

    /// trial_id → the trial system attribute `key`, for the trials of the study that have it.
    pub fn trial_attrs(&mut self, key: &str) -> Result<BTreeMap<i64, Value>, String> {
        self.sync()?;
        Ok(self.study_trials().filter_map(|(id, t)| t.system_attrs.get(key).map(|v| (id as i64, v.clone()))).collect())
    }

    /// The study system attribute `key`, if set.
    pub fn study_attr(&mut self, key: &str) -> Result<Option<Value>, String> {
        self.sync()?;
        Ok(self.replay.studies.get(&self.study_id).and_then(|s| s.system_attrs.get(key).cloned()))
    }

    /// trial number → trial_id for every trial of the study.
    pub fn trial_ids(&mut self) -> Result<BTreeMap<u64, i64>, String> {
        self.sync()?;
        Ok(self.study_trials().map(|(id, t)| (t.number, id as i64)).collect())
    }

    /// Trial system attributes with numeric values whose key contains `completed_rung_` (pruner state).
    pub fn rungs(&mut self) -> Result<BTreeMap<u64, BTreeMap<String, f64>>, String> {
        self.sync()?;
        let mut out: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
        for (_, t) in self.study_trials() {
            for (k, v) in &t.system_attrs {
                if let Some(v) = v.as_f64().filter(|_| k.contains("completed_rung_")) {
                    out.entry(t.number).or_default().insert(k.clone(), v);
                }
            }
        }
        Ok(out)
    }

    fn set_attr(&mut self, op: u64, owner: (&str, usize), kind: &str, key: &str, value: &Value) -> Result<(), String> {
        let attr = Value::Object(Map::from_iter([(key.to_string(), value.clone())])).to_string();
        self.write(op, &[(owner.0, owner.1.to_string()), (kind, attr)])
    }

    pub fn set_study_system_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        self.set_attr(replay::SET_STUDY_SYSTEM_ATTR, ("study_id", self.study_id), "system_attr", key, value)
    }

    pub fn set_study_user_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        self.set_attr(replay::SET_STUDY_USER_ATTR, ("study_id", self.study_id), "user_attr", key, value)
    }

    pub fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.set_attr(replay::SET_TRIAL_SYSTEM_ATTR, ("trial_id", trial_id as usize), "system_attr", key, value)
    }

    pub fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.set_attr(replay::SET_TRIAL_USER_ATTR, ("trial_id", trial_id as usize), "user_attr", key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn two_workers(dir: &Path) -> (JournalStorage, JournalStorage) {
        let path = dir.join("study.log");
        (JournalStorage::open(&path, "s", Direction::Minimize, true).unwrap(), JournalStorage::open(&path, "s", Direction::Minimize, true).unwrap())
    }

    #[test]
    fn two_workers_share_numbers_an_enqueued_trial_and_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, mut b) = two_workers(dir.path());
        let fixed = json!({"x": 1}).as_object().unwrap().clone();
        assert!(a.enqueue(&fixed).unwrap());
        assert!(!b.enqueue(&fixed).unwrap(), "the same params are enqueued once");
        let popped = b.pop_waiting(Some(3)).unwrap().unwrap();
        assert_eq!((popped.1, popped.2), (0, fixed));
        assert!(a.pop_waiting(Some(3)).unwrap().is_none(), "a popped trial is gone for the other worker");
        assert_eq!(a.create_trial(Some(3)).unwrap().unwrap().1, 1);
        assert_eq!(b.create_trial(Some(3)).unwrap().unwrap().1, 2);
        assert_eq!(a.create_trial(Some(3)).unwrap(), None, "the budget counts both workers' trials");
        b.report(popped.0, 1, f64::NAN).unwrap();
        assert!(b.finish(popped.0, State::Pruned, Some(0.5)).unwrap());
        assert!(!a.finish(popped.0, State::Fail, None).unwrap(), "a finished trial stays as it is");
        let t = &a.trials().unwrap()[0];
        assert_eq!((t.state, t.value), (State::Pruned, Some(0.5)));
        assert!(t.intermediate[&1].is_nan());
    }

    #[test]
    fn an_existing_study_needs_resume_and_its_direction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.log");
        JournalStorage::open(&path, "s", Direction::Minimize, false).unwrap();
        let err = JournalStorage::open(&path, "s", Direction::Minimize, false).err().unwrap();
        assert!(err.contains("--resume"), "{err}");
        let err = JournalStorage::open(&path, "s", Direction::Maximize, true).err().unwrap();
        assert!(err.contains("tune.direction says maximize"), "{err}");
        assert_eq!(JournalStorage::open(&path, "t", Direction::Maximize, false).unwrap().study_id, 1);
    }
}
