//! Hypervolume after N trials of bz's MOTPE (TPE with two objectives) and NSGA-II on ZDT1 (30 inputs in [0, 1],
//! two objectives, minimised), one JSON line per (sampler, seed): the hypervolume of the Pareto front at each
//! budget against the reference point (11, 11), and the sampler's time per trial.
//!
//!   bench_motpe [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 200 trials)

use bz_optuna::nsga2::{MemoryBook, Nsga2Sampler};
use bz_optuna::pareto::{hypervolume, pareto_front};
use bz_optuna::space::{Direction, Distribution, FrozenTrial, Space, State};
use bz_optuna::tpe::TpeSampler;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

const DIMS: usize = 30;
const REFERENCE: [f64; 2] = [11.0, 11.0];

fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let space: Space = (0..DIMS).map(|i| (format!("x{i}"), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None })).collect();
    let directions = [Direction::Minimize, Direction::Minimize];
    for sampler in ["bz-motpe", "bz-nsga2"] {
        for seed in 0..seeds {
            let tpe = TpeSampler { seed, directions: directions.to_vec(), ..TpeSampler::default() };
            let ga = Nsga2Sampler { seed, ..Nsga2Sampler::default() };
            let mut book = MemoryBook::default();
            let mut trials: Vec<FrozenTrial> = Vec::with_capacity(n_trials);
            let mut sampler_ms = Vec::with_capacity(n_trials);
            let mut hv_at = serde_json::Map::new();
            for number in 0..n_trials as u64 {
                let t0 = Instant::now();
                let params: BTreeMap<String, f64> = if sampler == "bz-motpe" {
                    tpe.sample(&space, &trials, Direction::Minimize, number)
                } else {
                    book.sample(&ga, &space, &trials, &directions, number)
                };
                sampler_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                let x: Vec<f64> = space.iter().map(|(name, _)| params[name]).collect();
                let values = zdt1(&x);
                trials.push(FrozenTrial {
                    number,
                    state: State::Complete,
                    value: values.first().copied(),
                    params: space.iter().map(|(name, d)| (name.clone(), (params[name], d.clone()))).collect(),
                    intermediate: BTreeMap::new(),
                    values,
                    constraints: Vec::new(),
                });
                let done = number as usize + 1;
                if [50, 100, 200, 500].contains(&done) || done == n_trials {
                    let front: Vec<Vec<f64>> = pareto_front(&trials, &directions).iter().map(|t| t.values.clone()).collect();
                    hv_at.insert(done.to_string(), json!(hypervolume(&front, &REFERENCE)));
                }
            }
            let mean_ms = sampler_ms.iter().sum::<f64>() / sampler_ms.len().max(1) as f64;
            println!("{}", json!({ "sampler": sampler, "seed": seed, "n_trials": n_trials, "hv": hv_at, "sampler_ms_per_trial": mean_ms }));
        }
    }
}
