//! The wandb plugin against the real wandb (0.31.0 in the test venv): `wandb leet inspect` reads every record we
//! write with nothing on stderr, values equal to metrics.jsonl; the real `wandb sync` uploads our offline run to
//! a loopback stand-in backend; and our online mode sends that backend what the real client sends, including
//! when the server fails twice before recovering.

use bz_e2e::fixtures::*;
use bz_e2e::wandb_server::WandbServer;
use bz_e2e::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn config() -> String {
    Digits { batch_size: Some(256), log_every_n_steps: Some(2), ..Digits::default() }.toml() + CONFIG_PLUGIN
}

const CONFIG_PLUGIN: &str = r#"[plugins.wandb]
project = "bz-test"
tags = ["digits", "linear"]
notes = "from the tests"
group = "g1"
job_type = "train"
log_every_n_steps = 2
"#;

const KEY: &str = "local0000000000000000000000000000000000000";

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let so = bz_path().parent().unwrap().join("libbz_wandb.so");
    assert!(so.exists(), "{} missing: cargo build --workspace builds it", so.display());
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(&so, dir.path().join("plugins/wandb.so")).unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    dir
}

/// bz with a clean W&B environment (no key from the machine, HOME in the scratch dir) plus `env`.
fn train(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bz_path());
    cmd.args(["train", "c.toml", "--plugin-dir", "plugins"]).args(args).current_dir(dir).env("OMP_NUM_THREADS", "1").env("HOME", dir.join("home"));
    for k in ["WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "WANDB_RUN_GROUP", "NETRC"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_limited(cmd.spawn().unwrap(), Duration::from_secs(300))
}

fn wandb(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let exe = python().with_file_name("wandb");
    let mut cmd = Command::new(exe);
    cmd.args(args).current_dir(dir).env("HOME", dir.join("home")).env("WANDB_SILENT", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    wait_limited(cmd.spawn().unwrap(), Duration::from_secs(300))
}

fn run_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default();
    v.sort();
    v
}

/// `wandb leet inspect --json`: every record, and nothing on stderr (it reports corrupt chunks there, rc 0).
fn inspect(dir: &Path, run: &Path) -> Vec<Value> {
    let out = wandb(dir, &["leet", "inspect", "--json", run.to_str().unwrap()], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.trim().is_empty(), "leet inspect complained: {}", out.stderr);
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn inspect_summary(dir: &Path, run: &Path) -> Value {
    let out = wandb(dir, &["leet", "inspect", "--summary", "--json", run.to_str().unwrap()], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.trim().is_empty(), "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

#[test]
fn offline_run_reads_back_through_leet_inspect_with_metrics_jsonl_values() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    let out = train(dir.path(), &["--run-name", "digits-a"], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("wandb sync"), "the user is told how to upload: {}", out.stderr);
    let run_root = dir.path().join("runs/digits-a");
    let runs = run_dirs(&run_root.join("wandb"));
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("offline-run-2") && name.len() == "offline-run-20261125_053138-5qbc4r5m".len(), "{name}");
    for f in ["config.yaml", "wandb-summary.json", "wandb-metadata.json", "output.log"] {
        assert!(run.join("files").join(f).is_file(), "files/{f}");
    }

    let records = inspect(dir.path(), run);
    let nums: Vec<i64> = records.iter().map(|r| r["num"].as_i64().unwrap()).collect();
    assert_eq!(nums, (1..=records.len() as i64).collect::<Vec<_>>(), "record numbers are contiguous");
    let kinds = |t: &str| records.iter().filter(|r| r["type"] == t).collect::<Vec<_>>();
    let run_rec = &kinds("run")[0]["run"];
    assert_eq!(run_rec["display_name"], "digits-a", "the bz run name, never a constant");
    assert_eq!(run_rec["project"], "bz-test");
    assert_eq!(run_rec["tags"], serde_json::json!(["digits", "linear"]));
    assert_eq!(run_rec["notes"], "from the tests");
    assert_eq!(run_rec["run_group"], "g1");
    assert_eq!(run_rec["job_type"], "train");
    assert_eq!(run_rec["config"]["update"]["optimizer"]["lr"], 0.01);
    assert_eq!(run_rec["config"]["update"]["train"]["batch_size"], 256);

    // History: batch losses every 2 steps and one row per epoch, `_step` strictly increasing.
    let history: Vec<&Value> = kinds("history").into_iter().map(|h| &h["history"]).collect();
    let steps: Vec<u64> = history.iter().map(|h| h["item"]["_step"].as_u64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps, vec![2, 4, 6, 8, 10, 12, 14, 16, 18]);
    let epochs = epoch_lines(&run_root);
    for line in &epochs {
        let step = line["step"].as_u64().unwrap();
        let row = &history.iter().find(|h| h["item"]["_step"] == step).unwrap()["item"];
        for key in ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"] {
            assert!(close(row[key].as_f64().unwrap(), line[key].as_f64().unwrap()), "{key} at {step}: {} vs {}", row[key], line[key]);
        }
        assert_eq!(row["epoch"], line["epoch"]);
    }
    let step_lines: Vec<Value> = read_jsonl(&run_root.join("metrics.jsonl")).into_iter().filter(|v| v["event"] == "step").collect();
    for s in &step_lines {
        let row = &history.iter().find(|h| h["item"]["_step"] == s["step"]).unwrap()["item"];
        assert!(close(row["train/batch_loss"].as_f64().unwrap(), s["train/loss"].as_f64().unwrap()));
    }
    let exit = &kinds("exit")[0]["exit"];
    assert!(exit["exit_code"].as_i64().unwrap_or(0) == 0, "{exit}");

    let summary = inspect_summary(dir.path(), run);
    assert_eq!(summary["state"], "finished");
    assert_eq!(summary["name"], "digits-a");
    assert_eq!(summary["step"], 18);
    let last = epochs.last().unwrap();
    assert!(close(summary["summary"]["val/accuracy"].as_f64().unwrap(), last["val/accuracy"].as_f64().unwrap()));
}

