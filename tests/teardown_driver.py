"""One process bound to one core (as mpiexec binds a rank): read a ShardedDataset pipeline for
`age` seconds, then delete its iterator, `repeats` times; prints the deletions' seconds as JSON.

    python tests/teardown_driver.py AGE REPEATS
"""
import json
import os
import sys
import time

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before TensorFlow sizes its pools

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.data import ShardedDataset  # noqa: E402


def load(key):
    return tf.fill([64, 64], tf.cast(key, tf.float32)), tf.cast(key, tf.float32)


age, repeats = float(sys.argv[1]), int(sys.argv[2])
data = ShardedDataset(np.arange(4096), load, 4, name="teardown")
deletions = []
for _ in range(repeats):
    batches = iter(data.epochs(0, 1000))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < age:
        next(batches)
        time.sleep(0.01)
    t0 = time.perf_counter()
    del batches
    deletions.append(time.perf_counter() - t0)
print(json.dumps(deletions))
