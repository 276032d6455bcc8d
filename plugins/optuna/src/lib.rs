//! The `optuna` plugin for bz: hyperparameter search whose studies Python Optuna and optuna-dashboard open.
//!
//! `bz tune CONFIG` creates the tuner with the `[tune]` section and the search space of `[tune.params]`:
//! TPE as Optuna 5.0 does it by default (multivariate, constant liar), random or grid sampling, seeded; median,
//! percentile, successive-halving, hyperband or no pruning; the study in Optuna's own SQLite schema
//! (`runs/<study>/study.db` by default), shared by any number of workers, bz or Python.

pub mod cmaes;
pub mod config;
pub mod db;
pub mod pruners;
pub mod space;
pub mod storage;
pub mod tpe;
pub mod tuner;

use bz_plugin_api::config::{ConfigType, PluginConfig};
use bz_plugin_api::{export_plugin, log, Host, Level, Plugin, PluginError, PluginMetadata, Trial, TrialState, Tuner};
use config::TunerConfig;
use serde_json::Value;
use space::State;
use std::path::PathBuf;
use tuner::StudyTuner;

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

pub struct OptunaPlugin;

impl Plugin for OptunaPlugin {
    const NAME: &'static str = "optuna";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "hyperparameter search: TPE/random/grid, median/percentile/SH/hyperband pruning, Optuna-compatible SQLite and PostgreSQL studies";
    const KINDS: u32 = PluginMetadata::TUNER;

    const CONFIG: ConfigType = ConfigType::of::<TunerConfig>();

    fn create_tuner(_host: Host, config: Value, params: Value) -> Result<Option<Box<dyn Tuner>>, PluginError> {
        let space = tuner::parse_space(&params).map_err(PluginError::config)?;
        let conditions = space::Conditions::parse(&params, &space).map_err(PluginError::config)?;
        let cfg = TunerConfig::parse(&config)?;
        // `check` made sure both are there.
        let (study, url) = (cfg.study.as_deref().unwrap_or_default(), cfg.storage.as_deref().unwrap_or_default());
        if let Some(db) = sqlite_path(url)? {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| PluginError::new(PluginError::IO, format!("{}: {e}", parent.display())))?;
            }
        }
        let storage = storage::Storage::open(url, study, cfg.direction, cfg.resume).map_err(PluginError::config)?;
        let sampler = cfg.sampler();
        if let (tuner::Sampler::CmaEs(_), Some(first)) = (&sampler, cmaes::categorical_params(&space).first()) {
            log!(Level::Warn, "CMA-ES does not search categorical parameters: {first} and any other is sampled at random, as Optuna's CmaEsSampler does");
        }
        let mut t = StudyTuner::new(storage, space, sampler, cfg.pruner(), cfg.n_trials, cfg.heartbeat())
            .and_then(|t| t.with_conditions(conditions))
            .map_err(PluginError::config)?;
        for fixed in &cfg.enqueue {
            t.enqueue(fixed).map_err(PluginError::other)?;
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
