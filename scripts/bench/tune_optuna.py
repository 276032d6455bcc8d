"""Best value after N trials of Python Optuna's default TPESampler(seed=s) on Branin and Hartmann6, in-memory
storage, minimising: one JSON line per (function, seed), in the same format as bz's `bench_tpe` example.

    python scripts/bench/tune_optuna.py [SEEDS] [N_TRIALS]      (defaults: 30 seeds, 0..29; 100 trials)

A trial's time is the wall time between consecutive trial-end callbacks (sampling, the objective, storage).
"""
import json
import math
import sys
import time
import warnings

import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")

BRANIN_MIN = 0.397887357729738
HARTMANN6_MIN = -3.322368011415511


def branin(s):
    x1 = s("x0", -5.0, 10.0)
    x2 = s("x1", 0.0, 15.0)
    b, c, t = 5.1 / (4 * math.pi**2), 5.0 / math.pi, 1.0 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1 - t) * math.cos(x1) + 10.0


H6_ALPHA = [1.0, 1.2, 3.0, 3.2]
H6_A = [[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]]
H6_P = [
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
]


def hartmann6(s):
    x = [s(f"x{i}", 0.0, 1.0) for i in range(6)]
    total = 0.0
    for i in range(4):
        inner = sum(H6_A[i][j] * (x[j] - H6_P[i][j] * 1e-4) ** 2 for j in range(6))
        total += H6_ALPHA[i] * math.exp(-inner)
    return -total


FUNCS = {"branin": (branin, BRANIN_MIN), "hartmann6": (hartmann6, HARTMANN6_MIN)}


def run_one(func, seed, n_trials, funcs=FUNCS, sampler=optuna.samplers.TPESampler, label="optuna-tpe"):
    """One study of `sampler(seed=seed)` on `funcs[func]`, as a JSON-able record."""
    f, fmin = funcs[func]
    study = optuna.create_study(sampler=sampler(seed=seed))
    values, stamps = [], []

    def objective(trial):
        v = f(lambda name, lo, hi: trial.suggest_float(name, lo, hi))
        values.append(v)
        return v

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda st, tr: stamps.append(time.perf_counter())])
    total = time.perf_counter() - t0
    best, trace = math.inf, []
    for v in values:
        best = min(best, v)
        trace.append(best)
    per = [(b - a) * 1000 for a, b in zip([t0] + stamps[:-1], stamps)]
    mean = lambda xs: sum(xs) / max(len(xs), 1)
    return {
        "lib": "optuna " + optuna.__version__, "sampler": label, "func": func, "seed": seed,
        "n_trials": n_trials, "storage": "memory", "fmin": fmin,
        "best": {str(k): trace[k - 1] for k in (10, 20, 50, 100, 200, 500, 1000) if k <= len(trace)},
        "trace": trace, "total_s": total, "per_trial_ms": [round(p, 4) for p in per],
        "ms_per_trial_2_n": mean(per[1:]), "ms_per_trial_last10": mean(per[-10:]),
    }


if __name__ == "__main__":
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    n_trials = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    for func in FUNCS:
        for seed in range(seeds):
            print(json.dumps(run_one(func, seed, n_trials)), flush=True)
