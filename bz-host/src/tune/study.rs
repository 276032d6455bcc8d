//! A study's settings, resolved once from `[tune]` (where `bz tune`'s flags have already been applied as overrides).

use crate::config::{ConfigError, Loaded, TuneConfig, TuneDirection};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// `[tune]`, or the config error that says how to add it.
pub fn tune_section(loaded: &Loaded) -> Result<&TuneConfig> {
    Ok(loaded.config.tune.as_ref().ok_or_else(|| ConfigError {
        file: loaded.path.clone(),
        location: None,
        key: None,
        message: "no [tune] section: add [tune] (metric, direction, n_trials) and [tune.params], as in examples/digits-tune.toml".into(),
    })?)
}

pub struct Study {
    pub name: String,
    /// `<run.dir>/<study>`, absolute: trials' run directories, their logs, the summary and `best.toml`.
    pub root: PathBuf,
    pub storage: String,
    pub n_trials: u64,
    pub n_jobs: usize,
    pub timeout: Option<Duration>,
    pub tune: TuneConfig,
    /// The run's seed and epochs, which the tuner is told.
    seed: u64,
    epochs: usize,
}

impl Study {
    /// The settings, with the study's directory created.
    pub fn resolve(loaded: &Loaded, tc: &TuneConfig) -> Result<Study> {
        let timeout = match tc.timeout {
            None => None,
            Some(t) => Some(Duration::try_from_secs_f64(t).map_err(|_| ConfigError {
                file: loaded.path.clone(),
                location: None,
                key: Some("tune.timeout".into()),
                message: format!("{t} is not a number of seconds (--timeout and tune.timeout take one >= 0)"),
            })?),
        };
        let name = tc.study.clone().unwrap_or_else(|| loaded.stem.clone());
        let root = loaded.config.run.dir.join(&name);
        std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let root = std::fs::canonicalize(&root)?;
        let storage = tc.storage.clone().unwrap_or_else(|| format!("sqlite:///{}", root.join("study.db").display()));
        Ok(Study {
            name,
            root,
            storage,
            n_trials: tc.n_trials,
            n_jobs: tc.n_jobs.max(1),
            timeout,
            tune: tc.clone(),
            seed: tc.seed.unwrap_or(loaded.config.run.seed),
            epochs: loaded.config.train.epochs,
        })
    }

    /// The objectives' metrics, in order.
    pub fn metrics(&self) -> &[String] {
        &self.tune.metric.0
    }

    fn directions(&self) -> Vec<&'static str> {
        self.tune.direction.0.iter().map(|d| if *d == TuneDirection::Minimize { "minimize" } else { "maximize" }).collect()
    }

    /// Whether objective value `a` is better than `b` (the first objective's direction).
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.tune.direction.0.first() {
            Some(TuneDirection::Maximize) => a > b,
            _ => a < b,
        }
    }

    /// The tuner plugin's configuration.
    pub fn tuner_config(&self, resume: bool) -> Result<Value> {
        let tc = &self.tune;
        let enqueue: Vec<Value> = tc.enqueue.iter().map(|t| serde_json::to_value(t).unwrap_or(Value::Null)).collect();
        // Several objectives never prune (the config check refused a pruner the user asked for).
        let pruner = if tc.is_multi() { json!({ "type": "none" }) } else { serde_json::to_value(&tc.pruner)? };
        let mut c = json!({
            "study": self.name, "storage": self.storage, "direction": self.directions()[0], "sampler": tc.sampler,
            "seed": self.seed, "n_startup_trials": tc.n_startup_trials, "restart_strategy": tc.restart_strategy,
            "pruner": pruner, "n_trials": self.n_trials, "resume": resume,
            "heartbeat_interval": tc.heartbeat_interval, "enqueue": enqueue, "epochs": self.epochs,
        });
        // Only the keys a study needs, so a tuner that predates them still takes a one-objective config.
        if tc.is_multi() {
            c["directions"] = json!(self.directions());
        }
        if let Some(n) = &tc.nsga2 {
            c["nsga2"] = serde_json::to_value(n)?;
        }
        Ok(c)
    }

    /// The line that opens a study's output; a password in the storage URL is redacted.
    pub fn header(&self) -> String {
        let tc = &self.tune;
        let objectives: Vec<String> = self.directions().iter().zip(self.metrics()).map(|(d, m)| format!("{d} {m}")).collect();
        let constraints: String = tc.constraints.iter().map(|c| format!(" · subject to {c}")).collect();
        format!(
            "study {} · {} · {}{constraints} · {} trials, {} at a time · sampler {} · pruner {}",
            self.name,
            url::Url::parse(&self.storage).map(|u| crate::redact::url(&u)).unwrap_or_else(|_| self.storage.clone()),
            objectives.join(", "),
            self.n_trials,
            self.n_jobs,
            tc.sampler,
            if tc.is_multi() { "none" } else { tc.pruner.name() }
        )
    }
}
