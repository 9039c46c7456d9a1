"""SeededDropout: masks reproducible from its checkpointed call count, without a new trace.
LeakyReLU: Keras' function and gradient, its gradient read from the output."""
import numpy as np
import pytest
import tensorflow as tf

from common.layers import LeakyReLU, SeededDropout
from common.steps import draws_random_numbers


def model_with_dropout(rate=0.5, seed=None):
    inputs = tf.keras.Input((64,))
    return tf.keras.Model(inputs, SeededDropout(rate, seed, name="drop")(inputs))


def test_masks_drop_at_the_rate_scale_the_rest_and_change_every_call():
    model = model_with_dropout()
    x = tf.ones((50, 64))
    a, b = model(x, training=True).numpy(), model(x, training=True).numpy()
    assert set(np.unique(a)) == {0.0, 2.0}
    assert abs((a == 0).mean() - 0.5) < 0.05
    assert not np.array_equal(a, b)
    assert np.array_equal(model(x, training=False).numpy(), x.numpy())
    assert int(model.get_layer("drop").calls) == 2


def test_a_restored_model_replays_the_masks_inside_one_trace(tmp_path):
    model = model_with_dropout()
    step = tf.function(lambda x: model(x, training=True))
    x = tf.ones((4, 64))
    step(x)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    expected = [step(x).numpy() for _ in range(3)]
    restored = model_with_dropout(seed=12345)  # the checkpoint's seed wins
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    replay = tf.function(lambda x: restored(x, training=True))
    for want in expected:
        np.testing.assert_array_equal(replay(x).numpy(), want)
    assert replay.experimental_get_tracing_count() == 1


def test_seeded_dropout_needs_no_fresh_trace_per_epoch():
    assert not draws_random_numbers(model_with_dropout())
    with pytest.raises(ValueError):
        SeededDropout("half")


@pytest.mark.parametrize("alpha", [0.3, 0.0, 1.0])
def test_leaky_relu_matches_keras_in_value_and_gradient(alpha):
    x = tf.constant(np.concatenate([np.random.default_rng(0).normal(size=200),
                                    [0.0, -0.0, 1e-30, -1e-30, -1e-45]]).astype(np.float32))
    ours, keras = LeakyReLU(alpha), tf.keras.layers.LeakyReLU(alpha)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_keras = ours(x), keras(x)
        upstream = tf.range(x.shape[0], dtype=tf.float32) + 1.0
        loss_ours, loss_keras = tf.reduce_sum(y_ours * upstream), tf.reduce_sum(y_keras * upstream)
    np.testing.assert_array_equal(y_ours.numpy(), y_keras.numpy())
    np.testing.assert_array_equal(tape.gradient(loss_ours, x).numpy(),
                                  tape.gradient(loss_keras, x).numpy())


def test_leaky_relu_rejects_a_slope_whose_output_sign_differs_from_its_input():
    with pytest.raises(ValueError, match="alpha must lie in"):
        LeakyReLU(-0.1)
    assert LeakyReLU(0.2).get_config()["alpha"] == 0.2
