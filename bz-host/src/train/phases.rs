//! Seconds per phase of one epoch, for the profiler (EPOCH_END's `phases_s`).

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Copy)]
pub enum Phase {
    Data,
    Forward,
    Backward,
    Metrics,
    Optimizer,
    Validation,
    Checkpoint,
    /// Data-parallel collectives: averaging gradients, broadcasting buffers.
    AllReduce,
}

/// On CUDA, kernels run asynchronously, so the time of a phase shows up in the next one that waits for the
/// device (the loss read in `forward`).
#[derive(Default)]
pub struct Phases([f64; 8]);

impl Phases {
    const NAMES: [&'static str; 8] = ["data", "forward", "backward", "train_metrics", "optimizer", "validation", "checkpoint", "allreduce"];

    /// Adds the time since `since` to `phase` and returns now, for the next lap.
    pub fn lap(&mut self, since: Instant, phase: Phase) -> Instant {
        let now = Instant::now();
        self.0[phase as usize] += (now - since).as_secs_f64();
        now
    }

    pub fn seconds(&self) -> BTreeMap<String, f64> {
        Self::NAMES.iter().zip(self.0).map(|(n, v)| (n.to_string(), v)).collect()
    }
}
