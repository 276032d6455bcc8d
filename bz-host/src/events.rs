//! The trainer's lifecycle event stream. Console output is its first callback; plugins attach to the same stream.
//!
//! A payload is built only when a subscriber wants that kind of event, so batch events cost nothing when no
//! callback subscribes to them.

use anyhow::Result;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    RunStart,
    CheckpointLoaded,
    EpochStart,
    TrainLoopStart,
    TrainBatchStart,
    TrainBatchEnd,
    TrainLoopEnd,
    ValLoopStart,
    ValBatchStart,
    ValBatchEnd,
    ValLoopEnd,
    CheckpointSaved,
    EpochEnd,
    RunEnd,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::RunStart,
        EventKind::CheckpointLoaded,
        EventKind::EpochStart,
        EventKind::TrainLoopStart,
        EventKind::TrainBatchStart,
        EventKind::TrainBatchEnd,
        EventKind::TrainLoopEnd,
        EventKind::ValLoopStart,
        EventKind::ValBatchStart,
        EventKind::ValBatchEnd,
        EventKind::ValLoopEnd,
        EventKind::CheckpointSaved,
        EventKind::EpochEnd,
        EventKind::RunEnd,
    ];

    /// The kind's bit in a subscription mask.
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::RunStart => "RUN_START",
            EventKind::CheckpointLoaded => "CHECKPOINT_LOADED",
            EventKind::EpochStart => "EPOCH_START",
            EventKind::TrainLoopStart => "TRAIN_LOOP_START",
            EventKind::TrainBatchStart => "TRAIN_BATCH_START",
            EventKind::TrainBatchEnd => "TRAIN_BATCH_END",
            EventKind::TrainLoopEnd => "TRAIN_LOOP_END",
            EventKind::ValLoopStart => "VAL_LOOP_START",
            EventKind::ValBatchStart => "VAL_BATCH_START",
            EventKind::ValBatchEnd => "VAL_BATCH_END",
            EventKind::ValLoopEnd => "VAL_LOOP_END",
            EventKind::CheckpointSaved => "CHECKPOINT_SAVED",
            EventKind::EpochEnd => "EPOCH_END",
            EventKind::RunEnd => "RUN_END",
        }
    }
}

/// Subscribe to every kind.
pub const ALL_EVENTS: u32 = (1 << 14) - 1;

/// A metric value as events carry it: `name` within `split` (`train`, `val`, or `""` for run-level values).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub split: &'static str,
    pub value: f64,
}

impl Metric {
    pub fn new(split: &'static str, name: &str, value: f64) -> Metric {
        Metric { name: name.to_string(), split, value }
    }

    /// `split/name`, the key used in metrics.jsonl.
    pub fn key(&self) -> String {
        if self.split.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.split, self.name)
        }
    }
}

#[derive(Clone, Debug)]
pub struct Event<'a> {
    pub kind: EventKind,
    /// 1-based epoch; 0 before the first epoch.
    pub epoch: usize,
    pub global_step: usize,
    pub batch_in_epoch: usize,
    pub metrics: &'a [Metric],
    pub payload: &'a Value,
}

/// What a callback asks of the trainer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directive(pub u32);

impl Directive {
    pub const NONE: Directive = Directive(0);
    /// Finish the current epoch (validation, checkpoint, EPOCH_END), then end the run.
    pub const STOP_TRAINING: Directive = Directive(1);
    /// Put parameter and gradient histograms into this epoch's EPOCH_END payload.
    pub const WANT_HISTOGRAMS: Directive = Directive(2);
    /// Every directive this bz acts on; other bits from newer plugins are dropped.
    pub const KNOWN: Directive = Directive(1 | 2);

    pub fn contains(self, other: Directive) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }
}

