//! `bz tune` with the optuna plugin, checked by the real Optuna (5.0.0 in the test venv) and optuna-dashboard:
//! studies bz writes open in Optuna with every value, studies continue across bz and Python, several workers
//! share one SQLite study with exact trial accounting, a killed worker's trial is failed, pruning stops trials
//! early.

use bz_e2e::fixtures::*;
use bz_e2e::tune_env::{study_db, study_dir, tune};
use bz_e2e::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn base() -> String {
    Digits { layers: MLP_32, epochs: 4, batch_size: Some(128), ..Digits::default() }.toml() + TUNE
}

const TUNE: &str = r#"[tune]
metric = "val/loss"
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

fn optuna(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&py_script(dir, "optuna_study.py", args, Duration::from_secs(120))).unwrap()
}

fn epoch_values(dir: &Path, number: u64) -> Vec<f64> {
    epoch_lines(&dir.join(format!("runs/s/trial-{number}"))).iter().map(|l| l["val/loss"].as_f64().unwrap()).collect()
}

#[test]
fn a_study_written_by_bz_opens_in_optuna_and_optuna_dashboard_with_every_value() {
    let dir = study_dir(&base());
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    assert_eq!(study["direction"], "MINIMIZE");
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        let state = t["state"].as_str().unwrap();
        assert!(state == "COMPLETE" || state == "PRUNED", "{t}");
        assert!(t["started"] == true && t["completed"] == true);
        assert_eq!(t["distributions"]["optimizer.lr"], "FloatDistribution");
        assert_eq!(t["distributions"]["model.layers[1].out"], "IntDistribution");
        assert_eq!(t["distributions"]["optimizer.name"], "CategoricalDistribution");
        // The trial ran with the params Optuna holds: its resolved config says so.
        let cfg = std::fs::read_to_string(dir.path().join(format!("runs/s/trial-{n}/config.toml"))).unwrap();
        assert!(cfg.contains(&format!("name = {}", t["params"]["optimizer.name"])), "{cfg}");
        assert!(cfg.contains(&format!("out = {}", t["params"]["model.layers[1].out"])), "{cfg}");
        // Intermediate values are the epochs' val/loss, epoch by epoch (a pruned trial: up to the prune).
        let epochs = epoch_values(dir.path(), n);
        let inter = t["intermediate"].as_object().unwrap();
        assert!(!inter.is_empty() && inter.len() <= epochs.len(), "{t}");
        for (step, v) in inter {
            let step: usize = step.parse().unwrap();
            assert_eq!(v.as_f64().unwrap(), epochs[step - 1], "trial {n} step {step}");
        }
        let last = inter.iter().max_by_key(|(s, _)| s.parse::<usize>().unwrap()).unwrap().1;
        assert_eq!(t["value"], *last, "the value is the last intermediate value: {t}");
        if state == "COMPLETE" {
            assert_eq!(inter.len(), 4);
        }
    }
    // bz's own summary agrees with Optuna's best trial, and best.toml holds its params.
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/s/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["best"]["number"], study["best"]["number"]);
    assert_eq!(summary["best"]["value"], study["best"]["value"]);
    let best = std::fs::read_to_string(dir.path().join("runs/s/best.toml")).unwrap();
    assert!(best.contains(&format!("name = {}", study["best"]["params"]["optimizer.name"])), "{best}");
    assert!(!best.contains("[tune"), "best.toml is a training config: {best}");
    assert_eq!(bz(dir.path(), &["validate", "runs/s/best.toml"]).code, 0);

    let dash: Value = serde_json::from_str(&py_script(dir.path(), "optuna_dashboard_probe.py", &[&study_db(dir.path())], Duration::from_secs(120))).unwrap();
    let summaries = dash["studies"]["study_summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0]["study_name"], "s");
    assert_eq!(dash["detail"][0]["trials"].as_array().unwrap().len(), 6);
}

