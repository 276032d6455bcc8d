//! Evaluation metrics, computed on the host in plain Rust.
//!
//! The definitions follow scikit-learn 1.7 so that numbers reported by `bz` can be checked
//! against the Python tool chain (`tests/metrics_sklearn.rs` does exactly that):
//!
//! * classification: `precision_score`, `recall_score`, `f1_score` with `zero_division=0` and
//!   `labels=range(num_classes)`, so every class counts in a macro average, even one that never
//!   occurs in the targets or the predictions;
//! * regression: `mean_squared_error`, `mean_absolute_error`, `r2_score` with
//!   `multioutput='uniform_average'`;
//! * top-k: like `top_k_accuracy_score`, except for how ties are broken (see [`top_k_hits`]).
//!
//! Everything here is streaming: batches are accumulated as they come, and partial results from
//! several workers can be merged, so a whole evaluation set never has to sit in memory.

use thiserror::Error;

/// How per-class scores are combined (scikit-learn semantics, `zero_division=0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Average {
    /// Unweighted mean over all `num_classes` classes, absent classes included (they score 0).
    Macro,
    /// Computed from the pooled counts; for single-label multiclass data this equals accuracy.
    Micro,
    /// Mean over classes weighted by true-class support (number of targets of that class).
    Weighted,
}

impl Average {
    /// Every averaging mode, in a fixed order (handy for reports).
    pub const ALL: [Average; 3] = [Average::Macro, Average::Micro, Average::Weighted];

    /// The name scikit-learn uses for this mode (`"macro"`, `"micro"`, `"weighted"`).
    pub fn name(self) -> &'static str {
        match self {
            Average::Macro => "macro",
            Average::Micro => "micro",
            Average::Weighted => "weighted",
        }
    }
}

/// Why a batch could not be scored. Every variant names the offending value and what was expected.
#[derive(Debug, Error, PartialEq)]
pub enum MetricError {
    /// Targets and predictions of one batch differ in length.
    #[error("length mismatch: {targets} target values but {preds} predicted values")]
    LengthMismatch {
        /// Number of target values given.
        targets: usize,
        /// Number of predicted values given.
        preds: usize,
    },
    /// A class index lies outside `[0, num_classes)`.
    #[error("{role} class {value} at position {position} is out of range [0, {num_classes})")]
    ClassOutOfRange {
        /// `"target"` or `"prediction"`.
        role: &'static str,
        /// Index of the sample within its batch.
        position: usize,
        /// The class index found.
        value: i64,
        /// Number of classes; valid indices are `0..num_classes`.
        num_classes: usize,
    },
    /// Two accumulators over different numbers of classes cannot be merged.
    #[error("cannot merge a confusion matrix over {other} classes into one over {this} classes")]
    NumClassesMismatch {
        /// Classes of the matrix merged into.
        this: usize,
        /// Classes of the matrix being merged.
        other: usize,
    },
    /// A regression batch is not a whole number of samples.
    #[error("batch of {len} values is not a whole number of samples of width {width}")]
    RaggedBatch {
        /// Number of values in the batch.
        len: usize,
        /// Values per sample.
        width: usize,
    },
    /// Two regression accumulators over different numbers of outputs cannot be merged.
    #[error("cannot merge regression metrics of width {other} into ones of width {this}")]
    WidthMismatch {
        /// Width of the accumulator merged into.
        this: usize,
        /// Width of the accumulator being merged.
        other: usize,
    },
    /// The score matrix does not have one row of `num_classes` scores per target.
    #[error("scores hold {scores} values but {samples} samples x {num_classes} classes need {expected}")]
    ScoresShape {
        /// Number of score values given.
        scores: usize,
        /// Number of targets given.
        samples: usize,
        /// Classes per row.
        num_classes: usize,
        /// `samples * num_classes` (saturated if it overflows).
        expected: usize,
    },
    /// Top-k accuracy with k = 0 would always be 0; it is almost certainly a configuration mistake.
    #[error("top-k accuracy needs k >= 1, got k = 0")]
    ZeroK,
}

/// Checks a class index from user data and turns it into a `usize`.
fn class_index(role: &'static str, position: usize, value: i64, num_classes: usize) -> Result<usize, MetricError> {
    usize::try_from(value).ok().filter(|&class| class < num_classes).ok_or(MetricError::ClassOutOfRange { role, position, value, num_classes })
}

fn check_same_len(targets: usize, preds: usize) -> Result<(), MetricError> {
    if targets == preds {
        Ok(())
    } else {
        Err(MetricError::LengthMismatch { targets, preds })
    }
}

/// `num / den`, or 0 when `den` is 0: scikit-learn's `zero_division=0`.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Confusion matrix over `n` classes: rows = true class, columns = predicted class.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// Row-major `num_classes x num_classes` counts.
    counts: Vec<u64>,
}

