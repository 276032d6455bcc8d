"""Hypervolume after N trials of Python Optuna's TPESampler (MOTPE) and NSGAIISampler, in-memory, on ZDT1 (30
inputs, two objectives, minimised) and, given TABLE, the tabular bz training study of mo_digits_table.py: one JSON
line per (problem, sampler, seed), the same format as bz's `bench_motpe`.

    python scripts/bench/motpe_optuna.py [SEEDS] [N_TRIALS] [TABLE]      (defaults: 30 seeds, 0..29; 200 trials)

A trial's sampler time is the wall time between consecutive trial-end callbacks (sampling, the objective,
storage): an upper bound of the sampler's own time, as the objective is microseconds.
"""
import json
import sys
import time
import warnings

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")
ZDT1_DIMS = 30


def zdt1(trial):
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(ZDT1_DIMS)]
    g = 1.0 + 9.0 * sum(x[1:]) / (ZDT1_DIMS - 1)
    return x[0], g * (1.0 - (x[0] / g) ** 0.5)


def table_problem(path):
    table = json.load(open(path))

    def objective(trial):
        key = ",".join(str(trial.suggest_int(name, 0, size - 1)) for name, size in table["space"])
        return tuple(table["rows"][key])

    return objective, np.array(table["reference"])


def run(problem, objective, reference, kind, seed, n):
    sampler = optuna.samplers.TPESampler(seed=seed) if kind == "optuna-motpe" else optuna.samplers.NSGAIISampler(seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    stamps, hv = [time.perf_counter()], {}

    def done(study, trial):
        k = trial.number + 1
        if k in (50, 100, 200, 500) or k == n:
            front = np.array([t.values for t in study.best_trials])
            hv[str(k)] = float(compute_hypervolume(front, reference)) if len(front) else 0.0
        stamps.append(time.perf_counter())

    study.optimize(objective, n_trials=n, callbacks=[done])
    # The hypervolume checkpoints are not the sampler's time: leave their intervals out.
    ms = [b - a for a, b, k in zip(stamps, stamps[1:], range(1, n + 1)) if not (k in (50, 100, 200, 500) or k == n)]
    return {"problem": problem, "sampler": kind, "seed": seed, "n_trials": n, "hv": hv, "sampler_ms_per_trial": float(np.mean(ms) * 1e3)}


seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
problems = [("zdt1", zdt1, np.array([11.0, 11.0]))]
if len(sys.argv) > 3:
    problems.append(("digits-table", *table_problem(sys.argv[3])))
for problem, objective, reference in problems:
    for kind in ("optuna-motpe", "optuna-nsga2"):
        for seed in range(seeds):
            print(json.dumps(run(problem, objective, reference, kind, seed, n)), flush=True)
