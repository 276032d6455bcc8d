//! `bz train`: the training loop, its run directory, checkpoints, exact resume and fault handling.
//!
//! Reproducibility rests on three choices: the sample order of an epoch is a function of (seed, epoch), libtorch's
//! generator is re-seeded from (seed, step) before every batch (dropout), and optimizer state is bz's own. So a run
//! resumed from any checkpoint, even one written mid-epoch by Ctrl-C, continues bit-identically.
//!
//! The parts: [`run_dir`] picks and claims the directory, [`Session`] builds data and model, the trainer
//! (`trainer`, `epoch`) runs epochs and emits the event stream with typed payloads (`bz_plugin_api::payload`),
//! [`Interrupt`] carries Ctrl-C in.

mod claim;
pub mod distributed;
mod epoch;
mod metrics_log;
mod phases;
pub mod run_dir;
mod session;
mod trainer;

use crate::interrupt::Interrupt;
pub use claim::Claim;
pub use distributed::Ranks;
pub use session::Session;

use crate::config::Loaded;
use crate::events::{Dispatcher, Event, EventKind, RunStatus};
use anyhow::{Context, Result};
use bz_plugin_api::payload::{RunEnd, Status};
use std::path::PathBuf;

pub struct TrainOptions {
    pub resume: bool,
    pub run_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Stopped,
    Interrupted,
}

/// The loss stopped being a finite number; the last good checkpoint is kept.
#[derive(Debug, thiserror::Error)]
#[error("the training loss became {value} at epoch {epoch}, batch {batch} (step {step}); stopped. Lower optimizer.lr, add train.clip_grad_norm, or check the data. The last good checkpoint is kept{}", checkpoint.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default())]
pub struct NonFiniteLoss {
    pub value: f64,
    pub epoch: usize,
    pub batch: usize,
    pub step: usize,
    pub checkpoint: Option<PathBuf>,
}

/// Trains a run to completion, early stop, interrupt (when `interrupt` is raised) or failure. Callbacks get
/// every lifecycle event. In a data-parallel job every rank calls this; rank 0 writes the run directory.
pub fn train(loaded: &Loaded, opts: &TrainOptions, dispatcher: &mut Dispatcher, interrupt: &Interrupt, ranks: Ranks) -> Result<Outcome> {
    let result =
        if ranks.is_main() { claim_and_fit(loaded, opts, dispatcher, interrupt, ranks) } else { fit_worker(loaded, opts, dispatcher, interrupt, ranks) };
    let status = match &result {
        Ok(Outcome::Completed) => RunStatus::COMPLETED,
        Ok(Outcome::Stopped) => RunStatus::STOPPED,
        Ok(Outcome::Interrupted) => RunStatus::INTERRUPTED,
        Err(_) => RunStatus::FAILED,
    };
    if let Err(e) = &result {
        // A run that started ends with a RUN_END too, so plugins can record why and with which exit code; the
        // error itself is what bz reports, whatever a plugin does here.
        if dispatcher.started() {
            let end = RunEnd { status: Status::Failed, message: format!("{e:#}"), exit_code: crate::exit_code::for_error(e).into(), best: None };
            if let Ok(payload) = serde_json::to_value(&end) {
                let _ = dispatcher.emit(&Event::new(EventKind::RUN_END, 0, 0, 0, &[], &payload));
            }
        }
    }
    dispatcher.finish(status);
    result
}

fn claim_and_fit(loaded: &Loaded, opts: &TrainOptions, d: &mut Dispatcher, interrupt: &Interrupt, ranks: Ranks) -> Result<Outcome> {
    let claim = run_dir::claim(loaded, opts)?;
    let place = trainer::Place { dir: claim.dir.clone(), restore_from: opts.resume.then(|| claim.dir.clone()) };
    let result = trainer::Trainer::new(loaded, place, d, interrupt, ranks).and_then(|t| t.fit());
    if result.is_err() {
        claim.release_if_unused();
    }
    result
}

/// A rank other than 0: it trains in step with rank 0 but keeps its checkpoints and metrics in a directory of its
/// own that is removed at the end; a resumed run reads rank 0's run directory (which every rank must see, as on one
/// machine or a shared filesystem).
fn fit_worker(loaded: &Loaded, opts: &TrainOptions, d: &mut Dispatcher, interrupt: &Interrupt, ranks: Ranks) -> Result<Outcome> {
    let scratch = tempfile::Builder::new().prefix(&format!("bz-rank{}-", ranks.rank())).tempdir().context("cannot create this rank's scratch directory")?;
    let restore_from = if opts.resume { Some(run_dir::resume_dir(loaded, opts)?) } else { None };
    let place = trainer::Place { dir: scratch.path().join("run"), restore_from };
    trainer::Trainer::new(loaded, place, d, interrupt, ranks)?.fit()
}

/// Mixes seed and step into libtorch's seed for one batch.
fn step_seed(seed: u64, step: usize) -> i64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}
