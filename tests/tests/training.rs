//! Training end to end: accuracy, run directory, determinism, exact resume (also after Ctrl-C), faults.

use bz_e2e::fixtures::RESUMABLE_MLP as MLP;
use bz_e2e::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn weights(run: &Path, link: &str) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    tensors(&run.join("checkpoints").join(link).join("model.safetensors"))
}

#[test]
fn example_reaches_95_percent_and_fills_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/digits.toml");
    let out = bz(dir.path(), &["train", example.to_str().unwrap(), "--run-name", "d"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/d");
    let epochs = epoch_lines(&run);
    assert_eq!(epochs.len(), 20);
    let best = epochs.iter().map(|e| e["val/accuracy"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!(best >= 0.95, "best val accuracy {best}");
    // The summary lines on stdout (not a terminal: plain lines) and the model table.
    assert!(out.stdout.contains("epoch 20/20"), "{}", out.stdout);
    assert!(out.stdout.contains("total parameters: 9,610"), "{}", out.stdout);
    // Resolved config, both checkpoint links, safetensors weights, the confusion matrix.
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(resolved.contains("epochs = 20") && resolved.contains("val_split = 0.2"), "{resolved}");
    for link in ["last", "best"] {
        let target = std::fs::read_link(run.join("checkpoints").join(link)).unwrap();
        assert!(target.to_string_lossy().starts_with("step-"), "{target:?}");
        assert!(weights(&run, link).contains_key("1.weight"));
    }
    let cm = epochs[19]["val/confusion_matrix"].as_array().unwrap();
    let total: u64 = cm.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 359);
    // `best` is the epoch with the best val/accuracy.
    let best_state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/best/trainer.json")).unwrap()).unwrap();
    assert_eq!(best_state["best"].as_f64().unwrap(), best);
}

#[test]
fn same_seed_same_threads_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", MLP);
    for name in ["a", "b"] {
        let out = bz(dir.path(), &["train", "c.toml", "--run-name", name, "-q"]);
        assert_eq!(out.code, 0, "{}", out.all());
    }
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "c", "-q", "--set", "run.seed=4"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (a, b, c) = (dir.path().join("runs/a"), dir.path().join("runs/b"), dir.path().join("runs/c"));
    assert_eq!(weights(&a, "last"), weights(&b, "last"));
    let strip = |run: &Path| epoch_lines(run).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b));
    assert_ne!(weights(&a, "last"), weights(&c, "last"), "another seed must give another run");
}

#[test]
fn two_plus_two_epochs_equals_four() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", MLP);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "straight", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "split", "--epochs", "2", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "split", "--epochs", "4", "--resume"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("resumed from"), "{}", out.stdout);
    let (s, r) = (dir.path().join("runs/straight"), dir.path().join("runs/split"));
    assert_eq!(weights(&s, "last"), weights(&r, "last"), "resumed weights differ from the straight run");
    assert_eq!(tensors(&s.join("checkpoints/last/optimizer.safetensors")), tensors(&r.join("checkpoints/last/optimizer.safetensors")));
    let strip = |run: &Path| read_jsonl(&run.join("metrics.jsonl")).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&s), strip(&r), "metrics.jsonl of the resumed run must match line for line");
    // Nothing left to do: resuming a finished run says so.
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "split", "--resume"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already trained 4 epochs; raise --epochs"), "{}", out.stderr);
}

