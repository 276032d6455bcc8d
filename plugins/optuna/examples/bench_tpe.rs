//! Best value after N trials of bz's TPE sampler (and its uniform random sampling, for reference) on Branin and
//! Hartmann6, the synthetic anchors of the HPO notes (`funcs.py`: parameters x0.. suggested in order, float
//! ranges as there), minimising, one JSON line per (sampler, function, seed) in the notes' harness format.
//!
//!   bench_tpe [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 100 trials)
//!
//! A trial's time covers what an in-memory study does per trial: sampling, the objective, recording the trial.

use bz_optuna::space::{Direction, Distribution, FrozenTrial, Space, State};
use bz_optuna::tpe::{sample_random, TpeSampler};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

const BRANIN_MIN: f64 = 0.397887357729738;
const HARTMANN6_MIN: f64 = -3.322368011415511;

fn branin(x: &[f64]) -> f64 {
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

fn hartmann6(x: &[f64]) -> f64 {
    let mut total = 0.0;
    for i in 0..4 {
        let inner: f64 = (0..6).map(|j| H6_A[i][j] * (x[j] - H6_P[i][j] * 1e-4).powi(2)).sum();
        total += H6_ALPHA[i] * (-inner).exp();
    }
    -total
}

fn floats(ranges: &[(f64, f64)]) -> Space {
    ranges.iter().enumerate().map(|(i, &(low, high))| (format!("x{i}"), Distribution::Float { low, high, log: false, step: None })).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    type Objective = fn(&[f64]) -> f64;
    let problems: [(&str, Space, Objective, f64); 2] =
        [("branin", floats(&[(-5.0, 10.0), (0.0, 15.0)]), branin, BRANIN_MIN), ("hartmann6", floats(&[(0.0, 1.0); 6]), hartmann6, HARTMANN6_MIN)];
    for sampler in ["bz-tpe", "bz-random"] {
        for (func, space, f, fmin) in &problems {
            for seed in 0..seeds {
                let tpe = TpeSampler { seed, ..TpeSampler::default() };
                let mut trials: Vec<FrozenTrial> = Vec::with_capacity(n_trials);
                let (mut trace, mut per_ms) = (Vec::with_capacity(n_trials), Vec::with_capacity(n_trials));
                let mut best = f64::INFINITY;
                let start = Instant::now();
                for number in 0..n_trials as u64 {
                    let t0 = Instant::now();
                    let params: BTreeMap<String, f64> = if sampler == "bz-tpe" {
                        tpe.sample(space, &trials, Direction::Minimize, number)
                    } else {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(number);
                        space.iter().map(|(name, d)| (name.clone(), sample_random(d, &mut rng))).collect()
                    };
                    let x: Vec<f64> = space.iter().map(|(name, _)| params[name]).collect();
                    let value = f(&x);
                    trials.push(FrozenTrial {
                        number,
                        state: State::Complete,
                        value: Some(value),
                        params: space.iter().map(|(name, d)| (name.clone(), (params[name], d.clone()))).collect(),
                        intermediate: BTreeMap::new(),
                        values: vec![value],
                        constraints: Vec::new(),
                    });
                    per_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                    best = best.min(value);
                    trace.push(best);
                }
                let total_s = start.elapsed().as_secs_f64();
                let best_at: serde_json::Map<String, serde_json::Value> =
                    [10, 20, 50, 100, 200, 500, 1000].iter().filter(|k| **k <= n_trials).map(|k| (k.to_string(), json!(trace[k - 1]))).collect();
                let line = json!({
                    "lib": "bz", "sampler": sampler, "func": func, "seed": seed, "n_trials": n_trials, "storage": "memory",
                    "fmin": fmin, "best": best_at, "trace": trace, "total_s": total_s,
                    "per_trial_ms": per_ms.iter().map(|m| (m * 1e4).round() / 1e4).collect::<Vec<f64>>(),
                    "ms_per_trial_2_n": mean(&per_ms[1.min(per_ms.len())..]),
                    "ms_per_trial_last10": mean(&per_ms[per_ms.len().saturating_sub(10)..]),
                });
                println!("{line}");
            }
        }
    }
}
