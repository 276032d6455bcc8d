//! The tensorboard plugin against the real TensorBoard (tensorboard 2.21.0 in the test venv): every record
//! CRC-checked, every tag and value read back through both loaders and through the HTTP API of a
//! `tensorboard` server, compared with what bz wrote to metrics.jsonl.

use bz_e2e::fixtures::*;
use bz_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn config() -> String {
    Digits { layers: MLP_16, batch_size: Some(256), log_every_n_steps: Some(2), ..Digits::default() }.toml() + CONFIG_PLUGIN
}

const CONFIG_PLUGIN: &str = r#"[plugins.tensorboard]
log_every_n_steps = 2
histogram_every_n_epochs = 1
"#;

/// A scratch dir whose `plugins/` holds the tensorboard plugin built by this workspace.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let so = bz_path().parent().unwrap().join("libbz_tensorboard.so");
    assert!(so.exists(), "{} missing: cargo build --workspace builds it", so.display());
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(&so, dir.path().join("plugins/tensorboard.so")).unwrap();
    dir
}

fn train(dir: &Path, config: &str, args: &[&str]) -> Output {
    let mut all = vec!["train", config, "--plugin-dir", "plugins"];
    all.extend_from_slice(args);
    bz(dir, &all)
}

fn read(run: &Path) -> Value {
    serde_json::from_str(&py_script(run, "tb_read.py", &[run.to_str().unwrap()], Duration::from_secs(120))).unwrap()
}

/// f32 as TensorBoard stores scalars.
fn close(a: f64, b: f64) -> bool {
    ((a as f32) as f64 - b).abs() <= 1e-6 * b.abs().max(1e-30)
}

fn scalar_at(tb: &Value, tag: &str, step: u64) -> f64 {
    let series = tb["scalars"][tag].as_array().unwrap_or_else(|| panic!("no scalar tag {tag}: {}", tb["scalars"]));
    series.iter().find(|p| p[0] == step).unwrap_or_else(|| panic!("{tag} has no step {step}: {series:?}"))[1].as_f64().unwrap()
}

