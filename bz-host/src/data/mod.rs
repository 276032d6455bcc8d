//! Datasets as tensors: loaded once, split, normalised, moved to the device, then batched by gathering each batch's
//! rows of one seeded permutation per epoch — no per-sample work and no second copy of the split, so loading is
//! never the bottleneck.

pub mod augment;
pub mod formats;
pub mod images;

use crate::config::{Column, CsvData, DataConfig, DataSource, ImagesData, KeyError, TaskKind};
use anyhow::{bail, Result};
use formats::{DataError, RawSet, Targets, Task};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Features and targets of one split, on the training device.
pub struct Split {
    pub x: Tensor,
    /// Int64 class ids `[N]` for classification, Float `[N, W]` for regression.
    pub y: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.x.size().first().copied().unwrap_or(0) as usize
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
            // config::check allows only "test" for either, and not both.
            let t10k = |wanted: bool| if wanted { formats::idx_dir(&dir, "t10k").map(Some) } else { Ok(None) };
            Raw {
                train: formats::idx_dir(&dir, "train")?,
                val: t10k(idx.val.is_some())?,
                test: t10k(idx.test.is_some())?,
                description: format!("idx {}", dir.display()),
            }
        }
        DataSource::Csv(csv) => load_csv(csv, task, base)?,
        DataSource::Safetensors(st) => {
            let file = base.join(&st.path);
            let read = |f: &Option<std::path::PathBuf>| match f {
                Some(v) => formats::safetensors(&base.join(v), &st.features_key, &st.targets_key, task).map(Some),
                None => Ok(None),
            };
            let train = formats::safetensors(&file, &st.features_key, &st.targets_key, task)?;
            Raw { train, val: read(&st.val)?, test: read(&st.test)?, description: format!("safetensors {}", file.display()) }
        }
        DataSource::Images(img) => load_images(img, base)?,
    };
    assemble(raw, cfg, seed, device)
}

/// The splits a source read, before tensors: the training set and the separate files, if any.
struct Raw {
    train: RawSet,
    val: Option<RawSet>,
    test: Option<RawSet>,
    description: String,
}

impl Raw {
    fn train_only(train: RawSet, description: String) -> Raw {
        Raw { train, val: None, test: None, description }
    }
}

fn load_images(cfg: &ImagesData, base: &Path) -> Result<Raw> {
    let workers = match cfg.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let spec = images::ImageSpec { size: cfg.size.map(|[h, w]| (h, w)), channels: cfg.channels, workers, known_classes: None };
    let file = base.join(&cfg.path);
    let started = std::time::Instant::now();
    let train = images::read(&file, &spec)?;
    // Other sets take the training set's size, channels and classes.
    let [c, h, w] = train.shape[..] else { bail!("{}: images decoded to shape {:?}", file.display(), train.shape) };
    let spec = images::ImageSpec { size: Some((h as u32, w as u32)), channels: Some(c as u8), known_classes: train.class_names.as_deref(), ..spec };
    let read = |f: &Option<std::path::PathBuf>| f.as_ref().map(|v| images::read(&base.join(v), &spec)).transpose();
    let (val, test) = (read(&cfg.val)?, read(&cfg.test)?);
    let n = train.len() + val.as_ref().map_or(0, |v| v.len()) + test.as_ref().map_or(0, |t| t.len());
    let secs = started.elapsed().as_secs_f64();
    let description = format!("images {} ({} images, {c}x{h}x{w}; {n} decoded in {secs:.2} s by {workers} threads)", file.display(), train.len());
    Ok(Raw { train, val, test, description })
}

fn load_csv(cfg: &CsvData, task: Task, base: &Path) -> Result<Raw> {
    let file = base.join(&cfg.path);
    let target = column(&cfg.target);
    let features: Option<Vec<_>> = cfg.features.as_ref().map(|f| f.iter().map(column).collect());
    let delimiter = cfg.delimiter_byte();
    let spec = formats::CsvSpec { target: target.clone(), features: features.clone(), has_header: cfg.header, delimiter, task, known_classes: None };
    let train = formats::csv(&file, &spec)?;
    // Other files map their labels onto the training file's classes.
    let known = train.class_names.clone();
    let spec = formats::CsvSpec { known_classes: known.as_deref(), ..spec };
    let read = |f: &Option<std::path::PathBuf>| match f {
        Some(v) => formats::csv(&base.join(v), &spec).map(Some),
        None => Ok(None),
    };
    Ok(Raw { val: read(&cfg.val)?, test: read(&cfg.test)?, train, description: format!("csv {}", file.display()) })
}

