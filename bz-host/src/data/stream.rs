//! Streamed sources (`data.stream = true`): samples stay in their files (image files, idx and safetensors) and are
//! read a batch at a time by [`super::prefetch`] workers; only the targets, a few bytes per sample, are held in
//! memory. Peak memory is the prefetch depth times a batch, whatever the dataset's size.
//!
//! A streamed sample goes through the same reader as the in-memory path's (one decode, one conversion), and the
//! standardisation is the same [`Normalization::apply`], so streamed batches equal in-memory ones.

use super::formats::{DataError, Targets};
use super::prefetch::{MakeBatch, Prefetch};
use super::Normalization;
use anyhow::Result;
use std::sync::Arc;
use tch::{Device, Tensor};

/// Reads one sample's features from a source that is not held in memory.
pub trait SampleReader: Send + Sync {
    /// Writes sample `index`'s features (row-major, `out.len()` values) into `out`.
    fn read(&self, index: usize, out: &mut [f32]) -> Result<(), DataError>;
}

/// A streamed set before it is split: its reader, per-sample shape, targets and class names.
pub struct StreamSet {
    pub reader: Arc<dyn SampleReader>,
    pub shape: Vec<usize>,
    pub targets: Targets,
    pub class_names: Option<Vec<String>>,
}

/// How streamed batches are made: `data.workers` threads (images; one for mapped files) and `data.prefetch` batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    pub workers: usize,
    pub prefetch: usize,
}

/// The features of a streamed split: which samples of the reader it holds, and how each batch is finished.
#[derive(Clone)]
pub struct Streamed {
    pub(super) reader: Arc<dyn SampleReader>,
    /// The reader's index of each sample of this split.
    pub(super) ids: Arc<[usize]>,
    pub(super) shape: Vec<usize>,
    pub(super) settings: StreamSettings,
    pub(super) normalization: Option<Normalization>,
    pub(super) device: Device,
}

impl Streamed {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The samples at `positions` (this split's indices) of a split, as an `[N, ...shape]` tensor on the CPU.
    fn read_batch(&self, positions: &[i64]) -> Result<Tensor> {
        let sample_len: usize = self.shape.iter().product();
        let ids: Vec<usize> = positions.iter().map(|&p| self.ids[p as usize]).collect();
        let mut values = vec![0f32; ids.len() * sample_len];
        for (&id, out) in ids.iter().zip(values.chunks_mut(sample_len.max(1))) {
            self.reader.read(id, out)?;
        }
        let mut dims = vec![ids.len() as i64];
        dims.extend(self.shape.iter().map(|&d| d as i64));
        Ok(Tensor::f_from_slice(&values)?.f_reshape(&dims[..])?)
    }

    /// Starts the workers on batches `range` of `order` (this split's positions, `batch_size` a batch).
    pub(super) fn prefetch(&self, order: Arc<[i64]>, batch_size: usize, range: std::ops::Range<usize>) -> Prefetch<Tensor> {
        let me = self.clone();
        let make: Arc<MakeBatch<Tensor>> = Arc::new(move |k| {
            let start = (k * batch_size).min(order.len());
            let end = (start + batch_size).min(order.len());
            me.read_batch(&order[start..end])
        });
        Prefetch::start(range, self.settings.workers, self.settings.prefetch, make)
    }

    /// A read batch, on the device and standardised.
    pub(super) fn finish(&self, x: Tensor) -> Result<Tensor> {
        let x = x.f_to_device(self.device)?;
        match &self.normalization {
            Some(n) => n.apply(&x),
            None => Ok(x),
        }
    }

    /// A split of these samples: `positions` of this split.
    pub(super) fn subset(&self, positions: &[i64]) -> Streamed {
        let ids: Arc<[usize]> = positions.iter().map(|&p| self.ids[p as usize]).collect();
        Streamed { ids, ..self.clone() }
    }

    /// Per-group mean and population std over the split, read once in order: per channel for `[C, H, W]` samples,
    /// per feature otherwise, as the in-memory path reduces. Sums in f64, so the result matches it to rounding.
    pub(super) fn statistics(&self) -> Result<Normalization> {
        let (groups, group_len, stats_shape) = match self.shape[..] {
            [c, h, w] => (c, h * w, vec![c as i64, 1, 1]),
            _ => (self.shape.iter().product(), 1, self.shape.iter().map(|&d| d as i64).collect()),
        };
        let mut sum = vec![0f64; groups];
        let mut sum_sq = vec![0f64; groups];
        const BATCH: usize = 256;
        let order: Arc<[i64]> = (0..self.len() as i64).collect();
        let mut batches = self.prefetch(order, BATCH, 0..self.len().div_ceil(BATCH));
        while let Some(x) = batches.next() {
            let x = x?;
            let values = Vec::<f32>::try_from(&x.f_flatten(0, -1)?)?;
            for (i, &v) in values.iter().enumerate() {
                let g = (i / group_len) % groups;
                sum[g] += f64::from(v);
                sum_sq[g] += f64::from(v) * f64::from(v);
            }
        }
        let count = (self.len() * group_len).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std = sum.iter().zip(&sum_sq).map(|(s, q)| ((q / count - (s / count).powi(2)).max(0.0).sqrt() as f32).max(1e-8)).collect();
        Ok(Normalization { shape: stats_shape, mean, std })
    }
}
