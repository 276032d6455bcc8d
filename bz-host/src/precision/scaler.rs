//! Dynamic loss scaling for fp16 with `torch.amp.GradScaler`'s defaults and semantics: the loss is multiplied by
//! the scale before backward, gradients are divided by it before clipping, a step whose gradients hold an inf or
//! NaN is skipped and halves the scale, and 2000 good steps in a row double it. The state is part of trainer.json,
//! so a resumed run scales exactly as the straight one.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

const INIT_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: i64 = 2000;

/// The scaler's state: the scale, and the optimizer steps since it last changed without an inf.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ScalerState {
    pub scale: f64,
    pub growth_tracker: i64,
}

impl Default for ScalerState {
    fn default() -> Self {
        ScalerState { scale: INIT_SCALE, growth_tracker: 0 }
    }
}

impl ScalerState {
    /// The loss to backpropagate: in f32 before scaling (as GradScaler's f32 scale tensor promotes it), so an fp16
    /// loss does not overflow.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        Ok(loss.f_to_kind(Kind::Float)?.f_mul_scalar(self.scale)?)
    }

    /// Divides the gradients by the scale in place; false when any of them holds an inf or NaN (skip the step).
    pub fn unscale(&self, grads: &mut [Tensor]) -> Result<bool> {
        let _guard = tch::no_grad_guard();
        // The scale is a power of two, so its reciprocal and the products are exact, as in GradScaler.
        let inv = 1.0 / self.scale;
        let mut finite = Vec::with_capacity(grads.len());
        for g in grads.iter_mut().filter(|g| g.defined()) {
            let _ = g.f_mul_scalar_(inv)?;
            finite.push(g.f_isfinite()?.f_all()?);
        }
        if finite.is_empty() {
            return Ok(true);
        }
        // One read back for every parameter.
        Ok(Tensor::f_stack(&finite, 0)?.f_all()?.f_int64_value(&[])? != 0)
    }

    /// Unscales the gradients and updates the scale; true when the optimizer may step (GradScaler's `unscale_`,
    /// `step` and `update` in one).
    pub fn unscale_and_update(&mut self, grads: &mut [Tensor]) -> Result<bool> {
        let finite = self.unscale(grads)?;
        self.update(finite);
        Ok(finite)
    }

    /// After every optimizer step (skipped or not), as `torch._amp_update_scale_`.
    pub fn update(&mut self, grads_finite: bool) {
        if !grads_finite {
            self.scale *= BACKOFF_FACTOR;
            self.growth_tracker = 0;
            return;
        }
        let successful = self.growth_tracker + 1;
        if successful == GROWTH_INTERVAL {
            let grown = self.scale * GROWTH_FACTOR;
            // The scale is an f32 tensor in PyTorch: it does not grow past f32's range.
            if (grown as f32).is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        } else {
            self.growth_tracker = successful;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_backs_off_on_inf_and_grows_after_the_interval() {
        let mut s = ScalerState::default();
        s.update(false);
        assert_eq!(s, ScalerState { scale: 32768.0, growth_tracker: 0 });
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s, ScalerState { scale: 32768.0, growth_tracker: GROWTH_INTERVAL - 1 });
        s.update(true);
        assert_eq!(s, ScalerState { scale: 65536.0, growth_tracker: 0 });
        let mut top = ScalerState { scale: 2f64.powi(127), growth_tracker: GROWTH_INTERVAL - 1 };
        top.update(true);
        assert_eq!(top.scale, 2f64.powi(127), "stays within f32");
    }

    #[test]
    fn unscale_divides_and_finds_infs() {
        let s = ScalerState::default();
        let mut grads = vec![Tensor::from_slice(&[65536.0f32, -131072.0]), Tensor::new()];
        assert!(s.unscale(&mut grads).unwrap());
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, -2.0]);
        let mut grads = vec![Tensor::from_slice(&[1.0f32]), Tensor::from_slice(&[f32::NAN])];
        assert!(!s.unscale(&mut grads).unwrap());
        let loss = Tensor::from(3.0f32).to_kind(Kind::Half);
        let scaled = s.scale_loss(&loss).unwrap();
        assert_eq!((scaled.kind(), scaled.double_value(&[])), (Kind::Float, 196608.0));
    }
}
