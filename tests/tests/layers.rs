//! Sequence and 1-d layers against PyTorch itself: each model trains one epoch in bz, then the test venv's torch
//! builds the equivalent `torch.nn` model, loads bz's `model.safetensors` with `strict=True` (so the parameter names
//! and shapes are torch.nn's) and, in eval mode, computes within 1e-5 what `bz predict` wrote for the same inputs.
//! Where the layer can be exported, the export is checked in the same Python process: onnxruntime for the 1-d
//! convolutions and pools, `torch.jit.load` for the recurrent and attention layers (ONNX refuses those in one line).
//! Last, an LSTM and a transformer learn a text-like task (does token 3 appear?) to 95% validation accuracy.

use bz_e2e::*;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Samples fed to `bz predict` and to PyTorch.
const N: usize = 9;

/// The `torch.nn` counterparts of bz's layers that torch does not have as modules: the same parameter names
/// (`weight`, `weight_ih_l0`, `layers.0.self_attn.in_proj_weight`), so `load_state_dict(strict=True)` checks them.
const PRELUDE: &str = r#"
import torch, torch.nn as nn
from safetensors.torch import load_file

class Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape
    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

class GlobalAvg(nn.Module):
    def forward(self, x):
        return x.flatten(2).mean(-1)

class GlobalMax(nn.Module):
    def forward(self, x):
        return x.flatten(2).amax(-1)

class TimeMax(nn.Module):
    def forward(self, x):
        return x.amax(1)

class Ids(nn.Embedding):
    def forward(self, x):
        return super().forward(x.long())

def last(h_n, bidirectional):
    return torch.cat([h_n[-2], h_n[-1]], 1) if bidirectional else h_n[-1]

class LSTMLast(nn.LSTM):
    def forward(self, x):
        return last(super().forward(x)[1][0], self.bidirectional)

class LSTMAll(nn.LSTM):
    def forward(self, x):
        return super().forward(x)[0]

class GRULast(nn.GRU):
    def forward(self, x):
        return last(super().forward(x)[1], self.bidirectional)

class GRUAll(nn.GRU):
    def forward(self, x):
        return super().forward(x)[0]

class Positional(nn.Module):
    def __init__(self, max_len, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(max_len, dim))
    def forward(self, x):
        return x + self.weight[: x.shape[1]]

def encoder(d, heads, ff, layers, dropout=0.1):
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, activation="relu", batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

def check(model, exported=None):
    model.load_state_dict(load_file("runs/c/checkpoints/best/model.safetensors"), strict=True)
    model.eval()
    x = load_file("x.safetensors")["x"]
    want = load_file("p.safetensors")["logits"]
    with torch.no_grad():
        got = model(x)
    diff = (got - want).abs().max().item()
    assert got.shape == want.shape and diff <= 1e-5, f"PyTorch differs from bz predict by {diff}"
    if exported and exported.endswith(".onnx"):
        import onnx, onnxruntime as ort
        onnx.checker.check_model(onnx.load(exported), full_check=True)
        s = ort.InferenceSession(exported)
        got = torch.from_numpy(s.run(["logits"], {"input": x.numpy()})[0])
        diff = (got - want).abs().max().item()
        assert diff <= 1e-5, f"onnxruntime differs from bz predict by {diff}"
    elif exported:
        with torch.no_grad():
            got = torch.jit.load(exported)(x)
        diff = (got - want).abs().max().item()
        assert diff <= 1e-5, f"the TorchScript export differs from bz predict by {diff}"
    print("ok")
"#;

/// A classifier over `features` synthetic features (3 classes) with `layers`; one epoch, one thread.
fn synthetic(features: usize, layers: &str) -> String {
    format!(
        "[run]\nthreads = 1\n[data]\nsource = \"synthetic\"\nsamples = 120\nnum_features = {features}\n\
         [model]\nlayers = {layers}\n[train]\nepochs = 1\nbatch_size = 16\n"
    )
}

