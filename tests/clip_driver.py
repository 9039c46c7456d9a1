"""One training step through common/steps.py of a linear model (4 weights, all 0) whose
gradient is the rank's input row, SGD at LR 0.1 with train.max_grad_norm 1. Under mpiexec -n 2
each rank prints its weights after the step as JSON for tests/test_optimizers.py.

    python tests/clip_driver.py PRECISION
"""
import json
import sys

import numpy as np
import tensorflow as tf

from common.distributed import init_world
from common.optimizers import make_optimizer, with_loss_scaling
from common.steps import make_train_step

# Rank r's gradient. Their mean [0.75, 1.5, 0.75, 0] has norm 1.84, so the weights become
# -0.1 x mean / 1.84 = [-0.041, -0.082, -0.041, 0]; clipping each rank's own gradient (norm
# 2.12) before averaging would give [-0.035, -0.071, -0.035, 0].
RANK_INPUTS = ([1.5, 1.5, 0.0, 0.0], [0.0, 1.5, 1.5, 0.0])


def one_step(world, precision, row):
    """The weights after one step on input `row` (the gradient), and the optimizer's loss
    scale (1 without loss scaling)."""
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(
            1, use_bias=False, kernel_initializer="zeros")])
        optimizer = make_optimizer({"optimizer": "sgd", "momentum": 0.9, "max_grad_norm": 1.0},
                                   0.1)
        optimizer.build(model.trainable_variables)
        optimizer = with_loss_scaling(optimizer, precision)
        # the per-sample loss is the prediction x . w: its gradient is x
        step = make_train_step(model, optimizer, lambda y, pred: pred[:, 0], world)
        step(tf.constant([row], tf.float32), tf.zeros((1, 1)), tf.ones(1))
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    return model.trainable_variables[0].numpy()[:, 0], float(getattr(optimizer, "loss_scale", 1))


if __name__ == "__main__":
    world = init_world()
    weights, scale = one_step(world, sys.argv[1], RANK_INPUTS[world.rank])
    print("RESULT " + json.dumps({"rank": world.rank, "weights": weights.tolist(),
                                  "loss_scale": scale}), flush=True)
