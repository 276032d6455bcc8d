//! `bz export`: a checkpoint's model as a file other runtimes load, with everything `bz predict` applies baked
//! in: raw samples `[N, ...input_shape]` in, the model's outputs (and, for classification, the probabilities) out.
//!
//! - [`torchscript`] traces [`Predictor::forward`] through libtorch, so the module computes what bz computes.
//! - [`onnx`] writes the ONNX graph itself from the layer list (no Python, no exporter), with the normalisation
//!   folded in and the class labels as metadata.

pub mod onnx;
pub mod torchscript;

use crate::predict::Predictor;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// A model the asked format cannot hold (a TorchScript model as ONNX, a model over ONNX's 2 GiB): a request bz
/// refuses, so it exits 2 like other bad input, with the format that works in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A traced TorchScript module (`torch.jit.load`, `torch::jit::load`, `tch::CModule::load`).
    Torchscript,
    /// An ONNX model (onnxruntime, TensorRT, ...); config layer lists only.
    Onnx,
}

impl Format {
    /// The file a format is written to when `--output` is not given, in the checkpoint directory.
    pub fn default_file(self) -> &'static str {
        match self {
            Format::Torchscript => "model.torchscript.pt",
            Format::Onnx => "model.onnx",
        }
    }
}

/// Writes `predictor`'s model to `path` in `format`; the file appears only once complete.
pub fn export(predictor: &Predictor, format: Format, path: &Path) -> Result<()> {
    match format {
        Format::Torchscript => torchscript::write(predictor, path),
        Format::Onnx => onnx::write(predictor, path),
    }
}

/// The path beside `path` that a writer fills before renaming it over `path`.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial.{}", std::process::id()));
    path.with_file_name(name)
}
