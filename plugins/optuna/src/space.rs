//! Search spaces as Optuna defines them: float (low, high, log, step), int (low, high, log, step) and
//! categorical (choices) distributions, with Optuna's *internal representation* of a value (the float; the int
//! as a float; the index of a categorical choice) and its `distribution_json`.

use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Float { low: f64, high: f64, log: bool, step: Option<f64> },
    Int { low: i64, high: i64, log: bool, step: i64 },
    Categorical { choices: Vec<Value> },
}

impl Distribution {
    /// Optuna's `distribution_json` (`{"name": "FloatDistribution", "attributes": {...}}`).
    pub fn to_optuna_json(&self) -> Value {
        match self {
            Distribution::Float { low, high, log, step } => {
                json!({ "name": "FloatDistribution", "attributes": { "step": step, "low": low, "high": high, "log": log } })
            }
            Distribution::Int { low, high, log, step } => {
                json!({ "name": "IntDistribution", "attributes": { "log": log, "step": step, "low": low, "high": high } })
            }
            Distribution::Categorical { choices } => json!({ "name": "CategoricalDistribution", "attributes": { "choices": choices } }),
        }
    }

    /// Reads Optuna's `distribution_json`, including the legacy names older Optuna versions stored.
    pub fn from_optuna_json(v: &Value) -> Option<Distribution> {
        let a = &v["attributes"];
        let f = |k: &str| a[k].as_f64();
        Some(match v["name"].as_str()? {
            "FloatDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: a["log"].as_bool().unwrap_or(false), step: f("step") },
            "UniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: None },
            "LogUniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: true, step: None },
            "DiscreteUniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: f("q") },
            "IntDistribution" => Distribution::Int {
                low: f("low")? as i64,
                high: f("high")? as i64,
                log: a["log"].as_bool().unwrap_or(false),
                step: a["step"].as_i64().unwrap_or(1),
            },
            "IntUniformDistribution" => Distribution::Int { low: f("low")? as i64, high: f("high")? as i64, log: false, step: a["step"].as_i64().unwrap_or(1) },
            "IntLogUniformDistribution" => Distribution::Int { low: f("low")? as i64, high: f("high")? as i64, log: true, step: 1 },
            "CategoricalDistribution" => Distribution::Categorical { choices: a["choices"].as_array()?.clone() },
            _ => return None,
        })
    }

    /// The value a trial's config gets, from the internal representation.
    pub fn external(&self, internal: f64) -> Value {
        match self {
            Distribution::Float { .. } => json!(internal),
            Distribution::Int { .. } => json!(internal.round() as i64),
            Distribution::Categorical { choices } => choices.get(internal.round().max(0.0) as usize).cloned().unwrap_or(Value::Null),
        }
    }

    /// The internal representation of a user-given value (an enqueued trial), if it fits the distribution.
    pub fn internal(&self, external: &Value) -> Option<f64> {
        match self {
            Distribution::Float { low, high, .. } => external.as_f64().filter(|x| x >= low && x <= high),
            Distribution::Int { low, high, .. } => external.as_f64().filter(|x| x.fract() == 0.0 && *x >= *low as f64 && *x <= *high as f64),
            Distribution::Categorical { choices } => {
                choices.iter().position(|c| c == external || (c.as_f64().is_some() && c.as_f64() == external.as_f64())).map(|i| i as f64)
            }
        }
    }

    /// Whether an internal value lies in the distribution (bounds, and the step grid for stepped ones).
    pub fn contains(&self, internal: f64) -> bool {
        match self {
            Distribution::Float { low, high, step, .. } => {
                internal >= *low && internal <= *high && step.is_none_or(|s| (((internal - low) / s) - ((internal - low) / s).round()).abs() < 1e-8)
            }
            Distribution::Int { low, high, step, .. } => {
                internal.fract() == 0.0 && internal >= *low as f64 && internal <= *high as f64 && ((internal as i64 - low) % step == 0)
            }
            Distribution::Categorical { choices } => internal.fract() == 0.0 && internal >= 0.0 && (internal as usize) < choices.len(),
        }
    }

    /// A single-valued distribution (Optuna leaves those out of the relative search space).
    pub fn is_single(&self) -> bool {
        match self {
            Distribution::Float { low, high, .. } => low == high,
            Distribution::Int { low, high, .. } => low == high,
            Distribution::Categorical { choices } => choices.len() == 1,
        }
    }
}

/// A named search space, in config order.
pub type Space = Vec<(String, Distribution)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Complete,
    Pruned,
    Fail,
    Waiting,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Running => "RUNNING",
            State::Complete => "COMPLETE",
            State::Pruned => "PRUNED",
            State::Fail => "FAIL",
            State::Waiting => "WAITING",
        }
    }
    pub fn from_name(s: &str) -> Option<State> {
        Some(match s {
            "RUNNING" => State::Running,
            "COMPLETE" => State::Complete,
            "PRUNED" => State::Pruned,
            "FAIL" => State::Fail,
            "WAITING" => State::Waiting,
            _ => return None,
        })
    }
}

/// Whether the objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Minimize,
    Maximize,
}

/// A trial as samplers and pruners see it (what storage holds).
#[derive(Debug, Clone, PartialEq)]
pub struct FrozenTrial {
    /// Per-study, 0-based.
    pub number: u64,
    pub state: State,
    /// The objective (for PRUNED: the last intermediate value).
    pub value: Option<f64>,
    /// Internal representations, with their distributions.
    pub params: BTreeMap<String, (f64, Distribution)>,
    /// step -> value (NaN allowed).
    pub intermediate: BTreeMap<u64, f64>,
    /// Every objective's value, in the study's order (empty when the trial has none; `value` is the first).
    pub values: Vec<f64>,
    /// Optuna's `constraints` system attribute: `c <= 0` holds (empty: the trial has none).
    pub constraints: Vec<f64>,
}
