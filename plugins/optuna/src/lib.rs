//! The `optuna` plugin for bz: hyperparameter search whose studies Python Optuna and optuna-dashboard open.
//!
//! `bz tune CONFIG` creates the tuner with the `[tune]` section and the search space of `[tune.params]`:
//! TPE as Optuna 5.0 does it by default (multivariate, constant liar; MOTPE with several objectives, constrained
//! TPE with constraints), NSGA-II, random or grid sampling, seeded; median,
//! percentile, successive-halving, hyperband or no pruning; the study in Optuna's own SQLite schema
//! (`runs/<study>/study.db` by default) or its journal file (`journal:///study.log`), shared by any number of
//! workers, bz or Python.

pub mod cmaes;
pub mod config;
pub mod db;
pub mod journal;
pub mod motpe;
pub mod nsga2;
pub mod pareto;
pub mod pruners;
pub mod space;
pub mod storage;
pub mod tpe;
pub mod tuner;

use bz_plugin_api::config::{ConfigType, PluginConfig};
use bz_plugin_api::outcome::TrialOutcome;
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
        self.0.tell(trial, state_of(state), value).map_err(PluginError::other)
    }

    fn summary(&self) -> String {
        self.0.summary().to_string()
    }

    fn tell_outcome(&mut self, trial: u64, state: TrialState, outcome: &TrialOutcome) -> Result<(), PluginError> {
        self.0.tell_outcome(trial, state_of(state), &outcome.values, &outcome.constraints).map_err(PluginError::other)
    }
}

fn state_of(state: TrialState) -> State {
    match state {
        TrialState::COMPLETE => State::Complete,
        TrialState::PRUNED => State::Pruned,
        _ => State::Fail,
    }
}

/// The file a storage URL names: `journal:///relative.log` or `journal:////absolute.log` (Optuna's journal),
/// `sqlite:///relative.db`, `sqlite:////absolute.db` (SQLAlchemy's URLs, as Optuna takes them) or a plain path;
/// `None` for PostgreSQL; an error for anything else.
fn storage_file(url: &str) -> Result<Option<PathBuf>, PluginError> {
    if let Some(rest) = journal::path_of(url).or_else(|| url.strip_prefix("sqlite:///")) {
        if rest.is_empty() {
            return Err(PluginError::config(format!("storage {url:?} names no file: journal:///study.log (relative) or journal:////abs/study.log")));
        }
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
        return Err(PluginError::config(format!("storage {:?} is not a journal:///, sqlite:/// or postgresql:// URL, or a path", storage::redacted(url))));
    }
    Ok(Some(PathBuf::from(url)))
}

pub struct OptunaPlugin;

impl Plugin for OptunaPlugin {
    const NAME: &'static str = "optuna";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "hyperparameter search: TPE/random/grid, median/percentile/SH/hyperband pruning, Optuna-compatible SQLite, PostgreSQL and journal-file studies";
    const KINDS: u32 = PluginMetadata::TUNER;

    const CONFIG: ConfigType = ConfigType::of::<TunerConfig>();

    fn create_tuner(_host: Host, config: Value, params: Value) -> Result<Option<Box<dyn Tuner>>, PluginError> {
        let space = tuner::parse_space(&params).map_err(PluginError::config)?;
        let conditions = space::Conditions::parse(&params, &space).map_err(PluginError::config)?;
        let cfg = TunerConfig::parse(&config)?;
        // `check` made sure both are there.
        let (study, url) = (cfg.study.as_deref().unwrap_or_default(), cfg.storage.as_deref().unwrap_or_default());
        if let Some(db) = storage_file(url)? {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| PluginError::new(PluginError::IO, format!("{}: {e}", parent.display())))?;
            }
        }
        let storage = storage::Storage::open_multi(url, study, &cfg.all_directions(), cfg.resume).map_err(PluginError::config)?;
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
        assert_eq!(storage_file("sqlite:///runs/s/study.db").unwrap(), Some(PathBuf::from("runs/s/study.db")));
        assert_eq!(storage_file("sqlite:////tmp/x.db").unwrap(), Some(PathBuf::from("/tmp/x.db")));
        assert_eq!(storage_file("journal:///runs/s/study.log").unwrap(), Some(PathBuf::from("runs/s/study.log")));
        assert_eq!(storage_file("journal:////tmp/x.log").unwrap(), Some(PathBuf::from("/tmp/x.log")));
        assert!(storage_file("journal:///").is_err());
        assert_eq!(storage_file("study.db").unwrap(), Some(PathBuf::from("study.db")));
        assert_eq!(storage_file("postgresql://bz@127.0.0.1:5432/bz").unwrap(), None);
        assert!(storage_file("postgresql+psycopg2://x").is_err());
        assert!(storage_file("redis://x").is_err());
    }
}
