//! Plugin indexes: where they are configured, how they are read, and how a request becomes one artifact.
//!
//! An index is one JSON file (schema 1) listing every version of every plugin with one artifact per target
//! triple. Artifact URLs are relative to the index, so a copied folder is a mirror.

use super::{fetch, InstallError};
use crate::plugins::{api_compatible, HOST_TARGET};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub schema: u32,
    #[serde(default)]
    pub plugins: BTreeMap<String, IndexPlugin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexPlugin {
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default)]
    pub versions: Vec<IndexVersion>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexVersion {
    pub version: String,
    /// The `bz-plugin-api` version the build was made against.
    pub plugin_api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bz: Option<String>,
    #[serde(default)]
    pub yanked: bool,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub target: String,
    /// Relative to the index's URL, or absolute.
    pub url: String,
    pub size: u64,
    pub sha256: String,
    /// The minisign signature file, relative to the index's URL, or absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minisig: Option<String>,
}

/// One configured index.
#[derive(Debug, Clone)]
pub struct IndexSource {
    pub name: String,
    pub url: Url,
    /// A minisign public key (the base64 line of a `.pub` file).
    pub pubkey: Option<String>,
}

/// `~/.bz/config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserConfig {
    #[serde(default)]
    plugin_index: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexEntry {
    name: String,
    url: String,
    pubkey: Option<String>,
}

/// `~/.bz/config.toml` (BZ_CONFIG overrides it, for tests and unusual set-ups).
pub fn user_config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BZ_CONFIG") {
        return PathBuf::from(p);
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".bz/config.toml")).unwrap_or_else(|| PathBuf::from(".bz/config.toml"))
}

/// The configured indexes, in file order.
pub fn configured() -> Result<Vec<IndexSource>, InstallError> {
    let path = user_config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::io(&path, e)),
    };
    let cfg: UserConfig = toml::from_str(&text).map_err(|e| {
        let at = e.span().map(|s| line_col(&text, s.start)).map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
        InstallError::Config { path: format!("{}{at}", path.display()), reason: e.message().to_string() }
    })?;
    let mut out = Vec::new();
    for (i, e) in cfg.plugin_index.into_iter().enumerate() {
        let url = parse_location(&e.url).map_err(|reason| InstallError::Config {
            path: path.display().to_string(),
            reason: format!("plugin_index[{i}] ({}): url: {reason}", e.name),
        })?;
        if let Some(k) = &e.pubkey {
            check_pubkey(k).map_err(|reason| InstallError::Config {
                path: path.display().to_string(),
                reason: format!("plugin_index[{i}] ({}): pubkey: {reason}", e.name),
            })?;
        }
        out.push(IndexSource { name: e.name, url, pubkey: e.pubkey });
    }
    Ok(out)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// The base64 line of a minisign public key given as that line or as a whole `.pub` file's text.
pub fn key_line(key: &str) -> &str {
    key.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:")).unwrap_or("")
}

/// Accepts the base64 line of a minisign public key, or a whole `.pub` file's text.
pub fn check_pubkey(key: &str) -> Result<minisign_verify::PublicKey, String> {
    minisign_verify::PublicKey::from_base64(key_line(key)).map_err(|e| format!("not a minisign public key ({e})"))
}

/// The indexes a command uses: `--index` (a configured name, or a URL or path), else `BZ_PLUGIN_INDEX`, else
/// the configured ones. A URL given directly takes its key from `--pubkey`, `BZ_PLUGIN_PUBKEY`, or a configured
/// index with the same URL.
pub fn sources(cli_index: Option<&str>, cli_pubkey: Option<&str>) -> Result<Vec<IndexSource>, InstallError> {
    let configured = configured()?;
    let chosen = cli_index.map(|s| (s.to_string(), "--index")).or_else(|| std::env::var("BZ_PLUGIN_INDEX").ok().filter(|s| !s.is_empty()).map(|s| (s, "BZ_PLUGIN_INDEX")));
    let env_key = std::env::var("BZ_PLUGIN_PUBKEY").ok().filter(|s| !s.is_empty());
    let key = cli_pubkey.map(str::to_string).or(env_key);
    if let Some(k) = &key {
        check_pubkey(k).map_err(|reason| InstallError::Usage(format!("--pubkey / BZ_PLUGIN_PUBKEY: {reason}")))?;
    }
    let Some((given, from)) = chosen else {
        if configured.is_empty() {
            return Err(InstallError::NoIndex { config: user_config_path() });
        }
        return Ok(configured);
    };
    if let Some(c) = configured.iter().find(|c| c.name == given) {
        let mut c = c.clone();
        if key.is_some() {
            c.pubkey = key;
        }
        return Ok(vec![c]);
    }
    let url = parse_location(&given).map_err(|reason| InstallError::Usage(format!("{from} {given:?}: {reason}")))?;
    let pubkey = key.or_else(|| configured.iter().find(|c| c.url == url).and_then(|c| c.pubkey.clone()));
    // Named by its URL, without the credentials it may carry: the name is printed and written to receipts.
    Ok(vec![IndexSource { name: fetch::redact(&url), url, pubkey }])
}

/// A URL (`file://`, `http://`, `https://`) or a path; a directory (or a URL ending in `/`) means its `index.json`.
pub fn parse_location(s: &str) -> Result<Url, String> {
    if s.contains("://") {
        let mut url = Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "http" | "https" => {}
            "file" => {
                let p = url.to_file_path().map_err(|_| "not a local file URL".to_string())?;
                if p.is_dir() {
                    url = Url::from_file_path(p.join("index.json")).map_err(|_| "not a local file URL".to_string())?;
                }
            }
            other => return Err(format!("unsupported scheme {other:?} (use https://, http:// or file://)")),
        }
        if url.path().ends_with('/') {
            url = url.join("index.json").map_err(|e| e.to_string())?;
        }
        Ok(url)
    } else {
        let p = Path::new(s);
        let p = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let p = if p.is_dir() { p.join("index.json") } else { p };
        Url::from_file_path(&p).map_err(|_| format!("{} is not an absolute path", p.display()))
    }
}

