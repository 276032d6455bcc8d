//! `source = "images"`: PNG and JPEG files in the ImageFolder layout or listed in a CSV, written here by PIL, train
//! to the accuracy the same digits reach as tensors; augmentation is deterministic and resumes exactly; a CSV
//! cannot lead out of its folder.

use bz_e2e::*;
use std::path::Path;

/// scikit-learn's digits as 8x8 grayscale PNGs in train/<class>/ and val/<class>/ (every 5th image), plus a CSV
/// of RGB JPEGs at 12x10 with string labels (`even`, `odd`), through PIL.
const WRITE_IMAGES: &str = r#"
import os
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
d = load_digits()
for i, (img, label) in enumerate(zip(d.images, d.target)):
    split = "val" if i % 5 == 0 else "train"
    os.makedirs(f"{split}/{label}", exist_ok=True)
    Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(f"{split}/{label}/{i:04d}.png")
os.makedirs("jpg", exist_ok=True)
with open("list.csv", "w") as f:
    f.write("path,label\n")
    for i, (img, label) in enumerate(zip(d.images[:400], d.target[:400])):
        rgb = np.stack([img * 255 / 16] * 3, axis=-1).astype(np.uint8)
        Image.fromarray(rgb, mode="RGB").resize((10, 12)).save(f"jpg/{i}.jpg", quality=95)
        f.write(f"jpg/{i}.jpg,{'even' if label % 2 == 0 else 'odd'}\n")
"#;

const CNN: &str = r#"[{ type = "conv2d", out = 8, kernel = 3, padding = 1 }, { type = "relu" }, { type = "maxpool2d", kernel = 2 },
  { type = "flatten" }, { type = "linear", out = 10 }]"#;

fn folder_config(epochs: u32, augment: &str) -> String {
    format!(
        "[run]\nthreads = 1\n[data]\nsource = \"images\"\npath = \"train\"\nval = \"val\"\nnormalize = true\nworkers = 2\n{augment}\
         [model]\nlayers = {CNN}\n[train]\nepochs = {epochs}\n[optimizer]\nlr = 0.01\n"
    )
}

fn weights(dir: &Path, run: &str) -> Vec<u8> {
    std::fs::read(dir.join(format!("runs/{run}/checkpoints/last/model.safetensors"))).unwrap()
}

fn best_val_accuracy(dir: &Path, run: &str) -> f64 {
    epoch_lines(&dir.join("runs").join(run)).iter().map(|e| e["val/accuracy"].as_f64().unwrap()).fold(0.0, f64::max)
}

