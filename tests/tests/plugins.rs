//! Plugins end to end: the fixture plugin (tests/fixtures/plugin) records, panics, fails and stops; broken and
//! foreign libraries are refused with one line each; built-in plugins; the scaffold builds and runs.

use bz_e2e::fixtures::*;
use bz_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn base() -> String {
    Digits { batch_size: Some(256), ..Digits::default() }.toml()
}

fn fixture_so() -> PathBuf {
    let so = bz_path().parent().unwrap().join("libbz_fixture.so");
    assert!(so.exists(), "{} missing: cargo build --workspace builds it", so.display());
    so
}

/// A scratch dir with `plugins/fixture.so` and a config `c.toml` of `base()` + `extra`.
fn setup(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(fixture_so(), dir.path().join("plugins/fixture.so")).unwrap();
    write_config(dir.path(), "c.toml", &format!("{}{extra}", base()));
    dir
}

fn train(dir: &Path, extra_args: &[&str]) -> Output {
    let mut args = vec!["train", "c.toml", "--plugin-dir", "plugins", "--run-name", "r"];
    args.extend_from_slice(extra_args);
    bz(dir, &args)
}

fn events(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("runs/r/fixture-events.jsonl"))
}

#[test]
fn recorder_sees_every_event_in_order_with_the_logged_metrics() {
    let dir = setup("[plugins.fixture]\nmode = \"record\"\n");
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let ev = events(dir.path());
    let kinds: Vec<&str> = ev.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    // digits: 1438 training samples / 256 = 6 batches; 359 validation samples / 256 = 2 batches.
    let mut want = vec!["RUN_START"];
    for _ in 0..3 {
        want.extend(["EPOCH_START", "TRAIN_LOOP_START"]);
        for _ in 0..6 {
            want.extend(["TRAIN_BATCH_START", "TRAIN_BATCH_END"]);
        }
        want.extend(["TRAIN_LOOP_END", "VAL_LOOP_START"]);
        for _ in 0..2 {
            want.extend(["VAL_BATCH_START", "VAL_BATCH_END"]);
        }
        want.extend(["VAL_LOOP_END", "CHECKPOINT_SAVED", "EPOCH_END"]);
    }
    want.extend(["RUN_END", "FINISH"]);
    assert_eq!(kinds, want);
    let logged = epoch_lines(&dir.path().join("runs/r"));
    let epoch_ends: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "EPOCH_END").collect();
    for (e, line) in epoch_ends.iter().zip(&logged) {
        assert_eq!(e["epoch"], line["epoch"]);
        assert_eq!(e["step"], line["step"]);
        for key in ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/f1_macro"] {
            assert_eq!(e["metrics"][key].as_f64(), line[key].as_f64(), "{key} at epoch {}", e["epoch"]);
        }
        assert_eq!(e["payload"]["lr"], line["lr"]);
    }
    let batch_ends: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "TRAIN_BATCH_END").collect();
    assert_eq!(batch_ends.last().unwrap()["step"], 18);
    assert!(batch_ends.iter().all(|e| e["metrics"]["train/loss"].as_f64().is_some_and(f64::is_finite)));
    let start = &ev[0]["payload"];
    assert!(start["run_dir"].as_str().unwrap().ends_with("runs/r") && start["config"].as_str().unwrap().contains("[plugins.fixture]"), "{start}");
    let hp = &start["hyperparameters"];
    assert_eq!(hp["optimizer.lr"].as_f64(), Some(0.01), "{hp}");
    assert_eq!(hp["train.batch_size"], 256);
    assert_eq!(hp["model.params"], 650);
    let saved = ev.iter().rev().find(|e| e["kind"] == "CHECKPOINT_SAVED").unwrap();
    assert!(Path::new(saved["payload"]["path"].as_str().unwrap()).join("model.safetensors").exists());
    assert_eq!(ev.last().unwrap()["status"], "completed");
}

