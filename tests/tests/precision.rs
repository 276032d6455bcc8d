//! `train.precision` end to end on CPU: bf16 autocast trains as well as f32, repeats and resumes bit for bit, and
//! fp16's loss scaler (skipped steps, scale) is part of the checkpoint, so a resumed fp16 run is the straight one.

use bz_e2e::*;
use serde_json::Value;
use std::path::Path;

/// A small CNN on the digits (8x8), bf16 autocast.
const CNN: &str = r#"
[run]
seed = 5
threads = 1
[data]
source = "digits"
normalize = true
[model]
layers = [{ type = "conv2d", out = 8, kernel = 3, padding = 1 }, { type = "relu" }, { type = "maxpool2d", kernel = 2 },
          { type = "flatten" }, { type = "linear", out = 10 }]
[train]
epochs = 10
batch_size = 32
precision = "bf16"
[optimizer]
name = "adam"
lr = 0.003
[checkpoint]
monitor = "val/accuracy"
"#;

/// The digits MLP the training resume tests use, in bf16.
fn mlp() -> String {
    bz_e2e::fixtures::RESUMABLE_MLP.replace("log_every_n_steps = 10\n", "log_every_n_steps = 10\nprecision = \"bf16\"\n")
}

fn weights(run: &Path) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    tensors(&run.join("checkpoints/last/model.safetensors"))
}

fn trainer_json(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("checkpoints/last/trainer.json")).unwrap()).unwrap()
}

fn best_accuracy(run: &Path) -> f64 {
    epoch_lines(run).iter().map(|e| e["val/accuracy"].as_f64().unwrap()).fold(0.0, f64::max)
}

fn train(dir: &Path, args: &[&str]) {
    let out = bz(dir, &[&["train", "c.toml", "-q"], args].concat());
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn bf16_trains_the_digits_cnn_as_well_as_f32_and_repeats_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", CNN);
    train(dir.path(), &["--run-name", "a"]);
    train(dir.path(), &["--run-name", "b"]);
    train(dir.path(), &["--run-name", "f32", "--set", "train.precision=\"32\""]);
    let (a, b, f32) = (dir.path().join("runs/a"), dir.path().join("runs/b"), dir.path().join("runs/f32"));
    let (bf16_acc, f32_acc) = (best_accuracy(&a), best_accuracy(&f32));
    assert!(bf16_acc >= 0.95, "bf16 best val accuracy {bf16_acc}");
    assert!(bf16_acc >= f32_acc - 0.01, "bf16 {bf16_acc} vs f32 {f32_acc}");
    assert_eq!(weights(&a), weights(&b), "two bf16 runs must be bit-identical");
    let strip = |run: &Path| epoch_lines(run).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b));
    // Autocast really ran (other numbers than f32), and the weights it trained stayed f32.
    assert_ne!(weights(&a), weights(&f32));
    assert!(weights(&a).values().all(|(dtype, _, _)| dtype == "F32"), "{:?}", weights(&a).keys());
    assert!(std::fs::read_to_string(a.join("config.toml")).unwrap().contains("precision = \"bf16\""));
}

#[test]
fn bf16_two_plus_two_epochs_equals_four() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &mlp());
    train(dir.path(), &["--run-name", "straight"]);
    train(dir.path(), &["--run-name", "split", "--epochs", "2"]);
    train(dir.path(), &["--run-name", "split", "--epochs", "4", "--resume"]);
    let (s, r) = (dir.path().join("runs/straight"), dir.path().join("runs/split"));
    assert_eq!(weights(&s), weights(&r), "resumed weights differ from the straight run");
    assert_eq!(tensors(&s.join("checkpoints/last/optimizer.safetensors")), tensors(&r.join("checkpoints/last/optimizer.safetensors")));
    let strip = |run: &Path| read_jsonl(&run.join("metrics.jsonl")).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&s), strip(&r), "metrics.jsonl of the resumed run must match line for line");
    assert!(trainer_json(&s).get("scaler").is_none(), "bf16 needs no loss scaler");
    assert!(read_jsonl(&s.join("metrics.jsonl")).iter().all(|l| l.get("loss_scale").is_none()));
}

/// Batches of 4 over 6 epochs: 2,160 steps, so the scale both backs off (the first steps overflow at 65536) and
/// grows again after 2,000 good steps, in the resumed half; resuming without the scaler's state would differ.
/// Without batch norm, whose gradients on 4 samples overflow fp16 now and then and keep resetting the growth.
#[test]
fn fp16_mixed_resume_is_exact_with_the_scaler_state() {
    let dir = tempfile::tempdir().unwrap();
    let mlp = mlp()
        .replace("precision = \"bf16\"", "precision = \"16-mixed\"")
        .replace("batch_size = 32", "batch_size = 4")
        .replace("epochs = 4", "epochs = 6")
        .replace("log_every_n_steps = 10", "log_every_n_steps = 100")
        .replace("{ type = \"batchnorm\" }, ", "");
    write_config(dir.path(), "c.toml", &mlp);
    train(dir.path(), &["--run-name", "straight"]);
    train(dir.path(), &["--run-name", "split", "--epochs", "3"]);
    let half = trainer_json(&dir.path().join("runs/split"));
    train(dir.path(), &["--run-name", "split", "--epochs", "6", "--resume"]);
    let (s, r) = (dir.path().join("runs/straight"), dir.path().join("runs/split"));
    let (end, split_end) = (trainer_json(&s), trainer_json(&r));
    // Overflowing steps were skipped (not counted as optimizer steps), then the scale grew once, after the resume.
    let skipped = end["global_step"].as_i64().unwrap() - end["optimizer_steps"].as_i64().unwrap();
    assert!(skipped >= 1, "{end}");
    assert!(half["scaler"]["growth_tracker"].as_i64().unwrap() > 1000, "{half}");
    let steps: Vec<Value> = read_jsonl(&s.join("metrics.jsonl")).into_iter().filter(|l| l["event"] == "step").collect();
    let (first, last) = (steps[0]["loss_scale"].as_f64().unwrap(), steps.last().unwrap()["loss_scale"].as_f64().unwrap());
    assert!(first < 65536.0 && last == 2.0 * first, "loss_scale {first} at step 100, {last} at the end");
    assert_eq!(half["scaler"]["scale"], first);
    assert_eq!(end["scaler"], split_end["scaler"]);
    assert_eq!(end["optimizer_steps"], split_end["optimizer_steps"]);
    assert_eq!(weights(&s), weights(&r), "resumed weights differ from the straight run");
    let strip = |run: &Path| read_jsonl(&run.join("metrics.jsonl")).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&s), strip(&r));
    assert!(best_accuracy(&s) >= 0.95, "fp16 best val accuracy {}", best_accuracy(&s));
}

#[test]
fn a_bad_precision_is_a_one_line_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &mlp());
    for (value, says) in [
        ("\"fp16\"", "unknown variant `fp16`, expected one of `32`, `bf16`, `16-mixed`"),
        ("32", "write the precision as a string: \"32\", \"bf16\" or \"16-mixed\", not 32"),
    ] {
        write_config(dir.path(), "c.toml", &mlp().replace("precision = \"bf16\"", &format!("precision = {value}")));
        let out = bz(dir.path(), &["train", "c.toml"]);
        assert_eq!(out.code, 2, "{}", out.all());
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("c.toml:15:13: `train.precision`: ") && out.stderr.contains(says), "{}", out.stderr);
    }
}
