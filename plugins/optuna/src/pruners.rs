//! Pruners as Optuna 5.0 defines them (`optuna/pruners`): median and percentile (compare a trial's best
//! intermediate value with a percentile of completed trials' values at the same step), successive halving
//! (asynchronous: at each rung a trial must be in the top 1/η of the trials that reached it) and hyperband
//! (several successive-halving brackets with different minimum early-stopping rates; a trial's bracket comes
//! from a hash of its number). Rung results live in trial system attributes, as Optuna keeps them, so several
//! workers share them through the storage.

use crate::space::{Direction, FrozenTrial, State};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Pruner {
    None,
    Percentile { percentile: f64, n_startup_trials: usize, n_warmup_steps: u64, interval_steps: u64, n_min_trials: usize },
    SuccessiveHalving { min_resource: Option<u64>, reduction_factor: u64, min_early_stopping_rate: u32, bootstrap_count: usize },
    Hyperband { min_resource: u64, max_resource: Option<u64>, reduction_factor: u64, bootstrap_count: usize },
}

/// What a pruning decision needs besides the trials: the trial's own rung attributes to write.
#[derive(Debug, Default)]
pub struct Decision {
    pub prune: bool,
    /// Trial system attributes to store (`completed_rung_N` → value).
    pub attrs: Vec<(String, f64)>,
}

/// `numpy.nanpercentile` with linear interpolation, of finite-or-inf values (NaNs removed).
fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

fn best(values: impl Iterator<Item = f64>, direction: Direction) -> f64 {
    let v: Vec<f64> = values.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    match direction {
        Direction::Minimize => v.into_iter().fold(f64::INFINITY, f64::min),
        Direction::Maximize => v.into_iter().fold(f64::NEG_INFINITY, f64::max),
    }
}

impl Pruner {
    /// Decides for `trial` (its intermediate values so far; its last one was just reported) among `trials` (the
    /// whole study, `trial` included or not) with `rungs` (trial number → its system attributes).
    pub fn decide(
        &self,
        study: &str,
        trial: &FrozenTrial,
        trials: &[FrozenTrial],
        rungs: &BTreeMap<u64, BTreeMap<String, f64>>,
        direction: Direction,
    ) -> Decision {
        let Some((&step, &value)) = trial.intermediate.iter().next_back() else { return Decision::default() };
        match self {
            Pruner::None => Decision::default(),
            Pruner::Percentile { percentile: p, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials } => {
                let completed: Vec<&FrozenTrial> = trials.iter().filter(|t| t.state == State::Complete && t.number != trial.number).collect();
                if completed.is_empty() || completed.len() < *n_startup_trials || step < *n_warmup_steps {
                    return Decision::default();
                }
                // Only the first reported step of each interval is checked (Optuna's `_is_first_in_interval_step`).
                let interval = (*interval_steps).max(1);
                let this_interval = (step - n_warmup_steps) / interval;
                let earlier_in_interval =
                    trial.intermediate.keys().any(|&s| s < step && s >= *n_warmup_steps && (s - n_warmup_steps) / interval == this_interval);
                if earlier_in_interval {
                    return Decision::default();
                }
                let mine = best(trial.intermediate.values().copied(), direction);
                if mine.is_nan() {
                    return Decision { prune: true, attrs: vec![] };
                }
                let others: Vec<f64> = completed.iter().filter_map(|t| t.intermediate.get(&step).copied()).collect();
                if others.len() < *n_min_trials {
                    return Decision::default();
                }
                let q = if direction == Direction::Maximize { 100.0 - p } else { *p };
                let threshold = percentile(&others, q);
                if threshold.is_nan() {
                    return Decision::default();
                }
                let prune = match direction {
                    Direction::Minimize => mine > threshold,
                    Direction::Maximize => mine < threshold,
                };
                Decision { prune, attrs: vec![] }
            }
            Pruner::SuccessiveHalving { min_resource, reduction_factor, min_early_stopping_rate, bootstrap_count } => {
                let min_resource = match min_resource {
                    Some(r) => *r,
                    None => match estimate_min_resource(trials) {
                        Some(r) => r,
                        None => return Decision::default(),
                    },
                };
                halving(trial, step, value, trials, rungs, direction, "", min_resource, *reduction_factor, *min_early_stopping_rate, *bootstrap_count, |_| true)
            }
            Pruner::Hyperband { min_resource, max_resource, reduction_factor, bootstrap_count } => {
                let max = match max_resource {
                    Some(m) => *m,
                    None => match trials.iter().filter(|t| t.state == State::Complete).filter_map(|t| t.intermediate.keys().next_back().copied()).max() {
                        Some(m) => m,
                        None => return Decision::default(),
                    },
                };
                let n = n_brackets(*min_resource, max, *reduction_factor);
                let bracket = bracket_of(study, trial.number, n, *reduction_factor);
                let prefix = format!("bracket{bracket}_");
                let in_bracket = |number: u64| bracket_of(study, number, n, *reduction_factor) == bracket;
                halving(trial, step, value, trials, rungs, direction, &prefix, *min_resource, *reduction_factor, bracket, *bootstrap_count, in_bracket)
            }
        }
    }
}

