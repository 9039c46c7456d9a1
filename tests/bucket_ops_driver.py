"""One rank: each gradient bucket is one HorovodGroupedAllreduce in backward order, float16 on
the wire under fp16 compression, with the riders (loss, stop requests) in float32 beside the last
bucket; averaging on one rank returns the values themselves. Prints "bucket ops ok".

    python tests/bucket_ops_driver.py
"""
import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from common.grad_buckets import BUCKET_NAME, average_in_buckets

hvd.init()
grads = [tf.fill([256], float(i)) for i in range(4)] + [None]  # 1 KiB each
riders = tf.constant([2.5, 1.0])


@tf.function
def average():
    return average_in_buckets(hvd, grads, 2048, hvd.Compression.fp16, riders)


graph = average.get_concrete_function().graph
ops = [op for op in graph.get_operations() if op.type == "HorovodGroupedAllreduce"]
# bucket 0: the last two gradients (float16 on the wire); the riders in float32 beside the
# last bucket
assert [op.name for op in ops] == [f"{BUCKET_NAME}0", f"{BUCKET_NAME}1",
                                   f"{BUCKET_NAME}1_float32"]
assert [[t.dtype for t in op.inputs] for op in ops] == [
    [tf.float16] * 2, [tf.float16] * 2, [tf.float32]]
uncompressed = tf.function(lambda: average_in_buckets(hvd, grads, 0, None, riders))
ops = [op for op in uncompressed.get_concrete_function().graph.get_operations()
       if op.type == "HorovodGroupedAllreduce"]
assert len(ops) == 1 and [t.dtype for t in ops[0].inputs] == [tf.float32] * 5
only_riders = tf.function(lambda: average_in_buckets(hvd, [None], 2048, None, riders))
np.testing.assert_array_equal(only_riders()[1].numpy(), [2.5, 1.0])
averaged, averaged_riders = average()  # one rank: the mean is the value itself
assert averaged[4] is None
for i in range(4):
    np.testing.assert_array_equal(averaged[i].numpy(), np.full(256, float(i)))
    assert averaged[i].dtype == tf.float32
np.testing.assert_array_equal(averaged_riders.numpy(), [2.5, 1.0])
print("bucket ops ok")
