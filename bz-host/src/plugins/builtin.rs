//! Built-in plugins: in-process callbacks behind the same trait as libraries. (`console_out` lives in
//! `crate::console`; the dispatcher adds it first.)

use super::Spec;
use crate::config::{default_mode, Mode};
use crate::events::{self, Callback, Directive, Event, EventKind, RunStatus};
use anyhow::{bail, Context, Result};
use bz_plugin_api::payload::{EpochEnd, EpochSummary, RunStart};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Checks a built-in plugin's keys and values; the message names the key.
pub fn validate(spec: &Spec) -> Result<(), String> {
    match spec.name.as_str() {
        "console_out" => check_keys(spec, &["verbosity"]).and_then(|_| match spec.config.get("verbosity").map(|v| v.as_str()) {
            None | Some(Some("quiet" | "normal" | "verbose")) => Ok(()),
            Some(_) => Err("`verbosity` must be \"quiet\", \"normal\" or \"verbose\"".into()),
        }),
        "early_stopping" => EarlyStopping::from_config(&spec.config).map(|_| ()),
        "profiler" => check_keys(spec, &["output"]),
        other => Err(format!("unknown built-in plugin {other:?}")),
    }
}

/// Creates a built-in plugin's callback (`console_out` is added by the dispatcher itself).
pub fn create(spec: &Spec) -> Result<Option<Box<dyn Callback>>> {
    Ok(match spec.name.as_str() {
        "early_stopping" => Some(Box::new(EarlyStopping::from_config(&spec.config).map_err(anyhow::Error::msg)?)),
        "profiler" => Some(Box::new(Profiler::new(spec.config.get("output").and_then(|v| v.as_str()).unwrap_or("profile.json")))),
        _ => None,
    })
}

fn check_keys(spec: &Spec, known: &[&str]) -> Result<(), String> {
    for key in spec.config.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        if !known.contains(&key.as_str()) {
            let hint = known.iter().map(|k| (strsim::jaro_winkler(&key, k), *k)).filter(|(s, _)| *s > 0.8).max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = hint.map(|(_, k)| format!("; did you mean `{k}`?")).unwrap_or_default();
            return Err(format!("unknown key `{key}` (known: {}, enabled, on_error){hint}", known.join(", ")));
        }
    }
    Ok(())
}

/// Stops training when a monitored metric has not improved for `patience` epochs (Keras' semantics: an
/// improvement must beat the best by more than `min_delta`; with a `baseline`, the metric must first beat it).
#[derive(Debug)]
pub struct EarlyStopping {
    monitor: String,
    mode: Mode,
    patience: usize,
    min_delta: f64,
    baseline: Option<f64>,
    best: Option<f64>,
    best_epoch: usize,
    wait: usize,
}

impl EarlyStopping {
    pub fn from_config(c: &Value) -> Result<EarlyStopping, String> {
        let spec = Spec { name: "early_stopping".into(), library: "early_stopping".into(), enabled: true, on_error: None, config: c.clone() };
        check_keys(&spec, &["monitor", "mode", "patience", "min_delta", "baseline"])?;
        let monitor = match c.get("monitor") {
            None => "val/loss".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("`monitor` must be a metric name such as \"val/loss\"".into()),
        };
        let mode = match c.get("mode").map(|v| v.as_str()) {
            None => default_mode(&monitor),
            Some(Some("min")) => Mode::Min,
            Some(Some("max")) => Mode::Max,
            Some(_) => return Err("`mode` must be \"min\" or \"max\"".into()),
        };
        let patience = match c.get("patience") {
            None => 3,
            Some(v) => v.as_u64().ok_or("`patience` must be a whole number of epochs >= 0")? as usize,
        };
        let min_delta = match c.get("min_delta") {
            None => 0.0,
            Some(v) => v.as_f64().filter(|d| *d >= 0.0).ok_or("`min_delta` must be a number >= 0")?,
        };
        let baseline = match c.get("baseline") {
            None => None,
            Some(v) => Some(v.as_f64().ok_or("`baseline` must be a number")?),
        };
        Ok(EarlyStopping { monitor, mode, patience, min_delta, baseline, best: None, best_epoch: 0, wait: 0 })
    }

