//! `bz tune` with conditional parameters (`when`) and CMA-ES, checked by the real Optuna (5.0.0 in the test venv)
//! and optuna-dashboard: a guarded parameter is in a trial exactly when its condition holds, both in the study
//! and in the trial's config; CMA-ES studies open in Optuna with every value inside its distribution.

use bz_e2e::fixtures::*;
use bz_e2e::tune_env::{study_db, study_dir, tune};
use bz_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const CONDITIONAL: &str = r#"[tune]
metric = "val/loss"
n_trials = 8
n_jobs = 2
n_startup_trials = 3
[tune.pruner]
type = "none"
[tune.params]
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }
"optimizer.lr" = { type = "float", low = 1e-3, high = 0.3, log = true }
"optimizer.momentum" = { type = "float", low = 0.0, high = 0.99, when = { "optimizer.name" = "sgd" } }
[[tune.enqueue]]
"optimizer.name" = "sgd"
[[tune.enqueue]]
"optimizer.name" = "adam"
"optimizer.momentum" = 0.5
"#;

/// A study of the one-epoch digits MLP with `config`'s [tune] sections.
fn setup(config: &str) -> tempfile::TempDir {
    study_dir(&(Digits { layers: MLP_32, epochs: 1, ..Digits::default() }.toml() + config))
}

fn optuna_trials(dir: &Path) -> Vec<Value> {
    let study: Value = serde_json::from_str(&py_script(dir, "optuna_study.py", &[&study_db(dir), "s", "read"], Duration::from_secs(120))).unwrap();
    study["trials"].as_array().unwrap().clone()
}

#[test]
fn a_guarded_parameter_is_searched_exactly_when_its_condition_holds() {
    let dir = setup(CONDITIONAL);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let trials = optuna_trials(dir.path());
    assert_eq!(trials.len(), 8);
    let mut names = Vec::new();
    for t in &trials {
        assert_eq!(t["state"], "COMPLETE", "{t}");
        let name = t["params"]["optimizer.name"].as_str().unwrap();
        let momentum = &t["params"]["optimizer.momentum"];
        assert_eq!(!momentum.is_null(), name == "sgd", "momentum iff sgd: {t}");
        assert_eq!(t["distributions"].as_object().unwrap().len(), if name == "sgd" { 3 } else { 2 }, "{t}");
        // The trial ran with exactly those values; without the condition the key kept the config's value.
        let cfg = std::fs::read_to_string(dir.path().join(format!("runs/s/trial-{}/config.toml", t["number"]))).unwrap();
        let cfg = cfg.split("\n[optimizer]\n").nth(1).and_then(|s| s.split("\n[").next()).unwrap_or_default();
        assert!(cfg.contains(&format!("name = \"{name}\"")), "{cfg}");
        match momentum.as_f64() {
            Some(m) => assert!(cfg.contains(&format!("momentum = {m}")) && (0.0..=0.99).contains(&m), "{cfg}"),
            None => assert!(!cfg.contains("momentum"), "{cfg}"),
        }
        names.push(name.to_string());
    }
    // The enqueued trials: sgd got a sampled momentum; adam's given momentum was dropped, as its condition fails.
    assert_eq!(&names[..2], ["sgd", "adam"]);
    let dash: Value = serde_json::from_str(&py_script(dir.path(), "optuna_dashboard_probe.py", &[&study_db(dir.path())], Duration::from_secs(120))).unwrap();
    let shown = dash["detail"][0]["trials"].as_array().unwrap();
    assert_eq!(shown.len(), 8);
    for t in shown {
        let params: Vec<&str> = t["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        let sgd = t["params"].as_array().unwrap().iter().any(|p| p["name"] == "optimizer.name" && p["param_external_value"] == "sgd");
        assert_eq!(params.contains(&"optimizer.momentum"), sgd, "{t}");
    }
}

#[test]
fn a_condition_on_a_missing_parameter_is_a_config_error_before_any_trial() {
    let config = CONDITIONAL.replace("when = { \"optimizer.name\" = \"sgd\" }", "when = { \"optimizer.nme\" = \"sgd\" }");
    let dir = setup(&config);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    let line = out.stderr.lines().find(|l| l.contains("when")).unwrap_or_default();
    assert!(line.contains("s.toml:") && line.contains("tune.params.\"optimizer.momentum\".when.\"optimizer.nme\""), "{}", out.all());
    assert!(!dir.path().join("runs/s/trial-0").exists());
}

#[test]
fn a_cmaes_study_opens_in_optuna_with_every_value_in_range() {
    let config = r#"[tune]
metric = "val/loss"
n_trials = 6
sampler = "cmaes"
restart_strategy = "ipop"
[tune.pruner]
type = "none"
[tune.params]
"optimizer.lr" = { type = "float", low = 1e-3, high = 0.3, log = true }
"model.layers[1].out" = { type = "int", low = 4, high = 64, log = true }
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }
"#;
    let dir = setup(config);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("CMA-ES does not search categorical parameters: optimizer.name"), "{}", out.all());
    let trials = optuna_trials(dir.path());
    assert_eq!(trials.len(), 6);
    for t in &trials {
        assert_eq!(t["state"], "COMPLETE", "{t}");
        let lr = t["params"]["optimizer.lr"].as_f64().unwrap();
        let units = t["params"]["model.layers[1].out"].as_i64().unwrap();
        assert!((1e-3..=0.3).contains(&lr) && (4..=64).contains(&units), "{t}");
    }
    let bad = setup(&config.replace("\"ipop\"", "\"ipopp\""));
    let out = tune(bad.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.all().contains("restart_strategy"), "{}", out.all());
}
