//! Best value after N trials of bz's CMA-ES sampler on Hartmann6 (6-D, [0, 1]) and a 10-D Rosenbrock
//! ([-5, 10] each), minimising, one JSON line per (function, seed) in the HPO notes' harness format.
//!
//!   bench_cmaes [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 200 trials)
//!
//! A trial's time covers what an in-memory study does per trial: sampling, the objective, recording the trial.

mod bench_common;

use bench_common::*;
use bz_optuna::cmaes::CmaEsSampler;
use bz_optuna::space::{Direction, Space};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    type Objective = fn(&[f64]) -> f64;
    let problems: [(&str, Space, Objective, f64); 2] =
        [("hartmann6", floats(&[(0.0, 1.0); 6]), hartmann6, HARTMANN6_MIN), ("rosenbrock10", floats(&[(-5.0, 10.0); 10]), rosenbrock, 0.0)];
    for (func, space, f, fmin) in &problems {
        for seed in 0..seeds {
            let cma = CmaEsSampler { seed, ..CmaEsSampler::default() };
            let run = Run { sampler: "bz-cmaes", func, seed, fmin: *fmin };
            println!("{}", study(&run, space, *f, n_trials, |trials, number| cma.sample(space, trials, Direction::Minimize, number)));
        }
    }
}
