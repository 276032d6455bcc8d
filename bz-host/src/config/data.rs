//! `[data]`: where the samples come from (`source`) and what every source shares (split, normalisation, task).

use super::tagged::{self, part, NoKeys, SectionError, Tagged};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DataConfig {
    #[serde(flatten)]
    pub source: DataSource,
    /// Fraction of the training data held out for validation when the source has no separate `val`.
    pub val_split: f64,
    /// Standardise features with the training split's mean and std (per channel for images, per column otherwise).
    pub normalize: bool,
    pub task: TaskKind,
}

/// `source = "…"` and the keys that only that source takes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum DataSource {
    /// scikit-learn's 8x8 digits, embedded in bz.
    Digits,
    Synthetic(SyntheticData),
    Idx(IdxData),
    Csv(CsvData),
    Safetensors(SafetensorsData),
    Images(ImagesData),
}

/// `source = "images"`: PNG and JPEG files in torchvision's ImageFolder layout, or listed in a CSV.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImagesData {
    /// A folder with one subfolder per class (class ids in sorted folder-name order), or a CSV file with `path` and
    /// `label` columns (paths relative to the CSV's folder).
    pub path: PathBuf,
    /// A separate validation folder or CSV, with the training classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<PathBuf>,
    /// A test folder or CSV, evaluated by `bz eval --split test` and at the end of training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `[height, width]` every image is resized to; default: the images' own size, which they must then share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<[u32; 2]>,
    /// 1 (grayscale) or 3 (RGB); default: 1 when every training image is grayscale, else 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Threads that decode images; 0: one per core.
    #[serde(default)]
    pub workers: usize,
    /// Random changes to training batches (never to validation or test), drawn from (seed, epoch, sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// Decode each image when its batch is made (`workers` threads, `prefetch` batches ahead), so memory does not
    /// grow with the number of images; default: decode them all into memory once.
    #[serde(default)]
    pub stream: bool,
    /// Streamed: batches read ahead of training, at most this many in memory at once (0 counts as 1).
    #[serde(default = "prefetch")]
    pub prefetch: usize,
}

/// `[data.augment]`: each key off by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Mirror left-right with probability 0.5.
    pub flip: bool,
    /// Random resized crop: the crop's share of the image area, drawn from `[low, high]` (aspect ratio 3/4 to 4/3),
    /// resized back to the image size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_scale: Option<[f64; 2]>,
    /// Rotation by up to this many degrees either way.
    pub rotation: f64,
    /// Shift by up to this fraction of the width and height either way.
    pub translate: f64,
    /// Brightness factor drawn from `[1 - b, 1 + b]`.
    pub brightness: f64,
    /// Contrast factor drawn from `[1 - c, 1 + c]`, around each image's mean.
    pub contrast: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticData {
    pub samples: usize,
    pub num_features: usize,
    /// Classification only; regression ignores it.
    pub classes: usize,
    pub noise: f32,
}

