//! Datasets: loaded once as tensors, split, normalised, moved to the device, then batched by gathering each batch's
//! rows of one seeded permutation per epoch — no per-sample work and no second copy of the split, so loading is
//! never the bottleneck. With `data.stream = true` the features stay in their files instead and are read a batch at
//! a time ([`stream`]); the splits, the order and the batches are the same.

pub mod augment;
pub mod batches;
pub mod formats;
pub mod images;
mod mapped;
mod prefetch;
pub mod stream;
pub mod tokens;

use crate::config::{Column, CsvData, DataConfig, DataSource, ImagesData, KeyError, TaskKind};
use anyhow::{bail, Result};
pub use batches::{BatchPlan, Features, Loader};
use formats::{DataError, RawSet, Targets, Task};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use stream::{StreamSet, StreamSettings, Streamed};
use tch::{Device, Kind, Tensor};

/// Features and targets of one split, on the training device (streamed features: read as batches are made).
pub struct Split {
    pub x: Features,
    /// Int64 class ids `[N]` for classification, Float `[N, W]` for regression.
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.y.size().first().copied().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Dataset {
    pub train: Split,
    pub val: Split,
    /// The split of `data.test`, if the config names one: evaluated only, never trained or validated on.
    pub test: Option<Split>,
    /// Per-sample feature shape, e.g. `[1, 28, 28]` or `[64]`.
    pub input_shape: Vec<i64>,
    pub task: TaskKind,
    /// Classification: number of classes; regression: target width.
    pub outputs: usize,
    pub class_names: Option<Vec<String>>,
    /// The standardisation applied to every split (`data.normalize`), which inference must apply too.
    pub normalization: Option<Normalization>,
    /// Where the data came from, for the console and `bz doctor`-style messages.
    pub description: String,
}

/// Loads the dataset a config describes. Relative paths are taken from `base` (the config file's directory).
/// A problem the config must fix is a [`KeyError`] naming the key (see `config::in_file`).
pub fn load(cfg: &DataConfig, seed: u64, base: &Path, device: Device) -> Result<Dataset> {
    let task = match cfg.task {
        TaskKind::Classification => Task::Classification,
        TaskKind::Regression => Task::Regression,
    };
    let stream = stream_settings(cfg);
    let streamed = if stream.is_some() { " (memory-mapped, read per batch)" } else { "" };
    let raw = match &cfg.source {
        DataSource::Digits => Raw::train_only(formats::digits()?, "digits (scikit-learn, 1,797 8x8 images, embedded)".to_string()),
        DataSource::Synthetic(s) => {
            let set = formats::synthetic(task, s.samples, s.num_features, s.classes, s.noise, seed).map_err(|e| match e {
                DataError::Settings { setting, .. } => {
                    let key = if setting == "features" { "data.num_features".to_string() } else { format!("data.{setting}") };
                    key_error(&key, e.to_string())
                }
                other => other.into(),
            })?;
            Raw::train_only(set, format!("synthetic {} ({} samples, {} features)", task_name(cfg.task), s.samples, s.num_features))
        }
        DataSource::Idx(idx) => {
            let dir = base.join(&idx.path);
            let read = |prefix: &str| -> Result<Samples> {
                Ok(match stream {
                    Some(_) => Samples::Streamed(mapped::idx_dir(&dir, prefix)?),
                    None => Samples::Memory(formats::idx_dir(&dir, prefix)?),
                })
            };
            // config::check allows only "test" for either, and not both.
            let t10k = |wanted: bool| if wanted { read("t10k").map(Some) } else { Ok(None) };
            Raw {
                train: read("train")?,
                val: t10k(idx.val.is_some())?,
                test: t10k(idx.test.is_some())?,
                description: format!("idx {}{streamed}", dir.display()),
            }
        }
        DataSource::Csv(csv) => load_csv(csv, task, base)?,
        DataSource::Safetensors(st) => {
            let read = |file: &Path| -> Result<Samples> {
                Ok(match stream {
                    Some(_) => Samples::Streamed(mapped::safetensors(file, &st.features_key, &st.targets_key, task)?),
                    None => Samples::Memory(formats::safetensors(file, &st.features_key, &st.targets_key, task)?),
                })
            };
            let file = base.join(&st.path);
            let other = |f: &Option<std::path::PathBuf>| f.as_ref().map(|v| read(&base.join(v))).transpose();
            Raw { train: read(&file)?, val: other(&st.val)?, test: other(&st.test)?, description: format!("safetensors {}{streamed}", file.display()) }
        }
        DataSource::Images(img) => load_images(img, base, stream)?,
    };
    assemble(raw, cfg, seed, Place { device, stream })
}

/// The one place that decides whether a config's features stream: `data.stream = true` on a source that can
/// (idx, safetensors, images). Never automatic: the same config reads its data the same way on every machine.
fn stream_settings(cfg: &DataConfig) -> Option<StreamSettings> {
    let (stream, prefetch, workers) = match &cfg.source {
        DataSource::Idx(d) => (d.stream, d.prefetch, 1),
        DataSource::Safetensors(d) => (d.stream, d.prefetch, 1),
        DataSource::Images(d) => (d.stream, d.prefetch, image_workers(d.workers)),
        DataSource::Digits | DataSource::Synthetic(_) | DataSource::Csv(_) => (false, 1, 1),
    };
    stream.then_some(StreamSettings { workers, prefetch })
}

fn image_workers(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// One set's samples: read into memory, or left in their files to stream.
enum Samples {
    Memory(RawSet),
    Streamed(StreamSet),
}

impl Samples {
    fn shape(&self) -> &[usize] {
        match self {
            Samples::Memory(s) => &s.shape,
            Samples::Streamed(s) => &s.shape,
        }
    }

    fn targets(&self) -> &Targets {
        match self {
            Samples::Memory(s) => &s.targets,
            Samples::Streamed(s) => &s.targets,
        }
    }

    fn class_names(&self) -> Option<&Vec<String>> {
        match self {
            Samples::Memory(s) => s.class_names.as_ref(),
            Samples::Streamed(s) => s.class_names.as_ref(),
        }
    }

    fn len(&self) -> usize {
        self.targets().len()
    }
}

/// The splits a source read, before tensors: the training set and the separate files, if any.
struct Raw {
    train: Samples,
    val: Option<Samples>,
    test: Option<Samples>,
    description: String,
}

impl Raw {
    fn train_only(train: RawSet, description: String) -> Raw {
        Raw { train: Samples::Memory(train), val: None, test: None, description }
    }
}

/// Where the splits' tensors go, and how streamed ones are read.
#[derive(Clone, Copy)]
struct Place {
    device: Device,
    stream: Option<StreamSettings>,
}

fn load_images(cfg: &ImagesData, base: &Path, stream: Option<StreamSettings>) -> Result<Raw> {
    let workers = image_workers(cfg.workers);
    let spec = images::ImageSpec { size: cfg.size.map(|[h, w]| (h, w)), channels: cfg.channels, workers, known_classes: None };
    let file = base.join(&cfg.path);
    let started = std::time::Instant::now();
    let read = |path: &Path, spec: &images::ImageSpec| -> Result<Samples> {
        Ok(match stream {
            Some(_) => Samples::Streamed(images::index(path, spec)?.into_stream_set()),
            None => Samples::Memory(images::read(path, spec)?),
        })
    };
    let train = read(&file, &spec)?;
    // Other sets take the training set's size, channels and classes.
    let [c, h, w] = train.shape()[..] else { bail!("{}: images decoded to shape {:?}", file.display(), train.shape()) };
    let spec = images::ImageSpec { size: Some((h as u32, w as u32)), channels: Some(c as u8), known_classes: train.class_names().map(|n| &n[..]), ..spec };
    let other = |f: &Option<std::path::PathBuf>| f.as_ref().map(|v| read(&base.join(v), &spec)).transpose();
    let (val, test) = (other(&cfg.val)?, other(&cfg.test)?);
    let n = train.len() + val.as_ref().map_or(0, |v| v.len()) + test.as_ref().map_or(0, |t| t.len());
    let secs = started.elapsed().as_secs_f64();
    let description = match stream {
        Some(_) => {
            format!("images {} ({} images, {c}x{h}x{w}; {n} listed in {secs:.2} s, decoded per batch by {workers} threads)", file.display(), train.len())
        }
        None => format!("images {} ({} images, {c}x{h}x{w}; {n} decoded in {secs:.2} s by {workers} threads)", file.display(), train.len()),
    };
    Ok(Raw { train, val, test, description })
}

fn load_csv(cfg: &CsvData, task: Task, base: &Path) -> Result<Raw> {
    let file = base.join(&cfg.path);
    let target = column(&cfg.target);
    let features: Option<Vec<_>> = cfg.features.as_ref().map(|f| f.iter().map(column).collect());
    let delimiter = cfg.delimiter_byte();
    let spec = formats::CsvSpec { target: target.clone(), features: features.clone(), has_header: cfg.header, delimiter, task, known_classes: None };
    check_tokens(cfg)?;
    let read_one = |path: &Path, spec: &formats::CsvSpec| -> Result<RawSet> {
        Ok(match &cfg.tokens {
            Some(t) => tokens::read(path, &tokens::TokenSpec { csv: spec.clone(), column: column(&t.column), max_len: t.max_len, padding_id: t.padding_id })?,
            None => formats::csv(path, spec)?,
        })
    };
    let train = read_one(&file, &spec)?;
    // Other files map their labels onto the training file's classes.
    let known = train.class_names.clone();
    let spec = formats::CsvSpec { known_classes: known.as_deref(), ..spec };
    let read = |f: &Option<std::path::PathBuf>| f.as_ref().map(|v| read_one(&base.join(v), &spec).map(Samples::Memory)).transpose();
    let description = match &cfg.tokens {
        Some(t) => format!("csv {} (token ids, padded to {} with {})", file.display(), t.max_len, t.padding_id),
        None => format!("csv {}", file.display()),
    };
    Ok(Raw { val: read(&cfg.val)?, test: read(&cfg.test)?, train: Samples::Memory(train), description })
}

/// `[data.tokens]` replaces the feature columns, and needs a length a sample can have.
fn check_tokens(cfg: &CsvData) -> Result<()> {
    const MAX_LEN: usize = 1 << 16;
    let Some(t) = &cfg.tokens else { return Ok(()) };
    if cfg.features.is_some() {
        return Err(key_error("data.features", "a token CSV's features are its [data.tokens] column: drop data.features".into()));
    }
    if !(1..=MAX_LEN).contains(&t.max_len) {
        return Err(key_error("data.tokens.max_len", format!("{}: give the sequence length, 1 to {MAX_LEN}", t.max_len)));
    }
    if t.padding_id > tokens::MAX_TOKEN_ID {
        return Err(key_error("data.tokens.padding_id", format!("{}: give an id from 0 to {}", t.padding_id, tokens::MAX_TOKEN_ID)));
    }
    Ok(())
}

fn assemble(raw: Raw, cfg: &DataConfig, seed: u64, place: Place) -> Result<Dataset> {
    let Raw { train, val, test, description } = raw;
    if train.len() == 0 {
        bail!("the training data ({description}) has no samples");
    }
    for (name, set) in [("validation", &val), ("test", &test)] {
        if let Some(s) = set {
            if s.shape() != train.shape() {
                bail!("{name} samples have shape {:?} but training samples {:?}", s.shape(), train.shape());
            }
        }
    }
    let task = match (train.targets(), cfg.task) {
        (Targets::Classes(_), TaskKind::Classification) => TaskKind::Classification,
        (Targets::Values { .. }, TaskKind::Regression) => TaskKind::Regression,
        (Targets::Classes(_), TaskKind::Regression) => TaskKind::Regression,
        (Targets::Values { .. }, TaskKind::Classification) => {
            return Err(key_error(
                "data.task",
                format!("{description}: the targets are real numbers; set data.task = \"regression\" or give integer class labels"),
            ))
        }
    };
    let input_shape: Vec<i64> = train.shape().iter().map(|d| *d as i64).collect();
    if input_shape.is_empty() || input_shape.contains(&0) {
        bail!("{description}: each sample has shape {input_shape:?}, which holds no features; check the data file (rows, columns or the features key)");
    }
    let class_names = train.class_names().cloned();
    let train_split = to_split(train, task, place)?;
    let (mut train_split, mut val_split) = match val {
        Some(v) => (train_split, to_split(v, task, place)?),
        None => split(train_split, cfg.val_split, seed)?,
    };
    let mut test_split = test.map(|t| to_split(t, task, place)).transpose()?;
    let outputs = match task {
        TaskKind::Classification => {
            let max = |s: &Split| -> Result<i64> {
                if s.is_empty() {
                    Ok(-1)
                } else {
                    Ok(s.y.f_max()?.f_int64_value(&[])?)
                }
            };
            let test_max = match &test_split {
                Some(t) => max(t)?,
                None => -1,
            };
            let n = (max(&train_split)?.max(max(&val_split)?).max(test_max) + 1) as usize;
            n.max(class_names.as_ref().map_or(0, |c| c.len())).max(2)
        }
        TaskKind::Regression => train_split.y.size().get(1).copied().unwrap_or(1) as usize,
    };
    let normalization = match cfg.normalize {
        true => Some(normalize(&mut train_split, [Some(&mut val_split), test_split.as_mut()].into_iter().flatten(), &input_shape)?),
        false => None,
    };
    let to = |s: Split| -> Result<Split> {
        let x = match s.x {
            Features::Memory(x) => Features::Memory(x.f_to_device(place.device)?),
            streamed => streamed,
        };
        Ok(Split { x, y: s.y.f_to_device(place.device)? })
    };
    let test = test_split.map(to).transpose()?;
    Ok(Dataset { train: to(train_split)?, val: to(val_split)?, test, input_shape, task, outputs, class_names, normalization, description })
}

/// A set as a split: features (a tensor, or the streamed reader) and targets as a tensor.
fn to_split(set: Samples, task: TaskKind, place: Place) -> Result<Split> {
    let y = targets(set.targets(), task)?;
    let x = match set {
        Samples::Memory(set) => {
            let mut dims = vec![set.len() as i64];
            dims.extend(set.shape.iter().map(|d| *d as i64));
            Features::Memory(Tensor::f_from_slice(&set.features)?.f_reshape(&dims[..])?)
        }
        Samples::Streamed(set) => {
            let settings = place.stream.unwrap_or(StreamSettings { workers: 1, prefetch: 1 });
            let ids: Arc<[usize]> = (0..set.targets.len()).collect();
            Features::Streamed(Streamed { reader: set.reader, ids, shape: set.shape, settings, normalization: None, device: place.device })
        }
    };
    Ok(Split { x, y })
}

fn targets(targets: &Targets, task: TaskKind) -> Result<Tensor> {
    Ok(match (targets, task) {
        (Targets::Classes(c), TaskKind::Classification) => Tensor::f_from_slice(c)?,
        (Targets::Classes(c), TaskKind::Regression) => {
            let v: Vec<f32> = c.iter().map(|v| *v as f32).collect();
            Tensor::f_from_slice(&v)?.f_reshape([-1, 1])?
        }
        (Targets::Values { data, width }, _) => Tensor::f_from_slice(data)?.f_reshape([-1, *width as i64])?,
    })
}

/// Holds out `fraction` of the samples, chosen by a seeded shuffle (the same split on every run with that seed).
fn split(all: Split, fraction: f64, seed: u64) -> Result<(Split, Split)> {
    let n = all.len();
    let n_val = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && (n_val == 0 || n_val == n) {
        return Err(key_error(
            "data.val_split",
            format!("{fraction} leaves {n_val} of {n} samples for validation; choose a fraction that leaves both sides non-empty"),
        ));
    }
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a));
    let part = |positions: &[i64]| -> Result<Split> {
        let index = Tensor::f_from_slice(positions)?;
        let x = match &all.x {
            Features::Memory(x) => Features::Memory(x.f_index_select(0, &index)?),
            Features::Streamed(s) => Features::Streamed(s.subset(positions)),
        };
        Ok(Split { x, y: all.y.f_index_select(0, &index)? })
    };
    Ok((part(&order[n_val..])?, part(&order[..n_val])?))
}

