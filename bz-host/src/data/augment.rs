//! `[data.augment]`: random crops, flips, rotations, shifts and colour jitter of training batches, done on the
//! batch tensor (one `affine_grid` + `grid_sample` for the geometry) so that augmentation costs a few tensor ops per
//! step and no per-image work on the host.
//!
//! Every draw comes from a generator seeded by (run seed, epoch, sample index): the same seed gives the same
//! augmented pixels, and a resumed run augments each sample of an epoch exactly as the uninterrupted run did.

use super::{Normalization, Standardizer};
use crate::config::Augment;
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Applies a config's augmentation to batches of standardised images `[N, C, H, W]`.
pub struct Augmenter {
    cfg: Augment,
    seed: u64,
    /// The images are augmented as pixels in `[0, 1]` (where brightness, contrast and zero fill mean what they
    /// say), so a standardised batch is taken back to pixels first and standardised again after.
    standardizer: Option<Standardizer>,
}

/// One sample's draws.
struct Draw {
    /// The 2x3 affine map from output to input coordinates (`affine_grid`'s theta).
    theta: [f32; 6],
    brightness: f32,
    contrast: f32,
}

impl Augmenter {
    /// `None` when the config changes nothing.
    pub fn new(cfg: &Augment, seed: u64, normalization: Option<&Normalization>, device: Device) -> Result<Option<Augmenter>> {
        let active = cfg.flip || cfg.crop_scale.is_some() || cfg.rotation > 0.0 || cfg.translate > 0.0 || cfg.brightness > 0.0 || cfg.contrast > 0.0;
        if !active {
            return Ok(None);
        }
        let standardizer = normalization.map(|n| n.standardizer(device)).transpose()?;
        Ok(Some(Augmenter { cfg: cfg.clone(), seed, standardizer }))
    }

    /// Augments a batch whose samples are `ids` (their indices in the training split) in 0-based `epoch`.
    pub fn apply(&self, x: &Tensor, ids: &[i64], epoch: usize) -> Result<Tensor> {
        let draws: Vec<Draw> = ids.iter().map(|&id| self.draw(epoch, id)).collect();
        let device = x.device();
        let mut px = match &self.standardizer {
            Some(s) => s.undo(x)?,
            None => x.shallow_clone(),
        };
        if self.geometric() {
            let theta: Vec<f32> = draws.iter().flat_map(|d| d.theta).collect();
            let theta = Tensor::f_from_slice(&theta)?.f_reshape([ids.len() as i64, 2, 3])?.f_to_device(device)?;
            let grid = Tensor::f_affine_grid_generator(&theta, px.size(), false)?;
            // Bilinear, zeros outside the image, pixel centres as torchvision's functional transforms take them.
            px = px.f_grid_sampler(&grid, 0, 0, false)?;
        }
        if self.cfg.brightness > 0.0 || self.cfg.contrast > 0.0 {
            let per_sample = |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::f_from_slice(&v)?.f_reshape([ids.len() as i64, 1, 1, 1])?.f_to_device(device)?) };
            let b = per_sample(draws.iter().map(|d| d.brightness).collect())?;
            let c = per_sample(draws.iter().map(|d| d.contrast).collect())?;
            px = px.f_mul(&b)?.f_clamp(0.0, 1.0)?;
            let mean = px.f_mean_dim(&[1i64, 2, 3][..], true, Kind::Float)?;
            px = px.f_sub(&mean)?.f_mul(&c)?.f_add(&mean)?.f_clamp(0.0, 1.0)?;
        }
        Ok(match &self.standardizer {
            Some(s) => s.apply(&px)?,
            None => px,
        })
    }

    fn geometric(&self) -> bool {
        self.cfg.flip || self.cfg.crop_scale.is_some() || self.cfg.rotation > 0.0 || self.cfg.translate > 0.0
    }

    fn draw(&self, epoch: usize, id: i64) -> Draw {
        let stream = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (epoch as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (id as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
        let mut rng = ChaCha8Rng::seed_from_u64(stream);
        let c = &self.cfg;
        // Random resized crop, in affine_grid's [-1, 1] coordinates: the crop's half-extents and centre.
        let (sx, sy, cx, cy) = match c.crop_scale {
            Some([lo, hi]) => {
                let area = rng.random_range(lo..=hi);
                let ratio = rng.random_range((0.75f64).ln()..=(4.0f64 / 3.0).ln()).exp();
                let (w, h) = ((area * ratio).sqrt().min(1.0), (area / ratio).sqrt().min(1.0));
                (w, h, rng.random_range(-(1.0 - w)..=(1.0 - w)), rng.random_range(-(1.0 - h)..=(1.0 - h)))
            }
            None => (1.0, 1.0, 0.0, 0.0),
        };
        let flip = if c.flip && rng.random_bool(0.5) { -1.0 } else { 1.0 };
        let angle = if c.rotation > 0.0 { rng.random_range(-c.rotation..=c.rotation).to_radians() } else { 0.0 };
        let shift = |rng: &mut ChaCha8Rng| if c.translate > 0.0 { rng.random_range(-c.translate..=c.translate) * 2.0 } else { 0.0 };
        let (tx, ty) = (shift(&mut rng), shift(&mut rng));
        let jitter = |rng: &mut ChaCha8Rng, amount: f64| if amount > 0.0 { rng.random_range(1.0 - amount..=1.0 + amount) } else { 1.0 };
        let (brightness, contrast) = (jitter(&mut rng, c.brightness), jitter(&mut rng, c.contrast));
        // input = centre + shift + Scale * Rotation * Flip * output
        let (sin, cos) = angle.sin_cos();
        let theta = [(sx * cos * flip) as f32, (-sx * sin) as f32, (cx + tx) as f32, (sy * sin * flip) as f32, (sy * cos) as f32, (cy + ty) as f32];
        Draw { theta, brightness: brightness as f32, contrast: contrast as f32 }
    }
}
