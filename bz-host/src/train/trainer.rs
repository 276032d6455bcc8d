//! The trainer: set-up (fresh or resumed), the run's start and end, and Ctrl-C. The epoch itself is in `epoch`.

use super::run_dir::{self, RunDir};
use super::{Outcome, Ranks, Session};
use crate::checkpoint::{self, PartialEpoch, TrainerState};
use crate::config::{self, Config, Loaded, Mode};
use crate::events::{Directive, Dispatcher, Event, EventKind, Metric};
use crate::interrupt::Interrupt;
use crate::optim::Optimizer;
use crate::schedule::Schedule;
use anyhow::{bail, Context, Result};
use bz_plugin_api::payload::{CheckpointLoaded, RunEnd, RunStart, Status};
use serde::Serialize;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

/// Where a trainer writes, and the run it continues.
pub(super) struct Place {
    /// The run directory (a scratch one on ranks other than 0).
    pub dir: PathBuf,
    /// The run directory whose `checkpoints/last` a resumed run starts from.
    pub restore_from: Option<PathBuf>,
}

/// What the config fixes about every epoch.
pub(super) struct Plan {
    pub batch_size: usize,
    pub val_batch_size: usize,
    /// The samples this rank trains on per epoch (all of them for a single process), of `n_total`.
    pub n_train: usize,
    pub n_total: usize,
    /// Batches per epoch (after `drop_last` and `limit_train_batches`).
    pub batches: usize,
    pub accum: usize,
    /// Only dropout (or a TorchScript module, which may do anything) draws random numbers during training; a
    /// deterministic model need not pay for re-seeding every batch.
    pub reseed: bool,
    pub mode: Mode,
}

impl Plan {
    fn new(cfg: &Config, session: &Session, ranks: &Ranks) -> Result<Plan> {
        let tc = &cfg.train;
        let bs = tc.batch_size;
        let n_total = session.data.train.len();
        let n_train = ranks.shard_len(n_total);
        let mut batches = if tc.drop_last { n_train / bs } else { n_train.div_ceil(bs) };
        if tc.limit_train_batches > 0 {
            batches = batches.min(tc.limit_train_batches);
        }
        if batches == 0 {
            bail!("train.batch_size = {bs} is larger than the {n_train} training samples with drop_last = true: lower batch_size");
        }
        Ok(Plan {
            batch_size: bs,
            val_batch_size: tc.eval_batch_size(),
            n_train,
            n_total,
            batches,
            accum: tc.grad_accumulation,
            reseed: session.model.uses_randomness(),
            mode: cfg.checkpoint.mode.unwrap_or_else(|| config::default_mode(&cfg.checkpoint.monitor)),
        })
    }
}

/// Where in the run an event happens.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub epoch: usize,
    pub step: usize,
    pub batch: usize,
}

pub(super) struct Trainer<'a> {
    pub cfg: &'a Config,
    pub d: &'a mut Dispatcher,
    pub interrupt: &'a Interrupt,
    pub session: Session,
    pub plan: Plan,
    pub opt: Optimizer,
    pub schedule: Schedule,
    pub state: TrainerState,
    pub run: RunDir,
    pub resumed: bool,
    /// The checkpoint this run resumed from, then the last one it saved.
    pub last_saved: Option<PathBuf>,
    /// The start of the throughput measurement (`train.bench_warmup_steps`): time and step.
    pub bench: Option<(Instant, usize)>,
    /// A callback asked to stop after this epoch.
    pub stop: bool,
    /// This process's part in a data-parallel job (a single process: no part).
    pub ranks: Ranks,
    /// Data-parallel: some rank was interrupted, as agreed with the last step's gradients.
    pub interrupt_agreed: bool,
}

