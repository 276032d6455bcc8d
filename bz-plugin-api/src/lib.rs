//! The interface between `bz` and its plugins, and the kit to write them.
//!
//! A plugin is a `cdylib` that bz loads from `~/.bz/plugins/` (or `BZ_PLUGIN_DIR`, or `--plugin-dir`) when a
//! config names it in a `[plugins.NAME]` section. It receives the trainer's lifecycle events and may ask the
//! trainer to stop. Everything crossing the boundary is plain data (numbers, strings, JSON): plugins never link
//! libtorch or tch.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "bz-plugin-hello"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! bz-plugin-api = "1"
//! serde = { version = "1", features = ["derive"] }
//! serde_json = "1"
//! schemars = "1"
//! ```
//!
//! `src/lib.rs`:
//! ```
//! use bz_plugin_api::config::{ConfigType, PluginConfig};
//! use bz_plugin_api::{export_plugin, log, Callback, Directive, Event, EventKind, Host, Level, Plugin, PluginError};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use serde_json::{json, Value};
//!
//! /// `[plugins.hello]`: doc comments become the descriptions of `bz plugins info hello`'s schema.
//! #[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     /// Stop when val/loss falls below this.
//!     target: f64,
//! }
//!
//! impl PluginConfig for Config {}
//!
//! /// Logs the validation loss after every epoch; stops when it falls below `target`.
//! struct Hello {
//!     config: Config,
//! }
//!
//! impl Callback for Hello {
//!     fn subscriptions(&self) -> Vec<EventKind> {
//!         vec![EventKind::EPOCH_END]
//!     }
//!
//!     fn on_event(&mut self, event: &Event<'_>) -> Result<Directive, PluginError> {
//!         let loss = event.metric("val", "loss").unwrap_or(f64::NAN);
//!         log!(Level::Info, "epoch {}: val/loss {loss:.4}", event.epoch);
//!         Ok(if loss < self.config.target { Directive::STOP_TRAINING } else { Directive::NONE })
//!     }
//! }
//!
//! struct HelloPlugin;
//!
//! impl Plugin for HelloPlugin {
//!     const NAME: &'static str = "hello";
//!     const VERSION: &'static str = "0.1.0";
//!     const DESCRIPTION: &'static str = "logs val/loss and stops below a target";
//!     // default_config, config_schema and validate_config come from `Config`.
//!     const CONFIG: ConfigType = ConfigType::of::<Config>();
//!
//!     fn create_callback(_host: Host, config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
//!         Ok(Some(Box::new(Hello { config: Config::parse(&config)? })))
//!     }
//! }
//!
//! export_plugin!(HelloPlugin);
//!
//! // Unit test without bz: the harness drives the callback through the same FFI functions bz calls.
//! let mut h = bz_plugin_api::harness::Harness::new::<HelloPlugin>(json!({ "target": 0.3 })).unwrap();
//! let run = h.run(10, 2, |epoch| vec![("val", "loss", 1.0 / epoch as f64)]).unwrap();
//! assert_eq!(run.epochs_run, 4); // 1/4 < 0.3
//! let e = HelloPlugin::validate_config(&json!({ "targt": 1 })).unwrap_err();
//! assert_eq!(e.message, "`targt`: unknown key; did you mean `target`? (known keys: `target`)");
//! ```
//!
//! Rules for plugin authors:
//! - Every callback runs inside `catch_unwind` (done by [`export_plugin!`]); a panic becomes a
//!   [`PluginError`] with code [`PluginError::PANIC`] and bz applies the plugin's `on_error` policy.
//! - Log through [`log!`], not `println!`: the plugin has its own `std`, and bz owns the terminal.
//! - No `#[global_allocator]`, no libtorch, no OpenMP: they share the bz process.
//! - Ignore event kinds and JSON keys you do not know; 1.x only ever adds them.
//! - Configuration errors name the key as `` `key`: message `` ([`config::key_error`]); a typed
//!   [`config::PluginConfig`] does this for you, with "did you mean" for unknown keys.

pub mod config;
pub mod ffi;
pub mod harness;
pub mod kit;
pub mod outcome;
pub mod payload;

/// The pinned abi_stable, re-exported so plugins never pick another version.
pub use abi_stable;
pub use ffi::*;
pub use kit::{Callback, Host, Level, Plugin, Tuner, ABI_VERSION, API_VERSION};
pub use serde_json;

#[cfg(test)]
mod tests {
    #[test]
    fn exported_header_uses_abi_stables_symbol_name() {
        // export_plugin! spells the symbol out; it must be the one abi_stable's loader looks up.
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
