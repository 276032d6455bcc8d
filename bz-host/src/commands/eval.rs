//! `bz eval`: a checkpoint's metrics on the validation, training or test split.

use super::config_args::{CheckpointArgs, ConfigArgs};
use super::exit::Status;
use anyhow::{Context, Result};
use bz_host::config::ConfigError;
use bz_host::evaluate::Evaluation;
use bz_host::train::Session;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// `test` needs `data.test` in the config.
    #[arg(long, default_value = "val", value_parser = ["val", "train", "test"])]
    split: String,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    json: bool,
}

impl EvalArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([])?;
        if self.split == "test" && !loaded.config.data.has_test() {
            return Err(ConfigError {
                file: loaded.path.clone(),
                location: None,
                key: Some("data.test".into()),
                message: "is not set, so there is no test split; name a test file (data.test = \"test.csv\"; \"test\" for idx t10k)".into(),
            }
            .into());
        }
        let dir = self.checkpoint.dir(&loaded);
        if !dir.join("model.safetensors").exists() {
            anyhow::bail!("{} is not a checkpoint (no model.safetensors); train first or pass --checkpoint DIR", dir.display());
        }
        // A TorchScript model's buffers live only in the module the checkpoint saved, so evaluate that module.
        let mut c = loaded.config.clone();
        if c.model.torchscript.is_some() {
            c.model.torchscript = Some(std::fs::canonicalize(dir.join("model.pt")).with_context(|| format!("{} has no model.pt", dir.display()))?);
        }
        let Session { data, mut vs, model, objective, .. } = Session::prepare(&c, &loaded.path)?;
        bz_host::checkpoint::load_model(&dir, &mut vs)?;
        let (set, name) = match self.split.as_str() {
            "train" => (&data.train, "train"),
            // Checked above: the config names a test split.
            "test" => (data.test.as_ref().context("the config names no test split")?, "test"),
            _ => (&data.val, "val"),
        };
        if set.is_empty() {
            anyhow::bail!("the {name} split is empty (data.val_split = 0?)");
        }
        let pass = bz_host::evaluate::Pass { name, batch_size: c.train.eval_batch_size(), limit: 0 };
        let ev = bz_host::evaluate::evaluate(&model, &objective, set, pass, &mut bz_host::train::Ranks::single(), |_| Ok(()))?;
        self.print(&ev, dir);
        Ok(Status::Success)
    }

    fn print(&self, ev: &Evaluation, dir: PathBuf) {
        if self.json {
            let map = bz_host::events::Metric::to_json_map(&ev.metrics);
            println!("{}", serde_json::Value::Object(map));
        } else {
            println!("checkpoint {}", std::fs::canonicalize(&dir).unwrap_or(dir).display());
            for m in &ev.metrics {
                println!("{:<24} {}", m.key(), bz_host::fmt::fmt_value(m.value));
            }
        }
    }
}
