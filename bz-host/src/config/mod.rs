//! The run configuration: a TOML file, typed with serde, plus `--set key=value` overrides.
//!
//! Every unknown key, wrong type or bad value becomes a [`ConfigError`] that names the file, line, column and key,
//! with a suggestion when a key or choice looks misspelled. `[data]`, `[optimizer]`, `[scheduler]`, `[tune.pruner]`
//! and each `[tune.params]` entry are tagged (`source`, `name`, `type`): each variant takes only its own keys and
//! the common ones (see `tagged`), so the resolved config holds only the keys that apply.

mod check;
mod data;
mod hyperparameters;
mod locate;
mod optimizer;
mod overrides;
mod scheduler;
mod tagged;
mod tune;
#[cfg(test)]
mod typed_tests;

pub use check::plain_run_name;
pub use data::{Augment, Column, CsvData, DataConfig, DataSource, IdxData, ImagesData, SafetensorsData, SyntheticData, TaskKind, Tokens};
pub use hyperparameters::hyperparameters;
pub use optimizer::{AdamOptions, OptimizerConfig, OptimizerKind, RmspropOptions, SgdOptions};
pub use overrides::apply_override;
pub use scheduler::{CosineOptions, OneCycleOptions, PlateauOptions, SchedulerConfig, SchedulerKind, StepOptions};
pub use tagged::SectionError;
pub use tune::{
    AnyOf, Choices, Constraint, FloatRange, HalvingOptions, HyperbandOptions, IntRange, MedianOptions, ParamRange, ParamSpec, PercentileOptions, PrunerConfig,
    TuneConfig, TuneDirection, EPOCH_NUMBERS,
};

use check::{check, check_plugin_names, check_tagged};
use locate::{first_line, line_col, plugin_span, span_of, with_suggestion};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Plugin sections; the plugin interface validates their contents.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub plugins: toml::Table,
    /// Hyperparameter search (`bz tune`); `bz train` ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<TuneConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run directory name; default: the config file's stem.
    pub name: Option<String>,
    /// Where run directories go, relative to the working directory.
    pub dir: PathBuf,
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Intra-op threads; 0 keeps libtorch's default (one per physical core).
    pub threads: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { name: None, dir: PathBuf::from("runs"), seed: 0, device: "auto".into(), threads: 0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Linear {
        out: i64,
        #[serde(default = "yes")]
        bias: bool,
    },
    Conv2d {
        out: i64,
        kernel: i64,
        #[serde(default = "one")]
        stride: i64,
        #[serde(default)]
        padding: i64,
        #[serde(default = "yes")]
        bias: bool,
    },
    Maxpool2d {
        kernel: i64,
        stride: Option<i64>,
    },
    Avgpool2d {
        kernel: i64,
        stride: Option<i64>,
    },
    Flatten,
    /// Reshape each sample, e.g. `[1, 28, 28]` to feed flat CSV pixels to a CNN.
    Reshape {
        shape: Vec<i64>,
    },
    Batchnorm,
    Layernorm,
    Dropout {
        p: f64,
    },
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
    Softmax,
    /// `x + body(x)`; the body must keep the shape.
    Residual {
        layers: Vec<LayerSpec>,
    },
    /// `nn.Conv1d` on `[channels, length]`.
    Conv1d {
        out: i64,
        kernel: i64,
        #[serde(default = "one")]
        stride: i64,
        #[serde(default)]
        padding: i64,
        #[serde(default = "yes")]
        bias: bool,
    },
    Maxpool1d {
        kernel: i64,
        stride: Option<i64>,
    },
    Avgpool1d {
        kernel: i64,
        stride: Option<i64>,
    },
    /// Mean over every dimension after the first: `[C, H, W]` or `[C, L]` to `[C]`.
    GlobalAvgpool,
    /// Max over every dimension after the first: `[C, H, W]` or `[C, L]` to `[C]`.
    GlobalMaxpool,
    /// Mean over time of a sequence: `[L, F]` to `[F]`, leaving out padding positions (tokens equal to the
    /// embedding's `padding_idx`).
    TemporalAvgpool,
    /// Max over time of a sequence: `[L, F]` to `[F]`, leaving out padding positions.
    TemporalMaxpool,
    /// `nn.Embedding`: `[length]` token ids (whole numbers carried as floats) to `[length, dim]`.
    Embedding {
        num: i64,
        dim: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        padding_idx: Option<i64>,
    },
    /// `nn.LSTM(batch_first=True)` on `[length, features]`.
    Lstm {
        hidden: i64,
        #[serde(default = "one")]
        layers: i64,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        output: RecurrentOutput,
    },
    /// `nn.GRU(batch_first=True)` on `[length, features]`.
    Gru {
        hidden: i64,
        #[serde(default = "one")]
        layers: i64,
        #[serde(default)]
        bidirectional: bool,
        #[serde(default)]
        output: RecurrentOutput,
    },
    /// A learned `[max_len, dim]` table added to `[length, dim]` inputs.
    PositionalEmbedding {
        max_len: i64,
    },
    /// Pre-norm `nn.TransformerEncoder` on `[length, d]`, without a padding mask (every position attends to every
    /// other: padded sequences need lengths from the data, which no source gives yet).
    TransformerEncoder {
        heads: i64,
        ff: i64,
        #[serde(default = "one")]
        layers: i64,
        #[serde(default = "transformer_dropout")]
        dropout: f64,
    },
}