/// Reads and checks one index.
pub fn fetch_index(source: &IndexSource) -> Result<Index, InstallError> {
    let bytes = fetch::get_small(&source.url, 64 << 20)?;
    let bad = |reason: String| InstallError::Index { url: fetch::redact(&source.url), reason };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a bz plugin index: {e}")))?;
    if index.schema != 1 {
        return Err(bad(format!("index schema {} is not one this bz reads (1); update bz", index.schema)));
    }
    for (name, p) in &index.plugins {
        for v in &p.versions {
            semver::Version::parse(&v.version).map_err(|e| bad(format!("{name} {:?}: not a version ({e})", v.version)))?;
            for a in &v.artifacts {
                if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("{name} {} ({}): sha256 {:?} is not 64 hex digits", v.version, a.target, a.sha256)));
                }
            }
        }
    }
    Ok(index)
}

/// Every configured index that can be read; unreadable ones are reported and skipped unless none is left.
pub fn fetch_all(sources: &[IndexSource]) -> Result<Vec<(IndexSource, Index)>, InstallError> {
    let mut out = Vec::new();
    let mut last = None;
    for s in sources {
        match fetch_index(s) {
            Ok(i) => out.push((s.clone(), i)),
            Err(e) if sources.len() > 1 => {
                eprintln!("warning: skipping index '{}': {e}", s.name);
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    match (out.is_empty(), last) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// The artifact chosen for a request.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub source: IndexSource,
    pub name: String,
    pub entry: IndexVersion,
    pub artifact: Artifact,
    pub url: Url,
    pub minisig: Option<Url>,
}

/// The newest version of `name` that is not yanked, speaks this bz's plugin API, has a build for this target and
/// accepts this bz — or exactly `want`. The error explains why each version was passed over.
pub fn resolve(indexes: &[(IndexSource, Index)], name: &str, want: Option<&semver::Version>, allow_yanked: bool) -> Result<Candidate, InstallError> {
    let mut offered: Vec<(semver::Version, &IndexSource, &IndexVersion)> = Vec::new();
    for (src, idx) in indexes {
        if let Some(p) = idx.plugins.get(name) {
            for v in &p.versions {
                if let Ok(ver) = semver::Version::parse(&v.version) {
                    offered.push((ver, src, v));
                }
            }
        }
    }
    if offered.is_empty() {
        let known: Vec<&str> = indexes.iter().flat_map(|(_, i)| i.plugins.keys().map(String::as_str)).collect();
        let hint = known.iter().map(|k| (strsim::jaro_winkler(k, name), *k)).filter(|(s, _)| *s > 0.8).max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, k)| format!("; did you mean '{k}'?")).unwrap_or_default();
        let where_ = indexes.iter().map(|(s, _)| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ");
        return Err(InstallError::NotInIndex { name: name.into(), indexes: where_, hint });
    }
    // Newest first; for equal versions the earlier index wins.
    offered.sort_by(|a, b| b.0.cmp(&a.0));
    if let Some(w) = want {
        if !offered.iter().any(|(v, _, _)| v == w) {
            let all: Vec<String> = offered.iter().map(|(v, _, _)| v.to_string()).collect();
            return Err(InstallError::NoMatch { name: name.into(), reasons: format!("no version {w} (versions: {})", all.join(", ")) });
        }
    }
    let bz = semver::Version::parse(env!("CARGO_PKG_VERSION")).ok();
    let mut reasons = Vec::new();
    for (ver, src, v) in &offered {
        if want.is_some_and(|w| w != ver) {
            continue;
        }
        if want.is_none() && !ver.pre.is_empty() {
            reasons.push(format!("{ver}: a pre-release (ask for it with {name}@{ver})"));
            continue;
        }
        if v.yanked && !allow_yanked {
            reasons.push(format!("{ver}: yanked{}", if want.is_some() { " (--force installs it anyway)" } else { "" }));
            continue;
        }
        if let Err(r) = api_compatible(&v.plugin_api) {
            reasons.push(format!("{ver}: {r}"));
            continue;
        }
        if let (Some(min), Some(bz)) = (v.min_bz.as_deref().and_then(|m| semver::Version::parse(m).ok()), &bz) {
            if bz < &min {
                reasons.push(format!("{ver}: needs bz {min} or newer (this is {bz})"));
                continue;
            }
        }
        let Some(artifact) = v.artifacts.iter().find(|a| a.target == HOST_TARGET) else {
            let targets: Vec<&str> = v.artifacts.iter().map(|a| a.target.as_str()).collect();
            reasons.push(format!("{ver}: no build for {HOST_TARGET} (builds: {})", if targets.is_empty() { "none".into() } else { targets.join(", ") }));
            continue;
        };
        let join = |u: &str| src.url.join(u).map_err(|e| InstallError::Index { url: fetch::redact(&src.url), reason: format!("{name} {ver}: bad URL {u:?} ({e})") });
        let url = join(&artifact.url)?;
        let minisig = artifact.minisig.as_deref().map(join).transpose()?;
        return Ok(Candidate { source: (*src).clone(), name: name.into(), entry: (*v).clone(), artifact: artifact.clone(), url, minisig });
    }
    Err(InstallError::NoMatch { name: name.into(), reasons: reasons.join("; ") })
}
