//! Data-parallel training: this process's part in a job of `WORLD_SIZE` ranks (torchrun's env:// contract, or
//! `bz train --nproc N`), on c10d's Gloo process group (`crate::dist`), with PyTorch DDP's semantics:
//!
//! - rank 0's weights and buffers go to every rank at the start, and its buffers (batch-norm statistics) again
//!   after every optimizer step (DDP's `broadcast_buffers`; batch norm normalises with each rank's own batch);
//! - each rank trains on its shard of the epoch's seeded permutation (DistributedSampler: the order is padded by
//!   wrapping around to a multiple of the world size, then rank r takes positions r, r + W, …), `batch_size` per
//!   rank; so step s of W ranks sees exactly the samples of step s of one process with W × batch_size;
//! - gradients are summed in flat buckets and divided by W before clipping and the optimizer step;
//! - stop requests, Ctrl-C and a non-finite loss on any rank stop every rank at the same step.
//!
//! A single process (no `WORLD_SIZE`, or 1) has no group, and every method here is then free.

use crate::dist::ProcessGroup;
use anyhow::{Context, Result};
use tch::{nn, Kind, Tensor};

/// Gradients are summed in buckets of at most this many bytes: one collective per bucket, as DDP's 25 MB buckets.
const BUCKET_BYTES: i64 = 25 << 20;

/// This process's place in the job.
pub struct Ranks {
    group: Option<ProcessGroup>,
}

impl Ranks {
    /// A process alone.
    pub fn single() -> Ranks {
        Ranks { group: None }
    }

