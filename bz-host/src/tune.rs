//! `bz tune`: hyperparameter search. A tuner plugin (optuna by default) proposes trials and keeps the study;
//! each trial runs as a child `bz train --set …` process (a crash or a leak in one trial cannot harm the next;
//! libtorch starts fresh), its epoch lines are read as they are written and reported for pruning; a trial to
//! prune gets SIGINT and stops after its current batch. Complete / Pruned / Failed go back to the tuner, and a
//! killed or crashed child is Failed, never left running.

use crate::config::{self, Loaded, TuneDirection};
use crate::plugins::{self, loader};
use anyhow::{bail, Context, Result};
use bz_plugin_api::abi_stable::std_types::{RNone, RSome};
use bz_plugin_api::TrialState;
use serde_json::{json, Map, Value};
use std::io::{BufRead, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by Ctrl-C: stop asking, stop the running trials, mark them failed.
pub static TUNE_INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub struct TuneOptions {
    pub resume: bool,
    pub study: Option<String>,
    pub storage: Option<String>,
    pub n_trials: Option<u64>,
    pub n_jobs: Option<usize>,
    pub timeout: Option<f64>,
    pub plugin_dir: PathBuf,
    /// `--set` given to `bz tune`: every trial gets them too.
    pub sets: Vec<String>,
    pub quiet: bool,
}

pub enum TuneOutcome {
    Finished,
    Interrupted,
}

struct Running {
    number: u64,
    params: Map<String, Value>,
    child: Child,
    metrics: PathBuf,
    offset: u64,
    last: Option<f64>,
    epochs: u64,
    pruning: bool,
    log: PathBuf,
}

/// A `--set` value as TOML: strings quoted, numbers and booleans as they are.
fn toml_literal(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:?}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `[tune.params]` as the tuner's search space (a list, in config order), each key checked against the config
/// by applying its first value: a typo fails here, not in every trial.
fn search_space(loaded: &Loaded, text: &str) -> Result<Value> {
    let tc = loaded.config.tune.as_ref().context("no [tune] section")?;
    if tc.params.is_empty() {
        bail!(config::ConfigError {
            file: loaded.path.clone(),
            location: None,
            key: Some("tune.params".into()),
            message: "no parameters to search: add e.g. `\"optimizer.lr\" = { type = \"float\", low = 1e-4, high = 1e-1, log = true }`".into()
        });
    }
    let mut out = Vec::new();
    for (name, spec) in &tc.params {
        let table = spec.as_table().ok_or_else(|| config::ConfigError {
            file: loaded.path.clone(),
            location: None,
            key: Some(format!("tune.params.\"{name}\"")),
            message: "must be a table like { type = \"float\", low = 0.001, high = 0.1 }".into(),
        })?;
        let mut j = serde_json::to_value(table)?;
        j["name"] = json!(name);
        // The key is right if some value of the range makes a valid config (one bad choice only fails its trials).
        let probes: Vec<Value> = match j["choices"].as_array() {
            Some(c) => c.clone(),
            None => ["low", "high"].iter().filter_map(|k| j.get(*k).cloned()).collect(),
        };
        let mut first_error = None;
        for probe in &probes {
            match config::parse(text, &loaded.path, &[format!("{name}={}", toml_literal(probe))]) {
                Ok(_) => {
                    first_error = None;
                    break;
                }
                Err(e) => {
                    first_error.get_or_insert(e.message);
                }
            }
        }
        if let Some(message) = first_error {
            bail!(config::ConfigError {
                file: loaded.path.clone(),
                location: None,
                key: Some(format!("tune.params.\"{name}\"")),
                message: format!("no value of this range makes a valid config: {message}")
            });
        }
        out.push(j);
    }
    Ok(Value::Array(out))
}

fn objective(line: &Value, metric: &str) -> Option<f64> {
    line.get(metric).and_then(Value::as_f64)
}

/// New complete lines of a growing metrics.jsonl.
fn read_new_lines(path: &Path, offset: &mut u64) -> Vec<Value> {
    let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
    if f.seek(std::io::SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut reader = std::io::BufReader::new(f);
    let mut line = String::new();
    for _ in 0..100_000 {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            // A line still being written: read it again next time.
            Ok(_) if !line.ends_with('\n') => break,
            Ok(n) => {
                *offset += n as u64;
                if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                    out.push(v);
                }
            }
        }
    }
    out
}