/// Per-feature standardisation statistics: `x' = (x - mean) / std`, broadcast over a sample of `shape`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// The statistics' shape per sample: the sample's shape with reduced dimensions as 1 (`[C, 1, 1]` for images).
    pub shape: Vec<i64>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Applies the statistics to a batch `[N, ...sample shape]`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.standardizer(x.device())?.apply(x)
    }

    /// The statistics as tensors on `device`, made once for many batches.
    pub fn standardizer(&self, device: tch::Device) -> Result<Standardizer> {
        let mut dims = vec![1];
        dims.extend(&self.shape);
        let tensor = |v: &[f32]| -> Result<Tensor> { Ok(Tensor::f_from_slice(v)?.f_reshape(&dims[..])?.f_to_device(device)?) };
        Ok(Standardizer { mean: tensor(&self.mean)?, std: tensor(&self.std)? })
    }
}

/// [`Normalization`]'s statistics as tensors `[1, ...shape]`. Made before a traced export runs, they are captured as
/// constants: a tensor made from a slice during tracing would be recorded as zeros (the copy is not traced).
pub struct Standardizer {
    mean: Tensor,
    std: Tensor,
}

impl Standardizer {
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_sub(&self.mean)?.f_div(&self.std)?)
    }

    /// The inverse of [`Standardizer::apply`]: standardised values back to the data's own scale.
    pub fn undo(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_mul(&self.std)?.f_add(&self.mean)?)
    }
}