#[test]
fn studies_continue_across_python_and_bz() {
    let dir = study_dir(&base());
    std::fs::create_dir_all(dir.path().join("runs/s")).unwrap();
    // Python starts the study: 3 trials, one pruned.
    let py = optuna(dir.path(), &[&study_db(dir.path()), "s", "create", "3"]);
    assert_eq!(py["trials"].as_array().unwrap().len(), 3);
    // bz continues it to 6 trials...
    let out = tune(dir.path(), &["--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    let numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(trials[1]["state"], "PRUNED");
    for t in &trials[3..] {
        assert!(dir.path().join(format!("runs/s/trial-{}/metrics.jsonl", t["number"])).exists(), "bz ran trial {}", t["number"]);
    }
    // ...and Python goes on after bz.
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "extend", "2"]);
    assert_eq!(study["trials"].as_array().unwrap().len(), 8);
    // Without --resume an existing study is an error that says what to do.
    let out = tune(dir.path(), &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("already exists") && out.stderr.contains("--resume"), "{}", out.stderr);
}

#[test]
fn pruning_stops_bad_trials_early() {
    // Two good trials first, then two hopeless learning rates: the median pruner stops those after an epoch or
    // two instead of training all 40 (enough epochs that the stop lands even on a loaded machine, where bz tune
    // reads the epoch lines later than they are written).
    let cfg = base().replace("epochs = 4", "epochs = 40").replace("n_trials = 6", "n_trials = 4").replace("n_jobs = 2", "n_jobs = 1")
        + r#"
[[tune.enqueue]]
"optimizer.lr" = 0.05
"model.layers[1].out" = 32
"optimizer.name" = "adam"
[[tune.enqueue]]
"optimizer.lr" = 0.04
"model.layers[1].out" = 32
"optimizer.name" = "adam"
[[tune.enqueue]]
"optimizer.lr" = 0.0001
"model.layers[1].out" = 8
"optimizer.name" = "sgd"
[[tune.enqueue]]
"optimizer.lr" = 0.0002
"model.layers[1].out" = 8
"optimizer.name" = "sgd"
"#;
    let dir = study_dir(&cfg);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    for t in &trials[..2] {
        assert_eq!(t["state"], "COMPLETE", "{t}");
        assert_eq!(epoch_values(dir.path(), t["number"].as_u64().unwrap()).len(), 40);
    }
    for t in &trials[2..] {
        assert_eq!(t["state"], "PRUNED", "{t}");
        let ran = epoch_values(dir.path(), t["number"].as_u64().unwrap()).len();
        assert!(ran < 40, "a pruned trial ran {ran} of 40 epochs");
        // The enqueued params were used as given (Optuna's fixed_params).
        assert_eq!(t["params"]["optimizer.name"], "sgd");
        assert!(t["system_attrs"]["fixed_params"].is_object(), "{t}");
    }
}

#[test]
fn four_workers_share_one_study_without_losing_or_repeating_a_trial() {
    let dir = study_dir(&workers_config());
    four_workers(dir.path(), &[]);
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    twelve_complete_trials(dir.path(), &study);
}

/// The config for the worker tests: 12 trials of 2 epochs, no pruning, one at a time per worker.
fn workers_config() -> String {
    base()
        .replace("epochs = 4", "epochs = 2")
        .replace("n_trials = 6", "n_trials = 12")
        .replace("n_jobs = 2", "n_jobs = 1")
        .replace("type = \"median\"\nn_startup_trials = 2", "type = \"none\"")
}

/// Four `bz tune --resume` workers at once on one study; each must succeed, and together they run 12 trials.
fn four_workers(dir: &Path, extra: &[&str]) {
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(bz_path())
                .args(["tune", "s.toml", "--plugin-dir", "plugins", "--resume"])
                .args(extra)
                .current_dir(dir)
                .env("OMP_NUM_THREADS", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| wait_limited(c, Duration::from_secs(300))).collect();
    let mut ran = 0;
    for o in &outs {
        assert_eq!(o.code, 0, "{}", o.all());
        ran += o.stdout.lines().filter(|l| l.starts_with("trial ")).count();
    }
    assert_eq!(ran, 12, "every trial run by exactly one worker");
}

/// Numbers 0–11, each COMPLETE, each trained once and fully, with Optuna's intermediate values equal to the
/// trial's own epoch lines.
fn twelve_complete_trials(dir: &Path, study: &Value) {
    let trials = study["trials"].as_array().unwrap();
    let mut numbers: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (0..12).collect::<Vec<_>>());
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"), "{trials:?}");
    for t in trials {
        let n = t["number"].as_u64().unwrap();
        let epochs = epoch_values(dir, n);
        assert_eq!(epochs.len(), 2, "trial {n} trained once, fully");
        assert_eq!(t["intermediate"]["2"].as_f64().unwrap(), epochs[1], "trial {n}");
    }
}