impl std::ops::BitOr for Directive {
    type Output = Directive;
    fn bitor(self, rhs: Directive) -> Directive {
        Directive(self.0 | rhs.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Completed,
    /// A callback asked to stop early.
    Stopped,
    Interrupted,
    Failed,
}

impl RunStatus {
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Stopped => "stopped",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

pub trait Callback {
    fn name(&self) -> &str;
    /// A mask of [`EventKind::bit`]s.
    fn subscriptions(&self) -> u32;
    fn on_event(&mut self, event: &Event) -> Result<Directive>;
    fn finish(&mut self, _status: RunStatus) {}
}

/// What happens when a callback returns an error (a plugin's `on_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Log once and stop calling this callback for the rest of the run.
    #[default]
    Disable,
    /// Fail the run.
    Abort,
    /// Log and keep calling it.
    Continue,
}

struct Entry {
    cb: Box<dyn Callback>,
    mask: u32,
    on_error: OnError,
    disabled: bool,
    errors: usize,
    time: std::time::Duration,
}

/// Sends events to callbacks in order, merges their directives, applies each one's error policy and measures
/// the time spent in each (the profiler reports it).
#[derive(Default)]
pub struct Dispatcher {
    entries: Vec<Entry>,
    mask: u32,
    /// Requests (directives other than STOP) made since they were last taken.
    requested: Directive,
    /// Whether RUN_START went out.
    started: bool,
}

impl Dispatcher {
    pub fn add(&mut self, cb: Box<dyn Callback>, on_error: OnError) {
        let mask = cb.subscriptions();
        self.mask |= mask;
        self.entries.push(Entry { cb, mask, on_error, disabled: false, errors: 0, time: Default::default() });
    }

    /// Whether any callback wants `kind`: the trainer skips building the event otherwise.
    #[inline]
    pub fn wants(&self, kind: EventKind) -> bool {
        self.mask & kind.bit() != 0
    }

    pub fn emit(&mut self, event: &Event) -> Result<Directive> {
        self.started |= event.kind == EventKind::RunStart;
        let mut directive = Directive::NONE;
        let mut mask_changed = false;
        for e in &mut self.entries {
            if e.disabled || e.mask & event.kind.bit() == 0 {
                continue;
            }
            let start = std::time::Instant::now();
            let result = e.cb.on_event(event);
            e.time += start.elapsed();
            match result {
                Ok(d) => directive = directive | d,
                Err(err) => {
                    e.errors += 1;
                    let name = e.cb.name().to_string();
                    match e.on_error {
                        OnError::Abort => return Err(err.context(format!("plugin '{name}' failed on {} (on_error = \"abort\")", event.kind.name()))),
                        OnError::Disable => {
                            eprintln!(
                                "warning: plugin '{name}' failed on {}: {err:#}; disabled for the rest of the run (on_error = \"disable\")",
                                event.kind.name()
                            );
                            e.disabled = true;
                            mask_changed = true;
                        }
                        OnError::Continue => {
                            // Every failure would flood the terminal on a per-batch hook; the first few say enough.
                            if e.errors <= 3 {
                                eprintln!("warning: plugin '{name}' failed on {}: {err:#} (on_error = \"continue\")", event.kind.name());
                            }
                        }
                    }
                }
            }
        }
        if mask_changed {
            self.mask = self.entries.iter().filter(|e| !e.disabled).fold(0, |m, e| m | e.mask);
        }
        self.requested = self.requested | directive;
        Ok(directive)
    }

    /// Whether RUN_START was emitted (a failure after it still owes the callbacks a RUN_END).
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether a callback has asked for `what` since it was last taken.
    pub fn requested(&self, what: Directive) -> bool {
        self.requested.contains(what)
    }

    /// Like [`Dispatcher::requested`], and clears the request.
    pub fn take(&mut self, what: Directive) -> bool {
        let asked = self.requested.contains(what);
        self.requested = Directive(self.requested.0 & !what.0);
        asked
    }

    /// Seconds spent in each callback so far.
    pub fn timings(&self) -> Vec<(String, f64)> {
        self.entries.iter().map(|e| (e.cb.name().to_string(), e.time.as_secs_f64())).collect()
    }

    pub fn finish(&mut self, status: RunStatus) {
        for e in &mut self.entries {
            if !e.disabled {
                e.cb.finish(status);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec {
        mask: u32,
        seen: std::rc::Rc<std::cell::RefCell<Vec<EventKind>>>,
        stop_on: Option<EventKind>,
    }

    impl Callback for Rec {
        fn name(&self) -> &str {
            "rec"
        }
        fn subscriptions(&self) -> u32 {
            self.mask
        }
        fn on_event(&mut self, e: &Event) -> Result<Directive> {
            self.seen.borrow_mut().push(e.kind);
            Ok(if Some(e.kind) == self.stop_on { Directive::STOP_TRAINING } else { Directive::NONE })
        }
    }

    #[test]
    fn subscriptions_filter_and_directives_merge() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(vec![]));
        let mut d = Dispatcher::default();
        d.add(Box::new(Rec { mask: EventKind::EpochEnd.bit(), seen: seen.clone(), stop_on: Some(EventKind::EpochEnd) }), OnError::Abort);
        assert!(d.wants(EventKind::EpochEnd) && !d.wants(EventKind::TrainBatchEnd));
        let payload = Value::Null;
        let ev = |kind| Event { kind, epoch: 1, global_step: 0, batch_in_epoch: 0, metrics: &[], payload: &payload };
        assert_eq!(d.emit(&ev(EventKind::TrainBatchEnd)).unwrap(), Directive::NONE);
        assert!(d.emit(&ev(EventKind::EpochEnd)).unwrap().contains(Directive::STOP_TRAINING));
        assert_eq!(*seen.borrow(), vec![EventKind::EpochEnd]);
        assert_eq!(EventKind::ALL.iter().fold(0, |m, k| m | k.bit()), ALL_EVENTS);
    }
}
