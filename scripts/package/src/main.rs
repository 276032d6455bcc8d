//! `bz-package`: what `scripts/package-plugins` and the release workflow run to publish plugins.
//!
//! - `keygen --out PREFIX`: a minisign key pair (`PREFIX.key`, unencrypted, mode 0600; `PREFIX.pub`), in the
//!   format the `minisign` tool reads and writes.
//! - `pack --so LIB --crate-dir DIR --dist DIST [--key KEY] [--flat] [--replace]`: probes the library with
//!   `bz plugins probe` (the same check the installer runs), packs `plugin.toml`, the library and the crate's
//!   licence into a reproducible `.tar.gz`, signs it, and adds it to `DIST/index.json`.
//! - `sign-index --dist DIST --key KEY [--expires-days N]`: a new version, expiry and signature for the index,
//!   unless the present signature still holds.
//! - `rotate-key --dist DIST --key OLD.key --next NEW.pub`: announces the next signing key in the index.
//! - `merge --dist DIST SRC...`: joins other dist folders (per-target builds) into DIST.
//! - `yank --dist DIST NAME VERSION [--undo]`: marks a version yanked in the index (artifacts are never deleted
//!   or replaced: a new build is a new version).
//!
//! Every command that changes index.json removes index.json.minisig; `sign-index` signs it again.

mod index;
mod merge;
mod pack;
mod sign;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};

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
    /// Pack one plugin library into DIST and add it to DIST/index.json (which then needs `sign-index` again).
    Pack {
        /// The built plugin library.
        #[arg(long)]
        so: PathBuf,
        /// The plugin's crate directory (its LICENSE is packed).
        #[arg(long)]
        crate_dir: PathBuf,
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// The minisign secret key to sign the archive with (unsigned without it).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The bz that probes the library (default: the bz beside this program).
        #[arg(long)]
        bz: Option<PathBuf>,
        /// Put the archive at the top of DIST (url bz-NAME-VERSION-TARGET.tar.gz), not under NAME/VERSION/:
        /// GitHub release assets cannot have folders.
        #[arg(long)]
        flat: bool,
        /// Allow new bytes under a version and target already in the index. Only for a developer's own local
        /// channel (the quick start's): a published artifact never changes, bump the version instead.
        #[arg(long)]
        replace: bool,
    },
    /// Sign DIST/index.json: the next version, an expiry N days ahead and index.json.minisig. Does nothing
    /// when index.json.minisig is KEY's valid signature over index.json and the expiry is more than N/2 days
    /// away, so re-running it (weekly, or on every quick start) keeps the index as it is until it must change.
    SignIndex {
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// The minisign secret key of the channel (after `rotate-key`, the NEW key).
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_days: u32,
        /// Sign as of this RFC 3339 time instead of now: reproducible signing, and expired indexes for tests.
        #[arg(long, hide = true, value_parser = parse_time)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Announce the channel's next signing key: writes `key_rotation` (NEW's public key, signed with the OLD
    /// key) into DIST/index.json. Then sign the index with the NEW key: `sign-index --key NEW.key`; users'
    /// bz follows the rotation and trusts NEW from then on. Keep OLD until every user has seen the rotation.
    RotateKey {
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// The current (OLD) secret key, the one users trust.
        #[arg(long)]
        key: PathBuf,
        /// The NEW public key (.pub).
        #[arg(long)]
        next: PathBuf,
    },
    /// Add every plugin, version and artifact of the SRC folders' indexes (and their archive and .minisig
    /// files) to DIST. An artifact already in DIST with the same sha256 is skipped; with other bytes the merge is
    /// refused (artifacts never change) and nothing is written. DIST/index.json then needs `sign-index`.
    Merge {
        #[arg(long, default_value = "dist")]
        dist: PathBuf,
        /// Keep the published bytes of an artifact that SRC rebuilt differently under the same version and
        /// target, instead of refusing (a release that did not bump a plugin's version republishes nothing).
        #[arg(long)]
        keep_published: bool,
        #[arg(required = true)]
        srcs: Vec<PathBuf>,
    },
    /// Mark a version yanked (or not, with --undo); the index then needs `sign-index`.
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

fn parse_time(s: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&chrono::Utc)).map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Keygen { out } => keygen(&out),
        Cmd::Pack { so, crate_dir, dist, key, bz, flat, replace } => {
            pack::pack(&pack::Pack { so: &so, crate_dir: &crate_dir, dist: &dist, key: key.as_deref(), bz, flat, replace })
        }
        Cmd::SignIndex { dist, key, expires_days, now } => say(sign::sign_index(&dist, &key, expires_days, now.unwrap_or_else(chrono::Utc::now))),
        Cmd::RotateKey { dist, key, next } => say(sign::rotate_key(&dist, &key, &next)),
        Cmd::Merge { dist, keep_published, srcs } => say(merge::merge(&dist, &srcs, keep_published)),
        Cmd::Yank { dist, name, version, undo } => yank(&dist, &name, &version, !undo),
    }
}

fn say(line: Result<String>) -> Result<()> {
    println!("{}", line?);
    Ok(())
}

fn keygen(out: &Path) -> Result<()> {
    let sk_path = PathBuf::from(format!("{}.key", out.display()));
    let pk_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [&sk_path, &pk_path] {
        if p.exists() {
            bail!("{} exists; choose another --out (keys are never overwritten)", p.display());
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let sk = kp.sk.to_box(Some("bz plugin signing key")).map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    let pk = kp.pk.to_box().map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&sk_path)
            .with_context(|| format!("cannot write {}", sk_path.display()))?;
        f.write_all(sk.as_bytes())?;
    }
    std::fs::write(&pk_path, &pk).with_context(|| format!("cannot write {}", pk_path.display()))?;
    println!("wrote {} (secret) and {}", sk_path.display(), pk_path.display());
    println!("public key: {}", kp.pk.to_base64());
    Ok(())
}

fn yank(dist: &Path, name: &str, version: &str, yanked: bool) -> Result<()> {
    let (mut idx, bytes) = index::load_existing(dist)?;
    let entry = idx.plugins.get_mut(name).and_then(|p| p["versions"].as_array_mut()).and_then(|vs| vs.iter_mut().find(|v| v["version"] == version));
    let entry = entry.with_context(|| format!("{name} {version} is not in {}", index::index_path(dist).display()))?;
    entry["yanked"] = json!(yanked);
    let changed = index::save(dist, &idx, Some(&bytes))?;
    let state = if yanked { "yanked" } else { "no longer yanked" };
    println!("{name} {version}: {state}{}", if changed { "; sign the index again (bz-package sign-index)" } else { " already" });
    Ok(())
}
