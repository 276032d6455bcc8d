//! Hypervolume after N trials of bz's MOTPE (TPE with two objectives) and NSGA-II, one JSON line per (problem,
//! sampler, seed): the hypervolume of the Pareto front at each budget, and the sampler's time per trial.
//! Problems: ZDT1 (30 inputs in [0, 1], two objectives, minimised, reference point (11, 11)) and, given TABLE,
//! the tabular 2-objective bz training study written by scripts/bench/mo_digits_table.py (int grid indices;
//! each trial's values are looked up; reference point from the table).
//!
//!   bench_motpe [SEEDS] [N_TRIALS] [TABLE]      (defaults: 30 seeds, 0..29; 200 trials; no table)

use bz_optuna::nsga2::{MemoryBook, Nsga2Sampler};
use bz_optuna::pareto::{hypervolume, pareto_front};
use bz_optuna::space::{Direction, Distribution, FrozenTrial, Space, State};
use bz_optuna::tpe::TpeSampler;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

const ZDT1_DIMS: usize = 30;

fn zdt1(x: &[f64]) -> Vec<f64> {
    let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
    vec![x[0], g * (1.0 - (x[0] / g).sqrt())]
}

/// A point's objective values.
type Objectives = Box<dyn Fn(&[f64]) -> Vec<f64>>;

/// A benchmark problem: its space, its two objectives (minimised) and the hypervolume's reference point.
struct Problem {
    name: &'static str,
    space: Space,
    objectives: Objectives,
    reference: Vec<f64>,
}

fn zdt1_problem() -> Problem {
    let space = (0..ZDT1_DIMS).map(|i| (format!("x{i}"), Distribution::Float { low: 0.0, high: 1.0, log: false, step: None })).collect();
    Problem { name: "zdt1", space, objectives: Box::new(zdt1), reference: vec![11.0, 11.0] }
}

/// The training study's table: `space` is `[[name, size], …]` of int indices, `rows` maps "i,j,…" to the values.
fn table_problem(path: &str) -> Problem {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let table: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let space = table["space"]
        .as_array()
        .expect("space")
        .iter()
        .map(|d| (d[0].as_str().expect("name").to_string(), Distribution::Int { low: 0, high: d[1].as_i64().expect("size") - 1, log: false, step: 1 }))
        .collect();
    let rows: BTreeMap<String, Vec<f64>> = serde_json::from_value(table["rows"].clone()).expect("rows");
    let reference = serde_json::from_value(table["reference"].clone()).expect("reference");
    let lookup = move |x: &[f64]| {
        let key: Vec<String> = x.iter().map(|v| format!("{}", *v as i64)).collect();
        rows.get(&key.join(",")).unwrap_or_else(|| panic!("no row {key:?}")).clone()
    };
    Problem { name: "digits-table", space, objectives: Box::new(lookup), reference }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let n_trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut problems = vec![zdt1_problem()];
    problems.extend(args.get(3).map(|path| table_problem(path)));
    for problem in &problems {
        for sampler in ["bz-motpe", "bz-nsga2"] {
            for seed in 0..seeds {
                println!("{}", study(problem, sampler, seed, n_trials));
            }
        }
    }
}

/// One study of `n_trials` trials: the hypervolume at each budget and the sampler's mean time per trial.
fn study(problem: &Problem, sampler: &str, seed: u64, n_trials: usize) -> serde_json::Value {
    let directions = [Direction::Minimize, Direction::Minimize];
    let space = &problem.space;
    let tpe = TpeSampler::new(seed, directions.to_vec());
    let ga = Nsga2Sampler { seed, ..Nsga2Sampler::default() };
    let mut book = MemoryBook::default();
    let mut trials: Vec<FrozenTrial> = Vec::with_capacity(n_trials);
    let mut sampler_ms = Vec::with_capacity(n_trials);
    let mut hv_at = serde_json::Map::new();
    for number in 0..n_trials as u64 {
        let t0 = Instant::now();
        let params: BTreeMap<String, f64> =
            if sampler == "bz-motpe" { tpe.sample(space, &trials, Direction::Minimize, number) } else { book.sample(&ga, space, &trials, &directions, number) };
        sampler_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let x: Vec<f64> = space.iter().map(|(name, _)| params[name]).collect();
        let values = (problem.objectives)(&x);
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
            hv_at.insert(done.to_string(), json!(hypervolume(&front, &problem.reference)));
        }
    }
    let mean_ms = sampler_ms.iter().sum::<f64>() / sampler_ms.len().max(1) as f64;
    json!({ "problem": problem.name, "sampler": sampler, "seed": seed, "n_trials": n_trials, "hv": hv_at, "sampler_ms_per_trial": mean_ms })
}
