"""Batch sizes and learning rates for data-parallel training, as pure functions.

Weak scaling keeps the local batch fixed, so the global batch grows with the ranks and the LR is
scaled by the rule. Strong scaling keeps the global batch fixed and splits it over the ranks, so
the LR is the one tuned for that global batch whatever the number of ranks.
"""
import math

import numpy as np
import tensorflow as tf


def batch_sizes(scaling, local_batch, global_batch, world_size, accumulate_steps=1):
    """(local, global) batch for the scaling mode; raises when strong scaling cannot split.
    `local` is one micro-batch of a rank; `global` the samples of one update, over the ranks and
    the `accumulate_steps` micro-batches each rank accumulates."""
    if scaling == "weak":
        return local_batch, local_batch * world_size * accumulate_steps
    if scaling == "strong":
        if not global_batch:
            raise ValueError("config key 'train.global_batch' must be set for strong scaling")
        parts = world_size * accumulate_steps
        if global_batch % parts:
            over = f"{world_size} ranks" + (f" x train.accumulate_steps={accumulate_steps}"
                                            if accumulate_steps > 1 else "")
            raise ValueError(f"config key 'train.global_batch'={global_batch} does not divide "
                             f"over {over}")
        return global_batch // parts, global_batch
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
    optimizer restores the schedule position. The settings are variables: `restart` points a
    traced training step at the next stage's schedule without tracing it again.
    """

    DECAYS = ("none", "step", "cosine")

    def __init__(self, base, peak, steps_per_epoch, total_epochs, warmup_epochs=0.0,
                 decay="none", decay_epochs=(), decay_factors=(), min_lr=0.0):
        super().__init__()
        self.settings = {}
        self.restart(base, peak, steps_per_epoch, total_epochs, warmup_epochs, decay,
                     decay_epochs, decay_factors, min_lr)

    def restart(self, base, peak, steps_per_epoch, total_epochs, warmup_epochs=0.0,
                decay="none", decay_epochs=(), decay_factors=(), min_lr=0.0, first_step=0):
        """Follow a new schedule whose step 0 is optimizer step `first_step`."""
        if len(decay_epochs) != len(decay_factors):
            raise ValueError("config keys 'train.lr.decay_epochs' and 'train.lr.decay_factors' "
                             "must have the same length")
        if decay not in self.DECAYS:
            raise ValueError(f"config key 'train.lr.decay' must be one of {list(self.DECAYS)}, "
                             f"got {decay!r}")
        self.config = dict(base=base, peak=peak, steps_per_epoch=steps_per_epoch,
                           total_epochs=total_epochs, warmup_epochs=warmup_epochs, decay=decay,
                           decay_epochs=list(decay_epochs), decay_factors=list(decay_factors),
                           min_lr=min_lr)
        order = np.argsort(decay_epochs, kind="stable")
        self._set(start=base if base < peak else 0.0, peak=peak,
                  warmup_steps=warmup_epochs * steps_per_epoch,
                  total_steps=max(total_epochs * steps_per_epoch, 1),
                  decay=float(self.DECAYS.index(decay)), min_lr=min_lr,
                  first_step=float(first_step),
                  boundaries=[float(decay_epochs[i] * steps_per_epoch) for i in order],
                  factors=[float(decay_factors[i]) for i in order])

    def _set(self, **values):
        for name, value in values.items():
            if name in self.settings:
                self.settings[name].assign(value)
            else:
                shape = [None] if isinstance(value, list) else []  # lists change length
                self.settings[name] = tf.Variable(
                    tf.constant(value, tf.float32, shape=[len(value)] if shape else []),
                    trainable=False, shape=shape, name=f"lr_{name}")

    def __call__(self, step):
        v = self.settings
        step = tf.cast(step, tf.float32) - v["first_step"]
        lr = self._decayed(step)
        warm = v["start"] + (v["peak"] - v["start"]) * tf.minimum(
            (step + 1.0) / tf.maximum(v["warmup_steps"], 1.0), 1.0)
        return tf.where(step < v["warmup_steps"], warm, lr)

    def _decayed(self, step):
        v = self.settings
        # step decay: the factor of the last boundary passed
        passed = tf.reduce_sum(tf.cast(step >= v["boundaries"], tf.int32))
        factors = tf.concat([[1.0], v["factors"]], 0)
        stepped = v["peak"] * tf.gather(factors, passed)
        span = tf.maximum(v["total_steps"] - v["warmup_steps"], 1.0)
        t = tf.clip_by_value((step - v["warmup_steps"]) / span, 0.0, 1.0)
        cosine = v["min_lr"] + (v["peak"] - v["min_lr"]) * 0.5 * (1.0 + tf.cos(math.pi * t))
        return tf.switch_case(tf.cast(v["decay"], tf.int32),
                              [lambda: v["peak"] + 0.0, lambda: stepped, lambda: cosine])

    def get_config(self):
        return dict(self.config)
