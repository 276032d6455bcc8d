//! The tuner's configuration: the `[tune]` section as bz sends it (with `study`, `storage`, `resume` and `epochs`
//! resolved), typed, so that an unknown key anywhere, the pruner's included, is an error naming it.

use crate::cmaes::{CmaEsSampler, Restart};
use crate::nsga2::Nsga2Sampler;
use crate::pruners::Pruner;
use crate::space::Direction;
use crate::tpe::TpeSampler;
use crate::tuner::Sampler;
use bz_plugin_api::config::{from_value_at, key_error, PluginConfig};
use bz_plugin_api::PluginError;
use schemars::JsonSchema;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `[tune]` as the tuner takes it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TunerConfig {
    /// The study's name (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// `sqlite:///relative.db`, `sqlite:////absolute.db`, a path, `postgresql://user@host:port/db`, or
    /// `journal:///relative.log` / `journal:////absolute.log` (Optuna's journal file) (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub direction: Direction,
    /// Several objectives (Optuna's `directions`), one per metric; when given, `direction` is ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub directions: Vec<Direction>,
    pub sampler: SamplerKind,
    /// `sampler = "nsga2"`'s options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsga2: Option<Nsga2Options>,
    /// The sampler's seed.
    pub seed: u64,
    /// Random trials before the model takes over; default 10 (TPE), 1 (CMA-ES).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_startup_trials: Option<u64>,
    /// CMA-ES: restart a converged search with a larger population, `ipop` or `bipop`; default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_strategy: Option<Restart>,
    pub pruner: PrunerConfig,
    /// The study's total number of trials; none: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_trials: Option<u64>,
    /// Continue an existing study of the same name instead of refusing it.
    pub resume: bool,
    /// Seconds between a running trial's heartbeats (at least 0.2); default 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<f64>,
    /// Trials to run first, as `{ "config.key": value, … }`.
    pub enqueue: Vec<Map<String, Value>>,
    /// Epochs per trial: hyperband's default `max_resource`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
}

impl PluginConfig for TunerConfig {
    fn check(&self) -> Result<(), PluginError> {
        if self.study.as_deref().is_none_or(str::is_empty) {
            return Err(key_error("study", "a study name is required"));
        }
        if self.storage.as_deref().is_none_or(str::is_empty) {
            return Err(key_error("storage", "a storage URL or path is required"));
        }
        if self.directions.len() > 1 && self.pruner != PrunerConfig::None {
            return Err(key_error(
                "pruner",
                "pruning is not supported with several objectives (Optuna refuses `report` in multi-objective studies): set tune.pruner.type = \"none\"",
            ));
        }
        if let Some(n) = &self.nsga2 {
            if self.sampler != SamplerKind::Nsga2 {
                return Err(key_error("nsga2", "these options are for sampler = \"nsga2\""));
            }
            n.check()?;
        }
        if self.directions.len() > 1 && self.sampler == SamplerKind::Cmaes {
            return Err(key_error("sampler", "cmaes searches one objective, as Optuna's CmaEsSampler: use tpe (MOTPE) or nsga2 for several"));
        }
        if self.restart_strategy.is_some() && self.sampler != SamplerKind::Cmaes {
            return Err(key_error("restart_strategy", "applies to sampler = \"cmaes\" only"));
        }
        if let PrunerConfig::Percentile(p) = &self.pruner {
            if !(0.0..=100.0).contains(&p.percentile) {
                return Err(key_error("pruner.percentile", format!("{} is not in [0, 100]", p.percentile)));
            }
        }
        Ok(())
    }
}

impl TunerConfig {
    pub fn sampler(&self) -> Sampler {
        match self.sampler {
            SamplerKind::Tpe => {
                Sampler::Tpe(TpeSampler { n_startup_trials: self.n_startup_trials.unwrap_or(10) as usize, ..TpeSampler::new(self.seed, self.all_directions()) })
            }
            SamplerKind::Random => Sampler::Random { seed: self.seed },
            SamplerKind::Cmaes => Sampler::CmaEs(CmaEsSampler {
                seed: self.seed,
                n_startup_trials: self.n_startup_trials.unwrap_or(1) as usize,
                restart: self.restart_strategy,
                ..Default::default()
            }),
            SamplerKind::Grid => Sampler::Grid,
            SamplerKind::Nsga2 => {
                let o = self.nsga2.clone().unwrap_or_default();
                Sampler::Nsga2(Nsga2Sampler {
                    seed: self.seed,
                    population_size: o.population_size,
                    mutation_prob: o.mutation_prob,
                    crossover_prob: o.crossover_prob,
                    swapping_prob: o.swapping_prob,
                })
            }
        }
    }

