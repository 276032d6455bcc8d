//! `bz plugins …`: inspecting plugins without loading a library into this process (a library's initialisers run
//! at load time and it can never be unloaded), installing and managing them, and scaffolding new ones.

use crate::{IndexArgs, IndexCommand, PluginsCommand};
use anyhow::{bail, Context, Result};
use bz_host::plugins::install::{self, index, store, Outcome, Request};
use bz_host::plugins::probe::{probe_child, Checked, Probed};
use bz_host::plugins::{self, loader, BUILTINS};
use bz_plugin_api::abi_stable::std_types::RStr;
use serde_json::Value;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(cmd: PluginsCommand) -> Result<ExitCode> {
    let dir = |d: &crate::DirArg| loader::plugin_dir(d.plugin_dir.as_deref());
    match cmd {
        PluginsCommand::List { dir: d } => list(&dir(&d)),
        PluginsCommand::Info { name, dir: d } => info(&name, &dir(&d)),
        PluginsCommand::Install { what, sha256, index, force, allow_unsigned, allow_downgrade, dir: d } => {
            if sha256.is_some() && what.len() > 1 {
                bail!("--sha256 checks one archive; install one at a time");
            }
            let mut opts = options(&dir(&d), &index, sha256, force, allow_unsigned);
            opts.allow_downgrade = allow_downgrade;
            for w in &what {
                report(install::install(&Request::parse(w)?, &opts)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Update { names, index, allow_unsigned, dir: d } => update(&names, &options(&dir(&d), &index, None, false, allow_unsigned)),
        PluginsCommand::Remove { names, dir: d } => {
            for n in &names {
                let v = install::remove(&dir(&d), n)?;
                println!("removed {n} {v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Rollback { name, dir: d } => {
            let (from, to) = install::rollback(&dir(&d), &name)?;
            println!("{name}: back to {to} (from {from}; `bz plugins rollback {name}` again returns to {from})");
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Pin { name, dir: d } => {
            let v = install::set_pinned(&dir(&d), &name, true)?;
            println!("pinned {name} at {v}: `bz plugins update` leaves it alone");
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Unpin { name, dir: d } => {
            let v = install::set_pinned(&dir(&d), &name, false)?;
            println!("unpinned {name} ({v})");
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Verify { dir: d } => verify(&dir(&d)),
        PluginsCommand::Search { term, index, dir: d } => search(term.as_deref(), &index, &dir(&d)),
        PluginsCommand::Index { command } => index_cmd(command),
        PluginsCommand::New { name, path } => new(&name, path),
        PluginsCommand::Probe { path, name, config_stdin } => probe(&path, name.as_deref(), config_stdin),
    }
}

fn options(dir: &Path, index: &IndexArgs, sha256: Option<String>, force: bool, allow_unsigned: bool) -> install::Options {
    install::Options {
        plugin_dir: dir.to_path_buf(),
        index: index.index.clone(),
        pubkey: index.pubkey.clone(),
        sha256,
        force,
        allow_unsigned,
        allow_http: index.allow_http,
        allow_downgrade: false,
        upgrade_only: false,
        progress: std::io::stderr().is_terminal(),
    }
}

fn report(o: Outcome) {
    match o {
        Outcome::Installed { name, version, previous, check } => {
            let how = match check {
                install::Check::Signature => "signature verified",
                install::Check::Sha256 => "sha256 verified",
                install::Check::Unsigned => "unsigned",
                install::Check::LocalBuild => "local build",
            };
            match previous {
                Some(p) => println!("installed {name} {version} (replaces {p}; `bz plugins rollback {name}` goes back) · {how}"),
                None => println!("installed {name} {version} · {how}"),
            }
        }
        Outcome::AlreadyInstalled { name, version } => {
            println!("{name} {version} is already installed (--force reinstalls it)")
        }
    }
}

fn update(names: &[String], opts: &install::Options) -> Result<ExitCode> {
    let layout = store::Layout::new(&opts.plugin_dir);
    let receipts = store::read_receipts(&layout)?;
    let chosen: Vec<&store::Receipt> = if names.is_empty() {
        receipts.plugins.values().filter(|r| !r.pinned).collect()
    } else {
        let mut v = Vec::new();
        for n in names {
            let r = receipts.plugins.get(n).with_context(|| format!("plugin '{n}' is not installed by `bz plugins install`; install it first"))?;
            if r.pinned {
                bail!("'{n}' is pinned at {}; `bz plugins unpin {n}` first, or install a version with `bz plugins install {n}@VERSION`", r.version);
            }
            v.push(r);
        }
        v
    };
    if chosen.is_empty() {
        println!("nothing to update");
    }
    let mut opts = opts.clone();
    opts.upgrade_only = true;
    let configured: Vec<String> = index::configured().map(|c| c.into_iter().map(|s| s.name).collect()).unwrap_or_default();
    for r in chosen {
        let store::Source::Index { index, index_url, .. } = &r.source else {
            println!("{} {}: {}, not from an index; install a newer one to update it", r.name, r.version, source_text(&r.source));
            continue;
        };
        // The index it came from: by name while that is configured, else by the URL the receipt recorded.
        let from = opts.index.clone().unwrap_or_else(|| if configured.contains(index) { index.clone() } else { index_url.clone() });
        let req = Request::Index { index: Some(from), name: r.name.clone(), version: None };
        match install::install(&req, &opts)? {
            Outcome::AlreadyInstalled { name, version } => {
                println!("{name} {version} is up to date")
            }
            o => report(o),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path) -> Result<ExitCode> {
    let findings = install::verify(dir)?;
    let mut bad = 0;
    for f in &findings {
        match &f.problem {
            None => println!("ok       {} {}", f.name, f.version),
            Some(p) => {
                bad += 1;
                println!("FAILED   {} {}: {p}", f.name, f.version);
            }
        }
    }
    for (path, _) in unmanaged(dir) {
        println!("unmanaged {} (not installed by `bz plugins install`; nothing to check it against)", path.display());
    }
    if findings.is_empty() {
        println!("(no plugins installed by `bz plugins install` in {})", dir.display());
    }
    if bad > 0 {
        eprintln!("error: {bad} of {} installed plugins failed verification", findings.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn search(term: Option<&str>, args: &IndexArgs, dir: &Path) -> Result<ExitCode> {
    let sources = index::sources(args.index.as_deref(), args.pubkey.as_deref())?;
    let found = install::search(dir, &sources, term, args.allow_http)?;
    let receipts = store::read_receipts(&store::Layout::new(dir))?;
    println!("{:<16} {:<10} {:<10} description", "name", "latest", "installed");
    for (name, best, description) in &found {
        let installed = receipts.plugins.get(name).map(|r| r.version.clone()).unwrap_or_else(|| "-".into());
        match best {
            Ok(v) => println!("{name:<16} {v:<10} {installed:<10} {description}"),
            Err(why) => println!("{name:<16} {:<10} {installed:<10} {description} (none installable: {why})", "-"),
        }
    }
    if found.is_empty() {
        println!("(no plugin matches{})", term.map(|t| format!(" {t:?}")).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

fn index_cmd(cmd: IndexCommand) -> Result<ExitCode> {
    let path = index::user_config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{}: not valid TOML", path.display()))?;
    // Checks the rest of the file too, with the same messages the install commands give.
    let current = index::configured()?;
    match cmd {
        IndexCommand::List => {
            if current.is_empty() {
                println!("(no plugin index configured in {})", path.display());
            }
            for s in &current {
                println!(
                    "{:<12} {} ({})",
                    s.name,
                    bz_host::redact::url(&s.url),
                    if s.pubkey.is_some() { "signed: archives must carry its key's signature" } else { "no key: installs need --allow-unsigned" }
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        IndexCommand::Add { name, url, pubkey, if_none, allow_http } => {
            if if_none && !current.is_empty() {
                let names: Vec<&str> = current.iter().map(|s| s.name.as_str()).collect();
                println!("kept your configured indexes ({}); '{name}' not added", names.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            if current.iter().any(|s| s.name == name) {
                bail!("index '{name}' is already configured in {}; remove it first", path.display());
            }
            let parsed = index::parse_location(&url).map_err(|e| anyhow::anyhow!("{url:?}: {e}"))?;
            if let Some(k) = &pubkey {
                index::check_pubkey(k).map_err(|e| anyhow::anyhow!("--pubkey: {e}"))?;
            }
            let source = index::IndexSource { name: name.clone(), url: parsed.clone(), pubkey: pubkey.clone() };
            // Checked as an install would check it; what it saw is recorded by the first install.
            let mut trust = install::trust::Trust::load(&loader::plugin_dir(None))?;
            let idx = index::fetch_index(&source, allow_http, &mut trust)?.index;
            let mut t = toml_edit::Table::new();
            t["name"] = toml_edit::value(name.clone());
            t["url"] = toml_edit::value(parsed.to_string());
            if let Some(k) = pubkey {
                t["pubkey"] = toml_edit::value(k.trim().to_string());
            }
            doc.entry("plugin_index").or_insert(toml_edit::Item::ArrayOfTables(Default::default()));
            match doc["plugin_index"].as_array_of_tables_mut() {
                Some(a) => a.push(t),
                None => bail!("{}: `plugin_index` must be an array of tables ([[plugin_index]])", path.display()),
            }
            write_config(&path, &doc)?;
            println!("added index '{name}' ({}, {} plugins)", bz_host::redact::url(&parsed), idx.plugins.len());
        }
        IndexCommand::Remove { name } => {
            let Some(a) = doc.get_mut("plugin_index").and_then(|i| i.as_array_of_tables_mut()) else {
                bail!("no index '{name}' in {}", path.display());
            };
            let before = a.len();
            a.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name.as_str()));
            if a.len() == before {
                bail!("no index '{name}' in {}", path.display());
            }
            write_config(&path, &doc)?;
            println!("removed index '{name}'");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_config(path: &Path, doc: &toml_edit::DocumentMut) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // 0600 when new: the file may hold index credentials (user:token@ URLs).
    bz_host::atomic::write_new_mode(path, doc.to_string().as_bytes(), 0o600).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Runs in the child: loads one library and prints its metadata and configuration as one JSON line; with
/// `config_stdin`, also the plugin's verdict on the configuration read from stdin.
fn probe(path: &Path, name: Option<&str>, config_stdin: bool) -> Result<ExitCode> {
    let lib = match name {
        Some(n) => loader::load(path, n)?,
        None => match loader::load(path, &plugins::name_from_file(path)) {
            Ok(lib) => lib,
            // The file name is only a convention; report a library that calls itself something else as what it is.
            Err(loader::LoadError::WrongName { found, .. }) => loader::load(path, &found)?,
            Err(e) => return Err(e.into()),
        },
    };
    let checked = if config_stdin {
        let mut text = String::new();
        std::io::stdin().take(MAX_CONFIG).read_to_string(&mut text).context("cannot read the configuration from stdin")?;
        Some(match (lib.module.validate_config())(RStr::from(text.as_str())).into_result() {
            Ok(c) => Checked::Valid(c.to_string()),
            Err(e) => Checked::Rejected(e.message.to_string()),
        })
    } else {
        None
    };
    let probed = Probed {
        default_config: serde_json::from_str(&(lib.module.default_config())()).unwrap_or(Value::Null),
        config_schema: serde_json::from_str(&(lib.module.config_schema())()).unwrap_or(Value::Null),
        metadata: lib.metadata,
        target: plugins::HOST_TARGET.to_string(),
        checked,
    };
    println!("{}", serde_json::to_string(&probed)?);
    Ok(ExitCode::SUCCESS)
}

/// A plugin section is a few keys; this bounds what a stray stdin can make the child read.
const MAX_CONFIG: u64 = 16 << 20;

/// `.so` files in the plugin directory that no receipt accounts for.
fn unmanaged(dir: &Path) -> Vec<(PathBuf, String)> {
    let receipts = store::read_receipts(&store::Layout::new(dir)).map(|r| r.plugins).unwrap_or_default();
    plugins::library_files(dir)
        .into_iter()
        .filter_map(|p| {
            let name = plugins::name_from_file(&p);
            let managed = receipts.get(&name).is_some_and(|_| p.file_name().is_some_and(|f| f.to_string_lossy() == format!("{name}.so")));
            (!managed).then_some((p, name))
        })
        .collect()
}

fn list(dir: &Path) -> Result<ExitCode> {
    println!("{:<16} {:<9} {:<5} {:<15} {:<8} source", "name", "version", "api", "kinds", "status");
    for (name, _) in BUILTINS {
        println!("{:<16} {:<9} {:<5} {:<15} {:<8} built in", name, env!("CARGO_PKG_VERSION"), api_major(bz_plugin_api::API_VERSION), "callback", "ok");
    }
    let receipts = store::read_receipts(&store::Layout::new(dir)).map_err(|e| anyhow::anyhow!(e))?;
    let row = |path: &Path, fallback: &str, source: String| match probe_child(path) {
        Ok(p) => println!(
            "{:<16} {:<9} {:<5} {:<15} {:<8} {source}",
            p.metadata.name,
            p.metadata.version,
            api_major(&p.metadata.api_version),
            p.metadata.kinds.join(","),
            "ok"
        ),
        Err(e) => println!("{:<16} {:<9} {:<5} {:<15} {:<8} {source}: {e}", fallback, "-", "-", "-", "broken"),
    };
    for r in receipts.plugins.values() {
        let from = source_text(&r.source);
        let pinned = if r.pinned { " · pinned" } else { "" };
        row(&store::Layout::new(dir).link(&r.name), &r.name, format!("installed {} from {from}{pinned}", r.version));
    }
    let loose = unmanaged(dir);
    for (path, name) in &loose {
        row(path, name, format!("unmanaged {}", path.display()));
    }
    if receipts.plugins.is_empty() && loose.is_empty() {
        println!("(no plugin libraries in {}; `bz plugins search` lists what can be installed)", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Where an installed plugin came from, in a few words.
fn source_text(s: &store::Source) -> String {
    match s {
        store::Source::Index { index, .. } => format!("index '{index}'"),
        store::Source::Archive { path } => format!("archive {path}"),
        store::Source::Url { url } => url.clone(),
        store::Source::Local { path } => format!("local build of {path}"),
    }
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
    let p = probe_child(&path).map_err(|e| anyhow::anyhow!("plugin '{name}' ({}): {e}", path.display()))?;
    let m = &p.metadata;
    println!("name            {}", m.name);
    println!("version         {}", m.version);
    println!("description     {}", m.description);
    println!("plugin api      {}", m.api_version);
    println!("kinds           {}", m.kinds.join(", "));
    println!("file            {}", path.display());
    println!("default config  {}", p.default_config);
    println!("config schema   {}", p.config_schema);
    let receipts = store::read_receipts(&store::Layout::new(dir))?;
    match receipts.plugins.get(name) {
        Some(r) => {
            let from = match &r.source {
                store::Source::Index { index, index_url, url } => format!("index '{index}' ({index_url}): {url}"),
                other => source_text(other),
            };
            println!("installed       {} from {from}", r.installed_at);
            println!("archive sha256  {}", r.archive_sha256);
            println!("library sha256  {}", r.library_sha256);
            println!(
                "signature       {}",
                match (&r.signed_by, &r.source) {
                    (Some(k), _) => format!("verified with key {k}"),
                    (None, store::Source::Local { .. }) => "none (built here from its source)".into(),
                    (None, _) => "none (installed with --sha256 or --allow-unsigned)".into(),
                }
            );
            println!("pinned          {}", if r.pinned { "yes" } else { "no" });
            if let Some(prev) = &r.previous {
                println!("previous        {} (`bz plugins rollback {name}`)", prev.version);
            }
        }
        None => {
            println!("installed       by hand (no receipt; `bz plugins verify` cannot check it)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new(name: &str, path: Option<PathBuf>) -> Result<ExitCode> {
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
