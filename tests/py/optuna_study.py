"""Reads (or extends) a study with the real Optuna (5.0.0 in the test venv) and prints it as JSON.

usage: optuna_study.py STORAGE STUDY read
       optuna_study.py STORAGE STUDY create N        create the study in Python and run N trials of a quadratic
                                                      over bz's tune.params names (one is pruned)
       optuna_study.py STORAGE STUDY extend N         load the study and run N more Python trials

`quadratic` and `dump` are shared with optuna_journal.py.
"""
import json
import math
import sys
import time

import optuna


def quadratic(trial, prune=True, pause=0.0):
    """The Python side's objective over bz's tune.params names; trial 1 is pruned at step 2 when `prune`."""
    lr = trial.suggest_float("optimizer.lr", 1e-4, 0.3, log=True)
    units = trial.suggest_int("model.layers[1].out", 8, 64, log=True)
    opt = trial.suggest_categorical("optimizer.name", ["sgd", "adam"])
    value = (math.log10(lr) + 2) ** 2 + units / 1000 + (0.1 if opt == "sgd" else 0.0)
    for step in range(1, 4):
        trial.report(value + 1.0 / step, step)
        if prune and trial.number == 1 and step == 2:
            raise optuna.TrialPruned()
        time.sleep(pause)
    return value


def num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def dump(study, **extra):
    """The study as the tests read it: direction, best trial, and every trial's state, values and attributes."""
    complete = any(t.state.name == "COMPLETE" for t in study.trials)
    return {
        "direction": study.direction.name,
        **extra,
        "best": {"number": study.best_trial.number, "value": study.best_value, "params": study.best_params} if complete else None,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name,
                "value": num(t.value),
                "params": t.params,
                "distributions": {k: type(d).__name__ for k, d in t.distributions.items()},
                "intermediate": {str(k): num(v) for k, v in t.intermediate_values.items()},
                "started": t.datetime_start is not None,
                "completed": t.datetime_complete is not None,
                "system_attrs": {k: v for k, v in t.system_attrs.items()},
            }
            for t in study.trials
        ],
    }


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name, action = sys.argv[1], sys.argv[2], sys.argv[3]
    if action == "create":
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=optuna.samplers.TPESampler(seed=1))
        study.optimize(quadratic, n_trials=int(sys.argv[4]))
    elif action == "extend":
        study = optuna.load_study(study_name=name, storage=storage)
        study.optimize(quadratic, n_trials=int(sys.argv[4]))
    print(json.dumps(dump(optuna.load_study(study_name=name, storage=storage))))