    /// The study's directions: `directions` when given, else `direction` alone.
    pub fn all_directions(&self) -> Vec<Direction> {
        if self.directions.is_empty() {
            vec![self.direction]
        } else {
            self.directions.clone()
        }
    }

    pub fn pruner(&self) -> Pruner {
        self.pruner.to_pruner(self.epochs)
    }

    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.heartbeat_interval.unwrap_or(10.0).clamp(0.2, 86_400.0))
    }
}

/// How trials are proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Tree-structured Parzen estimator, as Optuna's default (multivariate, constant liar).
    #[default]
    Tpe,
    Random,
    /// CMA-ES for float and int parameters, as Optuna's `CmaEsSampler` (categorical ones at random).
    Cmaes,
    /// Every combination of the (categorical or stepped) search space.
    Grid,
    /// The genetic algorithm NSGA-II (Optuna's `NSGAIISampler`), for several objectives.
    Nsga2,
}

/// `sampler = "nsga2"`'s options, with Optuna's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Nsga2Options {
    /// Trials per generation (at least 2).
    pub population_size: usize,
    /// Chance to redraw each parameter at random; default 1 / number of parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation_prob: Option<f64>,
    /// Chance that a child is a crossover of two parents rather than a copy of one.
    pub crossover_prob: f64,
    /// Uniform crossover: chance to take each parameter from the second parent.
    pub swapping_prob: f64,
}

impl Default for Nsga2Options {
    fn default() -> Self {
        Nsga2Options { population_size: 50, mutation_prob: None, crossover_prob: 0.9, swapping_prob: 0.5 }
    }
}

impl Nsga2Options {
    fn check(&self) -> Result<(), PluginError> {
        if self.population_size < 2 {
            return Err(key_error("nsga2.population_size", format!("{} must be at least 2", self.population_size)));
        }
        for (k, v) in [("mutation_prob", self.mutation_prob.unwrap_or(0.0)), ("crossover_prob", self.crossover_prob), ("swapping_prob", self.swapping_prob)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(key_error(&format!("nsga2.{k}"), format!("{v} is not in [0, 1]")));
            }
        }
        Ok(())
    }
}

/// `[tune.pruner]`: `type` picks the pruner (default `median`), and each takes only its own options.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PrunerConfig {
    Median(MedianOptions),
    Percentile(PercentileOptions),
    SuccessiveHalving(HalvingOptions),
    Hyperband(HyperbandOptions),
    None,
}

impl Default for PrunerConfig {
    fn default() -> PrunerConfig {
        PrunerConfig::Median(MedianOptions::default())
    }
}

/// The tag alone, to pick the options' type.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum PrunerKind {
    Median,
    Percentile,
    SuccessiveHalving,
    Hyperband,
    None,
}

/// What `type = "none"` takes: nothing. Options of other pruners are refused, as bz refuses them in
/// `[tune.pruner]`: a key that does not apply is an error, not a setting that silently does nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

// By hand, not serde's internally tagged enum: `type` may be left out (median), and serde's buffering would lose
// which option key a type error is about.
impl<'de> Deserialize<'de> for PrunerConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut table = Map::<String, Value>::deserialize(d)?;
        let kind = match table.remove("type") {
            Some(tag) => from_value_at("type", tag)?,
            None => PrunerKind::Median,
        };
        Ok(match kind {
            PrunerKind::Median => PrunerConfig::Median(from_value_at("", Value::Object(table))?),
            PrunerKind::Percentile => {
                let percentile = table.remove("percentile").ok_or_else(|| D::Error::custom("`percentile`: is required"))?;
                let percentile = from_value_at("percentile", percentile)?;
                PrunerConfig::Percentile(PercentileOptions { percentile, options: from_value_at("", Value::Object(table))? })
            }
            PrunerKind::SuccessiveHalving => PrunerConfig::SuccessiveHalving(from_value_at("", Value::Object(table))?),
            PrunerKind::Hyperband => PrunerConfig::Hyperband(from_value_at("", Value::Object(table))?),
            PrunerKind::None => {
                from_value_at::<NoOptions, _>("", Value::Object(table))?;
                PrunerConfig::None
            }
        })
    }
}

/// Prune a trial whose best value so far is worse than the median of completed trials at the same step.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MedianOptions {
    /// Completed trials before any pruning.
    #[serde(default = "five")]
    pub n_startup_trials: u64,
    /// Steps of each trial before it can be pruned.
    #[serde(default)]
    pub n_warmup_steps: u64,
    /// Check every N steps.
    #[serde(default = "one")]
    pub interval_steps: u64,
    /// Trials that must have reported the step.
    #[serde(default = "one")]
    pub n_min_trials: u64,
}

