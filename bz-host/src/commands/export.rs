//! `bz export`: a checkpoint's model as TorchScript or ONNX, normalisation included.

use super::config_args::{CheckpointArgs, ConfigArgs};
use super::exit::Status;
use anyhow::Result;
use bz_host::export::{self, Format};
use bz_host::predict::Predictor;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// The format to write.
    #[arg(long, value_enum)]
    format: Format,
    /// Where to write it (default: `model.torchscript.pt` or `model.onnx` in the checkpoint directory).
    #[arg(long)]
    output: Option<PathBuf>,
}

impl ExportArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([])?;
        let dir = self.checkpoint.dir(&loaded);
        // Exports hold CPU tensors whatever device trained the model.
        let predictor = Predictor::load_on(&loaded.config, &loaded.path, &dir, tch::Device::Cpu)?;
        let path = self.output.unwrap_or_else(|| dir.join(self.format.default_file()));
        export::export(&predictor, self.format, &path)?;
        println!("wrote {}", path.display());
        Ok(Status::Success)
    }
}