#[test]
fn the_test_splits_metrics_are_in_the_run_summary() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &(csv_with_test_split(dir.path()) + "[plugins.wandb]\nproject = \"bz-test\"\n"));
    let out = train(dir.path(), &["--run-name", "t"], &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let run_root = dir.path().join("runs/t");
    let line = test_line(&run_root);
    let runs = run_dirs(&run_root.join("wandb"));
    let summary = inspect_summary(dir.path(), &runs[0]);
    assert_eq!(summary["state"], "finished");
    for key in ["test/loss", "test/accuracy", "test/f1_macro"] {
        let want = line[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {line}"));
        let got = summary["summary"][key].as_f64().unwrap_or_else(|| panic!("{key} not in the summary: {summary}"));
        assert!(close(want, got), "{key}: W&B {got}, metrics.jsonl {want}");
    }
}

#[test]
fn a_failed_run_is_recorded_as_failed_with_its_exit_code() {
    let dir = setup();
    let cfg = format!("{DIVERGING}[plugins.wandb]\n");
    write_config(dir.path(), "c.toml", &cfg);
    let out = train(dir.path(), &["--run-name", "nan"], &[]);
    assert_eq!(out.code, 3, "{}", out.all());
    let run = run_dirs(&dir.path().join("runs/nan/wandb")).remove(0);
    let records = inspect(dir.path(), &run);
    let exit = records.iter().find(|r| r["type"] == "exit").expect("an exit record");
    assert_eq!(exit["exit"]["exit_code"], 3);
    let summary = inspect_summary(dir.path(), &run);
    assert_eq!(summary["exit_code"], 3);
    assert_ne!(summary["state"], "finished", "{summary}");
    let epoch_rows = records.iter().filter(|r| r["type"] == "history" && r["history"]["item"]["epoch"].is_number()).count();
    assert_eq!(epoch_rows, 2, "the two epochs before the failure");
}

#[test]
fn the_real_wandb_sync_uploads_our_offline_run() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    assert_eq!(train(dir.path(), &["--run-name", "to-sync", "-q"], &[]).code, 0);
    let run = run_dirs(&dir.path().join("runs/to-sync/wandb")).remove(0);
    let server = WandbServer::start();
    let url = server.url();
    let out =
        wandb(dir.path(), &["sync", "--include-synced", run.to_str().unwrap()], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY), ("WANDB_ENTITY", "bz")]);
    assert_eq!(out.code, 0, "{}", out.all());
    let reqs = server.requests();
    let ops: Vec<String> = reqs.iter().filter_map(|r| r.operation()).collect();
    assert!(ops.iter().any(|o| o == "UpsertBucket"), "{ops:?}");
    let upsert = reqs.iter().find(|r| r.operation().as_deref() == Some("UpsertBucket")).unwrap().json();
    assert_eq!(upsert["variables"]["displayName"], "to-sync");
    assert_eq!(upsert["variables"]["project"], "bz-test");
    // The uploaded history is ours, line for line.
    let uploaded = server.history();
    let records = inspect(dir.path(), &run);
    let ours: Vec<&Value> = records.iter().filter(|r| r["type"] == "history").map(|r| &r["history"]["item"]).collect();
    assert_eq!(uploaded.len(), ours.len(), "{uploaded:?}");
    for (u, o) in uploaded.iter().zip(&ours) {
        assert_eq!(u["_step"], o["_step"]);
        for (k, v) in o.as_object().unwrap() {
            if let Some(x) = v.as_f64() {
                assert!(close(u[k].as_f64().unwrap_or(f64::NAN), x), "{k}: uploaded {} vs ours {x}", u[k]);
            }
        }
    }
    let last = server.file_streams().last().cloned().unwrap();
    assert_eq!(last["complete"], true);
    assert_eq!(last["exitcode"], 0);
}

