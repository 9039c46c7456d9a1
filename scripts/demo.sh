#!/usr/bin/env bash
# Set up (idempotent), then for each app: write its small synthetic demo dataset in the app's real
# on-disk format and train its configs/demo.yaml on N MPI ranks (a coarse stage, then full
# resolution with the weights carried over).
#
#   scripts/demo.sh                 # every app, 2 ranks
#   scripts/demo.sh cosmoflow 4     # one app, 4 ranks
#
# Output: runs/<app>-demo/{metrics.jsonl,config.yaml,checkpoints/}; data in data/<app>-demo/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
ALL_APPS=$(cd "$ROOT" && for d in */configs/demo.yaml; do echo "${d%%/*}"; done)
APPS="${1:-$ALL_APPS}"
RANKS="${2:-2}"

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

for APP in $APPS; do
  if [ ! -f "$APP/configs/demo.yaml" ]; then
    echo "[demo] unknown app '$APP' (apps with a demo: $(echo $ALL_APPS))" >&2
    exit 2
  fi
  DATA="$ROOT/data/$APP-demo"
  OUT="$ROOT/runs/$APP-demo"
  echo "[demo] $APP: synthetic data in $DATA"
  "$PY" -m "$APP.make_data" --demo "$DATA"
  if [ -d "$OUT" ]; then
    echo "[demo] $APP: replacing the previous demo output in $OUT"
    rm -rf "$OUT"
  fi
  echo "[demo] $APP: training $APP/configs/demo.yaml on $RANKS ranks"
  bash "$ROOT/scripts/launch/local.sh" "$RANKS" "$APP/configs/demo.yaml" \
    --data-dir "$DATA" --output-dir "$OUT"
  echo "[demo] $APP done: metrics in $OUT/metrics.jsonl, checkpoints in $OUT/checkpoints"
done
