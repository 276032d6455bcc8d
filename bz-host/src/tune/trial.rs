//! One trial: a child `bz train` process, the metrics file it writes, and the values reported from it.

use super::forkserver::{ForkServer, Forked};
use super::toml_literal;
use crate::config::Constraint;
use anyhow::{Context, Result};
use bz_plugin_api::{TrialState, TunerBox};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How trials are started: the same bz, config, plugins and `--set`s for each, in the study's directory.
pub struct Launcher {
    pub exe: PathBuf,
    pub config: PathBuf,
    pub plugin_dir: PathBuf,
    /// The user's `--set`s, before the trial's params.
    pub sets: Vec<String>,
    pub root: PathBuf,
    pub study: String,
    /// Forks trials from a warm bz; without one (or when it fails) each trial is exec'd.
    pub server: Option<ForkServer>,
}

impl Launcher {
    /// Starts the tuner's trial `number` with `params`, its output going to `trial-N.log`.
    pub fn start(&mut self, number: u64, params: Map<String, Value>) -> Result<Trial> {
        let run_name = format!("trial-{number}");
        let log = self.root.join(format!("{run_name}.log"));
        let args = self.args(&run_name, &params);
        // Tracking plugins group a study's trials (W&B reads this; TensorBoard shows the runs side by side).
        let env = vec![
            ("WANDB_RUN_GROUP".to_string(), self.study.clone()),
            ("BZ_TUNE_STUDY".to_string(), self.study.clone()),
            ("BZ_TUNE_TRIAL".to_string(), number.to_string()),
        ];
        let forked = self.server.as_mut().map(|server| server.spawn(args.clone(), env.clone(), &log));
        let process = match forked {
            Some(Ok(forked)) => TrialProcess::Forked(forked),
            Some(Err(e)) => {
                eprintln!("warning: {e:#}; trials start as new processes from now on");
                self.server = None;
                TrialProcess::Spawned(self.exec(&args, &env, &log)?)
            }
            None => TrialProcess::Spawned(self.exec(&args, &env, &log)?),
        };
        let metrics = self.root.join(&run_name).join("metrics.jsonl");
        // A rerun of a number (never happens within a study) would read old lines: start clean.
        let _ = std::fs::remove_file(&metrics);
        Ok(Trial {
            number,
            params,
            process,
            metrics: MetricsTail { path: metrics, offset: 0 },
            last: BTreeMap::new(),
            epochs: 0,
            pruning: false,
            exited: false,
            log,
        })
    }

    /// `bz train …` for one trial, without the program name.
    fn args(&self, run_name: &str, params: &Map<String, Value>) -> Vec<String> {
        let mut args: Vec<String> = vec!["train".into(), self.config.display().to_string(), "--run-name".into(), run_name.into()];
        args.extend(["--plugin-dir".into(), self.plugin_dir.display().to_string(), "-q".into()]);
        for s in &self.sets {
            args.extend(["--set".into(), s.clone()]);
        }
        // After the user's `--set`s: a `run.dir` among them already placed the study's root, and the trial's run
        // must land inside it, where its metrics are read.
        args.extend(["--set".into(), format!("run.dir={}", toml_literal(&json!(self.root.display().to_string())))]);
        for (k, v) in params {
            args.extend(["--set".into(), format!("{k}={}", toml_literal(v))]);
        }
        args
    }

    /// A trial as a new `bz` process.
    fn exec(&self, args: &[String], env: &[(String, String)], log: &Path) -> Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        die_with_parent(&mut cmd, libc::SIGINT);
        cmd.spawn().context("cannot start a trial")
    }
}

/// A trial's process: exec'd by `bz tune`, or forked by its trial server.
enum TrialProcess {
    Spawned(Child),
    Forked(Forked),
}

