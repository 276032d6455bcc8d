"""Starts the real `tensorboard` on 127.0.0.1 (a free port) over LOGDIR with the given loader, waits until it has
loaded RUNS, and prints its HTTP API answers as JSON: runs, scalars, histograms, text and the HParams
experiment and session groups.

usage: tb_serve.py LOGDIR false|true RUN [RUN...]
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

logdir, load_fast, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
proc = subprocess.Popen(
    [exe, "--logdir", logdir, "--host", "127.0.0.1", "--port", "0", "--load_fast", load_fast, "--reload_interval", "1"],
    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
)
lines = []
found = threading.Event()
url = {}


def read_stderr():
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m and not found.is_set():
            url["base"] = m.group(1)
            found.set()


threading.Thread(target=read_stderr, daemon=True).start()
try:
    if not found.wait(90):
        sys.exit("tensorboard did not start:\n" + "".join(lines))
    base = url["base"]

    def get(path):
        with urllib.request.urlopen(base + path, timeout=30) as r:
            return json.loads(r.read())

    def post(path, body):
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    deadline = time.time() + 90
    while True:
        tags = get("data/plugin/scalars/tags")
        hist_tags = get("data/plugin/histograms/tags")
        if all(r in tags and tags[r] for r in runs) and all(r in hist_tags for r in runs):
            break
        if time.time() > deadline:
            sys.exit(f"runs {runs} never loaded; scalar tags: {tags}")
        time.sleep(0.5)
    q = lambda **kw: urllib.parse.urlencode(kw)
    out = {"runs": get("data/runs"), "scalar_tags": tags, "histogram_tags": hist_tags, "scalars": {}, "histograms": {}, "text": {}}
    for run in runs:
        out["scalars"][run] = {t: get("data/plugin/scalars/scalars?" + q(run=run, tag=t)) for t in tags[run]}
        out["histograms"][run] = {t: get("data/plugin/histograms/histograms?" + q(run=run, tag=t)) for t in hist_tags.get(run, {})}
        text_tags = get("data/plugin/text/tags").get(run, [])
        out["text"][run] = {t: get("data/plugin/text/text?" + q(run=run, tag=t)) for t in text_tags}
    out["experiment"] = post("data/plugin/hparams/experiment", {"experimentName": "", "includeMetrics": True})
    out["session_groups"] = post("data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 100, "includeMetrics": True})
    out["provider"] = get("data/environment").get("debug", {}).get("data_provider", "")
    print(json.dumps(out))
finally:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