/// Per-class totals every precision/recall/F1 variant is derived from.
struct ClassTotals {
    true_positives: Vec<u64>,
    /// Row sums: how many targets each class has.
    support: Vec<u64>,
    /// Column sums: how often each class was predicted.
    predicted: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix over `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self { num_classes, counts: vec![0; num_classes * num_classes] }
    }

    /// Number of classes the matrix was created for.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Accumulates one batch of class indices.
    ///
    /// The whole batch is checked before anything is counted, so on error the matrix is unchanged.
    pub fn add(&mut self, targets: &[i64], preds: &[i64]) -> Result<(), MetricError> {
        check_same_len(targets.len(), preds.len())?;
        let n = self.num_classes;
        let cells = targets
            .iter()
            .zip(preds)
            .enumerate()
            .map(|(position, (&target, &pred))| {
                let row = class_index("target", position, target, n)?;
                let col = class_index("prediction", position, pred, n)?;
                Ok(row * n + col)
            })
            .collect::<Result<Vec<_>, MetricError>>()?;
        for cell in cells {
            self.counts[cell] += 1;
        }
        Ok(())
    }

    /// Adds the counts of `other` (e.g. from another worker or data shard) to this matrix.
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), MetricError> {
        if other.num_classes != self.num_classes {
            return Err(MetricError::NumClassesMismatch { this: self.num_classes, other: other.num_classes });
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        Ok(())
    }

    /// The row-major counts, for summing the matrices of data-parallel ranks in place.
    pub fn counts_mut(&mut self) -> &mut [u64] {
        &mut self.counts
    }

    /// How many samples of class `target` were predicted as `pred`.
    ///
    /// # Panics
    /// If either index is `>= num_classes()`; indices here come from code, not from data.
    pub fn count(&self, target: usize, pred: usize) -> u64 {
        assert!(target < self.num_classes && pred < self.num_classes, "confusion matrix cell ({target}, {pred}) is outside {0}x{0}", self.num_classes);
        self.counts[target * self.num_classes + pred]
    }

    /// The matrix as nested rows (true class, then predicted class), for JSON output.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        // `max(1)` because `chunks(0)` panics; a 0-class matrix has no rows anyway.
        self.counts.chunks(self.num_classes.max(1)).map(<[u64]>::to_vec).collect()
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn correct(&self) -> u64 {
        (0..self.num_classes).map(|class| self.counts[class * self.num_classes + class]).sum()
    }

    /// Fraction of samples predicted correctly; 0.0 when nothing was counted.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    fn class_totals(&self) -> ClassTotals {
        let n = self.num_classes;
        let mut totals = ClassTotals { true_positives: vec![0; n], support: vec![0; n], predicted: vec![0; n] };
        for target in 0..n {
            for pred in 0..n {
                let count = self.counts[target * n + pred];
                totals.support[target] += count;
                totals.predicted[pred] += count;
                if target == pred {
                    totals.true_positives[target] = count;
                }
            }
        }
        totals
    }

    /// Precision of each class: `tp / predicted`, 0.0 for a class that was never predicted.
    pub fn per_class_precision(&self) -> Vec<f64> {
        let t = self.class_totals();
        t.true_positives.iter().zip(&t.predicted).map(|(&tp, &predicted)| ratio(tp, predicted)).collect()
    }

    /// Recall of each class: `tp / support`, 0.0 for a class with no targets.
    pub fn per_class_recall(&self) -> Vec<f64> {
        let t = self.class_totals();
        t.true_positives.iter().zip(&t.support).map(|(&tp, &support)| ratio(tp, support)).collect()
    }

    /// F1 of each class.
    ///
    /// Computed as `2 tp / (support + predicted)` rather than from precision and recall, as
    /// scikit-learn does since 1.3: the two agree whenever both are defined, and this form gives
    /// 0.0 (not 0/0) for a class that has targets but was never predicted.
    pub fn per_class_f1(&self) -> Vec<f64> {
        let t = self.class_totals();
        (0..self.num_classes).map(|c| ratio(2 * t.true_positives[c], t.support[c] + t.predicted[c])).collect()
    }

    /// Precision combined over classes as `avg` says.
    pub fn precision(&self, avg: Average) -> f64 {
        self.average(avg, self.per_class_precision())
    }

    /// Recall combined over classes as `avg` says.
    pub fn recall(&self, avg: Average) -> f64 {
        self.average(avg, self.per_class_recall())
    }

    /// F1 combined over classes as `avg` says (macro F1 is the mean of per-class F1 scores,
    /// not the harmonic mean of macro precision and recall).
    pub fn f1(&self, avg: Average) -> f64 {
        self.average(avg, self.per_class_f1())
    }

    fn average(&self, avg: Average, per_class: Vec<f64>) -> f64 {
        match avg {
            // Pooled over all classes, tp = trace and both fp and fn sum to (total - trace), so
            // micro precision, recall and F1 all reduce to accuracy.
            Average::Micro => self.accuracy(),
            Average::Macro => {
                if per_class.is_empty() {
                    0.0
                } else {
                    per_class.iter().sum::<f64>() / per_class.len() as f64
                }
            }
            Average::Weighted => {
                let support = self.class_totals().support;
                let total: u64 = support.iter().sum();
                if total == 0 {
                    return 0.0;
                }
                let weighted: f64 = per_class.iter().zip(&support).map(|(&score, &weight)| score * weight as f64).sum();
                weighted / total as f64
            }
        }
    }
}

/// Neumaier's compensated sum: keeps the rounding error of a long f64 sum near one ulp, so
/// millions of small squared errors do not drift.
#[derive(Clone, Copy, Debug, Default)]
struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn merge(&mut self, other: &CompensatedSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Running statistics of one regression output.
#[derive(Clone, Debug, Default)]
struct OutputStats {
    target_mean: f64,
    /// Sum of squared deviations of the targets from their mean (the r2 denominator).
    target_m2: CompensatedSum,
    squared_error: CompensatedSum,
    absolute_error: CompensatedSum,
}

impl OutputStats {
    /// Statistics of one column of a non-empty batch, by two passes over the data in memory.
    fn of_column<'a>(targets: impl Iterator<Item = &'a f32> + Clone, preds: impl Iterator<Item = &'a f32>, len: usize) -> Self {
        // Shifting by the first value keeps the sum small when targets sit far from zero, and
        // makes the mean of a constant column exactly that constant, so its variance is exactly 0
        // (r2 treats a zero variance specially, so rounding noise there would change the result).
        let shift = targets.clone().next().map_or(0.0, |&t| f64::from(t));
        let mut shifted = CompensatedSum::default();
        for &t in targets.clone() {
            shifted.add(f64::from(t) - shift);
        }
        let mean = shift + shifted.value() / len as f64;

        let mut stats = OutputStats { target_mean: mean, ..OutputStats::default() };
        for (&t, &p) in targets.zip(preds) {
            let (t, p) = (f64::from(t), f64::from(p));
            stats.target_m2.add((t - mean) * (t - mean));
            stats.squared_error.add((t - p) * (t - p));
            stats.absolute_error.add((t - p).abs());
        }
        stats
    }

    /// Folds in the statistics of `other_count` more samples (Chan et al.'s parallel update).
    fn absorb(&mut self, count: u64, other: &OutputStats, other_count: u64) {
        if other_count == 0 {
            return;
        }
        if count == 0 {
            *self = other.clone();
            return;
        }
        let (na, nb) = (count as f64, other_count as f64);
        let n = na + nb;
        let delta = other.target_mean - self.target_mean;
        self.target_mean += delta * (nb / n);
        self.target_m2.merge(&other.target_m2);
        self.target_m2.add(delta * delta * (na * nb / n));
        self.squared_error.merge(&other.squared_error);
        self.absolute_error.merge(&other.absolute_error);
    }

    /// scikit-learn's `r2_score` for one output, including its `force_finite` rules: a perfect
    /// prediction scores 1 even on a constant target, any other prediction of a constant target 0.
    fn r2(&self) -> f64 {
        let residual = self.squared_error.value();
        let total = self.target_m2.value();
        if residual == 0.0 {
            1.0
        } else if total == 0.0 {
            0.0
        } else {
            1.0 - residual / total
        }
    }
}

/// Streaming regression metrics over one or more outputs (targets and predictions given
/// row-major, `width` values per sample).
///
/// Sums are compensated and the target variance is merged batch by batch (Chan et al.), all in
/// f64, so results stay accurate over millions of f32 samples and do not depend on batching
/// beyond rounding.
#[derive(Clone, Debug)]
pub struct RegressionMetrics {
    width: usize,
    count: u64,
    outputs: Vec<OutputStats>,
}

impl RegressionMetrics {
    /// An empty accumulator for samples of `width` outputs each.
    ///
    /// A width of 0 is allowed but only accepts empty batches, and all its metrics are NaN.
    pub fn new(width: usize) -> Self {
        Self { width, count: 0, outputs: vec![OutputStats::default(); width] }
    }

    /// Values per sample.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Accumulates one batch; `targets` and `preds` are row-major `[samples, width]`.
    ///
    /// On error nothing is counted.
    pub fn add(&mut self, targets: &[f32], preds: &[f32]) -> Result<(), MetricError> {
        check_same_len(targets.len(), preds.len())?;
        let len = targets.len();
        if len == 0 {
            return Ok(());
        }
        // `is_multiple_of(0)` is false for any non-empty batch, so width 0 is rejected here too.
        if !len.is_multiple_of(self.width) {
            return Err(MetricError::RaggedBatch { len, width: self.width });
        }
        let samples = len / self.width;
        for (column, stats) in self.outputs.iter_mut().enumerate() {
            let batch = OutputStats::of_column(targets[column..].iter().step_by(self.width), preds[column..].iter().step_by(self.width), samples);
            stats.absorb(self.count, &batch, samples as u64);
        }
        self.count += samples as u64;
        Ok(())
    }

    /// Adds everything `other` accumulated (e.g. another worker's share) to this accumulator.
    pub fn merge(&mut self, other: &RegressionMetrics) -> Result<(), MetricError> {
        if other.width != self.width {
            return Err(MetricError::WidthMismatch { this: self.width, other: other.width });
        }
        for (mine, theirs) in self.outputs.iter_mut().zip(&other.outputs) {
            mine.absorb(self.count, theirs, other.count);
        }
        self.count += other.count;
        Ok(())
    }

    /// Everything accumulated, as numbers: the count, then per output its target mean and the value and
    /// compensation of its three sums. [`RegressionMetrics::from_state`] rebuilds the accumulator bit for bit, so
    /// data-parallel ranks can gather each other's and [`merge`](RegressionMetrics::merge) them in one order.
    pub fn state(&self) -> Vec<f64> {
        let mut out = vec![self.count as f64];
        for o in &self.outputs {
            let sums = [o.target_m2, o.squared_error, o.absolute_error];
            out.push(o.target_mean);
            out.extend(sums.iter().flat_map(|s| [s.sum, s.compensation]));
        }
        out
    }

    /// The accumulator [`RegressionMetrics::state`] described; None when `state` is not one of `width` outputs.
    pub fn from_state(width: usize, state: &[f64]) -> Option<Self> {
        let (&count, rest) = state.split_first()?;
        if rest.len() != width * 7 || !(count >= 0.0 && count.fract() == 0.0 && count < 2f64.powi(53)) {
            return None;
        }
        let sum = |v: &[f64]| CompensatedSum { sum: v[0], compensation: v[1] };
        let outputs = rest
            .chunks_exact(7)
            .map(|v| OutputStats { target_mean: v[0], target_m2: sum(&v[1..3]), squared_error: sum(&v[3..5]), absolute_error: sum(&v[5..7]) })
            .collect();
        Some(Self { width, count: count as u64, outputs })
    }

    /// Number of samples (rows) accumulated.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Mean over outputs of a per-output statistic; NaN when there is nothing to average,
    /// because an error of 0 would read as a perfect model.
    fn mean_over_outputs(&self, per_output: impl Fn(&OutputStats) -> f64) -> f64 {
        if self.count == 0 || self.width == 0 {
            return f64::NAN;
        }
        self.outputs.iter().map(per_output).sum::<f64>() / self.width as f64
    }

    /// Mean squared error over all values (scikit-learn's `mean_squared_error` with uniform
    /// averaging over outputs, which is the same thing); NaN when empty.
    pub fn mse(&self) -> f64 {
        let n = self.count as f64;
        self.mean_over_outputs(|o| o.squared_error.value() / n)
    }

    /// Mean absolute error over all values; NaN when empty.
    pub fn mae(&self) -> f64 {
        let n = self.count as f64;
        self.mean_over_outputs(|o| o.absolute_error.value() / n)
    }

    /// Coefficient of determination, averaged uniformly over outputs (scikit-learn's `r2_score`,
    /// `multioutput='uniform_average'`).
    ///
    /// Like scikit-learn, NaN with fewer than two samples; for a constant target 1.0 when it is
    /// predicted perfectly, else 0.0.
    pub fn r2(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        self.mean_over_outputs(OutputStats::r2)
    }
}

/// Number of samples of one batch whose target is among the `k` best-scored classes.
///
/// `scores` is row-major `[targets.len(), num_classes]`. A target counts as a hit when fewer
/// than `k` classes have a strictly greater score, so ties are resolved in favour of the target.
/// That makes the result independent of class order; `torch.topk` guarantees no particular order
/// among ties, and scikit-learn's `top_k_accuracy_score` favours the higher class index, so on
/// tied scores this may count more hits than either. With `k >= num_classes` every sample hits.
///
/// A NaN score ranks above every number (as in `torch.sort`), and a sample whose target score is
/// NaN is never a hit: a diverged model gets no credit.
pub fn top_k_hits(scores: &[f32], num_classes: usize, targets: &[i64], k: usize) -> Result<u64, MetricError> {
    if k == 0 {
        return Err(MetricError::ZeroK);
    }
    let expected = targets.len().saturating_mul(num_classes);
    if scores.len() != expected {
        return Err(MetricError::ScoresShape { scores: scores.len(), samples: targets.len(), num_classes, expected });
    }
    let mut hits = 0;
    for (position, &target) in targets.iter().enumerate() {
        let class = class_index("target", position, target, num_classes)?;
        let row = &scores[position * num_classes..(position + 1) * num_classes];
        if in_top_k(row, class, k) {
            hits += 1;
        }
    }
    Ok(hits)
}

fn in_top_k(row: &[f32], target: usize, k: usize) -> bool {
    let score = row[target];
    if score.is_nan() {
        return false;
    }
    let better = row.iter().filter(|&&s| s > score || s.is_nan()).count();
    better < k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() <= 1e-12 * expected.abs().max(1.0), "got {actual}, expected {expected}");
    }

    /// 4 classes; class 2 has targets but is never predicted, class 3 never occurs at all.
    ///
    /// pairs (target, pred): (0,0) (0,0) (0,1) (1,1) (1,0) (2,1) (2,0) (1,1)
    ///
    /// ```text
    ///            pred 0  1  2  3 | support
    /// target 0        2  1  0  0 | 3
    /// target 1        1  2  0  0 | 3
    /// target 2        1  1  0  0 | 2
    /// target 3        0  0  0  0 | 0
    /// predicted       4  4  0  0 | total 8, correct (trace) 4
    /// ```
    fn example() -> ConfusionMatrix {
        let mut cm = ConfusionMatrix::new(4);
        cm.add(&[0, 0, 0, 1, 1, 2, 2, 1], &[0, 0, 1, 1, 0, 1, 0, 1]).unwrap();
        cm
    }

