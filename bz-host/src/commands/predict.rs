//! `bz predict`: a checkpoint's predictions for new samples.

use super::config_args::{CheckpointArgs, ConfigArgs};
use super::exit::Status;
use anyhow::{Context, Result};
use bz_host::config::DataSource;
use bz_host::predict::idx_input::IdxInput;
use bz_host::predict::image_input::ImageInput;
use bz_host::predict::input::{CsvInput, CsvLayout, Samples};
use bz_host::predict::output::{Format, Writer};
use bz_host::predict::safetensors_input::SafetensorsInput;
use bz_host::predict::{self, Options, Predictor};
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// The samples: a CSV file laid out as the training CSV (the target column may be left out), `-` for CSV on
    /// stdin, a `.safetensors` file whose features tensor has shape [N, ...], an IDX images file (`…idx3-ubyte[.gz]`),
    /// or for a model trained on images a folder of PNG/JPEG files or a CSV with a `path` column (rows keyed by path).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the predictions: `.csv`, `.jsonl`, or `.safetensors` (tensors `logits` and `probabilities`)
    /// (default: CSV on stdout). Written only when complete.
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
        let dir = self.checkpoint.dir(&loaded);
        let format = self.output.as_deref().map(Format::of).transpose().map_err(anyhow::Error::msg)?.unwrap_or(Format::Csv);
        let predictor = Predictor::load(&loaded.config, &loaded.path, &dir)?;
        let mut input = open_input(&self.input, &loaded.config.data.source, &predictor.inference.input_shape)?;
        let opts = Options { batch_size: self.batch_size as usize, top_k: self.top_k as usize };
        let Some(path) = &self.output else {
            let mut writer = Writer::new(BufWriter::new(std::io::stdout().lock()), format);
            predict::run(&predictor, input.as_mut(), &mut writer, &opts)?;
            writer.into_inner().flush()?;
            return Ok(Status::Success);
        };
        let started = std::time::Instant::now();
        let count = predict::run_to_file(&predictor, input.as_mut(), path, format, &opts)?;
        // stdout is free when the predictions go to a file; the rate covers reading, the model and writing.
        let secs = started.elapsed().as_secs_f64();
        println!("wrote {count} predictions to {} in {secs:.2} s ({:.0} samples/s)", path.display(), count as f64 / secs.max(1e-9));
        Ok(Status::Success)
    }
}

/// A `.safetensors` file (its features tensor, under the config's `features_key` or `x`), an IDX images file
/// (`…idx3…`), a folder of images or (for a model trained on images) a CSV of image paths, else CSV; `-` is CSV on
/// stdin.
fn open_input(path: &Path, source: &DataSource, input_shape: &[i64]) -> Result<Box<dyn Samples>> {
    let sample_len = input_shape.iter().product::<i64>() as usize;
    if path.is_dir() || (matches!(source, DataSource::Images(_)) && path.extension().is_some_and(|e| e == "csv")) {
        return Ok(Box::new(ImageInput::open(path, input_shape)?));
    }
    if path.as_os_str() == "-" {
        return Ok(Box::new(CsvInput::new(std::io::stdin().lock(), "<stdin>".into(), CsvLayout::of(source), sample_len)?));
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        let key = match source {
            DataSource::Safetensors(s) => s.features_key.as_str(),
            _ => "x",
        };
        return Ok(Box::new(SafetensorsInput::open(path, key, sample_len)?));
    }
    if IdxInput::is_idx(path) {
        return Ok(Box::new(IdxInput::open(path, sample_len)?));
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open --input {}", path.display()))?;
    Ok(Box::new(CsvInput::new(file, path.display().to_string(), CsvLayout::of(source), sample_len)?))
}

/// `--output` must name a format by its extension; checked with the command line, so a typo is a usage error.
fn output_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    Format::of(&path)?;
    Ok(path)
}
