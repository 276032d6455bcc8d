//! `bz plugins install` and the commands that manage installed plugins: a verified, atomic distribution.
//!
//! An install takes the plugin directory's lock, resolves the request in the verified indexes (`index`, `trust`),
//! streams the archive into `.staging/` while hashing it and checks size, sha256 and the minisign signature with
//! what it binds (`obtain`), then unpacks it with path containment, probes the library in a child `bz` (bound at
//! load), renames it into the store, swaps the `<name>.so` link and writes the receipt (`place`). Any failure
//! drops the staging directory and leaves the previous install as it was. Transport rules live in `fetch`.

pub mod archive;
pub mod fetch;
pub mod index;
mod obtain;
mod place;
pub mod store;
pub mod trust;

use crate::plugins::BUILTINS;
use index::IndexSource;
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::{Layout, Receipt, Source};
use trust::Trust;
use url::Url;

/// Every way a plugin-management command fails, each one line with what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another bz has held {} for {waited} s; try again when it is done", path.display())]
    Locked { path: PathBuf, waited: u64 },
    #[error("{}: {reason}; fix it, or move it away to start over (installed plugins stay in store/)", path.display())]
    Receipts { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("no plugin index is configured: add one with `bz plugins index add NAME URL --pubkey KEY`, set BZ_PLUGIN_INDEX, or pass --index URL (config: {})", config.display())]
    NoIndex { config: PathBuf },
    #[error("index {url}: {reason}")]
    Index { url: String, reason: String },
    #[error("{url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("plugin '{name}' is not in index {indexes}{hint} (`bz plugins search` lists what is)")]
    NotInIndex { name: String, indexes: String, hint: String },
    #[error("no installable version of '{name}': {reasons}")]
    NoMatch { name: String, reasons: String },
    #[error("{what}: sha256 is {got}, expected {want}; the file is corrupt or was replaced (nothing installed)")]
    Hash { what: String, got: String, want: String },
    #[error("{what}: {why}")]
    Unsigned { what: String, why: String },
    #[error("{what}: bad signature ({reason}); it was not signed by the index's key (nothing installed)")]
    Signature { what: String, reason: String },
    #[error("archive {}: {reason} (nothing installed)", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("{what}: {reason} (nothing installed)")]
    Mismatch { what: String, reason: String },
    #[error("plugin '{name}': the library does not load: {reason} (nothing installed)")]
    Probe { name: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

impl InstallError {
    pub fn io(path: &Path, source: std::io::Error) -> InstallError {
        InstallError::Io { path: path.to_path_buf(), source }
    }
}

type Result<T> = std::result::Result<T, InstallError>;

/// How long a command waits for another one to release the plugin directory.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// What to install.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `NAME`, `NAME@VERSION`, `INDEX/NAME[@VERSION]`.
    Index { index: Option<String>, name: String, version: Option<semver::Version> },
    /// A local `.tar.gz`.
    Archive(PathBuf),
    /// An archive's `http(s)://` or `file://` URL.
    Url(Url),
    /// A plugin crate's directory, built here with cargo.
    Crate(PathBuf),
}

impl Request {
    pub fn parse(s: &str) -> Result<Request> {
        let usage = |why: String| InstallError::Usage(format!("{s:?}: {why}"));
        if s.contains("://") {
            let url = Url::parse(s).map_err(|e| usage(format!("not a URL ({e})")))?;
            return Ok(Request::Url(url));
        }
        let p = Path::new(s);
        if p.join("Cargo.toml").is_file() {
            return Ok(Request::Crate(std::fs::canonicalize(p).map_err(|e| InstallError::io(p, e))?));
        }
        // Anything that exists and is not a directory is read as an archive: a file, or a pipe such as
        // `<(curl -sL URL)` (read once, like every archive).
        let exists = p.exists() && !p.is_dir();
        if s.ends_with(".tar.gz") || s.ends_with(".tgz") || exists {
            if !exists {
                return Err(usage("no such archive".into()));
            }
            let abs = std::fs::canonicalize(p).or_else(|_| std::path::absolute(p)).map_err(|e| InstallError::io(p, e))?;
            return Ok(Request::Archive(abs));
        }
        let (index, rest) = match s.split_once('/') {
            Some((i, r)) => (Some(i.to_string()), r),
            None => (None, s),
        };
        let (name, version) = match rest.split_once('@') {
            Some((n, v)) => (n, Some(semver::Version::parse(v.trim_start_matches('v')).map_err(|e| usage(format!("version {v:?}: {e}")))?)),
            None => (rest, None),
        };
        check_name(name).map_err(usage)?;
        Ok(Request::Index { index, name: name.to_string(), version })
    }
}

pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if !crate::plugins::loader::is_name(name) {
        return Err(format!("{name:?} is not a plugin name (lower-case letters, digits, '-' and '_')"));
    }
    if BUILTINS.iter().any(|(b, _)| *b == name) {
        return Err(format!("'{name}' is built into bz; there is nothing to install"));
    }
    Ok(())
}

/// Flags of `install` and `update`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub plugin_dir: PathBuf,
    /// `--index`: a configured index's name, or a URL or path.
    pub index: Option<String>,
    pub pubkey: Option<String>,
    pub sha256: Option<String>,
    pub force: bool,
    pub allow_unsigned: bool,
    /// `--allow-http`: plain http to hosts other than this machine.
    pub allow_http: bool,
    /// `--allow-downgrade`: `install NAME` may go to an older version than the installed one.
    pub allow_downgrade: bool,
    /// `update`: never move to an older version than the installed one.
    pub upgrade_only: bool,
    pub progress: bool,
}

/// What vouched for an installed plugin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    Signature,
    Sha256,
    Unsigned,
    LocalBuild,
}

/// What an install did.
#[derive(Debug)]
pub enum Outcome {
    Installed { name: String, version: String, previous: Option<String>, check: Check },
    AlreadyInstalled { name: String, version: String },
}

pub fn install(req: &Request, opts: &Options) -> Result<Outcome> {
    let layout = Layout::new(&opts.plugin_dir);
    let _lock = store::lock(&layout, LOCK_WAIT)?;
    let mut receipts = store::read_receipts(&layout)?;
    place::prune_all(&layout, &receipts);
    // Dropped (and removed) on every path out of this function.
    let staging = tempfile::Builder::new().prefix("install-").tempdir_in(layout.staging()).map_err(|e| InstallError::io(&layout.staging(), e))?;
    let fetched = match req {
        Request::Index { index, name, version } => match from_index(&layout, &receipts, index.as_deref(), name, version.as_ref(), staging.path(), opts)? {
            Ok(f) => f,
            Err(done) => return Ok(done),
        },
        Request::Archive(path) => {
            let url = Url::from_file_path(path).map_err(|_| InstallError::Usage(format!("{} is not an absolute path", path.display())))?;
            obtain::direct(&url, Source::Archive { path: path.display().to_string() }, staging.path(), opts)?
        }
        Request::Url(url) => obtain::direct(url, Source::Url { url: crate::redact::url(url) }, staging.path(), opts)?,
        Request::Crate(dir) => obtain::build_crate(dir, staging.path())?,
    };
    place::place(&layout, &mut receipts, fetched, staging.path(), opts)
}

/// Resolves a name in the indexes (remembering what was verified, for rollback checks) and fetches the chosen
/// artifact, or says the installed version already is the one to have.
fn from_index(
    layout: &Layout,
    receipts: &store::Receipts,
    index: Option<&str>,
    name: &str,
    version: Option<&semver::Version>,
    staging: &Path,
    opts: &Options,
) -> Result<std::result::Result<obtain::Fetched, Outcome>> {
    let installed = receipts.plugins.get(name);
    // A pinned plugin stays at its version unless a version is asked for.
    let want = version.cloned().or_else(|| installed.filter(|r| r.pinned).and_then(|r| semver::Version::parse(&r.version).ok()));
    let sources = index::sources(index.or(opts.index.as_deref()), opts.pubkey.as_deref())?;
    let mut trust = Trust::load(&layout.dir)?;
    let indexes = index::fetch_all(&sources, opts.allow_http, &mut trust)?;
    trust.save()?;
    let c = index::resolve(&indexes, name, want.as_ref(), opts.force && version.is_some())?;
    if let Some(r) = installed {
        let have = semver::Version::parse(&r.version).ok();
        let offered = semver::Version::parse(&c.entry.version).ok();
        let older = have.as_ref().zip(offered.as_ref()).is_some_and(|(h, o)| o < h);
        if older && opts.upgrade_only {
            return Ok(Err(Outcome::AlreadyInstalled { name: name.into(), version: r.version.clone() }));
        }
        if older && version.is_none() && !opts.allow_downgrade {
            return Err(InstallError::Usage(format!(
                "{name} {} is installed and the newest installable version in the index is {}: install {name}@{} or pass --allow-downgrade to go back (nothing changed)",
                r.version, c.entry.version, c.entry.version
            )));
        }
        // The same version with other bytes is a developer's channel rebuilt with --replace (a published one never
        // changes an artifact, and the signed index vouches for the new bytes): that is installed again.
        let same_build = r.archive_sha256.eq_ignore_ascii_case(&c.artifact.sha256);
        if r.version == c.entry.version && same_build && !opts.force && healthy(layout, r) {
            return Ok(Err(Outcome::AlreadyInstalled { name: name.into(), version: r.version.clone() }));
        }
    }
    obtain::from_index(&c, staging, opts).map(Ok)
}

