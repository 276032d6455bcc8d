//! `bz tune` with several objectives and with constraints, checked by the real Optuna (5.0.0 in the test venv) and
//! optuna-dashboard: the study's directions, every trial's values and constraint values, the Pareto front
//! (`best_trials`, feasible trials only) as bz's `best-N.toml` files; Python's NSGA-II continues an NSGA-II study
//! bz started; the config's mistakes are one line each.

use bz_e2e::fixtures::*;
use bz_e2e::tune_env::{study_db, study_dir, tune};
use bz_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const MULTI: &str = r#"[tune]
metric = ["val/loss", "val/accuracy"]
direction = ["minimize", "maximize"]
constraints = ["val/accuracy >= 0.5"]
sampler = "nsga2"
n_trials = 6
n_jobs = 2
[tune.nsga2]
population_size = 2
[tune.params]
"optimizer.lr" = { type = "float", low = 1e-4, high = 0.3, log = true }
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }
"#;

fn optuna(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&py_script(dir, "optuna_multi.py", args, Duration::from_secs(120))).unwrap()
}

#[test]
fn a_two_objective_constrained_nsga2_study_is_the_front_optuna_and_the_dashboard_see() {
    let config = Digits { layers: LINEAR, epochs: 2, batch_size: Some(128), ..Digits::default() }.toml() + MULTI;
    let dir = study_dir(&config);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("minimize val/loss, maximize val/accuracy · subject to val/accuracy >= 0.5"), "{}", out.stdout);

    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    assert_eq!(study["directions"], serde_json::json!(["MINIMIZE", "MAXIMIZE"]));
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        assert_eq!(t["state"], "COMPLETE", "{t}");
        // Both values are the last epoch's metrics; the constraint value is Optuna's (bound − value for >=).
        let last = epoch_lines(&dir.path().join(format!("runs/s/trial-{n}"))).pop().unwrap();
        let values: Vec<f64> = t["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(values, vec![last["val/loss"].as_f64().unwrap(), last["val/accuracy"].as_f64().unwrap()], "trial {n}");
        let c = t["constraints"].as_array().unwrap();
        assert_eq!(c.len(), 1);
        assert!((c[0].as_f64().unwrap() - (0.5 - values[1])).abs() < 1e-12, "trial {n}: {t}");
        // NSGA-II's bookkeeping, as Optuna's own sampler writes it.
        assert!(t["system_attrs"]["NSGAIISampler:generation"].is_i64(), "{t}");
    }
    let later = trials.iter().filter(|t| t["system_attrs"]["NSGAIISampler:generation"].as_i64() > Some(0)).count();
    assert!(later > 0, "population 2, 6 trials: later generations exist");
    assert!(study["study_system_attrs"]["NSGAIISampler:parent:1"].is_array(), "{}", study["study_system_attrs"]);

    // bz's front is Optuna's best_trials (feasible only), and each point has its training config.
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/s/summary.json")).unwrap()).unwrap();
    let ours: Vec<u64> = summary["best_trials"].as_array().unwrap().iter().map(|t| t["number"].as_u64().unwrap()).collect();
    let theirs: Vec<u64> = study["best_trials"].as_array().unwrap().iter().map(|t| t[0].as_u64().unwrap()).collect();
    assert_eq!(ours, theirs);
    for (i, t) in summary["best_trials"].as_array().unwrap().iter().enumerate() {
        let cfg = std::fs::read_to_string(dir.path().join(format!("runs/s/best-{}.toml", i + 1))).unwrap();
        assert!(cfg.contains(&format!("name = {}", t["params"]["optimizer.name"])) && !cfg.contains("[tune"), "{cfg}");
    }
    assert!(!dir.path().join(format!("runs/s/best-{}.toml", ours.len() + 1)).exists());
    if !ours.is_empty() {
        assert!(out.stdout.contains("Pareto front") && out.stdout.contains("best-1.toml"), "{}", out.stdout);
    }

    // optuna-dashboard's study API draws the Pareto front of every COMPLETE trial (it ignores constraints) and shows
    // each trial's constraint values: both from what bz stored.
    let dash: Value = serde_json::from_str(&py_script(dir.path(), "optuna_dashboard_probe.py", &[&study_db(dir.path())], Duration::from_secs(120))).unwrap();
    let detail = &dash["detail"][0];
    assert_eq!(detail["directions"], serde_json::json!(["minimize", "maximize"]));
    let points: Vec<(u64, f64, f64)> = study["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["number"].as_u64().unwrap(), t["values"][0].as_f64().unwrap(), t["values"][1].as_f64().unwrap()))
        .collect();
    let dominated = |a: &(u64, f64, f64)| points.iter().any(|b| b.1 <= a.1 && b.2 >= a.2 && (b.1 < a.1 || b.2 > a.2));
    let unconstrained: Vec<u64> = points.iter().filter(|a| !dominated(a)).map(|a| a.0).collect();
    let mut dash_front: Vec<u64> = detail["best_trials"].as_array().unwrap().iter().map(|t| t["number"].as_u64().unwrap()).collect();
    dash_front.sort();
    assert_eq!(dash_front, unconstrained);
    for t in detail["trials"].as_array().unwrap() {
        let n = t["number"].as_u64().unwrap() as usize;
        assert_eq!(t["constraints"], study["trials"][n]["constraints"], "{t}");
    }

    // Python's NSGA-II carries the study on from bz's generations.
    let extended = optuna(dir.path(), &[&study_db(dir.path()), "s", "extend-nsga2", "3", "2"]);
    let trials = extended["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 9);
    let newest_bz = (0..6).filter_map(|n| trials[n]["system_attrs"]["NSGAIISampler:generation"].as_i64()).max().unwrap();
    assert!(trials[6..].iter().all(|t| t["system_attrs"]["NSGAIISampler:generation"].as_i64() >= Some(newest_bz)), "{trials:?}");
}

#[test]
fn several_objectives_and_constraints_are_checked_before_any_trial() {
    let digits = Digits::default().toml();
    let cases = [
        ("metric = [\"val/loss\", \"train/loss\"]\ndirection = \"minimize\"\n", "`tune.direction`: 1 directions for 2 metrics"),
        ("metric = [\"val/loss\", \"val/loss\"]\ndirection = [\"minimize\", \"minimize\"]\n", "`tune.metric`: \"val/loss\" is listed twice"),
        ("direction = \"up\"\n", "`tune.direction`: must be \"minimize\" or \"maximize\""),
        (
            "metric = [\"val/loss\", \"time/epoch_s\"]\ndirection = [\"minimize\", \"minimize\"]\n",
            "`tune.metric`: \"time/epoch_s\" is not in the epoch lines: name a train/… or val/… metric (`bz validate` lists them) or one of epoch_time_s,",
        ),
        ("constraints = [\"loss <= 0.5\"]\n", "`tune.constraints`: \"loss\" is not in the epoch lines"),
        ("constraints = [\"train/loss < 0.5\"]\n", "is not a constraint: write \"METRIC <= NUMBER\""),
        (
            "metric = [\"val/loss\", \"train/loss\"]\ndirection = [\"minimize\", \"minimize\"]\n[tune.pruner]\ntype = \"median\"\n",
            "`tune.pruner`: pruning (median) is not supported with several objectives",
        ),
        ("[tune.nsga2]\npopulation_size = 4\n", "`tune.nsga2`: these options are for sampler = \"nsga2\""),
    ];
    for (tune_keys, expected) in cases {
        let config = format!("{digits}[tune]\n{tune_keys}[tune.params]\n\"optimizer.lr\" = {{ type = \"float\", low = 0.001, high = 0.1 }}\n");
        let dir = study_dir(&config);
        let out = tune(dir.path(), &[]);
        assert_eq!(out.code, 2, "{tune_keys}: {}", out.all());
        let line = out.stderr.lines().find(|l| l.contains(expected)).unwrap_or_else(|| panic!("{expected:?} not in {}", out.stderr));
        // One line naming file:line:col.
        assert!(line.contains("s.toml:") && line.split("s.toml:").nth(1).is_some_and(|r| r.split(':').take(2).all(|n| n.parse::<u32>().is_ok())), "{line}");
        assert!(!dir.path().join("runs/s/study.db").exists(), "nothing written for {tune_keys}");
    }
}

/// Which train/ and val/ metrics a run has is known once its data and model are: `bz validate` (and each trial,
/// before it trains) names a study metric the run does not report, and the metrics it does.
#[test]
fn a_study_metric_the_run_does_not_report_is_named_before_training() {
    let digits = Digits { epochs: 1, ..Digits::default() }.toml();
    for (tune_keys, key, name) in [
        ("metric = [\"val/loss\", \"val/f1\"]\ndirection = [\"minimize\", \"maximize\"]\n", "tune.metric", "val/f1"),
        ("metric = \"epoch_time_s\"\nconstraints = [\"train/mse <= 1\"]\n", "tune.constraints", "train/mse"),
    ] {
        let dir = study_dir(&format!("{digits}[tune]\n{tune_keys}[tune.params]\n\"optimizer.lr\" = {{ type = \"float\", low = 0.001, high = 0.1 }}\n"));
        let out = bz(dir.path(), &["validate", "s.toml"]);
        assert_eq!(out.code, 2, "{}", out.all());
        let expected = format!("`{key}`: \"{name}\" is not a metric of this run; choose one of: train/loss, train/accuracy, val/loss");
        assert!(out.stderr.lines().any(|l| l.contains(&expected)), "{expected:?} not in {}", out.stderr);
    }
}

/// A tuner built against bz-plugin-api 1.2.0 (tests/fixtures/tuner-api-1.2: its vtable lacks 1.3's `tell_json`)
/// still loads into this bz and tunes: the host's `tell_json` default hands each result to its `tell`. For several
/// objectives, which it cannot take, bz refuses it before any trial runs.
#[test]
fn a_tuner_built_against_the_previous_api_still_loads_and_tunes() {
    let so = old_api_tuner();
    let digits = Digits { epochs: 1, ..Digits::default() }.toml();
    let params = "[tune.params]\n\"optimizer.lr\" = { type = \"float\", low = 0.001, high = 0.1 }\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(&so, dir.path().join("plugins/oldtuner.so")).unwrap();
    write_config(dir.path(), "s.toml", &format!("{digits}[tune]\nplugin = \"oldtuner\"\nn_trials = 2\nn_jobs = 1\n{params}"));
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/s/summary.json")).unwrap()).unwrap();
    let told = summary["told"].as_array().unwrap();
    assert_eq!(told.len(), 2, "{summary}");
    for t in told {
        let n = t[0].as_u64().unwrap();
        let last = epoch_lines(&dir.path().join(format!("runs/s/trial-{n}"))).pop().unwrap();
        assert_eq!(t[1], 0, "COMPLETE: {t}");
        assert_eq!(t[2], last["val/loss"], "trial {n} told its val/loss through the 1.2 `tell`");
    }
    assert!(dir.path().join("runs/s/best.toml").exists());

    write_config(
        dir.path(),
        "s.toml",
        &format!(
            "{digits}[tune]\nplugin = \"oldtuner\"\nmetric = [\"val/loss\", \"train/loss\"]\ndirection = [\"minimize\", \"minimize\"]\nstudy = \"m\"\n{params}"
        ),
    );
    let out = tune(dir.path(), &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("was built against bz-plugin-api 1.2.0, which takes one objective and no constraints"), "{}", out.stderr);
    assert!(!dir.path().join("runs/m/trial-0").exists(), "no trial ran");
}

/// Builds tests/fixtures/tuner-api-1.2 (its own workspace, since it needs the released bz-plugin-api 1.2.0 under the
/// same package name) into target/old-api, offline; the first build compiles abi_stable once, later ones are no-ops.
fn old_api_tuner() -> std::path::PathBuf {
    let root = repo_root();
    let target = root.join("target/old-api");
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--offline", "--manifest-path"]).arg(root.join("tests/fixtures/tuner-api-1.2/Cargo.toml")).arg("--target-dir").arg(&target);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let out = wait_limited(cmd.spawn().expect("cargo"), Duration::from_secs(900));
    assert_eq!(out.code, 0, "building the bz-plugin-api 1.2.0 fixture failed:\n{}", out.all());
    target.join("debug/libbz_fixture_tuner_old.so")
}
