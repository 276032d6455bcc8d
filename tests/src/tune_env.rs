//! What the `bz tune` tests share: a temporary directory with the workspace's optuna plugin linked in and the
//! study's config written as `s.toml`, so the study lives in `runs/s/`.

use crate::{bz, bz_path, write_config, Output};
use std::path::Path;

/// A temporary directory for one study: `plugins/optuna.so` (a link to the built plugin) and `s.toml`.
pub fn study_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let so = bz_path().parent().unwrap().join("libbz_optuna.so");
    assert!(so.exists(), "{} missing: cargo build --workspace builds it", so.display());
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(&so, dir.path().join("plugins/optuna.so")).unwrap();
    write_config(dir.path(), "s.toml", config);
    dir
}

/// `bz tune s.toml --plugin-dir plugins ARGS…` in `dir`.
pub fn tune(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["tune", "s.toml", "--plugin-dir", "plugins"];
    all.extend_from_slice(args);
    bz(dir, &all)
}

/// The study's default SQLite storage URL, as Optuna opens it.
pub fn study_db(dir: &Path) -> String {
    format!("sqlite:///{}", dir.join("runs/s/study.db").display())
}
