//! The end of a study: the tuner's summary in `summary.json`; the best trial's training config in `best.toml`,
//! or with several objectives one config per Pareto-optimal trial, `best-1.toml` … `best-N.toml` (in trial
//! order), and the front as a table.

use super::study::Study;
use super::{fmt_params, toml_literal};
use crate::config::{self, Loaded};
use anyhow::{Context, Result};
use bz_plugin_api::TunerBox;
use serde_json::{Map, Value};
use std::path::PathBuf;

pub fn finish(tuner: &TunerBox, study: &Study, loaded: &Loaded, sets: &[String]) -> Result<()> {
    let summary: Value = serde_json::from_str(tuner.summary().as_str()).unwrap_or(Value::Null);
    std::fs::write(study.root.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    let counts =
        summary["counts"].as_object().map(|c| c.iter().map(|(k, v)| format!("{v} {}", k.to_lowercase())).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let name = &study.name;
    if study.tune.is_multi() {
        return finish_front(study, loaded, sets, &summary, &counts);
    }
    let Some(best) = summary["best"].as_object() else {
        println!("study {name}: {counts} · no completed{} trial yet", if study.tune.constraints.is_empty() { "" } else { " feasible" });
        return Ok(());
    };
    let params = params_of(best);
    let metric = &study.metrics()[0];
    let value = best["value"].as_f64().map(crate::fmt::fmt_value).unwrap_or_default();
    let header = format!("# best trial {} of study {}: {metric} = {}\n", best["number"], study.name, best["value"]);
    let best_path = write_config(study, loaded, sets, &params, "best.toml", &header)?;
    println!(
        "best trial {} · {metric} {value} · {}\nstudy {name}: {counts} · best config {} (`bz train {}`)",
        best["number"],
        fmt_params(&params),
        best_path.display(),
        best_path.display()
    );
    Ok(())
}

fn params_of(trial: &Map<String, Value>) -> Map<String, Value> {
    trial.get("params").and_then(|p| p.as_object().cloned()).unwrap_or_default()
}

/// Several objectives: `best-N.toml` per Pareto point (earlier ones beyond the front's size removed, so the files
/// are always this front), and the front printed as a table.
fn finish_front(study: &Study, loaded: &Loaded, sets: &[String], summary: &Value, counts: &str) -> Result<()> {
    let front: Vec<&Map<String, Value>> = summary["best_trials"].as_array().into_iter().flatten().filter_map(Value::as_object).collect();
    remove_stale_points(study, front.len());
    let name = &study.name;
    if front.is_empty() {
        println!("study {name}: {counts} · no completed{} trial yet", if study.tune.constraints.is_empty() { "" } else { " feasible" });
        return Ok(());
    }
    let metrics = study.metrics();
    let mut rows = vec![[vec!["".to_string(), "trial".to_string()], metrics.to_vec(), vec!["params".to_string()]].concat()];
    for (i, t) in front.iter().enumerate() {
        let values: Vec<f64> = t["values"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
        let params = params_of(t);
        let described: Vec<String> = metrics.iter().zip(&values).map(|(m, v)| format!("{m} = {v}")).collect();
        let header = format!("# Pareto-optimal trial {} of study {} (point {} of {}): {}\n", t["number"], name, i + 1, front.len(), described.join(", "));
        let file = format!("best-{}.toml", i + 1);
        write_config(study, loaded, sets, &params, &file, &header)?;
        let cells: Vec<String> = values.iter().map(|v| crate::fmt::fmt_value(*v)).collect();
        rows.push([vec![file, t["number"].to_string()], cells, vec![fmt_params(&params)]].concat());
    }
    println!("Pareto front ({} trials; no trial is better in every objective than these):", front.len());
    print_table(&rows);
    println!("study {name}: {counts} · configs {}/best-1.toml … best-{}.toml (`bz train` any of them)", study.root.display(), front.len());
    Ok(())
}

/// `best-K.toml` for K past the front, and a single-objective `best.toml` of an earlier run of the study.
fn remove_stale_points(study: &Study, n: usize) {
    let Ok(dir) = std::fs::read_dir(&study.root) else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let k = name.strip_prefix("best-").and_then(|r| r.strip_suffix(".toml")).and_then(|k| k.parse::<usize>().ok());
        if k.is_some_and(|k| k > n || k == 0) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Columns padded to their widest cell; the last column as it is.
fn print_table(rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| if c + 1 == r.len() { s.clone() } else { format!("{s:<w$}", w = widths[c]) }).collect();
        println!("  {}", line.join("  ").trim_end());
    }
}

/// A trial's training config: the config with the user's `--set`s and the trial's params applied, without
/// `[tune]`, so `bz train FILE` trains it.
fn write_config(study: &Study, loaded: &Loaded, sets: &[String], params: &Map<String, Value>, file: &str, header: &str) -> Result<PathBuf> {
    let sets: Vec<String> = sets.iter().cloned().chain(params.iter().map(|(k, v)| format!("{k}={}", toml_literal(v)))).collect();
    let mut cfg = config::parse(&loaded.text, &loaded.path, &sets)?;
    cfg.tune = None;
    let path = study.root.join(file);
    crate::atomic::write(&path, format!("{header}{}", config::to_toml(&cfg)).as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
