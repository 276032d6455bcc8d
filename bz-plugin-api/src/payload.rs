//! Typed views of the JSON payloads bz sends with its events (since 1.1.0).
//!
//! The wire format is unchanged: [`Event::payload_json`] stays a JSON object, and these structs read exactly the
//! keys bz writes. Keys newer than this crate are ignored on read, so a plugin built against 1.1 keeps working
//! with every later 1.x host. bz builds these same structs and serialises each once.
//!
//! ```
//! use bz_plugin_api::payload::{RunEnd, Status};
//! use bz_plugin_api::{abi_stable::std_types::{RSlice, RStr}, Event, EventKind};
//!
//! let json = r#"{"status": "stopped", "message": "stopped early", "exit_code": 0, "best": 0.25}"#;
//! let event = Event { kind: EventKind::RUN_END, epoch: 3, global_step: 30, batch_in_epoch: 0,
//!                     metrics: RSlice::from_slice(&[]), payload_json: RStr::from(json) };
//! let end = RunEnd::from_event(&event).unwrap();
//! assert_eq!((end.status, end.exit_code, end.best), (Status::Stopped, 0, Some(0.25)));
//! ```

use crate::{Event, EventKind, RunStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A payload that belongs to one event kind.
///
/// ```
/// use bz_plugin_api::payload::{EventPayload, TrainLoopStart};
/// use bz_plugin_api::EventKind;
/// assert_eq!(TrainLoopStart::KIND, EventKind::TRAIN_LOOP_START);
/// ```
pub trait EventPayload: Serialize + DeserializeOwned {
    /// The event kind that carries this payload.
    const KIND: EventKind;

    /// The event's payload, when the event is of [`Self::KIND`] and its JSON reads as this type.
    ///
    /// ```
    /// use bz_plugin_api::payload::{CheckpointSaved, EventPayload};
    /// use bz_plugin_api::{abi_stable::std_types::{RSlice, RStr}, Event, EventKind};
    /// let event = Event { kind: EventKind::CHECKPOINT_SAVED, epoch: 1, global_step: 10, batch_in_epoch: 0,
    ///                     metrics: RSlice::from_slice(&[]), payload_json: RStr::from(r#"{"path": "/r/c", "is_best": true}"#) };
    /// assert!(CheckpointSaved::from_event(&event).unwrap().is_best);
    /// ```
    fn from_event(event: &Event<'_>) -> Option<Self> {
        if event.kind != Self::KIND {
            return None;
        }
        serde_json::from_str(event.payload_json.as_str()).ok()
    }
}

/// RUN_START: where the run writes, what it trains, and on what.
///
/// ```
/// use bz_plugin_api::payload::RunStart;
/// let p: RunStart = serde_json::from_str(r#"{"run_dir": "/runs/a", "epochs": 5, "future_key": 1}"#).unwrap();
/// assert_eq!((p.run_dir.as_str(), p.epochs, p.resumed), ("/runs/a", 5, false));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunStart {
    /// The run directory, absolute.
    pub run_dir: String,
    /// Its last component.
    pub run_name: Option<String>,
    /// The resolved config as TOML.
    pub config: String,
    /// A one-line description of the data set.
    pub data: String,
    /// `cpu`, `cuda(0)`, …
    pub device: String,
    pub threads: i64,
    pub seed: u64,
    /// The epoch the run trains up to (1-based, inclusive).
    pub epochs: u64,
    pub batch_size: u64,
    pub batches_per_epoch: u64,
    /// Trainable parameters.
    pub params: i64,
    /// The model's layer table, as printed by `bz validate`.
    pub model_summary: String,
    /// Continued from a checkpoint (`bz train --resume`).
    pub resumed: bool,
    /// Every metric this run reports, as `split/name`.
    pub metric_names: Vec<String>,
    /// The config's scalar settings as flat `section.key` pairs.
    pub hyperparameters: Map<String, Value>,
}

impl EventPayload for RunStart {
    const KIND: EventKind = EventKind::RUN_START;
}

