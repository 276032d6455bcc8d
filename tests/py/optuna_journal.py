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
import sys
import time

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna_study import dump, quadratic

optuna.logging.set_verbosity(optuna.logging.WARNING)
path, name, action = sys.argv[1], sys.argv[2], sys.argv[3]
storage = JournalStorage(JournalFileBackend(path))
ran = []


def objective(trial):
    ran.append(trial.number)
    return quadratic(trial, prune=action == "create", pause=0.2 if action == "work" else 0.0)


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

print(json.dumps(dump(optuna.load_study(study_name=name, storage=storage), ran=ran)))
