//! Getting a plugin into staging, checked, from each kind of request: an index's artifact, an archive file or URL
//! given directly, or a plugin crate built here. Every archive is read exactly once, into staging, while its
//! sha256 and minisign hash are computed; what is unpacked later is that copy, never the original path.

use super::fetch::{self, Limits, Transport};
use super::index::{self, Candidate};
use super::store::Source;
use super::{Check, InstallError, Options, Result};
use std::path::{Path, PathBuf};
use url::Url;

/// The largest archive accepted when no index promised a size.
const MAX_ARCHIVE: u64 = 256 << 20;

/// What staging holds once a request is fetched.
pub enum Payload {
    /// A `.tar.gz`, still to unpack.
    Archive(PathBuf),
    /// A directory laid out as an unpacked archive (a local build), and the probe of its library that made its
    /// plugin.toml (so it is not probed twice).
    Unpacked(PathBuf, Box<crate::plugins::probe::Probed>),
}

/// A plugin on its way in: where it came from, how it was checked.
pub struct Fetched {
    pub payload: Payload,
    pub sha256: String,
    pub check: Check,
    /// The key line that verified it.
    pub signed_by: Option<String>,
    /// The signature's trusted comment: it must name the plugin, version, target and sha256 that get installed.
    pub binding: Option<String>,
    pub source: Source,
    /// What the index promised (name, version, plugin_api), checked against the archive's manifest.
    pub expect: Option<(String, String, String)>,
}

/// Downloads an index's artifact into staging, checking signature, size and hash.
pub fn from_index(c: &Candidate, staging: &Path, opts: &Options) -> Result<Fetched> {
    let what = format!("{} {} ({})", c.name, c.entry.version, crate::redact::url(&c.url));
    let transport = Transport::new(&c.source.url, opts.allow_http);
    let keyed = !c.keys.is_empty();
    let sig = match (keyed, &c.minisig) {
        (true, Some(u)) => Some(read_signature(u, &transport)?),
        (true, None) if !opts.allow_unsigned => {
            return Err(InstallError::Unsigned { what, why: format!("the index '{}' has a key but this artifact has no signature; ask its publisher to sign it, or pass --allow-unsigned", c.source.name) })
        }
        (false, _) if !opts.allow_unsigned => {
            return Err(InstallError::Unsigned {
                what,
                why: format!("the index '{}' has no public key, so the archive cannot be verified: add its key (`bz plugins index add {} URL --pubkey KEY`), or pass --allow-unsigned", c.source.name, c.source.name),
            })
        }
        _ => None,
    };
    // The key the signature names, among those the index allows.
    let key = match &sig {
        Some(s) => Some(
            signing_key(&c.keys, s).ok_or_else(|| InstallError::Signature { what: what.clone(), reason: "made with a key the index does not trust".into() })?,
        ),
        None => None,
    };
    let dest = staging.join("archive.tar.gz");
    let limits = Limits { expect: Some(c.artifact.size), max: c.artifact.size, progress: opts.progress };
    let (d, verdict) = stream_verified(&c.url, &dest, &limits, &transport, key.as_ref().map(|(k, _)| k).zip(sig.as_ref()), &what)?;
    if !d.sha256.eq_ignore_ascii_case(&c.artifact.sha256) {
        return Err(InstallError::Hash { what, got: d.sha256, want: c.artifact.sha256.to_lowercase() });
    }
    verdict?;
    check_sha256_flag(&what, &d.sha256, opts)?;
    let check = if sig.is_some() { Check::Signature } else { Check::Unsigned };
    Ok(Fetched {
        payload: Payload::Archive(dest),
        sha256: d.sha256,
        check,
        signed_by: key.map(|(_, line)| line),
        binding: sig.map(|s| s.trusted_comment().to_string()),
        source: Source::Index { index: c.source.name.clone(), index_url: crate::redact::url(&c.source.url), url: crate::redact::url(&c.url) },
        expect: Some((c.name.clone(), c.entry.version.clone(), c.entry.plugin_api.clone())),
    })
}