impl TrialProcess {
    fn id(&self) -> u32 {
        match self {
            TrialProcess::Spawned(c) => c.id(),
            TrialProcess::Forked(f) => f.id(),
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self {
            TrialProcess::Spawned(c) => Ok(c.try_wait()?),
            TrialProcess::Forked(f) => Ok(f.try_wait()),
        }
    }

    fn kill(&mut self) {
        match self {
            TrialProcess::Spawned(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            TrialProcess::Forked(f) => f.kill(),
        }
    }
}

pub struct Trial {
    pub number: u64,
    pub params: Map<String, Value>,
    process: TrialProcess,
    metrics: MetricsTail,
    /// The last value of each objective and constraint metric (until a prune): the trial's values.
    last: BTreeMap<String, f64>,
    pub epochs: u64,
    /// The tuner said prune and the child got SIGINT.
    pruning: bool,
    /// The child is reaped: it must not be signalled again (its pid may be reused).
    exited: bool,
    log: PathBuf,
}

/// What a trial's epoch lines are read for: its objectives' metrics and its constraints.
pub struct Objectives<'a> {
    pub metrics: &'a [String],
    pub constraints: &'a [Constraint],
}

impl Objectives<'_> {
    /// Only a single objective is reported epoch by epoch (for pruning), as in Optuna.
    fn reported(&self) -> Option<&str> {
        match self.metrics {
            [one] => Some(one),
            _ => None,
        }
    }

    fn watches(&self, key: &str) -> bool {
        self.metrics.iter().any(|m| m == key) || self.constraints.iter().any(|c| c.metric == key)
    }
}

/// A finished trial's result for the tuner, and the words that describe it.
pub struct Verdict {
    pub state: TrialState,
    /// One per objective (empty for a failed trial; the last reported one for a pruned trial).
    pub values: Vec<f64>,
    /// Optuna's constraint values (`c <= 0` holds), one per constraint, when the trial has them all.
    pub constraints: Vec<f64>,
    pub what: String,
}

