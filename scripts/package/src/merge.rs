//! `merge`: joins other dist folders (one per build target, in the release workflow) into one index. Artifacts
//! never change, so an artifact that is already there must be the same bytes.

use crate::index::{self, Index, Release};
use crate::pack::hex;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::Digest;
use std::path::{Component, Path, PathBuf};

/// One artifact of a source folder, checked against its index and ready to copy.
struct Incoming {
    files: Vec<String>,
    src: PathBuf,
}

/// Returns the line to print. With `keep_published`, an artifact already in DIST with other bytes keeps the
/// published bytes (and is reported) instead of failing the merge.
pub fn merge(dist: &Path, srcs: &[PathBuf], keep_published: bool) -> Result<String> {
    let (idx, old) = index::load(dist)?;
    let mut m = Merger { idx, dist, keep_published };
    let (mut incoming, mut same, mut kept) = (Vec::new(), 0, Vec::new());
    for src in srcs {
        let (s, _) = index::load_existing(src)?;
        for (name, plugin) in &s.plugins {
            for version in plugin["versions"].as_array().into_iter().flatten() {
                for a in version["artifacts"].as_array().into_iter().flatten() {
                    match m.take(src, name, plugin, version, a)? {
                        Take::Add(i) => incoming.push(i),
                        Take::Same => same += 1,
                        Take::Kept(what) => kept.push(what),
                    }
                }
            }
        }
    }
    for i in &incoming {
        for f in &i.files {
            let bytes = std::fs::read(i.src.join(f)).with_context(|| format!("cannot read {}", i.src.join(f).display()))?;
            index::write_if_changed(&dist.join(f), &bytes)?;
        }
    }
    index::save(dist, &m.idx, old.as_deref())?;
    let mut line =
        format!("merged {} folder(s) into {}: {} artifact(s) added, {} already there", srcs.len(), index::index_path(dist).display(), incoming.len(), same);
    if !kept.is_empty() {
        line += &format!("; kept the published bytes of {} (bump their versions to publish new builds)", kept.join(", "));
    }
    Ok(line)
}

enum Take {
    Add(Incoming),
    Same,
    Kept(String),
}

struct Merger<'a> {
    idx: Index,
    dist: &'a Path,
    keep_published: bool,
}

impl Merger<'_> {
    fn take(&mut self, src: &Path, name: &str, plugin: &Value, version: &Value, a: &Value) -> Result<Take> {
        let src_index = index::index_path(src);
        let field = |v: &Value, k: &str| v[k].as_str().map(str::to_string).with_context(|| format!("{}: a {name} artifact has no `{k}`", src_index.display()));
        let (ver, target, sha) = (field(version, "version")?, field(a, "target")?, field(a, "sha256")?);
        if let Some(have) = self.idx.find_artifact(name, &ver, &target) {
            if have["sha256"] == sha.as_str() {
                return Ok(Take::Same);
            }
            if self.keep_published {
                return Ok(Take::Kept(format!("{name} {ver} for {target}")));
            }
            bail!("{}: {name} {ver} for {target} is already in {} with other bytes (sha256 {} there, {sha} here); artifacts never change: bump the plugin's version", src_index.display(), index::index_path(self.dist).display(), have["sha256"].as_str().unwrap_or("?"));
        }
        let url = field(a, "url")?;
        let mut files = vec![relative(&src_index, &url)?];
        if let Some(sig) = a["minisig"].as_str() {
            files.push(relative(&src_index, sig)?);
        }
        let bytes = std::fs::read(src.join(&url)).with_context(|| format!("cannot read {} (listed in {})", src.join(&url).display(), src_index.display()))?;
        if hex(&sha2::Sha256::digest(&bytes)) != sha || a["size"].as_u64() != Some(bytes.len() as u64) {
            bail!("{}: {} does not match its size and sha256 in the index: re-pack that folder", src_index.display(), src.join(&url).display());
        }
        let release = Release {
            name,
            description: plugin["description"].as_str().unwrap_or(""),
            version: &ver,
            plugin_api: &field(version, "plugin_api")?,
            yanked: version["yanked"].as_bool().unwrap_or(false),
        };
        self.idx.insert(&release, a.clone(), false).with_context(|| src_index.display().to_string())?;
        Ok(Take::Add(Incoming { files, src: src.to_path_buf() }))
    }
}

