//! `bz predict`: a CSV model with string labels predicts on new rows (with or without the target column, from a file
//! or stdin), its labels round-trip, its accuracy is `bz eval`'s, and bad input is one line, exit 2, no file.

use bz_e2e::fixtures::{bar_idx_files, SpeciesCsv};
use bz_e2e::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn config() -> String {
    SpeciesCsv { epochs: 10, lr: 0.05, test: false, one_thread: false }.toml()
}

/// Three string classes in two features, with offsets large enough that normalisation matters.
fn rows(n: usize, seed: usize) -> Vec<(f64, f64, &'static str)> {
    (0..n)
        .map(|i| {
            let (name, cx) = [("setosa", -2.0), ("versicolor", 0.0), ("virginica", 2.0)][(i + seed) % 3];
            (100.0 + cx + ((i * 7 + seed) % 11) as f64 * 0.3, 5.0 - cx + ((i * 5) % 7) as f64 * 0.3, name)
        })
        .collect()
}

fn write_csv(path: &Path, rows: &[(f64, f64, &str)], with_target: bool) {
    let mut text = String::from(if with_target { "a,b,species\n" } else { "a,b\n" });
    for (a, b, s) in rows {
        text.push_str(&if with_target { format!("{a},{b},{s}\n") } else { format!("{a},{b}\n") });
    }
    std::fs::write(path, text).unwrap();
}

fn predicted_labels(csv: &str) -> Vec<String> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("label,probability"), "{csv}");
    lines
        .map(|l| {
            let (label, p) = l.split_once(',').unwrap();
            let p: f64 = p.parse().unwrap();
            assert!((0.0..=1.0).contains(&p), "{l}");
            label.to_string()
        })
        .collect()
}

