"""Hypervolume after N trials of Python Optuna's TPESampler (MOTPE) and NSGAIISampler on ZDT1 (30 inputs, two
objectives, minimised), in-memory: one JSON line per (sampler, seed), the same format as bz's `bench_motpe`.

    python scripts/bench/motpe_optuna.py [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 200 trials)

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
DIMS = 30
REFERENCE = np.array([11.0, 11.0])


def zdt1(trial):
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(DIMS)]
    g = 1.0 + 9.0 * sum(x[1:]) / (DIMS - 1)
    return x[0], g * (1.0 - (x[0] / g) ** 0.5)


def run(kind, seed, n):
    sampler = optuna.samplers.TPESampler(seed=seed) if kind == "optuna-motpe" else optuna.samplers.NSGAIISampler(seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    stamps, hv = [time.perf_counter()], {}

    def done(study, trial):
        stamps.append(time.perf_counter())
        k = trial.number + 1
        if k in (50, 100, 200, 500) or k == n:
            front = np.array([t.values for t in study.best_trials])
            hv[str(k)] = float(compute_hypervolume(front, REFERENCE)) if len(front) else 0.0

    study.optimize(zdt1, n_trials=n, callbacks=[done])
    ms = np.diff(stamps) * 1e3
    return {"sampler": kind, "seed": seed, "n_trials": n, "hv": hv, "sampler_ms_per_trial": float(ms.mean())}


seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
for kind in ("optuna-motpe", "optuna-nsga2"):
    for seed in range(seeds):
        print(json.dumps(run(kind, seed, n)), flush=True)
