"""Reads, starts, extends or works on a study in an Optuna journal file with the real Optuna (5.0.0 in the test
venv) through `JournalStorage(JournalFileBackend(PATH))`, and prints the study as JSON.

usage: optuna_journal.py PATH STUDY read
       optuna_journal.py PATH STUDY create N     create the study in Python and run N trials of a quadratic over
                                                 bz's tune.params names (trial 1 is pruned)
       optuna_journal.py PATH STUDY extend N     load the study and run N more Python trials
       optuna_journal.py PATH STUDY enqueue N    create the study with N enqueued trials (distinct learning rates)
       optuna_journal.py PATH STUDY work N       a worker: load the study (waiting until it exists) and run N trials
                                                 (WAITING ones first, as Optuna pops them), each taking a moment
"""
import json
import math
import sys
import time

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

optuna.logging.set_verbosity(optuna.logging.WARNING)
path, name, action = sys.argv[1], sys.argv[2], sys.argv[3]
storage = JournalStorage(JournalFileBackend(path))
ran = []


def objective(trial):
    ran.append(trial.number)
    lr = trial.suggest_float("optimizer.lr", 1e-4, 0.3, log=True)
    units = trial.suggest_int("model.layers[1].out", 8, 64, log=True)
    opt = trial.suggest_categorical("optimizer.name", ["sgd", "adam"])
    value = (math.log10(lr) + 2) ** 2 + units / 1000 + (0.1 if opt == "sgd" else 0.0)
    for step in range(1, 4):
        trial.report(value + 1.0 / step, step)
        if action == "create" and trial.number == 1 and step == 2:
            raise optuna.TrialPruned()
        if action == "work":
            time.sleep(0.2)
    return value


if action == "create":
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(objective, n_trials=int(sys.argv[4]))
elif action == "extend":
    study = optuna.load_study(study_name=name, storage=storage)
    study.optimize(objective, n_trials=int(sys.argv[4]))
elif action == "enqueue":
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for i in range(int(sys.argv[4])):
        study.enqueue_trial({"optimizer.lr": 0.001 * (i + 1), "model.layers[1].out": 16, "optimizer.name": "adam"})
elif action == "work":
    deadline = time.time() + 60
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            break
        except KeyError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    study.optimize(objective, n_trials=int(sys.argv[4]))

study = optuna.load_study(study_name=name, storage=storage)


def num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


out = {
    "direction": study.direction.name,
    "ran": ran,
    "best": {"number": study.best_trial.number, "value": study.best_value, "params": study.best_params}
    if any(t.state.name == "COMPLETE" for t in study.trials)
    else None,
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
print(json.dumps(out))