#[test]
fn subscriptions_are_honoured() {
    let dir = setup("[plugins.fixture]\nmode = \"record\"\nsubscribe = [\"EPOCH_END\", \"RUN_END\"]\n");
    assert_eq!(train(dir.path(), &[]).code, 0);
    let kinds: Vec<String> = events(dir.path()).iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["EPOCH_END", "EPOCH_END", "EPOCH_END", "RUN_END", "FINISH"]);
}

#[test]
fn a_panicking_plugin_is_disabled_and_the_run_goes_on() {
    let dir = setup("[plugins.fixture]\nmode = \"panic\"\n");
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stderr.contains("warning: plugin 'fixture' failed on EPOCH_END: panicked in on_event: fixture panics on EPOCH_END at epoch 1; disabled"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("warning: plugin 'fixture'").count(), 1, "logged once: {}", out.stderr);
    assert_eq!(epoch_lines(&dir.path().join("runs/r")).len(), 3);
}

#[test]
fn on_error_abort_and_continue() {
    let dir = setup("[plugins.fixture]\nmode = \"error\"\non_error = \"abort\"\n");
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("plugin 'fixture' failed on EPOCH_END (on_error = \"abort\"): fixture error on EPOCH_END at epoch 1"), "{}", out.stderr);
    // Nothing half-written: the epoch's checkpoint was complete before EPOCH_END, and metrics.jsonl parses.
    let run = dir.path().join("runs/r");
    assert_eq!(epoch_lines(&run).len(), 1);
    assert!(run.join("checkpoints/last/model.safetensors").exists());

    let dir = setup("[plugins.fixture]\nmode = \"error\"\non_error = \"continue\"\nat = \"TRAIN_BATCH_END\"\n");
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stderr.matches("(on_error = \"continue\")").count(), 3, "the first three failures are shown: {}", out.stderr);
}

#[test]
fn constructor_error_stops_before_training() {
    let dir = setup("[plugins.fixture]\nmode = \"ctor_error\"\n");
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("plugin 'fixture' (plugins/fixture.so) could not start: fixture constructor refuses to start"), "{}", out.stderr);
    assert!(!dir.path().join("runs").exists(), "no run directory for a run that never started");
}

