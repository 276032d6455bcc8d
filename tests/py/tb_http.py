"""The real `tensorboard` on 127.0.0.1 (a free port), for the scripts that query its HTTP API.

    with tb_http.serve(logdir, "false") as api:
        api.get("data/runs"); api.post("data/plugin/hparams/experiment", {...}); api.raw("data/plugin/images/...")
"""
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request


class Api:
    def __init__(self, base):
        self.base = base

    def raw(self, path):
        """The response body as bytes (images)."""
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.read()

    def get(self, path):
        return json.loads(self.raw(path))

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


@contextlib.contextmanager
def serve(logdir, load_fast):
    """Starts the server with `--load_fast load_fast`, yields an `Api` once it listens, and stops it afterwards."""
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
        yield Api(url["base"])
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
