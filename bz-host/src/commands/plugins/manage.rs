//! Installing, updating and removing plugins, and moving between their installed versions.

use super::inspect::source_text;
use super::IndexArgs;
use crate::commands::exit::Status;
use anyhow::{bail, Context, Result};
use bz_host::plugins::install::{self, index, store, Outcome, Request};
use std::io::IsTerminal;
use std::path::Path;

pub fn options(dir: &Path, index: &IndexArgs, sha256: Option<String>, force: bool, allow_unsigned: bool) -> install::Options {
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

pub fn update(names: &[String], opts: &install::Options) -> Result<Status> {
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
    Ok(Status::Success)
}

/// What `bz plugins install` was asked to do.
pub struct InstallArgs {
    pub what: Vec<String>,
    pub sha256: Option<String>,
    pub force: bool,
    pub allow_unsigned: bool,
    pub allow_downgrade: bool,
}

pub fn install(dir: &Path, index: &IndexArgs, a: InstallArgs) -> Result<Status> {
    if a.sha256.is_some() && a.what.len() > 1 {
        bail!("--sha256 checks one archive; install one at a time");
    }
    let mut opts = options(dir, index, a.sha256, a.force, a.allow_unsigned);
    opts.allow_downgrade = a.allow_downgrade;
    for w in &a.what {
        report(install::install(&Request::parse(w)?, &opts)?);
    }
    Ok(Status::Success)
}

pub fn remove(dir: &Path, names: &[String]) -> Result<Status> {
    for n in names {
        let v = install::remove(dir, n)?;
        println!("removed {n} {v}");
    }
    Ok(Status::Success)
}

pub fn rollback(dir: &Path, name: &str) -> Result<Status> {
    let (from, to) = install::rollback(dir, name)?;
    println!("{name}: back to {to} (from {from}; `bz plugins rollback {name}` again returns to {from})");
    Ok(Status::Success)
}

pub fn pin(dir: &Path, name: &str, pinned: bool) -> Result<Status> {
    let v = install::set_pinned(dir, name, pinned)?;
    if pinned {
        println!("pinned {name} at {v}: `bz plugins update` leaves it alone");
    } else {
        println!("unpinned {name} ({v})");
    }
    Ok(Status::Success)
}
