//! A test harness: drives a plugin's callback through the same FFI functions bz calls, with scripted events,
//! so a plugin crate unit-tests without libtorch, a host binary or a `.so`.
//!
//! ```
//! use bz_plugin_api::{harness::Harness, Callback, Directive, Event, EventKind, Host, Plugin, PluginError};
//!
//! struct Counter(u64);
//! impl Callback for Counter {
//!     fn subscriptions(&self) -> Vec<EventKind> { vec![EventKind::EPOCH_END] }
//!     fn on_event(&mut self, _e: &Event<'_>) -> Result<Directive, PluginError> {
//!         self.0 += 1;
//!         Ok(if self.0 == 2 { Directive::STOP_TRAINING } else { Directive::NONE })
//!     }
//! }
//! struct P;
//! impl Plugin for P {
//!     const NAME: &'static str = "counter";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "stops after two epochs";
//!     fn create_callback(_h: Host, _c: serde_json::Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
//!         Ok(Some(Box::new(Counter(0))))
//!     }
//! }
//!
//! let mut h = Harness::new::<P>(serde_json::json!({})).unwrap();
//! let run = h.run(5, 3, |_epoch| vec![("val", "loss", 0.5)]).unwrap();
//! assert_eq!(run.epochs_run, 2, "the directive stops the scripted run after epoch 2");
//! ```

use crate::ffi::*;
use crate::kit::{root_module, Plugin};
use abi_stable::std_types::{RSlice, RStr, RString};
use serde_json::{json, Value};
use std::sync::Mutex;

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RUN_DIR: Mutex<String> = Mutex::new(String::new());

extern "C" fn log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    if let Ok(mut logs) = LOGS.lock() {
        logs.push(format!("{level} {target}: {message}"));
    }
}

extern "C" fn bz_version() -> RString {
    RString::from("harness")
}

extern "C" fn run_dir() -> RString {
    RString::from(RUN_DIR.lock().map(|d| d.clone()).unwrap_or_default())
}

/// The host API the harness offers: logs are collected ([`Harness::logs`]), the run dir is settable.
pub fn host_api() -> HostApi_Ref {
    use abi_stable::prefix_type::PrefixTypeTrait;
    HostApi { log, bz_version, run_dir }.leak_into_prefix()
}

/// What a scripted run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub epochs_run: u64,
    /// Every event sent and the directive returned.
    pub directives: Vec<(EventKind, Directive)>,
}

pub struct Harness {
    callback: CallbackBox,
    subscriptions: Vec<EventKind>,
}

impl Harness {
    /// Validates `config` and creates plugin `P`'s callback through the FFI root module.
    pub fn new<P: Plugin>(config: Value) -> Result<Harness, PluginError> {
        let module = root_module::<P>();
        let config = RString::from(config.to_string());
        (module.validate_config())(config.as_rstr()).into_result()?;
        let callback = (module.create_callback())(host_api(), config.as_rstr())
            .into_result()?
            .into_option()
            .ok_or_else(|| PluginError::other(format!("plugin {} has no callback", P::NAME)))?;
        let subscriptions = callback.subscriptions().into_vec();
        Ok(Harness { callback, subscriptions })
    }

    /// Sets what `Host::run_dir` returns.
    pub fn set_run_dir(dir: &std::path::Path) {
        if let Ok(mut d) = RUN_DIR.lock() {
            *d = dir.display().to_string();
        }
    }