    /// Feeds one epoch's value; returns true when training should stop.
    pub fn observe(&mut self, epoch: usize, value: f64) -> bool {
        let reference = self.best.or(self.baseline);
        let improved = value.is_finite()
            && match reference {
                None => true,
                Some(r) => match self.mode {
                    Mode::Min => value < r - self.min_delta,
                    Mode::Max => value > r + self.min_delta,
                },
            };
        if improved {
            self.best = Some(value);
            self.best_epoch = epoch;
            self.wait = 0;
            false
        } else {
            self.wait += 1;
            self.wait >= self.patience
        }
    }

    /// On resume, the state is rebuilt from the run's own metrics.jsonl (up to the checkpoint).
    fn replay(&mut self, run_dir: &str, up_to_epoch: usize) {
        let Ok(text) = std::fs::read_to_string(PathBuf::from(run_dir).join("metrics.jsonl")) else { return };
        for line in text.lines() {
            let Ok(s) = serde_json::from_str::<EpochSummary>(line) else { continue };
            if s.event != "epoch" || s.epoch as usize > up_to_epoch {
                continue;
            }
            if let Some(x) = s.metric(&self.monitor) {
                self.observe(s.epoch as usize, x);
            }
        }
    }
}

impl Callback for EarlyStopping {
    fn name(&self) -> &str {
        "early_stopping"
    }

    fn subscriptions(&self) -> u32 {
        events::mask(&[EventKind::RUN_START, EventKind::EPOCH_END])
    }

    fn on_event(&mut self, e: &Event) -> Result<Directive> {
        match e.kind {
            EventKind::RUN_START => {
                let start = RunStart::deserialize(e.payload)?;
                let names = &start.metric_names;
                if !names.is_empty() && !names.contains(&self.monitor) {
                    bail!("plugins.early_stopping.monitor = {:?} is not a metric of this run; choose one of: {}", self.monitor, names.join(", "));
                }
                if start.resumed && !start.run_dir.is_empty() {
                    self.replay(&start.run_dir, e.epoch);
                }
                Ok(Directive::NONE)
            }
            EventKind::EPOCH_END => {
                let key = self.monitor.split_once('/').unwrap_or(("", &self.monitor));
                let Some(value) = e.metrics.iter().find(|m| m.split == key.0 && m.name == key.1).map(|m| m.value) else {
                    bail!("metric {:?} is missing at epoch {}", self.monitor, e.epoch)
                };
                if self.observe(e.epoch, value) {
                    println!(
                        "early stopping: {} has not improved for {} epoch(s); best {} at epoch {}",
                        self.monitor,
                        self.wait,
                        self.best.map(crate::fmt::fmt_value).unwrap_or_else(|| "none".into()),
                        self.best_epoch
                    );
                    return Ok(Directive::STOP_TRAINING);
                }
                Ok(Directive::NONE)
            }
            _ => Ok(Directive::NONE),
        }
    }
}

/// Per-phase time, time in each plugin, CPU and memory; a table at the end and `profile.json` in the run dir.
pub struct Profiler {
    output: String,
    run_dir: Option<PathBuf>,
    phases: BTreeMap<String, f64>,
    plugins: BTreeMap<String, f64>,
    epochs: Vec<Value>,
    system: sysinfo::System,
    pid: sysinfo::Pid,
    peak_rss: u64,
    start: std::time::Instant,
}

impl Profiler {
    pub fn new(output: &str) -> Profiler {
        Profiler {
            output: output.to_string(),
            run_dir: None,
            phases: BTreeMap::new(),
            plugins: BTreeMap::new(),
            epochs: Vec::new(),
            system: sysinfo::System::new(),
            pid: sysinfo::Pid::from_u32(std::process::id()),
            peak_rss: 0,
            start: std::time::Instant::now(),
        }
    }

    /// CPU % (of one core) since the last sample, and resident memory in bytes.
    fn sample(&mut self) -> (f64, u64) {
        self.system.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[self.pid]), true);
        match self.system.process(self.pid) {
            Some(p) => (p.cpu_usage() as f64, p.memory()),
            None => (f64::NAN, 0),
        }
    }

    fn report(&self) -> Value {
        json!({
            "wall_s": self.start.elapsed().as_secs_f64(),
            "phases_s": self.phases,
            "plugins_s": self.plugins,
            "peak_rss_bytes": self.peak_rss,
            "epochs": self.epochs,
        })
    }

    fn table(&self) -> String {
        let total: f64 = self.phases.values().sum();
        let mut s = format!("{:<22} {:>10} {:>7}\n", "phase", "seconds", "share");
        for (k, secs) in &self.phases {
            s.push_str(&format!("{k:<22} {secs:>10.3} {:>6.1}%\n", 100.0 * secs / total.max(1e-12)));
        }
        for (k, v) in &self.plugins {
            s.push_str(&format!("{:<22} {:>10.3}\n", format!("plugin {k}"), v));
        }
        s.push_str(&format!("peak RSS {:.0} MiB", self.peak_rss as f64 / 1048576.0));
        s
    }
}