/// Live `bz train` processes whose command line mentions `pattern`.
/// The live trial processes of the study in `dir`: exec'd ones have its run directory on their command line,
/// forked ones keep the trial server's and are told by their name (`bz-trial-N`) and working directory.
fn trials_running(dir: &Path) -> Vec<u32> {
    let pattern = dir.join("runs/s").display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'));
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let exec_d = args.contains(" train ") && args.contains(&pattern);
        let name = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map_or("", |(name, _)| name);
        let forked = name.strip_prefix("bz-trial-").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir);
        if !zombie && (exec_d || forked) {
            pids.push(pid);
        }
    }
    pids
}

/// A `bz tune` worker of `s.toml`, once its trial 0 is training.
fn worker_with_trial_0_started(dir: &Path, output: fn() -> Stdio) -> std::process::Child {
    let worker = Command::new(bz_path())
        .args(["tune", "s.toml", "--plugin-dir", "plugins"])
        .current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output())
        .spawn()
        .unwrap();
    wait_for_file(&dir.join("runs/s/trial-0/metrics.jsonl"), Duration::from_secs(60), "trial 0 never started");
    worker
}

#[test]
fn a_killed_worker_leaves_no_trial_running() {
    let cfg = base()
        .replace("epochs = 4", "epochs = 200")
        .replace("n_trials = 6", "n_trials = 2")
        .replace("n_jobs = 2", "n_jobs = 1")
        .replace("[tune.pruner]", "heartbeat_interval = 0.5\n[tune.pruner]");
    let dir = study_dir(&cfg);
    let mut worker = worker_with_trial_0_started(dir.path(), Stdio::null);
    // SIGKILL: no handler runs in bz tune, yet its trial must not go on training as an orphan. Found by this
    // test's own directory (other tests' trials live on).
    assert!(!trials_running(dir.path()).is_empty(), "no trial process found");
    worker.kill().unwrap();
    worker.wait().unwrap();
    let start = Instant::now();
    while !trials_running(dir.path()).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the trial outlived its killed bz tune: {:?}", trials_running(dir.path()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    assert_eq!(study["trials"][0]["state"], "RUNNING");
    // A new worker finds the heartbeat stale, fails the trial, and runs the rest of the study.
    let cfg2 = cfg.replace("epochs = 200", "epochs = 1");
    write_config(dir.path(), "s.toml", &cfg2);
    std::thread::sleep(Duration::from_millis(2500));
    let out = tune(dir.path(), &["--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let states: Vec<&str> = study["trials"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["FAIL", "COMPLETE"], "{study}");
}

#[test]
fn ctrl_c_fails_the_running_trials_and_exits_130() {
    let cfg = base().replace("epochs = 4", "epochs = 200").replace("n_trials = 6", "n_trials = 4");
    let dir = study_dir(&cfg);
    let worker = Command::new(bz_path())
        .args(["tune", "s.toml", "--plugin-dir", "plugins"])
        .current_dir(dir.path())
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !(dir.path().join("runs/s/trial-0/metrics.jsonl").exists() && dir.path().join("runs/s/trial-1/metrics.jsonl").exists()) {
        assert!(start.elapsed() < Duration::from_secs(60), "the trials never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc_kill(worker.id() as i32, 2) };
    let out = wait_limited(worker, Duration::from_secs(120));
    assert_eq!(out.code, 130, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let states: Vec<&str> = study["trials"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(states, vec!["FAIL", "FAIL"], "{}", out.all());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn tracking_plugins_see_each_trial_as_a_run_grouped_by_study() {
    let cfg =
        base().replace("n_trials = 6", "n_trials = 2").replace("epochs = 4", "epochs = 1") + "[plugins.tensorboard]\n[plugins.wandb]\nmode = \"offline\"\n";
    let dir = study_dir(&cfg);
    for lib in ["tensorboard", "wandb"] {
        std::os::unix::fs::symlink(bz_path().parent().unwrap().join(format!("libbz_{lib}.so")), dir.path().join(format!("plugins/{lib}.so"))).unwrap();
    }
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    for n in 0..2 {
        let run = dir.path().join(format!("runs/s/trial-{n}"));
        let tb = std::fs::read_dir(&run).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("tfevents")).count();
        assert_eq!(tb, 1, "trial {n} has its own TensorBoard run");
        let wandb_dir = std::fs::read_dir(run.join("wandb")).unwrap().flatten().next().unwrap().path();
        let exe = python().with_file_name("wandb");
        let child = Command::new(exe)
            .args(["leet", "inspect", "--summary", "--json"])
            .arg(&wandb_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = wait_limited(child, Duration::from_secs(60));
        assert_eq!(o.code, 0, "{}", o.all());
        let s: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(s["name"], format!("trial-{n}"));
        let records = Command::new(python().with_file_name("wandb")).args(["leet", "inspect", "--json"]).arg(&wandb_dir).output().unwrap();
        let run_line = String::from_utf8_lossy(&records.stdout).lines().find(|l| l.contains("\"type\":\"run\"")).map(str::to_string).unwrap();
        let run_rec: Value = serde_json::from_str(&run_line).unwrap();
        assert_eq!(run_rec["run"]["run_group"], "s", "{run_line}");
    }
}

#[test]
fn four_workers_share_one_postgresql_study() {
    let pg = bz_e2e::postgres::PgServer::start();
    let dir = study_dir(&workers_config());
    four_workers(dir.path(), &["--storage", &pg.url]);
    // Python Optuna reads the study through SQLAlchemy and psycopg2, and continues it.
    let py_url = pg.url.replace("postgresql://", "postgresql+psycopg2://");
    let study = optuna(dir.path(), &[&py_url, "s", "read"]);
    twelve_complete_trials(dir.path(), &study);
    let more = optuna(dir.path(), &[&py_url, "s", "extend", "2"]);
    assert_eq!(more["trials"].as_array().unwrap().len(), 14);
}

#[test]
fn a_grid_is_searched_once_and_a_crashing_trial_fails_alone() {
    // A 2 × 2 grid with a budget of 10: four trials, every point once. `out = 0` is an invalid model: that
    // trial's child exits with an error and the trial is FAIL; the others complete.
    let cfg = base()
        .replace("n_trials = 6", "n_trials = 10")
        .replace("epochs = 4", "epochs = 1")
        .replace("type = \"median\"\nn_startup_trials = 2", "type = \"none\"")
        .replace(
            r#""optimizer.lr" = { type = "float", low = 1e-4, high = 0.3, log = true }
"model.layers[1].out" = { type = "int", low = 8, high = 64, log = true }
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }"#,
            r#""model.layers[1].out" = { type = "categorical", choices = [0, 16] }
"optimizer.name" = { type = "categorical", choices = ["sgd", "adam"] }"#,
        )
        .replace("[tune]\n", "[tune]\nsampler = \"grid\"\n");
    let dir = study_dir(&cfg);
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let trials = study["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4, "{trials:?}");
    let mut points: Vec<(i64, String)> =
        trials.iter().map(|t| (t["params"]["model.layers[1].out"].as_i64().unwrap(), t["params"]["optimizer.name"].as_str().unwrap().to_string())).collect();
    points.sort();
    assert_eq!(points, vec![(0, "adam".into()), (0, "sgd".into()), (16, "adam".into()), (16, "sgd".into())]);
    for t in trials {
        let want = if t["params"]["model.layers[1].out"] == 0 { "FAIL" } else { "COMPLETE" };
        assert_eq!(t["state"], want, "{t}");
    }
    assert!(out.stdout.contains("FAILED (exit 2"), "{}", out.stdout);
}

#[test]
fn a_misspelled_search_key_is_a_config_error_before_any_trial() {
    let dir = study_dir(&base().replace("\"optimizer.lr\" = {", "\"optimizer.lrr\" = {"));
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("tune.params.\"optimizer.lrr\"") && out.stderr.contains("lrr"), "{}", out.stderr);
    assert!(!dir.path().join("runs/s/trial-0").exists());
}

#[test]
fn an_unknown_pruner_key_is_a_config_error_naming_it_before_any_trial() {
    // Optuna's plugin once fell back to the defaults for keys it did not know.
    let dir = study_dir(&base().replace("n_startup_trials = 2\n", "n_startup_trials = 2\nn_warmup = 3\n"));
    let out = tune(dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("`tune.pruner.n_warmup`") && out.stderr.contains("did you mean `n_warmup_steps`?"), "{}", out.stderr);
    assert!(!dir.path().join("runs/s/trial-0").exists());
}

#[test]
fn the_example_study_runs() {
    // examples/digits-tune.toml as shipped, cut to 3 trials of 2 epochs, its runs moved with `--set run.dir`
    // (which must move the trials' runs with the study, not away from where their metrics are read).
    let dir = study_dir(&std::fs::read_to_string(repo_root().join("examples/digits-tune.toml")).unwrap());
    let elsewhere = format!("run.dir={:?}", dir.path().join("elsewhere").display().to_string());
    let out = tune(dir.path(), &["--n-trials", "3", "--set", "train.epochs=2", "--study", "s", "--set", &elsewhere]);
    assert_eq!(out.code, 0, "{}", out.all());
    let db = format!("sqlite:///{}", dir.path().join("elsewhere/s/study.db").display());
    let study = optuna(dir.path(), &[&db, "s", "read"]);
    assert_eq!(study["trials"].as_array().unwrap().len(), 3);
    assert!(study["trials"].as_array().unwrap().iter().all(|t| t["state"] == "COMPLETE"), "{study}");
    assert!(study["trials"].as_array().unwrap().iter().all(|t| t["params"].as_object().unwrap().len() == 5));
}

#[test]
fn a_timeout_stops_starting_trials_and_lets_the_running_ones_finish() {
    let dir = study_dir(&base().replace("n_trials = 6", "n_trials = 500").replace("epochs = 4", "epochs = 1"));
    let start = Instant::now();
    let out = tune(dir.path(), &["--timeout", "2"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(start.elapsed() < Duration::from_secs(60));
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    let trials = study["trials"].as_array().unwrap();
    assert!(!trials.is_empty() && trials.len() < 500, "{} trials", trials.len());
    assert!(trials.iter().all(|t| t["state"] != "RUNNING"), "no trial left running");
}

#[test]
fn a_storage_password_is_never_printed() {
    let dir = study_dir(&base());
    // Nothing listens on port 1: the connection fails, and its error names the server without the password.
    let out = tune(dir.path(), &["--storage", "postgresql://bz:s3cr3t@127.0.0.1:1/study"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("postgresql://bz:***@127.0.0.1:1/study"), "{}", out.all());
    assert!(!out.all().contains("s3cr3t"), "{}", out.all());
    let out = tune(dir.path(), &["--storage", "postgresql+psycopg2://bz:s3cr3t@127.0.0.1:1/study"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains("s3cr3t"), "{}", out.all());
}

#[test]
fn a_result_that_arrives_after_its_trial_was_failed_as_stale_is_not_reported_as_complete() {
    let cfg = base()
        .replace("epochs = 4", "epochs = 400")
        .replace("n_trials = 6", "n_trials = 1")
        .replace("n_jobs = 2", "n_jobs = 1")
        .replace("type = \"median\"\nn_startup_trials = 2", "type = \"none\"");
    let dir = study_dir(&cfg);
    let worker = worker_with_trial_0_started(dir.path(), Stdio::piped);
    // Another worker decided this one was dead and failed its trial (what a stale heartbeat leads to).
    let db = dir.path().join("runs/s/study.db");
    py(
        dir.path(),
        &format!(
            "import sqlite3\nc = sqlite3.connect({:?}, timeout=60)\nc.execute(\"UPDATE trials SET state = 'FAIL' WHERE number = 0\")\nc.commit()\n",
            db.display().to_string()
        ),
    );
    let out = wait_limited(worker, Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.all());
    let line = out.stdout.lines().find(|l| l.starts_with("trial   0")).unwrap_or_default();
    assert!(line.contains("NOT RECORDED") && line.contains("failed as stale"), "{}", out.stdout);
    assert!(!out.stdout.contains("best trial 0"), "{}", out.stdout);
    let study = optuna(dir.path(), &[&study_db(dir.path()), "s", "read"]);
    assert_eq!(study["trials"][0]["state"], "FAIL", "{study}");
}

#[test]
fn a_tune_flag_and_the_same_set_agree_and_the_flag_wins() {
    // `--timeout 0` starts no trial; the header shows the settings the study runs with.
    let header = |args: &[&str]| {
        let dir = study_dir(&base());
        let out = tune(dir.path(), args);
        assert_eq!(out.code, 0, "{}", out.all());
        out.stdout.lines().next().unwrap_or_default().replace(&dir.path().display().to_string(), "DIR")
    };
    let by_flags = header(&["--study", "x", "--n-trials", "3", "--n-jobs", "4", "--timeout", "0"]);
    assert!(by_flags.starts_with("study x · sqlite:///DIR/runs/x/study.db") && by_flags.contains("3 trials, 4 at a time"), "{by_flags}");
    let by_sets = header(&["--set", "tune.study=x", "--set", "tune.n_trials=3", "--set", "tune.n_jobs=4", "--set", "tune.timeout=0"]);
    assert_eq!(by_flags, by_sets);
    // A flag wins over a --set of its key, wherever each stands on the command line (as --epochs does).
    let both = header(&["--n-trials", "3", "--set", "tune.n_trials=9", "--study", "x", "--set", "tune.study=y", "--n-jobs", "4", "--timeout", "0"]);
    assert_eq!(by_flags, both);
}

#[test]
fn a_timeout_that_is_not_a_duration_is_a_config_error() {
    let dir = study_dir(&base());
    for args in [&["--timeout=-1"][..], &["--set", "tune.timeout=-1"], &["--set", "tune.timeout=nan"]] {
        let out = tune(dir.path(), args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.stderr.contains("`tune.timeout`") && !out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}

/// The processes under `root` (itself included) whose name starts `bz-trial`: (pid, name, parent pid).
fn trial_processes(root: u32) -> Vec<(u32, String, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its closing parenthesis.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_string();
        let ppid = stat[close + 2..].split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if name.starts_with("bz-trial") || pid == root {
            found.push((pid, name, ppid));
        }
    }
    found
}

/// Trials are forked from one warm `bz __trial-server` (libtorch loaded once; each trial is still its own
/// process, named `bz-trial-N`), and a study run so is the same study, value for value, as with a new process per
/// trial (`BZ_TUNE_EXEC=1`).
#[test]
fn trials_fork_from_one_warm_server_and_equal_trials_started_anew() {
    let config = base()
        .replace("n_jobs = 2", "n_jobs = 1")
        .replace("n_trials = 6", "n_trials = 4")
        .replace("type = \"median\"\nn_startup_trials = 2", "type = \"none\"");
    let forked = study_dir(&config);
    let mut child = bz_command(forked.path(), &["tune", "s.toml", "--plugin-dir", "plugins", "-q"], &[]).spawn().unwrap();
    let tune_pid = child.id();
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for (pid, name, ppid) in trial_processes(tune_pid) {
            seen.insert(pid, (name, ppid));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = wait_limited(child, Duration::from_secs(10));
    assert_eq!(out.code, 0, "{}", out.all());
    let servers: Vec<u32> = seen.iter().filter(|(_, (n, ppid))| n == "bz-trial-server" && *ppid == tune_pid).map(|(p, _)| *p).collect();
    assert_eq!(servers.len(), 1, "one trial server under bz tune: {seen:?}");
    let trials: Vec<&String> = seen.values().filter(|(n, ppid)| n.starts_with("bz-trial-") && *ppid == servers[0]).map(|(n, _)| n).collect();
    assert!(!trials.is_empty(), "trials forked from the server: {seen:?}");

    let fresh = study_dir(&config);
    let out = bz_env(fresh.path(), &["tune", "s.toml", "--plugin-dir", "plugins", "-q"], &[("BZ_TUNE_EXEC", Path::new("1"))], Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.all());
    // Every epoch's val/loss of every trial: the same sampled parameters and the same training.
    let losses = |dir: &Path| -> Vec<Vec<Value>> {
        (0..4).map(|n| epoch_lines(&dir.join(format!("runs/s/trial-{n}"))).iter().map(|l| l["val/loss"].clone()).collect()).collect()
    };
    let (a, b) = (losses(forked.path()), losses(fresh.path()));
    assert!(a.iter().all(|t| t.len() == 4), "{a:?}");
    assert_eq!(a, b, "forked and new-process trials give the same study");
}
