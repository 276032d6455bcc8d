//! Interoperability with PyTorch itself (the test venv's torch, same wheel as bz's libtorch): checkpoints load
//! into `nn.Sequential`, TorchScript modules train in bz, and a failing batch fails the run.

use bz_e2e::fixtures::*;
use bz_e2e::*;

#[test]
fn pytorch_loads_the_weights_strictly_and_gets_the_same_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Digits { layers: MLP_32, epochs: 15, threads: None, ..Digits::default() }.toml() + "[checkpoint]\nmonitor = \"val/accuracy\"\n";
    write_config(dir.path(), "c.toml", &cfg);
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    let eval = bz(dir.path(), &["eval", "c.toml", "--json", "--split", "train"]);
    assert_eq!(eval.code, 0, "{}", eval.all());
    let eval: serde_json::Value = serde_json::from_str(eval.stdout.trim()).unwrap();
    // Python rebuilds the model and scores it on the whole digits set (scikit-learn's copy), /16 as bz scales.
    let script = r#"
import json, torch, numpy as np
from safetensors.torch import load_file
from sklearn.datasets import load_digits
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
m.load_state_dict(load_file("runs/c/checkpoints/best/model.safetensors"), strict=True)
d = load_digits()
x = torch.tensor(d.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
with torch.no_grad():
    acc = (m(x).argmax(1).numpy() == d.target).mean()
print(json.dumps({"acc": float(acc)}))
"#;
    let got: serde_json::Value = serde_json::from_str(py(dir.path(), script).trim()).unwrap();
    let py_acc = got["acc"].as_f64().unwrap();
    // The whole set is train + val; bz's train-split accuracy must be close to PyTorch's whole-set accuracy and
    // the model must be far above chance, which it cannot be with wrongly loaded weights.
    let bz_acc = eval["train/accuracy"].as_f64().unwrap();
    assert!(py_acc > 0.9, "PyTorch scores the loaded weights at {py_acc}");
    assert!((py_acc - bz_acc).abs() < 0.05, "PyTorch {py_acc} vs bz {bz_acc}");
}

const SCRIPTED: &str = r#"
import torch
class Net(torch.nn.Module):
    def __init__(self, fail_at: int):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        self.calls = 0
        self.fail_at = fail_at
    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("deliberate failure in batch")
        return self.body(x)
torch.manual_seed(0)
torch.jit.script(Net(0)).save("ok.pt")
torch.jit.script(Net(5)).save("bad.pt")
"#;

#[test]
fn torchscript_module_trains_and_its_buffers_are_saved() {
    let dir = tempfile::tempdir().unwrap();
    py(dir.path(), SCRIPTED);
    let cfg = "[model]\ntorchscript = \"ok.pt\"\n[train]\nepochs = 8\n[optimizer]\nlr = 0.01\n";
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("torchscript"), "{}", out.stdout);
    let run = dir.path().join("runs/c");
    let best = epoch_lines(&run).iter().map(|e| e["val/accuracy"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best > 0.9, "TorchScript model reached only {best}");
    // The saved module carries trained batch-norm statistics (buffers are not VarStore variables).
    let script = r#"
import torch
m = torch.jit.load("runs/c/checkpoints/last/model.pt")
rv = m.state_dict()["body.2.running_var"]
print(float((rv - 1).abs().max()))
"#;
    let moved: f64 = py(dir.path(), script).trim().parse().unwrap();
    assert!(moved > 1e-3, "running_var never left its initial value: buffers were not trained or not saved");
    let out = bz(dir.path(), &["eval", "c.toml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn an_error_in_a_batch_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    py(dir.path(), SCRIPTED);
    write_config(dir.path(), "c.toml", "[model]\ntorchscript = \"bad.pt\"\n[train]\nepochs = 3\n");
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "f"]);
    // The module is called once to probe its output shape, so the 5th call is training batch 3.
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("training failed at epoch 1, batch 3"), "{}", out.stderr);
    assert!(out.stderr.contains("deliberate failure in batch"), "{}", out.stderr);
    assert!(!dir.path().join("runs/f/checkpoints/last").exists(), "no checkpoint from a failed epoch");
}
