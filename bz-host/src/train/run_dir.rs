//! Which run directory a `bz train` writes: a new one (the config's stem, `stem-2`, … or `--run-name`), or the
//! one to resume (named, or the latest run of the config), claimed for this process (see `claim`), and checked
//! to be the same run when resumed.

use super::claim::{self, Claim};
use super::metrics_log::MetricsLog;
use super::TrainOptions;
use crate::config::{self, Config, Loaded};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// An open run directory: its absolute path (plugins get it in payloads and may change their working directory),
/// its checkpoints and its metrics.jsonl.
pub struct RunDir {
    pub path: PathBuf,
    pub checkpoints: PathBuf,
    pub log: MetricsLog,
}

impl RunDir {
    /// Writes the resolved config (on resume too: `--epochs` may have grown) and opens metrics.jsonl, keeping
    /// only lines up to `resumed_at_step` when resuming.
    pub fn open(dir: &Path, cfg: &Config, resumed_at_step: Option<usize>) -> Result<RunDir> {
        let path = fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
        let config_file = path.join("config.toml");
        crate::atomic::write(&config_file, config::to_toml(cfg).as_bytes()).with_context(|| format!("cannot write {}", config_file.display()))?;
        let log = MetricsLog::open(&path.join("metrics.jsonl"), resumed_at_step)?;
        Ok(RunDir { checkpoints: path.join("checkpoints"), path, log })
    }

    /// The directory's name, as `--run-name` takes it.
    pub fn name(&self) -> Option<String> {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned())
    }
}

/// The run directory for a new run, or the one to resume, claimed for this process.
pub fn claim(loaded: &Loaded, opts: &TrainOptions) -> Result<Claim> {
    let root = &loaded.config.run.dir;
    if opts.resume {
        return claim::claim_existing(&resume_dir(loaded, opts)?);
    }
    // Both were checked as plain names where they were given (the config's checks, the flag's parser).
    let explicit = opts.run_name.clone().or_else(|| loaded.config.run.name.clone());
    match explicit {
        Some(name) => claim::claim_new(root, std::iter::once(name), true),
        None => {
            let stem = loaded.stem.clone();
            let names = std::iter::once(stem.clone()).chain((2..).map(move |n| format!("{stem}-{n}")));
            claim::claim_new(root, names, false)
        }
    }
}

/// The run `--resume` continues: the named one, else the config's most recent; it must have a checkpoint.
pub fn resume_dir(loaded: &Loaded, opts: &TrainOptions) -> Result<PathBuf> {
    let root = &loaded.config.run.dir;
    let dir = match opts.run_name.clone().or_else(|| loaded.config.run.name.clone()) {
        Some(name) => root.join(name),
        None => latest_run(root, &loaded.stem)
            .with_context(|| format!("nothing to resume: no run of {} under {} (start one without --resume)", loaded.stem, root.display()))?,
    };
    if !dir.join("checkpoints/last").exists() {
        bail!("nothing to resume: {} has no checkpoint (checkpoints/last)", dir.display());
    }
    Ok(dir)
}

/// The most recent run of a config stem (`stem`, `stem-2`, …) that has a checkpoint.
fn latest_run(root: &Path, stem: &str) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == stem || name.strip_prefix(&format!("{stem}-")).is_some_and(|n| n.parse::<u32>().is_ok());
        let last = entry.path().join("checkpoints/last");
        if let (true, Ok(meta)) = (ours, fs::metadata(last.join("trainer.json"))) {
            let t = meta.modified().ok()?;
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, entry.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// A resumed run must train the same model on the same data with the same seed; anything else would silently
/// produce a different run under the old name.
pub fn check_resume_compatible(dir: &Path, cfg: &Config) -> Result<()> {
    let path = dir.join("config.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let old = config::parse_resolved(&text).with_context(|| format!("{} is damaged", path.display()))?;
    let sections: [(&str, bool); 5] = [
        ("data", old.data == cfg.data),
        ("model", old.model == cfg.model),
        ("run.seed", old.run.seed == cfg.run.seed),
        ("train.batch_size", old.train.batch_size == cfg.train.batch_size),
        ("optimizer.name", old.optimizer.name() == cfg.optimizer.name()),
    ];
    if let Some((what, _)) = sections.iter().find(|(_, same)| !same) {
        bail!("cannot resume {}: `{what}` differs from the run's config.toml; resume with the same settings or start a new run", dir.display());
    }
    // These schedules are shaped by the run's length: more epochs stretch the curve from here on.
    if cfg.scheduler.depends_on_run_length() && old.train.epochs != cfg.train.epochs {
        eprintln!(
            "warning: resuming with {} epochs instead of {}: the {} learning-rate curve is stretched from here on, so the run is not the one a {}-epoch run would have been",
            cfg.train.epochs,
            old.train.epochs,
            cfg.scheduler.name(),
            cfg.train.epochs
        );
    }
    Ok(())
}
