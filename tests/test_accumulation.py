"""Gradient accumulation (train.accumulate_steps): K micro-batches of B give the update of one
batch of K x B, on one rank and on two, through clipping, loss scaling and sample weights; the
global batch (LR rule, schedule, MLPerf log) includes K; a resume inside an epoch stays exact.
The networks here have no BatchNorm: with it, each micro-batch is normalised by its own
statistics, so the results would differ from one large batch (the README says so)."""
import json
import re
import types

import numpy as np
import pytest
import tensorflow as tf

from common.accumulation import update_batches
from common.config import COMMON_DEFAULTS, ConfigError, resolve
from common.data import ShardedDataset
from common.distributed import World
from common.lr import batch_sizes
from common.multires import same_network
from common.optimizers import make_optimizer, with_loss_scaling
from common.preemption import check_mid_epoch_world
from common.steps import make_train_step
from conftest import read_metrics, run_ranks, write_config
from test_resume import MODEL, TRAIN, data  # noqa: F401  (data: the resume tests' files)
from test_distributed import checkpoint_weights
from test_preemption import run_recorded

# Micro-batches of 4 whose sample weights sum to 2, 4, 3 and 3: weighting each micro-batch by
# 1/K instead of by its samples would give another update.
WEIGHTS = np.array([1, 1, 0, 0, 1, 1, 1, 1, 0.5, 0.5, 1, 1, 1, 0, 1, 1], np.float32)


def tiny_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    l2 = tf.keras.regularizers.L2(0.01)  # model.losses must count once per update, not K times
    return tf.keras.Sequential([tf.keras.Input((5,)),
                                tf.keras.layers.Dense(8, activation="tanh", kernel_regularizer=l2),
                                tf.keras.layers.Dense(3)])


def mse(y, pred):
    return tf.reduce_mean(tf.square(y - pred), -1)


def train(accumulate, batches, optimizer="sgd", max_grad_norm=None, precision="float32",
          jit_compile=False):
    """Weights, per-step losses and the optimizer after stepping through `batches`."""
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        model = tiny_model()
        opt = make_optimizer({"optimizer": optimizer, "momentum": 0.9,
                              "max_grad_norm": max_grad_norm}, 0.05)
        opt.build(model.trainable_variables)
        opt = with_loss_scaling(opt, precision)
        step = make_train_step(model, opt, mse, World(), jit_compile,
                               accumulate_steps=accumulate)
        losses = [float(step(*batch)) for batch in batches]
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    return model.get_weights(), losses, opt


def batches(count=3, size=16, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(size, 5)).astype(np.float32),
             rng.normal(size=(size, 3)).astype(np.float32), WEIGHTS) for _ in range(count)]


@pytest.mark.parametrize("optimizer, max_grad_norm, jit_compile",
                         [("sgd", None, False), ("adam", 0.01, False), ("sgd", None, True)])
def test_k_micro_batches_equal_one_batch_of_k_times_b(optimizer, max_grad_norm, jit_compile):
    """With max_grad_norm 0.01 every update is clipped: clipping a micro-batch's gradient
    instead of the accumulated one would differ. With XLA each micro-batch's forward and
    backward pass is the compiled one."""
    data = batches()
    whole, whole_losses, _ = train(1, data, optimizer, max_grad_norm)
    start = tiny_model().get_weights()
    assert not np.allclose(whole[0], start[0])
    accumulated, losses, _ = train(4, data, optimizer, max_grad_norm, jit_compile=jit_compile)
    for a, b in zip(accumulated, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)


def test_mixed_float16_scales_each_micro_batch_and_skips_the_update_on_any_overflow():
    data = batches(count=2)
    whole, _, _ = train(1, data, precision="mixed_float16")
    accumulated, _, opt = train(4, data, precision="mixed_float16")
    for a, b in zip(accumulated, whole):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert int(opt.iterations) == 2 and float(opt.loss_scale) == 2.0 ** 15

    x, y, w = batches(count=1)[0]
    x[13, 0] = np.inf  # in the last micro-batch only
    weights, _, opt = train(4, [(x, y, w)], precision="mixed_float16")
    for a, b in zip(weights, tiny_model().get_weights()):
        np.testing.assert_array_equal(a, b)
    assert float(opt.loss_scale) == 2.0 ** 14  # Keras counts the skipped step as an iteration


