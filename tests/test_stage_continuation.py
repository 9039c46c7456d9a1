"""A stage that trains the previous stage's network keeps its model, optimizer state and compiled
step (one trace across resolutions), with the LR schedule restarted; another optimizer (or weights
that change shape) gets a fresh model and trace."""
import json

import numpy as np
import pytest
import tensorflow as tf

from common.lr import WarmupDecay
from conftest import REPO, read_metrics, run_ranks, write_config, write_cosmo_stages

DRIVER = REPO / "tests" / "mpi_driver.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cosmo_stages(tmp_path_factory.mktemp("cosmo"), train=32, val=8, seed=6)


def two_stages(data, out, carry=False, full_optimizer="adam"):
    return {"output_dir": str(out), "seed": 3,
            "data": {"format": "tfrecord", "root": str(data)},
            "model": {"name": "mlperf", "head": "global_pool", "width_scale": 0.125,
                      "dropout": 0.1},
            "train": {"local_batch": 4, "optimizer": "adam",
                      "lr": {"base": 0.002, "base_batch": 4, "rule": "linear"}},
            "log": {"progress": False},
            "stages": [{"name": "coarse", "data": {"root": "coarse", "resolution": 8},
                        "train": {"epochs": 2}},
                       {"name": "full", "data": {"root": "full", "resolution": 16},
                        "train": {"epochs": 2, "carry_optimizer": carry,
                                  "optimizer": full_optimizer, "lr": {"base": 0.001}}}]}


def train(tmp_path, cfg, ranks=1):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    result = run_ranks(ranks, [DRIVER, "cosmoflow", dumps,
                               "--config", write_config(tmp_path / "c.yaml", cfg)], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    with open(dumps / "traces-rank0.json") as f:
        return result.stdout, json.load(f)


def optimizer_steps(out):
    with open(out / "checkpoints" / "latest.json") as f:
        name = json.load(f)["name"]
    reader = tf.train.load_checkpoint(str(out / "checkpoints" / name / "ckpt"))
    key = next(k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_iterations"))
    return int(reader.get_tensor(key))


def test_a_global_pool_network_is_traced_once_across_stages(data, tmp_path):
    out = tmp_path / "run"
    log, traces = train(tmp_path, two_stages(data, out), ranks=2)
    assert "stage 'full' continues training the same network" in log
    assert "the optimizer state is reset" in log
    assert (traces["train_steps"], traces["traces"]) == (1, 1)
    records = read_metrics(out)
    assert [r["stage_name"] for r in records] == ["coarse"] * 2 + ["full"] * 2
    # The full stage's own LR (0.001 x global batch 8 / base batch 4), not the coarse one's.
    assert records[0]["lr"] == pytest.approx(0.004) and records[2]["lr"] == pytest.approx(0.002)
    assert optimizer_steps(out) == 2 * 4  # the full stage's steps: Adam restarted at the switch


def test_carry_optimizer_keeps_adam_on_the_same_trace(data, tmp_path):
    out = tmp_path / "run"
    log, traces = train(tmp_path, two_stages(data, out, carry=True))
    assert "the optimizer state is carried over" in log and traces["traces"] == 1
    assert optimizer_steps(out) == 4 * 8  # both stages' steps (8 per epoch on 1 rank)


def test_another_optimizer_gets_a_fresh_model_and_trace(data, tmp_path):
    log, traces = train(tmp_path, two_stages(data, tmp_path / "run", full_optimizer="sgd"))
    assert "continues training" not in log and "0 re-initialised" in log
    assert (traces["train_steps"], traces["traces"]) == (2, 2)


def test_restarting_the_schedule_changes_a_traced_step_without_tracing_it_again():
    schedule = WarmupDecay(0.1, 0.4, steps_per_epoch=10, total_epochs=4, warmup_epochs=1)
    lr = tf.function(schedule)
    assert float(lr(tf.constant(20))) == pytest.approx(0.4)
    schedule.restart(0.05, 0.05, steps_per_epoch=5, total_epochs=2, decay="step",
                     decay_epochs=[1], decay_factors=[0.1], first_step=20)
    assert float(lr(tf.constant(20))) == pytest.approx(0.05)  # step 0 of the new schedule
    assert float(lr(tf.constant(26))) == pytest.approx(0.005)  # past epoch 1: x0.1
    assert lr.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(float(schedule(30)), 0.005, rtol=1e-6)