    /// Log lines plugins sent through the host, as `level target: message`.
    pub fn logs() -> Vec<String> {
        LOGS.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn subscriptions(&self) -> &[EventKind] {
        &self.subscriptions
    }

    /// Sends one event (if the callback subscribed to its kind; otherwise returns `NONE` as bz would).
    pub fn send(
        &mut self,
        kind: EventKind,
        epoch: u64,
        step: u64,
        batch: u64,
        metrics: &[(&str, &str, f64)],
        payload: &Value,
    ) -> Result<Directive, PluginError> {
        if !self.subscriptions.contains(&kind) {
            return Ok(Directive::NONE);
        }
        let metrics: Vec<Metric<'_>> =
            metrics.iter().map(|(split, name, value)| Metric { name: RStr::from(*name), split: RStr::from(*split), value: *value }).collect();
        let payload = payload.to_string();
        let event =
            Event { kind, epoch, global_step: step, batch_in_epoch: batch, metrics: RSlice::from_slice(&metrics), payload_json: RStr::from(payload.as_str()) };
        self.callback.on_event(&event).into_result()
    }

    /// Runs the standard event sequence for `epochs` epochs of `batches` batches, with per-epoch validation
    /// metrics from `val_metrics(epoch)`, honouring STOP_TRAINING the way bz does (the asking epoch completes).
    pub fn run(
        &mut self,
        epochs: u64,
        batches: u64,
        mut val_metrics: impl FnMut(u64) -> Vec<(&'static str, &'static str, f64)>,
    ) -> Result<RunReport, PluginError> {
        let mut report = RunReport::default();
        let mut step = 0;
        let mut stop = false;
        let null = Value::Null;
        let send = |h: &mut Harness,
                    report: &mut RunReport,
                    kind,
                    epoch,
                    step,
                    batch,
                    metrics: &[(&str, &str, f64)],
                    payload: &Value|
         -> Result<Directive, PluginError> {
            let d = h.send(kind, epoch, step, batch, metrics, payload)?;
            if h.subscriptions.contains(&kind) {
                report.directives.push((kind, d));
            }
            Ok(d)
        };
        let start = json!({ "run_dir": run_dir().to_string(), "epochs": epochs });
        stop |= send(self, &mut report, EventKind::RUN_START, 0, 0, 0, &[], &start)?.contains(Directive::STOP_TRAINING);
        for epoch in 1..=epochs {
            if stop {
                break;
            }
            send(self, &mut report, EventKind::EPOCH_START, epoch, step, 0, &[], &null)?;
            send(self, &mut report, EventKind::TRAIN_LOOP_START, epoch, step, 0, &[], &json!({ "batches": batches }))?;
            for b in 0..batches {
                send(self, &mut report, EventKind::TRAIN_BATCH_START, epoch, step, b, &[], &null)?;
                step += 1;
                stop |= send(self, &mut report, EventKind::TRAIN_BATCH_END, epoch, step, b, &[("train", "loss", 1.0 / step as f64)], &null)?
                    .contains(Directive::STOP_TRAINING);
            }
            send(self, &mut report, EventKind::TRAIN_LOOP_END, epoch, step, batches, &[], &null)?;
            let val = val_metrics(epoch);
            send(self, &mut report, EventKind::VAL_LOOP_START, epoch, step, 0, &[], &null)?;
            send(self, &mut report, EventKind::VAL_LOOP_END, epoch, step, 0, &val, &null)?;
            send(
                self,
                &mut report,
                EventKind::CHECKPOINT_SAVED,
                epoch,
                step,
                0,
                &[],
                &json!({ "path": format!("checkpoints/step-{step:08}"), "is_best": true }),
            )?;
            stop |= send(self, &mut report, EventKind::EPOCH_END, epoch, step, batches, &val, &json!({ "lr": 0.001 }))?.contains(Directive::STOP_TRAINING);
            report.epochs_run = epoch;
        }
        let status = if stop { "stopped" } else { "completed" };
        let epochs_run = report.epochs_run;
        send(self, &mut report, EventKind::RUN_END, epochs_run, step, 0, &[], &json!({ "status": status }))?;
        self.finish(if stop { RunStatus::STOPPED } else { RunStatus::COMPLETED })?;
        Ok(report)
    }

    pub fn finish(&mut self, status: RunStatus) -> Result<(), PluginError> {
        self.callback.finish(status).into_result()
    }
}
