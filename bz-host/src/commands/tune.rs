//! `bz tune`: a hyperparameter search whose trials run as child `bz train` processes.

use super::config_args::ConfigArgs;
use super::exit::Status;
use super::interrupt;
use anyhow::{Context, Result};
use bz_host::tune::{self, TuneOptions, TuneOutcome};
use clap::Args;
use std::sync::atomic::Ordering;

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Continue the study (it must exist).
    #[arg(long)]
    resume: bool,
    /// Study name (default: tune.study, else the config file's name).
    #[arg(long)]
    study: Option<String>,
    /// Storage URL (default: sqlite:///<run.dir>/<study>/study.db).
    #[arg(long)]
    storage: Option<String>,
    /// The study's total number of trials.
    #[arg(long)]
    n_trials: Option<u64>,
    /// Trials run at once by this worker.
    #[arg(long)]
    n_jobs: Option<usize>,
    /// Seconds after which no new trial starts.
    #[arg(long)]
    timeout: Option<f64>,
    /// Only errors and the final lines.
    #[arg(short, long)]
    quiet: bool,
}

impl TuneArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([])?;
        let text = std::fs::read_to_string(&self.cfg.config).with_context(|| format!("cannot read {}", self.cfg.config.display()))?;
        interrupt::on_ctrl_c("stopping the running trials and marking them failed", || tune::TUNE_INTERRUPTED.swap(true, Ordering::SeqCst))?;
        let plugin_dir = self.cfg.plugin_dir();
        let opts = TuneOptions {
            resume: self.resume,
            study: self.study,
            storage: self.storage,
            n_trials: self.n_trials,
            n_jobs: self.n_jobs,
            timeout: self.timeout,
            plugin_dir: std::fs::canonicalize(&plugin_dir).unwrap_or(plugin_dir),
            sets: self.cfg.set.clone(),
            quiet: self.quiet,
        };
        Ok(match tune::tune(&loaded, &text, &opts)? {
            TuneOutcome::Finished => Status::Success,
            TuneOutcome::Interrupted => Status::Interrupted,
        })
    }
}