/// What a recurrent layer returns: the last hidden state (`[hidden * directions]`) or every step's output
/// (`[length, hidden * directions]`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentOutput {
    #[default]
    Last,
    All,
}

fn transformer_dropout() -> f64 {
    0.1
}

fn yes() -> bool {
    true
}
fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub layers: Vec<LayerSpec>,
    /// A TorchScript module (`torch.jit.script(model).save(path)`) trained instead of `layers`.
    pub torchscript: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    CrossEntropy,
    BceWithLogits,
    Mse,
    L1,
    SmoothL1,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Validation batch size; default: `batch_size`.
    pub val_batch_size: Option<usize>,
    /// Default: cross_entropy for classification, mse for regression.
    pub loss: Option<LossKind>,
    pub label_smoothing: f64,
    pub grad_accumulation: usize,
    pub clip_grad_norm: Option<f64>,
    pub clip_grad_value: Option<f64>,
    /// A `step` line in metrics.jsonl every N batches; 0 = none.
    pub log_every_n_steps: usize,
    /// Batches per epoch (0 = all): quick runs and benchmarks.
    pub limit_train_batches: usize,
    pub limit_val_batches: usize,
    pub drop_last: bool,
    /// Benchmarks: time the training steps after the first N and write a `throughput` line.
    pub bench_warmup_steps: Option<usize>,
    /// The training forward pass's precision (see `crate::precision`).
    pub precision: Precision,
    /// Data-parallel jobs: batch norms normalise training batches over every rank's samples (PyTorch's
    /// SyncBatchNorm) instead of each rank's own; nothing changes in a single process.
    pub sync_batchnorm: bool,
}

