//! `[tune]`: what `bz tune` searches (`params`), how it prunes (`pruner`) and how long it runs.

use super::tagged::{self, part, NoKeys, SectionError, Tagged};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// The objective: a metric of the epoch lines, e.g. `val/loss`; a list of them for several objectives.
    #[serde(default = "default_tune_metric")]
    pub metric: Metrics,
    /// One per metric (a single string for one metric).
    #[serde(default)]
    pub direction: Directions,
    /// Conditions a trial should meet, on any metric of its last epoch line: `"train/loss <= 0.5"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// `sampler = "nsga2"`'s options; left out, the tuner's defaults (Optuna's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsga2: Option<Nsga2Options>,
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

fn default_tune_metric() -> Metrics {
    Metrics(vec!["val/loss".into()])
}

/// `metric = "val/loss"` or `metric = ["val/loss", "time/epoch_s"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics(pub Vec<String>);

/// `direction = "minimize"` or one per metric, `direction = ["minimize", "maximize"]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Directions(pub Vec<TuneDirection>);

impl Default for Directions {
    fn default() -> Self {
        Directions(vec![TuneDirection::Minimize])
    }
}

/// A value or a list of values of `T`, with `expecting` as the one-line error for anything else.
fn one_or_many<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D, expecting: &str) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw<T> {
        One(T),
        Many(Vec<T>),
    }
    match Raw::<T>::deserialize(d) {
        Ok(Raw::One(x)) => Ok(vec![x]),
        Ok(Raw::Many(v)) => Ok(v),
        Err(_) => Err(serde::de::Error::custom(expecting)),
    }
}

fn one_or_list<S: serde::Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    match v {
        [one] => one.serialize(s),
        many => many.serialize(s),
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d, "must be a metric of the epoch lines like \"val/loss\", or a list of them (one objective each)").map(Metrics)
    }
}

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        one_or_list(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Directions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d, "must be \"minimize\" or \"maximize\", or a list of them (one per metric)").map(Directions)
    }
}

impl Serialize for Directions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        one_or_list(&self.0, s)
    }
}

/// One of `[tune] constraints`: `METRIC <= NUMBER` or `METRIC >= NUMBER`. Its value for a trial is Optuna's
/// constraint value, `c <= 0` when it holds: `value − bound` for `<=`, `bound − value` for `>=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub metric: String,
    pub at_most: bool,
    pub bound: f64,
}

impl Constraint {
    /// Optuna's constraint value of a trial whose metric is `value`.
    pub fn value(&self, value: f64) -> f64 {
        if self.at_most {
            value - self.bound
        } else {
            self.bound - value
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.metric, if self.at_most { "<=" } else { ">=" }, self.bound)
    }
}