/// Standardises the training split and `others` (validation, test) with the training split's statistics: per
/// channel for images, per column for tabular data. Returns the statistics, which checkpoints keep for inference.
/// Streamed splits keep the statistics and standardise each batch as it is made.
fn normalize<'s>(train: &mut Split, others: impl Iterator<Item = &'s mut Split>, shape: &[i64]) -> Result<Normalization> {
    let stats = match &train.x {
        Features::Memory(x) => {
            let dims: Vec<i64> = if shape.len() == 3 { vec![0, 2, 3] } else { vec![0] };
            let mean = x.f_mean_dim(&dims[..], true, Kind::Float)?;
            let std = x.f_std_dim(&dims[..], false, true)?.f_clamp_min(1e-8)?;
            let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::<f32>::try_from(&t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?.f_contiguous()?)?) };
            Normalization { shape: mean.size()[1..].to_vec(), mean: flat(&mean)?, std: flat(&std)? }
        }
        Features::Streamed(s) => s.statistics()?,
    };
    // Through the statistics a checkpoint keeps, so training and `bz predict` standardise the same way.
    let apply = |split: &mut Split| -> Result<()> {
        match &mut split.x {
            Features::Memory(x) => *x = stats.apply(x)?,
            Features::Streamed(s) => s.normalization = Some(stats.clone()),
        }
        Ok(())
    };
    apply(train)?;
    for split in others.filter(|s| !s.is_empty()) {
        apply(split)?;
    }
    Ok(stats)
}

