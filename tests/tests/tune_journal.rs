//! `bz tune` with `storage = "journal:///…"`: Optuna's JSON-lines journal, checked by the real Optuna (5.0.0 in
//! the test venv, `JournalStorage(JournalFileBackend(path))`) and optuna-dashboard: studies bz writes open in both,
//! studies continue across bz and Python, and bz and Python workers share one journal under its lock file without
//! losing or repeating a trial.

use bz_e2e::fixtures::*;
use bz_e2e::tune_env::{study_dir, tune};
use bz_e2e::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TUNE: &str = r#"[tune]
metric = "val/loss"
storage = "journal:///runs/s/study.log"
n_trials = 6
n_jobs = 2
[tune.pruner]
type = "median"
n_startup_trials = 2
[tune.params]
"optimizer.lr" = { type = "float", low = 1e-4, high = 0.3, log = true }
"model.layers[1].out" = { type = "int", low = 8, high = 64, log = true }
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }
"#;

fn base() -> String {
    Digits { layers: MLP_32, epochs: 3, batch_size: Some(128), ..Digits::default() }.toml() + TUNE
}

/// 2 epochs, no pruning, one trial at a time per worker, `n` trials in the study.
fn workers_config(n: u32) -> String {
    base()
        .replace("epochs = 3", "epochs = 2")
        .replace("n_trials = 6", &format!("n_trials = {n}"))
        .replace("n_jobs = 2", "n_jobs = 1")
        .replace("type = \"median\"\nn_startup_trials = 2", "type = \"none\"")
}

/// A study directory whose `runs/s` exists, for journal paths inside it.
fn setup(config: &str) -> tempfile::TempDir {
    let dir = study_dir(config);
    std::fs::create_dir_all(dir.path().join("runs/s")).unwrap();
    dir
}

fn journal(dir: &Path) -> String {
    dir.join("runs/s/study.log").display().to_string()
}

/// The study as Python Optuna reads the journal (after `action`, see tests/py/optuna_journal.py).
fn optuna(dir: &Path, action: &[&str]) -> Value {
    let path = journal(dir);
    let mut args = vec![path.as_str(), "s"];
    args.extend_from_slice(action);
    serde_json::from_str(&py_script(dir, "optuna_journal.py", &args, Duration::from_secs(120))).unwrap()
}

fn epoch_values(dir: &Path, number: u64) -> Vec<f64> {
    epoch_lines(&dir.join(format!("runs/s/trial-{number}"))).iter().map(|l| l["val/loss"].as_f64().unwrap()).collect()
}

/// The numbers of the trials bz trained (each has its run directory).
fn bz_trials(dir: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(dir.join("runs/s"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("trial-")?.parse().ok())
        .filter(|n| dir.join(format!("runs/s/trial-{n}/metrics.jsonl")).exists())
        .collect()
}

#[test]
fn a_journal_written_by_bz_opens_in_optuna_and_optuna_dashboard_with_every_value() {
    let dir = setup(&base());
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!dir.path().join("runs/s/study.log.lock").exists(), "the lock is released");
    let study = optuna(dir.path(), &["read"]);
    assert_eq!(study["direction"], "MINIMIZE");
    let trials = study["trials"].as_array().unwrap();
    let numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..6).collect::<Vec<_>>());
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        let state = t["state"].as_str().unwrap();
        assert!(state == "COMPLETE" || state == "PRUNED", "{t}");
        assert!(t["started"] == true && t["completed"] == true, "{t}");
        assert_eq!(t["distributions"]["optimizer.lr"], "FloatDistribution");
        assert_eq!(t["distributions"]["model.layers[1].out"], "IntDistribution");
        assert_eq!(t["distributions"]["optimizer.name"], "CategoricalDistribution");
        let cfg = std::fs::read_to_string(dir.path().join(format!("runs/s/trial-{n}/config.toml"))).unwrap();
        assert!(cfg.contains(&format!("name = {}", t["params"]["optimizer.name"])), "{cfg}");
        assert!(cfg.contains(&format!("out = {}", t["params"]["model.layers[1].out"])), "{cfg}");
        // Intermediate values are the epochs' val/loss; the value is the last of them.
        let epochs = epoch_values(dir.path(), n);
        let inter = t["intermediate"].as_object().unwrap();
        assert!(!inter.is_empty() && inter.len() <= epochs.len(), "{t}");
        for (step, v) in inter {
            let step: usize = step.parse().unwrap();
            assert_eq!(v.as_f64().unwrap(), epochs[step - 1], "trial {n} step {step}");
        }
        let last = inter.iter().max_by_key(|(s, _)| s.parse::<usize>().unwrap()).unwrap().1;
        assert_eq!(t["value"], *last, "{t}");
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["best"]["number"], study["best"]["number"]);
    assert_eq!(summary["best"]["value"], study["best"]["value"]);

    // optuna-dashboard takes a journal as its path.
    let dash: Value = serde_json::from_str(&py_script(dir.path(), "optuna_dashboard_probe.py", &[&journal(dir.path())], Duration::from_secs(120))).unwrap();
    let summaries = dash["studies"]["study_summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0]["study_name"], "s");
    assert_eq!(dash["detail"][0]["trials"].as_array().unwrap().len(), 6);
}

