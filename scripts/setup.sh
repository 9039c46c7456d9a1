#!/usr/bin/env bash
# Idempotent set-up: OpenMPI (Debian) when missing, a virtualenv in .venv with the pinned stack,
# and Horovod 0.28.1 built from source against TensorFlow with MPI and Gloo.
# Source it or run it; afterwards `.venv/bin/python` has everything.
set -euo pipefail
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # quiet TensorFlow imports during the build
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
HOROVOD_VERSION=0.28.1

say() { echo "[setup] $*"; }
# pip, minus the noise some machines' pip configs print for every package.
pip_install() {
  "$PY" -m pip install -q "$@" 2> >(grep -v '^WARNING: Location' >&2)
}

if ! command -v mpiexec >/dev/null 2>&1 || ! command -v mpicxx >/dev/null 2>&1; then
  say "installing OpenMPI from Debian packages"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
else
  say "OpenMPI present: $(mpiexec --version | head -n1)"
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.requirements.sha"
# Reinstalled when the pins or the package list (pyproject.toml) change.
want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing requirements.txt"
  pip_install --upgrade pip wheel "setuptools<70"
  # mpi4py's manylinux wheel finds the system MPI at run time; its source build needs >20 GB RAM.
  pip_install --only-binary=mpi4py -r "$ROOT/requirements.txt"
  pip_install --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
else
  say "requirements.txt already installed"
fi

if ! "$PY" -c "import horovod.tensorflow" 2>/dev/null; then
  # Gloo's CMakeLists needs CMake 3.x: prefer the system cmake over any pip-installed CMake 4.
  if ! command -v cmake >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -qq cmake >/dev/null
  fi
  say "building Horovod $HOROVOD_VERSION (TensorFlow + MPI + Gloo); takes a few minutes the first time"
  PATH="/usr/bin:$PATH" HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    pip_install --no-build-isolation "horovod==$HOROVOD_VERSION"
else
  say "Horovod already built"
fi
"$VENV/bin/horovodrun" --check-build | sed 's/^/[setup] /'