impl Default for SyntheticData {
    fn default() -> Self {
        SyntheticData { samples: 2000, num_features: 20, classes: 3, noise: 1.0 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdxData {
    /// The folder of MNIST-style files.
    pub path: PathBuf,
    /// `"test"`: validate on the t10k files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<String>,
    /// `"test"`: a test split of the t10k files (`bz eval --split test`, and evaluated at the end of training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Memory-map the (uncompressed) images files and read them a batch at a time (`prefetch` batches ahead), so
    /// memory does not grow with the dataset; default: read them whole into memory once.
    #[serde(default)]
    pub stream: bool,
    /// Streamed: batches read ahead of training, at most this many in memory at once (0 counts as 1).
    #[serde(default = "prefetch")]
    pub prefetch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvData {
    pub path: PathBuf,
    /// A separate validation file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<PathBuf>,
    /// A test file, evaluated by `bz eval --split test` and at the end of training; never trained or validated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// The target column's name or 0-based index.
    pub target: Column,
    /// Default: every other column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<Column>>,
    #[serde(default = "super::yes")]
    pub header: bool,
    #[serde(default = "comma")]
    pub delimiter: String,
    /// A column of token ids for sequence models, instead of numeric feature columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
}

/// `[data.tokens]`: the CSV column whose cells are token ids separated by spaces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// The column's name or 0-based index.
    pub column: Column,
    /// Every sequence is right-padded with `padding_id` to this length; a longer one keeps its first `max_len` ids.
    pub max_len: usize,
    /// The id that pads (default 0); no real token may use it. Give the embedding `padding_idx` = this id, so the
    /// model masks the padding out.
    #[serde(default)]
    pub padding_id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SafetensorsData {
    pub path: PathBuf,
    /// A separate validation file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<PathBuf>,
    /// A test file, evaluated by `bz eval --split test` and at the end of training; never trained or validated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    #[serde(default = "features_key")]
    pub features_key: String,
    #[serde(default = "targets_key")]
    pub targets_key: String,
    /// Memory-map the file and read the features a batch at a time (`prefetch` batches ahead), so memory does not
    /// grow with the dataset; default: read them whole into memory once.
    #[serde(default)]
    pub stream: bool,
    /// Streamed: batches read ahead of training, at most this many in memory at once (0 counts as 1).
    #[serde(default = "prefetch")]
    pub prefetch: usize,
}

impl CsvData {
    /// The delimiter as the byte the CSV reader takes (the config's checks make it exactly one byte).
    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.as_bytes().first().copied().unwrap_or(b',')
    }
}

fn prefetch() -> usize {
    4
}
fn comma() -> String {
    ",".into()
}
fn features_key() -> String {
    "x".into()
}
fn targets_key() -> String {
    "y".into()
}

/// The keys every source takes; the one place their defaults live.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Common {
    val_split: f64,
    normalize: bool,
    task: TaskKind,
}

impl Default for Common {
    fn default() -> Self {
        Common { val_split: 0.2, normalize: false, task: TaskKind::Classification }
    }
}

impl DataConfig {
    fn from_parts(source: DataSource, c: Common) -> DataConfig {
        DataConfig { source, val_split: c.val_split, normalize: c.normalize, task: c.task }
    }

    /// Whether `data.test` names a test split.
    pub fn has_test(&self) -> bool {
        match &self.source {
            DataSource::Idx(d) => d.test.is_some(),
            DataSource::Csv(d) => d.test.is_some(),
            DataSource::Safetensors(d) => d.test.is_some(),
            DataSource::Images(d) => d.test.is_some(),
            DataSource::Digits | DataSource::Synthetic(_) => false,
        }
    }

    /// The source's name as users write it, e.g. `"csv"`.
    pub fn source_name(&self) -> &'static str {
        match self.source {
            DataSource::Digits => "digits",
            DataSource::Synthetic(_) => "synthetic",
            DataSource::Idx(_) => "idx",
            DataSource::Csv(_) => "csv",
            DataSource::Safetensors(_) => "safetensors",
            DataSource::Images(_) => "images",
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig::from_parts(DataSource::Digits, Common::default())
    }
}

impl Tagged for DataConfig {
    const TAG: &'static str = "source";
    const DEFAULT: Option<&'static str> = Some("digits");
    const KINDS: &'static [&'static str] = &["digits", "synthetic", "idx", "csv", "safetensors", "images"];

    fn common_fields() -> &'static [&'static str] {
        tagged::fields::<Common>()
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "synthetic" => tagged::fields::<SyntheticData>(),
            "idx" => tagged::fields::<IdxData>(),
            "csv" => tagged::fields::<CsvData>(),
            "safetensors" => tagged::fields::<SafetensorsData>(),
            "images" => tagged::fields::<ImagesData>(),
            _ => &[],
        }
    }

    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError> {
        let source = match kind {
            "synthetic" => DataSource::Synthetic(part(own)?),
            "idx" => DataSource::Idx(part(own)?),
            "csv" => DataSource::Csv(part(own)?),
            "safetensors" => DataSource::Safetensors(part(own)?),
            "images" => DataSource::Images(part(own)?),
            _ => {
                part::<NoKeys>(own)?;
                DataSource::Digits
            }
        };
        Ok(DataConfig::from_parts(source, part(common)?))
    }
}

impl<'de> Deserialize<'de> for DataConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}