/// CHECKPOINT_LOADED: the checkpoint a resumed run continues from.
///
/// ```
/// use bz_plugin_api::payload::CheckpointLoaded;
/// let p: CheckpointLoaded = serde_json::from_str(r#"{"path": "/runs/a/checkpoints/step-00000010"}"#).unwrap();
/// assert!(p.path.ends_with("step-00000010"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointLoaded {
    pub path: String,
}

impl EventPayload for CheckpointLoaded {
    const KIND: EventKind = EventKind::CHECKPOINT_LOADED;
}

/// TRAIN_LOOP_START: how many batches the epoch has (a resumed epoch starts at `Event::batch_in_epoch`).
///
/// ```
/// use bz_plugin_api::payload::TrainLoopStart;
/// assert_eq!(serde_json::to_string(&TrainLoopStart { batches: 12 }).unwrap(), r#"{"batches":12}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainLoopStart {
    pub batches: u64,
}

impl EventPayload for TrainLoopStart {
    const KIND: EventKind = EventKind::TRAIN_LOOP_START;
}

/// CHECKPOINT_SAVED: the checkpoint directory just written, and whether it is the run's best so far.
///
/// ```
/// use bz_plugin_api::payload::CheckpointSaved;
/// let p = CheckpointSaved { path: "/runs/a/checkpoints/step-00000020".into(), is_best: false };
/// assert_eq!(serde_json::to_value(&p).unwrap()["is_best"], false);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointSaved {
    pub path: String,
    pub is_best: bool,
}

impl EventPayload for CheckpointSaved {
    const KIND: EventKind = EventKind::CHECKPOINT_SAVED;
}

/// The epoch's line of the run's `metrics.jsonl` (`"event": "epoch"`), which EPOCH_END carries too.
///
/// ```
/// use bz_plugin_api::payload::EpochSummary;
/// let s: EpochSummary = serde_json::from_str(r#"{"event": "epoch", "epoch": 2, "lr": 0.1, "val/loss": 0.5}"#).unwrap();
/// assert_eq!((s.epoch, s.metric("val/loss")), (2, Some(0.5)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochSummary {
    /// Always `"epoch"`: tells this line from `step` and `throughput` lines in `metrics.jsonl`.
    pub event: String,
    /// 1-based.
    pub epoch: u64,
    pub step: u64,
    /// The learning rate the next optimizer step uses.
    pub lr: f64,
    pub epoch_time_s: f64,
    pub train_time_s: f64,
    pub samples_per_s: f64,
    /// Rows are true classes, columns predicted ones (with `metrics.confusion_matrix = true`).
    #[serde(rename = "val/confusion_matrix", skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    /// Metric values by `split/name` key (`train/loss`, `val/accuracy`, …), and keys newer than this crate.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, Value>,
}

impl Default for EpochSummary {
    fn default() -> EpochSummary {
        EpochSummary {
            event: "epoch".into(),
            epoch: 0,
            step: 0,
            lr: 0.0,
            epoch_time_s: 0.0,
            train_time_s: 0.0,
            samples_per_s: 0.0,
            confusion_matrix: None,
            metrics: BTreeMap::new(),
        }
    }
}

impl EpochSummary {
    /// A metric's value by its `split/name` key.
    ///
    /// ```
    /// use bz_plugin_api::payload::EpochSummary;
    /// let mut s = EpochSummary::default();
    /// s.metrics.insert("train/loss".into(), 0.5.into());
    /// assert_eq!(s.metric("train/loss"), Some(0.5));
    /// ```
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).and_then(Value::as_f64)
    }
}

/// Parameter and gradient histograms, sent when a plugin returned [`crate::Directive::WANT_HISTOGRAMS`].
///
/// ```
/// use bz_plugin_api::payload::Histograms;
/// let h: Histograms = serde_json::from_str(r#"{"weights": {"fc.weight": {"min": 0.0}}}"#).unwrap();
/// assert!(h.gradients.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Histograms {
    /// `{parameter: {"min", "max", "num", "sum", "sum_squares", "bucket_limit", "bucket", "nonfinite"}}`.
    pub weights: Map<String, Value>,
    /// The same for the gradients of the epoch's last optimizer step.
    pub gradients: Map<String, Value>,
}