#[test]
fn ctrl_c_saves_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Many small epochs on synthetic data, so the interrupt lands somewhere inside the run.
    let cfg = MLP
        .replace("source = \"digits\"", "source = \"synthetic\"\nsamples = 3000\nnum_features = 64\nclasses = 10")
        .replace("epochs = 4", "epochs = 30")
        .replace("{ type = \"flatten\" }, ", "");
    write_config(dir.path(), "c.toml", &cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "straight", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());

    let child = std::process::Command::new(bz_path())
        .args(["train", "c.toml", "--run-name", "cut"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.path().join("runs/cut/metrics.jsonl");
    let start = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|t| t.contains("\"event\":\"epoch\"")) {
        assert!(start.elapsed() < Duration::from_secs(120), "no epoch finished in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = wait_limited(child, Duration::from_secs(120));
    assert_eq!(out.code, 130, "{}", out.all());
    assert!(out.stdout.contains("interrupted at epoch"), "{}", out.stdout);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("runs/cut/checkpoints/last/trainer.json")).unwrap()).unwrap();
    assert!(state["epoch"].as_u64().unwrap() < 30, "{state}");

    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "cut", "--resume", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (s, c) = (dir.path().join("runs/straight"), dir.path().join("runs/cut"));
    assert_eq!(weights(&s, "last"), weights(&c, "last"), "interrupted + resumed differs from straight (stopped at {state})");
    let strip = |run: &Path| epoch_lines(run).iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(&s), strip(&c));
}

#[test]
fn nan_loss_stops_with_exit_3_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DIVERGING;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "n"]);
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(out.stderr.contains("the training loss became") && out.stderr.contains("at epoch 3"), "{}", out.stderr);
    assert!(out.stderr.contains("The last good checkpoint is kept at"), "{}", out.stderr);
    let run = dir.path().join("runs/n");
    assert_eq!(epoch_lines(&run).len(), 2);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/last/trainer.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2);
    for (_, (_, _, bytes)) in weights(&run, "last") {
        let finite = bytes.chunks(4).all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite());
        assert!(finite, "the kept checkpoint must hold finite weights");
    }
}

