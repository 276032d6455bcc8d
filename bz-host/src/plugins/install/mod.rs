//! `bz plugins install` and the commands that manage installed plugins: a verified, atomic distribution.
//!
//! An install takes the plugin directory's lock, resolves the request in the indexes, streams the archive into
//! `.staging/` while hashing it, checks size, sha256 and minisign signature, unpacks it with path containment,
//! probes the library in a child `bz` (bound at load), renames it into `store/<name>/<version>/`, swaps the
//! `<name>.so` link and writes the receipt. Any failure drops the staging directory and leaves the previous
//! install as it was.

pub mod archive;
pub mod fetch;
pub mod index;
pub mod store;

use crate::plugins::{api_compatible, probe, BUILTINS, HOST_TARGET};
use index::{Candidate, IndexSource};
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::{Layout, Receipt, Source};
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
}

impl Request {
    pub fn parse(s: &str) -> Result<Request> {
        let usage = |why: String| InstallError::Usage(format!("{s:?}: {why}"));
        if s.contains("://") {
            let url = Url::parse(s).map_err(|e| usage(format!("not a URL ({e})")))?;
            return Ok(Request::Url(url));
        }
        let p = Path::new(s);
        if s.ends_with(".tar.gz") || s.ends_with(".tgz") || p.is_file() {
            if !p.is_file() {
                return Err(usage("no such archive".into()));
            }
            return Ok(Request::Archive(std::fs::canonicalize(p).map_err(|e| InstallError::io(p, e))?));
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
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
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
    /// `update`: never move to an older version than the installed one.
    pub upgrade_only: bool,
    pub progress: bool,
}

/// What an install did.
#[derive(Debug)]
pub enum Outcome {
    Installed { name: String, version: String, previous: Option<String>, signed: bool },
    AlreadyInstalled { name: String, version: String },
}

/// An archive on its way in: where it came from, how it was checked.
struct Fetched {
    archive: PathBuf,
    sha256: String,
    signed_by: Option<String>,
    source: Source,
    /// What the index promised, checked against the archive's manifest.
    expect: Option<(String, String, String)>,
}

pub fn install(req: &Request, opts: &Options) -> Result<Outcome> {
    let layout = Layout::new(&opts.plugin_dir);
    let _lock = store::lock(&layout, LOCK_WAIT)?;
    let mut receipts = store::read_receipts(&layout)?;
    // Dropped (and removed) on every path out of this function.
    let staging = tempfile::Builder::new().prefix("install-").tempdir_in(layout.staging()).map_err(|e| InstallError::io(&layout.staging(), e))?;
    let fetched = match req {
        Request::Index { index, name, version } => {
            let installed = receipts.plugins.get(name);
            // A pinned plugin stays at its version unless a version is asked for.
            let want = version.clone().or_else(|| installed.filter(|r| r.pinned).and_then(|r| semver::Version::parse(&r.version).ok()));
            let sources = index::sources(index.as_deref().or(opts.index.as_deref()), opts.pubkey.as_deref())?;
            let indexes = index::fetch_all(&sources)?;
            let c = index::resolve(&indexes, name, want.as_ref(), opts.force && version.is_some())?;
            if let Some(r) = installed {
                let older = opts.upgrade_only && semver::Version::parse(&r.version).is_ok_and(|v| v >= semver::Version::parse(&c.entry.version).unwrap_or(v.clone()));
                if older || (r.version == c.entry.version && !opts.force && healthy(&layout, r)) {
                    return Ok(Outcome::AlreadyInstalled { name: name.clone(), version: r.version.clone() });
                }
            }
            fetch_candidate(&c, staging.path(), opts)?
        }
        Request::Archive(path) => {
            let sha = store::sha256_file(path)?;
            check_direct(&path.display().to_string(), &sha, opts)?;
            let signed_by = match &opts.pubkey {
                Some(k) => Some(verify_file(path, &path.with_file_name(format!("{}.minisig", file_name(path))), k)?),
                None => None,
            };
            Fetched { archive: path.clone(), sha256: sha, signed_by, source: Source::Archive { path: path.display().to_string() }, expect: None }
        }
        Request::Url(url) => {
            let dest = staging.path().join("archive.tar.gz");
            let (sig, key) = match &opts.pubkey {
                Some(k) => {
                    let sig_url = Url::parse(&format!("{url}.minisig")).map_err(|e| InstallError::Usage(e.to_string()))?;
                    (Some(read_signature(&sig_url)?), Some(index::check_pubkey(k).map_err(InstallError::Usage)?))
                }
                None => (None, None),
            };
            let mut verifier = match (&sig, &key) {
                (Some(s), Some(k)) => Some(k.verify_stream(s).map_err(|e| InstallError::Signature { what: fetch::redact(url), reason: e.to_string() })?),
                _ => None,
            };
            let d = fetch::download(url, &dest, None, 1 << 30, verifier.as_mut(), opts.progress)?;
            check_direct(url.as_str(), &d.sha256, opts)?;
            let signed_by = match (verifier.as_mut(), &opts.pubkey) {
                (Some(v), Some(k)) => {
                    v.finalize().map_err(|e| InstallError::Signature { what: fetch::redact(url), reason: e.to_string() })?;
                    Some(index::key_line(k).to_string())
                }
                _ => None,
            };
            Fetched { archive: dest, sha256: d.sha256, signed_by, source: Source::Url { url: fetch::redact(url) }, expect: None }
        }
    };
    place(&layout, &mut receipts, fetched, staging.path(), opts)
}

/// An archive given directly has no index to vouch for it: `--sha256` or `--pubkey`, or an explicit
/// `--allow-unsigned`.
fn check_direct(what: &str, sha: &str, opts: &Options) -> Result<()> {
    if let Some(want) = &opts.sha256 {
        if !want.eq_ignore_ascii_case(sha) {
            return Err(InstallError::Hash { what: what.into(), got: sha.into(), want: want.to_lowercase() });
        }
    } else if opts.pubkey.is_none() && !opts.allow_unsigned {
        return Err(InstallError::Unsigned {
            what: what.into(),
            why: format!("nothing vouches for this archive (sha256 {sha}); pass --sha256 HASH from its publisher, --pubkey KEY with its .minisig beside it, or --allow-unsigned to trust it as it is"),
        });
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn read_signature(url: &Url) -> Result<minisign_verify::Signature> {
    let bytes = fetch::get_small(url, 1 << 16)?;
    let text = String::from_utf8_lossy(&bytes);
    minisign_verify::Signature::decode(&text).map_err(|e| InstallError::Signature { what: fetch::redact(url), reason: format!("unreadable signature file: {e}") })
}

fn verify_file(path: &Path, sig: &Path, key: &str) -> Result<String> {
    let k = index::check_pubkey(key).map_err(InstallError::Usage)?;
    let url = Url::from_file_path(sig).map_err(|_| InstallError::Usage(format!("{} is not an absolute path", sig.display())))?;
    let s = read_signature(&url)?;
    let bytes = std::fs::read(path).map_err(|e| InstallError::io(path, e))?;
    k.verify(&bytes, &s, false).map_err(|e| InstallError::Signature { what: path.display().to_string(), reason: e.to_string() })?;
    Ok(index::key_line(key).to_string())
}

/// Downloads an index's artifact into staging, checking signature, size and hash.
fn fetch_candidate(c: &Candidate, staging: &Path, opts: &Options) -> Result<Fetched> {
    let what = format!("{} {} ({})", c.name, c.entry.version, fetch::redact(&c.url));
    let key = match &c.source.pubkey {
        Some(k) => Some(index::check_pubkey(k).map_err(|r| InstallError::Config { path: index::user_config_path().display().to_string(), reason: format!("index '{}': pubkey: {r}", c.source.name) })?),
        None => None,
    };
    // Decided before downloading anything.
    let sig = match (&key, &c.minisig) {
        (Some(_), Some(u)) => Some(read_signature(u)?),
        (Some(_), None) if !opts.allow_unsigned => {
            return Err(InstallError::Unsigned { what, why: format!("the index '{}' has a key but this artifact has no signature; ask its publisher to sign it, or pass --allow-unsigned", c.source.name) })
        }
        (None, _) if !opts.allow_unsigned => {
            return Err(InstallError::Unsigned {
                what,
                why: format!("the index '{}' has no public key, so the archive cannot be verified: add its key (`bz plugins index add {} URL --pubkey KEY`), or pass --allow-unsigned", c.source.name, c.source.name),
            })
        }
        _ => None,
    };
    let mut verifier = match (&key, &sig) {
        (Some(k), Some(s)) => Some(k.verify_stream(s).map_err(|e| InstallError::Signature { what: what.clone(), reason: e.to_string() })?),
        _ => None,
    };
    let dest = staging.join("archive.tar.gz");
    let d = fetch::download(&c.url, &dest, Some(c.artifact.size), c.artifact.size, verifier.as_mut(), opts.progress)?;
    if !d.sha256.eq_ignore_ascii_case(&c.artifact.sha256) {
        return Err(InstallError::Hash { what, got: d.sha256, want: c.artifact.sha256.to_lowercase() });
    }
    let signed_by = match (verifier.as_mut(), &c.source.pubkey) {
        (Some(v), Some(k)) => {
            v.finalize().map_err(|e| InstallError::Signature { what: what.clone(), reason: e.to_string() })?;
            Some(index::key_line(k).to_string())
        }
        _ => None,
    };
    Ok(Fetched {
        archive: dest,
        sha256: d.sha256,
        signed_by,
        source: Source::Index { index: c.source.name.clone(), index_url: fetch::redact(&c.source.url), url: fetch::redact(&c.url) },
        expect: Some((c.name.clone(), c.entry.version.clone(), c.entry.plugin_api.clone())),
    })
}

/// Unpacks, checks and probes a fetched archive, then moves it into the store, swaps the link and writes the
/// receipt.
fn place(layout: &Layout, receipts: &mut store::Receipts, f: Fetched, staging: &Path, opts: &Options) -> Result<Outcome> {
    let pkg = staging.join("pkg");
    std::fs::create_dir(&pkg).map_err(|e| InstallError::io(&pkg, e))?;
    let m = archive::unpack(&f.archive, &pkg)?;
    let what = format!("{} {}", m.name, m.version);
    let mismatch = |reason: String| InstallError::Mismatch { what: what.clone(), reason };
    if let Some((name, version, api)) = &f.expect {
        if (&m.name, &m.version, &m.plugin_api) != (name, version, api) {
            return Err(mismatch(format!("the archive holds {} {} (plugin_api {}), the index promised {name} {version} (plugin_api {api})", m.name, m.version, m.plugin_api)));
        }
    }
    check_name(&m.name).map_err(|r| mismatch(format!("plugin.toml: {r}")))?;
    if m.target != HOST_TARGET {
        return Err(mismatch(format!("built for {}, this bz runs on {HOST_TARGET}", m.target)));
    }
    api_compatible(&m.plugin_api).map_err(&mismatch)?;
    let existing = receipts.plugins.get(&m.name).cloned();
    if existing.as_ref().is_some_and(|r| r.version == m.version) && !opts.force && existing.as_ref().is_some_and(|r| healthy(layout, r)) {
        return Ok(Outcome::AlreadyInstalled { name: m.name, version: m.version });
    }
    check_unmanaged(layout, &m.name, existing.is_some(), opts.force)?;
    let lib = pkg.join(&m.library);
    let probed = probe::probe_child(&lib).map_err(|reason| InstallError::Probe { name: m.name.clone(), reason })?;
    let meta = &probed.metadata;
    if (&meta.name, &meta.version, &meta.api_version) != (&m.name, &m.version, &m.plugin_api) {
        return Err(mismatch(format!("the library is {} {} (plugin_api {}), plugin.toml says {} {} (plugin_api {})", meta.name, meta.version, meta.api_version, m.name, m.version, m.plugin_api)));
    }
    let library_sha256 = store::sha256_file(&lib)?;

    // Into the store. A directory already there (a --force reinstall) is renamed aside, never written into:
    // a running bz may have its library mapped.
    let versions = layout.versions_dir(&m.name);
    std::fs::create_dir_all(&versions).map_err(|e| InstallError::io(&versions, e))?;
    let dest = layout.version_dir(&m.name, &m.version);
    if dest.exists() {
        let aside = staging.join("replaced");
        std::fs::rename(&dest, &aside).map_err(|e| InstallError::io(&dest, e))?;
    }
    std::fs::rename(&pkg, &dest).map_err(|e| InstallError::io(&dest, e))?;
    crate::atomic::sync_dir(&versions);
    let rel = PathBuf::from("store").join(&m.name).join(&m.version).join(&m.library);
    store::swap_link(layout, &m.name, &rel)?;

    let previous = existing.filter(|r| r.version != m.version).map(|mut r| {
        r.previous = None;
        Box::new(r)
    });
    let previous_version = previous.as_ref().map(|p| p.version.clone());
    let keep_previous = previous.clone().or_else(|| receipts.plugins.get(&m.name).and_then(|r| r.previous.clone()));
    let pinned = receipts.plugins.get(&m.name).is_some_and(|r| r.pinned);
    let receipt = Receipt {
        name: m.name.clone(),
        version: m.version.clone(),
        plugin_api: m.plugin_api.clone(),
        target: m.target.clone(),
        library: rel.display().to_string(),
        library_sha256,
        archive_sha256: f.sha256,
        source: f.source,
        signed_by: f.signed_by.clone(),
        pinned,
        installed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        previous: keep_previous,
    };
    receipts.plugins.insert(m.name.clone(), receipt.clone());
    store::write_receipts(layout, receipts)?;
    prune(layout, &receipt);
    Ok(Outcome::Installed { name: m.name, version: m.version, previous: previous_version, signed: f.signed_by.is_some() })
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
        return Err(InstallError::Usage(format!("{} exists and was not installed by `bz plugins install`; remove it, or pass --force to replace it", link.display())));
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

/// Keeps the current and the previous version in the store; removes older ones. Removing a library that a
/// running bz has mapped is safe: the mapping keeps the file's data until it exits.
fn prune(layout: &Layout, r: &Receipt) {
    let keep: Vec<&str> = std::iter::once(r.version.as_str()).chain(r.previous.as_ref().map(|p| p.version.as_str())).collect();
    if let Ok(entries) = std::fs::read_dir(layout.versions_dir(&r.name)) {
        for e in entries.flatten() {
            if !keep.iter().any(|k| e.file_name() == *k) {
                let _ = store::remove_any(&e.path());
            }
        }
    }
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
    let r = receipts.plugins.get_mut(name).ok_or_else(|| InstallError::Usage(format!("plugin '{name}' is not installed by `bz plugins install`; nothing to pin")))?;
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
            None => Some(format!("{} is missing or not a link; reinstall with `bz plugins install {}@{} --force`", layout.link(&r.name).display(), r.name, r.version)),
            Some(t) if t != Path::new(&r.library) => Some(format!("{} points at {}, the receipt says {}; reinstall with `bz plugins install {}@{} --force`", layout.link(&r.name).display(), t.display(), r.library, r.name, r.version)),
            Some(_) => match store::sha256_file(&lib) {
                Err(_) => Some(format!("{} is missing; reinstall with `bz plugins install {}@{} --force`", lib.display(), r.name, r.version)),
                Ok(h) if h != r.library_sha256 => Some(format!("MODIFIED: {} has sha256 {h}, installed as {}; reinstall with `bz plugins install {}@{} --force`", lib.display(), r.library_sha256, r.name, r.version)),
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
pub fn search(sources: &[IndexSource], term: Option<&str>) -> Result<Vec<SearchRow>> {
    let indexes = index::fetch_all(sources)?;
    let mut names: Vec<(&String, &index::IndexPlugin)> = indexes.iter().flat_map(|(_, i)| i.plugins.iter()).collect();
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