impl std::str::FromStr for Constraint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a constraint: write \"METRIC <= NUMBER\" or \"METRIC >= NUMBER\", e.g. \"train/loss <= 0.5\"");
        let (metric, at_most, bound) = match (s.split_once("<="), s.split_once(">=")) {
            (Some((m, b)), None) => (m, true, b),
            (None, Some((m, b))) => (m, false, b),
            _ => return Err(bad()),
        };
        let metric = metric.trim();
        let bound: f64 = bound.trim().parse().map_err(|_| bad())?;
        if metric.is_empty() || metric.contains(['<', '>', '=']) || !bound.is_finite() {
            return Err(bad());
        }
        Ok(Constraint { metric: metric.to_string(), at_most, bound })
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[tune.nsga2]`: NSGA-II's options (Optuna's `NSGAIISampler` arguments); each left out keeps the tuner's default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Nsga2Options {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutation_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossover_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapping_prob: Option<f64>,
}

impl TuneConfig {
    /// Several objectives (a Pareto front rather than one best trial).
    pub fn is_multi(&self) -> bool {
        self.metric.0.len() > 1
    }

    /// The combinations serde cannot check: the key at fault and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        let metrics = &self.metric.0;
        if metrics.is_empty() || metrics.iter().any(|m| m.trim().is_empty()) {
            return bad("tune.metric", "name a metric of the epoch lines, e.g. \"val/loss\"".into());
        }
        if let Some(m) = metrics.iter().enumerate().find_map(|(i, m)| metrics[..i].contains(m).then_some(m)) {
            return bad("tune.metric", format!("{m:?} is listed twice; each objective is a different metric"));
        }
        let watched = metrics.iter().chain(self.constraints.iter().map(|c| &c.metric));
        if let Some(m) = watched.clone().find(|m| !is_epoch_number(m)) {
            let key = if metrics.contains(m) { "tune.metric" } else { "tune.constraints" };
            return bad(
                key,
                format!("{m:?} is not in the epoch lines: name a train/… or val/… metric (`bz validate` lists them) or one of {}", EPOCH_NUMBERS.join(", ")),
            );
        }
        if self.direction.0.len() != metrics.len() {
            return bad(
                "tune.direction",
                format!(
                    "{} directions for {} metrics: give one per metric, e.g. direction = [{}]",
                    self.direction.0.len(),
                    metrics.len(),
                    vec!["\"minimize\""; metrics.len()].join(", ")
                ),
            );
        }
        if self.nsga2.is_some() && self.sampler != "nsga2" {
            return bad("tune.nsga2", format!("these options are for sampler = \"nsga2\"; the sampler is {:?}", self.sampler));
        }
        Ok(())
    }
}

/// The numbers of an epoch line besides its train/ and val/ metrics (`EpochSummary`'s fields), which a study
/// can optimise or constrain too, e.g. `metric = ["val/loss", "epoch_time_s"]`.
pub const EPOCH_NUMBERS: [&str; 4] = ["epoch_time_s", "train_time_s", "samples_per_s", "lr"];

/// Whether `name` can be a number of an epoch line; which train/ and val/ metrics a run has is only known once
/// its data and model are (`train::Session` checks that).
fn is_epoch_number(name: &str) -> bool {
    EPOCH_NUMBERS.contains(&name) || name.strip_prefix("train/").or_else(|| name.strip_prefix("val/")).is_some_and(|m| !m.is_empty())
}

/// On the file's own keys (before defaults): several objectives refuse a pruner the user asked for, as Optuna
/// refuses `report` in multi-objective studies; left out, there is no pruning.
pub fn check_raw(tune: &toml::Table) -> Result<(), (String, String)> {
    let several = tune.get("metric").and_then(toml::Value::as_array).is_some_and(|m| m.len() > 1);
    let pruner = tune.get("pruner").and_then(toml::Value::as_table).map(|p| p.get("type").and_then(toml::Value::as_str).unwrap_or("median"));
    match pruner {
        Some(kind) if several && kind != "none" => Err((
            "tune.pruner".into(),
            format!("pruning ({kind}) is not supported with several objectives (Optuna refuses it too): remove [tune.pruner] or set type = \"none\""),
        )),
        _ => Ok(()),
    }
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
    // The median pruner's options, repeated: serde cannot `flatten` `MedianOptions` in under `deny_unknown_fields`.
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
    use super::{is_epoch_number, Constraint};
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

    #[test]
    fn study_metrics_are_numbers_an_epoch_line_can_have() {
        for ok in ["val/loss", "train/accuracy", "val/f1_macro", "epoch_time_s", "samples_per_s", "lr"] {
            assert!(is_epoch_number(ok), "{ok}");
        }
        for bad in ["time/epoch_s", "loss", "val/", "epoch", "step", "test/accuracy"] {
            assert!(!is_epoch_number(bad), "{bad}");
        }
    }

    #[test]
    fn constraints_parse_and_give_optunas_values() {
        let c: Constraint = "train/loss <= 0.5".parse().unwrap();
        assert_eq!((c.metric.as_str(), c.at_most, c.bound), ("train/loss", true, 0.5));
        assert_eq!(c.value(0.25), -0.25, "feasible: c <= 0");
        assert_eq!(c.value(0.75), 0.25);
        let c: Constraint = " val/accuracy>=0.9 ".parse().unwrap();
        assert!(!c.at_most && c.value(0.95) < 0.0 && c.value(0.8) > 0.0);
        assert_eq!(c.to_string(), "val/accuracy >= 0.9");
        for bad in ["train/loss < 0.5", "train/loss <= high", "<= 0.5", "a <= 1 <= 2", "a >= inf", "a == 1"] {
            let e = bad.parse::<Constraint>().unwrap_err();
            assert!(e.contains("is not a constraint: write \"METRIC <= NUMBER\""), "{bad}: {e}");
        }
    }
}
