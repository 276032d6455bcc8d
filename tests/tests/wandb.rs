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
    let line = read_jsonl(&run_root.join("metrics.jsonl")).into_iter().find(|l| l["event"] == "test").expect("a test line in metrics.jsonl");
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
