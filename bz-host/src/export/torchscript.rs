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
    let partial = partial_path(path);
    // Made here first so that an unwritable place is a one-line I/O error, not libtorch's with its C++ backtrace.
    std::fs::File::create(&partial).with_context(|| format!("cannot write {}", path.display()))?;
    let module = trace(predictor);
    let saved = module.and_then(|m| m.save(&partial).map_err(|e| one_line(e).context(format!("cannot write {}", path.display()))));
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
    module.map_err(|e| one_line(e).context("libtorch could not trace the model"))
}

/// libtorch's messages carry a C++ backtrace after their first line; users get the first line.
fn one_line(e: tch::TchError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().trim().lines().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::inference::{Inference, FORMAT_VERSION};
    use crate::config::{self, TaskKind};
    use crate::data::Normalization;
    use crate::model::Model;
    use tch::{nn, Device};

    const CONFIG: &str = r#"
[data]
source = "digits"
[model]
layers = [
  { type = "conv2d", out = 3, kernel = 3 }, { type = "batchnorm" }, { type = "gelu" }, { type = "flatten" },
  { type = "residual", layers = [{ type = "layernorm" }, { type = "linear", out = 108 }] },
  { type = "reshape", shape = [3, -1] }, { type = "flatten" }, { type = "linear", out = 4 },
]
"#;

    /// A checkpoint written by hand: random weights, moved batch-norm statistics, a per-channel normalisation.
    fn checkpoint(dir: &Path, cfg: &config::Config) {
        let vs = nn::VarStore::new(Device::Cpu);
        Model::from_layers(&vs, &cfg.model.layers, &[1, 8, 8]).unwrap();
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with("running_mean") || name.ends_with("running_var") {
                    t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
                }
            }
        });
        vs.save(dir.join("model.safetensors")).unwrap();
        let normalization = Some(Normalization { shape: vec![1, 1, 1], mean: vec![3.0], std: vec![2.5] });
        let inference =
            Inference { format_version: FORMAT_VERSION, task: TaskKind::Classification, input_shape: vec![1, 8, 8], outputs: 4, labels: None, normalization };
        inference.write(dir).unwrap();
    }

    #[test]
    fn libtorch_loads_the_module_and_computes_what_the_predictor_does_for_any_batch() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config::parse(CONFIG, Path::new("c.toml"), &[]).unwrap();
        checkpoint(dir.path(), &cfg);
        let predictor = Predictor::load_on(&cfg, Path::new("c.toml"), dir.path(), Device::Cpu).unwrap();
        let path = dir.path().join("m.pt");
        write(&predictor, &path).unwrap();
        let module = tch::CModule::load(&path).unwrap();
        for n in [1, 5, 33] {
            let x = Tensor::rand([n, 1, 8, 8], (Kind::Float, Device::Cpu)) * 16.0;
            let want = tch::no_grad(|| predictor.forward(&x)).unwrap().logits;
            let got = tch::no_grad(|| module.forward_ts(&[&x])).unwrap();
            assert_eq!(got.size(), vec![n, 4]);
            let diff = (got - &want).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "batch {n}: the loaded module differs by {diff}");
        }
        // Only the finished file is left.
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.contains("partial")), "{names:?}");
    }
}
