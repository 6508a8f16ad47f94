#!/usr/bin/env bash
# The sweep on a Ray cluster, shown on one machine: a head node and a second node
# (1 CPU each, on loopback, the second with a resource of its own), the tune stage
# run against them through RAY_ADDRESS, a check that trials ran on both nodes, then
# the cluster stopped. Small synthetic data; under a minute on 2 cores.
#
#   scripts/ray_cluster_demo.sh [OUT]    OUT keeps the stage's outputs (default: a temp dir)
#
# On a real cluster the same stage runs with only RAY_ADDRESS set (see the README's
# "Sweeps"); the storage folder (--storage) must then be one every node can reach.
# `ray stop` stops every Ray process of this user on this machine: run the demo where
# no other Ray is running.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
PORT=${RAY_DEMO_PORT:-6390}
work=$(mktemp -d)
out=${1:-$work/out}
cleanup() {
    "$BIN/ray" stop --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# One token for the head, the second node and the driver (Ray's token authentication).
RAY_AUTH_TOKEN=$("$BIN/python" -c "import secrets; print(secrets.token_hex(32))")
export RAY_AUTH_TOKEN RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
node=(--node-ip-address=127.0.0.1 --num-cpus=1 --object-store-memory=200000000 --disable-usage-stats)

echo "== head node on 127.0.0.1:$PORT"
"$BIN/ray" start --head --port="$PORT" --include-dashboard=false --temp-dir="$work/ray" \
    "${node[@]}" >"$work/head.log" 2>&1 || { cat "$work/head.log"; exit 1; }
echo "== second node, joining it"
"$BIN/ray" start --address="127.0.0.1:$PORT" --resources='{"second_node": 1}' \
    "${node[@]}" >"$work/node.log" 2>&1 || { cat "$work/node.log"; exit 1; }

echo "== tiny data and params in $work"
"$BIN/python" - "$work" <<'PY'
import sys
from pathlib import Path

import yaml

from pipeline import common
from tests._idx import write_prepared

work = Path(sys.argv[1])
# Trials of a second or more: with shorter ones, the first node's worker (Tune reuses
# it) could finish every trial before the second node's worker has started.
write_prepared(work / "prepared" / "mnist", 6000, 100, 10)
with open(common.PARAMS_FILE, encoding="utf-8") as f:
    params = yaml.safe_load(f)
params["model"].update(hidden_sizes=[64], batch_norm=False, dropout=0.0)
params["train"].update(batch_size=16)
params["tune"].update(
    dataset="mnist", num_samples=1, max_concurrent_trials=2, epochs=3,
    asha={"grace_period": 1, "reduction_factor": 2},
    space={"train": {"scheduler": {"args": {"max_lr": {"grid": [0.02, 0.01, 0.005, 0.002]}}}}},
)
(work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
PY

echo "== the stage, with RAY_ADDRESS=127.0.0.1:$PORT"
RAY_ADDRESS="127.0.0.1:$PORT" "$BIN/python" pipeline/tune.py --prepared "$work/prepared" \
    --out "$out" --params "$work/params.yaml" --storage "$work/storage"

echo "== where the trials ran"
"$BIN/python" - "$out" <<'PY'
import sys

import pandas as pd

trials = pd.read_csv(f"{sys.argv[1]}/trials.csv")
print(trials[["trial_id", "train.scheduler.args.max_lr", "epochs", "stopped_early", "val_accuracy", "node_ids"]]
      .to_string(index=False))
nodes = {n for ids in trials["node_ids"] for n in ids.split(";")}
if len(nodes) < 2:
    sys.exit(f"FAIL: every trial ran on one node ({nodes})")
print(f"OK: {len(trials)} trials on {len(nodes)} nodes")
PY
