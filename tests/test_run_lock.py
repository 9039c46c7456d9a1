"""The output folder's lock: one live job at a time, stale locks taken over with a log line,
released at exit; under mpiexec a second job stops on every rank naming the holder."""
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from common import run_lock
from common.run_lock import RunLocked
from conftest import REPO, run_ranks, write_config


@pytest.fixture(autouse=True)
def no_held_locks(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("LSB_JOBID", raising=False)
    yield
    run_lock.release_all()


def plant(folder, pid, host=None, job=None):
    folder.mkdir(exist_ok=True)
    path = folder / run_lock.LOCK
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "job": job,
                                "since": "earlier"}))
    return path


@pytest.fixture
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_lock_names_host_pid_and_job_and_is_released(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    path = run_lock.acquire(str(tmp_path / "out"))
    held = json.loads(open(path).read())
    assert held["host"] == socket.gethostname() and held["pid"] == os.getpid()
    assert held["job"] == "4242"
    assert os.listdir(tmp_path / "out") == [run_lock.LOCK]  # no draft left behind
    run_lock.release_all()
    assert not os.path.exists(path)


def test_a_live_holder_refuses_a_second_job_naming_it(tmp_path, live_process, monkeypatch):
    monkeypatch.setenv("LSB_JOBID", "77")
    plant(tmp_path, live_process, job="99")
    with pytest.raises(RunLocked, match=f"pid {live_process} on {socket.gethostname()}, job 99"):
        run_lock.acquire(str(tmp_path))
    assert json.loads((tmp_path / run_lock.LOCK).read_text())["pid"] == live_process


def test_a_dead_holder_on_this_host_is_taken_over_with_a_log_line(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    plant(tmp_path, gone.pid)
    with caplog.at_level(logging.WARNING, logger="train"):
        run_lock.acquire(str(tmp_path))
    assert f"stale lock" in caplog.text and f"pid {gone.pid}" in caplog.text
    assert "process has ended" in caplog.text
    assert json.loads((tmp_path / run_lock.LOCK).read_text())["pid"] == os.getpid()


def test_an_earlier_run_of_the_same_job_is_taken_over(tmp_path, live_process, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    plant(tmp_path, live_process, host="other-node", job="5")  # requeued on another node
    run_lock.acquire(str(tmp_path))
    assert json.loads((tmp_path / run_lock.LOCK).read_text())["pid"] == os.getpid()


def test_another_node_holds_while_its_heartbeat_goes_and_not_after(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(run_lock, "STALE_AFTER_S", 1.0)
    path = plant(tmp_path, 1, host="other-node")
    beating = threading.Event()
    beating.set()

    def beat():
        while beating.is_set():
            os.utime(path)
            time.sleep(0.2)
    threading.Thread(target=beat, daemon=True).start()
    with pytest.raises(RunLocked, match="pid 1 on other-node"):
        run_lock.acquire(str(tmp_path))
    beating.clear()
    time.sleep(0.3)
    start = time.time()
    run_lock.acquire(str(tmp_path))  # heartbeat stopped: stale after STALE_AFTER_S
    assert time.time() - start < 3


def test_release_leaves_another_jobs_lock_alone(tmp_path, live_process):
    run_lock.acquire(str(tmp_path))
    plant(tmp_path, live_process)  # someone deleted ours and took it
    run_lock.release_all()
    assert json.loads((tmp_path / run_lock.LOCK).read_text())["pid"] == live_process


def test_second_job_on_the_folder_stops_every_rank_naming_the_holder(tmp_path, live_process):
    from cosmoflow.make_data import write_tfrecord
    write_tfrecord(str(tmp_path / "d"), size=8, train=4, val=2, seed=4)
    out = tmp_path / "out"
    plant(out, live_process, job="1234")
    cfg = write_config(tmp_path / "c.yaml", {
        "output_dir": str(out), "data": {"root": str(tmp_path / "d"), "resolution": 8},
        "model": {"name": "mlperf", "head": "flatten", "width_scale": 0.0625, "dropout": 0.0},
        "train": {"epochs": 1, "local_batch": 2}, "log": {"progress": False}})
    result = run_ranks(2, [REPO / "cosmoflow" / "train.py", "--config", cfg], timeout=120)
    assert result.returncode != 0, result.stdout[-3000:]
    holder = f"in use by another job (pid {live_process} on {socket.gethostname()}, job 1234"
    for rank in (0, 1):
        assert f"[rank {rank}] ERROR: {out} is {holder}" in result.stdout, result.stdout[-3000:]
    assert sorted(os.listdir(out)) == [run_lock.LOCK]  # nothing written, the lock left alone