/// What a backend saw of one run, reduced to what the client decides: operations, upload names, the shape of
/// the stream and the history values (timing fields left out).
struct Seen {
    ops: Vec<String>,
    upsert_vars: Value,
    config: Value,
    stream_files: std::collections::BTreeSet<String>,
    last_stream_keys: std::collections::BTreeSet<String>,
    uploaded: std::collections::BTreeSet<String>,
    puts: std::collections::BTreeSet<String>,
    history: Vec<Value>,
    exitcode: Value,
    auth: std::collections::BTreeSet<String>,
}

/// JSON with every number as a float: `0` (Go's encoding) and `0.0` (ours) are the same value.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

fn seen(server: &WandbServer) -> Seen {
    let reqs = server.requests();
    let upsert = reqs.iter().find(|r| r.operation().as_deref() == Some("UpsertBucket")).expect("an UpsertBucket").json();
    let streams = server.file_streams();
    let last = streams.last().cloned().expect("a file_stream");
    let history: Vec<Value> = server
        .history()
        .into_iter()
        .map(|mut h| {
            if let Some(o) = h.as_object_mut() {
                o.remove("_runtime");
                o.remove("_timestamp");
                o.remove("time/epoch_s");
                o.remove("time/samples_per_s");
            }
            h
        })
        .collect();
    Seen {
        ops: reqs.iter().filter_map(|r| r.operation()).collect(),
        config: serde_json::from_str(upsert["variables"]["config"].as_str().unwrap_or("{}")).unwrap_or(Value::Null),
        upsert_vars: upsert["variables"].clone(),
        stream_files: streams.iter().flat_map(|s| s["files"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()).collect(),
        last_stream_keys: last.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default(),
        uploaded: last["uploaded"].as_array().map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect()).unwrap_or_default(),
        puts: reqs.iter().filter(|r| r.method == "PUT").map(|r| r.path.rsplit('/').next().unwrap_or("").to_string()).collect(),
        history: history.iter().map(numbers_as_f64).collect(),
        exitcode: last["exitcode"].clone(),
        auth: reqs.iter().filter(|r| r.method == "POST" && !r.path.starts_with("/sdk")).map(|r| r.authorization.clone()).collect(),
    }
}