#[test]
fn plugin_config_errors_are_config_errors() {
    let dir = setup("[plugins.fixture]\nmode = \"dance\"\n");
    let out = bz(dir.path(), &["validate", "c.toml", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("`plugins.fixture`: `mode` = \"dance\" is not one of"), "{}", out.stderr);
    let dir = setup("[plugins.fixture]\non_error = \"explode\"\n");
    let out = bz(dir.path(), &["validate", "c.toml", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("`plugins.fixture.on_error`"), "{}", out.stderr);
    let dir = setup("[plugins.fixture]\nmode = \"record\"\n");
    let out = bz(dir.path(), &["validate", "c.toml", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("plugin  fixture 0.3.0"), "{}", out.stdout);
}

#[test]
fn stop_directive_finishes_the_asking_epoch_and_no_more() {
    let dir = setup("[plugins.fixture]\nmode = \"stop\"\nepoch = 2\n");
    let out = train(dir.path(), &["--epochs", "5"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/r");
    let epochs = epoch_lines(&run);
    assert_eq!(epochs.len(), 2, "the original ran one epoch too many");
    let state: Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/last/trainer.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2, "epoch 2's checkpoint is written");
    assert!(out.stdout.contains("stopped early: 2 epochs"), "{}", out.stdout);
    assert!(out.stderr.contains("info: bz_fixture: asking to stop at epoch 2"), "plugin logs go through the host: {}", out.stderr);
}

#[test]
fn broken_and_foreign_libraries_get_one_line_each() {
    let dir = setup("[plugins.fixture]\n");
    let plugins = dir.path().join("plugins");
    // Not a bz plugin: a real shared library without the header.
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("libm");
    std::fs::copy(&libm, plugins.join("notbz.so")).unwrap();
    // Truncated: the first 4 KiB of a real plugin.
    let bytes = std::fs::read(fixture_so()).unwrap();
    std::fs::write(plugins.join("truncated.so"), &bytes[..4096]).unwrap();

    // A plugin that needs a symbol no library defines (tests/fixtures/missing-symbol).
    std::fs::copy(bz_path().parent().unwrap().join("libbz_missing.so"), plugins.join("missing.so")).unwrap();

    let one_line = |out: &Output| out.stderr.trim().lines().count() == 1;
    for (name, want) in [
        ("notbz", "is not a bz plugin (no plugin header); remove it"),
        ("truncated", "is not a loadable shared library (truncated"),
        ("missing", "needs a symbol this system does not provide (undefined symbol bz_test_symbol_that_no_library_defines)"),
        ("absent", "plugin 'absent' is not installed"),
    ] {
        write_config(dir.path(), "c.toml", &format!("{}[plugins.{name}]\n", base()));
        let out = train(dir.path(), &[]);
        assert_eq!(out.code, 1, "{name}: {}", out.all());
        assert!(out.stderr.contains(want), "{name}: {}", out.stderr);
        assert!(one_line(&out), "{name}: {}", out.stderr);
    }
    // Broken files the config does not use do not matter to a run...
    write_config(dir.path(), "c.toml", &format!("{}[plugins.fixture]\n", base()));
    assert_eq!(train(dir.path(), &[]).code, 0);
    // ...and `bz plugins list` shows them as broken, found in a child process.
    let out = bz(dir.path(), &["plugins", "list", "--plugin-dir", "plugins"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let line = |n: &str| out.stdout.lines().find(|l| l.starts_with(n)).unwrap_or_else(|| panic!("{n} missing: {}", out.stdout)).to_string();
    assert!(line("fixture").contains(" ok "), "{}", out.stdout);
    assert!(line("notbz").contains("broken") && line("notbz").contains("not a bz plugin"), "{}", out.stdout);
    assert!(line("truncated").contains("broken"), "{}", out.stdout);
    assert!(line("missing").contains("broken") && line("missing").contains("undefined symbol"), "{}", out.stdout);
    assert!(line("early_stopping").contains("built in"), "{}", out.stdout);

    // Two files claiming one name.
    std::fs::copy(fixture_so(), plugins.join("libbz_fixture.so")).unwrap();
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("plugin 'fixture' is claimed by two files") && out.stderr.contains("libbz_fixture.so"), "{}", out.stderr);
}

#[test]
fn early_stopping_builtin_stops_and_keeps_the_best_checkpoint() {
    let dir = setup("[plugins.early_stopping]\nmonitor = \"val/loss\"\npatience = 2\n[plugins.profiler]\n");
    // A rate high enough that val/loss soon stops improving.
    let out = train(dir.path(), &["--epochs", "40", "--set", "optimizer.lr=0.3"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run = dir.path().join("runs/r");
    let epochs = epoch_lines(&run);
    assert!(epochs.len() < 40, "early stopping never triggered");
    let losses: Vec<f64> = epochs.iter().map(|e| e["val/loss"].as_f64().unwrap()).collect();
    let (best_i, best) = losses.iter().enumerate().fold((0, f64::MAX), |a, (i, v)| if *v < a.1 { (i, *v) } else { a });
    assert_eq!(losses.len(), best_i + 1 + 2, "stops exactly `patience` epochs after the best: {losses:?}");
    let state: Value = serde_json::from_slice(&std::fs::read(run.join("checkpoints/best/trainer.json")).unwrap()).unwrap();
    assert_eq!(state["best"].as_f64().unwrap(), best);
    assert!(out.stdout.contains("early stopping: val/loss has not improved for 2 epoch(s)"), "{}", out.stdout);
    // The profiler's report.
    let profile: Value = serde_json::from_slice(&std::fs::read(run.join("profile.json")).unwrap()).unwrap();
    for phase in ["data", "forward", "backward", "optimizer", "validation", "checkpoint"] {
        assert!(profile["phases_s"][phase].as_f64().unwrap() > 0.0, "{phase}: {profile}");
    }
    assert!(profile["plugins_s"]["early_stopping"].as_f64().is_some(), "{profile}");
    assert!(profile["peak_rss_bytes"].as_u64().unwrap() > 10 << 20);
    assert_eq!(profile["epochs"].as_array().unwrap().len(), epochs.len());
    assert!(out.stdout.contains("plugin early_stopping"), "{}", out.stdout);

    // A monitored metric that does not exist stops the run before the first epoch.
    write_config(dir.path(), "c.toml", &format!("{}[plugins.early_stopping]\nmonitor = \"val/acc\"\n", base()));
    let out = bz(dir.path(), &["train", "c.toml", "--plugin-dir", "plugins", "--run-name", "x"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("plugins.early_stopping.monitor = \"val/acc\" is not a metric of this run"), "{}", out.stderr);
}

/// Builds a crate with cargo into a target dir of its own (the outer `cargo test` holds the workspace's).
fn cargo_build(manifest_dir: &Path) -> Output {
    let target = repo_root().join("target/plugin-scaffold");
    let child = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet"])
        .current_dir(manifest_dir)
        .env("CARGO_TARGET_DIR", &target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_limited(child, std::time::Duration::from_secs(600))
}

#[test]
fn scaffold_builds_and_runs_and_another_api_major_is_refused() {
    let dir = setup("");
    let out = bz(dir.path(), &["plugins", "new", "watcher", "--path", "watcher"]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The workspace's lock file pins the scaffold's dependencies too, so the test never picks up a newer release.
    std::fs::copy(repo_root().join("Cargo.lock"), dir.path().join("watcher/Cargo.lock")).unwrap();
    let built = cargo_build(&dir.path().join("watcher"));
    assert_eq!(built.code, 0, "the scaffold must build as is: {}", built.all());
    let so = repo_root().join("target/plugin-scaffold/debug/libbz_watcher.so");
    std::fs::copy(&so, dir.path().join("plugins/watcher.so")).unwrap();
    write_config(dir.path(), "c.toml", &format!("{}[plugins.watcher]\ntarget = 100.0\n", base()));
    let out = train(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("info: bz_watcher: epoch 1: val/loss"), "{}", out.stderr);
    assert_eq!(epoch_lines(&dir.path().join("runs/r")).len(), 1, "the scaffold stops below its target");

    // The same plugin built against a bz-plugin-api 2.0.0 (a copy of this one with the major bumped).
    let api2 = dir.path().join("api2");
    copy_dir(&repo_root().join("bz-plugin-api"), &api2);
    let manifest = std::fs::read_to_string(api2.join("Cargo.toml")).unwrap();
    let manifest = manifest
        .replace(&format!("version = \"{}\"", plugin_api_version()), "version = \"2.0.0\"")
        .replace("edition.workspace = true", "edition = \"2021\"")
        .replace("license.workspace = true", "")
        .replace("serde_json.workspace = true", "serde_json = \"1\"");
    std::fs::write(api2.join("Cargo.toml"), format!("{manifest}\n[workspace]\n")).unwrap();
    let plugin_manifest = dir.path().join("watcher/Cargo.toml");
    let text = std::fs::read_to_string(&plugin_manifest).unwrap();
    let start = text.find("bz-plugin-api = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}bz-plugin-api = {{ path = {:?} }}{}", &text[..start], api2.display().to_string(), &text[end..]);
    std::fs::write(&plugin_manifest, text).unwrap();
    let built = cargo_build(&dir.path().join("watcher"));
    assert_eq!(built.code, 0, "{}", built.all());
    std::fs::copy(&so, dir.path().join("plugins/watcher.so")).unwrap();
    let out = bz(dir.path(), &["train", "c.toml", "--plugin-dir", "plugins", "--run-name", "v2"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stderr.contains("was built for bz-plugin-api 2.0.0; this bz speaks 1.x"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
