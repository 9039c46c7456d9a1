"""Batch sizes and learning rates for data-parallel training, as pure functions.

Weak scaling keeps the local batch fixed, so the global batch grows with the ranks and the LR is
scaled by the rule. Strong scaling keeps the global batch fixed and splits it over the ranks, so
the LR is the one tuned for that global batch whatever the number of ranks.
"""
import math

import tensorflow as tf


def batch_sizes(scaling, local_batch, global_batch, world_size):
    """(local, global) batch for the scaling mode; raises when strong scaling cannot split."""
    if scaling == "weak":
        return local_batch, local_batch * world_size
    if scaling == "strong":
        if not global_batch:
            raise ValueError("config key 'train.global_batch' must be set for strong scaling")
        if global_batch % world_size:
            raise ValueError(f"config key 'train.global_batch'={global_batch} does not divide "
                             f"over {world_size} ranks")
        return global_batch // world_size, global_batch
    raise ValueError(f"config key 'train.scaling' must be weak or strong, got {scaling!r}")


def scaled_lr(base_lr, base_batch, global_batch, rule):
    """LR for `global_batch` from one tuned at `base_batch`: linear, sqrt, or none."""
    ratio = global_batch / base_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"config key 'train.lr.rule' must be linear, sqrt or none, got {rule!r}")


class WarmupDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then constant, step or cosine decay; a function of the step.

    Warmup starts from the LR tuned for the base batch (gradual warmup of Goyal et al.), or from
    zero when no scaling raised the LR. Driven by the optimizer's step counter, so restoring the
    optimizer restores the schedule position.
    """

    def __init__(self, base, peak, steps_per_epoch, total_epochs, warmup_epochs=0.0,
                 decay="none", decay_epochs=(), decay_factors=(), min_lr=0.0):
        super().__init__()
        self.start = base if base < peak else 0.0
        self.peak = peak
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = warmup_epochs * steps_per_epoch
        self.total_steps = max(total_epochs * steps_per_epoch, 1)
        self.decay = decay
        if len(decay_epochs) != len(decay_factors):
            raise ValueError("config keys 'train.lr.decay_epochs' and 'train.lr.decay_factors' "
                             "must have the same length")
        self.decay_steps = [e * steps_per_epoch for e in decay_epochs]
        self.decay_factors = list(decay_factors)
        self.min_lr = min_lr

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = self._decayed(step)
        if self.warmup_steps > 0:
            frac = tf.minimum((step + 1.0) / self.warmup_steps, 1.0)
            warm = self.start + (self.peak - self.start) * frac
            lr = tf.where(step < self.warmup_steps, warm, lr)
        return lr

    def _decayed(self, step):
        if self.decay == "step":
            lr = tf.constant(self.peak, tf.float32)
            for boundary, factor in sorted(zip(self.decay_steps, self.decay_factors)):
                lr = tf.where(step >= boundary, self.peak * factor, lr)
            return lr
        if self.decay == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1.0)
            t = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + tf.cos(math.pi * t))
        return tf.constant(self.peak, tf.float32)

    def get_config(self):
        return dict(vars(self))