#[test]
fn every_metric_histogram_text_and_hparam_reads_back_through_tensorboards_loaders() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    let out = train(dir.path(), "c.toml", &["--run-name", "a"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/a");
    let tb = read(&run);

    // One file, every record intact: the strict reader and TensorBoard's own loader see the same number.
    let files = tb["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["file_version"], "brain.Event:2");
    assert_eq!(files[0]["strict_records"], files[0]["loader_records"]);

    // Epoch scalars equal metrics.jsonl's, at the epoch's global step.
    let epochs = epoch_lines(&run);
    assert_eq!(epochs.len(), 3);
    for line in &epochs {
        let step = line["step"].as_u64().unwrap();
        for (key, tag) in [
            ("train/loss", "train/loss"),
            ("train/accuracy", "train/accuracy"),
            ("val/loss", "val/loss"),
            ("val/accuracy", "val/accuracy"),
            ("lr", "optim/lr"),
            ("samples_per_s", "time/samples_per_s"),
            ("epoch_time_s", "time/epoch_s"),
        ] {
            let want = line[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {line}"));
            let got = scalar_at(&tb, tag, step);
            assert!(close(want, got), "{tag} at step {step}: TensorBoard {got}, metrics.jsonl {want}");
        }
        assert_eq!(scalar_at(&tb, "epoch", step), line["epoch"].as_f64().unwrap());
    }
    // Batch losses every 2 steps, equal to metrics.jsonl's step lines.
    let steps: Vec<Value> = read_jsonl(&run.join("metrics.jsonl")).into_iter().filter(|v| v["event"] == "step").collect();
    assert_eq!(steps.len(), 9, "18 steps, every 2nd logged");
    let batch = tb["scalars"]["train/batch_loss"].as_array().unwrap();
    assert_eq!(batch.len(), 9);
    for s in &steps {
        assert!(close(s["train/loss"].as_f64().unwrap(), scalar_at(&tb, "train/batch_loss", s["step"].as_u64().unwrap())));
    }

    // Histograms of every parameter's weights and gradients, every epoch; counts add up to the element count.
    let params = [("0.weight", 16 * 64), ("0.bias", 16), ("2.weight", 10 * 16), ("2.bias", 10)];
    let params: Vec<(String, u64)> = params.iter().map(|(n, c)| (n.replace("0.", "1.").replace("2.", "3."), *c as u64)).collect();
    let hist = tb["histograms"].as_object().unwrap();
    assert_eq!(hist.len(), 8, "{:?}", hist.keys().collect::<Vec<_>>());
    for (name, count) in &params {
        for group in ["weights", "gradients"] {
            let series = hist
                .get(&format!("{group}/{name}"))
                .unwrap_or_else(|| panic!("no {group}/{name} in {:?}", hist.keys().collect::<Vec<_>>()))
                .as_array()
                .unwrap();
            assert_eq!(series.len(), 3);
            for h in series {
                assert_eq!(h["num"].as_f64().unwrap() as u64, *count);
                assert_eq!(h["buckets"].as_f64().unwrap() as u64, *count);
                assert!(h["min"].as_f64().unwrap() <= h["max"].as_f64().unwrap());
            }
        }
    }

    // Text: the resolved config and the model summary.
    let config_text = tb["text"]["run/config"][0].as_str().unwrap();
    assert!(config_text.contains("[plugins.tensorboard]") && config_text.contains("histogram_every_n_epochs = 1"), "{config_text}");
    assert!(tb["text"]["run/model"][0].as_str().unwrap().contains("linear"), "{}", tb["text"]);

    // HParams: the run's hyperparameters and a successful end.
    let hp = &tb["hparams"];
    assert_eq!(hp["start"]["optimizer.lr"], 0.01);
    assert_eq!(hp["start"]["train.batch_size"], 256.0);
    assert_eq!(hp["start"]["data.source"], "digits");
    // Only the keys that apply to a digits run with adam: none of the other sources' or optimizers' keys.
    for absent in ["data.classes", "data.delimiter", "data.features_key", "data.noise", "optimizer.momentum", "scheduler.gamma"] {
        assert!(hp["start"].get(absent).is_none(), "{absent} in HParams: {}", hp["start"]);
    }
    assert_eq!(hp["end_status"], 1, "STATUS_SUCCESS");
}

#[test]
fn the_test_splits_metrics_are_test_scalars_at_the_final_step() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &(csv_with_test_split(dir.path()) + "[plugins.tensorboard]\n"));
    let out = train(dir.path(), "c.toml", &["--run-name", "t"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/t");
    let line = test_line(&run);
    let tb = read(&run);
    let step = line["step"].as_u64().unwrap();
    for key in ["test/loss", "test/accuracy", "test/f1_macro"] {
        let want = line[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {line}"));
        let got = scalar_at(&tb, key, step);
        assert!(close(want, got), "{key} at step {step}: TensorBoard {got}, metrics.jsonl {want}");
    }
}

#[test]
fn the_strict_check_catches_a_flipped_byte() {
    // The check above must be able to fail: a damaged copy makes the strict reader raise while TensorBoard's
    // loader silently stops early.
    let dir = setup();
    write_config(dir.path(), "c.toml", &config().replace("epochs = 3", "epochs = 1"));
    assert_eq!(train(dir.path(), "c.toml", &["--run-name", "a"]).code, 0);
    let run = dir.path().join("runs/a");
    let file = event_files(&run).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::write(damaged.join(file.file_name().unwrap()), &bytes).unwrap();
    let child = std::process::Command::new(python())
        .arg(repo_root().join("tests/py/tb_read.py"))
        .arg(&damaged)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_limited(child, Duration::from_secs(120));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("DataLossError") || out.stderr.contains("crc"), "{}", out.stderr);
}

fn event_files(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run).unwrap().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("tfevents")).collect();
    v.sort();
    v
}

#[test]
fn a_resumed_run_appends_a_file_with_steps_continuing() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    assert_eq!(train(dir.path(), "c.toml", &["--run-name", "r", "--epochs", "2"]).code, 0);
    let out = train(dir.path(), "c.toml", &["--run-name", "r", "--resume", "--epochs", "4"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/r");
    let tb = read(&run);
    let files = tb["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f["strict_records"], f["loader_records"]);
    }
    // The second file has a SessionLog START just after the resume step (6 batches × 2 epochs), so readers keep
    // the checkpointed epoch's points and drop whatever a crashed run wrote later.
    assert_eq!(files[1]["session_log_start"], serde_json::json!([13]));
    let epochs: Vec<(u64, f64)> = tb["scalars"]["epoch"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect();
    assert_eq!(epochs, vec![(6, 1.0), (12, 2.0), (18, 3.0), (24, 4.0)]);
    for line in epoch_lines(&run) {
        assert!(close(line["val/loss"].as_f64().unwrap(), scalar_at(&tb, "val/loss", line["step"].as_u64().unwrap())));
    }
    // One HParams session for the run.
    assert_eq!(tb["hparams"]["start"]["optimizer.lr"], 0.01);
}

#[test]
fn a_failed_run_is_readable_up_to_its_last_epoch_and_marked_failed() {
    let dir = setup();
    let cfg = format!("{DIVERGING}[plugins.tensorboard]\n");
    write_config(dir.path(), "c.toml", &cfg);
    let out = train(dir.path(), "c.toml", &["--run-name", "n"]);
    assert_eq!(out.code, 3, "{}", out.all());
    let run = dir.path().join("runs/n");
    let tb = read(&run);
    assert_eq!(tb["files"][0]["strict_records"], tb["files"][0]["loader_records"]);
    assert_eq!(tb["scalars"]["epoch"].as_array().unwrap().len(), 2);
    assert_eq!(tb["scalars"]["val/loss"].as_array().unwrap().len(), 2);
    assert_eq!(tb["hparams"]["end_status"], 2, "STATUS_FAILURE");
}

#[test]
fn a_tensorboard_server_shows_both_runs_with_both_loaders() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config().replace("[plugins.tensorboard]", "[plugins.tensorboard]\nlog_dir = \"tb\""));
    assert_eq!(train(dir.path(), "c.toml", &["--run-name", "lr-a", "-q"]).code, 0);
    assert_eq!(train(dir.path(), "c.toml", &["--run-name", "lr-b", "-q", "--set", "optimizer.lr=0.05", "--epochs", "2"]).code, 0);
    let logdir = dir.path().join("tb");
    let local = read(&logdir.join("lr-a"));
    for load_fast in ["false", "true"] {
        let api: Value =
            serde_json::from_str(&py_script(dir.path(), "tb_serve.py", &[logdir.to_str().unwrap(), load_fast, "lr-a", "lr-b"], Duration::from_secs(240)))
                .unwrap();
        let provider = api["provider"].as_str().unwrap_or("");
        assert!(if load_fast == "true" { provider.contains("Grpc") } else { provider.contains("Multiplexer") }, "{load_fast}: {provider}");
        let mut runs: Vec<&str> = api["runs"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        runs.sort();
        assert_eq!(runs, ["lr-a", "lr-b"]);
        // Scalars: the same points the loaders read, [wall_time, step, value].
        let served = api["scalars"]["lr-a"]["val/accuracy"].as_array().unwrap();
        let points: Vec<(u64, f64)> = served.iter().map(|p| (p[1].as_u64().unwrap(), p[2].as_f64().unwrap())).collect();
        let want: Vec<(u64, f64)> =
            local["scalars"]["val/accuracy"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect();
        assert_eq!(points, want, "{load_fast}");
        assert_eq!(api["scalars"]["lr-b"]["epoch"].as_array().unwrap().len(), 2);
        // Histograms: three epochs of buckets per parameter.
        let h = api["histograms"]["lr-a"]["weights/1.weight"].as_array().unwrap_or_else(|| panic!("{load_fast}: {}", api["histogram_tags"]));
        assert_eq!(h.len(), 3);
        let total: f64 = h[0][2].as_array().unwrap().iter().map(|b| b[2].as_f64().unwrap()).sum();
        assert_eq!(total as u64, 16 * 64);
        // Text, rendered from markdown.
        let text = api["text"]["lr-a"]["run/config"][0]["text"].as_str().unwrap();
        assert!(text.contains("plugins.tensorboard"), "{text}");
        // HParams: both runs as sessions with their learning rates and final metrics.
        let lr_info = api["experiment"]["hparamInfos"].as_array().unwrap().iter().find(|h| h["name"] == "optimizer.lr").cloned();
        assert!(lr_info.is_some_and(|h| h["type"] == "DATA_TYPE_FLOAT64" && h["differs"] == true), "{}", api["experiment"]);
        let groups = api["session_groups"]["sessionGroups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{}", api["session_groups"]);
        let mut lrs: Vec<f64> = groups.iter().map(|g| g["hparams"]["optimizer.lr"].as_f64().unwrap()).collect();
        lrs.sort_by(f64::total_cmp);
        assert_eq!(lrs, [0.01, 0.05]);
        for g in groups {
            assert_eq!(g["sessions"][0]["status"], "STATUS_SUCCESS", "{g}");
            let acc = g["metricValues"].as_array().unwrap().iter().find(|m| m["name"]["tag"] == "val/accuracy").unwrap_or_else(|| panic!("{g}"));
            assert!(acc["value"].as_f64().unwrap() > 0.5, "{g}");
        }
    }
}

#[test]
fn a_bad_key_is_named_under_its_plugin_section_and_the_schema_is_shown() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config().replace("histogram_every_n_epochs = 1", "histogram_every = 1"));
    let out = bz(dir.path(), &["validate", "c.toml", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("`plugins.tensorboard.histogram_every`: unknown key; did you mean `histogram_every_n_epochs`?"), "{}", out.stderr);
    let out = bz(dir.path(), &["plugins", "info", "tensorboard", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let schema = out.stdout.lines().find(|l| l.starts_with("config schema")).unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(schema.contains("\"additionalProperties\":false") && schema.contains("Weight and gradient histograms every N epochs"), "{schema}");
}

/// The embedded digits set as CSV files with a header (`p0`…`p63`, `digit`): every fifth row in val.csv, the others
/// in train.csv, so the test knows the validation rows. Returns the validation rows' digits.
fn digits_csv(dir: &Path) -> Vec<usize> {
    use std::io::Read;
    let gz = std::fs::read(repo_root().join("bz-host/data/digits.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    let header = (0..64).map(|i| format!("p{i},")).collect::<String>() + "digit\n";
    let (mut train, mut val, mut labels) = (header.clone(), header, vec![]);
    for (i, line) in text.lines().enumerate() {
        if i % 5 == 0 {
            labels.push(line.rsplit(',').next().unwrap().parse().unwrap());
            val += line;
            val.push('\n');
        } else {
            train += line;
            train.push('\n');
        }
    }
    std::fs::write(dir.join("train.csv"), train).unwrap();
    std::fs::write(dir.join("val.csv"), val).unwrap();
    labels
}

/// Per class, TensorBoard's pr_curve binning of the probabilities (`floor(p * (n - 1))`, "positive" at threshold i
/// when the bucket is ≥ i): (TP, FP, TN, FN) lists.
fn expected_pr(probabilities: &[f32], labels: &[usize], class: usize, n: usize) -> [Vec<u64>; 4] {
    let classes = probabilities.len() / labels.len();
    let (mut tp, mut fp) = (vec![0u64; n], vec![0u64; n]);
    for (row, &label) in probabilities.chunks(classes).zip(labels) {
        let bucket = ((row[class] * (n - 1) as f32).floor() as usize).min(n - 1);
        for i in 0..=bucket {
            if label == class {
                tp[i] += 1;
            } else {
                fp[i] += 1;
            }
        }
    }
    let fn_ = tp.iter().map(|t| tp[0] - t).collect();
    let tn = fp.iter().map(|f| fp[0] - f).collect();
    [tp, fp, tn, fn_]
}

fn brightness(rgb: &Value) -> u64 {
    rgb.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum()
}

#[test]
fn the_confusion_matrix_image_and_per_class_pr_curves_are_served_by_tensorboard() {
    let dir = setup();
    let labels = digits_csv(dir.path());
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"csv\"\npath = \"train.csv\"\nval = \"val.csv\"\ntarget = \"digit\"\nnormalize = true\n\
               [model]\nlayers = [{ type = \"linear\", out = 32 }, { type = \"relu\" }, { type = \"linear\", out = 10 }]\n\
               [train]\nepochs = 3\nbatch_size = 64\n[optimizer]\nlr = 0.01\n[metrics]\nconfusion_matrix = true\n\
               [plugins.tensorboard]\nlog_dir = \"tb\"\n";
    write_config(dir.path(), "c.toml", cfg);
    let out = train(dir.path(), "c.toml", &["--run-name", "d", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/d");
    let epochs = epoch_lines(&run);
    // The last weights' probabilities on the validation rows, in validation's batches (so the same arithmetic).
    let out = bz(
        dir.path(),
        &[
            "predict",
            "c.toml",
            "--run-name",
            "d",
            "--checkpoint",
            "runs/d/checkpoints/last",
            "--input",
            "val.csv",
            "--output",
            "p.safetensors",
            "--batch-size",
            "64",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let (dtype, shape, bytes) = tensors(&dir.path().join("p.safetensors")).remove("probabilities").expect("probabilities");
    assert_eq!((dtype.as_str(), shape), ("F32", vec![labels.len(), 10]));
    let probabilities: Vec<f32> = bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();

    let logdir = dir.path().join("tb");
    for load_fast in ["false", "true"] {
        let api: Value =
            serde_json::from_str(&py_script(dir.path(), "tb_images.py", &[logdir.to_str().unwrap(), load_fast, "d", "10", "3"], Duration::from_secs(240)))
                .unwrap();
        // One image per epoch, at the epoch's step: a 320x320 RGB PNG whose cells are shaded by that epoch's matrix.
        let images = api["images"].as_array().unwrap();
        assert_eq!(images.len(), 3, "{load_fast}: {}", api["image_tags"]);
        for (image, line) in images.iter().zip(&epochs) {
            assert_eq!(image["step"], line["step"], "{load_fast}");
            assert_eq!((image["format"].as_str(), image["mode"].as_str()), (Some("PNG"), Some("RGB")));
            assert_eq!((image["width"].as_u64(), image["height"].as_u64()), (Some(320), Some(320)));
            let matrix = line["val/confusion_matrix"].as_array().unwrap();
            for (r, row) in matrix.iter().enumerate() {
                let counts: Vec<u64> = row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                let light: Vec<u64> = (0..10).map(|c| brightness(&image["cells"][r][c])).collect();
                for a in 0..10 {
                    if counts[a] == 0 {
                        assert_eq!(light[a], 3 * 255, "row {r} col {a}: an empty cell is white");
                    }
                    for b in 0..10 {
                        assert!(counts[a] <= counts[b] || light[a] < light[b], "step {}: row {r}: {counts:?} but brightness {light:?}", line["step"]);
                    }
                }
            }
        }
        // Trained: the diagonal is the darkest cell of every row.
        let last = &images[2]["cells"];
        for r in 0..10 {
            let diagonal = brightness(&last[r][r]);
            assert!((0..10).filter(|&c| c != r).all(|c| brightness(&last[r][c]) > diagonal), "row {r}: {}", last[r]);
        }

        // PR curves: one tag per class, one point per epoch; the last epoch's counts are those of the last weights'
        // probabilities, and they add up at every threshold.
        let curves = api["pr_curves"].as_object().unwrap();
        assert_eq!(curves.len(), 10, "{load_fast}: {}", api["pr_tags"]);
        for class in 0..10 {
            let series = curves[&format!("val/pr_curves/{class}")].as_array().unwrap();
            let steps: Vec<&Value> = series.iter().map(|p| &p["step"]).collect();
            assert_eq!(steps, epochs.iter().map(|l| &l["step"]).collect::<Vec<_>>());
            let got = series.last().unwrap();
            let want = expected_pr(&probabilities, &labels, class, 51);
            let in_class = labels.iter().filter(|&&l| l == class).count() as u64;
            // TensorBoard cuts each curve after the last threshold that still predicts something positive.
            let kept = got["true_positives"].as_array().unwrap().len();
            assert!(kept <= 51 && want[0][kept..].iter().chain(&want[1][kept..]).all(|&v| v == 0), "class {class}: {kept} thresholds kept");
            for (i, key) in ["true_positives", "false_positives", "true_negatives", "false_negatives"].iter().enumerate() {
                let counts: Vec<u64> = got[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
                assert_eq!(counts, want[i][..kept], "{load_fast}: class {class} {key}");
            }
            for t in 0..kept {
                let c = |k: &str| got[k][t].as_u64().unwrap();
                assert_eq!(c("true_positives") + c("false_negatives"), in_class);
                assert_eq!(c("true_positives") + c("false_positives") + c("true_negatives") + c("false_negatives"), labels.len() as u64);
                let precision = c("true_positives") as f64 / (c("true_positives") + c("false_positives")).max(1) as f64;
                assert!((got["precision"][t].as_f64().unwrap() - precision).abs() < 1e-6);
            }
        }
    }
}

/// The grid's layout, as the plugin documents it: 8x8 digits enlarged 4 times to 32-pixel tiles, a 14-pixel label
/// strip under each, 2 pixels between.
const TILE: usize = 32;
const LABEL: usize = 14;
const GAP: usize = 2;
const ZOOM: usize = 4;

/// Headless Chromium, if installed (`scripts/setup --browser`).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// Every digit of the embedded set as (label, 64 pixels scaled as the grid shows them: `round(v / 16 * 255)`).
fn digits_as_shown() -> Vec<(u64, Vec<i64>)> {
    use std::io::Read;
    let gz = std::fs::read(repo_root().join("bz-host/data/digits.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut text).unwrap();
    let row = |line: &str| {
        let v: Vec<f64> = line.split(',').map(|f| f.trim().parse().unwrap()).collect();
        (v[64] as u64, v[..64].iter().map(|p| (p / 16.0 * 255.0).round() as i64).collect())
    };
    text.lines().map(row).collect()
}

/// `(split index, true id, predicted id)` per row of a `val/misclassified_labels` table as TensorBoard renders it
/// (an HTML table: cells `<td>3</td>`, names `7 (7)`).
fn table_rows(html: &str) -> Vec<(u64, u64, u64)> {
    let cells: Vec<&str> = html.split("<td>").skip(1).map(|c| c.split("</td>").next().unwrap().trim()).collect();
    let id = |c: &str| c.rsplit('(').next().unwrap().trim_end_matches(')').parse::<u64>().unwrap();
    cells.chunks(4).map(|r| (r[1].parse().unwrap(), id(r[2]), id(r[3]))).collect()
}

/// One grid as served: as many labelled tiles as the table lists, each the pixels of a digit of its true class.
fn check_grid(grid: &Value, rows: &[(u64, u64, u64)], line: &Value, digits: &[(u64, Vec<i64>)]) {
    let matrix: Vec<Vec<u64>> = serde_json::from_value(line["val/confusion_matrix"].clone()).unwrap();
    let wrong: u64 = (0..10).map(|r| (0..10).filter(|&c| c != r).map(|c| matrix[r][c]).sum::<u64>()).sum();
    let n = rows.len();
    assert_eq!(n as u64, wrong.min(64), "step {}: {wrong} misclassified, {n} tiles", line["step"]);
    // Every (true, predicted) pair is one of the confusion matrix's; all of them when they fit.
    for (t, p) in rows.iter().map(|r| (r.1, r.2)) {
        let shown = rows.iter().filter(|r| (r.1, r.2) == (t, p)).count() as u64;
        assert!(t != p && shown <= matrix[t as usize][p as usize], "({t}, {p}) shown {shown} times: {matrix:?}");
        assert!(wrong > 64 || shown == matrix[t as usize][p as usize]);
    }
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "by split index: {rows:?}");
    let columns = (n as f64).sqrt().ceil() as usize;
    assert_eq!((grid["format"].as_str(), grid["mode"].as_str()), (Some("PNG"), Some("RGB")));
    assert_eq!(grid["width"].as_u64().unwrap() as usize, columns * (TILE + GAP) + GAP);
    assert_eq!(grid["height"].as_u64().unwrap() as usize, n.div_ceil(columns) * (TILE + LABEL + GAP) + GAP);
    for (i, cell) in grid["cells"].as_array().unwrap().iter().enumerate() {
        let (green, red) = (cell["green"].as_u64().unwrap(), cell["red"].as_u64().unwrap());
        if i >= n {
            assert_eq!((green, red), (0, 0), "cell {i} is past the last tile");
            continue;
        }
        assert!(green > 0 && red > 0, "tile {i} has both labels");
        // Gray: three equal channels; the normalisation undone, it is one of the set's digits of its true class.
        let gray: Vec<i64> = cell["pixels"].as_array().unwrap().iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert!(cell["pixels"].as_array().unwrap().iter().all(|p| p[0] == p[1] && p[1] == p[2]));
        let class = rows[i].1;
        let same = |d: &Vec<i64>| d.iter().zip(&gray).all(|(a, b)| (a - b).abs() <= 1);
        assert!(digits.iter().any(|(label, d)| *label == class && same(d)), "tile {i} ({:?}) is no digit {class}: {gray:?}", rows[i]);
    }
}

#[test]
fn the_misclassified_grid_is_served_by_tensorboard_and_the_dashboards_render() {
    let dir = setup();
    let cfg = Digits { layers: MLP_16, epochs: 2, batch_size: Some(64), ..Digits::default() }.toml()
        + "[metrics]\nconfusion_matrix = true\n[plugins.tensorboard]\nlog_dir = \"tb\"\nlog_every_n_steps = 0\n";
    write_config(dir.path(), "c.toml", &cfg.replace("source = \"digits\"", "source = \"digits\"\nnormalize = true"));
    let out = train(dir.path(), "c.toml", &["--run-name", "g", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let epochs = epoch_lines(&dir.path().join("runs/g"));
    let digits = digits_as_shown();
    let logdir = dir.path().join("tb");
    let shots = bz_path().parent().unwrap().parent().unwrap().join("test-artifacts/tensorboard");
    let browser = chromium();
    if browser.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty());
        assert!(!ci, "CI must take the dashboard screenshots: install chromium with scripts/setup --browser");
        eprintln!("SKIPPED the dashboard screenshots: no chromium on PATH (scripts/setup --browser installs it)");
    }
    for load_fast in ["false", "true"] {
        let mut args = vec![logdir.to_str().unwrap(), load_fast, "g", "2"];
        let layout = [TILE, LABEL, GAP, ZOOM].map(|v| v.to_string());
        args.extend(layout.iter().map(String::as_str));
        // Screenshots once, with the default loader.
        let shot_args = browser.as_ref().filter(|_| load_fast == "true").map(|b| [shots.display().to_string(), b.display().to_string()]);
        args.extend(shot_args.iter().flatten().map(String::as_str));
        let api: Value = serde_json::from_str(&py_script(dir.path(), "tb_grid.py", &args, Duration::from_secs(300))).unwrap();
        // The card's description, which both loaders serve for the images plugin's own form (RustBoard drops a
        // legacy `Summary.Image`'s).
        let description = api["image_tags"]["g"]["val/misclassified"]["description"].as_str().unwrap_or("");
        assert!(description.contains("misclassified validation samples"), "{load_fast}: {}", api["image_tags"]);
        let (grids, tables) = (api["grids"].as_array().unwrap(), api["tables"].as_array().unwrap());
        assert_eq!((grids.len(), tables.len()), (2, 2), "{load_fast}");
        for ((grid, table), line) in grids.iter().zip(tables).zip(&epochs) {
            assert_eq!((&grid["step"], &table["step"]), (&line["step"], &line["step"]), "{load_fast}");
            check_grid(grid, &table_rows(table["text"].as_str().unwrap()), line, &digits);
        }
        let taken = api["screenshots"].as_object().map_or(0, |s| s.len());
        assert_eq!(taken, if shot_args.is_some() { 2 } else { 0 }, "{load_fast}");
        for (name, shot) in api["screenshots"].as_object().into_iter().flatten() {
            // A rendered dashboard, not a blank page: a real PNG of the window's size with many colours.
            assert_eq!((shot["format"].as_str(), shot["width"].as_u64(), shot["height"].as_u64()), (Some("PNG"), Some(1400), Some(1000)), "{name}");
            assert!(shot["stddev"].as_f64().unwrap() > 10.0 && shot["colours"].as_u64().unwrap() > 50, "{name}: {shot}");
            let bytes = std::fs::read(shot["path"].as_str().unwrap()).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}");
        }
    }
}
