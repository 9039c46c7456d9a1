"""The launch scripts print (DRY_RUN=1) or run the exact launch lines, with stand-in srun, jsrun,
mpiexec and horovodrun on PATH that record their arguments instead of launching anything."""
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from conftest import REPO

LAUNCH = REPO / "scripts" / "launch"
CONFIG = "deepcam/configs/demo.yaml"


# A launcher exits with STUB_EXIT after STUB_SLEEP seconds; with STUB_WAIT_FOR_SIGNAL it first
# waits (up to 30 s) for SIGUSR1, records it and exits then, as training does after its checkpoint.
LAUNCHER_STUB = """#!/bin/bash
{ printf %s TOOL; printf " %q" "$@"; echo; } >> "CALLS"
sleep "${STUB_SLEEP:-0}"
if [ -n "${STUB_WAIT_FOR_SIGNAL:-}" ]; then
  sleep 30 &
  trap 'kill $!; echo "TOOL got USR1" >> "CALLS"; exit "${STUB_EXIT:-0}"' USR1
  touch "CALLS.started"
  wait
  exit 99
fi
exit "${STUB_EXIT:-0}"
"""
RECORDER_STUB = """#!/bin/bash
{ printf %s TOOL; printf " %q" "$@"; echo; } >> "CALLS"
"""


