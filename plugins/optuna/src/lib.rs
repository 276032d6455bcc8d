//! The `optuna` plugin for bz: hyperparameter search whose studies Python Optuna and optuna-dashboard open.
//!
//! `bz tune CONFIG` creates the tuner with the `[tune]` section and the search space of `[tune.params]`:
//! TPE as Optuna 5.0 does it by default (multivariate, constant liar), random or grid sampling, seeded; median,
//! percentile, successive-halving, hyperband or no pruning; the study in Optuna's own SQLite schema
//! (`runs/<study>/study.db` by default), shared by any number of workers, bz or Python.

pub mod db;
pub mod pruners;
pub mod space;
pub mod storage;
pub mod tpe;
pub mod tuner;

use bz_plugin_api::{export_plugin, Host, Plugin, PluginError, PluginMetadata, Trial, TrialState, Tuner};
use pruners::Pruner;
use serde_json::Value;
use space::{Direction, State};
use std::path::PathBuf;
use std::time::Duration;
use tuner::{Sampler, StudyTuner};

struct OptunaTuner(StudyTuner);

impl Tuner for OptunaTuner {
    fn ask(&mut self) -> Result<Option<Trial>, PluginError> {
        let t = self.0.ask().map_err(PluginError::other)?;
        Ok(t.map(|(number, params)| Trial { id: number, params_json: Value::Object(params).to_string().into() }))
    }

    fn report(&mut self, trial: u64, step: u64, value: f64) -> Result<bool, PluginError> {
        self.0.report(trial, step, value).map_err(PluginError::other)
    }

    fn tell(&mut self, trial: u64, state: TrialState, value: Option<f64>) -> Result<(), PluginError> {
        let state = match state {
            TrialState::COMPLETE => State::Complete,
            TrialState::PRUNED => State::Pruned,
            _ => State::Fail,
        };
        self.0.tell(trial, state, value).map_err(PluginError::other)
    }

    fn summary(&self) -> String {
        self.0.summary().to_string()
    }
}

/// The SQLite file of `sqlite:///relative.db`, `sqlite:////absolute.db` (SQLAlchemy's URLs, as Optuna takes
/// them) or a plain path; `None` for PostgreSQL; an error for anything else.
fn sqlite_path(url: &str) -> Result<Option<PathBuf>, PluginError> {
    if let Some(rest) = url.strip_prefix("sqlite:///") {
        return Ok(Some(PathBuf::from(rest)));
    }
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        return Ok(None);
    }
    if url.starts_with("postgresql+") {
        return Err(PluginError::config(format!(
            "storage {:?}: drop the `+driver` part (postgresql://user@host:port/db): bz connects by itself",
            storage::redacted(url)
        )));
    }
    if url.contains("://") {
        return Err(PluginError::config(format!("storage {:?} is not a sqlite:/// or postgresql:// URL, or a path", storage::redacted(url))));
    }
    Ok(Some(PathBuf::from(url)))
}

fn pruner(v: &Value, epochs: Option<u64>) -> Result<Pruner, PluginError> {
    let u = |k: &str, d: u64| v[k].as_u64().unwrap_or(d);
    Ok(match v["type"].as_str().unwrap_or("median") {
        "none" => Pruner::None,
        "median" => Pruner::Percentile {
            percentile: 50.0,
            n_startup_trials: u("n_startup_trials", 5) as usize,
            n_warmup_steps: u("n_warmup_steps", 0),
            interval_steps: u("interval_steps", 1),
            n_min_trials: u("n_min_trials", 1) as usize,
        },
        "percentile" => {
            let p = v["percentile"]
                .as_f64()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| PluginError::config("tune.pruner: `percentile` in [0, 100] is required"))?;
            Pruner::Percentile {
                percentile: p,
                n_startup_trials: u("n_startup_trials", 5) as usize,
                n_warmup_steps: u("n_warmup_steps", 0),
                interval_steps: u("interval_steps", 1),
                n_min_trials: u("n_min_trials", 1) as usize,
            }
        }
        "successive_halving" => Pruner::SuccessiveHalving {
            min_resource: v["min_resource"].as_u64(),
            reduction_factor: u("reduction_factor", 4).max(2),
            min_early_stopping_rate: u("min_early_stopping_rate", 0) as u32,
            bootstrap_count: u("bootstrap_count", 0) as usize,
        },
        "hyperband" => Pruner::Hyperband {
            min_resource: u("min_resource", 1).max(1),
            max_resource: v["max_resource"].as_u64().or(epochs),
            reduction_factor: u("reduction_factor", 3).max(2),
            bootstrap_count: u("bootstrap_count", 0) as usize,
        },
        other => {
            return Err(PluginError::config(format!("tune.pruner.type = {other:?} is not one of median, percentile, successive_halving, hyperband, none")))
        }
    })
}

