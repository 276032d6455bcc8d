//! `[tune]`: what `bz tune` searches (`params`), how it prunes (`pruner`) and how long it runs.

use super::tagged::{self, part, NoKeys, SectionError, Tagged};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// The objective: a metric of the epoch lines, e.g. `val/loss`.
    #[serde(default = "default_tune_metric")]
    pub metric: String,
    #[serde(default)]
    pub direction: TuneDirection,
    /// The study's total number of trials (every worker counts towards it).
    #[serde(default = "default_n_trials")]
    pub n_trials: u64,
    /// Seconds after which no new trial starts.
    pub timeout: Option<f64>,
    /// Trials run at once by this worker.
    #[serde(default = "one_job")]
    pub n_jobs: usize,
    /// Default: the config file's name.
    pub study: Option<String>,
    /// Default: `sqlite:///<run.dir>/<study>/study.db`.
    pub storage: Option<String>,
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Default: run.seed.
    pub seed: Option<u64>,
    pub n_startup_trials: Option<u64>,
    /// Seconds between a running trial's heartbeats; a trial silent for twice as long is failed.
    pub heartbeat_interval: Option<f64>,
    /// The tuner plugin.
    #[serde(default = "default_tuner")]
    pub plugin: String,
    #[serde(default)]
    pub pruner: PrunerConfig,
    /// Config key → its range, in config order (the order of the search space).
    #[serde(default)]
    pub params: IndexMap<String, ParamSpec>,
    /// Trials to run first, as `{ "config.key" = value, … }`.
    #[serde(default)]
    pub enqueue: Vec<toml::Table>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TuneDirection {
    #[default]
    Minimize,
    Maximize,
}

fn default_tune_metric() -> String {
    "val/loss".into()
}
fn default_n_trials() -> u64 {
    20
}
fn one_job() -> usize {
    1
}
fn default_sampler() -> String {
    "tpe".into()
}
fn default_tuner() -> String {
    "optuna".into()
}

/// `type = "…"` and that pruner's options. Options left out stay out of the tuner's JSON, so the tuner plugin
/// keeps deciding their defaults.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PrunerConfig {
    Median(MedianOptions),
    Percentile(PercentileOptions),
    SuccessiveHalving(HalvingOptions),
    Hyperband(HyperbandOptions),
    None,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        PrunerConfig::Median(MedianOptions::default())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MedianOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_startup_trials: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_warmup_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_min_trials: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PercentileOptions {
    /// In [0, 100]: a trial worse than this percentile of the others at the same step is pruned.
    pub percentile: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_startup_trials: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_warmup_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_min_trials: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HalvingOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resource: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_factor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_early_stopping_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_count: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HyperbandOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resource: Option<u64>,
    /// Default: `train.epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resource: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_factor: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_count: Option<u64>,
}

impl PrunerConfig {
    /// The pruner's name as users write it, e.g. `"hyperband"`.
    pub fn name(&self) -> &'static str {
        match self {
            PrunerConfig::Median(_) => "median",
            PrunerConfig::Percentile(_) => "percentile",
            PrunerConfig::SuccessiveHalving(_) => "successive_halving",
            PrunerConfig::Hyperband(_) => "hyperband",
            PrunerConfig::None => "none",
        }
    }
}

impl Tagged for PrunerConfig {
    const TAG: &'static str = "type";
    const DEFAULT: Option<&'static str> = Some("median");
    const KINDS: &'static [&'static str] = &["median", "percentile", "successive_halving", "hyperband", "none"];

    fn common_fields() -> &'static [&'static str] {
        &[]
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "median" => tagged::fields::<MedianOptions>(),
            "percentile" => tagged::fields::<PercentileOptions>(),
            "successive_halving" => tagged::fields::<HalvingOptions>(),
            "hyperband" => tagged::fields::<HyperbandOptions>(),
            _ => &[],
        }
    }

    fn build(kind: &str, own: toml::Table, _common: toml::Table) -> Result<Self, SectionError> {
        Ok(match kind {
            "median" => PrunerConfig::Median(part(own)?),
            "percentile" => PrunerConfig::Percentile(part(own)?),
            "successive_halving" => PrunerConfig::SuccessiveHalving(part(own)?),
            "hyperband" => PrunerConfig::Hyperband(part(own)?),
            _ => {
                part::<NoKeys>(own)?;
                PrunerConfig::None
            }
        })
    }
}

impl<'de> Deserialize<'de> for PrunerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

/// One searched config key: `{ type = "float" | "int" | "categorical", … }`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamSpec {
    Float(FloatRange),
    Int(IntRange),
    Categorical(Choices),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FloatRange {
    pub low: f64,
    pub high: f64,
    /// Sample on a log scale (needs low > 0, no step).
    #[serde(default)]
    pub log: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntRange {
    pub low: i64,
    pub high: i64,
    #[serde(default)]
    pub log: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Choices {
    pub choices: Vec<toml::Value>,
}

impl Tagged for ParamSpec {
    const TAG: &'static str = "type";
    const DEFAULT: Option<&'static str> = None;
    const KINDS: &'static [&'static str] = &["float", "int", "categorical"];

    fn common_fields() -> &'static [&'static str] {
        &[]
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "float" => tagged::fields::<FloatRange>(),
            "int" => tagged::fields::<IntRange>(),
            _ => tagged::fields::<Choices>(),
        }
    }

    fn build(kind: &str, own: toml::Table, _common: toml::Table) -> Result<Self, SectionError> {
        Ok(match kind {
            "float" => ParamSpec::Float(part(own)?),
            "int" => ParamSpec::Int(part(own)?),
            _ => ParamSpec::Categorical(part(own)?),
        })
    }
}

impl<'de> Deserialize<'de> for ParamSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}