impl<'a> Trainer<'a> {
    /// Prepares a fresh run in `place.dir`, or restores the one `place.restore_from` names; in a data-parallel job,
    /// every rank then starts from rank 0's variables.
    pub fn new(loaded: &'a Loaded, place: Place, d: &'a mut Dispatcher, interrupt: &'a Interrupt, mut ranks: Ranks) -> Result<Trainer<'a>> {
        let cfg = &loaded.config;
        let dir = place.dir.as_path();
        if let Some(from) = &place.restore_from {
            run_dir::check_resume_compatible(from, cfg)?;
        }
        let mut session = Session::prepare(cfg, &loaded.path)?;
        if cfg.train.sync_batchnorm {
            if let Some(group) = ranks.share_group()? {
                session.model.sync_batchnorm(group)?;
            }
        }
        let plan = Plan::new(cfg, &session, &ranks)?;
        let mut schedule = Schedule::new(&cfg.scheduler, cfg.optimizer.lr, cfg.train.epochs, plan.batches.div_ceil(plan.accum));
        let mut params: Vec<(String, Tensor)> = session.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut opt = Optimizer::new(&cfg.optimizer, params);
        let (mut state, last_saved) = match &place.restore_from {
            Some(from) => {
                let r = restore(from, cfg.train.epochs, &mut session, &mut opt, &mut schedule)?;
                (r.state, Some(r.from))
            }
            None => (fresh_state(&schedule), None),
        };
        // A run resumed with another train.precision starts or drops the loss scaler; the same one continues it.
        let precision = cfg.train.precision;
        state.scaler = state.scaler.filter(|_| precision.initial_scaler().is_some()).or_else(|| precision.initial_scaler());
        fs::create_dir_all(dir).with_context(|| format!("cannot create the run directory {}", dir.display()))?;
        ranks.broadcast_variables(&session.vs)?;
        let resumed = place.restore_from.is_some();
        let run = RunDir::open(dir, cfg, resumed.then_some(state.global_step))?;
        Ok(Trainer {
            cfg,
            d,
            interrupt,
            session,
            plan,
            opt,
            schedule,
            state,
            run,
            resumed,
            last_saved,
            bench: None,
            stop: false,
            ranks,
            interrupt_agreed: false,
        })
    }

    /// Epochs until the last, a stop request or Ctrl-C.
    pub fn fit(mut self) -> Result<Outcome> {
        self.start()?;
        while self.state.epoch < self.cfg.train.epochs && !self.stop {
            let mut epoch = self.begin_epoch()?;
            if self.train_epoch(&mut epoch)? {
                return self.save_interrupted();
            }
            self.validate(&mut epoch)?;
            self.finish_epoch(epoch)?;
            // A plugin (on rank 0 only) may have asked to stop: every rank stops after the same epoch.
            self.stop = self.ranks.any([self.stop])?[0];
        }
        self.end()
    }

    /// RUN_START, and CHECKPOINT_LOADED for a resumed run.
    fn start(&mut self) -> Result<()> {
        let at = At { epoch: self.state.epoch, step: self.state.global_step, batch: 0 };
        let payload = to_payload(&self.run_start())?;
        self.stop |= self.emit(EventKind::RUN_START, at, &[], &payload)?.contains(Directive::STOP_TRAINING);
        if let Some(path) = &self.last_saved {
            let payload = to_payload(&CheckpointLoaded { path: path.display().to_string() })?;
            let at = At { batch: self.state.batch_in_epoch, ..at };
            self.emit(EventKind::CHECKPOINT_LOADED, at, &[], &payload)?;
        }
        Ok(())
    }

    fn run_start(&self) -> RunStart {
        let (cfg, s) = (self.cfg, &self.session);
        let mut hyperparameters = config::hyperparameters(cfg);
        hyperparameters["model.params"] = s.model.param_count().into();
        RunStart {
            run_dir: self.run.path.display().to_string(),
            run_name: self.run.name(),
            config: config::to_toml(cfg),
            data: match self.ranks.world_size() {
                1 => format!("{} · {} train / {} val samples", s.data.description, self.plan.n_train, s.data.val.len()),
                w => format!(
                    "{} · {} train ({} per rank × {w} ranks) / {} val samples",
                    s.data.description,
                    self.plan.n_total,
                    self.plan.n_train,
                    s.data.val.len()
                ),
            },
            device: format!("{:?}", s.device).to_lowercase(),
            threads: tch::get_num_threads().into(),
            seed: cfg.run.seed,
            epochs: cfg.train.epochs as u64,
            batch_size: self.plan.batch_size as u64,
            batches_per_epoch: self.plan.batches as u64,
            params: s.model.param_count(),
            model_summary: s.model.summary(),
            resumed: self.resumed,
            metric_names: s.objective.metric_names(),
            hyperparameters: match hyperparameters {
                Value::Object(m) => m,
                _ => Default::default(),
            },
        }
    }

    /// RUN_END of a run that trained to its last epoch or was stopped.
    fn end(mut self) -> Result<Outcome> {
        let state = &self.state;
        let outcome = if state.epoch < self.cfg.train.epochs { Outcome::Stopped } else { Outcome::Completed };
        let best = match (state.best, state.best_epoch) {
            (Some(v), Some(e)) => format!("; best {} {} at epoch {e}", self.cfg.checkpoint.monitor, crate::fmt::fmt_value(v)),
            _ => String::new(),
        };
        let what = if outcome == Outcome::Stopped { "stopped early" } else { "done" };
        let message = format!("{what}: {} epochs in {:.1}s{best} · {}", state.epoch, state.elapsed_s, self.run.path.display());
        let status = if outcome == Outcome::Stopped { Status::Stopped } else { Status::Completed };
        let payload = to_payload(&RunEnd { status, message, exit_code: 0, best: state.best })?;
        let at = At { epoch: state.epoch, step: state.global_step, batch: 0 };
        let test = self.test()?;
        self.emit(EventKind::RUN_END, at, &test, &payload)?;
        Ok(outcome)
    }

    /// The test split's metrics for the best checkpoint (else the last weights), as a `test` line in
    /// metrics.jsonl; none without `data.test`. It runs after the last checkpoint, so resume is unaffected.
    fn test(&mut self) -> Result<Vec<Metric>> {
        if self.session.data.test.is_none() {
            return Ok(Vec::new());
        }
        let best = self.run.checkpoints.join("best");
        let checkpoint = if best.join("model.safetensors").exists() {
            checkpoint::load_model(&best, &mut self.session.vs)?;
            "best"
        } else {
            "last"
        };
        // Rank 0's run directory decides which weights are tested (another rank's scratch directory may lack a
        // best checkpoint, e.g. after a resume): every rank evaluates its share of the split with rank 0's.
        self.ranks.broadcast_variables(&self.session.vs)?;
        let s = &self.session;
        // A TorchScript model's buffers live only in the module the checkpoint saved: evaluate that one, as `bz eval`.
        let script = match (checkpoint, &self.cfg.model.torchscript) {
            ("best", Some(_)) => {
                let vs = tch::nn::VarStore::new(s.device);
                Some((crate::model::Model::from_torchscript(&vs, &best.join("model.pt"), &s.data.input_shape)?, vs))
            }
            _ => None,
        };
        let model = script.as_ref().map_or(&s.model, |(m, _)| m);
        let split = s.data.test.as_ref().context("no test split")?;
        let pass = crate::evaluate::Pass { name: "test", batch_size: self.plan.val_batch_size, limit: 0 };
        let mut alone = Ranks::single();
        let ranks = self.ranks.for_evaluation(self.cfg.model.torchscript.is_some(), &mut alone);
        let ev = crate::evaluate::evaluate(model, &s.objective, split, pass, ranks, |_| Ok(()))?;
        let mut line = serde_json::Map::new();
        line.insert("event".into(), "test".into());
        line.insert("epoch".into(), self.state.epoch.into());
        line.insert("step".into(), self.state.global_step.into());
        line.insert("checkpoint".into(), checkpoint.into());
        line.extend(crate::events::Metric::to_json_map(&ev.metrics));
        self.run.log.write(&Value::Object(line))?;
        self.run.log.flush()?;
        Ok(ev.metrics)
    }

    /// Ctrl-C: save where we are (unless nothing changed since the last checkpoint), report, and let the caller
    /// exit 130.
    pub fn save_interrupted(mut self) -> Result<Outcome> {
        self.run.log.flush()?;
        self.state.optimizer_steps = self.opt.steps;
        let last = self.last_saved.as_deref();
        let unchanged = last.and_then(|p| checkpoint::read_state(p).ok()).is_some_and(|s| s.global_step == self.state.global_step);
        let path = if unchanged { self.last_saved.clone() } else { Some(self.save_checkpoint(false)?) };
        let state = &self.state;
        let message = format!(
            "interrupted at epoch {}, batch {}: checkpoint {} · continue with `bz train CONFIG --resume --run-name {}`",
            state.epoch + 1,
            state.batch_in_epoch,
            path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none".into()),
            self.run.name().unwrap_or_default()
        );
        let payload = to_payload(&RunEnd { status: Status::Interrupted, message, exit_code: crate::exit_code::INTERRUPTED.into(), best: None })?;
        let at = At { epoch: state.epoch + 1, step: state.global_step, batch: state.batch_in_epoch };
        self.emit(EventKind::RUN_END, at, &[], &payload)?;
        Ok(Outcome::Interrupted)
    }

    /// Writes a checkpoint of the current state (with the TorchScript module, if the model is one).
    pub fn save_checkpoint(&self, is_best: bool) -> Result<PathBuf> {
        let script = |p: &Path| self.session.model.save_script(p);
        let inference = checkpoint::inference::Inference::of(&self.session.data);
        checkpoint::save(&self.run.checkpoints, &self.session.vs, &self.opt.state_tensors(), &self.state, &inference, Some(&script), is_best)
    }

    /// Sends an event, unless no callback subscribes to its kind.
    pub fn emit(&mut self, kind: EventKind, at: At, metrics: &[Metric], payload: &Value) -> Result<Directive> {
        emit(self.d, kind, at, metrics, payload)
    }
}

pub(super) fn emit(d: &mut Dispatcher, kind: EventKind, at: At, metrics: &[Metric], payload: &Value) -> Result<Directive> {
    if !d.wants(kind) {
        return Ok(Directive::NONE);
    }
    d.emit(&Event::new(kind, at.epoch, at.step, at.batch, metrics, payload))
}

/// A typed payload as the event stream carries it, serialised once for every callback.
pub(super) fn to_payload(p: &impl Serialize) -> Result<Value> {
    Ok(serde_json::to_value(p)?)
}

/// A resumed run's position and the checkpoint it came from.
struct Restored {
    state: TrainerState,
    from: PathBuf,
}

/// Loads `checkpoints/last`: weights, optimizer state and the trainer's position.
fn restore(dir: &Path, epochs: usize, session: &mut Session, opt: &mut Optimizer, schedule: &mut Schedule) -> Result<Restored> {
    let last = dir.join("checkpoints").join("last");
    let state = checkpoint::read_state(&last)?;
    checkpoint::load_model(&last, &mut session.vs)?;
    opt.load_state_tensors(checkpoint::load_optimizer(&last)?, state.optimizer_steps)?;
    schedule.plateau = state.plateau.clone();
    if state.epoch >= epochs {
        bail!("{} already trained {} epochs; raise --epochs to train further", dir.display(), state.epoch);
    }
    Ok(Restored { from: fs::canonicalize(&last).unwrap_or(last), state })
}

fn fresh_state(schedule: &Schedule) -> TrainerState {
    TrainerState {
        format_version: checkpoint::FORMAT_VERSION,
        bz_version: env!("CARGO_PKG_VERSION").to_string(),
        epoch: 0,
        batch_in_epoch: 0,
        global_step: 0,
        optimizer_steps: 0,
        best: None,
        best_epoch: None,
        plateau: schedule.plateau.clone(),
        partial: PartialEpoch::default(),
        elapsed_s: 0.0,
        metrics: Default::default(),
        scaler: None,
    }
}
