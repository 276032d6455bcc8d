//! `bz train`: one run of the trainer, with plugins, Ctrl-C saving a checkpoint.

use super::config_args::{ConfigArgs, KeyFlag};
use super::exit::Status;
use super::interrupt;
use anyhow::Result;
use bz_host::console::Verbosity;
use bz_host::train::{self, Outcome, TrainOptions};
use clap::Args;
use std::io::IsTerminal;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// Train for N epochs (same as --set train.epochs=N).
    #[arg(long)]
    epochs: Option<usize>,
    /// Continue the run from its `last` checkpoint.
    #[arg(long)]
    resume: bool,
    /// Run directory name under run.dir (default: run.name, else the config file's name).
    #[arg(long, value_parser = bz_host::config::plain_run_name)]
    run_name: Option<String>,
    /// Only errors and the final line.
    #[arg(short, long)]
    quiet: bool,
    /// Every metric in the epoch lines.
    #[arg(short, long)]
    verbose: bool,
}

impl TrainArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([KeyFlag::int("train.epochs", self.epochs.map(|n| n as u64))])?;
        let interrupted = interrupt::on_ctrl_c("saving a checkpoint after this batch")?;
        let verbosity = match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        };
        let prepared = bz_host::plugins::prepare(&loaded.config, &loaded.path, &self.cfg.plugin_dir(), self.verbose)?;
        let mut dispatcher = bz_host::plugins::dispatcher(prepared, &loaded.config, verbosity, std::io::stdout().is_terminal())?;
        let outcome = train::train(&loaded, &TrainOptions { resume: self.resume, run_name: self.run_name }, &mut dispatcher, &interrupted)?;
        Ok(match outcome {
            Outcome::Completed | Outcome::Stopped => Status::Success,
            Outcome::Interrupted => Status::Interrupted,
        })
    }
}
