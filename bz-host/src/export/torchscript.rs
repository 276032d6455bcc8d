//! TorchScript export: libtorch's tracer records [`Predictor::forward`] on an example batch.
//!
//! The weights become constants of the traced graph, the batch dimension stays free (no layer computes a shape
//! from the batch size), and batch norm and dropout are traced in eval mode. The module returns the model's
//! outputs (a classifier's logits, a regression model's values), as `model(x)` of the same model in PyTorch
//! would: a traced method has exactly one result, and the probabilities are the head's function of the logits.

use super::partial_path;
use crate::predict::Predictor;
use anyhow::{Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// Traces `predictor` and saves the module to `path`.
pub fn write(predictor: &Predictor, path: &Path) -> Result<()> {
    let module = trace(predictor)?;
    let partial = partial_path(path);
    let saved = module.save(&partial).with_context(|| format!("cannot write {}", partial.display()));
    let renamed = saved.and_then(|()| std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display())));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    renamed?;
    crate::atomic::sync_dir(path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")));
    Ok(())
}

/// The traced module. The forward pass runs once untraced first: the tracer's closure cannot return an error, so
/// a model that fails must fail here, with its message.
pub fn trace(predictor: &Predictor) -> Result<tch::CModule> {
    let _guard = tch::no_grad_guard();
    let mut dims = vec![2];
    dims.extend(&predictor.inference.input_shape);
    let example = Tensor::f_zeros(&dims[..], (Kind::Float, predictor.device()))?;
    predictor.forward(&example).context("the model fails on an example batch")?;
    let mut failed = None;
    let module = tch::CModule::create_by_tracing("BzModel", "forward", &[example], &mut |inputs| match predictor.forward(&inputs[0]) {
        Ok(out) => vec![out.logits],
        Err(e) => {
            failed = Some(e);
            Vec::new()
        }
    });
    if let Some(e) = failed {
        return Err(e.context("tracing the model failed"));
    }
    module.context("libtorch could not trace the model")
}