@pytest.fixture
def env(tmp_path):
    """PATH with recording stand-ins first, a fake virtualenv, a data folder and a work folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "jsrun", "mpiexec", "horovodrun", "scontrol", "brequeue"):
        stub = bin_dir / tool
        text = RECORDER_STUB if tool in ("scontrol", "brequeue") else LAUNCHER_STUB
        stub.write_text(text.replace("TOOL", tool).replace("CALLS", str(tmp_path / "calls")))
        stub.chmod(0o755)
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("# stand-in virtualenv\n")
    (tmp_path / "data").mkdir()
    hosts = tmp_path / "hosts"
    outside_jobs = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SLURM_", "LSB_", "LS_")) and k != "MAX_REQUEUES"}
    return {**outside_jobs, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "VENV": str(tmp_path / "venv"), "SLURM_SUBMIT_DIR": str(REPO), "LS_SUBCWD": str(REPO),
            "LSB_DJOB_HOSTFILE": str(hosts), "OUT": str(tmp_path / "out"), "APP": "deepcam",
            "CONFIG": CONFIG}


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
    assert shlex.split(train)[:4] == ["srun", "--kill-on-bad-exit=1", "-n", str(4 * nodes)]
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


# --- the README's dry runs, outside a job -------------------------------------------------------

def readme_dry_runs():
    text = (REPO / "README.md").read_text()
    return re.findall(r"`(DRY_RUN=1 [^`]*bash scripts/launch/\S+)`", text)


def test_the_readmes_dry_runs_work_outside_a_job_with_only_the_variables_they_name(tmp_path):
    lines = readme_dry_runs()
    assert {line.split()[-1] for line in lines} == {"scripts/launch/perlmutter.sbatch",
                                                   "scripts/launch/summit.lsf"}
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no SLURM_*, LSB_*, REPO, ...
    for line in lines:
        result = subprocess.run(["bash", "-c", line], cwd=REPO, env=bare, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, (line, result.stderr)
        words = shlex.split(result.stdout)
        ranks = 16 * (4 if "perlmutter" in line else 6)
        assert words[words.index("-n") + 1] == str(ranks), result.stdout
        assert train_args(result.stdout)[:5] == [
            "deepcam/train.py", "--config", "deepcam/configs/mlperf.yaml", "--output-dir",
            str(REPO / "runs" / "deepcam-mlperf")]


@pytest.mark.parametrize("script, variable", [("perlmutter.sbatch", "SLURM_JOB_NUM_NODES"),
                                              ("summit.lsf", "NODES")])
def test_a_dry_run_without_the_node_count_names_the_variable(tmp_path, script, variable):
    result = subprocess.run(["bash", str(LAUNCH / script)], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={"PATH": os.environ["PATH"],
                                                        "HOME": str(tmp_path), "DRY_RUN": "1"})
    assert result.returncode == 2, result.stderr
    assert f"e.g. {variable}=16" in result.stderr and "dry run" in result.stderr


# --- preemption: warning signal, requeue on exit 75 ----------------------------------------------

def test_the_scripts_ask_for_a_warning_signal_and_allow_requeues():
    sbatch = (LAUNCH / "perlmutter.sbatch").read_text().splitlines()
    assert {"#SBATCH --signal=B:USR1@180", "#SBATCH --requeue",
            "#SBATCH --open-mode=append"} <= set(sbatch)
    lsf = (LAUNCH / "summit.lsf").read_text().splitlines()
    assert {"#BSUB -wa USR1", "#BSUB -wt 3"} <= set(lsf)


REQUEUE = {"perlmutter.sbatch": "scontrol requeue 7", "summit.lsf": "brequeue 7"}
JOB = {"perlmutter.sbatch": {"SLURM_JOB_NUM_NODES": 1, "SLURM_JOB_ID": 7},
       "summit.lsf": {"LSB_JOBID": 7}}


def launcher_calls(tmp_path):
    return [c for c in calls(tmp_path) if c.startswith(("srun", "jsrun"))]


@pytest.mark.parametrize("script", list(REQUEUE))
@pytest.mark.parametrize("exit_code, job_exit, requeued", [(0, 0, False), (75, 0, True),
                                                           (1, 1, False)])
def test_exit_code_decides_the_requeue(env, tmp_path, script, exit_code, job_exit, requeued):
    result = launch(script, env, STUB_EXIT=exit_code, **JOB[script])
    assert result.returncode == job_exit, result.stderr
    assert len(launcher_calls(tmp_path)) == 1
    assert (REQUEUE[script] in calls(tmp_path)) == requeued, calls(tmp_path)
    assert len(calls(tmp_path)) == 1 + requeued
    if exit_code == 1:
        assert "failed with exit code 1: not requeued" in result.stderr
    if requeued:
        assert "requeue 1 of at most 10" in result.stderr


@pytest.mark.parametrize("script", list(REQUEUE))
def test_requeues_stop_at_the_cap(env, tmp_path, script):
    def requeue(done):
        if script == "summit.lsf":  # LSF has no count: the script keeps one per job id
            os.makedirs(tmp_path / "out", exist_ok=True)
            (tmp_path / "out" / ".requeues-7").write_text(f"{done}\n")
        return launch(script, env, STUB_EXIT=75, MAX_REQUEUES=3, SLURM_RESTART_COUNT=done,
                      **JOB[script])

    below = requeue(2)
    assert below.returncode == 0 and "requeue 3 of at most 3" in below.stderr, below.stderr
    assert calls(tmp_path)[-1] == REQUEUE[script]
    if script == "summit.lsf":
        assert (tmp_path / "out" / ".requeues-7").read_text().strip() == "3"
    at_cap = requeue(3)
    assert at_cap.returncode == 75, at_cap.stderr
    assert "already requeued 3 times (MAX_REQUEUES=3): not requeued" in at_cap.stderr
    assert calls(tmp_path).count(REQUEUE[script]) == 1 and len(launcher_calls(tmp_path)) == 2


@pytest.mark.parametrize("script, signal_name", [("perlmutter.sbatch", "SIGUSR1"),
                                                 ("perlmutter.sbatch", "SIGTERM"),
                                                 ("summit.lsf", "SIGUSR1")])
def test_a_signal_to_the_batch_shell_reaches_the_step_which_is_requeued(env, tmp_path, script,
                                                                        signal_name):
    if script == "summit.lsf":
        (tmp_path / "hosts").write_text("batch1\nh0\n")
    job = subprocess.Popen(["bash", str(LAUNCH / script)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           env={**env, "STUB_WAIT_FOR_SIGNAL": "1", "STUB_EXIT": "75",
                                **{k: str(v) for k, v in JOB[script].items()}})
    started = tmp_path / "calls.started"
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the stand-in launcher never started"
    job.send_signal(getattr(signal, signal_name))
    try:
        _, err = job.communicate(timeout=20)  # the stand-in alone would wait 30 s
    finally:
        job.kill()
    assert job.returncode == 0, err
    launcher = "srun" if script == "perlmutter.sbatch" else "jsrun"
    assert calls(tmp_path)[1:] == [f"{launcher} got USR1", REQUEUE[script]]
    assert f"{signal_name} received" in err


def test_a_signal_during_staging_requeues_without_starting_training(env, tmp_path):
    job = subprocess.Popen(["bash", str(LAUNCH / "perlmutter.sbatch")], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**env, "STUB_SLEEP": "2", "DATA_DIR": str(tmp_path / "data"),
                                "STAGE_DIR": str(tmp_path / "stage"), "SLURM_JOB_NUM_NODES": "1",
                                "SLURM_JOB_ID": "7"})
    deadline = time.monotonic() + 30
    while not calls(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # while the staging step runs
    try:
        _, err = job.communicate(timeout=20)
    finally:
        job.kill()
    assert job.returncode == 0, err
    staging, requeue = calls(tmp_path)
    assert "--ntasks-per-node=1" in staging and requeue == "scontrol requeue 7"
    assert "came before training started; not starting it" in err
