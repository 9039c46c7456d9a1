"""Resume across rank counts and after a finished run: the LR schedule keeps its place in epochs,
the change of world is reported, and a run that reached its target stays finished."""
import json

import numpy as np
import pytest

from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_tfrecord
from test_distributed import checkpoint_weights

TRAIN = REPO / "cosmoflow" / "train.py"
MODEL = {"name": "mlperf", "head": "global_pool", "width_scale": 0.125, "dropout": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosmo")
    write_tfrecord(str(root), size=8, train=32, val=8, seed=3)
    return root


def config(tmp_path, name, data, train):
    return write_config(tmp_path / f"{name}.yaml", {
        "output_dir": str(tmp_path / name), "seed": 2, "model": MODEL,
        "data": {"format": "tfrecord", "root": str(data), "resolution": 8},
        "train": {"optimizer": "sgd", "momentum": 0.9, **train}, "log": {"progress": False}})


def run_ok(ranks, args):
    result = run_ranks(ranks, [TRAIN, *map(str, args)], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


STRONG = {"epochs": 4, "scaling": "strong", "global_batch": 8,
          "lr": {"base": 0.05, "base_batch": 8, "warmup_epochs": 1, "decay": "step",
                 "decay_epochs": [2], "decay_factors": [0.5]}}


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_strong_scaling_resume_on_other_rank_count_matches_uninterrupted(data, tmp_path,
                                                                         first, then):
    run_ok(2, ["--config", config(tmp_path, "whole", data, STRONG)])
    cut = config(tmp_path, "cut", data, STRONG)
    run_ok(first, ["--config", cut, "--epochs", "2"])
    out = run_ok(then, ["--config", cut, "--resume", "--epochs", "4"])
    assert (f"resuming on {then} rank(s) a run checkpointed on {first}: local batch "
            f"{8 // first} -> {8 // then}, global batch 8 -> 8, peak LR 0.05 -> 0.05") in out
    assert "the LR schedule continues at epoch 2" in out
    for a, b in zip(checkpoint_weights(tmp_path / "whole", MODEL, 8),
                    checkpoint_weights(tmp_path / "cut", MODEL, 8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    whole, resumed = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "cut")
    assert [r["lr"] for r in resumed] == pytest.approx([r["lr"] for r in whole])
    assert [r["lr"] for r in resumed] == pytest.approx([0.05, 0.05, 0.025, 0.025])


def test_weak_scaling_resume_continues_the_schedule_at_the_new_global_batch(data, tmp_path):
    weak = {"epochs": 4, "local_batch": 4, "lr": {
        "base": 0.01, "base_batch": 4, "rule": "linear", "warmup_epochs": 1, "decay": "step",
        "decay_epochs": [4], "decay_factors": [0.5]}}
    cfg = config(tmp_path, "weak", data, weak)
    run_ok(1, ["--config", cfg, "--epochs", "2"])  # 8 steps per epoch at global batch 4
    out = run_ok(2, ["--config", cfg, "--resume", "--epochs", "5"])  # 4 steps at global batch 8
    assert ("local batch 4 -> 4, global batch 4 -> 8, peak LR 0.01 -> 0.02; the LR schedule "
            "continues at epoch 2 with LR 0.02") in out
    # Each record holds the LR of the epoch's last step: the new peak through epoch 4, decayed
    # in epoch 5. A position kept in raw steps would run 2 epochs ahead and decay in epoch 3.
    lrs = [r["lr"] for r in read_metrics(tmp_path / "weak")]
    assert lrs == pytest.approx([0.01, 0.01, 0.02, 0.02, 0.01])


def test_a_run_that_reached_its_target_stays_finished_on_resume(data, tmp_path):
    cfg = config(tmp_path, "target", data, {
        "epochs": 3, "local_batch": 4, "target": {"metric": "val_mae", "value": 100.0}})
    out = run_ok(1, ["--config", cfg])
    assert "target val_mae <= 100 reached" in out
    records = read_metrics(tmp_path / "target")
    assert len(records) == 1
    latest = json.loads((tmp_path / "target" / "checkpoints" / "latest.json").read_text())
    assert latest["run_done"] is True and latest["epoch"] == 0

    again = run_ok(1, ["--config", cfg, "--resume", "--epochs", "6"])
    assert "the run already finished at stage 0 epoch 1: target val_mae <= 100 reached" in again
    assert "done: 0 epochs trained" in again
    assert read_metrics(tmp_path / "target") == records
