//! Plugin indexes: where they are configured, how they are read, and how a request becomes one artifact.
//!
//! An index is one JSON file listing every version of every plugin with one artifact per target triple.
//! Artifact URLs are relative to the index, so a copied folder is a mirror. Schema 2 adds what makes a signed
//! index trustworthy beyond its signature (`index.json.minisig` beside it): a `version` that only grows, an
//! `expires` time, and an optional `key_rotation` to the next signing key, vouched for by the current one.

use super::trust::{Seen, Trust};
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
    /// Grows at every re-signing; bz refuses an index older than one it already trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// RFC 3339; bz refuses an expired index, so a frozen mirror cannot hold users back for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
    #[serde(default)]
    pub plugins: BTreeMap<String, IndexPlugin>,
}

/// The next signing key, and the current key's signature over its base64 line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    pub pubkey: String,
    /// A minisign signature file's text.
    pub signature: String,
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
        let url = parse_location(&e.url)
            .map_err(|reason| InstallError::Config { path: path.display().to_string(), reason: format!("plugin_index[{i}] ({}): url: {reason}", e.name) })?;
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

/// The channel a release build of bz carries (its index URL and key, set at build time), used when nothing else is
/// configured; `None` in builds without one, such as a source checkout, which makes its own (`scripts/quickstart`).
pub fn default_channel() -> Option<IndexSource> {
    let (url, key) = (env!("BZ_CHANNEL_URL"), env!("BZ_CHANNEL_PUBKEY"));
    if url.is_empty() || key.is_empty() {
        return None;
    }
    Some(IndexSource { name: "bz".into(), url: Url::parse(url).ok()?, pubkey: Some(key.into()) })
}

