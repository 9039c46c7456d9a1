"""Optimizers by name; LAMB's update against a step computed by hand, and its checkpoint;
clipping by the global gradient norm (train.max_grad_norm) against hand-computed steps."""
import functools
import json
import re
import types

import numpy as np
import pytest
import tensorflow as tf

from clip_driver import RANK_INPUTS, one_step
from common.config import COMMON_DEFAULTS, ConfigError, resolve
from common.distributed import World
from common.multires import same_network
from common.optimizers import Lamb, make_optimizer
from conftest import REPO, run_ranks

TRAIN = {"optimizer": "lamb", "momentum": 0.9, "weight_decay": 0.01, "beta_1": 0.9,
         "beta_2": 0.999, "epsilon": 1e-6}


def clipped_by_hand(grads, max_norm):
    """The gradients scaled by max_norm / their global norm when that is above max_norm."""
    norm = np.sqrt(sum(np.sum(g * g) for g in grads))
    return grads if max_norm is None or norm <= max_norm else [g * max_norm / norm for g in grads]


def lamb_by_hand(ws, grads, lr, decay, max_norm=None, b1=0.9, b2=0.999, eps=1e-6):
    """LAMB on a list of variables; `grads` holds one list of gradients per step."""
    ms, vs = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(clipped_by_hand(step_grads, max_norm)):
            ms[i], vs[i] = b1 * ms[i] + (1 - b1) * g, b2 * vs[i] + (1 - b2) * g * g
            update = (ms[i] / (1 - b1 ** t)) / (np.sqrt(vs[i] / (1 - b2 ** t)) + eps) \
                + decay * ws[i]
            ws[i] = ws[i] - lr * (np.linalg.norm(ws[i]) / np.linalg.norm(update)) * update
    return ws


def adam_by_hand(ws, grads, lr, max_norm=None, b1=0.9, b2=0.999, eps=1e-7):
    """Keras' Adam (epsilon added to the uncorrected sqrt(v))."""
    ms, vs = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    for t, step_grads in enumerate(grads, start=1):
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for i, g in enumerate(clipped_by_hand(step_grads, max_norm)):
            ms[i], vs[i] = b1 * ms[i] + (1 - b1) * g, b2 * vs[i] + (1 - b2) * g * g
            ws[i] = ws[i] - alpha * ms[i] / (np.sqrt(vs[i]) + eps)
    return ws


def test_lamb_two_steps_match_the_hand_computation():
    w0 = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    grads = [np.array([[0.1, -0.2], [0.3, 0.05]], np.float32),
             np.array([[-0.4, 0.1], [0.2, 0.0]], np.float32)]
    var = tf.Variable(w0)
    opt = make_optimizer(TRAIN, 0.05)
    assert isinstance(opt, Lamb)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    np.testing.assert_allclose(var.numpy(), lamb_by_hand([w0.astype(np.float64)],
                                                         [[g] for g in grads], 0.05, 0.01)[0],
                               rtol=1e-5)


def test_zero_weights_take_a_trust_ratio_of_one():
    var = tf.Variable(np.zeros(3, np.float32))
    make_optimizer({**TRAIN, "weight_decay": 0.0}, 0.1).apply_gradients(
        [(tf.constant([1.0, -1.0, 0.5]), var)])
    np.testing.assert_allclose(var.numpy(), [-0.1, 0.1, -0.1], rtol=1e-4)  # Adam's first step


def test_lamb_state_survives_a_checkpoint(tmp_path):
    var = tf.Variable([1.0, 2.0])
    opt = make_optimizer(TRAIN, 0.01)
    opt.apply_gradients([(tf.constant([0.5, -0.5]), var)])
    path = tf.train.Checkpoint(v=var, opt=opt).write(str(tmp_path / "c"))
    var2, opt2 = tf.Variable([0.0, 0.0]), make_optimizer(TRAIN, 0.01)
    opt2.build([var2])
    tf.train.Checkpoint(v=var2, opt=opt2).read(path).assert_existing_objects_matched()
    for o in (opt, opt2):
        o.apply_gradients([(tf.constant([0.1, 0.2]), var if o is opt else var2)])
    np.testing.assert_allclose(var.numpy(), var2.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name, cls", [("sgd", tf.keras.optimizers.SGD),
                                       ("adam", tf.keras.optimizers.Adam),
                                       ("adamw", tf.keras.optimizers.AdamW)])
def test_other_names(name, cls):
    assert isinstance(make_optimizer({**TRAIN, "optimizer": name}, 0.1), cls)


