"""The compiled per-batch functions the Trainer runs: one training step and one evaluation step.

Losses and metrics are per-sample vectors weighted by the batch's sample weights (0 for the
padding that evens out validation shards), so sums and counts reduce exactly across ranks.
"""
import tensorflow as tf

from common.accumulation import accumulating
from common.data import loosened
from common.faults import fault_point


def weighted_mean(per_sample, weights):
    return tf.reduce_sum(per_sample * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def make_train_step(model, optimizer, loss_fn, world, jit_compile=False, requests=None,
                    accumulate_steps=1):
    """tf.function: forward, Horovod-averaged gradients, update; returns the loss averaged over
    ranks, so every rank sees the same value and a non-finite loss stops all of them together.
    With `requests` (a float32 vector variable, common.preemption) it returns [loss, *requests].
    Both ride in the gradients' last allreduce bucket: one collective per step, and the ranks
    learn of each other's stop requests at no extra cost.

    With a LossScaleOptimizer (mixed_float16) the loss is scaled before the backward pass and the
    gradients are unscaled once, after averaging: every rank then holds the same gradients, so an
    overflow skips the step (and lowers the scale) on every rank alike. With `jit_compile`, XLA
    compiles forward + backward; Horovod's allreduce and the update stay outside the cluster.
    With `accumulate_steps` K > 1 each batch holds K micro-batches whose gradients are summed
    before the one allreduce and update (common.accumulation)."""
    scaler = optimizer if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer) \
        else None

    def loss_and_gradients(x, y, w):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = weighted_mean(loss_fn(y, tf.cast(pred, tf.float32)), w)
            total = loss + tf.add_n(model.losses) if model.losses else loss
            if scaler is not None:
                total = scaler.get_scaled_loss(total)
        return loss, tape.gradient(total, model.trainable_variables)

    if jit_compile:
        loss_and_gradients = tf.function(loss_and_gradients, jit_compile=True,
                                         reduce_retracing=True)
    if accumulate_steps > 1:
        loss_and_gradients = accumulating(loss_and_gradients, accumulate_steps,
                                          model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def train_step(x, y, w):
        loss, grads = loss_and_gradients(x, y, w)
        riders = tf.reshape(loss, [1]) if requests is None else \
            tf.concat([tf.reshape(loss, [1]), requests], 0)
        grads, riders = world.average_gradients(grads, riders)
        if scaler is not None:
            grads = scaler.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return riders[0] if requests is None else riders

    return train_step


class StepRunner:
    """Runs an epoch's training steps and yields each call's losses as a vector: one step per
    call, or up to `steps_per_call` steps in one compiled loop (like Keras' steps_per_execution)
    for small networks whose step is shorter than the Python dispatch around it."""

    def __init__(self, train_step, steps_per_call=1, spec=None):
        """`spec`: batch specs with open dimensions (common_spec) to trace for up front, so
        batches of every shape they admit dispatch to that one trace."""
        self.train_step, self.steps_per_call, self.spec = train_step, steps_per_call, spec
        if spec is not None and steps_per_call == 1:
            train_step.get_concrete_function(*spec)

        @tf.function
        def multi_step(iterator, n):  # n is a tensor: the epoch's shorter last call reuses it
            losses = tf.TensorArray(tf.float32, size=n)
            for i in tf.range(n):
                x, y, w = next(iterator)
                losses = losses.write(i, train_step(x, y, w))
            return losses.stack()

        self.multi_step = multi_step

    def batches(self, dataset):
        """An iterator over `dataset` for `epoch`: with several steps per call its batches'
        shapes are loosened to the runner's spec, which picks the compiled loop's trace."""
        return iter(dataset if self.steps_per_call == 1 else loosened(dataset, self.spec))

    def epoch(self, batches, steps):
        """Run the next `steps` training steps on `batches` (an iterator from `batches`, which
        goes on across epochs)."""
        if self.steps_per_call == 1:
            for _ in range(steps):
                x, y, w = next(batches)
                fault_point("step")
                yield tf.expand_dims(self.train_step(x, y, w), 0)
            return
        for done in range(0, steps, self.steps_per_call):
            fault_point("step")
            yield self.multi_step(batches, tf.constant(min(self.steps_per_call, steps - done)))

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
