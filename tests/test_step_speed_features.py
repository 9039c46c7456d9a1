"""train.precision, train.jit_compile and train.steps_per_call: same training as the plain step
(within float tolerance), mixed precision on 2 ranks, loss-scale overflow skipped by every rank."""
import json
import re

import numpy as np
import pytest
import tensorflow as tf

from common.distributed import World
from common.steps import StepRunner, make_train_step
from conftest import REPO, read_metrics, run_ranks, write_config
from cosmoflow.make_data import write_tfrecord
from cosmoflow.model import build_model

TINY = {"name": "mlperf", "head": "global_pool", "width_scale": 0.0625, "dropout": 0.0}
DRIVER = REPO / "tests" / "mpi_driver.py"


def mse(y, pred):
    return tf.reduce_mean(tf.square(y - pred), -1)


def batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(2, 8, 8, 8, 4)).astype(np.float32),
             rng.normal(size=(2, 4)).astype(np.float32), np.ones(2, np.float32))
            for _ in range(count)]


def trained_weights(data, jit_compile=False, steps_per_call=1):
    """Weights after one pass over `data` from the same initial weights and Adam."""
    tf.keras.utils.set_random_seed(1)
    model = build_model(TINY, (8, 8, 8, 4))
    optimizer = tf.keras.optimizers.Adam(0.01)
    step = make_train_step(model, optimizer, mse, World(), jit_compile)
    runner = StepRunner(step, steps_per_call)
    dataset = tf.data.Dataset.from_tensor_slices(tuple(map(np.stack, zip(*data))))
    losses = np.concatenate([v.numpy() for v in runner.epoch(runner.batches(dataset),
                                                             len(data))])
    return model.get_weights(), losses


def test_steps_per_call_and_jit_compile_train_like_the_plain_step():
    data = batches(5)
    plain, plain_losses = trained_weights(data)
    looped, looped_losses = trained_weights(data, steps_per_call=3)  # calls of 3 and 2 steps
    compiled, compiled_losses = trained_weights(data, jit_compile=True)
    assert len(plain_losses) == len(looped_losses) == len(compiled_losses) == 5
    np.testing.assert_allclose(looped_losses, plain_losses, rtol=1e-5)
    np.testing.assert_allclose(compiled_losses, plain_losses, rtol=1e-3)
    moved = sum(np.abs(a - b).sum() for a, b in zip(plain, trained_weights(data[:1])[0]))
    assert moved > 0  # four more steps changed the weights: the comparisons below can fail
    for a, b, c in zip(plain, looped, compiled):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-3, atol=1e-4)


def test_float16_overflow_on_one_rank_skips_the_step_on_both():
    result = run_ranks(2, [REPO / "tests" / "loss_scale_driver.py"], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    # mpiexec may forward both ranks' lines without a newline between them
    ranks = [json.loads(found) for found in re.findall(r"RESULT (\{[^{}]*\})", result.stdout)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    for r in ranks:
        assert r["skipped"], r  # rank 1's own batch was fine, yet it skipped with rank 0
        assert r["scale_after"] == r["scale_before"] / 2, r
        assert r["applied_after"] and r["iterations"] == 2, r
    assert ranks[0]["checksum"] == ranks[1]["checksum"]


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cubes")
    write_tfrecord(str(root), size=8, train=32, val=8, seed=2)
    return root


def run_config(cubes, out, precision, epochs=3):
    return {"output_dir": str(out), "seed": 4,
            "data": {"format": "tfrecord", "root": str(cubes), "resolution": 8},
            "model": {**TINY, "width_scale": 0.125},
            "train": {"epochs": epochs, "local_batch": 4, "optimizer": "adam",
                      "precision": precision, "lr": {"base": 0.003, "base_batch": 8}},
            "log": {"progress": False, "every_steps": 2}}


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_on_two_ranks_and_checkpoints_load_in_float32(
        cubes, tmp_path, precision):
    out, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    config = write_config(tmp_path / "c.yaml", run_config(cubes, out, precision))
    result = run_ranks(2, [DRIVER, "cosmoflow", dumps, "--config", config], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    losses = [r["train_loss"] for r in read_metrics(out)]
    assert len(losses) == 3 and np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    a, b = np.load(dumps / "end-rank0.npz"), np.load(dumps / "end-rank1.npz")
    for key in a.files:
        if a[key].dtype.kind == "f":  # float weights stay float32: checkpoints fit any precision
            assert a[key].dtype == np.float32
        np.testing.assert_array_equal(a[key], b[key])
    # The same run continued in float32 from the mixed-precision checkpoint.
    more = write_config(tmp_path / "more.yaml", run_config(cubes, out, "float32", epochs=4))
    result = run_ranks(1, [REPO / "cosmoflow" / "train.py", "--config", more, "--resume"],
                       timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert abs(records[3]["val_loss"] - records[2]["val_loss"]) < 0.5 * records[2]["val_loss"]