#[test]
fn online_mode_sends_what_the_real_client_sends() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    // The real client: `wandb sync` of an offline run.
    assert_eq!(train(dir.path(), &["--run-name", "same", "-q"], &[]).code, 0);
    let run = run_dirs(&dir.path().join("runs/same/wandb")).remove(0);
    let real_server = WandbServer::start();
    let real_url = real_server.url();
    let out = wandb(dir.path(), &["sync", "--include-synced", run.to_str().unwrap()], &[("WANDB_BASE_URL", &real_url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let real = seen(&real_server);

    // bz online, the same run again (same seed and threads: the same numbers).
    let ours_server = WandbServer::start();
    let ours_url = ours_server.url();
    let out = train(dir.path(), &["--run-name", "same-online"], &[("WANDB_BASE_URL", &ours_url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("synced http://127.0.0.1"), "{}", out.stderr);
    let ours = seen(&ours_server);

    for op in ["UpsertBucket", "CreateRunFiles"] {
        assert!(real.ops.iter().any(|o| o == op) && ours.ops.iter().any(|o| o == op), "{op}: real {:?}, ours {:?}", real.ops, ours.ops);
    }
    for key in ["name", "project", "displayName", "config", "tags", "notes", "groupName", "jobType", "host"] {
        assert!(!real.upsert_vars[key].is_null() && !ours.upsert_vars[key].is_null(), "{key}: real {}, ours {}", real.upsert_vars[key], ours.upsert_vars[key]);
    }
    assert_eq!(ours.upsert_vars["displayName"], "same-online");
    assert_eq!(ours.upsert_vars["tags"], real.upsert_vars["tags"]);
    assert_eq!(ours.upsert_vars["groupName"], real.upsert_vars["groupName"]);
    // The config as `{"key": {"value": …}}`, the same values.
    assert_eq!(numbers_as_f64(&ours.config["optimizer"]["value"]), numbers_as_f64(&real.config["optimizer"]["value"]));
    assert_eq!(numbers_as_f64(&ours.config["model"]["value"]), numbers_as_f64(&real.config["model"]["value"]));
    // The stream: the same files, the same closing fields, the same uploads, the same history.
    assert_eq!(ours.stream_files, real.stream_files);
    assert_eq!(ours.last_stream_keys, real.last_stream_keys);
    assert_eq!(ours.uploaded, real.uploaded);
    assert_eq!(ours.puts, real.puts);
    assert_eq!(ours.exitcode, 0);
    assert_eq!(real.exitcode, 0);
    assert_eq!(ours.history, real.history);
    assert_eq!(ours.auth, real.auth, "HTTP Basic api:KEY on both");
    // And the run directory holds the whole transaction log, readable as ever.
    let online_run = run_dirs(&dir.path().join("runs/same-online/wandb")).remove(0);
    assert!(online_run.file_name().unwrap().to_string_lossy().starts_with("run-"));
    assert_eq!(inspect_summary(dir.path(), &online_run)["state"], "finished");
}

#[test]
fn online_mode_rides_out_a_server_that_fails_twice() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config());
    let server = WandbServer::start();
    server.fail_file_stream(2);
    let url = server.url();
    let out = train(dir.path(), &["--run-name", "flaky"], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("synced"), "{}", out.stderr);
    let failed = server.requests().iter().filter(|r| r.path.ends_with("/file_stream") && r.status == 500).count();
    assert_eq!(failed, 2);
    let history = server.history();
    assert_eq!(history.len(), 9, "every row once: {history:?}");
    assert!(history.iter().all(|h| !h.is_null()), "no gap: {history:?}");
    let steps: Vec<u64> = history.iter().map(|h| h["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![2, 4, 6, 8, 10, 12, 14, 16, 18]);
    assert_eq!(server.file_streams().last().unwrap()["complete"], true);
}

#[test]
fn online_mode_without_a_server_trains_on_and_leaves_the_run_for_wandb_sync() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &config().replace("[plugins.wandb]", "[plugins.wandb]\nretries = 1"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}");
    let out = train(dir.path(), &["--run-name", "offline-after-all"], &[("WANDB_BASE_URL", &dead), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "training never stops for the network: {}", out.all());
    assert!(out.stderr.contains("upload to W&B failed") && out.stderr.contains("wandb sync"), "{}", out.stderr);
    let runs = run_dirs(&dir.path().join("runs/offline-after-all/wandb"));
    assert_eq!(runs.len(), 1);
    assert!(runs[0].file_name().unwrap().to_string_lossy().starts_with("offline-run-"), "{runs:?}");
    // What the message says works.
    let server = WandbServer::start();
    let url = server.url();
    let out = wandb(dir.path(), &["sync", runs[0].to_str().unwrap()], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(server.history().len(), 9);
}

/// Resume: `bz train --epochs 2`, `--resume --epochs 3`, then the checkpoints put back to where epoch 2 left them
/// (the second process died after logging epoch 3 but before its checkpoint landed: a crashed tail), then
/// `--resume` to epoch 4, which replays epoch 3. Returns the run directory's `wandb/` folder and the steps
/// a straight 4-epoch run logs, with its values per step from metrics.jsonl.
fn train_with_a_crashed_tail(dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    write_config(dir, "c.toml", &(Digits { epochs: 4, batch_size: Some(256), log_every_n_steps: Some(2), ..Digits::default() }.toml() + CONFIG_PLUGIN));
    let run = dir.join("runs/r");
    let ok = |out: Output| assert_eq!(out.code, 0, "{}", out.all());
    ok(train(dir, &["--run-name", "r", "--epochs", "2", "-q"], env));
    let id = std::fs::read_to_string(run.join("wandb-run-id")).expect("the run id is kept in the run directory");
    let saved = dir.join("checkpoints-after-2");
    assert!(Command::new("cp").arg("-a").arg(run.join("checkpoints")).arg(&saved).status().unwrap().success());
    ok(train(dir, &["--run-name", "r", "--resume", "--epochs", "3", "-q"], env));
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    assert!(Command::new("cp").arg("-a").arg(&saved).arg(run.join("checkpoints")).status().unwrap().success());
    ok(train(dir, &["--run-name", "r", "--resume", "-q"], env));
    assert_eq!(std::fs::read_to_string(run.join("wandb-run-id")).unwrap(), id, "one W&B run id across the three processes");
    run.join("wandb")
}

/// Every step of a straight 4-epoch run and its values (batch loss, or the epoch's metrics), from metrics.jsonl.
fn straight_run_values(dir: &Path) -> Vec<(u64, String, f64)> {
    assert_eq!(train(dir, &["--run-name", "straight", "-q"], &[("WANDB_MODE", "disabled")]).code, 0);
    let mut want = Vec::new();
    for line in read_jsonl(&dir.join("runs/straight/metrics.jsonl")) {
        let step = line["step"].as_u64().unwrap_or(0);
        match line["event"].as_str() {
            Some("step") => want.push((step, "train/batch_loss".to_string(), line["train/loss"].as_f64().unwrap())),
            Some("epoch") => want.extend(["train/loss", "val/loss", "val/accuracy"].map(|k| (step, k.to_string(), line[k].as_f64().unwrap()))),
            _ => {}
        }
    }
    want
}

/// The history a server received: one row per step 2, 4, … 24, each once, with the straight run's values.
fn assert_history_continues_once(history: &[Value], straight: &[(u64, String, f64)]) {
    assert!(history.iter().all(|h| !h.is_null()), "no line overwritten or missing: {history:?}");
    let steps: Vec<u64> = history.iter().map(|h| h["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=12).map(|i| 2 * i).collect::<Vec<u64>>(), "each step once, in order");
    for (step, key, want) in straight {
        let row = history.iter().find(|h| h["_step"] == *step).unwrap_or_else(|| panic!("step {step} missing"));
        let got = row[key.as_str()].as_f64().unwrap_or_else(|| panic!("{key} missing at step {step}: {row}"));
        assert!(close(got, *want), "{key} at step {step}: W&B {got}, straight run {want}");
    }
}

#[test]
fn a_resumed_run_continues_the_same_wandb_run_offline_through_wandb_sync() {
    let dir = setup();
    let root = train_with_a_crashed_tail(dir.path(), &[]);
    let straight = straight_run_values(dir.path());
    let runs = run_dirs(&root);
    assert_eq!(runs.len(), 3, "{runs:?}");
    let id = std::fs::read_to_string(dir.path().join("runs/r/wandb-run-id")).unwrap().trim().to_string();
    assert!(runs.iter().all(|r| r.file_name().unwrap().to_string_lossy().ends_with(&format!("-{id}"))), "{runs:?}");
    // The third process dropped its replay of epoch 3 (steps 14-18, already in the second's log).
    let third = inspect(dir.path(), &runs[2]);
    let run_rec = &third.iter().find(|r| r["type"] == "run").unwrap()["run"];
    assert_eq!(run_rec["resume"], true, "{run_rec}");
    let steps: Vec<u64> = third.iter().filter(|r| r["type"] == "history").map(|r| r["history"]["item"]["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![20, 22, 24]);

    // The real wandb sync of the three directories: one run, each step once.
    let server = WandbServer::start();
    let url = server.url();
    let out =
        wandb(dir.path(), &["sync", "--include-synced", root.to_str().unwrap()], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY), ("WANDB_ENTITY", "bz")]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(server.run_names(), vec![id.clone()]);
    let resumed = server.requests().iter().filter(|r| r.operation().as_deref() == Some("RunResumeStatus")).count();
    assert_eq!(resumed, 2, "wandb sync asks where the run stands for the two resumed directories");
    assert_history_continues_once(&server.history(), &straight);
    assert_eq!(server.file_streams().last().unwrap()["exitcode"], 0);
}

#[test]
fn a_resumed_run_continues_the_same_wandb_run_online() {
    let dir = setup();
    let server = WandbServer::start();
    let url = server.url();
    let env = [("WANDB_BASE_URL", url.as_str()), ("WANDB_API_KEY", KEY)];
    train_with_a_crashed_tail(dir.path(), &env);
    let straight = straight_run_values(dir.path());
    let id = std::fs::read_to_string(dir.path().join("runs/r/wandb-run-id")).unwrap().trim().to_string();
    assert_eq!(server.run_names(), vec![id]);
    assert_history_continues_once(&server.history(), &straight);
    let streams = server.file_streams();
    let firsts: Vec<u64> = streams.iter().filter_map(|s| s["files"]["wandb-history.jsonl"]["offset"].as_u64()).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "offsets never go back: {firsts:?}");
}

#[test]
fn resume_must_without_a_run_is_one_clear_error() {
    let dir = setup();
    write_config(dir.path(), "c.toml", &(config() + "on_error = \"abort\"\n"));
    let out = train(dir.path(), &["--run-name", "m", "-q"], &[("WANDB_RESUME", "must")]);
    assert_ne!(out.code, 0, "{}", out.all());
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains("must")).collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("no W&B run") && lines[0].contains("resume = \"allow\""), "{}", lines[0]);
    let out = train(dir.path(), &["--run-name", "m2", "-q"], &[("WANDB_RESUME", "sometimes")]);
    assert_eq!(out.code, 2, "a config-class error: {}", out.all());
    assert!(out.stderr.contains("WANDB_RESUME=\"sometimes\" is not one of allow, must, never, auto"), "{}", out.stderr);
}

/// The `wandb-events.jsonl` lines a server received, in offset order.
fn events(server: &WandbServer) -> Vec<Value> {
    let mut lines: Vec<Option<Value>> = Vec::new();
    for fs in server.file_streams() {
        let e = &fs["files"]["wandb-events.jsonl"];
        let (Some(offset), Some(content)) = (e["offset"].as_u64(), e["content"].as_array()) else { continue };
        for (i, line) in content.iter().enumerate() {
            let at = offset as usize + i;
            if lines.len() <= at {
                lines.resize(at + 1, None);
            }
            lines[at] = line.as_str().map(bz_e2e::wandb_server::parse_wandb_json);
        }
    }
    lines.into_iter().map(|l| l.unwrap_or(Value::Null)).collect()
}

fn assert_system_metrics(lines: &[Value]) {
    assert!(lines.len() >= 2, "{lines:?}");
    for l in lines {
        assert_eq!(l["_wandb"], true, "{l}");
        let cpu = l["system.cpu"].as_f64().unwrap_or_else(|| panic!("system.cpu missing: {l}"));
        assert!((0.0..=100.0).contains(&cpu), "{l}");
        let rss = l["system.proc.memory.rssMB"].as_f64().unwrap();
        assert!(rss > 10.0 && rss < 100_000.0, "bz with libtorch loaded: {l}");
        assert!(l["system.proc.cpu.threads"].as_f64().unwrap() >= 1.0, "{l}");
        assert!(l["_timestamp"].as_f64().unwrap() > 1.7e9 && l["_runtime"].as_f64().unwrap() >= 0.0, "{l}");
    }
    let times: Vec<f64> = lines.iter().map(|l| l["_timestamp"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[test]
fn system_metrics_reach_the_server_through_wandb_sync_and_online() {
    let dir = setup();
    // Long enough (about a second) for several samples however fast the machine.
    let cfg = Digits { epochs: 40, batch_size: Some(16), ..Digits::default() }.toml() + "[plugins.wandb]\nproject = \"bz-test\"\nstats_every_s = 0.1\n";
    write_config(dir.path(), "c.toml", &cfg);
    assert_eq!(train(dir.path(), &["--run-name", "s", "-q"], &[]).code, 0);
    let run = run_dirs(&dir.path().join("runs/s/wandb")).remove(0);
    let stats: Vec<Value> = inspect(dir.path(), &run).into_iter().filter(|r| r["type"] == "stats").collect();
    assert!(stats.len() >= 2, "a 40-epoch run sampled at 0.1 s: {} stats records", stats.len());
    let server = WandbServer::start();
    let url = server.url();
    let out = wandb(dir.path(), &["sync", "--include-synced", run.to_str().unwrap()], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let synced = events(&server);
    assert_eq!(synced.len(), stats.len(), "one events line per Stats record");
    assert_system_metrics(&synced);

    // Online: bz streams the same lines itself.
    let online = WandbServer::start();
    let url = online.url();
    let out = train(dir.path(), &["--run-name", "s-online", "-q"], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let ours = events(&online);
    assert_system_metrics(&ours);
    let keys = |l: &Value| l.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
    assert_eq!(keys(&ours[0]), keys(&synced[0]), "the same keys as wandb sync sends");
}

/// The requests a backend saw for artifacts: operation names in order, and the uploads (path, bytes).
fn artifact_calls(server: &WandbServer) -> (Vec<String>, Vec<(String, Vec<u8>)>) {
    let reqs = server.requests();
    let ops = reqs.iter().filter_map(|r| r.operation()).filter(|o| o.contains("Artifact")).collect();
    let puts = reqs.iter().filter(|r| r.method == "PUT" && r.path.starts_with("/upload/")).map(|r| (r.path.clone(), r.raw.clone())).collect();
    (ops, puts)
}

/// Keys of an object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

#[test]
fn log_model_checkpoints_are_artifacts_as_the_real_client_logs_them() {
    let dir = setup();
    let plugin = "[plugins.wandb]\nproject = \"bz-test\"\nlog_model = \"all\"\n";
    write_config(dir.path(), "c.toml", &(Digits { epochs: 3, batch_size: Some(256), ..Digits::default() }.toml() + plugin));
    assert_eq!(train(dir.path(), &["--run-name", "a", "-q"], &[]).code, 0);
    let run = run_dirs(&dir.path().join("runs/a/wandb")).remove(0);
    let records = inspect(dir.path(), &run);
    let ours: Vec<&Value> = records.iter().filter(|r| r["type"] == "artifact").map(|r| &r["artifact"]).collect();
    assert_eq!(ours.len(), 3, "one version per checkpoint with log_model = \"all\"");
    let epochs = epoch_lines(&dir.path().join("runs/a"));
    for (a, line) in ours.iter().zip(&epochs) {
        let meta: Value = serde_json::from_str(a["metadata"].as_str().unwrap()).unwrap();
        assert!(close(meta["val/loss"].as_f64().unwrap(), line["val/loss"].as_f64().unwrap()), "{meta} vs {line}");
        assert_eq!(meta["epoch"], line["epoch"]);
        assert!(a["aliases"].as_array().unwrap().contains(&Value::from("latest")), "{a}");
    }

    // The reference: the real client logging the same staged files, name, aliases and metadata offline.
    let first = ours[0];
    let files: Vec<String> = first["manifest"]["contents"].as_array().unwrap().iter().map(|c| c["local_path"].as_str().unwrap().to_string()).collect();
    let mut args: Vec<String> = vec![
        dir.path().join("ref").display().to_string(),
        first["name"].as_str().unwrap().into(),
        first["aliases"].to_string(),
        first["metadata"].as_str().unwrap().into(),
    ];
    args.extend(files.iter().cloned());
    std::fs::create_dir(dir.path().join("ref")).unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/py/wandb_log_artifact.py")).args(&args).current_dir(dir.path()).env("HOME", dir.path().join("home"));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = wait_limited(cmd.spawn().unwrap(), Duration::from_secs(300));
    assert_eq!(out.code, 0, "{}", out.all());
    let ref_run = PathBuf::from(out.stdout.trim());
    let reference = inspect(dir.path(), &ref_run).into_iter().find(|r| r["type"] == "artifact").expect("the reference artifact record")["artifact"].clone();
    // Record by record: the same fields, the same digests; ids and staging paths are per client.
    assert_eq!(keys(first), keys(&reference), "ours {first}\nreal {reference}");
    for k in ["type", "name", "digest", "digest_algorithm", "metadata", "finalize"] {
        assert_eq!(first[k], reference[k], "{k}");
    }
    // The client keeps aliases in a set: their order is arbitrary.
    let sorted = |v: &Value| {
        let mut a: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        a.sort();
        a
    };
    assert_eq!(sorted(&first["aliases"]), sorted(&reference["aliases"]));
    let strip = |m: &Value| {
        let mut m = m.clone();
        for c in m["contents"].as_array_mut().unwrap() {
            c.as_object_mut().unwrap().remove("local_path");
        }
        m
    };
    assert_eq!(strip(&first["manifest"]), strip(&reference["manifest"]));

    // wandb sync uploads both the same way.
    let sync = |run: &Path| {
        let server = WandbServer::start();
        let url = server.url();
        let out = wandb(
            dir.path(),
            &["sync", "--include-synced", run.to_str().unwrap()],
            &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY), ("WANDB_ENTITY", "bz")],
        );
        assert_eq!(out.code, 0, "{}", out.all());
        server
    };
    let real = sync(&ref_run);
    let (real_ops, _) = artifact_calls(&real);
    let seen: Vec<String> = real.requests().iter().map(|r| format!("{} {} {} {:?}", r.method, r.path, r.status, r.operation())).collect();
    assert_eq!(
        real_ops,
        ["CreateArtifact", "CreateArtifactManifest", "CreateArtifactFiles", "CreateArtifactManifest", "CommitArtifact"],
        "what wandb-core does per version: {seen:#?}"
    );
    let synced = sync(&run);
    let (ops, puts) = artifact_calls(&synced);
    assert_eq!(ops, real_ops.iter().cycle().take(3 * real_ops.len()).cloned().collect::<Vec<_>>());
    // Each upload is the staged checkpoint file, byte for byte (artifact ids count from 1 in creation order).
    let file_puts: Vec<&(String, Vec<u8>)> = puts.iter().filter(|(p, _)| p.starts_with("/upload/artifact/")).collect();
    assert_eq!(file_puts.len(), ours.iter().map(|a| a["manifest"]["contents"].as_array().unwrap().len()).sum::<usize>());
    for (path, bytes) in file_puts {
        let (version, name) = path.trim_start_matches("/upload/artifact/QXJ0aWZhY3Q6").split_once('/').unwrap();
        let a = ours[version.parse::<usize>().unwrap() - 1];
        let entry = a["manifest"]["contents"].as_array().unwrap().iter().find(|c| c["path"] == name).unwrap();
        assert_eq!(bytes, &std::fs::read(entry["local_path"].as_str().unwrap()).unwrap(), "{path}");
    }

    // Online: bz makes the same calls itself, with the same inputs and the same manifest.
    let online = WandbServer::start();
    let url = online.url();
    let out = train(dir.path(), &["--run-name", "a-online", "-q"], &[("WANDB_BASE_URL", &url), ("WANDB_API_KEY", KEY)]);
    assert_eq!(out.code, 0, "{}", out.all());
    let (online_ops, online_puts) = artifact_calls(&online);
    assert_eq!(online_ops, ops);
    let inputs = |s: &WandbServer| {
        s.requests().iter().filter(|r| r.operation().as_deref() == Some("CreateArtifact")).map(|r| keys(&r.json()["variables"]["input"])).collect::<Vec<_>>()
    };
    let (want, got) = (inputs(&synced), inputs(&online));
    let extra: Vec<&String> = got[0].iter().filter(|k| !want[0].contains(k)).collect();
    assert!(extra.is_empty(), "CreateArtifact input keys wandb sync does not send: {extra:?}; ours {:?}, sync {:?}", got[0], want[0]);
    let manifests = |puts: &[(String, Vec<u8>)]| {
        puts.iter().filter(|(p, _)| p.starts_with("/upload/manifest/")).map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()).collect::<Vec<_>>()
    };
    let (m_sync, m_online) = (manifests(&puts), manifests(&online_puts));
    assert_eq!(m_online.len(), 3);
    for (a, b) in m_sync.iter().zip(&m_online) {
        assert_eq!(keys(a), keys(b));
        assert_eq!(a["storagePolicyConfig"], b["storagePolicyConfig"]);
        for (name, entry) in a["contents"].as_object().unwrap() {
            assert_eq!(keys(entry), keys(&b["contents"][name]), "{name}");
        }
        // The same seed trains the same weights (trainer.json differs: it holds timings).
        assert_eq!(a["contents"]["model.safetensors"]["digest"], b["contents"]["model.safetensors"]["digest"]);
    }
}

#[test]
fn log_model_best_and_last_pick_their_checkpoints() {
    let dir = setup();
    for mode in ["best", "last"] {
        let plugin = format!("[plugins.wandb]\nproject = \"bz-test\"\nlog_model = \"{mode}\"\n");
        // A high learning rate makes val/loss go up and down, so not every epoch is a new best.
        let cfg = Digits { epochs: 5, batch_size: Some(64), lr: Some(0.5), ..Digits::default() }.toml() + &plugin;
        write_config(dir.path(), "c.toml", &cfg);
        assert_eq!(train(dir.path(), &["--run-name", mode, "-q"], &[]).code, 0);
        let epochs = epoch_lines(&dir.path().join("runs").join(mode));
        let mut best = f64::INFINITY;
        let improving: Vec<u64> = epochs
            .iter()
            .filter(|l| {
                let v = l["val/loss"].as_f64().unwrap();
                let better = v < best;
                best = best.min(v);
                better
            })
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect();
        let run = run_dirs(&dir.path().join("runs").join(mode).join("wandb")).remove(0);
        let arts: Vec<Value> = inspect(dir.path(), &run).into_iter().filter(|r| r["type"] == "artifact").map(|r| r["artifact"].clone()).collect();
        let logged: Vec<u64> =
            arts.iter().map(|a| serde_json::from_str::<Value>(a["metadata"].as_str().unwrap()).unwrap()["epoch"].as_u64().unwrap()).collect();
        if mode == "best" {
            assert_eq!(logged, improving, "one version per new best");
            assert!(arts.iter().all(|a| a["aliases"] == serde_json::json!(["best", "latest"])), "{arts:?}");
        } else {
            assert_eq!(logged, vec![5], "the last checkpoint, once");
            let last_is_best = improving.last() == Some(&5);
            assert_eq!(arts[0]["aliases"].as_array().unwrap().contains(&Value::from("best")), last_is_best);
        }
    }
}
