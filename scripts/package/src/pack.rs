//! `pack`: one built plugin library into a reproducible, signed archive listed in `DIST/index.json`.

use crate::index::{self, Release};
use crate::sign;
use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pack<'a> {
    pub so: &'a Path,
    pub crate_dir: &'a Path,
    pub dist: &'a Path,
    pub key: Option<&'a Path>,
    pub bz: Option<PathBuf>,
    /// Archives at the top of DIST, not under NAME/VERSION/ (GitHub release assets have no folders).
    pub flat: bool,
    /// New bytes under an existing version and target (a developer's own channel only).
    pub replace: bool,
}

/// What `bz plugins probe` prints (the fields used here).
#[derive(serde::Deserialize)]
struct Probed {
    metadata: Metadata,
    target: String,
}

#[derive(serde::Deserialize)]
struct Metadata {
    name: String,
    version: String,
    description: String,
    api_version: String,
}

#[derive(serde::Serialize)]
struct Manifest<'a> {
    name: &'a str,
    version: &'a str,
    plugin_api: &'a str,
    target: &'a str,
    library: &'a str,
    description: &'a str,
}

pub fn pack(o: &Pack) -> Result<()> {
    let p = probe(o.bz.clone(), o.so)?;
    let m = &p.metadata;
    let licences = licences(o.crate_dir)?;
    let lib_name = o.so.file_name().context("--so has no file name")?.to_string_lossy().into_owned();
    let manifest = toml::to_string(&Manifest {
        name: &m.name,
        version: &m.version,
        plugin_api: &m.api_version,
        target: &p.target,
        library: &lib_name,
        description: &m.description,
    })?;
    let bytes = tarball(&manifest, o.so, &lib_name, &licences)?;
    let sha = hex(&sha2::Sha256::digest(&bytes));

    let file = format!("bz-{}-{}-{}.tar.gz", m.name, m.version, p.target);
    let rel = if o.flat { file } else { format!("{}/{}/{file}", m.name, m.version) };
    let (mut idx, old) = index::load(o.dist)?;
    if let Some(a) = idx.find_artifact(&m.name, &m.version, &p.target) {
        if a["sha256"] != sha.as_str() && !o.replace {
            bail!("{} {} for {} is already in {} with other bytes; artifacts never change: bump the plugin's version (or --replace, for your own local channel only)", m.name, m.version, p.target, index::index_path(o.dist).display());
        }
    }
    let mut artifact = json!({ "target": p.target, "url": rel, "size": bytes.len(), "sha256": sha });
    if o.key.is_some() {
        artifact["minisig"] = json!(format!("{rel}.minisig"));
    }
    // All checks on the index happen in memory, before any file is written.
    let release = Release { name: &m.name, description: &m.description, version: &m.version, plugin_api: &m.api_version, yanked: false };
    let dropped = idx.insert(&release, artifact, o.replace)?;

    let archive = o.dist.join(&rel);
    let mut wrote = index::write_if_changed(&archive, &bytes)?;
    if let Some(k) = o.key {
        let sk = sign::secret_key(k)?;
        let comment = sign::artifact_comment(&m.name, &m.version, &p.target, &sha);
        wrote |= sign::sign_file(&sk, &PathBuf::from(format!("{}.minisig", archive.display())), &bytes, &comment)?;
    }
    let changed = index::save(o.dist, &idx, old.as_deref())?;
    let what = if o.key.is_some() { "signed" } else { "unsigned" };
    if !wrote && !changed {
        println!("{} {} for {}: already in {} with the same bytes ({what})", m.name, m.version, p.target, o.dist.display());
    } else {
        println!("packed {} {} for {} -> {} ({} bytes, sha256 {sha}, {what})", m.name, m.version, p.target, archive.display(), bytes.len());
    }
    if !dropped.is_empty() {
        println!("{} {}: dropped the artifacts for {} (built against the previous plugin_api)", m.name, m.version, dropped.join(", "));
    }
    Ok(())
}

/// Runs `bz plugins probe`, the same check the installer makes, so nothing is packed that bz would not load.
fn probe(bz: Option<PathBuf>, so: &Path) -> Result<Probed> {
    let bz = match bz {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("bz"),
    };
    let out = Command::new(&bz)
        .args(["plugins", "probe"])
        .arg(so)
        .env("LD_BIND_NOW", "1")
        .output()
        .with_context(|| format!("cannot run {} (--bz names the bz that probes the library)", bz.display()))?;
    if !out.status.success() {
        bail!("{} does not load: {}", so.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("unreadable output of {} plugins probe", bz.display()))
}

fn licences(crate_dir: &Path) -> Result<Vec<PathBuf>> {
    let is_licence = |n: &str| ["LICENSE", "LICENCE", "COPYING"].iter().any(|l| n.to_uppercase().starts_with(l));
    let mut licences: Vec<PathBuf> = std::fs::read_dir(crate_dir)
        .with_context(|| format!("cannot read {}", crate_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| is_licence(&n.to_string_lossy())))
        .collect();
    if licences.is_empty() {
        bail!("{} has no LICENSE file; the archive ships the plugin's licence, so add one", crate_dir.display());
    }
    licences.sort();
    Ok(licences)
}

/// A reproducible archive: fixed order, times, owners and modes, so the same inputs give the same sha256.
fn tarball(manifest: &str, so: &Path, lib_name: &str, licences: &[PathBuf]) -> Result<Vec<u8>> {
    let mtime = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let gz = flate2::GzBuilder::new().mtime(0).write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data)?;
        Ok(())
    };
    add("plugin.toml", manifest.as_bytes(), 0o644)?;
    add(lib_name, &read(so)?, 0o755)?;
    for l in licences {
        add(&l.file_name().context("licence name")?.to_string_lossy(), &read(l)?, 0o644)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inputs_make_the_same_archive() {
        let d = tempfile::tempdir().unwrap();
        let so = d.path().join("libbz_x.so");
        std::fs::write(&so, b"\x7fELF not really").unwrap();
        std::fs::write(d.path().join("LICENSE"), "MIT").unwrap();
        let l = licences(d.path()).unwrap();
        let a = tarball("name = \"x\"\n", &so, "libbz_x.so", &l).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(a, tarball("name = \"x\"\n", &so, "libbz_x.so", &l).unwrap());
        let e = licences(&d.path().join("nowhere")).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
