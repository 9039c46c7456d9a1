"""Preemption on 2 ranks: a scheduler's signal at any rank and any moment makes every rank write
(rank 0) one checkpoint of the same point and exit with 75; --resume then ends with the weights of
an uninterrupted run. Signals are sent by TRAIN_FAULTS (common/faults.py) at chosen points."""
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from common.data import ShardedDataset
from common.distributed import World
from common.preemption import EXIT_PREEMPTED, StopRequests
from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_tfrecord
from test_distributed import checkpoint_weights

TRAIN = REPO / "cosmoflow" / "train.py"
MODEL = {"name": "mlperf", "head": "global_pool", "width_scale": 0.125, "dropout": 0.0}
STEPS = 8  # per epoch: 32 samples, 2 ranks, local batch 2
# Runs train.py and records how this rank's process ended (code and time) in EXIT_DIR.
RECORDER = """
import json, os, runpy, sys, time
code = "no exit"
try:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
    raise
finally:
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
    with open(os.path.join(os.environ["EXIT_DIR"], f"rank{rank}.json"), "w") as f:
        json.dump({"code": code, "time": time.time()}, f)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmo")
    write_tfrecord(str(root), size=8, train=32, val=8, seed=3)
    return root


def config(tmp_path, name, data, **log):
    return write_config(tmp_path / f"{name}.yaml", {
        "output_dir": str(tmp_path / name), "seed": 2, "deterministic": True, "model": MODEL,
        "data": {"format": "tfrecord", "root": str(data), "resolution": 8},
        "train": {"optimizer": "sgd", "momentum": 0.9, "epochs": 2, "local_batch": 2,
                  "lr": {"base": 0.01, "warmup_epochs": 1}},
        "log": {"progress": False, "every_steps": 1, **log}})


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    result = run_ranks(2, [TRAIN, "--config", config(tmp, "whole", data)], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    return tmp / "whole"


def run_recorded(tmp_path, args, faults="", ranks=2):
    """(result, [each rank's exit record]) of train.py under TRAIN_FAULTS=`faults`."""
    exits = tmp_path / "exits"
    exits.mkdir(exist_ok=True)
    for old in exits.iterdir():
        old.unlink()
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER)
    result = run_ranks(ranks, [recorder, TRAIN, *map(str, args)], timeout=240,
                       env={"TRAIN_FAULTS": faults, "EXIT_DIR": str(exits)})
    records = [json.loads((exits / f"rank{r}.json").read_text())
               if (exits / f"rank{r}.json").exists() else None for r in range(ranks)]
    return result, records


def assert_preempted(result, records, message):
    assert result.returncode == EXIT_PREEMPTED, result.stdout[-3000:]
    assert [r and r["code"] for r in records] == [EXIT_PREEMPTED] * 2, result.stdout[-3000:]
    assert abs(records[0]["time"] - records[1]["time"]) < 10  # together, no rank left waiting
    assert message in result.stdout, result.stdout[-3000:]


def latest(out):
    return json.loads((out / "checkpoints" / "latest.json").read_text())


def resume_matches(tmp_path, cfg, out, reference):
    result, records = run_recorded(tmp_path, ["--config", cfg, "--resume"])
    assert result.returncode == 0 and [r["code"] for r in records] == [0, 0], \
        result.stdout[-3000:]
    for a, b in zip(checkpoint_weights(reference, MODEL, 8), checkpoint_weights(out, MODEL, 8)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    whole, resumed = read_metrics(reference), read_metrics(out)
    assert [(r["stage"], r["epoch"]) for r in resumed] == [(0, 0), (0, 1)]  # no gap, no repeat
    for key in ("train_loss", "val_loss", "lr"):  # train_loss: the whole epoch, across the stop
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in whole], rel=1e-5)
    return result.stdout


def test_sigterm_to_every_rank_mid_epoch(data, tmp_path, uninterrupted):
    cfg = config(tmp_path, "cut", data)
    # The signal comes before step 3; step 4 carries it in its allreduce, read right after.
    result, records = run_recorded(tmp_path, ["--config", cfg], "step:signal=TERM,at=3")
    assert_preempted(result, records, f"stopped by SIGTERM at stage 'main' epoch 1 step 4/"
                     f"{STEPS}; checkpoint written; continue with --resume")
    position = latest(tmp_path / "cut")
    assert (position["stage"], position["epoch"], position["step"]) == (0, 0, 4)
    assert not (tmp_path / "cut" / "metrics.jsonl").exists()  # the epoch is logged when it ends

    other, _ = run_recorded(tmp_path, ["--config", cfg, "--resume"], ranks=1)
    assert other.returncode not in (0, EXIT_PREEMPTED)
    assert ("was written inside epoch 1 (step 4) on 2 rank(s) with local batch 2; it resumes "
            "exactly only on the same") in other.stdout, other.stdout[-3000:]

    resume_matches(tmp_path, cfg, tmp_path / "cut", uninterrupted)


