//! The arguments of the commands that read a config, and the one place where their flags become config overrides.

use anyhow::Result;
use bz_host::config::{self, Loaded};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ConfigArgs {
    /// The run's TOML config (see `bz init`).
    pub config: PathBuf,
    /// Override any config key, e.g. `--set optimizer.lr=0.01 --set model.layers[1].out=128`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Where plugin libraries are (default: BZ_PLUGIN_DIR, else ~/.bz/plugins).
    #[arg(long, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
}

/// Which checkpoint a command reads (`bz eval`, `bz predict`).
#[derive(Args)]
pub struct CheckpointArgs {
    /// A checkpoint directory (default: the run's `best`, else `last`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The run whose checkpoint to use (default: run.name, else the config file's name).
    #[arg(long, value_parser = config::plain_run_name)]
    run_name: Option<String>,
}

impl CheckpointArgs {
    /// `--checkpoint`, else the run's `best`, else its `last`.
    pub fn dir(&self, loaded: &Loaded) -> PathBuf {
        if let Some(p) = &self.checkpoint {
            return p.clone();
        }
        let name = self.run_name.clone().or_else(|| loaded.config.run.name.clone()).unwrap_or_else(|| loaded.stem.clone());
        let ckpts = loaded.config.run.dir.join(name).join("checkpoints");
        let best = ckpts.join("best");
        if best.exists() {
            best
        } else {
            ckpts.join("last")
        }
    }
}

/// A dedicated flag that stands for a config key (`--epochs N` for `train.epochs = N`), as a `--set` item.
/// `--run-name` is not one: it picks a run directory (train and eval alike, `run.name` being its default) and is
/// not recorded in the run's resolved config or the hyperparameters plugins see.
pub struct KeyFlag(String);

impl KeyFlag {
    pub fn int(key: &str, value: Option<u64>) -> Option<KeyFlag> {
        // TOML integers are i64; more than that many trials or epochs is "unlimited" either way.
        value.map(|n| Self::toml(key, toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))))
    }

    pub fn float(key: &str, value: Option<f64>) -> Option<KeyFlag> {
        value.map(|x| Self::toml(key, toml::Value::Float(x)))
    }

    pub fn string(key: &str, value: Option<&str>) -> Option<KeyFlag> {
        value.map(|s| Self::toml(key, toml::Value::String(s.to_string())))
    }

    fn toml(key: &str, value: toml::Value) -> KeyFlag {
        KeyFlag(format!("{key}={value}"))
    }
}

impl ConfigArgs {
    /// Reads the config file once and applies every override in one order, the same for every command: the file,
    /// then each `--set` in command-line order, then the dedicated flags. So `--epochs 3 --set train.epochs=9`
    /// trains 3 epochs, and `bz tune --n-trials 4 --set tune.n_trials=9` runs 4 trials, as both always did.
    pub fn load(&self, flags: impl IntoIterator<Item = Option<KeyFlag>>) -> Result<Loaded> {
        let mut overrides = self.set.clone();
        overrides.extend(flags.into_iter().flatten().map(|f| f.0));
        Ok(config::load(&self.config, &overrides)?)
    }

    /// The plugin directory this command uses.
    pub fn plugin_dir(&self) -> PathBuf {
        bz_host::plugins::loader::plugin_dir(self.plugin_dir.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::KeyFlag;

    fn item(f: Option<KeyFlag>) -> String {
        f.map(|f| f.0).unwrap_or_default()
    }

    #[test]
    fn flags_become_toml_set_items() {
        assert_eq!(item(KeyFlag::int("tune.n_trials", Some(4))), "tune.n_trials=4");
        assert_eq!(item(KeyFlag::int("tune.n_trials", Some(u64::MAX))), format!("tune.n_trials={}", i64::MAX));
        assert_eq!(item(KeyFlag::float("tune.timeout", Some(2.0))), "tune.timeout=2.0");
        // A string that looks like a number, or holds quotes, stays a string.
        assert_eq!(item(KeyFlag::string("tune.study", Some("123"))), "tune.study=\"123\"");
        assert_eq!(item(KeyFlag::string("tune.study", Some("a\"b"))), "tune.study='a\"b'");
        assert!(KeyFlag::int("train.epochs", None).is_none());
    }
}
