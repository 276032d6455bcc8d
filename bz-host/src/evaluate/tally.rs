//! What one evaluation pass adds up, and its exact reduction over data-parallel ranks. Each rank evaluates a
//! contiguous run of whole batches ([`Ranks::batch_share`]), so every batch is the one a single process evaluates;
//! the ranks' sums (loss × samples, counts, confusion matrices) are then added in one collective, and regression's
//! running statistics, which do not add, are gathered in the same collective and merged in rank order. No mean of
//! means anywhere: counts come out exact, sums within f64 rounding of the order they are added in.

use crate::metrics::{ConfusionMatrix, RegressionMetrics};
use crate::train::Ranks;
use anyhow::{bail, Context, Result};

/// The sums of the batches a rank (or a single process) evaluated.
pub(super) struct Tally {
    /// Σ batch mean loss × batch samples.
    pub loss_sum: f64,
    pub seen: u64,
    pub top_hits: u64,
    pub confusion: Option<ConfusionMatrix>,
    pub regression: Option<RegressionMetrics>,
}

impl Tally {
    /// Replaces this rank's sums by the whole job's, the same on every rank (so best tracking, plateau schedules
    /// and early stopping agree). One all-reduce of one flat f64 tensor: the sums and counts (exact below 2^53),
    /// then one slot per rank for regression state, zero except this rank's, so the sum is a gather.
    pub fn reduce(&mut self, ranks: &mut Ranks) -> Result<()> {
        let (rank, world) = (ranks.rank(), ranks.world_size());
        if world == 1 {
            return Ok(());
        }
        let mut flat = vec![self.loss_sum, self.seen as f64, self.top_hits as f64];
        if let Some(cm) = &mut self.confusion {
            flat.extend(cm.counts_mut().iter().map(|&c| c as f64));
        }
        let gathered = flat.len();
        let state = self.regression.as_ref().map(RegressionMetrics::state);
        if let Some(s) = &state {
            flat.resize(gathered + world * s.len(), 0.0);
            flat[gathered + rank * s.len()..][..s.len()].copy_from_slice(s);
        }
        ranks.sum(&mut flat).context("reducing the evaluation over the ranks")?;
        self.loss_sum = flat[0];
        self.seen = count(flat[1])?;
        self.top_hits = count(flat[2])?;
        if let Some(cm) = &mut self.confusion {
            for (c, &v) in cm.counts_mut().iter_mut().zip(&flat[3..gathered]) {
                *c = count(v)?;
            }
        }
        if let (Some(rm), Some(s)) = (&mut self.regression, &state) {
            let mut merged = RegressionMetrics::new(rm.width());
            for (r, part) in flat[gathered..].chunks_exact(s.len()).enumerate() {
                let part = RegressionMetrics::from_state(rm.width(), part).with_context(|| format!("rank {r} sent malformed regression sums"))?;
                merged.merge(&part)?;
            }
            *rm = merged;
        }
        Ok(())
    }
}

/// A summed count back from f64, where it is exact.
fn count(v: f64) -> Result<u64> {
    if !(v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53)) {
        bail!("the ranks' summed count {v} is not a whole number: a rank sent malformed evaluation sums");
    }
    Ok(v as u64)
}
