//! `bz train`: one run of the trainer, with plugins, Ctrl-C saving a checkpoint.

use super::config_args::{ConfigArgs, KeyFlag};
use super::exit::Status;
use super::interrupt;
use anyhow::Result;
use bz_host::console::Verbosity;
use bz_host::events::Dispatcher;
use bz_host::train::{self, Outcome, Ranks, TrainOptions};
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
    /// Train on N data-parallel ranks on this machine (c10d Gloo), as `torchrun --nproc-per-node N --no-python bz
    /// train …` would; `batch_size` is per rank.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    nproc: Option<u32>,
}

impl TrainArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([KeyFlag::int("train.epochs", self.epochs.map(|n| n as u64))])?;
        if let Some(n) = self.nproc.filter(|&n| n > 1 && std::env::var_os("RANK").is_none()) {
            return launch(n);
        }
        let interrupted = interrupt::on_ctrl_c("saving a checkpoint after this batch")?;
        let ranks = Ranks::from_env()?;
        if !ranks.is_main() {
            // Rank 0 reports and runs the plugins; the others train in silence.
            let mut dispatcher = Dispatcher::default();
            let outcome = train::train(&loaded, &TrainOptions { resume: self.resume, run_name: self.run_name }, &mut dispatcher, &interrupted, ranks)?;
            return Ok(status(outcome));
        }
        let verbosity = match (self.quiet, self.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, true) => Verbosity::Verbose,
            (false, false) => Verbosity::Normal,
        };
        let prepared = bz_host::plugins::prepare(&loaded.config, &loaded.path, &self.cfg.plugin_dir(), self.verbose)?;
        let mut dispatcher = bz_host::plugins::dispatcher(prepared, &loaded.config, verbosity, std::io::stdout().is_terminal())?;
        let outcome = train::train(&loaded, &TrainOptions { resume: self.resume, run_name: self.run_name }, &mut dispatcher, &interrupted, ranks)?;
        Ok(status(outcome))
    }
}

fn status(outcome: Outcome) -> Status {
    match outcome {
        Outcome::Completed | Outcome::Stopped => Status::Success,
        Outcome::Interrupted => Status::Interrupted,
    }
}

/// `--nproc N`: this command again as N ranks; Ctrl-C reaches them too, and each saves, so the launcher only waits.
fn launch(n: u32) -> Result<Status> {
    if !bz_host::dist::available() {
        anyhow::bail!("--nproc needs distributed training, which this bz was built without (run scripts/setup --dist, touch bz-host/build.rs and rebuild)");
    }
    let _wait = interrupt::on_ctrl_c("the ranks save a checkpoint after this batch")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ended = bz_host::dist::launch::run(n, &args)?;
    Ok(Status::Exited(u8::try_from(ended.code()).unwrap_or(1)))
}
