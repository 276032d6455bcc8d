//! Optimizers whose state bz owns.
//!
//! tch's optimizers are libtorch C++ objects that cannot be serialised (tch-rs #360), which rules out exact
//! resume. These follow PyTorch's update rules op for op (`torch.optim.SGD`, `Adam`, `AdamW`, `RMSprop`, the
//! single-tensor "for-loop" path) with every state buffer a named tensor that the checkpoint saves and restores.

use crate::config::{AdamOptions, OptimizerConfig, OptimizerKind, RmspropOptions, SgdOptions};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use tch::Tensor;

pub struct Optimizer {
    cfg: OptimizerConfig,
    weight_decay: f64,
    params: Vec<Param>,
    /// The same tensors as `params`, in order: the inputs of `run_backward`.
    tensors: Vec<Tensor>,
    /// Optimizer steps taken (Adam's bias correction uses it).
    pub steps: i64,
    lr: f64,
}

struct Param {
    name: String,
    tensor: Tensor,
    /// Lazily created like PyTorch's, so a fresh optimizer and a restored one behave the same.
    state: HashMap<&'static str, Tensor>,
}

impl Optimizer {
    pub fn new(cfg: &OptimizerConfig, params: Vec<(String, Tensor)>) -> Optimizer {
        let weight_decay = cfg.weight_decay.unwrap_or(if matches!(cfg.kind, OptimizerKind::Adamw(_)) { 0.01 } else { 0.0 });
        let tensors = params.iter().map(|(_, t)| t.shallow_clone()).collect();
        let params = params.into_iter().map(|(name, tensor)| Param { name, tensor, state: HashMap::new() }).collect();
        Optimizer { cfg: cfg.clone(), weight_decay, params, tensors, steps: 0, lr: cfg.lr }
    }