/// Writes `x` (`[N, per...]` f32) and, when given, `y` (i64 labels) into a safetensors file.
fn write_tensors(path: &Path, x: &[f32], shape: &[usize], y: Option<&[i64]>) {
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut views = vec![("x", TensorView::new(Dtype::F32, shape.to_vec(), &xb).unwrap())];
    let yb: Vec<u8> = y.unwrap_or(&[]).iter().flat_map(|v| v.to_le_bytes()).collect();
    if let Some(y) = y {
        views.push(("y", TensorView::new(Dtype::I64, vec![y.len()], &yb).unwrap()));
    }
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `n` values from a fixed LCG, each `f(u)` for u uniform in [0, 1).
fn values(n: usize, seed: u32, f: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            f((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

/// Trains `cfg`, predicts `N` samples of `features` values drawn by `f`, optionally exports with `export` (a
/// `--format`), and runs `model` (a Python expression over PRELUDE's modules) through PRELUDE's `check`.
fn matches_pytorch(dir: &Path, cfg: &str, features: usize, f: impl Fn(f32) -> f32, export: Option<&str>, model: &str) {
    write_config(dir, "c.toml", cfg);
    let out = bz(dir, &["train", "c.toml", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    write_tensors(&dir.join("x.safetensors"), &values(N * features, 7, f), &[N, features], None);
    let out = bz(dir, &["predict", "c.toml", "--input", "x.safetensors", "--output", "p.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let exported = match export {
        Some(format) => {
            let out = bz(dir, &["export", "c.toml", "--format", format]);
            assert_eq!(out.code, 0, "{}", out.all());
            let file = if format == "onnx" { "model.onnx" } else { "model.torchscript.pt" };
            format!("\"runs/c/checkpoints/best/{file}\"")
        }
        None => "None".into(),
    };
    let script = format!("{PRELUDE}\ncheck(nn.Sequential({model}), {exported})\n");
    assert_eq!(py(dir, &script).trim(), "ok");
}

fn gaussian_ish(u: f32) -> f32 {
    4.0 * u - 2.0
}

#[test]
fn conv1d_1d_pools_and_global_average_pooling_match_pytorch_and_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[
  { type = "reshape", shape = [2, 12] }, { type = "conv1d", out = 4, kernel = 3, padding = 1 }, { type = "relu" },
  { type = "maxpool1d", kernel = 2 }, { type = "conv1d", out = 4, kernel = 2, stride = 2, bias = false },
  { type = "avgpool1d", kernel = 2, stride = 1 }, { type = "global_avgpool" }, { type = "linear", out = 3 }
]"#;
    let model = "Reshape(2, 12), nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 2, stride=2, bias=False), \
                 nn.AvgPool1d(2, stride=1), GlobalAvg(), nn.Linear(4, 3)";
    matches_pytorch(dir.path(), &synthetic(24, layers), 24, gaussian_ish, Some("onnx"), model);
}

#[test]
fn global_max_pooling_over_an_image_matches_pytorch_and_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[{ type = "reshape", shape = [1, 4, 6] }, { type = "conv2d", out = 3, kernel = 3, padding = 1 }, { type = "global_maxpool" }, { type = "linear", out = 3 }]"#;
    let model = "Reshape(1, 4, 6), nn.Conv2d(1, 3, 3, padding=1), GlobalMax(), nn.Linear(3, 3)";
    matches_pytorch(dir.path(), &synthetic(24, layers), 24, gaussian_ish, Some("onnx"), model);
}

#[test]
fn stacked_bidirectional_and_last_state_lstms_match_pytorch_and_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[
  { type = "reshape", shape = [6, 4] }, { type = "lstm", hidden = 5, layers = 2, bidirectional = true, output = "all" },
  { type = "lstm", hidden = 3 }, { type = "linear", out = 3 }
]"#;
    let model = "Reshape(6, 4), LSTMAll(4, 5, num_layers=2, bidirectional=True, batch_first=True), LSTMLast(10, 3, batch_first=True), nn.Linear(3, 3)";
    matches_pytorch(dir.path(), &synthetic(24, layers), 24, gaussian_ish, Some("torchscript"), model);
    // ONNX has no lowering for it: one line pointing at TorchScript.
    let out = bz(dir.path(), &["export", "c.toml", "--format", "onnx"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("model.layers[1] (lstm): bz's ONNX export does not lower this layer; use --format torchscript"), "{}", out.stderr);
}

#[test]
fn grus_with_all_outputs_and_a_bidirectional_last_state_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[
  { type = "reshape", shape = [6, 4] }, { type = "gru", hidden = 4, output = "all" },
  { type = "gru", hidden = 5, bidirectional = true }, { type = "linear", out = 3 }
]"#;
    let model = "Reshape(6, 4), GRUAll(4, 4, batch_first=True), GRULast(4, 5, bidirectional=True, batch_first=True), nn.Linear(10, 3)";
    matches_pytorch(dir.path(), &synthetic(24, layers), 24, gaussian_ish, None, model);
}

#[test]
fn positional_embedding_and_a_pre_norm_transformer_encoder_match_pytorch_and_torchscript() {
    let dir = tempfile::tempdir().unwrap();
    let layers = r#"[
  { type = "reshape", shape = [6, 4] }, { type = "positional_embedding", max_len = 8 },
  { type = "transformer_encoder", heads = 2, ff = 16, layers = 2 }, { type = "flatten" }, { type = "linear", out = 3 }
]"#;
    let model = "Reshape(6, 4), Positional(8, 4), encoder(4, 2, 16, 2), nn.Flatten(), nn.Linear(24, 3)";
    matches_pytorch(dir.path(), &synthetic(24, layers), 24, gaussian_ish, Some("torchscript"), model);
}

#[test]
fn embedding_of_token_ids_matches_pytorch_and_a_bad_id_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // Sequences of 5 ids below 10; the label says whether token 3 appears.
    let (n, len) = (120, 5);
    let ids: Vec<f32> = values(n * len, 3, |u| (u * 10.0).floor());
    let labels: Vec<i64> = ids.chunks(len).map(|s| s.contains(&3.0) as i64).collect();
    write_tensors(&dir.path().join("d.safetensors"), &ids, &[n, len], Some(&labels));
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"safetensors\"\npath = \"d.safetensors\"\n\
               [model]\nlayers = [{ type = \"embedding\", num = 10, dim = 4, padding_idx = 0 }, { type = \"flatten\" }, { type = \"linear\", out = 2 }]\n\
               [train]\nepochs = 1\nbatch_size = 16\n";
    let model = "Ids(10, 4, padding_idx=0), nn.Flatten(), nn.Linear(20, 2)";
    matches_pytorch(dir.path(), cfg, len, |u| (u * 10.0).floor(), None, model);

    let mut bad = values(2 * len, 5, |u| (u * 10.0).floor());
    bad[7] = 10.0;
    write_tensors(&dir.path().join("bad.safetensors"), &bad, &[2, len], None);
    let out = bz(dir.path(), &["predict", "c.toml", "--input", "bad.safetensors", "--output", "q.safetensors"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("model.layers[0] (embedding): token id 10 is outside 0..10"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(!dir.path().join("q.safetensors").exists());
}

/// Writes `n` sequences of `len` token ids below 10 into `file`, labelled by whether token 3 appears (about half
/// of them at length 7): a text-like task that needs the whole sequence.
fn token_task(dir: &Path, file: &str, n: usize, len: usize, seed: u32) {
    let ids: Vec<f32> = values(n * len, seed, |u| (u * 10.0).floor());
    let labels: Vec<i64> = ids.chunks(len).map(|s| s.contains(&3.0) as i64).collect();
    write_tensors(&dir.join(file), &ids, &[n, len], Some(&labels));
}

#[test]
fn an_lstm_and_a_transformer_learn_whether_a_token_appears() {
    let dir = tempfile::tempdir().unwrap();
    token_task(dir.path(), "train.safetensors", 800, 7, 11);
    token_task(dir.path(), "val.safetensors", 200, 7, 13);
    for (name, body) in [
        ("lstm", r#"{ type = "lstm", hidden = 16 }"#),
        ("transformer", r#"{ type = "positional_embedding", max_len = 7 }, { type = "transformer_encoder", heads = 2, ff = 32 }, { type = "flatten" }"#),
    ] {
        let cfg = format!(
            "[run]\nthreads = 1\n[data]\nsource = \"safetensors\"\npath = \"train.safetensors\"\nval = \"val.safetensors\"\n\
             [model]\nlayers = [{{ type = \"embedding\", num = 10, dim = 8 }}, {body}, {{ type = \"linear\", out = 2 }}]\n\
             [train]\nepochs = 12\nbatch_size = 32\n[optimizer]\nname = \"adam\"\nlr = 0.01\n"
        );
        write_config(dir.path(), &format!("{name}.toml"), &cfg);
        let out = bz(dir.path(), &["train", &format!("{name}.toml"), "-q"]);
        assert_eq!(out.code, 0, "{}", out.all());
        let best = epoch_lines(&dir.path().join("runs").join(name)).iter().map(|e| e["val/accuracy"].as_f64().unwrap()).fold(0.0, f64::max);
        assert!(best >= 0.95, "the {name} model reached only {best} validation accuracy");
    }
}

#[test]
fn a_sequence_layer_on_the_wrong_shape_is_a_config_error_naming_it_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    for (layers, needle) in [
        (r#"[{ type = "lstm", hidden = 4 }]"#, "model.layers[0] (lstm) needs a [length, features] input but gets [24]: reshape flat features"),
        (
            r#"[{ type = "reshape", shape = [6, 4] }, { type = "transformer_encoder", heads = 3, ff = 8 }]"#,
            "model.layers[1] (transformer_encoder) width d = 4 is not divisible by heads = 3",
        ),
        (r#"[{ type = "reshape", shape = [6, 4] }, { type = "positional_embedding", max_len = 5 }]"#, "raise max_len to at least 6"),
    ] {
        write_config(dir.path(), "c.toml", &synthetic(24, layers));
        let out = bz(dir.path(), &["validate", "c.toml"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(out.stderr.contains(needle) && out.stderr.trim().lines().count() == 1, "{}", out.stderr);
    }
}

/// Right-padded token sequences (0 is padding, lengths 2 to 8, ids 1 to 9): an embedding with `padding_idx = 0`
/// masks the padding out of the transformer's attention and out of `temporal_avgpool`, as PyTorch's
/// `src_key_padding_mask` and a masked mean do; `temporal_maxpool` on an unmasked `[L, F]` is a plain max.
#[test]
fn padding_is_masked_out_of_attention_and_temporal_pooling_as_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (n, len) = (64, 8);
    let lengths = values(n, 11, |u| 2.0 + (u * 7.0).floor());
    let ids: Vec<f32> = values(n * len, 12, |u| 1.0 + (u * 9.0).floor())
        .chunks(len)
        .zip(&lengths)
        .flat_map(|(row, &l)| row.iter().enumerate().map(move |(i, &v)| if (i as f32) < l { v } else { 0.0 }))
        .collect();
    let labels: Vec<i64> = ids.chunks(len).map(|s| s.contains(&3.0) as i64).collect();
    write_tensors(&d.join("d.safetensors"), &ids, &[n, len], Some(&labels));
    write_tensors(&d.join("x.safetensors"), &ids[..N * len], &[N, len], None);
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"safetensors\"\npath = \"d.safetensors\"\n\
               [model]\nlayers = [{ type = \"embedding\", num = 10, dim = 8, padding_idx = 0 }, { type = \"positional_embedding\", max_len = 8 },\n\
               { type = \"transformer_encoder\", heads = 2, ff = 16, dropout = 0.0 }, { type = \"temporal_avgpool\" }, { type = \"linear\", out = 2 }]\n\
               [train]\nepochs = 2\nbatch_size = 16\n";
    write_config(d, "c.toml", cfg);
    let out = bz(d, &["train", "c.toml", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(d, &["predict", "c.toml", "--input", "x.safetensors", "--output", "p.safetensors"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let script = format!(
        "{PRELUDE}
class Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module('0', Ids(10, 8, padding_idx=0))
        self.add_module('1', Positional(8, 8))
        self.add_module('2', encoder(8, 2, 16, 1, dropout=0.0))
        self.add_module('4', nn.Linear(8, 2))
    def forward(self, x):
        pad = x == 0
        h = getattr(self, '2')(getattr(self, '1')(getattr(self, '0')(x)), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        return getattr(self, '4')((h * keep).sum(1) / keep.sum(1))
check(Padded())
"
    );
    assert_eq!(py(d, &script).trim(), "ok");

    // Max over time of an [L, F] sequence without padding: PyTorch's amax over the length.
    let dir = tempfile::tempdir().unwrap();
    let cfg = synthetic(12, r#"[{ type = "reshape", shape = [4, 3] }, { type = "temporal_maxpool" }, { type = "linear", out = 3 }]"#);
    matches_pytorch(dir.path(), &cfg, 12, gaussian_ish, Some("onnx"), "Reshape(4, 3), TimeMax(), nn.Linear(3, 3)");
}