fn estimate_min_resource(trials: &[FrozenTrial]) -> Option<u64> {
    let last = trials.iter().filter(|t| t.state == State::Complete).filter_map(|t| t.intermediate.keys().next_back().copied()).max()?;
    Some((last / 100).max(1))
}

/// The number of hyperband brackets: ⌊log_η(max / min)⌋ + 1.
pub fn n_brackets(min_resource: u64, max_resource: u64, eta: u64) -> u32 {
    let ratio = max_resource.max(1) as f64 / min_resource.max(1) as f64;
    (ratio.ln() / (eta.max(2) as f64).ln()).floor().max(0.0) as u32 + 1
}

/// A trial's bracket: a stable hash of study and number, weighted by each bracket's trial budget
/// (⌈n · η^s / (s + 1)⌉, the number of trials hyperband gives bracket s).
fn bracket_of(study: &str, number: u64, n: u32, eta: u64) -> u32 {
    let budgets: Vec<u64> = (0..n).map(|s| ((n as f64) * (eta as f64).powi(s as i32) / (s as f64 + 1.0)).ceil() as u64).collect();
    let total: u64 = budgets.iter().sum();
    // FNV-1a: stable across processes and runs (std's hasher is randomly seeded).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{study}_{number}").bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut x = h % total.max(1);
    for (s, b) in budgets.iter().enumerate() {
        if x < *b {
            return s as u32;
        }
        x -= b;
    }
    n - 1
}

