//! The last half of an install: unpack and check what staging holds, probe it, move it into the store, swap the
//! link, write the receipt. At every instant `<name>.so` points at a complete copy: a new copy always goes into
//! a directory of its own (a forced reinstall of the same version too), the link moves to it in one rename, and
//! only then is the copy it replaced removed.

use super::obtain::{self, Fetched, Payload};
use super::store::{self, Layout, Receipt, Receipts};
use super::{archive, check_name, InstallError, Options, Outcome, Result};
use crate::plugins::{api_compatible, probe, HOST_TARGET};
use std::path::{Path, PathBuf};

pub fn place(layout: &Layout, receipts: &mut Receipts, f: Fetched, staging: &Path, opts: &Options) -> Result<Outcome> {
    let (pkg, m) = unpacked(&f.payload, staging)?;
    check_manifest(&f, &m)?;
    let existing = receipts.plugins.get(&m.name).cloned();
    if existing.as_ref().is_some_and(|r| r.version == m.version && r.archive_sha256.eq_ignore_ascii_case(&f.sha256) && !opts.force && super::healthy(layout, r))
    {
        return Ok(Outcome::AlreadyInstalled { name: m.name, version: m.version });
    }
    super::check_unmanaged(layout, &m.name, existing.is_some(), opts.force)?;
    let lib = pkg.join(&m.library);
    let probed = match &f.payload {
        Payload::Unpacked(_, probed) => (**probed).clone(),
        Payload::Archive(_) => probe::probe_child(&lib).map_err(|reason| InstallError::Probe { name: m.name.clone(), reason })?,
    };
    let meta = &probed.metadata;
    if (&meta.name, &meta.version, &meta.api_version) != (&m.name, &m.version, &m.plugin_api) {
        return Err(mismatch(
            &m,
            format!(
                "the library is {} {} (plugin_api {}), plugin.toml says {} {} (plugin_api {})",
                meta.name, meta.version, meta.api_version, m.name, m.version, m.plugin_api
            ),
        ));
    }
    let library_sha256 = store::sha256_file(&lib)?;

    let dest = free_dir(layout, &m.name, &m.version)?;
    std::fs::rename(&pkg, &dest).map_err(|e| InstallError::io(&dest, e))?;
    crate::atomic::sync_dir(&layout.versions_dir(&m.name));
    crash_point("placed");
    let rel = dest.strip_prefix(&layout.dir).unwrap_or(&dest).join(&m.library);
    store::swap_link(layout, &m.name, &rel)?;
    crash_point("swapped");

    let previous = existing.clone().filter(|r| r.version != m.version).map(|mut r| {
        r.previous = None;
        Box::new(r)
    });
    let previous_version = previous.as_ref().map(|p| p.version.clone());
    let receipt = Receipt {
        name: m.name.clone(),
        version: m.version.clone(),
        plugin_api: m.plugin_api.clone(),
        target: m.target.clone(),
        library: rel.display().to_string(),
        library_sha256,
        archive_sha256: f.sha256,
        source: f.source,
        signed_by: f.signed_by,
        pinned: existing.as_ref().is_some_and(|r| r.pinned),
        installed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        previous: previous.or_else(|| existing.and_then(|r| r.previous)),
    };
    receipts.plugins.insert(m.name.clone(), receipt.clone());
    store::write_receipts(layout, receipts)?;
    crash_point("recorded");
    prune(layout, &receipt);
    Ok(Outcome::Installed { name: m.name, version: m.version, previous: previous_version, check: f.check })
}

/// The package directory in staging and its manifest.
fn unpacked(payload: &Payload, staging: &Path) -> Result<(PathBuf, archive::Manifest)> {
    match payload {
        Payload::Archive(a) => {
            let pkg = staging.join("pkg");
            std::fs::create_dir(&pkg).map_err(|e| InstallError::io(&pkg, e))?;
            let m = archive::unpack(a, &pkg)?;
            Ok((pkg, m))
        }
        Payload::Unpacked(pkg, _) => {
            let text = std::fs::read_to_string(pkg.join("plugin.toml")).map_err(|e| InstallError::io(pkg, e))?;
            let m = toml::from_str(&text).map_err(|e| InstallError::Archive { path: pkg.clone(), reason: e.to_string() })?;
            Ok((pkg.clone(), m))
        }
    }
}

