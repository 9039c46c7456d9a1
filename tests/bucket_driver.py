"""Gradient buckets on every rank of an mpiexec run, on a thin CosmoFlow network:

    python tests/bucket_driver.py OUT_DIR BUCKET_MB

1. The Trainer's step (common.steps.make_train_step, stop requests included) with gradients in
   buckets of BUCKET_MB and in one group, from the same weights on the same batches: each
   rank's final weights and returned [loss, *requests] to OUT_DIR/results-rank<r>.npz; rank 0
   records a Horovod timeline of the bucketed steps (OUT_DIR/train-timeline.json).
2. Evidence of the overlap from the ops themselves: a step that takes tf.timestamp() once every
   gradient of the backward pass exists, then averages them as the Trainer does, with buckets
   and with one group, each under its own timeline (OUT_DIR/evidence-<mb>.json); every rank's
   timestamps go to OUT_DIR/evidence.json.
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
SHAPE, STEPS = (32, 32, 32, 4), 6

world = init_world()
rng = np.random.default_rng(world.rank)  # each rank its own batches
batches = [(tf.constant(rng.normal(size=(2, *SHAPE)).astype(np.float32)),
            tf.constant(rng.uniform(-1, 1, (2, 4)).astype(np.float32)), tf.ones(2))
           for _ in range(STEPS)]


def trained(mb, timeline=None):
    tf.keras.utils.set_random_seed(7)
    model = build_model(MODEL, SHAPE)
    requests = tf.Variable([0.0, float(world.rank), 0.0, 0.0])  # rank 1 asks: mean 0.5
    step = make_train_step(model, tf.keras.optimizers.SGD(0.05), mse,
                           dataclasses.replace(world, bucket_mb=mb),
                           requests=requests)
    step(*batches[0])  # traced before the timeline starts
    if timeline:
        world.hvd.start_timeline(timeline)
    returned = [step(*batch).numpy() for batch in batches]
    if timeline:
        world.hvd.stop_timeline()
    return model.get_weights(), np.array(returned)


def evidence_times(mb, timeline):
    tf.keras.utils.set_random_seed(7)
    model = build_model(MODEL, SHAPE)
    bucketed = dataclasses.replace(world, bucket_mb=mb)

    @tf.function
    def step(x, y, w):
        with tf.GradientTape() as tape:
            loss = weighted_mean(mse(y, model(x, training=True)), w)
        grads = tape.gradient(loss, model.trainable_variables)
        with tf.control_dependencies(grads):
            last_gradient = tf.timestamp()
        averaged, riders = bucketed.average_gradients(grads, tf.reshape(loss, [1]))
        with tf.control_dependencies(averaged + [riders]):
            return tf.identity(last_gradient)

    step(*batches[0])
    world.hvd.start_timeline(timeline)
    times = [float(step(*batch)) for batch in batches]
    world.hvd.stop_timeline()
    return times


single_weights, single_returned = trained(0.0)
bucket_weights, bucket_returned = trained(bucket_mb, os.path.join(out, "train-timeline.json"))
np.savez(os.path.join(out, f"results-rank{world.rank}.npz"), *single_weights, *bucket_weights,
         single_returned=single_returned, bucket_returned=bucket_returned)
times = {f"{mb:g}": world.allgather_object(evidence_times(
    mb, os.path.join(out, f"evidence-{mb:g}.json"))) for mb in (bucket_mb, 0.0)}
if world.is_root:
    with open(os.path.join(out, "evidence.json"), "w") as f:
        json.dump({"times": times, "weights": len(single_weights)}, f)