impl Default for MedianOptions {
    fn default() -> MedianOptions {
        MedianOptions { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 }
    }
}

/// The median pruner at another percentile (of the best values; flipped when maximising).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PercentileOptions {
    /// In [0, 100] (required).
    pub percentile: f64,
    #[serde(flatten)]
    pub options: MedianOptions,
}

/// Asynchronous successive halving: at each rung a trial must be in the top 1/`reduction_factor`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HalvingOptions {
    /// Steps before the first rung; default: estimated from the first completed trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resource: Option<u64>,
    /// η (at least 2).
    #[serde(default = "four")]
    pub reduction_factor: u64,
    #[serde(default)]
    pub min_early_stopping_rate: u32,
    /// Trials that must reach a rung before any is promoted.
    #[serde(default)]
    pub bootstrap_count: u64,
}

/// Hyperband: successive-halving brackets with different early-stopping rates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HyperbandOptions {
    /// At least 1.
    #[serde(default = "one")]
    pub min_resource: u64,
    /// Default: the run's epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resource: Option<u64>,
    /// η (at least 2).
    #[serde(default = "three")]
    pub reduction_factor: u64,
    /// Trials that must reach a rung before any is promoted.
    #[serde(default)]
    pub bootstrap_count: u64,
}

fn one() -> u64 {
    1
}
fn three() -> u64 {
    3
}
fn four() -> u64 {
    4
}
fn five() -> u64 {
    5
}

