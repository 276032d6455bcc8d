//! `bz predict`: a checkpoint's predictions for new samples.

use super::config_args::ConfigArgs;
use super::exit::Status;
use anyhow::{Context, Result};
use bz_host::predict::input::{CsvInput, CsvLayout};
use bz_host::predict::output::{Format, OutputFile, Writer};
use bz_host::predict::{self, Options, Predictor};
use clap::Args;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    /// A checkpoint directory (default: the run's `best`, else `last`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The run whose checkpoint to use (default: run.name, else the config file's name).
    #[arg(long, value_parser = bz_host::config::plain_run_name)]
    run_name: Option<String>,
    /// The samples: a CSV file laid out as the training CSV (the target column may be left out), or `-` for stdin.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the predictions: `.csv` or `.jsonl` (default: CSV on stdout). Written only when complete.
    #[arg(long, value_parser = output_path)]
    output: Option<PathBuf>,
    /// Also report the K most likely classes with their probabilities.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    top_k: u32,
    /// Samples per forward pass; memory grows with this, not with the input.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
}

impl PredictArgs {
    pub fn run(self) -> Result<Status> {
        let loaded = self.cfg.load([])?;
        let dir = super::eval::checkpoint_dir(&loaded, self.checkpoint.clone(), self.run_name.clone());
        let format = self.output.as_deref().map(Format::of).transpose().map_err(anyhow::Error::msg)?.unwrap_or(Format::Csv);
        let predictor = Predictor::load(&loaded.config, &loaded.path, &dir)?;
        let layout = CsvLayout::of(&loaded.config.data.source);
        let sample_len = predictor.inference.sample_len();
        let source: Box<dyn Read> = if self.input.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(&self.input).with_context(|| format!("cannot open --input {}", self.input.display()))?)
        };
        let name = if self.input.as_os_str() == "-" { "<stdin>".to_string() } else { self.input.display().to_string() };
        let mut input = CsvInput::new(source, name, layout, sample_len)?;
        let opts = Options { batch_size: self.batch_size as usize, top_k: self.top_k as usize };
        match &self.output {
            Some(path) => {
                let mut file = OutputFile::create(path)?;
                let mut writer = Writer::new(BufWriter::new(file.file()), format);
                predict::run(&predictor, &mut input, &mut writer, &opts)?;
                writer.into_inner().flush()?;
                file.commit()?;
            }
            None => {
                let mut writer = Writer::new(BufWriter::new(std::io::stdout().lock()), format);
                predict::run(&predictor, &mut input, &mut writer, &opts)?;
                writer.into_inner().flush()?;
            }
        }
        Ok(Status::Success)
    }
}

/// `--output` must name a format by its extension; checked with the command line, so a typo is a usage error.
fn output_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    Format::of(&path)?;
    Ok(path)
}
