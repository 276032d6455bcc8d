//! Claiming a run directory: created in one atomic step, so two runs can never pick the same one, and locked for
//! as long as the run lives (`<run>/.lock`, released by the kernel when bz exits however it exits), so a resume
//! of a run that is still training elsewhere fails at once instead of interleaving `metrics.jsonl` and pruning
//! the other run's checkpoints.

use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// A run directory this process owns until it is dropped.
#[derive(Debug)]
pub struct Claim {
    pub dir: PathBuf,
    _lock: File,
    /// Made by this claim: removed again if the run fails before writing anything into it.
    fresh: bool,
}

/// The first of `names` that does not exist yet under `root`, created; with `explicit`, only the first may be
/// taken and an existing one is an error.
pub fn claim_new(root: &Path, names: impl Iterator<Item = String>, explicit: bool) -> Result<Claim> {
    crate::atomic::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    for name in names.take(100_000) {
        let dir = root.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => return lock(dir, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !explicit => continue,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("{} already exists: add --resume to continue it, or choose another --run-name", dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot create the run directory {}", dir.display())),
        }
    }
    bail!("no free run name under {}: remove old runs", root.display())
}

/// An existing run, to resume.
pub fn claim_existing(dir: &Path) -> Result<Claim> {
    lock(dir.to_path_buf(), false)
}

fn lock(dir: PathBuf, fresh: bool) -> Result<Claim> {
    let path = dir.join(".lock");
    let file =
        fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Claim { dir, _lock: file, fresh }),
        Err(fs::TryLockError::WouldBlock) => {
            bail!("{} is being trained by another bz right now (it holds {}): wait for it to finish, or start another run", dir.display(), path.display())
        }
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

impl Claim {
    /// After a failure: a directory this claim made that holds nothing but its lock goes away again.
    pub fn release_if_unused(self) {
        if !self.fresh {
            return;
        }
        let only_lock = fs::read_dir(&self.dir).map(|d| d.flatten().all(|e| e.file_name() == ".lock")).unwrap_or(false);
        if only_lock {
            let _ = fs::remove_file(self.dir.join(".lock"));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_claimed_once_and_a_locked_run_cannot_be_claimed_again() {
        let root = tempfile::tempdir().unwrap();
        let names = || ["r", "r-2", "r-3"].into_iter().map(String::from);
        let a = claim_new(root.path(), names(), false).unwrap();
        let b = claim_new(root.path(), names(), false).unwrap();
        assert_eq!((a.dir.file_name().unwrap(), b.dir.file_name().unwrap()), ("r".as_ref(), "r-2".as_ref()));
        assert!(claim_new(root.path(), names(), true).unwrap_err().to_string().contains("already exists"));
        assert!(claim_existing(&a.dir).err().unwrap().to_string().contains("being trained by another bz"));
        drop(a);
        let again = claim_existing(&root.path().join("r")).unwrap();
        again.release_if_unused();
        assert!(root.path().join("r").exists(), "a resumed run's directory is never removed");
        b.release_if_unused();
        assert!(!root.path().join("r-2").exists());
    }
}
