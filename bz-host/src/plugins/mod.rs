//! Plugins: `[plugins.NAME]` config sections, the built-in plugins, and external libraries behind the same
//! `Callback` trait, so the trainer has one code path.

pub mod builtin;
pub mod install;
pub mod loader;
pub mod probe;

use crate::config::{Config, ConfigError};
use crate::console::{Console, Verbosity};
use crate::events::{self, Callback, Directive, Dispatcher, Event, EventKind, OnError, RunStatus};
use anyhow::Result;
use bz_plugin_api as api;
use bz_plugin_api::abi_stable::prefix_type::PrefixTypeTrait;
use bz_plugin_api::abi_stable::std_types::{RSlice, RStr, RString};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Plugins compiled into bz; their names cannot be taken by libraries.
pub const BUILTINS: [(&str, &str); 3] = [
    ("console_out", "progress bars and epoch summaries (on unless `enabled = false`)"),
    ("early_stopping", "stop when a monitored metric stops improving"),
    ("profiler", "time per phase and per plugin, CPU and memory; writes profile.json"),
];

/// The target triple this bz was built for; plugin builds must match it.
pub const HOST_TARGET: &str = env!("BZ_TARGET");

/// Whether a library built against `bz-plugin-api` `plugin_api` can load into this bz: the same major version
/// (the same minor for 0.x), as cargo's semver rules and abi_stable's own check. The loader, the index
/// resolution and the installer's probe check all use this one function.
pub fn api_compatible(plugin_api: &str) -> Result<(), String> {
    let host = semver::Version::parse(api::API_VERSION).map_err(|e| e.to_string())?;
    let lib = semver::Version::parse(plugin_api).map_err(|_| format!("plugin_api {plugin_api:?} is not a version like 1.0.0"))?;
    let same = if host.major == 0 { lib.major == 0 && lib.minor == host.minor } else { lib.major == host.major };
    if same {
        Ok(())
    } else {
        Err(format!("needs bz-plugin-api {}; this bz speaks {}", api_series(&lib), api_series(&host)))
    }
}

fn api_series(v: &semver::Version) -> String {
    if v.major == 0 {
        format!("0.{}.x", v.minor)
    } else {
        format!("{}.x", v.major)
    }
}

/// One `[plugins.NAME]` section.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The section's name; events and messages use it.
    pub name: String,
    /// The plugin to load: `library = "..."` runs a second instance of a plugin under another name.
    pub library: String,
    pub enabled: bool,
    /// As configured; the default is `disable` for libraries and `abort` for built-ins (part of bz itself, so
    /// an error there is a config mistake, such as an unknown monitored metric, that must not pass silently).
    pub on_error: Option<OnError>,
    /// The section without `enabled`, `on_error` and `library`, as JSON: the plugin's own configuration.
    pub config: Value,
}

/// The plugin sections of a config, in config order.
pub fn specs(cfg: &Config) -> Result<Vec<Spec>, (String, String)> {
    let mut out = Vec::new();
    for (name, section) in &cfg.plugins {
        let key = format!("plugins.{name}");
        let table = section.as_table().ok_or_else(|| (key.clone(), "must be a table: [plugins.NAME] with the plugin's keys".to_string()))?;
        let mut enabled = true;
        let mut on_error = None;
        let mut library = None;
        let mut rest = serde_json::Map::new();
        for (k, v) in table {
            match k.as_str() {
                "enabled" => enabled = v.as_bool().ok_or_else(|| (format!("{key}.enabled"), "must be true or false".to_string()))?,
                "library" => {
                    library = Some(v.as_str().ok_or_else(|| (format!("{key}.library"), "must be the name of an installed plugin".to_string()))?.to_string())
                }
                "on_error" => {
                    on_error = match v.as_str() {
                        Some("disable") => Some(OnError::Disable),
                        Some("abort") => Some(OnError::Abort),
                        Some("continue") => Some(OnError::Continue),
                        _ => return Err((format!("{key}.on_error"), format!("{v} is not one of \"disable\", \"abort\", \"continue\""))),
                    }
                }
                _ => {
                    let json = serde_json::to_value(v).map_err(|e| (format!("{key}.{k}"), e.to_string()))?;
                    rest.insert(k.clone(), json);
                }
            }
        }
        let library = library.unwrap_or_else(|| name.clone());
        out.push(Spec { name: name.clone(), library, enabled, on_error, config: Value::Object(rest) });
    }
    Ok(out)
}

