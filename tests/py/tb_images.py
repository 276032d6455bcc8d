"""Starts the real `tensorboard` over LOGDIR with the given loader, waits until RUN's EPOCHS confusion-matrix images
and its PR curves have loaded, and prints what the images and pr_curves routes serve as JSON: each image fetched
through `individualImage` and decoded with Pillow (format, mode, size, and the colour of one pixel near the top-left
corner of each of its CLASSES x CLASSES cells, where no count is drawn), and every PR curve tag's points.

usage: tb_images.py LOGDIR false|true RUN CLASSES EPOCHS
"""
import io
import json
import sys
import time
import urllib.parse

from PIL import Image

import tb_http

logdir, load_fast, run, classes, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
TAG = "val/confusion_matrix"
q = lambda **kw: urllib.parse.urlencode(kw)


def decode(png):
    img = Image.open(io.BytesIO(png))
    img.load()
    cell = img.width // classes
    rgb = img.convert("RGB")
    cells = [[list(rgb.getpixel((c * cell + 1, r * cell + 1))) for c in range(classes)] for r in range(classes)]
    return {"format": img.format, "mode": img.mode, "width": img.width, "height": img.height, "cells": cells}


with tb_http.serve(logdir, load_fast) as api:
    deadline = time.time() + 90
    while True:
        image_tags = api.get("data/plugin/images/tags")
        pr_tags = api.get("data/plugin/pr_curves/tags")
        listed = api.get("data/plugin/images/images?" + q(run=run, tag=TAG)) if TAG in image_tags.get(run, {}) else []
        if len(listed) >= epochs and len(pr_tags.get(run, {})) >= classes:
            break
        if time.time() > deadline:
            sys.exit(f"{run} never loaded: image tags {image_tags}, {len(listed)} images, pr_curves tags {pr_tags}")
        time.sleep(0.5)
    images = [dict(step=e["step"], **decode(api.raw("data/plugin/images/individualImage?" + e["query"]))) for e in listed]
    curves = {tag: api.get("data/plugin/pr_curves/pr_curves?" + q(run=run, tag=tag))[run] for tag in pr_tags[run]}
    out = {"image_tags": image_tags, "images": images, "pr_tags": pr_tags, "pr_curves": curves,
           "provider": api.get("data/environment").get("debug", {}).get("data_provider", "")}
    print(json.dumps(out))
