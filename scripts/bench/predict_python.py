"""The Python sides of scripts/bench-predict: PyTorch eager and onnxruntime inference on the same images.

  python predict_python.py --side torch --checkpoint DIR --images FILE.gz --batch 256 --threads 2
  python predict_python.py --side onnxruntime --onnx model.onnx --images FILE.gz --batch 256 --threads 2

Reads the IDX images (/255, as bz's idx source does), then runs batches of --batch through the model, as a careful
user writes it: PyTorch in eval mode under torch.inference_mode() with the checkpoint's normalisation applied per
batch; onnxruntime on bz's export (normalisation inside the graph), one session, intra-op threads = --threads. The
first --warmup batches are not timed. Prints one JSON line: samples/s over the timed batches, and the wall time
from the start of this script (imports included) to the end of the last batch.
"""
import argparse
import gzip
import json
import time

T0 = time.monotonic()

import numpy as np  # noqa: E402


def read_idx_images(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
    return (np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w).astype(np.float32) / 255.0)


def torch_runner(a, x):
    import torch
    from safetensors.torch import load_file
    from torch import nn
    torch.set_num_threads(a.threads)
    # examples/fashion-mnist-cnn.toml's layer list, in PyTorch's own modules (same parameter names).
    m = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    missing, unexpected = m.load_state_dict(load_file(f"{a.checkpoint}/model.safetensors"), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    m.eval()
    norm = json.load(open(f"{a.checkpoint}/inference.json"))["normalization"]
    mean = torch.tensor(norm["mean"]).reshape(1, *norm["shape"])
    std = torch.tensor(norm["std"]).reshape(1, *norm["shape"])
    xt = torch.from_numpy(x)

    def run(lo, hi):
        with torch.inference_mode():
            return torch.softmax(m((xt[lo:hi] - mean) / std), 1).numpy()
    return run


def onnxruntime_runner(a, x):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    return lambda lo, hi: s.run(["probabilities"], {"input": x[lo:hi]})[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=["torch", "onnxruntime"], required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--onnx")
    ap.add_argument("--images", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    x = read_idx_images(a.images)
    run = (torch_runner if a.side == "torch" else onnxruntime_runner)(a, x)
    starts = list(range(0, len(x), a.batch))
    for lo in starts[:a.warmup]:
        run(lo, lo + a.batch)
    t = time.monotonic()
    done = 0
    for lo in starts[a.warmup:]:
        done += len(run(lo, lo + a.batch))
    end = time.monotonic()
    print(json.dumps({"samples_per_s": done / (end - t), "timed_samples": done, "seconds": end - t,
                      "wall_s": end - T0, "samples": len(x)}))


if __name__ == "__main__":
    main()