/// A plugin that passed loading and config validation, ready to create its callback.
pub enum Prepared {
    Builtin(Spec),
    Library { spec: Spec, lib: loader::Library, config: String },
}

/// Loads every enabled plugin the config names and validates its configuration. Fails before any training.
pub fn prepare(cfg: &Config, config_path: &Path, plugin_dir: &Path, verbose: bool) -> Result<Vec<Prepared>> {
    let specs = specs(cfg).map_err(|(key, message)| ConfigError { file: config_path.into(), location: None, key: Some(key), message })?;
    let mut out = Vec::new();
    for spec in specs.into_iter().filter(|s| s.enabled) {
        if BUILTINS.iter().any(|(n, _)| *n == spec.name) {
            builtin::validate(&spec).map_err(|m| ConfigError {
                file: config_path.into(),
                location: None,
                key: Some(format!("plugins.{}", spec.name)),
                message: m,
            })?;
            out.push(Prepared::Builtin(spec));
            continue;
        }
        let path = loader::find(plugin_dir, &spec.library)?;
        let lib = loader::load(&path, &spec.library).inspect_err(|e| {
            if verbose {
                if let Some(d) = e.detail() {
                    eprintln!("{d}");
                }
            }
        })?;
        let json = RString::from(spec.config.to_string());
        let config = match (lib.module.validate_config())(json.as_rstr()).into_result() {
            Ok(c) => c.to_string(),
            Err(e) => {
                let (key, message) = plugin_key(&format!("plugins.{}", spec.name), &e.message);
                return Err(ConfigError { file: config_path.into(), location: None, key: Some(key), message }.into());
            }
        };
        out.push(Prepared::Library { spec, lib, config });
    }
    Ok(out)
}

/// The key and message of a plugin's CONFIG error about its section `section`: `section.key` when the plugin
/// named the key in the kit's form (`` `key`: message ``), else `section` and the message as it is.
fn plugin_key(section: &str, message: &str) -> (String, String) {
    match api::config::split_key(message) {
        Some((key, rest)) => (format!("{section}.{key}"), rest.to_string()),
        None => (section.to_string(), message.to_string()),
    }
}

/// A plugin section `bz validate` checked: a built-in, or a library with its version and file.
pub struct Validated {
    pub name: String,
    pub library: Option<(String, PathBuf)>,
}

/// `prepare` for `bz validate`, with the same checks and the same messages, except that each library is loaded
/// and asked about its configuration in a child `bz plugins probe`: a config file from someone else must not
/// make `bz validate` run a library inside bz. `bz train` loads in-process, as it has to.
pub fn validate_in_child(cfg: &Config, config_path: &Path, plugin_dir: &Path) -> Result<Vec<Validated>> {
    let config_error = |key: String, message: String| ConfigError { file: config_path.into(), location: None, key: Some(key), message };
    let specs = specs(cfg).map_err(|(key, message)| config_error(key, message))?;
    let mut out = Vec::new();
    for spec in specs.into_iter().filter(|s| s.enabled) {
        if BUILTINS.iter().any(|(n, _)| *n == spec.name) {
            builtin::validate(&spec).map_err(|m| config_error(format!("plugins.{}", spec.name), m))?;
            out.push(Validated { name: spec.name, library: None });
            continue;
        }
        let path = loader::find(plugin_dir, &spec.library)?;
        let p = probe::probe_config(&path, &spec.library, &spec.config.to_string()).map_err(|e| match e {
            // Already the loader's line, naming the plugin and the file.
            probe::ProbeError::Reported(line) => anyhow::anyhow!(line),
            e => anyhow::anyhow!("plugin '{}' ({}): {e}", spec.library, path.display()),
        })?;
        match p.checked {
            Some(probe::Checked::Valid(_)) => out.push(Validated { name: spec.name, library: Some((p.metadata.version, path)) }),
            Some(probe::Checked::Rejected(m)) => {
                let (key, message) = plugin_key(&format!("plugins.{}", spec.name), &m);
                return Err(config_error(key, message).into());
            }
            None => anyhow::bail!("plugin '{}' ({}): the probe did not check the configuration", spec.library, path.display()),
        }
    }
    Ok(out)
}

