//! `bz init`: a commented starter config.

use super::exit::Status;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

const STARTER: &str = include_str!("../../../examples/digits.toml");

#[derive(Args)]
pub struct InitArgs {
    #[arg(default_value = "bz.toml")]
    path: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

impl InitArgs {
    pub fn run(self) -> Result<Status> {
        let path = &self.path;
        if path.exists() && !self.force {
            anyhow::bail!("{} already exists; pass --force to overwrite it", path.display());
        }
        bz_host::atomic::write(path, STARTER.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {} · train it with `bz train {}`", path.display(), path.display());
        Ok(Status::Success)
    }
}
