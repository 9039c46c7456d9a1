"""Which models need a fresh trace per epoch: only those whose training step draws random
numbers (Keras keeps that RNG state outside the checkpoint)."""
import tensorflow as tf

from common.steps import draws_random_numbers
from cosmoflow.model import build_model

TINY = {"name": "mlperf", "head": "global_pool", "width_scale": 0.0625}


def test_keras_dropout_with_a_rate_draws_random_numbers_and_rate_zero_does_not():
    for rate, random in ((0.5, True), (0.0, False)):
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dropout(rate)])
        assert draws_random_numbers(model) is random


def test_cosmoflow_dropout_is_seeded_and_traces_once():
    assert not draws_random_numbers(build_model({**TINY, "dropout": 0.5}, (8, 8, 8, 4)))


def test_noise_layers_nested_in_submodels_count():
    inner = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.GaussianNoise(0.1)])
    outer = tf.keras.Sequential([tf.keras.Input((4,)), inner, tf.keras.layers.Dense(2)])
    assert draws_random_numbers(outer)
    plain = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    assert not draws_random_numbers(plain)
