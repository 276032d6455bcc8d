//! How a split's batches reach the trainer and evaluation: a list of sample positions in, `(x, y)` on the device
//! out, from a tensor in memory (gathered by index, never copied whole) or from a streamed source (read ahead by
//! worker threads). Callers see one [`Loader`] either way.

use super::prefetch::Prefetch;
use super::stream::Streamed;
use super::Split;
use anyhow::{Context, Result};
use std::sync::Arc;
use tch::Tensor;

/// A split's features: one tensor in memory, or read from their files a batch at a time.
pub enum Features {
    Memory(Tensor),
    Streamed(Streamed),
}

/// The batches to make: `order` cut into `batch_size` pieces, batches `first..end` of them.
pub struct BatchPlan {
    /// Positions in the split; `None`: the split's own order.
    pub order: Option<Arc<[i64]>>,
    pub batch_size: usize,
    /// The first batch to make (a resumed epoch starts mid-way) and the end.
    pub first: usize,
    pub end: usize,
}

/// The batches of a [`BatchPlan`], in order.
pub struct Loader {
    kind: LoaderKind,
    y: Tensor,
    /// The plan's order on the device, to gather targets (and in-memory features) with.
    index: Option<Tensor>,
    len: usize,
    batch_size: usize,
    next: usize,
    end: usize,
}

enum LoaderKind {
    Memory(Tensor),
    Streamed { features: Streamed, batches: Prefetch<Tensor> },
}

impl Split {
    /// The batches of `plan`; a streamed split starts reading ahead at once.
    pub fn loader(&self, plan: BatchPlan) -> Result<Loader> {
        let len = plan.order.as_ref().map_or(self.len(), |o| o.len());
        let index = match &plan.order {
            Some(order) => Some(Tensor::f_from_slice(&order[..])?.f_to_device(self.y.device())?),
            None => None,
        };
        let kind = match &self.x {
            Features::Memory(x) => LoaderKind::Memory(x.shallow_clone()),
            Features::Streamed(s) => {
                let order = plan.order.clone().unwrap_or_else(|| (0..len as i64).collect());
                LoaderKind::Streamed { features: s.clone(), batches: s.prefetch(order, plan.batch_size, plan.first..plan.end) }
            }
        };
        Ok(Loader { kind, y: self.y.shallow_clone(), index, len, batch_size: plan.batch_size, next: plan.first, end: plan.end })
    }
}

impl Loader {
    /// The next batch's features and targets.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        anyhow::ensure!(self.next < self.end, "no batch {} in a plan of {}", self.next, self.end);
        let start = (self.next * self.batch_size).min(self.len);
        let n = self.batch_size.min(self.len - start) as i64;
        self.next += 1;
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(match &self.index {
                Some(index) => t.f_index_select(0, &index.f_narrow(0, start as i64, n)?)?,
                None => t.f_narrow(0, start as i64, n)?,
            })
        };
        let x = match &mut self.kind {
            LoaderKind::Memory(x) => pick(x)?,
            LoaderKind::Streamed { features, batches } => {
                let read = batches.next().context("the data loader stopped early")?;
                features.finish(read?)?
            }
        };
        Ok((x, pick(&self.y)?))
    }
}