    /// The parameters with their names, in the order of `backward`'s gradients.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.tensor))
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Backpropagates `loss` and adds the gradients to `acc` (one slot per parameter; undefined = no gradient yet).
    ///
    /// Gradients are returned by the autograd engine instead of accumulated into `.grad`, so no step pays for
    /// zeroing them (two ops per parameter through tch), as PyTorch's `zero_grad(set_to_none=True)` avoids too.
    pub fn backward(&self, loss: &Tensor, acc: &mut Vec<Tensor>) -> Result<()> {
        let grads = Tensor::f_run_backward(&[loss], &self.tensors, false, false)?;
        if acc.is_empty() {
            *acc = grads;
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        for (a, g) in acc.iter_mut().zip(grads) {
            if !g.defined() {
                continue;
            }
            if a.defined() {
                let _ = a.f_add_(&g)?;
            } else {
                *a = g;
            }
        }
        Ok(())
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm` (PyTorch's `clip_grad_norm_`).
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let norms: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(|g| g.f_norm()).collect::<Result<_, _>>()?;
        if norms.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut().filter(|g| g.defined()) {
                let _ = g.f_mul_scalar_(coef)?;
            }
        }
        Ok(total)
    }

    /// Clamps every gradient element to [-v, v] (PyTorch's `clip_grad_value_`).
    pub fn clip_grad_value(grads: &mut [Tensor], v: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for g in grads.iter_mut().filter(|g| g.defined()) {
            let _ = g.f_clamp_(-v, v)?;
        }
        Ok(())
    }

    /// Applies one update with `grads` (from [`Optimizer::backward`]).
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let (cfg, lr, wd, steps) = (&self.cfg, self.lr, self.weight_decay, self.steps);
        // -lr as a 0-dim tensor folds the scaling into one fused in-place op per parameter (tch's add_ has no alpha).
        // In the parameters' dtype: a mixed-dtype operand would send every update through a slower casting loop.
        let (neg_lr_f32, neg_lr_f64) = (Tensor::from(-lr as f32), Tensor::from(-lr));
        for (p, grad) in self.params.iter_mut().zip(grads) {
            if !grad.defined() {
                continue;
            }
            let grad = grad.shallow_clone();
            let neg_lr = if p.tensor.kind() == tch::Kind::Double { &neg_lr_f64 } else { &neg_lr_f32 };
            match &cfg.kind {
                OptimizerKind::Sgd(o) => sgd(p, grad, o, neg_lr, wd),
                OptimizerKind::Adam(o) => adam(p, grad, o, false, lr, wd, steps),
                OptimizerKind::Adamw(o) => adam(p, grad, o, true, lr, wd, steps),
                OptimizerKind::Rmsprop(o) => rmsprop(p, grad, o, lr, neg_lr, wd),
            }
            .with_context(|| format!("optimizer step failed for parameter {}", p.name))?;
        }
        Ok(())
    }

    /// Every state buffer as `<param>/<buffer>`, for the checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            let mut names: Vec<_> = p.state.keys().collect();
            names.sort();
            for n in names {
                out.push((format!("{}/{}", p.name, n), p.state[n].shallow_clone()));
            }
        }
        out
    }

    /// Restores buffers saved by [`Optimizer::state_tensors`]; unknown names are an error (a different model).
    pub fn load_state_tensors(&mut self, tensors: Vec<(String, Tensor)>, steps: i64) -> Result<()> {
        let device = self.params.first().map(|p| p.tensor.device());
        for (key, t) in tensors {
            let Some((pname, buf)) = key.rsplit_once('/') else { bail!("optimizer state: bad entry {key:?}") };
            let Some(p) = self.params.iter_mut().find(|p| p.name == pname) else {
                bail!("optimizer state has a buffer for parameter {pname:?}, which the model does not have")
            };
            let Some(name) = BUFFERS.iter().find(|b| **b == buf) else { bail!("optimizer state: unknown buffer {buf:?}") };
            let t = match device {
                Some(d) => t.f_to_device(d)?,
                None => t,
            };
            if t.size() != p.tensor.size() {
                bail!("optimizer state {key:?} has shape {:?}, the parameter {:?}", t.size(), p.tensor.size());
            }
            p.state.insert(name, t);
        }
        self.steps = steps;
        Ok(())
    }
}

const BUFFERS: [&str; 5] = ["momentum_buffer", "exp_avg", "exp_avg_sq", "square_avg", "grad_avg"];

/// A state buffer, created from `init` on first use.
fn buffer<'a>(p: &'a mut Param, name: &'static str, init: impl FnOnce(&Tensor) -> Result<Tensor, tch::TchError>) -> Result<&'a mut Tensor> {
    if !p.state.contains_key(name) {
        let t = init(&p.tensor)?;
        p.state.insert(name, t);
    }
    p.state.get_mut(name).context("optimizer buffer missing")
}

fn zeros(t: &Tensor) -> Result<Tensor, tch::TchError> {
    t.f_zeros_like()
}

fn sgd(p: &mut Param, grad: Tensor, cfg: &SgdOptions, neg_lr: &Tensor, wd: f64) -> Result<()> {
    let mut d_p = if wd != 0.0 { grad.f_add(&p.tensor.f_mul_scalar(wd)?)? } else { grad };
    if cfg.momentum != 0.0 {
        let fresh = !p.state.contains_key("momentum_buffer");
        // PyTorch starts the buffer as a copy of the first update; a view would alias the gradient.
        let buf = buffer(p, "momentum_buffer", |_| d_p.f_detach_copy())?;
        if !fresh {
            let _ = buf.f_mul_scalar_(cfg.momentum)?;
            if cfg.dampening == 0.0 {
                let _ = buf.f_add_(&d_p)?;
            } else {
                let _ = buf.f_add_(&d_p.f_mul_scalar(1.0 - cfg.dampening)?)?;
            }
        }
        d_p = if cfg.nesterov { d_p.f_add(&buf.f_mul_scalar(cfg.momentum)?)? } else { buf.shallow_clone() };
    }
    let _ = p.tensor.f_addcmul_(&d_p, neg_lr)?;
    Ok(())
}

/// `decoupled`: AdamW's weight decay, applied to the weights instead of the gradient.
fn adam(p: &mut Param, grad: Tensor, cfg: &AdamOptions, decoupled: bool, lr: f64, wd: f64, step: i64) -> Result<()> {
    let [b1, b2] = cfg.betas;
    let grad = if decoupled {
        if wd != 0.0 {
            let _ = p.tensor.f_mul_scalar_(1.0 - lr * wd)?;
        }
        grad
    } else if wd != 0.0 {
        grad.f_add(&p.tensor.f_mul_scalar(wd)?)?
    } else {
        grad
    };
    let exp_avg = buffer(p, "exp_avg", zeros)?;
    let _ = exp_avg.f_lerp_(&grad, 1.0 - b1)?;
    let exp_avg = exp_avg.shallow_clone();
    let exp_avg_sq = buffer(p, "exp_avg_sq", zeros)?;
    let _ = exp_avg_sq.f_lerp_(&grad.f_mul(&grad)?, 1.0 - b2)?;
    let bc1 = 1.0 - b1.powi(step as i32);
    let bc2 = 1.0 - b2.powi(step as i32);
    let step_size = lr / bc1;
    // p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps), with the constants folded into the denominator so the
    // update is sqrt, two scalar ops and one addcdiv.
    let mut denom = exp_avg_sq.f_sqrt()?;
    let _ = denom.f_mul_scalar_(-1.0 / (bc2.sqrt() * step_size))?;
    let _ = denom.f_add_scalar_(-cfg.eps / step_size)?;
    let _ = p.tensor.f_addcdiv_(&exp_avg, &denom)?;
    Ok(())
}

fn rmsprop(p: &mut Param, grad: Tensor, cfg: &RmspropOptions, lr: f64, neg_lr: &Tensor, wd: f64) -> Result<()> {
    let grad = if wd != 0.0 { grad.f_add(&p.tensor.f_mul_scalar(wd)?)? } else { grad };
    let square_avg = buffer(p, "square_avg", zeros)?;
    let _ = square_avg.f_mul_scalar_(cfg.alpha)?;
    let _ = square_avg.f_addcmul_(&grad.f_mul_scalar(1.0 - cfg.alpha)?, &grad)?;
    let square_avg = square_avg.shallow_clone();
    let mut avg = if cfg.centered {
        let grad_avg = buffer(p, "grad_avg", zeros)?;
        let _ = grad_avg.f_lerp_(&grad, 1.0 - cfg.alpha)?;
        square_avg.f_sub(&grad_avg.f_mul(grad_avg)?)?.f_sqrt()?
    } else {
        square_avg.f_sqrt()?
    };
    let _ = avg.f_add_scalar_(cfg.eps)?;
    if cfg.momentum > 0.0 {
        let buf = buffer(p, "momentum_buffer", zeros)?;
        let _ = buf.f_mul_scalar_(cfg.momentum)?;
        let _ = buf.f_addcdiv_(&grad, &avg)?;
        let buf = buf.shallow_clone();
        let _ = p.tensor.f_addcmul_(&buf, neg_lr)?;
    } else {
        let _ = avg.f_mul_scalar_(-1.0 / lr)?;
        let _ = p.tensor.f_addcdiv_(&grad, &avg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Minimises f(x) = sum((x - 3)^2) from x = 0; each optimizer must get close to 3.
    fn converges(cfg: OptimizerConfig, steps: usize) -> f64 {
        let x = Tensor::zeros([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(&cfg, vec![("x".into(), x.shallow_clone())]);
        for _ in 0..steps {
            let loss = (&x - 3.0).square().sum(Kind::Float);
            let mut grads = vec![];
            opt.backward(&loss, &mut grads).unwrap();
            opt.step(&grads).unwrap();
        }
        (&x - 3.0).abs().max().double_value(&[])
    }

    fn with_lr(kind: OptimizerKind, lr: f64) -> OptimizerConfig {
        OptimizerConfig { lr, ..OptimizerConfig::new(kind) }
    }

    #[test]
    fn every_optimizer_converges() {
        let cases = [
            with_lr(OptimizerKind::Sgd(SgdOptions::default()), 0.1),
            with_lr(OptimizerKind::Sgd(SgdOptions { momentum: 0.9, nesterov: true, ..SgdOptions::default() }), 0.05),
            with_lr(OptimizerKind::Sgd(SgdOptions { momentum: 0.9, dampening: 0.1, ..SgdOptions::default() }), 0.05),
            with_lr(OptimizerKind::Adam(AdamOptions::default()), 0.1),
            OptimizerConfig { weight_decay: Some(0.0), ..with_lr(OptimizerKind::Adamw(AdamOptions::default()), 0.1) },
            with_lr(OptimizerKind::Rmsprop(RmspropOptions::default()), 0.01),
            with_lr(OptimizerKind::Rmsprop(RmspropOptions { momentum: 0.5, centered: true, ..RmspropOptions::default() }), 0.01),
        ];
        for c in cases {
            let err = converges(c.clone(), 500);
            assert!(err < 1e-2, "{:?} ended {err} away from the optimum", c.kind);
        }
    }

    #[test]
    fn sgd_matches_pytorch_first_steps() {
        // torch.optim.SGD([x], lr=0.1, momentum=0.9) on f = x^2 from x = 1:
        // step 1: g = 2, buf = 2, x = 1 - 0.2 = 0.8; step 2: g = 1.6, buf = 0.9*2 + 1.6 = 3.4, x = 0.8 - 0.34 = 0.46
        let x = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let cfg = with_lr(OptimizerKind::Sgd(SgdOptions { momentum: 0.9, ..SgdOptions::default() }), 0.1);
        let mut opt = Optimizer::new(&cfg, vec![("x".into(), x.shallow_clone())]);
        let mut seen = vec![];
        for _ in 0..2 {
            let mut grads = vec![];
            opt.backward(&x.square().sum(Kind::Double), &mut grads).unwrap();
            opt.step(&grads).unwrap();
            seen.push(x.double_value(&[0]));
        }
        assert!((seen[0] - 0.8).abs() < 1e-12 && (seen[1] - 0.46).abs() < 1e-12, "{seen:?}");
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // With bias correction Adam's first update is lr * g / (|g| + eps) = lr * sign(g).
        let x = Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true);
        let cfg = with_lr(OptimizerKind::Adam(AdamOptions::default()), 0.01);
        let mut opt = Optimizer::new(&cfg, vec![("x".into(), x.shallow_clone())]);
        let mut grads = vec![];
        opt.backward(&x.square().sum(Kind::Double), &mut grads).unwrap();
        opt.step(&grads).unwrap();
        assert!((x.double_value(&[0]) - 0.99).abs() < 1e-9);
        assert!((x.double_value(&[1]) + 1.99).abs() < 1e-9);
    }

    #[test]
    fn state_round_trips() {
        let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let cfg = OptimizerConfig::default();
        let mut opt = Optimizer::new(&cfg, vec![("x".into(), x.shallow_clone())]);
        let mut grads = vec![];
        opt.backward(&x.square().sum(Kind::Float), &mut grads).unwrap();
        opt.step(&grads).unwrap();
        let saved: Vec<(String, Tensor)> = opt.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect();
        assert_eq!(saved.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), vec!["x/exp_avg", "x/exp_avg_sq"]);
        let y = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut other = Optimizer::new(&cfg, vec![("y".into(), y)]);
        assert!(other.load_state_tensors(saved, 1).is_err(), "a buffer for an unknown parameter must be refused");
    }
}
