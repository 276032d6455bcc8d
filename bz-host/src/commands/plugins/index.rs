//! The configured plugin indexes: searching them, and `bz plugins index add|remove|list`.

use super::IndexArgs;
use crate::commands::exit::Status;
use anyhow::{bail, Context, Result};
use bz_host::plugins::install::{self, index, store};
use bz_host::plugins::loader;
use clap::Subcommand;
use std::path::Path;

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Add an index: a name, its URL or path, and the minisign public key that signs its archives.
    Add {
        name: String,
        url: String,
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
        /// Add it only when no index is configured yet (what the quick start does).
        #[arg(long)]
        if_none: bool,
        /// Accept plain http:// to hosts other than this machine.
        #[arg(long)]
        allow_http: bool,
    },
    /// Remove an index.
    Remove { name: String },
    /// The configured indexes.
    List,
}

pub fn search(term: Option<&str>, args: &IndexArgs, dir: &Path) -> Result<Status> {
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
    Ok(Status::Success)
}

/// `~/.bz/config.toml` as an editable document, and the indexes it configures (checked with the same messages
/// the install commands give).
struct UserConfig {
    path: std::path::PathBuf,
    doc: toml_edit::DocumentMut,
    current: Vec<index::IndexSource>,
}

impl UserConfig {
    fn read() -> Result<UserConfig> {
        let path = index::user_config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{}: not valid TOML", path.display()))?;
        let current = index::configured()?;
        Ok(UserConfig { path, doc, current })
    }

    fn write(&self) -> Result<()> {
        let path = &self.path;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // 0600 when new: the file may hold index credentials (user:token@ URLs).
        bz_host::atomic::write_new_mode(path, self.doc.to_string().as_bytes(), 0o600).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

pub fn index_cmd(cmd: IndexCommand) -> Result<Status> {
    let mut config = UserConfig::read()?;
    match cmd {
        IndexCommand::List => list(&config),
        IndexCommand::Add { name, url, pubkey, if_none, allow_http } => add(&mut config, AddIndex { name, url, pubkey, if_none, allow_http })?,
        IndexCommand::Remove { name } => remove(&mut config, &name)?,
    }
    Ok(Status::Success)
}

fn list(config: &UserConfig) {
    if config.current.is_empty() {
        println!("(no plugin index configured in {})", config.path.display());
    }
    for s in &config.current {
        println!(
            "{:<12} {} ({})",
            s.name,
            bz_host::redact::url(&s.url),
            if s.pubkey.is_some() { "signed: archives must carry its key's signature" } else { "no key: installs need --allow-unsigned" }
        );
    }
}

struct AddIndex {
    name: String,
    url: String,
    pubkey: Option<String>,
    if_none: bool,
    allow_http: bool,
}

fn add(config: &mut UserConfig, a: AddIndex) -> Result<()> {
    let AddIndex { name, url, pubkey, if_none, allow_http } = a;
    let path = &config.path;
    if if_none && !config.current.is_empty() {
        let names: Vec<&str> = config.current.iter().map(|s| s.name.as_str()).collect();
        println!("kept your configured indexes ({}); '{name}' not added", names.join(", "));
        return Ok(());
    }
    if config.current.iter().any(|s| s.name == name) {
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
    config.doc.entry("plugin_index").or_insert(toml_edit::Item::ArrayOfTables(Default::default()));
    match config.doc["plugin_index"].as_array_of_tables_mut() {
        Some(a) => a.push(t),
        None => bail!("{}: `plugin_index` must be an array of tables ([[plugin_index]])", path.display()),
    }
    config.write()?;
    println!("added index '{name}' ({}, {} plugins)", bz_host::redact::url(&parsed), idx.plugins.len());
    Ok(())
}

fn remove(config: &mut UserConfig, name: &str) -> Result<()> {
    let Some(a) = config.doc.get_mut("plugin_index").and_then(|i| i.as_array_of_tables_mut()) else {
        bail!("no index '{name}' in {}", config.path.display());
    };
    let before = a.len();
    a.retain(|t| t.get("name").and_then(|n| n.as_str()) != Some(name));
    if a.len() == before {
        bail!("no index '{name}' in {}", config.path.display());
    }
    config.write()?;
    println!("removed index '{name}'");
    Ok(())
}
