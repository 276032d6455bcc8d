//! Plugin archives: a `.tar.gz` with `plugin.toml`, the library and its licence at the top level.
//!
//! Unpacking is by hand over the `tar` crate's entries rather than `Archive::unpack`, to refuse — not skip or
//! sanitise — anything a plugin archive never needs: links, devices, absolute or `..` paths, duplicate paths,
//! and sizes past a bound.

use super::InstallError;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

const MAX_ENTRIES: usize = 256;
const MAX_TOTAL: u64 = 1 << 30;

/// `plugin.toml`: what the archive claims to hold; checked against the index and against the library itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub plugin_api: String,
    pub target: String,
    /// The library's file name inside the archive.
    pub library: String,
    #[serde(default)]
    pub description: String,
}

/// Unpacks `archive` into the empty directory `into` and reads its manifest.
pub fn unpack(archive: &Path, into: &Path) -> Result<Manifest, InstallError> {
    let bad = |reason: String| InstallError::Archive { path: archive.to_path_buf(), reason };
    let file = File::open(archive).map_err(|e| InstallError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| bad(format!("not a .tar.gz ({e})")))?;
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let raw = entry.path().map_err(|e| bad(format!("an entry has an unreadable path ({e})")))?.into_owned();
        let rel = contained(&raw).ok_or_else(|| bad(format!("entry {:?} points outside the archive; refused", raw.display().to_string())))?;
        let kind = entry.header().entry_type();
        let dest = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| InstallError::io(&dest, e))?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("entry {:?} is a {}, not a plain file; refused", rel.display().to_string(), kind_name(kind))));
        }
        total += entry.size();
        if total > MAX_TOTAL {
            return Err(bad(format!("unpacks to more than {} MiB", MAX_TOTAL >> 20)));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| InstallError::io(parent, e))?;
        }
        // create_new: a second entry with the same path must not replace the first one after it was checked.
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bad(format!("entry {:?} appears twice; refused", rel.display().to_string()))
            } else {
                InstallError::io(&dest, e)
            }
        })?;
        let want = entry.size();
        let copied = std::io::copy(&mut (&mut entry).take(want), &mut out).map_err(|e| bad(format!("entry {:?}: {e}", rel.display().to_string())))?;
        if copied != want {
            return Err(bad(format!("entry {:?} is truncated", rel.display().to_string())));
        }
    }
    let manifest_path = into.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest_path).map_err(|_| bad("has no plugin.toml at its top level".into()))?;
    let m: Manifest = toml::from_str(&text).map_err(|e| bad(format!("plugin.toml: {}", e.message())))?;
    if m.library.contains('/') || !m.library.ends_with(".so") {
        return Err(bad(format!("plugin.toml: library {:?} must be a file name ending in .so", m.library)));
    }
    if !into.join(&m.library).is_file() {
        return Err(bad(format!("plugin.toml names library {:?}, which the archive does not hold", m.library)));
    }
    if !crate::plugins::loader::is_name(&m.name) {
        return Err(bad(format!("plugin.toml: name {:?} is not a plugin name (lower-case letters, digits, '-', '_')", m.name)));
    }
    semver::Version::parse(&m.version).map_err(|e| bad(format!("plugin.toml: version {:?}: {e}", m.version)))?;
    Ok(m)
}

/// The entry's path if it stays inside the archive root: only plain names (and `.`), at most 8 deep.
fn contained(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (out.components().count() > 0 && out.components().count() <= 8).then_some(out)
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment() {
        assert_eq!(contained(Path::new("plugin.toml")), Some(PathBuf::from("plugin.toml")));
        assert_eq!(contained(Path::new("./a/b.so")), Some(PathBuf::from("a/b.so")));
        assert_eq!(contained(Path::new("../evil.so")), None);
        assert_eq!(contained(Path::new("a/../../evil.so")), None);
        assert_eq!(contained(Path::new("/etc/passwd")), None);
        assert_eq!(contained(Path::new(".")), None);
    }
}