/// `train.precision`, as Lightning spells it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    #[serde(rename = "32")]
    Full,
    /// bfloat16 autocast.
    #[serde(rename = "bf16")]
    Bf16,
    /// float16 autocast with dynamic loss scaling.
    #[serde(rename = "16-mixed")]
    Mixed16,
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const CHOICES: &[&str] = &["32", "bf16", "16-mixed"];
        struct Choice;
        impl serde::de::Visitor<'_> for Choice {
            type Value = Precision;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "one of \"32\", \"bf16\", \"16-mixed\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Precision, E> {
                match v {
                    "32" => Ok(Precision::Full),
                    "bf16" => Ok(Precision::Bf16),
                    "16-mixed" => Ok(Precision::Mixed16),
                    _ => Err(E::unknown_variant(v, CHOICES)),
                }
            }
            // `precision = 32` is what a Lightning user types first: say how to write it.
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Precision, E> {
                Err(E::custom(format!("write the precision as a string: \"32\", \"bf16\" or \"16-mixed\", not {v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Precision, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(Choice)
    }
}

impl TrainConfig {
    /// The batch size of validation, test and `bz eval`: `val_batch_size`, else `batch_size`.
    pub fn eval_batch_size(&self) -> usize {
        self.val_batch_size.unwrap_or(self.batch_size)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 64,
            val_batch_size: None,
            loss: None,
            label_smoothing: 0.0,
            grad_accumulation: 1,
            clip_grad_norm: None,
            clip_grad_value: None,
            log_every_n_steps: 50,
            limit_train_batches: 0,
            limit_val_batches: 0,
            drop_last: false,
            bench_warmup_steps: None,
            precision: Precision::Full,
            sync_batchnorm: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Top-k accuracy is reported for this k (classification, k < classes); 0 = off.
    pub top_k: usize,
    /// Also write the validation confusion matrix into metrics.jsonl each epoch.
    pub confusion_matrix: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { top_k: 5, confusion_matrix: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// The metric that decides `best`, e.g. `val/loss` or `val/accuracy`.
    pub monitor: String,
    /// Default: max for accuracy-like metrics, min otherwise.
    pub mode: Option<Mode>,
    pub enabled: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { monitor: "val/loss".into(), mode: None, enabled: true }
    }
}

/// Whether larger is better for a metric name like `val/accuracy`.
pub fn default_mode(metric: &str) -> Mode {
    let base = metric.rsplit('/').next().unwrap_or(metric);
    let higher = ["accuracy", "top_k", "precision", "recall", "f1", "r2"];
    if higher.iter().any(|h| base.starts_with(h)) {
        Mode::Max
    } else {
        Mode::Min
    }
}

/// A config error with its location, printed as one line: `file:line:col: key: message`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub location: Option<(usize, usize)>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            if !key.is_empty() {
                write!(f, "`{key}`: ")?;
            }
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A config value found wrong only later, e.g. once the data are loaded; the caller knows the file
/// ([`in_file`]), so it still becomes a [`ConfigError`] (exit 2) naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct KeyError {
    pub key: String,
    pub message: String,
}

/// Turns a [`KeyError`] inside `error` into a [`ConfigError`] for `file`; other errors pass unchanged.
pub fn in_file(error: anyhow::Error, file: &Path) -> anyhow::Error {
    match error.downcast::<KeyError>() {
        Ok(k) => ConfigError { file: file.to_path_buf(), location: None, key: Some(k.key), message: k.message }.into(),
        Err(e) => e,
    }
}

/// A loaded config together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// The file's stem: the default run name.
    pub stem: String,
    /// The file as read, for parsing it again with other overrides (`bz tune`'s probes and best config).
    pub text: String,
}

/// Reads, overrides and checks a config file.
pub fn load(path: &Path, overrides: &[String]) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        location: None,
        key: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    let config = parse(&text, path, overrides)?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    Ok(Loaded { config, path: path.to_path_buf(), stem, text })
}

