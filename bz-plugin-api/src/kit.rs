//! The authoring kit: plain Rust traits for plugin authors, and the glue that turns them into the FFI root module
//! with every call wrapped in `catch_unwind` (a panic crossing the FFI boundary would abort bz).

use crate::config::ConfigType;
use crate::ffi::*;
use crate::outcome::TrialOutcome;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RNone, ROption, RResult, RSome, RStr, RString, RVec};
use serde_json::Value;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The interface version this crate speaks (also exported by [`crate::export_plugin!`] as `bz_plugin_abi`, so a
/// future bz can name the mismatch even if it no longer uses abi_stable).
pub const ABI_VERSION: u32 = 1;

/// This crate's version, recorded in each plugin's metadata.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A plugin library: its identity, its configuration, and the objects it creates.
///
/// See the crate documentation for a complete plugin.
pub trait Plugin: 'static {
    const NAME: &'static str;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    /// What the plugin creates: [`PluginMetadata::CALLBACK`] and/or [`PluginMetadata::TUNER`].
    const KINDS: u32 = PluginMetadata::CALLBACK;

    /// The configuration's type, from which the three methods below are derived: `ConfigType::of::<Config>()`
    /// for a [`PluginConfig`](crate::config::PluginConfig) `Config` (see [`crate::config`]). The default,
    /// [`ConfigType::UNTYPED`], accepts any table; a plugin may instead implement the three methods by hand.
    ///
    /// ```
    /// # #[derive(Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    /// # #[serde(deny_unknown_fields, default)]
    /// # struct Config { every: u64 }
    /// # impl bz_plugin_api::config::PluginConfig for Config {}
    /// use bz_plugin_api::{config::ConfigType, Plugin};
    /// struct P;
    /// impl Plugin for P {
    ///     const NAME: &'static str = "p";
    ///     const VERSION: &'static str = "0.1.0";
    ///     const DESCRIPTION: &'static str = "an example";
    ///     const CONFIG: ConfigType = ConfigType::of::<Config>();
    /// }
    /// assert!(P::validate_config(&serde_json::json!({ "every": 2 })).is_ok());
    /// assert!(P::validate_config(&serde_json::json!({ "evry": 2 })).unwrap_err().message.contains("did you mean `every`?"));
    /// ```
    const CONFIG: ConfigType = ConfigType::UNTYPED;

    /// The configuration used when the `[plugins.NAME]` section has no keys.
    fn default_config() -> Value {
        Self::CONFIG.defaults()
    }

    /// A JSON Schema for `bz plugins info` and editors.
    fn config_schema() -> Value {
        Self::CONFIG.schema()
    }

    /// Checks the user's configuration (the `[plugins.NAME]` table as JSON, without `enabled`/`on_error`) and
    /// returns it normalised. Called by `bz validate` and before training; errors should name the key, in the
    /// form `` `key`: message `` (see [`crate::config::key_error`]) so that bz reports `plugins.NAME.key`.
    fn validate_config(config: &Value) -> Result<Value, PluginError> {
        Self::CONFIG.validate(config)
    }

    /// Creates the run's callback, or `None` if this plugin has none.
    fn create_callback(_host: Host, _config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
        Ok(None)
    }

    /// Creates a tuner for a search space (JSON), or `None` if this plugin has none.
    fn create_tuner(_host: Host, _config: Value, _space: Value) -> Result<Option<Box<dyn Tuner>>, PluginError> {
        Ok(None)
    }
}

