//! The plugin directory as the installer keeps it:
//!
//! ```text
//! <plugin dir>/<name>.so -> store/<name>/<version>/<library>   (a relative link: what the loader opens)
//! <plugin dir>/store/<name>/<version>/{plugin.toml, lib….so, LICENSE}   (never modified once placed)
//! <plugin dir>/installed.json   (receipts)
//! <plugin dir>/.staging/        (downloads and unpacking; emptied under the lock)
//! <plugin dir>/.lock
//! ```
//!
//! A running `bz` keeps the library it mapped: installs only ever rename directories into place and swap the
//! link by renaming a new link over it, never write into a file that exists.

use super::InstallError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout { dir: dir.to_path_buf() }
    }
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn versions_dir(&self, name: &str) -> PathBuf {
        self.store().join(name)
    }
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.versions_dir(name).join(version)
    }
    pub fn link(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.so"))
    }
    pub fn staging(&self) -> PathBuf {
        self.dir.join(".staging")
    }
    pub fn receipts(&self) -> PathBuf {
        self.dir.join("installed.json")
    }
    /// The library a receipt names, as a path.
    pub fn library(&self, r: &Receipt) -> PathBuf {
        self.dir.join(&r.library)
    }
    /// The link's target as written (relative to the plugin dir), if `<name>.so` is a link.
    pub fn link_target(&self, name: &str) -> Option<PathBuf> {
        fs::read_link(self.link(name)).ok()
    }

    /// Creates the directory tree; a no-op when it exists.
    pub fn create(&self) -> Result<(), InstallError> {
        for d in [self.dir.clone(), self.store(), self.staging()] {
            crate::atomic::create_dir_all(&d).map_err(|e| InstallError::io(&d, e))?;
        }
        Ok(())
    }
}

/// The exclusive lock on a plugin directory; released when dropped (and by the kernel if bz dies).
pub struct Lock {
    _file: File,
}

/// Takes the directory's lock, waiting up to `wait` for another bz that holds it, and clears what an
/// interrupted install left in `.staging/` (nobody else can be using it while we hold the lock).
pub fn lock(layout: &Layout, wait: Duration) -> Result<Lock, InstallError> {
    layout.create()?;
    let path = layout.dir.join(".lock");
    let file = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).map_err(|e| InstallError::io(&path, e))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                if !told {
                    eprintln!("waiting for another bz that is changing {} (lock {})", layout.dir.display(), path.display());
                    told = true;
                }
                if start.elapsed() > wait {
                    return Err(InstallError::Locked { path, waited: wait.as_secs() });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(fs::TryLockError::Error(e)) => return Err(InstallError::io(&path, e)),
        }
    }
    if let Ok(entries) = fs::read_dir(layout.staging()) {
        for e in entries.flatten() {
            let _ = remove_any(&e.path());
        }
    }
    Ok(Lock { _file: file })
}

/// Where an installed version came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Resolved in an index: its name and URL, and the artifact's URL.
    Index { index: String, index_url: String, url: String },
    /// A local archive.
    Archive { path: String },
    /// An archive downloaded from a URL given on the command line.
    Url { url: String },
    /// A plugin crate built here (`bz plugins install ./crate`).
    Local { path: String },
}

/// What `installed.json` records of one installed version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    pub name: String,
    pub version: String,
    pub plugin_api: String,
    pub target: String,
    /// The library, relative to the plugin directory (`store/<name>/<version>/<file>`).
    pub library: String,
    pub library_sha256: String,
    pub archive_sha256: String,
    pub source: Source,
    /// The minisign public key (base64 line) that verified the archive; `None` when it was installed unsigned.
    pub signed_by: Option<String>,
    #[serde(default)]
    pub pinned: bool,
    pub installed_at: String,
    /// The version this one replaced, kept in the store for `bz plugins rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Receipt>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Receipts {
    pub schema: u32,
    pub plugins: BTreeMap<String, Receipt>,
}

pub fn read_receipts(layout: &Layout) -> Result<Receipts, InstallError> {
    let path = layout.receipts();
    match fs::read_to_string(&path) {
        Ok(text) => {
            let r: Receipts = serde_json::from_str(&text).map_err(|e| InstallError::Receipts { path: path.clone(), reason: e.to_string() })?;
            if r.schema != 1 {
                return Err(InstallError::Receipts { path, reason: format!("schema {} is newer than this bz understands (1); update bz", r.schema) });
            }
            Ok(r)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Receipts { schema: 1, plugins: BTreeMap::new() }),
        Err(e) => Err(InstallError::io(&path, e)),
    }
}

pub fn write_receipts(layout: &Layout, receipts: &Receipts) -> Result<(), InstallError> {
    let mut text = serde_json::to_string_pretty(receipts).map_err(|e| InstallError::Receipts { path: layout.receipts(), reason: e.to_string() })?;
    text.push('\n');
    let path = layout.receipts();
    crate::atomic::write(&path, text.as_bytes()).map_err(|e| InstallError::io(&path, e))
}

/// Points `<name>.so` at `target` (relative to the plugin dir) by renaming a fresh link over the old one, so a
/// concurrent `bz train` opens either the old library or the new one, never nothing.
pub fn swap_link(layout: &Layout, name: &str, target: &Path) -> Result<(), InstallError> {
    let tmp = layout.dir.join(format!(".{name}.so.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| InstallError::io(&tmp, e))?;
    let link = layout.link(name);
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(InstallError::io(&link, e));
    }
    crate::atomic::sync_dir(&layout.dir);
    Ok(())
}

/// Removes a file, link or directory tree.
pub fn remove_any(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, InstallError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| InstallError::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| InstallError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