impl PrunerConfig {
    /// The pruner, with Optuna's lower bounds applied as before (η at least 2, hyperband's minimum at least 1).
    fn to_pruner(&self, epochs: Option<u64>) -> Pruner {
        let percentile = |percentile: f64, n_startup_trials: u64, n_warmup_steps: u64, interval_steps: u64, n_min_trials: u64| Pruner::Percentile {
            percentile,
            n_startup_trials: n_startup_trials as usize,
            n_warmup_steps,
            interval_steps,
            n_min_trials: n_min_trials as usize,
        };
        match self {
            PrunerConfig::None => Pruner::None,
            PrunerConfig::Median(o) => percentile(50.0, o.n_startup_trials, o.n_warmup_steps, o.interval_steps, o.n_min_trials),
            PrunerConfig::Percentile(PercentileOptions { percentile: p, options: o }) => {
                percentile(*p, o.n_startup_trials, o.n_warmup_steps, o.interval_steps, o.n_min_trials)
            }
            PrunerConfig::SuccessiveHalving(o) => Pruner::SuccessiveHalving {
                min_resource: o.min_resource,
                reduction_factor: o.reduction_factor.max(2),
                min_early_stopping_rate: o.min_early_stopping_rate,
                bootstrap_count: o.bootstrap_count as usize,
            },
            PrunerConfig::Hyperband(o) => Pruner::Hyperband {
                min_resource: o.min_resource.max(1),
                max_resource: o.max_resource.or(epochs),
                reduction_factor: o.reduction_factor.max(2),
                bootstrap_count: o.bootstrap_count as usize,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<TunerConfig, String> {
        let mut base = json!({ "study": "s", "storage": "study.db" });
        base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
        TunerConfig::parse(&base).map_err(|e| e.message.to_string())
    }

    #[test]
    fn unknown_pruner_keys_are_refused_with_the_key_named() {
        let e = parse(json!({ "pruner": { "type": "median", "n_warmup": 3 } })).unwrap_err();
        assert!(e.starts_with("`pruner.n_warmup`: unknown key; did you mean `n_warmup_steps`?"), "{e}");
        // A key of another pruner does not apply.
        let e = parse(json!({ "pruner": { "type": "median", "reduction_factor": 3 } })).unwrap_err();
        assert!(e.starts_with("`pruner.reduction_factor`: unknown key (known keys: `n_startup_trials`"), "{e}");
        let e = parse(json!({ "pruner": { "n_startup_trials": "5" } })).unwrap_err();
        assert!(e.starts_with("`pruner.n_startup_trials`: invalid type: string \"5\""), "{e}");
        let e = parse(json!({ "pruner": { "type": "median", "n_warmup": 1 } })).unwrap_err();
        assert!(e.starts_with("`pruner.n_warmup`: unknown key; did you mean `n_warmup_steps`?"), "{e}");
        let e = parse(json!({ "pruner": { "type": "none", "n_warmup": 1 } })).unwrap_err();
        assert!(e.starts_with("`pruner.n_warmup`: unknown key (this table takes no keys)"), "{e}");
        // Pruning switched off takes no options: another pruner's is refused, as bz refuses it in [tune.pruner].
        assert!(parse(json!({ "pruner": { "type": "none", "n_startup_trials": 2 } })).unwrap_err().starts_with("`pruner.n_startup_trials`"));
        assert_eq!(parse(json!({ "pruner": { "type": "none" } })).unwrap().pruner(), Pruner::None);
        let e = parse(json!({ "pruner": { "type": "hyperbnd" } })).unwrap_err();
        assert!(e.starts_with("`pruner.type`: unknown value `hyperbnd`; did you mean `hyperband`?"), "{e}");
    }

    #[test]
    fn unknown_top_level_keys_and_values_are_refused() {
        assert!(parse(json!({ "samplr": "tpe" })).unwrap_err().starts_with("`samplr`: unknown key; did you mean `sampler`?"));
        assert!(parse(json!({ "sampler": "cma" })).unwrap_err().starts_with("`sampler`: unknown value `cma`"));
        assert!(parse(json!({ "direction": "up" })).unwrap_err().starts_with("`direction`: unknown value `up`"));
        assert_eq!(TunerConfig::parse(&json!({ "storage": "x" })).unwrap_err().message, "`study`: a study name is required");
    }

    #[test]
    fn defaults_are_as_before() {
        let c = parse(json!({ "pruner": {}, "n_startup_trials": null, "heartbeat_interval": null })).unwrap();
        assert_eq!(c.pruner(), Pruner::Percentile { percentile: 50.0, n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 });
        assert_eq!(c.direction, Direction::Minimize);
        assert!(matches!(c.sampler(), Sampler::Tpe(t) if t.n_startup_trials == 10 && t.seed == 0));
        assert_eq!(c.heartbeat(), std::time::Duration::from_secs(10));
        let c = parse(json!({ "pruner": { "type": "hyperband", "reduction_factor": 1 }, "epochs": 9 })).unwrap();
        assert_eq!(c.pruner(), Pruner::Hyperband { min_resource: 1, max_resource: Some(9), reduction_factor: 2, bootstrap_count: 0 });
        let c = parse(json!({ "pruner": { "type": "successive_halving" } })).unwrap();
        assert_eq!(c.pruner(), Pruner::SuccessiveHalving { min_resource: None, reduction_factor: 4, min_early_stopping_rate: 0, bootstrap_count: 0 });
    }

    #[test]
    fn cmaes_takes_one_objective() {
        let two = json!({ "sampler": "cmaes", "directions": ["minimize", "minimize"], "pruner": { "type": "none" } });
        assert!(parse(two).unwrap_err().starts_with("`sampler`: cmaes searches one objective"));
        assert!(parse(json!({ "sampler": "cmaes", "directions": ["minimize"] })).is_ok());
    }

    #[test]
    fn percentile_needs_a_percentile_in_range() {
        assert_eq!(parse(json!({ "pruner": { "type": "percentile" } })).unwrap_err(), "`pruner.percentile`: is required");
        assert_eq!(parse(json!({ "pruner": { "type": "percentile", "percentile": 120.0 } })).unwrap_err(), "`pruner.percentile`: 120 is not in [0, 100]");
        let c = parse(json!({ "pruner": { "type": "percentile", "percentile": 25.0, "n_warmup_steps": 2 } })).unwrap();
        assert_eq!(c.pruner(), Pruner::Percentile { percentile: 25.0, n_startup_trials: 5, n_warmup_steps: 2, interval_steps: 1, n_min_trials: 1 });
    }

    #[test]
    fn the_normalised_config_reads_back_the_same() {
        let c = parse(json!({ "pruner": { "type": "hyperband", "max_resource": 27 }, "sampler": "grid", "direction": "maximize" })).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["pruner"], json!({ "type": "hyperband", "min_resource": 1, "max_resource": 27, "reduction_factor": 3, "bootstrap_count": 0 }));
        assert_eq!(TunerConfig::parse(&v).unwrap(), c);
    }

    #[test]
    fn the_schema_lists_each_pruner_with_its_own_keys() {
        let s = bz_plugin_api::config::schema::<TunerConfig>();
        assert_eq!(s["additionalProperties"], false);
        let text = s.to_string();
        for word in ["successive_halving", "hyperband", "n_warmup_steps", "min_early_stopping_rate", "\"tpe\""] {
            assert!(text.contains(word), "{word} missing from {text}");
        }
    }
}