/// Per-class precision–recall counts on the validation split (`val/pr_curves`), sent when a plugin returned
/// [`crate::Directive::WANT_PR_CURVES`] (since 1.2.0).
///
/// Threshold `i` is `i / (num_thresholds - 1)`; a sample counts as predicted positive for a class at threshold `i`
/// when `floor(p * (num_thresholds - 1)) >= i`, `p` its probability of that class (softmax, or sigmoid for
/// `bce_with_logits`: the probabilities `bz predict` writes). This is how TensorBoard's `pr_curve.pb` bins.
///
/// ```
/// use bz_plugin_api::payload::PrCurves;
/// let p: PrCurves = serde_json::from_str(r#"{"num_thresholds": 3, "classes": [
///     {"index": 0, "label": "cat", "tp": [2, 1, 0], "fp": [3, 1, 0], "tn": [0, 2, 3], "fn": [0, 1, 2]}]}"#).unwrap();
/// let cat = &p.classes[0];
/// assert_eq!((cat.label.as_str(), cat.tp[0] + cat.fn_[0], cat.precision(1)), ("cat", 2, 0.5));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrCurves {
    pub num_thresholds: u32,
    /// One per class, in class-id order.
    pub classes: Vec<ClassPrCurve>,
}

/// One class's counts at each threshold (each list has `num_thresholds` entries).
///
/// ```
/// use bz_plugin_api::payload::ClassPrCurve;
/// let c = ClassPrCurve { index: 1, label: "1".into(), tp: vec![4, 0], fp: vec![6, 0], tn: vec![0, 6], fn_: vec![0, 4] };
/// assert_eq!((c.precision(0), c.recall(0), c.precision(1)), (0.4, 1.0, 0.0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassPrCurve {
    /// The class id.
    pub index: u64,
    /// The class name the data gave it, else the id as text.
    pub label: String,
    pub tp: Vec<u64>,
    pub fp: Vec<u64>,
    pub tn: Vec<u64>,
    #[serde(rename = "fn")]
    pub fn_: Vec<u64>,
}

impl ClassPrCurve {
    /// `tp / (tp + fp)` at threshold `i` (0 when nothing is predicted positive).
    ///
    /// ```
    /// use bz_plugin_api::payload::ClassPrCurve;
    /// let c = ClassPrCurve { tp: vec![1], fp: vec![3], ..Default::default() };
    /// assert_eq!(c.precision(0), 0.25);
    /// ```
    pub fn precision(&self, i: usize) -> f64 {
        ratio(self.tp[i], self.tp[i] + self.fp[i])
    }

