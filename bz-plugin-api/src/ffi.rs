//! Every type that crosses the boundary between `bz` and a plugin library.
//!
//! Layout rule for 1.x: no checked struct ever gets a field. New hooks are new [`EventKind`] values, new data are
//! new keys in [`Event::payload_json`], new flags are new bits. abi_stable rejects an older plugin in a newer host
//! when a prefix struct grew (its layout check allows only the other direction), so growing a struct would strand
//! every installed plugin.

// abi_stable names the prefix references `Foo_Ref`; the names are part of the interface.
#![allow(non_camel_case_types)]
// sabi_trait expands to impls inside a const block, which rustc 1.95 lints.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// A lifecycle event's kind. The 14 kinds of plugin API 1.0 are the constants below; later versions only add
/// values, so a plugin must ignore kinds it does not know.
///
/// ```
/// use bz_plugin_api::EventKind;
/// assert_eq!(EventKind::EPOCH_END.name(), "EPOCH_END");
/// assert_eq!(EventKind::ALL.len(), 14);
/// ```
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKind(pub u16);

impl EventKind {
    pub const RUN_START: EventKind = EventKind(0);
    pub const CHECKPOINT_LOADED: EventKind = EventKind(1);
    pub const EPOCH_START: EventKind = EventKind(2);
    pub const TRAIN_LOOP_START: EventKind = EventKind(3);
    pub const TRAIN_BATCH_START: EventKind = EventKind(4);
    pub const TRAIN_BATCH_END: EventKind = EventKind(5);
    pub const TRAIN_LOOP_END: EventKind = EventKind(6);
    pub const VAL_LOOP_START: EventKind = EventKind(7);
    pub const VAL_BATCH_START: EventKind = EventKind(8);
    pub const VAL_BATCH_END: EventKind = EventKind(9);
    pub const VAL_LOOP_END: EventKind = EventKind(10);
    pub const CHECKPOINT_SAVED: EventKind = EventKind(11);
    pub const EPOCH_END: EventKind = EventKind(12);
    pub const RUN_END: EventKind = EventKind(13);

    /// The kinds of API 1.0, in the order a run emits them.
    pub const ALL: [EventKind; 14] = [
        Self::RUN_START,
        Self::CHECKPOINT_LOADED,
        Self::EPOCH_START,
        Self::TRAIN_LOOP_START,
        Self::TRAIN_BATCH_START,
        Self::TRAIN_BATCH_END,
        Self::TRAIN_LOOP_END,
        Self::VAL_LOOP_START,
        Self::VAL_BATCH_START,
        Self::VAL_BATCH_END,
        Self::VAL_LOOP_END,
        Self::CHECKPOINT_SAVED,
        Self::EPOCH_END,
        Self::RUN_END,
    ];

    /// The kind's upper-case name, or `UNKNOWN` for kinds newer than this crate.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 14] = [
            "RUN_START",
            "CHECKPOINT_LOADED",
            "EPOCH_START",
            "TRAIN_LOOP_START",
            "TRAIN_BATCH_START",
            "TRAIN_BATCH_END",
            "TRAIN_LOOP_END",
            "VAL_LOOP_START",
            "VAL_BATCH_START",
            "VAL_BATCH_END",
            "VAL_LOOP_END",
            "CHECKPOINT_SAVED",
            "EPOCH_END",
            "RUN_END",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("UNKNOWN")
    }
}

/// One metric value: `name` (e.g. `loss`) within `split` (`train`, `val`, or empty for run-level values).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Metric<'a> {
    pub name: RStr<'a>,
    pub split: RStr<'a>,
    pub value: f64,
}

/// A lifecycle event. Borrowed for the duration of one call: copy what you keep.
///
/// `payload_json` is a JSON object (or `null`) with the event's extra data, e.g. RUN_START carries `config`,
/// `run_dir`, `hyperparameters`, `model_summary`; EPOCH_END carries `lr`, `epoch_time_s`, `samples_per_s`;
/// CHECKPOINT_SAVED carries `path` and `is_best`. Unknown keys must be ignored.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Event<'a> {
    pub kind: EventKind,
    /// 1-based epoch; 0 before the first.
    pub epoch: u64,
    pub global_step: u64,
    pub batch_in_epoch: u64,
    pub metrics: RSlice<'a, Metric<'a>>,
    pub payload_json: RStr<'a>,
}