fn trained(dir: &Path) -> Vec<(f64, f64, &'static str)> {
    let train = rows(150, 0);
    write_csv(&dir.join("train.csv"), &train, true);
    write_csv(&dir.join("val.csv"), &rows(30, 1), true);
    write_config(dir, "c.toml", &config());
    let out = bz(dir, &["train", "c.toml", "--run-name", "p", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    train
}

#[test]
fn predicts_string_labels_with_the_accuracy_eval_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = trained(d);

    // With the target column (ignored) into a file, and without it to stdout: the same labels.
    let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "train.csv", "--output", "pred.csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let with_target = predicted_labels(&std::fs::read_to_string(d.join("pred.csv")).unwrap());
    write_csv(&d.join("features.csv"), &train, false);
    let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "features.csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(predicted_labels(&out.stdout), with_target);
    assert_eq!(with_target.len(), train.len());
    assert!(with_target.iter().all(|l| ["setosa", "versicolor", "virginica"].contains(&l.as_str())), "{with_target:?}");

    // Accuracy on the training file equals `bz eval --split train` on the same rows: same weights, same normalisation.
    let hits = with_target.iter().zip(&train).filter(|(p, r)| p.as_str() == r.2).count();
    let out = bz(d, &["eval", "c.toml", "--run-name", "p", "--split", "train", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let metrics: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let eval_acc = metrics["train/accuracy"].as_f64().unwrap();
    assert!((hits as f64 / train.len() as f64 - eval_acc).abs() < 1e-9, "predict {hits}/{} vs eval {eval_acc}", train.len());

    // JSON lines with the top 2 classes, in small batches.
    let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "train.csv", "--output", "pred.jsonl", "--top-k", "2", "--batch-size", "7"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let lines = read_jsonl(&d.join("pred.jsonl"));
    assert_eq!(lines.len(), train.len());
    for (line, label) in lines.iter().zip(&with_target) {
        assert_eq!(line["label"].as_str(), Some(label.as_str()), "{line}");
        assert_eq!(line["top_k"].as_array().unwrap().len(), 2, "{line}");
    }

    // Tensors, read back by the safetensors package: every class's probability, the labels in the metadata.
    let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "train.csv", "--output", "pred.safetensors", "--batch-size", "7"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let script = r#"
import json, torch
from safetensors import safe_open
with safe_open("pred.safetensors", "pt") as f:
    labels = json.loads(f.metadata()["labels"])
    logits, probs = f.get_tensor("logits"), f.get_tensor("probabilities")
assert logits.shape == probs.shape == (150, 3), (logits.shape, probs.shape)
assert (torch.softmax(logits, 1) - probs).abs().max() < 1e-6
assert (probs.sum(1) - 1).abs().max() < 1e-5
print(json.dumps([labels[i] for i in probs.argmax(1).tolist()]))
"#;
    let from_tensors: Vec<String> = serde_json::from_str(py(d, script).trim()).unwrap();
    assert_eq!(from_tensors, with_target);
}

#[test]
fn stdin_bad_rows_and_old_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = trained(d);

    // `-` reads CSV from stdin.
    let mut child = bz_command(d, &["predict", "c.toml", "--run-name", "p", "--input", "-"], &[]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    let text = std::fs::read_to_string(d.join("train.csv")).unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = wait_limited(child, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(predicted_labels(&out.stdout).len(), train.len());

    // A non-numeric value and a short row: one line naming the row, exit 2, no output file.
    for (bad, needle) in [("a,b\n1,2\n3,abc\n", ":3: column \"b\": \"abc\" is not a finite number"), ("a,b\n1,2\n3\n", ":3: has 1 fields")] {
        std::fs::write(d.join("bad.csv"), bad).unwrap();
        let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "bad.csv", "--output", "bad-out.csv", "--batch-size", "1"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(out.stderr.contains(needle) && out.stderr.trim().lines().count() == 1, "{}", out.stderr);
        assert!(!d.join("bad-out.csv").exists());
        let leftovers: Vec<_> = std::fs::read_dir(d).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    // A checkpoint from before inference metadata: one line saying what to do.
    let best = d.join("runs/p/checkpoints/best");
    std::fs::remove_file(best.join("inference.json")).unwrap();
    let out = bz(d, &["predict", "c.toml", "--run-name", "p", "--input", "train.csv"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("inference.json") && out.stderr.contains("retrain") && out.stderr.trim().lines().count() == 1, "{}", out.stderr);
}

#[test]
fn an_image_model_predicts_what_pytorch_computes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = format!("[data]\nnormalize = true\n[model]\nlayers = {}\n[train]\nepochs = 3\n", bz_e2e::fixtures::MLP_16);
    write_config(d, "c.toml", &cfg);
    let out = bz(d, &["train", "c.toml", "--run-name", "g", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The digits as bz scales them: one flattened 8x8 image per headerless CSV row, and as safetensors tensors.
    py(
        d,
        "import numpy as np, torch\nfrom safetensors.torch import save_file\nfrom sklearn.datasets import load_digits\n\
         x = load_digits().data / 16.0\nnp.savetxt('digits.csv', x, delimiter=',', fmt='%.8g')\n\
         t = torch.tensor(x, dtype=torch.float32)\nsave_file({'x': t.reshape(-1, 1, 8, 8)}, 'digits.safetensors')\n\
         save_file({'x': t[:, :63].contiguous()}, 'short.safetensors')\n",
    );
    let out = bz(d, &["predict", "c.toml", "--run-name", "g", "--input", "digits.csv", "--output", "p.jsonl", "--batch-size", "100"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // PyTorch applies the recorded per-channel statistics to the raw pixels and runs the saved weights.
    let script = r#"
import json, torch, numpy as np
from safetensors.torch import load_file
ckpt = "runs/g/checkpoints/best/"
inf = json.load(open(ckpt + "inference.json"))
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
m.load_state_dict(load_file(ckpt + "model.safetensors"), strict=True)
n = inf["normalization"]
x = torch.tensor(np.loadtxt("digits.csv", delimiter=","), dtype=torch.float32).reshape(-1, *inf["input_shape"])
x = (x - torch.tensor(n["mean"]).reshape(1, *n["shape"])) / torch.tensor(n["std"]).reshape(1, *n["shape"])
with torch.no_grad():
    p = torch.softmax(m(x), 1)
got = [json.loads(l) for l in open("p.jsonl")]
labels = [g["label"] for g in got]
probs = torch.tensor([g["probability"] for g in got])
print(json.dumps({"n": len(got), "same": labels == p.argmax(1).tolist(), "diff": float((probs - p.max(1).values).abs().max())}))
"#;
    let r: serde_json::Value = serde_json::from_str(py(d, script).trim()).unwrap();
    assert_eq!(r["n"], 1797, "{r}");
    assert_eq!(r["same"], true, "{r}");
    assert!(r["diff"].as_f64().unwrap() < 1e-5, "{r}");

    // The same images from a safetensors file give the same predictions; a tensor of the wrong shape is exit 2.
    let out = bz(d, &["predict", "c.toml", "--run-name", "g", "--input", "digits.safetensors", "--output", "s.jsonl"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let label = |v: &serde_json::Value| v["label"].clone();
    assert_eq!(read_jsonl(&d.join("s.jsonl")).iter().map(label).collect::<Vec<_>>(), read_jsonl(&d.join("p.jsonl")).iter().map(label).collect::<Vec<_>>());
    let out = bz(d, &["predict", "c.toml", "--run-name", "g", "--input", "short.safetensors"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("short.safetensors: tensor \"x\" has shape [1797, 63]: 63 values per sample, the model takes 64"), "{}", out.stderr);
}

#[test]
fn regression_writes_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut text = String::new();
    let mut targets = Vec::new();
    for i in 0..400 {
        let x = (i as f64) / 100.0 - 2.0;
        let z = ((i * 37) % 11) as f64 / 5.0 - 1.0;
        let y = 3.0 * x - 2.0 * z + 1.0;
        text.push_str(&format!("{x},{y},{z}\n"));
        targets.push(y);
    }
    std::fs::write(d.join("r.csv"), text).unwrap();
    let cfg = "[data]\nsource = \"csv\"\npath = \"r.csv\"\nheader = false\ntarget = 1\ntask = \"regression\"\nnormalize = true\n\
               [model]\nlayers = [{ type = \"linear\", out = 1 }]\n[train]\nepochs = 30\n[optimizer]\nlr = 0.05\n";
    write_config(d, "c.toml", cfg);
    let out = bz(d, &["train", "c.toml", "--run-name", "r", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The rows with their target column (index 1), which predict skips.
    let out = bz(d, &["predict", "c.toml", "--run-name", "r", "--input", "r.csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("value"));
    let values: Vec<f64> = lines.map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), targets.len());
    let mae = values.iter().zip(&targets).map(|(v, t)| (v - t).abs()).sum::<f64>() / targets.len() as f64;
    assert!(mae < 0.1, "mean absolute error {mae}");
    // As tensors: the values under `logits`, and no probabilities.
    let out = bz(d, &["predict", "c.toml", "--run-name", "r", "--input", "r.csv", "--output", "r.safetensors", "--batch-size", "64"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let t = tensors(&d.join("r.safetensors"));
    assert_eq!(t.keys().collect::<Vec<_>>(), ["logits"]);
    let (dtype, shape, bytes) = &t["logits"];
    assert_eq!((dtype.as_str(), shape.as_slice()), ("F32", &[400, 1][..]));
    let from_tensor: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert!(from_tensor.iter().zip(&values).all(|(a, b)| (*a as f64 - b).abs() < 1e-6), "{from_tensor:?}");
}

#[test]
fn idx_images_predict_numeric_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    bar_idx_files(&d.join("data"), "train", 200, 1);
    let truth = bar_idx_files(&d.join("data"), "t10k", 50, 2);
    let cfg = "[data]\nsource = \"idx\"\npath = \"data\"\nval = \"test\"\nnormalize = true\n\
               [model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 4 }]\n[train]\nepochs = 5\n[optimizer]\nlr = 0.01\n";
    write_config(d, "c.toml", cfg);
    let out = bz(d, &["train", "c.toml", "--run-name", "i", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(d, &["predict", "c.toml", "--run-name", "i", "--input", "data/t10k-images-idx3-ubyte.gz", "--batch-size", "16"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let labels = predicted_labels(&out.stdout);
    assert_eq!(labels.len(), truth.len());
    let hits = labels.iter().zip(&truth).filter(|(p, t)| p.parse::<u8>().unwrap() == **t).count();
    assert!(hits >= 45, "{hits} of {} right: {labels:?}", truth.len());
}
