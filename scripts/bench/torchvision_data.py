"""The torchvision side of scripts/bench-data: ImageFolder + DataLoader(num_workers=2) over the same JPEG files
and the same transforms as bz's config (grayscale, resize, random resized crop, flip, normalise).

  python torchvision_data.py --root DIR --size 32 --epochs 2            # images/s per epoch
  python torchvision_data.py --root DIR --size 32 --train-steps 40      # the CNN's time blocked on the loader

Prints one JSON line.
"""
import argparse
import json
import time

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder


def cnn(classes):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(128), nn.ReLU(), nn.Linear(128, classes))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tf = T.Compose([T.Grayscale(1), T.Resize((a.size, a.size)), T.RandomResizedCrop(a.size, scale=(0.8, 1.0), antialias=True),
                    T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5], [0.5])])
    ds = ImageFolder(a.root, transform=tf)
    loader = DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers, persistent_workers=True)
    if a.train_steps:
        net = cnn(len(ds.classes))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        waited = total = 0.0
        it = iter(loader)
        for step in range(a.train_steps):
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            t1 = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            t2 = time.perf_counter()
            if step >= 3:  # the workers' start-up is not a steady-state wait
                waited += t1 - t0
                total += t2 - t0
        print(json.dumps({"data_share": waited / total, "steps": a.train_steps}))
        return
    rates = []
    for _ in range(a.epochs):
        t = time.perf_counter()
        n = sum(len(y) for _, y in loader)
        rates.append(n / (time.perf_counter() - t))
    print(json.dumps({"images_per_s": rates, "images": len(ds)}))


if __name__ == "__main__":
    main()
