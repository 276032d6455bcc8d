//! The end of a study: the tuner's summary in `summary.json`, the best trial's training config in `best.toml`.

use super::study::Study;
use super::{fmt_params, toml_literal};
use crate::config::{self, Loaded};
use anyhow::{Context, Result};
use bz_plugin_api::TunerBox;
use serde_json::{Map, Value};

pub fn finish(tuner: &TunerBox, study: &Study, loaded: &Loaded, sets: &[String]) -> Result<()> {
    let summary: Value = serde_json::from_str(tuner.summary().as_str()).unwrap_or(Value::Null);
    std::fs::write(study.root.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    let counts =
        summary["counts"].as_object().map(|c| c.iter().map(|(k, v)| format!("{v} {}", k.to_lowercase())).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let name = &study.name;
    let Some(best) = summary["best"].as_object() else {
        println!("study {name}: {counts} · no completed trial yet");
        return Ok(());
    };
    let params: Map<String, Value> = best.get("params").and_then(|p| p.as_object().cloned()).unwrap_or_default();
    let best_path = write_best_config(study, loaded, sets, best, &params)?;
    let metric = &study.tune.metric;
    println!(
        "best trial {} · {metric} {} · {}\nstudy {name}: {counts} · best config {} (`bz train {}`)",
        best["number"],
        best["value"].as_f64().map(crate::fmt::fmt_value).unwrap_or_default(),
        fmt_params(&params),
        best_path.display(),
        best_path.display()
    );
    Ok(())
}

/// `best.toml`: the config with the user's `--set`s and the best params applied, without `[tune]`, so
/// `bz train best.toml` trains the winner.
fn write_best_config(study: &Study, loaded: &Loaded, sets: &[String], best: &Map<String, Value>, params: &Map<String, Value>) -> Result<std::path::PathBuf> {
    let sets: Vec<String> = sets.iter().cloned().chain(params.iter().map(|(k, v)| format!("{k}={}", toml_literal(v)))).collect();
    let mut best_cfg = config::parse(&loaded.text, &loaded.path, &sets)?;
    best_cfg.tune = None;
    let path = study.root.join("best.toml");
    let header = format!("# best trial {} of study {}: {} = {}\n", best["number"], study.name, study.tune.metric, best["value"]);
    crate::atomic::write(&path, format!("{header}{}", config::to_toml(&best_cfg)).as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
