//! The README's promise, verbatim, on a fresh HOME: `scripts/quickstart`, then `bz plugins install optuna`,
//! `bz plugins install tensorboard wandb` and `bz tune examples/digits-tune.toml` (4 trials here), with every
//! signature checked. The quick start builds the three plugins in release, packs and signs them with a key it makes
//! for this machine (here: this HOME) and registers that index; its second run must change nothing.
//! With `BZ_PROFILE=debug` the script uses the dev-profile build `scripts/test` has just made instead of building
//! everything again in release (which doubled this test's time in CI); everything else is the README's commands.

use bz_e2e::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The caches of the real machine (libtorch, cargo, rustup), so a fresh HOME does not download them again.
fn real(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(fallback))
}

fn shell(cwd: &Path, home: &Path, bin: &Path, line: &str, limit: Duration) -> Output {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("bash");
    without_test_env(&mut c);
    c.args(["-c", line]).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for k in ["BZ_PLUGIN_INDEX", "BZ_PLUGIN_PUBKEY", "BZ_CONFIG", "BZ_PLUGIN_DIR", "BZ_CHANNEL_DIR"] {
        c.env_remove(k);
    }
    c.env("HOME", home)
        .env("PATH", path)
        .env("BZ_BIN_DIR", bin)
        .env("BZ_CACHE", real("BZ_CACHE", ".cache/bz"))
        .env("CARGO_HOME", real("CARGO_HOME", ".cargo"))
        .env("RUSTUP_HOME", real("RUSTUP_HOME", ".rustup"))
        .env("BZ_PROFILE", "debug")
        .env("OMP_NUM_THREADS", "1");
    wait_limited(c.spawn().expect("spawn bash"), limit)
}

#[test]
fn quick_start_then_plugin_installs_and_a_tune_work_verbatim() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, bin, work) = (tmp.path().join("home"), tmp.path().join("bin"), tmp.path().join("work"));
    for d in [&home, &bin, &work.join("examples")] {
        std::fs::create_dir_all(d).unwrap();
    }
    let root = repo_root();
    let quick = format!("{}/scripts/quickstart --epochs 1", root.display());
    let out = shell(&root, &home, &bin, &quick, Duration::from_secs(1800));
    assert_eq!(out.code, 0, "{}", out.all());
    let all = out.all();
    let said: Vec<&str> = all.lines().filter(|l| l.starts_with("quickstart:")).map(str::trim).collect();
    assert_eq!(said.len(), 1, "one line says what the quick start did:\n{}", out.all());
    let channel = home.join(".bz/channel");
    let index = std::fs::read(channel.join("dist/index.json")).expect("the local channel's index");
    assert!(channel.join("dist/index.json.minisig").is_file());

    std::fs::copy(root.join("examples/digits-tune.toml"), work.join("examples/digits-tune.toml")).unwrap();
    let limit = Duration::from_secs(300);
    for line in ["bz plugins install optuna", "bz plugins install tensorboard wandb"] {
        let out = shell(&work, &home, &bin, line, limit);
        assert_eq!(out.code, 0, "{line}:\n{}", out.all());
        assert!(out.stdout.contains("signature verified"), "{line}:\n{}", out.stdout);
    }
    let out = shell(&work, &home, &bin, "bz tune examples/digits-tune.toml --n-trials 4", limit);
    assert_eq!(out.code, 0, "bz tune:\n{}", out.all());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(work.join("runs/digits-tune/summary.json")).expect("summary.json")).unwrap();
    assert!(summary["best"]["value"].is_number(), "{summary}");
    assert!(work.join("runs/digits-tune/study.db").is_file());

    // A plugin author's loop: a crate directory is built in release and installed as a local build.
    let out = shell(&root, &home, &bin, "bz plugins install ./tests/fixtures/plugin", limit);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("installed fixture 0.3.0 · local build"), "{}", out.stdout);
    let out = shell(&root, &home, &bin, "bz plugins list", limit);
    assert!(out.stdout.lines().any(|l| l.starts_with("fixture") && l.contains("ok") && l.contains("local build of")), "{}", out.stdout);

    // The cached second run repacks identical bytes and leaves the signed index as it was.
    let out = shell(&root, &home, &bin, &quick, Duration::from_secs(600));
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(std::fs::read(channel.join("dist/index.json")).unwrap(), index, "a second quick start re-signed an unchanged index");
    let out = shell(&work, &home, &bin, "bz plugins install optuna", limit);
    assert!(out.stdout.contains("optuna") && out.stdout.contains("already installed"), "{}", out.all());
}