#[allow(clippy::too_many_arguments, clippy::explicit_counter_loop)]
fn halving(
    trial: &FrozenTrial,
    step: u64,
    value: f64,
    trials: &[FrozenTrial],
    rungs: &BTreeMap<u64, BTreeMap<String, f64>>,
    direction: Direction,
    prefix: &str,
    min_resource: u64,
    eta: u64,
    rate: u32,
    bootstrap: usize,
    eligible: impl Fn(u64) -> bool,
) -> Decision {
    let eta = eta.max(2);
    let mine = rungs.get(&trial.number);
    let mut rung = (0..).take_while(|r| mine.is_some_and(|m| m.contains_key(&format!("{prefix}completed_rung_{r}")))).count() as u32;
    let mut attrs = Vec::new();
    // Bounded: a trial climbs at most one rung per iteration, and 64 rungs exceed any u64 resource.
    for _ in 0..64 {
        let promotion_step = min_resource.saturating_mul(eta.saturating_pow(rate + rung));
        if step < promotion_step {
            return Decision { prune: false, attrs };
        }
        if value.is_nan() {
            return Decision { prune: true, attrs };
        }
        let key = format!("{prefix}completed_rung_{rung}");
        attrs.push((key.clone(), value));
        let mut competing: Vec<f64> = trials
            .iter()
            .filter(|t| t.number != trial.number && eligible(t.number))
            .filter_map(|t| rungs.get(&t.number).and_then(|a| a.get(&key)).copied())
            .collect();
        competing.push(value);
        if competing.len() <= bootstrap {
            return Decision { prune: true, attrs };
        }
        competing.sort_by(f64::total_cmp);
        if direction == Direction::Maximize {
            competing.reverse();
        }
        let idx = (competing.len() / eta as usize).saturating_sub(1);
        let promotable = match direction {
            Direction::Minimize => value <= competing[idx],
            Direction::Maximize => value >= competing[idx],
        };
        if !promotable {
            return Decision { prune: true, attrs };
        }
        rung += 1;
    }
    Decision { prune: false, attrs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(number: u64, state: State, curve: &[f64]) -> FrozenTrial {
        FrozenTrial {
            number,
            state,
            value: curve.last().copied(),
            params: BTreeMap::new(),
            intermediate: curve.iter().enumerate().map(|(i, v)| (i as u64 + 1, *v)).collect(),
            values: curve.last().copied().into_iter().collect(),
            constraints: Vec::new(),
        }
    }

    #[test]
    fn numpy_percentiles() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[1.0, f64::NAN, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[5.0], 25.0), 5.0);
    }

    #[test]
    fn median_prunes_a_trial_worse_than_the_median_at_its_step() {
        let median = Pruner::Percentile { percentile: 50.0, n_startup_trials: 2, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 };
        let done = vec![trial(0, State::Complete, &[1.0, 0.5, 0.2]), trial(1, State::Complete, &[1.2, 0.7, 0.3]), trial(2, State::Complete, &[0.9, 0.4, 0.1])];
        let bad = trial(3, State::Running, &[5.0]);
        let good = trial(4, State::Running, &[0.95]);
        let none = BTreeMap::new();
        assert!(median.decide("s", &bad, &done, &none, Direction::Minimize).prune);
        assert!(!median.decide("s", &good, &done, &none, Direction::Minimize).prune);
        // Maximising flips it.
        assert!(!median.decide("s", &bad, &done, &none, Direction::Maximize).prune);
        // Too few completed trials: never prune.
        assert!(!median.decide("s", &bad, &done[..1], &none, Direction::Minimize).prune);
    }

    #[test]
    fn successive_halving_keeps_the_top_third_at_each_rung() {
        let sh = Pruner::SuccessiveHalving { min_resource: Some(1), reduction_factor: 3, min_early_stopping_rate: 0, bootstrap_count: 0 };
        let mut rungs: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
        let mut trials = Vec::new();
        let mut pruned = 0;
        for (n, v) in [0.5, 0.9, 0.1, 0.8, 0.7, 0.05].iter().enumerate() {
            let t = trial(n as u64, State::Running, &[*v]);
            let d = sh.decide("s", &t, &trials, &rungs, Direction::Minimize);
            for (k, x) in d.attrs {
                rungs.entry(n as u64).or_default().insert(k, x);
            }
            pruned += d.prune as usize;
            trials.push(t);
        }
        // 0.5 (first: alone, promoted), 0.9 pruned, 0.1 promoted, 0.8 pruned, 0.7 pruned, 0.05 promoted.
        assert_eq!(pruned, 3);
        assert!(rungs[&0].contains_key("completed_rung_0"));
    }

    #[test]
    fn hyperband_brackets_are_stable_and_all_used() {
        let n = n_brackets(1, 27, 3);
        assert_eq!(n, 4);
        let seen: std::collections::BTreeSet<u32> = (0..200).map(|i| bracket_of("study", i, n, 3)).collect();
        assert_eq!(seen.len(), 4);
        assert_eq!(bracket_of("study", 7, n, 3), bracket_of("study", 7, n, 3));
    }
}
