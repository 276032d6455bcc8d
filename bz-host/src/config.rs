//! The run configuration: a TOML file, typed with serde, plus `--set key=value` overrides.
//!
//! Every unknown key, wrong type or bad value becomes a [`ConfigError`] that names the file, line, column and key,
//! with a suggestion when a key or choice looks misspelled.

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

/// `[tune]`: what `bz tune` searches, and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TuneConfig {
    /// The objective: a metric of the epoch lines, e.g. `val/loss`.
    #[serde(default = "default_tune_metric")]
    pub metric: String,
    #[serde(default)]
    pub direction: TuneDirection,
    /// The study's total number of trials (every worker counts towards it).
    #[serde(default = "default_n_trials")]
    pub n_trials: u64,
    /// Seconds after which no new trial starts.
    pub timeout: Option<f64>,
    /// Trials run at once by this worker.
    #[serde(default = "one_job")]
    pub n_jobs: usize,
    /// Default: the config file's name.
    pub study: Option<String>,
    /// Default: `sqlite:///<run.dir>/<study>/study.db`.
    pub storage: Option<String>,
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// Default: run.seed.
    pub seed: Option<u64>,
    pub n_startup_trials: Option<u64>,
    /// Seconds between a running trial's heartbeats; a trial silent for twice as long is failed.
    pub heartbeat_interval: Option<f64>,
    /// The tuner plugin.
    #[serde(default = "default_tuner")]
    pub plugin: String,
    /// `type = "median" | "percentile" | "successive_halving" | "hyperband" | "none"` and its options.
    #[serde(default)]
    pub pruner: toml::Table,
    /// Config key → `{ type = "float" | "int" | "categorical", low, high, log, step, choices }`.
    #[serde(default)]
    pub params: toml::Table,
    /// Trials to run first, as `{ "config.key" = value, … }`.
    #[serde(default)]
    pub enqueue: Vec<toml::Table>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TuneDirection {
    #[default]
    Minimize,
    Maximize,
}

fn default_tune_metric() -> String {
    "val/loss".into()
}
fn default_n_trials() -> u64 {
    20
}
fn one_job() -> usize {
    1
}
fn default_sampler() -> String {
    "tpe".into()
}
fn default_tuner() -> String {
    "optuna".into()
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    Digits,
    Synthetic,
    Idx,
    Csv,
    Safetensors,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Classification,
    Regression,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub source: DataSource,
    /// File or directory of the training data (idx: a directory; csv, safetensors: a file).
    pub path: Option<PathBuf>,
    /// Separate validation data: for idx `"test"` uses the t10k files; for csv/safetensors a file path.
    pub val: Option<String>,
    /// Fraction of the training data held out for validation when `val` is not given.
    pub val_split: f64,
    /// Standardise features with the training split's mean and std (per channel for images, per column otherwise).
    pub normalize: bool,
    pub task: TaskKind,
    // csv
    pub target: Option<Column>,
    pub features: Option<Vec<Column>>,
    pub header: bool,
    pub delimiter: String,
    // safetensors
    pub features_key: String,
    pub targets_key: String,
    // synthetic
    pub samples: usize,
    pub num_features: usize,
    pub classes: usize,
    pub noise: f32,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: DataSource::Digits,
            path: None,
            val: None,
            val_split: 0.2,
            normalize: false,
            task: TaskKind::Classification,
            target: None,
            features: None,
            header: true,
            delimiter: ",".into(),
            features_key: "x".into(),
            targets_key: "y".into(),
            samples: 2000,
            num_features: 20,
            classes: 3,
            noise: 1.0,
        }
    }
}

