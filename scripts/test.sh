#!/usr/bin/env bash
# Set up (idempotent) and run the test suite, multi-rank tests included. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
echo "[test] running pytest"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
