//! `bz export --format onnx`: the graph bz writes passes onnx's full checker, and onnxruntime computes on raw
//! samples what `bz predict` computes (within 1e-5, batch of 7 and of 1) for an MLP, a CNN with batch norm, a
//! residual block (layer norm, GELU, dropout, average pooling, a softmax layer), a regression model and a binary
//! classifier with string labels: every layer type and every head. A TorchScript model is refused in one line.

use bz_e2e::fixtures::{Digits, MLP_32};
use bz_e2e::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Samples fed to both bz predict and onnxruntime.
const N: usize = 7;

/// Trains `cfg` as run `r`, predicts `N` raw samples of `shape` (values `offset + scale * u`, u in [0, 1)),
/// exports to ONNX (to `output`, or the checkpoint's `model.onnx`) and returns the checker's report.
fn train_export_check(dir: &Path, cfg: &str, sample: Sample, output: Option<&str>) -> Value {
    write_config(dir, "c.toml", cfg);
    let out = bz(dir, &["train", "c.toml", "--run-name", "r", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    write_samples(&dir.join("x.safetensors"), &sample);
    let out = bz(dir, &["predict", "c.toml", "--run-name", "r", "--input", "x.safetensors", "--output", "p.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut args = vec!["export", "c.toml", "--run-name", "r", "--format", "onnx"];
    if let Some(o) = output {
        args.extend(["--output", o]);
    }
    let out = bz(dir, &args);
    assert_eq!(out.code, 0, "{}", out.all());
    let model = dir.join(output.unwrap_or("runs/r/checkpoints/best/model.onnx"));
    assert!(out.stdout.contains("wrote") && model.exists(), "{}", out.all());
    let model = model.to_string_lossy().into_owned();
    let report = py_script(dir, "onnx_check.py", &[&model, "x.safetensors", "p.safetensors"], Duration::from_secs(120));
    let report: Value = serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("{e}: {report}"));
    for (output, diff) in report["max_diff"].as_object().unwrap() {
        assert!(diff.as_f64().unwrap() <= 1e-5, "onnxruntime's {output} differs from bz predict's by {diff}: {report}");
    }
    assert_eq!(report["max_diff"].as_object().unwrap().len(), 2 * report["outputs"].as_object().unwrap().len(), "{report}");
    assert_eq!((&report["producer"], &report["opset"]), (&json!("bz"), &json!(17)), "{report}");
    report
}

/// Per-sample shape and value range of the raw samples: near the training data's, so that the outputs stay of
/// moderate size and the absolute 1e-5 means what it says.
struct Sample<'a> {
    shape: &'a [usize],
    offset: f32,
    scale: f32,
}

/// Digits pixels as bz reads them: `[1, 8, 8]` in [0, 1].
const DIGITS: Sample = Sample { shape: &[1, 8, 8], offset: 0.0, scale: 1.0 };

fn write_samples(path: &Path, s: &Sample) {
    let per: usize = s.shape.iter().product();
    let mut state = 12345u32;
    let bytes: Vec<u8> = (0..N * per)
        .flat_map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (s.offset + s.scale * (state >> 8) as f32 / (1u32 << 24) as f32).to_le_bytes()
        })
        .collect();
    let mut dims = vec![N];
    dims.extend(s.shape);
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims, &bytes).unwrap();
    safetensors::serialize_to_file([("x", view)], None, path).unwrap();
}

fn ops(report: &Value) -> Vec<&str> {
    report["ops"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect()
}

fn digits(layers: &str) -> String {
    Digits { layers, epochs: 1, batch_size: Some(64), ..Digits::default() }.toml().replace("source = \"digits\"\n", "source = \"digits\"\nnormalize = true\n")
}

#[test]
fn digits_mlp_matches_bz_with_labels_and_a_free_batch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let report = train_export_check(dir.path(), &digits(MLP_32), DIGITS, Some("out/mlp.onnx"));
    assert_eq!(report["inputs"], json!({ "input": ["batch", 1, 8, 8] }));
    assert_eq!(report["outputs"], json!({ "logits": ["batch", 10], "probabilities": ["batch", 10] }));
    // The normalisation is in the graph, so raw pixels go in.
    assert_eq!(ops(&report), ["Div", "Flatten", "Gemm", "Relu", "Softmax", "Sub"]);
    let meta = &report["metadata"];
    let labels: Value = serde_json::from_str(meta["labels"].as_str().unwrap()).unwrap();
    assert_eq!(labels, json!(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]));
    assert_eq!((&meta["task"], &meta["head"], &meta["input_shape"]), (&json!("classification"), &json!("softmax"), &json!("[1,8,8]")));
    assert!(meta["bz_version"].as_str().is_some_and(|v| !v.is_empty()), "{meta}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["mlp.onnx"], "only the finished file is left");
    // A directory that does not exist: one line naming the file.
    let out = bz(dir.path(), &["export", "c.toml", "--run-name", "r", "--format", "onnx", "--output", "missing/m.onnx"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.trim().lines().count() == 1 && out.stderr.contains("cannot write missing/m.onnx"), "{}", out.stderr);
}

#[test]
fn cnn_with_batchnorm_and_a_sigmoid_head_matches_bz() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[{ type = "reshape", shape = [1, 8, 8] }, { type = "conv2d", out = 4, kernel = 3, padding = 1 }, { type = "batchnorm" },
        { type = "relu" }, { type = "maxpool2d", kernel = 2 }, { type = "flatten" }, { type = "linear", out = 10 }]"#;
    let cfg = digits(layers).replace("[train]\n", "[train]\nloss = \"bce_with_logits\"\n");
    let report = train_export_check(dir.path(), &cfg, DIGITS, None);
    assert_eq!(report["metadata"]["head"], "sigmoid");
    assert_eq!(ops(&report), ["BatchNormalization", "Conv", "Div", "Flatten", "Gemm", "MaxPool", "Relu", "Reshape", "Sigmoid", "Sub"]);
}

