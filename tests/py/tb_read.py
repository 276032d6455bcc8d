"""Reads a bz run directory with the real TensorBoard (tensorboard 2.21.0 in the test venv) and prints what it
sees as JSON: a strict record-by-record CRC check of every event file, then the legacy EventAccumulator
(scalars, histograms) and the plugin EventAccumulator the server uses (text, hparams).

usage: tb_read.py RUN_DIR
"""
import glob
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.plugins.hparams import metadata as hm
from tensorboard.util import tensor_util


def strict_count(path):
    """Records in a file, raising on any bad length or data CRC (TensorBoard's loaders stop silently there)."""
    reader = pywrap_tensorflow.PyRecordReader_New(path.encode(), 0, b"", None)
    n = 0
    for _ in range(10_000_000):
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return n
        n += 1
    raise RuntimeError("too many records")


run = sys.argv[1]
files = sorted(glob.glob(run + "/*tfevents*"))
out = {"files": [], "scalars": {}, "histograms": {}, "text": {}, "hparams": {}}
for f in files:
    strict = strict_count(f)
    loaded = sum(1 for _ in event_file_loader.EventFileLoader(f).Load())
    first = next(iter(event_file_loader.EventFileLoader(f).Load()))
    session_starts = [e.step for e in event_file_loader.EventFileLoader(f).Load() if e.HasField("session_log") and e.session_log.status == 1]
    out["files"].append({"name": f, "strict_records": strict, "loader_records": loaded, "file_version": first.file_version, "session_log_start": session_starts})

acc = ea.EventAccumulator(run, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
acc.Reload()
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[s.step, s.value] for s in acc.Scalars(tag)]
for tag in acc.Tags()["histograms"]:
    out["histograms"][tag] = [
        {"step": h.step, "num": h.histogram_value.num, "min": h.histogram_value.min, "max": h.histogram_value.max,
         "sum": h.histogram_value.sum, "buckets": sum(h.histogram_value.bucket)}
        for h in acc.Histograms(tag)
    ]

pacc = pea.EventAccumulator(run, size_guidance={pea.TENSORS: 0})
pacc.Reload()
for tag in pacc.PluginTagToContent("text"):
    out["text"][tag] = [tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in pacc.Tensors(tag)]
hp = pacc.PluginTagToContent("hparams")
if hm.SESSION_START_INFO_TAG in hp:
    start = hm.parse_session_start_info_plugin_data(hp[hm.SESSION_START_INFO_TAG])
    values = {}
    for k, v in start.hparams.items():
        kind = v.WhichOneof("kind")
        values[k] = getattr(v, kind)
    out["hparams"]["start"] = values
if hm.SESSION_END_INFO_TAG in hp:
    end = hm.parse_session_end_info_plugin_data(hp[hm.SESSION_END_INFO_TAG])
    out["hparams"]["end_status"] = end.status
print(json.dumps(out))
