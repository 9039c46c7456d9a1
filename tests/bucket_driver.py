"""Gradient buckets on every rank of an mpiexec run, on a thin CosmoFlow network:

    python tests/bucket_driver.py OUT_DIR BUCKET_MB

The Trainer's step (common.steps.make_train_step: optimizer update and stop requests included)
with gradients in buckets of BUCKET_MB and in one group, from the same weights on the same
batches: each rank's final weights and returned [loss, *requests] to
OUT_DIR/results-rank<r>.npz. Rank 0 records a Horovod timeline (OUT_DIR/timeline.json) from the
bucketed steps on (the one-group step's allreduce under name scope one_group). Each step also
takes tf.timestamp() once every gradient exists (the end of the backward pass, on the
timeline's clock); every rank's times go to OUT_DIR/evidence.json.
"""
import contextlib
import dataclasses
import json
import os
import sys

# Eigen's CPU kernels and a second inter-op thread, without which a rank bound to one core runs
# every allreduce after the backward pass (common/grad_buckets.py).
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TF_NUM_INTEROP_THREADS"] = "2"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.distributed import init_world
from common.steps import make_train_step
from cosmoflow.model import build_model
from cosmoflow.train import mse

out, bucket_mb = sys.argv[1], float(sys.argv[2])
# Its early layers hold the backward pass's longest work and the fewest gradient bytes: the
# last bucket comes tens of ms after the first, well apart from the ranks' jitter.
MODEL = {"name": "mlperf", "head": "flatten", "width_scale": 0.5, "dropout": 0.0,
         "kernel_size": 3}
SHAPE, STEPS = (32, 32, 32, 4), 4

os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"  # timelines started and stopped here
world = init_world()
rng = np.random.default_rng(world.rank)  # each rank its own batches
batches = [(tf.constant(rng.normal(size=(2, *SHAPE)).astype(np.float32)),
            tf.constant(rng.uniform(-1, 1, (2, 4)).astype(np.float32)), tf.ones(2))
           for _ in range(STEPS)]


class StampedWorld:
    """The world's gradient averaging, under name scope `scope`, recording when the step's last
    gradient exists."""

    def __init__(self, world, scope):
        self.world, self.scope = world, scope
        self.last_gradient = tf.Variable(0.0, dtype=tf.float64)

    def average_gradients(self, grads, riders):
        with tf.control_dependencies([g for g in grads if g is not None]):
            self.last_gradient.assign(tf.timestamp())
        with tf.name_scope(self.scope) if self.scope else contextlib.nullcontext():
            return self.world.average_gradients(grads, riders)


def trained(mb, scope=""):
    tf.keras.utils.set_random_seed(7)
    model = build_model(MODEL, SHAPE)
    requests = tf.Variable([0.0, float(world.rank), 0.0, 0.0])  # rank 1 asks: mean 0.5
    stamped = StampedWorld(dataclasses.replace(world, bucket_mb=mb), scope)
    step = make_train_step(model, tf.keras.optimizers.SGD(0.05), mse, stamped,
                           requests=requests)
    step(*batches[0])  # traced
    if mb:  # Horovod restarts no timeline it stopped: one recording for the rest of the run
        world.hvd.start_timeline(os.path.join(out, "timeline.json"))
    returned, times = [], []
    for batch in batches:
        returned.append(step(*batch).numpy())
        times.append(float(stamped.last_gradient.numpy()))
    return model.get_weights(), np.array(returned), world.allgather_object(times)


bucket_weights, bucket_returned, bucket_times = trained(bucket_mb)
single_weights, single_returned, single_times = trained(0.0, "one_group")
world.hvd.stop_timeline()
np.savez(os.path.join(out, f"results-rank{world.rank}.npz"), *single_weights, *bucket_weights,
         single_returned=single_returned, bucket_returned=bucket_returned)
if world.is_root:
    with open(os.path.join(out, "evidence.json"), "w") as f:
        json.dump({"times": {"buckets": bucket_times, "one_group": single_times},
                   "weights": len(single_weights)}, f)
