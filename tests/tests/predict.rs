//! `bz predict`: a CSV model with string labels predicts on new rows (with or without the target column, from a file
//! or stdin), its labels round-trip, its accuracy is `bz eval`'s, and bad input is one line, exit 2, no file.

use bz_e2e::*;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const CONFIG: &str = r#"
[data]
source = "csv"
path = "train.csv"
val = "val.csv"
target = "species"
normalize = true
[model]
layers = [{ type = "linear", out = 8 }, { type = "relu" }, { type = "linear", out = 3 }]
[train]
epochs = 10
batch_size = 16
[optimizer]
lr = 0.05
"#;

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
    write_config(dir, "c.toml", CONFIG);
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