fn assemble(raw: Raw, cfg: &DataConfig, seed: u64, device: Device) -> Result<Dataset> {
    let Raw { train, val, test, description } = raw;
    if train.is_empty() {
        bail!("the training data ({description}) has no samples");
    }
    for (name, set) in [("validation", &val), ("test", &test)] {
        if let Some(s) = set {
            if s.shape != train.shape {
                bail!("{name} samples have shape {:?} but training samples {:?}", s.shape, train.shape);
            }
        }
    }
    let task = match (&train.targets, cfg.task) {
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
    let input_shape: Vec<i64> = train.shape.iter().map(|d| *d as i64).collect();
    if input_shape.is_empty() || input_shape.contains(&0) {
        bail!("{description}: each sample has shape {input_shape:?}, which holds no features; check the data file (rows, columns or the features key)");
    }
    let class_names = train.class_names.clone();
    let (train_x, train_y) = tensors(&train, task)?;
    let (mut train_split, mut val_split) = match val {
        Some(v) => {
            let (vx, vy) = tensors(&v, task)?;
            (Split { x: train_x, y: train_y }, Split { x: vx, y: vy })
        }
        None => split(train_x, train_y, cfg.val_split, seed)?,
    };
    let mut test_split = match &test {
        Some(t) => {
            let (x, y) = tensors(t, task)?;
            Some(Split { x, y })
        }
        None => None,
    };
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
    let to = |s: Split| -> Result<Split> { Ok(Split { x: s.x.f_to_device(device)?, y: s.y.f_to_device(device)? }) };
    let test = test_split.map(to).transpose()?;
    Ok(Dataset { train: to(train_split)?, val: to(val_split)?, test, input_shape, task, outputs, class_names, normalization, description })
}

fn tensors(set: &RawSet, task: TaskKind) -> Result<(Tensor, Tensor)> {
    let mut dims = vec![set.len() as i64];
    dims.extend(set.shape.iter().map(|d| *d as i64));
    let x = Tensor::f_from_slice(&set.features)?.f_reshape(&dims[..])?;
    let y = match (&set.targets, task) {
        (Targets::Classes(c), TaskKind::Classification) => Tensor::f_from_slice(c)?,
        (Targets::Classes(c), TaskKind::Regression) => {
            let v: Vec<f32> = c.iter().map(|v| *v as f32).collect();
            Tensor::f_from_slice(&v)?.f_reshape([-1, 1])?
        }
        (Targets::Values { data, width }, _) => Tensor::f_from_slice(data)?.f_reshape([-1, *width as i64])?,
    };
    Ok((x, y))
}

/// Holds out `fraction` of the samples, chosen by a seeded shuffle (the same split on every run with that seed).
fn split(x: Tensor, y: Tensor, fraction: f64, seed: u64) -> Result<(Split, Split)> {
    let n = x.size()[0] as usize;
    let n_val = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && (n_val == 0 || n_val == n) {
        return Err(key_error(
            "data.val_split",
            format!("{fraction} leaves {n_val} of {n} samples for validation; choose a fraction that leaves both sides non-empty"),
        ));
    }
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a));
    let val_idx = Tensor::f_from_slice(&order[..n_val])?;
    let train_idx = Tensor::f_from_slice(&order[n_val..])?;
    Ok((
        Split { x: x.f_index_select(0, &train_idx)?, y: y.f_index_select(0, &train_idx)? },
        Split { x: x.f_index_select(0, &val_idx)?, y: y.f_index_select(0, &val_idx)? },
    ))
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
fn normalize<'s>(train: &mut Split, others: impl Iterator<Item = &'s mut Split>, shape: &[i64]) -> Result<Normalization> {
    let dims: Vec<i64> = if shape.len() == 3 { vec![0, 2, 3] } else { vec![0] };
    let mean = train.x.f_mean_dim(&dims[..], true, Kind::Float)?;
    let std = train.x.f_std_dim(&dims[..], false, true)?.f_clamp_min(1e-8)?;
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::<f32>::try_from(&t.f_to_kind(Kind::Float)?.f_flatten(0, -1)?.f_contiguous()?)?) };
    let stats = Normalization { shape: mean.size()[1..].to_vec(), mean: flat(&mean)?, std: flat(&std)? };
    // Through the statistics a checkpoint keeps, so training and `bz predict` standardise the same way.
    train.x = stats.apply(&train.x)?;
    for split in others.filter(|s| !s.is_empty()) {
        split.x = stats.apply(&split.x)?;
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
        let train_x = Tensor::from_slice(&[1.0f32, 3.0, 5.0, 7.0]).reshape([4, 1]);
        let mut train = Split { x: train_x, y: Tensor::from_slice(&[0i64, 1, 0, 1]) };
        let mut val = Split { x: Tensor::from_slice(&[4.0f32]).reshape([1, 1]), y: Tensor::from_slice(&[0i64]) };
        let mut test = Split { x: Tensor::from_slice(&[100.0f32, 4.0]).reshape([2, 1]), y: Tensor::from_slice(&[0i64, 1]) };
        normalize(&mut train, [&mut val, &mut test].into_iter(), &[1]).unwrap();
        // Training mean 4, population std sqrt(5): the test split's own statistics play no part.
        let std = 5f64.sqrt();
        let test_x: Vec<f32> = Vec::try_from(test.x.flatten(0, -1)).unwrap();
        assert!((test_x[0] as f64 - 96.0 / std).abs() < 1e-4 && test_x[1].abs() < 1e-6, "{test_x:?}");
        assert!(val.x.double_value(&[0, 0]).abs() < 1e-6);
    }

    #[test]
    fn digits_split_and_normalise() {
        let cfg = DataConfig { normalize: true, ..DataConfig::default() };
        let d = load(&cfg, 0, Path::new("."), Device::Cpu).unwrap();
        assert_eq!(d.train.len() + d.val.len(), 1797);
        assert_eq!(d.val.len(), 359);
        assert_eq!(d.outputs, 10);
        assert_eq!(d.input_shape, vec![1, 8, 8]);
        let m = d.train.x.mean(Kind::Float).double_value(&[]);
        assert!(m.abs() < 1e-4, "normalised mean {m}");
    }
}