    /// `tp / (tp + fn)` at threshold `i` (0 when the class has no samples).
    ///
    /// ```
    /// use bz_plugin_api::payload::ClassPrCurve;
    /// let c = ClassPrCurve { tp: vec![1], fn_: vec![1], ..Default::default() };
    /// assert_eq!(c.recall(0), 0.5);
    /// ```
    pub fn recall(&self, i: usize) -> f64 {
        ratio(self.tp[i], self.tp[i] + self.fn_[i])
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The first misclassified validation samples of image data (`val/misclassified`), sent when a plugin returned
/// [`crate::Directive::WANT_MISCLASSIFIED`] (since 1.3.0).
///
/// Bounded: at most [`Misclassified::MAX_SAMPLES`] samples, each at most [`Misclassified::MAX_SIDE`] pixels a side
/// (larger images are averaged down by a whole factor). A reader checks what it gets with
/// [`Misclassified::pixels`], which refuses anything outside these bounds.
///
/// ```
/// use bz_plugin_api::payload::{Misclassified, MisclassifiedSample};
/// let m: Misclassified = serde_json::from_str(r#"{"channels": 1, "height": 2, "width": 2, "total": 7, "samples": [
///     {"index": 3, "target": 1, "predicted": 7, "target_label": "1", "predicted_label": "7", "pixels": "AP8A/w=="}]}"#).unwrap();
/// assert_eq!(m.pixels(&m.samples[0]), Some(vec![0, 255, 0, 255]));
/// assert_eq!(m.pixels(&MisclassifiedSample { pixels: "AP8=".into(), ..Default::default() }), None, "2 bytes, not 4");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Misclassified {
    /// 1 (gray) or 3 (RGB).
    pub channels: u32,
    /// Every sample's size as sent (after downscaling).
    pub height: u32,
    pub width: u32,
    /// Misclassified validation samples in all; `samples` holds the first of them by index.
    pub total: u64,
    pub samples: Vec<MisclassifiedSample>,
}

/// One misclassified validation sample.
///
/// ```
/// use bz_plugin_api::payload::MisclassifiedSample;
/// let s: MisclassifiedSample = serde_json::from_str(r#"{"index": 4, "target": 2, "predicted": 0}"#).unwrap();
/// assert_eq!((s.index, s.target, s.predicted, s.pixels.as_str()), (4, 2, 0, ""));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MisclassifiedSample {
    /// Its position in the validation split.
    pub index: u64,
    /// The true and the predicted class ids.
    pub target: u64,
    pub predicted: u64,
    /// Their names, as the data gave them, else the ids as text.
    pub target_label: String,
    pub predicted_label: String,
    /// `channels × height × width` bytes, one plane per channel (the data's layout), standard base64: the sample
    /// with the normalisation undone, its values scaled from [0, 1] to 0–255.
    pub pixels: String,
}

impl Misclassified {
    /// The most samples the host sends.
    pub const MAX_SAMPLES: usize = 64;
    /// The longest side, in pixels, of a sample as sent.
    pub const MAX_SIDE: u32 = 64;

    /// A sample's pixels (planar, `channels × height × width`), or `None` when the shape is outside the bounds
    /// or the pixels are not valid base64 of exactly that many bytes.
    ///
    /// ```
    /// use bz_plugin_api::payload::{Misclassified, MisclassifiedSample};
    /// let big = Misclassified { channels: 1, height: 65, width: 1, ..Default::default() };
    /// assert_eq!(big.pixels(&MisclassifiedSample::default()), None);
    /// ```
    pub fn pixels(&self, sample: &MisclassifiedSample) -> Option<Vec<u8>> {
        use base64::Engine;
        let side_ok = |s: u32| (1..=Self::MAX_SIDE).contains(&s);
        if !matches!(self.channels, 1 | 3) || !side_ok(self.height) || !side_ok(self.width) {
            return None;
        }
        let len = (self.channels * self.height * self.width) as usize;
        // Checked before decoding, so a huge string is refused without allocating for it.
        if sample.pixels.len() != len.div_ceil(3) * 4 {
            return None;
        }
        base64::engine::general_purpose::STANDARD.decode(&sample.pixels).ok().filter(|p| p.len() == len)
    }
}

/// EPOCH_END: the epoch's `metrics.jsonl` line, plus what the host measured about the epoch.
///
/// ```
/// use bz_plugin_api::payload::EpochEnd;
/// let p: EpochEnd = serde_json::from_str(r#"{"event": "epoch", "epoch": 1, "train/loss": 0.7, "is_best": true,
///                                            "phases_s": {"forward": 0.2}}"#).unwrap();
/// assert!(p.is_best && p.summary.metric("train/loss") == Some(0.7) && p.phases_s["forward"] == 0.2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpochEnd {
    #[serde(flatten)]
    pub summary: EpochSummary,
    /// The monitored metric (`checkpoint.monitor`) improved this epoch.
    pub is_best: bool,
    /// Seconds per phase of this epoch (`data`, `forward`, `backward`, `train_metrics`, `optimizer`, `validation`,
    /// `checkpoint`).
    pub phases_s: BTreeMap<String, f64>,
    /// Seconds spent in each callback since the run started.
    pub plugins_s: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Histograms>,
    /// Since 1.2.0, when asked for with [`crate::Directive::WANT_PR_CURVES`].
    #[serde(rename = "val/pr_curves", skip_serializing_if = "Option::is_none")]
    pub pr_curves: Option<PrCurves>,
    /// Since 1.3.0, when asked for with [`crate::Directive::WANT_MISCLASSIFIED`].
    #[serde(rename = "val/misclassified", skip_serializing_if = "Option::is_none")]
    pub misclassified: Option<Misclassified>,
}