#[test]
fn a_journal_study_continues_across_python_and_bz() {
    let dir = setup(&base());
    // Python starts the study: 3 trials, one pruned.
    assert_eq!(optuna(dir.path(), &["create", "3"])["trials"].as_array().unwrap().len(), 3);
    let out = tune(dir.path(), &["--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &["read"]);
    let trials = study["trials"].as_array().unwrap();
    let numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..6).collect::<Vec<_>>());
    assert_eq!(trials[1]["state"], "PRUNED");
    assert_eq!(bz_trials(dir.path()), (3..6).collect(), "bz ran the rest");
    // ...and Python goes on after bz, with the same parameters' distributions.
    let study = optuna(dir.path(), &["extend", "2"]);
    assert_eq!(study["trials"].as_array().unwrap().len(), 8);
    assert!(study["trials"].as_array().unwrap().iter().all(|t| t["state"] == "COMPLETE" || t["state"] == "PRUNED"));
    // Without --resume an existing study is an error that says what to do.
    let out = tune(dir.path(), &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already exists") && out.stderr.contains("--resume"), "{}", out.stderr);
}

fn bz_worker(dir: &Path) -> std::process::Child {
    Command::new(bz_path())
        .args(["tune", "s.toml", "--plugin-dir", "plugins", "--resume"])
        .current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn python_worker(dir: &Path, n: u32) -> std::process::Child {
    Command::new(python())
        .arg(repo_root().join("tests/py/optuna_journal.py"))
        .args([&journal(dir), "s", "work", &n.to_string()])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn four_bz_workers_share_one_journal_and_run_exactly_n_trials() {
    let dir = setup(&workers_config(8));
    let outs: Vec<Output> = (0..4).map(|_| bz_worker(dir.path())).collect::<Vec<_>>().into_iter().map(|c| wait_limited(c, Duration::from_secs(300))).collect();
    let mut ran = 0;
    for o in &outs {
        assert_eq!(o.code, 0, "{}", o.all());
        ran += o.stdout.lines().filter(|l| l.starts_with("trial ")).count();
    }
    assert_eq!(ran, 8, "every trial run by exactly one worker");
    let study = optuna(dir.path(), &["read"]);
    let trials = study["trials"].as_array().unwrap();
    let numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (0..8).collect::<Vec<_>>());
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"), "{trials:?}");
    assert_eq!(bz_trials(dir.path()), (0..8).collect());
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        assert_eq!(epoch_values(dir.path(), n).len(), 2, "trial {n} trained once, fully");
        assert_eq!(t["intermediate"]["2"].as_f64().unwrap(), epoch_values(dir.path(), n)[1], "trial {n}");
    }
}

#[test]
fn bz_and_python_workers_take_each_enqueued_trial_of_one_journal_once() {
    // Python enqueues 8 trials; 2 bz and 2 Python workers pop them at once. Whoever appends a trial's RUNNING
    // first owns it: each must be run exactly once, by one worker, with its enqueued parameters.
    let dir = setup(&workers_config(8));
    optuna(dir.path(), &["enqueue", "8"]);
    let bz: Vec<_> = (0..2).map(|_| bz_worker(dir.path())).collect();
    let py: Vec<_> = (0..2).map(|_| python_worker(dir.path(), 3)).collect();
    let mut python_ran = BTreeSet::new();
    for o in py.into_iter().map(|c| wait_limited(c, Duration::from_secs(300))) {
        assert_eq!(o.code, 0, "{}", o.all());
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        for n in v["ran"].as_array().unwrap() {
            assert!(python_ran.insert(n.as_u64().unwrap()), "Python ran trial {n} twice");
        }
    }
    for o in bz.into_iter().map(|c| wait_limited(c, Duration::from_secs(300))) {
        assert_eq!(o.code, 0, "{}", o.all());
    }
    let by_bz = bz_trials(dir.path());
    assert_eq!(python_ran.len(), 6);
    assert!(by_bz.len() >= 2, "Python started only 6 of the 8, so bz ran the rest: {by_bz:?}");
    assert!(by_bz.is_disjoint(&python_ran), "bz {by_bz:?} and Python {python_ran:?} both ran a trial");
    let study = optuna(dir.path(), &["read"]);
    let trials = study["trials"].as_array().unwrap();
    let all: BTreeSet<u64> = by_bz.union(&python_ran).copied().collect();
    assert_eq!(all, (0..trials.len() as u64).collect(), "every trial ran, once");
    assert!(trials.len() >= 8, "bz ran until the study had its 8 trials: {}", trials.len());
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"), "{trials:?}");
    // The 8 enqueued trials ran with their own parameters, whoever took them.
    for (i, t) in trials[..8].iter().enumerate() {
        assert_eq!(t["system_attrs"]["fixed_params"]["optimizer.lr"].as_f64().unwrap(), 0.001 * (i + 1) as f64, "{t}");
        assert_eq!(t["params"]["optimizer.lr"], t["system_attrs"]["fixed_params"]["optimizer.lr"], "{t}");
    }
}

#[test]
fn a_malformed_journal_line_is_one_error_naming_file_and_line() {
    let dir = setup(&base());
    let first = r#"{"op_code":0,"worker_id":"w-1","study_name":"s","directions":[1]}"#;
    std::fs::write(dir.path().join("runs/s/study.log"), format!("{first}\n{{\"op_code\":4,\"worker_id\":\"w-1\"}}\n")).unwrap();
    let out = tune(dir.path(), &["--resume"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("study.log:2: `study_id` is missing"), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!dir.path().join("runs/s/trial-0").exists());
}

#[test]
fn python_non_finite_values_in_a_journal_read_back_in_bz() {
    // Python's json writes NaN and infinities as bare tokens; bz must replay them (here: a budget already spent,
    // so bz only reads the study and reports it).
    let dir = setup(&base().replace("n_trials = 6", "n_trials = 2"));
    py(
        dir.path(),
        r#"
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend("runs/s/study.log")))
def f(t):
    t.suggest_float("optimizer.lr", 1e-4, 0.3, log=True)
    t.report(float("nan"), 1)
    t.report(float("-inf"), 2)
    return float("inf") if t.number == 0 else 0.5
study.optimize(f, n_trials=2)
"#,
    );
    let text = std::fs::read_to_string(dir.path().join("runs/s/study.log")).unwrap();
    assert!(text.contains("NaN") && text.contains("-Infinity") && text.contains("[Infinity]"), "{text}");
    let out = tune(dir.path(), &["--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["best"]["number"], 1, "{summary}");
    assert_eq!(summary["best"]["value"], 0.5, "{summary}");
}

#[test]
fn bz_waits_for_a_lock_another_worker_holds() {
    // The lock another worker (here: this test) holds, as Optuna's JournalFileSymlinkLock takes it: bz appends
    // nothing until it is released.
    let dir = setup(&workers_config(1));
    let log = dir.path().join("runs/s/study.log");
    let lock = dir.path().join("runs/s/study.log.lock");
    std::os::unix::fs::symlink(&log, &lock).unwrap();
    let worker = bz_worker(dir.path());
    // bz creates the journal before it takes the lock: from then on it is waiting.
    wait_for_file(&log, Duration::from_secs(60), "the journal");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "", "bz wrote while the lock was held");
    std::fs::remove_file(&lock).unwrap();
    let out = wait_limited(worker, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(bz_trials(dir.path()), BTreeSet::from([0]));
    assert!(!lock.exists());
}
