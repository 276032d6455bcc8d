//! `bz validate`: everything a run checks before its first batch (keys, values, data, model shapes, plugins).

use super::config_args::ConfigArgs;
use super::exit::Status;
use anyhow::Result;
use bz_host::train::Session;
use clap::Args;

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

impl ValidateArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([])?;
        let plugins = bz_host::plugins::validate_in_child(&loaded.config, &loaded.path, &self.cfg.plugin_dir())?;
        let Session { data, model, objective, .. } = Session::prepare(&loaded.config, &loaded.path)?;
        println!("{}: ok", loaded.path.display());
        println!(
            "data    {} · {} train / {} val samples · input {}",
            data.description,
            data.train.len(),
            data.val.len(),
            bz_host::fmt::fmt_shape(&data.input_shape)
        );
        println!("{}", model.summary());
        println!("metrics {}", objective.metric_names().join(", "));
        for p in &plugins {
            match &p.library {
                None => println!("plugin  {} (built in)", p.name),
                Some((version, path)) => println!("plugin  {} {version} ({})", p.name, path.display()),
            }
        }
        Ok(Status::Success)
    }
}
