//! Scaffolding a plugin crate that builds as is.

use super::inspect::api_major;
use crate::commands::exit::Status;
use anyhow::{bail, Context, Result};
use bz_host::plugins::{loader, BUILTINS};
use std::path::{Path, PathBuf};

pub fn new(name: &str, path: Option<PathBuf>) -> Result<Status> {
    if !loader::is_name(name) {
        bail!("plugin name {name:?}: use lower-case letters, digits, '-' and '_'");
    }
    if BUILTINS.iter().any(|(n, _)| *n == name) {
        bail!("{name:?} is a built-in plugin's name; choose another");
    }
    let dir = path.unwrap_or_else(|| PathBuf::from(format!("bz-plugin-{name}")));
    if dir.exists() {
        bail!("{} already exists; choose another --path", dir.display());
    }
    // Inside a bz checkout the scaffold uses the checkout's bz-plugin-api; elsewhere the published crate.
    let local_api = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bz-plugin-api");
    let api_dep = match std::fs::canonicalize(&local_api) {
        Ok(p) => format!("{{ path = {:?} }}", p.display().to_string()),
        Err(_) => format!("\"{}\"", api_major(bz_plugin_api::API_VERSION)),
    };
    let crate_name = format!("bz_{}", name.replace('-', "_"));
    let cargo = format!(
        "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n# A standalone crate, even when created inside another workspace.\n[workspace]\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\nbz-plugin-api = {api_dep}\nserde_json = \"1\"\n"
    );
    let lib = TEMPLATE.replace("PLUGIN_NAME", name);
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), cargo)?;
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!(
        "created {} · build and install it with `bz plugins install {}` (cargo build --release, then into {})",
        dir.display(),
        dir.display(),
        loader::plugin_dir(None).display()
    );
    Ok(Status::Success)
}

const TEMPLATE: &str = r#"//! The PLUGIN_NAME plugin for bz: logs the validation loss each epoch and stops below `target`.

use bz_plugin_api::{export_plugin, log, Callback, Directive, Event, EventKind, Host, Level, Plugin, PluginError};
use serde_json::{json, Value};

struct Watcher {
    target: f64,
}

impl Callback for Watcher {
    fn subscriptions(&self) -> Vec<EventKind> {
        vec![EventKind::EPOCH_END]
    }

    fn on_event(&mut self, event: &Event<'_>) -> Result<Directive, PluginError> {
        let loss = event.metric("val", "loss").unwrap_or(f64::NAN);
        log!(Level::Info, "epoch {}: val/loss {loss:.4}", event.epoch);
        Ok(if loss < self.target { Directive::STOP_TRAINING } else { Directive::NONE })
    }
}

pub struct ThisPlugin;

impl Plugin for ThisPlugin {
    const NAME: &'static str = "PLUGIN_NAME";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "logs val/loss and stops below a target";

    fn default_config() -> Value {
        json!({ "target": 0.0 })
    }

    fn validate_config(config: &Value) -> Result<Value, PluginError> {
        let mut out = Self::default_config();
        for (key, value) in config.as_object().into_iter().flatten() {
            match (key.as_str(), value.as_f64()) {
                ("target", Some(_)) => out[key] = value.clone(),
                ("target", None) => return Err(PluginError::config("`target` must be a number")),
                _ => return Err(PluginError::config(format!("unknown key `{key}` (known: target)"))),
            }
        }
        Ok(out)
    }

    fn create_callback(_host: Host, config: Value) -> Result<Option<Box<dyn Callback>>, PluginError> {
        Ok(Some(Box::new(Watcher { target: config["target"].as_f64().unwrap_or(0.0) })))
    }
}

export_plugin!(ThisPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use bz_plugin_api::harness::Harness;

    #[test]
    fn stops_below_target() {
        let mut h = Harness::new::<ThisPlugin>(json!({ "target": 0.3 })).unwrap();
        let run = h.run(10, 2, |epoch| vec![("val", "loss", 1.0 / epoch as f64)]).unwrap();
        assert_eq!(run.epochs_run, 4);
    }
}
"#;
