"""The compiled per-batch functions the Trainer runs: one training step and one evaluation step.

Losses and metrics are per-sample vectors weighted by the batch's sample weights (0 for the
padding that evens out validation shards), so sums and counts reduce exactly across ranks.
"""
import tensorflow as tf


def weighted_mean(per_sample, weights):
    return tf.reduce_sum(per_sample * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def make_train_step(model, optimizer, loss_fn, world):
    """tf.function: forward, Horovod-averaged gradients, update; returns the loss averaged over
    ranks, so every rank sees the same value and a non-finite loss stops all of them together."""

    @tf.function(reduce_retracing=True)
    def train_step(x, y, w):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = weighted_mean(loss_fn(y, tf.cast(pred, tf.float32)), w)
            total = loss + tf.add_n(model.losses) if model.losses else loss
        grads = world.average_gradients(tape.gradient(total, model.trainable_variables))
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return world.allreduce_mean_tensor(loss)

    return train_step


def make_eval_step(model, loss_fn, metric_fns):
    """tf.function returning [sum loss, sum metric_1, ..., sum weights] for one batch."""

    @tf.function(reduce_retracing=True)
    def eval_step(x, y, w):
        pred = tf.cast(model(x, training=False), tf.float32)
        sums = [tf.reduce_sum(loss_fn(y, pred) * w)]
        sums += [tf.reduce_sum(fn(y, pred) * w) for fn in metric_fns]
        return tf.stack(sums + [tf.reduce_sum(w)])

    return eval_step


def draws_random_numbers(model):
    """Does a training step of `model` draw random numbers (dropout or noise layers with a
    non-zero rate)? Unknown Keras internals count as yes, the safe answer."""
    try:
        from keras.src.engine.base_layer import BaseRandomLayer
    except ImportError:
        return True
    return any(isinstance(layer, BaseRandomLayer) and getattr(layer, "rate", None) != 0
               for layer in model.submodules)