# Two variables, two steps: the first step's global norm is 5 (clipped to 1: every gradient
# x 0.2, where clipping each variable alone would scale them by 1/3 and 1/4), the second's 0.39
# (kept). Adam and LAMB normalise a single step's size, so only the second step shows the
# clipping: it then weighs 5x more against the first.
W0 = [np.array([0.5, -1.0], np.float32), np.array([[2.0, 0.25]], np.float32)]
STEPS = [[np.array([3.0, 0.0], np.float32), np.array([[0.0, 4.0]], np.float32)],
         [np.array([0.3, -0.1], np.float32), np.array([[0.2, 0.1]], np.float32)]]


def trained(train_cfg, lr):
    variables = [tf.Variable(w) for w in W0]
    optimizer = make_optimizer(train_cfg, lr)
    for grads in STEPS:
        optimizer.apply_gradients(zip(map(tf.constant, grads), variables))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("name", ["lamb", "adam"])
def test_clipping_by_the_global_norm_matches_the_hand_computation(name):
    by_hand = (functools.partial(lamb_by_hand, lr=0.05, decay=0.01) if name == "lamb"
               else functools.partial(adam_by_hand, lr=0.05))
    start = [w.astype(np.float64) for w in W0]
    expected = by_hand([w.copy() for w in start], STEPS, max_norm=1.0)
    got = trained({**TRAIN, "optimizer": name, "epsilon": 1e-6 if name == "lamb" else 1e-7,
                   "max_grad_norm": 1.0}, 0.05)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
    unclipped = by_hand([w.copy() for w in start], STEPS)
    per_variable = by_hand([w.copy() for w in start],
                           [[clipped_by_hand([g], 1.0)[0] for g in grads] for grads in STEPS])
    for other in (unclipped, per_variable):  # what this test tells apart
        assert max(np.max(np.abs(g - o)) for g, o in zip(got, other)) > 1e-3


def test_no_max_grad_norm_means_no_clipping():
    got = trained({**TRAIN, "max_grad_norm": None}, 0.05)
    expected = lamb_by_hand([w.astype(np.float64) for w in W0], STEPS, 0.05, 0.01)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


def test_mixed_float16_clips_the_unscaled_gradients():
    """The training step as the trainer builds it: with loss scaling (2^15) the gradient of the
    scaled loss is 32768 x [1, 1, 1, 1]; the clipped one is [0.5, 0.5, 0.5, 0.5] (norm 1), so
    SGD moves each weight by -0.1 x 0.5. Clipping the scaled gradients would leave ~1e-6."""
    weights, loss_scale = one_step(World(), "mixed_float16", [1.0, 1.0, 1.0, 1.0])
    assert loss_scale == 2.0 ** 15
    np.testing.assert_allclose(weights, [-0.05] * 4, rtol=1e-6)


def test_every_rank_clips_the_rank_averaged_gradients():
    """With mixed_float16, the trainer's longest path: averaged, unscaled, then clipped."""
    result = run_ranks(2, [REPO / "tests" / "clip_driver.py", "mixed_float16"], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:]
    # mpiexec may forward both ranks' lines without a newline between them
    ranks = [json.loads(found) for found in re.findall(r"RESULT (\{[^{}]*\})", result.stdout)]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    mean = np.mean(RANK_INPUTS, axis=0)
    for r in ranks:
        np.testing.assert_allclose(r["weights"], -0.1 * mean / np.linalg.norm(mean), rtol=1e-5)


@pytest.mark.parametrize("value, message", [
    (0, "config key 'train.max_grad_norm': 0.0 is out of range; it must be > 0"),
    (-1.0, "config key 'train.max_grad_norm': -1.0 is out of range; it must be > 0"),
    ("big", "config key 'train.max_grad_norm' expects float, got str 'big'")])
def test_a_bad_max_grad_norm_is_rejected_naming_the_key(tmp_path, value, message):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  optimizer: lamb\n  max_grad_norm: " + repr(value) + "\n")
    with pytest.raises(ConfigError) as err:
        resolve(COMMON_DEFAULTS, str(path))
    assert str(err.value) == f"{path}: {message}"


def test_stages_with_another_max_grad_norm_do_not_share_an_optimizer():
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    stage = lambda norm: types.SimpleNamespace(  # noqa: E731
        model={"width": 1}, train={**TRAIN, "precision": "float32", "jit_compile": False,
                                   "steps_per_call": 1, "accumulate_steps": 1,
                                   "max_grad_norm": norm})
    assert same_network(stage(1.0), stage(1.0), model, model)
    assert not same_network(stage(1.0), stage(None), model, model)
