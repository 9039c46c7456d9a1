"""Under mpiexec -n 2: one mixed_float16 training step where only rank 0's batch overflows, then
one where no batch does. Prints each rank's outcome as JSON for tests/test_step_speed_features.py.

    python tests/loss_scale_driver.py
"""
import json

import numpy as np
import tensorflow as tf

from common.distributed import init_world
from common.optimizers import with_loss_scaling
from common.steps import make_train_step
from cosmoflow.model import build_model

world = init_world()
tf.keras.utils.set_random_seed(0)
tf.keras.mixed_precision.set_global_policy("mixed_float16")
model = build_model({"name": "mlperf", "head": "global_pool", "width_scale": 0.0625,
                     "dropout": 0.0}, (8, 8, 8, 4))
optimizer = tf.keras.optimizers.SGD(0.01)
optimizer.build(model.trainable_variables)
optimizer = with_loss_scaling(optimizer, "mixed_float16")
world.broadcast_variables(model.variables)
step = make_train_step(model, optimizer, lambda y, p: tf.reduce_mean(tf.square(y - p), -1), world)

rng = np.random.default_rng(world.rank)
x = rng.normal(size=(2, 8, 8, 8, 4)).astype(np.float32)
y = rng.normal(size=(2, 4)).astype(np.float32)
w = np.ones(2, np.float32)
start = [v.numpy() for v in model.trainable_variables]
scale_before = float(optimizer.loss_scale)
overflowing = x.copy()
if world.rank == 0:
    overflowing[0, 0, 0, 0, 0] = np.inf  # float16 gradients of this batch are not finite
step(overflowing, y, w)
after_overflow = [v.numpy() for v in model.trainable_variables]
scale_after = float(optimizer.loss_scale)
step(x, y, w)
after_clean = [v.numpy() for v in model.trainable_variables]
print("RESULT " + json.dumps({
    "rank": world.rank,
    "skipped": all(np.array_equal(a, b) for a, b in zip(start, after_overflow)),
    "scale_before": scale_before, "scale_after": scale_after,
    "applied_after": not all(np.array_equal(a, b) for a, b in zip(start, after_clean)),
    "checksum": float(sum(np.sum(np.abs(v), dtype=np.float64) for v in after_clean)),
    "iterations": int(optimizer.iterations.numpy()),
}), flush=True)