/// The indexes a command uses: `--index` (a configured name, or a URL or path), else `BZ_PLUGIN_INDEX`, else
/// the configured ones, else the default channel. A URL given directly takes its key from `--pubkey`, `BZ_PLUGIN_PUBKEY`, or a configured
/// index with the same URL.
pub fn sources(cli_index: Option<&str>, cli_pubkey: Option<&str>) -> Result<Vec<IndexSource>, InstallError> {
    let configured = configured()?;
    let chosen = cli_index
        .map(|s| (s.to_string(), "--index"))
        .or_else(|| std::env::var("BZ_PLUGIN_INDEX").ok().filter(|s| !s.is_empty()).map(|s| (s, "BZ_PLUGIN_INDEX")));
    let env_key = std::env::var("BZ_PLUGIN_PUBKEY").ok().filter(|s| !s.is_empty());
    let key = cli_pubkey.map(str::to_string).or(env_key);
    if let Some(k) = &key {
        check_pubkey(k).map_err(|reason| InstallError::Usage(format!("--pubkey / BZ_PLUGIN_PUBKEY: {reason}")))?;
    }
    let Some((given, from)) = chosen else {
        if !configured.is_empty() {
            return Ok(configured);
        }
        return default_channel().map(|c| vec![c]).ok_or_else(|| InstallError::NoIndex { config: user_config_path() });
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
    Ok(vec![IndexSource { name: crate::redact::url(&url), url, pubkey }])
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

/// An index that passed every check, and the key that signed it: its archives must carry that key's signature.
#[derive(Debug, Clone)]
pub struct Verified {
    pub source: IndexSource,
    pub index: Index,
    /// `None` for an index configured without a key (its installs need --allow-unsigned).
    pub signer: Option<String>,
    /// The keys whose signatures its archives may carry: the signer, and the keys it rotated away from. Archives
    /// signed before a rotation stay installable without re-signing; the signed index still fixes their sha256.
    pub archive_keys: Vec<String>,
}

/// Reads one index and checks it: with a key, its detached signature (`index.json.minisig`), its version against
/// the highest one seen (rollback), its expiry (freeze) and a key rotation; always its shape.
pub fn fetch_index(source: &IndexSource, allow_http: bool, trust: &mut Trust) -> Result<Verified, InstallError> {
    let transport = fetch::Transport::new(&source.url, allow_http);
    let bytes = fetch::get_small(&source.url, 64 << 20, &transport)?;
    let bad = |reason: String| InstallError::Index { url: crate::redact::url(&source.url), reason };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a bz plugin index: {e}")))?;
    if index.schema != 1 && index.schema != 2 {
        return Err(bad(format!("index schema {} is not one this bz reads (1, 2); update bz", index.schema)));
    }
    check_entries(&index).map_err(bad)?;
    let Some(root) = &source.pubkey else {
        return Ok(Verified { source: source.clone(), index, signer: None, archive_keys: Vec::new() });
    };
    let sig_url = signature_url(&source.url);
    let sig_text = fetch::get_small(&sig_url, 1 << 16, &transport).map_err(|e| {
        bad(format!(
            "its key requires a signed index, and its signature {} cannot be read ({e}); ask its publisher to sign it (bz-package sign-index)",
            crate::redact::url(&sig_url)
        ))
    })?;
    let sig = minisign_verify::Signature::decode(&String::from_utf8_lossy(&sig_text))
        .map_err(|e| bad(format!("unreadable signature {}: {e}", crate::redact::url(&sig_url))))?;
    let root = key_line(root).to_string();
    let seen = trust.seen(&root).cloned();
    let signer = check_signer(&bytes, &sig, &index, &root, seen.as_ref()).map_err(&bad)?;
    let version = check_freshness(&index, seen.as_ref()).map_err(&bad)?;
    if signer != seen.as_ref().map_or(root.as_str(), |s| s.key.as_str()) {
        eprintln!(
            "index '{}': its key rotated from {} to {} (vouched for by the old key); only the new key is trusted from now on",
            source.name,
            short_key(seen.as_ref().map_or(&root, |s| &s.key)),
            short_key(&signer)
        );
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    trust.record(&root, Seen { version, key: signer.clone(), url: crate::redact::url(&source.url), seen_at: now });
    let mut archive_keys = vec![signer.clone()];
    for k in [seen.map(|s| s.key), Some(root)].into_iter().flatten() {
        if !archive_keys.contains(&k) {
            archive_keys.push(k);
        }
    }
    Ok(Verified { source: source.clone(), index, signer: Some(signer), archive_keys })
}

/// The detached signature beside a file: `<url>.minisig`.
pub fn signature_url(url: &Url) -> Url {
    let mut u = url.clone();
    u.set_path(&format!("{}.minisig", url.path()));
    u
}

fn short_key(k: &str) -> String {
    format!("{}…", k.chars().take(12).collect::<String>())
}

/// Versions parse and hashes are hex: what the resolver relies on.
fn check_entries(index: &Index) -> Result<(), String> {
    for (name, p) in &index.plugins {
        for v in &p.versions {
            semver::Version::parse(&v.version).map_err(|e| format!("{name} {:?}: not a version ({e})", v.version))?;
            for a in &v.artifacts {
                if a.sha256.len() != 64 || !a.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("{name} {} ({}): sha256 {:?} is not 64 hex digits", v.version, a.target, a.sha256));
                }
            }
        }
    }
    Ok(())
}

/// The key whose signature over the index's bytes is valid: the one trusted now, or the next key when the index
/// carries a rotation signed by the trusted one. A signature by a key that was rotated out is refused.
fn check_signer(bytes: &[u8], sig: &minisign_verify::Signature, index: &Index, root: &str, seen: Option<&Seen>) -> Result<String, String> {
    let trusted = seen.map_or(root, |s| s.key.as_str());
    let signed_by = |key: &str| check_pubkey(key).is_ok_and(|k| k.verify(bytes, sig, false).is_ok());
    if signed_by(trusted) {
        return Ok(trusted.to_string());
    }
    if let Some(r) = &index.key_rotation {
        let vouched = check_pubkey(trusted)
            .is_ok_and(|k| minisign_verify::Signature::decode(&r.signature).is_ok_and(|s| k.verify(key_line(&r.pubkey).as_bytes(), &s, false).is_ok()));
        if vouched && signed_by(&r.pubkey) {
            return Ok(key_line(&r.pubkey).to_string());
        }
    }
    if trusted != root && signed_by(root) {
        return Err(format!("signed with the key {} that this index rotated out on {}: an old index replayed, or a stolen retired key; use an up-to-date mirror (nothing installed)", short_key(root), seen.map_or("?", |s| s.seen_at.as_str())));
    }
    Err(format!("bad signature: index.json was not signed by the index's key {} (a forged or damaged index; nothing installed)", short_key(trusted)))
}

/// A signed index must say its version and expiry; the version may not go back, the expiry not be past.
fn check_freshness(index: &Index, seen: Option<&Seen>) -> Result<u64, String> {
    let (Some(version), Some(expires)) = (index.version, index.expires.as_deref()) else {
        return Err("a signed index must carry `version` and `expires` (schema 2); ask its publisher to re-sign it with bz-package sign-index".into());
    };
    let when = chrono::DateTime::parse_from_rfc3339(expires).map_err(|e| format!("expires {expires:?} is not an RFC 3339 time ({e})"))?;
    if when < chrono::Utc::now() {
        return Err(format!("expired at {expires} (version {version}): a stale mirror, or one frozen by an attacker; use an up-to-date mirror, or ask its publisher to re-sign it (nothing installed)"));
    }
    if let Some(s) = seen {
        if version < s.version {
            return Err(format!("version {version} is older than version {} that bz trusted on {}: a rollback (a stale mirror or an attack); use an up-to-date mirror (nothing installed)", s.version, s.seen_at));
        }
    }
    Ok(version)
}

/// Every configured index that can be read; unreadable ones are reported and skipped unless none is left.
/// A rollback, freeze or bad signature is never skipped: it fails the command.
pub fn fetch_all(sources: &[IndexSource], allow_http: bool, trust: &mut Trust) -> Result<Vec<Verified>, InstallError> {
    let mut out = Vec::new();
    let mut last = None;
    for s in sources {
        match fetch_index(s, allow_http, trust) {
            Ok(v) => out.push(v),
            Err(e @ InstallError::Fetch { .. }) if sources.len() > 1 => {
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
    /// The keys one of which must have signed the archive (none for an index without a key).
    pub keys: Vec<String>,
}

/// The newest version of `name` that is not yanked, speaks this bz's plugin API, has a build for this target and
/// accepts this bz — or exactly `want`. The error explains why each version was passed over.
pub fn resolve(indexes: &[Verified], name: &str, want: Option<&semver::Version>, allow_yanked: bool) -> Result<Candidate, InstallError> {
    let mut offered: Vec<(semver::Version, &Verified, &IndexVersion)> = Vec::new();
    for verified in indexes {
        if let Some(p) = verified.index.plugins.get(name) {
            for v in &p.versions {
                if let Ok(ver) = semver::Version::parse(&v.version) {
                    offered.push((ver, verified, v));
                }
            }
        }
    }
    if offered.is_empty() {
        let known: Vec<&str> = indexes.iter().flat_map(|v| v.index.plugins.keys().map(String::as_str)).collect();
        let hint = known
            .iter()
            .map(|k| (strsim::jaro_winkler(k, name), *k))
            .filter(|(s, _)| *s > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| format!("; did you mean '{k}'?"))
            .unwrap_or_default();
        let where_ = indexes.iter().map(|v| format!("'{}'", v.source.name)).collect::<Vec<_>>().join(", ");
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
    for (ver, verified, v) in &offered {
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
        let src = &verified.source;
        let join = |u: &str| {
            src.url.join(u).map_err(|e| InstallError::Index { url: crate::redact::url(&src.url), reason: format!("{name} {ver}: bad URL {u:?} ({e})") })
        };
        let url = join(&artifact.url)?;
        let minisig = artifact.minisig.as_deref().map(join).transpose()?;
        return Ok(Candidate {
            source: src.clone(),
            name: name.into(),
            entry: (*v).clone(),
            artifact: artifact.clone(),
            url,
            minisig,
            keys: verified.archive_keys.clone(),
        });
    }
    Err(InstallError::NoMatch { name: name.into(), reasons: reasons.join("; ") })
}
