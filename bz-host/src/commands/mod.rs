//! One file per subcommand: each an `Args` struct whose `run` is a thin layer over the library, returning how it
//! ended; `exit` turns that into the process's exit code.

mod config_args;
mod doctor;
mod eval;
pub mod exit;
mod export;
mod init;
mod interrupt;
mod plugins;
mod predict;
mod train;
mod tune;
mod validate;

use anyhow::Result;
use clap::Subcommand;
use exit::Status;

#[derive(Subcommand)]
pub enum Command {
    /// Train a model.
    Train(train::TrainArgs),
    /// Search hyperparameters: runs `[tune]`'s trials as child `bz train` processes, with pruning.
    Tune(tune::TuneArgs),
    /// Check a config (keys, values, data, model shapes) without training.
    Validate(validate::ValidateArgs),
    /// Evaluate a checkpoint on the validation, training or test split.
    Eval(eval::EvalArgs),
    /// Run a checkpoint's model on new samples (CSV, safetensors, IDX) and write its predictions (CSV, JSON lines or safetensors).
    Predict(predict::PredictArgs),
    /// Write a checkpoint's model as TorchScript or ONNX, the input normalisation included.
    Export(export::ExportArgs),
    /// Write a commented starter config.
    Init(init::InitArgs),
    /// Show libtorch, CUDA, threads, plugin directory and Python tools: what to check first when something is off.
    Doctor(doctor::DoctorArgs),
    /// Built-in and installed plugins.
    Plugins(plugins::PluginsArgs),
    /// Internal: the warm process `bz tune` forks its trials from (`bz_host::tune::forkserver`).
    #[command(name = "__trial-server", hide = true)]
    TrialServer,
}

impl Command {
    pub fn run(self) -> Result<Status> {
        match self {
            Command::Train(c) => c.run(),
            Command::Tune(c) => c.run(),
            Command::Validate(c) => c.run(),
            Command::Eval(c) => c.run(),
            Command::Predict(c) => c.run(),
            Command::Export(c) => c.run(),
            Command::Init(c) => c.run(),
            Command::Doctor(c) => c.run(),
            Command::Plugins(c) => c.run(),
            Command::TrialServer => bz_host::tune::forkserver::serve(crate::run_args).map(|()| Status::Success),
        }
    }

    /// Training keeps Rust's default of ignoring SIGPIPE, so a plugin's socket to a closed peer is an error it
    /// handles, not the death of the run; every other command ends quietly on a closed pipe (`bz plugins list | head`).
    pub fn dies_on_closed_pipe(&self) -> bool {
        // `bz tune` writes to its trial server's pipe, and must outlive that server.
        !matches!(self, Command::Train(_) | Command::Tune(_))
    }
}
