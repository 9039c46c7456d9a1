"""Gradient buckets on every rank of an mpiexec run, on a thin CosmoFlow network:

    python tests/bucket_driver.py OUT_DIR BUCKET_MB

1. The Trainer's step (common.steps.make_train_step, stop requests included) with gradients in
   buckets of BUCKET_MB and in one group, from the same weights on the same batches: each
   rank's final weights and returned [loss, *requests] to OUT_DIR/results-rank<r>.npz; rank 0
   records a Horovod timeline (OUT_DIR/timeline.json) from the bucketed steps on.
2. Evidence of the overlap from the ops themselves: a step that takes tf.timestamp() once every
   gradient of the backward pass exists, then averages them as the Trainer does, with buckets
   and with one group (name scopes evidence<BUCKET_MB> and evidence0 in the timeline); every
   rank's timestamps go to OUT_DIR/evidence.json.
"""
import dataclasses
import json
import os
import sys

import numpy as np
import tensorflow as tf

from common.distributed import init_world
from common.steps import make_train_step, weighted_mean
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


def trained(mb, record=False):
    tf.keras.utils.set_random_seed(7)
    model = build_model(MODEL, SHAPE)
    requests = tf.Variable([0.0, float(world.rank), 0.0, 0.0])  # rank 1 asks: mean 0.5
    step = make_train_step(model, tf.keras.optimizers.SGD(0.05), mse,
                           dataclasses.replace(world, bucket_mb=mb),
                           requests=requests)
    step(*batches[0])  # traced before the timeline starts
    if record:  # Horovod restarts no timeline it stopped: one recording for the rest of the run
        world.hvd.start_timeline(os.path.join(out, "timeline.json"))
    returned = [step(*batch).numpy() for batch in batches]
    return model.get_weights(), np.array(returned)


def evidence_times(mb):
    tf.keras.utils.set_random_seed(7)
    model = build_model(MODEL, SHAPE)
    bucketed = dataclasses.replace(world, bucket_mb=mb)

    @tf.function
    def step(x, y, w):
        with tf.GradientTape() as tape:
            loss = tf.reshape(weighted_mean(mse(y, model(x, training=True)), w), [1])
        grads = tape.gradient(loss, model.trainable_variables)
        with tf.control_dependencies(grads):
            last_gradient = tf.timestamp()
        with tf.name_scope(f"evidence{mb:g}"):
            averaged, riders = bucketed.average_gradients(grads, loss)
        # data, not control, dependencies: Grappler prunes pure ops whose outputs go unused
        return last_gradient, tf.add_n([tf.reduce_sum(g) for g in averaged]) + riders[0]

    step(*batches[0])
    return [float(step(*batch)[0]) for batch in batches]


single_weights, single_returned = trained(0.0)
bucket_weights, bucket_returned = trained(bucket_mb, record=True)
np.savez(os.path.join(out, f"results-rank{world.rank}.npz"), *single_weights, *bucket_weights,
         single_returned=single_returned, bucket_returned=bucket_returned)
times = {f"{mb:g}": world.allgather_object(evidence_times(mb)) for mb in (bucket_mb, 0.0)}
world.hvd.stop_timeline()
if world.is_root:
    with open(os.path.join(out, "evidence.json"), "w") as f:
        json.dump({"times": times, "weights": len(single_weights)}, f)
