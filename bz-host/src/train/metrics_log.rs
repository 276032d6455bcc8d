//! The run's `metrics.jsonl`: one JSON object per line (`step`, `epoch`, `throughput` and `test` events).

use anyhow::{Context, Result};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Appends JSON lines to metrics.jsonl, flushed at every epoch so a crash keeps what was measured.
pub struct MetricsLog {
    out: std::io::BufWriter<fs::File>,
}

impl MetricsLog {
    pub fn open(path: &Path, keep_up_to_step: Option<usize>) -> Result<MetricsLog> {
        // On resume, drop lines written after the checkpoint: they will be produced again. So will the `test` line,
        // which a run writes when it ends.
        if let (Some(step), Ok(text)) = (keep_up_to_step, fs::read_to_string(path)) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    let v = serde_json::from_str::<Value>(l).ok();
                    let before = v.as_ref().and_then(|v| v.get("step")?.as_u64()).is_some_and(|s| s as usize <= step);
                    before && v.is_some_and(|v| v["event"] != "test")
                })
                .map(|l| format!("{l}\n"))
                .collect();
            crate::atomic::write(path, kept.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let file = fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(MetricsLog { out: std::io::BufWriter::new(file) })
    }

    /// One line. A `Value` object's keys are sorted, so lines read the same whatever built them.
    pub fn write(&mut self, v: &Value) -> Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
