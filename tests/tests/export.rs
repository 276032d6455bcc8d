//! `bz export --format torchscript`: the traced module, loaded by PyTorch (`torch.jit.load`), computes on raw
//! samples what `bz predict` computes (normalisation included), for any batch size; bad requests are one line and
//! leave no file. Loading with libtorch through tch (`CModule::load`) is checked by the unit tests of
//! `export::torchscript`; ONNX has its own file (onnx.rs).

use bz_e2e::fixtures::*;
use bz_e2e::*;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;
use std::time::Duration;

/// Every layer type that has weights or buffers, in one model: a conv with batch norm, a residual block with layer
/// norm, GELU and dropout, pooling both ways.
const CNN: &str = r#"[
  { type = "conv2d", out = 6, kernel = 3, padding = 1 }, { type = "batchnorm" }, { type = "relu" },
  { type = "maxpool2d", kernel = 2 }, { type = "avgpool2d", kernel = 2, stride = 1 }, { type = "flatten" },
  { type = "layernorm" },
  { type = "residual", layers = [{ type = "linear", out = 54 }, { type = "gelu" }, { type = "dropout", p = 0.3 }] },
  { type = "reshape", shape = [6, 3, 3] }, { type = "flatten" }, { type = "tanh" }, { type = "linear", out = 10 }
]"#;

/// Samples in the digits' own range (0..1 after bz's /16) but not digits: 37 of them, shape [37, 1, 8, 8].
fn write_samples(path: &Path) {
    let values: Vec<f32> = (0..37 * 64).map(|i| ((i * 7919 % 257) as f32) / 256.0).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![37, 1, 8, 8], &bytes).unwrap();
    safetensors::serialize_to_file([("x", view)], None, path).unwrap();
}

/// `bz predict`'s logits for `x.safetensors`, as written to its `.safetensors` output.
fn bz_logits(dir: &Path, config: &str) -> Vec<f32> {
    let out = bz(dir, &["predict", config, "--input", "x.safetensors", "--output", "p.safetensors", "--batch-size", "16"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (dtype, shape, bytes) = tensors(&dir.join("p.safetensors")).remove("logits").expect("logits tensor");
    assert_eq!((dtype.as_str(), shape), ("F32", vec![37, 10]));
    bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// PyTorch's outputs for the samples: all 37 at once, then one at a time (the batch dimension is free).
fn python_logits(dir: &Path, module: &str) -> Vec<f32> {
    let script = format!(
        r#"
import json, torch
from safetensors.torch import load_file
m = torch.jit.load("{module}")
x = load_file("x.safetensors")["x"]
with torch.no_grad():
    whole = m(x)
    single = torch.cat([m(x[i:i + 1]) for i in range(len(x))])
assert (whole - single).abs().max() < 1e-5, "batch size changes the result"
print(json.dumps(whole.flatten().tolist()))
"#
    );
    let out: Vec<f64> = serde_json::from_str(py(dir, &script).trim()).unwrap();
    out.into_iter().map(|v| v as f32).collect()
}

#[test]
fn the_traced_module_computes_what_bz_predict_does_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = Digits { layers: CNN, epochs: 2, ..Digits::default() }.toml().replace("source = \"digits\"", "source = \"digits\"\nnormalize = true");
    write_config(d, "c.toml", &cfg);
    assert_eq!(bz(d, &["train", "c.toml", "-q"]).code, 0);
    let out = bz(d, &["export", "c.toml", "--format", "torchscript"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.trim(), format!("wrote {}", Path::new("runs/c/checkpoints/best/model.torchscript.pt").display()));
    write_samples(&d.join("x.safetensors"));
    let want = bz_logits(d, "c.toml");
    // Normalisation is in the module: without it the logits would be far off (the inputs are not standardised).
    assert!(want.iter().any(|v| v.abs() > 0.1), "{want:?}");
    let py = python_logits(d, "runs/c/checkpoints/best/model.torchscript.pt");
    assert!(max_diff(&py, &want) <= 1e-6, "PyTorch differs from bz predict by {}", max_diff(&py, &want));
}

#[test]
fn a_torchscript_model_exports_to_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    py(
        d,
        r#"
import torch
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
torch.manual_seed(0)
torch.jit.script(net).save("net.pt")
"#,
    );
    write_config(d, "c.toml", "[run]\nthreads = 1\n[model]\ntorchscript = \"net.pt\"\n[train]\nepochs = 2\n");
    assert_eq!(bz(d, &["train", "c.toml", "-q"]).code, 0);
    let out = bz(d, &["export", "c.toml", "--format", "torchscript", "--output", "exported.pt"]);
    assert_eq!(out.code, 0, "{}", out.all());
    write_samples(&d.join("x.safetensors"));
    let want = bz_logits(d, "c.toml");
    let py = python_logits(d, "exported.pt");
    assert!(max_diff(&py, &want) <= 1e-6, "PyTorch differs from bz predict by {}", max_diff(&py, &want));
}

#[test]
fn bad_exports_are_one_line_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, "c.toml", &Digits { epochs: 1, ..Digits::default() }.toml());
    // Nothing trained yet.
    let out = bz(d, &["export", "c.toml", "--format", "torchscript"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.trim().lines().count() == 1 && out.stderr.contains("not a checkpoint"), "{}", out.stderr);
    assert_eq!(bz(d, &["train", "c.toml", "-q"]).code, 0);
    // An unknown format is a usage error that lists the formats.
    let out = bz(d, &["export", "c.toml", "--format", "tflite"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("torchscript") && out.stderr.contains("onnx"), "{}", out.stderr);
    // A directory that does not exist: one line naming the file, and nothing left behind.
    let out = bz_in(d, &["export", "c.toml", "--format", "torchscript", "--output", "missing/m.pt"], Duration::from_secs(60));
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.trim().lines().count() == 1 && out.stderr.contains("missing/m.pt"), "{}", out.stderr);
    assert!(!d.join("missing").exists());
    let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains("partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
