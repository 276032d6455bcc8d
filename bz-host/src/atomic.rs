//! Writing a file so that readers, and a crash, only ever see the old or the new content.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Temp file in the same directory + fsync + rename + fsync of the directory. A file that exists keeps its mode
/// (a `~/.bz/config.toml` the user made 0600 stays 0600); a new one gets 0644, as `std::fs::write` would give
/// under the usual umask, not the 0600 of the temporary.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_new_mode(path, bytes, 0o644)
}

/// [`write`], with the mode a new file gets: 0600 for files that may hold credentials.
pub fn write_new_mode(path: &Path, bytes: &[u8], new_mode: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => new_mode,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
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

/// `create_dir_all` with mode 0755 asked for explicitly, so a permissive umask cannot make a directory that the
/// plugin loader then refuses as writable by others.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_keeps_the_mode_and_new_files_get_the_one_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        write_new_mode(&p, b"a", 0o600).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"b").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read(&p).unwrap(), b"b");
        let q = dir.path().join("other");
        write(&q, b"c").unwrap();
        assert_eq!(std::fs::metadata(&q).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
