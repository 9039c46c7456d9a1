"""Optimizers by name; LAMB's update against a step computed by hand, and its checkpoint."""
import numpy as np
import pytest
import tensorflow as tf

from common.optimizers import Lamb, make_optimizer

TRAIN = {"optimizer": "lamb", "momentum": 0.9, "weight_decay": 0.01, "beta_1": 0.9,
         "beta_2": 0.999, "epsilon": 1e-6}


def lamb_by_hand(w, grads, lr, decay, b1=0.9, b2=0.999, eps=1e-6):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + decay * w
        w = w - lr * (np.linalg.norm(w) / np.linalg.norm(update)) * update
    return w


def test_lamb_two_steps_match_the_hand_computation():
    w0 = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    grads = [np.array([[0.1, -0.2], [0.3, 0.05]], np.float32),
             np.array([[-0.4, 0.1], [0.2, 0.0]], np.float32)]
    var = tf.Variable(w0)
    opt = make_optimizer(TRAIN, 0.05)
    assert isinstance(opt, Lamb)
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
    np.testing.assert_allclose(var.numpy(), lamb_by_hand(w0.astype(np.float64), grads, 0.05,
                                                         0.01), rtol=1e-5)


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