    #[test]
    fn counts_and_rows() {
        let cm = example();
        assert_eq!(cm.num_classes(), 4);
        assert_eq!(cm.total(), 8);
        assert_eq!(cm.count(0, 1), 1);
        assert_eq!(cm.count(2, 0), 1);
        assert_eq!(cm.rows(), vec![vec![2, 1, 0, 0], vec![1, 2, 0, 0], vec![1, 1, 0, 0], vec![0, 0, 0, 0]]);
        // 4 correct of 8
        assert_close(cm.accuracy(), 0.5);
    }

    #[test]
    fn per_class_scores_use_zero_division_0() {
        let cm = example();
        // precision = tp / predicted: 2/4, 2/4, 0/0 -> 0 (never predicted), 0/0 -> 0 (absent)
        assert_eq!(cm.per_class_precision(), vec![0.5, 0.5, 0.0, 0.0]);
        // recall = tp / support: 2/3, 2/3, 0/2 = 0, 0/0 -> 0
        let recall = cm.per_class_recall();
        assert_close(recall[0], 2.0 / 3.0);
        assert_close(recall[1], 2.0 / 3.0);
        assert_eq!(&recall[2..], &[0.0, 0.0]);
        // f1 = 2 tp / (support + predicted): 4/(3+4) = 4/7, 4/7, 0/(2+0) = 0, 0/0 -> 0
        // (check class 0 the long way: 2 * 0.5 * 2/3 / (0.5 + 2/3) = (2/3) / (7/6) = 4/7)
        let f1 = cm.per_class_f1();
        assert_close(f1[0], 4.0 / 7.0);
        assert_close(f1[1], 4.0 / 7.0);
        assert_eq!(&f1[2..], &[0.0, 0.0]);
    }

