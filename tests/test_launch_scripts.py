"""The launch scripts print (DRY_RUN=1) or run the exact launch lines, with stand-in srun, jsrun,
mpiexec and horovodrun on PATH that record their arguments instead of launching anything."""
import os
import shlex
import subprocess

import pytest

from conftest import REPO

LAUNCH = REPO / "scripts" / "launch"
CONFIG = "deepcam/configs/demo.yaml"


@pytest.fixture
def env(tmp_path):
    """PATH with recording stand-ins first, a fake virtualenv, a data folder and a work folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "jsrun", "mpiexec", "horovodrun"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/bash\n{{ printf %s {tool}; printf " %q" "$@"; echo; }} '
                        f'>> "{tmp_path}/calls"\n')
        stub.chmod(0o755)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("# stand-in virtualenv\n")
    (tmp_path / "data").mkdir()
    hosts = tmp_path / "hosts"
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": str(tmp_path / "venv"),
            "SLURM_SUBMIT_DIR": str(REPO), "LS_SUBCWD": str(REPO), "LSB_DJOB_HOSTFILE": str(hosts),
            "OUT": str(tmp_path / "out"), "APP": "deepcam", "CONFIG": CONFIG}


def launch(script, env, *args, **extra):
    environment = {**env, **{k: str(v) for k, v in extra.items()}}
    if script == "summit.lsf":  # the batch node, then each compute node once per slot
        nodes = int(extra.get("NODES", 1))
        hosts = ["batch1"] + [f"h{i}" for i in range(nodes) for _ in range(42)]
        open(environment["LSB_DJOB_HOSTFILE"], "w").write("\n".join(hosts) + "\n")
    return subprocess.run(["bash", str(LAUNCH / script), *map(str, args)], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=60)


def calls(tmp_path):
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def train_args(line):
    words = shlex.split(line)
    return words[words.index("python") + 1:]


@pytest.mark.parametrize("nodes", [1, 16])
def test_perlmutter_stages_then_launches_four_ranks_per_node(env, tmp_path, nodes):
    staging = {"DATA_DIR": tmp_path / "data", "STAGE_DIR": "/dev/shm/deepcam"}
    dry = launch("perlmutter.sbatch", env, "--epochs", "3", DRY_RUN=1,
                 SLURM_JOB_NUM_NODES=nodes, **staging)
    assert dry.returncode == 0, dry.stderr
    assert calls(tmp_path) == []  # a dry run launches nothing
    stage, train = dry.stdout.splitlines()
    assert shlex.split(stage)[:5] == ["srun", "-N", str(nodes), "--ntasks-per-node=1", "bash"]
    assert shlex.split(stage)[-2:] == ["/dev/shm/deepcam", str(tmp_path / "data")]
    assert shlex.split(train)[:3] == ["srun", "-n", str(4 * nodes)]
    assert train_args(train) == [
        "deepcam/train.py", "--config", CONFIG, "--output-dir", str(tmp_path / "out"), "--resume",
        "--data-dir", "/dev/shm/deepcam", "--set", "log.progress=false", "--epochs", "3"]

    real = launch("perlmutter.sbatch", env, "--epochs", "3", SLURM_JOB_NUM_NODES=nodes,
                  SLURM_JOB_ID=7, **staging)
    assert real.returncode == 0, real.stderr
    assert [shlex.split(c) for c in calls(tmp_path)] == [shlex.split(stage), shlex.split(train)]


@pytest.mark.parametrize("nodes", [1, 16])
def test_summit_launches_six_ranks_per_compute_node(env, tmp_path, nodes):
    result = launch("summit.lsf", env, "--resume", DRY_RUN=1, NODES=nodes,
                    DATA_DIR=tmp_path / "data", STAGE_DIR="/mnt/bb/me/deepcam",
                    TRAIN_ARGS="--epochs 2")
    assert result.returncode == 0, result.stderr
    stage, train = result.stdout.splitlines()
    assert shlex.split(stage)[:5] == ["jsrun", "-n", str(nodes), "-r", "1"]
    assert shlex.split(train)[:3] == ["jsrun", "-n", str(6 * nodes)]
    args = train_args(train)
    assert args[args.index("--data-dir") + 1] == "/mnt/bb/me/deepcam"
    assert args[-3:] == ["--epochs", "2", "--resume"] and "--resume" in args[:7]
    assert calls(tmp_path) == []


def test_local_and_horovodrun_lines(env, tmp_path):
    local = launch("local.sh", env, 2, CONFIG, "--epochs", "1", DRY_RUN=1)
    assert local.returncode == 0, local.stderr
    assert shlex.split(local.stdout) == ["mpiexec", "-n", "2", "python",
                                         str(REPO / "deepcam" / "train.py"), "--config", CONFIG,
                                         "--epochs", "1"]
    hvd = launch("horovodrun.sh", env, 8, CONFIG, "--resume", HOSTS="a:4,b:4")
    assert hvd.returncode == 0, hvd.stderr
    launched = [c for c in calls(tmp_path) if c != "mpiexec --version"]  # local.sh's probe
    assert [shlex.split(c) for c in launched] == [
        ["horovodrun", "-np", "8", "-H", "a:4,b:4", "python", str(REPO / "deepcam" / "train.py"),
         "--config", CONFIG, "--resume"]]


@pytest.mark.parametrize("script", ["perlmutter.sbatch", "summit.lsf", "local.sh",
                                    "horovodrun.sh"])
def test_a_missing_config_fails_before_anything_is_launched(env, tmp_path, script):
    missing = "deepcam/configs/nope.yaml"
    args = (2, missing) if script.endswith(".sh") else ()
    result = launch(script, env, *args, CONFIG=missing, SLURM_JOB_NUM_NODES=2, NODES=2,
                    DATA_DIR=tmp_path / "data", STAGE_DIR=tmp_path / "stage")
    assert result.returncode != 0
    assert missing in result.stderr
    assert calls(tmp_path) == [] and not (tmp_path / "stage").exists()


def test_staging_without_an_existing_data_dir_fails_first(env, tmp_path):
    result = launch("perlmutter.sbatch", env, SLURM_JOB_NUM_NODES=1,
                    DATA_DIR=tmp_path / "nowhere", STAGE_DIR=tmp_path / "stage")
    assert result.returncode == 2 and "needs DATA_DIR" in result.stderr
    assert calls(tmp_path) == []