/// An archive given directly, as a path (`file://`) or a URL: copied into staging once; `--sha256`, `--pubkey`
/// (with its `.minisig` beside it) or an explicit `--allow-unsigned` must vouch for it.
pub fn direct(url: &Url, source: Source, staging: &Path, opts: &Options) -> Result<Fetched> {
    let what = crate::redact::url(url);
    let transport = Transport::new(url, opts.allow_http);
    let key = opts.pubkey.as_deref().map(|k| index::check_pubkey(k).map_err(InstallError::Usage)).transpose()?;
    let sig = match &key {
        Some(_) => Some(read_signature(&index::signature_url(url), &transport)?),
        None => None,
    };
    let dest = staging.join("archive.tar.gz");
    let limits = Limits { expect: None, max: MAX_ARCHIVE, progress: opts.progress };
    let (d, verdict) = stream_verified(url, &dest, &limits, &transport, key.as_ref().zip(sig.as_ref()), &what)?;
    check_sha256_flag(&what, &d.sha256, opts)?;
    verdict?;
    let check = if opts.sha256.is_some() {
        Check::Sha256
    } else if sig.is_some() {
        Check::Signature
    } else if opts.allow_unsigned {
        Check::Unsigned
    } else {
        return Err(InstallError::Unsigned {
            what,
            why: format!("nothing vouches for this archive (sha256 {}); pass --sha256 HASH from its publisher, --pubkey KEY with its .minisig beside it, or --allow-unsigned to trust it as it is", d.sha256),
        });
    };
    Ok(Fetched {
        payload: Payload::Archive(dest),
        sha256: d.sha256,
        check,
        signed_by: sig.as_ref().and(opts.pubkey.as_deref()).map(|k| index::key_line(k).to_string()),
        binding: sig.map(|s| s.trusted_comment().to_string()),
        source,
        expect: None,
    })
}

/// The key (and its base64 line) among `keys` that `sig` says made it.
fn signing_key(keys: &[String], sig: &minisign_verify::Signature) -> Option<(minisign_verify::PublicKey, String)> {
    keys.iter().find_map(|line| {
        let k = index::check_pubkey(line).ok()?;
        // verify_stream refuses a key whose id differs from the signature's, before reading any data.
        k.verify_stream(sig).is_ok().then(|| (k.clone(), line.clone()))
    })
}

/// Streams into staging with the signature checked on the way when there is one. The signature's verdict is
/// returned, not raised, so that a damaged download is reported by its hash first, which says more.
fn stream_verified(
    url: &Url,
    dest: &Path,
    limits: &Limits,
    t: &Transport,
    signed: Option<(&minisign_verify::PublicKey, &minisign_verify::Signature)>,
    what: &str,
) -> Result<(fetch::Downloaded, Result<()>)> {
    let bad = |e: minisign_verify::Error| InstallError::Signature { what: what.to_string(), reason: e.to_string() };
    let mut verifier = signed.map(|(k, s)| k.verify_stream(s)).transpose().map_err(bad)?;
    let d = fetch::download(url, dest, limits, t, verifier.as_mut())?;
    let verdict = verifier.as_mut().map_or(Ok(()), |v| v.finalize().map_err(bad));
    Ok((d, verdict))
}

/// `--sha256`, when given, is checked whatever else vouches for the archive.
fn check_sha256_flag(what: &str, sha: &str, opts: &Options) -> Result<()> {
    match &opts.sha256 {
        Some(want) if !want.eq_ignore_ascii_case(sha) => Err(InstallError::Hash { what: what.into(), got: sha.into(), want: want.to_lowercase() }),
        _ => Ok(()),
    }
}

fn read_signature(url: &Url, t: &Transport) -> Result<minisign_verify::Signature> {
    let bytes = fetch::get_small(url, 1 << 16, t)?;
    minisign_verify::Signature::decode(&String::from_utf8_lossy(&bytes))
        .map_err(|e| InstallError::Signature { what: crate::redact::url(url), reason: format!("unreadable signature file: {e}") })
}

/// Checks that a signature's trusted comment (`bz-plugin name=… version=… target=… sha256=…`, signed together
/// with the archive) names exactly what is being installed: a correctly signed archive of another plugin, version
/// or target, swapped in by an index or a mirror, is refused.
pub fn check_binding(comment: &str, name: &str, version: &str, target: &str, sha256: &str) -> std::result::Result<(), String> {
    let mut fields = comment.split_whitespace();
    if fields.next() != Some("bz-plugin") {
        return Err(format!(
            "its signature's trusted comment {comment:?} does not say which plugin it signs; ask the publisher to re-sign it with a current bz-package"
        ));
    }
    let said: std::collections::BTreeMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
    for (key, want) in [("name", name), ("version", version), ("target", target), ("sha256", sha256)] {
        let got = said.get(key).copied().unwrap_or("(none)");
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("its signature is for {key} {got}, not {want}: a validly signed archive swapped in for another (nothing installed)"));
        }
    }
    Ok(())
}

