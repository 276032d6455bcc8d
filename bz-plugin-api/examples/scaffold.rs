//! The PLUGIN_NAME plugin for bz: logs the validation loss each epoch and stops below `target`.
//!
//! (The `src/lib.rs` that `bz plugins new` writes, less this note and the empty `main` below: the command includes
//! this file, so the scaffold builds and its test runs with this crate. The scaffold's Cargo.toml adds `serde = {
//! version = "1", features = ["derive"] }` and `schemars = "1"`.)

use bz_plugin_api::config::{ConfigType, PluginConfig};
use bz_plugin_api::{export_plugin, log, Callback, Directive, Event, EventKind, Host, Level, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[plugins.PLUGIN_NAME]`; doc comments become the descriptions of `bz plugins info PLUGIN_NAME`'s schema.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Stop when val/loss falls below this.
    target: f64,
}

impl PluginConfig for Config {}

struct Watcher {
    config: Config,
}

impl Callback for Watcher {
    fn subscriptions(&self) -> Vec<EventKind> {
        vec![EventKind::EPOCH_END]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<Directive, PluginError> {
        let loss = event.metric("val", "loss").unwrap_or(f64::NAN);
        log!(Level::Info, "epoch {}: val/loss {loss:.4}", event.epoch);
        Ok(if loss < self.config.target { Directive::STOP_TRAINING } else { Directive::NONE })
    }
}

pub struct ThisPlugin;

impl Plugin for ThisPlugin {
    const NAME: &'static str = "PLUGIN_NAME";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "logs val/loss and stops below a target";
    const CONFIG: ConfigType = ConfigType::of::<Config>();

    fn create_callback(_host: Host, config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
        Ok(Some(Box::new(Watcher { config: Config::parse(&config)? })))
    }
}

export_plugin!(ThisPlugin);

// An example needs a `main`; the scaffold's test is what runs (`test = true` in Cargo.toml). `bz plugins new` drops
// this comment and the `main`.
fn main() {}

#[cfg(test)]
mod tests {
    use super::*;
    use bz_plugin_api::harness::Harness;
    use serde_json::json;

    #[test]
    fn stops_below_target() {
        let mut h = Harness::new::<ThisPlugin>(json!({ "target": 0.3 })).unwrap();
        let run = h.run(10, 2, |epoch| vec![("val", "loss", 1.0 / epoch as f64)]).unwrap();
        assert_eq!(run.epochs_run, 4);
        assert!(ThisPlugin::validate_config(&json!({ "targt": 0.3 })).unwrap_err().message.contains("did you mean `target`?"));
    }
}