impl EventPayload for EpochEnd {
    const KIND: EventKind = EventKind::EPOCH_END;
}

/// How a run ended, as RUN_END's `status` says it.
///
/// ```
/// use bz_plugin_api::{payload::Status, RunStatus};
/// assert_eq!(serde_json::to_string(&Status::Interrupted).unwrap(), r#""interrupted""#);
/// assert_eq!(RunStatus::from(Status::Failed), RunStatus::FAILED);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    /// A callback asked to stop early.
    Stopped,
    /// Ctrl-C: a checkpoint was saved to resume from.
    Interrupted,
    Failed,
}

impl From<Status> for RunStatus {
    fn from(s: Status) -> RunStatus {
        match s {
            Status::Completed => RunStatus::COMPLETED,
            Status::Stopped => RunStatus::STOPPED,
            Status::Interrupted => RunStatus::INTERRUPTED,
            Status::Failed => RunStatus::FAILED,
        }
    }
}

/// RUN_END: how the run ended, the line bz prints about it, and the process exit code.
///
/// With `data.test` configured, a completed or stopped run's RUN_END event also carries the test split's metrics
/// in `Event::metrics` (split `"test"`, e.g. `test/accuracy`): the best checkpoint's (else the last weights'),
/// evaluated after training. Other RUN_END events carry no metrics.
///
/// ```
/// use bz_plugin_api::payload::{RunEnd, Status};
/// let p: RunEnd = serde_json::from_str(r#"{"status": "failed", "message": "the loss became NaN", "exit_code": 3}"#).unwrap();
/// assert_eq!((p.status, p.exit_code, p.best), (Status::Failed, 3, None));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub status: Status,
    #[serde(default)]
    pub message: String,
    /// 0 completed or stopped, 1 failed, 3 the loss stopped being finite, 130 interrupted.
    #[serde(default)]
    pub exit_code: i32,
    /// The monitored metric's best value (completed and stopped runs that measured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<f64>,
}

impl EventPayload for RunEnd {
    const KIND: EventKind = EventKind::RUN_END;
}

impl RunEnd {
    /// [`EventPayload::from_event`], callable without importing the trait.
    ///
    /// ```
    /// use bz_plugin_api::payload::RunEnd;
    /// use bz_plugin_api::{abi_stable::std_types::{RSlice, RStr}, Event, EventKind};
    /// let event = Event { kind: EventKind::EPOCH_END, epoch: 1, global_step: 1, batch_in_epoch: 0,
    ///                     metrics: RSlice::from_slice(&[]), payload_json: RStr::from("{}") };
    /// assert!(RunEnd::from_event(&event).is_none(), "not a RUN_END");
    /// ```
    pub fn from_event(event: &Event<'_>) -> Option<RunEnd> {
        <RunEnd as EventPayload>::from_event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_end_round_trips_through_the_flat_json_bz_writes() {
        let mut summary = EpochSummary { epoch: 2, step: 20, lr: 0.1, confusion_matrix: Some(vec![vec![1, 0], vec![0, 1]]), ..Default::default() };
        summary.metrics.insert("val/loss".into(), 0.5.into());
        let end = EpochEnd { summary, is_best: true, phases_s: [("data".into(), 0.1)].into(), ..Default::default() };
        let v = serde_json::to_value(&end).unwrap();
        assert_eq!(v["event"], "epoch");
        assert_eq!(v["val/loss"], 0.5);
        assert_eq!(v["val/confusion_matrix"][1][1], 1);
        assert!(v.get("histograms").is_none() && v.get("val/pr_curves").is_none() && v.get("val/misclassified").is_none());
        assert_eq!(serde_json::from_value::<EpochEnd>(v).unwrap(), end);
    }
}
