"""The PyTorch side of scripts/bench-ddp: DistributedDataParallel on Gloo under torchrun, the same models and data
as bz's side (scripts/bench/pytorch_eager.py's models and IDX reader), best-practice eager: each rank's shard of a
seeded permutation (DistributedSampler's rule), slices per step, SGD with momentum.

  torchrun --nproc-per-node 2 pytorch_ddp.py --model cnn --batch 64 --threads 1 --warmup 5 --steps 40

Rank 0 prints one JSON line: samples/s of the whole job over the timed steps, and the all-reduce time per step of
a gradient-sized buffer measured on its own after training (DDP overlaps its all-reduce with backward, so it has
no per-step figure of its own).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from pytorch_eager import load, model  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], default="cnn")
    p.add_argument("--batch", type=int, default=64, help="per rank")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    net = nn.parallel.DistributedDataParallel(model(a.model))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(x.shape[0], generator=g)[rank::world]
    xs, ys = x.index_select(0, order), y.index_select(0, order)
    total = a.warmup + a.steps
    if total * a.batch > xs.shape[0]:
        raise SystemExit(f"{total} steps of {a.batch} exceed a rank's {xs.shape[0]} samples")
    start = None
    for step in range(total):
        if step == a.warmup:
            dist.barrier()
            start = time.perf_counter()
        xb, yb = xs[step * a.batch:(step + 1) * a.batch], ys[step * a.batch:(step + 1) * a.batch]
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
    dist.barrier()
    seconds = time.perf_counter() - start
    # The all-reduce alone: one flat buffer of every gradient, as a bucket would carry it.
    n = sum(p.numel() for p in net.parameters())
    buf = torch.zeros(n)
    for _ in range(3):
        dist.all_reduce(buf)
    t = time.perf_counter()
    for _ in range(20):
        dist.all_reduce(buf)
    allreduce_ms = (time.perf_counter() - t) / 20 * 1000
    if rank == 0:
        print(json.dumps({"samples_per_s": a.steps * a.batch * world / seconds, "seconds": seconds, "steps": a.steps,
                          "allreduce_ms": allreduce_ms, "params": n, "final_loss": loss.item(),
                          "torch": torch.__version__}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