#[test]
fn eval_reproduces_the_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", MLP);
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    let out = bz(dir.path(), &["eval", "c.toml", "--json"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let eval: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let run = dir.path().join("runs/c");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/best/trainer.json")).unwrap()).unwrap();
    let line = &epoch_lines(&run)[state["best_epoch"].as_u64().unwrap() as usize - 1];
    for key in ["val/loss", "val/accuracy", "val/f1_macro", "val/precision_weighted", "val/top5_accuracy"] {
        let (a, b) = (eval[key].as_f64().unwrap(), line[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{key}: eval {a} vs training {b}");
    }
    let out = bz(dir.path(), &["eval", "c.toml", "--checkpoint", "nowhere"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nowhere is not a checkpoint"), "{}", out.stderr);
}

#[test]
fn regression_with_schedules_clipping_and_accumulation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"
[data]
source = "synthetic"
task = "regression"
samples = 2000
num_features = 10
noise = 0.1
normalize = true
[model]
layers = [{ type = "linear", out = 32 }, { type = "gelu" }, { type = "layernorm" },
          { type = "residual", layers = [{ type = "linear", out = 32 }, { type = "tanh" }] }, { type = "linear", out = 1 }]
[train]
epochs = 8
batch_size = 50
grad_accumulation = 2
clip_grad_norm = 5.0
loss = "smooth_l1"
[optimizer]
name = "rmsprop"
lr = 0.003
momentum = 0.5
[scheduler]
name = "one_cycle"
[checkpoint]
monitor = "val/r2"
"#;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "r", "-v"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let epochs = epoch_lines(&dir.path().join("runs/r"));
    let last = epochs.last().unwrap();
    assert!(last["val/r2"].as_f64().unwrap() > 0.9, "{last}");
    assert!(last["val/mse"].as_f64().unwrap() < last["val/mae"].as_f64().unwrap().max(1.0) * 2.0);
    // one_cycle: the rate rises then falls to ~max_lr/25/1e4.
    let lrs: Vec<f64> = epochs.iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    let peak = lrs.iter().cloned().fold(0.0, f64::max);
    assert!(lrs[0] < peak && *lrs.last().unwrap() < 1e-5, "{lrs:?}");
    assert!(out.stdout.contains("val/r2"), "{}", out.stdout);
}

#[test]
fn resume_finds_the_latest_run_and_refuses_a_changed_model() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &MLP.replace("epochs = 4", "epochs = 1"));
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    // Without a name, --resume continues the most recent run of this config (runs/c-2).
    let out = bz(dir.path(), &["train", "c.toml", "--resume", "--epochs", "2"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(epoch_lines(&dir.path().join("runs/c-2")).len(), 2);
    assert_eq!(epoch_lines(&dir.path().join("runs/c")).len(), 1);
    let out = bz(dir.path(), &["train", "c.toml", "--resume", "--run-name", "c", "--epochs", "2", "--set", "model.layers[1].out=65"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("`model` differs from the run's config.toml"), "{}", out.stderr);
    let out = bz(dir.path(), &["train", "c.toml", "--resume", "--run-name", "nothing"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("nothing to resume"), "{}", out.stderr);
}

fn spawn_bz(cwd: &Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(bz_path())
        .args(args)
        .current_dir(cwd)
        .env("OMP_NUM_THREADS", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn runs_never_share_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", MLP);
    // Two runs asking for one name at the same instant: one gets it, the other fails at once with one line.
    let (a, b) = (spawn_bz(dir.path(), &["train", "c.toml", "--run-name", "same"]), spawn_bz(dir.path(), &["train", "c.toml", "--run-name", "same"]));
    let (a, b) = (wait_limited(a, Duration::from_secs(300)), wait_limited(b, Duration::from_secs(300)));
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(codes[0], 0, "{}\n{}", a.all(), b.all());
    assert_ne!(codes[1], 0, "both runs used runs/same:\n{}\n{}", a.all(), b.all());
    let loser = if a.code == 0 { &b } else { &a };
    assert!(loser.stderr.contains("already exists"), "{}", loser.stderr);
    assert_eq!(epoch_lines(&dir.path().join("runs/same")).len(), 4, "one run's metrics only");
    // Two unnamed runs at once take two names.
    let (a, b) = (spawn_bz(dir.path(), &["train", "c.toml"]), spawn_bz(dir.path(), &["train", "c.toml"]));
    let (a, b) = (wait_limited(a, Duration::from_secs(300)), wait_limited(b, Duration::from_secs(300)));
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.all(), b.all());
    for run in ["runs/c", "runs/c-2"] {
        assert_eq!(epoch_lines(&dir.path().join(run)).len(), 4, "{run}");
    }
    // A run still training cannot be resumed by a second bz, which would interleave its metrics and prune its
    // checkpoints.
    write_config(dir.path(), "long.toml", &MLP.replace("epochs = 4", "epochs = 100000"));
    let mut long = spawn_bz(dir.path(), &["train", "long.toml", "--run-name", "busy"]);
    wait_for_file(&dir.path().join("runs/busy/checkpoints/last"), Duration::from_secs(120), "the long run never checkpointed");
    let out = bz(dir.path(), &["train", "long.toml", "--run-name", "busy", "--resume"]);
    let _ = long.kill();
    let _ = long.wait();
    assert_ne!(out.code, 0, "{}", out.all());
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(errors.len() == 1 && errors[0].contains("is being trained by another bz"), "{}", out.stderr);
    // Once it is gone, the same resume works.
    let out = bz(
        dir.path(),
        &["train", "long.toml", "--run-name", "busy", "--resume", "--epochs", &(epoch_lines(&dir.path().join("runs/busy")).len() + 1).to_string()],
    );
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn resuming_a_cosine_run_with_other_epochs_says_the_curve_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cosine = MLP.replace("name = \"step\"\nstep_size = 1\ngamma = 0.7\n", "name = \"cosine\"\n");
    write_config(dir.path(), "c.toml", &cosine);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "r", "--epochs", "2", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "r", "--epochs", "3", "--resume", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let warnings: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("warning: resuming with 3 epochs instead of 2")).collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(warnings[0].contains("cosine"), "{}", warnings[0]);
    // A schedule that does not depend on the run's length says nothing.
    write_config(dir.path(), "s.toml", MLP);
    bz(dir.path(), &["train", "s.toml", "--run-name", "s", "--epochs", "2", "-q"]);
    let out = bz(dir.path(), &["train", "s.toml", "--run-name", "s", "--epochs", "3", "--resume", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.stderr.contains("resuming with"), "{}", out.stderr);
}