pub struct OptunaPlugin;

impl Plugin for OptunaPlugin {
    const NAME: &'static str = "optuna";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "hyperparameter search: TPE/random/grid, median/percentile/SH/hyperband pruning, Optuna-compatible SQLite and PostgreSQL studies";
    const KINDS: u32 = PluginMetadata::TUNER;

    fn create_tuner(_host: Host, config: Value, space: Value) -> Result<Option<Box<dyn Tuner>>, PluginError> {
        let space = tuner::parse_space(&space).map_err(PluginError::config)?;
        let direction = match config["direction"].as_str().unwrap_or("minimize") {
            "minimize" => Direction::Minimize,
            "maximize" => Direction::Maximize,
            other => return Err(PluginError::config(format!("tune.direction = {other:?} must be \"minimize\" or \"maximize\""))),
        };
        let study = config["study"].as_str().ok_or_else(|| PluginError::config("no study name"))?;
        let url = config["storage"].as_str().ok_or_else(|| PluginError::config("no storage"))?;
        if let Some(db) = sqlite_path(url)? {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| PluginError::new(PluginError::IO, format!("{}: {e}", parent.display())))?;
            }
        }
        let resume = config["resume"].as_bool().unwrap_or(false);
        let storage = storage::Storage::open(url, study, direction, resume).map_err(PluginError::config)?;
        let seed = config["seed"].as_u64().unwrap_or(0);
        let sampler = match config["sampler"].as_str().unwrap_or("tpe") {
            "tpe" => Sampler::Tpe(tpe::TpeSampler { seed, n_startup_trials: config["n_startup_trials"].as_u64().unwrap_or(10) as usize, ..Default::default() }),
            "random" => Sampler::Random { seed },
            "grid" => Sampler::Grid,
            other => return Err(PluginError::config(format!("tune.sampler = {other:?} is not one of tpe, random, grid"))),
        };
        let pruner = pruner(&config["pruner"], config["epochs"].as_u64())?;
        let heartbeat = Duration::from_secs_f64(config["heartbeat_interval"].as_f64().unwrap_or(10.0).max(0.2));
        let mut t = StudyTuner::new(storage, space, sampler, pruner, config["n_trials"].as_u64(), heartbeat).map_err(PluginError::config)?;
        for e in config["enqueue"].as_array().into_iter().flatten() {
            if let Some(fixed) = e.as_object() {
                t.enqueue(fixed).map_err(PluginError::other)?;
            }
        }
        Ok(Some(Box::new(OptunaTuner(t))))
    }
}

export_plugin!(OptunaPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls() {
        assert_eq!(sqlite_path("sqlite:///runs/s/study.db").unwrap(), Some(PathBuf::from("runs/s/study.db")));
        assert_eq!(sqlite_path("sqlite:////tmp/x.db").unwrap(), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(sqlite_path("study.db").unwrap(), Some(PathBuf::from("study.db")));
        assert_eq!(sqlite_path("postgresql://bz@127.0.0.1:5432/bz").unwrap(), None);
        assert!(sqlite_path("postgresql+psycopg2://x").is_err());
        assert!(sqlite_path("redis://x").is_err());
    }
}
