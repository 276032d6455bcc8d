"""The study of examples/digits-tune.toml in Python: Optuna's TPESampler and MedianPruner over a PyTorch loop in
this process, the same data (scikit-learn's 8x8 digits, 20 % held out, standardised), model, epochs, search space
and threads per trial, n_jobs trials at a time (Optuna's threads; PyTorch releases the GIL in its kernels).
Prints one JSON line: wall seconds, trials by state, epochs trained, and the seconds inside the training loops.

    python scripts/bench/tune_wall_python.py --trials 30 --jobs 2 --epochs 15 --seed 0
"""
import argparse
import json
import threading
import time
import warnings

import numpy as np
import optuna
import torch
from sklearn.datasets import load_digits

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")


def data(seed):
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(0.2 * len(x)))
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    as_t = lambda a, kind: torch.tensor(a, dtype=kind)
    return (as_t(x[train], torch.float32), as_t(y[train], torch.long)), (as_t(x[val], torch.float32), as_t(y[val], torch.long))


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def objective(trial, train, val, epochs, totals, lock):
    lr = trial.suggest_float("optimizer.lr", 1e-4, 3e-2, log=True)
    hidden = trial.suggest_int("model.layers[1].out", 16, 256, log=True)
    p = trial.suggest_float("model.layers[3].p", 0.0, 0.5, step=0.05)
    batch = trial.suggest_categorical("train.batch_size", [16, 32, 64, 128])
    name = trial.suggest_categorical("optimizer.name", ["adam", "adamw", "sgd"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Dropout(p), torch.nn.Linear(hidden, 10))
    opt = OPTIMIZERS[name](model.parameters(), lr=lr)
    (xt, yt), (xv, yv) = train, val
    g = torch.Generator().manual_seed(trial.number)
    t0 = time.perf_counter()
    value = None
    try:
        for epoch in range(epochs):
            model.train()
            for idx in torch.randperm(len(xt), generator=g).split(batch):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                value = torch.nn.functional.cross_entropy(model(xv), yv).item()
            with lock:
                totals["epochs"] += 1
            trial.report(value, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value
    finally:
        with lock:
            totals["train_s"] += time.perf_counter() - t0


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--trials", type=int, default=30)
    a.add_argument("--jobs", type=int, default=2)
    a.add_argument("--epochs", type=int, default=15)
    a.add_argument("--seed", type=int, default=0)
    a = a.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)
    train, val = data(a.seed)
    sampler = optuna.samplers.TPESampler(seed=a.seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
    totals, lock = {"epochs": 0, "train_s": 0.0}, threading.Lock()
    study.optimize(lambda t: objective(t, train, val, a.epochs, totals, lock), n_trials=a.trials, n_jobs=a.jobs)
    states = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    print(json.dumps({"side": "python", "wall_s": time.perf_counter() - start, "states": states, "epochs": totals["epochs"], "train_s": totals["train_s"], "best": study.best_value}))


if __name__ == "__main__":
    main()
