//! `DIST/index.json`: read (schema 1 or 2), edit, write atomically. The signature in `index.json.minisig` covers
//! the exact bytes, so every edit that changes them removes it: an index is either signed as it is or unsigned,
//! never carrying a signature that bz would refuse as tampering.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

pub const SCHEMA: u64 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    pub schema: u64,
    /// Grows by one each time the index is signed, so bz can refuse an older index (rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// RFC 3339 UTC; bz refuses the index after it, so a mirror cannot freeze users on old versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
    #[serde(default)]
    pub plugins: Map<String, Value>,
    /// Fields a later bz-package may add survive an edit by this one.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotation {
    /// The base64 line of the next minisign public key.
    pub pubkey: String,
    /// A minisign signature over the bytes of `pubkey`, made with the current key.
    pub signature: String,
}

/// One plugin version as an index lists it, without its artifacts.
pub struct Release<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub version: &'a str,
    pub plugin_api: &'a str,
    pub yanked: bool,
}

pub fn index_path(dist: &Path) -> PathBuf {
    dist.join("index.json")
}

pub fn sig_path(dist: &Path) -> PathBuf {
    dist.join("index.json.minisig")
}

/// The index and the bytes it was read from (`None` when there is none yet: an empty schema-2 index).
pub fn load(dist: &Path) -> Result<(Index, Option<Vec<u8>>)> {
    let path = index_path(dist);
    match std::fs::read(&path) {
        Ok(bytes) => Ok((parse(&bytes).with_context(|| path.display().to_string())?, Some(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Index { schema: SCHEMA, ..Index::default() }, None)),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Like `load`, for commands that make no sense without an index.
pub fn load_existing(dist: &Path) -> Result<(Index, Vec<u8>)> {
    match load(dist)? {
        (index, Some(bytes)) => Ok((index, bytes)),
        (_, None) => bail!("{} does not exist: pack plugins into {} first", index_path(dist).display(), dist.display()),
    }
}

/// Schema 1 (no version, expiry or rotation) reads as schema 2 with those absent; the next write upgrades it.
pub fn parse(bytes: &[u8]) -> Result<Index> {
    let mut index: Index = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not a bz plugin index ({e})"))?;
    match index.schema {
        1 => index.schema = SCHEMA,
        SCHEMA => {}
        n => bail!("schema {n} is not one this bz-package reads (1 or 2): use a newer bz-package"),
    }
    Ok(index)
}

pub fn to_bytes(index: &Index) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(index).expect("an index serializes");
    text.push('\n');
    text.into_bytes()
}

/// Writes the index when its bytes differ from `old`, first removing the signature that no longer covers them.
/// Returns whether it wrote.
pub fn save(dist: &Path, index: &Index, old: Option<&[u8]>) -> Result<bool> {
    let bytes = to_bytes(index);
    if old == Some(&bytes[..]) {
        return Ok(false);
    }
    let sig = sig_path(dist);
    match std::fs::remove_file(&sig) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the stale signature {}", sig.display())),
    }
    write_atomic(&index_path(dist), &bytes)?;
    Ok(true)
}

/// Temp file in the same directory + fsync + rename, mode 0644 (the temporary's 0600 would hide published files
/// from a web server running as another user).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `bytes` unless the file already holds exactly them (keeps mtimes, and caches keyed on them, still).
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

impl Index {
    pub fn find_artifact(&self, name: &str, version: &str, target: &str) -> Option<&Value> {
        self.find_version(name, version)?["artifacts"].as_array()?.iter().find(|a| a["target"] == target)
    }

    pub fn find_version(&self, name: &str, version: &str) -> Option<&Value> {
        self.plugins.get(name)?["versions"].as_array()?.iter().find(|v| v["version"] == version)
    }

    /// Adds `artifact` (its `target` replacing any artifact of that target) under the release's version entry,
    /// creating the plugin and version entries as needed. A version entry exists for one plugin API: with
    /// `replace`, a different API replaces the entry's (and drops the other targets' artifacts built against the
    /// old one); without, it is refused.
    pub fn insert(&mut self, r: &Release, artifact: Value, replace: bool) -> Result<Vec<String>> {
        let plugin = self.plugins.entry(r.name.to_string()).or_insert_with(|| json!({ "description": "", "versions": [] }));
        if !r.description.is_empty() || plugin.get("description").is_none() {
            plugin["description"] = json!(r.description);
        }
        let versions = plugin["versions"].as_array_mut().with_context(|| format!("plugins.{}.versions is not a list", r.name))?;
        if !versions.iter().any(|v| v["version"] == r.version) {
            versions.push(json!({ "version": r.version, "plugin_api": r.plugin_api, "yanked": r.yanked, "artifacts": [] }));
            versions.sort_by_key(|v| semver::Version::parse(v["version"].as_str().unwrap_or("")).unwrap_or(semver::Version::new(0, 0, 0)));
        }
        let entry = versions.iter_mut().find(|v| v["version"] == r.version).expect("the version entry was just made");
        let mut dropped = Vec::new();
        if entry["plugin_api"] != r.plugin_api {
            if !replace {
                bail!(
                    "{} {} is in the index built against plugin_api {}, this build is {}: bump the plugin's version",
                    r.name,
                    r.version,
                    entry["plugin_api"].as_str().unwrap_or("?"),
                    r.plugin_api
                );
            }
            entry["plugin_api"] = json!(r.plugin_api);
            for a in entry["artifacts"].as_array().into_iter().flatten() {
                dropped.extend(a["target"].as_str().map(str::to_string));
            }
            entry["artifacts"] = json!([]);
        }
        let artifacts = entry["artifacts"].as_array_mut().with_context(|| format!("plugins.{}: {} has no artifacts list", r.name, r.version))?;
        artifacts.retain(|a| a["target"] != artifact["target"]);
        dropped.retain(|t| *t != artifact["target"]);
        artifacts.push(artifact);
        artifacts.sort_by(|a, b| a["target"].as_str().cmp(&b["target"].as_str()));
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release<'a>(version: &'a str, api: &'a str) -> Release<'a> {
        Release { name: "p", description: "d", version, plugin_api: api, yanked: false }
    }

    #[test]
    fn schema_1_reads_as_2_and_unknown_schemas_are_refused() {
        let i = parse(br#"{ "schema": 1, "plugins": {} }"#).unwrap();
        assert_eq!((i.schema, i.version, i.expires.as_deref()), (2, None, None));
        assert!(String::from_utf8(to_bytes(&i)).unwrap().contains("\"schema\": 2"));
        let e = parse(br#"{ "schema": 3, "plugins": {} }"#).unwrap_err().to_string();
        assert!(e.contains("schema 3"), "{e}");
        assert!(parse(br#"{ "schema": 2, "version": "seven", "plugins": {} }"#).is_err());
    }

    #[test]
    fn an_edit_removes_the_signature_and_no_edit_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let mut i = Index { schema: SCHEMA, ..Index::default() };
        assert!(save(d.path(), &i, None).unwrap());
        std::fs::write(sig_path(d.path()), "sig").unwrap();
        let (_, bytes) = load_existing(d.path()).unwrap();
        assert!(!save(d.path(), &i, Some(&bytes)).unwrap());
        assert!(sig_path(d.path()).exists());
        i.insert(&release("0.1.0", "1.0.1"), json!({ "target": "t", "sha256": "aa" }), false).unwrap();
        assert!(save(d.path(), &i, Some(&bytes)).unwrap());
        assert!(!sig_path(d.path()).exists());
    }

    #[test]
    fn versions_sort_by_semver_and_an_api_change_needs_replace() {
        let mut i = Index::default();
        for v in ["0.10.0", "0.9.0"] {
            i.insert(&release(v, "1.0.1"), json!({ "target": "t" }), false).unwrap();
        }
        let vs: Vec<&str> = i.plugins["p"]["versions"].as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
        assert_eq!(vs, ["0.9.0", "0.10.0"]);
        i.insert(&release("0.9.0", "1.0.1"), json!({ "target": "u" }), false).unwrap();
        let e = i.insert(&release("0.9.0", "2.0.0"), json!({ "target": "t" }), false).unwrap_err().to_string();
        assert!(e.contains("bump the plugin's version"), "{e}");
        assert_eq!(i.insert(&release("0.9.0", "2.0.0"), json!({ "target": "t" }), true).unwrap(), ["u"]);
        assert_eq!(i.find_version("p", "0.9.0").unwrap()["plugin_api"], "2.0.0");
        assert!(i.find_artifact("p", "0.9.0", "u").is_none());
    }
}
