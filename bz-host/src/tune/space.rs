//! `[tune.params]` as the tuner's search space, each key checked against the config before any trial runs (with
//! its `when` conditions holding, since a guarded key may only be valid then).

use super::toml_literal;
use crate::config::{self, AnyOf, ConfigError, Loaded, TuneConfig};
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The search space (a list, in config order). Each key is checked by applying the values of its range to the
/// config: a typo fails here, not in every trial.
pub fn search_space(loaded: &Loaded, tc: &TuneConfig) -> Result<Value> {
    let error = |key: String, message: String| ConfigError { file: loaded.path.clone(), location: None, key: Some(key), message };
    if tc.params.is_empty() {
        bail!(error(
            "tune.params".into(),
            "no parameters to search: add a [tune.params] table with e.g. `\"optimizer.lr\" = { type = \"float\", low = 1e-4, high = 1e-1, log = true }`, as in examples/digits-tune.toml".into()
        ));
    }
    let mut out = Vec::new();
    for (name, spec) in &tc.params {
        let key = format!("tune.params.\"{name}\"");
        let mut j = serde_json::to_value(spec)?;
        j["name"] = json!(name);
        if let Some(message) = no_valid_value(loaded, name, &j, &condition_sets(tc, name)) {
            bail!(error(key, format!("no value of this range makes a valid config: {message}")));
        }
        out.push(j);
    }
    Ok(Value::Array(out))
}

/// `--set`s that make `name`'s conditions hold (the first accepted value of each parameter they name, and of
/// the conditions of those): a key guarded by `optimizer.name = "sgd"`, such as `optimizer.momentum`, is only
/// valid in configs where the guard holds.
fn condition_sets(tc: &TuneConfig, name: &str) -> Vec<String> {
    let mut sets = Vec::new();
    let mut pending = vec![name];
    // Each condition names an earlier parameter, so the walk ends; the bound guards against a config that
    // `check_conditions` has not seen.
    for _ in 0..=tc.params.len() {
        let Some(spec) = pending.pop().and_then(|n| tc.params.get(n)) else { break };
        for (parent, AnyOf(values)) in &spec.when {
            if let Some(first) = values.first().and_then(|v| serde_json::to_value(v).ok()) {
                sets.push(format!("{parent}={}", toml_literal(&first)));
                pending.push(parent);
            }
        }
    }
    sets
}

/// The first error, when no probe of the range (its choices, or its low and high) makes a valid config: the key
/// is right if some value does (one bad choice only fails its trials). `guards` make its conditions hold.
fn no_valid_value(loaded: &Loaded, name: &str, spec: &Value, guards: &[String]) -> Option<String> {
    let probes: Vec<Value> = match spec["choices"].as_array() {
        Some(c) => c.clone(),
        None => ["low", "high"].iter().filter_map(|k| spec.get(*k).cloned()).collect(),
    };
    let mut first_error = None;
    for probe in &probes {
        let sets: Vec<String> = guards.iter().cloned().chain([format!("{name}={}", toml_literal(probe))]).collect();
        match config::parse(&loaded.text, &loaded.path, &sets) {
            Ok(_) => return None,
            Err(e) => {
                first_error.get_or_insert(e.message);
            }
        }
    }
    first_error
}
