//! The first misclassified validation samples of image data, for a plugin that asked with
//! `Directive::WANT_MISCLASSIFIED`: their pixels back on the data's own scale as bytes, with true and predicted
//! classes.
//!
//! Deterministic (the first by index, as the validation split is never shuffled) and bounded: at most
//! `Misclassified::MAX_SAMPLES` samples, averaged down to at most `Misclassified::MAX_SIDE` pixels a side, so
//! the payload stays under about 1 MB whatever the images' size.

use crate::config::TaskKind;
use crate::data::{Dataset, Standardizer};
use crate::evaluate::to_vec_i64;
use anyhow::Result;
use base64::Engine;
use bz_plugin_api::payload::{Misclassified, MisclassifiedSample};
use tch::{Device, Kind, Tensor};

/// Collects misclassified samples batch by batch.
pub struct Collector {
    /// Channels, height, width as sent (after downscaling).
    sent: [i64; 3],
    /// The data's images are larger than `sent`'s and are averaged down to it.
    downscale: bool,
    standardizer: Option<Standardizer>,
    class_names: Option<Vec<String>>,
    total: u64,
    samples: Vec<MisclassifiedSample>,
}

/// One validation batch: its samples, the model's predictions and the targets; `start` is the split index of its
/// first sample (batches come from a loader, which may stream, so the split as a whole is never at hand).
pub struct Batch<'a> {
    /// This batch's samples (only the misclassified rows are read).
    pub x: &'a Tensor,
    pub start: usize,
    pub predicted: &'a Tensor,
    pub targets: &'a Tensor,
}

impl Collector {
    /// A collector for classification on images (`[C, H, W]`, C 1 or 3); `None` for any other data.
    pub fn new(data: &Dataset, device: Device) -> Result<Option<Collector>> {
        let [c, h, w] = data.input_shape[..] else { return Ok(None) };
        if data.task != TaskKind::Classification || !matches!(c, 1 | 3) || h < 1 || w < 1 {
            return Ok(None);
        }
        let (h, w) = (h as u64, w as u64);
        // A whole factor keeps every sent pixel the mean of the same number of source pixels.
        let factor = h.max(w).div_ceil(u64::from(Misclassified::MAX_SIDE));
        let sent = [c, h.div_ceil(factor) as i64, w.div_ceil(factor) as i64];
        let standardizer = data.normalization.as_ref().map(|n| n.standardizer(device)).transpose()?;
        Ok(Some(Collector { sent, downscale: factor > 1, standardizer, class_names: data.class_names.clone(), total: 0, samples: vec![] }))
    }

    pub fn add(&mut self, b: Batch) -> Result<()> {
        let predicted = to_vec_i64(b.predicted)?;
        let targets = to_vec_i64(b.targets)?;
        let wrong: Vec<i64> = (0..targets.len()).filter(|&i| predicted.get(i) != Some(&targets[i])).map(|i| i as i64).collect();
        self.total += wrong.len() as u64;
        let room = Misclassified::MAX_SAMPLES.saturating_sub(self.samples.len());
        let keep = &wrong[..wrong.len().min(room)];
        if keep.is_empty() {
            return Ok(());
        }
        let rows = Tensor::f_from_slice(keep)?.f_to_device(b.x.device())?;
        let pixels = self.to_bytes(&b.x.f_index_select(0, &rows)?)?;
        let per_sample = pixels.len() / keep.len();
        for (k, &i) in keep.iter().enumerate() {
            let (target, predicted) = (targets[i as usize] as u64, predicted[i as usize] as u64);
            self.samples.push(MisclassifiedSample {
                index: (b.start + i as usize) as u64,
                target,
                predicted,
                target_label: self.label(target),
                predicted_label: self.label(predicted),
                pixels: base64::engine::general_purpose::STANDARD.encode(&pixels[k * per_sample..(k + 1) * per_sample]),
            });
        }
        Ok(())
    }

    /// Samples `[N, C, H, W]` as planar bytes: normalisation undone, downscaled, [0, 1] to 0–255.
    fn to_bytes(&self, x: &Tensor) -> Result<Vec<u8>> {
        let mut x = x.f_to_kind(Kind::Float)?;
        if let Some(s) = &self.standardizer {
            x = s.undo(&x)?;
        }
        if self.downscale {
            x = x.f_adaptive_avg_pool2d([self.sent[1], self.sent[2]])?;
        }
        let x = x.f_mul_scalar(255.0)?.f_round()?.f_clamp(0.0, 255.0)?.f_to_kind(Kind::Uint8)?;
        Ok(Vec::<u8>::try_from(&x.f_to_device(Device::Cpu)?.f_contiguous()?.f_flatten(0, -1)?)?)
    }

