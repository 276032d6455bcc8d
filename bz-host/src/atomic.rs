//! Writing a file so that readers, and a crash, only ever see the old or the new content.

use std::io::Write;
use std::path::Path;

/// Temp file in the same directory + fsync + rename + fsync of the directory. The file gets mode 0644 (as
/// `std::fs::write` would give under the usual umask), not the 0600 of the temporary.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename in `dir` durable. Best effort: some filesystems refuse fsync on directories, and the rename
/// itself is atomic anyway.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