impl Callback for Profiler {
    fn name(&self) -> &str {
        "profiler"
    }

    fn subscriptions(&self) -> u32 {
        events::mask(&[EventKind::RUN_START, EventKind::EPOCH_END, EventKind::RUN_END])
    }

    fn on_event(&mut self, e: &Event) -> Result<Directive> {
        match e.kind {
            EventKind::RUN_START => {
                let start = RunStart::deserialize(e.payload).unwrap_or_default();
                self.run_dir = Some(start.run_dir).filter(|d| !d.is_empty()).map(PathBuf::from);
                self.sample();
            }
            EventKind::EPOCH_END => {
                let end = EpochEnd::deserialize(e.payload).unwrap_or_default();
                for (phase, secs) in &end.phases_s {
                    *self.phases.entry(phase.clone()).or_default() += secs;
                }
                // The dispatcher's totals are cumulative: keep the latest.
                self.plugins = end.plugins_s;
                let (cpu, rss) = self.sample();
                self.peak_rss = self.peak_rss.max(rss);
                self.epochs.push(json!({ "epoch": e.epoch, "phases_s": end.phases_s, "cpu_percent": cpu, "rss_bytes": rss }));
            }
            EventKind::RUN_END => {
                if let Some(dir) = &self.run_dir {
                    let path = dir.join(&self.output);
                    crate::atomic::write(&path, serde_json::to_string_pretty(&self.report())?.as_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                println!("{}", self.table());
            }
            _ => {}
        }
        Ok(Directive::NONE)
    }

    fn finish(&mut self, status: RunStatus) {
        // A failed or interrupted run still leaves its profile (RUN_END is not sent on failure).
        if status == RunStatus::FAILED {
            if let Some(dir) = &self.run_dir {
                let _ = crate::atomic::write(&dir.join(&self.output), self.report().to_string().as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stopping_counts_patience_like_keras() {
        let mut es = EarlyStopping::from_config(&json!({ "patience": 2 })).unwrap();
        // Keras and Lightning: stop once `patience` epochs in a row brought no improvement.
        let losses = [1.0, 0.8, 0.9, 0.7, 0.75];
        let stops: Vec<bool> = losses.iter().enumerate().map(|(i, v)| es.observe(i + 1, *v)).collect();
        assert_eq!(stops, vec![false, false, false, false, false]);
        assert!(es.observe(6, 0.71), "epochs 5 and 6 did not improve on 0.7");
        assert_eq!(es.best_epoch, 4);
    }

    #[test]
    fn early_stopping_min_delta_baseline_and_max_mode() {
        let mut es = EarlyStopping::from_config(&json!({ "monitor": "val/accuracy", "patience": 0, "min_delta": 0.01 })).unwrap();
        assert_eq!(es.mode, Mode::Max);
        assert!(!es.observe(1, 0.5));
        assert!(es.observe(2, 0.505), "an improvement smaller than min_delta does not count");
        let mut es = EarlyStopping::from_config(&json!({ "patience": 2, "baseline": 0.5 })).unwrap();
        assert!(!es.observe(1, 0.6));
        assert!(es.observe(2, 0.55), "never beat the baseline within patience");
        let mut es = EarlyStopping::from_config(&json!({ "patience": 2, "baseline": 0.5 })).unwrap();
        assert!(!es.observe(1, 0.4) && !es.observe(2, 0.45) && es.observe(3, 0.41), "beating the baseline resets patience");
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = EarlyStopping::from_config(&json!({ "patiense": 2 })).unwrap_err();
        assert!(e.contains("unknown key `patiense`") && e.contains("did you mean `patience`?"), "{e}");
        let e = EarlyStopping::from_config(&json!({ "patience": -1 })).unwrap_err();
        assert!(e.contains("`patience`"), "{e}");
        let e = EarlyStopping::from_config(&json!({ "mode": "up" })).unwrap_err();
        assert!(e.contains("`mode`"), "{e}");
    }
}
