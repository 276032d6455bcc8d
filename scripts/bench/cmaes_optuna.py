"""Best value after N trials of Python Optuna's CmaEsSampler(seed=s) (defaults: 1 startup trial, x0 the centre,
sigma0 = range/6, no restarts) on Hartmann6 and a 10-D Rosenbrock ([-5, 10] each), in-memory storage,
minimising: one JSON line per (function, seed), in the format of bz's `bench_cmaes` example.

    python scripts/bench/cmaes_optuna.py [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 200 trials)
"""
import json
import sys

import optuna
from tune_optuna import HARTMANN6_MIN, hartmann6, run_one


def rosenbrock10(s):
    x = [s(f"x{i}", -5.0, 10.0) for i in range(10)]
    return sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(9))


FUNCS = {"hartmann6": (hartmann6, HARTMANN6_MIN), "rosenbrock10": (rosenbrock10, 0.0)}

if __name__ == "__main__":
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    n_trials = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    for func in FUNCS:
        for seed in range(seeds):
            record = run_one(func, seed, n_trials, FUNCS, optuna.samplers.CmaEsSampler, "optuna-cmaes")
            print(json.dumps(record), flush=True)