    #[test]
    fn macro_averages_over_all_classes_including_absent_ones() {
        let cm = example();
        // (0.5 + 0.5 + 0 + 0) / 4 = 0.25 (dropping absent class 3 would give 1/3)
        assert_close(cm.precision(Average::Macro), 0.25);
        // (2/3 + 2/3 + 0 + 0) / 4 = 1/3
        assert_close(cm.recall(Average::Macro), 1.0 / 3.0);
        // (4/7 + 4/7 + 0 + 0) / 4 = 2/7 (the harmonic mean of 0.25 and 1/3 happens to be 2/7
        // as well; f1_is_averaged_per_class_not_from_averaged_precision_and_recall separates them)
        assert_close(cm.f1(Average::Macro), 2.0 / 7.0);
    }

    #[test]
    fn micro_average_is_accuracy() {
        let cm = example();
        // pooled tp = 4, pooled predictions = pooled targets = 8 -> 4/8 for all three
        for score in [cm.precision(Average::Micro), cm.recall(Average::Micro), cm.f1(Average::Micro)] {
            assert_close(score, 0.5);
        }
    }

    #[test]
    fn weighted_average_uses_true_support() {
        let cm = example();
        // supports 3, 3, 2, 0 (sum 8)
        // precision: (3*0.5 + 3*0.5 + 2*0 + 0*0) / 8 = 3/8
        assert_close(cm.precision(Average::Weighted), 0.375);
        // recall: (3*2/3 + 3*2/3 + 2*0) / 8 = 4/8 (weighted recall is always accuracy)
        assert_close(cm.recall(Average::Weighted), 0.5);
        // f1: (3*4/7 + 3*4/7 + 2*0) / 8 = (24/7) / 8 = 3/7
        assert_close(cm.f1(Average::Weighted), 3.0 / 7.0);
    }

