//! Learning-rate schedules. tch has none, so bz computes the rate for every optimizer step itself.
//!
//! All schedules but `plateau` are pure functions of the step, so resuming needs only the step count;
//! `plateau` carries a little state that goes into the checkpoint.

use crate::config::{Mode, OneCycleOptions, SchedulerConfig, SchedulerKind};
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: SchedulerConfig,
    base_lr: f64,
    warmup: usize,
    total_steps: usize,
    steps_per_epoch: usize,
    pub plateau: PlateauState,
}

/// ReduceLROnPlateau's state (relative threshold, as PyTorch's default), saved with the checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PlateauState {
    pub scale: f64,
    pub best: Option<f64>,
    pub bad_epochs: usize,
}

impl Schedule {
    /// `steps_per_epoch` counts optimizer steps (after gradient accumulation).
    pub fn new(cfg: &SchedulerConfig, base_lr: f64, epochs: usize, steps_per_epoch: usize) -> Schedule {
        let steps_per_epoch = steps_per_epoch.max(1);
        let warmup = if cfg.warmup_steps > 0 { cfg.warmup_steps } else { (cfg.warmup_epochs * steps_per_epoch as f64).round() as usize };
        Schedule {
            cfg: cfg.clone(),
            base_lr,
            warmup,
            total_steps: epochs * steps_per_epoch,
            steps_per_epoch,
            plateau: PlateauState { scale: 1.0, best: None, bad_epochs: 0 },
        }
    }

    /// The rate for optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f64 / self.warmup as f64;
        }
        let t = step - self.warmup;
        let span = self.total_steps.saturating_sub(self.warmup).max(1);
        let base = self.base_lr;
        match &self.cfg.kind {
            SchedulerKind::Constant => base,
            SchedulerKind::Step(s) => {
                let epoch = t / self.steps_per_epoch;
                base * s.gamma.powi((epoch / s.step_size.max(1)) as i32)
            }
            SchedulerKind::Cosine(c) => {
                let p = (t as f64 / span as f64).min(1.0);
                c.min_lr + (base - c.min_lr) * 0.5 * (1.0 + (PI * p).cos())
            }
            SchedulerKind::OneCycle(o) => self.one_cycle(o, t, span),
            SchedulerKind::Plateau(p) => (base * self.plateau.scale).max(p.min_lr.min(base)),
        }
    }

    /// PyTorch's OneCycleLR (anneal_strategy = "cos", three_phase = false).
    fn one_cycle(&self, o: &OneCycleOptions, t: usize, total: usize) -> f64 {
        let max_lr = self.base_lr;
        let initial = max_lr / o.div_factor;
        let min_lr = initial / o.final_div_factor;
        let up_end = o.pct_start * total as f64 - 1.0;
        let down_end = total as f64 - 1.0;
        let cos = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct.clamp(0.0, 1.0)).cos() + 1.0);
        let t = t as f64;
        if t <= up_end {
            cos(initial, max_lr, if up_end > 0.0 { t / up_end } else { 1.0 })
        } else {
            let len = down_end - up_end;
            cos(max_lr, min_lr, if len > 0.0 { (t - up_end) / len } else { 1.0 })
        }
    }

    /// Feeds an epoch's monitored value to `plateau`; returns true when the rate was reduced.
    pub fn observe(&mut self, value: f64) -> bool {
        let SchedulerKind::Plateau(cfg) = &self.cfg.kind else { return false };
        if !value.is_finite() {
            return false;
        }
        let mode = cfg.mode.unwrap_or_else(|| crate::config::default_mode(&cfg.monitor));
        let improved = match self.plateau.best {
            None => true,
            Some(best) => match mode {
                Mode::Min => value < best * (1.0 - cfg.threshold),
                Mode::Max => value > best * (1.0 + cfg.threshold),
            },
        };
        if improved {
            self.plateau.best = Some(value);
            self.plateau.bad_epochs = 0;
            return false;
        }
        self.plateau.bad_epochs += 1;
        if self.plateau.bad_epochs > cfg.patience {
            let floor = if self.base_lr > 0.0 { cfg.min_lr / self.base_lr } else { 0.0 };
            self.plateau.scale = (self.plateau.scale * cfg.factor).max(floor);
            self.plateau.bad_epochs = 0;
            return true;
        }
        false
    }

    pub fn monitor(&self) -> Option<&str> {
        self.cfg.plateau_monitor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{CosineOptions, PlateauOptions, StepOptions};

    fn cfg(kind: SchedulerKind) -> SchedulerConfig {
        SchedulerConfig::new(kind)
    }

    #[test]
    fn warmup_ramps_linearly_then_hands_over() {
        let c = SchedulerConfig { warmup_steps: 4, ..cfg(SchedulerKind::Constant) };
        let s = Schedule::new(&c, 1.0, 2, 10);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn step_decays_every_step_size_epochs() {
        let c = cfg(SchedulerKind::Step(StepOptions { step_size: 2, gamma: 0.5 }));
        let s = Schedule::new(&c, 1.0, 6, 10);
        assert_eq!(s.lr(0), 1.0);
        assert_eq!(s.lr(19), 1.0);
        assert_eq!(s.lr(20), 0.5);
        assert_eq!(s.lr(45), 0.25);
    }

    #[test]
    fn cosine_runs_from_base_to_min() {
        let c = cfg(SchedulerKind::Cosine(CosineOptions { min_lr: 0.1 }));
        let s = Schedule::new(&c, 1.1, 1, 100);
        assert!((s.lr(0) - 1.1).abs() < 1e-12);
        assert!((s.lr(50) - 0.6).abs() < 1e-12);
        assert!((s.lr(100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn one_cycle_matches_pytorch_shape() {
        // PyTorch OneCycleLR(max_lr=1, total_steps=100, pct_start=0.3): starts at 1/25, peaks at step 29
        // (pct_start * total - 1), ends at 1/25/1e4.
        let s = Schedule::new(&cfg(SchedulerKind::OneCycle(OneCycleOptions::default())), 1.0, 1, 100);
        assert!((s.lr(0) - 0.04).abs() < 1e-12);
        assert!((s.lr(29) - 1.0).abs() < 1e-12);
        assert!((s.lr(99) - 0.04e-4).abs() < 1e-15);
        assert!(s.lr(10) < s.lr(20) && s.lr(40) > s.lr(60));
    }

    #[test]
    fn plateau_reduces_after_patience() {
        let c = cfg(SchedulerKind::Plateau(PlateauOptions { patience: 1, factor: 0.5, ..PlateauOptions::default() }));
        let mut s = Schedule::new(&c, 1.0, 10, 10);
        assert!(!s.observe(1.0));
        assert!(!s.observe(1.0)); // first bad epoch: within patience
        assert!(s.observe(1.0)); // second: reduce
        assert_eq!(s.lr(0), 0.5);
        assert!(!s.observe(0.5)); // improvement resets
        assert_eq!(s.plateau.bad_epochs, 0);
    }
}
