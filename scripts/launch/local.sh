#!/usr/bin/env bash
# Train on N MPI ranks on this machine (a workstation, or one node interactively):
#
#   scripts/launch/local.sh N CONFIG [train.py options]
#   scripts/launch/local.sh 2 cosmoflow/configs/demo.yaml --epochs 1 --output-dir runs/try
#
# The app is the folder holding CONFIG's configs/ (cosmoflow/configs/demo.yaml -> cosmoflow);
# set APP for a config kept elsewhere. Paths in the arguments are relative to the current folder.
# Unlike the batch scripts this does not add --resume: pass it to continue a run.
# DRY_RUN=1 prints the launch line instead of running it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"                    # virtualenv made by scripts/setup.sh
MPIEXEC="${MPIEXEC:-mpiexec}"

# shellcheck source=single_job_args.sh
source "$ROOT/scripts/launch/single_job_args.sh"  # RANKS, CONFIG, APP; "$@": train.py options

CORES="$(nproc)"
OVERSUBSCRIBE=""
if "$MPIEXEC" --version 2>/dev/null | grep -q "Open MPI\|OpenRTE"; then
  # Open MPI refuses more ranks than cores, and running as root, unless told otherwise.
  if [ "$RANKS" -gt "$CORES" ]; then OVERSUBSCRIBE="--oversubscribe"; fi
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
fi
# Share the cores out: N TensorFlow processes each sizing thread pools to the whole machine thrash.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( CORES > RANKS ? CORES / RANKS : 1 ))}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # `common` without a pip install

# shellcheck disable=SC2086  # unquoted: an empty $OVERSUBSCRIBE must vanish
set -- "$MPIEXEC" -n "$RANKS" $OVERSUBSCRIBE python "$ROOT/$APP/train.py" --config "$CONFIG" "$@"
if [ "${DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "$@" | sed 's/ $//'
  echo
  exit 0
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
set -x
exec "$@"
