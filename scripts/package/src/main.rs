//! `bz-package`: what `scripts/package-plugins` runs to publish plugins.
//!
//! - `keygen --out PREFIX`: a minisign key pair (`PREFIX.key`, unencrypted, mode 0600; `PREFIX.pub`), in the
//!   format the `minisign` tool reads and writes.
//! - `pack --so LIB --crate-dir DIR --dist DIST [--key KEY]`: probes the library with `bz plugins probe` (the
//!   same check the installer runs), packs `plugin.toml`, the library and the crate's licence into a
//!   reproducible `.tar.gz`, signs it, and adds it to `DIST/index.json`.
//! - `yank --dist DIST NAME VERSION [--undo]`: marks a version yanked in the index (artifacts are never deleted
//!   or replaced: a new build is a new version).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use sha2::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "bz-package", about = "Pack, sign and index bz plugins")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a minisign key pair: PREFIX.key (secret, keep it out of the repository) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Pack one plugin library into DIST and add it to DIST/index.json.
    Pack {
        /// The built plugin library.
        #[arg(long)]
        so: PathBuf,
        /// The plugin's crate directory (its LICENSE is packed).
        #[arg(long)]
        crate_dir: PathBuf,
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// The minisign secret key to sign with (unsigned without it).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The bz that probes the library (default: the bz beside this program).
        #[arg(long)]
        bz: Option<PathBuf>,
    },
    /// Mark a version yanked (or not, with --undo).
    Yank {
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        name: String,
        version: String,
        #[arg(long)]
        undo: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Keygen { out } => keygen(&out),
        Cmd::Pack { so, crate_dir, dist, key, bz } => pack(&so, &crate_dir, &dist, key.as_deref(), bz),
        Cmd::Yank { dist, name, version, undo } => yank(&dist, &name, &version, !undo),
    }
}

fn keygen(out: &Path) -> Result<()> {
    let sk_path = PathBuf::from(format!("{}.key", out.display()));
    let pk_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            bail!("{} exists; choose another --out (keys are never overwritten)", p.display());
        }
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let sk = kp.sk.to_box(Some("bz plugin signing key")).map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    let pk = kp.pk.to_box().map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&sk_path).with_context(|| format!("cannot write {}", sk_path.display()))?;
        f.write_all(sk.as_bytes())?;
    }
    std::fs::write(&pk_path, &pk).with_context(|| format!("cannot write {}", pk_path.display()))?;
    println!("wrote {} (secret) and {}", sk_path.display(), pk_path.display());
    println!("public key: {}", kp.pk.to_base64());
    Ok(())
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

