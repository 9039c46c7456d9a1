"""Layers the apps' models share. No Horovod and no side effects, like the models themselves."""
import numpy as np
import tensorflow as tf


class SeededDropout(tf.keras.layers.Layer):
    """Dropout whose masks come from stateless random ops seeded by (seed, call count).

    Seed and call count are weights, so they are checkpointed with the model: a resumed run draws
    the same masks as an uninterrupted one, and the training step is traced once per stage
    instead of once per epoch (Keras' Dropout keeps its RNG state outside the checkpoint). The
    default seed comes from numpy's global generator, which the run's seed sets.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = int(np.random.randint(2**31 - 1) if seed is None else seed)

    def build(self, input_shape):
        self.seed_weight = self.add_weight(
            name="seed", shape=(), dtype=tf.int64, trainable=False,
            initializer=tf.keras.initializers.Constant(self.seed))
        self.calls = self.add_weight(name="calls", shape=(), dtype=tf.int64,
                                     initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        self.calls.assign_add(1)
        seed = tf.stack([self.seed_weight.read_value(), self.calls.read_value()])
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed=seed) >= self.rate
        return tf.where(keep, inputs / (1.0 - self.rate), tf.zeros_like(inputs))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class LeakyReLU(tf.keras.layers.Layer):
    """Keras' LeakyReLU on the fused LeakyRelu kernel, with a gradient that reads the activation's
    output instead of its input (for alpha >= 0 both have the same sign, so the gradient is the
    same). Keras' own gradient reads the input, the convolution's BiasAdd; grappler's remapper
    under oneDNN (TensorFlow's default on CPUs with AVX-512) then fuses Conv + BiasAdd +
    LeakyRelu anyway, removes that BiasAdd, and fails on every trace ("remapper failed ...
    LeakyReluGrad ... missing node BiasAdd"), losing every fusion of the graph. Reading the output leaves the BiasAdd one consumer, so the fusion is valid. Written
    as max(x, alpha * x) it avoided the error but cost 1.5x per step at 128^3: two extra
    memory-bound passes over every activation, forward and backward."""

    def __init__(self, alpha=0.3, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"LeakyReLU alpha must lie in [0, 1], got {alpha!r}")

    def call(self, inputs):
        return leaky_relu(inputs, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


def leaky_relu(x, alpha):
    """tf.nn.leaky_relu whose gradient reads its output (see LeakyReLU)."""
    @tf.custom_gradient
    def forward(features):
        activations = tf.nn.leaky_relu(features, alpha)

        def gradient(upstream):
            return tf.raw_ops.LeakyReluGrad(gradients=upstream, features=activations,
                                            alpha=alpha)
        return activations, gradient
    return forward(x)