/// One layer of a config-built model. Input sizes are inferred from the data and the layers before.
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
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub name: OptimizerKind,
    pub lr: f64,
    /// Default: 0, or 0.01 for adamw (as PyTorch).
    pub weight_decay: Option<f64>,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub betas: [f64; 2],
    pub eps: f64,
    /// RMSprop smoothing constant.
    pub alpha: f64,
    pub centered: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            name: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: None,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            betas: [0.9, 0.999],
            eps: 1e-8,
            alpha: 0.99,
            centered: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    Constant,
    Step,
    Cosine,
    OneCycle,
    Plateau,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    pub name: SchedulerKind,
    /// Linear warm-up from ~0 to the schedule's starting lr, in optimizer steps or epochs (not both).
    pub warmup_steps: usize,
    pub warmup_epochs: f64,
    /// step: decay every `step_size` epochs by `gamma`.
    pub step_size: usize,
    pub gamma: f64,
    /// cosine and plateau: the floor.
    pub min_lr: f64,
    /// one_cycle (PyTorch's OneCycleLR with cosine annealing; `optimizer.lr` is the peak).
    pub pct_start: f64,
    pub div_factor: f64,
    pub final_div_factor: f64,
    /// plateau (PyTorch's ReduceLROnPlateau, relative threshold).
    pub monitor: String,
    pub mode: Option<Mode>,
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: SchedulerKind::Constant,
            warmup_steps: 0,
            warmup_epochs: 0.0,
            step_size: 10,
            gamma: 0.1,
            min_lr: 0.0,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            monitor: "val/loss".into(),
            mode: None,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
        }
    }
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
    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
        let path = e.path().to_string();
        let message = with_suggestion(&first_line(&e.inner().to_string()));
        let key = if path == "." { String::new() } else { path.clone() };
        if let Some(o) = overridden.iter().find(|o| key == **o || key.starts_with(&format!("{o}.")) || key.starts_with(&format!("{o}["))) {
            return err(None, Some(key.clone()), format!("{message} (from --set {o}=…)"));
        }
        let loc = span_of(&doc, &key, &message).map(|off| line_col(text, off));
        err(loc, Some(key), message)
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

/// Plugin section names and `library` values name files in the plugin directory, so only plain names may: a
/// config from someone else cannot point bz at `../x` or `/tmp/evil.so`. Returns the section, the field and why.
fn check_plugin_names(c: &Config) -> Result<(), (String, Option<&'static str>, String)> {
    const RULE: &str = "lower-case letters, digits, '-' and '_' only; plugins load by name from the plugin directory, never from a path";
    for (name, section) in &c.plugins {
        if !crate::plugins::loader::is_name(name) {
            return Err((name.clone(), None, format!("{name:?} is not a plugin name ({RULE})")));
        }
        if let Some(lib) = section.get("library").and_then(|v| v.as_str()) {
            if !crate::plugins::loader::is_name(lib) {
                return Err((
                    name.clone(),
                    Some("library"),
                    format!("{lib:?} is not a plugin name ({RULE}); install the library with `bz plugins install` and name it"),
                ));
            }
        }
    }
    Ok(())
}

/// Byte offset of `[plugins.<section>]`'s name, or of its `field`'s value.
fn plugin_span<S>(doc: &toml_edit::Document<S>, section: &str, field: Option<&str>) -> Option<usize> {
    let plugins = doc.as_table().get("plugins")?.as_table_like()?;
    let (key, item) = plugins.get_key_value(section)?;
    match field {
        None => key.span().map(|s| s.start),
        Some(f) => {
            let (k, v) = item.as_table_like()?.get_key_value(f)?;
            v.span().or(k.span()).map(|s| s.start)
        }
    }
}

/// Checks the values serde cannot: ranges and combinations. Returns the offending key and why.
fn check(c: &Config) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if c.train.epochs == 0 {
        return bad("train.epochs", "must be at least 1".into());
    }
    if c.train.batch_size == 0 {
        return bad("train.batch_size", "must be at least 1".into());
    }
    if c.train.val_batch_size == Some(0) {
        return bad("train.val_batch_size", "must be at least 1".into());
    }
    if c.train.grad_accumulation == 0 {
        return bad("train.grad_accumulation", "must be at least 1 (1 = no accumulation)".into());
    }
    if !(0.0..1.0).contains(&c.train.label_smoothing) {
        return bad("train.label_smoothing", format!("{} is outside [0, 1)", c.train.label_smoothing));
    }
    for (k, v) in [("train.clip_grad_norm", c.train.clip_grad_norm), ("train.clip_grad_value", c.train.clip_grad_value)] {
        if let Some(v) = v {
            if !(v > 0.0 && v.is_finite()) {
                return bad(k, format!("{v} must be a positive number"));
            }
        }
    }
    if !(0.0..1.0).contains(&c.data.val_split) {
        return bad("data.val_split", format!("{} is outside [0, 1); use `data.val` for a separate validation set", c.data.val_split));
    }
    if c.data.delimiter.len() != 1 {
        return bad("data.delimiter", format!("{:?} must be a single one-byte character", c.data.delimiter));
    }
    let o = &c.optimizer;
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return bad("optimizer.lr", format!("{} must be a positive number", o.lr));
    }
    if o.momentum < 0.0 {
        return bad("optimizer.momentum", format!("{} must be >= 0", o.momentum));
    }
    if o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0) {
        return bad("optimizer.nesterov", "needs momentum > 0 and dampening = 0 (as in PyTorch)".into());
    }
    if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
        return bad("optimizer.betas", format!("{:?}: each beta must be in [0, 1)", o.betas));
    }
    if o.weight_decay.is_some_and(|w| w < 0.0) {
        return bad("optimizer.weight_decay", "must be >= 0".into());
    }
    let s = &c.scheduler;
    if s.warmup_steps > 0 && s.warmup_epochs > 0.0 {
        return bad("scheduler.warmup_epochs", "give warmup_steps or warmup_epochs, not both".into());
    }
    if s.name == SchedulerKind::OneCycle && (s.warmup_steps > 0 || s.warmup_epochs > 0.0) {
        return bad("scheduler.name", "one_cycle has its own warm-up (pct_start); remove warmup_steps/warmup_epochs".into());
    }
    if s.name == SchedulerKind::Step && s.step_size == 0 {
        return bad("scheduler.step_size", "must be at least 1 epoch".into());
    }
    if !(s.pct_start > 0.0 && s.pct_start < 1.0) {
        return bad("scheduler.pct_start", format!("{} is outside (0, 1)", s.pct_start));
    }
    if !(s.factor > 0.0 && s.factor < 1.0) {
        return bad("scheduler.factor", format!("{} is outside (0, 1)", s.factor));
    }
    if c.model.torchscript.is_some() && !c.model.layers.is_empty() {
        return bad("model.torchscript", "give either `layers` or `torchscript`, not both".into());
    }
    if c.model.torchscript.is_none() && c.model.layers.is_empty() {
        return bad("model", "no model: add `layers = [...]` or `torchscript = \"model.pt\"` (see `bz init`)".into());
    }
    check_layers(&c.model.layers, "model.layers")?;
    match c.run.device.as_str() {
        "auto" | "cpu" | "cuda" => {}
        d if d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok()) => {}
        d => return bad("run.device", format!("unknown device {d:?}: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")),
    }
    Ok(())
}