    fn label(&self, class: u64) -> String {
        self.class_names.as_ref().and_then(|n| n.get(class as usize)).cloned().unwrap_or_else(|| class.to_string())
    }

    pub fn finish(self) -> Misclassified {
        let [c, h, w] = self.sent.map(|v| v as u32);
        Misclassified { channels: c, height: h, width: w, total: self.total, samples: self.samples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Normalization, Split};

    fn dataset(shape: &[i64], normalization: Option<Normalization>) -> Dataset {
        let empty = || Split { x: crate::data::batches::Features::Memory(Tensor::new()), y: Tensor::new() };
        Dataset {
            train: empty(),
            val: empty(),
            test: None,
            input_shape: shape.to_vec(),
            task: TaskKind::Classification,
            outputs: 3,
            class_names: Some(vec!["a".into(), "b".into(), "c".into()]),
            normalization,
            description: String::new(),
        }
    }

    #[test]
    fn only_image_classification_data_is_collected() {
        assert!(Collector::new(&dataset(&[64], None), Device::Cpu).unwrap().is_none());
        assert!(Collector::new(&dataset(&[2, 8, 8], None), Device::Cpu).unwrap().is_none());
        let mut regression = dataset(&[1, 8, 8], None);
        regression.task = TaskKind::Regression;
        assert!(Collector::new(&regression, Device::Cpu).unwrap().is_none());
        assert!(Collector::new(&dataset(&[3, 8, 8], None), Device::Cpu).unwrap().is_some());
    }

    #[test]
    fn wrong_samples_come_back_as_bytes_on_the_datas_scale_with_their_split_index() {
        // One channel of 2x2 standardised with mean 0.5 and std 0.25: value v stands for 0.5 + 0.25 v.
        let norm = Normalization { shape: vec![1, 1, 1], mean: vec![0.5], std: vec![0.25] };
        let mut c = Collector::new(&dataset(&[1, 2, 2], Some(norm)), Device::Cpu).unwrap().unwrap();
        let batch = Tensor::from_slice(&[-2.0f32, 0.0, 2.0, 10.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]).reshape([3, 1, 2, 2]);
        let predicted = Tensor::from_slice(&[1i64, 1, 0]);
        let targets = Tensor::from_slice(&[0i64, 1, 2]);
        c.add(Batch { x: &batch, start: 10, predicted: &predicted, targets: &targets }).unwrap();
        let m = c.finish();
        assert_eq!((m.channels, m.height, m.width, m.total, m.samples.len()), (1, 2, 2, 2, 2));
        let first = &m.samples[0];
        assert_eq!((first.index, first.target, first.predicted, first.target_label.as_str(), first.predicted_label.as_str()), (10, 0, 1, "a", "b"));
        // 0, 0.5, 1 and 3.0 (clamped) of full scale.
        assert_eq!(m.pixels(first).unwrap(), vec![0, 128, 255, 255]);
        assert_eq!(m.samples[1].index, 12);
        assert_eq!(m.pixels(&m.samples[1]).unwrap(), vec![64; 4]);
    }

    #[test]
    fn large_images_are_averaged_down_and_the_count_is_capped() {
        // 100x130 RGB: a factor of 3 brings the longer side to 44.
        let mut c = Collector::new(&dataset(&[3, 100, 130], None), Device::Cpu).unwrap().unwrap();
        let n = Misclassified::MAX_SAMPLES as i64 + 6;
        let x = Tensor::full([n, 3, 100, 130], 0.5, (Kind::Float, Device::Cpu));
        let targets = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
        let predicted = Tensor::ones([n], (Kind::Int64, Device::Cpu));
        c.add(Batch { x: &x, start: 0, predicted: &predicted, targets: &targets }).unwrap();
        c.add(Batch { x: &x, start: n as usize, predicted: &predicted, targets: &targets }).unwrap();
        let m = c.finish();
        assert_eq!((m.channels, m.height, m.width), (3, 34, 44));
        assert_eq!((m.total, m.samples.len()), (2 * n as u64, Misclassified::MAX_SAMPLES));
        let last = m.samples.last().unwrap();
        assert_eq!(last.index, Misclassified::MAX_SAMPLES as u64 - 1);
        assert!(m.pixels(last).unwrap().iter().all(|&p| p == 128));
    }
}