/// Parses config text; `file` is only used in messages.
pub fn parse(text: &str, file: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    let err = |location, key: Option<String>, message: String| ConfigError { file: file.to_path_buf(), location, key, message };
    // toml_edit keeps spans, so a serde error found later can be pointed at its line and column.
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        let loc = e.span().map(|s| line_col(text, s.start));
        err(loc, None, first_line(e.message()))
    })?;
    let mut value: toml::Table = toml::from_str(text).map_err(|e| err(None, None, first_line(e.message())))?;
    let mut overridden = Vec::new();
    for item in overrides {
        let key = apply_override(&mut value, item).map_err(|m| err(None, None, format!("--set {item}: {m}")))?;
        overridden.push(key);
    }
    // A key from --set has no place in the file; any other error points at its line and column.
    let report = |key: String, message: String| {
        let message = with_suggestion(&message);
        if let Some(o) = overridden.iter().find(|o| key == **o || key.starts_with(&format!("{o}.")) || key.starts_with(&format!("{o}["))) {
            return err(None, Some(key.clone()), format!("{message} (from --set {o}=…)"));
        }
        let loc = span_of(&doc, &key, &message).map(|off| line_col(text, off));
        err(loc, Some(key), message)
    };
    check_tagged(&value).map_err(|(key, message)| report(key, message))?;
    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
        let path = e.path().to_string();
        report(if path == "." { String::new() } else { path }, first_line(&e.inner().to_string()))
    })?;
    check(&config).map_err(|(key, message)| {
        let loc = span_of(&doc, &key, "").map(|off| line_col(text, off));
        let from_set = overridden.contains(&key);
        let message = if from_set { format!("{message} (from --set)") } else { message };
        err(if from_set { None } else { loc }, Some(key), message)
    })?;
    check_plugin_names(&config).map_err(|(section, field, message)| {
        let loc = plugin_span(&doc, &section, field).map(|off| line_col(text, off));
        let shown = if crate::plugins::loader::is_name(&section) { section.clone() } else { format!("{section:?}") };
        err(loc, Some(format!("plugins.{shown}{}", field.map(|f| format!(".{f}")).unwrap_or_default())), message)
    })?;
    Ok(config)
}

/// Reads a run directory's resolved `config.toml`. Those written before sections were typed hold every
/// variant's keys at their defaults; the keys that do not apply are dropped, as that version ignored them.
pub fn parse_resolved(text: &str) -> Result<Config, toml::de::Error> {
    let mut table: toml::Table = toml::from_str(text)?;
    if let Some(t) = table.get_mut("data").and_then(toml::Value::as_table_mut) {
        tagged::retain_applicable::<DataConfig>(t);
    }
    if let Some(t) = table.get_mut("optimizer").and_then(toml::Value::as_table_mut) {
        tagged::retain_applicable::<OptimizerConfig>(t);
    }
    if let Some(t) = table.get_mut("scheduler").and_then(toml::Value::as_table_mut) {
        tagged::retain_applicable::<SchedulerConfig>(t);
    }
    toml::Value::Table(table).try_into()
}

