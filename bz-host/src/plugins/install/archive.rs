//! Plugin archives: a `.tar.gz` with `plugin.toml`, the library and its licence at the top level.
//!
//! Unpacking is by hand over the `tar` crate's entries rather than `Archive::unpack`, to refuse — not skip or
//! sanitise — anything a plugin archive never needs: links, devices, absolute or `..` paths, duplicate paths,
//! and sizes past a bound. It takes two passes: `tar`'s cooked entries read a PAX or GNU long-name header's
//! whole data into memory before handing out the entry it describes, so a first pass over the raw headers
//! bounds those (and counts them as entries) before anything is read into memory.

use super::InstallError;
use serde::{Deserialize, Serialize};
use std::fs::{File, Permissions};
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Every header counts, extension headers included.
const MAX_ENTRIES: usize = 256;
/// A plugin is a few MB; this leaves room for debug builds.
const MAX_TOTAL: u64 = 256 << 20;
/// PAX records and GNU long names are paths and a few attributes.
const MAX_EXTENSION: u64 = 64 << 10;

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
    let mut file = File::open(archive).map_err(|e| InstallError::io(archive, e))?;
    check_headers(&file, &bad)?;
    // The same open file for both passes, so what was checked is what is unpacked.
    file.rewind().map_err(|e| InstallError::io(archive, e))?;
    set_mode(into, 0o755)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&file));
    let entries = tar.entries().map_err(|e| bad(format!("not a .tar.gz ({e})")))?;
    let mut total = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        let raw = entry.path().map_err(|e| bad(format!("an entry has an unreadable path ({e})")))?.into_owned();
        let rel = contained(&raw).ok_or_else(|| bad(format!("entry {:?} points outside the archive; refused", raw.display().to_string())))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            make_dirs(into, &rel, &bad)?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!("entry {:?} is a {}, not a plain file; refused", rel.display().to_string(), kind_name(kind))));
        }
        // Again here: a PAX `size` record overrides the header's size, and the first pass saw only the header.
        total = total.saturating_add(entry.size());
        if total > MAX_TOTAL {
            return Err(bad(format!("unpacks to more than {} MiB", MAX_TOTAL >> 20)));
        }
        if let Some(parent) = rel.parent() {
            make_dirs(into, parent, &bad)?;
        }
        let dest = into.join(&rel);
        // create_new: a second entry with the same path must not replace the first one after it was checked.
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                bad(format!("entry {:?} appears twice; refused", rel.display().to_string()))
            } else {
                InstallError::io(&dest, e)
            }
        })?;
        // Explicit, not the umask's: the store is read by every user that runs bz with this plugin directory.
        out.set_permissions(Permissions::from_mode(0o644)).map_err(|e| InstallError::io(&dest, e))?;
        let want = entry.size();
        let copied = std::io::copy(&mut (&mut entry).take(want), &mut out).map_err(|e| bad(format!("entry {:?}: {e}", rel.display().to_string())))?;
        if copied != want {
            return Err(bad(format!("entry {:?} is truncated", rel.display().to_string())));
        }
    }
    let m = manifest(into, &bad)?;
    set_mode(&into.join(&m.library), 0o755)?;
    Ok(m)
}

/// The first pass, over raw headers (nothing read into memory): counts every header against MAX_ENTRIES,
/// refuses extension headers past MAX_EXTENSION and sparse files, and bounds the declared sizes.
fn check_headers(file: &File, bad: &impl Fn(String) -> InstallError) -> Result<(), InstallError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| bad(format!("not a .tar.gz ({e})")))?.raw(true);
    let mut total = 0u64;
    for (count, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        if count >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries (extension headers included)")));
        }
        let kind = entry.header().entry_type();
        let size = entry.size();
        if let Some(what) = extension_name(kind) {
            if size > MAX_EXTENSION {
                return Err(bad(format!("a {what} of {size} bytes (limit {} KiB); refused", MAX_EXTENSION >> 10)));
            }
        }
        // tar reads a sparse file's extension blocks into memory, one list entry per block; nothing here is sparse.
        if kind.is_gnu_sparse() {
            return Err(bad(format!("entry {:?} is a sparse file; refused", String::from_utf8_lossy(&entry.path_bytes()))));
        }
        total = total.saturating_add(size);
        if total > MAX_TOTAL {
            return Err(bad(format!("unpacks to more than {} MiB", MAX_TOTAL >> 20)));
        }
    }
    Ok(())
}

fn extension_name(k: tar::EntryType) -> Option<&'static str> {
    match k {
        tar::EntryType::XHeader => Some("PAX header"),
        tar::EntryType::XGlobalHeader => Some("PAX global header"),
        tar::EntryType::GNULongName => Some("GNU long-name header"),
        tar::EntryType::GNULongLink => Some("GNU long-link header"),
        _ => None,
    }
}

/// Creates `rel` (already contained) under `into`, one level at a time, each directory 0755.
fn make_dirs(into: &Path, rel: &Path, bad: &impl Fn(String) -> InstallError) -> Result<(), InstallError> {
    let mut dir = into.to_path_buf();
    for c in rel.components() {
        dir.push(c);
        match std::fs::create_dir(&dir) {
            Ok(()) => set_mode(&dir, 0o755)?,
            // Links are refused and nothing else made it, so whatever exists there is a directory or a file.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(bad(format!("entry {:?} is both a file and a directory; refused", rel.display().to_string())))
            }
            Err(e) => return Err(InstallError::io(&dir, e)),
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), InstallError> {
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| InstallError::io(path, e))
}

/// Reads and checks the unpacked `plugin.toml`.
fn manifest(into: &Path, bad: &impl Fn(String) -> InstallError) -> Result<Manifest, InstallError> {
    let text = std::fs::read_to_string(into.join("plugin.toml")).map_err(|_| bad("has no plugin.toml at its top level".into()))?;
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