/// `bz plugins install ./crate`: builds a plugin crate with cargo in release and lays it out in staging as an
/// unpacked archive (plugin.toml from the library's own metadata, the library, the crate's licence files).
pub fn build_crate(dir: &Path, staging: &Path) -> Result<Fetched> {
    let manifest = dir.join("Cargo.toml");
    let lib = cargo_build(&manifest)?;
    let probed = crate::plugins::probe::probe_child(&lib).map_err(|reason| InstallError::Probe { name: dir.display().to_string(), reason })?;
    let m = &probed.metadata;
    let pkg = staging.join("pkg");
    std::fs::create_dir(&pkg).map_err(|e| InstallError::io(&pkg, e))?;
    let file = lib.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let toml = super::archive::Manifest {
        name: m.name.clone(),
        version: m.version.clone(),
        plugin_api: m.api_version.clone(),
        target: probed.target.clone(),
        library: file.clone(),
        description: m.description.clone(),
    };
    let text = toml::to_string(&toml).map_err(|e| InstallError::Usage(e.to_string()))?;
    std::fs::write(pkg.join("plugin.toml"), text).map_err(|e| InstallError::io(&pkg, e))?;
    std::fs::copy(&lib, pkg.join(&file)).map_err(|e| InstallError::io(&lib, e))?;
    for entry in std::fs::read_dir(dir).map_err(|e| InstallError::io(dir, e))?.flatten() {
        let n = entry.file_name().to_string_lossy().to_uppercase();
        if entry.path().is_file() && (n.starts_with("LICENSE") || n.starts_with("LICENCE") || n.starts_with("COPYING")) {
            let _ = std::fs::copy(entry.path(), pkg.join(entry.file_name()));
        }
    }
    let sha256 = super::store::sha256_file(&pkg.join(&file))?;
    Ok(Fetched {
        payload: Payload::Unpacked(pkg, Box::new(probed)),
        sha256,
        check: Check::LocalBuild,
        signed_by: None,
        binding: None,
        source: Source::Local { path: dir.display().to_string() },
        expect: None,
    })
}

/// Runs `cargo build --release` for one crate and returns the cdylib it built.
fn cargo_build(manifest: &Path) -> Result<PathBuf> {
    let fail = |reason: String| InstallError::Usage(format!("{}: {reason}", manifest.display()));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building {} with cargo (release)…", manifest.parent().unwrap_or(manifest).display());
    let out = std::process::Command::new(&cargo)
        .args(["build", "--release", "--lib", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(manifest)
        .stdin(std::process::Stdio::null())
        // Kept, not shown: bz says one line; the whole report is one cargo command away.
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| fail(format!("cannot run cargo ({e}); install Rust, or install a packed archive instead")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| l.starts_with("error")).unwrap_or("no error message").trim_start_matches("error: ");
        return Err(fail(format!(
            "cargo build failed: {first} (`cargo build --release --manifest-path {}` shows all of it); nothing installed",
            manifest.display()
        )));
    }
    let want = std::fs::canonicalize(manifest).map_err(|e| InstallError::io(manifest, e))?;
    let mut found = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let ours = msg["manifest_path"].as_str().and_then(|p| std::fs::canonicalize(p).ok()).is_some_and(|p| p == want);
        let cdylib = msg["target"]["crate_types"].as_array().is_some_and(|k| k.iter().any(|t| t == "cdylib"));
        if msg["reason"] == "compiler-artifact" && ours && cdylib {
            found = msg["filenames"].as_array().and_then(|f| f.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".so")).map(PathBuf::from));
        }
    }
    found.ok_or_else(|| fail("builds no cdylib: a plugin crate needs crate-type = [\"cdylib\"] in its [lib]".into()))
}

#[cfg(test)]
mod tests {
    use super::check_binding;

    #[test]
    fn a_signature_binds_name_version_target_and_hash() {
        let c = "bz-plugin name=fixture version=0.4.0 target=x86_64-unknown-linux-gnu sha256=ab12";
        assert!(check_binding(c, "fixture", "0.4.0", "x86_64-unknown-linux-gnu", "AB12").is_ok());
        assert!(check_binding(c, "other", "0.4.0", "x86_64-unknown-linux-gnu", "ab12").unwrap_err().contains("name fixture, not other"));
        assert!(check_binding(c, "fixture", "0.3.0", "x86_64-unknown-linux-gnu", "ab12").unwrap_err().contains("version 0.4.0"));
        assert!(check_binding(c, "fixture", "0.4.0", "x86_64-unknown-linux-gnu", "cd34").unwrap_err().contains("sha256"));
        assert!(check_binding("timestamp:1 file:x", "fixture", "0.4.0", "t", "ab12").unwrap_err().contains("does not say"));
    }
}