def test_update_batches_hold_k_micro_batches_in_the_order_of_one_batch_and_resume_exactly():
    def load(key):
        return tf.cast(key, tf.float32), tf.cast(key, tf.float32)
    micro = ShardedDataset(np.arange(40), load, 3, rank=1, size=2, seed=5)
    updates = update_batches(micro, 2)
    assert (micro.steps_per_epoch, updates.steps_per_epoch, updates.local_batch) == (6, 3, 6)
    assert micro.local_batch == 3  # the validation-sized original is left alone
    whole = np.concatenate([x.numpy() for x, _, _ in micro.epoch(4)])
    per_update = [x.numpy() for x, _, _ in updates.epoch(4)]
    np.testing.assert_array_equal(np.concatenate(per_update), whole)
    resumed = np.concatenate([x.numpy() for x, _, _ in updates.epoch(4, first_step=2)])
    np.testing.assert_array_equal(resumed, whole[12:])
    with pytest.raises(ValueError, match=r"cannot fill one update of train.accumulate_steps=4 "
                                         r"x local batch 3 on each of 2 ranks"):
        update_batches(ShardedDataset(np.arange(20), load, 3, size=2), 4)


def test_the_global_batch_and_so_the_lr_rule_count_the_accumulated_micro_batches():
    assert batch_sizes("weak", 4, None, 2, accumulate_steps=3) == (4, 24)
    assert batch_sizes("strong", 999, 24, 2, accumulate_steps=3) == (4, 24)
    with pytest.raises(ValueError, match=r"'train.global_batch'=20 does not divide over 2 ranks "
                                         r"x train.accumulate_steps=3"):
        batch_sizes("strong", 999, 20, 2, accumulate_steps=3)


@pytest.mark.parametrize("key, value, message", [
    ("train.accumulate_steps", 0, "config key 'train.accumulate_steps': 0 is out of range; it "
                                  "must be >= 1"),
    ("train.accumulate_steps", 1.5, "config key 'train.accumulate_steps' expects int, got float "
                                    "1.5"),
    ("stages.0.train.accumulate_steps", "two", "config key 'stages.0.train.accumulate_steps' "
                                               "expects int, got str 'two'"),
])
def test_a_bad_accumulate_steps_names_the_key(tmp_path, key, value, message):
    path = tmp_path / "c.yaml"
    path.write_text("stages: [{name: one}]\n")
    with pytest.raises(ConfigError) as err:
        resolve(COMMON_DEFAULTS, str(path), [f"{key}={json.dumps(value)}"])
    assert str(err.value) == message


def test_a_mid_epoch_checkpoint_resumes_only_with_its_accumulation():
    state = {"name": "stage0-epoch0-step3", "epoch": 0, "step": 3,
             "world": {"size": 1, "local_batch": 4, "accumulate_steps": 2}}
    check_mid_epoch_world(state, World(), 4, 2)
    with pytest.raises(ValueError, match=r"on 1 rank\(s\) with local batch 4 x 2 accumulated; it "
                                         r"resumes exactly only on the same.*this run has 1 with "
                                         r"local batch 4\)"):
        check_mid_epoch_world(state, World(), 4, 1)
    del state["world"]["accumulate_steps"]  # written before accumulation existed: K was 1
    check_mid_epoch_world(state, World(), 4, 1)


def test_stages_with_another_accumulation_do_not_share_a_compiled_step():
    """K is fixed in a traced step: a stage with another K builds its own (weights carry over)."""
    model = tiny_model()

    def stage(k):  # the other step keys: the schema's entries, the same in both stages
        return types.SimpleNamespace(model={}, train={**COMMON_DEFAULTS["train"],
                                                      "accumulate_steps": k})
    assert same_network(stage(2), stage(2), model, model)
    assert not same_network(stage(1), stage(2), model, model)


# Whole runs of CosmoFlow's train.py: 32 samples, 4 updates of 8 samples per epoch.


def config(tmp_path, name, data, **train):
    """Weak scaling, LR 0.01 tuned at batch 4 and scaled linearly, one warmup epoch, decay
    after epoch 2: every LR setting depends on the global batch and the updates per epoch."""
    return write_config(tmp_path / f"{name}.yaml", {
        "output_dir": str(tmp_path / name), "seed": 2, "deterministic": True, "model": MODEL,
        "data": {"format": "tfrecord", "root": str(data), "resolution": 8},
        "train": {"optimizer": "sgd", "momentum": 0.9, "epochs": 3,
                  "lr": {"base": 0.01, "base_batch": 4, "rule": "linear", "warmup_epochs": 1,
                         "decay": "step", "decay_epochs": [2], "decay_factors": [0.5]},
                  **train},
        "log": {"progress": False, "every_steps": 1, "mlperf": {"enabled": True}}})


