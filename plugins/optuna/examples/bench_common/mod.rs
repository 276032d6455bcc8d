//! What the sampler benchmarks share: the synthetic objectives of the HPO notes (`funcs.py`: parameters x0..
//! suggested in order, float ranges as there), an in-memory study loop that times each trial, and the JSON line
//! of the notes' harness format.

#![allow(dead_code)]

use bz_optuna::space::{Distribution, FrozenTrial, Space, State};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

pub const BRANIN_MIN: f64 = 0.397887357729738;
pub const HARTMANN6_MIN: f64 = -3.322368011415511;

pub fn branin(x: &[f64]) -> f64 {
    let pi = std::f64::consts::PI;
    let (x1, x2) = (x[0], x[1]);
    let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

const H6_ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const H6_A: [[f64; 6]; 4] =
    [[10.0, 3.0, 17.0, 3.5, 1.7, 8.0], [0.05, 10.0, 17.0, 0.1, 8.0, 14.0], [3.0, 3.5, 1.7, 10.0, 17.0, 8.0], [17.0, 8.0, 0.05, 10.0, 0.1, 14.0]];
const H6_P: [[f64; 6]; 4] = [
    [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
    [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
    [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
    [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
];

pub fn hartmann6(x: &[f64]) -> f64 {
    let mut total = 0.0;
    for i in 0..4 {
        let inner: f64 = (0..6).map(|j| H6_A[i][j] * (x[j] - H6_P[i][j] * 1e-4).powi(2)).sum();
        total += H6_ALPHA[i] * (-inner).exp();
    }
    -total
}

/// Rosenbrock's valley in any dimension; minimum 0 at (1, …, 1).
pub fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum()
}

pub fn floats(ranges: &[(f64, f64)]) -> Space {
    ranges.iter().enumerate().map(|(i, &(low, high))| (format!("x{i}"), Distribution::Float { low, high, log: false, step: None })).collect()
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// One benchmark study: which sampler, on which function, with which seed.
pub struct Run<'a> {
    pub sampler: &'a str,
    pub func: &'a str,
    pub seed: u64,
    pub fmin: f64,
}

/// Runs `n_trials` trials of `f` over `space`, minimising, each proposed by `ask(trials so far, number)`, and
/// returns the harness's JSON line (best value at fixed budgets, the trace, the time per trial).
pub fn study(
    run: &Run,
    space: &Space,
    f: fn(&[f64]) -> f64,
    n_trials: usize,
    mut ask: impl FnMut(&[FrozenTrial], u64) -> BTreeMap<String, f64>,
) -> serde_json::Value {
    let mut trials: Vec<FrozenTrial> = Vec::with_capacity(n_trials);
    let (mut trace, mut per_ms) = (Vec::with_capacity(n_trials), Vec::with_capacity(n_trials));
    let mut best = f64::INFINITY;
    let start = Instant::now();
    for number in 0..n_trials as u64 {
        let t0 = Instant::now();
        let params = ask(&trials, number);
        let x: Vec<f64> = space.iter().map(|(name, _)| params[name]).collect();
        let value = f(&x);
        trials.push(FrozenTrial {
            number,
            state: State::Complete,
            value: Some(value),
            params: space.iter().map(|(name, d)| (name.clone(), (params[name], d.clone()))).collect(),
            intermediate: BTreeMap::new(),
            values: Some(value).into_iter().collect(),
            constraints: Vec::new(),
        });
        per_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        best = best.min(value);
        trace.push(best);
    }
    let total_s = start.elapsed().as_secs_f64();
    let best_at: serde_json::Map<String, serde_json::Value> =
        [10, 20, 50, 100, 200, 500, 1000].iter().filter(|k| **k <= n_trials).map(|k| (k.to_string(), json!(trace[k - 1]))).collect();
    json!({
        "lib": "bz", "sampler": run.sampler, "func": run.func, "seed": run.seed, "n_trials": n_trials, "storage": "memory",
        "fmin": run.fmin, "best": best_at, "trace": trace, "total_s": total_s,
        "per_trial_ms": per_ms.iter().map(|m| (m * 1e4).round() / 1e4).collect::<Vec<f64>>(),
        "ms_per_trial_2_n": mean(&per_ms[1.min(per_ms.len())..]),
        "ms_per_trial_last10": mean(&per_ms[per_ms.len().saturating_sub(10)..]),
    })
}
