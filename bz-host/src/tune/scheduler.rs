//! The study's loop: ask the tuner for trials while fewer than `n_jobs` run, poll them, tell it how each ended;
//! stop asking at the timeout, when the tuner has no more trials, or on Ctrl-C (which also stops the running ones).

use super::fmt_params;
use super::study::Study;
use super::trial::{Launcher, Objectives, Trial};
use crate::interrupt::Interrupt;
use anyhow::{bail, Result};
use bz_plugin_api::abi_stable::std_types::{RNone, RSome};
use bz_plugin_api::outcome::TrialOutcome;
use bz_plugin_api::{TrialState, TunerBox};
use serde_json::{Map, Value};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How often running trials are polled for new epoch lines and exits.
const POLL: Duration = Duration::from_millis(50);
/// How long stopped trials get to save their checkpoint and exit before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

pub struct Scheduler<'a> {
    tuner: &'a mut TunerBox,
    launcher: &'a mut Launcher,
    study: &'a Study,
    interrupt: &'a Interrupt,
    quiet: bool,
    running: Vec<Trial>,
    /// The tuner has no more trials to give.
    exhausted: bool,
    /// The best value this worker saw recorded, and its trial.
    best: Option<(u64, f64)>,
    start: Instant,
}

impl<'a> Scheduler<'a> {
    pub fn new(tuner: &'a mut TunerBox, launcher: &'a mut Launcher, study: &'a Study, interrupt: &'a Interrupt, quiet: bool) -> Self {
        Scheduler { tuner, launcher, study, interrupt, quiet, running: Vec::new(), exhausted: false, best: None, start: Instant::now() }
    }

    /// Runs trials until none runs and none may start; on Ctrl-C, stops the running ones and returns.
    pub fn run(mut self) -> Result<()> {
        loop {
            self.start_trials()?;
            if self.running.is_empty() && !self.may_start() {
                return Ok(());
            }
            self.poll()?;
            if self.interrupt.is_raised() {
                self.stop_all();
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether a new trial may start: not interrupted, not past the timeout, and the tuner may have more.
    fn may_start(&self) -> bool {
        let timed_out = self.study.timeout.is_some_and(|t| self.start.elapsed() >= t);
        !self.exhausted && !timed_out && !self.interrupt.is_raised()
    }

    /// Asks for trials and starts them until `n_jobs` run.
    fn start_trials(&mut self) -> Result<()> {
        while self.may_start() && self.running.len() < self.study.n_jobs {
            match self.tuner.ask().into_result() {
                Ok(RSome(t)) => {
                    let params: Map<String, Value> = serde_json::from_str(t.params_json.as_str()).unwrap_or_default();
                    self.running.push(self.launcher.start(t.id, params)?);
                }
                Ok(RNone) => self.exhausted = true,
                Err(e) => bail!("the tuner failed to propose a trial: {}", e.message),
            }
        }
        Ok(())
    }

    fn objectives(&self) -> Objectives<'a> {
        Objectives { metrics: self.study.metrics(), constraints: &self.study.tune.constraints }
    }

    /// Reports new epochs of every running trial, and finishes those whose process ended.
    fn poll(&mut self) -> Result<()> {
        let watch = self.objectives();
        let mut i = 0;
        while i < self.running.len() {
            let trial = &mut self.running[i];
            trial.report_new_epochs(self.tuner, &watch);
            match trial.try_finish(self.tuner, &watch)? {
                None => i += 1,
                Some(status) => {
                    let trial = self.running.remove(i);
                    self.finish(&trial, status);
                }
            }
        }
        Ok(())
    }

    /// Tells the tuner how a trial ended (every objective and constraint value), and says so.
    fn finish(&mut self, trial: &Trial, status: ExitStatus) {
        let watch = self.objectives();
        let mut verdict = trial.verdict(status, &watch, self.interrupt.is_raised());
        let outcome = TrialOutcome { values: verdict.values.clone(), constraints: verdict.constraints.clone() }.to_json();
        // A result the study did not take (the trial was failed as stale meanwhile) is said so, and is no best.
        match self.tuner.tell_json(trial.number, verdict.state, outcome.as_str().into()).into_result() {
            Ok(()) => {
                let feasible = verdict.constraints.iter().all(|c| *c <= 0.0);
                if let (TrialState::COMPLETE, [v], true) = (verdict.state, &verdict.values[..], feasible) {
                    if self.best.is_none_or(|(_, b)| self.study.better(*v, b)) {
                        self.best = Some((trial.number, *v));
                    }
                }
            }
            Err(e) => verdict.what = format!("{}, NOT RECORDED: {}", verdict.what, e.message),
        }
        if !self.quiet {
            let v: String = self.study.metrics().iter().zip(&verdict.values).map(|(m, v)| format!("{m} {} · ", crate::fmt::fmt_value(*v))).collect();
            let infeasible = if verdict.constraints.iter().any(|c| *c > 0.0) { "infeasible · " } else { "" };
            let b = self.best.map(|(n, v)| format!(" · best {} (trial {n})", crate::fmt::fmt_value(v))).unwrap_or_default();
            println!("trial {:>3} {:<9} {v}{infeasible}{} epochs · {}{b}", trial.number, verdict.what, trial.epochs, fmt_params(&trial.params));
        }
    }

    /// After Ctrl-C: every running trial gets SIGINT (the terminal's Ctrl-C reached them too; make sure of it), a
    /// bounded wait to save its checkpoint, then is killed if need be and told to the tuner as failed.
    fn stop_all(&mut self) {
        for t in &self.running {
            t.interrupt();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && self.running.iter_mut().any(Trial::is_running) {
            std::thread::sleep(POLL);
        }
        for t in self.running.drain(..) {
            let (number, params) = (t.number, fmt_params(&t.params));
            t.kill();
            let _ = self.tuner.tell(number, TrialState::FAILED, RNone).into_result();
            if !self.quiet {
                println!("trial {number:>3} FAILED (interrupted) · {params}");
            }
        }
    }
}