impl Trial {
    /// Keeps the objectives and constraint metrics of each new epoch line; with one objective, reports it to the
    /// tuner, and stops the child when the tuner prunes it.
    pub fn report_new_epochs(&mut self, tuner: &mut TunerBox, watch: &Objectives<'_>) {
        for line in self.metrics.new_lines() {
            if line["event"] != "epoch" {
                continue;
            }
            let epoch = line["epoch"].as_u64().unwrap_or(self.epochs + 1);
            self.epochs = epoch;
            // After a prune the tuner keeps the last reported value; later epochs are not part of the trial.
            if self.pruning {
                continue;
            }
            if let Some(fields) = line.as_object() {
                for (k, v) in fields.iter().filter(|(k, _)| watch.watches(k)) {
                    if let Some(v) = v.as_f64() {
                        self.last.insert(k.clone(), v);
                    }
                }
            }
            let Some(v) = watch.reported().and_then(|m| line.get(m)).and_then(Value::as_f64) else { continue };
            match tuner.report(self.number, epoch, v).into_result() {
                // A child that already finished ran to its end: the prune comes too late to stop anything.
                Ok(true) if !self.exited => {
                    self.pruning = true;
                    self.interrupt();
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: the tuner could not record trial {}'s epoch {epoch}: {}", self.number, e.message),
            }
        }
    }

    /// The child's exit status once it has ended; then the lines it wrote since the last poll are reported too.
    pub fn try_finish(&mut self, tuner: &mut TunerBox, watch: &Objectives<'_>) -> Result<Option<ExitStatus>> {
        let status = self.process.try_wait()?;
        if status.is_some() {
            self.exited = true;
            self.report_new_epochs(tuner, watch);
        }
        Ok(status)
    }

    /// What to tell the tuner about a trial whose child ended with `status`.
    pub fn verdict(&self, status: ExitStatus, watch: &Objectives<'_>, interrupted: bool) -> Verdict {
        let code = status.code().unwrap_or(-1);
        let values: Option<Vec<f64>> = watch.metrics.iter().map(|m| self.last.get(m).copied()).collect();
        let constraints: Option<Vec<f64>> = watch.constraints.iter().map(|c| self.last.get(&c.metric).map(|v| c.value(*v))).collect();
        let missing = watch.metrics.iter().chain(watch.constraints.iter().map(|c| &c.metric)).find(|m| !self.last.contains_key(*m));
        let fail = |what: String| Verdict { state: TrialState::FAILED, values: Vec::new(), constraints: Vec::new(), what };
        if self.pruning {
            let values = watch.reported().and_then(|m| self.last.get(m).copied()).into_iter().collect();
            return Verdict { state: TrialState::PRUNED, values, constraints: constraints.unwrap_or_default(), what: "PRUNED".into() };
        }
        match (code, values, constraints) {
            (0, Some(values), Some(constraints)) => Verdict { state: TrialState::COMPLETE, values, constraints, what: "COMPLETE".into() },
            (0, _, _) => fail(format!("FAILED (no `{}` in its epoch lines; see {})", missing.map(String::as_str).unwrap_or("?"), self.log.display())),
            _ if interrupted => fail("FAILED (interrupted)".into()),
            _ => fail(format!("FAILED (exit {code}; see {})", self.log.display())),
        }
    }

    /// SIGINT: the trial stops after its current batch, as on Ctrl-C.
    pub fn interrupt(&self) {
        if !self.exited {
            // SAFETY: signalling our own child, which is not yet reaped.
            unsafe { libc::kill(self.process.id() as i32, libc::SIGINT) };
        }
    }

    /// Whether the child is still running (it is reaped when it is not).
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Kills the child if it still runs, and reaps it.
    pub fn kill(mut self) {
        self.process.kill();
    }
}

/// The complete lines a trial has appended to its `metrics.jsonl` since the last read.
struct MetricsTail {
    path: PathBuf,
    offset: u64,
}

impl MetricsTail {
    /// Bounded per call, so one huge file cannot stall the scheduler; the rest comes next time.
    const MAX_LINES: usize = 100_000;

    fn new_lines(&mut self) -> Vec<Value> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut reader = std::io::BufReader::new(f);
        let mut line = String::new();
        for _ in 0..Self::MAX_LINES {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line still being written: read it again next time.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(n) => {
                    self.offset += n as u64;
                    if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                        out.push(v);
                    }
                }
            }
        }
        out
    }
}

/// A trial must not outlive its `bz tune`, however that ends (`kill -9` included): the kernel sends the trial
/// SIGINT when the parent goes, and the trial stops after its current batch as on Ctrl-C. Its study row stays
/// RUNNING until the next worker fails it through the stale heartbeat. (The trial server gets SIGKILL.)
pub(super) fn die_with_parent(cmd: &mut Command, signal: i32) {
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            signal_on_parent_death(parent, signal);
            Ok(())
        });
    }
}

/// In a new child of `parent`: `signal` when the parent dies, at once if it already has. Async-signal-safe.
pub(super) fn signal_on_parent_death(parent: u32, signal: i32) {
    // SAFETY: plain syscalls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, signal);
        // The parent may have died before prctl took effect.
        if libc::getppid() as u32 != parent {
            libc::raise(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MetricsTail;
    use std::io::Write;

    #[test]
    fn a_line_still_being_written_is_read_once_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut tail = MetricsTail { path: path.clone(), offset: 0 };
        assert!(tail.new_lines().is_empty(), "no file yet");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "{{\"epoch\": 1}}\n{{\"epo").unwrap();
        assert_eq!(tail.new_lines(), vec![serde_json::json!({"epoch": 1})]);
        writeln!(f, "ch\": 2}}").unwrap();
        assert_eq!(tail.new_lines(), vec![serde_json::json!({"epoch": 2})]);
        assert!(tail.new_lines().is_empty());
    }
}