/// The resolved config as TOML, for the run directory.
pub fn to_toml(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("c.toml"), &[])
    }

    const MINIMAL: &str = "[model]\nlayers = [{ type = \"flatten\" }, { type = \"linear\", out = 10 }]\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_str(MINIMAL).unwrap();
        assert_eq!(c.train.epochs, 10);
        assert_eq!(c.data.source, DataSource::Digits);
        assert_eq!(c.model.layers.len(), 2);
    }

    #[test]
    fn unknown_key_names_line_col_and_suggests() {
        let text = format!("{MINIMAL}[optimizer]\nname = \"sgd\"\nlrr = 0.1\n");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.location, Some((5, 1)), "{e}");
        assert_eq!(e.key.as_deref(), Some("optimizer.lrr"));
        assert!(e.message.contains("unknown field `lrr`"), "{e}");
        assert!(e.message.contains("did you mean `lr`?"), "{e}");
        assert!(e.to_string().starts_with("c.toml:5:1: `optimizer.lrr`:"), "{e}");
    }

    #[test]
    fn wrong_type_points_at_value() {
        let text = format!("{MINIMAL}[train]\nepochs = \"ten\"\n");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("train.epochs"));
        assert_eq!(e.location, Some((4, 10)), "{e}");
    }

    #[test]
    fn misspelled_choice_suggests() {
        let text = format!("{MINIMAL}[optimizer]\nname = \"adamm\"\n");
        let e = parse_str(&text).unwrap_err();
        assert!(e.message.contains("did you mean `adam`?"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(4));
    }

    #[test]
    fn bad_layer_field_points_at_layer() {
        let text = "[model]\nlayers = [\n  { type = \"flatten\" },\n  { type = \"linear\", outt = 10 },\n]\n";
        let e = parse_str(text).unwrap_err();
        assert!(e.message.contains("outt"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(4), "{e}");
    }

    #[test]
    fn range_checks_name_the_key() {
        let text = format!("{MINIMAL}[train]\nbatch_size = 0\n");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("train.batch_size"));
        assert_eq!(e.location, Some((4, 14)));
    }

    #[test]
    fn syntax_error_has_location() {
        let e = parse_str("[train\nepochs = 1\n").unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(1), "{e}");
    }

    #[test]
    fn overrides_apply_and_type_check() {
        let c = parse(MINIMAL, Path::new("c.toml"), &["optimizer.lr=0.5".into(), "model.layers[1].out=7".into(), "optimizer.name=sgd".into()]).unwrap();
        assert_eq!(c.optimizer.lr, 0.5);
        assert_eq!(c.optimizer.kind, OptimizerKind::Sgd(SgdOptions::default()));
        assert_eq!(c.model.layers[1], LayerSpec::Linear { out: 7, bias: true });
        let e = parse(MINIMAL, Path::new("c.toml"), &["train.epochs=abc".into()]).unwrap_err();
        assert!(e.message.contains("--set train.epochs"), "{e}");
        let e = parse(MINIMAL, Path::new("c.toml"), &["model.layers[5].out=7".into()]).unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = parse(MINIMAL, Path::new("c.toml"), &["noequals".into()]).unwrap_err();
        assert!(e.message.contains("key=value"), "{e}");
    }

    #[test]
    fn sequence_layers_parse_with_defaults_and_their_ranges_are_checked() {
        let layers = |l: &str| parse_str(&format!("[model]\nlayers = [{l}]\n"));
        let c = layers(r#"{ type = "lstm", hidden = 8, output = "all" }, { type = "transformer_encoder", heads = 2, ff = 16 }"#).unwrap();
        assert_eq!(c.model.layers[0], LayerSpec::Lstm { hidden: 8, layers: 1, bidirectional: false, output: RecurrentOutput::All });
        assert_eq!(c.model.layers[1], LayerSpec::TransformerEncoder { heads: 2, ff: 16, layers: 1, dropout: 0.1 });
        let e = layers(r#"{ type = "gru", hidden = 8, output = "first" }"#).unwrap_err();
        assert!(e.message.contains("unknown variant `first`, expected `last` or `all`"), "{e}");
        let e = layers(r#"{ type = "embedding", num = 5, dim = 2, padding_idx = 5 }"#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("model.layers[0]"));
        assert!(e.message.contains("padding_idx = 5 is outside 0..5"), "{e}");
        let e = layers(r#"{ type = "transformer_encoder", heads = 2, ff = 16, dropout = 1.0 }"#).unwrap_err();
        assert!(e.message.contains("dropout = 1 is outside [0, 1)"), "{e}");
        let text = "[data]\nnormalize = true\n[model]\nlayers = [{ type = \"flatten\" }, { type = \"embedding\", num = 5, dim = 2 }]\n";
        let e = parse_str(text).unwrap_err();
        assert_eq!((e.key.as_deref(), e.location), (Some("data.normalize"), Some((2, 13))), "{e}");
        assert!(e.message.contains("model.layers[1] (embedding) reads the features as token ids"), "{e}");
        // Round trip through the run directory's resolved config.
        let c = layers(r#"{ type = "embedding", num = 5, dim = 2 }, { type = "conv1d", out = 3, kernel = 2 }, { type = "global_maxpool" }"#).unwrap();
        assert_eq!(parse_resolved(&to_toml(&c)).unwrap(), c);
    }

    #[test]
    fn default_modes() {
        assert_eq!(default_mode("val/accuracy"), Mode::Max);
        assert_eq!(default_mode("val/f1_macro"), Mode::Max);
        assert_eq!(default_mode("val/loss"), Mode::Min);
        assert_eq!(default_mode("val/mae"), Mode::Min);
    }
}
