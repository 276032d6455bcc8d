//! Helpers for the end-to-end tests: run the real `bz` binary in a scratch directory, read what it wrote,
//! and ask the real tools (PyTorch, scikit-learn in the test venv) about it.

pub mod fixtures;
pub mod http;
pub mod install_env;
pub mod postgres;
pub mod tune_env;
pub mod wandb_server;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `bz` binary of the same profile as this test binary (`target/<profile>/bz`).
pub fn bz_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bz = profile_dir.join("bz");
    assert!(bz.exists(), "{} does not exist: build it first (scripts/test does: cargo build --workspace)", bz.display());
    bz
}

/// What a finished command printed and returned.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `bz args…` in `cwd`, killing it after `limit` (tests never hang).
pub fn bz_in(cwd: &Path, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(bz_path())
        .args(args)
        .current_dir(cwd)
        // Tests run two at a time on small machines; OpenMP threads of two processes spinning on the same cores
        // slow both down many times over. Configs that test determinism set run.threads themselves.
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bz");
    wait_limited(child, limit)
}

/// Runs `bz args…` in `cwd` with extra environment variables (the plugin commands' HOME, BZ_PLUGIN_DIR, …);
/// the index variables of the calling environment never leak in.
pub fn bz_env(cwd: &Path, args: &[&str], env: &[(&str, &Path)], limit: Duration) -> Output {
    wait_limited(bz_command(cwd, args, env).spawn().expect("spawn bz"), limit)
}

/// The `bz` command `bz_env` runs, to spawn and watch it.
pub fn bz_command(cwd: &Path, args: &[&str], env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(bz_path());
    c.args(args).current_dir(cwd).env("OMP_NUM_THREADS", "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for k in ["BZ_PLUGIN_INDEX", "BZ_PLUGIN_PUBKEY", "BZ_CONFIG", "BZ_PLUGIN_DIR"] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Removes what `cargo test` sets for the test process (CARGO_MANIFEST_DIR, CARGO_PKG_*…) from a child that runs
/// cargo: some build scripts (ring's) watch those variables, so a cargo build inside a test would rebuild them,
/// and relink target/debug/bz under the tests that are running it.
pub fn without_test_env(c: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" {
            c.env_remove(k);
        }
    }
    c
}

/// Waits until `path` exists, failing the test with `what` after `limit` (tests never hang).
pub fn wait_for_file(path: &Path, limit: Duration, what: &str) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{what} ({} never appeared)", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs bz with a 5-minute limit.
pub fn bz(cwd: &Path, args: &[&str]) -> Output {
    bz_in(cwd, args, Duration::from_secs(300))
}

pub fn wait_limited(mut child: std::process::Child, limit: Duration) -> Output {
    // Readers on threads, so a chatty child never blocks on a full pipe while we poll.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command ran longer than {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { code: status.code().unwrap_or(-1), stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() }
}

/// The test venv's Python (made by `scripts/setup --python`); a missing venv fails the test, never skips it.
pub fn python() -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    assert!(py.exists(), "{} is missing: run scripts/setup --python first", py.display());
    py
}

/// Runs a Python script in the test venv and returns its stdout; fails the test on a non-zero exit.
pub fn py(cwd: &Path, script: &str) -> String {
    // A file, not `-c`: torch.jit.script reads the source of the classes it compiles.
    let file = tempfile::Builder::new().suffix(".py").tempfile_in(cwd).expect("temp script");
    std::fs::write(file.path(), script).expect("write script");
    run_python(cwd, file.path(), &[], Duration::from_secs(300))
}

fn run_python(cwd: &Path, script: &Path, args: &[&str], limit: Duration) -> String {
    let child = Command::new(python())
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let out = wait_limited(child, limit);
    assert_eq!(out.code, 0, "{} {args:?} failed:\n{}", script.display(), out.all());
    out.stdout
}

/// Runs one of the checkers in `tests/py/` with arguments in the test venv; fails the test on a non-zero exit.
pub fn py_script(cwd: &Path, script: &str, args: &[&str], limit: Duration) -> String {
    run_python(cwd, &repo_root().join("tests/py").join(script), args, limit)
}

/// A regression run whose learning rate is multiplied by 1e12 after epoch 2, so that epoch 3's loss is not
/// finite (exit 3): the failure the trainer and the tracking plugins must record. Plugin sections go after it.
pub const DIVERGING: &str = r#"
[data]
source = "synthetic"
task = "regression"
samples = 500
num_features = 8
[model]
layers = [{ type = "linear", out = 16 }, { type = "relu" }, { type = "linear", out = 1 }]
[train]
epochs = 6
[optimizer]
name = "sgd"
lr = 0.01
[scheduler]
name = "step"
step_size = 2
gamma = 1e12
"#;

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// The complete lines of a JSONL file another process is still appending to: a last
/// line without its newline is being written and is left for a later read.
pub fn read_jsonl_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let done = text.rfind('\n').map_or("", |end| &text[..end]);
    done.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}

/// The `test` line of a run's metrics.jsonl (a run with a test split writes one after training).
pub fn test_line(run: &Path) -> Value {
    read_jsonl(&run.join("metrics.jsonl"))
        .into_iter()
        .find(|v| v["event"] == "test")
        .unwrap_or_else(|| panic!("no test line in {}/metrics.jsonl", run.display()))
}

/// The `epoch` lines of a run's metrics.jsonl.
pub fn epoch_lines(run: &Path) -> Vec<Value> {
    read_jsonl(&run.join("metrics.jsonl")).into_iter().filter(|v| v["event"] == "epoch").collect()
}

/// Every tensor of a safetensors file: name -> (dtype, shape, raw bytes). Order-independent, for exact equality.
pub fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors().into_iter().map(|(name, view)| (name, (format!("{:?}", view.dtype()), view.shape().to_vec(), view.data().to_vec()))).collect()
}

/// Metric values of an epoch line without the timing fields, for comparing runs.
pub fn without_timings(line: &Value) -> Value {
    let mut v = line.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["epoch_time_s", "train_time_s", "samples_per_s"] {
            o.remove(k);
        }
    }
    v
}

/// The version of bz-plugin-api in this checkout (what plugins built here record as their `plugin_api`).
pub fn plugin_api_version() -> String {
    let text = std::fs::read_to_string(repo_root().join("bz-plugin-api/Cargo.toml")).expect("bz-plugin-api/Cargo.toml");
    let line = text.lines().find(|l| l.starts_with("version = ")).expect("a version line");
    line.trim_start_matches("version = ").trim_matches('"').to_string()
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}