/// Receives lifecycle events.
pub trait Callback {
    /// The kinds this callback wants; others are never sent (no cost per batch for an epoch-level plugin).
    fn subscriptions(&self) -> Vec<EventKind>;
    fn on_event(&mut self, event: &Event<'_>) -> Result<Directive, PluginError>;
    /// Called once when the run ends, however it ends.
    fn finish(&mut self, _status: RunStatus) -> Result<(), PluginError> {
        Ok(())
    }
}

/// Ask-and-tell hyperparameter search.
pub trait Tuner {
    /// The next trial, or `None` when the study is done.
    fn ask(&mut self) -> Result<Option<Trial>, PluginError>;
    /// An intermediate objective value; returns true when the trial should be pruned.
    fn report(&mut self, trial: u64, step: u64, value: f64) -> Result<bool, PluginError>;
    fn tell(&mut self, trial: u64, state: TrialState, value: Option<f64>) -> Result<(), PluginError>;
    /// JSON: best parameters and value, trial counts.
    fn summary(&self) -> String;
    /// Since 1.3.0: how a trial ended, with every objective and constraint value (what bz sends). The default
    /// takes one objective without constraints and calls [`Tuner::tell`]; a tuner that handles several
    /// objectives or constraints overrides it.
    ///
    /// ```
    /// use bz_plugin_api::outcome::TrialOutcome;
    /// use bz_plugin_api::{PluginError, Trial, TrialState, Tuner};
    /// struct Pareto(Vec<Vec<f64>>);
    /// impl Tuner for Pareto {
    ///     fn ask(&mut self) -> Result<Option<Trial>, PluginError> { Ok(None) }
    ///     fn report(&mut self, _: u64, _: u64, _: f64) -> Result<bool, PluginError> { Ok(false) }
    ///     fn tell(&mut self, t: u64, s: TrialState, v: Option<f64>) -> Result<(), PluginError> {
    ///         self.tell_outcome(t, s, &TrialOutcome { values: v.into_iter().collect(), constraints: vec![] })
    ///     }
    ///     fn summary(&self) -> String { format!("{{\"points\": {}}}", self.0.len()) }
    ///     fn tell_outcome(&mut self, _: u64, _: TrialState, o: &TrialOutcome) -> Result<(), PluginError> {
    ///         self.0.push(o.values.clone());
    ///         Ok(())
    ///     }
    /// }
    /// let mut p = Pareto(Vec::new());
    /// p.tell_outcome(0, TrialState::COMPLETE, &TrialOutcome { values: vec![0.1, 3.0], constraints: vec![] }).unwrap();
    /// assert_eq!(p.0, vec![vec![0.1, 3.0]]);
    /// ```
    fn tell_outcome(&mut self, trial: u64, state: TrialState, outcome: &TrialOutcome) -> Result<(), PluginError> {
        let value = outcome.single().map_err(PluginError::config)?;
        self.tell(trial, state, value)
    }
}

/// Severity of a log line sent to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// The host's services, as given to `create_callback` / `create_tuner`.
#[derive(Clone, Copy)]
pub struct Host(pub HostApi_Ref);

impl Host {
    pub fn log(&self, level: Level, target: &str, message: &str) {
        (self.0.log())(level as u8, RStr::from(target), RStr::from(message));
    }

    pub fn bz_version(&self) -> String {
        (self.0.bz_version())().into()
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from((self.0.run_dir())().as_str())
    }
}

/// The host of this plugin library, remembered at the first `create_*` call so [`crate::log!`] works anywhere.
static HOST: OnceLock<Host> = OnceLock::new();

#[doc(hidden)]
pub fn __log(level: Level, target: &str, message: &str) {
    match HOST.get() {
        Some(host) => host.log(level, target, message),
        None => eprintln!("{target}: {message}"),
    }
}

/// Logs through the host: `log!(Level::Info, "wrote {} events", n)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::kit::__log($level, module_path!(), &format!($($arg)+))
    };
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".into()
    }
}

/// Runs plugin code; an error stays an error and a panic becomes a `PANIC` error instead of unwinding into bz.
pub fn guard<T>(what: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(e)) => RResult::RErr(e),
        Err(payload) => RResult::RErr(PluginError::new(PluginError::PANIC, format!("panicked in {what}: {}", panic_message(&*payload)))),
    }
}

fn parse_json(what: &str, text: RStr<'_>) -> Result<Value, PluginError> {
    serde_json::from_str(text.as_str()).map_err(|e| PluginError::config(format!("{what} is not valid JSON: {e}")))
}

struct CallbackAdapter(Box<dyn Callback>);

impl CallbackFfi for CallbackAdapter {
    fn subscriptions(&self) -> RVec<EventKind> {
        match catch_unwind(AssertUnwindSafe(|| self.0.subscriptions())) {
            Ok(v) => v.into(),
            Err(_) => RVec::new(),
        }
    }

    fn on_event(&mut self, event: &Event<'_>) -> RResult<Directive, PluginError> {
        guard("on_event", || self.0.on_event(event))
    }

    fn finish(&mut self, status: RunStatus) -> RResult<(), PluginError> {
        guard("finish", || self.0.finish(status))
    }
}

struct TunerAdapter(Box<dyn Tuner>);

impl TunerFfi for TunerAdapter {
    fn ask(&mut self) -> RResult<ROption<Trial>, PluginError> {
        guard("ask", || Ok(self.0.ask()?.map_or(RNone, RSome)))
    }

