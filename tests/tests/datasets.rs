//! Every dataset source trains end to end through the CLI: IDX (gzipped, with a separate test set), CSV
//! (string labels, separate validation file, regression), safetensors and synthetic.

use bz_e2e::fixtures::{bar_idx_files, SpeciesCsv};
use bz_e2e::*;
use std::path::Path;

fn best(run: &Path, key: &str) -> f64 {
    epoch_lines(run).iter().map(|e| e[key].as_f64().unwrap()).fold(f64::MIN, f64::max)
}

#[test]
fn idx_gz_with_test_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    bar_idx_files(&dir.path().join("data"), "train", 400, 1);
    bar_idx_files(&dir.path().join("data"), "t10k", 100, 2);
    let cfg = r#"
[data]
source = "idx"
path = "data"
val = "test"
[model]
layers = [{ type = "conv2d", out = 4, kernel = 3, padding = 1 }, { type = "relu" }, { type = "maxpool2d", kernel = 2 },
          { type = "flatten" }, { type = "linear", out = 4 }]
[train]
epochs = 5
[optimizer]
lr = 0.01
"#;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "i"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("400 train / 100 val samples"), "{}", out.stdout);
    assert!(best(&dir.path().join("runs/i"), "val/accuracy") > 0.95);

    // The t10k files as the test split instead: validation is held out of the training files.
    write_config(dir.path(), "t.toml", &cfg.replace("val = \"test\"", "test = \"test\""));
    let out = bz(dir.path(), &["train", "t.toml", "--run-name", "t"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("320 train / 80 val samples"), "{}", out.stdout);
    let test = test_line(&dir.path().join("runs/t"));
    assert!(test["test/accuracy"].as_f64().unwrap() > 0.95, "{test}");
}

#[test]
fn csv_with_string_labels_and_a_validation_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut train = String::from("a,b,species\n");
    let mut val = String::from("a,b,species\n");
    for i in 0..300 {
        let (name, cx) = [("setosa", -2.0), ("versicolor", 0.0), ("virginica", 2.0)][i % 3];
        let line = format!("{},{},{name}\n", cx + (i % 7) as f64 * 0.1, -cx + (i % 5) as f64 * 0.1);
        if i < 240 {
            train.push_str(&line)
        } else {
            val.push_str(&line)
        }
    }
    std::fs::write(dir.path().join("train.csv"), train).unwrap();
    std::fs::write(dir.path().join("val.csv"), val).unwrap();
    let cfg = SpeciesCsv { epochs: 30, lr: 0.01, test: false, one_thread: false }.toml();
    write_config(dir.path(), "c.toml", &cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "c"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(best(&dir.path().join("runs/c"), "val/accuracy") > 0.95);
    // A label the training file never had is an error naming the file.
    std::fs::write(dir.path().join("val.csv"), "a,b,species\n1,2,rose\n").unwrap();
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "c2"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("val.csv") && out.stderr.contains("rose"), "{}", out.stderr);
}

#[test]
fn csv_regression_by_column_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..400 {
        let x = (i as f64) / 100.0 - 2.0;
        let z = ((i * 37) % 11) as f64 / 5.0 - 1.0;
        text.push_str(&format!("{x},{},{z}\n", 3.0 * x - 2.0 * z + 1.0));
    }
    std::fs::write(dir.path().join("r.csv"), text).unwrap();
    let cfg = r#"
[data]
source = "csv"
path = "r.csv"
header = false
target = 1
task = "regression"
[model]
layers = [{ type = "linear", out = 1 }]
[train]
epochs = 30
loss = "mse"
[optimizer]
lr = 0.05
[checkpoint]
monitor = "val/mse"
"#;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "r"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(best(&dir.path().join("runs/r"), "val/r2") > 0.99);
}

#[test]
fn safetensors_and_synthetic() {
    let dir = tempfile::tempdir().unwrap();
    // Binary classification from a safetensors file, written with the safetensors crate.
    let n = 200usize;
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = (i % 2) as i64;
        let v = [if c == 1 { 1.0f32 } else { -1.0 } + (i % 9) as f32 * 0.05, (i % 5) as f32 * 0.1];
        x.extend(v.iter().flat_map(|f| f.to_le_bytes()));
        y.extend(c.to_le_bytes());
    }
    let xv = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, 2], &x).unwrap();
    let yv = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![n], &y).unwrap();
    safetensors::serialize_to_file([("x", xv), ("y", yv)], None, &dir.path().join("d.safetensors")).unwrap();
    let cfg = r#"
[data]
source = "safetensors"
path = "d.safetensors"
[model]
layers = [{ type = "linear", out = 1 }]
[train]
epochs = 10
loss = "bce_with_logits"
[optimizer]
lr = 0.05
"#;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "s"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(best(&dir.path().join("runs/s"), "val/accuracy") > 0.95);

    let cfg = r#"
