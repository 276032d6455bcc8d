"""Checks a bz ONNX export with the real tools: onnx's full checker, then onnxruntime on raw samples against what
`bz predict` wrote for the same samples, with all of them and with the first one alone (the batch dimension is
free). Prints one JSON object for the Rust test to judge; a structural problem fails here.

usage: onnx_check.py MODEL.onnx X.safetensors PREDICTIONS.safetensors
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

model_path, x_path, ref_path = sys.argv[1:4]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)

x = load_file(x_path)["x"]
ref = load_file(ref_path)
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
assert sorted(names) == sorted(ref), f"ONNX outputs {names}, bz predict wrote {sorted(ref)}"

max_diff = {}
for n in (len(x), 1):
    for name, got in zip(names, session.run(None, {"input": x[:n]})):
        want = ref[name][:n]
        assert got.shape == want.shape and got.dtype == np.float32, f"{name}: {got.shape} {got.dtype} vs {want.shape}"
        max_diff[f"{name}[{n}]"] = float(np.abs(got - want).max())


def dims(value):
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


print(
    json.dumps(
        {
            "inputs": {i.name: dims(i) for i in model.graph.input},
            "outputs": {o.name: dims(o) for o in model.graph.output},
            "ops": sorted({node.op_type for node in model.graph.node}),
            "metadata": {p.key: p.value for p in model.metadata_props},
            "producer": model.producer_name,
            "opset": model.opset_import[0].version,
            "max_diff": max_diff,
        }
    )
)
