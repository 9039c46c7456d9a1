"""Shared helpers: tiny synthetic datasets and launching training under mpiexec with a timeout."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def launch_env(extra=None):
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


def command(ranks, args):
    python = [sys.executable, *map(str, args)]
    return python if ranks == 1 else ["mpiexec", "-n", str(ranks), *python]


def run_ranks(ranks, args, timeout=300, env=None):
    """Run `python args...` on `ranks` MPI ranks; a hang past `timeout` fails the test."""
    proc = subprocess.Popen(command(ranks, args), cwd=REPO, env=launch_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"hung for {timeout}s: {' '.join(command(ranks, args))}\n{out[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_metrics(out_dir):
    with open(Path(out_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def write_cosmo_stages(root, train, val, seed):
    """16^3 CosmoFlow TFRecords in <root>/full and their 8^3 coarsening in <root>/coarse."""
    from cosmoflow.coarsen import coarsen_tfrecord_dataset
    from cosmoflow.make_data import write_tfrecord
    write_tfrecord(str(root / "full"), size=16, train=train, val=val, seed=seed)
    coarsen_tfrecord_dataset(str(root / "full"), str(root / "coarse"))
    return root


@pytest.fixture(autouse=True)
def no_mpi_in_the_test_process():
    """MPI started inside pytest (hvd.init) leaks its singleton environment into every later
    mpiexec started without an explicit env, which then exits 1 silently: run it in a child."""
    yield
    hvd = sys.modules.get("horovod.tensorflow")
    assert hvd is None or not hvd.is_initialized(), \
        "this test started Horovod in the pytest process; run it with run_ranks() instead"
