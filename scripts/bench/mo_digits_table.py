"""The 2-objective bz training study of scripts/bench-motpe, as a table: every configuration of a small grid
trained once with `bz train` (release), its final `val/loss` and mean `epoch_time_s` recorded. Samplers are then
compared on lookups into this table (as tabular HPO benchmarks such as HPOBench do), so 30 seeds x 200 trials x 4
samplers cost seconds instead of days, and every sampler sees exactly the same training results.

    python scripts/bench/mo_digits_table.py BZ OUT.json

The space: four int parameters, each an index into a grid (so TPE and NSGA-II see the grid's order):
  lr_i      0..7   AdamW lr = 10^(-4 + 3 i / 7)          (1e-4 .. 1e-1)
  width_i   0..5   hidden units = 16 * 2^i               (16 .. 512)
  dropout_i 0..2   dropout p = 0.25 i                    (0, 0.25, 0.5)
  batch_i   0..3   batch size = 16 * 2^i                 (16 .. 128)
576 configurations of the digits MLP of examples/digits-tune.toml, 5 epochs, seed 0, one thread each, two at a time.
A non-finite loss (a diverged run) is recorded as the largest finite one. The hypervolume reference point is 1.1x
the worst value of each objective over the table.
"""
import itertools
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SPACE = [("lr_i", 8), ("width_i", 6), ("dropout_i", 3), ("batch_i", 4)]
CONFIG = """
[run]
seed = 0
threads = 1
[data]
source = "digits"
val_split = 0.2
normalize = true
[model]
layers = [
  { type = "flatten" },
  { type = "linear", out = 128 },
  { type = "relu" },
  { type = "dropout", p = 0.1 },
  { type = "linear", out = 10 },
]
[train]
epochs = 5
batch_size = 32
[optimizer]
name = "adamw"
lr = 0.003
"""


def train(bz, tmp, index):
    lr_i, width_i, dropout_i, batch_i = index
    name = "run-" + "-".join(map(str, index))
    sets = {
        "optimizer.lr": 10 ** (-4 + 3 * lr_i / 7),
        "model.layers[1].out": 16 * 2**width_i,
        "model.layers[3].p": 0.25 * dropout_i,
        "train.batch_size": 16 * 2**batch_i,
        "run.dir": str(tmp),
    }
    args = [bz, "train", str(tmp / "base.toml"), "--quiet", "--run-name", name]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    epochs = [json.loads(l) for l in open(tmp / name / "metrics.jsonl") if '"event":"epoch"' in l]
    if done.returncode != 0 and not epochs:
        sys.exit(f"mo_digits_table: {' '.join(args)} failed: {done.stderr.strip()}")
    loss = epochs[-1].get("val/loss")
    loss = float("nan") if loss is None or done.returncode != 0 else loss
    secs = sum(e["epoch_time_s"] for e in epochs) / len(epochs)
    return ",".join(map(str, index)), [loss, secs]


def main():
    bz, out = sys.argv[1], Path(sys.argv[2])
    grid = list(itertools.product(*(range(n) for _, n in SPACE)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "base.toml").write_text(CONFIG)
        with ThreadPoolExecutor(2) as pool:
            rows = dict(pool.map(lambda i: train(bz, tmp, i), grid))
    finite = [v[0] for v in rows.values() if v[0] == v[0] and abs(v[0]) != float("inf")]
    diverged = [v for v in rows.values() if not (v[0] == v[0] and abs(v[0]) != float("inf"))]
    for v in diverged:
        v[0] = max(finite)
    print(f"mo_digits_table: {len(rows)} runs, {len(diverged)} diverged", file=sys.stderr)
    reference = [1.1 * max(v[i] for v in rows.values()) for i in range(2)]
    table = {"space": [[n, k] for n, k in SPACE], "objectives": ["val/loss", "epoch_time_s"], "reference": reference, "rows": rows}
    out.write_text(json.dumps(table))


main()
