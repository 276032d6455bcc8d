//! `inference.json`: what a checkpoint's weights alone do not say but running the model on new data needs — the
//! task, the per-sample input shape, the class labels and the normalisation training applied.
//!
//! A checkpoint may come from anywhere, so reading it back checks sizes and shapes before anything trusts them.

use crate::config::TaskKind;
use crate::data::{Dataset, Normalization};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE: &str = "inference.json";
pub const FORMAT_VERSION: u32 = 1;

/// Larger files are refused before parsing: a real one holds a few statistics per feature and one name per class.
const MAX_FILE_BYTES: u64 = 64 << 20;
const MAX_DIMS: usize = 8;
const MAX_FEATURES: i64 = 1 << 26;
const MAX_CLASSES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inference {
    pub format_version: u32,
    pub task: TaskKind,
    /// Per-sample feature shape, e.g. `[1, 28, 28]` or `[4]`.
    pub input_shape: Vec<i64>,
    /// Classification: number of classes; regression: target width.
    pub outputs: usize,
    /// String class labels (a CSV's), index = class id; `None` when the classes are the numbers `0..outputs`.
    pub labels: Option<Vec<String>>,
    /// The standardisation training applied (`data.normalize`), to apply to inputs exactly as it was.
    pub normalization: Option<Normalization>,
}

impl Inference {
    pub fn of(data: &Dataset) -> Inference {
        Inference {
            format_version: FORMAT_VERSION,
            task: data.task,
            input_shape: data.input_shape.clone(),
            outputs: data.outputs,
            labels: data.class_names.clone(),
            normalization: data.normalization.clone(),
        }
    }

    /// Features per sample.
    pub fn sample_len(&self) -> usize {
        self.input_shape.iter().product::<i64>() as usize
    }

    /// The label of class `id` as text: its name, or the number.
    pub fn label(&self, id: usize) -> String {
        match &self.labels {
            Some(names) => names.get(id).cloned().unwrap_or_else(|| id.to_string()),
            None => id.to_string(),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join(FILE), serde_json::to_vec_pretty(self)?).with_context(|| format!("cannot write {}", dir.join(FILE).display()))
    }

    /// Reads and checks a checkpoint's `inference.json`; every problem is one line naming the file.
    pub fn read(dir: &Path) -> Result<Inference> {
        let path = dir.join(FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no {FILE}: it was saved by a bz without inference metadata; retrain, or continue the run with `bz train CONFIG --resume --epochs MORE`, to write a checkpoint that has it",
                dir.display()
            ),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        if meta.len() > MAX_FILE_BYTES {
            bail!("{} is {} bytes, more than the {MAX_FILE_BYTES} an inference file can be: it is not one bz wrote", path.display(), meta.len());
        }
        let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let inference: Inference = serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("{} is damaged: {e}", path.display()))?;
        inference.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(inference)
    }

    fn check(&self) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            bail!("inference format {}, this bz reads {FORMAT_VERSION}", self.format_version);
        }
        let shape = &self.input_shape;
        if shape.is_empty() || shape.len() > MAX_DIMS || shape.iter().any(|&d| d <= 0 || d > MAX_FEATURES) {
            bail!("input_shape {shape:?} is not a sample shape (1 to {MAX_DIMS} positive dimensions)");
        }
        if shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d).filter(|n| *n <= MAX_FEATURES)).is_none() {
            bail!("input_shape {shape:?} holds more than {MAX_FEATURES} features");
        }
        if self.outputs == 0 || self.outputs > MAX_CLASSES {
            bail!("outputs = {} is outside 1..={MAX_CLASSES}", self.outputs);
        }
        if let Some(labels) = &self.labels {
            if self.task != TaskKind::Classification || labels.len() > self.outputs {
                bail!("{} labels do not fit a {:?} model with {} outputs", labels.len(), self.task, self.outputs);
            }
        }
        if let Some(n) = &self.normalization {
            check_normalization(n, shape)?;
        }
        Ok(())
    }
}

/// The statistics must broadcast over a sample: same rank, each dimension the sample's or 1, one value per cell.
fn check_normalization(n: &Normalization, shape: &[i64]) -> Result<()> {
    let fits = n.shape.len() == shape.len() && n.shape.iter().zip(shape).all(|(&s, &d)| s == d || s == 1);
    if !fits {
        bail!("normalization shape {:?} does not broadcast over input_shape {shape:?}", n.shape);
    }
    let cells: i64 = n.shape.iter().product();
    if n.mean.len() as i64 != cells || n.std.len() as i64 != cells {
        bail!("normalization has {} means and {} stds for shape {:?} ({cells} values each)", n.mean.len(), n.std.len(), n.shape);
    }
    if n.mean.iter().chain(&n.std).any(|v| !v.is_finite()) || n.std.iter().any(|&s| s <= 0.0) {
        bail!("normalization holds a non-finite mean or a std that is not positive");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tabular() -> Inference {
        Inference {
            format_version: FORMAT_VERSION,
            task: TaskKind::Classification,
            input_shape: vec![3],
            outputs: 2,
            labels: Some(vec!["cat".into(), "dog".into()]),
            normalization: Some(Normalization { shape: vec![3], mean: vec![0.0, 1.0, 2.0], std: vec![1.0, 1.0, 2.0] }),
        }
    }

    #[test]
    fn round_trips_and_rejects_hostile_files() {
        let dir = tempfile::tempdir().unwrap();
        tabular().write(dir.path()).unwrap();
        assert_eq!(Inference::read(dir.path()).unwrap(), tabular());
        assert_eq!(tabular().label(1), "dog");

        let bad = |edit: fn(&mut Inference), needle: &str| {
            let mut i = tabular();
            edit(&mut i);
            i.write(dir.path()).unwrap();
            let e = Inference::read(dir.path()).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        };
        bad(|i| i.input_shape = vec![1 << 20, 1 << 20], "more than");
        bad(|i| i.input_shape = vec![], "not a sample shape");
        bad(
            |i| {
                i.normalization.as_mut().unwrap().mean.pop();
            },
            "means",
        );
        bad(|i| i.normalization.as_mut().unwrap().shape = vec![4], "broadcast");
        bad(|i| i.normalization.as_mut().unwrap().std[0] = 0.0, "positive");
        bad(|i| i.labels = Some(vec!["a".into(); 3]), "labels");

        std::fs::write(dir.path().join(FILE), b"{\"format_version\": 1").unwrap();
        assert!(Inference::read(dir.path()).unwrap_err().to_string().contains("damaged"));
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        assert!(Inference::read(dir.path()).unwrap_err().to_string().contains("retrain"));
    }
}