    /// Joins the job the environment describes (`WORLD_SIZE` > 1), else a process alone.
    pub fn from_env() -> Result<Ranks> {
        match std::env::var("WORLD_SIZE").ok().and_then(|w| w.trim().parse::<u32>().ok()) {
            Some(w) if w > 1 => Ok(Ranks { group: Some(ProcessGroup::from_env().context("cannot join the data-parallel job")?) }),
            _ => Ok(Ranks::single()),
        }
    }

    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank() as usize)
    }

    pub fn world_size(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size() as usize)
    }

    /// Rank 0 writes the run directory and runs the plugins; the others only train.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// This rank's samples of an epoch's order: the order padded by wrapping to a multiple of the world size, then
    /// every world-size-th position from this rank's.
    pub fn shard(&self, order: Vec<i64>) -> Vec<i64> {
        shard(order, self.rank(), self.world_size())
    }

    /// The batches of an evaluation pass (validation, test) this rank evaluates, of `batches`: a contiguous run of
    /// whole batches, the runs of ranks 0, 1, … in order and differing in length by at most one. Every batch of a
    /// single process's pass is evaluated by exactly one rank, unchanged (the last, short one included), so no
    /// sample is dropped or counted twice, and each batch's outputs are the single process's.
    pub fn batch_share(&self, batches: usize) -> std::ops::Range<usize> {
        share(batches, self.rank(), self.world_size())
    }

    /// The ranks an evaluation pass (validation, test) is shared across: all of them, or for a TorchScript model
    /// this process alone (`alone`), because a module's buffers (batch-norm statistics) are not variables that
    /// [`Ranks::broadcast_buffers`] reaches, so ranks' models may differ there and each evaluates the whole split.
    pub fn for_evaluation<'a>(&'a mut self, torchscript: bool, alone: &'a mut Ranks) -> &'a mut Ranks {
        if torchscript {
            alone
        } else {
            self
        }
    }

    /// How many samples each rank trains on per epoch, of `n`.
    pub fn shard_len(&self, n: usize) -> usize {
        n.div_ceil(self.world_size())
    }

    /// A handle on the job's process group for the model's synchronised batch norms; none in a single process.
    pub fn share_group(&self) -> Result<Option<crate::dist::ProcessGroup>> {
        self.group.as_ref().map(|g| g.share().context("cannot share the process group with the model")).transpose()
    }

    /// Rank 0's variables (weights and buffers) on every rank, in name order.
    pub fn broadcast_variables(&mut self, vs: &nn::VarStore) -> Result<()> {
        self.broadcast_where(vs, |_| true)
    }

    /// Rank 0's buffers (variables without gradients, e.g. batch-norm statistics) on every rank.
    pub fn broadcast_buffers(&mut self, vs: &nn::VarStore) -> Result<()> {
        self.broadcast_where(vs, |t| !t.requires_grad())
    }

    fn broadcast_where(&mut self, vs: &nn::VarStore, pick: impl Fn(&Tensor) -> bool) -> Result<()> {
        let Some(group) = &mut self.group else { return Ok(()) };
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| pick(t)).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let _guard = tch::no_grad_guard();
        for (name, t) in vars.iter_mut() {
            group.broadcast(t, 0).with_context(|| format!("broadcasting {name} from rank 0"))?;
        }
        Ok(())
    }

    /// Averages gradients over the ranks, in place (summed in flat buckets, divided by the world size), and
    /// returns, for each of `flags`, whether any rank raised it: the flags ride in the gradients' last bucket, so a
    /// step costs one collective per bucket and nothing more. A gradient missing on this rank (`grads` shorter than
    /// `params`, or undefined: a rank whose loss was not finite skipped backward) counts as zeros, so every rank
    /// sends buckets of the same layout. A single process returns `flags` as they are.
    pub fn average_gradients<const N: usize>(&mut self, grads: &mut Vec<Tensor>, params: &[&Tensor], flags: [bool; N]) -> Result<[bool; N]> {
        let world = self.world_size();
        let Some(group) = &mut self.group else { return Ok(flags) };
        let _guard = tch::no_grad_guard();
        grads.resize_with(params.len(), Tensor::new);
        for (g, p) in grads.iter_mut().zip(params) {
            if !g.defined() {
                *g = p.f_zeros_like()?;
            }
        }
        let all: Vec<usize> = (0..grads.len()).collect();
        let mut buckets = buckets(&all, grads);
        if buckets.is_empty() {
            buckets.push(Vec::new());
        }
        let last = buckets.len() - 1;
        let mut agreed = flags;
        for (b, bucket) in buckets.iter().enumerate() {
            let mut flat: Vec<Tensor> = bucket.iter().map(|&i| grads[i].f_flatten(0, -1)).collect::<Result<_, _>>()?;
            let kind = flat.first().map_or(Kind::Float, Tensor::kind);
            if b == last {
                let marks: Vec<f64> = flags.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
                flat.push(Tensor::f_from_slice(&marks)?.f_to_kind(kind)?.f_to_device(params.first().map_or(tch::Device::Cpu, |p| p.device()))?);
            }
            let mut sum = [Tensor::f_cat(&flat, 0)?];
            group.all_reduce_sum(&mut sum).context("averaging gradients over the ranks")?;
            let mut offset = 0;
            for &i in bucket {
                let n = grads[i].numel() as i64;
                let part = sum[0].f_narrow(0, offset, n)?.f_div_scalar(world as f64)?.f_view_as(&grads[i])?;
                grads[i].f_copy_(&part)?;
                offset += n;
            }
            if b == last {
                let marks = Vec::<f64>::try_from(&sum[0].f_narrow(0, offset, N as i64)?.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?)?;
                for (a, m) in agreed.iter_mut().zip(marks) {
                    *a = m > 0.0;
                }
            }
        }
        Ok(agreed)
    }

    /// Sums `values` over the ranks, in place (f64, exact for counts below 2^53).
    pub fn sum(&mut self, values: &mut [f64]) -> Result<()> {
        let Some(group) = &mut self.group else { return Ok(()) };
        let mut t = [Tensor::f_from_slice(values)?.f_to_kind(Kind::Double)?];
        group.all_reduce_sum(&mut t).context("summing over the ranks")?;
        let out = Vec::<f64>::try_from(&t[0])?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Sums counts over the ranks, in place, in one collective (through f64: exact below 2^53).
    pub fn sum_counts(&mut self, counts: &mut [&mut [u64]]) -> Result<()> {
        if self.group.is_none() {
            return Ok(());
        }
        let mut flat: Vec<f64> = counts.iter().flat_map(|c| c.iter().map(|&v| v as f64)).collect();
        self.sum(&mut flat)?;
        for (c, v) in counts.iter_mut().flat_map(|c| c.iter_mut()).zip(flat) {
            if !(v >= 0.0 && v.fract() == 0.0) {
                anyhow::bail!("the ranks' summed count {v} is not a whole number: a rank sent malformed counts");
            }
            *c = v as u64;
        }
        Ok(())
    }

    /// For each flag, whether any rank raised it.
    pub fn any<const N: usize>(&mut self, flags: [bool; N]) -> Result<[bool; N]> {
        if self.group.is_none() {
            return Ok(flags);
        }
        let mut v = flags.map(|f| if f { 1.0 } else { 0.0 });
        self.sum(&mut v)?;
        Ok(v.map(|x| x > 0.0))
    }

    /// libtorch's seed for one batch: the run's, mixed with the rank's so that dropout masks differ across ranks
    /// (a single process keeps exactly the seed it always had).
    pub fn seed(&self, seed: u64) -> u64 {
        match self.rank() {
            0 => seed,
            r => seed ^ (r as u64).wrapping_mul(0xA24B_AED4_963E_E407),
        }
    }
}