fn mismatch(m: &archive::Manifest, reason: String) -> InstallError {
    InstallError::Mismatch { what: format!("{} {}", m.name, m.version), reason }
}

/// The manifest against the index's promise, the signature's binding, this bz's target and plugin API.
fn check_manifest(f: &Fetched, m: &archive::Manifest) -> Result<()> {
    // The signature's binding first: it says what the publisher signed these bytes as.
    if let Some(comment) = &f.binding {
        let (name, version) = f.expect.as_ref().map_or((&m.name, &m.version), |(n, v, _)| (n, v));
        obtain::check_binding(comment, name, version, &m.target, &f.sha256).map_err(|r| mismatch(m, r))?;
    }
    if let Some((name, version, api)) = &f.expect {
        if (&m.name, &m.version, &m.plugin_api) != (name, version, api) {
            return Err(mismatch(
                m,
                format!("the archive holds {} {} (plugin_api {}), the index promised {name} {version} (plugin_api {api})", m.name, m.version, m.plugin_api),
            ));
        }
    }
    check_name(&m.name).map_err(|r| mismatch(m, format!("plugin.toml: {r}")))?;
    if m.target != HOST_TARGET {
        return Err(mismatch(m, format!("built for {}, this bz runs on {HOST_TARGET}", m.target)));
    }
    api_compatible(&m.plugin_api).map_err(|r| mismatch(m, r))
}

/// `store/<name>/<version>`, or `<version>~2`, `~3`… when that is taken (a forced reinstall), so a new copy never
/// replaces the one the link points at.
fn free_dir(layout: &Layout, name: &str, version: &str) -> Result<PathBuf> {
    let versions = layout.versions_dir(name);
    crate::atomic::create_dir_all(&versions).map_err(|e| InstallError::io(&versions, e))?;
    for n in 1..1000 {
        let dir = if n == 1 { versions.join(version) } else { versions.join(format!("{version}~{n}")) };
        if dir.symlink_metadata().is_err() {
            return Ok(dir);
        }
    }
    Err(InstallError::Usage(format!("{} holds 999 copies of {name} {version}; remove it and reinstall", versions.display())))
}

/// Every plugin's store pruned: what an install killed half-way left behind (a copy no receipt names).
pub fn prune_all(layout: &Layout, receipts: &Receipts) {
    for r in receipts.plugins.values() {
        prune(layout, r);
    }
}

/// Keeps the copies the receipt, its previous version and the link use; removes the rest (older versions, copies
/// a forced reinstall replaced, what an install killed half-way left). Removing a library a running bz has
/// mapped is safe: the mapping keeps the file's data until it exits.
fn prune(layout: &Layout, r: &Receipt) {
    let dir_of = |lib: &Path| lib.parent().map(|p| layout.dir.join(p));
    let linked = layout.link_target(&r.name);
    let libraries = [Some(PathBuf::from(&r.library)), r.previous.as_ref().map(|p| PathBuf::from(&p.library)), linked];
    let keep: Vec<PathBuf> = libraries.iter().flatten().filter_map(|l| dir_of(l)).collect();
    if let Ok(entries) = std::fs::read_dir(layout.versions_dir(&r.name)) {
        for e in entries.flatten() {
            if !keep.contains(&e.path()) {
                let _ = store::remove_any(&e.path());
            }
        }
    }
}

/// A test hook in debug builds: `BZ_CRASH_AT=<step>` kills bz with SIGKILL right after that step of an install,
/// as a power cut or `kill -9` would, so the tests can check what every step leaves behind.
fn crash_point(step: &str) {
    if cfg!(debug_assertions) && std::env::var("BZ_CRASH_AT").is_ok_and(|s| s == step) {
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
