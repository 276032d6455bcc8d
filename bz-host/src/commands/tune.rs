//! `bz tune`: a hyperparameter search whose trials run as child `bz train` processes.

use super::config_args::{ConfigArgs, KeyFlag};
use super::exit::Status;
use super::interrupt;
use anyhow::Result;
use bz_host::tune::{self, TuneOptions, TuneOutcome};
use clap::Args;

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
        let loaded = self.cfg.load([
            KeyFlag::string("tune.study", self.study.as_deref()),
            KeyFlag::string("tune.storage", self.storage.as_deref()),
            KeyFlag::int("tune.n_trials", self.n_trials),
            KeyFlag::int("tune.n_jobs", self.n_jobs.map(|n| n as u64)),
            KeyFlag::float("tune.timeout", self.timeout),
        ])?;
        let interrupted = interrupt::on_ctrl_c("stopping the running trials and marking them failed")?;
        let plugin_dir = self.cfg.plugin_dir();
        let opts =
            TuneOptions { resume: self.resume, plugin_dir: std::fs::canonicalize(&plugin_dir).unwrap_or(plugin_dir), sets: self.cfg.set, quiet: self.quiet };
        Ok(match tune::tune(&loaded, &opts, &interrupted)? {
            TuneOutcome::Finished => Status::Success,
            TuneOutcome::Interrupted => Status::Interrupted,
        })
    }
}