/// Rank `rank` of `world`'s part of `order` (see [`Ranks::shard`]).
fn shard(order: Vec<i64>, rank: usize, world: usize) -> Vec<i64> {
    if world == 1 || order.is_empty() {
        return order;
    }
    let per_rank = order.len().div_ceil(world);
    (0..per_rank).map(|i| order[(i * world + rank) % order.len()]).collect()
}

/// Rank `rank` of `world`'s run of `n` items (see [`Ranks::batch_share`]).
fn share(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    n * rank / world..n * (rank + 1) / world
}

/// Gradient indices grouped into buckets of at most [`BUCKET_BYTES`], in order, one kind and device per bucket.
fn buckets(defined: &[usize], grads: &[Tensor]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &i in defined {
        let size = grads[i].numel() as i64 * grads[i].kind().elt_size_in_bytes() as i64;
        let same = out.last().and_then(|b| b.first()).is_some_and(|&j| grads[j].kind() == grads[i].kind() && grads[j].device() == grads[i].device());
        if out.is_empty() || !same || bytes + size > BUCKET_BYTES {
            out.push(Vec::new());
            bytes = 0;
        }
        out.last_mut().expect("pushed above").push(i);
        bytes += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_epoch_like_distributed_sampler() {
        let order: Vec<i64> = (0..10).rev().collect();
        assert_eq!(Ranks::single().shard(order.clone()), order);
        // Positions 0, 2, 4, … and 1, 3, 5, …: together every sample once.
        assert_eq!(shard(order.clone(), 0, 2), vec![9, 7, 5, 3, 1]);
        assert_eq!(shard(order.clone(), 1, 2), vec![8, 6, 4, 2, 0]);
        // 7 samples on 3 ranks: padded to 9 by wrapping around (positions 7 and 8 are samples 0 and 1 again).
        let seven = order[..7].to_vec();
        assert_eq!(shard(seven.clone(), 0, 3), vec![9, 6, 3]);
        assert_eq!(shard(seven.clone(), 1, 3), vec![8, 5, 9]);
        assert_eq!(shard(seven, 2, 3), vec![7, 4, 8]);
    }

    #[test]
    fn evaluation_shares_are_contiguous_runs_covering_every_batch_once() {
        assert_eq!(Ranks::single().batch_share(7), 0..7);
        assert_eq!([0, 1].map(|r| share(7, r, 2)), [0..3, 3..7]);
        assert_eq!([0, 1, 2].map(|r| share(8, r, 3)), [0..2, 2..5, 5..8]);
        // Fewer batches than ranks: some ranks evaluate nothing and add zeros.
        assert_eq!([0, 1, 2].map(|r| share(2, r, 3)), [0..0, 0..1, 1..2]);
        for (n, world) in [(0, 2), (1, 4), (17, 5), (100, 7)] {
            let lens: Vec<usize> = (0..world).map(|r| share(n, r, world).len()).collect();
            assert_eq!(lens.iter().sum::<usize>(), n);
            assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{lens:?}");
            assert!((1..world).all(|r| share(n, r - 1, world).end == share(n, r, world).start));
        }
    }

    #[test]
    fn buckets_split_by_size_and_kind() {
        let g = vec![
            Tensor::zeros([4], (Kind::Float, tch::Device::Cpu)),
            Tensor::zeros([4], (Kind::Double, tch::Device::Cpu)),
            Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)),
        ];
        assert_eq!(buckets(&[0, 1, 2], &g), vec![vec![0], vec![1, 2]]);
    }
}