    #[test]
    fn f1_is_averaged_per_class_not_from_averaged_precision_and_recall() {
        // targets [0, 0, 0, 1], preds [0, 1, 1, 1]
        // class 0: tp 1, support 3, predicted 1 -> P 1, R 1/3, F1 2/(3+1) = 1/2
        // class 1: tp 1, support 1, predicted 3 -> P 1/3, R 1, F1 2/(1+3) = 1/2
        let mut cm = ConfusionMatrix::new(2);
        cm.add(&[0, 0, 0, 1], &[0, 1, 1, 1]).unwrap();
        // macro P = (1 + 1/3)/2 = 2/3, macro R = (1/3 + 1)/2 = 2/3
        assert_close(cm.precision(Average::Macro), 2.0 / 3.0);
        assert_close(cm.recall(Average::Macro), 2.0 / 3.0);
        // macro F1 = (1/2 + 1/2)/2 = 1/2, whereas harmonic(2/3, 2/3) would be 2/3
        assert_close(cm.f1(Average::Macro), 0.5);
        // weighted F1 = (3 * 1/2 + 1 * 1/2) / 4 = 1/2
        assert_close(cm.f1(Average::Weighted), 0.5);
        // weighted P = (3 * 1 + 1 * 1/3) / 4 = (10/3) / 4 = 5/6
        assert_close(cm.precision(Average::Weighted), 5.0 / 6.0);
    }

