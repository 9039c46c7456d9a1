"""Gradient accumulation (train.accumulate_steps: K): one update from K micro-batches per rank.

Each rank's input pipeline delivers one batch of K x local_batch per update: the same
ShardedDataset in larger batches, so the shards, the sample order and a mid-epoch resume position
(counted in updates) stay those of a batch of K x local_batch, and the ranks still run equal
update counts. The training step splits that batch into K micro-batches of local_batch and runs
forward and backward on one at a time (a sequential loop: activations are held for one
micro-batch only; the input batch of K x local_batch and one sum of the gradients are what
accumulation adds to memory). The sum then goes through the step's one allreduce, the loss
scale's unscaling, clipping (train.max_grad_norm) and one optimizer update, exactly as the
gradient of one batch of K x local_batch would:

- each micro-batch's weighted mean enters with its share of the batch's sample weights, not
  1/K, so the sum is the weighted mean over all K x local_batch samples (regularisation losses
  then count once whenever every micro-batch weighs at least 1, as training batches always do);
- under mixed_float16 every micro-batch's loss is scaled, the scaled gradients are summed and
  unscaled once: an overflow in any micro-batch skips the whole update on every rank.

BatchNorm differs from one large batch: it normalises each micro-batch by that micro-batch's own
statistics and updates its moving averages K times per update, as it would on K ranks with
local_batch each.
"""
import copy

import tensorflow as tf


def accumulating(loss_and_gradients, steps, variables):
    """(x, y, w) -> (loss, gradients) of a batch of `steps` micro-batches, each computed by
    `loss_and_gradients` (one micro-batch's weighted mean loss and its gradients with respect to
    `variables`, None for a variable the loss does not reach)."""

    def accumulated(x, y, w):
        size = tf.shape(w)[0] // steps
        total = tf.maximum(tf.reduce_sum(w), 1.0)
        reached = []  # which variables get gradients: known once the loop body is traced

        def body(i, loss, sums):
            part = tf.nest.map_structure(lambda t: micro_batch(t, i, size, steps), (x, y, w))
            part_loss, grads = loss_and_gradients(*part)
            share = tf.maximum(tf.reduce_sum(part[2]), 1.0) / total
            reached[:] = [grad is not None for grad in grads]
            sums = [total_grad if grad is None else
                    total_grad + tf.cast(share, total_grad.dtype) * tf.convert_to_tensor(grad)
                    for total_grad, grad in zip(sums, grads)]
            return i + 1, loss + share * part_loss, sums

        zeros = [tf.zeros(var.shape, var.dtype.base_dtype) for var in variables]
        # One micro-batch at a time: without parallel_iterations=1 the loop could run several
        # forward passes at once (they do not depend on each other), holding their activations.
        _, loss, sums = tf.while_loop(lambda i, *_: i < steps, body,
                                      (tf.constant(0), tf.constant(0.0), zeros),
                                      parallel_iterations=1)
        return loss, [grad if kept else None for grad, kept in zip(sums, reached)]

    return accumulated


def micro_batch(tensor, i, size, steps):
    """Rows [i * size, (i + 1) * size) of `tensor`, keeping its static shape where known."""
    part = tensor[i * size:(i + 1) * size]
    shape = tensor.shape.as_list()
    if shape and shape[0] is not None:
        part.set_shape([shape[0] // steps] + shape[1:])
    return part


def update_batches(train_data, steps):
    """`train_data` (a ShardedDataset of local_batch) in batches of one update: `steps`
    micro-batches of local_batch per rank; its steps per epoch count updates."""
    if steps == 1:
        return train_data
    data = copy.copy(train_data)
    data.local_batch = train_data.local_batch * steps
    if data.steps_per_epoch == 0:
        raise ValueError(
            f"{data.name}: {data.num_samples} samples cannot fill one update of "
            f"train.accumulate_steps={steps} x local batch {train_data.local_batch} on each of "
            f"{data.size} ranks; lower one of them or add data")
    return data
