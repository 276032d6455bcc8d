//! The command line: exit codes, one-line errors that name file, line, column and key, and the helper commands.

use bz_e2e::fixtures::*;
use bz_e2e::*;

fn good() -> String {
    Digits { epochs: 1, lr: None, threads: None, ..Digits::default() }.toml()
}

#[test]
fn no_arguments_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bz(dir.path(), &[]);
    assert_eq!(out.code, 2, "{}", out.all());
}

#[test]
fn missing_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = bz(dir.path(), &["train", "nope.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.starts_with("error: nope.toml: cannot read the config file"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.stderr);
}

#[test]
fn unknown_key_gives_location_and_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &format!("{}[optimizer]\nnmae = \"sgd\"\n", good()));
    let out = bz(dir.path(), &["validate", "c.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("c.toml:9:1: `optimizer.nmae`: unknown field `nmae`"), "{}", out.stderr);
    assert!(out.stderr.contains("did you mean `name`?"), "{}", out.stderr);
    assert!(!dir.path().join("runs").exists(), "a bad config must not create a run directory");
}

#[test]
fn bad_values_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str); 7] = [
        ("[optimizer]\nlr = -1.0\n", "`optimizer.lr`: -1 must be a positive number"),
        ("[optimizer]\nname = \"sgd\"\nmomentum = \"high\"\n", "`optimizer.momentum`: invalid type"),
        ("[run]\ndevice = \"gpu\"\n", "unknown device \"gpu\""),
        ("[checkpoint]\nmonitor = \"val/acc\"\n", "\"val/acc\" is not a metric of this run; choose one of: train/loss"),
        ("[scheduler]\nname = \"cosin\"\n", "did you mean `cosine`?"),
        ("[run]\nname = \"../elsewhere\"\n", "`run.name`: \"../elsewhere\" must be a plain directory name"),
        // No machine here has 100 GPUs; one without CUDA says so. Either way the config can fix it: exit 2.
        ("[run]\ndevice = \"cuda:99\"\n", "c.toml: `run.device`: \"cuda:99\""),
    ];
    for (extra, want) in cases {
        write_config(dir.path(), "c.toml", &format!("{}{extra}", good()));
        let out = bz(dir.path(), &["validate", "c.toml"]);
        assert_eq!(out.code, 2, "{extra}: {}", out.all());
        assert!(out.stderr.contains(want), "{extra}: expected {want:?} in {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.stderr);
    }
}

#[test]
fn a_run_name_flag_that_leaves_the_run_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &good());
    for args in [&["train", "c.toml", "--run-name", "../x"][..], &["eval", "c.toml", "--run-name", ".hidden"][..]] {
        let out = bz(dir.path(), args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(out.stderr.contains("must be a plain directory name"), "{args:?}: {}", out.stderr);
    }
    assert!(!dir.path().join("runs").exists(), "nothing is created for a bad flag");
}

