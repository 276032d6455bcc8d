//! Studies in Optuna's own RDB schema (Optuna 5.0: `version_info` schema 12, alembic head `v3.2.0.a`), so
//! `optuna.load_study` and optuna-dashboard open them and Python workers can share them — in SQLite, or in
//! PostgreSQL for many workers on many machines. Plain SQL through [`crate::db`]; trial numbers are allocated in
//! a write transaction (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT … FOR UPDATE` on the study row), enqueued
//! trials are popped with a conditional UPDATE (two workers can never take the same one), and RUNNING trials
//! carry heartbeats so that a killed worker's trials are failed instead of staying RUNNING.
//!
//! [`Storage`] is what the tuner holds: this RDB storage or Optuna's journal file ([`crate::journal`]), behind one
//! method set.

use crate::db::{Db, P};
use crate::journal::{self, JournalStorage};
use crate::space::{Direction, Distribution, FrozenTrial, State};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SQLITE_DDL: &str = r#"
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

/// The same schema as Optuna creates it on PostgreSQL (enum types, SERIAL keys, FLOAT(53), TIMESTAMP).
const PG_DDL: &str = r#"
DO $$ BEGIN CREATE TYPE studydirection AS ENUM ('NOT_SET', 'MINIMIZE', 'MAXIMIZE'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE TYPE trialstate AS ENUM ('RUNNING', 'COMPLETE', 'PRUNED', 'FAIL', 'WAITING'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE TYPE trialvaluetype AS ENUM ('FINITE', 'INF_POS', 'INF_NEG'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE TYPE trialintermediatevaluetype AS ENUM ('FINITE', 'INF_POS', 'INF_NEG', 'NAN'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE IF NOT EXISTS studies (study_id SERIAL NOT NULL, study_name VARCHAR(512) NOT NULL, PRIMARY KEY (study_id));
CREATE UNIQUE INDEX IF NOT EXISTS ix_studies_study_name ON studies (study_name);
CREATE TABLE IF NOT EXISTS version_info (version_info_id INTEGER NOT NULL, schema_version INTEGER, library_version VARCHAR(256), PRIMARY KEY (version_info_id), CHECK (version_info_id=1));
CREATE TABLE IF NOT EXISTS study_directions (study_direction_id SERIAL NOT NULL, direction studydirection NOT NULL, study_id INTEGER NOT NULL, objective INTEGER NOT NULL, PRIMARY KEY (study_direction_id), UNIQUE (study_id, objective), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS study_user_attributes (study_user_attribute_id SERIAL NOT NULL, study_id INTEGER, key VARCHAR(512), value_json TEXT, PRIMARY KEY (study_user_attribute_id), UNIQUE (study_id, key), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS study_system_attributes (study_system_attribute_id SERIAL NOT NULL, study_id INTEGER, key VARCHAR(512), value_json TEXT, PRIMARY KEY (study_system_attribute_id), UNIQUE (study_id, key), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE TABLE IF NOT EXISTS trials (trial_id SERIAL NOT NULL, number INTEGER, study_id INTEGER, state trialstate NOT NULL, datetime_start TIMESTAMP WITHOUT TIME ZONE, datetime_complete TIMESTAMP WITHOUT TIME ZONE, PRIMARY KEY (trial_id), FOREIGN KEY(study_id) REFERENCES studies (study_id));
CREATE INDEX IF NOT EXISTS ix_trials_study_id ON trials (study_id);
CREATE TABLE IF NOT EXISTS trial_user_attributes (trial_user_attribute_id SERIAL NOT NULL, trial_id INTEGER, key VARCHAR(512), value_json TEXT, PRIMARY KEY (trial_user_attribute_id), UNIQUE (trial_id, key), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_system_attributes (trial_system_attribute_id SERIAL NOT NULL, trial_id INTEGER, key VARCHAR(512), value_json TEXT, PRIMARY KEY (trial_system_attribute_id), UNIQUE (trial_id, key), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_params (param_id SERIAL NOT NULL, trial_id INTEGER, param_name VARCHAR(512), param_value FLOAT(53), distribution_json TEXT, PRIMARY KEY (param_id), UNIQUE (trial_id, param_name), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_values (trial_value_id SERIAL NOT NULL, trial_id INTEGER NOT NULL, objective INTEGER NOT NULL, value FLOAT(53), value_type trialvaluetype NOT NULL, PRIMARY KEY (trial_value_id), UNIQUE (trial_id, objective), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_intermediate_values (trial_intermediate_value_id SERIAL NOT NULL, trial_id INTEGER NOT NULL, step INTEGER NOT NULL, intermediate_value FLOAT(53), intermediate_value_type trialintermediatevaluetype NOT NULL, PRIMARY KEY (trial_intermediate_value_id), UNIQUE (trial_id, step), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS trial_heartbeats (trial_heartbeat_id SERIAL NOT NULL, trial_id INTEGER NOT NULL, heartbeat TIMESTAMP WITHOUT TIME ZONE NOT NULL, PRIMARY KEY (trial_heartbeat_id), UNIQUE (trial_id), FOREIGN KEY(trial_id) REFERENCES trials (trial_id));
CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
"#;

/// Optuna's datetimes: naive UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn now() -> String {
    chrono::Utc::now().naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
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

/// An enqueued trial taken by a worker: (trial_id, number, its fixed parameters).
pub type Popped = (i64, u64, serde_json::Map<String, Value>);

/// A study in Optuna's SQLite or PostgreSQL schema.
pub struct SqlStorage {
    db: Db,
    pub study_id: i64,
    pub study: String,
    pub direction: Direction,
    /// Every objective's direction (`direction` is the first).
    pub directions: Vec<Direction>,
}

fn tag_sql(x: f64) -> (Option<f64>, &'static str) {
    tagged(x)
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "MINIMIZE",
        Direction::Maximize => "MAXIMIZE",
    }
}

impl SqlStorage {
    /// Opens storage `url` (`sqlite:///path`, a path, or `postgresql://…`), creating Optuna's tables and version
    /// rows when they are missing, and the study `name`: created when missing; an existing one only with
    /// `load_if_exists` and the same direction.
    pub fn open(url: &str, name: &str, direction: Direction, load_if_exists: bool) -> Result<SqlStorage, String> {
        Self::open_multi(url, name, &[direction], load_if_exists)
    }

    /// As [`SqlStorage::open`], for a study with one direction per objective.
    pub fn open_multi(url: &str, name: &str, directions: &[Direction], load_if_exists: bool) -> Result<SqlStorage, String> {
        let direction = *directions.first().ok_or("a study needs at least one direction")?;
        let db = if url.starts_with("postgresql://") || url.starts_with("postgres://") {
            // SQLAlchemy's driver suffix (`postgresql+psycopg2://`) is Python's business; plain URLs here.
            let client = postgres::Client::connect(url, postgres::NoTls).map_err(|e| {
                let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
                format!("{}: {e}{cause}", redacted(url))
            })?;
            Db::Pg(Box::new(client))
        } else {
            let path = url.strip_prefix("sqlite:///").unwrap_or(url);
            let conn = rusqlite::Connection::open(path).map_err(|e| format!("{path}: {e}"))?;
            // Several workers (bz or Optuna) write one file: wait for each other instead of failing "locked".
            conn.busy_timeout(Duration::from_secs(60)).map_err(|e| e.to_string())?;
            let _ = conn.pragma_update(None, "journal_mode", "WAL");
            Db::Sqlite(conn)
        };
        let mut s = SqlStorage { db, study_id: 0, study: name.to_string(), direction, directions: directions.to_vec() };
        s.init()?;
        s.study_id = s.open_study(name, directions, load_if_exists)?;
        Ok(s)
    }

    fn init(&mut self) -> Result<(), String> {
        let pg = self.db.is_pg();
        self.db.tx(|db| {
            if pg {
                // Workers starting together must not race on CREATE TYPE / CREATE TABLE.
                db.query("SELECT pg_advisory_xact_lock(7201)", &[])?;
                for stmt in PG_DDL.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
                    db.exec(stmt, &[])?;
                }
            } else {
                for stmt in SQLITE_DDL.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
                    db.exec(stmt, &[])?;
                }
            }
            let version = db.query("SELECT schema_version FROM version_info WHERE version_info_id = 1", &[])?;
            match version.first().map(|r| r[0].i()) {
                None => {
                    db.exec("INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, 12, '5.0.0')", &[])?;
                }
                Some(12) => {}
                Some(v) => {
                    return Err(format!(
                        "the study database has Optuna schema version {v}; this bz writes 12 (Optuna ≥ 3.2): run `optuna storage upgrade` on it first"
                    ))
                }
            }
            let alembic = db.query("SELECT version_num FROM alembic_version", &[])?;
            match alembic.first().map(|r| r[0].s()).as_deref() {
                None => {
                    db.exec("INSERT INTO alembic_version (version_num) VALUES ('v3.2.0.a')", &[])?;
                }
                Some("v3.2.0.a") => {}
                Some(other) => return Err(format!("the study database is at Optuna migration {other}, newer than this bz knows (v3.2.0.a): update bz")),
            }
            Ok(())
        })
    }

    fn open_study(&mut self, name: &str, directions: &[Direction], load_if_exists: bool) -> Result<i64, String> {
        match self.open_study_once(name, directions, load_if_exists) {
            // Workers started together can both find no study and both insert it; the second insert then fails on
            // the unique study name (named in the message whatever the server's language). The study exists now,
            // so a worker that may load it does, as Optuna's `load_if_exists` does on DuplicatedStudyError.
            Err(e) if load_if_exists && (e.contains("ix_studies_study_name") || e.contains("studies.study_name")) => {
                self.open_study_once(name, directions, load_if_exists)
            }
            other => other,
        }
    }

    fn open_study_once(&mut self, name: &str, directions: &[Direction], load_if_exists: bool) -> Result<i64, String> {
        let want: Vec<&str> = directions.iter().map(|d| dir_name(*d)).collect();
        self.db.tx(|db| {
            let existing = db.query("SELECT study_id FROM studies WHERE study_name = $1", &[P::S(name.into())])?;
            if let Some(row) = existing.first() {
                let id = row[0].i();
                if !load_if_exists {
                    return Err(format!("study '{name}' already exists: pass --resume to continue it, or choose another study name"));
                }
                let dirs: Vec<String> =
                    db.query("SELECT direction FROM study_directions WHERE study_id = $1 ORDER BY objective", &[P::I(id)])?.iter().map(|r| r[0].s()).collect();
                if dirs.len() != want.len() {
                    return Err(format!("study '{name}' has {} objectives; tune.metric names {}", dirs.len(), want.len()));
                }
                if dirs != want {
                    let lower = |v: &[&str]| v.iter().map(|d| d.to_lowercase()).collect::<Vec<_>>().join(", ");
                    let have: Vec<&str> = dirs.iter().map(String::as_str).collect();
                    return Err(format!("study '{name}' was created to {} its objectives; tune.direction says {}", lower(&have), lower(&want)));
                }
                return Ok(id);
            }
            let id = db
                .query("INSERT INTO studies (study_name) VALUES ($1) RETURNING study_id", &[P::S(name.into())])?
                .first()
                .map(|r| r[0].i())
                .ok_or("no study id")?;
            for (objective, d) in want.iter().enumerate() {
                db.exec(&format!("INSERT INTO study_directions (direction, study_id, objective) VALUES ('{d}', $1, {objective})"), &[P::I(id)])?;
            }
            Ok(id)
        })
    }

    fn upsert_attr(&mut self, table: &str, owner: &str, id: i64, key: &str, value: &Value) -> Result<(), String> {
        let sql = format!("INSERT INTO {table} ({owner}, \"key\", value_json) VALUES ($1, $2, $3) ON CONFLICT ({owner}, \"key\") DO UPDATE SET value_json = excluded.value_json");
        self.db.exec(&sql, &[P::I(id), P::S(key.into()), P::S(value.to_string())]).map(|_| ())
    }

    pub fn set_study_system_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        self.upsert_attr("study_system_attributes", "study_id", self.study_id, key, value)
    }

    pub fn set_study_user_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        self.upsert_attr("study_user_attributes", "study_id", self.study_id, key, value)
    }

    pub fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.upsert_attr("trial_system_attributes", "trial_id", trial_id, key, value)
    }

    pub fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        self.upsert_attr("trial_user_attributes", "trial_id", trial_id, key, value)
    }

    /// Serialises writers of this study's trial list: PostgreSQL locks the study row (SQLite's BEGIN IMMEDIATE
    /// already holds the only write lock).
    fn lock_study(db: &mut Db, study_id: i64) -> Result<(), String> {
        if db.is_pg() {
            db.query("SELECT study_id FROM studies WHERE study_id = $1 FOR UPDATE", &[P::I(study_id)])?;
        }
        Ok(())
    }

    fn started(db: &mut Db, study_id: i64) -> Result<u64, String> {
        Ok(db.query("SELECT COUNT(*) FROM trials WHERE study_id = $1 AND state != 'WAITING'", &[P::I(study_id)])?.first().map(|r| r[0].i()).unwrap_or(0) as u64)
    }

    /// A new RUNNING trial: (trial_id, number); `None` when the study already has `budget` started trials.
    pub fn create_trial(&mut self, budget: Option<u64>) -> Result<Option<(i64, u64)>, String> {
        let study_id = self.study_id;
        self.db.tx(|db| {
            Self::lock_study(db, study_id)?;
            if budget.is_some_and(|b| Self::started(db, study_id).is_ok_and(|n| n >= b)) {
                return Ok(None);
            }
            let number = db.query("SELECT COUNT(*) FROM trials WHERE study_id = $1", &[P::I(study_id)])?.first().map(|r| r[0].i()).unwrap_or(0);
            let start = now();
            let id = db
                .query(
                    "INSERT INTO trials (number, study_id, state, datetime_start) VALUES ($1, $2, 'RUNNING', $3) RETURNING trial_id",
                    &[P::I(number), P::I(study_id), P::S(start.clone())],
                )?
                .first()
                .map(|r| r[0].i())
                .ok_or("no trial id")?;
            db.exec(&format!("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES ($1, {})", db_now(db)), &[P::I(id)])?;
            Ok(Some((id, number as u64)))
        })
    }

    /// Adds a WAITING trial with `fixed_params` (Optuna's `enqueue_trial`), unless one with the same params exists.
    pub fn enqueue(&mut self, fixed: &serde_json::Map<String, Value>) -> Result<bool, String> {
        let study_id = self.study_id;
        let json = Value::Object(fixed.clone()).to_string();
        self.db.tx(|db| {
            Self::lock_study(db, study_id)?;
            let dup = db
                .query(
                    "SELECT COUNT(*) FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id WHERE t.study_id = $1 AND a.\"key\" = 'fixed_params' AND a.value_json = $2",
                    &[P::I(study_id), P::S(json.clone())],
                )?
                .first()
                .map(|r| r[0].i())
                .unwrap_or(0);
            if dup > 0 {
                return Ok(false);
            }
            let number = db.query("SELECT COUNT(*) FROM trials WHERE study_id = $1", &[P::I(study_id)])?.first().map(|r| r[0].i()).unwrap_or(0);
            let id = db.query("INSERT INTO trials (number, study_id, state) VALUES ($1, $2, 'WAITING') RETURNING trial_id", &[P::I(number), P::I(study_id)])?.first().map(|r| r[0].i()).ok_or("no trial id")?;
            db.exec("INSERT INTO trial_system_attributes (trial_id, \"key\", value_json) VALUES ($1, 'fixed_params', $2)", &[P::I(id), P::S(json.clone())])?;
            Ok(true)
        })
    }

    /// Takes the oldest WAITING trial, if any and if the budget allows: (trial_id, number, fixed params). The
    /// check, the pick and a conditional UPDATE share one write transaction, so two workers (bz or Optuna) never
    /// take the same trial, and the budget is never overrun.
    pub fn pop_waiting(&mut self, budget: Option<u64>) -> Result<Option<Popped>, String> {
        let study_id = self.study_id;
        let popped = self.db.tx(|db| {
            Self::lock_study(db, study_id)?;
            if budget.is_some_and(|b| Self::started(db, study_id).is_ok_and(|n| n >= b)) {
                return Ok(None);
            }
            let next =
                db.query("SELECT trial_id, number FROM trials WHERE study_id = $1 AND state = 'WAITING' ORDER BY trial_id LIMIT 1", &[P::I(study_id)])?;
            let Some(row) = next.first() else { return Ok(None) };
            let (id, number) = (row[0].i(), row[1].i());
            let start = now();
            let changed =
                db.exec("UPDATE trials SET state = 'RUNNING', datetime_start = $1 WHERE trial_id = $2 AND state = 'WAITING'", &[P::S(start), P::I(id)])?;
            if changed != 1 {
                return Ok(None);
            }
            db.exec(
                &format!(
                    "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES ($1, {}) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
                    db_now(db)
                ),
                &[P::I(id)],
            )?;
            let fixed = db
                .query("SELECT value_json FROM trial_system_attributes WHERE trial_id = $1 AND \"key\" = 'fixed_params'", &[P::I(id)])?
                .first()
                .map(|r| r[0].s());
            Ok(Some((id, number as u64, fixed)))
        })?;
        Ok(popped.map(|(id, number, fixed)| {
            let fixed = fixed.and_then(|f| serde_json::from_str::<Value>(&f).ok()).and_then(|v| v.as_object().cloned()).unwrap_or_default();
            (id, number, fixed)
        }))
    }

    pub fn set_param(&mut self, trial_id: i64, name: &str, internal: f64, d: &Distribution) -> Result<(), String> {
        self.db
            .exec(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES ($1, $2, $3, $4)",
                &[P::I(trial_id), P::S(name.into()), P::F(Some(internal)), P::S(d.to_optuna_json().to_string())],
            )
            .map(|_| ())
    }

    pub fn report(&mut self, trial_id: i64, step: u64, value: f64) -> Result<(), String> {
        let (v, tag) = tag_sql(value);
        let sql = format!(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES ($1, $2, $3, '{tag}') ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type"
        );
        self.db.exec(&sql, &[P::I(trial_id), P::I(step as i64), P::F(v)]).map(|_| ())
    }

    /// Finishes a RUNNING trial (state, value, completion time) in one transaction; a trial that is no longer
    /// RUNNING (failed as stale meanwhile) is left as it is.
    pub fn finish(&mut self, trial_id: i64, state: State, value: Option<f64>) -> Result<bool, String> {
        self.finish_values(trial_id, state, &value.into_iter().collect::<Vec<_>>())
    }

    /// [`Storage::finish`] with one value per objective (`trial_values` row per objective index); values are
    /// written only when every one is a number.
    pub fn finish_values(&mut self, trial_id: i64, state: State, values: &[f64]) -> Result<bool, String> {
        self.db.tx(|db| {
            let changed = db.exec(
                &format!("UPDATE trials SET state = '{}', datetime_complete = $1 WHERE trial_id = $2 AND state = 'RUNNING'", state.name()),
                &[P::S(now()), P::I(trial_id)],
            )?;
            if changed == 1 && values.iter().all(|v| !v.is_nan()) {
                for (objective, v) in values.iter().enumerate() {
                    let (x, tag) = tag_sql(*v);
                    db.exec(
                        &format!("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES ($1, {objective}, $2, '{tag}')"),
                        &[P::I(trial_id), P::F(x)],
                    )?;
                }
            }
            if changed == 1 {
                db.exec("DELETE FROM trial_heartbeats WHERE trial_id = $1", &[P::I(trial_id)])?;
            }
            Ok(changed == 1)
        })
    }

    pub fn heartbeat(&mut self, trial_id: i64) -> Result<(), String> {
        let sql = format!(
            "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES ($1, {}) ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
            db_now(&self.db)
        );
        self.db.exec(&sql, &[P::I(trial_id)]).map(|_| ())
    }

    /// Fails RUNNING trials whose heartbeat is older than `grace` (their worker died); their numbers.
    pub fn fail_stale(&mut self, grace: Duration) -> Result<Vec<u64>, String> {
        let study_id = self.study_id;
        let secs = grace.as_secs_f64();
        self.db.tx(|db| {
            // The database's clock on both sides, as Optuna does: machines with skewed clocks (and Python workers)
            // then agree on which heartbeat is stale.
            let cutoff = match db {
                Db::Sqlite(_) => format!("datetime('now', '-{secs:.3} seconds')"),
                Db::Pg(_) => format!("(LOCALTIMESTAMP - interval '{secs:.3} seconds')"),
            };
            let stale: Vec<(i64, i64)> = db
                .query(
                    &format!("SELECT t.trial_id, t.number FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.study_id = $1 AND t.state = 'RUNNING' AND h.heartbeat < {cutoff}"),
                    &[P::I(study_id)],
                )?
                .iter()
                .map(|r| (r[0].i(), r[1].i()))
                .collect();
            for (id, _) in &stale {
                db.exec("UPDATE trials SET state = 'FAIL', datetime_complete = $1 WHERE trial_id = $2 AND state = 'RUNNING'", &[P::S(now()), P::I(*id)])?;
                db.exec("DELETE FROM trial_heartbeats WHERE trial_id = $1", &[P::I(*id)])?;
            }
            Ok(stale.into_iter().map(|(_, n)| n as u64).collect())
        })
    }

    pub fn trial_id(&mut self, number: u64) -> Result<Option<i64>, String> {
        Ok(self
            .db
            .query("SELECT trial_id FROM trials WHERE study_id = $1 AND number = $2", &[P::I(self.study_id), P::I(number as i64)])?
            .first()
            .map(|r| r[0].i()))
    }

    /// Every trial of the study, with params, value and intermediate values, in number order.
    pub fn trials(&mut self) -> Result<Vec<FrozenTrial>, String> {
        let sid = [P::I(self.study_id)];
        let mut out: BTreeMap<i64, FrozenTrial> = BTreeMap::new();
        for r in self.db.query("SELECT trial_id, number, state FROM trials WHERE study_id = $1", &sid)? {
            let state = State::from_name(&r[2].s()).ok_or_else(|| format!("trial {} has an unknown state {:?}", r[1].i(), r[2].s()))?;
            let t = FrozenTrial {
                number: r[1].i() as u64,
                state,
                value: None,
                params: BTreeMap::new(),
                intermediate: BTreeMap::new(),
                values: Vec::new(),
                constraints: Vec::new(),
            };
            out.insert(r[0].i(), t);
        }
        for r in self.db.query("SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = $1", &sid)? {
            let (name, dist) = (r[1].s(), r[3].s());
            let d = serde_json::from_str(&dist).ok().and_then(|v| Distribution::from_optuna_json(&v)).ok_or_else(|| format!("parameter {name}: unreadable distribution {dist}"))?;
            if let Some(t) = out.get_mut(&r[0].i()) {
                t.params.insert(name, (r[2].f().unwrap_or(f64::NAN), d));
            }
        }
        for r in self.db.query(
            "SELECT v.trial_id, v.value, v.value_type FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id WHERE t.study_id = $1 ORDER BY v.trial_id, v.objective",
            &sid,
        )? {
            if let Some(t) = out.get_mut(&r[0].i()) {
                t.values.push(untagged(r[1].f(), &r[2].s()));
                t.value = t.values.first().copied();
            }
        }
        for (id, v) in self.trial_attrs(crate::pareto::CONSTRAINTS_KEY)? {
            if let Some(t) = out.get_mut(&id) {
                t.constraints = v.as_array().map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()).unwrap_or_default();
            }
        }
        for r in self.db.query("SELECT i.trial_id, i.step, i.intermediate_value, i.intermediate_value_type FROM trial_intermediate_values i JOIN trials t ON t.trial_id = i.trial_id WHERE t.study_id = $1", &sid)? {
            if let Some(t) = out.get_mut(&r[0].i()) {
                t.intermediate.insert(r[1].i() as u64, untagged(r[2].f(), &r[3].s()));
            }
        }
        let mut trials: Vec<FrozenTrial> = out.into_values().collect();
        trials.sort_by_key(|t| t.number);
        Ok(trials)
    }

    /// This study's trial system attributes named `key`: trial_id → value.
    pub fn trial_attrs(&mut self, key: &str) -> Result<BTreeMap<i64, Value>, String> {
        let rows = self.db.query(
            "SELECT a.trial_id, a.value_json FROM trial_system_attributes a JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = $1 AND a.\"key\" = $2",
            &[P::I(self.study_id), P::S(key.into())],
        )?;
        Ok(rows.iter().filter_map(|r| serde_json::from_str(&r[1].s()).ok().map(|v| (r[0].i(), v))).collect())
    }

    /// The study system attribute `key`, if set.
    pub fn study_attr(&mut self, key: &str) -> Result<Option<Value>, String> {
        let rows =
            self.db.query("SELECT value_json FROM study_system_attributes WHERE study_id = $1 AND \"key\" = $2", &[P::I(self.study_id), P::S(key.into())])?;
        Ok(rows.first().and_then(|r| serde_json::from_str(&r[0].s()).ok()))
    }

    /// trial number → trial_id for every trial of the study.
    pub fn trial_ids(&mut self) -> Result<BTreeMap<u64, i64>, String> {
        let rows = self.db.query("SELECT number, trial_id FROM trials WHERE study_id = $1", &[P::I(self.study_id)])?;
        Ok(rows.iter().map(|r| (r[0].i() as u64, r[1].i())).collect())
    }

    /// Trial system attributes with numeric values whose key contains `completed_rung_` (pruner state).
    pub fn rungs(&mut self) -> Result<BTreeMap<u64, BTreeMap<String, f64>>, String> {
        let rows = self.db.query(
            "SELECT t.number, a.\"key\", a.value_json FROM trial_system_attributes a JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = $1 AND a.\"key\" LIKE '%completed_rung_%'",
            &[P::I(self.study_id)],
        )?;
        let mut out: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
        for r in rows {
            if let Some(v) = serde_json::from_str::<Value>(&r[2].s()).ok().and_then(|v| v.as_f64()) {
                out.entry(r[0].i() as u64).or_default().insert(r[1].s(), v);
            }
        }
        Ok(out)
    }
}

/// Where a study lives: Optuna's RDB schema (SQLite, PostgreSQL) or its journal file. The tuner sees one method
/// set whichever it is.
pub enum Backend {
    Sql(SqlStorage),
    Journal(JournalStorage),
}

/// A study's storage, as the tuner uses it.
pub struct Storage {
    backend: Backend,
    url: String,
    pub study: String,
    pub direction: Direction,
    /// Every objective's direction (`direction` is the first).
    pub directions: Vec<Direction>,
}

/// The same call on whichever backend holds the study.
macro_rules! each {
    ($self:ident, $b:ident => $call:expr) => {
        match &mut $self.backend {
            Backend::Sql($b) => $call,
            Backend::Journal($b) => $call,
        }
    };
}

impl Storage {
    /// Opens storage `url` — `journal:///path` (Optuna's journal file), `sqlite:///path`, a path, or
    /// `postgresql://…` — and the study `name` in it: created when missing; an existing one only with
    /// `load_if_exists` and the same direction.
    pub fn open(url: &str, name: &str, direction: Direction, load_if_exists: bool) -> Result<Storage, String> {
        Self::open_multi(url, name, &[direction], load_if_exists)
    }

    /// As [`Storage::open`], for a study with one direction per objective.
    pub fn open_multi(url: &str, name: &str, directions: &[Direction], load_if_exists: bool) -> Result<Storage, String> {
        let direction = *directions.first().ok_or("a study needs at least one direction")?;
        let backend = match journal::path_of(url) {
            Some(path) => Backend::Journal(JournalStorage::open_multi(std::path::Path::new(path), name, directions, load_if_exists)?),
            None => Backend::Sql(SqlStorage::open_multi(url, name, directions, load_if_exists)?),
        };
        Ok(Storage { backend, url: url.to_string(), study: name.to_string(), direction, directions: directions.to_vec() })
    }

    /// The URL this storage was opened with (for a second connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn create_trial(&mut self, budget: Option<u64>) -> Result<Option<(i64, u64)>, String> {
        each!(self, b => b.create_trial(budget))
    }

    pub fn enqueue(&mut self, fixed: &serde_json::Map<String, Value>) -> Result<bool, String> {
        each!(self, b => b.enqueue(fixed))
    }

    pub fn pop_waiting(&mut self, budget: Option<u64>) -> Result<Option<Popped>, String> {
        each!(self, b => b.pop_waiting(budget))
    }

    pub fn set_param(&mut self, trial_id: i64, name: &str, internal: f64, d: &Distribution) -> Result<(), String> {
        each!(self, b => b.set_param(trial_id, name, internal, d))
    }

    pub fn report(&mut self, trial_id: i64, step: u64, value: f64) -> Result<(), String> {
        each!(self, b => b.report(trial_id, step, value))
    }

    pub fn finish(&mut self, trial_id: i64, state: State, value: Option<f64>) -> Result<bool, String> {
        each!(self, b => b.finish(trial_id, state, value))
    }

    /// [`Storage::finish`] with one value per objective.
    pub fn finish_values(&mut self, trial_id: i64, state: State, values: &[f64]) -> Result<bool, String> {
        each!(self, b => b.finish_values(trial_id, state, values))
    }

    /// trial_id → the trial system attribute `key`, for the trials of the study that have it.
    pub fn trial_attrs(&mut self, key: &str) -> Result<BTreeMap<i64, Value>, String> {
        each!(self, b => b.trial_attrs(key))
    }

    /// The study system attribute `key`, if set.
    pub fn study_attr(&mut self, key: &str) -> Result<Option<Value>, String> {
        each!(self, b => b.study_attr(key))
    }

    /// trial number → trial_id for every trial of the study.
    pub fn trial_ids(&mut self) -> Result<BTreeMap<u64, i64>, String> {
        each!(self, b => b.trial_ids())
    }

    pub fn heartbeat(&mut self, trial_id: i64) -> Result<(), String> {
        each!(self, b => b.heartbeat(trial_id))
    }

    /// Fails RUNNING trials whose heartbeat is older than `grace`; their numbers. (A journal has no heartbeats.)
    pub fn fail_stale(&mut self, grace: Duration) -> Result<Vec<u64>, String> {
        match &mut self.backend {
            Backend::Sql(b) => b.fail_stale(grace),
            Backend::Journal(b) => b.fail_stale(),
        }
    }

    pub fn trial_id(&mut self, number: u64) -> Result<Option<i64>, String> {
        each!(self, b => b.trial_id(number))
    }

    pub fn trials(&mut self) -> Result<Vec<FrozenTrial>, String> {
        each!(self, b => b.trials())
    }

    pub fn rungs(&mut self) -> Result<BTreeMap<u64, BTreeMap<String, f64>>, String> {
        each!(self, b => b.rungs())
    }

    pub fn set_study_system_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        each!(self, b => b.set_study_system_attr(key, value))
    }

    pub fn set_study_user_attr(&mut self, key: &str, value: &Value) -> Result<(), String> {
        each!(self, b => b.set_study_user_attr(key, value))
    }

    pub fn set_trial_system_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        each!(self, b => b.set_trial_system_attr(trial_id, key, value))
    }

    pub fn set_trial_user_attr(&mut self, trial_id: i64, key: &str, value: &Value) -> Result<(), String> {
        each!(self, b => b.set_trial_user_attr(trial_id, key, value))
    }
}

/// The database's own "now" as SQL, in the form Optuna writes heartbeats with (SQLAlchemy's `current_timestamp()`
/// into a column without time zone): UTC text in SQLite, the session's local time in PostgreSQL.
fn db_now(db: &Db) -> &'static str {
    match db {
        Db::Sqlite(_) => "CURRENT_TIMESTAMP",
        Db::Pg(_) => "LOCALTIMESTAMP",
    }
}

/// A storage URL as messages show it: its password (`user:password@`, `?password=`) replaced by `***`. Connection
/// errors and the `bz tune` header print the URL; the password must never be printed.
pub fn redacted(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else { return url.to_string() };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = u.query_pairs().map(|(k, v)| (k.to_string(), if k == "password" { "***".into() } else { v.to_string() })).collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod redaction_tests {
    #[test]
    fn passwords_never_show() {
        assert_eq!(super::redacted("postgresql://bz:s3cr3t@db.invalid:5432/study"), "postgresql://bz:***@db.invalid:5432/study");
        assert!(!super::redacted("postgresql://db.invalid/study?user=bz&password=s3cr3t").contains("s3cr3t"));
        assert_eq!(super::redacted("sqlite:///runs/s/study.db"), "sqlite:///runs/s/study.db");
    }
}
