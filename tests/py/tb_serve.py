"""Starts the real `tensorboard` on 127.0.0.1 (a free port) over LOGDIR with the given loader, waits until it has
loaded RUNS, and prints its HTTP API answers as JSON: runs, scalars, histograms, text and the HParams
experiment and session groups.

usage: tb_serve.py LOGDIR false|true RUN [RUN...]
"""
import json
import sys
import time
import urllib.parse

import tb_http

logdir, load_fast, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
with tb_http.serve(logdir, load_fast) as api:
    get, post = api.get, api.post
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
