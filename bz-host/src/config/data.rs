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
}

impl CsvData {
    /// The delimiter as the byte the CSV reader takes (the config's checks make it exactly one byte).
    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.as_bytes().first().copied().unwrap_or(b',')
    }
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
    const KINDS: &'static [&'static str] = &["digits", "synthetic", "idx", "csv", "safetensors"];

    fn common_fields() -> &'static [&'static str] {
        tagged::fields::<Common>()
    }

    fn variant_fields(kind: &str) -> &'static [&'static str] {
        match kind {
            "synthetic" => tagged::fields::<SyntheticData>(),
            "idx" => tagged::fields::<IdxData>(),
            "csv" => tagged::fields::<CsvData>(),
            "safetensors" => tagged::fields::<SafetensorsData>(),
            _ => &[],
        }
    }

    fn build(kind: &str, own: toml::Table, common: toml::Table) -> Result<Self, SectionError> {
        let source = match kind {
            "synthetic" => DataSource::Synthetic(part(own)?),
            "idx" => DataSource::Idx(part(own)?),
            "csv" => DataSource::Csv(part(own)?),
            "safetensors" => DataSource::Safetensors(part(own)?),
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
