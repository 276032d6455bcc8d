//! `bz tune`: hyperparameter search. A tuner plugin (optuna by default) proposes trials and keeps the study;
//! each trial runs as a child `bz train --set …` process (a crash or a leak in one trial cannot harm the next;
//! libtorch starts fresh), its epoch lines are read as they are written and reported for pruning; a trial to
//! prune gets SIGINT and stops after its current batch. Complete / Pruned / Failed go back to the tuner, and a
//! killed or crashed child is Failed, never left running.
//!
//! `study` resolves the settings, `space` the search space, `trial` runs one trial process (forked from a warm
//! `forkserver`), `scheduler` keeps up to `n_jobs` of them going, `summary` writes the study's result.

pub mod forkserver;
mod scheduler;
mod space;
mod study;
mod summary;
mod trial;

use crate::config::Loaded;
use crate::interrupt::Interrupt;
use crate::plugins::{self, loader};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub struct TuneOptions {
    pub resume: bool,
    pub plugin_dir: PathBuf,
    /// `--set` given to `bz tune`: every trial gets them too. (The tune flags are already in the config.)
    pub sets: Vec<String>,
    pub quiet: bool,
}

pub enum TuneOutcome {
    Finished,
    Interrupted,
}

/// Runs the study `loaded`'s `[tune]` describes until its trials are done, its timeout passes, or `interrupt`.
pub fn tune(loaded: &Loaded, opts: &TuneOptions, interrupt: &Interrupt) -> Result<TuneOutcome> {
    let tc = study::tune_section(loaded)?;
    let space = space::search_space(loaded, tc)?;
    let study = study::Study::resolve(loaded, tc)?;
    let path = loader::find(&opts.plugin_dir, &study.tune.plugin)?;
    let lib = loader::load(&path, &study.tune.plugin)?;
    takes_outcomes(&lib.metadata, &study.tune)?;
    let mut tuner = plugins::create_tuner(&study.tune.plugin, &lib, &study.tuner_config(opts.resume)?.to_string(), &space.to_string())?;
    let exe = std::fs::canonicalize("/proc/self/exe").or_else(|_| std::env::current_exe()).context("cannot find the bz executable")?;
    let mut launcher = trial::Launcher {
        server: trial_server(&exe),
        exe,
        config: std::fs::canonicalize(&loaded.path)?,
        plugin_dir: opts.plugin_dir.clone(),
        sets: opts.sets.clone(),
        root: study.root.clone(),
        study: study.name.clone(),
    };
    if !opts.quiet {
        println!("{}", study.header());
    }
    scheduler::Scheduler::new(&mut tuner, &mut launcher, &study, interrupt, opts.quiet).run()?;
    summary::finish(&tuner, &study, loaded, &opts.sets)?;
    Ok(if interrupt.is_raised() { TuneOutcome::Interrupted } else { TuneOutcome::Finished })
}

/// The warm server trials are forked from (see `forkserver`), unless `BZ_TUNE_EXEC=1` asks for a new process
/// per trial; when it cannot start, trials are exec'd as before.
fn trial_server(exe: &std::path::Path) -> Option<forkserver::ForkServer> {
    if std::env::var("BZ_TUNE_EXEC").is_ok_and(|v| v == "1") {
        return None;
    }
    forkserver::ForkServer::start(exe).map_err(|e| eprintln!("warning: {e:#}; each trial starts as a new process")).ok()
}

/// Several objectives and constraints reach the tuner through `tell_json` (bz-plugin-api 1.3.0): a tuner built
/// against an older API would refuse them at the first finished trial, so it is refused before any trial runs.
fn takes_outcomes(meta: &loader::Metadata, tc: &crate::config::TuneConfig) -> Result<()> {
    let old = semver::Version::parse(&meta.api_version).is_ok_and(|v| v < semver::Version::new(1, 3, 0));
    if old && (tc.is_multi() || !tc.constraints.is_empty()) {
        anyhow::bail!(
            "the tuner plugin '{}' {} was built against bz-plugin-api {}, which takes one objective and no constraints: update it (`bz plugins install {} --force`) or tune one metric without constraints",
            meta.name,
            meta.version,
            meta.api_version,
            meta.name
        );
    }
    Ok(())
}

/// A value as a `--set` item's TOML: strings quoted, numbers and booleans as they are.
fn toml_literal(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:?}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A trial's params on one line, floats shortened.
fn fmt_params(p: &serde_json::Map<String, serde_json::Value>) -> String {
    p.iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if v.is_f64() => format!("{k}={}", crate::fmt::fmt_value(x)),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn params_become_toml_literals() {
        assert_eq!(super::toml_literal(&json!("adam")), "\"adam\"");
        assert_eq!(super::toml_literal(&json!(32)), "32");
        assert_eq!(super::toml_literal(&json!(1.0)), "1.0");
        assert_eq!(super::toml_literal(&json!(true)), "true");
    }
}
