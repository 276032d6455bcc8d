//! `bz plugins …`: built-in and installed plugins: inspecting them (`inspect`), installing and managing them
//! (`manage`), the indexes they come from (`index`), and scaffolding new ones (`new`).

mod index;
mod inspect;
mod manage;
mod new;

use super::exit::Status;
use anyhow::Result;
use bz_host::plugins::loader;
use clap::{Args, Subcommand};
use index::IndexCommand;
use std::path::PathBuf;

#[derive(Args)]
pub struct PluginsArgs {
    #[command(subcommand)]
    command: PluginsCommand,
}

/// `--plugin-dir`, shared by the plugin commands.
#[derive(Args, Clone)]
struct DirArg {
    /// The plugin directory (default: BZ_PLUGIN_DIR, else ~/.bz/plugins).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

impl DirArg {
    fn path(&self) -> PathBuf {
        loader::plugin_dir(self.plugin_dir.as_deref())
    }
}

/// Where plugins come from, shared by install, update and search.
#[derive(Args, Clone)]
pub struct IndexArgs {
    /// A configured index's name, or an index URL or path (default: BZ_PLUGIN_INDEX, else ~/.bz/config.toml).
    #[arg(long, value_name = "NAME|URL")]
    pub index: Option<String>,
    /// The minisign public key that signs the index's archives (default: the configured one, or BZ_PLUGIN_PUBKEY).
    #[arg(long, value_name = "KEY")]
    pub pubkey: Option<String>,
    /// Accept plain http:// to hosts other than this machine (readable and changeable on the way).
    #[arg(long)]
    pub allow_http: bool,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Built-in, installed and unmanaged plugins, each library checked in a child process.
    List {
        #[command(flatten)]
        dir: DirArg,
    },
    /// One plugin's metadata, default configuration and install receipt.
    Info {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Install plugins: NAME, NAME@VERSION, INDEX/NAME, a local .tar.gz, an archive's URL, or a plugin crate's directory (built with cargo).
    Install {
        #[arg(required = true, value_name = "NAME[@VERSION]|ARCHIVE|URL")]
        what: Vec<String>,
        /// The archive's expected sha256 (for an archive or URL).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        #[command(flatten)]
        index: IndexArgs,
        /// Reinstall the same version, replace an unmanaged file, or take a yanked version asked for by number.
        #[arg(long)]
        force: bool,
        /// Install an archive that no signature vouches for.
        #[arg(long)]
        allow_unsigned: bool,
        /// Let `install NAME` go to an older version than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Update installed plugins to their newest installable version (all unpinned ones when none is named).
    Update {
        names: Vec<String>,
        #[command(flatten)]
        index: IndexArgs,
        #[arg(long)]
        allow_unsigned: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Remove installed plugins (link, receipt and stored versions).
    Remove {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Go back to the version the last install or update replaced.
    Rollback {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Keep a plugin at its installed version: `update` skips it.
    Pin {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Let `update` move a pinned plugin again.
    Unpin {
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Re-hash installed libraries against their receipts.
    Verify {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Plugins in the configured indexes, with the newest version this bz can install.
    Search {
        term: Option<String>,
        #[command(flatten)]
        index: IndexArgs,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Configure plugin indexes (in ~/.bz/config.toml).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Scaffold a plugin crate that builds as is.
    New {
        name: String,
        /// Where to create it (default: ./bz-plugin-NAME).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Load one library and print its metadata as JSON (used by `list`, `info`, `validate` and `install` in a
    /// child process).
    #[command(hide = true)]
    Probe {
        path: PathBuf,
        /// Load it as this plugin (a library calling itself otherwise is an error); default: from the file name.
        #[arg(long)]
        name: Option<String>,
        /// Read a configuration (JSON) from stdin and print the plugin's `validate_config` verdict on it.
        #[arg(long)]
        config_stdin: bool,
    },
}

impl PluginsArgs {
    pub fn run(self) -> Result<Status> {
        match self.command {
            PluginsCommand::List { dir } => inspect::list(&dir.path()),
            PluginsCommand::Info { name, dir } => inspect::info(&name, &dir.path()),
            PluginsCommand::Install { what, sha256, index, force, allow_unsigned, allow_downgrade, dir } => {
                manage::install(&dir.path(), &index, manage::InstallArgs { what, sha256, force, allow_unsigned, allow_downgrade })
            }
            PluginsCommand::Update { names, index, allow_unsigned, dir } => {
                manage::update(&names, &manage::options(&dir.path(), &index, None, false, allow_unsigned))
            }
            PluginsCommand::Remove { names, dir } => manage::remove(&dir.path(), &names),
            PluginsCommand::Rollback { name, dir } => manage::rollback(&dir.path(), &name),
            PluginsCommand::Pin { name, dir } => manage::pin(&dir.path(), &name, true),
            PluginsCommand::Unpin { name, dir } => manage::pin(&dir.path(), &name, false),
            PluginsCommand::Verify { dir } => inspect::verify(&dir.path()),
            PluginsCommand::Search { term, index, dir } => index::search(term.as_deref(), &index, &dir.path()),
            PluginsCommand::Index { command } => index::index_cmd(command),
            PluginsCommand::New { name, path } => new::new(&name, path),
            PluginsCommand::Probe { path, name, config_stdin } => inspect::probe(&path, name.as_deref(), config_stdin),
        }
    }
}