impl<'a> Event<'a> {
    /// The value of `split/name`, e.g. `event.metric("val", "loss")`.
    pub fn metric(&self, split: &str, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.split.as_str() == split && m.name.as_str() == name).map(|m| m.value)
    }

    /// The value of a metric by its `split/name` key, e.g. `val/accuracy`.
    pub fn metric_by_key(&self, key: &str) -> Option<f64> {
        let (split, name) = key.split_once('/').unwrap_or(("", key));
        self.metric(split, name)
    }

    /// Every metric that has a split, keyed `split/name` as metrics.jsonl writes them, e.g. `("val/loss", 0.31)`;
    /// what a logger writes at EPOCH_END, or at RUN_END for the test split.
    pub fn split_metrics(&self) -> impl Iterator<Item = (String, f64)> + '_ {
        self.metrics.iter().filter(|m| !m.split.is_empty()).map(|m| (format!("{}/{}", m.split, m.name), m.value))
    }

    /// The payload parsed as JSON (`Null` when empty or invalid).
    pub fn payload(&self) -> serde_json::Value {
        serde_json::from_str(self.payload_json.as_str()).unwrap_or(serde_json::Value::Null)
    }
}

/// What a callback asks of the trainer: bit flags, unknown bits are ignored by older hosts.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directive(pub u32);

impl Directive {
    pub const NONE: Directive = Directive(0);
    /// Finish the current epoch (validation, checkpoint, EPOCH_END), then end the run.
    pub const STOP_TRAINING: Directive = Directive(1);
    /// Since 1.0.1. Returned before an epoch's EPOCH_END (e.g. from EPOCH_START): that EPOCH_END's payload gets
    /// `histograms`, `{"weights": {param: h}, "gradients": {param: h}}`, where each `h` is
    /// `{"min", "max", "num", "sum", "sum_squares", "bucket_limit": [right edges], "bucket": [counts]}` (the
    /// gradients of the epoch's last optimizer step). Computing them costs a pass over every parameter, so the
    /// host does it only when asked; older hosts ignore the bit.
    ///
    /// ```
    /// use bz_plugin_api::{Directive, Event, EventKind};
    /// fn on_epoch_start(event: &Event<'_>) -> Directive {
    ///     if event.kind == EventKind::EPOCH_START && event.epoch % 5 == 0 { Directive::WANT_HISTOGRAMS } else { Directive::NONE }
    /// }
    /// ```
    pub const WANT_HISTOGRAMS: Directive = Directive(2);
    /// Since 1.2.0. Returned before an epoch's EPOCH_END (e.g. from EPOCH_START) of a classification run with a
    /// validation split: that EPOCH_END's payload gets `val/pr_curves`
    /// ([`crate::payload::PrCurves`]), per class the true/false positive/negative counts of "probability ≥
    /// threshold" on the validation split at evenly spaced thresholds in [0, 1]. Older hosts ignore the bit.
    ///
    /// ```
    /// use bz_plugin_api::{Directive, Event, EventKind};
    /// fn on_epoch_start(event: &Event<'_>) -> Directive {
    ///     if event.kind == EventKind::EPOCH_START { Directive::WANT_HISTOGRAMS | Directive::WANT_PR_CURVES } else { Directive::NONE }
    /// }
    /// assert!((Directive::WANT_HISTOGRAMS | Directive::WANT_PR_CURVES).contains(Directive::WANT_PR_CURVES));
    /// ```
    pub const WANT_PR_CURVES: Directive = Directive(4);
    /// Since 1.3.0. Returned before an epoch's EPOCH_END (e.g. from EPOCH_START) of a classification run on image
    /// data (samples `[C, H, W]`, C 1 or 3) with a validation split: that EPOCH_END's payload gets
    /// `val/misclassified` ([`crate::payload::Misclassified`]), the first validation samples (by index) the model
    /// got wrong, as 8-bit pixels with their true and predicted classes. Bounded in count and size; older hosts
    /// ignore the bit.
    ///
    /// ```
    /// use bz_plugin_api::{Directive, Event, EventKind};
    /// fn on_epoch_start(event: &Event<'_>) -> Directive {
    ///     if event.kind == EventKind::EPOCH_START && event.epoch % 5 == 0 { Directive::WANT_MISCLASSIFIED } else { Directive::NONE }
    /// }
    /// assert!(!Directive::WANT_PR_CURVES.contains(Directive::WANT_MISCLASSIFIED));
    /// ```
    pub const WANT_MISCLASSIFIED: Directive = Directive(8);