#[test]
fn residual_block_with_layernorm_gelu_dropout_avgpool_and_softmax_matches_bz() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[{ type = "avgpool2d", kernel = 2 }, { type = "flatten" }, { type = "linear", out = 16 }, { type = "batchnorm" },
        { type = "residual", layers = [{ type = "layernorm" }, { type = "linear", out = 16, bias = false }, { type = "gelu" }, { type = "dropout", p = 0.2 }] },
        { type = "tanh" }, { type = "sigmoid" }, { type = "linear", out = 10 }, { type = "softmax" }]"#;
    let report = train_export_check(dir.path(), &digits(layers), DIGITS, None);
    let want = ["Add", "AveragePool", "BatchNormalization", "Div", "Erf", "Flatten", "Gemm", "LayerNormalization", "Mul", "Sigmoid", "Softmax", "Sub", "Tanh"];
    assert_eq!(ops(&report), want);
}

#[test]
fn a_regression_model_has_values_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"synthetic\"\ntask = \"regression\"\nsamples = 200\nnum_features = 5\nnormalize = true\n\
               [model]\nlayers = [{ type = \"linear\", out = 8 }, { type = \"relu\" }, { type = \"linear\", out = 1 }]\n[train]\nepochs = 2\n";
    let report = train_export_check(dir.path(), cfg, Sample { shape: &[5], offset: -2.0, scale: 4.0 }, None);
    assert_eq!(report["outputs"], json!({ "logits": ["batch", 1] }));
    let meta = &report["metadata"];
    assert_eq!((&meta["task"], &meta["head"]), (&json!("regression"), &json!("values")));
    assert!(meta.get("labels").is_none(), "{meta}");
}

#[test]
fn a_binary_logit_with_string_labels_gives_both_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,answer\n");
    for i in 0..120 {
        let (label, c) = if i % 2 == 0 { ("no", -1.0) } else { ("yes", 1.0) };
        csv += &format!("{},{},{label}\n", 50.0 + c + (i % 7) as f64 * 0.2, 50.0 - c + (i % 5) as f64 * 0.3);
    }
    std::fs::write(dir.path().join("train.csv"), csv).unwrap();
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"csv\"\npath = \"train.csv\"\ntarget = \"answer\"\nnormalize = true\n\
               [model]\nlayers = [{ type = \"linear\", out = 1 }]\n[train]\nepochs = 2\nloss = \"bce_with_logits\"\n";
    let report = train_export_check(dir.path(), cfg, Sample { shape: &[2], offset: 48.0, scale: 5.0 }, None);
    assert_eq!(report["outputs"], json!({ "logits": ["batch", 1], "probabilities": ["batch", 2] }));
    let meta = &report["metadata"];
    assert_eq!(meta["head"], "binary_logit");
    assert_eq!(serde_json::from_str::<Value>(meta["labels"].as_str().unwrap()).unwrap(), json!(["no", "yes"]));
}

#[test]
fn a_torchscript_model_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    py(dir.path(), "import torch\ntorch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))).save('m.pt')\n");
    write_config(dir.path(), "c.toml", "[run]\nthreads = 1\n[model]\ntorchscript = \"m.pt\"\n[train]\nepochs = 1\n");
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "t", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(dir.path(), &["export", "c.toml", "--run-name", "t", "--format", "onnx"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("TorchScript model cannot be exported to ONNX") && out.stderr.contains("--format torchscript"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(!dir.path().join("runs/t/checkpoints/best/model.onnx").exists());
}
