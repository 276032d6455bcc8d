//! Best value after N trials of bz's TPE sampler (and its uniform random sampling, for reference) on Branin and
//! Hartmann6, the synthetic anchors of the HPO notes, minimising, one JSON line per (sampler, function, seed)
//! in the notes' harness format.
//!
//!   bench_tpe [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 100 trials)
//!
//! A trial's time covers what an in-memory study does per trial: sampling, the objective, recording the trial.

mod bench_common;

use bench_common::*;
use bz_optuna::space::{Direction, Space};
use bz_optuna::tpe::{sample_random, TpeSampler};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
                let run = Run { sampler, func, seed, fmin: *fmin };
                let line = study(&run, space, *f, n_trials, |trials, number| {
                    if sampler == "bz-tpe" {
                        tpe.sample(space, trials, Direction::Minimize, number)
                    } else {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(number);
                        space.iter().map(|(name, d)| (name.clone(), sample_random(d, &mut rng))).collect()
                    }
                });
                println!("{line}");
            }
        }
    }
}