/// Merging copies files by their URL, so only plain relative paths inside the folder are accepted.
fn relative(src_index: &Path, url: &str) -> Result<String> {
    let p = Path::new(url);
    if url.contains("://") || url.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("{}: `{url}` is not a relative path inside the folder; merge copies artifacts by their relative URL", src_index.display());
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A dist folder with one artifact of plugin p 0.1.0 for `target` holding `bytes`.
    fn folder(dir: &Path, name: &str, target: &str, bytes: &[u8]) -> PathBuf {
        let d = dir.join(name);
        let url = format!("bz-p-0.1.0-{target}.tar.gz");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(&url), bytes).unwrap();
        std::fs::write(d.join(format!("{url}.minisig")), "sig").unwrap();
        let mut idx = Index { schema: index::SCHEMA, ..Index::default() };
        let a = json!({ "target": target, "url": url, "size": bytes.len(), "sha256": hex(&sha2::Sha256::digest(bytes)), "minisig": format!("{url}.minisig") });
        idx.insert(&Release { name: "p", description: "d", version: "0.1.0", plugin_api: "1.0.1", yanked: false }, a, false).unwrap();
        index::save(&d, &idx, None).unwrap();
        d
    }

    #[test]
    fn merge_joins_targets_and_same_bytes_are_nothing_to_do() {
        let t = tempfile::tempdir().unwrap();
        let (x, y) = (folder(t.path(), "x", "x86_64", b"one"), folder(t.path(), "y", "aarch64", b"two"));
        let dist = t.path().join("dist");
        let line = merge(&dist, &[x.clone(), y.clone()], false).unwrap();
        assert!(line.contains("2 artifact(s) added, 0 already there"), "{line}");
        let (idx, bytes) = index::load_existing(&dist).unwrap();
        assert!(idx.find_artifact("p", "0.1.0", "x86_64").is_some() && idx.find_artifact("p", "0.1.0", "aarch64").is_some());
        assert_eq!(std::fs::read(dist.join("bz-p-0.1.0-aarch64.tar.gz")).unwrap(), b"two");
        assert!(dist.join("bz-p-0.1.0-x86_64.tar.gz.minisig").exists());
        std::fs::write(index::sig_path(&dist), "signed").unwrap();
        let line = merge(&dist, &[x, y], false).unwrap();
        assert!(line.contains("0 artifact(s) added, 2 already there"), "{line}");
        assert_eq!(std::fs::read(index::index_path(&dist)).unwrap(), bytes);
        assert!(index::sig_path(&dist).exists(), "an unchanged index keeps its signature");
    }

    #[test]
    fn other_bytes_under_a_published_version_are_refused_and_nothing_is_written() {
        let t = tempfile::tempdir().unwrap();
        let dist = folder(t.path(), "dist", "x86_64", b"published");
        let before = std::fs::read(index::index_path(&dist)).unwrap();
        let (rebuilt, new) = (folder(t.path(), "rebuilt", "x86_64", b"rebuilt"), folder(t.path(), "new", "aarch64", b"new"));
        let e = merge(&dist, &[new.clone(), rebuilt.clone()], false).unwrap_err().to_string();
        assert!(e.contains("p 0.1.0 for x86_64 is already in") && e.contains("bump the plugin's version"), "{e}");
        assert_eq!(std::fs::read(index::index_path(&dist)).unwrap(), before);
        assert!(!dist.join("bz-p-0.1.0-aarch64.tar.gz").exists());
        assert_eq!(std::fs::read(dist.join("bz-p-0.1.0-x86_64.tar.gz")).unwrap(), b"published");

        let line = merge(&dist, &[new, rebuilt], true).unwrap();
        assert!(line.contains("1 artifact(s) added") && line.contains("kept the published bytes of p 0.1.0 for x86_64"), "{line}");
        assert_eq!(std::fs::read(dist.join("bz-p-0.1.0-x86_64.tar.gz")).unwrap(), b"published");
    }

    #[test]
    fn a_corrupt_or_escaping_source_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let x = folder(t.path(), "x", "x86_64", b"one");
        std::fs::write(x.join("bz-p-0.1.0-x86_64.tar.gz"), b"two").unwrap();
        let e = merge(&t.path().join("dist"), std::slice::from_ref(&x), false).unwrap_err().to_string();
        assert!(e.contains("does not match its size and sha256"), "{e}");
        let text = std::fs::read_to_string(index::index_path(&x)).unwrap().replace("\"url\": \"bz-p", "\"url\": \"../bz-p");
        std::fs::write(index::index_path(&x), text).unwrap();
        let e = merge(&t.path().join("dist"), &[x], false).unwrap_err().to_string();
        assert!(e.contains("is not a relative path inside the folder"), "{e}");
        assert!(!t.path().join("dist").exists());
    }
}