    pub fn contains(self, other: Directive) -> bool {
        other.0 != 0 && self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Directive {
    type Output = Directive;
    fn bitor(self, rhs: Directive) -> Directive {
        Directive(self.0 | rhs.0)
    }
}

/// How a run ended, given to [`crate::Callback::finish`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunStatus(pub u8);

impl RunStatus {
    pub const COMPLETED: RunStatus = RunStatus(0);
    /// A callback asked to stop early.
    pub const STOPPED: RunStatus = RunStatus(1);
    pub const INTERRUPTED: RunStatus = RunStatus(2);
    pub const FAILED: RunStatus = RunStatus(3);

    pub fn name(self) -> &'static str {
        match self {
            RunStatus::COMPLETED => "completed",
            RunStatus::STOPPED => "stopped",
            RunStatus::INTERRUPTED => "interrupted",
            RunStatus::FAILED => "failed",
            _ => "unknown",
        }
    }
}

/// An error from a plugin: a code and a one-line message for the user.
///
/// ```
/// use bz_plugin_api::PluginError;
/// let e = PluginError::config("`log_every` must be positive");
/// assert_eq!(e.code, PluginError::CONFIG);
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    pub code: u32,
    pub message: RString,
}

impl PluginError {
    pub const OTHER: u32 = 1;
    /// The plugin's configuration is invalid.
    pub const CONFIG: u32 = 2;
    /// The plugin panicked; the message is the panic's.
    pub const PANIC: u32 = 3;
    /// An I/O or network failure.
    pub const IO: u32 = 4;

    pub fn new(code: u32, message: impl Into<String>) -> PluginError {
        PluginError { code, message: RString::from(message.into()) }
    }

    pub fn config(message: impl Into<String>) -> PluginError {
        PluginError::new(Self::CONFIG, message)
    }

    pub fn other(message: impl Into<String>) -> PluginError {
        PluginError::new(Self::OTHER, message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_str())
    }
}

impl std::error::Error for PluginError {}

/// What a plugin library is, without creating anything.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginMetadata {
    pub name: RString,
    pub version: RString,
    pub description: RString,
    /// Bit flags: [`PluginMetadata::CALLBACK`], [`PluginMetadata::TUNER`].
    pub kinds: u32,
    /// The bz-plugin-api version the plugin was built against.
    pub api_version: RString,
}

impl PluginMetadata {
    pub const CALLBACK: u32 = 1;
    pub const TUNER: u32 = 2;
}

/// A trial proposed by a tuner.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct Trial {
    pub id: u64,
    /// `{"config.key": value, ...}`.
    pub params_json: RString,
}

/// The final state of a trial, given to [`crate::Tuner::tell`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrialState(pub u8);

impl TrialState {
    pub const COMPLETE: TrialState = TrialState(0);
    pub const PRUNED: TrialState = TrialState(1);
    pub const FAILED: TrialState = TrialState(2);
}

