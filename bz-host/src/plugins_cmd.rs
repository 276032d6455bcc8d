//! `bz plugins list | info | new`: inspecting plugins without loading a library into this process (a library's
//! initializers run at load time and it can never be unloaded), and scaffolding new ones.

use crate::PluginsCommand;
use anyhow::{bail, Context, Result};
use bz_host::plugins::{self, loader, BUILTINS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    match cmd {
        PluginsCommand::List { plugin_dir } => list(&loader::plugin_dir(plugin_dir.as_deref())),
        PluginsCommand::Info { name, plugin_dir } => info(&name, &loader::plugin_dir(plugin_dir.as_deref())),
        PluginsCommand::New { name, path } => new(&name, path),
        PluginsCommand::Probe { path } => probe(&path),
    }
}

/// Runs in the child: loads one library and prints its metadata and configuration as one JSON line.
fn probe(path: &Path) -> Result<ExitCode> {
    let name = plugins::name_from_file(path);
    let lib = match loader::load(path, &name) {
        Ok(lib) => lib,
        // The file name is only a convention; report a library that calls itself something else as what it is.
        Err(loader::LoadError::WrongName { found, .. }) => loader::load(path, &found)?,
        Err(e) => return Err(e.into()),
    };
    let default_config: Value = serde_json::from_str(&(lib.module.default_config())()).unwrap_or(Value::Null);
    let schema: Value = serde_json::from_str(&(lib.module.config_schema())()).unwrap_or(Value::Null);
    println!("{}", json!({ "metadata": lib.metadata, "default_config": default_config, "config_schema": schema }));
    Ok(ExitCode::SUCCESS)
}

/// Probes a library in a child `bz` with every symbol bound at load (`LD_BIND_NOW=1`), bounded in time.
fn probe_child(path: &Path) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["plugins", "probe"])
        .arg(path)
        .env("LD_BIND_NOW", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if start.elapsed() > Duration::from_secs(20) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe did not finish in 20 s".into());
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let out = read(child.stdout.as_mut().map(|r| r as &mut dyn std::io::Read));
    let err = read(child.stderr.as_mut().map(|r| r as &mut dyn std::io::Read));
    if status.success() {
        serde_json::from_str(out.trim()).map_err(|e| format!("unreadable probe output: {e}"))
    } else if let Some(line) = err.lines().find(|l| l.starts_with("error: ")) {
        Err(line.trim_start_matches("error: ").to_string())
    } else {
        Err(format!("the probe crashed ({status}); the library may abort or segfault when loaded"))
    }
}

fn list(dir: &Path) -> Result<ExitCode> {
    println!("{:<16} {:<9} {:<5} {:<9} {:<8} source", "name", "version", "api", "kinds", "status");
    for (name, _) in BUILTINS {
        println!("{:<16} {:<9} {:<5} {:<9} {:<8} built in", name, env!("CARGO_PKG_VERSION"), api_major(bz_plugin_api::API_VERSION), "callback", "ok");
    }
    let files = plugins::library_files(dir);
    for path in &files {
        match probe_child(path) {
            Ok(v) => {
                let m = &v["metadata"];
                let kinds: Vec<&str> = m["kinds"].as_array().map(|a| a.iter().filter_map(|k| k.as_str()).collect()).unwrap_or_default();
                println!(
                    "{:<16} {:<9} {:<5} {:<9} {:<8} {}",
                    m["name"].as_str().unwrap_or("?"),
                    m["version"].as_str().unwrap_or("?"),
                    api_major(m["api_version"].as_str().unwrap_or("?")),
                    kinds.join(","),
                    "ok",
                    path.display()
                );
            }
            Err(e) => println!("{:<16} {:<9} {:<5} {:<9} {:<8} {}: {e}", plugins::name_from_file(path), "-", "-", "-", "broken", path.display()),
        }
    }
    if files.is_empty() {
        println!("(no plugin libraries in {})", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn api_major(v: &str) -> String {
    v.split('.').next().unwrap_or(v).to_string()
}

fn info(name: &str, dir: &Path) -> Result<ExitCode> {
    if let Some((_, what)) = BUILTINS.iter().find(|(n, _)| *n == name) {
        println!("{name} (built in, bz {}): {what}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    let path = loader::find(dir, name)?;
    let v = probe_child(&path).map_err(|e| anyhow::anyhow!("plugin '{name}' ({}): {e}", path.display()))?;
    let m = &v["metadata"];
    println!("name            {}", m["name"].as_str().unwrap_or("?"));
    println!("version         {}", m["version"].as_str().unwrap_or("?"));
    println!("description     {}", m["description"].as_str().unwrap_or(""));
    println!("plugin api      {}", m["api_version"].as_str().unwrap_or("?"));
    println!("kinds           {}", m["kinds"]);
    println!("file            {}", path.display());
    println!("default config  {}", v["default_config"]);
    println!("config schema   {}", v["config_schema"]);
    Ok(ExitCode::SUCCESS)
}

fn new(name: &str, path: Option<PathBuf>) -> Result<ExitCode> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
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
    println!("created {} · build it with `cargo build --release` and copy target/release/lib{crate_name}.so to {}", dir.display(), loader::plugin_dir(None).display());
    Ok(ExitCode::SUCCESS)
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