def test_sigusr1_to_rank_1_only_in_the_second_epoch(data, tmp_path, uninterrupted):
    cfg = config(tmp_path, "usr1", data)
    result, records = run_recorded(tmp_path, ["--config", cfg], f"step:signal=USR1,rank=1,"
                                   f"at={STEPS + 5}")
    assert_preempted(result, records, f"stopped by SIGUSR1 at stage 'main' epoch 2 step 6/{STEPS}")
    position = latest(tmp_path / "usr1")
    assert (position["epoch"], position["step"]) == (1, 6)
    assert [r["epoch"] for r in read_metrics(tmp_path / "usr1")] == [0]
    resume_matches(tmp_path, cfg, tmp_path / "usr1", uninterrupted)


@pytest.mark.parametrize("faults, message", [
    # during validation, on one rank: the epoch's own checkpoint is the stop point
    ("validation:signal=USR1,rank=1,at=1", "stopped by SIGUSR1 at the end of stage 'main' epoch 1"),
    # SIGINT while rank 0 writes the epoch's checkpoint: no KeyboardInterrupt inside the write
    ("checkpoint.write:signal=INT,rank=0,at=1", "stopped by SIGINT at the end of stage 'main' "
                                                "epoch 1"),
])
def test_signal_during_validation_or_checkpoint_write_stops_at_the_epoch_end(
        data, tmp_path, uninterrupted, faults, message):
    cfg = config(tmp_path, "end", data)
    result, records = run_recorded(tmp_path, ["--config", cfg], faults)
    assert_preempted(result, records, message)
    position = latest(tmp_path / "end")
    assert (position["epoch"], position.get("step")) == (0, None)
    resume_matches(tmp_path, cfg, tmp_path / "end", uninterrupted)


def test_second_signal_while_the_stop_checkpoint_is_written(data, tmp_path, uninterrupted):
    cfg = config(tmp_path, "twice", data)
    result, records = run_recorded(
        tmp_path, ["--config", cfg],
        "step:signal=USR1,rank=1,at=3;checkpoint.write:signal=TERM,rank=0,at=1")
    assert_preempted(result, records, f"stopped by SIGUSR1 at stage 'main' epoch 1 step 4/{STEPS}")
    assert [p.name for p in (tmp_path / "twice" / "checkpoints").iterdir()
            if p.name.startswith(".tmp")] == []
    assert latest(tmp_path / "twice")["step"] == 4
    resume_matches(tmp_path, cfg, tmp_path / "twice", uninterrupted)


def test_hard_kill_with_periodic_checkpoints_loses_at_most_the_interval(
        data, tmp_path, uninterrupted):
    # Steps slowed to 0.5 s on rank 0, checkpoints every 0.3 s: rank 0's clock asks after each
    # step that follows a save, the next step carries the request to every rank, so saves land
    # on steps 2 and 4; a SIGKILL before step 6 (no handler runs) loses step 5: the interval
    # and the step that carries the request.
    cfg = config(tmp_path, "killed", data, checkpoint_every_minutes=0.005)
    result, _ = run_recorded(tmp_path, ["--config", cfg],
                             "step:sleep=0.5,rank=0;step:kill,rank=0,at=6")
    assert result.returncode not in (0, EXIT_PREEMPTED)
    position = latest(tmp_path / "killed")
    assert (position["epoch"], position["step"]) == (0, 4)
    for step in (2, 4):
        assert f"checkpoint at stage 'main' epoch 1 step {step}/8 (log.checkpoint_every_minutes)" \
            in result.stdout, result.stdout[-3000:]
    resume_matches(tmp_path, cfg, tmp_path / "killed", uninterrupted)


def test_a_resumed_epoch_reads_the_remaining_samples_in_the_same_order():
    def load(key):
        return tf.cast(key, tf.float32), tf.cast(key, tf.float32)
    for shuffle in ("global", "local"):
        data = ShardedDataset(np.arange(40), load, 3, rank=1, size=2, seed=5, shuffle=shuffle)
        whole = np.concatenate([x.numpy() for x, _, _ in data.epoch(2)])
        rest = np.concatenate([x.numpy() for x, _, _ in data.epoch(2, first_step=4)])
        assert len(rest) == len(whole) - 12 > 0
        np.testing.assert_array_equal(rest, whole[12:])


def test_handlers_only_note_the_signal_and_are_removed_afterwards():
    requests = StopRequests(World(), every_minutes=0)
    before = signal.getsignal(signal.SIGINT)
    requests.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # Python's default would raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGUSR1)  # the default would end the process
        requests.update()
        assert list(requests.variable.numpy()) == [0.0, 1.0, 1.0, 0.0]  # TERM, USR1, INT, save
    finally:
        requests.uninstall()
    assert signal.getsignal(signal.SIGINT) is before
