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
    /// CMA-ES: restart a converged search with a larger population (`"ipop"` or `"bipop"`).
    pub restart_strategy: Option<String>,
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

/// One searched config key: `{ type = "float" | "int" | "categorical", …, when = { … } }`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamSpec {
    #[serde(flatten)]
    pub range: ParamRange,
    /// Search the key only in trials where each named categorical parameter (one listed earlier) took one of
    /// the given values; in the other trials the key keeps the config's value, as a define-by-run `if` would.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub when: IndexMap<String, AnyOf>,
}

/// The values a searched key can take.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParamRange {
    Float(FloatRange),
    Int(IntRange),
    Categorical(Choices),
}

/// A condition's accepted values: one value, or a list of them (written back as a list).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnyOf(pub Vec<toml::Value>);

impl<'de> Deserialize<'de> for AnyOf {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match toml::Value::deserialize(deserializer)? {
            toml::Value::Array(values) => AnyOf(values),
            value => AnyOf(vec![value]),
        })
    }
}

/// `when` only names keys of the same table, each searched before the key it guards and categorical, and only
/// values among their choices: a condition that can never hold is a typo. Returns the offending key and why.
pub(super) fn check_conditions(params: &IndexMap<String, ParamSpec>) -> Result<(), (String, String)> {
    for (i, (name, spec)) in params.iter().enumerate() {
        for (parent, AnyOf(values)) in &spec.when {
            let at = format!("tune.params.{name:?}.when.{parent:?}");
            let earlier = params.get_index_of(parent).is_some_and(|j| j < i);
            let choices = match params.get(parent).map(|p| &p.range) {
                _ if !earlier => {
                    return Err((
                        at,
                        format!(
                            "{parent:?} is not a parameter listed before {name:?} in [tune.params]: a condition names a categorical parameter searched earlier"
                        ),
                    ));
                }
                Some(ParamRange::Categorical(c)) => &c.choices,
                _ => return Err((at, format!("{parent:?} is not categorical: conditions take categorical parameters only"))),
            };
            if values.is_empty() {
                return Err((at, "give a value or a non-empty list of values".into()));
            }
            if let Some(v) = values.iter().find(|v| !choices.contains(v)) {
                let listed: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                return Err((at, format!("{v} is not one of {parent:?}'s choices [{}], so the condition never holds", listed.join(", "))));
            }
        }
    }
    Ok(())
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

/// The keys every kind of parameter takes besides its range.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    #[serde(default)]
    when: IndexMap<String, AnyOf>,
}

impl Tagged for ParamSpec {
    const TAG: &'static str = "type";
    const DEFAULT: Option<&'static str> = None;
    const KINDS: &'static [&'static str] = &["float", "int", "categorical"];

    fn common_fields() -> &'static [&'static str] {
        tagged::fields::<Common>()
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "float" => tagged::fields::<FloatRange>(),
            "int" => tagged::fields::<IntRange>(),
            _ => tagged::fields::<Choices>(),
        }
    }

    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError> {
        let range = match kind {
            "float" => ParamRange::Float(part(own)?),
            "int" => ParamRange::Int(part(own)?),
            _ => ParamRange::Categorical(part(own)?),
        };
        let Common { when } = part(common)?;
        Ok(ParamSpec { range, when })
    }
}

impl<'de> Deserialize<'de> for ParamSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config, ConfigError};
    use serde_json::json;
    use std::path::Path;

    const BASE: &str = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n[tune.params]\n\"optimizer.lr\" = { type = \"float\", low = 0.001, high = 0.1 }\n\"optimizer.name\" = { type = \"categorical\", choices = [\"sgd\", \"adam\"] }\n";

    fn with(param: &str) -> Result<Config, ConfigError> {
        parse(&format!("{BASE}{param}\n"), Path::new("c.toml"), &[])
    }

    #[test]
    fn a_condition_takes_one_value_or_a_list() {
        let c = with("\"optimizer.momentum\" = { type = \"float\", low = 0.0, high = 0.99, when = { \"optimizer.name\" = \"sgd\" } }").unwrap();
        let spec = &c.tune.unwrap().params["optimizer.momentum"];
        let j = serde_json::to_value(spec).unwrap();
        assert_eq!(j, json!({ "type": "float", "low": 0.0, "high": 0.99, "log": false, "when": { "optimizer.name": ["sgd"] } }));
        let c = with("\"optimizer.momentum\" = { type = \"float\", low = 0.0, high = 0.99, when = { \"optimizer.name\" = [\"sgd\", \"adam\"] } }").unwrap();
        assert_eq!(serde_json::to_value(&c.tune.unwrap().params["optimizer.momentum"]).unwrap()["when"], json!({ "optimizer.name": ["sgd", "adam"] }));
        // No condition: nothing is written for it.
        let c = with("").unwrap();
        assert!(serde_json::to_value(&c.tune.unwrap().params["optimizer.lr"]).unwrap().get("when").is_none());
    }

    #[test]
    fn a_condition_that_cannot_hold_is_one_config_error_at_its_place() {
        let cases = [
            ("{ \"optimizer.nam\" = \"sgd\" }", "\"optimizer.nam\"", "is not a parameter listed before \"optimizer.momentum\""),
            ("{ \"optimizer.lr\" = 0.01 }", "\"optimizer.lr\"", "is not categorical"),
            ("{ \"optimizer.name\" = \"sgdd\" }", "\"optimizer.name\"", "\"sgdd\" is not one of \"optimizer.name\"'s choices [\"sgd\", \"adam\"]"),
            ("{ \"optimizer.name\" = [] }", "\"optimizer.name\"", "give a value or a non-empty list"),
        ];
        for (when, parent, why) in cases {
            let e = with(&format!("\"optimizer.momentum\" = {{ type = \"float\", low = 0.0, high = 0.99, when = {when} }}")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(format!("tune.params.\"optimizer.momentum\".when.{parent}").as_str()), "{e}");
            assert_eq!(e.location.map(|l| l.0), Some(6), "{e}");
            assert!(e.message.contains(why), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // A condition on a parameter listed after the guarded one.
        let text =
            format!("{BASE}\"b\" = {{ type = \"int\", low = 1, high = 2, when = {{ c = \"x\" }} }}\nc = {{ type = \"categorical\", choices = [\"x\"] }}\n");
        let e = parse(&text, Path::new("c.toml"), &[]).unwrap_err();
        assert!(e.to_string().starts_with("c.toml:6:"), "{e}");
        assert!(e.message.contains("\"c\" is not a parameter listed before \"b\""), "{e}");
        let e = with("\"optimizer.momentum\" = { type = \"float\", low = 0.0, high = 0.99, when = \"sgd\" }").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("tune.params.\"optimizer.momentum\".when"), "{e}");
    }
}