/// Whether an installed version is intact: link, library and hash as the receipt says.
fn healthy(layout: &Layout, r: &Receipt) -> bool {
    layout.link_target(&r.name).is_some_and(|t| t == Path::new(&r.library)) && store::sha256_file(&layout.library(r)).is_ok_and(|h| h == r.library_sha256)
}

/// Refuses to take over a file the user put there by hand, and warns of other files claiming the name.
fn check_unmanaged(layout: &Layout, name: &str, managed: bool, force: bool) -> Result<()> {
    let link = layout.link(name);
    let is_ours = std::fs::read_link(&link).is_ok_and(|t| t.starts_with("store"));
    if link.symlink_metadata().is_ok() && !is_ours && !managed && !force {
        return Err(InstallError::Usage(format!(
            "{} exists and was not installed by `bz plugins install`; remove it, or pass --force to replace it",
            link.display()
        )));
    }
    let snake = name.replace('-', "_");
    for other in [format!("lib{snake}.so"), format!("libbz_{snake}.so"), format!("libbz_plugin_{snake}.so")] {
        let p = layout.dir.join(&other);
        if p.symlink_metadata().is_ok() {
            return Err(InstallError::Usage(format!("{} also provides '{name}', and bz refuses to choose between two files: remove it first", p.display())));
        }
    }
    Ok(())
}

/// `bz plugins remove`: the link, the receipt and the store directory.
pub fn remove(plugin_dir: &Path, name: &str) -> Result<String> {
    let layout = Layout::new(plugin_dir);
    let _lock = store::lock(&layout, LOCK_WAIT)?;
    let mut receipts = store::read_receipts(&layout)?;
    let Some(r) = receipts.plugins.remove(name) else {
        let link = layout.link(name);
        return Err(InstallError::Usage(if link.symlink_metadata().is_ok() {
            format!("'{name}' was not installed by `bz plugins install` ({}); delete the file by hand", link.display())
        } else {
            format!("plugin '{name}' is not installed in {}", plugin_dir.display())
        }));
    };
    // Receipt first: a crash after it leaves a dangling link the loader reports, never a receipt for nothing.
    store::write_receipts(&layout, &receipts)?;
    let link = layout.link(name);
    if std::fs::read_link(&link).is_ok() {
        std::fs::remove_file(&link).map_err(|e| InstallError::io(&link, e))?;
    }
    let versions = layout.versions_dir(name);
    store::remove_any(&versions).map_err(|e| InstallError::io(&versions, e))?;
    Ok(r.version)
}

/// `bz plugins rollback`: back to the version the last install replaced (still in the store).
pub fn rollback(plugin_dir: &Path, name: &str) -> Result<(String, String)> {
    let layout = Layout::new(plugin_dir);
    let _lock = store::lock(&layout, LOCK_WAIT)?;
    let mut receipts = store::read_receipts(&layout)?;
    let current = receipts.plugins.get(name).cloned().ok_or_else(|| InstallError::Usage(format!("plugin '{name}' is not installed")))?;
    let Some(prev) = current.previous.clone() else {
        return Err(InstallError::Usage(format!("'{name}' {} has no earlier version to go back to", current.version)));
    };
    let lib = layout.library(&prev);
    let hash = store::sha256_file(&lib)?;
    if hash != prev.library_sha256 {
        return Err(InstallError::Hash { what: lib.display().to_string(), got: hash, want: prev.library_sha256.clone() });
    }
    store::swap_link(&layout, name, Path::new(&prev.library))?;
    let mut back = *prev;
    let mut now = current.clone();
    now.previous = None;
    back.pinned = current.pinned;
    back.previous = Some(Box::new(now));
    let from = current.version;
    let to = back.version.clone();
    receipts.plugins.insert(name.to_string(), back);
    store::write_receipts(&layout, &receipts)?;
    Ok((from, to))
}