fn check_layers(layers: &[LayerSpec], at: &str) -> Result<(), (String, String)> {
    for (i, l) in layers.iter().enumerate() {
        let key = format!("{at}[{i}]");
        let positive = |what: &str, v: i64| {
            if v > 0 {
                Ok(())
            } else {
                Err((key.clone(), format!("{what} = {v} must be positive")))
            }
        };
        match l {
            LayerSpec::Linear { out, .. } => positive("out", *out)?,
            LayerSpec::Conv2d { out, kernel, stride, padding, .. } => {
                positive("out", *out)?;
                positive("kernel", *kernel)?;
                positive("stride", *stride)?;
                if *padding < 0 {
                    return Err((key, "padding must be >= 0".into()));
                }
            }
            LayerSpec::Maxpool2d { kernel, stride } | LayerSpec::Avgpool2d { kernel, stride } => {
                positive("kernel", *kernel)?;
                positive("stride", stride.unwrap_or(*kernel))?;
            }
            LayerSpec::Dropout { p } if !(0.0..1.0).contains(p) => return Err((key, format!("p = {p} is outside [0, 1)"))),
            LayerSpec::Residual { layers } => {
                if layers.is_empty() {
                    return Err((key, "a residual block needs at least one layer".into()));
                }
                check_layers(layers, &format!("{key}.layers"))?
            }
            LayerSpec::Reshape { shape } if shape.iter().any(|d| *d <= 0 && *d != -1) => {
                return Err((key, format!("shape {shape:?}: dimensions must be positive (or one -1)")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies `a.b[2].c=value` to the table; the value is TOML (`0.1`, `true`, `"x"`, `[1, 2]`) or else a bare string.
/// Returns the key path in the same spelling serde_path_to_error uses.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<String, String> {
    let (key, raw) = item.split_once('=').ok_or("expected key=value, e.g. --set optimizer.lr=0.01")?;
    let key = key.trim();
    let raw = raw.trim();
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").ok_or("no value")?,
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let segments = split_key(key)?;
    let mut cur = table;
    let mut normalized = String::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if !normalized.is_empty() {
            normalized.push('.');
        }
        normalized.push_str(&seg.name);
        if seg.indexes.is_empty() {
            if last {
                cur.insert(seg.name.clone(), value.clone());
                return Ok(normalized);
            }
            let entry = cur.entry(seg.name.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry.as_table_mut().ok_or_else(|| format!("`{normalized}` is not a table"))?;
            continue;
        }
        let mut v = cur.get_mut(&seg.name).ok_or_else(|| format!("`{normalized}` is not in the config, so it cannot be indexed"))?;
        for (j, idx) in seg.indexes.iter().enumerate() {
            normalized.push_str(&format!("[{idx}]"));
            let arr = v.as_array_mut().ok_or_else(|| format!("`{normalized}`: not a list"))?;
            let len = arr.len();
            v = arr.get_mut(*idx).ok_or_else(|| format!("index {idx} is out of range (the list has {len} entries)"))?;
            if last && j + 1 == seg.indexes.len() {
                *v = value.clone();
                return Ok(normalized);
            }
        }
        cur = v.as_table_mut().ok_or_else(|| format!("`{normalized}` is not a table"))?;
    }
    Err("empty key".into())
}

struct Segment {
    name: String,
    indexes: Vec<usize>,
}

fn split_key(key: &str) -> Result<Vec<Segment>, String> {
    if key.is_empty() {
        return Err("empty key".into());
    }
    key.split('.')
        .map(|part| {
            let (name, rest) = part.split_once('[').map(|(n, r)| (n, Some(r))).unwrap_or((part, None));
            if name.is_empty() {
                return Err(format!("bad key {key:?}"));
            }
            let mut indexes = Vec::new();
            if let Some(rest) = rest {
                for idx in format!("[{rest}").split('[').skip(1) {
                    let n = idx.strip_suffix(']').and_then(|n| n.parse().ok()).ok_or_else(|| format!("bad index in {key:?}"))?;
                    indexes.push(n);
                }
            }
            Ok(Segment { name: name.to_string(), indexes })
        })
        .collect()
}

/// Byte offset of a key path in the document: the offending key for unknown-field errors, otherwise the value.
fn span_of<S>(doc: &toml_edit::Document<S>, path: &str, message: &str) -> Option<usize> {
    let segments = split_key(path).ok()?;
    let mut node = Node::Item(doc.as_item());
    let mut best = None;
    let unknown = unknown_name(message);
    for (i, seg) in segments.iter().enumerate() {
        let (key, next) = node.table()?.get_key_value(&seg.name)?;
        best = key.span().map(|s| s.start).or(best);
        if i + 1 == segments.len() && unknown.as_deref() == Some(seg.name.as_str()) {
            return best;
        }
        node = Node::Item(next);
        best = node.start().or(best);
        for idx in &seg.indexes {
            node = node.index(*idx)?;
            best = node.start().or(best);
        }
    }
    // For "unknown field `x`" the path stops at the parent table: point at the unknown key itself.
    if let Some(name) = unknown {
        if let Some((k, _)) = node.table().and_then(|t| t.get_key_value(&name)) {
            return k.span().map(|s| s.start).or(best);
        }
    }
    best
}

/// A place in a toml_edit document: tables of either style and inline array elements.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a toml_edit::Item),
    Table(&'a toml_edit::Table),
    Value(&'a toml_edit::Value),
}

impl<'a> Node<'a> {
    fn table(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
        }
    }

    fn index(self, idx: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(toml_edit::Item::ArrayOfTables(a)) => a.get(idx).map(Node::Table),
            Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a))) | Node::Value(toml_edit::Value::Array(a)) => a.get(idx).map(Node::Value),
            _ => None,
        }
    }

    fn start(self) -> Option<usize> {
        let span = match self {
            Node::Item(toml_edit::Item::Value(v)) | Node::Value(v) => v.span(),
            Node::Item(toml_edit::Item::Table(t)) | Node::Table(t) => t.span(),
            Node::Item(_) => None,
        };
        span.map(|s| s.start)
    }
}

fn unknown_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Adds "did you mean …?" to serde's "unknown field/variant `x`, expected one of `a`, `b`" messages.
fn with_suggestion(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let Some(got) = head.split('`').nth(1) else {
        return message.to_string();
    };
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = choices.iter().map(|c| (strsim::jaro_winkler(got, c), *c)).filter(|(score, _)| *score >= 0.8).max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!("{message}; did you mean `{c}`?"),
        None => message.to_string(),
    }
}

fn first_line(s: &str) -> String {
    s.trim().lines().next().unwrap_or("").trim().to_string()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
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
        assert_eq!(c.optimizer.name, OptimizerKind::Sgd);
        assert_eq!(c.model.layers[1], LayerSpec::Linear { out: 7, bias: true });
        let e = parse(MINIMAL, Path::new("c.toml"), &["train.epochs=abc".into()]).unwrap_err();
        assert!(e.message.contains("--set train.epochs"), "{e}");
        let e = parse(MINIMAL, Path::new("c.toml"), &["model.layers[5].out=7".into()]).unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = parse(MINIMAL, Path::new("c.toml"), &["noequals".into()]).unwrap_err();
        assert!(e.message.contains("key=value"), "{e}");
    }

    #[test]
    fn default_modes() {
        assert_eq!(default_mode("val/accuracy"), Mode::Max);
        assert_eq!(default_mode("val/f1_macro"), Mode::Max);
        assert_eq!(default_mode("val/loss"), Mode::Min);
        assert_eq!(default_mode("val/mae"), Mode::Min);
    }
}