/// Builds the event stream: console output first, then the plugins in config order.
pub fn dispatcher(prepared: Vec<Prepared>, cfg: &Config, verbosity: Verbosity, interactive: bool) -> Result<Dispatcher> {
    LOG_LEVEL.store(
        match verbosity {
            Verbosity::Quiet => 1,
            Verbosity::Normal => 2,
            Verbosity::Verbose => 3,
        },
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut d = Dispatcher::default();
    let console = specs(cfg).ok().and_then(|s| s.into_iter().find(|s| s.name == "console_out"));
    let console_on = console.as_ref().is_none_or(|s| s.enabled);
    if console_on {
        let verbosity = match console.as_ref().and_then(|s| s.config.get("verbosity")).and_then(|v| v.as_str()) {
            _ if verbosity != Verbosity::Normal => verbosity,
            Some("quiet") => Verbosity::Quiet,
            Some("verbose") => Verbosity::Verbose,
            _ => Verbosity::Normal,
        };
        d.add(Box::new(Console::new(verbosity, interactive)), OnError::Abort);
    }
    for p in prepared {
        match p {
            Prepared::Builtin(spec) => {
                if let Some(cb) = builtin::create(&spec)? {
                    d.add(cb, spec.on_error.unwrap_or(OnError::Abort));
                }
            }
            Prepared::Library { spec, lib, config } => {
                if let Some(cb) = create_callback(&spec.name, &lib, &config)? {
                    d.add(cb, spec.on_error.unwrap_or_default());
                }
            }
        }
    }
    Ok(d)
}

/// Creates a library's callback (named `name` in events and messages) behind the host's `Callback` trait.
pub fn create_callback(name: &str, lib: &loader::Library, config: &str) -> Result<Option<Box<dyn Callback>>> {
    match (lib.module.create_callback())(host_api(), RStr::from(config)).into_result() {
        Ok(cb) => Ok(cb.into_option().map(|cb| Box::new(FfiCallback::new(name.to_string(), cb)) as Box<dyn Callback>)),
        Err(e) => anyhow::bail!("plugin '{name}' ({}) could not start: {}", lib.path.display(), e.message),
    }
}

/// A tuner from a library, for `bz tune`; a plugin error (a bad search space, a storage it cannot open) is
/// a config error.
pub fn create_tuner(name: &str, lib: &loader::Library, config: &str, space: &str) -> Result<api::TunerBox> {
    match (lib.module.create_tuner())(host_api(), RStr::from(config), RStr::from(space)).into_result() {
        Ok(t) => t
            .into_option()
            .ok_or_else(|| anyhow::anyhow!("plugin '{name}' ({}) has no tuner; tune.plugin must name a tuner plugin such as optuna", lib.path.display())),
        Err(e) if e.code == api::PluginError::CONFIG => {
            let (key, message) = match api::config::split_key(&e.message) {
                Some((key, rest)) => (Some(format!("tune.{key}")), rest.to_string()),
                None => (None, e.message.to_string()),
            };
            Err(ConfigError { file: PathBuf::from("[tune]"), location: None, key, message }.into())
        }
        Err(e) => anyhow::bail!("plugin '{name}' ({}): {}", lib.path.display(), e.message),
    }
}

/// A library's callback behind the host's `Callback` trait.
struct FfiCallback {
    name: String,
    inner: api::CallbackBox,
    /// The kinds the library subscribed to.
    mask: u32,
}

impl FfiCallback {
    fn new(name: String, inner: api::CallbackBox) -> FfiCallback {
        // Kinds this bz does not know (a newer plugin) are ignored.
        let mask = inner.subscriptions().iter().filter(|k| EventKind::ALL.contains(k)).fold(0, |m, k| m | events::bit(*k));
        FfiCallback { name, inner, mask }
    }
}

impl Callback for FfiCallback {
    fn name(&self) -> &str {
        &self.name
    }

    /// RUN_START always, for the run dir (see `record_run_dir`), even when the library did not ask for it.
    fn subscriptions(&self) -> u32 {
        self.mask | events::bit(EventKind::RUN_START)
    }

    fn on_event(&mut self, e: &Event) -> Result<Directive> {
        if e.kind == EventKind::RUN_START {
            // Before the library sees RUN_START, so `host.run_dir()` already answers inside its handler.
            if let Some(dir) = e.payload.get("run_dir").and_then(|d| d.as_str()) {
                record_run_dir(dir);
            }
        }
        if self.mask & events::bit(e.kind) == 0 {
            return Ok(Directive::NONE);
        }
        let metrics: Vec<api::Metric<'_>> =
            e.metrics.iter().map(|m| api::Metric { name: RStr::from(m.name.as_str()), split: RStr::from(m.split), value: m.value }).collect();
        let event = api::Event {
            kind: e.kind,
            epoch: e.epoch as u64,
            global_step: e.global_step as u64,
            batch_in_epoch: e.batch_in_epoch as u64,
            metrics: RSlice::from_slice(&metrics),
            payload_json: RStr::from(e.payload_json()),
        };
        match self.inner.on_event(&event).into_result() {
            Ok(d) => Ok(Directive(d.0 & events::KNOWN_DIRECTIVES.0)),
            Err(err) => Err(anyhow::anyhow!("{}", err.message)),
        }
    }

    fn finish(&mut self, status: RunStatus) {
        if let Err(e) = self.inner.finish(status).into_result() {
            eprintln!("warning: plugin '{}' failed to finish: {}", self.name, e.message);
        }
    }
}

/// Where the run writes, for `HostApi::run_dir`: learned from RUN_START's payload as it is forwarded, so the
/// trainer need not know that plugins exist beyond the event stream.
static RUN_DIR: Mutex<String> = Mutex::new(String::new());

fn record_run_dir(dir: &str) {
    if let Ok(mut d) = RUN_DIR.lock() {
        *d = dir.to_string();
    }
}

/// The most detailed plugin log level shown: 1 warnings (`-q`), 2 info, 3 debug (`-v`); BZ_DEBUG shows all.
static LOG_LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(2);

extern "C" fn host_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let tag = match level {
        0 => "error",
        1 => "warning",
        2 => "info",
        _ => "debug",
    };
    if level <= LOG_LEVEL.load(std::sync::atomic::Ordering::Relaxed) || std::env::var_os("BZ_DEBUG").is_some() {
        eprintln!("{tag}: {target}: {message}");
    }
}

