#!/usr/bin/env bash
# Set up (idempotent), write a small synthetic CosmoFlow dataset in the MLPerf TFRecord format
# (32^3 full cubes and their 16^3 coarsened copies), then train on 2 MPI ranks: a coarse stage
# followed by a full-resolution stage with the weights carried over.
# Output: runs/cosmoflow-demo/{metrics.jsonl,config.yaml,checkpoints/}.  Usage: scripts/demo.sh [N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RANKS="${1:-2}"
DATA="$ROOT/data/cosmoflow-demo"
OUT="$ROOT/runs/cosmoflow-demo"
PY="$ROOT/.venv/bin/python"

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if [ ! -f "$DATA/full/.complete-256" ]; then
  echo "[demo] writing synthetic 32^3 cubes (MLPerf TFRecord format) to $DATA/full"
  rm -rf "$DATA"
  "$PY" scripts/make_cosmoflow_data.py --format tfrecord --out "$DATA/full" --size 32 \
    --train 256 --val 64 --seed 0
  echo "[demo] coarsening them to 16^3 in $DATA/coarse"
  "$PY" scripts/coarsen_cosmoflow.py --format tfrecord --src "$DATA/full" --dst "$DATA/coarse"
  touch "$DATA/full/.complete-256"
else
  echo "[demo] reusing the dataset in $DATA"
fi

if [ -d "$OUT" ]; then
  echo "[demo] replacing the previous demo output in $OUT"
  rm -rf "$OUT"
fi
echo "[demo] training on $RANKS ranks: cosmoflow/configs/demo.yaml"
bash "$ROOT/scripts/launch/local.sh" "$RANKS" cosmoflow/configs/demo.yaml --output-dir "$OUT"
echo "[demo] done: metrics in $OUT/metrics.jsonl, checkpoints in $OUT/checkpoints"