fn fmt_params(p: &Map<String, Value>) -> String {
    p.iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if v.is_f64() => format!("{k}={}", crate::fmt::fmt_value(x)),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn tune(loaded: &Loaded, text: &str, opts: &TuneOptions) -> Result<TuneOutcome> {
    let cfg = &loaded.config;
    let tc = cfg.tune.clone().ok_or_else(|| config::ConfigError {
        file: loaded.path.clone(),
        location: None,
        key: None,
        message: "no [tune] section: add [tune] (metric, direction, n_trials) and [tune.params], as in examples/digits-tune.toml".into(),
    })?;
    let space = search_space(loaded, text)?;
    let study = opts.study.clone().or(tc.study.clone()).unwrap_or_else(|| loaded.stem.clone());
    let root = cfg.run.dir.join(&study);
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let root = std::fs::canonicalize(&root)?;
    let storage = opts.storage.clone().or(tc.storage.clone()).unwrap_or_else(|| format!("sqlite:///{}", root.join("study.db").display()));
    let n_trials = opts.n_trials.unwrap_or(tc.n_trials);
    let n_jobs = opts.n_jobs.unwrap_or(tc.n_jobs).max(1);
    let timeout = opts.timeout.or(tc.timeout).map(Duration::from_secs_f64);
    let direction = match tc.direction {
        TuneDirection::Minimize => "minimize",
        TuneDirection::Maximize => "maximize",
    };
    let enqueue: Vec<Value> = tc.enqueue.iter().map(|t| serde_json::to_value(t).unwrap_or(Value::Null)).collect();
    let tuner_config = json!({
        "study": study, "storage": storage, "direction": direction, "sampler": tc.sampler,
        "seed": tc.seed.unwrap_or(cfg.run.seed), "n_startup_trials": tc.n_startup_trials,
        "pruner": serde_json::to_value(&tc.pruner)?, "n_trials": n_trials, "resume": opts.resume,
        "heartbeat_interval": tc.heartbeat_interval, "enqueue": enqueue, "epochs": cfg.train.epochs,
    });
    let path = loader::find(&opts.plugin_dir, &tc.plugin)?;
    let lib = loader::load(&path, &tc.plugin)?;
    let mut tuner = plugins::create_tuner(&tc.plugin, &lib, &tuner_config.to_string(), &space.to_string())?;
    let exe = std::fs::canonicalize("/proc/self/exe").or_else(|_| std::env::current_exe()).context("cannot find the bz executable")?;
    let config_path = std::fs::canonicalize(&loaded.path)?;
    if !opts.quiet {
        println!(
            "study {study} · {} · {direction} {} · {n_trials} trials, {n_jobs} at a time · sampler {} · pruner {}",
            url::Url::parse(&storage).map(|u| crate::redact::url(&u)).unwrap_or_else(|_| storage.clone()),
            tc.metric,
            tc.sampler,
            tc.pruner.get("type").and_then(|t| t.as_str()).unwrap_or("median")
        );
    }

    let start = Instant::now();
    let mut running: Vec<Running> = Vec::new();
    let mut exhausted = false;
    let mut best: Option<(u64, f64)> = None;
    let better = |a: f64, b: f64| if direction == "minimize" { a < b } else { a > b };
    for _ in 0..u64::MAX {
        let interrupted = TUNE_INTERRUPTED.load(Ordering::SeqCst);
        let timed_out = timeout.is_some_and(|t| start.elapsed() >= t);
        while !interrupted && !timed_out && !exhausted && running.len() < n_jobs {
            let trial = match tuner.ask().into_result() {
                Ok(RSome(t)) => t,
                Ok(RNone) => {
                    exhausted = true;
                    break;
                }
                Err(e) => bail!("the tuner failed to propose a trial: {}", e.message),
            };
            let params: Map<String, Value> = serde_json::from_str(trial.params_json.as_str()).unwrap_or_default();
            let run_name = format!("trial-{}", trial.id);
            let log = root.join(format!("{run_name}.log"));
            let mut cmd = Command::new(&exe);
            cmd.arg("train").arg(&config_path).arg("--run-name").arg(&run_name).arg("--plugin-dir").arg(&opts.plugin_dir).arg("-q");
            cmd.arg("--set").arg(format!("run.dir={}", toml_literal(&json!(root.display().to_string()))));
            for s in &opts.sets {
                cmd.arg("--set").arg(s);
            }
            for (k, v) in &params {
                cmd.arg("--set").arg(format!("{k}={}", toml_literal(v)));
            }
            // Tracking plugins group a study's trials (W&B reads this; TensorBoard shows the runs side by side).
            cmd.env("WANDB_RUN_GROUP", &study).env("BZ_TUNE_STUDY", &study).env("BZ_TUNE_TRIAL", trial.id.to_string());
            let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
            die_with_parent(&mut cmd);
            let child = cmd.spawn().context("cannot start a trial")?;
            let metrics = root.join(&run_name).join("metrics.jsonl");
            // A rerun of a number (never happens within a study) would read old lines: start clean.
            let _ = std::fs::remove_file(&metrics);
            running.push(Running { number: trial.id, params, child, metrics, offset: 0, last: None, epochs: 0, pruning: false, log });
        }
        if running.is_empty() && (exhausted || interrupted || timed_out) {
            break;
        }
        let mut i = 0;
        while i < running.len() {
            let r = &mut running[i];
            for line in read_new_lines(&r.metrics, &mut r.offset) {
                if line["event"] != "epoch" {
                    continue;
                }
                let epoch = line["epoch"].as_u64().unwrap_or(r.epochs + 1);
                r.epochs = epoch;
                let Some(v) = objective(&line, &tc.metric) else { continue };
                // After a prune the tuner keeps the last reported value; later epochs are not part of the trial.
                if !r.pruning {
                    r.last = Some(v);
                    match tuner.report(r.number, epoch, v).into_result() {
                        Ok(true) => {
                            r.pruning = true;
                            // SAFETY: signalling our own child, which is alive (not yet reaped).
                            unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
                        }
                        Ok(false) => {}
                        Err(e) => eprintln!("warning: the tuner could not record trial {}'s epoch {epoch}: {}", r.number, e.message),
                    }
                }
            }
            let status = r.child.try_wait()?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            // Lines written between the last poll and the exit.
            let mut r = running.remove(i);
            for line in read_new_lines(&r.metrics, &mut r.offset) {
                if line["event"] == "epoch" && !r.pruning {
                    r.epochs = line["epoch"].as_u64().unwrap_or(r.epochs);
                    if let Some(v) = objective(&line, &tc.metric) {
                        r.last = Some(v);
                        // A line that appeared between polls is still an intermediate value of the trial.
                        if tuner.report(r.number, r.epochs, v).into_result().is_err() {
                            eprintln!("warning: the tuner could not record trial {}'s epoch {}", r.number, r.epochs);
                        }
                    }
                }
            }
            let code = status.code().unwrap_or(-1);
            let (state, value, mut what) = if r.pruning {
                (TrialState::PRUNED, r.last, "PRUNED".to_string())
            } else if code == 0 && r.last.is_some() {
                (TrialState::COMPLETE, r.last, "COMPLETE".to_string())
            } else if code == 0 {
                (TrialState::FAILED, None, format!("FAILED (no `{}` in its epoch lines; see {})", tc.metric, r.log.display()))
            } else if TUNE_INTERRUPTED.load(Ordering::SeqCst) {
                (TrialState::FAILED, None, "FAILED (interrupted)".to_string())
            } else {
                (TrialState::FAILED, None, format!("FAILED (exit {code}; see {})", r.log.display()))
            };
            let rv = match value {
                Some(v) => RSome(v),
                None => RNone,
            };
            // A result the study did not take (the trial was failed as stale meanwhile) is said so, and is no best.
            let recorded = match tuner.tell(r.number, state, rv).into_result() {
                Ok(()) => true,
                Err(e) => {
                    what = format!("{what}, NOT RECORDED: {}", e.message);
                    false
                }
            };
            if recorded && state == TrialState::COMPLETE {
                if let Some(v) = value {
                    if best.is_none_or(|(_, b)| better(v, b)) {
                        best = Some((r.number, v));
                    }
                }
            }
            if !opts.quiet {
                let v = value.map(|v| format!("{} {} · ", tc.metric, crate::fmt::fmt_value(v))).unwrap_or_default();
                let b = best.map(|(n, v)| format!(" · best {} (trial {n})", crate::fmt::fmt_value(v))).unwrap_or_default();
                println!("trial {:>3} {:<9} {v}{} epochs · {}{b}", r.number, what, r.epochs, fmt_params(&r.params));
            }
        }
        if TUNE_INTERRUPTED.load(Ordering::SeqCst) {
            // The terminal's Ctrl-C reached the children too; make sure of it, then wait for them (bounded).
            for r in &running {
                // SAFETY: signalling our own, not yet reaped, children.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGINT) };
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && running.iter_mut().any(|r| matches!(r.child.try_wait(), Ok(None))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            for mut r in running.drain(..) {
                let _ = r.child.kill();
                let _ = r.child.wait();
                let _ = tuner.tell(r.number, TrialState::FAILED, RNone).into_result();
                if !opts.quiet {
                    println!("trial {:>3} FAILED (interrupted) · {}", r.number, fmt_params(&r.params));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let summary: Value = serde_json::from_str(tuner.summary().as_str()).unwrap_or(Value::Null);
    std::fs::write(root.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    let counts =
        summary["counts"].as_object().map(|c| c.iter().map(|(k, v)| format!("{v} {}", k.to_lowercase())).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    match summary["best"].as_object() {
        Some(b) => {
            let params: Map<String, Value> = b.get("params").and_then(|p| p.as_object().cloned()).unwrap_or_default();
            let sets: Vec<String> = opts.sets.iter().cloned().chain(params.iter().map(|(k, v)| format!("{k}={}", toml_literal(v)))).collect();
            let mut best_cfg = config::parse(text, &loaded.path, &sets)?;
            best_cfg.tune = None;
            let best_path = root.join("best.toml");
            crate::atomic::write(
                &best_path,
                format!("# best trial {} of study {study}: {} = {}\n{}", b["number"], tc.metric, b["value"], config::to_toml(&best_cfg)).as_bytes(),
            )
            .with_context(|| format!("cannot write {}", best_path.display()))?;
            println!(
                "best trial {} · {} {} · {}\nstudy {study}: {counts} · best config {} (`bz train {}`)",
                b["number"],
                tc.metric,
                b["value"].as_f64().map(crate::fmt::fmt_value).unwrap_or_default(),
                fmt_params(&params),
                best_path.display(),
                best_path.display()
            );
        }
        None => println!("study {study}: {counts} · no completed trial yet"),
    }
    Ok(if TUNE_INTERRUPTED.load(Ordering::SeqCst) { TuneOutcome::Interrupted } else { TuneOutcome::Finished })
}

/// A trial must not outlive its `bz tune`, however that ends (`kill -9` included): the kernel sends the trial
/// SIGINT when the parent goes, and the trial stops after its current batch as on Ctrl-C. Its study row stays
/// RUNNING until the next worker fails it through the stale heartbeat.
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            // The parent may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::raise(libc::SIGINT);
            }
            Ok(())
        });
    }
}