extern "C" fn host_bz_version() -> RString {
    RString::from(env!("CARGO_PKG_VERSION"))
}

extern "C" fn host_run_dir() -> RString {
    RString::from(RUN_DIR.lock().map(|d| d.clone()).unwrap_or_default())
}

/// The host API handed to every plugin (leaked once: plugins may keep it for the process lifetime).
pub fn host_api() -> api::HostApi_Ref {
    static HOST: std::sync::OnceLock<api::HostApi_Ref> = std::sync::OnceLock::new();
    *HOST.get_or_init(|| api::HostApi { log: host_log, bz_version: host_bz_version, run_dir: host_run_dir }.leak_into_prefix())
}

/// Plugin libraries in a directory, for `bz plugins list`.
pub fn library_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "so")).collect()).unwrap_or_default();
    files.sort();
    files
}

/// The name a library file suggests (`libbz_tensorboard.so` -> `tensorboard`).
pub fn name_from_file(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for prefix in ["libbz_plugin_", "libbz_", "lib"] {
        if let Some(rest) = stem.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    stem
}

#[cfg(test)]
mod tests {
    use super::api_compatible;

    #[test]
    fn api_compatibility_is_by_major_version() {
        // This bz speaks bz-plugin-api 1.x.
        assert!(api_compatible("1.0.0").is_ok());
        assert!(api_compatible("1.7.2").is_ok());
        assert_eq!(api_compatible("2.0.0").unwrap_err(), "needs bz-plugin-api 2.x; this bz speaks 1.x");
        assert_eq!(api_compatible("0.9.0").unwrap_err(), "needs bz-plugin-api 0.9.x; this bz speaks 1.x");
        assert!(api_compatible("one").unwrap_err().contains("not a version"));
    }
}
