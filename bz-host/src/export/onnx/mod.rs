//! ONNX export (to be written).

use crate::predict::Predictor;
use anyhow::{bail, Result};
use std::path::Path;

pub fn write(predictor: &Predictor, _path: &Path) -> Result<()> {
    if predictor.layers().is_none() {
        bail!("a TorchScript model cannot be exported to ONNX by bz: its graph is opaque to bz; use --format torchscript, or torch.onnx.export in Python");
    }
    bail!("ONNX export is not written yet")
}