fn pack(so: &Path, crate_dir: &Path, dist: &Path, key: Option<&Path>, bz: Option<PathBuf>) -> Result<()> {
    let bz = match bz {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("bz"),
    };
    let out = Command::new(&bz).args(["plugins", "probe"]).arg(so).env("LD_BIND_NOW", "1").output().with_context(|| format!("cannot run {}", bz.display()))?;
    if !out.status.success() {
        bail!("{} does not load: {}", so.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let p: Probed = serde_json::from_slice(&out.stdout).context("unreadable probe output")?;
    let m = &p.metadata;
    let licences: Vec<PathBuf> = std::fs::read_dir(crate_dir)
        .with_context(|| format!("cannot read {}", crate_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().map(|n| n.to_string_lossy().to_uppercase()).is_some_and(|n| n.starts_with("LICENSE") || n.starts_with("LICENCE") || n.starts_with("COPYING")))
        .collect();
    if licences.is_empty() {
        bail!("{} has no LICENSE file; the archive ships the plugin's licence, so add one", crate_dir.display());
    }
    let lib_name = so.file_name().context("--so has no file name")?.to_string_lossy().into_owned();
    let manifest = toml::to_string(&Manifest { name: &m.name, version: &m.version, plugin_api: &m.api_version, target: &p.target, library: &lib_name, description: &m.description })?;

    let rel = format!("{}/{}/bz-{}-{}-{}.tar.gz", m.name, m.version, m.name, m.version, p.target);
    let archive = dist.join(&rel);
    let index_path = dist.join("index.json");
    let mut index = read_index(&index_path)?;
    // Artifacts are immutable: the same version and target twice must be the same bytes.
    let bytes = tarball(&manifest, so, &lib_name, &licences)?;
    let sha = hex(&sha2::Sha256::digest(&bytes));
    if let Some(a) = find_artifact(&index, &m.name, &m.version, &p.target) {
        if a["sha256"] != sha.as_str() {
            bail!("{} {} for {} is already in {} with other bytes; artifacts never change: bump the plugin's version", m.name, m.version, p.target, index_path.display());
        }
    }
    std::fs::create_dir_all(archive.parent().context("archive path")?)?;
    std::fs::write(&archive, &bytes).with_context(|| format!("cannot write {}", archive.display()))?;
    let minisig = match key {
        Some(k) => {
            let sk = secret_key(k)?;
            let comment = format!("bz plugin {} {} {}", m.name, m.version, p.target);
            let sig = minisign::sign(None, &sk, &bytes[..], Some(&comment), None).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
            std::fs::write(format!("{}.minisig", archive.display()), sig.into_string())?;
            Some(format!("{rel}.minisig"))
        }
        None => None,
    };
    let plugin = index["plugins"].as_object_mut().context("index.json: plugins is not an object")?.entry(m.name.clone()).or_insert_with(|| json!({ "description": "", "versions": [] }));
    plugin["description"] = json!(m.description);
    let versions = plugin["versions"].as_array_mut().context("index.json: versions is not a list")?;
    if !versions.iter().any(|v| v["version"] == m.version.as_str()) {
        versions.push(json!({ "version": m.version, "plugin_api": m.api_version, "yanked": false, "artifacts": [] }));
    }
    versions.sort_by(|a, b| {
        let v = |x: &Value| semver::Version::parse(x["version"].as_str().unwrap_or("0.0.0")).unwrap_or(semver::Version::new(0, 0, 0));
        v(a).cmp(&v(b))
    });
    let entry = versions.iter_mut().find(|v| v["version"] == m.version.as_str()).context("version entry")?;
    if entry["plugin_api"] != m.api_version.as_str() {
        bail!("{} {} is in the index built against plugin_api {}, this build is {}: bump the plugin's version", m.name, m.version, entry["plugin_api"], m.api_version);
    }
    let artifacts = entry["artifacts"].as_array_mut().context("index.json: artifacts is not a list")?;
    artifacts.retain(|a| a["target"] != p.target.as_str());
    let mut a = json!({ "target": p.target, "url": rel, "size": bytes.len(), "sha256": sha });
    if let Some(s) = minisig {
        a["minisig"] = json!(s);
    }
    artifacts.push(a);
    write_index(&index_path, &index)?;
    println!("packed {} {} for {} -> {} ({} bytes, sha256 {sha}{})", m.name, m.version, p.target, archive.display(), bytes.len(), if key.is_some() { ", signed" } else { ", unsigned" });
    Ok(())
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
    let mut sorted = licences.to_vec();
    sorted.sort();
    for l in &sorted {
        add(&l.file_name().context("licence name")?.to_string_lossy(), &read(l)?, 0o644)?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// An unencrypted minisign secret key, or an encrypted one with its password in BZ_SIGNING_PASSWORD.
fn secret_key(path: &Path) -> Result<minisign::SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the key {}", path.display()))?;
    let sk_box = minisign::SecretKeyBox::from_string(&text).map_err(|e| anyhow::anyhow!("{}: not a minisign secret key ({e})", path.display()))?;
    let sk = sk_box.into_unencrypted_secret_key().or_else(|_| match std::env::var("BZ_SIGNING_PASSWORD") {
        Ok(pw) => minisign::SecretKeyBox::from_string(&text).and_then(|b| b.into_secret_key(Some(pw))),
        Err(_) => Err(minisign::PError::new(minisign::ErrorKind::Misc, "the key is encrypted: set BZ_SIGNING_PASSWORD")),
    });
    sk.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read(p: &Path) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?.read_to_end(&mut v)?;
    Ok(v)
}

fn read_index(path: &Path) -> Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let v: Value = serde_json::from_str(&t).with_context(|| format!("{}: not JSON", path.display()))?;
            if v["schema"] != 1 {
                bail!("{}: not a schema-1 bz plugin index", path.display());
            }
            Ok(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({ "schema": 1, "plugins": {} })),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_index(path: &Path, index: &Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(tmp.path(), serde_json::to_string_pretty(index)? + "\n")?;
    tmp.persist(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn find_artifact<'a>(index: &'a Value, name: &str, version: &str, target: &str) -> Option<&'a Value> {
    index["plugins"][name]["versions"].as_array()?.iter().find(|v| v["version"] == version)?["artifacts"].as_array()?.iter().find(|a| a["target"] == target)
}

fn yank(dist: &Path, name: &str, version: &str, yanked: bool) -> Result<()> {
    let path = dist.join("index.json");
    let mut index = read_index(&path)?;
    let entry = index["plugins"][name]["versions"]
        .as_array_mut()
        .and_then(|vs| vs.iter_mut().find(|v| v["version"] == version))
        .with_context(|| format!("{name} {version} is not in {}", path.display()))?;
    entry["yanked"] = json!(yanked);
    write_index(&path, &index)?;
    println!("{name} {version}: {}", if yanked { "yanked" } else { "no longer yanked" });
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
