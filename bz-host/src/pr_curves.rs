//! Per-class precision–recall counts over a split, for a plugin that asked with `Directive::WANT_PR_CURVES`.
//!
//! Probabilities are binned as TensorBoard's `pr_curve.pb` bins them (`floor(p * (n - 1))`), so the counts at
//! every threshold come from one histogram per class: memory and time do not grow with the split.

use bz_plugin_api::payload::{ClassPrCurve, PrCurves};

/// Thresholds per curve: 0, 0.02, …, 1.
pub const THRESHOLDS: usize = 51;

/// Per class, how many positive and negative samples fell in each probability bucket.
pub struct PrCounts {
    classes: usize,
    thresholds: usize,
    /// `[class * thresholds + bucket]`: samples of that class.
    positives: Vec<u64>,
    /// The same for samples of every other class.
    negatives: Vec<u64>,
}

impl PrCounts {
    pub fn new(classes: usize, thresholds: usize) -> PrCounts {
        let thresholds = thresholds.max(2);
        PrCounts { classes, thresholds, positives: vec![0; classes * thresholds], negatives: vec![0; classes * thresholds] }
    }

    /// A batch: `probabilities` row-major `[targets.len(), classes]`.
    pub fn add(&mut self, probabilities: &[f32], targets: &[i64]) {
        debug_assert_eq!(probabilities.len(), targets.len() * self.classes);
        let top = (self.thresholds - 1) as f32;
        for (row, &target) in probabilities.chunks_exact(self.classes).zip(targets) {
            for (class, &p) in row.iter().enumerate() {
                // `as` saturates and maps NaN to 0: a non-finite probability counts as the lowest bucket.
                let bucket = ((p * top).floor() as usize).min(self.thresholds - 1);
                let cell = class * self.thresholds + bucket;
                if target == class as i64 {
                    self.positives[cell] += 1;
                } else {
                    self.negatives[cell] += 1;
                }
            }
        }
    }

    /// The positive and negative counts, for summing the counts of data-parallel ranks in place.
    pub fn counts_mut(&mut self) -> [&mut [u64]; 2] {
        [&mut self.positives, &mut self.negatives]
    }

    /// The curves, labelled with the data's class names where it has them.
    pub fn curves(&self, class_names: Option<&[String]>) -> PrCurves {
        let classes = (0..self.classes)
            .map(|c| {
                let range = c * self.thresholds..(c + 1) * self.thresholds;
                let tp = at_or_above(&self.positives[range.clone()]);
                let fp = at_or_above(&self.negatives[range]);
                let fn_ = tp.iter().map(|t| tp[0] - t).collect();
                let tn = fp.iter().map(|f| fp[0] - f).collect();
                let label = class_names.and_then(|n| n.get(c)).cloned().unwrap_or_else(|| c.to_string());
                ClassPrCurve { index: c as u64, label, tp, fp, tn, fn_ }
            })
            .collect();
        PrCurves { num_thresholds: self.thresholds as u32, classes }
    }
}

/// Reverse cumulative sums: entry `i` counts the samples in bucket `i` or above.
fn at_or_above(buckets: &[u64]) -> Vec<u64> {
    let mut out = buckets.to_vec();
    for i in (0..out.len().saturating_sub(1)).rev() {
        out[i] += out[i + 1];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_tensorboards_binning() {
        // Three thresholds (0, 0.5, 1); two classes.
        let mut pr = PrCounts::new(2, 3);
        pr.add(&[0.9, 0.1, 0.4, 0.6, 1.0, 0.0, 0.5, 0.5], &[0, 1, 0, 1]);
        let c = pr.curves(Some(&["a".into(), "b".into()]));
        assert_eq!(c.num_thresholds, 3);
        let a = &c.classes[0];
        assert_eq!(a.label, "a");
        // Class a's probabilities: positives 0.9, 1.0 (buckets 1, 2); negatives 0.4, 0.5 (buckets 0, 1).
        assert_eq!((a.tp.clone(), a.fp.clone(), a.tn.clone(), a.fn_.clone()), (vec![2, 2, 1], vec![2, 1, 0], vec![0, 1, 2], vec![0, 0, 1]));
        for (i, class) in c.classes.iter().enumerate() {
            for t in 0..3 {
                assert_eq!(class.tp[t] + class.fn_[t], 2, "class {i}");
                assert_eq!(class.tp[t] + class.fp[t] + class.tn[t] + class.fn_[t], 4);
            }
        }
        assert_eq!(PrCounts::new(3, 5).curves(None).classes[2].label, "2");
    }

    #[test]
    fn out_of_range_probabilities_land_in_the_end_buckets() {
        let mut pr = PrCounts::new(2, 3);
        pr.add(&[f32::NAN, 7.0], &[1]);
        let c = pr.curves(None);
        assert_eq!(c.classes[0].fp, vec![1, 0, 0]);
        assert_eq!(c.classes[1].tp, vec![1, 1, 1]);
    }
}
