"""Starts the real optuna-dashboard on 127.0.0.1 over STORAGE and prints its API's view of the studies as JSON.

usage: optuna_dashboard_probe.py STORAGE
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

storage = sys.argv[1]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
exe = os.path.join(os.path.dirname(sys.executable), "optuna-dashboard")
proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    deadline = time.time() + 60
    studies = None
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                studies = json.loads(r.read())
            break
        except Exception:
            time.sleep(0.3)
    if studies is None:
        sys.exit("optuna-dashboard did not answer: " + proc.stderr.read1(4096).decode(errors="replace") if proc.poll() is not None else "optuna-dashboard did not answer")
    detail = []
    for s in studies["study_summaries"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{s['study_id']}", timeout=30) as r:
            detail.append(json.loads(r.read()))
    print(json.dumps({"studies": studies, "detail": detail}))
finally:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
