"""Reads a multi-objective (or constrained) study with the real Optuna and prints it as JSON; optionally continues
it first with Python's own sampler, so a study bz wrote must be one Optuna can carry on.

usage: optuna_multi.py STORAGE STUDY read
       optuna_multi.py STORAGE STUDY extend-nsga2 N POPULATION   N more trials with NSGAIISampler over bz's params
"""
import json
import math
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, name, action = sys.argv[1], sys.argv[2], sys.argv[3]


def objective(trial):
    lr = trial.suggest_float("optimizer.lr", 1e-4, 0.3, log=True)
    opt = trial.suggest_categorical("optimizer.name", ["sgd", "adam"])
    loss = (math.log10(lr) + 2) ** 2 + (0.1 if opt == "sgd" else 0.0)
    trial.set_user_attr("python", True)
    return loss, 1.0 - loss / 10


if action == "extend-nsga2":
    sampler = optuna.samplers.NSGAIISampler(population_size=int(sys.argv[5]), seed=3)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    study.optimize(objective, n_trials=int(sys.argv[4]))

study = optuna.load_study(study_name=name, storage=storage)


def num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


print(json.dumps({
    "directions": [d.name for d in study.directions],
    "best_trials": sorted((t.number, [num(v) for v in t.values]) for t in study.best_trials),
    "trials": [
        {
            "number": t.number,
            "state": t.state.name,
            "values": None if t.values is None else [num(v) for v in t.values],
            "params": t.params,
            "constraints": t.system_attrs.get("constraints"),
            "system_attrs": dict(t.system_attrs),
        }
        for t in study.trials
    ],
    "study_system_attrs": study._storage.get_study_system_attrs(study._study_id),
}))