[data]
source = "synthetic"
samples = 1500
num_features = 12
classes = 4
[model]
layers = [{ type = "linear", out = 32 }, { type = "relu" }, { type = "linear", out = 4 }]
[train]
epochs = 5
label_smoothing = 0.1
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
nesterov = true
[metrics]
top_k = 2
"#;
    write_config(dir.path(), "c.toml", cfg);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "y"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/y");
    assert!(best(&run, "val/accuracy") > 0.85);
    assert!(best(&run, "val/top2_accuracy") >= best(&run, "val/accuracy"));
}

/// Every data setting the config must fix exits 2 with the file (and line:col where the file holds the key),
/// whether found while parsing or only once the data are loaded.
#[test]
fn data_settings_that_cannot_work_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.csv"), "x,y\n0.5,1.25\n1.5,2.5\n2.5,0.75\n").unwrap();
    let model = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n";
    let cases: [(&str, &str); 6] = [
        ("[data]\nsource = \"digits\"\ntarget = \"y\"\n", "c.toml:5:10: `data.target`: `target` applies to source = \"csv\""),
        ("[data]\nsource = \"csv\"\npath = \"r.csv\"\n", "c.toml:3:1: `data`: missing field `target`; source = \"csv\" needs `target`"),
        ("[data]\nsource = \"idx\"\npath = \"d\"\nval = \"t10k\"\n", "c.toml:6:7: `data.val`: \"t10k\": for idx data use \"test\""),
        ("[data]\nsource = \"csv\"\npath = \"r.csv\"\ntarget = \"y\"\nval_split = 0.1\n", "c.toml: `data.val_split`: 0.1 leaves 0 of 3 samples"),
        ("[data]\nval_split = 0.0\n", "c.toml: `data.val_split`: is 0, so there is no validation set"),
        ("[data]\nsource = \"synthetic\"\nsamples = 0\n", "c.toml: `data.samples`: synthetic dataset: 0 samples"),
    ];
    for (data, want) in cases {
        write_config(dir.path(), "c.toml", &format!("{model}{data}"));
        let out = bz(dir.path(), &["train", "c.toml"]);
        assert_eq!(out.code, 2, "{data}: {}", out.all());
        assert!(out.stderr.contains(want), "{data}: expected {want:?} in {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.stderr);
    }
}

/// Writes `n` rows `tokens,label` of 3 to 7 token ids from 1 to 9 (0 pads), labelled by whether token 3 appears:
/// the text-like task of layers.rs as a CSV of token ids.
fn token_csv(path: &Path, n: usize, seed: u32) {
    let mut s = seed;
    let mut next = |m: u32| {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) % m
    };
    let mut text = String::from("tokens,label\n");
    for _ in 0..n {
        let ids: Vec<u32> = (0..3 + next(5)).map(|_| 1 + next(9)).collect();
        let words: Vec<String> = ids.iter().map(u32::to_string).collect();
        text.push_str(&format!("{},{}\n", words.join(" "), if ids.contains(&3) { "yes" } else { "no" }));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_token_csv_trains_an_lstm_and_a_bad_token_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    token_csv(&d.join("train.csv"), 800, 11);
    token_csv(&d.join("val.csv"), 200, 13);
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"csv\"\npath = \"train.csv\"\nval = \"val.csv\"\ntarget = \"label\"\n\
               [data.tokens]\ncolumn = \"tokens\"\nmax_len = 7\npadding_id = 0\n\
               [model]\nlayers = [{ type = \"embedding\", num = 10, dim = 8, padding_idx = 0 }, { type = \"lstm\", hidden = 16 }, { type = \"linear\", out = 2 }]\n\
               [train]\nepochs = 12\nbatch_size = 32\n[optimizer]\nname = \"adam\"\nlr = 0.01\n";
    write_config(d, "t.toml", cfg);
    let out = bz(d, &["train", "t.toml", "--run-name", "t"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("token ids, padded to 7 with 0"), "{}", out.stdout);
    let acc = best(&d.join("runs/t"), "val/accuracy");
    assert!(acc >= 0.95, "the LSTM reached only {acc} validation accuracy on the token CSV");

    // A bad token: one line naming the file, line, column and token.
    std::fs::write(d.join("val.csv"), "tokens,label\n1 2,no\n4 3x 1,yes\n").unwrap();
    let out = bz(d, &["train", "t.toml", "--run-name", "bad"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("val.csv, line 3, column \"tokens\": token \"3x\" is not a token id"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    // Token columns replace feature columns: a config naming both is a config error.
    write_config(d, "f.toml", &cfg.replace("target = \"label\"\n", "target = \"label\"\nfeatures = [\"tokens\"]\n"));
    let out = bz(d, &["train", "f.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("`data.features`: a token CSV's features are its [data.tokens] column"), "{}", out.stderr);
}
