//! The trainer's lifecycle event stream. Console output is its first callback; plugins attach to the same stream.
//!
//! A payload is built only when a subscriber wants that kind of event, so batch events cost nothing when no
//! callback subscribes to them.

use anyhow::Result;
pub use bz_plugin_api::{Directive, EventKind, RunStatus};
use serde_json::Value;

/// A kind's bit in a subscription mask (0 for kinds beyond the mask, which no callback can subscribe to).
pub fn bit(kind: EventKind) -> u32 {
    1u32.checked_shl(kind.0 as u32).unwrap_or(0)
}

/// The subscription mask of `kinds`.
pub fn mask(kinds: &[EventKind]) -> u32 {
    kinds.iter().fold(0, |m, k| m | bit(*k))
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

    /// `{ "split/name": value, … }`, as metrics.jsonl, `bz eval --json` and the epoch payload write metrics.
    pub fn to_json_map(metrics: &[Metric]) -> serde_json::Map<String, Value> {
        metrics.iter().map(|m| (m.key(), Value::from(m.value))).collect()
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
    /// The payload as JSON text, made on first use and shared by every library callback of this event.
    json: std::cell::OnceCell<String>,
}

impl<'a> Event<'a> {
    pub fn new(kind: EventKind, epoch: usize, global_step: usize, batch_in_epoch: usize, metrics: &'a [Metric], payload: &'a Value) -> Event<'a> {
        Event { kind, epoch, global_step, batch_in_epoch, metrics, payload, json: Default::default() }
    }

    /// The payload serialised once, however many plugins receive it (batch events carry none: no allocation).
    pub fn payload_json(&self) -> &str {
        if self.payload.is_null() {
            return "null";
        }
        self.json.get_or_init(|| self.payload.to_string())
    }
}

/// Every directive this bz acts on; other bits from newer plugins are dropped.
pub const KNOWN_DIRECTIVES: Directive =
    Directive(Directive::STOP_TRAINING.0 | Directive::WANT_HISTOGRAMS.0 | Directive::WANT_PR_CURVES.0 | Directive::WANT_MISCLASSIFIED.0);

pub trait Callback {
    fn name(&self) -> &str;
    /// A mask of [`bit`]s.
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
        self.mask & bit(kind) != 0
    }

    pub fn emit(&mut self, event: &Event) -> Result<Directive> {
        self.started |= event.kind == EventKind::RUN_START;
        let mut directive = Directive::NONE;
        let mut mask_changed = false;
        for e in &mut self.entries {
            if e.disabled || e.mask & bit(event.kind) == 0 {
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
        d.add(Box::new(Rec { mask: bit(EventKind::EPOCH_END), seen: seen.clone(), stop_on: Some(EventKind::EPOCH_END) }), OnError::Abort);
        assert!(d.wants(EventKind::EPOCH_END) && !d.wants(EventKind::TRAIN_BATCH_END));
        let payload = Value::Null;
        let ev = |kind| Event::new(kind, 1, 0, 0, &[], &payload);
        assert_eq!(d.emit(&ev(EventKind::TRAIN_BATCH_END)).unwrap(), Directive::NONE);
        assert!(d.emit(&ev(EventKind::EPOCH_END)).unwrap().contains(Directive::STOP_TRAINING));
        assert_eq!(*seen.borrow(), vec![EventKind::EPOCH_END]);
        assert_eq!(EventKind::ALL.iter().fold(0, |m, k| m | bit(*k)), ALL_EVENTS);
    }

    #[test]
    fn kinds_beyond_the_mask_subscribe_to_nothing_and_payload_json_is_made_once() {
        assert_eq!(bit(EventKind(40)), 0);
        assert_eq!(mask(&[EventKind::RUN_START, EventKind::RUN_END]), 1 | 1 << 13);
        let payload = serde_json::json!({ "batches": 3 });
        let e = Event::new(EventKind::TRAIN_LOOP_START, 1, 0, 0, &[], &payload);
        assert_eq!(e.payload_json(), r#"{"batches":3}"#);
        assert!(std::ptr::eq(e.payload_json(), e.payload_json()), "serialised once");
        assert_eq!(Event::new(EventKind::TRAIN_BATCH_END, 1, 0, 0, &[], &Value::Null).payload_json(), "null");
    }
}
