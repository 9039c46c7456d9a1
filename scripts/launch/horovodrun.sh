#!/usr/bin/env bash
# Train with Horovod's own launcher (no scheduler: a list of hosts reachable by ssh, or one machine):
#
#   scripts/launch/horovodrun.sh N CONFIG [train.py options]
#   HOSTS=node1:4,node2:4 scripts/launch/horovodrun.sh 8 deepcam/configs/mlperf.yaml --resume
#
# N ranks in all; HOSTS (host:slots,...) spreads them over machines, default this one. The app
# is the folder holding CONFIG's configs/ (set APP otherwise). Pass --resume to continue a run.
# DRY_RUN=1 prints the launch line instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
HOSTS="${HOSTS:-}"

# shellcheck source=single_job_args.sh
source "$ROOT/scripts/launch/single_job_args.sh"  # RANKS, CONFIG, APP; "$@": train.py options
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

HOST_ARGS=()
if [ -n "$HOSTS" ]; then HOST_ARGS=(-H "$HOSTS"); fi
set -- horovodrun -np "$RANKS" "${HOST_ARGS[@]}" python "$ROOT/$APP/train.py" --config "$CONFIG" "$@"
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "$@" | sed 's/ $//'
  echo
  exit 0
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
exec "$@"
