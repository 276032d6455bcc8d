//! Console output, the first callback on the event stream: a progress bar per epoch (loss, throughput, ETA)
//! on a terminal, plain lines otherwise, and a summary line per epoch.

use crate::events::{self, Callback, Directive, Event, EventKind, RunStatus};
use crate::fmt::{fmt_rate, fmt_value};
use anyhow::Result;
use bz_plugin_api::payload::{CheckpointLoaded, EpochEnd, RunEnd, RunStart, TrainLoopStart};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

pub struct Console {
    verbosity: Verbosity,
    interactive: bool,
    bar: Option<ProgressBar>,
    epochs: usize,
    loop_start: Instant,
    last_draw: Instant,
    samples_per_batch: f64,
}

impl Console {
    /// `interactive`: draw progress bars (stdout is a terminal).
    pub fn new(verbosity: Verbosity, interactive: bool) -> Console {
        Console { verbosity, interactive, bar: None, epochs: 0, loop_start: Instant::now(), last_draw: Instant::now(), samples_per_batch: 0.0 }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// The run's header: directory, data, device and the model's layer table.
    fn run_start(&mut self, e: &Event) {
        let p: RunStart = view(e);
        self.epochs = p.epochs as usize;
        self.samples_per_batch = p.batch_size as f64;
        self.say(&format!("bz {} · run {}", env!("CARGO_PKG_VERSION"), p.run_dir));
        self.say(&format!("data    {}", p.data));
        self.say(&format!("device  {} · {} threads · seed {}", p.device, p.threads, p.seed));
        if !p.model_summary.is_empty() {
            self.say(&p.model_summary);
        }
    }

    fn progress_start(&mut self, e: &Event) {
        let batches = view::<TrainLoopStart>(e).batches;
        let bar = ProgressBar::with_draw_target(Some(batches), ProgressDrawTarget::stdout_with_hz(10));
        let style = ProgressStyle::with_template("epoch {prefix} {bar:28.cyan/blue} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("━╸─");
        bar.set_style(style);
        bar.set_prefix(format!("{}/{}", e.epoch, self.epochs));
        bar.set_position(e.batch_in_epoch as u64);
        self.bar = Some(bar);
        self.loop_start = Instant::now();
        self.last_draw = Instant::now() - Duration::from_secs(1);
    }

    fn progress_batch(&mut self, e: &Event) {
        let Some(bar) = &self.bar else { return };
        bar.inc(1);
        // Formatting a message every batch would cost more than a small model's step.
        if self.last_draw.elapsed() >= Duration::from_millis(100) {
            self.last_draw = Instant::now();
            let loss = e.metrics.iter().find(|m| m.name == "loss").map(|m| m.value).unwrap_or(f64::NAN);
            let secs = self.loop_start.elapsed().as_secs_f64().max(1e-9);
            let rate = bar.position() as f64 * self.samples_per_batch / secs;
            bar.set_message(format!("loss {} · {} samples/s", fmt_value(loss), fmt_rate(rate)));
        }
    }

    /// `epoch 3/10  train/loss 0.31  val/accuracy 91.20%  lr 0.0010  1.2s · 52.1k samples/s  ★ best`.
    fn epoch_line(&self, e: &Event) -> String {
        let mut parts = vec![format!("epoch {}/{}", e.epoch, self.epochs)];
        let verbose = self.verbosity >= Verbosity::Verbose;
        for m in e.metrics {
            let headline = matches!(m.name.as_str(), "loss" | "accuracy" | "f1_macro" | "mse" | "mae" | "r2");
            if m.split.is_empty() || !(headline || verbose) {
                continue;
            }
            let v = if m.name.contains("accuracy") { format!("{:.2}%", 100.0 * m.value) } else { fmt_value(m.value) };
            parts.push(format!("{} {v}", m.key()));
        }
        let end: EpochEnd = view(e);
        let s = &end.summary;
        parts.push(format!("lr {}", fmt_value(s.lr)));
        parts.push(format!("{:.1}s · {} samples/s", s.epoch_time_s, fmt_rate(s.samples_per_s)));
        if end.is_best {
            parts.push("★ best".into());
        }
        parts.join("  ")
    }
}

/// The event's payload as its typed view; bz builds every payload from these views, so the defaults only fill in
/// for a payload some test hand-wrote.
fn view<T: DeserializeOwned + Default>(e: &Event) -> T {
    T::deserialize(e.payload).unwrap_or_default()
}

impl Callback for Console {
    fn name(&self) -> &str {
        "console_out"
    }

    fn subscriptions(&self) -> u32 {
        if self.verbosity == Verbosity::Quiet {
            return events::mask(&[EventKind::RUN_END]);
        }
        let mut mask = events::mask(&[EventKind::RUN_START, EventKind::CHECKPOINT_LOADED, EventKind::EPOCH_END, EventKind::RUN_END]);
        if self.interactive {
            mask |= events::mask(&[EventKind::TRAIN_LOOP_START, EventKind::TRAIN_BATCH_END, EventKind::TRAIN_LOOP_END]);
        }
        mask
    }

    fn on_event(&mut self, e: &Event) -> Result<Directive> {
        match e.kind {
            EventKind::RUN_START => self.run_start(e),
            EventKind::CHECKPOINT_LOADED => {
                let loaded: CheckpointLoaded = view(e);
                let path = if loaded.path.is_empty() { "?" } else { &loaded.path };
                self.say(&format!("resumed from {path} (epoch {}, step {})", e.epoch, e.global_step));
            }
            EventKind::TRAIN_LOOP_START => self.progress_start(e),
            EventKind::TRAIN_BATCH_END => self.progress_batch(e),
            EventKind::TRAIN_LOOP_END => self.clear_bar(),
            EventKind::EPOCH_END => {
                let line = self.epoch_line(e);
                self.say(&line);
            }
            EventKind::RUN_END => {
                self.clear_bar();
                if self.verbosity > Verbosity::Quiet && !e.metrics.is_empty() {
                    let parts: Vec<String> = e.metrics.iter().map(|m| format!("{} {}", m.key(), fmt_value(m.value))).collect();
                    self.say(&parts.join("  "));
                }
                if let (true, Ok(end)) = (self.verbosity > Verbosity::Quiet, RunEnd::deserialize(e.payload)) {
                    self.say(&end.message);
                }
            }
            _ => {}
        }
        Ok(Directive::NONE)
    }

    fn finish(&mut self, _status: RunStatus) {
        self.clear_bar();
    }
}
