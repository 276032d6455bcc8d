//! Studies in Optuna's own RDB schema (Optuna 5.0: `version_info` schema 12, alembic head `v3.2.0.a`), so
//! `optuna.load_study` and optuna-dashboard open them and Python workers can share them. Plain SQL through
//! rusqlite; trial numbers are allocated inside `BEGIN IMMEDIATE`, enqueued trials are popped with a
//! conditional UPDATE (two workers can never take the same one), and RUNNING trials carry heartbeats so that a
//! killed worker's trials are failed instead of staying RUNNING.

use crate::space::{Direction, Distribution, FrozenTrial, State};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS studies (study_id INTEGER NOT NULL, study_name VARCHAR(512) NOT NULL, PRIMARY KEY (study_id));
CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name);
CREATE TABLE IF NOT EXISTS version_info (version_info_id INTEGER NOT NULL, schema_version INTEGER, library_version VARCHAR(256), PRIMARY KEY (version_info_id), CHECK (version_info_id=1));
CREATE TABLE IF NOT EXISTS study_directions (study_direction_id INTEGER NOT NULL, direction VARCHAR(8) NOT NULL, study_id INTEGER NOT NULL, objective INTEGER NOT NULL, PRIMARY KEY (study_direction_id), UNIQUE (study_id, objective), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS study_user_attributes (study_user_attribute_id INTEGER NOT NULL, study_id INTEGER, "key" VARCHAR(512), value_json TEXT, PRIMARY KEY (study_user_attribute_id), UNIQUE (study_id, "key"), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS study_system_attributes (study_system_attribute_id INTEGER NOT NULL, study_id INTEGER, "key" VARCHAR(512), value_json TEXT, PRIMARY KEY (study_system_attribute_id), UNIQUE (study_id, "key"), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS trials (trial_id INTEGER NOT NULL, number INTEGER, study_id INTEGER, state VARCHAR(8) NOT NULL, datetime_start DATETIME, datetime_complete DATETIME, PRIMARY KEY (trial_id), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE INDEX IF NOT EXISTS ix_trials_study_id ON trials (study_id);
CREATE TABLE IF NOT EXISTS trial_user_attributes (trial_user_attribute_id INTEGER NOT NULL, trial_id INTEGER, "key" VARCHAR(512), value_json TEXT, PRIMARY KEY (trial_user_attribute_id), UNIQUE (trial_id, "key"), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_system_attributes (trial_system_attribute_id INTEGER NOT NULL, trial_id INTEGER, "key" VARCHAR(512), value_json TEXT, PRIMARY KEY (trial_system_attribute_id), UNIQUE (trial_id, "key"), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_params (param_id INTEGER NOT NULL, trial_id INTEGER, param_name VARCHAR(512), param_value FLOAT, distribution_json TEXT, PRIMARY KEY (param_id), UNIQUE (trial_id, param_name), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_values (trial_value_id INTEGER NOT NULL, trial_id INTEGER NOT NULL, objective INTEGER NOT NULL, value FLOAT, value_type VARCHAR(7) NOT NULL, PRIMARY KEY (trial_value_id), UNIQUE (trial_id, objective), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_intermediate_values (trial_intermediate_value_id INTEGER NOT NULL, trial_id INTEGER NOT NULL, step INTEGER NOT NULL, intermediate_value FLOAT, intermediate_value_type VARCHAR(7) NOT NULL, PRIMARY KEY (trial_intermediate_value_id), UNIQUE (trial_id, step), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_heartbeats (trial_heartbeat_id INTEGER NOT NULL, trial_id INTEGER NOT NULL, heartbeat DATETIME NOT NULL, PRIMARY KEY (trial_heartbeat_id), UNIQUE (trial_id), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
"#;

/// Optuna's datetimes: naive UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn now() -> String {
    chrono::Utc::now().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A value and its Optuna type tag (`FINITE`, `INF_POS`, `INF_NEG`, `NAN`).
fn tagged(x: f64) -> (Option<f64>, &'static str) {
    if x.is_nan() {
        (None, "NAN")
    } else if x == f64::INFINITY {
        (None, "INF_POS")
    } else if x == f64::NEG_INFINITY {
        (None, "INF_NEG")
    } else {
        (Some(x), "FINITE")
    }
}

fn untagged(v: Option<f64>, tag: &str) -> f64 {
    match tag {
        "INF_POS" => f64::INFINITY,
        "INF_NEG" => f64::NEG_INFINITY,
        "NAN" => f64::NAN,
        _ => v.unwrap_or(f64::NAN),
    }
}

pub struct Storage {
    conn: Connection,
    pub study_id: i64,
    pub study: String,
    pub direction: Direction,
}

impl Storage {
    /// Opens (creating tables and version rows as Optuna would) `path`, and the study `name`: created when
    /// missing; an existing one only with `load_if_exists` and the same direction.
    pub fn open_sqlite(path: &Path, name: &str, direction: Direction, load_if_exists: bool) -> Result<Storage, String> {
        let conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Several workers (bz or Optuna) write one file: wait for each other instead of failing with "locked".
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        let _ = conn.pragma_update(None, "journal_mode", "WAL");
        let mut s = Storage { conn, study_id: 0, study: name.to_string(), direction };
        s.init()?;
        s.study_id = s.study(name, direction, load_if_exists)?;
        Ok(s)
    }

    fn init(&mut self) -> Result<(), String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        tx.execute_batch(DDL).map_err(err)?;
        let version: Option<i64> = tx.query_row("SELECT schema_version FROM version_info WHERE version_info_id = 1", [], |r| r.get(0)).optional().map_err(err)?;
        match version {
            None => {
                tx.execute("INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, 12, '5.0.0')", []).map_err(err)?;
            }
            Some(12) => {}
            Some(v) => return Err(format!("the study database has Optuna schema version {v}; this bz writes 12 (Optuna ≥ 3.2): run `optuna storage upgrade` on it first")),
        }
        let alembic: Option<String> = tx.query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0)).optional().map_err(err)?;
        match alembic.as_deref() {
            None => {
                tx.execute("INSERT INTO alembic_version (version_num) VALUES ('v3.2.0.a')", []).map_err(err)?;
            }
            Some("v3.2.0.a") => {}
            Some(other) => return Err(format!("the study database is at Optuna migration {other}, newer than this bz knows (v3.2.0.a): update bz")),
        }
        tx.commit().map_err(err)
    }

    fn study(&mut self, name: &str, direction: Direction, load_if_exists: bool) -> Result<i64, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let existing: Option<i64> = tx.query_row("SELECT study_id FROM studies WHERE study_name = ?1", [name], |r| r.get(0)).optional().map_err(err)?;
        let want = match direction {
            Direction::Minimize => "MINIMIZE",
            Direction::Maximize => "MAXIMIZE",
        };
        let id = match existing {
            Some(id) => {
                if !load_if_exists {
                    return Err(format!("study '{name}' already exists: pass --resume to continue it, or choose another study name"));
                }
                let dirs: Vec<String> = {
                    let mut st = tx.prepare("SELECT direction FROM study_directions WHERE study_id = ?1 ORDER BY objective").map_err(err)?;
                    let rows = st.query_map([id], |r| r.get(0)).map_err(err)?;
                    rows.collect::<Result<_, _>>().map_err(err)?
                };
                if dirs.len() != 1 {
                    return Err(format!("study '{name}' has {} objectives; bz tunes one", dirs.len()));
                }
                if dirs[0] != want {
                    return Err(format!("study '{name}' was created to {} its objective; tune.direction says {}", dirs[0].to_lowercase(), want.to_lowercase()));
                }
                id
            }
            None => {
                tx.execute("INSERT INTO studies (study_name) VALUES (?1)", [name]).map_err(err)?;
                let id = tx.last_insert_rowid();
                tx.execute("INSERT INTO study_directions (direction, study_id, objective) VALUES (?1, ?2, 0)", params![want, id]).map_err(err)?;
                id
            }
        };
        tx.commit().map_err(err)?;
        Ok(id)
    }

    pub fn set_study_system_attr(&self, key: &str, value: &Value) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO study_system_attributes (study_id, \"key\", value_json) VALUES (?1, ?2, ?3) ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                params![self.study_id, key, value.to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    pub fn set_study_user_attr(&self, key: &str, value: &Value) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO study_user_attributes (study_id, \"key\", value_json) VALUES (?1, ?2, ?3) ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                params![self.study_id, key, value.to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// A new RUNNING trial: (trial_id, number); `None` when the study already has `budget` started trials.
    pub fn create_trial(&mut self, budget: Option<u64>) -> Result<Option<(i64, u64)>, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        if let Some(b) = budget {
            let started: i64 = tx.query_row("SELECT COUNT(*) FROM trials WHERE study_id = ?1 AND state != 'WAITING'", [self.study_id], |r| r.get(0)).map_err(err)?;
            if started as u64 >= b {
                return Ok(None);
            }
        }
        let number: i64 = tx.query_row("SELECT COUNT(*) FROM trials WHERE study_id = ?1", [self.study_id], |r| r.get(0)).map_err(err)?;
        let start = now();
        tx.execute("INSERT INTO trials (number, study_id, state, datetime_start) VALUES (?1, ?2, 'RUNNING', ?3)", params![number, self.study_id, start]).map_err(err)?;
        let id = tx.last_insert_rowid();
        tx.execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, ?2)", params![id, start]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some((id, number as u64)))
    }

    /// Adds a WAITING trial with `fixed_params` (Optuna's `enqueue_trial`), unless one with the same params exists.
    pub fn enqueue(&mut self, fixed: &serde_json::Map<String, Value>) -> Result<bool, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let json = Value::Object(fixed.clone()).to_string();
        let dup: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id WHERE t.study_id = ?1 AND a.\"key\" = 'fixed_params' AND a.value_json = ?2",
                params![self.study_id, json],
                |r| r.get(0),
            )
            .map_err(err)?;
        if dup > 0 {
            return Ok(false);
        }
        let number: i64 = tx.query_row("SELECT COUNT(*) FROM trials WHERE study_id = ?1", [self.study_id], |r| r.get(0)).map_err(err)?;
        tx.execute("INSERT INTO trials (number, study_id, state) VALUES (?1, ?2, 'WAITING')", params![number, self.study_id]).map_err(err)?;
        let id = tx.last_insert_rowid();
        tx.execute("INSERT INTO trial_system_attributes (trial_id, \"key\", value_json) VALUES (?1, 'fixed_params', ?2)", params![id, json]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(true)
    }

    /// Takes the oldest WAITING trial, if any and if the budget allows: (trial_id, number, fixed params). The
    /// check, the pick and a conditional UPDATE share one write transaction, so two workers (bz or Optuna) never
    /// take the same trial, and the budget is never overrun.
    pub fn pop_waiting(&mut self, budget: Option<u64>) -> Result<Option<(i64, u64, serde_json::Map<String, Value>)>, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        if let Some(b) = budget {
            let started: i64 = tx.query_row("SELECT COUNT(*) FROM trials WHERE study_id = ?1 AND state != 'WAITING'", [self.study_id], |r| r.get(0)).map_err(err)?;
            if started as u64 >= b {
                return Ok(None);
            }
        }
        let next: Option<(i64, i64)> = tx
            .query_row("SELECT trial_id, number FROM trials WHERE study_id = ?1 AND state = 'WAITING' ORDER BY trial_id LIMIT 1", [self.study_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(err)?;
        let Some((id, number)) = next else { return Ok(None) };
        let start = now();
        let changed = tx.execute("UPDATE trials SET state = 'RUNNING', datetime_start = ?2 WHERE trial_id = ?1 AND state = 'WAITING'", params![id, start]).map_err(err)?;
        if changed != 1 {
            return Ok(None);
        }
        tx.execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, ?2) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat", params![id, start]).map_err(err)?;
        let fixed: Option<String> = tx
            .query_row("SELECT value_json FROM trial_system_attributes WHERE trial_id = ?1 AND \"key\" = 'fixed_params'", [id], |r| r.get(0))
            .optional()
            .map_err(err)?;
        tx.commit().map_err(err)?;
        let fixed = fixed.and_then(|f| serde_json::from_str::<Value>(&f).ok()).and_then(|v| v.as_object().cloned()).unwrap_or_default();
        Ok(Some((id, number as u64, fixed)))
    }

    pub fn set_param(&self, trial_id: i64, name: &str, internal: f64, d: &Distribution) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?1, ?2, ?3, ?4)",
                params![trial_id, name, internal, d.to_optuna_json().to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    pub fn report(&self, trial_id: i64, step: u64, value: f64) -> Result<(), String> {
        let (v, tag) = tagged(value);
        self.conn
            .execute(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type",
                params![trial_id, step as i64, v, tag],
            )
            .map(|_| ())
            .map_err(err)
    }

    pub fn set_trial_system_attr(&self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO trial_system_attributes (trial_id, \"key\", value_json) VALUES (?1, ?2, ?3) ON CONFLICT (trial_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                params![trial_id, key, value.to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    pub fn set_trial_user_attr(&self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO trial_user_attributes (trial_id, \"key\", value_json) VALUES (?1, ?2, ?3) ON CONFLICT (trial_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                params![trial_id, key, value.to_string()],
            )
            .map(|_| ())
            .map_err(err)
    }

    /// Finishes a RUNNING trial (state, value, completion time) in one transaction; a trial that is no longer
    /// RUNNING (failed as stale meanwhile) is left as it is.
    pub fn finish(&mut self, trial_id: i64, state: State, value: Option<f64>) -> Result<bool, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let changed = tx.execute("UPDATE trials SET state = ?2, datetime_complete = ?3 WHERE trial_id = ?1 AND state = 'RUNNING'", params![trial_id, state.name(), now()]).map_err(err)?;
        if changed == 1 {
            if let Some(v) = value.filter(|v| !v.is_nan()) {
                let (x, tag) = tagged(v);
                tx.execute("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, ?3)", params![trial_id, x, tag]).map_err(err)?;
            }
            tx.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?1", [trial_id]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(changed == 1)
    }

    pub fn heartbeat(&self, trial_id: i64) -> Result<(), String> {
        self.conn
            .execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, ?2) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat", params![trial_id, now()])
            .map(|_| ())
            .map_err(err)
    }

    /// Fails RUNNING trials whose heartbeat is older than `grace` (their worker died); their numbers.
    pub fn fail_stale(&mut self, grace: Duration) -> Result<Vec<u64>, String> {
        let cutoff = (chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default()).naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let stale: Vec<(i64, i64)> = {
            let mut st = tx
                .prepare("SELECT t.trial_id, t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.study_id = ?1 AND t.state = 'RUNNING' AND h.heartbeat < ?2")
                .map_err(err)?;
            let rows = st.query_map(params![self.study_id, cutoff], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        for (id, _) in &stale {
            tx.execute("UPDATE trials SET state = 'FAIL', datetime_complete = ?2 WHERE trial_id = ?1 AND state = 'RUNNING'", params![id, now()]).map_err(err)?;
            tx.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?1", [id]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(stale.into_iter().map(|(_, n)| n as u64).collect())
    }

    pub fn trial_id(&self, number: u64) -> Result<Option<i64>, String> {
        self.conn.query_row("SELECT trial_id FROM trials WHERE study_id = ?1 AND number = ?2", params![self.study_id, number as i64], |r| r.get(0)).optional().map_err(err)
    }

    /// Every trial of the study, with params, value and intermediate values, in number order.
    pub fn trials(&self) -> Result<Vec<FrozenTrial>, String> {
        let mut out: BTreeMap<i64, FrozenTrial> = BTreeMap::new();
        {
            let mut st = self.conn.prepare("SELECT trial_id, number, state FROM trials WHERE study_id = ?1").map_err(err)?;
            let rows = st.query_map([self.study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))).map_err(err)?;
            for row in rows {
                let (id, number, state) = row.map_err(err)?;
                let state = State::from_name(&state).ok_or_else(|| format!("trial {number} has an unknown state {state:?}"))?;
                out.insert(id, FrozenTrial { number: number as u64, state, value: None, params: BTreeMap::new(), intermediate: BTreeMap::new() });
            }
        }
        let mut st = self
            .conn
            .prepare("SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = ?1")
            .map_err(err)?;
        let rows = st.query_map([self.study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?, r.get::<_, String>(3)?))).map_err(err)?;
        for row in rows {
            let (id, name, value, dist) = row.map_err(err)?;
            let d = serde_json::from_str(&dist).ok().and_then(|v| Distribution::from_optuna_json(&v)).ok_or_else(|| format!("parameter {name}: unreadable distribution {dist}"))?;
            if let Some(t) = out.get_mut(&id) {
                t.params.insert(name, (value, d));
            }
        }
        let mut st = self
            .conn
            .prepare("SELECT v.trial_id, v.value, v.value_type FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id WHERE t.study_id = ?1 AND v.objective = 0")
            .map_err(err)?;
        let rows = st.query_map([self.study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?, r.get::<_, String>(2)?))).map_err(err)?;
        for row in rows {
            let (id, v, tag) = row.map_err(err)?;
            if let Some(t) = out.get_mut(&id) {
                t.value = Some(untagged(v, &tag));
            }
        }
        let mut st = self
            .conn
            .prepare("SELECT i.trial_id, i.step, i.intermediate_value, i.intermediate_value_type FROM trial_intermediate_values i JOIN trials t ON t.trial_id = i.trial_id WHERE t.study_id = ?1")
            .map_err(err)?;
        let rows = st.query_map([self.study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<f64>>(2)?, r.get::<_, String>(3)?))).map_err(err)?;
        for row in rows {
            let (id, step, v, tag) = row.map_err(err)?;
            if let Some(t) = out.get_mut(&id) {
                t.intermediate.insert(step as u64, untagged(v, &tag));
            }
        }
        let mut trials: Vec<FrozenTrial> = out.into_values().collect();
        trials.sort_by_key(|t| t.number);
        Ok(trials)
    }

    /// Trial system attributes with numeric values whose key contains `completed_rung_` (pruner state).
    pub fn rungs(&self) -> Result<BTreeMap<u64, BTreeMap<String, f64>>, String> {
        let mut st = self
            .conn
            .prepare("SELECT t.number, a.\"key\", a.value_json FROM trial_system_attributes a JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = ?1 AND a.\"key\" LIKE '%completed_rung_%'")
            .map_err(err)?;
        let rows = st.query_map([self.study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))).map_err(err)?;
        let mut out: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
        for row in rows {
            let (number, key, json) = row.map_err(err)?;
            if let Some(v) = serde_json::from_str::<Value>(&json).ok().and_then(|v| v.as_f64()) {
                out.entry(number as u64).or_default().insert(key, v);
            }
        }
        Ok(out)
    }
}
