"""Scalars written per second by TensorBoard's Python writers, the baselines of scripts/bench-tensorboard.

usage: tb_python.py N DIR

Writes N scalars (10 tags, values sin(i), step i // 10), one per event, two ways, and prints one JSON line:
- `event_file_writer`: tensorboard's own EventFileWriter, with a Summary proto built per scalar (what every
  Python writer does underneath);
- `torch_summary_writer`: PyTorch's `torch.utils.tensorboard.SummaryWriter.add_scalar`, what PyTorch users call.
Each figure includes creating the file and the final flush and close.
"""
import json
import math
import os
import shutil
import sys
import time

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

n = int(sys.argv[1])
root = sys.argv[2]
tags = [f"train/metric_{t}" for t in range(10)]


def fresh(name):
    d = os.path.join(root, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


d = fresh("py-efw")
t = time.perf_counter()
w = EventFileWriter(d)
for i in range(n):
    s = Summary(value=[Summary.Value(tag=tags[i % 10], simple_value=math.sin(i))])
    w.add_event(Event(summary=s, step=i // 10, wall_time=time.time()))
w.flush()
w.close()
efw = n / (time.perf_counter() - t)

from torch.utils.tensorboard import SummaryWriter  # noqa: E402  (imported after, so its import time is not counted)

d = fresh("py-torch")
t = time.perf_counter()
w = SummaryWriter(d)
for i in range(n):
    w.add_scalar(tags[i % 10], math.sin(i), i // 10)
w.flush()
w.close()
torch_sw = n / (time.perf_counter() - t)
print(json.dumps({"n": n, "event_file_writer": efw, "torch_summary_writer": torch_sw}))