#[test]
fn model_shape_errors_say_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &good().replace("{ type = \"flatten\" }, ", ""));
    let out = bz(dir.path(), &["validate", "c.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("model.layers[0] (linear) needs a flat input but gets [1, 8, 8]: add { type = \"flatten\" }"), "{}", out.stderr);
    write_config(dir.path(), "c.toml", &good().replace("out = 10", "out = 7"));
    let out = bz(dir.path(), &["validate", "c.toml"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("outputs 7 values per sample but the data has 10 classes: set the last layer's `out = 10`"), "{}", out.stderr);
}

#[test]
fn set_overrides_and_reports_bad_overrides() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &good());
    let out = bz(dir.path(), &["validate", "c.toml", "--set", "model.layers[1].out=12"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("outputs 12 values"), "{}", out.stderr);
    let out = bz(dir.path(), &["validate", "c.toml", "--set", "train.epochs=many"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--set train.epochs"), "{}", out.stderr);
    let out = bz(dir.path(), &["validate", "c.toml", "--set", "optimizer.lr=0.5"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn validate_prints_summary() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &good());
    let out = bz(dir.path(), &["validate", "c.toml"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("c.toml: ok"), "{}", out.stdout);
    assert!(out.stdout.contains("1438 train / 359 val samples"), "{}", out.stdout);
    assert!(out.stdout.contains("total parameters: 650"), "{}", out.stdout);
}

#[test]
fn init_writes_a_config_that_trains_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = bz(dir.path(), &["init"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let text = std::fs::read_to_string(dir.path().join("bz.toml")).unwrap();
    assert!(text.contains("# "), "the starter config is commented");
    let out = bz(dir.path(), &["init"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already exists; pass --force"), "{}", out.stderr);
    let out = bz(dir.path(), &["train", "bz.toml", "--epochs", "1", "-q"]);
    assert_eq!(out.code, 0, "{}", out.all());
}

#[test]
fn doctor_reports_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    let out = bz(dir.path(), &["doctor"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("libtorch        2.13.0"), "{}", out.stdout);
    assert!(out.stdout.contains("threads"), "{}", out.stdout);
    assert!(out.stdout.contains("plugins"), "{}", out.stdout);
}

#[test]
fn existing_named_run_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "c.toml", &good());
    assert_eq!(bz(dir.path(), &["train", "c.toml", "--run-name", "a", "-q"]).code, 0);
    let out = bz(dir.path(), &["train", "c.toml", "--run-name", "a", "-q"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already exists: add --resume"), "{}", out.stderr);
    // Unnamed runs get a fresh directory instead.
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    assert_eq!(bz(dir.path(), &["train", "c.toml", "-q"]).code, 0);
    assert!(dir.path().join("runs/c").is_dir() && dir.path().join("runs/c-2").is_dir());
}

#[test]
fn inputs_that_crashed_inside_libtorch_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Images of 0x0 pixels and a [N, 0] feature tensor, written by numpy and safetensors in the test venv.
    py(
        dir.path(),
        "import numpy as np, gzip, struct\nfrom safetensors.numpy import save_file\n\
         def idx(path, arr):\n    with gzip.open(path, 'wb') as f:\n        f.write(struct.pack('>BBBB', 0, 0, 8, arr.ndim))\n        for d in arr.shape: f.write(struct.pack('>I', d))\n        f.write(arr.tobytes())\n\
         idx('train-images-idx3-ubyte.gz', np.zeros((10, 0, 0), dtype=np.uint8))\nidx('train-labels-idx1-ubyte.gz', np.zeros((10,), dtype=np.uint8))\n\
         save_file({'x': np.zeros((10, 0), dtype=np.float32), 'y': np.zeros((10,), dtype=np.int64)}, 'z.safetensors')\n",
    );
    let model = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 64 }, { type = \"relu\" }, { type = \"linear\", out = 10 }]\n[train]\nepochs = 1\n";
    write_config(dir.path(), "d.toml", &format!("[data]\nsource = \"digits\"\n{model}"));
    write_config(dir.path(), "i.toml", &format!("[data]\nsource = \"idx\"\npath = \".\"\n{model}"));
    write_config(
        dir.path(),
        "s.toml",
        &format!("[data]\nsource = \"safetensors\"\npath = \"z.safetensors\"\nfeatures_key = \"x\"\ntargets_key = \"y\"\n{model}"),
    );
    let cases: [(&[&str], &str); 4] = [
        (&["train", "d.toml", "--set", "model.layers[1].out=100000000000"], "more than this machine's"),
        (&["train", "d.toml", "--set", "model.layers[1].out=4611686018427387904"], "overflows"),
        (&["train", "i.toml"], "holds no features"),
        (&["train", "s.toml"], "holds no features"),
    ];
    for (args, want) in cases {
        let out = bz(dir.path(), args);
        assert!(out.code != 0 && out.code != 101, "{args:?}: {}", out.all());
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert!(errors.len() == 1 && errors[0].contains(want), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked") && !out.stderr.contains("frame #"), "{args:?}: {}", out.stderr);
    }
}
