//! Per-event dispatch cost through the plugin FFI: TRAIN_BATCH_END events (one metric, no payload) sent to 0, 1
//! and 3 no-op plugin instances loaded from a real library. Prints ns per event and per plugin per event.
//!
//! `cargo run --release -p bz-host --example bench_dispatch -- target/release/libbz_fixture.so [events]`

use anyhow::{Context, Result};
use bz_host::events::{Dispatcher, Event, EventKind, Metric, OnError};
use bz_host::plugins::{self, loader};
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let so = args.next().context("usage: bench_dispatch PATH/TO/libbz_fixture.so [events]")?;
    let events: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1_000_000);
    let lib = loader::load(std::path::Path::new(&so), "fixture")?;
    let config = r#"{"mode":"noop","subscribe":["TRAIN_BATCH_END"]}"#;
    let metrics = [Metric::new("train", "loss", 0.25)];
    let payload = serde_json::Value::Null;
    let mut base = f64::NAN;
    println!("| plugins | ns per event | ns per plugin per event (over 0 plugins) |");
    println!("|---|---|---|");
    for n in [0usize, 1, 3] {
        let mut d = Dispatcher::default();
        for i in 0..n {
            let cb = plugins::create_callback(&format!("noop{i}"), &lib, config)?.context("fixture has a callback")?;
            d.add(cb, OnError::Abort);
        }
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for step in 0..events {
                if d.wants(EventKind::TRAIN_BATCH_END) {
                    let ev = Event::new(EventKind::TRAIN_BATCH_END, 1, step, step, &metrics, &payload);
                    std::hint::black_box(d.emit(&ev)?);
                }
            }
            best = best.min(start.elapsed().as_nanos() as f64 / events as f64);
        }
        if n == 0 {
            base = best;
        }
        let per_plugin = if n == 0 { "-".to_string() } else { format!("{:.0}", (best - base) / n as f64) };
        println!("| {n} | {best:.1} | {per_plugin} |");
    }
    Ok(())
}
