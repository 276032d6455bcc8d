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

/// `when`: the parameters searched only in trials where earlier categorical parameters took given values (what
/// define-by-run users write as `if trial.suggest_categorical(…) == …: trial.suggest_float(…)`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conditions {
    /// Guarded parameter → (categorical parameter, the internal indices of its accepted choices).
    guards: BTreeMap<String, Vec<(String, Vec<f64>)>>,
}

impl Conditions {
    /// Reads the `when` tables of the host's search space (`[{"name": …, "when": {"param": [values]}}, …]`):
    /// each names a categorical parameter listed earlier, and values among its choices.
    pub fn parse(v: &Value, space: &[(String, Distribution)]) -> Result<Conditions, String> {
        let mut guards = BTreeMap::new();
        for (i, p) in v.as_array().into_iter().flatten().enumerate() {
            let Some(when) = p.get("when").filter(|w| !w.is_null()) else { continue };
            let name = p["name"].as_str().unwrap_or_default();
            let bad = |why: String| format!("tune.params.\"{name}\".when: {why}");
            let when = when.as_object().ok_or_else(|| bad("must be a table of `\"param\" = value or [values]`".into()))?;
            let mut list = Vec::new();
            for (parent, values) in when {
                let choices = match space[..i.min(space.len())].iter().find(|(n, _)| n == parent) {
                    Some((_, d @ Distribution::Categorical { .. })) => d,
                    Some(_) => return Err(bad(format!("{parent:?} is not categorical"))),
                    None => return Err(bad(format!("{parent:?} is not a parameter listed before this one"))),
                };
                let values = match values {
                    Value::Array(a) => a.clone(),
                    one => vec![one.clone()],
                };
                let mut accepted = Vec::new();
                for v in &values {
                    accepted.push(choices.internal(v).ok_or_else(|| bad(format!("{v} is not one of {parent:?}'s choices")))?);
                }
                if accepted.is_empty() {
                    return Err(bad(format!("{parent:?} lists no values")));
                }
                list.push((parent.clone(), accepted));
            }
            if !list.is_empty() {
                guards.insert(name.to_string(), list);
            }
        }
        Ok(Conditions { guards })
    }

    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Keeps the parameters whose conditions hold, deciding in space order: a guard on a parameter that is itself
    /// absent does not hold.
    pub fn retain_active(&self, space: &Space, values: &mut BTreeMap<String, f64>) {
        for (name, _) in space {
            let holds = self
                .guards
                .get(name)
                .is_none_or(|list| list.iter().all(|(parent, accepted)| values.get(parent).is_some_and(|v| accepted.iter().any(|a| (a - v).abs() < 0.5))));
            if !holds {
                values.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        vec![
            ("opt".into(), Distribution::Categorical { choices: vec![json!("sgd"), json!("adam"), json!("rmsprop")] }),
            ("momentum".into(), Distribution::Float { low: 0.0, high: 0.99, log: false, step: None }),
            ("nesterov".into(), Distribution::Categorical { choices: vec![json!(true), json!(false)] }),
            ("dampening".into(), Distribution::Float { low: 0.0, high: 0.5, log: false, step: None }),
        ]
    }

    #[test]
    fn conditions_hold_in_order_and_chain() {
        let spec = json!([
            { "name": "opt" },
            { "name": "momentum", "when": { "opt": ["sgd", "rmsprop"] } },
            { "name": "nesterov", "when": { "opt": "sgd" } },
            { "name": "dampening", "when": { "nesterov": false } },
        ]);
        let c = Conditions::parse(&spec, &space()).unwrap();
        let all = |opt: f64, nesterov: f64| -> Vec<String> {
            let mut v: BTreeMap<String, f64> =
                [("opt", opt), ("momentum", 0.5), ("nesterov", nesterov), ("dampening", 0.1)].iter().map(|(k, x)| (k.to_string(), *x)).collect();
            c.retain_active(&space(), &mut v);
            v.into_keys().collect()
        };
        assert_eq!(all(0.0, 1.0), ["dampening", "momentum", "nesterov", "opt"]);
        assert_eq!(all(0.0, 0.0), ["momentum", "nesterov", "opt"]);
        // rmsprop: momentum, but no nesterov, and so no dampening either.
        assert_eq!(all(2.0, 1.0), ["momentum", "opt"]);
        assert_eq!(all(1.0, 1.0), ["opt"]);
        assert!(Conditions::parse(&json!([{ "name": "opt" }]), &space()).unwrap().is_empty());
    }

    #[test]
    fn conditions_the_host_did_not_check_are_refused() {
        let bad = |when: Value, name: &str| Conditions::parse(&json!([{ "name": "opt" }, { "name": name, "when": when }]), &space()[..2]).unwrap_err();
        assert!(bad(json!({ "momentum": 0.5 }), "momentum").contains("\"momentum\" is not a parameter listed before"));
        assert!(bad(json!({ "opt": "sgdd" }), "momentum").contains("\"sgdd\" is not one of \"opt\"'s choices"));
        assert!(bad(json!({ "opt": [] }), "momentum").contains("lists no values"));
        assert!(bad(json!("sgd"), "momentum").contains("must be a table"));
        let float_parent = json!([{ "name": "opt" }, { "name": "momentum" }, { "name": "nesterov", "when": { "momentum": 0.5 } }]);
        assert!(Conditions::parse(&float_parent, &space()[..3]).unwrap_err().contains("\"momentum\" is not categorical"));
    }
}
