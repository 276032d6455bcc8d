//! Looking at plugins without loading a library into this process (a library's initialisers run at load time and
//! it can never be unloaded): list, info, verify, and the hidden `probe` that does the loading in a child.

use crate::commands::exit::Status;
use anyhow::{Context, Result};
use bz_host::plugins::install::{self, store};
use bz_host::plugins::probe::{probe_child, Checked, Probed};
use bz_host::plugins::{self, loader, BUILTINS};
use bz_plugin_api::abi_stable::std_types::RStr;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

pub fn verify(dir: &Path) -> Result<Status> {
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
        return Ok(Status::Failed);
    }
    Ok(Status::Success)
}

/// Runs in the child: loads one library and prints its metadata and configuration as one JSON line; with
/// `config_stdin`, also the plugin's verdict on the configuration read from stdin.
pub fn probe(path: &Path, name: Option<&str>, config_stdin: bool) -> Result<Status> {
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
    Ok(Status::Success)
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

pub fn list(dir: &Path) -> Result<Status> {
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
    Ok(Status::Success)
}

/// Where an installed plugin came from, in a few words.
pub fn source_text(s: &store::Source) -> String {
    match s {
        store::Source::Index { index, .. } => format!("index '{index}'"),
        store::Source::Archive { path } => format!("archive {path}"),
        store::Source::Url { url } => url.clone(),
        store::Source::Local { path } => format!("local build of {path}"),
    }
}

pub fn api_major(v: &str) -> String {
    v.split('.').next().unwrap_or(v).to_string()
}

pub fn info(name: &str, dir: &Path) -> Result<Status> {
    if let Some((_, what)) = BUILTINS.iter().find(|(n, _)| *n == name) {
        println!("{name} (built in, bz {}): {what}", env!("CARGO_PKG_VERSION"));
        return Ok(Status::Success);
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
    Ok(Status::Success)
}
