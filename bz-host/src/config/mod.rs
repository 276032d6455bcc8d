//! The run configuration: a TOML file, typed with serde, plus `--set key=value` overrides.
//!
//! Every unknown key, wrong type or bad value becomes a [`ConfigError`] that names the file, line, column and key,
//! with a suggestion when a key or choice looks misspelled.

mod data;
mod hyperparameters;
mod optimizer;
mod overrides;
mod scheduler;
mod tagged;
mod tune;
#[cfg(test)]
mod typed_tests;

pub use data::{Column, CsvData, DataConfig, DataSource, IdxData, SafetensorsData, SyntheticData, TaskKind};
pub use hyperparameters::hyperparameters;
pub use optimizer::{AdamOptions, OptimizerConfig, OptimizerKind, RmspropOptions, SgdOptions};
pub use overrides::apply_override;
pub use scheduler::{CosineOptions, OneCycleOptions, PlateauOptions, SchedulerConfig, SchedulerKind, StepOptions};
pub use tagged::SectionError;
pub use tune::{
    Choices, FloatRange, HalvingOptions, HyperbandOptions, IntRange, MedianOptions, ParamSpec, PercentileOptions, PrunerConfig, TuneConfig, TuneDirection,
};

use overrides::split_key;
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
    Ok(Loaded { config, path: path.to_path_buf(), stem })
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

/// Types the sections whose keys depend on a tag before the whole config, so that their errors keep the key path
/// (see `tagged`). Returns the offending key and why.
fn check_tagged(root: &toml::Table) -> Result<(), (String, String)> {
    fn section<T: tagged::Tagged>(table: Option<&toml::Value>, at: &str) -> Result<(), (String, String)> {
        match table.and_then(toml::Value::as_table).map(tagged::resolve::<T>) {
            Some(Err(e)) => Err((if e.path.is_empty() { at.to_string() } else { format!("{at}.{}", e.path) }, e.message)),
            _ => Ok(()),
        }
    }
    section::<DataConfig>(root.get("data"), "data")?;
    section::<OptimizerConfig>(root.get("optimizer"), "optimizer")?;
    section::<SchedulerConfig>(root.get("scheduler"), "scheduler")?;
    let tune = root.get("tune").and_then(toml::Value::as_table);
    section::<PrunerConfig>(tune.and_then(|t| t.get("pruner")), "tune.pruner")?;
    for (name, spec) in tune.and_then(|t| t.get("params")).and_then(toml::Value::as_table).into_iter().flatten() {
        let at = format!("tune.params.{name:?}");
        if !spec.is_table() {
            return Err((at, "must be a table like { type = \"float\", low = 0.001, high = 0.1 }".into()));
        }
        section::<ParamSpec>(Some(spec), &at)?;
    }
    Ok(())
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
    check_data(&c.data)?;
    check_optimizer(&c.optimizer)?;
    check_scheduler(&c.scheduler)?;
    if let Some(PrunerConfig::Percentile(p)) = c.tune.as_ref().map(|t| &t.pruner) {
        if !(0.0..=100.0).contains(&p.percentile) {
            return bad("tune.pruner.percentile", format!("{} is outside [0, 100]", p.percentile));
        }
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

fn check_data(d: &DataConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if !(0.0..1.0).contains(&d.val_split) {
        return bad("data.val_split", format!("{} is outside [0, 1); use `data.val` for a separate validation set", d.val_split));
    }
    match &d.source {
        DataSource::Csv(csv) if csv.delimiter.len() != 1 => bad("data.delimiter", format!("{:?} must be a single one-byte character", csv.delimiter)),
        DataSource::Idx(IdxData { val: Some(v), .. }) if v != "test" => {
            bad("data.val", format!("{v:?}: for idx data use \"test\" (the t10k files) or leave it out and set val_split"))
        }
        _ => Ok(()),
    }
}

fn check_optimizer(o: &OptimizerConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if !(o.lr > 0.0 && o.lr.is_finite()) {
        return bad("optimizer.lr", format!("{} must be a positive number", o.lr));
    }
    if o.weight_decay.is_some_and(|w| w < 0.0) {
        return bad("optimizer.weight_decay", "must be >= 0".into());
    }
    let momentum = match &o.kind {
        OptimizerKind::Sgd(s) => s.momentum,
        OptimizerKind::Rmsprop(r) => r.momentum,
        OptimizerKind::Adam(_) | OptimizerKind::Adamw(_) => 0.0,
    };
    if momentum < 0.0 {
        return bad("optimizer.momentum", format!("{momentum} must be >= 0"));
    }
    match &o.kind {
        OptimizerKind::Sgd(s) if s.nesterov && (s.momentum <= 0.0 || s.dampening != 0.0) => {
            bad("optimizer.nesterov", "needs momentum > 0 and dampening = 0 (as in PyTorch)".into())
        }
        OptimizerKind::Adam(a) | OptimizerKind::Adamw(a) if a.betas.iter().any(|b| !(0.0..1.0).contains(b)) => {
            bad("optimizer.betas", format!("{:?}: each beta must be in [0, 1)", a.betas))
        }
        _ => Ok(()),
    }
}

fn check_scheduler(s: &SchedulerConfig) -> Result<(), (String, String)> {
    let bad = |k: &str, m: String| Err((k.to_string(), m));
    if s.warmup_steps > 0 && s.warmup_epochs > 0.0 {
        return bad("scheduler.warmup_epochs", "give warmup_steps or warmup_epochs, not both".into());
    }
    match &s.kind {
        SchedulerKind::OneCycle(_) if s.warmup_steps > 0 || s.warmup_epochs > 0.0 => {
            bad("scheduler.name", "one_cycle has its own warm-up (pct_start); remove warmup_steps/warmup_epochs".into())
        }
        SchedulerKind::Step(step) if step.step_size == 0 => bad("scheduler.step_size", "must be at least 1 epoch".into()),
        SchedulerKind::OneCycle(o) if !(o.pct_start > 0.0 && o.pct_start < 1.0) => bad("scheduler.pct_start", format!("{} is outside (0, 1)", o.pct_start)),
        SchedulerKind::Plateau(p) if !(p.factor > 0.0 && p.factor < 1.0) => bad("scheduler.factor", format!("{} is outside (0, 1)", p.factor)),
        _ => Ok(()),
    }
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
    fn default_modes() {
        assert_eq!(default_mode("val/accuracy"), Mode::Max);
        assert_eq!(default_mode("val/f1_macro"), Mode::Max);
        assert_eq!(default_mode("val/loss"), Mode::Min);
        assert_eq!(default_mode("val/mae"), Mode::Min);
    }
}