/// The FFI face of a callback; plugin authors implement [`crate::Callback`] instead.
#[sabi_trait]
pub trait CallbackFfi {
    fn subscriptions(&self) -> RVec<EventKind>;
    fn on_event(&mut self, event: &Event<'_>) -> RResult<Directive, PluginError>;
    #[sabi(last_prefix_field)]
    fn finish(&mut self, status: RunStatus) -> RResult<(), PluginError>;
}

/// An owned callback object created by a plugin.
pub type CallbackBox = CallbackFfi_TO<'static, RBox<()>>;

/// The FFI face of a tuner (ask and tell); plugin authors implement [`crate::Tuner`] instead.
#[sabi_trait]
pub trait TunerFfi {
    fn ask(&mut self) -> RResult<ROption<Trial>, PluginError>;
    fn report(&mut self, trial: u64, step: u64, value: f64) -> RResult<bool, PluginError>;
    fn tell(&mut self, trial: u64, state: TrialState, value: ROption<f64>) -> RResult<(), PluginError>;
    #[sabi(last_prefix_field)]
    fn summary(&self) -> RString;
    /// Since 1.3.0: how a trial ended, with every objective value and constraint value, as a
    /// [`crate::outcome::TrialOutcome`] in JSON (`{"values": [...], "constraints": [...]}`; later versions only
    /// add keys). The host calls this instead of `tell`. A plugin built against 1.2 has no such entry in its
    /// vtable; then this default runs on the host's side and passes a single objective to the plugin's `tell`,
    /// and refuses several objectives or constraints, which such a plugin cannot store.
    ///
    /// ```
    /// use bz_plugin_api::outcome::TrialOutcome;
    /// use bz_plugin_api::{TrialState, TunerBox};
    /// fn finish(tuner: &mut TunerBox, trial: u64, loss: f64, seconds: f64) {
    ///     let outcome = TrialOutcome { values: vec![loss, seconds], constraints: vec![] }.to_json();
    ///     if let Err(e) = tuner.tell_json(trial, TrialState::COMPLETE, outcome.as_str().into()).into_result() {
    ///         eprintln!("not recorded: {e}");
    ///     }
    /// }
    /// ```
    fn tell_json(&mut self, trial: u64, state: TrialState, outcome: RStr<'_>) -> RResult<(), PluginError> {
        match crate::outcome::TrialOutcome::from_json(outcome.as_str()).and_then(|o| o.single().map_err(PluginError::config)) {
            Ok(value) => self.tell(trial, state, value.into()),
            Err(e) => RResult::RErr(e),
        }
    }
}

/// An owned tuner object created by a plugin.
pub type TunerBox = TunerFfi_TO<'static, RBox<()>>;

/// Functions the host offers to plugins. Each plugin library has its own `std` (panic hook, loggers), so
/// logging goes through the host.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostApi_Ref)))]
#[sabi(missing_field(option))]
pub struct HostApi {
    /// `level`: 0 error, 1 warn, 2 info, 3 debug.
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
    pub bz_version: extern "C" fn() -> RString,
    /// The run directory; plugins write their files under it.
    #[sabi(last_prefix_field)]
    pub run_dir: extern "C" fn() -> RString,
}

/// The root module every plugin library exports (written by [`crate::export_plugin!`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = BzPluginMod_Ref)))]
#[sabi(missing_field(option))]
pub struct BzPluginMod {
    pub metadata: extern "C" fn() -> PluginMetadata,
    /// The default configuration, a JSON object.
    pub default_config: extern "C" fn() -> RString,
    /// A JSON Schema of the configuration.
    pub config_schema: extern "C" fn() -> RString,
    /// Checks a configuration (JSON); returns it normalised (defaults filled in) or a CONFIG error.
    pub validate_config: extern "C" fn(config: RStr<'_>) -> RResult<RString, PluginError>,
    pub create_callback: extern "C" fn(host: HostApi_Ref, config: RStr<'_>) -> RResult<ROption<CallbackBox>, PluginError>,
    #[sabi(last_prefix_field)]
    pub create_tuner: extern "C" fn(host: HostApi_Ref, config: RStr<'_>, space: RStr<'_>) -> RResult<ROption<TunerBox>, PluginError>,
}

impl RootModule for BzPluginMod_Ref {
    declare_root_module_statics! {BzPluginMod_Ref}
    const BASE_NAME: &'static str = "bz_plugin";
    const NAME: &'static str = "bz_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