def run_ok(ranks, cfg):
    result = run_ranks(ranks, [TRAIN, "--config", cfg], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def one_batch(data, tmp_path_factory):
    """The reference: 1 rank, batches of 8."""
    tmp = tmp_path_factory.mktemp("one_batch")
    run_ok(1, config(tmp, "run", data, local_batch=8))
    return tmp / "run"


@pytest.fixture(scope="module")
def accumulated(data, tmp_path_factory):
    """1 rank, 2 micro-batches of 4 per update."""
    tmp = tmp_path_factory.mktemp("accumulated")
    out = run_ok(1, config(tmp, "run", data, local_batch=4, accumulate_steps=2))
    return tmp / "run", out


def assert_same_run(out, reference):
    for a, b in zip(checkpoint_weights(reference, MODEL, 8), checkpoint_weights(out, MODEL, 8)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    whole, other = read_metrics(reference), read_metrics(out)
    assert len(other) == len(whole) == 3
    for key in ("train_loss", "val_loss", "lr"):
        assert [r[key] for r in other] == pytest.approx([r[key] for r in whole], rel=1e-5)


def mlperf_value(out_dir, key):
    for line in (out_dir / "mlperf.log").read_text().splitlines():
        found = re.search(r":::MLLOG (\{.*\})", line)
        if found and json.loads(found.group(1))["key"] == key:
            return json.loads(found.group(1))["value"]
    raise AssertionError(f"no {key} in {out_dir / 'mlperf.log'}")


def test_an_accumulated_run_trains_as_one_batch_of_the_global_batch(one_batch, accumulated):
    out_dir, out = accumulated
    assert ("scaling, local batch 4 x 2 accumulated, global batch 8 over 1 ranks, LR 0.01 -> "
            "0.02 (linear rule)") in out
    assert "4 steps/epoch" in out
    assert_same_run(out_dir, one_batch)
    assert [r["lr"] for r in read_metrics(out_dir)] == pytest.approx([0.02, 0.02, 0.01])
    assert mlperf_value(out_dir, "gradient_accumulation_frequency") == 2
    assert mlperf_value(out_dir, "global_batch_size") == 8
    assert mlperf_value(one_batch, "gradient_accumulation_frequency") == 1


def test_two_ranks_accumulating_train_as_one_rank_with_the_global_batch(data, tmp_path,
                                                                       one_batch):
    """Also 2 updates per compiled call (steps_per_call)."""
    out = run_ok(2, config(tmp_path, "two", data, local_batch=2, accumulate_steps=2,
                           steps_per_call=2))
    assert "local batch 2 x 2 accumulated, global batch 8 over 2 ranks" in out
    assert_same_run(tmp_path / "two", one_batch)


def test_a_resume_inside_an_epoch_with_accumulation_equals_the_uninterrupted_run(
        data, tmp_path, accumulated):
    cfg = config(tmp_path, "cut", data, local_batch=4, accumulate_steps=2)
    # SIGTERM before the 2nd update of epoch 2 (the 6th call); the next update carries it.
    result, _ = run_recorded(tmp_path, ["--config", cfg], "step:signal=TERM,at=6", ranks=1)
    assert "stopped by SIGTERM at stage 'main' epoch 2 step 3/4" in result.stdout, \
        result.stdout[-3000:]
    latest = json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())
    assert (latest["epoch"], latest["step"], latest["world"]["accumulate_steps"]) == (1, 3, 2)
    result, _ = run_recorded(tmp_path, ["--config", cfg, "--resume"], ranks=1)
    assert result.returncode == 0, result.stdout[-3000:]
    assert_same_run(tmp_path / "cut", accumulated[0])


def test_a_run_moves_to_half_the_ranks_keeping_its_global_batch_by_accumulating(
        data, tmp_path, one_batch):
    """Strong scaling, global batch 8: 2 ranks for the first epoch, then 1 rank with K = 2."""
    strong = {"scaling": "strong", "global_batch": 8}
    run_ok(2, config(tmp_path, "moved", data, epochs=1, **strong))
    result = run_ranks(1, [TRAIN, "--config", config(tmp_path, "moved", data, accumulate_steps=2,
                                                     **strong), "--resume"], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    assert ("resuming on 1 rank(s) accumulating 2 micro-batches a run checkpointed on 2: local "
            "batch 4 -> 4, global batch 8 -> 8, peak LR 0.02 -> 0.02") in result.stdout
    assert_same_run(tmp_path / "moved", one_batch)
