//! Scalars written per second by the tensorboard plugin, for `scripts/bench-tensorboard`.
//!
//! `bench_scalars N DIR` writes N scalars (10 tags, values sin(i), step i / 10) three ways and prints one JSON line:
//! - `one_per_event`: one scalar per event, as TensorBoard's Python `add_scalar` does;
//! - `ten_per_event`: ten scalars per event, as the plugin writes an epoch's metrics;
//! - `plugin_ffi`: through the plugin's FFI entry points, one TRAIN_BATCH_END event (the batch loss) per scalar,
//!   as bz drives it with `log_every_n_steps = 1`.
//!
//! Each figure includes creating the file and the final flush.

use bz_plugin_api::harness::Harness;
use bz_plugin_api::EventKind;
use bz_tensorboard::writer::Writer;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let root = std::path::PathBuf::from(args.get(2).cloned().unwrap_or_else(|| "target/bench-tb".into()));
    let tags: Vec<String> = (0..10).map(|t| format!("train/metric_{t}")).collect();

    let dir = root.join("one");
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let mut w = Writer::create(&dir).expect("writer");
    for i in 0..n {
        w.scalars((i / 10) as u64, &[(tags[i % 10].clone(), (i as f64).sin())]).expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    let one = n as f64 / t.elapsed().as_secs_f64();

    let dir = root.join("ten");
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let mut w = Writer::create(&dir).expect("writer");
    for s in 0..n / 10 {
        let values: Vec<(String, f64)> = (0..10).map(|k| (tags[k].clone(), ((s * 10 + k) as f64).sin())).collect();
        w.scalars(s as u64, &values).expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    let ten = n as f64 / t.elapsed().as_secs_f64();

    let dir = root.join("ffi");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    Harness::set_run_dir(&dir);
    let t = Instant::now();
    let mut h = Harness::new::<bz_tensorboard::TensorBoardPlugin>(serde_json::json!({ "log_every_n_steps": 1 })).expect("plugin");
    h.send(EventKind::RUN_START, 0, 0, 0, &[], &serde_json::json!({ "run_dir": dir.display().to_string(), "run_name": "ffi" })).expect("start");
    for i in 0..n {
        h.send(EventKind::TRAIN_BATCH_END, 1, i as u64 + 1, i as u64, &[("train", "loss", (i as f64).sin())], &serde_json::Value::Null).expect("event");
    }
    h.send(EventKind::RUN_END, 1, n as u64, 0, &[], &serde_json::json!({ "status": "completed" })).expect("end");
    drop(h);
    let ffi = n as f64 / t.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "n": n, "one_per_event": one, "ten_per_event": ten, "plugin_ffi": ffi }));
}