/// `bz plugins pin / unpin`.
pub fn set_pinned(plugin_dir: &Path, name: &str, pinned: bool) -> Result<String> {
    let layout = Layout::new(plugin_dir);
    let _lock = store::lock(&layout, LOCK_WAIT)?;
    let mut receipts = store::read_receipts(&layout)?;
    let r = receipts
        .plugins
        .get_mut(name)
        .ok_or_else(|| InstallError::Usage(format!("plugin '{name}' is not installed by `bz plugins install`; nothing to pin")))?;
    r.pinned = pinned;
    let version = r.version.clone();
    store::write_receipts(&layout, &receipts)?;
    Ok(version)
}

/// One finding of `bz plugins verify`.
#[derive(Debug)]
pub struct Finding {
    pub name: String,
    pub version: String,
    pub problem: Option<String>,
}

/// `bz plugins verify`: every receipt against the files.
pub fn verify(plugin_dir: &Path) -> Result<Vec<Finding>> {
    let layout = Layout::new(plugin_dir);
    let receipts = store::read_receipts(&layout)?;
    let mut out = Vec::new();
    for r in receipts.plugins.values() {
        let lib = layout.library(r);
        let problem = match layout.link_target(&r.name) {
            None => Some(format!(
                "{} is missing or not a link; reinstall with `bz plugins install {}@{} --force`",
                layout.link(&r.name).display(),
                r.name,
                r.version
            )),
            Some(t) if t != Path::new(&r.library) => Some(format!(
                "{} points at {}, the receipt says {}; reinstall with `bz plugins install {}@{} --force`",
                layout.link(&r.name).display(),
                t.display(),
                r.library,
                r.name,
                r.version
            )),
            Some(_) => match store::sha256_file(&lib) {
                Err(_) => Some(format!("{} is missing; reinstall with `bz plugins install {}@{} --force`", lib.display(), r.name, r.version)),
                Ok(h) if h != r.library_sha256 => Some(format!(
                    "MODIFIED: {} has sha256 {h}, installed as {}; reinstall with `bz plugins install {}@{} --force`",
                    lib.display(),
                    r.library_sha256,
                    r.name,
                    r.version
                )),
                Ok(_) => None,
            },
        };
        out.push(Finding { name: r.name.clone(), version: r.version.clone(), problem });
    }
    Ok(out)
}

/// One row of `bz plugins search`: name, newest installable version (or why none), description.
pub type SearchRow = (String, std::result::Result<String, String>, String);

/// The indexes' plugins for `bz plugins search`.
/// Reads the trust state but does not record what it saw: only commands that hold the plugin directory's lock do.
pub fn search(plugin_dir: &Path, sources: &[IndexSource], term: Option<&str>, allow_http: bool) -> Result<Vec<SearchRow>> {
    let mut trust = Trust::load(plugin_dir)?;
    let indexes = index::fetch_all(sources, allow_http, &mut trust)?;
    let mut names: Vec<(&String, &index::IndexPlugin)> = indexes.iter().flat_map(|v| v.index.plugins.iter()).collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    names.dedup_by(|a, b| a.0 == b.0);
    let term = term.map(str::to_lowercase);
    let mut out = Vec::new();
    for (name, p) in names {
        if term.as_ref().is_some_and(|t| !name.contains(t.as_str()) && !p.description.to_lowercase().contains(t.as_str())) {
            continue;
        }
        let best = index::resolve(&indexes, name, None, false).map(|c| c.entry.version).map_err(|e| match e {
            InstallError::NoMatch { reasons, .. } => reasons,
            other => other.to_string(),
        });
        out.push((name.clone(), best, p.description.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        let v = |s: &str| Some(semver::Version::parse(s).unwrap());
        assert_eq!(Request::parse("optuna").unwrap(), Request::Index { index: None, name: "optuna".into(), version: None });
        assert_eq!(Request::parse("optuna@0.3.1").unwrap(), Request::Index { index: None, name: "optuna".into(), version: v("0.3.1") });
        assert_eq!(Request::parse("optuna@v0.3.1").unwrap(), Request::Index { index: None, name: "optuna".into(), version: v("0.3.1") });
        assert_eq!(Request::parse("mirror/optuna").unwrap(), Request::Index { index: Some("mirror".into()), name: "optuna".into(), version: None });
        assert!(matches!(Request::parse("https://example.invalid/x.tar.gz").unwrap(), Request::Url(_)));
        assert!(Request::parse("optuna@latest").unwrap_err().to_string().contains("version \"latest\""));
        assert!(Request::parse("Optuna").unwrap_err().to_string().contains("not a plugin name"));
        assert!(Request::parse("early_stopping").unwrap_err().to_string().contains("built into bz"));
        assert!(Request::parse("./missing.tar.gz").unwrap_err().to_string().contains("no such archive"));
    }
}
