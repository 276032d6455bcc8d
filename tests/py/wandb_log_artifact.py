"""The real wandb client (0.31.0 in the test venv) logging one model artifact offline, as the reference the
wandb plugin's Artifact records are compared with. Writes an offline run under DIR/wandb and prints its path.

usage: wandb_log_artifact.py DIR NAME ALIASES_JSON METADATA_JSON FILE...
"""
import json
import os
import sys

os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"

import wandb  # noqa: E402

out_dir, name, aliases, metadata, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5:]
run = wandb.init(project="bz-test", dir=out_dir, settings=wandb.Settings(x_stats_sampling_interval=3600, x_disable_stats=True))
artifact = wandb.Artifact(name, type="model", metadata=metadata)
for f in files:
    artifact.add_file(f)
run.log_artifact(artifact, aliases=aliases)
run_dir = os.path.dirname(run.settings.sync_file)
run.finish()
print(run_dir)