#[test]
fn image_folders_and_csv_lists_train_and_augmentation_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    py(d, WRITE_IMAGES);

    // The folder layout: ten classes named by their folders, grayscale inferred, 8x8 from the files.
    write_config(d, "c.toml", &folder_config(10, ""));
    let out = bz(d, &["train", "c.toml", "--run-name", "plain"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("1x8x8"), "{}", out.stdout);
    let acc = best_val_accuracy(d, "plain");
    assert!(acc > 0.9, "validation accuracy {acc}");
    let labels: Vec<String> = serde_json::from_value(
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(d.join("runs/plain/checkpoints/best/inference.json")).unwrap()).unwrap()["labels"].clone(),
    )
    .unwrap();
    assert_eq!(labels, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());

    // Augmented: the same seed gives the same weights; stopping after 2 epochs and resuming to 4 gives them too.
    let augment = "[data.augment]\nflip = true\ncrop_scale = [0.7, 1.0]\nrotation = 10\ntranslate = 0.1\nbrightness = 0.2\ncontrast = 0.2\n";
    write_config(d, "a.toml", &folder_config(4, augment));
    for run in ["a1", "a2"] {
        let out = bz(d, &["train", "a.toml", "--run-name", run, "-q"]);
        assert_eq!(out.code, 0, "{}", out.all());
    }
    assert_eq!(weights(d, "a1"), weights(d, "a2"), "same seed, different augmented runs");
    assert_eq!(bz(d, &["train", "a.toml", "--run-name", "cut", "--epochs", "2", "-q"]).code, 0);
    let out = bz(d, &["train", "a.toml", "--run-name", "cut", "--epochs", "4", "--resume", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(weights(d, "a1"), weights(d, "cut"), "augmentation after --resume differs from the straight run");
    // Augmentation changes training: the weights differ from an unaugmented 4-epoch run.
    write_config(d, "n.toml", &folder_config(4, ""));
    assert_eq!(bz(d, &["train", "n.toml", "--run-name", "n", "-q"]).code, 0);
    assert_ne!(weights(d, "a1"), weights(d, "n"));

    // A CSV of RGB JPEGs of another size, resized; string labels come back from predict.
    let cfg = "[run]\nthreads = 1\n[data]\nsource = \"images\"\npath = \"list.csv\"\nsize = [8, 8]\nval_split = 0.2\n\
               [model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 32 }, { type = \"relu\" }, { type = \"linear\", out = 2 }]\n\
               [train]\nepochs = 15\n[optimizer]\nlr = 0.01\n";
    write_config(d, "j.toml", cfg);
    let out = bz(d, &["train", "j.toml", "--run-name", "j"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("3x8x8"), "{}", out.stdout);
    let acc = best_val_accuracy(d, "j");
    assert!(acc > 0.75, "even/odd validation accuracy {acc}");
}

#[test]
fn bad_image_sets_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("imgs/a")).unwrap();
    std::fs::write(d.join("imgs/a/broken.png"), b"not a png").unwrap();
    let cfg = |extra: &str| format!("[data]\nsource = \"images\"\n{extra}[model]\nlayers = [{{ type = \"flatten\" }}, {{ type = \"linear\", out = 2 }}]\n");
    // Bad files fail like other data files (1), bad keys are config errors (2).
    let cases = [
        ("path = \"imgs\"\n", 1, "broken.png: cannot be decoded"),
        ("path = \"list.csv\"\n", 1, "list.csv, line 2: path \"../outside.png\" leads out of the CSV's folder"),
        ("path = \"missing\"\n", 1, "missing"),
        ("path = \"imgs\"\nchannels = 2\n", 2, "`data.channels`: 2: images are read as 1 (grayscale) or 3 (RGB) channels"),
        ("path = \"imgs\"\n[data.augment]\ncrop_scale = [0.5, 2.0]\n", 2, "`data.augment.crop_scale`"),
    ];
    std::fs::write(d.join("list.csv"), "path,label\n../outside.png,a\n").unwrap();
    for (extra, code, needle) in cases {
        write_config(d, "c.toml", &cfg(extra));
        let out = bz(d, &["validate", "c.toml"]);
        assert_eq!(out.code, code, "{extra}: {}", out.all());
        assert!(out.stderr.contains(needle) && out.stderr.trim().lines().count() == 1, "{extra}: {}", out.stderr);
    }
}

/// `bz predict` on a folder of images, and on a CSV of their paths, decodes them as training does: the predictions'
/// accuracy over the validation folder is the validation accuracy training measured with the same checkpoint.
#[test]
fn predict_reads_an_image_folder_or_a_csv_of_paths_keyed_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    py(d, WRITE_IMAGES);
    write_config(d, "c.toml", &folder_config(3, "stream = true\n"));
    let out = bz(d, &["train", "c.toml", "--run-name", "p", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let last = "runs/p/checkpoints/last";
    let out = bz(d, &["predict", "c.toml", "--checkpoint", last, "--input", "val", "--output", "pred.csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let text = std::fs::read_to_string(d.join("pred.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("path,label,probability"));
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 360, "one row per validation image");
    // Keys are the paths inside the folder, whose first part is the true class.
    let correct = rows.iter().filter(|r| r[0].split('/').next() == Some(r[1].as_str())).count();
    let accuracy = correct as f64 / rows.len() as f64;
    let trained = epoch_lines(&d.join("runs/p")).last().unwrap()["val/accuracy"].as_f64().unwrap();
    assert!((accuracy - trained).abs() < 1e-9, "predict's accuracy {accuracy} on the validation images, training measured {trained}");

    // A CSV of paths (a label column is not needed): rows keyed as written, predicted as from the folder.
    let picked: Vec<&Vec<String>> = rows.iter().step_by(37).collect();
    let list: String = picked.iter().map(|r| format!("val/{}\n", r[0])).collect();
    std::fs::write(d.join("paths.csv"), format!("path\n{list}")).unwrap();
    let out = bz(d, &["predict", "c.toml", "--checkpoint", last, "--input", "paths.csv"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let from_csv: Vec<String> = out.stdout.lines().skip(1).map(str::to_string).collect();
    let expected: Vec<String> = picked.iter().map(|r| format!("val/{},{},{}", r[0], r[1], r[2])).collect();
    assert_eq!(from_csv, expected);
}