/// The sample order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    let stream = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64).wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream));
    order
}

fn column(c: &Column) -> formats::ColumnRef {
    match c {
        Column::Index(i) => formats::ColumnRef::Index(*i),
        Column::Name(n) => formats::ColumnRef::Name(n.clone()),
    }
}

fn key_error(key: &str, message: String) -> anyhow::Error {
    KeyError { key: key.into(), message }.into()
}

fn task_name(t: TaskKind) -> &'static str {
    match t {
        TaskKind::Classification => "classification",
        TaskKind::Regression => "regression",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 7, 3);
        assert_eq!(a, epoch_order(100, 7, 3));
        assert_ne!(a, epoch_order(100, 7, 4));
        assert_ne!(a, epoch_order(100, 8, 3));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<i64>>());
    }

    #[test]
    fn every_split_is_normalised_with_the_training_statistics() {
        let memory = |v: &[f32]| Features::Memory(Tensor::from_slice(v).reshape([-1, 1]));
        let mut train = Split { x: memory(&[1.0, 3.0, 5.0, 7.0]), y: Tensor::from_slice(&[0i64, 1, 0, 1]) };
        let mut val = Split { x: memory(&[4.0]), y: Tensor::from_slice(&[0i64]) };
        let mut test = Split { x: memory(&[100.0, 4.0]), y: Tensor::from_slice(&[0i64, 1]) };
        normalize(&mut train, [&mut val, &mut test].into_iter(), &[1]).unwrap();
        // Training mean 4, population std sqrt(5): the test split's own statistics play no part.
        let std = 5f64.sqrt();
        let (Features::Memory(test_x), Features::Memory(val_x)) = (&test.x, &val.x) else { panic!("in memory") };
        let test_x: Vec<f32> = Vec::try_from(test_x.flatten(0, -1)).unwrap();
        assert!((test_x[0] as f64 - 96.0 / std).abs() < 1e-4 && test_x[1].abs() < 1e-6, "{test_x:?}");
        assert!(val_x.double_value(&[0, 0]).abs() < 1e-6);
    }

    #[test]
    fn digits_split_and_normalise() {
        let cfg = DataConfig { normalize: true, ..DataConfig::default() };
        let d = load(&cfg, 0, Path::new("."), Device::Cpu).unwrap();
        assert_eq!(d.train.len() + d.val.len(), 1797);
        assert_eq!(d.val.len(), 359);
        assert_eq!(d.outputs, 10);
        assert_eq!(d.input_shape, vec![1, 8, 8]);
        let Features::Memory(x) = &d.train.x else { panic!("digits are in memory") };
        let m = x.mean(Kind::Float).double_value(&[]);
        assert!(m.abs() < 1e-4, "normalised mean {m}");
    }
}
