"""Starts the real `tensorboard` over LOGDIR with the given loader, waits until RUN's EPOCHS misclassified-sample
grids (`val/misclassified`), confusion matrices and PR curves have loaded, and prints as JSON what the images and
text routes serve: each grid fetched through `individualImage` and decoded with Pillow (format, mode, size, and per
grid cell the tile's pixels sampled every ZOOM pixels and the count of green and red label pixels), and the
`val/misclassified_labels` tables.

With SHOT_DIR and CHROMIUM, it then screenshots the images and pr_curves dashboards with headless Chromium into
SHOT_DIR/images.png and SHOT_DIR/pr_curves.png while the server still runs, and reports each one's size and pixel
standard deviation (Pillow).

usage: tb_grid.py LOGDIR false|true RUN EPOCHS TILE LABEL GAP ZOOM [SHOT_DIR CHROMIUM]
"""
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

from PIL import Image, ImageStat

import tb_http

logdir, load_fast, run = sys.argv[1], sys.argv[2], sys.argv[3]
epochs, tile, label, gap, zoom = (int(a) for a in sys.argv[4:9])
shots = sys.argv[9:11]
GRID, TABLE = "val/misclassified", "val/misclassified_labels"
q = lambda **kw: urllib.parse.urlencode(kw)


def ink(rgb):
    r, g, b = rgb
    if g > 150 and r < 120 and b < 120:
        return "green"
    if r > 180 and g < 120 and b < 120:
        return "red"
    return None


def decode(png):
    img = Image.open(io.BytesIO(png))
    img.load()
    rgb = img.convert("RGB")
    columns, rows = (img.width - gap) // (tile + gap), (img.height - gap) // (tile + label + gap)
    cells = []
    for i in range(columns * rows):
        x0, y0 = gap + (i % columns) * (tile + gap), gap + (i // columns) * (tile + label + gap)
        pixels = [list(rgb.getpixel((x0 + x, y0 + y))) for y in range(0, tile, zoom) for x in range(0, tile, zoom)]
        strip = [ink(rgb.getpixel((x0 + x, y0 + tile + y))) for y in range(label) for x in range(tile)]
        cells.append({"pixels": pixels, "green": strip.count("green"), "red": strip.count("red")})
    return {"format": img.format, "mode": img.mode, "width": img.width, "height": img.height, "columns": columns, "rows": rows, "cells": cells}


def screenshot(chromium, url, path):
    """Headless Chromium, no network beyond 127.0.0.1, a throwaway profile, bounded in time."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
               "--user-data-dir=" + profile, "--virtual-time-budget=15000", "--screenshot=" + path, url]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    if done.returncode != 0 or not os.path.exists(path):
        sys.exit(f"chromium failed ({done.returncode}) on {url}:\n{done.stdout[-3000:]}")
    img = Image.open(path)
    img.load()
    stat = ImageStat.Stat(img.convert("L"))
    return {"path": path, "format": img.format, "width": img.width, "height": img.height, "stddev": stat.stddev[0],
            "colours": len(img.convert("RGB").getcolors(1 << 20) or [])}


with tb_http.serve(logdir, load_fast) as api:
    deadline = time.time() + 90
    while True:
        image_tags = api.get("data/plugin/images/tags")
        pr_tags = api.get("data/plugin/pr_curves/tags")
        text_tags = api.get("data/plugin/text/tags")
        listed = api.get("data/plugin/images/images?" + q(run=run, tag=GRID)) if GRID in image_tags.get(run, {}) else []
        if len(listed) >= epochs and pr_tags.get(run) and TABLE in text_tags.get(run, []):
            break
        if time.time() > deadline:
            sys.exit(f"{run} never loaded: image tags {image_tags}, {len(listed)} grids, text tags {text_tags}")
        time.sleep(0.5)
    grids = [dict(step=e["step"], **decode(api.raw("data/plugin/images/individualImage?" + e["query"]))) for e in listed]
    tables = api.get("data/plugin/text/text?" + q(run=run, tag=TABLE))
    out = {"image_tags": image_tags, "grids": grids, "tables": [{"step": t["step"], "text": t["text"]} for t in tables],
           "provider": api.get("data/environment").get("debug", {}).get("data_provider", "")}
    if shots:
        shot_dir, chromium = shots
        os.makedirs(shot_dir, exist_ok=True)
        out["screenshots"] = {name: screenshot(chromium, api.base + "#" + name, os.path.join(shot_dir, name + ".png"))
                              for name in ("images", "pr_curves")}
    print(json.dumps(out))
