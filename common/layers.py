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
    """max(x, alpha * x), Keras' LeakyReLU written as a maximum. Grappler's remapper fuses a
    LeakyRelu op into the convolution before it, which fails on a training graph (the gradient
    needs the pre-activation) and prints "remapper failed ... LeakyReluGrad" at every trace;
    a maximum is left alone, and the convolution still fuses with its bias."""

    def __init__(self, alpha=0.3, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return tf.maximum(inputs, tf.cast(self.alpha, inputs.dtype) * inputs)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}