    #[test]
    fn empty_matrix_scores_zero() {
        let cm = ConfusionMatrix::new(3);
        assert_eq!(cm.total(), 0);
        assert_eq!(cm.rows(), vec![vec![0; 3]; 3]);
        assert_eq!(cm.accuracy(), 0.0);
        for avg in Average::ALL {
            assert_eq!(cm.precision(avg), 0.0, "{}", avg.name());
            assert_eq!(cm.recall(avg), 0.0, "{}", avg.name());
            assert_eq!(cm.f1(avg), 0.0, "{}", avg.name());
        }
        assert_eq!(cm.per_class_f1(), vec![0.0; 3]);
    }

    #[test]
    fn zero_classes_is_degenerate_but_does_not_panic() {
        let mut cm = ConfusionMatrix::new(0);
        cm.add(&[], &[]).unwrap();
        assert!(cm.rows().is_empty());
        assert_eq!(cm.f1(Average::Macro), 0.0);
        assert!(cm.add(&[0], &[0]).is_err());
    }

    #[test]
    fn out_of_range_classes_are_rejected_and_leave_the_matrix_alone() {
        let mut cm = example();
        let before = cm.clone();
        let err = cm.add(&[0, 4], &[0, 0]).unwrap_err();
        assert_eq!(err, MetricError::ClassOutOfRange { role: "target", position: 1, value: 4, num_classes: 4 });
        assert_eq!(err.to_string(), "target class 4 at position 1 is out of range [0, 4)");
        let err = cm.add(&[1, 1, 1], &[1, 1, -1]).unwrap_err();
        assert_eq!(err.to_string(), "prediction class -1 at position 2 is out of range [0, 4)");
        assert_eq!(cm, before);
    }

    #[test]
    fn length_mismatch_is_rejected() {
        let mut cm = ConfusionMatrix::new(2);
        let err = cm.add(&[0, 1, 1], &[0, 1]).unwrap_err();
        assert_eq!(err, MetricError::LengthMismatch { targets: 3, preds: 2 });
        assert_eq!(err.to_string(), "length mismatch: 3 target values but 2 predicted values");
        assert_eq!(cm.total(), 0);
    }

    #[test]
    fn merge_equals_adding_everything_to_one_matrix() {
        // the example's pairs split 3 + 5 over two "workers"
        let mut a = ConfusionMatrix::new(4);
        a.add(&[0, 0, 0], &[0, 0, 1]).unwrap();
        let mut b = ConfusionMatrix::new(4);
        b.add(&[1, 1, 2, 2, 1], &[1, 0, 1, 0, 1]).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, example());