    fn report(&mut self, trial: u64, step: u64, value: f64) -> RResult<bool, PluginError> {
        guard("report", || self.0.report(trial, step, value))
    }

    fn tell(&mut self, trial: u64, state: TrialState, value: ROption<f64>) -> RResult<(), PluginError> {
        guard("tell", || self.0.tell(trial, state, value.into_option()))
    }

    fn summary(&self) -> RString {
        match catch_unwind(AssertUnwindSafe(|| self.0.summary())) {
            Ok(s) => s.into(),
            Err(_) => RString::from("{}"),
        }
    }

    fn tell_json(&mut self, trial: u64, state: TrialState, outcome: RStr<'_>) -> RResult<(), PluginError> {
        guard("tell", || self.0.tell_outcome(trial, state, &TrialOutcome::from_json(outcome.as_str())?))
    }
}

extern "C" fn metadata<P: Plugin>() -> PluginMetadata {
    PluginMetadata { name: P::NAME.into(), version: P::VERSION.into(), description: P::DESCRIPTION.into(), kinds: P::KINDS, api_version: API_VERSION.into() }
}

extern "C" fn default_config<P: Plugin>() -> RString {
    match catch_unwind(P::default_config) {
        Ok(v) => v.to_string().into(),
        Err(_) => RString::from("{}"),
    }
}

extern "C" fn config_schema<P: Plugin>() -> RString {
    match catch_unwind(P::config_schema) {
        Ok(v) => v.to_string().into(),
        Err(_) => RString::from("{}"),
    }
}

extern "C" fn validate_config<P: Plugin>(config: RStr<'_>) -> RResult<RString, PluginError> {
    guard("validate_config", || {
        let cfg = parse_json("the configuration", config)?;
        Ok(P::validate_config(&cfg)?.to_string().into())
    })
}

extern "C" fn create_callback<P: Plugin>(host: HostApi_Ref, config: RStr<'_>) -> RResult<ROption<CallbackBox>, PluginError> {
    let _ = HOST.set(Host(host));
    guard("create_callback", || {
        let cfg = P::validate_config(&parse_json("the configuration", config)?)?;
        Ok(match P::create_callback(Host(host), cfg)? {
            Some(cb) => RSome(CallbackFfi_TO::from_value(CallbackAdapter(cb), TD_Opaque)),
            None => RNone,
        })
    })
}

extern "C" fn create_tuner<P: Plugin>(host: HostApi_Ref, config: RStr<'_>, space: RStr<'_>) -> RResult<ROption<TunerBox>, PluginError> {
    let _ = HOST.set(Host(host));
    guard("create_tuner", || {
        let cfg = P::validate_config(&parse_json("the configuration", config)?)?;
        let space = parse_json("the search space", space)?;
        Ok(match P::create_tuner(Host(host), cfg, space)? {
            Some(t) => RSome(TunerFfi_TO::from_value(TunerAdapter(t), TD_Opaque)),
            None => RNone,
        })
    })
}

/// Builds the root module of plugin `P` (what [`crate::export_plugin!`] exports; the test harness uses it directly).
pub fn root_module<P: Plugin>() -> BzPluginMod_Ref {
    BzPluginMod {
        metadata: metadata::<P>,
        default_config: default_config::<P>,
        config_schema: config_schema::<P>,
        validate_config: validate_config::<P>,
        create_callback: create_callback::<P>,
        create_tuner: create_tuner::<P>,
    }
    .leak_into_prefix()
}

/// Exports a [`Plugin`] from a `cdylib` crate: the abi_stable library header bz loads, and `bz_plugin_abi`.
///
/// This writes by hand what abi_stable's `#[export_root_module]` writes, because that attribute names
/// `::abi_stable` and would force every plugin crate to depend on abi_stable itself (and risk another version).
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub fn __bz_plugin_root_module() -> $crate::BzPluginMod_Ref {
            $crate::kit::root_module::<$plugin>()
        }

        #[doc(hidden)]
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__bz_plugin_root_module)
            }
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::BzPluginMod_Ref>(erased, $crate::abi_stable::library::CheckTypeLayout::Yes)
            }
        };

        #[doc(hidden)]
        #[no_mangle]
        pub extern "C" fn bz_plugin_abi() -> u32 {
            $crate::kit::ABI_VERSION
        }
    };
}
