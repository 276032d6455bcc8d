"""The PyTorch side of scripts/bench-train: the training loop of bench_bare_tch.rs in eager PyTorch.

Default mode is best-practice eager (what a careful PyTorch user writes for an in-memory dataset): the data as
one tensor, torch.randperm + index_select once per epoch, slice views per step, and the fastest SGD the CPU
build offers (fused=True where supported, else the single-tensor for-loop). --dataloader is the idiomatic
script instead: DataLoader(TensorDataset, shuffle=True, drop_last=True), the batch fetch inside the timing.

  python pytorch_eager.py --model mlp --batch 64 --threads 2 --warmup 60 --epochs 1 --steps-per-epoch 660

Prints one JSON line with the same fields as the bare tch side.
"""
import argparse
import gzip
import itertools
import json
import os
import time

import torch
from torch import nn


def read_idx(path):
    opener = gzip.open if os.path.exists(path + ".gz") else open
    with opener(path + ".gz" if opener is gzip.open else path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data, prefix):
    x = read_idx(os.path.join(data, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(os.path.join(data, f"{prefix}-labels-idx1-ubyte"))
    return (x.float() / 255.0).view(-1, 1, 28, 28), y.long()


def model(name):
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def sgd(params):
    # fused SGD exists on CPU in recent PyTorch and saves the per-parameter Python loop; fall back otherwise.
    try:
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, fused=True), "torch.optim.SGD(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=False), "torch.optim.SGD(foreach=False)"


def batches_sliced(x, y, batch, steps):
    # Shuffled here, at the epoch start (not lazily on the first next()), like the tch side.
    perm = torch.randperm(x.shape[0])
    xs, ys = x.index_select(0, perm), y.index_select(0, perm)
    return ((xs[i * batch : (i + 1) * batch], ys[i * batch : (i + 1) * batch]) for i in range(steps))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=60)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps-per-epoch", type=int, default=660)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--dataloader", action="store_true")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    _val = load(a.data, "t10k")  # resident like bz's validation set, for a like-for-like peak RSS
    if a.steps_per_epoch * a.batch > x.shape[0]:
        raise SystemExit(f"{a.steps_per_epoch} steps of {a.batch} exceed the {x.shape[0]} training samples")
    total = a.epochs * a.steps_per_epoch
    if a.warmup >= total:
        raise SystemExit(f"warm-up ({a.warmup}) must be shorter than the run ({total} steps)")

    net = model(a.model)
    opt, opt_name = sgd(net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    if a.dataloader:
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(x, y), batch_size=a.batch, shuffle=True, drop_last=True)

    step, start = 0, None
    for _ in range(a.epochs):
        if a.dataloader:
            batches = itertools.islice(loader, a.steps_per_epoch)
        else:
            batches = batches_sliced(x, y, a.batch, a.steps_per_epoch)
        # The clock starts before the batch of step `warmup` is fetched, so slicing/collation and later
        # epochs' shuffles are inside the timing, as on the tch side.
        while True:
            if step == a.warmup:
                start = time.perf_counter()
            try:
                xb, yb = next(batches)
            except StopIteration:
                break
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            step += 1
    seconds = time.perf_counter() - start
    steps = total - a.warmup
    print(json.dumps({
        "side": "pytorch_dataloader" if a.dataloader else "pytorch",
        "model": a.model,
        "batch": a.batch,
        "threads": torch.get_num_threads(),
        "warmup_steps": a.warmup,
        "steps": steps,
        "seconds": seconds,
        "samples_per_s": steps * a.batch / seconds,
        "final_loss": loss.item(),
        "optimizer": opt_name,
        "torch": torch.__version__,
        "libtorch_cpu": os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"),
    }))


if __name__ == "__main__":
    main()