        let err = a.merge(&ConfusionMatrix::new(3)).unwrap_err();
        assert_eq!(err, MetricError::NumClassesMismatch { this: 4, other: 3 });
        assert_eq!(a, example());
    }

    #[test]
    fn streaming_batches_equal_one_batch() {
        let targets: Vec<i64> = (0..1000).map(|i| (i * 7 % 5) as i64).collect();
        let preds: Vec<i64> = (0..1000).map(|i| (i * 3 % 5) as i64).collect();
        let mut whole = ConfusionMatrix::new(5);
        whole.add(&targets, &preds).unwrap();
        let mut streamed = ConfusionMatrix::new(5);
        for (t, p) in targets.chunks(37).zip(preds.chunks(37)) {
            streamed.add(t, p).unwrap();
        }
        assert_eq!(streamed, whole);
    }

    /// Rows of 3 class scores with their targets.
    ///
    /// ```text
    /// row  scores             target  strictly greater  hit at k=1 k=2 k=3
    /// 0    0.1  0.7  0.2      2       1 (0.7)                  no  yes yes
    /// 1    0.5  0.5  0.0      0       0 (tie is not greater)   yes yes yes
    /// 2    0.3  0.3  0.3      2       0 (all tied)             yes yes yes
    /// 3    0.9  0.05 0.05     1       1 (0.9; tie with 2 ok)   no  yes yes
    /// 4    0.6  0.3  0.1      2       2                        no  no  yes
    /// ```
    const SCORES: [f32; 15] = [
        0.1, 0.7, 0.2, //
        0.5, 0.5, 0.0, //
        0.3, 0.3, 0.3, //
        0.9, 0.05, 0.05, //
        0.6, 0.3, 0.1,
    ];
    const TOP_K_TARGETS: [i64; 5] = [2, 0, 2, 1, 2];

    #[test]
    fn top_k_counts_ties_for_the_target() {
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, 1), Ok(2)); // rows 1, 2
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, 2), Ok(4)); // all but row 4
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, 3), Ok(5));
    }

    #[test]
    fn top_k_with_k_at_least_num_classes_hits_everything() {
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, 4), Ok(5));
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, usize::MAX), Ok(5));
    }

    #[test]
    fn top_k_of_empty_batch_is_zero() {
        assert_eq!(top_k_hits(&[], 3, &[], 1), Ok(0));
    }

    #[test]
    fn top_k_nan_never_helps_the_target() {
        let nan = f32::NAN;
        // row 0: target score NaN -> miss even with k = 3
        // row 1: a NaN competitor ranks above the target's 0.9 -> 1 greater: miss at k=1, hit at k=2
        let scores = [nan, 0.1, 0.2, 0.9, nan, 0.0];
        assert_eq!(top_k_hits(&scores, 3, &[0, 0], 3), Ok(1));
        assert_eq!(top_k_hits(&scores, 3, &[0, 0], 1), Ok(0));
        assert_eq!(top_k_hits(&scores, 3, &[0, 0], 2), Ok(1));
    }

    #[test]
    fn top_k_rejects_bad_input() {
        assert_eq!(top_k_hits(&SCORES, 3, &TOP_K_TARGETS, 0), Err(MetricError::ZeroK));
        let err = top_k_hits(&SCORES[..14], 3, &TOP_K_TARGETS, 1).unwrap_err();
        assert_eq!(err.to_string(), "scores hold 14 values but 5 samples x 3 classes need 15");
        let err = top_k_hits(&SCORES, 3, &[2, 0, 3, 1, 2], 1).unwrap_err();
        assert_eq!(err, MetricError::ClassOutOfRange { role: "target", position: 2, value: 3, num_classes: 3 });
    }

    #[test]
    fn regression_single_output() {
        // targets 1 2 3 4, preds 1 3 2 6 -> errors 0 -1 1 -2
        let mut m = RegressionMetrics::new(1);
        m.add(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 6.0]).unwrap();
        assert_eq!(m.count(), 4);
        // squared errors 0 + 1 + 1 + 4 = 6 -> 6/4
        assert_close(m.mse(), 1.5);
        // absolute errors 0 + 1 + 1 + 2 = 4 -> 4/4
        assert_close(m.mae(), 1.0);
        // mean target 2.5; total sum of squares 2.25 + 0.25 + 0.25 + 2.25 = 5 -> 1 - 6/5
        assert_close(m.r2(), -0.2);
    }

    #[test]
    fn regression_multi_output_averages_uniformly() {
        // samples (target | pred): (1, 10 | 2, 10) (2, 20 | 2, 22) (3, 30 | 3, 27)
        let mut m = RegressionMetrics::new(2);
        m.add(&[1.0, 10.0, 2.0, 20.0, 3.0, 30.0], &[2.0, 10.0, 2.0, 22.0, 3.0, 27.0]).unwrap();
        assert_eq!(m.count(), 3);
        // output 0: errors -1 0 0  -> SSE 1,  SAE 1; mean 2,  SST 1 + 0 + 1 = 2     -> r2 1 - 1/2 = 0.5
        // output 1: errors 0 -2 3  -> SSE 13, SAE 5; mean 20, SST 100 + 0 + 100 = 200 -> r2 1 - 13/200 = 0.935
        // mse = (1 + 13) / (3 * 2) = 7/3; mae = (1 + 5) / 6 = 1; r2 = (0.5 + 0.935) / 2 = 0.7175
        assert_close(m.mse(), 7.0 / 3.0);
        assert_close(m.mae(), 1.0);
        assert_close(m.r2(), 0.7175);
    }

    #[test]
    fn regression_constant_target_follows_sklearn() {
        // perfect prediction of a constant: SSE 0 -> 1.0
        let mut perfect = RegressionMetrics::new(1);
        perfect.add(&[0.1, 0.1, 0.1], &[0.1, 0.1, 0.1]).unwrap();
        assert_eq!(perfect.r2(), 1.0);
        // imperfect prediction of a constant: SST 0, SSE 1 -> 0.0
        // (0.1 is not exact in binary: numpy's mean of [0.1]*3 is off by an ulp and sklearn then
        // reports -1.7e31; the shifted mean here keeps the variance exactly 0)
        let mut off = RegressionMetrics::new(1);
        off.add(&[0.1, 0.1, 0.1], &[0.1, 0.1, 1.1]).unwrap();
        assert_eq!(off.r2(), 0.0);
        // two outputs, constant in separate batches: output 0 perfect (1.0), output 1 off (0.0)
        let mut both = RegressionMetrics::new(2);
        both.add(&[5.0, 5.0], &[5.0, 6.0]).unwrap();
        both.add(&[5.0, 5.0, 5.0, 5.0], &[5.0, 5.0, 5.0, 5.0]).unwrap();
        assert_eq!(both.r2(), 0.5);
        // and a perfect non-constant prediction is 1.0 too
        let mut exact = RegressionMetrics::new(1);
        exact.add(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert_eq!(exact.r2(), 1.0);
    }

    #[test]
    fn regression_undefined_cases_are_nan() {
        let mut m = RegressionMetrics::new(2);
        assert_eq!(m.count(), 0);
        assert!(m.mse().is_nan() && m.mae().is_nan() && m.r2().is_nan());
        m.add(&[], &[]).unwrap();
        assert_eq!(m.count(), 0);
        // one sample: errors are defined, r2 is not (sklearn returns nan too)
        m.add(&[1.0, 2.0], &[1.5, 2.0]).unwrap();
        // squared errors 0.25 + 0 over 2 values; absolute 0.5 + 0 over 2 values
        assert_close(m.mse(), 0.125);
        assert_close(m.mae(), 0.25);
        assert!(m.r2().is_nan());
        let zero = RegressionMetrics::new(0);
        assert!(zero.mse().is_nan());
    }

    #[test]
    fn regression_rejects_bad_batches() {
        let mut m = RegressionMetrics::new(2);
        let err = m.add(&[1.0, 2.0], &[1.0]).unwrap_err();
        assert_eq!(err, MetricError::LengthMismatch { targets: 2, preds: 1 });
        let err = m.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(err.to_string(), "batch of 3 values is not a whole number of samples of width 2");
        assert_eq!(m.count(), 0);
        let err = RegressionMetrics::new(0).add(&[1.0], &[1.0]).unwrap_err();
        assert_eq!(err, MetricError::RaggedBatch { len: 1, width: 0 });
        let err = m.merge(&RegressionMetrics::new(3)).unwrap_err();
        assert_eq!(err, MetricError::WidthMismatch { this: 2, other: 3 });
    }

    /// Deterministic, far-from-zero data where a naive `sum(x^2) - n mean^2` loses most digits.
    fn awkward_data(samples: usize, width: usize) -> (Vec<f32>, Vec<f32>) {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let targets: Vec<f32> = (0..samples * width).map(|_| 10_000.0 + next()).collect();
        let preds = targets.iter().map(|t| t + next() - 0.5).collect();
        (targets, preds)
    }

    /// Textbook two-pass statistics over all data at once, as the reference.
    fn two_pass(targets: &[f32], preds: &[f32], width: usize) -> (f64, f64, f64) {
        let n = targets.len() / width;
        let (mut mse, mut mae, mut r2) = (0.0, 0.0, 0.0);
        for j in 0..width {
            let col = |v: &[f32], i: usize| f64::from(v[i * width + j]);
            let mean = (0..n).map(|i| col(targets, i)).sum::<f64>() / n as f64;
            let sst: f64 = (0..n).map(|i| (col(targets, i) - mean).powi(2)).sum();
            let sse: f64 = (0..n).map(|i| (col(targets, i) - col(preds, i)).powi(2)).sum();
            let sae: f64 = (0..n).map(|i| (col(targets, i) - col(preds, i)).abs()).sum();
            mse += sse / n as f64;
            mae += sae / n as f64;
            r2 += 1.0 - sse / sst;
        }
        let w = width as f64;
        (mse / w, mae / w, r2 / w)
    }

    #[test]
    fn regression_streaming_matches_two_pass_reference() {
        let width = 3;
        let (targets, preds) = awkward_data(20_000, width);
        let (mse, mae, r2) = two_pass(&targets, &preds, width);

        let mut whole = RegressionMetrics::new(width);
        whole.add(&targets, &preds).unwrap();

        // uneven batch sizes, including single samples
        let mut streamed = RegressionMetrics::new(width);
        let mut start = 0;
        let mut samples = 1;
        while start < targets.len() {
            let end = (start + samples * width).min(targets.len());
            streamed.add(&targets[start..end], &preds[start..end]).unwrap();
            start = end;
            samples = samples * 3 % 97 + 1;
        }

        // and merged from two halves
        let half = targets.len() / 2 / width * width;
        let mut left = RegressionMetrics::new(width);
        left.add(&targets[..half], &preds[..half]).unwrap();
        let mut right = RegressionMetrics::new(width);
        right.add(&targets[half..], &preds[half..]).unwrap();
        left.merge(&right).unwrap();

        for m in [&whole, &streamed, &left] {
            assert_eq!(m.count(), 20_000);
            assert_close(m.mse(), mse);
            assert_close(m.mae(), mae);
            assert_close(m.r2(), r2);
        }
    }

    #[test]
    fn average_names_match_sklearn() {
        let names: Vec<_> = Average::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["macro", "micro", "weighted"]);
    }

    #[test]
    fn regression_state_rebuilds_the_accumulator_bit_for_bit() {
        let mut a = RegressionMetrics::new(2);
        a.add(&[1.0, 2.0, 3.0, 5.0, -1.0, 0.5], &[1.5, 2.0, 2.0, 4.0, 0.0, 0.0]).unwrap();
        a.add(&[0.1, 0.2], &[0.3, 0.1]).unwrap();
        let b = RegressionMetrics::from_state(2, &a.state()).unwrap();
        assert_eq!(b.state(), a.state());
        assert_eq!((b.count(), b.mse(), b.mae(), b.r2()), (a.count(), a.mse(), a.mae(), a.r2()));
        assert!(RegressionMetrics::from_state(3, &a.state()).is_none());
        assert!(RegressionMetrics::from_state(2, &[]).is_none());
        let mut fractional = a.state();
        fractional[0] = 2.5;
        assert!(RegressionMetrics::from_state(2, &fractional).is_none());
    }
}
